"""Session tokens: HS256 access and refresh JWTs, refresh rotation, and the router's ``auth=`` hooks.

What clients depend on, as the reference host (``@atproto/pds``
``auth-verifier.ts``; accounts.md §3) answers it:

* access token: header ``{"alg": "HS256", "typ": "at+jwt"}``, claims
  ``scope = com.atproto.access``, ``sub`` (the DID), ``aud`` (the host's
  service DID, ``did:web:<public hostname>``), integer ``iat``/``exp``,
  2 hours. The MarshalX SDK refreshes from ``exp``; goat refreshes only on
  400 ``ExpiredToken``.
* refresh token: ``typ = refresh+jwt``, ``scope = com.atproto.refresh``,
  ``jti`` = the id of its row in the store, 90 days.
* errors: no ``Authorization`` header: 401 ``AuthMissing``; a malformed
  header, another scheme, a bad signature, ``typ`` ("Invalid token type":
  a refresh token used as access), ``aud``, ``sub`` or scope: 400
  ``InvalidToken``; past ``exp``: 400 ``ExpiredToken`` "Token has expired".
  (Reference, compiled ``auth-verifier.js`` of @atproto/pds: ``verifyBearerJwt``
  and ``parseAuthorizationHeader``.)

Expiry is checked against the host's clock here rather than inside PyJWT,
so one injectable clock drives tokens, rotation grace and tests alike; PyJWT
still does the signature, the algorithm allow-list and the audience.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt
from aiohttp import web

from atrepo.core.errors import AuthMissing, ExpiredToken, InvalidToken, XrpcError

__all__ = [
    "ACCESS_LIFETIME_S",
    "ACCESS_SCOPE",
    "REFRESH_GRACE_MS",
    "REFRESH_LIFETIME_S",
    "REFRESH_SCOPE",
    "AccessCredentials",
    "RefreshCredentials",
    "SessionTokens",
    "TokenAuthority",
    "bearer_token",
]

ACCESS_SCOPE: Final = "com.atproto.access"
REFRESH_SCOPE: Final = "com.atproto.refresh"
#: Scopes the reference issues for access tokens; app passwords are not implemented yet,
#: so only the first is issued here, but all are accepted where the reference accepts them.
ACCESS_SCOPES: Final = frozenset({ACCESS_SCOPE, "com.atproto.appPass", "com.atproto.appPassPrivileged"})
ACCESS_TYP: Final = "at+jwt"
REFRESH_TYP: Final = "refresh+jwt"
#: Reference lifetimes: 120 minutes and 90 days (the SDK refreshes 15 minutes before ``exp``).
ACCESS_LIFETIME_S: Final = 2 * 60 * 60
REFRESH_LIFETIME_S: Final = 90 * 24 * 60 * 60
#: After a rotation the old refresh token still answers (with the same successor) this long:
#: a client whose reply was lost can retry. Reference: 2 hours.
REFRESH_GRACE_MS: Final = 2 * 60 * 60 * 1000

_SCHEMES: Final = {"BASIC": "Basic", "BEARER": "Bearer", "DPOP": "DPoP"}


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AccessCredentials:
    """A verified access token: what ``ctx.auth`` holds on routes guarded by ``verify_access``."""

    did: str
    scope: str
    exp: int


@dataclass(frozen=True, slots=True)
class RefreshCredentials:
    """A verified refresh token: the DID and the store row (``jti``) it names."""

    did: str
    token_id: str
    exp: int


@dataclass(frozen=True, slots=True)
class SessionTokens:
    access_jwt: str
    refresh_jwt: str
    refresh_id: str
    refresh_expires_ms: int


def authorization(request: web.Request) -> tuple[str, str] | None:
    """``(scheme, credentials)`` of the ``Authorization`` header; None without one.

    As the reference: exactly two space-separated parts (else ``InvalidToken``
    "Malformed authorization header"), the scheme compared without case and
    one of Basic, Bearer, DPoP (else ``InvalidToken`` "Unsupported authorization type").
    """
    header = request.headers.get("Authorization")
    if not header:
        return None
    parts = header.split(" ")
    if len(parts) != 2:
        raise InvalidToken("Malformed authorization header")
    scheme = _SCHEMES.get(parts[0].upper())
    if scheme is None:
        raise InvalidToken(f"Unsupported authorization type: {parts[0][:40]}")
    return scheme, parts[1]


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>`` for routes that take an access token.

    No header: 401 ``AuthMissing``; another scheme: 400 ``InvalidToken``
    "Unexpected authorization type" (DPoP is OAuth, not supported yet).
    """
    parsed = authorization(request)
    if parsed is None:
        raise AuthMissing("Authentication Required")
    scheme, token = parsed
    if scheme != "Bearer":
        raise InvalidToken("Unexpected authorization type")
    return token


def refresh_bearer_token(request: web.Request) -> str:
    """The Bearer token of refresh routes; another scheme counts as none: 401 ``AuthMissing``."""
    parsed = authorization(request)
    if parsed is None or parsed[0] != "Bearer":
        raise AuthMissing("Authentication Required")
    return parsed[1]


def new_token_id() -> str:
    """A refresh token id as the reference makes them: 32 random bytes, base64 (unpadded)."""
    return base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class TokenAuthority:
    """Issues and verifies the host's session JWTs with one HMAC secret and one clock."""

    def __init__(
        self, secret: str, service_did: str, *, clock_ms: Callable[[], int] = _wall_clock_ms
    ) -> None:
        if not secret:
            raise ValueError("empty JWT secret")
        self._secret = secret
        self.service_did = service_did
        self.clock_ms = clock_ms

    def now_s(self) -> int:
        return self.clock_ms() // 1000

    # --- issuing --------------------------------------------------------------------------

    def _encode(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(claims, self._secret, algorithm="HS256", headers={"typ": typ})

    def access_token(self, did: str, *, scope: str = ACCESS_SCOPE) -> str:
        now = self.now_s()
        claims = {
            "scope": scope,
            "sub": did,
            "aud": self.service_did,
            "iat": now,
            "exp": now + ACCESS_LIFETIME_S,
        }
        return self._encode(claims, ACCESS_TYP)

    def refresh_token(self, did: str, token_id: str, expires_ms: int) -> str:
        claims = {
            "scope": REFRESH_SCOPE,
            "sub": did,
            "aud": self.service_did,
            "jti": token_id,
            "iat": self.now_s(),
            "exp": expires_ms // 1000,
        }
        return self._encode(claims, REFRESH_TYP)

    def refresh_expiry_ms(self) -> int:
        return self.clock_ms() + REFRESH_LIFETIME_S * 1000

    def session(self, did: str, refresh_id: str, refresh_expires_ms: int) -> SessionTokens:
        """A new access token plus the refresh JWT for a row the caller stored (or is about to)."""
        return SessionTokens(
            access_jwt=self.access_token(did),
            refresh_jwt=self.refresh_token(did, refresh_id, refresh_expires_ms),
            refresh_id=refresh_id,
            refresh_expires_ms=refresh_expires_ms,
        )

    # --- verifying ------------------------------------------------------------------------

    def decode(
        self, token: str, *, typ: str, scopes: frozenset[str], allow_expired: bool = False
    ) -> dict[str, Any]:
        """The claims of a token of ``typ`` with one of ``scopes``, or the reference's error."""
        try:
            header = jwt.get_unverified_header(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self.service_did,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["exp"]},
            )
        except jwt.PyJWTError:
            raise InvalidToken("Token could not be verified") from None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise InvalidToken("Token could not be verified")
        if not allow_expired and exp <= self.now_s():
            raise ExpiredToken("Token has expired")
        # The reference allows a missing typ (tokens of its entryway carry none).
        if "typ" in header and header["typ"] != typ:
            raise InvalidToken("Invalid token type")
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise InvalidToken("Malformed token")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith("did:"):
            raise InvalidToken("Malformed token")
        if "lxm" in claims or "cnf" in claims:
            raise InvalidToken("Malformed token")
        if claims.get("scope") not in scopes:
            raise InvalidToken("Bad token scope")
        return claims

    async def verify_access(self, request: web.Request, params: dict[str, Any]) -> AccessCredentials:
        """``auth=`` hook for routes that need a session: a valid, unexpired access token."""
        claims = self.decode(bearer_token(request), typ=ACCESS_TYP, scopes=ACCESS_SCOPES)
        return AccessCredentials(did=claims["sub"], scope=claims["scope"], exp=int(claims["exp"]))

    async def verify_refresh(self, request: web.Request, params: dict[str, Any]) -> RefreshCredentials:
        """``auth=`` hook of ``refreshSession``: a valid, unexpired refresh token."""
        return self._refresh(refresh_bearer_token(request), allow_expired=False)

    async def verify_refresh_allow_expired(
        self, request: web.Request, params: dict[str, Any]
    ) -> RefreshCredentials:
        """``auth=`` hook of ``deleteSession``: the reference accepts an expired refresh token there."""
        return self._refresh(refresh_bearer_token(request), allow_expired=True)

    def _refresh(self, token: str, *, allow_expired: bool) -> RefreshCredentials:
        claims = self.decode(
            token, typ=REFRESH_TYP, scopes=frozenset({REFRESH_SCOPE}), allow_expired=allow_expired
        )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            # The reference: AuthRequiredError named MissingTokenId (401).
            raise XrpcError("MissingTokenId", "Unexpected missing refresh token id", 401)
        return RefreshCredentials(did=claims["sub"], token_id=jti, exp=int(claims["exp"]))
