"""Async DID resolution (did:plc via a directory, did:web) behind a cache.

One :class:`aiohttp.ClientSession` serves every lookup. Syntax and method are
checked before any I/O and never cached; fetched documents (and failures,
briefly) are cached by :class:`~atrepo.identity.cache.LookupCache`. Callers
verifying signatures use ``resolve(did)`` and, if a signature fails with the
cached key, ``resolve(did, force_refresh=True)`` once; ``#identity`` events call
:meth:`DIDResolver.purge`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

import aiohttp

from atrepo.core.errors import InvalidDIDDocument, LimitExceeded, ResolutionError
from atrepo.identity import limits
from atrepo.identity.cache import LookupCache
from atrepo.identity.did import did_method, did_web_url
from atrepo.identity.document import DIDDocument, parse_did_document_bytes
from atrepo.identity.fetch import get_bounded

__all__ = ["DEFAULT_PLC_URL", "DIDResolver"]

log = logging.getLogger("atrepo.identity.resolver")

DEFAULT_PLC_URL: Final = "https://plc.directory"
_ACCEPT: Final = {"Accept": "application/did+ld+json,application/json"}
#: Concurrent connections per host when the resolver owns its session (spec §6:
#: bound the traffic one burst of lookups sends to a single directory or host).
_PER_HOST_CONNECTIONS: Final = 16


class DIDResolver:
    """Resolve DIDs to :class:`DIDDocument`, cached (TTL, stale-while-revalidate)."""

    def __init__(
        self,
        *,
        plc_url: str = DEFAULT_PLC_URL,
        session: aiohttp.ClientSession | None = None,
        timeout: float = limits.LOOKUP_TIMEOUT_S,
        max_document_bytes: int = limits.MAX_DID_DOCUMENT_BYTES,
        ttl: float = limits.CACHE_TTL_S,
        stale_ttl: float = limits.CACHE_STALE_S,
        negative_ttl: float = limits.NEGATIVE_TTL_S,
        max_entries: int = limits.CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        dev: bool = False,
    ) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.timeout = timeout
        self.max_document_bytes = max_document_bytes
        self.dev = dev
        self._session = session
        self._owns_session = session is None
        self.cache: LookupCache[str, DIDDocument] = LookupCache(
            ttl=ttl, stale_ttl=stale_ttl, negative_ttl=negative_ttl, max_entries=max_entries, clock=clock
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=_PER_HOST_CONNECTIONS)
            )
        return self._session

    async def __aenter__(self) -> DIDResolver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.cache.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def purge(self, did: str) -> None:
        """Forget ``did`` (an ``#identity`` event said it changed)."""
        self.cache.purge(did)

    async def resolve(self, did: str, *, force_refresh: bool = False) -> DIDDocument:
        """The document of ``did``.

        Raises ``InvalidSyntax`` / ``UnsupportedDIDMethod`` before any I/O,
        ``ResolutionError`` when it cannot be fetched, ``InvalidDIDDocument``
        when what came back is not a document for ``did``.
        """
        # a cached DID passed these checks when it was first asked for; refuse bad hosts before the cache
        if did not in self.cache and did_method(did) == "web":
            did_web_url(did, dev=self.dev)
        return await self.cache.get(did, lambda: self._fetch(did), force_refresh=force_refresh)

    def document_url(self, did: str) -> str:
        """Where the document of ``did`` is fetched from."""
        if did_method(did) == "plc":
            return f"{self.plc_url}/{did}"
        return did_web_url(did, dev=self.dev)

    async def _fetch(self, did: str) -> DIDDocument:
        method = did_method(did)
        url = self.document_url(did)
        try:
            status, body = await get_bounded(
                self.session, url, max_bytes=self.max_document_bytes, timeout=self.timeout, headers=_ACCEPT
            )
        except LimitExceeded as exc:
            raise InvalidDIDDocument(f"{did}: {exc}") from None
        except ResolutionError as exc:
            log.warning("identity: fetching %s failed: %s", did, exc)
            raise ResolutionError(f"{did}: {exc}") from None
        if status in (404, 410):
            gone = "tombstoned or " if method == "plc" and status == 410 else ""
            raise ResolutionError(f"{did}: {gone}not found (HTTP {status} from {url})")
        if not 200 <= status < 300:
            raise ResolutionError(f"{did}: HTTP {status} from {url}")
        return parse_did_document_bytes(body, did, max_bytes=self.max_document_bytes)
