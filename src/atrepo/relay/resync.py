"""Fetching an account's whole repository again, when the stream alone cannot carry it forward.

Three things send an account here: a commit that does not follow the
relay's state (a gap, a ``prevData`` mismatch, a fork: the account is
``desynchronized``), a raised account limit (its ``throttled`` accounts are
backfilled), and a ``#sync`` that moved a repository to data no op described
(only the collections index needs refreshing: nothing is emitted).

The repository comes from the account's host with ``getRepo`` into a
temporary file (bounded by ``max_bytes``), is verified whole in a thread
(every block hashed, the commit's signature with the DID document's key,
the tree walked: ``core.verify``), and its commit is handed to
:meth:`Ingest.finish_resync`, which restates it with a ``#sync`` and then
applies the events that arrived meanwhile. A failed attempt is retried with
backoff, a few times; the account stays ``desynchronized`` (visible on the
status page) until one succeeds or a later event starts it again.

Resyncs run a few at a time (``concurrency``), so a host that falls out of
step for many accounts at once is not hit by all of them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Final
from urllib.parse import quote

import aiohttp

from atrepo.core.errors import AtrepoError, InvalidSignature
from atrepo.core.keys import PublicKey
from atrepo.core.verify import RepoSummary, verify_repo_car
from atrepo.xrpc.metrics import Metrics

from .ingest import Ingest, Upstream
from .verifier import CommitCheck

__all__ = ["Resyncer"]

log = logging.getLogger("atrepo.relay.resync")

#: Largest repository CAR a resync downloads.
DEFAULT_MAX_REPO_BYTES: Final = 2 * 1024**3
#: Attempts for one account before it waits for its next event.
MAX_ATTEMPTS: Final = 4
#: First retry delay (doubles each attempt).
RETRY_S: Final = 1.0
CHUNK: Final = 1 << 16


class ResyncFailed(Exception):
    """One attempt failed; the message says where."""


class Resyncer:
    """A queue of accounts to fetch again and the tasks that fetch them."""

    def __init__(
        self,
        ingest: Ingest,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        workdir: Path,
        concurrency: int = 4,
        max_bytes: int = DEFAULT_MAX_REPO_BYTES,
        timeout_s: float = 300.0,
    ) -> None:
        self.ingest = ingest
        self.http = http
        self.workdir = workdir
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._queue: deque[tuple[str, Upstream, bool, int]] = deque()
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._concurrency = concurrency
        self._timers: set[asyncio.Task[None]] = set()
        self.active: set[str] = set()
        self.done = 0
        self.failed = 0
        self._m = metrics.counter(
            "atrepo_relay_resyncs_total", "Repositories fetched again with getRepo, by outcome", ("outcome",)
        )
        self._m_queue = metrics.gauge("atrepo_relay_resync_queue", "Accounts waiting to be fetched again")
        ingest.resyncs = self

    def start(self) -> None:
        workdir = self.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in workdir.glob("resync-*.car"):
            with contextlib.suppress(OSError):
                stale.unlink()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work(), name=f"relay-resync-{i}") for i in range(self._concurrency)
        ]

    async def close(self) -> None:
        for task in [*self._tasks, *self._timers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._timers, return_exceptions=True)
        self._tasks.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def schedule(self, did: str, host: Upstream, *, emit: bool = True, attempt: int = 0) -> None:
        """Fetch ``did``'s repository from ``host`` (once, however often this is called meanwhile)."""
        if did in self._queued:
            return
        self._queued.add(did)
        self._queue.append((did, host, emit, attempt))
        self._m_queue.set(len(self._queue))
        self._wake.set()

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            did, host, emit, attempt = self._queue.popleft()
            self._m_queue.set(len(self._queue))
            self.active.add(did)
            try:
                await self._one(did, host, emit, attempt)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one account stop the worker
                log.exception("resync of %s failed unexpectedly", did)
            finally:
                self.active.discard(did)
                self._queued.discard(did)

    async def _one(self, did: str, host: Upstream, emit: bool, attempt: int) -> None:
        try:
            check, collections = await self._fetch(did, host)
        except (ResyncFailed, AtrepoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.failed += 1
            self._m.inc(1, ("failed",))
            if emit:
                self.ingest.fault("resync-failed", host, did, f"attempt {attempt + 1}: {exc}")
                await self.ingest.finish_resync(host, did, None, None)
                if attempt + 1 < MAX_ATTEMPTS:
                    self._retry_later(did, host, attempt + 1)
            else:
                log.warning("collections refresh of %s failed: %s", did, exc)
            return
        self.done += 1
        self._m.inc(1, ("ok" if emit else "collections",))
        if emit:
            await self.ingest.finish_resync(host, did, check, collections)
        else:
            self.ingest.replace_collections(did, collections)
        log.info("resynced %s from %s at rev %s (%d collections)", did, host.key, check.rev, len(collections))

    def _retry_later(self, did: str, host: Upstream, attempt: int) -> None:
        async def later() -> None:
            await asyncio.sleep(RETRY_S * 2 ** (attempt - 1))
            account = await self.ingest.account(did)
            if account is None or account.status != "desynchronized" or self.ingest.resyncing(did):
                return
            self.ingest.begin_resync(host, account, "retrying the fetch", announce=False)

        task = asyncio.get_running_loop().create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _fetch(self, did: str, host: Upstream) -> tuple[CommitCheck, list[str]]:
        key = await self.ingest._key(host, did)
        if key is None:
            raise ResyncFailed("no usable signing key for the DID")
        fd, name = tempfile.mkstemp(prefix="resync-", suffix=".car", dir=self.workdir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                await self._download(did, host, out)
            try:
                return await asyncio.to_thread(_verify_file, path, did, key)
            except InvalidSignature:
                fresh = await self.ingest._key(host, did, force=True)
                if fresh is None or fresh == key:
                    raise
                return await asyncio.to_thread(_verify_file, path, did, fresh)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _download(self, did: str, host: Upstream, out: object) -> None:
        url = f"{host.url}/xrpc/com.atproto.sync.getRepo?did={quote(did)}"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=10)
        async with self.http.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                text = (await resp.content.read(300)).decode("utf-8", "replace")
                raise ResyncFailed(f"getRepo answered HTTP {resp.status}: {text}")
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise ResyncFailed(f"repository is larger than {self.max_bytes} bytes")
                out.write(chunk)  # type: ignore[attr-defined]


def _verify_file(path: Path, did: str, key: PublicKey) -> tuple[CommitCheck, list[str]]:
    summary = RepoSummary()
    collections: set[str] = set()
    last = ""
    with path.open("rb") as stream:
        for record_key, _cid in verify_repo_car(stream, key=key, did=did, summary=summary):
            collection = record_key.split("/", 1)[0]
            if collection != last:  # keys come sorted: one set insert per collection run
                collections.add(collection)
                last = collection
    commit = summary.commit
    if commit is None:
        raise ResyncFailed("the CAR held no commit")
    return CommitCheck(commit.rev, None, None, commit.data, commit.cid, commit.raw), sorted(collections)
