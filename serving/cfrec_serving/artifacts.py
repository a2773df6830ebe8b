"""Artifact file names and where the serving folder is: facts the app and the pipeline share.

Nothing here imports anything of the project, so every module may import it.
"""

from __future__ import annotations

from pathlib import Path

# --- artifacts -------------------------------------------------------------------------------
MODEL_FILE = "svd_model.pkl"
TRAINSET_FILE = "cf_trainset.pkl"
PICKLE_FILES = (MODEL_FILE, TRAINSET_FILE)
"""What the app's existing serving code loads (joblib pickles), in every model version folder."""
SERVING_FILE = "cf_model.npz"
"""The pickle-free artifact ``serving.load_deployed`` reads: plain numpy arrays, loaded with
``allow_pickle=False``, so loading it can never run code. Versions before it have only the pickles."""
ARTIFACT_FILES = (*PICKLE_FILES, SERVING_FILE)
"""Every file a new version ships (and the manifest hashes)."""
MANIFEST_FILE = "manifest.json"
VERSION_FILE = "version.json"
VERSIONS_DIR = "versions"

# --- folders ---------------------------------------------------------------------------------
DEFAULT_DATA_DIR = "data"
SERVING_SUBDIR = "serving"


def serving_dir(data_dir: str | None = None, serving_dir_path: str | None = None) -> Path:
    """Where models are promoted and the app loads them: explicit, else ``<data_dir>/serving``."""
    if serving_dir_path:
        return Path(serving_dir_path).expanduser().resolve()
    return Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve() / SERVING_SUBDIR
