"""One home for the facts every layer shares: table columns, the rating scale, seed
sources and the seed SVD settings. Artifact file names and the serving folder live in
``cfrec_serving.artifacts`` (the app's distribution), since the app needs them too.

Nothing here imports from the rest of the package, so any module may import it.
"""

from __future__ import annotations

# --- ratings ---------------------------------------------------------------------------------
RATING_MIN, RATING_MAX = 0.5, 5.0
RATING_SCALE = (RATING_MIN, RATING_MAX)
ML100K_USER_PREFIX = "ml_"
"""ML-100K user ids become ``ml_<id>``, so they can never merge with the app's user ids."""
ML_LATEST_USER_PREFIX = "mll_"
"""ml-latest users become ``mll_<id>``: another population than ML-100K's, never merged with it."""
SEED_USER_PREFIXES = (ML100K_USER_PREFIX, ML_LATEST_USER_PREFIX)
"""Every seed population's prefix: a user id without one of these is an app user."""
SEED_ML100K, SEED_ML_LATEST = "ml100k", "ml-latest"
SEEDS = (SEED_ML100K, SEED_ML_LATEST)
"""Seed rating sources ``combined_ratings`` can train on besides the app's (CFREC_SEEDS)."""
DEFAULT_SEEDS = f"{SEED_ML100K},{SEED_ML_LATEST}"
"""Both: ML-100K alone ends in 1998 and ranks no current film; the ml-latest release covers them
(docs/benchmarks.md "Seed ratings"), and ML-100K's users stay a population of their own."""

# --- tables: (column, type, description); the asset graph shows them as column schemas ----------
APP_RATING_TABLE = (
    ("user_id", "string", "the app's user id"),
    ("tmdb_id", "int64", "the film's TMDB id"),
    ("rating", "float64", "stars, 0.5 to 5"),
    ("created_at", "timestamp UTC", "when the user rated the film"),
)
"""The app's ratings as ``supabase_ratings`` hands them on (and as both Supabase readers return them)."""
COMBINED_TABLE = (
    ("user_id", "string", "ml_<id> (ML-100K), mll_<id> (ml-latest) or the app's user id"),
    ("tmdb_id", "int64", "the film's TMDB id"),
    ("rating", "float64", "stars, 0.5 to 5"),
    ("source", "string", "movielens (ML-100K), ml-latest or app"),
    ("created_at", "timestamp UTC", "when the rating was made; the latest per (user, film) is kept"),
)
"""The training table ``combined_ratings`` hands to ``svd_model``."""
RECOMMENDATION_TABLE = (
    ("user_id", "text", "the app's user id (auth.users.id as text)"),
    ("tmdb_id", "bigint", "the recommended film's TMDB id"),
    ("rank", "integer", "1 = best"),
    ("score", "real", "predicted rating, clipped to 0.5..5"),
    ("model_version", "text", "the served version that ranked it"),
    ("created_at", "timestamptz", "when the list was written"),
)
"""What ``user_recommendations`` writes to the app's table, with the SQL types of
deploy/user_recommendations.sql."""
TMDB_LINK_TABLE = (
    ("ml100k_item_id", "int64", "the ML-100K item (u.item)"),
    ("tmdb_id", "nullable int64", "its TMDB id; empty when unmatched or ambiguous"),
    ("match_kind", "string", "the tier that matched it (tmdb_mapping.MATCH_KINDS)"),
    ("ml_latest_movie_id", "nullable int64", "the ml-latest film it matched"),
    ("ml100k_title", "string", "the title in u.item"),
    ("matched_title", "string", "the ml-latest title it matched"),
    ("embedded_imdb_id", "nullable int64", "the IMDb number in the item's URL, if any"),
    ("embedded_imdb_movie_id", "nullable int64", "the ml-latest film with that IMDb number"),
)
"""ML-100K item -> TMDB id, one row per item, as ``tmdb_links`` hands it on."""
MOVIE_TITLE_TABLE = (
    ("tmdb_id", "int64", "the film's TMDB id"),
    ("title", "string", "as people write it (article first)"),
    ("year", "nullable int64", "release year"),
)
"""Title and year of every film with a TMDB id, as ``movie_titles`` hands them on."""


def column_names(table: tuple[tuple[str, str, str], ...]) -> tuple[str, ...]:
    return tuple(name for name, _, _ in table)


APP_RATING_COLUMNS = column_names(APP_RATING_TABLE)
COMBINED_COLUMNS = column_names(COMBINED_TABLE)
RECOMMENDATION_COLUMNS = column_names(RECOMMENDATION_TABLE)
TMDB_LINK_COLUMNS = column_names(TMDB_LINK_TABLE)
SOURCE_ML100K, SOURCE_ML_LATEST, SOURCE_APP = "movielens", "ml-latest", "app"
"""Values of the training table's ``source``: ML-100K, the ml-latest release, the app (stored
data: ML-100K's value predates the name ``ml100k`` and stays ``movielens``)."""
APP_RATINGS_COUNT = "real_ratings"
"""The key of the app's rating count in manifests (``counts``), records and asset metadata: file
formats that predate the name ``app``, so the key keeps ``real``."""

# --- orchestration ---------------------------------------------------------------------------
TRAINING_POOL = "cfrec_training"
"""Dagster pool of the steps that fit models (svd_tuning, svd_model, cv_metrics); the production
instance runs one run holding them at a time (deploy/serve.sh sets its limit to 1)."""

# --- the seed model's hyper-parameters (the mission's settings) ------------------------------
SEED_SVD_PARAMS = {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02, "random_state": 42}

# --- pipeline artifacts ----------------------------------------------------------------------
TRAINING_RATINGS_FILE = "training_ratings.parquet"
"""The exact table a version was fitted on, so cross-validation evaluates the same data."""
