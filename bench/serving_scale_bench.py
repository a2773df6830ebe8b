"""Serving at ml-32m size: load time, memory and top-N latency of a ``cf_model.npz`` of that shape.

Usage: ``python bench/serving_scale_bench.py [--users 200000] [--films 87000] [--ratings 32000000]
[--rank 50] [--app-users 1000] [--repeat 3]``

The npz is what a Spark-trained ml-32m version ships: random factors of rank ``--rank`` (float64,
as written), biases, ~160 seen films per user (CSR), user ids ``mll_<n>`` plus ``--app-users`` app
users (uuid-like ids, no seed prefix). A fresh child process loads it as the app and
``deployed_model`` do (``load_version``: sha256 of the bytes, parse, validate, id indexes) and
measures, medians over ``--repeat``: the load, resident memory after it, ``recommend`` for a known
user (all films, seen ones excluded), for an unknown user, and within a 1,000-film catalog,
``user_recommendations``' rows for the app users only, and the Markdown preview ``deployed_model``
records. Everything lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from benchlib import positive_int, print_preamble, timed


def write_npz(folder: Path, users: int, films: int, ratings: int, rank: int, app_users: int) -> dict:
    from cfrec_assets.schema import RATING_SCALE
    from cfrec_serving.artifacts import SERVING_FILE
    from cfrec_serving.model_arrays import ModelArrays, write_model_arrays
    from cfrec_serving.targets.folder import file_records

    rng = np.random.default_rng(0)
    seen_counts = rng.poisson(ratings / users, users).clip(1, films)
    user_ids = np.array(
        [f"mll_{i}" for i in range(users - app_users)] + [f"app-{i:08x}-4c1e" for i in range(app_users)]
    )
    arrays = ModelArrays.from_factors(
        user_ids=user_ids,
        item_ids=np.arange(1, films + 1, dtype=np.int64) * 7,
        global_mean=3.5,
        bu=rng.normal(0, 0.3, users),
        pu=rng.normal(0, 0.1, (users, rank)),
        bi=rng.normal(0, 0.3, films),
        qi=rng.normal(0, 0.1, (films, rank)),
        seen_indptr=np.concatenate([[0], np.cumsum(seen_counts)]).astype(np.int64),
        seen_indices=rng.integers(0, films, int(seen_counts.sum()), dtype=np.int32),
        rating_scale=np.array(RATING_SCALE),
    )
    started = time.perf_counter()
    write_model_arrays(arrays, folder / SERVING_FILE)
    return {
        "write_seconds": time.perf_counter() - started,
        "files": file_records(folder),
        "seen": int(seen_counts.sum()),
    }


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(f"{field}:"))


def measure(folder: Path, files: dict, repeat: int) -> dict:
    """In a fresh process: what loading and serving cost."""
    from cfrec_assets.pipeline.preview import app_users, recommendation_rows, recommendations_table
    from cfrec_serving.loader import load_version

    base = rss_mb()
    load, model = timed(lambda: load_version(folder, files, {"version": "bench"}), repeat)
    out = {"load_seconds": statistics.median(load), "rss_after_load_mb": rss_mb() - base, "peak_mb": rss_mb("VmHWM")}
    rng = np.random.default_rng(1)
    known = [str(u) for u in rng.choice(model._arrays.user_ids[: model.n_users - 1000], 300)]
    catalog = [int(i) for i in rng.choice(model._item_ids, 1000, replace=False)]

    def latencies(call) -> list[float]:
        samples = []
        for user in known:
            started = time.perf_counter()
            call(user)
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    for name, call in {
        "top10_known_user_ms": lambda user: model.recommend(user, 10),
        "top10_unknown_user_ms": lambda user: model.recommend("someone-new", 10),
        "top10_in_1000_film_catalog_ms": lambda user: model.recommend(user, 10, catalog=catalog),
        "predict_ms": lambda user: model.predict(user, catalog[0]),
    }.items():
        samples = latencies(call)
        out[name] = {"p50": statistics.median(samples), "p95": float(np.percentile(samples, 95))}
    seconds, users = timed(lambda: app_users(model), 1)
    out["app_users_seconds"], out["app_users"] = seconds[0], len(users)
    seconds, rows = timed(lambda: recommendation_rows(model, users, 10, datetime.now(timezone.utc)), 1)
    out["app_rows_seconds"], out["app_rows"] = seconds[0], len(rows)
    out["preview_seconds"] = timed(lambda: recommendations_table(model), 1)[0][0]
    return out


def measure_version(folder: Path, repeat: int) -> int:
    """The same measures on a trained version folder (its npz read in place, in a fresh process)."""
    from cfrec_serving.artifacts import SERVING_FILE
    from cfrec_serving.targets.folder import file_records

    files = {name: record for name, record in file_records(folder).items() if name == SERVING_FILE}
    with tempfile.TemporaryDirectory(prefix="cfrec-serving-scale-") as scratch:
        listed = Path(scratch) / "files.json"
        listed.write_text(json.dumps(files))
        command = [sys.executable, __file__, "--measure", str(folder), "--files", str(listed), "--repeat", str(repeat)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    print(f"\nversion {folder.name}: {files[SERVING_FILE]['bytes'] / 1e6:,.0f} MB npz\n")
    print_result(result, repeat, None)
    return 0


def print_result(result: dict, repeat: int, users: int | None) -> None:
    print("| measure | value |")
    print("|---|---:|")
    print(
        f"| load_version (sha256 + parse + validate + indexes), median of {repeat} | {result['load_seconds']:.2f} s |"
    )
    print(
        f"| resident memory after the load | {result['rss_after_load_mb']:,.0f} MB (peak {result['peak_mb']:,.0f} MB) |"
    )
    for name in ("top10_known_user_ms", "top10_unknown_user_ms", "top10_in_1000_film_catalog_ms", "predict_ms"):
        print(f"| {name.removesuffix('_ms')} p50 / p95 | {result[name]['p50']:.2f} / {result[name]['p95']:.2f} ms |")
    among = f" among {users:,}" if users else ""
    print(f"| app_users (the app's users{among}) | {result['app_users_seconds']:.2f} s |")
    print(
        f"| user_recommendations rows for {result['app_users']:,} app users | {result['app_rows_seconds']:.2f} s ({result['app_rows']:,} rows) |"
    )
    print(f"| deployed_model's recommendations preview | {result['preview_seconds']:.2f} s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=positive_int, default=200_000)
    parser.add_argument("--films", type=positive_int, default=87_000)
    parser.add_argument("--ratings", type=positive_int, default=32_000_000)
    parser.add_argument("--rank", type=positive_int, default=50)
    parser.add_argument("--app-users", type=positive_int, default=1_000)
    parser.add_argument("--repeat", type=positive_int, default=3)
    parser.add_argument(
        "--version", type=Path, help="measure this version folder instead (e.g. graph_at_scale.py --keep's)"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        files = json.loads((args.files or args.measure / "files.json").read_text())
        print(json.dumps(measure(args.measure, files, args.repeat)))
        return 0
    print_preamble("serving_scale_bench.py", sys.argv[1:] if argv is None else argv)
    if args.version:
        return measure_version(args.version, args.repeat)
    with tempfile.TemporaryDirectory(prefix="cfrec-serving-scale-") as scratch:
        folder = Path(scratch)
        written = write_npz(folder, args.users, args.films, args.ratings, args.rank, args.app_users)
        (folder / "files.json").write_text(json.dumps(written["files"]))
        command = [sys.executable, __file__, "--measure", str(folder), "--repeat", str(args.repeat)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    size = next(iter(written["files"].values()))["bytes"] / 1e6
    print(
        f"\nnpz: {args.users:,} users ({args.app_users:,} app users), {args.films:,} films, rank {args.rank}, "
        f"{written['seen']:,} seen entries: {size:,.0f} MB, written in {written['write_seconds']:.1f} s\n"
    )
    print_result(result, args.repeat, args.users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
