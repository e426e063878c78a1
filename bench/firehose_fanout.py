"""Firehose fan-out benchmark: frames/s delivered to 100 ``subscribeRepos`` subscribers.

``python -m bench.firehose_fanout [--quick] [--json] [--reps N] [--events N] [--subscribers N]``

The orchestrator (this process) builds one event log with real commits (accounts created and posts
committed through :class:`atrepo.core.repo.Repo`, so every ``#commit`` frame carries a real signed commit
and CAR slice), then for each rep and each contender starts a firehose server in its own process
(``--server``: SQLite store, worker, fan-out and XRPC router, as the host mounts them) and 100 subscribers
spread over ``--procs`` client processes (``--client``). Two modes:

- **replay**: every subscriber connects with ``cursor=0`` and receives the whole log (backfill).
- **live**: every subscriber connects without a cursor; once all 100 are live, a writer in the server
  process appends ``--live-events`` events as fast as it can (copies of the log's real ``#commit``
  events with new seqs, a transaction of 100 events at a time, the fan-out notified after each).

Clients read raw sockets: after the HTTP upgrade they parse WebSocket frame headers and count whole binary
frames, keeping only the last frame (and, for one sample subscriber per process, every frame) so that
they cost little beside the server. At the end each subscriber must have received exactly the expected
number of frames and its last frame must decode to the expected seq; the sample subscribers must have
received exactly the expected seqs, in order. **frames/s** is all frames delivered to all subscribers
divided by the time from the start signal until the last subscriber had its last frame.

Contenders run alternately in every rep: ``atrepo`` (the shared-wire-frame path, the default) and
``atrepo-aiohttp`` (the previous path: one ``WebSocketResponse.send_bytes`` per frame per subscriber,
selected by the server's private switch ``outbox._DIRECT_WRITES``), and with ``--refpds DIR`` (replay
only) the reference ``@atproto/pds`` from an installed refpds copy, filled by ``--ref-commits``
createRecord calls, read by the same clients. Figures are medians over reps; **atrepo x** is the median
over reps of atrepo's frames/s divided by that row's in the same rep (above 1: atrepo delivers more).
Server CPU is utime+stime of the server process over the measured interval (100% = one core), RSS its
VmRSS at the end and VmHWM (peak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import proc_cpu_seconds, proc_status_kib
from bench.refpds_server import RefPdsServer

SUBSCRIBE = "/xrpc/com.atproto.sync.subscribeRepos"
POST = "app.bsky.feed.post"
CONTENDERS = ("atrepo", "atrepo-aiohttp", "refpds")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "hosts",
    "sign",
    "commits",
]


# ------------------------------------------------------------------------------------------ the event log


def build_log(directory: Path, events: int, real_commits: int) -> dict[str, Any]:
    """Accounts and real commits, then copies of those ``#commit`` events (new seqs) up to ``events``."""
    from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, decode_frame
    from atrepo.core.keys import PrivateKey
    from atrepo.core.repo import Repo, Write
    from atrepo.store.sqlite import SQLiteStore

    store = SQLiteStore(directory, synchronous="NORMAL")
    started = time.perf_counter()
    accounts: list[tuple[str, PrivateKey]] = []
    for a in range(10):
        did = f"did:plc:bench{a:019d}"
        key = PrivateKey.generate("k256")
        with store.transaction(did) as tx:
            tx.create_account(handle=f"u{a}.bench.test", signing_key=key.to_bytes())
            result = Repo.create(did, key, ())
            tx.apply_commit(result)
            tx.append_event(lambda seq, t, did=did, a=a: IdentityEvent(seq, did, t, f"u{a}.bench.test"))
            tx.append_event(lambda seq, t, did=did: AccountEvent(seq, did, t, True))
            tx.append_event(result.to_event)
            tx.append_event(result.to_sync_event)
        accounts.append((did, key))
    for i in range(real_commits):
        did, key = accounts[i % len(accounts)]
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(10 + i % 30))
        record = {"$type": POST, "text": text, "langs": ["en"], "createdAt": "2026-12-01T12:00:00.000Z"}
        with store.transaction(did) as tx:
            result = tx.open_repo().apply_writes([Write("create", POST, f"3kbench{i:06d}", record)], key)
            tx.apply_commit(result)
            tx.append_event(result.to_event)
    templates = [
        frame
        for row in store.read_events(0, store.head_seq())
        if row.type == "#commit" and isinstance(frame := decode_frame(row.frame), CommitEvent)
    ]
    append_copies(store, templates, events - store.head_seq())
    head = store.head_seq()
    sizes = [len(row.frame) for row in store.read_events(0, head)]
    store.close()
    return {
        "events": head,
        "real_commits": real_commits,
        "frame_bytes_median": statistics.median(sizes),
        "frame_bytes_total": sum(sizes),
        "build_s": time.perf_counter() - started,
    }


def append_copies(store: Any, templates: list[Any], count: int, batch: int = 100, notify: Any = None) -> int:
    """Append ``count`` copies of real ``#commit`` events, ``batch`` per transaction (one DID each)."""
    by_did: dict[str, list[Any]] = {}
    for event in templates:
        by_did.setdefault(event.repo, []).append(event)
    dids = sorted(by_did)
    done = 0
    turn = 0
    while done < count:
        did = dids[turn % len(dids)]
        pool = by_did[did]
        n = min(batch, count - done)
        with store.transaction(did) as tx:
            for k in range(n):
                event = pool[(turn * batch + k) % len(pool)]
                tx.append_event(lambda seq, t, e=event: dataclasses.replace(e, seq=seq, time=t))
        done += n
        turn += 1
        if notify is not None:
            notify(store.head_seq())
    return done


# ------------------------------------------------------------------------------------------------ server


async def serve(spec: dict[str, Any]) -> None:
    """A firehose server as the host mounts it, plus ``/bench/append`` (live writer) and ``/bench/head``."""
    from aiohttp import web

    from atrepo.core.events import CommitEvent, decode_frame
    from atrepo.firehose import Fanout, mount_subscribe_repos
    from atrepo.firehose import outbox as outbox_module
    from atrepo.store.sqlite import SQLiteStore
    from atrepo.store.worker import StoreWorker
    from atrepo.xrpc.metrics import add_metrics_route
    from atrepo.xrpc.server import XrpcRouter

    if spec.get("legacy"):
        outbox_module._DIRECT_WRITES = False  # the private switch: the previous send path
    store = SQLiteStore(spec["data"], synchronous="NORMAL")
    worker = StoreWorker(store)
    fanout = Fanout(worker)
    router = XrpcRouter()
    mount_subscribe_repos(router, store, worker, fanout)
    templates = [
        frame
        for row in store.read_events(0, min(store.head_seq(), 3000))
        if row.type == "#commit" and isinstance(frame := decode_frame(row.frame), CommitEvent)
    ]

    async def append(request: web.Request) -> web.Response:
        count = int(request.query["count"])
        loop = asyncio.get_running_loop()

        def notify(seq: int) -> None:
            loop.call_soon_threadsafe(fanout.notify, seq)

        started = time.monotonic()
        await worker.run(lambda s: append_copies(s, templates, count, notify=notify))
        return web.json_response({"append_s": time.monotonic() - started})

    async def head(request: web.Request) -> web.Response:
        return web.json_response({"head": await worker.read(lambda s: s.head_seq())})

    app = router.app()
    add_metrics_route(app, router.metrics)
    app.router.add_post("/bench/append", append)
    app.router.add_get("/bench/head", head)
    await fanout.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", spec["port"])
    await site.start()
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(15, stop.set)
    await stop.wait()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    await fanout.close()
    await runner.cleanup()
    await worker.close()
    store.close()


# ------------------------------------------------------------------------------------------------ client


class _Sub(asyncio.Protocol):
    """One subscriber on a raw socket: the HTTP upgrade, then WebSocket frame headers, counted."""

    def __init__(self, request: bytes, expect: int, keep_all: bool, done: asyncio.Future[None]) -> None:
        self.request = request
        self.expect = expect
        self.keep_all = keep_all
        self.done = done
        self.buf = bytearray()
        self.upgraded = False
        self.frames = 0
        self.nbytes = 0
        self.last: bytes = b""
        self.all: list[bytes] = []
        self.t_first = 0.0
        self.t_done = 0.0
        self.closed_code: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"upgrade refused: {bytes(buf[:200])!r}")
            del buf[: end + 4]
            self.upgraded = True
        pos = 0
        size = len(buf)
        frames = 0
        last_start = last_end = -1
        keep = self.all if self.keep_all else None
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == 2:
                frames += 1
                last_start, last_end = pos + head, end
                if keep is not None:
                    keep.append(bytes(buf[pos + head : end]))
            elif opcode == 9 and self.transport is not None:  # ping: a pong, masked with a zero key
                self.transport.write(bytes([0x8A, 0x80 | n]) + b"\0\0\0\0" + bytes(buf[pos + head : end]))
            elif opcode == 8:
                self.closed_code = int.from_bytes(buf[pos + head : pos + head + 2], "big") if n >= 2 else 0
            pos = end
        if frames:
            if not self.frames:
                self.t_first = time.monotonic()
            self.frames += frames
            self.last = bytes(buf[last_start:last_end])
            if self.frames >= self.expect and not self.done.done():
                self.t_done = time.monotonic()
                self.done.set_result(None)
        self.nbytes += pos
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _upgrade(port: int, cursor: int | None) -> bytes:
    query = f"?cursor={cursor}" if cursor is not None else ""
    return (
        f"GET {SUBSCRIBE}{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def client(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec["subs"]`` subscribers in this process; waits for ``go`` on stdin, then connects them all."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    await reader.readline()
    request = _upgrade(spec["port"], spec.get("cursor"))
    subs: list[_Sub] = []
    t_go = time.monotonic()
    for i in range(spec["subs"]):
        done: asyncio.Future[None] = loop.create_future()
        sub = _Sub(request, spec["expect"], i == 0, done)
        await loop.create_connection(lambda sub=sub: sub, "127.0.0.1", spec["port"])  # type: ignore[misc]
        subs.append(sub)
    print("connected", flush=True)
    try:
        async with asyncio.timeout(spec.get("timeout", 600)):
            await asyncio.gather(*(sub.done for sub in subs))
    except TimeoutError:
        pass
    for sub in subs:
        if sub.transport is not None:
            sub.transport.close()
    from atrepo.core.events import decode_frame

    def seq_of(payload: bytes) -> int:
        return int(getattr(decode_frame(payload), "seq", -1))

    sample = subs[0]
    sample_seqs = [seq_of(p) for p in sample.all]
    first = spec["first_seq"]
    return {
        "t_go": t_go,
        "t_first": min((s.t_first for s in subs if s.t_first), default=0.0),
        "t_done": max(s.t_done for s in subs) if all(s.t_done for s in subs) else 0.0,
        "frames": sum(s.frames for s in subs),
        "bytes": sum(s.nbytes for s in subs),
        "counts_ok": all(s.frames == spec["expect"] for s in subs),
        "last_ok": all(s.last and seq_of(s.last) == first + spec["expect"] - 1 for s in subs),
        "sample_ok": sample_seqs == list(range(first, first + spec["expect"])),
        "closed": [s.closed_code for s in subs if s.closed_code is not None],
    }


# ------------------------------------------------------------------------------------------ orchestrator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(role: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.firehose_fanout", f"--{role}", json.dumps(spec)]
    cwd = Path(__file__).resolve().parent.parent
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)


def _expect_line(proc: subprocess.Popen[str], want: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != want:
        raise RuntimeError(f"expected {want!r} from pid {proc.pid}, got {line!r}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


def _metric(text: str, name: str, default: float = float("nan")) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return default


# ------------------------------------------------------------------------------- the reference PDS (peer)


class RefPds:
    """``@atproto/pds`` from an installed refpds copy (``--refpds DIR``), started once and filled once."""

    def __init__(self, directory: Path, data: Path) -> None:
        self.server = RefPdsServer(directory, data, data.parent / "refpds.log")
        self.server.start()
        self.port, self.pid = self.server.port, self.server.pid
        self.seqs: list[int] = []
        self.frame_bytes_median = 0.0

    def fill(self, commits: int, clients: int = 8) -> float:
        """``commits`` createRecord calls, ``clients`` accounts at once; returns records/s."""
        return asyncio.run(self._fill(commits, clients))

    async def _fill(self, commits: int, clients: int) -> float:
        import aiohttp

        base = f"http://127.0.0.1:{self.port}/xrpc/"
        done = 0
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:

            async def one(c: int) -> None:
                nonlocal done
                name = f"b{os.getpid()}x{c}"
                body = {"handle": f"{name}.test", "email": f"{name}@example.com", "password": "bench-pw-1"}
                async with session.post(base + "com.atproto.server.createAccount", json=body) as resp:
                    account = await resp.json()
                    assert resp.status == 200, account
                headers = {"Authorization": f"Bearer {account['accessJwt']}"}
                while done < commits:
                    done += 1
                    i = done
                    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(10 + i % 30))
                    record = {
                        "$type": POST,
                        "text": text,
                        "langs": ["en"],
                        "createdAt": "2026-12-01T12:00:00.000Z",
                    }
                    body = {"repo": account["did"], "collection": POST, "record": record}
                    url = base + "com.atproto.repo.createRecord"
                    async with session.post(url, json=body, headers=headers) as resp:
                        assert resp.status == 200, await resp.text()

            await asyncio.gather(*(one(c) for c in range(clients)))
        rate = commits / (time.monotonic() - started)
        self.seqs = await self._probe()
        return rate

    async def _probe(self) -> list[int]:
        """Every seq of the log, read once with ``cursor=0`` (until 3 s without a frame)."""
        from atrepo.core.events import decode_frame

        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        request = _upgrade(self.port, 0)
        sub = _Sub(request, 1 << 60, True, done)
        await loop.create_connection(lambda: sub, "127.0.0.1", self.port)
        count = -1
        while sub.frames != count:
            count = sub.frames
            await asyncio.sleep(3)
        assert sub.transport is not None
        sub.transport.close()
        self.frame_bytes_median = statistics.median(len(p) for p in sub.all)
        return [int(getattr(decode_frame(p), "seq", -1)) for p in sub.all]

    def stop(self) -> None:
        self.server.stop()


def run_once(
    args: argparse.Namespace,
    data: Path,
    contender: str,
    mode: str,
    profile: str | None,
    ref: RefPds | None = None,
) -> dict[str, Any]:
    server = None
    if ref is not None:  # the reference PDS, already running and filled: replay only
        port, server_pid = ref.port, ref.pid
    else:
        port = _free_port()
        spec = {"data": str(data), "port": port, "legacy": contender == "atrepo-aiohttp", "profile": profile}
        server = _spawn("server", spec)
        server_pid = server.pid
    clients: list[subprocess.Popen[str]] = []
    metrics_text = ""
    try:
        base = f"http://127.0.0.1:{port}"
        live_events = args.live_events
        if ref is not None:
            expect, first, cursor = len(ref.seqs), ref.seqs[0], 0
        else:
            assert server is not None
            _expect_line(server, "ready")
            head = json.loads(_get(base + "/bench/head"))["head"]
            expect, first, cursor = (head, 1, 0) if mode == "replay" else (live_events, head + 1, None)
        per = [
            args.subscribers // args.procs + (i < args.subscribers % args.procs) for i in range(args.procs)
        ]
        for subs in per:
            spec = {"port": port, "subs": subs, "expect": expect, "first_seq": first, "cursor": cursor}
            clients.append(_spawn("client", spec))
        for proc in clients:
            _expect_line(proc, "ready")
        cpu0 = proc_cpu_seconds(server_pid)
        t0 = time.monotonic()
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in clients:
            _expect_line(proc, "connected")
        append_s = None
        if mode == "live":
            deadline = time.monotonic() + 60
            while _metric(
                _get(base + "/metrics").decode(), 'atrepo_firehose_subscribers_by_state{state="live"}'
            ) != (args.subscribers):
                if time.monotonic() > deadline:
                    raise RuntimeError("subscribers never all went live")
                time.sleep(0.02)
            cpu0 = proc_cpu_seconds(server_pid)
            t0 = time.monotonic()
            req = urllib.request.Request(f"{base}/bench/append?count={live_events}", method="POST")
            with urllib.request.urlopen(req, timeout=600) as response:
                append_s = json.loads(response.read())["append_s"]
        results = []
        for proc in clients:
            out, _ = proc.communicate(timeout=900)
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu1 = proc_cpu_seconds(server_pid)
        rss = proc_status_kib(server_pid, "VmRSS")
        hwm = proc_status_kib(server_pid, "VmHWM")
        if server is not None:
            metrics_text = _get(base + "/metrics").decode()
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    t_done = max(r["t_done"] for r in results)
    slow_cut = _metric(metrics_text, "atrepo_firehose_slow_consumers_total", 0.0)
    ok = slow_cut == 0 and all(
        r["counts_ok"] and r["last_ok"] and r["sample_ok"] and r["t_done"] and not r["closed"]
        for r in results
    )
    frames = sum(r["frames"] for r in results)
    elapsed = t_done - t0 if ok else float("nan")
    return {
        "contender": contender,
        "mode": mode,
        "ok": ok,
        "frames": frames,
        "bytes": sum(r["bytes"] for r in results),
        "seconds": elapsed,
        "frames_per_s": frames / elapsed if ok else 0.0,
        "server_cpu_pct": 100 * (cpu1 - cpu0) / elapsed if ok else 0.0,
        "server_rss_mib": rss / 1024,
        "server_hwm_mib": hwm / 1024,
        "append_s": append_s,
        "slow_cut": slow_cut,
        "closes": sorted({c for r in results for c in r["closed"]}),
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="atrepo-fanout-"))
    ref: RefPds | None = None
    try:
        replay_dir, live_dir = tmp / "replay", tmp / "live"
        log_info = build_log(replay_dir, args.events, args.real_commits)
        if not args.quiet:
            print(f"log: {log_info}", file=sys.stderr)
        if args.refpds:
            ref = RefPds(Path(args.refpds), tmp / "refpds")
            rate = ref.fill(args.ref_commits)
            contiguous = ref.seqs == list(range(ref.seqs[0], ref.seqs[0] + len(ref.seqs)))
            log_info["refpds"] = {
                "events": len(ref.seqs),
                "frame_bytes_median": ref.frame_bytes_median,
                "fill_per_s": rate,
                "contiguous": contiguous,
            }
            if not args.quiet:
                print(f"refpds log: {log_info['refpds']}", file=sys.stderr)
        runs: list[dict[str, Any]] = []
        for rep in range(args.reps):
            for mode in args.modes:
                order = CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]
                for contender in order:
                    if contender not in args.impl or (
                        contender == "refpds" and (ref is None or mode != "replay")
                    ):
                        continue
                    data = replay_dir
                    if mode == "live":
                        shutil.rmtree(live_dir, ignore_errors=True)
                        shutil.copytree(replay_dir, live_dir)
                        data = live_dir
                    profile = None
                    if args.profile and rep == 0 and contender != "refpds":
                        profile = f"{args.profile}.{contender}.{mode}.prof"
                    run = run_once(
                        args, data, contender, mode, profile, ref if contender == "refpds" else None
                    )
                    run["rep"] = rep
                    runs.append(run)
                    if not args.quiet:
                        print(
                            f"rep {rep} {mode:6} {contender:15} {run['frames_per_s']:>10,.0f} frames/s "
                            f"cpu {run['server_cpu_pct']:.0f}% ok={run['ok']}",
                            file=sys.stderr,
                        )
        return {"log": log_info, "config": vars(args), "load": os.getloadavg(), "runs": runs}
    finally:
        if ref is not None:
            ref.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    runs = payload["runs"]
    for mode in payload["config"]["modes"]:
        for contender in CONTENDERS:
            mine = [r for r in runs if r["mode"] == mode and r["contender"] == contender]
            if not mine:
                continue
            ratios = []
            for r in mine:
                ours = [
                    o
                    for o in runs
                    if o["mode"] == mode and o["rep"] == r["rep"] and o["contender"] == "atrepo"
                ]
                if ours and r["frames_per_s"]:
                    ratios.append(ours[0]["frames_per_s"] / r["frames_per_s"])
            rows.append(
                {
                    "mode": mode,
                    "contender": contender,
                    "ok": all(r["ok"] for r in mine),
                    "frames_per_s": statistics.median(r["frames_per_s"] for r in mine),
                    "spread": (min(r["frames_per_s"] for r in mine), max(r["frames_per_s"] for r in mine)),
                    "atrepo_x": statistics.median(ratios) if ratios else None,
                    "server_cpu_pct": statistics.median(r["server_cpu_pct"] for r in mine),
                    "server_rss_mib": statistics.median(r["server_rss_mib"] for r in mine),
                    "server_hwm_mib": max(r["server_hwm_mib"] for r in mine),
                    "append_s": statistics.median(r["append_s"] for r in mine)
                    if mine[0]["append_s"]
                    else None,
                }
            )
    return rows


def render(payload: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    cfg, info = payload["config"], payload["log"]
    lines = [
        f"firehose fan-out: {cfg['subscribers']} subscribers in {cfg['procs']} client processes, "
        f"{cfg['reps']} reps, log of {info['events']} events "
        f"(median frame {info['frame_bytes_median']:.0f} B), "
        f"live: {cfg['live_events']} events appended; {os.cpu_count()} CPUs, load {payload['load'][0]:.2f}",
        "",
        "| mode | contender | frames/s | spread | atrepo x | server CPU | RSS / peak MiB | ok |",
        "| --- | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        x = f"{r['atrepo_x']:.2f}" if r["atrepo_x"] is not None else "-"
        lines.append(
            f"| {r['mode']} | {r['contender']} | {r['frames_per_s']:,.0f} | "
            f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f} | {x} | {r['server_cpu_pct']:.0f}% | "
            f"{r['server_rss_mib']:.0f} / {r['server_hwm_mib']:.0f} | {r['ok']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.firehose_fanout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small log, 1 rep")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000, help="events in the log (replay)")
    parser.add_argument("--real-commits", type=int, default=1000, help="real commits made for the log")
    parser.add_argument("--live-events", type=int, default=10_000, help="events appended in live mode")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--modes", default="replay,live")
    parser.add_argument("--impl", default=",".join(CONTENDERS))
    parser.add_argument(
        "--refpds", help="also replay from the reference PDS installed in this directory (e.g. /tmp/refpds)"
    )
    parser.add_argument(
        "--ref-commits", type=int, default=5000, help="createRecord calls to fill the reference"
    )
    parser.add_argument("--profile", help="cProfile rep 0's servers into PROFILE.<contender>.<mode>.prof")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.server:
        asyncio.run(serve(json.loads(args.server)))
        return 0
    if args.client:
        result = asyncio.run(client(json.loads(args.client)))
        print(json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.reps, args.events, args.real_commits, args.live_events = 1, 2000, 200, 1000
    args.modes = [m for m in args.modes.split(",") if m]
    args.impl = [i for i in args.impl.split(",") if i]
    payload = run_all(args)
    rows = summarize(payload)
    with contextlib.suppress(BrokenPipeError):
        if args.json:
            print(json.dumps({**payload, "summary": rows}, indent=1))
        else:
            print(render(payload, rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
