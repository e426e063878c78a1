"""Helpers of the subscriber tests: a scripted upstream, frame builders, a recording handler."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from atrepo.core import cbor
from atrepo.core.events import IdentityEvent, encode_frame
from atrepo.firehose.subscriber import Received

TIME = "2024-05-01T12:34:56.789Z"
SUBSCRIBE = "/xrpc/com.atproto.sync.subscribeRepos"
#: Bound on every wait in these tests: a bug fails the test here, it does not hang it.
WAIT_S = 10.0


def did(name: str) -> str:
    """A syntactically valid did:plc for a short name."""
    return "did:plc:" + (name * 24)[:24]


def ident(seq: int, who: str) -> bytes:
    """A small sequenced frame for ``who``."""
    return encode_frame(IdentityEvent(seq, who, TIME))


def unknown(seq: int) -> bytes:
    """A message of a type nobody knows yet, carrying a seq."""
    return cbor.encode({"op": 1, "t": "#future"}) + cbor.encode({"seq": seq, "x": 1})


@dataclass
class Connection:
    """One connection the upstream accepted: the cursor asked for, and its socket."""

    index: int
    cursor: int | None
    ws: web.WebSocketResponse
    request: web.Request


Script = Callable[[Connection], Awaitable[None]]


@dataclass
class ScriptedUpstream:
    """A tiny subscribeRepos server: every connection runs ``script``, then closes."""

    script: Script
    connections: list[Connection] = field(default_factory=list)
    url: str = ""

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get(SUBSCRIBE, self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return runner

    @property
    def cursors(self) -> list[int | None]:
        return [c.cursor for c in self.connections]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        raw = request.query.get("cursor")
        conn = Connection(len(self.connections), int(raw) if raw is not None else None, ws, request)
        self.connections.append(conn)
        try:
            await self.script(conn)
        finally:
            if not ws.closed:
                await ws.close()
        return ws


async def hold(conn: Connection) -> None:
    """Keep the connection open until the client goes away."""
    async for _ in conn.ws:
        pass


@dataclass
class Recorder:
    """A handler that records what it accepted, and can wait for a count."""

    accepted: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, item: Received) -> None:
        self.accepted.append(item)
        self.changed.set()

    @property
    def seqs(self) -> list[int | None]:
        return [r.seq for r in self.accepted]

    async def until(self, check: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), WAIT_S)
