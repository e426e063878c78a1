"""Service-auth JWTs: minted ones verify with PyJWT (independent) for both curves; received ones are
refused under the reference's error names for every broken rule, high-S signatures included."""

from __future__ import annotations

import base64
import json
import re

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atrepo.core.errors import (
    BadJwt,
    BadJwtAudience,
    BadJwtIss,
    BadJwtLexiconMethod,
    BadJwtSignature,
    BadJwtType,
    JwtExpired,
)
from atrepo.core.keys import PrivateKey
from atrepo.core.service_jwt import ServiceJwt, create_service_jwt, parse_service_jwt, verify_service_jwt


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


CURVES = {"k256": (ec.SECP256K1(), "ES256K"), "p256": (ec.SECP256R1(), "ES256")}


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_token_verifies_with_pyjwt(curve: str) -> None:
    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    ec_curve, alg = CURVES[curve]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec_curve, key.public_key.uncompressed())
    token = create_service_jwt(
        key,
        iss="did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        aud="did:web:api.example",
        iat=2_000_000_000,
        jti="ab" * 16,
        lxm="app.bsky.feed.getTimeline",
    )
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": alg}
    claims = jwt.decode(
        token,
        public,
        algorithms=[alg],
        audience="did:web:api.example",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iat": 2_000_000_000,
        "iss": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        "aud": "did:web:api.example",
        "exp": 2_000_000_060,
        "lxm": "app.bsky.feed.getTimeline",
        "jti": "ab" * 16,
    }
    # the signature is the 64-byte low-S r||s form
    sig = b64url(token.rsplit(".", 1)[1])
    assert len(sig) == 64 and int.from_bytes(sig[32:], "big") <= key.order // 2


def test_exp_and_methodless() -> None:
    key = PrivateKey.generate("k256")
    token = create_service_jwt(
        key, iss="did:web:a.example", aud="did:web:b.example#svc", iat=100, jti="x", exp=130
    )
    payload = json.loads(b64url(token.split(".")[1]))
    assert payload == {
        "iat": 100,
        "iss": "did:web:a.example",
        "aud": "did:web:b.example#svc",
        "exp": 130,
        "jti": "x",
    }


# --- receiving: every refusal, under the reference's error names -------------------------------

ISS = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
AUD = "did:web:pds.example"
LXM = "com.atproto.server.createAccount"
NOW = 2_000_000_000


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_token(header: object, payload: object, sig: bytes = b"\x01" * 64) -> str:
    def seg(v: object) -> str:
        return b64url_encode(json.dumps(v).encode())

    return f"{seg(header)}.{seg(payload)}.{b64url_encode(sig)}"


def mint(key: PrivateKey, **overrides: object) -> str:
    fields: dict[str, object] = {"iss": ISS, "aud": AUD, "iat": NOW, "jti": "n", "lxm": LXM}
    fields.update(overrides)
    return create_service_jwt(key, **fields)  # type: ignore[arg-type]


def verify(token: str, key: PrivateKey, *, now: float = NOW, lxm: str | None = LXM) -> ServiceJwt:
    return verify_service_jwt(
        token, key.public_key, now_s=now, audiences=(AUD, f"{AUD}#atproto_pds"), lxm=lxm
    )


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_verify_accepts_a_good_token(curve: str) -> None:
    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    parsed = verify(mint(key), key)
    assert (parsed.iss, parsed.aud, parsed.lxm, parsed.exp, parsed.alg) == (
        ISS,
        AUD,
        LXM,
        NOW + 60,
        key.public_key.jwt_alg,
    )
    assert parsed.issuer_did == ISS
    # the exp boundary itself is still valid; the reference refuses only now > exp
    verify(mint(key), key, now=NOW + 60)
    # the did#service form of aud is accepted when the caller lists it
    verify(mint(key, aud=f"{AUD}#atproto_pds"), key)
    # a method-less check accepts a token without lxm
    verify(mint(key, lxm=None), key, lxm=None)


def test_wrong_audience() -> None:
    key = PrivateKey.generate("k256")
    for aud in ("did:web:other.example", f"{AUD}#bsky_appview", f"{AUD}#"):
        with pytest.raises(BadJwtAudience, match="jwt audience does not match service did"):
            verify(mint(key, aud=aud), key)


def test_expired() -> None:
    key = PrivateKey.generate("k256")
    with pytest.raises(JwtExpired, match="jwt expired"):
        verify(mint(key), key, now=NOW + 61)
    with pytest.raises(JwtExpired):
        verify(mint(key, exp=NOW - 1), key)


def test_wrong_or_missing_lxm() -> None:
    key = PrivateKey.generate("k256")
    with pytest.raises(BadJwtLexiconMethod, match=r'^bad jwt lexicon method \("lxm"\)\. must match: com\.'):
        verify(mint(key, lxm="com.atproto.repo.createRecord"), key)
    with pytest.raises(BadJwtLexiconMethod, match=r"^missing jwt lexicon method"):
        verify(mint(key, lxm=None), key)


def test_key_mismatch() -> None:
    signer, other = PrivateKey.generate("k256"), PrivateKey.generate("k256")
    token = mint(signer)
    with pytest.raises(BadJwtSignature, match="jwt signature does not match jwt issuer"):
        verify(token, other)
    # a key of the other curve never verifies (alg and key must agree)
    assert not parse_service_jwt(token, now_s=NOW, audiences=None, lxm=None).signed_by(
        PrivateKey.generate("p256").public_key
    )


@pytest.mark.parametrize("curve", ["k256", "p256"])
def test_high_s_signature_is_refused(curve: str) -> None:
    key = PrivateKey.generate(curve)  # type: ignore[arg-type]
    token = mint(key)
    head, body, sig_text = token.split(".")
    sig = b64url(sig_text)
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    high = r + (key.order - s).to_bytes(32, "big")
    assert int.from_bytes(high[32:], "big") > key.order // 2
    malleated = f"{head}.{body}.{b64url_encode(high)}"
    # the malleated signature is mathematically valid: an independent verifier accepts it
    ec_curve, alg = CURVES[curve]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec_curve, key.public_key.uncompressed())
    jwt.decode(
        malleated, public, algorithms=[alg], audience=AUD, options={"verify_exp": False, "verify_iat": False}
    )
    with pytest.raises(BadJwtSignature):
        verify(malleated, key)
    verify(token, key)  # the low-S original still passes


def test_alg_none_and_hs256_are_refused() -> None:
    key = PrivateKey.generate("k256")
    claims = {"iss": ISS, "aud": AUD, "exp": NOW + 60, "lxm": LXM}
    unsigned = hand_token({"alg": "none", "typ": "JWT"}, claims).rsplit(".", 1)[0] + "."
    with pytest.raises(BadJwtSignature, match="could not verify jwt signature"):
        verify(unsigned, key)
    hs = jwt.encode(claims, key.public_key.did_key(), algorithm="HS256")
    with pytest.raises(BadJwtSignature, match="could not verify jwt signature"):
        verify(hs, key)
    # a header claiming ES256 over a secp256k1 signature: the key's alg must match
    es256k = mint(key)
    _, body, sig = es256k.split(".")
    forged_head = b64url_encode(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    with pytest.raises(BadJwtSignature):
        verify(f"{forged_head}.{body}.{sig}", key)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.AAAA",
        "e30.e30.AAAA",  # {} header: no alg
        hand_token([], {"iss": ISS, "aud": AUD, "exp": NOW + 60}),
        hand_token({"alg": "ES256K"}, "a string"),
        hand_token({"alg": "ES256K"}, {"aud": AUD, "exp": NOW + 60}),
        hand_token({"alg": "ES256K"}, {"iss": ISS, "exp": NOW + 60}),
        hand_token({"alg": "ES256K"}, {"iss": ISS, "aud": AUD}),
        hand_token({"alg": "ES256K"}, {"iss": ISS, "aud": AUD, "exp": "soon"}),
        hand_token({"alg": "ES256K"}, {"iss": ISS, "aud": AUD, "exp": True}),
        hand_token({"alg": "ES256K"}, {"iss": ISS, "aud": AUD, "exp": NOW + 60, "lxm": 5}),
        hand_token({"alg": 256}, {"iss": ISS, "aud": AUD, "exp": NOW + 60}),
        "e30." + b64url_encode(b"\xff\xfe") + ".AAAA",
        "x" * 10_000,
    ],
)
def test_malformed(token: str) -> None:
    key = PrivateKey.generate("k256")
    with pytest.raises(BadJwt, match="poorly formatted jwt"):
        verify(token, key)


def test_bad_type_and_bad_issuer() -> None:
    key = PrivateKey.generate("k256")
    claims = {"iss": ISS, "aud": AUD, "exp": NOW + 60, "lxm": LXM}
    for typ in ("at+jwt", "refresh+jwt", "dpop+jwt"):
        with pytest.raises(BadJwtType, match=re.escape(f'Invalid jwt type "{typ}"')):
            verify(hand_token({"alg": "ES256K", "typ": typ}, claims), key)
    for iss in ("", "alice", "did:plc:x#", "did:plc:ewvi7nxzyoun6zhxrhs64oiz#a#b"):
        with pytest.raises(BadJwtIss, match="jwt iss is not a valid did"):
            verify(hand_token({"alg": "ES256K"}, {**claims, "iss": iss}), key)
    labeler = parse_service_jwt(
        hand_token({"alg": "ES256K"}, {**claims, "iss": f"{ISS}#atproto_labeler"}),
        now_s=NOW,
        audiences=None,
        lxm=None,
    )
    assert labeler.issuer_did == ISS


def test_errors_are_401_with_reference_names() -> None:
    assert BadJwt("x").to_xrpc() == (401, {"error": "BadJwt", "message": "x"})
    for cls in (BadJwtType, JwtExpired, BadJwtAudience, BadJwtLexiconMethod, BadJwtIss, BadJwtSignature):
        assert cls.http_status == 401 and cls.xrpc_error == cls.__name__
