"""The host's firehose end to end: a real WebSocket subscriber on a running host, across a restart.

What a relay sees: account creation as ``#identity``, ``#account``, ``#commit``,
``#sync`` with continuous seqs; live writes; every ``#commit`` passing Sync 1.1
validation chained from the genesis commit; a reconnect with the last cursor
after a restart getting exactly the events it missed; close code 1012 when the
host shuts down. Every wait is bounded (``RECEIVE_S``), none is asserted on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, TokenClock

from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent, decode_frame
from atrepo.core.tracker import RepoTracker, Verdict
from atrepo.host import HostConfig, RunningHost, start_host
from atrepo.host.writes import CreateOp, DeleteOp, RepoWriter, WriteOp
from atrepo.store import SQLiteStore

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"
SUBSCRIBE = "/xrpc/com.atproto.sync.subscribeRepos"
#: Bound on every wait for a frame (a hang fails here, not at the suite's timeout).
RECEIVE_S = 10.0


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": NOW}


class Host:
    """A host that a test can stop and start again on the same data directory."""

    def __init__(self, data: Path, http: aiohttp.ClientSession, database: str | None = None) -> None:
        self.config = HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=data, database=database)
        self.http = http
        self.running: RunningHost | None = None

    async def start(self) -> HostClient:
        self.running = await start_host(self.config, validate_output=True)
        return HostClient(self.running, self.http, TokenClock())

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()

    @property
    def client(self) -> HostClient:
        assert self.running is not None
        return HostClient(self.running, self.http, TokenClock())


@pytest.fixture
async def restartable(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> AsyncIterator[Host]:
    host = Host(tmp_path / "data", http, database)
    try:
        yield host
    finally:
        await host.stop()


async def subscribe(host: HostClient, cursor: int | None) -> aiohttp.ClientWebSocketResponse:
    url = host.url.replace("http://", "ws://") + SUBSCRIBE + ("" if cursor is None else f"?cursor={cursor}")
    return await host.http.ws_connect(url, max_msg_size=0)


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        msg = await asyncio.wait_for(ws.receive(), RECEIVE_S)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        out.append(decode_frame(msg.data))
    return out


async def create_account(host: HostClient, name: str) -> str:
    reply = await host.create_account(f"{name}.test")
    assert reply.status == 200, reply.body
    did: str = reply.body["did"]
    return did


async def write(host: HostClient, did: str, ops: list[WriteOp]) -> int:
    """One commit on the host's writer thread and the firehose wake-up; its seq."""
    ctx = host.running.context
    account = await ctx.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    outcome = await ctx.worker.run(RepoWriter(ctx.registry).apply, did, ctx.signing_key(account), ops)
    assert outcome.seq is not None
    await ctx.notify(outcome.seq)
    return outcome.seq


class Checker:
    """Sync 1.1 validation of everything received, one tracker for the whole run (restarts included)."""

    def __init__(self) -> None:
        self.tracker = RepoTracker()
        self.keys: dict[str, Any] = {}
        self.commits: dict[str, int] = {}
        self.last_seq = 0

    async def learn_key(self, host: HostClient, did: str) -> None:
        account = await host.running.context.worker.read(SQLiteStore.get_account, did)
        assert account is not None
        self.keys[did] = host.running.context.signing_key(account).public_key

    def check(self, frame: Any) -> None:
        assert frame.seq == self.last_seq + 1, (frame.seq, self.last_seq)  # continuous, no gap, no repeat
        self.last_seq = frame.seq
        if isinstance(frame, CommitEvent | SyncEvent):
            did = frame.repo if isinstance(frame, CommitEvent) else frame.did
            outcome = self.tracker.process(frame, self.keys[did])
            assert outcome.ok, outcome.error
            if isinstance(frame, CommitEvent):
                expected = Verdict.FIRST if did not in self.commits else Verdict.NEXT
                assert outcome.verdict is expected, (outcome.verdict, outcome.error)
                self.commits[did] = self.commits.get(did, 0) + 1
            else:
                assert outcome.verdict in (Verdict.DUPLICATE, Verdict.RESTATED)


async def test_creation_then_live_writes_arrive_in_order_and_validate(restartable: Host) -> None:
    host = await restartable.start()
    checker = Checker()
    ws = await subscribe(host, 0)
    try:
        did = await create_account(host, "alice")
        await checker.learn_key(host, did)
        created = await frames(ws, 4)
        assert [type(f) for f in created] == [IdentityEvent, AccountEvent, CommitEvent, SyncEvent]
        assert [f.seq for f in created] == [1, 2, 3, 4]
        identity, account, genesis, sync = created
        assert identity.did == did and identity.handle == "alice.test"
        assert account.did == did and account.active is True
        assert (
            genesis.repo == did and genesis.since is None and genesis.ops == () and genesis.prev_data is None
        )
        assert sync.did == did and sync.rev == genesis.rev
        for frame in created:
            checker.check(frame)
        # live: each write is one #commit, received after the subscriber went live
        for i in range(5):
            seq = await write(host, did, [CreateOp(POST, None, post(f"live {i}"))])
            (frame,) = await frames(ws, 1)
            assert isinstance(frame, CommitEvent) and frame.seq == seq and len(frame.ops) == 1
            checker.check(frame)
        rkey = frame.ops[0].path.split("/")[1]
        await write(host, did, [DeleteOp(POST, rkey), CreateOp(POST, None, post("batch"))])
        (frame,) = await frames(ws, 1)
        assert [op.action for op in frame.ops] == ["delete", "create"]
        checker.check(frame)
        assert checker.commits[did] == 7
        head = await host.running.context.worker.read(SQLiteStore.repo_head, did)
        assert head is not None and frame.commit == head.cid and frame.rev == head.rev
    finally:
        await ws.close()


async def test_reconnect_after_restart_gets_exactly_the_missed_events_and_shutdown_is_1012(
    restartable: Host,
) -> None:
    host = await restartable.start()
    checker = Checker()
    ws = await subscribe(host, 0)
    alice = await create_account(host, "alice")
    await checker.learn_key(host, alice)
    for i in range(3):
        await write(host, alice, [CreateOp(POST, None, post(f"before {i}"))])
    for frame in await frames(ws, 4 + 3):
        checker.check(frame)
    last = checker.last_seq
    assert last == 7

    # shutdown: the subscriber is told "service restart", not a normal close (read while the host
    # stops, as a live client does: the host waits for the reply to its close frame)
    closing = asyncio.ensure_future(asyncio.wait_for(ws.receive(), RECEIVE_S))
    await restartable.stop()
    msg = await closing
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1012, msg
    await ws.close()

    # same data directory: the log continues, and writes happen while nobody listens
    host = await restartable.start()
    for i in range(2):
        await write(host, alice, [CreateOp(POST, None, post(f"while away {i}"))])
    bob = await create_account(host, "bob")
    await checker.learn_key(host, bob)
    await write(host, bob, [CreateOp(POST, None, post("bob's first"))])
    missed = await host.running.context.worker.read(SQLiteStore.read_events, last, 1000)
    assert [e.seq for e in missed] == list(range(last + 1, last + 1 + 2 + 4 + 1))

    ws = await subscribe(host, last)
    try:
        got = await frames(ws, len(missed))
        assert [f.seq for f in got] == [e.seq for e in missed]
        for frame in got:
            checker.check(frame)  # alice's chain continues across the restart (NEXT, not FIRST)
        assert checker.commits == {alice: 1 + 3 + 2, bob: 2}
        # and nothing more until something happens: then exactly that, live
        seq = await write(host, alice, [CreateOp(POST, None, post("after reconnect"))])
        (frame,) = await frames(ws, 1)
        assert frame.seq == seq == checker.last_seq + 1
        checker.check(frame)
        closing = asyncio.ensure_future(asyncio.wait_for(ws.receive(), RECEIVE_S))
        await restartable.stop()
        msg = await closing
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1012, msg
    finally:
        await ws.close()
