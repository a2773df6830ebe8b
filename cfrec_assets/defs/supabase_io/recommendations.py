"""Write every user's top-N to a Supabase table for the app to read directly (opt-in).

One transaction: lock the table against other writers (readers are not blocked), delete the
previous set, COPY the new one, commit. A reader sees the old complete set until the commit and
the new complete set after it, never a mix or an empty table; any failure rolls back to the old
rows. The table's SQL and its row-level-security policy are in ``deploy/user_recommendations.sql``.
Postgres only: PostgREST cannot replace a table's rows in one transaction.
"""

from __future__ import annotations

import math

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql
from pydantic import Field, model_validator

from cfrec_assets.defs.supabase_io.postgres import connect, scrub_driver_text
from cfrec_assets.defs.supabase_io.table import check_identifier
from cfrec_assets.schema import RECOMMENDATION_COLUMNS


class RecommendationsWriteError(RuntimeError):
    """The write failed and was rolled back; the previous rows are intact."""


class RecommendationsTable(dg.ConfigurableResource):
    """The Supabase table ``user_recommendations`` replaces (``CFREC_RECOMMENDATIONS_TABLE``)."""

    db_url: str | None = Field(default=None, repr=False, description="Postgres URL (SUPABASE_DB_URL).")
    table: str | None = Field(default=None, description="e.g. user_recommendations; unset: the asset is off.")
    timeout_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_table(self) -> RecommendationsTable:
        if self.table:
            check_identifier(self.table, "recommendations table", table=True)
        return self

    @property
    def is_configured(self) -> bool:
        return bool(self.table)

    def replace_all(self, rows: pd.DataFrame) -> int:
        """Replace the table's rows with ``rows`` (``RECOMMENDATION_COLUMNS``) atomically."""
        if not self.db_url:
            raise RecommendationsWriteError(
                f"CFREC_RECOMMENDATIONS_TABLE is {self.table!r} but SUPABASE_DB_URL is not set: "
                "the recommendations are written over Postgres in one transaction"
            )
        table = sql.Identifier(*self.table.split(".", 1))
        columns = sql.SQL(", ").join(map(sql.Identifier, RECOMMENDATION_COLUMNS))
        failure = None
        try:
            with connect(self.db_url, prepare_threshold=None, connect_timeout=10) as conn:
                with conn.transaction():
                    conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        (f"{math.ceil(self.timeout_seconds * 1000)}ms",),
                    )
                    # Blocks other writers until commit; plain SELECTs (ACCESS SHARE) go on.
                    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
                    conn.execute(sql.SQL("DELETE FROM {}").format(table))
                    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)
                    with conn.cursor().copy(copy) as stream:
                        for row in rows[list(RECOMMENDATION_COLUMNS)].itertuples(index=False, name=None):
                            stream.write_row(row)
            return len(rows)
        except psycopg.Error as error:
            failure = f"{error.sqlstate or type(error).__name__}: {str(error).strip().splitlines()[0]}"
        raise RecommendationsWriteError(
            scrub_driver_text(f"writing {self.table} failed and was rolled back: {failure}", self.db_url)
        )
