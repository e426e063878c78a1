"""``atrepo sync``: keep a verified SQL mirror of chosen repositories until SIGTERM or SIGINT.

The sync package is imported inside the command, so other commands never pay
for it at start-up. On a terminal a one-line progress display (rich) shows
repositories backfilled, events/s and lag; elsewhere only log lines go to
stderr. ``--json`` prints one JSON line when listening and one when stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .signals import stop_on_signals

__all__ = ["sync"]


def sync(
    upstream: Annotated[str, typer.Option("--upstream", help="relay or host to follow (URL)")],
    data: Annotated[Path, typer.Option("--data", help="data directory (the mirror database)")] = Path(
        "sync-data"
    ),
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="ATREPO_DATABASE",
            help="keep the mirror in PostgreSQL (postgresql://user@host/db) instead of SQLite in --data",
        ),
    ] = None,
    plc: Annotated[str, typer.Option("--plc", help="PLC directory URL")] = "https://plc.directory",
    did: Annotated[list[str] | None, typer.Option("--did", help="an account to mirror, repeatable")] = None,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", help="mirror only this collection (NSID or prefix.*), repeatable"),
    ] = None,
    all_accounts: Annotated[bool, typer.Option("--all", help="mirror every account seen upstream")] = False,
    host: Annotated[str, typer.Option(help="address of the status/metrics server")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the status/metrics server (0: any free port)")] = 2480,
    fetchers: Annotated[int, typer.Option(help="repositories fetched at once")] = 4,
    event_retention: Annotated[
        float,
        typer.Option(
            "--event-retention",
            help="hours the Jetstream/record-stream event log keeps events (0: forever); records are kept",
        ),
    ] = 72.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="N worker processes sharing a PostgreSQL mirror (--database), accounts split by DID hash",
        ),
    ] = 1,
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            help="I/N: run as worker I of N (what --workers starts; for workers on separate machines)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout")] = False,
    log_format: Annotated[str, typer.Option(help="log lines as text or json")] = "text",
) -> None:
    """Follow a relay or host, verify every event, keep a SQL mirror of the chosen repos (docs/sync.md)."""
    from ..host import configure_logging
    from ..sync import SyncConfig

    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    if not did and not collection and not all_accounts:
        raise typer.BadParameter("name what to mirror: --did, --collection or --all", param_hint="--did")
    if fetchers < 1:
        raise typer.BadParameter("1 or more", param_hint="--fetchers")
    if not event_retention >= 0:
        raise typer.BadParameter("0 or more hours", param_hint="--event-retention")
    from ..store.dbfile import is_database_url

    if database is not None and not is_database_url(database):
        raise typer.BadParameter("a postgresql:// URL", param_hint="--database")
    if workers < 1:
        raise typer.BadParameter("1 or more", param_hint="--workers")
    if (workers > 1 or partition is not None) and database is None:
        raise typer.BadParameter(
            "several workers share a mirror only on PostgreSQL: give --database postgresql://...",
            param_hint="--workers" if workers > 1 else "--partition",
        )
    if workers > 1 and partition is not None:
        raise typer.BadParameter("--workers starts the partitions itself", param_hint="--partition")
    part = _parse_partition(partition) if partition is not None else None
    configure_logging(log_format)  # type: ignore[arg-type]
    config = SyncConfig(
        upstream=upstream,
        plc_url=plc,
        data_dir=data,
        database=database,
        dids=tuple(did or ()),
        collections=tuple(collection or ()),
        all_accounts=all_accounts,
        host=host,
        port=port,
        fetch_concurrency=fetchers,
        event_retention_s=event_retention * 3600.0,
        partition=part,
    )
    if workers > 1:
        asyncio.run(_supervise(_child_args(sys.argv[1:]), workers, port, as_json))
        return
    asyncio.run(_run(config, as_json))


def _parse_partition(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise typer.BadParameter("I/N with 0 <= I < N, e.g. 0/4", param_hint="--partition")
    return int(index), int(count)


def _child_args(argv: list[str]) -> list[str]:
    """This command's arguments for a worker: without ``--workers``, ``--port`` and ``--json``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--port"):
            skip = "=" not in arg
            continue
        if name == "--json":
            continue
        out.append(arg)
    return out


async def _supervise(args: list[str], count: int, port: int, as_json: bool) -> None:
    """Run ``count`` workers (``--partition I/N``) until SIGTERM or SIGINT; restart any that dies.

    Each worker is a whole ``atrepo sync`` on its share of the accounts, with its own status page
    (``port + I``, or a free port each with ``--port 0``); a worker that exits unexpectedly (a crash,
    ``kill -9``) is started again after a second, resuming from its own cursor in the mirror.
    """
    import signal

    procs: dict[int, asyncio.subprocess.Process] = {}
    urls: dict[int, str] = {}

    async def spawn(index: int) -> None:
        cmd = [sys.executable, "-m", "atrepo", *args, "--partition", f"{index}/{count}", "--json"]
        cmd += ["--port", str(port + index if port else 0)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            code = await proc.wait()
            raise RuntimeError(f"worker {index}/{count} exited at start (code {code})")
        doc = json.loads(line)
        procs[index], urls[index] = proc, doc["listening"]

    def listing() -> list[dict[str, Any]]:
        return [
            {"partition": f"{i}/{count}", "listening": urls[i], "pid": procs[i].pid} for i in sorted(procs)
        ]

    try:
        for index in range(count):
            await spawn(index)
    except BaseException:
        for proc in procs.values():
            proc.kill()
        raise
    _emit(
        as_json,
        {"ok": True, "workers": listing()},
        "atrepo sync: "
        + ", ".join(f"worker {w['partition']} (pid {w['pid']}) on {w['listening']}" for w in listing()),
    )
    with stop_on_signals() as stop:
        while not stop.is_set():
            waits: dict[asyncio.Future[Any], int] = {
                asyncio.ensure_future(p.wait()): i for i, p in procs.items()
            }
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
            for task in [stopping, *waits]:
                if task not in done:
                    task.cancel()
            if stop.is_set():
                break
            for task in done:
                which = waits.get(task)
                if which is None:
                    continue
                print(
                    f"atrepo sync: worker {which}/{count} exited (code {task.result()}); restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                procs.pop(which, None)
                delay = 1.0
                while not stop.is_set():
                    await asyncio.sleep(delay)
                    try:
                        await spawn(which)
                        break
                    except (RuntimeError, TimeoutError, ValueError, KeyError, OSError) as exc:
                        print(f"atrepo sync: worker {which}/{count} did not start: {exc}", file=sys.stderr)
                        delay = min(30.0, delay * 2)
            if as_json:
                _emit(as_json, {"ok": True, "workers": listing()}, "")
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    _emit(as_json, {"ok": True, "stopped": True}, "atrepo sync: every worker stopped")


def _emit(as_json: bool, doc: dict[str, Any], text: str) -> None:
    print(json.dumps(doc) if as_json else text, flush=True)


async def _run(config: Any, as_json: bool) -> None:
    from ..core.errors import StoreInUse, StoreUnavailable
    from ..sync import start_sync

    try:
        running = await start_sync(config)
    except OSError as exc:
        print(f"error: cannot start sync on {config.host}:{config.port}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except (StoreInUse, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    from ..core.memory import tune_collector_for_server

    tune_collector_for_server()
    progress: asyncio.Task[None] | None = None
    try:
        with stop_on_signals() as stop:
            progress = asyncio.create_task(_progress(running, stop)) if sys.stderr.isatty() else None
            _emit(
                as_json,
                {
                    "ok": True,
                    "listening": running.url,
                    "cursor": running.engine.cursor,
                    "mirror": running.engine.store.location,
                },
                f"atrepo sync following {running.engine.source} into {running.engine.store.location}, "
                f"status on {running.url}",
            )
            await stop.wait()
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        await running.stop()
    _emit(
        as_json,
        {"ok": True, "stopped": True, "cursor": running.engine.cursor},
        f"atrepo sync stopped at cursor {running.engine.cursor}",
    )


async def _progress(running: Any, stop: asyncio.Event) -> None:
    """A one-line live display on stderr: repositories by state, events/s, lag."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def line(doc: dict[str, Any]) -> Text:
        repos = doc["repos"]
        return Text(
            f"repos {repos['active']}/{repos['total']} active, {repos['backfilling']} backfilling, "
            f"{repos['pending']} pending, {repos['desynchronized'] + repos['resyncing']} resyncing, "
            f"{repos['error']} error | {doc['eventsPerSecond']} ev/s | lag {doc['lag'] or 0} events, "
            f"{doc['lagSeconds'] or 0} s | "
            f"cursor {doc['cursor']}"
        )

    console = Console(stderr=True)
    with Live(line(await running.status()), console=console, refresh_per_second=2, transient=True) as live:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            live.update(line(await running.status()))
