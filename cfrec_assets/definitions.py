"""The Dagster code location: ``dg dev`` (pyproject ``[tool.dg]``) and ``workspace.yaml`` load ``defs``."""

import dagster as dg

from cfrec_assets.alerts import alert_sensor_from_env
from cfrec_assets.assets import ALL_ASSETS
from cfrec_assets.checks import ALL_CHECKS
from cfrec_assets.jobs import ALL_JOBS, ALL_SCHEDULES
from cfrec_assets.resources import build_resources
from cfrec_assets.sensors import retrain_sensor_from_env

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=ALL_JOBS,
    schedules=ALL_SCHEDULES,
    sensors=[retrain_sensor_from_env(), alert_sensor_from_env()],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
