"""The Dagster code location: ``dagster dev`` loads ``defs`` through workspace.yaml."""

import dagster as dg

from cfrec_assets.assets import ALL_ASSETS
from cfrec_assets.checks import ALL_CHECKS
from cfrec_assets.resources import build_resources
from cfrec_assets.sensors import retrain_sensor_from_env

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    sensors=[retrain_sensor_from_env()],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
