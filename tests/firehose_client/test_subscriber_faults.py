"""The subscriber against a scripted upstream: resume, error frames, bad frames, order, backpressure, stop.

Each fault is a small aiohttp WebSocket server that sends frames built with
``encode_frame``/``encode_error_frame`` and drops connections where the test
says. Every wait is bounded (``WAIT_S``); nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from client_support import (
    TIME,
    WAIT_S,
    Connection,
    Recorder,
    Script,
    ScriptedUpstream,
    did,
    hold,
    ident,
    unknown,
)

from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError
from atrepo.core.events import CommitEvent, encode_error_frame, encode_frame
from atrepo.firehose.subscriber import CursorAction, Received, Subscriber, SubscriberHooks, subscribe_url

Upstream = Callable[[Script], Awaitable[ScriptedUpstream]]

ALICE, BOB, CAROL = did("a"), did("b"), did("c")


class Hooks(SubscriberHooks):
    """Records every notification."""

    def __init__(self, action: CursorAction | None = None) -> None:
        self.action = action
        self.errors: list[str] = []
        self.infos: list[str] = []
        self.bad: list[AtrepoError] = []
        self.dropped_seqs: list[int] = []
        self.connects: list[int | None] = []
        self.disconnects: list[tuple[str, int]] = []

    def connected(self, url: str, cursor: int | None) -> None:
        self.connects.append(cursor)

    def disconnected(self, reason: str, failures: int) -> None:
        self.disconnects.append((reason, failures))

    def error_frame(self, name: str, message: str | None) -> CursorAction:
        self.errors.append(name)
        return self.action if self.action is not None else super().error_frame(name, message)

    def info(self, name: str, message: str | None) -> None:
        self.infos.append(name)

    def bad_frame(self, error: AtrepoError, raw: bytes) -> None:
        self.bad.append(error)

    def dropped(self, seq: int, why: str) -> None:
        self.dropped_seqs.append(seq)


def subscriber(url: str, handler: Callable[[Received], Awaitable[None]], **options: object) -> Subscriber:
    options.setdefault("backoff_initial", 0.01)
    options.setdefault("backoff_max", 0.05)
    options.setdefault("rng", random.Random(7))
    return Subscriber(url, handler, **options)  # type: ignore[arg-type]


async def run_until(sub: Subscriber, done: Callable[[], Awaitable[None]]) -> None:
    """Run ``sub`` until ``done()`` returns, then stop it; bounded."""
    task = asyncio.create_task(sub.run())
    try:
        await asyncio.wait_for(done(), WAIT_S)
    finally:
        sub.stop()
        await asyncio.wait_for(task, WAIT_S)


def test_subscribe_url() -> None:
    assert (
        subscribe_url("http://127.0.0.1:2583", None)
        == "ws://127.0.0.1:2583/xrpc/com.atproto.sync.subscribeRepos"
    )
    assert subscribe_url("https://relay.example/", 5) == (
        "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=5"
    )
    assert subscribe_url("wss://r.example/xrpc/com.atproto.sync.subscribeRepos?cursor=3", 0).endswith(
        "?cursor=0"
    )
    assert subscribe_url("bsky.network", None).startswith("wss://bsky.network/xrpc/")
    with pytest.raises(ValueError):
        subscribe_url("ftp://x", None)


async def test_resume_after_drops_without_loss_or_duplicates(upstream: Upstream) -> None:
    """Three connections each cut mid-stream (a close, an abort): every event accepted exactly once."""
    log = [ident(seq, (ALICE, BOB, CAROL)[seq % 3]) for seq in range(1, 31)]

    async def script(conn: Connection) -> None:
        start = conn.cursor or 0
        cut = {0: 10, 1: 17, 2: 25}.get(conn.index)
        for seq in range(start + 1, 31):
            if cut is not None and seq > cut:
                if conn.index == 1 and conn.request.transport is not None:
                    conn.request.transport.abort()  # a broken network, not a close handshake
                return
            await conn.ws.send_bytes(log[seq - 1])
        await hold(conn)

    server = await upstream(script)
    rec = Recorder()
    sub = subscriber(server.url, rec, cursor=0, lanes=4)
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= 30))
    assert sorted(rec.seqs) == list(range(1, 31))  # (no duplicate: exactly 30)
    assert sub.cursor == 30
    # every reconnect resumed from the contiguous accepted seq: where the previous connection stopped
    assert server.cursors == [0, 10, 17, 25]
    assert sub.stats.reconnects == 3
    for who in (ALICE, BOB, CAROL):
        mine = [r.seq for r in rec.accepted if r.did == who]
        assert mine == sorted(mine)


async def test_handler_raising_is_retried_in_order(upstream: Upstream) -> None:
    """A handler failure: the event is not accepted, the stream resumes from the cursor, nothing twice."""
    dids = [ALICE, BOB, CAROL, ALICE, BOB, CAROL, ALICE, ALICE, BOB, CAROL, ALICE, BOB]

    async def script(conn: Connection) -> None:
        for seq in range((conn.cursor or 0) + 1, len(dids) + 1):
            await conn.ws.send_bytes(ident(seq, dids[seq - 1]))
        await hold(conn)

    server = await upstream(script)
    rec = Recorder()
    failed: list[int] = []

    async def handler(item: Received) -> None:
        if item.seq == 4 and not failed:
            failed.append(4)
            raise RuntimeError("a store hiccup")
        await rec(item)

    sub = subscriber(server.url, handler, cursor=0, lanes=8)
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= len(dids)))
    assert failed == [4]
    assert sub.stats.handler_errors == 1
    assert sorted(rec.seqs) == list(range(1, len(dids) + 1))  # all, once each
    assert sub.cursor == len(dids)
    assert len(server.connections) == 2
    assert server.cursors[1] is not None and server.cursors[1] < 4  # resumed below the failed event
    for who in (ALICE, BOB, CAROL):
        mine = [r.seq for r in rec.accepted if r.did == who]
        assert mine == sorted(mine), (who, mine)
    assert sub.stats.accepted == len(dids)  # the handler completed once per event


async def test_future_cursor_stops(upstream: Upstream) -> None:
    async def script(conn: Connection) -> None:
        await conn.ws.send_bytes(encode_error_frame("FutureCursor", "Cursor in the future."))

    server = await upstream(script)
    hooks = Hooks()
    rec = Recorder()
    sub = subscriber(server.url, rec, cursor=99, hooks=hooks)
    await asyncio.wait_for(sub.run(), WAIT_S)  # returns by itself: the default hook says STOP
    assert hooks.errors == ["FutureCursor"]
    assert server.cursors == [99]
    assert sub.cursor == 99
    assert rec.accepted == []


async def test_consumer_too_slow_reconnects_from_cursor(upstream: Upstream) -> None:
    async def script(conn: Connection) -> None:
        start = conn.cursor or 0
        for seq in range(start + 1, start + 4):
            await conn.ws.send_bytes(ident(seq, ALICE))
        if conn.index == 0:
            await conn.ws.send_bytes(encode_error_frame("ConsumerTooSlow", "Stream consumer too slow"))
            return
        await hold(conn)

    server = await upstream(script)
    hooks = Hooks()
    rec = Recorder()
    sub = subscriber(server.url, rec, hooks=hooks, lanes=1)
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= 6))
    assert hooks.errors == ["ConsumerTooSlow"]
    assert server.cursors == [None, 3]
    assert rec.seqs == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("action", "second"), [(CursorAction.FROM_ZERO, 0), (CursorAction.FROM_HEAD, None)])
async def test_error_frame_actions(upstream: Upstream, action: CursorAction, second: int | None) -> None:
    async def script(conn: Connection) -> None:
        if conn.index == 0:
            await conn.ws.send_bytes(encode_error_frame("FutureCursor"))
            return
        await conn.ws.send_bytes(ident(1, ALICE))
        await hold(conn)

    server = await upstream(script)
    rec = Recorder()
    sub = subscriber(server.url, rec, cursor=500, hooks=Hooks(action))
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= 1))
    assert server.cursors == [500, second]
    assert sub.cursor == 1


async def test_info_garbage_unknown_and_repeated_seqs(upstream: Upstream) -> None:
    """#info goes to its hook; garbage is skipped; a seq not above the last is dropped; unknown types pass."""

    async def script(conn: Connection) -> None:
        for frame in [
            encode_frame_info("OutdatedCursor"),
            ident(1, ALICE),
            b"\xff\x00garbage",
            ident(2, BOB),
            ident(2, BOB),  # repeated
            ident(1, ALICE),  # lower
            unknown(3),
            ident(4, CAROL),
        ]:
            await conn.ws.send_bytes(frame)
        await hold(conn)

    server = await upstream(script)
    hooks = Hooks()
    rec = Recorder()
    sub = subscriber(server.url, rec, cursor=0, hooks=hooks)
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= 3))
    assert sorted(rec.seqs) == [1, 2, 4]
    assert hooks.infos == ["OutdatedCursor"]
    assert len(hooks.bad) == 1 and sub.stats.bad == 1
    assert hooks.dropped_seqs == [2, 1] and sub.stats.dropped == 2
    assert sub.stats.unknown == 1
    assert sub.cursor == 4  # past the unknown frame's seq 3
    assert sub.stats.by_type["#identity"] == 5
    assert len(server.connections) == 1


def encode_frame_info(name: str) -> bytes:
    from atrepo.core.events import InfoEvent

    return encode_frame(InfoEvent(name, "cursor is older than the window"))


async def test_slow_did_does_not_hold_others(upstream: Upstream) -> None:
    """One DID's handler blocks: the others progress, its own later events wait, the cursor stops below it."""
    sub_lanes = 16
    probe = Subscriber("http://x", Recorder(), lanes=sub_lanes)
    slow = ALICE
    others = [d for d in (did(c) for c in "bcdefghijk") if probe.lane_of(d) != probe.lane_of(slow)][:4]
    order = [slow, *others, slow, *others, slow]

    async def script(conn: Connection) -> None:
        for seq in range((conn.cursor or 0) + 1, len(order) + 1):
            await conn.ws.send_bytes(ident(seq, order[seq - 1]))
        await hold(conn)

    server = await upstream(script)
    gate = asyncio.Event()
    rec = Recorder()

    async def handler(item: Received) -> None:
        if item.did == slow and item.seq == 1:
            await gate.wait()
        await rec(item)

    sub = subscriber(server.url, handler, cursor=0, lanes=sub_lanes)
    task = asyncio.create_task(sub.run())
    try:
        await rec.until(lambda: len(rec.accepted) >= 2 * len(others))
        assert all(r.did != slow for r in rec.accepted)  # the slow DID's later events wait behind seq 1
        assert sub.cursor == 0  # nothing below the blocked seq 1 is missing, so the cursor cannot pass it
        assert sub.in_flight == 3
        gate.set()
        await rec.until(lambda: len(rec.accepted) == len(order))
        assert [r.seq for r in rec.accepted if r.did == slow] == [1, 2 + len(others), len(order)]
        assert sub.cursor == len(order)
    finally:
        sub.stop()
        await asyncio.wait_for(task, WAIT_S)


async def test_backpressure_bounds_in_flight(upstream: Upstream) -> None:
    """With every handler blocked the reader stops at max_in_flight and the upstream's sends block."""
    bound = 8
    count = 300
    blob = b"\x00" * 128_000  # 300 x 128 kB: far more than the socket buffers of both ends hold
    cid = CID.parse("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
    sent_all = asyncio.Event()

    def frame(seq: int) -> bytes:
        event = CommitEvent(seq, did("abcdefgh"[seq % 8]), cid, "3kzvfswwbxs2a", None, blob, (), TIME)
        return encode_frame(event)

    async def script(conn: Connection) -> None:
        for seq in range(1, count + 1):
            await conn.ws.send_bytes(frame(seq))
        sent_all.set()
        await hold(conn)

    server = await upstream(script)
    gate = asyncio.Event()
    seen_max = 0
    rec = Recorder()
    sub: Subscriber

    async def handler(item: Received) -> None:
        nonlocal seen_max
        seen_max = max(seen_max, sub.in_flight)
        await gate.wait()
        await rec(item)

    sub = subscriber(server.url, handler, cursor=0, lanes=4, max_in_flight=bound)
    task = asyncio.create_task(sub.run())
    try:
        reached = asyncio.Event()

        async def full() -> None:
            while sub.in_flight < bound:
                await asyncio.sleep(0.01)
            reached.set()

        await asyncio.wait_for(full(), WAIT_S)
        assert sub.in_flight == bound
        assert sub.stats.frames == bound  # the reader took no frame it had no room for
        assert not sent_all.is_set()  # so the upstream is blocked on a full socket
        gate.set()
        await rec.until(lambda: len(rec.accepted) == count)
        await asyncio.wait_for(sent_all.wait(), WAIT_S)
        assert seen_max <= bound
        assert sub.cursor == count
        assert len(server.connections) == 1
    finally:
        sub.stop()
        await asyncio.wait_for(task, WAIT_S)


async def test_a_live_start_pins_its_position_at_the_first_event(upstream: Upstream) -> None:
    """No cursor (live): if the first live event's handler fails, the reconnect replays it (cursor = its
    seq - 1) instead of joining the live head again, which would lose it and everything after it."""

    async def script(conn: Connection) -> None:
        first = 41 if conn.cursor is None else conn.cursor + 1  # live: the head is at 40
        for seq in range(first, 46):
            await conn.ws.send_bytes(ident(seq, ALICE))
        await hold(conn)

    server = await upstream(script)
    rec = Recorder()
    failed: list[int] = []

    async def handler(item: Received) -> None:
        if item.seq == 41 and not failed:
            failed.append(41)
            raise RuntimeError("the database went away")
        await rec(item)

    sub = subscriber(server.url, handler, cursor=None)
    assert sub.cursor is None
    await run_until(sub, lambda: rec.until(lambda: len(rec.accepted) >= 5))
    assert failed == [41]
    assert server.cursors == [None, 40]
    assert rec.seqs == [41, 42, 43, 44, 45]
    assert sub.cursor == 45


async def test_stop_cancels_a_hung_handler(upstream: Upstream) -> None:
    probe = Subscriber("http://x", Recorder(), lanes=4)
    hung_did = next(d for d in (did(c) for c in "bcdefgh") if probe.lane_of(d) != probe.lane_of(ALICE))

    async def script(conn: Connection) -> None:
        for seq in (1, 2, 3):
            await conn.ws.send_bytes(ident(seq, (ALICE, hung_did, ALICE)[seq - 1]))
        await hold(conn)

    server = await upstream(script)
    rec = Recorder()
    hung = asyncio.Event()
    cancelled: list[int | None] = []

    async def handler(item: Received) -> None:
        if item.did == hung_did:
            hung.set()
            try:
                await asyncio.Event().wait()  # never returns
            except asyncio.CancelledError:
                cancelled.append(item.seq)
                raise
        await rec(item)

    sub = subscriber(server.url, handler, cursor=0, lanes=4, stop_timeout=0.2)
    task = asyncio.create_task(sub.run())
    await asyncio.wait_for(hung.wait(), WAIT_S)
    await rec.until(lambda: len(rec.accepted) == 2)
    sub.stop()
    await asyncio.wait_for(task, WAIT_S)  # run() returned though the handler never would
    assert cancelled == [2]
    assert sub.cursor == 1  # seq 2 was never accepted: a restart from here replays it
    assert sub.in_flight == 0
    assert not sub.connected
    assert len(server.connections) == 1


async def test_unreachable_upstream_backs_off_and_stops() -> None:
    hooks = Hooks()
    sub = subscriber("http://127.0.0.1:9", Recorder(), hooks=hooks, connect_timeout=2.0)
    task = asyncio.create_task(sub.run())

    async def failed_thrice() -> None:
        while sub.failures < 3:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(failed_thrice(), WAIT_S)
    sub.stop()
    await asyncio.wait_for(task, WAIT_S)
    assert [f for _, f in hooks.disconnects[:3]] == [1, 2, 3]
    assert not sub.connected
