"""Tell someone when a run fails: a short message to a Slack-compatible webhook.

``CFREC_ALERT_WEBHOOK_URL`` switches it on (the sensor runs from load when it is set). The
message holds the run id, the failed step, why it failed (for a blocking check, the check's own
verdict; else the error's first line) and a link to the run in the UI (``CFREC_UI_URL``); every
secret the settings declare (``settings.scrub``) is removed from it first. A webhook that is
down, or answers too slowly, is reported on the tick, never retried in a loop: the whole delivery
has one deadline, since httpx's timeouts apply to each read and a server dripping a byte at a
time would otherwise hold the sensor's tick for as long as it likes. Only failed runs alert: a
challenger that loses to the champion ends a successful run (``deployed_model`` keeps the
champion), and WARN-severity checks do not fail runs.
"""

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import dagster as dg
import httpx

from cfrec_assets import settings

DEFAULT_UI_URL = settings.UI_URL.default
HEADLINE_CHARS = 300
DEFAULT_DEADLINE_SECONDS = 5.0
HTTPX_LOGGER = logging.getLogger("httpx")


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` without any secret the settings declare (keys, DSN passwords, URL credentials)."""
    return settings.scrub(text, environ)


def failure_message(context: dg.RunFailureSensorContext, ui_url: str) -> str:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps:
        step = steps[0]
        error = step.event_specific_data.error
        while error is not None and error.cause is not None:  # Dagster's wrapper -> the error raised
            error = error.cause
        where = f"step `{step.step_key}`"
        # A blocking check's error says only "1 blocking asset check failed…": its verdict says why.
        verdicts = _failed_check_verdicts(context.instance, run.run_id, step.step_key)
        if verdicts:
            headline = "; ".join(verdicts)
        elif error and error.message.strip():
            headline = error.message.strip().splitlines()[0]
        else:
            headline = "no error message"
    else:
        where = "the run itself"
        headline = (context.failure_event.message or "no error message").strip().splitlines()[0]
    link = f"{ui_url.rstrip('/')}/runs/{run.run_id}"
    text = f"cfrec run {run.run_id[:8]} ({run.job_name}) failed in {where}: {headline[:HEADLINE_CHARS]}\n{link}"
    return scrub(text)


def _failed_check_verdicts(instance: dg.DagsterInstance, run_id: str, step_key: str | None) -> list[str]:
    """``asset:check failed: <description>`` for each ERROR-severity check that failed in ``step_key``."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    verdicts = []
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data
        if event.step_key != step_key or evaluation.passed or evaluation.severity == dg.AssetCheckSeverity.WARN:
            continue
        key = evaluation.asset_check_key
        description = " ".join((evaluation.description or "no verdict recorded").split())
        verdicts.append(f"{key.asset_key.to_user_string()}:{key.name} failed: {description}")
    return verdicts


def deliver_alert(
    context: dg.RunFailureSensorContext,
    webhook_url: str,
    ui_url: str,
    timeout_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> str | None:
    """Post the run's failure message once; None when delivered, else why not (secrets removed).

    ``timeout_seconds`` bounds the whole delivery: connecting, sending and reading the answer.
    """
    text = failure_message(context, ui_url)
    hide = _DropLinesNaming(webhook_url)  # httpx logs each request's URL at INFO: the token would leak
    HTTPX_LOGGER.addFilter(hide)
    # Only the host is ever shown: a Slack-style webhook URL carries its token in the path, and
    # httpx's status errors quote the whole URL.
    host = urlsplit(webhook_url).hostname
    try:
        response = anyio.run(_post_within, webhook_url, {"text": text}, timeout_seconds)
        response.raise_for_status()
    except TimeoutError:
        why = f"no complete answer within the {timeout_seconds:g} s deadline"
    except httpx.HTTPStatusError as error:
        why = f"HTTP {error.response.status_code}"
    except httpx.HTTPError as error:
        why = f"{type(error).__name__}: {str(error).replace(webhook_url, str(host))}"
    else:
        return None
    finally:
        HTTPX_LOGGER.removeFilter(hide)
    return scrub(f"alert for run {context.dagster_run.run_id} not delivered to {host}: {why}")


async def _post_within(url: str, payload: dict[str, Any], deadline_seconds: float) -> httpx.Response:
    """POST ``payload`` and read the whole answer, or raise TimeoutError at the deadline (the
    connection is closed then, whatever the server is still sending)."""
    async with httpx.AsyncClient(timeout=deadline_seconds) as client:
        with anyio.fail_after(deadline_seconds):
            return await client.post(url, json=payload)


class _DropLinesNaming(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        return self.secret not in record.getMessage()


def build_alert_sensor(
    webhook_url: str | None, ui_url: str = DEFAULT_UI_URL, timeout_seconds: float = DEFAULT_DEADLINE_SECONDS
):
    @dg.run_failure_sensor(
        name="run_failure_alert",
        default_status=dg.DefaultSensorStatus.RUNNING if webhook_url else dg.DefaultSensorStatus.STOPPED,
        description=f"Posts a short message about every failed run to {settings.ALERT_WEBHOOK_URL.name} (Slack-compatible JSON).",
        monitor_all_code_locations=False,
    )
    def run_failure_alert(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        if not webhook_url:
            return dg.SkipReason(f"{settings.ALERT_WEBHOOK_URL.name} is not set: no alert sent")
        # A failed delivery is said on the tick (the UI shows it) and dropped: raising would make
        # the daemon retry this failure on every tick while the webhook is down.
        problem = deliver_alert(context, webhook_url, ui_url, timeout_seconds)
        return dg.SkipReason(problem) if problem else None

    return run_failure_alert


def alert_sensor_from_env(environ: Mapping[str, str] | None = None) -> dg.SensorDefinition:
    """``CFREC_ALERT_WEBHOOK_URL`` switches it on, ``CFREC_UI_URL`` is the link's base; read from
    ``environ`` (the process's by default)."""
    return build_alert_sensor(settings.ALERT_WEBHOOK_URL.read(environ), settings.UI_URL.read(environ))
