"""A serving target in a local folder: the backend that keeps its bytes, with a lock and renames.

Layout::

    <serving>/manifest.json              points at the current version
    <serving>/versions/<version>/        cf_model.npz, svd_model.pkl, cf_trainset.pkl, version.json
    <serving>/.deploy.lock               flock() target serialising deployers

Version folders appear atomically (copied and verified in a temp folder, then renamed) and the
manifest is replaced atomically (temp file + fsync + ``os.replace``), so readers never see a
half-copied version or a torn manifest. Deployers hold the lock from reading the manifest to
writing the next one, so none is lost.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cfrec_serving.artifacts import ARTIFACT_FILES, MANIFEST_FILE, PICKLE_FILES, VERSION_FILE, VERSIONS_DIR
from cfrec_serving.storage import TEMP_PREFIX, read_regular_file, sha256_file, write_atomic, write_dir_atomic
from cfrec_serving.targets.manifest import (
    DeploymentError,
    dump_json,
    file_problem,
    valid_file_list,
    validate_version_name,
)

LOCK_FILE = ".deploy.lock"


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` for the artifact files in ``directory``: ``cf_model.npz``
    and the pickles, the npz alone (Spark-trained versions), or the pickles alone (versions made
    before the npz)."""
    present = [name for name in ARTIFACT_FILES if (directory / name).is_file()]
    if not valid_file_list(dict.fromkeys(present)):
        missing = [name for name in (PICKLE_FILES if present else ARTIFACT_FILES) if name not in present]
        raise DeploymentError(f"missing artifact {', '.join(str(directory / name) for name in missing)}")
    return {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size} for name in present
    }


def verification_problems(directory: Path, expected: Mapping[str, Any]) -> list[str]:
    """Human-readable reasons why ``directory``'s artifacts don't match ``expected`` (empty = OK)."""
    if not valid_file_list(expected):
        return [
            f"file list {sorted(expected) if isinstance(expected, Mapping) else expected!r} "
            f"is not {sorted(ARTIFACT_FILES)}"
        ]
    problems = []
    for name, record in expected.items():
        path = directory / name
        size = path.stat().st_size if path.is_file() else None
        problem = file_problem(name, size, lambda path=path: sha256_file(path), record)
        if problem:
            problems.append(problem)
    return problems


def version_dir(serving_dir: Path | str, version: str) -> Path:
    """Folder holding one promoted version."""
    return Path(serving_dir) / VERSIONS_DIR / validate_version_name(version)


@contextmanager
def deploy_lock(serving_dir: Path) -> Iterator[None]:
    """Exclusive, blocking ``flock`` on ``<serving>/.deploy.lock`` (released on close, even on crash)."""
    with open(Path(serving_dir) / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class FolderBackend:
    """The bytes of a serving target in ``folder`` (see ``target.ServingTarget`` for the rules)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return str(self.folder)

    def where(self, *key: str) -> str:
        return str(self.folder.joinpath(*key))

    def read(self, *key: str, max_bytes: int) -> bytes | None:
        """A regular file's bytes (at most ``max_bytes``), None when it does not exist."""
        path = self.folder.joinpath(*key)
        try:
            return read_regular_file(path, max_bytes)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise DeploymentError(f"{path} is unreadable: {error}") from None

    def read_tagged(self, *key: str, max_bytes: int) -> tuple[bytes | None, None]:
        return self.read(*key, max_bytes=max_bytes), None  # no tag: the lock keeps the manifest still

    def version_names(self) -> list[str]:
        root = self.folder / VERSIONS_DIR
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock; leftovers of deployers that crashed mid-copy are dropped first."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with deploy_lock(self.folder):
            _remove_stray_temp_files(self.folder)
            yield

    def write_version(self, source_dir: Path, record: Mapping[str, Any]) -> None:
        """Copy the files, verify the copies, add ``version.json``, then rename the folder into place."""
        target = version_dir(self.folder, record["version"])
        if target.exists():  # only a hand can leave one without version.json: a rename is all or nothing
            raise DeploymentError(
                f"{target} exists without {VERSION_FILE}; versions are never overwritten: remove it or "
                "train a new version"
            )

        def fill(staging: Path) -> None:
            for name in record["files"]:
                shutil.copyfile(source_dir / name, staging / name)
            # Hash the copies: catches a source file rewritten between hashing and copying.
            problems = verification_problems(staging, record["files"])
            if problems:
                raise DeploymentError(f"copy of {source_dir} does not match its hashes: " + "; ".join(problems))
            (staging / VERSION_FILE).write_bytes(dump_json(record))

        write_dir_atomic(target, fill)  # the last step: nothing can fail after its rename

    def discard_version(self, version: str) -> None:
        """Remove a version this promote created but the manifest never pointed at."""
        shutil.rmtree(version_dir(self.folder, version), ignore_errors=True)

    def verify(self, version: str, files: Mapping[str, Any]) -> list[str]:
        return verification_problems(version_dir(self.folder, version), files)

    def write_manifest(self, data: bytes, expect: None) -> None:
        """Replace the manifest atomically (the lock, not ``expect``, rules out a rival writer)."""
        write_atomic(self.folder / MANIFEST_FILE, lambda tmp: tmp.write_bytes(data))

    def version_folder(self, version: str, files: Mapping[str, Any], names: object, cache_dir: object) -> Path:
        """The version's own folder: read in place (the loader verifies what it reads)."""
        return version_dir(self.folder, version)


def _remove_stray_temp_files(serving_dir: Path) -> None:
    """Drop leftovers of deployers that crashed mid-copy (safe: we hold the lock)."""
    for folder in (serving_dir, serving_dir / VERSIONS_DIR):
        if folder.is_dir():
            for stray in folder.glob(f"{TEMP_PREFIX}*"):
                if stray.is_dir():
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    stray.unlink(missing_ok=True)
