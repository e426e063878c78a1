"""``atrepo relay --role fanout``: serve a PostgreSQL relay's firehose from another process.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from atrepo.firehose import Fanout, mount_subscribe_repos
from atrepo.store.relay import PostgresRelayStore, RelayStore, open_relay_store
from atrepo.store.worker import StoreWorker
from atrepo.xrpc import Metrics, XrpcRouter
from atrepo.xrpc.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from atrepo.xrpc.server import bind_listener

from .config import RelayConfig

__all__ = ["POLL_S", "RunningFanout", "start_fanout"]

log = logging.getLogger("atrepo.relay.fanout")

#: The safety-net poll of the log's head, in seconds (notifications do the real work).
POLL_S: Final = 5.0
#: How long one wait for a notification blocks its thread: also how quickly the listener stops.
_WAIT_S: Final = 0.5
#: Pause before opening a new listening connection after one failed.
_RETRY_S: Final = 1.0
SHUTDOWN_GRACE_S: Final = 10.0

ROOT_TEXT: Final = (
    "This is an AT Protocol relay's fan-out process (atrepo): /xrpc/com.atproto.sync.subscribeRepos "
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
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopped: bool = False
    #: Notifications received (each may announce several batches).
    notifications: int = 0
    #: A listening connection is open (False while it is being re-opened).
    listening: bool = False
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    async def stop(self) -> None:
        """Stop following, close subscribers (1012: reconnect), the server, then the store."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        try:
            # The listener's thread notices within _WAIT_S; the poll sleeps, so it is cancelled.
            for task in self._tasks:
                if task.get_name() == "atrepo-relay-fanout-poll":
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.fanout.close()
            await self._runner.cleanup()
        finally:
            try:
                await self.worker.close()
            finally:
                self.store.close()
        log.info("relay fan-out stopped")

    async def _listen(self) -> None:
        """Follow the notifications of committed batches until stopped, re-listening after a failure."""
        while not self._stopping.is_set():
            try:
                listener = await asyncio.to_thread(self.store.listen)
            except Exception as exc:
                log.warning("relay fan-out: cannot listen for new events (%s); retrying", exc)
                await self._pause(_RETRY_S)
                continue
            try:
                # What was committed before LISTEN took effect was not announced to us: read the head.
                self.fanout.notify(await self.worker.read(_head_seq))
                self.listening = True
                while not self._stopping.is_set():
                    seq = await asyncio.to_thread(listener.wait, _WAIT_S)
                    if seq is not None:
                        self.notifications += 1
                        self.fanout.notify(seq)
            except Exception as exc:
                log.warning("relay fan-out: listening connection lost (%s); reconnecting", exc)
            finally:
                self.listening = False
                listener.close()
            await self._pause(_RETRY_S)  # only after a failure: a stop returns at once

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
    """Open the relay's PostgreSQL store as a follower, bind, serve ``subscribeRepos``, follow the log.

    Raises ``ValueError`` without a PostgreSQL ``config.database``,
    :class:`~atrepo.core.errors.StoreUnavailable` when the server cannot be
    reached.
    """
    if config.database is None:
        raise ValueError(
            "a fan-out process follows a relay's PostgreSQL store: give --database postgresql://..."
        )
    sock = bind_listener(config.host, config.port)
    try:
        store = open_relay_store(config.database, follower=True)
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
    app = web.Application()
    router.setup(app)

    async def metrics_page(request: web.Request) -> web.Response:
        head.set(fanout.tail)
        subscribers.set(len(fanout.subscribers))
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def root(request: web.Request) -> web.Response:
        return web.Response(text=ROOT_TEXT)

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
        raise
    port = sock.getsockname()[1]
    url = f"http://{config.host}:{port}" if ":" not in config.host else f"http://[{config.host}]:{port}"
    running = RunningFanout(config, url, store, worker, fanout, runner)
    loop = asyncio.get_running_loop()
    running._tasks = [
        loop.create_task(running._listen(), name="atrepo-relay-fanout-listen"),
        loop.create_task(running._poll(), name="atrepo-relay-fanout-poll"),
    ]
    log.info("relay fan-out listening on %s (following %s from seq %d)", url, store.location, fanout.tail)
    return running
