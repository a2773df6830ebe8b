"""`make serve` and `make dev`: each its own Dagster instance and, unless told otherwise, its own data.

Both run through the Makefile as a newcomer types them, with its folders moved into a temp dir by
make variables, from a shell that exports what a dev user's might: the dev instance's DAGSTER_HOME,
a CFREC_DATA_DIR, even DAGSTER_PG_URL. Production must still neither link over the dev instance
nor train into the dev data; dev must neither need the production database nor write to it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import LAUNCH_RUN_MUTATION as LAUNCH
from cfrec_testkit.dagster_dev import REPO_ROOT, DagsterDev, make_server, wait_for_code_locations
from cfrec_testkit.graph import make_graph_env
from cfrec_testkit.postgres import PostgresServer, scratch_database

pytestmark = pytest.mark.timeout(900)

DEV_YAML = "telemetry:\n  enabled: false\n"  # what `make materialize` writes
RUNS = "query { runsOrError { ... on Runs { results { runId status } } } }"
RUN_STATUS = "query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def launch_train_and_deploy(server: DagsterDev, location: str, ops: dict) -> str:
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": "train_and_deploy"}
    params = {"selector": selector, "runConfigData": {"ops": ops}}
    result = server.graphql(LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(server: DagsterDev, run_id: str, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    while (status := server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]) not in {
        "SUCCESS",
        "FAILURE",
        "CANCELED",
    }:
        assert time.monotonic() < deadline, f"run {run_id} still {status}:\n{server.log_tail()}"
        time.sleep(1)
    return status


def production_runs(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_make_serve_and_make_dev_never_share_an_instance_or_data(tmp_path: Path, pg_server: PostgresServer) -> None:
    env = make_graph_env(tmp_path)
    dev_home, dev_data = tmp_path / "dev_home", tmp_path / "dev_data"
    dev_home.mkdir()
    (dev_home / "dagster.yaml").write_text(DEV_YAML)
    folders = {"DEV_HOME": str(dev_home), "PROD_HOME": str(tmp_path / "prod_home"), "PROD_DATA": str(tmp_path / "prod")}
    with scratch_database(pg_server) as database:
        shell = {
            "DAGSTER_HOME": str(dev_home),
            "CFREC_DATA_DIR": str(dev_data),
            "DAGSTER_PG_URL": database.conninfo,
            "CFREC_MOVIELENS_BASE_URL": env.mirror.root.as_uri() + "/",
        }
        with make_server(tmp_path / "serve", "serve", folders, shell) as prod:
            [location] = wait_for_code_locations(prod)
            run_id = launch_train_and_deploy(prod, location, env.fixture_check_config())
            assert wait_for_run(prod, run_id) == "SUCCESS", prod.log_tail()
        assert not prod.forced_kill, prod.killed

        # Production: its own home linking deploy/dagster.yaml, its own data, history in PostgreSQL.
        assert (prod.dagster_home / "dagster.yaml").resolve() == REPO_ROOT / "deploy" / "dagster.yaml"
        assert prod.data_dir == tmp_path / "prod" and open_target(prod.data_dir / "serving").read_manifest() is not None
        assert production_runs(database.conninfo) == 1
        # The dev instance and data are as they were.
        assert not (dev_home / "dagster.yaml").is_symlink()
        assert (dev_home / "dagster.yaml").read_text() == DEV_YAML
        assert not dev_data.exists(), sorted(dev_data.rglob("*"))

        # `make dev` afterwards, DAGSTER_PG_URL still exported: it starts, on its own SQLite instance.
        with make_server(tmp_path / "dev", "dev", folders, shell) as dev:
            wait_for_code_locations(dev)
            runs = dev.graphql(RUNS)["runsOrError"]["results"]
        assert not dev.forced_kill, dev.killed
        assert runs == []  # not production's history
        assert (dev_home / "dagster.yaml").read_text() == DEV_YAML
        assert production_runs(database.conninfo) == 1


def test_serve_refuses_a_home_that_holds_another_instance(tmp_path: Path) -> None:
    """deploy/serve.sh run by hand with the dev DAGSTER_HOME exported: refused, nothing linked."""
    home = tmp_path / "dev_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEV_YAML)
    shell = {"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(home), "DAGSTER_PG_URL": "postgresql://unused/db"}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "serve.sh")], env=shell, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{home / 'dagster.yaml'} belongs to another Dagster instance" in done.stderr
    assert (home / "dagster.yaml").read_text() == DEV_YAML and not (home / "dagster.yaml").is_symlink()


def test_make_dev_replaces_a_link_an_older_make_serve_left_in_the_dev_home(tmp_path: Path) -> None:
    home = tmp_path / "dev_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "deploy" / "dagster.yaml")
    done = subprocess.run(
        ["make", "--no-print-directory", "dev-instance", f"DEV_HOME={home}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "pointed at the production instance: replaced" in done.stdout
    assert not (home / "dagster.yaml").is_symlink() and (home / "dagster.yaml").read_text() == DEV_YAML
