"""MST nodes: what a node is, its wire form, and what is checked when.

**What a node is.** A Merkle Search Tree maps keys (repo paths,
``collection/rkey``) to values (record CIDs). A node holds a run of keys in
increasing order, each with its value, and ``len(keys) + 1`` subtree slots
around them: slot 0 holds keys below the first key, slot i+1 keys between key
i and key i+1 (the last slot: above the last key). A slot is ``None`` (no
subtree), a ``CID`` (a node still to be read) or a ``Node`` (built in memory).

**The layer rule.** Every key has a layer: the number of leading zero bits of
SHA-256(key), counted in pairs (``layer.key_layer``; fanout 4). All keys of a
node share one layer, and the node's subtrees are exactly one layer below it;
layer-0 nodes have no subtrees. Keys of higher layers are rarer, so the tree
is balanced on average, and its shape follows from the key set alone: the
same keys always give the same nodes and the same root CID. An entry-less
node only keeps a deeper subtree in its place (its layer, -1 here, comes from
its parent); the root is trimmed of such nodes.

**Wire form and prefix compression.** A node is the DAG-CBOR map
``{"e": [{"k": suffix, "p": shared, "t": link|null, "v": link}, ...],
"l": link|null}``: ``l`` is slot 0, entry i's ``t`` is slot i+1. Each key is
stored as the length ``p`` of the prefix it shares with the key before it and
the rest, ``k`` (the first key whole, ``p`` 0). The compression must be the
shortest: ``p`` is the whole shared prefix, no less. Here nodes are encoded by
joining pre-encoded pieces, not through the general encoder (the tests compare
both), and an updated node re-encodes from its old bytes or pieces; that
cache lives in the private ``_Encoding`` and never changes what the node is.

**What is checked when.** ``decode_node`` checks everything a block shows
about itself: the exact fields and their types, the shortest prefix
compression, strictly increasing keys, key syntax and length
(``MAX_MST_KEY_BYTES``, before each key is rebuilt), one layer for all keys,
no subtree links at layer 0, node links that are dag-cbor SHA-256 CIDs, and
the entry limit. Where the node stands (the layer its parent expects, the key
range between the parent's keys, the placement of entry-less nodes) is
checked by ``walk.resolve`` each time a link is followed.

**Frozen.** A ``Node`` never changes once made: its fields refuse writes
(``__setattr__`` raises), and updates make new nodes (``with_sub``,
``with_val``) that share what did not change.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Union

from .. import cbor, limits
from .._native import mst_node_parse as _native_parse
from ..cid import CID
from ..codec import decode_raw as _decode_raw
from ..errors import AtrepoError, InvalidCBOR, InvalidMST, LimitExceeded
from .layer import (
    KEY_PATTERN,
    SHOWN_KEY_BYTES,
    common_prefix_length,
    digest_layer,
    key_layer,
    key_problem,
    show_key,
)

Sub = Union["Node", CID, None]

_sha256_prefix = b"\x01\x71\x12\x20"
_sha256 = hashlib.sha256

#: All of a node's keys at once, newline-separated: one C-level pass instead of
#: one regex call per key. Newline is not a key character, but a key may still
#: carry one, which would read as two keys here; callers also check that the
#: joined bytes hold exactly ``len(keys) - 1`` newlines (see ``keys_valid``).
_KEYS_FULLMATCH = re.compile(KEY_PATTERN + rb"(?:\n" + KEY_PATTERN + rb")*").fullmatch
_MAX_KEY = limits.MAX_MST_KEY_BYTES
_digest = operator.methodcaller("digest")
#: Largest node ``decode_node`` hands straight to the C codec (``cbor.decode_node``'s default cap).
_DIRECT_BYTES = limits.MAX_CBOR_BYTES
_SLOW: Any = object()


def keys_valid(keys: list[bytes]) -> bool:
    """Whether every key (each at most ``MAX_MST_KEY_BYTES``) has MST key syntax.

    Fast path only: callers that get False run ``key_problem`` per key to say
    which key is wrong and why. The newline count is what makes the joined
    match per-key: each key's own newline would add one.
    """
    joined = b"\n".join(keys)
    return _KEYS_FULLMATCH(joined) is not None and joined.count(b"\n") == len(keys) - 1


class _Encoding:
    """A node's wire form and the pieces it is assembled from: the one mutable part of a node.

    Everything here is a cache of what the node's fields already determine, so
    filling it in never changes what the node is; it lives apart from the node
    so the node itself can refuse every write. Only this module and the bulk
    builder in ``tree.py`` touch it.

    ``heads``/``tails`` are the encoded parts of each entry that do not depend
    on subtrees (``{k, p, t:`` and ``v: link``); ``parts`` is the whole map as a
    list of pieces, with ``pending`` naming the one subtree link still to fill
    in; ``splice`` is (bytes, start, end, slot) for a node derived from a
    decoded one, whose bytes are the old ones with one link replaced;
    ``entries`` holds the decoded ``e`` array until ``heads`` are made from it.
    """

    __slots__ = ("cid", "data", "entries", "heads", "loaded", "parts", "pending", "splice", "tails")

    def __init__(
        self,
        heads: list[bytes] | None = None,
        tails: list[bytes] | None = None,
        data: bytes | None = None,
        cid: CID | None = None,
        entries: list[dict[str, Any]] | None = None,
        loaded: bool = False,
    ) -> None:
        self.cid = cid
        self.data = data
        self.heads = heads
        self.tails = tails
        self.parts: list[bytes] | None = None
        self.pending = -1
        self.splice: tuple[bytes, int, int, int] | None = None
        self.loaded = loaded
        self.entries = entries


class _Fields:
    """A node's layout while it is filled in; ``_node`` then makes it a ``Node``.

    Writing the fields through ``Node``'s guard would double the cost of
    making a node (every update and every decoded block makes some), so they
    are written here, unguarded, and the object's class is switched to
    ``Node`` (same layout, no new slots) before anyone else sees it.
    """

    __slots__ = ("_enc", "keys", "layer", "subs", "vals")


class Node(_Fields):
    """One MST node, frozen: ``keys``, ``vals``, ``subs`` and ``layer`` never change.

    ``layer`` is -1 for an entry-less node (its layer is known from context).
    The lists must not be modified either (they are typed as read-only
    sequences; copying them on every read would cost more than the walk).
    Changes build new nodes with ``with_sub``/``with_val``, which reuse this
    node's encoded pieces. Equality is identity; compare nodes by ``cid``.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        # Read-only to type checkers; at run time plain slots (read at full speed)
        # that ``__setattr__`` guards.
        @property
        def keys(self) -> Sequence[bytes]:
            """Full keys in increasing order."""

        @property
        def vals(self) -> Sequence[CID]:
            """Record CID of each key."""

        @property
        def subs(self) -> Sequence[Sub]:
            """``len(keys) + 1`` subtree slots: slot 0 left of every key, slot i+1 right of key i."""

        @property
        def layer(self) -> int:
            """Layer of every key here; -1 when there are none."""

        _enc: _Encoding

    def __new__(cls, keys: Sequence[bytes], vals: Sequence[CID], subs: Sequence[Sub], layer: int) -> Node:
        return _node(keys, vals, subs, layer, None)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Node is frozen: cannot set {name}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Node is frozen: cannot delete {name}")

    @property
    def cid(self) -> CID:
        """CID of this node's encoding (computed once; encodes new children first)."""
        enc = self._enc
        cid = enc.cid
        if cid is None:
            cid = enc.cid = CID.for_dag_cbor(self.encode())
        return cid

    @property
    def loaded(self) -> bool:
        """Whether the node was decoded from a block (False: built in memory)."""
        return self._enc.loaded

    def with_sub(self, index: int, sub: Sub) -> Node:
        """The same entries with subtree slot ``index`` replaced.

        A node that has its bytes is re-encoded by splicing the new link over
        the old one (node maps are counted by entries, not bytes, so the link
        may change length); otherwise the new node copies this node's encoded
        pieces and recomputes only the changed link.
        """
        subs = list(self.subs)
        subs[index] = sub
        enc = self._enc
        data = enc.data
        if data is not None and enc.loaded:
            old = self.subs[index]
            old_link = _NULL if old is None else _link(old if type(old) is CID else old.cid)  # type: ignore[union-attr]
            if index == 0:
                start = len(data) - len(old_link)
            elif old is not None:
                needle = b"\x61t" + old_link
                start = data.find(needle)
                if start < 0 or data.find(needle, start + 1) >= 0:
                    start = -1
                else:
                    start += 2
            else:
                start = -1
            if start >= 0:
                spliced = _Encoding(enc.heads, enc.tails)
                spliced.entries = enc.entries
                spliced.splice = (data, start, start + len(old_link), index)
                return _node(self.keys, self.vals, subs, self.layer, spliced)
        new = _Encoding(_heads(self), _tails(self))
        if enc.pending < 0 and enc.splice is None:
            parts = enc.parts
            if parts is None:
                parts = enc.parts = _all_parts(self)
            new.parts = parts.copy()
            new.pending = index
        return _node(self.keys, self.vals, subs, self.layer, new)

    def with_val(self, index: int, val: CID) -> Node:
        """The same keys and subtrees with value ``index`` replaced."""
        vals = list(self.vals)
        vals[index] = val
        enc = self._enc
        tails = _tails(self).copy()
        tails[index] = b"\x61v" + _link(val)
        new = _Encoding(_heads(self), tails)
        if enc.pending < 0 and enc.parts is not None:
            parts = new.parts = enc.parts.copy()
            parts[3 * index + 3] = tails[index]
        return _node(self.keys, vals, self.subs, self.layer, new)

    def without(self, index: int, subs: Sequence[Sub]) -> Node:
        """The node less entry ``index``, with subtree slots ``subs`` (one fewer than now).

        A deletion's new node: the entries around the removed one keep their
        encoded pieces, and only the entry after it is compressed again,
        against its new neighbour, instead of re-encoding every key.
        """
        keys = self.keys
        heads = _heads(self)
        new_heads = [*heads[:index], *heads[index + 1 :]]
        if index + 1 < len(keys):
            key = keys[index + 1]
            p = common_prefix_length(keys[index - 1], key) if index else 0
            new_heads[index] = _head(key[p:], p)
        tails = _tails(self)
        return _node(
            [*keys[:index], *keys[index + 1 :]],
            [*self.vals[:index], *self.vals[index + 1 :]],
            subs,
            self.layer,
            _Encoding(new_heads, [*tails[:index], *tails[index + 1 :]]),
        )

    def encode(self) -> bytes:
        """The node's canonical DAG-CBOR bytes (assembled once, then kept)."""
        enc = self._enc
        data = enc.data
        if data is None:
            splice = enc.splice
            if splice is not None:
                base, start, end, index = splice
                sub = self.subs[index]
                link = _NULL if sub is None else _link(sub if type(sub) is CID else sub.cid)  # type: ignore[union-attr]
                enc.splice = None
                data = enc.data = b"".join((base[:start], link, base[end:]))
                return data
            parts = enc.parts
            if parts is None:
                parts = enc.parts = _all_parts(self)
            elif enc.pending >= 0:
                index = enc.pending
                sub = self.subs[index]
                link = _NULL if sub is None else _link(sub if type(sub) is CID else sub.cid)  # type: ignore[union-attr]
                if index:
                    parts[3 * index - 1] = link
                else:
                    parts[-1] = b"\x61l" + link
                enc.pending = -1
            data = enc.data = b"".join(parts)
        return data

    def __repr__(self) -> str:
        return f"Node(layer={self.layer}, keys={len(self.keys)})"


_new_fields = object.__new__


def _node(
    keys: Sequence[bytes], vals: Sequence[CID], subs: Sequence[Sub], layer: int, enc: _Encoding | None
) -> Node:
    """A new node: fields written unguarded, then the object made a ``Node`` (see ``_Fields``).

    What ``Node(...)`` does, without the call through the class; the hot
    paths that make nodes (decoding, updates, the builder) call it directly.
    """
    node: Any = _new_fields(_Fields)
    node.keys = keys
    node.vals = vals
    node.subs = subs
    node.layer = layer
    node._enc = _Encoding() if enc is None else enc
    node.__class__ = Node
    return node  # type: ignore[no-any-return]


def _heads(node: Node) -> list[bytes]:
    """Each entry's encoded ``{k, p, t:`` prefix (from the decoded entries when there are some)."""
    enc = node._enc
    heads = enc.heads
    if heads is None:
        entries = enc.entries
        if entries is not None:
            heads = enc.heads = [_head(e["k"], e["p"]) for e in entries]
            enc.entries = None
        else:
            heads = enc.heads = entry_heads(node.keys)
    return heads


def _tails(node: Node) -> list[bytes]:
    """Each entry's encoded ``v: link``."""
    enc = node._enc
    tails = enc.tails
    if tails is None:
        tails = enc.tails = [b"\x61v" + _link(v) for v in node.vals]
    return tails


def _all_parts(node: Node) -> list[bytes]:
    """The whole map as pieces: header, then head, subtree link and tail per entry, then ``l``."""
    heads = _heads(node)
    tails = _tails(node)
    subs = node.subs
    n = len(heads)
    end = 3 * n + 1
    parts = [_NULL] * (end + 1)
    parts[0] = _array_header(n)
    parts[1:end:3] = heads
    parts[3:end:3] = tails
    if subs.count(None) == n + 1:
        parts[end] = b"\x61l\xf6"
    else:
        links = [_NULL if s is None else _link(s if type(s) is CID else s.cid) for s in subs]  # type: ignore[union-attr]
        parts[2:end:3] = links[1:]
        parts[end] = b"\x61l" + links[0]
    return parts


_NULL = b"\xf6"
_SMALL = [bytes((i,)) for i in range(24)]
_BHDR = [bytes((0x40 | i,)) for i in range(24)]


def _uint(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    return bytes((major | 26,)) + value.to_bytes(4, "big")


def _array_header(n: int) -> bytes:
    return b"\xa2\x61e" + _uint(0x80, n)


def _link(cid: CID | None) -> bytes:
    if cid is None:
        return b"\xf6"
    raw = cid.raw
    if len(raw) == 36:
        return b"\xd8\x2a\x58\x25\x00" + raw
    return b"\xd8\x2a" + _uint(0x40, len(raw) + 1) + b"\x00" + raw


def _head(suffix: bytes, p: int) -> bytes:
    ls = len(suffix)
    return b"\xa4\x61k%b%b\x61p%b\x61t" % (
        _BHDR[ls] if ls < 24 else _uint(0x40, ls),
        suffix,
        _SMALL[p] if p < 24 else _uint(0, p),
    )


def entry_heads(keys: Sequence[bytes]) -> list[bytes]:
    """Encoded ``{k, p, t:`` prefix of each entry (prefix-compressed against the previous key)."""
    out = []
    prev = b""
    for key in keys:
        p = common_prefix_length(prev, key) if prev else 0
        suffix = key[p:]
        ls = len(suffix)
        out.append(
            b"\xa4\x61k%b%b\x61p%b\x61t"
            % (_BHDR[ls] if ls < 24 else _uint(0x40, ls), suffix, _SMALL[p] if p < 24 else _uint(0, p))
        )
        prev = key
    return out


def encode_node(keys: list[bytes], vals: list[CID], sub_cids: list[CID | None]) -> bytes:
    """Canonical DAG-CBOR of a node, assembled directly (same bytes as the codec).

    The shape is fixed, so writing the bytes is several times faster than
    building dicts for the general encoder; tests compare both.
    """
    return Node(keys, vals, list(sub_cids), -1).encode()


class _Where:
    """Formats "node <cid>" only when an error message needs it."""

    __slots__ = ("cid",)

    def __init__(self, cid: CID | None) -> None:
        self.cid = cid

    def __str__(self) -> str:
        return f"node {self.cid}" if self.cid is not None else "node"


def decode_node(data: bytes, cid: CID | None = None) -> Node:
    """Decode and validate everything a node can show about itself.

    Checks: exact field sets and types, canonical prefix compression, strictly
    increasing keys, key syntax, one layer for all keys, no children below
    layer 0, node links are blessed dag-cbor, the entry limit. Context rules
    (expected layer, bounds from the parent, empty-node placement) are checked
    by the tree when it descends.

    With the C extension (``_native``), a canonical node is proven valid and
    taken apart in C, layers included; whatever the C code
    does not prove goes through ``_decode_python``, which accepts it or raises
    as it always has. Both give the same node (``tests/core/test_mst_native.py``).
    """
    parse = _native_parse
    if parse is not None and type(data) is bytes and 0 < len(data) <= _DIRECT_BYTES:
        parts = parse(data, _MAX_KEY, limits.MAX_MST_NODE_ENTRIES, limits.MAX_MST_LAYER)
        if parts is not None:
            keys, vals, subs, heads, tails, layer = parts
            return _node(keys, vals, subs, layer, _Encoding(heads, tails, data, cid, None, True))
    return _decode_python(data, cid)


def _decode_python(data: bytes, cid: CID | None = None) -> Node:
    """``decode_node`` in pure Python: the reference the C fast path is tested against."""
    raw: Any = _SLOW
    size = len(data) if type(data) is bytes else 0
    if 0 < size <= _DIRECT_BYTES and size <= limits.CBOR_PRESCAN_BYTES:
        # What ``cbor.decode_node`` does for a block this small, without its
        # layers of calls; anything it would refuse takes it, for its message.
        try:
            raw, length = _decode_raw(data, CID, False)
        except (ValueError, TypeError, AtrepoError):
            raw = _SLOW
        else:
            if length != size:
                raw = _SLOW
    if raw is _SLOW:
        try:
            raw = cbor.decode_node(data)
        except (InvalidCBOR, LimitExceeded) as exc:
            raise InvalidMST(f"{_Where(cid)}: not valid DAG-CBOR: {exc}") from None
    if type(raw) is not dict or len(raw) != 2 or "e" not in raw or "l" not in raw:
        raise InvalidMST(f"{_Where(cid)}: must be a map with exactly the fields e and l")
    entries = raw["e"]
    left = raw["l"]
    if type(entries) is not list:
        raise InvalidMST(f"{_Where(cid)}: field e must be an array")
    if len(entries) > limits.MAX_MST_NODE_ENTRIES:
        raise LimitExceeded(
            "MAX_MST_NODE_ENTRIES", len(entries), limits.MAX_MST_NODE_ENTRIES, str(_Where(cid))
        )
    if left is not None and (type(left) is not CID or left.raw[:4] != _sha256_prefix or len(left.raw) != 36):
        raise InvalidMST(f"{_Where(cid)}: l must be null or a dag-cbor sha256 link")
    keys: list[bytes] = []
    vals: list[CID] = []
    subs: list[Sub] = [left]
    prev = b""
    pfx = _sha256_prefix
    for index, entry in enumerate(entries):
        try:
            if len(entry) != 4:
                raise KeyError
            suffix = entry["k"]
            p = entry["p"]
            right = entry["t"]
            val = entry["v"]
        except (KeyError, TypeError):
            raise InvalidMST(f"{_Where(cid)}: entry {index} must be a map with exactly k, p, t, v") from None
        if type(suffix) is not bytes or type(p) is not int or type(val) is not CID:
            raise InvalidMST(f"{_Where(cid)}: entry {index} has a field of the wrong type")
        if right is not None and (type(right) is not CID or right.raw[:4] != pfx or len(right.raw) != 36):
            raise InvalidMST(f"{_Where(cid)}: entry {index} t must be null or a dag-cbor sha256 link")
        if index:
            if p > len(prev) or p < 0:
                raise InvalidMST(f"{_Where(cid)}: entry {index} prefix length {p} outside 0..{len(prev)}")
            if p < len(prev) and suffix[:1] == prev[p : p + 1]:
                raise InvalidMST(f"{_Where(cid)}: entry {index} prefix compression is not the shortest")
            if p + len(suffix) > _MAX_KEY:
                _too_long(cid, index, prev[:p] + suffix[:SHOWN_KEY_BYTES], p + len(suffix))
            key = prev[:p] + suffix
            if key <= prev:
                raise InvalidMST(f"{_Where(cid)}: keys out of order: {show_key(key)} after {show_key(prev)}")
        elif p:
            raise InvalidMST(f"{_Where(cid)}: first entry has prefix length {p}, must be 0")
        else:
            if len(suffix) > _MAX_KEY:
                _too_long(cid, index, suffix, len(suffix))
            key = suffix
        keys.append(key)
        vals.append(val)
        subs.append(right)
        prev = key
    if keys:
        joined = b"\n".join(keys)  # ``keys_valid``, written out
        if _KEYS_FULLMATCH(joined) is None or joined.count(b"\n") != len(keys) - 1:
            for key in keys:
                problem = key_problem(key)
                if problem is not None:
                    raise InvalidMST(f"{_Where(cid)}: key {show_key(key)}: {problem}")
    return _layered(data, cid, entries, keys, vals, subs, None, None)


def _layered(
    data: bytes,
    cid: CID | None,
    entries: list[Any] | None,
    keys: list[bytes],
    vals: list[CID],
    subs: list[Sub],
    heads: list[bytes] | None,
    tails: list[bytes] | None,
) -> Node:
    """The node, once its layer is known: the layer checks both decoders share.

    Everything else about the block has been checked. ``entries`` (the decoded
    ``e`` array) or ``heads``/``tails`` (the encoded pieces, from the C path)
    are kept for re-encoding.
    """
    layer = -1
    if keys:
        if len(keys) == 1:
            layer = key_layer(keys[0])
        else:
            # A key's layer falls as its digest grows (more leading zeros sort
            # first), so the smallest and largest digests bound every layer.
            digests = list(map(_digest, map(_sha256, keys)))
            low = min(digests)
            if low[0] >= 64:  # fewer than two leading zero bits everywhere: layer 0
                if subs.count(None) != len(subs):
                    raise InvalidMST(f"{_Where(cid)}: layer-0 node has a subtree link")
                # ``_node`` written out: multi-key leaves, the commonest nodes, end here
                node: Any = _new_fields(_Fields)
                node.keys = keys
                node.vals = vals
                node.subs = subs
                node.layer = 0
                node._enc = _Encoding(heads, tails, data, cid, entries, True)
                node.__class__ = Node
                return node  # type: ignore[no-any-return]
            layer = digest_layer(max(digests))
            if digest_layer(low) != layer:
                first = key_layer(keys[0])
                key = next(k for k in keys if key_layer(k) != first)
                raise InvalidMST(
                    f"{_Where(cid)}: key {show_key(key)} has layer {key_layer(key)} "
                    f"but the node's first key has {first}"
                )
        if layer > limits.MAX_MST_LAYER:
            raise LimitExceeded("MAX_MST_LAYER", layer, limits.MAX_MST_LAYER, str(_Where(cid)))
    if layer == 0 and subs.count(None) != len(subs):
        raise InvalidMST(f"{_Where(cid)}: layer-0 node has a subtree link")
    return _node(keys, vals, subs, layer, _Encoding(heads, tails, data, cid, entries, True))


def _too_long(cid: CID | None, index: int, start: bytes, length: int) -> NoReturn:
    """Refuse entry ``index``'s key, ``length`` bytes long, before it is built.

    A shared prefix is copied into every key that uses it, so one long first
    key reused by 256 entries would build hundreds of megabytes of keys from a
    few megabytes of node; every key is measured before it exists, so none
    built is longer than the limit.
    """
    raise InvalidMST(
        f"{_Where(cid)}: entry {index} key {show_key(start[:SHOWN_KEY_BYTES])}...: "
        f"key is {length} bytes, more than {_MAX_KEY}"
    )
