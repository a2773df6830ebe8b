"""Model assets: the SVD model version trained on the combined ratings, and its CV metrics."""

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import pandas as pd

from cfrec_assets.defs.resources import DataStore
from cfrec_assets.pipeline.memory import cross_validation_bytes, fit_bytes, require_memory
from cfrec_assets.pipeline.preview import recommendations_table
from cfrec_assets.pipeline.ranking import DEFAULT_K
from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_assets.pipeline.training import (
    SVDParams,
    cross_validate_svd,
    fit_svd,
    sanity_prediction,
    save_artifacts,
    summarize_folds,
)
from cfrec_assets.pipeline.tuning_study import TuningResult, params_for_training
from cfrec_assets.schema import APP_RATINGS_COUNT, SEED_SVD_PARAMS, SOURCE_APP, TRAINING_POOL, TRAINING_RATINGS_FILE
from cfrec_serving.loader import load_version

GROUP = "model"


class SVDConfig(dg.Config):
    """Which hyper-parameters train the model.

    ``params: tuned`` (the default) takes the latest ``svd_tuning`` result's best params, or the
    seed params with a log line when no study ran or none beat them: a team that ran a study gets
    its gain on the next retrain, and the champion/challenger check still decides whether the
    tuned model ships. ``params: seed`` uses the fields below (the seed script's settings,
    ``schema.SEED_SVD_PARAMS``, editable per run).
    """

    params: Literal["seed", "tuned"] = "tuned"
    n_factors: int = SEED_SVD_PARAMS["n_factors"]
    n_epochs: int = SEED_SVD_PARAMS["n_epochs"]
    lr_all: float = SEED_SVD_PARAMS["lr_all"]
    reg_all: float = SEED_SVD_PARAMS["reg_all"]
    random_state: int = SEED_SVD_PARAMS["random_state"]
    memory_budget_bytes: int | None = None
    """Memory the fit may use (default: what the machine has available when the step starts)."""


def run_id_of(context: dg.AssetExecutionContext) -> str:
    """The run's id; a fresh one when the asset is called directly (tests, benchmarks)."""
    try:
        return context.run.run_id
    except dg.DagsterError:  # DagsterInvalidPropertyError: no run when called directly
        return uuid.uuid4().hex


def model_version(run_id: str, now: datetime | None = None) -> str:
    """Sortable, unique per run: UTC time plus the run id's first 8 characters."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{run_id[:8]}"


@dg.asset(group_name=GROUP, kinds={"surprise"}, pool=TRAINING_POOL)
def svd_model(
    context: dg.AssetExecutionContext,
    config: SVDConfig,
    store: DataStore,
    combined_ratings: pd.DataFrame,
    movie_titles: pd.DataFrame,
    svd_tuning: Optional[TuningResult],  # None until a study has run  # noqa: UP045 (Dagster reads it)
) -> dg.Output[ModelVersion]:
    """Surprise SVD fitted on every combined rating, saved as a new version folder.

    ``cf_model.npz`` (plain arrays with film titles, what ``serving.load_deployed`` reads) and
    ``svd_model.pkl`` / ``cf_trainset.pkl`` (joblib, what the app's older serving code loads);
    each run writes a new folder under ``data/models/`` and never touches an earlier one. The
    value handed on is a small record (version, path, params, counts, sha256s).
    """
    ratings = combined_ratings
    require_memory(
        fit_bytes(len(ratings)),
        f"fitting SVD on {len(ratings):,} ratings",
        "cap the seed ratings (combined_ratings max_seed_ratings), choose fewer seeds (CFREC_SEEDS, "
        "CFREC_ML_LATEST_RELEASE=ml-latest-small) or use a bigger machine",
        config.memory_budget_bytes,
    )
    configured = SVDParams(**config.model_dump(exclude={"params", "memory_budget_bytes"}))
    # params_for_training logs its choice; its fallback means "the configured seed fields".
    tuned = params_for_training(svd_tuning, "tuned", context.log) if config.params == "tuned" else SVDParams()
    use_tuned = svd_tuning is not None and tuned != SVDParams()
    params = tuned if use_tuned else configured
    tuning_version = svd_tuning.version if use_tuned else None
    algo, trainset, fit_seconds = fit_svd(ratings, params)
    sanity = sanity_prediction(algo, trainset)
    trained_at = datetime.now(timezone.utc)
    run_id = run_id_of(context)
    version = model_version(run_id, trained_at)
    files = save_artifacts(algo, trainset, ratings, store.models_dir, version, movie_titles)
    counts = {
        "ratings": len(ratings),
        APP_RATINGS_COUNT: int((ratings["source"] == SOURCE_APP).sum()),
        "users": trainset.n_users,
        "movies": trainset.n_items,
    }
    record = ModelVersion(
        version=version,
        path=str(store.models_dir / version),
        run_id=run_id,
        trained_at=trained_at.isoformat(),
        params=params.as_dict(),
        counts=counts,
        files=files,
        tuning_version=tuning_version,
    )
    context.log.info(
        f"trained version {version} in {fit_seconds:.1f}s on {len(ratings)} ratings ({counts[APP_RATINGS_COUNT]} from the app)"
    )
    return dg.Output(
        record,
        metadata={
            "version": version,
            "model_path": dg.MetadataValue.path(record.path),
            "trained_at": record.trained_at,
            "fit_seconds": round(fit_seconds, 3),
            **counts,
            "global_mean": round(float(trainset.global_mean), 4),
            "params": dg.MetadataValue.json(record.params),
            "params_source": f"svd_tuning {tuning_version}" if tuning_version else "seed",
            "files": dg.MetadataValue.json(files),
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in files.items()},
            **{f"{name.split('.')[0]}_bytes": f["bytes"] for name, f in files.items()},
            "sanity_prediction": dg.MetadataValue.json(sanity),
            "sanity_estimate": sanity["estimate"],
        },
    )


class CVConfig(dg.Config):
    """K-fold cross-validation of the model version just trained."""

    n_folds: int = 3
    n_jobs: int = -1
    """Folds fitted in parallel (joblib processes); -1 uses every core, 1 runs them in this
    process. Two cores fit 3 folds in 0.56x the serial time (bench/graph_bench.py)."""
    seed: int = 42
    k: int = DEFAULT_K
    """Cut-off for precision@k and NDCG@k (relevant: a held-out rating >= ``ranking.RELEVANCE_THRESHOLD``)."""
    memory_budget_bytes: int | None = None
    """Memory the folds may use together (default: what the machine has available)."""


@dg.asset(group_name=GROUP, kinds={"surprise"}, pool=TRAINING_POOL)
def cv_metrics(context: dg.AssetExecutionContext, config: CVConfig, svd_model: ModelVersion) -> dg.Output[ModelMetrics]:
    """K-fold RMSE, MAE, precision@k and NDCG@k of the ``svd_model`` version this run trained.

    Uses that version's exact training table and hyper-parameters, so the metrics describe
    the model that would be deployed. Numeric metadata: Dagster plots their history.
    """
    workers = min(config.n_folds, os.cpu_count() or 1) if config.n_jobs == -1 else max(1, config.n_jobs)
    require_memory(
        cross_validation_bytes(svd_model.counts["ratings"], config.n_folds, workers),
        f"{config.n_folds}-fold cross-validation of {svd_model.counts['ratings']:,} ratings with {workers} parallel fit(s)",
        "set cv_metrics n_jobs: 1 (one fold at a time), fewer n_folds, cap the seed ratings (combined_ratings "
        "max_seed_ratings), or use a bigger machine",
        config.memory_budget_bytes,
    )
    ratings = pd.read_parquet(Path(svd_model.path) / TRAINING_RATINGS_FILE)
    params = SVDParams(**svd_model.params)
    folds = cross_validate_svd(ratings, params, config.n_folds, config.n_jobs, config.seed, config.k)
    summary = {name: round(value, 5) for name, value in summarize_folds(folds).items()}
    per_fold = {f"fold_{i}_{name}": round(value, 5) for i, fold in enumerate(folds, 1) for name, value in fold.items()}
    context.log.info(f"version {svd_model.version}: RMSE {summary['rmse_mean']:.4f} ± {summary['rmse_std']:.4f}")
    challenger = load_version(Path(svd_model.path), svd_model.files, {"version": svd_model.version})
    metrics = ModelMetrics(
        version=svd_model.version,
        run_id=run_id_of(context),
        n_folds=config.n_folds,
        summary=summary,
        real_ratings=svd_model.counts[APP_RATINGS_COUNT],
        k=config.k,
        folds=folds,
    )
    return dg.Output(
        metrics,
        metadata={
            "version": svd_model.version,
            "n_folds": config.n_folds,
            "ratings": len(ratings),
            APP_RATINGS_COUNT: metrics.real_ratings,
            **summary,
            **per_fold,
            "recommendations_preview": dg.MetadataValue.md(recommendations_table(challenger)),
        },
    )
