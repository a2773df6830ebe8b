"""The retrain sensor: a new model when enough new app ratings arrived in Supabase, or when
the oldest rating not yet learned from is too old; it also records how the ratings table grows."""

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dagster as dg

from cfrec_assets import settings
from cfrec_assets.defs.assets.ratings import RATINGS_TABLE, supabase_ratings
from cfrec_assets.defs.supabase_io import RatingsReader, SupabaseReadError

# supabase_ratings and everything downstream: combined_ratings, svd_model, cv_metrics,
# deployed_model, with their checks (the blocking ones gate the deployment).
# The tuning study is downstream too, but reported by its own job (tune_svd), not by a retrain.
RETRAIN_SELECTION = dg.AssetSelection.assets(supabase_ratings).downstream().materializable()
# A sensor-launched retrain whose run worker died is re-executed from the failure (on an
# instance with run retries on: deploy/dagster.yaml); a failed check is not retried there.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
# The declared defaults (cfrec_assets.settings says why these values).
DEFAULT_MIN_NEW_RATINGS = int(settings.RETRAIN_MIN_NEW_RATINGS.default)
DEFAULT_MAX_AGE_SECONDS = int(settings.RETRAIN_MAX_AGE_SECONDS.default)
DEFAULT_INTERVAL_SECONDS = int(settings.RETRAIN_INTERVAL_SECONDS.default)
# 2: the watermark is the highest arrival id (1 was the newest (created_at, id): client-set).
CURSOR_VERSION = 2


def build_retrain_sensor(
    min_new_ratings: int = DEFAULT_MIN_NEW_RATINGS,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
) -> dg.SensorDefinition:
    """What is new is told by the server, never by a client: rows whose arrival id (an identity
    or serial column, ``RatingsReader.arrival``) is above the one the last requested retrain saw.
    A client's ``created_at`` only dates them, clamped to the server's clock, and a rating dated
    in the future counts as arriving when the sensor first saw it. Counted, not inferred from
    totals (deletions make totals lie). The run key is the table state (highest arrival id, row
    count), so the same state never launches the same retrain twice, even if the cursor is reset.
    """

    @dg.sensor(
        name="supabase_ratings_sensor",
        target=RETRAIN_SELECTION,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description=(
            f"Retrains when at least {min_new_ratings} new ratings arrived in Supabase, or when the oldest "
            f"new one is {max_age_seconds / 3600:g} h old; checks every {interval_seconds} s and records "
            f"the table's growth on {RATINGS_TABLE.to_user_string()}."
        ),
    )
    def supabase_ratings_sensor(context: dg.SensorEvaluationContext, supabase: RatingsReader) -> dg.SensorResult:
        if not supabase.is_configured:
            return dg.SensorResult(
                skip_reason="Supabase is not configured (SUPABASE_URL/SUPABASE_KEY or SUPABASE_DB_URL)"
            )
        last = read_cursor(context.cursor, context.log)  # {} : never retrained yet
        try:
            mark = supabase.ratings_watermark()
            new = supabase.new_since(last.get("after_id"))
        except SupabaseReadError as exc:
            return dg.SensorResult(skip_reason=f"Supabase not read, cursor kept: {exc}")
        observed = {"count": mark["count"], "latest_id": mark["latest_id"]}
        events = [] if last.get("observed") == observed else [_observation(mark)]
        # A rating dated ahead of the server's clock is clamped to "now" on every tick; the first
        # tick that saw new ratings dates them too, so such a rating still ages.
        seen_since = (last.get("seen_since") or new.now) if new.count else None
        age = _age_seconds(new.now, new.oldest, seen_since)
        if new.count < min_new_ratings and not (new.count and age >= max_age_seconds):
            waiting = f"{new.count} new rating(s) since the last retrain"
            if new.count:
                waiting += f", the oldest {age / 3600:.1f} h old"
            reason = f"{waiting}; waiting for {min_new_ratings}, or for one {max_age_seconds / 3600:g} h old"
            cursor = {**last, "version": CURSOR_VERSION, "observed": observed, "seen_since": seen_since}
            return dg.SensorResult(skip_reason=reason, asset_events=events, cursor=json.dumps(cursor, sort_keys=True))
        run_key = f"ratings:{supabase.arrival}:{mark['latest_id']}:{mark['count']}"
        why = "count" if new.count >= min_new_ratings else "age"
        tags = {"cfrec/new_ratings": str(new.count), "cfrec/trigger": why, **RETRY_TAGS}
        cursor = {"version": CURSOR_VERSION, "after_id": mark["latest_id"], "observed": observed}
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, tags=tags)],
            asset_events=events,
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return supabase_ratings_sensor


def read_cursor(cursor: str | None, log: logging.Logger) -> dict[str, Any]:
    """The cursor as this version writes it: ``after_id`` (the highest arrival id the last requested
    retrain saw), ``observed`` and ``seen_since``. A cursor of the created_at watermark (before
    version 2) is upgraded: its ``latest_id`` was the newest row's id; one that cannot be read is
    reset (every rating then counts as new; the run key still stops a repeat of the same retrain)."""
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if isinstance(state, dict) and state.get("version") == CURSOR_VERSION and _is_id(state.get("after_id")):
        return state
    if isinstance(state, dict) and "version" not in state and _is_id(state.get("latest_id")):
        after_id = state.get("latest_id")
        since = "every rating (no retrain yet)" if after_id is None else f"ratings with arrival id > {after_id}"
        log.info(f"retrain sensor: cursor of the created_at watermark upgraded; new ratings are {since}")
        return {"version": CURSOR_VERSION, "after_id": after_id}
    log.warning(f"retrain sensor: cursor {cursor[:200]!r} is not one this version reads; reset")
    return {}


def _is_id(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _observation(mark: dict) -> dg.AssetObservation:
    metadata = {"row_count": mark["count"], "latest_created_at": mark["latest_created_at"] or ""}
    return dg.AssetObservation(asset_key=RATINGS_TABLE, metadata=metadata)


def _age_seconds(now: str, *since: str | None) -> float:
    """Seconds from the earliest of ``since`` to ``now`` (0 for none)."""
    stamps = [datetime.fromisoformat(stamp) for stamp in since if stamp]
    return max(0.0, (datetime.fromisoformat(now) - min(stamps)).total_seconds()) if stamps else 0.0


def retrain_sensor_from_env(environ: Mapping[str, str] | None = None) -> dg.SensorDefinition:
    """``CFREC_RETRAIN_MIN_NEW_RATINGS`` sets N, ``CFREC_RETRAIN_MAX_AGE_SECONDS`` the age,
    ``CFREC_RETRAIN_INTERVAL_SECONDS`` the interval; ``CFREC_RETRAIN_SENSOR=running`` starts it on
    load. Read from ``environ`` (the process's by default)."""
    running = settings.is_running(settings.RETRAIN_SENSOR, environ)
    return build_retrain_sensor(
        min_new_ratings=settings.read_int(settings.RETRAIN_MIN_NEW_RATINGS, environ),
        interval_seconds=settings.read_int(settings.RETRAIN_INTERVAL_SECONDS, environ),
        max_age_seconds=settings.read_int(settings.RETRAIN_MAX_AGE_SECONDS, environ),
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
    )
