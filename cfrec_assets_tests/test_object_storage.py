"""Object-storage serving targets against a real S3-protocol server (moto, over HTTP)."""

import json
import logging
import os
import stat
import uuid
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from cfrec_serving.loader import (
    ArtifactVerificationError,
    ModelCacheError,
    NoDeployedModelError,
    current_version,
    load_deployed,
)
from cfrec_serving.targets.manifest import DeploymentError, Promotion
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import failure_messages, make_graph_env, metadata
from cfrec_testkit.models import TinyModelVersion, version_name, write_model_version
from cfrec_testkit.s3_server import FaultyProxy, s3_server

TRAINED_AT = "2026-11-27T01:00:00+00:00"


@pytest.fixture(scope="module")
def server():
    with s3_server() as running:
        yield running


@pytest.fixture
def url(server) -> str:
    return f"s3://{server.bucket}/{uuid.uuid4().hex[:12]}/serving"  # a fresh prefix per test


def promotion(tiny: TinyModelVersion, **overrides) -> Promotion:
    counts = {"ratings": len(tiny.ratings)}
    shipped = Promotion(tiny.version, {"rmse_mean": 0.9}, counts, TRAINED_AT, expected_sha256=tiny.sha256)
    return replace(shipped, **overrides)


def promote_tiny(target, models: Path, n: int, seed: int | None = None) -> TinyModelVersion:
    tiny = write_model_version(models, version_name(n), seed=n if seed is None else seed)
    target.promote(tiny.path, promotion(tiny))
    return tiny


def objects(server, url: str) -> dict[str, bytes]:
    prefix = url.removeprefix(f"s3://{server.bucket}/") + "/"
    client = server.client()
    listed = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: client.get_object(Bucket=server.bucket, Key=o["Key"])["Body"].read() for o in listed
    }


def test_promote_uploads_files_then_manifest_and_the_app_loads_it(server, url, tmp_path):
    target = open_target(url, **server.settings())
    assert target.read_manifest() is None
    tiny = promote_tiny(target, tmp_path / "models", 1)
    stored = objects(server, url)
    assert set(stored) == {
        "manifest.json",
        *(f"versions/{tiny.version}/{name}" for name in ("cf_model.npz", "svd_model.pkl", "cf_trainset.pkl")),
        f"versions/{tiny.version}/version.json",
    }
    for name in ("cf_model.npz", "svd_model.pkl", "cf_trainset.pkl"):
        assert stored[f"versions/{tiny.version}/{name}"] == (tiny.path / name).read_bytes()
    manifest = json.loads(stored["manifest.json"])
    assert manifest["version"] == tiny.version and manifest["previous_version"] is None

    model = load_deployed(target, cache_dir=tmp_path / "cache")
    assert model.version == tiny.version
    user, movie = tiny.trainset.to_raw_uid(0), tiny.trainset.to_raw_iid(0)
    assert model.predict(user, movie).rating == tiny.algo.predict(user, movie).est
    # Only the pickle-free file was downloaded.
    assert sorted(p.name for p in (tmp_path / "cache" / tiny.version).iterdir()) == ["cf_model.npz"]


def test_app_loads_by_url_from_its_environment(server, url, tmp_path, monkeypatch):
    tiny = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 2)
    for name, value in server.env(url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CFREC_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    assert current_version(url) == tiny.version
    assert load_deployed(url).version == tiny.version


def test_cached_file_is_reused_and_a_tampered_cache_is_fetched_again(server, url, tmp_path):
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 3)
    with FaultyProxy(server.endpoint_url) as proxy:
        via_proxy = open_target(url, **server.settings(proxy.endpoint_url))
        load_deployed(via_proxy, cache_dir=tmp_path / "cache")
        downloads = [r for r in proxy.rules.seen if r.startswith("GET") and "cf_model.npz" in r]
        load_deployed(via_proxy, cache_dir=tmp_path / "cache")
        assert [r for r in proxy.rules.seen if r.startswith("GET") and "cf_model.npz" in r] == downloads
        cached = tmp_path / "cache" / tiny.version / "cf_model.npz"
        cached.write_bytes(b"tampered")
        assert load_deployed(via_proxy, cache_dir=tmp_path / "cache").version == tiny.version
        assert len([r for r in proxy.rules.seen if r.startswith("GET") and "cf_model.npz" in r]) == 2


def test_tampered_object_in_the_bucket_is_refused(server, url, tmp_path):
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 4)
    key = url.removeprefix(f"s3://{server.bucket}/") + f"/versions/{tiny.version}/cf_model.npz"
    server.client().put_object(Bucket=server.bucket, Key=key, Body=b"not the model")
    with pytest.raises(ArtifactVerificationError, match="does not match its recorded sha256|bytes, expected"):
        load_deployed(target, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / tiny.version / "cf_model.npz").exists()  # never cached
    with pytest.raises(DeploymentError, match=f"refusing to roll back to '{tiny.version}'"):
        target.rollback(tiny.version)


def test_rollback_repoints_the_manifest_and_keeps_every_version(server, url, tmp_path):
    target = open_target(url, **server.settings())
    first = promote_tiny(target, tmp_path / "models", 5)
    second = promote_tiny(target, tmp_path / "models", 6)
    assert target.read_manifest()["previous_version"] == first.version
    manifest = target.rollback(first.version)
    assert manifest["version"] == first.version and manifest["previous_version"] == second.version
    assert load_deployed(target, cache_dir=tmp_path / "cache").version == first.version
    listed = {v["version"]: v["current"] for v in target.list_versions()}
    assert listed == {first.version: True, second.version: False}
    with pytest.raises(DeploymentError, match="cannot roll back to '20990101T000000Z-x'"):
        target.rollback("20990101T000000Z-x")


def test_promoting_the_same_version_again_reuses_it_and_a_different_one_is_refused(server, url, tmp_path):
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 7)
    before = objects(server, url)
    again = target.promote(tiny.path, promotion(tiny, expected_sha256=None))
    assert again["version"] == tiny.version and objects(server, url) == before
    other = write_model_version(tmp_path / "other", tiny.version, seed=99)
    with pytest.raises(DeploymentError, match="already deployed .* with different files"):
        target.promote(other.path, Promotion(version=tiny.version, metrics={}, counts={}, trained_at=TRAINED_AT))
    assert objects(server, url) == before


@pytest.mark.parametrize("failing", ["svd_model.pkl", "version.json", "manifest.json"])
def test_upload_failing_half_way_leaves_the_served_manifest_untouched(server, url, tmp_path, failing):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 8)
    before = objects(server, url)
    with FaultyProxy(server.endpoint_url) as proxy:
        proxy.rules.fail.append(("PUT", failing, 503))
        target = open_target(url, **server.settings(proxy.endpoint_url))
        with pytest.raises(DeploymentError, match=f"PUT .*/{failing} at .* failed \\(InternalError, HTTP 503\\)"):
            promote_tiny(target, tmp_path / "models", 9)
    assert objects(server, url)["manifest.json"] == before["manifest.json"]
    assert load_deployed(url and open_target(url, **server.settings()), cache_dir=tmp_path / "c").version == (
        champion.version
    )
    # The interrupted version has no version.json (or is not current): promoting it again completes it.
    retried = promote_tiny(open_target(url, **server.settings()), tmp_path / "retry", 9)
    assert open_target(url, **server.settings()).read_manifest()["version"] == retried.version


def test_rollback_to_an_interrupted_upload_names_its_missing_record(server, url, tmp_path):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 25)
    with FaultyProxy(server.endpoint_url) as proxy:
        proxy.rules.fail.append(("PUT", "version.json", 503))
        with pytest.raises(DeploymentError, match="version.json"):
            promote_tiny(open_target(url, **server.settings(proxy.endpoint_url)), tmp_path / "models", 26)
    target, interrupted = open_target(url, **server.settings()), version_name(26)
    missing = f"{url}/versions/{interrupted}/version.json at 127.0.0.1 is missing"
    assert {v["version"]: v.get("error") for v in target.list_versions()} == {
        champion.version: None,
        interrupted: missing,
    }
    with pytest.raises(DeploymentError) as refused:
        target.rollback(interrupted)
    assert str(refused.value) == f"cannot roll back to {interrupted!r}: {missing}"
    assert target.read_manifest()["version"] == champion.version


def refusal(target, attempt, *args) -> str:
    """The DeploymentError ``attempt(*args)`` raises, with the target's name as ``<target>``."""
    with pytest.raises(DeploymentError) as refused:
        attempt(*args)
    return str(refused.value).replace(target.describe(), "<target>")


def test_the_folder_and_the_bucket_follow_the_same_rules(server, url, tmp_path):
    """Promote and rollback are written once over both backends: the same refusals, the same listing."""
    outcomes = {}
    for kind, target in {
        "folder": open_target(tmp_path / "serving"),
        "bucket": open_target(url, **server.settings()),
    }.items():
        first, second = promote_tiny(target, tmp_path / kind, 27), promote_tiny(target, tmp_path / kind, 28)
        impostor = write_model_version(tmp_path / f"{kind}-impostor", first.version, seed=99)
        same_name = Promotion(first.version, metrics={}, counts={}, trained_at=TRAINED_AT)
        refusals = [
            refusal(target, target.promote, impostor.path, same_name),
            refusal(target, target.rollback, "20990101T000000Z-x"),
        ]
        again = target.promote(first.path, same_name)  # identical files: the kept version is served again
        listed = [(v["version"], v["current"]) for v in target.list_versions()]
        outcomes[kind] = (refusals, again["previous_version"], listed, target.rollback(second.version)["version"])
    assert (
        outcomes["folder"]
        == outcomes["bucket"]
        == (
            [
                f"version {first.version!r} is already deployed to <target> with different files; versions are never "
                "overwritten, train a new version instead",
                f"cannot roll back to '20990101T000000Z-x': not deployed to <target> (kept: {[first.version, second.version]})",
            ],
            second.version,
            [(first.version, True), (second.version, False)],
            second.version,
        )
    )


def test_an_upload_that_does_not_read_back_is_never_served(server, url, tmp_path):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 29)
    target = open_target(url, **server.settings())
    real_put = target.backend.store.put

    def put_then_clobber(data, *parts, **kwargs):
        real_put(data, *parts, **kwargs)
        if parts[-1] == "cf_model.npz":  # another writer replaces it before it is read back
            real_put(b"not the model", *parts)

    target.backend.store.put = put_then_clobber
    with pytest.raises(DeploymentError, match="upload not verified: .*/cf_model.npz at .* is 13 bytes, expected"):
        promote_tiny(target, tmp_path / "models", 30)
    assert f"versions/{version_name(30)}/version.json" not in objects(server, url)  # not a complete version
    assert open_target(url, **server.settings()).read_manifest()["version"] == champion.version


def test_promoting_a_kept_version_whose_objects_changed_is_refused(server, url, tmp_path):
    target = open_target(url, **server.settings())
    kept, champion = promote_tiny(target, tmp_path / "models", 31), promote_tiny(target, tmp_path / "models", 32)
    key = object_key(url, server, "versions", kept.version, "svd_model.pkl")
    server.client().put_object(Bucket=server.bucket, Key=key, Body=b"tampered")
    with pytest.raises(
        DeploymentError, match=f"kept version '{kept.version}' is damaged: .*svd_model.pkl at .* is 8 bytes"
    ):
        target.promote(kept.path, promotion(kept))
    assert target.read_manifest()["version"] == champion.version


def test_server_gone_mid_promote_leaves_the_manifest_untouched(server, url, tmp_path):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 10)
    before = objects(server, url)["manifest.json"]
    with FaultyProxy(server.endpoint_url) as proxy:
        proxy.rules.down_after = r"/svd_model\.pkl"  # the first file lands, then the server is gone
        target = open_target(url, **server.settings(proxy.endpoint_url))
        with pytest.raises(DeploymentError, match="PUT .*/cf_trainset.pkl at .* failed: \\w+Error"):
            promote_tiny(target, tmp_path / "models", 11)
    assert objects(server, url)["manifest.json"] == before
    assert open_target(url, **server.settings()).read_manifest()["version"] == champion.version


def test_wrong_credentials_give_a_clear_error_without_the_secret(server, url, tmp_path):
    settings = {**server.settings(), "secret_access_key": "wrong-secret-0123456789"}
    target = open_target(url, **settings)
    with pytest.raises(DeploymentError) as refused:
        promote_tiny(target, tmp_path / "models", 12)
    message = str(refused.value)
    assert "SignatureDoesNotMatch" in message and "check the access key id and secret" in message
    assert "wrong-secret" not in message and server.secret_access_key not in message
    unknown = open_target(url, **{**server.settings(), "access_key_id": "AKIAUNKNOWN000000000"})
    with pytest.raises(ArtifactVerificationError, match="InvalidAccessKeyId"):
        load_deployed(unknown, cache_dir=tmp_path / "cache")


def test_a_debug_root_logger_never_sees_the_access_key_id(server, url, tmp_path, caplog):
    """botocore's DEBUG lines quote each request's Authorization header. With the root logger at
    DEBUG (a developer's basicConfig, or Dagster's python_log_level on the root), promoting and
    loading log no key id; a boto logger set to DEBUG on purpose is the README's design limit."""
    caplog.set_level(logging.DEBUG)
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 13)
    assert load_deployed(target, cache_dir=tmp_path / "cache").version == tiny.version
    assert server.access_key_id not in caplog.text
    assert "Credential=" not in caplog.text
    assert any(r.name.startswith("urllib3") and r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG was on


def test_nothing_deployed_in_the_bucket(server, url, tmp_path):
    with pytest.raises(NoDeployedModelError, match="no model is deployed"):
        load_deployed(open_target(url, **server.settings()), cache_dir=tmp_path / "cache")


def test_graph_promotes_to_the_bucket_without_leaking_the_secret(server, url, tmp_path, monkeypatch):
    env = make_graph_env(tmp_path)
    for name, value in server.env(url).items():
        monkeypatch.setenv(name, value)
    from cfrec_assets.defs.resources import build_resources

    serving = build_resources()["serving"]
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, resources={"serving": serving})
        assert result.success, failure_messages(result)
        deployed = metadata(result, "deployed_model")
        assert deployed["serving_target"] == f"{url} at 127.0.0.1"
        manifest = open_target(url, **server.settings()).read_manifest()
        assert manifest["version"] == deployed["version"] == metadata(result, "svd_model")["version"]
        secret = server.secret_access_key.encode()
        stored = [p for p in Path(instance.root_directory).rglob("*") if p.is_file()]
        assert stored and not [p for p in stored if secret in p.read_bytes()]
    assert not (env.serving_dir / "manifest.json").exists()  # nothing went to the local folder


def test_watcher_follows_the_bucket(server, url, tmp_path):
    from functools import partial

    from cfrec_serving.watcher import DeployedModelWatcher

    target = open_target(url, **server.settings())
    first = promote_tiny(target, tmp_path / "models", 13)
    load = partial(load_deployed, cache_dir=tmp_path / "cache")
    watcher = DeployedModelWatcher(target, interval=3600, load=load).start()
    assert watcher.version == first.version
    second = promote_tiny(target, tmp_path / "models", 14)
    assert watcher.check_now() is True and watcher.version == second.version
    watcher.stop()


def test_cli_lists_and_recommends_from_the_bucket(server, url, tmp_path):
    import os
    import subprocess
    import sys

    target = open_target(url, **server.settings())
    first = promote_tiny(target, tmp_path / "models", 15)
    second = promote_tiny(target, tmp_path / "models", 16)
    env = {**os.environ, **server.env(url), "CFREC_MODEL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CFREC_SERVING_DIR", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cfrec_assets", *args], env=env, capture_output=True, text=True)

    listed = cli("deployments", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)["versions"]] == [first.version, second.version]
    user = second.trainset.to_raw_uid(0)
    shown = cli("recommend", "--user", user, "-n", "3", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["model_version"] == second.version
    assert server.secret_access_key not in listed.stdout + listed.stderr + shown.stdout + shown.stderr


def test_two_deployers_at_once_the_second_manifest_write_is_refused(server, url, tmp_path):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 17)
    slow = open_target(url, **server.settings())
    real_put = slow.backend.store.put
    raced = {}

    def put_after_a_rival(data, *parts, **kwargs):
        if parts[-1] == "manifest.json" and not raced:  # another deployer finishes first
            raced["rival"] = promote_tiny(open_target(url, **server.settings()), tmp_path / "rival", 18)
        return real_put(data, *parts, **kwargs)

    slow.backend.store.put = put_after_a_rival
    with pytest.raises(DeploymentError, match="changed while version .* was being deployed"):
        promote_tiny(slow, tmp_path / "models", 19)
    manifest = open_target(url, **server.settings()).read_manifest()
    assert manifest["version"] == raced["rival"].version and manifest["previous_version"] == champion.version
    # The refused deployer's version is complete and kept: deploying it again serves it.
    again = open_target(url, **server.settings())
    retried = promote_tiny(again, tmp_path / "again", 19)
    assert again.read_manifest()["version"] == retried.version


def test_missing_bucket_is_named(server, tmp_path):
    target = open_target("s3://no-such-bucket-here/serving", **server.settings())
    with pytest.raises(DeploymentError, match="bucket 'no-such-bucket-here' does not exist"):
        promote_tiny(target, tmp_path / "models", 20)


def object_key(url: str, server, *parts: str) -> str:
    return "/".join([url.removeprefix(f"s3://{server.bucket}/"), *parts])


def test_object_larger_than_recorded_is_refused_by_its_content_length(server, url, tmp_path):
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 21)
    recorded = target.read_manifest()["files"]["cf_model.npz"]["bytes"]
    key = object_key(url, server, "versions", tiny.version, "cf_model.npz")
    server.client().put_object(Bucket=server.bucket, Key=key, Body=bytes(8 << 20))
    with pytest.raises(ArtifactVerificationError, match=f"is 8,388,608 bytes, more than the {recorded:,} expected"):
        load_deployed(target, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / tiny.version / "cf_model.npz").exists()


def test_body_without_a_length_is_read_only_one_byte_past_the_recorded_size(server, url, tmp_path):
    tiny = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 22)
    key = object_key(url, server, "versions", tiny.version, "cf_model.npz")
    server.client().put_object(Bucket=server.bucket, Key=key, Body=bytes(8 << 20))
    with FaultyProxy(server.endpoint_url) as proxy:
        proxy.rules.chunked = r"/cf_model\.npz"  # no Content-Length to refuse it by
        target = open_target(url, **server.settings(proxy.endpoint_url))
        recorded = target.read_manifest()["files"]["cf_model.npz"]["bytes"]
        with pytest.raises(ArtifactVerificationError, match=f"body runs past the {recorded:,} bytes expected"):
            load_deployed(target, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("body", "message"), [(b"[" * 100_000, "nested deeper than 32 levels"), (b" " * (300 << 10), "more than the")]
)
def test_hostile_manifest_objects_are_refused_before_parsing(server, url, tmp_path, body, message):
    server.client().put_object(Bucket=server.bucket, Key=object_key(url, server, "manifest.json"), Body=body)
    target = open_target(url, **server.settings())
    with pytest.raises(ArtifactVerificationError, match=message):
        load_deployed(target, cache_dir=tmp_path / "cache")
    with pytest.raises(ArtifactVerificationError, match=message):
        current_version(target)


OTHER_UID = 4242  # tests run as root, which may hand files to any uid: "another local user"


def plant(kind: str, cache: Path, version: str, attacker: Path) -> None:
    """What another local user could leave in a shared cache before the app's first download."""
    cache.mkdir()
    planted = cache / version
    if kind == "cache owned by another user":
        os.chown(cache, OTHER_UID, OTHER_UID)
    elif kind == "cache writable by others":
        cache.chmod(0o777)
    elif kind == "symlink":
        planted.symlink_to(attacker)
    elif kind == "file":
        planted.write_bytes(b"")
    else:  # a folder of another user
        planted.mkdir()
        os.chown(planted, OTHER_UID, OTHER_UID)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("cache owned by another user", f"cache belongs to uid {OTHER_UID}, not to this user"),
        ("cache writable by others", "cache is writable by other users \\(mode 777\\)"),
        ("symlink", "is a symlink, not a folder"),
        ("file", "is a file, not a folder"),
        ("folder of another user", f"belongs to uid {OTHER_UID}, not to this user"),
    ],
)
def test_cache_planted_by_another_user_is_refused_and_never_written_through(server, url, tmp_path, kind, message):
    target = open_target(url, **server.settings())
    tiny = promote_tiny(target, tmp_path / "models", 23)
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    plant(kind, tmp_path / "cache", tiny.version, attacker)
    with pytest.raises(ModelCacheError, match=message):
        load_deployed(target, cache_dir=tmp_path / "cache")
    assert list(attacker.iterdir()) == [] and not list((tmp_path / "cache").rglob("cf_model.npz"))


def test_default_cache_is_created_private(server, url, tmp_path, monkeypatch):
    tiny = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 24)
    for name, value in server.env(url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CFREC_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    assert load_deployed(url).version == tiny.version
    cache = tmp_path / "home" / ".cache" / "cfrec" / "models"
    for folder in (cache, cache / tiny.version):
        info = folder.lstat()
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
    assert (cache / tiny.version / "cf_model.npz").read_bytes() == (tiny.path / "cf_model.npz").read_bytes()


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_a_kept_champion_is_recorded_in_the_manifest_only_while_it_is_served(server, url, tmp_path, where):
    target = open_target(url if where == "bucket" else tmp_path / "serving", **server.settings())
    first, second = (promote_tiny(target, tmp_path / "models", n) for n in (21, 22))
    entries = [{"challenger": f"lost-{n}", "decision": f"kept champion {second.version}: #{n}"} for n in range(22)]
    for entry in entries:
        target.record_kept_champion(second.version, entry)
    manifest = target.read_manifest()
    assert manifest["version"] == second.version and manifest["previous_version"] == first.version
    assert manifest["kept_champion"] == entries[::-1][:20]  # newest first, bounded
    assert load_deployed(target, cache_dir=tmp_path / "cache").version == second.version

    # Compared with a version that is no longer served: refused, the manifest untouched.
    with pytest.raises(DeploymentError, match=f"compared with {first.version}, but the target now serves"):
        target.record_kept_champion(first.version, {"challenger": "late"})
    assert target.read_manifest() == manifest
    # A new champion starts a new list.
    target.rollback(first.version)
    assert "kept_champion" not in target.read_manifest()


def test_a_kept_champion_note_racing_a_deployer_is_refused_not_written_over_it(server, url, tmp_path):
    champion = promote_tiny(open_target(url, **server.settings()), tmp_path / "models", 23)
    slow = open_target(url, **server.settings())
    real_put = slow.backend.store.put
    raced = {}

    def put_after_a_rival(data, *parts, **kwargs):
        if parts[-1] == "manifest.json" and not raced:  # a promotion lands between read and write
            raced["rival"] = promote_tiny(open_target(url, **server.settings()), tmp_path / "rival", 24)
        return real_put(data, *parts, **kwargs)

    slow.backend.store.put = put_after_a_rival
    with pytest.raises(DeploymentError, match="changed while the challenger was being recorded"):
        slow.record_kept_champion(champion.version, {"challenger": "lost"})
    manifest = open_target(url, **server.settings()).read_manifest()
    assert manifest["version"] == raced["rival"].version and "kept_champion" not in manifest
