"""Host scale-out benchmark: createRecord/s of ``atrepo serve --workers N`` on PostgreSQL, beside SQLite.

``python -m bench.host_scale [--workers 1,2,4] [--clients 16] [--client-procs 2] [--seconds 10] [--reps 2]
[--postgres auto|URL] [--no-sqlite] [--quick] [--json]``

Per rep, for each configuration in turn (SQLite with one process, then PostgreSQL with each ``--workers``
count), a fresh server on a fresh data directory (and a fresh database): ``--clients`` accounts are
created, then ``--client-procs`` client processes (``bench.host_bench``'s createRecord clients, each its
own accounts, every client awaiting its requests one after another) write for ``--seconds`` after a
second of warm-up. Reported per configuration (medians over reps): records/s summed over the client
processes, p50/p99 latency (the median over client processes), the host's CPU per record (every process
of it: the supervisor and its workers, from /proc) and PostgreSQL's (every ``postgres`` process on the
machine), and the rate relative to one PostgreSQL worker. Durable on both stores (SQLite
``synchronous=FULL``; PostgreSQL ``fsync`` and ``synchronous_commit`` on, the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import tree_cpu_seconds
from bench.host_bench import Server, run_worker
from bench.sync_bench import Postgres


def _wait_for_workers(server: Server, workers: int, timeout: float = 120.0) -> None:
    """With ``--workers``: until the supervisor says every worker is listening (health alone says one is)."""
    if workers <= 1:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "atrepo serve: worker" in server.log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not all start: {server.log.read_text()[-2000:]}")


def one_run(
    name: str, workers: int, database: str | None, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    server = Server(data / "data", data / "serve.log", database, workers=workers)
    server.start()
    try:
        _wait_for_workers(server, workers)
        accounts = run_worker({"kind": "accounts", "url": server.url, "n": args.clients, "prefix": "scale"})
        procs = max(1, min(args.client_procs, args.clients))
        shares = [accounts[i::procs] for i in range(procs)]
        spec = {"kind": "create", "url": server.url, "seconds": args.seconds, "warmup": 1.0}
        cpu0, pg0, t0 = tree_cpu_seconds(server.pid), Postgres.cpu_seconds(), time.monotonic()
        with ThreadPoolExecutor(procs) as pool:
            results = list(pool.map(lambda share: run_worker({**spec, "accounts": share}), shares))
        wall = time.monotonic() - t0
        host_cpu, pg_cpu = tree_cpu_seconds(server.pid) - cpu0, Postgres.cpu_seconds() - pg0
    finally:
        server.stop()
    records = sum(r["records"] + r["warmup_records"] for r in results)
    return {
        "config": name,
        "rate": sum(r["rate"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "host_cpu_ms_per_record": 1e3 * host_cpu / max(1, records),
        "host_cpu_pct": 100 * host_cpu / wall,
        "pg_cpu_ms_per_record": 1e3 * pg_cpu / max(1, records) if database else 0.0,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4", help="PostgreSQL worker counts (default 1,2,4)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one account each")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes the clients share")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of writing per run")
    parser.add_argument("--reps", type=int, default=2, help="runs per configuration (median)")
    parser.add_argument("--postgres", default="auto", help="auto (a throwaway cluster) or a server URL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite configuration")
    parser.add_argument("--quick", action="store_true", help="smoke run: workers 1,2, 4 clients, 2 s, 1 rep")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.clients, args.seconds, args.reps = "1,2", 4, 2.0, 1
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="atrepo-hostscale-") as tmp_name:
        tmp = Path(tmp_name)
        pg = Postgres(args.postgres, tmp)
        runs: list[dict[str, Any]] = []
        try:
            for rep in range(args.reps):
                configs: list[tuple[str, int, bool]] = [] if args.no_sqlite else [("sqlite", 1, False)]
                configs += [(f"postgresql x{n}", n, True) for n in counts]
                for name, n, on_pg in configs:
                    database = pg.new_database() if on_pg else None
                    try:
                        run = one_run(name.replace(" ", ""), n, database, args, tmp)
                    finally:
                        if database:
                            pg.drop(database)
                    run["config"] = name
                    runs.append(run)
                    print(
                        f"[{time.strftime('%H:%M:%S')}] rep {rep + 1} {name}: {run['rate']:.0f} rec/s, "
                        f"p50 {run['p50_ms']:.1f} ms, host CPU {run['host_cpu_ms_per_record']:.2f} ms/rec "
                        f"({run['host_cpu_pct']:.0f}%), PostgreSQL {run['pg_cpu_ms_per_record']:.2f} ms/rec",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            pg.stop()
    table = _summarize(runs)
    if args.json:
        print(json.dumps({"config": vars(args), "summary": table, "runs": runs}, indent=1))
        return
    print(f"createRecord, {args.clients} clients in {args.client_procs} processes, medians of {args.reps}:")
    print("| store | rec/s | vs 1 PG worker | p50 ms | p99 ms | host CPU ms/rec | PostgreSQL CPU ms/rec |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in table:
        print(
            f"| {row['config']} | {row['rate']:.0f} | {row['vs_pg1']:.2f}x | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['host_cpu_ms_per_record']:.2f} | {row['pg_cpu_ms_per_record']:.2f} |"
        )


def _summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(r["config"] for r in runs))
    table = []
    for name in names:
        mine = [r for r in runs if r["config"] == name]
        row = {"config": name, "reps": [round(r["rate"], 1) for r in mine]}
        for key in ("rate", "p50_ms", "p99_ms", "host_cpu_ms_per_record", "pg_cpu_ms_per_record"):
            row[key] = statistics.median(r[key] for r in mine)
        table.append(row)
    base = next((row["rate"] for row in table if row["config"] == "postgresql x1"), None)
    for row in table:
        row["vs_pg1"] = row["rate"] / base if base else 0.0
    return table


if __name__ == "__main__":
    main()
