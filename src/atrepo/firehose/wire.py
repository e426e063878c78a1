"""WebSocket frames built once and written to many transports: the firehose's one step below aiohttp.

Why: ``WebSocketResponse.send_bytes`` costs, per frame and per subscriber, a
coroutine, a header, a copy of the payload into ``header + payload`` and a
``transport.write`` (usually a ``send`` system call). A server's frames are
not masked (RFC 6455 §5.1), and the firehose never compresses them (the router
opens subscriptions with ``compress=False``), so the wire bytes of one event
are the same for every subscriber. They are built once per event
(:func:`binary_frame`) and a subscriber's pending frames go to its transport
in one ``write`` (:func:`write_frames`): one system call for a whole batch.

What is kept from aiohttp: the connection itself (upgrade, pings, pongs, the
close handshake, which still go through the ``WebSocketResponse``) and its
flow control: :func:`drain` waits on the same ``StreamWriter.drain`` that
aiohttp's own writer uses once the transport's buffer is over its high-water
mark. Frames written here are whole frames, in one call, so aiohttp's control
frames can only fall between two of them, which RFC 6455 §5.4 allows.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from aiohttp import web

__all__ = ["HIGH_WATER", "binary_frame", "buffered", "drain", "frame_size", "write_frames"]

#: Bytes a subscriber's transport may hold before its sender waits for the socket to drain.
#: asyncio's own default high-water mark: at most one batch is written past it.
HIGH_WATER: Final = 64 * 1024

_FIN_BINARY: Final = 0x82  # FIN set, opcode 2 (binary), no RSV bits: no extension in use
_LEN16: Final = struct.Struct("!BBH").pack
_LEN64: Final = struct.Struct("!BBQ").pack


def binary_frame(payload: bytes) -> bytes:
    """The whole unmasked server-to-client frame carrying ``payload`` (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_BINARY, n)) + payload
    if n < 65536:
        return _LEN16(_FIN_BINARY, 126, n) + payload
    return _LEN64(_FIN_BINARY, 127, n) + payload


def frame_size(payload_len: int) -> int:
    """The length of :func:`binary_frame` for a payload of ``payload_len`` bytes."""
    return payload_len + (2 if payload_len < 126 else 4 if payload_len < 65536 else 10)


def write_frames(ws: web.WebSocketResponse, request: web.BaseRequest, frames: Sequence[bytes]) -> int:
    """Write whole ``frames`` (from :func:`binary_frame`) to the connection in one call; return the bytes.

    Raises ``ConnectionResetError`` when the connection is gone or its close
    has begun (nothing may follow a close frame), as aiohttp's writer does.
    """
    transport = request.transport
    if transport is None or transport.is_closing() or ws.closed:
        raise ConnectionResetError("Cannot write to closing transport")
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    transport.write(data)
    return len(data)


def buffered(request: web.BaseRequest) -> int:
    """Bytes written to the connection that the socket has not taken yet (0 once it is gone)."""
    transport = request.transport
    return transport.get_write_buffer_size() if transport is not None else 0


async def drain(request: web.BaseRequest) -> None:
    """Wait until the socket has taken enough that the buffer is under its low-water mark.

    Only worth awaiting when :func:`buffered` is over :data:`HIGH_WATER`. A
    connection lost meanwhile raises ``ConnectionError`` or returns at once
    (then the next :func:`write_frames` raises).
    """
    await request.writer.drain()
