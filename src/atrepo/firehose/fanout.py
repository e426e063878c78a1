"""Fan-out: one reader of the event log, a shared window of recent frames, and wake-ups.

The host calls :meth:`Fanout.notify` after every committed write with the new
head seq. That only records the number and sets a flag: it never blocks and
never touches the store, so a write handler pays nothing for subscribers. One
pump task then reads the new events from the store (a page at a time, on a
reader thread), appends them to a window of the most recent events, and wakes
every waiting outbox at once (model: indigo ``stream/eventmgr``).

The window is what makes a thousand subscribers cost one query: each
:class:`~atrepo.store.base.EventRow` holds the frame encoded once at append,
and every live outbox sends those same bytes objects. Outboxes do not own
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
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from typing import Final, Generic, Protocol, TypeVar

from atrepo.store.base import EventLog, EventRow
from atrepo.store.worker import StoreWorker

__all__ = ["DEFAULT_PAGE", "DEFAULT_WINDOW", "Fanout", "Subscriber"]

log = logging.getLogger("atrepo.firehose")

#: Recent events kept in memory for live subscribers (at least this many, at most twice).
DEFAULT_WINDOW: Final = 4096
#: Events read from the store in one query (by the pump and by backfilling outboxes).
DEFAULT_PAGE: Final = 500
#: Pause after the store failed a read, before the pump tries again.
_RETRY_S: Final = 0.5

S = TypeVar("S", bound=EventLog)


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

    def rows_after(self, after: int, limit: int) -> list[EventRow] | None:
        """Up to ``limit`` events with seq > ``after`` from memory; None when the window starts later."""
        if after < self._base:
            return None
        start = bisect.bisect_right(self._seqs, after)
        return self._rows[start : start + limit]

    def lag(self, after: int) -> int | None:
        """How many known events follow ``after`` (None: more than the window holds)."""
        if after < self._base:
            return None
        return len(self._seqs) - bisect.bisect_right(self._seqs, after)

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
                if not rows:
                    # Nothing visible after tail although the head moved past it: those
                    # events were deleted (an account deletion drops its DID's events).
                    self._tail = self._target
                else:
                    self._check_lag()
                    self._rows.extend(rows)
                    self._seqs.extend(row.seq for row in rows)
                    self._tail = rows[-1].seq
                    self._target = max(self._target, self._tail)
                    self._trim()
                self._broadcast()

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

    def _trim(self) -> None:
        """Keep the newest ``window`` events once twice as many have gathered (amortised O(1))."""
        if len(self._rows) <= 2 * self.window:
            return
        cut = len(self._rows) - self.window
        self._base = self._seqs[cut - 1]
        del self._rows[:cut]
        del self._seqs[:cut]

    def _broadcast(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
