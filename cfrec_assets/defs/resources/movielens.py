"""Where the MovieLens archives come from."""

import dagster as dg
from pydantic import Field

from cfrec_assets import settings


class MovieLensSource(dg.ConfigurableResource):
    """Where the MovieLens archives are downloaded from (GroupLens, or a mirror)."""

    base_url: str = Field(
        default=settings.MOVIELENS_BASE_URL.default,
        description="Base URL holding ml-100k.zip and the ml-latest release's zip: http(s):// or file://.",
    )
    latest_release: str = Field(
        default=settings.ML_LATEST_RELEASE.default,
        description="ml_latest_raw's release: ml-latest-small (100K ratings), ml-32m or ml-latest (~32M).",
    )
    timeout_seconds: float = Field(default=120.0, gt=0)
