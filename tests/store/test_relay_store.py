"""The relay's store: batches, seqs, hosts, bans, accounts, collections, fan-out, on both backends.

Every case that is not about the SQLite file itself runs twice (the
``backend`` fixture): on a real SQLite file in the test's directory and on a
real PostgreSQL server (tests/pg_support.py, a database per test). A crash
is an exception raised inside a write: the transaction must leave nothing.
The PostgreSQL-only cases cover its writer lock, the fan-out follower, the
``NOTIFY`` of committed batches and the ``COPY`` paths of large batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import socket
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core.cid import CID
from atrepo.core.errors import StoreInUse, StoreUnavailable
from atrepo.core.events import IdentityEvent, decode_frame, encode_frame
from atrepo.firehose import Fanout
from atrepo.store import (
    HOST_STATUSES,
    LOCAL_STATUSES,
    HostRow,
    PendingEvent,
    PostgresRelayStore,
    RelayAccount,
    RelayStore,
    SQLiteRelayStore,
    StoreWorker,
    open_relay_store,
)
from atrepo.store.relay import (
    RELAY_DB_FILENAME,
    RELAY_PENDING_CHANNEL,
    SCHEMA_VERSION,
    SEQ_PLACEHOLDER,
    placeholder_slot,
)

NOW = 1_700_000_000_000


def _integrity_errors() -> tuple[type[Exception], ...]:
    import psycopg

    return (sqlite3.IntegrityError, psycopg.IntegrityError)


INTEGRITY_ERRORS = _integrity_errors()


def identity_frame(did: str, time_ms: int) -> Callable[[int], bytes]:
    """An encoder of a real ``#identity`` frame carrying the seq it is given."""

    def encode(seq: int) -> bytes:
        return encode_frame(
            IdentityEvent(seq=seq, did=did, time=f"2023-11-14T22:13:20.{time_ms % 1000:03d}Z")
        )

    return encode


def event(did: str, time_ms: int = NOW) -> PendingEvent:
    return PendingEvent(did, "#identity", time_ms, identity_frame(did, time_ms))


def cid(text: str) -> CID:
    return CID.for_dag_cbor(text.encode())


def account(did: str, host_id: int, **changes: object) -> RelayAccount:
    row = RelayAccount(did, host_id, "active", "active", None, None, None, NOW, NOW)
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


@pytest.fixture
def opened(tmp_path: Path, database: str | None) -> Iterator[Callable[[], RelayStore]]:
    """Opens this test's relay store (again: the same one): ``tmp_path/data/relay.sqlite`` on SQLite,
    the schema ``atrepo_relay`` of a fresh database on PostgreSQL; closes all at the end."""
    stores: list[RelayStore] = []

    def make() -> RelayStore:
        store = open_relay_store(database or tmp_path / "data" / "relay.sqlite", synchronous="NORMAL")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(opened: Callable[[], RelayStore]) -> RelayStore:
    return opened()


def add_host(store: RelayStore, /, name: str = "pds.example.com", **kw: object) -> HostRow:
    args: dict[str, object] = {"configured": False, "trusted": False, "account_limit": 100, "now_ms": NOW}
    args.update(kw)
    return store.add_host(name, f"https://{name}", **args)  # type: ignore[arg-type]


# --- files, locks, schema -----------------------------------------------------------------


def sqlite_store(tmp_path: Path) -> SQLiteRelayStore:
    return SQLiteRelayStore(tmp_path / "data" / "relay.sqlite", synchronous="NORMAL")


def test_opens_a_fresh_versioned_wal_file(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    assert store.path == tmp_path / "data" / "relay.sqlite"
    assert store.path.is_file()
    assert (tmp_path / "data" / "relay.sqlite.lock").is_file()
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    assert store.schema_version == SCHEMA_VERSION
    assert store.head_seq() == 0
    assert store.oldest_seq() is None
    assert store.read_events(0, 10) == []
    assert store.stats()["events"] == 0
    store.close()


def test_two_stores_on_one_file_are_refused(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path)
    with pytest.raises(StoreInUse):
        SQLiteRelayStore(tmp_path / "data" / "relay.sqlite")
    store.close()
    store.close()  # a second close does nothing
    again = SQLiteRelayStore(tmp_path / "data" / "relay.sqlite")  # the lock went with the first store
    again.close()


def test_a_directory_holds_relay_sqlite3(tmp_path: Path) -> None:
    store = open_relay_store(tmp_path)
    try:
        assert isinstance(store, SQLiteRelayStore)
        assert store.path == tmp_path / RELAY_DB_FILENAME
        with pytest.raises(StoreInUse):
            SQLiteRelayStore(tmp_path / RELAY_DB_FILENAME)  # the same file, named directly
    finally:
        store.close()


def test_synchronous_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteRelayStore(tmp_path / "x", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_relay_store(tmp_path / "y", follower=True)  # fan-out processes need a shared server


def test_reopening_keeps_everything(opened: Callable[[], RelayStore]) -> None:
    store = opened()
    host = add_host(store)
    store.ban_domain("bad.example")
    rows = store.apply_batch(
        [account("did:plc:a", host.id, rev="3k", commit=cid("c"), data=cid("d"))],
        [event("did:plc:a"), event("did:plc:a")],
        [("did:plc:a", "app.bsky.feed.post")],
        {host.id: (41, NOW + 5)},
    )
    store.close()
    again = opened()
    assert again.head_seq() == 2
    assert again.read_events(0, 10) == rows
    assert again.get_host(host.id) == dataclasses.replace(
        host, last_seq=41, last_event_ms=NOW + 5, account_count=1
    )
    assert again.get_account("did:plc:a") == account(
        "did:plc:a", host.id, rev="3k", commit=cid("c"), data=cid("d")
    )
    assert again.collections_of("did:plc:a") == ["app.bsky.feed.post"]
    assert again.list_banned_domains() == ["bad.example"]


# --- apply_batch and the event log ----------------------------------------------------------


def test_apply_batch_sequences_frames_with_their_seq(store: RelayStore) -> None:
    host = add_host(store)
    rows = store.apply_batch(
        [account("did:plc:a", host.id)], [event("did:plc:a"), event("did:plc:b", NOW + 1)]
    )
    assert [(r.seq, r.did, r.type, r.time_ms) for r in rows] == [
        (1, "did:plc:a", "#identity", NOW),
        (2, "did:plc:b", "#identity", NOW + 1),
    ]
    for row in rows:
        frame = decode_frame(row.frame)
        assert isinstance(frame, IdentityEvent)
        assert frame.seq == row.seq
    assert store.read_events(0, 10) == rows
    assert store.read_events(1, 10) == rows[1:]
    assert store.read_events(0, 1) == rows[:1]
    assert store.head_seq() == 2
    assert store.oldest_seq() == 1


def test_empty_and_cursor_only_batches(store: RelayStore) -> None:
    host = add_host(store)
    assert store.apply_batch([], []) == []
    assert store.apply_batch([], [], cursors={host.id: (7, None)}) == []
    got = store.get_host(host.id)
    assert got is not None and got.last_seq == 7 and got.last_event_ms is None
    store.apply_batch([], [], cursors={host.id: (9, NOW)})
    got = store.get_host(host.id)
    assert got is not None and (got.last_seq, got.last_event_ms) == (9, NOW)
    assert store.head_seq() == 0


def test_stored_times_never_go_back(store: RelayStore) -> None:
    rows = store.apply_batch(
        [], [event("did:plc:a", NOW + 10), event("did:plc:a", NOW), event("did:plc:a", NOW + 20)]
    )
    assert [row.time_ms for row in rows] == [NOW + 10, NOW + 10, NOW + 20]
    (later,) = store.apply_batch([], [event("did:plc:a", NOW + 1)])
    assert later.time_ms == NOW + 20


def test_a_failing_encode_stores_nothing_of_the_batch(store: RelayStore) -> None:
    host = add_host(store)
    store.apply_batch([], [event("did:plc:a")])

    def broken(seq: int) -> bytes:
        raise RuntimeError("crash while encoding")

    with pytest.raises(RuntimeError, match="crash"):
        store.apply_batch(
            [account("did:plc:new", host.id)],
            [event("did:plc:x"), event("did:plc:y"), PendingEvent("did:plc:z", "#identity", NOW, broken)],
            [("did:plc:new", "app.bsky.feed.like")],
            {host.id: (100, NOW)},
        )
    assert store.head_seq() == 1
    assert [row.seq for row in store.read_events(0, 10)] == [1]
    assert store.get_account("did:plc:new") is None
    assert store.collections_of("did:plc:new") == []
    got = store.get_host(host.id)
    assert got is not None and (got.last_seq, got.account_count) == (-1, 0)
    (next_row,) = store.apply_batch([], [event("did:plc:a")])
    assert next_row.seq == 2  # the failed batch left no gap


def test_an_unknown_host_rolls_the_batch_back(store: RelayStore) -> None:
    with pytest.raises(KeyError):
        store.apply_batch([], [event("did:plc:a")], cursors={99: (1, NOW)})
    with pytest.raises(INTEGRITY_ERRORS):  # foreign key: the account's host must exist
        store.apply_batch([account("did:plc:a", 99)], [event("did:plc:a")])
    assert store.head_seq() == 0
    assert store.get_account("did:plc:a") is None


def test_seqs_are_never_reused_after_pruning_the_tail_and_reopening(opened: Callable[[], RelayStore]) -> None:
    store = opened()
    store.apply_batch([], [event("did:plc:a", NOW + i) for i in range(5)])
    assert store.prune_events(NOW + 2) == 2
    assert store.oldest_seq() == 3
    assert store.prune_events(NOW + 100) == 3  # the whole log, its tail included
    assert store.oldest_seq() is None
    assert store.head_seq() == 5
    store.close()
    store = opened()
    assert store.head_seq() == 5
    (row,) = store.apply_batch([], [event("did:plc:a", NOW + 200)])
    assert row.seq == 6


def test_event_stats_follow_the_stored_range(store: RelayStore) -> None:
    store.apply_batch([], [event("did:plc:a", NOW + i) for i in range(10)])
    store.prune_events(NOW + 4)
    stats = store.stats()
    assert (stats["events"], stats["oldest_seq"], stats["head_seq"]) == (6, 5, 10)


_SCHEMAS = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("batch"), st.integers(0, 6), st.integers(0, 50)),
            st.tuples(st.just("prune"), st.integers(0, 60), st.just(0)),
            st.tuples(st.just("fail"), st.integers(1, 4), st.just(0)),
        ),
        max_size=25,
    )
)
def test_batches_and_prunes_keep_the_log_monotone_and_contiguous(
    tmp_path_factory: pytest.TempPathFactory, database: str | None, steps: list[tuple[str, int, int]]
) -> None:
    store: RelayStore
    if database is None:
        store = SQLiteRelayStore(tmp_path_factory.mktemp("relay"), synchronous="NORMAL")
    else:  # a fresh schema per example
        store = PostgresRelayStore(database, schema=f"relay_{next(_SCHEMAS)}")
    try:
        clock = NOW
        head = 0
        for kind, n, dt in steps:
            if kind == "batch":
                clock += dt
                rows = store.apply_batch([], [event("did:plc:a", clock) for _ in range(n)])
                assert [row.seq for row in rows] == list(range(head + 1, head + n + 1))
            elif kind == "prune":
                store.prune_events(NOW + n * 10)
            else:

                def broken(seq: int) -> bytes:
                    raise ValueError("no")

                pending = [event("did:plc:a", clock) for _ in range(n)] + [
                    PendingEvent("did:plc:a", "#identity", clock, broken)
                ]
                with pytest.raises(ValueError):
                    store.apply_batch([], pending)
            new_head = store.head_seq()
            assert new_head >= head
            head = new_head
            stored = store.read_events(0, 10_000)
            seqs = [row.seq for row in stored]
            if seqs:
                assert seqs == list(range(seqs[0], head + 1))
                assert store.oldest_seq() == seqs[0]
                assert [row.time_ms for row in stored] == sorted(row.time_ms for row in stored)
                middle = seqs[len(seqs) // 2]
                assert [row.seq for row in store.read_events(middle, 3)] == seqs[seqs.index(middle) + 1 :][:3]
            else:
                assert store.oldest_seq() is None
    finally:
        store.close()


# --- accounts -----------------------------------------------------------------------------


def counts(store: RelayStore, *hosts: HostRow) -> list[int]:
    out = []
    for host in hosts:
        got = store.get_host(host.id)
        assert got is not None
        out.append(got.account_count)
    return out


def test_account_counts_stay_exact_across_insert_move_and_delete(store: RelayStore) -> None:
    one, two = add_host(store, "one.example"), add_host(store, "two.example")
    store.apply_batch([account("did:plc:a", one.id), account("did:plc:b", one.id)], [])
    assert counts(store, one, two) == [2, 0]
    store.apply_batch([account("did:plc:a", one.id, rev="2")], [])  # an update, not a new account
    assert counts(store, one, two) == [2, 0]
    store.apply_batch([account("did:plc:a", two.id)], [])  # a move
    assert counts(store, one, two) == [1, 1]
    # In one batch: a new account that then moves, an account moving there and back.
    store.apply_batch(
        [
            account("did:plc:c", one.id),
            account("did:plc:c", two.id),
            account("did:plc:b", two.id),
            account("did:plc:b", one.id),
        ],
        [],
    )
    assert counts(store, one, two) == [1, 2]
    assert store.get_account("did:plc:c") == account("did:plc:c", two.id)
    assert store.delete_account("did:plc:a") is True
    assert store.delete_account("did:plc:a") is False
    assert counts(store, one, two) == [1, 1]
    assert store.count_accounts()["total"] == 2
    store.delete_account("did:plc:b")
    store.delete_account("did:plc:c")
    assert counts(store, one, two) == [0, 0]


def test_an_update_keeps_created_ms(store: RelayStore) -> None:
    host = add_host(store)
    store.apply_batch([account("did:plc:a", host.id)], [])
    store.apply_batch([account("did:plc:a", host.id, created_ms=NOW + 50, updated_ms=NOW + 60, rev="x")], [])
    got = store.get_account("did:plc:a")
    assert got is not None and (got.created_ms, got.updated_ms, got.rev) == (NOW, NOW + 60, "x")


def test_a_bad_local_status_is_refused(store: RelayStore) -> None:
    host = add_host(store)
    with pytest.raises(ValueError):
        store.apply_batch([account("did:plc:a", host.id, status="deleted")], [])
    with pytest.raises(ValueError):
        store.set_account_status("did:plc:a", "suspended")


@pytest.mark.parametrize(
    ("local", "upstream", "active", "public"),
    [
        ("active", "active", True, None),
        ("throttled", "active", True, "throttled"),
        ("desynchronized", "active", True, "desynchronized"),
        ("takendown", "active", False, "takendown"),
        ("active", "takendown", False, "takendown"),
        ("active", "deactivated", False, "deactivated"),
        ("active", "deleted", False, "deleted"),
        ("active", "suspended", False, "suspended"),
        ("throttled", "deactivated", False, "throttled"),
        ("takendown", "deleted", False, "takendown"),
    ],
)
def test_active_and_public_status(local: str, upstream: str, active: bool, public: str | None) -> None:
    row = account("did:plc:a", 1, status=local, upstream_status=upstream)
    assert row.active is active
    assert row.public_status == public


def test_account_reads_and_paging(store: RelayStore) -> None:
    one, two = add_host(store, "one.example"), add_host(store, "two.example")
    dids = [f"did:plc:{i:03d}" for i in range(12)]
    store.apply_batch(
        [account(did, one.id if i % 3 else two.id, commit=cid(did)) for i, did in enumerate(dids)], []
    )
    got = store.get_accounts([*dids[:3], "did:plc:nobody", dids[0]])
    assert sorted(got) == dids[:3]
    assert got[dids[1]].commit == cid(dids[1])
    assert store.get_accounts([]) == {}
    many = store.get_accounts([f"did:plc:x{i}" for i in range(1200)] + dids)  # past one IN batch
    assert sorted(many) == dids
    paged: list[str] = []
    after: str | None = None
    while page := store.list_accounts(after=after, limit=5):
        paged += [row.did for row in page]
        after = page[-1].did
    assert paged == dids
    on_two = [row.did for row in store.list_host_accounts(two.id)]
    assert on_two == dids[0::3]
    assert [row.did for row in store.list_host_accounts(two.id, after=dids[3], limit=2)] == [dids[6], dids[9]]
    changed = store.set_account_status(dids[3], "takendown", now_ms=NOW + 9)
    assert changed is not None and (changed.status, changed.updated_ms) == ("takendown", NOW + 9)
    assert store.set_account_status("did:plc:nobody", "takendown") is None
    assert [row.did for row in store.list_host_accounts(two.id, status="takendown")] == [dids[3]]
    store.set_account_status(dids[4], "throttled")
    store.set_account_status(dids[5], "takendown")
    assert [row.did for row in store.list_accounts_by_status("takendown")] == [dids[3], dids[5]]
    assert [row.did for row in store.list_accounts_by_status("takendown", after=dids[3])] == [dids[5]]
    assert store.list_accounts_by_status("desynchronized") == []
    store.set_account_status(dids[5], "active")
    assert store.count_accounts() == {
        "active": 10,
        "takendown": 1,
        "throttled": 1,
        "desynchronized": 0,
        "total": 12,
    }
    assert set(LOCAL_STATUSES) <= set(store.count_accounts())


# --- hosts --------------------------------------------------------------------------------


def test_hosts(store: RelayStore) -> None:
    host = add_host(store, "PDS.Example.com", configured=True, now_ms=NOW)
    assert host == HostRow(
        host.id, "pds.example.com", "https://PDS.Example.com", True, False, "active", -1, 100, 0,
        None, None, None, NOW, None, None, None,
    )  # fmt: skip
    assert add_host(store, "pds.example.com", trusted=True, account_limit=5) == host  # unchanged
    assert store.get_host_by_name("Pds.Example.Com") == host
    assert store.get_host(host.id + 100) is None
    assert store.get_host_by_name("nope.example") is None
    local = add_host(store, "127.0.0.1:2583", now_ms=NOW + 1000)
    assert [h.hostname for h in store.list_hosts()] == ["pds.example.com", "127.0.0.1:2583"]
    assert store.list_hosts(after_id=host.id) == [local]
    assert store.list_hosts(limit=1) == [host]
    assert store.count_hosts_created_since(NOW) == 2
    assert store.count_hosts_created_since(NOW + 1) == 1
    store.set_host_cursor(host.id, 1234)
    got = store.get_host(host.id)
    assert got is not None and got.last_seq == 1234
    with pytest.raises(KeyError):
        store.set_host_cursor(999, 1)


def test_host_status_and_its_error(store: RelayStore) -> None:
    host = add_host(store)
    failed = store.set_host_status(host.id, "idle", error="FutureCursor", now_ms=NOW + 1)
    assert (failed.status, failed.last_error, failed.last_error_ms) == ("idle", "FutureCursor", NOW + 1)
    offline = store.set_host_status(host.id, "offline", now_ms=NOW + 2)  # no error: the last one stays
    assert (offline.status, offline.last_error, offline.last_error_ms) == ("offline", "FutureCursor", NOW + 1)
    back = store.set_host_status(host.id, "active", now_ms=NOW + 3)  # recovered: the error goes
    assert (back.status, back.last_error, back.last_error_ms) == ("active", None, None)
    for status in HOST_STATUSES:
        assert store.set_host_status(host.id, status, now_ms=NOW).status == status
    with pytest.raises(ValueError):
        store.set_host_status(host.id, "gone", now_ms=NOW)
    with pytest.raises(KeyError):
        store.set_host_status(999, "idle", now_ms=NOW)
    stats = store.stats()
    assert (stats["hosts"], stats["hosts_banned"], stats["hosts_active"]) == (1, 1, 0)


def test_host_limits(store: RelayStore) -> None:
    host = add_host(store)
    same = store.set_host_limits(host.id)
    assert same == host
    limited = store.set_host_limits(
        host.id, account_limit=7, rate_per_second=3, rate_per_day=90, trusted=True
    )
    assert (limited.account_limit, limited.rate_per_second, limited.rate_per_hour, limited.rate_per_day) == (
        7,
        3,
        None,
        90,
    )
    assert limited.trusted
    reset = store.set_host_limits(host.id, rate_per_second=None)  # back to the default policy
    assert (reset.account_limit, reset.rate_per_second, reset.rate_per_day) == (7, None, 90)
    with pytest.raises(KeyError):
        store.set_host_limits(999, account_limit=1)
    with pytest.raises(KeyError):
        store.set_host_limits(999)


# --- domain bans ---------------------------------------------------------------------------


def test_banned_domains_cover_their_subdomains(store: RelayStore) -> None:
    store.ban_domain("Bad.Example.")
    store.ban_domain("bad.example")
    store.ban_domain("10.0.0.1")
    assert store.list_banned_domains() == ["10.0.0.1", "bad.example"]
    assert store.is_banned("bad.example")
    assert store.is_banned("pds.bad.example")
    assert store.is_banned("a.b.BAD.example:8443")
    assert not store.is_banned("notbad.example")
    assert not store.is_banned("example")
    assert not store.is_banned("bad.example.org")
    assert store.is_banned("10.0.0.1:2583")
    assert not store.is_banned("110.0.0.1")
    assert not store.is_banned("[::1]:2583")
    assert store.unban_domain("BAD.example") is True
    assert store.unban_domain("bad.example") is False
    assert not store.is_banned("pds.bad.example")
    with pytest.raises(ValueError):
        store.ban_domain(" ")


# --- collections ---------------------------------------------------------------------------


def test_collections_index(store: RelayStore) -> None:
    host = add_host(store)
    post, like = "app.bsky.feed.post", "app.bsky.feed.like"
    store.apply_batch([account("did:plc:b", host.id)], [], [("did:plc:b", post), ("did:plc:b", post)])
    store.add_collections([("did:plc:a", post), ("did:plc:c", post), ("did:plc:a", like)])
    assert store.list_repos_by_collection(post) == ["did:plc:a", "did:plc:b", "did:plc:c"]
    assert store.list_repos_by_collection(post, after="did:plc:a", limit=1) == ["did:plc:b"]
    assert store.list_repos_by_collection("com.example.none") == []
    assert store.collections_of("did:plc:a") == [like, post]
    store.replace_collections("did:plc:a", [like, "x.y.z", like])
    assert store.collections_of("did:plc:a") == [like, "x.y.z"]
    assert store.list_repos_by_collection(post) == ["did:plc:b", "did:plc:c"]
    store.delete_account("did:plc:b")
    assert store.collections_of("did:plc:b") == []
    store.apply_batch(
        [],
        [event("did:plc:c")],
        [("did:plc:c", like)],
        replace_collections={"did:plc:c": ["a.b.c"], "did:plc:a": []},
    )
    assert store.collections_of("did:plc:c") == ["a.b.c", like]  # replaced, then added
    assert store.collections_of("did:plc:a") == []


# --- through the worker and the fan-out -----------------------------------------------------


async def test_fanout_serves_the_relay_log(store: RelayStore) -> None:
    worker = StoreWorker(store)
    fanout = Fanout(worker, window=8, page=4)
    try:
        host = await worker.run(add_host)
        first = await worker.run(
            RelayStore.apply_batch, [account("did:plc:a", host.id)], [event("did:plc:a") for _ in range(6)]
        )
        await fanout.start()
        assert fanout.tail == 6
        got = await fanout.backfill(0, 4)
        assert got.rows == first[:4]
        assert len(got.wires) == 4
        assert (await fanout.backfill(4, 4)).rows == first[4:]
        more = await worker.run(RelayStore.apply_batch, [], [event("did:plc:b") for _ in range(3)])
        fanout.offer(more)
        assert fanout.tail == 9
        assert fanout.rows_after(6, 10) == more
        assert (await fanout.backfill(6, 10)).rows == more
    finally:
        await fanout.close()
        await worker.close()


# --- large batches (COPY on PostgreSQL) ------------------------------------------------------


def test_large_batches_match_row_by_row_semantics(store: RelayStore) -> None:
    """Batches past the bulk threshold (COPY and a merge on PostgreSQL): inserts, stays, moves,
    duplicate collection pairs, already indexed pairs, the last row of a DID winning."""
    one, two = add_host(store, "one.example"), add_host(store, "two.example")
    dids = [f"did:plc:{i:04d}" for i in range(60)]
    store.add_collections([(dids[0], "app.bsky.feed.post")])
    rows = store.apply_batch(
        [account(did, one.id, rev="1", commit=cid(did)) for did in dids],
        [event(did, NOW + i) for i, did in enumerate(dids)],
        [(did, "app.bsky.feed.post") for did in dids] * 2,
        {one.id: (60, NOW + 60)},
    )
    assert [r.seq for r in rows] == list(range(1, 61))
    assert store.read_events(0, 100) == rows
    assert counts(store, one, two) == [60, 0]
    # Half stay (a new rev), a third move, one is updated twice in the batch (the last row wins).
    changed = [account(did, one.id, rev="2", updated_ms=NOW + 1) for did in dids[:30]]
    changed += [account(did, two.id, rev="2", data=cid("d"), updated_ms=NOW + 2) for did in dids[30:50]]
    changed.append(account(dids[0], one.id, rev="3", status="throttled", updated_ms=NOW + 3))
    changed += [account(f"did:plc:new{i}", two.id) for i in range(5)]
    more = store.apply_batch(changed, [event(did) for did in dids[:20]], [(dids[1], "app.bsky.feed.like")])
    assert [r.seq for r in more] == list(range(61, 81))
    assert counts(store, one, two) == [40, 25]
    first = store.get_account(dids[0])
    assert first is not None and (first.rev, first.status, first.created_ms) == ("3", "throttled", NOW)
    assert store.get_account(dids[1]) == account(dids[1], one.id, rev="2", updated_ms=NOW + 1)
    moved = store.get_account(dids[40])
    assert moved == account(dids[40], two.id, rev="2", data=cid("d"), updated_ms=NOW + 2)
    assert store.get_account(dids[55]) == account(dids[55], one.id, rev="1", commit=cid(dids[55]))
    assert store.list_repos_by_collection("app.bsky.feed.post", limit=1000) == dids
    assert store.collections_of(dids[1]) == ["app.bsky.feed.like", "app.bsky.feed.post"]
    assert store.count_accounts()["total"] == 65
    assert sorted(store.get_accounts([*dids, "did:plc:none"])) == dids


# --- PostgreSQL: the writer lock, the fan-out follower, NOTIFY -------------------------------


def test_postgres_one_writer_and_followers(pg_url: str) -> None:
    """One ingesting writer per schema; followers (fan-out processes) beside it read and never write."""
    import psycopg

    writer = open_relay_store(pg_url)
    assert isinstance(writer, PostgresRelayStore) and writer.schema_version == SCHEMA_VERSION
    assert "atrepo_relay" in writer.location
    with pytest.raises(StoreInUse, match="held by another relay"):
        PostgresRelayStore(pg_url)
    follower = open_relay_store(pg_url, follower=True)
    second = PostgresRelayStore(pg_url, follower=True)
    try:
        assert "read-only" in follower.location
        host = add_host(writer)
        rows = writer.apply_batch([account("did:plc:a", host.id)], [event("did:plc:a")])
        assert follower.read_events(0, 10) == rows and second.head_seq() == 1
        assert follower.get_account("did:plc:a") == account("did:plc:a", host.id)
        with pytest.raises(RuntimeError, match="read-only"):
            follower.apply_batch([], [event("did:plc:b")])
        with pytest.raises(RuntimeError, match="read-only"):
            follower.ban_domain("x.example")
        writer.close()
        with PostgresRelayStore(pg_url) as again:  # followers never kept the writer out
            assert again.head_seq() == 1
    finally:
        follower.close()
        second.close()
        writer.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE atrepo_relay.schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        PostgresRelayStore(pg_url)


def test_postgres_committed_batches_notify_their_head(pg_url: str) -> None:
    with open_relay_store(pg_url) as writer, PostgresRelayStore(pg_url, follower=True) as follower:
        assert isinstance(writer, PostgresRelayStore)
        listener = follower.listen()
        try:
            assert listener.wait(0.05) is None
            writer.apply_batch([], [event("did:plc:a") for _ in range(3)])
            assert listener.wait(5) == 3
            writer.apply_batch([], [], cursors={})  # no events: nothing to announce
            with pytest.raises(RuntimeError):
                writer.apply_batch([], [PendingEvent("did:plc:a", "#identity", NOW, _broken)])
            assert listener.wait(0.2) is None  # a rolled-back batch announces nothing
            writer.apply_batch([], [event("did:plc:a")])
            writer.apply_batch([], [event("did:plc:a") for _ in range(20)])  # COPY path
            head = 0
            while head < 24:  # two notifications, maybe read at once
                seq = listener.wait(5)
                assert seq is not None and seq in (4, 24)
                head = max(head, seq)
            assert follower.head_seq() == 24
        finally:
            listener.close()


def _broken(seq: int) -> bytes:
    raise RuntimeError("crash while encoding")


def test_postgres_unreachable_and_password_hidden() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"postgresql://u:secret@127.0.0.1:{port}/db?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as info:
        open_relay_store(url)
    assert "secret" not in str(info.value) and "u:***@" in str(info.value)


# --- the split roles' queue: ingest processes queue, the sequencer sequences -----------------


def test_queued_events_take_their_seqs_in_queue_order(store: RelayStore) -> None:
    """``queue_batch`` writes accounts and cursors but allocates no seq; ``sequence_pending`` then
    gives the queued frames consecutive seqs, byte for byte what ``apply_batch`` would have stored."""
    host = add_host(store)
    events = [event(f"did:plc:{i}", NOW + i) for i in range(40)]  # past the COPY threshold
    queued = store.queue_batch([account("did:plc:0", host.id)], events[:30], cursors={host.id: (7, NOW)})
    assert queued == 30 and store.pending_count() == 30 and store.head_seq() == 0
    assert store.read_events(0, 100) == []
    host_row = store.get_host(host.id)
    assert host_row is not None and host_row.last_seq == 7 and store.get_account("did:plc:0") is not None
    first = store.sequence_pending(limit=4)
    assert [r.seq for r in first] == [1, 2, 3, 4] and store.pending_count() == 26
    assert store.queue_batch([], events[30:]) == 10
    rest = store.sequence_pending(limit=1000)
    rows = first + rest
    assert [r.seq for r in rows] == list(range(1, 41)) and store.pending_count() == 0
    for row, original in zip(rows, events, strict=True):
        assert row.frame == original.encode(row.seq) and row.did == original.did
        assert decode_frame(row.frame).seq == row.seq  # type: ignore[attr-defined]
    assert store.read_events(0, 100) == rows and store.head_seq() == 40
    assert store.sequence_pending() == [] and store.queue_batch([], []) == 0


def test_a_frame_without_the_placeholder_queues_nothing(store: RelayStore) -> None:
    host = add_host(store)

    def fixed(seq: int) -> bytes:  # ignores the seq it is given
        return identity_frame("did:plc:a", NOW)(5)

    with pytest.raises(ValueError, match="placeholder"):
        store.queue_batch(
            [account("did:plc:a", host.id)],
            [PendingEvent("did:plc:a", "#identity", NOW, fixed)],
            cursors={host.id: (3, None)},
        )
    assert store.pending_count() == 0 and store.get_account("did:plc:a") is None
    row = store.get_host(host.id)
    assert row is not None and row.last_seq == -1


def test_postgres_role_locks(pg_url: str) -> None:
    """Ingest partitions run side by side with one sequencer; a second of either, or a whole relay
    beside them, is refused; a follower is never refused."""
    zero = PostgresRelayStore(pg_url, partition=(0, 2))
    one = PostgresRelayStore(pg_url, partition=(1, 2))
    sequencer = PostgresRelayStore(pg_url, sequencer=True)
    try:
        assert "partition 0/2" in zero.location and "sequencer" in sequencer.location
        with pytest.raises(StoreInUse):
            PostgresRelayStore(pg_url, partition=(0, 2))
        with pytest.raises(StoreInUse, match="another relay sequencer"):
            PostgresRelayStore(pg_url, sequencer=True)
        with pytest.raises(StoreInUse):
            PostgresRelayStore(pg_url)
        PostgresRelayStore(pg_url, follower=True).close()
        with pytest.raises(ValueError, match="one of"):
            PostgresRelayStore(pg_url, sequencer=True, partition=(0, 2))
    finally:
        for store in (zero, one, sequencer):
            store.close()
    with PostgresRelayStore(pg_url):  # all gone: the whole relay may run
        with pytest.raises(StoreInUse):
            PostgresRelayStore(pg_url, sequencer=True)
        with pytest.raises(StoreInUse):
            PostgresRelayStore(pg_url, partition=(1, 2))


def test_postgres_a_row_committed_late_is_sequenced_later_without_a_gap(pg_url: str) -> None:
    """Ingest transactions commit in any order: a queued row whose id is below rows already
    sequenced (its transaction committed after theirs) is neither lost nor deleted unseen, and
    takes the next seq; the sequencer's commits notify the fan-out, the ingests' the sequencer."""
    import psycopg

    class Racing(PostgresRelayStore):
        """Runs ``between`` once, after the sequencer's SELECT of the queue and before its DELETE."""

        between: Callable[[], None] | None = None

        def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
            if self.between is not None:
                self.between()
                self.between = None
            return super().in_list(column, values)

    ingest = PostgresRelayStore(pg_url, partition=(0, 1))
    sequencer = Racing(pg_url, sequencer=True)
    follower = PostgresRelayStore(pg_url, follower=True)
    queue = follower.listen(RELAY_PENDING_CHANNEL)
    log = follower.listen()
    late_frame = identity_frame("did:plc:late", NOW)(SEQ_PLACEHOLDER)
    try:
        with psycopg.connect(pg_url) as slow:  # a transaction of another ingest process, still open
            slow.execute(
                "INSERT INTO atrepo_relay.pending (did, type, time_ms, frame, seq_at)"
                " VALUES ('did:plc:late', '#identity', %s, %s, %s)",
                (NOW, late_frame, placeholder_slot(late_frame)[0]),
            )
            assert ingest.queue_batch([], [event("did:plc:a"), event("did:plc:b")]) == 2
            assert queue.wait(5) == 0
            sequencer.between = slow.commit  # the late row commits while the sequencer works
            rows = sequencer.sequence_pending()
            assert [(r.seq, r.did) for r in rows] == [(1, "did:plc:a"), (2, "did:plc:b")]
            assert log.wait(5) == 2 and sequencer.between is None
        (late,) = sequencer.sequence_pending()
        assert (late.seq, late.did) == (3, "did:plc:late")
        assert late.frame == identity_frame("did:plc:late", NOW)(3)
        assert sequencer.pending_count() == 0 and follower.head_seq() == 3
    finally:
        queue.close()
        log.close()
        for store in (ingest, sequencer, follower):
            store.close()
    with pytest.raises(ValueError, match="only on PostgreSQL"):
        open_relay_store("relay.sqlite", sequencer=True)  # refused before any file is opened
