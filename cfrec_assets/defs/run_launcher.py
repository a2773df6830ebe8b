"""The production instance's run launcher: Dagster's default one, plus a worker health check.

Run workers are processes on this host (started by the code server, as with the default
launcher). Run monitoring asks the launcher whether a started run's worker is alive; the
default launcher cannot say, so a worker killed by the OOM killer or ``kill -9`` would leave
its run "started" forever. This one reads the worker's pid from the run's "Started process"
event and looks it up in ``/proc``: gone (or a zombie) means FAILED, and the run-retry daemon
then re-executes the run if it was tagged for retries.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

# Not re-exported at the top level: the launcher API's own result types.
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus


class LocalRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` that lets run monitoring detect a dead run worker on this host."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = worker_pid(self._instance, run.run_id)
        if pid is None:  # reported before the run is marked started; be patient, not wrong
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)")


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the latest of the run's engine events that carries one
    ("Started process for run", "Executing steps in process")."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for event in reversed(events):
        data = event.dagster_event.engine_event_data if event.dagster_event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None:
            return int(pid.value)
    return None


def process_alive(pid: int) -> bool:
    """True for a live (non-zombie) process, read from /proc (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state not in ("Z", "X")
