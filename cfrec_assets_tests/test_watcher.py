"""Hot reload: the watcher follows the manifest, swaps whole models, refuses a bad version."""

import json
import os
import threading
import time
from pathlib import Path

import pytest

from cfrec_serving.loader import NoDeployedModelError
from cfrec_serving.watcher import DeployedModelWatcher
from cfrec_testkit.hostile_artifacts import call_unless_blocked_on
from cfrec_testkit.models import promote_version, version_name, write_model_version


def promote_new(serving: Path, models: Path, n: int):
    tiny = write_model_version(models, version_name(n), seed=n)
    promote_version(tiny, serving)
    return tiny


def test_start_without_a_deployment_fails_loudly(tmp_path):
    with pytest.raises(NoDeployedModelError):
        DeployedModelWatcher(tmp_path / "serving").start()


def test_swaps_to_a_new_version_and_readers_keep_theirs(tmp_path):
    serving = tmp_path / "serving"
    first = promote_new(serving, tmp_path / "models", 1)
    watcher = DeployedModelWatcher(serving, interval=3600).start()
    try:
        in_flight = watcher.model  # a request that started before the swap
        assert watcher.check_now() is False  # nothing changed
        second = promote_new(serving, tmp_path / "models", 2)
        assert watcher.check_now() is True
        assert watcher.version == second.version and in_flight.version == first.version
        user = first.trainset.to_raw_uid(0)
        assert in_flight.recommend(user, 3).model_version == first.version  # still whole and usable
    finally:
        watcher.stop()


def test_bad_new_version_is_refused_and_the_old_one_keeps_serving(tmp_path):
    serving = tmp_path / "serving"
    good = promote_new(serving, tmp_path / "models", 1)
    loads = []

    def counting_load(target):
        from cfrec_serving.loader import load_deployed

        loads.append(target)
        return load_deployed(target)

    watcher = DeployedModelWatcher(serving, interval=3600, load=counting_load).start()
    bad = promote_new(serving, tmp_path / "models", 2)
    artifact = serving / "versions" / bad.version / "cf_model.npz"
    artifact.write_bytes(artifact.read_bytes()[:-10])  # truncated after promotion
    assert watcher.check_now() is False
    assert watcher.version == good.version
    assert bad.version in watcher.last_error and "bytes, expected" in watcher.last_error
    assert watcher.check_now() is False and len(loads) == 2  # the refused version is not retried...
    fixed = promote_new(serving, tmp_path / "models", 3)
    assert watcher.check_now() is True and watcher.version == fixed.version  # ...the next one loads
    assert watcher.last_error is None


def test_unreadable_manifest_keeps_the_model(tmp_path):
    serving = tmp_path / "serving"
    good = promote_new(serving, tmp_path / "models", 1)
    watcher = DeployedModelWatcher(serving, interval=3600).start()
    (serving / "manifest.json").write_text("{torn")
    assert watcher.check_now() is False and watcher.version == good.version
    assert "cannot read the manifest" in watcher.last_error


def test_background_thread_follows_promotions_while_readers_run(tmp_path):
    serving = tmp_path / "serving"
    versions = [promote_new(serving, tmp_path / "models", 1)]
    errors, seen = [], set()
    with DeployedModelWatcher(serving, interval=0.05) as watcher:
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                model = watcher.model  # once per "request"
                try:
                    result = model.recommend(versions[0].trainset.to_raw_uid(0), 5)
                    assert result.model_version == model.version
                    seen.add(model.version)
                except Exception as error:  # pragma: no cover - reported below
                    errors.append(error)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        for n in (2, 3):
            versions.append(promote_new(serving, tmp_path / "models", n))
            deadline = time.monotonic() + 10
            while watcher.version != versions[-1].version and time.monotonic() < deadline:
                time.sleep(0.02)
            assert watcher.version == versions[-1].version
        time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert versions[-1].version in seen
    assert json.loads((serving / "manifest.json").read_text())["version"] == versions[-1].version


def test_a_fifo_version_is_refused_and_a_later_good_version_still_loads(tmp_path):
    """A FIFO in place of cf_model.npz used to block the load forever with the watcher's lock held."""
    serving = tmp_path / "serving"
    good = promote_new(serving, tmp_path / "models", 1)
    watcher = DeployedModelWatcher(serving, interval=3600).start()
    bad = promote_new(serving, tmp_path / "models", 2)
    fifo = serving / "versions" / bad.version / "cf_model.npz"
    fifo.unlink()
    os.mkfifo(fifo)
    assert call_unless_blocked_on(fifo, watcher.check_now) is False
    assert watcher.version == good.version
    assert bad.version in watcher.last_error and "not a regular file (a FIFO)" in watcher.last_error
    fixed = promote_new(serving, tmp_path / "models", 3)
    assert watcher.check_now() is True and watcher.version == fixed.version and watcher.last_error is None
