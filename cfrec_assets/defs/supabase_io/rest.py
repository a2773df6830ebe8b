"""Read the app's ratings from Supabase completely, and say exactly what was read.

PostgREST caps every response at ``db-max-rows`` (1,000 on Supabase), so one
request silently truncates. :class:`SupabaseResource` therefore pages with
``.range()`` over a total order (created_at, then primary key) until a page
comes back *empty* (a short page proves nothing: a page size above the server
cap comes back short too), and checks the rows read against an exact count.

Retries: supabase-py's own retry (GET/HEAD on 503/520 and network errors,
sleeping 1, 2, 4 s) is switched off (``postgrest_client_retry=False``) and
replaced by :meth:`_RestSession.execute`, which retries the same cases plus
502/504 with a configurable backoff and can then name the HTTP status in its
error. Timeouts are not retried: each one already cost ``timeout_seconds``.

The Postgres-direct twin is :mod:`.postgres`; both share :mod:`.table`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pandas as pd
from postgrest.exceptions import APIError
from pydantic import Field

from cfrec_assets.defs.supabase_io.table import (
    RATINGS_COLUMNS,
    NewRatings,
    RatingsReader,
    SupabaseReadError,
    catalog_ids_from_values,
    check_complete,
    check_identifier,
    clamped,
    utc_isoformat,
    validate_ratings,
)
from cfrec_assets.settings import scrub
from cfrec_serving.redact import redact_secret

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504, 520})
MAX_BACKOFF_SECONDS = 30.0


class SupabaseResource(RatingsReader):
    """Reads through Supabase's REST API (PostgREST) with the official client."""

    url: str | None = Field(default=None, description="Project URL (SUPABASE_URL).")
    key: str | None = Field(default=None, repr=False, description="Service-role key (SUPABASE_KEY).")
    page_size: int = Field(default=1000, ge=1, le=1000, description="Rows per request; at most PostgREST's 1,000 cap.")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, description="Retries of transient failures.")
    retry_backoff_seconds: float = Field(default=1.0, ge=0, description="First retry delay; doubles each time.")

    @property
    def reader_name(self) -> str:
        return "rest"

    @property
    def is_configured(self) -> bool:
        return bool(self.url and self.key)

    def read_ratings(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """Every rating row, validated; see :func:`validate_ratings` for the stats."""
        columns = self.source_columns
        with self._session() as session:
            server_count = session.count(self.table)
            rows, pages = session.read_all(
                self.table, (self.id_column, *columns), (self.created_at_column, self.id_column), server_count
            )
        check_complete(len(rows), server_count, self.table)
        if len({row.get(self.id_column) for row in rows}) != len(rows):
            raise SupabaseReadError(
                f"rows of '{self.table}' were read twice: the table changed during the read (offset pages shifted)"
            )
        raw = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=list(RATINGS_COLUMNS), dtype=object)
        ids = [row.get(self.id_column) for row in rows]
        frame, stats = validate_ratings(raw, self.rating_min, self.rating_max, ids, self.table)
        stats.update(server_count=server_count, pages=pages)
        logger.info("read %s rows of '%s' in %s pages: %s", len(rows), self.table, pages, stats)
        return frame, stats

    def ratings_watermark(self) -> dict[str, Any]:
        """As :meth:`RatingsReader.ratings_watermark`. Over REST the arrival column's sequence is out
        of sight, so its values are trusted: make it GENERATED ALWAYS (README)."""
        with self._session() as session:
            # GET first: a failing HEAD has no body, so its error says less.
            newest = session.execute(
                self.table,
                lambda q: (
                    q.select(self.arrival, self.created_at_column)
                    .order(self.arrival, desc=True, nullsfirst=False)
                    .limit(1)
                ),
            )
            count = session.count(self.table)
            now = session.server_now()
        row = newest[0] if newest else {}
        return {
            "count": count,
            "latest_id": self.arrival_id(row.get(self.arrival)),
            "latest_created_at": clamped(row.get(self.created_at_column), now),
        }

    def new_since(self, after_id: int | None) -> NewRatings:
        """As :meth:`RatingsReader.new_since`, created_at clamped to the server's clock (its
        responses' ``Date``). Counted, not inferred from totals: deletions make totals lie."""

        def after(q: Any) -> Any:
            return q if after_id is None else q.gt(self.arrival, after_id)

        with self._session() as session:
            count = session.count(self.table, after)
            first = (
                session.execute(
                    self.table, lambda q: after(q.select(self.created_at_column)).order(self.created_at_column).limit(1)
                )
                if count
                else []
            )
            now = session.server_now()
        oldest = clamped(first[0].get(self.created_at_column), now) if first else None
        return NewRatings(count, oldest, utc_isoformat(now))

    def read_catalog_ids(self, table: str, column: str = "tmdb_id") -> list[int]:
        """Sorted distinct ids in ``table.column``, read completely (nulls skipped)."""
        check_identifier(table, "catalog table", table=True)
        check_identifier(column, "catalog column")
        with self._session() as session:
            server_count = session.count(table)
            rows, _ = session.read_all(table, (column,), (column,), server_count)
        check_complete(len(rows), server_count, table)
        return catalog_ids_from_values((row.get(column) for row in rows), table, column)

    @contextmanager
    def _session(self) -> Iterator[_RestSession]:
        if not self.is_configured:
            raise SupabaseReadError("Supabase is not configured: set SUPABASE_URL and SUPABASE_KEY")
        session = _RestSession(self)
        try:
            yield session
        finally:
            session.close()


class _RestSession:
    """One supabase client plus the HTTP status of its latest response."""

    def __init__(self, settings: SupabaseResource) -> None:
        from supabase import ClientOptions, create_client  # slow import; only when used

        self._settings = settings
        self._last_status: int | None = None
        self._last_date: str | None = None
        self._http = httpx.Client(timeout=settings.timeout_seconds, event_hooks={"response": [self._remember_status]})
        failure = None
        try:
            self._client = create_client(
                settings.url, settings.key, ClientOptions(httpx_client=self._http, postgrest_client_retry=False)
            )
        except Exception as error:  # SupabaseException for a malformed URL or key
            failure = f"invalid Supabase settings: {type(error).__name__}: {error}"
        if failure is not None:  # raised outside `except`: no chained secrets
            self._http.close()
            raise SupabaseReadError(self._scrub(failure))

    def _remember_status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code
        self._last_date = response.headers.get("date")

    def server_now(self) -> datetime:
        """The server's clock from its latest response's ``Date`` (this machine's without one).

        ``Date`` has whole seconds, so the second after it: a rating stored a moment ago is not
        "in the future", and one dated ahead is still clamped to (within a second of) now.
        """
        try:
            return parsedate_to_datetime(self._last_date).astimezone(timezone.utc) + timedelta(seconds=1)
        except (TypeError, ValueError):
            return datetime.now(timezone.utc)

    def close(self) -> None:
        self._http.close()

    def count(self, table: str, narrow: Callable[[Any], Any] = lambda q: q) -> int:
        """Exact row count (of rows passing ``narrow``'s filters) from a HEAD's Content-Range."""
        response = self.execute(table, lambda q: narrow(q.select("*", count="exact", head=True)), full_response=True)
        if response.count is None:
            raise SupabaseReadError(
                f"no row count for '{table}' in the response (HTTP {self._last_status}, no Content-Range total)"
            )
        return response.count

    def read_all(
        self, table: str, columns: tuple[str, ...], order: tuple[str, ...], expected: int
    ) -> tuple[list[dict[str, Any]], int]:
        """All rows by ``.range()`` pages until an empty page; also the pages requested.

        ``order`` must be a total order when the rows matter individually (offset
        paging over ties may repeat or skip rows). Reading more than ``expected``
        rows stops at once: the table is growing, or the server ignores offsets.
        """
        page_size = self._settings.page_size
        rows: list[dict[str, Any]] = []
        pages = 0
        while True:
            start = len(rows)

            def page_query(q: Any, start: int = start) -> Any:
                q = q.select(",".join(columns))
                for column in order:
                    q = q.order(column)
                return q.range(start, start + page_size - 1)

            page = self.execute(table, page_query)
            pages += 1
            if not page:
                return rows, pages
            rows.extend(page)
            if len(rows) > expected:
                check_complete(len(rows), expected, table)

    def execute(self, table: str, build: Callable[[Any], Any], full_response: bool = False) -> Any:
        """Run ``build(client.table(table)).execute()`` with retries and clean errors."""
        settings = self._settings
        for attempt in range(settings.max_retries + 1):
            retryable = False
            self._last_status = None
            try:
                response = build(self._client.table(table)).execute()
            except APIError as error:
                failure = self._describe_api_error(table, error)
                retryable = self._last_status in RETRY_STATUSES
            except httpx.TimeoutException:
                failure = f"timed out after {settings.timeout_seconds:g}s"
            except httpx.TransportError as error:
                failure = f"unreachable: {self._host()} ({type(error).__name__})"
                retryable = True
            else:
                if full_response:
                    return response
                if isinstance(response.data, list) and all(isinstance(row, dict) for row in response.data):
                    return response.data
                failure = f"unexpected response body (HTTP {self._last_status}): not a JSON array of rows"
            if not retryable or attempt == settings.max_retries:
                break
            time.sleep(min(settings.retry_backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS))
        if retryable and settings.max_retries:
            failure += f" (after {settings.max_retries} retries)"
        raise SupabaseReadError(self._scrub(f"Supabase read from '{table}' failed: {failure}"))

    def _describe_api_error(self, table: str, error: APIError) -> str:
        status = self._last_status
        code = error.code if error.code and error.code != str(status) else ""
        text = f"HTTP {status} {code}".rstrip() + f": {error.message or 'no message'}"
        if error.details and status not in (None, 502, 503, 504, 520):
            text += f" ({str(error.details)[:200]})"  # proxies put whole HTML pages here
        if error.code in ("PGRST205", "42P01") or status == 404:
            return f"unknown table '{table}': {text}"
        if status in (401, 403):
            return f"{text} (check SUPABASE_KEY: the service-role key is needed)"
        return text

    def _host(self) -> str:
        parts = urlsplit(self._settings.url or "")
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def _scrub(self, text: str) -> str:
        return scrub(redact_secret(text, self._settings.key))
