"""Inter-service auth tokens: JWTs an account's signing key issues to another service (pure).

When a host forwards a call to an AppView (or any service named by
``atproto-proxy``), or a client asks ``com.atproto.server.getServiceAuth`` for
a token to present elsewhere, the receiving service has no session with us: it
trusts the call because the token is signed with the key in the account's DID
document (the ``#atproto`` verification method). Everything the receiver checks
is in the token, so it is built here exactly as the reference
(``@atproto/xrpc-server`` ``createServiceJwt``) builds it:

* header ``{"typ": "JWT", "alg": ...}``: ``ES256K`` for a secp256k1 key,
  ``ES256`` for P-256 (the key's own ``jwt_alg``);
* claims ``iat``, ``iss`` (the account DID), ``aud`` (the service's DID, or a
  ``did#service`` reference when a client asked for one), ``exp``, ``lxm``
  (the one XRPC method the token is good for; left out for a method-less
  token) and ``jti`` (a random nonce, so a receiver can refuse replays);
* the signature: the 64-byte low-S ``r || s`` of SHA-256 over
  ``header.payload``, base64url without padding (JWS, RFC 7515).

The clock and the nonce come from the caller, which keeps this module free of
I/O and deterministic under test.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from .keys import PrivateKey

__all__ = ["DEFAULT_LIFETIME_S", "create_service_jwt"]

#: Lifetime of a token when the caller does not ask for another: one minute, as the reference.
DEFAULT_LIFETIME_S: Final = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def create_service_jwt(
    key: PrivateKey,
    *,
    iss: str,
    aud: str,
    iat: int,
    jti: str,
    exp: int | None = None,
    lxm: str | None = None,
) -> str:
    """A compact JWS signed by ``key``: ``exp`` defaults to ``iat`` + one minute; no ``lxm`` when None."""
    header = {"typ": "JWT", "alg": key.public_key.jwt_alg}
    payload: dict[str, Any] = {"iat": iat, "iss": iss, "aud": aud, "exp": iat + DEFAULT_LIFETIME_S}
    if exp is not None:
        payload["exp"] = exp
    if lxm is not None:
        payload["lxm"] = lxm
    payload["jti"] = jti
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"
