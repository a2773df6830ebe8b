"""The retrain sensor: a new model when enough new app ratings arrived in Supabase, or when
the oldest rating not yet learned from is too old; it also records how the ratings table grows."""

import json
import os
from datetime import datetime, timezone

import dagster as dg

from cfrec_assets.assets.ratings import RATINGS_TABLE, supabase_ratings
from cfrec_assets.supabase_io import RatingsReader, SupabaseReadError

# supabase_ratings and everything downstream: combined_ratings, svd_model, cv_metrics,
# deployed_model, with their checks (the blocking ones gate the deployment).
# The tuning study is downstream too, but on its own schedule, not on every retrain.
RETRAIN_SELECTION = dg.AssetSelection.assets(supabase_ratings).downstream() - dg.AssetSelection.groups("tuning")
# A sensor-launched retrain whose run worker died is re-executed from the failure (on an
# instance with run retries on: deploy/dagster.yaml); a failed check is not retried there.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
DEFAULT_MIN_NEW_RATINGS = 50
# A young app may never reach N new ratings: whatever arrived is learned within a day anyway.
DEFAULT_MAX_AGE_SECONDS = 24 * 3600
# A tick costs three or four tiny requests; a retrain takes seconds to a minute. 30 s keeps a
# busy app's model under a minute behind (docs/operations.md "The retrain sensor"; measured in
# docs/benchmarks.md "Retrain latency").
DEFAULT_INTERVAL_SECONDS = 30


def build_retrain_sensor(
    min_new_ratings: int = DEFAULT_MIN_NEW_RATINGS,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
) -> dg.SensorDefinition:
    """The cursor holds the watermark (count, newest created_at and id) of the ratings the last
    requested retrain reads, plus the last observed one. New ratings are counted *after* that
    watermark rather than by comparing totals, since deletions make totals lie. The run key is
    the watermark, so the same table state never launches the same retrain twice, even if the
    cursor is reset."""

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
        last = json.loads(context.cursor) if context.cursor else {}  # {} : never retrained yet
        try:
            mark = supabase.ratings_watermark()
            new, oldest = supabase.new_since(last.get("latest_created_at"), last.get("latest_id"))
        except SupabaseReadError as exc:
            return dg.SensorResult(skip_reason=f"Supabase unreachable, cursor kept: {exc}")
        observed = {k: mark[k] for k in ("count", "latest_created_at", "latest_id")}
        events = [] if last.get("observed") == observed else [_observation(observed)]
        age = _age_seconds(oldest)
        if new < min_new_ratings and not (new and age >= max_age_seconds):
            waiting = f"{new} new rating(s) since the last retrain"
            if new:
                waiting += f", the oldest {age / 3600:.1f} h old"
            reason = f"{waiting}; waiting for {min_new_ratings}, or for one {max_age_seconds / 3600:g} h old"
            cursor = json.dumps({**last, "observed": observed}, sort_keys=True)
            return dg.SensorResult(skip_reason=reason, asset_events=events, cursor=cursor)
        run_key = f"ratings:{mark['count']}:{mark['latest_created_at']}:{mark['latest_id']}"
        why = "count" if new >= min_new_ratings else "age"
        tags = {"cfrec/new_ratings": str(new), "cfrec/trigger": why, **RETRY_TAGS}
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, tags=tags)],
            asset_events=events,
            cursor=json.dumps({**mark, "observed": observed}, sort_keys=True),
        )

    return supabase_ratings_sensor


def _observation(mark: dict) -> dg.AssetObservation:
    metadata = {"row_count": mark["count"], "latest_created_at": mark["latest_created_at"] or ""}
    return dg.AssetObservation(asset_key=RATINGS_TABLE, metadata=metadata)


def _age_seconds(created_at: str | None) -> float:
    if created_at is None:
        return 0.0
    return (datetime.now(timezone.utc) - datetime.fromisoformat(created_at)).total_seconds()


def retrain_sensor_from_env() -> dg.SensorDefinition:
    """``CFREC_RETRAIN_MIN_NEW_RATINGS`` sets N, ``CFREC_RETRAIN_MAX_AGE_SECONDS`` the age,
    ``CFREC_RETRAIN_INTERVAL_SECONDS`` the interval; ``CFREC_RETRAIN_SENSOR=running`` starts it on load."""
    running = os.environ.get("CFREC_RETRAIN_SENSOR", "").lower() == "running"
    return build_retrain_sensor(
        min_new_ratings=int(os.environ.get("CFREC_RETRAIN_MIN_NEW_RATINGS", DEFAULT_MIN_NEW_RATINGS)),
        interval_seconds=int(os.environ.get("CFREC_RETRAIN_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS)),
        max_age_seconds=int(os.environ.get("CFREC_RETRAIN_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS)),
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
    )
