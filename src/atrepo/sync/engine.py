"""The consumer engine of ``atrepo sync``: follow an upstream, backfill and resync repositories into a mirror.

What it keeps true (sync.md §7-9): the mirror (:class:`~atrepo.store.mirror.MirrorStore`)
holds, for every tracked repository, exactly the records of a verified state of
it, and the stored cursor never passes an event whose effect is not stored.
The pieces, and why each is where it is:

* **The live stream** is a :class:`~atrepo.firehose.subscriber.Subscriber`:
  per-DID order across lanes, a contiguous cursor, backpressure. Each event of
  a tracked account is verified by a :class:`FrameVerifier`, whose
  :class:`~atrepo.core.tracker.RepoTracker` holds the chain state (rev, data,
  commit) of every active repository, loaded from the mirror's rows at start.
* **A repository that is not active** (pending, backfilling, desynchronized,
  resyncing, error) is *busy*: its live events are not applied but buffered
  (bounded) and replayed on top of the fetched state once the fetch lands, so
  that only events whose ``prevData`` chains from the restated data are
  applied (the tracker decides; anything else desynchronizes it again).
* **A fetch** (backfill or resync) resolves the DID to its own host, downloads
  ``getRepo`` to a temporary file, verifies it whole with the DID's key
  (``core.verify``) in a thread, then streams it again into
  ``MirrorStore.replace_repo`` on the store's writer thread: one transaction,
  which emits deletes for records that vanished.
* **Errors back off** per repository (doubling) and per host (a host that
  fails or answers 429 is left alone until its ``Retry-After`` /
  ``RateLimit-Reset``), so one bad host does not slow the others.
* **The cursor** goes into every ``apply_commit`` and is also written every
  second (events of accounts we do not track move it too). Writing the
  subscriber's contiguous cursor is safe even while events sit in a busy
  repository's buffer: that repository is stored in a non-active state, so a
  restart fetches it again, which covers what the buffer held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from atrepo.core import cbor
from atrepo.core.commit import SignedCommit
from atrepo.core.errors import AtrepoError, InvalidSignature
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent
from atrepo.core.keys import PublicKey
from atrepo.core.tracker import Outcome, RepoTracker, Verdict
from atrepo.core.validate import RepoState, VerifiedCommit
from atrepo.core.verify import RepoSummary, iter_repo_records, verify_repo_car
from atrepo.firehose.subscriber import CursorAction, FrameVerifier, Received, Subscriber, SubscriberHooks
from atrepo.identity.resolver import DIDResolver
from atrepo.store.mirror import (
    MIRROR_DB_FILENAME,
    MirrorEvent,
    MirrorStore,
    RecordOp,
    ReplaceResult,
    Synchronous,
    open_mirror,
)
from atrepo.store.worker import StoreWorker

__all__ = ["BUSY_STATES", "CollectionFilter", "SyncConfig", "SyncEngine"]

log = logging.getLogger("atrepo.sync")

#: Repository states whose live events are buffered, not applied.
BUSY_STATES: Final = frozenset({"pending", "backfilling", "desynchronized", "resyncing", "error"})
#: Most live events buffered for one busy repository; past it the buffer is dropped and the
#: repository is fetched again after the current fetch (its state is then newer than the events).
MAX_BUFFER: Final = 2000
#: Largest repository CAR a fetch downloads.
MAX_REPO_BYTES: Final = 2 * 1024**3
#: First retry delay of a repository whose fetch failed (doubles to ``MAX_RETRY_S``).
RETRY_S: Final = 1.0
MAX_RETRY_S: Final = 300.0
#: How long a host that failed is left alone at first (doubles to ``MAX_RETRY_S``).
HOST_BACKOFF_S: Final = 1.0
CHUNK: Final = 1 << 16
#: Lock stripes serialising the live path and a fetch's replay per DID.
_STRIPES: Final = 256
#: getRepo error names that say what the account's status is.
_STATUS_ERRORS: Final = {
    "RepoDeactivated": "deactivated",
    "RepoTakendown": "takendown",
    "RepoSuspended": "suspended",
    "RepoNotFound": "deleted",
}


class FetchFailed(Exception):
    """One fetch of a repository failed; ``retry_at`` (monotonic) is set when a host asked us to wait."""

    def __init__(self, message: str, *, host: str | None = None, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.retry_at = retry_at


class CollectionFilter:
    """Which collections are mirrored: exact NSIDs and ``prefix.*`` patterns; empty means all."""

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(sorted({p[:-1] for p in patterns if p.endswith("*")}))
        self.everything = not patterns
        #: Collections of prefixes learned from events (for seeding and the status page).
        self.learned: set[str] = set()

    def __call__(self, collection: str) -> bool:
        if self.everything or collection in self.exact:
            return True
        if self.prefixes and collection.startswith(self.prefixes):
            self.learned.add(collection)
            return True
        return False

    def seeds(self) -> list[str]:
        """Collections to ask ``listReposByCollection`` about: the exact ones and those learned."""
        return sorted(self.exact | self.learned)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """What ``atrepo sync`` follows and where it writes (docs/sync.md)."""

    upstream: str
    plc_url: str
    data_dir: Path
    dids: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    all_accounts: bool = False
    host: str = "127.0.0.1"
    port: int = 2480
    fetch_concurrency: int = 4
    lanes: int = 16
    synchronous: Synchronous = "FULL"
    #: A ``postgresql://`` URL for the mirror; None keeps it in ``data_dir`` (SQLite).
    database: str | None = None
    #: Seconds the output event log (Jetstream, record stream) keeps events; 0 keeps them forever.
    event_retention_s: float = 72 * 3600.0
    #: Seconds between two prunes of the event log.
    prune_interval_s: float = 60.0
    #: (I, N): this process follows only the DIDs whose CRC-32 is I modulo N, one of N workers sharing
    #: a PostgreSQL mirror, each with its own cursor; None follows every DID.
    partition: tuple[int, int] | None = None
    #: Seconds the start waits for the first connection before fetching (events from then on are seen).
    connect_wait_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


def http_base(url: str) -> str:
    """The http(s) base URL of an upstream given as http(s), ws(s) or a bare host."""
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.split("/xrpc/", 1)[0].rstrip("/")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def retry_after(headers: Any, now_wall: float | None = None) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` (seconds or HTTP date) or ``RateLimit-Reset``."""
    now_wall = time.time() if now_wall is None else now_wall
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            return max(0.0, parsedate_to_datetime(value).timestamp() - now_wall)
    reset = headers.get("RateLimit-Reset")
    if reset:
        with contextlib.suppress(ValueError):
            number = float(reset.strip())
            # an epoch (the reference PDS) or, if small, seconds from now (the IETF draft)
            return max(0.0, number - now_wall) if number > 1e9 else number
    return None


class _Hooks(SubscriberHooks):
    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine

    def connected(self, url: str, cursor: int | None) -> None:
        self.engine.connected.set()
        log.info("sync: connected to %s (cursor %s)", url, cursor)

    def disconnected(self, reason: str, failures: int) -> None:
        log.info("sync: disconnected (%s, %d failures)", reason, failures)

    def error_frame(self, name: str, message: str | None) -> CursorAction:
        """``FutureCursor``: our stored cursor is past the upstream's head, so its seq went back (a
        restore, a new relay at the same address). Replay its whole window from 0, as the relay does
        with its hosts: events already applied are recognised by rev and dropped, a chain broken by
        what the upstream lost sends that repository to a resync. Anything else: reconnect."""
        if name == "FutureCursor":
            engine = self.engine
            log.warning(
                "sync: %s answered FutureCursor at cursor %s (%s): its seq went back; replaying its window",
                engine.source,
                engine.cursor,
                message or "",
            )
            engine.counts["future_cursor"] += 1
            engine.head_seq = None  # the old seq space's head would make the lag meaningless
            return CursorAction.FROM_ZERO
        return CursorAction.RECONNECT


@dataclass(slots=True)
class _Host:
    """Backoff of one PDS: when it may be asked again, and how many failures in a row."""

    retry_at: float = 0.0
    failures: int = 0


class SyncEngine:
    """Follows one upstream into one :class:`MirrorStore` (see the module doc).

    ``start()`` opens everything and returns once the stream is connected (or
    ``connect_wait_s`` passed); ``stop()`` stops reading, lets in-flight events
    finish, writes the cursor and closes the store.
    """

    def __init__(self, config: SyncConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.source = http_base(config.upstream)
        self.wanted = CollectionFilter(config.collections)
        self.partition = config.partition
        #: The key of this consumer's cursor in the mirror (one per partition: each worker's own).
        self.cursor_source = (
            self.source
            if config.partition is None
            else f"{self.source}#{config.partition[0]}/{config.partition[1]}"
        )
        self.explicit = frozenset(d for d in config.dids if self.mine(d))
        self.store = open_mirror(
            config.database or config.data_dir / MIRROR_DB_FILENAME,
            synchronous=config.synchronous,
            partition=config.partition,
        )
        self.worker: StoreWorker[MirrorStore] = StoreWorker(self.store, name="atrepo-sync")
        self.workdir = config.data_dir / "tmp"
        self._owns_session = session is None
        self.http: aiohttp.ClientSession | None = session
        self.resolver: DIDResolver | None = None
        self.states: dict[str, RepoState] = {}
        self.verifier: FrameVerifier | None = None
        self.subscriber: Subscriber | None = None
        self.connected = asyncio.Event()
        #: DIDs we track, with their mirror state (kept in memory; the store has the same).
        self.tracked: dict[str, str] = {}
        self.buffers: dict[str, deque[Received]] = {}
        self.overflowed: set[str] = set()
        #: The first seq buffered per busy DID: the cursor written never passes it (see ``_cursor``).
        self.floors: dict[str, int] = {}
        self.hosts: dict[str, _Host] = {}
        self.attempts: dict[str, int] = {}
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._timers: set[asyncio.Task[None]] = set()
        self._written_cursor: int | None = None
        self.fetching: set[str] = set()
        #: Counters for the status page, /metrics and the progress line.
        self.counts: dict[str, int] = {
            "events": 0,
            "commits_applied": 0,
            "records_written": 0,
            "backfills": 0,
            "resyncs": 0,
            "fetch_failures": 0,
            "desyncs": 0,
            "invalid": 0,
            "buffered": 0,
            "replayed": 0,
            "events_pruned": 0,
            "future_cursor": 0,
        }
        self.head_seq: int | None = None
        #: The ``time`` field of the newest event handled (parsed only when the lag is asked for).
        self.last_event_time: str | None = None
        #: Called with the store's newest event time after each write that appended events (from the
        #: event loop): outputs that serve the event log (the Jetstream endpoint's ``notify``) wake on it.
        self.listeners: list[Callable[[int], None]] = []
        self.started_at = time.time()
        self.stopped = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the mirror's state, connect, re-queue unfinished repositories and seed new ones."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in self.workdir.glob("repo-*.car"):
            with contextlib.suppress(OSError):
                stale.unlink()
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self.resolver = DIDResolver(plc_url=self.config.plc_url, session=self.http)
        self.verifier = FrameVerifier(self.resolver, RepoTracker(self.states))
        requeue = await self.worker.read(_load_repos, self.states, self.tracked, self.mine)
        cursor = await self.worker.read(MirrorStore.get_cursor, self.cursor_source)
        if cursor is None and self.states:
            # fetched before, but no event of this upstream was ever stored (an idle upstream, or
            # another one): what happened while we were away is unknown, so fetch them all again
            log.info(
                "sync: no stored cursor for %s: fetching %d repositories again", self.source, len(self.states)
            )
            for did in self.states:
                self.tracked[did] = "desynchronized"
                requeue.append(did)
        self._written_cursor = cursor
        self.subscriber = Subscriber(
            self.source,
            self._handle,
            cursor=cursor,
            hooks=_Hooks(self),
            lanes=self.config.lanes,
            session=self.http,
        )
        self._tasks.append(asyncio.create_task(self.subscriber.run(), name="sync-subscriber"))
        self._tasks.append(asyncio.create_task(self._cursor_loop(), name="sync-cursor"))
        if self.config.event_retention_s > 0:
            self._tasks.append(asyncio.create_task(self._prune_loop(), name="sync-prune"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), self.config.connect_wait_s)
        for did in requeue:
            self._mark_busy(did)
            self._enqueue(did)
        for did in self.explicit:
            if did not in self.tracked:
                await self._track(did)
        for i in range(self.config.fetch_concurrency):
            self._tasks.append(asyncio.create_task(self._fetch_loop(), name=f"sync-fetch-{i}"))
        if self.config.all_accounts or not (self.wanted.everything or self.explicit):
            self._tasks.append(asyncio.create_task(self._seed(), name="sync-seed"))

    async def stop(self) -> None:
        """Stop reading, finish in-flight events, write the cursor, close the store."""
        if self.stopped:
            return
        self.stopped = True
        if self.subscriber is not None:
            self.subscriber.stop()
        subscriber_task = self._tasks[0] if self._tasks else None
        if subscriber_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(subscriber_task), 10)
        for task in [*self._tasks, *self._timers]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._timers, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self._flush_cursor()
        await self.worker.close()
        self.store.close()
        if self.resolver is not None:
            await self.resolver.close()
        if self._owns_session and self.http is not None:
            await self.http.close()

    # --- what is tracked -----------------------------------------------------------------

    def _lock(self, did: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(did.encode()) % _STRIPES]

    def _mark_busy(self, did: str) -> None:
        self.buffers.setdefault(did, deque())

    def is_busy(self, did: str) -> bool:
        return did in self.buffers

    async def _track(self, did: str, first: Received | None = None) -> None:
        """Start following ``did``: stored as pending, its events buffered, its fetch queued."""
        self.tracked[did] = "pending"
        self._mark_busy(did)
        if first is not None:
            self._buffer(did, first)
        await self.worker.run(_set_repo, did, state="pending")
        self._enqueue(did)

    def mine(self, did: str) -> bool:
        """Whether ``did`` is this worker's (always, unpartitioned): CRC-32 of the DID modulo N."""
        if self.partition is None:
            return True
        index, count = self.partition
        return zlib.crc32(did.encode()) % count == index

    def _wants_did(self, item: Received) -> bool:
        """Whether an event of an untracked DID makes us track it (``--all``, or a wanted collection)."""
        if self.config.all_accounts:
            return isinstance(item.frame, CommitEvent | SyncEvent | IdentityEvent | AccountEvent)
        if self.wanted.everything or self.explicit:
            return False  # --did with --collection: those accounts, only those collections
        frame = item.frame
        if isinstance(frame, CommitEvent):
            return any(self.wanted(op.path.split("/", 1)[0]) for op in frame.ops)
        return False

    async def _seed(self) -> None:
        """Track every account of the upstream (``--all``) or of the wanted collections, paging."""
        assert self.http is not None
        try:
            if self.config.all_accounts:
                async for did in self._pages("com.atproto.sync.listRepos", {}):
                    if did not in self.tracked and self.mine(did):
                        await self._track(did)
            else:
                for collection in self.wanted.seeds():
                    params = {"collection": collection}
                    async for did in self._pages("com.atproto.sync.listReposByCollection", params):
                        if did not in self.tracked and self.mine(did):
                            await self._track(did)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.warning("sync: seeding from %s stopped: %s", self.source, exc)

    async def _pages(self, nsid: str, params: dict[str, str]) -> Any:
        assert self.http is not None
        cursor: str | None = None
        while True:
            query = dict(params, limit="1000")
            if cursor:
                query["cursor"] = cursor
            timeout = aiohttp.ClientTimeout(total=60)
            async with self.http.get(f"{self.source}/xrpc/{nsid}", params=query, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"{nsid} answered HTTP {resp.status}")
                body = await resp.json()
            for repo in body.get("repos", []):
                did = repo.get("did") if isinstance(repo, dict) else None
                if isinstance(did, str):
                    yield did
            cursor = body.get("cursor")
            if not cursor or not body.get("repos"):
                return

    # --- the live path -------------------------------------------------------------------

    def _buffer(self, did: str, item: Received) -> None:
        buffer = self.buffers.setdefault(did, deque())
        if item.seq is not None:
            self.floors.setdefault(did, item.seq)
        if did in self.overflowed:
            return
        if len(buffer) >= MAX_BUFFER:
            buffer.clear()
            self.overflowed.add(did)
            return
        buffer.append(item)
        self.counts["buffered"] += 1

    async def _handle(self, item: Received) -> None:
        """One event of the stream, in per-DID order."""
        self.counts["events"] += 1
        if item.seq is not None and (self.head_seq is None or item.seq > self.head_seq):
            self.head_seq = item.seq
            self.last_event_time = getattr(item.frame, "time", None) or self.last_event_time
        did = item.did
        if did is None or (self.partition is not None and not self.mine(did)):
            return
        async with self._lock(did):
            if did not in self.tracked:
                if not self._wants_did(item):
                    return
                await self._track(did, item)
                return
            if self.is_busy(did):
                self._buffer(did, item)
                return
            await self._process(did, item)

    def _emitted(self, events: Sequence[MirrorEvent]) -> None:
        if events and self.listeners:
            head = max(event.time_us for event in events)
            for listener in self.listeners:
                try:
                    listener(head)
                except Exception:  # an output's problem must not stop the mirror
                    log.exception("sync: an event listener failed")

    def _cursor(self) -> tuple[str, int] | None:
        """The cursor to store: the subscriber's, held below the first event any buffer still holds.

        A buffer lives in memory only, and a fetch stores its repository as
        ``active`` before the buffer is replayed on top: were the cursor to pass
        a buffered event, a crash in between would lose it. Held back, a
        restart reads such events again (the tracker skips those already
        applied as duplicates).
        """
        cursor = self.subscriber.cursor if self.subscriber is not None else None
        if cursor is None:
            return None
        if self.floors:
            cursor = min(cursor, min(self.floors.values()) - 1)
        return (self.cursor_source, cursor)

    async def _process(self, did: str, item: Received) -> None:
        """Verify and apply one event of a repository that is not busy (the caller holds its lock).

        The tracker moves the repository's state when it accepts the event,
        before the store has it; should the store fail (the database gone),
        the state is put back, so that the event's replay (the subscriber
        reconnects from its cursor) is applied again, not dropped as a
        duplicate of what was never stored.
        """
        before = self.states.get(did)
        try:
            await self._verify_and_apply(did, item)
        except BaseException:
            if before is None:
                self.states.pop(did, None)
            else:
                self.states[did] = before
            raise

    async def _verify_and_apply(self, did: str, item: Received) -> None:
        assert self.verifier is not None
        frame = item.frame
        outcome = await self.verifier.check(frame)
        verdict = outcome.verdict
        if verdict is Verdict.INVALID:
            self.counts["invalid"] += 1
            log.warning("sync: invalid event seq %s of %s: %s", item.seq, did, outcome.error)
            # the chain position is lost; the next valid event comes as FIRST and resyncs
            return
        if verdict is Verdict.DUPLICATE:
            return
        if verdict is Verdict.FIRST or outcome.resync:
            await self._desync(did, str(outcome.error or verdict.value))
            return
        if verdict in (Verdict.NEXT, Verdict.RESTATED):
            await self._apply(did, outcome)
            return
        if verdict is Verdict.ACCOUNT and isinstance(frame, AccountEvent):
            await self._account(did, frame)
            return
        if verdict is Verdict.IDENTITY and isinstance(frame, IdentityEvent):
            event = await self.worker.run(
                MirrorStore.add_identity_event, did, frame.handle, frame.seq, frame.time
            )
            self._emitted([event])

    async def _apply(self, did: str, outcome: Outcome) -> None:
        verified = outcome.verified
        assert verified is not None and outcome.state is not None
        ops: list[RecordOp] = []
        if isinstance(verified, VerifiedCommit):
            ops = commit_ops(verified, self.wanted)
        state = outcome.state
        assert state.commit is not None
        frame = outcome.frame
        time_text = frame.time if isinstance(frame, CommitEvent | SyncEvent) else None
        events = await self.worker.run(
            MirrorStore.apply_commit,
            did,
            rev=state.rev,
            data=state.data,
            commit=state.commit,
            ops=ops,
            cursor=self._cursor(),
            time=time_text,
        )
        self._emitted(events)
        self.counts["commits_applied"] += 1
        self.counts["records_written"] += len(ops)

    async def _account(self, did: str, frame: AccountEvent) -> None:
        status = "active" if frame.active else (frame.status or "deactivated")
        if status == "deleted":
            self._emitted(await self.worker.run(MirrorStore.delete_repo, did, time=frame.time, seq=frame.seq))
            self.states.pop(did, None)
            return
        events = await self.worker.run(
            MirrorStore.set_account_status, did, status, time=frame.time, seq=frame.seq
        )
        self._emitted(events)
        if status == "active" and did not in self.states:
            await self._desync(did, "reactivated without a fetched state")

    async def _desync(self, did: str, why: str) -> None:
        """The repository's chain broke: buffer its events from now on and fetch it again."""
        self.counts["desyncs"] += 1
        log.info("sync: %s desynchronized: %s", did, why)
        self.tracked[did] = "desynchronized"
        self._mark_busy(did)
        self._enqueue(did)  # first: should the store write fail (the database gone), the fetch still comes
        await self.worker.run(_set_repo, did, state="desynchronized", error=why[:500])

    # --- fetching --------------------------------------------------------------------------

    def _enqueue(self, did: str) -> None:
        if did in self._queued:
            return
        self._queued.add(did)
        self._queue.append(did)
        self._wake.set()

    async def _fetch_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            did = self._queue.popleft()
            self._queued.discard(did)
            self.fetching.add(did)
            try:
                await self._fetch_one(did)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one repository stop a fetcher
                log.exception("sync: fetch of %s failed unexpectedly", did)
                self._retry_later(did, "unexpected failure", None)
            finally:
                self.fetching.discard(did)

    async def _fetch_one(self, did: str) -> None:
        """Fetch ``did`` once: resolve its host, wait out the host's backoff elsewhere, fetch, store."""
        assert self.resolver is not None
        previous = self.tracked.get(did, "pending")
        first = previous == "pending" or (did not in self.states and previous != "desynchronized")
        attempt = self.attempts.get(did, 0)
        host: str | None = None
        try:
            document = await self.resolver.resolve(did, force_refresh=attempt > 0)
            host = document.pds_endpoint
            key = document.signing_key
            if host is None or key is None:
                raise FetchFailed("the DID document names no PDS or no #atproto key")
            wait = self._host_wait(host)
            if wait > 0:  # the host is backing off: come back then, and keep this fetcher for others
                self._enqueue_later(did, wait)
                return
            state = "backfilling" if first else "resyncing"
            self.tracked[did] = state
            await self.worker.run(_set_repo, did, state=state)
            await self._download_and_store(did, host, key)
        except FetchFailed as exc:
            self._host_failed(exc.host, exc.retry_at)
            self._retry_later(did, str(exc), exc.host)
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the host did not answer well
            self._host_failed(host, None)
            self._retry_later(did, f"{type(exc).__name__}: {exc}", host)
            return
        except AtrepoError as exc:  # resolution or verification: the repository's problem
            self._retry_later(did, f"{type(exc).__name__}: {exc}", None)
            return
        self.attempts.pop(did, None)
        self.hosts.pop(host, None)  # it answered: its backoff is over
        self.counts["backfills" if first else "resyncs"] += 1

    def _host_wait(self, host: str) -> float:
        """Seconds until ``host`` may be asked again (0: now)."""
        backoff = self.hosts.get(host)
        return 0.0 if backoff is None else max(0.0, backoff.retry_at - time.monotonic())

    def _enqueue_later(self, did: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self._enqueue(did)

        task = asyncio.get_running_loop().create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _host_failed(self, host: str | None, retry_at: float | None) -> None:
        if host is None:
            return
        backoff = self.hosts.setdefault(host, _Host())
        backoff.failures += 1
        delay = min(MAX_RETRY_S, HOST_BACKOFF_S * 2 ** min(backoff.failures - 1, 20))
        backoff.retry_at = retry_at if retry_at is not None else time.monotonic() + delay

    def _retry_later(self, did: str, why: str, host: str | None) -> None:
        self.counts["fetch_failures"] += 1
        attempt = self.attempts.get(did, 0) + 1
        self.attempts[did] = attempt
        delay = min(MAX_RETRY_S, RETRY_S * 2 ** min(attempt - 1, 20))
        backoff = self.hosts.get(host) if host else None
        if backoff is not None:
            delay = max(delay, backoff.retry_at - time.monotonic())
        log.warning("sync: fetch of %s failed (attempt %d, retry in %.1f s): %s", did, attempt, delay, why)
        self.tracked[did] = "error"
        retry_at_ms = int((time.time() + delay) * 1000)

        async def later() -> None:
            await self.worker.run(_set_repo, did, state="error", error=why[:500], retry_at_ms=retry_at_ms)
            await asyncio.sleep(delay)
            self._enqueue(did)

        task = asyncio.get_running_loop().create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _download_and_store(self, did: str, host: str, key: PublicKey) -> None:
        """getRepo into a file, verify it whole, replace the mirror's copy, replay the buffer."""
        assert self.http is not None and self.resolver is not None
        fd, name = tempfile.mkstemp(prefix="repo-", suffix=".car", dir=self.workdir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                status = await self._download(did, host, out)
            if status is not None:
                await self._fetched_status(did, status)
                return
            try:
                commit = await asyncio.to_thread(_verify_file, path, did, key)
            except InvalidSignature:
                document = await self.resolver.resolve(did, force_refresh=True)
                fresh = document.signing_key
                if fresh is None or fresh == key:
                    raise
                commit = await asyncio.to_thread(_verify_file, path, did, fresh)
            result = await self.worker.run(_replace_from_file, did, path, commit, self.wanted, host)
            self._emitted(result.events)
            self.counts["records_written"] += result.created + result.updated + result.deleted
            log.info(
                "sync: fetched %s at rev %s from %s (+%d ~%d -%d =%d)",
                did,
                commit.rev,
                host,
                result.created,
                result.updated,
                result.deleted,
                result.unchanged,
            )
            await self._replay(did, RepoState(commit.rev, commit.data, commit.cid))
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _download(self, did: str, host: str, out: Any) -> str | None:
        """Write ``did``'s repository CAR to ``out``; an account status instead when the host names one."""
        assert self.http is not None
        url = f"{host}/xrpc/com.atproto.sync.getRepo?did={quote(did)}"
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with self.http.get(url, timeout=timeout) as resp:
            if resp.status == 429:
                wait = retry_after(resp.headers)
                retry_at = time.monotonic() + (wait if wait is not None else 60.0)
                raise FetchFailed(
                    f"getRepo from {host}: 429 (retry in {wait} s)", host=host, retry_at=retry_at
                )
            if resp.status != 200:
                text = (await resp.content.read(1000)).decode("utf-8", "replace")
                name = None
                with contextlib.suppress(ValueError):
                    body = json.loads(text)
                    name = body.get("error") if isinstance(body, dict) else None
                if resp.status == 400 and name in _STATUS_ERRORS:
                    return _STATUS_ERRORS[name]
                raise FetchFailed(f"getRepo from {host} answered HTTP {resp.status}: {text[:300]}", host=host)
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > MAX_REPO_BYTES:
                    raise FetchFailed(f"repository of {did} is larger than {MAX_REPO_BYTES} bytes")
                out.write(chunk)
        return None

    async def _fetched_status(self, did: str, status: str) -> None:
        """getRepo said the account is not active: hide (or remove) it and wait for its #account."""
        async with self._lock(did):
            self.buffers.pop(did, None)
            self.floors.pop(did, None)
            self.overflowed.discard(did)
            self.states.pop(did, None)
            # the account's row stays (status deleted/deactivated...) and counts as settled: a
            # later #account active (or a commit) fetches it again
            self._emitted(await self.worker.run(MirrorStore.set_account_status, did, status))
            await self.worker.run(_set_repo, did, state="active", error=None, retry_at_ms=None)
            self.tracked[did] = "active"

    async def _replay(self, did: str, state: RepoState) -> None:
        """Make the fetched state current and apply the buffered events that chain from it."""
        async with self._lock(did):
            self.states[did] = state
            self.tracked[did] = "active"
            buffer = self.buffers.pop(did, deque())
            overflowed = did in self.overflowed
            self.overflowed.discard(did)
            if overflowed:
                await self._desync(did, "too many events arrived during the fetch")
                return
            while buffer:
                item = buffer.popleft()
                self.counts["replayed"] += 1
                await self._process(did, item)
                if self.is_busy(did):  # desynchronized again: the rest waits for the next fetch
                    for rest in buffer:
                        self._buffer(did, rest)
                    return
            # only now may the cursor pass what the buffer held (a stop mid-replay keeps it back)
            self.floors.pop(did, None)

    # --- cursor and status -----------------------------------------------------------------

    async def _flush_cursor(self) -> None:
        cursor = self._cursor()
        if cursor is not None and cursor[1] != self._written_cursor:
            await self.worker.run(MirrorStore.set_cursor, cursor[0], cursor[1])
            self._written_cursor = cursor[1]

    async def _cursor_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._flush_cursor()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync: writing the cursor failed")

    async def _prune_loop(self) -> None:
        """Drop output events older than the retention, once at start and then every interval.

        The records themselves are never pruned; only the event log that the
        Jetstream endpoint and the record stream replay from. A client whose
        cursor is older than what is kept is told so (Jetstream's
        ``OutdatedCursor``/``CursorTooOld``) rather than silently skipped ahead.
        """
        while True:
            try:
                before = time.time_ns() // 1000 - int(self.config.event_retention_s * 1e6)
                pruned = await self.worker.run(MirrorStore.prune_events, before)
                if pruned:
                    log.info(
                        "sync: pruned %d output events older than %.0f h",
                        pruned,
                        self.config.event_retention_s / 3600,
                    )
                    self.counts["events_pruned"] += pruned
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync: pruning the event log failed")
            await asyncio.sleep(self.config.prune_interval_s)

    @property
    def cursor(self) -> int | None:
        return self.subscriber.cursor if self.subscriber is not None else None

    @property
    def lag(self) -> int | None:
        """Events seen on the stream that are not yet behind the cursor."""
        cursor = self.cursor
        if self.head_seq is None or cursor is None:
            return None
        return max(0, self.head_seq - cursor)

    @property
    def lag_seconds(self) -> float | None:
        """How far behind the upstream, in time: 0 when every event seen is behind the cursor, else the
        age of the newest event handled (its upstream ``time``); None before any event."""
        lag = self.lag
        if lag is None or self.last_event_time is None:
            return None
        if lag == 0:
            return 0.0
        try:
            stamp = datetime.fromisoformat(self.last_event_time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
        return round(max(0.0, time.time() - stamp), 1)

    async def wait_idle(self, timeout: float = 20.0) -> None:
        """Until nothing is queued, fetching, buffered or in flight (tests and the CLI's ``--once``)."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self._queue or self.fetching or self.buffers or self._timers
            in_flight = self.subscriber.in_flight if self.subscriber is not None else 0
            if not busy and not in_flight:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the sync engine did not become idle")
            await asyncio.sleep(0.05)


def commit_ops(verified: VerifiedCommit, wanted: Callable[[str], bool]) -> list[RecordOp]:
    """The record changes of a verified commit in wanted collections, with their decoded values."""
    ops: list[RecordOp] = []
    for op in verified.ops:
        collection, rkey = op.path.split("/", 1)
        if not wanted(collection):
            continue
        if op.action == "delete" or op.cid is None:
            ops.append(RecordOp("delete", collection, rkey, None, None))
            continue
        data = verified.blocks.require(op.cid, f"record {op.path}")
        ops.append(RecordOp(op.action, collection, rkey, op.cid, cbor.decode(data)))
    return ops


def _verify_file(path: Path, did: str, key: PublicKey) -> SignedCommit:
    """Verify a repository CAR whole with ``key`` (in a thread): its signed commit."""
    summary = RepoSummary()
    with path.open("rb") as stream:
        for _ in verify_repo_car(stream, key=key, did=did, summary=summary):
            pass
    if summary.commit is None:
        raise FetchFailed("the CAR held no commit")
    return summary.commit


def _replace_from_file(
    store: MirrorStore, did: str, path: Path, commit: SignedCommit, wanted: Callable[[str], bool], host: str
) -> ReplaceResult:
    """On the writer thread: the verified CAR's wanted records into ``replace_repo`` (one transaction)."""

    def records() -> Iterator[tuple[str, str, Any, Any]]:
        with path.open("rb") as stream:
            for key, cid, data in iter_repo_records(stream, did=did):
                collection, rkey = key.split("/", 1)
                if wanted(collection):
                    yield collection, rkey, cid, cbor.decode(data)

    result = store.replace_repo(did, rev=commit.rev, data=commit.data, commit=commit.cid, records=records())
    store.set_repo(did, host=host, error=None, retry_at_ms=None)
    return result


def _set_repo(store: MirrorStore, /, did: str, **fields: Any) -> None:
    """``MirrorStore.set_repo`` with the store positional, as ``StoreWorker.run`` passes it."""
    store.set_repo(did, **fields)


def _load_repos(
    store: MirrorStore, states: dict[str, RepoState], tracked: dict[str, str], mine: Callable[[str], bool]
) -> list[str]:
    """The chain state of every stored repository of ours; the DIDs whose fetch did not finish."""
    requeue: list[str] = []
    after: str | None = None
    while True:
        page = store.list_repos(after=after, limit=1000)
        if not page:
            return requeue
        for repo in page:
            if not mine(repo.did):
                continue
            tracked[repo.did] = repo.state
            if repo.state == "active":
                if repo.rev is not None and repo.data is not None:
                    states[repo.did] = RepoState(repo.rev, repo.data, repo.commit)
            else:
                requeue.append(repo.did)
        after = page[-1].did
