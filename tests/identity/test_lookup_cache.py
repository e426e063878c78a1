"""LookupCache rules that the resolver tests do not reach directly."""

from __future__ import annotations

import asyncio

import pytest

from atrepo.core.errors import ResolutionError
from atrepo.identity.cache import LookupCache
from conftest import MonotonicFake


async def test_eviction_keeps_the_most_recent(monotonic: MonotonicFake) -> None:
    cache: LookupCache[str, int] = LookupCache(max_entries=2, clock=monotonic)
    assert await cache.get("a", lambda: _value(1)) == 1
    assert await cache.get("b", lambda: _value(2)) == 2
    await cache.get("a", lambda: _value(99))  # touch a: b is now the oldest
    await cache.get("c", lambda: _value(3))
    assert len(cache) == 2 and cache.peek("b") is None and cache.peek("a") == 1


async def test_purge_discards_a_running_fetch(monotonic: MonotonicFake) -> None:
    cache: LookupCache[str, int] = LookupCache(clock=monotonic)
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 1

    waiting = asyncio.ensure_future(cache.get("k", slow))
    await asyncio.sleep(0)
    cache.purge("k")
    gate.set()
    assert await waiting == 1  # the caller still gets its answer...
    assert cache.peek("k") is None  # ...but it is not kept after the purge
    assert await cache.get("k", lambda: _value(2)) == 2


async def test_errors_other_than_atrepo_are_not_cached(monotonic: MonotonicFake) -> None:
    cache: LookupCache[str, int] = LookupCache(clock=monotonic)

    async def broken() -> int:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await cache.get("k", broken)
    assert await cache.get("k", lambda: _value(5)) == 5

    async def missing() -> int:
        raise ResolutionError("gone")

    with pytest.raises(ResolutionError):
        await cache.get("m", missing)
    with pytest.raises(ResolutionError):
        await cache.get("m", lambda: _value(1))  # answered by the negative entry
    assert cache.stats.negative_hits == 1


async def test_close_cancels_background_work(monotonic: MonotonicFake) -> None:
    cache: LookupCache[str, int] = LookupCache(ttl=1, stale_ttl=100, clock=monotonic)
    await cache.get("k", lambda: _value(1))
    monotonic.now += 2
    never = asyncio.Event()

    async def hang() -> int:
        await never.wait()
        return 2

    assert await cache.get("k", hang) == 1  # stale value, refresh started
    await cache.close()
    assert cache.peek("k") == 1


async def _value(v: int) -> int:
    return v
