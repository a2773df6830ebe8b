"""Every environment variable cfrec reads, declared once: name, default, and what in it is secret.

The app's side (serving folder or URL, S3 endpoint and keys, model cache) is declared in
``cfrec_serving.settings``, the distribution the app installs alone, with the :class:`Setting`
type; the pipeline's, the production instance's and the deploy scripts' are declared here, and
:data:`SETTINGS` lists both (the scrubber and the tests use the whole list).

Nothing is read at import. ``build_resources``, the sensor, alert and schedule factories and
``definitions.build_defs`` read their settings when the code location loads (``combined_ratings``
reads ``CFREC_SEEDS`` when its run starts, as ``dg.EnvVar`` resolves), the CLI when it parses,
each through :meth:`Setting.read` and the readers below; :func:`scrub` looks the secrets
up in the environment it is given each time it runs, so alerts and driver errors hide what is set
*now*. A variable set to nothing counts as unset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from cfrec_assets.schema import DEFAULT_SEEDS
from cfrec_serving.redact import redact_dsn_secrets, redact_secret, redact_url, redact_urls_in, split_credentials
from cfrec_serving.settings import SERVING_SETTINGS, Setting

# Sources
MOVIELENS_BASE_URL = Setting("CFREC_MOVIELENS_BASE_URL", "https://files.grouplens.org/datasets/movielens/", url=True)
ML_LATEST_RELEASE = Setting("CFREC_ML_LATEST_RELEASE", "ml-latest-small")
SEEDS = Setting("CFREC_SEEDS", DEFAULT_SEEDS)
CATALOG_PATH = Setting("CFREC_CATALOG_PATH")
CATALOG_TABLE = Setting("CFREC_CATALOG_TABLE")
SUPABASE_URL = Setting("SUPABASE_URL", url=True)
SUPABASE_KEY = Setting("SUPABASE_KEY", secret=True)
SUPABASE_DB_URL = Setting("SUPABASE_DB_URL", url=True)
SUPABASE_RATINGS_TABLE = Setting("SUPABASE_RATINGS_TABLE", "ratings")
SUPABASE_RATINGS_ARRIVAL_COLUMN = Setting("SUPABASE_RATINGS_ARRIVAL_COLUMN")  # unset: the table's id column
RECOMMENDATIONS_TABLE = Setting("CFREC_RECOMMENDATIONS_TABLE")  # unset: user_recommendations is off
# Training: which trainer, and where Spark runs (defs/resources/spark.py)
TRAINER = Setting("CFREC_TRAINER", "surprise")  # surprise, spark, or auto
SPARK_MASTER = Setting("CFREC_SPARK_MASTER", "local[*]", url=True)  # local[n] or spark://host:port
# sc://host:port/;token=…: the parameters may hold a token, so the whole value is a secret.
SPARK_REMOTE = Setting("CFREC_SPARK_REMOTE", secret=True)
# The embedded JVM's maximum heap: it grows only as needed, and ml-32m's ALS with 3-fold CV fits in
# it (docs/benchmarks.md "Spark trainer"); local mode runs all of Spark in this one JVM.
SPARK_DRIVER_MEMORY = Setting("CFREC_SPARK_DRIVER_MEMORY", "8g")
# Automation and operations
RETRAIN_SENSOR = Setting("CFREC_RETRAIN_SENSOR", "stopped")
RETRAIN_MIN_NEW_RATINGS = Setting("CFREC_RETRAIN_MIN_NEW_RATINGS", "50")
# A young app may never reach N new ratings: whatever arrived is learned within a day anyway.
RETRAIN_MAX_AGE_SECONDS = Setting("CFREC_RETRAIN_MAX_AGE_SECONDS", "86400")
# A tick costs three or four tiny requests; a retrain takes seconds to a minute. 30 s keeps a
# busy app's model under a minute behind (docs/operations.md "The retrain sensor"; measured in
# docs/benchmarks.md "Retrain latency").
RETRAIN_INTERVAL_SECONDS = Setting("CFREC_RETRAIN_INTERVAL_SECONDS", "30")
TUNING_SCHEDULE = Setting("CFREC_TUNING_SCHEDULE", "stopped")
# With the retrain sensor's one-day maximum age, a model older than two days means retrains
# failed, or the app received no rating at all for two days; either is worth a look
# (docs/operations.md "Freshness").
FRESHNESS_HOURS = Setting("CFREC_FRESHNESS_HOURS", "48")
ALERT_WEBHOOK_URL = Setting("CFREC_ALERT_WEBHOOK_URL", secret=True)  # unset: no alerts
UI_URL = Setting("CFREC_UI_URL", "http://127.0.0.1:3000", url=True)
# The production instance (deploy/dagster.yaml, deploy/serve.sh)
DAGSTER_PG_URL = Setting("DAGSTER_PG_URL", url=True)
HOST = Setting("CFREC_HOST", "127.0.0.1")
PORT = Setting("CFREC_PORT", "3000")
VENV = Setting("CFREC_VENV", ".venv")

PIPELINE_SETTINGS: tuple[Setting, ...] = (
    MOVIELENS_BASE_URL,
    ML_LATEST_RELEASE,
    SEEDS,
    CATALOG_PATH,
    CATALOG_TABLE,
    SUPABASE_URL,
    SUPABASE_KEY,
    SUPABASE_DB_URL,
    SUPABASE_RATINGS_TABLE,
    SUPABASE_RATINGS_ARRIVAL_COLUMN,
    RECOMMENDATIONS_TABLE,
    TRAINER,
    SPARK_MASTER,
    SPARK_REMOTE,
    SPARK_DRIVER_MEMORY,
    RETRAIN_SENSOR,
    RETRAIN_MIN_NEW_RATINGS,
    RETRAIN_MAX_AGE_SECONDS,
    RETRAIN_INTERVAL_SECONDS,
    TUNING_SCHEDULE,
    FRESHNESS_HOURS,
    ALERT_WEBHOOK_URL,
    UI_URL,
    DAGSTER_PG_URL,
    HOST,
    PORT,
    VENV,
)
SETTINGS: tuple[Setting, ...] = (*SERVING_SETTINGS, *PIPELINE_SETTINGS)
"""Every variable: the app's (``cfrec_serving.settings``) and the pipeline's."""
BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


class SettingError(ValueError):
    """A variable is set to a value the code cannot use."""


def read_int(setting: Setting, environ: Mapping[str, str] | None = None) -> int:
    """``setting`` as a whole number above 0 (see :func:`read_float`)."""
    return int(_positive(setting, int, environ))


def read_float(setting: Setting, environ: Mapping[str, str] | None = None) -> float:
    """``setting`` as a finite number above 0; otherwise an error naming the variable, raised when
    the code location loads rather than deep inside Dagster."""
    return float(_positive(setting, float, environ))


def _positive(setting: Setting, kind: type, environ: Mapping[str, str] | None) -> float:
    text = setting.read(environ)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingError(
            f"{setting.name} must be {'a whole number' if kind is int else 'a number'} above 0, got {text!r}"
        )
    return value


def is_running(setting: Setting, environ: Mapping[str, str] | None = None) -> bool:
    """A sensor's or schedule's default status: ``running`` (any case) starts it, anything else not."""
    return (setting.read(environ) or "").lower() == "running"


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` without any credential the settings hold: every secret value, every URL setting's
    password (in every spelling, and pieces of it) and the userinfo of any URL the text quotes.

    Values are stripped first: a key pasted with its trailing newline is still that key.
    """
    environ = os.environ if environ is None else environ
    text = str(text)
    values = [(setting, (environ.get(setting.name) or "").strip()) for setting in SETTINGS]
    # Longest first, so a value that contains another is removed whole.
    for setting, value in sorted(values, key=lambda item: len(item[1]), reverse=True):
        if not value:
            continue
        if setting.url:  # where it stands whole, shown without its credentials
            text = text.replace(value, redact_url(value))
        if setting.secret or (setting.url and split_credentials(value)[1] is not None):
            text = redact_secret(text, value)  # then percent-encoded (a URL in a query string, say)
        if setting.url:  # its password alone, in every spelling, and pieces of it
            text = redact_dsn_secrets(text, value)
    return redact_urls_in(text)
