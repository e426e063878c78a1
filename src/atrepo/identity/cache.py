"""An async lookup cache: TTL, stale-while-revalidate, coalescing, negative entries.

Resolution sits on the hot path of signature checks, so a lookup must almost
always be a dictionary hit; when it is not, a burst of lookups for one key must
cost one request, a key that fails must not be asked for again at once, and a
stale value is better served immediately while one refresh runs behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from atrepo.core.errors import AtrepoError
from atrepo.identity import limits

__all__ = ["CacheStats", "LookupCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("atrepo.identity.cache")


@dataclass
class _Entry(Generic[V]):
    value: V | None
    error: AtrepoError | None
    fresh_until: float
    stale_until: float


@dataclass
class CacheStats:
    """Counters for operators and benchmarks."""

    hits: int = 0
    stale_hits: int = 0
    misses: int = 0
    coalesced: int = 0
    negative_hits: int = 0
    fetches: int = 0
    failures: int = 0


class LookupCache(Generic[K, V]):
    """Cache of ``key -> value`` filled by an async fetch function per lookup.

    * fresh entries (younger than ``ttl``) are returned as they are;
    * stale entries (up to ``ttl + stale_ttl``) are returned and refreshed in
      the background, one refresh per key;
    * lookups of a key while its fetch runs wait for that same fetch;
    * ``force_refresh`` always fetches anew, except that forced refreshes
      arriving while another forced fetch runs share it;
    * a fetch that raises :class:`AtrepoError` is remembered for
      ``negative_ttl`` (a stale good value is kept instead, if there is one);
    * :meth:`purge` forgets a key, and results of fetches that were already
      running when it was purged are not stored.
    """

    def __init__(
        self,
        *,
        ttl: float = limits.CACHE_TTL_S,
        stale_ttl: float = limits.CACHE_STALE_S,
        negative_ttl: float = limits.NEGATIVE_TTL_S,
        max_entries: int = limits.CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        #: Keys whose running fetch was started by a forced refresh.
        self._forced: set[K] = set()
        self._generation: dict[K, int] = {}
        self._background: set[asyncio.Future[V]] = set()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: K) -> V | None:
        """The cached value (fresh or stale) without fetching, or None."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def purge(self, key: K) -> None:
        """Forget ``key``; the next lookup fetches again."""
        self._entries.pop(key, None)
        self._inflight.pop(key, None)
        self._forced.discard(key)
        self._generation[key] = self._generation.get(key, 0) + 1

    def clear(self) -> None:
        for key in list(self._entries):
            self.purge(key)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an entry (fresh, stale or a cached failure); it does not refresh it."""
        return key in self._entries

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]], *, force_refresh: bool = False) -> V:
        """The value for ``key``, fetching only when the cache cannot answer."""
        if not force_refresh:
            entry = self._entries.get(key)
            if entry is not None:
                now = self._clock()
                if now < entry.fresh_until:
                    self._entries.move_to_end(key)
                    if entry.error is not None:
                        self.stats.negative_hits += 1
                        raise entry.error.with_traceback(None)
                    self.stats.hits += 1
                    return cast(V, entry.value)
                if entry.error is None and now < entry.stale_until:
                    self.stats.stale_hits += 1
                    if key not in self._inflight:
                        task = self._start(key, fetch)
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                    return cast(V, entry.value)
        self.stats.misses += 1
        # A forced refresh must not be answered by a fetch that may predate the
        # change it looks for, but forced refreshes do share one fetch.
        running = self._inflight.get(key)
        if running is None or (force_refresh and key not in self._forced):
            running = self._start(key, fetch, forced=force_refresh)
        else:
            self.stats.coalesced += 1
        return await asyncio.shield(running)

    def _start(self, key: K, fetch: Callable[[], Awaitable[V]], *, forced: bool = False) -> asyncio.Future[V]:
        task = asyncio.ensure_future(self._load(key, fetch, self._generation.get(key, 0)))
        self._inflight[key] = task
        if forced:
            self._forced.add(key)
        else:
            self._forced.discard(key)

        def done(finished: asyncio.Future[V]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
                self._forced.discard(key)
            if not finished.cancelled():
                finished.exception()  # retrieved here so an unawaited failure is not reported

        task.add_done_callback(done)
        return task

    async def _load(self, key: K, fetch: Callable[[], Awaitable[V]], generation: int) -> V:
        self.stats.fetches += 1
        try:
            value = await fetch()
        except AtrepoError as exc:
            self.stats.failures += 1
            if self._generation.get(key, 0) == generation:
                self._remember_failure(key, exc)
            raise
        if self._generation.get(key, 0) == generation:
            now = self._clock()
            self._store(key, _Entry(value, None, now + self.ttl, now + self.ttl + self.stale_ttl))
        return value

    def _remember_failure(self, key: K, exc: AtrepoError) -> None:
        now = self._clock()
        old = self._entries.get(key)
        if old is not None and old.error is None and now < old.stale_until:
            log.warning("identity: refresh of %s failed, keeping the stale value: %s", key, exc)
            return
        self._store(key, _Entry(None, exc, now + self.negative_ttl, now + self.negative_ttl))

    def _store(self, key: K, entry: _Entry[V]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        """Cancel background refreshes (call before the event loop ends)."""
        pending = list(self._background) + list(self._inflight.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._background.clear()
        self._inflight.clear()
        self._forced.clear()
