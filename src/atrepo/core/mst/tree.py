"""The persistent Merkle Search Tree.

An ``MST`` is an immutable value: updates return a new tree that shares every
unchanged node with the old one. Nodes are read lazily through a ``NodeLoader``
(a block source plus a cache of decoded, validated nodes); a block that is not
there raises ``MissingBlock``, so partial trees (proofs, commit diffs) work
until they touch what they lack. New nodes are plain in-memory ``Node``
objects; their CIDs are computed only when asked for, bottom-up, once.

Reads go down through ``walk.py``: ``resolve`` checks each node against where
its parent links it, ``top``/``child``/``children`` step through ``Position``
values, and whole-tree reads (``walk_raw``, ``range_raw``, ``nodes``, the diff,
the repository export) run on a ``Walker``. The write recursions use the same
``resolve`` and ``child_bounds``.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import operator
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from .. import limits
from ..blocks import BlockMap, BlockSource
from ..cid import CID, EMPTY_MST_ROOT
from ..errors import InvalidMST, LimitExceeded, MissingBlock
from ..memory import collector_paused
from .layer import key_layer, key_problem, show_key
from .node import (
    _BHDR,
    _SMALL,
    Node,
    Sub,
    _array_header,
    _Encoding,
    _head,
    _link,
    _node,
    decode_node,
    encode_node,
    keys_valid,
)
from .walk import Position, Walker, child_bounds, resolve

Op = tuple[Literal["set", "delete"], str, CID | None]

_EMPTY_NODE_BYTES = encode_node([], [], [None])
_sha256 = hashlib.sha256
_TAIL36 = b"\x61v\xd8\x2a\x58\x25\x00"
#: Layer of a key from the first byte of its SHA-256 (-1: zero byte, count further).
_LAYER_OF_FIRST_BYTE = [-1] + [3 if b < 4 else 2 if b < 16 else 1 if b < 64 else 0 for b in range(1, 256)]
#: Returned by the delete recursion when the key was not there.
_UNCHANGED = object()


class NodeLoader:
    """Decodes nodes from a block source, validated and cached by CID.

    ``check_hashes=False`` is for sources that already checked every block
    against its CID (a CAR reader does); by default each block is re-hashed.
    """

    __slots__ = ("_cache", "_check", "_max", "source")

    def __init__(
        self,
        source: BlockSource | None,
        cache_size: int = limits.MST_NODE_CACHE_SIZE,
        *,
        check_hashes: bool = True,
    ) -> None:
        self.source: BlockSource = source if source is not None else BlockMap()
        self._cache: OrderedDict[CID, Node] = OrderedDict()
        self._max = cache_size
        self._check = check_hashes

    def load(self, cid: CID) -> Node:
        cache = self._cache
        if cache:  # an uncached loader holds nothing (or only what ``keep`` gave it)
            node = cache.get(cid)
            if node is not None:
                return node
        data = self.source.get(cid)
        if data is None:
            raise MissingBlock(cid, "MST node")
        if self._check and not cid.matches(data):
            raise InvalidMST(f"node {cid}: block does not hash to its CID")
        node = decode_node(data, cid)
        if self._max:
            cache[cid] = node
            if len(cache) > self._max:
                cache.popitem(last=False)
        return node

    def plain_blocks(self) -> dict[CID, bytes] | None:
        """The block dict of a loader that only decodes: a ``BlockMap`` source, no hash check, nothing cached.

        What a reader of raw blocks (the C inversion in ``validate``) may read
        instead of this loader and see the same nodes; None for any other loader.
        """
        source = self.source
        if self._check or self._cache or type(source) is not BlockMap:
            return None
        return source._blocks

    def keep(self, cid: CID, node: Node) -> None:
        """Hold a node read ahead of the walk, so reading it again costs no block.

        ``MST.load`` reads an untrimmed root's chain of entry-less nodes to learn
        the layer; a source that hands out each block once (a CAR stream) could
        not give them a second time. Uncached loaders keep such nodes for good
        (a handful at most); a caching loader may evict them like any other.
        """
        self._cache[cid] = node


def _key(key: str | bytes) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    problem = key_problem(raw)
    if problem is not None:
        raise InvalidMST(f"key {show_key(raw)}: {problem}")
    return raw


def _make(keys: Sequence[bytes], vals: Sequence[CID], subs: Sequence[Sub], layer: int) -> Node | None:
    """A node, or None when it would hold nothing at all."""
    if not keys:
        if subs[0] is None:
            return None
        return Node(keys, vals, subs, -1 if layer < 0 else layer)
    return Node(keys, vals, subs, layer)


class MST:
    """An immutable MST value over a ``NodeLoader``.

    ``root`` is None for the empty tree; ``layer`` is the root's layer (-1 when
    empty). Keys are repo paths (``collection/rkey``) given as ``str`` or
    ``bytes``; values are record CIDs.
    """

    __slots__ = ("_root", "layer", "loader")

    def __init__(self, loader: NodeLoader, root: Node | None, layer: int) -> None:
        self.loader = loader
        self._root = root
        self.layer = layer

    # --- construction ------------------------------------------------------
    @classmethod
    def empty(cls, source: BlockSource | None = None) -> MST:
        return cls(NodeLoader(source), None, -1)

    @classmethod
    def load(cls, source: BlockSource | NodeLoader, root: CID, *, strict_shape: bool = False) -> MST:
        """Open the tree rooted at ``root`` (read lazily from ``source``).

        The root node is always read, the empty one too: whoever hands over a
        tree must hand over the node its root CID names, and reading it is
        what proves they did.

        An entry-less root whose only content is a left link is not canonical
        (trees are trimmed at the top), but the reference implementation's
        ``add`` can leave one, so by default such a tree is opened, its layer
        found by reading down the chain of entry-less nodes, and ``canonical``
        is False. ``strict_shape`` refuses it.
        """
        loader = source if isinstance(source, NodeLoader) else NodeLoader(source)
        if not root.is_dag_cbor:
            raise InvalidMST(f"root {root} is not a dag-cbor sha256 link")
        node = loader.load(root)
        if node.keys:
            return cls(loader, node, node.layer)
        if node.subs[0] is None:
            return cls(loader, None, -1)  # the empty node: the empty tree
        if strict_shape:
            raise InvalidMST(f"root {root}: entry-less node at the top of the tree (must be trimmed)")
        return cls(loader, node, cls._untrimmed_layer(loader, node))

    @staticmethod
    def _untrimmed_layer(loader: NodeLoader, top: Node) -> int:
        """Layer of an entry-less root: the first node with keys below it, plus the chain's length.

        The chain's nodes stay with the loader, so walking the tree afterwards
        reads no block twice.
        """
        node = top
        depth = 0
        while not node.keys:
            sub = node.subs[0]
            if sub is None:
                raise InvalidMST(f"node {node.cid}: entry-less node without a subtree")
            depth += 1
            if depth > limits.MAX_MST_LAYER:
                raise LimitExceeded(
                    "MAX_MST_LAYER", depth, limits.MAX_MST_LAYER, "entry-less chain at the root"
                )
            child = sub if type(sub) is Node else loader.load(sub)  # type: ignore[arg-type]
            if type(sub) is not Node:
                loader.keep(sub, child)  # type: ignore[arg-type]
            node = child
        layer = node.layer + depth
        if layer > limits.MAX_MST_LAYER:
            raise LimitExceeded("MAX_MST_LAYER", layer, limits.MAX_MST_LAYER, "entry-less chain at the root")
        return layer

    @classmethod
    def build(cls, items: Iterable[tuple[str | bytes, CID]], source: BlockSource | None = None) -> MST:
        """Build from (key, CID) pairs sorted by key, in one linear pass.

        The steps: check and encode the keys (``_prepare_keys``), find each
        key's layer (``_layers``), then sweep the keys once, left to right,
        with one open node per layer (``_Builder``).
        """
        pairs = items if isinstance(items, builtins.list) else builtins.list(items)
        loader = NodeLoader(source)
        if not pairs:
            return cls(loader, None, -1)
        keys, vals = _prepare_keys(pairs)
        layers, top = _layers(keys)
        builder = _Builder(keys, vals, top)
        with collector_paused():
            root = builder.run(layers)
        return cls(loader, root, top)

    # --- identity ------------------------------------------------------------
    @property
    def root_cid(self) -> CID:
        """CID of the root node (the commit's ``data``)."""
        return EMPTY_MST_ROOT if self._root is None else self._root.cid

    @property
    def root(self) -> Node | None:
        return self._root

    def is_empty(self) -> bool:
        return self._root is None

    @property
    def canonical(self) -> bool:
        """False for a root left untrimmed: entry-less, holding only a left link."""
        root = self._root
        return root is None or bool(root.keys)

    def root_block(self) -> tuple[CID, bytes]:
        """The root node's CID and bytes (the empty node for the empty tree)."""
        root = self._root
        if root is None:
            return EMPTY_MST_ROOT, _EMPTY_NODE_BYTES
        return root.cid, root.encode()

    def untrimmed_depth(self, cid: CID) -> int | None:
        """How many entry-less nodes wrap this tree's root to give ``cid``, or None.

        An untrimmed root (see ``load``) is the canonical root under a chain of
        entry-less nodes, each linking only the one below. Comparing a claimed
        root with this tree's root so wrapped needs no block: the wrappers are
        computed, at most up to the highest layer a tree may have.
        """
        root = self._root
        if root is None:
            return None  # the empty node has nothing to wrap
        link = root.cid
        for depth in range(1, limits.MAX_MST_LAYER - self.layer + 1):
            link = CID.for_dag_cbor(encode_node([], [], [link]))
            if link == cid:
                return depth
        return None

    def __repr__(self) -> str:
        return f"MST(root={self.root_cid}, layer={self.layer})"

    # --- reading -------------------------------------------------------------
    # Every read goes down through ``walk.resolve``, which checks each node
    # against the context its parent gives (see ``walk.py``).
    def resolve(self, sub: Sub, layer: int, lo: bytes | None, hi: bytes | None) -> Node | None:
        """Follow a subtree slot (layer and bounds from its parent), checking the node fits there."""
        return resolve(self.loader, sub, layer, lo, hi)

    def top(self) -> Position | None:
        """The root with its context, where single-step descents start (None when empty)."""
        root = self._root
        return None if root is None else Position(root, self.layer, None, None)

    def child(self, pos: Position, index: int) -> Position | None:
        """The subtree in slot ``index`` of ``pos``, read and checked; None for an empty slot."""
        lo, hi = child_bounds(pos.node.keys, index, pos.lo, pos.hi)
        below = pos.layer - 1
        node = resolve(self.loader, pos.node.subs[index], below, lo, hi)
        return None if node is None else Position(node, below, lo, hi)

    def children(self, pos: Position) -> builtins.list[Position]:
        """Every subtree of ``pos`` in key order, read and checked (empty slots left out)."""
        out = []
        for index, sub in enumerate(pos.node.subs):
            if sub is not None:
                child = self.child(pos, index)
                assert child is not None
                out.append(child)
        return out

    def walker(self, *, reverse: bool = False) -> Walker:
        """A fresh explicit-stack walk over the whole tree (see ``walk.Walker``)."""
        return Walker(self, reverse=reverse)

    def get(self, key: str | bytes) -> CID | None:
        """The CID stored at ``key``, or None.

        A key's layer is fixed by its hash, so the lookup stops at that layer:
        a key missing from the node of its own layer is missing from the tree,
        and nodes below it are never read (a proof need not carry them).
        """
        raw = key.encode() if isinstance(key, str) else key
        return self._descend(raw, key_layer(raw), None, 0)[0]

    def _descend(
        self, raw: bytes, floor: int, trail: builtins.list[Node] | None, toward: int
    ) -> tuple[CID | None, bytes | None]:
        """Follow the lookup path of ``raw`` down to layer ``floor``: every descent by key.

        ``toward`` 0 stops at ``raw`` and gives its value; -1 (1) passes by it
        and gives the nearest key below (above) it, the last one met on the
        way down. The nodes passed are added to ``trail``.
        """
        loader = self.loader
        sub: Sub = self._root
        layer = self.layer
        lo: bytes | None = None
        hi: bytes | None = None
        best: bytes | None = None
        while sub is not None and layer >= floor:
            node = sub if type(sub) is Node else resolve(loader, sub, layer, lo, hi)
            if trail is not None:
                trail.append(node)  # type: ignore[arg-type]
            keys = node.keys  # type: ignore[union-attr]
            if toward <= 0:
                i = bisect_left(keys, raw)
                if toward:
                    if i:
                        best = keys[i - 1]
                elif i < len(keys) and keys[i] == raw:
                    return node.vals[i], None  # type: ignore[union-attr]
            else:
                i = bisect_right(keys, raw)
                if i < len(keys):
                    best = keys[i]
            # child_bounds(keys, i, lo, hi), written out: a call per level
            # would cost a tenth of a lookup.
            if i:
                lo = keys[i - 1]
            if i < len(keys):
                hi = keys[i]
            sub = node.subs[i]  # type: ignore[union-attr]
            layer -= 1
        return None, best

    def __contains__(self, key: str | bytes) -> bool:
        return self.get(key) is not None

    def walk(self, *, reverse: bool = False) -> Iterator[tuple[str, CID]]:
        """Every (key, CID) in key order (or reverse), validating what it reads."""
        for raw, val in Walker(self, reverse=reverse).entries():
            yield raw.decode(), val

    def walk_raw(self, *, reverse: bool = False) -> Iterator[tuple[bytes, CID]]:
        """Like ``walk`` with keys as bytes (no decoding per key)."""
        return Walker(self, reverse=reverse).entries()

    def list(
        self,
        collection: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        reverse: bool = False,
    ) -> builtins.list[tuple[str, CID]]:
        """Records of one collection after ``cursor`` (an rkey), at most ``limit``."""
        if limit <= 0:
            return []
        prefix = collection.encode() + b"/"
        start = prefix + cursor.encode() if cursor is not None else None
        out: builtins.list[tuple[str, CID]] = []
        if reverse:
            upper = start if start is not None else prefix[:-1] + b"0"  # '0' sorts right after '/'
            it = self.range_raw(None, upper, reverse=True)
        else:
            lower = start if start is not None else prefix
            it = self.range_raw(lower, None, reverse=False)
        for raw, val in it:
            if not raw.startswith(prefix):
                break
            if start is not None and raw == start:
                continue
            out.append((raw.decode(), val))
            if len(out) >= limit:
                break
        return out

    def range_raw(
        self, lower: bytes | None, upper: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, CID]]:
        """Entries with lower <= key (forward) or key < upper (reverse).

        Only the nodes on the bound's path are read to find where to start.
        """
        walker = Walker(self, reverse=reverse)
        bound = upper if reverse else lower
        if bound is not None:
            walker.seek(bound)
        yield from walker.entries()

    # --- writing -------------------------------------------------------------
    def set(self, key: str | bytes, value: CID) -> MST:
        """Insert or update ``key``."""
        raw = _key(key)
        height = key_layer(raw)
        if height > limits.MAX_MST_LAYER:
            raise LimitExceeded("MAX_MST_LAYER", height, limits.MAX_MST_LAYER, raw.decode())
        root, layer = self._root, self.layer
        if root is None:
            return MST(self.loader, Node([raw], [value], [None, None], height), height)
        if height > layer:
            left, right = self._split(root, layer, raw, None, None)
            for wrap in range(layer + 1, height):
                left = _make([], [], [left], wrap)
                right = _make([], [], [right], wrap)
            return MST(self.loader, Node([raw], [value], [left, right], height), height)
        new = self._insert(root, layer, raw, value, height, None, None)
        if not new.keys:
            # Only an untrimmed root (read from elsewhere) stays entry-less here;
            # a tree this library writes is trimmed after every change.
            return self._trimmed(new, layer)
        if new is root:
            return self
        return MST(self.loader, new, layer)

    def _insert(
        self, sub: Sub, layer: int, key: bytes, val: CID, height: int, lo: bytes | None, hi: bytes | None
    ) -> Node:
        node = sub if type(sub) is Node else resolve(self.loader, sub, layer, lo, hi)
        if node is None:
            if height == layer:
                return Node([key], [val], [None, None], layer)
            child = self._insert(None, layer - 1, key, val, height, lo, hi)
            return Node([], [], [child], layer)
        keys = node.keys
        i = bisect_left(keys, key)
        clo, chi = child_bounds(keys, i, lo, hi)
        if height == layer:
            if i < len(keys) and keys[i] == key:
                if node.vals[i] == val:
                    return sub  # type: ignore[return-value]
                return node.with_val(i, val)
            if len(keys) >= limits.MAX_MST_NODE_ENTRIES:
                raise LimitExceeded(
                    "MAX_MST_NODE_ENTRIES", len(keys) + 1, limits.MAX_MST_NODE_ENTRIES, key.decode()
                )
            left, right = self._split(node.subs[i], layer - 1, key, clo, chi)
            return Node(
                [*keys[:i], key, *keys[i:]],
                [*node.vals[:i], val, *node.vals[i:]],
                [*node.subs[:i], left, right, *node.subs[i + 1 :]],
                layer,
            )
        child = self._insert(node.subs[i], layer - 1, key, val, height, clo, chi)
        if child is node.subs[i]:
            return sub  # type: ignore[return-value]
        return node.with_sub(i, child)

    def _split(
        self, sub: Sub, layer: int, key: bytes, lo: bytes | None, hi: bytes | None
    ) -> tuple[Node | None, Node | None]:
        """Cut a subtree into the parts below and above ``key`` (not in it)."""
        node = sub if type(sub) is Node else resolve(self.loader, sub, layer, lo, hi)
        if node is None:
            return None, None
        keys = node.keys
        i = bisect_left(keys, key)
        clo, chi = child_bounds(keys, i, lo, hi)
        cl, cr = self._split(node.subs[i], layer - 1, key, clo, chi)
        if cl is None and not i:
            return None, sub  # type: ignore[return-value]
        if cr is None and i == len(keys):
            return sub, None  # type: ignore[return-value]
        left = _make(keys[:i], node.vals[:i], [*node.subs[:i], cl], layer)
        right = _make(keys[i:], node.vals[i:], [cr, *node.subs[i + 1 :]], layer)
        return left, right

    def delete(self, key: str | bytes) -> MST:
        """Remove ``key``; a tree without it is returned unchanged."""
        raw = key.encode() if isinstance(key, str) else key
        if self._root is None:
            return self
        height = key_layer(raw)
        if height > self.layer:
            return self
        new = self._delete(self._root, self.layer, raw, height, None, None)
        if new is _UNCHANGED:
            return self
        return self._trimmed(new, self.layer)  # type: ignore[arg-type]

    def _trimmed(self, root: Node | None, layer: int) -> MST:
        """A tree over ``root`` with entry-less nodes removed from the top."""
        while root is not None and not root.keys:
            root = resolve(self.loader, root.subs[0], layer - 1, None, None)
            layer -= 1
        if root is None:
            return MST(self.loader, None, -1)
        return MST(self.loader, root, layer)

    def _delete(
        self, sub: Sub, layer: int, key: bytes, height: int, lo: bytes | None, hi: bytes | None
    ) -> Node | None | object:
        node = sub if type(sub) is Node else resolve(self.loader, sub, layer, lo, hi)
        if node is None:
            return _UNCHANGED
        keys = node.keys
        i = bisect_left(keys, key)
        clo, chi = child_bounds(keys, i, lo, hi)
        if height == layer:
            if i >= len(keys) or keys[i] != key:
                return _UNCHANGED
            # the slots either side of the key become one: from slot i's low bound to slot i+1's high
            chi = child_bounds(keys, i + 1, lo, hi)[1]
            merged = self._merge(node.subs[i], node.subs[i + 1], layer - 1, clo, key, chi)
            if len(keys) > 1:
                return node.without(i, [*node.subs[:i], merged, *node.subs[i + 2 :]])
            return _make(
                [*keys[:i], *keys[i + 1 :]],
                [*node.vals[:i], *node.vals[i + 1 :]],
                [*node.subs[:i], merged, *node.subs[i + 2 :]],
                layer,
            )
        child = self._delete(node.subs[i], layer - 1, key, height, clo, chi)
        if child is _UNCHANGED:
            return _UNCHANGED
        if keys:
            return node.with_sub(i, child)  # type: ignore[arg-type]
        return _make(keys, node.vals, [child], layer)  # type: ignore[list-item]

    def _merge(
        self, a: Sub, b: Sub, layer: int, lo: bytes | None, mid: bytes, hi: bytes | None
    ) -> Node | None:
        """Join two adjacent subtrees of one layer (left keys < mid < right keys).

        When one side is empty the other is relinked as it is, unread: its
        context is checked whenever something reads it later, and a consumer
        inverting a commit need not be sent a block no check reads.
        """
        if a is None:
            return b  # type: ignore[return-value]
        if b is None:
            return a  # type: ignore[return-value]
        na = resolve(self.loader, a, layer, lo, mid)
        nb = resolve(self.loader, b, layer, mid, hi)
        assert na is not None and nb is not None
        # the inner slots meeting at ``mid``: na's last and nb's first
        alo = child_bounds(na.keys, len(na.keys), lo, mid)[0]
        bhi = child_bounds(nb.keys, 0, mid, hi)[1]
        inner = self._merge(na.subs[-1], nb.subs[0], layer - 1, alo, mid, bhi)
        keys = [*na.keys, *nb.keys]
        if len(keys) > limits.MAX_MST_NODE_ENTRIES:
            raise LimitExceeded("MAX_MST_NODE_ENTRIES", len(keys), limits.MAX_MST_NODE_ENTRIES, mid.decode())
        return _make(keys, [*na.vals, *nb.vals], [*na.subs[:-1], inner, *nb.subs[1:]], layer)

    def apply(self, ops: Iterable[Op]) -> MST:
        """Apply ("set", key, cid) / ("delete", key, None) operations in order."""
        tree = self
        for action, key, value in ops:
            if action == "set":
                assert value is not None
                tree = tree.set(key, value)
            else:
                tree = tree.delete(key)
        return tree

    # --- blocks --------------------------------------------------------------
    def new_blocks(self) -> BlockMap:
        """Encodings of every node built in memory (not loaded from the source)."""
        out = BlockMap()
        root = self._root
        if root is None:
            out.put(EMPTY_MST_ROOT, _EMPTY_NODE_BYTES)
            return out
        root.cid  # noqa: B018 - encodes the new nodes bottom-up
        stack = [root]
        while stack:
            node = stack.pop()
            if node.loaded:  # decoded from the source, not new
                continue
            out.put(node.cid, node.encode())
            for sub in node.subs:
                if type(sub) is Node:
                    stack.append(sub)
        return out

    def node_cids(self) -> Iterator[CID]:
        """Every node CID of the tree, in pre-order (loads what it walks)."""
        for cid, _n, _layer in self.nodes():
            yield cid

    def nodes(self) -> Iterator[tuple[CID, Node, int]]:
        """(CID, node, layer) for every node in pre-order (loads what it walks)."""
        walker = Walker(self)
        stack = walker.stack
        pop = stack.pop
        open_ = walker.open
        while stack:
            top = stack[-1]
            if len(top) == 2:  # an entry: passed over
                pop()
            else:
                node = open_()
                yield node.cid, node, top[1]

    def path(self, key: str | bytes) -> builtins.list[Node]:
        """Nodes on the lookup path of ``key`` from the root (where it is or would be)."""
        out: builtins.list[Node] = []
        self._descend(key.encode() if isinstance(key, str) else key, -1, out, 0)
        return out

    def neighbor(self, key: str | bytes, *, below: bool) -> bytes | None:
        """The nearest key strictly below (or above) ``key``, or None."""
        raw = key.encode() if isinstance(key, str) else key
        return self._descend(raw, -1, None, -1 if below else 1)[1]


def _prepare_keys(pairs: list[tuple[str | bytes, CID]]) -> tuple[list[bytes], list[CID]]:
    """Keys as bytes and values as lists, refusing a bad key or unsorted input.

    Syntax is checked in one pass over all keys, and key by key only when that
    fails, to name the bad one.
    """
    names, values = zip(*pairs, strict=True)
    try:
        keys: list[bytes] = list(map(str.encode, names))
    except TypeError:
        keys = [k.encode() if isinstance(k, str) else k for k in names]
    vals: list[CID] = list(values)
    # One pass over all keys; per key only when it fails, to name the bad one.
    if not keys_valid(keys) or max(map(len, keys)) > limits.MAX_MST_KEY_BYTES:
        for raw in keys:
            _key(raw)
    if not all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
        bad = next(b for a, b in itertools.pairwise(keys) if not a < b)
        raise InvalidMST(f"build input not strictly sorted at {bad.decode()!r}")
    return keys, vals


def _layers(keys: list[bytes]) -> tuple[list[int], int]:
    """Each key's layer and the highest; most layers are read off the hash's first byte."""
    sha = _sha256
    layers = [_LAYER_OF_FIRST_BYTE[sha(k).digest()[0]] for k in keys]
    if -1 in layers:
        layers = [lay if lay >= 0 else key_layer(k) for lay, k in zip(layers, keys, strict=True)]
    top = max(layers)
    if top > limits.MAX_MST_LAYER:
        raise LimitExceeded("MAX_MST_LAYER", top, limits.MAX_MST_LAYER, "MST build")
    return layers, top


def _shared_prefixes(keys: list[bytes]) -> list[int]:
    """Length of the prefix each key shares with the one before it (0 for the first).

    Keys of a layer-0 node are neighbours in the sorted input, so these are
    their prefix lengths as they are; a node higher up takes the minimum over
    the keys between its entries. The length comes from the XOR of the two
    keys read as integers: its bit length says where they first differ.
    """
    shared = [0]
    shared += [
        (m := min(len(a), len(b)))
        - ((int.from_bytes(a[:m], "big") ^ int.from_bytes(b[:m], "big")).bit_length() + 7) // 8
        for a, b in zip(keys, itertools.islice(keys, 1, None), strict=False)
    ]
    return shared


class _Builder:
    """One left-to-right sweep over sorted keys, holding one unfinished node per layer.

    For each layer, ``idx`` lists the keys the open node has collected so far
    and ``subs`` its subtree slots, the last of which is still being filled.
    A key above layer 0 closes every open node below its layer (they become
    its left neighbour's right subtree) and joins the open node of its own
    layer. Runs of layer-0 keys between them are cut from the input whole
    (``leaf``). Entries are encoded here once each and handed to the nodes as
    cached pieces, so computing the root CID afterwards only joins bytes.
    """

    __slots__ = ("idx", "keys", "leaf_entries", "shared", "subs", "tails", "top", "vals")

    def __init__(self, keys: list[bytes], vals: list[CID], top: int) -> None:
        self.keys = keys
        self.vals = vals
        self.top = top
        shared = self.shared = _shared_prefixes(keys)
        # each value's encoded "v" piece
        tails = self.tails = [_TAIL36 + v.raw if len(v.raw) == 36 else b"\x61v" + _link(v) for v in vals]
        # each key's whole entry as a leaf entry (no subtree), compressed against its neighbour
        self.leaf_entries = [
            b"\xa4\x61k%b%b\x61p%b\x61t\xf6%b" % (_BHDR[len(s)], s, _SMALL[p], t)
            if len(s := k[p:]) < 24 and p < 24
            else _head(s, p) + b"\xf6" + t
            for k, p, t in zip(keys, shared, tails, strict=True)
        ]
        self.idx: list[list[int]] = [[] for _ in range(top + 1)]
        self.subs: list[list[Sub]] = [[None] for _ in range(top + 1)]

    def run(self, layers: list[int]) -> Node | None:
        """The root: every key placed, then every open node closed from the bottom up."""
        n = len(self.keys)
        top = self.top
        leaf = self.leaf
        if not top:
            return leaf(0, n)
        idx, subs, close = self.idx, self.subs, self.close
        # Only keys above layer 0 drive the loop; each run of layer-0 keys
        # between them is one leaf, cut straight from the input.
        run = 0
        for i in [i for i, height in enumerate(layers) if height]:
            height = layers[i]
            subs[1][-1] = leaf(run, i)
            for layer in range(1, height):
                if idx[layer] or subs[layer][0] is not None:
                    subs[layer + 1][-1] = close(layer)
            idx[height].append(i)
            subs[height].append(None)
            run = i + 1
        subs[1][-1] = leaf(run, n)
        for layer in range(1, top):
            subs[layer + 1][-1] = close(layer)
        return close(top)

    def close(self, layer: int) -> Node | None:
        """Finish the open node of ``layer`` (None if it holds nothing) and start a new one."""
        members = self.idx[layer]
        slots = self.subs[layer]
        self.idx[layer] = []
        self.subs[layer] = [None]
        if not members:
            return None if slots[0] is None else Node([], [], slots, layer)
        count = len(members)
        if count > limits.MAX_MST_NODE_ENTRIES:
            raise LimitExceeded("MAX_MST_NODE_ENTRIES", count, limits.MAX_MST_NODE_ENTRIES, "MST build")
        keys, vals, shared, tails = self.keys, self.vals, self.shared, self.tails
        heads = []
        last = -1
        for j in members:
            if last < 0:
                p = 0
            elif j == last + 1:
                p = shared[j]
            else:
                p = min(shared[last + 1 : j + 1])
            heads.append(_head(keys[j][p:], p))
            last = j
        return _node(
            [keys[j] for j in members],
            [vals[j] for j in members],
            slots,
            layer,
            _Encoding(heads, [tails[j] for j in members]),
        )

    def leaf(self, start: int, end: int) -> Node | None:
        """The layer-0 node of keys[start:end] (all layer 0, neighbours in the input)."""
        count = end - start
        if not count:
            return None
        if count > limits.MAX_MST_NODE_ENTRIES:
            raise LimitExceeded("MAX_MST_NODE_ENTRIES", count, limits.MAX_MST_NODE_ENTRIES, "MST build")
        keys = self.keys
        parts = [_array_header(count), _head(keys[start], 0) + b"\xf6" + self.tails[start]]
        parts += self.leaf_entries[start + 1 : end]
        parts.append(b"\x61l\xf6")
        # encoded now: a leaf has no children to wait for
        enc = _Encoding(None, None, b"".join(parts))
        return _node(keys[start:end], self.vals[start:end], [None] * (count + 1), 0, enc)
