"""One home for the facts every layer shares: table columns, the rating scale, artifact names,
default folders and the seed SVD settings.

Nothing here imports from the rest of the package, so any module may import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# --- ratings ---------------------------------------------------------------------------------
RATING_MIN, RATING_MAX = 0.5, 5.0
RATING_SCALE = (RATING_MIN, RATING_MAX)
ML_USER_PREFIX = "ml_"
"""MovieLens user ids become ``ml_<id>``, so they can never merge with the app's user ids."""
ML_LATEST_USER_PREFIX = "mll_"
"""ml-latest users become ``mll_<id>``: another population than ML-100K's, never merged with it."""
SEED_USER_PREFIXES = (ML_USER_PREFIX, ML_LATEST_USER_PREFIX)
"""Every seed population's prefix: a user id without one of these is an app user."""
SEED_ML100K, SEED_ML_LATEST = "ml100k", "ml-latest"
SEEDS = (SEED_ML100K, SEED_ML_LATEST)
"""Seed rating sources ``combined_ratings`` can train on besides the app's (CFREC_SEEDS)."""
DEFAULT_SEEDS = f"{SEED_ML100K},{SEED_ML_LATEST}"
"""Both: ML-100K alone ends in 1998 and ranks no current film; the ml-latest release covers them
(docs/benchmarks.md "Seed ratings"), and ML-100K's users stay a population of their own."""

APP_RATING_COLUMNS = ("user_id", "tmdb_id", "rating", "created_at")
"""The app's ratings as ``supabase_ratings`` hands them on (and as both Supabase readers return them)."""
COMBINED_COLUMNS = ("user_id", "tmdb_id", "rating", "source", "created_at")
"""The training table ``combined_ratings`` hands to ``svd_model``."""
RECOMMENDATION_COLUMNS = ("user_id", "tmdb_id", "rank", "score", "model_version", "created_at")
"""What ``user_recommendations`` writes to the app's table (deploy/user_recommendations.sql)."""
SOURCE_MOVIELENS, SOURCE_ML_LATEST, SOURCE_APP = "movielens", "ml-latest", "app"
"""Values of the training table's ``source``: ML-100K, the ml-latest release, the app."""

# --- orchestration ---------------------------------------------------------------------------
TRAINING_POOL = "cfrec_training"
"""Dagster pool of the steps that fit models (svd_tuning, svd_model, cv_metrics); the production
instance runs one run holding them at a time (deploy/serve.sh sets its limit to 1)."""

# --- the seed model's hyper-parameters (the mission's settings) ------------------------------
SEED_SVD_PARAMS = {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02, "random_state": 42}

# --- artifacts -------------------------------------------------------------------------------
MODEL_FILE = "svd_model.pkl"
TRAINSET_FILE = "cf_trainset.pkl"
PICKLE_FILES = (MODEL_FILE, TRAINSET_FILE)
"""What the app's existing serving code loads (joblib pickles), in every model version folder."""
SERVING_FILE = "cf_model.npz"
"""The pickle-free artifact ``serving.load_deployed`` reads: plain numpy arrays, loaded with
``allow_pickle=False``, so loading it can never run code. Versions before it have only the pickles."""
ARTIFACT_FILES = (*PICKLE_FILES, SERVING_FILE)
"""Every file a new version ships (and the manifest hashes)."""
TRAINING_RATINGS_FILE = "training_ratings.parquet"
"""The exact table a version was fitted on, so cross-validation evaluates the same data."""
MANIFEST_FILE = "manifest.json"
VERSION_FILE = "version.json"
VERSIONS_DIR = "versions"

# --- folders ---------------------------------------------------------------------------------
DEFAULT_DATA_DIR = "data"
SERVING_SUBDIR = "serving"
ENV_DATA_DIR = "CFREC_DATA_DIR"
ENV_SERVING_DIR = "CFREC_SERVING_DIR"


def serving_dir(data_dir: str | None = None, serving_dir_path: str | None = None) -> Path:
    """Where models are promoted and the app loads them: explicit, else ``<data_dir>/serving``."""
    if serving_dir_path:
        return Path(serving_dir_path).expanduser().resolve()
    return Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve() / SERVING_SUBDIR


def serving_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """The serving folder as the pipeline resolves it from ``CFREC_SERVING_DIR`` / ``CFREC_DATA_DIR``."""
    return serving_dir(environ.get(ENV_DATA_DIR), environ.get(ENV_SERVING_DIR))
