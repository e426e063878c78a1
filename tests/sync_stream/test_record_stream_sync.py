"""``atrepo sync``'s record stream (``/channel``) end to end: verified events, acked once, resumed."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
import pytest
from sync_support import SyncEnv, wait_for

from atrepo.store.mirror import MirrorStore

pytestmark = pytest.mark.timeout(90)


class Acker:
    """A raw WebSocket client of ``/channel`` that acks every event and keeps (id, did, rkey)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.got: list[tuple[int, str, str | None]] = []
        self.session = aiohttp.ClientSession()
        self.task: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self) -> Acker:
        self.ws = await self.session.ws_connect(self.url)
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            data: dict[str, Any] = json.loads(msg.data)
            event = data["event"]
            self.got.append((data["id"], event["did"], event.get("rkey")))
            await self.ws.send_str(json.dumps({"type": "ack", "id": data["id"]}))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            async with asyncio.timeout(10):
                await self.task
        await self.session.close()


async def test_sync_record_stream_delivers_verified_events_once_and_resumes(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    bob = await host.create_account("bob.test")
    for i in range(3):
        await sync_env.post(alice, f"alice {i}")
        await sync_env.post(bob, f"bob {i}")
    running = await sync_env.start_sync(host.url, dids=(alice.did, bob.did))
    await sync_env.wait_mirrored(running, alice)
    await sync_env.wait_mirrored(running, bob)
    channel = running.url.replace("http://", "ws://") + "/channel"
    clients = [await Acker(channel).start(), await Acker(channel).start()]

    async def log() -> list[int]:
        events = await running.engine.worker.read(MirrorStore.read_events, 0, 100_000)
        return [e.time_us for e in events]

    async def all_delivered() -> bool:
        want = await log()
        return bool(want) and sorted(i for c in clients for i, _, _ in c.got) == want

    await wait_for(all_delivered, what="the backfilled events, once each")
    live = await sync_env.post(alice, "alice live")

    async def live_arrived() -> bool:
        return any(rkey == live for c in clients for _, _, rkey in c.got) and await all_delivered()

    await wait_for(live_arrived, what="the live post")
    # Per-DID order across clients: a DID moves to another client only while idle (everything sent to
    # the first acknowledged), so each DID's events form one run per client, the runs one after another.
    for did in {d for c in clients for _, d, _ in c.got}:
        runs = [[i for i, d, _ in c.got if d == did] for c in clients]
        runs = sorted((r for r in runs if r), key=lambda r: r[0])
        assert all(r == sorted(r) for r in runs), f"{did} out of order on a client"
        assert all(a[-1] < b[0] for a, b in itertools.pairwise(runs)), f"{did} interleaved"
    assert running.record_stream is not None
    head = (await log())[-1]

    async def stored() -> bool:
        assert running.record_stream is not None
        return running.record_stream.stored_position == head

    await wait_for(stored, what="the ack position stored")
    for c in clients:
        await c.close()
    await sync_env.stop_sync(running)

    # written while the consumer is down; after the restart, the stream resumes after the stored position
    later = await sync_env.post(bob, "bob later")
    running = await sync_env.start_sync(host.url, dids=(alice.did, bob.did))
    await sync_env.wait_mirrored(running, bob)
    again = await Acker(running.url.replace("http://", "ws://") + "/channel").start()

    async def resumed() -> bool:
        events = await running.engine.worker.read(MirrorStore.read_events, head, 100_000)
        return bool(events) and [i for i, _, _ in again.got] == [e.time_us for e in events]

    await wait_for(resumed, what="only the events after the stored position")
    assert later in {rkey for _, _, rkey in again.got}
    await again.close()
