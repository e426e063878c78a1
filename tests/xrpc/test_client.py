"""The XRPC client against the router: values both ways, errors mapped back to their classes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from toy_service import CAR_CHUNKS, DID, TOKEN, build_router

from atrepo.core import errors
from atrepo.core.cid import CID
from atrepo.xrpc import XrpcClient, error_from_reply


@pytest.fixture
async def client(serve: Any) -> AsyncIterator[XrpcClient]:
    router, _ = build_router()
    async with XrpcClient(await serve(router.app()), timeout=10) as c:
        yield c


async def test_query_and_procedure_values(client: XrpcClient) -> None:
    page = await client.query(
        "com.atproto.repo.listRecords",
        {"repo": DID, "collection": "app.bsky.feed.post", "limit": 3, "reverse": False, "cursor": None},
    )
    assert page["records"][0]["value"] == {"$type": "app.bsky.feed.post", "n": 3}
    record = {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2024-01-01T00:00:00.000Z"}
    out = await client.procedure(
        "com.atproto.repo.createRecord",
        input={"repo": DID, "collection": "app.bsky.feed.post", "record": record},
    )
    assert out["uri"].startswith(f"at://{DID}/app.bsky.feed.post/")
    # non-JSON replies come back as bytes
    assert await client.query("com.atproto.sync.getRepo", {"did": DID}) == b"".join(CAR_CHUNKS)


async def test_raw_input_and_links_decoded(client: XrpcClient) -> None:
    client.token = TOKEN
    data = b"\x00\x01 blob bytes"
    out = await client.procedure("com.atproto.repo.uploadBlob", input=data, encoding="image/jpeg")
    assert out["blob"]["ref"] == CID.for_raw(data)  # {"$link"} back to a CID
    assert out["blob"]["mimeType"] == "image/jpeg"

    async def stream() -> AsyncIterator[bytes]:
        yield data[:4]
        yield data[4:]

    out = await client.procedure("com.atproto.repo.uploadBlob", input=stream(), encoding="image/jpeg")
    assert out["blob"]["size"] == len(data)


@pytest.mark.parametrize(
    ("repo", "cls", "status"),
    [
        ("did:plc:missing", errors.RepoNotFound, 400),
        ("takendown.test", errors.AccountTakedown, 401),
        ("busy.test", errors.RateLimitExceeded, 429),
        ("boom.test", errors.InternalServerError, 500),
    ],
)
async def test_error_replies_become_their_classes(
    client: XrpcClient, repo: str, cls: type[errors.AtrepoError], status: int
) -> None:
    with pytest.raises(cls) as caught:
        await client.query("com.atproto.repo.describeRepo", {"repo": repo})
    assert type(caught.value) is cls
    assert caught.value.to_xrpc()[0] == status
    assert "hunter2" not in str(caught.value)


async def test_errors_round_trip(client: XrpcClient) -> None:
    """Local error -> reply -> client error: same name, same status, same message."""
    with pytest.raises(errors.XrpcError) as caught:
        await client.query("com.atproto.repo.describeRepo", {"repo": "upstream.test"})
    assert (caught.value.error, caught.value.status) == ("UpstreamOverloaded", 503)
    assert caught.value.to_xrpc() == (503, {"error": "UpstreamOverloaded", "message": "try later"})

    with pytest.raises(errors.InvalidRequest, match=r"Invalid com\.atproto\.repo\.listRecords params: limit"):
        await client.query("com.atproto.repo.listRecords", {"repo": DID, "collection": "a.b.c", "limit": 0})
    with pytest.raises(errors.MethodNotImplemented):
        await client.query("com.example.nobody.serves")
    with pytest.raises(errors.AuthMissing):
        await client.procedure("com.atproto.repo.uploadBlob", input=b"x")
    client.token = "wrong"
    with pytest.raises(errors.InvalidToken):
        await client.procedure("com.atproto.repo.uploadBlob", input=b"x")
    with pytest.raises(errors.PayloadTooLarge):
        client.token = TOKEN
        await client.procedure("com.atproto.repo.uploadBlob", input=b"x" * 20_000)


async def test_replies_without_an_xrpc_body(serve: Any) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query["status"]), text="<html>bad gateway</html>")

    app = web.Application()
    app.router.add_get("/xrpc/com.example.proxy", html)
    async with XrpcClient(await serve(app), timeout=10) as client:
        with pytest.raises(errors.XrpcError) as caught:
            await client.query("com.example.proxy", {"status": 502})
        assert (caught.value.error, caught.value.status) == ("UpstreamFailure", 502)
        with pytest.raises(errors.InvalidRequest):  # other 4xx: the generic name
            await client.query("com.example.proxy", {"status": 418})
        with pytest.raises(errors.XrpcError) as caught:
            await client.query("com.example.proxy", {"status": 404})
        assert caught.value.error == "XRPCNotSupported"


async def test_reply_size_is_bounded(serve: Any) -> None:
    router, _ = build_router()
    async with XrpcClient(await serve(router.app()), timeout=10, max_response_bytes=10) as client:
        with pytest.raises(errors.LimitExceeded):
            await client.query("com.atproto.repo.listRecords", {"repo": DID, "collection": "a.b.c"})
        with pytest.raises(errors.LimitExceeded):  # streamed, no Content-Length
            await client.query("com.atproto.sync.getRepo", {"did": DID})


def test_error_from_reply_shapes() -> None:
    exc = error_from_reply(400, b'{"error":"RecordNotFound","message":"Could not locate record"}')
    assert type(exc) is errors.RecordNotFound and str(exc) == "Could not locate record"
    exc = error_from_reply(400, b'{"error":"InvalidSwap"}')
    assert type(exc) is errors.InvalidSwap and str(exc) == "InvalidSwap (HTTP 400)"
    exc = error_from_reply(400, b'{"error":"SomethingNew"}')  # no class: generic, keeps the name
    assert isinstance(exc, errors.XrpcError) and (exc.error, exc.status) == ("SomethingNew", 400)
    assert str(exc) == "SomethingNew (HTTP 400)"
    assert type(error_from_reply(500, b"")) is errors.InternalServerError
    assert type(error_from_reply(401, b'{"error": 5}')) is errors.AuthRequired


async def test_bad_arguments_fail_before_sending(client: XrpcClient) -> None:
    with pytest.raises(ValueError, match="not an XRPC method"):
        await client.query("../../etc/passwd")
    with pytest.raises(TypeError, match="parameter"):
        await client.query("com.atproto.repo.listRecords", {"limit": 1.5})
    with pytest.raises(TypeError, match="input"):
        await client.procedure("com.atproto.repo.createRecord", input="text")


async def test_header_layers(serve: Any) -> None:
    """Client headers < token < per-call headers; names compared without case."""
    router, _ = build_router()
    base = await serve(router.app())
    async with XrpcClient(base, token=TOKEN, headers={"authorization": "Bearer stale"}, timeout=10) as client:
        out = await client.procedure("com.atproto.repo.uploadBlob", input=b"x", encoding="image/gif")
        assert out["blob"]["size"] == 1
        with pytest.raises(errors.InvalidToken):
            await client.procedure(
                "com.atproto.repo.uploadBlob", input=b"x", headers={"AUTHORIZATION": "Bearer per-call"}
            )
