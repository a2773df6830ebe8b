"""Promote / rollback against real files: atomicity, verification, locking."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
import time
from pathlib import Path

import pytest

from cfrec_serving import storage
from cfrec_serving.targets import folder as deployment
from cfrec_serving.targets.folder import deploy_lock
from cfrec_serving.targets.manifest import DeploymentError, Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.models import TinyModelVersion, sha256_of, version_name, write_model_version

TRAINED_AT = "2026-11-26T07:15:00+00:00"


def promote(source: Path, serving: Path, **promotion) -> dict:
    return open_target(serving).promote(source, Promotion(**promotion))


def rollback(serving: Path, version: str) -> dict:
    return open_target(serving).rollback(version)


def read_manifest(serving: Path) -> dict | None:
    return open_target(serving).read_manifest()


def list_versions(serving: Path) -> list[dict]:
    return open_target(serving).list_versions()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with file contents (None for dirs), to prove 'unchanged'."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None for path in sorted(root.rglob("*"))
    }


def promote_tiny(model: TinyModelVersion, serving: Path, **overrides) -> dict:
    arguments = dict(
        version=model.version,
        metrics={"rmse_mean": 0.91},
        counts={"ratings": len(model.ratings), "real_ratings": 7},
        trained_at=TRAINED_AT,
        expected_sha256=model.sha256,
    )
    return promote(model.path, serving, **{**arguments, **overrides})


@pytest.fixture
def models(tmp_path: Path) -> list[TinyModelVersion]:
    return [write_model_version(tmp_path / "models", version_name(n), seed=n) for n in range(3)]


@pytest.fixture
def serving(tmp_path: Path) -> Path:
    return tmp_path / "serving"


def test_promote_copies_verified_files_and_writes_manifest(models, serving):
    model = models[0]
    manifest = promote_tiny(model, serving, trained_at="2026-11-26T09:15:00+02:00")

    assert manifest == read_manifest(serving)
    assert manifest["version"] == model.version
    assert manifest["previous_version"] is None
    assert manifest["trained_at"] == TRAINED_AT  # normalised to UTC
    assert manifest["metrics"] == {"rmse_mean": 0.91}
    assert manifest["counts"] == {"ratings": len(model.ratings), "real_ratings": 7}
    served = serving / "versions" / model.version
    for name, digest in model.sha256.items():
        assert sha256_of(served / name) == digest
        assert manifest["files"][name] == {"sha256": digest, "bytes": (model.path / name).stat().st_size}
    version_record = json.loads((served / "version.json").read_text())
    assert {k: v for k, v in manifest.items() if k not in ("deployed_at", "previous_version")} == {
        k: v for k, v in version_record.items() if k != "deployed_at"
    }
    assert sorted(p.name for p in (serving / "versions").iterdir()) == [model.version]


def test_second_promote_keeps_first_version_and_records_previous(models, serving):
    promote_tiny(models[0], serving)
    manifest = promote_tiny(models[1], serving)

    assert manifest["version"] == models[1].version
    assert manifest["previous_version"] == models[0].version
    listed = list_versions(serving)
    assert [v["version"] for v in listed] == [models[0].version, models[1].version]
    assert [v["current"] for v in listed] == [False, True]


def test_promoting_the_current_version_again_changes_nothing(models, serving):
    first = promote_tiny(models[0], serving)
    before = snapshot(serving)
    assert promote_tiny(models[0], serving) == first
    assert snapshot(serving) == before


def test_promoting_an_identical_kept_version_reuses_it(models, serving):
    promote_tiny(models[0], serving)
    promote_tiny(models[1], serving)
    kept = (serving / "versions" / models[0].version / "version.json").read_bytes()

    manifest = promote_tiny(models[0], serving, metrics={"rmse_mean": 0.5})

    assert manifest["version"] == models[0].version
    assert manifest["previous_version"] == models[1].version
    assert manifest["metrics"] == {"rmse_mean": 0.91}  # the kept record wins: versions are immutable
    assert (serving / "versions" / models[0].version / "version.json").read_bytes() == kept


def test_same_version_name_with_different_files_is_refused(models, serving):
    promote_tiny(models[0], serving)
    before = snapshot(serving)
    impostor = models[1]
    with pytest.raises(DeploymentError, match="already deployed .* with different files"):
        promote(impostor.path, serving, version=models[0].version, metrics={}, counts={}, trained_at=TRAINED_AT)
    assert snapshot(serving) == before


def test_source_changed_since_training_is_refused(models, serving):
    promote_tiny(models[0], serving)
    before = snapshot(serving)
    model = models[1]
    with (model.path / "svd_model.pkl").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DeploymentError, match="svd_model.pkl .*changed since training"):
        promote_tiny(model, serving)
    assert snapshot(serving) == before


def test_expected_hashes_must_cover_every_artifact(models, serving):
    model = models[0]
    with pytest.raises(DeploymentError, match="must name exactly"):
        promote_tiny(model, serving, expected_sha256={"svd_model.pkl": model.sha256["svd_model.pkl"]})
    assert not serving.exists()


def test_missing_source_file_is_refused_before_touching_serving_dir(models, serving):
    (models[0].path / "cf_trainset.pkl").unlink()
    with pytest.raises(DeploymentError, match="missing artifact .*cf_trainset.pkl"):
        promote_tiny(models[0], serving, expected_sha256=None)
    assert not serving.exists()


@pytest.mark.parametrize("bad_name", ["../escape", "a/b", ".tmp-x", "", "v 1"])
def test_unsafe_version_names_are_refused(models, serving, bad_name):
    with pytest.raises(DeploymentError, match="invalid version name"):
        promote_tiny(models[0], serving, version=bad_name)
    assert not serving.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metrics": {"rmse_mean": float("nan")}}, "metrics must be JSON-serialisable finite"),
        ({"counts": {"ratings": object()}}, "counts must be JSON-serialisable"),
        ({"trained_at": "2026-11-26T07:15:00"}, "timezone-aware"),
        ({"trained_at": "yesterday"}, "not an ISO timestamp"),
    ],
)
def test_bad_metadata_is_refused(models, serving, overrides, message):
    with pytest.raises(DeploymentError, match=message):
        promote_tiny(models[0], serving, **overrides)
    assert not serving.exists()


def test_failed_manifest_write_leaves_serving_dir_as_before(models, serving, monkeypatch):
    promote_tiny(models[0], serving)
    before = snapshot(serving)

    def failing_replace(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", failing_replace)  # the manifest goes through storage.write_atomic
    with pytest.raises(OSError, match="disk full"):
        promote_tiny(models[1], serving)
    assert snapshot(serving) == before  # new version dir and temp manifest removed again


def test_corrupted_copy_is_caught_and_cleaned_up(models, serving, monkeypatch):
    promote_tiny(models[0], serving)
    before = snapshot(serving)
    real_copyfile = shutil.copyfile

    def corrupting_copyfile(source, destination):
        real_copyfile(source, destination)
        with open(destination, "r+b") as handle:
            handle.write(b"X")

    monkeypatch.setattr(deployment.shutil, "copyfile", corrupting_copyfile)
    with pytest.raises(DeploymentError, match="copy of .* does not match its hashes"):
        promote_tiny(models[1], serving)
    assert snapshot(serving) == before


def test_leftovers_of_a_crashed_deployer_are_removed(models, serving):
    promote_tiny(models[0], serving)
    stray_dir = serving / "versions" / ".tmp-crashed-abc"
    stray_dir.mkdir()
    (stray_dir / "svd_model.pkl").write_bytes(b"half")
    stray_manifest = serving / ".tmp-manifest.json-xyz"
    stray_manifest.write_text("{")

    promote_tiny(models[1], serving)

    assert not stray_dir.exists() and not stray_manifest.exists()
    assert [v["version"] for v in list_versions(serving)] == [models[0].version, models[1].version]


def test_rollback_repoints_manifest_after_verifying(models, serving):
    promote_tiny(models[0], serving)
    promote_tiny(models[1], serving)

    manifest = rollback(serving, models[0].version)

    assert manifest == read_manifest(serving)
    assert manifest["version"] == models[0].version
    assert manifest["previous_version"] == models[1].version
    assert manifest["files"]["svd_model.pkl"]["sha256"] == models[0].sha256["svd_model.pkl"]
    assert [v["current"] for v in list_versions(serving)] == [True, False]


def test_rollback_to_current_version_changes_nothing(models, serving):
    promote_tiny(models[0], serving)
    before = snapshot(serving)
    assert rollback(serving, models[0].version)["version"] == models[0].version
    assert snapshot(serving) == before


def test_rollback_to_unknown_version_names_the_kept_ones(models, serving):
    promote_tiny(models[0], serving)
    with pytest.raises(DeploymentError, match=rf"not deployed to .*serving \(kept: \['{models[0].version}'\]\)"):
        rollback(serving, "20250101T000000Z-deadbeef")


def test_rollback_to_tampered_version_is_refused(models, serving):
    promote_tiny(models[0], serving)
    promote_tiny(models[1], serving)
    pickle_path = serving / "versions" / models[0].version / "svd_model.pkl"
    data = bytearray(pickle_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    pickle_path.write_bytes(bytes(data))
    before = snapshot(serving)

    with pytest.raises(DeploymentError, match="refusing to roll back .*svd_model.pkl sha256 does not match"):
        rollback(serving, models[0].version)
    assert snapshot(serving) == before


def test_rollback_without_version_record_is_refused(models, serving):
    promote_tiny(models[0], serving)
    promote_tiny(models[1], serving)
    (serving / "versions" / models[0].version / "version.json").unlink()
    before = snapshot(serving)
    with pytest.raises(DeploymentError, match="version.json is missing"):
        rollback(serving, models[0].version)
    assert snapshot(serving) == before
    assert "error" in list_versions(serving)[0]


def test_promoting_a_damaged_kept_version_is_refused(models, serving):
    promote_tiny(models[0], serving)
    promote_tiny(models[1], serving)
    kept = serving / "versions" / models[0].version / "svd_model.pkl"
    kept.write_bytes(bytes(byte ^ 0xFF for byte in kept.read_bytes()))  # same size, other bytes
    before = snapshot(serving)
    with pytest.raises(DeploymentError, match="kept version .* is damaged: svd_model.pkl sha256 does not match"):
        promote_tiny(models[0], serving)
    assert snapshot(serving) == before


def test_a_version_folder_without_its_record_is_never_overwritten(models, serving):
    promote_tiny(models[0], serving)
    (serving / "versions" / models[1].version).mkdir()  # left by a hand: a rename is all or nothing
    before = snapshot(serving)
    with pytest.raises(DeploymentError, match="exists without version.json; versions are never overwritten"):
        promote_tiny(models[1], serving)
    assert snapshot(serving) == before


def test_read_manifest_distinguishes_absent_from_corrupt(serving):
    assert read_manifest(serving) is None
    assert list_versions(serving) == []
    serving.mkdir()
    (serving / "manifest.json").write_text('{"version": "x"')
    with pytest.raises(DeploymentError, match="manifest.json is not JSON"):
        read_manifest(serving)
    (serving / "manifest.json").write_text('{"hello": 1}')
    with pytest.raises(DeploymentError, match="not a deployment manifest"):
        read_manifest(serving)


def test_lock_makes_a_second_deployer_wait(models, serving):
    serving.mkdir()
    finished = threading.Event()
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            promote_tiny(models[0], serving)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)
        finished.set()

    with deploy_lock(serving):
        worker = threading.Thread(target=deploy)
        worker.start()
        assert not finished.wait(0.3), "promote did not wait for the lock"
        assert read_manifest(serving) is None
    worker.join(5)
    assert finished.is_set() and not errors
    assert read_manifest(serving)["version"] == models[0].version


def _promote_in_child(model: TinyModelVersion, serving: Path, barrier) -> None:
    barrier.wait()
    promote_tiny(model, serving)


def test_concurrent_deployers_never_tear_the_manifest(models, serving):
    serving.mkdir()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(models))
    children = [context.Process(target=_promote_in_child, args=(m, serving, barrier)) for m in models]
    for child in children:
        child.start()
    reads = 0
    while any(child.is_alive() for child in children):
        manifest = read_manifest(serving)  # raises on a torn manifest
        if manifest is not None:
            assert not deployment.verification_problems(serving / "versions" / manifest["version"], manifest["files"])
            reads += 1
        time.sleep(0.001)
    for child in children:
        child.join()
        assert child.exitcode == 0

    final = read_manifest(serving)
    versions = {m.version for m in models}
    assert final["version"] in versions and final["previous_version"] in versions - {final["version"]}
    listed = list_versions(serving)
    assert {v["version"] for v in listed} == versions
    for entry in listed:
        assert not deployment.verification_problems(serving / "versions" / entry["version"], entry["files"])
    assert not [p for p in (serving / "versions").iterdir() if p.name.startswith(".")]
