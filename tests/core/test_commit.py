"""Signed commits: signing, decoding, extra fields and every rejection rule."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from atrepo.core import cbor
from atrepo.core.cid import CID
from atrepo.core.commit import SignedCommit, decode_commit, sign_commit
from atrepo.core.errors import InvalidCommit, InvalidSignature
from atrepo.core.keys import K256_ORDER, P256_ORDER, PrivateKey
from atrepo.core.tid import tid_from_parts

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
REV = "3kgnjdpmjtc2b"
DATA = CID.parse("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
ORDERS = {"k256": K256_ORDER, "p256": P256_ORDER}


@pytest.fixture(scope="module", params=["k256", "p256"])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


@pytest.fixture(scope="module")
def k256() -> PrivateKey:
    return PrivateKey.generate("k256")


def signed_map(key: PrivateKey, **changes: Any) -> dict[str, Any]:
    """A commit map signed over everything but ``sig``; ``changes`` apply before signing."""
    value: dict[str, Any] = {"did": DID, "version": 3, "data": DATA, "rev": REV, "prev": None}
    value.update(changes)
    value["sig"] = key.sign(cbor.encode(value))
    return value


def with_sig(commit: SignedCommit, sig: bytes) -> SignedCommit:
    """The same commit carrying another signature (re-encoded, re-hashed)."""
    value = cbor.decode(commit.raw)
    value["sig"] = sig
    return decode_commit(cbor.encode(value))


# --- round trips -------------------------------------------------------------------


def test_sign_and_verify_round_trip(key: PrivateKey) -> None:
    commit = sign_commit(DID, DATA, REV, key)
    again = decode_commit(commit.raw)
    assert again == commit
    assert (again.did, again.data, again.rev, again.prev, again.version) == (DID, DATA, REV, None, 3)
    assert len(again.sig) == 64
    again.verify(key.public_key)
    assert again.is_signed_by(key.public_key)
    assert cbor.decode(commit.raw) == {**commit.unsigned_map(), "sig": commit.sig}


def test_signature_is_low_s(key: PrivateKey) -> None:
    for i in range(20):
        commit = sign_commit(DID, DATA, tid_from_parts(1_700_000_000_000_000 + i, 0), key)
        s = int.from_bytes(commit.sig[32:], "big")
        assert s <= ORDERS[key.curve] // 2


def test_cid_is_hash_of_exact_block(key: PrivateKey) -> None:
    commit = sign_commit(DID, DATA, REV, key)
    assert commit.cid == CID.for_dag_cbor(commit.raw)
    assert commit.cid.digest == hashlib.sha256(commit.raw).digest()
    assert commit.cid.is_dag_cbor
    assert decode_commit(commit.raw).cid == commit.cid
    # the block is the canonical encoding of the six fields
    assert commit.raw == cbor.encode(cbor.decode(commit.raw))
    assert list(cbor.decode(commit.raw)) == ["did", "rev", "sig", "data", "prev", "version"]


def test_prev_link_is_kept_and_signed(key: PrivateKey) -> None:
    prev = CID.for_dag_cbor(b"\xa0")
    commit = sign_commit(DID, DATA, REV, key, prev=prev)
    again = decode_commit(commit.raw)
    assert again.prev == prev
    again.verify(key.public_key)


def test_sign_commit_rejects_bad_did_and_rev(k256: PrivateKey) -> None:
    with pytest.raises(InvalidCommit, match="not a valid DID"):
        sign_commit("plc:nope", DATA, REV, k256)
    with pytest.raises(InvalidCommit, match="not a valid TID"):
        sign_commit(DID, DATA, "not-a-tid", k256)


# --- unknown extra fields -------------------------------------------------------------


def test_extra_fields_are_kept_and_signed_over(key: PrivateKey) -> None:
    value = signed_map(key, extra="kept", zz=[1, 2])
    commit = decode_commit(cbor.encode(value))
    assert commit.extra == {"extra": "kept", "zz": [1, 2]}
    assert commit.unsigned_map()["extra"] == "kept"
    commit.verify(key.public_key)
    # the same signature without the extra field no longer verifies
    stripped = {k: v for k, v in value.items() if k not in ("extra", "zz")}
    bare = decode_commit(cbor.encode(stripped))
    assert bare.extra == {}
    with pytest.raises(InvalidSignature, match="does not verify"):
        bare.verify(key.public_key)
    assert not bare.is_signed_by(key.public_key)


# --- shape rejections ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 4, 0, "3", None, True])
def test_rejects_other_versions(k256: PrivateKey, version: object) -> None:
    with pytest.raises(InvalidCommit, match="only 3 is supported"):
        decode_commit(cbor.encode(signed_map(k256, version=version)))


@pytest.mark.parametrize("field", ["did", "version", "data", "rev", "prev", "sig"])
def test_rejects_missing_field(k256: PrivateKey, field: str) -> None:
    value = signed_map(k256)
    del value[field]
    with pytest.raises(InvalidCommit, match=f"field '{field}' is missing"):
        decode_commit(cbor.encode(value))


def test_prev_key_must_be_present_even_when_null(k256: PrivateKey) -> None:
    value = signed_map(k256)
    value.pop("prev")
    # signed without prev too, so only the shape rule can refuse it
    value["sig"] = k256.sign(cbor.encode({k: v for k, v in value.items() if k != "sig"}))
    with pytest.raises(InvalidCommit, match="'prev' is missing"):
        decode_commit(cbor.encode(value))


@pytest.mark.parametrize("did", ["did:plc", "DID:plc:abc", "plc:abc", "", 42])
def test_rejects_bad_did(k256: PrivateKey, did: object) -> None:
    with pytest.raises(InvalidCommit, match="is not a valid DID"):
        decode_commit(cbor.encode(signed_map(k256, did=did)))


@pytest.mark.parametrize("rev", ["3kgnjdpmjtc2", "3kgnjdpmjtc2bb", "kgnjdpmjtc2b1", "zzzzzzzzzzzzz", 5])
def test_rejects_bad_rev(k256: PrivateKey, rev: object) -> None:
    with pytest.raises(InvalidCommit, match="is not a valid TID"):
        decode_commit(cbor.encode(signed_map(k256, rev=rev)))


@pytest.mark.parametrize(
    "data",
    [str(DATA), None, b"\x01", CID.for_raw(b"blob bytes")],
    ids=["string", "null", "bytes", "raw-codec"],
)
def test_rejects_data_that_is_not_a_dag_cbor_link(k256: PrivateKey, data: object) -> None:
    with pytest.raises(InvalidCommit, match="data must be a dag-cbor sha256 link"):
        decode_commit(cbor.encode(signed_map(k256, data=data)))


def test_rejects_bad_prev(k256: PrivateKey) -> None:
    with pytest.raises(InvalidCommit, match="prev must be null"):
        decode_commit(cbor.encode(signed_map(k256, prev="bafy")))


@pytest.mark.parametrize("sig", [b"", "sig", None], ids=["empty", "string", "null"])
def test_rejects_empty_or_non_bytes_sig(k256: PrivateKey, sig: object) -> None:
    value = signed_map(k256)
    value["sig"] = sig
    with pytest.raises(InvalidCommit, match="sig must be a non-empty byte string"):
        decode_commit(cbor.encode(value))


@pytest.mark.parametrize("raw", [b"\x82\x01\x02", b"\xff", cbor.encode("text")], ids=["list", "junk", "str"])
def test_rejects_non_map_or_bad_cbor(raw: bytes) -> None:
    with pytest.raises(InvalidCommit):
        decode_commit(raw)


# --- signature rejections ---------------------------------------------------------------


def test_wrong_key_fails(key: PrivateKey) -> None:
    commit = sign_commit(DID, DATA, REV, key)
    other = PrivateKey.generate(key.curve)
    with pytest.raises(InvalidSignature, match="does not verify") as info:
        commit.verify(other.public_key)
    assert str(commit.cid) in str(info.value)
    # a key of the other curve fails too
    foreign = PrivateKey.generate("p256" if key.curve == "k256" else "k256")
    with pytest.raises(InvalidSignature):
        commit.verify(foreign.public_key)


def test_high_s_signature_fails(key: PrivateKey) -> None:
    commit = sign_commit(DID, DATA, REV, key)
    r, s = commit.sig[:32], int.from_bytes(commit.sig[32:], "big")
    high = with_sig(commit, r + (ORDERS[key.curve] - s).to_bytes(32, "big"))
    # mathematically still a valid ECDSA signature, but atproto demands low-S
    with pytest.raises(InvalidSignature, match="high-S"):
        high.verify(key.public_key)
    assert not high.is_signed_by(key.public_key)


def test_der_signature_fails(key: PrivateKey) -> None:
    commit = sign_commit(DID, DATA, REV, key)
    r = int.from_bytes(commit.sig[:32], "big")
    s = int.from_bytes(commit.sig[32:], "big")
    der = with_sig(commit, encode_dss_signature(r, s))
    with pytest.raises(InvalidSignature, match=r"expected 64 \(DER\?\)"):
        der.verify(key.public_key)


def test_tampered_field_fails(key: PrivateKey) -> None:
    value = signed_map(key)
    value["rev"] = "3kgnjdpmjtc2c"
    with pytest.raises(InvalidSignature, match="does not verify"):
        decode_commit(cbor.encode(value)).verify(key.public_key)


@pytest.mark.parametrize("sig", [b"\x00" * 64, b"\x01" * 63, b"\xff" * 64])
def test_garbage_signatures_fail(k256: PrivateKey, sig: bytes) -> None:
    commit = with_sig(sign_commit(DID, DATA, REV, k256), sig)
    with pytest.raises(InvalidSignature):
        commit.verify(k256.public_key)
