"""The retrain sensor: a new model when enough new app ratings arrived in Supabase."""

import json
import os

import dagster as dg

from cfrec_assets.assets.ratings import supabase_ratings
from cfrec_assets.supabase_io import RatingsReader, SupabaseReadError

# supabase_ratings and everything downstream: combined_ratings, svd_model, cv_metrics,
# deployed_model, with their checks (the blocking ones gate the deployment).
RETRAIN_SELECTION = dg.AssetSelection.assets(supabase_ratings).downstream()
# A sensor-launched retrain whose run worker died is re-executed from the failure (on an
# instance with run retries on: deploy/dagster.yaml); a failed check is not retried there.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}
DEFAULT_MIN_NEW_RATINGS = 50
# Ticks are two cheap requests (a HEAD count and a one-row query); a retrain takes about a
# minute, so five minutes keeps the model fresh without keeping the machine busy.
DEFAULT_INTERVAL_SECONDS = 300


def build_retrain_sensor(
    min_new_ratings: int = DEFAULT_MIN_NEW_RATINGS,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """The cursor holds the watermark (count, newest created_at and id) of the ratings the last
    requested retrain reads. New ratings are counted *after* that watermark rather than by
    comparing totals, since deletions make totals lie. The run key is the watermark, so the
    same table state never launches the same retrain twice, even if the cursor is reset."""

    @dg.sensor(
        name="supabase_ratings_sensor",
        target=RETRAIN_SELECTION,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description=f"Retrains when at least {min_new_ratings} new ratings arrived in Supabase.",
    )
    def supabase_ratings_sensor(
        context: dg.SensorEvaluationContext, supabase: RatingsReader
    ) -> dg.SensorResult | dg.SkipReason:
        reader = supabase  # REST or Postgres, chosen once in resources.ratings_reader
        if not reader.is_configured:
            return dg.SkipReason("Supabase is not configured (SUPABASE_URL/SUPABASE_KEY or SUPABASE_DB_URL)")
        last = json.loads(context.cursor) if context.cursor else None
        try:
            mark = reader.ratings_watermark()
            if last is None:
                new = mark["count"]
            else:
                new = reader.count_after(last["latest_created_at"], last["latest_id"])
        except SupabaseReadError as exc:
            return dg.SkipReason(f"Supabase unreachable, cursor kept: {exc}")
        if new < min_new_ratings:
            return dg.SkipReason(f"{new} new rating(s) since the last retrain; waiting for {min_new_ratings}")
        run_key = f"ratings:{mark['count']}:{mark['latest_created_at']}:{mark['latest_id']}"
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, tags={"cfrec/new_ratings": str(new), **RETRY_TAGS})],
            cursor=json.dumps(mark, sort_keys=True),
        )

    return supabase_ratings_sensor


def retrain_sensor_from_env() -> dg.SensorDefinition:
    """``CFREC_RETRAIN_MIN_NEW_RATINGS`` sets N, ``CFREC_RETRAIN_INTERVAL_SECONDS`` the interval;
    ``CFREC_RETRAIN_SENSOR=running`` starts it on load."""
    running = os.environ.get("CFREC_RETRAIN_SENSOR", "").lower() == "running"
    return build_retrain_sensor(
        min_new_ratings=int(os.environ.get("CFREC_RETRAIN_MIN_NEW_RATINGS", DEFAULT_MIN_NEW_RATINGS)),
        interval_seconds=int(os.environ.get("CFREC_RETRAIN_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS)),
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
    )
