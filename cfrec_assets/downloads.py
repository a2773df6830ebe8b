"""Idempotent, verified downloads of the MovieLens archives.

An archive enters the cache only after it has been verified (a readable zip whose CRCs
check out, holding the expected members, with no unsafe member names), so a truncated or
corrupt download can never poison the cache: it fails with a clear error and the cache is
left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from cfrec_assets.storage import sha256_file

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or produced an archive that cannot be trusted."""


@dataclass(frozen=True)
class CachedArchive:
    path: Path
    sha256: str
    source_url: str
    from_cache: bool
    bytes: int


def archive_url(base_url: str, filename: str) -> str:
    """Join a base URL (``http(s)://`` or ``file://``) and an archive name."""
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(
            f"unsupported download base URL scheme {scheme!r} in {base_url!r}: use http://, https:// or file://"
        )
    return base_url.rstrip("/") + "/" + urllib.parse.quote(filename)


def fetch_archive(
    base_url: str,
    filename: str,
    cache_dir: Path,
    required_members: tuple[str, ...],
    timeout_seconds: float = 60.0,
) -> CachedArchive:
    """Return the cached archive, downloading and verifying it first if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / filename
    url = archive_url(base_url, filename)
    if target.exists():
        try:
            verify_archive(target, required_members)
            return CachedArchive(target, sha256_file(target), url, True, target.stat().st_size)
        except DownloadError:
            # Only reachable if someone edited the cache by hand: fetch a fresh copy.
            pass

    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".partial", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout_seconds)
            out.flush()
            os.fsync(out.fileno())
        verify_archive(tmp, required_members, source=url)
        digest = sha256_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return CachedArchive(target, digest, url, False, target.stat().st_size)


def _stream(url: str, out, timeout_seconds: float) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
        except OSError as exc:
            raise DownloadError(f"cannot read {url}: {exc.strerror or exc}") from None
        return
    try:
        with httpx.stream("GET", url, timeout=timeout_seconds, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"GET {url} returned HTTP {resp.status_code}")
            expected = resp.headers.get("content-length")
            received = 0
            for chunk in resp.iter_bytes(CHUNK):
                out.write(chunk)
                received += len(chunk)
            if expected is not None and received != int(expected):
                raise DownloadError(f"GET {url} was truncated: received {received} of {expected} bytes")
    except httpx.RemoteProtocolError as exc:
        raise DownloadError(f"GET {url} was truncated: {exc}") from None
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None


def verify_archive(path: Path, required_members: tuple[str, ...], source: str | None = None) -> None:
    """Raise DownloadError unless ``path`` is an intact zip holding ``required_members``."""
    where = source or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                check_member_name(name)
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{where}: corrupt archive, bad CRC in member {bad!r}")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{where}: not a readable zip archive ({exc})") from None
    missing = [m for m in required_members if m not in names]
    if missing:
        raise DownloadError(f"{where}: archive lacks required member(s) {', '.join(missing)}")


def check_member_name(name: str) -> None:
    """Refuse absolute paths and ``..`` components (zip-slip)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise DownloadError(f"unsafe member name in archive: {name!r}")


def safe_extract(zip_path: Path, dest_dir: Path, members: tuple[str, ...]) -> dict[str, Path]:
    """Extract ``members`` into ``dest_dir`` (atomically per file), refusing unsafe names."""
    dest = dest_dir.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with zipfile.ZipFile(zip_path) as zf:
        for name in members:
            check_member_name(name)
            target = (dest / name).resolve()
            if not target.is_relative_to(dest):
                raise DownloadError(f"unsafe member name in archive: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.partial")
            with zf.open(name) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            os.replace(tmp, target)
            out[name] = target
    return out
