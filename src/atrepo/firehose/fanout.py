"""Fan-out: one reader of the event log, a shared window of recent frames, and wake-ups.

The host calls :meth:`Fanout.notify` after every committed write with the new
head seq. That only records the number and sets a flag: it never blocks and
never touches the store, so a write handler pays nothing for subscribers. One
pump task then reads the new events from the store (a page at a time, on a
reader thread), appends them to a window of the most recent events, and wakes
every waiting outbox at once (model: indigo ``stream/eventmgr``).

The window is what makes a thousand subscribers cost one query: each
:class:`~atrepo.store.base.EventRow` holds the frame encoded once at append,
and the window keeps beside it the whole WebSocket frame (header and payload,
built once here, see ``wire.py``) that every live outbox writes as it is. Outboxes do not own
queues; each one is a position (``last``, the seq it sent last) in the shared
window. A subscriber's "queue" is the part of the window after its position,
so its length is measured, not stored: when new events arrive the pump checks
every live outbox and tells one more than ``max_queue`` events behind that it
is too slow (``ConsumerTooSlow``).

**Coverage.** The window holds *every* stored event with seq in ``(base,
tail]``: the pump reads the log in seq order from ``tail`` on, and the store
makes a seq visible only once every smaller one is (base.py, "event
sequence"). A position ``last >= base`` can therefore be served from memory
with no gap; a position below ``base`` (a backfilling subscriber) is served
from the store. Trimming keeps at least ``window`` events, and ``max_queue``
may not exceed ``window``, so a live subscriber that has not been cut never
falls off the window.

**Backfill pages.** Subscribers below ``base`` read the store a page at a
time; subscribers that ask for the same page (same ``after`` and size, as
replays from the same cursor do) share one read and one set of wire frames
(:meth:`Fanout.backfill`). Only full pages are kept for later askers: a full
page of "the first ``page`` events after ``after``" cannot change as the log
grows, while a short one (it reached the head then) would hide later events.
Kept pages are dropped once every subscriber is live (checked as events
arrive and as subscribers leave).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

from atrepo.store.base import EventLog, EventRow
from atrepo.store.worker import StoreWorker

from .wire import binary_frame

__all__ = ["DEFAULT_PAGE", "DEFAULT_SHARED_PAGES", "DEFAULT_WINDOW", "Fanout", "Frames", "Subscriber"]

log = logging.getLogger("atrepo.firehose")

#: Recent events kept in memory for live subscribers (at least this many, at most twice).
DEFAULT_WINDOW: Final = 4096
#: Events read from the store in one query (by the pump and by backfilling outboxes).
DEFAULT_PAGE: Final = 500
#: Full backfill pages kept for subscribers that ask for the same one (a page is ``page`` events).
DEFAULT_SHARED_PAGES: Final = 16
#: Pause after the store failed a read, before the pump tries again.
_RETRY_S: Final = 0.5

S = TypeVar("S", bound=EventLog)


class Frames(NamedTuple):
    """Consecutive events with their wire frames, shared by every subscriber that sends them.

    ``ends[i]`` is where ``wires[i]`` ends in a running count of bytes, so a
    sender finds how many frames fit in a write with one bisection.
    """

    rows: list[EventRow]
    wires: list[bytes]
    ends: list[int]


def _frames(rows: list[EventRow], origin: int = 0) -> Frames:
    wires = [binary_frame(row.frame) for row in rows]
    return Frames(rows, wires, list(itertools.accumulate(map(len, wires), initial=origin))[1:])


class Subscriber(Protocol):
    """What the fan-out needs of an outbox: where it stands and how to cut it off."""

    @property
    def last(self) -> int:
        """The seq of the last event sent."""
        ...

    @property
    def live(self) -> bool:
        """Caught up once: from now on it is held to ``max_queue``."""
        ...

    @property
    def max_queue(self) -> int: ...

    @property
    def buffered(self) -> int:
        """Bytes written to its connection that the socket has not taken yet."""
        ...

    def too_slow(self) -> None:
        """Send ``ConsumerTooSlow`` and close (returns at once; the outbox does the closing)."""
        ...

    def stop(self, code: int, reason: str) -> None:
        """Close with ``code`` (returns at once)."""
        ...

    async def finished(self) -> None:
        """Return once the outbox has closed its connection."""
        ...


def _read_events(store: EventLog, after: int, limit: int) -> list[EventRow]:
    return store.read_events(after, limit)


def _head_seq(store: EventLog) -> int:
    return store.head_seq()


class Fanout(Generic[S]):
    """Reads new events once, keeps the recent ones, wakes every outbox.

    ``worker``: the store worker (reads run on its reader threads).
    ``window``: how many recent events live subscribers are served from memory.
    ``page``: events per store query. Call :meth:`start` before serving and
    :meth:`close` on shutdown (it closes every subscriber with code 1012).
    """

    def __init__(
        self, worker: StoreWorker[S], *, window: int = DEFAULT_WINDOW, page: int = DEFAULT_PAGE
    ) -> None:
        if window < 1 or page < 1:
            raise ValueError("window and page must be at least 1")
        self.worker = worker
        self.window = window
        self.page = page
        self._rows: list[EventRow] = []
        self._seqs: list[int] = []
        # The wire frame of each row (binary_frame(row.frame)): built once, written to every subscriber.
        self._wires: list[bytes] = []
        self._ends: list[int] = []
        # The window holds every stored event with base < seq <= tail.
        self._base = 0
        self._tail = 0
        # The highest head announced by notify; the pump reads up to it.
        self._target = 0
        self._wake = asyncio.Event()
        # Replaced each time the tail moves: waiters hold the old one, set once.
        self._moved = asyncio.Event()
        self._subscribers: set[Subscriber] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        # Backfill reads, shared by (after, limit): in flight, or done and full.
        self._pages: OrderedDict[tuple[int, int], asyncio.Task[Frames]] = OrderedDict()
        self.shared_pages = DEFAULT_SHARED_PAGES

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start at the log's current head: older events are the store's to serve."""
        if self._pump_task is not None:
            raise RuntimeError("the fan-out is already started")
        head = await self.worker.read(_head_seq)
        self._base = self._tail = self._target = head
        self._pump_task = asyncio.create_task(self._pump(), name="atrepo-firehose-fanout")

    async def close(self) -> None:
        """Stop reading; close every subscriber with 1012 (service restart) and wait for them.

        1012 rather than 1000/1001: clients such as the MarshalX SDK treat those
        as "stop for good", while 1012 tells them to reconnect with their cursor.
        """
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._broadcast()
        subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.stop(1012, "service restart")
        if subscribers:
            await asyncio.gather(*(sub.finished() for sub in subscribers), return_exceptions=True)
        for page in self._pages.values():
            page.cancel()
        self._pages.clear()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task

    @property
    def started(self) -> bool:
        return self._pump_task is not None

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the writer's side ---------------------------------------------------------------

    def notify(self, head_seq: int) -> None:
        """The log's head is now ``head_seq`` (call after the commit): cheap, never blocks."""
        if head_seq > self._target:
            self._target = head_seq
            self._wake.set()

    def offer(self, rows: Sequence[EventRow]) -> None:
        """Committed events a writer already holds: appended at once when they follow the window's tail.

        The writer has the rows it appended in hand, so reading them back
        from the store (a reader-thread round trip and a query per write)
        is waste when they are the next seqs. Rows that do not continue the
        tail exactly (another write's event is still on its way, or the pump
        is behind) are left to the pump: it reads the log in order and skips
        what is already here, so the window never holds a gap or a duplicate.
        Call only after the transaction that appended ``rows`` has committed.
        """
        if self._closed or not rows or rows[0].seq != self._tail + 1:
            if rows:
                self.notify(rows[-1].seq)
            return
        for before, after in itertools.pairwise(rows):
            if after.seq != before.seq + 1:
                self.notify(rows[-1].seq)
                return
        self._append(list(rows))
        self._broadcast()

    # --- the outboxes' side --------------------------------------------------------------

    @property
    def tail(self) -> int:
        """The last seq the window knows of."""
        return self._tail

    @property
    def base(self) -> int:
        """Every event after this seq (up to ``tail``) is in the window."""
        return self._base

    @property
    def window_size(self) -> int:
        """Events held in memory now (between ``window`` and twice that once the log is long enough)."""
        return len(self._rows)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The outboxes being served (for tests and diagnostics)."""
        return tuple(self._subscribers)

    def add(self, sub: Subscriber) -> None:
        if self._closed:
            raise RuntimeError("the fan-out is closed")
        if self._pump_task is None:  # nothing would ever wake the subscriber
            raise RuntimeError("the fan-out is not started: await fanout.start() first")
        self._subscribers.add(sub)

    def discard(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        self._drop_pages_if_idle()

    @property
    def shared_pages_held(self) -> int:
        """Backfill pages held for sharing (in flight or kept)."""
        return len(self._pages)

    def _drop_pages_if_idle(self) -> None:
        """Shared pages only serve backfills: once none is running, let their memory go."""
        if self._pages and all(sub.live for sub in self._subscribers):
            for key in [key for key, task in self._pages.items() if task.done()]:
                del self._pages[key]

    def rows_after(self, after: int, limit: int) -> list[EventRow] | None:
        """Up to ``limit`` events with seq > ``after`` from memory; None when the window starts later."""
        if after < self._base:
            return None
        start = bisect.bisect_right(self._seqs, after)
        return self._rows[start : start + limit]

    def frames_after(self, after: int, limit: int) -> Frames | None:
        """As :meth:`rows_after`, with each row's WebSocket frame (shared by every subscriber)."""
        if after < self._base:
            return None
        start = bisect.bisect_right(self._seqs, after)
        end = start + limit
        return Frames(self._rows[start:end], self._wires[start:end], self._ends[start:end])

    def lag(self, after: int) -> int | None:
        """How many known events follow ``after`` (None: more than the window holds)."""
        if after < self._base:
            return None
        return len(self._seqs) - bisect.bisect_right(self._seqs, after)

    async def backfill(self, after: int, limit: int) -> Frames:
        """Up to ``limit`` stored events after ``after``, with their wire frames: one read per page.

        Concurrent and later callers asking for the same full page get the same
        rows and frame bytes, so a replay to many subscribers reads and frames
        each event once. A caller that is cancelled does not cancel the read.
        """
        key = (after, limit)
        task = self._pages.get(key)
        if task is None:
            task = asyncio.create_task(self._read_page(key))
            self._pages[key] = task
            while len(self._pages) > self.shared_pages:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(key)
        return await asyncio.shield(task)

    async def _read_page(self, key: tuple[int, int]) -> Frames:
        after, limit = key
        try:
            rows = await self.worker.read(_read_events, after, limit)
        except BaseException:
            self._pages.pop(key, None)
            raise
        if len(rows) < limit:  # reached the head: later callers must read again
            self._pages.pop(key, None)
        return _frames(rows)

    async def wait_past(self, seq: int) -> None:
        """Return once the window knows an event after ``seq``, or the fan-out closes."""
        while self._tail <= seq and not self._closed:
            await self._moved.wait()

    # --- the pump ------------------------------------------------------------------------

    async def _pump(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._tail < self._target and not self._closed:
                try:
                    rows = await self.worker.read(_read_events, self._tail, self.page)
                except Exception:
                    if self.worker.closed:
                        return
                    log.exception("firehose fan-out: reading the event log failed; retrying")
                    await asyncio.sleep(_RETRY_S)
                    continue
                if rows and rows[0].seq <= self._tail:  # ``offer`` appended some while we read
                    rows = [row for row in rows if row.seq > self._tail]
                    if not rows:
                        continue
                if not rows:
                    # Nothing visible after tail although the head moved past it: those
                    # events were deleted (an account deletion drops its DID's events).
                    self._tail = self._target
                else:
                    self._append(rows)
                self._broadcast()

    def _append(self, rows: list[EventRow]) -> None:
        """Add events that follow the tail to the window (their frames built once, here)."""
        self._check_lag()
        self._rows.extend(rows)
        self._seqs.extend(row.seq for row in rows)
        frames = _frames(rows, self._ends[-1] if self._ends else 0)
        self._wires.extend(frames.wires)
        self._ends.extend(frames.ends)
        self._tail = rows[-1].seq
        self._target = max(self._target, self._tail)
        self._trim()

    def _check_lag(self) -> None:
        """Before a batch lands: cut live subscribers already more than ``max_queue`` behind.

        Measured before the batch is appended, so that a burst larger than
        ``max_queue`` does not cut a subscriber that was keeping up.
        """
        for sub in list(self._subscribers):
            if not sub.live:
                continue
            lag = self.lag(sub.last)
            if lag is None or lag > sub.max_queue:
                sub.too_slow()
        self._drop_pages_if_idle()

    def _trim(self) -> None:
        """Keep the newest ``window`` events once twice as many have gathered (amortised O(1))."""
        if len(self._rows) <= 2 * self.window:
            return
        cut = len(self._rows) - self.window
        self._base = self._seqs[cut - 1]
        del self._rows[:cut]
        del self._seqs[:cut]
        del self._wires[:cut]
        del self._ends[:cut]

    def _broadcast(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
