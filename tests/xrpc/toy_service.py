"""A toy service over real lexicons: each handler does just enough to exercise the router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from atrepo.core.cid import CID
from atrepo.core.errors import (
    AccountTakedown,
    AuthMissing,
    InternalServerError,
    InvalidToken,
    RateLimitExceeded,
    RecordNotFound,
    RepoNotFound,
    XrpcError,
)
from atrepo.xrpc import RawOutput, SubscriptionContext, XrpcContext, XrpcRouter

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TOKEN = "let-me-in"
#: Raw upload limit of the toy uploadBlob route.
BLOB_LIMIT = 10_000
#: JSON limit of the toy applyWrites route (raised above the 150 KiB default).
APPLY_WRITES_LIMIT = 400_000
CAR_CHUNKS = [b"car-header", b"block-1", b"block-2"]
#: getRepo of this DID fails after its first chunk.
BROKEN_DID = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"


@dataclass
class Seen:
    """What the handlers were called with, for the tests to look at."""

    calls: list[XrpcContext] = field(default_factory=list)
    uploads: list[tuple[str, int, int | None]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)


async def bearer(request: web.Request, params: dict[str, Any]) -> str:
    """A toy auth hook: one accepted token."""
    header = request.headers.get("Authorization")
    if header is None:
        raise AuthMissing("Authentication Required")
    if header != f"Bearer {TOKEN}":
        raise InvalidToken("Token could not be verified")
    return DID


def build_router(*, validate_output: bool = True) -> tuple[XrpcRouter, Seen]:
    router = XrpcRouter(validate_output=validate_output, version="9.9.9-test")
    seen = Seen()

    @router.query("com.atproto.repo.listRecords")
    async def list_records(ctx: XrpcContext) -> dict[str, Any]:
        seen.calls.append(ctx)
        ctx.response_headers["Atproto-Repo-Rev"] = "3kabc"
        record = {
            "uri": f"at://{DID}/{ctx.params['collection']}/3kabc",
            "cid": str(CID.for_dag_cbor(b"\xa0")),
            "value": {"$type": ctx.params["collection"], "n": ctx.params["limit"]},
        }
        return {"records": [record], "cursor": "3kabc"}

    @router.query("com.atproto.repo.describeRepo")
    async def describe_repo(ctx: XrpcContext) -> Any:
        repo = ctx.params["repo"]
        if repo == "did:plc:missing":
            raise RepoNotFound(f"Could not find repo for DID: {repo}")
        if repo == "takendown.test":
            raise AccountTakedown("Account has been taken down")
        if repo == "busy.test":
            raise RateLimitExceeded("Rate Limit Exceeded")
        if repo == "upstream.test":
            raise XrpcError("UpstreamOverloaded", "try later", 503)
        if repo == "oops.test":
            raise InternalServerError("the store lost block bafyfoo")
        if repo == "boom.test":
            raise RuntimeError("secret detail: password=hunter2")
        if repo == "badoutput.test":
            return {"handle": "badoutput.test", "did": "not a did"}
        if repo == "nothing.test":
            return None
        return {
            "handle": repo,
            "did": DID,
            "didDoc": {"id": DID},
            "collections": ["app.bsky.feed.post"],
            "handleIsCorrect": True,
        }

    @router.procedure("com.atproto.repo.createRecord")
    async def create_record(ctx: XrpcContext) -> dict[str, Any]:
        seen.calls.append(ctx)
        rkey = ctx.input.get("rkey", "3kabc")
        cid = CID.for_dag_cbor(b"\xa0")
        return {"uri": f"at://{DID}/{ctx.input['collection']}/{rkey}", "cid": str(cid)}

    @router.procedure("com.atproto.repo.applyWrites", json_limit=APPLY_WRITES_LIMIT)
    async def apply_writes(ctx: XrpcContext) -> dict[str, Any]:
        seen.calls.append(ctx)
        return {}

    @router.procedure("com.atproto.repo.uploadBlob", auth=bearer, raw_limit=BLOB_LIMIT)
    async def upload_blob(ctx: XrpcContext) -> dict[str, Any]:
        assert ctx.body is not None
        data = bytearray()
        async for chunk in ctx.body:
            data += chunk
        seen.uploads.append((ctx.body.content_type, ctx.body.received, ctx.body.length))
        blob = {"$type": "blob", "ref": CID.for_raw(bytes(data)), "mimeType": ctx.body.content_type}
        return {"blob": {**blob, "size": len(data)}}

    @router.query("com.atproto.sync.getRepo")
    async def get_repo(ctx: XrpcContext) -> RawOutput | web.StreamResponse:
        if ctx.params["did"] == BROKEN_DID:

            async def broken() -> AsyncIterator[bytes]:
                yield CAR_CHUNKS[0]
                raise RuntimeError("block store went away")

            return RawOutput("application/vnd.ipld.car", broken())
        if ctx.params["did"] != DID:  # a relay sends getRepo to the account's host
            location = f"https://pds.example/xrpc/com.atproto.sync.getRepo?did={ctx.params['did']}"
            return web.Response(status=302, headers={"Location": location})

        async def stream() -> AsyncIterator[bytes]:
            for chunk in CAR_CHUNKS:
                yield chunk

        return RawOutput("application/vnd.ipld.car", stream())

    @router.query("com.atproto.sync.getBlob")
    async def get_blob(ctx: XrpcContext) -> RawOutput:
        if ctx.params["did"] != DID:
            raise RecordNotFound("no such blob")  # any typed error will do here
        ctx.response_headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return RawOutput("image/png", b"\x89PNG fake")

    @router.query("com.atproto.sync.getLatestCommit")
    async def get_latest_commit(ctx: XrpcContext) -> RawOutput:
        return RawOutput("text/html", b"<p>not what the lexicon says</p>")

    @router.subscription("com.atproto.sync.subscribeRepos")
    async def subscribe_repos(ctx: SubscriptionContext) -> None:
        seen.subscriptions.append(ctx.params)
        if ctx.params.get("cursor") == 999:
            raise XrpcError("FutureCursor", "Cursor in the future.", 400)
        await ctx.ws.send_bytes(b"hello")

    return router, seen
