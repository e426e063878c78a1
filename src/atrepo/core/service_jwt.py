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

Receiving such a token is the other half (:func:`parse_service_jwt`,
:meth:`ServiceJwt.signed_by`, :func:`verify_service_jwt`). The checks and
their order are the reference's (``verifyJwt`` of ``@atproto/xrpc-server``),
so a client sees the same error names from us: ``BadJwt`` (shape),
``BadJwtType`` (an access, refresh or DPoP token presented as a service
token), ``JwtExpired``, ``BadJwtAudience``, ``BadJwtLexiconMethod``,
``BadJwtIss`` and ``BadJwtSignature``, all 401. Two rules are stricter than
the reference, deliberately: only ``ES256K`` and ``ES256`` are accepted (an
``alg`` of ``none`` or ``HS256`` is refused before any key is looked up) and
the signature must be low-S, as every other atproto signature (the
reference accepts malleable high-S signatures here). Resolving the issuer's
key is I/O and lives with the caller (:mod:`atrepo.host.inbound_auth`); this
module only says whether a given key signed the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import (
    AtrepoError,
    BadJwt,
    BadJwtAudience,
    BadJwtIss,
    BadJwtLexiconMethod,
    BadJwtSignature,
    BadJwtType,
    JwtExpired,
)
from .jsonio import parse_outside_json
from .keys import PrivateKey, PublicKey
from .syntax import is_valid_did

__all__ = [
    "ACCEPTED_ALGS",
    "DEFAULT_LIFETIME_S",
    "MAX_SERVICE_JWT_CHARS",
    "ServiceJwt",
    "create_service_jwt",
    "parse_service_jwt",
    "verify_service_jwt",
]

#: Lifetime of a token when the caller does not ask for another: one minute, as the reference.
DEFAULT_LIFETIME_S: Final = 60

#: The only signature algorithms of atproto keys: secp256k1 and P-256, both ECDSA over SHA-256.
ACCEPTED_ALGS: Final = frozenset({"ES256K", "ES256"})
#: A service token is a few hundred characters; anything far longer is refused before decoding.
MAX_SERVICE_JWT_CHARS: Final = 8192
#: Header ``typ`` values of tokens that are not service tokens (OAuth access, the reference's
#: refresh tokens, DPoP proofs): presenting one here is a confusion the reference refuses.
_FORBIDDEN_TYPES: Final = frozenset({"at+jwt", "refresh+jwt", "dpop+jwt"})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_POORLY_FORMATTED: Final = "poorly formatted jwt"


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


# --- receiving ---------------------------------------------------------------------------------


def _b64url_decode(segment: str) -> bytes:
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise BadJwt(_POORLY_FORMATTED)
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern and length rule it out
        raise BadJwt(_POORLY_FORMATTED) from None


def _json_segment(segment: str) -> Mapping[str, Any]:
    def bad(_why: str) -> AtrepoError:
        return BadJwt(_POORLY_FORMATTED)

    value = parse_outside_json(_b64url_decode(segment), bad)
    if not isinstance(value, dict):
        raise BadJwt(_POORLY_FORMATTED)
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_did_or_service(value: str) -> bool:
    """A DID, or ``did#service`` with one non-empty fragment (the reference's ``iss`` forms)."""
    did, sep, fragment = value.partition("#")
    if sep and (not fragment or "#" in fragment):
        return False
    return is_valid_did(did)


@dataclass(frozen=True, slots=True)
class ServiceJwt:
    """A service token whose shape and claims passed; the signature is still to be checked.

    ``iss`` may carry a ``#service`` fragment (a labeler signs as
    ``did#atproto_labeler``); ``issuer_did`` is the DID part, the one to resolve.
    """

    alg: str
    iss: str
    aud: str
    exp: float
    lxm: str | None
    payload: Mapping[str, Any] = field(repr=False)
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def issuer_did(self) -> str:
        return self.iss.partition("#")[0]

    def signed_by(self, key: PublicKey) -> bool:
        """Whether ``key`` made the signature: its curve matches ``alg`` and the signature is
        a valid 64-byte low-S ``r || s`` over ``header.payload``. High-S is False."""
        if key.jwt_alg != self.alg:
            return False
        return key.verify(self.signing_input, self.signature)


def parse_service_jwt(
    token: str,
    *,
    now_s: float,
    audiences: Collection[str] | None,
    lxm: str | None,
) -> ServiceJwt:
    """Check everything but the signature, in the reference's order; raise the first failure.

    ``audiences``: the ``aud`` values naming this service (None: any); ``lxm``:
    the method being called, which the token must name (None: not checked).
    """
    if len(token) > MAX_SERVICE_JWT_CHARS:
        raise BadJwt(_POORLY_FORMATTED)
    parts = token.split(".")
    if len(parts) != 3:
        raise BadJwt(_POORLY_FORMATTED)
    header = _json_segment(parts[0])
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise BadJwt(_POORLY_FORMATTED)
    typ = header.get("typ")
    if isinstance(typ, str) and typ in _FORBIDDEN_TYPES:
        raise BadJwtType(f'Invalid jwt type "{typ}"')
    payload = _json_segment(parts[1])
    iss, aud, exp = payload.get("iss"), payload.get("aud"), payload.get("exp")
    claimed_lxm, nonce = payload.get("lxm"), payload.get("nonce")
    if (
        not isinstance(iss, str)
        or not isinstance(aud, str)
        or not _is_number(exp)
        or (claimed_lxm is not None and not isinstance(claimed_lxm, str))
        or (nonce is not None and not isinstance(nonce, str))
    ):
        raise BadJwt(_POORLY_FORMATTED)
    assert isinstance(exp, int | float)
    if now_s > exp:
        raise JwtExpired("jwt expired")
    if audiences is not None and aud not in audiences:
        raise BadJwtAudience("jwt audience does not match service did")
    if lxm is not None and claimed_lxm != lxm:
        what = "bad" if claimed_lxm is not None else "missing"
        raise BadJwtLexiconMethod(f'{what} jwt lexicon method ("lxm"). must match: {lxm}')
    if not iss or not _is_did_or_service(iss):
        raise BadJwtIss("jwt iss is not a valid did")
    if alg not in ACCEPTED_ALGS:
        raise BadJwtSignature("could not verify jwt signature")
    signature = _b64url_decode(parts[2])
    return ServiceJwt(
        alg=alg,
        iss=iss,
        aud=aud,
        exp=exp,
        lxm=claimed_lxm,
        payload=payload,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )


def verify_service_jwt(
    token: str,
    key: PublicKey,
    *,
    now_s: float,
    audiences: Collection[str] | None,
    lxm: str | None,
) -> ServiceJwt:
    """:func:`parse_service_jwt`, then require ``key``'s signature (``BadJwtSignature``).

    For a caller that already holds the issuer's key; a resolving caller
    parses first, then tries :meth:`ServiceJwt.signed_by` with the cached key
    and a freshly resolved one.
    """
    parsed = parse_service_jwt(token, now_s=now_s, audiences=audiences, lxm=lxm)
    if not parsed.signed_by(key):
        raise BadJwtSignature("jwt signature does not match jwt issuer")
    return parsed
