"""Reading down the tree: the one place that follows subtree links.

A node's own block proves only what a node can show about itself (see
``node.py``). Whether it belongs where its parent links it depends on the
parent, so it is checked each time a link is followed, by ``resolve``:

* a node with keys sits exactly one layer below its parent;
* its keys lie strictly between the parent's keys on either side of the link
  (the subtree's *bounds*; None on a side means unbounded);
* an entry-less node stands above layer 0 and has a left link (it only keeps a
  deeper subtree in place); any other entry-less node is not canonical.

A subtree is therefore always read as a *slot*: the link (a ``CID``, or a
``Node`` built in memory, which needs no check) together with the layer and
bounds the parent gives it. ``child_bounds`` computes those bounds, and
``Position`` holds an opened node with its context.

Two ways down share these rules. Single steps (``MST.top``, ``MST.child``,
``MST.children``) hand out ``Position`` values for callers that look at nodes
one by one. Whole-tree reads run on a ``Walker``: one explicit stack of what is
still to come in key order, no generator per tree level, so a walk costs the
same at any depth. The walk, the range reads, the node listing, the diff and
the repository export are all a ``Walker`` read differently.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..cid import CID
from ..errors import InvalidMST
from .node import Node, Sub

if TYPE_CHECKING:
    from .tree import MST, NodeLoader

#: A subtree still to open: (link or node, layer, lo, hi).
Slot = tuple[Sub, int, bytes | None, bytes | None]
#: A record entry: (key, value).
Entry = tuple[bytes, CID]


def resolve(loader: NodeLoader, sub: Sub, layer: int, lo: bytes | None, hi: bytes | None) -> Node | None:
    """Follow a subtree slot, checking the node fits where its parent put it.

    ``layer`` is the layer the slot must hold and ``lo``/``hi`` the parent's
    keys on either side. An empty slot gives None; a node built in memory is
    returned as it is (the tree that built it placed it).
    """
    if sub is None:
        return None
    if type(sub) is Node:
        return sub
    node = loader.load(sub)  # type: ignore[arg-type]
    keys = node.keys
    if keys:
        if node.layer != layer:
            raise InvalidMST(f"node {sub}: keys at layer {node.layer} where layer {layer} belongs")
        if (lo is not None and keys[0] <= lo) or (hi is not None and keys[-1] >= hi):
            raise InvalidMST(f"node {sub}: keys outside the range its parent gives")
    elif layer <= 0:
        raise InvalidMST(f"node {sub}: entry-less node at layer 0")
    elif node.subs[0] is None:
        raise InvalidMST(f"node {sub}: entry-less node without a subtree")
    return node


def child_bounds(
    keys: Sequence[bytes], index: int, lo: bytes | None, hi: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """Bounds of subtree slot ``index`` of a node with ``keys`` and bounds ``lo``/``hi``.

    Slot i lies between keys i-1 and i; the outermost slots inherit the
    node's own bounds.
    """
    return keys[index - 1] if index else lo, keys[index] if index < len(keys) else hi


class Position(NamedTuple):
    """An opened node with the context it was checked against.

    ``layer`` is the layer the parent required (for the root: the tree's
    layer, which an entry-less root's own ``node.layer`` of -1 does not say).
    """

    node: Node
    layer: int
    lo: bytes | None
    hi: bytes | None

    def bounds(self, index: int) -> tuple[bytes | None, bytes | None]:
        """Bounds a subtree in slot ``index`` of this node must keep to."""
        return child_bounds(self.node.keys, index, self.lo, self.hi)

    def slot(self, index: int) -> Slot:
        """Slot ``index`` as (link or node, layer, lo, hi), unopened."""
        lo, hi = child_bounds(self.node.keys, index, self.lo, self.hi)
        return self.node.subs[index], self.layer - 1, lo, hi


class Walker:
    """What of a tree is still to come in key order, one explicit stack.

    ``stack`` holds, top last, entries as ``(key, value)`` pairs and unopened
    subtrees as ``(link or node, layer, lo, hi)`` slots (tell them apart by
    length: 2 or 4). Popping an entry reads it; ``open`` replaces the slot on
    top by its node's contents (children as slots, with their bounds), which
    is where every whole-tree read follows a link; popping a slot unopened
    skips the subtree (the diff skips what both trees share that way).
    ``reverse`` walks from the largest key down.
    """

    __slots__ = ("loader", "reverse", "stack")

    def __init__(self, tree: MST, *, reverse: bool = False) -> None:
        self.loader = tree.loader
        self.reverse = reverse
        root = tree.root
        self.stack: list[tuple[Any, ...]] = [] if root is None else [(root, tree.layer, None, None)]

    def open(self, bound: bytes | None = None) -> Node:
        """Replace the slot on top of the stack by its node's contents; return the node.

        With ``bound``, only the part at or after it (before it, in reverse) is
        pushed: opening each slot that comes to the top this way lands the
        walk on ``bound`` (see ``seek``).
        """
        stack = self.stack
        sub, layer, lo, hi = stack.pop()
        node = sub if type(sub) is Node else resolve(self.loader, sub, layer, lo, hi)
        keys, vals, subs = node.keys, node.vals, node.subs  # type: ignore[union-attr]
        n = len(keys)
        below = layer - 1
        push = stack.append
        # Each child slot's bounds are ``child_bounds(keys, i, lo, hi)``, written out.
        if self.reverse:
            end = n if bound is None else bisect_left(keys, bound)
            for i in range(end + 1):
                child = subs[i]
                if child is not None:
                    push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
                if i < end:
                    push((keys[i], vals[i]))
        else:
            begin = 0 if bound is None else bisect_left(keys, bound)
            for i in range(n, begin - 1, -1):
                if i < n:
                    push((keys[i], vals[i]))
                child = subs[i]
                if child is not None:
                    push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
        return node  # type: ignore[return-value]

    def seek(self, bound: bytes) -> None:
        """Move a fresh walk to ``bound``, dropping what is before it (reverse: at or after it).

        Opens only the nodes on ``bound``'s path; afterwards the walk goes on
        from the first entry in range.
        """
        stack = self.stack
        while stack and len(stack[-1]) == 4:
            self.open(bound)

    def entries(self) -> Iterator[Entry]:
        """The remaining entries in order, opening every subtree on the way.

        This loop is every full read's hot path, so ``open`` is written out in
        it: a method call per node cost about a seventh of a walk. The tests
        check the two agree.
        """
        stack = self.stack
        pop = stack.pop
        push = stack.append
        loader = self.loader
        reverse = self.reverse
        while stack:
            item = pop()
            if len(item) == 2:
                yield item
                continue
            sub, layer, lo, hi = item
            node = sub if type(sub) is Node else resolve(loader, sub, layer, lo, hi)
            keys, vals, subs = node.keys, node.vals, node.subs  # type: ignore[union-attr]
            n = len(keys)
            below = layer - 1
            if reverse:
                for i in range(n + 1):
                    child = subs[i]
                    if child is not None:
                        push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
                    if i < n:
                        push((keys[i], vals[i]))
            else:
                for i in range(n, -1, -1):
                    if i < n:
                        push((keys[i], vals[i]))
                    child = subs[i]
                    if child is not None:
                        push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
