"""The log-gathering SQLite VFS shim (``store/_walbatch.c``): same files, same answers, fewer writes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from atrepo.core import _native
from atrepo.store.sqlite import SQLiteStore, wal_batch_vfs

pytestmark = pytest.mark.skipif(
    wal_batch_vfs() is None, reason="the VFS shim is not built (no sqlite3.h) or ATREPO_PURE is set"
)


def _open(path: Path, vfs: str | None) -> sqlite3.Connection:
    target = f"{path.resolve().as_uri()}?vfs={vfs}" if vfs else str(path)
    db = sqlite3.connect(target, uri=vfs is not None, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def test_the_shim_registers_once() -> None:
    assert wal_batch_vfs() == "atrepo-walbatch"
    assert wal_batch_vfs() == "atrepo-walbatch"
    assert not _native.PURE


@pytest.mark.parametrize("rows", [1, 7, 40, 120, 400, 2000])
def test_transactions_of_every_size_are_visible_to_other_connections(tmp_path: Path, rows: int) -> None:
    """Commits from a few frames to well over 128 KiB of log (the unix VFS's largest single write)."""
    vfs = wal_batch_vfs()
    writer = _open(tmp_path / "db", vfs)
    reader = _open(tmp_path / "db", None)  # the default VFS, as the store's readers use
    writer.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB)")
    expected: dict[bytes, bytes] = {}
    for _round in range(3):
        writer.execute("BEGIN IMMEDIATE")
        batch = {os.urandom(16): os.urandom(900) for _ in range(rows)}
        writer.executemany("INSERT INTO t VALUES (?, ?)", batch.items())
        writer.execute("COMMIT")
        expected.update(batch)
        assert dict(reader.execute("SELECT k, v FROM t")) == expected  # every frame reached the file
    # a rolled-back transaction leaves nothing, and the writer reads its own spilled pages
    writer.execute("PRAGMA cache_size=10")  # force pages out to the log mid-transaction
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany(
        "INSERT INTO t VALUES (?, ?)", ((os.urandom(16), os.urandom(900)) for _ in range(rows))
    )
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (len(expected) + rows,)
    writer.execute("ROLLBACK")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (len(expected),)
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.execute("INSERT INTO t VALUES (x'00', x'01')")  # the log restarts from its header
    assert reader.execute("SELECT v FROM t WHERE k = x'00'").fetchone() == (b"\x01",)
    assert writer.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    writer.close()
    reader.close()


def test_the_store_uses_it_only_with_synchronous_full(tmp_path: Path, monkeypatch: Any) -> None:
    seen: list[str | None] = []
    connect = SQLiteStore._connect

    def spy(self: SQLiteStore, *, read_only: bool = False, vfs: str | None = None) -> sqlite3.Connection:
        seen.append(vfs)
        return connect(self, read_only=read_only, vfs=vfs)

    monkeypatch.setattr(SQLiteStore, "_connect", spy)
    SQLiteStore(tmp_path / "full", background_checkpoint=False).close()
    SQLiteStore(tmp_path / "normal", synchronous="NORMAL", background_checkpoint=False).close()
    assert seen == ["atrepo-walbatch", None]


_WRITER = textwrap.dedent(
    """
    import os, sqlite3, sys
    from atrepo.store.sqlite import wal_batch_vfs
    path, vfs = sys.argv[1], wal_batch_vfs()
    db = sqlite3.connect(f"file:{path}?vfs={vfs}", uri=True, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS c (n INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER, i INTEGER, v BLOB, PRIMARY KEY (n, i))")
    n = db.execute("SELECT coalesce(max(n), 0) FROM c").fetchone()[0]
    while True:
        n += 1
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(n, i, os.urandom(700)) for i in range(n % 60)])
        db.execute("INSERT INTO c VALUES (?)", (n,))
        db.execute("COMMIT")
        print(n, flush=True)
    """
)


def test_kill_9_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    """A commit reported done survives SIGKILL; the file always passes its integrity check."""
    path = tmp_path / "db"
    acknowledged = 0
    for _round in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path.resolve())],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        last = acknowledged
        while last < acknowledged + 40 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            last = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert last >= acknowledged + 40, "the writer did not get going"
        acknowledged = last
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        present = {n for (n,) in check.execute("SELECT n FROM c")}
        assert set(range(1, acknowledged + 1)) <= present
        counts = dict(check.execute("SELECT n, count(*) FROM t GROUP BY n"))
        assert all(counts.get(n, 0) == n % 60 for n in present)  # each commit whole, rows and marker
        acknowledged = max(present)
        check.close()
