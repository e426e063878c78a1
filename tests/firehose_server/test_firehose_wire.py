"""Shared wire frames: byte-identical to aiohttp's, written in batches in order, and the queue metrics."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketWriter, WSMsgType
from firehose_support import SUBSCRIBE, Firehose, Start, eventually, read_until, seqs

from atrepo.firehose import outbox as outbox_module
from atrepo.firehose.wire import binary_frame, frame_size, write_frames


class _Capture(asyncio.Transport):
    """A transport that keeps what aiohttp's writer writes (aiohttp's own component is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000, 300_000])
async def test_binary_frame_is_what_aiohttp_sends(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    transport = _Capture()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), transport, use_mask=False)
    await writer.send_frame(payload, WSMsgType.BINARY)
    assert binary_frame(payload) == bytes(transport.data)
    assert frame_size(size) == len(transport.data)


async def _raw_stream(fh: Firehose, cursor: int | None, frames: int) -> tuple[bytes, list[bytes]]:
    """Every byte the server sends after the upgrade, until ``frames`` whole data frames have come."""
    url = urlsplit(fh.url)
    assert url.hostname is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    query = "" if cursor is None else f"?cursor={cursor}"
    writer.write(
        f"GET {SUBSCRIBE}{query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    raw = bytearray()
    payloads: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            while len(payloads) < frames:
                first = await reader.readexactly(2)
                n = first[1] & 0x7F
                extra = b""
                if n == 126:
                    extra = await reader.readexactly(2)
                    n = int.from_bytes(extra, "big")
                elif n == 127:
                    extra = await reader.readexactly(8)
                    n = int.from_bytes(extra, "big")
                payload = await reader.readexactly(n)
                raw += first + extra + payload
                assert first[0] == 0x82, first  # FIN, binary, no RSV bit: nothing compressed
                payloads.append(payload)
    finally:
        writer.close()
    return bytes(raw), payloads


@pytest.mark.parametrize("direct", [True, False])
async def test_the_bytes_on_the_wire_are_the_frames_aiohttp_would_send(
    start: Start, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Both send paths put the same bytes on the socket: backfill from the store, then live frames."""
    monkeypatch.setattr(outbox_module, "_DIRECT_WRITES", direct)
    fh = await start(window=8, page=3, max_queue=8)
    alice = await fh.create_account()
    for i in range(10):
        await fh.post(alice, "y" * (i * 30))  # frames on both sides of the 126-byte header step
    rows = await fh.worker.read(lambda s: s.read_events(0, 100))
    reading = asyncio.create_task(_raw_stream(fh, 0, len(rows) + 5))
    await eventually(lambda: fh.fanout.subscribers and fh.fanout.subscribers[0].live, "caught up")
    rows += [await fh.post(alice, "z" * 70_000)] + [await fh.post(alice) for _ in range(4)]
    raw, payloads = await reading
    assert payloads == [row.frame for row in rows]
    assert raw == b"".join(binary_frame(row.frame) for row in rows)


async def test_batched_writes_keep_order_across_batch_limits(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches (a few frames per write, a large frame alone) still give every seq once, in order."""
    monkeypatch.setattr(outbox_module, "BATCH_BYTES", 4000)
    fh = await start(window=16, page=7, max_queue=16)
    alice = await fh.create_account()
    for i in range(20):
        await fh.post(alice, "x" * (5000 if i % 6 == 0 else 40))
    head = await fh.head()
    clients = [await fh.connect(0) for _ in range(3)]
    try:
        for i in range(20):
            await fh.post(alice, "w" * (9000 if i % 5 == 0 else 10))
        streams = await asyncio.gather(*(read_until(ws, head + 20) for ws in clients))
    finally:
        for ws in clients:
            await ws.close()
    for stream in streams:
        assert seqs(stream) == list(range(1, head + 21))
    assert fh.metrics.bytes is not None
    expected = sum(frame_size(len(data)) for data, _ in streams[0])
    await eventually(
        lambda: fh.metrics.bytes is not None and fh.metrics.bytes.value() >= 3 * expected, "sent"
    )


async def test_every_subscriber_sends_the_same_frame_objects(start: Start) -> None:
    """The window's frames and a backfill page are built once: callers get the very same bytes objects."""
    fh = await start(window=4, page=3, max_queue=4)
    alice = await fh.create_account()
    for _ in range(12):
        await fh.post(alice)
    await eventually(lambda: fh.fanout.tail == 16, "the fan-out caught up")
    one, two = fh.fanout.frames_after(fh.fanout.base, 10), fh.fanout.frames_after(fh.fanout.base, 10)
    assert one is not None and two is not None and one.wires
    assert all(a is b for a, b in zip(one.wires, two.wires, strict=True))
    assert one.wires == [binary_frame(row.frame) for row in one.rows]
    # Concurrent backfills of the same page share one read and its frames; a full page stays shared.
    first, second = await asyncio.gather(fh.fanout.backfill(0, 3), fh.fanout.backfill(0, 3))
    later = await fh.fanout.backfill(0, 3)
    assert [r.seq for r in first.rows] == [1, 2, 3]
    assert all(a is b is c for a, b, c in zip(first.wires, second.wires, later.wires, strict=True))
    assert first.ends == [sum(len(w) for w in first.wires[: i + 1]) for i in range(3)]


async def test_shared_pages_are_dropped_once_every_subscriber_is_live(start: Start) -> None:
    fh = await start(window=4, page=3, max_queue=4)
    alice = await fh.create_account()
    for _ in range(12):
        await fh.post(alice)
    head = await fh.head()
    await eventually(lambda: fh.fanout.tail == head, "the pump is idle")  # nothing drops pages early
    async with await fh.connect(0) as ws:
        await read_until(ws, head)  # a backfill from the store, then live
        assert fh.fanout.shared_pages_held > 0
        await fh.live(1)
        row = await fh.post(alice)  # events arriving: the pump sees nobody backfilling
        await read_until(ws, row.seq)
        await eventually(lambda: fh.fanout.shared_pages_held == 0, "pages dropped")


async def test_a_short_backfill_page_is_read_again(start: Start) -> None:
    """A page that reached the head is not kept: a later reader sees the events appended since."""
    fh = await start(window=4, page=3, max_queue=4)
    alice = await fh.create_account()
    head = await fh.head()
    short = await fh.fanout.backfill(head - 1, 3)
    assert [r.seq for r in short.rows] == [head]
    row = await fh.post(alice)
    again = await fh.fanout.backfill(head - 1, 3)
    assert [r.seq for r in again.rows] == [head, row.seq]


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_queue_metrics_are_sampled_at_scrape_time(start: Start) -> None:
    fh = await start(window=64, page=8, max_queue=64)
    alice = await fh.create_account()
    assert {g.name for g in fh.metrics.sampled} >= {
        "atrepo_firehose_subscribers_by_state",
        "atrepo_firehose_queue_depth_max",
        "atrepo_firehose_queue_depth_sum",
        "atrepo_firehose_write_buffer_bytes_max",
    }
    stalled = await fh.connect()  # live, and never reads: its queue grows once the socket is full
    await fh.live(1)

    async def scrape() -> dict[str, float]:
        """What /metrics would show of these (the host mounts the router's registry there)."""
        m = fh.metrics
        assert m.bytes is not None
        return _samples("\n".join(line for g in (*m.sampled, m.subscribers, m.bytes) for line in g.render()))

    got = await scrape()
    assert got['atrepo_firehose_queue_depth_max{state="live"}'] == 0
    for _ in range(60):
        row = await fh.post(alice, "q" * 200_000)
        await eventually(lambda seq=row.seq: fh.fanout.tail == seq, "the fan-out has it")
        got = await scrape()
        if got['atrepo_firehose_queue_depth_max{state="live"}'] > 0:
            break
    assert got['atrepo_firehose_subscribers_by_state{state="live"}'] == 1
    assert got['atrepo_firehose_subscribers_by_state{state="backfill"}'] == 0
    assert got["atrepo_firehose_subscribers"] == 1
    depth = got['atrepo_firehose_queue_depth_max{state="live"}']
    assert 0 < depth <= 60 and got['atrepo_firehose_queue_depth_sum{state="live"}'] == depth
    assert got["atrepo_firehose_write_buffer_bytes_max"] > 0
    assert got["atrepo_firehose_window_events"] == fh.fanout.window_size
    assert got["atrepo_firehose_bytes_sent_total"] > 200_000
    await stalled.close()
    await eventually(lambda: not fh.fanout.subscribers, "released")
    after = await scrape()
    assert after['atrepo_firehose_subscribers_by_state{state="live"}'] == 0
    assert after['atrepo_firehose_queue_depth_max{state="live"}'] == 0


async def test_subscriptions_do_not_negotiate_compression(start: Start) -> None:
    """permessage-deflate would make every subscriber's bytes differ: the server must refuse it."""
    fh = await start()
    alice = await fh.create_account()
    async with fh.session.ws_connect(fh.ws_url(0), compress=15) as ws:
        assert ws.compress == 0  # no extension in the server's answer
        frames = await read_until(ws, await fh.head())
    assert seqs(frames) == [1, 2, 3, 4] and alice.did


class _Conn:
    """Just the attributes write_frames reads of a request and a WebSocketResponse."""

    def __init__(self, transport: asyncio.Transport | None, closed: bool = False) -> None:
        self.transport = transport
        self.closed = closed


class _Writes(_Capture):
    def __init__(self, closing: bool = False) -> None:
        super().__init__()
        self.calls = 0
        self.closing = closing

    def write(self, data: Any) -> None:
        self.calls += 1
        super().write(data)

    def is_closing(self) -> bool:
        return self.closing


def test_write_frames_writes_a_batch_in_one_call_and_refuses_a_closing_connection() -> None:
    frames = [binary_frame(b"a" * n) for n in (3, 200, 70_000)]
    transport = _Writes()
    conn = _Conn(transport)
    assert write_frames(conn, conn, frames) == sum(map(len, frames))  # type: ignore[arg-type]
    assert transport.calls == 1 and bytes(transport.data) == b"".join(frames)
    for ws, request in [
        (_Conn(transport, closed=True), conn),  # the close handshake has begun: nothing may follow it
        (conn, _Conn(None)),  # the connection is gone
        (conn, _Conn(_Writes(closing=True))),
    ]:
        with pytest.raises(ConnectionResetError):
            write_frames(ws, request, frames)  # type: ignore[arg-type]
    assert transport.calls == 1
