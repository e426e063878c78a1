"""Fixtures: ``await start(**options)`` gives a running firehose, stopped (fan-out first) at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from firehose_support import Firehose, start_firehose

#: Every test here gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Firehose]]]:
    runners: list[web.AppRunner] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    count = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def make(**options: Any) -> Firehose:
            nonlocal count
            count += 1
            return await start_firehose(tmp_path / f"data{count}", session, runners, closers, **options)

        try:
            yield make
        finally:
            for close in reversed(closers):
                await close()
            for runner in reversed(runners):
                await runner.cleanup()
