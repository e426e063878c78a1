"""A real firehose for the tests: a SQLite or PostgreSQL store, worker, fan-out, XRPC router, producers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from atrepo.core.events import AccountEvent, Frame, IdentityEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.firehose import Fanout, FirehoseMetrics, mount_subscribe_repos
from atrepo.store.base import EventRow
from atrepo.store.postgres import PostgresStore
from atrepo.store.sqlite import SQLiteStore
from atrepo.store.worker import StoreWorker
from atrepo.xrpc.server import XrpcRouter

POST = "app.bsky.feed.post"
SUBSCRIBE = "/xrpc/com.atproto.sync.subscribeRepos"
#: Every receive gives up after this long: a test fails instead of hanging.
RECEIVE_TIMEOUT = 20.0
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_did() -> str:
    return "did:plc:" + "".join(secrets.choice(_B32) for _ in range(24))


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": "2024-05-01T12:34:56.789Z"}


def create(rkey: str, text: str | None = None) -> Write:
    return Write("create", POST, rkey, post(text if text is not None else rkey))


@dataclass
class Account:
    did: str
    key: PrivateKey
    handle: str
    rkeys: list[str] = field(default_factory=list)


@dataclass
class Firehose:
    """One running host-side firehose: write through it, connect to it."""

    url: str
    store: SQLiteStore
    worker: StoreWorker[SQLiteStore]
    fanout: Fanout[SQLiteStore]
    metrics: FirehoseMetrics
    session: aiohttp.ClientSession

    def ws_url(self, cursor: int | None = None) -> str:
        query = "" if cursor is None else f"?cursor={cursor}"
        return self.url.replace("http://", "ws://") + SUBSCRIBE + query

    async def connect(self, cursor: int | None = None) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(self.ws_url(cursor), max_msg_size=0)

    async def _committed(self, fn: Callable[[SQLiteStore], Sequence[EventRow]]) -> list[EventRow]:
        rows = list(await self.worker.run(fn))
        if rows:
            self.fanout.notify(rows[-1].seq)
        return rows

    async def create_account(self, writes: Sequence[Write] = ()) -> Account:
        """Creation as the reference emits it: #identity, #account, genesis #commit, #sync (one tx)."""
        account = Account(new_did(), PrivateKey.generate("k256"), f"u{secrets.token_hex(4)}.test")
        account.rkeys.extend(w.rkey for w in writes)

        def make(store: SQLiteStore) -> Sequence[EventRow]:
            did, handle = account.did, account.handle
            with store.transaction(did) as tx:
                tx.create_account(handle=handle, signing_key=account.key.to_bytes())
                result = Repo.create(did, account.key, writes)
                tx.apply_commit(result)
                tx.append_event(lambda seq, time: IdentityEvent(seq, did, time, handle))
                tx.append_event(lambda seq, time: AccountEvent(seq, did, time, True))
                tx.append_event(result.to_event)
                tx.append_event(result.to_sync_event)
                return list(tx.events)

        await self._committed(make)
        return account

    async def commit(self, account: Account, writes: Sequence[Write]) -> EventRow:
        """One write as the host makes it: the commit and its #commit event in one transaction."""

        def make(store: SQLiteStore) -> Sequence[EventRow]:
            with store.transaction(account.did) as tx:
                result = tx.open_repo().apply_writes(writes, account.key)
                tx.apply_commit(result)
                tx.append_event(result.to_event)
                return list(tx.events)

        (row,) = await self._committed(make)
        return row

    async def post(self, account: Account, text: str | None = None) -> EventRow:
        rkey = f"p{len(account.rkeys)}x{secrets.token_hex(2)}"
        account.rkeys.append(rkey)
        return await self.commit(account, [create(rkey, text)])

    async def live(self, count: int) -> None:
        """Wait until ``count`` subscribers have caught up (a no-cursor one has taken its position)."""
        await eventually(lambda: sum(sub.live for sub in self.fanout.subscribers) == count, f"{count} live")

    async def head(self) -> int:
        return await self.worker.read(lambda s: s.head_seq())


async def receive_frame(ws: aiohttp.ClientWebSocketResponse) -> tuple[bytes, Frame]:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data, msg.extra)
    return msg.data, decode_frame(msg.data)


async def read_until(ws: aiohttp.ClientWebSocketResponse, last_seq: int) -> list[tuple[bytes, Frame]]:
    """Frames until one with seq ``last_seq`` (frames without a seq, #info, are kept too)."""
    out: list[tuple[bytes, Frame]] = []
    while True:
        data, frame = await receive_frame(ws)
        out.append((data, frame))
        seq = getattr(frame, "seq", None)
        if seq is not None and seq >= last_seq:
            return out


async def expect_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (msg.type, msg.data)
    return msg


def seqs(frames: Sequence[tuple[bytes, Frame]]) -> list[int]:
    return [frame.seq for _, frame in frames if hasattr(frame, "seq")]


async def eventually(check: Callable[[], bool], what: str, timeout: float = RECEIVE_TIMEOUT) -> None:
    """Poll ``check`` until true; fail (not hang) after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


Start = Callable[..., Awaitable[Firehose]]


async def start_firehose(
    tmp: Any,
    session: aiohttp.ClientSession,
    runners: list[web.AppRunner],
    closers: list[Callable[[], Awaitable[None]]],
    *,
    window: int = 4096,
    page: int = 500,
    max_queue: int = 500,
    close_timeout: float = 10.0,
    clock: Callable[[], int] | None = None,
    database: str | None = None,
) -> Firehose:
    """The firehose over a SQLite store in ``tmp`` or, given ``database``, a PostgreSQL one."""
    store: SQLiteStore
    if database is not None:
        store = PostgresStore(database, tmp) if clock is None else PostgresStore(database, tmp, clock=clock)
    elif clock is None:
        store = SQLiteStore(tmp, synchronous="NORMAL")
    else:
        store = SQLiteStore(tmp, synchronous="NORMAL", clock=clock)
    worker = StoreWorker(store)
    fanout = Fanout(worker, window=window, page=page)
    router = XrpcRouter()
    metrics = mount_subscribe_repos(
        router, store, worker, fanout, max_queue=max_queue, page=page, close_timeout=close_timeout
    )

    async def close() -> None:
        await fanout.close()
        await worker.close()
        store.close()

    closers.append(close)
    await fanout.start()
    runner = web.AppRunner(router.app(), access_log=None, shutdown_timeout=5)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Firehose(f"http://{host}:{port}", store, worker, fanout, metrics, session)
