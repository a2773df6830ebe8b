"""Model assets: the SVD model version trained on the combined ratings, and its CV metrics."""

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd

from cfrec_assets.defs.assets.labels import OWNERS, PERSONAL_DATA, stage
from cfrec_assets.defs.resources import DataStore, SparkResource
from cfrec_assets.pipeline.memory import cross_validation_bytes, fit_bytes, require_memory
from cfrec_assets.pipeline.preview import recommendations_table
from cfrec_assets.pipeline.ranking import DEFAULT_K, promoted_metrics
from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_assets.pipeline.spark.als import ALSParams, cross_validate_table, fit_table, sanity_prediction_of
from cfrec_assets.pipeline.training import (
    SVDParams,
    cross_validate_svd,
    fit_svd,
    sanity_prediction,
    save_artifacts,
    summarize_folds,
    write_version,
)
from cfrec_assets.pipeline.tuning_study import load_result, tuned_params
from cfrec_assets.schema import APP_RATINGS_COUNT, SEED_SVD_PARAMS, SOURCE_APP, TRAINING_POOL, TRAINING_RATINGS_FILE
from cfrec_serving.artifacts import ARTIFACT_FILES
from cfrec_serving.loader import load_version

GROUP = "model"


class SVDConfig(dg.Config):
    """Which trainer and hyper-parameters train the model.

    `trainer`: `surprise` (SVD, the fields below), `spark` (MLlib ALS on the `spark` resource: the
    `als_*` fields and `random_state`), or `auto` (Spark when the memory pre-check says Surprise
    will not fit); unset, the `spark` resource's default (`CFREC_TRAINER`, else surprise).

    `params: tuned` (the default) takes the best params of the latest `svd_tuning` study on
    this data folder (`<data_dir>/tuning/latest_result.json`), or the
    seed params with a log line when no study ran or none beat them: a team that ran a study gets
    its gain on the next retrain, and the champion/challenger check still decides whether the
    tuned model ships. `params: seed` uses the fields below (the seed script's settings,
    `schema.SEED_SVD_PARAMS`, editable per run). Studies tune Surprise's SVD only.
    """

    trainer: str | None = None
    """surprise, spark or auto (checked when the step starts); unset: CFREC_TRAINER, else surprise."""
    params: Literal["seed", "tuned"] = "tuned"
    n_factors: int = SEED_SVD_PARAMS["n_factors"]
    n_epochs: int = SEED_SVD_PARAMS["n_epochs"]
    lr_all: float = SEED_SVD_PARAMS["lr_all"]
    reg_all: float = SEED_SVD_PARAMS["reg_all"]
    random_state: int = SEED_SVD_PARAMS["random_state"]
    als_rank: int = ALSParams.rank
    als_max_iter: int = ALSParams.max_iter
    als_reg_param: float = ALSParams.reg_param
    memory_budget_bytes: int | None = None
    """Memory the fit may use (default: what the machine has available when the step starts)."""


@dataclass(frozen=True)
class FittedModel:
    """What either trainer hands on to be saved as a version."""

    save: Callable[[Path, str], dict[str, dict]]
    """(models_dir, version) -> the files written, with their sha256 and size."""
    params: dict[str, Any]
    users: int
    movies: int
    global_mean: float
    sanity: dict[str, Any]
    fit_seconds: float
    params_source: str
    params_reason: str
    tuning_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


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


# svd_tuning is a dependency, not an input: its result is read from the data folder
# (`tuning.load_result`), so any instance training on that folder uses the same params.
@dg.asset(
    group_name=GROUP,
    kinds={"surprise", "spark", "numpy"},
    owners=OWNERS,
    tags=stage("train", **PERSONAL_DATA),
    pool=TRAINING_POOL,
    deps=["svd_tuning"],
)
def svd_model(
    context: dg.AssetExecutionContext,
    config: SVDConfig,
    store: DataStore,
    spark: SparkResource,
    combined_ratings: pd.DataFrame,
    movie_titles: pd.DataFrame,
) -> dg.Output[ModelVersion]:
    """The model fitted on every combined rating, saved as a new version folder.

    Surprise SVD (`cf_model.npz`, plain arrays with film titles, what `serving.load_deployed`
    reads, plus `svd_model.pkl` / `cf_trainset.pkl`, joblib, what the app's older serving code
    loads) or Spark ALS (`cf_model.npz` alone: its factors are not a Surprise model). Each run
    writes a new folder under `data/models/` and never touches an earlier one. The value handed
    on is a small record (version, path, trainer, params, counts, sha256s).
    """
    ratings = combined_ratings
    users, movies = int(ratings["user_id"].nunique()), int(ratings["tmdb_id"].nunique())
    study = load_result(store.tuning_dir) if config.params == "tuned" else None
    tuned, why = tuned_params(study) if config.params == "tuned" else (None, "params: seed in svd_model's config")
    params = tuned or SVDParams(**config.model_dump(include=set(SEED_SVD_PARAMS)))
    what = f"{len(ratings):,} ratings of {users:,} users and {movies:,} films"
    surprise_bytes = fit_bytes(len(ratings), users, movies, params.n_factors)
    trainer = spark.trainer_for(config.trainer, surprise_bytes, what, config.memory_budget_bytes, context.log)
    if trainer == "spark":
        fitted = _fit_on_spark(context, config, store, spark, ratings, movie_titles, tuned is not None)
    else:
        require_memory(
            surprise_bytes,
            f"fitting SVD with {params.n_factors} factors on {what}",
            "train on Spark (svd_model trainer: spark or auto, CFREC_TRAINER), cap the seed ratings "
            "(combined_ratings max_seed_ratings), choose fewer seeds (CFREC_SEEDS, "
            "CFREC_ML_LATEST_RELEASE=ml-latest-small), use fewer n_factors, or use a bigger machine",
            config.memory_budget_bytes,
        )
        if config.params == "tuned":
            log = context.log.warning if tuned is None else context.log.info
            log(
                f"params mode 'tuned' but {why}: training with the seed params"
                if tuned is None
                else f"training with the tuned params of {why}"
            )
        tuning_version = study.version if tuned and study else None
        fitted = _fit_with_surprise(context, params, ratings, movie_titles, tuning_version, why)
    trained_at = datetime.now(timezone.utc)
    run_id = run_id_of(context)
    version = model_version(run_id, trained_at)
    files = fitted.save(store.models_dir, version)
    counts = {
        "ratings": len(ratings),
        APP_RATINGS_COUNT: int((ratings["source"] == SOURCE_APP).sum()),
        "users": fitted.users,
        "movies": fitted.movies,
    }
    record = ModelVersion(
        version=version,
        path=str(store.models_dir / version),
        run_id=run_id,
        trained_at=trained_at.isoformat(),
        params=fitted.params,
        counts=counts,
        files=files,
        tuning_version=fitted.tuning_version,
        trainer=trainer,
    )
    context.log.info(
        f"trained version {version} with {trainer} in {fitted.fit_seconds:.1f}s on {len(ratings)} ratings "
        f"({counts[APP_RATINGS_COUNT]} from the app)"
    )
    return dg.Output(
        record,
        metadata={
            "version": version,
            "trainer": trainer,
            "model_path": dg.MetadataValue.path(record.path),
            "trained_at": record.trained_at,
            "fit_seconds": round(fitted.fit_seconds, 3),
            **counts,
            "global_mean": round(fitted.global_mean, 4),
            "params": dg.MetadataValue.json(record.params),
            "params_source": fitted.params_source,
            "params_reason": fitted.params_reason,
            **fitted.metadata,
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in files.items()},
            "artifact_bytes": sum(files[name]["bytes"] for name in ARTIFACT_FILES if name in files),
            "sanity_prediction": dg.MetadataValue.json(fitted.sanity),
        },
    )


def _fit_with_surprise(
    context: dg.AssetExecutionContext,
    params: SVDParams,
    ratings: pd.DataFrame,
    titles: pd.DataFrame,
    tuning_version: str | None,
    why: str,
) -> FittedModel:
    context.log.info(
        f"fitting SVD ({params.n_factors} factors x {params.n_epochs} epochs, "
        f"{'svd_tuning ' + tuning_version if tuning_version else 'seed'} params) on {len(ratings):,} ratings"
    )
    algo, trainset, fit_seconds = fit_svd(ratings, params)
    return FittedModel(
        save=lambda models_dir, version: save_artifacts(algo, trainset, ratings, models_dir, version, titles),
        params=params.as_dict(),
        users=trainset.n_users,
        movies=trainset.n_items,
        global_mean=float(trainset.global_mean),
        sanity=sanity_prediction(algo, trainset),
        fit_seconds=fit_seconds,
        params_source=f"svd_tuning {tuning_version}" if tuning_version else "seed",
        params_reason=why,
        tuning_version=tuning_version,
    )


def _fit_on_spark(
    context: dg.AssetExecutionContext,
    config: SVDConfig,
    store: DataStore,
    spark: SparkResource,
    ratings: pd.DataFrame,
    titles: pd.DataFrame,
    study_has_params: bool,
) -> FittedModel:
    if study_has_params:
        context.log.info("svd_tuning's params are Surprise SVD's: the Spark trainer uses the als_* config fields")
    params = ALSParams(
        rank=config.als_rank, max_iter=config.als_max_iter, reg_param=config.als_reg_param, seed=config.random_state
    )
    context.log.info(
        f"fitting Spark ALS (rank {params.rank} x {params.max_iter} iterations) on {len(ratings):,} ratings "
        f"({spark.describe()})"
    )
    with spark.session() as session:
        fit = fit_table(session, ratings, params, titles, spark.staging_root(store.root))
    context.log.info(f"Spark hand-off as {fit.handoff} {fit.handoff_seconds:.1f}s, ALS fit {fit.fit_seconds:.1f}s")
    arrays = fit.arrays
    return FittedModel(
        save=lambda models_dir, version: write_version(models_dir, version, arrays, ratings),
        params=fit.params.as_dict(),
        users=arrays.n_users,
        movies=arrays.n_items,
        global_mean=float(arrays.global_mean),
        sanity=sanity_prediction_of(arrays),
        fit_seconds=fit.fit_seconds,
        params_source="als config",
        params_reason="the Spark trainer's als_* fields in svd_model's config",
        metadata={
            "spark": spark.describe(),
            "handoff": fit.handoff,
            "handoff_seconds": round(fit.handoff_seconds, 3),
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


@dg.asset(group_name=GROUP, kinds={"surprise", "spark"}, owners=OWNERS, tags=stage("evaluate"), pool=TRAINING_POOL)
def cv_metrics(
    context: dg.AssetExecutionContext, config: CVConfig, store: DataStore, spark: SparkResource, svd_model: ModelVersion
) -> dg.Output[ModelMetrics]:
    """K-fold RMSE, MAE, precision@k and NDCG@k of the `svd_model` version this run trained.

    Uses that version's exact training table, trainer and hyper-parameters, so the metrics
    describe the model that would be deployed. Both trainers are scored on the same folds
    (Surprise's seeded shuffle of the table's rows), with predictions clipped to the rating scale,
    so a champion and a challenger from different trainers are compared on equal terms. The
    headline metrics come first (Dagster plots their history); the per-fold values are one table
    (`folds`).
    """
    ratings = pd.read_parquet(Path(svd_model.path) / TRAINING_RATINGS_FILE)

    def progress(fold: int, metrics: dict[str, float]) -> None:
        context.log.info(
            f"fold {fold}/{config.n_folds}: RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f} "
            f"(fit {metrics['fit_seconds']:.1f} s)"
        )

    if svd_model.trainer == "spark":
        if config.n_jobs != -1:
            context.log.info("n_jobs is Surprise's: Spark spreads each fold's fit over its own task slots")
        context.log.info(
            f"cross-validating version {svd_model.version} on Spark ({spark.describe()}): {config.n_folds} folds "
            f"of {len(ratings):,} ratings"
        )
        with spark.session() as session:
            folds = cross_validate_table(
                session,
                ratings,
                ALSParams(**svd_model.params),
                config.n_folds,
                config.seed,
                config.k,
                spark.staging_root(store.root),
                on_fold=progress,
            )
    else:
        folds = _cross_validate_with_surprise(context, config, svd_model, ratings, progress)
    summary = {name: round(value, 5) for name, value in summarize_folds(folds).items()}
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
    headline = promoted_metrics(config.k)
    return dg.Output(
        metrics,
        metadata={
            **{name: summary[name] for name in headline},  # first in the UI, and plotted across runs
            "version": svd_model.version,
            "trainer": svd_model.trainer,
            "ratings": len(ratings),
            APP_RATINGS_COUNT: metrics.real_ratings,
            "folds": dg.MetadataValue.md(folds_table(folds, summary)),
            "recommendations_preview": dg.MetadataValue.md(recommendations_table(challenger)),
        },
    )


def _cross_validate_with_surprise(
    context: dg.AssetExecutionContext,
    config: CVConfig,
    svd_model: ModelVersion,
    ratings: pd.DataFrame,
    progress: Callable[[int, dict[str, float]], None],
) -> list[dict[str, float]]:
    workers = min(config.n_folds, os.cpu_count() or 1) if config.n_jobs == -1 else max(1, config.n_jobs)
    params = SVDParams(**svd_model.params)
    counts = svd_model.counts
    require_memory(
        cross_validation_bytes(
            counts["ratings"], counts["users"], counts["movies"], params.n_factors, config.n_folds, workers
        ),
        f"{config.n_folds}-fold cross-validation of {counts['ratings']:,} ratings ({counts['users']:,} users, "
        f"{params.n_factors} factors) with {workers} parallel fit(s)",
        "set cv_metrics n_jobs: 1 (one fold at a time), fewer n_folds, cap the seed ratings (combined_ratings "
        "max_seed_ratings), train on Spark (svd_model trainer: spark), or use a bigger machine",
        config.memory_budget_bytes,
    )
    context.log.info(
        f"cross-validating version {svd_model.version}: {config.n_folds} folds of {len(ratings):,} ratings, "
        f"{workers} at a time"
    )
    return cross_validate_svd(ratings, params, config.n_folds, config.n_jobs, config.seed, config.k, on_fold=progress)


def folds_table(folds: list[dict[str, float]], summary: dict[str, float]) -> str:
    """One Markdown row per fold, then the mean and std rows."""
    names = list(folds[0])
    rows = [(str(i), fold) for i, fold in enumerate(folds, 1)]
    rows += [(stat, {n: summary[f"{n}_{stat}"] for n in names}) for stat in ("mean", "std")]
    lines = ["| fold | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |" for label, values in rows]
    return "\n".join(lines)
