"""One-op inversion, C fast path against pure Python: whatever root ``_mstnode.invert``
returns, the pure-Python tree over the same blocks reads without error, holds the op's
value at the key, and has exactly that root after the op.

Input: ``action`` (1 byte: 0 a create's inversion, a delete; 1 an update's, a set of an
existing key; 2 a delete's, an insertion), ``len`` (1 byte) and the key, then a CAR whose
first root is the tree's root and whose blocks are the nodes (hashes not checked: the
fuzzer mutates blocks under their old CIDs, as a trusting loader would see them). The op's
forward value is what the pure-Python tree holds at the key.

``python -m fuzz.fuzz_mst_invert`` writes the seed corpus (``tests/fuzz/corpus/mst_invert``).
Without the extension (not built, or ``ATREPO_PURE=1``) only the pure-Python side runs.
"""

from __future__ import annotations

from typing import Any

from atrepo.core import _native, cbor, limits
from atrepo.core.blocks import BlockMap
from atrepo.core.car import read_car, write_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError
from atrepo.core.mst import MST
from atrepo.core.mst.tree import NodeLoader

from .harness import check_error, corpus_dir

NEW = CID.for_dag_cbor(cbor.encode({"fuzz": "new"}))
PLACEHOLDER = CID.for_dag_cbor(cbor.encode({"fuzz": "cur"}))


def _python(blocks: dict[CID, bytes], root: CID, key: bytes, new: CID | None) -> tuple[Any, CID | None]:
    """(outcome, forward value): the inverted root's bytes, or "error"."""
    try:
        tree = MST.load(NodeLoader(BlockMap(blocks), check_hashes=False), root)
        cur = tree.get(key)
        tree = tree.delete(key) if new is None else tree.set(key, new)
        return tree.root_cid.raw, cur
    except AtrepoError as exc:
        check_error(exc)
        return "error", None


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    action, size = data[0] % 3, data[1]
    key = data[2 : 2 + size]
    try:
        roots, held = read_car(
            data[2 + size :], verify_hashes=False, max_bytes=limits.MAX_COMMIT_BLOCKS_BYTES
        )
    except AtrepoError as exc:
        check_error(exc)
        return
    if not roots:
        return
    blocks = dict(held.items())
    root = roots[0]
    new = None if action == 0 else NEW
    expected, cur = _python(blocks, root, key, new)
    if action == 2:
        cur = None  # a delete's inversion claims the key was absent
    elif cur is None:
        cur = PLACEHOLDER
    invert = _native.mst_invert
    if invert is None:
        return
    got = invert(
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
    if got is not None:
        assert expected != "error", "the C inversion proved a tree the pure-Python path refuses"
        assert got == expected, "the C inversion and the pure-Python path disagree on the root"


def _seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for size in (1, 5, 40, 150):
        keys = sorted(f"app.bsky.feed.post/{i:05d}x".encode() for i in range(size))
        tree = MST.build([(k, CID.for_dag_cbor(cbor.encode({"i": i}))) for i, k in enumerate(keys)])
        blocks = list(tree.new_blocks().items())
        car = write_car([tree.root_cid], blocks)
        for action in range(3):
            for pick in (0, size // 2, size - 1):
                key = keys[pick] if action < 2 else keys[pick] + b"y"
                out[f"tree{size}-a{action}-k{pick}"] = bytes((action, len(key))) + key + car
    return out


if __name__ == "__main__":
    folder = corpus_dir("mst_invert")
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in _seeds().items():
        (folder / name).write_bytes(seed)
    print(f"wrote {len(_seeds())} seeds to {folder}")
