"""Read the same ratings straight from Supabase's PostgreSQL with psycopg 3.

No row cap here, and the count and the rows come from one REPEATABLE READ
snapshot, so they agree by construction (still checked). ``prepare_threshold=None``
and ``SET LOCAL``-style settings keep it working through Supabase's
transaction pooler, which cannot keep prepared statements or session state.
Results and stats match :class:`cfrec_assets.supabase_io.rest.SupabaseResource`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import psycopg
from psycopg import sql
from pydantic import Field

from cfrec_assets.redact import redact_dsn_secrets
from cfrec_assets.supabase_io.table import (
    RATINGS_COLUMNS,
    RatingsReader,
    SupabaseReadError,
    catalog_ids_from_values,
    check_complete,
    check_identifier,
    utc_isoformat,
    validate_ratings,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SupabasePostgresResource(RatingsReader):
    """Reads the ratings table over a direct (or pooled) PostgreSQL connection."""

    db_url: str | None = Field(default=None, repr=False, description="Connection URL (SUPABASE_DB_URL).")
    batch_size: int = Field(default=5000, ge=1, description="Rows per cursor fetch.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Connect timeout and statement timeout.")

    @property
    def reader_name(self) -> str:
        return "postgres"

    @property
    def is_configured(self) -> bool:
        return bool(self.db_url)

    def read_ratings(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """Every rating row, validated; ``pages`` counts cursor fetches (last one empty)."""
        table = _identifier(self.table)
        columns = sql.SQL(", ").join(map(sql.Identifier, (self.id_column, *self.source_columns)))
        order = sql.SQL("{} ASC NULLS LAST, {} ASC").format(
            sql.Identifier(self.created_at_column), sql.Identifier(self.id_column)
        )
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(columns, table, order)
        server_count, (rows, pages) = self._run(
            lambda conn: (_count(conn, table), _fetch_all(conn, query, self.batch_size))
        )
        check_complete(len(rows), server_count, self.table)
        raw = pd.DataFrame([row[1:] for row in rows], columns=list(RATINGS_COLUMNS), dtype=object)
        ids = [row[0] for row in rows]
        frame, stats = validate_ratings(raw, self.rating_min, self.rating_max, ids, self.table)
        stats.update(server_count=server_count, pages=pages)
        logger.info("read %s rows of '%s' over PostgreSQL: %s", len(rows), self.table, stats)
        return frame, stats

    def ratings_watermark(self) -> dict[str, Any]:
        """Row count and newest (created_at, id), as ``SupabaseResource`` reports them."""
        table = _identifier(self.table)
        created_at, row_id = sql.Identifier(self.created_at_column), sql.Identifier(self.id_column)
        newest_query = sql.SQL("SELECT {}, {} FROM {} ORDER BY {} DESC NULLS LAST, {} DESC LIMIT 1").format(
            created_at, row_id, table, created_at, row_id
        )
        count, newest = self._run(lambda conn: (_count(conn, table), conn.execute(newest_query).fetchone()))
        latest_at, latest_id = newest if newest else (None, None)
        return {
            "count": count,
            "latest_created_at": utc_isoformat(latest_at),
            "latest_id": int(latest_id) if latest_id is not None else None,
        }

    def count_after(self, created_at: str | None, row_id: int | None) -> int:
        """Rows after a watermark's (created_at, id) in read order; all rows for None."""
        return self.new_since(created_at, row_id)[0]

    def new_since(self, created_at: str | None, row_id: int | None) -> tuple[int, str | None]:
        """(count, earliest created_at) of the rows after a watermark's (created_at, id); of all
        rows for None (as :meth:`SupabaseResource.new_since`)."""
        table, at = _identifier(self.table), sql.Identifier(self.created_at_column)
        params: dict[str, Any] | None = None
        if created_at is None:
            query = sql.SQL("SELECT count(*), min({at}) FROM {table}").format(table=table, at=at)
        else:
            params = {"at": created_at, "id": row_id}
            query = sql.SQL(
                "SELECT count(*), min({at}) FROM {table} WHERE {at} > %(at)s"
                " OR ({at} = %(at)s AND (%(id)s::bigint IS NULL OR {id} > %(id)s))"
            ).format(table=table, at=at, id=sql.Identifier(self.id_column))
        count, first = self._run(lambda conn: conn.execute(query, params).fetchone())
        return count, utc_isoformat(first)

    def read_catalog_ids(self, table: str, column: str = "tmdb_id") -> list[int]:
        """Sorted distinct ids in ``table.column`` (nulls skipped)."""
        check_identifier(table, "catalog table", table=True)
        check_identifier(column, "catalog column")
        source = _identifier(table)
        query = sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), source)
        server_count, (rows, _) = self._run(
            lambda conn: (_count(conn, source), _fetch_all(conn, query, self.batch_size))
        )
        check_complete(len(rows), server_count, table)
        return catalog_ids_from_values((value for (value,) in rows), table, column)

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """``work(conn)`` in a read-only REPEATABLE READ transaction, errors made clean."""
        if not self.db_url:
            raise SupabaseReadError("Supabase Postgres is not configured: set SUPABASE_DB_URL")
        failure = None
        try:
            with psycopg.connect(
                self.db_url, prepare_threshold=None, connect_timeout=max(2, math.ceil(self.timeout_seconds))
            ) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                with conn.transaction():
                    # set_config(..., true) is SET LOCAL: it ends with the transaction,
                    # so a pooled connection is handed back clean.
                    conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        (f"{math.ceil(self.timeout_seconds * 1000)}ms",),
                    )
                    return work(conn)
        except psycopg.Error as error:
            failure = self._describe(error)
        # Raised outside `except` so no database exception is chained to it.
        raise SupabaseReadError(
            redact_dsn_secrets(f"Supabase Postgres read from '{self.table}' failed: {failure}", self.db_url)
        )

    def _describe(self, error: psycopg.Error) -> str:
        if isinstance(error, psycopg.errors.QueryCanceled):
            return f"timed out after {self.timeout_seconds:g}s"
        if isinstance(error, psycopg.errors.UndefinedTable):
            return f"unknown table: {error.diag.message_primary}"
        if isinstance(error, psycopg.errors.UndefinedColumn):
            return f"unknown column: {error.diag.message_primary}"
        if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
            text = str(error).strip().splitlines()[-1] if str(error).strip() else ""
            if "timeout expired" in text:
                return f"timed out after {self.timeout_seconds:g}s connecting: {text}"
            if "password authentication failed" in text:
                return f"authentication failed (check SUPABASE_DB_URL): {text}"
            return f"unreachable: {text}"
        if isinstance(error, psycopg.ProgrammingError) and error.sqlstate is None:
            return f"invalid SUPABASE_DB_URL: {error}"
        return f"{error.sqlstate or type(error).__name__}: {error}"


def _identifier(name: str) -> sql.Identifier:
    """``table`` or ``schema.table``, quoted (never interpolated as raw SQL)."""
    return sql.Identifier(*name.split(".", 1))


def _count(conn: psycopg.Connection, table: sql.Identifier) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]


def _fetch_all(conn: psycopg.Connection, query: sql.Composed, batch_size: int) -> tuple[list[tuple[Any, ...]], int]:
    """Stream through a server-side cursor; returns rows and fetches (last one empty)."""
    rows: list[tuple[Any, ...]] = []
    fetches = 0
    with conn.cursor(name="cfrec_read") as cursor:
        cursor.execute(query)
        while True:
            batch = cursor.fetchmany(batch_size)
            fetches += 1
            if not batch:
                return rows, fetches
            rows.extend(batch)
