"""Full-repository verification of CAR files: streamed and indexed paths, every failure."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor
from atrepo.core.car import encode_car_header, write_car
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.commit import sign_commit
from atrepo.core.errors import InvalidCAR, InvalidCommit, InvalidMST, InvalidSignature, MissingBlock
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
