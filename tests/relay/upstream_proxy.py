"""A fault-injecting reverse proxy in front of one real atrepo host, for the relay's end-to-end tests.

A relay's hardest code runs when its upstream misbehaves: events go missing,
a commit is forged, a host claims someone else's account, its seq goes back
after a restore, it stalls or drops the connection. Real hosts do not do
these things on demand, so :class:`UpstreamProxy` sits between the relay and
one host (whose ``public_url`` is the proxy, so the DID documents of its
accounts name the proxy: the relay takes the proxy for the host) and does
them when a test switches them on:

* plain HTTP is forwarded as it is (no redirects followed: the relay sees the
  host's own answers);
* ``subscribeRepos`` is forwarded frame by frame, decoded and re-encoded with
  the proxy's seq (below), so faults can act on single events:
  :meth:`drop_commits` (the next N ``#commit`` of a DID vanish: a
  ``prevData`` gap), :meth:`forge_next_commit` (the next ``#commit`` of a
  DID is re-signed with a stranger's key), :meth:`inject` (send another
  host's frame on this stream: an authority fault), :meth:`reset_seq` (the
  host's seq appears to go back: ``FutureCursor`` on the relay's next
  connection), :meth:`close_streams` (cut the connections), :meth:`pause` /
  :meth:`resume` (a stalled upstream), :meth:`hold_after_error` (keep the
  relay's next connections waiting once an error frame went by, so a test
  can watch the state the relay shows meanwhile).

**Seqs.** Downstream seq = ``2 * (upstream seq - offset)``: the odd seq
between two forwarded events is free for an injected frame, so injecting
never collides with a real event, and a cursor maps back as
``cursor // 2 + offset``. ``offset`` starts at 0; :meth:`reset_seq` raises
it, which makes the relay's stored cursor map *past* the host's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections import Counter, deque
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from atrepo.core.car import read_car, write_car
from atrepo.core.commit import decode_commit, sign_commit
from atrepo.core.errors import AtrepoError
from atrepo.core.events import CommitEvent, ErrorFrame, Frame, decode_frame, encode_frame
from atrepo.core.keys import PrivateKey

__all__ = ["UpstreamProxy", "bind_local", "forge_commit"]

log = logging.getLogger("tests.relay.proxy")

SUBSCRIBE: Final = "/xrpc/com.atproto.sync.subscribeRepos"
#: Headers that describe one hop, not the message: never forwarded.
HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


def bind_local() -> socket.socket:
    """A listening socket on 127.0.0.1 and a free port (bound first, so the port is known early)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def forge_commit(frame: CommitEvent, key: PrivateKey) -> CommitEvent:
    """The same ``#commit`` with its commit block re-signed by ``key`` (and the CAR rebuilt around it)."""
    _roots, blocks = read_car(frame.blocks)
    original = decode_commit(blocks.require(frame.commit, "commit"), frame.commit)
    forged = sign_commit(original.did, original.data, original.rev, key, prev=original.prev)
    rest = [(cid, data) for cid, data in blocks.items() if cid != frame.commit]
    car = write_car([forged.cid], [(forged.cid, forged.raw), *rest])
    return dataclasses.replace(frame, commit=forged.cid, blocks=car)


def _did_of(frame: Frame) -> str | None:
    if isinstance(frame, CommitEvent):
        return frame.repo
    did = getattr(frame, "did", None)
    return did if isinstance(did, str) else None


class _Stream:
    """One downstream ``subscribeRepos`` connection and the upstream one it reads."""

    def __init__(self, down: web.WebSocketResponse) -> None:
        self.down = down
        self.up: aiohttp.ClientWebSocketResponse | None = None
        self.last_up: int = 0
        #: Held while a frame is transformed and sent, so an injected frame's seq fits between two.
        self.lock = asyncio.Lock()


class UpstreamProxy:
    """A reverse proxy for one host with switchable faults (see the module docstring)."""

    def __init__(self, sock: socket.socket, upstream: str | None = None) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.offset = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.gate = asyncio.Event()
        self.gate.set()
        self._hold_after_error = False
        self._drop: Counter[str] = Counter()
        self._forge: set[str] = set()
        self.forger = PrivateKey.generate("k256")
        self.streams: set[_Stream] = set()
        #: ``#commit`` events forwarded lately, unaltered (what another proxy may inject).
        self.recent_commits: deque[CommitEvent] = deque(maxlen=50)
        #: What the proxy did: ``dropped``, ``forged``, ``injected``, ``forwarded``, ``connections``...
        self.stats: Counter[str] = Counter()
        #: Plain HTTP requests forwarded, by path (the NSID of an XRPC call, the DID of a PLC lookup).
        self.requests: Counter[str] = Counter()
        self.dropped: list[tuple[str, str]] = []  # (did, rev) of each dropped commit
        self.forged: list[tuple[str, str]] = []
        self.error_frames: list[str] = []
        #: (upstream seq, type, DID) of the frames the host sent lately, as they went by.
        self.seen: deque[tuple[int, str, str | None]] = deque(maxlen=2000)
        #: The ``cursor`` each subscription asked for (None: the live head), in order.
        self.cursors: list[str | None] = []
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, upstream: str | None = None) -> None:
        if upstream is not None:
            self.upstream = upstream
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=5))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def stop(self) -> None:
        self.flowing.set()
        self.gate.set()
        await self.close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    # --- faults --------------------------------------------------------------------------

    def drop_commits(self, did: str, count: int = 1) -> None:
        """Drop the next ``count`` ``#commit`` frames of ``did``."""
        self._drop[did] += count

    def forge_next_commit(self, did: str) -> None:
        """Re-sign the next ``#commit`` of ``did`` with a key its DID document does not name."""
        self._forge.add(did)

    def reset_seq(self, by: int) -> None:
        """From now on the host's seqs appear ``by`` lower (as after a restore from an old backup)."""
        self.offset += by

    def hold_after_error(self, hold: bool = True) -> None:
        """Once an error frame was forwarded, new subscriptions wait until :meth:`release`."""
        self._hold_after_error = hold
        if not hold:
            self.gate.set()

    def release(self) -> None:
        self._hold_after_error = False
        self.gate.set()

    def pause(self) -> None:
        """Stop forwarding stream frames (they wait, in order)."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def close_streams(self) -> None:
        """Cut every open subscription (both sides)."""
        for stream in list(self.streams):
            if stream.up is not None:
                await stream.up.close()
            await stream.down.close()

    async def inject(self, frame: Frame) -> int:
        """Send ``frame`` (another host's event, say) on every open subscription; return how many."""
        sent = 0
        for stream in list(self.streams):
            async with stream.lock:  # between two forwarded frames, never inside one's send
                seq = 2 * (stream.last_up - self.offset) + 1
                data = encode_frame(dataclasses.replace(frame, seq=seq))  # type: ignore[type-var]
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await stream.down.send_bytes(data)
                    sent += 1
        self.stats["injected"] += sent
        return sent

    @property
    def connected(self) -> int:
        return len(self.streams)

    # --- HTTP ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == SUBSCRIBE and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._subscribe(request)
        assert self._http is not None and self.upstream is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS)
        body = await request.read() if request.can_read_body else None
        self.stats["http"] += 1
        self.requests[request.path.removeprefix("/xrpc/").lstrip("/")] += 1
        try:
            async with self._http.request(
                request.method,
                f"{self.upstream}{request.rel_url}",
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as resp:
                data = await resp.read()
                out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS)
                return web.Response(status=resp.status, body=data, headers=out)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats["http-failed"] += 1
            return web.json_response({"error": "BadGateway", "message": str(exc)}, status=502)

    # --- subscribeRepos ------------------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None and self.upstream is not None
        await self.gate.wait()
        cursor_text = request.query.get("cursor")
        self.cursors.append(cursor_text)
        up_url = self.upstream.replace("http://", "ws://", 1) + SUBSCRIBE
        last_up = 0
        if cursor_text is not None:
            cursor = int(cursor_text)
            last_up = cursor // 2 + self.offset
            up_url += f"?cursor={last_up}"
        try:
            up = await self._http.ws_connect(up_url, max_msg_size=0, autoping=True)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats["upstream-refused"] += 1
            return web.json_response({"error": "BadGateway", "message": str(exc)}, status=502)
        down = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await down.prepare(request)
        stream = _Stream(down)
        stream.up = up
        stream.last_up = last_up
        self.streams.add(stream)
        self.stats["connections"] += 1
        watcher = asyncio.get_running_loop().create_task(self._watch_down(stream))
        try:
            await self._pump(stream)
        finally:
            self.streams.discard(stream)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await up.close()
            await down.close()
        return down

    async def _watch_down(self, stream: _Stream) -> None:
        """Read (and discard) what the subscriber sends; close the upstream side when it leaves."""
        async for _msg in stream.down:
            pass
        if stream.up is not None:
            await stream.up.close()

    async def _pump(self, stream: _Stream) -> None:
        up = stream.up
        assert up is not None
        async for msg in up:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue
            await self.flowing.wait()
            if stream.down.closed:
                return
            async with stream.lock:
                out = self._transform(stream, msg.data)
                if out is None:
                    continue
                try:
                    await stream.down.send_bytes(out)
                except (ConnectionError, RuntimeError):
                    return

    def _transform(self, stream: _Stream, raw: bytes) -> bytes | None:
        """Apply the faults to one upstream frame; None: drop it."""
        try:
            frame = decode_frame(raw)
        except AtrepoError:
            return raw
        if isinstance(frame, ErrorFrame):
            self.error_frames.append(frame.error)
            if self._hold_after_error:
                self.gate.clear()
            return raw
        seq = getattr(frame, "seq", None)
        if not isinstance(seq, int):
            return raw
        stream.last_up = seq
        self.stats["forwarded"] += 1
        self.seen.append((seq, getattr(frame, "type_name", "?"), _did_of(frame)))
        if isinstance(frame, CommitEvent):
            did = frame.repo
            if self._drop[did] > 0:
                self._drop[did] -= 1
                self.dropped.append((did, frame.rev))
                self.stats["dropped"] += 1
                return None
            if did in self._forge:
                self._forge.discard(did)
                frame = forge_commit(frame, self.forger)
                self.forged.append((did, frame.rev))
                self.stats["forged"] += 1
            else:
                self.recent_commits.append(frame)
        down_seq = 2 * (seq - self.offset)
        if down_seq <= 0:  # hidden below the reset point
            return None
        return encode_frame(dataclasses.replace(frame, seq=down_seq))  # type: ignore[type-var]
