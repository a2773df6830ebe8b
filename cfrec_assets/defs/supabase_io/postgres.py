"""Read the same ratings straight from Supabase's PostgreSQL with psycopg 3.

No row cap here, and the count and the rows come from one REPEATABLE READ
snapshot, so they agree by construction (still checked). ``prepare_threshold=None``
and ``SET LOCAL``-style settings keep it working through Supabase's
transaction pooler, which cannot keep prepared statements or session state.
Results and stats match :class:`cfrec_assets.defs.supabase_io.rest.SupabaseResource`.
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

from cfrec_assets.defs.supabase_io.table import (
    RATINGS_COLUMNS,
    NewRatings,
    RatingsReader,
    SupabaseReadError,
    catalog_ids_from_values,
    check_complete,
    check_identifier,
    utc_isoformat,
    validate_ratings,
)
from cfrec_assets.settings import scrub
from cfrec_serving.redact import redact_dsn_secrets, split_credentials

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
        """As :meth:`RatingsReader.ratings_watermark`; ids above what the column's sequence handed
        out were written by a client and are left out (see :meth:`_arrival_bound`)."""
        table, arrival = _identifier(self.table), sql.Identifier(self.arrival)
        newest_query = sql.SQL(
            "SELECT {arrival}, least({at}, now()) FROM {table} WHERE {arrival} <= coalesce(%(bound)s::bigint, {arrival})"
            " ORDER BY {arrival} DESC LIMIT 1"
        ).format(arrival=arrival, at=sql.Identifier(self.created_at_column), table=table)

        def work(conn: psycopg.Connection) -> tuple[int, Any]:
            bound = self._arrival_bound(conn)
            return _count(conn, table), conn.execute(newest_query, {"bound": bound}).fetchone()

        count, newest = self._run(work)
        latest_id, latest_at = newest if newest else (None, None)
        return {"count": count, "latest_id": latest_id, "latest_created_at": utc_isoformat(latest_at)}

    def new_since(self, after_id: int | None) -> NewRatings:
        """As :meth:`RatingsReader.new_since`, created_at clamped to the database's now()."""
        query = sql.SQL(
            "SELECT count(*), least(min({at}), now()), now() FROM {table}"
            " WHERE {arrival} <= coalesce(%(bound)s::bigint, {arrival})"
            " AND (%(after)s::bigint IS NULL OR {arrival} > %(after)s::bigint)"
        ).format(
            at=sql.Identifier(self.created_at_column),
            table=_identifier(self.table),
            arrival=sql.Identifier(self.arrival),
        )

        def work(conn: psycopg.Connection) -> tuple[int, Any, Any]:
            return conn.execute(query, {"bound": self._arrival_bound(conn), "after": after_id}).fetchone()

        count, oldest, now = self._run(work)
        return NewRatings(count, utc_isoformat(oldest), utc_isoformat(now))

    def _arrival_bound(self, conn: psycopg.Connection) -> int | None:
        """The last value the arrival column's sequence handed out; None without a sequence (or
        the privilege to see it). An identity BY DEFAULT or serial column also takes values a
        client writes: one far ahead of the sequence would otherwise hide every later rating."""
        relation = _identifier(self.table).as_string(conn)
        column = conn.execute(
            "SELECT format_type(atttypid, NULL), pg_get_serial_sequence(%(rel)s, %(col)s) FROM pg_attribute"
            " WHERE attrelid = %(rel)s::regclass AND attname = %(col)s AND NOT attisdropped",
            {"rel": relation, "col": self.arrival},
        ).fetchone()
        if column is None:
            raise SupabaseReadError(f"unknown column: {self.table}.{self.arrival} does not exist")
        kind, sequence = column
        if kind not in ("smallint", "integer", "bigint"):
            raise SupabaseReadError(self.not_an_integer(f"{kind} values"))
        if sequence is None:
            return None
        bound = conn.execute(
            "SELECT last_value FROM pg_sequences"
            " WHERE format('%%I.%%I', schemaname, sequencename)::regclass = %s::regclass",
            (sequence,),
        ).fetchone()
        return bound[0] if bound else None

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
            with connect(
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
            scrub_driver_text(f"Supabase Postgres read from '{self.table}' failed: {failure}", self.db_url)
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


def connect(db_url: str, **options: Any) -> psycopg.Connection:
    """Connect with the URL's user and password handed to libpq as parameters of their own.

    Operators paste passwords unencoded; libpq splits a URL's userinfo at its *first* ``@``, so
    ``p@ss`` would log in as password ``p`` to host ``ss@host`` (and its error quotes that "host").
    :func:`split_credentials` splits at the ``@`` before the host instead and percent-decodes, as
    libpq would for a well-formed URL. A keyword DSN (``host=... password=...``) is passed as is.
    """
    conninfo, credentials = split_credentials(db_url)
    if credentials is not None:
        user, password = credentials
        options = {**({"user": user} if user else {}), **({"password": password} if password else {}), **options}
    return psycopg.connect(conninfo, **options)


def scrub_driver_text(text: str, db_url: str | None) -> str:
    """What the driver said, without ``db_url``'s password (or pieces of it) or any secret the
    settings declare."""
    return scrub(redact_dsn_secrets(text, db_url))


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
