"""Every environment variable cfrec reads, declared once: name, default, and what in it is secret.

Nothing is read at import: :func:`scrub` looks the secrets up in the environment it is given (the
process's by default) each time it runs, so alerts and driver errors hide what is set *now*.
``default`` is the value used when the variable is unset (None: the feature is off, or the
default is derived, as the README's configuration table says).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cfrec_serving.artifacts import DEFAULT_DATA_DIR, ENV_DATA_DIR, ENV_SERVING_DIR
from cfrec_serving.redact import redact_dsn_secrets, redact_secret, redact_url, redact_urls_in, split_credentials


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None = None
    secret: bool = False
    """The whole value is a credential: a key, or a webhook URL whose path is its token."""
    url: bool = False
    """A URL or DSN: its userinfo and password are credentials, wherever and however quoted."""


SETTINGS: tuple[Setting, ...] = (
    # Sources
    Setting("CFREC_MOVIELENS_BASE_URL", "https://files.grouplens.org/datasets/movielens/", url=True),
    Setting("CFREC_ML_LATEST_RELEASE", "ml-latest-small"),
    Setting("CFREC_SEEDS", "ml100k"),
    Setting("CFREC_CATALOG_PATH"),
    Setting("CFREC_CATALOG_TABLE"),
    Setting("SUPABASE_URL", url=True),
    Setting("SUPABASE_KEY", secret=True),
    Setting("SUPABASE_DB_URL", url=True),
    Setting("SUPABASE_RATINGS_TABLE", "ratings"),
    Setting("SUPABASE_RATINGS_ARRIVAL_COLUMN"),  # unset: the table's id column
    # Folders and targets
    Setting(ENV_DATA_DIR, DEFAULT_DATA_DIR),
    Setting(ENV_SERVING_DIR),  # unset: <data_dir>/serving
    Setting("CFREC_SERVING_URL", url=True),
    Setting("CFREC_S3_ENDPOINT_URL", url=True),  # unset: AWS S3
    Setting("CFREC_S3_REGION"),  # unset: us-east-1
    Setting("CFREC_S3_ACCESS_KEY_ID", secret=True),
    Setting("CFREC_S3_SECRET_ACCESS_KEY", secret=True),
    Setting("CFREC_MODEL_CACHE_DIR"),  # unset: a folder under the temp dir
    Setting("CFREC_RECOMMENDATIONS_TABLE"),
    # Automation and operations
    Setting("CFREC_RETRAIN_SENSOR", "stopped"),
    Setting("CFREC_RETRAIN_MIN_NEW_RATINGS", "50"),
    Setting("CFREC_RETRAIN_MAX_AGE_SECONDS", "86400"),
    Setting("CFREC_RETRAIN_INTERVAL_SECONDS", "30"),
    Setting("CFREC_TUNING_SCHEDULE", "stopped"),
    Setting("CFREC_FRESHNESS_HOURS", "48"),
    Setting("CFREC_ALERT_WEBHOOK_URL", secret=True),
    Setting("CFREC_UI_URL", "http://127.0.0.1:3000", url=True),
    # The production instance (deploy/dagster.yaml, deploy/serve.sh)
    Setting("DAGSTER_PG_URL", url=True),
    Setting("CFREC_HOST", "127.0.0.1"),
    Setting("CFREC_PORT", "3000"),
    Setting("CFREC_VENV", ".venv"),
)
BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


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
