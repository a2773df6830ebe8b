"""Run the real ``dg dev`` or the production server (webserver + daemon + code servers) for a test, and clean it up,
started directly or through the Makefile (``make dev`` / ``make serve``).

Each runs in its own session, hence its own process group, so everything it starts
(webserver, daemon, code server, run workers) can be signalled at once and checked for
leftovers afterwards. Each instance gets a temp ``DAGSTER_HOME`` and data dir, and a free
loopback port; the code server talks over a socket dagster picks itself, so no fixed port is
bound and several instances can run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Inherited settings that would point the code location at someone's real data or database (or
# hand a nested make the outer one's jobserver and flags).
_SCRUBBED_PREFIXES = ("CFREC_", "SUPABASE_", "DAGSTER_", "MAKE", "MFLAGS")
_INSTANCE_YAML = "telemetry:\n  enabled: false\n"
RESEND_SECONDS = 10.0  # _stop: how long one SIGTERM is given before it is sent again
# dagster maps SIGTERM to whatever SIGINT does, and a shell starts background jobs with
# SIGINT ignored: reset both before exec'ing dagster so it shuts down on SIGTERM.
_EXEC_WITH_DEFAULT_SIGNALS = (  # used for `dg dev` and for `make dev`/`make serve`
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class DagsterDevError(RuntimeError):
    """The server failed to start, to answer, or to shut down cleanly."""


@dataclass
class DagsterDev:
    """A running ``dg dev`` or production server: its URL, folders, log file and process."""

    url: str
    dagster_home: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen
    forced_kill: bool = field(default=False, init=False)
    """Set on exit when SIGTERM was not enough and the group had to be SIGKILLed."""
    killed: list[tuple[int, str]] = field(default_factory=list, init=False)
    """The (pid, name) of the processes that were SIGKILLed."""

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """POST to ``/graphql``; returns ``data``, raising on transport or GraphQL errors."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_loopback_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (tiny race until dagster binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_group_members(pgid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes in ``pgid`` as (pid, command name), read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The command name is parenthesised and may contain spaces: split after the last ')'.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append((int(entry.name), name))
    return members


def _wait_until_group_empty(pgid: int, timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while (members := process_group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return members


def _wait_for_server_info(dev: DagsterDev, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise DagsterDevError(
                f"server exited with code {dev.process.returncode} before answering:\n{dev.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{dev.url}/server_info", timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise DagsterDevError(f"server did not answer {dev.url}/server_info within {timeout:.0f}s:\n{dev.log_tail()}")


def _stop(dev: DagsterDev, timeout: float) -> None:
    """SIGTERM the group (dagster maps it to its Ctrl-C shutdown), then SIGKILL what is left.

    A SIGTERM that lands while a just-started server is still inside a section that defers
    interrupts can be lost (seen once on a busy CI machine: nothing in the group reacted for
    60 s), so it is sent again every ``RESEND_SECONDS``, as an operator presses Ctrl-C again; a
    server that ignores SIGTERM altogether is still SIGKILLed and reported."""
    pgid = dev.process.pid  # start_new_session: the leader's pid is the group id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            break
        try:
            dev.process.wait(timeout=min(RESEND_SECONDS, max(deadline - time.monotonic(), 0.1)))
            break
        except subprocess.TimeoutExpired:
            pass  # not gone yet: send it again
    # Code servers may outlive the leader by a few seconds while they wind down.
    left = _wait_until_group_empty(pgid, timeout=max(deadline - time.monotonic(), 5.0))
    if left:
        dev.forced_kill = True
        dev.killed = left
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        dev.process.wait(timeout=10)
        left = _wait_until_group_empty(pgid, timeout=10)
        if left:
            raise DagsterDevError(f"server processes survived SIGKILL: {left}")


@contextmanager
def dagster_dev(
    tmp_dir: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 180.0,
    shutdown_timeout: float = 60.0,
) -> Iterator[DagsterDev]:
    """Start ``dg dev`` (webserver + daemon, the project's [tool.dg] code location) on a free
    loopback port; yield once ``/server_info`` answers.

    ``tmp_dir`` receives ``dagster_home/`` (a dagster.yaml with telemetry off), ``data/``
    (``CFREC_DATA_DIR``) and ``dagster_dev.log``. ``env`` adds variables (e.g.
    ``CFREC_MOVIELENS_BASE_URL``) on top of the inherited environment, from which every CFREC_*,
    SUPABASE_* and DAGSTER_* variable is removed. On exit the whole process group is stopped
    and checked to be gone.
    """
    (tmp_dir / "dagster_home").mkdir(parents=True, exist_ok=True)
    (tmp_dir / "dagster_home" / "dagster.yaml").write_text(_INSTANCE_YAML, encoding="utf-8")

    def command(port: int) -> list[str]:
        dg_cli = str(Path(sys.executable).with_name("dg"))
        return [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, dg_cli, "dev", "-h", "127.0.0.1", "-p", str(port)]

    with _serving(tmp_dir, command, env, startup_timeout, shutdown_timeout) as dev:
        yield dev


@contextmanager
def production_server(
    tmp_dir: Path,
    pg_url: str,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 180.0,
    shutdown_timeout: float = 60.0,
) -> Iterator[DagsterDev]:
    """``deploy/serve.sh`` (daemon + webserver on deploy/dagster.yaml, history in PostgreSQL at
    ``pg_url``), as docs/operations.md "Running in production" runs it; same folders and clean-up as
    :func:`dagster_dev`."""

    def command(port: int) -> list[str]:
        return ["bash", str(REPO_ROOT / "deploy" / "serve.sh")]

    production_env = {"DAGSTER_PG_URL": pg_url, "CFREC_VENV": str(Path(sys.executable).parent.parent), **(env or {})}
    with _serving(
        tmp_dir, command, production_env, startup_timeout, shutdown_timeout, port_variable="CFREC_PORT"
    ) as dev:
        yield dev


@contextmanager
def make_server(
    tmp_dir: Path,
    target: str,
    make_variables: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 180.0,
    shutdown_timeout: float = 60.0,
) -> Iterator[DagsterDev]:
    """``make dev`` or ``make serve`` as a newcomer runs them, from the repository root, with this
    interpreter's virtualenv (``VENV``, never rebuilt) and the Makefile's folders moved by
    ``make_variables`` (DEV_HOME, PROD_HOME, PROD_DATA): the server's ``dagster_home`` and
    ``data_dir`` are the ones the Makefile chose. ``env`` is the caller's shell environment on top
    of the scrubbed one (e.g. a DAGSTER_HOME or CFREC_DATA_DIR exported for dev work)."""
    venv = Path(sys.executable).parent.parent
    homes = {"dev": ("DEV_HOME", None), "serve": ("PROD_HOME", "PROD_DATA")}
    home_variable, data_variable = homes[target]
    dagster_home = Path(make_variables[home_variable])
    data_dir = Path(make_variables[data_variable] if data_variable else (env or {})["CFREC_DATA_DIR"])
    assignments = [f"{name}={value}" for name, value in {"VENV": str(venv), **make_variables}.items()]

    def command(port: int) -> list[str]:
        make = shutil.which("make") or "/usr/bin/make"
        make_args = ["--no-print-directory", "-o", f"{venv}/.installed", target, *assignments]
        return [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, make, *make_args]

    with _serving(
        tmp_dir,
        command,
        env,
        startup_timeout,
        shutdown_timeout,
        port_variable="CFREC_PORT",
        dagster_home=dagster_home,
        data_dir=data_dir,
    ) as dev:
        yield dev


@contextmanager
def _serving(
    tmp_dir: Path,
    command: Callable[[int], list[str]],
    env: Mapping[str, str] | None,
    startup_timeout: float,
    shutdown_timeout: float,
    port_variable: str | None = None,
    dagster_home: Path | None = None,
    data_dir: Path | None = None,
) -> Iterator[DagsterDev]:
    """Start ``command(port)``; by default with ``DAGSTER_HOME`` and ``CFREC_DATA_DIR`` in ``tmp_dir``
    (folders the command decides for itself, as ``make`` does, are passed in instead)."""
    chosen = dagster_home is not None
    dagster_home = dagster_home or tmp_dir / "dagster_home"
    data_dir = data_dir or tmp_dir / "data"
    if not chosen:
        dagster_home.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    child_env["PYTHONUNBUFFERED"] = "1"
    if not chosen:
        child_env.update(DAGSTER_HOME=str(dagster_home), CFREC_DATA_DIR=str(data_dir))
    if port_variable:
        child_env[port_variable] = str(port)
    child_env.update(env or {})

    log_path = tmp_dir / "dagster_dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(port),
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DagsterDev(f"http://127.0.0.1:{port}", dagster_home, data_dir, log_path, process)
    try:
        _wait_for_server_info(dev, startup_timeout)
        yield dev
    finally:
        _stop(dev, shutdown_timeout)


LAUNCH_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
"""GraphQL that launches a run on a live webserver (the production and instance tests use it)."""

LOCATION_STATUS_QUERY = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


def wait_for_code_locations(dev: DagsterDev, timeout: float = 120.0) -> list[str]:
    """Block until every code location has loaded; return their names, raising on a load error."""
    deadline = time.monotonic() + timeout
    while True:
        workspace = dev.graphql(LOCATION_STATUS_QUERY)["workspaceOrError"]
        entries = workspace.get("locationEntries", [])
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            for entry in entries:
                loaded = entry["locationOrLoadError"] or {}
                if loaded.get("__typename") == "PythonError":
                    raise DagsterDevError(f"code location {entry['name']} failed to load: {loaded['message']}")
            return [entry["name"] for entry in entries]
        if time.monotonic() > deadline:
            raise DagsterDevError(f"code locations not loaded after {timeout:.0f}s: {workspace}")
        time.sleep(0.5)
