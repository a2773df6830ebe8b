"""The deployment asset: promotes a checked model version to the serving target (a folder or a
bucket), keeps the champion when the challenger lost, or rolls back."""

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from cfrec_assets.defs.assets.labels import OWNERS, stage
from cfrec_assets.defs.checks import GATE_CHECKS, challenger_no_worse_than_champion
from cfrec_assets.defs.gate import gate_problems, materialization_runs, newest_evaluation
from cfrec_assets.defs.resources import DataStore, ServingTargetResource
from cfrec_assets.pipeline.preview import recommendations_table
from cfrec_assets.pipeline.promotion import promotion_of
from cfrec_assets.pipeline.records import Deployment, ModelMetrics, ModelVersion
from cfrec_serving.loader import load_deployed

GROUP = "deployment"
MODEL_KEY, METRICS_KEY = dg.AssetKey("svd_model"), dg.AssetKey("cv_metrics")
[CHALLENGER_CHECK] = challenger_no_worse_than_champion.check_keys


class DeployConfig(dg.Config):
    rollback_to: str | None = None
    """Name an earlier deployed version to re-point the serving manifest to it (sha256 re-verified)
    instead of promoting the svd_model version this run received."""


class GateClosedError(RuntimeError):
    """The blocking checks of the materializations about to ship do not allow a promotion."""


def check_gate(instance: dg.DagsterInstance, model: ModelVersion, metrics: ModelMetrics) -> None:
    """Raise unless ``metrics`` describe ``model`` and every blocking check passed on them (and
    on the upstream materializations the model was trained from)."""
    if metrics.version != model.version:
        raise GateClosedError(
            f"cv_metrics evaluated version {metrics.version} but svd_model is at {model.version}: "
            "materialize cv_metrics first"
        )
    upstream = {key.asset_key for key in GATE_CHECKS} - {MODEL_KEY, METRICS_KEY}
    runs = {**materialization_runs(instance, MODEL_KEY, model.run_id, upstream), METRICS_KEY: metrics.run_id}
    problems = gate_problems(instance, GATE_CHECKS, runs, model.version)
    if problems:
        raise GateClosedError("refusing to promote: " + "; ".join(problems))


def lost_to_champion(instance: dg.DagsterInstance, metrics: ModelMetrics) -> dict[str, Any] | None:
    """The champion check's metadata when the challenger lost on RMSE (a WARN verdict: the gate
    let the run go on), else None. Read for the very ``cv_metrics`` materialization being shipped."""
    evaluation = newest_evaluation(instance, CHALLENGER_CHECK, metrics.run_id)
    if evaluation is None or evaluation.passed:
        return None
    return {name: value.value for name, value in evaluation.metadata.items()}


def deployment_freshness(hours: float) -> dg.FreshnessPolicy:
    """Stale (failing) when the served model is older than ``hours``, a warning from half of it.
    ``definitions`` applies it with ``CFREC_FRESHNESS_HOURS``. With the retrain sensor's one-day
    maximum age, a model older than two days means retrains failed, or the app received no rating
    at all for two days; either is worth a look (docs/operations.md "Freshness"). A kept champion
    is a materialization too: the retrain ran and judged the served model still the best."""
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=hours), warn_window=timedelta(hours=hours / 2))


@dg.asset(
    group_name=GROUP,
    kinds={"numpy", "s3", "file"},  # cf_model.npz, promoted to an S3-protocol bucket or a folder
    owners=OWNERS,
    tags=stage("ship"),
)
def deployed_model(
    context: dg.AssetExecutionContext,
    config: DeployConfig,
    store: DataStore,
    serving: ServingTargetResource,
    svd_model: ModelVersion,
    cv_metrics: ModelMetrics,
) -> dg.Output[Deployment]:
    """The model version the app serves: promoted atomically once every blocking check passed,
    or the champion kept when the challenger's RMSE lost to it (metadata `decision`; the
    manifest's `kept_champion` list records it too).

    Puts the version's files under `<target>/versions/<version>/` and then replaces
    `manifest.json`: in a local folder by temp file + `os.replace`, in an object store by
    uploading, reading every object back, and writing the manifest last. Earlier versions are
    kept for rollback.
    """
    target = serving.open(store.serving_dir)
    extra: dict[str, Any] = {}
    if config.rollback_to is not None:
        if not config.rollback_to.strip():
            raise ValueError(
                "rollback_to is empty: name a kept version (python -m cfrec_assets deployments) or unset it"
            )
        manifest = target.rollback(config.rollback_to)
        action = "rollback"
    else:
        check_gate(context.instance, svd_model, cv_metrics)
        lost = lost_to_champion(context.instance, cv_metrics)
        if lost is None:
            manifest = target.promote(Path(svd_model.path), promotion_of(svd_model, cv_metrics))
            action = "promote"
        else:
            decision = (
                f"kept champion {lost['champion_version']}: challenger RMSE {lost['challenger_rmse']:.4f} "
                f"vs {lost['champion_rmse']:.4f} + {lost['champion_tolerance']}"
            )
            entry = {
                "challenger": svd_model.version,
                "challenger_rmse": lost["challenger_rmse"],
                "decision": decision,
                "run_id": context.run.run_id,
                "decided_at": datetime.now(timezone.utc).isoformat(),
            }
            manifest = target.record_kept_champion(lost["champion_version"], entry)
            action = "keep"
            extra = {"decision": decision, "challenger_version": svd_model.version}
            context.log.info(decision)
    context.log.info(f"{action}: serving version {manifest['version']} (previous: {manifest.get('previous_version')})")
    # Loaded back from the target as the app loads it, to show what it serves. The manifest has
    # already moved, so a failure here is reported, not raised: the deployment did happen.
    try:
        preview = recommendations_table(load_deployed(target, cache_dir=store.root / "serving-cache"))
    except Exception as error:  # any failure to read it back is worth a look, not a failed deploy
        context.log.warning(f"deployed {manifest['version']} but could not load it back for the preview: {error}")
        preview = f"**Could not load the served version back:** {error}"
    deployment = Deployment(
        version=manifest["version"],
        action=action,
        target=target.describe(),
        previous_version=manifest.get("previous_version"),
        run_id=context.run.run_id,
    )
    return dg.Output(
        deployment,
        metadata={
            "action": action,
            **extra,
            "version": manifest["version"],
            "previous_version": manifest.get("previous_version") or "",
            "serving_target": target.describe(),
            "kept_versions": len(target.list_versions()),
            **{k: v for k, v in manifest["metrics"].items() if isinstance(v, (int, float))},
            **{f"trained_on_{k}": v for k, v in manifest["counts"].items()},
            "trained_at": manifest["trained_at"],
            **{f"{name.split('.')[0]}_sha256": f["sha256"] for name, f in manifest["files"].items()},
            "recommendations_preview": dg.MetadataValue.md(preview),
        },
    )
