"""Benchmark the Supabase read path and the sensor-driven retrain latency.

Usage: ``python bench/supabase_bench.py [--part read|latency|all] [--rows N] [--repeat R]
[--samples S] [--interval SECONDS] [--min-new-ratings N] [--datasets DIR]``

``read``: 100,000 generated rating rows in a throwaway PostgreSQL, read page by page
through the PostgREST-subset test server with the real :class:`SupabaseResource`
(page size 1000), against the psycopg reader on the same rows.

``latency``: the real daemon (``dagster dev``, own process group, temp DAGSTER_HOME) runs
``supabase_ratings_sensor`` at its default 300 s interval against the same test server; after
one full materialization on the real MovieLens zips, each sample inserts
``CFREC_RETRAIN_MIN_NEW_RATINGS`` + 5 ratings and times until the run the sensor launches
succeeds. Nothing is written to the repository; the temp folders are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchlib import timed  # noqa: E402  (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the test servers live in cfrec_assets_tests.support
    sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402

from cfrec_assets.sensors import DEFAULT_INTERVAL_SECONDS, DEFAULT_MIN_NEW_RATINGS  # noqa: E402
from cfrec_assets.supabase_client import SupabaseResource, validate_ratings  # noqa: E402
from cfrec_assets.supabase_postgres import SupabasePostgresResource  # noqa: E402
from cfrec_testkit.postgres import (  # noqa: E402
    create_ratings_table,
    insert_ratings,
    postgres_server,
)
from cfrec_testkit.postgrest import TEST_API_KEY, PostgrestSubsetServer  # noqa: E402

SENSOR_NAME = "supabase_ratings_sensor"
EXTRA_RATINGS = 5
RUN_TIMEOUT_SECONDS = 900
# Variables that would point the child processes at someone's real data, database or instance.
SCRUBBED_PREFIXES = ("CFREC_", "SUPABASE_", "DAGSTER_")
# dagster dev turns SIGTERM into its Ctrl-C shutdown only when SIGINT is not ignored.
EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


# --- shared helpers ---------------------------------------------------------


def generated_ratings(n: int, seed: int, start: datetime) -> list[tuple[str, int, float, datetime]]:
    """App-like rows: uuid users, TMDB-like ids, half stars, timestamps with some ties."""
    rng = np.random.default_rng(seed)
    users = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**63, size=max(1, n // 40))]
    user_idx = rng.integers(0, len(users), size=n)
    movies = rng.integers(2, 200_000, size=n)
    stars = rng.integers(1, 11, size=n) / 2
    offsets = np.sort(rng.integers(0, 365 * 24 * 3600, size=n))  # seconds: ties happen
    return [
        (users[u], int(m), float(s), start + timedelta(seconds=int(o)))
        for u, m, s, o in zip(user_idx, movies, stars, offsets)
    ]


def _serve(conninfo: str, ready: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with PostgrestSubsetServer(conninfo, [TEST_API_KEY]) as server:
        ready.put(server.url)
        stop.wait()


@contextmanager
def postgrest_process(conninfo: str) -> Iterator[str]:
    """The PostgREST-subset server in its own process (as PostgREST would be): yields its URL.

    In-process, its JSON work would share the reader's GIL and slow both down.
    """
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(conninfo, ready, stop), daemon=True)
    process.start()
    try:
        yield ready.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}, "
        f"dagster {dg.__version__}"
    )


def reproduce_line() -> str:
    return (
        "cd "
        + shlex.quote(str(REPO))
        + " && .venv/bin/python "
        + shlex.join([str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])
    )


# --- part 1: paged REST read vs psycopg --------------------------------------


def bench_read(rows: int, repeat: int, seed: int, with_index: bool) -> None:
    index = "with" if with_index else "without"
    print(
        f"== read: {rows:,} generated rows, REST (PostgREST-subset test server) vs psycopg, "
        f"{index} an index on (created_at, id), median of {repeat}"
    )
    with postgres_server() as pg:
        create_ratings_table(pg.conninfo)
        insert_ratings(pg.conninfo, generated_ratings(rows, seed, datetime(2025, 1, 1, tzinfo=timezone.utc)))
        if with_index:  # the read order: lets each offset page stop early instead of sorting the table
            with psycopg.connect(pg.conninfo, autocommit=True) as conn:
                conn.execute("CREATE INDEX ratings_read_order ON ratings (created_at, id)")
        with postgrest_process(pg.conninfo) as url:
            rest = SupabaseResource(url=url, key=TEST_API_KEY, page_size=1000)
            direct = SupabasePostgresResource(db_url=pg.conninfo)
            # The first call pays imports and first connections: shown apart, not in the median.
            rest_first, _ = timed(rest.read_ratings, 1)
            pg_first, _ = timed(direct.read_ratings, 1)
            rest_s, (rest_frame, rest_stats) = timed(rest.read_ratings, repeat)
            pg_s, (pg_frame, pg_stats) = timed(direct.read_ratings, repeat)
    if rest_stats["rows_read"] != rows or pg_stats["rows_read"] != rows:
        raise SystemExit(f"incomplete read: REST {rest_stats['rows_read']}, psycopg {pg_stats['rows_read']}")
    same = rest_frame.equals(pg_frame)
    raw = pg_frame.astype(object)  # the rows again as untyped values, as both readers pass them
    validate_s, _ = timed(lambda: validate_ratings(raw, direct.rating_min, direct.rating_max), repeat)
    rest_med, pg_med = statistics.median(rest_s), statistics.median(pg_s)
    pages = rest_stats["pages"]
    print()
    print("| reader | pages / fetches | first call s | median s | runs (s) | pages/s | rows/s |")
    print("|---|---:|---:|---:|---|---:|---:|")
    print(
        f"| SupabaseResource (REST, page 1000) | {pages} | {rest_first[0]:.2f} | {rest_med:.2f} | "
        f"{', '.join(f'{s:.2f}' for s in rest_s)} | {pages / rest_med:.1f} | {rows / rest_med:,.0f} |"
    )
    print(
        f"| SupabasePostgresResource (psycopg, batch {direct.batch_size}) | {pg_stats['pages']} | "
        f"{pg_first[0]:.2f} | {pg_med:.2f} | {', '.join(f'{s:.2f}' for s in pg_s)} | - | {rows / pg_med:,.0f} |"
    )
    print(
        f"| of which: validate_ratings (both readers) | - | - | {statistics.median(validate_s):.2f} | "
        f"{', '.join(f'{s:.2f}' for s in validate_s)} | - | - |"
    )
    print()
    print(
        f"REST / psycopg time ratio: {rest_med / pg_med:.1f}x; both readers returned "
        f"{'identical' if same else 'DIFFERENT'} frames ({rows:,} valid rows)"
    )
    print("REST requests = data pages + the final empty page; the count HEAD is extra.")


# --- part 2: insert -> sensor tick -> finished retrain -----------------------


@dataclass
class Sample:
    inserted_at: float
    tick_at: float
    started_at: float
    ended_at: float
    run_id: str

    @property
    def tick_wait(self) -> float:
        return self.tick_at - self.inserted_at

    @property
    def launch(self) -> float:
        return self.started_at - self.tick_at

    @property
    def run(self) -> float:
        return self.ended_at - self.started_at

    @property
    def total(self) -> float:
        return self.ended_at - self.inserted_at


def child_env(dagster_home: Path, data_dir: Path, supabase_url: str, base_url: str, min_new: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        CFREC_DATA_DIR=str(data_dir),
        CFREC_MOVIELENS_BASE_URL=base_url,
        SUPABASE_URL=supabase_url,
        SUPABASE_KEY=TEST_API_KEY,
        CFREC_RETRAIN_SENSOR="running",
        CFREC_RETRAIN_MIN_NEW_RATINGS=str(min_new),
        PYTHONUNBUFFERED="1",
    )
    return env


def interval_override_location(folder: Path, interval: int, min_new: int) -> Path:
    """A code location identical to cfrec_assets.definitions except for the sensor's interval."""
    path = folder / "bench_location.py"
    path.write_text(
        '"""cfrec_assets.definitions with the retrain sensor at another interval (benchmark only)."""\n'
        "import dagster as dg\n"
        "from cfrec_assets.assets import ALL_ASSETS\n"
        "from cfrec_assets.checks import ALL_CHECKS\n"
        "from cfrec_assets.definitions import build_resources\n"
        "from cfrec_assets.sensors import build_retrain_sensor\n"
        "defs = dg.Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, executor=dg.in_process_executor,\n"
        f"    sensors=[build_retrain_sensor({min_new}, {interval}, dg.DefaultSensorStatus.RUNNING)],\n"
        "    resources=build_resources())\n",
        encoding="utf-8",
    )
    return path


@contextmanager
def process_group(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Start ``command`` as the leader of a new session; on exit stop the whole group, always."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the group (dagster's clean shutdown), SIGKILL whatever is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)  # raises once no member of the group is left
            except ProcessLookupError:
                return
            time.sleep(0.2)
    print(f"warning: process group {process.pid} still has members after SIGKILL", file=sys.stderr)


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


TICKS_QUERY = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { minIntervalSeconds sensorState { status ticks(limit: 50) { timestamp status runIds skipReason } } }
    ... on PythonError { message }
  }
}
"""
LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


class DagsterDev:
    """What the benchmark needs from a running ``dagster dev``: sensor ticks, via GraphQL."""

    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path
        self.selector: dict[str, str] | None = None

    def wait_until_loaded(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({self.process.returncode}):\n{log_tail(self.log_path)}")
            try:
                entries = graphql(self.url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    self.selector = {
                        "repositoryLocationName": entries[0]["name"],
                        "repositoryName": "__repository__",
                        "sensorName": SENSOR_NAME,
                    }
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
                pass
            time.sleep(1)
        raise RuntimeError(f"dagster dev did not load its code location in {timeout:.0f}s:\n{log_tail(self.log_path)}")

    def sensor(self) -> dict:
        found = graphql(self.url, TICKS_QUERY, {"selector": self.selector})["sensorOrError"]
        if found["__typename"] != "Sensor":
            raise RuntimeError(f"sensor {SENSOR_NAME} not found: {found}")
        return found

    def ticks(self) -> list[dict]:
        return self.sensor()["sensorState"]["ticks"]


def wait_for_first_tick(dev: DagsterDev, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks = dev.ticks()
        if ticks:
            return ticks[0]
        time.sleep(1)
    raise RuntimeError(f"the daemon evaluated no sensor tick in {timeout:.0f}s:\n{log_tail(dev.log_path)}")


def sensor_runs(instance: dg.DagsterInstance) -> list:
    return list(instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})))


def wait_for_sensor_run(
    instance: dg.DagsterInstance, dev: DagsterDev, known: set[str], inserted_at: float, timeout: float
) -> Sample:
    """Block until a sensor run not in ``known`` finished; raise if it did not succeed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({dev.process.returncode}):\n{log_tail(dev.log_path)}")
        new = [r for r in sensor_runs(instance) if r.dagster_run.run_id not in known]
        if new:
            record = new[0]
            run = record.dagster_run
            if run.status == dg.DagsterRunStatus.SUCCESS:
                tick = next((t for t in dev.ticks() if run.run_id in t["runIds"]), None)
                if tick is None:
                    raise RuntimeError(f"no sensor tick lists run {run.run_id}")
                return Sample(inserted_at, tick["timestamp"], record.start_time, record.end_time, run.run_id)
            if run.is_finished:
                raise RuntimeError(
                    f"sensor run {run.run_id} ended {run.status.value}; "
                    f"see {dev.log_path} and the instance at {instance.root_directory}"
                )
        time.sleep(1)
    raise RuntimeError(f"no successful sensor run within {timeout:.0f}s of the insert; ticks: {dev.ticks()[:3]}")


def app_ratings(n: int, tmdb_ids: list[int], seed: int) -> list[tuple[str, int, float, None]]:
    """``n`` ratings by a handful of new app users on mapped movies (created_at = now())."""
    rng = np.random.default_rng(seed)
    users = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**63, size=5)]
    return [(users[i % len(users)], int(rng.choice(tmdb_ids)), float(rng.integers(6, 11)) / 2, None) for i in range(n)]


def bench_latency(samples: int, interval: int | None, min_new: int, datasets: Path, keep: bool) -> None:
    shown = interval or DEFAULT_INTERVAL_SECONDS
    deviation = (
        "" if interval is None else f" (DEVIATION: --interval {interval}, default is {DEFAULT_INTERVAL_SECONDS})"
    )
    print(
        f"== latency: insert {min_new}+{EXTRA_RATINGS} ratings -> sensor run succeeded, "
        f"sensor interval {shown} s{deviation}, {samples} sample(s)"
    )
    base_url = datasets.resolve().as_uri() + "/"
    scratch = Path(tempfile.mkdtemp(prefix="cfrec-sensor-bench-"))
    dagster_home, data_dir = scratch / "dagster_home", scratch / "data"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    try:
        with postgres_server() as pg:
            create_ratings_table(pg.conninfo)
            with postgrest_process(pg.conninfo) as url:
                env = child_env(dagster_home, data_dir, url, base_url, min_new)
                results, initial_seconds = run_latency_samples(samples, interval, min_new, pg.conninfo, env, scratch)
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"initial full materialization (champion, real MovieLens): {initial_seconds:.0f} s")
    print()
    print("| sample | insert -> tick s | tick -> run start s | run s | insert -> success s |")
    print("|---:|---:|---:|---:|---:|")
    for i, s in enumerate(results, 1):
        print(f"| {i} | {s.tick_wait:.1f} | {s.launch:.1f} | {s.run:.1f} | {s.total:.1f} |")
    med = {
        name: statistics.median(getattr(s, name) for s in results) for name in ("tick_wait", "launch", "run", "total")
    }
    print(f"| median | {med['tick_wait']:.1f} | {med['launch']:.1f} | {med['run']:.1f} | {med['total']:.1f} |")
    print()
    after_tick = med["launch"] + med["run"]
    print(
        f"The tick wait depends on when the insert lands in the {shown} s cycle: expect "
        f"~{shown / 2 + after_tick:.0f} s on average (interval/2 + launch + run) and at most "
        f"~{shown + after_tick:.0f} s. Samples here insert right after the previous run (or the "
        "first, skipped tick), so their tick wait is near the top of that range."
    )


def run_latency_samples(
    samples: int, interval: int | None, min_new: int, conninfo: str, env: dict[str, str], scratch: Path
) -> tuple[list[Sample], float]:
    dagster = [sys.executable, "-m", "dagster"]
    started = time.perf_counter()
    initial = subprocess.run(
        [*dagster, "asset", "materialize", "-m", "cfrec_assets.definitions", "--select", "*"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        start_new_session=True,
    )
    initial_seconds = time.perf_counter() - started
    if initial.returncode != 0:
        raise RuntimeError(f"initial materialization failed ({initial.returncode}):\n{initial.stderr[-4000:]}")
    tmdb_ids = pd.read_parquet(Path(env["CFREC_DATA_DIR"]) / "movielens" / "tmdb_links.parquet")["tmdb_id"]
    tmdb_ids = sorted(int(x) for x in tmdb_ids.dropna().unique())

    location = (
        ["-m", "cfrec_assets.definitions"]
        if interval is None
        else ["-f", str(interval_override_location(scratch, interval, min_new))]
    )
    port = free_port()
    command = [
        sys.executable,
        "-c",
        EXEC_WITH_DEFAULT_SIGNALS,
        *dagster,
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        *location,
    ]
    log_path = scratch / "dagster_dev.log"
    results: list[Sample] = []
    with (
        dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance,
        process_group(command, env, log_path) as process,
    ):
        dev = DagsterDev(f"http://127.0.0.1:{port}", process, log_path)
        dev.wait_until_loaded()
        first = wait_for_first_tick(dev)
        print(
            f"daemon up; first tick {first['status']}: {first.get('skipReason')}; "
            f"sensor interval {dev.sensor()['minIntervalSeconds']} s"
        )
        timeout = 2 * (interval or DEFAULT_INTERVAL_SECONDS) + RUN_TIMEOUT_SECONDS
        for i in range(samples):
            known = {r.dagster_run.run_id for r in sensor_runs(instance)}
            inserted_at = time.time()
            insert_ratings(conninfo, app_ratings(min_new + EXTRA_RATINGS, tmdb_ids, seed=i))
            sample = wait_for_sensor_run(instance, dev, known, inserted_at, timeout)
            results.append(sample)
            print(
                f"sample {i + 1}: run {sample.run_id[:8]} succeeded {sample.total:.1f} s after the insert "
                f"(tick wait {sample.tick_wait:.1f} s, run {sample.run:.1f} s)",
                flush=True,
            )
    return results, initial_seconds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the `finally`s that stop dagster and PostgreSQL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("read", "latency", "all"), default="all")
    parser.add_argument("--rows", type=positive_int, default=100_000, help="rows for the read benchmark")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed reads per reader (median reported)")
    parser.add_argument("--samples", type=positive_int, default=2, help="insert -> retrain samples")
    parser.add_argument(
        "--interval",
        type=positive_int,
        default=None,
        help=f"override the sensor's {DEFAULT_INTERVAL_SECONDS} s interval (reported as a deviation)",
    )
    parser.add_argument(
        "--min-new-ratings",
        type=positive_int,
        default=DEFAULT_MIN_NEW_RATINGS,
        help="CFREC_RETRAIN_MIN_NEW_RATINGS for the daemon",
    )
    parser.add_argument(
        "--datasets",
        type=Path,
        default=Path(os.environ.get("CFREC_SHARED_DATASETS") or REPO / "../shared/datasets"),
        help="folder holding movielens/ml-100k.zip and movielens/ml-latest-small.zip",
    )
    parser.add_argument(
        "--with-index",
        action="store_true",
        help="read benchmark: index the ratings table on (created_at, id), the read order",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the latency run's temp folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _exit_on_sigterm)

    movielens = args.datasets / "movielens"
    missing = [n for n in ("ml-100k.zip", "ml-latest-small.zip") if not (movielens / n).is_file()]
    if args.part != "read" and missing:  # checked first: no point reading for a minute, then failing
        print(f"MovieLens zips not found in {movielens}: {missing}", file=sys.stderr)
        return 2
    print(machine_line())
    print(f"reproduce: {reproduce_line()}")
    if args.part in ("read", "all"):
        bench_read(args.rows, args.repeat, args.seed, args.with_index)
    if args.part in ("latency", "all"):
        bench_latency(args.samples, args.interval, args.min_new_ratings, movielens, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
