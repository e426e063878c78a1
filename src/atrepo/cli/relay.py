"""``atrepo relay``: run a relay (or one of its role processes) until SIGTERM or SIGINT.

The relay package is imported inside the command, so other commands never
pay for it at start-up.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .signals import stop_on_signals

__all__ = ["relay"]


def relay(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 2470,
    data: Annotated[Path, typer.Option("--data", help="data directory")] = Path("relay-data"),
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="ATREPO_DATABASE",
            help="keep the relay's store in PostgreSQL (postgresql://user@host/db), not SQLite in --data",
        ),
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="all: ingest and serve (one process); with a PostgreSQL --database, separate processes: "
            "ingest (the upstream hosts of one --partition), sequencer (seqs for what the ingest "
            "processes queued; serves subscribeRepos), fanout (serves subscribeRepos only)",
        ),
    ] = "all",
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            help="I/N: with --role ingest, take the upstream hosts whose name hashes to I of N",
        ),
    ] = None,
    plc: Annotated[str, typer.Option("--plc", help="PLC directory URL")] = "https://plc.directory",
    upstream: Annotated[
        list[str] | None,
        typer.Option("--upstream", help="host to subscribe to (URL; loopback allowed), repeatable"),
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(help="admin password (HTTP Basic admin:PW) [generated into DATA/admin-password]"),
    ] = None,
    lenient: Annotated[
        bool, typer.Option("--lenient", help="log chain breaks and relay the commit (as the reference relay)")
    ] = False,
    workers: Annotated[int, typer.Option(help="verification worker processes (0: in this process)")] = 0,
    retention_hours: Annotated[float, typer.Option(help="how far back subscribeRepos replays")] = 72.0,
    account_limit: Annotated[int, typer.Option(help="accounts a crawled host may bring at first")] = 100,
    new_hosts_per_day: Annotated[int, typer.Option(help="requestCrawl additions per 24 hours")] = 50,
    crawl_allow_private: Annotated[
        bool, typer.Option("--crawl-allow-private", help="requestCrawl may reach private addresses (dev)")
    ] = False,
    replay: Annotated[
        bool,
        typer.Option("--replay", help="read new --upstream hosts from cursor 0 instead of seeding them"),
    ] = False,
    log_format: Annotated[str, typer.Option(help="log lines as text or json")] = "text",
) -> None:
    """Run a relay: subscribe to hosts, verify every event, serve one merged firehose (docs/relay.md)."""
    from ..host import configure_logging
    from ..relay import RelayConfig
    from ..relay.config import ROLES, SHARED_ROLES
    from ..store.dbfile import is_database_url

    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    if workers < 0:
        raise typer.BadParameter("0 or more", param_hint="--workers")
    if database is not None and not is_database_url(database):
        raise typer.BadParameter("a postgresql:// URL", param_hint="--database")
    if role not in ROLES:
        raise typer.BadParameter(" or ".join(ROLES), param_hint="--role")
    if role in SHARED_ROLES and database is None:
        raise typer.BadParameter(
            f"a relay's {role} process shares its PostgreSQL store with the others: "
            "give --database postgresql://...",
            param_hint="--role",
        )
    if upstream and role in ("sequencer", "fanout"):
        raise typer.BadParameter(
            f"a {role} process subscribes to no host: give --upstream to the ingest processes",
            param_hint="--upstream",
        )
    parts: tuple[int, int] | None = None
    if partition is not None:
        if role != "ingest":
            raise typer.BadParameter("only with --role ingest", param_hint="--partition")
        parts = _partition(partition)
    elif role == "ingest":
        raise typer.BadParameter("an ingest process needs its --partition I/N", param_hint="--partition")
    configure_logging(log_format)  # type: ignore[arg-type]
    config = RelayConfig(
        host=host,
        port=port,
        data_dir=data,
        plc_url=plc,
        upstreams=tuple(upstream or ()),
        admin_password=admin_password,
        lenient=lenient,
        workers=workers,
        retention_hours=retention_hours,
        default_account_limit=account_limit,
        new_hosts_per_day=new_hosts_per_day,
        crawl_allow_private=crawl_allow_private,
        replay_upstreams=replay,
        log_format=log_format,
        database=database,
        role=role,
        partition=parts,
    )
    asyncio.run(_run(config))


def _partition(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), with 0 <= I < N; else a usage error."""
    from ..core.partition import parse_partition

    try:
        return parse_partition(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--partition") from None


async def _run(config: object) -> None:
    from ..core.errors import StoreInUse, StoreUnavailable
    from ..relay import RelayConfig, start_fanout, start_relay

    assert isinstance(config, RelayConfig)
    running: Any
    try:
        shared = config.role in ("fanout", "sequencer")
        running = await (start_fanout(config) if shared else start_relay(config))
    except OSError as exc:
        print(f"error: cannot start the relay on {config.host}:{config.port}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except (StoreInUse, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    from ..core.memory import tune_collector_for_server

    tune_collector_for_server()
    try:
        with stop_on_signals() as stop:
            if config.role in ("fanout", "sequencer"):
                what = "fan-out" if config.role == "fanout" else "sequencer"
                line = f"atrepo relay ({what}) listening on {running.url}, following {running.store.location}"
            else:
                what = " (ingest)" if config.role == "ingest" else ""
                line = (
                    f"atrepo relay{what} listening on {running.url}, store {running.context.store.location}"
                )
            print(line, flush=True)
            await stop.wait()
    finally:
        await running.stop()
