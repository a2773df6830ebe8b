"""The retrain sensor against a real PostgreSQL behind the PostgREST-subset server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from cfrec_assets.definitions import defs
from cfrec_assets.defs.sensors import RETRAIN_SELECTION, build_retrain_sensor
from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseResource
from cfrec_serving.targets.target import open_target
from cfrec_testkit.graph import make_graph_env, metadata
from cfrec_testkit.postgres import insert_ratings
from cfrec_testkit.postgrest import TEST_API_KEY

sensor = build_retrain_sensor(min_new_ratings=10)


def rows(n: int, start: int = 0, user: str = "app-user", tmdb_ids=(862, 710, 11)):
    return [(f"{user}-{(start + i) % 7}", tmdb_ids[(start + i) % len(tmdb_ids)], 4.0, None) for i in range(n)]


def skipped(result) -> str:
    """The skip message of a tick that requested no run ('' when it requested one)."""
    assert isinstance(result, dg.SensorResult)
    return "" if result.run_requests else result.skip_reason.skip_message


def evaluate(instance, supabase, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"supabase": supabase})
    return sensor(context), context


@pytest.fixture
def supabase(postgrest) -> SupabaseResource:
    return SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=0, timeout_seconds=3)


def test_not_configured_skips() -> None:
    with dg.instance_for_test() as instance:
        result, _ = evaluate(instance, SupabaseResource())
    assert "not configured" in skipped(result)


def test_below_threshold_skips_then_growth_requests_one_run(postgrest, ratings_db, supabase) -> None:
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(9))
        result, _ = evaluate(instance, supabase)
        assert "9 new rating(s)" in skipped(result)

        insert_ratings(ratings_db, rows(3, start=9))
        result, _ = evaluate(instance, supabase)
        assert not skipped(result)
        [request] = result.run_requests
        cursor = json.loads(result.cursor)
        assert cursor["after_id"] == 12 and cursor["observed"] == {"count": 12, "latest_id": 12}
        assert request.run_key == "ratings:id:12:12"
        assert request.tags["cfrec/new_ratings"] == "12"

        # Same table state again: nothing new after the cursor, no duplicate request.
        again, _ = evaluate(instance, supabase, cursor=result.cursor)
        assert "0 new rating(s)" in skipped(again)
        # With the cursor lost, the same state yields the same run_key (Dagster drops duplicates).
        lost, _ = evaluate(instance, supabase)
        assert lost.run_requests[0].run_key == request.run_key


def test_new_ratings_are_counted_after_the_cursor_not_by_totals(postgrest, ratings_db, supabase) -> None:
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(20))
        first, _ = evaluate(instance, supabase)
        # 15 old ratings deleted, 10 new added: the total falls from 20 to 15, yet 10 are new.
        with psycopg.connect(ratings_db) as conn:
            conn.execute("DELETE FROM ratings WHERE id <= 15")
        insert_ratings(ratings_db, rows(10, start=20))
        result, _ = evaluate(instance, supabase, cursor=first.cursor)
        assert result.run_requests[0].tags["cfrec/new_ratings"] == "10"
        assert json.loads(result.cursor)["observed"]["count"] == 15


def test_supabase_down_skips_naming_the_cause_and_keeps_the_cursor(postgrest, ratings_db, supabase) -> None:
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(12))
        first, _ = evaluate(instance, supabase)
        insert_ratings(ratings_db, rows(12, start=12))
        postgrest.fail_next(5, status=503)
        result, context = evaluate(instance, supabase, cursor=first.cursor)
        assert "Supabase not read, cursor kept" in skipped(result) and "503" in skipped(result)
        assert TEST_API_KEY not in skipped(result)
        assert result.cursor is None and not result.asset_events  # cursor kept, nothing observed
        postgrest.stop()
        down, context = evaluate(instance, supabase, cursor=first.cursor)
        assert "unreachable" in skipped(down) and down.cursor is None


def test_sensor_run_retrains_on_the_new_ratings(tmp_path: Path, postgrest, ratings_db, supabase) -> None:
    """Insert ratings, evaluate the sensor, execute what it requested: a new model version that
    counts the new app ratings is trained and deployed."""
    env = make_graph_env(tmp_path)
    env.supabase = supabase
    mapped = sorted({e.tmdb_id for e in env.mirror.expected.values() if e.tmdb_id is not None})
    with dg.instance_for_test() as instance:
        baseline = env.materialize(instance)
        assert baseline.success and metadata(baseline, "combined_ratings")["real_ratings"] == 0

        insert_ratings(ratings_db, rows(40, tmdb_ids=mapped[:20]))
        result, _ = evaluate(instance, supabase)
        [request] = result.run_requests
        selection = sorted(
            key.to_user_string() for key in RETRAIN_SELECTION.resolve(defs.get_repository_def().asset_graph)
        )
        assert selection == ["combined_ratings", "cv_metrics", "deployed_model", "supabase_ratings", "svd_model"]
        retrain = env.materialize(instance, selection=selection)
        assert retrain.success

    combined = metadata(retrain, "combined_ratings")
    assert combined["real_ratings"] == 40 and combined["real_users"] == 7  # 40 distinct (user, movie) pairs
    new_version = metadata(retrain, "svd_model")["version"]
    assert new_version != metadata(baseline, "svd_model")["version"]
    assert (env.data_dir / "models" / new_version / "svd_model.pkl").is_file()
    assert open_target(env.serving_dir).read_manifest()["counts"]["real_ratings"] == combined["real_ratings"]


def test_a_few_old_ratings_trigger_a_retrain_by_age(postgrest, ratings_db, supabase) -> None:
    aged = build_retrain_sensor(min_new_ratings=10, max_age_seconds=24 * 3600)
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(3))  # a young app: 3 ratings, just now
        context = dg.build_sensor_context(instance=instance, resources={"supabase": supabase})
        fresh = aged(context)
        assert "3 new rating(s) since the last retrain, the oldest 0.0 h old" in skipped(fresh)
        two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
        with psycopg.connect(ratings_db) as conn:
            conn.execute("UPDATE ratings SET created_at = %s WHERE id = 1", (two_days_ago,))
        context = dg.build_sensor_context(instance=instance, cursor=fresh.cursor, resources={"supabase": supabase})
        old = aged(context)
        [request] = old.run_requests
        assert request.tags["cfrec/trigger"] == "age" and request.tags["cfrec/new_ratings"] == "3"
        assert request.tags["dagster/max_retries"] == "2"


def test_ticks_record_the_table_growing_only_when_it_changed(postgrest, ratings_db, supabase) -> None:
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(4))
        first, _ = evaluate(instance, supabase)
        [observation] = first.asset_events
        assert observation.asset_key == dg.AssetKey("supabase_ratings_table")
        assert observation.metadata["row_count"].value == 4
        same, _ = evaluate(instance, supabase, cursor=first.cursor)
        assert same.asset_events == []
        insert_ratings(ratings_db, rows(2, start=4))
        grown, _ = evaluate(instance, supabase, cursor=same.cursor)
        assert [e.metadata["row_count"].value for e in grown.asset_events] == [6]
        assert "6 new rating(s)" in skipped(grown)  # observing never moves the retrain watermark


def test_both_readers_agree_on_what_is_new(postgrest, ratings_db, supabase) -> None:
    insert_ratings(ratings_db, rows(5))
    postgres = SupabasePostgresResource(db_url=ratings_db)
    mark = supabase.ratings_watermark()
    assert mark == postgres.ratings_watermark()
    insert_ratings(ratings_db, rows(3, start=5))
    for reader in (supabase, postgres):
        assert reader.new_since(None).count == 8
        new = reader.new_since(mark["latest_id"])
        assert new.count == 3 and new.oldest is not None and new.oldest >= mark["latest_created_at"]
    assert supabase.new_since(mark["latest_id"])[:2] == postgres.new_since(mark["latest_id"])[:2]


# --- Issue 16: what is new is told by the server, never by a client's created_at ----------------

IN_A_YEAR = timedelta(days=365)


def both_readers(postgrest, ratings_db, **settings):
    return {
        "rest": SupabaseResource(url=postgrest.url, key=TEST_API_KEY, max_retries=0, timeout_seconds=3, **settings),
        "postgres": SupabasePostgresResource(db_url=ratings_db, **settings),
    }


def dated(n: int, when: datetime, start: int = 0) -> list[tuple]:
    return [(user, tmdb_id, rating, when) for user, tmdb_id, rating, _ in rows(n, start)]


@pytest.mark.parametrize("reader", ["rest", "postgres"])
def test_a_rating_dated_in_the_future_does_not_hide_later_ones(postgrest, ratings_db, reader) -> None:
    supabase = both_readers(postgrest, ratings_db)[reader]
    now = datetime.now(timezone.utc)
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(9) + dated(1, now + IN_A_YEAR, start=9))  # a phone a year ahead
        first, _ = evaluate(instance, supabase)
        assert first.run_requests
        insert_ratings(ratings_db, rows(10, start=10))
        later, _ = evaluate(instance, supabase, cursor=first.cursor)
        [request] = later.run_requests  # before: "0 new rating(s)" for ever
        assert request.tags["cfrec/new_ratings"] == "10"
        # The observation shows the newest rating clamped to the server's clock, not next year.
        observed = json.loads(first.cursor)["observed"]
        assert observed == {"count": 10, "latest_id": 10}
        [observation] = first.asset_events
        assert observation.metadata["latest_created_at"].value < (now + timedelta(days=1)).isoformat()


@pytest.mark.parametrize("reader", ["rest", "postgres"])
def test_back_dated_ratings_are_counted(postgrest, ratings_db, reader) -> None:
    supabase = both_readers(postgrest, ratings_db)[reader]
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(10))
        first, _ = evaluate(instance, supabase)
        insert_ratings(ratings_db, dated(12, datetime.now(timezone.utc) - timedelta(days=3), start=10))
        result, _ = evaluate(instance, supabase, cursor=first.cursor)
        [request] = result.run_requests  # before: back-dated rows sat before the watermark, unseen
        assert request.tags["cfrec/new_ratings"] == "12"


@pytest.mark.parametrize("reader", ["rest", "postgres"])
def test_a_lone_future_dated_rating_still_ages_into_a_retrain(postgrest, ratings_db, reader) -> None:
    """Clamped to "now" on every tick, it would never look old: the first tick that saw it dates it."""
    supabase = both_readers(postgrest, ratings_db)[reader]
    aged = build_retrain_sensor(min_new_ratings=10, max_age_seconds=24 * 3600)
    with dg.instance_for_test() as instance:

        def tick(cursor):
            return aged(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"supabase": supabase}))

        insert_ratings(ratings_db, dated(1, datetime.now(timezone.utc) + IN_A_YEAR))
        first = tick(None)
        assert "1 new rating(s) since the last retrain, the oldest 0.0 h old" in skipped(first)
        again = tick(first.cursor)
        assert json.loads(again.cursor)["seen_since"] == json.loads(first.cursor)["seen_since"]
        # The cursor as the sensor leaves it two days later.
        state = json.loads(again.cursor)
        state["seen_since"] = (datetime.fromisoformat(state["seen_since"]) - timedelta(days=2)).isoformat()
        [request] = tick(json.dumps(state)).run_requests
        assert request.tags["cfrec/trigger"] == "age"


def test_an_id_a_client_wrote_past_the_sequence_does_not_hide_later_ratings(ratings_db) -> None:
    """The app's id is an identity BY DEFAULT (Supabase's default), which takes a client's value;
    over Postgres the watermark stops at what the sequence handed out."""
    supabase = SupabasePostgresResource(db_url=ratings_db)
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(10))
        with psycopg.connect(ratings_db) as conn:
            conn.execute("INSERT INTO ratings (id, user_id, tmdb_id, rating) VALUES (10^15, 'forger', 862, 5)")
        first, _ = evaluate(instance, supabase)
        assert json.loads(first.cursor)["after_id"] == 10
        insert_ratings(ratings_db, rows(10, start=10))
        [request] = evaluate(instance, supabase, cursor=first.cursor)[0].run_requests
        assert request.tags["cfrec/new_ratings"] == "10"  # the forged row is never counted as new


@pytest.mark.parametrize("reader", ["rest", "postgres"])
def test_a_uuid_keyed_table_needs_a_server_assigned_arrival_column(postgrest, ratings_db, reader) -> None:
    with psycopg.connect(ratings_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE ratings DROP COLUMN id")
        conn.execute("ALTER TABLE ratings ADD COLUMN id uuid PRIMARY KEY DEFAULT gen_random_uuid()")
    insert_ratings(ratings_db, rows(12))
    supabase = both_readers(postgrest, ratings_db)[reader]
    with dg.instance_for_test() as instance:
        refused, _ = evaluate(instance, supabase)
        assert refused.cursor is None and not refused.run_requests
        assert "ratings.id holds" in skipped(refused) and "not a server-assigned integer" in skipped(refused)
        assert "ADD COLUMN arrival_id bigint GENERATED ALWAYS AS IDENTITY" in skipped(refused)
        assert "SUPABASE_RATINGS_ARRIVAL_COLUMN=arrival_id" in skipped(refused)

        with psycopg.connect(ratings_db, autocommit=True) as conn:  # what the message says to do
            conn.execute("ALTER TABLE ratings ADD COLUMN arrival_id bigint GENERATED ALWAYS AS IDENTITY")
        supabase = both_readers(postgrest, ratings_db, arrival_column="arrival_id")[reader]
        first, _ = evaluate(instance, supabase)
        assert first.run_requests and json.loads(first.cursor)["after_id"] == 12
        insert_ratings(ratings_db, rows(10, start=12))
        [request] = evaluate(instance, supabase, cursor=first.cursor)[0].run_requests
        assert request.tags["cfrec/new_ratings"] == "10"


def test_an_old_cursor_is_upgraded_and_an_unreadable_one_reset(postgrest, ratings_db, supabase, capfd) -> None:
    with dg.instance_for_test() as instance:
        insert_ratings(ratings_db, rows(12))
        # What the sensor wrote before version 2: the newest (created_at, id) of the last retrain.
        old = {"count": 12, "latest_created_at": "2999-01-01T00:00:00+00:00", "latest_id": 12, "observed": {}}
        insert_ratings(ratings_db, rows(10, start=12))
        upgraded, _ = evaluate(instance, supabase, cursor=json.dumps(old))
        assert upgraded.run_requests[0].tags["cfrec/new_ratings"] == "10"  # not 0: 2999 is forgotten
        logged = capfd.readouterr().err  # the sensor's context.log
        assert "cursor of the created_at watermark upgraded; new ratings are ratings with arrival id > 12" in logged
        for garbage in ("not json", "[1, 2]", json.dumps({"version": 2, "after_id": "12; DROP"})):
            reset, _ = evaluate(instance, supabase, cursor=garbage)
            assert reset.run_requests[0].tags["cfrec/new_ratings"] == "22"  # every rating counts
            assert f"retrain sensor: cursor {garbage!r} is not one this version reads; reset" in capfd.readouterr().err
