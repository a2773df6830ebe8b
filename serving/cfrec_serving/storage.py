"""Atomic writes of files and folders: a reader (or a crashed run) never sees a half-written artifact.

The one mechanism for every artifact: fill a temp file or folder beside the target (named with
``TEMP_PREFIX``), fsync it, rename it into place, fsync the parent folder. And the guarded side:
files read only when they are regular files of the expected size, folders used only when private.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

# Temp files and folders start with this, so leftovers of a crash are easy to find and drop.
TEMP_PREFIX = ".tmp-"
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_KINDS |= {stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symlink", stat.S_IFREG: "a file"}


class UnsafePathError(OSError):
    """A path refused before use: not a regular file (or not a private folder), or of the wrong size."""


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


def write_json(payload: object, path: Path) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def read_regular_file(path: Path, max_bytes: int, *, exact: bool = False) -> bytes:
    """The bytes of ``path``: a regular file of at most ``max_bytes`` (exactly that many with ``exact``).

    Checked on the open descriptor before anything is read: opened ``O_NONBLOCK`` (a FIFO cannot
    stall the open), then ``fstat``: FIFOs, devices such as ``/dev/zero``, sockets and folders are
    refused, and so is a wrong size. At most one byte past that size is read, so a file that
    grows meanwhile is refused as well (``UnsafePathError``).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{path} is not a regular file ({_kind(info.st_mode)}); refusing to read it")
        _check_size(path, info.st_size, max_bytes, exact)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        payload = handle.read(info.st_size + 1)
    if len(payload) != info.st_size:
        raise UnsafePathError(f"{path} changed size while being read ({info.st_size:,} bytes, then {len(payload):,})")
    return payload


def _check_size(path: Path, size: int, max_bytes: int, exact: bool) -> None:
    if size > max_bytes or (exact and size != max_bytes):
        expected = f"expected {max_bytes:,}" if exact else f"more than the {max_bytes:,} allowed"
        raise UnsafePathError(f"{path} is {size:,} bytes, {expected}; refusing to read it")


def private_dir(path: Path) -> Path:
    """``path`` as a folder no other local user controls: created (mode 0700) when missing; an
    existing one must be a real folder (not a symlink), owned by this user, writable by no one else.

    Anything else is refused (``UnsafePathError``): another user could have planted it to receive
    what we write or to break the app.
    """
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:  # whatever is there (a folder, a file, a symlink) is checked below
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} is {_kind(info.st_mode)}, not a folder; refusing to use it (remove it)")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}); refusing to use it "
            "(another user may control it: remove it or choose another folder)"
        )
    if info.st_mode & 0o022:
        raise UnsafePathError(f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); chmod 700 it")
    return path


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
