"""The production instance (deploy/dagster.yaml + deploy/serve.sh) on a real PostgreSQL.

The server runs as docs/operations.md "Running in production" says: daemon + webserver, history in PostgreSQL, the queued run
coordinator with one training run at a time, run monitoring and run retries. Runs are launched
the way the UI launches them (GraphQL ``launchRun``), so they go through the real queue.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from cfrec_assets.defs.run_launcher import worker_pid
from cfrec_serving.loader import load_deployed
from cfrec_serving.targets.folder import verification_problems, version_dir
from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import LAUNCH_RUN_MUTATION as LAUNCH
from cfrec_testkit.dagster_dev import DagsterDev, production_server, wait_for_code_locations
from cfrec_testkit.graph import make_graph_env
from cfrec_testkit.postgres import PostgresServer, scratch_database
from cfrec_testkit.webhook import WebhookServer

pytestmark = pytest.mark.timeout(900)

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 1) { status } } }
  }
}
"""
UI = "http://dagster.internal:3000"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.fixture
def prod(tmp_path: Path, pg_server: PostgresServer, monkeypatch) -> Iterator[tuple[DagsterDev, dg.DagsterInstance]]:
    yield from _production(tmp_path, pg_server, monkeypatch)


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as hook:
        yield hook


@pytest.fixture
def prod_alerting(tmp_path: Path, pg_server: PostgresServer, monkeypatch, webhook: WebhookServer):
    """The production server with run_failure_alert posting to ``webhook``."""
    yield from _production(tmp_path, pg_server, monkeypatch, CFREC_ALERT_WEBHOOK_URL=webhook.url, CFREC_UI_URL=UI)


def _production(tmp_path: Path, pg_server: PostgresServer, monkeypatch, **settings: str):
    env = make_graph_env(tmp_path)
    with scratch_database(pg_server) as database:
        monkeypatch.setenv("DAGSTER_PG_URL", database.conninfo)  # the test reads the same instance
        server_env = {"CFREC_MOVIELENS_BASE_URL": env.mirror.root.as_uri() + "/", **settings}
        with production_server(tmp_path / "prod", database.conninfo, env=server_env) as dev:
            [location] = wait_for_code_locations(dev)
            dev.location, dev.env, dev.database = location, env, database
            env.data_dir = dev.data_dir  # the server's data folder: its serving dir is what we check
            with dg.DagsterInstance.from_config(str(dev.dagster_home)) as instance:
                yield dev, instance


def launch(dev: DagsterDev, job: str = "train_and_deploy", tags: dict[str, str] | None = None, **config) -> str:
    params = {
        "selector": {"repositoryLocationName": dev.location, "repositoryName": "__repository__", "jobName": job},
        "runConfigData": {"ops": {**dev.env.fixture_check_config(), **config}} if job == "train_and_deploy" else {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = dev.graphql(LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_finished(instance: dg.DagsterInstance, run_ids: list[str], timeout: float = 420) -> dict[str, dg.RunRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = {r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(run_ids=run_ids))}
        if len(records) == len(run_ids) and all(r.dagster_run.status in FINISHED for r in records.values()):
            return records
        time.sleep(1)
    raise AssertionError(f"runs not finished in {timeout}s: {[(k, r.dagster_run.status) for k, r in records.items()]}")


def test_a_full_run_through_the_queue_lands_in_postgres(prod) -> None:
    dev, instance = prod
    run_id = launch(dev)
    record = wait_finished(instance, [run_id])[run_id]
    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail()
    assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
    # The history is in PostgreSQL itself, not in files under DAGSTER_HOME.
    with psycopg.connect(dev.database.conninfo) as conn:
        runs = conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,)).fetchone()[0]
        events = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,)).fetchone()[0]
        assets = {row[0] for row in conn.execute("SELECT asset_key FROM asset_keys")}
    assert runs == 1 and events > 50
    assert '["deployed_model"]' in assets and '["svd_model"]' in assets
    assert open_target(dev.data_dir / "serving").read_manifest() is not None
    assert not list(dev.dagster_home.glob("history/runs/*.db")), "run storage fell back to SQLite"


def test_training_runs_queue_one_after_the_other_and_others_do_not_wait(prod) -> None:
    dev, instance = prod
    first, second = launch(dev), launch(dev)
    records = wait_finished(instance, [first, second])
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records.values()), dev.log_tail()
    a, b = sorted(records.values(), key=lambda r: r.start_time)
    assert b.start_time >= a.end_time, "two training runs were in progress at once"
    # A run with no training step (re-pointing the manifest) is not held behind a retrain.
    training = launch(dev)
    rollback = launch_rollback(dev, version=open_target(dev.data_dir / "serving").read_manifest()["version"])
    done = wait_finished(instance, [training, rollback])
    assert done[rollback].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert done[rollback].start_time < done[training].end_time, "the rollback waited for the retrain"


def launch_rollback(dev: DagsterDev, version: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": dev.location,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
        },
        "runConfigData": {"ops": {"deployed_model": {"config": {"rollback_to": version}}}},
        "stepKeys": ["deployed_model"],
        "executionMetadata": {"tags": []},
    }
    params["selector"]["assetSelection"] = [{"path": ["deployed_model"]}]
    result = dev.graphql(LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def test_a_killed_run_worker_is_detected_and_the_run_retried(prod) -> None:
    dev, instance = prod
    assert wait_finished(instance, [launch(dev)])  # a champion to protect
    serving = dev.data_dir / "serving"
    champion = open_target(serving).read_manifest()["version"]
    run_id = launch(dev, tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"})
    deadline = time.monotonic() + 300
    while (pid := worker_pid(instance, run_id)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid is not None, "the run never started"
    os.kill(pid, signal.SIGKILL)

    killed = wait_finished(instance, [run_id])[run_id]
    assert killed.dagster_run.status == dg.DagsterRunStatus.FAILURE
    messages = " ".join(
        (e.dagster_event.message or "") if e.dagster_event else e.user_message for e in instance.all_logs(run_id)
    )
    # The code server that started the worker, or run monitoring (our launcher's health check,
    # for a worker whose parent died too), marks the run failed: it is never left "started".
    assert "marked as failed" in messages or f"run worker process {pid} is gone" in messages, messages[-2000:]

    deadline = time.monotonic() + 300
    retries: list[dg.RunRecord] = []
    while not retries and time.monotonic() < deadline:
        retries = list(instance.get_run_records(dg.RunsFilter(tags={"dagster/parent_run_id": run_id})))
        time.sleep(1)
    assert retries, "the killed run was not retried"
    retry = wait_finished(instance, [retries[0].dagster_run.run_id])[retries[0].dagster_run.run_id]
    assert retry.dagster_run.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail()

    # Nothing torn: the manifest names a complete, verified version; every kept version verifies.
    manifest = open_target(serving).read_manifest()
    assert manifest["version"] != champion
    for entry in open_target(serving).list_versions():
        assert not verification_problems(version_dir(serving, entry["version"]), entry["files"])
    assert load_deployed(serving).version == manifest["version"]


def materialization_metadata(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    [event] = [r.event_log_entry for r in records if r.event_log_entry.dagster_event.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_a_losing_challenger_succeeds_quietly_and_a_failed_ceiling_alerts_with_its_verdict(
    prod_alerting, webhook: WebhookServer
) -> None:
    """The alert sensor on the real daemon: a retrain whose challenger loses ends SUCCESS with the
    champion kept and posts nothing; a run whose ceiling check fails posts one message saying why."""
    dev, instance = prod_alerting
    selector = {"repositoryLocationName": dev.location, "repositoryName": "__repository__"}
    deadline = time.monotonic() + 300
    while True:  # a run status sensor only sees runs that end after its first tick
        sensor = dev.graphql(SENSOR_TICKS, {"selector": {**selector, "sensorName": "run_failure_alert"}})
        if sensor["sensorOrError"]["sensorState"]["ticks"]:
            break
        assert time.monotonic() < deadline, f"run_failure_alert never ticked: {sensor}"
        time.sleep(1)

    # A champion trained with a higher rate (CV RMSE ~0.82 here), then the seed settings (~1.04).
    better = launch(dev, svd_model={"config": {"params": "seed", "lr_all": 0.1}})
    assert wait_finished(instance, [better])[better].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    champion = open_target(dev.data_dir / "serving").read_manifest()
    losing = launch(dev)
    assert wait_finished(instance, [losing])[losing].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    kept = materialization_metadata(instance, losing, "deployed_model")
    assert (kept["action"], kept["version"]) == ("keep", champion["version"])
    assert kept["decision"].startswith(f"kept champion {champion['version']}: challenger RMSE ")
    manifest = open_target(dev.data_dir / "serving").read_manifest()
    assert manifest["version"] == champion["version"] and manifest["kept_champion"][0]["run_id"] == losing

    failing = launch(dev, cv_metrics_cv_rmse_under_ceiling={"config": {"rmse_ceiling": 0.01}})
    assert wait_finished(instance, [failing])[failing].dagster_run.status == dg.DagsterRunStatus.FAILURE
    deadline = time.monotonic() + 300
    while not webhook.posts:
        assert time.monotonic() < deadline, "no alert for the failed run"
        time.sleep(1)
    # The sensor reads run events in order: having posted the failure, it is past the losing run.
    [post] = webhook.posts
    assert failing[:8] in post["text"] and losing[:8] not in post["text"]
    assert "cv_metrics:cv_rmse_under_ceiling failed: RMSE " in post["text"] and "> ceiling 0.01" in post["text"]
    assert post["text"].endswith(f"{UI}/runs/{failing}")
    assert open_target(dev.data_dir / "serving").read_manifest()["version"] == champion["version"]
