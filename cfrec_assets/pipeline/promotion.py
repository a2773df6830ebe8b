"""What ``deployed_model`` hands a serving target: a trained version's files and the figures the
manifest records."""

from __future__ import annotations

from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_serving.artifacts import ARTIFACT_FILES
from cfrec_serving.targets.manifest import Promotion

PROMOTED_METRICS = ("rmse_mean", "rmse_std", "mae_mean", "precision_at_10_mean", "ndcg_at_10_mean")
PROMOTED_COUNTS = ("ratings", "real_ratings", "users", "movies")


def promotion_of(model: ModelVersion, metrics: ModelMetrics) -> Promotion:
    """What ``promote`` records for a trained version and its cross-validation metrics (what
    ``deployed_model`` ships once the gate is open); files must match the training sha256s."""
    return Promotion(
        version=model.version,
        metrics={k: metrics.summary[k] for k in PROMOTED_METRICS if k in metrics.summary},
        counts={k: model.counts[k] for k in PROMOTED_COUNTS},
        trained_at=model.trained_at,
        expected_sha256={name: model.sha256(name) for name in ARTIFACT_FILES if name in model.files},
        details={"params": model.params, "tuning_version": model.tuning_version},
    )
