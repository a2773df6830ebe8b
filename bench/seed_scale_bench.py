"""Scale benchmark: ml-latest-format seed data at 1M, 5M and 32M ratings (generated, not GroupLens'),
and many users with one rating each; measured peak memory beside the assets' pre-check estimate.

Usage: ``python bench/seed_scale_bench.py [--sizes 1000000,5000000,32000000] [--one-per-user 300000]
[--factors 100,400] [--cv-up-to 5000000] [--trainers surprise,spark] [--masters local[1],local[2]]
[--driver-memory 8g]``

Each case generates ratings.csv/movies.csv/links.csv, in ml-32m's shape for ``--sizes`` (~160
ratings per user, ~1 film per 370 ratings with a long tail, half stars, exactly N distinct (user,
film) pairs) or with N users who rated one film each for ``--one-per-user``, and runs the graph's
own functions, each step in a fresh child process: ``parse_ratings_csv`` (ml_latest_raw) and
``ml_latest_seed`` + ``combine`` (combined_ratings) once; then per ``--factors`` value the
``svd_model`` step (load the table from parquet, build the trainset, fit, save the version's
artifacts) and the ``cv_metrics`` step (load the table, 3-fold CV one fold at a time, load the
version's ``cf_model.npz``; sizes up to --cv-up-to). Wall seconds and the peak resident memory
growth of each step (over the child after its imports) are sampled every 20 ms and printed beside
``cfrec_assets.pipeline.memory``'s estimate for the step. A step the estimate says would not fit in the
memory available now is reported as refused instead of running into the OOM killer. Prints one
Markdown table; paste it into notes.

``--trainers spark`` (or ``surprise,spark``) adds the Spark trainer's steps, once per
``--masters`` entry, each in a fresh child: ``svd_model`` (the embedded JVM's start, the
hand-off, the ALS fit at its defaults: rank 50, 10 iterations, the factors collected, the version
written) and ``cv_metrics`` (3 folds on Spark, Surprise's folds, then the npz loaded). Their
memory is the whole process tree's (the JVM is a child process); "of which fit s" is the fit
alone (Surprise's ``algo.fit``, Spark's biases + ALS), for the ALS / Surprise ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_bytes(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
    except OSError:  # the process ended meanwhile
        return 0


def tree_rss_bytes() -> int:
    """RSS of this process and every descendant (the embedded Spark JVM is a child process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += rss_bytes(pid)
        todo += children.get(pid, [])
    return total


class Sampler:
    """Peak RSS during a block, sampled by a thread; with ``tree``, of the whole process tree
    (sampled every 200 ms: walking /proc costs more)."""

    def __init__(self, tree: bool = False) -> None:
        self.rss, self.interval = (tree_rss_bytes, 0.2) if tree else (rss_bytes, 0.02)

    def __enter__(self):
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def generate(folder: Path, n_ratings: int, seed: int = 0, one_per_user: bool = False) -> None:
    """ml-latest-format files with ``n_ratings`` ratings (sorted by user, then film); with
    ``one_per_user``, by ``n_ratings`` users who rated one film each."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_users, n_movies = max(50, n_ratings // 160), max(100, n_ratings // 370)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8  # a long tail of rarely rated films, like GroupLens'
    popularity /= popularity.sum()
    frame = pd.DataFrame({"userId": [], "movieId": []}, dtype="int64")
    if one_per_user:
        users = np.arange(1, n_ratings + 1)
        frame = pd.DataFrame({"userId": users, "movieId": rng.choice(n_movies, n_ratings, p=popularity) + 1})
    while len(frame) < n_ratings:  # draw (user, film) pairs until n_ratings distinct ones
        extra = int((n_ratings - len(frame)) * 1.3) + 1000
        drawn = pd.DataFrame(
            {"userId": rng.integers(1, n_users + 1, extra), "movieId": rng.choice(n_movies, extra, p=popularity) + 1}
        )
        frame = pd.concat([frame, drawn]).drop_duplicates()
    frame = frame.iloc[:n_ratings]
    bias = rng.normal(0, 0.6, n_movies + 1)
    stars = np.clip(np.rint(2 * (3.5 + bias[frame["movieId"]] + rng.normal(0, 0.9, len(frame)))), 1, 10) / 2
    frame = frame.assign(rating=stars, timestamp=1_500_000_000 + rng.integers(0, 10**8, len(frame)))
    frame.sort_values(["userId", "movieId"]).to_csv(folder / "ratings.csv", index=False, float_format="%.1f")
    ids = np.arange(1, n_movies + 1)
    pd.DataFrame({"movieId": ids, "title": [f"Film {i} (2015)" for i in ids], "genres": "Drama"}).to_csv(
        folder / "movies.csv", index=False
    )
    tmdb = pd.array(ids + 100_000, dtype="Int64")
    tmdb[::97] = pd.NA  # GroupLens leaves a few films without a tmdbId
    pd.DataFrame({"movieId": ids, "imdbId": ids, "tmdbId": tmdb}).to_csv(folder / "links.csv", index=False)


def measure(work, tree: bool = False) -> dict:
    """Wall seconds and peak RSS growth of ``work()`` in this (fresh) process (``tree``: with its
    children); what ``work`` returns (a dict) is added."""
    with Sampler(tree) as sample:
        extra = work() or {}
    return {"seconds": sample.seconds, "peak_growth_mb": (sample.peak - sample.start) / 1e6, **extra}


def prepare(size: int, one_per_user: bool, folder: Path) -> dict:
    """Child: generate the release, parse and combine it (measured); leave the table as parquet."""
    from cfrec_assets.pipeline.combine import combine, empty_app_ratings, ml_latest_seed
    from cfrec_assets.pipeline.movielens_files import parse_links, parse_ratings_csv
    from cfrec_assets.schema import SEED_ML_LATEST

    started = time.perf_counter()
    generate(folder, size, one_per_user=one_per_user)
    out: dict = {"generate_seconds": time.perf_counter() - started, "steps": {}}
    out["csv_mb"] = (folder / "ratings.csv").stat().st_size / 1e6
    parsed: dict = {}
    out["steps"]["parse ratings.csv (ml_latest_raw)"] = measure(
        lambda: parsed.update(ratings=parse_ratings_csv(folder / "ratings.csv"))
    )
    links = parse_links(folder / "links.csv")
    out["steps"]["map + combine (combined_ratings)"] = measure(
        lambda: parsed.update(
            combined=combine(
                {SEED_ML_LATEST: ml_latest_seed(parsed.pop("ratings"), links, Counter())}, empty_app_ratings()
            )[0]
        )
    )
    combined = parsed["combined"]
    combined.to_parquet(folder / "combined.parquet", index=False)  # what the IO manager hands on
    out["counts"] = {
        "ratings": len(combined),
        "users": int(combined["user_id"].nunique()),
        "items": int(combined["tmdb_id"].nunique()),
    }
    return out


def fit_step(folder: Path, factors: int) -> dict:
    """Child: what svd_model does after its pre-check, from loading its input to its saved version."""
    import pandas as pd

    from cfrec_assets.pipeline.training import SVDParams, fit_svd, save_artifacts

    def work():
        ratings = pd.read_parquet(folder / "combined.parquet")
        algo, trainset, fit_seconds = fit_svd(ratings, SVDParams(n_factors=factors))
        save_artifacts(algo, trainset, ratings, folder / "models", f"f{factors}")
        return {"fit_seconds": fit_seconds}

    return measure(work)


def spark_fit_step(folder: Path, master: str, driver_memory: str) -> dict:
    """Child: svd_model with the Spark trainer (ALS at its defaults): the JVM's start, the
    hand-off, the fit, the factors collected and the version written; memory of the process tree."""
    import pandas as pd

    from cfrec_assets.pipeline.spark.als import ALSParams, fit_table
    from cfrec_assets.pipeline.spark.session import SparkSettings, spark_session
    from cfrec_assets.pipeline.training import write_version

    def work():
        ratings = pd.read_parquet(folder / "combined.parquet")
        with spark_session(SparkSettings(master=master, driver_memory=driver_memory)) as spark:
            fit = fit_table(spark, ratings, ALSParams(), staging_root=folder)
        write_version(folder / "models", f"spark-{master}", fit.arrays, ratings)
        return {"fit_seconds": fit.fit_seconds, "handoff_seconds": fit.handoff_seconds}

    return measure(work, tree=True)


def spark_cv_step(folder: Path, master: str, driver_memory: str) -> dict:
    """Child: cv_metrics with the Spark trainer: 3 folds on Spark (Surprise's folds), then the
    version's npz loaded (its preview)."""
    import pandas as pd

    from cfrec_assets.pipeline.spark.als import ALSParams, cross_validate_table
    from cfrec_assets.pipeline.spark.session import SparkSettings, spark_session
    from cfrec_serving.loader import load_version
    from cfrec_serving.targets.folder import file_records

    def work():
        ratings = pd.read_parquet(folder / "combined.parquet")
        with spark_session(SparkSettings(master=master, driver_memory=driver_memory)) as spark:
            folds = cross_validate_table(spark, ratings, ALSParams(), 3, 42, staging_root=folder)
        version = folder / "models" / f"spark-{master}"
        load_version(version, file_records(version))
        return {"rmse": sum(fold["rmse"] for fold in folds) / len(folds)}

    return measure(work, tree=True)


def cv_step(folder: Path, factors: int) -> dict:
    """Child: what cv_metrics does after its pre-check: the folds one at a time, then the version loaded."""
    import pandas as pd

    from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd
    from cfrec_serving.loader import load_version
    from cfrec_serving.targets.folder import file_records

    def work():
        ratings = pd.read_parquet(folder / "combined.parquet")
        cross_validate_svd(ratings, SVDParams(n_factors=factors), 3, 1)
        version = folder / "models" / f"f{factors}"
        load_version(version, file_records(version))

    return measure(work)


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child {args} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(
    size: int,
    one_per_user: bool,
    factors: list[int],
    cv: bool,
    trainers: tuple[str, ...] = ("surprise",),
    masters: tuple[str, ...] = (),
    driver_memory: str | None = None,
) -> dict:
    """Every step of one case, each in a fresh child; estimates from ``cfrec_assets.pipeline.memory``."""
    from cfrec_assets.pipeline.memory import available_bytes, cross_validation_bytes, fit_bytes

    with tempfile.TemporaryDirectory(prefix="cfrec-scale-") as scratch:
        shape = ["--shape", "one-per-user"] if one_per_user else []
        case = run_child("--prepare", str(size), "--folder", scratch, *shape)
        n = case["counts"]
        rows = [{"step": name, **step} for name, step in case["steps"].items()]
        for f in factors if "surprise" in trainers else []:
            fit_estimate = fit_bytes(n["ratings"], n["users"], n["items"], f)
            cv_estimate = cross_validation_bytes(n["ratings"], n["users"], n["items"], f, 3, 1)
            for name, estimate, flag, wanted in (
                (f"svd_model, {f} factors", fit_estimate, "--fit", True),
                (f"cv_metrics 3 folds n_jobs 1, {f} factors", cv_estimate, "--cv", cv),
            ):
                if not wanted:
                    continue
                available = available_bytes()
                if available is not None and estimate > available:
                    rows.append({"step": name, "estimate_mb": estimate / 1e6, "refused": available / 1e6})
                    continue
                rows.append(
                    {"step": name, "estimate_mb": estimate / 1e6, **run_child(flag, scratch, "--factors", str(f))}
                )
        for master in masters if "spark" in trainers else []:
            spark = ("--master", master, *(("--driver-memory", driver_memory) if driver_memory else ()))
            rows.append({"step": f"svd_model, Spark ALS ({master})", **run_child("--spark-fit", scratch, *spark)})
            if cv:
                rows.append(
                    {"step": f"cv_metrics 3 folds on Spark ({master})", **run_child("--spark-cv", scratch, *spark)}
                )
        return {"size": size, "one_per_user": one_per_user, "csv_mb": case["csv_mb"], "counts": n, "rows": rows}


def print_case(result: dict) -> None:
    n = result["counts"]
    shape = "users with one rating each" if result["one_per_user"] else "ml-32m-shaped ratings"
    print(
        f"\n== {result['size']:,} {shape}: {n['ratings']:,} ratings after links, {n['users']:,} users, "
        f"{n['items']:,} films (ratings.csv {result['csv_mb']:,.0f} MB)"
    )
    print("\n| step | wall s | of which fit s | peak RSS growth MB | estimate MB | estimate / measured |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in result["rows"]:
        if "refused" in row:
            print(
                f"| {row['step']} | refused: estimate {row['estimate_mb']:,.0f} MB > {row['refused']:,.0f} MB available | | | | |"
            )
            continue
        measured, estimate = row["peak_growth_mb"], row.get("estimate_mb")
        ratio = f"{estimate / measured:.2f}" if estimate and measured > 0 else ""
        shown = f"{estimate:,.0f}" if estimate else ""
        fit = f"{row['fit_seconds']:.1f}" if "fit_seconds" in row else ""
        print(f"| {row['step']} | {row['seconds']:.1f} | {fit} | {measured:,.0f} | {shown} | {ratio} |")
        if "rmse" in row:
            print(f"| (its mean RMSE: {row['rmse']:.4f}) | | | | | |")


def main(argv: list[str] | None = None) -> int:
    from cfrec_assets.settings import SPARK_DRIVER_MEMORY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,32000000", help="ml-32m-shaped cases ('' for none)")
    parser.add_argument("--one-per-user", default="", help="cases of N users with one rating each, e.g. 300000")
    parser.add_argument("--factors", default="100", help="n_factors of the svd_model and cv_metrics steps")
    parser.add_argument("--cv-up-to", type=int, default=5_000_000)
    parser.add_argument("--trainers", default="surprise", help="surprise, spark or surprise,spark")
    parser.add_argument("--masters", default="local[1],local[2]", help="the Spark runs, one per master")
    parser.add_argument("--driver-memory", default=SPARK_DRIVER_MEMORY.default, help="the embedded Spark JVM's heap")
    parser.add_argument("--spark-fit", help=argparse.SUPPRESS)
    parser.add_argument("--spark-cv", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--cv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    if args.prepare:  # the children print one JSON line
        print(json.dumps(prepare(args.prepare, args.shape == "one-per-user", Path(args.folder))))
        return 0
    if args.spark_fit or args.spark_cv:
        step = spark_fit_step if args.spark_fit else spark_cv_step
        print(json.dumps(step(Path(args.spark_fit or args.spark_cv), args.master, args.driver_memory)))
        return 0
    if args.fit or args.cv:
        step = fit_step if args.fit else cv_step
        print(json.dumps(step(Path(args.fit or args.cv), factors[0])))
        return 0
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "reproduce: cd "
        + shlex.quote(str(REPO))
        + " && .venv/bin/python "
        + shlex.join(["bench/seed_scale_bench.py", *sys.argv[1:]])
    )
    cases = [(int(s), False) for s in args.sizes.split(",") if s] + [
        (int(s), True) for s in args.one_per_user.split(",") if s
    ]
    for size, one_per_user in cases:
        try:
            trainers, masters = tuple(args.trainers.split(",")), tuple(args.masters.split(","))
            print_case(
                run_case(size, one_per_user, factors, size <= args.cv_up_to, trainers, masters, args.driver_memory)
            )
        except RuntimeError as failed:
            print(f"size {size:,}: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
