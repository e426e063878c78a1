"""What the host's PostgreSQL store adds to the contract: several stores (processes) on one database.

Each ``PostgresStore`` here stands for one host process: its own pool, its
own readers, the same schema. The contract suite (``BACKENDS``) already runs
every store test on PostgreSQL; these check the dialect adapter, the
schema's version check, and what only shows with two openers: per-repository
locks, one gapless event log, snapshots against another writer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from store_support import POST, FakeClock, check_repo, commit, create, new_account

from atrepo.core.errors import InvalidRequest
from atrepo.core.events import CommitEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.store.postgres import HOST_SCHEMA, SCHEMA_VERSION, PostgresStore, _translate

#: Bounds a wait for another thread's state so a broken lock fails instead of hanging (not a timing assert).
WAIT_S = 30.0


@pytest.fixture
def two(pg_url: str, tmp_path: Path) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database and one data directory, as two host processes would be."""
    clock = FakeClock()
    first = PostgresStore(pg_url, tmp_path / "data", clock=clock)
    second = PostgresStore(pg_url, tmp_path / "data", clock=clock)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_the_shared_sqlite_statements_are_translated() -> None:
    assert _translate("INSERT OR IGNORE INTO blocks (repo, cid) VALUES (?, ?)") == (
        "INSERT INTO blocks (repo, cid) VALUES (?, ?) ON CONFLICT DO NOTHING",
        False,
    )
    assert _translate("UPDATE t SET e = MIN(expires_ms, ?), t = MAX(time_ms, ?)")[0] == (
        "UPDATE t SET e = LEAST(expires_ms, ?), t = GREATEST(time_ms, ?)"
    )
    assert _translate("SELECT MIN(seq) FROM events")[0] == "SELECT MIN(seq) FROM events"
    assert _translate("UPDATE blobs SET temporary = NOT EXISTS (SELECT 1 FROM r WHERE x = ?), y = ?")[0] == (
        "UPDATE blobs SET temporary = (NOT EXISTS (SELECT 1 FROM r WHERE x = ?))::INTEGER, y = ?"
    )
    where = "DELETE FROM blocks WHERE repo = ? AND NOT EXISTS (SELECT 1 FROM records WHERE repo = ?)"
    assert _translate(where) == (where, False)
    assert _translate("INSERT INTO accounts (did) VALUES (?)") == (
        "INSERT INTO accounts (did) VALUES (?) RETURNING id",
        True,
    )
    assert (
        _translate("CREATE TEMP TABLE s (cid BLOB PRIMARY KEY)")[0]
        == "CREATE TEMP TABLE s (cid BYTEA PRIMARY KEY)"
    )


def test_a_newer_schema_is_refused_and_the_current_one_is_kept(pg_url: str, tmp_path: Path) -> None:
    store = PostgresStore(pg_url, tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    PostgresStore(pg_url, tmp_path).close()  # opening again migrates nothing
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"UPDATE {HOST_SCHEMA}.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="schema version"):
        PostgresStore(pg_url, tmp_path)


def test_two_stores_share_accounts_and_handles_stay_unique_without_regard_to_case(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two
    did, key = new_account(first, handle="Alice.test", writes=[create("a")])
    assert second.get_account_by_handle("alice.TEST") is not None
    with pytest.raises(InvalidRequest):
        new_account(second, handle="ALICE.test")
    commit(second, did, key, [create("b")])
    assert set(check_repo(first, did, key)) == {f"{POST}/a", f"{POST}/b"}
    assert first.integrity_check() == []


def _lock_waiters(store: PostgresStore) -> int:
    """Backends of the test's database waiting for an advisory lock right now."""
    db = store._schema._read()
    (count,) = db.execute(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return int(count)


def test_a_repository_is_locked_across_stores_until_its_writer_commits(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two
    did, key = new_account(first)
    other, other_key = new_account(first)
    inside = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:
        with first.transaction(did) as tx:
            result = tx.open_repo().apply_writes([create("first")], key)
            tx.apply_commit(result)
            inside.set()
            assert release.wait(WAIT_S)
            tx.append_event(result.to_event)

    holder = threading.Thread(target=slow_writer)
    holder.start()
    assert inside.wait(WAIT_S)
    # another repository commits at once, while the first one's transaction is open
    commit(second, other, other_key, [create("beside")])
    waiter = threading.Thread(target=commit, args=(second, did, key, [create("second")]))
    waiter.start()
    deadline = time.monotonic() + WAIT_S
    while _lock_waiters(first) == 0:  # the second write queues on the repository's lock
        assert time.monotonic() < deadline and waiter.is_alive()
        time.sleep(0.01)
    release.set()
    holder.join(WAIT_S)
    waiter.join(WAIT_S)
    assert not holder.is_alive() and not waiter.is_alive()
    # the second write saw the first's head: both records, one chain
    assert set(check_repo(second, did, key)) == {f"{POST}/first", f"{POST}/second"}
    rows = first.read_events(0, 100)
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))


def test_concurrent_writers_in_two_stores_make_one_gapless_ordered_log(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    accounts = [new_account(two[i % 2]) for i in range(4)]
    errors: list[BaseException] = []
    seqs: dict[str, list[int]] = {}

    def writer(store: PostgresStore, did: str, key: PrivateKey, tag: str) -> None:
        try:
            for i in range(10):
                _, row = commit(store, did, key, [create(f"{tag}{i:02d}")])
                seqs.setdefault(f"{did}{tag}", []).append(row.seq)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, did, key, tag))
        for did, key in accounts
        for store, tag in ((two[0], "x"), (two[1], "y"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
    assert not errors, errors
    assert all(s == sorted(s) for s in seqs.values())
    rows = two[1].read_events(0, 1000)
    assert [row.seq for row in rows] == list(range(1, 16 + 80 + 1)) and two[0].head_seq() == 96
    times = [row.time_ms for row in rows]
    assert times == sorted(times)
    chains: dict[str, str | None] = {}
    for row in rows:
        frame = decode_frame(row.frame)
        if isinstance(frame, CommitEvent):
            assert frame.since == chains.get(row.did), f"seq {row.seq}: the chain of {row.did} breaks"
            chains[row.did] = frame.rev
    for did, key in accounts:
        assert len(check_repo(two[0], did, key)) == 20


def test_a_snapshot_holds_while_another_store_writes(two: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = two
    did, key = new_account(first, writes=[create("a")])
    head = first.repo_head(did)
    with first.snapshot():
        assert first.repo_head(did) == head
        commit(second, did, key, [create("b")])
        assert first.repo_head(did) == head and first.get_record(did, POST, "b") is None
        assert first.head_seq() == 4
    assert first.get_record(did, POST, "b") is not None and first.head_seq() == 5


def test_a_failed_transaction_gives_its_seq_back(two: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = two
    did, key = new_account(first)
    with pytest.raises(RuntimeError, match="changed my mind"), first.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create("no")], key)
        tx.apply_commit(result)
        assert tx.append_event(result.to_event).seq == 5
        raise RuntimeError("changed my mind")
    _, row = commit(second, did, key, [create("yes")])
    assert row.seq == 5 and first.get_record(did, POST, "no") is None


def test_integrity_check_names_what_is_missing(pg_url: str, tmp_path: Path) -> None:
    store = PostgresStore(pg_url, tmp_path)
    try:
        did, _ = new_account(store, writes=[create("a")])
        assert store.integrity_check() == []
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(
                f"DELETE FROM {HOST_SCHEMA}.blocks WHERE cid IN (SELECT cid FROM {HOST_SCHEMA}.records)"
            )
            db.execute(f"UPDATE {HOST_SCHEMA}.event_seq SET seq = 1")
        problems = store.integrity_check()
        assert any("behind the newest event" in p for p in problems)
        assert any(p.startswith(f"{did}: record block of {POST}/a") for p in problems)
    finally:
        store.close()


def test_connections_the_server_dropped_are_replaced(pg_url: str, tmp_path: Path) -> None:
    """After the server ends every connection (a restart, an idle timeout), writes and reads go on."""
    store = PostgresStore(pg_url, tmp_path)
    try:
        did, key = new_account(store, writes=[create("a")])
        assert store.get_record(did, POST, "a") is not None
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        commit(store, did, key, [create("b")])
        assert store.get_record(did, POST, "b") is not None
        assert set(check_repo(store, did, key)) == {f"{POST}/a", f"{POST}/b"}
    finally:
        store.close()


def test_a_group_meeting_a_repository_locked_elsewhere_commits_first_instead_of_deadlocking(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """A group holding the event counter must not wait for a repository whose holder waits for the counter."""
    first, second = two
    busy, busy_key = new_account(first)
    free, free_key = new_account(first)
    inside = threading.Event()
    go = threading.Event()
    errors: list[BaseException] = []

    def other_process() -> None:  # holds ``busy`` and will want the counter row
        try:
            with second.transaction(busy) as tx:
                result = tx.open_repo().apply_writes([create("elsewhere")], busy_key)
                tx.apply_commit(result)
                inside.set()
                assert go.wait(WAIT_S)
                tx.append_event(result.to_event)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def group() -> None:  # one job holds the counter row, the next one needs ``busy``
        try:
            with first.group_commit():
                commit(first, free, free_key, [create("grouped")])
                commit(first, busy, busy_key, [create("after")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    holder = threading.Thread(target=other_process)
    holder.start()
    assert inside.wait(WAIT_S)
    grouped = threading.Thread(target=group)
    grouped.start()
    deadline = time.monotonic() + WAIT_S
    while _lock_waiters(first) == 0:  # the group waits for ``busy``, its first job committed already
        assert time.monotonic() < deadline and grouped.is_alive(), errors
        time.sleep(0.01)
    assert first.get_record(free, POST, "grouped") is not None
    go.set()
    holder.join(WAIT_S)
    grouped.join(WAIT_S)
    assert not errors, errors
    assert set(check_repo(first, busy, busy_key)) == {f"{POST}/elsewhere", f"{POST}/after"}
    rows = first.read_events(0, 100)
    assert [row.seq for row in rows] == list(range(1, 8 + 3 + 1))
