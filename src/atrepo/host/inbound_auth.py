"""Inbound service auth: accept a call another service signed on an account's behalf.

A service-auth JWT (see :mod:`atrepo.core.service_jwt`) proves nothing by
itself: it is trusted because the key that signed it is the ``#atproto``
verification method of the issuer's DID document. So the hook resolves the
issuer's DID (through the PLC directory this host uses, or ``did:web``), takes
that key and checks the signature. Everything else (shape, ``typ``, ``exp``,
``aud``, ``lxm``, ``iss``, ``alg``) is checked first, without I/O, so a token
that is wrong on its face costs no lookup.

Documents are cached (bounded, :class:`~atrepo.identity.resolver.DIDResolver`).
A key can rotate between two calls, and the cached document then names the old
one: when the signature does not verify with the cached key, the document is
fetched again once (``force_refresh``) and, if it names another key, the token
is checked with that. Only then is it refused with ``BadJwtSignature``; an
attacker's bad token therefore costs at most one forced fetch, which the
cache coalesces with concurrent ones.

``aud`` must name this host: its service DID, bare (what the reference sends
when proxying) or as ``<did>#atproto_pds`` (the service-reference form of the
2026 spec). A labeler signs as ``<did>#atproto_labeler`` with its
``#atproto_label`` key, as the reference resolves it.

Usage: ``auth=inbound.verify_service_auth("com.atproto.server.createAccount")``;
the handler finds the issuer (``iss``, as the token says it) in ``ctx.auth``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from atrepo.core.errors import AtrepoError, AuthRequired, BadJwtSignature, MissingJwt
from atrepo.core.keys import PublicKey
from atrepo.core.service_jwt import ServiceJwt, parse_service_jwt
from atrepo.identity.document import DIDDocument, method_key
from atrepo.identity.resolver import DIDResolver
from atrepo.xrpc.server import AuthVerifier

from .auth import authorization

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["DID_CACHE_ENTRIES", "PDS_SERVICE_ID", "InboundAuth", "attach"]

log = logging.getLogger("atrepo.host.inbound_auth")

#: DID documents kept by the inbound resolver (least recently used go first).
DID_CACHE_ENTRIES: Final = 10_000
#: The service id of a PDS in a DID document, and in a ``did#service`` audience.
PDS_SERVICE_ID: Final = "atproto_pds"
_LABELER_SERVICE: Final = "atproto_labeler"
_LABEL_KEY: Final = "atproto_label"


def _label_key(doc: DIDDocument) -> PublicKey | None:
    """The ``#atproto_label`` key of a labeler's document (the parsed document keeps only ``#atproto``)."""
    methods = doc.doc.get("verificationMethod")
    if not isinstance(methods, list):
        return None
    for method in methods:
        if not isinstance(method, Mapping):
            continue
        if method.get("id") not in (f"#{_LABEL_KEY}", f"{doc.did}#{_LABEL_KEY}"):
            continue
        key = method_key(method)
        if key is not None:
            return key
    return None


class InboundAuth:
    """Verifies service-auth tokens sent to this host; owns the DID cache used for it.

    One per host (built by :func:`atrepo.host.app.build_app`); the identity
    endpoints share its resolver, so that a PLC operation this host submits
    also refreshes the key used to check that account's tokens.
    """

    def __init__(self, host: HostContext, *, max_entries: int = DID_CACHE_ENTRIES) -> None:
        self.host = host
        self.resolver = DIDResolver(plc_url=host.plc_url, session=host.http, max_entries=max_entries)
        #: Signatures that failed with the cached key and were retried with a fresh document.
        self.refreshes = 0

    @property
    def audiences(self) -> tuple[str, str]:
        """The ``aud`` values naming this host."""
        did = self.host.service_did
        return did, f"{did}#{PDS_SERVICE_ID}"

    async def close(self) -> None:
        await self.resolver.close()

    def now_s(self) -> float:
        """The host's token clock (injectable in tests), in seconds."""
        return self.host.tokens.clock_ms() / 1000

    def parse(self, token: str, *, lxm: str | None) -> ServiceJwt:
        """Every check but the signature (no I/O); raises the reference's error."""
        return parse_service_jwt(token, now_s=self.now_s(), audiences=self.audiences, lxm=lxm)

    async def issuer_key(self, iss: str, *, force_refresh: bool = False) -> PublicKey:
        """The key ``iss`` signs service tokens with, from its (cached) DID document."""
        did, _, service = iss.partition("#")
        try:
            doc = await self.resolver.resolve(did, force_refresh=force_refresh)
        except AtrepoError as exc:
            log.info("service auth: could not resolve %s: %s", did, exc)
            raise AuthRequired("could not resolve iss did") from None
        key = _label_key(doc) if service == _LABELER_SERVICE else doc.signing_key
        if key is None:
            raise AuthRequired("missing or bad key in did doc")
        return key

    async def verify(self, token: str, *, lxm: str | None) -> str:
        """The issuer (``iss``) of a token whose claims and signature check out."""
        parsed = self.parse(token, lxm=lxm)
        key = await self.issuer_key(parsed.iss)
        if parsed.signed_by(key):
            return parsed.iss
        # a recent key rotation leaves the cached document stale: fetch it once more
        self.refreshes += 1
        fresh = await self.issuer_key(parsed.iss, force_refresh=True)
        if fresh != key and parsed.signed_by(fresh):
            return parsed.iss
        raise BadJwtSignature("jwt signature does not match jwt issuer")

    def verify_service_auth(self, lxm: str | None) -> AuthVerifier:
        """An ``auth=`` hook: a Bearer service token for ``lxm`` (None: any method); yields ``iss``.

        No Bearer token (no header, or another scheme): 401 ``MissingJwt``.
        """

        async def hook(request: web.Request, params: dict[str, Any]) -> str:
            parsed = authorization(request)
            if parsed is None or parsed[0] != "Bearer" or not parsed[1]:
                raise MissingJwt("missing jwt")
            return await self.verify(parsed[1], lxm=lxm)

        return hook


def attach(app: web.Application, inbound: InboundAuth) -> None:
    """Close ``inbound``'s resolver when ``app`` is cleaned up."""

    async def close(_app: web.Application) -> None:
        await inbound.close()

    app.on_cleanup.append(close)
