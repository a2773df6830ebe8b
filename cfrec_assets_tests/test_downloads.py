"""Downloads over real HTTP from a loopback server, and through file:// URLs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cfrec_assets.pipeline.downloads import DownloadError, archive_url, fetch_archive, safe_extract, sha256_file
from cfrec_testkit.http_server import FolderServer
from cfrec_testkit.movielens_fixtures import write_zip

MEMBERS = ("ml-100k/u.data", "ml-100k/u.item")
# Incompressible, so a flipped byte or a cut lands inside member data, not in slack.
ITEM_BYTES = random.Random(7).randbytes(20_000)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    folder = tmp_path / "mirror"
    write_zip(folder / "ml-100k.zip", {"ml-100k/u.data": b"1\t1\t5\t1\n" * 500, "ml-100k/u.item": ITEM_BYTES})
    return folder


def test_first_download_then_cache_hit_makes_no_request(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        first = fetch_archive(server.url, "ml-100k.zip", cache, MEMBERS)
        second = fetch_archive(server.url, "ml-100k.zip", cache, MEMBERS)
    assert server.state.requests == ["/ml-100k.zip"]
    assert not first.from_cache and second.from_cache
    assert first.sha256 == second.sha256 == sha256_file(mirror / "ml-100k.zip")
    assert first.source_url == server.url + "ml-100k.zip"
    assert first.final_url == first.source_url
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.zip", "ml-100k.zip.source.json"]


def test_truncated_download_fails_clearly_and_leaves_cache_untouched(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FolderServer(mirror) as server:
        server.state.truncate_to["ml-100k.zip"] = 5_000
        with pytest.raises(DownloadError, match="truncated|not a readable zip"):
            fetch_archive(server.url, "ml-100k.zip", cache, MEMBERS)
    assert list(cache.iterdir()) == []


def test_corrupt_archive_is_refused_and_good_cache_survives(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good = fetch_archive(mirror.as_uri(), "ml-100k.zip", cache, MEMBERS)
    before = good.path.read_bytes()
    data = bytearray((mirror / "ml-100k.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (mirror / "ml-100k.zip").write_bytes(bytes(data))
    other_cache = tmp_path / "other"
    with FolderServer(mirror) as server, pytest.raises(DownloadError, match="corrupt|not a readable zip"):
        fetch_archive(server.url, "ml-100k.zip", other_cache, MEMBERS)
    assert list(other_cache.iterdir()) == []
    assert good.path.read_bytes() == before


def test_not_a_zip_and_missing_member_are_refused(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ml-100k.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not a readable zip"):
        fetch_archive(mirror.as_uri(), "ml-100k.zip", tmp_path / "c1", MEMBERS)
    write_zip(mirror / "ml-100k.zip", {"ml-100k/u.data": b"1\t1\t5\t1\n"})
    with pytest.raises(DownloadError, match="lacks required member.*u.item"):
        fetch_archive(mirror.as_uri(), "ml-100k.zip", tmp_path / "c2", MEMBERS)
    assert list((tmp_path / "c1").iterdir()) == [] and list((tmp_path / "c2").iterdir()) == []


def test_http_error_status_is_reported(mirror: Path, tmp_path: Path) -> None:
    with FolderServer(mirror) as server, pytest.raises(DownloadError, match="HTTP 404"):
        fetch_archive(server.url, "ml-latest-small.zip", tmp_path / "cache", MEMBERS)


def test_unreachable_server_is_reported(tmp_path: Path) -> None:
    with FolderServer(tmp_path) as server:
        url = server.url
    with pytest.raises(DownloadError, match="failed: ConnectError"):
        fetch_archive(url, "ml-100k.zip", tmp_path / "cache", MEMBERS, timeout_seconds=2)


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil", "ml-100k/../../evil", "C:/evil"])
def test_zip_slip_member_is_refused_before_caching(tmp_path: Path, member: str) -> None:
    mirror = tmp_path / "mirror"
    write_zip(mirror / "ml-100k.zip", {"ml-100k/u.data": b"1", "ml-100k/u.item": b"1", member: b"pwned"})
    with pytest.raises(DownloadError, match="unsafe member name"):
        fetch_archive(mirror.as_uri(), "ml-100k.zip", tmp_path / "cache", MEMBERS)
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(DownloadError, match="unsafe member name"):
        safe_extract(mirror / "ml-100k.zip", tmp_path / "out", (member,))
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_writes_members(mirror: Path, tmp_path: Path) -> None:
    files = safe_extract(mirror / "ml-100k.zip", tmp_path / "out", MEMBERS)
    assert files["ml-100k/u.item"].read_bytes() == ITEM_BYTES


def test_base_url_schemes() -> None:
    assert archive_url("https://files.grouplens.org/datasets/movielens", "ml-100k.zip").endswith(
        "/movielens/ml-100k.zip"
    )
    assert archive_url("file:///srv/mirror/", "ml-100k.zip") == "file:///srv/mirror/ml-100k.zip"
    with pytest.raises(DownloadError, match="unsupported download base URL scheme 'ftp'"):
        archive_url("ftp://example.org/", "ml-100k.zip")


def test_hand_corrupted_cache_is_replaced(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(b"garbage")
    result = fetch_archive(mirror.as_uri(), "ml-100k.zip", cache, MEMBERS)
    assert not result.from_cache
    assert result.sha256 == sha256_file(mirror / "ml-100k.zip")
