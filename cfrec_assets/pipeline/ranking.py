"""Ranking quality of rating predictions on held-out data: precision@k and NDCG@k.

Conventions (chosen so the numbers are comparable across runs):

* A held-out item is *relevant* when its true rating is >= ``threshold``
  (:data:`RELEVANCE_THRESHOLD` unless told otherwise).
* For each user, the held-out items are ranked by the predicted rating, best
  first. Equal predictions are ordered pessimistically (lower true rating
  first), so a model earns nothing from ties such as a constant predictor.
* precision@k for a user = relevant items in their top k / min(k, number of
  held-out items): a user with only 3 held-out items, 2 relevant, ranked on
  top, scores 2/3 rather than being capped at 3/k.
* NDCG@k uses binary gain (1 if relevant, else 0; the same relevance notion as
  precision) and the log2(rank + 1) discount, normalised by the best possible
  ordering of that user's held-out items.
* Both are averaged over users with at least one relevant held-out item;
  for other users neither metric is defined (NDCG would be 0/0). When no user
  qualifies, the metrics are ``None``.

Metric names carry their cut-off: :func:`precision_at`, :func:`ndcg_at` (``precision_at_10``), so a
run with another k names its figures, and :func:`promoted_metrics` the ones a manifest records.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol

DEFAULT_K = 10
"""Cut-off of precision@k and NDCG@k unless a run chooses another (``cv_metrics`` k)."""
RELEVANCE_THRESHOLD = 4.0
"""A held-out rating at least this high is a film the user liked: what precision and NDCG count."""


def precision_at(k: int) -> str:
    return f"precision_at_{k}"


def ndcg_at(k: int) -> str:
    return f"ndcg_at_{k}"


def promoted_metrics(k: int) -> tuple[str, ...]:
    """The cross-validation summaries a deployment manifest records, for cut-off ``k``."""
    return ("rmse_mean", "rmse_std", "mae_mean", f"{precision_at(k)}_mean", f"{ndcg_at(k)}_mean")


class RatingPrediction(Protocol):
    """The fields of ``surprise.Prediction`` that are used here."""

    uid: Any
    iid: Any
    r_ui: float
    est: float


def ranking_metrics(
    predictions: Iterable[RatingPrediction], k: int = DEFAULT_K, threshold: float = RELEVANCE_THRESHOLD
) -> dict[str, Any]:
    """Mean precision@k and NDCG@k over users (see the module docstring for conventions).

    Returns ``{"precision_at_k", "ndcg_at_k", "k", "threshold", "users_evaluated",
    "users_without_relevant"}``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    by_user: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for prediction in predictions:
        if prediction.r_ui is None:
            raise ValueError(f"prediction for user {prediction.uid!r} has no true rating (r_ui is None)")
        by_user[prediction.uid].append((float(prediction.est), float(prediction.r_ui)))

    precisions, ndcgs = [], []
    for rated in by_user.values():
        relevant_total = sum(true >= threshold for _, true in rated)
        if relevant_total == 0:
            continue
        ranked = sorted(rated, key=lambda pair: (-pair[0], pair[1]))[:k]
        hits = [true >= threshold for _, true in ranked]
        precisions.append(sum(hits) / len(ranked))
        ndcgs.append(_dcg(hits) / _dcg([True] * min(k, relevant_total)))

    evaluated = len(precisions)
    return {
        "precision_at_k": sum(precisions) / evaluated if evaluated else None,
        "ndcg_at_k": sum(ndcgs) / evaluated if evaluated else None,
        "k": k,
        "threshold": threshold,
        "users_evaluated": evaluated,
        "users_without_relevant": len(by_user) - evaluated,
    }


def _dcg(hits: list[bool]) -> float:
    """Discounted cumulative gain with binary gains; rank 1 is undiscounted."""
    return sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(hits, start=1) if hit)
