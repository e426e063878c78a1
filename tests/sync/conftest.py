"""Real hosts (the first runs the embedded PLC directory) on 127.0.0.1 for the sync consumer's tests.

``sync_env`` gives a :class:`SyncEnv` (``sync_support.py``): hosts with a
known admin password, helpers to write records and flip account states, and
the digest of a host's ``getRepo`` to compare the mirror with. The relay
tests' helpers (``relay_testenv``, ``upstream_proxy``) are imported from
``tests/relay``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "relay"))

from sync_support import SyncEnv

#: Every sync test gives up after this long instead of hanging the suite.
TEST_TIMEOUT_S = 90


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def sync_env(tmp_path: Path) -> AsyncIterator[SyncEnv]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        env = SyncEnv(tmp_path, http)
        try:
            yield env
        finally:
            await env.close()
