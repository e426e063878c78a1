"""The public tree walker (positions, bounds, ``Walker``) and the frozen ``Node``.

The reference walks here follow links the way the tree did before it had one
walker: recursion with the bounds computed at each level. Every walk the tree
offers must agree with them, on trees built in memory and on the same trees
read back from blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor
from atrepo.core.blocks import BlockMap
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidMST
from atrepo.core.mst import MST, Node, decode_node, key_layer
from atrepo.core.mst.walk import Position, Walker, child_bounds

#: Collections whose names prefix each other, so bounds fall between close keys.
_COLLECTIONS = ["com.ex", "com.ex.a", "com.exa", "app.bsky.feed.post"]
VALUES = [CID.for_dag_cbor(cbor.encode({"v": n})) for n in range(4)]
V = VALUES[0]
key_st = st.builds(
    lambda c, r: f"{c}/{r}",
    st.sampled_from(_COLLECTIONS),
    st.text("abz019.-_~:", min_size=1, max_size=5).filter(lambda r: r not in (".", "..")),
)
#: Small and larger key sets; a few hundred keys make trees three or four layers tall.
items_st = st.one_of(
    st.dictionaries(key_st, st.sampled_from(VALUES), max_size=30),
    st.dictionaries(key_st, st.sampled_from(VALUES), min_size=100, max_size=400),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loaded(tree: MST) -> MST:
    """The same tree read back from its blocks (every link a CID, every node checked)."""
    return MST.load(tree.new_blocks(), tree.root_cid)


def _ref_walk(
    tree: MST, node: Node, layer: int, lo: bytes | None, hi: bytes | None
) -> Iterator[tuple[bytes, CID]]:
    keys = node.keys
    n = len(keys)
    for i in range(n + 1):
        sub = node.subs[i]
        if sub is not None:
            clo = keys[i - 1] if i else lo
            chi = keys[i] if i < n else hi
            child = tree.resolve(sub, layer - 1, clo, chi)
            assert child is not None
            yield from _ref_walk(tree, child, layer - 1, clo, chi)
        if i < n:
            yield keys[i], node.vals[i]


def _ref_nodes(
    tree: MST, node: Node, layer: int, lo: bytes | None, hi: bytes | None
) -> Iterator[tuple[CID, int, bytes | None, bytes | None]]:
    yield node.cid, layer, lo, hi
    keys = node.keys
    n = len(keys)
    for i, sub in enumerate(node.subs):
        if sub is not None:
            clo = keys[i - 1] if i else lo
            chi = keys[i] if i < n else hi
            child = tree.resolve(sub, layer - 1, clo, chi)
            assert child is not None
            yield from _ref_nodes(tree, child, layer - 1, clo, chi)


def _entries(tree: MST) -> list[tuple[bytes, CID]]:
    root = tree.root
    return [] if root is None else list(_ref_walk(tree, root, tree.layer, None, None))


def _positions(tree: MST) -> Iterator[Position]:
    """Every node by single steps (``top``/``children``), in pre-order."""
    top = tree.top()
    stack = [] if top is None else [top]
    while stack:
        pos = stack.pop()
        yield pos
        stack.extend(reversed(tree.children(pos)))


def _open_walk(tree: MST, *, reverse: bool = False) -> list[tuple[bytes, CID]]:
    """The walk driven by ``Walker.open`` (``entries`` has it written out)."""
    walker = tree.walker(reverse=reverse)
    stack = walker.stack
    out = []
    while stack:
        if len(stack[-1]) == 4:
            walker.open()
        else:
            out.append(stack.pop())
    return out


@FAST
@given(items_st)
def test_walks_agree_with_the_reference(items: dict[str, CID]) -> None:
    built = MST.build(sorted(items.items()))
    for tree in (built, _loaded(built)):
        ref = _entries(tree)
        assert ref == sorted((k.encode(), v) for k, v in items.items())
        assert list(tree.walk_raw()) == ref == _open_walk(tree)
        assert list(tree.walk_raw(reverse=True)) == ref[::-1] == _open_walk(tree, reverse=True)
        assert list(tree.walk()) == [(k.decode(), v) for k, v in ref]
        nodes = [] if tree.root is None else list(_ref_nodes(tree, tree.root, tree.layer, None, None))
        assert [(cid, layer) for cid, _node, layer in tree.nodes()] == [
            (c, layer) for c, layer, _, _ in nodes
        ]
        assert [(p.node.cid, p.layer, p.lo, p.hi) for p in _positions(tree)] == nodes


@FAST
@given(items_st, key_st, st.booleans())
def test_range_and_seek_agree_with_the_walk(items: dict[str, CID], bound: str, reverse: bool) -> None:
    tree = _loaded(MST.build(sorted(items.items())))
    raw = bound.encode()
    ref = _entries(tree)
    if reverse:
        want = [e for e in reversed(ref) if e[0] < raw]
        assert list(tree.range_raw(None, raw, reverse=True)) == want
    else:
        want = [e for e in ref if e[0] >= raw]
        assert list(tree.range_raw(raw, None)) == want
    walker = Walker(tree, reverse=reverse)
    walker.seek(raw)
    assert list(walker.entries()) == want


@FAST
@given(items_st, key_st)
def test_descents_by_key_agree_with_the_walk(items: dict[str, CID], key: str) -> None:
    tree = _loaded(MST.build(sorted(items.items())))
    raw = key.encode()
    keys = [k for k, _ in _entries(tree)]
    assert tree.get(key) == items.get(key)
    assert tree.neighbor(key, below=True) == max((k for k in keys if k < raw), default=None)
    assert tree.neighbor(key, below=False) == min((k for k in keys if k > raw), default=None)
    path = tree.path(key)
    if tree.root is not None:
        assert path[0] is tree.root
        # each node on the path is the child of the one above it that holds the key's range
        for upper, lower in itertools.pairwise(path):
            i = sum(k < raw for k in upper.keys)
            assert upper.subs[i] == lower.cid


@FAST
@given(items_st)
def test_positions_hold_their_bounds_and_children_come_in_key_order(items: dict[str, CID]) -> None:
    tree = _loaded(MST.build(sorted(items.items())))
    for pos in _positions(tree):
        keys = pos.node.keys
        assert all((pos.lo is None or k > pos.lo) and (pos.hi is None or k < pos.hi) for k in keys)
        if keys:
            assert pos.node.layer == pos.layer
        children = tree.children(pos)
        slots = [i for i, sub in enumerate(pos.node.subs) if sub is not None]
        assert len(children) == len(slots)
        for i, child in zip(slots, children, strict=True):
            assert (child.lo, child.hi) == pos.bounds(i) == child_bounds(keys, i, pos.lo, pos.hi)
            assert child.layer == pos.layer - 1
            assert child.node.cid == pos.node.subs[i]
            assert tree.child(pos, i) == child
            assert pos.slot(i) == (pos.node.subs[i], pos.layer - 1, child.lo, child.hi)
        for i, sub in enumerate(pos.node.subs):
            if sub is None:
                assert tree.child(pos, i) is None


def test_positions_by_hand() -> None:
    tree = MST.empty()
    assert tree.top() is None and list(tree.walk_raw()) == [] and tree.walker().stack == []
    # a key on layer 1 with one layer-0 key on either side
    high = next(f"com.ex/{n}" for n in range(1000) if key_layer(f"com.ex/{n}".encode()) == 1)
    tree = _loaded(MST.build([("com.a/a", V), (high, V), ("com.ex/~", V)]))
    top = tree.top()
    assert top is not None and top.layer == 1 and (top.lo, top.hi) == (None, None)
    assert top.node.keys == [high.encode()]
    left, right = tree.children(top)
    assert (left.lo, left.hi, left.layer) == (None, high.encode(), 0)
    assert (right.lo, right.hi, right.layer) == (high.encode(), None, 0)
    assert left.node.keys == [b"com.a/a"] and right.node.keys == [b"com.ex/~"]
    assert tree.children(left) == []


def test_resolve_checks_the_context() -> None:
    tree = _loaded(MST.build([(f"com.ex/{n:03}", V) for n in range(60)]))
    top = tree.top()
    assert top is not None and top.layer >= 1
    index = next(i for i, s in enumerate(top.node.subs) if s is not None)
    sub, layer, lo, hi = top.slot(index)
    assert tree.resolve(sub, layer, lo, hi) is not None
    assert tree.resolve(None, layer, lo, hi) is None
    with pytest.raises(InvalidMST, match="where layer"):
        tree.resolve(sub, layer + 1, lo, hi)
    child = tree.resolve(sub, layer, lo, hi)
    assert child is not None
    with pytest.raises(InvalidMST, match="outside the range"):
        tree.resolve(sub, layer, child.keys[0], hi)
    with pytest.raises(InvalidMST, match="outside the range"):
        tree.resolve(sub, layer, lo, child.keys[-1])


def test_export_order_is_the_walk_in_pre_order() -> None:
    """Nodes as opened and records as passed: what ``Repo.export_blocks`` streams."""
    tree = _loaded(MST.build([(f"com.ex/{n:03}", VALUES[n % 4]) for n in range(80)]))
    walker = tree.walker()
    order: list[object] = []
    while walker.stack:
        if len(walker.stack[-1]) == 4:
            order.append(walker.open().cid)
        else:
            order.append(walker.stack.pop()[0])
    root = tree.root
    assert root is not None
    want: list[object] = []

    def visit(node: Node, layer: int, lo: bytes | None, hi: bytes | None) -> None:
        want.append(node.cid)
        for i in range(len(node.keys) + 1):
            if i:
                want.append(node.keys[i - 1])
            if node.subs[i] is not None:
                clo, chi = child_bounds(node.keys, i, lo, hi)
                child = tree.resolve(node.subs[i], layer - 1, clo, chi)
                assert child is not None
                visit(child, layer - 1, clo, chi)

    visit(root, tree.layer, None, None)
    assert order == want


# --- the frozen node ----------------------------------------------------------------


def _some_node() -> Node:
    return decode_node(cbor.encode({"e": [{"k": b"com.ex/a", "p": 0, "t": None, "v": V}], "l": None}))


@pytest.mark.parametrize("make", [lambda: Node([b"com.ex/a"], [V], [None, None], 0), _some_node])
@pytest.mark.parametrize("name", ["keys", "vals", "subs", "layer", "cid", "_enc", "other"])
def test_node_fields_cannot_be_set_or_deleted(make: object, name: str) -> None:
    node = make()  # type: ignore[operator]
    before = (node.keys, node.vals, node.subs, node.layer, node.cid, node.encode())
    with pytest.raises(AttributeError):
        setattr(node, name, None)
    with pytest.raises(AttributeError):
        delattr(node, name)
    assert (node.keys, node.vals, node.subs, node.layer, node.cid, node.encode()) == before
    assert type(node) is Node


def test_node_updates_make_new_nodes() -> None:
    node = _some_node()
    data, cid = node.encode(), node.cid
    other = node.with_val(0, VALUES[1])
    linked = node.with_sub(0, VALUES[2])  # any CID will do for the encoding
    assert other is not node and linked is not node
    assert (node.vals, node.subs, node.encode(), node.cid) == ([V], [None, None], data, cid)
    assert other.vals == [VALUES[1]] and other.cid != cid and other.loaded is False
    assert linked.subs == [VALUES[2], None] and linked.keys is node.keys
    assert node.loaded and not Node([], [], [None], -1).loaded
    assert cbor.decode(linked.encode())["l"] == VALUES[2]


def test_build_nodes_are_frozen_too() -> None:
    tree = MST.build([(f"com.ex/{n:03}", V) for n in range(50)])
    blocks = BlockMap()
    for cid, node, _layer in tree.nodes():
        with pytest.raises(AttributeError):
            node.keys = []  # type: ignore[misc]
        blocks.put(cid, node.encode())
    assert _entries(MST.load(blocks, tree.root_cid)) == _entries(tree)
