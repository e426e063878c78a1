"""Connect-time cursor rules (sync.md §4) and the backfill -> live cutover, over real WebSockets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from firehose_support import Start, create, expect_close, read_until, receive_frame, seqs

from atrepo.core.events import AccountEvent, CommitEvent, ErrorFrame, IdentityEvent, InfoEvent, SyncEvent
from atrepo.core.keys import PrivateKey
from atrepo.store.sqlite import SQLiteStore


async def test_no_cursor_is_live_only(start: Start) -> None:
    fh = await start()
    alice = await fh.create_account()
    before = await fh.head()
    async with await fh.connect() as ws:
        await fh.live(1)  # the outbox has read the head: what follows is new
        rows = [await fh.post(alice) for _ in range(3)]
        frames = await read_until(ws, rows[-1].seq)
    assert seqs(frames) == [before + 1, before + 2, before + 3]
    assert [data for data, _ in frames] == [row.frame for row in rows]  # the bytes encoded at append
    assert all(isinstance(f, CommitEvent) and f.repo == alice.did for _, f in frames)


async def test_no_cursor_never_replays_even_if_the_fanout_lags(start: Start) -> None:
    """Events committed but not yet announced are still after the head read at connect: sent once."""
    fh = await start()
    alice = await fh.create_account()
    async with await fh.connect() as ws:
        await fh.live(1)
        # Commit without telling the fan-out, then tell it late: nothing lost, nothing twice.
        quiet = [await fh.worker.run(_silent_post, alice.did, alice.key, i) for i in range(3)]
        loud = await fh.post(alice)
        frames = await read_until(ws, loud.seq)
    assert seqs(frames) == [*quiet, loud.seq]


def _silent_post(store: SQLiteStore, did: str, key: PrivateKey, i: int) -> int:
    with store.transaction(did) as tx:
        result = tx.open_repo().apply_writes([create(f"quiet{i}")], key)
        tx.apply_commit(result)
        return tx.append_event(result.to_event).seq


@pytest.mark.parametrize(("window", "page"), [(4096, 500), (8, 3), (2, 1)])
async def test_backfill_then_live_with_appends_during_backfill(start: Start, window: int, page: int) -> None:
    """Exactly the seqs after the cursor, in order, once each, while writers race the backfill."""
    fh = await start(window=window, page=page, max_queue=window)
    alice = await fh.create_account()
    bob = await fh.create_account()
    for i in range(12):
        await fh.post(alice if i % 2 else bob)
    cursor = 5
    done = asyncio.Event()

    async def produce() -> None:
        for i in range(40):
            await fh.post(bob if i % 3 else alice)
            if i % 4 == 0:
                await asyncio.sleep(0)
        done.set()

    received: list[int] = []
    async with await fh.connect(cursor) as ws:
        producer = asyncio.create_task(produce())
        try:
            while not (done.is_set() and received and received[-1] == await fh.head()):
                _, frame = await receive_frame(ws)
                assert isinstance(frame, CommitEvent | SyncEvent | IdentityEvent | AccountEvent), frame
                received.append(frame.seq)
                await asyncio.sleep(0)  # a reader slower than the writer: backfill and appends interleave
        finally:
            await producer
    head = await fh.head()
    assert received == list(range(cursor + 1, head + 1))


@pytest.mark.parametrize("cursor", [0, 2, 4])
async def test_cursor_older_than_retention_gets_outdated_cursor_first(start: Start, cursor: int) -> None:
    now = [1_700_000_000_000]
    fh = await start(clock=lambda: now[0])
    await fh.create_account()  # seqs 1-4
    now[0] += 60_000
    bob = await fh.create_account()  # seqs 5-8
    pruned = await fh.worker.run(lambda s: s.prune_events(now[0] - 1))
    assert pruned == 4 and await fh.worker.read(lambda s: s.oldest_seq()) == 5
    async with await fh.connect(cursor) as ws:
        frames = await read_until(ws, 8)
        live = await fh.post(bob)
        frames += await read_until(ws, live.seq)
    infos = [f for _, f in frames if isinstance(f, InfoEvent)]
    if cursor < 4:  # events 1..4 that follow the cursor are gone
        assert isinstance(frames[0][1], InfoEvent) and frames[0][1].name == "OutdatedCursor"
        assert len(infos) == 1
    else:  # cursor 4: everything after it is still there
        assert infos == []
    assert seqs(frames) == [5, 6, 7, 8, live.seq]


async def test_cursor_zero_on_an_unpruned_log_replays_everything_without_info(start: Start) -> None:
    fh = await start()
    alice = await fh.create_account()
    await fh.post(alice)
    async with await fh.connect(0) as ws:
        frames = await read_until(ws, 5)
    assert seqs(frames) == [1, 2, 3, 4, 5]
    assert not any(isinstance(f, InfoEvent) for _, f in frames)


async def test_everything_pruned_then_old_cursor_gets_info_then_live(start: Start) -> None:
    now = [1_700_000_000_000]
    fh = await start(clock=lambda: now[0])
    alice = await fh.create_account()
    now[0] += 60_000
    assert await fh.worker.run(lambda s: s.prune_events(now[0])) == 4
    async with await fh.connect(1) as ws:
        _, first = await receive_frame(ws)
        assert isinstance(first, InfoEvent) and first.name == "OutdatedCursor"
        live = await fh.post(alice)
        frames = await read_until(ws, live.seq)
    assert seqs(frames) == [5]


@pytest.mark.parametrize("cursor", [5, 1000])
async def test_future_cursor_is_an_error_frame_then_close(start: Start, cursor: int) -> None:
    fh = await start()
    await fh.create_account()  # head 4
    async with await fh.connect(cursor) as ws:
        _, frame = await receive_frame(ws)
        assert isinstance(frame, ErrorFrame) and frame.error == "FutureCursor"
        msg = await expect_close(ws)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        assert msg.extra == "FutureCursor"


async def test_cursor_at_the_head_waits_for_the_next_event(start: Start) -> None:
    fh = await start()
    alice = await fh.create_account()
    async with await fh.connect(4) as ws:
        row = await fh.post(alice)
        frames = await read_until(ws, row.seq)
    assert seqs(frames) == [5]
