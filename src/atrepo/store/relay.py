"""The relay's store: upstream hosts, the accounts seen on them, a collection index and the event log.

A relay (sync.md §8) keeps no repositories: per account only where it is
hosted, its statuses and the last commit it passed on, and per upstream host
its cursor, status and limits. What it does keep must be exact and durable:
its own event log, whose seqs subscribers hold as cursors (sync.md §4), and
the upstream cursors, so that a restart resumes each host where it stopped.

**Two backends, one logic.** :class:`RelayStore` holds every query and the
batch write; :class:`SQLiteRelayStore` (the default: one file in the data
directory) and :class:`PostgresRelayStore` (``--database postgresql://...``,
schema ``atrepo_relay``) add only their dialect: the schema, the SQLite page
size, and on PostgreSQL ``COPY`` for rows in bulk and ``NOTIFY``.
:func:`open_relay_store` picks one from a path or a URL. The plumbing (one
writer, per-thread readers, versioned migrations that refuse a newer schema,
the lock that keeps a second relay off the same store) is
:mod:`atrepo.store.sqlitefile` / :mod:`atrepo.store.pgfile`.

**One transaction per batch.** The relay validates upstream events off the
writer thread and hands them over in batches: :meth:`RelayStore.apply_batch`
upserts the batch's accounts, adds (did, collection) pairs, allocates the
events' seqs, stores their frames and moves the hosts' cursors in a single
transaction, so one fsync covers a whole batch (the store batches itself; it
has no ``group_commit``) and a crash keeps either all of a batch or none of
it: a cursor never runs ahead of the events it covers, and a seq is never
handed out twice.

**Seqs** are allocated from a counter row updated in the same transaction,
never from ``MAX(seq)``: pruning the whole log or a crash mid-batch never
brings a seq back, and a rolled-back batch leaves no gap. The stored
``time_ms`` of an event is clamped to be non-decreasing along the log (the
frame keeps the time it was encoded with), so pruning by time always deletes
a prefix and the log stays a contiguous run of seqs.

**One sequencer on both backends.** Seqs come from that counter row, read and
written by the one writer: on SQLite the process holding the file's lock, on
PostgreSQL the one process holding the schema's session advisory lock (a
second ingesting relay is refused with :class:`StoreInUse`). Batches are
therefore committed one after another, in seq order, and a reader never sees
seq N+1 before N: no gap is ever visible to a subscriber, without the
``pg_current_xact_id`` commit-order bookkeeping that several concurrent
writers would need. (A relay's write load is one batch every few hundred
events; its scaling work is verification, which happens before the batch.)

**Split roles** (PostgreSQL only). Ingest processes (``--role ingest``,
``PostgresRelayStore(url, partition=(i, n))``) commit batches with
:meth:`RelayStore.queue_batch`: accounts, collections and cursors as
above, the events' frames into the ``pending`` queue *without* seqs (each
encoded once with :data:`SEQ_PLACEHOLDER`). The one sequencer
(``sequencer=True``) moves queued rows into the log in queue order with
:meth:`RelayStore.sequence_pending`, writing each seq into its frame in
place. Seqs are still allocated by one process, in the transaction that
stores the events, so the no-gap argument above holds unchanged; the ingest
transactions, which allocate nothing, commit side by side.

**Fan-out processes** (PostgreSQL only). Each committed batch that appended
events sends ``NOTIFY atrepo_relay_events`` with the new head seq as payload,
inside the batch's transaction, so it is delivered exactly when the events
become visible. ``atrepo relay --role fanout`` opens the store as a
*follower* (``PostgresRelayStore(url, follower=True)``: no writer lock,
writes refused), listens on that channel (:meth:`PostgresRelayStore.listen`)
and serves ``subscribeRepos`` from the shared log.

**Durability and threads.** SQLite: WAL, ``synchronous=FULL`` by default, a
lock file (``flock``) in the data directory. PostgreSQL: the server's
``synchronous_commit`` (a commit that returned is on disk). Both: one writer
connection guarded by a lock (normally used from the store worker's writer
thread), one read-only connection per thread.

**Schema** versioned (SQLite: ``PRAGMA user_version``; PostgreSQL: the
schema's ``schema_version`` table): ``_MIGRATIONS[n]`` (``_PG_MIGRATIONS[n]``)
takes a store from version ``n`` to ``n + 1``; a newer store is refused.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal

from atrepo.core import limits
from atrepo.core.cid import CID
from atrepo.core.events import reseq_frame

from .base import EventRow
from .dbfile import Conn, DatabaseFile, is_database_url
from .pgfile import PgConnection, PgListener, PostgresFile, _lock_key
from .sqlitefile import SQLiteFile

__all__ = [
    "HOST_STATUSES",
    "LOCAL_STATUSES",
    "PG_SCHEMA",
    "RELAY_DB_FILENAME",
    "RELAY_EVENTS_CHANNEL",
    "RELAY_PENDING_CHANNEL",
    "SEQ_PLACEHOLDER",
    "UNCHANGED",
    "EventListener",
    "HostRow",
    "PendingEvent",
    "PostgresRelayStore",
    "RelayAccount",
    "RelayStore",
    "SQLiteRelayStore",
    "Unchanged",
    "open_relay_store",
    "placeholder_slot",
]

#: The database's name when ``RelayStore`` is given a directory.
RELAY_DB_FILENAME: Final = "relay.sqlite3"
#: Page size of a new relay database (see ``RelayStore._connect``).
RELAY_PAGE_SIZE: Final = 16384

#: Every status a host may hold (sync.md §8).
HOST_STATUSES: Final = ("active", "idle", "offline", "throttled", "banned")
#: The relay's own view of an account, beside the upstream's status.
LOCAL_STATUSES: Final = ("active", "takendown", "throttled", "desynchronized")
#: Local statuses under which an account whose upstream is active is still active (sync.md §8, §10).
_ACTIVE_LOCAL: Final = frozenset({"active", "throttled", "desynchronized"})


class Unchanged(Enum):
    """The type of :data:`UNCHANGED`: "leave this column as it is" where None means "default policy"."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED


# --- rows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostRow:
    """An upstream host (a PDS) the relay subscribes to.

    ``hostname`` is lower-case, with a port only when it is not the scheme's
    default; ``last_seq`` is the upstream cursor (-1: none yet);
    ``account_count`` the number of accounts whose host this is, kept exact by
    the store. Rate columns are None for the default policy.
    """

    id: int
    hostname: str
    url: str
    configured: bool
    trusted: bool
    status: str
    last_seq: int
    account_limit: int
    account_count: int
    last_error: str | None
    last_error_ms: int | None
    last_event_ms: int | None
    created_ms: int
    rate_per_second: int | None
    rate_per_hour: int | None
    rate_per_day: int | None


@dataclass(frozen=True, slots=True)
class RelayAccount:
    """An account the relay has seen: where it is hosted, both statuses and its last commit."""

    did: str
    host_id: int
    status: str
    upstream_status: str
    rev: str | None
    commit: CID | None
    data: CID | None
    created_ms: int
    updated_ms: int

    @property
    def active(self) -> bool:
        """Visible (sync.md §10): the upstream says active and the relay has not taken it down."""
        return self.status in _ACTIVE_LOCAL and self.upstream_status == "active"

    @property
    def public_status(self) -> str | None:
        """The ``status`` of the combined view (sync.md §8 ``#account``): None when plainly active.

        A local override (takendown, throttled, desynchronized) wins; else the
        upstream's status when it is not active.
        """
        if self.status != "active":
            return self.status
        return None if self.upstream_status == "active" else self.upstream_status


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event to sequence: ``encode(seq)`` returns its whole frame (header and body)."""

    did: str
    type: str
    time_ms: int
    encode: Callable[[int], bytes]


# --- schema ----------------------------------------------------------------------------

_V1 = """
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    configured INTEGER NOT NULL,
    trusted INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'idle', 'offline', 'throttled', 'banned')),
    last_seq INTEGER NOT NULL,
    account_limit INTEGER NOT NULL,
    account_count INTEGER NOT NULL,
    last_error TEXT,
    last_error_ms INTEGER,
    last_event_ms INTEGER,
    created_ms INTEGER NOT NULL,
    rate_per_second INTEGER,
    rate_per_hour INTEGER,
    rate_per_day INTEGER
);
CREATE INDEX hosts_by_created ON hosts (created_ms);

CREATE TABLE banned_domains (domain TEXT PRIMARY KEY) WITHOUT ROWID;

CREATE TABLE accounts (
    did TEXT PRIMARY KEY,
    host_id INTEGER NOT NULL REFERENCES hosts (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'takendown', 'throttled', 'desynchronized')),
    upstream_status TEXT NOT NULL,
    rev TEXT,
    commit_cid BLOB,
    data_cid BLOB,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX accounts_by_host ON accounts (host_id, did);
-- Only the few accounts not locally active: counting and listing them by status
-- stays cheap (the total is the sum of hosts.account_count).
CREATE INDEX accounts_not_active ON accounts (status, did) WHERE status != 'active';

CREATE TABLE collections (
    collection TEXT NOT NULL,
    did TEXT NOT NULL,
    PRIMARY KEY (collection, did)
) WITHOUT ROWID;
CREATE INDEX collections_by_did ON collections (did, collection);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    did TEXT NOT NULL,
    type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    frame BLOB NOT NULL
);
CREATE INDEX events_by_time ON events (time_ms);

-- The last seq and (clamped) time handed out: a row, not MAX(seq), so that
-- pruning the log never brings a seq back; updated inside the appending
-- transaction, so that a rollback leaves no gap.
CREATE TABLE event_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
);
INSERT INTO event_seq (id, seq, time_ms) VALUES (1, 0, 0);
"""

# The queue of the split roles (``--role ingest``/``sequencer``, PostgreSQL): events committed by an
# ingest process, not yet sequenced. ``frame`` holds the seq placeholder at byte ``seq_at``; ``id``
# is the queue order. Created on SQLite too, so both backends keep the same schema versions.
_V2 = """
CREATE TABLE pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    did TEXT NOT NULL,
    type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    frame BLOB NOT NULL,
    seq_at INTEGER NOT NULL
);
"""

#: ``_MIGRATIONS[n]`` upgrades a file at ``user_version`` n to n + 1. Append, never edit.
_MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

# The same tables on PostgreSQL. Text keys compare as bytes (COLLATE "C"), as SQLite's do (listing by
# DID and the "after" cursors depend on it); every number a seq or a time may reach is a BIGINT.
_PG_V1 = """
CREATE TABLE hosts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    hostname TEXT COLLATE "C" NOT NULL UNIQUE,
    url TEXT NOT NULL,
    configured INTEGER NOT NULL,
    trusted INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'idle', 'offline', 'throttled', 'banned')),
    last_seq BIGINT NOT NULL,
    account_limit BIGINT NOT NULL,
    account_count BIGINT NOT NULL,
    last_error TEXT,
    last_error_ms BIGINT,
    last_event_ms BIGINT,
    created_ms BIGINT NOT NULL,
    rate_per_second BIGINT,
    rate_per_hour BIGINT,
    rate_per_day BIGINT
);
CREATE INDEX hosts_by_created ON hosts (created_ms);

CREATE TABLE banned_domains (domain TEXT COLLATE "C" PRIMARY KEY);

CREATE TABLE accounts (
    did TEXT COLLATE "C" PRIMARY KEY,
    host_id BIGINT NOT NULL REFERENCES hosts (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'takendown', 'throttled', 'desynchronized')),
    upstream_status TEXT NOT NULL,
    rev TEXT COLLATE "C",
    commit_cid BYTEA,
    data_cid BYTEA,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX accounts_by_host ON accounts (host_id, did);
CREATE INDEX accounts_not_active ON accounts (status, did) WHERE status != 'active';

CREATE TABLE collections (
    collection TEXT COLLATE "C" NOT NULL,
    did TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (collection, did)
);
CREATE INDEX collections_by_did ON collections (did, collection);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    did TEXT COLLATE "C" NOT NULL,
    type TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    frame BYTEA NOT NULL
);
CREATE INDEX events_by_time ON events (time_ms);

CREATE TABLE event_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL
);
INSERT INTO event_seq (id, seq, time_ms) VALUES (1, 0, 0);
"""

_PG_V2 = """
CREATE TABLE pending (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    did TEXT COLLATE "C" NOT NULL,
    type TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    frame BYTEA NOT NULL,
    seq_at INTEGER NOT NULL
);
"""

#: The PostgreSQL schema's migrations, numbered as ``_MIGRATIONS`` (the same versions, the same tables).
_PG_MIGRATIONS: Final[tuple[str, ...]] = (_PG_V1, _PG_V2)
#: The PostgreSQL schema the relay's tables live in (another store may share the database).
PG_SCHEMA: Final = "atrepo_relay"
#: The channel a committed batch notifies, with the new head seq as payload (fan-out processes listen).
RELAY_EVENTS_CHANNEL: Final = "atrepo_relay_events"
#: The channel an ingest process's batch notifies when it queued events (the sequencer listens).
RELAY_PENDING_CHANNEL: Final = "atrepo_relay_pending"
#: The seq a queued frame is encoded with: the widest a seq may be (a CBOR head of 9 bytes), so the
#: sequencer writes the real one in its place (:func:`atrepo.core.events.reseq_frame`), never encoding.
SEQ_PLACEHOLDER: Final = limits.MAX_SAFE_INT
_PLACEHOLDER_BYTES: Final = b"\x63seq\x1b" + SEQ_PLACEHOLDER.to_bytes(8, "big")
_PENDING_COLUMNS: Final = "did, type, time_ms, frame, seq_at"
_PENDING_TYPES: Final = ("text", "text", "int8", "bytea", "int4")

# PostgreSQL, rows in bulk: COPY (into a per-connection temporary table, then one statement, where rows
# update or may already exist). The mirror's threshold: below it, statements cost less than a COPY.
_PG_BULK_MIN: Final = 16
_PG_TEMP_TABLES: Final = (
    'CREATE TEMPORARY TABLE accounts_in (did TEXT COLLATE "C", host_id BIGINT, status TEXT,'
    ' upstream_status TEXT, rev TEXT COLLATE "C", commit_cid BYTEA, data_cid BYTEA, updated_ms BIGINT)'
    " ON COMMIT DELETE ROWS;"
    ' CREATE TEMPORARY TABLE collections_in (collection TEXT COLLATE "C", did TEXT COLLATE "C")'
    " ON COMMIT DELETE ROWS"
)
_PG_UPDATE_ACCOUNTS: Final = (
    "UPDATE accounts AS a SET host_id = t.host_id, status = t.status, upstream_status = t.upstream_status,"
    " rev = t.rev, commit_cid = t.commit_cid, data_cid = t.data_cid, updated_ms = t.updated_ms"
    " FROM accounts_in AS t WHERE a.did = t.did"
)
_PG_ADD_COLLECTIONS: Final = (
    "INSERT INTO collections (collection, did) SELECT collection, did FROM collections_in"
    " ON CONFLICT DO NOTHING"
)
_ADD_COLLECTION: Final = "INSERT INTO collections (collection, did) VALUES (?, ?) ON CONFLICT DO NOTHING"
_INSERT_EVENT: Final = "INSERT INTO events (seq, did, type, time_ms, frame) VALUES (?, ?, ?, ?, ?)"
_EVENT_COLUMNS: Final = "seq, did, type, time_ms, frame"
_EVENT_TYPES: Final = ("int8", "text", "text", "int8", "bytea")

_HOST_COLUMNS: Final = (
    "id, hostname, url, configured, trusted, status, last_seq, account_limit, account_count,"
    " last_error, last_error_ms, last_event_ms, created_ms, rate_per_second, rate_per_hour, rate_per_day"
)
_ACCOUNT_COLUMNS: Final = (
    "did, host_id, status, upstream_status, rev, commit_cid, data_cid, created_ms, updated_ms"
)
#: Most values one ``IN (...)`` names (SQLite allows 32766 parameters).
_IN_BATCH: Final = 500

Synchronous = Literal["FULL", "NORMAL"]


def _host(row: Any) -> HostRow:
    (hid, hostname, url, configured, trusted, status, last_seq, limit, count) = row[:9]
    return HostRow(
        hid, hostname, url, bool(configured), bool(trusted), status, last_seq, limit, count, *row[9:]
    )


def _account(row: Any) -> RelayAccount:
    did, host_id, status, upstream, rev, commit, data, created_ms, updated_ms = row
    return RelayAccount(
        did,
        host_id,
        status,
        upstream,
        rev,
        CID(bytes(commit)) if commit is not None else None,
        CID(bytes(data)) if data is not None else None,
        created_ms,
        updated_ms,
    )


def _account_params(account: RelayAccount) -> tuple[Any, ...]:
    if account.status not in LOCAL_STATUSES:
        raise ValueError(f"local account status must be one of {LOCAL_STATUSES}, not {account.status!r}")
    return (
        account.did,
        account.host_id,
        account.status,
        account.upstream_status,
        account.rev,
        account.commit.raw if account.commit is not None else None,
        account.data.raw if account.data is not None else None,
        account.created_ms,
        account.updated_ms,
    )


def placeholder_slot(frame: bytes) -> tuple[int, int]:
    """Where the seq sits in a frame encoded with :data:`SEQ_PLACEHOLDER` (start, length: always 9).

    The first ``"seq": 2^53-1`` in the frame is the body's own: a frame's
    body is canonical DAG-CBOR, whose map keys sort by length first, so the
    three-letter ``seq`` comes before every field a sender chooses freely
    (``blocks``, ``time``, ``handle``...); only ``did``, ``rev`` and a
    ``#commit``'s ``ops`` precede it, and those are checked syntax without
    control bytes, or CIDs, whose digests no sender can grind into these 13
    bytes. Raises ``ValueError`` when the frame has no placeholder.
    """
    at = frame.find(_PLACEHOLDER_BYTES)
    if at < 0:
        raise ValueError("the frame does not carry the seq placeholder")
    return at + 4, 9


def _reseq(frame: bytes, seq_at: int) -> Callable[[int], bytes]:
    def encode(seq: int) -> bytes:
        return reseq_frame(frame, (seq_at, 9), seq)

    return encode


def _chunks(values: Sequence[str], size: int = _IN_BATCH) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _in_marks(count: int) -> str:
    return ",".join("?" * count)


def _normalize_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _bare_host(hostname: str) -> str:
    """The hostname without its port (and without the brackets of an IPv6 literal)."""
    name = _normalize_domain(hostname)
    if name.startswith("["):
        return name[1:].partition("]")[0]
    head, sep, port = name.rpartition(":")
    if sep and port.isdigit() and ":" not in head:
        return head
    return name


def _ban_candidates(hostname: str) -> list[str]:
    """The names whose ban covers ``hostname``: itself and every parent domain (an IP only itself)."""
    name = _bare_host(hostname)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        labels = name.split(".")
        return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]]
    return [name]


class RelayStore(DatabaseFile[Any]):
    """Every table of a relay, over SQLite or PostgreSQL: hosts, accounts, collections, the event log.

    Open one with :func:`open_relay_store` (a path or a ``postgresql://``
    URL), or :class:`SQLiteRelayStore` / :class:`PostgresRelayStore`
    directly. Either raises :class:`StoreInUse` when another relay has the
    same store open for writing.
    """

    def __enter__(self) -> RelayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _where_did_in(self, dids: Sequence[str]) -> Iterator[tuple[str, Sequence[Any]]]:
        """``did`` tests covering ``dids``: chunks of ``IN (?, ...)`` on SQLite, one ``= ANY(?)`` on
        PostgreSQL (a single array parameter, one plan whatever the count)."""
        if self.dialect == "postgresql":
            if dids:
                yield self.in_list("did", dids)
            return
        for chunk in _chunks(dids):
            yield f"did IN ({_in_marks(len(chunk))})", chunk

    # --- rows in bulk, inside a write (PostgreSQL overrides them with COPY) -----------------

    def _store_accounts(
        self,
        db: Conn,
        inserts: list[tuple[Any, ...]],
        moves: list[tuple[Any, ...]],
        stays: list[tuple[Any, ...]],
    ) -> None:
        """Write account rows (``_account_params`` order): ``inserts`` are known absent (the writer
        read them so), ``moves`` change host, ``stays`` keep theirs (so SQLite leaves the
        ``accounts_by_host`` index page alone: most of a relay's upserts are a new rev)."""
        if inserts:
            db.executemany(
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts
            )
        if moves:
            db.executemany(
                "UPDATE accounts SET host_id = ?, status = ?, upstream_status = ?, rev = ?, commit_cid = ?,"
                " data_cid = ?, updated_ms = ? WHERE did = ?",
                [(*p[1:7], p[8], p[0]) for p in moves],
            )
        if stays:
            db.executemany(
                "UPDATE accounts SET status = ?, upstream_status = ?, rev = ?, commit_cid = ?,"
                " data_cid = ?, updated_ms = ? WHERE did = ?",
                [(*p[2:7], p[8], p[0]) for p in stays],
            )

    def _add_collections(self, db: Conn, rows: list[tuple[str, str]]) -> None:
        """(collection, did) rows, duplicates and already indexed pairs allowed."""
        db.executemany(_ADD_COLLECTION, rows)

    def _insert_events(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """(seq, did, type, time_ms, frame) rows."""
        db.executemany(_INSERT_EVENT, rows)

    def _announce(self, db: Conn, head_seq: int) -> None:
        """Inside the batch's transaction, after its events: tell other processes (PostgreSQL)."""

    # --- the batch write ---------------------------------------------------------------

    def apply_batch(
        self,
        accounts: Sequence[RelayAccount],
        events: Sequence[PendingEvent],
        collections: Sequence[tuple[str, str]] = (),
        cursors: Mapping[int, tuple[int, int | None]] | None = None,
        *,
        replace_collections: Mapping[str, Iterable[str]] | None = None,
    ) -> list[EventRow]:
        """*Writer.* One transaction: upsert accounts, index collections, sequence events, move cursors.

        Accounts are inserted or updated by DID (an existing row keeps its
        ``created_ms``); ``hosts.account_count`` follows new accounts and moves.
        Events get consecutive seqs after the last one ever allocated, in
        order; ``encode(seq)`` builds each frame. ``cursors`` maps a host id to
        its (last_seq, last_event_ms). ``replace_collections`` maps a DID to
        its whole new set of collections (a ``#sync``), applied before
        ``collections`` is added. Anything raising (an ``encode``, an
        unknown host id (``KeyError``, or the driver's ``IntegrityError`` for an
        account's), a bad status) rolls the whole batch back. Returns the
        stored events, in order, for the fan-out.
        """
        with self._write() as db:
            self._apply_state(db, accounts, collections, cursors, replace_collections)
            rows = self._sequence(db, [(e.did, e.type, e.time_ms, e.encode) for e in events])
            if rows:
                self._announce(db, rows[-1].seq)
            return rows

    def queue_batch(
        self,
        accounts: Sequence[RelayAccount],
        events: Sequence[PendingEvent],
        collections: Sequence[tuple[str, str]] = (),
        cursors: Mapping[int, tuple[int, int | None]] | None = None,
        *,
        replace_collections: Mapping[str, Iterable[str]] | None = None,
    ) -> int:
        """*Writer.* :meth:`apply_batch` for an ingest process (``--role ingest``): everything but seqs.

        Accounts, collections and cursors are written as there; the events
        go to the ``pending`` queue instead of the log, each frame encoded
        once with :data:`SEQ_PLACEHOLDER` (the sequencer writes the real
        seq in its place), all in one transaction: a crash keeps the queued
        events and the cursor that covers them together, or neither. Touches
        neither the seq counter nor the log, so ingest processes of different
        partitions commit side by side. Notifies the sequencer
        (:data:`RELAY_PENDING_CHANNEL`) when it queued anything. Returns how
        many events it queued.
        """
        with self._write() as db:
            self._apply_state(db, accounts, collections, cursors, replace_collections)
            rows: list[tuple[Any, ...]] = []
            for event in events:
                frame = event.encode(SEQ_PLACEHOLDER)
                start, _length = placeholder_slot(frame)
                rows.append((event.did, event.type, event.time_ms, frame, start))
            if rows:
                self._insert_pending(db, rows)
                self._announce_pending(db)
            return len(rows)

    def sequence_pending(self, limit: int = 1000) -> list[EventRow]:
        """*Writer* (the sequencer). Move up to ``limit`` queued events into the log, in queue order.

        One transaction: seqs from the counter row, each frame's placeholder
        replaced by its seq (the frame is not encoded again), the events
        stored, the queued rows deleted (by id: a row of a lower id that an
        ingest process commits meanwhile stays for the next call), the
        fan-out notified. Returns the stored events, in seq order.
        """
        with self._write() as db:
            query = f"SELECT id, {_PENDING_COLUMNS} FROM pending ORDER BY id LIMIT ?"
            queued = db.execute(query, (limit,)).fetchall()
            if not queued:
                return []
            rows = self._sequence(
                db,
                [
                    (did, kind, time_ms, _reseq(bytes(frame), seq_at))
                    for _id, did, kind, time_ms, frame, seq_at in queued
                ],
            )
            test, params = self.in_list("id", [row[0] for row in queued])
            db.execute(f"DELETE FROM pending WHERE {test}", params)
            self._announce(db, rows[-1].seq)
            return rows

    def pending_count(self) -> int:
        """Events queued by ingest processes and not yet sequenced."""
        (count,) = self._read().execute("SELECT COUNT(*) FROM pending").fetchone()
        return int(count)

    def _apply_state(
        self,
        db: Conn,
        accounts: Sequence[RelayAccount],
        collections: Sequence[tuple[str, str]],
        cursors: Mapping[int, tuple[int, int | None]] | None,
        replace_collections: Mapping[str, Iterable[str]] | None,
    ) -> None:
        """A batch's accounts, collections and host cursors (inside its transaction)."""
        if accounts:
            self._upsert_accounts(db, accounts)
        for did, names in (replace_collections or {}).items():
            self._replace_collections(db, did, names)
        if collections:
            self._add_collections(db, [(collection, did) for did, collection in collections])
        if cursors:
            for host_id, (last_seq, last_event_ms) in cursors.items():
                changed = db.execute(
                    "UPDATE hosts SET last_seq = ?, last_event_ms = COALESCE(?, last_event_ms) WHERE id = ?",
                    (last_seq, last_event_ms, host_id),
                ).rowcount
                if not changed:
                    raise KeyError(f"no host with id {host_id}")

    def _sequence(
        self, db: Conn, events: Sequence[tuple[str, str, int, Callable[[int], bytes]]]
    ) -> list[EventRow]:
        """Allocate seqs to (did, type, time_ms, encode) events and store them (inside a transaction)."""
        rows: list[EventRow] = []
        if not events:
            return rows
        seq, last_ms = db.execute("SELECT seq, time_ms FROM event_seq WHERE id = 1").fetchone()
        for did, kind, time_ms, encode in events:
            seq += 1
            if seq > limits.MAX_SAFE_INT - 1:  # MAX_SAFE_INT is the queue's placeholder
                raise RuntimeError("the relay's event seq would pass 2^53 - 2")
            last_ms = max(last_ms, time_ms)
            rows.append(EventRow(seq, did, kind, last_ms, encode(seq)))
        self._insert_events(db, [(r.seq, r.did, r.type, r.time_ms, r.frame) for r in rows])
        db.execute("UPDATE event_seq SET seq = ?, time_ms = ? WHERE id = 1", (seq, last_ms))
        return rows

    def _insert_pending(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """(did, type, time_ms, frame, seq_at) rows into the queue, in order."""
        db.executemany(f"INSERT INTO pending ({_PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)

    def _announce_pending(self, db: Conn) -> None:
        """Inside a queueing transaction: wake the sequencer (PostgreSQL)."""

    def _upsert_accounts(self, db: Conn, accounts: Sequence[RelayAccount]) -> None:
        """Upsert rows and fold new accounts and moves into per-host ``account_count`` deltas.

        The last row of a DID in the batch wins (a new account keeps the
        ``created_ms`` of its first row). Rows are written by what changes:
        an account staying on its host is updated without touching
        ``host_id``, so the ``accounts_by_host`` index page is not rewritten
        (most of a relay's upserts are a new rev on the same host).
        """
        final: dict[str, RelayAccount] = {}
        first_created: dict[str, int] = {}
        for account in accounts:
            first_created.setdefault(account.did, account.created_ms)
            final[account.did] = account
        dids = list(final)
        where: dict[str, int] = {}
        for test, params in self._where_did_in(dids):
            query = f"SELECT did, host_id FROM accounts WHERE {test}"
            where.update((did, host_id) for did, host_id in db.execute(query, params))
        deltas: dict[int, int] = {}
        inserts: list[tuple[Any, ...]] = []
        moves: list[tuple[Any, ...]] = []
        stays: list[tuple[Any, ...]] = []
        for did, account in final.items():
            params = _account_params(account)
            before = where.get(did)
            if before is None:
                inserts.append((*params[:7], first_created[did], params[8]))
            elif before != account.host_id:
                deltas[before] = deltas.get(before, 0) - 1
                moves.append(params)
            else:
                stays.append(params)
            if before != account.host_id:
                deltas[account.host_id] = deltas.get(account.host_id, 0) + 1
        self._store_accounts(db, inserts, moves, stays)
        db.executemany(
            "UPDATE hosts SET account_count = account_count + ? WHERE id = ?",
            # in host order: two ingest processes moving accounts between their hosts never deadlock
            [(delta, host_id) for host_id, delta in sorted(deltas.items()) if delta],
        )

    # --- event log (atrepo.store.base.EventLog) --------------------------------------------

    def head_seq(self) -> int:
        """The last seq ever allocated (0 for none): never goes back, even when the log is pruned."""
        (seq,) = self._read().execute("SELECT seq FROM event_seq WHERE id = 1").fetchone()
        return int(seq)

    def oldest_seq(self) -> int | None:
        (seq,) = self._read().execute("SELECT MIN(seq) FROM events").fetchone()
        return int(seq) if seq is not None else None

    def read_events(self, after: int, limit: int) -> list[EventRow]:
        rows = (
            self._read()
            .execute(
                "SELECT seq, did, type, time_ms, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        return [EventRow(*row) for row in rows]

    def prune_events(self, before_ms: int) -> int:
        """*Writer.* Delete events stored with ``time_ms < before_ms`` (a prefix of the log)."""
        with self._write() as db:
            return int(db.execute("DELETE FROM events WHERE time_ms < ?", (before_ms,)).rowcount)

    # --- hosts -------------------------------------------------------------------------

    def add_host(
        self, hostname: str, url: str, *, configured: bool, trusted: bool, account_limit: int, now_ms: int
    ) -> HostRow:
        """*Writer.* Create an ``active`` host without a cursor; a known hostname's row is returned as is."""
        name = hostname.lower()
        with self._write() as db:
            db.execute(
                "INSERT INTO hosts (hostname, url, configured, trusted, status, last_seq,"
                " account_limit, account_count, created_ms) VALUES (?, ?, ?, ?, 'active', -1, ?, 0, ?)"
                " ON CONFLICT (hostname) DO NOTHING",
                (name, url, int(configured), int(trusted), account_limit, now_ms),
            )
            row = db.execute(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE hostname = ?", (name,)).fetchone()
        return _host(row)

    def get_host(self, host_id: int) -> HostRow | None:
        row = self._read().execute(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE id = ?", (host_id,)).fetchone()
        return _host(row) if row is not None else None

    def get_host_by_name(self, hostname: str) -> HostRow | None:
        query = f"SELECT {_HOST_COLUMNS} FROM hosts WHERE hostname = ?"
        row = self._read().execute(query, (hostname.lower(),)).fetchone()
        return _host(row) if row is not None else None

    def list_hosts(self, *, after_id: int = 0, limit: int = 500) -> list[HostRow]:
        """Hosts with id > ``after_id``, by id (``listHosts``)."""
        query = f"SELECT {_HOST_COLUMNS} FROM hosts WHERE id > ? ORDER BY id LIMIT ?"
        return [_host(row) for row in self._read().execute(query, (after_id, limit))]

    def _host_after(self, db: Conn, host_id: int, changed: int) -> HostRow:
        if not changed:
            raise KeyError(f"no host with id {host_id}")
        return _host(db.execute(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE id = ?", (host_id,)).fetchone())

    def set_host_status(self, host_id: int, status: str, *, error: str | None = None, now_ms: int) -> HostRow:
        """*Writer.* Set the status; record ``error`` (with ``now_ms``) when given.

        Rule for ``last_error``: an ``error`` replaces it (and ``last_error_ms``);
        no error and ``status == "active"`` clears both (the host recovered);
        no error with any other status keeps the previous error, which is
        likely what made the host idle or offline. Raises ``KeyError`` for an
        unknown id, ``ValueError`` for an unknown status.
        """
        if status not in HOST_STATUSES:
            raise ValueError(f"host status must be one of {HOST_STATUSES}, not {status!r}")
        with self._write() as db:
            if error is not None:
                query = "UPDATE hosts SET status = ?, last_error = ?, last_error_ms = ? WHERE id = ?"
                changed = db.execute(query, (status, error, now_ms, host_id)).rowcount
            elif status == "active":
                query = "UPDATE hosts SET status = ?, last_error = NULL, last_error_ms = NULL WHERE id = ?"
                changed = db.execute(query, (status, host_id)).rowcount
            else:
                changed = db.execute("UPDATE hosts SET status = ? WHERE id = ?", (status, host_id)).rowcount
            return self._host_after(db, host_id, changed)

    def set_host_cursor(self, host_id: int, last_seq: int) -> None:
        """*Writer.* Set the upstream cursor (-1: start from the live head next time)."""
        with self._write() as db:
            changed = db.execute("UPDATE hosts SET last_seq = ? WHERE id = ?", (last_seq, host_id)).rowcount
            if not changed:
                raise KeyError(f"no host with id {host_id}")

    def set_host_limits(
        self,
        host_id: int,
        *,
        account_limit: int | None = None,
        rate_per_second: int | None | Unchanged = UNCHANGED,
        rate_per_hour: int | None | Unchanged = UNCHANGED,
        rate_per_day: int | None | Unchanged = UNCHANGED,
        trusted: bool | None = None,
    ) -> HostRow:
        """*Writer.* Change a host's limits; what is not passed stays.

        ``account_limit``/``trusted`` None: unchanged. A rate passed as None
        goes back to the default policy; leave it out (:data:`UNCHANGED`) to
        keep it. Raises ``KeyError`` for an unknown id.
        """
        sets: list[str] = []
        params: list[Any] = []
        if account_limit is not None:
            sets.append("account_limit = ?")
            params.append(account_limit)
        if trusted is not None:
            sets.append("trusted = ?")
            params.append(int(trusted))
        for column, value in (
            ("rate_per_second", rate_per_second),
            ("rate_per_hour", rate_per_hour),
            ("rate_per_day", rate_per_day),
        ):
            if value is not UNCHANGED:
                sets.append(f"{column} = ?")
                params.append(value)
        with self._write() as db:
            if sets:
                query = f"UPDATE hosts SET {', '.join(sets)} WHERE id = ?"
                changed = db.execute(query, (*params, host_id)).rowcount
            else:
                changed = len(db.execute("SELECT 1 FROM hosts WHERE id = ?", (host_id,)).fetchall())
            return self._host_after(db, host_id, changed)

    def count_hosts_created_since(self, ms: int) -> int:
        """Hosts created at or after ``ms`` (the new-hosts-per-day limit)."""
        (count,) = self._read().execute("SELECT COUNT(*) FROM hosts WHERE created_ms >= ?", (ms,)).fetchone()
        return int(count)

    # --- domain bans -------------------------------------------------------------------

    def ban_domain(self, domain: str) -> None:
        """*Writer.* Ban a domain and every subdomain of it (lower-cased, trailing dot dropped)."""
        name = _normalize_domain(domain)
        if not name:
            raise ValueError("cannot ban an empty domain")
        with self._write() as db:
            db.execute("INSERT INTO banned_domains (domain) VALUES (?) ON CONFLICT DO NOTHING", (name,))

    def unban_domain(self, domain: str) -> bool:
        """*Writer.* Lift a ban; False when the domain was not banned."""
        with self._write() as db:
            query = "DELETE FROM banned_domains WHERE domain = ?"
            return bool(db.execute(query, (_normalize_domain(domain),)).rowcount > 0)

    def list_banned_domains(self) -> list[str]:
        return [row[0] for row in self._read().execute("SELECT domain FROM banned_domains ORDER BY domain")]

    def is_banned(self, hostname: str) -> bool:
        """Whether ``hostname`` (port ignored) is a banned domain or a subdomain of one."""
        candidates = _ban_candidates(hostname)
        if not candidates:
            return False
        query = f"SELECT 1 FROM banned_domains WHERE domain IN ({_in_marks(len(candidates))}) LIMIT 1"
        return self._read().execute(query, candidates).fetchone() is not None

    # --- accounts ----------------------------------------------------------------------

    def get_account(self, did: str) -> RelayAccount | None:
        query = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE did = ?"
        row = self._read().execute(query, (did,)).fetchone()
        return _account(row) if row is not None else None

    def get_accounts(self, dids: Iterable[str]) -> dict[str, RelayAccount]:
        """The accounts of ``dids`` that exist, by DID (one query per 500 DIDs)."""
        wanted = list(dict.fromkeys(dids))
        db = self._read()
        found: dict[str, RelayAccount] = {}
        for test, params in self._where_did_in(wanted):
            for row in db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {test}", params):
                account = _account(row)
                found[account.did] = account
        return found

    def list_accounts(self, *, after: str | None = None, limit: int = 500) -> list[RelayAccount]:
        """Accounts by DID, those after ``after`` (``listRepos``)."""
        query = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE did > ? ORDER BY did LIMIT ?"
        return [_account(row) for row in self._read().execute(query, (after or "", limit))]

    def list_host_accounts(
        self, host_id: int, *, status: str | None = None, after: str | None = None, limit: int = 500
    ) -> list[RelayAccount]:
        """A host's accounts by DID, after ``after``, only those of local ``status`` when given."""
        query = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE host_id = ? AND did > ?"
        params: list[Any] = [host_id, after or ""]
        if status is not None:
            query += " AND status = ?"
            params.append(status)
        query += " ORDER BY did LIMIT ?"
        params.append(limit)
        return [_account(row) for row in self._read().execute(query, params)]

    def count_accounts(self) -> dict[str, int]:
        """Accounts per local status (every status, zeros included) and ``total``.

        Cheap: the total is the sum of the hosts' exact counts and only the
        not-active statuses are counted, through a partial index.
        """
        db = self._read()
        (total,) = db.execute("SELECT COALESCE(SUM(account_count), 0) FROM hosts").fetchone()
        counts = dict.fromkeys(LOCAL_STATUSES, 0)
        query = "SELECT status, COUNT(*) FROM accounts WHERE status != 'active' GROUP BY status"
        for status, count in db.execute(query):
            counts[status] = int(count)
        counts["active"] = int(total) - sum(counts.values())
        counts["total"] = int(total)
        return counts

    def list_accounts_by_status(
        self, status: str, *, after: str | None = None, limit: int = 100
    ) -> list[RelayAccount]:
        """Accounts of a not-active local ``status`` by DID, after ``after`` (the status page, admin).

        Cheap: read through the partial index of not-active accounts (the
        literal ``status != 'active'`` lets SQLite use it with a bound status).
        """
        query = (
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE status != 'active' AND status = ? AND did > ? "
            "ORDER BY did LIMIT ?"
        )
        return [_account(row) for row in self._read().execute(query, (status, after or "", limit))]

    def set_account_status(self, did: str, status: str, *, now_ms: int | None = None) -> RelayAccount | None:
        """*Writer.* Set the local status (takedown, throttling); None for an unknown DID.

        ``now_ms``, when given, becomes ``updated_ms``.
        """
        if status not in LOCAL_STATUSES:
            raise ValueError(f"local account status must be one of {LOCAL_STATUSES}, not {status!r}")
        with self._write() as db:
            query = "UPDATE accounts SET status = ?, updated_ms = COALESCE(?, updated_ms) WHERE did = ?"
            if not db.execute(query, (status, now_ms, did)).rowcount:
                return None
            row = db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE did = ?", (did,)).fetchone()
        return _account(row)

    def delete_account(self, did: str) -> bool:
        """*Writer.* Forget an account and its collections (its events stay); False when unknown."""
        with self._write() as db:
            row = db.execute("DELETE FROM accounts WHERE did = ? RETURNING host_id", (did,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE hosts SET account_count = account_count - 1 WHERE id = ?", (row[0],))
            db.execute("DELETE FROM collections WHERE did = ?", (did,))
            return True

    # --- collections index -------------------------------------------------------------

    def add_collections(self, pairs: Iterable[tuple[str, str]]) -> None:
        """*Writer.* Index (did, collection) pairs; those already indexed are left as they are."""
        with self._write() as db:
            self._add_collections(db, [(collection, did) for did, collection in pairs])

    def replace_collections(self, did: str, collections: Iterable[str]) -> None:
        """*Writer.* Make ``collections`` the DID's whole set (after a resync), in one transaction."""
        with self._write() as db:
            self._replace_collections(db, did, collections)

    @staticmethod
    def _replace_collections(db: Conn, did: str, collections: Iterable[str]) -> None:
        db.execute("DELETE FROM collections WHERE did = ?", (did,))
        db.executemany(
            "INSERT INTO collections (collection, did) VALUES (?, ?)",
            [(collection, did) for collection in dict.fromkeys(collections)],
        )

    def list_repos_by_collection(
        self, collection: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        """DIDs holding ``collection``, in DID order, after ``after`` (``listReposByCollection``)."""
        query = "SELECT did FROM collections WHERE collection = ? AND did > ? ORDER BY did LIMIT ?"
        return [row[0] for row in self._read().execute(query, (collection, after or "", limit))]

    def collections_of(self, did: str) -> list[str]:
        """The DID's indexed collections, sorted."""
        query = "SELECT collection FROM collections WHERE did = ? ORDER BY collection"
        return [row[0] for row in self._read().execute(query, (did,))]

    # --- statistics --------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Cheap counts for ``/metrics`` and the status page: no query scans a large table.

        ``hosts`` and ``hosts_<status>``; ``accounts`` and ``accounts_<status>``;
        ``events`` (the stored seq range: the log is contiguous), ``head_seq``
        and ``oldest_seq`` (0 when empty).
        """
        db = self._read()
        out: dict[str, int] = {f"hosts_{status}": 0 for status in HOST_STATUSES}
        for status, count in db.execute("SELECT status, COUNT(*) FROM hosts GROUP BY status"):
            out[f"hosts_{status}"] = int(count)
        out["hosts"] = sum(out[f"hosts_{status}"] for status in HOST_STATUSES)
        for status, count in self.count_accounts().items():
            out["accounts" if status == "total" else f"accounts_{status}"] = count
        # Two queries: SQLite answers a lone MIN or MAX from the index, not both in one.
        (low,) = db.execute("SELECT MIN(seq) FROM events").fetchone()
        (high,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
        out["events"] = int(high) - int(low) + 1 if low is not None else 0
        out["oldest_seq"] = int(low) if low is not None else 0
        out["head_seq"] = self.head_seq()
        return out


class SQLiteRelayStore(RelayStore, SQLiteFile):
    """Every table of a relay in one SQLite file, locked by ``<file>.lock`` beside it (the default).

    ``path`` is the database file (its directory is created if missing), or
    an existing directory, which then holds ``relay.sqlite3``. Raises
    :class:`StoreInUse` when another relay store (in this process or
    another) has the file open.
    """

    def __init__(
        self, path: Path | str, *, synchronous: Synchronous = "FULL", busy_timeout_ms: int = 10_000
    ) -> None:
        SQLiteFile.__init__(
            self,
            path,
            filename=RELAY_DB_FILENAME,
            migrations=_MIGRATIONS,
            name="relay store",
            lock_holder="relay",
            foreign_keys=True,
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
        )

    def __enter__(self) -> SQLiteRelayStore:
        return self

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        """A connection; on a new, still empty file it also sets the relay's page size first.

        Event frames are about 2 KB each: with SQLite's default 4 KiB pages
        every batch writes twice as many pages (each through the WAL, then
        the checkpoint), and the writer's system time per event nearly
        halves with ``RELAY_PAGE_SIZE`` (measured: ~15 -> ~9 us per event).
        The page size of a file is fixed once it has content or is in WAL
        mode, so on any existing file the pragma is a no-op.
        """
        db = SQLiteFile._connect(self, read_only=read_only)
        if not read_only:
            db.execute(f"PRAGMA page_size={RELAY_PAGE_SIZE}")
        return db


class EventListener:
    """A connection that ``LISTEN``\\ s on :data:`RELAY_EVENTS_CHANNEL`: how a fan-out process hears of
    each committed batch without polling the log.

    :meth:`wait` blocks (call it from a thread) and returns the highest head
    seq announced, or None when nothing came in time. A lost connection
    raises the driver's ``OperationalError``: open a new listener, then read
    the head once, since what was announced meanwhile is not replayed. The
    connection is a :class:`~atrepo.store.pgfile.PgListener`; this reads its
    payloads as seqs.
    """

    def __init__(self, listener: PgListener) -> None:
        self._listener = listener

    def wait(self, timeout_s: float) -> int | None:
        best: int | None = None
        for payload in self._listener.wait(timeout_s):
            try:
                seq = int(payload)
            except ValueError:
                continue
            best = seq if best is None else max(best, seq)
        return best

    def close(self) -> None:
        self._listener.close()


class PostgresRelayStore(RelayStore, PostgresFile):
    """The relay's tables in a PostgreSQL schema (``atrepo_relay`` unless ``schema`` names another).

    The tables are those of the SQLite file, so the queries of
    :class:`RelayStore` run on both. Who opens it decides its locks:

    - the whole relay (``--role all``, the default here): the schema's
      exclusive advisory lock; it is the one sequencer;
    - ``follower=True``, a fan-out process: no lock (any number of followers
      run beside the writer), reads and :meth:`listen`\\ s, refuses writes;
    - ``partition=(i, n)``, an ingest process (``--role ingest``): the
      schema's lock *shared* plus partition ``i``'s exclusive, so the
      partitions' processes run side by side, one per partition, and none
      beside a whole relay; it writes with :meth:`RelayStore.queue_batch`;
    - ``sequencer=True`` (``--role sequencer``): the schema's lock shared
      plus the sequencer's exclusive: one sequencer beside the ingest
      processes, none beside a whole relay; it writes with
      :meth:`RelayStore.sequence_pending`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = PG_SCHEMA,
        follower: bool = False,
        partition: tuple[int, int] | None = None,
        sequencer: bool = False,
        connect_timeout_s: int = 10,
    ) -> None:
        if sum((follower, partition is not None, sequencer)) > 1:
            raise ValueError("a relay store opens as one of: follower, partition, sequencer")
        self.follower = follower
        self.sequencer = sequencer
        PostgresFile.__init__(
            self,
            url,
            schema=schema,
            migrations=_PG_MIGRATIONS,
            name="relay store",
            lock_holder="relay sequencer" if sequencer else "relay",
            connect_timeout_s=connect_timeout_s,
            partition=partition,
        )
        if follower:
            self.location += " (fan-out, read-only)"
        elif sequencer:
            self.location += " (sequencer)"

    def __enter__(self) -> PostgresRelayStore:
        return self

    def _take_locks(self, conn: PgConnection) -> bool:
        """The writer's locks (see the class); a follower takes none (it never writes, and must not
        keep the writer out)."""
        if self.follower:
            return True
        if not self.sequencer:
            return super()._take_locks(conn)
        schema_key = _lock_key(self.schema)
        if not conn.execute("SELECT pg_try_advisory_lock_shared(?)", (schema_key,)).fetchone()[0]:
            return False
        if conn.execute(
            "SELECT pg_try_advisory_lock(?)", (_lock_key(self.schema + "#sequencer"),)
        ).fetchone()[0]:
            return True
        conn.execute("SELECT pg_advisory_unlock_shared(?)", (schema_key,))
        return False

    def _writer_ready(self, conn: PgConnection) -> None:
        if not self.follower:
            conn.script(_PG_TEMP_TABLES)

    def _begin(self) -> PgConnection:
        if self.follower:
            raise RuntimeError(f"{self.location}: a fan-out process's relay store is read-only")
        return super()._begin()

    def listen(self, channel: str = RELAY_EVENTS_CHANNEL) -> EventListener:
        """A new connection listening for committed batches (close it when done).

        ``channel``: :data:`RELAY_EVENTS_CHANNEL` (events in the log, payload
        the head seq) or :data:`RELAY_PENDING_CHANNEL` (events queued by an
        ingest process, no payload: :meth:`EventListener.wait` then returns 0).
        """
        if channel not in (RELAY_EVENTS_CHANNEL, RELAY_PENDING_CHANNEL):
            raise ValueError(f"not a relay channel: {channel!r}")
        return EventListener(self.listener(channel))

    def _announce(self, db: Conn, head_seq: int) -> None:
        # Transactional: delivered at COMMIT, when the batch's events are visible, and never for a
        # batch rolled back.
        db.execute("SELECT pg_notify(?, ?)", (RELAY_EVENTS_CHANNEL, str(head_seq)))

    def _announce_pending(self, db: Conn) -> None:
        # Delivered at COMMIT, when the queued rows are visible to the sequencer.
        db.execute("SELECT pg_notify(?, '0')", (RELAY_PENDING_CHANNEL,))

    def _insert_pending(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._insert_pending(db, rows)
        pg: Any = db  # binary COPY, as the events' (see _insert_events)
        with pg.raw.cursor().copy(f"COPY pending ({_PENDING_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_PENDING_TYPES)
            for row in rows:
                copy.write_row(row)
        return None

    def _store_accounts(
        self,
        db: Conn,
        inserts: list[tuple[Any, ...]],
        moves: list[tuple[Any, ...]],
        stays: list[tuple[Any, ...]],
    ) -> None:
        if len(inserts) + len(moves) + len(stays) < _PG_BULK_MIN:
            return super()._store_accounts(db, inserts, moves, stays)
        pg: Any = db
        if inserts:
            pg.copy_rows("accounts", _ACCOUNT_COLUMNS, inserts)
        updates = [*moves, *stays]
        if updates:
            pg.copy_rows(
                "accounts_in",
                "did, host_id, status, upstream_status, rev, commit_cid, data_cid, updated_ms",
                [(*p[:7], p[8]) for p in updates],
            )
            db.execute(_PG_UPDATE_ACCOUNTS)
            db.execute("DELETE FROM accounts_in")
        return None

    def _add_collections(self, db: Conn, rows: list[tuple[str, str]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._add_collections(db, rows)
        pg: Any = db
        pg.copy_rows("collections_in", "collection, did", rows)
        db.execute(_PG_ADD_COLLECTIONS)
        db.execute("DELETE FROM collections_in")
        return None

    def _insert_events(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._insert_events(db, rows)
        # Binary COPY: a frame (about 2 KB) goes as its bytes, not as twice as many hex digits that
        # the server then parses. Measured on 500-event batches of 2 KB frames (with accounts and
        # collections): ~45k events per client CPU-second and 14-16k events/s committed, against
        # ~30k and 8-10k with text COPY and ~17k and 6-7k with executemany.
        pg: Any = db
        with pg.raw.cursor().copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_EVENT_TYPES)
            for row in rows:
                copy.write_row(row)
        return None


def open_relay_store(
    target: Path | str,
    *,
    synchronous: Synchronous = "FULL",
    schema: str = PG_SCHEMA,
    follower: bool = False,
    partition: tuple[int, int] | None = None,
    sequencer: bool = False,
) -> RelayStore:
    """The relay's store at ``target``: a ``postgresql://`` URL, else a SQLite file or directory.

    ``synchronous`` applies to SQLite (PostgreSQL's durability is the
    server's ``synchronous_commit``); ``schema`` to PostgreSQL; ``follower``
    opens a PostgreSQL store read-only for a fan-out process, ``partition``
    for an ingest process, ``sequencer`` for the sequencer
    (:class:`PostgresRelayStore`), which only PostgreSQL allows (a SQLite
    file has one process).
    """
    if is_database_url(target):
        return PostgresRelayStore(
            str(target), schema=schema, follower=follower, partition=partition, sequencer=sequencer
        )
    if partition is not None or sequencer:
        raise ValueError(
            "ingest and sequencer processes share a relay's store only on PostgreSQL"
            " (--database postgresql://...)"
        )
    if follower:
        raise ValueError(
            "fan-out processes share a relay's store only on PostgreSQL (--database postgresql://...)"
        )
    return SQLiteRelayStore(target, synchronous=synchronous)
