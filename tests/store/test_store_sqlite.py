"""What only the SQLite backend promises: WAL, synchronous, foreign keys, schema versions, snapshots."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from store_support import POST, check_repo, commit, create, new_account, post

from atrepo.core.syntax import format_datetime
from atrepo.store.base import RepoHead
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


# --- checkpoints off the writer's path, and the account row read once per transaction ----------


def _in_database_file(path: Path, sql: str) -> object:
    """``sql`` against the database file alone, the write-ahead log ignored (``immutable``)."""
    db = sqlite3.connect(f"file:{path / DB_FILENAME}?immutable=1", uri=True)
    try:
        return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # not even the schema is in the file yet
        return None
    finally:
        db.close()


def test_a_background_thread_copies_the_log_into_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    checkpointer = store._checkpointer
    assert checkpointer is not None
    try:
        # SQLite's own checkpoint only as a backstop, far beyond its default of 1000 pages
        assert pragma(store, "wal_autocheckpoint") == 8000
        did, key = new_account(store, writes=[create("a")])
        for rkey in "bcdef":
            commit(store, did, key, [create(rkey)])
        deadline = time.monotonic() + 30
        while _in_database_file(tmp_path, "SELECT COUNT(*) FROM records") != 6:
            assert time.monotonic() < deadline, "the commits never reached the database file"
            time.sleep(0.05)
        assert checkpointer.passes >= 1
        assert _in_database_file(tmp_path, "SELECT seq FROM event_seq") == store.head_seq()
        thread = checkpointer._thread
    finally:
        store.close()
    assert not thread.is_alive()
    again = SQLiteStore(tmp_path)
    try:
        assert set(check_repo(again, did, key)) == {f"{POST}/{rkey}" for rkey in "abcdef"}
        assert again.integrity_check() == ["ok"]
    finally:
        again.close()


def test_without_the_background_thread_sqlite_checkpoints_as_usual(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, background_checkpoint=False)
    try:
        assert store._checkpointer is None
        assert pragma(store, "wal_autocheckpoint") == 1000
        did, key = new_account(store, writes=[create("a")])
        commit(store, did, key, [create("b")])
        assert set(check_repo(store, did, key)) == {f"{POST}/a", f"{POST}/b"}
    finally:
        store.close()


def test_the_log_restarts_at_the_backstop(tmp_path: Path) -> None:
    """Commits back to back never leave the background checkpoint a moment with every frame copied:
    the writer's own checkpoint at the backstop restarts the log, so it does not grow for ever."""
    store = SQLiteStore(tmp_path)
    try:
        store._writer.execute("PRAGMA wal_autocheckpoint=50")  # a backstop reached in a few commits
        did, key = new_account(store)
        wal = tmp_path / f"{DB_FILENAME}-wal"
        sizes = []
        for n in range(60):
            commit(store, did, key, [create(f"r{n}", post("x" * 2000))])
            sizes.append(wal.stat().st_size)
        (frames,) = store._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1:2]
        assert frames < 50 + 40, "the log was never restarted"
        assert sizes[-1] == max(sizes) and sizes[-1] < 60 * 40 * 4096
        assert len(check_repo(store, did, key)) == 60
    finally:
        store.close()


def test_a_transaction_reads_the_account_once_and_sees_its_own_changes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    try:
        did, key = new_account(store, writes=[create("a")])
        before = store.get_account(did)
        assert before is not None and before.head is not None
        with store.transaction(did) as tx:
            first = tx.account()
            assert first == before and tx.account() is first  # read once, at the start
            assert tx.head() == before.repo_head
            tx.set_status("deactivated")
            account = tx.account()
            assert account is not None and account.status == "deactivated"
            tx.set_status("active")
            tx.set_handle("renamed.test")
            account = tx.account()
            assert account is not None and (account.status, account.handle) == ("active", "renamed.test")
            result = tx.open_repo().apply_writes([create("b")], key)
            tx.apply_commit(result)
            assert tx.head() is not None and tx.head() == RepoHead(result.commit.cid, result.rev)
            # a second commit in the same transaction follows the first (the stored rev is re-read)
            again = tx.open_repo().apply_writes([create("c")], key)
            tx.apply_commit(again)
            tx.append_event(again.to_event)
        after = store.get_account(did)
        assert after is not None and (after.head, after.handle) == (again.commit.cid, "renamed.test")
        assert set(check_repo(store, did, key)) == {f"{POST}/{rkey}" for rkey in "abc"}
    finally:
        store.close()


def test_an_event_time_is_the_stored_millisecond(tmp_path: Path) -> None:
    """The event's ``time`` string is formatted from ``time_ms`` (the second part cached)."""
    from atrepo.store.sqlite import _format_ms

    for ms in (0, 999, 1_000, 1_733_111_111_123, 1_733_111_111_999, 1_733_111_112_000, 1_733_111_111_001):
        moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
        assert _format_ms(ms) == format_datetime(moment)
