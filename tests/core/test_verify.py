"""Full-repository verification of CAR files: streamed and indexed paths, every failure."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import _carnative, cbor, limits
from atrepo.core import verify as verify_module
from atrepo.core.car import CarIndex, encode_car_header, write_car
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.commit import sign_commit
from atrepo.core.errors import (
    InvalidCAR,
    InvalidCommit,
    InvalidMST,
    InvalidSignature,
    LimitExceeded,
    MissingBlock,
)
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo
from atrepo.core.verify import RepoSummary, iter_repo_records, verify_repo_bytes, verify_repo_car

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST = "app.bsky.feed.post"
KEY = PrivateKey.generate("k256")

Block = tuple[CID, bytes]


def make_repo(n: int, seed: int = 1) -> Repo:
    rng = random.Random(seed)
    paths = {
        f"{rng.choice([POST, 'app.bsky.feed.like', 'com.example.x'])}/r{rng.randrange(10**6)}"
        for _ in range(n)
    }
    return Repo.build(DID, KEY, [(p, {"$type": POST, "path": p}) for p in paths])


def car_of(repo: Repo, blocks: list[Block] | None = None, roots: list[CID] | None = None) -> bytes:
    return write_car(
        [repo.commit.cid] if roots is None else roots,
        list(repo.export_blocks()) if blocks is None else blocks,
    )


def verify(data: bytes, **kwargs: Any) -> tuple[RepoSummary, list[tuple[str, CID]]]:
    summary = RepoSummary()
    items = list(verify_repo_car(io.BytesIO(data), summary=summary, **kwargs))
    return summary, items


class NoSeek(io.RawIOBase):
    """A readable stream that cannot seek (a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)


REPO = make_repo(400)
BLOCKS = list(REPO.export_blocks())
RECORDS = list(REPO.walk())
NODES = list(REPO.tree.node_cids())


# --- valid files ------------------------------------------------------------------


def test_pre_order_is_streamed() -> None:
    summary, items = verify(car_of(REPO), key=KEY.public_key, did=DID)
    assert items == RECORDS
    assert summary.streamed
    assert summary.commit == REPO.commit
    assert summary.records == len(RECORDS)
    assert summary.nodes == len(NODES)
    assert summary.blocks == len(BLOCKS) == 1 + len(NODES) + len(RECORDS)
    assert summary.unreferenced == 0
    assert summary.height == REPO.tree.layer + 1


def test_pipe_in_pre_order_is_fine() -> None:
    summary = RepoSummary()
    items = list(verify_repo_car(io.BufferedReader(NoSeek(car_of(REPO))), summary=summary))
    assert items == RECORDS and summary.streamed


def test_other_orders_use_the_index() -> None:
    reordered = [BLOCKS[0], *BLOCKS[:0:-1]]  # commit first, the rest reversed
    summary, items = verify(car_of(REPO, reordered), key=KEY.public_key)
    assert items == RECORDS
    assert not summary.streamed
    assert (summary.records, summary.nodes, summary.blocks, summary.unreferenced) == (
        len(RECORDS),
        len(NODES),
        len(BLOCKS),
        0,
    )


def test_order_breaks_midway() -> None:
    """Records already yielded by the streamed walk are not yielded twice after the fallback."""
    cut = len(BLOCKS) // 2
    blocks = BLOCKS[:cut] + BLOCKS[cut + 1 :] + [BLOCKS[cut]]
    summary, items = verify(car_of(REPO, blocks))
    assert items == RECORDS
    assert not summary.streamed
    assert summary.records == len(RECORDS)


def test_pipe_out_of_order_cannot_fall_back() -> None:
    blocks = [BLOCKS[0], *BLOCKS[:0:-1]]
    with pytest.raises(InvalidCAR, match="cannot seek"):
        list(verify_repo_car(io.BufferedReader(NoSeek(car_of(REPO, blocks)))))


def test_iter_repo_records_gives_the_bytes() -> None:
    data = dict(BLOCKS)
    for blocks in (BLOCKS, BLOCKS[::-1]):
        for path, cid, raw in iter_repo_records(io.BytesIO(car_of(REPO, blocks))):
            assert data[cid] == raw
            assert cbor.decode(raw)["path"] == path


def test_verify_repo_bytes() -> None:
    summary, items = verify_repo_bytes(car_of(REPO), key=KEY.public_key)
    assert items == RECORDS and summary.records == len(RECORDS)


def test_stream_position_is_respected() -> None:
    """Verification starts where the stream is, also for the indexed fallback."""
    stream = io.BytesIO(b"junk-before" + car_of(REPO, BLOCKS[::-1]))
    stream.seek(len(b"junk-before"))
    assert list(verify_repo_car(stream)) == RECORDS


def test_empty_repo() -> None:
    repo = Repo.create(DID, KEY).repo
    for blocks in (list(repo.export_blocks()), list(repo.export_blocks())[::-1]):
        summary, items = verify(car_of(repo, blocks), key=KEY.public_key)
        assert items == []
        assert summary.records == 0
        assert summary.commit is not None and summary.commit.data == EMPTY_MST_ROOT
        assert summary.unreferenced == 0
        assert summary.nodes == 1
    # the empty node's CID is well known, but a repository CAR must still carry it (issue 7)
    with pytest.raises(MissingBlock) as info:
        verify(car_of(repo, [(repo.commit.cid, repo.commit.raw)]))
    assert info.value.cid == EMPTY_MST_ROOT


def test_unreferenced_blocks_are_counted_and_accepted() -> None:
    extra = [(CID.for_dag_cbor(cbor.encode({"junk": i})), cbor.encode({"junk": i})) for i in range(3)]
    # at the end: the streamed walk finishes and counts what is left
    summary, items = verify(car_of(REPO, BLOCKS + extra))
    assert items == RECORDS and summary.streamed
    assert summary.unreferenced == 3
    assert summary.blocks == len(BLOCKS) + 3
    # in the middle: indexed
    summary, items = verify(car_of(REPO, BLOCKS[:5] + extra + BLOCKS[5:]))
    assert items == RECORDS and not summary.streamed
    assert summary.unreferenced == 3
    assert summary.blocks == len(BLOCKS) + 3
    assert summary.nodes == len(NODES)


def test_duplicate_blocks_are_tolerated() -> None:
    summary, items = verify(car_of(REPO, BLOCKS[:10] + BLOCKS[3:6] + BLOCKS[10:]))
    assert items == RECORDS
    assert summary.unreferenced == 0


def test_identical_records_at_two_paths() -> None:
    value = {"$type": "app.bsky.feed.like"}
    repo = Repo.build(DID, KEY, [(f"app.bsky.feed.like/{i}", value) for i in range(50)])
    for blocks in (list(repo.export_blocks()), list(repo.export_blocks())[::-1]):
        _, items = verify(car_of(repo, blocks), key=KEY.public_key)
        assert items == list(repo.walk())


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0001, 0.3, 0.5, 0.97])
def test_truncated_file(fraction: float) -> None:
    data = car_of(REPO)
    cut = max(1, int(len(data) * fraction))
    # avoid cutting exactly at a section boundary (that is a missing block instead)
    boundaries = {len(car_of(REPO, BLOCKS[:i])) for i in range(len(BLOCKS) + 1)}
    while cut in boundaries:
        cut += 1
    for order in (BLOCKS, BLOCKS[::-1]):
        data = car_of(REPO, order)
        with pytest.raises(InvalidCAR, match=r"truncated .* at byte \d+") as info:
            list(verify_repo_car(io.BytesIO(data[:cut])))
        assert info.value.offset is not None
        assert 0 <= info.value.offset <= cut


def test_truncated_at_a_block_boundary_is_a_missing_block() -> None:
    data = car_of(REPO, BLOCKS[:-1])
    with pytest.raises(MissingBlock) as info:
        list(verify_repo_car(io.BytesIO(data)))
    assert info.value.cid == BLOCKS[-1][0]


def test_garbled_block() -> None:
    data = bytearray(car_of(REPO))
    target = BLOCKS[len(BLOCKS) // 2]
    at = bytes(data).index(target[1]) + len(target[1]) // 2
    data[at] ^= 0x01
    with pytest.raises(InvalidCAR, match=f"block data does not match its CID {target[0]}") as info:
        list(verify_repo_car(io.BytesIO(bytes(data))))
    assert info.value.offset is not None and info.value.offset < at


def drop(cid: CID) -> list[Block]:
    return [b for b in BLOCKS if b[0] != cid]


def test_missing_record_block() -> None:
    path, cid = RECORDS[len(RECORDS) // 3]
    for order in (drop(cid), drop(cid)[::-1]):
        with pytest.raises(MissingBlock, match=f"record {path}") as info:
            list(verify_repo_car(io.BytesIO(car_of(REPO, order))))
        assert info.value.cid == cid


@pytest.mark.parametrize("which", [0, 1, -1])
def test_missing_node_block(which: int) -> None:
    cid = NODES[which]
    for order in (drop(cid), drop(cid)[::-1]):
        with pytest.raises(MissingBlock) as info:
            list(verify_repo_car(io.BytesIO(car_of(REPO, order))))
        assert info.value.cid == cid
        assert str(cid) in str(info.value)


def test_missing_commit_block() -> None:
    with pytest.raises(MissingBlock, match="commit") as info:
        list(verify_repo_car(io.BytesIO(car_of(REPO, BLOCKS[1:]))))
    assert info.value.cid == REPO.commit.cid


def test_wrong_key() -> None:
    other = PrivateKey.generate("p256")
    for order in (BLOCKS, BLOCKS[::-1]):
        with pytest.raises(InvalidSignature, match="does not verify"):
            list(verify_repo_car(io.BytesIO(car_of(REPO, order)), key=other.public_key))


def test_wrong_did() -> None:
    for order in (BLOCKS, BLOCKS[::-1]):
        with pytest.raises(InvalidCommit, match=f"is for {DID}, expected did:plc:someoneelse"):
            list(verify_repo_car(io.BytesIO(car_of(REPO, order)), did="did:plc:someoneelse"))


def test_no_roots() -> None:
    with pytest.raises(InvalidCAR, match="CAR has no root"):
        list(verify_repo_car(io.BytesIO(car_of(REPO, roots=[]))))


def test_two_roots() -> None:
    """A repository CAR has exactly one root, its commit (issue 7)."""
    with pytest.raises(InvalidCAR, match="CAR has 2 roots"):
        list(verify_repo_car(io.BytesIO(car_of(REPO, roots=[REPO.commit.cid, NODES[0]]))))


def test_empty_file_and_bad_header() -> None:
    with pytest.raises(InvalidCAR, match="empty CAR file"):
        list(verify_repo_car(io.BytesIO(b"")))
    with pytest.raises(InvalidCAR):
        list(verify_repo_car(io.BytesIO(encode_car_header([REPO.commit.cid])[:-3])))


@pytest.mark.parametrize("root", ["node", "record"])
def test_root_is_not_a_commit(root: str) -> None:
    cid = NODES[0] if root == "node" else RECORDS[0][1]
    for order in (BLOCKS, BLOCKS[::-1]):
        with pytest.raises(InvalidCommit, match="is missing"):
            list(verify_repo_car(io.BytesIO(car_of(REPO, order, roots=[cid]))))


def test_tree_that_breaks_a_rule() -> None:
    """A signed commit over a node holding a key that is not a repo path is refused."""
    node = cbor.encode({"e": [{"k": b"not a path", "p": 0, "t": None, "v": RECORDS[0][1]}], "l": None})
    node_cid = CID.for_dag_cbor(node)
    commit = sign_commit(DID, node_cid, "3kgnjdpmjtc2b", KEY)
    record = next(b for b in BLOCKS if b[0] == RECORDS[0][1])
    data = write_car([commit.cid], [(commit.cid, commit.raw), (node_cid, node), record])
    with pytest.raises(InvalidMST):
        list(verify_repo_car(io.BytesIO(data)))


# --- property ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 250), st.integers(0, 2**32), st.booleans())
def test_records_in_order_for_any_block_order(n: int, seed: int, shuffle: bool) -> None:
    repo = make_repo(n, seed)
    blocks = list(repo.export_blocks())
    expected = list(repo.walk())
    order = blocks[:]
    if shuffle:
        random.Random(seed).shuffle(order)
    summary, items = verify(car_of(repo, order), key=KEY.public_key, did=DID)
    assert items == expected
    assert summary.records == len(expected)
    assert summary.streamed == (order == blocks)
    assert summary.unreferenced == 0
    assert summary.blocks == len(blocks)


# --- any block order: the index path ---------------------------------------------------------------


def reference_order(repo: Repo) -> list[Block]:
    """The reference host's export order: commit, nodes level by level, then records as met."""
    data = dict(repo.export_blocks())
    levels: dict[int, list[Any]] = {}
    for _cid, node, layer in repo.tree.nodes():  # pre-order: each level comes out in key order
        levels.setdefault(layer, []).append(node)
    out = [(repo.commit.cid, repo.commit.raw)]
    records: list[CID] = []
    for layer in sorted(levels, reverse=True):
        for node in levels[layer]:
            out.append((node.cid, data[node.cid]))
            records.extend(node.vals)
    seen: set[CID] = set()
    for cid in records:
        if cid not in seen:
            seen.add(cid)
            out.append((cid, data[cid]))
    return out


def junk(count: int, salt: int = 0) -> list[Block]:
    """Tiny valid blocks nothing refers to."""
    return [(CID.for_dag_cbor(raw), raw) for raw in (cbor.encode([salt, i]) for i in range(count))]


def facts(summary: RepoSummary) -> tuple[int, int, int, int, int]:
    return summary.records, summary.blocks, summary.nodes, summary.unreferenced, summary.height


ORDERS = {
    "reference": reference_order,
    "reversed": lambda repo: [BLOCKS[0], *BLOCKS[:0:-1]],
    "shuffled": lambda repo: random.Random(7).sample(BLOCKS, len(BLOCKS)),
    "records first": lambda repo: sorted(BLOCKS, key=lambda b: b[0] in set(NODES)),
}


def count_index_paths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the walks that had to go to the index path (one entry a call)."""
    calls: list[int] = []
    original = verify_module._index_path

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(verify_module, "_index_path", counted)
    return calls


PATHS = [
    "one pass",
    "index, nodes kept",
    "index, nodes read back",
    "pure index, nodes kept",
    "pure index, nodes read back",
]


def one_pass(monkeypatch: pytest.MonkeyPatch, allowed: bool = True) -> None:
    """Let the one pass set early blocks aside (as without the C index), or never."""
    monkeypatch.setattr(verify_module, "STASH_ONE_PASS", allowed)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("path", PATHS)
def test_any_order_verifies_like_pre_order(order: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same records, same summary: in one pass with a stash, or indexed (C or pure-Python table)
    with MST nodes kept or read again."""
    one_pass(monkeypatch, path == "one pass")
    if path != "one pass":
        monkeypatch.setattr(verify_module, "STASH_BYTES", 0)  # no stash: the index path
    if path.endswith("nodes read back"):
        monkeypatch.setattr(verify_module, "KEEP_NODE_BYTES", 0)
    if path.startswith("pure"):
        monkeypatch.setattr(_carnative, "Table", None)
    streamed, expected = verify(car_of(REPO), key=KEY.public_key, did=DID)
    assert streamed.streamed
    indexed = count_index_paths(monkeypatch)
    summary, items = verify(car_of(REPO, ORDERS[order](REPO)), key=KEY.public_key, did=DID)
    assert len(indexed) == (path != "one pass")
    assert not summary.streamed
    assert items == expected == RECORDS
    assert facts(summary) == facts(streamed)
    assert summary.commit == streamed.commit
    # with the bytes too (read back by offset when not kept, hash-checked again)
    data = dict(BLOCKS)
    got = list(iter_repo_records(io.BytesIO(car_of(REPO, ORDERS[order](REPO)))))
    assert [(path, cid) for path, cid, _ in got] == RECORDS
    assert all(raw == data[cid] for _, cid, raw in got)


def test_stash_over_budget_goes_to_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``STASH_BYTES`` the one pass gives up and the index path finishes, resuming."""
    monkeypatch.setattr(verify_module, "STASH_BYTES", 3000)
    indexed = count_index_paths(monkeypatch)
    _, expected = verify(car_of(REPO))
    for reorder in ORDERS.values():
        summary, items = verify(car_of(REPO, reorder(REPO)))
        assert items == expected and summary.unreferenced == 0 and summary.blocks == len(BLOCKS)
    assert len(indexed) == len(ORDERS)


def test_what_one_pass_cannot_count_goes_to_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks left over after a stashed walk may repeat used ones: the index counts them exactly."""
    one_pass(monkeypatch)
    indexed = count_index_paths(monkeypatch)
    order = reference_order(REPO)
    # a repeat of a used record after the walk, and junk set aside: both counted as the index counts
    for extra in ([order[-1]], junk(3), [order[1]]):
        summary, items = verify(car_of(REPO, order + extra))
        assert items == RECORDS and not summary.streamed
        assert summary.blocks == len(BLOCKS) + (len(extra) if extra[0] not in BLOCKS else 0)
        assert summary.unreferenced == summary.blocks - len(BLOCKS)
    assert len(indexed) == 3
    # nothing left over: one pass, no index
    indexed.clear()
    summary, items = verify(car_of(REPO, order))
    assert items == RECORDS and not indexed and summary.blocks == len(BLOCKS)


@pytest.mark.parametrize("stash", [True, False])
def test_record_shaped_like_a_node(stash: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose bytes start like an MST node is set aside (or kept) with the nodes and still found."""
    one_pass(monkeypatch, stash)
    records = [("com.example.x/a", {"e": 1, "$type": "x.y"}), ("com.example.x/b", {"$type": "x.y"})]
    repo = Repo.build(DID, KEY, records)
    blocks = list(repo.export_blocks())
    record = next(b for b in blocks if b[0] == repo.tree.get("com.example.x/a"))
    assert record[1].startswith(verify_module.MST_NODE_PREFIX)
    for order in (blocks[:1] + blocks[:0:-1], [blocks[0], record, *(b for b in blocks[1:] if b != record)]):
        summary, items = verify(car_of(repo, order), key=KEY.public_key)
        assert items == list(repo.walk()) and summary.unreferenced == 0 and not summary.streamed


@pytest.mark.parametrize("stash", [True, False])
def test_block_set_aside_and_then_wanted_as_a_node(stash: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link to a block that is not a node: the index path decodes it and says why, stash or not."""
    one_pass(monkeypatch, stash)
    record_cid, record = next(b for b in BLOCKS if b[0] == RECORDS[0][1])
    wrapper = cbor.encode({"e": [], "l": record_cid})  # an entry-less root whose subtree is a record
    wrapper_cid = CID.for_dag_cbor(wrapper)
    commit = sign_commit(DID, wrapper_cid, "3kgnjdpmjtc2b", KEY)
    data = write_car([commit.cid], [(commit.cid, commit.raw), (record_cid, record), (wrapper_cid, wrapper)])
    with pytest.raises(InvalidMST):
        list(verify_repo_car(io.BytesIO(data)))


def test_reference_order_from_a_file(tmp_path: Any) -> None:
    """A real file: blocks not kept are read with ``pread``; the stream may start mid-file."""
    path = tmp_path / "repo.car"
    path.write_bytes(b"padding" + car_of(REPO, reference_order(REPO)))
    with open(path, "rb") as fh:
        fh.seek(len(b"padding"))
        got = list(iter_repo_records(fh, key=KEY.public_key))
    data = dict(BLOCKS)
    assert [(p, c) for p, c, _ in got] == RECORDS
    assert all(raw == data[cid] for _, cid, raw in got)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 120),
    st.randoms(use_true_random=False),
    st.integers(0, 5),
    st.integers(0, 5),
)
def test_shuffled_with_junk_and_duplicates(n: int, rng: random.Random, extra: int, dups: int) -> None:
    """Any order, junk and repeated sections: the same records and counts as the pre-order file."""
    repo = make_repo(n, rng.randrange(2**32))
    blocks = list(repo.export_blocks())
    _, expected = verify(car_of(repo, blocks))
    order = blocks + junk(extra) + [rng.choice(blocks) for _ in range(dups)]
    rng.shuffle(order)
    summary, items = verify(car_of(repo, order), key=KEY.public_key, did=DID)
    assert items == expected
    assert summary.records == len(expected)
    assert summary.nodes == len(blocks) - 1 - len({cid for _, cid in expected})
    if summary.streamed:  # happened to be streamable: trailing sections are simply counted
        assert summary.blocks == len(order)
    else:
        assert summary.blocks == len(blocks) + extra
        assert summary.unreferenced == extra


def test_index_limit() -> None:
    data = car_of(REPO, BLOCKS[::-1])
    assert len(CarIndex.build(io.BytesIO(data), max_blocks=len(BLOCKS))) == len(BLOCKS)
    with pytest.raises(LimitExceeded, match="MAX_CAR_INDEX_BLOCKS") as info:
        CarIndex.build(io.BytesIO(data), max_blocks=len(BLOCKS) - 1)
    assert info.value.limit == "MAX_CAR_INDEX_BLOCKS"
    assert info.value.value == len(BLOCKS)


def test_index_limit_in_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file padded with junk before its tree is refused at the limit, not indexed without end."""
    monkeypatch.setattr(limits, "MAX_CAR_INDEX_BLOCKS", 1000)
    padded = car_of(REPO, [BLOCKS[0], *junk(2000), *BLOCKS[1:]])
    with pytest.raises(LimitExceeded, match="MAX_CAR_INDEX_BLOCKS exceeded: 1001 > 1000"):
        list(verify_repo_car(io.BytesIO(padded)))
    # duplicates are not distinct blocks and do not count
    monkeypatch.setattr(limits, "MAX_CAR_INDEX_BLOCKS", len(BLOCKS))
    summary, items = verify(car_of(REPO, BLOCKS[::-1] + BLOCKS[:50]))
    assert items == RECORDS and summary.blocks == len(BLOCKS)


def test_many_tiny_blocks_stay_compact() -> None:
    """Tiny unreferenced blocks before the tree: the compact index, not CID objects, holds them."""
    import tracemalloc

    count = 60_000  # tracemalloc slows every allocation; the bound is per block, so a smaller file shows it
    padded = car_of(REPO, [BLOCKS[0], *junk(count), *BLOCKS[1:]])
    tracemalloc.start()
    try:
        summary, items = verify(padded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert items == RECORDS and summary.unreferenced == count and not summary.streamed
    # The index costs ~60 bytes a block (36 of CID, 8 of location, 4 of kept
    # position, 8-16 of slots); allow 100, plus 2 MB for the walk of the small
    # tree and the read buffers. The dict of CID objects it replaces took ~270.
    assert peak < (2 << 20) + 100 * count, f"peak {peak} bytes for {count} blocks"


def test_index_finds_every_kind_of_cid() -> None:
    """dag-cbor, raw and a two-byte-codec CID (side dict), duplicates, growth from a tiny table."""
    raw_block = b"raw bytes"
    json_block = b'{"a":1}'
    import hashlib

    json_cid = CID(b"\x01\xa9\x02\x12\x20" + hashlib.sha256(json_block).digest())  # dag-json 0x0129
    blocks = [*junk(3000), (CID.for_raw(raw_block), raw_block), (json_cid, json_block), *junk(10)]
    data = write_car([blocks[0][0]], blocks)
    index = CarIndex.build(io.BufferedReader(NoSeek(data)))  # no size hint: the table grows
    assert len(index) == 3002  # the last ten repeat the first ten
    find = index.finder()
    stream = io.BytesIO(data)
    load = index.loader(stream)
    for cid, block in random.Random(3).sample(blocks, len(blocks)):
        ordinal = find(cid)
        assert ordinal >= 0 and load(ordinal, cid) == block
        assert index.find(cid) == ordinal
    assert find(CID.for_dag_cbor(b"absent")) == -1
    assert find(CID(json_cid.raw[:-1] + b"\x00")) == -1
    assert find(CID.for_raw(blocks[0][1])) == -1  # same bytes as block 0, another codec


def test_block_changed_after_indexing() -> None:
    """Blocks read back by offset are hash-checked again."""
    data = car_of(REPO, BLOCKS[::-1])
    stream = io.BytesIO(data)
    index = CarIndex.build(stream)
    cid, block = BLOCKS[-1]
    stream.getbuffer()[data.index(block)] ^= 1
    with pytest.raises(InvalidCAR, match="changed after it was indexed"):
        index.loader(stream)(index.find(cid), cid)
