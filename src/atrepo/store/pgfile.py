"""The PostgreSQL plumbing of the relay's and the sync consumer's stores (``--database postgresql://...``).

The same contract as :mod:`atrepo.store.sqlitefile`, on a server:

- **one store, one schema.** Each store keeps its tables in its own
  PostgreSQL schema (``atrepo_mirror``, ...), so several stores can share one
  database; every connection sets ``search_path`` to it.
- **one writer process.** The writer connection holds a session advisory
  lock keyed by the schema for as long as the store is open; a second opener
  fails with :class:`StoreInUse` (after a second's grace, as a holder that
  just stopped releases it when its backend exits), and a crashed process's
  lock goes with its connection (no stale lock).
- **rows in bulk** go through ``COPY`` (:meth:`PgConnection.copy_rows`), which
  costs the client about a sixth of the CPU of ``executemany`` or ``unnest``
  arrays with psycopg 3 (measured on 20k-row upserts).
- **one writer transaction at a time** on that connection, guarded by a
  thread lock; each write is ``BEGIN`` ... ``COMMIT`` (``synchronous_commit``
  is the server's, on by default: a commit that returned is on disk). A
  failed statement rolls the whole transaction back; a ``COMMIT`` that the
  server turned into a rollback (a transaction already in error) raises
  :class:`WriteAborted` instead of passing silently.
- **readers** are one autocommit, read-only connection per thread.
- **migrations** are numbered SQL scripts applied at open under a
  transaction-scoped advisory lock, recorded in ``<schema>.schema_version``;
  a schema from a newer atrepo is refused.
- **a lost connection** (the server restarted) is reopened before the next
  write, re-taking the lock; a write in flight when it broke fails and is
  rolled back by the server.

Text keys are declared ``COLLATE "C"`` in the stores' schemas, so ``ORDER BY``
and ranges compare bytes as SQLite does (the merge of a resync and cursors by
DID depend on it). The driver is psycopg 3 (synchronous, like the stores,
which run on a worker thread), a base dependency; it is imported only when a
PostgreSQL store is opened, so SQLite-only commands never pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from atrepo.core.errors import StoreInUse, StoreUnavailable, WriteAborted

from .dbfile import DatabaseFile

__all__ = ["PgConnection", "PgListener", "PostgresFile", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """A store statement (``?`` placeholders) in psycopg's syntax (``%s``; a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(schema: str) -> int:
    """The advisory lock id of a store's schema: 64 bits of sha256, signed as ``bigint`` wants."""
    return int.from_bytes(hashlib.sha256(b"atrepo-store:" + schema.encode()).digest()[:8], "big", signed=True)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "a PostgreSQL database needs the psycopg driver, a dependency of atrepo: reinstall atrepo"
        ) from None
    return psycopg


class PgConnection:
    """A psycopg connection with the ``sqlite3.Connection`` calls the stores make (``?`` placeholders).

    ``reopen``, when given, makes a statement that finds the connection gone
    *outside* a transaction (nothing of it reached the server: the server
    restarted, an idle connection was terminated) reconnect and run once more.
    """

    __slots__ = ("_errors", "_raw", "_reopen", "_statuses")

    def __init__(self, raw: Any, reopen: Callable[[], Any] | None = None) -> None:
        self._raw = raw
        self._reopen = reopen
        psycopg = _psycopg()
        status = psycopg.pq.TransactionStatus
        self._statuses = (status.INTRANS, status.INERROR)
        self._errors = psycopg.OperationalError

    @property
    def raw(self) -> Any:
        """The psycopg connection itself."""
        return self._raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        try:
            return self._raw.execute(_pg_sql(sql), parameters or None)
        except self._errors:
            if (
                self._reopen is None
                or not self._raw.broken
                or self._raw.info.transaction_status in self._statuses
            ):
                raise
        self._raw.close()
        self._raw = self._reopen()
        return self._raw.execute(_pg_sql(sql), parameters or None)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self._raw.cursor()
        cursor.executemany(_pg_sql(sql), parameters)
        return cursor

    def copy_rows(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        """``COPY table (columns) FROM STDIN`` of ``rows``: bulk rows for a fraction of INSERTs' CPU."""
        with self._raw.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def script(self, sql: str) -> None:
        """Run several statements without parameters (migrations)."""
        self._raw.execute(sql)

    @property
    def in_transaction(self) -> bool:
        """Inside a transaction block, healthy or failed (a failed one still needs ``ROLLBACK``)."""
        return bool(self._raw.info.transaction_status in self._statuses)

    @property
    def failed(self) -> bool:
        """The transaction block had an error: only ``ROLLBACK`` (or to a savepoint) is possible."""
        return bool(self._raw.info.transaction_status == self._statuses[1])

    @property
    def usable(self) -> bool:
        return not self._raw.closed and not self._raw.broken

    def close(self) -> None:
        self._raw.close()


class PostgresFile(DatabaseFile[PgConnection]):
    """One store's schema on a PostgreSQL server: its writer, its per-thread readers and its version.

    ``url`` is a libpq URL (``postgresql://user:pw@host:port/db``); ``schema``
    the store's own schema (created if missing); ``migrations[n]`` takes the
    schema from version ``n`` to ``n + 1``. ``name``/``lock_holder`` are the
    words of messages, as in :class:`~atrepo.store.sqlitefile.SQLiteFile`.
    """

    dialect = "postgresql"
    for_update = " FOR UPDATE"
    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        migrations: Sequence[str],
        name: str,
        lock_holder: str,
        connect_timeout_s: int = 10,
        partition: tuple[int, int] | None = None,
    ) -> None:
        if not schema.isidentifier() or schema.lower() != schema:
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.url = url
        self.location = f"{redact_url(url)} (schema {schema})"
        self.schema = schema
        self._migrations = tuple(migrations)
        self._name = name
        self._holder = lock_holder
        self._timeout = connect_timeout_s
        if partition is not None:
            index, count = partition
            if not 0 <= index < count:
                raise ValueError(f"partition {index}/{count}: the index must be in [0, {count})")
            self.location += f" partition {index}/{count}"
        self.partition = partition
        self._closed = False
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._local = threading.local()
        self._readers: list[PgConnection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._open_writer()
        try:
            self._migrate()
            self._writer_ready(self._writer)
        except BaseException:
            self._writer.close()
            raise

    # --- connections ----------------------------------------------------------------------

    def _connect_raw(self, *, read_only: bool = False) -> Any:
        psycopg = _psycopg()
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to {redact_url(self.url)}: {exc}".strip()) from None
        try:
            if not read_only:
                raw.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            raw.execute(f"SET search_path TO {self.schema}")
            if read_only:
                raw.execute("SET default_transaction_read_only = on")
        except BaseException:
            raw.close()
            raise
        return raw

    def _connect(self, *, read_only: bool = False) -> PgConnection:
        if read_only:
            return PgConnection(self._connect_raw(read_only=True), lambda: self._connect_raw(read_only=True))
        return PgConnection(self._connect_raw())

    def _take_locks(self, conn: PgConnection) -> bool:
        """The writer's session locks: the schema's, exclusive; or, for partition I of N, the schema's
        shared (so a whole-store writer is refused while workers run, and they while it runs) and
        the partition's exclusive. All or none."""
        if self.partition is None:
            return bool(
                conn.execute("SELECT pg_try_advisory_lock(?)", (_lock_key(self.schema),)).fetchone()[0]
            )
        index, count = self.partition
        (shared,) = conn.execute(
            "SELECT pg_try_advisory_lock_shared(?)", (_lock_key(self.schema),)
        ).fetchone()
        if not shared:
            return False
        mine = _lock_key(f"{self.schema}#{index}/{count}")
        if conn.execute("SELECT pg_try_advisory_lock(?)", (mine,)).fetchone()[0]:
            return True
        conn.execute("SELECT pg_advisory_unlock_shared(?)", (_lock_key(self.schema),))
        return False

    def _open_writer(self) -> PgConnection:
        conn = self._connect()
        # A holder that just closed or died releases its lock when its backend exits, which may be a
        # moment after its socket closed: so a refusal is retried for up to a second.
        for attempt in range(11):
            if self._take_locks(conn):
                return conn
            if attempt < 10:
                time.sleep(0.1)
        conn.close()
        raise StoreInUse(f"{self.location} is held by another {self._holder}: stop it, then retry")

    def _writer_ready(self, conn: PgConnection) -> None:
        """Called on each new writer connection, schema migrated, outside a transaction: a subclass
        creates its per-connection objects (temporary tables) here, where no rollback can undo them."""

    def _read(self) -> PgConnection:
        """This thread's read connection, opened on first use (and again if the server dropped it)."""
        conn: PgConnection | None = getattr(self._local, "db", None)
        if conn is None or not conn.usable:
            if self._closed:
                raise RuntimeError(f"the {self._name} is closed")
            conn = self._connect(read_only=True)
            self._local.db = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # --- schema -------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._writer
        latest = len(self._migrations)
        db.execute("BEGIN")
        try:
            # Two processes opening the same schema for the first time migrate one after the other.
            db.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(self.schema + ":migrate"),))
            db.script("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            else:
                version = int(row[0])
            if version > latest:
                raise RuntimeError(
                    f"{self.location} has schema version {version}; this atrepo knows up to {latest}"
                )
            for number in range(version, latest):
                db.script(self._migrations[number])
                db.execute("UPDATE schema_version SET version = ?", (number + 1,))
            db.execute("COMMIT")
        except BaseException:
            if db.usable and db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        (version,) = self._read().execute("SELECT version FROM schema_version").fetchone()
        return int(version)

    # --- writes -------------------------------------------------------------------------

    def _reopen_writer(self) -> PgConnection:
        """A new writer connection in place of a lost one: the locks taken again, the per-connection
        objects made again (:meth:`_writer_ready`)."""
        self._writer.close()
        self._writer = self._open_writer()
        self._writer_ready(self._writer)
        return self._writer

    def _begin(self) -> PgConnection:
        db = self._writer if self._writer.usable else self._reopen_writer()
        try:
            db.execute("BEGIN")
        except _psycopg().OperationalError:
            if db.usable:
                raise
            # The connection was gone before the write began (a server restart): nothing of it was
            # sent, so reconnect and begin once more.
            db = self._reopen_writer()
            db.execute("BEGIN")
        return db

    def _commit(self, db: PgConnection) -> None:
        if db.failed:
            raise WriteAborted(f"the {self._name} transaction failed earlier and was rolled back")
        db.execute("COMMIT")

    def _rollback(self, db: PgConnection) -> None:
        if db.usable and db.in_transaction:
            db.execute("ROLLBACK")

    def listener(self, channel: str) -> PgListener:
        """A new connection ``LISTEN``\\ ing on ``channel`` (a plain identifier); close it when done.

        How another process hears of this store's commits without polling: a
        writer that runs ``SELECT pg_notify(channel, payload)`` inside its
        transaction is heard exactly when the transaction commits, and never
        for one rolled back.
        """
        if not _IDENTIFIER.fullmatch(channel):
            raise ValueError(f"not a channel name: {channel!r}")
        raw = self._connect_raw(read_only=True)
        try:
            raw.execute(f"LISTEN {channel}")
        except BaseException:
            raw.close()
            raise
        return PgListener(raw, channel)

    def close(self) -> None:
        """Close every connection (the writer's advisory lock goes with it); a second call does nothing."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer.usable and not self._writer.in_transaction:
                with contextlib.suppress(Exception):  # released at once, not when the backend exits
                    self._writer.execute("SELECT pg_advisory_unlock_all()")
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


#: What ``LISTEN`` takes unquoted: a channel name made of these only.
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PgListener:
    """One connection listening on one channel (:meth:`PostgresFile.listener`).

    :meth:`wait` blocks, so call it from a thread. A lost connection raises
    the driver's ``OperationalError``: open a new listener and read the state
    once, since what was announced meanwhile is not replayed.
    """

    def __init__(self, raw: Any, channel: str) -> None:
        self._raw = raw
        self.channel = channel

    def wait(self, timeout_s: float) -> list[str]:
        """The payloads of the notifications that arrived within ``timeout_s`` (at least one, or none)."""
        payloads = [note.payload for note in self._raw.notifies(timeout=timeout_s, stop_after=1)]
        # What else is already here comes without another wait.
        payloads += [note.payload for note in self._raw.notifies(timeout=0)]
        return payloads

    def close(self) -> None:
        self._raw.close()
