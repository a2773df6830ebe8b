"""The Dagster code location: ``dg dev`` (pyproject ``[tool.dg]``) and ``workspace.yaml`` load ``defs``.

Loading it is when the environment is read: :func:`build_defs` hands the environment to every
factory (resources, sensors, the schedule, the opt-in asset, the freshness policy), each of which
reads its variables as ``cfrec_assets.settings`` declares them.
"""

import warnings
from collections.abc import Mapping

import dagster as dg

from cfrec_assets import settings
from cfrec_assets.defs.alerts import alert_sensor_from_env
from cfrec_assets.defs.assets import ALL_ASSETS, OPT_IN_ASSETS
from cfrec_assets.defs.assets.deployment import deployed_model, deployment_freshness
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.jobs import ALL_JOBS, tuning_schedule_from_env
from cfrec_assets.defs.resources import build_resources
from cfrec_assets.defs.sensors import retrain_sensor_from_env


def assets_from_env(environ: Mapping[str, str] | None = None) -> list:
    """Every asset; ``user_recommendations`` only with ``CFREC_RECOMMENDATIONS_TABLE`` set, since it
    writes to a table the app must create first (docs/serving.md "Recommendations in Supabase"), and
    ``deployed_model`` stale after ``CFREC_FRESHNESS_HOURS``."""
    freshness = deployment_freshness(settings.read_float(settings.FRESHNESS_HOURS, environ))
    deployment = deployed_model.map_asset_specs(lambda spec: dg.apply_freshness_policy(spec, freshness))
    assets = [deployment if asset is deployed_model else asset for asset in ALL_ASSETS]
    return [*assets, *(OPT_IN_ASSETS if settings.RECOMMENDATIONS_TABLE.is_set(environ) else [])]


def with_code_references(assets: list) -> list:
    """Each asset linked to its function's file and line, shown on the asset's page. Beta in
    Dagster 1.13 but the documented way; its BetaWarning would print at every load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(assets))


def build_defs(environ: Mapping[str, str] | None = None) -> dg.Definitions:
    """The code location as ``environ`` (the process's by default) configures it."""
    return dg.Definitions(
        assets=with_code_references(assets_from_env(environ)),
        asset_checks=ALL_CHECKS,
        jobs=ALL_JOBS,
        schedules=[tuning_schedule_from_env(environ)],
        sensors=[retrain_sensor_from_env(environ), alert_sensor_from_env(environ)],
        resources=build_resources(environ),
        executor=dg.in_process_executor,
    )


defs = build_defs()
