"""``atrepo sync``: keep a verified SQL mirror of chosen repositories until SIGTERM or SIGINT.

The sync package is imported inside the command, so other commands never pay
for it at start-up. On a terminal a one-line progress display (rich) shows
repositories backfilled, events/s and lag; elsewhere only log lines go to
stderr. ``--json`` prints one JSON line when listening and one when stopped.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .signals import stop_on_signals
from .supervise import emit

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
        from .supervise import child_args, supervise

        args = child_args(sys.argv[1:])

        def command(index: int) -> list[str]:
            # Each worker its own status page: port + I, or a free one with --port 0.
            return [
                *args,
                "--partition",
                f"{index}/{workers}",
                "--json",
                "--port",
                str(port + index if port else 0),
            ]

        asyncio.run(
            supervise(
                command,
                workers,
                label="atrepo sync",
                name=lambda i: f"{i}/{workers}",
                as_json=as_json,
                key="partition",
            )
        )
        return
    asyncio.run(_run(config, as_json))


def _parse_partition(text: str) -> tuple[int, int]:
    from ..core.partition import parse_partition

    try:
        return parse_partition(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}, e.g. 0/4", param_hint="--partition") from None


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
            emit(
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
    emit(
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
