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
DEFAULT_SEEDS = SEED_ML100K

APP_RATING_COLUMNS = ("user_id", "tmdb_id", "rating", "created_at")
"""The app's ratings as ``supabase_ratings`` hands them on (and as both Supabase readers return them)."""
COMBINED_COLUMNS = ("user_id", "tmdb_id", "rating", "source", "created_at")
"""The training table ``combined_ratings`` hands to ``svd_model``."""
RECOMMENDATION_COLUMNS = ("user_id", "tmdb_id", "rank", "score", "model_version", "created_at")
"""What ``user_recommendations`` writes to the app's table (deploy/user_recommendations.sql)."""
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
