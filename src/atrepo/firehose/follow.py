"""Following an event log that other processes append to: notifications first, a slow poll as the net.

When several processes share one PostgreSQL event log (host workers, a
relay's fan-out processes), each one's :class:`~atrepo.firehose.Fanout` must
hear of events the others commit. The writers ``pg_notify`` the new head seq
inside their transactions (heard at commit, never for a rollback); a
:class:`LogFollower` listens on that channel from a thread and passes each
announced head to ``notify`` (``Fanout.notify``, which reads the new rows
once for all subscribers). Notifications are not replayed to a connection
that was not listening, so after every (re)connect the follower reads the
head once, and it also reads it every ``poll_s`` seconds in case one was
lost while its connection was being reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

__all__ = ["Listener", "LogFollower"]

log = logging.getLogger("atrepo.firehose.follow")

#: How long one wait for a notification blocks its thread: also how long a stop can take (short:
#: every host process on PostgreSQL stops one, and an idle wake-up costs next to nothing).
WAIT_S: Final = 0.1
#: Pause before a new listening connection after one failed.
RETRY_S: Final = 1.0
#: The safety-net read of the head, in seconds (notifications do the real work).
POLL_S: Final = 5.0


class Listener(Protocol):
    """A connection listening on one channel (``PostgresFile.listener``)."""

    def wait(self, timeout_s: float) -> list[str]: ...

    def close(self) -> None: ...


class LogFollower:
    """Calls ``notify(head_seq)`` for every head another process announces, until :meth:`stop`.

    ``listen`` opens a listener (blocking: it runs in a thread); ``head``
    reads the log's head seq. A payload that is not an integer still counts
    as "something was committed" and makes the follower read the head.
    """

    def __init__(
        self,
        listen: Callable[[], Listener],
        head: Callable[[], Awaitable[int]],
        notify: Callable[[int], None],
        *,
        name: str = "event log",
        poll_s: float = POLL_S,
        wait_s: float = WAIT_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._listen = listen
        self._head = head
        self._notify = notify
        self.name = name
        self.poll_s = poll_s
        self.wait_s = wait_s
        self.retry_s = retry_s
        #: Notifications heard (one may announce several commits).
        self.notifications = 0
        #: A listening connection is open (False while one is being reopened).
        self.listening = False
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start listening and polling (on the running loop)."""
        if self._tasks:
            raise RuntimeError("the follower is already started")
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"atrepo-follow-{self.name}"),
            asyncio.create_task(self._poll(), name=f"atrepo-follow-poll-{self.name}"),
        ]

    async def stop(self) -> None:
        """Stop both loops; the listening thread notices within ``wait_s``."""
        self._stopping.set()
        for task in self._tasks:
            if task.get_name().startswith("atrepo-follow-poll-"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                listener = await asyncio.to_thread(self._listen)
            except Exception as exc:
                log.warning("%s: cannot listen for new events (%s); retrying", self.name, exc)
                await self._pause(self.retry_s)
                continue
            try:
                # What was committed before LISTEN took effect was announced to nobody here.
                self._notify(await self._head())
                self.listening = True
                while not self._stopping.is_set():
                    payloads = await asyncio.to_thread(listener.wait, self.wait_s)
                    if not payloads:
                        continue
                    self.notifications += len(payloads)
                    seqs = [int(p) for p in payloads if p.isdigit()]
                    self._notify(max(seqs) if len(seqs) == len(payloads) else await self._head())
            except Exception as exc:
                log.warning("%s: listening connection lost (%s); reconnecting", self.name, exc)
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    listener.close()
            await self._pause(self.retry_s)

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self.poll_s)
            if self._stopping.is_set():
                return
            try:
                self._notify(await self._head())
            except Exception as exc:  # the database is down: the listener reports it too
                log.debug("%s: head poll failed: %s", self.name, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
