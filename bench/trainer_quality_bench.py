"""Surprise SVD vs Spark ALS on the same folds of ml-latest-small: what cv_metrics reports for each.

Usage: ``python bench/trainer_quality_bench.py [--datasets DIR] [--master local[2]] [--als rank:iters:reg,...]``

The training table is what ``combined_ratings`` makes with ``CFREC_SEEDS=ml-latest`` (ml-latest-small
mapped to TMDB ids through its links.csv). Both trainers run ``cv_metrics``' own functions with
seed 42: Surprise's ``cross_validate_svd`` (seed settings) and the Spark trainer's
``cross_validate_table``, which cuts the very folds Surprise cuts, so each fold's RMSE is on the
same held-out ratings. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from benchlib import add_datasets_argument, missing_movielens, print_preamble


def training_table(archive: Path, scratch: Path):
    from cfrec_assets.pipeline.combine import combine, empty_app_ratings, ml_latest_seed
    from cfrec_assets.pipeline.movielens_files import parse_links, parse_ratings_csv

    with zipfile.ZipFile(archive) as bundle:
        for name in ("ratings.csv", "links.csv"):
            (scratch / name).write_bytes(bundle.read(f"ml-latest-small/{name}"))
    seed = ml_latest_seed(parse_ratings_csv(scratch / "ratings.csv"), parse_links(scratch / "links.csv"), Counter())
    return combine({"ml_latest": seed}, empty_app_ratings())[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_datasets_argument(parser)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--als", default="50:10:0.1,50:10:0.05,10:5:0.1", help="rank:iterations:reg_param, ...")
    args = parser.parse_args(argv)
    if reason := missing_movielens(args.datasets):
        print(reason)
        return 1
    print_preamble("trainer_quality_bench.py", sys.argv[1:] if argv is None else argv)

    from cfrec_assets.pipeline.spark import als
    from cfrec_assets.pipeline.spark.session import SparkSettings, spark_session
    from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, summarize_folds

    rows = []
    with tempfile.TemporaryDirectory(prefix="cfrec-quality-") as scratch:
        ratings = training_table(args.datasets / "movielens" / "ml-latest-small.zip", Path(scratch))
        print(f"training table: {len(ratings):,} ratings, {ratings['user_id'].nunique()} users")
        folds = cross_validate_svd(ratings, SVDParams(), 3, n_jobs=1, seed=42)
        rows.append(("Surprise SVD, seed settings (100 factors, 20 epochs)", folds))
        with spark_session(SparkSettings(master=args.master, driver_memory="2g")) as spark:
            for setting in args.als.split(","):
                rank, iterations, reg = setting.split(":")
                params = als.ALSParams(rank=int(rank), max_iter=int(iterations), reg_param=float(reg))
                folds = als.cross_validate_table(spark, ratings, params, 3, 42, 10, Path(scratch))
                rows.append((f"Spark ALS rank {rank}, {iterations} iterations, reg {reg} ({args.master})", folds))
    print("\n| trainer | RMSE fold 1 | fold 2 | fold 3 | mean | MAE | precision@10 | NDCG@10 | fit s / fold |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, folds in rows:
        mean = summarize_folds(folds)
        per_fold = " | ".join(f"{fold['rmse']:.4f}" for fold in folds)
        print(
            f"| {name} | {per_fold} | **{mean['rmse_mean']:.4f}** | {mean['mae_mean']:.4f} | "
            f"{mean['precision_at_10_mean']:.4f} | {mean['ndcg_at_10_mean']:.4f} | {mean['fit_seconds_mean']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
