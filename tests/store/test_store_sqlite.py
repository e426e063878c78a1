"""What only the SQLite backend promises: WAL, synchronous, foreign keys, schema versions, snapshots."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from store_support import POST, check_repo, commit, create, new_account

from atrepo.store.sqlite import DB_FILENAME, SCHEMA_VERSION, SQLiteStore


def pragma(store: SQLiteStore, name: str, *, writer: bool = True) -> object:
    db = store._writer if writer else store._read()
    return db.execute(f"PRAGMA {name}").fetchone()[0]


def test_durability_settings(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "full")
    try:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == 2  # FULL
        assert pragma(store, "foreign_keys") == 1 and pragma(store, "foreign_keys", writer=False) == 1
        assert pragma(store, "query_only", writer=False) == 1
        assert store.schema_version == SCHEMA_VERSION
        assert store.integrity_check() == ["ok"]
    finally:
        store.close()
    normal = SQLiteStore(tmp_path / "normal", synchronous="NORMAL")
    try:
        assert pragma(normal, "synchronous") == 1
    finally:
        normal.close()
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "bad", synchronous="OFF")  # type: ignore[arg-type]


def test_data_survives_reopening(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    did, key = new_account(store, writes=[create("a")])
    commit(store, did, key, [create("b")])
    store.close()
    again = SQLiteStore(tmp_path)
    try:
        assert set(check_repo(again, did, key)) == {f"{POST}/a", f"{POST}/b"}
        assert again.head_seq() == 5 and again.schema_version == SCHEMA_VERSION
    finally:
        again.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    SQLiteStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="schema version"):
        SQLiteStore(tmp_path)


def test_each_thread_reads_on_its_own_connection(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        mine = store._read()
        theirs: list[sqlite3.Connection] = []
        thread = threading.Thread(target=lambda: theirs.append(store._read()))
        thread.start()
        thread.join()
        assert theirs and theirs[0] is not mine and store._read() is mine
        with pytest.raises(sqlite3.OperationalError):
            mine.execute("DELETE FROM events")  # readers are query-only
    finally:
        store.close()


def test_a_snapshot_holds_one_state_while_writes_go_on(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        did, key = new_account(store, writes=[create("a")])
        head = store.repo_head(did)
        with store.snapshot():
            assert store.repo_head(did) == head
            writer = threading.Thread(target=commit, args=(store, did, key, [create("b")]))
            writer.start()
            writer.join()
            with store.snapshot():  # nested: the same state
                assert store.repo_head(did) == head
            assert store.get_record(did, POST, "b") is None and store.head_seq() == 4
        assert store.repo_head(did) != head and store.get_record(did, POST, "b") is not None
    finally:
        store.close()


def test_foreign_keys_hold(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(sqlite3.IntegrityError), store._write() as db:
            db.execute("INSERT INTO blocks (repo, cid, rev, data) VALUES (12345, x'00', 'r', x'00')")
    finally:
        store.close()


def test_migrations_step_the_version_and_roll_back_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import atrepo.store.sqlite as backend

    SQLiteStore(tmp_path).close()
    broken = (*backend._MIGRATIONS, "ALTER TABLE accounts ADD COLUMN note TEXT;\nSELECT no_such_function();")
    monkeypatch.setattr(backend, "_MIGRATIONS", broken)
    monkeypatch.setattr(backend, "SCHEMA_VERSION", len(broken))
    with pytest.raises(sqlite3.OperationalError):
        SQLiteStore(tmp_path)
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "note" not in [row[1] for row in db.execute("PRAGMA table_info(accounts)")]
    db.close()
    fixed = (*backend._MIGRATIONS[:-1], "ALTER TABLE accounts ADD COLUMN note TEXT;")
    monkeypatch.setattr(backend, "_MIGRATIONS", fixed)
    store = SQLiteStore(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION + 1
        assert "note" in [row[1] for row in store._read().execute("PRAGMA table_info(accounts)")]
    finally:
        store.close()
