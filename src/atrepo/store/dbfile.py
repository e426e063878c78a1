"""What a store's database looks like to the store: one writer, per-thread readers, a schema version.

The relay's and the sync consumer's stores are written once, against this
small surface, and run on SQLite (:mod:`atrepo.store.sqlitefile`) or
PostgreSQL (:mod:`atrepo.store.pgfile`). Both backends give the same
guarantees: one writer transaction at a time per store (``_write()``), a
nested write on the same thread refused rather than deadlocked, readers that
never block the writer, versioned migrations that refuse a newer schema, and
a lock that refuses a second process opening the same store
(:class:`~atrepo.core.errors.StoreInUse`).

SQL above this layer is written once with ``?`` placeholders and the common
subset of both dialects (``INSERT ... ON CONFLICT``, ``SAVEPOINT``); the few
places the dialects differ go through the hooks here (:meth:`DatabaseFile.in_list`,
``for_update``, ``snapshot_begin``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, Literal, Protocol, TypeVar

__all__ = ["Conn", "Cursor", "DatabaseFile", "Dialect", "is_database_url"]

Dialect = Literal["sqlite", "postgresql"]


def is_database_url(target: object) -> bool:
    """True when ``target`` names a PostgreSQL server (``postgresql://`` or ``postgres://``), not a file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """The part of a connection the stores use: ``sqlite3.Connection`` has it, the PostgreSQL adapter too."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...


#: The writer connection's type: ``sqlite3.Connection`` or the PostgreSQL adapter.
C = TypeVar("C")


class DatabaseFile(Generic[C]):
    """The base of :class:`~.sqlitefile.SQLiteFile` and :class:`~.pgfile.PostgresFile`.

    Subclasses set ``dialect``, ``location`` (a path or a URL without its
    password, for messages), ``_name``, ``_writer``, ``_write_lock`` and
    ``_closed``, and implement how a write transaction begins, commits and
    rolls back (:meth:`_begin`, :meth:`_commit`, :meth:`_rollback`) and the
    reader methods; :meth:`_write`, the one writer transaction, is theirs in
    common.
    """

    dialect: Dialect
    #: Appended to a ``SELECT`` of a row that the transaction will update (PostgreSQL locks it; SQLite's
    #: writer already holds the whole database).
    for_update: str = ""
    #: Starts a read transaction that sees one snapshot, on a reader connection.
    snapshot_begin: str = "BEGIN"
    location: str
    _name: str
    _writer: C
    _write_lock: threading.Lock
    _write_owner: int | None = None
    _closed: bool = False

    @contextmanager
    def _write(self) -> Iterator[C]:
        """The writer connection inside one transaction, committed at the end, rolled back on error.

        One at a time (``_write_lock``); the thread holding it is recorded, so
        a nested write on that thread fails with :class:`RuntimeError`
        instead of waiting for itself.
        """
        me = threading.get_ident()
        if self._write_owner == me:
            raise RuntimeError(f"this thread is already inside a {self._name} write transaction")
        with self._write_lock:
            if self._closed:
                raise RuntimeError(f"the {self._name} is closed")
            self._write_owner = me
            try:
                db = self._begin()
                try:
                    yield db
                    self._commit(db)
                except BaseException:
                    self._rollback(db)
                    raise
            finally:
                self._write_owner = None

    def _begin(self) -> C:
        """Start a transaction on the writer (under the write lock); the connection to use."""
        raise NotImplementedError

    def _commit(self, db: C) -> None:
        raise NotImplementedError

    def _rollback(self, db: C) -> None:
        """Undo what is open after an error (a failed ``COMMIT`` may leave the transaction open)."""
        raise NotImplementedError

    def _read(self) -> Any:
        raise NotImplementedError

    @property
    def schema_version(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL testing ``column`` against a list bound as one parameter (no statement per list length)."""
        if self.dialect == "postgresql":
            return f"{column} = ANY(?)", [list(values)]
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(values))]
