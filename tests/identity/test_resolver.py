"""DID resolution against real local servers: PLC directory, did:web, cache behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from plc_chain import KEYS, genesis, update

from atrepo.core.errors import InvalidDIDDocument, InvalidSyntax, ResolutionError, UnsupportedDIDMethod
from atrepo.identity.plc.operations import operation_cid
from atrepo.identity.plc.server import create_app
from atrepo.identity.resolver import DIDResolver
from conftest import FakeClock, MonotonicFake, serve

A, B, C = KEYS[0], KEYS[1], KEYS[2]


async def wait_for(predicate: Any, limit: float = 5.0) -> None:
    """Poll until ``predicate()`` holds (bounded; no timing assertions)."""
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.01)


def web_doc(
    did: str, key: str, pds: str = "https://pds.example.com", handle: str = "alice.example.com"
) -> dict[str, Any]:
    return {
        "id": did,
        "alsoKnownAs": [f"at://{handle}"],
        "verificationMethod": [
            {"id": "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": key}
        ],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}],
    }


@dataclass
class WebHost:
    """A did:web host whose answer, delay and request count the test controls."""

    doc: Any = None
    status: int = 200
    body: bytes | None = None
    gate: asyncio.Event | None = None
    requests: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.seen_headers.append(dict(request.headers))
        if self.gate is not None:
            await self.gate.wait()
        if self.body is not None:
            return web.Response(body=self.body, status=self.status)
        return web.json_response(self.doc, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/did.json", self.handle)
        app.router.add_get("/moved", self.handle)
        return app


@asynccontextmanager
async def web_host(host: WebHost) -> AsyncIterator[str]:
    async with serve(host.app()) as base:
        yield "did:web:localhost%3A" + base.rsplit(":", 1)[1]


async def test_plc_resolution_before_and_after_rotation(
    fake_clock: FakeClock, monotonic: MonotonicFake
) -> None:
    async with (
        serve(create_app(clock=fake_clock)) as base,
        DIDResolver(plc_url=base, clock=monotonic, timeout=5) as resolver,
    ):
        did, op = genesis([A], A, handle="alice.example.com", pds="https://one.example.com")
        async with resolver.session.post(f"{base}/{did}", json=op) as resp:
            assert resp.status == 200
        ident = await resolver.resolve(did)
        assert ident.signing_key == A.public_key
        assert ident.pds_endpoint == "https://one.example.com"
        assert ident.handle == "alice.example.com"

        op2 = update(operation_cid(op), A, [A], signing=B, pds="https://two.example.com")
        async with resolver.session.post(f"{base}/{did}", json=op2) as resp:
            assert resp.status == 200
        assert (await resolver.resolve(did)).signing_key == A.public_key  # still cached
        fresh = await resolver.resolve(did, force_refresh=True)
        assert fresh.signing_key == B.public_key and fresh.pds_endpoint == "https://two.example.com"
        assert (await resolver.resolve(did)).signing_key == B.public_key

        op3 = update(operation_cid(op2), A, [A], signing=C)
        async with resolver.session.post(f"{base}/{did}", json=op3) as resp:
            assert resp.status == 200
        resolver.purge(did)  # as an #identity event would
        assert (await resolver.resolve(did)).signing_key == C.public_key

        with pytest.raises(ResolutionError, match="not found"):
            await resolver.resolve("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")


async def test_did_web_from_local_server() -> None:
    host = WebHost()
    async with web_host(host) as did, DIDResolver(timeout=5) as resolver:
        host.doc = web_doc(did, A.public_key.multikey())
        ident = await resolver.resolve(did)
        assert ident.did == did and ident.signing_key == A.public_key
        assert "application/did+ld+json" in host.seen_headers[0]["Accept"]


async def test_concurrent_lookups_are_coalesced() -> None:
    host = WebHost(gate=asyncio.Event())
    async with web_host(host) as did, DIDResolver(timeout=5) as resolver:
        host.doc = web_doc(did, A.public_key.multikey())
        lookups = [asyncio.ensure_future(resolver.resolve(did)) for _ in range(25)]
        await wait_for(lambda: host.requests >= 1)
        host.gate.set()  # type: ignore[union-attr]
        results = await asyncio.gather(*lookups)
        assert host.requests == 1
        assert all(r is results[0] for r in results)
        assert resolver.cache.stats.coalesced == 24
        # A burst of forced refreshes (say, many signatures failing after a key
        # rotation) costs one more request, not one each.
        host.gate.clear()  # type: ignore[union-attr]
        forced = [asyncio.ensure_future(resolver.resolve(did, force_refresh=True)) for _ in range(10)]
        plain = [asyncio.ensure_future(resolver.resolve(did)) for _ in range(5)]
        await wait_for(lambda: host.requests >= 2)
        host.gate.set()  # type: ignore[union-attr]
        await asyncio.gather(*forced, *plain)
        assert host.requests == 2


async def test_negative_caching(monotonic: MonotonicFake) -> None:
    host = WebHost(status=404, doc={"error": "nope"})
    async with web_host(host) as did, DIDResolver(timeout=5, negative_ttl=30, clock=monotonic) as resolver:
        for _ in range(3):
            with pytest.raises(ResolutionError, match="not found"):
                await resolver.resolve(did)
        assert host.requests == 1
        host.status, host.doc = 200, web_doc(did, A.public_key.multikey())
        monotonic.now += 31
        assert (await resolver.resolve(did)).signing_key == A.public_key
        assert host.requests == 2


async def test_stale_while_revalidate(monotonic: MonotonicFake) -> None:
    host = WebHost()
    async with (
        web_host(host) as did,
        DIDResolver(timeout=5, ttl=60, stale_ttl=600, clock=monotonic) as resolver,
    ):
        host.doc = web_doc(did, A.public_key.multikey())
        assert (await resolver.resolve(did)).signing_key == A.public_key
        host.doc = web_doc(did, B.public_key.multikey())
        monotonic.now += 61
        # Stale: answered at once from the cache while one refresh runs behind it.
        assert (await resolver.resolve(did)).signing_key == A.public_key
        assert (await resolver.resolve(did)).signing_key == A.public_key
        await wait_for(lambda: getattr(resolver.cache.peek(did), "signing_key", None) == B.public_key)
        assert host.requests == 2
        assert (await resolver.resolve(did)).signing_key == B.public_key
        # Past the stale window the lookup waits for a fresh fetch.
        host.doc = web_doc(did, C.public_key.multikey())
        monotonic.now += 61 + 600
        assert (await resolver.resolve(did)).signing_key == C.public_key
        # A failing refresh keeps serving the stale value rather than an error.
        host.status = 500
        monotonic.now += 61
        assert (await resolver.resolve(did)).signing_key == C.public_key
        await wait_for(lambda: resolver.cache.stats.failures == 1)
        assert (await resolver.resolve(did)).signing_key == C.public_key


async def test_bad_documents_and_failures() -> None:
    host = WebHost()
    async with web_host(host) as did, DIDResolver(timeout=5, negative_ttl=0) as resolver:
        host.doc = web_doc("did:web:elsewhere.com", A.public_key.multikey())
        with pytest.raises(InvalidDIDDocument, match="was resolved"):
            await resolver.resolve(did)
        host.body = b"{" + b" " * 70_000 + b"}"
        with pytest.raises(InvalidDIDDocument, match="response bytes exceeded"):
            await resolver.resolve(did)
        host.body = b"not json"
        with pytest.raises(InvalidDIDDocument, match="JSON"):
            await resolver.resolve(did)
        host.body, host.status = b"", 302
        with pytest.raises(ResolutionError, match="HTTP 302"):
            await resolver.resolve(did)
        host.body, host.status = b"oops", 500
        with pytest.raises(ResolutionError, match="HTTP 500"):
            await resolver.resolve(did)


async def test_timeouts_and_refused_connections() -> None:
    host = WebHost(gate=asyncio.Event())  # never answers until released
    async with web_host(host) as did, DIDResolver(timeout=0.2) as resolver:
        host.doc = web_doc(did, A.public_key.multikey())
        with pytest.raises(ResolutionError, match="no answer within"):
            await resolver.resolve(did)
        host.gate.set()  # type: ignore[union-attr]
    async with DIDResolver(timeout=2, plc_url="http://127.0.0.1:9") as resolver:
        with pytest.raises(ResolutionError):
            await resolver.resolve("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")


async def test_three_distinct_failures_before_io() -> None:
    async with DIDResolver(plc_url="http://127.0.0.1:9") as resolver:
        with pytest.raises(InvalidSyntax):
            await resolver.resolve("did:plc:BAD")
        with pytest.raises(InvalidSyntax):
            await resolver.resolve("not-a-did")
        with pytest.raises(UnsupportedDIDMethod):
            await resolver.resolve("did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc")
        with pytest.raises(UnsupportedDIDMethod):
            await resolver.resolve("did:web:example.com%3A443")
        with pytest.raises(UnsupportedDIDMethod):
            await resolver.resolve("did:web:foo.onion")
        assert resolver.cache.stats.fetches == 0
