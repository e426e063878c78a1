"""The Jetstream endpoint of ``atrepo sync`` against real clients, over a real mirror store.

Each test runs the endpoint on 127.0.0.1 (port 0) over a :class:`MirrorStore` (SQLite, and again PostgreSQL)
filled through its writer methods on a :class:`StoreWorker`, and reads it
with the MarshalX SDK's ``atproto_jetstream`` client (the v2 wire, unchanged)
or a raw aiohttp WebSocket (the classic ``/subscribe`` wire). Expected events
are computed from the store's own log with the same filters, so the tests
check "exactly these events": no gap, no duplicate, no extra.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from atproto_jetstream import AsyncJetstreamClient

from atrepo.core.cid import CID
from atrepo.core.errors import InvalidRequest
from atrepo.core.tid import tid_from_parts
from atrepo.store.mirror import JETSTREAM_NSID, MirrorEvent, MirrorStore, RecordOp, open_mirror
from atrepo.store.worker import StoreWorker
from atrepo.sync.jetstream import Filters, JetstreamServer, mount_jetstream
from atrepo.xrpc.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

ALICE = "did:plc:alicealicealicealicealic"
BOB = "did:plc:bobbobbobbobbobbobbobbob"
CAROL = "did:plc:carolcarolcarolcarolcaro"


@dataclass
class Env:
    store: MirrorStore
    worker: StoreWorker[MirrorStore]
    server: JetstreamServer[MirrorStore]
    url: str  # http://127.0.0.1:port
    metrics: Metrics
    revs: int = 0

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    async def commit(self, did: str, ops: list[tuple[str, str, str, Any]]) -> list[MirrorEvent]:
        """Apply (action, collection, rkey, value) ops as one commit; notify the endpoint."""
        self.revs += 1
        rev = tid_from_parts(1_700_000_000_000_000 + self.revs, 0)
        record_ops = [
            RecordOp(
                action,
                col,
                rkey,
                None if action == "delete" else CID.for_dag_cbor(json.dumps(value).encode()),
                None if action == "delete" else value,
            )
            for action, col, rkey, value in ops
        ]
        head = CID.for_dag_cbor(rev.encode())
        events = await self.worker.run(
            MirrorStore.apply_commit,
            did,
            rev=rev,
            data=head,
            commit=head,
            ops=record_ops,
            cursor=("relay", self.revs),
        )
        self.server.notify(events[-1].time_us)
        return events

    async def account(self, did: str, status: str) -> list[MirrorEvent]:
        events = await self.worker.run(
            MirrorStore.set_account_status, did, status, seq=7, time="2026-12-02T00:00:00Z"
        )
        self.server.notify(events[-1].time_us)
        return events

    async def identity(self, did: str, handle: str) -> MirrorEvent:
        event = await self.worker.run(MirrorStore.add_identity_event, did, handle, 8, "2026-12-02T00:00:00Z")
        self.server.notify(event.time_us)
        return event

    async def all_events(self) -> list[MirrorEvent]:
        return await self.worker.read(MirrorStore.read_events, 0, 1_000_000)


def post(text: str) -> dict[str, Any]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-02T00:00:00.000Z"}


def like(n: int) -> dict[str, Any]:
    return {
        "$type": "app.bsky.feed.like",
        "subject": {"uri": f"at://{BOB}/app.bsky.feed.post/{n}", "cid": str(CID.for_dag_cbor(b"x"))},
        "createdAt": "2026-12-02T00:00:00.000Z",
    }


def follow(did: str) -> dict[str, Any]:
    return {"$type": "app.bsky.graph.follow", "subject": did, "createdAt": "2026-12-02T00:00:00.000Z"}


async def fill(env: Env, rounds: int, start: int = 0) -> None:
    """A mix of commits (three collections, all actions), identity and account events for three DIDs."""
    for i in range(start, start + rounds):
        for did in (ALICE, BOB, CAROL):
            await env.commit(
                did,
                [
                    ("create", "app.bsky.feed.post", f"p{i}", post(f"{did} {i}")),
                    ("create", "app.bsky.feed.like", f"l{i}", like(i)),
                    ("create", "app.bsky.graph.follow", f"f{i}", follow(BOB)),
                ],
            )
            await env.commit(did, [("update", "app.bsky.feed.post", f"p{i}", post(f"{did} {i} edited"))])
        await env.commit(ALICE, [("delete", "app.bsky.feed.like", f"l{i}", None)])
        await env.identity(BOB, f"bob{i}.test")
        await env.account(CAROL, "deactivated" if i % 2 == 0 else "active")


def wanted(
    events: list[MirrorEvent],
    *,
    dids: set[str] | None = None,
    collections: tuple[str, ...] = (),
    kinds: set[str] | None = None,
    after: int = -1,
) -> list[int]:
    """The time_us of the events a Jetstream filter passes (collections: exact NSIDs or 'prefix.*')."""

    def col_ok(ev: MirrorEvent) -> bool:
        if ev.kind != "commit" or not collections:
            return True
        col = ev.collection or ""
        return any(col.startswith(c[:-1]) if c.endswith(".*") else col == c for c in collections)

    return [
        ev.time_us
        for ev in events
        if ev.time_us > after
        and (dids is None or ev.did in dids)
        and (kinds is None or ev.kind in kinds)
        and col_ok(ev)
    ]


async def until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)
    assert cond(), what


@pytest.fixture
async def env(tmp_path: Path, database: str | None) -> AsyncIterator[Env]:
    env = await start_env(tmp_path, database=database)
    try:
        yield env
    finally:
        await stop_env(env)


_runners: dict[int, web.AppRunner] = {}


async def start_env(tmp_path: Path, database: str | None = None, **kwargs: Any) -> Env:
    store = open_mirror(database or tmp_path / "mirror.sqlite3", synchronous="NORMAL")
    worker = StoreWorker(store)
    metrics = Metrics()
    app = web.Application()
    server = mount_jetstream(app, store, worker, metrics=metrics, **kwargs)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    env = Env(store, worker, server, f"http://127.0.0.1:{port}", metrics)
    _runners[id(env)] = runner
    return env


async def stop_env(env: Env) -> None:
    await _runners.pop(id(env)).cleanup()
    await env.worker.close()
    env.store.close()


class SdkReader:
    """The SDK's async client in a task, collecting what it delivers."""

    def __init__(self, env: Env, params: dict[str, Any] | None, *, compress: bool = False) -> None:
        self.client = AsyncJetstreamClient(params=params, base_uri=f"{env.ws}/xrpc", compress=compress)
        self.messages: list[Any] = []
        self.errors: list[BaseException] = []
        self.task: asyncio.Task[None] | None = None

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)

    async def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.client.start(self.on_message, self.on_error))

    @property
    def seqs(self) -> list[int]:
        return [m.seq for m in self.messages if getattr(m, "seq", None) is not None]

    async def stop(self) -> None:
        await self.client.stop()
        assert self.task is not None
        async with asyncio.timeout(10):
            await self.task
        assert not self.errors


async def test_sdk_filters_cursor_replay_and_live(env: Env) -> None:
    """Prefix collections and DIDs, replayed from the start, then live: exactly the filtered events."""
    await fill(env, 3)
    params = {"collections": ["app.bsky.feed.*"], "dids": [ALICE, CAROL], "cursor": 0}
    reader = SdkReader(env, params)
    reader.start()
    expected = wanted(await env.all_events(), dids={ALICE, CAROL}, collections=("app.bsky.feed.*",))
    await until(lambda: len(reader.seqs) >= len(expected), "the replay arrived")
    assert reader.seqs == expected
    kinds = {type(m).__name__ for m in reader.messages}
    assert kinds == {"Commit", "Account"}, kinds  # BOB's identity events are filtered out by dids
    # the SDK parsed the v2 messages into its models, fields as stored
    first = reader.messages[0]
    assert first.did == ALICE and first.collection == "app.bsky.feed.post" and first.operation == "create"
    assert first.record.text == f"{ALICE} 0" and first.cid and first.rev and first.time.endswith("Z")
    deletes = [m for m in reader.messages if getattr(m, "operation", None) == "delete"]
    assert deletes and all(m.record is None and m.cid is None for m in deletes)
    # live: written after the client caught up
    await until(lambda: env.server.subscribers == 1, "subscribed")
    await fill(env, 2, start=3)
    expected = wanted(await env.all_events(), dids={ALICE, CAROL}, collections=("app.bsky.feed.*",))
    await until(lambda: len(reader.seqs) >= len(expected), "the live events arrived")
    assert reader.seqs == expected
    await reader.stop()


async def test_sdk_cursor_is_inclusive_and_kinds_filter(env: Env) -> None:
    await fill(env, 2)
    events = await env.all_events()
    cursor = events[len(events) // 2].time_us
    reader = SdkReader(
        env, {"cursor": cursor, "kinds": ["commit", "identity"], "collections": ["app.bsky.graph.follow"]}
    )
    reader.start()
    expected = wanted(
        events, kinds={"commit", "identity"}, collections=("app.bsky.graph.follow",), after=cursor - 1
    )
    await until(lambda: len(reader.seqs) >= len(expected), "the replay arrived")
    assert reader.seqs == expected
    await reader.stop()


async def test_sdk_live_tip_without_cursor_and_compression_fallback(env: Env) -> None:
    """No cursor: only events after the connection; compress=True (the default) falls back to plain frames."""
    await fill(env, 1)
    before = (await env.all_events())[-1].time_us
    reader = SdkReader(env, {"dids": [BOB]}, compress=True)
    reader.start()
    await until(lambda: env.server.subscribers == 1, "subscribed")
    await fill(env, 2, start=1)
    expected = wanted(await env.all_events(), dids={BOB}, after=before)
    await until(lambda: len(reader.seqs) >= len(expected), "the live events arrived")
    assert reader.seqs == expected
    assert not reader.client.compressed
    identities = [m for m in reader.messages if type(m).__name__ == "Identity"]
    assert [m.identity.handle for m in identities] == ["bob1.test", "bob2.test"]
    await reader.stop()


async def test_many_sdk_clients_share_the_live_stream(env: Env) -> None:
    readers = [SdkReader(env, {"collections": ["app.bsky.feed.post"]}) for _ in range(5)]
    for reader in readers:
        reader.start()
    await until(lambda: env.server.subscribers == 5, "subscribed")
    await fill(env, 3)
    expected = wanted(await env.all_events(), collections=("app.bsky.feed.post",))
    await until(lambda: all(len(r.seqs) >= len(expected) for r in readers), "everyone got everything")
    for reader in readers:
        assert reader.seqs == expected
        await reader.stop()


async def _classic_receive(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(15):
        while len(out) < count:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            out.append(json.loads(msg.data))
    return out


async def test_classic_wire_filters_and_options_update(env: Env) -> None:
    """``/subscribe``: classic shapes, wanted* filters, cursor; options_update swaps the filters."""
    await fill(env, 2)
    events = await env.all_events()
    async with aiohttp.ClientSession() as http:
        query = f"wantedCollections=app.bsky.graph.*&wantedDids={ALICE}&wantedDids={BOB}"
        query += f"&cursor={events[0].time_us}"
        async with http.ws_connect(f"{env.ws}/subscribe?{query}") as ws:
            expected = wanted(events, dids={ALICE, BOB}, collections=("app.bsky.graph.*",))
            got = await _classic_receive(ws, len(expected))
            assert [m["time_us"] for m in got] == expected
            commit = next(m for m in got if m["kind"] == "commit")
            assert set(commit) == {"did", "time_us", "kind", "commit"}
            assert commit["commit"]["collection"] == "app.bsky.graph.follow"
            assert commit["commit"]["record"]["subject"] == BOB and commit["commit"]["cid"]
            assert {m["kind"] for m in got} == {"commit", "identity"}
            # a marker the old filters pass: once it arrives, every earlier event has been passed
            marker = await env.commit(ALICE, [("create", "app.bsky.graph.follow", "marker", follow(CAROL))])
            got = await _classic_receive(ws, 1)
            assert got[0]["time_us"] == marker[0].time_us
            # swap to CAROL's posts only (applied by the server's reader task), then write
            update = {
                "type": "options_update",
                "payload": {"wantedDids": [CAROL], "wantedCollections": ["app.bsky.feed.post"]},
            }
            await ws.send_str(json.dumps(update))
            await until(
                lambda: all(s.filters.dids == {CAROL} for s in env.server.subscriber_states()),
                "update applied",
            )
            last = (await env.all_events())[-1].time_us
            await fill(env, 1, start=2)
            expected = wanted(
                await env.all_events(), dids={CAROL}, collections=("app.bsky.feed.post",), after=last
            )
            got = await _classic_receive(ws, len(expected))
            assert [m["time_us"] for m in got] == expected
            assert {m["kind"] for m in got} == {"commit", "account"}
            # an invalid options_update closes the connection with 1008
            await ws.send_str(json.dumps({"type": "options_update", "payload": {"wantedDids": ["nope"]}}))
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008, msg


async def test_classic_require_hello(env: Env) -> None:
    await fill(env, 1)
    events = await env.all_events()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{env.ws}/subscribe?requireHello=true&cursor=0") as ws,
    ):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.3)  # nothing before the hello
        hello = {"type": "options_update", "payload": {"wantedDids": [ALICE], "maxMessageSizeBytes": 0}}
        await ws.send_str(json.dumps(hello))
        expected = wanted(events, dids={ALICE})
        got = await _classic_receive(ws, len(expected))
        assert [m["time_us"] for m in got] == expected


async def test_bad_requests_are_refused_before_the_upgrade(env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        cases = [
            "/xrpc/network.bsky.jetstream.subscribeEvents?kinds=bogus",
            "/xrpc/network.bsky.jetstream.subscribeEvents?kinds=identity&collections=app.bsky.feed.post",
            "/xrpc/network.bsky.jetstream.subscribeEvents?zstdDictionary=3",
            "/xrpc/network.bsky.jetstream.subscribeEvents?dids=not-a-did",
            "/subscribe?compress=true",
            "/subscribe?wantedCollections=app.*.post",
            "/subscribe?cursor=abc",
        ]
        for case in cases:
            async with http.get(
                f"{env.url}{case}", headers={"Upgrade": "websocket", "Connection": "Upgrade"}
            ) as resp:
                assert resp.status == 400, case
                body = await resp.json()
                assert body["error"] == "InvalidRequest" and body["message"], case


async def test_cursor_below_the_retention_floor(env: Env) -> None:
    """A pruned log: a seq cursor below the floor is refused (CursorTooOld, 400 before the upgrade); a
    timestamp cursor is clamped to the floor with an #info OutdatedCursor first frame; nothing is skipped."""
    await fill(env, 3)
    events = await env.all_events()
    middle = events[len(events) // 2].time_us
    await env.worker.run(MirrorStore.prune_events, middle)
    floor = events[len(events) // 2 - 1].time_us + 1  # one past the newest pruned
    assert await env.worker.read(MirrorStore.floor_time_us) == floor
    kept = [e.time_us for e in events if e.time_us >= middle]
    v2 = f"{env.ws}/xrpc/network.bsky.jetstream.subscribeEvents"
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{env.url}/xrpc/network.bsky.jetstream.subscribeEvents?cursor=5",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        ) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error"] == "CursorTooOld" and str(floor) in body["message"], body
        # a timestamp cursor one microsecond before the first event: clamped, told, then every kept event
        async with http.ws_connect(f"{v2}?cursor={events[0].time_us - 1}", protocols=("xrpc.v1.json",)) as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
            assert first["payload"]["$type"] == f"{JETSTREAM_NSID}#info", first
            assert first["payload"]["name"] == "OutdatedCursor" and str(floor) in first["payload"]["message"]
            got = []
            while len(got) < len(kept):
                got.append(json.loads((await ws.receive(timeout=5)).data)["payload"]["seq"])
            assert got == kept
        # the classic wire has no #info: it starts at the floor
        async with http.ws_connect(f"{env.ws}/subscribe?cursor={events[0].time_us}") as ws:
            got = []
            while len(got) < len(kept):
                got.append(json.loads((await ws.receive(timeout=5)).data)["time_us"])
            assert got == kept
        # a cursor at or past the floor is served as before
        async with http.ws_connect(f"{v2}?cursor={floor}", protocols=("xrpc.v1.json",)) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["payload"]["seq"] == middle
    # the SDK client reads the #info frame without failing and goes on with the events
    reader = SdkReader(env, {"cursor": events[0].time_us})
    reader.start()
    await until(lambda: len(reader.seqs) >= len(kept), "the kept events through the SDK")
    assert reader.seqs == kept
    await reader.stop()


async def test_max_message_size_skips_big_events(env: Env) -> None:
    await env.commit(ALICE, [("create", "app.bsky.feed.post", "small", post("s"))])
    await env.commit(ALICE, [("create", "app.bsky.feed.post", "big", post("b" * 5000))])
    events = await env.all_events()
    reader = SdkReader(env, {"cursor": 0, "maxMessageSizeBytes": 2000})
    reader.start()
    await until(lambda: len(reader.seqs) >= 1, "the small event arrived")
    await asyncio.sleep(0.2)
    assert reader.seqs == [events[0].time_us]
    await reader.stop()


async def test_slow_client_is_cut(tmp_path: Path) -> None:
    """A v2 client that never reads (tiny receive buffer) falls max_queue behind: ConsumerTooSlow, 1008."""
    env = await start_env(tmp_path, max_queue=20, window=64, page=16, close_timeout=1.0)
    try:

        def small_buffer(addr_info: Any) -> socket.socket:
            family, kind, proto, _name, _addr = addr_info
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            return sock

        fast = SdkReader(env, {"dids": [BOB]})
        fast.start()
        connector = aiohttp.TCPConnector(socket_factory=small_buffer)
        async with aiohttp.ClientSession(connector=connector) as http:
            url = f"{env.ws}/xrpc/network.bsky.jetstream.subscribeEvents?dids={ALICE}"
            async with http.ws_connect(
                url, max_msg_size=0, autoping=False, protocols=("xrpc.v1.json",)
            ) as ws:
                assert ws.protocol == "xrpc.v1.json"
                await until(lambda: env.server.subscribers == 2, "both subscribed")
                big = "x" * 20_000
                slow = env.metrics.get("atrepo_jetstream_slow_consumers_total")
                assert slow is not None
                for i in range(400):
                    await env.commit(ALICE, [("create", "app.bsky.feed.post", f"b{i}", post(big))])
                    if getattr(slow, "value")() >= 1:  # noqa: B009
                        break
                await env.commit(BOB, [("create", "app.bsky.feed.post", "after", post("still here"))])
                assert getattr(slow, "value")() >= 1  # noqa: B009
                await until(lambda: env.server.subscribers == 1, "the slow subscriber gone")
                frames = 0
                last: Any = None
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 15)
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    frames += 1
                    last = json.loads(msg.data)
                assert frames > 0
                print(
                    "slow subscriber: read",
                    frames,
                    "frames, then",
                    msg.type,
                    last.get("error") if last else "",
                )
                if last is not None and last.get("$type") == "error":
                    assert last["error"] == "ConsumerTooSlow"
                    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
                else:  # the close could not be delivered in time: the connection was aborted
                    assert msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    )
        # the reading client was unaffected
        await until(
            lambda: bool(fast.messages) and fast.messages[-1].rkey == "after", "the fast one kept going"
        )
        await fast.stop()
    finally:
        await stop_env(env)


async def test_replay_crosses_into_live_under_writes(tmp_path: Path) -> None:
    """A backlog past the window, replayed from the store in pages during writes: no gap, no duplicate."""
    env = await start_env(tmp_path, max_queue=32, window=64, page=16)
    try:
        for i in range(60):
            await env.commit(
                ALICE if i % 2 else BOB, [("create", "app.bsky.feed.post", f"a{i}", post(str(i)))]
            )
            await env.commit(CAROL, [("create", "app.bsky.feed.like", f"l{i}", like(i))])
        readers = [
            SdkReader(env, {"cursor": 0, "collections": ["app.bsky.feed.post"]}),
            SdkReader(env, {"cursor": 0, "dids": [CAROL]}),
            SdkReader(env, {"cursor": 0}),
        ]

        async def writes() -> None:
            for i in range(60, 160):
                await env.commit(
                    ALICE if i % 2 else BOB, [("create", "app.bsky.feed.post", f"a{i}", post(str(i)))]
                )
                await env.commit(CAROL, [("create", "app.bsky.feed.like", f"l{i}", like(i))])
                if i % 10 == 0:
                    await asyncio.sleep(0.01)

        writer = asyncio.get_running_loop().create_task(writes())
        for reader in readers:
            reader.start()
        await writer
        events = await env.all_events()
        expectations = [
            wanted(events, collections=("app.bsky.feed.post",)),
            wanted(events, dids={CAROL}),
            wanted(events),
        ]
        for reader, expected in zip(readers, expectations, strict=True):
            await until(lambda r=reader, e=expected: len(r.seqs) >= len(e), "caught up")  # type: ignore[misc]
            assert reader.seqs == expected
            await reader.stop()
    finally:
        await stop_env(env)


async def test_v2_options_update_and_shutdown_close(tmp_path: Path) -> None:
    """The v2 wire takes options_update too (v2 or classic names); a server shutdown closes with 1012."""
    env = await start_env(tmp_path)
    closed = False
    try:
        async with aiohttp.ClientSession() as http:
            url = f"{env.ws}/xrpc/network.bsky.jetstream.subscribeEvents?kinds=identity"
            async with http.ws_connect(url, protocols=("xrpc.v1.json",)) as ws:
                await until(lambda: env.server.subscribers == 1, "subscribed")
                await env.commit(ALICE, [("create", "app.bsky.feed.post", "x", post("x"))])
                await env.identity(BOB, "bob.test")
                frame = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                assert frame["$type"] == "message"
                assert frame["payload"]["$type"] == "network.bsky.jetstream.subscribeEvents#identity"
                update = {
                    "type": "options_update",
                    "payload": {"kinds": ["commit"], "collections": ["app.bsky.*"]},
                }
                await ws.send_str(json.dumps(update))
                await until(
                    lambda: all(s.filters.kinds == {"commit"} for s in env.server.subscriber_states()), "set"
                )
                await env.identity(BOB, "bob2.test")
                events = await env.commit(ALICE, [("create", "app.bsky.feed.post", "y", post("y"))])
                frame = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                assert frame["payload"]["seq"] == events[0].time_us and frame["payload"]["rkey"] == "y"
                await stop_env(env)
                closed = True
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1012, msg
    finally:
        if not closed:
            await stop_env(env)


def test_filters_validation() -> None:
    flt = Filters.build(dids=[ALICE], collections=["app.bsky.feed.*", "app.bsky.graph.follow"], kinds=[])
    assert flt.prefixes == ("app.bsky.feed.",) and flt.collections == {"app.bsky.graph.follow"}
    assert flt.store_collections == ["app.bsky.graph.follow", "app.bsky.feed.*"]
    for bad in (
        {"dids": ["did:nope"]},
        {"collections": ["app.bsky.feed.**"]},
        {"collections": ["*"]},
        {"collections": [f"com.example.c{i}" for i in range(101)]},
        {"kinds": ["commit", "nope"]},
        {"kinds": ["account"], "collections": ["app.bsky.feed.post"]},
        {"max_size": -1},
    ):
        with pytest.raises(InvalidRequest):
            Filters.build(**bad)
