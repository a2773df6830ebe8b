"""Scale benchmark: ml-latest-format seed data at 1M, 5M and 32M ratings (generated, not GroupLens').

Usage: ``python bench/seed_scale_bench.py [--sizes 1000000,5000000,32000000] [--cv-up-to 5000000]``

For each size a fresh child process generates ratings.csv/movies.csv/links.csv in ml-32m's shape
(~160 ratings per user, ~1 film per 370 ratings with a long tail, half stars, exactly N
distinct (user, film) pairs) and runs the graph's own functions
step by step: ``parse_ratings_csv`` (ml_latest_raw), ``ml_latest_seed`` + ``combine``
(combined_ratings), Surprise's trainset build and SVD fit with the seed settings (svd_model), and
3-fold cross-validation one fold at a time (cv_metrics with n_jobs 1; sizes up to --cv-up-to).
Wall seconds and the peak resident memory growth of each step are sampled every 20 ms. Before a
step, the child applies the same memory pre-check as the assets and reports a refusal instead of
running into the OOM killer. Prints one Markdown table; paste it into notes.
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


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


class Sampler:
    """Peak RSS during a block, sampled by a thread."""

    def __enter__(self):
        self.start, self.peak, self._stop = rss_bytes(), rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def generate(folder: Path, n_ratings: int, seed: int = 0) -> None:
    """ml-latest-format files with ``n_ratings`` ratings (sorted by user, then film)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_users, n_movies = max(50, n_ratings // 160), max(100, n_ratings // 370)
    popularity = 1.0 / np.arange(1, n_movies + 1) ** 0.8  # a long tail of rarely rated films, like GroupLens'
    popularity /= popularity.sum()
    frame = pd.DataFrame({"userId": [], "movieId": []}, dtype="int64")
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


def child(size: int, cv: bool) -> dict:
    """Runs in a fresh process: every step at one size."""
    from cfrec_assets.pipeline.combine import combine, empty_real_ratings, ml_latest_seed
    from cfrec_assets.pipeline.memory import MemoryBudgetError, cross_validation_bytes, fit_bytes, require_memory
    from cfrec_assets.pipeline.movielens_files import parse_links, parse_ratings_csv
    from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, to_dataset

    out: dict = {"size": size, "steps": {}}
    with tempfile.TemporaryDirectory(prefix="cfrec-scale-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        generate(folder, size)
        out["generate_seconds"] = time.perf_counter() - started
        out["csv_mb"] = (folder / "ratings.csv").stat().st_size / 1e6
        steps = out["steps"]

        def step(name, work):
            with Sampler() as sample:
                result = work()
            steps[name] = {"seconds": sample.seconds, "peak_growth_mb": (sample.peak - sample.start) / 1e6}
            return result

        ratings = step("parse ratings.csv (ml_latest_raw)", lambda: parse_ratings_csv(folder / "ratings.csv"))
        links = parse_links(folder / "links.csv")
        combined, _ = step(
            "map + combine (combined_ratings)",
            lambda: combine({"ml_latest": ml_latest_seed(ratings, links, Counter())}, empty_real_ratings()),
        )
        ratings = None  # what combined_ratings hands on is the combined table only
        out["ratings"] = len(combined)
        try:
            require_memory(fit_bytes(len(combined)), "fit", "smaller seed")
        except MemoryBudgetError as refused:
            out["refused"] = str(refused)
            return out
        trainset = step("trainset build (svd_model)", lambda: to_dataset(combined).build_full_trainset())
        out["trainset"] = {"users": trainset.n_users, "items": trainset.n_items, "ratings": trainset.n_ratings}
        step("SVD fit, seed settings (svd_model)", lambda: SVDParams().build().fit(trainset))
        trainset = None
        if cv:
            try:
                require_memory(cross_validation_bytes(len(combined), 3, 1), "cv", "n_jobs 1")
            except MemoryBudgetError as refused:
                out["cv_refused"] = str(refused)
                return out
            step("3-fold CV, n_jobs 1 (cv_metrics)", lambda: cross_validate_svd(combined, SVDParams(), 3, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,32000000")
    parser.add_argument("--cv-up-to", type=int, default=5_000_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.cv)))
        return 0
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "reproduce: cd "
        + shlex.quote(str(REPO))
        + " && .venv/bin/python "
        + shlex.join(["bench/seed_scale_bench.py", *sys.argv[1:]])
    )
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(size), *(["--cv"] if size <= args.cv_up_to else [])]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"size {size:,}: child failed ({done.returncode}): {done.stderr[-2000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"\n== {size:,} generated ratings ({result['ratings']:,} after dedup; ratings.csv {result['csv_mb']:,.0f} MB)"
        )
        if "trainset" in result:
            t = result["trainset"]
            print(f"trainset: {t['users']:,} users, {t['items']:,} films, {t['ratings']:,} ratings")
        print("\n| step | wall s | peak RSS growth MB | MB per 1M ratings |")
        print("|---|---:|---:|---:|")
        for name, s in result["steps"].items():
            per = s["peak_growth_mb"] / (result["ratings"] / 1e6)
            print(f"| {name} | {s['seconds']:.1f} | {s['peak_growth_mb']:,.0f} | {per:,.0f} |")
        for key in ("refused", "cv_refused"):
            if key in result:
                print(f"\npre-check refused: {result[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
