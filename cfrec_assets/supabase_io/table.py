"""What both Supabase readers share: the ratings table's settings, row validation and errors.

The REST reader (:mod:`.rest`) and the Postgres reader (:mod:`.postgres`) return the same
frame and stats for the same table; everything that makes them agree lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

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


class RatingsTableSettings(dg.ConfigurableResource):
    """Where the ratings live and what a valid rating is (shared by both readers)."""

    table: str = Field(default="ratings", description="Ratings table name.")
    user_column: str = "user_id"
    movie_column: str = "tmdb_id"
    rating_column: str = "rating"
    created_at_column: str = "created_at"
    id_column: str = Field(default="id", description="Primary key, the order tiebreak.")
    rating_min: float = Field(default=RATING_MIN, description="Lowest valid rating (inclusive).")
    rating_max: float = Field(default=RATING_MAX, description="Highest valid rating (inclusive).")

    @model_validator(mode="after")
    def _check_rating_range(self) -> RatingsTableSettings:
        if not self.rating_min < self.rating_max:
            raise ValueError(f"rating_min ({self.rating_min}) must be below rating_max ({self.rating_max})")
        return self

    @property
    def source_columns(self) -> tuple[str, str, str, str]:
        """Table columns feeding user_id, tmdb_id, rating, created_at (in that order)."""
        return (self.user_column, self.movie_column, self.rating_column, self.created_at_column)


class RatingsReader(RatingsTableSettings):
    """What the graph and the sensor need from a reader; ``rest`` and ``postgres`` implement it.

    ``definitions`` picks one at load time (``ratings_reader`` in resources.py), so the asset and
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
        raise NotImplementedError

    def count_after(self, created_at: str | None, row_id: int | None) -> int:
        raise NotImplementedError

    def read_catalog_ids(self, table: str, column: str = "tmdb_id") -> list[int]:
        raise NotImplementedError


def validate_ratings(raw: pd.DataFrame, rating_min: float, rating_max: float) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep valid rating rows; count the others by their first failing reason.

    ``raw`` holds raw values in columns user_id, tmdb_id, rating, created_at.
    Nothing is coerced: a blank user id, a non-integer movie id, a rating that
    is not a number or lies outside [rating_min, rating_max] drops the row.
    Returns the typed frame (user_id str, tmdb_id int64, rating float64,
    created_at UTC datetime) and counts: ``rows_read``, one per
    :data:`DROP_REASONS` entry, and ``valid_rows``.
    """
    users, movies, ratings = (raw[c].tolist() for c in RATINGS_COLUMNS[:3])
    reasons = [_drop_reason(u, m, r, rating_min, rating_max) for u, m, r in zip(users, movies, ratings)]
    keep = [reason is None for reason in reasons]
    valid = raw.loc[keep]
    frame = pd.DataFrame(
        {
            "user_id": valid["user_id"].map(str).astype(str),
            "tmdb_id": valid["tmdb_id"].map(int).astype("int64"),
            "rating": valid["rating"].map(float).astype("float64"),
            "created_at": _utc_datetimes(valid["created_at"]),
        }
    ).reset_index(drop=True)
    stats = {"rows_read": len(raw)}
    stats.update({reason: reasons.count(reason) for reason in DROP_REASONS})
    stats["valid_rows"] = len(frame)
    return frame, stats


def _drop_reason(user: Any, movie: Any, rating: Any, low: float, high: float) -> str | None:
    if _is_missing(user) or (isinstance(user, str) and not user.strip()) or _is_missing(movie):
        return "dropped_missing_ids"
    if _as_integer(movie) is None or _as_integer(movie) <= 0:
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


def _utc_datetimes(values: pd.Series) -> pd.Series:
    # Microseconds: PostgreSQL's precision, and equal for both readers' inputs.
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise SupabaseReadError(f"unparseable created_at value: {error}") from error
    return pd.Series(pd.DatetimeIndex(parsed).as_unit("us"), index=values.index)


def utc_isoformat(value: Any) -> str | None:
    """One spelling of a timestamp whichever reader produced it (watermarks compare)."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


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
