"""The rules of a serving target, whatever holds it: what a version and a manifest record, when a
promote or rollback is allowed, and how their JSON is read (bounded) and written.

No I/O: functions over bytes and dicts; the folder and the bucket backends move the bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cfrec_serving.artifacts import ARTIFACT_FILES, PICKLE_FILES, SERVING_FILE

# Version names become folder names and keys: no separators, no leading dot (temp folders use one).
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A manifest is a few KiB, three levels deep; anything far beyond is refused before parsing
# (json.loads recurses once per level: 100,000 nested "[" would be a RecursionError).
MAX_JSON_BYTES = 256 << 10
MAX_JSON_DEPTH = 32
KEPT_CHAMPION = "kept_champion"
"""Manifest key: the challengers that lost to the current version, newest first (a promotion or
rollback starts a new manifest, hence a new list)."""
KEPT_ENTRIES = 20
# One JSON token: a whole string (possessive: linear time), a bracket, or a run of anything else.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|[^"\[\]{}]++', re.DOTALL)


class DeploymentError(RuntimeError):
    """A promote/rollback was refused or failed; the target's manifest is unchanged."""


class CacheError(DeploymentError):
    """The local cache cannot be used safely: another user's folder, a symlink, not a folder, not writable."""


class ManifestChangedError(DeploymentError):
    """The manifest changed between reading it and writing the next one (another deployer)."""


class TargetUnavailableError(DeploymentError):
    """The object store could not be read or written (endpoint unreachable, credentials refused,
    no such bucket): nothing was verified or changed. Not a verdict on the deployment's bytes."""


@dataclass(frozen=True)
class Promotion:
    """What a promote records about a trained version besides its files' hashes.

    ``expected_sha256`` (when given, naming every artifact) is what training wrote: files that
    changed since are refused. ``details`` are extra top-level keys of ``version.json``."""

    version: str
    metrics: Mapping[str, Any]
    counts: Mapping[str, Any]
    trained_at: str | datetime
    expected_sha256: Mapping[str, str] | None = None
    details: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        validate_version_name(self.version)  # before any file is hashed or any folder made


def validate_version_name(version: str) -> str:
    """Refuse names that could escape ``versions/`` or collide with temp folders."""
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
        raise DeploymentError(
            f"invalid version name {version!r}: use letters, digits, '.', '_' or '-', not starting with '.'"
        )
    return version


def valid_file_list(files: Any) -> bool:
    """A version lists the npz with both pickles or none (a Spark-trained version), or both
    pickles without the npz (made before it); nothing else."""
    if not isinstance(files, Mapping) or not set(files) <= set(ARTIFACT_FILES):
        return False
    pickles = set(files) & set(PICKLE_FILES)
    return pickles == set(PICKLE_FILES) or (not pickles and SERVING_FILE in files)


def recorded_size(record: Any, name: str) -> int:
    """The ``bytes`` a file record promises (what a reader reads at most)."""
    size = record.get("bytes") if isinstance(record, Mapping) else None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise DeploymentError(f"the record of {name} has no valid byte size ({size!r})")
    return size


def file_problem(where: str, size: int | None, sha256: Callable[[], str], record: Any) -> str | None:
    """Why a stored file (``size`` None: absent; ``sha256`` computed only when the size fits)
    is not the one ``record`` describes, or None when it is."""
    if size is None:
        return f"{where} is missing"
    if not isinstance(record, Mapping) or "sha256" not in record:
        return f"{where} has no recorded sha256"
    expected = record.get("bytes", size)
    if size != expected:
        return f"{where} is {size:,} bytes, expected " + (
            f"{expected:,}" if isinstance(expected, int) else repr(expected)
        )
    if sha256() != record["sha256"]:
        return f"{where} sha256 does not match the recorded {str(record['sha256'])[:12]}… (tampered or partial)"
    return None


def checked_payload(where: str, payload: bytes | None, record: Any) -> bytes:
    """``payload`` when it is the file ``record`` describes (None: absent), else DeploymentError."""
    size = None if payload is None else len(payload)
    problem = file_problem(where, size, lambda: hashlib.sha256(payload or b"").hexdigest(), record)
    if problem is not None or payload is None:
        raise DeploymentError(problem)
    return payload


def version_record(promotion: Promotion, files: Mapping[str, Mapping[str, Any]], source: object) -> dict[str, Any]:
    """The ``version.json`` of a version about to be promoted: its ``files`` (hashed from
    ``source``, compared with ``expected_sha256``), metrics, counts and details as plain JSON."""
    if promotion.expected_sha256 is not None:
        _check_expected(files, promotion.expected_sha256, source)
    return {
        "version": promotion.version,
        "files": {name: dict(record) for name, record in files.items()},
        "metrics": _json_safe(dict(promotion.metrics), "metrics"),
        "counts": _json_safe(dict(promotion.counts), "counts"),
        "trained_at": _iso_utc(promotion.trained_at),
        **_json_safe(dict(promotion.details or {}), "details"),
    }


def reused_record(kept: dict[str, Any], record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A version already kept is reused only with identical files: versions are never overwritten."""
    if kept["files"] != record["files"]:
        raise DeploymentError(
            f"version {record['version']!r} is already deployed to {where} with different files; versions are "
            "never overwritten, train a new version instead"
        )
    return kept


def serves(manifest: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Already current: promoting or rolling back to it again changes nothing."""
    return manifest["version"] == record["version"] and manifest["files"] == record["files"]


def next_manifest(record: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest that makes ``record``'s version current, naming the one it replaces."""
    return {**record, "deployed_at": now_iso(), "previous_version": current["version"] if current else None}


def with_kept_entry(current: Mapping[str, Any] | None, champion: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``entry`` first in its ``kept_champion`` list (the newest ``KEPT_ENTRIES``),
    refused unless ``champion`` is still the version it serves."""
    if current is None or current["version"] != champion:
        served = current["version"] if current else "nothing"
        raise DeploymentError(
            f"the challenger was compared with {champion}, but the target now serves {served}: run again "
            "to compare it with what is served"
        )
    earlier = current.get(KEPT_CHAMPION)
    earlier = [e for e in earlier if isinstance(e, dict)] if isinstance(earlier, list) else []
    return {**current, KEPT_CHAMPION: [_json_safe(dict(entry), "entry"), *earlier][:KEPT_ENTRIES]}


def parse_manifest(payload: bytes, where: str) -> dict[str, Any]:
    """A manifest: a version (a valid name) and its files."""
    manifest = parse_json_object(payload, where)
    if not isinstance(manifest.get("version"), str) or not isinstance(manifest.get("files"), dict):
        raise DeploymentError(f"{where} has no 'version'/'files': not a deployment manifest")
    validate_version_name(manifest["version"])
    return manifest


def parse_version_record(payload: bytes, where: str, version: str) -> dict[str, Any]:
    """A kept version's ``version.json``: it must name that version and list its artifacts."""
    record = parse_json_object(payload, where)
    if record.get("version") != version:
        raise DeploymentError(f"{where} describes {record.get('version')!r}, not {version!r}")
    if not valid_file_list(record.get("files")):
        files = record.get("files")
        listed = sorted(files) if isinstance(files, Mapping) else files
        raise DeploymentError(f"{where} lists the files {listed!r}, not {sorted(ARTIFACT_FILES)}")
    return record


def nothing_deployed(where: str) -> str:
    return f"no model is deployed in {where} (no manifest.json)"


def dump_json(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


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


def _check_expected(files: Mapping[str, Mapping[str, Any]], expected: Mapping[str, str], source: object) -> None:
    if set(expected) != set(files):
        raise DeploymentError(f"expected_sha256 must name exactly {sorted(files)}, got {sorted(expected)}")
    mismatched = [name for name in files if files[name]["sha256"] != expected[name]]
    if mismatched:
        raise DeploymentError(
            f"{', '.join(mismatched)} in {source} changed since training (sha256 mismatch); not promoting"
        )


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
