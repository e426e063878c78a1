"""Fixtures of the subscriber tests: a real host (tests/host's helpers) and a scripted WebSocket upstream."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from client_support import Script, ScriptedUpstream
from host_support import HostClient, TokenClock

from atrepo.host import HostConfig, start_host

#: Every test here gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 30


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
async def host(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> AsyncIterator[HostClient]:
    """A real atrepo host with its embedded PLC directory, on free ports of 127.0.0.1, on each backend."""
    clock = TokenClock()
    config = HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database)
    running = await start_host(config, clock_ms=clock, validate_output=True)
    try:
        yield HostClient(running, http, clock)
    finally:
        await running.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Script], Awaitable[ScriptedUpstream]]]:
    """``await upstream(script)``: a scripted subscribeRepos server; stopped at the end."""
    runners: list[web.AppRunner] = []

    async def make(script: Script) -> ScriptedUpstream:
        server = ScriptedUpstream(script)
        runners.append(await server.start())
        return server

    try:
        yield make
    finally:
        for runner in runners:
            await runner.cleanup()
