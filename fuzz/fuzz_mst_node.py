"""MST nodes: ``decode_node``; every key it accepts is valid on its own, and re-encodes."""

from __future__ import annotations

from atrepo.core import limits
from atrepo.core.blocks import BlockMap
from atrepo.core.cid import CID
from atrepo.core.mst import MST, decode_node
from atrepo.core.mst.layer import key_problem

from .harness import REFUSED, guarded


def test_one_input(data: bytes) -> None:
    cid = CID.for_dag_cbor(data)
    node = guarded(lambda: decode_node(data, cid))
    if node is REFUSED:
        return
    keys = node.keys
    for key in keys:
        # Each key checked alone, not as the decoder's fast path sees them.
        assert key_problem(key) is None, key[:200]
        assert len(key) <= limits.MAX_MST_KEY_BYTES
    assert keys == sorted(set(keys))
    assert node.encode() == data
    # The real read path: a one-node tree (children, if any, are missing blocks).
    tree = guarded(lambda: MST.load(BlockMap({cid: data}), cid))
    if isinstance(tree, MST):
        guarded(lambda: list(tree.walk()))
