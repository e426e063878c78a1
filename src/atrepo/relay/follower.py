"""``atrepo relay --role fanout|sequencer``: serve (and sequence) a PostgreSQL relay's firehose apart.

One relay process ingests: it verifies upstream events and sequences them
into the shared event log (the single sequencer, :mod:`atrepo.store.relay`).
Serving ``subscribeRepos`` is a different load (per-subscriber sockets and
backfill reads, growing with the number of consumers, not with the network's
event rate), so it can run in as many extra processes, on as many machines,
as the subscribers need. A fan-out process:

- opens the relay's store as a *follower* (no writer lock, writes refused);
- ``LISTEN``\\ s on ``atrepo_relay_events``: each batch the ingesting relay
  commits notifies its new head seq, and the fan-out reads the new events
  (:meth:`Fanout.notify`, so the pump reads them once for every subscriber);
- polls the head every :data:`POLL_S` seconds as a safety net (a
  notification lost while its listening connection was being re-opened);
- feeds the same :class:`~atrepo.firehose.Fanout` and ``subscribeRepos``
  endpoint as the relay itself, so a subscriber sees the same seqs and the
  same bytes from either process, and its cursor is valid on both;
- serves ``/xrpc/_health`` (503 when the database stops answering) and
  ``/metrics`` (head seq, subscribers, the firehose's counters).

It ingests nothing and keeps no state of its own: kill it and start another,
and subscribers reconnect with their cursor.

**The sequencer** (``atrepo relay --role sequencer``) is the same process
plus the one job that must not be split: giving events their seqs. Ingest
processes (``--role ingest --partition I/N``, :mod:`.app`) verify the hosts
of their partition and commit each batch's accounts, collections and host
cursors with its events' frames into the ``pending`` queue, without seqs,
and ``NOTIFY atrepo_relay_pending``. The sequencer (the one process holding
the sequencer's advisory lock) listens on that channel, with a poll every
:data:`SEQUENCE_POLL_S` seconds besides, and moves up to
:data:`SEQUENCE_BATCH` queued rows at a time into the log
(:meth:`~atrepo.store.relay.RelayStore.sequence_pending`: seqs from the
counter row, each frame's seq written in place, the rows deleted, ``NOTIFY
atrepo_relay_events``, one transaction), then hands them to its own
subscribers and, through the notification, to every fan-out process. It
also prunes the log past the retention window.

*Why no gap is ever visible.* Seqs are allocated only here, inside the
transaction that also stores the events, by the one process allowed to:
transactions that allocate seqs commit one after another, each a
contiguous run after the last, so a reader sees the log grow by whole runs
in seq order. Ingest transactions commit concurrently and in any order, but
they allocate nothing; a queued row that commits "late" (its id below one
already sequenced) just takes the next seq in a later round.

*Why each account's events stay in order.* An account's events come from its
host, and a host belongs to one ingest partition, whose process commits its
batches one after another; the queue's ids grow with those commits, and the
sequencer takes visible rows in id order, so one partition's events are
sequenced in its commit order. (An account that migrates to a host of
another partition is verified there from its row in the shared database,
which the previous partition's process kept up to date.)

Crawl requests: the sequencer serves ``com.atproto.sync.requestCrawl``
(checked as the whole relay checks them) and only stores the new host; the
ingest process of the host's partition picks it up when it next reads the
hosts table, seeds it and subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

from atrepo.firehose import Fanout, mount_subscribe_repos
from atrepo.firehose.follow import LogFollower
from atrepo.store.relay import (
    RELAY_EVENTS_CHANNEL,
    RELAY_PENDING_CHANNEL,
    PostgresRelayStore,
    RelayStore,
    open_relay_store,
)
from atrepo.store.worker import StoreWorker
from atrepo.xrpc import Metrics, XrpcRouter
from atrepo.xrpc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from atrepo.xrpc.server import XrpcContext, bind_listener

from .app import prune_forever
from .config import RelayConfig
from .hosts import register_crawl

__all__ = ["POLL_S", "SEQUENCE_BATCH", "SEQUENCE_POLL_S", "RunningFanout", "start_fanout"]

log = logging.getLogger("atrepo.relay.fanout")

#: The safety-net poll of the log's head, in seconds (notifications do the real work).
POLL_S: Final = 5.0
#: The sequencer: its poll of the queue besides notifications, and the most rows one transaction moves.
SEQUENCE_POLL_S: Final = 2.0
SEQUENCE_BATCH: Final = 1000
#: How long one wait for a notification blocks its thread: also how quickly the listener stops.
_WAIT_S: Final = 0.5
#: Pause before opening a new listening connection after one failed.
_RETRY_S: Final = 1.0
SHUTDOWN_GRACE_S: Final = 10.0

ROOT_TEXT: Final = (
    "This is an AT Protocol relay's {what} process (atrepo): /xrpc/com.atproto.sync.subscribeRepos "
    "serves the relay's firehose. Health: /xrpc/_health; metrics: /metrics.\n"
)


def _head_seq(store: RelayStore) -> int:
    return store.head_seq()


@dataclass(eq=False)
class RunningFanout:
    """A started fan-out process: its URL, store, fan-out, and :meth:`stop`."""

    config: RelayConfig
    url: str
    store: PostgresRelayStore
    worker: StoreWorker[RelayStore]
    fanout: Fanout[RelayStore]
    _runner: web.AppRunner
    #: The sequencer's client for ``requestCrawl`` probes (None in a fan-out process).
    http: aiohttp.ClientSession | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = False
    #: The fan-out process's follower of the log (None in the sequencer, which sequences instead).
    _follower: LogFollower | None = None
    #: The sequencer's own counts of the same (see the properties below).
    _queue_notifications: int = 0
    _queue_listening: bool = False
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    #: The sequencer: events it moved from the queue into the log, in how many transactions.
    sequenced: int = 0
    sequence_batches: int = 0

    @property
    def notifications(self) -> int:
        """Notifications received (each may announce several batches)."""
        return self._follower.notifications if self._follower is not None else self._queue_notifications

    @property
    def listening(self) -> bool:
        """A listening connection is open (False while it is being re-opened)."""
        return self._follower.listening if self._follower is not None else self._queue_listening

    @property
    def sequencer(self) -> bool:
        """This process is the sequencer (``--role sequencer``), not a plain fan-out process."""
        return self.store.sequencer

    async def stop(self) -> None:
        """Stop following, close subscribers (1012: reconnect), the server, then the store."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        try:
            if self._follower is not None:
                await self._follower.stop()
            # The listener's thread notices within _WAIT_S; the poll sleeps, so it is cancelled.
            for task in self._tasks:
                if task.get_name() in ("atrepo-relay-fanout-poll", "atrepo-relay-maintenance"):
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.fanout.close()
            await self._runner.cleanup()
        finally:
            try:
                await self.worker.close()
            finally:
                self.store.close()
                if self.http is not None:
                    await self.http.close()
        log.info("relay %s stopped", "sequencer" if self.sequencer else "fan-out")

    async def _sequence(self) -> None:
        """The sequencer: drain the queue on each notification and every ``SEQUENCE_POLL_S``."""
        while not self._stopping.is_set():
            try:
                listener = await asyncio.to_thread(self.store.listen, RELAY_PENDING_CHANNEL)
            except Exception as exc:
                log.warning("relay sequencer: cannot listen for queued events (%s); retrying", exc)
                await self._pause(_RETRY_S)
                continue
            try:
                self._queue_listening = True
                polled = 0.0  # drain at once: rows queued before LISTEN took effect were not announced
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if polled == 0.0 or now - polled >= SEQUENCE_POLL_S:
                        polled = now
                        await self._drain()
                    if await asyncio.to_thread(listener.wait, _WAIT_S) is not None:
                        self._queue_notifications += 1
                        await self._drain()
            except Exception as exc:
                log.warning("relay sequencer: %s; listening again", exc)
            finally:
                self._queue_listening = False
                listener.close()
            await self._pause(_RETRY_S)

    async def _drain(self) -> None:
        """Sequence queued events until fewer than a whole batch are left; offer each to the fan-out."""
        while not self._stopping.is_set():
            rows = await self.worker.run(RelayStore.sequence_pending, SEQUENCE_BATCH)
            if rows:
                self.sequenced += len(rows)
                self.sequence_batches += 1
                self.fanout.offer(rows)  # committed: the transaction returned
            if len(rows) < SEQUENCE_BATCH:
                return

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.fanout.notify(await self.worker.read(_head_seq))
            except Exception as exc:
                log.warning("relay fan-out: reading the head seq failed (%s)", exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


async def start_fanout(config: RelayConfig) -> RunningFanout:
    """Open the relay's PostgreSQL store, bind, serve ``subscribeRepos``, follow (or sequence) the log.

    ``config.role`` ``fanout``: the store as a follower; ``sequencer``: with
    the sequencer's lock, sequencing what ingest processes queue (module
    docstring). Raises ``ValueError`` without a PostgreSQL
    ``config.database``, :class:`~atrepo.core.errors.StoreUnavailable` when
    the server cannot be reached, :class:`~atrepo.core.errors.StoreInUse`
    when another sequencer (or a whole relay) holds the store.
    """
    if config.database is None:
        raise ValueError(
            f"a relay's {config.role} process shares its PostgreSQL store: give --database postgresql://..."
        )
    if config.role not in ("fanout", "sequencer"):
        raise ValueError(f"start_fanout runs a fan-out or the sequencer, not {config.role!r}")
    sequencer = config.role == "sequencer"
    sock = bind_listener(config.host, config.port)
    try:
        store = open_relay_store(config.database, follower=not sequencer, sequencer=sequencer)
    except BaseException:
        sock.close()
        raise
    assert isinstance(store, PostgresRelayStore)
    worker: StoreWorker[RelayStore] = StoreWorker(store)
    fanout: Fanout[RelayStore] = Fanout(worker)
    metrics = Metrics()

    async def health() -> None:
        await worker.read(_head_seq)

    router = XrpcRouter(metrics=metrics, health_check=health)
    mount_subscribe_repos(router, store, worker, fanout)
    head = metrics.gauge("atrepo_relay_head_seq", "Seq of the newest event in the relay's firehose")
    subscribers = metrics.gauge("atrepo_relay_subscribers", "Connected downstream subscribers")
    http: aiohttp.ClientSession | None = None
    if sequencer:
        pending = metrics.gauge(
            "atrepo_relay_pending_events", "Events queued by ingest processes, not sequenced"
        )
        sequenced = metrics.gauge("atrepo_relay_sequenced_events", "Events this sequencer moved into the log")
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=10), headers={"User-Agent": "atrepo-relay"}
        )
        session = http

        @router.procedure("com.atproto.sync.requestCrawl")
        async def request_crawl(xc: XrpcContext) -> None:
            await register_crawl(worker, session, config, str(xc.input["hostname"]))

    app = web.Application()
    router.setup(app)
    running: RunningFanout | None = None

    async def metrics_page(request: web.Request) -> web.Response:
        head.set(fanout.tail)
        subscribers.set(len(fanout.subscribers))
        if sequencer and running is not None:
            pending.set(await worker.read(RelayStore.pending_count))
            sequenced.set(running.sequenced)
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def root(request: web.Request) -> web.Response:
        return web.Response(text=ROOT_TEXT.format(what=config.role.replace("fanout", "fan-out")))

    app.router.add_get("/metrics", metrics_page, allow_head=True)
    app.router.add_get("/", root, allow_head=True)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    try:
        await fanout.start()
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await fanout.close()
        await runner.cleanup()
        await worker.close()
        store.close()
        sock.close()
        if http is not None:
            await http.close()
        raise
    port = sock.getsockname()[1]
    url = f"http://{config.host}:{port}" if ":" not in config.host else f"http://[{config.host}]:{port}"
    running = RunningFanout(config, url, store, worker, fanout, runner, http=http)
    loop = asyncio.get_running_loop()
    if sequencer:  # its own transactions feed its fan-out (offer); the poll is the safety net
        running._tasks = [
            loop.create_task(running._sequence(), name="atrepo-relay-sequencer"),
            loop.create_task(prune_forever(worker, config.retention_hours), name="atrepo-relay-maintenance"),
            loop.create_task(running._poll(), name="atrepo-relay-fanout-poll"),
        ]
    else:  # committed batches announce their head; the follower's poll is the safety net
        running._follower = LogFollower(
            functools.partial(store.listener, RELAY_EVENTS_CHANNEL),
            functools.partial(worker.read, _head_seq),
            fanout.notify,
            name="relay fan-out",
            poll_s=POLL_S,
            wait_s=_WAIT_S,
            retry_s=_RETRY_S,
        )
        running._follower.start()
    log.info(
        "relay %s listening on %s (following %s from seq %d)",
        "sequencer" if sequencer else "fan-out",
        url,
        store.location,
        fanout.tail,
    )
    return running
