"""The one bridge from async code to a store: a writer thread and a few reader threads.

Store protocols are synchronous (the core reads blocks lazily while it walks a
tree), so an async handler never calls a store itself: it hands a function to
the worker, ``await worker.run(fn, *args)``, and the writer thread runs
``fn(store, *args)``, typically one ``with store.transaction(did) as tx:``
from opening the repo to appending the event. One thread means one writer:
no two writes to a repository can interleave, and SQLite never waits on its
own write lock. The PLC directory does the same with a one-thread executor
(:mod:`atrepo.identity.plc.server`); this one adds a bound on queued work, so
that a burst of writes fails fast with a clear error instead of queueing
without limit, and a ``close`` that finishes what was queued.

**Several writer threads** (``writers=N``) are for a store that serializes
each repository's writes itself: the PostgreSQL store takes an advisory lock
per DID in every transaction and orders commits by its event counter, and
each of its writes waits on a dozen round trips to the server, so N threads
overlap those waits. Writes to one repository then queue in the database,
not here; the host runs them without group commit (``group_max=1``), since a
group would hold the event counter for all of its jobs.

``await worker.read(fn, *args)`` runs ``fn(store, *args)`` on a small pool of
reader threads (each with its own connection in the SQLite store), for reads
that should not wait behind writes nor block the event loop.

**Group commit.** When writes queue up behind the one running (many clients
at once), the writer takes up to ``group_max`` of them and, if the store has
``group_commit()``, runs them in one transaction: each job's writes become a
savepoint, a failing job is rolled back alone, and one ``COMMIT`` (one fsync,
the dominant cost of a durable write) makes them all durable. No future is
settled before that ``COMMIT`` returns, so nothing is acknowledged early; a
lone write is committed on its own as before, so a single client waits for
nobody.

A caller that is cancelled while its job waits in the queue takes the job with
it; a job already running finishes (and commits), its result unseen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar

from atrepo.core.errors import LimitExceeded, StoreUnavailable

__all__ = ["DEFAULT_GROUP_MAX", "DEFAULT_MAX_PENDING", "DEFAULT_READERS", "StoreWorker"]

log = logging.getLogger("atrepo.store")

S = TypeVar("S")
T = TypeVar("T")
P = ParamSpec("P")

#: Most write jobs waiting for the writer thread; one more is refused at once.
#: At ~1 ms a commit this is about a second of backlog.
DEFAULT_MAX_PENDING: Final = 1024
#: Most queued write jobs committed together in one transaction (when the store has ``group_commit``).
DEFAULT_GROUP_MAX: Final = 64
#: Reader threads for ``StoreWorker.read``.
DEFAULT_READERS: Final = 4


#: What became of a job: (job, its error or None, its result); the error ``_CANCELLED`` means not run.
_Outcome = tuple["_Job", BaseException | None, Any]


class _Cancelled(BaseException):
    """Marks a job whose caller gave up before it ran: its future is settled already."""


_CANCELLED: Final = _Cancelled()

#: ``store.group_commit``: a context manager that runs what is inside it as one transaction.
_Group = Callable[[], contextlib.AbstractContextManager[None]]


@dataclass(slots=True)
class _Job:
    """One queued call, and how its caller hears back.

    ``submit`` callers wait on a ``concurrent.futures.Future``. ``run``
    callers (the event loop, one per write) get a lighter path: their asyncio
    future is settled with one ``call_soon_threadsafe``, and ``claim`` (one
    item) decides between the writer starting the job and a cancelled caller
    dropping it: whoever pops the item first wins (``list.pop`` is atomic).
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any] | None = None
    waiter: asyncio.Future[Any] | None = None
    claim: list[None] | None = None

    def start(self) -> bool:
        """On the writer: mark the job running; False if its caller gave up first (skip it)."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return _take(self.claim)

    def settle(self, error: BaseException | None, result: Any) -> None:
        """On the writer: hand the outcome to the caller."""
        if error is not None:
            error = _as_outage(error)
        if self.future is not None:
            if error is None:
                self.future.set_result(result)
            else:
                self.future.set_exception(error)
            return
        waiter = self.waiter
        assert waiter is not None
        try:
            waiter.get_loop().call_soon_threadsafe(_settle_waiter, waiter, error, result)
        except RuntimeError:  # the caller's loop is closed: nobody is left to hear back
            log.debug("store worker: the caller's event loop closed before its job finished")


#: SQLSTATEs of a database server that is going or gone: the 08 class (connection exceptions) and
#: admin_shutdown, crash_shutdown, cannot_connect_now (a server still recovering).
_OUTAGE_STATES: Final = frozenset({"57P01", "57P02", "57P03"})


def _as_outage(error: BaseException) -> BaseException:
    """A lost or refused database connection as :class:`StoreUnavailable` (the driver's error chained).

    Why here: every store call goes through this worker, and an outage fails
    each of them the same way; typed, it is answered as a 500 and logged in
    one line that names the cause, instead of a driver traceback per call.
    The driver is recognised by name: it is imported lazily, by PostgreSQL
    stores only, and this must not import it for a SQLite store's sake.
    """
    if isinstance(error, StoreUnavailable):
        return error
    operational = any(
        c.__name__ == "OperationalError" and c.__module__.startswith("psycopg") for c in type(error).__mro__
    )
    if not operational:
        return error
    state = getattr(error, "sqlstate", None)
    if state is not None and not state.startswith("08") and state not in _OUTAGE_STATES:
        return error  # a lock timeout, a cancelled statement: not an outage
    text = str(error).strip()
    cause = text.splitlines()[0] if text else type(error).__name__
    outage = StoreUnavailable(f"the database connection failed: {cause}")
    outage.__cause__ = error
    return outage


def _typed_call(call: Callable[[], T]) -> T:
    """A call off the writer thread (a reader's, or a short job's inline), with an outage typed as on it."""
    try:
        return call()
    except Exception as exc:
        typed = _as_outage(exc)
        if typed is exc:
            raise
        raise typed from exc


def _take(claim: list[None] | None) -> bool:
    """Pop ``claim``'s one item: True for the first caller, False after."""
    try:
        assert claim is not None
        claim.pop()
    except IndexError:
        return False
    return True


def _settle_waiter(waiter: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if waiter.done():  # cancelled while the job ran: its result goes unseen
        return
    if error is None:
        waiter.set_result(result)
    elif isinstance(error, StopIteration):  # an asyncio future refuses it; PEP 479's way out
        waiter.set_exception(RuntimeError(f"store job raised StopIteration: {error!r}"))
    else:
        waiter.set_exception(error)


class StoreWorker(Generic[S]):
    """Runs store functions on one writer thread (``run``) or on reader threads (``read``)."""

    def __init__(
        self,
        store: S,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        readers: int = DEFAULT_READERS,
        group_max: int = DEFAULT_GROUP_MAX,
        name: str = "atrepo-store",
        writers: int = 1,
        inline: bool = False,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if writers < 1:
            raise ValueError("writers must be at least 1")
        self.store = store
        #: Whether ``run_short`` may run a job on its caller's thread (see there).
        self.inline = inline
        self.max_pending = max_pending
        self.group_max = group_max
        #: Group commits run, and the jobs they held together (``/metrics`` shows both).
        self.groups = 0
        self.grouped_jobs = 0
        # Unbounded: ``_pending`` bounds the jobs, and the stop sentinel always fits.
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._waiting = 0  # run() callers not yet resumed with their outcome
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._loop, name=f"{name}-writer" + (f"-{i}" if writers > 1 else ""), daemon=True
            )
            for i in range(writers)
        ]
        for thread in self._threads:
            thread.start()
        self._readers = concurrent.futures.ThreadPoolExecutor(readers, thread_name_prefix=f"{name}-reader")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Write jobs queued or running."""
        return self._pending

    async def run(self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(store, *args, **kwargs)`` on the writer thread; return its result or raise its exception.

        Raises ``LimitExceeded`` (``STORE_MAX_PENDING``) when ``max_pending``
        jobs are already waiting, and ``RuntimeError`` once the worker is closed.
        """
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        job = _Job(fn, args, kwargs, waiter=waiter, claim=[None])
        self._enqueue(job)
        self._waiting += 1
        try:
            return await waiter
        except asyncio.CancelledError:
            _take(job.claim)  # not started yet: the writer will skip it
            raise
        finally:
            self._waiting -= 1

    async def run_short(self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run` for a short job (one small commit): on the caller's thread when the writer is idle.

        Why: handing a job to the writer thread and its outcome back costs two
        thread wake-ups and a GIL hand-over each way, about 0.15 ms on a small
        VM: as much as the statements of a one-record commit. When nothing is
        queued, running or still waiting to hear back, nothing gains from the
        hand-over, so with ``inline=True`` the job runs right here, blocking
        the event loop for its length (its ``COMMIT`` and fsync included): the
        single writer is idle, so no write waits behind it. Otherwise, under
        load, it takes the queue like :meth:`run`, and keeps group commit and
        the overlap of request handling with commits. For jobs of bounded,
        short length only; ``inline`` suits a store whose commits are local
        (SQLite), not one that waits on a network round trip per statement.
        """
        if not self.inline or self._waiting or self._pending or self._closed:
            return await self.run(fn, *args, **kwargs)
        with self._lock:  # counted, so a job submitted meanwhile from another thread queues behind it
            self._pending += 1
        try:
            return _typed_call(functools.partial(fn, self.store, *args, **kwargs))
        finally:
            with self._lock:
                self._pending -= 1

    def submit(
        self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """``run`` for synchronous callers on other threads: a future of the result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._enqueue(_Job(fn, args, kwargs, future=future))
        return future

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store worker is closed")
            if self._pending >= self.max_pending:
                raise LimitExceeded(
                    "STORE_MAX_PENDING",
                    self._pending + 1,
                    self.max_pending,
                    "store writer queue is full; retry later",
                )
            self._pending += 1
            self._queue.put_nowait(job)

    async def read(self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(store, *args, **kwargs)`` on a reader thread (its own connection)."""
        if self._closed:
            raise RuntimeError("the store worker is closed")
        call = functools.partial(fn, self.store, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._readers, _typed_call, call)

    def _loop(self) -> None:
        group = getattr(self.store, "group_commit", None) if self.group_max > 1 else None
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            # Writes that queued up while the last one ran share one transaction (one fsync).
            while group is not None and len(jobs) < self.group_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
            try:
                if len(jobs) == 1 or group is None:
                    outcomes = [self._run_alone(one) for one in jobs]
                else:
                    self.groups += 1
                    self.grouped_jobs += len(jobs)
                    outcomes = self._run_group(group, jobs)
            except BaseException:  # pragma: no cover - a bug of ours; keep the writer alive
                log.exception("store worker: job bookkeeping failed")
                outcomes = []
            # Not pending any more before anyone hears back: a caller that awaited its
            # write and then reads ``pending`` sees its own job gone.
            with self._lock:
                self._pending -= len(jobs)
            for job, error, result in outcomes:
                if error is _CANCELLED:
                    continue
                try:
                    job.settle(error, result)
                except BaseException:  # pragma: no cover - a callback failed; keep the writer alive
                    log.exception("store worker: settling a job failed")

    def _run_alone(self, job: _Job) -> _Outcome:
        if not job.start():
            return job, _CANCELLED, None
        try:
            return job, None, job.fn(self.store, *job.args, **job.kwargs)
        except BaseException as exc:
            return job, exc, None

    def _run_group(self, group: _Group, jobs: list[_Job]) -> list[_Outcome]:
        """Run ``jobs`` in one group commit; return each outcome once the group's fate is known.

        A job that raises fails alone (its savepoint is rolled back). If the
        group's transaction is lost (an I/O error inside a job, or a failed
        ``COMMIT``), the jobs that had succeeded get that error too: their
        writes were never stored. When an earlier job's error ended the
        transaction, the jobs after it are run again in a new group.
        """
        outcomes: list[_Outcome] = []
        pending = jobs
        started: set[int] = set()  # marked running just before it runs: until then it can be cancelled
        while pending:
            done: list[_Outcome] = []
            rest: list[_Job] = []
            position = 0  # pending[position:] have not run
            try:
                with group():
                    for job in pending:
                        position += 1
                        if id(job) not in started:
                            if not job.start():
                                continue
                            started.add(id(job))
                        try:
                            done.append((job, None, job.fn(self.store, *job.args, **job.kwargs)))
                        except BaseException as exc:
                            done.append((job, exc, None))
                        if getattr(self.store, "group_aborted", False):
                            rest = pending[position:]
                            break
            except BaseException as lost:  # the transaction is lost: no job's writes were stored
                done = [(job, error or lost, None) for job, error, _ in done]
                if not rest:  # lost before or at COMMIT: the jobs not run yet fail with it too
                    done += [
                        (job, lost, None) for job in pending[position:] if id(job) in started or job.start()
                    ]
            outcomes += done
            pending = rest
        return outcomes

    def _refuse_new_jobs(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:  # after every job already queued: one stop per writer
                    self._queue.put_nowait(None)

    def _join(self) -> None:
        for thread in self._threads:
            if threading.current_thread() is not thread:
                thread.join()
        self._readers.shutdown(wait=True)

    def shutdown(self) -> None:
        """Refuse new jobs, finish every queued one, stop the threads (blocking)."""
        self._refuse_new_jobs()
        self._join()

    async def close(self) -> None:
        """``shutdown`` without blocking the event loop; the store stays open for its owner to close.

        New jobs are refused from the moment of the call.
        """
        self._refuse_new_jobs()
        await asyncio.get_running_loop().run_in_executor(None, self._join)
