"""``atrepo sync`` as a running service: the engine plus its small HTTP server.

The server is for the operator and for readers of the mirror: ``/`` and
``/status.json`` (the shared status page: repositories by state, events/s,
lag), ``/metrics`` (``atrepo_sync_*``), and the Jetstream endpoint
(``/xrpc/network.bsky.jetstream.subscribeEvents`` and the classic wire at
``/subscribe``, over ``MirrorStore.read_events``; told of each write through
``engine.listeners``). Other outputs plug in through ``routes``: each is
called with the ``web.Application`` and the running engine before the server
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import atrepo
from atrepo.store.mirror import MirrorStore
from atrepo.xrpc.metrics import Metrics, add_metrics_route
from atrepo.xrpc.server import health_reply
from atrepo.xrpc.status_page import Column, Fact, StatusPage, Table, add_status_routes, public_url

from .engine import SyncConfig, SyncEngine
from .jetstream import JetstreamServer, mount_jetstream
from .stream import RecordStream, mount_record_stream

__all__ = ["RouteHook", "RunningSync", "start_sync"]

log = logging.getLogger("atrepo.sync")

#: ``hook(app, running)``: add routes to the sync server before it starts (the Jetstream endpoint).
RouteHook = Callable[[web.Application, "RunningSync"], None]

STATUS_PAGE = StatusPage(
    title="atrepo sync",
    text="atrepo sync: a verified mirror of AT Protocol repositories. See /status.json and /metrics.\n",
    sections=(
        (
            "Upstream",
            (
                Fact("Upstream", "upstream"),
                Fact("Mirror", "mirror"),
                Fact("Connected", "connected"),
                Fact("Cursor", "cursor", "count"),
                Fact("Head seq seen", "headSeq", "count"),
                Fact("Lag (events)", "lag", "count"),
                Fact("Lag (seconds)", "lagSeconds"),
                Fact("Events/s", "eventsPerSecond"),
                Fact("Uptime", "uptimeSeconds", "duration"),
            ),
        ),
        (
            "Repositories",
            (
                Fact("Tracked", "repos.total", "count"),
                Fact("Active", "repos.active", "count"),
                Fact("Pending", "repos.pending", "count"),
                Fact("Backfilling", "repos.backfilling", "count"),
                Fact("Desynchronized", "repos.desynchronized", "count"),
                Fact("Resyncing", "repos.resyncing", "count"),
                Fact("Error", "repos.error", "count"),
            ),
        ),
        (
            "Work",
            (
                Fact("Events", "counts.events", "count"),
                Fact("Commits applied", "counts.commits_applied", "count"),
                Fact("Records written", "counts.records_written", "count"),
                Fact("Backfills", "counts.backfills", "count"),
                Fact("Resyncs", "counts.resyncs", "count"),
                Fact("Chain breaks", "counts.desyncs", "count"),
                Fact("Failed fetches", "counts.fetch_failures", "count"),
                Table(
                    "hosts",
                    (
                        Column("Host", "host"),
                        Column("Failures", "failures", "count"),
                        Column("Wait s", "waitS"),
                    ),
                    empty="no host is backing off",
                ),
            ),
        ),
    ),
    links=(("JSON", "/status.json"), ("Metrics", "/metrics")),
)


@dataclass
class RunningSync:
    """A started ``atrepo sync``: the engine, its server and its URL; ``stop()`` ends both."""

    engine: SyncEngine
    runner: web.AppRunner
    url: str
    metrics: Metrics
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _rate: tuple[float, int] = (0.0, 0)
    events_per_second: float = 0.0
    #: The Jetstream endpoint (``/subscribe`` and ``network.bsky.jetstream.subscribeEvents``).
    jetstream: JetstreamServer[MirrorStore] | None = None
    #: The acknowledged record stream (``/channel``), events sharded over its clients by DID.
    record_stream: RecordStream | None = None

    @property
    def store(self) -> MirrorStore:
        return self.engine.store

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.cleanup()
        await self.engine.stop()

    async def status(self) -> dict[str, Any]:
        """The status document (``/status.json``), also what the progress line shows."""
        engine = self.engine
        counts: dict[str, int] = dict.fromkeys(("pending", "backfilling", "active", "desynchronized"), 0)
        counts.update(dict.fromkeys(("resyncing", "error"), 0))
        for state in engine.tracked.values():
            counts[state] = counts.get(state, 0) + 1
        now = time.monotonic()
        hosts = [
            {"host": public_url(host), "failures": b.failures, "waitS": round(max(0.0, b.retry_at - now), 1)}
            for host, b in sorted(engine.hosts.items())
        ][:50]
        subscriber = engine.subscriber
        return {
            "upstream": public_url(engine.source),
            "mirror": engine.store.location,
            "connected": bool(subscriber is not None and subscriber.connected),
            "cursor": engine.cursor,
            "headSeq": engine.head_seq,
            "lag": engine.lag,
            "lagSeconds": engine.lag_seconds,
            "eventsPerSecond": round(self.events_per_second, 1),
            "uptimeSeconds": round(time.time() - engine.started_at, 1),
            "repos": {"total": len(engine.tracked), **counts},
            "counts": dict(engine.counts),
            "hosts": hosts,
        }

    def _sample(self) -> None:
        """Every second: events/s and the gauges (repos by state, lag)."""
        engine = self.engine
        now = time.monotonic()
        last_t, last_n = self._rate
        events = engine.counts["events"]
        if last_t:
            self.events_per_second = (events - last_n) / max(1e-6, now - last_t)
        self._rate = (now, events)
        by_state: dict[str, int] = {}
        for state in engine.tracked.values():
            by_state[state] = by_state.get(state, 0) + 1
        repos = self.metrics.get("atrepo_sync_repos")
        for state in ("pending", "backfilling", "active", "desynchronized", "resyncing", "error"):
            repos.set(by_state.get(state, 0), (state,))  # type: ignore[union-attr]
        for name, key in (
            ("atrepo_sync_cursor", engine.cursor),
            ("atrepo_sync_lag_events", engine.lag),
            ("atrepo_sync_lag_seconds", engine.lag_seconds),
        ):
            self.metrics.get(name).set(key or 0)  # type: ignore[union-attr]
        self.metrics.get("atrepo_sync_events_per_second").set(self.events_per_second)  # type: ignore[union-attr]
        totals = self.metrics.get("atrepo_sync_work_total")
        for name, value in engine.counts.items():
            current = totals.value((name,))  # type: ignore[union-attr]
            if value > current:
                totals.inc(value - current, (name,))  # type: ignore[union-attr]

    async def _sampler(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(1.0)

    async def _follow_shared_log(self, interval: float) -> None:
        """With partitions, other workers append to the shared event log: tell the outputs of its head
        (a read of one row) every ``interval`` seconds, as this worker's own writes do at once."""
        engine = self.engine
        seen = 0
        while True:
            await asyncio.sleep(interval)
            try:
                head = await engine.worker.read(MirrorStore.head_time_us)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync: reading the shared event log's head failed")
                continue
            if head > seen:
                seen = head
                for listener in engine.listeners:
                    listener(head)


def _metrics() -> Metrics:
    metrics = Metrics()
    metrics.gauge("atrepo_sync_repos", "Tracked repositories by sync state", ("state",))
    metrics.gauge("atrepo_sync_cursor", "Upstream seq up to which every event is stored")
    metrics.gauge("atrepo_sync_lag_events", "Events seen on the stream and not yet behind the cursor")
    metrics.gauge(
        "atrepo_sync_lag_seconds", "Age of the newest event handled while behind the upstream (0: caught up)"
    )
    metrics.gauge("atrepo_sync_events_per_second", "Events read from the upstream per second (last second)")
    metrics.counter("atrepo_sync_work_total", "Work done, by kind (events, commits, fetches...)", ("kind",))
    return metrics


def _add_health_route(app: web.Application, engine: SyncEngine) -> None:
    """``/xrpc/_health`` as the host and the relay answer it (200 with the version while the mirror's
    store answers, else 503), for a load balancer or an orchestrator's readiness check."""

    async def check() -> None:
        await engine.worker.read(MirrorStore.head_time_us)

    async def health(_request: web.Request) -> web.Response:
        return await health_reply(atrepo.__version__, check)

    app.router.add_get("/xrpc/_health", health)


async def start_sync(
    config: SyncConfig, *, routes: Sequence[RouteHook] = (), extra: Mapping[str, Any] | None = None
) -> RunningSync:
    """Start the engine and its server on ``config.host:config.port`` (0: a free port)."""
    engine = SyncEngine(config)
    metrics = _metrics()
    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    running = RunningSync(engine, runner, "", metrics)
    add_metrics_route(app, metrics)
    add_status_routes(app, STATUS_PAGE, running.status)
    _add_health_route(app, engine)
    # the Jetstream v2 endpoint (and the classic wire at /subscribe) over the mirror's event log
    jetstream = mount_jetstream(app, engine.store, engine.worker, metrics=metrics)
    engine.listeners.append(jetstream.notify)
    running.jetstream = jetstream
    # the acknowledged, DID-sharded record stream (Tap's model) over the same log
    record_stream = mount_record_stream(app, engine.store, engine.worker, metrics=metrics)
    engine.listeners.append(record_stream.notify)
    if config.partition is not None:  # each worker's channel keeps its own acknowledged position
        record_stream.cursor_source += f"#{config.partition[0]}/{config.partition[1]}"
    running.record_stream = record_stream
    for hook in routes:
        hook(app, running)
    sock: socket.socket | None = None
    try:
        sock = socket.create_server((config.host, config.port))
        await engine.start()
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        if sock is not None:
            sock.close()
        await engine.stop()
        raise
    port = sock.getsockname()[1]
    host = config.host if ":" not in config.host else f"[{config.host}]"
    running.url = f"http://{host}:{port}"
    running._tasks.append(asyncio.create_task(running._sampler(), name="sync-sampler"))
    if config.partition is not None:
        running._tasks.append(asyncio.create_task(running._follow_shared_log(0.2), name="sync-shared-log"))
    return running
