"""The host's status page: what an operator checks first, at ``/`` (HTML) and ``/status.json``.

The generic machinery (escaping, headers, negotiation, the refreshing script)
is :mod:`atrepo.xrpc.status_page`; this module only lists the host's facts
and collects them. Every value is named one by one from
:class:`~atrepo.host.app.HostContext` and the store, never by dumping the
configuration, so a secret cannot slip in when a setting is added.

The counts come from places that are already cheap: the metrics the host
keeps anyway (commits and events since start), the firehose's set of
subscribers, the writer's queue depth, and two one-row reads of the event
log. Only the per-status account tally scans a table (about 75 ms for 200,000
accounts in SQLite), so :class:`AccountTally` counts again only after a write
on a small host, and no more often than every hundred times its cost on a big
one (7.5 s for those 200,000).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

import atrepo
from atrepo.store import SQLiteStore, StoreWorker
from atrepo.xrpc.metrics import Counter
from atrepo.xrpc.status_page import Fact, StatusPage, add_status_routes, public_url

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["HOST_STATUS_PAGE", "AccountTally", "HostStatus", "add_host_status_routes"]

#: The answer to ``GET /`` for clients that do not ask for HTML (curl, SDKs), as before the page.
ROOT_TEXT: Final = (
    "This is an AT Protocol repository host (atrepo). Routes are under /xrpc/.\n"
    "Status: /status.json (or open / in a browser).\n"
)

#: A per-status count that took less than this is redone after every write that appended events...
TALLY_CHEAP_S: Final = 0.02
#: ...and at least this often without one.
TALLY_IDLE_S: Final = 1.0
#: A slower one is kept this many times as long as it took to count...
TALLY_COST_FACTOR: Final = 100.0
#: ...but never longer than this.
TALLY_MAX_AGE_S: Final = 30.0

HOST_STATUS_PAGE: Final = StatusPage(
    title="atrepo repository host",
    text=ROOT_TEXT,
    sections=(
        (
            "Service",
            (
                Fact("Software", "software.name"),
                Fact("Version", "software.version"),
                Fact("Public URL", "service.publicUrl"),
                Fact("Service DID", "service.did"),
                Fact("PLC directory", "service.plcUrl"),
                Fact("Started", "service.startedAt"),
                Fact("Uptime", "service.uptimeSeconds", "duration"),
            ),
        ),
        (
            "Accounts",
            (
                Fact("Accounts", "accounts.total", "count"),
                Fact("By status", "accounts.byStatus", "counts"),
            ),
        ),
        (
            "Event log and firehose",
            (
                Fact("Head seq", "events.headSeq", "count"),
                Fact("Oldest retained seq", "events.oldestSeq", "count"),
                Fact("Retention window", "events.retentionHours", unit="h"),
                Fact("Firehose subscribers", "firehose.subscribers", "count"),
            ),
        ),
        (
            "Writes since start",
            (
                Fact("Commits", "writes.commitsSinceStart", "count"),
                Fact("Events", "writes.eventsSinceStart", "count"),
                Fact("Writer queue depth", "writes.writerQueueDepth", "count"),
            ),
        ),
        ("Relays", (Fact("Relays notified (requestCrawl)", "relays", "list"),)),
    ),
    links=(("status.json", "/status.json"), ("metrics", "/metrics"), ("health", "/xrpc/_health")),
)


class AccountTally:
    """Accounts by status, counted again only when it may have changed and as often as its cost allows.

    A write that appended events (account creation among them) bumps the
    tally's generation through ``HostContext.notify_event`` (:meth:`invalidate`).
    A cheap count (under ``TALLY_CHEAP_S``, timed on the reader thread) is
    redone on the next request after such a write, and at least every
    ``TALLY_IDLE_S`` for changes that append no event; an expensive one is
    kept for ``TALLY_COST_FACTOR`` times its cost (at most ``TALLY_MAX_AGE_S``)
    whatever happens, so polling a big host's page costs it about 1% of one
    reader thread. Concurrent requests share one count.
    """

    def __init__(
        self,
        worker: StoreWorker[SQLiteStore],
        *,
        clock: Callable[[], float] = time.monotonic,
        cheap_s: float = TALLY_CHEAP_S,
        cost_factor: float = TALLY_COST_FACTOR,
    ) -> None:
        self._worker = worker
        self._clock = clock
        self._cheap_s = cheap_s
        self._cost_factor = cost_factor
        self._counts: dict[str, int] | None = None
        self._counted_at = 0.0
        self._cost = 0.0
        self._generation = 0
        self._counted_generation = -1
        self._pending: asyncio.Future[dict[str, int]] | None = None

    def invalidate(self, _head_seq: int | None = None) -> None:
        """Note that accounts may have changed (a ``notify_event`` hook)."""
        self._generation += 1

    def _fresh(self, now: float) -> bool:
        if self._counts is None:
            return False
        age = now - self._counted_at
        if self._cost >= self._cheap_s:
            return age < min(TALLY_MAX_AGE_S, self._cost * self._cost_factor)
        return self._counted_generation == self._generation and age < TALLY_IDLE_S

    async def get(self) -> dict[str, int]:
        """The tally (sorted by status), counted again unless the kept one is still good."""
        if self._counts is not None and self._fresh(self._clock()):
            return self._counts
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._count())
        return await asyncio.shield(self._pending)

    async def _count(self) -> dict[str, int]:
        generation = self._generation
        counts, cost = await self._worker.read(_timed_count)
        self._counts = dict(sorted(counts.items()))
        self._counted_at = self._clock()
        self._cost = cost
        self._counted_generation = generation
        return self._counts


def _timed_count(store: SQLiteStore) -> tuple[dict[str, int], float]:
    """``count_accounts`` and the seconds it took, timed on the reader thread (not in the queue)."""
    started = time.perf_counter()
    counts = store.count_accounts()
    return counts, time.perf_counter() - started


class HostStatus:
    """Collects the host's status document; built with the app, so uptime counts from start-up."""

    def __init__(self, host: HostContext, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._clock = clock
        self._started = clock()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.tally = AccountTally(host.worker, clock=clock)
        host.notify_event.append(self.tally.invalidate)

    def _metric(self, name: str) -> int:
        metric = self.host.metrics.get(name)
        return int(metric.value()) if isinstance(metric, Counter) else 0

    async def collect(self) -> dict[str, Any]:
        """The document of ``/status.json`` (and of the page's first view)."""
        host = self.host
        by_status = await self.tally.get()
        head_seq = await host.worker.read(SQLiteStore.head_seq)
        oldest_seq = await host.worker.read(SQLiteStore.oldest_seq)
        return {
            "software": {"name": "atrepo", "version": atrepo.__version__, "role": "host"},
            "service": {
                "publicUrl": public_url(host.public_url),
                "did": host.service_did,
                "plcUrl": public_url(host.plc_url),
                "startedAt": self.started_at,
                "uptimeSeconds": int(self._clock() - self._started),
            },
            "accounts": {"total": sum(by_status.values()), "byStatus": by_status},
            "events": {
                "headSeq": head_seq,
                "oldestSeq": oldest_seq,
                "retentionHours": host.config.event_retention_hours,
            },
            "firehose": {"subscribers": len(host.fanout.subscribers)},
            "writes": {
                "commitsSinceStart": self._metric("atrepo_host_commits_total"),
                "eventsSinceStart": self._metric("atrepo_host_events_total"),
                "writerQueueDepth": host.worker.pending,
            },
            "relays": [public_url(relay) for relay in host.crawlers.relays],
        }


def add_host_status_routes(app: web.Application, host: HostContext) -> HostStatus:
    """Mount ``/``, ``/status.json`` and the page's assets on the host's app; return the collector."""
    status = HostStatus(host)
    add_status_routes(app, HOST_STATUS_PAGE, status.collect)
    return status
