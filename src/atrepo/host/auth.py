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
    "ACCESS_FULL_SCOPES",
    "ACCESS_LIFETIME_S",
    "ACCESS_PRIVILEGED_SCOPES",
    "ACCESS_SCOPE",
    "APP_PASS_PRIVILEGED_SCOPE",
    "APP_PASS_SCOPE",
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
#: Sessions opened with an app password (accounts.md §4): a privileged one also reaches
#: ``chat.bsky.*`` and service tokens for ``createAccount``; neither manages the account.
APP_PASS_SCOPE: Final = "com.atproto.appPass"
APP_PASS_PRIVILEGED_SCOPE: Final = "com.atproto.appPassPrivileged"
#: Scopes the reference issues for access tokens, all accepted by ``verify_access``.
ACCESS_SCOPES: Final = frozenset({ACCESS_SCOPE, APP_PASS_SCOPE, APP_PASS_PRIVILEGED_SCOPE})
#: The reference's ``ACCESS_FULL`` (``verify_full_access``): the account password's session only.
ACCESS_FULL_SCOPES: Final = frozenset({ACCESS_SCOPE})
#: The reference's ``ACCESS_PRIVILEGED`` (``verify_privileged_access``): full or privileged app password.
ACCESS_PRIVILEGED_SCOPES: Final = frozenset({ACCESS_SCOPE, APP_PASS_PRIVILEGED_SCOPE})
ACCESS_TYP: Final = "at+jwt"
REFRESH_TYP: Final = "refresh+jwt"
#: Reference lifetimes: 120 minutes and 90 days (the SDK refreshes 15 minutes before ``exp``).
ACCESS_LIFETIME_S: Final = 2 * 60 * 60
REFRESH_LIFETIME_S: Final = 90 * 24 * 60 * 60
#: After a rotation the old refresh token still answers (with the same successor) this long:
#: a client whose reply was lost can retry. Reference: 2 hours.
REFRESH_GRACE_MS: Final = 2 * 60 * 60 * 1000
#: Access tokens remembered as verified by :meth:`TokenAuthority.verify_access`.
VERIFIED_TOKEN_CACHE: Final = 10_000

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
        # access tokens already verified: token -> credentials (see verify_access)
        self._verified: dict[str, AccessCredentials] = {}

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

    def session(
        self, did: str, refresh_id: str, refresh_expires_ms: int, *, scope: str = ACCESS_SCOPE
    ) -> SessionTokens:
        """A new access token of ``scope`` plus the refresh JWT of a row the caller stored (or will).

        The refresh JWT's own scope is always ``com.atproto.refresh``: what a
        refresh grants again is read from its row (the app password it names).
        """
        return SessionTokens(
            access_jwt=self.access_token(did, scope=scope),
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
        """``auth=`` hook for routes that need a session: a valid, unexpired access token.

        A client sends the same access token with every call until it
        refreshes, and checking it (base64, JSON, HMAC) was a tenth of a
        write's time on the event loop. So a token that verified is
        remembered, keyed by its whole text, signature included: only a byte
        for byte identical token is taken from the cache, and its expiry is
        still checked on every use. The cache is bounded (cleared when full).
        """
        token = bearer_token(request)
        creds = self._verified.get(token)
        if creds is not None:
            if creds.exp <= self.now_s():
                raise ExpiredToken("Token has expired")
            return creds
        claims = self.decode(token, typ=ACCESS_TYP, scopes=ACCESS_SCOPES)
        creds = AccessCredentials(did=claims["sub"], scope=claims["scope"], exp=int(claims["exp"]))
        if len(self._verified) >= VERIFIED_TOKEN_CACHE:
            self._verified.clear()
        self._verified[token] = creds
        return creds

    async def verify_full_access(self, request: web.Request, params: dict[str, Any]) -> AccessCredentials:
        """``auth=`` hook of routes that manage the account: no app-password session.

        The reference's ``ACCESS_FULL``: an app-password token is answered as a
        token of the wrong scope, 400 ``InvalidToken`` "Bad token scope".
        """
        creds = await self.verify_access(request, params)
        if creds.scope not in ACCESS_FULL_SCOPES:
            raise InvalidToken("Bad token scope")
        return creds

    async def verify_privileged_access(
        self, request: web.Request, params: dict[str, Any]
    ) -> AccessCredentials:
        """``auth=`` hook of privileged routes: a full session or a privileged app password's.

        The reference's ``ACCESS_PRIVILEGED`` (400 ``InvalidToken`` "Bad token scope" otherwise).
        """
        creds = await self.verify_access(request, params)
        if creds.scope not in ACCESS_PRIVILEGED_SCOPES:
            raise InvalidToken("Bad token scope")
        return creds

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
