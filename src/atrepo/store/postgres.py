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
disk). A repository transaction runs in psycopg's pipeline mode, so a
commit costs three round trips, not one per statement (see
:meth:`PostgresStore.transaction`); an import sends its rows by binary
``COPY`` and reads the staged CAR ahead (:meth:`PostgresTransaction.stage_blocks`).
Reads use one autocommit, read-only connection per thread;
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
from typing import Any, ClassVar, Final, cast

from atrepo.core.blocks import BlockSource
from atrepo.core.cid import CID
from atrepo.core.errors import WriteAborted
from atrepo.core.repo import CommitResult

from .base import BlobFiles, BlobRow, SeqFloor
from .pgfile import PgConnection, PgListener, PostgresFile, _lock_key, _psycopg, redact_url
from .sqlite import (
    BLOBS_DIRNAME,
    SQLiteStore,
    SQLiteTransaction,
    _split,
    _wall_clock_ms,
    apply_seq_floor,
    check_next_seq,
)

__all__ = ["HOST_EVENTS_CHANNEL", "HOST_SCHEMA", "PostgresStore", "open_host_store"]

#: The PostgreSQL schema holding the host's tables.
HOST_SCHEMA: Final = "atrepo_host"
#: Where each committed event's seq is announced (host worker processes follow it).
HOST_EVENTS_CHANNEL: Final = "atrepo_host_events"
#: Idle writer connections a process keeps for the next transaction.
DEFAULT_POOL_SIZE: Final = 4
#: Record rows of one page of a getRepo export (about 0.3 MB of typical posts).
_RECORD_PAGE: Final = 1000

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


#: ``executemany`` statements of the shared code run as one statement of many rows instead: its text
#: (``{rows}`` standing for the rows) and its first row, typed (``VALUES`` takes its column types from
#: it). psycopg's per-row cost (a Bind and an Execute each, built in Python) was most of a commit's block
#: writes. Same rows, same conflicts skipped (``ON CONFLICT DO NOTHING`` also skips a row repeating an
#: earlier one of the statement), same test per row. Keyed by the shared code's exact text: should that
#: change, the statement simply runs row by row again.
_MULTI_ROW: Final[Mapping[str, tuple[str, str]]] = {
    "INSERT OR IGNORE INTO blocks (repo, cid, rev, data) VALUES (?, ?, ?, ?)": (
        "INSERT INTO blocks (repo, cid, rev, data) VALUES {rows} ON CONFLICT DO NOTHING",
        "(?, ?, ?, ?)",
    ),
    "DELETE FROM blocks WHERE repo = ? AND cid = ? "
    "AND NOT EXISTS (SELECT 1 FROM records WHERE repo = ? AND cid = ?)": (
        "DELETE FROM blocks USING (VALUES {rows}) AS gone (repo, cid, record_repo, record_cid) "
        "WHERE blocks.repo = gone.repo AND blocks.cid = gone.cid AND NOT EXISTS "
        "(SELECT 1 FROM records WHERE records.repo = gone.record_repo AND records.cid = gone.record_cid)",
        "(?::BIGINT, ?::BYTEA, ?::BIGINT, ?::BYTEA)",
    ),
}
#: Most rows in one such statement: each count is a statement text of its own (prepared once it
#: recurs), so a bigger batch goes in chunks of this many.
_MULTI_ROW_MAX: Final = 16


@functools.lru_cache(maxsize=64)
def _multi_row(sql: str, count: int) -> str:
    """The statement ``_MULTI_ROW[sql]`` for ``count`` rows."""
    text, first = _MULTI_ROW[sql]
    row = "(" + ", ".join("?" * first.count("?")) + ")"
    return text.format(rows=", ".join([first] + [row] * (count - 1)))


class _Inserted:
    """The cursor of an ``INSERT ... RETURNING id``, with the ``lastrowid`` sqlite3 gives."""

    __slots__ = ("lastrowid", "rowcount")

    def __init__(self, cursor: Any) -> None:
        # The row first: in pipeline mode the count is known only once the answer has been read.
        (self.lastrowid,) = cursor.fetchone()
        self.rowcount = cursor.rowcount


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
            return _Inserted(cursor) if returns_id else cursor
        except _psycopg().IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc).strip()) from exc

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        try:
            if sql not in _MULTI_ROW:
                return super().executemany(_translate(sql)[0], parameters)
            rows = list(parameters)
            for start in range(0, len(rows), _MULTI_ROW_MAX):
                chunk = rows[start : start + _MULTI_ROW_MAX]
                super().execute(_multi_row(sql, len(chunk)), [value for row in chunk for value in row])
            return None
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

    #: Each query is a round trip: a getRepo walk reads a node's descendants ahead, up to this many.
    read_ahead_nodes: ClassVar[int] = 1024

    def __repr__(self) -> str:
        return f"PostgresStore({self.location})"

    def repo_record_blocks(self, did: str) -> Iterator[tuple[bytes, bytes]] | None:
        """As SQLite's, in pages of ``_RECORD_PAGE`` rows keyed on (collection, rkey): psycopg's
        cursor would hold the whole result in the client, the repository's record bytes at once."""
        db = self._read()
        repo = self._repo_id(db, did)
        if repo is None:
            return None
        return self._record_pages(db, repo)

    @staticmethod
    def _record_pages(db: sqlite3.Connection, repo: int) -> Iterator[tuple[bytes, bytes]]:
        select = (
            "SELECT records.cid, blocks.data, records.collection, records.rkey FROM records "
            "JOIN blocks ON blocks.repo = records.repo AND blocks.cid = records.cid WHERE records.repo = ? "
        )
        order = " ORDER BY records.collection, records.rkey LIMIT ?"
        rows = db.execute(select + order, (repo, _RECORD_PAGE)).fetchall()
        while rows:
            for cid, data, _, _ in rows:
                yield cid, data
            if len(rows) < _RECORD_PAGE:
                return
            after = rows[-1][2:]
            rows = db.execute(
                select + "AND (records.collection, records.rkey) > (?, ?)" + order,
                (repo, *after, _RECORD_PAGE),
            ).fetchall()

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

    @contextmanager
    def transaction(self, did: str) -> Iterator[SQLiteTransaction]:
        """SQLite's repository transaction, its statements pipelined: a commit costs three round trips.

        Outside a group the connection is in psycopg's pipeline mode from
        ``BEGIN`` to ``COMMIT``: each statement is sent at once, and its
        answer awaited only when its rows are read. So ``BEGIN``, the
        repository's lock and the account row take one round trip; a commit's
        blocks, index and head and the seq counter's update a second (its
        ``RETURNING`` is read); the event row with its ``pg_notify`` and the
        ``COMMIT`` a third, against seven (one per statement). With the
        commit's blocks written by one statement each way (``_MULTI_ROW``),
        the store's CPU per createRecord commit went from about 1.0 to 0.76
        ms (replayed commits, psycopg 3.3). What the server does is unchanged:
        the statements run in the order sent, in the one transaction, the seq
        counter still last before ``COMMIT``. The first statement that fails
        makes the server skip the rest up to the next sync (the ``COMMIT``
        among them); its error is raised at the next read or at the end, and
        the transaction is rolled back whole. A ``COMMIT`` the server answers
        with ``ROLLBACK`` (an error the caller swallowed had failed the
        transaction) raises :class:`WriteAborted`.
        """
        if getattr(self._local, "writing", False) or getattr(self._local, "group", None) is not None:
            with super().transaction(did) as shared:  # a group's savepoint, or the nested-write refusal
                yield shared
            return
        conn, pipeline, tx = self._open_pipelined(did)
        self._local.writing = True
        try:
            try:
                try:
                    yield tx
                finally:
                    tx._live = False
                commit = conn.execute("COMMIT")
                pipeline.close()
            except BaseException as exc:
                pipeline.close(exc)
                if conn.usable and conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, _psycopg().errors.PipelineAborted):
                    # a statement skipped (the COMMIT among them): an earlier one's error was swallowed
                    raise WriteAborted(
                        "the host store transaction failed earlier and was rolled back"
                    ) from exc
                raise
            if commit.statusmessage != "COMMIT":
                raise WriteAborted("the host store transaction failed earlier and was rolled back")
        finally:
            self._local.writing = False
            self._pool.give(conn)
        if tx._orphan_candidates:
            self._delete_orphan_files(tx._orphan_candidates)

    def _open_pipelined(self, did: str) -> tuple[PgConnection, _Pipelined, PostgresTransaction]:
        """A pooled connection in pipeline mode: ``BEGIN``, the repository's lock, its account row read.

        The lock and the read are two statements, not one: a statement reads
        the state of when it began, so a read sharing the lock's statement
        would miss what the writer it waited for committed. An idle pooled
        connection the server dropped (a restart: then the other idle ones
        are gone too) fails this first round trip, which writes nothing: it
        is tried once more on a new connection.
        """
        for attempt in (1, 2):
            conn = self._pool.take()
            pipeline: _Pipelined | None = None
            try:
                pipeline = _Pipelined(conn)
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(?)", (_did_lock(did),))
                return (
                    conn,
                    pipeline,
                    PostgresTransaction(self, cast(sqlite3.Connection, conn), did, pipeline=pipeline),
                )
            except BaseException as exc:
                if pipeline is not None:
                    pipeline.close(exc)
                dropped = isinstance(exc, _psycopg().OperationalError) and not conn.usable
                if conn.usable and conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._pool.give(conn)  # closed when it is broken
                if not dropped or attempt == 2:
                    raise
                self._pool.close_idle()
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_transaction(self, db: sqlite3.Connection, did: str) -> SQLiteTransaction:
        # SQLiteStore.transaction's, inside a group: the same block, with the repository's lock taken first
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
        check_next_seq(next_seq)
        with self._write() as db:
            return apply_seq_floor(db, next_seq, lock=" FOR UPDATE")

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


#: Most rows, and bytes of their values, sent by one ``COPY`` of an import: the rows come from generators
#: that may read the same connection (the staged blocks), which a running ``COPY`` holds, so they are
#: gathered a batch at a time (a block may be up to a megabyte: the bytes bound the memory).
_COPY_BATCH: Final = 2048
_COPY_BATCH_BYTES: Final = 8 << 20
#: Most staged blocks read at once (:class:`_StagedAhead`).
_READ_AHEAD_MAX: Final = 1024
#: Blocks read one at a time (reading ahead did not pay) before reading ahead is tried again.
_READ_AHEAD_RETRY: Final = 256


def _copy_binary(db: PgConnection, target: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """``COPY target FROM STDIN`` in binary, a batch of rows per ``COPY``; the number of rows sent.

    Binary: a block goes as its bytes, not as twice as many hex digits the server then parses.
    """
    sent = size = 0
    batch: list[Sequence[Any]] = []

    def flush() -> None:
        with db.raw.cursor().copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in batch:
                copy.write_row(row)
        batch.clear()

    for row in rows:
        batch.append(row)
        sent += 1
        size += sum(len(value) for value in row if isinstance(value, bytes | str))
        if len(batch) >= _COPY_BATCH or size >= _COPY_BATCH_BYTES:
            flush()
            size = 0
    if batch:
        flush()
    return sent


class _StagedAhead:
    """A ``BlockSource`` over the staged blocks that reads ahead in the order the CAR had them.

    The import walks the staged tree twice (its export, then its records)
    in the streamable pre-order, which is the order of a CAR from
    ``getRepo``: so a miss fetches the block and the ones the CAR had after
    it, and the next reads find them here. One query per block (SQLite's
    way, a round trip each on a server) was most of a large import's time.
    The window adapts: it doubles while a quarter of what it read ahead
    gets used and shrinks when not (a CAR in another order), down to one
    block a query, SQLite's way, from where it is tried again every
    ``_READ_AHEAD_RETRY`` blocks. At most twice the largest window is kept.
    """

    __slots__ = ("_ahead", "_alone", "_cache", "_connection", "_fetched", "_used", "_window")

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection
        self._cache: dict[bytes, bytes] = {}
        self._window = 64
        self._ahead: set[bytes] = set()  # the blocks the last fetch read ahead, not asked for yet
        self._fetched = 0  # how many it read ahead
        self._used = 0  # how many of those were asked for
        self._alone = 0  # misses read one at a time since the window was last tried

    def get(self, cid: CID) -> bytes | None:
        key = cid.raw
        data = self._cache.get(key)
        if data is not None:
            if key in self._ahead:
                self._ahead.discard(key)
                self._used += 1
            return data
        if self._fetched:
            useful = self._used * 4 >= self._fetched
            self._window = min(_READ_AHEAD_MAX, self._window * 2) if useful else max(1, self._window // 4)
            self._fetched = self._used = 0
            self._ahead.clear()
        db = self._connection()
        if self._window == 1:
            # the CAR's order is not the walk's: a block a query, trying the window again now and then
            self._alone += 1
            if self._alone >= _READ_AHEAD_RETRY:
                self._alone = 0
                self._window = 4
            row = db.execute("SELECT data FROM import_staging WHERE cid = ? LIMIT 1", (key,)).fetchone()
            return bytes(row[0]) if row is not None else None
        rows = db.execute(
            "SELECT cid, data FROM import_staging WHERE ord >= "
            "(SELECT ord FROM import_staging WHERE cid = ? LIMIT 1) ORDER BY ord LIMIT ?",
            (key, self._window),
        ).fetchall()
        if len(self._cache) + len(rows) > 2 * _READ_AHEAD_MAX:
            self._cache.clear()
        for found, block in rows:
            self._cache[bytes(found)] = bytes(block)
        if not rows:
            return None
        self._ahead = {bytes(found) for found, _ in rows[1:]}
        self._fetched = len(self._ahead)
        return self._cache.get(key)


class _Pipelined:
    """psycopg's pipeline mode on one connection, entered and left by hand: it spans a whole transaction."""

    __slots__ = ("_manager",)

    def __init__(self, conn: PgConnection) -> None:
        manager = conn.raw.pipeline()
        manager.__enter__()
        self._manager: Any = manager

    def close(self, error: BaseException | None = None) -> None:
        """Sync: send what is queued and read every answer, raising the first error among them.

        With ``error`` (the transaction is being abandoned for it) nothing is
        raised. A second call does nothing.
        """
        manager, self._manager = self._manager, None
        if manager is None:
            return
        if error is None:
            manager.__exit__(None, None, None)
            return
        try:
            manager.__exit__(type(error), error, error.__traceback__)
        except BaseException as again:
            if again is not error:
                raise


class PostgresTransaction(SQLiteTransaction):
    """``RepoTransaction`` on a pooled connection, the repository's advisory lock held.

    ``pipeline``: the connection is in pipeline mode for the whole transaction
    (:meth:`PostgresStore.transaction`); otherwise (inside a group) a commit's
    statements get a pipeline of their own.
    """

    # The row and, in the same round trip, the seq announced on HOST_EVENTS_CHANNEL: heard by other
    # processes' followers when this transaction commits, never if it rolls back.
    _insert_event = (
        "WITH e AS (INSERT INTO events (seq, did, type, time_ms, frame) VALUES (?, ?, ?, ?, ?) "
        f"RETURNING seq) SELECT pg_notify('{HOST_EVENTS_CHANNEL}', seq::text) FROM e"
    )

    def __init__(
        self, store: SQLiteStore, db: sqlite3.Connection, did: str, *, pipeline: _Pipelined | None = None
    ) -> None:
        self._pipeline = pipeline
        super().__init__(store, db, did)

    def apply_commit(
        self, result: CommitResult, *, blob_refs: Mapping[str, Iterable[CID]] | None = None
    ) -> None:
        # Its statements (blocks in, the index, blocks out, the head) need no answer before the next, so
        # they go in one pipeline: one round trip to the server instead of one each. A statement whose
        # rows are read (the blob references of a replaced record) makes psycopg sync there; an error
        # is raised when the pipeline syncs, which fails the write as the statement itself would. In the
        # transaction's own pipeline that sync is the seq counter's read (append_event) or the COMMIT.
        if self._pipeline is not None:
            super().apply_commit(result, blob_refs=blob_refs)
            return
        with cast(PgConnection, self._db).raw.pipeline():
            super().apply_commit(result, blob_refs=blob_refs)

    def _leave_pipeline(self) -> None:
        """Out of pipeline mode for the rest of the transaction (``COPY`` cannot run in it): a sync."""
        if self._pipeline is not None:
            self._pipeline.close()

    def stage_blocks(self, blocks: Iterable[tuple[bytes, bytes]]) -> BlockSource:
        # SQLite's inserts a row at a time; here binary COPY sends them in bulk, into a table without a
        # unique key (a CAR may hold a block twice; its bytes are the same, as the reader checks every
        # block's hash), indexed once it is full; ord keeps the CAR's order for the reads ahead. Dropped
        # with the transaction (ON COMMIT DROP), or at once by replace_repo.
        db = cast(PgConnection, self._connection())
        self._leave_pipeline()
        db.execute("DROP TABLE IF EXISTS import_staging")
        db.execute(
            "CREATE TEMP TABLE import_staging (ord BIGINT NOT NULL, cid BYTEA NOT NULL, data BYTEA NOT NULL) "
            "ON COMMIT DROP"
        )
        _copy_binary(
            db,
            "import_staging (ord, cid, data)",
            ("int8", "bytea", "bytea"),
            ((ord, cid, data) for ord, (cid, data) in enumerate(blocks)),
        )
        db.execute("CREATE INDEX ON import_staging (cid)")
        db.execute("CREATE UNIQUE INDEX ON import_staging (ord)")
        db.execute("ANALYZE import_staging")
        self._staged = True
        return _StagedAhead(self._connection)

    def replace_repo(
        self,
        commit: CID,
        rev: str,
        blocks: Iterable[tuple[CID, bytes]],
        records: Iterable[tuple[str, CID, Sequence[str]]],
    ) -> int:
        # SQLite's, its rows sent by binary COPY into temporary tables, each moved by one statement.
        # A block may come twice (one record's bytes at two paths), and a blob reference too (a record
        # naming a blob twice): ON CONFLICT DO NOTHING and DISTINCT drop them, as SQLite's OR IGNORE.
        repo = self._require_repo()
        db = cast(PgConnection, self._db)
        self._leave_pipeline()
        for table in ("blob_refs", "records", "blocks"):
            db.execute(f"DELETE FROM {table} WHERE repo = ?", (repo,))
        db.execute("DROP TABLE IF EXISTS import_blocks")
        db.execute("CREATE TEMP TABLE import_blocks (cid BYTEA NOT NULL, data BYTEA NOT NULL) ON COMMIT DROP")
        stored = _copy_binary(
            db, "import_blocks (cid, data)", ("bytea", "bytea"), ((cid.raw, data) for cid, data in blocks)
        )
        db.execute(
            "INSERT INTO blocks (repo, cid, rev, data) SELECT ?, cid, ?, data FROM import_blocks "
            "ON CONFLICT DO NOTHING",
            (repo, rev),
        )
        db.execute("DROP TABLE import_blocks")
        db.execute("DROP TABLE IF EXISTS import_records")
        db.execute(
            "CREATE TEMP TABLE import_records (collection TEXT NOT NULL, rkey TEXT NOT NULL, "
            "cid BYTEA NOT NULL, blobs TEXT NOT NULL) ON COMMIT DROP"
        )
        # A record's blob CIDs in one text, space-separated (a CID has no space): no array per row.
        _copy_binary(
            db,
            "import_records (collection, rkey, cid, blobs)",
            ("text", "text", "bytea", "text"),
            ((*_split(path), cid.raw, " ".join(blobs)) for path, cid, blobs in records),
        )
        db.execute(
            "INSERT INTO records (repo, collection, rkey, cid, rev) "
            "SELECT ?, collection, rkey, cid, ? FROM import_records",
            (repo, rev),
        )
        db.execute(
            "INSERT INTO blob_refs (repo, cid, collection, rkey) "
            "SELECT DISTINCT ?::BIGINT, blob, collection, rkey FROM import_records, "
            "unnest(string_to_array(blobs, ' ')) AS blob WHERE blobs <> '' ON CONFLICT DO NOTHING",
            (repo,),
        )
        db.execute("DROP TABLE import_records")
        # uploads the imported records name are kept; the others wait out the grace period
        db.execute(
            "UPDATE blobs SET temporary = (NOT EXISTS "
            "(SELECT 1 FROM blob_refs r WHERE r.repo = blobs.repo AND r.cid = blobs.cid))::INTEGER, "
            "created_ms = ? WHERE repo = ?",
            (self._store._clock(), repo),
        )
        self._row = None
        db.execute("UPDATE accounts SET head = ?, rev = ? WHERE id = ?", (commit.raw, rev, repo))
        if self._staged:
            db.execute("DROP TABLE IF EXISTS import_staging")
            self._staged = False
        return stored

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
