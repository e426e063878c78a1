"""Proofs over the MST: inclusion/exclusion paths and commit covering proofs.

A record proof is the chain of nodes from the root down to where a key is or
would be. A ``#commit`` event must also let a consumer *invert* its operations
on the new tree; deleting or re-inserting key K touches the lookup paths of K
and of its nearest neighbours on either side, so the covering proof of K is the
union of those three paths (this reproduces the interop ``blocksInProof``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..blocks import BlockMap, BlockSource
from ..cid import CID
from ..errors import InvalidMST
from .tree import MST


def proof_blocks(tree: MST, key: str | bytes, into: BlockMap | None = None) -> BlockMap:
    """Blocks of the nodes on the lookup path of ``key`` (inclusion or exclusion).

    The path starts at the root node, the empty node for an empty tree.
    """
    out = into if into is not None else BlockMap()
    out.put(*tree.root_block())
    for node in tree.path(key):
        out.put(node.cid, node.encode())
    return out


def covering_blocks(tree: MST, keys: Iterable[str | bytes], into: BlockMap | None = None) -> BlockMap:
    """Nodes a consumer needs to invert operations on ``keys`` in any order.

    The root node is always among them, even when no path reaches it (the
    empty node of an emptied tree, or no keys at all): a consumer opens the
    tree by reading the node its root CID names.
    """
    out = into if into is not None else BlockMap()
    out.put(*tree.root_block())
    for key in keys:
        proof_blocks(tree, key, out)
        for below in (True, False):
            other = tree.neighbor(key, below=below)
            if other is not None:
                proof_blocks(tree, other, out)
    return out


def verify_proof(root: CID, key: str | bytes, blocks: BlockSource) -> CID | None:
    """Check a record proof: the value at ``key`` (None proves absence).

    Raises ``MissingBlock`` when the blocks do not reach far enough and
    ``InvalidMST`` when a node is malformed or misplaced.
    """
    tree = MST.load(blocks, root)
    return tree.get(key)


def check_proof(root: CID, key: str | bytes, expected: CID | None, blocks: BlockSource) -> None:
    """Raise ``InvalidMST`` unless the blocks prove ``key`` maps to ``expected``."""
    found = verify_proof(root, key, blocks)
    if found != expected:
        name = key if isinstance(key, str) else key.decode()
        raise InvalidMST(f"proof for {name!r} shows {found}, expected {expected}")
