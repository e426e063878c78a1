"""The Merkle Search Tree against the interop fixtures, plus worked examples."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.blocks import BlockMap
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.errors import InvalidMST, LimitExceeded, MissingBlock
from atrepo.core.mst import MST, Node, common_prefix_length, decode_node, encode_node, key_layer
from atrepo.core.mst.diff import diff_trees
from atrepo.core.mst.proof import check_proof, covering_blocks, proof_blocks, verify_proof
from atrepo.core.mst.tree import Op

INTEROP = Path(__file__).resolve().parent.parent / "interop"


def _json(path: str) -> Any:
    return json.loads((INTEROP / path).read_text("utf-8"))


EXAMPLE_KEYS: list[str] = [
    line for line in (INTEROP / "mst" / "example_keys.txt").read_text("utf-8").split("\n") if line
]
#: layer -> example keys of that layer, in file order (letters ascending).
BY_LAYER: dict[int, list[str]] = {n: [k for k in EXAMPLE_KEYS if k[1] == str(n)] for n in range(6)}
PROOF_CASES: list[dict[str, Any]] = _json("firehose/commit-proof-fixtures.json")


def _cid(n: int) -> CID:
    """A distinct record CID per integer."""
    return CID.for_dag_cbor(cbor.encode({"n": n}))


def _node_cids(tree: MST) -> set[CID]:
    return {cid for cid, _node, _layer in tree.nodes()}


def _key_of_layer(layer: int, start: int = 0, collection: str = "com.example.thing") -> tuple[str, int]:
    """The first ``collection/k<i>`` key at ``layer`` with i >= start, and i."""
    i = start
    while True:
        key = f"{collection}/k{i:06d}"
        if key_layer(key.encode()) == layer:
            return key, i
        i += 1


def _keys_of_layer(layer: int, count: int, start: int = 0) -> list[str]:
    out = []
    i = start
    for _ in range(count):
        key, i = _key_of_layer(layer, i)
        out.append(key)
        i += 1
    return out


# --- interop: layers and prefixes ---------------------------------------------


@pytest.mark.parametrize("case", _json("mst/key_heights.json"), ids=lambda c: repr(c["key"]))
def test_key_heights(case: dict[str, Any]) -> None:
    assert key_layer(case["key"].encode("utf-8")) == case["height"]


@pytest.mark.parametrize(
    "case", _json("mst/common_prefix.json"), ids=lambda c: f"{c['left']!r}|{c['right']!r}"
)
def test_common_prefix(case: dict[str, Any]) -> None:
    left, right = case["left"].encode("utf-8"), case["right"].encode("utf-8")
    assert common_prefix_length(left, right) == case["len"]
    assert common_prefix_length(right, left) == case["len"]


def test_example_keys_have_their_layer() -> None:
    assert len(EXAMPLE_KEYS) == 156
    for key in EXAMPLE_KEYS:
        assert key_layer(key.encode()) == int(key[1]), key


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_common_prefix_matches_naive(a: bytes, b: bytes) -> None:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix_length(a, b) == n
    assert common_prefix_length(a, a + b) == len(a)


def _layer_by_definition(key: bytes) -> int:
    bits = "".join(f"{b:08b}" for b in hashlib.sha256(key).digest())
    return (len(bits) - len(bits.lstrip("0"))) // 2


@given(st.binary(max_size=64))
def test_key_layer_matches_definition(key: bytes) -> None:
    assert key_layer(key) == _layer_by_definition(key)


def test_key_layer_on_mined_keys() -> None:
    for key in [*EXAMPLE_KEYS, "app.bsky.feed.post/9adeb165882c", "884976f5"]:
        assert key_layer(key.encode()) == _layer_by_definition(key.encode())


# --- interop: commit proofs ---------------------------------------------------


def _case_id(case: dict[str, Any]) -> str:
    return str(case["comment"])


def _before_tree(case: dict[str, Any]) -> MST:
    leaf = CID.parse(case["leafValue"])
    return MST.build([(k, leaf) for k in sorted(case["keys"])])


def _forward_ops(case: dict[str, Any]) -> list[Op]:
    leaf = CID.parse(case["leafValue"])
    return [("set", k, leaf) for k in case["adds"]] + [("delete", k, None) for k in case["dels"]]


def _inverse_ops(case: dict[str, Any]) -> list[Op]:
    leaf = CID.parse(case["leafValue"])
    return [("delete", k, None) for k in case["adds"]] + [("set", k, leaf) for k in case["dels"]]


@pytest.mark.parametrize("case", PROOF_CASES, ids=_case_id)
def test_commit_proof_roots(case: dict[str, Any]) -> None:
    leaf = CID.parse(case["leafValue"])
    before = CID.parse(case["rootBeforeCommit"])
    built = _before_tree(case)
    assert built.root_cid == before
    # Structural check: reload from blocks and walk everything.
    loaded = MST.load(built.new_blocks(), before)
    assert [k for k, _ in loaded.walk()] == sorted(case["keys"])
    assert all(v == leaf for _, v in loaded.walk())
    rng = random.Random(case["comment"])
    for _ in range(5):
        keys = list(case["keys"])
        rng.shuffle(keys)
        tree = MST.empty()
        for key in keys:
            tree = tree.set(key, leaf)
        assert tree.root_cid == before
    after = built.apply(_forward_ops(case))
    assert after.root_cid == CID.parse(case["rootAfterCommit"])
    # Also from the loaded (lazy) tree.
    assert loaded.apply(_forward_ops(case)).root_cid == after.root_cid
    assert built.root_cid == before


@pytest.mark.parametrize("case", PROOF_CASES, ids=_case_id)
def test_commit_proof_blocks_and_inversion(case: dict[str, Any]) -> None:
    leaf = CID.parse(case["leafValue"])
    before = CID.parse(case["rootBeforeCommit"])
    after_cid = CID.parse(case["rootAfterCommit"])
    after = _before_tree(case).apply(_forward_ops(case))
    mutated = case["adds"] + case["dels"]
    blocks = covering_blocks(after, mutated)
    shipped = set(blocks.cids())
    for text in case["blocksInProof"]:
        assert CID.parse(text) in shipped, text
    # Our covering proof is exactly the fixture's set.
    assert shipped == {CID.parse(t) for t in case["blocksInProof"]}
    # Every block is a node of the new tree and hashes to its CID.
    assert shipped <= _node_cids(after)
    for cid, data in blocks.items():
        assert cid.matches(data)

    partial = MST.load(blocks, after_cid)
    for key in case["adds"]:
        assert partial.get(key) == leaf
    for key in case["dels"]:
        assert partial.get(key) is None
    inverse = _inverse_ops(case)
    for order in itertools.permutations(inverse):
        fresh = MST.load(BlockMap(blocks.items()), after_cid)
        assert fresh.apply(order).root_cid == before, order
        assert fresh.root_cid == after_cid
    # Ops applied one at a time on the same partial tree also work.
    tree = partial
    for op in inverse:
        tree = tree.apply([op])
    assert tree.root_cid == before


# --- worked examples ----------------------------------------------------------


def test_empty_tree() -> None:
    tree = MST.empty()
    assert tree.root_cid == EMPTY_MST_ROOT
    assert tree.is_empty()
    assert list(tree.walk()) == []
    assert tree.get("com.example/a") is None
    assert tree.delete("com.example/a") is tree
    assert MST.build([]).root_cid == EMPTY_MST_ROOT
    blocks = tree.new_blocks()
    assert blocks.get(EMPTY_MST_ROOT) == cbor.encode({"e": [], "l": None})
    assert CID.for_dag_cbor(cbor.encode({"e": [], "l": None})) == EMPTY_MST_ROOT
    loaded = MST.load(blocks, EMPTY_MST_ROOT)
    assert loaded.is_empty() and loaded.canonical and list(loaded.walk()) == []
    assert tree.root_block() == (EMPTY_MST_ROOT, blocks.require(EMPTY_MST_ROOT))


def test_empty_root_is_read_like_any_root() -> None:
    """The empty node's CID is well known, but whoever names it must still hand it over (issue 7)."""
    with pytest.raises(MissingBlock) as info:
        MST.load(BlockMap(), EMPTY_MST_ROOT)
    assert info.value.cid == EMPTY_MST_ROOT


def test_single_key_and_back_to_empty() -> None:
    tree = MST.empty().set("com.example/a", _cid(1))
    assert tree.get("com.example/a") == _cid(1)
    assert tree.get(b"com.example/a") == _cid(1)
    assert "com.example/a" in tree
    assert "com.example/b" not in tree
    node = decode_node(tree.new_blocks().require(tree.root_cid))
    assert node.keys == [b"com.example/a"]
    emptied = tree.delete("com.example/a")
    assert emptied.root_cid == EMPTY_MST_ROOT and emptied.is_empty()


def test_spec_shape_example() -> None:
    """The §6.5 shape with real keys: D=2; A,E,I=1; B,C,F,G,H=0."""
    names = {
        "A": BY_LAYER[1][0],  # A1
        "B": BY_LAYER[0][1],  # B0
        "C": BY_LAYER[0][2],  # C0
        "D": BY_LAYER[2][3],  # D2
        "E": BY_LAYER[1][4],  # E1
        "F": BY_LAYER[0][5],  # F0
        "G": BY_LAYER[0][6],  # G0
        "H": BY_LAYER[0][7],  # H0
        "I": BY_LAYER[1][8],  # I1
    }
    assert [names[c][0] for c in "ABCDEFGHI"] == list("ABCDEFGHI")
    tree = MST.build([(names[c], _cid(i)) for i, c in enumerate("ABCDEFGHI")])
    root = tree.root
    assert root is not None and tree.layer == 2
    assert root.keys == [names["D"].encode()]
    n1, n2 = root.subs
    assert isinstance(n1, Node) and isinstance(n2, Node)
    assert n1.keys == [names["A"].encode()] and n1.subs[0] is None
    assert isinstance(n1.subs[1], Node) and n1.subs[1].keys == [names["B"].encode(), names["C"].encode()]
    assert n2.keys == [names["E"].encode(), names["I"].encode()] and n2.subs[0] is None
    assert isinstance(n2.subs[1], Node)
    assert n2.subs[1].keys == [names[c].encode() for c in "FGH"]
    assert n2.subs[2] is None


def test_spec_encoding_example() -> None:
    """The draft's ``key7``/``key10`` node: p=3, k='10'."""
    sub1, sub2, v7, v10 = _cid(1), _cid(2), _cid(3), _cid(4)
    data = encode_node([b"key7", b"key10"], [v7, v10], [sub1, sub2, None])
    assert cbor.decode(data) == {
        "e": [
            {"k": b"key7", "p": 0, "t": sub2, "v": v7},
            {"k": b"10", "p": 3, "t": None, "v": v10},
        ],
        "l": sub1,
    }


def test_empty_intermediate_nodes_and_trimming() -> None:
    low, top = BY_LAYER[0][0], BY_LAYER[2][1]  # A0 < B2
    tree = MST.build([(low, _cid(1)), (top, _cid(2))])
    assert tree.layer == 2
    root = tree.root
    assert root is not None
    mid = root.subs[0]
    assert isinstance(mid, Node) and mid.keys == [] and isinstance(mid.subs[0], Node)
    assert mid.subs[0].keys == [low.encode()]
    # The same shape by insertion, both orders.
    assert MST.empty().set(top, _cid(2)).set(low, _cid(1)).root_cid == tree.root_cid
    assert MST.empty().set(low, _cid(1)).set(top, _cid(2)).root_cid == tree.root_cid
    # Deleting the top key trims the now entry-less root chain.
    only_low = tree.delete(top)
    assert only_low.layer == 0
    assert only_low.root_cid == MST.build([(low, _cid(1))]).root_cid
    # The loaded form trims the same way.
    loaded = MST.load(tree.new_blocks(), tree.root_cid)
    assert loaded.delete(top).root_cid == only_low.root_cid
    assert loaded.delete(low).root_cid == MST.build([(top, _cid(2))]).root_cid


def test_update_changes_cids_not_shape() -> None:
    keys = sorted(EXAMPLE_KEYS[:40])
    tree = MST.build([(k, _cid(1)) for k in keys])
    updated = tree.set(keys[7], _cid(2))
    assert updated.root_cid != tree.root_cid
    shape = [(layer, node.keys) for _c, node, layer in tree.nodes()]
    assert [(layer, node.keys) for _c, node, layer in updated.nodes()] == shape
    assert updated.set(keys[7], _cid(1)).root_cid == tree.root_cid
    # Setting the same value is a no-op.
    assert tree.set(keys[7], _cid(1)) is tree


def test_build_rejects_unsorted_duplicate_and_bad_keys() -> None:
    with pytest.raises(InvalidMST, match="not strictly sorted"):
        MST.build([("com.example/b", _cid(1)), ("com.example/a", _cid(1))])
    with pytest.raises(InvalidMST, match="not strictly sorted"):
        MST.build([("com.example/a", _cid(1)), ("com.example/a", _cid(2))])
    with pytest.raises(InvalidMST, match="collection/rkey"):
        MST.build([("no-slash", _cid(1))])
    with pytest.raises(InvalidMST, match="collection/rkey"):
        MST.empty().set("a/b/c", _cid(1))
    with pytest.raises(InvalidMST, match="empty key"):
        MST.empty().set("", _cid(1))
    with pytest.raises(InvalidMST, match="more than 1024"):
        MST.empty().set("com.example/" + "x" * 1013, _cid(1))
    with pytest.raises(InvalidMST, match="more than 1024"):
        MST.build([("com.example/" + "x" * 1013, _cid(1))])
    longest = "com.example/" + "x" * 1012
    assert MST.empty().set(longest, _cid(1)).get(longest) == _cid(1)


def test_list_collections() -> None:
    cols = ["com.ex", "com.ex.a", "com.ex-b", "com.exa"]
    items = sorted((f"{c}/{r}", _cid(i)) for i, (c, r) in enumerate(itertools.product(cols, "abcde")))
    tree = MST.build(items)
    for col in cols:
        want = [(k, v) for k, v in items if k.startswith(col + "/")]
        assert tree.list(col, limit=100) == want
        assert tree.list(col, limit=100, reverse=True) == want[::-1]
        assert tree.list(col, cursor="b", limit=2) == want[2:4]
        assert tree.list(col, cursor="c", reverse=True) == want[:2][::-1]
        assert tree.list(col, cursor="bb", limit=100) == want[2:]
    assert tree.list("com.missing") == []
    assert tree.list("com.missing", reverse=True) == []


def test_list_limit_zero() -> None:
    tree = MST.build([("com.example/a", _cid(1))])
    assert tree.list("com.example", limit=0) == []


def test_range_raw() -> None:
    items = sorted((f"com.example/{c}", _cid(i)) for i, c in enumerate("abcdefghij"))
    tree = MST.build(items)
    raw = [(k.encode(), v) for k, v in items]
    assert list(tree.range_raw(b"com.example/d", None)) == raw[3:]
    assert list(tree.range_raw(b"com.example/dd", None)) == raw[4:]
    assert list(tree.range_raw(None, b"com.example/d", reverse=True)) == raw[:3][::-1]
    assert list(tree.range_raw(None, None)) == raw
    assert list(tree.range_raw(None, None, reverse=True)) == raw[::-1]


def test_path_and_neighbors() -> None:
    keys = sorted(EXAMPLE_KEYS)
    tree = MST.build([(k, _cid(1)) for k in keys])
    for i, key in enumerate(keys):
        path = tree.path(key)
        assert path[0] is tree.root
        assert key.encode() in path[-1].keys
        assert tree.neighbor(key, below=True) == (keys[i - 1].encode() if i else None)
        assert tree.neighbor(key, below=False) == (keys[i + 1].encode() if i + 1 < len(keys) else None)
    # An absent key between two present ones.
    assert tree.neighbor("B0/000000", below=True) == max(k for k in keys if k < "B0/000000").encode()
    assert tree.neighbor("B0/000000", below=False) == min(k for k in keys if k > "B0/000000").encode()
    assert tree.neighbor("A", below=True) is None
    assert tree.neighbor("ZZ", below=False) is None
    assert MST.empty().path("com.example/a") == []


def test_proofs_on_examples() -> None:
    keys = sorted(EXAMPLE_KEYS)
    tree = MST.build([(k, _cid(i)) for i, k in enumerate(keys)])
    for i, key in enumerate(keys[::7]):
        blocks = proof_blocks(tree, key)
        assert verify_proof(tree.root_cid, key, blocks) == _cid(keys.index(key))
        check_proof(tree.root_cid, key, _cid(keys.index(key)), blocks)
        with pytest.raises(InvalidMST, match="proof for"):
            check_proof(tree.root_cid, key, _cid(-1 - i), blocks)
    absent = "M9/000000"
    blocks = proof_blocks(tree, absent)
    assert verify_proof(tree.root_cid, absent, blocks) is None
    check_proof(tree.root_cid, absent, None, blocks)
    with pytest.raises(MissingBlock):
        verify_proof(tree.root_cid, keys[0], BlockMap())


def test_diff_actions() -> None:
    a = MST.build([(f"com.example/{c}", _cid(ord(c))) for c in "abcd"])
    b = a.set("com.example/e", _cid(1)).set("com.example/b", _cid(2)).delete("com.example/c")
    diff = diff_trees(a, b)
    assert [(r.key, r.action) for r in diff.records] == [
        ("com.example/b", "update"),
        ("com.example/c", "delete"),
        ("com.example/e", "create"),
    ]
    assert [r.key for r in diff.creates] == ["com.example/e"]
    assert [r.key for r in diff.updates] == ["com.example/b"]
    assert [r.key for r in diff.deletes] == ["com.example/c"]
    same = diff_trees(a, a)
    assert same.records == [] and same.new_nodes == set() and same.removed_nodes == set()
    to_empty = diff_trees(a, MST.empty())
    assert len(to_empty.deletes) == 4 and EMPTY_MST_ROOT in to_empty.new_nodes
    from_empty = diff_trees(MST.empty(), a)
    assert len(from_empty.creates) == 4 and EMPTY_MST_ROOT in from_empty.removed_nodes
    assert from_empty.new_nodes == _node_cids(a)


def test_new_blocks_of_loaded_tree_are_only_new_nodes() -> None:
    keys = sorted(EXAMPLE_KEYS)
    built = MST.build([(k, _cid(1)) for k in keys])
    loaded = MST.load(built.new_blocks(), built.root_cid)
    before = _node_cids(loaded)
    for ops in (
        [("set", "M9/000000", _cid(2))],  # splits a loaded leaf at its edge
        [("set", keys[0], _cid(1))],  # no change at all
        [("delete", keys[3], None)],
        [("delete", BY_LAYER[5][0], None)],
        [("set", keys[10], _cid(3)), ("delete", keys[50], None), ("set", "Q1/1", _cid(4))],
    ):
        after = loaded.apply(ops)  # type: ignore[arg-type]
        fresh = set(after.new_blocks().cids())
        assert fresh == _node_cids(after) - before, ops


# --- immutability and limits with real data -----------------------------------


def _snapshot(tree: MST) -> tuple[CID, list[tuple[str, CID]]]:
    return tree.root_cid, list(tree.walk())


def test_operations_never_change_the_original() -> None:
    keys = sorted(EXAMPLE_KEYS)
    tree = MST.build([(k, _cid(i)) for i, k in enumerate(keys)])
    snap = _snapshot(tree)
    loaded = MST.load(tree.new_blocks(), tree.root_cid)
    for source in (tree, loaded):
        source.set("M9/000000", _cid(1))
        source.set(keys[0], _cid(99))
        source.set(BY_LAYER[5][3], _cid(98))
        for key in keys[::5]:
            source.delete(key)
        source.apply([("delete", k, None) for k in keys])
        assert _snapshot(source) == snap


def test_node_entry_limit_on_build_set_and_merge() -> None:
    cap = limits.MAX_MST_NODE_ENTRIES
    zeros = _keys_of_layer(0, cap + 1)
    full = MST.build([(k, _cid(1)) for k in zeros[:cap]])
    assert full.layer == 0 and full.root is not None and len(full.root.keys) == cap
    decode_node(full.new_blocks().require(full.root_cid))  # exactly at the cap is fine
    snap = _snapshot(full)
    with pytest.raises(LimitExceeded, match="MAX_MST_NODE_ENTRIES"):
        MST.build([(k, _cid(1)) for k in zeros])
    with pytest.raises(LimitExceeded, match="MAX_MST_NODE_ENTRIES"):
        full.set(zeros[cap], _cid(1))
    assert _snapshot(full) == snap
    loaded = MST.load(full.new_blocks(), full.root_cid)
    with pytest.raises(LimitExceeded, match="MAX_MST_NODE_ENTRIES"):
        loaded.set(zeros[cap], _cid(1))
    assert _snapshot(loaded) == snap
    # Two 200-entry leaves joined by deleting the one layer-1 key between them.
    lows = _keys_of_layer(0, 200)
    mid, mid_i = _key_of_layer(1, int(lows[-1][-6:]) + 1)
    highs = _keys_of_layer(0, 200, mid_i + 1)
    joined = MST.build([(k, _cid(1)) for k in [*lows, mid, *highs]])
    assert joined.layer == 1
    snap = _snapshot(joined)
    with pytest.raises(LimitExceeded, match="MAX_MST_NODE_ENTRIES"):
        joined.delete(mid)
    assert _snapshot(joined) == snap


def test_layer_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    high = BY_LAYER[5][0]
    tree = MST.build([(high, _cid(1))])
    data = tree.new_blocks().require(tree.root_cid)
    monkeypatch.setattr(limits, "MAX_MST_LAYER", 4)
    with pytest.raises(LimitExceeded, match="MAX_MST_LAYER"):
        MST.build([(high, _cid(1))])
    with pytest.raises(LimitExceeded, match="MAX_MST_LAYER"):
        MST.empty().set(high, _cid(1))
    with pytest.raises(LimitExceeded, match="MAX_MST_LAYER"):
        decode_node(data)
    MST.empty().set(BY_LAYER[4][0], _cid(1))


# --- encoding -----------------------------------------------------------------


def _long_keys(layer: int, count: int) -> list[str]:
    """Keys with long shared prefixes (multi-byte p and k lengths) at ``layer``."""
    out = []
    stem = "com.example.long/" + "y" * 300
    i = 0
    while len(out) < count:
        key = f"{stem}{i}"
        if key_layer(key.encode()) == layer:
            out.append(key)
        i += 1
    return out


_LONG_BY_LAYER = {n: _long_keys(n, 4) for n in range(3)}


_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~:"


def _odd_cid(data: bytes) -> CID:
    """A CIDv1 that is not the blessed 36-byte form (sha2-512, or identity hash)."""
    if len(data) % 2:
        return CID(b"\x01\x71\x13\x40" + hashlib.sha512(data).digest())
    return CID(b"\x01\x55\x00" + bytes((len(data),)) + data)


_cid_st = st.one_of(
    st.binary(max_size=8).map(CID.for_dag_cbor),
    st.binary(max_size=8).map(CID.for_raw),
    st.binary(max_size=30).map(_odd_cid),
)
_rkey_st = st.text(_ALPHABET, min_size=1, max_size=40)
_long_rkey_st = st.integers(min_value=1, max_value=1000).map(lambda n: "x" * n)
_key_st = st.builds(
    lambda c, r: f"{c}/{r}".encode(),
    st.sampled_from(["a", "com.ex", "com.example.thing", "app.bsky.feed.post"]),
    st.one_of(_rkey_st, _long_rkey_st),
)


@st.composite
def _nodes(draw: st.DrawFn) -> tuple[list[bytes], list[CID], list[CID | None]]:
    keys = sorted(set(draw(st.lists(_key_st, max_size=30))))
    vals = [draw(_cid_st) for _ in keys]
    subs = [draw(st.one_of(st.none(), _cid_st)) for _ in range(len(keys) + 1)]
    return keys, vals, subs


def _dict_form(keys: list[bytes], vals: list[CID], subs: list[CID | None]) -> dict[str, Any]:
    entries = []
    prev = b""
    for key, val, sub in zip(keys, vals, subs[1:], strict=True):
        p = common_prefix_length(prev, key)
        entries.append({"k": key[p:], "p": p, "t": sub, "v": val})
        prev = key
    return {"e": entries, "l": subs[0]}


@settings(max_examples=200, deadline=None)
@given(_nodes())
def test_encode_node_matches_codec(node: tuple[list[bytes], list[CID], list[CID | None]]) -> None:
    keys, vals, subs = node
    data = encode_node(keys, vals, subs)
    assert data == cbor.encode(_dict_form(keys, vals, subs))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decode_node_round_trip(data: st.DataObject) -> None:
    layer = data.draw(st.sampled_from([0, 0, 1, 2]))
    pool = BY_LAYER[layer] + _LONG_BY_LAYER[layer]
    keys = sorted(set(data.draw(st.lists(st.sampled_from(pool), max_size=30))))
    raw_keys = [k.encode() for k in keys]
    vals = [data.draw(_cid_st) for _ in keys]
    link_st = st.none() if layer == 0 else st.one_of(st.none(), st.binary(max_size=4).map(CID.for_dag_cbor))
    subs = [data.draw(link_st) for _ in range(len(keys) + 1)]
    encoded = encode_node(raw_keys, vals, subs)
    cid = CID.for_dag_cbor(encoded)
    node = decode_node(encoded, cid)
    assert node.keys == raw_keys and node.vals == vals and node.subs == subs
    assert node.layer == (layer if keys else -1)
    assert node.encode() == encoded and node.cid == cid


def test_absence_is_proven_at_the_key_layer() -> None:
    """A lookup stops at its key's layer: a proof of absence needs nothing below it (issue 7)."""
    pool = [f"com.example/r{i}" for i in range(3000)]
    high = next(k for k in pool if key_layer(k.encode()) == 1)
    other = next(k for k in pool if key_layer(k.encode()) == 1 and k != high)
    lows = [k for k in pool if key_layer(k.encode()) == 0][:40]
    tree = MST.build(sorted((k, _cid(i)) for i, k in enumerate([other, *lows])))
    assert tree.layer == 1
    root_only = BlockMap([tree.root_block()])
    assert verify_proof(tree.root_cid, high, root_only) is None
    check_proof(tree.root_cid, high, None, root_only)
    full = proof_blocks(tree, high)
    assert len(list(full.cids())) > 1  # the proof we ship still descends, as the reference's do
