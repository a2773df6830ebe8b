"""A PostgREST-compatible HTTP server (read subset) over a real PostgreSQL database.

PostgREST itself is not installable here, so this serves the part our code
uses, following PostgREST's own rules (src/PostgREST/RangeQuery.hs,
Error/ApiRequestError.hs, Response.hs) so the real ``supabase`` client sees
what it would see in production:

* ``GET``/``HEAD /rest/v1/<table>`` with ``select``, ``order``, ``limit``,
  ``offset`` and ``col=<op>.<value>`` filters (eq, neq, gt, gte, lt, lte);
  the body is PostgreSQL's own ``json_agg`` of the rows, as in PostgREST.
* ``db_max_rows`` caps every response (PostgREST's ``db-max-rows``).
* ``Content-Range`` on every response, ``Prefer: count=exact`` totals and the
  200 / 206 / 416 (PGRST103) status rules.
* Supabase's gateway key check (``apikey`` header, ``Authorization: Bearer``).
* Error bodies ``{code, details, hint, message}`` and PostgREST 13's
  ``Proxy-Status: PostgREST; error=<code>`` header; identifiers are checked
  against ``information_schema`` and values are bound parameters, never SQL.

Differences, on purpose: the schema is read per request (no schema cache to
reload), the ``Range`` request header and embedding/aliases/casts are
unsupported (400), and ``count=planned|estimated`` are answered exactly.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql

OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
REST_PREFIX = "/rest/v1/"
TEST_API_KEY = "test-service-role-key-7f3a9c1e52b8"
"""The key the ``postgrest`` fixture accepts; tests assert it never leaks."""


@dataclass
class Reply:
    """An HTTP response: status, headers and body (dropped for HEAD)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class RecordedRequest:
    """What a test may assert about a request (never its credentials)."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    prefer: str | None


class ApiError(Exception):
    """A PostgREST-style error reply."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        details: str | None = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reply = _json_reply(status, {"code": code, "details": details, "hint": hint, "message": message})
        if code:  # PostgREST 13+: the code survives even where the body cannot (HEAD)
            self.reply.headers["Proxy-Status"] = f"PostgREST; error={code}"
        self.reply.headers.update(headers or {})


def _json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(payload).encode())


def _parse_error(what: str, raw: str, details: str) -> ApiError:
    return ApiError(400, "PGRST100", f"failed to parse {what} ({raw})", details)


class PostgrestSubsetServer:
    """Threaded HTTP server; ``url`` is the Supabase project URL to give the client.

    Test hooks: :meth:`fail_next`, :attr:`delay_seconds`, :attr:`request_counts`,
    :attr:`requests`, :attr:`on_request` (called with each request before it is
    answered, e.g. to change the table mid-read) and :meth:`stop` (after which
    the port refuses connections).
    """

    def __init__(
        self, conninfo: str, api_keys: Iterable[str], *, db_max_rows: int | None = 1000, schema: str = "public"
    ) -> None:
        self.conninfo = conninfo
        self.api_keys = frozenset(api_keys)
        self.db_max_rows = db_max_rows
        self.schema = schema
        self.delay_seconds = 0.0
        self.request_counts: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._failures: list[Reply] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for it, on every test's teardown.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="postgrest-subset", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self,
        times: int,
        status: int = 503,
        body: bytes | None = None,
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (before auth, like a proxy)."""
        if body is None:
            body = json.dumps(
                {"code": None, "details": None, "hint": None, "message": HTTPStatus(status).phrase}
            ).encode()
        with self._lock:
            self._failures.extend(Reply(status, {"Content-Type": content_type}, body) for _ in range(times))

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()  # wakes handlers sleeping in an injected delay
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PostgrestSubsetServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- request handling -------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        """Answer one request; ``headers`` must be case-insensitive (like http.server's)."""
        parts = urlsplit(target)
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        recorded = RecordedRequest(method, parts.path, params, headers.get("Prefer"))
        with self._lock:
            self.request_counts[method] += 1
            self.requests.append(recorded)
            injected = self._failures.pop(0) if self._failures else None
        if self.on_request is not None:
            self.on_request(recorded)
        if self.delay_seconds and self._stopped.wait(self.delay_seconds):
            return Reply(503)
        if injected is not None:
            return injected
        try:
            self._check_key(headers)
            if method not in ("GET", "HEAD"):
                raise ApiError(
                    405, "PGRST117", f"Unsupported HTTP method: {method}", "this test server only serves reads"
                )
            if not parts.path.startswith(REST_PREFIX) or "/" in parts.path[len(REST_PREFIX) :]:
                raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
            profile = headers.get("Accept-Profile") or self.schema
            if profile != self.schema:
                raise ApiError(
                    406,
                    "PGRST106",
                    f"Invalid schema: {profile}",
                    hint=f"Only the following schemas are exposed: {self.schema}",
                )
            table = parts.path[len(REST_PREFIX) :]
            return self._read(table, params, headers.get("Prefer") or "", method == "HEAD")
        except ApiError as error:
            return error.reply

    def _check_key(self, headers: Mapping[str, str]) -> None:
        api_key = headers.get("apikey")
        if not api_key:
            raise ApiError(
                401, None, "No API key found in request", hint="No `apikey` request header or url param was found."
            )
        if api_key not in self.api_keys:
            raise ApiError(
                401, None, "Invalid API key", hint="Double check your Supabase `anon` or `service_role` API key."
            )
        authorization = headers.get("Authorization")
        if authorization is not None and authorization.removeprefix("Bearer ") not in self.api_keys:
            raise ApiError(401, "PGRST301", "Invalid JWT", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _read(self, table: str, params: tuple[tuple[str, str], ...], prefer: str, head: bool) -> Reply:
        with psycopg.connect(self.conninfo, autocommit=True, options="-c TimeZone=UTC") as conn:
            columns = self._columns(conn, table)
            query = _ReadQuery.parse(table, columns, params, self.db_max_rows)
            counted = any(p.strip().startswith("count=") for p in prefer.split(","))
            try:
                total, returned, body = conn.execute(query.statement(self.schema, counted), query.values).fetchone()
            except psycopg.Error as error:
                raise _from_postgres(error) from error
        status, content_range = _range_status(query.offset, returned, total)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Range": content_range,
            "Content-Location": f"/{table}",
        }
        if counted:
            headers["Preference-Applied"] = "count=exact"
        if status == 416:
            error = ApiError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                f"An offset of {query.offset} was requested, but there are only {total} rows.",
            )
            error.reply.headers.update(headers)
            return error.reply
        payload = b"" if head else body.encode()
        return Reply(status, headers, payload)

    def _columns(self, conn: psycopg.Connection, table: str) -> list[str]:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (self.schema, table),
        ).fetchall()
        if not rows:
            raise ApiError(404, "PGRST205", f"Could not find the table '{self.schema}.{table}' in the schema cache")
        return [name for (name,) in rows]


@dataclass
class _ReadQuery:
    """A validated read: whitelisted identifiers plus bound filter values."""

    table: str
    select: list[str]
    filters: list[tuple[str, str]]  # (column, SQL operator)
    values: dict[str, str]
    order: list[tuple[str, bool, bool | None]]  # (column, descending, nulls first)
    limit: int | None
    offset: int

    @classmethod
    def parse(
        cls, table: str, columns: list[str], params: tuple[tuple[str, str], ...], db_max_rows: int | None
    ) -> _ReadQuery:
        def known(column: str) -> str:
            if column not in columns:
                raise ApiError(400, "42703", f"column {table}.{column} does not exist")
            return column

        query = cls(table, list(columns), [], {}, [], db_max_rows, 0)
        limit: int | None = None
        for key, raw in params:
            if key == "select":
                names = [c.strip() for c in raw.split(",")]
                if names != ["*"]:
                    if any(not c or not c.replace("_", "").isalnum() for c in names):
                        raise _parse_error("select", raw, "only plain column names are supported by this test server")
                    query.select = [known(c) for c in names]
            elif key == "order":
                query.order = [_parse_order_term(term, raw, known) for term in raw.split(",")]
            elif key in ("limit", "offset"):
                if not raw.lstrip("-").isdigit():
                    raise _parse_error(f"{key} parameter", raw, "expecting an integer")
                if key == "offset":
                    query.offset = int(raw)
                elif int(raw) < 0:
                    raise ApiError(
                        416,
                        "PGRST103",
                        "Requested range not satisfiable",
                        "Limit should be greater than or equal to zero.",
                    )
                else:
                    limit = int(raw)
            else:
                operator, dot, value = raw.partition(".")
                if not dot or operator not in OPERATORS:
                    raise _parse_error("filter", raw, "supported operators: " + ", ".join(OPERATORS))
                query.values[f"v{len(query.filters)}"] = value
                query.filters.append((known(key), OPERATORS[operator]))
        if query.offset < 0:
            raise _parse_error("offset parameter", str(query.offset), "expecting >= 0")
        if limit is not None:
            query.limit = limit if db_max_rows is None else min(limit, db_max_rows)
        return query

    def statement(self, schema: str, counted: bool) -> sql.Composed:
        source = sql.Identifier(schema, self.table)
        where = (
            sql.SQL(" AND ").join(
                sql.SQL("{} {} {}").format(sql.Identifier(column), sql.SQL(op), sql.Placeholder(f"v{i}"))
                for i, (column, op) in enumerate(self.filters)
            )
            if self.filters
            else sql.SQL("true")
        )
        order = (
            sql.SQL(", ").join(
                sql.SQL("{} {}{}").format(
                    sql.Identifier(column),
                    sql.SQL("DESC" if desc else "ASC"),
                    sql.SQL("" if nulls is None else " NULLS FIRST" if nulls else " NULLS LAST"),
                )
                for column, desc, nulls in self.order
            )
            if self.order
            else None
        )
        total = (
            sql.SQL("(SELECT count(*) FROM {} WHERE {})").format(source, where) if counted else sql.SQL("NULL::bigint")
        )
        return sql.SQL(
            "SELECT {total}, count(t), coalesce(json_agg(t), '[]')::text FROM ("
            "SELECT {cols} FROM {source} WHERE {where}{order} LIMIT {limit} OFFSET {offset}"
            ") t"
        ).format(
            total=total,
            source=source,
            where=where,
            cols=sql.SQL(", ").join(map(sql.Identifier, self.select)),
            order=sql.SQL(" ORDER BY {}").format(order) if order else sql.SQL(""),
            limit=sql.Literal(self.limit) if self.limit is not None else sql.SQL("ALL"),
            offset=sql.Literal(self.offset),
        )


def _parse_order_term(term: str, raw: str, known: Any) -> tuple[str, bool, bool | None]:
    column, *modifiers = term.strip().split(".")
    descending, nulls_first = False, None
    for modifier in modifiers:
        if modifier in ("asc", "desc"):
            descending = modifier == "desc"
        elif modifier in ("nullsfirst", "nullslast"):
            nulls_first = modifier == "nullsfirst"
        else:
            raise _parse_error("order", raw, f"unexpected modifier {modifier!r}")
    return known(column), descending, nulls_first


def _range_status(offset: int, returned: int, total: int | None) -> tuple[int, str]:
    """PostgREST's rangeStatusHeader: the status and Content-Range for a read."""
    upper = offset + returned - 1
    range_part = f"{offset}-{upper}" if total != 0 and offset <= upper else "*"
    content_range = f"{range_part}/{'*' if total is None else total}"
    if total is None:
        return 200, content_range
    if offset > total:
        return 416, content_range
    if 1 + upper - offset < total:
        return 206, content_range
    return 200, content_range


def _from_postgres(error: psycopg.Error) -> ApiError:
    """Map a database error to PostgREST's status for its SQLSTATE (subset)."""
    state = error.sqlstate or ""
    status = {"42P01": 404, "42883": 404, "42501": 403, "57014": 500}.get(state)
    if status is None:
        status = (
            503
            if state.startswith(("08", "53"))
            else 500
            if state.startswith(("XX", "58", "57", "55", "54", "40"))
            else 400
        )
    diag = error.diag
    return ApiError(status, state or None, diag.message_primary or str(error), diag.message_detail, diag.message_hint)


def _make_handler(server: PostgrestSubsetServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            if self.command not in ("GET", "HEAD"):
                self.close_connection = True  # its body is never read
            try:
                reply = server.handle(self.command, self.path, self.headers)
            except Exception as error:  # a bug here must surface as a 500, not a hang
                reply = _json_reply(
                    500, {"code": None, "details": None, "hint": None, "message": f"test server error: {error!r}"}
                )
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout fired during a delay)

        do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: request lines are test noise."""

    return Handler


def _serve(conninfo: str, keys: list[str], ready, stop) -> None:
    with PostgrestSubsetServer(conninfo, keys) as server:
        ready.put(server.url)
        stop.wait()


@contextlib.contextmanager
def postgrest_process(conninfo: str, keys: list[str] | None = None) -> Iterator[str]:
    """The PostgREST-subset server in its own process (as PostgREST would be): yields its URL.

    In-process, its JSON work would share the reader's GIL and slow both down (benchmarks), and
    a daemon in another process can reach it the same way.
    """
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(conninfo, keys or [TEST_API_KEY], ready, stop), daemon=True)
    process.start()
    try:
        yield ready.get(timeout=60)
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
