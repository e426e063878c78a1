"""The store contract suite runs once per backend: add a backend with one line in ``BACKENDS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_support import FakeClock

from atrepo.store.base import Store
from atrepo.store.postgres import PostgresStore
from atrepo.store.sqlite import SQLiteStore

#: Every store test gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 60


#: name -> factory(directory for the store's files, clock, database URL or None) of a fresh, empty store.
BACKENDS: dict[str, Callable[[Path, FakeClock, str | None], Store]] = {
    "sqlite": lambda path, clock, _url: SQLiteStore(path, clock=clock),
    "postgresql": lambda path, clock, url: PostgresStore(str(url), path, clock=clock),
}
#: Backends that need a database server: their tests get a fresh database (the ``pg_url`` fixture).
SERVER_BACKENDS = frozenset({"postgresql"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[[], Store]]:
    """Opens the backend's store in this test's directory (again: same data); closes all at the end."""
    opened: list[Store] = []
    factory = BACKENDS[request.param]
    url = str(request.getfixturevalue("pg_url")) if request.param in SERVER_BACKENDS else None

    def make() -> Store:
        store = factory(tmp_path / "data", clock, url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Store]) -> Store:
    return make_store()
