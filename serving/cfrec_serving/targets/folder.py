"""Promote trained model versions to a serving directory, and roll back.

Layout of a serving directory::

    <serving>/manifest.json              points at the current version
    <serving>/versions/<version>/        cf_model.npz, svd_model.pkl, cf_trainset.pkl, version.json
    <serving>/.deploy.lock               flock() target serialising deployers

Every version ever promoted is kept, so a rollback is only a manifest rewrite.
Version folders appear atomically (copied to a temp dir, then renamed) and the
manifest is replaced atomically (temp file + fsync + ``os.replace``), so readers
never see a half-copied version or a torn manifest. A failed promote leaves the
directory as it was: anything it created is removed again.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cfrec_serving.artifacts import (
    ARTIFACT_FILES,
    MANIFEST_FILE,
    PICKLE_FILES,
    SERVING_FILE,
    VERSION_FILE,
    VERSIONS_DIR,
)
from cfrec_serving.storage import TEMP_PREFIX, read_regular_file, sha256_file, write_dir_atomic, write_json

LOCK_FILE = ".deploy.lock"
# Version names become directory names: no separators, no leading dot (temp dirs use one).
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A manifest is a few KiB, three levels deep; anything far beyond is refused before parsing
# (json.loads recurses once per level: 100,000 nested "[" would be a RecursionError).
MAX_JSON_BYTES = 256 << 10
MAX_JSON_DEPTH = 32
# One JSON token: a whole string (possessive: linear time), a bracket, or a run of anything else.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|[^"\[\]{}]++', re.DOTALL)


class DeploymentError(RuntimeError):
    """A promote/rollback was refused or failed; the serving dir is unchanged."""


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` for the artifact files in ``directory`` (the pickles are
    required; ``cf_model.npz`` is listed when present: versions made before it lack it)."""
    records = {}
    for name in ARTIFACT_FILES:
        path = directory / name
        if not path.is_file():
            if name == SERVING_FILE:
                continue
            raise DeploymentError(f"missing artifact {path}")
        records[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return records


def recorded_size(record: Any, name: str) -> int:
    """The ``bytes`` a file record promises (what a reader reads at most)."""
    size = record.get("bytes") if isinstance(record, Mapping) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise DeploymentError(f"the record of {name} has no valid byte size ({size!r})")
    return size


def valid_file_list(files: Any) -> bool:
    """A version lists the pickles, and the npz unless it predates it; nothing else."""
    return isinstance(files, Mapping) and set(PICKLE_FILES) <= set(files) <= set(ARTIFACT_FILES)


def verification_problems(directory: Path, expected: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons why ``directory``'s artifacts don't match ``expected`` (empty = OK)."""
    if not valid_file_list(expected):
        return [
            f"file list {sorted(expected) if isinstance(expected, Mapping) else expected!r} "
            f"is not {sorted(ARTIFACT_FILES)}"
        ]
    problems = []
    for name in expected:
        path = directory / name
        record = expected[name]
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif not isinstance(record, Mapping) or "sha256" not in record:
            problems.append(f"{name} has no recorded sha256")
        elif path.stat().st_size != record.get("bytes", path.stat().st_size):
            problems.append(f"{name} is {path.stat().st_size} bytes, expected {record['bytes']}")
        elif sha256_file(path) != record["sha256"]:
            problems.append(f"{name} sha256 does not match the recorded {record['sha256'][:12]}…")
    return problems


def validate_version_name(version: str) -> str:
    """Refuse names that could escape ``versions/`` or collide with temp dirs."""
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
        raise DeploymentError(
            f"invalid version name {version!r}: use letters, digits, '.', '_' or '-', not starting with '.'"
        )
    return version


def version_dir(serving_dir: Path | str, version: str) -> Path:
    """Folder holding one promoted version."""
    return Path(serving_dir) / VERSIONS_DIR / validate_version_name(version)


def read_manifest(serving_dir: Path | str) -> dict[str, Any] | None:
    """The current manifest, or None when nothing has been deployed yet."""
    path = Path(serving_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    manifest = _read_json(path)
    if not isinstance(manifest.get("version"), str) or not isinstance(manifest.get("files"), dict):
        raise DeploymentError(f"{path} has no 'version'/'files': not a deployment manifest")
    return manifest


def list_versions(serving_dir: Path | str) -> list[dict[str, Any]]:
    """Every kept version's ``version.json`` (oldest first by name) plus ``current: bool``.

    A version folder whose ``version.json`` cannot be read is listed with an
    ``error`` key instead of being hidden.
    """
    versions_root = Path(serving_dir) / VERSIONS_DIR
    if not versions_root.is_dir():
        return []
    manifest = read_manifest(serving_dir)
    current = manifest["version"] if manifest else None
    listed = []
    for folder in sorted(versions_root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            record = _read_json(folder / VERSION_FILE)
        except DeploymentError as error:
            record = {"version": folder.name, "error": str(error)}
        listed.append({**record, "current": folder.name == current})
    return listed


def promote(
    source_dir: Path | str,
    serving_dir: Path | str,
    *,
    version: str,
    metrics: Mapping[str, Any],
    counts: Mapping[str, Any],
    trained_at: str | datetime,
    expected_sha256: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy a trained version into ``serving_dir`` and make it current; return the new manifest.

    The source files are hashed first (and compared with ``expected_sha256`` when
    given, which must name every artifact). If ``versions/<version>`` already
    exists it is reused only when its files are identical; a different one is an
    error, versions are never overwritten. Promoting the current version again
    returns the manifest unchanged.
    """
    source_dir = Path(source_dir)
    serving_dir = Path(serving_dir)
    record = version_record(
        source_dir,
        version=version,
        metrics=metrics,
        counts=counts,
        trained_at=trained_at,
        expected_sha256=expected_sha256,
        details=details,
    )
    files = record["files"]
    serving_dir.mkdir(parents=True, exist_ok=True)
    with deploy_lock(serving_dir):
        _remove_stray_temp_files(serving_dir)
        current = read_manifest(serving_dir)  # refuse a corrupt manifest before copying anything
        target = version_dir(serving_dir, version)
        created = False
        try:
            if target.exists():
                record = _reuse_existing_version(target, files)
            else:
                record = {**record, "deployed_at": _now_iso()}
                _copy_version_atomically(source_dir, target, record)
                created = True
            manifest = _point_manifest(serving_dir, record, current)
        except BaseException:
            if created:  # the manifest never pointed at it: undo so the dir is as before
                shutil.rmtree(target, ignore_errors=True)
            raise
        return manifest


def version_record(
    source_dir: Path,
    *,
    version: str,
    metrics: Mapping[str, Any],
    counts: Mapping[str, Any],
    trained_at: str | datetime,
    expected_sha256: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``version.json`` of a version about to be promoted (to any target): its files hashed
    (and compared with ``expected_sha256``), metrics, counts and details as plain JSON."""
    validate_version_name(version)
    files = file_records(source_dir)
    if expected_sha256 is not None:
        _check_expected(files, expected_sha256, source_dir)
    return {
        "version": version,
        "files": files,
        "metrics": _json_safe(dict(metrics), "metrics"),
        "counts": _json_safe(dict(counts), "counts"),
        "trained_at": _iso_utc(trained_at),
        **_json_safe(dict(details or {}), "details"),
    }


def rollback(serving_dir: Path | str, version: str) -> dict[str, Any]:
    """Point the manifest at a kept ``version`` after re-verifying its files; return the manifest.

    Refuses (``DeploymentError``) when the version is missing or its files no
    longer match its ``version.json``. Rolling back to the current version only
    re-verifies it and returns the manifest unchanged.
    """
    serving_dir = Path(serving_dir)
    target = version_dir(serving_dir, version)
    if not target.is_dir():
        kept = [v["version"] for v in list_versions(serving_dir)]
        raise DeploymentError(f"cannot roll back to {version!r}: not deployed here (kept: {kept or 'none'})")
    with deploy_lock(serving_dir):
        record = _read_json(target / VERSION_FILE)
        if record.get("version") != version:
            raise DeploymentError(f"{target / VERSION_FILE} describes {record.get('version')!r}, not {version!r}")
        problems = verification_problems(target, record.get("files"))
        if problems:
            raise DeploymentError(f"refusing to roll back to {version!r}: " + "; ".join(problems))
        return _point_manifest(serving_dir, record, read_manifest(serving_dir))


def _point_manifest(serving_dir: Path, record: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """Make ``record``'s version current (unless it already is); call with the lock held."""
    if current is not None and current["version"] == record["version"] and current["files"] == record["files"]:
        return current
    manifest = {**record, "deployed_at": _now_iso(), "previous_version": current["version"] if current else None}
    write_json(manifest, serving_dir / MANIFEST_FILE)
    return manifest


@contextmanager
def deploy_lock(serving_dir: Path) -> Iterator[None]:
    """Exclusive, blocking ``flock`` on ``<serving>/.deploy.lock`` (released on close, even on crash)."""
    with open(Path(serving_dir) / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_expected(files: Mapping[str, Mapping[str, Any]], expected: Mapping[str, str], source: Path) -> None:
    if set(expected) != set(files):
        raise DeploymentError(f"expected_sha256 must name exactly {sorted(files)}, got {sorted(expected)}")
    mismatched = [name for name in files if files[name]["sha256"] != expected[name]]
    if mismatched:
        raise DeploymentError(
            f"{', '.join(mismatched)} in {source} changed since training (sha256 mismatch); not promoting"
        )


def _reuse_existing_version(target: Path, files: Mapping[str, Any]) -> dict[str, Any]:
    """Return the kept record if ``target`` holds exactly ``files``; refuse otherwise."""
    record = _read_json(target / VERSION_FILE)
    if record.get("files") != files:
        raise DeploymentError(
            f"version {target.name!r} is already deployed with different files; versions are never "
            "overwritten, train a new version instead"
        )
    problems = verification_problems(target, record["files"])
    if problems:
        raise DeploymentError(f"kept version {target.name!r} is damaged: " + "; ".join(problems))
    return record


def _copy_version_atomically(source: Path, target: Path, record: Mapping[str, Any]) -> None:
    def fill(staging: Path) -> None:
        for name in record["files"]:
            shutil.copyfile(source / name, staging / name)
        # Hash the copies: catches a source file rewritten between hashing and copying.
        problems = verification_problems(staging, record["files"])
        if problems:
            raise DeploymentError(f"copy of {source} does not match its hashes: " + "; ".join(problems))
        write_json(dict(record), staging / VERSION_FILE)

    write_dir_atomic(target, fill)  # the last step: nothing can fail after its rename


def parse_json_object(payload: bytes, where: str) -> dict[str, Any]:
    """A manifest-like JSON object, its size and nesting bounded before it is parsed."""
    if len(payload) > MAX_JSON_BYTES:
        raise DeploymentError(f"{where} is {len(payload):,} bytes, more than the {MAX_JSON_BYTES:,} allowed")
    try:
        text = payload.decode("utf-8")
        if _nested_deeper_than(text, MAX_JSON_DEPTH):
            raise DeploymentError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels: not a manifest")
        value = json.loads(text)
    except ValueError as error:
        raise DeploymentError(f"{where} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise DeploymentError(f"{where} does not hold a JSON object")
    return value


def _nested_deeper_than(text: str, limit: int) -> bool:
    """One linear scan over tokens (brackets inside strings do not count). It stops early at an
    unterminated string, which ``json.loads`` refuses before any bracket after it."""
    depth, position = 0, 0
    while (token := _JSON_TOKEN.match(text, position)) is not None:
        position = token.end()
        if token[0] in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token[0] in ("]", "}"):
            depth -= 1
    return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = read_regular_file(path, MAX_JSON_BYTES)
    except FileNotFoundError:
        raise DeploymentError(f"{path} is missing") from None
    except OSError as error:
        raise DeploymentError(f"{path} is unreadable: {error}") from None
    return parse_json_object(payload, str(path))


def _remove_stray_temp_files(serving_dir: Path) -> None:
    """Drop leftovers of deployers that crashed mid-copy (safe: we hold the lock)."""
    for folder in (serving_dir, serving_dir / VERSIONS_DIR):
        if folder.is_dir():
            for stray in folder.glob(f"{TEMP_PREFIX}*"):
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    stray.unlink(missing_ok=True)


def _json_safe(values: dict[str, Any], label: str) -> dict[str, Any]:
    """Plain JSON values only (numpy scalars converted), so the manifest always serialises."""
    try:
        return json.loads(json.dumps(values, default=_numpy_scalar, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise DeploymentError(f"{label} must be JSON-serialisable finite values: {error}") from None


def _numpy_scalar(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _iso_utc(moment: str | datetime) -> str:
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            raise DeploymentError(f"trained_at {moment!r} is not an ISO timestamp") from None
    if moment.tzinfo is None:
        raise DeploymentError("trained_at must be timezone-aware (UTC)")
    return moment.astimezone(timezone.utc).isoformat()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()
