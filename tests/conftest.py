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
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for one test alone, stopped after it: for tests that crash the server."""
    server = Cluster(own=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards: its URL."""
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): the test is about SQLite itself (its file, a PRAGMA); "
        "its PostgreSQL run of the `backend` fixture is skipped, naming the reason",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """A store backend: a test (or fixture) that asks for this runs once on each.

    A test marked ``sqlite_only("why")`` keeps its SQLite run and skips the
    PostgreSQL one with that reason, so the exclusion shows in the report.
    """
    only = request.node.get_closest_marker("sqlite_only")
    if only is not None and request.param != "sqlite":
        reason = only.args[0] if only.args else only.kwargs.get("reason", "about SQLite itself")
        pytest.skip(f"SQLite only: {reason}")
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None on SQLite (the store lives in the test's directory), a fresh database's URL on PostgreSQL."""
    return str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None


@pytest.fixture
def other_database(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A second, separate store of the same backend (a second host's; None on SQLite), dropped afterwards."""
    if backend != "postgresql":
        yield None
        return
    server: Cluster = request.getfixturevalue("pg_cluster")
    url = server.new_database()
    yield url
    server.drop_database(url)
