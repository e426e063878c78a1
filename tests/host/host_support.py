"""Helpers of the host tests: a hand-moved token clock and raw XRPC calls (imported by name)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from atrepo.host import RunningHost


@dataclass
class TokenClock:
    """Milliseconds for session tokens: the wall clock at the start, then moved by hand."""

    ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


@dataclass
class HostClient:
    """Raw XRPC calls to the host under test: status and JSON body, errors included."""

    running: RunningHost
    http: aiohttp.ClientSession
    clock: TokenClock

    @property
    def url(self) -> str:
        return self.running.url

    async def call(
        self,
        nsid: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        verb = method or ("POST" if body is not None else "GET")
        async with self.http.request(
            verb, f"{self.url}/xrpc/{nsid}", json=body, params=params, headers=sent
        ) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return Reply(resp.status, data, dict(resp.headers))

    async def create_account(self, handle: str, password: str = "correct horse", **extra: Any) -> Reply:
        return await self.call(
            "com.atproto.server.createAccount", body={"handle": handle, "password": password, **extra}
        )


def basic_auth(password: str, user: str = "admin") -> dict[str, str]:
    """``Authorization: Basic base64(user:password)``, as goat sends the admin password."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def admin_headers(host: HostClient) -> dict[str, str]:
    """The admin credentials of the host under test (its generated or configured password)."""
    return basic_auth(host.running.context.secrets.admin_password)


async def firehose_frames(
    http: aiohttp.ClientSession, url: str, cursor: int | None, timeout: float
) -> AsyncIterator[tuple[int, bytes]]:
    """(seq, frame as sent) of each event ``subscribeRepos`` sends (``#info`` skipped; error frames fail).

    ``cursor`` None subscribes live. ``timeout`` bounds each wait for a frame,
    so a broken server fails instead of hanging; the caller stops when it has
    what it wants.
    """
    from atrepo.core.events import ErrorFrame, InfoEvent, UnknownFrame, decode_frame

    params = {} if cursor is None else {"cursor": str(cursor)}
    endpoint = f"{url}/xrpc/com.atproto.sync.subscribeRepos"
    async with http.ws_connect(endpoint, params=params, max_msg_size=0) as ws:
        while True:
            message = await ws.receive(timeout=timeout)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            frame = decode_frame(message.data)
            assert not isinstance(frame, ErrorFrame | UnknownFrame), frame
            if not isinstance(frame, InfoEvent):
                yield frame.seq, message.data


async def firehose_seqs(
    http: aiohttp.ClientSession, url: str, cursor: int, head: int, timeout: float
) -> list[int]:
    """The seqs ``subscribeRepos?cursor=`` replays up to ``head`` (see :func:`firehose_frames`)."""
    seqs: list[int] = []
    async with contextlib.aclosing(firehose_frames(http, url, cursor, timeout)) as frames:
        async for seq, _raw in frames:
            seqs.append(seq)
            if seq >= head:
                break
    return seqs
