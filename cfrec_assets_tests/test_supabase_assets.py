"""supabase_ratings and catalog_ids inside the graph: failure policy, fallback, secrets, paths."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest

from cfrec_assets.defs.resources import CatalogSource
from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseResource
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import (
    UP_TO_COMBINED,
    check_descriptions,
    check_evaluations,
    check_results,
    failure_messages,
    make_graph_env,
    materialized,
    metadata,
    tree_digest,
)
from cfrec_testkit.postgres import create_catalog_table, insert_ratings
from cfrec_testkit.postgrest import TEST_API_KEY

RATINGS = ["supabase_ratings"]


@pytest.fixture
def env(tmp_path: Path, postgrest, ratings_db):
    env = make_graph_env(tmp_path)
    env.supabase = SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=0, timeout_seconds=2)
    mapped = sorted({e.tmdb_id for e in env.mirror.expected.values() if e.tmdb_id is not None})
    insert_ratings(ratings_db, [(f"user-{i % 9}", mapped[i % 30], 0.5 + (i % 10) / 2, None) for i in range(2500)])
    env.mapped = mapped
    return env


def all_logs(instance: dg.DagsterInstance) -> str:
    """Every event and log line of every run in the instance, as text."""
    return "\n".join(
        f"{record.user_message} {record.dagster_event}"
        for run in instance.get_runs()
        for record in instance.all_logs(run.run_id)
    )


def test_every_row_is_read_through_the_1000_row_cap(env) -> None:
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=RATINGS)
    meta = metadata(result, "supabase_ratings")
    assert meta["status"] == "ok" and meta["reader"] == "rest"
    assert meta["rows_read"] == meta["server_count"] == 2500
    assert meta["pages"] == 4  # three full pages and the empty one that ends the read
    assert meta["ratings"] == 2500


def test_invalid_rows_are_dropped_and_counted(env, ratings_db) -> None:
    insert_ratings(ratings_db, [("user-x", 862, 7.5, None), ("user-y", 862, 0.0, None), ("", 862, 3.0, None)])
    with dg.instance_for_test() as instance:
        meta = metadata(env.materialize(instance, selection=RATINGS), "supabase_ratings")
    assert meta["rows_read"] == 2503 and meta["ratings"] == 2500
    assert meta["dropped_rating_out_of_range"] == 2 and meta["dropped_missing_ids"] == 1


def test_wrong_key_fails_after_retries_naming_the_cause_not_the_key(env, postgrest) -> None:
    env.supabase = SupabaseResource(url=postgrest.url, key="wrong-secret-key-123", max_retries=0)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=RATINGS)
        logs = all_logs(instance)
    assert not result.success
    message = failure_messages(result)["supabase_ratings"]
    assert "401" in message and "wrong-secret-key-123" not in message
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2  # the asset's RetryPolicy, then the failure
    assert "wrong-secret-key-123" not in logs and TEST_API_KEY not in logs


def test_unknown_table_and_outage_fail_clearly(env, postgrest) -> None:
    env.supabase = SupabaseResource(url=postgrest.url, key=TEST_API_KEY, table="no_such_table", max_retries=0)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=RATINGS)
    assert "no_such_table" in failure_messages(result)["supabase_ratings"]

    env.supabase = SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=0)
    postgrest.stop()
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=RATINGS)
    assert not result.success and "unreachable" in failure_messages(result)["supabase_ratings"]


def test_5xx_then_success_is_retried(env, postgrest) -> None:
    env.supabase = SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=2, retry_backoff_seconds=0.05)
    postgrest.fail_next(2, status=503)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=RATINGS)
    assert result.success and metadata(result, "supabase_ratings")["rows_read"] == 2500


def test_fallback_is_opt_in_warns_and_cannot_ship_a_model_that_forgot_app_users(env, postgrest) -> None:
    """With allow_fallback an outage gives an empty table, status unreachable and a WARN check,
    and the deployment gate refuses the model because the champion knew more app ratings."""
    with dg.instance_for_test() as instance:
        champion = env.materialize(instance)
        assert champion.success and metadata(champion, "combined_ratings")["real_ratings"] > 0
        before = tree_digest(env.serving_dir)
        postgrest.stop()
        result = env.materialize(instance, ops={"supabase_ratings": {"config": {"allow_fallback": True}}})
    meta = metadata(result, "supabase_ratings")
    assert meta["status"] == "unreachable" and meta["ratings"] == 0
    verdicts = check_results(result)
    assert verdicts["supabase_ratings_were_read"] is False  # WARN: does not block by itself
    assert verdicts["challenger_no_worse_than_champion"] is False
    # Not a lost comparison to keep quiet about: app data went missing, so the run fails (and alerts).
    assert not result.success
    champion_check = check_evaluations(result)["challenger_no_worse_than_champion"]
    assert champion_check.severity == dg.AssetCheckSeverity.ERROR
    assert "fewer than the champion's" in champion_check.description
    assert "svd_model" in materialized(result) and "deployed_model" not in materialized(result)
    assert tree_digest(env.serving_dir) == before
    assert open_target(env.serving_dir).read_manifest()["version"] == metadata(champion, "deployed_model")["version"]


def test_psycopg_path_reads_the_same_rows(env, ratings_db) -> None:
    with dg.instance_for_test() as instance:
        rest = metadata(env.materialize(instance, selection=RATINGS), "supabase_ratings")
        rest_frame = pd.read_parquet(rest["path"])
        env.supabase = SupabasePostgresResource(db_url=ratings_db)
        pg = metadata(env.materialize(instance, selection=RATINGS), "supabase_ratings")
        pg_frame = pd.read_parquet(pg["path"])
    assert pg["reader"] == "postgres" and rest["reader"] == "rest"
    assert pg["rows_read"] == rest["rows_read"] == 2500
    pd.testing.assert_frame_equal(pg_frame, rest_frame)


def test_secrets_never_reach_metadata(env, ratings_db) -> None:
    env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance)
        logs = all_logs(instance)
    every_value = " ".join(
        str(v) for e in result.get_asset_materialization_events() for v in e.materialization.metadata.values()
    )
    assert TEST_API_KEY not in every_value and TEST_API_KEY not in logs
    assert ratings_db not in every_value


def test_catalog_from_a_supabase_table(env, ratings_db) -> None:
    create_catalog_table(ratings_db, tmdb_ids=env.mapped[:10])
    env.catalog = CatalogSource(supabase_table="movies")
    with dg.instance_for_test() as instance:
        result = env.materialize(
            instance,
            ops={
                "combined_ratings_combined_ratings_are_valid": {"config": {"min_ratings": 10, "min_users": 2}},
                # two thirds of the app's ratings are of films outside this 10-film catalog
                "combined_ratings_app_ratings_kept_in_training": {"config": {"max_lost_share": 0.8}},
            },
        )
    assert result.success, failure_messages(result)
    catalog = metadata(result, "catalog_ids")
    assert catalog["catalog_size"] == 10 and catalog["source"].startswith("supabase table movies")
    combined = metadata(result, "combined_ratings")
    assert combined["movies"] <= 10 and combined["dropped_real_not_in_catalog"] > 0


def test_app_ratings_dropped_in_combining_block_the_deployment(env, ratings_db) -> None:
    """300 valid app ratings whose user ids begin with a seed prefix are dropped by
    combined_ratings (by design); a blocking check must see it instead of shipping real_ratings 0."""
    with psycopg.connect(ratings_db, autocommit=True) as conn:
        conn.execute("truncate ratings")
    insert_ratings(ratings_db, [(f"ml_app{i % 30}", env.mapped[i % 30], 4.0, None) for i in range(300)])
    env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance)
    assert metadata(result, "supabase_ratings")["ratings"] == 300  # read and valid
    combined = metadata(result, "combined_ratings")
    assert combined["real_ratings"] == 0 and combined["app_ratings_in"] == combined["app_ratings_lost"] == 300
    assert combined["app_ratings_dropped"]["user_id_has_seed_prefix"] == 300
    assert check_results(result)["app_ratings_kept_in_training"] is False
    verdict = check_descriptions(result)["app_ratings_kept_in_training"]
    assert "kept 0 of 300 app ratings" in verdict and "300 user id begins with a seed prefix" in verdict
    assert "deployed_model" not in materialized(result) and not tree_digest(env.serving_dir)


def test_a_few_superseded_or_lost_app_ratings_pass(env, ratings_db) -> None:
    insert_ratings(ratings_db, [("ml_intruder", env.mapped[0], 4.0, None)])  # 1 of 2501 lost
    env.supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        result = env.materialize(instance, selection=UP_TO_COMBINED)
    assert check_results(result)["app_ratings_kept_in_training"] is True
    combined = metadata(result, "combined_ratings")
    assert combined["app_ratings_lost"] == 1 and combined["app_ratings_dropped"]["duplicate_superseded"] > 0
    assert combined["real_ratings"] + sum(combined["app_ratings_dropped"].values()) == 2501
