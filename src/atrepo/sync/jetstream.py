"""A Jetstream-compatible WebSocket endpoint over the sync mirror's event log.

``atrepo sync`` writes every verified change it applies to the mirror's
``events`` table as Jetstream JSON (:mod:`atrepo.store.mirror`); this module
serves that log to Jetstream clients, so a consumer that today reads
Bluesky's Jetstream can read verified events instead by changing one URL.
Two wires, one log:

* ``/subscribe``, the classic Jetstream wire: ``{"did", "time_us", "kind",
  "commit": {...}}`` messages (the nested shape classic clients parse),
  filtered by ``wantedCollections`` (NSIDs or ``prefix.*``, commits only)
  and ``wantedDids``, resumed by ``cursor`` (unix microseconds, inclusive),
  with ``requireHello``, ``maxMessageSizeBytes`` and ``options_update``
  messages from the client.
* ``/xrpc/network.bsky.jetstream.subscribeEvents``, the lexicon's v2 wire
  (``xrpc.v1.json`` subprotocol: ``{"$type":"message","payload":{...}}``
  frames, ``seq``/``time`` fields, ``kinds``/``dids``/``collections``
  filters, an inclusive ``cursor``), the one the MarshalX SDK's
  ``atproto_jetstream`` client reads. Our ``seq`` *is* the event's
  ``time_us``, so the lexicon's two cursor readings (a seq below 1e15, a
  unix-microseconds timestamp above) name the same position.

**Retention.** The log is pruned after a retention (``atrepo sync
--event-retention``); the store's floor is the first position it still has
all events from. A cursor below it is never served silently from later on:
a seq-form cursor (below 1e15) is refused before the upgrade with a 400
``CursorTooOld`` naming the floor, as the lexicon says; a timestamp cursor is
clamped up to the floor and the first frame is an ``#info`` ``OutdatedCursor``
naming the seq resumed from (the classic wire, which has no such frame,
clamps silently, as Jetstream does). Our own seqs are timestamps, so a client
resuming from a seq we sent is in the second case.

Compression is refused (``compress=true``, ``zstdDictionary``) with a clear
400 before the upgrade: both need a shared zstd dictionary we do not ship, and
the SDK falls back to plain frames when ``getZstdDictionary`` is missing.

**Fan-out, encoding nothing twice.** One pump task follows the store
(:meth:`JetstreamServer.notify` after each commit wakes it), reads each new
event once, and appends it to a bounded shared window. Every subscriber is a
position (``last``, the ``time_us`` it has passed) and one loop asking for
"the events after ``last``": from the window when it reaches back that far
(live subscribers), else one filtered page from the store on a reader thread
(cursor replay). The store keeps each event as the v2 message's JSON text,
so a v2 frame is that text spliced into the ``{"$type":"message"}``
envelope, never re-encoded; a classic frame is one parse and one dump. A
window entry caches each wire's UTF-8 frame the first time a subscriber needs
it, so N live subscribers cost one frame per event and wire, not N (a replay
page, read for one subscriber's filters, builds its own). As in the
firehose's outbox, the cutover from replay to live is no step at all, and the
strictly increasing ``last`` rules out both duplicates and gaps.

**Slow subscribers.** Sends wait for the socket's flow control, so a
subscriber that does not read stops its own loop. Whenever the pump appends,
it measures how many window events each live subscriber has not passed; past
``max_queue`` the subscriber is cut (v2: a ``ConsumerTooSlow`` error frame;
both: close code 1008), and a close that takes longer than ``close_timeout``
aborts the connection. Memory is bounded by the window, a page per replaying
subscriber, and the socket buffers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from atrepo.core.errors import CursorTooOld, InvalidRequest
from atrepo.core.syntax import is_valid_did, is_valid_nsid
from atrepo.store.mirror import JETSTREAM_NSID
from atrepo.store.worker import StoreWorker
from atrepo.xrpc.metrics import Counter, Gauge, Metrics

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PAGE",
    "DEFAULT_WINDOW",
    "SUBSCRIBE_EVENTS",
    "EventSource",
    "Filters",
    "JetstreamServer",
    "SubscriberState",
    "mount_jetstream",
]

log = logging.getLogger("atrepo.sync.jetstream")

SUBSCRIBE_EVENTS: Final = "network.bsky.jetstream.subscribeEvents"
#: The v2 wire's WebSocket subprotocol (the SDK asks for it).
SUBPROTOCOL: Final = "xrpc.v1.json"
#: Events a live subscriber may fall behind before it is cut.
DEFAULT_MAX_QUEUE: Final = 1000
#: Events the shared window holds (at least ``max_queue``): live subscribers read from it.
DEFAULT_WINDOW: Final = 2048
#: Events per store read (the pump's, and a replaying subscriber's).
DEFAULT_PAGE: Final = 500
#: Seconds a close (error frame, close frame) may take before the connection is aborted.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
#: Seconds between WebSocket pings.
DEFAULT_HEARTBEAT: Final = 30.0
#: Largest message a client may send (an ``options_update``; Jetstream allows 10 MB).
MAX_CLIENT_MESSAGE: Final = 10 * 1024 * 1024
#: Jetstream's filter limits.
MAX_COLLECTIONS: Final = 100
MAX_DIDS: Final = 10_000
#: The v2 ``kinds`` enum.
KINDS: Final = frozenset({"commit", "identity", "account", "sync"})

#: Close code for a subscriber cut for being too slow, or for a bad ``options_update``.
CLOSE_POLICY: Final = WSCloseCode.POLICY_VIOLATION

_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9-]+)+\.\*$")


class MirrorEventLike(Protocol):
    """One row of the mirror's event log (:class:`atrepo.store.mirror.MirrorEvent`)."""

    @property
    def time_us(self) -> int: ...
    @property
    def did(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def collection(self) -> str | None: ...
    @property
    def payload(self) -> str: ...


class EventSource(Protocol):
    """What the endpoint needs of the mirror store: its event log, read in ``time_us`` order."""

    def read_events(
        self,
        after_us: int,
        limit: int,
        *,
        dids: Sequence[str] | None = None,
        collections: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> Sequence[MirrorEventLike]: ...

    def head_time_us(self) -> int: ...

    def floor_time_us(self) -> int: ...


S = TypeVar("S", bound=EventSource)


def _read(store: EventSource, after: int, limit: int, flt: Filters | None) -> list[Any]:
    if flt is None:
        return list(store.read_events(after, limit))
    return list(
        store.read_events(
            after,
            limit,
            dids=flt.store_dids,
            collections=flt.store_collections,
            kinds=sorted(flt.kinds) if flt.kinds else None,
        )
    )


def _head(store: EventSource) -> int:
    return store.head_time_us()


def _floor(store: EventSource) -> int:
    return store.floor_time_us()


#: Cursors at or above this are unix-microsecond timestamps, below it seqs (the lexicon's rule).
TIMESTAMP_CURSOR_MIN: Final = 10**15


def _iso(time_us: int) -> str:
    """``time_us`` as the lexicon's datetime with microsecond precision."""
    seconds, micros = divmod(time_us, 1_000_000)
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{micros:06d}Z"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def classic_payload(event: MirrorEventLike) -> dict[str, Any] | None:
    """The classic ``/subscribe`` message for a stored (v2-shaped) event; None for ``sync`` and unknown kinds.

    The store keeps the v2 message (``$type``, ``seq``, ``time``, flat commit
    fields); classic Jetstream clients read ``time_us``, ``kind`` and a nested
    ``commit`` object instead.
    """
    stored = json.loads(event.payload)
    kind = event.kind
    out: dict[str, Any] = {"did": event.did, "time_us": event.time_us, "kind": kind}
    if kind == "commit":
        commit = {name: stored[name] for name in ("rev", "operation", "collection", "rkey")}
        if "record" in stored:
            commit["record"] = stored["record"]
        if "cid" in stored:
            commit["cid"] = stored["cid"]
        out["commit"] = commit
    elif kind in ("identity", "account"):
        out[kind] = stored[kind]
    else:
        return None
    return out


def _frame_classic(event: MirrorEventLike) -> bytes | None:
    message = classic_payload(event)
    return None if message is None else _dumps(message).encode()


def _frame_v2(event: MirrorEventLike) -> bytes:
    """The ``xrpc.v1.json`` message frame around the stored payload, spliced: nothing is re-encoded."""
    return b'{"$type":"message","payload":' + event.payload.encode() + b"}"


def _error_frame_v2(error: str, message: str) -> str:
    return _dumps({"$type": "error", "error": error, "message": message})


class _Entry:
    """One event in the shared window, with each wire's frame built at most once."""

    __slots__ = ("_classic", "_v2", "event")

    def __init__(self, event: MirrorEventLike) -> None:
        self.event = event
        self._v2: bytes | None = None
        self._classic: bytes | None | bool = False  # False: not built yet

    def frame(self, v2: bool) -> bytes | None:
        if v2:
            if self._v2 is None:
                self._v2 = _frame_v2(self.event)
            return self._v2
        if self._classic is False:
            self._classic = _frame_classic(self.event)
        assert not isinstance(self._classic, bool)
        return self._classic


@dataclass(frozen=True, slots=True)
class Filters:
    """A subscriber's filters: each empty set matches everything; ``collections`` constrains commits only."""

    dids: frozenset[str] = frozenset()
    collections: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()
    max_size: int = 0

    @classmethod
    def build(
        cls,
        *,
        dids: Sequence[str] = (),
        collections: Sequence[str] = (),
        kinds: Sequence[str] = (),
        max_size: int = 0,
    ) -> Filters:
        """Validate and build; raises :class:`InvalidRequest` with a message for the client."""
        if len(dids) > MAX_DIDS:
            raise InvalidRequest(f"too many DIDs: {len(dids)} (at most {MAX_DIDS})")
        if len(collections) > MAX_COLLECTIONS:
            raise InvalidRequest(f"too many collections: {len(collections)} (at most {MAX_COLLECTIONS})")
        for did in dids:
            if not isinstance(did, str) or not is_valid_did(did):
                raise InvalidRequest(f"invalid DID: {str(did)[:100]!r}")
        exact: set[str] = set()
        prefixes: list[str] = []
        for col in collections:
            if isinstance(col, str) and _PREFIX.match(col):
                prefixes.append(col[:-1])  # keep the dot: "app.bsky.feed."
            elif isinstance(col, str) and is_valid_nsid(col):
                exact.add(col)
            else:
                raise InvalidRequest(f"invalid collection (an NSID or 'prefix.*'): {str(col)[:100]!r}")
        for kind in kinds:
            if kind not in KINDS:
                raise InvalidRequest(f"invalid kind: {str(kind)[:40]!r} (one of {', '.join(sorted(KINDS))})")
        if kinds and collections and "commit" not in kinds:
            raise InvalidRequest("the collections filter applies to commits only, but kinds excludes commit")
        if not isinstance(max_size, int) or isinstance(max_size, bool) or not 0 <= max_size <= 2**32 - 1:
            raise InvalidRequest("maxMessageSizeBytes must be an integer between 0 and 4294967295")
        return cls(frozenset(dids), frozenset(exact), tuple(prefixes), frozenset(kinds), max_size)

    @property
    def store_dids(self) -> list[str] | None:
        return sorted(self.dids) if self.dids else None

    @property
    def store_collections(self) -> list[str] | None:
        """The collections filter as the store reads it (prefixes as ``prefix.*``)."""
        if not self.collections and not self.prefixes:
            return None
        return sorted(self.collections) + [p + "*" for p in self.prefixes]

    def matches(self, event: MirrorEventLike) -> bool:
        if self.dids and event.did not in self.dids:
            return False
        if self.kinds and event.kind not in self.kinds:
            return False
        if event.kind == "commit" and (self.collections or self.prefixes):
            col = event.collection or ""
            return col in self.collections or any(col.startswith(p) for p in self.prefixes)
        return True


class JetstreamMetrics:
    """The endpoint's metrics, registered in a :class:`Metrics` registry (``/metrics``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        registry = metrics if metrics is not None else Metrics()
        self.subscribers: Gauge = registry.gauge(
            "atrepo_jetstream_subscribers", "Connected Jetstream subscribers"
        )
        self.events_sent: Counter = registry.counter(
            "atrepo_jetstream_events_sent_total", "Events sent to Jetstream subscribers"
        )
        self.slow: Counter = registry.counter(
            "atrepo_jetstream_slow_consumers_total", "Jetstream subscribers cut for falling too far behind"
        )
        self.head: Gauge = registry.gauge(
            "atrepo_jetstream_head_time_us", "time_us of the last event fanned out"
        )


@dataclass(frozen=True, slots=True)
class SubscriberState:
    """A snapshot of one subscriber: ``last`` is the ``time_us`` it has passed, ``live`` once caught up."""

    wire: str  # "classic" (/subscribe) or "v2"
    last: int
    live: bool
    filters: Filters


@dataclass(eq=False)
class _Subscriber:
    ws: web.WebSocketResponse
    v2: bool
    filters: Filters
    last: int
    abort: Callable[[], None] | None
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    live: bool = False
    stop_code: int | None = None
    stop_error: str | None = None
    stop_reason: str = ""
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


class JetstreamServer(Generic[S]):
    """The pump, the shared window and the subscribers; see the module docstring."""

    def __init__(
        self,
        store: S,
        worker: StoreWorker[S],
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        window: int = DEFAULT_WINDOW,
        page: int = DEFAULT_PAGE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        metrics: Metrics | None = None,
    ) -> None:
        if store is not worker.store:
            raise ValueError("store must be the worker's store")
        if not 1 <= max_queue <= window:
            raise ValueError("max_queue must be between 1 and window")
        if page < 1:
            raise ValueError("page must be at least 1")
        self.store = store
        self.worker = worker
        self.max_queue = max_queue
        self.window = window
        self.page = page
        self.close_timeout = close_timeout
        self.heartbeat = heartbeat
        self.metrics = JetstreamMetrics(metrics)
        self._entries: list[_Entry] = []
        self._times: list[int] = []
        self._base = 0  # the window holds every stored event with base < time_us <= tail
        self._tail = 0
        self._head = 0  # the newest time_us the store has told us of
        self._moved = asyncio.Event()  # replaced each time the tail moves
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._subs: set[_Subscriber] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start at the store's head: events already stored are served by cursor replay."""
        if self._pump_task is not None:
            return
        head = await self.worker.read(_head)
        self._base = self._tail = max(self._head, head)
        self._head = self._tail
        self.metrics.head.set(self._tail)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="jetstream-pump")

    async def close(self) -> None:
        """Stop the pump and close every subscriber (1012: reconnect later, maybe elsewhere)."""
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        for sub in list(self._subs):
            self._stop(sub, WSCloseCode.SERVICE_RESTART, None, "server shutting down")

    @property
    def tail(self) -> int:
        """``time_us`` of the newest event fanned out."""
        return self._tail

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscriber_states(self) -> list[SubscriberState]:
        """Each subscriber's wire, position and filters (for a status page, and tests)."""
        return [SubscriberState("v2" if s.v2 else "classic", s.last, s.live, s.filters) for s in self._subs]

    def notify(self, head_time_us: int) -> None:
        """The store has events up to ``head_time_us`` (call after each commit, from the event loop)."""
        if head_time_us > self._head:
            self._head = head_time_us
            self._wake.set()

    # -- the pump ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._subs:
                # Nobody to fan out to: skip the read. The window restarts empty at the head, and a
                # subscriber that connects with an older cursor replays from the store as usual.
                self._entries.clear()
                self._times.clear()
                self._base = self._tail = max(self._tail, self._head)
                self.metrics.head.set(self._tail)
                continue
            while self._tail < self._head:
                try:
                    rows = await self.worker.read(_read, self._tail, self.page, None)
                except Exception:
                    log.exception("jetstream: reading the event log failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
                if not rows:
                    # nothing stored past the tail up to the notified head (pruned, or a notify
                    # that ran ahead): move on, so that no subscriber waits for it
                    self._advance([], self._head)
                    break
                self._advance(rows, rows[-1].time_us)

    def _advance(self, rows: list[MirrorEventLike], tail: int) -> None:
        for row in rows:
            self._entries.append(_Entry(row))
            self._times.append(row.time_us)
        self._tail = max(self._tail, tail)
        self.metrics.head.set(self._tail)
        excess = len(self._entries) - self.window
        if excess > 0:
            self._base = self._times[excess - 1]
            del self._entries[:excess]
            del self._times[:excess]
        if not self._entries:
            self._base = self._tail
        self._check_lag()
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def _behind(self, last: int) -> int:
        if last < self._base:
            return len(self._entries) + 1  # fell off the window
        return len(self._entries) - bisect.bisect_right(self._times, last)

    def _check_lag(self) -> None:
        for sub in list(self._subs):
            if sub.live and sub.stop_code is None and self._behind(sub.last) > self.max_queue:
                self.metrics.slow.inc()
                self._stop(sub, CLOSE_POLICY, "ConsumerTooSlow", "Stream consumer too slow")

    def _window_after(self, last: int) -> list[_Entry] | None:
        if last < self._base:
            return None
        start = bisect.bisect_right(self._times, last)
        return self._entries[start : start + self.page]

    # -- subscribers -------------------------------------------------------------------------

    def _stop(self, sub: _Subscriber, code: int, error: str | None, reason: str) -> None:
        if sub.stop_code is not None:
            return
        sub.stop_code, sub.stop_error, sub.stop_reason = code, error, reason
        sub.hello.set()
        sub.stopped.set()  # serve() wakes, cancels the sender and closes the socket

    async def serve(self, request: web.Request, *, v2: bool) -> web.StreamResponse:
        """Validate the query (400 before the upgrade), then stream until closed."""
        try:
            filters, cursor, require_hello = _parse_query(request, v2=v2)
        except InvalidRequest as exc:
            status, body = exc.to_xrpc()
            return web.json_response(body, status=status)
        if self._closed or self._pump_task is None:
            return web.json_response(
                {"error": "InternalServerError", "message": "the Jetstream endpoint is not running"},
                status=503,
            )
        outdated: str | None = None
        if cursor is not None:
            floor = await self.worker.read(_floor)
            if cursor < floor:
                if v2 and cursor < TIMESTAMP_CURSOR_MIN:
                    status, body = CursorTooOld(
                        f"cursor {cursor} is below the retention floor; the oldest seq kept is {floor}"
                    ).to_xrpc()
                    return web.json_response(body, status=status)
                if v2:
                    outdated = _dumps(
                        {
                            "$type": "message",
                            "payload": {
                                "$type": f"{JETSTREAM_NSID}#info",
                                "name": "OutdatedCursor",
                                "message": (
                                    f"cursor {cursor} is below the retention floor; resuming from seq {floor}"
                                ),
                            },
                        }
                    )
                cursor = floor
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,) if v2 else (),
            compress=False,
            heartbeat=self.heartbeat,
            max_msg_size=MAX_CLIENT_MESSAGE,
        )
        await ws.prepare(request)
        if outdated is not None:
            await ws.send_str(outdated)
        transport = request.transport
        # inclusive cursor; none, or one past the head, is the live tip (Jetstream: a future cursor):
        # the head the store reported, so that events committed before the connection are not sent
        tip = max(self._head, self._tail)
        if cursor is None:  # the store's own head: other writers' events may not be notified yet
            tip = max(tip, await self.worker.read(_head))
        last = tip if cursor is None or cursor - 1 > tip else cursor - 1
        sub = _Subscriber(ws, v2, filters, last, transport.abort if transport is not None else None)
        if not require_hello:
            sub.hello.set()
        self._subs.add(sub)
        self.metrics.subscribers.set(len(self._subs))
        reader = asyncio.get_running_loop().create_task(self._read_client(sub), name="jetstream-reader")
        sender = asyncio.get_running_loop().create_task(self._send_loop(sub), name="jetstream-sender")
        try:
            await sub.stopped.wait()
        finally:
            sender.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self._subs.discard(sub)
            self.metrics.subscribers.set(len(self._subs))
            await self._close_ws(sub)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        return ws

    async def _close_ws(self, sub: _Subscriber) -> None:
        ws = sub.ws
        if ws.closed:
            return
        code = sub.stop_code if sub.stop_code is not None else WSCloseCode.OK
        try:
            async with asyncio.timeout(self.close_timeout):
                if sub.v2 and sub.stop_error is not None:
                    await ws.send_str(_error_frame_v2(sub.stop_error, sub.stop_reason))
                await ws.close(code=code, message=sub.stop_reason.encode()[:120])
        except (TimeoutError, ConnectionError, RuntimeError):
            log.debug("jetstream subscriber did not take its close in time; aborting")
            if sub.abort is not None:
                sub.abort()

    async def _read_client(self, sub: _Subscriber) -> None:
        """Client messages: ``options_update`` (anything else invalid closes, as Jetstream does)."""
        ws = sub.ws
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    self._stop(sub, CLOSE_POLICY, None, "binary messages are not accepted")
                    return
                continue
            try:
                sub.filters = _parse_options_update(msg.data, sub.filters)
            except InvalidRequest as exc:
                self._stop(sub, CLOSE_POLICY, "InvalidRequest" if sub.v2 else None, str(exc)[:200])
                return
            sub.hello.set()
        self._stop(sub, WSCloseCode.OK, None, "")

    async def _send_loop(self, sub: _Subscriber) -> None:
        try:
            await sub.hello.wait()
            while sub.stop_code is None:
                sent = await self._send_next(sub)
                if not sent:
                    moved = self._moved
                    if sub.last >= self._tail and sub.stop_code is None:
                        sub.live = True
                        await moved.wait()
        except (ConnectionError, RuntimeError) as exc:
            self._stop(sub, WSCloseCode.ABNORMAL_CLOSURE, None, f"send failed: {exc}"[:120])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("jetstream subscriber failed")
            self._stop(sub, WSCloseCode.INTERNAL_ERROR, None, "internal error")

    async def _send_next(self, sub: _Subscriber) -> bool:
        """Send the next batch after ``sub.last``; False when there is nothing more yet."""
        entries = self._window_after(sub.last)
        if entries is not None:
            if not entries:
                return False
            sub.live = True
            for entry in entries:
                await self._send(sub, entry)
                if sub.stop_code is not None:
                    return True
            return True
        # cursor replay: one filtered page from the store
        sub.live = False
        tail = self._tail
        filters = sub.filters
        rows = await self.worker.read(_read, sub.last, self.page, filters)
        for row in rows:
            if sub.stop_code is not None:
                return True
            await self._send(sub, _Entry(row), filters)
        if len(rows) < self.page:
            # every matching stored event up to the tail read before the page has been sent
            sub.last = max(sub.last, tail)
        return True

    async def _send(self, sub: _Subscriber, entry: _Entry, filters: Filters | None = None) -> None:
        event = entry.event
        if event.time_us <= sub.last:
            return
        flt = filters if filters is not None else sub.filters
        if flt.matches(event):
            frame = entry.frame(sub.v2)
            if frame is not None and (flt.max_size == 0 or len(frame) <= flt.max_size):
                await sub.ws.send_frame(frame, WSMsgType.TEXT)
                self.metrics.events_sent.inc()
        sub.last = event.time_us


def _ints(request: web.Request, name: str) -> int | None:
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"{name} given more than once")
    try:
        return int(values[0])
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None


def _list(request: web.Request, name: str) -> list[str]:
    # repeated parameters (``?wantedDids=a&wantedDids=b``); a comma-separated value is split too
    return [part for value in request.query.getall(name, []) for part in value.split(",") if part]


def _parse_query(request: web.Request, *, v2: bool) -> tuple[Filters, int | None, bool]:
    """The filters, the cursor and ``requireHello`` of a connection request."""
    max_size = _ints(request, "maxMessageSizeBytes") or 0
    if v2:
        if request.query.get("zstdDictionary"):
            raise InvalidRequest(
                "zstd compression is not supported by this server; connect without zstdDictionary"
            )
        filters = Filters.build(
            dids=_list(request, "dids"),
            collections=_list(request, "collections"),
            kinds=_list(request, "kinds"),
            max_size=max_size,
        )
        require_hello = False
    else:
        compress = request.query.get("compress", "").lower() in ("true", "1")
        if compress or "zstd" in request.headers.get("Socket-Encoding", "").lower():
            raise InvalidRequest(
                "zstd compression is not supported by this server; connect without compress=true"
            )
        filters = Filters.build(
            dids=_list(request, "wantedDids"),
            collections=_list(request, "wantedCollections"),
            max_size=max_size,
        )
        require_hello = request.query.get("requireHello", "").lower() in ("true", "1")
    cursor = _ints(request, "cursor")
    if cursor is not None and cursor < 0:
        raise InvalidRequest("cursor must not be negative")
    return filters, cursor, require_hello


def _parse_options_update(text: str, current: Filters) -> Filters:
    """Apply an ``{"type":"options_update","payload":{...}}`` message to ``current``."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise InvalidRequest("messages must be JSON") from None
    if (
        not isinstance(msg, dict)
        or msg.get("type") != "options_update"
        or not isinstance(msg.get("payload"), dict)
    ):
        raise InvalidRequest('expected {"type": "options_update", "payload": {...}}')
    payload: dict[str, Any] = msg["payload"]

    def strings(*names: str) -> list[str] | None:
        for name in names:
            if name in payload:
                value = payload[name]
                if value is None:
                    return []
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidRequest(f"{name} must be a list of strings")
                return value
        return None

    dids = strings("wantedDids", "dids")
    cols = strings("wantedCollections", "collections")
    kinds = strings("kinds")
    max_size = payload.get("maxMessageSizeBytes", current.max_size)
    if max_size is None:
        max_size = 0
    return Filters.build(
        dids=sorted(current.dids) if dids is None else dids,
        collections=(sorted(current.collections) + [p + "*" for p in current.prefixes])
        if cols is None
        else cols,
        kinds=sorted(current.kinds) if kinds is None else kinds,
        max_size=max_size,
    )


def mount_jetstream(
    app: web.Application,
    store: S,
    worker: StoreWorker[S],
    *,
    path: str = "/subscribe",
    metrics: Metrics | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    window: int = DEFAULT_WINDOW,
    page: int = DEFAULT_PAGE,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
) -> JetstreamServer[S]:
    """Serve the classic wire at ``path`` and the v2 wire at ``/xrpc/network.bsky.jetstream.subscribeEvents``.

    The server starts with the app and closes on its shutdown; call
    :meth:`JetstreamServer.notify` with the store's head after each commit.
    """
    server = JetstreamServer(
        store,
        worker,
        max_queue=max_queue,
        window=window,
        page=page,
        close_timeout=close_timeout,
        heartbeat=heartbeat,
        metrics=metrics,
    )

    async def classic(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, v2=False)

    async def v2(request: web.Request) -> web.StreamResponse:
        return await server.serve(request, v2=True)

    async def on_startup(_app: web.Application) -> None:
        await server.start()

    async def on_shutdown(_app: web.Application) -> None:
        await server.close()

    app.router.add_get(path, classic)
    app.router.add_get(f"/xrpc/{SUBSCRIBE_EVENTS}", v2)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return server
