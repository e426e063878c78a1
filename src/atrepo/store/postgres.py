"""The host's store on PostgreSQL (``atrepo serve --database postgresql://...``), for several processes.

**One implementation, two engines.** :class:`PostgresStore` subclasses
:class:`~atrepo.store.sqlite.SQLiteStore` and keeps every method whose SQL is
the common subset of both dialects: it replaces only how connections are
had (a small pool of writer connections, one read connection per thread),
how a transaction locks its repository, snapshots, schema and integrity
checks. The host calls store methods through the class
(``worker.read(SQLiteStore.get_account, did)``), so sharing the methods is
also what makes the host run on either engine unchanged. The SQLite methods
speak to a connection in SQLite's terms; :class:`_HostConnection`, the
PostgreSQL adapter, turns the few SQLite-isms they use into PostgreSQL
(:func:`_translate`: ``INSERT OR IGNORE``, two-argument ``MIN``/``MAX``,
``NOT EXISTS`` as an integer value, ``BLOB``, ``lastrowid``) once per
statement text, and raises integrity errors as ``sqlite3.IntegrityError``,
which the shared code catches.

**Several processes on one database.** Nothing here holds a session lock:
any number of host processes may open the same schema (``atrepo_host``).

* *Per-repository serialization*: ``transaction(did)`` begins a transaction
  and takes ``pg_advisory_xact_lock`` on 64 bits of a hash of the DID before
  it reads the account row, so two writes to one repository (in one process
  or in two) queue, and writes to different repositories run side by side.
  The lock goes with the transaction (commit, rollback or a dead backend).
* *Event sequence*: ``append_event`` (shared with SQLite) runs ``UPDATE
  event_seq SET seq = seq + 1 ... RETURNING seq`` in the commit's
  transaction, and it is the last thing a write does before ``COMMIT``. The
  counter row's lock is held from that update to the commit, so a second
  writer's update waits for the first one's commit: seqs are handed out in
  commit order, a subscriber reading ``seq > cursor`` can never see N+1
  before N, and a rollback returns its number (no gap). We chose this over
  the ``pg_current_xact_id``/commit-order technique (allocating from a
  sequence and letting readers stop below the oldest transaction still in
  progress): that one lets the commits of different repositories overlap,
  but a rolled-back transaction leaves a hole in the seqs, and every reader
  needs the in-progress horizon on each poll. The counter row is simple and
  exact; its cost is that the row lock is held through each appending
  transaction's ``COMMIT`` (its WAL flush), so appending transactions flush
  one after another. A group commit (below) shares one flush among many
  writes, which is how the rate is bought back.
* *Blob files* shared by accounts: adding a blob and deleting an orphaned
  file both take a transaction-scoped advisory lock on the blob's CID, so a
  file is never unlinked under an upload another process is committing.
  (A group holding the counter row can wait for a blob lock that another
  process's group holds before it appends: two processes storing the same
  upload at the same moment. PostgreSQL detects that deadlock and fails one
  write, which the client retries; nothing is left half done.)

**Connections.** A write takes a connection from a small pool (one per
transaction; :class:`_Pool`), ``BEGIN`` ... ``COMMIT`` on it with the
server's ``synchronous_commit`` (on by default: a commit that returned is on
disk). Reads use one autocommit, read-only connection per thread;
``snapshot()`` (shared) is a ``REPEATABLE READ READ ONLY`` transaction on it.
``group_commit`` runs the worker's queued writes in one transaction, a
savepoint each, as SQLite's does (one WAL flush for all of them; see its
docstring for why it matters more here, and how a group avoids deadlocks
with other processes).

**Schema.** The tables mirror SQLite's (``accounts.id`` an identity column,
never reused), in the ``atrepo_host`` schema, migrated by
:class:`~atrepo.store.pgfile.PostgresFile` (versioned, a newer schema
refused). Text keys are ``COLLATE "C"`` (byte order, as SQLite compares);
handles and e-mails use a case-insensitive ICU collation (a server built
with ICU, as Debian's is), as SQLite's ``NOCASE`` does, so the shared
``handle = ?`` lookups and unique indexes behave the same (ICU folds the
case of every script, ``NOCASE`` of ASCII only: handles are ASCII). Blob
bytes stay in files under ``<data_dir>/blobs``.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, cast

from atrepo.core import limits
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidRequest, WriteAborted
from atrepo.core.repo import CommitResult

from .base import BlobFiles, BlobRow, SeqFloor
from .pgfile import PgConnection, PgListener, PostgresFile, _lock_key, _psycopg, redact_url
from .sqlite import BLOBS_DIRNAME, SQLiteStore, SQLiteTransaction, _wall_clock_ms

__all__ = ["HOST_EVENTS_CHANNEL", "HOST_SCHEMA", "PostgresStore", "open_host_store"]

#: The PostgreSQL schema holding the host's tables.
HOST_SCHEMA: Final = "atrepo_host"
#: Where each committed event's seq is announced (host worker processes follow it).
HOST_EVENTS_CHANNEL: Final = "atrepo_host_events"
#: Idle writer connections a process keeps for the next transaction.
DEFAULT_POOL_SIZE: Final = 4

_V1 = """
CREATE COLLATION IF NOT EXISTS nocase
    (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE accounts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    did TEXT COLLATE "C" NOT NULL UNIQUE,
    handle TEXT COLLATE nocase NOT NULL UNIQUE,
    email TEXT COLLATE nocase UNIQUE,
    password_hash TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('active', 'takendown', 'suspended', 'deactivated', 'deleted')),
    signing_key BYTEA NOT NULL,
    head BYTEA,
    rev TEXT COLLATE "C",
    created_ms BIGINT NOT NULL,
    takedown_ref TEXT,
    deactivated_ms BIGINT,
    delete_after_ms BIGINT
);
CREATE INDEX accounts_by_created ON accounts (created_ms, did);

CREATE TABLE blocks (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid BYTEA NOT NULL,
    rev TEXT COLLATE "C" NOT NULL,
    data BYTEA NOT NULL
);
CREATE UNIQUE INDEX blocks_by_cid ON blocks (repo, cid);
CREATE INDEX blocks_by_rev ON blocks (repo, rev);

CREATE TABLE records (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    collection TEXT COLLATE "C" NOT NULL,
    rkey TEXT COLLATE "C" NOT NULL,
    cid BYTEA NOT NULL,
    rev TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX records_by_path ON records (repo, collection, rkey);
CREATE INDEX records_by_cid ON records (repo, cid);

CREATE TABLE refresh_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_ms BIGINT NOT NULL,
    next_id TEXT COLLATE "C",
    app_password TEXT
);
CREATE INDEX refresh_tokens_by_repo ON refresh_tokens (repo);
CREATE INDEX refresh_tokens_by_next ON refresh_tokens (next_id) WHERE next_id IS NOT NULL;
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_ms);
CREATE INDEX refresh_tokens_by_app_password ON refresh_tokens (repo, app_password)
    WHERE app_password IS NOT NULL;

CREATE TABLE blobs (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid TEXT COLLATE "C" NOT NULL,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    temporary INTEGER NOT NULL,
    takedown_ref TEXT,
    PRIMARY KEY (repo, cid)
);
CREATE INDEX blobs_by_cid ON blobs (cid);
CREATE INDEX blobs_temporary ON blobs (created_ms) WHERE temporary = 1;

CREATE TABLE blob_refs (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    rkey TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (repo, cid, collection, rkey)
);
CREATE INDEX blob_refs_by_record ON blob_refs (repo, collection, rkey);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    did TEXT COLLATE "C" NOT NULL,
    type TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    frame BYTEA NOT NULL
);
CREATE INDEX events_by_time ON events (time_ms);
CREATE INDEX events_by_did ON events (did);

-- The last seq and time handed out (see the module's docstring for why a row).
CREATE TABLE event_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL
);
INSERT INTO event_seq (id, seq, time_ms) VALUES (1, 0, 0);

CREATE TABLE preferences (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (repo, position)
);

CREATE TABLE email_tokens (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose TEXT COLLATE "C" NOT NULL,
    token TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    PRIMARY KEY (repo, purpose)
);

CREATE TABLE app_passwords (
    repo BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    password_hash TEXT NOT NULL,
    privileged INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (repo, name)
);
"""

#: ``_MIGRATIONS[n]`` takes the schema from version n to n + 1. Append, never edit.
_MIGRATIONS: Final[tuple[str, ...]] = (_V1,)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_TWO_ARGUMENT_MIN_MAX = re.compile(r"\b(MIN|MAX)\((\w+), \?\)")
#: ``NOT EXISTS (subquery)`` used as a value (after ``=`` or ``,``), not as a condition.
_EXISTS_AS_VALUE = re.compile(r"([=,]) NOT EXISTS (\([^()]*\))")


@functools.lru_cache(maxsize=256)
def _translate(sql: str) -> tuple[str, bool]:
    """A statement of the shared SQLite code in PostgreSQL, and whether it now returns the new row id.

    Only the constructs that code uses: ``INSERT OR IGNORE`` (``ON CONFLICT
    DO NOTHING``), scalar ``MIN``/``MAX`` of a column and a parameter
    (``LEAST``/``GREATEST``), ``NOT EXISTS`` stored in an integer column (cast),
    ``BLOB`` in a temporary table, and ``INSERT INTO accounts`` (``RETURNING id``
    for ``lastrowid``). Placeholders stay ``?`` (:class:`PgConnection` maps them).
    """
    if sql.startswith("INSERT OR IGNORE INTO "):
        sql = "INSERT INTO " + sql[len("INSERT OR IGNORE INTO ") :] + " ON CONFLICT DO NOTHING"
    sql = _TWO_ARGUMENT_MIN_MAX.sub(lambda m: f"{'LEAST' if m[1] == 'MIN' else 'GREATEST'}({m[2]}, ?)", sql)
    sql = _EXISTS_AS_VALUE.sub(r"\1 (NOT EXISTS \2)::INTEGER", sql)
    if sql.startswith("CREATE TEMP TABLE"):
        sql = sql.replace(" BLOB", " BYTEA")
    if sql.startswith("INSERT INTO accounts "):
        return sql + " RETURNING id", True
    return sql, False


class _Inserted:
    """The cursor of an ``INSERT ... RETURNING id``, with the ``lastrowid`` sqlite3 gives."""

    __slots__ = ("lastrowid", "rowcount")

    def __init__(self, cursor: Any) -> None:
        self.rowcount = cursor.rowcount
        (self.lastrowid,) = cursor.fetchone()


class _HostConnection(PgConnection):
    """A PostgreSQL connection that runs the shared SQLite statements (see :func:`_translate`).

    Integrity errors come out as ``sqlite3.IntegrityError``: the shared code
    catches that one (a duplicate app password's name). On a reader, whose
    only transactions are ``snapshot()``'s, ``BEGIN`` starts a ``REPEATABLE
    READ READ ONLY`` one: the whole block then reads one state, as SQLite's
    read transaction does (PostgreSQL's default would see each statement's).
    """

    __slots__ = ("_begin",)

    def __init__(self, raw: Any, reopen: Callable[[], Any] | None = None, *, begin: str = "BEGIN") -> None:
        super().__init__(raw, reopen)
        self._begin = begin

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        if sql == "BEGIN":
            sql = self._begin
        text, returns_id = _translate(sql)
        try:
            cursor = super().execute(text, parameters)
        except _psycopg().IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc).strip()) from exc
        return _Inserted(cursor) if returns_id else cursor

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        try:
            return super().executemany(_translate(sql)[0], parameters)
        except _psycopg().IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc).strip()) from exc


class _HostSchema(PostgresFile):
    """The ``atrepo_host`` schema: migrations, per-thread readers; no single-writer lock (many processes)."""

    def _connect(self, *, read_only: bool = False) -> PgConnection:
        def raw() -> Any:
            return self._connect_raw(read_only=read_only)

        if read_only:
            return _HostConnection(raw(), raw, begin=PostgresFile.snapshot_begin)
        return _HostConnection(raw())

    def _take_locks(self, conn: PgConnection) -> bool:
        return True  # host processes share the schema; repositories are locked per transaction

    def new_writer(self) -> PgConnection:
        """A fresh read-write connection for the pool."""
        return self._connect()


class _Pool:
    """Writer connections, one per transaction: taken, used, given back (at most ``size`` kept idle)."""

    def __init__(self, connect: Callable[[], PgConnection], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[PgConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> PgConnection:
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.usable:
                    return conn
                conn.close()
        return self._connect()

    def give(self, conn: PgConnection) -> None:
        """Back to the pool when healthy and outside a transaction; closed otherwise."""
        with self._lock:
            if not self._closed and conn.usable and not conn.in_transaction and len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def close_idle(self) -> None:
        """Close the idle connections (the server dropped them), keeping the pool open."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.close_idle()


def _healthy(conn: PgConnection) -> bool:
    """The connection is inside a transaction that can still commit."""
    return conn.usable and conn.in_transaction and not conn.failed


@contextmanager
def _committed(conn: PgConnection, what: str) -> Iterator[None]:
    """``COMMIT`` the transaction open on ``conn`` after the block, ``ROLLBACK`` it on an error.

    A transaction an error already ended (or left failed) raises :class:`WriteAborted` instead of
    committing: PostgreSQL would turn that ``COMMIT`` into a silent rollback.
    """
    try:
        yield
        if not _healthy(conn):
            raise WriteAborted(f"{what} failed earlier and was rolled back")
        conn.execute("COMMIT")
    except BaseException:
        if conn.usable and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _did_lock(did: str) -> int:
    """The advisory lock id of one repository."""
    return _lock_key(f"{HOST_SCHEMA}:repo:{did}")


def _blob_lock(cid: str) -> int:
    """The advisory lock id of one blob's file."""
    return _lock_key(f"{HOST_SCHEMA}:blob:{cid}")


class PostgresStore(SQLiteStore):
    """Every table of a host in a PostgreSQL schema; blob bytes in ``<data_dir>/blobs/``.

    ``url`` is a libpq URL (``postgresql://user:pw@host:port/db``). Several
    processes may open the same database at once.
    """

    def __init__(
        self,
        url: str,
        data_dir: str | Path,
        *,
        clock: Callable[[], int] = _wall_clock_ms,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout_s: int = 10,
    ) -> None:
        # SQLiteStore.__init__ is not called: it opens a file. What its shared methods read is set here.
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.location = f"{redact_url(url)} (schema {HOST_SCHEMA})"
        self._clock = clock
        self._blob_files = BlobFiles(self.data_dir / BLOBS_DIRNAME)
        self._local = threading.local()
        self._schema = _HostSchema(
            url,
            schema=HOST_SCHEMA,
            migrations=_MIGRATIONS,
            name="host store",
            lock_holder="host",
            connect_timeout_s=connect_timeout_s,
        )
        self._pool = _Pool(self._schema.new_writer, pool_size)
        self._pool.give(self._schema._writer)  # the migrating connection is the pool's first

    def __repr__(self) -> str:
        return f"PostgresStore({self.location})"

    # --- connections ------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        # The adapter answers the part of sqlite3.Connection the shared methods use.
        return cast(sqlite3.Connection, self._schema._read())

    def _begin(self) -> PgConnection:
        """A pooled connection with a transaction begun on it."""
        conn = self._pool.take()
        try:
            conn.execute("BEGIN")
        except _psycopg().OperationalError:
            if conn.usable:
                self._pool.give(conn)
                raise
            # An idle pooled connection the server dropped (a restart: then the other idle ones
            # are gone too). Nothing was sent: begin once more on a new connection.
            conn.close()
            self._pool.close_idle()
            conn = self._pool.take()
            try:
                conn.execute("BEGIN")
            except BaseException:
                self._pool.give(conn)
                raise
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection inside ``BEGIN`` ... ``COMMIT`` (rolled back on error).

        Inside a :meth:`group_commit` on this thread, a savepoint of the group's
        transaction instead. A nested write on the same thread is refused: it
        would run on a second connection and could wait for the first one's
        locks for ever.
        """
        if getattr(self._local, "writing", False):
            raise RuntimeError("this thread is already inside a store write transaction")
        group: PgConnection | None = getattr(self._local, "group", None)
        if group is not None:
            yield from self._group_savepoint(group)
            return
        conn = self._begin()
        self._local.writing = True
        try:
            with _committed(conn, "the host store transaction"):
                yield cast(sqlite3.Connection, conn)
        finally:
            self._local.writing = False
            self._pool.give(conn)

    def _group_savepoint(self, conn: PgConnection) -> Iterator[sqlite3.Connection]:
        if not _healthy(conn):  # an earlier error ended the group's transaction
            raise WriteAborted("the group commit's transaction was rolled back by an earlier error")
        self._local.writing = True
        conn.execute("SAVEPOINT job")
        try:
            yield cast(sqlite3.Connection, conn)
        except BaseException:
            if conn.usable and conn.in_transaction:
                conn.execute("ROLLBACK TO SAVEPOINT job")
                conn.execute("RELEASE SAVEPOINT job")
            raise
        else:
            conn.execute("RELEASE SAVEPOINT job")
        finally:
            self._local.writing = False
            self._local.group_used = True

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """One transaction, and so one ``COMMIT`` (one WAL flush), for the write jobs run inside it.

        The same contract as SQLite's (each job a savepoint, a failing job
        rolled back alone, nothing acknowledged before the one ``COMMIT``,
        blob files deleted after it). It matters more here: the event
        counter's row lock is held from a transaction's first append to its
        commit, so transactions that append commit one after another, each
        waiting for its own flush; a group shares one flush among its jobs.

        A group holds the locks of the repositories it wrote until it
        commits. Another process's transaction may hold the next job's
        repository while it waits for the counter row this group holds: so
        inside a group a repository's lock is only tried, and when it is
        taken the group commits what it has so far and begins again before
        waiting (:meth:`_lock_repo`), which no process can deadlock on.
        """
        if getattr(self._local, "writing", False) or getattr(self._local, "group", None) is not None:
            raise RuntimeError("this thread is already inside a store write transaction")
        conn = self._begin()
        orphans: set[str] = set()
        self._local.group = conn
        self._local.group_used = False
        self._local.group_orphans = orphans
        try:
            with _committed(conn, "the group commit's transaction"):
                yield
        finally:
            self._local.group = None
            self._pool.give(conn)
        if orphans:
            self._delete_orphan_files(orphans)

    @property
    def group_aborted(self) -> bool:
        """Inside a group: whether an error already ended its transaction (every job in it is lost)."""
        group: PgConnection | None = getattr(self._local, "group", None)
        return group is not None and not _healthy(group)

    @property
    def _writer(self) -> sqlite3.Connection:
        """What SQLite calls its writer: the connection of the group open on this thread.

        There is no one writer connection here; outside a group this raises ``AttributeError``.
        """
        group: PgConnection | None = getattr(self._local, "group", None)
        if group is None:
            raise AttributeError("no group commit is open on this thread")
        return cast(sqlite3.Connection, group)

    @_writer.setter
    def _writer(self, value: sqlite3.Connection) -> None:
        raise AttributeError("a PostgresStore takes its connections from its pool")

    def _lock_repo(self, db: sqlite3.Connection, did: str) -> None:
        """Take the repository's lock for the transaction (see :meth:`group_commit` for a group's way)."""
        key = (_did_lock(did),)
        group: PgConnection | None = getattr(self._local, "group", None)
        if group is not None and getattr(self._local, "group_used", False):
            ((taken,),) = db.execute("SELECT pg_try_advisory_xact_lock(?)", key).fetchall()
            if taken:
                return
            # Held elsewhere: commit the group's earlier jobs (releasing the counter row), then wait.
            db.execute("RELEASE SAVEPOINT job")
            db.execute("COMMIT")
            db.execute("BEGIN")
            db.execute("SAVEPOINT job")
        db.execute("SELECT pg_advisory_xact_lock(?)", key).fetchall()

    def listener(self, channel: str = HOST_EVENTS_CHANNEL) -> PgListener:
        """A connection listening for the seqs other processes commit (a firehose ``LogFollower``)."""
        return self._schema.listener(channel)

    def close(self) -> None:
        self._pool.close()
        self._schema.close()

    @property
    def schema_version(self) -> int:
        return self._schema.schema_version

    # --- transactions and snapshots ---------------------------------------------------

    def _open_transaction(self, db: sqlite3.Connection, did: str) -> SQLiteTransaction:
        # SQLiteStore.transaction's: the same block, with the repository's lock taken first
        self._lock_repo(db, did)
        return PostgresTransaction(self, db, did)

    def _delete_orphan_files(self, cids: Iterable[str]) -> None:
        """Delete the files of blobs no row names any more, each under its blob's lock (see add_blob).

        Inside a group on this thread, once the group has committed.
        """
        deferred: set[str] | None = (
            getattr(self._local, "group_orphans", None) if getattr(self._local, "group", None) else None
        )
        if deferred is not None:
            deferred.update(cids)
            return
        for cid in sorted(set(cids)):
            with self._write() as db:
                db.execute("SELECT pg_advisory_xact_lock(?)", (_blob_lock(cid),)).fetchall()
                held = db.execute("SELECT 1 FROM blobs WHERE cid = ? LIMIT 1", (cid,)).fetchone()
                if held is None:
                    self._blob_files.delete(CID.parse(cid))

    # --- maintenance ----------------------------------------------------------------------

    def raise_seq_floor(self, next_seq: int) -> SeqFloor:
        """Make the event log's next seq at least ``next_seq`` (never lower it), in one transaction.

        The remedy for a database restored from a backup (see
        :func:`atrepo.store.sqlite.raise_seq_floor`). Unlike the SQLite file,
        this is safe while hosts run on the database: every commit takes its
        seq from the same counter row, so the row lock taken here orders this
        change against them, and the next commit gets at least the floor.
        """
        if not 1 <= next_seq <= limits.MAX_SAFE_INT:
            raise InvalidRequest(f"the next seq must be between 1 and {limits.MAX_SAFE_INT}, not {next_seq}")
        with self._write() as db:
            (head,) = db.execute("SELECT seq FROM event_seq WHERE id = 1 FOR UPDATE").fetchone()
            (newest,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
            old_head = max(int(head), int(newest or 0))
            new_head = max(old_head, next_seq - 1)
            if new_head != int(head):
                db.execute("UPDATE event_seq SET seq = ? WHERE id = 1", (new_head,))
        return SeqFloor(old_head + 1, new_head + 1)

    # --- checks -------------------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """Cheap consistency checks of the host's tables: ``[]`` when they find nothing wrong.

        The seq counter is at or past the newest event; every account's head
        commit and every indexed record has its block; no blob reference names
        a record that is not indexed.
        """
        db = self._schema._read()
        problems: list[str] = []
        (counter,) = db.execute("SELECT seq FROM event_seq WHERE id = 1").fetchone()
        (newest,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
        if newest is not None and newest > counter:
            problems.append(f"event seq counter {counter} is behind the newest event {newest}")
        for (did,) in db.execute(
            "SELECT a.did FROM accounts a WHERE a.head IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM blocks b WHERE b.repo = a.id AND b.cid = a.head) LIMIT 20"
        ):
            problems.append(f"{did}: head commit block missing")
        for did, collection, rkey in db.execute(
            "SELECT a.did, r.collection, r.rkey FROM records r JOIN accounts a ON a.id = r.repo "
            "WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.repo = r.repo AND b.cid = r.cid) LIMIT 20"
        ):
            problems.append(f"{did}: record block of {collection}/{rkey} missing")
        for did, collection, rkey in db.execute(
            "SELECT a.did, f.collection, f.rkey FROM blob_refs f JOIN accounts a ON a.id = f.repo "
            "WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.repo = f.repo "
            "AND r.collection = f.collection AND r.rkey = f.rkey) LIMIT 20"
        ):
            problems.append(f"{did}: blob reference from {collection}/{rkey}, which is not indexed")
        return problems


class PostgresTransaction(SQLiteTransaction):
    """``RepoTransaction`` on a pooled connection, the repository's advisory lock held."""

    # The row and, in the same round trip, the seq announced on HOST_EVENTS_CHANNEL: heard by other
    # processes' followers when this transaction commits, never if it rolls back.
    _insert_event = (
        "WITH e AS (INSERT INTO events (seq, did, type, time_ms, frame) VALUES (?, ?, ?, ?, ?) "
        f"RETURNING seq) SELECT pg_notify('{HOST_EVENTS_CHANNEL}', seq::text) FROM e"
    )

    def apply_commit(
        self, result: CommitResult, *, blob_refs: Mapping[str, Iterable[CID]] | None = None
    ) -> None:
        # Its statements (blocks in, the index, blocks out, the head) need no answer before the next, so
        # they go in one pipeline: one round trip to the server instead of one each. A statement whose
        # rows are read (the blob references of a replaced record) makes psycopg sync there; an error
        # is raised when the pipeline syncs, which fails the write as the statement itself would.
        with cast(PgConnection, self._db).raw.pipeline():
            super().apply_commit(result, blob_refs=blob_refs)

    def add_blob(self, cid: CID, mime: str, size: int) -> BlobRow:
        # Under the blob's lock, so that no other process unlinks the file before this row commits.
        self._db.execute("SELECT pg_advisory_xact_lock(?)", (_blob_lock(str(cid)),)).fetchall()
        return super().add_blob(cid, mime, size)


def open_host_store(data_dir: str | Path, database: str | None = None) -> SQLiteStore:
    """The host's store: SQLite in ``data_dir`` (``synchronous=FULL``), or PostgreSQL at ``database``.

    Blob files stay in ``data_dir`` on either engine.
    """
    if database is None:
        return SQLiteStore(data_dir, synchronous="FULL")
    return PostgresStore(database, data_dir)
