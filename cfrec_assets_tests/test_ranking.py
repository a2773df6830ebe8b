"""precision@k and NDCG@k on hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from surprise import Prediction

from cfrec_assets.pipeline.ranking import ndcg_at, precision_at, promoted_metrics, ranking_metrics
from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, summarize_folds


def predictions(user: str, pairs: list[tuple[float, float]]) -> list[Prediction]:
    """(est, true) pairs for one user; item ids follow the list order."""
    return [Prediction(user, item, true, est, {}) for item, (est, true) in enumerate(pairs)]


def test_hand_computed_two_users_and_one_without_relevant_items():
    data = (
        # ranked by est: 5 (rel), 3, 4 (rel), 2 -> top 2 has one hit; ideal has 2 relevant
        predictions("a", [(4.5, 5.0), (4.0, 3.0), (3.5, 4.0), (3.0, 2.0)])
        # ranked: 1.0, 4.5 (rel) -> hit at rank 2; ideal 1 relevant at rank 1
        + predictions("b", [(2.0, 4.5), (3.0, 1.0)])
        # nothing relevant: excluded from both averages
        + predictions("c", [(4.0, 2.0), (5.0, 3.0)])
    )
    metrics = ranking_metrics(data, k=2, threshold=4.0)

    ndcg_a = 1.0 / (1.0 + 1.0 / math.log2(3))
    ndcg_b = (1.0 / math.log2(3)) / 1.0
    assert metrics["precision_at_k"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics["ndcg_at_k"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert metrics["users_evaluated"] == 2
    assert metrics["users_without_relevant"] == 1
    assert (metrics["k"], metrics["threshold"]) == (2, 4.0)


def test_user_with_fewer_than_k_items_is_not_penalised_for_missing_slots():
    # 3 held-out items, 2 relevant and ranked first: precision 2/3 (not 2/10), NDCG perfect.
    metrics = ranking_metrics(predictions("a", [(5.0, 4.0), (4.0, 5.0), (1.0, 1.0)]), k=10)
    assert metrics["precision_at_k"] == pytest.approx(2 / 3)
    assert metrics["ndcg_at_k"] == pytest.approx(1.0)


def test_relevant_items_outside_top_k_count_only_in_the_ideal():
    # 3 relevant items but k=2: IDCG caps at 2 relevant; the model put one irrelevant first.
    data = predictions("a", [(5.0, 1.0), (4.0, 4.0), (3.0, 4.5), (2.0, 5.0)])
    metrics = ranking_metrics(data, k=2)
    assert metrics["precision_at_k"] == pytest.approx(1 / 2)
    assert metrics["ndcg_at_k"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_threshold_is_inclusive():
    metrics = ranking_metrics(predictions("a", [(3.0, 4.0)]), k=1, threshold=4.0)
    assert metrics["precision_at_k"] == 1.0


def test_ties_in_predictions_are_ranked_pessimistically():
    # A constant predictor earns nothing from lucky input order.
    for pairs in ([(3.0, 5.0), (3.0, 1.0)], [(3.0, 1.0), (3.0, 5.0)]):
        metrics = ranking_metrics(predictions("a", pairs), k=1)
        assert metrics["precision_at_k"] == 0.0
        assert metrics["ndcg_at_k"] == 0.0


def test_perfect_ranking_beats_reversed_ranking():
    truths = [5.0, 4.5, 4.0, 3.0, 2.0, 1.0]
    perfect = ranking_metrics(predictions("a", [(t, t) for t in truths]), k=3)
    reversed_ = ranking_metrics(predictions("a", [(-t, t) for t in truths]), k=3)
    assert perfect["precision_at_k"] == perfect["ndcg_at_k"] == 1.0
    assert reversed_["precision_at_k"] == 0.0 and reversed_["ndcg_at_k"] == 0.0


@pytest.mark.parametrize("data", [[], predictions("a", [(5.0, 1.0), (4.0, 2.0)])])
def test_metrics_are_none_when_no_user_has_a_relevant_item(data):
    metrics = ranking_metrics(data, k=5)
    assert metrics["precision_at_k"] is None and metrics["ndcg_at_k"] is None
    assert metrics["users_evaluated"] == 0


@pytest.mark.parametrize("k", [0, -3, 2.0, True])
def test_k_must_be_a_positive_integer(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_metrics(predictions("a", [(4.0, 5.0)]), k=k)


def test_predictions_without_true_rating_are_refused():
    with pytest.raises(ValueError, match="user 'a' has no true rating"):
        ranking_metrics([Prediction("a", 1, None, 4.0, {})])


def test_metric_names_carry_the_cut_off_and_name_what_a_manifest_records():
    users, films = range(12), range(10)
    ratings = pd.DataFrame(
        [(f"u{u}", 100 + f, float(1 + (u * 3 + f * 7) % 5)) for u in users for f in films],
        columns=["user_id", "tmdb_id", "rating"],
    )
    summary = summarize_folds(cross_validate_svd(ratings, SVDParams(n_factors=2, n_epochs=2), n_folds=2, k=5))
    assert set(promoted_metrics(5)) <= summary.keys()
    assert not [name for name in summary if "_at_10" in name]
    assert promoted_metrics(10) == ("rmse_mean", "rmse_std", "mae_mean", "precision_at_10_mean", "ndcg_at_10_mean")
    assert (precision_at(5), ndcg_at(5)) == ("precision_at_5", "ndcg_at_5")
