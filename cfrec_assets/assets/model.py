"""Model assets: the SVD model version trained on the combined ratings, and its CV metrics."""


from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from cfrec_assets.assets.ratings import combined_ratings
from cfrec_assets.lineage import latest_metadata
from cfrec_assets.resources import DataStore
from cfrec_assets.training import (
    TRAINING_RATINGS_FILE,
    SVDParams,
    cross_validate_svd,
    fit_svd,
    sanity_prediction,
    save_artifacts,
    summarize_folds,
)

GROUP = "model"


class SVDConfig(dg.Config):
    """Surprise SVD hyper-parameters (defaults: the seed script's settings)."""

    n_factors: int = 100
    n_epochs: int = 20
    lr_all: float = 0.005
    reg_all: float = 0.02
    random_state: int = 42


def model_version(run_id: str, now: datetime | None = None) -> str:
    """Sortable, unique per run: UTC time plus the run id's first 8 characters."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{run_id[:8]}"


@dg.asset(group_name=GROUP, kinds={"surprise"}, deps=[combined_ratings])
def svd_model(context: dg.AssetExecutionContext, config: SVDConfig, store: DataStore) -> dg.MaterializeResult:
    """Surprise SVD fitted on every combined rating, saved as a new version folder.

    ``svd_model.pkl`` and ``cf_trainset.pkl`` (joblib) are what the app's serving code loads;
    each run writes a new folder under ``data/models/`` and never touches an earlier one.
    """
    ratings = pd.read_parquet(store.combined_ratings_path)
    params = SVDParams(**config.model_dump())
    algo, trainset, fit_seconds = fit_svd(ratings, params)
    sanity = sanity_prediction(algo, trainset)
    trained_at = datetime.now(timezone.utc)
    version = model_version(context.run.run_id, trained_at)
    files = save_artifacts(algo, trainset, ratings, store.models_dir, version)
    version_dir = store.models_dir / version
    real = int((ratings["source"] == "app").sum())
    context.log.info(f"trained version {version} in {fit_seconds:.1f}s on {len(ratings)} ratings ({real} from the app)")
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "path": dg.MetadataValue.path(str(version_dir)),
            "trained_at": trained_at.isoformat(),
            "fit_seconds": round(fit_seconds, 3),
            "ratings": len(ratings),
            "real_ratings": real,
            "users": trainset.n_users,
            "movies": trainset.n_items,
            "global_mean": round(float(trainset.global_mean), 4),
            "params": dg.MetadataValue.json(asdict(params)),
            "files": dg.MetadataValue.json(files),
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in files.items()},
            **{f"{name.split('.')[0]}_bytes": f["bytes"] for name, f in files.items()},
            "sanity_prediction": dg.MetadataValue.json(sanity),
            "sanity_estimate": sanity["estimate"],
        }
    )


class CVConfig(dg.Config):
    """K-fold cross-validation of the model version just trained."""

    n_folds: int = 3
    n_jobs: int = -1
    """Folds fitted in parallel (joblib processes); -1 uses every core, 1 runs them in this
    process. Two cores fit 3 folds in 0.56x the serial time (bench/graph_bench.py)."""
    seed: int = 42
    k: int = 10
    """Cut-off for precision@k and NDCG@k (relevant = held-out rating >= 4)."""


@dg.asset(group_name=GROUP, kinds={"surprise"}, deps=[svd_model])
def cv_metrics(context: dg.AssetExecutionContext, config: CVConfig) -> dg.MaterializeResult:
    """K-fold RMSE, MAE, precision@k and NDCG@k of the latest ``svd_model`` version.

    Uses that version's exact training table and hyper-parameters, so the metrics describe
    the model that would be deployed. Numeric metadata: Dagster plots their history.
    """
    model = latest_metadata(context.instance, "svd_model")
    ratings = pd.read_parquet(Path(model["path"]) / TRAINING_RATINGS_FILE)
    params = SVDParams(**model["params"])
    folds = cross_validate_svd(ratings, params, config.n_folds, config.n_jobs, config.seed, config.k)
    summary = summarize_folds(folds)
    per_fold = {f"fold_{i}_{name}": round(value, 5) for i, fold in enumerate(folds, 1) for name, value in fold.items()}
    context.log.info(f"version {model['version']}: RMSE {summary['rmse_mean']:.4f} ± {summary['rmse_std']:.4f}")
    return dg.MaterializeResult(
        metadata={
            "version": model["version"],
            "n_folds": config.n_folds,
            "ratings": len(ratings),
            "real_ratings": model["real_ratings"],
            **{name: round(value, 5) for name, value in summary.items()},
            **per_fold,
        }
    )
