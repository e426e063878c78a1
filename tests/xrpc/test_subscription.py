"""Subscription routes: declared by NSID, params checked, errors as a frame then a close."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from toy_service import build_router

from atrepo.core.events import ErrorFrame, decode_frame

SUBSCRIBE = "/xrpc/com.atproto.sync.subscribeRepos"


@pytest.fixture
async def toy(serve: Any) -> tuple[str, Any]:
    router, seen = build_router()
    return await serve(router.app()), seen


async def test_params_reach_the_handler_typed(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    async with http.ws_connect(base.replace("http", "ws") + SUBSCRIBE + "?cursor=42") as ws:
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"hello")
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
    assert seen.subscriptions == [{"cursor": 42}]


@pytest.mark.parametrize(
    ("query", "name"),
    [("?cursor=soon", "InvalidRequest"), ("?cursor=999", "FutureCursor")],
)
async def test_errors_are_a_frame_then_a_policy_close(
    toy: tuple[str, Any], http: aiohttp.ClientSession, query: str, name: str
) -> None:
    base, _ = toy
    async with http.ws_connect(base.replace("http", "ws") + SUBSCRIBE + query) as ws:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.BINARY
        frame = decode_frame(msg.data)
        assert isinstance(frame, ErrorFrame) and frame.error == name
        assert frame.message
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
        assert msg.extra == name


async def test_plain_http_to_a_subscription(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    async with http.get(base + SUBSCRIBE) as resp:
        assert resp.status == 426
        assert resp.headers["Upgrade"] == "websocket"
        assert (await resp.json())["error"] == "InvalidRequest"
    async with http.post(base + SUBSCRIBE) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == "Incorrect HTTP method (POST) expected GET"
