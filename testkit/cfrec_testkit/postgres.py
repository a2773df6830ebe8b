"""A real, throwaway PostgreSQL server for tests, plus ratings/catalog table helpers.

Either starts a private cluster from the Debian/Ubuntu PostgreSQL binaries
(``initdb``/``pg_ctl`` refuse to run as root, so they run as the ``postgres``
user via ``runuser``), or, when ``PGHOST`` is set, uses that existing server
(``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` as libpq defines them).
Either way the tests get their own scratch database, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
STARTUP_TIMEOUT_SECONDS = 30


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries and no PG* connection settings: tests must skip."""


@dataclass(frozen=True)
class PostgresServer:
    """Connection details of a running server and the scratch database on it."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def conninfo(self) -> str:
        """A libpq URL for psycopg 3 (``psycopg.connect(server.conninfo)``)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.dbname, safe='')}"
        )

    def with_password(self, password: str) -> PostgresServer:
        """Same server and database, another password (to test auth failures)."""
        return PostgresServer(self.host, self.port, self.user, password, self.dbname)


def find_pg_bin_dir() -> Path | None:
    """Newest ``/usr/lib/postgresql/<v>/bin`` holding initdb, else initdb on PATH."""
    candidates = sorted(
        Path("/").glob(PG_BIN_GLOB.lstrip("/")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in candidates:
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_loopback_port() -> int:
    """A port nothing listens on right now (the OS picks it; never 5432 by fiat)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a server with a fresh scratch database; clean everything up after."""
    if os.environ.get("PGHOST"):
        admin = PostgresServer(
            host=os.environ["PGHOST"],
            port=int(os.environ.get("PGPORT", "5432")),
            user=os.environ.get("PGUSER", "postgres"),
            password=os.environ.get("PGPASSWORD", ""),
            dbname=os.environ.get("PGDATABASE", "postgres"),
        )
        with scratch_database(admin) as server:
            yield server
        return
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            "no PostgreSQL binaries (initdb/pg_ctl under /usr/lib/postgresql/*/bin or "
            "on PATH) and PGHOST is not set; install postgresql or point PG* at a server"
        )
    with _temporary_cluster(bin_dir) as admin, scratch_database(admin) as server:
        yield server


@contextlib.contextmanager
def _temporary_cluster(bin_dir: Path) -> Iterator[PostgresServer]:
    # Not pytest's tmp_path: that is 0700 root, which the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="cfrec-pg-", dir="/tmp"))
    password = secrets.token_urlsafe(16)
    as_root = os.geteuid() == 0
    try:
        data_dir, socket_dir, log_file = base / "data", base / "socket", base / "server.log"
        socket_dir.mkdir()
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if as_root:
            for path in (base, socket_dir, pwfile):
                shutil.chown(path, user="postgres", group="postgres")
        _run_pg(
            bin_dir,
            as_root,
            "initdb",
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        port = _start_cluster(bin_dir, as_root, data_dir, socket_dir, log_file)
        try:
            yield PostgresServer("127.0.0.1", port, "postgres", password, "postgres")
        finally:
            _run_pg(bin_dir, as_root, "pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop", check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start_cluster(bin_dir: Path, as_root: bool, data_dir: Path, socket_dir: Path, log_file: Path) -> int:
    """Start on a free port; retry if another process grabbed the port meanwhile."""
    last_error = ""
    for _ in range(3):
        port = free_loopback_port()
        # Durability is pointless for a throwaway test cluster and costs seconds.
        options = (
            f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        result = _run_pg(
            bin_dir,
            as_root,
            "pg_ctl",
            "-D",
            str(data_dir),
            "-l",
            str(log_file),
            "-w",
            "-t",
            str(STARTUP_TIMEOUT_SECONDS),
            "-o",
            options,
            "start",
            check=False,
        )
        if result.returncode == 0:
            return port
        last_error = result.stderr + _tail(log_file)
    raise RuntimeError(f"could not start PostgreSQL: {last_error}")


def _run_pg(
    bin_dir: Path, as_root: bool, program: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [str(bin_dir / program), *args]
    if as_root:
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/tmp", timeout=STARTUP_TIMEOUT_SECONDS + 30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}")
    return result


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def scratch_database(admin: PostgresServer) -> Iterator[PostgresServer]:
    """A new, empty database on ``admin``'s server (dropped afterwards), connected as admin's user."""
    name = f"cfrec_test_{secrets.token_hex(4)}"
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield PostgresServer(admin.host, admin.port, admin.user, admin.password, name)
    finally:
        with psycopg.connect(admin.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- tables ---------------------------------------------------------------

RatingRow = tuple[Any, Any, Any, datetime | None]
"""(user_id, tmdb_id, rating, created_at); None where a value is missing."""


def create_ratings_table(conninfo: str, table: str = "ratings") -> None:
    """(Re)create the app's ratings table, shaped like the Supabase one.

    Columns are nullable on purpose so tests can store the bad rows the reader
    must drop; ``id`` is an identity primary key as in the app.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} ("
                " id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                " user_id text, tmdb_id integer, rating numeric,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(table))
        )


def insert_ratings(conninfo: str, rows: Iterable[RatingRow], table: str = "ratings") -> int:
    """Bulk-insert rating rows with COPY; ``created_at=None`` means now(). Returns count."""
    rows = list(rows)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        stamped = [r for r in rows if r[3] is not None]
        unstamped = [r[:3] for r in rows if r[3] is None]
        if stamped:
            _copy(cur, table, ("user_id", "tmdb_id", "rating", "created_at"), stamped)
        if unstamped:
            _copy(cur, table, ("user_id", "tmdb_id", "rating"), unstamped)
    return len(rows)


def create_catalog_table(conninfo: str, table: str = "movies", tmdb_ids: Iterable[int | None] = ()) -> None:
    """(Re)create a catalog table ``(id, tmdb_id, title)`` and fill in ``tmdb_ids``."""
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, tmdb_id integer, title text)"
            ).format(sql.Identifier(table))
        )
        rows = [(tmdb_id, f"Movie {tmdb_id}") for tmdb_id in tmdb_ids]
        if rows:
            _copy(cur, table, ("tmdb_id", "title"), rows)


def _copy(cur: psycopg.Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# --- Supabase stand-in ------------------------------------------------------

SUPABASE_ROLES_SQL = """
do $$ begin
    if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin; end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select from pg_roles where rolname = 'service_role') then
        create role service_role nologin bypassrls;
    end if;
end $$;
-- As a Supabase project is set up: the API roles use the public schema and get every privilege
-- (TRUNCATE, REFERENCES and TRIGGER included) on each table the owner creates there.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
create schema if not exists auth;
create or replace function auth.uid() returns uuid language sql stable
    as $f$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
grant usage on schema auth to anon, authenticated, service_role;
"""
"""Supabase's API roles (roles are per server, so created only once), its default privileges in
``public`` (per database) and ``auth.uid()`` reading the JWT subject from
``request.jwt.claim.sub``, as PostgREST sets it."""


def add_supabase_roles(conninfo: str) -> None:
    """Make the database at ``conninfo`` look like a Supabase project's (:data:`SUPABASE_ROLES_SQL`)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SUPABASE_ROLES_SQL)
