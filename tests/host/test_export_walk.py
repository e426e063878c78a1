"""``getRepo``'s C walker (``_native.export_chunk``) against the Python walk and the core's export.

The export of a stored repository goes through C while it can and hands the
walk back to Python at the first record the (collection, rkey) join does not
match or the first node it does not take. These tests build repositories with
a real store and writer, export them through both paths with chunk sizes that
stop the C walker at every kind of block, and compare the bytes with the CAR of
the core's own pre-order; then they damage stored blocks and check that both
paths fail with the same typed error, whichever one meets the damage.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_writes import REGISTRY, Account, k, new_account

from atrepo.core import _native
from atrepo.core.cid import CID
from atrepo.core.codec import decode_raw
from atrepo.core.errors import InvalidMST, MissingBlock
from atrepo.core.repo import Repo
from atrepo.host.sync_api import car_pieces, export_repo
from atrepo.host.writes import CreateOp, DeleteOp, RepoWriter, WriteOp
from atrepo.store import postgres
from atrepo.store.postgres import HOST_SCHEMA, PostgresStore, open_host_store
from atrepo.store.sqlite import SQLiteStore

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"


@pytest.fixture
def store(tmp_path: Path, database: str | None) -> Iterator[SQLiteStore]:
    """The host's store on each backend (PostgreSQL's reads ahead and pages the record join)."""
    opened = open_host_store(tmp_path / "data", database)
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def _native_is_built() -> None:
    """The C path is what these tests are about: a build without it must not pass them quietly."""
    if not _native.PURE:
        assert _native.export_chunk is not None, "the _mstnode extension was not built"


def write(store: SQLiteStore, account: Account, ops: list[WriteOp]) -> None:
    RepoWriter(REGISTRY).apply(store, account.did, account.key, ops)


def single_collection(store: SQLiteStore, account: Account) -> None:
    for start in range(0, 600, 200):
        ops: list[WriteOp] = [
            CreateOp(POST, k(f"p{i}"), {"$type": POST, "text": f"p{i}", "createdAt": NOW})
            for i in range(start, start + 200)
        ]
        write(store, account, ops)
    write(store, account, [DeleteOp(POST, k("p17")), DeleteOp(POST, k("p300"))])


def nsid_extensions(store: SQLiteStore, account: Account) -> None:
    """``com.example.a.b`` sorts before ``com.example.a/`` in the tree, after it in the index."""
    collections = ("com.example.a", "com.example.a.b", "com.example.ab")
    for c in collections:
        write(store, account, [CreateOp(c, f"r{i:03d}", {"$type": c, "n": i}) for i in range(120)])
    same = {"$type": "com.example.ab", "n": "same"}  # one block at two paths
    write(
        store, account, [CreateOp("com.example.ab", "twin1", same), CreateOp("com.example.ab", "twin2", same)]
    )
    write(store, account, [DeleteOp("com.example.a", "r007")])


def many_collections(store: SQLiteStore, account: Account) -> None:
    ops: list[WriteOp] = []
    for c in range(40):
        collection = f"com.example.c{c:02d}"
        ops += [CreateOp(collection, f"k{i}", {"$type": collection, "i": i}) for i in range(c % 5 + 1)]
    write(store, account, ops)


def one_record(store: SQLiteStore, account: Account) -> None:
    write(
        store,
        account,
        [CreateOp(POST, k("only"), {"$type": POST, "text": "x", "createdAt": NOW})],
    )


SHAPES = [single_collection, nsid_extensions, many_collections, one_record]


def exported(store: SQLiteStore, did: str, chunk_blocks: int) -> tuple[bytes, int]:
    pieces = list(export_repo(store, did, None, chunk_blocks=chunk_blocks))
    assert all(count <= chunk_blocks for _, count in pieces)
    return b"".join(piece for piece, _ in pieces), sum(count for _, count in pieces)


def core_car(store: SQLiteStore, did: str) -> tuple[bytes, int]:
    head = store.repo_head(did)
    assert head is not None
    blocks = list(Repo.open(store.repo_blocks(did), head.cid).export_blocks())
    return b"".join(piece for piece, _ in car_pieces([head.cid], blocks)), len(blocks)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
@pytest.mark.parametrize("chunk_blocks", [1, 3, 256])
def test_both_walks_write_the_cores_export(
    store: SQLiteStore, shape: object, chunk_blocks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = new_account(store)
    assert callable(shape)
    shape(store, account)
    want = core_car(store, account.did)
    if chunk_blocks == 3:  # PostgreSQL: many pages of the record join, read-aheads cut short
        monkeypatch.setattr(postgres, "_RECORD_PAGE", 7)
        monkeypatch.setattr(PostgresStore, "read_ahead_nodes", 5)
    native = _native.export_chunk
    states: list[int] = []
    if native is not None:  # watch it: the C walker goes to the end unless the index's order parts

        def watched(*args: object) -> tuple[bytes, int, int]:
            assert native is not None
            piece, count, state = native(*args)
            states.append(state)
            return piece, count, state

        monkeypatch.setattr(_native, "export_chunk", watched)
    assert exported(store, account.did, chunk_blocks) == want
    if native is not None:
        assert states[-1] == (2 if shape is nsid_extensions else 0)
        assert states.count(1) == len(states) - 1
    monkeypatch.setattr(_native, "export_chunk", None)
    assert exported(store, account.did, chunk_blocks) == want


# --- damage: whichever walk meets it, the same typed error ------------------------------------------------


def _blocks(store: SQLiteStore, did: str) -> tuple[bytes, list[bytes], list[bytes]]:
    """The root node's CID, the other node CIDs in pre-order, and the record CIDs."""
    head = store.repo_head(did)
    assert head is not None
    repo = Repo.open(store.repo_blocks(did), head.cid)
    root = repo.data.raw
    nodes, records = [], []
    for cid, data in repo.export_blocks():
        if cid == head.cid or cid.raw == root:
            continue
        node = decode_raw(bytes(data), bytes, False)[0] if cid.raw[1] == 0x71 else None
        (nodes if isinstance(node, dict) and "e" in node else records).append(cid.raw)
    return root, nodes, records


def _sql(store: SQLiteStore, statement: str, *args: object) -> None:
    """Damage the store behind its back: one statement that changes at least one row."""
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {HOST_SCHEMA}")
            assert conn.execute(statement.replace("?", "%s"), args).rowcount >= 1
        return
    db = sqlite3.connect(store.data_dir / "store.sqlite3")
    try:
        assert db.execute(statement, args).rowcount >= 1
        db.commit()
    finally:
        db.close()


@pytest.fixture(params=["native", "python"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(_native, "export_chunk", None)
    return str(request.param)


def test_a_node_that_is_not_a_node_is_invalid_mst(store: SQLiteStore, walker: str) -> None:
    account = new_account(store)
    single_collection(store, account)
    _, nodes, records = _blocks(store, account.did)
    record = store.get_blocks(account.did, [CID(records[0])])[CID(records[0])]
    _sql(store, "UPDATE blocks SET data = ? WHERE cid = ?", record, nodes[len(nodes) // 2])
    with pytest.raises(InvalidMST):
        exported(store, account.did, 256)


def test_a_missing_node_is_a_missing_block(store: SQLiteStore, walker: str) -> None:
    account = new_account(store)
    single_collection(store, account)
    _, nodes, _ = _blocks(store, account.did)
    _sql(store, "DELETE FROM blocks WHERE cid = ?", nodes[-1])
    with pytest.raises(MissingBlock, match="MST node"):
        exported(store, account.did, 256)


def test_a_missing_record_block_is_a_missing_block(store: SQLiteStore, walker: str) -> None:
    """The join skips a record whose block is gone; the walk notices at that record and reads by CID."""
    account = new_account(store)
    single_collection(store, account)
    _, _, records = _blocks(store, account.did)
    _sql(store, "DELETE FROM blocks WHERE cid = ?", records[len(records) // 3])
    with pytest.raises(MissingBlock, match="record"):
        exported(store, account.did, 256)


def test_a_record_index_that_disagrees_is_read_by_cid(store: SQLiteStore, walker: str) -> None:
    """An index row with another key order (here: a row renamed past the end) hands the walk back to
    reads by CID, and the export is still the tree's."""
    account = new_account(store)
    single_collection(store, account)
    want = core_car(store, account.did)
    _sql(store, "UPDATE records SET rkey = 'zzzzzzzzzzzzz' WHERE rkey = ?", k("p5"))
    assert exported(store, account.did, 256) == want


# --- the C function's own refusals --------------------------------------------------------------------------


@pytest.mark.skipif(_native.export_chunk is None, reason="the C walker is switched off (ATREPO_PURE)")
def test_export_chunk_refuses_what_it_cannot_walk() -> None:
    chunk = _native.export_chunk
    assert chunk is not None
    with pytest.raises(TypeError):
        chunk((), {}, print, None, 1, 1)
    with pytest.raises(TypeError):
        chunk([("not bytes", True)], {}, print, None, 1, 1)
    # a stack that is empty: the walk is over, nothing written
    assert chunk([], {}, print, None, 5, 100) == (b"", 0, 0)
    # a record with no records iterator: handed back, the stack untouched
    stack = [(b"\x01" * 36, False)]
    assert chunk(stack, {}, print, None, 5, 100) == (b"", 0, 2) and len(stack) == 1
    # a node whose child reader yields something other than pairs: {"e": [], "l": <link>}
    link = bytes.fromhex("d82a582500") + bytes.fromhex("01711220") + bytes(32)
    node = bytes.fromhex("a2616580616c") + link
    stack = [(b"n" * 36, True)]
    with pytest.raises(TypeError, match="pairs"):
        chunk(stack, {b"n" * 36: node}, lambda cids: iter([b"x"]), None, 5, 100)


@pytest.mark.skipif(_native.export_chunk is None, reason="the C walker is switched off (ATREPO_PURE)")
@settings(max_examples=400, deadline=None)
@given(st.data())
def test_export_chunk_on_damaged_node_bytes_hands_back_or_walks(data: st.DataObject) -> None:
    """Any bytes as a node: the C walker takes exactly the canonical layout's links or hands back,
    and never reads outside the block (run under the fuzz/ sanitizer build too)."""
    chunk = _native.export_chunk
    assert chunk is not None
    link = bytes.fromhex("d82a58250001711220") + bytes(range(32))
    entry = bytes.fromhex("a4616b41616170006174f66176") + link  # {"k": b"a", "p": 0, "t": null, "v": link}
    valid = bytes.fromhex("a2616581") + entry + bytes.fromhex("616c") + link
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(max_size=8))
    block = bytes(raw)
    stack = [(b"n" * 36, True)]
    piece, count, state = chunk(stack, {b"n" * 36: block}, lambda cids: iter(()), None, 50, 1 << 16)
    if count:  # taken: the block went out as one section, its links are on the stack
        assert count == 1 and piece.endswith(block) and state == 2
        assert all(len(cid) == 36 for cid, _ in stack)
    else:
        assert (piece, state) == (b"", 2) and stack == [(b"n" * 36, True)]


@pytest.mark.skipif(_native.export_chunk is None, reason="the C walker is switched off (ATREPO_PURE)")
@pytest.mark.parametrize("entries", [0, 1, 63, 64, 65, 300])
def test_export_chunk_takes_nodes_of_any_width(entries: int) -> None:
    """Wider nodes than its first link buffer (64 entries) grow it; every link comes out in order."""
    from fuzz.fuzz_export_walk import test_one_input

    from atrepo.core.mst.node import encode_node

    vals = [CID.for_dag_cbor(b"\xa1av" + bytes([0x18, i % 256])) for i in range(entries)]
    subs: list[CID | None] = [
        CID.for_dag_cbor(b"\xa1as" + bytes([0x18, i % 256])) for i in range(entries + 1)
    ]
    subs[1::3] = [None] * len(subs[1::3])
    node = encode_node([b"c/%05d" % i for i in range(entries)], vals, subs)
    chunk = _native.export_chunk
    assert chunk is not None
    stack = [(b"n" * 36, True)]
    _, count, _ = chunk(stack, {b"n" * 36: node}, lambda cids: iter(()), None, 5, 1 << 20)
    assert count == 1 and len(stack) == entries + sum(sub is not None for sub in subs)
    test_one_input(node)  # the same links as the pure-Python decoder, in the walk's order
