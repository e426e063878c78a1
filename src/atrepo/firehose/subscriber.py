"""The outbound side of the firehose: a resuming, ordered, bounded ``subscribeRepos`` client.

The relay, the sync consumer and ``atrepo firehose tail`` all need the same
thing from an upstream stream: every sequenced event handed to their code
exactly once, per-DID in order, with a cursor they can persist that never
skips an event they did not finish. This module is that client, so those
rules are written once (sync.md §3-5):

* **Accepted** means the handler returned. The :attr:`Subscriber.cursor` is the
  highest seq such that every seq at or below it seen on the stream was
  accepted (or dropped/skipped on purpose); every (re)connect starts there, so
  nothing accepted is replayed and nothing unaccepted is lost.
* **Per-DID order, different DIDs in parallel**: each event goes to one of
  ``lanes`` sequential workers chosen by a stable hash of its DID.
* **Bounded memory**: at most ``max_in_flight`` events are dispatched and not
  yet accepted (lane queues included); at the bound the reader stops reading
  the socket, aiohttp stops reading the transport and TCP pushes back on the
  upstream.
* **A handler that raises** leaves its event unaccepted: dispatching stops, the
  connection is closed, the events already running finish, and the next
  connection resumes from the cursor. Events of other DIDs that were accepted
  above the failed seq are remembered and skipped when the upstream replays
  them, so nothing is accepted twice.
* **Seq must increase** within a connection (and stay above the cursor it
  opened with): anything else is dropped and reported.

:class:`FrameVerifier` puts the Sync 1.1 checks (``core.tracker``) behind the
DID resolver, with the one forced re-resolution that a bad signature earns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from atrepo.core import cbor, limits
from atrepo.core.errors import AtrepoError, InvalidDIDDocument
from atrepo.core.events import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    Frame,
    IdentityEvent,
    InfoEvent,
    SyncEvent,
    UnknownFrame,
    decode_frame,
)
from atrepo.core.keys import PublicKey
from atrepo.core.tracker import Outcome, RepoTracker, Verdict
from atrepo.identity.resolver import DIDResolver

__all__ = [
    "SUBSCRIBE_PATH",
    "CursorAction",
    "FrameVerifier",
    "Handler",
    "Received",
    "Subscriber",
    "SubscriberHooks",
    "SubscriberStats",
    "subscribe_url",
]

log = logging.getLogger("atrepo.firehose.subscriber")

SUBSCRIBE_PATH: Final = "/xrpc/com.atproto.sync.subscribeRepos"
#: How long ``run()`` lets in-flight handlers finish after ``stop()`` before cancelling them.
DEFAULT_STOP_TIMEOUT: Final = 3.0
#: Seconds between client pings: a dead upstream is noticed even when it sends nothing.
DEFAULT_HEARTBEAT: Final = 60.0


@dataclass(frozen=True, slots=True)
class Received:
    """One decoded, sequenced frame handed to the handler."""

    seq: int | None
    did: str | None
    frame: Frame
    raw: bytes


Handler = Callable[[Received], Awaitable[None]]


class CursorAction(enum.Enum):
    """What the subscriber does after an error frame."""

    RECONNECT = "reconnect"  # reconnect (with backoff) from the current cursor
    FROM_ZERO = "from-zero"  # reconnect with cursor=0 (replay the upstream's whole window)
    FROM_HEAD = "from-head"  # reconnect with no cursor (live head)
    STOP = "stop"  # stop the subscriber (run() returns)


class SubscriberHooks:
    """Notifications from a :class:`Subscriber`; subclass and override what you need."""

    def connected(self, url: str, cursor: int | None) -> None:
        """A connection opened at ``url`` (``cursor`` is the one it asked for)."""

    def disconnected(self, reason: str, failures: int) -> None:
        """A connection ended or failed to open; ``failures`` counts consecutive failed attempts."""

    def error_frame(self, name: str, message: str | None) -> CursorAction:
        """An ``op = -1`` frame: ``FutureCursor`` stops (our cursor is ahead of this upstream:
        a person must decide), anything else (``ConsumerTooSlow``...) reconnects from the cursor."""
        if name == "FutureCursor":
            return CursorAction.STOP
        return CursorAction.RECONNECT

    def info(self, name: str, message: str | None) -> None:
        """An ``#info`` frame, e.g. ``OutdatedCursor`` (the replay starts at the window's oldest event)."""

    def bad_frame(self, error: AtrepoError, raw: bytes) -> None:
        """A frame that did not decode: it was skipped and counted."""

    def dropped(self, seq: int, why: str) -> None:
        """An event whose seq was not above the last one seen: it was not handed on."""


@dataclass(slots=True)
class SubscriberStats:
    """Counters of one subscriber over its whole life (every connection)."""

    frames: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    bad: int = 0
    dropped: int = 0
    unknown: int = 0
    skipped: int = 0  # replayed after a handler failure, but already accepted before it
    handler_errors: int = 0
    error_frames: int = 0
    connects: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "by_type": dict(self.by_type),
            "accepted": self.accepted,
            "bad": self.bad,
            "dropped": self.dropped,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "handler_errors": self.handler_errors,
            "error_frames": self.error_frames,
            "connects": self.connects,
            "reconnects": self.reconnects,
        }


def subscribe_url(url: str, cursor: int | None) -> str:
    """The WebSocket URL of ``subscribeRepos`` for a base or full URL, with ``cursor`` when given.

    ``http`` becomes ``ws``, ``https`` (or no scheme) ``wss``; the XRPC path is
    appended when missing; any ``cursor`` already in the URL is replaced.
    """
    if "://" not in url:
        url = "wss://" + url
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a usable URL: {url!r}: {exc}") from None
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parsed.scheme.lower())
    if scheme is None or not parsed.hostname:
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    path = parsed.path.rstrip("/")
    if not path.endswith(SUBSCRIBE_PATH):
        path += SUBSCRIBE_PATH
    query = [(k, v) for k, v in parse_qsl(parsed.query, keep_blank_values=True) if k != "cursor"]
    if cursor is not None:
        query.append(("cursor", str(cursor)))
    return urlunsplit((scheme, parsed.netloc, path, urlencode(query), ""))


def _lane_of(did: str | None, lanes: int) -> int:
    """A stable lane for ``did`` (``hash()`` of a str changes per process; CRC-32 does not)."""
    if did is None or lanes == 1:
        return 0
    return zlib.crc32(did.encode()) % lanes


def _did_of(frame: Frame) -> str | None:
    if isinstance(frame, CommitEvent):
        return frame.repo
    if isinstance(frame, SyncEvent | IdentityEvent | AccountEvent):
        return frame.did
    return None


def _unknown_seq(frame: UnknownFrame) -> int | None:
    """The seq an unknown message type carries, if its body is a map with an integer ``seq``."""
    if frame.op != 1:
        return None
    try:
        body = cbor.decode(frame.body)
    except AtrepoError:
        return None
    if isinstance(body, dict):
        seq = body.get("seq")
        if type(seq) is int and 0 < seq <= limits.MAX_SAFE_INT:
            return seq
    return None


class _Ended(enum.Enum):
    """Why a connection's reader returned."""

    FAILED = "failed"  # did not open
    CLOSED = "closed"  # the upstream closed or the network broke
    ERROR_FRAME = "error-frame"
    HALTED = "halted"  # a handler raised
    STOPPED = "stopped"  # stop() was called


class Subscriber:
    """A ``subscribeRepos`` client that hands every sequenced event to ``handler`` (see the module doc).

    ``run()`` connects, reads, dispatches and reconnects (exponential backoff
    from ``backoff_initial`` to ``backoff_max``, full jitter) until ``stop()``
    or a hook answers ``STOP``; it never raises for network errors.
    """

    def __init__(
        self,
        url: str,
        handler: Handler,
        *,
        cursor: int | None = None,
        hooks: SubscriberHooks | None = None,
        lanes: int = 64,
        max_in_flight: int = 1024,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        connect_timeout: float = 10.0,
        max_frame_bytes: int = limits.MAX_FRAME_BYTES,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        prefetch: Callable[[Received], object] | None = None,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        subscribe_url(url, None)  # refuse a bad URL now, not on the first connect
        self.url = url
        self.handler = handler
        self.hooks = hooks if hooks is not None else SubscriberHooks()
        self.lanes = lanes
        self.max_in_flight = max_in_flight
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.max_frame_bytes = max_frame_bytes
        self.headers = dict(headers or {})
        self.stop_timeout = stop_timeout
        self.heartbeat = heartbeat
        #: Called with each event as it is dispatched, in stream order and before its lane takes it:
        #: a consumer may start work that needs no per-DID order (the relay starts verification
        #: in its worker processes), so that the handler finds it done.
        self.prefetch = prefetch
        self.stats = SubscriberStats()
        self._session = session
        self._rng = rng if rng is not None else random.Random()
        # the cursor: contiguous accepted seq; _order holds dispatched seqs not yet folded into it
        self._cursor = cursor
        self._pending_cursor: tuple[int | None] | None = None
        self._order: collections.deque[int] = collections.deque()
        self._done: set[int] = set()
        self._skip: set[int] = set()  # accepted above the cursor before a handler failure
        self._in_flight = 0
        self._failures = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._halted = False
        self._stop_requested = False
        self._running = False
        self._queues: list[asyncio.Queue[Received]] = []
        self._lane_tasks: list[asyncio.Task[None]] = []
        self._closers: set[asyncio.Task[object]] = set()
        self._room: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None

    # --- public state -------------------------------------------------------------------

    @property
    def cursor(self) -> int | None:
        """The highest seq at or below which every seq seen was accepted: persist it, resume from it."""
        if self._pending_cursor is not None:
            return self._pending_cursor[0]
        return self._cursor

    def set_cursor(self, cursor: int | None) -> None:
        """Make the next (re)connect start at ``cursor`` (None: the live head).

        Forgets what is remembered about accepted seqs above the old cursor;
        events still in flight finish but no longer move the cursor.
        """
        self._pending_cursor = (cursor,)

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def failures(self) -> int:
        """Consecutive connection attempts that failed (reset by one that delivered frames)."""
        return self._failures

    @property
    def in_flight(self) -> int:
        """Events dispatched (queued in a lane or running) and not yet accepted."""
        return self._in_flight

    def lane_of(self, did: str | None) -> int:
        """The lane the events of ``did`` run in."""
        return _lane_of(did, self.lanes)

    def stop(self) -> None:
        """Ask ``run()`` to finish: stop reading, let in-flight handlers finish (bounded), close."""
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()
        if self._room is not None:
            self._room.set()
        self._close_ws()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, read, dispatch and reconnect until ``stop()`` or a hook says ``STOP``."""
        if self._running:
            raise RuntimeError("this subscriber is already running")
        self._running = True
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            self._stop_event.set()
        self._queues = [asyncio.Queue() for _ in range(self.lanes)]
        self._lane_tasks = [
            asyncio.create_task(self._lane(q), name=f"firehose-lane-{i}") for i, q in enumerate(self._queues)
        ]
        session = self._session
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            await self._loop(session)
        finally:
            await self._shutdown()
            if owned:
                await session.close()
            self._running = False

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while not self._stop_requested:
            if self._pending_cursor is not None:
                self._reset_cursor(self._pending_cursor[0])
            ended, delivered, action = await self._connection(session)
            if ended is _Ended.STOPPED or self._stop_requested:
                return
            await self._settle()
            if self._stop_requested:
                return
            if ended is _Ended.FAILED or not delivered or ended is _Ended.HALTED:
                self._failures += 1
            else:
                self._failures = 0
            if action is CursorAction.STOP:
                return
            if action is CursorAction.FROM_ZERO:
                self._reset_cursor(0)
            elif action is CursorAction.FROM_HEAD:
                self._reset_cursor(None)
            await self._sleep(self._backoff())

    def _backoff(self) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(failures-1))]."""
        cap = min(self.backoff_max, self.backoff_initial * 2 ** max(0, min(self._failures - 1, 62)))
        return self._rng.uniform(0, cap)

    async def _sleep(self, delay: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), delay)

    def _reset_cursor(self, cursor: int | None) -> None:
        """Start afresh at ``cursor``: only between connections, once nothing is in flight."""
        self._pending_cursor = None
        self._cursor = cursor
        self._order.clear()
        self._done.clear()
        self._skip.clear()

    async def _connection(self, session: aiohttp.ClientSession) -> tuple[_Ended, bool, CursorAction | None]:
        """One connection, opened and read to its end: why it ended, whether it delivered, what next."""
        cursor = self._cursor
        url = subscribe_url(self.url, cursor)
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url,
                    max_msg_size=self.max_frame_bytes,
                    headers=self.headers,
                    heartbeat=self.heartbeat,
                    autoping=True,
                ),
                self.connect_timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"connect to {url} failed: {type(exc).__name__}: {exc}"
            log.info("firehose: %s", reason)
            self.hooks.disconnected(reason, self._failures + 1)
            return _Ended.FAILED, False, None
        self._ws = ws
        if self._stop_requested:
            await ws.close()
            self._ws = None
            return _Ended.STOPPED, False, None
        self.hooks.connected(url, cursor)
        log.info("firehose: connected to %s", url)
        delivered = False
        ended = _Ended.CLOSED
        action: CursorAction | None = None
        reason = "closed"
        try:
            ended, delivered, action, reason = await self._read(ws, cursor)
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self.connect_timeout)
        failures = self._failures + (0 if delivered and ended is not _Ended.HALTED else 1)
        if ended is not _Ended.STOPPED:
            self.hooks.disconnected(reason, failures)
        log.info("firehose: disconnected from %s: %s", url, reason)
        return ended, delivered, action

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, cursor: int | None
    ) -> tuple[_Ended, bool, CursorAction | None, str]:
        """Read frames and dispatch them until the connection ends, a handler fails or stop()."""
        assert self._room is not None
        room = self._room
        stats = self.stats
        last = cursor if cursor else None  # seqs must rise above the cursor we asked for
        delivered = False
        while True:
            if not room.is_set():
                await room.wait()
            if self._stop_requested:
                return _Ended.STOPPED, delivered, None, "stopped"
            if self._halted:
                return _Ended.HALTED, delivered, None, "a handler failed"
            msg = await ws.receive()
            if self._stop_requested:
                return _Ended.STOPPED, delivered, None, "stopped"
            if self._halted:
                return _Ended.HALTED, delivered, None, "a handler failed"
            if msg.type is not aiohttp.WSMsgType.BINARY:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    code = ws.close_code
                    extra = f": {msg.extra}" if msg.extra else ""
                    return _Ended.CLOSED, delivered, None, f"closed by upstream (code {code}{extra})"
                if msg.type is aiohttp.WSMsgType.ERROR:
                    return _Ended.CLOSED, delivered, None, f"connection error: {msg.data!r}"
                stats.frames += 1
                stats.bad += 1
                self.hooks.bad_frame(AtrepoError(f"unexpected {msg.type.name} WebSocket message"), b"")
                continue
            raw: bytes = msg.data
            stats.frames += 1
            stats.bytes += len(raw)
            try:
                frame = decode_frame(raw, max_bytes=self.max_frame_bytes)
            except AtrepoError as exc:
                stats.bad += 1
                log.warning("firehose: skipping an undecodable frame (%d bytes): %s", len(raw), exc)
                self.hooks.bad_frame(exc, raw)
                continue
            if isinstance(frame, ErrorFrame):
                stats.error_frames += 1
                stats.by_type["error"] = stats.by_type.get("error", 0) + 1
                action = self.hooks.error_frame(frame.error, frame.message)
                why = f"error frame {frame.error}" + (f": {frame.message}" if frame.message else "")
                return _Ended.ERROR_FRAME, delivered, action, why
            delivered = True
            if isinstance(frame, InfoEvent):
                stats.by_type["#info"] = stats.by_type.get("#info", 0) + 1
                self.hooks.info(frame.name, frame.message)
                continue
            if isinstance(frame, UnknownFrame):
                stats.unknown += 1
                name = frame.t or f"op {frame.op}"
                stats.by_type[name] = stats.by_type.get(name, 0) + 1
                seq = _unknown_seq(frame)
                if seq is not None:
                    if last is not None and seq <= last:
                        self._drop(seq, f"seq {seq} is not above {last}")
                    else:
                        last = seq
                        self._mark_passed(seq)
                continue
            seq = frame.seq
            stats.by_type[frame.type_name] = stats.by_type.get(frame.type_name, 0) + 1
            if last is not None and seq <= last:
                self._drop(seq, f"seq {seq} is not above {last}")
                continue
            last = seq
            if self._cursor is None and not self._order:
                # Live start: what came before this event was skipped on purpose. Pin the position
                # here, so that a reconnect after a failed handler replays this event instead of
                # joining the live head again and losing everything in between.
                self._cursor = seq - 1
            if self._skip:
                if seq in self._skip:
                    stats.skipped += 1
                    self._skip = {s for s in self._skip if s > seq}
                    self._mark_passed(seq)
                    continue
                self._skip = {s for s in self._skip if s > seq}
            self._dispatch(Received(seq, _did_of(frame), frame, raw))

    def _drop(self, seq: int, why: str) -> None:
        self.stats.dropped += 1
        log.warning("firehose: dropped an event: %s", why)
        self.hooks.dropped(seq, why)

    def _mark_passed(self, seq: int) -> None:
        """A seq that needs no handler (already accepted, or a type we skip): the cursor may pass it."""
        self._order.append(seq)
        self._done.add(seq)
        self._advance()

    def _advance(self) -> None:
        order, done = self._order, self._done
        while order and order[0] in done:
            seq = order.popleft()
            done.discard(seq)
            self._cursor = seq

    def _dispatch(self, item: Received) -> None:
        assert self._room is not None and self._idle is not None and item.seq is not None
        self._in_flight += 1
        self._idle.clear()
        if self._in_flight >= self.max_in_flight:
            self._room.clear()
        self._order.append(item.seq)
        if self.prefetch is not None:
            try:
                self.prefetch(item)
            except Exception:  # a hint only: the handler does the work anyway
                log.exception("firehose: prefetch failed on seq %s", item.seq)
        self._queues[self.lane_of(item.did)].put_nowait(item)

    async def _lane(self, queue: asyncio.Queue[Received]) -> None:
        """One lane: its events one at a time, in order."""
        while True:
            item = await queue.get()
            accepted = False
            try:
                if self._halted:
                    continue  # not accepted: the next connection replays it
                await self.handler(item)
                accepted = True
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.handler_errors += 1
                log.exception(
                    "firehose: handler failed on seq %s (did %s); reconnecting from the cursor",
                    item.seq,
                    item.did,
                )
                self._halt()
            finally:
                self._finish(item, accepted)

    def _finish(self, item: Received, accepted: bool) -> None:
        assert self._room is not None and self._idle is not None and item.seq is not None
        self._in_flight -= 1
        if self._in_flight < self.max_in_flight:
            self._room.set()
        if self._in_flight == 0:
            self._idle.set()
        if accepted:
            self.stats.accepted += 1
            if self._pending_cursor is None:
                self._done.add(item.seq)
                self._advance()

    def _halt(self) -> None:
        if self._halted:
            return
        self._halted = True
        if self._room is not None:
            self._room.set()
        self._close_ws()

    def _close_ws(self) -> None:
        """Close the connection from outside the reader: its pending ``receive()`` returns."""
        ws = self._ws
        if ws is not None and not ws.closed:
            task: asyncio.Task[object] = asyncio.ensure_future(ws.close())
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def _settle(self) -> None:
        """Between connections: wait until nothing is in flight, then fold a handler failure in."""
        assert self._idle is not None and self._stop_event is not None
        if not self._idle.is_set():
            idle = asyncio.ensure_future(self._idle.wait())
            stopping = asyncio.ensure_future(self._stop_event.wait())
            try:
                await asyncio.wait({idle, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
                stopping.cancel()
            if not self._idle.is_set():
                return
        if self._halted:
            # seqs accepted above the failed one are skipped when replayed; the rest are replayed
            self._skip |= {seq for seq in self._order if seq in self._done}
            self._order.clear()
            self._done.clear()
            self._halted = False

    async def _shutdown(self) -> None:
        """Let in-flight handlers finish for up to ``stop_timeout`` seconds, then cancel them."""
        assert self._idle is not None
        self._close_ws()
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.stop_timeout)
        for task in self._lane_tasks:
            task.cancel()
        await asyncio.gather(*self._lane_tasks, return_exceptions=True)
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=self.stop_timeout)
        self._lane_tasks = []
        # anything cancelled stayed unaccepted; the lanes are gone, so nothing is in flight
        self._in_flight = 0
        self._halted = False
        self._idle.set()


class FrameVerifier:
    """Sync 1.1 verification of frames with keys from a :class:`DIDResolver` (sync.md §7 step 5).

    A bad signature earns one forced re-resolution (the key may have rotated);
    a DID that cannot be resolved, or has no ``#atproto`` key, makes its event
    invalid; ``#identity`` purges the DID from the resolver's cache. Per-DID
    order is the caller's (a :class:`Subscriber` gives it).
    """

    def __init__(self, resolver: DIDResolver, tracker: RepoTracker | None = None) -> None:
        self.resolver = resolver
        self.tracker = tracker if tracker is not None else RepoTracker()
        self.stats: collections.Counter[str] = collections.Counter()
        self.refreshes = 0

    async def check(self, frame: Frame) -> Outcome:
        """The tracker's verdict on ``frame``."""
        outcome = await self._check(frame)
        self.stats[outcome.verdict.value] += 1
        return outcome

    async def _check(self, frame: Frame) -> Outcome:
        tracker = self.tracker
        if isinstance(frame, IdentityEvent):
            self.resolver.purge(frame.did)
            return tracker.process(frame, None)
        if not isinstance(frame, CommitEvent | SyncEvent):
            return tracker.process(frame, None)
        did = frame.repo if isinstance(frame, CommitEvent) else frame.did
        key = await self._key(did, refresh=False)
        if isinstance(key, AtrepoError):
            return tracker.reject(frame, key)
        outcome = tracker.process(frame, key, may_retry=True)
        if outcome.verdict is not Verdict.BAD_SIGNATURE:
            return outcome
        self.refreshes += 1
        key = await self._key(did, refresh=True)
        if isinstance(key, AtrepoError):
            return tracker.reject(frame, key)
        return tracker.process(frame, key)

    async def _key(self, did: str, *, refresh: bool) -> PublicKey | AtrepoError:
        try:
            document = await self.resolver.resolve(did, force_refresh=refresh)
        except AtrepoError as exc:
            return exc
        if document.signing_key is None:
            return InvalidDIDDocument(f"{did}: no usable #atproto signing key")
        return document.signing_key
