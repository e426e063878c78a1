"""The SQLite file plumbing the relay's and the sync consumer's stores share.

:class:`atrepo.store.relay.RelayStore` and :class:`atrepo.store.mirror.MirrorStore`
hold different tables but open, lock, migrate, write and close their file the
same way; this base class is that one way, so a fix to it (a lock leaked on a
failed open, a transaction left open by a failed ``COMMIT``) lands in both:

- an exclusive ``flock`` on ``<file>.lock`` beside the database, taken before
  anything is opened and held until :meth:`SQLiteFile.close`, so a second
  opener (in this process or another) fails at once with :class:`StoreInUse`
  instead of interleaving writes; a crashed process leaves no stale lock;
- WAL and ``synchronous=FULL`` (or ``NORMAL``) on the writer;
- one writer connection guarded by a lock, each write one ``BEGIN IMMEDIATE``
  ... ``COMMIT`` (rolled back on error), and a thread already inside a write
  refused rather than deadlocked;
- one ``query_only`` read connection per thread, opened on first use;
- schema migrations by ``PRAGMA user_version``: ``migrations[n]`` takes a file
  from version ``n`` to ``n + 1``; a file from a newer atrepo is refused.

The host's store (:mod:`atrepo.store.sqlite`) predates this and keeps its own.
The same contract on PostgreSQL is :mod:`atrepo.store.pgfile` (both are
:class:`~atrepo.store.dbfile.DatabaseFile`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from atrepo.core.errors import StoreInUse

from .dbfile import DatabaseFile

__all__ = ["SQLiteFile", "Synchronous"]

Synchronous = Literal["FULL", "NORMAL"]


class SQLiteFile(DatabaseFile[sqlite3.Connection]):
    """One locked SQLite file: its writer, its per-thread readers and its schema version.

    ``path`` is the database file (its directory is created if missing), or
    an existing directory, which then holds ``filename``. Subclasses pass
    their migrations and the words their messages use: ``name`` ("relay
    store") in "the relay store is closed", ``lock_holder`` ("relay") in
    "held by another relay". ``foreign_keys`` turns SQLite's foreign key
    checks on for every connection.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: Path | str,
        *,
        filename: str,
        migrations: Sequence[str],
        name: str,
        lock_holder: str,
        foreign_keys: bool = False,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        given = Path(path)
        self.path = given / filename if given.is_dir() else given
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrations = tuple(migrations)
        self._name = name
        self._foreign_keys = foreign_keys
        self._busy_timeout_ms = busy_timeout_ms
        self._closed = False
        self._lock_fd = self._take_lock(self.path.with_name(self.path.name + ".lock"), lock_holder)
        self._write_lock = threading.Lock()
        self._write_owner: int | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._writer = self._connect()
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            (mode,) = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._writer.execute(f"PRAGMA synchronous={synchronous}")
            self._migrate()
        except BaseException:
            self._writer.close()
            os.close(self._lock_fd)
            raise

    @staticmethod
    def _take_lock(lock_path: Path, holder: str) -> int:
        """An exclusive ``flock`` on the lock file, held until :meth:`close` (the OS drops it on exit).

        ``flock`` belongs to the open file, so a second store in the same
        process is refused too; a crashed owner leaves no stale lock.
        """
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreInUse(
                f"{lock_path} is held by another {holder} ({exc.strerror}): stop it, then retry"
            ) from None
        return fd

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=64)
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        if self._foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
        if read_only:
            db.execute("PRAGMA query_only=ON")
        return db

    def _read(self) -> sqlite3.Connection:
        """This thread's read connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise RuntimeError(f"the {self._name} is closed")
            db = self._connect(read_only=True)
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _migrate(self) -> None:
        db = self._writer
        latest = len(self._migrations)
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > latest:
            raise RuntimeError(f"{self.path} has schema version {version}; this atrepo knows up to {latest}")
        for number in range(version, latest):
            script = self._migrations[number]
            try:
                db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number + 1};\nCOMMIT;")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _begin(self) -> sqlite3.Connection:
        self._writer.execute("BEGIN IMMEDIATE")
        return self._writer

    def _commit(self, db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:  # a failed COMMIT (disk full, I/O error) leaves it open
            db.execute("ROLLBACK")

    @property
    def schema_version(self) -> int:
        """The file's ``PRAGMA user_version``: how many migrations it has had."""
        (version,) = self._read().execute("PRAGMA user_version").fetchone()
        return int(version)

    def close(self) -> None:
        """Close every connection and release the file's lock (a second call does nothing)."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
        os.close(self._lock_fd)
