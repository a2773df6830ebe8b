"""Combining MovieLens and app ratings into one validated training table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cfrec_assets.schema import COMBINED_COLUMNS, ML_USER_PREFIX, RATING_SCALE, SOURCE_APP, SOURCE_MOVIELENS


def empty_real_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="string"),
            "tmdb_id": pd.Series(dtype="int64"),
            "rating": pd.Series(dtype="float64"),
            "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def combine_ratings(
    ml_ratings: pd.DataFrame,
    mapping: pd.DataFrame,
    real_ratings: pd.DataFrame,
    catalog: Iterable[int] | None = None,
    rating_range: tuple[float, float] = RATING_SCALE,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the training table and the number of rows dropped per reason.

    ML-100K ratings keep only items that map to a TMDB id; users are prefixed ``ml_`` so they
    can never collide with app users. With a catalog, both sources are filtered to it. When a
    user rated the same movie twice (two ML-100K items can share a TMDB id, and app users
    re-rate), the latest rating wins. The result is sorted by user then movie: Surprise numbers
    users and items by first appearance and draws initial factors in that order, so a fixed
    order makes the model reproducible from the same ratings, and user-sorted input fits about
    1.6x faster (bench/graph_bench.py) than shuffled rows.
    """
    dropped: Counter[str] = Counter()
    ml = _movielens_part(ml_ratings, mapping, dropped)
    real = _real_part(real_ratings, dropped)
    frames = [ml, real]
    if catalog is not None:
        allowed = np.fromiter(catalog, dtype=np.int64)
        for i, (frame, name) in enumerate(zip(frames, ("ml", "real"))):
            keep = frame["tmdb_id"].isin(allowed)
            dropped[f"{name}_not_in_catalog"] += int((~keep).sum())
            frames[i] = frame[keep]

    combined = pd.concat(frames, ignore_index=True)
    valid = combined["user_id"].notna() & (combined["user_id"].str.len() > 0) & combined["tmdb_id"].notna()
    dropped["missing_id"] += int((~valid).sum())
    combined = combined[valid]
    lo, hi = rating_range
    in_range = combined["rating"].between(lo, hi) & np.isfinite(combined["rating"])
    dropped["rating_out_of_range"] += int((~in_range).sum())
    combined = combined[in_range]

    # Stable sort by time, so for equal timestamps the later row in the input wins.
    combined = combined.sort_values("created_at", kind="stable")
    deduped = combined.drop_duplicates(["user_id", "tmdb_id"], keep="last")
    dropped["duplicate_superseded"] += len(combined) - len(deduped)
    result = deduped.sort_values(["user_id", "tmdb_id"], kind="stable").reset_index(drop=True)
    result = result.astype({"user_id": "string", "tmdb_id": "int64", "rating": "float64", "source": "string"})
    return result[list(COMBINED_COLUMNS)], {k: int(v) for k, v in sorted(dropped.items())}


def _movielens_part(ml_ratings: pd.DataFrame, mapping: pd.DataFrame, dropped: Counter) -> pd.DataFrame:
    mapped = mapping.loc[mapping["tmdb_id"].notna(), ["ml100k_item_id", "tmdb_id"]]
    joined = ml_ratings.merge(mapped, left_on="item_id", right_on="ml100k_item_id", how="left")
    dropped["ml_unmapped_item"] += int(joined["tmdb_id"].isna().sum())
    joined = joined[joined["tmdb_id"].notna()]
    return pd.DataFrame(
        {
            "user_id": ML_USER_PREFIX + joined["user_id"].astype(str),
            "tmdb_id": joined["tmdb_id"].astype("int64"),
            "rating": joined["rating"].astype("float64"),
            "source": SOURCE_MOVIELENS,
            "created_at": pd.to_datetime(joined["timestamp"], unit="s", utc=True),
        }
    )


def _real_part(real: pd.DataFrame, dropped: Counter) -> pd.DataFrame:
    users = real["user_id"].astype("string")
    # An app user id that looks like a prefixed MovieLens id would merge two people.
    collides = users.str.startswith(ML_USER_PREFIX).fillna(False)
    dropped["real_user_id_has_ml_prefix"] += int(collides.sum())
    real = real[~collides]
    return pd.DataFrame(
        {
            "user_id": real["user_id"].astype("string"),
            "tmdb_id": pd.to_numeric(real["tmdb_id"], errors="coerce").astype("Int64"),
            "rating": pd.to_numeric(real["rating"], errors="coerce").astype("float64"),
            "source": SOURCE_APP,
            "created_at": pd.to_datetime(real["created_at"], utc=True),
        }
    )
