"""Fixtures: ``await start(**options)`` gives a running firehose, stopped (fan-out first) at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from firehose_support import Firehose, start_firehose

from pg_support import Cluster

#: Every test here gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def start(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Firehose]]]:
    """Each firehose it starts has its own store on the backend under test (PostgreSQL: a fresh database)."""
    runners: list[web.AppRunner] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    server: Cluster | None = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    databases: list[str] = []
    count = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def make(**options: Any) -> Firehose:
            nonlocal count
            count += 1
            if server is not None:
                databases.append(server.new_database())
                options["database"] = databases[-1]
            return await start_firehose(tmp_path / f"data{count}", session, runners, closers, **options)

        try:
            yield make
        finally:
            for close in reversed(closers):
                await close()
            for runner in reversed(runners):
                await runner.cleanup()
            for url in databases:
                assert server is not None
                server.drop_database(url)
