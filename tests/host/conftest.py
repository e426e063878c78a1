"""A real host (and its embedded PLC directory) on 127.0.0.1 free ports, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from host_support import HostClient, TokenClock

from atrepo.host import HostConfig, start_host

#: Every host test gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
def clock() -> TokenClock:
    return TokenClock()


@pytest.fixture
async def host(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> AsyncIterator[HostClient]:
    """The host under test, once on each backend (``database``: None is SQLite in ``data``)."""
    config = HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database)
    running = await start_host(config, clock_ms=clock, validate_output=True)
    try:
        yield HostClient(running, http, clock)
    finally:
        await running.stop()
