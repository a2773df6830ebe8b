"""Print the ML-100K -> TMDB mapping coverage on the real MovieLens zips.

Usage: ``python bench/mapping_report.py [--datasets DIR] [--show KIND ...]``

DIR holds ``movielens/ml-100k.zip`` and ``movielens/ml-latest-small.zip`` (default:
``$CFREC_SHARED_DATASETS`` or ``../shared/datasets`` beside the repository). The zips are read
into a temporary folder that is removed afterwards; nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
    timed,
)

from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.pipeline.tmdb_mapping import MATCH_KINDS, build_tmdb_mapping, mapping_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", nargs="*", default=[], choices=MATCH_KINDS, help="list the items of these kinds")
    args = parse_real_data_args(parser, argv, "mapping_report.py")
    folder = args.datasets / "movielens"
    archives = (folder / movielens.ML100K_ARCHIVE, folder / movielens.ML_LATEST_ARCHIVE)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch)
        for archive, members in zip(archives, (movielens.ML100K_MEMBERS, movielens.ML_LATEST_MEMBERS)):
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(target, members=members)
        items = movielens.parse_u_item(target / "ml-100k/u.item")
        ratings = movielens.parse_u_data(target / "ml-100k/u.data")
        links = movielens.parse_links(target / "ml-latest-small/links.csv")
        movies = movielens.parse_movies(target / "ml-latest-small/movies.csv")

    [seconds], mapping = timed(lambda: build_tmdb_mapping(items, links, movies), repeat=1)
    summary = mapping_summary(mapping, ratings)

    print(f"mapping built in {seconds:.2f} s")
    print(f"items mapped:   {summary['items_mapped']:>6} / {summary['items_total']}")
    print(f"ratings mapped: {summary['ratings_mapped']:>6} / {summary['ratings_total']}")
    print(
        f"embedded IMDb ids: {summary['embedded_imdb_ids']} in URLs, {summary['embedded_imdb_ids_in_links']} "
        f"in links.csv, {summary['embedded_imdb_ids_honoured']} honoured"
    )
    print(f"TMDB ids shared by several items: {summary['shared_tmdb_ids']}")
    for kind, count in summary["match_kinds"].items():
        print(f"  {kind:<16}{count:>6}")
    print("\nmost-rated items without a TMDB id:")
    print(summary["top_unmatched"].to_string(index=False))
    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", None):
        for kind in args.show:
            rows = mapping[mapping.match_kind == kind]
            print(f"\n{kind} ({len(rows)}):")
            print(rows[["ml100k_item_id", "ml100k_title", "matched_title", "tmdb_id"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
