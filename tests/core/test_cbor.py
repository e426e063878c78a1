"""Strict DAG-CBOR: canonical encoding, strict decoding with located errors, fuzzing."""

from __future__ import annotations

import contextlib
import hashlib
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, datamodel, limits
from atrepo.core.cid import CID
from atrepo.core.datamodel import value_to_json
from atrepo.core.errors import AtrepoError, InvalidCBOR, InvalidDataModel, LimitExceeded

DIGEST = hashlib.sha256(b"atrepo").digest()
LINK = CID(b"\x01\x71\x12\x20" + DIGEST)
RAW_LINK = CID(b"\x01\x55\x12\x20" + DIGEST)
#: The tag-42 encoding of ``LINK``: tag, 37-byte string, 0x00 prefix, binary CID.
LINK_CBOR = bytes.fromhex("d82a58250001711220") + DIGEST


def h(text: str) -> bytes:
    """Hex with optional spaces, for readable hand-made encodings."""
    return bytes.fromhex(text.replace(" ", ""))


def rejected(data: bytes, **kwargs: Any) -> InvalidCBOR:
    """Decode ``data``, expecting ``InvalidCBOR``; return the error."""
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode(data, **kwargs)
    return info.value


def canonical_key(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8")
    return len(raw), raw


# --- encoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hexed"),
    [
        (None, "f6"),
        (False, "f4"),
        (True, "f5"),
        (0, "00"),
        (1, "01"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (limits.MAX_INT, "1b7fffffffffffffff"),
        (-1, "20"),
        (-24, "37"),
        (-25, "3818"),
        (-256, "38ff"),
        (-257, "390100"),
        (-(2**32), "3affffffff"),
        (-(2**32) - 1, "3b0000000100000000"),
        (limits.MIN_INT, "3b7fffffffffffffff"),
        (b"", "40"),
        (b"\x01\x02", "420102"),
        (b"x" * 24, "5818" + "78" * 24),
        ("", "60"),
        ("a", "6161"),
        ("ü", "62c3bc"),
        ("😀", "64f09f9880"),
        ([], "80"),
        ([1, [2, None]], "8201 8202f6"),
        ({}, "a0"),
        ({"a": 1, "b": []}, "a2 6161 01 6162 80"),
        ({"bb": 1, "a": 2, "c": 3}, "a3 6161 02 6163 03 626262 01"),
        (list(range(24)), "9818" + "".join(f"{i:02x}" for i in range(24))),
    ],
)
def test_encode_exact_bytes(value: Any, hexed: str) -> None:
    data = cbor.encode(value)
    assert data == h(hexed)
    assert cbor.decode(data) == value


def test_encode_cid_link() -> None:
    assert cbor.encode(LINK) == LINK_CBOR
    assert cbor.encode({"l": LINK}) == h("a1 616c") + LINK_CBOR
    assert cbor.encode(RAW_LINK) == h("d82a58250001551220") + DIGEST
    assert cbor.decode(LINK_CBOR) == LINK


def test_encode_non_blessed_cid_keeps_its_bytes() -> None:
    odd = CID(b"\x01\x70\x00\x03abc")  # dag-pb, identity hash
    assert cbor.encode(odd) == h("d82a 48 00 0170 0003") + b"abc"
    assert cbor.decode(cbor.encode(odd)) == odd


def test_encode_commit_and_blob_key_order() -> None:
    commit = {"version": 3, "prev": None, "data": LINK, "sig": b"s", "rev": "r", "did": "d"}
    assert list(cbor.decode(cbor.encode(commit))) == ["did", "rev", "sig", "data", "prev", "version"]
    blob = {"mimeType": "a/b", "$type": "blob", "size": 1, "ref": RAW_LINK}
    assert list(cbor.decode(cbor.encode(blob))) == ["ref", "size", "$type", "mimeType"]


def test_encode_key_order_is_by_utf8_length_not_code_points() -> None:
    # "é" is one code point but two UTF-8 bytes, so it sorts after "ab".
    value = {"é": 1, "ab": 2, "b": 3, "aa": 4}
    assert list(cbor.decode(cbor.encode(value))) == ["b", "aa", "ab", "é"]


def test_encode_with_cid() -> None:
    data, cid = cbor.encode_with_cid({"e": [], "l": None})
    assert data == h("a2 6165 80 616c f6")
    assert cid == CID.for_dag_cbor(data)
    assert cid.is_dag_cbor


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        0.0,
        1.0,
        float("nan"),
        float("inf"),
        -float("inf"),
        {"a": 2.5},
        [1, [2, [3.0]]],
    ],
    ids=repr,
)
def test_encode_rejects_floats(value: Any) -> None:
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {b"k": 1},
        {True: 1},
        {None: 1},
        {(1,): 1},
        {"a": 1, 2: 3},
        [{"ok": {3: 4}}],
    ],
    ids=repr,
)
def test_encode_rejects_non_str_keys(value: Any) -> None:
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


class _StrSub(str):
    pass


class _IntSub(int):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset(),
        (1, 2),
        (),
        bytearray(b"x"),
        memoryview(b"x"),
        object(),
        1j,
        _StrSub("x"),
        _IntSub(3),
        {"k": (1,)},
        [{1, 2}],
        LINK.raw.hex,
        {_StrSub("k"): 1},
    ],
    ids=lambda v: type(v).__name__,
)
def test_encode_rejects_unsupported_types(value: Any) -> None:
    """Tuples, bytearrays and subclasses are not data-model values: only exact types encode."""
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


@pytest.mark.parametrize(
    "value",
    [
        limits.MAX_INT + 1,
        limits.MIN_INT - 1,
        2**64 - 1,
        2**64,
        -(2**64),
        -(2**64) - 1,
        10**30,
        [0, {"a": 2**63}],
    ],
    ids=repr,
)
def test_encode_rejects_integers_outside_int64(value: Any) -> None:
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


@pytest.mark.parametrize(
    "value",
    ["\ud800", ["ok", "x\udfff"], {"\ud800": 1}, {"a": 1, "\ud800": 2}, {"\ud800": 1, "a": 2, "bb": 3}],
    ids=repr,
)
def test_encode_rejects_unencodable_strings(value: Any) -> None:
    """Lone surrogates have no UTF-8 form, as values or as keys (however many keys)."""
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


def _nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_encode_depth_limit_is_consistent() -> None:
    """Whether a deep value encodes must not depend on unrelated content."""
    ok = _nested(limits.MAX_CBOR_DEPTH)
    assert cbor.decode(cbor.encode(ok)) == ok
    too_deep = _nested(limits.MAX_CBOR_DEPTH + 1)
    for value in (too_deep, [too_deep[0], 2**40], _nested(limits.MAX_CBOR_DEPTH + 1, ";")):
        with pytest.raises(InvalidDataModel, match="nesting"):
            cbor.encode(value)


# --- decoding: acceptance ------------------------------------------------------


def test_decode_returns_plain_types() -> None:
    value = cbor.decode(cbor.encode({"b": b"\x00", "i": -5, "l": [True, None], "s": "x", "c": LINK}))
    assert value == {"b": b"\x00", "i": -5, "l": [True, None], "s": "x", "c": LINK}
    assert type(value["c"]) is CID
    assert type(value["b"]) is bytes


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_decode_accepts_bytes_like(wrap: Any) -> None:
    data = cbor.encode({"a": [1, LINK], "b": 2**40})
    assert cbor.decode(wrap(data)) == {"a": [1, LINK], "b": 2**40}
    assert cbor.decode_node(wrap(data)) == {"a": [1, LINK], "b": 2**40}
    assert cbor.decode_multi(wrap(data + data), 2) == [{"a": [1, LINK], "b": 2**40}] * 2


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
@pytest.mark.parametrize(
    "data",
    [h("a2 6162 01 6161 02"), h("fb 3ff0000000000000"), h("81 1b 8000000000000000"), h("62 c328")],
    ids=lambda d: d.hex(),
)
def test_decode_rejects_bytes_like(wrap: Any, data: bytes) -> None:
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode(wrap(data))
    assert info.value.offset is not None
    with pytest.raises(InvalidCBOR):
        cbor.decode_multi(wrap(data), 1)


@pytest.mark.parametrize("value", ["abc", 42, [1], None], ids=repr)
def test_decode_rejects_non_bytes_input(value: Any) -> None:
    with pytest.raises(InvalidCBOR):
        cbor.decode(value)


def test_decode_int64_bounds() -> None:
    assert cbor.decode(h("1b 7fffffffffffffff")) == limits.MAX_INT
    assert cbor.decode(h("3b 7fffffffffffffff")) == limits.MIN_INT


def test_decode_depth_boundary() -> None:
    depth = limits.MAX_CBOR_DEPTH
    assert cbor.decode(b"\x81" * depth + b"\x00") == _nested(depth)
    assert cbor.decode(b"\x81" * 3 + b"\x00", max_depth=3) == _nested(3)
    assert rejected(b"\x81" * 4 + b"\x00", max_depth=3).offset == 3


def test_decode_large_valid_input_is_prescanned_and_accepted() -> None:
    blob = bytes(range(256)) * 400  # > CBOR_PRESCAN_BYTES, holds every byte value
    value = {"blob": blob, "links": [LINK] * 100, "n": list(range(2000))}
    data = cbor.encode(value)
    assert len(data) > limits.CBOR_PRESCAN_BYTES
    assert cbor.decode(data) == value
    assert cbor.decode_node(data) == value
    assert cbor.decode_multi(data + cbor.encode(1), 2) == [value, 1]


# --- decoding: located rejections -----------------------------------------------

LOCATED = [
    # floats, every width (inside an array, so the offset is not 0)
    ("float16", "82 01 f9 3c00", 2),
    ("float32", "82 01 fa 3f800000", 2),
    ("float64", "82 01 fb 3ff0000000000000", 2),
    ("float64 NaN", "fb 7ff8000000000000", 0),
    ("float64 infinity", "fb 7ff0000000000000", 0),
    ("float64 zero", "a1 6161 fb 0000000000000000", 3),
    # map keys
    ("keys out of bytewise order", "a2 6162 01 6161 02", 4),
    ("longer key first", "a2 626262 01 6161 02", 5),
    ("duplicate key", "a2 6161 01 6161 02", 4),
    ("duplicate empty key", "a2 60 01 60 02", 3),
    ("nested bad order", "82 00 a2 6162 01 6161 02", 6),
    ("integer key", "a1 01 02", 1),
    ("negative integer key", "a1 20 02", 1),
    ("bytes key", "a1 4161 02", 1),
    ("array key", "a1 80 02", 1),
    ("map key", "a1 a0 02", 1),
    ("null key", "a1 f6 02", 1),
    ("cid key", "a1 d82a 4100 02", 1),
    ("second key not a string", "a2 6161 01 01 02", 4),
    # indefinite lengths
    ("indefinite array", "9f ff", 0),
    ("indefinite map", "bf ff", 0),
    ("indefinite bytes", "5f 4100 ff", 0),
    ("indefinite text", "7f 6161 ff", 0),
    ("nested indefinite array", "81 9f 01 ff", 1),
    ("break byte", "82 01 ff", 2),
    ("reserved info 28", "1c", 0),
    ("reserved info 29 in array", "81 3d", 1),
    ("reserved info 30", "5e", 0),
    # non-minimal integers, every width
    ("uint 1-byte for 23", "18 17", 0),
    ("uint 2-byte for 255", "19 00ff", 0),
    ("uint 4-byte for 65535", "1a 0000ffff", 0),
    ("uint 8-byte for 2^32-1", "1b 00000000ffffffff", 0),
    ("nint 1-byte", "38 00", 0),
    ("nint 2-byte", "39 00ff", 0),
    ("nint 4-byte", "3a 0000ffff", 0),
    ("nint 8-byte", "3b 00000000ffffffff", 0),
    ("nested non-minimal", "82 00 18 05", 2),
    # non-minimal lengths
    ("text length", "78 01 61", 0),
    ("bytes length", "58 01 00", 0),
    ("bytes length 2-byte", "59 0001 00", 0),
    ("array length", "98 01 00", 0),
    ("array length 4-byte", "9a 00000001 00", 0),
    ("map length", "b8 01 6161 00", 0),
    ("map key length", "a1 78 01 61 00", 1),
    # tags
    ("tag 0", "c0 60", 0),
    ("tag 1", "c1 00", 0),
    ("tag 41", "d8 29 40", 0),
    ("tag 43", "d8 2b 40", 0),
    ("big tag", "da 00010000 40", 0),
    ("tag 42 non-minimal", "d9 002a 4100", 0),
    ("tag 42 nested", "d8 2a d8 2a 4100", 2),
    ("tag 42 on text", "d8 2a 6100", 2),
    ("tag 42 on int", "82 00 d8 2a 00", 4),
    ("tag 42 empty payload", "d8 2a 40", 2),
    ("tag 42 without 0x00", "d8 2a 58 24 01711220" + DIGEST.hex(), 2),
    ("tag 42 prefix 0x01", "d8 2a 58 25 01 01711220" + DIGEST.hex(), 2),
    ("tag 42 only prefix", "d8 2a 41 00", 2),
    ("tag 42 CID version 2", "d8 2a 58 25 00 02711220" + DIGEST.hex(), 2),
    ("tag 42 CID version 0 byte", "d8 2a 58 25 00 00711220" + DIGEST.hex(), 2),
    ("tag 42 CIDv0", "d8 2a 58 23 00 1220" + DIGEST.hex(), 2),
    ("tag 42 truncated digest", "d8 2a 58 24 00 01711220" + DIGEST[:31].hex(), 2),
    ("tag 42 over-long digest", "d8 2a 58 26 00 01711220" + DIGEST.hex() + "00", 2),
    ("tag 42 truncated header", "d8 2a 43 00 0171", 2),
    ("tag 42 bad varint", "d8 2a 45 00 01 ff ff ff", 2),
    ("tag 42 CID over 100 bytes", "d8 2a 58 6a 00 01 55 00 65" + "ab" * 101, 2),
    ("tag 42 in map value", "a1 6163 d8 2a 41 01", 5),
    # trailing bytes
    ("trailing byte", "01 02", 1),
    ("trailing after map", "a0 a0", 1),
    ("trailing zero", "8100 00", 2),
    # invalid UTF-8
    ("bad utf-8 text", "62 c328", 0),
    ("overlong utf-8", "62 c080", 0),
    ("surrogate utf-8", "63 eda080", 0),
    ("truncated utf-8", "61 e2", 0),
    ("bad utf-8 in key", "a1 61 ff 01", 1),
    ("bad utf-8 nested", "82 00 61 80", 2),
    # simple values
    ("undefined", "f7", 0),
    ("simple 16", "f0", 0),
    ("simple 0", "e0", 0),
    ("simple 19", "f3", 0),
    ("simple(16) 1-byte form", "f8 10", 0),
    ("simple 255", "f8 ff", 0),
    ("undefined in map", "a1 6161 f7", 3),
    # integers outside int64
    ("uint 2^63", "1b 8000000000000000", 0),
    ("uint 2^64-1", "1b ffffffffffffffff", 0),
    ("nint -2^63-1", "3b 8000000000000000", 0),
    ("nint -2^64", "3b ffffffffffffffff", 0),
    ("big int in map", "a1 6161 1b 8000000000000000", 3),
    # lengths past the end
    ("array longer than input", "83 01 02", 0),
    ("map longer than input", "a2 6161 01", 4),
    ("huge array length", "9b 7fffffffffffffff", 0),
    ("huge bytes length", "5b 7fffffffffffffff 00", 0),
    ("text past end", "63 6161", 0),
]


@pytest.mark.parametrize(("hexed", "offset"), [(c[1], c[2]) for c in LOCATED], ids=[c[0] for c in LOCATED])
def test_decode_rejects_with_offset(hexed: str, offset: int) -> None:
    data = h(hexed)
    error = rejected(data)
    assert error.offset == offset, str(error)
    assert f"at byte {offset}" in str(error)
    # the pure-Python scanner agrees, and so do the other decoders
    with pytest.raises(InvalidCBOR):
        cbor._scan(data, 0, limits.MAX_CBOR_DEPTH, whole=True)
    with pytest.raises(InvalidCBOR):
        cbor.decode_multi(data, 1)


@pytest.mark.parametrize(
    ("hexed", "words"),
    [
        ("fa 3f800000", "float"),
        ("a2 6162 01 6161 02", "order"),
        ("a2 6161 01 6161 02", "duplicate"),
        ("a1 01 02", "key"),
        ("9f ff", "indefinite"),
        ("18 17", "minimal"),
        ("c0 60", "tag"),
        ("d8 2a 41 00", "CID"),
        ("01 02", "trailing"),
        ("62 c328", "UTF-8"),
        ("f7", "simple"),
        ("1b 8000000000000000", "64-bit"),
        ("a1 6161", "end of input"),
    ],
)
def test_decode_error_says_what(hexed: str, words: str) -> None:
    assert words in str(rejected(h(hexed)))


def test_decode_rejects_empty_input() -> None:
    assert rejected(b"").offset == 0


def test_decode_rejects_float_in_deep_position_and_large_input() -> None:
    big = cbor.encode([b"\x00" * (limits.CBOR_PRESCAN_BYTES + 10), 0])
    # replace the final integer 0 by a float64 1.0
    data = big[:-1] + h("fb 3ff0000000000000")
    assert rejected(data).offset == len(big) - 1


@pytest.mark.parametrize("opener", [b"\x81", b"\xa1\x61a"], ids=["arrays", "maps"])
def test_decode_rejects_deep_nesting_small_input(opener: bytes) -> None:
    depth = limits.MAX_CBOR_DEPTH + 1
    data = opener * depth + b"\x00"
    assert len(data) <= limits.CBOR_PRESCAN_BYTES
    error = rejected(data)
    assert error.offset == limits.MAX_CBOR_DEPTH * len(opener)
    assert "nesting" in str(error)


@pytest.mark.parametrize("count", [100_000, limits.CBOR_PRESCAN_BYTES + 1, 2_000_000])
def test_decode_rejects_deep_nesting_large_input(count: int) -> None:
    """Huge nesting is refused by the pre-scan before the C decoder builds anything."""
    data = b"\x81" * count + b"\x00"
    assert len(data) > limits.CBOR_PRESCAN_BYTES
    for decoder in (cbor.decode, cbor.decode_node):
        with pytest.raises(InvalidCBOR) as info:
            decoder(data)
        assert info.value.offset == limits.MAX_CBOR_DEPTH
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(data, 2)
    assert info.value.offset == limits.MAX_CBOR_DEPTH


def test_decode_deep_nesting_large_input_uses_little_memory() -> None:
    data = b"\x81" * 2_000_000 + b"\x00"
    tracemalloc.start()
    try:
        with pytest.raises(InvalidCBOR):
            cbor.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # nothing proportional to the input was built


def test_decode_rejects_deep_nesting_behind_large_prefix() -> None:
    prefix = h("82 5a") + (limits.CBOR_PRESCAN_BYTES).to_bytes(4, "big") + b"\x00" * limits.CBOR_PRESCAN_BYTES
    data = prefix + b"\x81" * 1000 + b"\x00"
    assert rejected(data).offset == len(prefix) + limits.MAX_CBOR_DEPTH - 1


def test_decode_node_still_canonical() -> None:
    for hexed in ("a2 6162 01 6161 02", "18 17", "9f ff", "c0 60", "01 02", "d8 2a 41 00", "62 c328"):
        with pytest.raises(InvalidCBOR) as info:
            cbor.decode_node(h(hexed))
        assert info.value.offset is not None


def test_size_limit() -> None:
    big = cbor.encode(b"\x00" * limits.MAX_CBOR_BYTES)
    with pytest.raises(LimitExceeded) as info:
        cbor.decode(big)
    assert info.value.limit == "MAX_CBOR_BYTES"
    assert info.value.maximum == limits.MAX_CBOR_BYTES
    assert info.value.value == len(big)
    for decoder in (cbor.decode_node, lambda d: cbor.decode_multi(d, 1)):
        with pytest.raises(LimitExceeded):
            decoder(big)


def test_size_limit_override() -> None:
    data = cbor.encode("x" * 8)  # 9 bytes
    assert cbor.decode(data, max_bytes=9) == "x" * 8
    assert cbor.decode_node(data, max_bytes=9) == "x" * 8
    assert cbor.decode_multi(data, 1, max_bytes=9) == ["x" * 8]
    with pytest.raises(LimitExceeded) as info:
        cbor.decode(data, max_bytes=8)
    assert (info.value.value, info.value.maximum) == (9, 8)
    with pytest.raises(LimitExceeded):
        cbor.decode_node(data, max_bytes=8)
    with pytest.raises(LimitExceeded):
        cbor.decode_multi(data, 1, max_bytes=8)
    # a larger limit lets larger inputs through
    huge = cbor.encode(b"\x00" * limits.MAX_CBOR_BYTES)
    assert cbor.decode(huge, max_bytes=len(huge)) == b"\x00" * limits.MAX_CBOR_BYTES


RICH = {
    "text": "héllo wörld",
    "n": [0, 23, 24, 255, 256, 65536, 2**32, -1, -25, limits.MIN_INT, limits.MAX_INT],
    "b": b"\x00\xff" * 20,
    "cid": LINK,
    "nested": {"a": [{}, [], None, True, False], "bb": {"c": RAW_LINK}},
    "": "",
}


def test_truncated_at_every_position() -> None:
    data = cbor.encode(RICH)
    assert cbor.decode(data) == RICH
    for cut in range(len(data)):
        with pytest.raises(InvalidCBOR) as info:
            cbor.decode(data[:cut])
        offset = info.value.offset
        assert offset is not None and 0 <= offset <= cut, (cut, str(info.value))
        with pytest.raises(InvalidCBOR):
            cbor.decode_node(data[:cut])


# --- decode_multi ---------------------------------------------------------------


def test_decode_multi_two_items() -> None:
    header = cbor.encode({"op": 1, "t": "#commit"})
    body = cbor.encode({"seq": 5, "blocks": b"\x00" * 40, "commit": LINK})
    assert cbor.decode_multi(header + body, 2) == [{"op": 1, "t": "#commit"}, cbor.decode(body)]


def test_decode_multi_counts() -> None:
    one = cbor.encode({"op": 1})
    with pytest.raises(InvalidCBOR, match="expected 2 items, found 1") as info:
        cbor.decode_multi(one, 2)
    assert info.value.offset == len(one)
    with pytest.raises(InvalidCBOR, match="trailing") as info:
        cbor.decode_multi(one * 3, 2)
    assert info.value.offset == 2 * len(one)
    assert cbor.decode_multi(one * 3, 3) == [{"op": 1}] * 3
    with pytest.raises(InvalidCBOR):
        cbor.decode_multi(b"", 2)


@pytest.mark.parametrize("garbage", ["ff", "f7", "1c", "18 17", "63 6161", "c0 00"])
def test_decode_multi_garbage_between(garbage: str) -> None:
    one = cbor.encode({"op": 1})
    data = one + h(garbage) + one
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(data, 2)
    assert info.value.offset == len(one)


def test_decode_multi_bad_first_item() -> None:
    one = cbor.encode({"op": 1})
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(h("a2 6162 01 6161 02") + one, 2)
    assert info.value.offset == 4


def test_decode_multi_checks_values() -> None:
    one = cbor.encode({"op": 1})
    for bad in ("fb 3ff0000000000000", "1b 8000000000000000"):
        with pytest.raises(InvalidCBOR) as info:
            cbor.decode_multi(one + h(bad), 2)
        assert info.value.offset == len(one)
    deep = b"\x81" * (limits.MAX_CBOR_DEPTH + 1) + b"\x00"
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(one + deep, 2)
    assert info.value.offset == len(one) + limits.MAX_CBOR_DEPTH


def test_decode_multi_large_frame() -> None:
    header = cbor.encode({"op": 1, "t": "#commit"})
    body = cbor.encode({"blocks": bytes(range(256)) * 1000, "ops": [{"cid": LINK}] * 50})
    assert len(body) > limits.CBOR_PRESCAN_BYTES
    assert cbor.decode_multi(header + body, 2)[1] == cbor.decode(body)
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(header + body + b"\x00", 2)
    assert info.value.offset == len(header) + len(body)
    with pytest.raises(InvalidCBOR) as info:
        cbor.decode_multi(header + body[:-1], 2)
    assert info.value.offset is not None


# --- decode_to_json ------------------------------------------------------------------


def test_decode_to_json_forms() -> None:
    value = {"b": b"\x00\x01\x02\x03", "l": LINK, "n": [1, None, True, "s"], "m": {"x": {}}}
    expected = {
        "b": {"$bytes": "AAECAw"},
        "l": {"$link": str(LINK)},
        "n": [1, None, True, "s"],
        "m": {"x": {}},
    }
    data = cbor.encode(value)
    assert datamodel.decode_to_json(data) == expected
    assert datamodel.decode_to_json(memoryview(data)) == expected
    without_links = cbor.encode({"b": b"\xff", "k": [2**40]})
    assert datamodel.decode_to_json(without_links) == {"b": {"$bytes": "/w"}, "k": [2**40]}
    assert datamodel.decode_to_json(bytearray(without_links)) == {"b": {"$bytes": "/w"}, "k": [2**40]}


def test_decode_to_json_reserved_keys_take_the_general_path() -> None:
    value = {"$bytes": "not bytes", "$link": 1}
    assert datamodel.decode_to_json(cbor.encode(value)) == value


@pytest.mark.parametrize(("hexed", "offset"), [(c[1], c[2]) for c in LOCATED], ids=[c[0] for c in LOCATED])
def test_decode_to_json_rejects_like_decode(hexed: str, offset: int) -> None:
    with pytest.raises(InvalidCBOR) as info:
        datamodel.decode_to_json(h(hexed))
    assert info.value.offset == offset


def test_decode_to_json_limits() -> None:
    deep = b"\x81" * (limits.MAX_CBOR_DEPTH + 1) + b"\x00"
    with pytest.raises(InvalidCBOR) as info:
        datamodel.decode_to_json(deep)
    assert info.value.offset == limits.MAX_CBOR_DEPTH
    with pytest.raises(InvalidCBOR) as info:
        datamodel.decode_to_json(b"\x81" * 200_000 + b"\x00")
    assert info.value.offset == limits.MAX_CBOR_DEPTH
    record = cbor.encode({"t": "x" * limits.MAX_RECORD_BYTES})
    with pytest.raises(LimitExceeded):
        datamodel.decode_to_json(record)
    assert datamodel.decode_to_json(record, max_bytes=len(record)) == {"t": "x" * limits.MAX_RECORD_BYTES}


# --- the pure-Python scanner ------------------------------------------------------


def test_scan_returns_end_offset() -> None:
    a, b = cbor.encode(RICH), cbor.encode([1, 2])
    assert cbor._scan(a + b, 0, limits.MAX_CBOR_DEPTH, whole=False) == len(a)
    assert cbor._scan(a + b, len(a), limits.MAX_CBOR_DEPTH, whole=True) == len(a) + len(b)
    assert cbor._scan(a, 0, limits.MAX_CBOR_DEPTH, whole=True) == len(a)


# --- property tests ----------------------------------------------------------------

_cids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: CID(b"\x01\x71\x12\x20" + d)),
    st.binary(min_size=32, max_size=32).map(lambda d: CID(b"\x01\x55\x12\x20" + d)),
    st.binary(max_size=20).map(lambda d: CID(b"\x01\x70\x00" + bytes([len(d)]) + d)),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=limits.MIN_INT, max_value=limits.MAX_INT),
    st.integers(min_value=-30, max_value=300),
    st.text(max_size=20),
    st.binary(max_size=40),
    _cids,
)
values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=25,
)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_none(data: bytes) -> tuple[bool, Any]:
    try:
        return True, cbor.decode(data)
    except AtrepoError:
        return False, None


def _scan_accepts(data: bytes) -> bool:
    try:
        cbor._scan(data, 0, limits.MAX_CBOR_DEPTH, whole=True)
    except AtrepoError:
        return False
    return True


def _check_consistent(data: bytes) -> None:
    """Decoding only raises our errors; success means canonical; the scanner agrees."""
    ok, value = _decode_or_none(data)
    if ok:
        assert cbor.encode(value) == data
    assert _scan_accepts(data) == ok, data.hex()
    with contextlib.suppress(AtrepoError):
        cbor.decode_node(data)
    try:
        as_json = datamodel.decode_to_json(data)
    except AtrepoError:
        assert not ok
    else:
        assert ok
        assert as_json == value_to_json(value)


@_FAST
@given(values)
def test_property_cbor_round_trip(value: Any) -> None:
    data = cbor.encode(value)
    decoded = cbor.decode(data)
    assert decoded == value
    assert cbor.encode(decoded) == data
    assert _scan_accepts(data)
    assert datamodel.decode_to_json(data) == value_to_json(value)


@_FAST
@given(st.dictionaries(st.text(max_size=12), st.integers(0, 9), max_size=20))
def test_property_key_order(value: dict[str, int]) -> None:
    decoded = cbor.decode(cbor.encode(value))
    assert list(decoded) == sorted(value, key=canonical_key)


@_FAST
@given(st.binary(max_size=300))
def test_property_random_bytes(data: bytes) -> None:
    _check_consistent(data)


#: Pieces that look like CBOR heads (valid or nearly so), to reach deeper than random bytes.
_PIECE_HEX = """
    00 17 1817 1818 19ff00 1a00010000 1b0000000100000000 1b8000000000000000 20 3818 3b7fffffffffffffff
    40 4100 58 5801 60 6161 6162 62c3bc 61ff 78 80 81 82 83 9f a0 a1 a2 b8 bf ff
    d82a 58250001711220 c0 d829 f4 f5 f6 f7 f8 f9 fa fb 1c
"""
_PIECES = [h(x) for x in _PIECE_HEX.split()] + [LINK_CBOR, LINK_CBOR[2:], b"\x00" * 8]


@_FAST
@given(st.lists(st.sampled_from(_PIECES), max_size=16).map(b"".join))
def test_property_token_soup(data: bytes) -> None:
    _check_consistent(data)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(cbor.encode(draw(values)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        elif at < len(data):
            if kind == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":
                data[at] = draw(st.integers(0, 255))
            else:
                del data[at]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_property_mutations(data: bytes) -> None:
    _check_consistent(data)


@_FAST
@given(values, st.integers(0, 400))
def test_property_truncation(value: Any, cut: int) -> None:
    data = cbor.encode(value)
    assume(cut < len(data))
    with pytest.raises(InvalidCBOR):
        cbor.decode(data[:cut])


@_FAST
@given(st.lists(values, min_size=1, max_size=4))
def test_property_decode_multi(items: list[Any]) -> None:
    data = b"".join(cbor.encode(v) for v in items)
    assert cbor.decode_multi(data, len(items)) == items
    if len(items) > 1:
        with pytest.raises(InvalidCBOR):
            cbor.decode_multi(data, len(items) - 1)
    with pytest.raises(InvalidCBOR):
        cbor.decode_multi(data, len(items) + 1)
