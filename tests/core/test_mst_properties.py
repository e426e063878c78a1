"""Property tests: one shape per key set, diffs, listing, proofs and inversion."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor
from atrepo.core.blocks import BlockMap
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.errors import MissingBlock
from atrepo.core.mst import MST, key_layer
from atrepo.core.mst.diff import diff_trees
from atrepo.core.mst.proof import covering_blocks, proof_blocks, verify_proof
from atrepo.core.mst.tree import Op

_EXAMPLE_KEYS = [
    line
    for line in (Path(__file__).resolve().parent.parent / "interop" / "mst" / "example_keys.txt")
    .read_text("utf-8")
    .split("\n")
    if line
]

#: Collections whose names prefix each other, to catch sloppy range ends.
COLLECTIONS = ["com.ex", "com.ex.a", "com.ex-b", "com.exa", "app.bsky.feed.post"]
_RKEY_CHARS = "abcz019AZ.-_~:"
VALUES = [CID.for_dag_cbor(cbor.encode({"v": n})) for n in range(4)]

_generated_key = st.builds(
    lambda c, r: f"{c}/{r}",
    st.sampled_from(COLLECTIONS),
    st.text(_RKEY_CHARS, min_size=1, max_size=6).filter(lambda r: r not in (".", "..")),
)
#: Example keys reach layers up to 5, so small sets still make tall trees.
key_st = st.one_of(_generated_key, _generated_key, st.sampled_from(_EXAMPLE_KEYS))
value_st = st.sampled_from(VALUES)


@st.composite
def _bulk_items(draw: st.DrawFn) -> dict[str, CID]:
    """Larger key sets from a seed: trees with many nodes on several layers."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    out: dict[str, CID] = {}
    for _ in range(draw(st.integers(20, 250))):
        if rnd.random() < 0.15:
            key = rnd.choice(_EXAMPLE_KEYS)
        else:
            rkey = "".join(rnd.choices(_RKEY_CHARS, k=rnd.randint(1, 8)))
            if rkey in (".", ".."):
                continue
            key = f"{rnd.choice(COLLECTIONS)}/{rkey}"
        out[key] = rnd.choice(VALUES)
    return out


items_st = st.one_of(st.dictionaries(key_st, value_st, max_size=40), _bulk_items())

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _build(items: dict[str, CID]) -> MST:
    return MST.build(sorted(items.items()))


def _node_cids(tree: MST) -> set[CID]:
    if tree.is_empty():
        return {EMPTY_MST_ROOT}
    return {cid for cid, _node, _layer in tree.nodes()}


def _all_blocks(tree: MST) -> BlockMap:
    """Every node block of a tree built in memory."""
    blocks = tree.new_blocks()
    assert set(blocks.cids()) == _node_cids(tree)
    return blocks


def _shuffled(seq: list[str], rnd: random.Random) -> list[str]:
    out = list(seq)
    rnd.shuffle(out)
    return out


@FAST
@given(items_st, st.randoms(use_true_random=False))
def test_one_root_per_key_set(items: dict[str, CID], rnd: random.Random) -> None:
    built = _build(items)
    tree = MST.empty()
    for key in _shuffled(list(items), rnd):
        tree = tree.set(key, items[key])
    assert tree.root_cid == built.root_cid
    # Updates in random order, starting from wrong values, land on the same root.
    tree = MST.empty()
    for key in _shuffled(list(items), rnd):
        tree = tree.set(key, VALUES[0])
    for key in _shuffled(list(items), rnd):
        tree = tree.set(key, items[key])
    assert tree.root_cid == built.root_cid
    for key, value in items.items():
        assert built.get(key) == value
    # The root sits at the top key's layer; a node at layer L holds layer-L keys only.
    assert built.layer == max((key_layer(k.encode()) for k in items), default=-1)
    for _cid, node, layer in built.nodes():
        assert node.keys or node.subs[0] is not None
        assert all(key_layer(k) == layer for k in node.keys)
        assert layer > 0 or node.subs.count(None) == len(node.subs)


@FAST
@given(items_st, st.data())
def test_delete_equals_build_of_rest(items: dict[str, CID], data: st.DataObject) -> None:
    keys = sorted(items)
    gone = data.draw(st.lists(st.sampled_from(keys), unique=True) if keys else st.just([]))
    order = data.draw(st.permutations(gone))
    extra = data.draw(st.lists(key_st, max_size=3))  # deleting absent keys changes nothing
    want = _build({k: v for k, v in items.items() if k not in gone}).root_cid
    built = _build(items)
    loaded = MST.load(_all_blocks(built), built.root_cid)
    for start in (built, loaded):
        tree = start
        for key in [*order, *(k for k in extra if k not in items)]:
            tree = tree.delete(key)
        assert tree.root_cid == want
    assert built.root_cid == loaded.root_cid == _build(items).root_cid


def _changed(items: dict[str, CID], data: st.DataObject) -> dict[str, CID]:
    keys = sorted(items)
    out = dict(items)
    if keys:
        for key in data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=10)):
            del out[key]
        for key in data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=10)):
            if key in out:
                out[key] = data.draw(value_st)
    out.update(data.draw(st.dictionaries(key_st, value_st, max_size=10)))
    return out


@FAST
@given(items_st, st.data())
def test_diff_applies_and_names_new_nodes(items: dict[str, CID], data: st.DataObject) -> None:
    other = _changed(items, data)
    a, b = _build(items), _build(other)
    a_lazy = MST.load(_all_blocks(a), a.root_cid)
    b_lazy = MST.load(_all_blocks(b), b.root_cid)
    na, nb = _node_cids(a), _node_cids(b)
    for x, y in ((a, b), (a_lazy, b_lazy), (a, b_lazy)):
        diff = diff_trees(x, y)
        changed = {k for k in set(items) | set(other) if items.get(k) != other.get(k)}
        assert [r.key for r in diff.records] == sorted(changed)
        for rec in diff.records:
            assert rec.old == items.get(rec.key) and rec.new == other.get(rec.key)
        ops: list[Op] = [
            ("delete", r.key, None) if r.new is None else ("set", r.key, r.new) for r in diff.records
        ]
        assert x.apply(ops).root_cid == b.root_cid
        assert diff.new_nodes == nb - na
        assert diff.removed_nodes == na - nb


@FAST
@given(items_st)
def test_walk_sorted_complete_and_reversible(items: dict[str, CID]) -> None:
    tree = _build(items)
    forward = list(tree.walk())
    assert forward == sorted(items.items())
    assert list(tree.walk(reverse=True)) == forward[::-1]
    # The same from blocks only.
    loaded = MST.load(_all_blocks(tree), tree.root_cid)
    assert list(loaded.walk()) == forward
    assert list(loaded.walk(reverse=True)) == forward[::-1]
    assert list(loaded.range_raw(None, None)) == [(k.encode(), v) for k, v in forward]


def _paginate(tree: MST, collection: str, limit: int, reverse: bool) -> list[tuple[str, CID]]:
    out: list[tuple[str, CID]] = []
    cursor: str | None = None
    while True:
        page = tree.list(collection, cursor=cursor, limit=limit, reverse=reverse)
        assert len(page) <= limit
        if not page:
            return out
        out.extend(page)
        cursor = page[-1][0].split("/", 1)[1]


@FAST
@given(items_st, st.sampled_from([1, 2, 3, 7, 100]), st.booleans())
def test_list_paginates_one_collection(items: dict[str, CID], limit: int, lazy: bool) -> None:
    tree = _build(items)
    if lazy:
        tree = MST.load(_all_blocks(tree), tree.root_cid)
    for collection in [*COLLECTIONS, "A0", "com", "zzz"]:
        want = sorted((k, v) for k, v in items.items() if k.split("/")[0] == collection)
        assert _paginate(tree, collection, limit, reverse=False) == want
        assert _paginate(tree, collection, limit, reverse=True) == want[::-1]
        assert tree.list(collection, limit=1000) == want
        assert tree.list(collection, limit=1000, reverse=True) == want[::-1]


@FAST
@given(items_st, st.lists(key_st, max_size=5))
def test_proofs_verify_and_need_every_block(items: dict[str, CID], probes: list[str]) -> None:
    tree = _build(items)
    root = tree.root_cid
    for key in [*list(items)[:5], *probes]:
        blocks = proof_blocks(tree, key)
        assert verify_proof(root, key, blocks) == items.get(key)
        # The lookup reads the root and the path down to the key's own layer;
        # a proof also carries the nodes below (as the reference's do), unread.
        height = key_layer(key.encode())
        path = tree.path(key)
        read = {root} | {node.cid for i, node in enumerate(path) if tree.layer - i >= height}
        for cid in list(blocks.cids()):
            without = BlockMap((c, d) for c, d in blocks.items() if c != cid)
            if cid in read:
                with pytest.raises(MissingBlock) as info:
                    verify_proof(root, key, without)
                assert info.value.cid == cid
            else:
                assert verify_proof(root, key, without) == items.get(key)


def _random_ops(items: dict[str, CID], data: st.DataObject) -> list[Op]:
    keys = sorted(items)
    ops: list[Op] = []
    touched: set[str] = set()
    if keys:
        for key in data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=6)):
            if data.draw(st.booleans()):
                ops.append(("delete", key, None))
            else:
                ops.append(("set", key, data.draw(value_st.filter(lambda v, k=key: v != items[k]))))
            touched.add(key)
    for key in data.draw(st.lists(key_st, unique=True, max_size=6)):
        if key not in items and key not in touched:
            ops.append(("set", key, data.draw(value_st)))
            touched.add(key)
    return ops


def _inverse(items: dict[str, CID], ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for _action, key, _value in ops:
        old = items.get(key)
        out.append(("delete", key, None) if old is None else ("set", key, old))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items_st, st.data(), st.randoms(use_true_random=False))
def test_covering_blocks_invert_any_order(
    items: dict[str, CID], data: st.DataObject, rnd: random.Random
) -> None:
    old = _build(items)
    ops = _random_ops(items, data)
    assume(ops)
    new = old.apply(ops)
    keys = [key for _a, key, _v in ops]
    blocks = covering_blocks(new, keys)
    assert set(blocks.cids()) <= _node_cids(new) | {EMPTY_MST_ROOT}
    # A #commit ships covering proofs; they already hold every node the commit created.
    assert diff_trees(old, new).new_nodes - {EMPTY_MST_ROOT} <= set(blocks.cids())
    inverse = _inverse(items, ops)
    for _ in range(3):
        partial = MST.load(BlockMap(blocks.items()), new.root_cid)
        for _action, key, value in ops:
            assert partial.get(key) == value
        order = list(inverse)
        rnd.shuffle(order)
        assert partial.apply(order).root_cid == old.root_cid, order


@FAST
@given(items_st, st.data())
def test_new_blocks_cover_new_nodes(items: dict[str, CID], data: st.DataObject) -> None:
    """new_blocks holds every node a commit must ship and nothing outside the new tree."""
    built = _build(items)
    loaded = MST.load(_all_blocks(built), built.root_cid)
    ops = _random_ops(items, data)
    after = loaded.apply(ops)
    fresh = set(after.new_blocks().cids())
    assert _node_cids(after) - _node_cids(loaded) <= fresh <= _node_cids(after)


@FAST
@example(items={"A1/076595": VALUES[0], "B0/601692": VALUES[0]}, key="A1/076595", value=None)
@example(items={"A0/374913": VALUES[0]}, key="B1/986427", value=VALUES[1])
@given(items_st, key_st, st.one_of(st.none(), value_st))
def test_new_blocks_of_one_op_are_exactly_the_new_nodes(
    items: dict[str, CID], key: str, value: CID | None
) -> None:
    """After one operation on a loaded tree, new_blocks is exactly the nodes it lacked."""
    built = _build(items)
    loaded = MST.load(_all_blocks(built), built.root_cid)
    op: Op = ("delete", key, None) if value is None else ("set", key, value)
    after = loaded.apply([op])
    fresh = set(after.new_blocks().cids())
    if after.is_empty():
        assert fresh == {EMPTY_MST_ROOT}
    else:
        assert fresh == _node_cids(after) - _node_cids(loaded)


@FAST
@given(items_st, st.data())
def test_trees_we_write_are_always_canonical(items: dict[str, CID], data: st.DataObject) -> None:
    """Sets and deletes, in memory or over loaded nodes, never leave an entry-less root (issue 7)."""
    built = _build(items)
    for start in (built, MST.load(_all_blocks(built), built.root_cid)):
        tree = start
        for op in _random_ops(items, data):
            tree = tree.apply([op])
            assert tree.canonical
            assert tree.root is None or tree.root.keys
        assert tree.root_cid == _build(dict(tree.walk())).root_cid


@FAST
@given(items_st, st.data())
def test_untrimmed_tree_is_trimmed_by_any_change(items: dict[str, CID], data: st.DataObject) -> None:
    """A tree read with entry-less nodes over its root (as the reference leaves) is written back trimmed."""
    built = _build(items)
    assume(built.root is not None and built.layer < 30)
    blocks = _all_blocks(built)
    top = built.root_cid
    for _ in range(data.draw(st.integers(1, 3))):
        wrapper = cbor.encode({"e": [], "l": top})
        top = CID.for_dag_cbor(wrapper)
        blocks.put(top, wrapper)
    untrimmed = MST.load(blocks, top)
    assert not untrimmed.canonical and list(untrimmed.walk()) == sorted(items.items())
    assert built.untrimmed_depth(top) == untrimmed.layer - built.layer
    ops = _random_ops(items, data)
    assume(ops)
    after = untrimmed.apply(ops)
    assert after.canonical
    assert after.root_cid == built.apply(ops).root_cid
