"""The Dagster code location: ``dagster dev`` loads ``defs`` through workspace.yaml."""

from __future__ import annotations

import os

import dagster as dg

from cfrec_assets.assets import ALL_ASSETS
from cfrec_assets.checks import ALL_CHECKS
from cfrec_assets.sensors import retrain_sensor_from_env
from cfrec_assets.resources import (
    CatalogSource,
    DataStore,
    MovieLensSource,
    SupabasePostgresResource,
    SupabaseResource,
)


def _from_env(**fields: str) -> dict:
    """``dg.EnvVar`` for each variable that is set; unset ones keep the resource's default.

    EnvVar hides the value in the UI and resolves it at run launch, but fails the run when the
    variable is missing, and every setting here is optional.
    """
    return {field: dg.EnvVar(name) for field, name in fields.items() if os.environ.get(name)}


def build_resources() -> dict:
    return {
        "movielens": MovieLensSource(**_from_env(base_url="CFREC_MOVIELENS_BASE_URL")),
        "store": DataStore(**_from_env(data_dir="CFREC_DATA_DIR", serving_dir_path="CFREC_SERVING_DIR")),
        "catalog": CatalogSource(**_from_env(path="CFREC_CATALOG_PATH", supabase_table="CFREC_CATALOG_TABLE")),
        "supabase": SupabaseResource(**_from_env(url="SUPABASE_URL", key="SUPABASE_KEY", table="SUPABASE_RATINGS_TABLE")),
        "supabase_db": SupabasePostgresResource(**_from_env(db_url="SUPABASE_DB_URL", table="SUPABASE_RATINGS_TABLE")),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    sensors=[retrain_sensor_from_env()],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
