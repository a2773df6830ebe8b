"""Check memory before a big step starts, so it fails with advice instead of being OOM-killed.

Surprise keeps every rating as Python objects (a trainset holds each one twice, by user and by
item), so training memory grows with the ratings count, not the CSV's size. The per-rating
figures below were measured by ``bench/seed_scale_bench.py`` (peak RSS growth over ratings,
1M and 5M generated ratings) and rounded up.
"""

from __future__ import annotations

from pathlib import Path

GiB = 1 << 30
FIT_BYTES_PER_RATING = 700
"""Peak of one full fit: the training table (~250 B/rating: string user ids), Surprise's Dataset
and its trainset (~330 B/rating measured)."""
TRAINSET_BYTES_PER_RATING = 500
"""One trainset (330-380 B/rating measured at 1M-5M, with margin)."""
DATASET_BYTES_PER_RATING = 100
"""Surprise's Dataset list the folds are cut from."""


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


def fit_bytes(ratings: int) -> int:
    return ratings * FIT_BYTES_PER_RATING


def cross_validation_bytes(ratings: int, n_folds: int, workers: int) -> int:
    """Folds one at a time hold one trainset ((k-1)/k of the ratings); in parallel, joblib's
    pre-dispatch has the parent build up to 2 x workers folds while each worker holds its copy.
    25 % margin on the measured figures."""
    per_fold = ratings * (n_folds - 1) / n_folds * TRAINSET_BYTES_PER_RATING
    held = 1 if workers <= 1 else min(n_folds, 2 * workers) + workers
    return int(1.25 * (ratings * DATASET_BYTES_PER_RATING + per_fold * held))
