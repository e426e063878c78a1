"""Service-auth JWTs verify with PyJWT (an independent implementation) for both curves."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atrepo.core.keys import PrivateKey
from atrepo.core.service_jwt import create_service_jwt


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
