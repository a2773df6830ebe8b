"""How the training table reaches Spark: a staged parquet (embedded) vs Arrow over Spark Connect.

Usage: ``python bench/spark_handoff_bench.py [--sizes 1000000,5000000] [--repeat 3]``

For each size, a generated training table (``seed_scale_bench.generate``'s shape, indexed as the
Spark trainer indexes it) is handed over as ``svd_model`` hands it (``als.handed_to_spark``: the
table cached and counted on the Spark side) to (1) an embedded ``local[2]`` session, through the
3-column parquet written in a staging folder, and (2) a Spark Connect server on loopback
(``local[2]``, started from pyspark's distribution by ``cfrec_testkit.spark_servers``), through
Arrow batches over gRPC, as a remote cluster receives it. Medians of ``--repeat`` hand-offs per
size and mode; the server is on this machine, so add your network's transfer time (~12 bytes
per rating before compression).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import positive_int, print_preamble
from seed_scale_bench import generate


def table(size: int, folder: Path):
    import pandas as pd

    from cfrec_assets.pipeline.spark.als import IndexedRatings

    generate(folder, size)
    raw = pd.read_csv(folder / "ratings.csv")
    ratings = pd.DataFrame(
        {"user_id": "mll_" + raw["userId"].astype(str), "tmdb_id": raw["movieId"], "rating": raw["rating"]}
    )
    return IndexedRatings.of(ratings).table()


def hand_over(spark, frame, staging: Path | None, repeat: int) -> list[float]:
    from cfrec_assets.pipeline.spark.als import handed_to_spark

    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        with handed_to_spark(spark, frame, staging) as handed:
            seconds.append(time.perf_counter() - started)
            assert handed.count() == len(frame)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--repeat", type=positive_int, default=3)
    args = parser.parse_args(argv)
    print_preamble("spark_handoff_bench.py", sys.argv[1:] if argv is None else argv)

    from cfrec_assets.pipeline.spark.session import SparkSettings, spark_session
    from cfrec_testkit.spark_servers import spark_connect_server

    rows = []
    with tempfile.TemporaryDirectory(prefix="cfrec-handoff-") as scratch:
        root = Path(scratch)
        frames = {int(size): table(int(size), root) for size in args.sizes.split(",")}
        with spark_session(SparkSettings(master="local[2]", driver_memory="6g")) as spark:
            for size, frame in frames.items():
                rows.append((size, "embedded local[2]: staged parquet", hand_over(spark, frame, root, args.repeat)))
        with spark_connect_server(root / "connect", memory="6g", master="local[2]") as url:
            with spark_session(SparkSettings(remote=url, connect_timeout_seconds=60)) as spark:
                for size, frame in frames.items():
                    rows.append(
                        (size, "Spark Connect (loopback): Arrow over gRPC", hand_over(spark, frame, None, args.repeat))
                    )
    print("\n| ratings | hand-off | median s | runs (s) | ratings per s |")
    print("|---:|---|---:|---|---:|")
    for size, mode, seconds in rows:
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"| {size:,} | {mode} | {median:.2f} | {runs} | {size / median:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
