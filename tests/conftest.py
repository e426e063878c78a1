"""Fixtures every test directory may use: a PostgreSQL database per test (tests/pg_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pg_support import Cluster, cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    server = cluster()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards: its URL."""
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """A store backend: a test (or fixture) that asks for this runs once on each."""
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None on SQLite (the store lives in the test's directory), a fresh database's URL on PostgreSQL."""
    return str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
