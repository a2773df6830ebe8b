"""The rules that turn MovieLens and app ratings into one training table."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from cfrec_assets.pipeline.combine import app_ratings_lost, combine, combine_ratings, empty_app_ratings, ml100k_seed


def ml(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def real(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "tmdb_id", "rating", "created_at"])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


MAPPING = pd.DataFrame(
    {
        "ml100k_item_id": [1, 2, 3, 4],
        "tmdb_id": pd.array([862, 710, None, 862], dtype="Int64"),
        "match_kind": ["exact"] * 4,
    }
)


def test_movielens_users_prefixed_items_mapped_and_unmapped_dropped() -> None:
    out, dropped = combine_ratings(ml([[7, 1, 5, 100], [7, 3, 4, 100], [3, 2, 2, 50]]), MAPPING, empty_app_ratings())
    assert out[["user_id", "tmdb_id", "rating", "source"]].values.tolist() == [
        ["ml_3", 710, 2.0, "movielens"],
        ["ml_7", 862, 5.0, "movielens"],
    ]
    assert dropped["ml_unmapped_item"] == 1


def test_latest_rating_wins_across_items_sharing_a_tmdb_id_and_app_rerates() -> None:
    # items 1 and 4 are the same film (tmdb 862): the later rating counts once.
    ratings = ml([[7, 1, 2, 100], [7, 4, 4, 200]])
    app = real([["u1", 603, 3.0, "2024-01-01"], ["u1", 603, 4.5, "2024-02-01"], ["u1", 603, 1.0, "2023-12-01"]])
    out, dropped = combine_ratings(ratings, MAPPING, app)
    assert out.set_index(["user_id", "tmdb_id"])["rating"].to_dict() == {("ml_7", 862): 4.0, ("u1", 603): 4.5}
    assert dropped["duplicate_superseded"] == 3


def test_catalog_filters_both_sources_and_counts_reasons() -> None:
    app = real([["u1", 862, 4.0, "2024-01-01"], ["u2", 999, 3.0, "2024-01-01"]])
    out, dropped = combine_ratings(ml([[1, 1, 5, 1], [1, 2, 5, 1]]), MAPPING, app, catalog=[862])
    assert sorted(out["tmdb_id"].unique()) == [862]
    assert dropped["ml_not_in_catalog"] == 1 and dropped["real_not_in_catalog"] == 1


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["u1", 862, 7.0, "2024-01-01"], "rating_out_of_range"),
        (["u1", 862, 0.0, "2024-01-01"], "rating_out_of_range"),
        (["u1", 862, float("nan"), "2024-01-01"], "rating_out_of_range"),
        ([None, 862, 4.0, "2024-01-01"], "missing_id"),
        (["", 862, 4.0, "2024-01-01"], "missing_id"),
        (["u1", None, 4.0, "2024-01-01"], "missing_id"),
        (["ml_1", 862, 4.0, "2024-01-01"], "real_user_id_has_ml_prefix"),
    ],
)
def test_invalid_app_rows_are_dropped_and_counted(row, reason) -> None:
    out, dropped = combine_ratings(ml([[1, 2, 5, 1]]), MAPPING, real([row]))
    assert out["user_id"].tolist() == ["ml_1"]
    assert dropped[reason] == 1


def test_sorted_by_user_then_movie_with_stable_types() -> None:
    app = real([["b", 5, 4.0, "2024-01-01"], ["a", 9, 3.0, "2024-01-01"], ["a", 1, 2.5, "2024-01-02"]])
    out, _ = combine_ratings(ml([[2, 2, 3, 9], [2, 1, 3, 9]]), MAPPING, app)
    assert list(zip(out["user_id"], out["tmdb_id"])) == [("a", 1), ("a", 9), ("b", 5), ("ml_2", 710), ("ml_2", 862)]
    types = out.dtypes.astype(str).to_dict()
    assert types.pop("created_at").endswith(", UTC]")
    assert types == {"user_id": "string", "tmdb_id": "int64", "rating": "float64", "source": "string"}


def test_every_app_row_is_kept_or_counted_once_by_reason() -> None:
    app = real(
        [
            ["ml_5", 862, 4.0, "2024-01-01"],  # seed prefix
            ["mll_9", 862, 4.0, "2024-01-01"],  # seed prefix
            ["u1", 999, 4.0, "2024-01-01"],  # outside the catalog
            ["u1", 862, 9.0, "2024-01-01"],  # out of range
            [None, 862, 4.0, "2024-01-01"],  # no user
            ["u2", 862, 3.0, "2024-01-01"],  # superseded by the next row
            ["u2", 862, 4.0, "2024-02-01"],
            ["u3", 710, 5.0, "2024-01-01"],
        ]
    )
    app_dropped: Counter[str] = Counter()
    seed = ml100k_seed(ml([[1, 1, 5, 1], [1, 3, 4, 1]]), MAPPING, Counter())
    out, _ = combine({"ml100k": seed}, app, catalog=[862, 710], app_dropped=app_dropped)
    kept = int((out["source"] == "app").sum())
    assert kept == 2 and kept + sum(app_dropped.values()) == len(app)
    assert app_ratings_lost(app_dropped) == {
        "user_id_has_seed_prefix": 2,
        "not_in_catalog": 1,
        "rating_out_of_range": 1,
        "missing_id": 1,
    }
    assert app_dropped["duplicate_superseded"] == 1  # a re-rating is not a loss
