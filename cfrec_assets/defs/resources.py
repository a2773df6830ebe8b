"""Resources: where data comes from and where artifacts go, and the one place they are wired.

Endpoints and secrets come from environment variables through ``dg.EnvVar`` (the UI shows the
variable's name, never its value). :func:`build_resources` is the wiring that ``definitions``,
the tests and the benchmarks all use; they override single resources, never rebuild the set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, model_validator

from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.supabase_io import RatingsReader, SupabasePostgresResource, SupabaseResource
from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable
from cfrec_assets.defs.supabase_io.table import check_identifier
from cfrec_assets.pipeline.movielens_files import DEFAULT_ML_LATEST_RELEASE
from cfrec_serving.artifacts import DEFAULT_DATA_DIR, ENV_DATA_DIR, ENV_SERVING_DIR, serving_dir
from cfrec_serving.targets.target import ServingTarget, open_target

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


class MovieLensSource(dg.ConfigurableResource):
    """Where the MovieLens archives are downloaded from (GroupLens, or a mirror)."""

    base_url: str = Field(
        default=GROUPLENS_BASE_URL,
        description="Base URL holding ml-100k.zip and the ml-latest release's zip: http(s):// or file://.",
    )
    latest_release: str = Field(
        default=DEFAULT_ML_LATEST_RELEASE,
        description="ml_latest_raw's release: ml-latest-small (100K ratings), ml-32m or ml-latest (~32M).",
    )
    timeout_seconds: float = Field(default=120.0, gt=0)


class DataStore(dg.ConfigurableResource):
    """The local folder holding download caches and model versions, and the serving target.

    Tables handed between assets are the IO manager's (``io_manager.LocalIOManager``).
    """

    data_dir: str = Field(default=DEFAULT_DATA_DIR, description="Relative paths resolve against the working directory.")
    serving_dir_path: str | None = Field(
        default=None,
        description="Where deployed_model promotes versions and the app loads them (default <data_dir>/serving).",
    )

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def serving_dir(self) -> Path:
        return serving_dir(self.data_dir, self.serving_dir_path)


class ServingTargetResource(dg.ConfigurableResource):
    """Where ``deployed_model`` promotes versions: the store's local serving folder (default), or
    ``s3://bucket/prefix`` on any S3-protocol endpoint (Supabase Storage, AWS S3, R2, MinIO)."""

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


class CatalogSource(dg.ConfigurableResource):
    """The app's catalog of TMDB ids; with neither field set, no catalog filter is applied."""

    path: str | None = Field(
        default=None, description="A .json list, a .csv with a tmdb_id column, or a .pkl/.joblib list or int array."
    )
    supabase_table: str | None = Field(
        default=None, description="Read the catalog from this Supabase table instead (needs SUPABASE_URL/KEY)."
    )
    supabase_column: str = "tmdb_id"

    @model_validator(mode="after")
    def _check_names(self) -> CatalogSource:
        if self.supabase_table:
            check_identifier(self.supabase_table, "catalog table", table=True)
        check_identifier(self.supabase_column, "catalog column")
        return self


def _from_env(environ: Mapping[str, str], **fields: str) -> dict[str, Any]:
    """``dg.EnvVar`` for each variable that is set; unset ones keep the resource's default.

    EnvVar hides the value in the UI and resolves it at run launch, but fails the run when the
    variable is missing, and every setting here is optional.
    """
    return {field: dg.EnvVar(name) for field, name in fields.items() if environ.get(name)}


def ratings_reader(environ: Mapping[str, str] = os.environ) -> RatingsReader:
    """The app's ratings are read over Postgres when ``SUPABASE_DB_URL`` is set, else over REST."""
    table = _from_env(environ, table="SUPABASE_RATINGS_TABLE", arrival_column="SUPABASE_RATINGS_ARRIVAL_COLUMN")
    if environ.get("SUPABASE_DB_URL"):
        return SupabasePostgresResource(**_from_env(environ, db_url="SUPABASE_DB_URL"), **table)
    return SupabaseResource(**_from_env(environ, url="SUPABASE_URL", key="SUPABASE_KEY"), **table)


def build_resources(environ: Mapping[str, str] = os.environ, **overrides: Any) -> dict[str, Any]:
    """Every resource the graph needs, from the environment; ``overrides`` replace single ones."""
    data = _from_env(environ, data_dir=ENV_DATA_DIR)
    resources = {
        "io_manager": LocalIOManager(**data),
        "movielens": MovieLensSource(
            **_from_env(environ, base_url="CFREC_MOVIELENS_BASE_URL", latest_release="CFREC_ML_LATEST_RELEASE")
        ),
        "store": DataStore(**data, **_from_env(environ, serving_dir_path=ENV_SERVING_DIR)),
        "catalog": CatalogSource(**_from_env(environ, path="CFREC_CATALOG_PATH", supabase_table="CFREC_CATALOG_TABLE")),
        "supabase": ratings_reader(environ),
        "recommendations": RecommendationsTable(
            **_from_env(environ, db_url="SUPABASE_DB_URL", table="CFREC_RECOMMENDATIONS_TABLE")
        ),
        "serving": ServingTargetResource(
            **_from_env(
                environ,
                url="CFREC_SERVING_URL",
                endpoint_url="CFREC_S3_ENDPOINT_URL",
                region="CFREC_S3_REGION",
                access_key_id="CFREC_S3_ACCESS_KEY_ID",
                secret_access_key="CFREC_S3_SECRET_ACCESS_KEY",
            )
        ),
    }
    unknown = set(overrides) - set(resources)
    if unknown:
        raise KeyError(f"unknown resource(s) {sorted(unknown)}; the graph uses {sorted(resources)}")
    return {**resources, **overrides}
