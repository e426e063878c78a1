"""One subscriber of ``subscribeRepos``: cursor rules, backfill, cutover, live, and closing.

Model: the TS PDS ``sequencer/outbox.ts``, with one difference that removes
its hardest part. The reference buffers live events in memory while it
backfills from the database, then splices the two streams at the cutover,
de-duplicating by seq. Here the outbox never holds events of its own: it is a
position ``last`` (the seq it sent last) and one loop that always asks for
"the events after ``last``":

* from the fan-out's shared window when the window reaches back to ``last``
  (live subscribers, and backfills that have come close to the head);
* otherwise from the store, one page per query on a reader thread (backfill).

Both sources are the same ordered log (the window holds every stored event
between its ``base`` and ``tail``), each answer holds only seqs greater than
``last``, in order, and ``last`` moves to the seq of each frame once it is
sent. So the stream is strictly increasing, which rules out duplicates, and
each answer starts at the first event after ``last``, which rules out gaps,
whichever source answers and however writes interleave with the reads: an
event appended during backfill is either on a later store page or in the
window, and is sent once when ``last`` reaches it. The cutover is not a step
at all; "live" just means the last answer was empty and the outbox waited for
the fan-out to move.

Sending: the events after ``last`` go to the socket as their shared
WebSocket frames (built once per event, see ``wire.py``), a batch of up to
:data:`BATCH_BYTES` in one write, and ``last`` moves to the batch's last seq.
The sender then waits for the socket only when the transport holds more than
``wire.HIGH_WATER`` bytes, instead of a coroutine and a drain check per frame.

Slow consumers: sends await the socket's flow control, so a consumer that
does not read stops its own outbox, and its position falls behind. Once it
has been live, the fan-out measures that distance whenever events arrive and
cuts it past ``max_queue`` (``ConsumerTooSlow`` then close 1008). A backfill
reads at its consumer's pace from the store and holds no memory of its own,
so it is never cut.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from atrepo.core.errors import XrpcError
from atrepo.core.events import InfoEvent, encode_error_frame, encode_frame
from atrepo.store.base import EventLog, EventRow
from atrepo.xrpc.metrics import Counter, Gauge, Metrics

from .fanout import DEFAULT_PAGE, Fanout
from .wire import HIGH_WATER, buffered, drain, frame_size, write_frames

__all__ = ["BATCH_BYTES", "DEFAULT_CLOSE_TIMEOUT", "DEFAULT_MAX_QUEUE", "FirehoseMetrics", "Outbox"]

log = logging.getLogger("atrepo.firehose")

#: Events a live subscriber may fall behind before it is cut (the TS PDS buffers 500).
DEFAULT_MAX_QUEUE: Final = 500
#: How long closing (error frame, close frame, the client's reply) may take before the
#: connection is aborted: a consumer that does not read would otherwise hold it forever.
DEFAULT_CLOSE_TIMEOUT: Final = 10.0
#: At most this many bytes of frames in one write (a single larger frame goes alone): one system
#: call per batch, while a subscriber's transport never holds much more than one batch.
BATCH_BYTES: Final = 256 * 1024

#: Private switch, for ``bench/firehose_fanout.py`` only: False sends the previous way, one
#: ``WebSocketResponse.send_bytes`` per frame per subscriber, so the two can be measured side by side.
_DIRECT_WRITES = True

S = TypeVar("S", bound=EventLog)


class _SampledGauge(Gauge):
    """A gauge whose values are taken from ``sample`` when it is rendered, i.e. at scrape time.

    Queue depths change with every frame sent; keeping a gauge up to date on
    that path would cost more than the send. Sampling them when ``/metrics`` is
    read costs one pass over the subscribers per scrape instead.
    """

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: tuple[str, ...],
        sample: Callable[[], dict[tuple[str, ...], float]],
    ) -> None:
        super().__init__(name, help, labelnames)
        self._sample = sample

    def render(self) -> Iterator[str]:
        values = self._sample()
        with self._lock:
            self._values = dict(values)
        yield from super().render()


_STATES: Final = ("backfill", "live")


def _queue_stats(fanout: Fanout[S]) -> dict[str, dict[tuple[str, ...], float]]:
    """One pass over the subscribers: counts, depths (seqs behind the fan-out's tail), buffered bytes."""
    count = dict.fromkeys(_STATES, 0)
    depth_max = dict.fromkeys(_STATES, 0)
    depth_sum = dict.fromkeys(_STATES, 0)
    buf_max = buf_sum = 0
    tail = fanout.tail
    for sub in fanout.subscribers:
        state = "live" if sub.live else "backfill"
        depth = max(0, tail - sub.last)
        count[state] += 1
        depth_sum[state] += depth
        depth_max[state] = max(depth_max[state], depth)
        size = sub.buffered
        buf_sum += size
        buf_max = max(buf_max, size)
    return {
        "subscribers": {(k,): float(v) for k, v in count.items()},
        "depth_max": {(k,): float(v) for k, v in depth_max.items()},
        "depth_sum": {(k,): float(v) for k, v in depth_sum.items()},
        "buffer_max": {(): float(buf_max)},
        "buffer_sum": {(): float(buf_sum)},
        "window": {(): float(fanout.window_size)},
    }


@dataclass(frozen=True, slots=True)
class FirehoseMetrics:
    """The firehose's metrics, registered once per registry (``/metrics``).

    Counters and the connection gauge are updated as things happen; with a
    ``fanout``, :meth:`register` also adds gauges sampled at scrape time:
    subscribers by state, queue depth (seqs behind the fan-out's tail: for a
    live subscriber its queue, bounded by ``max_queue``; for a backfill how far
    it has to go) as max and sum per state, the bytes waiting in the
    subscribers' transports (max and sum), and the events in the shared window.
    """

    subscribers: Gauge
    frames: Counter
    slow: Counter
    bytes: Counter | None = None
    sampled: tuple[Gauge, ...] = ()

    @classmethod
    def register(
        cls, metrics: Metrics, prefix: str = "atrepo_firehose", fanout: Fanout[S] | None = None
    ) -> FirehoseMetrics:
        sampled: list[Gauge] = []
        if fanout is not None:
            sample_fanout = fanout

            def sampler(key: str) -> Callable[[], dict[tuple[str, ...], float]]:
                # A pass over the subscribers per gauge and scrape: cheap next to rendering.
                return lambda: _queue_stats(sample_fanout)[key]

            state = ("state",)
            specs = [
                ("subscribers", "_subscribers_by_state", "Subscribers by state (backfill or live)", state),
                ("depth_max", "_queue_depth_max", "Largest queue depth by state, in events (seqs)", state),
                ("depth_sum", "_queue_depth_sum", "Sum of queue depths by state, in events (seqs)", state),
                ("buffer_max", "_write_buffer_bytes_max", "Largest subscriber transport buffer (bytes)", ()),
                ("buffer_sum", "_write_buffer_bytes_sum", "Bytes in all subscriber transport buffers", ()),
                ("window", "_window_events", "Events in the shared window of recent frames", ()),
            ]
            for key, suffix, text, labels in specs:
                gauge = _SampledGauge(f"{prefix}{suffix}", text, labels, sampler(key))
                metrics.register(gauge)
                sampled.append(gauge)
        return cls(
            subscribers=metrics.gauge(f"{prefix}_subscribers", "Open subscribeRepos connections"),
            frames=metrics.counter(
                f"{prefix}_frames_sent_total", "Frames sent to subscribers (#info included)"
            ),
            slow=metrics.counter(
                f"{prefix}_slow_consumers_total", "Subscribers cut with ConsumerTooSlow for falling behind"
            ),
            bytes=metrics.counter(
                f"{prefix}_bytes_sent_total",
                "Bytes of WebSocket frames sent (headers included)",
            ),
            sampled=tuple(sampled),
        )


def _head_seq(store: EventLog) -> int:
    return store.head_seq()


def _oldest_seq(store: EventLog) -> int | None:
    return store.oldest_seq()


def _read_events(store: EventLog, after: int, limit: int) -> list[EventRow]:
    return store.read_events(after, limit)


@dataclass(frozen=True, slots=True)
class _Stop:
    code: int
    reason: str
    error: str | None = None  # an error frame's name, sent before the close


class Outbox(Generic[S]):
    """Serves one WebSocket: call :meth:`run` with the ``cursor`` parameter; it returns once closed.

    ``abort`` cuts the connection when closing politely takes longer than
    ``close_timeout`` (``request.transport.abort``). ``request`` (the
    upgraded request) lets frames go straight to its transport (``wire.py``);
    without it every frame goes through ``ws.send_bytes``.
    """

    def __init__(
        self,
        fanout: Fanout[S],
        ws: web.WebSocketResponse,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        page: int = DEFAULT_PAGE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        abort: Callable[[], None] | None = None,
        metrics: FirehoseMetrics | None = None,
        request: web.BaseRequest | None = None,
    ) -> None:
        if max_queue < 1 or page < 1:
            raise ValueError("max_queue and page must be at least 1")
        if max_queue > fanout.window:
            raise ValueError(f"max_queue ({max_queue}) cannot exceed the fan-out window ({fanout.window})")
        self._fanout = fanout
        self._ws = ws
        self._max_queue = max_queue
        self._page = page
        self._close_timeout = close_timeout
        self._abort = abort
        self._metrics = metrics
        self._request = request
        self._last = 0
        self._live = False
        self._stop: _Stop | None = None
        self._sender: asyncio.Task[None] | None = None
        self._sending = False  # inside ws.send_bytes: must not be cancelled
        self._watchdog: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- Subscriber, as the fan-out sees it ---------------------------------------------

    @property
    def last(self) -> int:
        return self._last

    @property
    def live(self) -> bool:
        return self._live

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @property
    def buffered(self) -> int:
        return buffered(self._request) if self._request is not None else 0

    def too_slow(self) -> None:
        if self._stop is None and self._metrics is not None:
            self._metrics.slow.inc()
        self._halt(_Stop(WSCloseCode.POLICY_VIOLATION, "ConsumerTooSlow", "ConsumerTooSlow"))

    def stop(self, code: int, reason: str) -> None:
        self._halt(_Stop(code, reason))

    async def finished(self) -> None:
        await asyncio.shield(self._done)

    def _halt(self, stop: _Stop) -> None:
        if self._stop is not None:
            return
        self._stop = stop
        if self._sender is None or self._sender.done():
            return  # not sending yet: run() sees the stop before it starts and closes at once
        if not self._sending:
            self._sender.cancel()
            return
        # Never cancel a send: aiohttp's drain waits on a future shared by every writer
        # of the connection, so cancelling one send fails the error frame and the close
        # that follow. The sender stops after this frame; one that stays blocked (the
        # client reads nothing) is cut when the close would have timed out anyway.
        self._watchdog = asyncio.get_running_loop().call_later(self._close_timeout, self._abort_now)

    def _abort_now(self) -> None:
        if self._sender is not None and not self._sender.done() and self._abort is not None:
            log.debug("firehose subscriber blocked past the close timeout; aborting the connection")
            self._abort()

    # --- serving -------------------------------------------------------------------------

    async def run(self, cursor: int | None) -> None:
        """Apply the cursor rules (sync.md §4), then stream until closed or stopped.

        Raises ``XrpcError("FutureCursor")`` for a cursor past the head (the
        router turns it into the error frame and a 1008 close).
        """
        try:
            if self._fanout.closed:  # shutting down: reconnect later, to another process
                self._stop = _Stop(WSCloseCode.SERVICE_RESTART, "service restart")
                await self._close()
            else:
                self._fanout.add(self)
                if self._metrics is not None:
                    self._metrics.subscribers.inc()
                try:
                    await self._serve(cursor)
                finally:
                    self._fanout.discard(self)
                    if self._metrics is not None:
                        self._metrics.subscribers.dec()
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if not self._done.done():
                self._done.set_result(None)

    async def _serve(self, cursor: int | None) -> None:
        worker = self._fanout.worker
        head = await worker.read(_head_seq)
        info: bytes | None = None
        if cursor is None:
            self._last = head  # live only: what is committed from now on
        elif cursor > head:
            raise XrpcError("FutureCursor", "Cursor in the future.", 400)
        else:
            oldest = await worker.read(_oldest_seq)
            # Not outdated when every event after the cursor is still stored (cursor 0
            # on an unpruned log included); an empty log with a head was pruned whole.
            outdated = cursor < oldest - 1 if oldest is not None else cursor < head
            self._last = cursor
            if outdated:
                info = encode_frame(
                    InfoEvent("OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events")
                )
                # From the oldest retained event: the window may still hold pruned ones,
                # and serving some of what the #info just called missing would be a lie.
                self._last = oldest - 1 if oldest is not None else head
        if self._stop is None:
            self._sender = asyncio.create_task(self._send(info), name="atrepo-firehose-outbox")
            inbound = asyncio.create_task(self._read_inbound(), name="atrepo-firehose-inbound")
            try:
                await asyncio.wait({self._sender, inbound}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (self._sender, inbound):
                    task.cancel()
                await asyncio.wait({self._sender, inbound})
            if not self._sender.cancelled() and (exc := self._sender.exception()) is not None:
                if not isinstance(exc, ConnectionError):
                    raise exc
                return  # the client went away mid-send: nothing left to say
        await self._close()

    async def _send(self, info: bytes | None) -> None:
        """The one loop: always "the events after ``last``", from memory or from the store."""
        ws = self._ws
        fanout = self._fanout
        frames = self._metrics.frames if self._metrics is not None else None
        if info is not None:
            self._sending = True
            await ws.send_bytes(info)
            self._sending = False
            if frames is not None:
                frames.inc()
            if self._metrics is not None and self._metrics.bytes is not None:
                self._metrics.bytes.inc(frame_size(len(info)))
        if _DIRECT_WRITES and self._request is not None:
            await self._send_direct(self._request)
            return
        while self._stop is None:
            rows = fanout.rows_after(self._last, self._page)
            if rows is None:  # the window starts after last: backfill from the store
                rows = await fanout.worker.read(_read_events, self._last, self._page)
                if not rows:
                    # Nothing stored between last and the window: those events are gone
                    # (an account deletion); the window carries on from its base.
                    self._last = max(self._last, fanout.base)
                    continue
            elif not rows:
                self._live = True
                await fanout.wait_past(self._last)
                if fanout.closed:
                    return
                continue
            sent = size = 0
            try:
                for row in rows:
                    self._sending = True
                    await ws.send_bytes(row.frame)
                    self._sending = False
                    self._last = row.seq
                    sent += 1
                    size += frame_size(len(row.frame))
                    if self._stop is not None:
                        return
            finally:
                if frames is not None:
                    frames.inc(sent)
                if self._metrics is not None and self._metrics.bytes is not None:
                    self._metrics.bytes.inc(size)

    async def _send_direct(self, request: web.BaseRequest) -> None:
        """The same loop, writing shared wire frames in batches (``wire.py``)."""
        ws = self._ws
        fanout = self._fanout
        metrics = self._metrics
        while self._stop is None:
            got = fanout.frames_after(self._last, self._page)
            if got is None:  # the window starts after last: backfill from the store
                rows, wires, ends = await fanout.backfill(self._last, self._page)
                if not rows:
                    # Nothing stored between last and the window: those events are gone
                    # (an account deletion); the window carries on from its base.
                    self._last = max(self._last, fanout.base)
                    continue
            else:
                rows, wires, ends = got
                if not rows:
                    self._live = True
                    await fanout.wait_past(self._last)
                    if fanout.closed:
                        return
                    continue
            start = 0
            while start < len(rows):
                # Frames from start that fit in BATCH_BYTES (at least one).
                origin = ends[start] - len(wires[start])
                end = max(start + 1, bisect.bisect_right(ends, origin + BATCH_BYTES))
                written = write_frames(ws, request, wires[start:end] if start or end < len(wires) else wires)
                self._last = rows[end - 1].seq
                if metrics is not None:
                    metrics.frames.inc(end - start)
                    if metrics.bytes is not None:
                        metrics.bytes.inc(written)
                start = end
                if buffered(request) > HIGH_WATER:
                    self._sending = True
                    await drain(request)
                    self._sending = False
                if self._stop is not None:
                    return

    async def _read_inbound(self) -> None:
        """Streams are server-to-client; reading answers pings and notices the client's close."""
        while True:
            msg = await self._ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    async def _close(self) -> None:
        """The stop's error frame (if any) and close frame, bounded by ``close_timeout``."""
        stop = self._stop
        ws = self._ws
        if ws.closed:
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                if stop is None:
                    await ws.close()
                    return
                if stop.error is not None:
                    await ws.send_bytes(encode_error_frame(stop.error, _MESSAGES.get(stop.error)))
                await ws.close(code=stop.code, message=stop.reason.encode()[:120])
        except (TimeoutError, ConnectionError):
            log.debug("firehose subscriber did not take its close in time; aborting the connection")
            if self._abort is not None:
                with contextlib.suppress(Exception):
                    self._abort()


_MESSAGES: Final = {"ConsumerTooSlow": "Stream consumer too slow"}
