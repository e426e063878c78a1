"""Host benchmark: ``atrepo serve`` measured over HTTP from separate client processes.

``python -m bench.host_bench [--quick] [--json] [--reps N] [--seconds S] [--repo-records N]
[--clients 1,16] [--create-only] [--database postgresql://...]``

``--database`` runs the server on the PostgreSQL store (an empty database; SQLite in the data directory
otherwise): run once without it and once with it to compare the two stores on the same client.

The orchestrator (this process) starts ``atrepo serve`` on free loopback ports with its data in a temporary
directory, then runs every client as a separate process (``python -m bench.host_bench --worker SPEC``,
asyncio + aiohttp) that prints one JSON object. Phases:

- createRecord, durable (the host's default ``synchronous=FULL``), 1 client and 16 clients (``--clients``;
  each client its own account, each awaiting its requests one after another): records/s, p50/p99
  latency, and the server's CPU time per record (the figure that stays put when other processes load
  the machine). ``--create-only`` stops after these phases, for quick before/after checks.
- applyWrites of 200 creates per call (one client, one account): records/s. These calls build the large
  repository of the next phase; the rate is taken per segment of the build.
- getRepo of that repository (100k records by default): the server is restarted on the same data first, so
  its VmHWM (peak RSS since start) covers start-up plus the GETs only; the client streams the CAR to
  /dev/null.
- firehose fan-out: 100 live ``subscribeRepos`` WebSockets in one client process, N commits written by
  another (4 writers): frames/s delivered to all subscribers together.

Every figure is the median over ``--reps`` runs; the load average and the server's CPU use (% of one core,
from /proc/PID/stat) are recorded per phase. Everything started is stopped and the data is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import ServerProcess, proc_cpu_seconds, proc_status_kib

PASSWORD = "bench-password-1"
POST = "app.bsky.feed.post"
WORDS = [
    *[
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "while",
        "a",
        "protocol",
        "host",
        "signs",
        "commits",
        "and",
        "streams",
    ],
    *["blocks", "to", "relays", "across", "the", "network", "every", "second", "of", "the", "day"],
]


# --------------------------------------------------------------------------------------------- client side


def _post(i: int) -> dict[str, Any]:
    n = 20 + i % 21
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))[:290]
    return {
        "$type": POST,
        "text": text,
        "langs": ["en"],
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _xrpc(session: Any, url: str, method: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with session.post(f"{url}/xrpc/{method}", json=body, headers=headers) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status} {data}")
        return data


async def w_accounts(spec: dict[str, Any]) -> Any:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(spec["n"]):
            handle = f"{spec['prefix']}{i}.test"
            acc = await _xrpc(
                s, spec["url"], "com.atproto.server.createAccount", {"handle": handle, "password": PASSWORD}
            )
            out.append({"did": acc["did"], "token": acc["accessJwt"]})
    return out


async def w_create(spec: dict[str, Any]) -> Any:
    """Each account is one client: createRecord back to back until the deadline."""
    import aiohttp

    url, accounts, seconds = spec["url"], spec["accounts"], spec["seconds"]
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        warm = [0]

        async def client(acc: dict[str, str], deadline: float, record: bool) -> None:
            i = 0
            while time.monotonic() < deadline:
                body = {"repo": acc["did"], "collection": POST, "record": _post(i)}
                t0 = time.perf_counter()
                await _xrpc(s, url, "com.atproto.repo.createRecord", body, acc["token"])
                if record:
                    lat.append(time.perf_counter() - t0)
                else:
                    warm[0] += 1
                i += 1

        warm_until = time.monotonic() + spec.get("warmup", 1.0)
        await asyncio.gather(*(client(a, warm_until, False) for a in accounts))
        t0 = time.monotonic()
        await asyncio.gather(*(client(a, t0 + seconds, True) for a in accounts))
        elapsed = time.monotonic() - t0
    return {
        "records": len(lat),
        "warmup_records": warm[0],
        "seconds": elapsed,
        "rate": len(lat) / elapsed,
        "p50_ms": _pct(lat, 0.5) * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
    }


async def w_apply(spec: dict[str, Any]) -> Any:
    """Sequential applyWrites calls of ``batch`` creates; the rate of each segment of ``segment`` calls."""
    import aiohttp

    url, acc = spec["url"], spec["account"]
    calls, batch, segment = spec["calls"], spec["batch"], spec["segment"]
    rates = []
    n = 0
    async with aiohttp.ClientSession() as s:
        t_seg = time.perf_counter()
        for c in range(calls):
            writes = [
                {"$type": "com.atproto.repo.applyWrites#create", "collection": POST, "value": _post(n + k)}
                for k in range(batch)
            ]
            n += batch
            await _xrpc(
                s, url, "com.atproto.repo.applyWrites", {"repo": acc["did"], "writes": writes}, acc["token"]
            )
            if (c + 1) % segment == 0:
                now = time.perf_counter()
                rates.append(segment * batch / (now - t_seg))
                t_seg = now
    return {"records": n, "segment_rates": rates}


async def w_getrepo(spec: dict[str, Any]) -> Any:
    import aiohttp

    times, sizes = [], []
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        for _ in range(spec["reps"]):
            size = 0
            t0 = time.perf_counter()
            async with s.get(
                f"{spec['url']}/xrpc/com.atproto.sync.getRepo", params={"did": spec["did"]}
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"getRepo: HTTP {r.status} {await r.text()}")
                with open(os.devnull, "wb") as sink:
                    async for chunk in r.content.iter_chunked(1 << 16):
                        sink.write(chunk)
                        size += len(chunk)
            times.append(time.perf_counter() - t0)
            sizes.append(size)
    return {"seconds": times, "bytes": sizes}


async def w_subscribe(spec: dict[str, Any]) -> Any:
    """``n`` live subscribers; prints READY once all are attached, stops when each saw ``expect`` frames
    (or ``idle`` seconds pass with no frame)."""
    import aiohttp

    url = spec["url"].replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
    if spec.get("cursor") is not None:
        url += f"?cursor={spec['cursor']}"
    n, expect, idle = spec["n"], spec["expect"], spec.get("idle", 10.0)
    counts = [0] * n
    total_bytes = 0
    first: list[float] = []
    last = [0.0]
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        t_connect = time.monotonic()
        sockets = [await s.ws_connect(url, max_msg_size=0) for _ in range(n)]
        print("READY", flush=True)

        async def reader(i: int, ws: Any) -> None:
            nonlocal total_bytes
            while counts[i] < expect:
                try:
                    msg = await ws.receive(timeout=idle)
                except TimeoutError:
                    return
                if msg.type != aiohttp.WSMsgType.BINARY:
                    return
                now = time.monotonic()
                if not first:
                    first.append(now)
                last[0] = now
                counts[i] += 1
                total_bytes += len(msg.data)

        await asyncio.gather(*(reader(i, ws) for i, ws in enumerate(sockets)))
        for ws in sockets:
            await ws.close()
    frames = sum(counts)
    # live: from the first frame (writes start after READY); replay: from the first connection attempt
    start = t_connect if spec.get("cursor") is not None else (first[0] if first else 0.0)
    span = (last[0] - start) if first else 0.0
    return {
        "frames": frames,
        "bytes": total_bytes,
        "t_first": first[0] if first else None,
        "t_last": last[0],
        "rate": frames / span if span > 0 else 0.0,
        "complete": sum(1 for c in counts if c >= expect),
    }


async def w_write_commits(spec: dict[str, Any]) -> Any:
    """``commits`` createRecord calls spread over the accounts, one client per account."""
    import aiohttp

    url, accounts, total = spec["url"], spec["accounts"], spec["commits"]
    per = [total // len(accounts) + (1 if i < total % len(accounts) else 0) for i in range(len(accounts))]
    async with aiohttp.ClientSession() as s:

        async def client(acc: dict[str, str], k: int) -> None:
            for i in range(k):
                body = {"repo": acc["did"], "collection": POST, "record": _post(i)}
                await _xrpc(s, url, "com.atproto.repo.createRecord", body, acc["token"])

        t0 = time.monotonic()
        await asyncio.gather(*(client(a, k) for a, k in zip(accounts, per, strict=True)))
        t1 = time.monotonic()
    return {"commits": total, "t_start": t0, "t_end": t1, "rate": total / (t1 - t0)}


WORKERS = {
    "accounts": w_accounts,
    "create": w_create,
    "apply": w_apply,
    "getrepo": w_getrepo,
    "subscribe": w_subscribe,
    "write_commits": w_write_commits,
}


def worker_main(spec_text: str) -> int:
    spec = json.loads(spec_text)
    result = asyncio.run(WORKERS[spec["kind"]](spec))
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------- orchestrator side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_cmd(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "bench.host_bench", "--worker", json.dumps(spec)]


def run_worker(spec: dict[str, Any], timeout: float = 3600) -> Any:
    proc = subprocess.run(
        _worker_cmd(spec),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['kind']} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _head_seq(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("atrepo_host_event_head_seq"):
                return int(float(line.split()[-1]))
    raise RuntimeError("no atrepo_host_event_head_seq in /metrics")


class Server(ServerProcess):
    """``atrepo serve`` in its own process group, stopped with SIGTERM."""

    def __init__(
        self,
        data: Path,
        log: Path,
        database: str | None = None,
        workers: int = 1,
        *,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data, self.log = data, log
        #: How ``atrepo`` is started (default: this venv's ``atrepo`` script) and its environment
        #: (default: ours); ``bench.host_window_ab`` runs ``python -m atrepo`` from another checkout.
        self.command = command or [str(Path(sys.executable).parent / "atrepo")]
        self.env = env
        #: ``postgresql://...`` for the PostgreSQL store (``--database``); None: SQLite in ``data``.
        self.database = database
        #: ``atrepo serve --workers N`` (N > 1 needs ``database``): ``pid`` is then the supervisor's.
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port, plc_port = _free_port(), _free_port()
        cmd = [*self.command, "serve", "--data", str(self.data)]
        cmd += ["--port", str(port), "--plc-port", str(plc_port)]
        # Limits off: the build phase writes far more than the reference's 5000 write points an hour
        # from one account, and the reference PDS we compare with runs with PDS_RATE_LIMITS_ENABLED=false.
        cmd.append("--no-rate-limits")
        if self.database:
            cmd += ["--database", self.database]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"atrepo serve exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/xrpc/_health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("atrepo serve did not become healthy")


class Phase:
    """Server CPU % of one core and the load average over a phase."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> Phase:
        self.load0 = os.getloadavg()[0]
        self.cpu0 = proc_cpu_seconds(self.server.pid)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.monotonic() - self.t0
        self.server_cpu_s = proc_cpu_seconds(self.server.pid) - self.cpu0
        self.server_cpu_pct = 100 * self.server_cpu_s / dt
        self.load = (self.load0, os.getloadavg()[0])


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quiet
    results: dict[str, Any] = {}
    loads: list[float] = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="atrepo-hostbench-") as tmp:
        server = Server(Path(tmp) / "data", Path(tmp) / "serve.log", args.database)
        try:
            server.start()
            url = server.url
            _log(q, f"atrepo serve pid {server.pid} at {url}; creating accounts")
            top = max(args.clients)
            accounts = run_worker({"kind": "accounts", "url": url, "n": top + 6, "prefix": "bench"})
            many, big, writers = accounts[:top], accounts[top], accounts[top + 1 : top + 5]

            for clients in args.clients:
                runs = []
                for rep in range(args.reps):
                    with Phase(server) as ph:
                        r = run_worker(
                            {
                                "kind": "create",
                                "url": url,
                                "accounts": many[:clients],
                                "seconds": args.seconds,
                                "warmup": 0.5 if args.quick else 1.0,
                            }
                        )
                    # CPU per write: the robust figure on a busy machine (warm-up writes counted too)
                    cpu_ms = 1e3 * ph.server_cpu_s / max(1, r["records"] + r["warmup_records"])
                    r.update(server_cpu_pct=ph.server_cpu_pct, server_cpu_ms_per_record=cpu_ms, load=ph.load)
                    runs.append(r)
                    _log(
                        q,
                        f"createRecord x{clients} run {rep + 1}: {r['rate']:.1f} rec/s "
                        f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms server {ph.server_cpu_pct:.0f}% "
                        f"({cpu_ms:.2f} ms CPU a record)",
                    )
                results[f"createRecord_{clients}"] = {
                    "rate": _med([r["rate"] for r in runs]),
                    "p50_ms": _med([r["p50_ms"] for r in runs]),
                    "p99_ms": _med([r["p99_ms"] for r in runs]),
                    "server_cpu_pct": _med([r["server_cpu_pct"] for r in runs]),
                    "server_cpu_ms_per_record": _med([r["server_cpu_ms_per_record"] for r in runs]),
                    "runs": runs,
                }
            if args.create_only:
                return _payload(args, results, loads)

            batch = 200
            calls = max(1, args.repo_records // batch)
            segment = max(1, calls // 5)
            _log(q, f"applyWrites: {calls} calls of {batch} creates (builds the {calls * batch}-record repo)")
            with Phase(server) as ph:
                r = run_worker(
                    {
                        "kind": "apply",
                        "url": url,
                        "account": big,
                        "calls": calls,
                        "batch": batch,
                        "segment": segment,
                    }
                )
            rates = r["segment_rates"]
            results["applyWrites_200"] = {
                "rate": _med(rates),
                "segment_rates": rates,
                "records": r["records"],
                "server_cpu_pct": ph.server_cpu_pct,
                "load": ph.load,
            }
            _log(q, f"applyWrites: segments {[round(x) for x in rates]} rec/s")

            server.stop()
            server.start()
            rss_start = proc_status_kib(server.pid, "VmRSS")
            with Phase(server) as ph:
                r = run_worker({"kind": "getrepo", "url": server.url, "did": big["did"], "reps": args.reps})
            hwm = proc_status_kib(server.pid, "VmHWM")
            secs = r["seconds"]
            results["getRepo"] = {
                "records": calls * batch,
                "rate": calls * batch / _med(secs),
                "median_s": _med(secs),
                "seconds": secs,
                "car_bytes": r["bytes"][0],
                "server_rss_start_mib": rss_start / 1024,
                "server_vmhwm_mib": hwm / 1024,
                "server_cpu_pct": ph.server_cpu_pct,
                "load": ph.load,
            }
            _log(
                q,
                f"getRepo {calls * batch} records: {secs} s, {r['bytes'][0]} bytes, "
                f"VmHWM {hwm / 1024:.0f} MiB",
            )

            url = server.url
            runs = []
            cursors = []
            for rep in range(args.reps):
                cursors.append(_head_seq(url))
                sub = subprocess.Popen(
                    _worker_cmd(
                        {"kind": "subscribe", "url": url, "n": args.subscribers, "expect": args.commits}
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                )
                try:
                    assert sub.stdout is not None
                    line = sub.stdout.readline()
                    if line.strip() != "READY":
                        raise RuntimeError(
                            f"subscribers failed: {line} {sub.stderr.read() if sub.stderr else ''}"
                        )
                    with Phase(server) as ph:
                        w = run_worker(
                            {
                                "kind": "write_commits",
                                "url": url,
                                "accounts": writers,
                                "commits": args.commits,
                            }
                        )
                        out, err = sub.communicate(timeout=600)
                    if sub.returncode != 0:
                        raise RuntimeError(f"subscribers failed: {err[-2000:]}")
                finally:
                    if sub.poll() is None:
                        sub.kill()
                        sub.wait()
                s = json.loads(out.strip().splitlines()[-1])
                s.update(
                    write_rate=w["rate"],
                    lag_s=s["t_last"] - w["t_end"],
                    server_cpu_pct=ph.server_cpu_pct,
                    load=ph.load,
                )
                runs.append(s)
                _log(
                    q,
                    f"firehose run {rep + 1}: {s['frames']} frames, {s['rate']:.0f} frames/s, "
                    f"{s['complete']}/{args.subscribers} complete, writes {w['rate']:.0f} commits/s",
                )
            replays = []
            for rep, cursor in enumerate(cursors):
                with Phase(server) as ph:
                    s = run_worker(
                        {
                            "kind": "subscribe",
                            "url": url,
                            "n": args.subscribers,
                            "expect": args.commits,
                            "cursor": cursor,
                        }
                    )
                s.update(server_cpu_pct=ph.server_cpu_pct, load=ph.load)
                replays.append(s)
                _log(
                    q,
                    f"firehose replay run {rep + 1}: {s['frames']} frames, {s['rate']:.0f} frames/s, "
                    f"{s['complete']}/{args.subscribers} complete",
                )
            results["firehose_replay"] = {
                "subscribers": args.subscribers,
                "commits": args.commits,
                "rate": _med([r["rate"] for r in replays]),
                "server_cpu_pct": _med([r["server_cpu_pct"] for r in replays]),
                "runs": replays,
            }
            results["firehose"] = {
                "subscribers": args.subscribers,
                "commits": args.commits,
                "rate": _med([r["rate"] for r in runs]),
                "write_rate": _med([r["write_rate"] for r in runs]),
                "server_cpu_pct": _med([r["server_cpu_pct"] for r in runs]),
                "runs": runs,
            }
        finally:
            server.stop()
    return _payload(args, results, loads)


def _payload(args: argparse.Namespace, results: dict[str, Any], loads: list[float]) -> dict[str, Any]:
    loads.append(os.getloadavg()[0])
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_start_end": loads,
            "python": sys.version.split()[0],
        },
        "config": {
            "clients": args.clients,
            "create_only": args.create_only,
            "reps": args.reps,
            "seconds": args.seconds,
            "repo_records": args.repo_records,
            "subscribers": args.subscribers,
            "commits": args.commits,
            "database": _redacted(args.database),
        },
        "results": results,
    }


def _redacted(database: str | None) -> str:
    """The store the server ran on, for the report (a URL without its password)."""
    if not database:
        return "sqlite"
    from atrepo.store.pgfile import redact_url

    return redact_url(database)


def render(payload: dict[str, Any]) -> str:
    r = payload["results"]
    m = payload["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["loadavg_start_end"])
    lines = [
        f"atrepo serve, client in separate processes (aiohttp); {m['cpu_count']} CPUs, load avg (1 min) "
        f"start/end {la}; medians of {payload['config']['reps']} runs; store {payload['config']['database']}",
        f"{'phase':44} {'figure':>16} {'p50 ms':>8} {'p99 ms':>8} {'server CPU%':>12}",
    ]
    for n in payload["config"]["clients"]:
        x = r[f"createRecord_{n}"]
        lines.append(
            f"{f'createRecord, {n} client(s), durable':44} {x['rate']:10.1f} rec/s "
            f"{x['p50_ms']:8.1f} {x['p99_ms']:8.1f} {x['server_cpu_pct']:12.0f}"
        )
        lines.append(
            f"{'  server CPU per record (warm-up included)':44} {x['server_cpu_ms_per_record']:11.2f} ms"
        )
    if payload["config"]["create_only"]:
        return "\n".join(lines)
    x = r["applyWrites_200"]
    lines.append(
        f"{'applyWrites, 200 creates per call':44} {x['rate']:10.0f} rec/s {'':8} {'':8} "
        f"{x['server_cpu_pct']:12.0f}"
    )
    x = r["getRepo"]
    lines.append(
        f"{'getRepo, ' + format(x['records'], ',') + ' records':44} {x['rate']:10.0f} rec/s "
        f"{x['median_s'] * 1e3:8.0f} {'':8} {x['server_cpu_pct']:12.0f}"
    )
    lines.append(
        f"{'  CAR bytes; server RSS start / peak VmHWM':44} {x['car_bytes']:>16,} "
        f"{x['server_rss_start_mib']:.0f} / {x['server_vmhwm_mib']:.0f} MiB"
    )
    x = r["firehose"]
    what = f"firehose, {x['subscribers']} subscribers x {x['commits']} commits"
    lines.append(f"{what:44} {x['rate']:9.0f} frames/s {'':8} {'':8} {x['server_cpu_pct']:12.0f}")
    lines.append(f"{'  commit rate of the 4 writers meanwhile':44} {x['write_rate']:8.0f} commits/s")
    x = r["firehose_replay"]
    lines.append(
        f"{'firehose replay (cursor), same commits':44} {x['rate']:9.0f} frames/s {'':8} {'':8} "
        f"{x['server_cpu_pct']:12.0f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.host_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run, small repo, short phases")
    parser.add_argument("--reps", type=int, help="runs per figure (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per createRecord run (default 10)")
    parser.add_argument("--repo-records", type=int, help="records of the getRepo repository (default 100000)")
    parser.add_argument("--subscribers", type=int, default=100, help="firehose subscribers (default 100)")
    parser.add_argument("--commits", type=int, help="commits written per firehose run (default 500)")
    parser.add_argument(
        "--clients", default="1,16", help="concurrent clients of the createRecord phases (default 1,16)"
    )
    parser.add_argument(
        "--create-only", action="store_true", help="only the createRecord phases (for before/after checks)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--database",
        help="postgresql://... : the server keeps its store there (an empty database; default SQLite)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    quick = args.quick
    args.clients = sorted({int(n) for n in args.clients.split(",")})
    if not args.clients or args.clients[0] < 1:
        parser.error("--clients: counts of at least 1, comma-separated")
    args.reps = args.reps or (1 if quick else 3)
    args.seconds = args.seconds or (1.0 if quick else 10.0)
    args.repo_records = args.repo_records or (1000 if quick else 100_000)
    args.commits = args.commits or (20 if quick else 500)
    if quick and args.subscribers == 100:
        args.subscribers = 10
    payload = run_all(args)
    print(json.dumps(payload, indent=2) if args.json else render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
