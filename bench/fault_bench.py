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

from cfrec_assets.catalog import CatalogError, load_catalog_ids
from cfrec_assets.checks import svd_artifacts_load_and_predict
from cfrec_assets.downloads import MAX_ARCHIVE_BYTES, DownloadError, evict, fetch_archive, member_limit
from cfrec_assets.movielens import ML100K_MEMBERS
from cfrec_assets.records import ModelVersion
from cfrec_assets.redact import redact_dsn_secrets, redact_url
from cfrec_assets.schema import APP_RATING_COLUMNS, MODEL_FILE
from cfrec_assets.storage import sha256_file
from cfrec_assets.supabase_io import SupabaseResource
from cfrec_assets.supabase_io.table import validate_ratings
from cfrec_testkit.models import write_model_version

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


# --- Issue 16: the deployment gate under overlapping runs


def gate_overlapping_retrains(tmp: Path) -> None:
    """Two retrains on one instance, ordered so that Dagster records the passing run's verdict
    as the failing run's (its cv_metrics is the latest when that verdict is stored): the gate
    must refuse the failing run's model and promote the passing one's."""
    # Imported here: the whole asset graph would add to every other case's baseline.
    from cfrec_testkit.graph import UP_TO_COMBINED, gate_refusal, interleave, make_graph_env, recorded_target

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
