"""Where the real MovieLens zips are: ``$CFREC_SHARED_DATASETS/movielens`` or ``<repo>/../shared/datasets/movielens``.

GroupLens' licence forbids committing them; a fresh clone has no ``../shared``, so tests
that need them skip with this reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHIVES = ("ml-100k.zip", "ml-latest-small.zip")


def shared_movielens_dir() -> Path:
    root = os.environ.get("CFREC_SHARED_DATASETS") or REPO.parent / "shared" / "datasets"
    return Path(root).resolve() / "movielens"


def real_movielens_or_skip() -> Path:
    folder = shared_movielens_dir()
    missing = [name for name in ARCHIVES if not (folder / name).is_file()]
    if missing:
        pytest.skip(
            f"real MovieLens data not available: {', '.join(missing)} not in {folder} (set CFREC_SHARED_DATASETS)"
        )
    return folder
