"""Serving targets: where ``deployed_model`` promotes versions and the app loads them from.

One model over two backends: a local folder (``folder.py``: flock, atomic renames) or an
S3-protocol bucket (``s3.py``: read-back, conditional PUT), with the same layout::

    <target>/manifest.json                   the current version; written LAST, so it never
                                             points at missing files
    <target>/versions/<version>/<file>       cf_model.npz, the pickles
    <target>/versions/<version>/version.json  written after the files

Promote, rollback, the kept-champion note, the current manifest and the list of versions are
written here once; the rules they follow are ``manifest.py``'s. Every version ever promoted is
kept, so a rollback is only a manifest write, and the manifest moves only from the one read at
the start (the folder's lock, the bucket's ETag). A failed promote, rollback or note leaves the
manifest as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from cfrec_serving.artifacts import MANIFEST_FILE, SERVING_FILE, VERSION_FILE, VERSIONS_DIR
from cfrec_serving.targets.folder import FolderBackend, file_records
from cfrec_serving.targets.manifest import (
    MAX_JSON_BYTES,
    DeploymentError,
    ManifestChangedError,
    Promotion,
    dump_json,
    next_manifest,
    now_iso,
    parse_manifest,
    parse_version_record,
    reused_record,
    serves,
    validate_version_name,
    version_record,
    with_kept_entry,
)
from cfrec_serving.targets.s3 import S3Backend
from cfrec_serving.targets.s3_store import S3Location, S3Store, is_object_store_url


class Backend(Protocol):
    """Where a target's bytes live; keys are ``manifest.json`` and ``versions/<version>/<file>``.

    Reads return None for a key that does not exist and raise ``DeploymentError`` otherwise
    (``TargetUnavailableError`` when the store cannot be reached).
    ``read_tagged`` also returns the tag ``write_manifest`` is conditional on (the bucket's ETag;
    the folder needs none: ``writing`` holds its lock from the read to the write). A version is
    written whole by ``write_version``, its files verified before its ``version.json``."""

    def describe(self) -> str: ...
    def where(self, *key: str) -> str: ...
    def read(self, *key: str, max_bytes: int) -> bytes | None: ...
    def read_tagged(self, *key: str, max_bytes: int) -> tuple[bytes | None, Any]: ...
    def version_names(self) -> list[str]: ...
    def writing(self) -> AbstractContextManager[None]: ...
    def write_version(self, source_dir: Path, record: Mapping[str, Any]) -> None: ...
    def discard_version(self, version: str) -> None: ...
    def verify(self, version: str, files: Mapping[str, Any]) -> list[str]: ...
    def write_manifest(self, data: bytes, expect: Any) -> None: ...
    def version_folder(self, version: str, files: Mapping[str, Any], names: Iterable[str], cache_dir: Path) -> Path: ...


def open_target(
    url_or_path: str | Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> ServingTarget:
    """``s3://bucket/prefix`` → a bucket (boto3, the ``[s3]`` extra); anything else is a local folder."""
    if is_object_store_url(str(url_or_path)):
        store = S3Store(
            S3Location.parse(str(url_or_path)),
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
        return ServingTarget(S3Backend(store))
    return ServingTarget(FolderBackend(Path(url_or_path).expanduser().resolve()))


class ServingTarget:
    """Promote, roll back and read the versions of one target, whichever backend holds it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def describe(self) -> str:
        return self.backend.describe()

    def read_manifest(self) -> dict[str, Any] | None:
        """The current manifest, or None when nothing has been deployed yet."""
        return self._manifest()[0]

    def list_versions(self) -> list[dict[str, Any]]:
        """Every kept version's ``version.json`` (oldest first by name) plus ``current: bool``.

        A version whose ``version.json`` is missing or unreadable is listed with an ``error`` key
        instead of being hidden."""
        names = self.backend.version_names()
        if not names:
            return []
        manifest = self.read_manifest()
        current = manifest["version"] if manifest else None
        return [{**self._listed(name), "current": name == current} for name in names]

    def promote(self, source_dir: Path | str, promotion: Promotion) -> dict[str, Any]:
        """Put a trained version in the target and make it current; return the new manifest.

        The source files are hashed first (and compared with ``promotion.expected_sha256``). A
        version already kept is reused only when its files are identical and still verify;
        versions are never overwritten. Promoting the current version again returns the manifest
        unchanged. On any failure the manifest is as it was."""
        source_dir = Path(source_dir)
        record = version_record(promotion, file_records(source_dir), source_dir)
        with self.backend.writing():
            current, tag = self._manifest()  # refuse a corrupt manifest before writing anything
            kept = self._version_record(promotion.version)
            created = False
            try:
                if kept is not None:
                    record = reused_record(kept, record, self.describe())
                    self._refuse_unverified(promotion.version, record, f"kept version {promotion.version!r} is damaged")
                else:
                    record = {**record, "deployed_at": now_iso()}
                    self.backend.write_version(source_dir, record)
                    created = True
                return self._point_manifest(record, current, tag)
            except BaseException:
                if created:  # the manifest never pointed at it
                    self.backend.discard_version(promotion.version)
                raise

    def rollback(self, version: str) -> dict[str, Any]:
        """Point the manifest at a kept ``version`` after re-verifying its files; return the manifest.

        Refuses (``DeploymentError``) when the version is not kept or its files no longer match
        its ``version.json``. Rolling back to the current version only re-verifies it."""
        record = self._version_record(validate_version_name(version))
        if record is None:
            listed = {entry["version"]: entry for entry in self.list_versions()}
            if version in listed:
                raise DeploymentError(f"cannot roll back to {version!r}: {listed[version]['error']}")
            kept = [name for name, entry in listed.items() if "error" not in entry]
            raise DeploymentError(
                f"cannot roll back to {version!r}: not deployed to {self.describe()} (kept: {kept or 'none'})"
            )
        with self.backend.writing():
            self._refuse_unverified(version, record, f"refusing to roll back to {version!r}")
            return self._point_manifest(record, *self._manifest())

    def record_kept_champion(self, champion: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Add ``entry`` (a challenger that lost) to the manifest's ``kept_champion`` list while
        ``champion`` is still the served version; return the manifest. Version and files are untouched.

        Written like a promote (the folder's lock, the bucket's ETag): a deployer that moved the
        manifest meanwhile makes this a ``DeploymentError``, never a write over its manifest."""
        with self.backend.writing():
            current, tag = self._manifest()
            manifest = with_kept_entry(current, champion, entry)
            try:
                self.backend.write_manifest(dump_json(manifest), tag)
            except ManifestChangedError:
                raise DeploymentError(
                    f"the manifest in {self.describe()} changed while the challenger was being recorded: run again"
                ) from None
            return manifest

    def version_folder(
        self, manifest: Mapping[str, Any], names: Iterable[str] = (SERVING_FILE,), *, cache_dir: Path
    ) -> Path:
        """A local folder with the ``names`` of the version ``manifest`` points at: the folder
        target's own (read in place), or a bucket's verified downloads in ``cache_dir/<version>``."""
        return self.backend.version_folder(manifest["version"], manifest["files"], names, cache_dir)

    def _manifest(self) -> tuple[dict[str, Any] | None, Any]:
        """The manifest and the tag a conditional write of the next one is made on."""
        payload, tag = self.backend.read_tagged(MANIFEST_FILE, max_bytes=MAX_JSON_BYTES)
        return (None if payload is None else parse_manifest(payload, self.backend.where(MANIFEST_FILE))), tag

    def _version_record(self, version: str) -> dict[str, Any] | None:
        """A kept version's record; None when it has none (never promoted, or an interrupted upload)."""
        payload = self.backend.read(
            VERSIONS_DIR, validate_version_name(version), VERSION_FILE, max_bytes=MAX_JSON_BYTES
        )
        return None if payload is None else parse_version_record(payload, self._record_key(version), version)

    def _record_key(self, version: str) -> str:
        return self.backend.where(VERSIONS_DIR, version, VERSION_FILE)

    def _listed(self, name: str) -> dict[str, Any]:
        try:
            return self._version_record(name) or {"version": name, "error": f"{self._record_key(name)} is missing"}
        except DeploymentError as error:
            return {"version": name, "error": str(error)}

    def _refuse_unverified(self, version: str, record: Mapping[str, Any], refusal: str) -> None:
        problems = self.backend.verify(version, record["files"])
        if problems:
            raise DeploymentError(f"{refusal}: " + "; ".join(problems))

    def _point_manifest(self, record: dict[str, Any], current: dict[str, Any] | None, tag: Any) -> dict[str, Any]:
        """Make ``record``'s version current unless it already is; only if the manifest is still ``current``."""
        if current is not None and serves(current, record):
            return current
        manifest = next_manifest(record, current)
        try:
            self.backend.write_manifest(dump_json(manifest), tag)
        except ManifestChangedError:
            raise DeploymentError(
                f"the manifest in {self.describe()} changed while version {record['version']} was being "
                "deployed (another deployer or rollback): that version is uploaded and verified but not "
                "served; deploy again to serve it"
            ) from None
        return manifest
