"""Differences between two trees, skipping every subtree they share.

Both trees are walked in key order at once; where both sides reach a subtree
with the same CID it is skipped whole, so the cost follows the size of the
change, not of the trees. The larger (higher-layer) of two different subtrees
is opened first, so a smaller shared subtree inside it can still be skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..action import Action, action_of
from ..blocks import BlockMap
from ..cid import CID, EMPTY_MST_ROOT
from .node import Node, Sub
from .tree import MST

_SUB = 0
_LEAF = 1


@dataclass(slots=True)
class RecordChange:
    """One record-level difference: ``old`` None = created, ``new`` None = deleted."""

    key: str
    old: CID | None
    new: CID | None

    @property
    def action(self) -> Action:
        return action_of(self.old, self.new)


@dataclass(slots=True)
class TreeDiff:
    """Record changes in key order plus the node blocks added and removed."""

    records: list[RecordChange] = field(default_factory=list)
    new_nodes: set[CID] = field(default_factory=set)
    removed_nodes: set[CID] = field(default_factory=set)
    new_blocks: BlockMap = field(default_factory=BlockMap)

    @property
    def creates(self) -> list[RecordChange]:
        return [r for r in self.records if r.old is None]

    @property
    def updates(self) -> list[RecordChange]:
        return [r for r in self.records if r.old is not None and r.new is not None]

    @property
    def deletes(self) -> list[RecordChange]:
        return [r for r in self.records if r.new is None]


class _Cursor:
    """In-order token stream over a tree whose subtrees can be opened or skipped."""

    __slots__ = ("opened", "stack", "tree")

    def __init__(self, tree: MST) -> None:
        self.tree = tree
        self.opened: dict[CID, Node] = {}
        # tokens: (_SUB, sub, layer, lo, hi, cid) or (_LEAF, key, val)
        self.stack: list[tuple] = []  # type: ignore[type-arg]
        root = tree.root
        if root is not None:
            self.stack.append((_SUB, root, tree.layer, None, None, root.cid))

    def open(self) -> None:
        _, sub, layer, lo, hi, cid = self.stack.pop()
        node = self.tree._resolve(sub, layer, lo, hi)
        assert node is not None
        self.opened[cid] = node
        keys, vals, subs = node.keys, node.vals, node.subs
        n = len(keys)
        push = self.stack.append
        for i in range(n, -1, -1):
            if i < n:
                push((_LEAF, keys[i], vals[i]))
            child: Sub = subs[i]
            if child is not None:
                ccid = child if type(child) is CID else child.cid  # type: ignore[union-attr]
                push((_SUB, child, layer - 1, keys[i - 1] if i else lo, keys[i] if i < n else hi, ccid))


def diff_trees(old: MST, new: MST) -> TreeDiff:
    """Record and node differences that turn ``old`` into ``new``."""
    out = TreeDiff()
    a = _Cursor(old)
    b = _Cursor(new)
    sa, sb = a.stack, b.stack
    records = out.records
    while sa or sb:
        if not sb:
            ta = sa[-1]
            if ta[0] == _SUB:
                a.open()
            else:
                sa.pop()
                records.append(RecordChange(ta[1].decode(), ta[2], None))
            continue
        if not sa:
            tb = sb[-1]
            if tb[0] == _SUB:
                b.open()
            else:
                sb.pop()
                records.append(RecordChange(tb[1].decode(), None, tb[2]))
            continue
        ta, tb = sa[-1], sb[-1]
        if ta[0] == _SUB and tb[0] == _SUB:
            if ta[5] == tb[5]:
                sa.pop()
                sb.pop()
            elif ta[2] > tb[2]:
                a.open()
            elif tb[2] > ta[2]:
                b.open()
            else:
                a.open()
                b.open()
        elif ta[0] == _SUB:
            a.open()
        elif tb[0] == _SUB:
            b.open()
        else:
            ka, kb = ta[1], tb[1]
            if ka < kb:
                sa.pop()
                records.append(RecordChange(ka.decode(), ta[2], None))
            elif kb < ka:
                sb.pop()
                records.append(RecordChange(kb.decode(), None, tb[2]))
            else:
                sa.pop()
                sb.pop()
                if ta[2] != tb[2]:
                    records.append(RecordChange(ka.decode(), ta[2], tb[2]))
    out.new_nodes = b.opened.keys() - a.opened.keys()
    out.removed_nodes = a.opened.keys() - b.opened.keys()
    for cid in out.new_nodes:
        out.new_blocks.put(cid, b.opened[cid].encode())
    if new.root is None and old.root is not None:
        out.new_nodes.add(EMPTY_MST_ROOT)
        out.new_blocks.put(EMPTY_MST_ROOT, new.new_blocks().require(EMPTY_MST_ROOT))
    if old.root is None and new.root is not None:
        out.removed_nodes.add(EMPTY_MST_ROOT)
    return out
