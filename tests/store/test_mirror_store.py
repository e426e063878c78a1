"""The sync consumer's mirror store: merges, atomicity, visibility, digests and the Jetstream log.

Everything runs against both backends: a real SQLite file in the test's
directory, and a real PostgreSQL server (tests/pg_support.py, a database per
test); a crash is an exception raised inside a write (the transaction must
leave nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor
from atrepo.core.cid import CID
from atrepo.core.datamodel import record_cid
from atrepo.core.errors import StoreInUse, StoreUnavailable
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.store import REPO_STATES, MirrorStore, RecordOp, StoreWorker, mirror
from atrepo.store.mirror import (
    JETSTREAM_NSID,
    MIRROR_DB_FILENAME,
    PostgresMirrorStore,
    SQLiteMirrorStore,
    digest_records,
    open_mirror,
)

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
FOLLOW = "app.bsky.graph.follow"
DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
DID2 = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
DATA = CID.for_dag_cbor(cbor.encode({"data": 1}))
COMMIT = CID.for_dag_cbor(cbor.encode({"commit": 1}))


class Clock:
    """Wall-clock microseconds that move only when told (and may be set back)."""

    def __init__(self, us: int = 1_800_000_000_000_000) -> None:
        self.us = us

    def __call__(self) -> int:
        return self.us


def rec(text: str, collection: str = POST, **extra: Any) -> dict[str, Any]:
    return {"$type": collection, "text": text, "createdAt": "2026-01-01T00:00:00.000Z", **extra}


def entry(collection: str, rkey: str, value: Any) -> tuple[str, str, CID, Any]:
    return collection, rkey, record_cid(value), value


def mst_sorted(entries: list[tuple[str, str, CID, Any]]) -> list[tuple[str, str, CID, Any]]:
    return sorted(entries, key=lambda e: f"{e[0]}/{e[1]}".encode())


def stored_map(store: MirrorStore, did: str) -> dict[tuple[str, str], CID]:
    return {(r.collection, r.rkey): r.cid for r in store.list_records(did)}


@pytest.fixture
def clock() -> Clock:
    return Clock()


Opener = Callable[..., MirrorStore]


@pytest.fixture
def opener(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Opens this test's mirror (the same one each call; ``schema=`` picks another on PostgreSQL)."""
    target: Path | str = (
        request.getfixturevalue("pg_url") if backend == "postgresql" else tmp_path / "m" / "mirror.sqlite3"
    )

    def open_(*, schema: str = "atrepo_mirror", **kw: Any) -> MirrorStore:
        if backend == "sqlite" and schema != "atrepo_mirror":
            return open_mirror(tmp_path / f"{schema}.sqlite3", **kw)
        return open_mirror(target, schema=schema, **kw)

    return open_


@pytest.fixture
def store(opener: Opener, clock: Clock) -> Iterator[MirrorStore]:
    s = opener(now_us=clock)
    yield s
    s.close()


def create_op(collection: str, rkey: str, value: Any) -> RecordOp:
    return RecordOp("create", collection, rkey, record_cid(value), value)


# --- opening ---------------------------------------------------------------------------


def test_open_directory_lock_and_schema(tmp_path: Path) -> None:
    first = SQLiteMirrorStore(tmp_path)
    assert first.path == tmp_path / MIRROR_DB_FILENAME
    assert first.schema_version == mirror.SCHEMA_VERSION == 2
    with pytest.raises(StoreInUse):
        SQLiteMirrorStore(tmp_path)
    first.close()
    first.close()  # a second close does nothing
    with SQLiteMirrorStore(tmp_path, synchronous="NORMAL") as again:
        assert again.stats()["repos"] == 0
    with pytest.raises(ValueError):
        SQLiteMirrorStore(tmp_path, synchronous="OFF")  # type: ignore[arg-type]


def test_newer_schema_refused(tmp_path: Path) -> None:
    SQLiteMirrorStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / MIRROR_DB_FILENAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        SQLiteMirrorStore(tmp_path)


def test_postgres_lock_schema_and_isolation(pg_url: str) -> None:
    """One writer per schema (a second opener is refused at once); other schemas are separate stores."""
    import psycopg

    first = open_mirror(pg_url)
    assert isinstance(first, PostgresMirrorStore) and first.schema_version == 2
    assert "atrepo_mirror" in first.location
    with pytest.raises(StoreInUse, match="held by another sync consumer"):
        PostgresMirrorStore(pg_url)
    with PostgresMirrorStore(pg_url, schema="other_mirror") as other:
        other.set_cursor("s", 5)
        assert first.get_cursor("s") is None and other.get_cursor("s") == 5
    first.close()
    first.close()  # a second close does nothing
    with PostgresMirrorStore(pg_url) as again:  # the lock went with the connection
        assert again.stats()["repos"] == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE atrepo_mirror.schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        PostgresMirrorStore(pg_url)
    with pytest.raises(ValueError, match="identifier"):
        PostgresMirrorStore(pg_url, schema="bad; drop table x")


def test_postgres_unreachable_and_password_hidden() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"postgresql://u:secret@127.0.0.1:{port}/db?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as info:
        open_mirror(url)
    assert "secret" not in str(info.value) and "u:***@" in str(info.value)


def _terminate_others(url: str) -> None:
    """Kill every other backend of the database, as a server restart or an admin would."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_postgres_reconnects_after_the_server_drops_the_connection(pg_url: str) -> None:
    """Connections dropped between statements are reopened (the writer re-takes its lock)."""
    with PostgresMirrorStore(pg_url) as store:
        store.set_cursor("s", 1)
        assert store.get_cursor("s") == 1
        _terminate_others(pg_url)
        store.set_cursor("s", 2)  # the writer noticed at BEGIN, before anything was sent
        assert store.get_cursor("s") == 2  # the reader too
        with pytest.raises(StoreInUse):  # the reopened writer holds the lock again
            PostgresMirrorStore(pg_url)


def test_postgres_connection_lost_mid_write_loses_only_that_write(pg_url: str) -> None:
    import psycopg

    with PostgresMirrorStore(pg_url) as store:
        many = mst_sorted([entry(POST, f"k{i:03d}", rec(str(i))) for i in range(50)])
        store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=many)
        store.set_cursor("s", 1)
        with pytest.raises(psycopg.OperationalError), store._write() as db:
            db.execute("UPDATE cursors SET seq = 2 WHERE source = 's'")
            _terminate_others(pg_url)
            db.execute("UPDATE cursors SET seq = 3 WHERE source = 's'")
        assert store.get_cursor("s") == 1  # nothing of it committed
        # the writer is reopened with its temporary tables: a bulk merge of updates and deletes (COPY
        # through them) works
        changed = [entry(POST, r, rec("new" + r)) for _, r, _, _ in many[:30]]
        result = store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=changed, cursor=("s", 4))
        assert (result.updated, result.deleted) == (30, 20)
        assert store.get_cursor("s") == 4
        assert stored_map(store, DID) == {(c, r): cid for c, r, cid, _ in changed}


def test_keys_are_in_byte_order_whatever_the_collation(store: MirrorStore) -> None:
    """MST keys sort by bytes ("B" < "_" < "a"); the merge and every listing depend on it."""
    rkeys = ["a", "B", "_", "Z", "3", "a-b", "a.b", "a~"]
    entries = mst_sorted([entry(POST, r, rec(r)) for r in rkeys])
    store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=entries)
    assert [r.rkey for r in store.list_records(DID)] == sorted(rkeys, key=str.encode)
    result = store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=entries[1:])
    assert (result.deleted, result.unchanged, result.created) == (1, len(rkeys) - 1, 0)
    assert store.records_digest(DID) == digest_records((c, r, cid) for c, r, cid, _ in entries[1:])


# --- apply_commit ----------------------------------------------------------------------


def test_apply_commit_upserts_deletes_and_emits(store: MirrorStore) -> None:
    a, b = rec("a"), rec("b")
    events = store.apply_commit(
        DID,
        rev="3kaaaaaaaaa22",
        data=DATA,
        commit=COMMIT,
        ops=[create_op(POST, "1", a), create_op(POST, "2", b)],
        cursor=("relay", 10),
    )
    assert [e.kind for e in events] == ["commit", "commit"]
    assert events[0].time_us < events[1].time_us
    assert store.get_cursor("relay") == 10
    got = store.get_record(DID, POST, "1")
    assert got is not None and got.value == a and got.cid == record_cid(a)
    repo = store.get_repo(DID)
    assert repo is not None
    assert (repo.state, repo.account_status, repo.rev, repo.data, repo.commit) == (
        "active",
        "active",
        "3kaaaaaaaaa22",
        DATA,
        COMMIT,
    )
    payload = json.loads(events[0].payload)
    assert payload == {
        "$type": f"{JETSTREAM_NSID}#commit",
        "seq": events[0].time_us,
        "did": DID,
        "time": payload["time"],
        "rev": "3kaaaaaaaaa22",
        "operation": "create",
        "collection": POST,
        "rkey": "1",
        "record": a,
        "cid": str(record_cid(a)),
    }
    assert payload["time"].endswith("Z") and len(payload["time"].split(".")[1]) == 7  # microseconds
    assert events[0].payload == json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    b2 = rec("b2")
    events = store.apply_commit(
        DID,
        rev="3kaaaaaaaaa23",
        data=DATA,
        commit=COMMIT,
        ops=[RecordOp("update", POST, "2", record_cid(b2), b2), RecordOp("delete", POST, "1", None, None)],
        cursor=("relay", 11),
        time="2026-01-01T00:00:00.000Z",
    )
    update, delete = (json.loads(e.payload) for e in events)
    assert update["operation"] == "update" and update["record"] == b2
    assert update["time"] == "2026-01-01T00:00:00.000Z"
    assert delete["operation"] == "delete" and "record" not in delete and "cid" not in delete
    assert stored_map(store, DID) == {(POST, "2"): record_cid(b2)}
    assert store.get_cursor("relay") == 11
    assert store.read_events(0, 100) == [*store.read_events(0, 2), *events]


def test_apply_commit_without_emit_and_bad_ops(store: MirrorStore) -> None:
    assert (
        store.apply_commit(
            DID,
            rev="r1",
            data=DATA,
            commit=COMMIT,
            ops=[create_op(POST, "1", rec("x"))],
            cursor=None,
            emit=False,
        )
        == []
    )
    assert store.read_events(0, 10) == [] and store.head_time_us() == 0
    assert store.get_cursor("relay") is None
    with pytest.raises(ValueError):
        store.apply_commit(
            DID, rev="r2", data=DATA, commit=COMMIT, ops=[RecordOp("put", POST, "1", None, None)], cursor=None
        )
    with pytest.raises(ValueError):
        store.apply_commit(
            DID,
            rev="r2",
            data=DATA,
            commit=COMMIT,
            ops=[RecordOp("create", POST, "1", None, {})],
            cursor=None,
        )
    assert store.get_repo(DID).rev == "r1"  # type: ignore[union-attr]


def test_values_keep_links_and_bytes(store: MirrorStore) -> None:
    value = rec("x", embed={"ref": DATA, "raw": b"\x00\x01\xff"})
    store.apply_commit(DID, rev="r", data=DATA, commit=COMMIT, ops=[create_op(POST, "1", value)], cursor=None)
    got = store.get_record(DID, POST, "1")
    assert got is not None and got.value == value
    (event,) = store.read_events(0, 10)
    record = json.loads(event.payload)["record"]
    assert record["embed"] == {"ref": {"$link": str(DATA)}, "raw": {"$bytes": "AAH/"}}


# --- crash atomicity --------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_mid_commit_leaves_nothing(store: MirrorStore) -> None:
    store.apply_commit(
        DID, rev="r1", data=DATA, commit=COMMIT, ops=[create_op(POST, "1", rec("a"))], cursor=("relay", 5)
    )
    before = (stored_map(store, DID), store.get_repo(DID), store.read_events(0, 100), store.head_time_us())

    # A value JSON cannot encode (a set): fails after the earlier ops of the commit were written.
    exploding = {"$type": POST, "bad": {1, 2}}

    ops = [
        RecordOp("delete", POST, "1", None, None),  # written first (a delete flushes at once)
        create_op(POST, "2", rec("b")),
        RecordOp("create", POST, "3", record_cid(rec("c")), exploding),
    ]
    with pytest.raises(TypeError):
        store.apply_commit(DID, rev="r2", data=COMMIT, commit=DATA, ops=ops, cursor=("relay", 6))
    assert (
        stored_map(store, DID),
        store.get_repo(DID),
        store.read_events(0, 100),
        store.head_time_us(),
    ) == before
    assert store.get_cursor("relay") == 5


def test_exception_mid_replace_leaves_nothing(store: MirrorStore) -> None:
    entries = mst_sorted([entry(POST, f"{i:04d}", rec(str(i))) for i in range(50)])
    store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=entries, cursor=("relay", 1))
    before = (stored_map(store, DID), store.read_events(0, 1000), store.head_time_us(), store.get_repo(DID))

    def walk() -> Iterator[tuple[str, str, CID, Any]]:
        # Enough changes that chunks of writes and events were flushed before the failure.
        for i in range(2500):
            yield entry(LIKE, f"{i:05d}", rec(str(i), LIKE))
        raise Boom

    with pytest.raises(Boom):
        store.replace_repo(DID, rev="r2", data=COMMIT, commit=DATA, records=walk(), cursor=("relay", 2))
    assert (
        stored_map(store, DID),
        store.read_events(0, 1000),
        store.head_time_us(),
        store.get_repo(DID),
    ) == before
    assert store.get_cursor("relay") == 1
    # Out of order input is refused the same way.
    with pytest.raises(ValueError, match="not after"):
        store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=[entries[1], entries[0]])
    with pytest.raises(ValueError, match="not contiguous"):
        store.replace_repo(
            DID,
            rev="r2",
            data=DATA,
            commit=COMMIT,
            records=[entry(POST, "a", rec("a")), entry(LIKE, "a", rec("a")), entry(POST, "b", rec("b"))],
        )
    assert stored_map(store, DID) == before[0]


# --- replace_repo ----------------------------------------------------------------------


def test_replace_repo_in_bulk_and_a_failure_mid_bulk(store: MirrorStore) -> None:
    """Hundreds of rows per chunk (PostgreSQL's COPY path): merged right, and a failure leaves nothing."""
    first = mst_sorted([entry(POST, f"k{i:04d}", rec(str(i))) for i in range(300)])
    result = store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=first)
    assert (result.created, len(result.events)) == (300, 300)
    # every third deleted, every fifth updated, 50 new
    second = [e for i, e in enumerate(first) if i % 3]
    second = [entry(POST, e[1], rec("new" + e[1])) if i % 5 == 0 else e for i, e in enumerate(second)]
    second = mst_sorted(second + [entry(LIKE, f"l{i:03d}", rec(str(i), LIKE)) for i in range(50)])
    before_events = len(store.read_events(0, 100_000))

    def failing() -> Iterator[tuple[str, str, CID, Any]]:
        yield from second[:-1]
        raise RuntimeError("the walk failed at its last record")

    with pytest.raises(RuntimeError):
        store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=failing())
    assert stored_map(store, DID) == {(c, r): cid for c, r, cid, _ in first}
    assert len(store.read_events(0, 100_000)) == before_events
    result = store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=second, cursor=("s", 9))
    assert stored_map(store, DID) == {(c, r): cid for c, r, cid, _ in second}
    assert (result.deleted, result.created) == (100, 50)
    assert result.updated == len(
        [1 for i, e in enumerate(e for j, e in enumerate(first) if j % 3) if i % 5 == 0]
    )
    events = store.read_events(0, 100_000)
    assert len(events) == before_events + result.created + result.updated + result.deleted
    assert [e.time_us for e in events] == sorted({e.time_us for e in events})
    assert store.get_cursor("s") == 9
    assert store.records_digest(DID) == digest_records((c, r, cid) for c, r, cid, _ in second)


def test_replace_repo_merge(store: MirrorStore) -> None:
    first = mst_sorted(
        [
            entry(POST, "a", rec("a")),
            entry(POST, "b", rec("b")),
            entry(LIKE, "x", rec("x", LIKE)),
            entry(FOLLOW, "f", rec("f", FOLLOW)),
        ]
    )
    result = store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=first, cursor=("relay", 3))
    assert (result.created, result.updated, result.deleted, result.unchanged) == (4, 0, 0, 0)
    assert [json.loads(e.payload)["operation"] for e in result.events] == ["create"] * 4
    store.set_repo(DID, state="resyncing", error="boom", retry_at_ms=5)
    second = mst_sorted(
        [
            entry(POST, "a", rec("a")),
            entry(POST, "b", rec("b changed")),
            entry(POST, "c", rec("c")),
            entry(LIKE, "w", rec("w", LIKE)),
        ]
    )
    result = store.replace_repo(DID, rev="r2", data=COMMIT, commit=DATA, records=second, cursor=("relay", 4))
    assert (result.created, result.updated, result.deleted, result.unchanged) == (2, 1, 2, 1)
    ops = {
        (p["operation"], p["collection"], p["rkey"]) for p in (json.loads(e.payload) for e in result.events)
    }
    assert ops == {
        ("update", POST, "b"),
        ("create", POST, "c"),
        ("create", LIKE, "w"),
        ("delete", LIKE, "x"),
        ("delete", FOLLOW, "f"),
    }
    assert all(json.loads(e.payload)["rev"] == "r2" for e in result.events)
    assert stored_map(store, DID) == {(c, r): cid for c, r, cid, _ in second}
    repo = store.get_repo(DID)
    assert repo is not None
    assert (repo.state, repo.rev, repo.data, repo.error, repo.retry_at_ms) == (
        "active",
        "r2",
        COMMIT,
        None,
        None,
    )
    assert store.get_cursor("relay") == 4
    # Empty walk deletes everything, without emit nothing is logged.
    head = store.head_time_us()
    result = store.replace_repo(DID, rev="r3", data=DATA, commit=COMMIT, records=[], emit=False)
    assert (result.deleted, result.events) == (4, [])
    assert store.list_records(DID) == [] and store.head_time_us() == head


def test_replace_repo_accepts_real_mst_order_and_digest_matches(store: MirrorStore) -> None:
    """A collection that prefixes another (a.b vs a.b.c) sorts differently by path than by tuple."""
    key = PrivateKey.generate("k256")
    writes = [Write("create", "com.ex.a", f"k{i}", rec(str(i), "com.ex.a")) for i in range(30)]
    writes += [Write("create", "com.ex.a.b", f"k{i}", rec(str(i), "com.ex.a.b")) for i in range(30)]
    writes += [Write("create", "com.ex.ab", f"k{i}", rec(str(i), "com.ex.ab")) for i in range(5)]
    result = Repo.create(DID, key, writes)
    repo = result.repo

    def walk() -> Iterator[tuple[str, str, CID, Any]]:
        for path, cid in repo.walk():
            collection, rkey = path.split("/", 1)
            found = repo.get_record(collection, rkey)
            assert found is not None
            yield collection, rkey, cid, found[1]

    walked = [(c, r, cid) for c, r, cid, _ in walk()]
    assert [c for c, _, _ in walked] != sorted(c for c, _, _ in walked)  # the orders really differ
    out = store.replace_repo(
        DID, rev=result.rev, data=repo.commit.data, commit=repo.commit.cid, records=walk()
    )
    assert out.created == 65
    assert store.records_digest(DID) == digest_records(walked)
    # Resync against the same walk: all unchanged, nothing emitted.
    again = store.replace_repo(
        DID, rev=result.rev, data=repo.commit.data, commit=repo.commit.cid, records=walk()
    )
    assert (again.created, again.updated, again.deleted, again.unchanged, again.events) == (0, 0, 0, 65, [])


keys = st.tuples(
    st.sampled_from(["a.b", "a.b.c", "a.bc", "z.y"]), st.sampled_from([f"k{i}" for i in range(12)])
)
states = st.dictionaries(keys, st.integers(0, 3), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=states, after=states)
def test_replace_repo_matches_a_dict_model(
    opener: Opener, before: dict[Any, int], after: dict[Any, int]
) -> None:
    chunk = mirror._CHUNK
    mirror._CHUNK = 3  # exercise chunk boundaries of reads and writes
    try:
        with opener(schema=f"p{threading.get_ident()}_{os.urandom(4).hex()}") as store:

            def entries(model: dict[Any, int]) -> list[tuple[str, str, CID, Any]]:
                return mst_sorted([entry(c, r, rec(f"{c}{r}{v}", c)) for (c, r), v in model.items()])

            store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=entries(before))
            store.apply_commit(
                DID2,
                rev="r1",
                data=DATA,
                commit=COMMIT,
                ops=[create_op("a.b", "k1", rec("other"))],
                cursor=None,
            )
            result = store.replace_repo(DID, rev="r2", data=DATA, commit=COMMIT, records=entries(after))
            assert stored_map(store, DID) == {(c, r): cid for c, r, cid, _ in entries(after)}
            changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
            assert result.created == len(after.keys() - before.keys())
            assert result.deleted == len(before.keys() - after.keys())
            assert result.updated == len(changed)
            assert result.unchanged == len(before.keys() & after.keys()) - len(changed)
            assert len(result.events) == result.created + result.updated + result.deleted
            times = [e.time_us for e in store.read_events(0, 10_000)]
            assert times == sorted(set(times))
            assert len(store.list_records(DID2)) == 1  # another DID untouched
    finally:
        mirror._CHUNK = chunk


# --- repos, cursors, accounts, identity --------------------------------------------------


def test_set_repo_list_and_count(store: MirrorStore) -> None:
    repo = store.set_repo(DID, host="https://pds.example", state="backfilling")
    assert (repo.state, repo.account_status, repo.host, repo.rev) == (
        "backfilling",
        "active",
        "https://pds.example",
        None,
    )
    store.set_repo(DID2)
    repo = store.set_repo(
        DID2, state="error", error="HTTP 429", retry_at_ms=123, data=DATA, commit=COMMIT, rev="r"
    )
    assert (repo.error, repo.retry_at_ms, repo.data, repo.commit, repo.rev) == (
        "HTTP 429",
        123,
        DATA,
        COMMIT,
        "r",
    )
    assert store.set_repo(DID2, error=None).error is None
    counts = store.count_repos()
    assert set(counts) == set(REPO_STATES)
    assert counts["backfilling"] == 1 and counts["error"] == 1 and counts["pending"] == 0
    assert [r.did for r in store.list_repos()] == [DID, DID2]
    assert [r.did for r in store.list_repos(after=DID)] == [DID2]
    assert [r.did for r in store.list_repos(state="error")] == [DID2]
    assert store.list_repos(limit=1)[0].did == DID
    assert store.get_repo("did:plc:none") is None
    with pytest.raises(ValueError):
        store.set_repo(DID, state="synchronized")
    with pytest.raises(ValueError):
        store.set_repo(DID, colour="blue")


def test_cursors(store: MirrorStore) -> None:
    assert store.get_cursor("wss://relay") is None
    store.set_cursor("wss://relay", 7)
    store.set_cursor("wss://other", 1)
    store.set_cursor("wss://relay", 9)
    assert (store.get_cursor("wss://relay"), store.get_cursor("wss://other")) == (9, 1)
    assert store.stats()["cursors"] == 2


def test_account_status_hides_and_shows_records(store: MirrorStore) -> None:
    entries = mst_sorted([entry(POST, "a", rec("a")), entry(LIKE, "b", rec("b", LIKE))])
    store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=entries)
    store.apply_commit(
        DID2, rev="r1", data=DATA, commit=COMMIT, ops=[create_op(POST, "z", rec("z"))], cursor=None
    )
    full = store.records_digest(DID)

    def visible() -> set[tuple[str, str, str]]:
        # the view as a query of the user's sees it (on the store's own read connection: either backend)
        return {
            tuple(row) for row in store._read().execute("SELECT did, collection, rkey FROM visible_records")
        }

    assert visible() == {(DID, POST, "a"), (DID, LIKE, "b"), (DID2, POST, "z")}
    (event,) = store.set_account_status(DID, "deactivated", seq=41, time="2026-01-01T00:00:00Z")
    assert json.loads(event.payload) == {
        "$type": f"{JETSTREAM_NSID}#account",
        "seq": event.time_us,
        "did": DID,
        "time": json.loads(event.payload)["time"],
        "account": {
            "seq": 41,
            "did": DID,
            "time": "2026-01-01T00:00:00Z",
            "active": False,
            "status": "deactivated",
        },
    }
    assert (event.kind, event.collection) == ("account", None)
    assert visible() == {(DID2, POST, "z")}
    assert store.records_digest(DID, visible_only=True) == digest_records([])
    assert store.records_digest(DID) == full  # still stored
    store.set_account_status(DID, "takendown", emit=False)
    assert store.get_repo(DID).account_status == "takendown"  # type: ignore[union-attr]
    (event,) = store.set_account_status(DID, "active")
    assert json.loads(event.payload)["account"]["active"] is True
    assert "status" not in json.loads(event.payload)["account"]
    assert visible() == {(DID, POST, "a"), (DID, LIKE, "b"), (DID2, POST, "z")}
    assert store.records_digest(DID, visible_only=True) == full
    # Deletion removes the records, through either method.
    (event,) = store.set_account_status(DID, "deleted")
    assert json.loads(event.payload)["account"] == {
        "seq": 0,
        "did": DID,
        "time": json.loads(event.payload)["time"],
        "active": False,
        "status": "deleted",
    }
    assert store.list_records(DID) == [] and visible() == {(DID2, POST, "z")}
    repo = store.get_repo(DID)
    assert repo is not None and (repo.account_status, repo.rev, repo.data) == ("deleted", None, None)
    assert store.delete_repo(DID2, emit=False) == []
    assert visible() == set()
    assert store.stats()["accounts_inactive"] == 2


def test_identity_event(store: MirrorStore) -> None:
    event = store.add_identity_event(DID, "alice.test", 12, "2026-01-01T00:00:00Z")
    assert json.loads(event.payload) == {
        "$type": f"{JETSTREAM_NSID}#identity",
        "seq": event.time_us,
        "did": DID,
        "time": json.loads(event.payload)["time"],
        "identity": {"seq": 12, "did": DID, "time": "2026-01-01T00:00:00Z", "handle": "alice.test"},
    }
    event = store.add_identity_event(DID, None, 13, "2026-01-01T00:00:01Z")
    assert "handle" not in json.loads(event.payload)["identity"]
    assert store.read_events(0, 10)[-1] == event


def test_payloads_parse_with_the_jetstream_sdk(store: MirrorStore) -> None:
    """The MarshalX SDK's Jetstream models accept every kind of event this store writes."""
    models = pytest.importorskip("atproto_jetstream.models")
    store.apply_commit(
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        rev="3l3qo2vutsw2b",
        data=DATA,
        commit=COMMIT,
        ops=[
            create_op(POST, "3l3qo2vuowo2b", rec("hi")),
            RecordOp("delete", POST, "3l3qo2vuowo2c", None, None),
        ],
        cursor=None,
    )
    store.set_account_status(
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "deactivated", time="2026-01-01T00:00:00.000Z"
    )
    store.add_identity_event("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "a.test", 1, "2026-01-01T00:00:00.000Z")
    for event in store.read_events(0, 10):
        frame = models.parse_frame(json.dumps({"$type": "message", "payload": json.loads(event.payload)}))
        message = models.parse_subscribe_events_message(frame)
        assert message.seq == event.time_us
        assert message.did == event.did


# --- event log --------------------------------------------------------------------------


def test_event_times_monotone_across_reopen_and_clock_going_back(opener: Opener) -> None:
    clock = Clock(2_000_000_000_000_000)
    with opener(now_us=clock) as store:
        first = store.add_identity_event(DID, None, 1, "t")
        second = store.add_identity_event(DID, None, 2, "t")
        assert (first.time_us, second.time_us) == (clock.us, clock.us + 1)
        store.prune_events(second.time_us + 1)  # the log emptied: the head stays
        assert store.read_events(0, 10) == [] and store.head_time_us() == second.time_us
    clock.us -= 10_000_000  # the wall clock went back ten seconds across a restart
    with opener(now_us=clock) as store:
        third = store.add_identity_event(DID, None, 3, "t")
        assert third.time_us == second.time_us + 1
        clock.us += 60_000_000
        fourth = store.add_identity_event(DID, None, 4, "t")
        assert fourth.time_us == clock.us


def test_prune_events(store: MirrorStore, clock: Clock) -> None:
    events = []
    for i in range(5):
        clock.us += 1000
        events.append(store.add_identity_event(DID, None, i, "t"))
    assert store.prune_events(events[2].time_us) == 2
    assert store.read_events(0, 10) == events[2:]
    assert store.oldest_time_us() == events[2].time_us
    stats = store.stats()
    assert (stats["events"], stats["head_time_us"], stats["oldest_time_us"]) == (
        3,
        events[-1].time_us,
        events[2].time_us,
    )
    # one past the newest event deleted: every event from there on is kept
    assert store.floor_time_us() == stats["floor_time_us"] == events[1].time_us + 1
    assert store.prune_events(events[1].time_us) == 0  # nothing older left: the floor stays
    assert store.floor_time_us() == events[1].time_us + 1
    store.prune_events(events[-1].time_us + 10**9)  # everything: the floor is just past the head
    assert store.read_events(0, 10) == [] and store.floor_time_us() == events[-1].time_us + 1


def test_floor_starts_at_zero_and_a_v1_file_is_migrated(tmp_path: Path) -> None:
    """A mirror written by the first schema (no floor column) opens, upgraded, with its events intact."""
    path = tmp_path / MIRROR_DB_FILENAME
    db = sqlite3.connect(path)
    db.executescript(mirror._V1 + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO events VALUES (7, 'did:plc:x', 'identity', NULL, '{}')")
    db.commit()
    db.close()
    with SQLiteMirrorStore(path) as store:
        assert store.schema_version == 2
        assert store.floor_time_us() == 0 and [e.time_us for e in store.read_events(0, 10)] == [7]


def test_read_events_filters(store: MirrorStore) -> None:
    ops = [
        create_op(POST, "1", rec("1")),
        create_op(LIKE, "2", rec("2", LIKE)),
        create_op(FOLLOW, "3", rec("3", FOLLOW)),
        create_op("app.bsky.feedx.thing", "4", rec("4", "app.bsky.feedx.thing")),
        create_op("app_bsky.feed.post", "5", rec("5", "app_bsky.feed.post")),
    ]
    store.apply_commit(DID, rev="r", data=DATA, commit=COMMIT, ops=ops, cursor=None)
    store.apply_commit(
        DID2, rev="r", data=DATA, commit=COMMIT, ops=[create_op(POST, "6", rec("6"))], cursor=None
    )
    store.add_identity_event(DID2, "b.test", 1, "t")
    store.set_account_status(DID, "suspended")

    def rkeys(**filters: Any) -> list[str]:
        return [json.loads(e.payload).get("rkey", e.kind) for e in store.read_events(0, 100, **filters)]

    assert rkeys() == ["1", "2", "3", "4", "5", "6", "identity", "account"]
    assert rkeys(dids=[DID2]) == ["6", "identity"]
    assert rkeys(collections=[POST]) == ["1", "6", "identity", "account"]
    assert rkeys(collections=["app.bsky.feed.*"]) == ["1", "2", "6", "identity", "account"]
    assert rkeys(collections=["app.bsky.graph.*", LIKE]) == ["2", "3", "identity", "account"]
    assert rkeys(collections=["app.bsky.feed.*"], dids=[DID], kinds=["commit"]) == ["1", "2"]
    assert rkeys(kinds=["account", "identity"]) == ["identity", "account"]
    everything = store.read_events(0, 100)
    assert store.read_events(everything[2].time_us, 2) == everything[3:5]
    assert store.read_events(everything[-1].time_us, 10) == []


# --- digests and stats --------------------------------------------------------------------


def test_digest_and_stats(store: MirrorStore) -> None:
    assert store.records_digest(DID) == digest_records([])
    entries = mst_sorted([entry(POST, "a", rec("a")), entry(LIKE, "b", rec("b", LIKE))])
    store.replace_repo(DID, rev="r1", data=DATA, commit=COMMIT, records=entries)
    expected = digest_records([(c, r, cid) for c, r, cid, _ in reversed(entries)])
    assert store.records_digest(DID) == expected
    assert store.records_digest(DID, visible_only=True) == expected
    lines = "".join(f"{c}/{r} {cid}\n" for c, r, cid, _ in entries)
    assert expected == hashlib.sha256(lines.encode()).hexdigest()
    store.set_repo(DID2, state="pending")
    stats = store.stats()
    assert (
        stats["repos"],
        stats["repos_active"],
        stats["repos_pending"],
        stats["records"],
        stats["events"],
    ) == (
        2,
        1,
        1,
        2,
        2,
    )


def test_group_commit_savepoints(store: MirrorStore) -> None:
    """Inside a group each write is a savepoint: a failing one is rolled back alone."""
    with store.group_commit():
        store.apply_commit(
            DID, rev="r1", data=DATA, commit=COMMIT, ops=[create_op(POST, "1", rec("1"))], cursor=("s", 1)
        )
        with pytest.raises(ValueError):
            store.replace_repo(
                DID,
                rev="r2",
                data=DATA,
                commit=COMMIT,
                records=[entry(POST, "b", rec("b")), entry(POST, "a", rec("a"))],
                cursor=("s", 2),
            )
        store.set_cursor("s", 3)
        assert not store.group_aborted
    assert store.get_cursor("s") == 3
    assert stored_map(store, DID) == {(POST, "1"): record_cid(rec("1"))}
    assert len(store.read_events(0, 10)) == 1


async def test_store_worker_groups_commits(store: MirrorStore) -> None:
    """Through the store worker, queued writes share group commits and every cursor lands."""
    worker = StoreWorker(store, name="mirror-test")
    try:

        def commit(s: MirrorStore, i: int) -> list[Any]:
            value = rec(str(i))
            op = RecordOp("create", POST, f"k{i:04d}", record_cid(value), value)
            return s.apply_commit(
                DID, rev=f"r{i:04d}", data=DATA, commit=COMMIT, ops=[op], cursor=("relay", i)
            )

        results = await asyncio.gather(*(worker.run(commit, i) for i in range(200)))
        assert all(len(events) == 1 for events in results)
        assert len(await worker.read(MirrorStore.list_records, DID)) == 200
        assert store.get_cursor("relay") == 199  # jobs run in order
        times = [e.time_us for e in store.read_events(0, 1000)]
        assert len(times) == 200 and times == sorted(set(times))
    finally:
        await worker.close()
