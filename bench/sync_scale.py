"""Sync consumer scaling: ``atrepo sync --workers N`` on one PostgreSQL mirror, catching up a host's log.

``python -m bench.sync_scale [--quick] [--json] [--accounts N] [--commits N] [--workers 1,2] [--reps N]
[--postgres auto|URL]``

Why: issue 13 asks how far the consumer scales past one process. Verification is the consumer's CPU
work and it splits by DID (``--workers N``: each worker verifies and writes the accounts whose CRC-32
modulo N is its index, every worker reads the whole stream), so the figure is events/s of a catch-up
that is CPU-bound: many accounts, each commit in a different one most of the time.

Per run, for each worker count (the order rotates by rep), into a fresh PostgreSQL database:
1. *Not timed*: ``atrepo sync --workers N`` backfills the ``--accounts`` accounts of an ``atrepo serve``
   host (separate process), sees one warm-up commit per account (so every worker stores a cursor), and
   is stopped. Then writer processes make ``--commits`` single-op createRecord commits spread over the
   accounts, into the host's log.
2. *Timed*: ``atrepo sync --workers N`` again, from launch until every worker's cursor reaches the
   host's head seq: events/s = commits / seconds. CPU is the workers' utime+stime (from /proc, read
   before they stop) and the PostgreSQL server's; per event, in microseconds.
3. Checked: the mirror's digest of every account equals the host's ``getRepo``.

The machine has two cores, so two workers can at best double one (less the stream each worker reads in
full, and the host and PostgreSQL sharing the cores). Medians over ``--reps``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import proc_cpu_seconds
from bench.sync_bench import ATREPO, Postgres, _get_json, _head_seq, _result, _worker, host_digest, start_host

WRITERS = 4


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Supervisor:
    """``atrepo sync --workers N --json`` in its own process; its workers' status URLs and pids."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.t_launch = time.monotonic()
        self.log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        try:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"atrepo sync --workers exited: {log.read_text()[-2000:]}")
            doc = json.loads(line)
            # --workers 1 is the plain consumer (one process, no partition): the baseline
            self.workers: list[dict[str, Any]] = doc.get("workers") or [
                {"partition": None, "listening": doc["listening"], "pid": self.proc.pid}
            ]
        except BaseException:  # never leave it running
            self.proc.kill()
            self.proc.wait()
            self.log.close()
            raise

    def statuses(self) -> list[dict[str, Any]]:
        return [_get_json(w["listening"] + "/status.json") for w in self.workers]

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(w["pid"]) for w in self.workers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _sync_cmd(
    args: argparse.Namespace, host_url: str, plc_url: str, db: str, data: Path, n: int, dids: list[str]
) -> list[str]:
    cmd = [str(ATREPO), "sync", "--upstream", host_url, "--plc", plc_url, "--database", db]
    cmd += ["--data", str(data), "--workers", str(n), "--port", "0", "--json"]
    for did in dids:
        cmd += ["--did", did]
    return cmd


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _write(host_url: str, accounts: list[dict[str, str]], commits: int) -> None:
    n = min(WRITERS, len(accounts))
    groups = [accounts[i::n] for i in range(n)]
    per = [commits // n + (1 if i < commits % n else 0) for i in range(n)]
    for proc in [
        _worker({"kind": "write_commits", "url": host_url, "accounts": g, "commits": c})
        for g, c in zip(groups, per, strict=True)
    ]:
        _result(proc)


def one_run(
    args: argparse.Namespace,
    tmp: Path,
    pg: Postgres,
    host_url: str,
    plc_url: str,
    accounts: list[dict[str, str]],
    n: int,
    rep: int,
) -> dict[str, Any]:
    dids = [a["did"] for a in accounts]
    db = pg.new_database()
    data = tmp / f"sync-{n}-{rep}"
    try:
        first = Supervisor(_sync_cmd(args, host_url, plc_url, db, data, n, dids), tmp / "sync.log")
        try:
            _wait(
                lambda: sum(s["repos"]["active"] for s in first.statuses()) == len(dids), 300, "the backfill"
            )
            _write(host_url, accounts, len(accounts))  # warm-up: every worker sees events, stores a cursor
            head = _head_seq(host_url)
            _wait(lambda: all((s["cursor"] or 0) >= head for s in first.statuses()), 120, "the warm-up")
        finally:
            first.stop()
        _write(host_url, accounts, args.commits)
        head = _head_seq(host_url)
        pg_cpu0 = Postgres.cpu_seconds()
        timed = Supervisor(_sync_cmd(args, host_url, plc_url, db, data, n, dids), tmp / "sync.log")
        try:
            _wait(lambda: all((s["cursor"] or 0) >= head for s in timed.statuses()), 900, "the catch-up")
            elapsed = time.monotonic() - timed.t_launch
            cpu = timed.cpu_seconds()
            server_cpu = Postgres.cpu_seconds() - pg_cpu0
        finally:
            timed.stop()
        from atrepo.store.mirror import open_mirror

        with open_mirror(db) as store:
            for did in dids:
                if store.records_digest(did) != host_digest(host_url, did)[0]:
                    raise RuntimeError(f"the mirror of {did} differs from the host")
    finally:
        pg.drop(db)
    return {
        "workers": n,
        "events": args.commits,
        "seconds": elapsed,
        "rate": args.commits / elapsed,
        "cpu_us_per_event": 1e6 * cpu / args.commits,
        "server_cpu_us_per_event": 1e6 * server_cpu / args.commits,
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quiet
    counts = [int(x) for x in args.workers.split(",")]
    out: dict[str, Any] = {"accounts": args.accounts, "commits": args.commits, "reps": args.reps}
    with tempfile.TemporaryDirectory(prefix="atrepo-syncscale-") as name:
        tmp = Path(name)
        host, host_url, plc_url = start_host(tmp)
        pg = Postgres(args.postgres, tmp)
        try:
            accounts = _result(
                _worker({"kind": "accounts", "url": host_url, "n": args.accounts, "prefix": "ss"})
            )
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            for rep in range(args.reps):
                order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
                for n in order:
                    run = one_run(args, tmp, pg, host_url, plc_url, accounts, n, rep)
                    runs[n].append(run)
                    _log(
                        q,
                        f"workers={n} rep {rep + 1}: {run['events']} events in {run['seconds']:.2f} s "
                        f"({run['rate']:,.0f} ev/s), CPU/event {run['cpu_us_per_event']:.0f} us in the "
                        f"workers, {run['server_cpu_us_per_event']:.0f} us in PostgreSQL",
                    )
            out["rows"] = [
                {
                    "workers": n,
                    **{
                        k: statistics.median(r[k] for r in runs[n])
                        for k in ("seconds", "rate", "cpu_us_per_event", "server_cpu_us_per_event")
                    },
                    "runs": runs[n],
                }
                for n in counts
            ]
        finally:
            pg.stop()
            host.stop()
    out["load"] = os.getloadavg()[0]
    return out


def render(r: dict[str, Any]) -> str:
    base = r["rows"][0]["rate"]
    lines = [
        f"atrepo sync --workers N on PostgreSQL: catch-up of {r['commits']:,} single-op commits over "
        f"{r['accounts']} accounts, median of {r['reps']} (load {r['load']:.1f})",
        "| workers | events/s | vs first | worker CPU us/event | PostgreSQL CPU us/event |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['workers']} | {row['rate']:,.0f} | {row['rate'] / base:.2f}x | "
            f"{row['cpu_us_per_event']:.0f} | {row['server_cpu_us_per_event']:.0f} |"
        )
    lines.append("Every run's mirror equal to the host's getRepo for every account.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep, 20 accounts, 400 commits")
    parser.add_argument("--accounts", type=int, help="accounts (default 40)")
    parser.add_argument("--commits", type=int, help="commits caught up per run (default 3000)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default 1,2)")
    parser.add_argument("--reps", type=int, help="runs per worker count (default 2)")
    parser.add_argument("--postgres", default="auto", help="auto (a throwaway cluster) or a server URL")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 2)
    args.accounts = args.accounts or (20 if args.quick else 40)
    args.commits = args.commits or (400 if args.quick else 3000)
    payload = run_all(args)
    print(json.dumps(payload, indent=2) if args.json else render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
