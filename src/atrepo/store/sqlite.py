"""The SQLite store: one file in WAL mode, one writer connection, a read connection per thread.

**Durability.** The journal is a write-ahead log (WAL): readers never block
the writer nor it them, and a commit appends to the log instead of rewriting
pages. ``synchronous`` decides when the log reaches the disk:

* ``FULL`` (the default): the log is fsynced at every commit, so a
  transaction that returned survives a process kill *and* a power loss or
  kernel crash. This is what the firehose needs: a seq handed out is never
  taken back, and a write the client saw acknowledged is never lost.
* ``NORMAL``: the log is fsynced only at checkpoints. A process crash or
  ``kill -9`` still loses nothing (the log is in the OS's page cache), but a
  power loss may roll back the last transactions before the checkpoint: the
  file stays consistent, yet acknowledged writes and seqs already sent to
  subscribers can vanish and be handed out again. Faster; for mirrors that
  can refetch, not for a host.

Blob files are fsynced (file and directory) before the row naming them is
committed (:class:`atrepo.store.base.BlobFiles`).

**Checkpoints** (copying the log into the database file) run on a background
thread of their own (``_Checkpointer``), not on the committing write, so no
client waits for one; the log file then cycles through about 32 MiB
(:data:`WAL_BACKSTOP_PAGES`). This changes nothing about durability.

**Log writes gathered.** With ``FULL``, the writer connection opens the
file through the ``_walbatch`` VFS shim when it was built (``_walbatch.c``):
SQLite writes each log frame with two system calls, about 54 for a one-record
commit, and the shim hands a commit's frames to the file in one write at the
commit's fsync. It is safe only because a ``FULL`` commit syncs the log
before publishing its frames to other connections, so it is never used with
``NORMAL``; ``ATREPO_PURE=1`` turns it off with the other native paths.

**Threads.** Writes happen on one connection, guarded by a lock, normally
from the worker's writer thread; ``BEGIN IMMEDIATE`` takes SQLite's write
lock at the start of each transaction, so the one transaction that runs sees
the state it is about to change. Reads use one connection per thread
(``query_only``), each reading the last committed state; ``snapshot()`` pins
one state across several reads.

**Schema.** Versioned by ``PRAGMA user_version``: ``_MIGRATIONS[n]`` takes a
file from version ``n`` to ``n + 1`` in one transaction, so a store opened by
a newer atrepo upgrades itself and one from a newer atrepo is refused.
Repositories are referred to by an integer id (``accounts.id``) in the big
tables, which keeps their rows and indexes small; ``AUTOINCREMENT`` keeps a
deleted account's id from being reused under a stale ``BlockSource``.
Block and record CIDs are stored binary; blob CIDs as strings, since
``listBlobs`` orders and pages by the string.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from atrepo.core import _native, limits
from atrepo.core.blocks import BlockSource
from atrepo.core.cid import CID
from atrepo.core.errors import (
    InputFileError,
    InvalidRequest,
    LimitExceeded,
    MissingBlock,
    OutOfSync,
    StoreInUse,
    WriteAborted,
)
from atrepo.core.events import CommitEvent, encode_frame
from atrepo.core.repo import CommitResult, Repo
from atrepo.core.syntax import format_datetime

from .base import (
    ACCOUNT_STATUSES,
    Account,
    AccountState,
    AccountStatus,
    AppPassword,
    BlobFiles,
    BlobRow,
    EmailToken,
    EventRow,
    MakeEvent,
    Preference,
    RecordRow,
    RefreshToken,
    RepoHead,
    Rotation,
    SeqFloor,
    in_namespace,
)

if TYPE_CHECKING:
    from .base import RepoTransaction, Store

__all__ = ["DB_FILENAME", "SQLiteStore", "Synchronous", "raise_seq_floor"]

_log = logging.getLogger("atrepo.store")

DB_FILENAME: Final = "store.sqlite3"
BLOBS_DIRNAME: Final = "blobs"
Synchronous = Literal["FULL", "NORMAL"]

_V1 = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    did TEXT NOT NULL UNIQUE,
    handle TEXT NOT NULL COLLATE NOCASE UNIQUE,
    email TEXT COLLATE NOCASE UNIQUE,
    password_hash TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('active', 'takendown', 'suspended', 'deactivated', 'deleted')),
    signing_key BLOB NOT NULL,
    head BLOB,
    rev TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX accounts_by_created ON accounts (created_ms, did);

CREATE TABLE blocks (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid BLOB NOT NULL,
    rev TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX blocks_by_cid ON blocks (repo, cid);
CREATE INDEX blocks_by_rev ON blocks (repo, rev);

CREATE TABLE records (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    rkey TEXT NOT NULL,
    cid BLOB NOT NULL,
    rev TEXT NOT NULL
);
CREATE UNIQUE INDEX records_by_path ON records (repo, collection, rkey);
CREATE INDEX records_by_cid ON records (repo, cid);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_ms INTEGER NOT NULL,
    next_id TEXT
);
CREATE INDEX refresh_tokens_by_repo ON refresh_tokens (repo);
CREATE INDEX refresh_tokens_by_next ON refresh_tokens (next_id) WHERE next_id IS NOT NULL;
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_ms);

CREATE TABLE blobs (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid TEXT NOT NULL,
    mime TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    temporary INTEGER NOT NULL,
    PRIMARY KEY (repo, cid)
);
CREATE INDEX blobs_by_cid ON blobs (cid);
CREATE INDEX blobs_temporary ON blobs (created_ms) WHERE temporary = 1;

CREATE TABLE blob_refs (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cid TEXT NOT NULL,
    collection TEXT NOT NULL,
    rkey TEXT NOT NULL,
    PRIMARY KEY (repo, cid, collection, rkey)
);
CREATE INDEX blob_refs_by_record ON blob_refs (repo, collection, rkey);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    did TEXT NOT NULL,
    type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    frame BLOB NOT NULL
);
CREATE INDEX events_by_time ON events (time_ms);

-- The last seq and time handed out: a row, not MAX(seq), so that pruning the
-- whole log never brings a seq back, and updated inside the appending
-- transaction, so that a rollback leaves no gap.
CREATE TABLE event_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL
);
INSERT INTO event_seq (id, seq, time_ms) VALUES (1, 0, 0);
"""

# Version 2: private account preferences (``app.bsky.actor.putPreferences``), one row per
# preference in the order the client put them; ``name`` is its ``$type``, so that one
# namespace's preferences are replaced without touching another's.
_V2 = """
CREATE TABLE preferences (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (repo, position)
);
"""

# Account lifecycle (accounts.md §6, §8): a takedown's reference and the deactivation time kept
# apart from ``status`` (which stays the effective one: takedown wins), so that reversing one
# restores the other; one-time e-mail-style tokens per (account, purpose) (``delete_account``);
# blob takedowns. Rows already deactivated or taken down get the matching column.
_V_LIFECYCLE = """
ALTER TABLE accounts ADD COLUMN takedown_ref TEXT;
ALTER TABLE accounts ADD COLUMN deactivated_ms INTEGER;
ALTER TABLE accounts ADD COLUMN delete_after_ms INTEGER;
UPDATE accounts SET deactivated_ms = created_ms WHERE status = 'deactivated';
UPDATE accounts SET takedown_ref = 'takendown' WHERE status = 'takendown';
ALTER TABLE blobs ADD COLUMN takedown_ref TEXT;
CREATE TABLE email_tokens (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    token TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    PRIMARY KEY (repo, purpose)
);
"""

# App passwords (accounts.md §4): scrypt hashes, ``(repo, name)`` unique; a refresh token names
# the app password it was issued under, so that revoking one ends its sessions' refreshes.
_V_APP_PASSWORDS = """
CREATE TABLE app_passwords (
    repo INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    privileged INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (repo, name)
);
ALTER TABLE refresh_tokens ADD COLUMN app_password TEXT;
CREATE INDEX refresh_tokens_by_app_password ON refresh_tokens (repo, app_password)
    WHERE app_password IS NOT NULL;
"""

#: ``_MIGRATIONS[n]`` upgrades a file at ``user_version`` n to n + 1. Append, never edit.
_MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2, _V_LIFECYCLE, _V_APP_PASSWORDS)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_ACCOUNT_COLUMNS = "did, handle, email, password_hash, status, signing_key, head, rev, created_ms"
_BATCH = 256
#: Most CIDs one ``repo_block_reader`` query names (SQLite allows 32766 parameters).
_IN_BATCH = 256


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


#: (second, its text up to the seconds) of the last event time formatted: events come many a second.
_formatted_second: tuple[int, str] = (-1, "")


def _format_ms(ms: int) -> str:
    """``time_ms`` as the event's ``time`` string, the seconds part formatted once per second."""
    global _formatted_second
    second, rest = divmod(ms, 1000)
    cached, text = _formatted_second  # one read of the pair: safe with several writer threads
    if cached != second:
        # format_datetime's text for the whole second, without its ".000Z"
        text = format_datetime(datetime.fromtimestamp(second, UTC))[:-5]
        _formatted_second = (second, text)
    return f"{text}.{rest:03d}Z"


def _account(row: Any) -> Account:
    did, handle, email, password_hash, status, key, head, rev, created_ms = row
    return Account(
        did,
        handle,
        email,
        password_hash,
        status,
        bytes(key),
        CID(head) if head is not None else None,
        rev,
        created_ms,
    )


def _token(row: Any) -> RefreshToken:
    return RefreshToken(row[0], row[1], row[2], row[3], row[4])


def _blob(row: Any) -> BlobRow:
    did, cid, mime, size, created_ms, temporary = row
    return BlobRow(did, CID.parse(cid), mime, size, created_ms, bool(temporary))


def _split(path: str) -> tuple[str, str]:
    collection, _, rkey = path.partition("/")
    return collection, rkey


class _Blocks:
    """A ``BlockSource`` over one repository, on whichever connection ``connection()`` gives."""

    __slots__ = ("_connection", "_repo")

    def __init__(self, connection: Callable[[], sqlite3.Connection], repo: int | None) -> None:
        self._connection = connection
        self._repo = repo

    def get(self, cid: CID) -> bytes | None:
        if self._repo is None:
            return None
        row = (
            self._connection()
            .execute("SELECT data FROM blocks WHERE repo = ? AND cid = ?", (self._repo, cid.raw))
            .fetchone()
        )
        return row[0] if row is not None else None


class _Staged:
    """A ``BlockSource`` over the blocks a transaction staged (``import_staging``, a TEMP table)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection

    def get(self, cid: CID) -> bytes | None:
        query = "SELECT data FROM import_staging WHERE cid = ?"
        row = self._connection().execute(query, (cid.raw,)).fetchone()
        return row[0] if row is not None else None


#: WAL pages after which the committing connection checkpoints inline (SQLite's default is 1000):
#: then the log restarts from its beginning (see ``_Checkpointer``).
WAL_BACKSTOP_PAGES: Final = 8000
#: Least time between two background checkpoints while writes keep coming: SQLite's default
#: checkpointed about this often at a few hundred small commits a second.
CHECKPOINT_INTERVAL_S: Final = 0.2


class _Checkpointer:
    """Copies the write-ahead log into the database file on its own thread and connection.

    SQLite checkpoints after a commit on the committing connection once the
    log passes 1000 pages: one write in every few dozen then also copies
    about a thousand pages into the file and fsyncs it, milliseconds to tens
    of milliseconds on the writer's path, so a client waits for a checkpoint
    instead of its write. Here the writer pokes this thread after each
    commit, and at most every ``interval`` it runs a ``PASSIVE`` checkpoint,
    which never takes the write lock and runs beside commits. Durability
    does not depend on it: a commit is durable once its log frames are
    synced, which the committing connection still does (``synchronous``); a
    checkpoint only moves synced frames into the file, and SQLite syncs the
    log before and the file after.

    The log restarts from its beginning only at a write that begins after a
    checkpoint copied every frame, which a checkpoint running beside
    back-to-back commits seldom manages. So the log runs on to
    :data:`WAL_BACKSTOP_PAGES` (its file then stays that size, about 32 MiB,
    overwritten in place), where the writer's own automatic checkpoint
    copies what this thread has not yet (at most ``interval``'s worth of
    commits) and the log restarts: a short stall every few thousand pages
    instead of a long one every thousand.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float) -> None:
        self._connect = connect
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        #: Checkpoint passes run (tests and ``/metrics``-style introspection).
        self.passes = 0
        self._thread = threading.Thread(target=self._loop, name="atrepo-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A commit landed: checkpoint soon (cheap when a checkpoint is already due)."""
        if not self._wake.is_set():
            self._wake.set()

    def close(self) -> None:
        """Stop the thread (a pass in progress finishes); the log is left for the next opener."""
        self._stopping.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                # Commits keep coming: let them gather, at most one checkpoint per interval.
                if self._stopping.wait(self._interval):
                    return
                self._wake.clear()
                if db is None:
                    db = self._connect()
                self._checkpoint(db)
        except Exception:  # pragma: no cover - e.g. the file vanished; the writer's backstop remains
            _log.exception("background checkpoint failed; checkpoints fall back to the writer")
        finally:
            if db is not None:
                db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.passes += 1


@functools.cache
def wal_batch_vfs() -> str | None:
    """The name of the log-gathering VFS shim (registered on first use), or None without it.

    None when the extension was not built, ``ATREPO_PURE`` is set, or SQLite
    refused the registration (a Python whose ``sqlite3`` links another SQLite
    library than the one the shim was built against would not find it either:
    see ``SQLiteStore._open_writer``).
    """
    if _native.PURE:
        return None
    try:
        from . import _walbatch  # type: ignore[attr-defined]
    except ImportError:
        return None
    name: str | None = _walbatch.register()
    return name


class SQLiteStore:
    """Every table of a host in ``<data_dir>/store.sqlite3``, blob bytes in ``<data_dir>/blobs/``."""

    #: MST nodes a bulk export (``getRepo``) should read ahead of the walk per read, beyond the
    #: children it asks for: 0 here, where a query costs microseconds; a backend whose every query
    #: is a round trip to a server sets a budget (see ``host.sync_api``).
    read_ahead_nodes: ClassVar[int] = 0

    def __init__(
        self,
        data_dir: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], int] = _wall_clock_ms,
        busy_timeout_ms: int = 10_000,
        background_checkpoint: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILENAME
        self._clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._blob_files = BlobFiles(self.data_dir / BLOBS_DIRNAME)
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._group_open = False
        self._in_savepoint = False
        self._after_commit: list[set[str]] = []
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._open_writer(synchronous)
        try:
            (mode,) = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._writer.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate()
        except BaseException:
            self._writer.close()
            raise
        # Checkpoints off the writer's path (see _Checkpointer); SQLite's own stays as the backstop.
        self._checkpointer: _Checkpointer | None = None
        if background_checkpoint:
            self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            self._checkpointer = _Checkpointer(self._connect, CHECKPOINT_INTERVAL_S)

    # --- connections ------------------------------------------------------------------

    def _connect(self, *, read_only: bool = False, vfs: str | None = None) -> sqlite3.Connection:
        target: str | Path = self.path
        if vfs is not None:  # a URI names the VFS; the path is quoted into it
            target = f"{self.path.resolve().as_uri()}?vfs={vfs}"
        db = sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, cached_statements=128, uri=vfs is not None
        )
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        db.execute("PRAGMA foreign_keys=ON")
        if read_only:
            db.execute("PRAGMA query_only=ON")
        return db

    def _open_writer(self, synchronous: Synchronous) -> sqlite3.Connection:
        vfs = wal_batch_vfs() if synchronous == "FULL" else None
        if vfs is not None:
            try:
                return self._connect(vfs=vfs)
            except sqlite3.OperationalError as exc:  # registered in another SQLite library than Python's
                _log.warning("SQLite log-gathering VFS unavailable (%s); writing the log frame by frame", exc)
        return self._connect()

    def _read(self) -> sqlite3.Connection:
        """This thread's read connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect(read_only=True)
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _migrate(self) -> None:
        db = self._writer
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}; this atrepo knows up to {SCHEMA_VERSION}"
            )
        for number in range(version, SCHEMA_VERSION):
            script = _MIGRATIONS[number]
            try:
                db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number + 1};\nCOMMIT;")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error).

        Inside a :meth:`group_commit` on this thread the write is a savepoint of
        the group's transaction instead: released on success, rolled back (alone)
        on error, and made durable by the group's one ``COMMIT``.
        """
        me = threading.get_ident()
        if self._write_owner == me:
            if self._group_open and not self._in_savepoint:
                yield from self._savepoint()
                return
            raise RuntimeError("this thread is already inside a store write transaction")
        with self._write_lock:
            self._write_owner = me
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # a failed COMMIT (disk full, I/O error) leaves it open
                        db.execute("ROLLBACK")
                    raise
            finally:
                self._write_owner = None
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        db = self._writer
        if not db.in_transaction:  # an earlier failure (I/O error, disk full) ended the group's transaction
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

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """One transaction, and so one fsync, for several write jobs run one after another in it.

        The store worker opens a group when writes are queued behind each
        other: each job's ``transaction``/write becomes a savepoint (a job that
        fails rolls back only its own changes), and the group's single
        ``COMMIT`` makes them all durable at once. Nothing a job wrote is
        acknowledged before that ``COMMIT`` returns, so an acknowledged write
        survives ``kill -9`` exactly as with one transaction per write; work
        that must wait for durability (deleting blob files no row names any
        more) is deferred to after it. If the ``COMMIT`` fails, or an error
        ends the transaction early (:attr:`group_aborted`), every job in the
        group has failed and the caller must report that error for each.
        """
        me = threading.get_ident()
        if self._write_owner == me:
            raise RuntimeError("this thread is already inside a store write transaction")
        with self._write_lock:
            self._write_owner = me
            self._group_open = True
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    if not db.in_transaction:
                        raise WriteAborted("the group commit's transaction was rolled back by an error")
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    self._after_commit.clear()
                    raise
            finally:
                self._group_open = False
                self._write_owner = None
        if self._checkpointer is not None:
            self._checkpointer.poke()
        deferred, self._after_commit = self._after_commit, []
        for cids in deferred:
            self._delete_orphan_files(cids)

    @property
    def group_aborted(self) -> bool:
        """Inside a group: whether an error already ended its transaction (every job in it is lost)."""
        return self._group_open and not self._writer.in_transaction

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()

    @property
    def blob_files(self) -> BlobFiles:
        return self._blob_files

    @property
    def schema_version(self) -> int:
        (version,) = self._read().execute("PRAGMA user_version").fetchone()
        return int(version)

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` and ``foreign_key_check``: ``["ok"]`` when the file is sound."""
        db = self._read()
        problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        problems += [f"foreign key: {tuple(row)}" for row in db.execute("PRAGMA foreign_key_check")]
        return problems

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        db = self._read()
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            db.execute("BEGIN")
            db.execute("SELECT seq FROM event_seq").fetchall()  # the read transaction starts here
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                db.execute("COMMIT")

    @contextmanager
    def transaction(self, did: str) -> Iterator[SQLiteTransaction]:
        with self._write() as db:
            tx = self._open_transaction(db, did)
            try:
                yield tx
            finally:
                tx._live = False
        # committed: files of blobs that no account holds any more can go (in a group, once it commits)
        if tx._orphan_candidates:
            self._delete_orphan_files(tx._orphan_candidates)

    def _open_transaction(self, db: sqlite3.Connection, did: str) -> SQLiteTransaction:
        """The repository transaction on ``db``; the single writer already serializes each repository
        (the PostgreSQL store takes the repository's lock here instead)."""
        return SQLiteTransaction(self, db, did)

    def _delete_orphan_files(self, cids: Iterable[str]) -> None:
        """Delete the files of blobs no row names any more, once the deleting write is durable.

        Inside a group commit on this thread the group holds the write lock
        and has not committed yet: the files go after its ``COMMIT`` (taking
        the lock here would wait on ourselves for ever).
        """
        if self._group_open and self._write_owner == threading.get_ident():
            self._after_commit.append(set(cids))
            return
        with self._write_lock:  # the check and the unlink happen between writes, never inside one
            for cid in cids:
                held = self._writer.execute("SELECT 1 FROM blobs WHERE cid = ? LIMIT 1", (cid,)).fetchone()
                if held is None:
                    self._blob_files.delete(CID.parse(cid))

    # --- repositories -----------------------------------------------------------------

    def _repo_id(self, db: sqlite3.Connection, did: str) -> int | None:
        row = db.execute("SELECT id FROM accounts WHERE did = ?", (did,)).fetchone()
        return row[0] if row is not None else None

    def repo_blocks(self, did: str) -> BlockSource:
        return _Blocks(self._read, self._repo_id(self._read(), did))

    def repo_head(self, did: str) -> RepoHead | None:
        row = self._read().execute("SELECT head, rev FROM accounts WHERE did = ?", (did,)).fetchone()
        if row is None or row[0] is None:
            return None
        return RepoHead(CID(row[0]), row[1])

    def get_blocks(self, did: str, cids: Iterable[CID]) -> dict[CID, bytes]:
        db = self._read()
        repo = self._repo_id(db, did)
        out: dict[CID, bytes] = {}
        if repo is None:
            return out
        wanted = {cid.raw: cid for cid in cids}
        raws = list(wanted)
        for start in range(0, len(raws), _IN_BATCH):  # many blocks to a query, as getRepo reads them
            chunk = raws[start : start + _IN_BATCH]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT cid, data FROM blocks WHERE repo = ? AND cid IN ({marks})"
            for raw, data in db.execute(query, (repo, *chunk)):
                out[wanted[raw]] = data
        return out

    def repo_block_reader(self, did: str) -> Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]] | None:
        """A reader of this repository's blocks by binary CID, many in one query, on this thread's
        connection (so inside ``snapshot()``, the snapshot's state); None for an unknown DID.

        ``read(cids)`` yields (cid, data) for those present, in no particular order; at most
        ``_IN_BATCH`` CIDs a call. For bulk exports: one query instead of one per block.
        """
        db = self._read()
        repo = self._repo_id(db, did)
        if repo is None:
            return None
        queries: dict[int, str] = {}

        def read(cids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
            n = len(cids)
            if n > _IN_BATCH:
                raise ValueError(f"at most {_IN_BATCH} CIDs a read")
            sql = queries.get(n)
            if sql is None:
                sql = queries[n] = (
                    f"SELECT cid, data FROM blocks WHERE repo = ? AND cid IN ({','.join('?' * n)})"
                )
            return iter(db.execute(sql, (repo, *cids)))

        return read

    def repo_record_blocks(self, did: str) -> Iterator[tuple[bytes, bytes]] | None:
        """Every record block of the repository as (binary CID, data), ordered by (collection, rkey),
        from this thread's connection (inside ``snapshot()``, the snapshot's state); None for an
        unknown DID.

        One join in SQLite's C code instead of a query per few hundred records. The order is the
        tree's key order except where one collection's NSID extends another's with a ``.`` (it sorts
        before ``/``), so a caller walking the tree must check each CID and fall back when they part.
        """
        db = self._read()
        repo = self._repo_id(db, did)
        if repo is None:
            return None
        return iter(
            db.execute(
                "SELECT records.cid, blocks.data FROM records "
                "JOIN blocks ON blocks.repo = records.repo AND blocks.cid = records.cid "
                "WHERE records.repo = ? ORDER BY records.collection, records.rkey",
                (repo,),
            )
        )

    def blocks_since(self, did: str, since: str | None) -> Iterator[tuple[CID, bytes]]:
        db = self._read()
        repo = self._repo_id(db, did)
        if repo is None:
            return
        cursor = db.execute(
            "SELECT cid, data FROM blocks WHERE repo = ? AND rev > ? ORDER BY rev", (repo, since or "")
        )
        while rows := cursor.fetchmany(_BATCH):
            for cid, data in rows:
                yield CID(cid), data

    # --- record index -----------------------------------------------------------------

    def get_record(self, did: str, collection: str, rkey: str) -> RecordRow | None:
        row = (
            self._read()
            .execute(
                "SELECT r.cid, r.rev FROM records r JOIN accounts a ON a.id = r.repo "
                "WHERE a.did = ? AND r.collection = ? AND r.rkey = ?",
                (did, collection, rkey),
            )
            .fetchone()
        )
        return RecordRow(did, collection, rkey, CID(row[0]), row[1]) if row is not None else None

    def list_records(
        self, did: str, collection: str, *, cursor: str | None = None, limit: int = 50, reverse: bool = False
    ) -> list[RecordRow]:
        if limit <= 0:
            return []
        order, compare = ("ASC", ">") if reverse else ("DESC", "<")
        sql = (
            "SELECT r.rkey, r.cid, r.rev FROM records r JOIN accounts a ON a.id = r.repo "
            "WHERE a.did = ? AND r.collection = ?"
        )
        params: list[Any] = [did, collection]
        if cursor is not None:
            sql += f" AND r.rkey {compare} ?"
            params.append(cursor)
        sql += f" ORDER BY r.rkey {order} LIMIT ?"
        params.append(limit)
        rows = self._read().execute(sql, params).fetchall()
        return [RecordRow(did, collection, rkey, CID(cid), rev) for rkey, cid, rev in rows]

    def list_collections(self, did: str) -> list[str]:
        rows = (
            self._read()
            .execute(
                "SELECT DISTINCT r.collection FROM records r JOIN accounts a ON a.id = r.repo "
                "WHERE a.did = ? ORDER BY r.collection",
                (did,),
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    # --- accounts -----------------------------------------------------------------------

    def _account_where(self, where: str, value: object) -> Account | None:
        row = (
            self._read()
            .execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE {where}", (value,))
            .fetchone()
        )
        return _account(row) if row is not None else None

    def get_account(self, did: str) -> Account | None:
        return self._account_where("did = ?", did)

    def get_account_by_handle(self, handle: str) -> Account | None:
        return self._account_where("handle = ?", handle)  # the column's NOCASE collation applies

    def get_account_by_email(self, email: str) -> Account | None:
        return self._account_where("email = ?", email)

    def list_accounts(self, *, after: tuple[int, str] | None = None, limit: int = 500) -> list[Account]:
        start = after if after is not None else (-(2**62), "")
        rows = (
            self._read()
            .execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE (created_ms, did) > (?, ?) "
                "ORDER BY created_ms, did LIMIT ?",
                (*start, limit),
            )
            .fetchall()
        )
        return [_account(row) for row in rows]

    def count_accounts(self) -> dict[str, int]:
        rows = self._read().execute("SELECT status, COUNT(*) FROM accounts GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in rows}

    def get_account_state(self, did: str) -> AccountState | None:
        row = (
            self._read()
            .execute(
                "SELECT did, status, takedown_ref, deactivated_ms, delete_after_ms "
                "FROM accounts WHERE did = ?",
                (did,),
            )
            .fetchone()
        )
        return AccountState(*row) if row is not None else None

    # --- refresh tokens ---------------------------------------------------------------

    _TOKEN_SELECT = (
        "SELECT t.id, a.did, t.expires_ms, t.next_id, t.app_password "
        "FROM refresh_tokens t JOIN accounts a ON a.id = t.repo "
    )

    def get_refresh_token(self, token_id: str) -> RefreshToken | None:
        return self._get_token(self._read(), token_id)

    def _get_token(self, db: sqlite3.Connection, token_id: str) -> RefreshToken | None:
        row = db.execute(self._TOKEN_SELECT + "WHERE t.id = ?", (token_id,)).fetchone()
        return _token(row) if row is not None else None

    def create_refresh_token(self, token: RefreshToken) -> None:
        if token.next_id is not None:
            raise RuntimeError("a new refresh token has no successor yet")
        with self._write() as db:
            repo = self._repo_id(db, token.did)
            if repo is None:
                raise RuntimeError(f"no account {token.did} for a refresh token")
            db.execute(
                "INSERT INTO refresh_tokens (id, repo, expires_ms, next_id, app_password) "
                "VALUES (?, ?, ?, NULL, ?)",
                (token.id, repo, token.expires_ms, token.app_password),
            )

    def rotate_refresh_token(
        self, token_id: str, next_id: str, *, now_ms: int, next_expires_ms: int, grace_ms: int
    ) -> Rotation | None:
        with self._write() as db:
            presented = self._get_token(db, token_id)
            if presented is None:
                return None
            if presented.next_id is not None:
                return Rotation(presented, self._get_token(db, presented.next_id), reused=True)
            if presented.expires_ms <= now_ms:
                return Rotation(presented, None, reused=False)
            db.execute(
                "UPDATE refresh_tokens SET next_id = ?, expires_ms = MIN(expires_ms, ?) WHERE id = ?",
                (next_id, now_ms + grace_ms, token_id),
            )
            db.execute(
                "INSERT INTO refresh_tokens (id, repo, expires_ms, next_id, app_password) "
                "SELECT ?, repo, ?, NULL, app_password FROM refresh_tokens WHERE id = ?",
                (next_id, next_expires_ms, token_id),
            )
            successor = RefreshToken(
                next_id, presented.did, next_expires_ms, app_password=presented.app_password
            )
            return Rotation(presented, successor, reused=False)

    def revoke_refresh_chain(self, token_id: str) -> int:
        with self._write() as db:
            family: set[str] = set()
            todo = [token_id]
            while todo:
                current = todo.pop()
                if current in family:
                    continue
                family.add(current)
                row = db.execute("SELECT next_id FROM refresh_tokens WHERE id = ?", (current,)).fetchone()
                if row is not None and row[0] is not None:
                    todo.append(row[0])
                todo += [
                    r[0] for r in db.execute("SELECT id FROM refresh_tokens WHERE next_id = ?", (current,))
                ]
            deleted = 0
            for member in family:
                deleted += db.execute("DELETE FROM refresh_tokens WHERE id = ?", (member,)).rowcount
            return deleted

    def revoke_refresh_tokens(self, did: str) -> int:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM refresh_tokens WHERE repo = (SELECT id FROM accounts WHERE did = ?)", (did,)
            )
            return cursor.rowcount

    def delete_refresh_token(self, token_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM refresh_tokens WHERE id = ?", (token_id,)).rowcount > 0

    def prune_refresh_tokens(self, now_ms: int) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM refresh_tokens WHERE expires_ms <= ?", (now_ms,)).rowcount

    # --- app passwords ----------------------------------------------------------------

    _APP_PASSWORD_SELECT = (
        "SELECT a.did, p.name, p.password_hash, p.privileged, p.created_ms "
        "FROM app_passwords p JOIN accounts a ON a.id = p.repo "
    )

    def list_app_passwords(self, did: str) -> list[AppPassword]:
        rows = (
            self._read()
            .execute(self._APP_PASSWORD_SELECT + "WHERE a.did = ? ORDER BY p.created_ms DESC, p.name", (did,))
            .fetchall()
        )
        return [AppPassword(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def get_app_password(self, did: str, name: str) -> AppPassword | None:
        r = (
            self._read()
            .execute(self._APP_PASSWORD_SELECT + "WHERE a.did = ? AND p.name = ?", (did, name))
            .fetchone()
        )
        return AppPassword(r[0], r[1], r[2], bool(r[3]), r[4]) if r is not None else None

    def create_app_password(self, password: AppPassword) -> None:
        with self._write() as db:
            repo = self._repo_id(db, password.did)
            if repo is None:
                raise RuntimeError(f"no account {password.did} for an app password")
            try:
                db.execute(
                    "INSERT INTO app_passwords (repo, name, password_hash, privileged, created_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        repo,
                        password.name,
                        password.password_hash,
                        int(password.privileged),
                        password.created_ms,
                    ),
                )
            except sqlite3.IntegrityError:
                raise InvalidRequest("An app password with this name already exists", path="name") from None

    def revoke_app_password(self, did: str, name: str) -> tuple[bool, int]:
        with self._write() as db:
            repo = self._repo_id(db, did)
            if repo is None:
                return False, 0
            found = db.execute("DELETE FROM app_passwords WHERE repo = ? AND name = ?", (repo, name)).rowcount
            tokens = db.execute(
                "DELETE FROM refresh_tokens WHERE repo = ? AND app_password = ?", (repo, name)
            ).rowcount
            return found > 0, tokens

    # --- e-mail tokens ----------------------------------------------------------------

    def put_email_token(self, did: str, purpose: str, token: str, now_ms: int) -> EmailToken:
        with self._write() as db:
            repo = self._repo_id(db, did)
            if repo is None:
                raise RuntimeError(f"no account {did} for a token")
            db.execute(
                "INSERT INTO email_tokens (repo, purpose, token, requested_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (repo, purpose) DO UPDATE SET token = excluded.token, "
                "requested_ms = excluded.requested_ms",
                (repo, purpose, token, now_ms),
            )
        return EmailToken(did, purpose, token, now_ms)

    def get_email_token(self, did: str, purpose: str) -> EmailToken | None:
        row = (
            self._read()
            .execute(
                "SELECT t.token, t.requested_ms FROM email_tokens t JOIN accounts a ON a.id = t.repo "
                "WHERE a.did = ? AND t.purpose = ?",
                (did, purpose),
            )
            .fetchone()
        )
        return EmailToken(did, purpose, row[0], row[1]) if row is not None else None

    def delete_email_token(self, did: str, purpose: str) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM email_tokens "
                "WHERE repo = (SELECT id FROM accounts WHERE did = ?) AND purpose = ?",
                (did, purpose),
            )
            return cursor.rowcount > 0

    def list_email_tokens(self, purpose: str, *, requested_after_ms: int) -> list[EmailToken]:
        rows = (
            self._read()
            .execute(
                "SELECT a.did, t.token, t.requested_ms FROM email_tokens t JOIN accounts a ON a.id = t.repo "
                "WHERE t.purpose = ? AND t.requested_ms > ? ORDER BY t.requested_ms, a.did",
                (purpose, requested_after_ms),
            )
            .fetchall()
        )
        return [EmailToken(did, purpose, token, ms) for did, token, ms in rows]

    # --- blobs ------------------------------------------------------------------------

    def get_blob(self, did: str, cid: CID) -> BlobRow | None:
        row = (
            self._read()
            .execute(
                "SELECT a.did, b.cid, b.mime, b.size, b.created_ms, b.temporary FROM blobs b "
                "JOIN accounts a ON a.id = b.repo WHERE a.did = ? AND b.cid = ?",
                (did, str(cid)),
            )
            .fetchone()
        )
        return _blob(row) if row is not None else None

    def list_blobs(
        self, did: str, *, since: str | None = None, cursor: str | None = None, limit: int = 500
    ) -> list[CID]:
        if since is None:
            sql = (
                "SELECT DISTINCT r.cid FROM blob_refs r JOIN accounts a ON a.id = r.repo "
                "WHERE a.did = ? AND r.cid > ? ORDER BY r.cid LIMIT ?"
            )
            params: tuple[Any, ...] = (did, cursor or "", limit)
        else:  # the record's rev says which commit wrote the reference (reference ``listBlobs``)
            sql = (
                "SELECT DISTINCT r.cid FROM blob_refs r JOIN accounts a ON a.id = r.repo "
                "JOIN records rec ON rec.repo = r.repo AND rec.collection = r.collection "
                "AND rec.rkey = r.rkey WHERE a.did = ? AND rec.rev > ? AND r.cid > ? ORDER BY r.cid LIMIT ?"
            )
            params = (did, since, cursor or "", limit)
        rows = self._read().execute(sql, params).fetchall()
        return [CID.parse(row[0]) for row in rows]

    def blob_records(self, did: str, cid: CID) -> list[str]:
        rows = (
            self._read()
            .execute(
                "SELECT r.collection, r.rkey FROM blob_refs r JOIN accounts a ON a.id = r.repo "
                "WHERE a.did = ? AND r.cid = ? ORDER BY r.collection, r.rkey",
                (did, str(cid)),
            )
            .fetchall()
        )
        return [f"{collection}/{rkey}" for collection, rkey in rows]

    def list_missing_blobs(
        self, did: str, *, cursor: str | None = None, limit: int = 500
    ) -> list[tuple[CID, str]]:
        rows = (
            self._read()
            .execute(
                "SELECT r.cid, r.collection, r.rkey FROM blob_refs r JOIN accounts a ON a.id = r.repo "
                "WHERE a.did = ? AND r.cid > ? "
                "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.repo = r.repo AND b.cid = r.cid) "
                "ORDER BY r.cid, r.collection, r.rkey LIMIT ?",
                (did, cursor or "", limit),
            )
            .fetchall()
        )
        return [(CID.parse(cid), f"{collection}/{rkey}") for cid, collection, rkey in rows]

    def prune_temporary_blobs(self, before_ms: int) -> int:
        with self._write() as db:
            cids = [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT cid FROM blobs WHERE temporary = 1 AND created_ms < ?", (before_ms,)
                )
            ]
            count = db.execute(
                "DELETE FROM blobs WHERE temporary = 1 AND created_ms < ?", (before_ms,)
            ).rowcount
        self._delete_orphan_files(cids)
        return count

    def blob_takedown(self, did: str, cid: CID) -> str | None:
        row = (
            self._read()
            .execute(
                "SELECT b.takedown_ref FROM blobs b JOIN accounts a ON a.id = b.repo "
                "WHERE a.did = ? AND b.cid = ?",
                (did, str(cid)),
            )
            .fetchone()
        )
        return row[0] if row is not None else None

    def set_blob_takedown(self, did: str, cid: CID, ref: str | None) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE blobs SET takedown_ref = ? WHERE repo = (SELECT id FROM accounts WHERE did = ?) "
                "AND cid = ?",
                (ref, did, str(cid)),
            )
            return cursor.rowcount > 0

    # --- preferences ------------------------------------------------------------------

    def get_preferences(self, did: str, namespace: str) -> list[Preference]:
        rows = (
            self._read()
            .execute(
                "SELECT p.name, p.value FROM preferences p JOIN accounts a ON a.id = p.repo "
                "WHERE a.did = ? ORDER BY p.position",
                (did,),
            )
            .fetchall()
        )
        return [Preference(name, value) for name, value in rows if in_namespace(name, namespace)]

    def put_preferences(self, did: str, namespace: str, prefs: Sequence[Preference]) -> None:
        stray = [pref.name for pref in prefs if not in_namespace(pref.name, namespace)]
        if stray:
            raise ValueError(f"preferences outside {namespace}: {stray}")
        with self._write() as db:
            repo = self._repo_id(db, did)
            if repo is None:
                raise RuntimeError(f"no account {did} for preferences")
            # Few rows per account: rewrite them all, other namespaces first, in their order.
            kept = [
                (name, value)
                for name, value in db.execute(
                    "SELECT name, value FROM preferences WHERE repo = ? ORDER BY position", (repo,)
                )
                if not in_namespace(name, namespace)
            ]
            db.execute("DELETE FROM preferences WHERE repo = ?", (repo,))
            db.executemany(
                "INSERT INTO preferences (repo, position, name, value) VALUES (?, ?, ?, ?)",
                [
                    (repo, position, name, value)
                    for position, (name, value) in enumerate(kept + [(p.name, p.value) for p in prefs])
                ],
            )

    # --- event log --------------------------------------------------------------------

    def head_seq(self) -> int:
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
        with self._write() as db:
            return db.execute("DELETE FROM events WHERE time_ms < ?", (before_ms,)).rowcount


def raise_seq_floor(data_dir: str | Path, next_seq: int) -> SeqFloor:
    """Make the next event seq of a *stopped* host's log at least ``next_seq`` (never lower it).

    The remedy for a store restored from a backup: its log hands out seqs
    that relays have already seen from the lost timeline, and a relay treats
    a host whose seq went backwards as broken. Raising the floor past the
    highest seq ever published makes the next event newer than all of them.

    The file is opened in SQLite's exclusive locking mode and the change made
    in one ``BEGIN EXCLUSIVE`` transaction: any other connection (a running
    host keeps its writer open for its whole life) makes that fail at once
    with :class:`StoreInUse`, and while this runs a host cannot start on the
    file. The schema is not migrated here (that is the host's job at start).
    """
    check_next_seq(next_seq)
    path = Path(data_dir) / DB_FILENAME
    if not path.is_file():
        raise InputFileError(f"no store at {path}")
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise StoreInUse(f"{path} is in use ({exc}): stop the host that runs on it, then retry") from None
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if not 1 <= version <= SCHEMA_VERSION:
                raise InvalidRequest(
                    f"{path} has schema version {version}; this atrepo knows 1 to {SCHEMA_VERSION}"
                )
            floor = apply_seq_floor(db, next_seq)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return floor
    finally:
        db.close()


def check_next_seq(next_seq: int) -> None:
    """A seq floor must be a seq: 1 to ``MAX_SAFE_INT``."""
    if not 1 <= next_seq <= limits.MAX_SAFE_INT:
        raise InvalidRequest(f"the next seq must be between 1 and {limits.MAX_SAFE_INT}, not {next_seq}")


def apply_seq_floor(db: sqlite3.Connection, next_seq: int, *, lock: str = "") -> SeqFloor:
    """Inside a write transaction: raise the event counter so the next seq is at least ``next_seq``.

    Never lowers it, and counts the newest stored event too (a counter behind
    its log is raised past it). ``lock`` is appended to the counter's read
    (PostgreSQL's ``FOR UPDATE``). Shared by the SQLite file's remedy and
    :meth:`PostgresStore.raise_seq_floor`.
    """
    (head,) = db.execute(f"SELECT seq FROM event_seq WHERE id = 1{lock}").fetchone()
    (newest,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
    old_head = max(int(head), int(newest or 0))
    new_head = max(old_head, next_seq - 1)
    if new_head != int(head):
        db.execute("UPDATE event_seq SET seq = ? WHERE id = 1", (new_head,))
    return SeqFloor(old_head + 1, new_head + 1)


class SQLiteTransaction:
    """``RepoTransaction`` on the writer connection, inside ``BEGIN IMMEDIATE``."""

    #: How an event row is stored (PostgreSQL's also announces its seq to other processes).
    _insert_event: str = "INSERT INTO events (seq, did, type, time_ms, frame) VALUES (?, ?, ?, ?, ?)"

    def __init__(self, store: SQLiteStore, db: sqlite3.Connection, did: str) -> None:
        self._store = store
        self._db = db
        self._did = did
        # The account's row, read once: BEGIN IMMEDIATE holds the write lock, so nothing but this
        # transaction changes it until COMMIT, and each method here that changes it forgets it.
        row = db.execute(f"SELECT id, {_ACCOUNT_COLUMNS} FROM accounts WHERE did = ?", (did,)).fetchone()
        self._repo: int | None = row[0] if row is not None else None
        self._row: Account | None = _account(row[1:]) if row is not None else None
        self._events: list[EventRow] = []
        #: blob CIDs (strings) whose rows this transaction deleted: their files go after commit if unheld
        self._orphan_candidates: set[str] = set()
        self._staged = False  # import_staging holds this transaction's blocks
        self._live = True

    # --- reading the locked state -------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if not self._live:
            raise RuntimeError("the store transaction is over; read through store.repo_blocks(did)")
        return self._db

    def _require_repo(self) -> int:
        self._connection()
        if self._repo is None:
            raise RuntimeError(f"no account {self._did} in this store")
        return self._repo

    @property
    def did(self) -> str:
        return self._did

    @property
    def blocks(self) -> BlockSource:
        return _Blocks(self._block_connection, self._repo)

    def _block_connection(self) -> sqlite3.Connection:
        """The writer's while the transaction lives; then this thread's reader.

        A ``CommitResult.repo`` built inside the transaction reads through this
        source, and stays readable after the commit (blocks are content
        addressed: the committed ones are what it wants).
        """
        return self._db if self._live else self._store._read()

    @property
    def events(self) -> Sequence[EventRow]:
        return tuple(self._events)

    def account(self) -> Account | None:
        db = self._connection()
        if self._row is not None:
            return self._row
        row = db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE did = ?", (self._did,)).fetchone()
        self._row = _account(row) if row is not None else None
        return self._row

    def head(self) -> RepoHead | None:
        account = self.account()
        return account.repo_head if account is not None else None

    def open_repo(self) -> Repo:
        head = self.head()
        if head is None:
            raise RuntimeError(f"{self._did} has no commit yet")
        return Repo.open(self.blocks, head.cid)

    # --- account ------------------------------------------------------------------------

    def _check_free(self, column: str, value: str) -> None:
        row = (
            self._connection()
            .execute(f"SELECT did FROM accounts WHERE {column} = ? AND did != ?", (value, self._did))
            .fetchone()
        )
        if row is not None:
            raise InvalidRequest(f"{column} {value!r} is already taken", path=column, rule="unique")

    def create_account(
        self,
        *,
        handle: str,
        signing_key: bytes,
        email: str | None = None,
        password_hash: str | None = None,
        status: AccountStatus = "active",
    ) -> Account:
        db = self._connection()
        if self._repo is not None:
            raise InvalidRequest(f"account {self._did} already exists", path="did", rule="unique")
        _check_status(status)
        self._check_free("handle", handle)
        if email is not None:
            self._check_free("email", email)
        created = self._store._clock()
        cursor = db.execute(
            "INSERT INTO accounts (did, handle, email, password_hash, status, signing_key, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self._did, handle, email, password_hash, status, signing_key, created),
        )
        self._repo = cursor.lastrowid
        self._row = None
        return Account(
            self._did, handle, email, password_hash, status, bytes(signing_key), None, None, created
        )

    def _set(self, column: str, value: object) -> None:
        repo = self._require_repo()
        self._row = None
        self._db.execute(f"UPDATE accounts SET {column} = ? WHERE id = ?", (value, repo))

    def set_handle(self, handle: str) -> None:
        self._require_repo()
        self._check_free("handle", handle)
        self._set("handle", handle)

    def set_email(self, email: str | None) -> None:
        self._require_repo()
        if email is not None:
            self._check_free("email", email)
        self._set("email", email)

    def set_password_hash(self, password_hash: str | None) -> None:
        self._set("password_hash", password_hash)

    def set_status(self, status: AccountStatus) -> None:
        _check_status(status)
        self._set("status", status)

    def _lifecycle(self) -> tuple[str, str | None, int | None]:
        repo = self._require_repo()
        status, ref, deactivated = self._db.execute(
            "SELECT status, takedown_ref, deactivated_ms FROM accounts WHERE id = ?", (repo,)
        ).fetchone()
        return status, ref, deactivated

    def set_takedown(self, ref: str | None, *, now_ms: int) -> AccountStatus:
        status, _, deactivated = self._lifecycle()
        if status == "deactivated" and deactivated is None:  # deactivated before the column existed
            deactivated = now_ms
        new: AccountStatus
        if ref is not None:
            new = "takendown"
        else:
            new = "deactivated" if deactivated is not None else "active"
        self._row = None
        self._db.execute(
            "UPDATE accounts SET takedown_ref = ?, deactivated_ms = ?, status = ? WHERE id = ?",
            (ref, deactivated, new, self._repo),
        )
        return new

    def set_deactivated(
        self, deactivated: bool, *, now_ms: int, delete_after_ms: int | None = None
    ) -> AccountStatus:
        status, ref, since = self._lifecycle()
        taken_down = ref is not None or status == "takendown"
        new: AccountStatus = "takendown" if taken_down else "deactivated" if deactivated else "active"
        self._row = None
        self._db.execute(
            "UPDATE accounts SET deactivated_ms = ?, delete_after_ms = ?, status = ? WHERE id = ?",
            (
                (since if since is not None else now_ms) if deactivated else None,
                delete_after_ms if deactivated else None,
                new,
                self._repo,
            ),
        )
        return new

    def delete_account(self) -> None:
        repo = self._require_repo()
        db = self._db
        self._orphan_candidates.update(
            row[0] for row in db.execute("SELECT cid FROM blobs WHERE repo = ?", (repo,))
        )
        db.execute("DELETE FROM events WHERE did = ?", (self._did,))
        db.execute("DELETE FROM accounts WHERE id = ?", (repo,))  # cascades to every table keyed by repo
        self._repo = None
        self._row = None

    # --- commits ----------------------------------------------------------------------

    def apply_commit(
        self, result: CommitResult, *, blob_refs: Mapping[str, Iterable[CID]] | None = None
    ) -> None:
        repo = self._require_repo()
        db = self._db
        commit = result.commit
        if commit.did != self._did:
            raise RuntimeError(f"a commit of {commit.did} in a transaction of {self._did}")
        if self._row is not None:
            stored_rev = self._row.rev
        else:
            (stored_rev,) = db.execute("SELECT rev FROM accounts WHERE id = ?", (repo,)).fetchone()
        if result.since != stored_rev:
            raise OutOfSync(
                f"commit {commit.cid} of {self._did} follows rev {result.since}, "
                f"but the stored head is at rev {stored_rev}"
            )
        refs = {path: [str(cid) for cid in cids] for path, cids in (blob_refs or {}).items()}
        stray = set(refs) - {op.path for op in result.ops if op.action != "delete"}
        if stray:
            raise RuntimeError(f"blob_refs for paths this commit does not write: {sorted(stray)}")
        rev = commit.rev
        db.executemany(
            "INSERT OR IGNORE INTO blocks (repo, cid, rev, data) VALUES (?, ?, ?, ?)",
            [(repo, cid.raw, rev, data) for cid, data in result.blocks.items()],
        )
        unreferenced: set[str] = set()
        for op in result.ops:
            collection, rkey = _split(op.path)
            key = (repo, collection, rkey)
            if op.action != "create":
                unreferenced.update(
                    row[0]
                    for row in db.execute(
                        "SELECT cid FROM blob_refs WHERE repo = ? AND collection = ? AND rkey = ?", key
                    )
                )
                db.execute("DELETE FROM blob_refs WHERE repo = ? AND collection = ? AND rkey = ?", key)
            if op.action == "delete":
                db.execute("DELETE FROM records WHERE repo = ? AND collection = ? AND rkey = ?", key)
                continue
            assert op.cid is not None
            db.execute(
                "INSERT INTO records (repo, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (repo, collection, rkey) DO UPDATE SET cid = excluded.cid, rev = excluded.rev",
                (*key, op.cid.raw, rev),
            )
            for blob in refs.get(op.path, ()):
                db.execute(
                    "INSERT OR IGNORE INTO blob_refs (repo, cid, collection, rkey) VALUES (?, ?, ?, ?)",
                    (repo, blob, collection, rkey),
                )
                db.execute("UPDATE blobs SET temporary = 0 WHERE repo = ? AND cid = ?", (repo, blob))
        # After the index has its new state: a record block still indexed at some path stays.
        db.executemany(
            "DELETE FROM blocks WHERE repo = ? AND cid = ? "
            "AND NOT EXISTS (SELECT 1 FROM records WHERE repo = ? AND cid = ?)",
            [(repo, cid.raw, repo, cid.raw) for cid in result.removed if cid not in result.blocks],
        )
        self._row = None
        db.execute("UPDATE accounts SET head = ?, rev = ? WHERE id = ?", (commit.cid.raw, rev, repo))
        for blob in unreferenced:
            still = db.execute(
                "SELECT 1 FROM blob_refs WHERE repo = ? AND cid = ? LIMIT 1", (repo, blob)
            ).fetchone()
            if still is None:
                db.execute("DELETE FROM blobs WHERE repo = ? AND cid = ?", (repo, blob))
                self._orphan_candidates.add(blob)

    def append_event(self, make: MakeEvent) -> EventRow:
        db = self._connection()
        now = self._store._clock()
        ((seq, time_ms),) = db.execute(
            "UPDATE event_seq SET seq = seq + 1, time_ms = MAX(time_ms, ?) WHERE id = 1 "
            "RETURNING seq, time_ms",
            (now,),
        ).fetchall()
        if seq > limits.MAX_SAFE_INT:
            raise LimitExceeded("MAX_SAFE_INT", seq, limits.MAX_SAFE_INT, "event seq")
        event = make(seq, _format_ms(time_ms))
        did = event.repo if isinstance(event, CommitEvent) else event.did
        if event.seq != seq or did != self._did:
            raise RuntimeError(
                f"event built for seq {event.seq} of {did}, allocated seq {seq} of {self._did}"
            )
        frame = encode_frame(event)
        if len(frame) > limits.MAX_FRAME_BYTES:
            raise LimitExceeded(
                "MAX_FRAME_BYTES", len(frame), limits.MAX_FRAME_BYTES, f"{event.type_name} frame"
            )
        db.execute(self._insert_event, (seq, did, event.type_name, time_ms, frame))
        row = EventRow(seq, did, event.type_name, time_ms, frame)
        self._events.append(row)
        return row

    # --- blobs ------------------------------------------------------------------------

    def stage_blocks(self, blocks: Iterable[tuple[bytes, bytes]]) -> BlockSource:
        db = self._connection()
        # TEMP: private to the writer connection, on disk (temp_store is FILE), gone with it
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS import_staging (cid BLOB PRIMARY KEY, data BLOB NOT NULL)"
        )
        db.execute("DELETE FROM import_staging")
        batch: list[tuple[bytes, bytes]] = []
        for item in blocks:
            batch.append(item)
            if len(batch) >= _BATCH:
                db.executemany("INSERT OR IGNORE INTO import_staging (cid, data) VALUES (?, ?)", batch)
                batch.clear()
        if batch:
            db.executemany("INSERT OR IGNORE INTO import_staging (cid, data) VALUES (?, ?)", batch)
        self._staged = True
        return _Staged(self._connection)

    def replace_repo(
        self,
        commit: CID,
        rev: str,
        blocks: Iterable[tuple[CID, bytes]],
        records: Iterable[tuple[str, CID, Sequence[str]]],
    ) -> int:
        repo = self._require_repo()
        db = self._db
        for table in ("blob_refs", "records", "blocks"):
            db.execute(f"DELETE FROM {table} WHERE repo = ?", (repo,))
        stored = 0
        insert = "INSERT OR IGNORE INTO blocks (repo, cid, rev, data) VALUES (?, ?, ?, ?)"
        batch: list[tuple[int, bytes, str, bytes]] = []
        for cid, data in blocks:
            batch.append((repo, cid.raw, rev, data))
            if len(batch) >= _BATCH:
                db.executemany(insert, batch)
                stored += len(batch)
                batch.clear()
        if batch:
            db.executemany(insert, batch)
            stored += len(batch)
        for path, cid, blobs in records:
            collection, rkey = _split(path)
            db.execute(
                "INSERT INTO records (repo, collection, rkey, cid, rev) VALUES (?, ?, ?, ?, ?)",
                (repo, collection, rkey, cid.raw, rev),
            )
            for blob in blobs:
                db.execute(
                    "INSERT OR IGNORE INTO blob_refs (repo, cid, collection, rkey) VALUES (?, ?, ?, ?)",
                    (repo, blob, collection, rkey),
                )
        # uploads the imported records name are kept; the others wait out the grace period
        db.execute(
            "UPDATE blobs SET temporary = NOT EXISTS "
            "(SELECT 1 FROM blob_refs r WHERE r.repo = blobs.repo AND r.cid = blobs.cid), created_ms = ? "
            "WHERE repo = ?",
            (self._store._clock(), repo),
        )
        self._row = None
        db.execute("UPDATE accounts SET head = ?, rev = ? WHERE id = ?", (commit.raw, rev, repo))
        if self._staged:
            db.execute("DELETE FROM import_staging")
            self._staged = False
        return stored

    def add_blob(self, cid: CID, mime: str, size: int) -> BlobRow:
        repo = self._require_repo()
        db = self._db
        if not self._store.blob_files.exists(cid):
            raise MissingBlock(cid, "blob bytes are not on disk: write them with BlobFiles.write first")
        text = str(cid)
        db.execute(
            "INSERT INTO blobs (repo, cid, mime, size, created_ms, temporary) "
            "VALUES (?, ?, ?, ?, ?, NOT EXISTS (SELECT 1 FROM blob_refs WHERE repo = ? AND cid = ?)) "
            "ON CONFLICT (repo, cid) DO NOTHING",
            (repo, text, mime, size, self._store._clock(), repo, text),
        )
        self._orphan_candidates.discard(text)
        row = db.execute(
            "SELECT ?, cid, mime, size, created_ms, temporary FROM blobs WHERE repo = ? AND cid = ?",
            (self._did, repo, text),
        ).fetchone()
        return _blob(row)


def _check_status(status: str) -> None:
    if status not in ACCOUNT_STATUSES:
        raise ValueError(f"unknown account status {status!r}")


if TYPE_CHECKING:

    def _conforms(store: SQLiteStore, tx: SQLiteTransaction) -> tuple[Store, RepoTransaction]:
        """Make mypy check this backend against the protocols."""
        return store, tx
