"""Named jobs and the tuning schedule: what `make materialize`, the queue and the daemon launch."""

from collections.abc import Mapping

import dagster as dg

from cfrec_assets import settings
from cfrec_assets.defs.assets.tuning import svd_tuning_study

train_and_deploy = dg.define_asset_job(
    "train_and_deploy",
    selection=dg.AssetSelection.all(),  # external assets (the ratings table, the study) are not selected
    description="Every asset and check but the tuning study: download, map, combine, train, cross-validate, "
    "and deploy through the blocking checks.",
)


@dg.job(
    description="The Optuna study of the SVD hyper-parameters: reports svd_tuning, whose result (in the data "
    'folder) the next retrain trains with. Minutes long, so outside train_and_deploy and "Materialize all".'
)
def tune_svd() -> None:
    svd_tuning_study()


ALL_JOBS = [train_and_deploy, tune_svd]


def tuning_schedule_from_env(environ: Mapping[str, str] | None = None) -> dg.ScheduleDefinition:
    """Weekly: ratings drift slowly, and a study takes ~2 minutes of both cores (bench/tuning_bench.py)
    that a retrain would otherwise wait for (both use the training pool). Off until switched on in
    the UI or with ``CFREC_TUNING_SCHEDULE=running`` in ``environ`` (the process's by default),
    like the retrain sensor."""
    running = settings.is_running(settings.TUNING_SCHEDULE, environ)
    return dg.ScheduleDefinition(
        name="weekly_tuning",
        job=tune_svd,
        cron_schedule="0 3 * * 0",
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
    )
