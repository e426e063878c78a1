"""Sync consumer benchmark: ``atrepo sync`` backfilling from, then following, an ``atrepo serve`` host.

``python -m bench.sync_bench [--quick] [--json] [--reps N] [--repos N] [--records N] [--commits N]
[--postgres auto|URL] [--profile OUT]``

Everything runs in separate processes, as in ``bench/host_bench.py`` (whose client workers this reuses):
the host (``atrepo serve --no-rate-limits`` with its in-process PLC directory), the consumer (``atrepo
sync`` as a subprocess, its status page polled over HTTP) and the writers. Phases:

1. **Set-up, not timed**: ten accounts, each filled to 20,000 records (``--quick``: 2,000) by applyWrites
   calls of 200 creates, one client process per account, all at once. The host's verified ``getRepo`` of
   each account is digested (``digest_records``) to compare the mirror with.
2. **Backfill** (``--reps`` runs, each into a fresh data directory): ``atrepo sync --did D1 ... --did D10``
   from process launch until ``/status.json`` says all ten repositories are active. Then the consumer is
   stopped and the mirror is opened: every ``records_digest`` must equal the host's, or the run fails.
   Records/s are for the whole pipeline (start-up, DID resolution, getRepo, verification, SQLite writes);
   CPU seconds and peak RSS (VmHWM) are the sync process's. With ``--postgres`` each rep also backfills
   into PostgreSQL (``atrepo sync --database``, a fresh database per run; the order of the two backends
   alternates by rep), the mirror checked the same way: the figure for "consumer mirror ingest" on
   both backends. ``auto`` starts a throwaway cluster with ``.ci/postgres`` (stopped at the end); a URL
   names a server the bench may create databases on. The PostgreSQL server's own CPU is reported too
   (the postgres processes' utime+stime over the run, from /proc).
3. **Live**: the consumer is restarted on the last backfill's data; a few warm-up commits give it a stored
   cursor (without one a restart fetches every repository again); it is stopped, its data copied (the
   catch-up's start) and started again, which must not fetch anything (VmHWM then covers start-up and
   the live phase only). Per run, four writer processes make ``--commits`` single-op createRecord
   commits spread over the ten accounts as fast as the host takes them; the time runs from the first
   write until the consumer's cursor reaches the host's head seq. Events/s, the sync process's CPU per
   event, and the host's own write rate (the bound: the consumer cannot mirror faster than the host
   commits). The mirror's digests are checked against the host's again at the end.
4. **Catch-up**: a consumer on a copy of that snapshot resumes from its stored cursor and replays the
   host's log (every live commit) up to the head: events/s from launch, not bounded by the writers.
   CPU/event includes the process start-up (reported apart); the mirror's digests are checked.

Profile (``--profile OUT``): one more catch-up from the snapshot, untimed, with ``py-spy record -f raw``
(``--py-spy`` path) attached to the consumer; its raw stacks are written to ``OUT`` and summarized (self
and inclusive share by function, as ``bench.relay_bench`` does).

Every figure is the median over ``--reps`` runs. There is no peer consumer installable here: the
reference tools for this job (indigo's Tap, Jetstream) are Go programs. Everything started is stopped and
the data is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import ServerProcess, proc_cpu_seconds, proc_status_kib, proc_table

ROOT = Path(__file__).resolve().parents[1]
ATREPO = Path(sys.executable).parent / "atrepo"
WRITERS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _log(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _worker(spec: dict[str, Any]) -> subprocess.Popen[str]:
    """A ``bench.host_bench`` client worker (accounts, apply, write_commits) in its own process."""
    cmd = [sys.executable, "-m", "bench.host_bench", "--worker", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _result(proc: subprocess.Popen[str], timeout: float = 3600) -> Any:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


class Proc(ServerProcess):
    """A server command in its own process group, stopped with SIGTERM (the ``atrepo`` entry point)."""

    def __init__(self, cmd: list[str], log: Path, health: str) -> None:
        self.cmd, self.log, self.health = cmd, log, health
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_launch = 0.0

    def start(self, wait: bool = True) -> None:
        with open(self.log, "ab") as log:
            self.t_launch = time.monotonic()
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log, start_new_session=True)
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> float:
        """Seconds from launch until ``health`` answers 200."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[1]} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.health, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - self.t_launch
            time.sleep(0.05)
        raise RuntimeError(f"{self.cmd[1]} did not become healthy: {self.log.read_text()[-2000:]}")


def start_host(tmp: Path) -> tuple[Proc, str, str]:
    """``atrepo serve`` with its own PLC directory; (process, host URL, PLC URL)."""
    port, plc_port = _free_port(), _free_port()
    cmd = [str(ATREPO), "serve", "--data", str(tmp / "host"), "--port", str(port)]
    cmd += ["--plc-port", str(plc_port), "--no-rate-limits"]
    url = f"http://127.0.0.1:{port}"
    host = Proc(cmd, tmp / "serve.log", f"{url}/xrpc/_health")
    host.start()
    return host, url, f"http://127.0.0.1:{plc_port}"


def sync_proc(
    tmp: Path,
    data: Path,
    host_url: str,
    plc_url: str,
    dids: list[str],
    fetchers: int,
    database: str | None = None,
) -> Proc:
    port = _free_port()
    cmd = [str(ATREPO), "sync", "--upstream", host_url, "--plc", plc_url, "--data", str(data)]
    cmd += ["--port", str(port), "--fetchers", str(fetchers)]
    if database is not None:
        cmd += ["--database", database]
    for did in dids:
        cmd += ["--did", did]
    return Proc(cmd, tmp / "sync.log", f"http://127.0.0.1:{port}/status.json")


def host_digest(url: str, did: str) -> tuple[str, int]:
    """The digest of ``did``'s repository as the host's getRepo serves it (verified), and its record count."""
    from atrepo.core.verify import verify_repo_car
    from atrepo.store.mirror import digest_records

    with urllib.request.urlopen(f"{url}/xrpc/com.atproto.sync.getRepo?did={did}", timeout=120) as r:
        car = r.read()
    entries = []
    for key, cid in verify_repo_car(io.BytesIO(car), did=did):
        collection, rkey = key.split("/", 1)
        entries.append((collection, rkey, cid))
    return digest_records(entries), len(entries)


def check_mirror(data: Path, want: dict[str, str], database: str | None = None) -> int:
    """Open the stopped consumer's mirror; every digest must equal the host's. The records stored."""
    from atrepo.store.mirror import open_mirror

    with open_mirror(database or data) as store:
        for did, digest in want.items():
            repo = store.get_repo(did)
            got = store.records_digest(did)
            if repo is None or repo.state != "active" or got != digest:
                state = repo.state if repo else None
                raise RuntimeError(f"mirror of {did} differs from the host ({state}, {got} != {digest})")
        return int(store.stats().get("records", 0))


def _head_seq(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("atrepo_host_event_head_seq"):
                return int(float(line.split()[-1]))
    raise RuntimeError("no atrepo_host_event_head_seq in /metrics")


class Postgres:
    """The server ``--postgres`` names (or a throwaway cluster): a fresh database per run, its CPU use."""

    def __init__(self, spec: str, tmp: Path) -> None:
        self.dir: Path | None = None
        if spec == "auto":
            # not under ``tmp``: the server runs as another user (as root) and must reach its directory
            self.dir = Path(tempfile.gettempdir()) / f"atrepo-bench-pg-{os.getpid()}"
            script = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
            out = subprocess.run(
                [str(script), "start", str(self.dir)], check=False, capture_output=True, text=True
            )
            if out.returncode != 0:
                raise RuntimeError(f".ci/postgres start failed: {out.stderr.strip()}")
            self.admin = out.stdout.strip()
        else:
            self.admin = spec
        self.count = 0

    def new_database(self) -> str:
        import psycopg

        self.count += 1
        name = f"syncbench_{os.getpid()}_{self.count}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return self.admin.rpartition("/")[0] + "/" + name

    def drop(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {url.rpartition('/')[2]} WITH (FORCE)")

    @staticmethod
    def cpu_seconds() -> float:
        """CPU of every ``postgres`` process on the machine (the bench's cluster when ``auto``), reaped
        backends included (in the postmaster's child time)."""
        return sum(row.cpu_s for row in proc_table().values() if row.name.startswith("postgres"))

    def stop(self) -> None:
        if self.dir is not None:
            script = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
            subprocess.run([str(script), "stop", str(self.dir)], check=False, capture_output=True)
            self.dir = None


def backfill_run(
    tmp: Path,
    data: Path,
    host_url: str,
    plc_url: str,
    want: dict[str, str],
    fetchers: int,
    timeout: float,
    database: str | None = None,
) -> dict[str, Any]:
    pg_cpu0 = Postgres.cpu_seconds() if database else 0.0
    sync = sync_proc(tmp, data, host_url, plc_url, list(want), fetchers, database)
    sync.start(wait=False)
    try:
        t_status = sync.wait_healthy()
        deadline = time.monotonic() + timeout
        while True:
            status = _get_json(sync.health)
            if status["repos"]["active"] == len(want):
                elapsed = time.monotonic() - sync.t_launch
                break
            if status["repos"]["error"] or time.monotonic() > deadline:
                raise RuntimeError(f"backfill did not complete: {status}")
            time.sleep(0.05)
        cpu = proc_cpu_seconds(sync.pid)
        hwm = proc_status_kib(sync.pid, "VmHWM") / 1024
        pg_cpu = Postgres.cpu_seconds() - pg_cpu0 if database else 0.0
    finally:
        sync.stop()
    records = check_mirror(data, want, database)
    return {
        "server_cpu_s": pg_cpu,
        "seconds": elapsed,
        "status_up_s": t_status,
        "records": records,
        "rate": records / elapsed,
        "cpu_s": cpu,
        "records_per_cpu_s": records / cpu,
        "vmhwm_mib": hwm,
    }


def live_run(host_url: str, sync: Proc, accounts: list[dict[str, str]], commits: int) -> dict[str, Any]:
    head0 = _head_seq(host_url)
    cpu0 = proc_cpu_seconds(sync.pid)
    n = min(WRITERS, len(accounts))
    groups = [accounts[i::n] for i in range(n)]
    per = [commits // n + (1 if i < commits % n else 0) for i in range(n)]
    writers = [
        _worker({"kind": "write_commits", "url": host_url, "accounts": g, "commits": n})
        for g, n in zip(groups, per, strict=True)
    ]
    target: int | None = None
    deadline = time.monotonic() + 600
    while True:
        if target is None and all(w.poll() is not None for w in writers):
            target = _head_seq(host_url)
        cursor = _get_json(sync.health)["cursor"] or 0
        if target is not None and cursor >= target:
            t_done = time.monotonic()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the mirror did not catch up: cursor {cursor}, target {target}")
        time.sleep(0.1)  # a poll costs the consumer CPU too: keep it small next to the events
    cpu = proc_cpu_seconds(sync.pid) - cpu0
    results = [_result(w) for w in writers]
    t_start = min(r["t_start"] for r in results)
    t_end = max(r["t_end"] for r in results)
    events = target - head0
    return {
        "events": events,
        "seconds": t_done - t_start,
        "rate": events / (t_done - t_start),
        "lag_after_last_write_s": t_done - t_end,
        "cpu_us_per_event": 1e6 * cpu / events,
        "host_write_rate": commits / (t_end - t_start),
    }


def stored_cursor(data: Path, source: str) -> int:
    """The cursor a stopped consumer's mirror holds for ``source``."""
    from atrepo.store.mirror import open_mirror

    with open_mirror(data) as store:
        cursor = store.get_cursor(source)
    if cursor is None:
        raise RuntimeError(f"{data}: no stored cursor for {source}")
    return cursor


def catchup_run(
    tmp: Path, data: Path, host_url: str, plc_url: str, dids: list[str], fetchers: int
) -> dict[str, Any]:
    """A consumer resuming from a stored cursor replays the host's log to the head: not bounded by writes."""
    head = _head_seq(host_url)
    start = stored_cursor(data, host_url)
    sync = sync_proc(tmp, data, host_url, plc_url, dids, fetchers)
    sync.start(wait=False)
    try:
        sync.wait_healthy()
        startup_cpu = proc_cpu_seconds(sync.pid)  # imports and opening the mirror, mostly
        deadline = time.monotonic() + 600
        while True:
            status = _get_json(sync.health)
            if (status["cursor"] or 0) >= head:
                elapsed = time.monotonic() - sync.t_launch
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"catch-up did not reach seq {head}: {status}")
            time.sleep(0.1)
        if status["repos"]["active"] != len(dids):
            raise RuntimeError(f"catch-up left repositories not active: {status}")
        cpu = proc_cpu_seconds(sync.pid)
        hwm = proc_status_kib(sync.pid, "VmHWM") / 1024
    finally:
        sync.stop()
    events = head - start
    return {
        "events": events,
        "seconds": elapsed,
        "rate": events / elapsed,
        "cpu_s": cpu,
        "cpu_us_per_event": 1e6 * cpu / events,
        "startup_cpu_s": startup_cpu,
        "vmhwm_mib": hwm,
    }


def profile_catchup(
    args: argparse.Namespace, tmp: Path, data: Path, host_url: str, plc_url: str, dids: list[str]
) -> dict[str, Any]:
    """A catch-up like :func:`catchup_run` with py-spy attached to the consumer; the profile's summary."""
    from bench.relay_bench import summarize_raw

    head = _head_seq(host_url)
    sync = sync_proc(tmp, data, host_url, plc_url, dids, args.fetchers)
    sync.start(wait=False)
    spy: subprocess.Popen[bytes] | None = None
    try:
        sync.wait_healthy()
        cmd = [args.py_spy, "record", "--pid", str(sync.pid), "-f", "raw", "-o", args.profile, "--threads"]
        cmd += ["--rate", "200", "--nonblocking"] + (["--gil"] if args.profile_gil else [])
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "py-spy.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 600
        while (_get_json(sync.health)["cursor"] or 0) < head:
            if time.monotonic() > deadline:
                raise RuntimeError("the profiled catch-up did not reach the head")
            time.sleep(0.1)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
        sync.stop()
    out = Path(args.profile)
    if not out.exists():
        return {"error": (tmp / "py-spy.log").read_text()[-1000:]}
    return summarize_raw(out)


def resume_sync(tmp: Path, data: Path, host_url: str, plc_url: str, dids: list[str], fetchers: int) -> Proc:
    """A consumer on existing data, once every repository is active again."""
    sync = sync_proc(tmp, data, host_url, plc_url, dids, fetchers)
    sync.start()
    deadline = time.monotonic() + 120
    while _get_json(sync.health)["repos"]["active"] != len(dids):
        if time.monotonic() > deadline:
            sync.stop()
            raise RuntimeError("the restarted consumer did not resume with every repository active")
        time.sleep(0.05)
    return sync


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quiet
    out: dict[str, Any] = {"repos": args.repos, "records_per_repo": args.records, "reps": args.reps}
    with tempfile.TemporaryDirectory(prefix="atrepo-syncbench-") as tmp_name:
        tmp = Path(tmp_name)
        host, host_url, plc_url = start_host(tmp)
        sync: Proc | None = None
        pg = Postgres(args.postgres, tmp) if args.postgres else None
        try:
            _log(q, f"atrepo serve pid {host.pid} at {host_url}, PLC {plc_url}; creating accounts")
            accounts = _result(
                _worker({"kind": "accounts", "url": host_url, "n": args.repos, "prefix": "sb"})
            )
            batch = 200
            calls = -(-args.records // batch)
            t0 = time.monotonic()
            fill = [
                _worker(
                    {
                        "kind": "apply",
                        "url": host_url,
                        "account": a,
                        "calls": calls,
                        "batch": batch,
                        "segment": calls,
                    }
                )
                for a in accounts
            ]
            filled = sum(_result(p)["records"] for p in fill)
            fill_s = time.monotonic() - t0
            _log(q, f"filled {filled:,} records in {fill_s:.1f} s ({filled / fill_s:,.0f} rec/s); digesting")
            want: dict[str, str] = {}
            for a in accounts:
                digest, n = host_digest(host_url, a["did"])
                if n != calls * batch:
                    raise RuntimeError(f"{a['did']} holds {n} records, not {calls * batch}")
                want[a["did"]] = digest
            out["setup"] = {"records": filled, "seconds": fill_s, "rate": filled / fill_s}

            runs = []
            pg_runs: list[dict[str, Any]] = []
            data = tmp / "sync-0"
            for rep in range(args.reps):
                order = ["sqlite", "postgresql"] if pg is not None else ["sqlite"]
                if rep % 2:
                    order.reverse()
                for backend in order:
                    if backend == "postgresql":
                        assert pg is not None
                        url = pg.new_database()
                        pg_data = tmp / f"sync-pg-{rep}"
                        run = backfill_run(
                            tmp, pg_data, host_url, plc_url, want, args.fetchers, args.timeout, url
                        )
                        pg.drop(url)
                        shutil.rmtree(pg_data, ignore_errors=True)
                        pg_runs.append(run)
                    else:
                        data = tmp / f"sync-{rep}"
                        run = backfill_run(tmp, data, host_url, plc_url, want, args.fetchers, args.timeout)
                        runs.append(run)
                        if rep + 1 < args.reps:
                            shutil.rmtree(data)
                    _log(
                        q,
                        f"backfill {rep + 1}/{args.reps} ({backend}): {run['records']:,} records in "
                        f"{run['seconds']:.2f} s ({run['rate']:,.0f} rec/s), CPU {run['cpu_s']:.1f} s, "
                        f"VmHWM {run['vmhwm_mib']:.0f} MiB"
                        + (f", server CPU {run['server_cpu_s']:.1f} s" if backend == "postgresql" else ""),
                    )
            if pg_runs:
                out["backfill_postgresql"] = {
                    "runs": pg_runs,
                    **{
                        k: _med([r[k] for r in pg_runs])
                        for k in (
                            "seconds",
                            "rate",
                            "cpu_s",
                            "records_per_cpu_s",
                            "vmhwm_mib",
                            "server_cpu_s",
                        )
                    },
                    "records": pg_runs[0]["records"],
                    "rate_vs_sqlite": _med(
                        [p["rate"] / s["rate"] for p, s in zip(pg_runs, runs, strict=True)]
                    ),
                }
            out["backfill"] = {
                "runs": runs,
                "fetchers": args.fetchers,
                **{
                    k: _med([r[k] for r in runs])
                    for k in ("seconds", "rate", "cpu_s", "records_per_cpu_s", "vmhwm_mib", "status_up_s")
                },
                "records": runs[0]["records"],
            }

            # A consumer stores a cursor once it has seen an event, and one restarted without a cursor
            # fetches every repository again: so a few warm-up commits first, then the snapshot (the
            # catch-up's starting point), then the restart the live phase measures.
            _log(q, "live: warm-up commits, then restarting the consumer on the last backfill's data")
            sync = resume_sync(tmp, data, host_url, plc_url, list(want), args.fetchers)
            live_run(host_url, sync, accounts, 4 * WRITERS)
            sync.stop()
            snapshot = tmp / "snapshot"
            shutil.copytree(data, snapshot)
            sync = resume_sync(tmp, data, host_url, plc_url, list(want), args.fetchers)
            counts = _get_json(sync.health)["counts"]
            if counts.get("backfills", 0) or counts.get("resyncs", 0):
                raise RuntimeError(f"the restarted consumer fetched repositories again: {counts}")
            live = []
            for rep in range(args.reps):
                run = live_run(host_url, sync, accounts, args.commits)
                _log(
                    q,
                    f"live {rep + 1}/{args.reps}: {run['events']} events in {run['seconds']:.2f} s "
                    f"({run['rate']:,.0f} ev/s; host wrote {run['host_write_rate']:,.0f}/s), "
                    f"{run['cpu_us_per_event']:.0f} us CPU/event",
                )
                live.append(run)
            hwm = proc_status_kib(sync.pid, "VmHWM") / 1024
            sync.stop()
            for did in want:
                want[did] = host_digest(host_url, did)[0]
            records = check_mirror(data, want)
            shutil.rmtree(data)
            catchup = []
            for rep in range(args.reps):
                copy = tmp / f"catchup-{rep}"
                shutil.copytree(snapshot, copy)
                run = catchup_run(tmp, copy, host_url, plc_url, list(want), args.fetchers)
                check_mirror(copy, want)
                shutil.rmtree(copy)
                _log(
                    q,
                    f"catch-up {rep + 1}/{args.reps}: {run['events']} events in {run['seconds']:.2f} s "
                    f"({run['rate']:,.0f} ev/s), {run['cpu_us_per_event']:.0f} us CPU/event, "
                    f"VmHWM {run['vmhwm_mib']:.0f} MiB",
                )
                catchup.append(run)
            if args.profile:
                copy = tmp / "catchup-profile"
                shutil.copytree(snapshot, copy)
                out["profile"] = profile_catchup(args, tmp, copy, host_url, plc_url, list(want))
                _log(q, f"profile: {out['profile'].get('samples', 0)} samples into {args.profile}")
            out["catchup"] = {
                "runs": catchup,
                **{
                    k: _med([r[k] for r in catchup])
                    for k in (
                        "events",
                        "seconds",
                        "rate",
                        "cpu_s",
                        "cpu_us_per_event",
                        "startup_cpu_s",
                        "vmhwm_mib",
                    )
                },
            }
            out["live"] = {
                "runs": live,
                "writers": WRITERS,
                "commits": args.commits,
                **{
                    k: _med([r[k] for r in live])
                    for k in (
                        "rate",
                        "seconds",
                        "cpu_us_per_event",
                        "host_write_rate",
                        "lag_after_last_write_s",
                    )
                },
                "vmhwm_mib": hwm,
                "mirror_records_after": records,
            }
        finally:
            if sync is not None:
                sync.stop()
            host.stop()
            if pg is not None:
                pg.stop()
    out["load"] = os.getloadavg()[0]
    return out


def render(r: dict[str, Any]) -> str:
    b, lv, c = r["backfill"], r["live"], r["catchup"]
    lag_ms = lv["lag_after_last_write_s"] * 1e3
    return "\n".join(
        [
            f"atrepo sync benchmark: {r['repos']} repos x {r['records_per_repo']:,} records, "
            f"median of {r['reps']} runs (load {r['load']:.1f})",
            f"set-up (not timed): applyWrites fill {r['setup']['rate']:,.0f} rec/s",
            f"backfill, {b['fetchers']} fetchers: {b['records']:,} records in {b['seconds']:.2f} s = "
            f"{b['rate']:,.0f} records/s",
            f"  (launch to all active; status page up after {b['status_up_s']:.2f} s)",
            f"  sync process CPU {b['cpu_s']:.1f} s ({b['records_per_cpu_s']:,.0f} records/CPU-s), "
            f"peak RSS (VmHWM) {b['vmhwm_mib']:.0f} MiB; "
            "every mirror digest equal to the host's",
            f"live, {lv['writers']} writers x {lv['commits']:,} single-op commits: "
            f"{lv['rate']:,.0f} events/s into the mirror",
            f"  (last event mirrored {lag_ms:.0f} ms after the last write)",
            f"  host's own write rate (the bound) {lv['host_write_rate']:,.0f} commits/s; "
            f"sync CPU {lv['cpu_us_per_event']:.0f} us/event",
            f"  peak RSS (VmHWM, restart + live) {lv['vmhwm_mib']:.0f} MiB",
            f"catch-up from a stored cursor ({c['events']:,.0f} events, launch to head): "
            f"{c['rate']:,.0f} events/s, sync CPU {c['cpu_us_per_event']:.0f} us/event "
            f"(start-up {c['startup_cpu_s']:.1f} CPU-s included), "
            f"VmHWM {c['vmhwm_mib']:.0f} MiB",
        ]
        + (
            [
                f"backfill into PostgreSQL: {p['rate']:,.0f} records/s "
                f"({p['rate_vs_sqlite']:.2f}x SQLite in the same reps), sync CPU {p['cpu_s']:.1f} s, "
                f"PostgreSQL server CPU {p['server_cpu_s']:.1f} s, VmHWM {p['vmhwm_mib']:.0f} MiB; "
                "every mirror digest equal to the host's"
            ]
            if (p := r.get("backfill_postgresql"))
            else []
        )
        + _render_profile(r.get("profile"))
    )


def _render_profile(prof: dict[str, Any] | None) -> list[str]:
    if not prof:
        return []
    if "self" not in prof:
        return [f"profile failed: {prof.get('error')}"]
    ours = [(k, v) for k, v in prof["inclusive"] if "atrepo/" in k and "atrepo/cli/" not in k]
    lines = [
        f"py-spy profile of the consumer in a catch-up ({prof['samples']} non-idle samples):",
        "  threads: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["threads"].items()),
        "  top self (share of all samples):",
    ]
    lines += [f"    {share:6.1%}  {name}" for name, share in prof["self"][:20]]
    lines += ["  top inclusive, atrepo functions:"]
    lines += [f"    {share:6.1%}  {name}" for name, share in ours[:30]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run, 2,000-record repos")
    parser.add_argument("--reps", type=int, help="runs per figure (default 3)")
    parser.add_argument("--repos", type=int, default=10, help="repositories (accounts) mirrored (default 10)")
    parser.add_argument("--records", type=int, help="records per repository (default 20000)")
    parser.add_argument("--commits", type=int, help="commits written per live run (default 3000)")
    parser.add_argument("--fetchers", type=int, default=4, help="atrepo sync --fetchers (default 4)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a backfill may take")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--profile", help="also profile one catch-up with py-spy into this raw file")
    parser.add_argument(
        "--profile-gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)"
    )
    parser.add_argument("--py-spy", default="/tmp/spyenv/bin/py-spy", help="the py-spy executable")
    parser.add_argument(
        "--postgres",
        metavar="auto|URL",
        help="also backfill into PostgreSQL: auto starts a throwaway cluster (.ci/postgres), or a server URL",
    )
    args = parser.parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.records = args.records or (2000 if args.quick else 20_000)
    args.commits = args.commits or (300 if args.quick else 3000)
    payload = run_all(args)
    print(json.dumps(payload, indent=2) if args.json else render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
