"""Atomic writes of files and folders: a reader (or a crashed run) never sees a half-written artifact.

The one mechanism for every artifact: fill a temp file or folder beside the target (named with
``TEMP_PREFIX``), fsync it, rename it into place, fsync the parent folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is heavy; the app's serving path never needs it
    import pandas as pd

# Temp files and folders start with this, so leftovers of a crash are easy to find and drop.
TEMP_PREFIX = ".tmp-"


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, ``os.replace`` it over
    ``path``, then fsync the folder so the rename itself survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(0o644)  # mkstemp's 0600 would hide artifacts from the app's user
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_dir_atomic(path: Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp_dir)`` on a temp folder beside ``path``, fsync its files, rename it to ``path``.

    An existing ``path`` is never replaced (``FileExistsError``), and a failure leaves only the
    temp folder's removal behind, never a half-filled ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent))
    try:
        fill(staging)
        for file in staging.rglob("*"):
            if file.is_file():
                with file.open("rb") as fh:
                    os.fsync(fh.fileno())
        staging.chmod(0o755)  # mkdtemp's 0700 would hide artifacts from the app's user
        if path.exists():  # appeared meanwhile; os.rename would replace an empty folder
            raise FileExistsError(f"{path} already exists")
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(path: Path) -> None:
    """Persist a rename/replace in ``path`` (the directory entry) across power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(payload: object, path: Path) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
