"""Which seed ratings cover the films an app shows, and what each seed choice costs in accuracy.

Usage: ``python bench/seed_coverage_report.py [--catalog-size 260] [--years 2010-2018] [--datasets DIR]``

Catalog (stated, reproducible): the ``--catalog-size`` most-rated films of ml-latest-small
released in ``--years``, by TMDB id: a stand-in for "TMDB's current popular films". For ML-100K
alone, ml-latest-small alone and both: catalog films with at least 1 and at least 20 ratings,
and ratings on catalog films (``combine.catalog_coverage``); then 3-fold CV RMSE with the seed
settings (``training.cross_validate_svd``) of each seed choice on all its ratings, and on the
catalog-filtered table where a seed has catalog ratings. Uses the graph's own functions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
)

from cfrec_assets.pipeline import movielens_files as movielens
from cfrec_assets.pipeline.combine import catalog_coverage, combine, empty_app_ratings, ml100k_seed, ml_latest_seed
from cfrec_assets.pipeline.tmdb_mapping import build_tmdb_mapping, load_overrides, parse_title
from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, summarize_folds
from cfrec_assets.schema import SEED_ML100K, SEED_ML_LATEST


def load(datasets: Path, scratch: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    members = (*movielens.ML100K_MEMBERS, *movielens.ml_latest_members("ml-latest-small"))
    for archive in ("ml-100k.zip", "ml-latest-small.zip"):
        with zipfile.ZipFile(datasets / archive) as bundle:
            bundle.extractall(scratch, members=[m for m in members if m in bundle.namelist()])
    items = movielens.parse_u_item(scratch / "ml-100k/u.item")
    latest = scratch / "ml-latest-small"
    links, movies = movielens.parse_links(latest / "links.csv"), movielens.parse_movies(latest / "movies.csv")
    mapping = build_tmdb_mapping(items, links, movies, load_overrides())
    seeds = {
        "ML-100K": ml100k_seed(movielens.parse_u_data(scratch / "ml-100k/u.data"), mapping, Counter()),
        "ml-latest-small": ml_latest_seed(movielens.parse_ratings_csv(latest / "ratings.csv"), links, Counter()),
    }
    return seeds["ML-100K"], seeds["ml-latest-small"], movies.merge(links, on="movie_id")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-size", type=int, default=260)
    parser.add_argument("--years", default="2010-2018")
    args = parse_real_data_args(parser, argv, "seed_coverage_report.py")
    first, last = (int(y) for y in args.years.split("-"))
    with tempfile.TemporaryDirectory(prefix="cfrec-coverage-") as scratch:
        ml100k, latest, films = load(args.datasets / "movielens", Path(scratch))
    films = films.dropna(subset=["tmdb_id"]).assign(
        year=[parse_title(t).year for t in films.dropna(subset=["tmdb_id"])["title"]]
    )
    recent = set(films.loc[films["year"].between(first, last), "tmdb_id"].astype("int64"))
    popular = latest[latest["tmdb_id"].isin(recent)]["tmdb_id"].value_counts()
    catalog = sorted(popular.index[: args.catalog_size].tolist())
    print(f"\ncatalog: the {len(catalog)} most-rated ml-latest-small films released {first}-{last}, by TMDB id")
    both = pd.concat([ml100k, latest])
    cov = catalog_coverage({"ML-100K alone": ml100k, "ml-latest-small alone": latest, "both": both}, catalog)
    print("\n| seeds | catalog films rated | with 20+ ratings | ratings on catalog films |")
    print("|---|---:|---:|---:|")
    for name, c in cov.items():
        print(
            f"| {name} | {c['films_rated']} ({c['films_rated'] / len(catalog):.0%}) | {c['films_with_20_plus']} | {c['ratings_on_catalog']:,} |"
        )
    choices = {
        SEED_ML100K: {SEED_ML100K: ml100k},
        SEED_ML_LATEST: {SEED_ML_LATEST: latest},
        f"{SEED_ML100K},{SEED_ML_LATEST}": {SEED_ML100K: ml100k, SEED_ML_LATEST: latest},
    }
    print("\n| seeds (CFREC_SEEDS) | table | ratings | users | films | 3-fold CV RMSE | MAE |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, parts in choices.items():
        for label, wanted in (("all films", None), ("catalog only", catalog)):
            table, _ = combine(parts, empty_app_ratings(), wanted)
            if len(table) < 1000:
                print(f"| {name} | {label} | {len(table):,} | - | - | too few to train | - |")
                continue
            summary = summarize_folds(cross_validate_svd(table, SVDParams(), 3, -1))
            print(
                f"| {name} | {label} | {len(table):,} | {table['user_id'].nunique():,} | {table['tmdb_id'].nunique():,} "
                f"| {summary['rmse_mean']:.4f} | {summary['mae_mean']:.4f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
