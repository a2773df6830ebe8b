"""What both Supabase readers share: the ratings table's settings, row validation and errors.

The REST reader (:mod:`.rest`) and the Postgres reader (:mod:`.postgres`) return the same
frame and stats for the same table; everything that makes them agree lives here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from cfrec_assets import settings
from cfrec_assets.schema import APP_RATING_COLUMNS, RATING_MAX, RATING_MIN

RATINGS_COLUMNS = APP_RATING_COLUMNS
DROP_REASONS = (
    "dropped_missing_ids",
    "dropped_invalid_ids",
    "dropped_missing_rating",
    "dropped_invalid_rating",
    "dropped_rating_out_of_range",
)


class SupabaseReadError(Exception):
    """Reading from Supabase failed; the message names the cause, never a secret."""


# Plain SQL identifiers, optionally schema-qualified: a name like "../admin" would make the REST
# reader send the service-role key to paths outside /rest/v1/.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: str, what: str, table: bool = False) -> str:
    """``name`` if it is a plain (for tables: optionally schema-qualified) SQL identifier."""
    pattern = _TABLE_NAME if table else _COLUMN_NAME
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"{what} {str(name)[:80]!r} is not a plain SQL identifier (letters, digits, '_')")
    return name


class RatingsTableSettings(dg.ConfigurableResource):
    """Where the ratings live and what a valid rating is (shared by both readers)."""

    table: str = Field(default=settings.SUPABASE_RATINGS_TABLE.default, description="Ratings table name.")
    user_column: str = "user_id"
    movie_column: str = "tmdb_id"
    rating_column: str = "rating"
    created_at_column: str = "created_at"
    id_column: str = Field(default="id", description="Primary key, the order tiebreak.")
    arrival_column: str | None = Field(
        default=None,
        description=(
            "A server-assigned integer that only grows (an identity or serial column): the retrain "
            "sensor counts rows above the last retrain's value as new. Unset: id_column."
        ),
    )
    rating_min: float = Field(default=RATING_MIN, description="Lowest valid rating (inclusive).")
    rating_max: float = Field(default=RATING_MAX, description="Highest valid rating (inclusive).")

    @model_validator(mode="after")
    def _check_names(self) -> RatingsTableSettings:
        check_identifier(self.table, "table", table=True)
        for field in ("user_column", "movie_column", "rating_column", "created_at_column", "id_column"):
            check_identifier(getattr(self, field), field)
        if self.arrival_column is not None:
            check_identifier(self.arrival_column, "arrival_column")
        return self

    @model_validator(mode="after")
    def _check_rating_range(self) -> RatingsTableSettings:
        if not self.rating_min < self.rating_max:
            raise ValueError(f"rating_min ({self.rating_min}) must be below rating_max ({self.rating_max})")
        return self

    @property
    def source_columns(self) -> tuple[str, str, str, str]:
        """Table columns feeding user_id, tmdb_id, rating, created_at (in that order)."""
        return (self.user_column, self.movie_column, self.rating_column, self.created_at_column)

    @property
    def arrival(self) -> str:
        """The column that orders arrivals (``arrival_column``, else ``id_column``)."""
        return self.arrival_column or self.id_column

    def arrival_id(self, value: Any) -> int | None:
        """``value`` of the arrival column as an int; a clear error for a uuid (or any non-integer)
        key, which cannot tell what arrived after what."""
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise SupabaseReadError(self.not_an_integer(f"values such as {str(value)[:40]!r}"))

    def not_an_integer(self, found: str) -> str:
        return (
            f"{self.table}.{self.arrival} holds {found}, not a server-assigned integer: the retrain sensor "
            f"needs one to tell which ratings are new (created_at is set by clients). Add one with "
            f"ALTER TABLE {self.table} ADD COLUMN arrival_id bigint GENERATED ALWAYS AS IDENTITY; "
            f"and set SUPABASE_RATINGS_ARRIVAL_COLUMN=arrival_id"
        )


class NewRatings(NamedTuple):
    """Rows that arrived after a watermark, as the retrain sensor sees them."""

    count: int
    oldest: str | None
    """Their earliest created_at, clamped to ``now``: a client's clock may run ahead."""
    now: str
    """The server's clock when they were counted."""


class RatingsReader(RatingsTableSettings):
    """What the graph and the sensor need from a reader; ``rest`` and ``postgres`` implement it.

    ``definitions`` picks one at load time (``resources.ratings_reader``), so the asset and
    the sensor always read the same way.
    """

    @property
    def reader_name(self) -> str:
        raise NotImplementedError

    @property
    def is_configured(self) -> bool:
        raise NotImplementedError

    def read_ratings(self) -> tuple[pd.DataFrame, dict[str, int]]:
        raise NotImplementedError

    def ratings_watermark(self) -> dict[str, Any]:
        """``count`` (rows), ``latest_id`` (the highest arrival id) and ``latest_created_at`` (that
        row's created_at, clamped to the server's clock)."""
        raise NotImplementedError

    def new_since(self, after_id: int | None) -> NewRatings:
        """The rows whose arrival id is above ``after_id`` (every row for None)."""
        raise NotImplementedError

    def read_catalog_ids(self, table: str, column: str = "tmdb_id") -> list[int]:
        raise NotImplementedError


MAX_ID = 2**63 - 1  # ids are stored as int64; a larger number cannot be one
DROP_EXAMPLES = 3  # rows quoted per drop reason, so a schema mistake is diagnosed at a glance


def validate_ratings(
    raw: pd.DataFrame,
    rating_min: float,
    rating_max: float,
    row_ids: Sequence[Any] | None = None,
    table: str = "ratings",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep valid rating rows; count the others by their first failing reason.

    ``raw`` holds raw values in columns user_id, tmdb_id, rating, created_at.
    Nothing is coerced: a blank user id, a movie id that is not a positive 64-bit integer, a
    rating that is not a number or lies outside [rating_min, rating_max] drops the row.
    Returns the typed frame (user_id str, tmdb_id int64, rating float64,
    created_at UTC datetime) and stats: ``rows_read``, one count per
    :data:`DROP_REASONS` entry, ``valid_rows``, and ``dropped_examples`` (a few rows per reason,
    named by table and primary key, values truncated).
    """
    users, movies, ratings = (raw[c].tolist() for c in RATINGS_COLUMNS[:3])
    reasons = [_drop_reason(u, m, r, rating_min, rating_max) for u, m, r in zip(users, movies, ratings)]
    keep = [reason is None for reason in reasons]
    valid = raw.loc[keep]
    try:
        frame = pd.DataFrame(
            {
                "user_id": valid["user_id"].map(str).astype(str),
                "tmdb_id": valid["tmdb_id"].map(int).astype("int64"),
                "rating": valid["rating"].map(float).astype("float64"),
                "created_at": _utc_datetimes(valid["created_at"], table),
            }
        ).reset_index(drop=True)
    except (OverflowError, ValueError, TypeError) as error:  # a backstop: the rules above should prevent it
        raise SupabaseReadError(f"{table}: a kept row failed conversion ({type(error).__name__}: {error})") from None
    stats: dict[str, Any] = {"rows_read": len(raw)}
    stats.update({reason: reasons.count(reason) for reason in DROP_REASONS})
    stats["valid_rows"] = len(frame)
    stats["dropped_examples"] = _examples(raw, reasons, row_ids, table)
    return frame, stats


def _examples(raw: pd.DataFrame, reasons: list[str | None], row_ids: Sequence[Any] | None, table: str) -> dict:
    examples: dict[str, list[str]] = {}
    for position, reason in enumerate(reasons):
        if reason is None or len(examples.setdefault(reason, [])) >= DROP_EXAMPLES:
            continue
        row = raw.iloc[position]
        key = f"id {row_ids[position]}" if row_ids is not None else f"row {position + 1}"
        values = ", ".join(f"{c}={_shown(row[c])}" for c in RATINGS_COLUMNS[:3])
        examples[reason].append(f"{table} {key}: {values}")
    return examples


def _shown(value: Any) -> str:
    # Decimal (Postgres numeric) as its digits and numpy scalars as plain numbers, so every
    # reader quotes a row the same way.
    if isinstance(value, np.generic):
        value = value.item()
    return (str(value) if isinstance(value, Decimal) else repr(value))[:40]


def _drop_reason(user: Any, movie: Any, rating: Any, low: float, high: float) -> str | None:
    if _is_missing(user) or (isinstance(user, str) and not user.strip()) or _is_missing(movie):
        return "dropped_missing_ids"
    movie_id = _as_integer(movie)
    if movie_id is None or not 0 < movie_id <= MAX_ID:
        return "dropped_invalid_ids"
    if _is_missing(rating):
        return "dropped_missing_rating"
    if not _is_number(rating) or not math.isfinite(float(rating)):
        return "dropped_invalid_rating"
    if not low <= float(rating) <= high:
        return "dropped_rating_out_of_range"
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _as_integer(value: Any) -> int | None:
    """The integer a JSON/SQL number stands for; None for 1.5, "12", True, ..."""
    if not _is_number(value) or not math.isfinite(float(value)):
        return None
    return int(value) if value == int(value) else None


def _utc_datetimes(values: pd.Series, table: str = "ratings") -> pd.Series:
    # Microseconds: PostgreSQL's precision, and equal for both readers' inputs.
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError) as error:
        raise SupabaseReadError(f"{table}.created_at: unparseable value ({str(error)[:200]})") from None
    return pd.Series(pd.DatetimeIndex(parsed).as_unit("us"), index=values.index)


def utc_isoformat(value: Any) -> str | None:
    """One spelling of a timestamp whichever reader produced it (watermarks compare)."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def clamped(created_at: Any, now: datetime) -> str | None:
    """``created_at`` (UTC ISO), or ``now`` when it lies in the future."""
    if created_at is None:
        return None
    return utc_isoformat(min(pd.Timestamp(utc_isoformat(created_at)), pd.Timestamp(now)))


def catalog_ids_from_values(values: Iterable[Any], table: str, column: str) -> list[int]:
    """Sorted distinct integer ids; nulls skipped, anything else is an error."""
    ids: set[int] = set()
    bad = 0
    for value in values:
        if _is_missing(value):
            continue
        as_int = _as_integer(value)
        if as_int is None:
            bad += 1
        else:
            ids.add(as_int)
    if bad:
        raise SupabaseReadError(f"{table}.{column} holds {bad} non-integer value(s)")
    return sorted(ids)


def check_complete(rows_read: int, server_count: int, table: str) -> None:
    """Raise unless every counted row was read exactly once."""
    if rows_read != server_count:
        raise SupabaseReadError(
            f"read {rows_read} rows from '{table}' but the server counts {server_count}: "
            "the table changed during the read or responses were truncated"
        )
