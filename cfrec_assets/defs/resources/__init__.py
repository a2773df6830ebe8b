"""Resources: where data comes from and where artifacts go, one module each, and the one place
they are wired (:func:`build_resources`).

Endpoints and secrets come from environment variables through ``dg.EnvVar`` (the UI shows the
variable's name, never its value), each one as ``cfrec_assets.settings`` declares it.
:func:`build_resources` is the wiring that ``definitions``, the tests and the benchmarks all use;
they override single resources, never rebuild the set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from cfrec_assets import settings
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.resources.catalog import CatalogSource
from cfrec_assets.defs.resources.movielens import MovieLensSource
from cfrec_assets.defs.resources.serving_target import ServingTargetResource
from cfrec_assets.defs.resources.spark import SparkResource
from cfrec_assets.defs.resources.store import DataStore
from cfrec_assets.defs.supabase_io import RatingsReader, SupabasePostgresResource, SupabaseResource
from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable
from cfrec_serving import settings as serving_settings
from cfrec_serving.settings import Setting

__all__ = [
    "CatalogSource",
    "DataStore",
    "MovieLensSource",
    "ServingTargetResource",
    "SparkResource",
    "build_resources",
    "ratings_reader",
]


def _from_env(environ: Mapping[str, str] | None, **fields: Setting) -> dict[str, Any]:
    """``dg.EnvVar`` for each setting that is set; unset ones keep the resource's default.

    EnvVar hides the value in the UI and resolves it at run launch, but fails the run when the
    variable is missing, and every setting here is optional.
    """
    return {field: dg.EnvVar(setting.name) for field, setting in fields.items() if setting.is_set(environ)}


def ratings_reader(environ: Mapping[str, str] | None = None) -> RatingsReader:
    """The app's ratings are read over Postgres when ``SUPABASE_DB_URL`` is set, else over REST."""
    table = _from_env(
        environ, table=settings.SUPABASE_RATINGS_TABLE, arrival_column=settings.SUPABASE_RATINGS_ARRIVAL_COLUMN
    )
    if settings.SUPABASE_DB_URL.is_set(environ):
        return SupabasePostgresResource(**_from_env(environ, db_url=settings.SUPABASE_DB_URL), **table)
    return SupabaseResource(**_from_env(environ, url=settings.SUPABASE_URL, key=settings.SUPABASE_KEY), **table)


def build_resources(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Every resource the graph needs, from ``environ`` (the process's by default); ``overrides``
    replace single ones."""
    data = _from_env(environ, data_dir=serving_settings.DATA_DIR)
    resources = {
        "io_manager": LocalIOManager(**data),
        "movielens": MovieLensSource(
            **_from_env(environ, base_url=settings.MOVIELENS_BASE_URL, latest_release=settings.ML_LATEST_RELEASE)
        ),
        "store": DataStore(**data, **_from_env(environ, serving_dir_path=serving_settings.SERVING_DIR)),
        "catalog": CatalogSource(
            **_from_env(environ, path=settings.CATALOG_PATH, supabase_table=settings.CATALOG_TABLE)
        ),
        "supabase": ratings_reader(environ),
        "recommendations": RecommendationsTable(
            **_from_env(environ, db_url=settings.SUPABASE_DB_URL, table=settings.RECOMMENDATIONS_TABLE)
        ),
        "spark": SparkResource(
            **_from_env(
                environ,
                trainer=settings.TRAINER,
                master=settings.SPARK_MASTER,
                remote=settings.SPARK_REMOTE,
                driver_memory=settings.SPARK_DRIVER_MEMORY,
            )
        ),
        "serving": ServingTargetResource(
            **_from_env(
                environ,
                url=serving_settings.SERVING_URL,
                endpoint_url=serving_settings.S3_ENDPOINT_URL,
                region=serving_settings.S3_REGION,
                access_key_id=serving_settings.S3_ACCESS_KEY_ID,
                secret_access_key=serving_settings.S3_SECRET_ACCESS_KEY,
            )
        ),
    }
    unknown = set(overrides) - set(resources)
    if unknown:
        raise KeyError(f"unknown resource(s) {sorted(unknown)}; the graph uses {sorted(resources)}")
    return {**resources, **overrides}
