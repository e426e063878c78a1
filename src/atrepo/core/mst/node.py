"""MST nodes: the in-memory form, the wire encoding and strict decoding.

Wire form (DAG-CBOR): ``{"e": [{"k": suffix, "p": shared, "t": link|null,
"v": link}, ...], "l": link|null}``. In memory a node holds full keys, their
values and ``len(keys) + 1`` subtree slots (slot 0 is ``l``, slot i+1 is entry
i's ``t``); a slot is ``None``, a ``CID`` (not loaded) or a ``Node`` (built in
memory). Nodes never change after construction; only their encoding is cached.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NoReturn, Union

from .. import cbor, limits
from ..cid import CID
from ..errors import InvalidCBOR, InvalidMST, LimitExceeded
from .layer import KEY_PATTERN, SHOWN_KEY_BYTES, common_prefix_length, key_layer, key_problem, show_key

Sub = Union["Node", CID, None]

_sha256_prefix = b"\x01\x71\x12\x20"
_sha256 = hashlib.sha256

#: All of a node's keys at once, newline-separated: one C-level pass instead of
#: one regex call per key. Newline is not a key character, but a key may still
#: carry one, which would read as two keys here; callers also check that the
#: joined bytes hold exactly ``len(keys) - 1`` newlines (see ``keys_valid``).
_KEYS_FULLMATCH = re.compile(KEY_PATTERN + rb"(?:\n" + KEY_PATTERN + rb")*").fullmatch
_MAX_KEY = limits.MAX_MST_KEY_BYTES


def keys_valid(keys: list[bytes]) -> bool:
    """Whether every key (each at most ``MAX_MST_KEY_BYTES``) has MST key syntax.

    Fast path only: callers that get False run ``key_problem`` per key to say
    which key is wrong and why. The newline count is what makes the joined
    match per-key: each key's own newline would add one.
    """
    joined = b"\n".join(keys)
    return _KEYS_FULLMATCH(joined) is not None and joined.count(b"\n") == len(keys) - 1


class Node:
    """One MST node. ``layer`` is -1 for an entry-less node (known from context).

    ``_heads``/``_tails`` cache the encoded parts of each entry that do not
    depend on subtrees (key suffix and prefix length; value link), so a node
    rebuilt with a new child - every node on an update's path - re-encodes by
    joining cached pieces with the one changed link.
    """

    __slots__ = (
        "_cid",
        "_data",
        "_heads",
        "_loaded",
        "_parts",
        "_pending",
        "_splice",
        "_tails",
        "_wire",
        "keys",
        "layer",
        "subs",
        "vals",
    )

    keys: list[bytes]
    vals: list[CID]
    subs: list[Sub]
    layer: int
    _cid: CID | None
    _data: bytes | None
    _heads: list[bytes] | None
    _tails: list[bytes] | None
    _parts: list[bytes] | None
    _pending: int

    def __init__(
        self,
        keys: list[bytes],
        vals: list[CID],
        subs: list[Sub],
        layer: int,
        heads: list[bytes] | None = None,
        tails: list[bytes] | None = None,
    ) -> None:
        self.keys = keys
        self.vals = vals
        self.subs = subs
        self.layer = layer
        self._cid = None
        self._data = None
        self._heads = heads
        self._tails = tails
        self._parts = None
        self._pending = -1
        self._splice: tuple[bytes, int, int, int] | None = None
        self._loaded = False
        self._wire: list[dict[str, Any]] | None = None

    @property
    def cid(self) -> CID:
        """CID of this node's encoding (computed once; encodes new children first)."""
        cid = self._cid
        if cid is None:
            cid = self._cid = CID.for_dag_cbor(self.encode())
        return cid

    def heads(self) -> list[bytes]:
        heads = self._heads
        if heads is None:
            wire = self._wire
            if wire is not None:
                heads = self._heads = [_head(e["k"], e["p"]) for e in wire]
                self._wire = None
            else:
                heads = self._heads = entry_heads(self.keys)
        return heads

    def tails(self) -> list[bytes]:
        tails = self._tails
        if tails is None:
            tails = self._tails = [b"\x61v" + _link(v) for v in self.vals]
        return tails

    def with_sub(self, index: int, sub: Sub) -> Node:
        """The same entries with subtree slot ``index`` replaced.

        A node that has its bytes is re-encoded by splicing the new link over
        the old one (node maps are counted by entries, not bytes, so the link
        may change length); otherwise the new node copies this node's encoded
        pieces and recomputes only the changed link.
        """
        subs = self.subs.copy()
        subs[index] = sub
        data = self._data
        if data is not None and self._loaded:
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
                node = Node(self.keys, self.vals, subs, self.layer, self._heads, self._tails)
                node._wire = self._wire
                node._splice = (data, start, start + len(old_link), index)
                return node
        node = Node(self.keys, self.vals, subs, self.layer, self.heads(), self.tails())
        if self._pending < 0 and self._splice is None:
            parts = self._parts
            if parts is None:
                parts = self._parts = self._all_parts()
            node._parts = parts.copy()
            node._pending = index
        return node

    def with_val(self, index: int, val: CID) -> Node:
        """The same keys and subtrees with value ``index`` replaced."""
        vals = self.vals.copy()
        vals[index] = val
        tails = self.tails().copy()
        tails[index] = b"\x61v" + _link(val)
        node = Node(self.keys, vals, self.subs, self.layer, self.heads(), tails)
        if self._pending < 0 and self._parts is not None:
            parts = node._parts = self._parts.copy()
            parts[3 * index + 3] = tails[index]
        return node

    def _all_parts(self) -> list[bytes]:
        heads = self.heads()
        tails = self.tails()
        subs = self.subs
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

    def encode(self) -> bytes:
        data = self._data
        if data is None:
            splice = self._splice
            if splice is not None:
                base, start, end, index = splice
                sub = self.subs[index]
                link = _NULL if sub is None else _link(sub if type(sub) is CID else sub.cid)  # type: ignore[union-attr]
                self._splice = None
                data = self._data = b"".join((base[:start], link, base[end:]))
                return data
            parts = self._parts
            if parts is None:
                parts = self._parts = self._all_parts()
            elif self._pending >= 0:
                index = self._pending
                sub = self.subs[index]
                link = _NULL if sub is None else _link(sub if type(sub) is CID else sub.cid)  # type: ignore[union-attr]
                if index:
                    parts[3 * index - 1] = link
                else:
                    parts[-1] = b"\x61l" + link
                self._pending = -1
            data = self._data = b"".join(parts)
        return data

    def __repr__(self) -> str:
        return f"Node(layer={self.layer}, keys={len(self.keys)})"


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


def entry_heads(keys: list[bytes]) -> list[bytes]:
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
    """
    try:
        raw: Any = cbor.decode_node(data)
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
    layer = -1
    if keys:
        if not keys_valid(keys):
            for key in keys:
                problem = key_problem(key)
                if problem is not None:
                    raise InvalidMST(f"{_Where(cid)}: key {show_key(key)}: {problem}")
        if len(keys) == 1:
            layer = key_layer(keys[0])
        else:
            tops = [int.from_bytes(_sha256(k).digest()[:8], "big") for k in keys]
            low = min(tops)
            if low >> 62:  # fewer than two leading zero bits everywhere: layer 0
                return _finish(data, cid, entries, keys, vals, subs, 0)
            high = max(tops)
            if not low:
                layer = key_layer(keys[0])
                same = all(key_layer(k) == layer for k in keys)
            else:
                layer = (64 - high.bit_length()) >> 1
                same = (64 - low.bit_length()) >> 1 == layer
            if not same:
                first = key_layer(keys[0])
                key = next(k for k in keys if key_layer(k) != first)
                raise InvalidMST(
                    f"{_Where(cid)}: key {show_key(key)} has layer {key_layer(key)} "
                    f"but the node's first key has {first}"
                )
        if layer > limits.MAX_MST_LAYER:
            raise LimitExceeded("MAX_MST_LAYER", layer, limits.MAX_MST_LAYER, str(_Where(cid)))
    return _finish(data, cid, entries, keys, vals, subs, layer)


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


def _finish(
    data: bytes,
    cid: CID | None,
    entries: list[Any],
    keys: list[bytes],
    vals: list[CID],
    subs: list[Sub],
    layer: int,
) -> Node:
    if layer == 0 and subs.count(None) != len(subs):
        raise InvalidMST(f"{_Where(cid)}: layer-0 node has a subtree link")
    node = Node(keys, vals, subs, layer)
    node._data = data
    node._cid = cid
    node._wire = entries
    node._loaded = True
    return node
