"""Fault-injection benchmark: run every hostile input of issue 8 once and report how it went.

```sh
.venv/bin/python bench/fault_bench.py            # all cases, ~30 s
.venv/bin/python bench/fault_bench.py bomb gzip  # only cases whose name contains a word
```

Each case is a :class:`Case` in :data:`CASES`: an optional ``prepare(tmp)`` that builds its
hostile input in a fresh temporary folder (run in this process, not measured), and an
``attack(tmp)`` that feeds it to the project and raises ``AssertionError`` if the defence did
not hold (a leak, a wrong result, something left behind). ``attack`` runs in a fresh
``spawn``-ed child process, so "peak MB" is that child's peak RSS from
``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the case plus the interpreter and imports (the
``baseline`` line, a child that only imports, shows that part). "seconds" is the wall time of
``attack`` alone. A case that runs past ``--timeout`` is killed and reported as failed.

Inputs are generated here or by the test kit (nothing from MovieLens), so adding a case is one
function and one :data:`CASES` entry. The gate's "another run is still checking" case is
covered by ``cfrec_assets_tests/test_hostile_pipeline.py``; its overlapping-runs case runs two
in-process runs in threads inside the child (``cfrec_testkit.graph.interleave``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import multiprocessing
import os
import pickle
import resource
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pandas as pd

from cfrec_assets.defs.checks import svd_artifacts_load_and_predict
from cfrec_assets.defs.supabase_io import SupabaseResource
from cfrec_assets.defs.supabase_io.table import validate_ratings
from cfrec_assets.pipeline.catalog import CatalogError, load_catalog_ids
from cfrec_assets.pipeline.downloads import MAX_ARCHIVE_BYTES, DownloadError, evict, fetch_archive, member_limit
from cfrec_assets.pipeline.movielens_files import ML100K_MEMBERS
from cfrec_assets.pipeline.records import ModelVersion
from cfrec_assets.schema import APP_RATING_COLUMNS
from cfrec_serving.artifacts import MANIFEST_FILE, MODEL_FILE, SERVING_FILE, VERSIONS_DIR
from cfrec_serving.loader import ServingError, default_cache_dir, load_deployed, load_version
from cfrec_serving.redact import redact_dsn_secrets, redact_url
from cfrec_serving.storage import sha256_file
from cfrec_serving.targets.folder import file_records
from cfrec_serving.targets.manifest import DeploymentError, Promotion
from cfrec_serving.targets.target import open_target
from cfrec_serving.watcher import DeployedModelWatcher
from cfrec_testkit.graph import UP_TO_COMBINED, gate_refusal, interleave, make_graph_env, recorded_target
from cfrec_testkit.hostile_artifacts import npz_with_member
from cfrec_testkit.models import promote_version, version_name, write_model_version
from cfrec_testkit.s3_server import s3_server

SECRET = "s3cr3tPW"
ARCHIVE = "ml-100k.zip"
BOMB_MIB = 1024  # the bomb: u.data inflating to 1 GiB


@dataclass(frozen=True)
class Case:
    name: str
    attack: Callable[[Path], None]
    prepare: Callable[[Path], None] | None = None


# --- Inputs -----------------------------------------------------------------------------------


def release_zip(path: Path, u_data: bytes = b"1\t1\t5\t874724710\n" * 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", u_data)
        zf.writestr("ml-100k/u.item", b"1|Toy Story (1995)|01-Jan-1995||x|0\n")
    return path


def bomb_zip(path: Path, mib: int = BOMB_MIB) -> Path:
    """Release-shaped, with a u.data of ``mib`` MiB of zeros (about 1 MB of deflate per GiB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.item", b"1|Toy Story (1995)|01-Jan-1995||x|0\n")
        with zf.open("ml-100k/u.data", "w", force_zip64=True) as out:
            zeros = bytes(1 << 20)
            for _ in range(mib):
                out.write(zeros)
    return path


def lie_about_size(path: Path, member: str, size: int) -> None:
    """Make both headers of ``member`` claim ``size`` bytes, CRC forged to match them."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    crc = zlib.crc32(bytes(size)).to_bytes(4, "little")
    local = info.header_offset
    data[local + 14 : local + 18] = crc
    name = member.encode()
    start = 0
    while (found := data.find(b"PK\x01\x02", start)) >= 0:
        if data[found + 46 : found + 46 + len(name)] == name:
            data[found + 16 : found + 20] = crc
            central_extra = int.from_bytes(data[found + 30 : found + 32], "little")
            extra_at = found + 46 + len(name)
            # zip64: the real sizes live in the extra field (id 1); patch the uncompressed one.
            if data[extra_at : extra_at + 2] == b"\x01\x00" and central_extra:
                data[extra_at + 4 : extra_at + 12] = size.to_bytes(8, "little")
            else:
                data[found + 24 : found + 28] = size.to_bytes(4, "little")
        start = found + 4
    path.write_bytes(bytes(data))


def with_credentials(url: str) -> str:
    return url.replace("://", f"://user:{SECRET}@", 1)


class Mirror:
    """A loopback HTTP server for ``folder``: ``gzip_paths`` are sent gzip-encoded, ``gzip_bodies``
    sent as given with ``Content-Encoding: gzip``, ``redirects`` answer 302, ``truncate`` paths
    announce the full length and stop early."""

    def __init__(self, folder: Path, gzip_paths=(), gzip_bodies=None, redirects=None, truncate=None) -> None:
        options = {
            "gzip": set(gzip_paths),
            "gzip_bodies": dict(gzip_bodies or {}),
            "redirects": dict(redirects or {}),
            "truncate": dict(truncate or {}),
        }
        handler = partial(_MirrorHandler, directory=str(folder), options=options)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> Mirror:
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _MirrorHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, options: dict, **kwargs) -> None:
        self.options = options
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if name in self.options["redirects"]:
            self._send(302, b"", {"Location": self.options["redirects"][name]})
        elif name in self.options["gzip_bodies"]:
            self._send(200, self.options["gzip_bodies"][name], {"Content-Encoding": "gzip"})
        elif name in self.options["gzip"]:
            self._send(200, gzip.compress(Path(self.directory, name).read_bytes()), {"Content-Encoding": "gzip"})
        elif name in self.options["truncate"]:
            body = Path(self.directory, name).read_bytes()
            self._send(200, body[: self.options["truncate"][name]], {"Content-Length": str(len(body))})
            self.close_connection = True
        else:
            super().do_GET()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


# --- Checks shared by the download cases --------------------------------------------------------


def expect_refusal(base_url: str, cache: Path, *fragments: str) -> str:
    """Fetch must fail with a DownloadError whose whole traceback holds no secret, names every
    ``fragment``, and leaves the cache empty."""
    try:
        fetch_archive(base_url, ARCHIVE, cache, ML100K_MEMBERS, timeout_seconds=5)
    except DownloadError as exc:
        text = "".join(traceback.format_exception(exc))
    else:
        raise AssertionError("the hostile download was accepted")
    assert SECRET not in text, f"password leaked: {text[-300:]}"
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not named in: {text[-300:]}"
    assert not cache.exists() or not any(cache.iterdir()), f"left behind: {list(cache.iterdir())}"
    return text


def _prepare_release(tmp: Path) -> None:
    release_zip(tmp / "mirror" / ARCHIVE)


# --- Cases --------------------------------------------------------------------------------------


def credentials_refused(tmp: Path) -> None:
    with Mirror(tmp) as server:
        url = server.url
    expect_refusal(with_credentials(url), tmp / "cache", url.rstrip("/"))


def credentials_http_404(tmp: Path) -> None:
    with Mirror(tmp / "mirror") as server:
        expect_refusal(with_credentials(server.url + "gone/"), tmp / "cache", "HTTP 404", server.url)


def credentials_truncated(tmp: Path) -> None:
    with Mirror(tmp / "mirror", truncate={ARCHIVE: 100}) as server:
        expect_refusal(with_credentials(server.url), tmp / "cache", "truncated", server.url)


def credentials_not_a_zip(tmp: Path) -> None:
    (tmp / "mirror" / ARCHIVE).write_bytes(b"<html>please log in</html>")
    with Mirror(tmp / "mirror") as server:
        expect_refusal(with_credentials(server.url), tmp / "cache", "not a readable zip", server.url)


def dsn_password_with_at_colon_slash(tmp: Path) -> None:
    dsn = "postgresql://user:p@ss:w/rd@db.example:5432/app"
    text = redact_dsn_secrets(f"connect {dsn}: password p@ss:w/rd (p%40ss%3Aw%2Frd) rejected; passport p@ssenger", dsn)
    for fragment in ("p@ss:w/rd", "p%40ss%3Aw%2Frd", "ss:w", "w/rd"):
        assert fragment not in text, text
    assert "postgresql://db.example:5432/app" in text and "passport p@ssenger" in text, text


def file_url_with_credentials(tmp: Path) -> None:
    base = with_credentials((tmp / "mirror").as_uri() + "/")
    assert redact_url("file://user:pw@/srv/ml/") == "file:///srv/ml/"
    archive = fetch_archive(base, ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    assert SECRET not in repr(archive) and archive.sha256 == sha256_file(tmp / "mirror" / ARCHIVE)


def zip_bomb(tmp: Path) -> None:
    expect_refusal((tmp / "mirror").as_uri(), tmp / "cache", "'ml-100k/u.data'", f"{member_limit('ml-100k/u.data'):,}")


def lying_zip_header(tmp: Path) -> None:
    expect_refusal((tmp / "mirror").as_uri(), tmp / "cache", "'ml-100k/u.data'", "lying header")


def _prepare_bomb(tmp: Path) -> None:
    bomb_zip(tmp / "mirror" / ARCHIVE)


def _prepare_lying_bomb(tmp: Path) -> None:
    lie_about_size(bomb_zip(tmp / "mirror" / ARCHIVE), "ml-100k/u.data", 4096)


def cached_archive_from_another_source(tmp: Path) -> None:
    bad = release_zip(tmp / "bad" / ARCHIVE, b"1\t1\t5\t1\n")
    fixed = release_zip(tmp / "fixed" / ARCHIVE)
    fetch_archive(bad.parent.as_uri(), ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    archive = fetch_archive(fixed.parent.as_uri(), ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    assert not archive.from_cache, "reused the archive of another source"
    assert archive.sha256 == sha256_file(fixed) == sha256_file(archive.path)


def evict_after_failed_validation(tmp: Path) -> None:
    archive = fetch_archive((tmp / "mirror").as_uri(), ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    evict(archive)
    again = fetch_archive((tmp / "mirror").as_uri(), ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    assert not again.from_cache, "an evicted archive was reused"


def gzip_encoded_download(tmp: Path) -> None:
    with Mirror(tmp / "mirror", gzip_paths={ARCHIVE}) as server:
        archive = fetch_archive(server.url, ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    assert archive.sha256 == sha256_file(tmp / "mirror" / ARCHIVE)


def gzip_transport_bomb(tmp: Path) -> None:
    body = (tmp / "body.gz").read_bytes()
    with Mirror(tmp / "mirror", gzip_bodies={ARCHIVE: body}) as server:
        expect_refusal(server.url, tmp / "cache", f"exceeds {MAX_ARCHIVE_BYTES:,} bytes")


def _prepare_gzip_bomb(tmp: Path) -> None:
    packer = zlib.compressobj(wbits=31)  # gzip framing
    with (tmp / "body.gz").open("wb") as out:
        for _ in range(BOMB_MIB):
            out.write(packer.compress(bytes(1 << 20)))
        out.write(packer.flush())


def redirected_download(tmp: Path) -> None:
    with Mirror(tmp / "mirror", redirects={f"old/{ARCHIVE}": f"/{ARCHIVE}"}) as server:
        archive = fetch_archive(with_credentials(server.url + "old/"), ARCHIVE, tmp / "cache", ML100K_MEMBERS)
    assert archive.final_url == server.url + ARCHIVE, archive.final_url
    assert SECRET not in repr(archive)


def expect_catalog_refusal(tmp: Path, data: bytes, fragment: str) -> None:
    path = tmp / "movie_ids.pkl"
    path.write_bytes(data)
    try:
        load_catalog_ids(path)
    except CatalogError as exc:
        assert fragment in str(exc) and len(str(exc)) < 400, str(exc)[:400]
    else:
        raise AssertionError("the hostile catalog was accepted")


def _get(index: int) -> bytes:
    return pickle.BINGET + bytes([index])


def _shared_tuples(levels: int, width: int) -> bytes:
    ops = [pickle.PROTO + b"\x04", pickle.EMPTY_TUPLE, pickle.MEMOIZE]
    for level in range(1, levels + 1):
        ops += [pickle.MARK, _get(level - 1) * width, pickle.TUPLE, pickle.MEMOIZE]
    return b"".join([*ops, pickle.MARK, _get(levels), pickle.FROZENSET, pickle.STOP])


def catalog_doubling_tuples(tmp: Path) -> None:
    expect_catalog_refusal(tmp, _shared_tuples(60, 2), "nested deeper")


def catalog_wide_shared_tuples(tmp: Path) -> None:
    expect_catalog_refusal(tmp, _shared_tuples(5, 40), "elements")


def catalog_nested_lists(tmp: Path) -> None:
    depth = 100_000
    expect_catalog_refusal(tmp, b"\x80\x04" + pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1) + b".", "nested")


def catalog_memo_flood(tmp: Path) -> None:
    expect_catalog_refusal(tmp, b"\x80\x04" + pickle.EMPTY_LIST + pickle.MEMOIZE * 16_000_000 + b".", "memo entries")


def catalog_ordinary_control(tmp: Path) -> None:
    ids = list(range(1, 10_001))
    path = tmp / "movie_ids.pkl"
    path.write_bytes(pickle.dumps(ids))
    assert load_catalog_ids(path) == ids


# --- app rows, names, checks ---------------------------------------------------------------------


def app_ratings_all_wrong_type(tmp: Path) -> None:
    raw = pd.DataFrame(
        [(f"u{i}", 862, str(4.0), "2026-01-01T00:00:00Z") for i in range(1000)], columns=list(APP_RATING_COLUMNS)
    )
    frame, stats = validate_ratings(raw, 0.5, 5.0, list(range(1, 1001)))
    assert frame.empty and stats["valid_rows"] == 0 and stats["dropped_invalid_rating"] == 1000, stats
    assert stats["dropped_examples"]["dropped_invalid_rating"][0].startswith("ratings id 1: ")


def app_ratings_id_overflow(tmp: Path) -> None:
    rows = [("u", 1e30, 4.0, "2026-01-01T00:00:00Z"), ("u", 862, 4.0, "2026-01-01T00:00:00Z")]
    frame, stats = validate_ratings(pd.DataFrame(rows, columns=list(APP_RATING_COLUMNS)), 0.5, 5.0, [17, 18])
    assert len(frame) == 1 and stats["dropped_invalid_ids"] == 1, stats
    assert stats["dropped_examples"]["dropped_invalid_ids"] == ["ratings id 17: user_id='u', tmdb_id=1e+30, rating=4.0"]


def table_name_traversal(tmp: Path) -> None:
    for name in ("../admin", "ratings?select=*"):
        try:
            SupabaseResource(url="http://127.0.0.1:9", key=SECRET, table=name)
        except ValueError as exc:
            assert "not a plain SQL identifier" in str(exc) and SECRET not in str(exc)
        else:
            raise AssertionError(f"table {name!r} accepted")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def check_refuses_swapped_pickle(tmp: Path) -> None:
    version = write_model_version(tmp / "models")
    files = {
        name: {"sha256": sha, "bytes": (version.path / name).stat().st_size} for name, sha in version.sha256.items()
    }
    record = ModelVersion(version.version, str(version.path), "run", "2026-01-01T00:00:00+00:00", {}, {}, files)
    marker = tmp / "code-ran"
    (version.path / MODEL_FILE).write_bytes(pickle.dumps(_RunsCode(str(marker))))
    result = svd_artifacts_load_and_predict(svd_model=record)
    assert not result.passed and not marker.exists(), result.description


# --- Issue 16: ops and secrets (retrain sensor, alert delivery and scrubbing, DSN, botocore) -------
# Heavy imports stay inside these cases: every spawned child imports this module.


def sensor_future_and_backdated_ratings(tmp: Path) -> None:
    """A rating dated a year ahead must not hide later ratings; back-dated ones count (both readers)."""
    from datetime import datetime, timedelta, timezone

    import dagster as dg

    from cfrec_assets.defs.sensors import build_retrain_sensor
    from cfrec_assets.defs.supabase_io import SupabasePostgresResource
    from cfrec_testkit.postgres import create_ratings_table, insert_ratings, postgres_server
    from cfrec_testkit.postgrest import TEST_API_KEY, PostgrestSubsetServer

    sensor = build_retrain_sensor(min_new_ratings=10)
    now = datetime.now(timezone.utc)
    with postgres_server() as pg, PostgrestSubsetServer(pg.conninfo, [TEST_API_KEY]) as api:
        readers = {
            "rest": SupabaseResource(url=api.url, key=TEST_API_KEY, max_retries=0),
            "postgres": SupabasePostgresResource(db_url=pg.conninfo),
        }
        for name, reader in readers.items():
            create_ratings_table(pg.conninfo)
            with dg.instance_for_test() as instance:

                def tick(cursor: str | None, reader=reader, instance=instance):
                    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"supabase": reader})
                    return sensor(context)

                ahead = [("clock-ahead", 862, 4.0, now + timedelta(days=365))]
                insert_ratings(pg.conninfo, [(f"u{i}", 862, 4.0, None) for i in range(9)] + ahead)
                first = tick(None)
                assert first.run_requests, f"{name}: 10 ratings did not retrain"
                insert_ratings(pg.conninfo, [(f"v{i}", 710, 4.0, None) for i in range(10)])
                later = tick(first.cursor)
                assert later.run_requests, f"{name}: 10 ratings after a future-dated one unseen: {later.skip_reason}"
                insert_ratings(pg.conninfo, [(f"w{i}", 11, 4.0, now - timedelta(days=3)) for i in range(10)])
                back = tick(later.cursor)
                assert back.run_requests, f"{name}: 10 back-dated ratings unseen: {back.skip_reason}"


def _failed_run_context(instance):
    import dagster as dg

    @dg.asset
    def doomed() -> None:
        raise RuntimeError("doomed on purpose")

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the table stays readable
    result = dg.materialize([doomed], instance=instance, raise_on_error=False, run_config=quiet)
    [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()


def alert_webhook_dripping(tmp: Path) -> None:
    """Headers, then a byte every 0.5 s forever: the delivery must give up at its 1 s deadline."""
    import dagster as dg

    from cfrec_assets.defs.alerts import deliver_alert
    from cfrec_testkit.webhook import WebhookServer

    with dg.instance_for_test() as instance, WebhookServer(drip_seconds=0.5) as hook:
        problem = deliver_alert(_failed_run_context(instance), hook.url, "http://ui", timeout_seconds=1)
    assert problem is not None and "not delivered" in problem, problem


def alert_scrub_s3_and_newline_secrets(tmp: Path) -> None:
    from cfrec_assets.defs.alerts import scrub

    environ = {
        "CFREC_S3_ACCESS_KEY_ID": "AKIAFAULTBENCH0001",
        "CFREC_S3_SECRET_ACCESS_KEY": "wJalrFaultBenchSecret/K7MDENG+bPxRfiCY",
        "CFREC_S3_ENDPOINT_URL": f"https://minio:{SECRET}@s3.internal:9000",
        "SUPABASE_KEY": "service-role-faultbench-key\n",
    }
    text = (
        "PUT failed at https://minio:" + SECRET + "@s3.internal:9000/cfrec/manifest.json with key AKIAFAULTBENCH0001 "
        "secret wJalrFaultBenchSecret/K7MDENG+bPxRfiCY (wJalrFaultBenchSecret%2FK7MDENG%2BbPxRfiCY); "
        "apikey service-role-faultbench-key"
    )
    scrubbed = scrub(text, environ)
    for leak in ("AKIAFAULTBENCH0001", "wJalrFaultBenchSecret", SECRET, "minio:", "service-role-faultbench-key"):
        assert leak not in scrubbed, f"{leak!r} left in: {scrubbed}"
    assert "s3.internal:9000" in scrubbed, scrubbed


def dsn_raw_at_in_password(tmp: Path) -> None:
    """SUPABASE_DB_URL with an unencoded '@' in the password: read, and no fragment in any error."""
    import logging

    import psycopg

    from cfrec_assets.defs.supabase_io import SupabasePostgresResource, SupabaseReadError
    from cfrec_testkit.postgres import create_ratings_table, insert_ratings, postgres_server

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    with postgres_server() as pg:
        create_ratings_table(pg.conninfo)
        insert_ratings(pg.conninfo, [("u", 862, 4.0, None)])
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute("CREATE ROLE at_reader LOGIN PASSWORD 'hunter@2tail-q9z'")
            conn.execute("GRANT SELECT ON ratings TO at_reader")
        base = f"@{pg.host}:{pg.port}/{pg.dbname}"
        frame, _ = SupabasePostgresResource(db_url=f"postgresql://at_reader:hunter@2tail-q9z{base}").read_ratings()
        assert len(frame) == 1
        try:
            SupabasePostgresResource(db_url=f"postgresql://at_reader:wrong@tail-k3x{base}").read_ratings()
        except SupabaseReadError as exc:  # its traceback would quote this file's source line
            assert exc.__cause__ is None and exc.__context__ is None, "a driver error is chained"
            text = f"{exc} {exc!r} " + " ".join(records)
        else:
            raise AssertionError("a wrong password was accepted")
        for fragment in ("tail-k3x", "wrong@"):
            at = text.find(fragment)
            assert at < 0, f"{fragment!r} leaked: {text[max(0, at - 150) : at + 50]}"


def botocore_debug_logs(tmp: Path) -> None:
    """The root logger at DEBUG (a developer's basicConfig): no access key id in any log line."""
    import logging

    from cfrec_serving.targets.s3_store import S3Location, S3Store
    from cfrec_testkit.s3_server import s3_server

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    with s3_server() as server:  # its own set-up (which creates the key) is not logged here
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)
        store = S3Store(S3Location.parse(f"s3://{server.bucket}/bench"), **server.settings())
        store.put(b"hello", "probe.txt")
        assert store.get("probe.txt", max_bytes=5) == b"hello"
    leaked = [line for line in records if server.access_key_id in line]
    assert not leaked, f"{len(leaked)} log line(s) hold the access key id, e.g. {leaked[0][:120]}"


# --- Issue 16: MovieLens parsers and download records ----------------------------------------

LATEST_FILES = {  # a tiny release in the ml-latest format: films 1-3, film 3 without a tmdbId
    "ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,1500000000\n1,2,3.5,1500000001\n2,1,5.0,1500000002\n",
    "movies.csv": b"movieId,title,genres\n1,Alpha (1995),Drama\n2,Beta (1996),Comedy\n3,Gamma (1997),Drama\n",
    "links.csv": b"movieId,imdbId,tmdbId\n1,114709,862\n2,113497,8844\n3,114711,\n",
}
HOSTILE_LATEST_LINES = {  # appended to one member; the refusal must name that file and line
    "userId 2^31 (was wrapped negative)": ("ratings.csv", b"2147483648,1,4.0,1500000000"),
    "movieId 2^32+1 (was film 1)": ("ratings.csv", b"1,4294967297,3.0,1500000000"),
    "20-digit timestamp (was OverflowError, kept cached)": ("ratings.csv", b"1,1,4.0,99999999999999999999"),
    "userId 2^63": ("ratings.csv", b"9223372036854775808,1,4.0,1500000000"),
    "NaN rating": ("ratings.csv", b"1,3,NaN,1500000000"),
    "byte 0xff": ("ratings.csv", b"1,3\xff,4.0,1500000000"),
    "film listed twice in links.csv": ("links.csv", b"1,114709,9999"),
    "negative tmdbId": ("links.csv", b"4,114712,-862"),
}
SIGNED = "X-Amz-Signature=5eCr3751gNaTuRe"


def ml_latest_hostile_ids(tmp: Path) -> None:
    """Each hostile line, fed to ml_latest_raw itself: refused naming file and line, archive evicted."""
    import dagster as dg  # here, not at the top: the other cases' children need not import Dagster

    from cfrec_assets.defs.assets.movielens import MovieLensLatestConfig, ml_latest_raw
    from cfrec_assets.defs.resources import DataStore, MovieLensSource
    from cfrec_assets.pipeline.movielens_files import MovieLensFormatError

    def run(name: str, files: dict[str, bytes]) -> Path:
        mirror = tmp / "mirror" / name
        mirror.mkdir(parents=True)
        with zipfile.ZipFile(mirror / "ml-latest-small.zip", "w") as zf:
            for member, data in files.items():
                zf.writestr(f"ml-latest-small/{member}", data)
        source, store = MovieLensSource(base_url=mirror.as_uri() + "/"), DataStore(data_dir=str(tmp / name))
        ml_latest_raw(dg.build_asset_context(), config=MovieLensLatestConfig(), movielens=source, store=store)
        return store.cache_dir / "ml-latest-small.zip"

    logging.disable(logging.INFO)  # in this child only: the control run's INFO line is not a table row
    assert run("control", LATEST_FILES).is_file(), "the control release was not cached"
    failures = []
    for index, (why, (member, line)) in enumerate(HOSTILE_LATEST_LINES.items()):
        files = {**LATEST_FILES, member: LATEST_FILES[member] + line + b"\n"}
        expected = f"{member} line {len(LATEST_FILES[member].splitlines()) + 1}:"
        try:
            run(f"case{index}", files)
            failures.append(f"{why}: accepted")
        except MovieLensFormatError as exc:
            if expected not in str(exc):
                failures.append(f"{why}: {expected!r} not named")
        except Exception as exc:  # noqa: BLE001 (any other escape is a failed defence, counted)
            failures.append(f"{why}: {type(exc).__name__}")
        if (tmp / f"case{index}" / "cache" / "ml-latest-small.zip").exists():
            failures.append(f"{why}: kept cached")
    assert not failures, f"{len(failures)} failures: {'; '.join(failures)}"


def signed_redirect(tmp: Path) -> None:
    """A redirect to a signed URL: the signature is followed, never recorded, logged or reported."""
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.DEBUG)
    redirects = {f"old/{ARCHIVE}": f"/{ARCHIVE}?{SIGNED}", "old/ml-latest-small.zip": f"/ml-latest-small.zip?{SIGNED}"}
    with Mirror(tmp / "mirror", redirects=redirects) as server:
        archive = fetch_archive(server.url + "old/", ARCHIVE, tmp / "cache", ML100K_MEMBERS, timeout_seconds=5)
        try:
            fetch_archive(server.url + "old/", "ml-latest-small.zip", tmp / "cache", ML100K_MEMBERS, timeout_seconds=5)
        except DownloadError as exc:
            error = "".join(traceback.format_exception(exc))
        else:
            raise AssertionError("a redirect to a 404 was accepted")
    assert archive.final_url == f"{server.url}{ARCHIVE}?[redacted]", archive.final_url
    assert "HTTP Request: GET" in captured.getvalue(), "httpx's request log was not captured"
    record = (tmp / "cache" / f"{ARCHIVE}.source.json").read_text()
    for where, text in (("record", record), ("log", captured.getvalue()), ("error", error), ("archive", repr(archive))):
        assert "5eCr37" not in text, f"signature in the {where}"


# --- Issue 16: serving artifacts (sizes and file types before reading, npz members, JSON depth, model cache)

OTHER_UID = 4242  # "another local user": the bench runs as root, which may chown to any uid
SPARSE_NPZ = 3 << 30
S3_OVERSIZED = 512 << 20
NESTED_JSON = b"[" * 100_000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def expect_load_refusal(load: Callable[[], object], *fragments: str, error: type = ServingError) -> None:
    """``load`` must raise ``error`` naming every fragment, and the child's peak RSS must grow by
    less than 64 MB meanwhile (the hostile artifact was refused before it was read whole)."""
    before = _peak_mb()
    try:
        load()
    except error as exc:
        text = str(exc)
    else:
        raise AssertionError("the hostile artifact was loaded")
    grown = _peak_mb() - before
    assert grown < 64, f"peak RSS grew {grown:.0f} MB before the refusal"
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not named in: {text[:300]}"


def _served_npz(tmp: Path) -> Path:
    version = json.loads((tmp / "serving" / MANIFEST_FILE).read_text())["version"]
    return tmp / "serving" / VERSIONS_DIR / version / SERVING_FILE


def _prepare_served(tmp: Path) -> None:
    promote_version(write_model_version(tmp / "models"), tmp / "serving")


def _prepare_sparse_npz(tmp: Path) -> None:
    _prepare_served(tmp)
    os.truncate(_served_npz(tmp), SPARSE_NPZ)  # a hole: no disk used, 3 GiB of zeros to read


def _prepare_npz_to_dev_zero(tmp: Path) -> None:
    _prepare_served(tmp)
    _served_npz(tmp).unlink()
    _served_npz(tmp).symlink_to("/dev/zero")


def _prepare_npz_fifo(tmp: Path) -> None:
    _prepare_served(tmp)
    _served_npz(tmp).unlink()
    os.mkfifo(_served_npz(tmp))


def serving_sparse_npz(tmp: Path) -> None:
    expect_load_refusal(lambda: load_deployed(tmp / "serving"), f"{SPARSE_NPZ:,} bytes")


def serving_npz_is_dev_zero(tmp: Path) -> None:
    expect_load_refusal(lambda: load_deployed(tmp / "serving"), "not a regular file")


def serving_npz_is_fifo(tmp: Path) -> None:
    expect_load_refusal(lambda: load_deployed(tmp / "serving"), "not a regular file")


def watcher_after_a_fifo_version(tmp: Path) -> None:
    logging.getLogger("cfrec_serving.watcher").setLevel(logging.ERROR)  # its refusal warning would split the table
    serving = tmp / "serving"
    promote_version(write_model_version(tmp / "models", version_name(1), seed=1), serving)
    watcher = DeployedModelWatcher(serving, interval=3600).start()
    fifo = write_model_version(tmp / "models", version_name(2), seed=2)
    promote_version(fifo, serving)
    _served_npz(tmp).unlink()
    os.mkfifo(_served_npz(tmp))
    assert watcher.check_now() is False and fifo.version in watcher.last_error, watcher.last_error
    good = write_model_version(tmp / "models", version_name(3), seed=3)
    promote_version(good, serving)
    assert watcher.check_now() is True and watcher.version == good.version, watcher.last_error


def _prepare_npz_member(tmp: Path, member: str, shape: tuple[int, ...], **options) -> None:
    folder = write_model_version(tmp / "models").path
    npz_with_member(folder / SERVING_FILE, tmp / SERVING_FILE, member, shape, **options)
    os.replace(tmp / SERVING_FILE, folder / SERVING_FILE)


def _load_model_folder(tmp: Path) -> object:
    folder = next((tmp / "models").iterdir())
    return load_version(folder, file_records(folder))  # the manifest vouches for the hostile bytes


def npz_deflated_member(tmp: Path) -> None:
    expect_load_refusal(lambda: _load_model_folder(tmp), "compressed")


def npz_huge_declared_shape(tmp: Path) -> None:
    expect_load_refusal(lambda: _load_model_folder(tmp), "(30, 100000000000)")


def _prepare_nested_manifest(tmp: Path) -> None:
    (tmp / "serving").mkdir()
    (tmp / "serving" / MANIFEST_FILE).write_bytes(NESTED_JSON)
    write_model_version(tmp / "models")


def manifest_nested_load(tmp: Path) -> None:
    expect_load_refusal(lambda: load_deployed(tmp / "serving"), "nested")


def manifest_nested_promote(tmp: Path) -> None:
    folder = next((tmp / "models").iterdir())
    promotion = Promotion(folder.name, metrics={}, counts={}, trained_at="2026-11-26T07:15:00+00:00")
    expect_load_refusal(
        lambda: open_target(tmp / "serving").promote(folder, promotion), "nested", error=DeploymentError
    )


def _s3_target_with_a_version(tmp: Path, server) -> tuple[object, str]:
    target = open_target(f"s3://{server.bucket}/serving", **server.settings())
    tiny = write_model_version(tmp / "models")
    target.promote(tiny.path, Promotion(tiny.version, metrics={}, counts={}, trained_at="2026-11-26T07:15:00+00:00"))
    return target, tiny.version


def s3_body_larger_than_recorded(tmp: Path) -> None:
    with s3_server() as server:
        target, version = _s3_target_with_a_version(tmp, server)
        with open(tmp / "big", "wb") as big:
            big.truncate(S3_OVERSIZED)
        with open(tmp / "big", "rb") as body:  # streamed from disk: the upload does not raise the peak
            server.client().put_object(
                Bucket=server.bucket, Key=f"serving/versions/{version}/{SERVING_FILE}", Body=body
            )
        expect_load_refusal(lambda: load_deployed(target, cache_dir=tmp / "cache"), f"{S3_OVERSIZED:,}")


def s3_manifest_nested(tmp: Path) -> None:
    with s3_server() as server:
        server.client().put_object(Bucket=server.bucket, Key=f"serving/{MANIFEST_FILE}", Body=NESTED_JSON)
        target = open_target(f"s3://{server.bucket}/serving", **server.settings())
        expect_load_refusal(lambda: load_deployed(target, cache_dir=tmp / "cache"), "nested")


def _shared_cache_attack(tmp: Path, plant: Callable[[Path], None]) -> None:
    """Another user planted ``<tmp>/cfrec-model-cache/<version>`` (the old shared default) before
    the app's first load; the app loads with its default cache and must neither fail nor write there."""
    os.environ.update(TMPDIR=str(tmp), XDG_CACHE_HOME=str(tmp / "app-home" / ".cache"))
    tempfile.tempdir = None  # re-read TMPDIR
    with s3_server() as server:
        target, version = _s3_target_with_a_version(tmp, server)
        shared = tmp / "cfrec-model-cache"
        shared.mkdir(mode=0o777)
        planted = shared / version
        plant(planted)
        os.lchown(shared, OTHER_UID, OTHER_UID)
        os.lchown(planted, OTHER_UID, OTHER_UID)
        before = sorted(str(p) for p in tmp.rglob("*") if "app-home" not in p.parts)
        model = load_deployed(target)
        after = sorted(str(p) for p in tmp.rglob("*") if "app-home" not in p.parts)
        assert model.version == version
        assert after == before, f"the app wrote into the other user's files: {sorted(set(after) - set(before))}"
        private = default_cache_dir()
        info = private.stat()
        assert info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0, oct(info.st_mode)


def cache_planted_symlink(tmp: Path) -> None:
    (tmp / "attacker").mkdir()
    _shared_cache_attack(tmp, lambda planted: planted.symlink_to(tmp / "attacker"))


def cache_planted_file(tmp: Path) -> None:
    _shared_cache_attack(tmp, lambda planted: planted.write_bytes(b""))


def cache_planted_folder(tmp: Path) -> None:
    _shared_cache_attack(tmp, lambda planted: planted.mkdir(mode=0o755))


# --- Issue 16: combined drops, memory estimate, tuning journal, user_recommendations ---------------
# Imports inside the cases: only the child running a case loads Postgres, Dagster's graph or Surprise.


def app_ratings_all_seed_prefixed(tmp: Path) -> None:
    import dagster as dg

    from cfrec_assets.defs.supabase_io import SupabasePostgresResource
    from cfrec_testkit.graph import check_results, metadata
    from cfrec_testkit.postgres import create_ratings_table, insert_ratings, postgres_server

    env = make_graph_env(tmp / "graph")
    films = sorted({e.tmdb_id for e in env.mirror.expected.values() if e.tmdb_id is not None})
    with postgres_server() as server, dg.instance_for_test() as instance:
        create_ratings_table(server.conninfo)
        insert_ratings(server.conninfo, [(f"ml_app{i}", films[i % 30], 4.0, None) for i in range(300)])
        env.supabase = SupabasePostgresResource(db_url=server.conninfo)
        result = env.materialize(instance, selection=UP_TO_COMBINED)
    assert metadata(result, "combined_ratings")["real_ratings"] == 0
    assert check_results(result).get("app_ratings_kept_in_training") is False, check_results(result)


def memory_many_one_rating_users(tmp: Path) -> None:
    import dagster as dg

    from cfrec_assets.defs.assets.model import SVDConfig, svd_model
    from cfrec_assets.defs.resources import DataStore, SparkResource
    from cfrec_assets.pipeline.memory import MemoryBudgetError

    n = 300_000
    ratings = pd.DataFrame(
        {"user_id": [f"user-{i}" for i in range(n)], "tmdb_id": [100 + i % 800 for i in range(n)], "rating": 4.0}
    ).assign(source="app", created_at=pd.Timestamp("2026-01-01", tz="UTC"))
    titles = pd.DataFrame({"tmdb_id": pd.Series(dtype="int64"), "title": pd.Series(dtype=str), "year": []})
    config = SVDConfig(params="seed", n_factors=400, memory_budget_bytes=1 << 30)  # pu alone: 0.96 GB
    try:
        with dg.build_asset_context(
            resources={"store": DataStore(data_dir=str(tmp)), "spark": SparkResource()}
        ) as context:
            svd_model(context, config=config, combined_ratings=ratings, movie_titles=titles)
    except MemoryBudgetError as refused:
        assert "400 factors" in str(refused), refused
    else:
        raise AssertionError("trained 300,000 users x 400 factors within a 1 GiB budget: the pre-check passed it")


def tuning_journal_forged_and_truncated(tmp: Path) -> None:
    import optuna

    from cfrec_assets.pipeline.tuning_study import TuningBounds, journal_storage, tune
    from cfrec_testkit.models import make_ratings_frame

    ratings, bounds = make_ratings_frame(n_users=40, n_movies=30, seed=2), TuningBounds(n_factors=(2, 8))
    run = {"trials": 1, "bounds": bounds, "n_jobs": 1, "importances": False}
    tune(ratings, tmp, "svd", **run)
    study = optuna.load_study(study_name="svd", storage=journal_storage(tmp, "svd"))
    wide = {**study.trials[0].distributions, "n_factors": optuna.distributions.IntDistribution(1, 5000)}
    study.add_trial(
        optuna.trial.create_trial(
            params={**study.trials[0].params, "n_factors": 3000}, distributions=wide, value=float("-inf")
        )
    )
    forged = tune(ratings, tmp, "svd", **run)
    assert forged.best_params["n_factors"] <= 8 and forged.trials_ignored == 1, forged.best_params
    journal = tmp / "svd.journal"
    journal.write_bytes(journal.read_bytes()[:-25])  # a crash mid-append
    recovered = tune(ratings, tmp, "svd", **run)
    assert recovered.journal_moved_aside and Path(recovered.journal_moved_aside).is_file(), recovered


def recommendations_table_privileges(tmp: Path) -> None:
    import psycopg

    from cfrec_assets.defs.supabase_io.recommendations import RecommendationsTable
    from cfrec_testkit.postgres import add_supabase_roles, postgres_server

    for name in ("pg_catalog.pg_class", "auth.users"):
        try:
            RecommendationsTable(db_url="postgresql://u:pw@127.0.0.1:1/db", table=name)
        except ValueError as refused:
            assert "public schema" in str(refused), refused
        else:
            raise AssertionError(f"table {name!r} accepted")
    sql_file = Path(__file__).resolve().parents[1] / "deploy" / "user_recommendations.sql"
    with postgres_server() as server:
        add_supabase_roles(server.conninfo)
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute(sql_file.read_text())
            query = "select has_table_privilege(%s, 'public.user_recommendations', %s)"
            for role in ("anon", "authenticated"):
                for privilege in ("TRUNCATE", "INSERT", "UPDATE", "DELETE", "REFERENCES", "TRIGGER"):
                    assert not conn.execute(query, (role, privilege)).fetchone()[0], f"{role} may {privilege}"


# --- Issue 16: the deployment gate under overlapping runs


def gate_overlapping_retrains(tmp: Path) -> None:
    """Two retrains on one instance, ordered so that Dagster records the passing run's verdict
    as the failing run's (its cv_metrics is the latest when that verdict is stored): the gate
    must refuse the failing run's model and promote the passing one's."""
    # Imported here: the whole asset graph would add to every other case's baseline.

    ceiling = "cv_metrics_cv_rmse_under_ceiling"
    env = make_graph_env(tmp / "graph")
    with dg.instance_for_test() as instance:
        assert env.materialize(instance, selection=UP_TO_COMBINED).success
        retrain = ["svd_model", "cv_metrics"]
        # One fold at a time: a joblib worker pool would outlive the child this runner kills and
        # hold its stdout open for minutes (``fault_bench.py | tee`` would hang).
        serial = {"cv_metrics": {"config": {"n_jobs": 1}}}
        impossible = {**serial, ceiling: {"config": {"rmse_ceiling": 0.01}}}
        failed, passed = interleave(
            env,
            lambda io: env.materialize(instance, selection=retrain, ops=impossible, resources={"io_manager": io}),
            "cv_metrics",
            lambda io: env.materialize(instance, selection=retrain, ops=serial, resources={"io_manager": io}),
            ceiling,
        )
        assert recorded_target(passed, "cv_rmse_under_ceiling") == failed.run_id, "the interleaving was not forced"
        refusal = gate_refusal(instance, failed)
        assert refusal is not None and "cv_rmse_under_ceiling failed" in refusal, f"gate let it through: {refusal}"
        assert gate_refusal(instance, passed) is None, gate_refusal(instance, passed)


CASES: list[Case] = [
    Case("credentials: connection refused", credentials_refused),
    Case("credentials: HTTP 404", credentials_http_404, _prepare_release),
    Case("credentials: truncated body", credentials_truncated, _prepare_release),
    Case("credentials: not a zip", credentials_not_a_zip, _prepare_release),
    Case("dsn: password with @ : /", dsn_password_with_at_colon_slash),
    Case("file://user:pw@/path/", file_url_with_credentials, _prepare_release),
    Case(f"zip bomb: u.data {BOMB_MIB} MiB", zip_bomb, _prepare_bomb),
    Case(f"zip header lies: 4 KiB said, {BOMB_MIB} MiB inflate", lying_zip_header, _prepare_lying_bomb),
    Case("cache: archive of another source", cached_archive_from_another_source),
    Case("cache: evict after failed validation", evict_after_failed_validation, _prepare_release),
    Case("gzip Content-Encoding", gzip_encoded_download, _prepare_release),
    Case(f"gzip transport bomb: {BOMB_MIB} MiB", gzip_transport_bomb, _prepare_gzip_bomb),
    Case("redirect: final URL recorded", redirected_download, _prepare_release),
    Case("catalog: 60 doubling tuples in frozenset", catalog_doubling_tuples),
    Case("catalog: 40^5 shared tuples", catalog_wide_shared_tuples),
    Case("catalog: 100,000 nested lists", catalog_nested_lists),
    Case("catalog: 16M memo opcodes", catalog_memo_flood),
    Case("catalog: 10,000 ids (control)", catalog_ordinary_control),
    Case("app rows: 1,000 ratings of the wrong type", app_ratings_all_wrong_type),
    Case("app rows: tmdb_id 1e30", app_ratings_id_overflow),
    Case("table name ../admin", table_name_traversal),
    Case("model check: pickle swapped after training", check_refuses_swapped_pickle),
    Case("sensor: a rating a year ahead, then back-dated ones", sensor_future_and_backdated_ratings),
    Case("alert webhook dripping a byte every 0.5 s, 1 s deadline", alert_webhook_dripping),
    Case("alert scrub: S3 key id, secret, endpoint userinfo, key + newline", alert_scrub_s3_and_newline_secrets),
    Case("SUPABASE_DB_URL password with a raw @", dsn_raw_at_in_password),
    Case("botocore at DEBUG: access key id in logs", botocore_debug_logs),
    Case(
        f"ml-latest: {len(HOSTILE_LATEST_LINES)} hostile ids/links lines, each named and evicted", ml_latest_hostile_ids
    ),
    Case("redirect: signed Location (record, log, error)", signed_redirect, _prepare_release),
    Case(f"npz: {SPARSE_NPZ >> 30} GiB sparse cf_model.npz", serving_sparse_npz, _prepare_sparse_npz),
    Case("npz: cf_model.npz -> /dev/zero", serving_npz_is_dev_zero, _prepare_npz_to_dev_zero),
    Case("npz: cf_model.npz is a FIFO", serving_npz_is_fifo, _prepare_npz_fifo),
    Case("watcher: FIFO version, then a good one", watcher_after_a_fifo_version),
    Case(
        "npz: member of 960 MB zeros, deflated",
        npz_deflated_member,
        partial(_prepare_npz_member, member="bu", shape=(120_000_000,), deflate=True),
    ),
    Case(
        "npz: member declaring shape (30, 10^11)",
        npz_huge_declared_shape,
        partial(_prepare_npz_member, member="pu", shape=(30, 10**11), data_bytes=0),
    ),
    Case("manifest: 100,000 nested [ (load)", manifest_nested_load, _prepare_nested_manifest),
    Case("manifest: 100,000 nested [ (promote)", manifest_nested_promote, _prepare_nested_manifest),
    Case(f"S3: cf_model.npz body of {S3_OVERSIZED >> 20} MiB, manifest says less", s3_body_larger_than_recorded),
    Case("S3: manifest of 100,000 nested [", s3_manifest_nested),
    Case("cache: <shared>/<version> symlink of another user", cache_planted_symlink),
    Case("cache: <shared>/<version> file of another user", cache_planted_file),
    Case("cache: <shared>/<version> folder of another user", cache_planted_folder),
    Case("combined: 300 app ratings, seed-prefixed user ids", app_ratings_all_seed_prefixed),
    Case("memory: 300,000 one-rating users x 400 factors, 1 GiB", memory_many_one_rating_users),
    Case("tuning journal: forged 3,000 factors / -inf, truncated", tuning_journal_forged_and_truncated),
    Case("user_recommendations: pg_catalog.pg_class, TRUNCATE", recommendations_table_privileges),
    Case("gate: another run's pass recorded for a failed model", gate_overlapping_retrains),
]


# --- Runner -------------------------------------------------------------------------------------


def _child(attack: Callable[[Path], None] | None, tmp: str, conn) -> None:
    started = time.perf_counter()
    try:
        if attack is not None:
            attack(Path(tmp))
        status = "held"
    except BaseException as exc:  # noqa: BLE001 (any escape is a failed defence, reported not raised)
        status = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"  # one table cell
    seconds = time.perf_counter() - started
    conn.send((status, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_case(attack: Callable[[Path], None] | None, tmp: Path, timeout: float) -> tuple[str, float, float]:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(attack, str(tmp), send))
    child.start()
    if receive.poll(timeout):
        result = receive.recv()
    else:
        result = (f"failed: still running after {timeout:g}s (killed)", timeout, float("nan"))
    if child.is_alive():
        child.kill()
    child.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="run only cases whose name contains one of these")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case is killed")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.words or any(w.lower() in c.name.lower() for w in args.words)]
    with tempfile.TemporaryDirectory(prefix="fault-bench-") as root:
        _, _, baseline = run_case(None, Path(root), args.timeout)
        print(
            f"`python {' '.join(sys.argv)}`: peak MB is a spawned child's peak RSS; imports alone: {baseline:.0f} MB\n"
        )
        print("| case | held/failed | seconds | peak MB |\n|---|---|---:|---:|")
        held, total_seconds, peak = 0, 0.0, 0.0
        for index, case in enumerate(cases):
            tmp = Path(root, f"case{index}")
            (tmp / "mirror").mkdir(parents=True)
            if case.prepare is not None:
                case.prepare(tmp)
            status, seconds, peak_mb = run_case(case.attack, tmp, args.timeout)
            held += status == "held"
            total_seconds += seconds
            peak = max(peak, peak_mb)
            print(f"| {case.name} | {status} | {seconds:.3f} | {peak_mb:.0f} |", flush=True)
        print(f"| **total** | {held}/{len(cases)} held | {total_seconds:.3f} | {peak:.0f} (max) |")
    return 0 if held == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
