"""Benchmark insert -> deployed latency of the sensor-driven retrain under the real daemon.

Usage: ``python bench/retrain_latency_bench.py [--samples S] [--interval SECONDS] [--min-new-ratings N]
[--datasets DIR]``

A throwaway PostgreSQL holds the app's ratings (behind the PostgREST-subset server, in its own
process) and, in another database, the Dagster instance: the production server
(``deploy/serve.sh``: daemon + webserver on ``deploy/dagster.yaml``, queued runs, started by
``cfrec_testkit.dagster_dev.production_server``) runs ``supabase_ratings_sensor`` at
``--interval`` seconds (``CFREC_RETRAIN_INTERVAL_SECONDS``). ``--dev`` uses ``dg dev`` on SQLite instead. After one full materialization on the real MovieLens
zips (the champion), each sample inserts N + 5 ratings and waits for the run the sensor
launches to succeed, splitting the latency into: waiting for the tick, tick -> run created,
created -> started (queue + launch), started -> first step (run worker start-up), and steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    REPO,
    parse_real_data_args,
    positive_int,
)

from cfrec_assets.defs.sensors import DEFAULT_MIN_NEW_RATINGS
from cfrec_testkit.dagster_dev import DagsterDev, dagster_dev, production_server, wait_for_code_locations
from cfrec_testkit.postgres import create_ratings_table, insert_ratings, postgres_server, scratch_database
from cfrec_testkit.postgrest import TEST_API_KEY, postgrest_process

SENSOR_NAME = "supabase_ratings_sensor"
EXTRA_RATINGS = 5
RUN_TIMEOUT_SECONDS = 900
TICKS_QUERY = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { minIntervalSeconds sensorState { ticks(limit: 50) { timestamp status runIds skipReason } } }
    ... on PythonError { message }
  }
}
"""


@dataclass
class Sample:
    inserted: float
    tick: float
    created: float
    started: float
    first_step: float
    ended: float

    def split(self) -> dict[str, float]:
        return {
            "insert -> tick": self.tick - self.inserted,
            "tick -> run created": max(0.0, self.created - self.tick),
            "created -> started (queue + launch)": self.started - self.created,
            "started -> first step": self.first_step - self.started,
            "steps": self.ended - self.first_step,
            "insert -> deployed": self.ended - self.inserted,
        }


def ticks(dev: DagsterDev, location: str) -> list[dict]:
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": SENSOR_NAME}
    found = dev.graphql(TICKS_QUERY, {"selector": selector})["sensorOrError"]
    if found["__typename"] != "Sensor":
        raise RuntimeError(f"sensor {SENSOR_NAME} not found: {found}")
    return found["sensorState"]["ticks"]


def sensor_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})))


def first_step_start(instance: dg.DagsterInstance, run_id: str) -> float:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    return min(event.timestamp for event in events)


def wait_for_sample(instance, dev: DagsterDev, location: str, known: set[str], inserted: float) -> Sample:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if dev.process.poll() is not None:
            raise RuntimeError(f"server exited ({dev.process.returncode}):\n{dev.log_tail()}")
        new = [r for r in sensor_runs(instance) if r.dagster_run.run_id not in known]
        if new:
            record, run = new[0], new[0].dagster_run
            if run.status == dg.DagsterRunStatus.SUCCESS:
                tick = next(t for t in ticks(dev, location) if run.run_id in t["runIds"])
                return Sample(
                    inserted,
                    tick["timestamp"],
                    record.create_timestamp.timestamp(),
                    record.start_time,
                    first_step_start(instance, run.run_id),
                    record.end_time,
                )
            if run.is_finished:
                raise RuntimeError(f"sensor run {run.run_id} ended {run.status.value}:\n{dev.log_tail()}")
        time.sleep(0.5)
    raise RuntimeError(f"no successful sensor run within {RUN_TIMEOUT_SECONDS} s of the insert")


def app_ratings(n: int, tmdb_ids: list[int], seed: int) -> list[tuple[str, int, float, None]]:
    """``n`` ratings by a handful of new app users on mapped movies (created_at = now())."""
    rng = np.random.default_rng(seed)
    users = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**63, size=5)]
    return [(users[i % len(users)], int(rng.choice(tmdb_ids)), float(rng.integers(6, 11)) / 2, None) for i in range(n)]


def mapped_tmdb_ids(instance: dg.DagsterInstance) -> list[int]:
    event = instance.get_latest_materialization_event(dg.AssetKey("tmdb_links"))
    path = event.asset_materialization.metadata["path"].value
    return sorted(int(x) for x in pd.read_parquet(path)["tmdb_id"].dropna().unique())


def run(samples: int, interval: int, min_new: int, movielens: Path, dev_server: bool) -> list[Sample]:
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="cfrec-latency-bench-") as scratch,
        postgres_server() as pg,
        scratch_database(pg) as instance_db,
    ):
        create_ratings_table(pg.conninfo)
        with postgrest_process(pg.conninfo) as url:
            env = {
                "CFREC_MOVIELENS_BASE_URL": movielens.resolve().as_uri() + "/",
                "SUPABASE_URL": url,
                "SUPABASE_KEY": TEST_API_KEY,
                "CFREC_RETRAIN_SENSOR": "running",
                "CFREC_RETRAIN_MIN_NEW_RATINGS": str(min_new),
                "CFREC_RETRAIN_INTERVAL_SECONDS": str(interval),
            }
            os.environ["DAGSTER_PG_URL"] = instance_db.conninfo  # this process reads the same instance
            server = (
                dagster_dev(Path(scratch), env=env)
                if dev_server
                else production_server(Path(scratch), instance_db.conninfo, env=env)
            )
            with server as dev:
                [location] = wait_for_code_locations(dev)
                child = {
                    **os.environ,
                    **env,
                    "DAGSTER_HOME": str(dev.dagster_home),
                    "CFREC_DATA_DIR": str(dev.data_dir),
                }
                started = time.perf_counter()
                dg_cli = str(Path(sys.executable).with_name("dg"))
                child["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
                subprocess.run(
                    [dg_cli, "launch", "--job", "train_and_deploy"],
                    env=child,
                    cwd=REPO,
                    check=True,
                    capture_output=True,
                )
                print(f"initial full materialization (the champion): {time.perf_counter() - started:.0f} s", flush=True)
                with dg.DagsterInstance.from_config(str(dev.dagster_home)) as instance:
                    tmdb_ids = mapped_tmdb_ids(instance)
                    for i in range(samples):
                        known = {r.dagster_run.run_id for r in sensor_runs(instance)}
                        inserted = time.time()
                        insert_ratings(pg.conninfo, app_ratings(min_new + EXTRA_RATINGS, tmdb_ids, seed=i))
                        sample = wait_for_sample(instance, dev, location, known, inserted)
                        results.append(sample)
                        print(f"sample {i + 1}: {sample.split()['insert -> deployed']:.1f} s", flush=True)
    return results


def report(results: list[Sample], interval: int) -> None:
    splits = [s.split() for s in results]
    names = list(splits[0])
    print(f"\n== insert -> deployed under the real daemon, sensor interval {interval} s, {len(results)} samples")
    print("\n| sample | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for i, split in enumerate(splits, 1):
        print(f"| {i} | " + " | ".join(f"{split[n]:.1f}" for n in names) + " |")
    print("| median | " + " | ".join(f"{statistics.median(s[n] for s in splits):.1f}" for n in names) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=5)
    parser.add_argument("--interval", type=positive_int, default=15, help="CFREC_RETRAIN_INTERVAL_SECONDS")
    parser.add_argument("--min-new-ratings", type=positive_int, default=DEFAULT_MIN_NEW_RATINGS)
    parser.add_argument("--dev", action="store_true", help="dg dev on SQLite instead of the production server")
    args = parse_real_data_args(parser, argv, "retrain_latency_bench.py", dagster=dg.__version__)
    movielens = args.datasets / "movielens"
    server = "dg dev (SQLite)" if args.dev else "deploy/serve.sh (PostgreSQL, queued runs)"
    print(f"server: {server}")
    report(run(args.samples, args.interval, args.min_new_ratings, movielens, args.dev), args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
