"""The kit's pytest fixtures, for every test folder (the repository's ``conftest.py`` loads this
plugin): keep each block self-contained."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# --- Real PostgreSQL and the PostgREST-subset server (postgres.py, postgrest.py) ---
from cfrec_testkit.postgres import (
    PostgresServer,
    PostgresUnavailable,
    create_catalog_table,
    create_ratings_table,
    postgres_server,
)
from cfrec_testkit.postgrest import TEST_API_KEY, PostgrestSubsetServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL with a scratch database for the whole session (skips if none)."""
    try:
        server_context = postgres_server()
        server = server_context.__enter__()
    except PostgresUnavailable as reason:
        if os.environ.get("CI"):  # .ci/run installs PostgreSQL: a skip there would hide a broken install
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(str(reason))
    try:
        yield server
    finally:
        server_context.__exit__(None, None, None)


@pytest.fixture
def ratings_db(pg_server: PostgresServer) -> str:
    """Conninfo of the scratch database with empty ``ratings`` and ``movies`` tables."""
    create_ratings_table(pg_server.conninfo)
    create_catalog_table(pg_server.conninfo)
    return pg_server.conninfo


@pytest.fixture
def postgrest(ratings_db: str) -> Iterator[PostgrestSubsetServer]:
    """The PostgREST-subset server over ``ratings_db``, accepting ``TEST_API_KEY``."""
    with PostgrestSubsetServer(ratings_db, [TEST_API_KEY]) as server:
        yield server
