"""The router's delegate hook: calls handed to something else before local routing, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from toy_service import build_router

from atrepo.core.errors import XrpcError
from atrepo.xrpc.server import ForwardedReply

LIST = "com.atproto.repo.listRecords"
SUBSCRIBE = "com.atproto.sync.subscribeRepos"


class Recorder:
    """A delegate that forwards calls carrying ``X-Forward`` and records every offer."""

    def __init__(self) -> None:
        self.offers: list[tuple[str, str, bool]] = []

    async def __call__(self, request: web.Request, nsid: str, served: bool) -> ForwardedReply | None:
        self.offers.append((request.method, nsid, served))
        mode = request.headers.get("X-Forward")
        if mode is None:
            return None
        if mode == "raise":
            raise XrpcError("UpstreamFailure", "Upstream service unreachable", 502)
        headers = {"Content-Type": "application/json", "atproto-repo-rev": "rev1"}
        if mode == "bytes":
            return ForwardedReply(418, headers, json.dumps({"nsid": nsid}).encode())

        async def stream() -> AsyncIterator[bytes]:
            yield b'{"streamed":'
            if mode == "break":
                raise ConnectionResetError("the other service went away")
            yield b"true}"

        return ForwardedReply(200, headers, stream())


@pytest.fixture
async def delegated(serve: Any) -> AsyncIterator[tuple[str, Recorder]]:
    router, _ = build_router()
    recorder = Recorder()
    router.delegate(recorder)
    yield await serve(router.app()), recorder


async def get(
    http: aiohttp.ClientSession, url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    async with http.request(method, url, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, dict(resp.headers)


async def test_declined_calls_are_routed_as_usual(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, recorder = delegated
    status, body, _ = await get(
        http, f"{base}/xrpc/{LIST}?repo=did:plc:ewvi7nxzyoun6zhxrhs64oiz&collection=a.b.c"
    )
    assert status == 200 and "records" in body
    status, body, _ = await get(http, f"{base}/xrpc/com.example.unknown")
    assert (status, body["error"]) == (501, "MethodNotImplemented")
    assert recorder.offers == [("GET", LIST, True), ("GET", "com.example.unknown", False)]


async def test_forwarded_replies_are_sent_as_they_are(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, _ = delegated
    # any status, no lexicon check, the delegate's headers (CORS still added)
    status, body, headers = await get(
        http, f"{base}/xrpc/com.example.unknown", headers={"X-Forward": "bytes"}
    )
    assert (status, body, headers["atproto-repo-rev"]) == (418, {"nsid": "com.example.unknown"}, "rev1")
    assert headers["Access-Control-Allow-Origin"] == "*"
    # a served route can be taken over too, and a stream is relayed as it comes
    status, body, _ = await get(http, f"{base}/xrpc/{LIST}", headers={"X-Forward": "stream"})
    assert (status, body) == (200, {"streamed": True})
    status, body, _ = await get(http, f"{base}/xrpc/{LIST}", method="HEAD", headers={"X-Forward": "stream"})
    assert (status, body) == (200, None)


async def test_delegate_errors_are_replies(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, _ = delegated
    status, body, _ = await get(http, f"{base}/xrpc/com.example.unknown", headers={"X-Forward": "raise"})
    assert (status, body) == (502, {"error": "UpstreamFailure", "message": "Upstream service unreachable"})


async def test_a_stream_failing_midway_is_cut(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, _ = delegated
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(http, f"{base}/xrpc/{LIST}", headers={"X-Forward": "break"})


async def test_known_methods_get_the_method_check_first(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, recorder = delegated
    # getTimeline is in the lexicons but not served: a POST to it is refused before the delegate
    status, body, _ = await get(
        http, f"{base}/xrpc/app.bsky.feed.getTimeline", method="POST", headers={"X-Forward": "bytes"}
    )
    assert (status, body["error"]) == (400, "InvalidRequest")
    assert recorder.offers == []


async def test_subscriptions_and_health_are_never_offered(
    delegated: tuple[str, Recorder], http: aiohttp.ClientSession
) -> None:
    base, recorder = delegated
    status, _, _ = await get(http, f"{base}/xrpc/_health", headers={"X-Forward": "bytes"})
    assert status == 200
    async with http.ws_connect(f"{base}/xrpc/{SUBSCRIBE}", headers={"X-Forward": "bytes"}) as ws:
        await asyncio.sleep(0)
        await ws.close()
    assert recorder.offers == []


async def test_removing_the_delegate(serve: Any, http: aiohttp.ClientSession) -> None:
    router, _ = build_router()
    recorder = Recorder()
    router.delegate(recorder)
    router.delegate(None)
    base = await serve(router.app())
    status, _, _ = await get(http, f"{base}/xrpc/com.example.unknown", headers={"X-Forward": "bytes"})
    assert status == 501 and recorder.offers == []
