"""Two host builds compared under one load that alternates between them every second.

``python -m bench.host_window_ab --a-src DIR --b-src DIR [--a-env K=V ...] [--b-env K=V ...]
[--clients 1,8] [--seconds 40] [--window 1.0] [--json]``

Why: on a shared 2-core VM the speed of the same build drifts by 25 % within minutes, so two runs one
after the other cannot show a 5 % change. Here both servers run at once, each on its own data, and the
clients write to one of them at a time, switching every ``--window`` seconds; the idle one costs
nothing. Drift then hits both sides of each pair of neighbouring windows alike, and the figure reported
is the median over window pairs of B's rate divided by A's (above 1: B is faster), beside each side's
median records/s.

``--a-src``/``--b-src`` put a checkout's ``src`` first on ``PYTHONPATH`` (default: the installed
atrepo), so a commit is compared with another from ``git worktree add DIR COMMIT`` without a second
venv; ``--a-env``/``--b-env`` set environment variables of one side. Each client is an asyncio task in
one separate process, awaiting its ``createRecord`` calls one after another, each with its own account
on each server. The servers are durable (``synchronous=FULL``) with rate limits off, as in
``bench.host_bench``. Everything started is stopped and the data is deleted.
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

from bench.host_bench import Server

_POST = "app.bsky.feed.post"


def _side(name: str, src: str | None, env: list[str], root: Path) -> Server:
    """One ``atrepo serve`` (``python -m atrepo``) with its own source tree, environment and data."""
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


async def _load(urls: dict[str, str], clients: int, seconds: float, window: float) -> dict[str, Any]:
    """The client process: ``clients`` writers, each switching server with the shared window."""
    import aiohttp

    tag = os.urandom(3).hex()
    state = {"side": "A", "count": 0, "stop": False}
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
                    {"handle": f"w{tag}{side}{i}.test", "password": "pw"},
                )
                for i in range(clients)
            ]

        async def writer(i: int) -> None:
            n = 0
            while not state["stop"]:
                side = state["side"]
                account = accounts[side][i]
                record = {"$type": _POST, "text": f"window {n}", "createdAt": "2026-01-01T00:00:00.000Z"}
                body = {"repo": account["did"], "collection": _POST, "record": record}
                await post(urls[side], "com.atproto.repo.createRecord", body, account["accessJwt"])
                n += 1
                if side == state["side"]:  # a call that straddled a switch counts for neither
                    state["count"] += 1

        tasks = [asyncio.create_task(writer(i)) for i in range(clients)]
        for side in ("A", "B", "A"):  # warm both up
            state["side"] = side
            await asyncio.sleep(1.0)
        rates: dict[str, list[float]] = {"A": [], "B": []}
        side, end = "A", time.monotonic() + seconds
        while time.monotonic() < end:
            state["side"] = side
            await asyncio.sleep(0.15)  # calls begun in the last window finish first
            start, t0 = state["count"], time.monotonic()
            await asyncio.sleep(window)
            rates[side].append((state["count"] - start) / (time.monotonic() - t0))
            side = "B" if side == "A" else "A"
        state["stop"] = True
        await asyncio.gather(*tasks)
    pairs = [b / a for a, b in zip(rates["A"], rates["B"], strict=False) if a > 0]
    return {
        "clients": clients,
        "a_rate": round(statistics.median(rates["A"]), 1),
        "b_rate": round(statistics.median(rates["B"]), 1),
        "b_over_a": round(statistics.median(pairs), 3) if pairs else None,
        "pairs": len(pairs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a-src", help="checkout whose src/ side A runs (default: the installed atrepo)")
    parser.add_argument("--b-src", help="checkout whose src/ side B runs (default: the installed atrepo)")
    parser.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--clients", default="1,8", help="client counts, one run each (default 1,8)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per client count")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # the client process
        spec = json.loads(args.worker)
        print(json.dumps(asyncio.run(_load(spec["urls"], spec["clients"], spec["seconds"], spec["window"]))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="atrepo-window-ab-") as tmp:
        sides = {
            "A": _side("A", args.a_src, args.a_env, Path(tmp) / "a"),
            "B": _side("B", args.b_src, args.b_env, Path(tmp) / "b"),
        }
        try:
            for side in sides.values():
                side.start()
            urls = {name: side.url for name, side in sides.items()}
            for clients in (int(c) for c in args.clients.split(",")):
                spec = {"urls": urls, "clients": clients, "seconds": args.seconds, "window": args.window}
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
                        f"B/A {result['b_over_a']} (median of {result['pairs']} window pairs)",
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
                    "runs": results,
                }
            )
        )


if __name__ == "__main__":
    main()
