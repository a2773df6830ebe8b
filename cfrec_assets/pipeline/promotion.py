"""What ``deployed_model`` hands a serving target: a trained version's files and the figures the
manifest records."""

from __future__ import annotations

from cfrec_assets.pipeline.ranking import promoted_metrics
from cfrec_assets.pipeline.records import ModelMetrics, ModelVersion
from cfrec_assets.schema import APP_RATINGS_COUNT
from cfrec_serving.artifacts import ARTIFACT_FILES
from cfrec_serving.targets.manifest import Promotion

PROMOTED_COUNTS = ("ratings", APP_RATINGS_COUNT, "users", "movies")


def promotion_of(model: ModelVersion, metrics: ModelMetrics) -> Promotion:
    """What ``promote`` records for a trained version and its cross-validation metrics (what
    ``deployed_model`` ships once the gate is open); files must match the training sha256s."""
    return Promotion(
        version=model.version,
        metrics={k: metrics.summary[k] for k in promoted_metrics(metrics.k) if k in metrics.summary},
        counts={k: model.counts[k] for k in PROMOTED_COUNTS},
        trained_at=model.trained_at,
        expected_sha256={name: model.sha256(name) for name in ARTIFACT_FILES if name in model.files},
        details={"params": model.params, "tuning_version": model.tuning_version, "trainer": model.trainer},
    )
