"""Benchmark the Supabase read path: REST (paged) vs psycopg on the same rows.

Usage: ``python bench/supabase_bench.py [--rows N] [--repeat R] [--with-index] [--seed S]``

100,000 generated rating rows in a throwaway PostgreSQL, read page by page through the
PostgREST-subset test server (in its own process, as PostgREST would be) with the real
:class:`SupabaseResource` (page size 1000), against the psycopg reader on the same rows.
The insert -> retrain latency lives in ``bench/retrain_latency_bench.py``.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import psycopg
from benchlib import positive_int, print_preamble, timed  # bench/ is sys.path[0] when a script here runs

from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseResource
from cfrec_assets.defs.supabase_io.table import validate_ratings
from cfrec_testkit.postgres import create_ratings_table, insert_ratings, postgres_server
from cfrec_testkit.postgrest import TEST_API_KEY, postgrest_process

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


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the `finally`s that stop dagster and PostgreSQL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=positive_int, default=100_000, help="rows for the read benchmark")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed reads per reader (median reported)")
    parser.add_argument(
        "--with-index",
        action="store_true",
        help="index the ratings table on (created_at, id), the read order",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _exit_on_sigterm)
    print_preamble("supabase_bench.py", sys.argv[1:] if argv is None else argv, dagster=dg.__version__)
    bench_read(args.rows, args.repeat, args.seed, args.with_index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
