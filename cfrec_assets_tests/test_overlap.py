"""Two whole-graph runs overlapping in time, in separate processes on one instance.

Each run must load what it produced itself: both succeed, and each deployment's manifest,
metrics, checks and files belong to that run's model version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import REPO_ROOT
from cfrec_testkit.graph import make_graph_env, tree_digest

START_GAP_SECONDS = 1.5  # the sensor firing while someone clicks "Materialize all"


def _materialize_all(env, home: Path, log: Path) -> subprocess.Popen:
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(("CFREC_", "SUPABASE_", "DAGSTER_"))}
    variables = {
        **scrubbed,
        "DAGSTER_HOME": str(home),
        "CFREC_DATA_DIR": str(env.data_dir),
        "CFREC_MOVIELENS_BASE_URL": env.mirror.root.as_uri() + "/",
    }
    config = json.dumps({"ops": env.fixture_check_config()})
    variables["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    command = [
        str(Path(sys.executable).with_name("dg")),
        "launch",
        "--job",
        "train_and_deploy",
        "--config-json",
        config,
    ]
    return subprocess.Popen(command, env=variables, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        r.event_log_entry.dagster_event.asset_key.to_user_string(): {
            k: v.value for k, v in r.event_log_entry.asset_materialization.metadata.items()
        }
        for r in records
    }


def _check_targets(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[bool, str]]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        out[evaluation.check_name] = (evaluation.passed, evaluation.target_materialization_data.run_id)
    return out


def test_two_overlapping_whole_graph_runs_both_deploy_their_own_version(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    first = _materialize_all(env, home, tmp_path / "first.log")
    time.sleep(START_GAP_SECONDS)
    second = _materialize_all(env, home, tmp_path / "second.log")
    codes = [first.wait(timeout=600), second.wait(timeout=600)]
    logs = [(tmp_path / name).read_text(errors="replace")[-3000:] for name in ("first.log", "second.log")]
    assert codes == [0, 0], logs

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = sorted(instance.get_run_records(), key=lambda r: r.start_time)
        assert len(runs) == 2 and all(r.dagster_run.is_success for r in runs)
        # The runs really overlapped: the second started before the first ended.
        assert runs[1].start_time < runs[0].end_time, "the two runs did not overlap; the test proves nothing"
        versions = []
        for record in runs:
            run_id = record.dagster_run.run_id
            meta = _materializations(instance, run_id)
            version = meta["svd_model"]["version"]
            versions.append(version)
            assert meta["cv_metrics"]["version"] == meta["deployed_model"]["version"] == version
            assert meta["deployed_model"]["action"] == "promote"
            assert meta["deployed_model"]["rmse_mean"] == meta["cv_metrics"]["rmse_mean"]
            assert meta["deployed_model"]["svd_model_sha256"] == meta["svd_model"]["svd_model_sha256"]
            # Every check of this run judged this run's materializations, and passed.
            targets = _check_targets(instance, run_id)
            assert len(targets) == len(ALL_CHECKS) and all(
                passed and target == run_id for passed, target in targets.values()
            )
            # Each run's inputs are its own files: the combined table it trained on is its own.
            assert meta["combined_ratings"]["path"].endswith(f"{run_id}.parquet")

    assert versions[0] != versions[1]
    manifest = open_target(env.serving_dir).read_manifest()
    assert manifest["version"] in versions
    assert {entry["version"] for entry in open_target(env.serving_dir).list_versions()} == set(versions)
    assert manifest["previous_version"] == next(v for v in versions if v != manifest["version"])
    # The served files are the ones that version's svd_model wrote.
    served = tree_digest(env.serving_dir / "versions" / manifest["version"])
    trained = tree_digest(env.data_dir / "models" / manifest["version"])
    assert {name: served[name] for name in ("svd_model.pkl", "cf_trainset.pkl")} == {
        name: trained[name] for name in ("svd_model.pkl", "cf_trainset.pkl")
    }
