"""Benchmark publishing a real-size model version: local folder vs an S3-protocol server.

Usage: ``python bench/publish_bench.py [--repeat R] [--datasets DIR]``

Trains the production model on ML-100K (``serving_bench.train_on_real_data``), then, as medians
over ``--repeat`` runs in this one process: ``promote`` of a new version and ``rollback`` to a
kept one into a temp folder and into a local moto S3 server over HTTP (upload, read back,
manifest last), and the app's first load from each (the bucket: download + verify + cache,
then a cached load). The S3 figures are loopback: add your network's transfer time for ~10 MB.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
    positive_int,
    timed,
)
from serving_bench import train_on_real_data

from cfrec_serving.loader import load_deployed
from cfrec_serving.targets.manifest import Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.s3_server import s3_server


def bench_target(name: str, target, source: Path, repeat: int, cache: Path) -> dict[str, list[float]]:
    versions = [f"{name}-v{i:03d}" for i in range(repeat + 1)]
    pending = iter(versions)
    trained_at = datetime.now(timezone.utc)

    def promote_next() -> None:
        target.promote(source, Promotion(next(pending), metrics={"rmse_mean": 0.93}, counts={}, trained_at=trained_at))

    promote_next()  # a champion first, so each timed promote replaces one
    promote_s, _ = timed(promote_next, repeat)
    targets = itertools.cycle([versions[-2], versions[-1]])
    rollback_s, _ = timed(lambda: target.rollback(next(targets)), repeat)
    first_load, cached_load = [], []
    for i in range(repeat):
        fresh = cache / f"{name}-{i}"
        first_load += timed(lambda fresh=fresh: load_deployed(target, cache_dir=fresh), 1)[0]
        cached_load += timed(lambda fresh=fresh: load_deployed(target, cache_dir=fresh), 1)[0]
    return {"promote": promote_s, "rollback": rollback_s, "first load": first_load, "cached load": cached_load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=5)
    args = parse_real_data_args(parser, argv, "publish_bench.py")
    with tempfile.TemporaryDirectory(prefix="cfrec-publish-bench-") as scratch, s3_server() as server:
        scratch = Path(scratch)
        version, info = train_on_real_data(args.datasets / "movielens", scratch)
        megabytes = sum(p.stat().st_size for p in version.iterdir() if p.suffix in (".npz", ".pkl")) / 1e6
        print(f"version of {megabytes:.1f} MB (npz + pickles), trained on {info['ratings']:,} ratings")
        local = bench_target("local", open_target(scratch / "serving"), version, args.repeat, scratch / "cache")
        bucket = open_target(f"s3://{server.bucket}/bench/serving", **server.settings())
        remote = bench_target("s3", bucket, version, args.repeat, scratch / "cache")
    print(f"\n| operation, median of {args.repeat} | local folder ms | S3 server ms | S3 / local |")
    print("|---|---:|---:|---:|")
    for operation in local:
        lo, s3 = statistics.median(local[operation]), statistics.median(remote[operation])
        print(f"| {operation} | {1000 * lo:.1f} | {1000 * s3:.1f} | {s3 / lo:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
