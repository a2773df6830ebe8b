"""Serving targets: where ``deployed_model`` promotes versions and the app loads them from.

A local folder (``deployment.py``: flock, atomic renames) or an object store, ``s3://bucket/
prefix`` on any S3-protocol endpoint, with the same layout::

    <prefix>/manifest.json                  written LAST, so it never points at missing files
    <prefix>/versions/<version>/<file>      cf_model.npz, the pickles
    <prefix>/versions/<version>/version.json  written after the files: a version without it is
                                            an interrupted upload, which the next promote redoes

Every object is read back and its size and sha256 compared before the manifest moves, so a
reader that sees a manifest finds exactly the bytes it lists. Object stores have no lock: the
manifest is written with a conditional PUT on the ETag read at the start (If-None-Match for the
first one), so of two deployers at once the second is refused with a clear error instead of
silently overwriting; a server without conditional writes gets a plain PUT (single writer).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cfrec_serving.artifacts import MANIFEST_FILE, SERVING_FILE, VERSION_FILE, VERSIONS_DIR
from cfrec_serving.storage import private_dir, sha256_file, write_atomic
from cfrec_serving.targets import folder as deployment
from cfrec_serving.targets.folder import (
    MAX_JSON_BYTES,
    DeploymentError,
    parse_json_object,
    recorded_size,
    valid_file_list,
    validate_version_name,
)
from cfrec_serving.targets.s3_store import (
    ObjectStoreError,
    PreconditionFailedError,
    S3Location,
    S3Store,
    is_object_store_url,
)


class CacheError(DeploymentError):
    """The local cache cannot be used safely: another user's folder, a symlink, not a folder, not writable."""


class ServingTarget(Protocol):
    def describe(self) -> str: ...
    def read_manifest(self) -> dict[str, Any] | None: ...
    def list_versions(self) -> list[dict[str, Any]]: ...
    def promote(self, source_dir: Path, **promotion: Any) -> dict[str, Any]: ...
    def rollback(self, version: str) -> dict[str, Any]: ...
    def fetch(self, cache_dir: Path, names: Iterable[str] = (SERVING_FILE,)) -> tuple[Path, dict[str, Any]]: ...


def open_target(
    url_or_path: str | Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> ServingTarget:
    """``s3://bucket/prefix`` → :class:`S3Target`; anything else is a local folder."""
    if is_object_store_url(str(url_or_path)):
        store = S3Store(
            S3Location.parse(str(url_or_path)),
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
        return S3Target(store)
    return LocalTarget(Path(url_or_path).expanduser().resolve())


class LocalTarget:
    """A serving folder on this machine (see ``deployment.py``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return str(self.folder)

    def read_manifest(self) -> dict[str, Any] | None:
        return deployment.read_manifest(self.folder)

    def list_versions(self) -> list[dict[str, Any]]:
        return deployment.list_versions(self.folder)

    def promote(self, source_dir: Path, **promotion: Any) -> dict[str, Any]:
        return deployment.promote(source_dir, self.folder, **promotion)

    def rollback(self, version: str) -> dict[str, Any]:
        return deployment.rollback(self.folder, version)

    def fetch(self, cache_dir: Path | None = None, names: Iterable[str] = ()) -> tuple[Path, dict[str, Any]]:
        """The current version's folder (already local) and manifest."""
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(f"no model is deployed in {self.folder} (no manifest.json)")
        return deployment.version_dir(self.folder, manifest["version"]), manifest


class S3Target:
    """A serving target in an S3-protocol bucket."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    def describe(self) -> str:
        return self.store.where

    def read_manifest(self) -> dict[str, Any] | None:
        return self._manifest()[0]

    def _manifest(self) -> tuple[dict[str, Any] | None, str | None]:
        """The manifest and its ETag (the condition the next manifest write is made on)."""
        payload, etag = self._call(self.store.get_tagged, MANIFEST_FILE, max_bytes=MAX_JSON_BYTES)
        if payload is None:
            return None, None
        manifest = parse_json_object(payload, f"{self.describe()}/{MANIFEST_FILE}")
        if not isinstance(manifest.get("version"), str) or not isinstance(manifest.get("files"), dict):
            raise DeploymentError(f"{self.describe()}/{MANIFEST_FILE} has no 'version'/'files': not a manifest")
        return manifest, etag

    def list_versions(self) -> list[dict[str, Any]]:
        manifest = self.read_manifest()
        current = manifest["version"] if manifest else None
        listed = []
        for name in self._call(self.store.folders, VERSIONS_DIR):
            try:
                record = self._version_record(name) or {"version": name, "error": "incomplete upload"}
            except DeploymentError as error:
                record = {"version": name, "error": str(error)}
            listed.append({**record, "current": name == current})
        return listed

    def promote(self, source_dir: Path, **promotion: Any) -> dict[str, Any]:
        """Upload, verify, then point the manifest; the manifest is untouched on any failure."""
        source_dir = Path(source_dir)
        record = deployment.version_record(source_dir, **promotion)
        current, etag = self._manifest()  # refuse a corrupt manifest before uploading anything
        version = record["version"]
        kept = self._version_record(version)
        if kept is not None:
            if kept.get("files") != record["files"]:
                raise DeploymentError(
                    f"version {version!r} is already deployed to {self.describe()} with different files; "
                    "versions are never overwritten, train a new version instead"
                )
            self._verify(version, kept["files"])
            record = kept
        else:
            record = {**record, "deployed_at": _now_iso()}
            for name in record["files"]:
                self._put((source_dir / name).read_bytes(), VERSIONS_DIR, version, name)
            self._verify(version, record["files"])
            self._put(_dump(record), VERSIONS_DIR, version, VERSION_FILE, content_type="application/json")
        return self._point_manifest(record, current, etag)

    def rollback(self, version: str) -> dict[str, Any]:
        validate_version_name(version)
        record = self._version_record(version)
        if record is None:
            kept = [v["version"] for v in self.list_versions() if "error" not in v]
            raise DeploymentError(f"cannot roll back to {version!r}: not deployed to {self.describe()} (kept: {kept})")
        self._verify(version, record["files"], refusal=f"refusing to roll back to {version!r}")
        return self._point_manifest(record, *self._manifest())

    def fetch(self, cache_dir: Path, names: Iterable[str] = (SERVING_FILE,)) -> tuple[Path, dict[str, Any]]:
        """Download the current version's ``names`` into ``cache_dir/<version>/`` (verified files
        already there are reused); return that folder and the manifest.

        Both folders must be private (``storage.private_dir``: this user's, mode 0700, no symlink),
        else ``CacheError``: another local user must not receive the files or plant their own."""
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(f"no model is deployed in {self.describe()} (no manifest.json)")
        version = validate_version_name(manifest["version"])
        folder = _cache_folder(Path(cache_dir), version)
        for name in names:
            record = manifest["files"].get(name)
            if record is None:
                continue  # the loader says what is missing
            local = folder / name
            if _cached(local, record):
                continue
            where = f"{self.describe()}/{VERSIONS_DIR}/{version}/{name}"
            payload = self._get(VERSIONS_DIR, version, name, max_bytes=recorded_size(record, where))
            _check(payload, record, where)
            try:
                write_atomic(local, lambda tmp, data=payload: tmp.write_bytes(data))
            except OSError as error:
                raise CacheError(f"cannot write {local}: {error}") from None
        return folder, manifest

    def _version_record(self, version: str) -> dict[str, Any] | None:
        payload = self._get(VERSIONS_DIR, validate_version_name(version), VERSION_FILE, max_bytes=MAX_JSON_BYTES)
        if payload is None:
            return None
        record = parse_json_object(payload, f"{self.describe()}/{VERSIONS_DIR}/{version}/{VERSION_FILE}")
        if record.get("version") != version or not valid_file_list(record.get("files")):
            raise DeploymentError(f"{VERSIONS_DIR}/{version}/{VERSION_FILE} in {self.describe()} is not this version's")
        return record

    def _verify(self, version: str, files: Mapping[str, Any], refusal: str = "upload not verified") -> None:
        """Read every object back: size and sha256 must be what the version records."""
        for name, record in files.items():
            where = f"{self.describe()}/{VERSIONS_DIR}/{version}/{name}"
            try:
                _check(self._get(VERSIONS_DIR, version, name, max_bytes=recorded_size(record, where)), record, where)
            except DeploymentError as error:
                raise DeploymentError(f"{refusal}: {error}") from None

    def _point_manifest(
        self, record: dict[str, Any], current: dict[str, Any] | None, etag: str | None
    ) -> dict[str, Any]:
        """Write the manifest only if it is still the one read before (conditional PUT on its ETag)."""
        if current is not None and current["version"] == record["version"] and current["files"] == record["files"]:
            return current
        manifest = {**record, "deployed_at": _now_iso(), "previous_version": current["version"] if current else None}
        try:
            self.store.put(_dump(manifest), MANIFEST_FILE, content_type="application/json", expect=etag)
        except PreconditionFailedError:
            raise DeploymentError(
                f"the manifest in {self.describe()} changed while version {record['version']} was being "
                "deployed (another deployer or rollback): that version is uploaded and verified but not "
                "served; deploy again to serve it"
            ) from None
        except ObjectStoreError as error:
            raise DeploymentError(str(error)) from None
        return manifest

    def _get(self, *parts: str, max_bytes: int) -> bytes | None:
        return self._call(self.store.get, *parts, max_bytes=max_bytes)

    def _put(self, data: bytes, *parts: str, content_type: str = "application/octet-stream") -> None:
        self._call(self.store.put, data, *parts, content_type=content_type)

    @staticmethod
    def _call(operation: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except ObjectStoreError as error:
            raise DeploymentError(str(error)) from None


def _check(payload: bytes | None, record: Mapping[str, Any], where: str) -> None:
    if payload is None:
        raise DeploymentError(f"{where} is missing")
    if len(payload) != record["bytes"]:
        raise DeploymentError(f"{where} is {len(payload):,} bytes, expected {record['bytes']:,}")
    if hashlib.sha256(payload).hexdigest() != record.get("sha256"):
        raise DeploymentError(f"{where} does not match its recorded sha256 (tampered or partial)")


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


def _dump(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()
