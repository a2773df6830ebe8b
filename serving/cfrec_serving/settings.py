"""The environment variables the app's side reads, each declared once: name, default, and what in
it is a credential. ``cfrec_assets.settings`` declares the pipeline's own and lists both.

Nothing is read at import: :meth:`Setting.read` looks a variable up each time it is called, in
the mapping it is given (the process's environment by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cfrec_serving.artifacts import DEFAULT_DATA_DIR, serving_dir


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None = None
    """Used when the variable is unset or empty (None: the feature is off, or the default is derived)."""
    secret: bool = False
    """The whole value is a credential: a key, or a webhook URL whose path is its token."""
    url: bool = False
    """A URL or DSN: its userinfo and password are credentials, wherever and however quoted."""

    def read(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's value in ``environ`` (the process's by default), else :attr:`default`."""
        value = (os.environ if environ is None else environ).get(self.name)
        return value if value else self.default

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        """Set to something (an empty value counts as unset)."""
        return bool((os.environ if environ is None else environ).get(self.name))


DATA_DIR = Setting("CFREC_DATA_DIR", DEFAULT_DATA_DIR)
SERVING_DIR = Setting("CFREC_SERVING_DIR")  # unset: <data_dir>/serving
SERVING_URL = Setting("CFREC_SERVING_URL", url=True)  # unset: the serving folder
S3_ENDPOINT_URL = Setting("CFREC_S3_ENDPOINT_URL", url=True)  # unset: AWS S3
S3_REGION = Setting("CFREC_S3_REGION")  # unset: us-east-1
S3_ACCESS_KEY_ID = Setting("CFREC_S3_ACCESS_KEY_ID", secret=True)
S3_SECRET_ACCESS_KEY = Setting("CFREC_S3_SECRET_ACCESS_KEY", secret=True)
MODEL_CACHE_DIR = Setting("CFREC_MODEL_CACHE_DIR")  # unset: this user's cache folder (loader.default_cache_dir)

SERVING_SETTINGS: tuple[Setting, ...] = (
    DATA_DIR,
    SERVING_DIR,
    SERVING_URL,
    S3_ENDPOINT_URL,
    S3_REGION,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    MODEL_CACHE_DIR,
)


def serving_dir_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The serving folder as the pipeline resolves it from ``CFREC_SERVING_DIR`` / ``CFREC_DATA_DIR``."""
    return serving_dir(DATA_DIR.read(environ), SERVING_DIR.read(environ))


def serving_location(environ: Mapping[str, str] | None = None) -> str:
    """Where the app loads from: ``CFREC_SERVING_URL`` (a bucket or a folder), else the serving folder."""
    return SERVING_URL.read(environ) or str(serving_dir_from_env(environ))
