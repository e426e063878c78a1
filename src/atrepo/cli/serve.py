"""``atrepo serve`` (the repository host) and ``atrepo account create``.

The host package is imported inside the commands, so other commands never pay
for it at start-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import AtrepoError
from .output import emit_json
from .signals import stop_on_signals

__all__ = ["account_app", "serve"]


def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on [2583]")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="data directory [./data]")] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="postgresql://... to keep the store there [SQLite in --data]"),
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="URL clients and DID documents use [http://HOST:PORT]")
    ] = None,
    plc: Annotated[
        str | None, typer.Option("--plc", help="PLC directory URL [run one in-process on --plc-port]")
    ] = None,
    plc_port: Annotated[int | None, typer.Option(help="port of the in-process PLC directory [2582]")] = None,
    admin_password: Annotated[str | None, typer.Option(help="admin password (HTTP Basic, admin:PW)")] = None,
    user_domain: Annotated[
        list[str] | None, typer.Option("--user-domain", help="handle suffix for accounts, repeatable [.test]")
    ] = None,
    relay: Annotated[
        list[str] | None, typer.Option("--relay", help="relay to notify with requestCrawl, repeatable")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML configuration file")] = None,
    log_format: Annotated[str | None, typer.Option(help="log lines as text or json [text]")] = None,
    appview_url: Annotated[
        str | None, typer.Option(help="AppView to proxy app.* calls to (with --appview-did) [none]")
    ] = None,
    appview_did: Annotated[str | None, typer.Option(help="service DID of the AppView (did:web:...)")] = None,
    proxy_allow_private: Annotated[
        bool | None,
        typer.Option("--proxy-allow-private", help="atproto-proxy may reach http:// and private hosts (dev)"),
    ] = None,
    rate_limits: Annotated[
        bool | None, typer.Option("--rate-limits/--no-rate-limits", help="the reference's rate limits [on]")
    ] = None,
    trust_proxy: Annotated[
        bool | None,
        typer.Option("--trust-proxy", help="key rate limits by X-Forwarded-For (behind a reverse proxy)"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="N host processes sharing the port and a PostgreSQL --database (docs/scaling.md)"),
    ] = 1,
    worker: Annotated[
        str | None, typer.Option(hidden=True, help="I/N: run as worker I of --workers N")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            help="host (everything), or fanout: serve only the firehose and sync reads of a --database [host]"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line on stdout when listening")] = False,
) -> None:
    """Run the repository host until SIGTERM or SIGINT.

    Settings come from these flags, then ATREPO_* environment variables, then
    the TOML file (--config or ATREPO_CONFIG); see docs/host.md.
    """
    if plc is not None and plc_port is not None:
        raise typer.BadParameter("give --plc URL or --plc-port N, not both", param_hint="--plc")
    from ..host import configure_logging, load_config

    flags: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data,
        "database": database,
        "public_url": public_url,
        "plc_url": plc,
        "plc_port": plc_port,
        "admin_password": admin_password,
        "user_domains": tuple(user_domain) if user_domain else None,
        "relays": tuple(relay) if relay else None,
        "log_format": log_format,
        "appview_url": appview_url,
        "appview_did": appview_did,
        "proxy_allow_private": proxy_allow_private,
        "rate_limits": rate_limits,
        "trust_proxy": trust_proxy,
        "worker": worker,
        "role": role,
    }
    if workers < 1:
        raise typer.BadParameter("1 or more", param_hint="--workers")
    cfg = load_config(flags, config_file=config)
    configure_logging(cfg.log_format)
    if workers > 1:
        if worker is not None:
            raise typer.BadParameter("--worker is set by --workers, not with it", param_hint="--worker")
        if cfg.database is None:
            raise typer.BadParameter(
                "several host processes share one store only on PostgreSQL: give --database postgresql://...",
                param_hint="--workers",
            )
        asyncio.run(_supervise(cfg, workers, as_json))
        return
    asyncio.run(_serve(cfg, as_json))


async def _supervise(cfg: Any, count: int, as_json: bool) -> None:
    """``--workers N``: N host processes on one port and one database, supervised from here.

    The secrets are made here, once, before any worker starts (N workers
    generating a JWT secret at once would each keep a different one); the
    embedded PLC directory, when no --plc is given, runs in this process, so
    that it is one directory for all workers.
    """
    import socket

    from ..host.app import start_plc
    from ..host.config import load_secrets
    from .supervise import child_args, supervise

    load_secrets(cfg)
    port = cfg.port
    if port == 0:  # every worker must bind the same port: choose it here
        with socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET) as probe:
            probe.bind((cfg.host, 0))
            port = probe.getsockname()[1]
    plc_runner = None
    plc_url = cfg.plc_url
    if not plc_url and cfg.role == "host":  # fan-out processes create no identities
        plc_runner, plc_url = await start_plc(cfg)
    try:
        args = child_args(
            sys.argv[1:], drop=("--workers", "--port", "--plc", "--plc-port"), flags=("--json",)
        )

        def command(index: int) -> list[str]:
            plc = ["--plc", plc_url] if plc_url else []
            return [*args, "--worker", f"{index}/{count}", "--port", str(port), *plc, "--json"]

        await supervise(command, count, label="atrepo serve", name=lambda i: f"{i}/{count}", as_json=as_json)
    finally:
        if plc_runner is not None:
            await plc_runner.cleanup()


async def _serve(cfg: Any, as_json: bool = False) -> None:
    from ..host import start_host

    try:
        running = await start_host(cfg)
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"error: cannot start the host on {cfg.host}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    try:
        with stop_on_signals() as stop:
            effective = cfg.describe(bound_port=int(running.url.rsplit(":", 1)[1]), plc_url=running.plc_url)
            print("atrepo host configuration:", file=sys.stderr)
            for name, value in effective.items():
                print(f"  {name} = {json.dumps(value)}", file=sys.stderr)
            if as_json:
                emit_json(
                    {
                        "ok": True,
                        "listening": running.url,
                        "plc": running.plc_url,
                        "worker": cfg.worker,
                        "role": cfg.role,
                    }
                )
            else:
                what = "host" if cfg.role == "host" else "firehose fan-out"
                print(f"atrepo {what} listening on {running.url}", flush=True)
            await stop.wait()
    finally:
        await running.stop()


account_app = typer.Typer(help="Accounts on a repository host.", no_args_is_help=True, rich_markup_mode=None)


@account_app.command("create")
def account_create(
    handle: Annotated[str, typer.Option(help="handle under one of the host's user domains (alice.test)")],
    password: Annotated[str, typer.Option(help="the account's password")],
    email: Annotated[str | None, typer.Option(help="e-mail address (optional)")] = None,
    url: Annotated[str, typer.Option(help="the host's URL")] = "http://127.0.0.1:2583",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (with the tokens)")] = False,
) -> None:
    """Create an account on a running host (com.atproto.server.createAccount)."""
    body: dict[str, Any] = {"handle": handle, "password": password}
    if email is not None:
        body["email"] = email
    out = asyncio.run(_create_account(url, body))
    if as_json:
        emit_json({"ok": True, **{k: out[k] for k in ("did", "handle", "accessJwt", "refreshJwt")}})
    else:
        print(f"created {out['handle']} {out['did']}")


async def _create_account(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    from ..xrpc import XrpcClient

    try:
        async with XrpcClient(url, timeout=30.0) as client:
            out = await client.procedure("com.atproto.server.createAccount", input=body)
    except aiohttp.ClientError as exc:
        raise AtrepoError(f"cannot reach the host at {url}: {exc}") from None
    if not isinstance(out, dict):
        raise AtrepoError("the host answered createAccount without a JSON object")
    return out
