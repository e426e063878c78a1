"""Fetch failures back off, per repository and per host, and a 429 is respected; plus the small parsers.

A host's public URL is a forwarding proxy (``RateLimitedProxy``) that answers
``429 Retry-After: 1`` to the first ``getRepo`` calls, so the account's DID
document names the proxy and the consumer meets the 429 on its real path.
"""

from __future__ import annotations

import socket
from email.utils import formatdate

import aiohttp
from aiohttp import web
from sync_support import SyncEnv, wait_for

from atrepo.sync import CollectionFilter, RunningSync
from atrepo.sync.engine import http_base, retry_after

HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding"})


class RateLimitedProxy:
    """Forwards every request to a host, except that the first ``limited`` ``getRepo`` calls get a 429."""

    def __init__(self, limited: int) -> None:
        self.limited = limited
        self.get_repo_calls = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.upstream = ""
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None

    async def start(self, upstream: str) -> None:
        self.upstream = upstream
        self.http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/xrpc/com.atproto.sync.getRepo":
            self.get_repo_calls += 1
            if self.get_repo_calls <= self.limited:
                return web.json_response(
                    {"error": "RateLimitExceeded", "message": "slow down"},
                    status=429,
                    headers={"Retry-After": "1"},
                )
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with self.http.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as resp:
            out = web.Response(status=resp.status, body=await resp.read())
            for key, value in resp.headers.items():
                if key.lower() not in HOP:
                    out.headers[key] = value
            return out


async def test_429_is_respected_then_the_fetch_succeeds(sync_env: SyncEnv) -> None:
    proxy = RateLimitedProxy(limited=1)
    await sync_env.add_host()  # the PLC directory's host
    try:
        host = await sync_env.add_host(public_url=proxy.url)
        await proxy.start(host.url)
        alice = await host.create_account("alice.test")
        await sync_env.post(alice, "hello")
        running = await sync_env.start_sync(host.url, dids=(alice.did,))
        # written while the fetch waits out the 429: buffered, then replayed over the fetched state
        await sync_env.post(alice, "during the backoff")
        await sync_env.post(alice, "during the backoff, 2")
        await sync_env.wait_mirrored(running, alice)
        assert running.engine.counts["buffered"] >= 2 and running.engine.counts["replayed"] >= 2
        assert proxy.get_repo_calls == 2
        assert running.engine.counts["fetch_failures"] == 1 and running.engine.counts["backfills"] == 1
        repo = await running.engine.worker.read(lambda s: s.get_repo(alice.did))
        assert repo is not None and repo.error is None and repo.host == proxy.url
    finally:
        await proxy.stop()


async def test_all_accounts_of_a_host(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    one = await host.create_account("one.test")
    two = await host.create_account("two.test")
    await sync_env.post(one, "one", "com.example.note")
    heads: list[int] = []

    def hook(app: web.Application, running: RunningSync) -> None:
        """What an output (the Jetstream endpoint) does: a route, and a listener of new events."""

        async def head(request: web.Request) -> web.Response:
            return web.json_response({"head": max(heads) if heads else None})

        app.router.add_get("/test-head", head)
        running.engine.listeners.append(heads.append)

    running = await sync_env.start_sync(host.url, all_accounts=True, routes=[hook])
    await sync_env.wait_mirrored(running, one)
    await sync_env.wait_mirrored(running, two)
    three = await host.create_account("three.test")  # seen live: its #identity/#account/commit
    await sync_env.post(three, "three")
    await sync_env.wait_mirrored(running, three)

    async def counted() -> bool:
        doc = (await running.status())["repos"]
        return bool(doc["active"] == 3 and doc["total"] == 3)

    await wait_for(counted, what="three active repos on the status document")
    last = await running.engine.worker.read(lambda s: s.head_time_us())
    assert heads and max(heads) == last
    async with sync_env.http.get(f"{running.url}/test-head") as resp:
        assert (await resp.json())["head"] == last


def test_retry_after() -> None:
    assert retry_after({"Retry-After": "7"}) == 7.0
    now = 1_800_000_000.0
    assert retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now) == 30.0
    assert retry_after({"RateLimit-Reset": str(int(now + 12))}, now) == 12.0  # an epoch (the reference PDS)
    assert retry_after({"RateLimit-Reset": "5"}, now) == 5.0  # seconds (the IETF draft)
    assert retry_after({}, now) is None
    assert retry_after({"Retry-After": "soon"}, now) is None


def test_collection_filter() -> None:
    everything = CollectionFilter()
    assert everything("app.bsky.feed.post") and everything("com.example.x")
    wanted = CollectionFilter(["app.bsky.feed.post", "app.bsky.graph.*"])
    assert wanted("app.bsky.feed.post") and not wanted("app.bsky.feed.like")
    assert wanted("app.bsky.graph.follow") and not wanted("app.bsky.graphx")
    assert wanted.seeds() == ["app.bsky.feed.post", "app.bsky.graph.follow"]


def test_http_base() -> None:
    assert http_base("wss://relay.example.com") == "https://relay.example.com"
    assert http_base("ws://127.0.0.1:80/xrpc/com.atproto.sync.subscribeRepos") == "http://127.0.0.1:80"
    assert http_base("relay.example.com/") == "https://relay.example.com"


async def test_restart_without_a_stored_cursor(sync_env: SyncEnv) -> None:
    """No event was seen before the stop (an idle upstream): the restart fetches the repositories again."""
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    first = await sync_env.post(alice, "before")
    running = await sync_env.start_sync(host.url, dids=(alice.did,))
    await sync_env.wait_mirrored(running, alice)
    await sync_env.stop_sync(running)
    await sync_env.post(alice, "while stopped")
    await sync_env.delete(alice, first)
    running = await sync_env.start_sync(host.url, dids=(alice.did,))
    await sync_env.wait_mirrored(running, alice)
    assert running.engine.counts["resyncs"] == 1
