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

``await worker.read(fn, *args)`` runs ``fn(store, *args)`` on a small pool of
reader threads (each with its own connection in the SQLite store), for reads
that should not wait behind writes nor block the event loop.

A caller that is cancelled while its job waits in the queue takes the job with
it; a job already running finishes (and commits), its result unseen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar

from atrepo.core.errors import LimitExceeded

__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_READERS", "StoreWorker"]

log = logging.getLogger("atrepo.store")

S = TypeVar("S")
T = TypeVar("T")
P = ParamSpec("P")

#: Most write jobs waiting for the writer thread; one more is refused at once.
#: At ~1 ms a commit this is about a second of backlog.
DEFAULT_MAX_PENDING: Final = 1024
#: Reader threads for ``StoreWorker.read``.
DEFAULT_READERS: Final = 4


@dataclass(slots=True)
class _Job:
    future: concurrent.futures.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class StoreWorker(Generic[S]):
    """Runs store functions on one writer thread (``run``) or on reader threads (``read``)."""

    def __init__(
        self,
        store: S,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        readers: int = DEFAULT_READERS,
        name: str = "atrepo-store",
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.store = store
        self.max_pending = max_pending
        # One slot beyond the limit for the stop sentinel, so that close never waits on a full queue.
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_pending + 1)
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}-writer", daemon=True)
        self._thread.start()
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
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def submit(
        self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """``run`` for synchronous callers on other threads: a future of the result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
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
            self._queue.put_nowait(_Job(future, fn, args, kwargs))
        return future

    async def read(self, fn: Callable[Concatenate[S, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(store, *args, **kwargs)`` on a reader thread (its own connection)."""
        if self._closed:
            raise RuntimeError("the store worker is closed")
        call = functools.partial(fn, self.store, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._readers, call)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        result = job.fn(self.store, *job.args, **job.kwargs)
                    except BaseException as exc:
                        job.future.set_exception(exc)
                    else:
                        job.future.set_result(result)
            except BaseException:  # pragma: no cover - a callback failed; keep the writer alive
                log.exception("store worker: job bookkeeping failed")
            finally:
                with self._lock:
                    self._pending -= 1

    def _refuse_new_jobs(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put_nowait(None)  # after every job already queued

    def _join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()
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
