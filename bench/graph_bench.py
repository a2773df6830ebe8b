"""Benchmark the whole asset graph against the same work done by plain function calls.

Usage: ``python bench/graph_bench.py [--repeat R] [--datasets DIR] [--skip-multiprocess] [--skip-svd-order] [--skip-cv-jobs]``

Everything runs in this one Python process (the multiprocess executor's step workers are its
children), on the real MovieLens data, with a warm download cache (the archives are fetched
once from ``file://DIR/movielens/`` before timing). Medians over ``--repeat`` rounds; the
modes are interleaved round by round so that load from other work on the machine hits them
alike. Reported:

1. the whole graph, four ways:
   - ``baseline``: the asset functions themselves, called directly in the graph's order, each
     value handed to the next in memory (no IO manager, no event log, no checks); for
     ``deployed_model`` what it calls once its gate is open (the serving target's ``promote``). The
     asset checks are not called; their step time is reported separately;
   - ``dg.materialize``: every asset and check, in-process executor;
   - ``execute_job, in_process``: the same job through ``execute_job(reconstructable(...))``,
     the path the multiprocess run has to take; the control for the next line;
   - ``execute_job, multiprocess``: each of the 15 steps (8 assets, 7 checks) in its own
     process, at most ``os.cpu_count()`` at a time.
   All Dagster modes use one persistent SQLite instance each (created before timing, like a
   long-lived ``dg dev``), because the multiprocess executor cannot run on an ephemeral
   one. "in steps" sums STEP_START -> STEP_SUCCESS of the asset steps, "checks" of the check
   steps; wall minus both is orchestration (planning, event storage, process start-up);
2. SVD fit time on the user-sorted combined table vs the same rows shuffled, and whether the
   two models are identical (pu/qi/bu/bi compared aligned by raw user/movie id);
3. cross-validation with ``n_jobs`` 1 vs 2 (``CVConfig.n_jobs``), and whether the fold
   metrics agree.

DIR holds ``movielens/ml-100k.zip`` and ``movielens/ml-latest-small.zip`` (default:
``$CFREC_SHARED_DATASETS`` or ``../shared/datasets`` beside the repository). Everything is
written to a temporary folder removed afterwards; nothing lands in the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from benchlib import (  # bench/ is sys.path[0] when a script here runs
    parse_real_data_args,
    positive_int,
)

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.assets.model import CVConfig, SVDConfig, cv_metrics, svd_model
from cfrec_assets.defs.assets.movielens import (
    MovieLensLatestConfig,
    ml100k_raw,
    ml_latest_raw,
    movie_titles,
    tmdb_links,
)
from cfrec_assets.defs.assets.ratings import (
    CombineConfig,
    SupabaseRatingsConfig,
    catalog_ids,
    combined_ratings,
    supabase_ratings,
)
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.io_manager import LocalIOManager
from cfrec_assets.defs.resources import CatalogSource, DataStore, MovieLensSource, build_resources
from cfrec_assets.defs.supabase_io import SupabaseResource
from cfrec_assets.pipeline.promotion import promotion_of
from cfrec_assets.pipeline.training import SVDParams, cross_validate_svd, fit_svd

# The job factories below run again in every multiprocess step worker: they read these.
ENV_DATA_DIR = "CFREC_BENCH_DATA_DIR"
ENV_BASE_URL = "CFREC_BENCH_BASE_URL"
# Dagster's console logger at DEBUG prints every event; its cost is not what we measure.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The tuning study is not part of a retrain (it has its own job and bench/tuning_bench.py).
WITHOUT_TUNING = dg.AssetSelection.all() - dg.AssetSelection.groups("tuning")
ASSET_STEPS = frozenset(
    spec.key.to_user_string()
    for asset in ALL_ASSETS
    if not isinstance(asset, dg.AssetSpec)  # the external ratings table is observed, not run
    for spec in asset.specs
    if spec.group_name != "tuning"
)
N_STEPS = len(ASSET_STEPS) + sum(len(list(checks.check_specs)) for checks in ALL_CHECKS)


# --- the graph, as Dagster runs it ------------------------------------------------------------


def bench_resources(data_dir: str, base_url: str) -> dict:
    """``definitions``' wiring with the data dir and mirror given explicitly and Supabase left
    unconfigured (no app ratings), whatever the environment says."""
    return build_resources(
        {},
        io_manager=LocalIOManager(data_dir=data_dir),
        movielens=MovieLensSource(base_url=base_url),
        store=DataStore(data_dir=data_dir),
        catalog=CatalogSource(),
        supabase=SupabaseResource(),
    )


def _job(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        resources=bench_resources(os.environ[ENV_DATA_DIR], os.environ[ENV_BASE_URL]),
        jobs=[dg.define_asset_job("whole_graph", selection=WITHOUT_TUNING)],  # checks come along
        executor=executor,
    )
    return defs.resolve_job_def("whole_graph")


def in_process_job() -> dg.JobDefinition:
    return _job(dg.in_process_executor)


def multiprocess_job() -> dg.JobDefinition:
    return _job(dg.multiprocess_executor)


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """(asset steps, check steps): summed STEP_START -> STEP_SUCCESS seconds of the run."""
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS})
    started = {e.step_key: e.timestamp for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_START}
    ended = {e.step_key: e.timestamp for e in events if e.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS}
    if set(started) != set(ended) or len(ended) != N_STEPS:
        raise RuntimeError(f"run {run_id}: {len(ended)} of {N_STEPS} steps succeeded, {len(started)} started")
    assets = sum(ended[k] - started[k] for k in started if k in ASSET_STEPS)
    checks = sum(ended[k] - started[k] for k in started if k not in ASSET_STEPS)
    return assets, checks


# --- the graph, as plain function calls -----------------------------------------------------------


def baseline(data_dir: str, base_url: str) -> tuple[dict[str, float], pd.DataFrame]:
    """The asset functions themselves, called in the graph's order with each one's value handed
    to the next (no IO manager, no event log); seconds per asset, and the training table.

    ``deployed_model`` is the one asset whose body needs Dagster's event log (its gate reads the
    check results), so the baseline calls what it calls once the gate is open: the target's ``promote``.
    """
    resources = bench_resources(data_dir, base_url)
    movielens, store, catalog, supabase = (resources[k] for k in ("movielens", "store", "catalog", "supabase"))
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str, output: dg.Output):
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = now - clock, now
        return output.value

    context = dg.build_asset_context  # a fresh context per call, as each step gets one
    raw = lap("ml100k_raw", ml100k_raw(context(), movielens=movielens, store=store))
    latest = lap(
        "ml_latest_raw",
        ml_latest_raw(context(), config=MovieLensLatestConfig(), movielens=movielens, store=store),
    )
    links = lap("tmdb_links", tmdb_links(context(), ml100k_raw=raw, ml_latest_raw=latest))
    titles = lap("movie_titles", movie_titles(ml100k_raw=raw, tmdb_links=links, ml_latest_raw=latest))
    catalog_value = lap(
        "catalog_ids",
        catalog_ids(context(), catalog=catalog, supabase=supabase, tmdb_links=links, ml_latest_raw=latest),
    )
    app = lap("supabase_ratings", supabase_ratings(context(), config=SupabaseRatingsConfig(), supabase=supabase))
    combined = lap(
        "combined_ratings",
        combined_ratings(
            context(),
            config=CombineConfig(),
            ml100k_raw=raw,
            tmdb_links=links,
            ml_latest_raw=latest,
            movie_titles=titles,
            catalog_ids=catalog_value,
            supabase_ratings=app,
        ),
    )
    model = lap(
        "svd_model",
        svd_model(
            context(),
            config=SVDConfig(),
            store=store,
            spark=resources["spark"],
            combined_ratings=combined,
            movie_titles=titles,
        ),
    )
    metrics = lap(
        "cv_metrics", cv_metrics(context(), config=CVConfig(), store=store, spark=resources["spark"], svd_model=model)
    )
    resources["serving"].open(store.serving_dir).promote(Path(model.path), promotion_of(model, metrics))
    seconds["deployed_model"] = time.perf_counter() - clock
    return seconds, combined


# --- measurements -----------------------------------------------------------------------------


class GraphModes:
    """The four ways of running the graph, each on its own data dir and instance."""

    NAMES = ("baseline", "dg.materialize", "execute_job, in_process", "execute_job, multiprocess")

    def __init__(self, root: Path, cache: Path, base_url: str, stack: ExitStack):
        self.base_url = base_url
        self.data_dirs: dict[str, Path] = {}
        self.instances: dict[str, dg.DagsterInstance] = {}
        for index, name in enumerate(self.NAMES):
            data_dir = root / f"mode{index}"
            shutil.copytree(cache, data_dir / "cache")  # warm download cache
            self.data_dirs[name] = data_dir
            if name != "baseline":
                home = root / f"home{index}"
                home.mkdir()
                self.instances[name] = stack.enter_context(
                    dg.instance_for_test(temp_dir=str(home), set_dagster_home=False)
                )
        self.baseline_stages: list[dict[str, float]] = []

    def run(self, name: str) -> tuple[float, float, float]:
        """Run mode ``name`` once: (wall s, asset-step s, check-step s)."""
        data_dir = str(self.data_dirs[name])
        started = time.perf_counter()
        if name == "baseline":
            stages, _ = baseline(data_dir, self.base_url)
            wall = time.perf_counter() - started
            self.baseline_stages.append(stages)
            return wall, wall, 0.0
        instance = self.instances[name]
        if name == "dg.materialize":
            result = dg.materialize(
                [*ALL_ASSETS, *ALL_CHECKS],
                selection=WITHOUT_TUNING,
                resources=bench_resources(data_dir, self.base_url),
                instance=instance,
                run_config=QUIET,
            )
        else:
            os.environ[ENV_DATA_DIR], os.environ[ENV_BASE_URL] = data_dir, self.base_url
            factory = multiprocess_job if name.endswith("multiprocess") else in_process_job
            result = dg.execute_job(dg.reconstructable(factory), instance=instance, run_config=QUIET)
        wall = time.perf_counter() - started
        if not result.success:
            raise RuntimeError(f"{name}: run {result.run_id} failed")
        return (wall, *step_seconds(instance, result.run_id))


def svd_order(ratings: pd.DataFrame, repeat: int) -> None:
    """Fit time on the user-sorted table vs shuffled rows; are the models the same?"""
    params = SVDParams(**SVDConfig().model_dump())
    shuffled = ratings.sample(frac=1.0, random_state=0).reset_index(drop=True)
    times: dict[str, list[float]] = {"user-sorted": [], "shuffled": []}
    models = {}
    for _ in range(repeat):
        for label, frame in (("user-sorted", ratings), ("shuffled", shuffled)):
            algo, trainset, fit_seconds = fit_svd(frame, params)
            times[label].append(fit_seconds)
            models[label] = (algo, trainset)
    base = statistics.median(times["user-sorted"])
    print(f"\n== SVD fit on {len(ratings):,} ratings, same rows and params, median of {repeat}")
    print("\n| input order | median fit s | x user-sorted | runs (s) |")
    print("|---|---:|---:|---|")
    for label, runs in times.items():
        med = statistics.median(runs)
        print(f"| {label} | {med:.3f} | {med / base:.2f} | {', '.join(f'{r:.2f}' for r in runs)} |")
    print("\n" + compare_models(*models["user-sorted"], *models["shuffled"]))


def compare_models(algo_a, trainset_a, algo_b, trainset_b) -> str:
    """Compare two SVDs: raw arrays, then aligned by raw id (inner ids follow input order)."""
    same_raw = all(np.array_equal(getattr(algo_a, n), getattr(algo_b, n)) for n in ("pu", "qi", "bu", "bi"))
    users = [trainset_a.to_raw_uid(u) for u in trainset_a.all_users()]
    items = [trainset_a.to_raw_iid(i) for i in trainset_a.all_items()]
    ub = [trainset_b.to_inner_uid(u) for u in users]
    ib = [trainset_b.to_inner_iid(i) for i in items]
    diffs = {
        "pu": np.abs(algo_a.pu - algo_b.pu[ub]).max(),
        "qi": np.abs(algo_a.qi - algo_b.qi[ib]).max(),
        "bu": np.abs(algo_a.bu - algo_b.bu[ub]).max(),
        "bi": np.abs(algo_a.bi - algo_b.bi[ib]).max(),
    }
    sample = [(users[k % len(users)], items[(7 * k) % len(items)]) for k in range(2000)]
    est = np.array([[algo_a.predict(u, i).est, algo_b.predict(u, i).est] for u, i in sample])
    if same_raw and not any(diffs.values()):
        return "models: identical (pu, qi, bu, bi equal element for element)"
    return (
        "models: NOT identical. Surprise numbers users and movies in order of first appearance and "
        "draws the initial factors in that order, so shuffling changes the start point and the SGD "
        "update order. Aligned by raw id, max |diff|: "
        + ", ".join(f"{n} {v:.3g}" for n, v in diffs.items())
        + f"; predictions on {len(sample)} (user, movie) pairs: mean |diff| {np.abs(est[:, 0] - est[:, 1]).mean():.4f}, "
        f"max {np.abs(est[:, 0] - est[:, 1]).max():.4f} stars"
    )


def cv_jobs(ratings: pd.DataFrame, repeat: int) -> None:
    """CVConfig.n_jobs 1 vs 2 on the asset's defaults."""
    params, cv = SVDParams(**SVDConfig().model_dump()), CVConfig()
    times: dict[int, list[float]] = {1: [], 2: []}
    folds: dict[int, list[dict[str, float]]] = {}
    for _ in range(repeat):
        for n_jobs in times:
            started = time.perf_counter()
            folds[n_jobs] = cross_validate_svd(ratings, params, cv.n_folds, n_jobs, cv.seed, cv.k)
            times[n_jobs].append(time.perf_counter() - started)
    print(f"\n== {cv.n_folds}-fold cross-validation, median of {repeat}")
    print("\n| n_jobs | median s | x n_jobs=1 | runs (s) |")
    print("|---|---:|---:|---|")
    base = statistics.median(times[1])
    for n_jobs, runs in times.items():
        med = statistics.median(runs)
        print(f"| {n_jobs} | {med:.2f} | {med / base:.2f} | {', '.join(f'{r:.2f}' for r in runs)} |")
    same = [_without_timing(f) for f in folds[1]] == [_without_timing(f) for f in folds[2]]
    print(
        "\nfold metrics (RMSE, MAE, precision@k, NDCG@k) with n_jobs 1 and 2: " + ("identical" if same else "DIFFERENT")
    )


def _without_timing(fold: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in fold.items() if name != "fit_seconds"}


def graph(modes: GraphModes, repeat: int, names: tuple[str, ...]) -> None:
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for name in names:  # warm-up: imports, first-run caches; not counted
        modes.run(name)
    modes.baseline_stages.clear()
    for _ in range(repeat):
        for name in names:
            runs[name].append(modes.run(name))
    base = statistics.median(r[0] for r in runs["baseline"])
    print(f"\n== whole graph, warm download cache, median of {repeat} (one warm-up round not counted)")
    print("\n| mode | median s | x baseline | in steps s | checks s | orchestration s | runs (s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, results in runs.items():
        wall, assets, checks = (statistics.median(col) for col in zip(*results))
        print(
            f"| {name} | {wall:.2f} | {wall / base:.2f} | {assets:.2f} | {checks:.2f} | "
            f"{wall - assets - checks:.2f} | {', '.join(f'{r[0]:.2f}' for r in results)} |"
        )
    stages = {k: statistics.median(s[k] for s in modes.baseline_stages) for k in modes.baseline_stages[0]}
    print("\nbaseline by asset (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=3)
    parser.add_argument("--skip-multiprocess", action="store_true", help="the slowest mode (~1-2 min a run)")
    parser.add_argument("--skip-svd-order", action="store_true")
    parser.add_argument("--skip-cv-jobs", action="store_true")
    args = parse_real_data_args(parser, argv, "graph_bench.py", dagster=dg.__version__)
    base_url = (args.datasets / "movielens").resolve().as_uri() + "/"

    with tempfile.TemporaryDirectory(prefix="cfrec-graph-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        warm = DataStore(data_dir=str(root / "warm"))
        _, combined = baseline(warm.data_dir, base_url)  # fills the download cache every mode starts from
        modes = GraphModes(root, warm.cache_dir, base_url, stack)
        names = tuple(n for n in GraphModes.NAMES if not (args.skip_multiprocess and n.endswith("multiprocess")))
        graph(modes, args.repeat, names)
        if not args.skip_svd_order:
            svd_order(combined, args.repeat)
        if not args.skip_cv_jobs:
            cv_jobs(combined, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
