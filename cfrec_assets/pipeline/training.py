"""Fitting, cross-validating and saving Surprise SVD models."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from surprise import SVD, Dataset, Reader, accuracy
from surprise.model_selection import KFold

from cfrec_assets.pipeline.ranking import DEFAULT_K, RELEVANCE_THRESHOLD, ndcg_at, precision_at, ranking_metrics
from cfrec_assets.schema import RATING_SCALE, SEED_SVD_PARAMS, TRAINING_RATINGS_FILE
from cfrec_serving.artifacts import ARTIFACT_FILES, MODEL_FILE, SERVING_FILE, TRAINSET_FILE
from cfrec_serving.model_arrays import ModelArrays, ModelArraysError, write_model_arrays
from cfrec_serving.storage import sha256_file, write_dir_atomic


@dataclass(frozen=True)
class SVDParams:
    """Surprise SVD hyper-parameters; the defaults are the seed settings (``schema.SEED_SVD_PARAMS``)."""

    n_factors: int = SEED_SVD_PARAMS["n_factors"]
    n_epochs: int = SEED_SVD_PARAMS["n_epochs"]
    lr_all: float = SEED_SVD_PARAMS["lr_all"]
    reg_all: float = SEED_SVD_PARAMS["reg_all"]
    random_state: int = SEED_SVD_PARAMS["random_state"]
    init_std_dev: float = 0.1  # Surprise's default
    # Per-term learning rates / regularisation (biases bu, bi; factors pu, qi); None uses the *_all value.
    lr_bu: float | None = None
    lr_bi: float | None = None
    lr_pu: float | None = None
    lr_qi: float | None = None
    reg_bu: float | None = None
    reg_bi: float | None = None
    reg_pu: float | None = None
    reg_qi: float | None = None

    def as_dict(self) -> dict:
        """The settings that differ from "use the *_all value" (what metadata and manifests record)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def build(self) -> SVD:
        return SVD(**asdict(self))  # Surprise itself treats a None per-term value as "use *_all"


def to_dataset(ratings: pd.DataFrame, rating_range: tuple[float, float] = RATING_SCALE) -> Dataset:
    """Surprise dataset with string user ids and int TMDB ids, as the app's serving code expects."""
    frame = pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype(str),
            "tmdb_id": ratings["tmdb_id"].astype("int64"),
            "rating": ratings["rating"].astype("float64"),
        }
    )
    return Dataset.load_from_df(frame, Reader(rating_scale=rating_range))


def fit_svd(ratings: pd.DataFrame, params: SVDParams):
    """Fit on every rating; returns (algo, trainset, fit_seconds)."""
    trainset = to_dataset(ratings).build_full_trainset()
    algo = params.build()
    started = time.perf_counter()
    algo.fit(trainset)
    return algo, trainset, time.perf_counter() - started


def save_artifacts(
    algo, trainset, ratings: pd.DataFrame, models_dir: Path, version: str, titles: pd.DataFrame | None = None
) -> dict[str, dict]:
    """Write a new version folder atomically (``storage.write_dir_atomic``); return each file's
    sha256 and size. An existing version is never overwritten."""
    try:
        arrays = ModelArrays.from_surprise(algo, trainset, titles)
    except ModelArraysError as error:  # NaN/inf factors: SGD diverged (learning rate too high)
        raise ValueError(f"training diverged, nothing saved: {error}; lower lr_all / the per-term rates") from None

    def pickles(folder: Path) -> None:
        joblib.dump(algo, folder / MODEL_FILE)
        joblib.dump(trainset, folder / TRAINSET_FILE)

    return write_version(models_dir, version, arrays, ratings, pickles)


def write_version(
    models_dir: Path,
    version: str,
    arrays: ModelArrays,
    ratings: pd.DataFrame,
    write_more: Callable[[Path], None] | None = None,
) -> dict[str, dict]:
    """Write a new version folder atomically: ``cf_model.npz``, the training table, and what
    ``write_more`` adds (Surprise's pickles; a Spark-trained version has none). Returns each
    file's sha256 and size; an existing version is never overwritten."""
    files: dict[str, dict] = {}

    def fill(folder: Path) -> None:
        if write_more is not None:
            write_more(folder)
        write_model_arrays(arrays, folder / SERVING_FILE)
        ratings.to_parquet(folder / TRAINING_RATINGS_FILE, index=False)
        # Hashed in the private temp folder, before anyone else can reach the files.
        for name in (*ARTIFACT_FILES, TRAINING_RATINGS_FILE):
            if (folder / name).exists():
                files[name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}

    write_dir_atomic(models_dir / version, fill)
    return files


def _evaluate_fold(params: SVDParams, trainset, testset, k: int, threshold: float) -> dict[str, float]:
    algo = params.build()
    started = time.perf_counter()
    algo.fit(trainset)
    fit_seconds = time.perf_counter() - started
    predictions = algo.test(testset)
    ranked = ranking_metrics(predictions, k=k, threshold=threshold)
    metrics = {
        "rmse": accuracy.rmse(predictions, verbose=False),
        "mae": accuracy.mae(predictions, verbose=False),
        precision_at(k): ranked["precision_at_k"],
        ndcg_at(k): ranked["ndcg_at_k"],
        "fit_seconds": fit_seconds,
    }
    return {name: float(value) for name, value in metrics.items()}  # numpy scalars don't serialize


def cross_validate_svd(
    ratings: pd.DataFrame,
    params: SVDParams,
    n_folds: int = 3,
    n_jobs: int = 1,
    seed: int = 42,
    k: int = DEFAULT_K,
    relevance_threshold: float = RELEVANCE_THRESHOLD,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Per-fold RMSE, MAE, precision@k and NDCG@k on shuffled K-fold splits; ``on_fold(i, metrics)``
    is called as each fold's result arrives (in fold order), e.g. to log progress."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    folds = KFold(n_splits=n_folds, random_state=seed, shuffle=True).split(to_dataset(ratings))
    jobs = (delayed(_evaluate_fold)(params, train, test, k, relevance_threshold) for train, test in folds)
    results = []
    for index, metrics in enumerate(Parallel(n_jobs=n_jobs, return_as="generator")(jobs), 1):
        results.append(metrics)
        if on_fold is not None:
            on_fold(index, metrics)
    return results


def summarize_folds(folds: list[dict[str, float]]) -> dict[str, float]:
    """Mean and (population) std of every per-fold metric, as Surprise's cross_validate reports."""
    out: dict[str, float] = {}
    for name in folds[0]:
        values = np.array([fold[name] for fold in folds], dtype=float)
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std())
    return out


def sanity_prediction(algo, trainset) -> dict[str, float | str | int]:
    """Predict the most active user's rating of the most-rated movie: must be finite and in range."""
    inner_user = max(trainset.all_users(), key=lambda u: len(trainset.ur[u]))
    inner_item = max(trainset.all_items(), key=lambda i: len(trainset.ir[i]))
    user, item = trainset.to_raw_uid(inner_user), trainset.to_raw_iid(inner_item)
    est = float(algo.predict(user, item).est)
    if not math.isfinite(est):
        raise ValueError(f"sanity prediction for ({user}, {item}) is not finite: {est}")
    return {"user_id": str(user), "tmdb_id": int(item), "estimate": round(est, 4)}
