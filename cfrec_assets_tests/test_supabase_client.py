"""Supabase readers against real parts: PostgreSQL, the real supabase client over HTTP."""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest
from pydantic import ValidationError

from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseReadError, SupabaseResource
from cfrec_assets.defs.supabase_io.table import DROP_REASONS, catalog_ids_from_values, validate_ratings
from cfrec_serving.redact import redact_dsn_secrets
from cfrec_testkit.postgres import (
    PostgresServer,
    create_catalog_table,
    free_loopback_port,
    insert_ratings,
)
from cfrec_testkit.postgrest import TEST_API_KEY, PostgrestSubsetServer

BASE = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def rest(server: PostgrestSubsetServer, **settings) -> SupabaseResource:
    settings = {
        "url": server.url,
        "key": TEST_API_KEY,
        "timeout_seconds": 5.0,
        "retry_backoff_seconds": 0.01,
        **settings,
    }
    return SupabaseResource(**settings)


def valid_rows(n: int, start: datetime = BASE) -> list[tuple]:
    # Three rows share each timestamp, so only the id tiebreak makes the order total.
    return [(f"user{i % 17}", 1000 + i, 0.5 + (i % 10) / 2, start + timedelta(minutes=i // 3)) for i in range(n)]


def db_rows(conninfo: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT user_id, tmdb_id, rating::float8 FROM ratings ORDER BY created_at, id").fetchall()


def assert_clean(error: BaseException, *secrets: str) -> None:
    """No secret in the message, repr, chained exceptions or the formatted traceback."""
    assert error.__cause__ is None and error.__context__ is None
    text = "".join(traceback.format_exception(error)) + repr(error) + str(error)
    for secret in secrets:
        assert secret not in text


# --- REST: completeness ---------------------------------------------------------


@pytest.mark.parametrize(("page_size", "pages"), [(1000, 4), (300, 10)])
def test_reads_every_row_through_the_row_cap(postgrest, ratings_db, page_size, pages):
    insert_ratings(ratings_db, valid_rows(2500))
    frame, stats = rest(postgrest, page_size=page_size).read_ratings()
    assert stats["rows_read"] == stats["server_count"] == stats["valid_rows"] == 2500
    assert stats["pages"] == pages  # the last page is the empty one that proves the end
    assert list(frame.itertuples(index=False, name=None)) == [
        (u, m, r, BASE + timedelta(minutes=i // 3)) for i, (u, m, r) in enumerate(db_rows(ratings_db))
    ]
    offsets = [int(dict(r.params)["offset"]) for r in postgrest.requests if r.method == "GET"]
    assert offsets == list(range(0, 2500, page_size)) + [2500]
    assert postgrest.request_counts == {"HEAD": 1, "GET": pages}


def test_short_pages_from_a_lower_server_cap_do_not_end_the_read(ratings_db):
    insert_ratings(ratings_db, valid_rows(2500))
    with PostgrestSubsetServer(ratings_db, [TEST_API_KEY], db_max_rows=300) as server:
        frame, stats = rest(server, page_size=1000).read_ratings()
        offsets = [int(dict(r.params)["offset"]) for r in server.requests if r.method == "GET"]
    assert len(frame) == stats["server_count"] == 2500
    assert offsets == list(range(0, 2500, 300)) + [2500]
    assert frame["tmdb_id"].is_unique


def test_frame_types(postgrest, ratings_db):
    insert_ratings(ratings_db, valid_rows(5))
    frame, _ = rest(postgrest).read_ratings()
    assert list(frame.columns) == ["user_id", "tmdb_id", "rating", "created_at"]
    assert pd.api.types.is_string_dtype(frame["user_id"])
    assert frame["tmdb_id"].dtype == "int64" and frame["rating"].dtype == "float64"
    assert str(frame["created_at"].dt.tz) == "UTC"


def test_empty_table_reads_as_an_empty_typed_frame(postgrest):
    frame, stats = rest(postgrest).read_ratings()
    assert frame.empty and frame["tmdb_id"].dtype == "int64"
    assert stats["rows_read"] == stats["server_count"] == 0 and stats["pages"] == 1


def test_rows_added_during_the_read_fail_loudly(postgrest, ratings_db):
    insert_ratings(ratings_db, valid_rows(2500))

    def insert_once_after_the_count(request) -> None:
        if request.method == "GET" and dict(request.params).get("offset") == "1000":
            insert_ratings(ratings_db, valid_rows(3, start=BASE + timedelta(days=30)))

    postgrest.on_request = insert_once_after_the_count
    with pytest.raises(SupabaseReadError, match="read 2503 rows .* counts 2500"):
        rest(postgrest).read_ratings()


def test_rows_deleted_during_the_read_fail_loudly(postgrest, ratings_db):
    insert_ratings(ratings_db, valid_rows(2500))

    def delete_early_rows(request) -> None:
        if request.method == "GET" and dict(request.params).get("offset") == "1000":
            with psycopg.connect(ratings_db) as conn:
                conn.execute("DELETE FROM ratings WHERE id <= 10")

    postgrest.on_request = delete_early_rows
    with pytest.raises(SupabaseReadError, match="read 2490 rows .* counts 2500"):
        rest(postgrest).read_ratings()


def test_rows_shifted_between_pages_are_caught_even_when_the_count_still_matches(postgrest, ratings_db):
    insert_ratings(ratings_db, valid_rows(2500))

    def backfill_one_and_delete_one(request) -> None:
        if request.method == "GET" and dict(request.params).get("offset") == "1000":
            insert_ratings(ratings_db, [("early", 1, 3.0, BASE - timedelta(days=1))])
            with psycopg.connect(ratings_db) as conn:
                conn.execute("DELETE FROM ratings WHERE id = 2500")

    postgrest.on_request = backfill_one_and_delete_one
    with pytest.raises(SupabaseReadError, match="read twice"):
        rest(postgrest).read_ratings()


# --- REST: invalid rows ---------------------------------------------------------


def test_invalid_rows_are_dropped_and_counted_by_reason(postgrest, ratings_db):
    insert_ratings(
        ratings_db,
        valid_rows(4)
        + [
            (None, 1, 4.0, BASE),
            ("   ", 2, 4.0, BASE),
            ("u", None, 4.0, BASE),
            ("u", 0, 4.0, BASE),
            ("u", 3, None, BASE),
            ("u", 4, 0.0, BASE),
            ("u", 5, 5.5, BASE),
            ("u", 6, -1, BASE),
            ("u", 7, 0.5, BASE),
            ("u", 8, 5.0, BASE),  # the bounds themselves are valid
        ],
    )
    frame, stats = rest(postgrest).read_ratings()
    examples = stats.pop("dropped_examples")
    assert examples["dropped_invalid_ids"] == ["ratings id 8: user_id='u', tmdb_id=0, rating=4.0"]
    assert len(examples["dropped_missing_ids"]) == 3 and len(examples["dropped_rating_out_of_range"]) == 3
    assert stats == {
        "rows_read": 14,
        "server_count": 14,
        "pages": 2,
        "valid_rows": 6,
        "dropped_missing_ids": 3,
        "dropped_invalid_ids": 1,
        "dropped_missing_rating": 1,
        "dropped_invalid_rating": 0,
        "dropped_rating_out_of_range": 3,
    }
    assert sorted(frame["rating"]) == sorted([0.5, 5.0] + [r for _, _, r, _ in valid_rows(4)])
    # A configured range is honoured, and nothing is clipped into it.
    frame, stats = rest(postgrest, rating_min=1.0, rating_max=10.0).read_ratings()
    assert stats["dropped_rating_out_of_range"] == 4  # 0.0, -1, and both 0.5s
    assert 5.5 in set(frame["rating"]) and frame["rating"].min() >= 1.0


def test_validation_rejects_values_a_typed_column_cannot_hold():
    raw = pd.DataFrame(
        [
            ["u", 1.5, 4.0, BASE],
            ["u", "12", 4.0, BASE],
            ["u", True, 4.0, BASE],
            ["u", 2, "4.0", BASE],
            ["u", 3, float("nan"), BASE],
            ["u", 4, float("inf"), BASE],
            ["u", 5.0, 4.0, BASE],
        ],
        columns=["user_id", "tmdb_id", "rating", "created_at"],
        dtype=object,
    )
    frame, stats = validate_ratings(raw, 0.5, 5.0)
    assert stats["dropped_invalid_ids"] == 3 and stats["dropped_invalid_rating"] == 2
    assert stats["dropped_missing_rating"] == 1
    assert frame["tmdb_id"].tolist() == [5]
    assert sum(stats[reason] for reason in DROP_REASONS) + stats["valid_rows"] == len(raw)


def test_settings_are_validated():
    with pytest.raises(ValidationError):
        SupabaseResource(page_size=1001)
    with pytest.raises(ValidationError):
        SupabaseResource(page_size=0)
    with pytest.raises(ValidationError, match="rating_min"):
        SupabasePostgresResource(rating_min=5.0, rating_max=0.5)
    assert not SupabaseResource(url="http://x").is_configured
    assert SupabaseResource(url="http://x", key="k").is_configured
    with pytest.raises(SupabaseReadError, match="not configured"):
        SupabaseResource(url="http://x").read_ratings()
    with pytest.raises(SupabaseReadError, match="not configured"):
        SupabasePostgresResource().ratings_watermark()
    assert "k-secret" not in repr(SupabaseResource(url="http://x", key="k-secret"))


# --- REST: failures ---------------------------------------------------------------


def test_wrong_key_is_a_401_naming_no_key(postgrest, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "wrong-key-5d1e0c9a"
    # The count comes first, as a HEAD: no body, so the status and the hint must do.
    with pytest.raises(SupabaseReadError, match=r"HTTP 401: Unauthorized \(check SUPABASE_KEY") as caught:
        rest(postgrest, key=wrong_key).read_ratings()
    assert_clean(caught.value, wrong_key, TEST_API_KEY)
    assert sum(postgrest.request_counts.values()) == 1  # an auth failure is not retried
    # A GET carries the gateway's message.
    with pytest.raises(SupabaseReadError, match="HTTP 401: Invalid API key") as caught:
        rest(postgrest, key=wrong_key).ratings_watermark()
    assert_clean(caught.value, wrong_key, TEST_API_KEY)
    assert "HTTP Request: GET" in caplog.text  # the client's logs were captured...
    assert wrong_key not in caplog.text  # ...and hold no key


def test_a_server_echoing_the_key_does_not_leak_it(postgrest):
    echo = json.dumps(
        {
            "code": "XX000",
            "hint": None,
            "message": f"bad apikey {TEST_API_KEY}",
            "details": f"headers: apikey={TEST_API_KEY}",
        }
    ).encode()
    postgrest.fail_next(1, status=400, body=echo)
    with pytest.raises(SupabaseReadError, match=r"HTTP 400 XX000: bad apikey \[redacted\]") as caught:
        rest(postgrest).ratings_watermark()
    assert_clean(caught.value, TEST_API_KEY)


def test_unknown_table_is_named(postgrest):
    with pytest.raises(SupabaseReadError, match=r"unknown table 'nope'.*404 PGRST205") as caught:
        rest(postgrest, table="nope").read_ratings()
    assert_clean(caught.value, TEST_API_KEY)


def test_unknown_column_is_a_400(postgrest):
    with pytest.raises(SupabaseReadError, match="HTTP 400 42703: column ratings.stars"):
        rest(postgrest, rating_column="stars").read_ratings()


@pytest.mark.parametrize("body", [None, b"<html><body>502 upstream</body></html>"])
def test_transient_5xx_is_retried_then_succeeds(postgrest, ratings_db, body):
    insert_ratings(ratings_db, valid_rows(1500))
    postgrest.fail_next(2, status=503, body=body, content_type="text/html")
    frame, stats = rest(postgrest).read_ratings()
    assert len(frame) == stats["server_count"] == 1500
    assert postgrest.request_counts == {"HEAD": 3, "GET": 3}


def test_persistent_5xx_fails_after_the_retries(postgrest, caplog):
    caplog.set_level(logging.DEBUG)
    postgrest.fail_next(10, status=503)
    with pytest.raises(SupabaseReadError, match=r"HTTP 503: Service Unavailable \(after 2 retries\)") as caught:
        rest(postgrest, max_retries=2).read_ratings()
    assert postgrest.request_counts == {"HEAD": 3}
    assert_clean(caught.value, TEST_API_KEY)
    assert TEST_API_KEY not in caplog.text


def test_a_server_error_that_is_not_transient_is_not_retried(postgrest):
    postgrest.fail_next(1, status=500)
    with pytest.raises(SupabaseReadError, match="HTTP 500: Internal Server Error"):
        rest(postgrest).read_ratings()
    assert sum(postgrest.request_counts.values()) == 1


def test_timeout_is_named_and_not_retried(postgrest, caplog):
    caplog.set_level(logging.DEBUG)
    postgrest.delay_seconds = 3
    started = time.monotonic()
    with pytest.raises(SupabaseReadError, match=r"timed out after 0\.3s") as caught:
        rest(postgrest, timeout_seconds=0.3).read_ratings()
    assert time.monotonic() - started < 2
    assert sum(postgrest.request_counts.values()) == 1
    assert_clean(caught.value, TEST_API_KEY)
    assert TEST_API_KEY not in caplog.text


def test_stopped_server_is_unreachable(postgrest, caplog):
    caplog.set_level(logging.DEBUG)
    resource = rest(postgrest, max_retries=1)
    postgrest.stop()
    with pytest.raises(
        SupabaseReadError,
        match=rf"unreachable: 127\.0\.0\.1:{postgrest.port} \(ConnectError\) "
        r"\(after 1 retries\)",
    ) as caught:
        resource.ratings_watermark()
    assert_clean(caught.value, TEST_API_KEY)
    assert TEST_API_KEY not in caplog.text


def test_closed_port_is_unreachable():
    resource = SupabaseResource(url=f"http://127.0.0.1:{free_loopback_port()}", key=TEST_API_KEY, max_retries=0)
    with pytest.raises(SupabaseReadError, match="unreachable") as caught:
        resource.read_catalog_ids("movies")
    assert_clean(caught.value, TEST_API_KEY)


def test_malformed_url_is_reported_without_the_key():
    with pytest.raises(SupabaseReadError, match="invalid Supabase settings") as caught:
        SupabaseResource(url="not a url", key=TEST_API_KEY).read_ratings()
    assert_clean(caught.value, TEST_API_KEY)


# --- watermark and catalog (both readers) ------------------------------------------


def test_watermark_follows_arrivals_and_both_readers_agree(postgrest, ratings_db):
    readers = [rest(postgrest), SupabasePostgresResource(db_url=ratings_db)]
    empty = {"count": 0, "latest_id": None, "latest_created_at": None}
    assert [r.ratings_watermark() for r in readers] == [empty, empty]
    insert_ratings(ratings_db, valid_rows(30))  # newest timestamp shared by ids 28-30
    expected = {"count": 30, "latest_id": 30, "latest_created_at": "2024-05-01T12:09:00+00:00"}
    assert [r.ratings_watermark() for r in readers] == [expected, expected]
    insert_ratings(ratings_db, [("late", 7, 3.5, BASE + timedelta(hours=1, microseconds=250))])
    insert_ratings(ratings_db, [("backfill", 8, 3.5, BASE - timedelta(days=1))])
    # The last to arrive is the newest, whatever its client dated it.
    expected = {"count": 32, "latest_id": 32, "latest_created_at": "2024-04-30T12:00:00+00:00"}
    assert [r.ratings_watermark() for r in readers] == [expected, expected]
    now = datetime.now(timezone.utc)
    insert_ratings(ratings_db, [("ahead", 9, 3.5, now + timedelta(days=365))])
    for mark in (r.ratings_watermark() for r in readers):
        assert mark["latest_id"] == 33
        assert mark["latest_created_at"] < (now + timedelta(hours=1)).isoformat()  # clamped to the server's now


def test_new_since_counts_what_arrived_after_a_watermark_whatever_its_dates(postgrest, ratings_db):
    readers = [rest(postgrest), SupabasePostgresResource(db_url=ratings_db)]
    insert_ratings(ratings_db, valid_rows(30))
    assert [r.new_since(None)[:2] for r in readers] == [(30, BASE.isoformat())] * 2
    mark = readers[0].ratings_watermark()
    assert [r.new_since(mark["latest_id"]).count for r in readers] == [0, 0]
    latest = BASE + timedelta(minutes=9)
    insert_ratings(
        ratings_db,
        [
            ("tie", 1, 3.0, latest),
            ("later", 2, 3.0, latest + timedelta(microseconds=1)),
            ("ahead", 3, 3.0, datetime.now(timezone.utc) + timedelta(days=365)),
            ("backfill", 4, 3.0, BASE - timedelta(days=1)),  # dated before the mark: new all the same
        ],
    )
    with psycopg.connect(ratings_db) as conn:
        conn.execute("DELETE FROM ratings WHERE id <= 5")  # deletions do not hide new rows
    news = [r.new_since(mark["latest_id"]) for r in readers]
    assert [(n.count, n.oldest) for n in news] == [(4, (BASE - timedelta(days=1)).isoformat())] * 2
    assert all(n.now > BASE.isoformat() for n in news)  # the server's clock


def test_only_future_dated_new_rows_are_dated_now(postgrest, ratings_db):
    insert_ratings(ratings_db, [("ahead", 3, 3.0, datetime.now(timezone.utc) + timedelta(days=365))])
    for reader in (rest(postgrest), SupabasePostgresResource(db_url=ratings_db)):
        new = reader.new_since(None)
        assert new.count == 1 and new.oldest <= new.now


def test_catalog_ids_are_read_completely_by_both_readers(postgrest, ratings_db):
    ids = list(range(1, 2301)) + [5, 5, None, None]
    create_catalog_table(ratings_db, tmdb_ids=ids)
    assert rest(postgrest).read_catalog_ids("movies") == list(range(1, 2301))
    assert SupabasePostgresResource(db_url=ratings_db).read_catalog_ids("movies") == list(range(1, 2301))
    with pytest.raises(SupabaseReadError, match="unknown table 'films'"):
        rest(postgrest).read_catalog_ids("films")
    with pytest.raises(SupabaseReadError, match="unknown table"):
        SupabasePostgresResource(db_url=ratings_db).read_catalog_ids("films")


def test_catalog_values_that_are_not_integers_are_an_error():
    assert catalog_ids_from_values([3, None, 1, 3.0, float("nan")], "movies", "tmdb_id") == [1, 3]
    with pytest.raises(SupabaseReadError, match=r"movies.tmdb_id holds 2 non-integer"):
        catalog_ids_from_values([1, 2.5, "7"], "movies", "tmdb_id")


# --- psycopg twin ------------------------------------------------------------------


def test_postgres_reader_returns_the_same_frame_and_stats(postgrest, ratings_db):
    insert_ratings(ratings_db, valid_rows(2500) + [(None, 1, 4.0, BASE), ("u", 2, 9.0, BASE)])
    rest_frame, rest_stats = rest(postgrest).read_ratings()
    pg_frame, pg_stats = SupabasePostgresResource(db_url=ratings_db, batch_size=1000).read_ratings()
    pd.testing.assert_frame_equal(pg_frame, rest_frame)
    assert pg_stats == rest_stats  # both paged by 1,000: 4 pages each, the last empty
    assert rest_stats["valid_rows"] == 2500 and rest_stats["dropped_missing_ids"] == 1


def test_postgres_reader_errors_name_the_cause_not_the_password(pg_server: PostgresServer, ratings_db, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = pg_server.with_password("hunter2-wrong-pw")
    with pytest.raises(SupabaseReadError, match="authentication failed") as caught:
        SupabasePostgresResource(db_url=wrong.conninfo).read_ratings()
    assert_clean(caught.value, "hunter2-wrong-pw", pg_server.password)

    closed = PostgresServer("127.0.0.1", free_loopback_port(), "postgres", "pw-closed-port", "x")
    with pytest.raises(SupabaseReadError, match="unreachable") as caught:
        SupabasePostgresResource(db_url=closed.conninfo).read_ratings()
    assert_clean(caught.value, "pw-closed-port")

    with pytest.raises(SupabaseReadError, match="unknown table") as caught:
        SupabasePostgresResource(db_url=ratings_db, table="nope").read_ratings()
    assert_clean(caught.value, pg_server.password)

    bad_url = f"postgresql://postgres:{pg_server.password}@127.0.0.1:notaport/x"
    with pytest.raises(SupabaseReadError) as caught:
        SupabasePostgresResource(db_url=bad_url).read_ratings()
    assert_clean(caught.value, pg_server.password)
    assert pg_server.password not in caplog.text


@pytest.fixture
def at_sign_role(pg_server: PostgresServer, ratings_db):
    """A role whose password holds raw '@' (as operators paste it), allowed to read ratings."""
    password = "hunter@2tail-q9z"
    with psycopg.connect(ratings_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE at_reader LOGIN PASSWORD '{password}'")
        conn.execute("GRANT SELECT ON ratings TO at_reader")
    try:
        yield "at_reader", password, f"@{pg_server.host}:{pg_server.port}/{pg_server.dbname}"
    finally:
        with psycopg.connect(ratings_db, autocommit=True) as conn:
            conn.execute("DROP OWNED BY at_reader")
            conn.execute("DROP ROLE at_reader")


def test_a_password_with_a_raw_at_sign_logs_in(at_sign_role, ratings_db):
    role, password, host = at_sign_role
    insert_ratings(ratings_db, valid_rows(3))
    # libpq alone splits at the first '@': "failed to resolve host '2tail-q9z@127.0.0.1'".
    frame, stats = SupabasePostgresResource(db_url=f"postgresql://{role}:{password}{host}").read_ratings()
    assert len(frame) == stats["server_count"] == 3
    encoded = password.replace("@", "%40")  # the spelling libpq documents works the same
    assert SupabasePostgresResource(db_url=f"postgresql://{role}:{encoded}{host}").ratings_watermark()["count"] == 3


def test_a_wrong_password_with_a_raw_at_sign_shows_no_piece_of_it(at_sign_role, caplog):
    caplog.set_level(logging.DEBUG)
    role, _, host = at_sign_role
    reader = SupabasePostgresResource(db_url=f"postgresql://{role}:wrong@tail-k3x{host}")  # (tracebacks quote the line)
    with pytest.raises(SupabaseReadError, match="authentication failed") as caught:
        reader.read_ratings()
    assert_clean(caught.value, "tail-k3x", "wrong@")
    assert "tail-k3x" not in caplog.text


def test_what_the_driver_says_is_scrubbed_of_password_pieces_and_known_secrets(ratings_db, monkeypatch):
    raw = "postgresql://postgres:hunter@2tail-q9z@127.0.0.1:5432/db"
    with pytest.raises(psycopg.OperationalError) as caught:  # the driver given the URL unparsed
        psycopg.connect(raw, connect_timeout=2)
    assert "2tail-q9z@127.0.0.1" in str(caught.value)  # what libpq quotes back
    assert "2tail-q9z" not in redact_dsn_secrets(str(caught.value), raw)

    key_id = "AKIAPGDRIVERTEST01"  # a table name the server quotes back is as good as any text
    monkeypatch.setenv("CFREC_S3_ACCESS_KEY_ID", key_id + "\n")
    with pytest.raises(SupabaseReadError, match=r"unknown table: relation \"\[redacted\]\" does not exist") as caught:
        SupabasePostgresResource(db_url=ratings_db, table=key_id).read_ratings()
    assert_clean(caught.value, key_id)


def test_postgres_reader_times_out_on_a_locked_table(ratings_db):
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(ratings_db) as conn, conn.transaction():
            conn.execute("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(5)
        started = time.monotonic()
        with pytest.raises(SupabaseReadError, match=r"timed out after 0\.5s"):
            SupabasePostgresResource(db_url=ratings_db, timeout_seconds=0.5).read_ratings()
        assert time.monotonic() - started < 3
    finally:
        release.set()
        holder.join()
