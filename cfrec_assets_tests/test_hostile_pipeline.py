"""Hostile inputs inside the graph (issue 8): app rows of the wrong type, ids that overflow,
a model file swapped under a check, a deployment started while another run is checking,
names that are not identifiers, an empty rollback target."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from cfrec_assets.defs.assets import ALL_ASSETS
from cfrec_assets.defs.checks import ALL_CHECKS, svd_artifacts_load_and_predict
from cfrec_assets.defs.resources import CatalogSource
from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseResource
from cfrec_serving.targets.target import ServingTarget, open_target
from cfrec_testkit.graph import (
    UP_TO_COMBINED,
    check_results,
    failure_messages,
    make_graph_env,
    materialized,
    metadata,
    tree_digest,
)
from cfrec_testkit.postgres import insert_ratings
from cfrec_testkit.postgrest import TEST_API_KEY


@pytest.fixture
def env(tmp_path: Path, postgrest, ratings_db):
    env = make_graph_env(tmp_path)
    env.supabase = SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=0, timeout_seconds=2)
    env.mapped = sorted({e.tmdb_id for e in env.mirror.expected.values() if e.tmdb_id is not None})
    return env


def app_rows(mapped: list[int], n: int = 300) -> list[tuple]:
    return [(f"user-{i % 9}", mapped[i % 30], 0.5 + (i % 10) / 2, None) for i in range(n)]


def retype(conninfo: str, column: str, sql_type: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE ratings ALTER COLUMN {column} TYPE {sql_type} USING {column}::{sql_type}")


# --- every app row invalid: "read N, kept 0" is not "ok" ---------------------------------------


def test_all_rows_invalid_is_reported_and_warns_before_any_app_champion(env, ratings_db) -> None:
    retype(ratings_db, "rating", "text")  # the app stores ratings as text: every row is invalid
    insert_ratings(ratings_db, app_rows(env.mapped))
    with dg.instance_for_test() as instance:
        result = env.materialize(instance)
    meta = metadata(result, "supabase_ratings")
    assert meta["status"] == "all_rows_invalid" and meta["rows_read"] == 300 and meta["ratings"] == 0
    assert meta["dropped_share"] == 1.0 and meta["dropped_invalid_rating"] == 300
    assert "ratings id 1: " in meta["dropped_examples"]["dropped_invalid_rating"][0]
    verdicts = check_results(result)
    assert verdicts["supabase_ratings_were_read"] is False
    # No champion learned from app users yet: a MovieLens-only first model may still ship, flagged.
    assert verdicts["supabase_rows_mostly_valid"] is False and result.success
    assert "deployed_model" in materialized(result)


def test_all_rows_invalid_blocks_a_retrain_over_a_champion_with_app_ratings(env, ratings_db) -> None:
    insert_ratings(ratings_db, app_rows(env.mapped))
    with dg.instance_for_test() as instance:
        champion = env.materialize(instance)
        assert champion.success and metadata(champion, "combined_ratings")["real_ratings"] > 0
        before = tree_digest(env.serving_dir)
        retype(ratings_db, "rating", "text")
        result = env.materialize(instance)
    assert not result.success
    assert check_results(result)["supabase_rows_mostly_valid"] is False
    assert "combined_ratings" not in materialized(result) and "deployed_model" not in materialized(result)
    assert tree_digest(env.serving_dir) == before


@pytest.mark.parametrize("reader", ["rest", "postgres"])
def test_an_id_too_large_for_64_bits_is_dropped_and_named(env, ratings_db, postgrest, reader) -> None:
    retype(ratings_db, "tmdb_id", "numeric")
    insert_ratings(ratings_db, [*app_rows(env.mapped, 20), ("user-x", 10**30, 4.0, None)])
    if reader == "postgres":
        env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=["supabase_ratings"])
    assert result.success, failure_messages(result)
    meta = metadata(result, "supabase_ratings")
    assert (meta["ratings"], meta["dropped_invalid_ids"]) == (20, 1)
    [example] = meta["dropped_examples"]["dropped_invalid_ids"]
    assert example.startswith("ratings id 21: ") and "tmdb_id=" in example


# --- checks unpickle only bytes they hashed -----------------------------------------------------


class _Marker:
    """Unpickling this runs code: it creates the file named by the test."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_check_never_unpickles_a_file_swapped_after_training(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        trained = env.materialize(
            instance,
            selection=[*UP_TO_COMBINED, "svd_model"],
        )
        assert trained.success
        model_file = Path(metadata(trained, "svd_model")["model_path"]) / "svd_model.pkl"
        marker = tmp_path / "code-ran"
        model_file.write_bytes(pickle.dumps(_Marker(str(marker))))
        # The check reads each file once and unpickles only those bytes after hashing them, so
        # there is no moment between "hash verified" and "unpickled" for a swap to slip into.
        rerun = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=dg.AssetSelection.checks(svd_artifacts_load_and_predict),
            instance=instance,
            resources=env.resources(),
            raise_on_error=False,
        )
    assert check_results(rerun) == {"svd_artifacts_load_and_predict": False}
    assert not marker.exists(), "a swapped pickle was loaded: its code ran"


# --- a deployment while another run is still checking --------------------------------------------


def test_gate_says_another_run_is_still_checking(tmp_path: Path, monkeypatch) -> None:
    env = make_graph_env(tmp_path)
    release, checking = threading.Event(), threading.Event()
    real_read_manifest = ServingTarget.read_manifest

    def slow_read_manifest(*args, **kwargs):  # holds the champion check open until the test says so
        checking.set()
        release.wait(timeout=120)
        return real_read_manifest(*args, **kwargs)

    with dg.instance_for_test() as instance:
        assert env.materialize(instance).success
        monkeypatch.setattr(ServingTarget, "read_manifest", slow_read_manifest)
        results = {}
        retrain = threading.Thread(
            target=lambda: results.setdefault(
                "retrain", env.materialize(instance, selection=["svd_model", "cv_metrics"])
            )
        )
        retrain.start()
        try:
            assert checking.wait(timeout=120), "the retrain never reached its champion check"
            before = tree_digest(env.serving_dir)
            # svd_model and cv_metrics of the retrain are materialized; one of its checks is not done.
            alone = env.materialize(instance, selection=["deployed_model"])
        finally:
            release.set()
            retrain.join(timeout=300)
    message = failure_messages(alone)["deployed_model"]
    retrain_version = metadata(results["retrain"], "svd_model")["version"]
    assert f"is still checking version {retrain_version}" in message, message
    assert "AttributeError" not in message
    assert tree_digest(env.serving_dir) == before
    assert results["retrain"].success


# --- names and config that are not what they look like -------------------------------------------


@pytest.mark.parametrize("table", ["../admin", "ratings?select=*", "a b", "x.y.z", ""])
def test_table_names_must_be_identifiers(table: str) -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        SupabaseResource(table=table)
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        CatalogSource(supabase_table=table or "-")


def test_column_names_must_be_identifiers() -> None:
    with pytest.raises(ValueError, match="user_column"):
        SupabasePostgresResource(user_column='user_id"; drop table ratings; --')
    assert SupabaseResource(table="public.ratings").table == "public.ratings"


def test_empty_rollback_target_is_refused_not_read_as_promote(tmp_path: Path) -> None:
    env = make_graph_env(tmp_path)
    with dg.instance_for_test() as instance:
        assert env.materialize(instance).success
        before = tree_digest(env.serving_dir)
        result = env.materialize(
            instance, selection=["deployed_model"], ops={"deployed_model": {"config": {"rollback_to": ""}}}
        )
    assert not result.success
    assert "rollback_to is empty" in failure_messages(result)["deployed_model"]
    assert tree_digest(env.serving_dir) == before and open_target(env.serving_dir).read_manifest() is not None


# --- secrets never land in the instance -----------------------------------------------------------

PLANTED = {
    "download password": "dl-Secret-7f3a",
    "database password": "db-p@ss:w/rd-9c1e",  # '@', ':' and '/' inside: the mis-split case
    "API key": "api-Secret-key-44d2",
}


def test_planted_secrets_never_reach_the_instance_after_failing_runs(tmp_path: Path, postgrest, ratings_db) -> None:
    """Three runs fail on purpose, each with a secret in its settings; then every byte the
    instance stored (run and event databases, logs, metadata) is searched for every spelling."""
    from urllib.parse import quote

    from cfrec_assets.defs.resources import MovieLensSource
    from cfrec_testkit.postgres import free_loopback_port

    env = make_graph_env(tmp_path)
    closed = free_loopback_port()
    home = tmp_path / "instance"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        mirror = f"http://mirror-user:{PLANTED['download password']}@127.0.0.1:{closed}/ml/"
        resources = {**env.resources(), "movielens": MovieLensSource(base_url=mirror, timeout_seconds=2)}
        failed = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=["ml100k_raw"],
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not failed.success
        password = quote(PLANTED["database password"], safe="")
        env.supabase = SupabasePostgresResource(
            db_url=f"postgresql://postgres:{password}@127.0.0.1:{closed}/app", timeout_seconds=2
        )
        assert not env.materialize(instance, selection=["supabase_ratings"]).success
        env.supabase = SupabaseResource(url=postgrest.url, key=PLANTED["API key"], max_retries=0)
        assert not env.materialize(instance, selection=["supabase_ratings"]).success
        messages = " ".join(failure_messages(failed).values())
        assert "127.0.0.1" in messages and "mirror-user" not in messages  # the failure is explained, redacted
    stored = b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())
    assert stored, "the instance stored nothing: the scan would prove nothing"
    for what, secret in PLANTED.items():
        for spelling in {secret, quote(secret, safe=""), quote(secret, safe="").lower()}:
            assert spelling.encode() not in stored, f"{what} ({spelling}) found in the instance directory"
