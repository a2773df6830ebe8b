"""The deployment asset: promotes a checked model version to the serving directory, or rolls back."""

from pathlib import Path
from typing import Optional

import dagster as dg

from cfrec_assets.assets.model import cv_metrics, svd_model
from cfrec_assets.checks import GATE_CHECKS
from cfrec_assets.deployment import list_versions, promote, rollback
from cfrec_assets.lineage import latest_metadata
from cfrec_assets.resources import DataStore
from cfrec_assets.training import ARTIFACT_FILES

GROUP = "deployment"
PROMOTED_METRICS = ("rmse_mean", "rmse_std", "mae_mean", "precision_at_10_mean", "ndcg_at_10_mean")
PROMOTED_COUNTS = ("ratings", "real_ratings", "users", "movies")


class DeployConfig(dg.Config):
    rollback_to: Optional[str] = None
    """Name an earlier deployed version to re-point the serving manifest to it (sha256 re-verified)
    instead of promoting the latest svd_model."""


class GateClosedError(RuntimeError):
    """The latest results of the blocking checks do not allow a promotion."""


def gate_problems(instance: dg.DagsterInstance, checks: list[dg.AssetCheckKey]) -> list[str]:
    """Why the latest model may not be promoted: a blocking check that failed, never ran, or
    checked an older materialization than the latest one (e.g. a partial run re-materialized
    svd_model without its checks)."""
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(checks)
    problems = []
    for key in checks:
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        evaluation = records[key].evaluation if key in records else None
        latest = instance.get_latest_materialization_event(key.asset_key)
        if evaluation is None:
            problems.append(f"{name} has not run")
        elif not evaluation.passed:
            problems.append(f"{name} failed: {evaluation.description}")
        elif latest is None or evaluation.target_materialization_data is None or (
            evaluation.target_materialization_data.run_id != latest.run_id
        ):
            problems.append(f"{name} has not checked the latest materialization")
    return problems


@dg.asset(group_name=GROUP, kinds={"python"}, deps=[svd_model, cv_metrics])
def deployed_model(context: dg.AssetExecutionContext, config: DeployConfig, store: DataStore) -> dg.MaterializeResult:
    """The model version the app serves: promoted atomically once every blocking check passed.

    Copies the version's files into ``<serving>/versions/<version>/`` and then replaces
    ``manifest.json`` (temp file + ``os.replace``); earlier versions are kept for rollback.
    """
    if config.rollback_to:
        manifest = rollback(store.serving_dir, config.rollback_to)
        action = "rollback"
    else:
        model = latest_metadata(context.instance, "svd_model")
        metrics = latest_metadata(context.instance, "cv_metrics")
        if metrics["version"] != model["version"]:
            raise GateClosedError(
                f"cv_metrics evaluated version {metrics['version']} but svd_model is at {model['version']}: "
                "materialize cv_metrics first"
            )
        problems = gate_problems(context.instance, GATE_CHECKS)
        if problems:
            raise GateClosedError("refusing to promote: " + "; ".join(problems))
        manifest = promote(
            Path(model["path"]),
            store.serving_dir,
            version=model["version"],
            metrics={k: metrics[k] for k in PROMOTED_METRICS if k in metrics},
            counts={k: model[k] for k in PROMOTED_COUNTS},
            trained_at=model["trained_at"],
            expected_sha256={name: model["files"][name]["sha256"] for name in ARTIFACT_FILES},
        )
        action = "promote"
    context.log.info(f"{action}: serving version {manifest['version']} (previous: {manifest.get('previous_version')})")
    return dg.MaterializeResult(
        metadata={
            "action": action,
            "version": manifest["version"],
            "previous_version": manifest.get("previous_version") or "",
            "serving_dir": dg.MetadataValue.path(str(store.serving_dir)),
            "kept_versions": len(list_versions(store.serving_dir)),
            **{k: v for k, v in manifest["metrics"].items() if isinstance(v, (int, float))},
            **{f"trained_on_{k}": v for k, v in manifest["counts"].items()},
            "trained_at": manifest["trained_at"],
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in manifest["files"].items()},
        }
    )
