"""Hyper-parameter search for the Surprise SVD: a seeded Optuna TPE study on K-fold RMSE.

Pure functions (no Dagster), so the asset, the bench and the tests share them.

* A fixed held-out split (:func:`holdout_split`) is carved off first; the search only ever
  sees the rest, and :func:`evaluate_on_heldout` compares seed vs tuned params on it.
* The study lives in an Optuna journal file under a folder (one file per study), so a later
  call resumes it (adds trials) or restarts it. Journal rather than SQLite: it is one
  append-only file with its own file lock, needs no database schema/migrations, and several
  processes may write to it at once (SQLite RDB storage hits "database is locked" then).
* Surprise's SGD holds the GIL, so threads do not help. With ``n_jobs`` > 1, a :class:`FoldPool`
  of worker processes holds the folds; trials are asked in batches of ``n_jobs`` and their
  (trial, fold) fits shared out, so both cores stay busy and the seeded study still gives the
  same trials every run (bench/tuning_bench.py measures it against the alternatives).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from surprise import accuracy
from surprise.model_selection import KFold

from cfrec_assets.pipeline.ranking import DEFAULT_K, RELEVANCE_THRESHOLD, ndcg_at, precision_at, ranking_metrics
from cfrec_assets.pipeline.training import SVDParams, fit_svd, to_dataset

RESULT_VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
SEED_CV_ATTR = "seed_cv_rmse"
DATA_ATTR = "tuning_data_fingerprint"


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class TuningBounds:
    """Inclusive (low, high) per searched parameter; rates, regs and init_std_dev are sampled on a log scale.

    Biases and factors get their own learning rate and regularisation: on ML-100K the factors
    want far stronger regularisation than the biases (bench/tuning_bench.py).
    """

    n_factors: tuple[int, int] = (20, 150)
    n_epochs: tuple[int, int] = (15, 60)
    lr_bias: tuple[float, float] = (0.001, 0.02)
    lr_factor: tuple[float, float] = (0.005, 0.05)
    reg_bias: tuple[float, float] = (0.001, 0.1)
    reg_factor: tuple[float, float] = (0.03, 0.2)
    init_std_dev: tuple[float, float] = (0.001, 0.1)

    def __post_init__(self) -> None:
        for f in fields(self):
            low, high = getattr(self, f.name)
            if not 0 < low <= high:
                raise ValueError(f"bounds for {f.name} must satisfy 0 < low <= high, got ({low}, {high})")

    def suggest(self, trial: optuna.Trial) -> SVDParams:
        """Sample one point of the space and expand it into per-term SVD params."""
        lr_b = trial.suggest_float("lr_bias", *self.lr_bias, log=True)
        lr_f = trial.suggest_float("lr_factor", *self.lr_factor, log=True)
        reg_b = trial.suggest_float("reg_bias", *self.reg_bias, log=True)
        reg_f = trial.suggest_float("reg_factor", *self.reg_factor, log=True)
        return SVDParams(
            n_factors=trial.suggest_int("n_factors", *self.n_factors),
            n_epochs=trial.suggest_int("n_epochs", *self.n_epochs),
            init_std_dev=trial.suggest_float("init_std_dev", *self.init_std_dev, log=True),
            lr_bu=lr_b, lr_bi=lr_b, lr_pu=lr_f, lr_qi=lr_f,
            reg_bu=reg_b, reg_bi=reg_b, reg_pu=reg_f, reg_qi=reg_f,
        )  # fmt: skip


@dataclass(frozen=True)
class TuningResult:
    """JSON-friendly record of one tuning call; ``TuningResult(**json.loads(s))`` rebuilds it."""

    version: str
    study_name: str
    best_params: dict[str, Any]
    """Keyword arguments of :class:`SVDParams` (empty when no trial completed)."""
    best_cv_rmse: float | None
    seed_cv_rmse: float
    improved: bool
    """best_cv_rmse <= seed_cv_rmse - margin: only then does ``tuned`` training use best_params."""
    margin: float
    heldout: dict[str, dict[str, float | None]]
    """{"seed": metrics, "tuned": metrics} on the held-out split (metrics: rmse, mae, precision_at_k, ndcg_at_k)."""
    trials_run: int
    trials_total: int
    trials_pruned: int
    wall_seconds: float
    top_trials: list[dict[str, Any]]
    n_folds: int
    seed: int
    tuning_rows: int
    heldout_rows: int
    importances: dict[str, float] | None = None
    bounds: dict[str, list[float]] = field(default_factory=dict)


def holdout_split(ratings: pd.DataFrame, fraction: float = 0.1, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tuning part, held-out part): a rating is held out when a seeded hash of its (user_id, tmdb_id) is small.

    Hashing the ids, not drawing row positions, makes the choice independent of row order and
    stable as ratings are added: a rating held out once stays held out in later tables.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    keys = pd.DataFrame({"u": ratings["user_id"].astype(str), "i": ratings["tmdb_id"].astype("int64")})
    hashed = pd.util.hash_pandas_object(keys, index=False, hash_key=f"cfrec{seed:011d}"[-16:])
    held = (hashed.to_numpy() / float(2**64)) < fraction
    return ratings[~held].reset_index(drop=True), ratings[held].reset_index(drop=True)


def _fit_and_score(params: SVDParams, trainset, testset) -> float:
    """One fold of the search: fit on ``trainset``, RMSE on ``testset`` (tests wrap this to watch the ids)."""
    algo = params.build()
    algo.fit(trainset)
    return float(accuracy.rmse(algo.test(testset), verbose=False))


def kfold_splits(ratings: pd.DataFrame, n_folds: int, seed: int) -> list[tuple[Any, list]]:
    """The same shuffled K folds for every trial, so trials (and the seed params) are compared on equal terms."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    splits = KFold(n_splits=n_folds, random_state=seed, shuffle=True).split(to_dataset(ratings))
    # KFold builds each trainset from shuffled ratings, so its per-user rating tuples lie scattered in
    # memory; a pickle round trip lays them out user by user, and SGD over the copy runs ~2.7x faster
    # (1.1 s vs 0.4 s for 64 factors x 40 epochs on ML-100K). Folds sent to worker processes get this for free.
    return [(pickle.loads(pickle.dumps(train, pickle.HIGHEST_PROTOCOL)), test) for train, test in splits]


def cv_rmse(
    folds: list[tuple[Any, list]], params: SVDParams, n_jobs: int = 1, trial: optuna.Trial | None = None
) -> float:
    """Mean fold RMSE. Folds run ``n_jobs`` at a time; with a trial, the running mean after each
    batch is reported so the pruner can stop a hopeless trial early."""
    rmses: list[float] = []
    batch = max(1, n_jobs)
    for start in range(0, len(folds), batch):
        chunk = folds[start : start + batch]
        if batch == 1:
            rmses.extend(_fit_and_score(params, train, test) for train, test in chunk)
        else:
            rmses.extend(Parallel(n_jobs=batch)(delayed(_fit_and_score)(params, tr, te) for tr, te in chunk))
        if trial is not None and start + batch < len(folds):
            trial.report(float(np.mean(rmses)), step=len(rmses))
            if trial.should_prune():
                raise optuna.TrialPruned()
    return float(np.mean(rmses))


def journal_storage(folder: Path, study_name: str) -> optuna.storages.JournalStorage:
    """One append-only journal file per study under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(folder / f"{study_name}.journal"))
    return optuna.storages.JournalStorage(backend)


def open_study(folder: Path, study_name: str, seed: int, resume: bool, prune: bool = True) -> optuna.Study:
    """Load the study to add trials (``resume``), or delete it and start afresh."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the run's log
    storage = journal_storage(folder, study_name)
    exists = study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and not resume:
        optuna.delete_study(study_name=study_name, storage=storage)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    # Step = folds done; no pruning before 5 trials have finished all their folds.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if prune else optuna.pruners.NopPruner()
    return optuna.create_study(
        study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, direction="minimize",
        load_if_exists=True,
    )  # fmt: skip


def params_of(values: dict[str, Any], bounds: TuningBounds, seed: int) -> SVDParams:
    """The SVDParams a trial with these sampled values evaluated."""
    return replace(bounds.suggest(optuna.trial.FixedTrial(values)), random_state=seed)


def run_trials(
    study: optuna.Study,
    folds: list[tuple[Any, list]] | FoldPool,
    bounds: TuningBounds,
    seed: int,
    trials: int,
    timeout_seconds: float | None = None,
    prune: bool = True,
) -> None:
    """Add up to ``trials`` trials (fewer if the timeout passes first).

    With folds in this process, trials and their folds run one after another. With a
    :class:`FoldPool`, trials are asked in batches of one per worker and their (trial, fold) fits
    are shared out as workers free up; a batch is told in order, so the study stays seeded and
    deterministic whatever order the fits finish in.
    """
    if isinstance(folds, FoldPool):
        _run_batches(study, folds, bounds, seed, trials, timeout_seconds, prune)
        return

    def objective(trial: optuna.Trial) -> float:
        return cv_rmse(folds, replace(bounds.suggest(trial), random_state=seed), 1, trial if prune else None)

    study.optimize(objective, n_trials=trials, timeout=timeout_seconds, gc_after_trial=False)


_WORKER_FOLDS: list[tuple[Any, list]] = []  # set in each FoldPool worker process


def _init_worker(pickled_folds: bytes) -> None:
    global _WORKER_FOLDS
    _WORKER_FOLDS = pickle.loads(pickled_folds)


def _worker_fold(params: SVDParams, fold: int) -> float:
    train, test = _WORKER_FOLDS[fold]
    return _fit_and_score(params, train, test)


class FoldPool:
    """``n_jobs`` worker processes that receive the K folds once; a job is (params, fold index), so a
    trial costs a few hundred bytes of pickling instead of K trainsets.

    Each worker unpickles the folds into its fresh heap, where every user's ratings lie together:
    fits there run ~1.3x faster than on folds built (or even re-copied) in a process whose heap is
    fragmented by building them (bench/tuning_bench.py).
    """

    def __init__(self, ratings: pd.DataFrame, n_folds: int, seed: int, n_jobs: int) -> None:
        self.n_folds, self.n_jobs = n_folds, n_jobs
        pickled = pickle.dumps(kfold_splits(ratings, n_folds, seed), pickle.HIGHEST_PROTOCOL)
        context = multiprocessing.get_context("spawn")  # no fork of a process that may run threads (Dagster)
        self.executor = ProcessPoolExecutor(n_jobs, context, _init_worker, (pickled,))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def map(self, jobs: list[tuple[SVDParams, int]], on_result: Callable[[int, float], bool]) -> None:
        """Run jobs, at most one per worker at a time, in list order; ``on_result(index, rmse)``
        returns the job indices to drop (a pruned trial's remaining folds)."""
        queue, running, dropped = deque(range(len(jobs))), {}, set()
        while queue or running:
            while queue and len(running) < self.n_jobs:
                index = queue.popleft()
                if index not in dropped:
                    running[self.executor.submit(_worker_fold, *jobs[index])] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=running.get):
                dropped |= on_result(running.pop(future), future.result())


def pool_cv_rmse(pool: FoldPool, params: SVDParams) -> float:
    rmses: dict[int, float] = {}

    def keep(index: int, rmse: float) -> set[int]:
        rmses[index] = rmse
        return set()

    pool.map([(params, fold) for fold in range(pool.n_folds)], keep)
    return float(np.mean([rmses[i] for i in range(pool.n_folds)]))


def _run_batches(
    study: optuna.Study, pool: FoldPool, bounds: TuningBounds, seed: int, trials: int, timeout: float | None,
    prune: bool,
) -> None:  # fmt: skip
    started, done = time.perf_counter(), 0
    while done < trials and (timeout is None or time.perf_counter() - started < timeout):
        batch = [study.ask() for _ in range(min(pool.n_jobs, trials - done))]
        try:
            values = _run_batch(pool, batch, [replace(bounds.suggest(t), random_state=seed) for t in batch], prune)
        except BaseException:
            for trial in batch:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        for trial, value in zip(batch, values):  # told in ask order: the study's history does not depend on timing
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
        done += len(batch)


def _run_batch(pool: FoldPool, batch: list[optuna.Trial], params: list[SVDParams], prune: bool) -> list[float | None]:
    """Mean fold RMSE of each trial of the batch, None for a pruned one."""
    n, k = len(batch), pool.n_folds
    jobs = [(params[b], fold) for fold in range(k) for b in range(n)]  # fold-major: all reach each pruning step early
    results: dict[tuple[int, int], float] = {}
    rmses: list[list[float]] = [[] for _ in batch]
    pruned = [False] * n

    def on_result(index: int, rmse: float) -> set[int]:
        results[index % n, index // n] = rmse
        drop: set[int] = set()
        for b, trial in enumerate(batch):  # consume each trial's folds in fold order
            while not pruned[b] and (b, len(rmses[b])) in results:
                rmses[b].append(results[b, len(rmses[b])])
                if prune and len(rmses[b]) < k:
                    trial.report(float(np.mean(rmses[b])), step=len(rmses[b]))
                    pruned[b] = trial.should_prune()  # compares with completed trials only: deterministic
            if pruned[b]:
                drop |= {fold * n + b for fold in range(k)}
        return drop

    pool.map(jobs, on_result)
    return [None if pruned[b] else float(np.mean(rmses[b])) for b in range(n)]


def evaluate_on_heldout(
    tuning_part: pd.DataFrame,
    heldout: pd.DataFrame,
    params: SVDParams,
    k: int = DEFAULT_K,
    threshold: float = RELEVANCE_THRESHOLD,
) -> dict[str, float | None]:
    """Fit on the whole tuning part, then RMSE, MAE, precision@k and NDCG@k on the held-out ratings."""
    algo, _, _ = fit_svd(tuning_part, params)
    users, movies = heldout["user_id"].astype(str), heldout["tmdb_id"].astype("int64")
    testset = list(zip(users, movies, heldout["rating"].astype(float)))
    predictions = algo.test(testset)
    ranked = ranking_metrics(predictions, k=k, threshold=threshold)
    return {
        "rmse": float(accuracy.rmse(predictions, verbose=False)),
        "mae": float(accuracy.mae(predictions, verbose=False)),
        precision_at(k): ranked["precision_at_k"],
        ndcg_at(k): ranked["ndcg_at_k"],
    }


def tune(
    ratings: pd.DataFrame,
    folder: Path,
    study_name: str = "svd",
    *,
    trials: int = 100,
    timeout_seconds: float | None = None,
    n_folds: int = 5,
    seed: int = 42,
    resume: bool = True,
    holdout_fraction: float = 0.1,
    bounds: TuningBounds = TuningBounds(),
    n_jobs: int = 2,
    prune: bool = True,
    margin: float = 0.001,
    k: int = DEFAULT_K,
    importances: bool = True,
    log: Log | None = None,
) -> TuningResult:
    """Split off the held-out part, run (or continue) the study on the rest, compare seed vs best on held-out."""
    started = time.perf_counter()
    tuning_part, heldout = holdout_split(ratings, holdout_fraction, seed)
    seed_params = SVDParams(random_state=seed)
    study = open_study(folder, study_name, seed, resume, prune)
    before = len(study.trials)
    fingerprint = f"{int(pd.util.hash_pandas_object(tuning_part, index=False).sum()):x}"
    if study.user_attrs.setdefault(DATA_ATTR, fingerprint) != fingerprint and log is not None:
        log.warning(
            f"study {study_name} holds trials scored on another ratings table; their RMSEs are not comparable "
            "with the new ones (restart the study with resume=False)"
        )
    study.set_user_attr(DATA_ATTR, fingerprint)
    n_jobs = max(1, min(n_jobs, os.cpu_count() or 1))  # one fit per core: more would only oversubscribe
    with ExitStack() as stack:
        if n_jobs > 1:
            folds: list[tuple[Any, list]] | FoldPool = FoldPool(tuning_part, n_folds, seed, n_jobs)
            stack.callback(folds.close)
        else:
            folds = kfold_splits(tuning_part, n_folds, seed)
        # The seed params' CV RMSE on the same folds, computed once per study and kept with it.
        seed_key = f"{SEED_CV_ATTR}_{n_folds}_{seed}_{holdout_fraction}_{fingerprint}"
        seed_rmse = study.user_attrs.get(seed_key)
        if seed_rmse is None:
            seed_rmse = pool_cv_rmse(folds, seed_params) if isinstance(folds, FoldPool) else cv_rmse(folds, seed_params)
            study.set_user_attr(seed_key, seed_rmse)
        run_trials(study, folds, bounds, seed, trials, timeout_seconds, prune)

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best = min(complete, key=lambda t: t.value) if complete else None
    best_params = params_of(best.params, bounds, seed) if best else None
    best_rmse = float(best.value) if best else None
    improved = best_rmse is not None and best_rmse <= seed_rmse - margin
    heldout_cmp = {"seed": evaluate_on_heldout(tuning_part, heldout, seed_params, k)}
    if best_params is not None:
        heldout_cmp["tuned"] = evaluate_on_heldout(tuning_part, heldout, best_params, k)
    if log is not None:
        log.info(
            f"study {study_name}: {len(study.trials) - before} trials run, "
            f"best CV RMSE {best_rmse} vs seed params {seed_rmse:.4f}"
        )
    return TuningResult(
        version=f"{datetime.now(timezone.utc):{RESULT_VERSION_FORMAT}}-{study_name}-{len(study.trials)}",
        study_name=study_name,
        best_params=asdict(best_params) if best_params else {},
        best_cv_rmse=best_rmse,
        seed_cv_rmse=float(seed_rmse),
        improved=bool(improved),
        margin=margin,
        heldout=heldout_cmp,
        trials_run=len(study.trials) - before,
        trials_total=len(study.trials),
        trials_pruned=len(pruned),
        wall_seconds=round(time.perf_counter() - started, 3),
        top_trials=[
            {"number": t.number, "cv_rmse": round(float(t.value), 5), **t.params}
            for t in sorted(complete, key=lambda t: t.value)[:5]
        ],
        n_folds=n_folds,
        seed=seed,
        tuning_rows=len(tuning_part),
        heldout_rows=len(heldout),
        importances=_importances(study) if importances and len(complete) >= 2 else None,
        bounds={f.name: list(getattr(bounds, f.name)) for f in fields(bounds)},
    )


def _importances(study: optuna.Study) -> dict[str, float] | None:
    """PED-ANOVA importances: milliseconds for tens of trials, deterministic, and no scikit-learn (fANOVA needs it)."""
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. too few trials, or all with the same value
        return None
    return {name: round(float(v), 4) for name, v in scores.items() if math.isfinite(v)}


def params_for_training(result: TuningResult | None, mode: Literal["seed", "tuned"], log: Log) -> SVDParams:
    """``seed``: the seed script's params. ``tuned``: the study's best, unless there is none or it is no better."""
    if mode == "seed":
        return SVDParams()
    if mode != "tuned":
        raise ValueError(f"mode must be 'seed' or 'tuned', got {mode!r}")
    if result is None:
        log.warning("params mode 'tuned' but no svd_tuning result exists: training with the seed params")
        return SVDParams()
    if not result.improved or not result.best_params:
        log.warning(
            f"params mode 'tuned' but svd_tuning {result.version} found nothing better than the seed params "
            f"(best CV RMSE {result.best_cv_rmse} vs seed {result.seed_cv_rmse:.4f}, margin {result.margin}): "
            "training with the seed params"
        )
        return SVDParams()
    log.info(f"training with the tuned params of svd_tuning {result.version} (CV RMSE {result.best_cv_rmse:.4f})")
    return SVDParams(**result.best_params)
