"""The Dagster code location: ``dg dev`` (pyproject ``[tool.dg]``) and ``workspace.yaml`` load ``defs``."""

import os
import warnings
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
    writes to a table the app must create first (docs/serving.md "Recommendations in Supabase")."""
    return [*ALL_ASSETS, *(OPT_IN_ASSETS if environ.get("CFREC_RECOMMENDATIONS_TABLE") else [])]


def with_code_references(assets: list) -> list:
    """Each asset linked to its function's file and line, shown on the asset's page. Beta in
    Dagster 1.13 but the documented way; its BetaWarning would print at every load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(assets))


defs = dg.Definitions(
    assets=with_code_references(assets_from_env()),
    asset_checks=ALL_CHECKS,
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=[retrain_sensor_from_env(), alert_sensor_from_env()],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
