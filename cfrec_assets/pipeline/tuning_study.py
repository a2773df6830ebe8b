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

import json
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
from cfrec_serving.storage import read_json, write_json

RESULT_VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
RESULT_FILE = "latest_result.json"
"""Beside the study journals: the latest study's result, which ``svd_model`` reads (``load_result``)."""
SEED_CV_ATTR = "seed_cv_rmse"
DATA_ATTR = "tuning_data_fingerprint"


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


SVD_FIELDS = {
    "n_factors": ("n_factors",),
    "n_epochs": ("n_epochs",),
    "lr_bias": ("lr_bu", "lr_bi"),
    "lr_factor": ("lr_pu", "lr_qi"),
    "reg_bias": ("reg_bu", "reg_bi"),
    "reg_factor": ("reg_pu", "reg_qi"),
    "init_std_dev": ("init_std_dev",),
}
"""Each searched parameter and the SVDParams fields it sets (see :meth:`TuningBounds.suggest`)."""


def _outside(name: str, value: Any, low: float, high: float, integer: bool) -> list[str]:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        return [f"{name}={value!r} is not {'an integer' if integer else 'a finite number'}"]
    # A sampled float may differ from its bound in the last bit.
    slack = 0 if integer else 1e-9 * max(abs(low), abs(high))
    return [] if low - slack <= value <= high + slack else [f"{name}={value} outside [{low}, {high}]"]


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

    def outside(self, values: dict[str, Any]) -> list[str]:
        """What is wrong with a trial's sampled ``values`` (keyed by the names above) under these
        bounds: a missing or non-finite value, or one outside its range. Empty when all is well."""
        problems = []
        for f in fields(self):
            low, high = getattr(self, f.name)
            problems += _outside(f.name, values.get(f.name), low, high, integer=isinstance(low, int))
        return problems

    def outside_params(self, params: dict[str, Any]) -> list[str]:
        """As :meth:`outside`, for the keyword arguments of :class:`SVDParams` a trial expands to."""
        problems = []
        for name, svd_fields in SVD_FIELDS.items():
            low, high = getattr(self, name)
            for svd_field in svd_fields:
                problems += _outside(svd_field, params.get(svd_field), low, high, integer=isinstance(low, int))
        unknown = set(params) - {f.name for f in fields(SVDParams)}
        return problems + ([f"unknown params {sorted(unknown)}"] if unknown else [])

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
    """best_cv_rmse <= seed_cv_rmse - margin and the best params' held-out RMSE is below the seed
    params': only then does ``tuned`` training use best_params (``verdict`` says why not)."""
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
    verdict: str = ""
    """Why the best params are (not) used for training."""
    trials_ignored: int = 0
    """Completed trials of the stored study whose value is not finite or whose params are outside
    ``bounds`` (a forged journal, or a study resumed with narrower bounds): never the best."""
    journal_moved_aside: str | None = None
    """A damaged journal found at the start, moved aside to this path (a new study was started)."""


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


# What Optuna raises replaying lines that are JSON but not its log records (its own `assert` included).
_REPLAY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError)


def journal_damage(path: Path) -> str | None:
    """Why the journal at ``path`` cannot be trusted (None: it is sound or absent). A crash
    mid-write leaves a last line without its newline; Optuna skips it, but the next append glues
    onto it and every later read fails, so it counts as damage like a line that is not JSON."""
    if not path.exists():
        return None
    with open(path, "rb") as journal:
        for number, line in enumerate(journal, 1):
            if not line.endswith(b"\n"):
                return f"line {number} is truncated (no newline)"
            try:
                record = json.loads(line)
            except ValueError:
                return f"line {number} is not JSON"
            if not isinstance(record, dict):
                return f"line {number} is not a journal record"
    return None


def open_journal(folder: Path, study_name: str) -> tuple[optuna.storages.JournalStorage, tuple[Path, str] | None]:
    """The study's journal storage, and (where it was moved, why) when a damaged journal was kept
    aside as ``<study>.journal.damaged-<UTC time>`` and a new one started. The journal's own lock
    is held meanwhile, so a healthy journal being appended to is never mistaken for a damaged one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{study_name}.journal"
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        damage = journal_damage(path)
        if damage is None:
            try:
                return journal_storage(folder, study_name), None  # replays every record
            except _REPLAY_ERRORS as error:
                damage = f"Optuna cannot replay it ({type(error).__name__}: {str(error)[:200]})"
        aside = path.with_name(f"{path.name}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
        path.rename(aside)
    finally:
        lock.release()
    return journal_storage(folder, study_name), (aside, damage)


def open_study(
    folder: Path,
    study_name: str,
    seed: int,
    resume: bool,
    prune: bool = True,
    storage: optuna.storages.JournalStorage | None = None,
) -> optuna.Study:
    """Load the study to add trials (``resume``), or delete it and start afresh (``storage``:
    an :func:`open_journal` storage, opened here by default)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the run's log
    storage = storage or open_journal(folder, study_name)[0]
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
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> None:
    """Add up to ``trials`` trials (fewer if the timeout passes first); ``on_trial`` is called
    with each one once it is told (completed or pruned), e.g. to log progress.

    With folds in this process, trials and their folds run one after another. With a
    :class:`FoldPool`, trials are asked in batches of one per worker and their (trial, fold) fits
    are shared out as workers free up; a batch is told in order, so the study stays seeded and
    deterministic whatever order the fits finish in.
    """
    if isinstance(folds, FoldPool):
        _run_batches(study, folds, bounds, seed, trials, timeout_seconds, prune, on_trial)
        return

    def objective(trial: optuna.Trial) -> float:
        return cv_rmse(folds, replace(bounds.suggest(trial), random_state=seed), 1, trial if prune else None)

    callbacks = [lambda _, trial: on_trial(trial)] if on_trial else None
    study.optimize(objective, n_trials=trials, timeout=timeout_seconds, gc_after_trial=False, callbacks=callbacks)


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
    prune: bool, on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
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
                told = study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                told = study.tell(trial, value)
            if on_trial is not None:
                on_trial(told)
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
    storage, moved = open_journal(folder, study_name)
    if moved is not None and log is not None:
        log.warning(
            f"tuning journal {folder / f'{study_name}.journal'} is damaged ({moved[1]}): kept aside as "
            f"{moved[0]}; starting a new study"
        )
    study = open_study(folder, study_name, seed, resume, prune, storage)
    before = len(study.trials)
    fingerprint = f"{int(pd.util.hash_pandas_object(tuning_part, index=False).sum()):x}"
    if study.user_attrs.setdefault(DATA_ATTR, fingerprint) != fingerprint and log is not None:
        log.warning(
            f"study {study_name} holds trials scored on another ratings table; their RMSEs are not comparable "
            "with the new ones (restart the study with resume=False)"
        )
    study.set_user_attr(DATA_ATTR, fingerprint)
    n_jobs = max(1, min(n_jobs, os.cpu_count() or 1))  # one fit per core: more would only oversubscribe
    say = log.info if log is not None else (lambda msg: None)
    say(
        f"study {study_name}: {trials} trial(s) of {n_folds}-fold CV on {len(tuning_part):,} ratings "
        f"({len(heldout):,} held out), {n_jobs} worker(s); {before} trial(s) already in the study"
    )
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
            say(f"scoring the seed params on the same {n_folds} folds")
            seed_rmse = pool_cv_rmse(folds, seed_params) if isinstance(folds, FoldPool) else cv_rmse(folds, seed_params)
            study.set_user_attr(seed_key, seed_rmse)
        say(f"seed params: CV RMSE {seed_rmse:.4f}")
        progress = _trial_progress(study, trials, n_folds, say)
        run_trials(study, folds, bounds, seed, trials, timeout_seconds, prune, on_trial=progress)

    complete, ignored = [], []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        problems = _trial_problems(trial, bounds)
        (ignored if problems else complete).append((trial, problems))
    complete = [trial for trial, _ in complete]
    if ignored and log is not None:
        examples = "; ".join(f"trial {t.number}: {', '.join(p)}" for t, p in ignored[:3])
        log.warning(
            f"study {study_name}: ignored {len(ignored)} completed trial(s) with a non-finite value or params "
            f"outside the configured bounds, e.g. {examples}"
        )
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best = min(complete, key=lambda t: t.value) if complete else None
    best_params = params_of(best.params, bounds, seed) if best else None
    best_rmse = float(best.value) if best else None
    say(f"held-out comparison: fitting the seed{' and best' if best_params else ''} params on the tuning part")
    heldout_cmp = {"seed": evaluate_on_heldout(tuning_part, heldout, seed_params, k)}
    if best_params is not None:
        heldout_cmp["tuned"] = evaluate_on_heldout(tuning_part, heldout, best_params, k)
    verdict = _verdict(best_rmse, float(seed_rmse), margin, heldout_cmp)
    improved = verdict.startswith(TUNED_VERDICT)
    if log is not None:
        log.info(
            f"study {study_name}: {len(study.trials) - before} trials run, "
            f"best CV RMSE {best_rmse} vs seed params {seed_rmse:.4f}; {verdict}"
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
        verdict=verdict,
        trials_ignored=len(ignored),
        journal_moved_aside=str(moved[0]) if moved else None,
    )


def _trial_progress(
    study: optuna.Study, trials: int, n_folds: int, say: Callable[[str], Any]
) -> Callable[[optuna.trial.FrozenTrial], None]:
    """One log line per finished trial: ``trial 7/100 (#57): CV RMSE 0.9123; best 0.9050 (#41)``."""
    done = 0
    best: list[optuna.trial.FrozenTrial] = []

    def report(trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1
        if trial.state == optuna.trial.TrialState.COMPLETE and (not best or trial.value < best[0].value):
            best[:] = [trial]
        if trial.state == optuna.trial.TrialState.PRUNED:
            steps = trial.intermediate_values
            outcome = f"pruned after {len(steps)}/{n_folds} folds"
            if steps:
                outcome += f" (running RMSE {steps[max(steps)]:.4f})"
        elif trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"CV RMSE {trial.value:.4f}"
        else:
            outcome = trial.state.name.lower()
        so_far = f"; best this run {best[0].value:.4f} (#{best[0].number})" if best else ""
        say(f"trial {done}/{trials} (#{trial.number}): {outcome}{so_far}")

    return report


TUNED_VERDICT = "tuned params used"


def _trial_problems(trial: optuna.trial.FrozenTrial, bounds: TuningBounds) -> list[str]:
    """Why a completed trial cannot be the best: the journal is a file anyone with write access
    can append to, so its values and params are checked, not trusted."""
    value_problem = [] if trial.value is not None and math.isfinite(trial.value) else [f"value {trial.value}"]
    return value_problem + bounds.outside(trial.params)


def _verdict(best_rmse: float | None, seed_rmse: float, margin: float, heldout: dict[str, dict]) -> str:
    """Whether the best params are used (the text starts with ``TUNED_VERDICT``) and why (not): they
    must beat the seed params by ``margin`` in CV and also on the held-out split the search never saw."""
    if best_rmse is None:
        return "no valid completed trial: seed params used"
    if not best_rmse <= seed_rmse - margin:
        return (
            f"best CV RMSE {best_rmse:.4f} does not beat the seed params' {seed_rmse:.4f} by {margin}: seed params used"
        )
    tuned, seed = heldout["tuned"]["rmse"], heldout["seed"]["rmse"]
    if not tuned < seed:  # NaN fails too
        return f"held-out RMSE {tuned:.4f} is not below the seed params' {seed:.4f}: seed params used"
    return f"{TUNED_VERDICT}: CV RMSE {best_rmse:.4f} vs {seed_rmse:.4f}, held-out RMSE {tuned:.4f} vs {seed:.4f}"


def _importances(study: optuna.Study) -> dict[str, float] | None:
    """PED-ANOVA importances: milliseconds for tens of trials, deterministic, and no scikit-learn (fANOVA needs it)."""
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. too few trials, or all with the same value
        return None
    return {name: round(float(v), 4) for name, v in scores.items() if math.isfinite(v)}


def save_result(result: TuningResult, folder: Path) -> Path:
    """Write ``result`` as ``<folder>/latest_result.json`` (atomically): the params the next
    retrain on this data folder trains with, whichever Dagster instance runs it."""
    return write_json(asdict(result), Path(folder) / RESULT_FILE)


def load_result(folder: Path) -> TuningResult | None:
    """The latest study's result in ``folder``; None when no study has run there."""
    path = Path(folder) / RESULT_FILE
    try:
        payload = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}): run the tune_svd job again, or delete it") from None
    try:
        result = TuningResult(**payload)
        SVDParams(**result.best_params)  # the params a retrain would build
    except TypeError as error:
        raise ValueError(f"{path} is not a tuning result ({error}): run the tune_svd job again, or delete it") from None
    return result


def tuned_params(result: TuningResult | None) -> tuple[SVDParams | None, str]:
    """(the study's best params, why) when ``tuned`` training may use them, else (None, why not).

    Checked again here, not only in :func:`tune`: a result stored by an older version, or from a
    journal nobody validated, must not train the model with params outside the study's bounds
    or ones that lost to the seed params on the held-out split.
    """
    if result is None:
        return None, "no svd_tuning result exists"
    where = f"svd_tuning {result.version}"
    if not result.improved or not result.best_params:
        why = result.verdict or (
            f"best CV RMSE {result.best_cv_rmse} vs seed {result.seed_cv_rmse:.4f}, margin {result.margin}"
        )
        return None, f"{where} found nothing better than the seed params ({why})"
    try:
        problems = TuningBounds(**{name: tuple(r) for name, r in result.bounds.items()}).outside_params(
            result.best_params
        )
    except (TypeError, ValueError) as error:
        problems = [f"its bounds {result.bounds} are unusable ({error})"]
    if problems:
        return None, f"{where}'s best params are not valid: {'; '.join(problems)[:300]}"
    tuned_rmse = result.heldout.get("tuned", {}).get("rmse")
    seed_rmse = result.heldout.get("seed", {}).get("rmse")
    if tuned_rmse is None or seed_rmse is None or not tuned_rmse < seed_rmse:
        return (
            None,
            f"{where}'s best params do not beat the seed params on the held-out split ({tuned_rmse} vs {seed_rmse})",
        )
    return SVDParams(
        **result.best_params
    ), f"{where} (CV RMSE {result.best_cv_rmse:.4f}, held-out RMSE {tuned_rmse:.4f} vs seed {seed_rmse:.4f})"


def params_for_training(result: TuningResult | None, mode: Literal["seed", "tuned"], log: Log) -> SVDParams:
    """``seed``: the seed script's params. ``tuned``: the study's best (:func:`tuned_params`), else
    the seed params with a warning saying why."""
    if mode == "seed":
        return SVDParams()
    if mode != "tuned":
        raise ValueError(f"mode must be 'seed' or 'tuned', got {mode!r}")
    params, why = tuned_params(result)
    if params is None:
        log.warning(f"params mode 'tuned' but {why}: training with the seed params")
        return SVDParams()
    log.info(f"training with the tuned params of {why}")
    return params
