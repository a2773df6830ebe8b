"""Combining the seed ratings (ML-100K, ml-latest) and the app's ratings into one validated training table.

Rows dropped are counted by reason; the reasons become ``combined_ratings``' ``dropped_<reason>``
metadata keys, which keep the names they had before the vocabulary was settled (``ml_`` for ML-100K,
``real_`` for the app's ratings; :data:`DROPPED_PREFIX` for the parts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cfrec_assets.schema import (
    COMBINED_COLUMNS,
    ML100K_USER_PREFIX,
    ML_LATEST_USER_PREFIX,
    RATING_SCALE,
    SEED_ML100K,
    SEED_ML_LATEST,
    SEED_USER_PREFIXES,
    SOURCE_APP,
    SOURCE_ML100K,
    SOURCE_ML_LATEST,
)

APP_DROP_REASONS = {
    "user_id_has_seed_prefix": "user id begins with a seed prefix (" + "/".join(SEED_USER_PREFIXES) + ")",
    "not_in_catalog": "film not in the catalog",
    "missing_id": "missing user or film id",
    "rating_out_of_range": "rating outside the rating scale",
    "duplicate_superseded": "superseded by the user's later rating of the same film",
}
"""Why ``combine`` drops an app rating; the last one is not a loss (the user's rating is kept)."""


def app_ratings_lost(app_dropped: dict[str, int]) -> dict[str, int]:
    """The app ratings dropped for a reason that loses them (not a superseded re-rating)."""
    return {reason: n for reason, n in app_dropped.items() if n and reason != "duplicate_superseded"}


DROPPED_PREFIX = {SEED_ML100K: "ml", SEED_ML_LATEST: "ml_latest", SOURCE_APP: "real"}
"""How each part of the training table names its dropped rows (metadata keys, kept as they were)."""


def empty_app_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="string"),
            "tmdb_id": pd.Series(dtype="int64"),
            "rating": pd.Series(dtype="float64"),
            "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def combine_ratings(
    ml100k_ratings: pd.DataFrame,
    mapping: pd.DataFrame,
    app_ratings: pd.DataFrame,
    catalog: Iterable[int] | None = None,
    rating_range: tuple[float, float] = RATING_SCALE,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """ML-100K plus the app's ratings (see :func:`combine`)."""
    dropped: Counter[str] = Counter()
    seeds = {SEED_ML100K: ml100k_seed(ml100k_ratings, mapping, dropped)}
    return combine(seeds, app_ratings, catalog, rating_range, dropped)


def combine(
    seeds: dict[str, pd.DataFrame],
    app_ratings: pd.DataFrame,
    catalog: Iterable[int] | None = None,
    rating_range: tuple[float, float] = RATING_SCALE,
    dropped: Counter[str] | None = None,
    max_seed_ratings: int | None = None,
    app_dropped: Counter[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the training table and the number of rows dropped per reason.

    ``app_dropped`` (when given) also counts, per reason, the app's rows among those dropped, so
    a check can see app ratings lost here: every app row is either kept or counted there once.

    ``seeds`` map a seed's id (``ml100k``, ``ml-latest``) to its population, already keyed by TMDB
    id (:func:`ml100k_seed`, :func:`ml_latest_seed`; none for an app-only model), each user prefixed
    so populations never collide. With a catalog, every source is filtered to it. When a user rated the same
    movie twice (two MovieLens films can share a TMDB id, and app users re-rate), the latest
    rating wins. The result is sorted by user then movie: Surprise numbers users and items by
    first appearance and draws initial factors in that order, so a fixed order makes the model
    reproducible from the same ratings, and user-sorted input fits about 1.6x faster
    (bench/graph_bench.py) than shuffled rows.
    """
    dropped = Counter() if dropped is None else dropped
    app_dropped = Counter() if app_dropped is None else app_dropped
    parts = {**seeds, SOURCE_APP: _app_part(app_ratings, dropped, app_dropped)}
    if catalog is not None:
        allowed = np.fromiter(catalog, dtype=np.int64)
        for name, frame in parts.items():
            keep = frame["tmdb_id"].isin(allowed)
            dropped[f"{DROPPED_PREFIX.get(name, name)}_not_in_catalog"] += int((~keep).sum())
            if name == SOURCE_APP:
                app_dropped["not_in_catalog"] += int((~keep).sum())
            parts[name] = frame[keep]

    if max_seed_ratings is not None:
        seeds_only = {name: frame for name, frame in parts.items() if name != SOURCE_APP}
        kept = cap_seed_users(seeds_only, max_seed_ratings)
        for name, frame in seeds_only.items():
            dropped[f"{DROPPED_PREFIX.get(name, name)}_over_seed_cap"] += len(frame) - len(kept[name])
            parts[name] = kept[name]

    combined = pd.concat(parts.values(), ignore_index=True)

    def drop_unless(frame: pd.DataFrame, keep: pd.Series, reason: str) -> pd.DataFrame:
        dropped[reason] += int((~keep).sum())
        app_dropped[reason] += int((~keep & (frame["source"] == SOURCE_APP)).sum())
        return frame[keep]

    has_ids = combined["user_id"].notna() & (combined["user_id"].str.len() > 0) & combined["tmdb_id"].notna()
    combined = drop_unless(combined, has_ids, "missing_id")
    lo, hi = rating_range
    in_range = combined["rating"].between(lo, hi) & np.isfinite(combined["rating"])
    combined = drop_unless(combined, in_range, "rating_out_of_range")
    # Stable sort by time, so for equal timestamps the later row in the input wins.
    combined = combined.sort_values("created_at", kind="stable")
    combined = drop_unless(combined, ~combined.duplicated(["user_id", "tmdb_id"], keep="last"), "duplicate_superseded")
    result = combined.sort_values(["user_id", "tmdb_id"], kind="stable").reset_index(drop=True)
    result = result.astype({"user_id": "string", "tmdb_id": "int64", "rating": "float64", "source": "string"})
    return result[list(COMBINED_COLUMNS)], {k: int(v) for k, v in sorted(dropped.items())}


def cap_seed_users(seeds: dict[str, pd.DataFrame], max_ratings: int, seed: int = 42) -> dict[str, pd.DataFrame]:
    """Whole seed users, in a seeded random order, until ``max_ratings`` ratings: a big release
    fits a small machine, and every kept user keeps their full profile (a model learns users from
    all their ratings; sampling rows would thin every profile instead)."""
    counts = pd.concat([frame["user_id"] for frame in seeds.values()]).value_counts()
    if counts.sum() <= max_ratings:
        return seeds
    order = counts.sample(frac=1.0, random_state=seed)
    keep = set(order.index[order.cumsum() <= max_ratings])
    return {name: frame[frame["user_id"].isin(keep)] for name, frame in seeds.items()}


def ml_latest_seed(ratings: pd.DataFrame, links: pd.DataFrame, dropped: Counter) -> pd.DataFrame:
    """An ml-latest release's ratings keyed by TMDB id through the release's own links.csv (an
    exact join: same release); films without a TMDB id are dropped and counted."""
    joined = _ml_latest_join(ratings, links)
    dropped["ml_latest_unlinked_film"] += int(joined["tmdb_id"].isna().sum())
    return _seed_frame(joined.dropna(subset=["tmdb_id"]), ML_LATEST_USER_PREFIX, SOURCE_ML_LATEST)


def ml100k_seed(ml100k_ratings: pd.DataFrame, mapping: pd.DataFrame, dropped: Counter) -> pd.DataFrame:
    """ML-100K's ratings keyed by TMDB id through ``tmdb_links``; unmapped items are dropped."""
    joined = _ml100k_join(ml100k_ratings, mapping)
    dropped["ml_unmapped_item"] += int(joined["tmdb_id"].isna().sum())
    return _seed_frame(joined.dropna(subset=["tmdb_id"]), ML100K_USER_PREFIX, SOURCE_ML100K)


def ml_latest_film_ids(ratings: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """The TMDB id of every linked rating (``tmdb_id`` column) without building the seed's user
    ids: what the coverage report needs of a seed that is not trained on (cheap at 32M ratings)."""
    return _ml_latest_join(ratings, links)[["tmdb_id"]].dropna().astype("int64")


def ml100k_film_ids(ml100k_ratings: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    """As :func:`ml_latest_film_ids`, for ML-100K."""
    return _ml100k_join(ml100k_ratings, mapping)[["tmdb_id"]].dropna().astype("int64")


def _ml_latest_join(ratings: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    linked = links.loc[links["tmdb_id"].notna(), ["movie_id", "tmdb_id"]]
    # many_to_one: a film listed twice would have every rating of it counted twice (parse_links refuses it)
    return ratings.merge(linked, on="movie_id", how="left", validate="many_to_one")


def _ml100k_join(ml100k_ratings: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    mapped = mapping.loc[mapping["tmdb_id"].notna(), ["ml100k_item_id", "tmdb_id"]]
    return ml100k_ratings.merge(mapped, left_on="item_id", right_on="ml100k_item_id", how="left")


def _seed_frame(joined: pd.DataFrame, prefix: str, source: str) -> pd.DataFrame:
    """A seed population in the training table's shape, its users prefixed so they never merge."""
    return pd.DataFrame(
        {
            "user_id": prefix + joined["user_id"].astype(str),
            "tmdb_id": joined["tmdb_id"].astype("int64"),
            "rating": joined["rating"].astype("float64"),
            "source": source,
            "created_at": pd.to_datetime(joined["timestamp"], unit="s", utc=True),
        }
    )


def _app_part(app: pd.DataFrame, dropped: Counter, app_dropped: Counter) -> pd.DataFrame:
    users = app["user_id"].astype("string")
    # An app user id that looks like a prefixed seed user id would merge two people.
    collides = users.str.startswith(SEED_USER_PREFIXES).fillna(False)
    dropped["real_user_id_has_ml_prefix"] += int(collides.sum())
    app_dropped["user_id_has_seed_prefix"] += int(collides.sum())
    app = app[~collides]
    return pd.DataFrame(
        {
            "user_id": app["user_id"].astype("string"),
            "tmdb_id": pd.to_numeric(app["tmdb_id"], errors="coerce").astype("Int64"),
            "rating": pd.to_numeric(app["rating"], errors="coerce").astype("float64"),
            "source": SOURCE_APP,
            "created_at": pd.to_datetime(app["created_at"], utc=True),
        }
    )


def catalog_coverage(
    sources: dict[str, pd.DataFrame], catalog: Iterable[int], min_ratings: int = 20
) -> dict[str, dict[str, int]]:
    """Per source: catalog films with at least 1 and at least ``min_ratings`` ratings, and the
    ratings on catalog films (``sources`` map a name to a frame with a ``tmdb_id`` column)."""
    wanted = pd.Index(sorted(set(catalog)), dtype="int64")
    out = {}
    for name, frame in sources.items():
        counts = frame["tmdb_id"].value_counts().reindex(wanted, fill_value=0)
        out[name] = {
            "films_rated": int((counts >= 1).sum()),
            f"films_with_{min_ratings}_plus": int((counts >= min_ratings).sum()),
            "ratings_on_catalog": int(counts.sum()),
        }
    return out


def uncovered_films(
    catalog: Iterable[int], training: pd.DataFrame, popularity: pd.DataFrame, n: int = 10
) -> pd.DataFrame:
    """The ``n`` catalog films without a single training rating, most rated first by
    ``popularity`` (every MovieLens rating the graph has, chosen as a seed or not)."""
    missing = sorted(set(catalog) - set(training["tmdb_id"].tolist()))
    counts = popularity["tmdb_id"].value_counts().reindex(missing, fill_value=0)
    frame = pd.DataFrame({"tmdb_id": missing, "movielens_ratings": counts.to_numpy()})
    return frame.sort_values(["movielens_ratings", "tmdb_id"], ascending=[False, True]).head(n).reset_index(drop=True)
