"""The relay's per-event policy, and the batches that make its effects durable and visible.

Every frame an upstream sends comes here (``Ingest.handle``), on the lane the
subscriber gave its DID, so events of one repository arrive in order and
different repositories interleave. What happens to it (sync.md §7-8, and the
issue's stricter rules):

1. **Authority.** The event's DID must be hosted where it came from: an
   account the relay knows on that host passes; an unknown DID, or one the
   relay knows on *another* host, is resolved (re-resolved, cache purged, in
   the second case: an account that migrated) and passes only if its DID
   document's PDS endpoint is this host. Otherwise it is dropped as an
   ``authority`` fault. A new account over the host's account limit is kept
   as ``throttled``: listed, its events not relayed, backfilled when the
   limit is raised.
2. **``#commit``**: dropped unless the account is active; a rev not after
   the stored one is a duplicate (dropped; the same rev with another commit is
   a fork and desynchronizes). Then every check of ``core.validate`` with the
   DID document's key, re-resolving once when the signature fails. A commit
   that is valid but does not follow the stored ``(rev, data)`` (``since`` or
   ``prevData`` differ, ``prevData`` missing) **desynchronizes** the account:
   it is not relayed; the account is marked ``desynchronized`` (with an
   ``#account`` event saying so), its repo is fetched, verified and restated
   with a ``#sync`` (:mod:`.resync`), and events that arrive meanwhile wait
   and are applied after. ``--lenient`` instead logs and relays it, as the
   reference relay does today.
3. **``#sync``**: active check, duplicate check, verified like a commit's
   signature; the account's state becomes its commit.
4. **``#identity``**: the DID's cached document is dropped and fetched again;
   the event is relayed with its handle only if the document claims it.
5. **``#account``**: the upstream status is stored and the relay's
   combined view is relayed (active only if the relay's own status allows
   it and the upstream says active).

**Batches** (in an ingest process, ``--role ingest``, the same batches go
to the sequencer's queue instead: ``RelayStore.queue_batch``, no seq
allocated here). An accepted event's account row, its re-encoded frame and its
collections are *staged*; one writer job at a time commits everything staged
in one transaction (``RelayStore.apply_batch``) together with each host's
cursor, then hands the new rows to the fan-out. While one batch commits the
next one gathers, so under load a batch holds hundreds of events and one
fsync. A host's cursor in a batch is its subscriber's contiguous *accepted*
seq read when the batch is cut: every event counted in it was staged into
this batch or an earlier one, so after a crash the relay resumes exactly
after what it made durable. Staging is bounded: handlers wait while
``MAX_STAGED`` events wait for the writer, which stops the lanes, which
stops the subscriber reading, which pushes back on the upstream.

Account rows are cached here (the ingest is their only writer, so the cache
is the truth; misses read the store). With ingest processes per partition
an account that migrates to a host of another partition is written by that
partition's process from then on; this process's copy is then stale, which
matters only if the account's events come from its old host again: they are
checked against the stale row, a mismatch desynchronizes the account and
its repo is fetched again (the safe side).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol

from atrepo.core.car import write_car
from atrepo.core.errors import AtrepoError, InvalidCommitEvent
from atrepo.core.events import (
    AccountEvent,
    CommitEvent,
    Frame,
    IdentityEvent,
    SyncEvent,
    commit_seq_slot,
    encode_frame_with_seq,
    reseq_frame,
)
from atrepo.core.keys import PublicKey
from atrepo.core.syntax import format_datetime
from atrepo.firehose.subscriber import Received
from atrepo.identity.document import DIDDocument
from atrepo.identity.resolver import DIDResolver
from atrepo.store.base import EventRow
from atrepo.store.relay import PendingEvent, RelayAccount, RelayStore
from atrepo.store.worker import StoreWorker
from atrepo.xrpc.metrics import Metrics

from .hostnames import hostname_of_endpoint
from .verifier import CommitCheck, Verifier, check_commit_signed

if TYPE_CHECKING:
    from atrepo.firehose.fanout import Fanout

__all__ = ["Fault", "Ingest", "Upstream"]

log = logging.getLogger("atrepo.relay")

#: Events staged and not yet handed to the writer before handlers wait (backpressure).
MAX_STAGED: Final = 4096
#: Account rows kept in memory.
ACCOUNT_CACHE: Final = 200_000
#: Events of one account kept while its repo is being fetched again; beyond this they are
#: dropped (the fetch restates the account anyway).
RESYNC_BUFFER: Final = 1000
#: Recent faults kept for the status page.
RECENT_FAULTS: Final = 200
#: Checks whose failure ``--lenient`` logs instead of dropping the commit (the reference relay's
#: rollout mode); every other check (CAR, commit, signature, sizes, revs) still drops it.
LENIENT_RULES: Final = frozenset({"forward", "inversion"})
#: Log lines per fault kind and host per minute (the rest are counted: metrics, status page).
FAULT_LOGS_PER_MINUTE: Final = 20
#: Least time between two forced re-resolutions of one DID.
REFRESH_SPACING_S: Final = 30.0


class Upstream(Protocol):
    """What the ingest needs of one upstream host (:class:`atrepo.relay.hosts.HostLink`)."""

    id: int
    key: str
    url: str
    account_limit: int
    account_count: int
    last_event_ms: int | None

    @property
    def cursor(self) -> int | None: ...

    async def admit(self) -> None:
        """Wait until the host's rate limits allow one more event."""
        ...


class Resyncs(Protocol):
    """Where desynchronized accounts are sent to be fetched again (:class:`atrepo.relay.resync.Resyncer`)."""

    def schedule(self, did: str, host: Upstream, *, emit: bool = True) -> None: ...


@dataclass(frozen=True, slots=True)
class Fault:
    """Something an upstream did wrong, or that put an account out of step: for the status page."""

    time_ms: int
    kind: str
    host: str
    did: str | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time_ms,
            "kind": self.kind,
            "host": self.host,
            "did": self.did,
            "reason": self.reason,
        }


@dataclass
class _Batch:
    accounts: dict[str, RelayAccount] = field(default_factory=dict)
    events: list[PendingEvent] = field(default_factory=list)
    collections: set[tuple[str, str]] = field(default_factory=set)
    replace_collections: dict[str, list[str]] = field(default_factory=dict)
    hosts: dict[int, Upstream] = field(default_factory=dict)
    #: Settled once this batch is committed (created by ``Ingest.durable``).
    committed: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.accounts or self.events or self.collections or self.replace_collections or self.hosts
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _now_text() -> str:
    return format_datetime(datetime.now(UTC))


def _write_batch(
    store: RelayStore,
    accounts: list[RelayAccount],
    events: list[PendingEvent],
    collections: list[tuple[str, str]],
    replace: dict[str, list[str]],
    cursors: dict[int, tuple[int, int | None]],
) -> list[EventRow]:
    return store.apply_batch(accounts, events, collections, cursors, replace_collections=replace)


def _queue_batch(
    store: RelayStore,
    accounts: list[RelayAccount],
    events: list[PendingEvent],
    collections: list[tuple[str, str]],
    replace: dict[str, list[str]],
    cursors: dict[int, tuple[int, int | None]],
) -> int:
    return store.queue_batch(accounts, events, collections, cursors, replace_collections=replace)


def _encoder(frame: Frame) -> Callable[[int], bytes]:
    """``encode(seq)``: the frame re-encoded with the relay's seq (``encode_frame_with_seq``)."""
    return partial(encode_frame_with_seq, frame)  # type: ignore[arg-type]


class Ingest:
    """Applies the relay's policy to upstream frames and commits the results in batches."""

    def __init__(
        self,
        store: RelayStore,
        worker: StoreWorker[RelayStore],
        fanout: Fanout[RelayStore],
        resolver: DIDResolver,
        metrics: Metrics,
        *,
        verifier: Verifier | None = None,
        lenient: bool = False,
        queue: bool = False,
    ) -> None:
        self.store = store
        #: An ingest process (``--role ingest``): batches go to the sequencer's queue
        #: (``RelayStore.queue_batch``), not to the log, and nothing is offered to ``fanout``.
        self.queue = queue
        self.worker = worker
        self.fanout = fanout
        self.resolver = resolver
        self.verifier = verifier if verifier is not None else Verifier(0)
        self.lenient = lenient
        self.hosts: dict[int, Upstream] = {}
        self.resyncs: Resyncs | None = None
        self._accounts: OrderedDict[str, RelayAccount] = OrderedDict()
        self._batch = _Batch()
        self._staged_event = asyncio.Event()
        self._room_event = asyncio.Event()
        self._room_event.set()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        #: Accounts being fetched again -> their events that arrived meanwhile (and the host of each).
        self._resyncing: dict[str, deque[tuple[Upstream, Received]]] = {}
        self._refreshed: dict[str, float] = {}
        self._fault_log: dict[tuple[str, str], tuple[int, int, int]] = {}
        #: (did, seq) -> (key, verification started early in a worker): see ``prefetch``.
        self._prefetched: dict[tuple[str, int | None], tuple[PublicKey, asyncio.Future[CommitCheck]]] = {}
        self.faults: deque[Fault] = deque(maxlen=RECENT_FAULTS)
        self.fault_counts: Counter[str] = Counter()
        self.batches = 0
        #: ``#commit`` verifications found already started by ``prefetch``.
        self.prefetch_hits = 0
        self.failed_batches = 0
        #: Called after a batch failed to commit (the host manager reconnects the upstreams).
        self.on_batch_failure: Callable[[], object] | None = None
        self.flushed_events = 0
        self._m_events = metrics.counter(
            "atrepo_relay_upstream_events_total", "Frames received from upstream hosts, by type", ("type",)
        )
        self._m_emitted = metrics.counter(
            "atrepo_relay_emitted_events_total", "Events the relay sequenced into its own firehose", ("type",)
        )
        self._m_dropped = metrics.counter(
            "atrepo_relay_dropped_events_total", "Upstream events not relayed, by reason", ("reason",)
        )
        self._m_faults = metrics.counter(
            "atrepo_relay_faults_total",
            "Verification failures and other upstream faults, by kind (the failed check for invalid events)",
            ("kind",),
        )
        self._m_batch = metrics.histogram(
            "atrepo_relay_batch_events",
            "Events per ingest transaction",
            buckets=(1, 4, 16, 64, 256, 1024, 4096),
        )
        self._m_staged = metrics.gauge("atrepo_relay_staged_events", "Events staged for the next transaction")

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="relay-flush")

    async def close(self) -> None:
        """Commit what is staged, then stop the writer loop."""
        self._closing = True
        self._staged_event.set()
        if self._flusher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout=15.0)
            except TimeoutError:
                self._flusher.cancel()
            self._flusher = None

    # --- accounts ------------------------------------------------------------------------

    async def account(self, did: str) -> RelayAccount | None:
        """The account row (staged changes included)."""
        cached = self._accounts.get(did)
        if cached is not None:
            self._accounts.move_to_end(did)
            return cached
        row = await self.worker.read(RelayStore.get_account, did)
        if row is not None:
            # a staged change made while the read ran wins
            cached = self._accounts.get(did)
            if cached is not None:
                return cached
            self._remember(row)
        return row

    def _remember(self, row: RelayAccount) -> None:
        accounts = self._accounts
        accounts[row.did] = row
        accounts.move_to_end(row.did)
        if len(accounts) > ACCOUNT_CACHE:
            for did in list(accounts)[: len(accounts) - ACCOUNT_CACHE]:
                if did not in self._batch.accounts:
                    del accounts[did]

    def stage(
        self,
        account: RelayAccount | None,
        event: PendingEvent | None = None,
        collections: Iterable[tuple[str, str]] = (),
        host: Upstream | None = None,
    ) -> None:
        """Stage an account row, an event to emit and collections for the next batch."""
        batch = self._batch
        if account is not None:
            self._remember(account)
            batch.accounts[account.did] = account
        if event is not None:
            batch.events.append(event)
        batch.collections.update(collections)
        if host is not None:
            batch.hosts[host.id] = host
        self._staged_event.set()
        if len(batch.events) >= MAX_STAGED:
            self._room_event.clear()

    async def durable(self) -> None:
        """Wait until everything staged so far is committed (an admin action answers after that)."""
        batch = self._batch
        if batch.committed is None:
            batch.committed = asyncio.get_running_loop().create_future()
        self._staged_event.set()
        await asyncio.shield(batch.committed)

    def replace_collections(self, did: str, names: list[str]) -> None:
        self._batch.replace_collections[did] = names
        self._staged_event.set()

    def touch(self, host: Upstream) -> None:
        """Make the next batch carry ``host``'s cursor (events it dropped advance it too)."""
        self._batch.hosts[host.id] = host
        self._staged_event.set()

    def emit(self, did: str, frame: Frame) -> PendingEvent:
        """A pending event that re-encodes ``frame`` with the relay's seq."""
        kind = getattr(frame, "type_name", "#unknown")
        return PendingEvent(did, kind, _now_ms(), _encoder(frame))

    # --- faults --------------------------------------------------------------------------

    def fault(self, kind: str, host: Upstream | str, did: str | None, reason: str) -> None:
        name = host if isinstance(host, str) else host.key
        self.faults.append(Fault(_now_ms(), kind, name, did, reason))
        self.fault_counts[kind] += 1
        self._m_faults.inc(1, (kind,))
        # at most FAULT_LOGS_PER_MINUTE lines per kind and host: a host sending garbage must not
        # flood the log; what is not logged is counted, and said when the minute turns
        minute = int(time.monotonic() // 60)
        key = (kind, name)
        seen_minute, logged, quiet = self._fault_log.get(key, (minute, 0, 0))
        if seen_minute != minute:
            if quiet:
                log.warning("relay fault %s from %s: %d more last minute, unlogged", kind, name, quiet)
            seen_minute, logged, quiet = minute, 0, 0
        if logged < FAULT_LOGS_PER_MINUTE:
            log.warning("relay fault %s from %s%s: %s", kind, name, f" for {did}" if did else "", reason)
            logged += 1
        else:
            quiet += 1
        if len(self._fault_log) > 10_000:
            self._fault_log.clear()
        self._fault_log[key] = (seen_minute, logged, quiet)

    def drop(self, reason: str) -> None:
        self._m_dropped.inc(1, (reason,))

    # --- the policy ----------------------------------------------------------------------

    def prefetch(self, received: Received) -> None:
        """Start verifying a ``#commit`` in a worker process as it arrives, with the cached key.

        Only with worker processes and a key already in the cache; the handler
        uses the result if its key is still the one it resolves, else verifies
        again. Results are dropped when the handler finishes the event.
        """
        frame = received.frame
        if not self.verifier.workers or not isinstance(frame, CommitEvent) or received.did is None:
            return
        doc = self.resolver.cache.peek(received.did)
        if doc is None or doc.signing_key is None:
            return
        future = self.verifier.start_commit(frame, received.raw, doc.signing_key)
        if future is not None:
            self._prefetched[(received.did, received.seq)] = (doc.signing_key, future)

    async def handle(self, host: Upstream, received: Received) -> None:
        """Phase one of an upstream event: decide it and stage its effects, in the DID's order."""
        await host.admit()
        host.last_event_ms = _now_ms()
        frame = received.frame
        self._m_events.inc(1, (getattr(frame, "type_name", "unknown"),))
        did = received.did
        if did is None:
            self.touch(host)
            return
        waiting = self._resyncing.get(did)
        if waiting is not None:
            if len(waiting) < RESYNC_BUFFER:
                waiting.append((host, received))
            else:
                self.drop("resync-buffer-full")
            self.touch(host)
            return
        try:
            await self.process(host, received)
        finally:
            early = self._prefetched.pop((did, received.seq), None) if self._prefetched else None
            if early is not None and not early[1].done():
                early[1].cancel()
        self.touch(host)
        if not self._room_event.is_set():
            await self._room_event.wait()

    async def process(self, host: Upstream, received: Received) -> None:
        """Apply the policy to one event (also used to replay events held during a resync)."""
        frame = received.frame
        did = received.did
        assert did is not None
        account = await self._authority(host, did, notice=isinstance(frame, (IdentityEvent, AccountEvent)))
        if account is None:
            return
        if isinstance(frame, CommitEvent):
            await self._commit(host, account, frame, received.raw)
        elif isinstance(frame, SyncEvent):
            await self._sync(host, account, frame, received.raw)
        elif isinstance(frame, IdentityEvent):
            await self._identity(host, account, frame)
        elif isinstance(frame, AccountEvent):
            self._account(host, account, frame)
        else:
            self.drop("unknown-type")

    async def _resolve(self, host: Upstream | str, did: str, *, force: bool = False) -> DIDDocument | None:
        try:
            return await self.resolver.resolve(did, force_refresh=force)
        except AtrepoError as exc:
            self.fault("identity", host, did, f"cannot resolve the DID: {exc}")
            return None

    async def _authority(self, host: Upstream, did: str, *, notice: bool = False) -> RelayAccount | None:
        """The account if ``host`` hosts ``did`` (creating or moving it as its DID document says), else None.

        ``notice``: the event is an ``#identity``/``#account``. A host an account
        migrated away from still sends those (its deactivation, say): they are
        dropped without counting a fault. Forced re-resolutions of one DID are
        spaced by ``REFRESH_SPACING_S``, so a host sending events for DIDs it
        does not host cannot make the relay hammer the DID directory.
        """
        account = await self.account(did)
        if account is not None and account.host_id == host.id:
            return account
        force = account is not None and self._may_refresh(did)
        doc = await self._resolve(host, did, force=force)
        if doc is None:
            self.drop("identity")
            return None
        endpoint = doc.pds_endpoint
        if endpoint is None or hostname_of_endpoint(endpoint) != host.key:
            if notice and account is not None:
                self.drop("former-host")
                return None
            self.fault(
                "authority", host, did, f"the DID document names {endpoint!r} as its host, not {host.key}"
            )
            self.drop("authority")
            return None
        now = _now_ms()
        if account is None:
            status = "active"
            if host.account_count >= host.account_limit:
                status = "throttled"
                self.fault(
                    "account-limit",
                    host,
                    did,
                    f"host is at its account limit ({host.account_limit}): account kept as throttled",
                )
            host.account_count += 1
            account = RelayAccount(did, host.id, status, "active", None, None, None, now, now)
        else:
            old = self.hosts.get(account.host_id)
            if old is not None:
                old.account_count = max(0, old.account_count - 1)
            host.account_count += 1
            log.info("account %s moved to %s (its DID document names it)", did, host.key)
            account = dataclasses.replace(account, host_id=host.id, updated_ms=now)
        self.stage(account, host=host)
        return account

    def _may_refresh(self, did: str) -> bool:
        now = time.monotonic()
        last = self._refreshed.get(did)
        if last is not None and now - last < REFRESH_SPACING_S:
            return False
        if len(self._refreshed) > 100_000:
            self._refreshed.clear()
        self._refreshed[did] = now
        return True

    def _relayable(self, account: RelayAccount) -> str | None:
        """Why the account's commits are not relayed now (None: they are)."""
        if account.status == "throttled":
            return "throttled"
        if not account.active:
            return "inactive"
        return None

    async def _key(self, host: Upstream, did: str, *, force: bool = False) -> PublicKey | None:
        doc = await self._resolve(host, did, force=force)
        if doc is None:
            return None
        if doc.signing_key is None:
            self.fault("identity", host, did, "the DID document has no #atproto signing key")
            return None
        return doc.signing_key

    async def _verified(
        self, host: Upstream, did: str, event: CommitEvent | SyncEvent, raw: bytes
    ) -> CommitCheck | None:
        key = await self._key(host, did)
        if key is None:
            self.drop("identity")
            return None
        run = self.verifier.commit if isinstance(event, CommitEvent) else self.verifier.sync
        early = self._prefetched.pop((did, event.seq), None) if self._prefetched else None
        try:
            if early is not None and early[0] == key:
                self.prefetch_hits += 1
                return await early[1]
            return await run(event, raw, key)  # type: ignore[arg-type]
        except InvalidCommitEvent as exc:
            error = exc
        if error.rule == "signature":  # sync.md §7 step 5: re-resolve once, then reject
            fresh = await self._key(host, did, force=True)
            if fresh is not None and fresh != key:
                try:
                    return await run(event, raw, fresh)  # type: ignore[arg-type]
                except InvalidCommitEvent as exc:
                    error = exc
        if self.lenient and error.rule in LENIENT_RULES and isinstance(event, CommitEvent):
            # the reference relay's rollout mode: a commit whose ops do not invert to prevData
            # is logged and relayed, as long as its signature holds
            try:
                check = check_commit_signed(event, key)
            except InvalidCommitEvent as exc:
                error = exc
            else:
                self.fault(f"invalid-{error.rule}", host, did, f"{error} (lenient: relayed)")
                return check
        self.fault(f"invalid-{error.rule}", host, did, str(error))
        self.drop("invalid")
        return None

    async def _commit(self, host: Upstream, account: RelayAccount, event: CommitEvent, raw: bytes) -> None:
        did = account.did
        why = self._relayable(account)
        if why is not None:
            self.drop(why)
            return
        if account.status == "desynchronized":  # e.g. after a restart: fetch it again, hold this
            self.begin_resync(host, account, "desynchronized at start", announce=False)
            self._resyncing[did].append((host, Received(event.seq, did, event, raw)))
            return
        if account.rev is not None and event.rev <= account.rev:
            if event.rev == account.rev and account.commit is not None and event.commit != account.commit:
                self.begin_resync(
                    host,
                    account,
                    f"fork: rev {event.rev} names commit {event.commit}, the relay has {account.commit}",
                )
            else:
                self.drop("duplicate")
            return
        check = await self._verified(host, did, event, raw)
        if check is None:
            return
        if (
            account.rev is not None
            and account.data is not None
            and (check.prev_data != account.data or check.since != account.rev)
        ):
            reason = (
                f"commit {check.rev} has since={check.since} prevData={check.prev_data}; the relay has rev "
                f"{account.rev} data {account.data}"
            )
            if not self.lenient:
                self.begin_resync(host, account, reason)
                return
            self.fault("out-of-step", host, did, reason + " (lenient: relayed)")
        now = _now_ms()
        # ``dataclasses.replace`` written out: it costs several times a plain constructor call
        updated = RelayAccount(
            did,
            account.host_id,
            account.status,
            account.upstream_status,
            check.rev,
            check.commit,
            check.data,
            account.created_ms,
            now,
        )
        collections = {(did, op.path.partition("/")[0]) for op in event.ops if op.action != "delete"}
        # passed on as it came with the relay's seq when the upstream's frame is our encoding of it
        slot = commit_seq_slot(raw, event)
        encode = partial(encode_frame_with_seq, event) if slot is None else partial(reseq_frame, raw, slot)
        self.stage(updated, PendingEvent(did, "#commit", now, encode), collections, host)
        self._m_emitted.inc(1, ("#commit",))

    async def _sync(self, host: Upstream, account: RelayAccount, event: SyncEvent, raw: bytes) -> None:
        did = account.did
        why = self._relayable(account)
        if why is not None:
            self.drop(why)
            return
        if account.rev is not None and event.rev <= account.rev:
            self.drop("duplicate")
            return
        check = await self._verified(host, did, event, raw)
        if check is None:
            return
        status = "active" if account.status == "desynchronized" else account.status
        updated = dataclasses.replace(
            account, status=status, rev=check.rev, commit=check.commit, data=check.data, updated_ms=_now_ms()
        )
        self.stage(updated, self.emit(did, event), (), host)
        self._m_emitted.inc(1, ("#sync",))
        if account.data != check.data and self.resyncs is not None:
            # the records changed in ways no op described: refresh the collections index
            self.resyncs.schedule(did, host, emit=False)

    async def _identity(self, host: Upstream, account: RelayAccount, event: IdentityEvent) -> None:
        did = account.did
        self.resolver.purge(did)
        doc = await self._resolve(host, did, force=True)
        handle = event.handle
        if handle is not None and (doc is None or doc.handle is None or doc.handle != handle.lower()):
            handle = None  # relayed only when the DID document claims it
        self.stage(None, self.emit(did, dataclasses.replace(event, handle=handle)), (), host)
        self._m_emitted.inc(1, ("#identity",))

    def _account(self, host: Upstream, account: RelayAccount, event: AccountEvent) -> None:
        upstream = "active" if event.active else (event.status or "inactive")
        updated = dataclasses.replace(account, upstream_status=upstream, updated_ms=_now_ms())
        self.stage(updated, self.emit(account.did, self.account_event(updated, event.time)), (), host)
        self._m_emitted.inc(1, ("#account",))

    @staticmethod
    def account_event(account: RelayAccount, when: str | None = None) -> AccountEvent:
        """The relay's combined view of an account as an ``#account`` event (seq set at emission)."""
        status = account.public_status
        if status == "inactive":
            status = None
        if account.active and account.status == "active":
            status = None
        return AccountEvent(0, account.did, when or _now_text(), account.active, status)

    # --- resync --------------------------------------------------------------------------

    def begin_resync(
        self, host: Upstream, account: RelayAccount, reason: str, *, announce: bool = True
    ) -> None:
        """Mark the account desynchronized, hold its next events, and ask for its repo."""
        did = account.did
        if did in self._resyncing:
            return
        self._resyncing[did] = deque()
        if announce or account.status != "desynchronized":
            self.fault("desynchronized", host, did, reason)
            marked = dataclasses.replace(account, status="desynchronized", updated_ms=_now_ms())
            self.stage(marked, self.emit(did, self.account_event(marked)), (), host)
        if self.resyncs is not None:
            self.resyncs.schedule(did, host)

    def begin_backfill(self, host: Upstream, account: RelayAccount) -> None:
        """Fetch a throttled account's repo (its host's limit was raised); it turns active when restated."""
        did = account.did
        if did in self._resyncing:
            return
        self._resyncing[did] = deque()
        if self.resyncs is not None:
            self.resyncs.schedule(did, host)

    def resyncing(self, did: str) -> bool:
        return did in self._resyncing

    async def finish_resync(
        self, host: Upstream, did: str, restated: CommitCheck | None, collections: list[str] | None
    ) -> None:
        """Apply a resync's outcome, then the events held meanwhile, in order.

        ``restated``: the verified commit of the fetched repo (None when the
        fetch failed: the account stays desynchronized and what was held is
        dropped; a later attempt or event starts again). ``collections``:
        the repo's collections, for the index.
        """
        account = await self.account(did)
        if account is not None and restated is not None:
            if collections is not None:
                self.replace_collections(did, collections)
            newer = (
                account.rev is None
                or restated.rev > account.rev
                or account.status in ("desynchronized", "throttled")
            )
            if newer:
                was = account.status
                status = "active" if was in ("desynchronized", "throttled") else was
                updated = dataclasses.replace(
                    account,
                    status=status,
                    rev=restated.rev,
                    commit=restated.commit,
                    data=restated.data,
                    updated_ms=_now_ms(),
                )
                blocks = write_car([restated.commit], [(restated.commit, restated.commit_block)])
                sync = SyncEvent(0, did, blocks, restated.rev, _now_text())
                self.stage(updated, self.emit(did, sync), (), host)
                self._m_emitted.inc(1, ("#sync",))
                if was != status:
                    self.stage(None, self.emit(did, self.account_event(updated)), (), host)
        held = self._resyncing.get(did)
        if held is None:
            return
        if restated is None:
            if held:
                self.drop("resync-failed")
            del self._resyncing[did]
            return
        while held:
            link, received = held.popleft()
            await self.process(link, received)
        del self._resyncing[did]

    # --- batches -------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._staged_event.wait()
            self._staged_event.clear()
            if not self._batch:
                done = self._batch.committed
                if done is not None and not done.done():
                    done.set_result(None)  # nothing staged: durable already
                if self._closing:
                    return
                continue
            batch = self._batch
            try:
                await self.flush()
            except Exception as exc:
                self._failed_batch(exc)
                if batch.committed is not None and not batch.committed.done():
                    batch.committed.set_exception(exc)
            else:
                if batch.committed is not None and not batch.committed.done():
                    batch.committed.set_result(None)
            if self._closing and not self._batch:
                return

    def _failed_batch(self, exc: Exception) -> None:
        """A batch did not commit: nothing of it is stored, so the upstreams must send it again.

        The cached account rows may hold its changes, so the cache is dropped;
        ``on_batch_failure`` (the host manager) reconnects every upstream from
        its stored cursor, which predates everything the lost batch held.
        """
        self.failed_batches += 1
        log.error(
            "an ingest batch failed to commit; reconnecting upstreams from their stored cursors: %s", exc
        )
        self._accounts.clear()
        self._resyncing.clear()
        self._room_event.set()
        if self.on_batch_failure is not None:
            self.on_batch_failure()

    async def flush(self) -> None:
        """Commit what is staged now (one transaction) and hand the new events to the fan-out."""
        batch = self._batch
        self._batch = _Batch()
        # every event a cursor counts was staged into this batch or an earlier one (module docstring)
        cursors: dict[int, tuple[int, int | None]] = {}
        for host_id, host in batch.hosts.items():
            cursor = host.cursor
            if cursor is not None:
                cursors[host_id] = (cursor, host.last_event_ms)
        self._m_staged.set(len(self._batch.events))
        args = (
            list(batch.accounts.values()),
            batch.events,
            sorted(batch.collections),
            batch.replace_collections,
            cursors,
        )
        if self.queue:
            count = await self.worker.run(_queue_batch, *args)
        else:
            rows = await self.worker.run(_write_batch, *args)
            count = len(rows)
            if rows:
                self.fanout.offer(rows)
        self.batches += 1
        self.flushed_events += count
        self._m_batch.observe(count)
        if len(self._batch.events) < MAX_STAGED:
            self._room_event.set()
