"""The C inversion of one op (``_mstnode.invert``) against the pure-Python tree.

``check_tree_ops`` asks the C code first for a one-op commit and trusts a root
it returns; anything else runs the pure-Python path. So the property that
matters is soundness: whenever ``invert`` returns a root, the pure-Python tree
over the same blocks reads without error, holds ``cur`` at the key, and after
the op has exactly that root. Completeness is checked too (the common shapes
are proven in C, so the fast path is really taken). Inputs: hypothesis-built
trees, full or as the path slice a commit carries, with creates, updates,
deletes, wrong forward values, and corrupted or missing blocks.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import _native, cbor, limits
from atrepo.core.blocks import BlockMap
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidCommitEvent
from atrepo.core.events import RepoOp
from atrepo.core.mst import MST
from atrepo.core.mst.layer import key_layer
from atrepo.core.mst.tree import NodeLoader
from atrepo.core.validate import check_tree_ops

invert = _native.mst_invert
needs_native = pytest.mark.skipif(
    invert is None, reason="the C extension is not built (or ATREPO_PURE is set)"
)

COLLECTION = "app.bsky.feed.post"


def value(n: int) -> CID:
    return CID.for_dag_cbor(cbor.encode({"n": n}))


def raw_value(n: int) -> CID:
    return CID.for_raw(f"blob {n}".encode())


def native(blocks: dict[CID, bytes], root: CID, key: bytes, cur: Any, new: Any) -> bytes | None:
    assert invert is not None
    return invert(
        blocks,
        root,
        key,
        cur,
        new,
        limits.MAX_CBOR_BYTES,
        limits.MAX_MST_KEY_BYTES,
        limits.MAX_MST_NODE_ENTRIES,
        limits.MAX_MST_LAYER,
    )


def python(blocks: dict[CID, bytes], root: CID, key: bytes, cur: CID | None, new: CID | None) -> Any:
    """The pure-Python outcome: the inverted root's bytes, "mismatch", or the error's type."""
    try:
        tree = MST.load(NodeLoader(BlockMap(blocks), check_hashes=False), root)
        if tree.get(key) != cur:
            return "mismatch"
        tree = tree.delete(key) if new is None else tree.set(key, new)
        return tree.root_cid.raw
    except AtrepoError as exc:
        return type(exc)


def check(blocks: dict[CID, bytes], root: CID, key: bytes, cur: CID | None, new: CID | None) -> bool:
    """Soundness for one input; whether the C code proved it."""
    got = native(blocks, root, key, cur, new)
    if got is not None:
        assert got == python(blocks, root, key, cur, new)
    return got is not None


def full_blocks(tree: MST) -> dict[CID, bytes]:
    return dict(tree.new_blocks().items())


def path_blocks(tree: MST, key: bytes, everything: dict[CID, bytes]) -> dict[CID, bytes]:
    """The nodes on ``key``'s path only, as a commit's CAR slice carries them."""
    return {node.cid: everything[node.cid] for node in tree.path(key)}


rkeys = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=13)


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(rkeys, min_size=1, max_size=120, unique=True),
    extra=rkeys,
    seed=st.integers(0, 2**32),
)
def test_sound_and_mostly_proven_on_built_trees(names: list[str], extra: str, seed: int) -> None:
    rng = random.Random(seed)
    keys = sorted(f"{COLLECTION}/{n}".encode() for n in names)
    vals = {k: (raw_value(i) if i % 7 == 0 else value(i)) for i, k in enumerate(keys)}
    tree = MST.build([(k, vals[k]) for k in keys])
    everything = full_blocks(tree)
    root = tree.root_cid
    proven = tried = 0
    for key in rng.sample(keys, min(len(keys), 8)):
        for blocks in (everything, path_blocks(tree, key, everything)):
            cur = vals[key]
            for new in (None, value(10_000), raw_value(10_001), cur):  # create, update, update, no change
                tried += 1
                proven += check(blocks, root, key, cur, new)
            check(blocks, root, key, value(-1), None)  # the forward value is wrong
            check(blocks, root, key, None, value(3))  # claims the key was absent
    absent = f"{COLLECTION}/{extra}zz".encode()
    if absent not in vals:
        for blocks in (everything, path_blocks(tree, absent, everything)):
            tried += 1
            proven += check(blocks, root, absent, None, value(5))  # a delete's inversion: insert
            check(blocks, root, absent, value(5), None)  # claims it was there
    # the common shapes (leaf keys, no merge or split) are proven in C
    assert proven >= tried // 3


@needs_native
def test_layer_zero_keys_are_proven() -> None:
    keys = sorted(f"{COLLECTION}/{i:06d}".encode() for i in range(400))
    tree = MST.build([(k, value(i)) for i, k in enumerate(keys)])
    everything = full_blocks(tree)
    for key in keys[::17]:
        if key_layer(key):
            continue
        blocks = path_blocks(tree, key, everything)
        assert check(blocks, tree.root_cid, key, value(keys.index(key)), None)
        assert check(blocks, tree.root_cid, key, value(keys.index(key)), value(1))
        missing = key + b"x"
        if not key_layer(missing):
            assert check(path_blocks(tree, missing, everything), tree.root_cid, missing, None, value(2))


@needs_native
def test_an_insertion_below_an_empty_slot_builds_the_chain() -> None:
    # a root at a high layer with one key: a new leaf key goes below it through entry-less nodes
    high = next(
        f"{COLLECTION}/{i}".encode() for i in range(10_000) if key_layer(f"{COLLECTION}/{i}".encode()) >= 2
    )
    tree = MST.build([(high, value(1))])
    blocks = full_blocks(tree)
    for i in range(50):
        key = f"{COLLECTION}/a{i}".encode()
        if key_layer(key) < key_layer(high):
            assert check(blocks, tree.root_cid, key, None, value(2))


@needs_native
def test_a_single_key_tree_cannot_be_emptied_here() -> None:
    key = next(
        f"{COLLECTION}/{i}".encode() for i in range(100) if key_layer(f"{COLLECTION}/{i}".encode()) == 0
    )
    tree = MST.build([(key, value(1))])
    blocks = full_blocks(tree)
    assert native(blocks, tree.root_cid, key, value(1), None) is None  # the Python path empties it
    assert python(blocks, tree.root_cid, key, value(1), None) == MST.empty().root_cid.raw


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(rkeys, min_size=2, max_size=60, unique=True), data=st.data())
def test_sound_on_corrupted_blocks(names: list[str], data: st.DataObject) -> None:
    keys = sorted(f"{COLLECTION}/{n}".encode() for n in names)
    tree = MST.build([(k, value(i)) for i, k in enumerate(keys)])
    blocks = full_blocks(tree)
    victim = data.draw(st.sampled_from(sorted(blocks)))
    block = bytearray(blocks[victim])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(block) - 1))
        block[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        block = block[: data.draw(st.integers(0, len(block)))]
    blocks[victim] = bytes(block)  # kept under the old CID: the loader trusts the source's hashes
    key = data.draw(st.sampled_from(keys))
    index = keys.index(key)
    check(blocks, tree.root_cid, key, value(index), None)
    check(blocks, tree.root_cid, key, value(index), value(-7))
    absent = key + b"q"
    check(blocks, tree.root_cid, absent, None, value(9))


@needs_native
def test_missing_root_and_odd_arguments_are_not_proven() -> None:
    keys = sorted(f"{COLLECTION}/{i}".encode() for i in range(30))
    tree = MST.build([(k, value(i)) for i, k in enumerate(keys)])
    blocks = full_blocks(tree)
    key = keys[3]
    root = tree.root_cid
    assert native({}, root, key, value(3), None) is None
    assert native(BlockMap(blocks), root, key, value(3), None) is None  # type: ignore[arg-type]
    assert native(blocks, CID.for_raw(b"x"), key, value(3), None) is None
    assert native(blocks, root.raw, key, value(3), None) is None  # type: ignore[arg-type]
    assert native(blocks, root, key.decode(), value(3), None) is None  # type: ignore[arg-type]
    assert native(blocks, root, key, value(3).raw, None) is None
    assert native(blocks, root, key, None, None) is None
    assert native(blocks, root, b"no-slash", None, value(1)) is None
    assert native(blocks, root, b"a/" + b"x" * 2000, None, value(1)) is None
    assert native(blocks, root, key, CID(b"\x01\x70\x12\x20" + bytes(32)), None) is None
    assert native({root: "not bytes"}, root, key, value(3), None) is None  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        invert(blocks, root, key, value(3), None)  # type: ignore[misc]


def _commit_slice(tree: MST, key: bytes) -> BlockMap:
    everything = full_blocks(tree)
    return BlockMap(path_blocks(tree, key, everything))


@pytest.mark.parametrize("action", ["create", "update", "delete"])
def test_check_tree_ops_same_outcome_either_way(action: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_tree_ops`` with and without the C inversion: same result or the same error."""
    keys = sorted(f"{COLLECTION}/{i:04d}".encode() for i in range(200))
    before = {k: value(i) for i, k in enumerate(keys)}
    rng = random.Random(action)
    proven = 0
    for _ in range(40):
        key = rng.choice(keys)
        after = dict(before)
        if action == "create":
            without = {k: v for k, v in before.items() if k != key}
            prev_tree = MST.build(sorted(without.items()))
            new_tree = MST.build(sorted(after.items()))
            op = RepoOp("create", key.decode(), after[key])
        elif action == "update":
            after[key] = value(-1)
            prev_tree = MST.build(sorted(before.items()))
            new_tree = MST.build(sorted(after.items()))
            op = RepoOp("update", key.decode(), after[key], before[key])
        else:
            del after[key]
            prev_tree = MST.build(sorted(before.items()))
            new_tree = MST.build(sorted(after.items()))
            op = RepoOp("delete", key.decode(), None, before[key])
        blocks = _commit_slice(new_tree, key)
        if invert is not None:
            got = native(dict(blocks._blocks), new_tree.root_cid, key, op.cid, op.prev)
            proven += got == prev_tree.root_cid.raw
        for prev_data in (prev_tree.root_cid, value(0)):  # right and wrong prevData
            outcomes = []
            for fast in (invert, None):
                monkeypatch.setattr("atrepo.core.validate._native_invert", fast)
                try:
                    result: Any = check_tree_ops(
                        NodeLoader(BlockMap(blocks._blocks), check_hashes=False),
                        new_tree.root_cid,
                        [op],
                        prev_data,
                    )
                except InvalidCommitEvent as exc:
                    result = (exc.rule, str(exc))
                outcomes.append(result)
            assert outcomes[0] == outcomes[1]
    if invert is not None:
        assert proven >= 20  # most single-op commits are proven in C
