"""The record stream's end-to-end test runs ``atrepo sync`` against real hosts: the sync tests' helpers.

``sync_env`` is the fixture of ``tests/sync/conftest.py`` (``SyncEnv`` from
``tests/sync/sync_support.py``, which imports ``tests/relay`` helpers), made
importable here without moving or copying it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

_TESTS = Path(__file__).parent.parent
for _dir in ("sync", "relay"):
    if str(_TESTS / _dir) not in sys.path:
        sys.path.insert(0, str(_TESTS / _dir))

from sync_support import SyncEnv  # noqa: E402


@pytest.fixture
async def sync_env(tmp_path: Path) -> AsyncIterator[SyncEnv]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        env = SyncEnv(tmp_path, http)
        try:
            yield env
        finally:
            await env.close()
