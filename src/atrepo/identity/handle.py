"""Handle resolution (DNS TXT and HTTPS well-known) and bidirectional checks.

A handle is only an account's name once both directions agree: the handle
resolves to the DID, and the DID document claims the handle. Anything less is
displayed as ``handle.invalid``. Handles are lower-cased before anything else;
reserved TLDs are refused before any traffic leaves the process.

Development mode (``dev=True``) also resolves ``.test`` handles, and with
``http_origin`` fetches ``<origin>/.well-known/atproto-did`` over plain http
with the handle in the ``Host`` header, so a test can serve many handles from
one local server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

import aiohttp

from atrepo.core.errors import AtrepoError, HandleMismatch, HandleNotFound, LimitExceeded
from atrepo.core.syntax import is_valid_did, normalize_handle
from atrepo.identity import limits
from atrepo.identity.cache import LookupCache
from atrepo.identity.dns import Nameserver, query_txt
from atrepo.identity.document import DIDDocument
from atrepo.identity.fetch import get_bounded
from atrepo.identity.hostname import tld_problem
from atrepo.identity.resolver import DIDResolver

__all__ = ["INVALID_HANDLE", "HandleMismatch", "HandleNotFound", "HandleResolver", "parse_dns_txt"]

log = logging.getLogger("atrepo.identity.handle")

#: What to display for an account whose handle does not check out both ways.
INVALID_HANDLE: Final = "handle.invalid"
_DID_PREFIX: Final = "did="


def parse_dns_txt(records: list[str]) -> str:
    """The DID of ``_atproto`` TXT records: exactly one ``did=`` record, valid DID."""
    found = [r[len(_DID_PREFIX) :] for r in records if r.startswith(_DID_PREFIX)]
    if not found:
        raise HandleNotFound("no did= TXT record")
    if len(found) > 1:
        raise HandleNotFound(f"{len(found)} did= TXT records (exactly one is required)")
    if not is_valid_did(found[0]):
        raise HandleNotFound(f"TXT record holds an invalid DID {found[0][:80]!r}")
    return found[0]


class HandleResolver:
    """Resolve handles to DIDs (cached) and check them against DID documents."""

    def __init__(
        self,
        did_resolver: DIDResolver | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        nameserver: Nameserver | None = None,
        timeout: float = limits.LOOKUP_TIMEOUT_S,
        dev: bool = False,
        http_origin: str | None = None,
        ttl: float = limits.CACHE_TTL_S,
        stale_ttl: float = limits.CACHE_STALE_S,
        negative_ttl: float = limits.NEGATIVE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if http_origin is not None and not dev:
            raise ValueError("http_origin (plain http, custom port) is only allowed with dev=True")
        self._owns_resolver = did_resolver is None
        self.did_resolver = did_resolver or DIDResolver(session=session, timeout=timeout, dev=dev)
        self._session = session
        self.nameserver = nameserver
        self.timeout = timeout
        self.dev = dev
        self.http_origin = http_origin.rstrip("/") if http_origin else None
        self.cache: LookupCache[str, str] = LookupCache(
            ttl=ttl, stale_ttl=stale_ttl, negative_ttl=negative_ttl, clock=clock
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session if self._session is not None else self.did_resolver.session

    async def __aenter__(self) -> HandleResolver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.cache.close()
        if self._owns_resolver:
            await self.did_resolver.close()

    def purge(self, handle: str) -> None:
        """Forget a cached handle (an ``#identity`` event named it)."""
        self.cache.purge(handle.lower())

    def _normalize(self, handle: str) -> str:
        normal = normalize_handle(handle)
        problem = tld_problem(normal, dev=self.dev)
        if normal == INVALID_HANDLE or problem is not None:
            raise HandleNotFound(f"{normal}: {problem or 'the invalid-handle marker is never resolved'}")
        return normal

    async def resolve(self, handle: str, *, force_refresh: bool = False) -> str:
        """The DID ``handle`` points to (one direction only; see :meth:`resolve_verified`)."""
        normal = self._normalize(handle)
        return await self.cache.get(normal, lambda: self._lookup(normal), force_refresh=force_refresh)

    async def resolve_dns(self, handle: str) -> str:
        """DID from the ``_atproto.<handle>`` TXT record; :class:`HandleNotFound` if none."""
        normal = self._normalize(handle)
        if len(normal) > limits.MAX_DNS_HANDLE_LENGTH:
            raise HandleNotFound(f"{normal}: longer than {limits.MAX_DNS_HANDLE_LENGTH}, too long for DNS")
        records = await query_txt(f"_atproto.{normal}", nameserver=self.nameserver, timeout=self.timeout)
        try:
            return parse_dns_txt(records)
        except HandleNotFound as exc:
            raise HandleNotFound(f"{normal}: DNS: {exc}") from None

    async def resolve_http(self, handle: str) -> str:
        """DID from ``https://<handle>/.well-known/atproto-did``; :class:`HandleNotFound` if none."""
        normal = self._normalize(handle)
        headers: dict[str, str] = {"Accept": "text/plain"}
        if self.http_origin is not None:
            url = f"{self.http_origin}/.well-known/atproto-did"
            headers["Host"] = normal
        else:
            url = f"https://{normal}/.well-known/atproto-did"
        try:
            status, body = await get_bounded(
                self.session,
                url,
                max_bytes=limits.MAX_WELL_KNOWN_BYTES,
                timeout=self.timeout,
                headers=headers,
                max_redirects=limits.MAX_HANDLE_REDIRECTS,
            )
        except LimitExceeded as exc:
            raise HandleNotFound(f"{normal}: HTTPS: {exc}") from None
        if not 200 <= status < 300:
            raise HandleNotFound(f"{normal}: HTTPS: HTTP {status} from {url}")
        lines = body.decode("utf-8", errors="replace").strip().splitlines()
        did = lines[0].strip() if lines else ""
        if not is_valid_did(did):
            raise HandleNotFound(f"{normal}: HTTPS: body is not a DID: {did[:80]!r}")
        return did

    async def _lookup(self, handle: str) -> str:
        """Both methods at once; DNS wins when it has an answer."""
        dns = asyncio.ensure_future(self.resolve_dns(handle))
        https = asyncio.ensure_future(self.resolve_http(handle))
        try:
            try:
                did = await dns
            except AtrepoError as exc:
                dns_error: AtrepoError = exc
            else:
                https.cancel()
                return did
            try:
                did = await https
            except AtrepoError as exc:
                log.info("identity: handle %s not resolved: %s; %s", handle, dns_error, exc)
                raise HandleNotFound(f"{handle}: no DID found ({dns_error}; {exc})") from None
            return did
        finally:
            for task in (dns, https):
                if not task.done():
                    task.cancel()
            await asyncio.gather(dns, https, return_exceptions=True)

    async def resolve_verified(self, handle: str) -> DIDDocument:
        """Resolve ``handle`` and require its DID document to claim it back."""
        normal = self._normalize(handle)
        did = await self.resolve(normal)
        doc = await self.did_resolver.resolve(did)
        if doc.handle != normal:
            raise HandleMismatch(
                f"{normal} points to {did}, whose document claims {doc.handle or 'no handle'}"
            )
        return doc

    async def verified_handle(self, did: str, *, force_refresh: bool = False) -> str:
        """The handle to show for ``did``: its claimed handle if that resolves back, else
        ``handle.invalid``. DID resolution errors propagate (there is no account to show)."""
        doc = await self.did_resolver.resolve(did, force_refresh=force_refresh)
        if doc.handle is None:
            return INVALID_HANDLE
        try:
            back = await self.resolve(doc.handle, force_refresh=force_refresh)
        except AtrepoError as exc:
            log.info("identity: %s claims %s, which does not resolve: %s", did, doc.handle, exc)
            return INVALID_HANDLE
        return doc.handle if back == did else INVALID_HANDLE
