"""The PostgREST-subset server must behave like PostgREST, or the client tests prove nothing."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from cfrec_testkit import postgres as postgres_support
from cfrec_testkit.postgres import free_loopback_port, insert_ratings
from cfrec_testkit.postgrest import TEST_API_KEY, PostgrestSubsetServer

BASE = datetime(2024, 3, 1, tzinfo=timezone.utc)
KEY_HEADERS = {"apikey": TEST_API_KEY, "Authorization": f"Bearer {TEST_API_KEY}"}
COUNT = {**KEY_HEADERS, "Prefer": "count=exact"}


def fill(conninfo: str, n: int) -> None:
    insert_ratings(
        conninfo, [(f"user{i % 13}", 100 + i, 0.5 + (i % 10) / 2, BASE + timedelta(seconds=i)) for i in range(n)]
    )


def get(
    server: PostgrestSubsetServer,
    query: str = "",
    headers: dict | None = None,
    method: str = "GET",
    table: str = "ratings",
) -> httpx.Response:
    url = f"{server.url}/rest/v1/{table}" + (f"?{query}" if query else "")
    return httpx.request(method, url, headers=KEY_HEADERS if headers is None else headers, timeout=5)


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "details", "hint", "message"}
    assert body["code"] == code
    return body


@pytest.mark.parametrize(
    ("query", "headers", "status", "content_range", "rows"),
    [
        ("", KEY_HEADERS, 200, "0-999/*", 1000),  # capped, and no total without count
        ("", COUNT, 206, "0-999/2500", 1000),
        ("offset=2000&limit=1000", COUNT, 206, "2000-2499/2500", 500),
        ("offset=2500&limit=1000", COUNT, 206, "*/2500", 0),  # at the end: empty, not 416
        ("offset=2500&limit=1000", KEY_HEADERS, 200, "*/*", 0),
        ("offset=10&limit=5", COUNT, 206, "10-14/2500", 5),
        ("tmdb_id=lt.105", COUNT, 200, "0-4/5", 5),  # everything requested: 200, not 206
        ("tmdb_id=gt.999999", COUNT, 200, "*/0", 0),
    ],
)
def test_content_range_and_status_follow_postgrest(postgrest, ratings_db, query, headers, status, content_range, rows):
    fill(ratings_db, 2500)
    response = get(postgrest, query, headers)
    assert response.status_code == status
    assert response.headers["Content-Range"] == content_range
    assert len(response.json()) == rows
    assert ("Preference-Applied" in response.headers) == ("Prefer" in headers)


def test_offset_past_the_end_is_416_with_pgrst103(postgrest, ratings_db):
    fill(ratings_db, 30)
    body = assert_error(get(postgrest, "offset=31&limit=10", COUNT), 416, "PGRST103")
    assert body["message"] == "Requested range not satisfiable"
    assert body["details"] == "An offset of 31 was requested, but there are only 30 rows."
    # Without a count there is no total to be out of: an empty 200.
    assert get(postgrest, "offset=31&limit=10").status_code == 200


def test_db_max_rows_caps_every_response_even_an_explicit_limit(ratings_db):
    fill(ratings_db, 120)
    with PostgrestSubsetServer(ratings_db, [TEST_API_KEY], db_max_rows=50) as server:
        assert len(get(server, "limit=100").json()) == 50
        assert get(server, "limit=100", COUNT).headers["Content-Range"] == "0-49/120"
        assert len(get(server, "limit=20").json()) == 20
    with PostgrestSubsetServer(ratings_db, [TEST_API_KEY], db_max_rows=None) as server:
        assert len(get(server).json()) == 120


def test_head_sends_headers_only(postgrest, ratings_db):
    fill(ratings_db, 1200)
    response = get(postgrest, "select=*", COUNT, method="HEAD")
    assert response.status_code == 206
    assert response.headers["Content-Range"] == "0-999/1200"
    assert response.content == b""
    assert postgrest.request_counts["HEAD"] == 1


def test_select_order_and_filters_match_sql(postgrest, ratings_db):
    fill(ratings_db, 300)
    rows = get(postgrest, "select=tmdb_id,rating&rating=gte.4.5&user_id=eq.user3&order=tmdb_id.desc&limit=1000").json()
    with psycopg.connect(ratings_db) as conn:
        expected = conn.execute(
            "SELECT tmdb_id, rating FROM ratings WHERE rating >= 4.5 AND user_id = 'user3' ORDER BY tmdb_id DESC"
        ).fetchall()
    assert [(r["tmdb_id"], r["rating"]) for r in rows] == [(t, float(r)) for t, r in expected]
    assert rows and list(rows[0]) == ["tmdb_id", "rating"]
    created = get(postgrest, "select=created_at&order=created_at.asc&limit=1").json()
    assert created == [{"created_at": "2024-03-01T00:00:00+00:00"}]


def test_order_supports_direction_and_nulls(postgrest, ratings_db):
    insert_ratings(ratings_db, [("a", 1, 1.0, BASE), ("b", None, 2.0, BASE), ("c", 3, 3.0, BASE)])

    def ids(order: str) -> list:
        return [r["tmdb_id"] for r in get(postgrest, f"select=tmdb_id&order={order}").json()]

    assert ids("tmdb_id") == [1, 3, None]  # PostgreSQL: ascending puts nulls last
    assert ids("tmdb_id.desc") == [None, 3, 1]
    assert ids("tmdb_id.desc.nullslast") == [3, 1, None]
    assert ids("tmdb_id.asc.nullsfirst") == [None, 1, 3]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("select=nope", 400, "42703"),
        ("nope=eq.1", 400, "42703"),
        ("order=nope.asc", 400, "42703"),
        ("order=tmdb_id.sideways", 400, "PGRST100"),
        ("tmdb_id=like.1*", 400, "PGRST100"),
        ("tmdb_id=5", 400, "PGRST100"),
        ("tmdb_id=not.eq.5", 400, "PGRST100"),
        ("select=alias:tmdb_id", 400, "PGRST100"),
        ("select=tmdb_id::text", 400, "PGRST100"),
        ("limit=ten", 400, "PGRST100"),
        ("limit=-1", 416, "PGRST103"),
        ("tmdb_id=eq.abc", 400, "22P02"),  # PostgreSQL's own error, passed through
    ],
)
def test_unsupported_or_invalid_requests_get_postgrest_errors(postgrest, query, status, code):
    assert_error(get(postgrest, query), status, code)


def test_unknown_table_is_404_pgrst205(postgrest):
    body = assert_error(get(postgrest, table="nope"), 404, "PGRST205")
    assert body["message"] == "Could not find the table 'public.nope' in the schema cache"


def test_injection_attempts_stay_data(postgrest, ratings_db):
    fill(ratings_db, 3)
    assert_error(get(postgrest, "select=tmdb_id;drop table ratings"), 400, "PGRST100")
    assert get(postgrest, "user_id=eq.x'; drop table ratings; --").json() == []
    assert_error(get(postgrest, table='ratings"; drop table ratings; --'), 404, "PGRST205")
    with psycopg.connect(ratings_db) as conn:
        assert conn.execute("SELECT count(*) FROM ratings").fetchone() == (3,)


@pytest.mark.parametrize(
    ("headers", "code", "message"),
    [
        ({}, None, "No API key found in request"),
        ({"apikey": "wrong"}, None, "Invalid API key"),
        ({"apikey": TEST_API_KEY, "Authorization": "Bearer wrong"}, "PGRST301", "Invalid JWT"),
    ],
)
def test_keys_are_checked(postgrest, headers, code, message):
    assert assert_error(get(postgrest, headers=headers), 401, code)["message"] == message
    assert get(postgrest, headers={"apikey": TEST_API_KEY}).status_code == 200


def test_only_reads_of_the_exposed_schema_are_served(postgrest):
    assert_error(get(postgrest, method="POST"), 405, "PGRST117")
    assert_error(get(postgrest, headers={**KEY_HEADERS, "Accept-Profile": "private"}), 406, "PGRST106")


def test_fail_next_then_recovers_and_counts_requests(postgrest):
    postgrest.fail_next(2, status=503)
    assert get(postgrest).status_code == 503
    assert get(postgrest, method="HEAD").status_code == 503
    assert get(postgrest).status_code == 200
    assert postgrest.request_counts == {"GET": 2, "HEAD": 1}
    assert [r.method for r in postgrest.requests] == ["GET", "HEAD", "GET"]


def test_delay_holds_the_response(postgrest):
    postgrest.delay_seconds = 0.4
    started = time.monotonic()
    assert get(postgrest).status_code == 200
    assert time.monotonic() - started >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{postgrest.url}/rest/v1/ratings", headers=KEY_HEADERS, timeout=0.1)


def test_stopped_server_refuses_connections(postgrest):
    postgrest.stop()
    with pytest.raises(httpx.ConnectError):
        get(postgrest)
    postgrest.stop()  # idempotent


def test_free_loopback_port_is_not_listening():
    port = free_loopback_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


# --- the PostgreSQL fixture itself ---------------------------------------------------


def test_pg_env_vars_select_an_existing_server(pg_server, monkeypatch):
    for name, value in {
        "PGHOST": pg_server.host,
        "PGPORT": str(pg_server.port),
        "PGUSER": pg_server.user,
        "PGPASSWORD": pg_server.password,
        "PGDATABASE": pg_server.dbname,
    }.items():
        monkeypatch.setenv(name, value)
    with postgres_support.postgres_server() as server:
        assert (server.host, server.port) == (pg_server.host, pg_server.port)
        assert server.dbname != pg_server.dbname  # a scratch database of its own
        with psycopg.connect(server.conninfo) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (server.dbname,)
    with psycopg.connect(pg_server.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (server.dbname,)).fetchone() == (
            0,
        )  # dropped afterwards


def test_no_binaries_and_no_server_means_a_clear_skip_reason(monkeypatch):
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.setattr(postgres_support, "find_pg_bin_dir", lambda: None)
    with pytest.raises(postgres_support.PostgresUnavailable, match="PGHOST is not set"):
        with postgres_support.postgres_server():
            pass
