"""Tiny trained SVD models written in the same layout as the ``svd_model`` asset.

Everything here is generated (no MovieLens data) and fast: training a model
on the default frame takes a few milliseconds, so tests can build several.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from surprise import SVD, Dataset, Reader, Trainset

from cfrec_assets.schema import RATING_SCALE
from cfrec_serving.artifacts import ARTIFACT_FILES, MODEL_FILE, PICKLE_FILES, SERVING_FILE, TRAINSET_FILE
from cfrec_serving.model_arrays import ModelArrays, write_model_arrays


@dataclass(frozen=True)
class TinyModelVersion:
    """A model version folder written by :func:`write_model_version`."""

    version: str
    path: Path
    sha256: dict[str, str]
    algo: SVD
    trainset: Trainset
    ratings: pd.DataFrame


def make_ratings_frame(n_users: int = 30, n_movies: int = 40, density: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """Random ratings shaped like the training frame (user_id str, tmdb_id int, rating).

    Users mix MovieLens-style ids (``ml_<n>``) and app-style uuid strings; movie
    ids are non-contiguous ints so raw/inner id mix-ups show up in tests.
    Every user and movie gets at least one rating.
    """
    rng = np.random.default_rng(seed)
    users = [f"ml_{u}" if u % 3 else f"00000000-0000-4000-8000-{u:012d}" for u in range(1, n_users + 1)]
    movies = [int(m) for m in 7 * np.arange(1, n_movies + 1) + 100]
    rated = rng.random((n_users, n_movies)) < density
    rated[np.arange(n_users), np.arange(n_users) % n_movies] = True
    rated[np.arange(n_movies) % n_users, np.arange(n_movies)] = True
    # Ratings depend on a hidden user/movie affinity so the model has signal to learn.
    affinity = rng.normal(size=(n_users, 2)) @ rng.normal(size=(2, n_movies))
    half_stars = np.clip(np.rint(6 + 2 * affinity + rng.normal(scale=0.7, size=affinity.shape)), 1, 10)
    rows = [(users[u], movies[m], float(half_stars[u, m]) / 2) for u, m in zip(*np.nonzero(rated))]
    return pd.DataFrame(rows, columns=["user_id", "tmdb_id", "rating"])


def train_tiny_svd(ratings: pd.DataFrame, seed: int = 0, n_factors: int = 5) -> tuple[SVD, Trainset]:
    """Fit SVD exactly the way the ``svd_model`` asset does, only smaller."""
    data = Dataset.load_from_df(ratings[["user_id", "tmdb_id", "rating"]], Reader(rating_scale=RATING_SCALE))
    trainset = data.build_full_trainset()
    algo = SVD(n_factors=n_factors, n_epochs=15, random_state=seed)
    algo.fit(trainset)
    return algo, trainset


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (independent of the code under test)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_version(
    models_dir: Path,
    version: str = "20261126T071500Z-1a2b3c4d",
    *,
    seed: int = 0,
    ratings: pd.DataFrame | None = None,
    pickles_only: bool = False,
    titles: pd.DataFrame | None = None,
) -> TinyModelVersion:
    """Train a tiny SVD and write ``<models_dir>/<version>/{cf_model.npz, svd_model.pkl, cf_trainset.pkl}``
    (``pickles_only``: as versions made before the npz artifact).

    Different seeds give different models (and therefore different file hashes).
    """
    ratings = make_ratings_frame(seed=seed) if ratings is None else ratings
    algo, trainset = train_tiny_svd(ratings, seed=seed)
    path = Path(models_dir) / version
    path.mkdir(parents=True, exist_ok=False)
    joblib.dump(algo, path / MODEL_FILE)
    joblib.dump(trainset, path / TRAINSET_FILE)
    if not pickles_only:
        write_model_arrays(ModelArrays.from_surprise(algo, trainset, titles), path / SERVING_FILE)
    hashes = {name: sha256_of(path / name) for name in (PICKLE_FILES if pickles_only else ARTIFACT_FILES)}
    return TinyModelVersion(version, path, hashes, algo, trainset, ratings)


def version_name(n: int) -> str:
    """A distinct, chronologically sortable version name like the asset's."""
    return f"20261126T{7 + n // 60:02d}{n % 60:02d}00Z-{n:08x}"


def promote_version(
    version: TinyModelVersion, serving_dir: Path, trained_at: str = "2026-11-26T07:15:00+00:00"
) -> Path:
    """Promote a tiny version into ``serving_dir`` (checked against its sha256s); return the folder."""
    from cfrec_serving.targets.manifest import Promotion
    from cfrec_serving.targets.target import open_target

    promotion = Promotion(version.version, metrics={}, counts={}, trained_at=trained_at, expected_sha256=version.sha256)
    open_target(serving_dir).promote(version.path, promotion)
    return Path(serving_dir)
