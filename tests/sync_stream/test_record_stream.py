"""The acknowledged record stream of ``atrepo sync`` against raw WebSocket clients, over a real mirror store.

Each test runs the stream on 127.0.0.1 (port 0) over a :class:`MirrorStore` (SQLite, and again PostgreSQL)
filled through its writer methods on a :class:`StoreWorker`, and reads it with
two or three raw aiohttp WebSocket clients that ack (or hold) what they get.
Expected events are the store's own log: the tests check exactly-once
delivery, per-DID order and stickiness, redelivery, backpressure and restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from atrepo.core.cid import CID
from atrepo.core.tid import tid_from_parts
from atrepo.store.mirror import MirrorEvent, MirrorStore, RecordOp, open_mirror
from atrepo.store.worker import StoreWorker
from atrepo.sync.stream import RecordStream, mount_record_stream
from atrepo.xrpc.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

DIDS = [f"did:plc:{chr(ord('a') + i) * 24}" for i in range(8)]


@dataclass
class Env:
    path: Path
    store: MirrorStore
    worker: StoreWorker[MirrorStore]
    stream: RecordStream
    runner: web.AppRunner
    url: str
    revs: int = 0

    async def commit(self, did: str, n: int = 1) -> list[MirrorEvent]:
        """One commit of ``n`` creates for ``did``; tells the stream."""
        self.revs += 1
        rev = tid_from_parts(1_700_000_000_000_000 + self.revs, 0)
        ops = []
        for i in range(n):
            value = {
                "$type": "app.bsky.feed.post",
                "text": f"{did} {self.revs}.{i}",
                "createdAt": "2026-12-02T00:00:00Z",
            }
            ops.append(
                RecordOp(
                    "create",
                    "app.bsky.feed.post",
                    f"r{self.revs}x{i}",
                    CID.for_dag_cbor(json.dumps(value).encode()),
                    value,
                )
            )
        head = CID.for_dag_cbor(rev.encode())
        events = await self.worker.run(
            MirrorStore.apply_commit,
            did,
            rev=rev,
            data=head,
            commit=head,
            ops=ops,
            cursor=("relay", self.revs),
        )
        self.stream.notify(events[-1].time_us)
        return events

    async def fill(self, rounds: int) -> list[MirrorEvent]:
        out: list[MirrorEvent] = []
        for r in range(rounds):
            for did in DIDS:
                out += await self.commit(did, 1 + r % 3)
        return out

    async def all_events(self) -> list[MirrorEvent]:
        return await self.worker.read(MirrorStore.read_events, 0, 1_000_000)


async def start_env(path: Path, database: str | None = None, **kwargs: Any) -> Env:
    store = open_mirror(database or path / "mirror.sqlite3", synchronous="NORMAL")
    worker = StoreWorker(store)
    app = web.Application()
    stream = mount_record_stream(app, store, worker, metrics=Metrics(), heartbeat=None, **kwargs)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Env(path, store, worker, stream, runner, f"ws://127.0.0.1:{port}/channel")


async def stop_env(env: Env) -> None:
    await env.runner.cleanup()
    await env.worker.close()
    env.store.close()


@pytest.fixture
async def env(tmp_path: Path, database: str | None) -> AsyncIterator[Env]:
    env = await start_env(tmp_path, database=database)
    try:
        yield env
    finally:
        await stop_env(env)


@dataclass
class Client:
    """A raw WebSocket client: records (id, did) of each event; acks each one when ``auto_ack``."""

    url: str
    auto_ack: bool = True
    ack_limit: int | None = None  # with auto_ack: stop acking after this many
    got: list[tuple[int, str]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None
    task: asyncio.Task[None] | None = None

    async def connect(self) -> Client:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url)
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            assert msg.type is aiohttp.WSMsgType.TEXT
            data = json.loads(msg.data)
            assert data["type"] == "event" and data["event"]["seq"] == data["id"]
            self.got.append((data["id"], data["event"]["did"]))
            if self.auto_ack and (self.ack_limit is None or len(self.acked) < self.ack_limit):
                await self.ack(data["id"])

    async def ack(self, event_id: int) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"type": "ack", "id": event_id}))
        self.acked.append(event_id)

    @property
    def ids(self) -> list[int]:
        return [i for i, _ in self.got]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            async with asyncio.timeout(10):
                await self.task
        if self.session is not None:
            await self.session.close()


async def until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting: {what}") from None


def per_did(got: list[tuple[int, str]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for event_id, did in got:
        out.setdefault(did, []).append(event_id)
    return out


async def test_exactly_once_per_did_order_and_sticky(env: Env) -> None:
    """Three acking clients: every event once in all, each DID on one client, in order."""
    clients = [await Client(env.url).connect() for _ in range(3)]
    await until(lambda: env.stream.clients == 3, "three clients")
    before = await env.fill(2)
    after = await env.fill(4)
    expected = [e.time_us for e in before + after]
    assert expected == [e.time_us for e in await env.all_events()]
    await until(lambda: sum(len(c.got) for c in clients) >= len(expected), "all delivered")
    await until(lambda: env.stream.stored_position == expected[-1], "ack position stored")
    delivered = sorted(i for c in clients for i in c.ids)
    assert delivered == expected  # exactly once: no gap, no duplicate
    owners: dict[str, int] = {}
    for n, c in enumerate(clients):
        for did, ids in per_did(c.got).items():
            assert ids == sorted(ids), f"{did} out of order"
            assert owners.setdefault(did, n) == n, f"{did} on two clients"
    assert len(owners) == len(DIDS)
    assert len({n for n in owners.values()}) >= 2  # the DIDs are spread over the clients
    assert await env.worker.read(MirrorStore.get_cursor, "stream:/channel") == expected[-1]
    for c in clients:
        await c.close()


async def test_disconnect_redelivers_in_order(env: Env) -> None:
    """A client that leaves with unacked events: another gets them, each DID still in order."""
    holder = await Client(env.url, auto_ack=False).connect()
    await until(lambda: env.stream.clients == 1, "holder connected")
    first = await env.fill(2)
    await until(lambda: len(holder.got) == len(first), "the holder got the first events")
    taker = await Client(env.url).connect()
    await until(lambda: env.stream.clients == 2, "taker connected")
    # the holder acks one DID's events (those are not sent again); the rest it holds unacked
    freed = DIDS[0]
    for event_id, did in holder.got:
        if did == freed:
            await holder.ack(event_id)
    more = await env.fill(2)
    everything = [e.time_us for e in first + more]
    # every DID was placed on the holder: while it stays connected, all their events go to it
    await until(lambda: len(holder.got) == len(everything), "sticky DIDs: the holder got the new events")
    assert taker.got == []
    await holder.close()
    await until(lambda: env.stream.clients == 1, "holder gone")
    acked_by_holder = {i for i, d in holder.got if d == freed and i in {e.time_us for e in first}}
    want = [i for i in everything if i not in acked_by_holder]
    await until(lambda: len(taker.got) >= len(want), "the taker got the rest")
    await until(lambda: env.stream.stored_position == everything[-1], "all acked and stored")
    assert sorted(taker.ids) == want  # each unacked event exactly once at the taker
    assert set(taker.ids) & set(holder.ids)  # among them, events the holder had been sent
    for did, ids in per_did(taker.got).items():
        assert ids == sorted(ids), f"{did} out of order after redelivery"
    await taker.close()


async def test_client_leaving_mid_stream_with_writes_running(env: Env) -> None:
    """Three clients, writes in flight; one stops acking and leaves: every event acked once, DIDs in order."""
    quitter = await Client(env.url, ack_limit=5).connect()
    others = [await Client(env.url).connect() for _ in range(2)]
    await until(lambda: env.stream.clients == 3, "three clients")
    writer = asyncio.get_running_loop().create_task(env.fill(6))
    await until(lambda: len(quitter.got) > 10, "the quitter holds unacked events")
    await quitter.close()
    await until(lambda: env.stream.clients == 2, "quitter gone")
    written = await writer
    ids = [e.time_us for e in written]
    await until(lambda: env.stream.stored_position == ids[-1], "every event acked")
    acked = sorted(quitter.acked + [i for c in others for i in c.acked])
    assert acked == ids  # each event acked exactly once, by someone
    assert env.stream.metrics.redelivered.value() >= len(quitter.got) - 5  # its unacked ones went on
    did_of = {e.time_us: e.did for e in written}
    quitter_acked = set(quitter.acked)
    for did in DIDS:
        by_quitter = [i for i in quitter.acked if did_of[i] == did]
        later = [i for c in others for i in c.acked if did_of[i] == did and i not in quitter_acked]
        assert not by_quitter or not later or max(by_quitter) < min(later), f"{did} out of order"
    for c in others:
        for did, got in per_did(c.got).items():
            assert got == sorted(got), f"{did} out of order at a client"
        await c.close()


async def test_backpressure_max_unacked(tmp_path: Path) -> None:
    env = await start_env(tmp_path, max_unacked=5)
    try:
        client = await Client(env.url, auto_ack=False).connect()
        await until(lambda: env.stream.clients == 1, "connected")
        events = []
        for _ in range(20):
            events += await env.commit(DIDS[0])
        await until(lambda: len(client.got) == 5, "five sent")
        await until(lambda: env.stream.client_states()[0].queued == 15, "the rest queued")
        await asyncio.sleep(0.2)  # nothing more arrives while nothing is acked
        assert client.ids == [e.time_us for e in events[:5]]
        assert env.stream.client_states()[0].unacked == 5
        await client.ack(events[0].time_us)
        await client.ack(events[1].time_us)
        await until(lambda: len(client.got) == 7, "two more after two acks")
        await asyncio.sleep(0.2)
        assert client.ids == [e.time_us for e in events[:7]]
        await until(lambda: env.stream.stored_position == events[2].time_us - 1, "position after two acks")
        await client.close()
    finally:
        await stop_env(env)


async def test_restart_resumes_after_ack_position(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    client = await Client(env.url, auto_ack=False).connect()
    await until(lambda: env.stream.clients == 1, "connected")
    events = await env.fill(3)
    ids = [e.time_us for e in events]
    await until(lambda: len(client.got) == len(ids), "all sent")
    k = len(ids) // 2
    for event_id in ids[:k]:
        await client.ack(event_id)
    await until(lambda: env.stream.position == ids[k] - 1, "position after the acked prefix")
    # an ack past a gap does not move the durable position
    await client.ack(ids[k + 1])
    await until(lambda: env.stream.stored_position == ids[k] - 1, "stored")
    await client.close()
    await stop_env(env)
    env = await start_env(tmp_path)
    try:
        assert env.stream.stored_position == ids[k] - 1
        again = await Client(env.url).connect()
        await until(lambda: len(again.got) >= len(ids) - k, "the unacked rest")
        await until(lambda: env.stream.stored_position == ids[-1], "all acked")
        assert again.ids == ids[k:]  # one client: the log order, resumed right after the position
        await again.close()
    finally:
        await stop_env(env)


async def test_bad_message_closes(env: Env) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(env.url) as ws:
        await ws.send_str('{"type":"nack","id":1}')
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008


async def test_a_later_client_takes_its_share_of_idle_dids(env: Env) -> None:
    """DIDs with nothing in flight move to the client rendezvous hashing now prefers: late clients work."""
    first = await Client(env.url).connect()
    await until(lambda: env.stream.clients == 1, "first client")
    early = await env.fill(2)
    await until(lambda: len(first.got) == len(early), "the first client got everything")
    await until(lambda: env.stream.stored_position == early[-1].time_us, "all acked")
    late = await Client(env.url).connect()
    await until(lambda: env.stream.clients == 2, "second client")
    more = await env.fill(3)
    everything = [e.time_us for e in early + more]
    await until(lambda: len(first.got) + len(late.got) >= len(everything), "all delivered")
    await until(lambda: env.stream.stored_position == everything[-1], "all acked and stored")
    assert sorted([*first.ids, *late.ids]) == everything  # exactly once
    assert late.got, "the later client got a share of the DIDs"
    assert first.ids[len(early) :], "and the first kept some"
    for client in (first, late):
        for did, ids in per_did(client.got).items():
            assert ids == sorted(ids), f"{did} out of order"
    # after the move, each DID's new events are on one client only
    moved = {did for did, _ in late.got}
    kept = {did for event_id, did in first.got if event_id > early[-1].time_us}
    assert not moved & kept
    await first.close()
    await late.close()
