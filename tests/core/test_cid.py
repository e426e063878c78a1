"""CIDs: binary and string forms, blessed checks, value semantics, strict rejection."""

from __future__ import annotations

import copy
import hashlib
import operator
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.cid import CID, CODEC_DAG_CBOR, CODEC_RAW, EMPTY_MST_ROOT, HASH_SHA256
from atrepo.core.errors import InvalidCID
from atrepo.core.multibase import b32encode, b58encode

DATA = b"hello atproto"
DIGEST = hashlib.sha256(DATA).digest()
DAG = CID(b"\x01\x71\x12\x20" + DIGEST)
RAW = CID(b"\x01\x55\x12\x20" + DIGEST)
#: A fixture CID from the interop data-model tests.
FIXTURE = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def make(codec: int, hash_code: int, digest: bytes) -> bytes:
    return b"\x01" + varint(codec) + varint(hash_code) + varint(len(digest)) + digest


# --- construction and forms ------------------------------------------------------


def test_for_dag_cbor_and_raw() -> None:
    assert CID.for_dag_cbor(DATA) == DAG
    assert CID.for_raw(DATA) == RAW
    assert str(DAG).startswith("bafyrei")
    assert str(RAW).startswith("bafkrei")
    assert len(str(DAG)) == 59
    assert DAG.raw == b"\x01\x71\x12\x20" + DIGEST
    assert bytes(DAG) == DAG.raw


def test_string_round_trip() -> None:
    cid = CID.parse(FIXTURE)
    assert str(cid) == FIXTURE
    assert cid.encode() == FIXTURE
    assert CID.parse(str(DAG)) == DAG
    assert CID(DAG.raw) == DAG
    assert repr(DAG) == f"CID({DAG})"


def test_string_form_is_b_plus_lowercase_base32() -> None:
    assert str(DAG) == "b" + b32encode(DAG.raw)
    assert str(DAG) == str(DAG).lower()
    assert "=" not in str(DAG)


def test_parse_base58btc() -> None:
    assert CID.parse("z" + b58encode(DAG.raw)) == DAG
    # the canonical string form stays base32
    assert str(CID.parse("z" + b58encode(RAW.raw))) == str(RAW)


def test_coerce() -> None:
    assert CID.coerce(DAG) is DAG
    assert CID.coerce(str(DAG)) == DAG
    assert CID.coerce(DAG.raw) == DAG
    with pytest.raises(InvalidCID):
        CID.coerce("Qm" + "1" * 44)
    with pytest.raises(InvalidCID):
        CID.coerce(b"\x00")


def test_empty_mst_root() -> None:
    data = cbor.encode({"e": [], "l": None})
    assert CID.for_dag_cbor(data) == EMPTY_MST_ROOT
    assert str(EMPTY_MST_ROOT) == "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    assert EMPTY_MST_ROOT.matches(data)


# --- properties -------------------------------------------------------------------


def test_blessed_properties() -> None:
    for cid, codec in ((DAG, CODEC_DAG_CBOR), (RAW, CODEC_RAW)):
        assert cid.version == 1
        assert cid.codec == codec
        assert cid.multihash_code == HASH_SHA256
        assert cid.digest == DIGEST
        assert cid.is_blessed
    assert DAG.is_dag_cbor
    assert not RAW.is_dag_cbor


@pytest.mark.parametrize(
    ("codec", "hash_code", "digest"),
    [
        (0x70, 0x12, DIGEST),  # dag-pb
        (0x71, 0x13, hashlib.sha512(DATA).digest()),  # sha2-512
        (0x71, 0x1E, b"\x01" * 32),  # blake3
        (0x71, 0x00, b"abc"),  # identity hash
        (0x55, 0x12, DIGEST[:16]),  # truncated sha2-256
        (0x0129, 0x12, DIGEST),  # dag-json: two-byte codec varint
        (0x71, 0xB220, DIGEST),  # blake2b-256: three-byte hash varint
        (0x71, 0x12, b""),
    ],
)
def test_non_blessed_properties(codec: int, hash_code: int, digest: bytes) -> None:
    cid = CID(make(codec, hash_code, digest))
    assert cid.version == 1
    assert cid.codec == codec
    assert cid.multihash_code == hash_code
    assert cid.digest == digest
    assert not cid.is_blessed
    assert not cid.is_dag_cbor
    assert CID.parse(str(cid)) == cid


def test_matches() -> None:
    assert DAG.matches(DATA)
    assert RAW.matches(DATA)
    assert not DAG.matches(DATA + b"!")
    assert CID(make(0x70, 0x12, DIGEST)).matches(DATA)
    assert not CID(make(0x70, 0x12, DIGEST[:16])).matches(DATA)
    with pytest.raises(InvalidCID):
        CID(make(0x71, 0x13, hashlib.sha512(DATA).digest())).matches(DATA)
    with pytest.raises(InvalidCID):
        CID(make(0x71, 0x00, DATA)).matches(DATA)


# --- value semantics ----------------------------------------------------------------


def test_equality_and_hash() -> None:
    same = CID(bytes(DAG.raw))
    assert same == DAG
    assert operator.ne(same, DAG) is False
    assert hash(same) == hash(DAG)
    assert DAG != RAW
    # a CID never equals its binary or string form, from either side
    for other in (DAG.raw, str(DAG), None):
        assert operator.eq(DAG, other) is False
        assert operator.eq(other, DAG) is False
        assert operator.ne(DAG, other) is True
    assert {DAG: 1}[same] == 1
    assert len({DAG, same, RAW}) == 2
    assert DAG in {DAG.raw: 1, DAG: 2}
    assert {DAG.raw: 1, DAG: 2}[DAG] == 2


def test_ordering() -> None:
    low = CID.for_raw(b"x")  # 0x01 0x55 ... sorts before 0x01 0x71 ...
    high = CID.for_dag_cbor(b"x")
    assert low < high
    assert low <= high
    assert low <= low
    assert high > low
    assert high >= low
    assert not high < low
    cids = [CID.for_dag_cbor(bytes([i])) for i in range(20)]
    assert [c.raw for c in sorted(cids)] == sorted(c.raw for c in cids)
    assert max(cids).raw == max(c.raw for c in cids)


@pytest.mark.parametrize("other", [b"\x01", "b", 1, None])
def test_ordering_with_other_types_is_type_error(other: Any) -> None:
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError):
            compare(DAG, other)
        with pytest.raises(TypeError):
            compare(other, DAG)


def test_pickle_and_copy() -> None:
    for cid in (DAG, RAW, CID(make(0x70, 0x00, b"xyz"))):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(cid, protocol))
            assert back == cid
            assert type(back) is CID
        assert copy.copy(cid) == cid
        assert copy.deepcopy({"k": [cid]}) == {"k": [cid]}


def test_slots_no_dict() -> None:
    with pytest.raises(AttributeError):
        DAG.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=lambda w: w.__name__)
def test_bytes_like_input_is_copied_to_bytes(wrap: Any) -> None:
    for raw in (DAG.raw, make(0x70, 0x00, b"xyz")):
        buffer = wrap(raw)
        cid = CID(buffer)
        assert type(cid.raw) is bytes
        assert cid == CID(raw)
        assert hash(cid) == hash(CID(raw))
        if isinstance(buffer, bytearray):
            buffer[-1] ^= 0xFF  # mutating the source leaves the CID alone
            assert cid == CID(raw)


@pytest.mark.parametrize("value", ["bafy", 36, None, [1], DAG], ids=repr)
def test_non_bytes_input_rejected(value: Any) -> None:
    with pytest.raises(InvalidCID):
        CID(value)


# --- rejections ----------------------------------------------------------------------

V0_STRING = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
TOO_LONG = make(0x71, 0x00, b"x" * 97)  # 101 bytes


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x12\x20" + DIGEST, id="CIDv0 binary"),
        pytest.param(b"\x00\x71\x12\x20" + DIGEST, id="version 0"),
        pytest.param(b"\x02\x71\x12\x20" + DIGEST, id="version 2"),
        pytest.param(b"\x12\x71\x12\x20" + DIGEST, id="version 18"),
        pytest.param(b"\x01\x71\x12\x20" + DIGEST[:31], id="truncated digest"),
        pytest.param(b"\x01\x71\x12\x20" + DIGEST + b"\x00", id="over-long digest"),
        pytest.param(b"\x01\x71\x12", id="no digest length"),
        pytest.param(b"\x01\x71", id="no hash"),
        pytest.param(b"\x01", id="no codec"),
        pytest.param(b"\x01\xf1", id="truncated codec varint"),
        pytest.param(b"\x01\xf1\x00\x12\x20" + DIGEST, id="non-minimal codec varint"),
        pytest.param(b"\x81\x00\x71\x12\x20" + DIGEST, id="non-minimal version varint"),
        pytest.param(b"\x01\x71\x92\x00\x20" + DIGEST, id="non-minimal hash varint"),
        pytest.param(b"\x01\x71\x12\xa0\x00" + DIGEST, id="non-minimal length varint"),
        pytest.param(b"\x01" + b"\xff" * 9 + b"\x01\x12\x20" + DIGEST, id="ten-byte varint"),
        pytest.param(b"\x01\x71\x12\xff\xff\xff\xff\x0f" + DIGEST, id="huge digest length"),
        pytest.param(TOO_LONG, id="over 100 bytes"),
    ],
)
def test_invalid_binary(raw: bytes) -> None:
    with pytest.raises(InvalidCID):
        CID(raw)
    with pytest.raises(InvalidCID):
        CID.parse("b" + b32encode(raw))


def test_length_limit_boundary() -> None:
    ok = make(0x71, 0x00, b"x" * 96)
    assert len(ok) == limits.MAX_CID_BYTES
    assert CID(ok).digest == b"x" * 96
    assert len(TOO_LONG) == limits.MAX_CID_BYTES + 1


def _non_canonical_tail(text: str) -> str:
    """Change the last base32 character so that its unused low bits are not zero."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 1]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(V0_STRING, id="CIDv0 Qm"),
        pytest.param("b" + b32encode(b"\x12\x20" + DIGEST), id="CIDv0 in base32"),
        pytest.param(str(DAG).upper(), id="upper-case multibase B"),
        pytest.param("b" + str(DAG)[1:].upper(), id="upper-case body"),
        pytest.param(str(DAG)[:10] + "A" + str(DAG)[11:], id="one upper-case char"),
        pytest.param(str(DAG) + "=", id="padding 1"),
        pytest.param(str(DAG) + "======", id="padding 6"),
        pytest.param(_non_canonical_tail(str(DAG)), id="non-canonical trailing bits"),
        pytest.param(str(DAG)[:-1], id="truncated string"),
        pytest.param(str(DAG)[:-8], id="truncated digest"),
        pytest.param(str(DAG) + "a", id="extra char"),
        pytest.param(str(DAG) + "aaaaaaaa", id="extra bytes"),
        pytest.param(str(DAG)[:20] + "1" + str(DAG)[21:], id="base32 digit 1"),
        pytest.param(str(DAG)[:20] + "0" + str(DAG)[21:], id="base32 digit 0"),
        pytest.param("f" + DAG.raw.hex(), id="base16 multibase"),
        pytest.param("m" + "AXESIA", id="base64 multibase"),
        pytest.param("u" + "AXESIA", id="base64url multibase"),
        pytest.param("Z" + b58encode(DAG.raw), id="upper-case Z"),
        pytest.param("z" + b58encode(DAG.raw) + "0", id="base58 bad char"),
        pytest.param("z" + b58encode(b"\x12\x20" + DIGEST), id="CIDv0 in base58"),
        pytest.param(" " + str(DAG), id="leading space"),
        pytest.param(str(DAG)[:30] + "\ud800" + str(DAG)[31:], id="lone surrogate"),
        pytest.param(str(DAG)[:30] + "\x00" + str(DAG)[31:], id="NUL"),
        pytest.param(str(DAG)[:30] + "é" + str(DAG)[31:], id="non-ASCII letter"),
        pytest.param(str(DAG) + "\n", id="trailing newline"),
        pytest.param("", id="empty"),
        pytest.param("b", id="prefix only"),
        pytest.param(".", id="dot"),
        pytest.param("b" + "a" * 300, id="too long string"),
        pytest.param("b" + b32encode(TOO_LONG), id="over 100 bytes"),
    ],
)
def test_invalid_string(text: str) -> None:
    with pytest.raises(InvalidCID):
        CID.parse(text)


def test_non_canonical_helper_really_changes_the_tail() -> None:
    assert _non_canonical_tail(str(DAG)) != str(DAG)


@pytest.mark.parametrize("value", [b"bafy", None, 12, DAG], ids=repr)
def test_parse_non_str(value: Any) -> None:
    with pytest.raises(InvalidCID):
        CID.parse(value)


# --- properties ---------------------------------------------------------------------

_structures = st.tuples(
    st.integers(0, 2**40),
    st.integers(0, 2**20),
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(_structures)
def test_property_round_trip(parts: tuple[int, int, bytes]) -> None:
    codec, hash_code, digest = parts
    raw = make(codec, hash_code, digest)
    cid = CID(raw)
    assert (cid.codec, cid.multihash_code, cid.digest) == (codec, hash_code, digest)
    assert CID.parse(str(cid)) == cid
    assert CID.parse("z" + b58encode(raw)) == cid
    assert pickle.loads(pickle.dumps(cid)) == cid
    assert cbor.decode(cbor.encode(cid)) == cid
    assert cid.is_blessed == (codec in (0x55, 0x71) and hash_code == 0x12 and len(digest) == 32)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_property_random_binary_only_invalid_cid(raw: bytes) -> None:
    try:
        cid = CID(raw)
    except InvalidCID:
        return
    assert cid.raw == raw
    assert CID.parse(str(cid)) == cid


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_property_random_text_only_invalid_cid(text: str) -> None:
    try:
        cid = CID.parse(text)
    except InvalidCID:
        return
    assert text[0] in "bz"
    if text[0] == "b":
        assert str(cid) == text
