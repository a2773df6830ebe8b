"""A serving target in an S3-protocol bucket: the backend that keeps its bytes as objects.

Same layout as the folder, under ``s3://bucket/prefix``. A version's files are uploaded, each
read back and compared (size, sha256), then its ``version.json``: a version without one is an
interrupted upload, which the next promote of it completes. Object stores have no lock: the
manifest is written with a conditional PUT on the ETag read before (If-None-Match for the first
one), so of two deployers at once the second is refused instead of silently overwriting; a
server without conditional writes gets a plain PUT (single writer). A bucket that cannot be
reached (endpoint down, credentials refused, no such bucket) is ``TargetUnavailableError``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cfrec_serving.artifacts import MANIFEST_FILE, VERSION_FILE, VERSIONS_DIR
from cfrec_serving.storage import private_dir, sha256_file, write_atomic
from cfrec_serving.targets.manifest import (
    CacheError,
    DeploymentError,
    ManifestChangedError,
    TargetUnavailableError,
    checked_payload,
    dump_json,
    recorded_size,
)
from cfrec_serving.targets.s3_store import ObjectStoreError, PreconditionFailedError, S3Store


class S3Backend:
    """The bytes of a serving target under one ``S3Store`` (see ``target.ServingTarget`` for the rules)."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    def describe(self) -> str:
        return self.store.where

    def where(self, *key: str) -> str:
        return f"s3://{self.store.location.bucket}/{self.store.location.key(*key)} at {self.store.host}"

    def read(self, *key: str, max_bytes: int) -> bytes | None:
        return self.read_tagged(*key, max_bytes=max_bytes)[0]

    def read_tagged(self, *key: str, max_bytes: int) -> tuple[bytes | None, str | None]:
        """The object's bytes and ETag (the condition of the next write), (None, None) when absent."""
        return _call(self.store.get_tagged, *key, max_bytes=max_bytes)

    def version_names(self) -> list[str]:
        return _call(self.store.folders, VERSIONS_DIR)

    @contextmanager
    def writing(self) -> Iterator[None]:
        yield  # no lock: the manifest write is conditional instead

    def write_version(self, source_dir: Path, record: Mapping[str, Any]) -> None:
        """Upload the files, read each back, then ``version.json``: the version is complete."""
        version = record["version"]
        for name in record["files"]:
            _call(self.store.put, (source_dir / name).read_bytes(), VERSIONS_DIR, version, name)
        problems = self.verify(version, record["files"])
        if problems:
            raise DeploymentError("upload not verified: " + "; ".join(problems))
        _call(self.store.put, dump_json(record), VERSIONS_DIR, version, VERSION_FILE, content_type="application/json")

    def discard_version(self, version: str) -> None:
        """Nothing: the uploaded version is complete and verified, and the next promote of it serves it."""

    def verify(self, version: str, files: Mapping[str, Any]) -> list[str]:
        """Read every object back: size and sha256 must be what the version records."""
        problems = []
        for name, record in files.items():
            try:
                _fetch_checked(self, version, name, record)
            except DeploymentError as error:
                problems.append(str(error))
        return problems

    def write_manifest(self, data: bytes, expect: str | None) -> None:
        """Only if the manifest is still the one read (its ETag; None: there was none)."""
        try:
            self.store.put(data, MANIFEST_FILE, content_type="application/json", expect=expect)
        except PreconditionFailedError:
            raise ManifestChangedError(f"the manifest in {self.describe()} changed since it was read") from None
        except ObjectStoreError as error:
            raise TargetUnavailableError(str(error)) from None

    def version_folder(self, version: str, files: Mapping[str, Any], names: Iterable[str], cache_dir: Path) -> Path:
        """Download the version's ``names`` into ``cache_dir/<version>/`` (verified files already
        there are reused) and return that folder.

        Both folders must be private (``storage.private_dir``: this user's, mode 0700, no symlink),
        else ``CacheError``: another local user must not receive the files or plant their own."""
        folder = _cache_folder(Path(cache_dir), version)
        for name in names:
            record = files.get(name)
            if record is None:
                continue  # the loader says what is missing
            local = folder / name
            if _cached(local, record):
                continue
            payload = _fetch_checked(self, version, name, record)
            try:
                write_atomic(local, lambda tmp, data=payload: tmp.write_bytes(data))
            except OSError as error:
                raise CacheError(f"cannot write {local}: {error}") from None
        return folder


def _fetch_checked(backend: S3Backend, version: str, name: str, record: Any) -> bytes:
    """An object read no further than its recorded size, and its bytes checked against the record."""
    where = backend.where(VERSIONS_DIR, version, name)
    payload = backend.read(VERSIONS_DIR, version, name, max_bytes=recorded_size(record, where))
    return checked_payload(where, payload, record)


def _call(operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return operation(*args, **kwargs)
    except ObjectStoreError as error:
        raise TargetUnavailableError(str(error)) from None


def _cache_folder(cache_dir: Path, version: str) -> Path:
    try:
        return private_dir(private_dir(cache_dir) / version)
    except OSError as error:
        raise CacheError(str(error)) from None


def _cached(local: Path, record: Mapping[str, Any]) -> bool:
    """A regular file already holding exactly the recorded bytes (anything else is replaced)."""
    try:
        info = os.lstat(local)
    except FileNotFoundError:
        return False
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_size == record.get("bytes")
        and sha256_file(local) == record.get("sha256")
    )
