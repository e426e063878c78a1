"""Differences between two trees, skipping every subtree they share.

Both trees are walked in key order at once; where both sides reach a subtree
with the same CID it is skipped whole, so the cost follows the size of the
change, not of the trees. The larger (higher-layer) of two different subtrees
is opened first, so a smaller shared subtree inside it can still be skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..action import Action, action_of
from ..blocks import BlockMap
from ..cid import CID, EMPTY_MST_ROOT
from .node import Node
from .tree import MST


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


def _link_of(slot: tuple[Any, ...]) -> CID:
    """The CID a subtree slot links (computed, once, for a node built in memory)."""
    sub = slot[0]
    return sub if type(sub) is CID else sub.cid


def diff_trees(old: MST, new: MST) -> TreeDiff:
    """Record and node differences that turn ``old`` into ``new``."""
    out = TreeDiff()
    a = old.walker()
    b = new.walker()
    opened_a: dict[CID, Node] = {}
    opened_b: dict[CID, Node] = {}

    def open_a() -> None:
        node = a.open()
        opened_a[node.cid] = node

    def open_b() -> None:
        node = b.open()
        opened_b[node.cid] = node

    # Walker tokens: (key, value) entries and (sub, layer, lo, hi) subtree slots.
    sa, sb = a.stack, b.stack
    records = out.records
    while sa or sb:
        if not sb:
            ta = sa[-1]
            if len(ta) == 4:
                open_a()
            else:
                sa.pop()
                records.append(RecordChange(ta[0].decode(), ta[1], None))
            continue
        if not sa:
            tb = sb[-1]
            if len(tb) == 4:
                open_b()
            else:
                sb.pop()
                records.append(RecordChange(tb[0].decode(), None, tb[1]))
            continue
        ta, tb = sa[-1], sb[-1]
        sub_a = len(ta) == 4
        sub_b = len(tb) == 4
        if sub_a and sub_b:
            if _link_of(ta) == _link_of(tb):
                sa.pop()
                sb.pop()
            elif ta[1] > tb[1]:
                open_a()
            elif tb[1] > ta[1]:
                open_b()
            else:
                open_a()
                open_b()
        elif sub_a:
            open_a()
        elif sub_b:
            open_b()
        else:
            ka, kb = ta[0], tb[0]
            if ka < kb:
                sa.pop()
                records.append(RecordChange(ka.decode(), ta[1], None))
            elif kb < ka:
                sb.pop()
                records.append(RecordChange(kb.decode(), None, tb[1]))
            else:
                sa.pop()
                sb.pop()
                if ta[1] != tb[1]:
                    records.append(RecordChange(ka.decode(), ta[1], tb[1]))
    out.new_nodes = opened_b.keys() - opened_a.keys()
    out.removed_nodes = opened_a.keys() - opened_b.keys()
    for cid in out.new_nodes:
        out.new_blocks.put(cid, opened_b[cid].encode())
    if new.root is None and old.root is not None:
        out.new_nodes.add(EMPTY_MST_ROOT)
        out.new_blocks.put(EMPTY_MST_ROOT, new.new_blocks().require(EMPTY_MST_ROOT))
    if old.root is None and new.root is not None:
        out.removed_nodes.add(EMPTY_MST_ROOT)
    return out
