"""Model assets: the SVD model version trained on the combined ratings, and its CV metrics."""

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd

from cfrec_assets.defs.assets.labels import OWNERS, PERSONAL_DATA, stage
from cfrec_assets.defs.resources import DataStore
from cfrec_assets.pipeline.memory import cross_validation_bytes, fit_bytes, require_memory
from cfrec_assets.pipeline.preview import recommendations_table
from cfrec_assets.pipeline.ranking import DEFAULT_K, promoted_metrics
from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_assets.pipeline.training import (
    SVDParams,
    cross_validate_svd,
    fit_svd,
    sanity_prediction,
    save_artifacts,
    summarize_folds,
)
from cfrec_assets.pipeline.tuning_study import load_result, tuned_params
from cfrec_assets.schema import APP_RATINGS_COUNT, SEED_SVD_PARAMS, SOURCE_APP, TRAINING_POOL, TRAINING_RATINGS_FILE
from cfrec_serving.artifacts import ARTIFACT_FILES
from cfrec_serving.loader import load_version

GROUP = "model"


class SVDConfig(dg.Config):
    """Which hyper-parameters train the model.

    `params: tuned` (the default) takes the best params of the latest `svd_tuning` study on
    this data folder (`<data_dir>/tuning/latest_result.json`), or the
    seed params with a log line when no study ran or none beat them: a team that ran a study gets
    its gain on the next retrain, and the champion/challenger check still decides whether the
    tuned model ships. `params: seed` uses the fields below (the seed script's settings,
    `schema.SEED_SVD_PARAMS`, editable per run).
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


# svd_tuning is a dependency, not an input: its result is read from the data folder
# (`tuning.load_result`), so any instance training on that folder uses the same params.
@dg.asset(
    group_name=GROUP,
    kinds={"surprise", "numpy"},
    owners=OWNERS,
    tags=stage("train", **PERSONAL_DATA),
    pool=TRAINING_POOL,
    deps=["svd_tuning"],
)
def svd_model(
    context: dg.AssetExecutionContext,
    config: SVDConfig,
    store: DataStore,
    combined_ratings: pd.DataFrame,
    movie_titles: pd.DataFrame,
) -> dg.Output[ModelVersion]:
    """Surprise SVD fitted on every combined rating, saved as a new version folder.

    `cf_model.npz` (plain arrays with film titles, what `serving.load_deployed` reads) and
    `svd_model.pkl` / `cf_trainset.pkl` (joblib, what the app's older serving code loads);
    each run writes a new folder under `data/models/` and never touches an earlier one. The
    value handed on is a small record (version, path, params, counts, sha256s).
    """
    ratings = combined_ratings
    configured = SVDParams(**config.model_dump(exclude={"params", "memory_budget_bytes"}))
    study = load_result(store.tuning_dir) if config.params == "tuned" else None
    if config.params == "tuned":
        tuned, why = tuned_params(study)
        if tuned is None:
            context.log.warning(f"params mode 'tuned' but {why}: training with the seed params")
        else:
            context.log.info(f"training with the tuned params of {why}")
    else:
        tuned, why = None, "params: seed in svd_model's config"
    params = tuned or configured
    tuning_version = study.version if tuned and study else None
    users, movies = int(ratings["user_id"].nunique()), int(ratings["tmdb_id"].nunique())
    require_memory(
        fit_bytes(len(ratings), users, movies, params.n_factors),
        f"fitting SVD with {params.n_factors} factors on {len(ratings):,} ratings of {users:,} users and "
        f"{movies:,} films",
        "cap the seed ratings (combined_ratings max_seed_ratings), choose fewer seeds (CFREC_SEEDS, "
        "CFREC_ML_LATEST_RELEASE=ml-latest-small), use fewer n_factors, or use a bigger machine",
        config.memory_budget_bytes,
    )
    context.log.info(
        f"fitting SVD ({params.n_factors} factors x {params.n_epochs} epochs, "
        f"{'svd_tuning ' + tuning_version if tuning_version else 'seed'} params) on {len(ratings):,} ratings"
    )
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
            "params_reason": why,
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in files.items()},
            "artifact_bytes": sum(files[name]["bytes"] for name in ARTIFACT_FILES if name in files),
            "sanity_prediction": dg.MetadataValue.json(sanity),
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


@dg.asset(group_name=GROUP, kinds={"surprise"}, owners=OWNERS, tags=stage("evaluate"), pool=TRAINING_POOL)
def cv_metrics(context: dg.AssetExecutionContext, config: CVConfig, svd_model: ModelVersion) -> dg.Output[ModelMetrics]:
    """K-fold RMSE, MAE, precision@k and NDCG@k of the `svd_model` version this run trained.

    Uses that version's exact training table and hyper-parameters, so the metrics describe
    the model that would be deployed. The headline metrics come first (Dagster plots their
    history); the per-fold values are one table (`folds`).
    """
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
        "max_seed_ratings), or use a bigger machine",
        config.memory_budget_bytes,
    )
    ratings = pd.read_parquet(Path(svd_model.path) / TRAINING_RATINGS_FILE)
    params = SVDParams(**svd_model.params)
    context.log.info(
        f"cross-validating version {svd_model.version}: {config.n_folds} folds of {len(ratings):,} ratings, "
        f"{workers} at a time"
    )

    def progress(fold: int, metrics: dict[str, float]) -> None:
        context.log.info(
            f"fold {fold}/{config.n_folds}: RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f} "
            f"(fit {metrics['fit_seconds']:.1f} s)"
        )

    folds = cross_validate_svd(ratings, params, config.n_folds, config.n_jobs, config.seed, config.k, on_fold=progress)
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
            "ratings": len(ratings),
            APP_RATINGS_COUNT: metrics.real_ratings,
            "folds": dg.MetadataValue.md(folds_table(folds, summary)),
            "recommendations_preview": dg.MetadataValue.md(recommendations_table(challenger)),
        },
    )


def folds_table(folds: list[dict[str, float]], summary: dict[str, float]) -> str:
    """One Markdown row per fold, then the mean and std rows."""
    names = list(folds[0])
    rows = [(str(i), fold) for i, fold in enumerate(folds, 1)]
    rows += [(stat, {n: summary[f"{n}_{stat}"] for n in names}) for stat in ("mean", "std")]
    lines = ["| fold | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |" for label, values in rows]
    return "\n".join(lines)
