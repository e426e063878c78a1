"""An acknowledged, sharded WebSocket stream of the sync mirror's events (Tap's model).

The Jetstream endpoint (:mod:`atrepo.sync.jetstream`) broadcasts: every
subscriber gets every event it asks for and keeps its own cursor. A worker
pool that *processes* events wants the opposite: each event handled once,
by one of several workers, with nothing lost when a worker dies or the
server restarts. Indigo's Tap serves that with acknowledged
delivery; this module is our version over ``MirrorStore.read_events``:

* **Exactly one client per event.** Each event is sent, as
  ``{"type":"event","id":N,"event":{...}}`` (``id`` its ``time_us``,
  ``event`` the stored Jetstream v2 payload, spliced, not re-encoded), to one
  connected client, which answers ``{"type":"ack","id":N}`` once done.
* **Per-DID order, DIDs placed by rendezvous hashing.** A DID's events go
  to the client that rendezvous hashing over the connected clients prefers,
  and stay with it while that client holds any of them (queued or sent and
  not acknowledged), so a DID's events are sent in order on one socket. A DID
  with nothing in flight may move: a client that joins later takes the idle
  DIDs whose best client it now is, and nothing of those is in flight to
  break their order. The placement costs one dict entry per DID seen while
  its client is connected, dropped when the client leaves.
* **Redelivery.** When a client leaves, its sent-but-unacknowledged and
  queued events go back, merged in log order with anything unassigned, and
  are dealt again: the DID's events stay in order, on another client.
  Delivery is at least once across a client's disconnect (it may have
  processed an event it did not ack), exactly once while clients ack.
* **Backpressure.** A client has at most ``max_unacked`` events sent and not
  acknowledged; the rest of its share waits in its queue. The stream reads
  at most ``buffer`` unacknowledged events from the store: a client that
  stops acking eventually holds back the others too, as a bounded queue must.
* **Durable position.** The ack position (every event ``<=`` it acked) is
  stored as the cursor ``stream:<path>`` in the mirror's ``cursors`` table,
  written behind the acks (one write in flight, coalesced) and at shutdown; a
  restart reads from just after it. With no stored position the stream starts
  at the beginning of the stored log. Events acked beyond an unacknowledged one
  are sent again after a restart: the position is a watermark, not a set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from atrepo.store.mirror import MirrorEvent, MirrorStore
from atrepo.store.worker import StoreWorker
from atrepo.xrpc.metrics import Counter, Gauge, Metrics

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_MAX_UNACKED",
    "RecordStream",
    "mount_record_stream",
]

log = logging.getLogger("atrepo.sync.stream")

#: Events a client may hold sent and not acknowledged.
DEFAULT_MAX_UNACKED: Final = 100
#: Events read from the store and not yet acknowledged, over all clients.
DEFAULT_BUFFER: Final = 5000
#: Events per store read.
DEFAULT_PAGE: Final = 500
#: Seconds between WebSocket pings.
DEFAULT_HEARTBEAT: Final = 30.0
#: Largest message a client may send (an ack is tiny).
MAX_CLIENT_MESSAGE: Final = 64 * 1024
#: The cursor source name prefix of a stream's durable ack position.
CURSOR_PREFIX: Final = "stream:"


def _weight(client_id: int, did: str) -> bytes:
    """Rendezvous hashing: the client with the highest weight for a DID owns it."""
    return hashlib.blake2b(f"{client_id}\x00{did}".encode(), digest_size=8).digest()


def _read(store: MirrorStore, after: int, limit: int) -> list[MirrorEvent]:
    return store.read_events(after, limit)


def _head(store: MirrorStore) -> int:
    return store.head_time_us()


def _cursor(store: MirrorStore, source: str) -> int | None:
    return store.get_cursor(source)


def _frame(event: MirrorEvent) -> bytes:
    return b'{"type":"event","id":%d,"event":' % event.time_us + event.payload.encode() + b"}"


class StreamMetrics:
    """The stream's metrics, registered in a :class:`Metrics` registry (``/metrics``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics if metrics is not None else Metrics()
        self.clients: Gauge = registry.gauge("atrepo_stream_clients", "Connected record-stream clients")
        self.sent: Counter = registry.counter(
            "atrepo_stream_events_sent_total", "Events sent to record-stream clients (redeliveries too)"
        )
        self.acked: Counter = registry.counter(
            "atrepo_stream_events_acked_total", "Events acknowledged by record-stream clients"
        )
        self.redelivered: Counter = registry.counter(
            "atrepo_stream_events_redelivered_total", "Unacknowledged events dealt again after a client left"
        )
        self.position: Gauge = registry.gauge(
            "atrepo_stream_ack_position_us", "time_us up to which every event is acknowledged"
        )


@dataclass(eq=False)
class _Client:
    cid: int
    ws: web.WebSocketResponse
    queue: deque[MirrorEvent] = field(default_factory=deque)
    unacked: dict[int, MirrorEvent] = field(default_factory=dict)
    dids: set[str] = field(default_factory=set)
    #: Events of each DID this client holds (queued or sent and not acknowledged).
    held: collections.Counter[str] = field(default_factory=collections.Counter)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = WSCloseCode.OK
    close_reason: str = ""


@dataclass(frozen=True, slots=True)
class ClientState:
    """A snapshot of one client (status pages, tests): queued and unacknowledged counts."""

    id: int
    queued: int
    unacked: int


class RecordStream:
    """The reader, the dealer and the clients; see the module docstring."""

    def __init__(
        self,
        store: MirrorStore,
        worker: StoreWorker[MirrorStore],
        *,
        path: str = "/channel",
        max_unacked: int = DEFAULT_MAX_UNACKED,
        buffer: int = DEFAULT_BUFFER,
        page: int = DEFAULT_PAGE,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        metrics: Metrics | None = None,
    ) -> None:
        if store is not worker.store:
            raise ValueError("store must be the worker's store")
        if max_unacked < 1 or buffer < 1 or page < 1:
            raise ValueError("max_unacked, buffer and page must be at least 1")
        self.store = store
        self.worker = worker
        self.path = path
        self.cursor_source = CURSOR_PREFIX + path
        self.max_unacked = max_unacked
        self.buffer = buffer
        self.page = page
        self.heartbeat = heartbeat
        self.metrics = StreamMetrics(metrics)
        self._clients: dict[int, _Client] = {}
        self._next_id = 0
        self._read_pos = 0  # every event <= it has been read into _outstanding (or acked)
        self._head = 0
        self._outstanding: dict[int, MirrorEvent] = {}  # read, not acked, in time_us order
        self._unassigned: deque[MirrorEvent] = deque()  # read (or returned), waiting for a client
        self._owner: dict[str, _Client] = {}  # placed DIDs -> their (connected) client
        self._stored = 0  # the position last written to the store
        self._wake_reader = asyncio.Event()
        self._wake_flush = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume after the stored ack position (the log's start when none) and start reading."""
        if self._started:
            return
        self._started = True
        stored = await self.worker.read(_cursor, self.cursor_source)
        self._read_pos = self._stored = stored or 0
        self._head = max(self._head, await self.worker.read(_head))
        self.metrics.position.set(self._stored)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reader(), name="record-stream-reader"),
            loop.create_task(self._flusher(), name="record-stream-flusher"),
        ]
        self._wake_reader.set()

    async def close(self) -> None:
        """Close every client (1012: reconnect later), stop, and store the final ack position."""
        self._closed = True
        for client in list(self._clients.values()):
            self._stop(client, WSCloseCode.SERVICE_RESTART, "server shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._started and self.position > self._stored and not self.worker.closed:
            with contextlib.suppress(Exception):
                await self._write_position(self.position)

    def notify(self, head_time_us: int) -> None:
        """The store has events up to ``head_time_us`` (call after each write, on the event loop)."""
        if head_time_us > self._head:
            self._head = head_time_us
            self._wake_reader.set()

    # -- state -------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """``time_us`` up to which every event is acknowledged."""
        for first in self._outstanding:
            return first - 1
        return self._read_pos

    @property
    def stored_position(self) -> int:
        """The ack position last written to the store."""
        return self._stored

    @property
    def clients(self) -> int:
        return len(self._clients)

    def client_states(self) -> list[ClientState]:
        return [ClientState(c.cid, len(c.queue), len(c.unacked)) for c in self._clients.values()]

    # -- reading and dealing -----------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            await self._wake_reader.wait()
            self._wake_reader.clear()
            while (
                self._clients
                and self._read_pos < self._head
                and len(self._outstanding) < self.buffer
                and not self._closed
            ):
                limit = min(self.page, self.buffer - len(self._outstanding))
                try:
                    rows = await self.worker.read(_read, self._read_pos, limit)
                except Exception:
                    log.exception("record stream: reading the event log failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
                if not rows:
                    self._read_pos = max(self._read_pos, self._head)  # pruned, or a notify ahead
                    self._position_moved()
                    break
                for row in rows:
                    self._outstanding[row.time_us] = row
                    self._unassigned.append(row)
                self._read_pos = rows[-1].time_us
                self._deal()

    def _place(self, did: str) -> _Client:
        """The DID's client: its owner while that holds any of its events, else the rendezvous choice.

        A DID whose client holds none of its events may move: nothing of it is
        in flight, so its order cannot break, and a client that joined later
        takes its share of the DIDs (rendezvous hashing moves only the DIDs
        whose best client is the new one).
        """
        owner = self._owner.get(did)
        if owner is not None and owner.held[did]:
            return owner
        best = max(self._clients.values(), key=lambda c: _weight(c.cid, did))
        if owner is not None and best is not owner:
            owner.dids.discard(did)
            del self._owner[did]
        return best

    def _deal(self) -> None:
        """Give every unassigned event to its DID's client, in log order."""
        if not self._clients:
            return
        woken: set[int] = set()
        while self._unassigned:
            event = self._unassigned.popleft()
            client = self._place(event.did)
            if event.did not in self._owner:
                self._owner[event.did] = client
                client.dids.add(event.did)
            client.queue.append(event)
            client.held[event.did] += 1
            if client.cid not in woken:
                woken.add(client.cid)
                client.wake.set()

    def _ack(self, client: _Client, event_id: int) -> bool:
        event = client.unacked.pop(event_id, None)
        if event is None:
            return False  # not this client's, or acked already: ignored
        left = client.held[event.did] - 1
        if left > 0:
            client.held[event.did] = left
        else:
            del client.held[event.did]
        del self._outstanding[event_id]
        self.metrics.acked.inc()
        client.wake.set()
        self._position_moved()
        if len(self._outstanding) < self.buffer:
            self._wake_reader.set()
        return True

    def _position_moved(self) -> None:
        position = self.position
        self.metrics.position.set(position)
        if position > self._stored:
            self._wake_flush.set()

    def _leave(self, client: _Client) -> None:
        """A client left: deal its unacknowledged and queued events again, in log order."""
        if self._clients.pop(client.cid, None) is None:
            return
        self.metrics.clients.set(len(self._clients))
        returned = sorted([*client.unacked.values(), *client.queue], key=lambda e: e.time_us)
        client.unacked.clear()
        client.queue.clear()
        client.held.clear()
        for did in client.dids:
            del self._owner[did]
        client.dids.clear()
        self.metrics.redelivered.inc(len(returned))
        if returned:
            merged = sorted([*returned, *self._unassigned], key=lambda e: e.time_us)
            self._unassigned = deque(merged)
        self._deal()

    # -- the durable position ----------------------------------------------------------------

    async def _write_position(self, position: int) -> None:
        await self.worker.run(MirrorStore.set_cursor, self.cursor_source, position)
        self._stored = max(self._stored, position)

    async def _flusher(self) -> None:
        while True:
            await self._wake_flush.wait()
            self._wake_flush.clear()
            position = self.position
            if position <= self._stored:
                continue
            try:
                await self._write_position(position)
            except Exception:
                log.exception("record stream: storing the ack position failed; retrying")
                await asyncio.sleep(1.0)
                self._wake_flush.set()

    # -- clients -----------------------------------------------------------------------------

    def _stop(self, client: _Client, code: int, reason: str) -> None:
        if client.stopped.is_set():
            return
        client.close_code, client.close_reason = code, reason
        client.stopped.set()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, take a share of the events, and stream until the client or the server closes."""
        if self._closed or not self._started:
            return web.json_response(
                {"error": "InternalServerError", "message": "the record stream is not running"}, status=503
            )
        ws = web.WebSocketResponse(compress=False, heartbeat=self.heartbeat, max_msg_size=MAX_CLIENT_MESSAGE)
        await ws.prepare(request)
        self._next_id += 1
        client = _Client(self._next_id, ws)
        self._clients[client.cid] = client
        self.metrics.clients.set(len(self._clients))
        self._deal()
        self._wake_reader.set()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_client(client), name="record-stream-client-reader")
        sender = loop.create_task(self._send_loop(client), name="record-stream-client-sender")
        try:
            await client.stopped.wait()
        finally:
            sender.cancel()
            reader.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            self._leave(client)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await ws.close(code=client.close_code, message=client.close_reason.encode()[:120])
        return ws

    async def _read_client(self, client: _Client) -> None:
        """Acks; anything else closes the connection (1008)."""
        async for msg in client.ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    self._stop(client, WSCloseCode.POLICY_VIOLATION, "binary messages are not accepted")
                    return
                continue
            event_id = _parse_ack(msg.data)
            if event_id is None:
                self._stop(client, WSCloseCode.POLICY_VIOLATION, 'expected {"type":"ack","id":N}')
                return
            self._ack(client, event_id)
        self._stop(client, WSCloseCode.OK, "")

    async def _send_loop(self, client: _Client) -> None:
        try:
            while not client.stopped.is_set():
                client.wake.clear()
                while client.queue and len(client.unacked) < self.max_unacked:
                    event = client.queue.popleft()
                    client.unacked[event.time_us] = event  # before the send: a failed send is redelivered
                    await client.ws.send_frame(_frame(event), WSMsgType.TEXT)
                    self.metrics.sent.inc()
                if not client.queue or len(client.unacked) >= self.max_unacked:
                    await client.wake.wait()
        except (ConnectionError, RuntimeError) as exc:
            self._stop(client, WSCloseCode.ABNORMAL_CLOSURE, f"send failed: {exc}"[:120])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("record stream client failed")
            self._stop(client, WSCloseCode.INTERNAL_ERROR, "internal error")


def _parse_ack(text: str) -> int | None:
    try:
        msg: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "ack":
        return None
    event_id = msg.get("id")
    if not isinstance(event_id, int) or isinstance(event_id, bool):
        return None
    return event_id


def mount_record_stream(
    app: web.Application,
    store: MirrorStore,
    worker: StoreWorker[MirrorStore],
    *,
    path: str = "/channel",
    metrics: Metrics | None = None,
    max_unacked: int = DEFAULT_MAX_UNACKED,
    buffer: int = DEFAULT_BUFFER,
    page: int = DEFAULT_PAGE,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
) -> RecordStream:
    """Serve the acknowledged record stream at ``path``; it starts with the app and closes on shutdown.

    Call :meth:`RecordStream.notify` with the store's head after each write.
    """
    stream = RecordStream(
        store,
        worker,
        path=path,
        max_unacked=max_unacked,
        buffer=buffer,
        page=page,
        heartbeat=heartbeat,
        metrics=metrics,
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream.serve(request)

    async def on_startup(_app: web.Application) -> None:
        await stream.start()

    async def on_shutdown(_app: web.Application) -> None:
        await stream.close()

    app.router.add_get(path, handler)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return stream
