"""The XRPC router over real HTTP on 127.0.0.1: params, bodies, limits, errors, replies, CORS."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from toy_service import APPLY_WRITES_LIMIT, BLOB_LIMIT, BROKEN_DID, CAR_CHUNKS, DID, TOKEN, build_router

from atrepo.core.cid import CID
from atrepo.core.errors import LexiconNotFound
from atrepo.xrpc import XrpcRouter

LIST = "/xrpc/com.atproto.repo.listRecords"
DESCRIBE = "/xrpc/com.atproto.repo.describeRepo"
CREATE = "/xrpc/com.atproto.repo.createRecord"
APPLY = "/xrpc/com.atproto.repo.applyWrites"
UPLOAD = "/xrpc/com.atproto.repo.uploadBlob"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INTERNAL = {"error": "InternalServerError", "message": "Internal Server Error"}


@pytest.fixture
async def toy(serve: Any) -> AsyncIterator[tuple[str, Any]]:
    router, seen = build_router()
    yield await serve(router.app()), seen


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with http.request(method, url, **kwargs) as resp:
        text = await resp.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return resp.status, body, resp.headers


def record_body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}
    return {"repo": DID, "collection": "app.bsky.feed.post", "record": record, **extra}


# --- declaring routes -------------------------------------------------------------------


def test_declarations_are_checked_at_startup() -> None:
    router = XrpcRouter()

    async def handler(ctx: Any) -> None:
        return None

    with pytest.raises(LexiconNotFound):
        router.add("com.example.nothing.here", handler)
    with pytest.raises(LexiconNotFound):  # a record type is not a method
        router.add("app.bsky.feed.post", handler)
    with pytest.raises(ValueError, match="is a procedure, not a query"):
        router.query("com.atproto.repo.createRecord")
    with pytest.raises(ValueError, match="is a query, not a subscription"):
        router.subscription("com.atproto.repo.listRecords")
    with pytest.raises(ValueError, match="json_limit does not apply"):
        router.add("com.atproto.repo.uploadBlob", handler, json_limit=10)
    with pytest.raises(ValueError, match="raw_limit does not apply"):
        router.add("com.atproto.repo.createRecord", handler, raw_limit=10)
    with pytest.raises(ValueError, match="must be positive"):
        router.add("com.atproto.repo.createRecord", handler, json_limit=0)
    router.add("com.atproto.repo.listRecords", handler)
    with pytest.raises(ValueError, match="already has a handler"):
        router.add("com.atproto.repo.listRecords", handler)
    assert router.nsids == ["com.atproto.repo.listRecords"]


# --- parameters -------------------------------------------------------------------------


async def test_params_are_typed_and_defaulted(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    query = {"repo": DID, "collection": "app.bsky.feed.post", "reverse": "true", "cursor": ""}
    status, body, headers = await fetch(http, "GET", base + LIST, params=query)
    assert status == 200, body
    assert seen.calls[-1].params == {
        "repo": DID,
        "collection": "app.bsky.feed.post",
        "limit": 50,  # the lexicon's default
        "reverse": True,  # a bool, not "true"; the empty cursor counts as absent
    }
    assert body["records"][0]["value"] == {"$type": "app.bsky.feed.post", "n": 50}
    assert headers["Atproto-Repo-Rev"] == "3kabc"
    assert headers["Content-Type"] == "application/json; charset=utf-8"

    await fetch(http, "GET", base + LIST, params={**query, "limit": "7", "unknown": "ignored"})
    assert seen.calls[-1].params["limit"] == 7


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"collection": "app.bsky.feed.post"}, "repo"),  # required
        ({"repo": DID, "collection": "app.bsky.feed.post", "limit": "ten"}, "limit"),
        ({"repo": DID, "collection": "app.bsky.feed.post", "limit": "1000"}, "limit"),  # > maximum 100
        ({"repo": DID, "collection": "app.bsky.feed.post", "limit": "0x10"}, "limit"),
        ({"repo": DID, "collection": "not an nsid"}, "collection"),
        ({"repo": DID, "collection": "app.bsky.feed.post", "reverse": "yes"}, "reverse"),
        ([("repo", DID), ("collection", "app.bsky.feed.post"), ("limit", "1"), ("limit", "2")], "limit"),
    ],
)
async def test_invalid_params_are_400_naming_the_parameter(
    toy: tuple[str, Any], http: aiohttp.ClientSession, query: Any, named: str
) -> None:
    base, seen = toy
    status, body, _ = await fetch(http, "GET", base + LIST, params=query)
    assert status == 400
    assert body["error"] == "InvalidRequest"
    assert body["message"].startswith("Invalid com.atproto.repo.listRecords params: ")
    assert named in body["message"]
    assert seen.calls == []  # the handler never ran


# --- methods, paths, unknown methods -------------------------------------------------------


async def test_wrong_http_method(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    status, body, _ = await fetch(http, "GET", base + CREATE)
    assert (status, body) == (
        400,
        {"error": "InvalidRequest", "message": "Incorrect HTTP method (GET) expected POST"},
    )
    status, body, _ = await fetch(http, "POST", base + LIST, params={"repo": DID, "collection": "a.b.c"})
    assert (status, body["message"]) == (400, "Incorrect HTTP method (POST) expected GET")
    # a method the lexicons know but nobody serves is still checked first, as the reference does
    status, body, _ = await fetch(http, "GET", base + "/xrpc/com.atproto.repo.importRepo")
    assert (status, body["message"]) == (400, "Incorrect HTTP method (GET) expected POST")


async def test_head_is_a_get_for_queries(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    async with http.head(base + LIST, params={"repo": DID, "collection": "a.b.c"}) as resp:
        assert resp.status == 200
        assert await resp.read() == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/xrpc/com.example.nobody.serves"),
        ("POST", "/xrpc/com.example.nobody.serves"),
        ("POST", "/xrpc/com.atproto.repo.importRepo"),  # in the lexicons, not served here
        ("GET", "/xrpc/app.bsky.feed.getTimeline"),
    ],
)
async def test_unknown_method_is_501(
    toy: tuple[str, Any], http: aiohttp.ClientSession, method: str, path: str
) -> None:
    base, _ = toy
    status, body, _ = await fetch(http, method, base + path)
    assert (status, body) == (501, {"error": "MethodNotImplemented", "message": "Method Not Implemented"})


async def test_xrpc_paths(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    for bad in ("/xrpc/", "/xrpc/a..b", "/xrpc/a.b/c", "/xrpc/.a.b", "/xrpc/a_b.c"):
        status, body, _ = await fetch(http, "GET", base + bad)
        assert (status, body) == (400, {"error": "InvalidRequest", "message": "invalid xrpc path"}), bad
    status, _, _ = await fetch(http, "GET", base + LIST + "/", params={"repo": DID, "collection": "a.b.c"})
    assert status == 200  # a trailing slash is allowed, as the reference
    async with http.get(base + "/not-xrpc") as resp:
        assert resp.status == 404  # not the router's business


async def test_health(serve: Any, http: aiohttp.ClientSession) -> None:
    router, _ = build_router()
    base = await serve(router.app())
    assert (await fetch(http, "GET", base + "/xrpc/_health"))[:2] == (200, {"version": "9.9.9-test"})

    async def broken() -> None:
        raise OSError("database is locked")

    sick = XrpcRouter(version="1.2.3", health_check=broken)
    base = await serve(sick.app())
    status, body, _ = await fetch(http, "GET", base + "/xrpc/_health")
    assert (status, body) == (503, {"version": "1.2.3", "error": "Service Unavailable"})


# --- request bodies ------------------------------------------------------------------------


async def test_json_input_is_validated_and_passed(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    status, body, _ = await fetch(http, "POST", base + CREATE, json=record_body(rkey="3kxyz"))
    assert status == 200, body
    assert body["uri"] == f"at://{DID}/app.bsky.feed.post/3kxyz"
    ctx = seen.calls[-1]
    assert ctx.input["record"]["text"] == "hi"
    assert ctx.encoding == "application/json"
    assert ctx.body is None


async def test_json_input_failures(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    payload = json.dumps(record_body()).encode()
    as_json = {"Content-Type": "application/json"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data": payload, "headers": {"Content-Type": "text/plain"}}, "Wrong request encoding"),
        (
            {"data": payload, "skip_auto_headers": ["Content-Type"]},
            "Request encoding (Content-Type) required",
        ),
        ({"data": b"{not json", "headers": as_json}, "Invalid com.atproto.repo.createRecord input"),
        ({"json": {"repo": DID, "collection": "app.bsky.feed.post"}}, "record"),
        ({"json": record_body(rkey=7)}, "rkey"),
        ({"data": b"", "headers": as_json}, "A request body is expected but none was provided"),
    ]
    for kwargs, words in cases:
        status, body, _ = await fetch(http, "POST", base + CREATE, **kwargs)
        assert status == 400 and body["error"] == "InvalidRequest", (kwargs, body)
        assert words in body["message"], (words, body)
    status, body, _ = await fetch(
        http, "POST", base + CREATE, data=payload, headers={"Content-Type": "text/plain"}
    )
    assert body["message"] == "Wrong request encoding (Content-Type): text/plain"
    # a charset parameter is fine
    status, _, _ = await fetch(
        http, "POST", base + CREATE, data=payload, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200
    assert len(seen.calls) == 1


async def test_no_body_at_all(toy: tuple[str, Any]) -> None:
    """No Content-Length, no Transfer-Encoding: the reference's "missing" body (a raw request)."""
    base, _ = toy
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /xrpc/com.atproto.repo.createRecord HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(payload) == {
        "error": "InvalidRequest",
        "message": "A request body is expected but none was provided",
    }


async def test_body_cut_short_is_the_clients_failure(
    toy: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    base, seen = toy
    host, port = base.removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO, logger="atrepo.xrpc"):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /xrpc/com.atproto.repo.uploadBlob HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789".encode()
        )
        await writer.drain()
        writer.close()  # 10 of the 100 bytes promised
        await writer.wait_closed()

        async def logged() -> None:
            while not any(r.name == "atrepo.xrpc.access" for r in caplog.records):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(logged(), timeout=10)
    access = [r.getMessage() for r in caplog.records if r.name == "atrepo.xrpc.access"]
    assert access[0].startswith("POST com.atproto.repo.uploadBlob 400 ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert seen.uploads == []


async def test_body_where_none_is_expected(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    query = {"repo": DID, "collection": "app.bsky.feed.post"}
    status, body, _ = await fetch(http, "GET", base + LIST, params=query, data=b"{}")
    assert (status, body["message"]) == (400, "A request body was provided when none was expected")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    status, body, _ = await fetch(http, "GET", base + LIST, params=query, data=chunks())
    assert (status, body["message"]) == (400, "A request body was provided when none was expected")

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    # chunked framing with no bytes in it is no body
    assert (await fetch(http, "GET", base + LIST, params=query, data=nothing()))[0] == 200


async def test_json_body_limit(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    big = record_body("x" * 160_000)  # over the 150 KiB default
    status, body, _ = await fetch(http, "POST", base + CREATE, json=big)
    assert (status, body["error"]) == (413, "PayloadTooLarge")

    payload = json.dumps(big).encode()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(payload), 16_384):
            yield payload[i : i + 16_384]

    status, body, _ = await fetch(
        http, "POST", base + CREATE, data=chunked(), headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]) == (413, "PayloadTooLarge")
    assert seen.calls == []

    # a route that raised its limit takes it
    writes = [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "a.b.c", "value": {"t": "y" * 200_000}}
    ]
    status, body, _ = await fetch(http, "POST", base + APPLY, json={"repo": DID, "writes": writes})
    assert status == 200, body
    over = [{**writes[0], "value": {"t": "y" * APPLY_WRITES_LIMIT}}]
    status, body, _ = await fetch(http, "POST", base + APPLY, json={"repo": DID, "writes": over})
    assert status == 413


# --- raw bodies (streamed) -------------------------------------------------------------------


async def test_raw_upload_is_streamed(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    data = bytes(range(256)) * 30  # 7,680 bytes, under the toy limit
    headers = {**AUTH, "Content-Type": "image/png"}
    status, body, _ = await fetch(http, "POST", base + UPLOAD, data=data, headers=headers)
    assert status == 200, body
    assert body["blob"] == {
        "$type": "blob",
        "ref": {"$link": str(CID.for_raw(data))},
        "mimeType": "image/png",
        "size": len(data),
    }
    assert seen.uploads[-1] == ("image/png", len(data), len(data))

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    status, body, _ = await fetch(http, "POST", base + UPLOAD, data=chunked(), headers=headers)
    assert status == 200 and body["blob"]["size"] == len(data)
    assert seen.uploads[-1] == ("image/png", len(data), None)


async def test_raw_upload_limit(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    data = b"z" * (BLOB_LIMIT + 1)
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    # declared too large: refused before the handler runs
    status, body, resp_headers = await fetch(http, "POST", base + UPLOAD, data=data, headers=headers)
    assert (status, body["error"]) == (413, "PayloadTooLarge")
    assert resp_headers.get("Connection") == "close"
    assert seen.uploads == []

    async def chunked() -> AsyncIterator[bytes]:  # undeclared: stopped while the handler reads
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    status, body, _ = await fetch(http, "POST", base + UPLOAD, data=chunked(), headers=headers)
    assert (status, body["error"]) == (413, "PayloadTooLarge")
    assert seen.uploads == []


async def test_raw_upload_needs_a_content_type_and_a_body(
    toy: tuple[str, Any], http: aiohttp.ClientSession
) -> None:
    base, _ = toy
    status, body, _ = await fetch(
        http, "POST", base + UPLOAD, data=b"abc", headers=AUTH, skip_auto_headers=["Content-Type"]
    )
    assert (status, body["message"]) == (400, "Request encoding (Content-Type) required but not provided")
    status, body, _ = await fetch(
        http, "POST", base + UPLOAD, data=b"", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert status == 200 and body["blob"]["size"] == 0  # Content-Length: 0 is an (empty) body


async def test_auth_runs_before_the_body_is_read(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, seen = toy
    too_big = b"z" * (BLOB_LIMIT * 2)
    status, body, _ = await fetch(
        http, "POST", base + UPLOAD, data=too_big, headers={"Content-Type": "image/png"}
    )
    assert (status, body["error"]) == (401, "AuthMissing")
    headers = {"Content-Type": "image/png", "Authorization": "Bearer nope"}
    status, body, _ = await fetch(http, "POST", base + UPLOAD, data=b"x", headers=headers)
    assert (status, body["error"]) == (400, "InvalidToken")
    assert seen.uploads == []


# --- handler errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "status", "name"),
    [
        ("did:plc:missing", 400, "RepoNotFound"),
        ("takendown.test", 401, "AccountTakedown"),
        ("busy.test", 429, "RateLimitExceeded"),
        ("upstream.test", 503, "UpstreamOverloaded"),
    ],
)
async def test_typed_errors_answer_with_their_name_and_status(
    toy: tuple[str, Any], http: aiohttp.ClientSession, repo: str, status: int, name: str
) -> None:
    base, _ = toy
    got_status, body, headers = await fetch(http, "GET", base + DESCRIBE, params={"repo": repo})
    assert (got_status, body["error"]) == (status, name)
    assert body["message"] and set(body) == {"error", "message"}
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_unexpected_exception_is_a_bare_500(
    toy: tuple[str, Any], http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = toy
    with caplog.at_level(logging.ERROR, logger="atrepo.xrpc"):
        status, body, _ = await fetch(http, "GET", base + DESCRIBE, params={"repo": "boom.test"})
    assert (status, body) == (500, INTERNAL)
    failures = [r for r in caplog.records if r.name == "atrepo.xrpc" and r.exc_info]
    assert failures and "hunter2" in failures[0].getMessage()  # the log has it, the client does not
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is RuntimeError


async def test_internal_error_raised_on_purpose_hides_its_message(
    toy: tuple[str, Any], http: aiohttp.ClientSession
) -> None:
    base, _ = toy
    status, body, _ = await fetch(http, "GET", base + DESCRIBE, params={"repo": "oops.test"})
    assert (status, body) == (500, INTERNAL)


# --- replies ----------------------------------------------------------------------------------


async def test_output_validation_catches_a_bad_handler(
    toy: tuple[str, Any], serve: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = toy
    with caplog.at_level(logging.ERROR, logger="atrepo.xrpc"):
        status, body, _ = await fetch(http, "GET", base + DESCRIBE, params={"repo": "badoutput.test"})
    assert (status, body) == (500, INTERNAL)
    assert any("com.atproto.repo.describeRepo output" in r.getMessage() for r in caplog.records)
    for repo in ("nothing.test",):  # no body where the lexicon promises one
        assert (await fetch(http, "GET", base + DESCRIBE, params={"repo": repo}))[:2] == (500, INTERNAL)
    status, body, _ = await fetch(
        http, "GET", base + "/xrpc/com.atproto.sync.getLatestCommit", params={"did": DID}
    )
    assert (status, body) == (500, INTERNAL)  # text/html where the lexicon says JSON

    # without validation (production) the same handlers' replies go out as they are
    router, _ = build_router(validate_output=False)
    loose = await serve(router.app())
    status, body, _ = await fetch(http, "GET", loose + DESCRIBE, params={"repo": "badoutput.test"})
    assert (status, body) == (200, {"handle": "badoutput.test", "did": "not a did"})


async def test_raw_replies(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    other = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    async with http.get(
        base + "/xrpc/com.atproto.sync.getRepo", params={"did": other}, allow_redirects=False
    ) as resp:  # a handler may build its own reply: a redirect
        assert resp.status == 302
        assert resp.headers["Location"].endswith(f"getRepo?did={other}")
    async with http.get(base + "/xrpc/com.atproto.sync.getRepo", params={"did": DID}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/vnd.ipld.car"
        assert await resp.read() == b"".join(CAR_CHUNKS)
    async with http.get(
        base + "/xrpc/com.atproto.sync.getBlob", params={"did": DID, "cid": "bafkqaaa"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert await resp.read() == b"\x89PNG fake"


async def test_a_stream_failing_midway_is_cut_not_ended(
    toy: tuple[str, Any], http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Headers are out: the connection is dropped so a truncated CAR cannot pass for a whole one."""
    base, _ = toy
    with caplog.at_level(logging.ERROR, logger="atrepo.xrpc"):
        async with http.get(base + "/xrpc/com.atproto.sync.getRepo", params={"did": BROKEN_DID}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert any(r.name == "atrepo.xrpc" and r.exc_info for r in caplog.records)


# --- CORS and the access log ---------------------------------------------------------------------


async def test_cors_as_the_reference(toy: tuple[str, Any], http: aiohttp.ClientSession) -> None:
    base, _ = toy
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with http.options(base + CREATE, headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE"
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
        assert resp.headers["Access-Control-Max-Age"] == "86400"
    for path in (LIST, "/xrpc/_health", "/xrpc/com.example.nobody.serves"):
        async with http.get(base + path, headers={"Origin": "https://app.example"}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*", path


async def test_access_log_line(
    toy: tuple[str, Any], http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = toy
    with caplog.at_level(logging.INFO, logger="atrepo.xrpc.access"):
        await fetch(http, "GET", base + LIST, params={"repo": DID, "collection": "a.b.c"})
        await fetch(http, "GET", base + "/xrpc/com.example.nobody.serves")
    lines = [r.getMessage() for r in caplog.records if r.name == "atrepo.xrpc.access"]
    assert lines[0].startswith("GET com.atproto.repo.listRecords 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET com.example.nobody.serves 501 ")


async def test_router_mounts_beside_other_routes(serve: Any, http: aiohttp.ClientSession) -> None:
    router, _ = build_router()
    app = web.Application()

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", root)
    router.setup(app)
    base = await serve(app)
    async with http.get(base + "/") as resp:
        assert await resp.text() == "hello"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # CORS covers the whole app
    assert (await fetch(http, "GET", base + "/xrpc/_health"))[0] == 200
