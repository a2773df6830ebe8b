"""Blocking checks gate deployed_model: within a run, across runs, and on tampered files."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS, cv_rmse_under_ceiling, svd_artifacts_load_and_predict
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import (
    check_evaluations,
    check_results,
    failure_messages,
    gate_refusal,
    graph_job,
    interleave,
    make_graph_env,
    materialized,
    metadata,
    recorded_target,
    tree_digest,
)

IMPOSSIBLE_CEILING = {"cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 0.01}}}
MODEL_ONLY = ["svd_model", "cv_metrics"]
CEILING_CHECK = "cv_metrics_cv_rmse_under_ceiling"


@pytest.fixture
def deployed(tmp_path: Path):
    """A graph env whose serving dir already holds one good deployment (the champion)."""
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        first = env.materialize(instance)
        assert first.success
        yield env, instance, metadata(first, "deployed_model")["version"]


def test_failed_blocking_check_stops_deployment_and_leaves_serving_dir_unchanged(deployed) -> None:
    env, instance, champion = deployed
    before = tree_digest(env.serving_dir)
    result = env.materialize(instance, ops=IMPOSSIBLE_CEILING)
    assert not result.success
    assert check_results(result)["cv_rmse_under_ceiling"] is False
    assert "svd_model" in materialized(result) and "deployed_model" not in materialized(result)
    assert tree_digest(env.serving_dir) == before
    assert open_target(env.serving_dir).read_manifest()["version"] == champion


def test_gate_holds_across_runs(deployed) -> None:
    env, instance, champion = deployed
    assert not env.materialize(instance, ops=IMPOSSIBLE_CEILING).success
    before = tree_digest(env.serving_dir)
    # Someone materializes deployed_model on its own afterwards: the failed check still counts.
    alone = env.materialize(instance, selection=["deployed_model"])
    assert not alone.success
    assert "cv_metrics:cv_rmse_under_ceiling failed" in failure_messages(alone)["deployed_model"]
    assert tree_digest(env.serving_dir) == before
    # A retrain whose checks pass reopens the gate.
    assert env.materialize(instance, selection=MODEL_ONLY).success
    assert env.materialize(instance, selection=["deployed_model"]).success
    assert open_target(env.serving_dir).read_manifest()["version"] != champion


def test_passing_run_promotes_and_rollback_restores(deployed) -> None:
    env, instance, champion = deployed
    second = env.materialize(instance)
    assert second.success
    challenger = metadata(second, "deployed_model")["version"]
    assert open_target(env.serving_dir).read_manifest()["version"] == challenger != champion

    back = env.materialize(
        instance, selection=["deployed_model"], ops={"deployed_model": {"config": {"rollback_to": champion}}}
    )
    assert back.success
    assert metadata(back, "deployed_model")["action"] == "rollback"
    manifest = open_target(env.serving_dir).read_manifest()
    assert (manifest["version"], manifest["previous_version"]) == (champion, challenger)

    before = tree_digest(env.serving_dir)
    bad = env.materialize(
        instance, selection=["deployed_model"], ops={"deployed_model": {"config": {"rollback_to": "no-such-version"}}}
    )
    assert not bad.success and "no-such-version" in failure_messages(bad)["deployed_model"]
    assert tree_digest(env.serving_dir) == before


def test_a_losing_challenger_keeps_the_champion_in_a_successful_run(deployed) -> None:
    env, instance, _ = deployed
    # A champion fitted with a higher rate (CV RMSE ~0.82 on this fixture), then the seed settings
    # (~1.04) as the challenger: a clearly worse model, under a ceiling loose enough to pass.
    better = {"svd_model": {"config": {"params": "seed", "lr_all": 0.1}}}
    assert env.materialize(instance, selection=[*MODEL_ONLY, "deployed_model"], ops=better).success
    champion = open_target(env.serving_dir).read_manifest()
    versions = tree_digest(env.serving_dir / "versions")
    loose = {"cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 5.0}}}
    result = env.materialize(instance, selection=[*MODEL_ONLY, "deployed_model"], ops=loose)

    assert result.success, failure_messages(result)  # a normal outcome, not a failure to page about
    verdicts = check_results(result)
    assert verdicts["challenger_no_worse_than_champion"] is False and verdicts["cv_rmse_under_ceiling"] is True
    assert check_evaluations(result)["challenger_no_worse_than_champion"].severity == dg.AssetCheckSeverity.WARN
    deployed = metadata(result, "deployed_model")
    challenger = metadata(result, "svd_model")["version"]
    assert (deployed["action"], deployed["version"], deployed["challenger_version"]) == (
        "keep",
        champion["version"],
        challenger,
    )
    decision = rf"kept champion {champion['version']}: challenger RMSE (\d\.\d{{4}}) vs (\d\.\d{{4}}) \+ 0\.01"
    found = re.fullmatch(decision, deployed["decision"])
    assert found, deployed["decision"]
    assert float(found[1]) > float(found[2]) + 0.01
    assert float(found[2]) == round(champion["metrics"]["rmse_mean"], 4)
    # Nothing new is served; the manifest records the decision.
    assert tree_digest(env.serving_dir / "versions") == versions
    manifest = open_target(env.serving_dir).read_manifest()
    assert {k: v for k, v in manifest.items() if k != "kept_champion"} == champion
    [entry] = manifest["kept_champion"]
    assert (entry["challenger"], entry["run_id"], entry["decision"]) == (
        challenger,
        result.run_id,
        deployed["decision"],
    )


def test_a_losing_challenger_is_not_promoted_by_a_later_deployment_alone(deployed) -> None:
    env, instance, _ = deployed
    better = {"svd_model": {"config": {"params": "seed", "lr_all": 0.1}}}
    assert env.materialize(instance, selection=[*MODEL_ONLY, "deployed_model"], ops=better).success
    champion = open_target(env.serving_dir).read_manifest()["version"]
    loose = {"cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 5.0}}}
    assert env.materialize(instance, selection=MODEL_ONLY, ops=loose).success
    # deployed_model on its own later: the check's verdict on that challenger still decides.
    alone = env.materialize(instance, selection=["deployed_model"])
    assert alone.success and metadata(alone, "deployed_model")["action"] == "keep"
    assert open_target(env.serving_dir).read_manifest()["version"] == champion


def test_diverged_training_saves_nothing_and_says_why(deployed) -> None:
    env, instance, champion = deployed
    models = sorted(p.name for p in (env.data_dir / "models").iterdir())
    result = env.materialize(instance, selection=MODEL_ONLY, ops={"svd_model": {"config": {"lr_all": 1.0}}})
    assert not result.success
    assert "training diverged, nothing saved" in failure_messages(result)["svd_model"]
    assert sorted(p.name for p in (env.data_dir / "models").iterdir()) == models


def test_tampered_artifact_is_refused_by_check_and_by_promotion(deployed) -> None:
    env, instance, champion = deployed
    trained = env.materialize(instance, selection=MODEL_ONLY)
    assert trained.success
    pickle = Path(metadata(trained, "svd_model")["model_path"]) / "svd_model.pkl"
    data = bytearray(pickle.read_bytes())
    data[len(data) // 2] ^= 0x01
    pickle.write_bytes(bytes(data))
    before = tree_digest(env.serving_dir)

    # The promotion itself re-verifies sha256 even though the checks passed before the tampering.
    alone = env.materialize(instance, selection=["deployed_model"])
    assert not alone.success and "sha256" in failure_messages(alone)["deployed_model"]
    assert tree_digest(env.serving_dir) == before

    # And the check, re-run, fails without unpickling the file.
    rerun = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS], selection=dg.AssetSelection.checks(svd_artifacts_load_and_predict),
        instance=instance, resources=env.resources(), raise_on_error=False,
    )  # fmt: skip
    assert check_results(rerun) == {"svd_artifacts_load_and_predict": False}


def test_promotion_refuses_a_model_its_metrics_do_not_describe(deployed) -> None:
    env, instance, champion = deployed
    retrained = env.materialize(instance, selection=["svd_model"])  # cv_metrics still describes the old one
    assert retrained.success
    before = tree_digest(env.serving_dir)
    alone = env.materialize(instance, selection=["deployed_model"])
    assert not alone.success
    assert "materialize cv_metrics first" in failure_messages(alone)["deployed_model"]
    assert tree_digest(env.serving_dir) == before


def test_deployment_without_any_model_names_the_missing_upstream(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=["deployed_model"])
    message = failure_messages(result)["deployed_model"]
    assert re.search(r"(svd_model|cv_metrics) has never been materialized: materialize it first", message), message
    assert not env.serving_dir.exists()


# --- overlapping runs: each check judges the value its own run loaded ----------------------------
# Dagster records as a check evaluation's target the asset's *latest* materialization when the
# evaluation is stored, so a run that materialized the same asset meanwhile takes the verdict
# over. Each test forces that order by pausing runs at chosen steps (testkit ``interleave``).


def test_run_deploys_its_own_model_when_another_run_materialized_the_same_assets_during_its_checks(
    tmp_path: Path,
) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        # The first run loads its own cv_metrics for its ceiling check and waits there while the
        # second runs the whole graph.
        first, second = interleave(
            env,
            lambda io: env.materialize(instance, resources={"io_manager": io}),
            CEILING_CHECK,
            lambda io: env.materialize(instance, resources={"io_manager": io}),
        )
        assert second.success
        # The trap is set: Dagster recorded the second run's cv_metrics as the first run's target.
        assert recorded_target(first, "cv_rmse_under_ceiling") == second.run_id
        assert first.success, failure_messages(first)
    first_version = metadata(first, "svd_model")["version"]
    assert metadata(first, "deployed_model")["version"] == first_version
    manifest = open_target(env.serving_dir).read_manifest()
    assert (manifest["version"], manifest["previous_version"]) == (
        first_version,
        metadata(second, "svd_model")["version"],
    )


def test_gate_refuses_a_failed_check_and_never_takes_another_runs_verdict_for_it(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        # The failing run waits before cv_metrics until the passing run has materialized its own
        # and loaded it for its ceiling check; the passing verdict is stored last. Dagster records
        # it as the failing run's, and it is the newest execution of that check.
        failed, passed = interleave(
            env,
            lambda io: env.materialize(instance, ops=IMPOSSIBLE_CEILING, resources={"io_manager": io}),
            "cv_metrics",
            lambda io: env.materialize(instance, resources={"io_manager": io}),
            CEILING_CHECK,
        )
        assert recorded_target(passed, "cv_rmse_under_ceiling") == failed.run_id  # the trap is set
        assert check_results(failed)["cv_rmse_under_ceiling"] is False
        assert "deployed_model" not in materialized(failed)

        refusal = gate_refusal(instance, failed)
        assert refusal is not None and "cv_metrics:cv_rmse_under_ceiling failed: RMSE" in refusal, refusal
        assert "has not run" not in refusal, refusal  # every other check of the failing run was found
        # And the passing run judged its own model, whatever Dagster recorded as the target.
        assert passed.success, failure_messages(passed)
        assert gate_refusal(instance, passed) is None
    assert open_target(env.serving_dir).read_manifest()["version"] == metadata(passed, "svd_model")["version"]


def test_check_only_run_that_overlapped_a_materialization_is_not_trusted_for_it(deployed) -> None:
    env, instance, champion = deployed

    def check_only(io_manager: dg.IOManager | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS], selection=dg.AssetSelection.checks(cv_rmse_under_ceiling),
            instance=instance, resources={**env.resources(), **({"io_manager": io_manager} if io_manager else {})},
            run_config={"ops": {CEILING_CHECK: {"config": {"rmse_ceiling": 1.5}}}}, raise_on_error=False,
        )  # fmt: skip

    # A retrain starts first (its check executions are the older ones) and waits before
    # cv_metrics; a check-only run loads the champion's cv_metrics and waits; the retrain
    # materializes cv_metrics and fails the check; then the check-only run passes its value.
    retrain, stale = interleave(
        env,
        lambda io: env.materialize(
            instance, selection=MODEL_ONLY, ops=IMPOSSIBLE_CEILING, resources={"io_manager": io}
        ),
        "cv_metrics",
        check_only,
        CEILING_CHECK,
    )
    assert check_results(retrain)["cv_rmse_under_ceiling"] is False
    # The rerun passed the champion's value, and Dagster recorded the retrain's as its target.
    assert check_results(stale) == {"cv_rmse_under_ceiling": True}
    assert recorded_target(stale, "cv_rmse_under_ceiling") == retrain.run_id
    refusal = gate_refusal(instance, retrain)
    assert refusal is not None and "cv_metrics:cv_rmse_under_ceiling failed: RMSE" in refusal, refusal

    # A check-only run that nothing overlapped judges the latest value: its pass opens the gate.
    assert check_results(check_only()) == {"cv_rmse_under_ceiling": True}
    assert gate_refusal(instance, retrain) is None


def test_reexecuted_check_judges_the_parent_runs_materialization(tmp_path: Path, monkeypatch) -> None:
    env = make_graph_env(tmp_path)
    for name, value in env.job_variables().items():
        monkeypatch.setenv(name, value)
    job = dg.reconstructable(graph_job)

    def config(ops: dict) -> dict:
        return {"ops": {**env.fixture_check_config(), **ops}}

    with dg.instance_for_test() as instance:
        first = dg.execute_job(job, instance, run_config=config(IMPOSSIBLE_CEILING))
        assert not first.success and "deployed_model" not in materialized(first)
        # Another retrain materializes cv_metrics after it, and fails the same check.
        retrain = env.materialize(instance, selection=MODEL_ONLY, ops=IMPOSSIBLE_CEILING)
        # The first run re-executed from failure with a looser ceiling: its check runs again on
        # the first run's cv_metrics (a re-execution loads skipped steps' outputs from its parent).
        again = dg.execute_job(
            job,
            instance,
            run_config=config({}),
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )
        assert recorded_target(again, "cv_rmse_under_ceiling") == retrain.run_id  # the trap is set
        assert again.success, failure_messages(again)
        assert metadata(again, "deployed_model")["version"] == metadata(first, "svd_model")["version"]
        # The re-executed pass is the first run's: it does not reopen the gate for the retrain.
        refusal = gate_refusal(instance, retrain)
        assert refusal is not None and "cv_metrics:cv_rmse_under_ceiling failed: RMSE" in refusal, refusal
