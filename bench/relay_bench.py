"""Relay benchmark: ``atrepo relay`` verifying three hosts' whole event logs, then fanning out to 100.

``python -m bench.relay_bench [--quick] [--json] [--reps N] [--events N] [--workers 0,1,2] [--profile OUT]
[--database postgresql://...] [--split 1,2] [--sequencer N]``

Why: the relay's cost is verification (every ``#commit``'s CAR slice, signature, forward check and
inversion to ``prevData``) plus one durable batch per few hundred events; this measures that whole path on
real, signed streams that our hosts produced over HTTP, in separate processes, as a deployment runs it.

Setup (not timed): three ``atrepo serve --no-rate-limits`` processes; the first runs the embedded PLC
directory and the other two use it (``--plc``). Client processes (``--worker``) create ``--accounts``
accounts on each host, then write single-op commits with ``applyWrites`` (one write per call, every
account its own client): 70% creates, 20% updates and 10% deletes of the account's live records, until
the three logs hold ``--events`` events together.

Timed (``verify``): ``atrepo relay --replay --upstream H1 --upstream H2 --upstream H3 --plc PLC`` with a
fresh data directory, started as its own process for each sample. ``--replay`` makes each new configured
upstream replay its whole window from cursor 0, so every event is verified. The clock and the relay's CPU
(utime+stime from /proc, the process and its descendants: the ``--workers`` verification processes)
start when the relay answers ``/metrics`` and stop when its head seq (``atrepo_relay_head_seq``) reaches
the three hosts' event count (or, if it relays fewer, when every host's cursor in ``listHosts`` is at the
host's head and the head stopped moving; the last change is then the end). **events/s** is the hosts'
events over that time; **events/CPU-s** divides by the relay's CPU seconds (with ``--workers 0`` it is
one process on one core, the figure for one core). ``/proc/PID/schedstat`` of the relay's main thread
gives the share of the time it ran and the share it was runnable but waiting for a core: on a shared
machine the second says the wall-clock figure measured the machine. Each sample is then checked: for
every account the relay's ``getLatestCommit`` must equal its host's, and the relay's fault counter must
be empty (its drops, by reason, are reported).
Worker counts run interleaved, their order rotating by rep; figures are medians over reps.

Fan-out (``fanout``): the last rep's ``--workers 0`` relay is kept running after it caught up, and
``--subscribers`` subscribers in ``--procs`` client processes (``bench.firehose_fanout``'s raw-socket
clients) replay its firehose from cursor 0. **frames/s** is all frames delivered over the time from the
start signal until the last subscriber had its last frame (also reported); every subscriber must get
every frame, the sample one in seq order.

Profile (``--profile OUT``): one more, untimed ``--workers 0`` catch-up under ``py-spy record -f raw``
(``--py-spy`` path), its raw stacks written to ``OUT`` and summarized (self and inclusive share by
function, per thread).

Store (``--database postgresql://...``): every sample's relay keeps its store in that database (its
``atrepo_relay`` schema dropped before each sample) instead of SQLite; the figures are the same, and the
server's own CPU is not in the relay's (it is another process tree). The fan-out phase then runs twice:
from the relay, and from an ``atrepo relay --role fanout`` process following the same store (its CPU is
that process's).

Split roles (``--sequencer N --database postgresql://...``, nothing else runs): the queue between
``--role ingest`` and ``--role sequencer`` alone, on the store's own code. ``N`` ``#sync`` events of about
2 KB (random CAR bytes) are queued by a partition-0 ingest store in batches of 500 with a host cursor
(``queue_batch``: each frame encoded once with the placeholder seq, binary ``COPY`` into ``pending``),
then a sequencer store moves them into the log 1,000 per transaction (``sequence_pending``: seqs written
into the frames in place). Reported: events/s of each side and events per client CPU-second (the
server's CPU not counted). Median of ``--reps``.

Split processes (``--split 1,2 --database postgresql://...``): instead of ``--workers``, each sample runs
``atrepo relay --role sequencer`` and K ``atrepo relay --role ingest --partition i/K --replay`` processes
(``--workers 0`` each) on a fresh schema, every ingest process given every upstream. The hosts' ports are
chosen so that their names spread evenly over the largest K's partitions (``--hosts`` a multiple of it).
The clock starts when every process answers and stops when the sequencer's head seq reaches the hosts'
event count (or its head and queue stopped moving for 5 s: the last change is then the end);
**events/s** is the hosts' events over that time, **events/CPU-s** divides by the CPU of every ingest
process and the sequencer (the server's not counted). Checked: no fault in any ingest process, nothing
left queued (the head is reported beside the hosts' count: as with ``--workers``, a few events of account
creation are not relayed). Medians over reps, K interleaved.

Peer: the reference relay is Go (indigo) and is not installable here, so there is no peer row. With
``--refpds DIR`` the reference ``@atproto/pds`` (an installed refpds copy, using host 1's PLC directory)
is a fourth upstream, filled with ``--ref-commits`` createRecord calls, and every figure covers its
stream too: the relay verifies a stream that atrepo did not produce.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from bench.firehose_fanout import _expect_line, _metric
from bench.firehose_fanout import _spawn as _spawn_fanout
from bench.harness import ServerProcess, proc_cpu_seconds, proc_status_kib
from bench.host_bench import PASSWORD, POST, _free_port, _head_seq, _post, _xrpc
from bench.refpds_server import RefPdsServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# --------------------------------------------------------------------------------------------- client side


async def w_accounts(spec: dict[str, Any]) -> Any:
    """Create ``n`` accounts on one host (handles ``<prefix><i>.test``); their DIDs and tokens."""
    import aiohttp

    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> dict[str, str]:
            body = {"handle": f"{spec['prefix']}{i}.test", "password": PASSWORD}
            acc = await _xrpc(s, spec["url"], "com.atproto.server.createAccount", body)
            return {"did": acc["did"], "token": acc["accessJwt"]}

        out: list[dict[str, str]] = []
        for start in range(0, spec["n"], 8):  # a few at a time: each one is a PLC round trip too
            out += await asyncio.gather(*(one(i) for i in range(start, min(spec["n"], start + 8))))
    return out


async def _apply(session: Any, url: str, body: dict[str, Any], token: str) -> Any:
    """``applyWrites``, retried when the connection drops (a kept-alive socket the host closed).

    A retried write may have been applied the first time: a retried create then makes one more
    commit (the event count is read from the hosts afterwards), and a retried update or delete that
    the host now refuses is skipped (None).
    """
    import aiohttp

    for attempt in range(4):
        try:
            return await _xrpc(session, url, "com.atproto.repo.applyWrites", body, token)
        except aiohttp.ClientConnectionError:
            if attempt == 3:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
        except RuntimeError:
            if attempt == 0:
                raise
            return None
    return None


async def w_commits(spec: dict[str, Any]) -> Any:
    """``per_account[i]`` single-op applyWrites commits for account ``i``, all accounts concurrently.

    The op mix (creates, then updates and deletes of the account's own live records) makes the
    relay check every op kind forward and invert it back to ``prevData``.
    """
    import aiohttp

    url = spec["url"]
    counts = Counter[str]()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def client(acc: dict[str, str], n: int) -> None:
            live: list[str] = []
            for k in range(n):
                slot = k % 10
                if slot < 7 or len(live) < 2:
                    write = {"$type": "com.atproto.repo.applyWrites#create", "collection": POST}
                    write["value"] = _post(k)
                elif slot < 9:
                    rkey = live[(k * 7) % len(live)]
                    write = {"$type": "com.atproto.repo.applyWrites#update", "rkey": rkey}
                    write |= {"collection": POST, "value": _post(k + 1)}
                else:
                    rkey = live.pop((k * 3) % len(live))
                    write = {"$type": "com.atproto.repo.applyWrites#delete", "rkey": rkey, "collection": POST}
                counts[write["$type"].rsplit("#", 1)[1]] += 1
                body = {"repo": acc["did"], "writes": [write]}
                out = await _apply(s, url, body, acc["token"])
                if out is None:
                    continue
                if "rkey" not in write:  # a create: the host chose a TID key
                    live.append(out["results"][0]["uri"].rsplit("/", 1)[1])

        t0 = time.monotonic()
        jobs = zip(spec["accounts"], spec["per_account"], strict=True)
        await asyncio.gather(*(client(acc, n) for acc, n in jobs))
        took = time.monotonic() - t0
    total = sum(spec["per_account"])
    return {"commits": total, "seconds": took, "rate": total / took if took else 0.0, "ops": dict(counts)}


async def w_ref_commits(spec: dict[str, Any]) -> Any:
    """Accounts and createRecord commits on the reference PDS (``--refpds``); its DIDs."""
    import aiohttp

    base = spec["url"] + "/xrpc/"
    dids: list[str] = []
    done = 0
    async with aiohttp.ClientSession() as s:

        async def one(c: int) -> None:
            nonlocal done
            name = f"rb{os.getpid()}x{c}"
            body = {"handle": f"{name}.test", "email": f"{name}@example.com", "password": PASSWORD}
            async with s.post(base + "com.atproto.server.createAccount", json=body) as resp:
                account = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"refpds createAccount: {resp.status} {account}")
            dids.append(account["did"])
            headers = {"Authorization": f"Bearer {account['accessJwt']}"}
            while done < spec["commits"]:
                done += 1
                body = {"repo": account["did"], "collection": POST, "record": _post(done)}
                async with s.post(base + "com.atproto.repo.createRecord", json=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"refpds createRecord: {resp.status} {await resp.text()}")

        await asyncio.gather(*(one(c) for c in range(spec["clients"])))
    return {"dids": dids}


WORKERS = {"accounts": w_accounts, "commits": w_commits, "ref_commits": w_ref_commits}


def _worker_cmd(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "bench.relay_bench", "--worker", json.dumps(spec)]


def _run_workers(specs: list[dict[str, Any]], timeout: float = 3600) -> list[Any]:
    """Run client processes in parallel; their JSON results in order."""
    procs = [
        subprocess.Popen(_worker_cmd(s), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for s in specs
    ]
    out = []
    for spec, proc in zip(specs, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {spec['kind']} failed: {stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


# ----------------------------------------------------------------------------------------------- servers


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _get_json(url: str) -> Any:
    return json.loads(_get(url))


class Proc(ServerProcess):
    """An ``atrepo`` command in its own process group, healthy when ``probe`` answers; SIGTERM to stop."""

    def __init__(self, args: list[str], log: Path, url: str, probe: str) -> None:
        self.args, self.log, self.url, self.probe = args, log, url, probe
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_spawn = 0.0

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen(
                [str(BIN / "atrepo"), *self.args], stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _get(self.url + self.probe, timeout=2)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.args[0]} did not become healthy")

    def _kill(self) -> None:  # the relay's forkserver and verification workers too
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the relay's forkserver and its verification workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo += [int(c) for c in fh.read().split()]
    return out


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread ran and waited runnable on a run queue (``/proc/PID/schedstat``).

    On a busy machine the second tells starvation (runnable, no core free) from idling on I/O or peers.
    """
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as fh:
            run_ns, wait_ns, _ = fh.read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself and of its whole tree (live descendants only)."""
    own = proc_cpu_seconds(pid)
    total = 0.0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_seconds(p)
    return own, total


class RefPdsUpstream(RefPdsServer):
    """The reference PDS (an installed refpds copy) on host 1's PLC directory, filled by createRecord."""

    def __init__(self, directory: Path, data: Path, plc: str, log: Path) -> None:
        super().__init__(directory, data, log, plc=plc)
        self.start()
        self.url = f"http://localhost:{self.port}"  # its DID documents name http://localhost:PORT

    def head(self) -> int:
        """The newest seq of its log, from a cursor=0 replay read until 2 s pass without a frame."""
        from bench.firehose_fanout import _Sub, _upgrade

        async def probe() -> int:
            loop = asyncio.get_running_loop()
            sub = _Sub(_upgrade(self.port, 0), 1 << 60, False, loop.create_future())
            await loop.create_connection(lambda: sub, "127.0.0.1", self.port)
            count = -1
            while sub.frames != count:
                count = sub.frames
                await asyncio.sleep(2)
            assert sub.transport is not None
            sub.transport.close()
            from atrepo.core.events import decode_frame

            return int(getattr(decode_frame(sub.last), "seq", -1)), sub.frames

        seq, frames = asyncio.run(probe())
        self.frames = frames
        return seq


# ------------------------------------------------------------------------------------------------- setup


def setup_hosts(args: argparse.Namespace, tmp: Path, log: Any) -> dict[str, Any]:
    """Three hosts (one PLC), accounts on each, then single-op commits until the logs hold ``--events``."""
    plc_port = _free_port()
    plc = f"http://127.0.0.1:{plc_port}"
    hosts: list[Proc] = []
    try:
        return _fill_hosts(args, tmp, log, plc, plc_port, hosts)
    except BaseException:
        for proc in hosts:
            proc.stop()
        raise


def _fill_hosts(
    args: argparse.Namespace, tmp: Path, log: Any, plc: str, plc_port: int, hosts: list[Proc]
) -> dict[str, Any]:
    from atrepo.relay.config import host_partition

    spread = max(getattr(args, "split", None) or [1])
    for h in range(args.hosts):
        port = _free_port()
        while host_partition(f"127.0.0.1:{port}", spread) != h % spread:  # --split: hosts spread evenly
            port = _free_port()
        cmd = ["serve", "--data", str(tmp / f"host{h}"), "--port", str(port), "--no-rate-limits"]
        cmd += ["--plc-port", str(plc_port)] if h == 0 else ["--plc", plc]
        proc = Proc(cmd, tmp / f"host{h}.log", f"http://127.0.0.1:{port}", "/xrpc/_health")
        proc.start()
        hosts.append(proc)
    log(f"{len(hosts)} hosts up (PLC {plc}); creating {args.accounts} accounts on each")
    t0 = time.monotonic()
    specs = [
        {"kind": "accounts", "url": h.url, "prefix": f"h{i}u", "n": args.accounts}
        for i, h in enumerate(hosts)
    ]
    accounts = _run_workers(specs)
    heads = [_head_seq(h.url) for h in hosts]
    remaining = max(0, args.events - sum(heads))
    per_host = [remaining // len(hosts) + (i < remaining % len(hosts)) for i in range(len(hosts))]
    specs = []
    for h, accs, n in zip(hosts, accounts, per_host, strict=True):
        per = [n // len(accs) + (i < n % len(accs)) for i in range(len(accs))]
        specs.append({"kind": "commits", "url": h.url, "accounts": accs, "per_account": per})
    log(f"accounts made ({sum(heads)} events); writing {remaining} single-op commits")
    fills = _run_workers(specs)
    heads = [_head_seq(h.url) for h in hosts]
    fill_s = time.monotonic() - t0
    ops: Counter[str] = Counter()
    for f in fills:
        ops.update(f["ops"])
    info = {
        "hosts": [h.url for h in hosts],
        "plc": plc,
        "heads": heads,
        "events": sum(heads),
        "accounts": [(h.url, a["did"]) for h, accs in zip(hosts, accounts, strict=True) for a in accs],
        "commit_ops": dict(ops),
        "fill_s": fill_s,
        "fill_commits_per_s": sum(f["commits"] for f in fills) / max(f["seconds"] for f in fills),
    }
    log(f"hosts hold {info['events']} events {heads} ({dict(ops)}) after {fill_s:.1f} s")
    return {"procs": hosts, "info": info}


# ------------------------------------------------------------------------------------------------- relay


def start_relay(
    upstreams: list[str], plc: str, data: Path, workers: int, log: Path, database: str | None = None
) -> Proc:
    """``atrepo relay`` on a fresh store: a new data directory, and with ``database`` (PostgreSQL) its
    ``atrepo_relay`` schema dropped first."""
    port = _free_port()
    cmd = ["relay", "--port", str(port), "--data", str(data), "--plc", plc, "--replay"]
    cmd += ["--workers", str(workers)]
    if database is not None:
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS atrepo_relay CASCADE")
        cmd += ["--database", database]
    for url in upstreams:
        cmd += ["--upstream", url]
    relay = Proc(cmd, log, f"http://127.0.0.1:{port}", "/metrics")
    relay.start()
    return relay


def start_fanout_role(database: str, log: Path) -> Proc:
    """``atrepo relay --role fanout`` following the relay's PostgreSQL store."""
    port = _free_port()
    cmd = ["relay", "--role", "fanout", "--database", database, "--port", str(port)]
    proc = Proc(cmd, log, f"http://127.0.0.1:{port}", "/xrpc/_health")
    proc.start()
    return proc


def _metrics_by_label(text: str, name: str) -> dict[str, float]:
    """Every sample of a labelled metric, keyed by its label set (``kind="x"``), non-zero only."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            if float(value):
                out[labels] = float(value)
    return out


def catch_up(
    relay: Proc,
    heads: dict[str, int],
    total: int,
    timeout: float,
    on_ready: Any = None,
    upstream_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Time the relay from ready until it has relayed ``total`` events (or its cursors stop at the heads).

    ``upstream_pids``: the hosts' processes, whose CPU (serving the replays) is reported beside.
    """
    cpu0, tree0 = tree_cpu(relay.pid)
    up0 = sum(proc_cpu_seconds(p) for p in upstream_pids)
    run0, wait0 = schedstat(relay.pid)
    t0 = time.monotonic()
    if on_ready is not None:
        on_ready()
    head, last_change, t_done = -1, t0, 0.0
    while time.monotonic() - t0 < timeout:
        text = _get(relay.url + "/metrics").decode()
        now = time.monotonic()
        seq = int(_metric(text, "atrepo_relay_head_seq", -1))
        if seq != head:
            head, last_change = seq, now
        if head >= total:
            t_done = now
            break
        cursors = {
            h["hostname"]: h.get("seq", -1)
            for h in _get_json(relay.url + "/xrpc/com.atproto.sync.listHosts")["hosts"]
        }
        at_heads = all(cursors.get(name, -1) >= want for name, want in heads.items())
        if at_heads and now - last_change > 2.0:
            t_done = last_change
            break
        time.sleep(0.1)
    cpu1, tree1 = tree_cpu(relay.pid)
    up1 = sum(proc_cpu_seconds(p) for p in upstream_pids)
    run1, wait1 = schedstat(relay.pid)
    elapsed = (t_done or time.monotonic()) - t0
    text = _get(relay.url + "/metrics").decode()
    return {
        "done": bool(t_done),
        "seconds": elapsed,
        "startup_s": t0 - relay.t_spawn,
        "relay_head": int(_metric(text, "atrepo_relay_head_seq", -1)),
        "events_per_s": total / elapsed if t_done else 0.0,
        "relay_cpu_s": cpu1 - cpu0,
        "tree_cpu_s": tree1 - tree0,
        "events_per_cpu_s": total / (tree1 - tree0) if t_done and tree1 > tree0 else 0.0,
        "relay_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "tree_cpu_pct": 100 * (tree1 - tree0) / elapsed,
        "hosts_cpu_pct": 100 * (up1 - up0) / elapsed,
        "main_run_pct": 100 * (run1 - run0) / elapsed,
        "main_runqueue_pct": 100 * (wait1 - wait0) / elapsed,
        "rss_mib": proc_status_kib(relay.pid, "VmRSS") / 1024,
        "hwm_mib": proc_status_kib(relay.pid, "VmHWM") / 1024,
        "faults": _metrics_by_label(text, "atrepo_relay_faults_total"),
        "dropped": _metrics_by_label(text, "atrepo_relay_dropped_events_total"),
        "emitted": _metrics_by_label(text, "atrepo_relay_emitted_events_total"),
        "upstream": _metrics_by_label(text, "atrepo_relay_upstream_events_total"),
        "batches": _metric(text, "atrepo_relay_batch_events_count", 0.0),
        "batch_events_mean": _metric(text, "atrepo_relay_batch_events_sum", 0.0)
        / max(1.0, _metric(text, "atrepo_relay_batch_events_count", 0.0)),
        "load": os.getloadavg()[0],
    }


def check_commits(relay_url: str, accounts: list[tuple[str, str]]) -> list[str]:
    """For every account, relay ``getLatestCommit`` == host ``getLatestCommit``; the mismatches."""
    import aiohttp

    async def run() -> list[str]:
        failures: list[str] = []
        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession() as s:

            async def latest(base: str, did: str) -> Any:
                url = f"{base}/xrpc/com.atproto.sync.getLatestCommit?did={urllib.parse.quote(did)}"
                async with s.get(url) as resp:
                    return resp.status, await resp.json(content_type=None)

            async def one(host: str, did: str) -> None:
                async with sem:
                    want, got = await latest(host, did), await latest(relay_url, did)
                if want != got:
                    failures.append(f"{did} on {host}: host {want} relay {got}")

            await asyncio.gather(*(one(h, d) for h, d in accounts))
        return failures

    return asyncio.run(run())


def fanout(args: argparse.Namespace, relay: Proc, expect: int) -> dict[str, Any]:
    """``bench.firehose_fanout``'s client processes replaying the relay's firehose from cursor 0."""
    port = int(relay.url.rsplit(":", 1)[1])
    per = [args.subscribers // args.procs + (i < args.subscribers % args.procs) for i in range(args.procs)]
    clients = [
        _spawn_fanout("client", {"port": port, "subs": n, "expect": expect, "first_seq": 1, "cursor": 0})
        for n in per
    ]
    results = []
    try:
        for proc in clients:
            _expect_line(proc, "ready")
        cpu0 = proc_cpu_seconds(relay.pid)
        t0 = time.monotonic()
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in clients:
            _expect_line(proc, "connected")
        for proc in clients:
            out, _ = proc.communicate(timeout=900)
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu1 = proc_cpu_seconds(relay.pid)
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
    ok = all(
        r["counts_ok"] and r["last_ok"] and r["sample_ok"] and r["t_done"] and not r["closed"]
        for r in results
    )
    frames = sum(r["frames"] for r in results)
    t_done = max(r["t_done"] for r in results) if ok else float("nan")
    elapsed = t_done - t0
    return {
        "ok": ok,
        "subscribers": args.subscribers,
        "frames": frames,
        "bytes": sum(r["bytes"] for r in results),
        "last_frame_s": elapsed,
        "frames_per_s": frames / elapsed if ok else 0.0,
        "relay_cpu_pct": 100 * (cpu1 - cpu0) / elapsed if ok else 0.0,
        "closes": sorted({c for r in results for c in r["closed"]}),
    }


# ----------------------------------------------------------------------------------------------- profile


def summarize_raw(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive share of samples by function from py-spy's raw (collapsed) stacks."""
    self_n: Counter[str] = Counter()
    incl_n: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith(("process ", "thread ")):
            threads[frames[0]] += n
            frames = frames[1:]
        while frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        if not frames:
            continue
        total += n
        self_n[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            incl_n[name] += n
    return {
        "samples": total,
        "threads": {k: v / total for k, v in threads.most_common()} if total else {},
        "self": [(k, v / total) for k, v in self_n.most_common(top)] if total else [],
        "inclusive": [(k, v / total) for k, v in incl_n.most_common(top * 4)] if total else [],
    }


def _short(frame: str) -> str:
    """``func (path/to/atrepo/x.py:12)`` -> ``func (atrepo/x.py)``: shares by function, not by line."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


def profile_run(args: argparse.Namespace, env: dict[str, Any], tmp: Path, log: Any) -> dict[str, Any]:
    info = env["info"]
    workers = args.profile_workers
    data, log_path = tmp / "relay-profile", tmp / "relay-profile.log"
    relay = start_relay(env["upstreams"], info["plc"], data, workers, log_path, args.database)
    spy: subprocess.Popen[bytes] | None = None

    def attach() -> None:
        nonlocal spy
        cmd = [args.py_spy, "record", "--pid", str(relay.pid), "-f", "raw", "-o", args.profile, "--threads"]
        cmd += ["--rate", str(args.profile_rate), "--nonblocking"]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "py-spy.log", "wb"))  # noqa: SIM115
        time.sleep(0.3)

    try:
        result = catch_up(relay, env["host_heads"], env["total"], args.timeout, attach, env["pids"])
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        relay.stop()
    out = Path(args.profile)
    if not out.exists():
        return {"error": (tmp / "py-spy.log").read_text()[-1000:], "run": result}
    summary = summarize_raw(out)
    summary["run"] = result
    summary["workers"] = workers
    log(f"profile: {summary['samples']} samples into {out}")
    return summary


# ------------------------------------------------------------------------------------------ orchestrator


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    def log(text: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="atrepo-relaybench-"))
    payload: dict[str, Any] = {"config": vars(args), "load_start": os.getloadavg(), "cpus": os.cpu_count()}
    ref: RefPdsUpstream | None = None
    env: dict[str, Any] = {}
    completed = False
    try:
        env = setup_hosts(args, tmp, log)
        info = env["info"]
        upstreams = list(info["hosts"])
        host_heads = {
            urllib.parse.urlsplit(u).netloc: h for u, h in zip(upstreams, info["heads"], strict=True)
        }
        accounts = list(info["accounts"])
        if args.refpds:
            ref = RefPdsUpstream(Path(args.refpds), tmp / "refpds", info["plc"], tmp / "refpds.log")
            fill = _run_workers(
                [
                    {
                        "kind": "ref_commits",
                        "url": ref.url,
                        "commits": args.ref_commits,
                        "clients": args.ref_clients,
                    }
                ]
            )[0]
            ref_head = ref.head()
            upstreams.append(ref.url)
            host_heads[f"localhost:{ref.port}"] = ref_head
            accounts += [(ref.url, did) for did in fill["dids"]]
            info["refpds"] = {
                "url": ref.url,
                "head_seq": ref_head,
                "frames": ref.frames,
                "accounts": fill["dids"],
            }
            log(f"reference PDS at {ref.url}: {ref.frames} frames (head seq {ref_head})")
        total = sum(host_heads.values())
        if ref is not None:  # its seqs need not start at 1 or be contiguous: count frames
            total = sum(info["heads"]) + info["refpds"]["frames"]
        pids = tuple(p.pid for p in env["procs"]) + ((ref.proc.pid,) if ref is not None else ())
        env.update(upstreams=upstreams, host_heads=host_heads, total=total, pids=pids)
        info["total_events"] = total
        payload["setup"] = {k: v for k, v in info.items() if k != "accounts"}
        payload["setup"]["account_count"] = len(accounts)
        runs: list[dict[str, Any]] = []
        fan: list[dict[str, Any]] = []
        for rep in range(args.reps):
            order = args.workers[rep % len(args.workers) :] + args.workers[: rep % len(args.workers)]
            for workers in order:
                data = tmp / f"relay-{rep}-{workers}"
                relay = start_relay(
                    upstreams, info["plc"], data, workers, tmp / f"relay-{rep}-{workers}.log", args.database
                )
                try:
                    run = catch_up(relay, host_heads, total, args.timeout, upstream_pids=env["pids"])
                    run.update(rep=rep, workers=workers)
                    run["mismatches"] = check_commits(relay.url, accounts) if run["done"] else ["not done"]
                    run["ok"] = run["done"] and not run["mismatches"] and not run["faults"]
                    runs.append(run)
                    log(
                        f"rep {rep} workers={workers}: {run['events_per_s']:,.0f} events/s, "
                        f"{run['events_per_cpu_s']:,.0f} events/CPU-s, CPU {run['relay_cpu_pct']:.0f}% "
                        f"(tree {run['tree_cpu_pct']:.0f}%, hosts {run['hosts_cpu_pct']:.0f}%, main thread "
                        f"runnable-waiting {run['main_runqueue_pct']:.0f}%), "
                        f"head {run['relay_head']}/{total}, {len(run['mismatches'])} mismatches, "
                        f"faults {run['faults']} dropped {run['dropped']}, load {run['load']:.1f}"
                    )
                    for line in run["mismatches"][:10]:
                        log(f"  MISMATCH {line}")
                    if rep == args.reps - 1 and workers == 0 and run["done"]:
                        servers = [("all", relay)]
                        if args.database:  # the same replay from a fan-out process on the same store
                            servers.append(
                                ("fanout", start_fanout_role(args.database, tmp / "fanout-role.log"))
                            )
                        try:
                            for role, server in servers:
                                for k in range(args.fanout_reps):
                                    f = fanout(args, server, run["relay_head"])
                                    f.update(rep=k, role=role)
                                    fan.append(f)
                                    log(
                                        f"fan-out {role} {k}: {f['frames_per_s']:,.0f} frames/s to "
                                        f"{f['subscribers']}, last frame after {f['last_frame_s']:.2f} s, "
                                        f"its CPU {f['relay_cpu_pct']:.0f}% ok={f['ok']}"
                                    )
                        finally:
                            for role, server in servers:
                                if role == "fanout":
                                    server.stop()
                finally:
                    relay.stop()
                    shutil.rmtree(data, ignore_errors=True)
        payload["runs"] = runs
        payload["fanout"] = fan
        if args.profile:
            payload["profile"] = profile_run(args, env, tmp, log)
        completed = True
    finally:
        if ref is not None:
            ref.stop()
        for proc in env.get("procs", []):
            proc.stop()
        payload["load_end"] = os.getloadavg()
        if args.keep or not completed:  # a failed run keeps its servers' logs
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return payload


def summarize(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    base = [r for r in payload["runs"] if r["workers"] == 0]
    for workers in payload["config"]["workers"]:
        mine = [r for r in payload["runs"] if r["workers"] == workers]
        ratios = []
        for r in mine:
            zero = [b for b in base if b["rep"] == r["rep"]]
            if zero and zero[0]["events_per_s"]:
                ratios.append(r["events_per_s"] / zero[0]["events_per_s"])
        rows.append(
            {
                "workers": workers,
                "ok": all(r["ok"] for r in mine),
                "events_per_s": _med([r["events_per_s"] for r in mine]),
                "spread": (min(r["events_per_s"] for r in mine), max(r["events_per_s"] for r in mine)),
                "vs_workers_0": _med(ratios) if ratios else None,
                "seconds": _med([r["seconds"] for r in mine]),
                "relay_cpu_s": _med([r["relay_cpu_s"] for r in mine]),
                "tree_cpu_s": _med([r["tree_cpu_s"] for r in mine]),
                "events_per_cpu_s": _med([r["events_per_cpu_s"] for r in mine]),
                "relay_cpu_pct": _med([r["relay_cpu_pct"] for r in mine]),
                "tree_cpu_pct": _med([r["tree_cpu_pct"] for r in mine]),
                "hosts_cpu_pct": _med([r["hosts_cpu_pct"] for r in mine]),
                "main_run_pct": _med([r["main_run_pct"] for r in mine]),
                "main_runqueue_pct": _med([r["main_runqueue_pct"] for r in mine]),
                "batch_events_mean": _med([r["batch_events_mean"] for r in mine]),
                "hwm_mib": max(r["hwm_mib"] for r in mine),
                "mismatches": sum(len(r["mismatches"]) for r in mine),
            }
        )
    return rows


def render(payload: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The human-readable report: a markdown table per phase, then the profile summary."""
    cfg, setup = payload["config"], payload["setup"]
    ref = setup.get("refpds")
    upstreams = f"{len(setup['hosts'])} atrepo hosts" + (" + the reference PDS" if ref else "")
    heads = f"host heads {setup['heads']}" + (f", refpds {ref['frames']} frames" if ref else "")
    lines = [
        f"relay: {upstreams}, {setup['account_count']} accounts, {setup['total_events']} events ({heads}; "
        f"commit ops {setup['commit_ops']}); {cfg['reps']} reps; {payload['cpus']} CPUs, "
        f"load {payload['load_start'][0]:.2f} -> {payload['load_end'][0]:.2f}; store: "
        + ("PostgreSQL (the server's CPU is not in the relay's)" if cfg.get("database") else "SQLite"),
        "",
        "verify (every host's log replayed from cursor 0 into a fresh relay; CPU: relay process (with its "
        "workers); hosts: the upstreams serving it):",
        "",
        "| workers | events/s | spread | x workers=0 | seconds | CPU s | events/CPU-s | CPU % | main thread "
        "run / runnable-waiting % | hosts CPU % | batch | peak RSS MiB | mismatches | ok |",
        "| ---: | ---: | --- | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        x = f"{r['vs_workers_0']:.2f}" if r["vs_workers_0"] is not None else "-"
        spread = f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}"
        cpu = f"{r['relay_cpu_s']:.2f} ({r['tree_cpu_s']:.2f})"
        pct = f"{r['relay_cpu_pct']:.0f}% ({r['tree_cpu_pct']:.0f}%)"
        lines.append(
            f"| {r['workers']} | {r['events_per_s']:,.0f} | {spread} | {x} | {r['seconds']:.2f} | {cpu} | "
            f"{r['events_per_cpu_s']:,.0f} | {pct} | {r['main_run_pct']:.0f} / {r['main_runqueue_pct']:.0f} "
            f"| {r['hosts_cpu_pct']:.0f}% | "
            f"{r['batch_events_mean']:.0f} | {r['hwm_mib']:.0f} | {r['mismatches']} | {r['ok']} |"
        )
    for role, what in (("all", "the relay (workers=0)"), ("fanout", "a `relay --role fanout` process")):
        fan = [f for f in payload.get("fanout") or [] if f.get("role", "all") == role]
        if not fan:
            continue
        ok = [f for f in fan if f["ok"]]
        rates = [f["frames_per_s"] for f in ok] or [0.0]
        lines += [
            "",
            f"fan-out from {what}: {fan[0]['subscribers']} subscribers replaying "
            f"{fan[0]['frames'] // max(1, fan[0]['subscribers'])} frames from cursor 0, {len(fan)} reps:",
            f"  frames/s {_med(rates):,.0f} (spread {min(rates):,.0f}-{max(rates):,.0f}), last subscriber's "
            f"last frame after {_med([f['last_frame_s'] for f in ok] or [math.nan]):.2f} s, its CPU "
            f"{_med([f['relay_cpu_pct'] for f in ok] or [math.nan]):.0f}%, ok={all(f['ok'] for f in fan)}",
        ]
    prof = payload.get("profile")
    if prof and "self" in prof:
        ours = [(k, v) for k, v in prof["inclusive"] if "atrepo/" in k and "atrepo/cli/" not in k]
        lines += [
            "",
            f"py-spy profile of the relay process in a workers={prof['workers']} catch-up "
            f"({prof['samples']} non-idle samples; "
            f"{prof['run']['events_per_s']:,.0f} events/s while profiled):",
            "  threads: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["threads"].items()),
            "  top self (share of all samples):",
        ]
        lines += [f"    {share:6.1%}  {name}" for name, share in prof["self"][:20]]
        lines += ["  top inclusive, atrepo functions:"]
        lines += [f"    {share:6.1%}  {name}" for name, share in ours[:30]]
    elif prof:
        lines += ["", f"profile failed: {prof.get('error')}"]
    lines += ["", "The reference relay (Go, bluesky-social/indigo) is not installable here: no peer row."]
    return "\n".join(lines)


def _split_sample(
    args: argparse.Namespace, env: dict[str, Any], tmp: Path, name: str, count: int
) -> dict[str, Any]:
    """One ``--split`` sample: a sequencer and ``count`` ingest processes replaying every host."""
    import psycopg

    info, database = env["info"], args.database
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS atrepo_relay CASCADE")
    common = ["--database", database, "--plc", info["plc"]]
    port = _free_port()
    sequencer = Proc(
        ["relay", "--role", "sequencer", *common, "--port", str(port), "--data", str(tmp / f"{name}-seq")],
        tmp / f"{name}-seq.log",
        f"http://127.0.0.1:{port}",
        "/metrics",
    )
    ingests: list[Proc] = []
    try:
        sequencer.start()
        ups = [arg for url in info["hosts"] for arg in ("--upstream", url)]
        for index in range(count):
            port = _free_port()
            cmd = ["relay", "--role", "ingest", "--partition", f"{index}/{count}", "--replay", *common, *ups]
            cmd += ["--port", str(port), "--data", str(tmp / f"{name}-ingest{index}")]
            proc = Proc(cmd, tmp / f"{name}-ingest{index}.log", f"http://127.0.0.1:{port}", "/metrics")
            ingests.append(proc)
        for proc in ingests:  # spawned together, then timed once every one answers
            proc.start()
        total = env["total"]
        procs = [sequencer, *ingests]
        cpu0 = sum(tree_cpu(p.pid)[1] for p in procs)
        t0 = time.monotonic()
        state, last_change, t_done = (-1, -1), t0, 0.0
        while time.monotonic() - t0 < args.timeout:
            text = _get(sequencer.url + "/metrics").decode()
            now = time.monotonic()
            seen = (
                int(_metric(text, "atrepo_relay_head_seq", -1)),
                int(_metric(text, "atrepo_relay_pending_events", 0)),
            )
            if seen != state:
                state, last_change = seen, now
            if state[0] >= total or (state[1] == 0 and now - last_change > 5.0):
                t_done = now if state[0] >= total else last_change
                break
            time.sleep(0.1)
        cpu1 = sum(tree_cpu(p.pid)[1] for p in procs)
        elapsed = (t_done or time.monotonic()) - t0
        faults: dict[str, float] = {}
        for proc in ingests:
            for kind, value in _metrics_by_label(
                _get(proc.url + "/metrics").decode(), "atrepo_relay_faults_total"
            ).items():
                faults[kind] = faults.get(kind, 0.0) + value
        text = _get(sequencer.url + "/metrics").decode()
        head = int(_metric(text, "atrepo_relay_head_seq", -1))
        pending = int(_metric(text, "atrepo_relay_pending_events", 0))
        return {
            "ingest_processes": count,
            "done": bool(t_done),
            "seconds": elapsed,
            "head": head,
            "pending": pending,
            "events_per_s": total / elapsed if t_done else 0.0,
            "cpu_s": cpu1 - cpu0,
            "events_per_cpu_s": total / (cpu1 - cpu0) if t_done and cpu1 > cpu0 else 0.0,
            "cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
            "faults": faults,
            "ok": bool(t_done) and not faults and pending == 0,
            "load": os.getloadavg()[0],
        }
    finally:
        for proc in reversed([sequencer, *ingests]):
            proc.stop()


def run_split(args: argparse.Namespace) -> dict[str, Any]:
    """``--split``: the hosts once, then every K of ``args.split`` per rep (module docstring)."""

    def log(text: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="atrepo-relaybench-split-"))
    payload: dict[str, Any] = {"config": vars(args), "load_start": os.getloadavg(), "cpus": os.cpu_count()}
    env: dict[str, Any] = {}
    try:
        env = setup_hosts(args, tmp, log)
        env["total"] = env["info"]["events"]
        runs = []
        for rep in range(args.reps):
            order = args.split[rep % len(args.split) :] + args.split[: rep % len(args.split)]
            for count in order:
                run = _split_sample(args, env, tmp, f"r{rep}k{count}", count)
                run["rep"] = rep
                runs.append(run)
                log(
                    f"rep {rep} ingest processes={count}: {run['events_per_s']:,.0f} events/s, "
                    f"{run['events_per_cpu_s']:,.0f} events/CPU-s, CPU {run['cpu_pct']:.0f}%, head "
                    f"{run['head']}/{env['total']}, pending {run['pending']}, faults {run['faults']}, "
                    f"load {run['load']:.1f}"
                )
        payload["split"] = runs
        payload["summary"] = [
            {
                "ingest_processes": count,
                "events_per_s": _med([r["events_per_s"] for r in runs if r["ingest_processes"] == count]),
                "events_per_cpu_s": _med(
                    [r["events_per_cpu_s"] for r in runs if r["ingest_processes"] == count]
                ),
                "ok": all(r["ok"] for r in runs if r["ingest_processes"] == count),
            }
            for count in args.split
        ]
    finally:
        for proc in env.get("procs", []):
            proc.stop()
        payload["load_end"] = os.getloadavg()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return payload


def sequencer_bench(database: str, events: int, reps: int) -> dict[str, Any]:
    """The split roles' queue (module docstring, "Split roles"): queue then sequence ``events``, ``reps``
    times on a fresh schema; medians."""
    import psycopg

    from atrepo.core.events import SyncEvent, encode_frame_with_seq
    from atrepo.store.relay import PendingEvent, PostgresRelayStore

    samples: list[dict[str, float]] = []
    for _rep in range(reps):
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS atrepo_relay CASCADE")
        ingest = PostgresRelayStore(database, partition=(0, 1))
        sequencer = PostgresRelayStore(database, sequencer=True)
        try:
            host = ingest.add_host(
                "pds.example",
                "https://pds.example",
                configured=True,
                trusted=True,
                account_limit=10**9,
                now_ms=1,
            )
            batches = []
            for start in range(0, events, 500):
                batch = []
                for i in range(start, min(events, start + 500)):
                    did = f"did:plc:{i % 5000:024d}"
                    event = SyncEvent(0, did, os.urandom(1900), "3jzfcijpj2z2a", "2026-12-02T00:00:00.000Z")
                    batch.append(
                        PendingEvent(
                            did, "#sync", 1_800_000_000_000 + i, partial(encode_frame_with_seq, event)
                        )
                    )
                batches.append(batch)
            t0, c0 = time.perf_counter(), time.process_time()
            for n, batch in enumerate(batches):
                ingest.queue_batch([], batch, cursors={host.id: (n, None)})
            queue_s, queue_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            moved = 0
            while rows := sequencer.sequence_pending(1000):
                moved += len(rows)
            seq_s, seq_cpu = time.perf_counter() - t0, time.process_time() - c0
            if moved != events or sequencer.head_seq() != events:
                raise RuntimeError(f"sequenced {moved} of {events} events")
            samples.append(
                {
                    "queue_events_per_s": events / queue_s,
                    "queue_events_per_cpu_s": events / queue_cpu,
                    "sequence_events_per_s": events / seq_s,
                    "sequence_events_per_cpu_s": events / seq_cpu,
                }
            )
        finally:
            ingest.close()
            sequencer.close()
    return {key: _med([s[key] for s in samples]) for key in samples[0]} | {"events": events, "reps": reps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3,000 events, 1 rep")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--json-out", help="also write the results as JSON to this file")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="events in the hosts' logs together")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=30, help="accounts per host")
    parser.add_argument("--workers", default="0,1,2", help="relay --workers values to measure")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--procs", type=int, default=4, help="fan-out client processes")
    parser.add_argument("--fanout-reps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="seconds a relay may take to catch up")
    parser.add_argument("--profile", help="also profile a workers=0 catch-up with py-spy into this raw file")
    parser.add_argument("--profile-workers", type=int, default=0, help="--workers of the profiled relay")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--py-spy", default="/tmp/spyenv/bin/py-spy", help="the py-spy executable")
    parser.add_argument("--refpds", help="add the reference PDS installed in this directory as an upstream")
    parser.add_argument("--ref-commits", type=int, default=2000, help="createRecord calls on the reference")
    parser.add_argument("--ref-clients", type=int, default=4, help="accounts (clients) on the reference")
    parser.add_argument(
        "--database",
        help="keep each relay's store in this PostgreSQL database (its atrepo_relay schema is dropped "
        "before every sample) instead of SQLite",
    )
    parser.add_argument(
        "--sequencer",
        type=int,
        metavar="N",
        help="only measure the split roles' queue (ingest queue_batch, sequencer sequence_pending) with N "
        "events; needs --database",
    )
    parser.add_argument(
        "--split",
        help="measure ingest/sequencer processes instead: these ingest process counts (e.g. 1,2); "
        "needs --database",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(asyncio.run(WORKERS[spec["kind"]](spec))), flush=True)
        return 0
    if args.sequencer:
        if not args.database:
            parser.error("--sequencer needs --database postgresql://...")
        result = sequencer_bench(args.database, args.sequencer, args.reps)
        print(
            json.dumps(result, indent=1)
            if args.json
            else "\n".join(f"{k}: {v:,.0f}" for k, v in result.items())
        )
        return 0
    if args.quick:
        args.reps, args.events, args.fanout_reps, args.accounts = 1, 3000, 1, 10
    if args.split:
        if not args.database:
            parser.error("--split needs --database postgresql://...")
        args.split = [int(k) for k in args.split.split(",") if k]
        if args.hosts % max(args.split):
            parser.error("--hosts must be a multiple of the largest --split count")
        result = run_split(args)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=1, default=str))
        for row in result["summary"]:
            print(
                f"ingest processes {row['ingest_processes']}: {row['events_per_s']:,.0f} events/s, "
                f"{row['events_per_cpu_s']:,.0f} events/CPU-s, ok={row['ok']}"
            )
        return 0 if all(row["ok"] for row in result["summary"]) else 1
        args.ref_commits = min(args.ref_commits, 300)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    if 0 not in args.workers:
        args.workers.insert(0, 0)
    payload = run_all(args)
    rows = summarize(payload)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**payload, "summary": rows}, indent=1, default=str))
    with contextlib.suppress(BrokenPipeError):
        if args.json:
            print(json.dumps({**payload, "summary": rows}, indent=1, default=str))
        else:
            print(render(payload, rows))
    ok = all(r["ok"] for r in rows) and all(f["ok"] for f in payload.get("fanout", []))
    return 0 if ok and not math.isnan(rows[0]["events_per_s"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
