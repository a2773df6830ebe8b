"""Benchmark writing every user's top-10 to PostgreSQL, as ``user_recommendations`` does.

Usage: ``python bench/recommendations_bench.py [--repeat R] [--n N] [--datasets DIR]``

Trains the production model on ML-100K (``serving_bench.train_on_real_data``), loads it with
``load_deployed``'s loader, computes every user's top-N (all 943 MovieLens users stand in for
app users) and replaces a temp PostgreSQL table's rows in one transaction (the table of deploy/user_recommendations.sql),
``--repeat`` times. Prints medians: computing the rows, and the transaction (lock, delete, COPY,
commit), with rows per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    REPO,
    parse_real_data_args,
    positive_int,
    timed,
)
from serving_bench import train_on_real_data

from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable
from cfrec_assets.pipeline.preview import recommendation_rows
from cfrec_serving.loader import load_version
from cfrec_serving.targets.folder import file_records
from cfrec_testkit.postgres import add_supabase_roles, postgres_server

TABLE_SQL = REPO / "deploy" / "user_recommendations.sql"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=5)
    parser.add_argument("--n", type=positive_int, default=10)
    args = parse_real_data_args(parser, argv, "recommendations_bench.py")
    with tempfile.TemporaryDirectory(prefix="cfrec-recs-bench-") as scratch, postgres_server() as server:
        version, _ = train_on_real_data(args.datasets / "movielens", Path(scratch))
        model = load_version(version, file_records(version), {"version": version.name})
        users = sorted(model.rated_counts())
        now = datetime.now(timezone.utc)
        compute_s, rows = timed(lambda: recommendation_rows(model, users, args.n, now), args.repeat)
        add_supabase_roles(server.conninfo)
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute(TABLE_SQL.read_text())
        table = RecommendationsTable(db_url=server.conninfo, table="user_recommendations")
        write_s, _ = timed(lambda: table.replace_all(rows), args.repeat)
    write = statistics.median(write_s)
    print(f"\n{len(users)} users x top-{args.n} = {len(rows):,} rows, median of {args.repeat}")
    print("\n| step | median ms | runs (ms) |")
    print("|---|---:|---|")
    for label, seconds in (
        ("compute every user's top-N", compute_s),
        ("replace the table in one transaction", write_s),
    ):
        print(
            f"| {label} | {1000 * statistics.median(seconds):.1f} | {', '.join(f'{1000 * s:.1f}' for s in seconds)} |"
        )
    print(f"\nwrite throughput: {len(rows) / write:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
