"""The whole graph at ml-32m size: `dg launch --job train_and_deploy` on a generated archive.

Usage: ``python bench/graph_at_scale.py [--ratings 32000000] [--trainer auto] [--master local[2]]
[--driver-memory 8g] [--datasets DIR] [--keep DIR]``

Generates ``ml-32m.zip`` in ml-32m's shape (``seed_scale_bench.generate``: ~160 ratings per user,
~1 film per 370 ratings, half stars; not GroupLens' data; the most rated films carry
ml-latest-small's titles and ids so that ml-100k maps as it does for real), serves it with the shared ml-100k.zip
through a ``file://`` mirror, and launches the job exactly as `make materialize` does, in a fresh
``DAGSTER_HOME`` and data folder: ``CFREC_ML_LATEST_RELEASE=ml-32m``, ``CFREC_TRAINER`` as given
(``auto``: the memory pre-check picks the trainer and logs why). Every step runs in the
run's process, one step at a time (``dg launch`` executes in process); the bench samples the
resident memory of that process with its children (the embedded Spark JVM is one) every 0.5 s and
gives each step the peak between its STEP_START and its end. Prints the wall time and peak RSS of every step, the run's
total, the trainer chosen, the blocking checks' verdicts and what the serving folder serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from benchlib import REPO, add_datasets_argument, missing_movielens, print_preamble
from seed_scale_bench import generate

GB = 1e9


def process_tree() -> dict[int, list[int]]:
    """parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


class TreeSampler(threading.Thread):
    """Resident memory of ``root`` and all its descendants (the embedded Spark JVM is one), every
    0.5 s, as (time, bytes)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.samples, self.done = root, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            children = process_tree()
            total, todo = 0, [self.root]
            while todo:
                pid = todo.pop()
                total += rss(pid)
                todo += children.get(pid, [])
            self.samples.append((time.time(), total))

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((size for at, size in self.samples if start <= at <= end), default=0)


def graft_real_films(folder: Path, small_zip: Path) -> None:
    """Give the first generated films ml-latest-small's titles and IMDb/TMDB ids (the rest keep
    made-up ids that match nothing), so ml-100k maps to TMDB ids as it does against GroupLens'
    links.csv and the mapping's blocking check judges real coverage."""
    import pandas as pd

    with zipfile.ZipFile(small_zip) as bundle:
        real_links = pd.read_csv(bundle.open("ml-latest-small/links.csv"), dtype={"tmdbId": "Int64"})
        real_movies = pd.read_csv(bundle.open("ml-latest-small/movies.csv"))
    links, movies = pd.read_csv(folder / "links.csv"), pd.read_csv(folder / "movies.csv")
    links["imdbId"], links["tmdbId"] = 10_000_000 + links["movieId"], 10_000_000 + links["movieId"]
    real = min(len(links), len(real_links))
    links = links.astype({"tmdbId": "Int64"})
    links.loc[: real - 1, ["imdbId", "tmdbId"]] = real_links.loc[: real - 1, ["imdbId", "tmdbId"]].to_numpy()
    movies.loc[: real - 1, ["title", "genres"]] = real_movies.loc[: real - 1, ["title", "genres"]].to_numpy()
    links.to_csv(folder / "links.csv", index=False)
    movies.to_csv(folder / "movies.csv", index=False)


def make_archive(mirror: Path, n_ratings: int, small_zip: Path) -> dict:
    scratch = mirror / "ml-32m"
    scratch.mkdir(parents=True)
    started = time.perf_counter()
    generate(scratch, n_ratings)
    graft_real_films(scratch, small_zip)
    with zipfile.ZipFile(mirror / "ml-32m.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in ("ratings.csv", "movies.csv", "links.csv"):
            archive.write(scratch / name, f"ml-32m/{name}")
    shutil.rmtree(scratch)
    return {"seconds": time.perf_counter() - started, "zip_mb": (mirror / "ml-32m.zip").stat().st_size / 1e6}


def report(home: Path, data_dir: Path, sampler: TreeSampler, wall: float) -> int:
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from cfrec_serving.targets.target import open_target

    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.all_logs(run.run_id)
    starts, ends, checks, trainer = {}, {}, {}, None
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = record.timestamp
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            checks[evaluation.asset_check_key.name] = evaluation.passed
        elif event.event_type_value == "ASSET_MATERIALIZATION" and event.step_key == "svd_model":
            trainer = event.event_specific_data.materialization.metadata["trainer"].value
    print(f"\nrun {run.run_id[:8]}: {run.status.value}, {wall / 60:.1f} min wall; trainer {trainer}")
    print("\n| step | wall s | peak RSS GB (process + children) |")
    print("|---|---:|---:|")
    for step in sorted(starts, key=starts.get):
        end = ends.get(step, starts[step])
        print(f"| {step} | {end - starts[step]:.1f} | {sampler.peak(starts[step], end + 0.5) / GB:.2f} |")
    print(f"\nwhole run's peak: {sampler.peak() / GB:.2f} GB")
    failed = sorted(name for name, passed in checks.items() if not passed)
    print(f"checks: {sum(checks.values())}/{len(checks)} passed" + (f"; failed: {failed}" if failed else ""))
    manifest = open_target(data_dir / "serving").read_manifest() or {}
    print(
        f"serving: version {manifest.get('version')}, trainer {manifest.get('trainer')}, counts {manifest.get('counts')}"
    )
    return 0 if run.status.value == "SUCCESS" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_datasets_argument(parser)
    parser.add_argument("--ratings", type=int, default=32_000_000)
    parser.add_argument("--trainer", default="auto", choices=("auto", "spark", "surprise"))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", help="CFREC_SPARK_DRIVER_MEMORY (default: the resource's)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    if reason := missing_movielens(args.datasets):
        parser.exit(2, reason + "\n")
    print_preamble("graph_at_scale.py", sys.argv[1:] if argv is None else argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="cfrec-graph-scale-"))
    try:
        mirror, home, data_dir = root / "mirror", root / "home", root / "data"
        for folder in (mirror, home, data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        shutil.copyfile(args.datasets / "movielens" / "ml-100k.zip", mirror / "ml-100k.zip")
        made = make_archive(mirror, args.ratings, args.datasets / "movielens" / "ml-latest-small.zip")
        print(f"generated ml-32m.zip: {args.ratings:,} ratings, {made['zip_mb']:,.0f} MB in {made['seconds']:.0f} s")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CFREC_DATA_DIR": str(data_dir),
            "CFREC_MOVIELENS_BASE_URL": mirror.as_uri() + "/",
            "CFREC_ML_LATEST_RELEASE": "ml-32m",
            "CFREC_TRAINER": args.trainer,
            "CFREC_SPARK_MASTER": args.master,
            **({"CFREC_SPARK_DRIVER_MEMORY": args.driver_memory} if args.driver_memory else {}),
        }
        started = time.perf_counter()
        launch = subprocess.Popen(
            [str(Path(sys.executable).with_name("dg")), "launch", "--job", "train_and_deploy"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "launch.log", "w"),  # noqa: SIM115 (closed with the process)
        )
        sampler = TreeSampler(launch.pid)
        sampler.start()
        launch.wait()
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        return report(home, data_dir, sampler, wall)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
