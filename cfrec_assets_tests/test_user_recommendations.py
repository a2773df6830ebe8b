"""user_recommendations: every app user's top-N in Postgres, replaced in one transaction, RLS-scoped."""

import threading
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from cfrec_assets.definitions import assets_from_env
from cfrec_assets.defs.assets import ALL_ASSETS, user_recommendations
from cfrec_assets.defs.checks import ALL_CHECKS
from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable, RecommendationsWriteError
from cfrec_assets.pipeline.preview import app_users, recommendation_rows
from cfrec_serving.loader import DeployedModel
from cfrec_testkit.graph import WITHOUT_TUNING, failure_messages, make_graph_env, metadata
from cfrec_testkit.models import make_ratings_frame, promote_version, train_tiny_svd, version_name, write_model_version
from cfrec_testkit.postgres import scratch_database

SCHEMA_SQL = Path(__file__).resolve().parents[1] / "deploy" / "user_recommendations.sql"
# What Supabase provides and the README's SQL relies on: the authenticated role and auth.uid().
SUPABASE_STAND_IN = """
do $$ begin
    if not exists (select from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin; end if;
end $$;
alter default privileges in schema public grant all on tables to anon;  -- as Supabase does
create schema if not exists auth;
create or replace function auth.uid() returns uuid language sql stable
    as $f$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
grant usage on schema auth to authenticated;
"""


@pytest.fixture
def db(pg_server):
    with scratch_database(pg_server) as scratch:
        with psycopg.connect(scratch.conninfo, autocommit=True) as conn:
            conn.execute(SUPABASE_STAND_IN)
            conn.execute(SCHEMA_SQL.read_text())
        yield scratch.conninfo


def model(seed: int = 0) -> DeployedModel:
    algo, trainset = train_tiny_svd(make_ratings_frame(seed=seed), seed=seed)
    return DeployedModel(algo, trainset, {"version": f"v{seed}"})


def rows_of(m: DeployedModel, n: int = 5):
    return recommendation_rows(m, app_users(m), n, datetime(2026, 11, 27, tzinfo=timezone.utc))


def table_rows(conninfo: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "select user_id, tmdb_id, rank, score, model_version from user_recommendations order by 1, 3"
        ).fetchall()


def test_writes_each_app_users_top_n(db):
    first = model(0)
    written = RecommendationsTable(db_url=db, table="user_recommendations").replace_all(rows_of(first))
    users = app_users(first)
    assert users and not any(u.startswith("ml_") for u in users)
    stored = table_rows(db)
    assert written == len(stored) == 5 * len(users)
    for user in users:
        expected = first.recommend(user, 5)
        mine = [r for r in stored if r[0] == user]
        assert [r[1] for r in mine] == list(expected.items) and [r[2] for r in mine] == [1, 2, 3, 4, 5]
        assert [r[3] for r in mine] == pytest.approx(list(expected.scores), abs=1e-6)
        assert {r[4] for r in mine} == {"v0"}


def test_readers_see_the_old_set_or_the_new_one_never_a_mix(db):
    table = RecommendationsTable(db_url=db, table="user_recommendations")
    versions = [rows_of(model(seed), n=50) for seed in (1, 2)]
    table.replace_all(versions[0])
    sizes = {f"v{seed}": len(rows) for seed, rows in zip((1, 2), versions)}
    seen, stop = [], threading.Event()

    def reader():
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(
                    tuple(
                        conn.execute("select model_version, count(*) from user_recommendations group by 1").fetchall()
                    )
                )

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(10):
        table.replace_all(versions[(i + 1) % 2])
    stop.set()
    thread.join()
    assert len(seen) > 10
    assert all(len(obs) == 1 and obs[0][1] == sizes[obs[0][0]] for obs in seen), {o for o in seen if len(o) != 1}


def test_failure_mid_write_keeps_the_previous_rows_and_hides_the_password(db):
    table = RecommendationsTable(db_url=db, table="user_recommendations")
    table.replace_all(rows_of(model(0)))
    before = table_rows(db)
    broken = rows_of(model(1))
    broken.loc[len(broken) - 1, ["user_id", "rank"]] = broken.loc[0, ["user_id", "rank"]].tolist()  # duplicate key
    with pytest.raises(RecommendationsWriteError, match="rolled back: 23505") as failed:
        table.replace_all(broken)
    assert table_rows(db) == before
    password = psycopg.conninfo.conninfo_to_dict(db)["password"]
    assert password not in str(failed.value)


def test_table_named_but_no_database_is_a_clear_error():
    with pytest.raises(RecommendationsWriteError, match="SUPABASE_DB_URL is not set"):
        RecommendationsTable(table="user_recommendations").replace_all(rows_of(model(0)))
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        RecommendationsTable(table="recs; drop table x")


def test_row_level_security_lets_a_user_read_only_their_rows(db):
    first = model(0)
    RecommendationsTable(db_url=db, table="user_recommendations").replace_all(rows_of(first))
    me, someone_else = app_users(first)[:2]
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("set role authenticated")
        conn.execute("select set_config('request.jwt.claim.sub', %s, false)", (me,))
        visible = conn.execute("select distinct user_id from user_recommendations").fetchall()
        assert visible == [(me,)]
        assert (
            conn.execute("select count(*) from user_recommendations where user_id = %s", (someone_else,)).fetchone()[0]
            == 0
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from user_recommendations")
        conn.execute("select set_config('request.jwt.claim.sub', '', false)")  # signed in, no subject
        assert conn.execute("select count(*) from user_recommendations").fetchone()[0] == 0
        conn.execute("reset role")
        conn.execute("set role anon")  # the app's anon key: no access at all
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from user_recommendations")


def test_asset_is_opt_in_and_publishes_what_deployed_model_serves(db, tmp_path):
    assert user_recommendations not in assets_from_env({})
    assert user_recommendations in assets_from_env({"CFREC_RECOMMENDATIONS_TABLE": "user_recommendations"})
    env = make_graph_env(tmp_path)
    resources = {**env.resources(), "recommendations": RecommendationsTable(db_url=db, table="user_recommendations")}
    publish = {"user_recommendations": {"config": {"include_seed_users": True, "n": 3}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*ALL_ASSETS, user_recommendations, *ALL_CHECKS],
            selection=WITHOUT_TUNING,
            instance=instance,
            resources=resources,
            run_config={"ops": {**env.fixture_check_config(), **publish}},
        )
        assert result.success
        published = metadata(result, "user_recommendations")
        deployed = metadata(result, "deployed_model")
        stored = table_rows(db)
        assert published["model_version"] == deployed["version"] and {r[4] for r in stored} == {deployed["version"]}
        assert published["rows"] == len(stored) == 3 * published["users"] and published["users"] > 10

        # Someone serves another version by hand: publishing the deployed_model record's version
        # now would describe a model the app no longer gets, so it is refused and the rows stay.
        promote_version(write_model_version(tmp_path / "other", version_name(99)), env.serving_dir)
        stale = dg.materialize(
            [*ALL_ASSETS, user_recommendations, *ALL_CHECKS],
            selection=["user_recommendations"],
            instance=instance,
            resources=resources,
            run_config={"ops": publish},
            raise_on_error=False,
        )
    message = failure_messages(stale)["user_recommendations"]
    assert f"the target now serves {version_name(99)}, not {deployed['version']}" in message
    assert table_rows(db) == stored
