"""Hostile inputs (issue 8): each is generated here, refused clearly, fast, leaking nothing.

Secrets in URLs and DSNs, zip bombs and lying zip headers, a cache that outlives a fixed
mirror, gzip-encoded and redirected downloads, catalog pickles built to exhaust the CPU, and
deployment JSON nested or sized to exhaust the parser (issue 16).
Speed is measured in bench/fault_bench.py; here a generous timeout only turns "never finishes"
(the behaviour before the fixes) into a failure.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import random
import re
import struct
import traceback
import zipfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import pytest

from cfrec_assets.pipeline.catalog import (
    MAX_CATALOG_BYTES,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_MEMO,
    CatalogError,
    load_catalog_ids,
)
from cfrec_assets.pipeline.downloads import (
    MAX_ARCHIVE_BYTES,
    DownloadError,
    evict,
    fetch_archive,
    member_limit,
    safe_extract,
)
from cfrec_assets.pipeline.movielens_files import ML100K_MEMBERS
from cfrec_serving.redact import (
    REDACTED,
    dsn_password,
    redact_dsn_secrets,
    redact_url,
    redact_url_and_query,
    split_credentials,
)
from cfrec_serving.storage import sha256_file
from cfrec_serving.targets.manifest import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    DeploymentError,
    Promotion,
    parse_json_object,
)
from cfrec_serving.targets.target import open_target
from cfrec_testkit.hostile_artifacts import call_unless_blocked_on
from cfrec_testkit.http_server import FolderServer
from cfrec_testkit.models import promote_version, write_model_version
from cfrec_testkit.movielens_fixtures import write_zip

SECRET = "s3cr3tPW"
BOMB_BYTES = 64 << 20  # 64 MiB of zeros deflate to ~64 KiB

# --- Secrets in URLs and DSNs (cases 1, 2 and 11) -------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@mirror.example:8443/ml/", "https://mirror.example:8443/ml/"),
        ("file://user:s3cret@/srv/ml/", "file:///srv/ml/"),
        ("http://user:s3cret@[::1]:8080/ml/", "http://[::1]:8080/ml/"),
        ("http://user:s3cret@[fe80::1%25eth0]/ml/", "http://[fe80::1%25eth0]/ml/"),
        ("postgresql://user:p@ss:w/rd@db.example:5432/app", "postgresql://db.example:5432/app"),
        ("postgresql+psycopg://user:s3cret@/app?host=/var/run/pg", "postgresql+psycopg:///app?host=/var/run/pg"),
        ("s3://key:s3cret@bucket/ml/", "s3://bucket/ml/"),
        ("https://user:s3cret@host:notaport/ml/", "https://host:notaport/ml/"),
        ("https://mirror.example/ml/", "https://mirror.example/ml/"),
        ("file:///srv/ml/ml-100k.zip", "file:///srv/ml/ml-100k.zip"),
        (
            "postgresql://db.example/app?user=u&password=s3cret",
            f"postgresql://db.example/app?user=u&password={REDACTED}",
        ),
        ("host=db user=u password='s3 cr\\'et' dbname=app", f"host=db user=u password={REDACTED} dbname=app"),
    ],
)
def test_redact_url_drops_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_never_raises_and_never_shows_the_password() -> None:
    rng = random.Random(8)
    alphabet = "ab:/@[]%?#=' 1"
    for _ in range(3_000):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        url = f"{rng.choice(['http', 'file', 'x+y', ''])}://u:PW{junk}@host{junk}/p"
        assert "PW" not in redact_url(url), url
        redact_url(junk)


@pytest.mark.parametrize(
    ("dsn", "password"),
    [
        ("postgresql://user:p@ss:w/rd@db.example:5432/app", "p@ss:w/rd"),
        ("postgresql://user:p%40ss%3Aw%2Frd@db.example:5432/app", "p%40ss%3Aw%2Frd"),
        ("postgresql://user@db.example/app", None),
        ("host=db password='it\\'s s3cret' user=u", "it's s3cret"),
        ("host=db password=plain user=u", "plain"),
    ],
)
def test_dsn_password_is_split_at_the_last_at_before_the_host(dsn: str, password: str | None) -> None:
    assert dsn_password(dsn) == password


def test_dsn_scrub_removes_the_whole_password_in_every_spelling_and_nothing_else() -> None:
    dsn = "postgresql://user:p@ss:w/rd@db.example:5432/app"
    message = (
        f"connection to {dsn} failed: password 'p@ss:w/rd' rejected (sent p%40ss%3Aw%2Frd, "
        "p%40ss%3aw%2frd); passport of user p@ssenger unchanged"
    )
    scrubbed = redact_dsn_secrets(message, dsn)
    for fragment in ("p@ss:w/rd", "p%40ss%3Aw%2Frd", "p%40ss%3aw%2frd", "ss:w", "w/rd"):
        assert fragment not in scrubbed
    assert "postgresql://db.example:5432/app" in scrubbed
    assert "passport of user p@ssenger unchanged" in scrubbed
    assert scrubbed.count(REDACTED) == 3


def test_dsn_scrub_of_keyword_dsn_and_of_nothing() -> None:
    dsn = "host=db user=u password='it\\'s s3cret'"
    assert (
        redact_dsn_secrets(f"bad dsn {dsn}; it's s3cret", dsn)
        == f"bad dsn host=db user=u password={REDACTED}; {REDACTED}"
    )
    assert redact_dsn_secrets("nothing to hide", None) == "nothing to hide"


# --- Downloads: credentials in every error (case 1) -------------------------------------------


def release_zip(path: Path, u_data: bytes = b"1\t1\t5\t874724710\n" * 50) -> Path:
    return write_zip(path, {"ml-100k/u.data": u_data, "ml-100k/u.item": b"1|Toy Story (1995)|01-Jan-1995||x|0\n"})


def with_credentials(url: str) -> str:
    return url.replace("://", f"://user:{SECRET}@", 1)


def _failure(base_url: str, cache: Path) -> str:
    with pytest.raises(DownloadError) as caught:
        fetch_archive(base_url, "ml-100k.zip", cache, ML100K_MEMBERS, timeout_seconds=5)
    return "".join(traceback.format_exception(caught.value))


@pytest.mark.parametrize("failure", ["refused", "http_404", "truncated", "not_a_zip", "missing_member", "bomb"])
def test_download_errors_never_print_the_password(tmp_path: Path, failure: str) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    if failure == "not_a_zip":
        (mirror / "ml-100k.zip").write_bytes(b"<html>login</html>")
    elif failure == "missing_member":
        write_zip(mirror / "ml-100k.zip", {"ml-100k/u.data": b"1\t1\t5\t1\n"})
    elif failure == "bomb":
        write_bomb(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        if failure == "truncated":
            server.state.truncate_to["ml-100k.zip"] = 100
        base = server.url + ("missing/" if failure == "http_404" else "")
        if failure != "refused":
            text = _failure(with_credentials(base), cache)
    if failure == "refused":
        text = _failure(with_credentials(base), cache)
    assert SECRET not in text and "user:" not in text
    assert base.rstrip("/") in text  # still names the input, without its credentials
    assert list(cache.iterdir()) == []


def test_credentials_are_sent_as_a_header_and_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    caplog.set_level(logging.DEBUG)
    with FolderServer(mirror) as server:
        fetch_archive(with_credentials(server.url), "ml-100k.zip", tmp_path / "cache", ML100K_MEMBERS)
    assert server.state.authorizations == ["Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()]
    assert "HTTP Request: GET" in caplog.text and SECRET not in caplog.text


def test_split_credentials_keeps_the_rest_of_the_url() -> None:
    assert split_credentials("https://us%40er:p@ss:w/rd@host:8443/ml/?password=kept") == (
        "https://host:8443/ml/?password=kept",
        ("us@er", "p@ss:w/rd"),
    )
    assert split_credentials("https://host/ml/") == ("https://host/ml/", None)


def test_file_url_with_credentials_is_read_and_errors_stay_redacted(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    archive = fetch_archive(with_credentials(mirror.as_uri() + "/"), "ml-100k.zip", tmp_path / "cache", ML100K_MEMBERS)
    assert archive.source_url == mirror.as_uri() + "/ml-100k.zip" == archive.final_url
    text = _failure(with_credentials((tmp_path / "nowhere").as_uri() + "/"), tmp_path / "cache2")
    assert SECRET not in text and "cannot read" in text


def test_unsupported_scheme_error_is_redacted(tmp_path: Path) -> None:
    text = _failure(f"ftp://user:{SECRET}@mirror.example/ml/", tmp_path / "cache")
    assert SECRET not in text and "ftp://mirror.example/ml/" in text


# --- Downloads: zip bombs and lying headers (case 5) -------------------------------------------


def write_bomb(path: Path, member: str = "ml-100k/u.data", size: int = BOMB_BYTES) -> Path:
    """A release-shaped zip whose ``member`` is ``size`` zero bytes, written in 1 MiB steps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.item", b"1|Toy Story (1995)|01-Jan-1995||x|0\n")
        with zf.open(member, "w") as out:
            for _ in range(size >> 20):
                out.write(bytes(1 << 20))
    return path


def forge_declared_size(path: Path, member: str, size: int, crc: int) -> None:
    """Make both headers of ``member`` claim ``size`` bytes with CRC ``crc`` (a lying header)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    struct.pack_into("<I", data, local + 14, crc)  # local header: CRC, then sizes at +18/+22
    struct.pack_into("<I", data, local + 22, size)
    name = member.encode()
    for found in re.finditer(re.escape(b"PK\x01\x02"), data):
        if data[found.start() + 46 : found.start() + 46 + len(name)] == name:
            struct.pack_into("<I", data, found.start() + 16, crc)  # central entry: CRC, sizes at +20/+24
            struct.pack_into("<I", data, found.start() + 24, size)
    path.write_bytes(bytes(data))


def test_zip_bomb_is_refused_before_inflating_and_never_cached(tmp_path: Path) -> None:
    bomb = write_bomb(tmp_path / "mirror" / "ml-100k.zip")
    assert bomb.stat().st_size < BOMB_BYTES // 100
    cache = tmp_path / "cache"
    limit = f"{member_limit('ml-100k/u.data'):,} bytes"
    with pytest.raises(DownloadError, match=re.escape(f"'ml-100k/u.data' declares {BOMB_BYTES:,}") + ".*" + limit):
        fetch_archive(bomb.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    assert list(cache.iterdir()) == []
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=f"'ml-100k/u.data'.*{limit}"):
        safe_extract(bomb, out, ML100K_MEMBERS)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_lying_header_is_cut_at_its_declared_size(tmp_path: Path) -> None:
    """Headers claim 4 KiB (CRC forged to match those 4 KiB) while the data inflates to 64 MiB."""
    bomb = write_bomb(tmp_path / "mirror" / "ml-100k.zip")
    forge_declared_size(bomb, "ml-100k/u.data", 4096, zlib.crc32(bytes(4096)))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"'ml-100k/u.data' inflates past the 4,096 bytes its header declares"):
        fetch_archive(bomb.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    assert list(cache.iterdir()) == []
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="lying header"):
        safe_extract(bomb, out, ML100K_MEMBERS)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # no partial u.data left


def test_members_within_limits_still_extract(tmp_path: Path) -> None:
    u_data = b"1\t1\t5\t874724710\n" * 100_000  # 2 MB, about the real u.data
    archive = release_zip(tmp_path / "ml-100k.zip", u_data)
    files = safe_extract(archive, tmp_path / "out", ML100K_MEMBERS)
    assert files["ml-100k/u.data"].read_bytes() == u_data


# --- Downloads: the cache follows the source (case 6) --------------------------------------------


def test_changed_source_never_reuses_an_archive_from_another_source(tmp_path: Path) -> None:
    bad = release_zip(tmp_path / "bad" / "ml-100k.zip", b"1\t1\t5\t1\n")  # valid zip, cut-down data
    fixed = release_zip(tmp_path / "fixed" / "ml-100k.zip")
    cache = tmp_path / "cache"
    first = fetch_archive(bad.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    second = fetch_archive(fixed.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    again = fetch_archive(fixed.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    assert first.sha256 == sha256_file(bad) and not second.from_cache
    assert second.sha256 == again.sha256 == sha256_file(fixed) == sha256_file(again.path)
    assert again.from_cache and again.source_url == fixed.parent.as_uri() + "/ml-100k.zip"


def test_cache_replaced_behind_our_back_is_refetched_with_the_hash_of_bytes_used(tmp_path: Path) -> None:
    mirror = release_zip(tmp_path / "mirror" / "ml-100k.zip")
    cache = tmp_path / "cache"
    first = fetch_archive(mirror.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    release_zip(first.path, b"9\t9\t1\t1\n")  # another valid archive in its place
    second = fetch_archive(mirror.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    assert not second.from_cache and second.sha256 == sha256_file(second.path) == sha256_file(mirror)


def test_evict_drops_an_archive_that_failed_validation(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        archive = fetch_archive(server.url, "ml-100k.zip", cache, ML100K_MEMBERS)
        evict(archive)
        assert list(cache.iterdir()) == []
        again = fetch_archive(server.url, "ml-100k.zip", cache, ML100K_MEMBERS)
    assert server.state.requests == ["/ml-100k.zip", "/ml-100k.zip"] and not again.from_cache
    evict(again)
    evict(again)  # idempotent: a second failure handler finds nothing to drop
    assert list(cache.iterdir()) == []


def test_evict_leaves_an_archive_replaced_since(tmp_path: Path) -> None:
    mirror = release_zip(tmp_path / "mirror" / "ml-100k.zip")
    cache = tmp_path / "cache"
    stale = fetch_archive(mirror.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    release_zip(mirror, b"2\t2\t4\t1\n")
    evict(stale)
    fresh = fetch_archive(mirror.parent.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    evict(stale)  # a late handler of the first run's failure
    assert fresh.path.is_file() and sha256_file(fresh.path) == fresh.sha256 != stale.sha256


# --- Downloads: gzip transfer encoding and redirects (case 10, and redirects) --------------------


def test_gzip_encoded_download_is_decoded_not_called_truncated(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    original = release_zip(mirror / "ml-100k.zip", b"1\t1\t5\t874724710\n" * 5_000)
    with FolderServer(mirror) as server:
        server.state.gzip.add("ml-100k.zip")
        archive = fetch_archive(server.url, "ml-100k.zip", tmp_path / "cache", ML100K_MEMBERS)
    assert archive.sha256 == sha256_file(original) and archive.path.read_bytes() == original.read_bytes()


def test_truncated_gzip_body_is_reported_as_truncated(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip", random.Random(3).randbytes(50_000))
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        server.state.gzip.add("ml-100k.zip")
        server.state.truncate_to["ml-100k.zip"] = 10_000
        with pytest.raises(DownloadError, match="truncated"):
            fetch_archive(server.url, "ml-100k.zip", cache, ML100K_MEMBERS)
    assert list(cache.iterdir()) == []


def test_gzip_transport_bomb_stops_at_the_archive_limit(tmp_path: Path) -> None:
    packer = zlib.compressobj(wbits=31)  # gzip framing
    body = b"".join(packer.compress(bytes(1 << 20)) for _ in range(2 * MAX_ARCHIVE_BYTES >> 20)) + packer.flush()
    cache = tmp_path / "cache"
    with FolderServer(tmp_path) as server:
        server.state.gzip_bodies["ml-100k.zip"] = body
        with pytest.raises(DownloadError, match=f"exceeds {MAX_ARCHIVE_BYTES:,} bytes"):
            fetch_archive(server.url, "ml-100k.zip", cache, ML100K_MEMBERS)
    assert list(cache.iterdir()) == []


def test_redirected_download_records_the_url_that_answered(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        server.state.redirects["old/ml-100k.zip"] = "/ml-100k.zip"
        server.state.redirects["old/ml-latest-small.zip"] = "/ml-latest-small.zip"
        base = with_credentials(server.url + "old/")
        first = fetch_archive(base, "ml-100k.zip", cache, ML100K_MEMBERS)
        second = fetch_archive(base, "ml-100k.zip", cache, ML100K_MEMBERS)
        with pytest.raises(DownloadError, match=f"redirected to {re.escape(server.url)}ml-latest-small.zip.*HTTP 404"):
            fetch_archive(base, "ml-latest-small.zip", cache, ML100K_MEMBERS)
    assert first.source_url == server.url + "old/ml-100k.zip"
    assert first.final_url == second.final_url == server.url + "ml-100k.zip"
    assert second.from_cache


# --- Downloads: signed and tokened URLs (issue 16, cause 12) ------------------------------------

SIGNATURE = "X-Amz-Signature=5eCr3751gNaTuRe"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://cdn.example/ml-32m.zip?X-Amz-Signature=abc&X-Amz-Credential=AK",
            "https://cdn.example/ml-32m.zip?[redacted]",
        ),
        ("https://user:pw@cdn.example/get?token=abc#frag", "https://cdn.example/get?[redacted]"),
        ("https://cdn.example/ml.zip#access_token=abc", "https://cdn.example/ml.zip#[redacted]"),
        ("https://cdn.example/ml.zip", "https://cdn.example/ml.zip"),
        ("https://user:p?ss@cdn.example/ml.zip", "https://cdn.example/ml.zip"),  # a '?' in the password is no query
    ],
)
def test_redact_url_and_query_drops_query_fragment_and_userinfo(url: str, shown: str) -> None:
    assert redact_url_and_query(url) == shown


def test_signed_redirect_is_recorded_logged_and_reported_without_its_signature(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    caplog.set_level(logging.DEBUG)
    with FolderServer(mirror) as server:
        server.state.redirects["old/ml-100k.zip"] = f"/ml-100k.zip?{SIGNATURE}"
        server.state.redirects["old/ml-latest-small.zip"] = f"/ml-latest-small.zip?{SIGNATURE}"
        first = fetch_archive(server.url + "old/", "ml-100k.zip", cache, ML100K_MEMBERS)
        second = fetch_archive(server.url + "old/", "ml-100k.zip", cache, ML100K_MEMBERS)
        with pytest.raises(DownloadError) as refused:
            fetch_archive(server.url + "old/", "ml-latest-small.zip", cache, ML100K_MEMBERS)
    assert server.state.requests[1] == f"/ml-100k.zip?{SIGNATURE}"  # the signed URL was followed
    assert first.final_url == second.final_url == server.url + "ml-100k.zip?[redacted]" and second.from_cache
    error = "".join(traceback.format_exception(refused.value))
    assert "ml-latest-small.zip?[redacted]" in error and "HTTP 404" in error
    assert "HTTP Request: GET" in caplog.text and "?[redacted]" in caplog.text  # httpx's own log line
    record = (cache / "ml-100k.zip.source.json").read_text()
    for text in (record, caplog.text, error, repr(first), repr(second)):
        assert "5eCr37" not in text


def test_source_query_is_never_recorded_but_still_tells_sources_apart(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        for token in ("t0ken-one", "t0ken-two"):
            server.state.redirects[f"get?token={token}&file=/ml-100k.zip"] = "/ml-100k.zip"
        first = fetch_archive(server.url + "get?token=t0ken-one&file=", "ml-100k.zip", cache, ML100K_MEMBERS)
        again = fetch_archive(server.url + "get?token=t0ken-one&file=", "ml-100k.zip", cache, ML100K_MEMBERS)
        other = fetch_archive(server.url + "get?token=t0ken-two&file=", "ml-100k.zip", cache, ML100K_MEMBERS)
    assert first.source_url == other.source_url == server.url + "get?[redacted]"
    assert again.from_cache and not other.from_cache  # same shown URL, another query: another source
    assert "t0ken" not in (cache / "ml-100k.zip.source.json").read_text()


def test_a_record_written_with_a_signed_url_is_redacted_when_reused(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    release_zip(mirror / "ml-100k.zip")
    cache = tmp_path / "cache"
    fetch_archive(mirror.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    record_path = cache / "ml-100k.zip.source.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "final_url": f"https://cdn.example/ml-100k.zip?{SIGNATURE}"}))
    reused = fetch_archive(mirror.as_uri(), "ml-100k.zip", cache, ML100K_MEMBERS)
    assert reused.from_cache and reused.final_url == "https://cdn.example/ml-100k.zip?[redacted]"
    assert "5eCr37" not in record_path.read_text()


# --- Catalog pickles built from allowed types to exhaust the machine (case 4) --------------------

PROTO4 = pickle.PROTO + b"\x04"


def get(index: int) -> bytes:
    return pickle.BINGET + bytes([index])


def doubling_tuples_in_frozenset(levels: int, width: int = 2) -> bytes:
    """t0 = (); t(i) = (t(i-1),) * width through memo references; then frozenset({t(levels)}).

    A few hundred bytes for a structure of width**levels leaves, which the frozenset hashes."""
    ops = [PROTO4, pickle.EMPTY_TUPLE, pickle.MEMOIZE]
    for level in range(1, levels + 1):
        ops += [pickle.MARK, get(level - 1) * width, pickle.TUPLE, pickle.MEMOIZE]
    ops += [pickle.MARK, get(levels), pickle.FROZENSET, pickle.STOP]
    return b"".join(ops)


def nested_lists(depth: int) -> bytes:
    return PROTO4 + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + pickle.STOP


def filled_after_use() -> bytes:
    """A list shared 50 times by a tuple, then filled: the tuple grows behind any count."""
    ints = b"".join(pickle.BININT1 + bytes([i]) for i in range(1, 100))
    return b"".join([
        PROTO4, pickle.EMPTY_LIST, pickle.MEMOIZE, pickle.MARK, get(0) * 50, pickle.TUPLE, pickle.POP,
        get(0), pickle.MARK, ints, pickle.APPENDS, pickle.STOP,
    ])  # fmt: skip


def _refused(tmp_path: Path, data: bytes, name: str = "movie_ids.pkl") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CatalogError) as caught:
        load_catalog_ids(path)
    message = str(caught.value)
    assert message.startswith(name) and len(message) < 400
    return message


@pytest.mark.timeout(120, method="thread")
def test_doubling_tuples_in_a_frozenset_are_refused_by_depth(tmp_path: Path) -> None:
    data = doubling_tuples_in_frozenset(60)
    assert len(data) < 500
    assert f"nested deeper than {MAX_DEPTH}" in _refused(tmp_path, data)


@pytest.mark.timeout(120, method="thread")
def test_wide_shared_tuples_are_refused_by_element_count(tmp_path: Path) -> None:
    data = doubling_tuples_in_frozenset(levels=5, width=40)  # 40**5 = 1e8 leaves, depth 6
    assert len(data) < 500
    assert f"more than {MAX_ELEMENTS:,} elements" in _refused(tmp_path, data)


@pytest.mark.timeout(120, method="thread")
def test_deeply_nested_lists_are_refused(tmp_path: Path) -> None:
    assert f"nested deeper than {MAX_DEPTH}" in _refused(tmp_path, nested_lists(100_000))


@pytest.mark.parametrize(
    ("flood", "message"),
    [
        (pickle.EMPTY_LIST * (MAX_CONTAINERS + 1), f"more than {MAX_CONTAINERS:,} containers"),
        (pickle.EMPTY_LIST + pickle.MEMOIZE * (MAX_MEMO + 1), f"more than {MAX_MEMO:,} memo entries"),
        (pickle.MARK * 1_000 + pickle.EMPTY_LIST, f"nested deeper than {MAX_DEPTH}"),
    ],
    ids=["containers", "memo", "marks"],
)
def test_floods_of_cheap_opcodes_are_refused_before_memory_grows(tmp_path: Path, flood: bytes, message: str) -> None:
    assert message in _refused(tmp_path, PROTO4 + flood + pickle.STOP)


def test_container_filled_after_use_is_refused(tmp_path: Path) -> None:
    assert "filled after it was used" in _refused(tmp_path, filled_after_use())


def test_error_messages_show_a_bounded_part_of_the_value(tmp_path: Path) -> None:
    joblib.dump([862, tuple("x" * 1_000 for _ in range(1_000))], tmp_path / "big_entry.pkl")
    assert "entry 1" in _refused(tmp_path, (tmp_path / "big_entry.pkl").read_bytes(), "big_entry.pkl")
    huge_global = PROTO4 + pickle.GLOBAL + b"os" * 50_000 + b"\nsystem\n" + pickle.STOP
    assert "refusing to unpickle" in _refused(tmp_path, huge_global)
    assert "too large" in _refused(tmp_path, pickle.dumps([862, 10**5000]))


def test_oversized_catalog_file_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("[862" + " " * MAX_CATALOG_BYTES + "]")
    assert f"larger than {MAX_CATALOG_BYTES:,} bytes" in _refused(
        tmp_path, (tmp_path / "c.json").read_bytes(), "c.json"
    )


@pytest.mark.parametrize(
    ("suffix", "write"),
    [
        (".pkl", lambda p, ids: joblib.dump(ids, p)),
        (".joblib", lambda p, ids: joblib.dump(np.array(ids, dtype=np.int64), p)),
        (".pkl", lambda p, ids: p.write_bytes(pickle.dumps([str(i) for i in ids], protocol=2))),
        (".pkl", lambda p, ids: p.write_bytes(pickle.dumps(frozenset(ids)))),
        (".json", lambda p, ids: p.write_text(json.dumps(ids))),
    ],
    ids=["joblib-list", "joblib-array", "pickle-strings-protocol2", "pickle-frozenset", "json"],
)
def test_ordinary_catalog_of_10000_ids_still_loads(tmp_path: Path, suffix: str, write) -> None:
    ids = random.Random(4).sample(range(1, 1_000_000), 10_000)
    path = tmp_path / f"movie_ids{suffix}"
    write(path, ids)
    assert load_catalog_ids(path) == sorted(ids)


# --- Deployment JSON (issue 16, cause 4): bounded before it is parsed ---------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[" * 100_000, "nested deeper than 32 levels"),
        (b'{"a": ' + nested(MAX_JSON_DEPTH) + b"}", "nested deeper than 32 levels"),
        (b'{"a": "' + b"x" * MAX_JSON_BYTES + b'"}', f"more than the {MAX_JSON_BYTES:,} allowed"),
        (b'"\\"' + b'\\"' * 100_000, "not JSON"),  # never closed: the scan stops, json.loads refuses
        (b"\xff{}", "not JSON"),
    ],
    ids=["100k-open", "33-deep", "oversized", "unterminated-string", "not-utf8"],
)
def test_hostile_manifest_json_is_refused_with_the_deployment_error(payload: bytes, message: str) -> None:
    with pytest.raises(DeploymentError, match=message):
        parse_json_object(payload, "manifest.json")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"details": {"note": "[" * 1000 + "{" * 1000, "params": nested(MAX_JSON_DEPTH - 2).decode()}})
    assert parse_json_object(text.encode(), "manifest.json")["details"]["note"].startswith("[[[")
    inner = b'{"a": ' + nested(MAX_JSON_DEPTH - 1) + b"}"  # exactly the limit
    assert parse_json_object(inner, "manifest.json")["a"]


def test_promote_refuses_a_deeply_nested_manifest_and_changes_nothing(tmp_path: Path) -> None:
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "manifest.json").write_bytes(b"[" * 100_000)
    tiny = write_model_version(tmp_path / "models")
    with pytest.raises(DeploymentError, match="manifest.json is nested deeper than 32 levels"):
        promotion = Promotion(tiny.version, metrics={}, counts={}, trained_at="2026-11-26T07:15:00+00:00")
        open_target(serving).promote(tiny.path, promotion)
    assert not (serving / "versions").exists()


def test_a_version_json_that_is_a_fifo_is_listed_as_an_error(tmp_path: Path) -> None:
    serving = promote_version(write_model_version(tmp_path / "models"), tmp_path / "serving")
    (version,) = (serving / "versions").iterdir()
    (version / "version.json").unlink()
    os.mkfifo(version / "version.json")
    listed = call_unless_blocked_on(version / "version.json", open_target(serving).list_versions)
    assert "not a regular file (a FIFO)" in listed[0]["error"]
