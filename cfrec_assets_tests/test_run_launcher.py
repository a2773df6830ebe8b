"""The production run launcher's worker health check, on a real instance and real processes."""

from __future__ import annotations

import os
import subprocess
import time

import dagster as dg
from dagster._core.events import EngineEventData

from cfrec_assets.defs.run_launcher import LocalRunLauncher, process_alive, worker_pid


@dg.asset
def tiny() -> int:
    return 1


def _launcher(instance: dg.DagsterInstance) -> LocalRunLauncher:
    launcher = LocalRunLauncher()
    launcher.register_instance(instance)
    return launcher


def test_a_live_worker_is_running_and_a_dead_one_failed() -> None:
    with dg.instance_for_test() as instance:
        run_id = dg.materialize([tiny], instance=instance).run_id
        run = instance.get_run_by_id(run_id)
        assert worker_pid(instance, run_id) == os.getpid()  # in-process: this process is the worker
        assert _launcher(instance).check_run_worker_health(run).status.value == "RUNNING"

        gone = subprocess.Popen(["true"])
        gone.wait()
        instance.report_engine_event(
            f"Started process for run (pid: {gone.pid}).", run, EngineEventData.in_process(gone.pid)
        )
        assert worker_pid(instance, run_id) == gone.pid
        health = _launcher(instance).check_run_worker_health(run)
        assert health.status.value == "FAILED" and f"run worker process {gone.pid} is gone" in health.msg


def test_a_zombie_is_not_alive_and_a_run_without_pid_is_not_failed() -> None:
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while process_alive(zombie.pid) and time.monotonic() < deadline:  # exited, not reaped: state Z
            time.sleep(0.01)
        assert not process_alive(zombie.pid)
    finally:
        zombie.wait()
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(
            dg.define_asset_job("j").resolve(asset_graph=dg.Definitions(assets=[tiny]).get_repository_def().asset_graph)
        )
        assert worker_pid(instance, run.run_id) is None
        assert _launcher(instance).check_run_worker_health(run).status.value == "RUNNING"
