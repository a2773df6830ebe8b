"""Idempotent, verified downloads of the MovieLens archives.

An archive enters the cache only after it has been verified (a readable zip whose CRCs
check out, holding the expected members, with no unsafe member names and no member larger
than :data:`MEMBER_SIZE_LIMITS` allows), so a truncated, corrupt or bomb download can never
poison the cache: it fails with a clear error, its temp file is removed and the cache is left
as it was.

Members are inflated by hand (:func:`_member_bytes`) rather than through ``ZipFile.open``:
the declared size is checked against the limit before inflating, and the output is counted
while inflating and cut at the declared size, so a header that lies costs at most the limit.

Each cached archive has a sidecar ``<archive>.source.json`` recording the (redacted) URL it
came from, the URL that finally answered (after redirects) and its sha256. A cached archive is
reused only for the same source URL and only if its bytes still hash to the record, so a
changed mirror never inherits another source's archive and the sha256 reported is always that
of the bytes used. :func:`evict` drops an archive whose contents failed validation downstream.

HTTP responses are read raw (``iter_raw``): the raw byte count is compared with
``Content-Length`` and a ``Content-Encoding: gzip`` body is decoded here, with a bounded output
(:data:`MAX_ARCHIVE_BYTES`), instead of by httpx. Every URL in a message, log line, record or
metadata value goes through :func:`cfrec_serving.redact.redact_url_and_query`: no userinfo, and
no query string, which may carry a token or, after a redirect to a CDN, a signature (the record
tells sources apart by a slow digest of their query instead, :func:`_query_digest`). Credentials
in the base URL are sent as an ``Authorization`` header, never as part of a URL that httpx would
log, and httpx's own log line of every request it sends shows the URL redacted too
(:data:`_REQUEST_LOG`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import threading
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import httpx

from cfrec_serving.redact import REDACTED, redact_dsn_secrets, redact_url, redact_url_and_query, split_credentials
from cfrec_serving.storage import sha256_file, write_atomic

CHUNK = 1 << 20
MiB = 1 << 20

# Uncompressed size limits per member: 4x the member's size in the GroupLens release (in the
# comment), rounded up to whole MiB, so a re-packed or slightly grown release still passes.
MEMBER_SIZE_LIMITS: dict[str, int] = {
    "ml-100k/u.data": 8 * MiB,  # 1,979,173 bytes
    "ml-100k/u.item": 1 * MiB,  # 236,344 bytes
    "ml-latest-small/ratings.csv": 10 * MiB,  # 2,483,723 bytes
    "ml-latest-small/movies.csv": 2 * MiB,  # 494,431 bytes
    "ml-latest-small/links.csv": 1 * MiB,  # 197,979 bytes
    # The big releases (2x, they are large): ml-32m (2024) and ml-latest (updated by GroupLens).
    "ml-32m/ratings.csv": 2048 * MiB,  # 877 MB
    "ml-32m/movies.csv": 16 * MiB,  # 4.2 MB
    "ml-32m/links.csv": 8 * MiB,  # 1.9 MB
    "ml-32m/tags.csv": 256 * MiB,  # 72 MB
    "ml-latest/ratings.csv": 2048 * MiB,  # 891 MB
    "ml-latest/movies.csv": 16 * MiB,  # 3.0 MB
    "ml-latest/links.csv": 8 * MiB,  # 1.4 MB
    "ml-latest/tags.csv": 256 * MiB,  # 39 MB
    "ml-latest/genome-scores.csv": 1024 * MiB,  # 436 MB
    "ml-latest/genome-tags.csv": 1 * MiB,
}
# Any other member: the largest in either release is ml-100k/ua.base (1,792,501 bytes).
DEFAULT_MEMBER_LIMIT = 8 * MiB
# All members together (ml-100k holds 15.9 MB uncompressed) and the archive itself (4.9 MB).
ARCHIVE_CONTENT_LIMIT = 64 * MiB
MAX_ARCHIVE_BYTES = 64 * MiB
# Per archive name: (archive bytes, all members uncompressed); others get the two above.
ARCHIVE_LIMITS: dict[str, tuple[int, int]] = {
    "ml-32m.zip": (512 * MiB, 3072 * MiB),  # 239 MB; 1.0 GB uncompressed
    "ml-latest.zip": (1024 * MiB, 4096 * MiB),  # 335 MB; 1.4 GB uncompressed
}
MAX_MEMBERS = 1_000  # ml-100k has 24
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then name and extra field lengths


class DownloadError(RuntimeError):
    """A download failed or produced an archive that cannot be trusted."""


class _RedactedRequestLog(logging.Filter):
    """httpx logs the URL of every request it sends at INFO, each redirect it follows included,
    and httpcore the response headers at DEBUG, ``Location`` included, so a signed redirect would
    show its signature. While :meth:`active` in a thread, that thread's records from them show
    URLs without query strings or userinfo; other users of httpx are left alone."""

    LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")
    _QUERY_OR_USERINFO = re.compile(r"(\?)[^\s'\"]+|(://)[^\s'\"/@]*@")

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    @contextmanager
    def active(self) -> Iterator[None]:
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._local, "on", False):
            try:
                text = record.getMessage()
            except (TypeError, ValueError):  # a malformed record is logging's to report, never the download's
                return True
            record.msg = self._QUERY_OR_USERINFO.sub(lambda m: m.group(2) or m.group(1) + REDACTED, text)
            record.args = ()
        return True


_REQUEST_LOG = _RedactedRequestLog()


@dataclass(frozen=True)
class CachedArchive:
    """A verified archive in the cache. URLs are redacted (no ``user:password@``, no query string)."""

    path: Path
    sha256: str
    source_url: str  # the URL asked for
    from_cache: bool
    bytes: int
    final_url: str  # the URL that answered, after redirects


def archive_url(base_url: str, filename: str) -> str:
    """Join a base URL (``http(s)://`` or ``file://``) and an archive name."""
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(
            f"unsupported download base URL scheme {scheme!r} in {redact_url_and_query(base_url)!r}: "
            "use http://, https:// or file://"
        )
    return base_url.rstrip("/") + "/" + urllib.parse.quote(filename)


def archive_limits(filename: str) -> tuple[int, int]:
    """(largest archive, largest total uncompressed content) accepted for ``filename``."""
    return ARCHIVE_LIMITS.get(filename, (MAX_ARCHIVE_BYTES, ARCHIVE_CONTENT_LIMIT))


def member_limit(name: str) -> int:
    """The largest uncompressed size accepted for archive member ``name``."""
    return MEMBER_SIZE_LIMITS.get(name, DEFAULT_MEMBER_LIMIT)


def fetch_archive(
    base_url: str,
    filename: str,
    cache_dir: Path,
    required_members: tuple[str, ...],
    timeout_seconds: float = 60.0,
) -> CachedArchive:
    """Return the cached archive for this source, downloading and verifying it first if needed.

    The cache holds one ``filename`` per ``cache_dir``: it is reused only when its record names
    the same source URL and its bytes still hash to the recorded sha256; otherwise a fresh copy
    replaces it once verified. A failed download leaves the cache as it was. The returned URLs
    are redacted; ``final_url`` is the one that answered after redirects.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / filename
    url = archive_url(base_url, filename)
    return _reuse(target, url, required_members) or _download(url, target, required_members, timeout_seconds)


def evict(archive: CachedArchive) -> None:
    """Drop a cached archive (and its record) whose contents failed validation downstream,
    so the next run downloads it again instead of reusing it. Only if the cache still holds
    those bytes: an archive another run has meanwhile replaced is left alone."""
    try:
        if sha256_file(archive.path) != archive.sha256:
            return
    except FileNotFoundError:
        return
    _record_path(archive.path).unlink(missing_ok=True)
    archive.path.unlink(missing_ok=True)


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".source.json")


def _query_digest(url: str) -> str | None:
    """What tells apart two sources whose redacted URLs are the same (``...?[redacted]``): a salted,
    deliberately slow digest of the query (scrypt, tens of ms), so the record never holds a token, and a short
    one cannot be found from it by trying candidates quickly. None when the URL has no query."""
    query = urllib.parse.urlsplit(redact_url(url)).query
    if not query:
        return None
    return hashlib.scrypt(query.encode(), salt=b"cfrec download source", n=2**14, r=8, p=1).hex()


def _source_record(url: str) -> dict[str, str | None]:
    return {"source_url": redact_url_and_query(url), "source_query_digest": _query_digest(url)}


def _reuse(target: Path, url: str, required_members: tuple[str, ...]) -> CachedArchive | None:
    """The cached archive if it came from ``url`` and still hashes to its record."""
    try:
        record = json.loads(_record_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no record (a cache older than records, or an interrupted write): refetch
    if not isinstance(record, dict) or not target.is_file():
        return None
    source = _source_record(url)
    if any(record.get(key) != value for key, value in source.items()):
        return None
    try:
        verify_archive(target, required_members, name=target.name)
    except DownloadError:
        return None  # only reachable if someone edited the cache by hand: fetch a fresh copy
    digest = sha256_file(target)
    if digest != record.get("sha256"):
        return None
    final_url = redact_url_and_query(str(record.get("final_url") or source["source_url"]))
    if final_url != record.get("final_url"):  # written before query strings were redacted: rewrite it
        _write_record(target, {**record, "final_url": final_url})
    return CachedArchive(target, digest, source["source_url"], True, target.stat().st_size, final_url)


def _write_record(target: Path, record: dict) -> None:
    write_atomic(_record_path(target), lambda p: p.write_text(json.dumps(record, indent=1), encoding="utf-8"))


def _download(url: str, target: Path, required_members: tuple[str, ...], timeout_seconds: float) -> CachedArchive:
    source = _source_record(url)
    source_url = source["source_url"]
    got: dict[str, str] = {}

    def fill(tmp: Path) -> None:  # a failure here leaves the cache as it was (storage.write_atomic)
        with tmp.open("wb") as out:
            got["final_url"] = _stream(url, out, timeout_seconds, archive_limits(target.name)[0])
        verify_archive(tmp, required_members, source=source_url, name=target.name)
        got["sha256"] = sha256_file(tmp)
        _record_path(target).unlink(missing_ok=True)  # no moment where a record names other bytes

    write_atomic(target, fill)
    _write_record(target, {**source, **got})
    return CachedArchive(target, got["sha256"], source_url, False, target.stat().st_size, got["final_url"])


def _stream(url: str, out: BinaryIO, timeout_seconds: float, max_bytes: int = MAX_ARCHIVE_BYTES) -> str:
    """Write the body at ``url`` to ``out``; return the redacted URL that answered."""
    shown = redact_url_and_query(url)
    if urllib.parse.urlsplit(url).scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(redact_url(url)).path))
        try:
            with path.open("rb") as src:
                sink = _BoundedSink(out, shown, None, max_bytes)
                while chunk := src.read(CHUNK):
                    sink.write(chunk)
        except OSError as exc:
            raise DownloadError(f"cannot read {shown}: {exc.strerror or exc}") from None
        return shown
    # Credentials go in an Authorization header: httpx logs the request URL at INFO level.
    bare_url, credentials = split_credentials(url)
    try:
        with (
            _REQUEST_LOG.active(),
            httpx.stream(
                "GET",
                bare_url,
                auth=credentials,
                timeout=timeout_seconds,
                follow_redirects=True,
                headers={"Accept-Encoding": "gzip"},
            ) as resp,
        ):
            return _receive(resp, shown, out, max_bytes)
    except httpx.RemoteProtocolError as exc:
        raise DownloadError(f"GET {shown} was truncated: {redact_dsn_secrets(str(exc), url)}") from None
    except httpx.HTTPError as exc:
        raise DownloadError(f"GET {shown} failed: {type(exc).__name__}: {redact_dsn_secrets(str(exc), url)}") from None


def _receive(resp: httpx.Response, shown: str, out: BinaryIO, max_bytes: int) -> str:
    final_url = redact_url_and_query(str(resp.url))
    where = shown if final_url == shown else f"{shown} (redirected to {final_url})"
    if resp.status_code != 200:
        raise DownloadError(f"GET {where} returned HTTP {resp.status_code}")
    expected = _content_length(resp, where)
    sink = _BoundedSink(out, where, _transport_decoder(resp, where), max_bytes)
    received = 0
    for raw in resp.iter_raw(CHUNK):
        received += len(raw)
        sink.write(raw)
    # Content-Length counts the bytes on the wire, so compare it with the raw count, not the decoded one.
    if expected is not None and received != expected:
        raise DownloadError(f"GET {where} was truncated: received {received} of {expected} bytes")
    sink.close()
    return final_url


def _content_length(resp: httpx.Response, where: str) -> int | None:
    value = resp.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise DownloadError(f"GET {where}: invalid Content-Length {value[:40]!r}")
    return int(value)


def _transport_decoder(resp: httpx.Response, where: str):
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    raise DownloadError(f"GET {where}: unsupported Content-Encoding {encoding[:40]!r} (only gzip was accepted)")


class _BoundedSink:
    """Writes a body to a file, gunzipping it if asked, refusing more than MAX_ARCHIVE_BYTES."""

    def __init__(self, out: BinaryIO, where: str, inflater, max_bytes: int = MAX_ARCHIVE_BYTES) -> None:
        self.out, self.where, self.inflater, self.size = out, where, inflater, 0
        self.max_bytes = max_bytes

    def write(self, raw: bytes) -> None:
        if self.inflater is None:
            self._emit(raw)
            return
        try:
            while raw:  # max_length bounds the memory a gzip bomb can claim per call
                self._emit(self.inflater.decompress(raw, CHUNK))
                raw = self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise DownloadError(f"GET {self.where}: corrupt gzip body ({exc})") from None

    def close(self) -> None:
        if self.inflater is not None:
            self._emit(self.inflater.flush())
            if not self.inflater.eof:
                raise DownloadError(f"GET {self.where} was truncated: the gzip body ends early")

    def _emit(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise DownloadError(f"{self.where}: archive exceeds {self.max_bytes:,} bytes")
        self.out.write(data)


def verify_archive(
    path: Path, required_members: tuple[str, ...], source: str | None = None, name: str | None = None
) -> None:
    """Raise DownloadError unless ``path`` is an intact zip holding ``required_members``,
    within the size limits of archive ``name`` (default: the file's name). Every member is
    inflated (and counted) to check its CRC."""
    where = redact_url_and_query(source) if source else str(path)
    try:
        with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
            infos = zf.infolist()
            _check_listing(infos, where, archive_limits(name or path.name)[1])
            for info in infos:
                for _ in _member_bytes(fh, info, where):
                    pass
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{where}: not a readable zip archive ({exc})") from None
    names = {info.filename for info in infos}
    missing = [m for m in required_members if m not in names]
    if missing:
        raise DownloadError(f"{where}: archive lacks required member(s) {', '.join(missing)}")


def _check_listing(infos: list[zipfile.ZipInfo], where: str, content_limit: int = ARCHIVE_CONTENT_LIMIT) -> None:
    """Names, member count and declared sizes, before anything is inflated."""
    if len(infos) > MAX_MEMBERS:
        raise DownloadError(f"{where}: archive lists {len(infos):,} members, over the limit of {MAX_MEMBERS:,}")
    for info in infos:
        check_member_name(info.filename)
        _check_declared(info, where)
    total = sum(info.file_size for info in infos)
    if total > content_limit:
        raise DownloadError(
            f"{where}: members declare {total:,} bytes uncompressed, over the archive limit of {content_limit:,} bytes"
        )


def _check_declared(info: zipfile.ZipInfo, where: str) -> None:
    name, limit = info.filename, member_limit(info.filename)
    if info.file_size > limit:
        raise DownloadError(
            f"{where}: member {name!r} declares {info.file_size:,} bytes uncompressed, "
            f"over its limit of {limit:,} bytes"
        )
    if info.flag_bits & 0x1:
        raise DownloadError(f"{where}: member {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DownloadError(f"{where}: member {name!r} uses unsupported compression method {info.compress_type}")


def _member_bytes(fh: BinaryIO, info: zipfile.ZipInfo, where: str) -> Iterator[bytes]:
    """The member's bytes, counted while inflating and cut at its declared size (itself within
    the limit): a header that understates the size cannot make us inflate more."""
    _check_declared(info, where)
    name, limit = info.filename, member_limit(info.filename)
    produced, crc = 0, 0
    try:
        for data in _inflate(fh, info):
            produced += len(data)
            if produced > info.file_size:
                raise DownloadError(
                    f"{where}: member {name!r} inflates past the {info.file_size:,} bytes its header declares "
                    f"(limit {limit:,} bytes): refusing a lying header"
                )
            crc = zlib.crc32(data, crc)
            yield data
    except zlib.error as exc:
        raise DownloadError(f"{where}: corrupt archive, member {name!r} does not inflate ({exc})") from None
    if produced != info.file_size or crc != info.CRC:
        raise DownloadError(f"{where}: corrupt archive, bad CRC or size in member {name!r}")


def _inflate(fh: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    raw = _raw_chunks(fh, info)
    if info.compress_type == zipfile.ZIP_STORED:
        yield from raw
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    for chunk in raw:
        while chunk:  # max_length: at most CHUNK bytes of output per call, however dense the input
            yield inflater.decompress(chunk, CHUNK)
            chunk = inflater.unconsumed_tail
    yield inflater.flush()
    if not inflater.eof:
        raise zlib.error("the deflate stream ends early")


def _raw_chunks(fh: BinaryIO, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's compressed bytes, located through its local header as ZipFile does."""
    fh.seek(info.header_offset)
    header = fh.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for member {info.filename!r}")
    _, name_len, extra_len = _LOCAL_HEADER.unpack(header)
    fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    left = info.compress_size
    while left > 0:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise EOFError(f"member {info.filename!r} is cut short")
        left -= len(chunk)
        yield chunk


def check_member_name(name: str) -> None:
    """Refuse absolute paths and ``..`` components (zip-slip)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise DownloadError(f"unsafe member name in archive: {name!r}")


def safe_extract(zip_path: Path, dest_dir: Path, members: tuple[str, ...]) -> dict[str, Path]:
    """Extract ``members`` into ``dest_dir`` (atomically per file), refusing unsafe names and
    members over their size limit; a refused member leaves no partial file behind."""
    dest = dest_dir.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    where = str(zip_path)
    try:
        with zipfile.ZipFile(zip_path) as zf, zip_path.open("rb") as fh:
            for name in members:
                out[name] = _extract_member(zf, fh, name, dest, where)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{where}: not a readable zip archive ({exc})") from None
    return out


def _extract_member(zf: zipfile.ZipFile, fh: BinaryIO, name: str, dest: Path, where: str) -> Path:
    check_member_name(name)
    target = (dest / name).resolve()
    if not target.is_relative_to(dest):
        raise DownloadError(f"unsafe member name in archive: {name!r}")
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise DownloadError(f"{where}: archive lacks member {name}") from None

    def fill(tmp: Path) -> None:
        with tmp.open("wb") as dst:
            for data in _member_bytes(fh, info, where):
                dst.write(data)

    write_atomic(target, fill)
    return target
