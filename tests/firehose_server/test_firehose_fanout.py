"""Many subscribers, slow consumers, shutdown and disconnects, over real WebSockets."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
from firehose_support import (
    Firehose,
    Start,
    create,
    eventually,
    expect_close,
    read_until,
    receive_frame,
    seqs,
)

from atrepo.core.events import CommitEvent, ErrorFrame, decode_frame
from atrepo.store.base import EventRow
from atrepo.store.sqlite import SQLiteStore
from atrepo.xrpc.metrics import Counter, Gauge


def subscribers(fh: Firehose) -> float:
    return fh.metrics.subscribers.value()


async def test_twenty_subscribers_get_identical_frames(start: Start) -> None:
    fh = await start(window=16, page=4, max_queue=16)
    alice = await fh.create_account()
    for _ in range(5):
        await fh.post(alice)
    clients = [await fh.connect(0) for _ in range(20)]
    try:
        await eventually(lambda: subscribers(fh) == 20, "20 subscribers")
        bob = await fh.create_account()
        rows = [await fh.post(bob if i % 2 else alice) for i in range(30)]
        streams = await asyncio.gather(*(read_until(ws, rows[-1].seq) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    first = [data for data, _ in streams[0]]
    assert seqs(streams[0]) == list(range(1, rows[-1].seq + 1))
    for stream in streams[1:]:
        assert [data for data, _ in stream] == first
    sent = fh.metrics.frames.value()
    assert sent >= 20 * len(first)
    await eventually(lambda: subscribers(fh) == 0, "subscribers released")


async def test_slow_consumer_is_cut_and_others_are_not(start: Start) -> None:
    """A consumer that never reads falls behind, gets ConsumerTooSlow and a 1008 close."""
    fh = await start(window=8, page=4, max_queue=4)
    alice = await fh.create_account()
    slow = await fh.connect()
    fast = await fh.connect()
    await fh.live(2)
    big = "x" * 200_000  # fills the socket buffers in a few dozen frames
    received: list[int] = []
    final: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def read_fast() -> None:
        while not (final.done() and received and received[-1] == final.result()):
            _, frame = await receive_frame(fast)
            assert isinstance(frame, CommitEvent)
            received.append(frame.seq)

    reader = asyncio.create_task(read_fast())
    try:
        for _ in range(400):
            await fh.post(alice, big)
            if fh.metrics.slow.value() >= 1:
                break
        assert fh.metrics.slow.value() == 1, "the slow consumer was never cut"
        final.set_result((await fh.post(alice)).seq)  # the others go on after the cut
        await reader
        assert received == list(range(5, final.result() + 1))
        # The slow one, reading at last, finds what it was sent, the error frame, then the close.
        last = None
        while True:
            msg = await slow.receive(timeout=20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            last = msg.data
        assert msg.type == aiohttp.WSMsgType.CLOSE and slow.close_code == 1008
        assert msg.extra == "ConsumerTooSlow"
        assert last is not None
        error = decode_frame(last)
        assert isinstance(error, ErrorFrame) and error.error == "ConsumerTooSlow"
        await eventually(lambda: subscribers(fh) == 1, "the slow subscriber released")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await slow.close()
        await fast.close()


async def test_shutdown_closes_every_subscriber_with_1012(start: Start) -> None:
    fh = await start(window=8, page=2, max_queue=8)
    alice = await fh.create_account()
    for _ in range(10):
        await fh.post(alice)
    live = await fh.connect()
    backfilling = await fh.connect(0)
    await eventually(lambda: subscribers(fh) == 2, "2 subscribers")

    async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
        while True:  # reading, as a client does: it answers the close
            msg = await ws.receive(timeout=20)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return msg

    endings = asyncio.gather(until_closed(live), until_closed(backfilling))
    await fh.fanout.close()
    assert subscribers(fh) == 0
    for msg, ws in zip(await endings, (live, backfilling), strict=True):
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1012 and ws.close_code == 1012
    # A connection made after shutdown began is told the same at once.
    async with await fh.connect() as late:
        msg = await expect_close(late)
        assert late.close_code == 1012


async def test_a_client_that_leaves_releases_its_outbox(start: Start) -> None:
    fh = await start()
    alice = await fh.create_account()
    ws = await fh.connect()
    await eventually(lambda: subscribers(fh) == 1, "1 subscriber")
    await ws.close()
    await eventually(lambda: subscribers(fh) == 0, "released after the client closed")
    # The fan-out goes on serving the next one.
    async with await fh.connect(4) as again:
        row = await fh.post(alice)
        assert seqs(await read_until(again, row.seq)) == [row.seq]


async def test_metrics_are_in_the_router_registry(start: Start) -> None:
    fh = await start()
    assert isinstance(fh.metrics.subscribers, Gauge) and isinstance(fh.metrics.frames, Counter)
    async with fh.session.get(fh.url + "/xrpc/_health") as resp:
        assert resp.status == 200
    alice = await fh.create_account()
    async with await fh.connect(0) as ws:
        await read_until(ws, 4)
        row = await fh.post(alice)
        await read_until(ws, row.seq)
    assert fh.metrics.frames.value() == 5


async def test_the_window_stays_bounded_and_backfills_below_it_come_from_the_store(start: Start) -> None:
    fh = await start(window=4, page=3, max_queue=4)
    alice = await fh.create_account()
    async with await fh.connect(0) as ws:  # keeps reading through the whole test
        for _ in range(30):
            row = await fh.post(alice)
        await eventually(lambda: fh.fanout.tail == row.seq, "the fan-out caught up")
        window = fh.fanout.rows_after(fh.fanout.base, 100)
        assert window is not None and 4 <= len(window) <= 8
        assert [r.seq for r in window] == list(range(fh.fanout.base + 1, row.seq + 1))
        assert fh.fanout.rows_after(fh.fanout.base - 1, 100) is None  # not covered: the store's to serve
        assert fh.fanout.lag(row.seq) == 0 and fh.fanout.lag(row.seq - 2) == 2
        assert seqs(await read_until(ws, row.seq)) == list(range(1, row.seq + 1))


async def test_a_consumer_that_never_reads_again_is_aborted_after_the_close_timeout(start: Start) -> None:
    """Closing politely needs the client to read; one that never does must not hold its outbox forever."""
    fh = await start(window=8, page=4, max_queue=4, close_timeout=0.5)
    alice = await fh.create_account()
    stuck = await fh.connect()
    await fh.live(1)
    try:
        for _ in range(400):
            await fh.post(alice, "x" * 200_000)
            if fh.metrics.slow.value() >= 1:
                break
        assert fh.metrics.slow.value() == 1, "the stuck consumer was never cut"
        await eventually(lambda: subscribers(fh) == 0, "the stuck subscriber released")
    finally:
        await stuck.close()


async def _commit_silently(fh: Firehose, account: Any, rkey: str) -> EventRow:
    """A write committed without telling the fan-out (the test decides how it hears of it)."""

    def make(store: SQLiteStore) -> EventRow:
        with store.transaction(account.did) as tx:
            result = tx.open_repo().apply_writes([create(rkey)], account.key)
            tx.apply_commit(result)
            return tx.append_event(result.to_event)

    return await fh.worker.run(make)


async def test_offered_rows_that_follow_the_tail_join_the_window_at_once(start: Start) -> None:
    fh = await start()
    alice = await fh.create_account()
    await eventually(lambda: fh.fanout.tail == 4, "creation events in the window")
    row = await _commit_silently(fh, alice, "now")
    fh.fanout.offer([row])
    assert fh.fanout.tail == row.seq  # no store read was needed
    assert fh.fanout.rows_after(row.seq - 1, 10) == [row]
    ahead = [await _commit_silently(fh, alice, f"later{i}") for i in range(2)]
    fh.fanout.offer(ahead[1:])  # does not follow the tail: left to the pump, which reads both in order
    await eventually(lambda: fh.fanout.tail == ahead[1].seq, "the pump caught up")
    assert fh.fanout.rows_after(row.seq, 10) == ahead


async def test_offers_out_of_order_and_notifies_give_every_subscriber_each_event_once(start: Start) -> None:
    fh = await start(window=64, page=3, max_queue=64)
    alice = await fh.create_account()
    ws = await fh.connect(0)
    try:
        await fh.live(1)
        rows = [await _commit_silently(fh, alice, f"r{i}") for i in range(40)]
        rng = random.Random(7)
        batches, start = [], 0
        while start < len(rows):
            size = rng.randint(1, 4)
            batches.append(rows[start : start + size])
            start += size
        rng.shuffle(batches)
        for batch in batches:  # as handlers resuming in any order would, some only notifying
            if rng.random() < 0.3:
                fh.fanout.notify(batch[-1].seq)
            else:
                fh.fanout.offer(batch)
            await asyncio.sleep(0)
        got = seqs(await read_until(ws, rows[-1].seq))
    finally:
        await ws.close()
    assert got == list(range(1, rows[-1].seq + 1))
