"""Malformed MST nodes and trees: one test per rule, each naming the rule it broke."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.blocks import BlockMap
from atrepo.core.car import write_car
from atrepo.core.cid import CID, EMPTY_MST_ROOT
from atrepo.core.commit import sign_commit
from atrepo.core.errors import AtrepoError, InvalidMST, LimitExceeded, MissingBlock
from atrepo.core.keys import PrivateKey
from atrepo.core.mst import MST, common_prefix_length, decode_node, encode_node, key_layer
from atrepo.core.verify import verify_repo_car

_EXAMPLES = [
    line
    for line in (Path(__file__).resolve().parent.parent / "interop" / "mst" / "example_keys.txt")
    .read_text("utf-8")
    .split("\n")
    if line
]


def _ex(name: str) -> bytes:
    """The example key starting with ``name`` (e.g. "B1" -> b"B1/986427")."""
    (key,) = [k for k in _EXAMPLES if k.startswith(name + "/")]
    return key.encode()


VAL = CID.for_dag_cbor(b"\xa0")
RAW_LINK = CID.for_raw(b"not a node")
SHA512_LINK = CID(b"\x01\x71\x13\x40" + hashlib.sha512(b"x").digest())


def _entries(keys: list[bytes], ts: list[CID | None] | None = None) -> list[dict[str, Any]]:
    """Correctly compressed entries for ``keys`` (all values VAL)."""
    out = []
    prev = b""
    for i, key in enumerate(keys):
        p = common_prefix_length(prev, key)
        out.append({"k": key[p:], "p": p, "t": ts[i] if ts else None, "v": VAL})
        prev = key
    return out


def _node(entries: list[dict[str, Any]], left: CID | None = None) -> dict[str, Any]:
    return {"e": entries, "l": left}


def _expect(
    value: Any, pattern: str, *, error: type[AtrepoError] = InvalidMST, key: bytes | None = None
) -> None:
    """Decoding ``value`` (a dict, or raw bytes) fails with ``pattern``, naming the CID and key.

    Checked three ways: ``decode_node`` given the CID, ``MST.load`` from a
    block map (the real read path), and ``decode_node`` without a CID.
    """
    data = value if isinstance(value, bytes) else cbor.encode(value)
    cid = CID.for_dag_cbor(data)
    with pytest.raises(error) as info:
        decode_node(data, cid)
    message = str(info.value)
    assert re.search(pattern, message), message
    assert str(cid) in message
    if key is not None:
        shown = key.decode("latin-1")
        assert shown in message or repr(shown)[1:-1] in message, message
    with pytest.raises(error, match=pattern):
        MST.load(BlockMap({cid: data}), cid)
    # Without a CID the rule is still named.
    with pytest.raises(error, match=pattern):
        decode_node(data)


# --- one node on its own --------------------------------------------------------


def test_valid_node_decodes() -> None:
    keys = [b"com.example/aa", b"com.example/ab", b"com.example/b"]
    keys = [k for k in keys if key_layer(k) == key_layer(keys[0])]
    node = decode_node(cbor.encode(_node(_entries(keys))))
    assert node.keys == keys


@pytest.mark.parametrize(
    "value",
    [
        {"e": [], "l": None, "x": None},
        {"e": []},
        {"l": None},
        {},
        {"e": [], "L": None},
    ],
    ids=["extra", "no-l", "no-e", "empty-map", "wrong-name"],
)
def test_node_fields_exact(value: dict[str, Any]) -> None:
    _expect(value, "exactly the fields e and l")


@pytest.mark.parametrize("value", [[], "node", 5, None, b"\xa0"], ids=["list", "str", "int", "null", "bytes"])
def test_node_not_a_map(value: Any) -> None:
    _expect(cbor.encode(value), "exactly the fields e and l")


def test_entry_fields_exact() -> None:
    (entry,) = _entries([b"com.example/a"])
    _expect(_node([{**entry, "x": 1}]), r"entry 0 .*exactly k, p, t, v")
    for name in "kptv":
        short = {k: v for k, v in entry.items() if k != name}
        _expect(_node([short]), r"entry 0 .*exactly k, p, t, v")
        renamed = {**short, name.upper(): entry[name]}
        _expect(_node([renamed]), r"entry 0 .*exactly k, p, t, v")
    _expect(_node([[entry["k"], 0, None, VAL]]), r"entry 0 .*exactly k, p, t, v")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", "com.example/a"),
        ("k", None),
        ("p", "0"),
        ("p", None),
        ("p", True),
        ("v", None),
        ("v", b"\x01\x71"),
        ("v", "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"),
    ],
)
def test_entry_field_types(field: str, value: Any) -> None:
    (entry,) = _entries([b"com.example/a"])
    _expect(_node([{**entry, field: value}]), r"entry 0 .*wrong type")


@pytest.mark.parametrize("value", [{}, None, "x", 0, b""], ids=["map", "null", "str", "int", "bytes"])
def test_e_must_be_array(value: Any) -> None:
    _expect({"e": value, "l": None}, "field e must be an array")


@pytest.mark.parametrize(
    "value",
    [0, "x", b"\x01", [], RAW_LINK, SHA512_LINK],
    ids=["int", "str", "bytes", "list", "raw", "sha512"],
)
def test_l_must_be_dag_cbor_link(value: Any) -> None:
    _expect({"e": [], "l": value}, r"\bl must be null or a dag-cbor sha256 link")


@pytest.mark.parametrize(
    "value",
    [0, "x", b"\x01", [], RAW_LINK, SHA512_LINK],
    ids=["int", "str", "bytes", "list", "raw", "sha512"],
)
def test_t_must_be_dag_cbor_link(value: Any) -> None:
    entries = _entries([_ex("B1")])
    entries[0]["t"] = value
    _expect(_node(entries), r"entry 0 t must be null or a dag-cbor sha256 link")


def test_value_may_be_any_cid() -> None:
    entries = _entries([b"com.example/a"])
    entries[0]["v"] = SHA512_LINK
    assert decode_node(cbor.encode(_node(entries))).vals == [SHA512_LINK]


def _same_layer(count: int, stem: str = "com.example/k", layer: int = 0) -> list[bytes]:
    out = []
    i = 0
    while len(out) < count:
        key = f"{stem}{i:04d}".encode()
        if key_layer(key) == layer:
            out.append(key)
        i += 1
    return out


def test_first_entry_prefix_must_be_zero() -> None:
    entries = _entries([b"com.example/a"])
    entries[0]["p"] = 3
    entries[0]["k"] = entries[0]["k"][3:]
    _expect(_node(entries), "first entry has prefix length 3, must be 0")
    entries[0]["p"] = -1
    _expect(_node(entries), "first entry has prefix length -1")


def test_prefix_longer_than_previous_key() -> None:
    a, b = _same_layer(2)
    entries = _entries([a, b])
    entries[1]["p"] = len(a) + 1
    _expect(_node(entries), rf"entry 1 prefix length {len(a) + 1} outside 0\.\.{len(a)}")
    entries[1]["p"] = -2
    _expect(_node(entries), r"entry 1 prefix length -2 outside")


def test_prefix_compression_must_be_shortest() -> None:
    a, b = _same_layer(2)
    shared = common_prefix_length(a, b)
    assert shared > 2
    entries = _entries([a, b])
    entries[1]["p"] = shared - 2
    entries[1]["k"] = b[shared - 2 :]
    _expect(_node(entries), "entry 1 prefix compression is not the shortest")
    entries[1]["p"] = 0
    entries[1]["k"] = b
    _expect(_node(entries), "entry 1 prefix compression is not the shortest")


def test_keys_must_increase() -> None:
    a, b = _same_layer(2)
    _expect(_node(_entries([b, a])), "keys out of order", key=a)
    dup = _entries([a])
    dup.append({"k": b"", "p": len(a), "t": None, "v": VAL})
    _expect(_node(dup), "keys out of order", key=a)
    # A suffix that sorts lower after the shared prefix.
    shorter = _entries([a])
    shorter.append({"k": b"", "p": len(a) - 1, "t": None, "v": VAL})
    _expect(_node(shorter), "keys out of order", key=a[:-1])


_CHARS = r"A-Z a-z 0-9 \. - _ ~ :"
_ONE_SLASH = "exactly one '/'"
_EMPTY_SEGMENT = "empty segment"
_DOTS = "'\\.' and '\\.\\.' are not valid path segments"


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        (b"com.example/a b", _CHARS),
        (b"com.example/a\x00", _CHARS),
        (b"com.example/\xc3\xa9", _CHARS),
        (b"com.example/a#b", _CHARS),
        (b"com.example/a?", _CHARS),
        (b"com.example/a%20", _CHARS),
        (b"com.example/a+b", _CHARS),
        (b"com.example", _ONE_SLASH),
        (b"com.example/a/b", _ONE_SLASH),
        (b"com.example//a", _ONE_SLASH),
        (b"/a", _EMPTY_SEGMENT),
        (b"com.example/", _EMPTY_SEGMENT),
        (b"/", _EMPTY_SEGMENT),
        (b"com.example/.", _DOTS),
        (b"com.example/..", _DOTS),
        (b"./a", _DOTS),
        (b"../a", _DOTS),
        (b"", "empty key"),
        (b"com.example/" + b"x" * 1013, "1025 bytes, more than 1024"),
    ],
    ids=lambda v: v[:20].decode("latin-1") if isinstance(v, bytes) else None,
)
def test_key_syntax(key: bytes, rule: str) -> None:
    message_key = key[:40].decode("latin-1") if key else None
    _expect(_node(_entries([key])), rule, key=message_key.encode("latin-1") if message_key else None)


@pytest.mark.parametrize(
    "keys",
    [
        [b"com.example/a\ncom.example/b"],
        [b"com.example/a", b"com.example/b\ncom.example/c"],
        [b"com.example/a\n"],
        [b"\ncom.example/a"],
        [b"com.example/.\ncom.example/a"],
    ],
    ids=["split", "second", "trailing", "leading", "dot-segment"],
)
def test_key_with_newline_is_one_bad_key(keys: list[bytes]) -> None:
    """A key holding a newline is refused, not read as two valid keys.

    Regression: all keys were matched at once joined by newlines, so
    ``com.example/a\ncom.example/b`` passed as two keys and reached output.
    """
    bad = next(k for k in keys if b"\n" in k)
    _expect(_node(_entries(keys)), "characters outside|exactly one '/'|empty segment", key=bad)
    with pytest.raises(InvalidMST, match=r"\\n"):
        MST.build([(k.decode(), VAL) for k in keys])


def _signed_car(keys: list[bytes]) -> tuple[bytes, PrivateKey]:
    """A signed one-node repository CAR whose node holds ``keys`` as written (unchecked)."""
    signer = PrivateKey.generate("k256")
    record = cbor.encode({"$type": "com.example.thing"})
    rec_cid = CID.for_dag_cbor(record)
    node = encode_node(keys, [rec_cid] * len(keys), [None] * (len(keys) + 1))
    node_cid = CID.for_dag_cbor(node)
    commit = sign_commit("did:plc:ewvi7nxzyoun6zhxrhs64oiz", node_cid, "3kabcdefghij2", signer)
    blocks = [(commit.cid, commit.raw), (node_cid, node), (rec_cid, record)]
    return write_car([commit.cid], blocks), signer


def test_signed_repo_with_newline_key_is_refused() -> None:
    """The reported symptom: a signed CAR verified and ``car ls`` printed a forged line."""
    data, signer = _signed_car([b"com.example/a\ncom.example/forged"])
    with pytest.raises(InvalidMST, match=r"exactly one '/'"):
        list(verify_repo_car(io.BytesIO(data), key=signer.public_key))
    # Through the console script: every command that prints keys fails before printing one.
    atrepo = str(Path(sys.executable).parent / "atrepo")
    key = ["--key", signer.public_key.did_key()]
    for args in (["verify", "-", *key], ["ls", "-", *key], ["export", "-", *key], ["diff", "-", "-"]):
        proc = subprocess.run(
            [atrepo, "car", *args],
            input=data,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc
        assert proc.stdout == b"", proc.stdout
        assert b"InvalidMST" in proc.stderr and b"\\n" in proc.stderr, proc.stderr


def test_long_shared_prefix_is_refused_before_keys_are_built() -> None:
    """A long first key reused as every entry's prefix must not build 256 long keys.

    Regression: a ~2 MB node made the decoder build 256 keys of up to 2 MB
    (about 1 GB) before the key limit was checked, and the error quoted the
    whole key.
    """
    first = b"com.example/" + b"x" * 2_000_000
    entries = [{"k": first, "p": 0, "t": None, "v": VAL}]
    entries += [{"k": bytes([c]), "p": len(first), "t": None, "v": VAL} for c in range(1, 256)]
    data = cbor.encode(_node(entries))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidMST, match="2000012 bytes, more than 1024") as info:
            decode_node(data, CID.for_dag_cbor(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(data), peak  # the decoded node, not 256 copies of its first key
    assert len(str(info.value)) < 400
    # A prefix within the limit but a suffix that takes the key over it.
    ok = b"com.example/" + b"x" * 1000
    entries = [{"k": ok, "p": 0, "t": None, "v": VAL}, {"k": b"y" * 100, "p": 1000, "t": None, "v": VAL}]
    _expect(_node(entries), "entry 1 key .*1100 bytes, more than 1024")


@pytest.mark.parametrize(
    "key", [b"com.example/" + b"x" * 2_000_000, b"com.example/" + b"\xff" * 5_000], ids=["long", "bad"]
)
def test_error_messages_quote_keys_briefly(key: bytes) -> None:
    """Messages show at most about 100 bytes of a hostile key, with its length."""
    data = cbor.encode(_node([{"k": key, "p": 0, "t": None, "v": VAL}]))
    with pytest.raises(InvalidMST) as info:
        decode_node(data)
    assert len(str(info.value)) < 300 and f"{len(key)} bytes" in str(info.value)
    with pytest.raises(InvalidMST) as info:
        MST.build([(key, VAL)])
    assert len(str(info.value)) < 300 and f"{len(key)} bytes" in str(info.value)


def test_key_length_limit_is_inclusive() -> None:
    key = b"com.example/" + b"x" * 1012
    assert len(key) == limits.MAX_MST_KEY_BYTES
    layer = key_layer(key)
    node = decode_node(cbor.encode(_node(_entries([key], [None]))))
    assert node.keys == [key] and node.layer == layer


def test_dot_segments_inside_names_are_fine() -> None:
    for key in (b"com.example/.a", b"com.example/a..", b"...x/..."):
        assert decode_node(cbor.encode(_node(_entries([key])))).keys == [key]


def test_keys_of_one_layer_per_node() -> None:
    _expect(_node(_entries([_ex("A0"), _ex("B1")])), r"has layer 1 but the node's .*\b0\b", key=_ex("B1"))
    _expect(_node(_entries([_ex("A2"), _ex("B2"), _ex("C3")])), "has layer 3 but the node's", key=_ex("C3"))
    _expect(_node(_entries([_ex("A3"), _ex("B2"), _ex("C3")])), "has layer 2 but the node's", key=_ex("B2"))


def test_layer_zero_node_has_no_children() -> None:
    child = CID.for_dag_cbor(b"\xa0")
    _expect(_node(_entries([_ex("A0"), _ex("B0")]), left=child), "layer-0 node has a subtree link")
    _expect(_node(_entries([_ex("A0"), _ex("B0")], [None, child])), "layer-0 node has a subtree link")
    _expect(_node(_entries([_ex("A0"), _ex("B0")], [child, None])), "layer-0 node has a subtree link")


def test_entry_limit_real_node() -> None:
    cap = limits.MAX_MST_NODE_ENTRIES
    keys = _same_layer(cap + 1)
    ok = encode_node(keys[:cap], [VAL] * cap, [None] * (cap + 1))
    assert len(decode_node(ok).keys) == cap
    over = encode_node(keys, [VAL] * (cap + 1), [None] * (cap + 2))
    _expect(over, "MAX_MST_NODE_ENTRIES", error=LimitExceeded)


def test_layer_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = cbor.encode(_node(_entries([_ex("A5")])))
    decode_node(data)
    monkeypatch.setattr(limits, "MAX_MST_LAYER", 4)
    _expect(data, "MAX_MST_LAYER", error=LimitExceeded)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "not valid DAG-CBOR: empty input"),
        (b"\xa2", "not valid DAG-CBOR"),
        (b"\xff", "not valid DAG-CBOR"),
        (cbor.encode({"e": [], "l": None}) + b"\x00", "not valid DAG-CBOR: trailing bytes"),
        (b"\xa2\x61l\xf6\x61e\x80", "not valid DAG-CBOR: map keys not in canonical order"),
        (b"\xa2\x61e\x9f\xff\x61l\xf6", "not valid DAG-CBOR: indefinite-length"),
        (b"\xa2\x61e\x80\x61l\xfb\x00\x00\x00\x00\x00\x00\x00\x00", "l must be null or a dag-cbor"),
    ],
    ids=["empty", "truncated", "break", "trailing", "key-order", "indefinite", "float"],
)
def test_not_dag_cbor(data: bytes, rule: str) -> None:
    _expect(data, rule)


def test_float_prefix_length() -> None:
    data = bytearray(cbor.encode(_node(_entries([b"com.example/a"]))))
    at = data.index(b"\x61p\x00")
    data[at + 2 : at + 3] = b"\xfb" + bytes(8)
    _expect(bytes(data), r"entry 0 .*wrong type")


# --- rules that need the tree around a node -----------------------------------


class Blocks:
    """A block map filled with node dicts."""

    def __init__(self) -> None:
        self.map = BlockMap()

    def add(self, value: dict[str, Any]) -> CID:
        return self.map.add(cbor.encode(value))

    def leaf(self, *names: str) -> CID:
        return self.add(_node(_entries([_ex(n) for n in names])))


def _read_all(tree: MST) -> None:
    list(tree.walk())


def _read_key(key: bytes) -> list[Any]:
    """Lookups and writes along ``key``'s path (writes must validate what they read, too)."""
    return [
        lambda tree: tree.get(key),
        lambda tree: tree.set(key, VAL).root_cid,
        lambda tree: tree.set(key, SHA512_LINK).root_cid,
        lambda tree: tree.delete(key).root_cid,
        lambda tree: tree.path(key),
    ]


def _expect_tree(
    blocks: Blocks, root: CID, pattern: str, bad: CID | None, readers: list[Any] | None = None
) -> None:
    """Loading and reading (walk, reverse walk, get) fails naming the rule and node."""
    readers = readers or []
    all_readers = [
        _read_all,
        lambda t: list(t.walk(reverse=True)),
        lambda t: list(t.nodes()),
        *readers,
    ]
    for read in all_readers:
        with pytest.raises(InvalidMST) as info:
            read(MST.load(blocks.map, root))
        assert re.search(pattern, str(info.value)), str(info.value)
        if bad is not None:
            assert str(bad) in str(info.value)


def test_valid_tree_with_entry_less_intermediate() -> None:
    b = Blocks()
    low = b.leaf("A0")
    mid = b.add(_node([], left=low))
    root = b.add(_node(_entries([_ex("C2")]), left=mid))
    tree = MST.load(b.map, root)
    assert [k for k, _ in tree.walk()] == [_ex("A0").decode(), _ex("C2").decode()]
    assert MST.build([(k, VAL) for k in (_ex("A0"), _ex("C2"))]).root_cid == root


def test_child_at_wrong_layer() -> None:
    b = Blocks()
    child = b.leaf("A0")  # layer 0 where layer 1 belongs
    root = b.add(_node(_entries([_ex("C2")]), left=child))
    _expect_tree(b, root, "keys at layer 0 where layer 1 belongs", child, _read_key(_ex("A0")))
    b2 = Blocks()
    child2 = b2.leaf("A2")  # same layer as its parent
    root2 = b2.add(_node(_entries([_ex("C2")]), left=child2))
    # Deleting A2 itself only consults the layer-2 root, so probe with a lower key too.
    readers = [*_read_key(_ex("A0")), lambda t: t.set(_ex("A2"), VAL)]
    _expect_tree(b2, root2, "keys at layer 2 where layer 1 belongs", child2, readers)
    # A layer-2 key absent from the layer-2 root is absent: the lookup reads nothing below.
    assert MST.load(b2.map, root2).get(_ex("A2")) is None


def test_child_at_wrong_layer_below_entry_less_node() -> None:
    b = Blocks()
    child = b.leaf("A1")  # reached through an entry-less layer-1 node: must be layer 0
    mid = b.add(_node([], left=child))
    root = b.add(_node(_entries([_ex("C2")]), left=mid))
    _expect_tree(b, root, "keys at layer 1 where layer 0 belongs", child, _read_key(_ex("A0")))
    # A1's lookup stops at the layer-1 node: the bad child below is never read.
    assert MST.load(b.map, root).get(_ex("A1")) is None


def test_child_keys_outside_parent_range() -> None:
    b = Blocks()
    above = b.leaf("C0")  # left of B1 but greater than it
    root = b.add(_node(_entries([_ex("B1")]), left=above))
    _expect_tree(b, root, "outside the range its parent gives", above, _read_key(_ex("A0")))
    b2 = Blocks()
    below = b2.leaf("A0")  # right of B1 but smaller than it
    root2 = b2.add(_node(_entries([_ex("B1")], [below])))
    _expect_tree(b2, root2, "outside the range its parent gives", below, _read_key(_ex("C0")))
    b3 = Blocks()
    past = b3.leaf("E0")  # between B1 and D1 is the slot; E0 lies past D1
    root3 = b3.add(_node(_entries([_ex("B1"), _ex("D1")], [past, None])))
    _expect_tree(b3, root3, "outside the range its parent gives", past, _read_key(_ex("C0")))


def test_one_child_in_two_slots() -> None:
    """Reusing a subtree CID in two gaps (a DAG, not a tree) breaks the ranges."""
    b = Blocks()
    shared = b.leaf("A0")
    root = b.add(_node(_entries([_ex("B1")], [shared]), left=shared))
    _expect_tree(b, root, "outside the range its parent gives", shared)


def test_range_is_inherited_through_levels() -> None:
    """A grandchild must also respect bounds set two levels up."""
    b = Blocks()
    # root D2 ; left -> layer-1 [B1] ; B1.t -> layer-0 [E0] (E > D: outside the root's bound)
    bad = b.leaf("E0")
    mid = b.add(_node(_entries([_ex("B1")], [bad])))
    root = b.add(_node(_entries([_ex("D2")]), left=mid))
    _expect_tree(b, root, "outside the range its parent gives", bad, _read_key(_ex("C0")))


def test_entry_less_node_at_layer_zero() -> None:
    b = Blocks()
    leaf = b.leaf("A0")
    hollow = b.add(_node([], left=leaf))  # layer-0 position, no entries
    root = b.add(_node(_entries([_ex("B1")]), left=hollow))
    _expect_tree(b, root, "entry-less node at layer 0", hollow, _read_key(_ex("A0")))
    b2 = Blocks()
    empty = b2.add(_node([]))
    assert empty == EMPTY_MST_ROOT
    root2 = b2.add(_node(_entries([_ex("B1")]), left=empty))
    _expect_tree(b2, root2, "entry-less node at layer 0", empty, _read_key(_ex("A0")))


def test_entry_less_leaf_above_layer_zero() -> None:
    b = Blocks()
    empty = b.add(_node([]))
    root = b.add(_node(_entries([_ex("C2")]), left=empty))
    _expect_tree(b, root, "entry-less node without a subtree", empty, _read_key(_ex("A0")))


def test_untrimmed_root_rejected_by_strict_shape() -> None:
    b = Blocks()
    leaf = b.leaf("A0")
    root = b.add(_node([], left=leaf))
    with pytest.raises(InvalidMST, match="must be trimmed") as info:
        MST.load(b.map, root, strict_shape=True)
    assert str(root) in str(info.value)
    deeper = b.add(_node([], left=root))
    with pytest.raises(InvalidMST, match="must be trimmed"):
        MST.load(b.map, deeper, strict_shape=True)


def test_untrimmed_root_accepted_by_default() -> None:
    """The reference can leave entry-less nodes over the root; they are read, flagged, never written."""
    b = Blocks()
    leaf = b.leaf("A0")
    root = b.add(_node([], left=leaf))
    deeper = b.add(_node([], left=root))
    for top, layer in ((root, 1), (deeper, 2)):
        tree = MST.load(b.map, top)
        assert not tree.canonical and tree.layer == layer and tree.root_cid == top
        assert [k for k, _ in tree.walk()] == [_ex("A0").decode()]
        assert tree.get(_ex("A0")) == VAL
        assert MST.load(b.map, leaf).untrimmed_depth(top) == layer
        # Any change trims: the top is never written back untrimmed.
        for changed in (tree.set(_ex("B0"), VAL), tree.set(_ex("A0"), VAL), tree.set(_ex("C2"), VAL)):
            assert changed.canonical
            assert changed.root_cid == MST.build(sorted(changed.walk())).root_cid
        assert tree.delete(_ex("A0")).is_empty()


def test_untrimmed_chain_must_reach_keys() -> None:
    """Entry-less all the way down is not an untrimmed tree: some node must hold keys."""
    b = Blocks()
    empty = b.add(_node([]))
    top = b.add(_node([], left=empty))
    with pytest.raises(InvalidMST, match="entry-less node without a subtree"):
        MST.load(b.map, top)


def test_block_must_hash_to_its_cid() -> None:
    b = Blocks()
    good = cbor.encode(_node(_entries([_ex("A0")])))
    other = cbor.encode(_node(_entries([_ex("B0")])))
    cid = CID.for_dag_cbor(good)
    b.map.put(cid, other)
    with pytest.raises(InvalidMST, match="does not hash to its CID") as info:
        MST.load(b.map, cid)
    assert str(cid) in str(info.value)
    # The same for a child block.
    b2 = Blocks()
    child_cid = CID.for_dag_cbor(good)
    b2.map.put(child_cid, other)
    root = b2.add(_node(_entries([_ex("B1")]), left=child_cid))
    _expect_tree(b2, root, "does not hash to its CID", child_cid, _read_key(_ex("A0")))


def test_missing_blocks_name_the_cid() -> None:
    b = Blocks()
    absent = CID.for_dag_cbor(cbor.encode(_node(_entries([_ex("A0")]))))
    with pytest.raises(MissingBlock) as info:
        MST.load(b.map, absent)
    assert info.value.cid == absent and str(absent) in str(info.value)
    root = b.add(_node(_entries([_ex("B1")]), left=absent))
    tree = MST.load(b.map, root)
    assert tree.get(_ex("B1")) == VAL  # the missing child is not on this path
    assert tree.get(_ex("C0")) is None
    for read in (_read_all, lambda t: t.get(_ex("A0")), lambda t: t.set(_ex("A0"), VAL)):
        with pytest.raises(MissingBlock) as info:
            read(tree)
        assert info.value.cid == absent and str(absent) in str(info.value)


def test_root_link_must_be_dag_cbor() -> None:
    for cid in (RAW_LINK, SHA512_LINK):
        with pytest.raises(InvalidMST, match="dag-cbor"):
            MST.load(BlockMap(), cid)


# --- limits on writes leave the tree untouched --------------------------------


def test_over_full_insert_leaves_tree_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small limit to cover the nested cases: the limit hits deep in the tree."""
    keys = sorted(_EXAMPLES)
    tree = MST.build([(k, VAL) for k in keys])
    loaded = MST.load(tree.new_blocks(), tree.root_cid)
    monkeypatch.setattr(limits, "MAX_MST_NODE_ENTRIES", 26)
    before = (tree.root_cid, list(tree.walk()))
    for start in (tree, loaded):
        # The root holds all 26 layer-5 example keys: one more is refused.
        full = [(cid, node, layer) for cid, node, layer in start.nodes() if len(node.keys) >= 26]
        assert full
        _cid, node, layer = full[0]
        candidate = _key_in_range(node.keys[0], node.keys[1], layer)
        with pytest.raises(LimitExceeded, match="MAX_MST_NODE_ENTRIES"):
            start.set(candidate, VAL)
        assert (start.root_cid, list(start.walk())) == before


def _key_in_range(lo: bytes, hi: bytes, layer: int) -> bytes:
    """A key strictly between lo and hi with the given layer."""
    i = 0
    while True:
        key = lo + b"x" + str(i).encode()
        if key_layer(key) == layer and lo < key < hi:
            return key
        i += 1


# --- garbage in, AtrepoError out ------------------------------------------------


def _valid_node_bytes() -> list[bytes]:
    b = Blocks()
    leaf = b.leaf("A0", "B0", "C0")
    out = [
        cbor.encode(_node(_entries([_ex("A0"), _ex("B0"), _ex("C0")]))),
        cbor.encode(_node(_entries([_ex("D1"), _ex("E1")], [leaf, None]), left=leaf)),
        cbor.encode(_node([], left=leaf)),
        cbor.encode(_node([])),
        encode_node(_same_layer(30), [VAL] * 30, [None] * 31),
    ]
    return out


_SEEDS = _valid_node_bytes()


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


def _decode_or_atrepo_error(data: bytes) -> None:
    try:
        node = decode_node(data, CID.for_dag_cbor(data))
    except AtrepoError:
        return
    # Whatever decodes must re-encode to the same bytes (canonical form).
    assert node.encode() == data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_nodes_raise_only_atrepo_errors(data: bytes) -> None:
    _decode_or_atrepo_error(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_atrepo_errors(data: bytes) -> None:
    _decode_or_atrepo_error(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_child_in_tree_raises_only_atrepo_errors(data: bytes) -> None:
    b = Blocks()
    child = b.map.add(data)
    root = b.add(_node(_entries([_ex("F2")]), left=child))
    tree = MST.load(b.map, root)
    for read in (_read_all, lambda t: t.get(_ex("A0")), lambda t: t.set(_ex("A1"), VAL)):
        with contextlib.suppress(AtrepoError):
            read(tree)
