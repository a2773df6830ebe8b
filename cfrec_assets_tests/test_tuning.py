"""The SVD hyper-parameter study: held-out isolation, resume/restart, bounds, fallback, and the asset."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import dagster as dg
import numpy as np
import optuna
import pandas as pd
import pytest

from cfrec_assets.definitions import defs
from cfrec_assets.defs.assets.tuning import BoundsConfig, FloatRange, IntRange, TuningConfig, run_study
from cfrec_assets.defs.resources import DataStore, SparkResource
from cfrec_assets.pipeline import tuning_study as tuning
from cfrec_assets.pipeline.training import SVDParams, fit_svd
from cfrec_assets.pipeline.tuning_study import (
    TuningBounds,
    TuningResult,
    evaluate_on_heldout,
    holdout_split,
    journal_storage,
    load_result,
    params_for_training,
    save_result,
    tune,
)
from cfrec_testkit.models import make_ratings_frame

# Tiny models so a study of a few trials takes a second or two.
SMALL = TuningBounds(n_factors=(2, 8), n_epochs=(5, 15))
# The fixture is rank 2 plus noise: few factors trained long beat the seed's 100 factors x 20 epochs.
LEARNS = TuningBounds(n_factors=(2, 4), n_epochs=(40, 100))
# A space of noise: huge random initial factors that one epoch of tiny steps cannot correct.
HOPELESS = TuningBounds(
    n_factors=(2, 3), n_epochs=(1, 1), lr_bias=(1e-5, 2e-5), lr_factor=(1e-5, 2e-5), init_std_dev=(1.0, 1.5)
)


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return make_ratings_frame(n_users=60, n_movies=50, density=0.4, seed=3)


def keys(frame: pd.DataFrame) -> set[tuple[str, int]]:
    return set(zip(frame["user_id"].astype(str), frame["tmdb_id"].astype(int)))


def stored_trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=journal_storage(folder, name)).trials


def test_holdout_split_is_seeded_disjoint_and_independent_of_row_order(ratings):
    tuning_part, heldout = holdout_split(ratings, 0.2, seed=7)
    assert keys(tuning_part).isdisjoint(keys(heldout))
    assert keys(tuning_part) | keys(heldout) == keys(ratings)
    assert 0.1 < len(heldout) / len(ratings) < 0.3
    shuffled = ratings.sample(frac=1.0, random_state=1)
    assert keys(holdout_split(shuffled, 0.2, seed=7)[1]) == keys(heldout)
    assert keys(holdout_split(ratings, 0.2, seed=8)[1]) != keys(heldout)
    # A rating held out stays held out when more ratings arrive.
    newcomers = make_ratings_frame(n_users=10, n_movies=5, seed=9).assign(user_id=lambda f: "new_" + f.user_id)
    grown = pd.concat([ratings, newcomers])
    assert keys(heldout) <= keys(holdout_split(grown, 0.2, seed=7)[1])
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            holdout_split(ratings, bad)


def test_search_never_fits_or_scores_a_heldout_rating(ratings, tmp_path, monkeypatch):
    seen_train: set[tuple[str, int]] = set()
    seen_test: set[tuple[str, int]] = set()
    real = tuning._fit_and_score

    def watching(params, trainset, testset):
        seen_train.update((trainset.to_raw_uid(u), trainset.to_raw_iid(i)) for u, i, _ in trainset.all_ratings())
        seen_test.update((u, i) for u, i, _ in testset)
        return real(params, trainset, testset)

    monkeypatch.setattr(tuning, "_fit_and_score", watching)  # n_jobs=1: folds run in this process
    result = tune(ratings, tmp_path, "iso", trials=3, n_folds=3, bounds=SMALL, n_jobs=1, importances=False)
    tuning_part, heldout = holdout_split(ratings, 0.1, seed=42)
    assert result.trials_run == 3 and heldout.shape[0] == result.heldout_rows > 0
    # 3 trials + the seed params, 3 folds each: every fit saw only tuning ratings, and all of them.
    assert seen_train == keys(tuning_part) and seen_test == keys(tuning_part)
    assert not (seen_train | seen_test) & keys(heldout)


def test_resume_adds_trials_to_the_stored_study_and_restart_starts_afresh(ratings, tmp_path):
    first = tune(ratings, tmp_path, "study", trials=3, bounds=SMALL, n_jobs=1, importances=False)
    assert (first.trials_run, first.trials_total) == (3, 3)
    assert (tmp_path / "study.journal").is_file()
    resumed = tune(ratings, tmp_path, "study", trials=2, bounds=SMALL, n_jobs=1, resume=True, importances=False)
    assert (resumed.trials_run, resumed.trials_total) == (2, 5)
    assert resumed.seed_cv_rmse == first.seed_cv_rmse  # same folds, stored with the study
    assert [t.number for t in stored_trials(tmp_path, "study")] == [0, 1, 2, 3, 4]
    # The first three trials are the same ones, not re-run copies.
    assert [t.params for t in stored_trials(tmp_path, "study")[:3]] == [
        {k: v for k, v in t.items() if k not in ("number", "cv_rmse")}
        for t in sorted(first.top_trials, key=lambda t: t["number"])
    ]
    restarted = tune(ratings, tmp_path, "study", trials=2, bounds=SMALL, n_jobs=1, resume=False, importances=False)
    assert (restarted.trials_run, restarted.trials_total) == (2, 2)
    assert len(stored_trials(tmp_path, "study")) == 2
    other = tune(ratings, tmp_path, "other", trials=1, bounds=SMALL, n_jobs=1, importances=False)
    assert other.trials_total == 1 and len(stored_trials(tmp_path, "study")) == 2


def test_suggested_params_stay_inside_the_bounds(ratings, tmp_path):
    bounds = TuningBounds(
        n_factors=(3, 5), n_epochs=(6, 9), lr_bias=(0.004, 0.006), lr_factor=(0.01, 0.02),
        reg_bias=(0.01, 0.03), reg_factor=(0.05, 0.07), init_std_dev=(0.05, 0.08),
    )  # fmt: skip
    result = tune(ratings, tmp_path, "bounded", trials=12, bounds=bounds, n_jobs=1, prune=False, importances=False)
    trials = stored_trials(tmp_path, "bounded")
    assert len(trials) == 12
    for trial in trials:
        for f in fields(TuningBounds):
            low, high = getattr(bounds, f.name)
            assert low <= trial.params[f.name] <= high, (f.name, trial.params[f.name])
    best = SVDParams(**result.best_params)
    assert 3 <= best.n_factors <= 5 and 6 <= best.n_epochs <= 9 and 0.05 <= best.init_std_dev <= 0.08
    assert best.lr_bu == best.lr_bi and best.lr_pu == best.lr_qi and best.reg_pu == best.reg_qi
    assert 0.05 <= best.reg_pu <= 0.07 and 0.01 <= best.reg_bu <= 0.03 and best.random_state == 42


@pytest.mark.parametrize(
    "bad", [{"n_factors": (5, 3)}, {"lr_bias": (0.0, 0.01)}, {"reg_factor": (-0.1, 0.2)}, {"n_epochs": (0, 10)}]
)
def test_bounds_reject_empty_or_non_positive_ranges(bad):
    with pytest.raises(ValueError, match="0 < low <= high"):
        TuningBounds(**bad)


def test_a_study_that_finds_nothing_better_says_so_and_tuned_training_falls_back(ratings, tmp_path, caplog):
    result = tune(ratings, tmp_path, "hopeless", trials=3, bounds=HOPELESS, n_jobs=1, importances=False)
    assert result.best_cv_rmse is not None and result.best_cv_rmse > result.seed_cv_rmse
    assert result.improved is False
    assert result.heldout["tuned"]["rmse"] > result.heldout["seed"]["rmse"]
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.INFO, logger=log.name):
        params = params_for_training(result, "tuned", log)
    assert params == SVDParams()
    assert f"svd_tuning {result.version} found nothing better than the seed params" in caplog.text
    assert "training with the seed params" in caplog.text


def test_params_for_training_modes(ratings, tmp_path, caplog):
    result = tune(ratings, tmp_path, "good", trials=4, bounds=LEARNS, n_jobs=1, importances=False)
    assert result.improved and result.best_cv_rmse < result.seed_cv_rmse - result.margin
    stored = TuningResult(**json.loads(json.dumps(asdict(result))))  # as the IO manager hands it back
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert params_for_training(stored, "seed", log) == SVDParams()
        assert params_for_training(stored, "tuned", log) == SVDParams(**result.best_params) != SVDParams()
        assert params_for_training(None, "tuned", log) == SVDParams()
    assert "no svd_tuning result exists: training with the seed params" in caplog.text
    assert f"training with the tuned params of svd_tuning {result.version}" in caplog.text
    with pytest.raises(ValueError, match="mode"):
        params_for_training(stored, "best", log)  # type: ignore[arg-type]


def test_result_round_trips_through_json(ratings, tmp_path):
    result = tune(ratings, tmp_path, "json", trials=12, bounds=SMALL, n_jobs=1)
    rebuilt = TuningResult(**json.loads(json.dumps(asdict(result))))
    assert rebuilt == result
    assert result.importances and set(result.importances) <= {f.name for f in fields(TuningBounds)}
    assert len(result.top_trials) == 5 and [t["cv_rmse"] for t in result.top_trials] == sorted(
        t["cv_rmse"] for t in result.top_trials
    )
    assert result.best_cv_rmse == pytest.approx(result.top_trials[0]["cv_rmse"], abs=1e-5)


def test_hopeless_trials_are_pruned_after_their_first_folds(ratings, tmp_path):
    wide = TuningBounds(n_factors=(2, 8), n_epochs=(1, 15), lr_bias=(1e-4, 0.02), lr_factor=(1e-4, 0.03))
    result = tune(ratings, tmp_path, "pruned", trials=15, n_folds=4, bounds=wide, n_jobs=1, importances=False)
    trials = stored_trials(tmp_path, "pruned")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert result.trials_pruned == len(pruned) > 0
    assert all(len(t.intermediate_values) < 4 for t in pruned)  # stopped before the last fold


def test_heldout_metrics_match_an_independent_computation(ratings):
    tuning_part, heldout = holdout_split(ratings, 0.2, seed=1)
    params = SVDParams(n_factors=4, n_epochs=10)
    metrics = evaluate_on_heldout(tuning_part, heldout, params, k=10)
    algo, _, _ = fit_svd(tuning_part, params)
    est = np.array([algo.predict(u, i).est for u, i in zip(heldout["user_id"], heldout["tmdb_id"])])
    errors = est - heldout["rating"].to_numpy()
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))))
    assert metrics["mae"] == pytest.approx(float(np.mean(np.abs(errors))))
    assert 0 < metrics["precision_at_10"] <= 1 and 0 < metrics["ndcg_at_10"] <= 1


def test_the_study_runs_under_the_data_dir_saves_its_result_and_reports_metadata(ratings, tmp_path):
    config = TuningConfig(
        trials=6, folds=3, n_jobs=1, study_name="asset",
        bounds=BoundsConfig(n_factors=IntRange(low=2, high=8), n_epochs=IntRange(low=5, high=15),
                            init_std_dev=FloatRange(low=0.05, high=0.1)),
    )  # fmt: skip
    folder = DataStore(data_dir=str(tmp_path)).tuning_dir
    result, meta = run_study(config, ratings, folder, logging.getLogger("cfrec.test_tuning"))
    assert isinstance(result, TuningResult) and result.trials_total == 6
    assert (tmp_path / "tuning" / "asset.journal").is_file()
    assert result.bounds["init_std_dev"] == [0.05, 0.1]
    # The result travels with the data folder: what svd_model reads back, whatever instance runs it.
    assert load_result(folder) == result and meta["path"].value == str(folder / "latest_result.json")
    for key in (
        "version", "best_params", "best_cv_rmse", "seed_cv_rmse", "improved", "heldout", "top_trials", "trials_run",
        "trials_pruned", "wall_seconds", "importances", "heldout_rmse_seed", "heldout_rmse_tuned",
        "heldout_ndcg_at_10_tuned", "heldout_precision_at_10_seed",
    ):  # fmt: skip
        assert key in meta, key
    assert meta["best_cv_rmse"] == pytest.approx(result.best_cv_rmse, abs=1e-5)
    assert meta["best_params"].data == result.best_params
    table = meta["heldout"].md_str
    assert "| seed |" in table and "| tuned |" in table and "precision_at_10" in table
    assert meta["top_trials"].md_str.count("\n") == 1 + len(result.top_trials)


def test_the_study_is_an_asset_materialize_all_leaves_out_and_its_own_job_reports():
    repo = defs.get_repository_def()
    node = repo.asset_graph.get(dg.AssetKey("svd_tuning"))
    assert node.group_name == "tuning" and not node.is_executable  # "Materialize all" skips it
    assert dg.AssetKey("svd_tuning") in repo.asset_graph.get(dg.AssetKey("svd_model")).parent_keys
    assert [node.name for node in repo.get_job("tune_svd").graph.nodes] == ["svd_tuning"]
    assert dg.AssetKey("svd_tuning") not in repo.get_job("train_and_deploy").asset_layer.selected_asset_keys


def test_a_saved_result_that_is_unreadable_or_foreign_is_refused_by_name(ratings, tmp_path):
    assert load_result(tmp_path) is None  # no study yet: tuned training falls back to the seed params
    path = tmp_path / "latest_result.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{path} is unreadable .*run the tune_svd job again, or delete it"):
        load_result(tmp_path)
    path.write_text(json.dumps({"version": "x", "best_params": {}}))
    with pytest.raises(ValueError, match=rf"{path} is not a tuning result"):
        load_result(tmp_path)
    result = tune(ratings, tmp_path, "saved", trials=1, bounds=SMALL, n_jobs=1, importances=False)
    path.write_text(json.dumps({**asdict(result), "best_params": {"n_factors": 4, "learning_rate": 9}}))
    with pytest.raises(ValueError, match="not a tuning result"):
        load_result(tmp_path)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_each_trial_logs_a_progress_line(ratings, tmp_path, caplog, n_jobs):
    log = logging.getLogger("cfrec.test_tuning")
    wide = TuningBounds(n_factors=(2, 8), n_epochs=(1, 15), lr_bias=(1e-4, 0.02), lr_factor=(1e-4, 0.03))
    with caplog.at_level(logging.INFO, logger=log.name):
        result = tune(ratings, tmp_path, "log", trials=8, n_folds=3, bounds=wide, n_jobs=n_jobs, log=log)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ")]
    assert [line.split(" (")[0] for line in lines] == [f"trial {i}/8" for i in range(1, 9)]
    assert sum("pruned after" in line for line in lines) == result.trials_pruned
    assert f"best this run {result.best_cv_rmse:.4f}" in lines[-1]
    assert "seed params: CV RMSE" in caplog.text and "held-out comparison" in caplog.text


def test_config_rejects_inverted_bounds(ratings, tmp_path):
    config = TuningConfig(trials=1, n_jobs=1, bounds=BoundsConfig(n_epochs=IntRange(low=20, high=10)))
    with pytest.raises(ValueError, match="n_epochs"):
        run_study(config, ratings, tmp_path / "tuning", logging.getLogger("cfrec.test_tuning"))
    assert not (tmp_path / "tuning").exists()


def test_parallel_study_is_deterministic_and_its_workers_get_only_the_tuning_part(ratings, tmp_path, monkeypatch):
    handed: list[pd.DataFrame] = []

    class Recording(tuning.FoldPool):
        def __init__(self, frame: pd.DataFrame, *args) -> None:
            handed.append(frame)
            super().__init__(frame, *args)

    monkeypatch.setattr(tuning, "FoldPool", Recording)
    wide = TuningBounds(n_factors=(2, 8), n_epochs=(1, 15), lr_bias=(1e-4, 0.02), lr_factor=(1e-4, 0.03))
    runs = [
        tune(ratings, tmp_path / str(i), "par", trials=12, n_folds=4, bounds=wide, n_jobs=2, importances=False)
        for i in range(2)
    ]
    histories = [
        [(t.number, t.state, t.params, t.value) for t in stored_trials(tmp_path / str(i), "par")] for i in range(2)
    ]
    assert histories[0] == histories[1] and len(histories[0]) == 12
    assert runs[0].best_params == runs[1].best_params and runs[0].seed_cv_rmse == runs[1].seed_cv_rmse
    assert runs[0].trials_pruned > 0  # pruning works across workers too
    # The workers build their folds from exactly the tuning part.
    tuning_part, heldout = holdout_split(ratings, 0.1, seed=42)
    assert len(handed) == 2 and all(keys(frame) == keys(tuning_part) for frame in handed)
    assert not keys(handed[0]) & keys(heldout)
    # Serial and parallel runs score the seed params on the same folds.
    serial = tune(ratings, tmp_path / "serial", "par", trials=1, n_folds=4, bounds=wide, n_jobs=1, importances=False)
    assert serial.seed_cv_rmse == pytest.approx(runs[0].seed_cv_rmse, abs=1e-12)


def test_resuming_on_a_changed_table_warns_and_rescores_the_seed_params(ratings, tmp_path, caplog):
    log = logging.getLogger("cfrec.test_tuning")
    run = {"trials": 1, "bounds": SMALL, "n_jobs": 1, "importances": False, "log": log}
    first = tune(ratings, tmp_path, "drift", **run)
    with caplog.at_level(logging.WARNING, logger=log.name):
        same = tune(ratings, tmp_path, "drift", **run)
        assert "another ratings table" not in caplog.text and same.seed_cv_rmse == first.seed_cv_rmse
        changed = ratings.assign(rating=np.clip(ratings["rating"] + 0.5, 0.5, 5.0))
        moved = tune(changed, tmp_path, "drift", **run)
    assert "study drift holds trials scored on another ratings table" in caplog.text
    assert moved.seed_cv_rmse != first.seed_cv_rmse and moved.trials_total == 3


def test_a_gain_below_the_margin_does_not_count_as_improved(ratings, tmp_path):
    loose = tune(ratings, tmp_path, "margin", trials=4, bounds=LEARNS, n_jobs=1, margin=0.0, importances=False)
    assert loose.best_cv_rmse < loose.seed_cv_rmse and loose.improved
    gain = loose.seed_cv_rmse - loose.best_cv_rmse
    strict = tune(ratings, tmp_path, "margin", trials=1, bounds=LEARNS, n_jobs=1, margin=gain * 2, importances=False)
    assert strict.best_cv_rmse <= loose.best_cv_rmse and strict.improved is False


def sound_journal(folder: Path, name: str) -> bytes:
    tune(make_ratings_frame(n_users=20, n_movies=15, seed=1), folder, name, trials=1, bounds=SMALL, n_jobs=1)
    return (folder / f"{name}.journal").read_bytes()


def _garbage(good: bytes) -> bytes:
    return good + b"garbage\n"


def _truncated(good: bytes) -> bytes:  # a crash mid-append: the last record without its end
    return good[:-30]


def _garbage_inside(good: bytes) -> bytes:
    return good.replace(b"\n", b"\n{not json\n", 1)


def _unreplayable(good: bytes) -> bytes:  # JSON, but no record Optuna knows
    return good + b'{"op_code": 99}\n'


@pytest.mark.parametrize(
    ("damage", "resume"), [(_garbage, True), (_truncated, True), (_truncated, False), (_garbage_inside, False),
                           (_unreplayable, True)],
)  # fmt: skip
def test_a_damaged_journal_is_kept_aside_and_a_new_study_starts(ratings, tmp_path, caplog, damage, resume):
    journal = tmp_path / "crash.journal"
    damaged = damage(sound_journal(tmp_path, "crash"))
    journal.write_bytes(damaged)
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.WARNING, logger=log.name):
        result = tune(ratings, tmp_path, "crash", trials=2, bounds=SMALL, n_jobs=1, resume=resume, log=log)
    aside = Path(result.journal_moved_aside)
    assert aside.parent == tmp_path and aside.name.startswith("crash.journal.damaged-")
    assert aside.read_bytes() == damaged  # kept, byte for byte
    assert tuning.journal_damage(journal) is None and result.trials_total == 2  # a new study
    assert len(stored_trials(tmp_path, "crash")) == 2
    assert f"tuning journal {journal} is damaged" in caplog.text and str(aside) in caplog.text
    # The next call resumes the new journal: nothing more is moved.
    again = tune(ratings, tmp_path, "crash", trials=1, bounds=SMALL, n_jobs=1, importances=False)
    assert again.journal_moved_aside is None and again.trials_total == 3


def forge_trial(folder: Path, name: str, value: float, **params) -> None:
    """What anyone who can write the journal can add: a completed trial with any params and value."""
    study = optuna.load_study(study_name=name, storage=journal_storage(folder, name))
    template = study.trials[0]
    wide = {n: optuna.distributions.IntDistribution(1, 10_000) for n in ("n_factors", "n_epochs")}
    study.add_trial(
        optuna.trial.create_trial(
            params={**template.params, **params}, distributions={**template.distributions, **wide}, value=value
        )
    )


@pytest.mark.parametrize(
    ("value", "params", "problem"),
    [(0.01, {"n_factors": 3000}, "n_factors=3000 outside [2, 8]"), (float("-inf"), {}, "value -inf")],
)
def test_forged_trials_never_become_the_best_params(ratings, tmp_path, caplog, value, params, problem):
    tune(ratings, tmp_path, "forged", trials=2, bounds=SMALL, n_jobs=1, importances=False)
    forge_trial(tmp_path, "forged", value, **params)
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.WARNING, logger=log.name):
        result = tune(ratings, tmp_path, "forged", trials=1, bounds=SMALL, n_jobs=1, importances=False, log=log)
    assert 2 <= result.best_params["n_factors"] <= 8 and np.isfinite(result.best_cv_rmse)
    assert result.trials_ignored == 1 and result.trials_total == 4
    assert result.best_cv_rmse == pytest.approx(min(t["cv_rmse"] for t in result.top_trials), abs=1e-5)
    assert "ignored 1 completed trial(s)" in caplog.text and problem in caplog.text


def test_tuned_params_must_also_beat_the_seed_params_on_the_heldout_split(ratings, tmp_path, caplog):
    """A trial claiming a superb CV RMSE whose params are awful: the held-out split, which the
    search never saw, decides, and the seed params train the model."""
    wide = TuningBounds(n_factors=(2, 8), n_epochs=(1, 15), lr_bias=(1e-5, 0.02), lr_factor=(1e-5, 0.05),
                        init_std_dev=(0.001, 1.5))  # fmt: skip
    tune(ratings, tmp_path, "liar", trials=1, bounds=wide, n_jobs=1, importances=False)
    awful = {"n_factors": 8, "n_epochs": 1, "lr_bias": 1e-5, "lr_factor": 1e-5, "init_std_dev": 1.5}
    forge_trial(tmp_path, "liar", 0.01, **awful)
    result = tune(ratings, tmp_path, "liar", trials=1, bounds=wide, n_jobs=1, importances=False)
    assert result.best_cv_rmse == 0.01  # inside the bounds: a valid trial, and the best
    assert result.heldout["tuned"]["rmse"] > result.heldout["seed"]["rmse"]
    assert result.improved is False
    assert "held-out RMSE" in result.verdict and "seed params used" in result.verdict
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert params_for_training(result, "tuned", log) == SVDParams()
    assert "held-out" in caplog.text and "training with the seed params" in caplog.text


def stored_result(**changes) -> TuningResult:
    """A result as an older version stored it: improved, params never checked."""
    good = {"n_factors": 50, "n_epochs": 20, "init_std_dev": 0.01, "lr_bu": 0.005, "lr_bi": 0.005, "lr_pu": 0.01,
            "lr_qi": 0.01, "reg_bu": 0.01, "reg_bi": 0.01, "reg_pu": 0.05, "reg_qi": 0.05, "random_state": 42}  # fmt: skip
    base = {
        "version": "20260101T000000Z-svd-9", "study_name": "svd", "best_params": good, "best_cv_rmse": 0.9,
        "seed_cv_rmse": 0.95, "improved": True, "margin": 0.001,
        "heldout": {"seed": {"rmse": 1.45}, "tuned": {"rmse": 1.2}}, "trials_run": 9, "trials_total": 9,
        "trials_pruned": 0, "wall_seconds": 1.0, "top_trials": [], "n_folds": 5, "seed": 42, "tuning_rows": 900,
        "heldout_rows": 100, "bounds": {f.name: list(getattr(TuningBounds(), f.name)) for f in fields(TuningBounds)},
    }  # fmt: skip
    return TuningResult(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"best_params": {"n_factors": 3000}}, "n_factors=3000 outside [20, 150]"),
        ({"best_params": {"lr_pu": float("nan")}}, "lr_pu=nan is not a finite number"),
        ({"best_params": {"surprise": 1}}, "unknown params ['surprise']"),
        ({"heldout": {"seed": {"rmse": 1.45}, "tuned": {"rmse": 2.35}}}, "do not beat the seed params on the held-out"),
        ({"heldout": {"seed": {"rmse": 1.45}}}, "do not beat the seed params on the held-out"),
    ],
)
def test_stored_results_are_checked_again_before_they_train_a_model(changes, why, caplog):
    if "best_params" in changes:
        changes = {"best_params": {**stored_result().best_params, **changes["best_params"]}}
    log = logging.getLogger("cfrec.test_tuning")
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert params_for_training(stored_result(**changes), "tuned", log) == SVDParams()
    assert why in caplog.text and "training with the seed params" in caplog.text
    assert params_for_training(stored_result(), "tuned", log) == SVDParams(**stored_result().best_params)  # control


def test_svd_model_trains_with_the_seed_params_and_says_why(ratings, tmp_path):
    from cfrec_assets.defs.assets.model import SVDConfig, svd_model

    forged = stored_result(best_params={**stored_result().best_params, "n_factors": 3000})
    combined = ratings.assign(source="app", created_at=pd.Timestamp("2026-01-01", tz="UTC"))
    titles = pd.DataFrame({"tmdb_id": pd.Series(dtype="int64"), "title": pd.Series(dtype=str), "year": []})
    store = DataStore(data_dir=str(tmp_path))
    save_result(forged, store.tuning_dir)  # as a study (or someone with write access) left it
    with dg.build_asset_context(resources={"store": store, "spark": SparkResource()}) as context:
        output = svd_model(context, config=SVDConfig(), combined_ratings=combined, movie_titles=titles)
    assert output.value.params["n_factors"] == SVDParams().n_factors and output.value.tuning_version is None
    meta = output.metadata
    assert meta["params_source"].value == "seed" and "n_factors=3000 outside [20, 150]" in meta["params_reason"].value
