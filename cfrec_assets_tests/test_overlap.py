"""Two whole-graph runs overlapping in time, in separate processes on one instance.

Each run must load what it produced itself: both succeed, and each deployment's manifest,
metrics, checks and files belong to that run's model version. The overlap is forced, not timed:
the mirror answers neither run's ml-100k.zip request in full until both runs have asked for it
(it sends the body a byte at a time meanwhile, as a slow mirror would), so both runs are under
way at once however much later one of them starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_serving.targets.target import open_target
from cfrec_testkit.dagster_dev import REPO_ROOT
from cfrec_testkit.graph import make_graph_env, tree_digest
from cfrec_testkit.http_server import FolderServer


def _materialize_all(env, home: Path, mirror_url: str, log: Path) -> subprocess.Popen:
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(("CFREC_", "SUPABASE_", "DAGSTER_"))}
    variables = {
        **scrubbed,
        "DAGSTER_HOME": str(home),
        "CFREC_DATA_DIR": str(env.data_dir),
        "CFREC_MOVIELENS_BASE_URL": mirror_url,
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


def _check_verdicts(instance: dg.DagsterInstance, run_id: str) -> dict[str, bool]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {
        evaluation.check_name: evaluation.passed
        for evaluation in (record.event_log_entry.dagster_event.event_specific_data for record in records)
    }


def test_two_overlapping_whole_graph_runs_both_deploy_their_own_version(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The instance exists before the runs, as it does wherever the sensor runs: two processes
    # creating a fresh SQLite instance at once race on its schema (alembic: "more than one head").
    dg.DagsterInstance.from_config(str(home)).dispose()
    # The sensor firing while someone clicks "Materialize all": both runs ask for ml-100k.zip.
    with FolderServer(env.mirror.root) as mirror:
        mirror.state.meet["ml-100k.zip"] = 2
        launched = [_materialize_all(env, home, mirror.url, tmp_path / f"{name}.log") for name in ("first", "second")]
        try:
            codes = [process.wait(timeout=600) for process in launched]
        except subprocess.TimeoutExpired:  # e.g. a run that died before asking keeps the other waiting
            codes = [process.poll() for process in launched]
        finally:  # a run that hangs is not left behind
            for process in launched:
                if process.poll() is None:
                    process.kill()
    logs = [(tmp_path / name).read_text(errors="replace")[-3000:] for name in ("first.log", "second.log")]
    assert codes == [0, 0], logs
    assert mirror.state.requests.count("/ml-100k.zip") == 2

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = sorted(instance.get_run_records(), key=lambda r: r.start_time)
        assert len(runs) == 2 and all(r.dagster_run.is_success for r in runs)
        # The runs really overlapped (the mirror made sure): the second started before the first ended.
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
            # Every check ran in this run and passed. (Not asserted: the target Dagster recorded for
            # each, which is the other run's materialization when that run stored one meanwhile.
            # The gate does not rely on it: deployed_model above shipped this run's version.)
            verdicts = _check_verdicts(instance, run_id)
            assert len(verdicts) == len(ALL_CHECKS) and all(verdicts.values()), verdicts
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
