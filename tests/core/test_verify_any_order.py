"""Full verification of repository CARs whose blocks are not in pre-order: every failure, both indexes.

A CAR from the reference host lists the commit, the MST nodes level by level,
then the records; one from a store that iterates by CID is in any order at
all. Neither streams, so verification indexes the file (``_index_path``),
with the C table when it is built and the pure-Python one otherwise. Each
failure must come out the same in every order and with either table: typed,
saying what and where (the CID, the record path, the byte offset).
"""

from __future__ import annotations

import io
import random
from typing import Any

import pytest

from atrepo.core import _carnative, cbor
from atrepo.core import verify as verify_module
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidCAR, InvalidMST, MissingBlock
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo
from atrepo.core.varint import encode_varint
from atrepo.core.verify import RepoSummary, iter_repo_records, verify_repo_car

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
KEY = PrivateKey.generate("k256")
Block = tuple[CID, bytes]


def make_repo(n: int, seed: int = 3) -> Repo:
    rng = random.Random(seed)
    paths = {f"app.bsky.feed.{rng.choice(['post', 'like'])}/r{rng.randrange(10**7)}" for _ in range(n)}
    return Repo.build(DID, KEY, [(p, {"$type": "app.bsky.feed.post", "path": p}) for p in paths])


REPO = make_repo(300)
BLOCKS = list(REPO.export_blocks())
RECORDS = list(REPO.walk())
NODES = list(REPO.tree.node_cids())


def breadth_first(blocks: list[Block]) -> list[Block]:
    """The reference host's export: commit, nodes level by level, then records as the levels met them."""
    data = dict(blocks)
    levels: dict[int, list[Any]] = {}
    for _cid, node, layer in REPO.tree.nodes():
        levels.setdefault(layer, []).append(node)
    out = [blocks[0]]
    records: list[CID] = []
    for layer in sorted(levels, reverse=True):
        for node in levels[layer]:
            out.append((node.cid, data[node.cid]))
            records.extend(node.vals)
    seen: set[CID] = set()
    for cid in records:
        if cid not in seen and cid in data:
            seen.add(cid)
            out.append((cid, data[cid]))
    included = {cid for cid, _ in out}
    return out + [b for b in blocks if b[0] not in included]


ORDERS = {
    "breadth-first": breadth_first,
    "shuffled": lambda blocks: [blocks[0], *random.Random(11).sample(blocks[1:], len(blocks) - 1)],
    "reversed": lambda blocks: blocks[::-1],
}
TABLES = ["C", "pure"]


@pytest.fixture(params=TABLES)
def table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the C table (when built) and on the pure-Python one; never the one-pass stash."""
    monkeypatch.setattr(verify_module, "STASH_ONE_PASS", False)
    if request.param == "pure":
        monkeypatch.setattr(_carnative, "Table", None)
    elif _carnative.Table is None:
        pytest.skip("the C index is not built (or ATREPO_PURE)")
    return str(request.param)


def run(data: bytes) -> tuple[RepoSummary, list[tuple[str, CID]]]:
    summary = RepoSummary()
    items = list(verify_repo_car(io.BytesIO(data), key=KEY.public_key, did=DID, summary=summary))
    return summary, items


def error_of(data: bytes) -> AtrepoError:
    with pytest.raises(AtrepoError) as info:
        run(data)
    return info.value


def car(blocks: list[Block]) -> bytes:
    return write_car([REPO.commit.cid], blocks)


@pytest.mark.parametrize("order", ORDERS)
def test_valid_in_any_order(table: str, order: str) -> None:
    summary, items = run(car(ORDERS[order](BLOCKS)))
    assert items == RECORDS and not summary.streamed
    assert (summary.records, summary.nodes, summary.blocks, summary.unreferenced) == (
        len(RECORDS),
        len(NODES),
        len(BLOCKS),
        0,
    )
    data = dict(BLOCKS)
    got = list(iter_repo_records(io.BytesIO(car(ORDERS[order](BLOCKS)))))
    assert [(p, c) for p, c, _ in got] == RECORDS and all(data[c] == raw for _, c, raw in got)


@pytest.mark.parametrize("order", ORDERS)
def test_hash_mismatch_says_which_block_and_where(table: str, order: str) -> None:
    blocks = ORDERS[order](BLOCKS)
    for victim in (blocks[len(blocks) // 2], next(b for b in blocks if b[0] in NODES)):
        bad = [
            (cid, raw[:-1] + bytes([raw[-1] ^ 1])) if cid == victim[0] else (cid, raw) for cid, raw in blocks
        ]
        data = car(bad)
        exc = error_of(data)
        assert type(exc) is InvalidCAR
        assert str(exc).startswith(f"block data does not match its CID {victim[0]}")
        at = data.index(encode_varint(len(victim[0].raw) + len(victim[1])) + victim[0].raw)
        assert exc.offset == at  # where its section starts


@pytest.mark.parametrize("order", ORDERS)
def test_missing_record(table: str, order: str) -> None:
    path, cid = RECORDS[len(RECORDS) // 2]
    exc = error_of(car([b for b in ORDERS[order](BLOCKS) if b[0] != cid]))
    assert type(exc) is MissingBlock and exc.cid == cid and f"record {path}" in str(exc)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("which", [0, 1, -1])
def test_missing_node(table: str, order: str, which: int) -> None:
    cid = NODES[which]
    exc = error_of(car([b for b in ORDERS[order](BLOCKS) if b[0] != cid]))
    assert type(exc) is MissingBlock and exc.cid == cid and str(cid) in str(exc)


@pytest.mark.parametrize("order", ORDERS)
def test_missing_commit(table: str, order: str) -> None:
    exc = error_of(car([b for b in ORDERS[order](BLOCKS) if b[0] != REPO.commit.cid]))
    assert type(exc) is MissingBlock and exc.cid == REPO.commit.cid and "commit" in str(exc)


@pytest.mark.parametrize("order", ORDERS)
def test_duplicates_count_once(table: str, order: str) -> None:
    blocks = ORDERS[order](BLOCKS)
    summary, items = run(car(blocks[:20] + blocks[5:15] + blocks[20:] + blocks[-3:]))
    assert items == RECORDS and summary.blocks == len(BLOCKS) and summary.unreferenced == 0


@pytest.mark.parametrize("order", ORDERS)
def test_unreferenced_are_counted(table: str, order: str) -> None:
    junk = [(CID.for_dag_cbor(raw), raw) for raw in (cbor.encode({"junk": i}) for i in range(7))]
    junk.append((CID.for_raw(b"a blob nobody links"), b"a blob nobody links"))
    blocks = ORDERS[order](BLOCKS)
    summary, items = run(car(blocks[:9] + junk[:4] + blocks[9:] + junk[4:]))
    assert items == RECORDS and summary.blocks == len(BLOCKS) + len(junk)
    assert summary.unreferenced == len(junk) and summary.nodes == len(NODES)


@pytest.mark.parametrize("order", ORDERS)
def test_malformed_sections_are_located(table: str, order: str) -> None:
    data = car(ORDERS[order](BLOCKS))
    middle = len(data) // 2
    for cut in (middle, len(data) - 1):
        exc = error_of(data[:cut])
        assert type(exc) is InvalidCAR and "truncated" in str(exc) and 0 < exc.offset <= cut  # type: ignore[operator]
    header = len(write_car([REPO.commit.cid], []))
    exc = error_of(data[:header] + b"\x80\x00" + data[header:])
    assert type(exc) is InvalidCAR and str(exc).startswith("non-minimal varint") and exc.offset == header


def test_node_link_to_a_record(table: str) -> None:
    """A link from the tree to a block that is not a node: InvalidMST, in any order."""
    from atrepo.core.commit import sign_commit

    record_cid, record = next(b for b in BLOCKS if b[0] == RECORDS[0][1])
    wrapper = cbor.encode({"e": [], "l": record_cid})
    wrapper_cid = CID.for_dag_cbor(wrapper)
    commit = sign_commit(DID, wrapper_cid, "3kgnjdpmjtc2b", KEY)
    data = write_car([commit.cid], [(record_cid, record), (wrapper_cid, wrapper), (commit.cid, commit.raw)])
    with pytest.raises(InvalidMST):
        list(verify_repo_car(io.BytesIO(data)))


def test_both_tables_fail_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every single-byte flip of a shuffled file: the same outcome from the C and the pure-Python table."""
    if _carnative.Table is None:
        pytest.skip("the C index is not built (or ATREPO_PURE)")
    monkeypatch.setattr(verify_module, "STASH_ONE_PASS", False)
    repo = make_repo(20, 9)
    blocks = list(repo.export_blocks())
    base = bytearray(write_car([repo.commit.cid], [blocks[0], *blocks[:0:-1]]))
    native = _carnative.Table

    def outcome(data: bytes) -> tuple[Any, ...]:
        summary = RepoSummary()
        try:
            items = list(verify_repo_car(io.BytesIO(data), summary=summary))
        except AtrepoError as exc:
            return type(exc).__name__, str(exc), getattr(exc, "offset", None), summary.records
        return "ok", items, summary.blocks, summary.unreferenced

    rng = random.Random(1)
    for at in rng.sample(range(len(base)), 300):
        flipped = bytearray(base)
        flipped[at] ^= 1 << rng.randrange(8)
        monkeypatch.setattr(_carnative, "Table", native)
        got = outcome(bytes(flipped))
        monkeypatch.setattr(_carnative, "Table", None)
        assert outcome(bytes(flipped)) == got, at
