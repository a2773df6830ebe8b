"""cfrec_serving: what the app installs to load and query the deployed recommender (numpy only).

``pip install ./serving`` (``[s3]`` adds boto3 for ``s3://`` targets). The Dagster project
``cfrec_assets`` depends on it and writes what it reads.
"""

from cfrec_serving.loader import (
    ArtifactVerificationError,
    DeployedModel,
    ModelCacheError,
    NoDeployedModelError,
    Prediction,
    Recommendations,
    ServingError,
    current_version,
    load_deployed,
    load_version,
    open_target_from_env,
)
from cfrec_serving.watcher import DeployedModelWatcher

__all__ = [
    "ArtifactVerificationError",
    "DeployedModel",
    "DeployedModelWatcher",
    "ModelCacheError",
    "NoDeployedModelError",
    "Prediction",
    "Recommendations",
    "ServingError",
    "current_version",
    "load_deployed",
    "load_version",
    "open_target_from_env",
]
