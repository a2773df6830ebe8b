"""Blocking checks gate deployed_model: within a run, across runs, and on tampered files."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS, svd_artifacts_load_and_predict
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import (
    check_results,
    failure_messages,
    make_graph_env,
    materialized,
    metadata,
    tree_digest,
)

IMPOSSIBLE_CEILING = {"cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 0.01}}}
MODEL_ONLY = ["svd_model", "cv_metrics"]


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


def test_challenger_worse_than_champion_is_blocked(deployed) -> None:
    env, instance, champion = deployed
    # A champion fitted with a higher rate (CV RMSE ~0.82 on this fixture), then the seed settings
    # (~1.04) as the challenger: a clearly worse model, under a ceiling loose enough to pass.
    better = {"svd_model": {"config": {"params": "seed", "lr_all": 0.1}}}
    assert env.materialize(instance, selection=[*MODEL_ONLY, "deployed_model"], ops=better).success
    before = tree_digest(env.serving_dir)
    loose = {"cv_metrics_cv_rmse_under_ceiling": {"config": {"rmse_ceiling": 5.0}}}
    result = env.materialize(instance, selection=[*MODEL_ONLY, "deployed_model"], ops=loose)
    assert not result.success
    verdicts = check_results(result)
    assert verdicts["challenger_no_worse_than_champion"] is False and verdicts["cv_rmse_under_ceiling"] is True
    assert "deployed_model" not in materialized(result)
    assert tree_digest(env.serving_dir) == before


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
