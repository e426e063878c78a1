"""Two host builds compared under one load that alternates between them every second.

``python -m bench.host_window_ab --a-src DIR --b-src DIR [--a-env K=V ...] [--b-env K=V ...]
[--a-ref REFPDS | --b-ref REFPDS] [--clients 1,8] [--seconds 40] [--window 1.0] [--firehose] [--json]``

Why: on a shared 2-core VM the speed of the same build drifts by 25 % within minutes, so two runs one
after the other cannot show a 5 % change. Here both servers run at once, each on its own data, and the
clients write to one of them at a time, switching every ``--window`` seconds; the idle one costs
nothing. Drift then hits both sides of each pair of neighbouring windows alike, and the figure reported
is the median over window pairs of B's rate divided by A's (above 1: B is faster), beside each side's
median records/s.

``--a-src``/``--b-src`` put a checkout's ``src`` first on ``PYTHONPATH`` (default: the installed
atrepo), so a commit is compared with another from ``git worktree add DIR COMMIT`` without a second
venv; ``--a-env``/``--b-env`` set environment variables of one side. ``--a-ref``/``--b-ref`` make that
side the reference PDS of an installed refpds copy instead (:mod:`bench.refpds_server`), so the host is
measured beside it under the very same client and drift. Each client is an asyncio task in one separate
process, awaiting its ``createRecord`` calls one after another, each with its own account on each server;
``--firehose`` also keeps one live ``subscribeRepos`` reader per server in that process, as a relay
would (refpds's ``bench.mjs`` does the same). Our servers are durable (``synchronous=FULL``) with rate
limits off, as in ``bench.host_bench``; the reference runs with refpds's settings (rate limits off).

Besides the rates, each side reports its p50/p99 latency over the calls that ran inside its windows and
its server CPU per write: the CPU time of the server process (all threads, ``/proc/PID/stat``) during its
windows divided by the writes counted in them. That last figure does not depend on the client's own cost,
which at one client is a large part of every round trip. Everything started is stopped and the data is
deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import proc_cpu_seconds
from bench.host_bench import WORDS, Server
from bench.refpds_server import RefPdsServer

_POST = "app.bsky.feed.post"


def _side(name: str, src: str | None, env: list[str], ref: str | None, root: Path) -> Server | RefPdsServer:
    """One ``atrepo serve`` (``python -m atrepo``) with its own source tree, environment and data.

    With ``ref``, the reference PDS of that installed refpds copy instead.
    """
    if ref:
        if src or env:
            raise SystemExit(f"--{name.lower()}-ref runs the reference: no --{name.lower()}-src/-env with it")
        root.mkdir()
        return RefPdsServer(Path(ref), root / "data", root / "refpds.log")
    environ = dict(os.environ)
    if src:
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(src) / "src"), environ.get("PYTHONPATH")])
        )
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--{name.lower()}-env wants KEY=VALUE, not {item!r}")
        environ[key] = value
    root.mkdir()
    return Server(root / "data", root / "serve.log", command=[sys.executable, "-m", "atrepo"], env=environ)


async def _firehose(http: Any, url: str, frames: dict[str, int], side: str) -> None:
    """One live ``subscribeRepos`` reader: counts the frames it gets (it decodes none, as bench.mjs)."""
    ws_url = url.replace("http://", "ws://", 1) + "/xrpc/com.atproto.sync.subscribeRepos"
    async with http.ws_connect(ws_url, max_msg_size=0) as ws:
        async for _ in ws:
            frames[side] += 1


def _post(i: int) -> dict[str, Any]:
    """A post shaped as refpds's ``bench.mjs`` writes them: 20-40 words, then a link with its facet."""
    head = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(20 + i % 21))[:240] + " "
    link = f"https://example.com/post/{i}"
    start = len(head.encode())
    facet = {
        "index": {"byteStart": start, "byteEnd": start + len(link.encode())},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}],
    }
    return {
        "$type": _POST,
        "text": head + link,
        "facets": [facet],
        "langs": ["en"],
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 2)


async def _load(
    urls: dict[str, str], pids: dict[str, int], clients: int, seconds: float, window: float, firehose: bool
) -> dict[str, Any]:
    """The client process: ``clients`` writers, each switching server with the shared window."""
    import aiohttp

    tag = os.urandom(3).hex()
    state: dict[str, Any] = {"side": "A", "count": 0, "stop": False, "measuring": False}
    latencies: dict[str, list[float]] = {"A": [], "B": []}
    frames = {"A": 0, "B": 0}
    async with aiohttp.ClientSession() as http:

        async def post(url: str, nsid: str, body: dict[str, Any], token: str | None = None) -> Any:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            async with http.post(f"{url}/xrpc/{nsid}", json=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"{nsid}: HTTP {r.status}: {(await r.text())[:300]}")
                return await r.json()

        accounts: dict[str, list[Any]] = {}
        for side, url in urls.items():
            accounts[side] = [
                await post(
                    url,
                    "com.atproto.server.createAccount",
                    # the reference wants an email; ours takes one too
                    {
                        "handle": f"w{tag}{side}{i}.test",
                        "email": f"w{tag}{side}{i}@example.com",
                        "password": "bench-pw-1",
                    },
                )
                for i in range(clients)
            ]

        async def writer(i: int) -> None:
            n = 0
            while not state["stop"]:
                side = state["side"]
                account = accounts[side][i]
                record = _post(n)
                body = {"repo": account["did"], "collection": _POST, "record": record}
                t0 = time.perf_counter()
                await post(urls[side], "com.atproto.repo.createRecord", body, account["accessJwt"])
                n += 1
                if side == state["side"]:  # a call that straddled a switch counts for neither
                    state["count"] += 1
                    if state["measuring"]:
                        latencies[side].append(time.perf_counter() - t0)

        readers = [asyncio.create_task(_firehose(http, url, frames, side)) for side, url in urls.items()]
        if not firehose:
            for task in readers:
                task.cancel()
        tasks = [asyncio.create_task(writer(i)) for i in range(clients)]
        for side in ("A", "B", "A"):  # warm both up
            state["side"] = side
            await asyncio.sleep(1.0)
        rates: dict[str, list[float]] = {"A": [], "B": []}
        cpu = {"A": 0.0, "B": 0.0}
        writes = {"A": 0, "B": 0}
        side, end = "A", time.monotonic() + seconds
        while time.monotonic() < end:
            state["side"] = side
            state["measuring"] = False
            await asyncio.sleep(0.15)  # calls begun in the last window finish first
            state["measuring"] = True
            start, t0, cpu0 = state["count"], time.monotonic(), proc_cpu_seconds(pids[side])
            await asyncio.sleep(window)
            done = state["count"] - start
            rates[side].append(done / (time.monotonic() - t0))
            cpu[side] += proc_cpu_seconds(pids[side]) - cpu0
            writes[side] += done
            side = "B" if side == "A" else "A"
        state["stop"] = True
        await asyncio.gather(*tasks)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    pairs = [b / a for a, b in zip(rates["A"], rates["B"], strict=False) if a > 0]
    out: dict[str, Any] = {"clients": clients}
    for name in ("A", "B"):
        low = name.lower()
        out[f"{low}_rate"] = round(statistics.median(rates[name]), 1)
        out[f"{low}_p50_ms"] = _pct(latencies[name], 0.5)
        out[f"{low}_p99_ms"] = _pct(latencies[name], 0.99)
        out[f"{low}_cpu_ms_per_write"] = round(1e3 * cpu[name] / writes[name], 3) if writes[name] else None
        if firehose:
            out[f"{low}_frames"] = frames[name]
    out["b_over_a"] = round(statistics.median(pairs), 3) if pairs else None
    out["pairs"] = len(pairs)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a-src", help="checkout whose src/ side A runs (default: the installed atrepo)")
    parser.add_argument("--b-src", help="checkout whose src/ side B runs (default: the installed atrepo)")
    parser.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--a-ref", metavar="REFPDS", help="side A: the reference PDS of this refpds copy")
    parser.add_argument("--b-ref", metavar="REFPDS", help="side B: the reference PDS of this refpds copy")
    parser.add_argument("--firehose", action="store_true", help="one live subscribeRepos reader per server")
    parser.add_argument("--clients", default="1,8", help="client counts, one run each (default 1,8)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per client count")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # the client process
        spec = json.loads(args.worker)
        result = _load(
            spec["urls"], spec["pids"], spec["clients"], spec["seconds"], spec["window"], spec["firehose"]
        )
        print(json.dumps(asyncio.run(result)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="atrepo-window-ab-") as tmp:
        sides = {
            "A": _side("A", args.a_src, args.a_env, args.a_ref, Path(tmp) / "a"),
            "B": _side("B", args.b_src, args.b_env, args.b_ref, Path(tmp) / "b"),
        }
        try:
            for side in sides.values():
                side.start()
            urls = {name: side.url for name, side in sides.items()}
            pids = {name: side.pid for name, side in sides.items()}
            for clients in (int(c) for c in args.clients.split(",")):
                spec = {
                    "urls": urls,
                    "pids": pids,
                    "clients": clients,
                    "seconds": args.seconds,
                    "window": args.window,
                    "firehose": args.firehose,
                }
                out = subprocess.run(
                    [sys.executable, "-m", "bench.host_window_ab", "--worker", json.dumps(spec)],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=args.seconds + 120,
                    cwd=Path(__file__).resolve().parent.parent,
                )
                if out.returncode != 0:
                    raise SystemExit(f"the client process failed:\n{out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(result)
                if not args.json:
                    print(
                        f"{clients:3d} clients: A {result['a_rate']:8.1f} rec/s  "
                        f"B {result['b_rate']:8.1f} rec/s  "
                        f"B/A {result['b_over_a']} (median of {result['pairs']} window pairs)\n"
                        f"             p50/p99 ms A {result['a_p50_ms']}/{result['a_p99_ms']}  "
                        f"B {result['b_p50_ms']}/{result['b_p99_ms']}; server CPU ms/write "
                        f"A {result['a_cpu_ms_per_write']}  B {result['b_cpu_ms_per_write']}",
                        flush=True,
                    )
        finally:
            for side in sides.values():
                side.stop()
    if args.json:
        print(
            json.dumps(
                {
                    "a_src": args.a_src,
                    "b_src": args.b_src,
                    "a_env": args.a_env,
                    "b_env": args.b_env,
                    "a_ref": args.a_ref,
                    "b_ref": args.b_ref,
                    "firehose": args.firehose,
                    "runs": results,
                }
            )
        )


if __name__ == "__main__":
    main()
