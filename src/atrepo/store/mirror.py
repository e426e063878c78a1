"""The sync consumer's mirror: the records of the repositories it follows, their states and its output log.

``atrepo sync`` (issue 12, sync.md §7-10) keeps, per followed account, every
record (did, collection, rkey, CID, JSON value), the repository's sync state
and last verified commit, and a log of Jetstream-shaped events derived from
the changes. This module is that store, in one SQLite file.

**Exactly-once resumption.** Every writer method is one ``BEGIN IMMEDIATE``
... ``COMMIT`` that carries, beside the record changes, the upstream cursor
that produced them and the events they emit. A crash (``kill -9``) keeps all
of a change or none of it, so a restarted consumer resumes from a cursor that
matches the table exactly: nothing applied twice, nothing skipped.

**Resync without ghosts.** :meth:`MirrorStore.replace_repo` merges a verified
``getRepo`` walk against the stored records of the DID, both in key order: in
the CAR but not the table is a create, a different CID an update, in the table
but not the CAR a *delete* (sync.md §9). Both sides are streamed in chunks,
so a 20k-record repository is never held in memory twice.

**Visibility.** Records stay stored while an account is deactivated, taken
down or suspended; the ``visible_records`` view shows only those of accounts
whose upstream status is ``active``, so reactivation shows them again without
a refetch. Deletion removes them (sync.md §10).

**The event log** feeds the Jetstream v2 endpoint
(``network.bsky.jetstream.subscribeEvents``). Each event's ``time_us`` is its
key and its Jetstream ``seq``: allocated by the store as
``max(now_us, last + 1)`` from a meta row updated in the same transaction, so
it strictly increases and never goes back across restarts, a rolled back write
leaves no trace, and a timestamp cursor (>= 1e15 in the lexicon) and a seq
cursor name the same position. Payloads are the v2 message objects (with their
``$type``), compact JSON, as the MarshalX SDK's Jetstream client parses them.

**Durability and threads** are the relay's (:mod:`atrepo.store.sqlitefile`): WAL,
``synchronous=FULL`` by default, one writer connection guarded by a lock, one
``query_only`` read connection per thread, an ``flock``'d ``<file>.lock``
(:class:`StoreInUse` for a second opener), schema by ``PRAGMA user_version``.
:meth:`MirrorStore.group_commit` lets the store worker commit several queued
writes with one fsync, each a savepoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _q  # a JSON string literal, quoted (C)
from pathlib import Path
from typing import Any, Final, Literal

from atrepo.core.cid import CID
from atrepo.core.datamodel import json_to_value, value_to_json
from atrepo.core.errors import WriteAborted

from .dbfile import Conn, DatabaseFile, is_database_url
from .pgfile import PgConnection, PostgresFile
from .sqlitefile import SQLiteFile

__all__ = [
    "JETSTREAM_NSID",
    "MIRROR_DB_FILENAME",
    "REPO_STATES",
    "MirrorEvent",
    "MirrorRecord",
    "MirrorRepo",
    "MirrorStore",
    "PostgresMirrorStore",
    "RecordOp",
    "ReplaceResult",
    "SQLiteMirrorStore",
    "digest_records",
    "open_mirror",
]

#: The database's name when ``MirrorStore`` is given a directory.
MIRROR_DB_FILENAME: Final = "mirror.sqlite3"
#: The sync state machine's states of a repository (issue 12; sync.md §9).
REPO_STATES: Final = ("pending", "backfilling", "active", "desynchronized", "resyncing", "error")
#: The Jetstream v2 lexicon; events' ``$type`` is ``<this>#<kind>``.
JETSTREAM_NSID: Final = "network.bsky.jetstream.subscribeEvents"
#: Event kinds this store writes.
EVENT_KINDS: Final = ("commit", "identity", "account")

_ACTIONS: Final = frozenset({"create", "update", "delete"})
#: Rows read or written per statement in the streamed paths (replace, delete, digest).
_CHUNK: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Synchronous = Literal["FULL", "NORMAL"]


# --- rows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirrorRepo:
    """A followed repository: its sync ``state`` (one of :data:`REPO_STATES`) and upstream ``account_status``.

    ``account_status`` is ``active`` or the upstream's reason it is not
    (takendown, suspended, deactivated, deleted, ...). ``rev``/``data``/
    ``commit`` are the last verified commit applied; ``host`` the PDS endpoint
    it was last fetched from; ``error``/``retry_at_ms`` the last failure and
    when to try again.
    """

    did: str
    state: str
    account_status: str
    rev: str | None
    data: CID | None
    commit: CID | None
    host: str | None
    error: str | None
    retry_at_ms: int | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class RecordOp:
    """One change to apply: ``cid`` and ``value`` (the decoded DAG-CBOR record) are None for a delete."""

    action: str
    collection: str
    rkey: str
    cid: CID | None
    value: Any


@dataclass(frozen=True, slots=True)
class MirrorEvent:
    """One event of the output log: ``payload`` is the Jetstream v2 message as compact JSON text.

    ``time_us`` is the store-assigned key (strictly increasing) and the
    message's ``seq``; ``collection`` is set for commit events only.
    """

    time_us: int
    did: str
    kind: str
    collection: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    """A stored record: ``value`` is the data-model value (CIDs and bytes back from ``$link``/``$bytes``)."""

    did: str
    collection: str
    rkey: str
    cid: CID
    value: Any
    indexed_at_ms: int


@dataclass(frozen=True, slots=True)
class ReplaceResult:
    """What :meth:`MirrorStore.replace_repo` changed, and the events it emitted (none without ``emit``)."""

    created: int
    updated: int
    deleted: int
    unchanged: int
    events: list[MirrorEvent]


# --- schema ----------------------------------------------------------------------------

_V1 = """
CREATE TABLE repos (
    did TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'backfilling', 'active', 'desynchronized', 'resyncing', 'error')),
    account_status TEXT NOT NULL,
    rev TEXT,
    data_cid BLOB,
    commit_cid BLOB,
    host TEXT,
    error TEXT,
    retry_at_ms INTEGER,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX repos_by_state ON repos (state, did);

CREATE TABLE records (
    did TEXT NOT NULL,
    collection TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid BLOB NOT NULL,
    value TEXT NOT NULL,
    indexed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID;
CREATE INDEX records_by_collection ON records (collection, did);

CREATE VIEW visible_records AS
    SELECT r.did, r.collection, r.rkey, r.cid, r.value, r.indexed_at_ms
    FROM records AS r JOIN repos AS p ON p.did = r.did
    WHERE p.account_status = 'active';

CREATE TABLE cursors (source TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;

-- time_us is the rowid: pruning by time deletes a prefix of the table's own b-tree.
CREATE TABLE events (
    time_us INTEGER PRIMARY KEY,
    did TEXT NOT NULL,
    kind TEXT NOT NULL,
    collection TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX events_by_did ON events (did, time_us);

-- The last event time handed out: a row, not MAX(time_us), so that pruning
-- the log never lets a time come back; updated inside the emitting transaction.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_time_us INTEGER NOT NULL
);
INSERT INTO meta (id, last_time_us) VALUES (1, 0);
"""

# The retention floor: events before it may have been pruned (Jetstream's CursorTooOld/OutdatedCursor).
_V2 = "ALTER TABLE meta ADD COLUMN floor_time_us INTEGER NOT NULL DEFAULT 0;"

#: ``_MIGRATIONS[n]`` upgrades a file at ``user_version`` n to n + 1. Append, never edit.
_MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

# The same tables on PostgreSQL. Text keys compare as bytes (COLLATE "C"), as SQLite's do: the
# resync merge and every ORDER BY depend on it. ``value`` stays the exact JSON text (not jsonb,
# which rejects a \u0000 that a record's string may hold); ``value::jsonb`` works in queries.
_PG_V1 = """
CREATE TABLE repos (
    did TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'backfilling', 'active', 'desynchronized', 'resyncing', 'error')),
    account_status TEXT NOT NULL,
    rev TEXT COLLATE "C",
    data_cid BYTEA,
    commit_cid BYTEA,
    host TEXT,
    error TEXT,
    retry_at_ms BIGINT,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX repos_by_state ON repos (state, did);

CREATE TABLE records (
    did TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    rkey TEXT COLLATE "C" NOT NULL,
    cid BYTEA NOT NULL,
    value TEXT NOT NULL,
    indexed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (did, collection, rkey)
);
CREATE INDEX records_by_collection ON records (collection, did);

CREATE VIEW visible_records AS
    SELECT r.did, r.collection, r.rkey, r.cid, r.value, r.indexed_at_ms
    FROM records AS r JOIN repos AS p ON p.did = r.did
    WHERE p.account_status = 'active';

CREATE TABLE cursors (source TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL);

CREATE TABLE events (
    time_us BIGINT PRIMARY KEY,
    did TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    collection TEXT COLLATE "C",
    payload TEXT NOT NULL
);
CREATE INDEX events_by_did ON events (did, time_us);

CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_time_us BIGINT NOT NULL
);
INSERT INTO meta (id, last_time_us) VALUES (1, 0);
"""

#: The PostgreSQL schema's migrations, numbered as ``_MIGRATIONS`` (the same versions, the same tables).
_PG_MIGRATIONS: Final[tuple[str, ...]] = (
    _PG_V1,
    "ALTER TABLE meta ADD COLUMN floor_time_us BIGINT NOT NULL DEFAULT 0;",
)
#: The PostgreSQL schema the mirror's tables live in (another store may share the database).
PG_SCHEMA: Final = "atrepo_mirror"

_REPO_COLUMNS: Final = (
    "did, state, account_status, rev, data_cid, commit_cid, host, error, retry_at_ms, updated_ms"
)
#: ``set_repo`` keyword -> column.
_REPO_FIELDS: Final = {
    "state": "state",
    "account_status": "account_status",
    "rev": "rev",
    "data": "data_cid",
    "commit": "commit_cid",
    "host": "host",
    "error": "error",
    "retry_at_ms": "retry_at_ms",
    "updated_ms": "updated_ms",
}
_UPSERT_RECORD: Final = (
    "INSERT INTO records (did, collection, rkey, cid, value, indexed_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (did, collection, rkey) DO UPDATE SET"
    " cid = excluded.cid, value = excluded.value, indexed_at_ms = excluded.indexed_at_ms"
)
_DELETE_RECORD: Final = "DELETE FROM records WHERE did = ? AND collection = ? AND rkey = ?"
_INSERT_EVENT: Final = "INSERT INTO events (time_us, did, kind, collection, payload) VALUES (?, ?, ?, ?, ?)"
# PostgreSQL, rows in bulk: COPY into a per-connection temporary table, then one statement. COPY costs
# the client about a sixth of the CPU of executemany or unnest() arrays (measured with psycopg 3).
_PG_BULK_MIN: Final = 16
_PG_TEMP_TABLES: Final = (
    "CREATE TEMPORARY TABLE records_in (LIKE records) ON COMMIT DELETE ROWS;"
    ' CREATE TEMPORARY TABLE records_gone (did TEXT COLLATE "C", collection TEXT COLLATE "C",'
    ' rkey TEXT COLLATE "C") ON COMMIT DELETE ROWS'
)
_RECORD_COLUMNS: Final = "did, collection, rkey, cid, value, indexed_at_ms"
_EVENT_COLUMNS: Final = "time_us, did, kind, collection, payload"
_PG_UPSERT_FROM_TEMP: Final = (
    f"INSERT INTO records ({_RECORD_COLUMNS}) SELECT {_RECORD_COLUMNS} FROM records_in"
    " ON CONFLICT (did, collection, rkey) DO UPDATE SET"
    " cid = excluded.cid, value = excluded.value, indexed_at_ms = excluded.indexed_at_ms"
)
_PG_DELETE_FROM_TEMP: Final = (
    "DELETE FROM records AS r USING records_gone AS d"
    " WHERE r.did = d.did AND r.collection = d.collection AND r.rkey = d.rkey"
)


def _wall_us() -> int:
    return _time.time_ns() // 1000


def _cid(raw: Any) -> CID | None:
    return CID(bytes(raw)) if raw is not None else None


def _raw(cid: CID | None) -> bytes | None:
    return cid.raw if cid is not None else None


def _repo(row: Any) -> MirrorRepo:
    did, state, status, rev, data, commit, host, error, retry_at_ms, updated_ms = row
    return MirrorRepo(did, state, status, rev, _cid(data), _cid(commit), host, error, retry_at_ms, updated_ms)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _value_json(value: Any) -> str:
    """A data-model value as the AT JSON form (``$link``, ``$bytes``), compact."""
    return _dumps(value_to_json(value))


def _iso_us(time_us: int) -> str:
    """``time_us`` as an RFC 3339 datetime with microseconds (the lexicon's ``time``)."""
    seconds, micros = divmod(time_us, 1_000_000)
    return f"{_iso_seconds(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=64)
def _iso_seconds(seconds: int) -> str:
    """The whole-second part of :func:`_iso_us`: events of one second share it (strftime is slow)."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def _path_key(collection: str) -> str:
    """Sort key of a collection in repository (MST) key order: keys are ``collection/rkey`` bytes."""
    return collection + "/"


def _line(collection: str, rkey: str, cid: CID | str) -> bytes:
    return f"{collection}/{rkey} {cid}\n".encode()


def digest_records(entries: Iterable[tuple[str, str, CID | str]]) -> str:
    """The digest :meth:`MirrorStore.records_digest` computes, of any (collection, rkey, cid) entries.

    sha256 (hex) over ``"collection/rkey cid\\n"`` lines in repository key
    order (the entries are sorted here, so a host's ``getRepo`` walk or a dict
    gives the same digest as the mirror).
    """
    digest = hashlib.sha256()
    for collection, rkey, cid in sorted(entries, key=lambda e: f"{e[0]}/{e[1]}".encode()):
        digest.update(_line(collection, rkey, cid))
    return digest.hexdigest()


def _collection_clause(store: DatabaseFile[Any], patterns: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL matching ``collection`` against NSIDs and ``prefix.*`` patterns (a range, not ``LIKE``).

    ``LIKE`` is case-insensitive and treats ``_`` as a wildcard; a prefix
    ``a.b.*`` is instead the range ``['a.b.', 'a.b/')`` (``/`` follows ``.``).
    """
    exact = [p for p in patterns if not p.endswith(".*")]
    prefixes = [p[:-1] for p in patterns if p.endswith(".*")]
    parts: list[str] = []
    params: list[Any] = []
    if exact:
        clause, more = store.in_list("collection", exact)
        parts.append(clause)
        params += more
    for prefix in prefixes:
        parts.append("(collection >= ? AND collection < ?)")
        params += [prefix, prefix[:-1] + "/"]
    return "(" + " OR ".join(parts) + ")", params


class MirrorStore(DatabaseFile[Any]):
    """The mirror of ``atrepo sync``: its writers and readers, over SQLite or PostgreSQL.

    Open one with :func:`open_mirror` (a path or a ``postgresql://`` URL), or
    :class:`SQLiteMirrorStore` / :class:`PostgresMirrorStore` directly. Either
    raises :class:`StoreInUse` when another process has the same mirror open.
    ``now_us`` (wall-clock microseconds) is injectable for tests; event times
    never go back whatever it returns.
    """

    _now_us: Callable[[], int]
    _group_open: bool = False
    _in_savepoint: bool = False

    def _init_mirror(self, now_us: Callable[[], int]) -> None:
        self._now_us = now_us
        self._group_open = False
        self._in_savepoint = False

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """The writer inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a savepoint in a :meth:`group_commit`."""
        if self._write_owner == threading.get_ident() and self._group_open and not self._in_savepoint:
            yield from self._savepoint()
            return
        with super()._write() as db:
            yield db

    def _savepoint(self) -> Iterator[Conn]:
        db = self._writer
        if not db.in_transaction:
            raise WriteAborted("the group commit's transaction was rolled back by an earlier error")
        self._in_savepoint = True
        db.execute("SAVEPOINT job")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK TO job")
                db.execute("RELEASE job")
            raise
        else:
            db.execute("RELEASE job")
        finally:
            self._in_savepoint = False

    @property
    def group_aborted(self) -> bool:
        """Inside a group: an error ended its transaction, so every job of the group has failed."""
        return self._group_open and not self._writer.in_transaction

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """One transaction (one fsync) for several writes run in it, each a savepoint that fails alone.

        Used by :class:`atrepo.store.worker.StoreWorker` when writes queue up;
        nothing is acknowledged before the group's ``COMMIT`` returns, so a
        cursor stored by an acknowledged write survives ``kill -9``.
        """
        with super()._write() as db:
            self._group_open = True
            try:
                yield
                if not db.in_transaction:
                    raise WriteAborted("the group commit's transaction was rolled back by an error")
            finally:
                self._group_open = False

    def __enter__(self) -> MirrorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers inside a write ---------------------------------------------------------

    # Rows in bulk (a resync writes thousands): one statement per row on SQLite, where a statement
    # is a function call; PostgreSQL overrides them with one statement per chunk.

    def _upsert_records(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """(did, collection, rkey, cid, value, indexed_at_ms) rows; the keys are distinct."""
        db.executemany(_UPSERT_RECORD, rows)

    def _insert_records(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """Rows as :meth:`_upsert_records`, whose keys the caller knows are not stored (the writer's own
        merge read them absent): PostgreSQL copies them straight into the table."""
        db.executemany(_UPSERT_RECORD, rows)

    def _delete_records(self, db: Conn, rows: list[tuple[str, str, str]]) -> None:
        """(did, collection, rkey) rows."""
        db.executemany(_DELETE_RECORD, rows)

    def _insert_events(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        """(time_us, did, kind, collection, payload) rows."""
        db.executemany(_INSERT_EVENT, rows)

    def _now_ms(self) -> int:
        return self._now_us() // 1000

    @staticmethod
    def _set_cursor(db: Conn, cursor: tuple[str, int] | None) -> None:
        if cursor is not None:
            source, seq = cursor
            db.execute(
                "INSERT INTO cursors (source, seq) VALUES (?, ?)"
                " ON CONFLICT (source) DO UPDATE SET seq = excluded.seq",
                (source, seq),
            )

    def _ensure_repo(self, db: Conn, did: str, now_ms: int) -> None:
        db.execute(
            "INSERT INTO repos (did, state, account_status, updated_ms)"
            " VALUES (?, 'pending', 'active', ?) ON CONFLICT (did) DO NOTHING",
            (did, now_ms),
        )

    class _Emitter:
        """Allocates event times inside one write and collects the rows to insert at its end."""

        __slots__ = ("db", "events", "last", "now", "store")

        def __init__(self, db: Conn, now_us: int, store: MirrorStore) -> None:
            self.db = db
            self.now = now_us
            self.store = store
            (self.last,) = db.execute(
                f"SELECT last_time_us FROM meta WHERE id = 1{store.for_update}"
            ).fetchone()
            self.events: list[MirrorEvent] = []

        def next_time(self) -> int:
            self.last = max(self.now, self.last + 1)
            return int(self.last)

        def add(self, time_us: int, did: str, kind: str, collection: str | None, payload: str) -> MirrorEvent:
            event = MirrorEvent(time_us, did, kind, collection, payload)
            self.events.append(event)
            return event

        def flush(self, start: int = 0) -> None:
            """Insert the events from ``start`` on and move the meta row (called once per chunk)."""
            rows = [(e.time_us, e.did, e.kind, e.collection, e.payload) for e in self.events[start:]]
            if rows:
                self.store._insert_events(self.db, rows)
                self.db.execute("UPDATE meta SET last_time_us = ? WHERE id = 1", (self.last,))

        def commit_event(
            self,
            did: str,
            rev: str,
            operation: str,
            collection: str,
            rkey: str,
            cid: CID | None,
            record_json: str | None,
            time: str | None,
        ) -> MirrorEvent:
            time_us = self.next_time()
            # Built by hand from escaped strings: this runs once per record of a backfill.
            head = (
                f'{{"$type":"{JETSTREAM_NSID}#commit","seq":{time_us},"did":{_q(did)},'
                f'"time":{_q(time or _iso_us(time_us))},"rev":{_q(rev)},"operation":{_q(operation)},'
                f'"collection":{_q(collection)},"rkey":{_q(rkey)}'
            )
            if record_json is not None and cid is not None:
                payload = f'{head},"record":{record_json},"cid":"{cid}"}}'
            else:
                payload = head + "}"
            return self.add(time_us, did, "commit", collection, payload)

        def account_event(self, did: str, status: str, seq: int | None, time: str | None) -> MirrorEvent:
            time_us = self.next_time()
            now = _iso_us(time_us)
            inner: dict[str, Any] = {
                "seq": seq or 0,
                "did": did,
                "time": time or now,
                "active": status == "active",
            }
            if status != "active":
                inner["status"] = status
            message = {
                "$type": f"{JETSTREAM_NSID}#account",
                "seq": time_us,
                "did": did,
                "time": now,
                "account": inner,
            }
            return self.add(time_us, did, "account", None, _dumps(message))

        def identity_event(self, did: str, handle: str | None, seq: int, time: str) -> MirrorEvent:
            time_us = self.next_time()
            inner: dict[str, Any] = {"seq": seq, "did": did, "time": time}
            if handle is not None:
                inner["handle"] = handle
            message = {
                "$type": f"{JETSTREAM_NSID}#identity",
                "seq": time_us,
                "did": did,
                "time": _iso_us(time_us),
                "identity": inner,
            }
            return self.add(time_us, did, "identity", None, _dumps(message))

    # --- writers ------------------------------------------------------------------------

    def apply_commit(
        self,
        did: str,
        *,
        rev: str,
        data: CID,
        commit: CID,
        ops: Sequence[RecordOp],
        cursor: tuple[str, int] | None,
        emit: bool = True,
        time: str | None = None,
    ) -> list[MirrorEvent]:
        """*Writer.* One transaction: apply a verified commit's ops, move the repo's head and the cursor.

        create/update upsert the record, delete removes it; the repo row
        (created ``active``/``active`` if unknown) gets ``rev``/``data``/
        ``commit``; ``cursor`` is (source, seq). With ``emit`` one commit
        event per op is appended; ``time`` (RFC 3339), when given, is the
        events' display ``time`` instead of the witnessed one. Returns the events.
        """
        for op in ops:
            if op.action not in _ACTIONS:
                raise ValueError(f"record op action must be create, update or delete, not {op.action!r}")
            if op.action != "delete" and op.cid is None:
                raise ValueError(f"a {op.action} op needs a cid ({op.collection}/{op.rkey})")
        now_us = self._now_us()
        now_ms = now_us // 1000
        with self._write() as db:
            emitter = self._Emitter(db, now_us, self) if emit else None
            upserts: list[tuple[Any, ...]] = []
            for op in ops:
                if op.action == "delete":
                    if upserts:
                        self._upsert_records(db, upserts)
                        upserts = []
                    db.execute(_DELETE_RECORD, (did, op.collection, op.rkey))
                    if emitter is not None:
                        emitter.commit_event(did, rev, "delete", op.collection, op.rkey, None, None, time)
                    continue
                assert op.cid is not None
                record_json = _value_json(op.value)
                upserts.append((did, op.collection, op.rkey, op.cid.raw, record_json, now_ms))
                if emitter is not None:
                    emitter.commit_event(
                        did, rev, op.action, op.collection, op.rkey, op.cid, record_json, time
                    )
            if upserts:
                self._upsert_records(db, upserts)
            db.execute(
                "INSERT INTO repos (did, state, account_status, rev, data_cid, commit_cid, updated_ms)"
                " VALUES (?, 'active', 'active', ?, ?, ?, ?) ON CONFLICT (did) DO UPDATE SET"
                " rev = excluded.rev, data_cid = excluded.data_cid, commit_cid = excluded.commit_cid,"
                " updated_ms = excluded.updated_ms",
                (did, rev, data.raw, commit.raw, now_ms),
            )
            self._set_cursor(db, cursor)
            if emitter is None:
                return []
            emitter.flush()
            return emitter.events

    def replace_repo(
        self,
        did: str,
        *,
        rev: str,
        data: CID,
        commit: CID,
        records: Iterable[tuple[str, str, CID, Any]],
        cursor: tuple[str, int] | None = None,
        emit: bool = True,
    ) -> ReplaceResult:
        """*Writer.* One transaction: make the DID's records exactly ``records`` (a verified walk), by merge.

        ``records`` are (collection, rkey, cid, value) in repository key order
        (``collection/rkey`` bytes, as a ``getRepo`` walk yields them; plain
        (collection, rkey) order is accepted too): each collection's keys must
        be contiguous and their rkeys strictly increasing, else ``ValueError``
        and nothing changes. Stored rows are read per collection in chunks and
        writes go out in chunks, so memory stays bounded by the chunk size
        (plus the returned events). In the walk but not stored: create; CID
        differs: update; stored but not in the walk: delete. ``value`` is only
        encoded for creates and updates. With ``emit`` a commit event is
        appended per change (a first backfill emits its creates too, as
        Jetstream would); ``emit=False`` appends none. The repo becomes
        ``active`` at ``rev``/``data``/``commit`` with its error cleared.
        """
        now_us = self._now_us()
        now_ms = now_us // 1000
        created = updated = deleted = unchanged = 0
        with self._write() as db:
            emitter = self._Emitter(db, now_us, self) if emit else None
            flushed = 0
            upserts: list[tuple[Any, ...]] = []
            creates: list[tuple[Any, ...]] = []  # keys the merge found absent: no conflict possible
            deletes: list[tuple[str, str, str]] = []

            def flush(force: bool = False) -> None:
                nonlocal upserts, creates, deletes, flushed
                if deletes and (force or len(deletes) >= _CHUNK):
                    self._delete_records(db, deletes)
                    deletes = []
                if upserts and (force or len(upserts) >= _CHUNK):
                    self._upsert_records(db, upserts)
                    upserts = []
                if creates and (force or len(creates) >= _CHUNK):
                    self._insert_records(db, creates)
                    creates = []
                if emitter is not None and (force or len(emitter.events) - flushed >= _CHUNK):
                    emitter.flush(flushed)
                    flushed = len(emitter.events)

            def delete(collection: str, rkey: str) -> None:
                nonlocal deleted
                deleted += 1
                deletes.append((did, collection, rkey))
                if emitter is not None:
                    emitter.commit_event(did, rev, "delete", collection, rkey, None, None, None)
                flush()

            def stored(collection: str) -> Iterator[tuple[str, bytes]]:
                """The stored (rkey, cid) of a collection in rkey order, a chunk per query.

                A chunk is fetched only when the merge needs a key past the
                last one read, so creates written meanwhile (all below that
                key) are never read back as stored rows.
                """
                after = ""
                query = (
                    "SELECT rkey, cid FROM records WHERE did = ? AND collection = ? AND rkey > ?"
                    " ORDER BY rkey LIMIT ?"
                )
                while True:
                    rows = db.execute(query, (did, collection, after, _CHUNK)).fetchall()
                    for rkey, cid in rows:
                        yield rkey, bytes(cid)
                    if len(rows) < _CHUNK:
                        return
                    after = rows[-1][0]

            seen: set[str] = set()
            current: str | None = None
            head: tuple[str, bytes] | None = None
            rows_of: Iterator[tuple[str, bytes]] = iter(())
            last_rkey = ""

            def finish_collection() -> None:
                nonlocal head
                assert current is not None
                while head is not None:
                    delete(current, head[0])
                    head = next(rows_of, None)

            for collection, rkey, cid, value in records:
                if collection != current:
                    if current is not None:
                        finish_collection()
                    if collection in seen:
                        raise ValueError(
                            f"replace_repo: records of {collection} are not contiguous (not in key order)"
                        )
                    seen.add(collection)
                    current = collection
                    rows_of = stored(collection)
                    head = next(rows_of, None)
                    last_rkey = ""
                elif rkey <= last_rkey:
                    raise ValueError(
                        f"replace_repo: {collection}/{rkey} is not after {collection}/{last_rkey}"
                    )
                last_rkey = rkey
                while head is not None and head[0] < rkey:
                    delete(collection, head[0])
                    head = next(rows_of, None)
                if head is not None and head[0] == rkey:
                    same = head[1] == cid.raw
                    head = next(rows_of, None)
                    if same:
                        unchanged += 1
                        continue
                    operation = "update"
                    updated += 1
                else:
                    operation = "create"
                    created += 1
                record_json = _value_json(value)
                row = (did, collection, rkey, cid.raw, record_json, now_ms)
                (creates if operation == "create" else upserts).append(row)
                if emitter is not None:
                    emitter.commit_event(did, rev, operation, collection, rkey, cid, record_json, None)
                flush()
            if current is not None:
                finish_collection()
            # Whole collections the walk no longer has.
            stale = [
                row[0]
                for row in db.execute("SELECT DISTINCT collection FROM records WHERE did = ?", (did,))
                if row[0] not in seen
            ]
            for collection in sorted(stale, key=_path_key):
                for rkey, _ in stored(collection):
                    delete(collection, rkey)
            flush(force=True)
            db.execute(
                "INSERT INTO repos (did, state, account_status, rev, data_cid, commit_cid, updated_ms)"
                " VALUES (?, 'active', 'active', ?, ?, ?, ?) ON CONFLICT (did) DO UPDATE SET"
                " state = 'active', rev = excluded.rev, data_cid = excluded.data_cid,"
                " commit_cid = excluded.commit_cid, error = NULL, retry_at_ms = NULL,"
                " updated_ms = excluded.updated_ms",
                (did, rev, data.raw, commit.raw, now_ms),
            )
            self._set_cursor(db, cursor)
            events = emitter.events if emitter is not None else []
        return ReplaceResult(created, updated, deleted, unchanged, events)

    def set_repo(self, did: str, **fields: Any) -> MirrorRepo:
        """*Writer.* Upsert a repo's fields (the :class:`MirrorRepo` names; ``data``/``commit`` as CIDs).

        A new row starts ``pending``/``active``; ``updated_ms`` is now unless
        given. Unknown fields and states raise ``ValueError``.
        """
        unknown = set(fields) - set(_REPO_FIELDS)
        if unknown:
            raise ValueError(f"set_repo: unknown fields {sorted(unknown)}")
        if "state" in fields and fields["state"] not in REPO_STATES:
            raise ValueError(f"repo state must be one of {REPO_STATES}, not {fields['state']!r}")
        if fields.get("account_status", "active") is None:
            raise ValueError("account_status cannot be None")
        values = dict(fields)
        values.setdefault("updated_ms", self._now_ms())
        for name in ("data", "commit"):
            if name in values:
                values[name] = _raw(values[name])
        with self._write() as db:
            self._ensure_repo(db, did, values["updated_ms"])
            sets = ", ".join(f"{_REPO_FIELDS[name]} = ?" for name in values)
            db.execute(f"UPDATE repos SET {sets} WHERE did = ?", (*values.values(), did))
            row = db.execute(f"SELECT {_REPO_COLUMNS} FROM repos WHERE did = ?", (did,)).fetchone()
        return _repo(row)

    def set_account_status(
        self, did: str, status: str, *, emit: bool = True, time: str | None = None, seq: int | None = None
    ) -> list[MirrorEvent]:
        """*Writer.* Record the upstream account status; with ``emit`` append a Jetstream ``#account`` event.

        Records stay stored (``visible_records`` hides them while not
        active); ``deleted`` removes them, as :meth:`delete_repo`. ``seq`` and
        ``time`` are the upstream event's, carried in the inner ``account``.
        """
        if status == "deleted":
            return self.delete_repo(did, emit=emit, time=time, seq=seq)
        if not status:
            raise ValueError("an account status cannot be empty")
        now_us = self._now_us()
        with self._write() as db:
            self._ensure_repo(db, did, now_us // 1000)
            db.execute(
                "UPDATE repos SET account_status = ?, updated_ms = ? WHERE did = ?",
                (status, now_us // 1000, did),
            )
            if not emit:
                return []
            emitter = self._Emitter(db, now_us, self)
            emitter.account_event(did, status, seq, time)
            emitter.flush()
            return emitter.events

    def delete_repo(
        self, did: str, *, emit: bool = True, time: str | None = None, seq: int | None = None
    ) -> list[MirrorEvent]:
        """*Writer.* The account is deleted: remove its records, mark it ``deleted``, forget its head.

        The repo row stays (status ``deleted``) so that the consumer knows
        the DID. With ``emit`` one ``#account`` event (active false, status
        deleted) is appended, as Jetstream does, not one delete per record.
        """
        now_us = self._now_us()
        with self._write() as db:
            self._ensure_repo(db, did, now_us // 1000)
            db.execute("DELETE FROM records WHERE did = ?", (did,))
            db.execute(
                "UPDATE repos SET account_status = 'deleted', rev = NULL, data_cid = NULL, commit_cid = NULL,"
                " updated_ms = ? WHERE did = ?",
                (now_us // 1000, did),
            )
            if not emit:
                return []
            emitter = self._Emitter(db, now_us, self)
            emitter.account_event(did, "deleted", seq, time)
            emitter.flush()
            return emitter.events

    def add_identity_event(self, did: str, handle: str | None, seq: int, time: str) -> MirrorEvent:
        """*Writer.* Append a Jetstream ``#identity`` event (``seq``/``time`` are the upstream event's)."""
        with self._write() as db:
            emitter = self._Emitter(db, self._now_us(), self)
            event = emitter.identity_event(did, handle, seq, time)
            emitter.flush()
        return event

    def set_cursor(self, source: str, seq: int) -> None:
        """*Writer.* Move a source's cursor alone (events that changed nothing, e.g. of untracked repos)."""
        with self._write() as db:
            self._set_cursor(db, (source, seq))

    def prune_events(self, before_us: int) -> int:
        """*Writer.* Delete the events older than ``before_us`` (a prefix of the log); returns how many.

        The retention floor (:meth:`floor_time_us`) becomes one past the
        newest event deleted: exactly the first position from which every
        event is still kept (a prune that deletes nothing leaves it).
        """
        with self._write() as db:
            (newest,) = db.execute(
                "SELECT MAX(time_us) FROM events WHERE time_us < ?", (before_us,)
            ).fetchone()
            if newest is None:
                return 0
            deleted = int(db.execute("DELETE FROM events WHERE time_us <= ?", (newest,)).rowcount)
            db.execute(
                "UPDATE meta SET floor_time_us = ? WHERE id = 1 AND floor_time_us < ?",
                (newest + 1, newest + 1),
            )
            return deleted

    # --- readers ------------------------------------------------------------------------

    def get_repo(self, did: str) -> MirrorRepo | None:
        row = self._read().execute(f"SELECT {_REPO_COLUMNS} FROM repos WHERE did = ?", (did,)).fetchone()
        return _repo(row) if row is not None else None

    def list_repos(
        self, *, state: str | None = None, after: str | None = None, limit: int = 500
    ) -> list[MirrorRepo]:
        """Repos by DID after ``after``, only those in ``state`` when given."""
        query = f"SELECT {_REPO_COLUMNS} FROM repos WHERE did > ?"
        params: list[Any] = [after or ""]
        if state is not None:
            query += " AND state = ?"
            params.append(state)
        query += " ORDER BY did LIMIT ?"
        params.append(limit)
        return [_repo(row) for row in self._read().execute(query, params)]

    def count_repos(self) -> dict[str, int]:
        """Repos per sync state, every state present (zeros included)."""
        counts = dict.fromkeys(REPO_STATES, 0)
        for state, count in self._read().execute("SELECT state, COUNT(*) FROM repos GROUP BY state"):
            counts[state] = int(count)
        return counts

    def get_cursor(self, source: str) -> int | None:
        row = self._read().execute("SELECT seq FROM cursors WHERE source = ?", (source,)).fetchone()
        return int(row[0]) if row is not None else None

    @staticmethod
    def _record(row: Any) -> MirrorRecord:
        did, collection, rkey, cid, value, indexed_at_ms = row
        return MirrorRecord(
            did,
            collection,
            rkey,
            CID(bytes(cid)),
            json_to_value(json.loads(value), top_level_object=False),
            indexed_at_ms,
        )

    def get_record(self, did: str, collection: str, rkey: str) -> MirrorRecord | None:
        row = (
            self._read()
            .execute(
                "SELECT did, collection, rkey, cid, value, indexed_at_ms FROM records"
                " WHERE did = ? AND collection = ? AND rkey = ?",
                (did, collection, rkey),
            )
            .fetchone()
        )
        return self._record(row) if row is not None else None

    def list_records(self, did: str, collection: str | None = None) -> list[MirrorRecord]:
        """The DID's records (of ``collection`` when given) in (collection, rkey) order."""
        query = "SELECT did, collection, rkey, cid, value, indexed_at_ms FROM records WHERE did = ?"
        params: list[Any] = [did]
        if collection is not None:
            query += " AND collection = ?"
            params.append(collection)
        query += " ORDER BY collection, rkey"
        return [self._record(row) for row in self._read().execute(query, params)]

    def records_digest(self, did: str, *, visible_only: bool = False) -> str:
        """sha256 over ``"collection/rkey cid\\n"`` lines in repository key order (:func:`digest_records`).

        Streamed: collections in key order, each read in rkey order from the
        primary key. ``visible_only``: an account that is not active has none.
        """
        db = self._read()
        digest = hashlib.sha256()
        # One read transaction, so the digest sees one state of the table.
        db.execute(self.snapshot_begin)
        try:
            if visible_only:
                row = db.execute("SELECT account_status FROM repos WHERE did = ?", (did,)).fetchone()
                if row is None or row[0] != "active":
                    return digest.hexdigest()
            collections = [
                r[0] for r in db.execute("SELECT DISTINCT collection FROM records WHERE did = ?", (did,))
            ]
            query = "SELECT rkey, cid FROM records WHERE did = ? AND collection = ? ORDER BY rkey"
            for collection in sorted(collections, key=lambda c: _path_key(c).encode()):
                for rkey, cid in db.execute(query, (did, collection)):
                    digest.update(_line(collection, rkey, CID(bytes(cid))))
            return digest.hexdigest()
        finally:
            db.execute("COMMIT")

    def read_events(
        self,
        after_us: int,
        limit: int,
        *,
        dids: Sequence[str] | None = None,
        collections: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[MirrorEvent]:
        """Events with ``time_us > after_us`` in order, at most ``limit``, filtered as Jetstream does.

        Each filter is match-all when None or empty, and they are ANDed:
        ``dids`` applies to every kind; ``collections`` (NSIDs or
        ``prefix.*`` patterns) constrains commit events only; ``kinds`` the
        event kinds.
        """
        query = "SELECT time_us, did, kind, collection, payload FROM events WHERE time_us > ?"
        params: list[Any] = [after_us]
        if dids:
            clause, more = self.in_list("did", dids)
            query += f" AND {clause}"
            params += more
        if kinds:
            clause, more = self.in_list("kind", kinds)
            query += f" AND {clause}"
            params += more
        if collections:
            clause, more = _collection_clause(self, collections)
            query += f" AND (kind != 'commit' OR {clause})"
            params += more
        query += " ORDER BY time_us LIMIT ?"
        params.append(limit)
        return [MirrorEvent(*row) for row in self._read().execute(query, params)]

    def floor_time_us(self) -> int:
        """The retention floor: events before it may have been pruned (0 while nothing ever was)."""
        (floor,) = self._read().execute("SELECT floor_time_us FROM meta WHERE id = 1").fetchone()
        return int(floor)

    def head_time_us(self) -> int:
        """The last event time ever allocated (0 for none): never goes back, even after pruning."""
        (last,) = self._read().execute("SELECT last_time_us FROM meta WHERE id = 1").fetchone()
        return int(last)

    def oldest_time_us(self) -> int | None:
        (oldest,) = self._read().execute("SELECT MIN(time_us) FROM events").fetchone()
        return int(oldest) if oldest is not None else None

    def stats(self) -> dict[str, int]:
        """Counts for the progress display and ``/metrics``.

        ``repos`` and ``repos_<state>``; ``accounts_inactive`` (status not
        active); ``records`` (a count over the records table: it costs a scan
        of its smallest index, run it every few seconds, not per event);
        ``events``, ``oldest_time_us`` and ``head_time_us``; ``cursors``.
        """
        db = self._read()
        out: dict[str, int] = {}
        counts = self.count_repos()
        for state, count in counts.items():
            out[f"repos_{state}"] = count
        out["repos"] = sum(counts.values())
        (inactive,) = db.execute("SELECT COUNT(*) FROM repos WHERE account_status != 'active'").fetchone()
        out["accounts_inactive"] = int(inactive)
        (records,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        out["records"] = int(records)
        (events,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        out["events"] = int(events)
        out["oldest_time_us"] = self.oldest_time_us() or 0
        out["head_time_us"] = self.head_time_us()
        out["floor_time_us"] = self.floor_time_us()
        (cursors,) = db.execute("SELECT COUNT(*) FROM cursors").fetchone()
        out["cursors"] = int(cursors)
        return out


class SQLiteMirrorStore(MirrorStore, SQLiteFile):
    """The mirror in one SQLite file, locked by ``<file>.lock`` beside it (the default).

    ``path`` is the database file (its directory is created if missing), or
    an existing directory, which then holds ``mirror.sqlite3``.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 10_000,
        now_us: Callable[[], int] = _wall_us,
    ) -> None:
        self._init_mirror(now_us)
        SQLiteFile.__init__(
            self,
            path,
            filename=MIRROR_DB_FILENAME,
            migrations=_MIGRATIONS,
            name="mirror store",
            lock_holder="sync consumer",
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
        )

    def __enter__(self) -> SQLiteMirrorStore:
        return self


class PostgresMirrorStore(MirrorStore, PostgresFile):
    """The mirror in a PostgreSQL schema (``atrepo_mirror`` unless ``schema`` names another).

    The tables are those of the SQLite file, so queries written for one run
    on the other; the writer holds an advisory lock on the schema.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = PG_SCHEMA,
        now_us: Callable[[], int] = _wall_us,
        partition: tuple[int, int] | None = None,
    ) -> None:
        self._init_mirror(now_us)
        PostgresFile.__init__(
            self,
            url,
            schema=schema,
            migrations=_PG_MIGRATIONS,
            name="mirror store",
            lock_holder="sync consumer",
            partition=partition,
        )

    def __enter__(self) -> PostgresMirrorStore:
        return self

    def _writer_ready(self, conn: PgConnection) -> None:
        conn.script(_PG_TEMP_TABLES)

    def _upsert_records(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._upsert_records(db, rows)
        pg: Any = db
        pg.copy_rows("records_in", _RECORD_COLUMNS, rows)
        db.execute(_PG_UPSERT_FROM_TEMP)
        db.execute("DELETE FROM records_in")

    def _insert_records(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._insert_records(db, rows)
        pg: Any = db
        pg.copy_rows("records", _RECORD_COLUMNS, rows)

    def _delete_records(self, db: Conn, rows: list[tuple[str, str, str]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._delete_records(db, rows)
        pg: Any = db
        pg.copy_rows("records_gone", "did, collection, rkey", rows)
        db.execute(_PG_DELETE_FROM_TEMP)
        db.execute("DELETE FROM records_gone")

    def _insert_events(self, db: Conn, rows: list[tuple[Any, ...]]) -> None:
        if len(rows) < _PG_BULK_MIN:
            return super()._insert_events(db, rows)
        pg: Any = db
        pg.copy_rows("events", _EVENT_COLUMNS, rows)


def open_mirror(
    target: Path | str,
    *,
    synchronous: Synchronous = "FULL",
    now_us: Callable[[], int] = _wall_us,
    schema: str = PG_SCHEMA,
    partition: tuple[int, int] | None = None,
) -> MirrorStore:
    """The mirror at ``target``: a ``postgresql://`` URL, else a SQLite file or directory.

    ``synchronous`` applies to SQLite (PostgreSQL's durability is the
    server's ``synchronous_commit``); ``schema`` to PostgreSQL; ``partition``
    (I, N) opens it as one of N writer processes sharing the mirror, which
    only PostgreSQL allows (a SQLite file has one writer).
    """
    if is_database_url(target):
        return PostgresMirrorStore(str(target), schema=schema, now_us=now_us, partition=partition)
    if partition is not None:
        raise ValueError(
            "several sync workers share a mirror only on PostgreSQL (--database postgresql://...)"
        )
    return SQLiteMirrorStore(target, synchronous=synchronous, now_us=now_us)
