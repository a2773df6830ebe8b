"""Where ``deployed_model`` promotes versions: a folder or an S3-protocol bucket."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from cfrec_serving.targets.target import ServingTarget, open_target


class ServingTargetResource(dg.ConfigurableResource):
    """Where `deployed_model` promotes versions: the store's local serving folder (default), or
    `s3://bucket/prefix` on any S3-protocol endpoint (Supabase Storage, AWS S3, R2, MinIO)."""

    url: str | None = Field(
        default=None, description="s3://bucket/prefix, or a folder; unset: the store's serving folder."
    )
    endpoint_url: str | None = Field(
        default=None, description="e.g. https://<project>.supabase.co/storage/v1/s3; unset: AWS S3."
    )
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def open(self, default_folder: Path) -> ServingTarget:
        return open_target(
            self.url or default_folder,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
