"""The Dagster code location: ``dg dev`` (pyproject ``[tool.dg]``) and ``workspace.yaml`` load ``defs``."""

import os
from collections.abc import Mapping

import dagster as dg

from cfrec_assets.defs.alerts import alert_sensor_from_env
from cfrec_assets.defs.assets import ALL_ASSETS, OPT_IN_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.jobs import ALL_JOBS, ALL_SCHEDULES
from cfrec_assets.defs.resources import build_resources
from cfrec_assets.defs.sensors import retrain_sensor_from_env


def assets_from_env(environ: Mapping[str, str] = os.environ) -> list:
    """Every asset; ``user_recommendations`` only with ``CFREC_RECOMMENDATIONS_TABLE`` set, since it
    writes to a table the app must create first (README "Recommendations in Supabase")."""
    return [*ALL_ASSETS, *(OPT_IN_ASSETS if environ.get("CFREC_RECOMMENDATIONS_TABLE") else [])]


defs = dg.Definitions(
    assets=assets_from_env(),
    asset_checks=ALL_CHECKS,
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=[retrain_sensor_from_env(), alert_sensor_from_env()],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
