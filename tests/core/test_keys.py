"""Keys, did:key/Multikey encodings and atproto signature rules (64-byte, low-S)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core.errors import InvalidKey, InvalidSignature
from atrepo.core.keys import (
    K256_ORDER,
    P256_ORDER,
    SUPPORTED_CURVES,
    Curve,
    K256PublicKey,
    P256PublicKey,
    PrivateKey,
    PublicKey,
    parse_did_key,
    parse_legacy_multibase,
    parse_multikey,
)
from atrepo.core.multibase import b58decode, b58encode

FIXTURES = Path(__file__).parent.parent / "interop" / "crypto"


def _load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text("utf-8"))
    return data


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


SIGNATURE_FIXTURES = _load("signature-fixtures.json")
K256_DIDKEYS = _load("w3c_didkey_K256.json")
P256_DIDKEYS = _load("w3c_didkey_P256.json")

# Fixed keys so negative tests are reproducible.
KEYS: dict[Curve, PrivateKey] = {
    "k256": PrivateKey.from_bytes(
        "k256", bytes.fromhex("9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c")
    ),
    "p256": PrivateKey.from_bytes("p256", b58decode("9p4VRzdmhsnq869vQjVCTrRry7u4TtfRxhvBFJTGU2Cp")),
}
ORDERS: dict[Curve, int] = {"k256": K256_ORDER, "p256": P256_ORDER}
MSG = b"atproto commit bytes"
curves = pytest.mark.parametrize("curve", SUPPORTED_CURVES)


def _rs(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _der(sig: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


# --------------------------------------------------------------------------
# Interop fixtures


@pytest.mark.parametrize("case", SIGNATURE_FIXTURES, ids=lambda c: c["comment"])
def test_signature_fixture(case: dict[str, Any]) -> None:
    key = parse_did_key(case["publicKeyDid"])
    assert key.jwt_alg == case["algorithm"]
    curve: Curve = "p256" if case["algorithm"] == "ES256" else "k256"
    assert key.curve == curve
    assert parse_legacy_multibase(case["publicKeyMultibase"], curve) == key
    message = _b64(case["messageBase64"])
    sig = _b64(case["signatureBase64"])
    assert key.verify(message, sig) is case["validSignature"]
    if case["validSignature"]:
        key.check(message, sig)
    else:
        with pytest.raises(InvalidSignature):
            key.check(message, sig)
    if "high-s" in case["tags"]:
        with pytest.raises(InvalidSignature, match="high-S"):
            key.check(message, sig)
        # The high-S fixture is valid ECDSA: its low-S twin must verify.
        n = key.order
        twin = sig[:32] + (n - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
        assert key.verify(message, twin)
    if "der-encoded" in case["tags"]:
        with pytest.raises(InvalidSignature, match=r"expected 64 \(DER\?\)"):
            key.check(message, sig)


@pytest.mark.parametrize("case", K256_DIDKEYS, ids=lambda c: c["publicDidKey"])
def test_w3c_did_key_k256(case: dict[str, str]) -> None:
    priv = PrivateKey.from_bytes("k256", bytes.fromhex(case["privateKeyBytesHex"]))
    assert priv.public_key.did_key() == case["publicDidKey"]
    assert parse_did_key(case["publicDidKey"]) == priv.public_key
    assert isinstance(priv.public_key, K256PublicKey)


@pytest.mark.parametrize("case", P256_DIDKEYS, ids=lambda c: c["publicDidKey"])
def test_w3c_did_key_p256(case: dict[str, str]) -> None:
    raw = b58decode(case["privateKeyBytesBase58"])
    assert len(raw) == 32
    priv = PrivateKey.from_bytes("p256", raw)
    assert priv.public_key.did_key() == case["publicDidKey"]
    assert parse_did_key(case["publicDidKey"]) == priv.public_key
    assert isinstance(priv.public_key, P256PublicKey)


def test_spec_examples() -> None:
    p = parse_did_key("did:key:zDnaembgSGUhZULN2Caob4HLJPaxBh92N7rtH21TErzqf8HQo")
    k = parse_did_key("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc")
    assert (p.curve, p.jwt_alg, k.curve, k.jwt_alg) == ("p256", "ES256", "k256", "ES256K")
    assert p.multikey().startswith("zDnae") and k.multikey().startswith("zQ3s")
    assert b58decode(p.multikey()[1:])[:2] == b"\x80\x24"
    assert b58decode(k.multikey()[1:])[:2] == b"\xe7\x01"
    assert parse_multikey(p.multikey()) is p  # cached
    assert len(p.compressed) == 33 and p.compressed[0] in (2, 3)


# --------------------------------------------------------------------------
# Key parsing


@curves
def test_public_key_forms(curve: Curve) -> None:
    pub = KEYS[curve].public_key
    assert PublicKey.from_compressed(curve, pub.compressed) == pub
    full = pub.uncompressed()
    assert len(full) == 65 and full[0] == 4 and full[1:33] == pub.compressed[1:]
    # Multikey with an uncompressed point normalizes to compressed.
    codec = b58decode(pub.multikey()[1:])[:2]
    from_full = parse_multikey("z" + b58encode(codec + full))
    assert from_full == pub and from_full.compressed == pub.compressed
    # Legacy forms: raw point, 33 or 65 bytes.
    assert parse_legacy_multibase("z" + b58encode(pub.compressed), curve) == pub
    assert parse_legacy_multibase("z" + b58encode(full), curve) == pub
    assert hash(pub) == hash(PublicKey.from_compressed(curve, pub.compressed))
    assert len({pub, PublicKey.from_compressed(curve, pub.compressed)}) == 1


def test_keys_of_different_curves_differ() -> None:
    assert KEYS["k256"].public_key != KEYS["p256"].public_key
    assert KEYS["k256"].public_key != "did:key:x"


def test_public_key_immutable_and_not_constructible() -> None:
    pub = KEYS["k256"].public_key
    with pytest.raises(AttributeError):
        pub.compressed = b"x"
    with pytest.raises(TypeError):
        PublicKey()
    with pytest.raises(TypeError):
        PrivateKey()


def _multikey(codec: bytes, body: bytes) -> str:
    return "z" + b58encode(codec + body)


def _off_curve(curve: Curve) -> bytes:
    """Flip bytes of x until the compressed point no longer decodes."""
    good = bytearray(KEYS[curve].public_key.compressed)
    for i in range(32, 0, -1):
        good[i] ^= 0xFF
        try:
            PublicKey.from_compressed(curve, bytes(good))
        except InvalidKey:
            return bytes(good)
    raise AssertionError("every candidate was on the curve")


CODECS: dict[Curve, bytes] = {"p256": b"\x80\x24", "k256": b"\xe7\x01"}
K256_HYBRID = b"\x07" + KEYS["k256"].public_key.uncompressed()[1:]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "missing 'did:key:' prefix"),
        ("did:web:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "missing 'did:key:' prefix"),
        ("did:key:Q3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "missing 'z'"),
        ("did:key:mQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc", "missing 'z'"),
        ("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJw0", "bad base58"),
        ("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwl", "bad base58"),
        ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "unknown multicodec 0xed"),
        ("did:key:z" + "Q3s" * 60, "too long"),
        ("did:key:z", "unterminated multicodec varint"),
        ("did:key:" + _multikey(b"\x80\x80\x00", b"\x02" * 33), "non-minimal"),
        ("did:key:" + _multikey(b"\x81\x26", b"\x01" * 32), "private key"),
        ("did:key:" + _multikey(CODECS["k256"], KEYS["k256"].public_key.compressed[:32]), "32 bytes"),
        ("did:key:" + _multikey(CODECS["p256"], KEYS["p256"].public_key.compressed[:-1]), "32 bytes"),
        ("did:key:" + _multikey(CODECS["p256"], KEYS["p256"].public_key.compressed + b"\0"), "34 bytes"),
        ("did:key:" + _multikey(CODECS["k256"], b"\x04" + KEYS["k256"].public_key.compressed[1:]), "0x04"),
        (
            "did:key:" + _multikey(CODECS["k256"], K256_HYBRID),
            "0x07",
        ),
        ("did:key:" + _multikey(CODECS["k256"], _off_curve("k256")), "not a point on the curve"),
        ("did:key:" + _multikey(CODECS["p256"], _off_curve("p256")), "not a point on the curve"),
        ("did:key:" + _multikey(CODECS["k256"], b"\x02" + b"\xff" * 32), "not a point on the curve"),
        ("did:key:" + _multikey(CODECS["p256"], b"\x02" + b"\xff" * 32), "not a point on the curve"),
    ],
)
def test_parse_did_key_rejects(text: str, match: str) -> None:
    with pytest.raises(InvalidKey, match=match):
        parse_did_key(text)
    if text.startswith("did:key:"):
        with pytest.raises(InvalidKey, match=match):
            parse_multikey(text[len("did:key:") :])


def test_multikey_wrong_curve_codec_is_off_curve_or_mismatch() -> None:
    # A k256 point labelled p256 is (almost always) not on P-256; either way it
    # must not silently come back as the original key.
    pub = KEYS["k256"].public_key
    try:
        other = parse_multikey(_multikey(CODECS["p256"], pub.compressed))
    except InvalidKey:
        return
    assert other != pub


@pytest.mark.parametrize(
    ("text", "curve", "match"),
    [
        ("xdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWMh", "p256", "missing 'z'"),
        ("zxdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWM0", "p256", "bad base58"),
        ("zxdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWM", "p256", "bytes, expected 33"),
        ("zxdM8dSstjrpZaRUwBmDvjGXweKuEMVN95A9oJBFjkWMh", "ed25519", "unsupported curve"),
    ],
)
def test_parse_legacy_rejects(text: str, curve: Curve, match: str) -> None:
    with pytest.raises(InvalidKey, match=match):
        parse_legacy_multibase(text, curve)


def test_from_compressed_rejects() -> None:
    pub = KEYS["p256"].public_key
    with pytest.raises(InvalidKey, match="65 bytes, expected 33"):
        PublicKey.from_compressed("p256", pub.uncompressed())
    with pytest.raises(InvalidKey, match="unsupported curve"):
        PublicKey.from_compressed("ed25519", pub.compressed)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey, match="not a point"):
        PublicKey.from_compressed("p256", _off_curve("p256"))


# --------------------------------------------------------------------------
# Private keys


@curves
def test_private_key_bytes_rejected(curve: Curve) -> None:
    n = ORDERS[curve]
    for bad in (0, n, n + 1, 2**256 - 1):
        with pytest.raises(InvalidKey, match="out of range"):
            PrivateKey.from_bytes(curve, bad.to_bytes(32, "big"))
    with pytest.raises(InvalidKey, match="31 bytes"):
        PrivateKey.from_bytes(curve, b"\x01" * 31)
    assert PrivateKey.from_bytes(curve, (n - 1).to_bytes(32, "big")).to_bytes() == (n - 1).to_bytes(32, "big")
    assert PrivateKey.from_bytes(curve, (1).to_bytes(32, "big")).public_key.curve == curve


@curves
def test_private_multibase(curve: Curve) -> None:
    priv = KEYS[curve]
    text = priv.to_multibase()
    codec = b58decode(text[1:])[:2]
    assert codec == {"p256": b"\x86\x26", "k256": b"\x81\x26"}[curve]
    assert PrivateKey.from_multibase(text) == priv
    assert PrivateKey.from_multibase(text).public_key == priv.public_key


def test_private_multibase_rejects_without_leaking() -> None:
    secret = KEYS["k256"].to_multibase()
    with pytest.raises(InvalidKey, match="missing 'z'") as info:
        PrivateKey.from_multibase(secret[1:])
    assert secret[1:] not in str(info.value)
    with pytest.raises(InvalidKey, match="bad base58") as info:
        PrivateKey.from_multibase(secret[:-1] + "0")
    assert secret[1:-1] not in str(info.value)
    with pytest.raises(InvalidKey, match="public key"):
        PrivateKey.from_multibase(KEYS["k256"].public_key.multikey())
    with pytest.raises(InvalidKey, match="unexpected multicodec 0xed"):
        PrivateKey.from_multibase(_multikey(b"\xed\x01", b"\x01" * 32))
    assert "9085d2be" not in repr(KEYS["k256"])


@curves
def test_generate(curve: Curve) -> None:
    a, b = PrivateKey.generate(curve), PrivateKey.generate(curve)
    assert a.curve == curve and a.public_key.curve == curve
    assert a != b and a.public_key != b.public_key
    assert a.public_key.verify(MSG, a.sign(MSG))


@curves
def test_deterministic_and_random_signing(curve: Curve) -> None:
    priv = KEYS[curve]
    assert priv.sign(MSG) == priv.sign(MSG)
    r1, r2 = priv.sign(MSG, deterministic=False), priv.sign(MSG, deterministic=False)
    assert r1 != r2
    for sig in (r1, r2):
        assert priv.public_key.verify(MSG, sig)


def test_k256_rfc6979_matches_reference() -> None:
    # coincurve's own (DER-returning) signer is also RFC 6979 and low-S.
    import coincurve
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    priv = KEYS["k256"]
    r, s = decode_dss_signature(coincurve.PrivateKey(priv.to_bytes()).sign(MSG))
    assert priv.sign(MSG) == _rs(r, s)


# --------------------------------------------------------------------------
# Signature rules


@curves
def test_signature_negatives(curve: Curve) -> None:
    pub = KEYS[curve].public_key
    n = ORDERS[curve]
    sig = KEYS[curve].sign(MSG)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    assert pub.verify(MSG, sig)
    pub.check(MSG, sig)
    cases: list[tuple[bytes, str]] = [
        (sig + b"\0", "65 bytes, expected 64$"),
        (sig[:63], "63 bytes, expected 64$"),
        (b"", "0 bytes"),
        (_der(sig), r"bytes, expected 64 \(DER\?\)"),
        (_rs(r, n - s), "high-S"),
        (_rs(0, s), "r is out of range"),
        (_rs(n, s), "r is out of range"),
        (_rs(2**256 - 1, s), "r is out of range"),
        (_rs(r, 0), "s is out of range"),
        (_rs(r, n), "s is out of range"),
        (_rs(r, s ^ 1), "does not verify"),
        (_rs(1, 1), "does not verify"),
    ]
    for bad, match in cases:
        assert not pub.verify(MSG, bad), match
        with pytest.raises(InvalidSignature, match=match):
            pub.check(MSG, bad)
    assert not pub.verify(MSG + b"!", sig)
    with pytest.raises(InvalidSignature, match="does not verify"):
        pub.check(MSG + b"!", sig)
    other = KEYS["p256" if curve == "k256" else "k256"]
    assert not other.public_key.verify(MSG, sig)
    wrong = PrivateKey.from_bytes(curve, (12345).to_bytes(32, "big")).public_key
    assert not wrong.verify(MSG, sig)


@curves
def test_exact_half_order_s_is_low(curve: Curve) -> None:
    # s == n // 2 is the largest low-S value: it passes the range checks and
    # fails only in the library (this r, s pair is not a real signature).
    pub = KEYS[curve].public_key
    with pytest.raises(InvalidSignature, match="does not verify"):
        pub.check(MSG, _rs(1, ORDERS[curve] >> 1))
    with pytest.raises(InvalidSignature, match="high-S"):
        pub.check(MSG, _rs(1, (ORDERS[curve] >> 1) + 1))


@curves
def test_high_s_of_own_signature_is_rejected(curve: Curve) -> None:
    pub = KEYS[curve].public_key
    for i in range(20):
        msg = hashlib.sha256(bytes([i])).digest()
        sig = KEYS[curve].sign(msg)
        high = sig[:32] + (ORDERS[curve] - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
        assert not pub.verify(msg, high)


# --------------------------------------------------------------------------
# Properties

curve_st = st.sampled_from(SUPPORTED_CURVES)
scalar_st = st.integers(min_value=1, max_value=min(K256_ORDER, P256_ORDER) - 1)


@settings(max_examples=60, deadline=None)
@given(curve=curve_st, message=st.binary(max_size=300), deterministic=st.booleans())
def test_sign_verify_roundtrip(curve: Curve, message: bytes, deterministic: bool) -> None:
    priv = KEYS[curve]
    sig = priv.sign(message, deterministic=deterministic)
    assert len(sig) == 64
    assert int.from_bytes(sig[32:], "big") <= ORDERS[curve] >> 1
    assert priv.public_key.verify(message, sig)
    priv.public_key.check(message, sig)


@settings(max_examples=60, deadline=None)
@given(curve=curve_st, message=st.binary(min_size=1, max_size=100), data=st.data())
def test_bit_flips_break_verification(curve: Curve, message: bytes, data: st.DataObject) -> None:
    pub = KEYS[curve].public_key
    sig = KEYS[curve].sign(message)
    bit = data.draw(st.integers(0, len(message) * 8 - 1), label="message bit")
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert not pub.verify(bytes(flipped), sig)
    bit = data.draw(st.integers(0, 511), label="signature bit")
    bad = bytearray(sig)
    bad[bit // 8] ^= 1 << (bit % 8)
    assert not pub.verify(message, bytes(bad))
    with pytest.raises(InvalidSignature):
        pub.check(message, bytes(bad))


@settings(max_examples=40, deadline=None)
@given(curve=curve_st, scalar=scalar_st)
def test_key_roundtrips(curve: Curve, scalar: int) -> None:
    raw = scalar.to_bytes(32, "big")
    priv = PrivateKey.from_bytes(curve, raw)
    assert priv.to_bytes() == raw
    again = PrivateKey.from_multibase(priv.to_multibase())
    assert again.to_bytes() == raw and again.curve == curve
    pub = priv.public_key
    assert parse_did_key(pub.did_key()) == pub
    assert parse_multikey(pub.multikey()) == pub
    assert PublicKey.from_compressed(curve, pub.compressed) == pub
    assert parse_legacy_multibase("z" + b58encode(pub.uncompressed()), curve) == pub
