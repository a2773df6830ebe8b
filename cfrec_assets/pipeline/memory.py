"""Check memory before a big step starts, so it fails with advice instead of being OOM-killed.

Surprise keeps every rating as Python objects (a trainset holds each one twice, by user and by
item, as tuples in its ``ur``/``ir`` lists), every user and film as dict entries and lists, and
its factors as float64 arrays: ``pu`` is users x factors, so a table of many users with one rating
each needs far more than its ratings count says (300,000 users at 400 factors: 0.96 GB for ``pu``
alone). The figures below were measured by ``bench/seed_scale_bench.py`` (peak RSS growth of the
svd_model and cv_metrics steps; 1M ml-32m-shaped ratings, and 278K users with one rating each, at
100 and 400 factors) and the estimates carry a 20 % margin.
"""

from __future__ import annotations

from pathlib import Path

GiB = 1 << 30
MARGIN = 1.2
FIT_BYTES_PER_RATING = 750
"""svd_model, per rating: the training table (string user ids), Surprise's Dataset and trainset, and
the version's files written (740 B measured at 1M ratings)."""
BYTES_PER_ENTITY = 950
"""Per user (and per film): id maps, the trainset's per-user lists, the ids in ``cf_model.npz``
(~920 B measured with 278K one-rating users)."""
TABLE_BYTES_PER_RATING = 220
"""cv_metrics, per rating, beside the folds: the table and the Dataset list the folds are cut from."""
TRAINSET_BYTES_PER_RATING = 750
"""One fold's trainset, per training rating, with its testset and predictions."""


def factor_bytes(users: int, items: int, n_factors: int) -> int:
    """Surprise's float64 arrays of one fit: pu (users x factors), qi (items x factors), bu, bi."""
    return (users + items) * (n_factors + 1) * 8


def fit_bytes(ratings: int, users: int, items: int, n_factors: int) -> int:
    """Peak of svd_model: the trainset's objects per rating and per user/film, and one set of factors."""
    per_row = ratings * FIT_BYTES_PER_RATING + (users + items) * BYTES_PER_ENTITY
    return int(MARGIN * (per_row + factor_bytes(users, items, n_factors)))


def cross_validation_bytes(ratings: int, users: int, items: int, n_factors: int, n_folds: int, workers: int) -> int:
    """Peak of cv_metrics, the larger of its two phases beside the table:

    * the folds: one at a time, one trainset ((k-1)/k of the ratings, up to every user) and its
      factors; in parallel, joblib's pre-dispatch has the parent build up to 2 x workers folds
      while each worker holds its copy and fits its factors;
    * then loading the version's ``cf_model.npz`` to preview it: the file's bytes and the arrays
      parsed from them, so the factors twice.
    """
    trainset = ratings * (n_folds - 1) / n_folds * TRAINSET_BYTES_PER_RATING + (users + items) * BYTES_PER_ENTITY
    held, fits = (1, 1) if workers <= 1 else (min(n_folds, 2 * workers) + workers, workers)
    folds = held * trainset + fits * factor_bytes(users, items, n_factors)
    loading = (users + items) * BYTES_PER_ENTITY + 2 * factor_bytes(users, items, n_factors)
    return int(MARGIN * (ratings * TABLE_BYTES_PER_RATING + max(folds, loading)))


class MemoryBudgetError(MemoryError):
    """A step would need more memory than is available; the message says what to change."""


def available_bytes(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """MemAvailable, capped by the cgroup v2 limit when one is set (None: unknown)."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            headroom = int(limit) - used
            available = headroom if available is None else min(available, headroom)
    except (OSError, ValueError):
        pass
    return available


def require_memory(needed: int, what: str, advice: str, budget: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when ``needed`` bytes exceed ``budget`` (default: what is
    available now). Unknown availability passes: no guess is better than a wrong refusal."""
    available = budget if budget is not None else available_bytes()
    if available is not None and needed > available:
        raise MemoryBudgetError(
            f"{what} needs about {needed / GiB:.1f} GiB but {available / GiB:.1f} GiB is available: {advice}"
        )
