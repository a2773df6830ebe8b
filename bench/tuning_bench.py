"""Benchmark the SVD hyper-parameter study on the real mapped ML-100K (no catalog filter).

Usage: ``python bench/tuning_bench.py [--datasets DIR] [--repeat 3] [--trials N] [--timeout S] [--folds K]
[--skip-parallel] [--parallel-trials N]``

1. parallelism: the same fixed-cost trials run serially, with folds in parallel processes
   (``n_jobs=2``, what ``tune`` does), and as two processes each adding trials to one shared
   journal-file study; plus two SVD fits in two threads vs one after another (does Surprise's
   SGD release the GIL?);
2. the seed params' 5-fold CV RMSE on the whole table;
3. ``--repeat`` fresh studies (``tune``, as the ``svd_tuning`` asset runs it) with wall times;
4. each distinct best params' 5-fold CV RMSE on the whole table, and the held-out comparison.

DIR holds ``movielens/ml-100k.zip`` and ``movielens/ml-latest-small.zip`` (default
``$CFREC_SHARED_DATASETS`` or ``../shared/datasets`` beside the repository). Everything is
written to a temporary folder removed afterwards.

Measured 2026-11-26, 2 shared cores, defaults (100 trials, 5-fold objective, seed 42, pruning on):

* seed params 5-fold CV RMSE 0.9375; tuned 0.9027 (all three studies found the same params:
  97 factors, 20 epochs, lr bias/factor 0.0020/0.0257, reg bias/factor 0.0053/0.0770, init_std_dev 0.0046);
* held-out (9,790 ratings): RMSE 0.9209 -> 0.8905, MAE 0.7252 -> 0.7004, precision@10 0.6742 -> 0.6772,
  NDCG@10 0.8661 -> 0.8822;
* study wall 93.6, 87.8, 106.6 s (median 93.6 s; 35 of 100 trials pruned), load average ~2 from other work;
* parallelism, 8 fixed-cost trials x 5 folds, median of 3, two runs (load ~2 / ~1): serial 31.3 / 31.2 s,
  joblib folds 18.5 / 18.9 s (1.69x / 1.65x: the 5th fold runs alone), two processes on one journal
  18.1 / 12.3 s (1.72x / 2.52x), the FoldPool work queue 17.4 / 16.0 s (1.80x / 1.94x, ~2 s of it pool
  start-up); two fits in two threads 1.92 / 1.90 s vs 1.90 / 1.89 s one after another (the SGD holds the
  GIL). Serial is handicapped: fits in a process whose heap built the folds run ~1.3x slower than in a
  fresh worker. Shared-journal processes are fastest when idle but need one sampler seed each and
  interleave by timing, so the study is not reproducible; the work queue is, keeps pruning, and runs
  exactly one fit per core, so ``tune`` uses it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from dataclasses import asdict, replace
from pathlib import Path

import optuna
import pandas as pd
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
    positive_int,
    timed,
)
from joblib import Parallel, delayed

from cfrec_assets.pipeline.combine import combine_ratings, empty_app_ratings
from cfrec_assets.pipeline.downloads import safe_extract
from cfrec_assets.pipeline.movielens_files import (
    ML100K_MEMBERS,
    ML_LATEST_MEMBERS,
    parse_links,
    parse_movies,
    parse_u_data,
    parse_u_item,
)
from cfrec_assets.pipeline.tmdb_mapping import build_tmdb_mapping, load_overrides
from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, fit_svd, summarize_folds
from cfrec_assets.pipeline.tuning_study import (
    FoldPool,
    TuningBounds,
    cv_rmse,
    holdout_split,
    kfold_splits,
    open_study,
    run_trials,
    tune,
)

SEED = 42


def combined_table(movielens: Path, work: Path) -> pd.DataFrame:
    """The combined ratings exactly as the asset graph builds them, with no app ratings and no catalog."""
    ml = safe_extract(movielens / "ml-100k.zip", work, ML100K_MEMBERS)
    latest = safe_extract(movielens / "ml-latest-small.zip", work, ML_LATEST_MEMBERS)
    items = parse_u_item(ml["ml-100k/u.item"])
    links, movies = parse_links(latest["ml-latest-small/links.csv"]), parse_movies(latest["ml-latest-small/movies.csv"])
    mapping = build_tmdb_mapping(items, links, movies, load_overrides())
    combined, _ = combine_ratings(parse_u_data(ml["ml-100k/u.data"]), mapping, empty_app_ratings(), None)
    return combined


def full_cv_rmse(ratings: pd.DataFrame, params: SVDParams) -> float:
    return summarize_folds(cross_validate_svd(ratings, params, n_folds=5, n_jobs=2, seed=SEED))["rmse_mean"]


# --- 1. parallelism ------------------------------------------------------------------------------


def _worker(folder: Path, name: str, folds, bounds: TuningBounds, seed: int, trials: int) -> None:
    # Each process needs its own sampler seed, or both would propose the same points.
    run_trials(open_study(folder, name, seed, resume=True, prune=False), folds, bounds, SEED, trials, prune=False)


def parallelism(ratings: pd.DataFrame, work: Path, trials: int, folds_k: int, repeat: int) -> None:
    tuning_part, _ = holdout_split(ratings, 0.1, SEED)
    folds = kfold_splits(tuning_part, folds_k, SEED)
    # Every trial costs the same (fixed size and epochs), so the modes do identical work.
    bounds = replace(TuningBounds(), n_factors=(64, 64), n_epochs=(40, 40))

    def study(mode: str):
        def run() -> None:
            folder = Path(tempfile.mkdtemp(dir=work))
            study = open_study(folder, mode, SEED, resume=True, prune=False)
            if mode == "serial":
                run_trials(study, folds, bounds, SEED, trials, prune=False)
            elif mode == "folds":
                study.optimize(lambda t: cv_rmse(folds, replace(bounds.suggest(t), random_state=SEED), 2), trials)
            elif mode == "trials":
                jobs = (delayed(_worker)(folder, mode, folds, bounds, SEED + i, trials // 2) for i in range(2))
                Parallel(n_jobs=2)(jobs)
            else:
                pool = FoldPool(tuning_part, folds_k, SEED, 2)  # its start-up (building the folds) is timed too
                try:
                    run_trials(study, pool, bounds, SEED, trials, prune=False)
                finally:
                    pool.close()

        return run

    modes = {
        "serial (1 process)": study("serial"),
        f"folds in parallel (joblib, {folds_k} folds in batches of 2)": study("folds"),
        "trials in parallel (2 processes, shared journal, 2 sampler seeds)": study("trials"),
        "work queue: 2 trials x folds over 2 workers holding the folds (tune)": study("queue"),
    }
    walls: dict[str, list[float]] = {label: [] for label in modes}
    for _ in range(repeat):  # interleaved, so load from other work on the machine hits every mode alike
        for label, run in modes.items():
            walls[label] += timed(run, 1)[0]
    rows = [(label, statistics.median(seconds)) for label, seconds in walls.items()]

    params = SVDParams(n_factors=64, n_epochs=40)
    train = tuning_part.iloc[: len(tuning_part) * 4 // 5]
    serial, _ = timed(lambda: [fit_svd(train, params) for _ in range(2)], repeat)

    def threaded() -> None:
        threads = [threading.Thread(target=fit_svd, args=(train, params)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    threads, _ = timed(threaded, repeat)
    print(f"\n## Parallelism: {trials} trials x {folds_k} folds (64 factors, 40 epochs),", end=" ")
    print(f"{os.cpu_count()} cores, median of {repeat}\n")
    print("| mode | wall s | s per trial | speed-up |\n|---|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / trials:.2f} | {rows[0][1] / seconds:.2f}x |")
    print(
        f"\nTwo SVD fits (64 factors, 40 epochs): one after another {statistics.median(serial):.2f} s, "
        f"two threads {statistics.median(threads):.2f} s"
    )


# --- 2-4. seed vs tuned ---------------------------------------------------------------------------


def seed_vs_tuned(ratings: pd.DataFrame, work: Path, args: argparse.Namespace) -> None:
    seed_rmse = full_cv_rmse(ratings, SVDParams())
    results = []
    for i in range(args.repeat):
        folder = work / f"study-{i}"
        result = tune(
            ratings, folder, "bench", trials=args.trials, timeout_seconds=args.timeout, n_folds=args.folds, seed=SEED,
            resume=False, n_jobs=2,
        )  # fmt: skip
        results.append(result)
        print(
            f"study {i + 1}: {result.wall_seconds:.1f} s, {result.trials_run} trials ({result.trials_pruned} pruned), "
            f"best CV RMSE {result.best_cv_rmse:.4f} (seed params {result.seed_cv_rmse:.4f} on the same folds)",
            flush=True,
        )
    tuned: dict[str, float] = {}
    for result in results:
        key = repr(sorted(result.best_params.items()))
        if key not in tuned:
            tuned[key] = full_cv_rmse(ratings, SVDParams(**result.best_params))
    walls = [r.wall_seconds for r in results]
    print(f"\n## Seed vs tuned on the mapped ML-100K ({len(ratings)} ratings, no catalog filter)\n")
    print(f"| | 5-fold CV RMSE (whole table) |\n|---|---|\n| seed params | {seed_rmse:.4f} |")
    for i, result in enumerate(results, 1):
        print(f"| tuned, study {i} | {tuned[repr(sorted(result.best_params.items()))]:.4f} |")
    last = results[-1]
    names = list(last.heldout["seed"])
    print(f"\nHeld-out split ({last.heldout_rows} ratings never seen by the search, fit on the other", end=" ")
    print(f"{last.tuning_rows}):")
    print("\n| params | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    for side in ("seed", "tuned"):
        print(f"| {side} | " + " | ".join(f"{last.heldout[side][n]:.4f}" for n in names) + " |")
    print(f"\nStudy wall seconds: {', '.join(f'{w:.1f}' for w in walls)}; median {statistics.median(walls):.1f}")
    print(f"Study: {args.trials} trials max, timeout {args.timeout} s, {args.folds}-fold objective, seed {SEED}")
    print(f"Best params (last study): {asdict(SVDParams(**last.best_params))}")
    print(f"Importances (last study): {last.importances}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=3)
    parser.add_argument("--trials", type=positive_int, default=100)
    parser.add_argument("--timeout", type=float, default=170.0)
    parser.add_argument("--folds", type=positive_int, default=5)
    parser.add_argument("--skip-parallel", action="store_true")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--parallel-trials", type=positive_int, default=8)
    args = parse_real_data_args(parser, argv, "tuning_bench.py", optuna=optuna.__version__)
    movielens = args.datasets / "movielens"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cfrec-tuning-bench-") as tmp:
        work = Path(tmp)
        ratings = combined_table(movielens, work / "movielens")
        if not args.skip_parallel:
            parallelism(ratings, work, args.parallel_trials, args.folds, args.repeat)
        if not args.skip_study:
            seed_vs_tuned(ratings, work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
