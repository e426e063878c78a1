"""``atrepo did | handle | plc``: resolve identities, run and use a PLC directory.

Three Typer apps (``did_app``, ``handle_app``, ``plc_app``) registered by the
root command. Every command that a script would read has ``--json``. Key files
hold a private key in multibase text (``atrepo key generate --out FILE``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer

from atrepo.core.errors import InvalidKey
from atrepo.core.keys import PrivateKey, parse_did_key
from atrepo.identity import limits
from atrepo.identity.dns import Nameserver
from atrepo.identity.document import DIDDocument, pds_endpoint_problem
from atrepo.identity.handle import HandleMismatch, HandleResolver
from atrepo.identity.plc.client import fetch_verified_log, submit_operation
from atrepo.identity.plc.operations import (
    PLCState,
    Service,
    build_operation,
    build_tombstone,
    genesis_did,
    operation_cid,
)
from atrepo.identity.resolver import DEFAULT_PLC_URL, DIDResolver

__all__ = ["did_app", "handle_app", "plc_app"]

log = logging.getLogger("atrepo.cli.identity")

did_app = typer.Typer(
    help="Resolve DIDs (did:plc, did:web).", no_args_is_help=True, add_completion=False, rich_markup_mode=None
)
handle_app = typer.Typer(
    help="Resolve and verify handles.", no_args_is_help=True, add_completion=False, rich_markup_mode=None
)
plc_app = typer.Typer(
    help="Run a did:plc directory; create and update DIDs.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@did_app.callback()
def _did_group() -> None:
    """Resolve DIDs (did:plc, did:web)."""


@handle_app.callback()
def _handle_group() -> None:
    """Resolve and verify handles."""


@plc_app.callback()
def _plc_group() -> None:
    """Run a did:plc directory; create and update DIDs."""


PlcOption = Annotated[str, typer.Option("--plc", help="PLC directory base URL.", envvar="ATREPO_PLC_URL")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds allowed per lookup.")]
KeyOption = Annotated[Path, typer.Option("--key", help="Rotation key file (private multibase) that signs.")]
HandleOption = Annotated[str | None, typer.Option("--handle", help="Handle, written as at://<handle>.")]
PdsOption = Annotated[str | None, typer.Option("--pds", help="PDS endpoint URL (#atproto_pds).")]
SigningOption = Annotated[
    str | None, typer.Option("--signing-key", help="did:key (or key file) for #atproto; default: --key.")
]
RotationOption = Annotated[
    list[str] | None,
    typer.Option("--rotation-key", help="did:key or key file, repeatable, highest priority first."),
]

PDS_TYPE = "AtprotoPersonalDataServer"


def _print(value: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(value, indent=None, separators=(",", ":")))
    else:
        for line in lines:
            typer.echo(line)


def _configure_logging(level: int = logging.WARNING) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def read_key_file(path: Path) -> PrivateKey:
    """The private key in a key file: its first non-blank, non-comment line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read key file {path}: {exc.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return PrivateKey.from_multibase(line)
    raise InvalidKey(f"key file {path} holds no key")


def _did_key(value: str) -> str:
    """A did:key given directly, or the public did:key of a key file."""
    if value.startswith("did:key:"):
        parse_did_key(value)
        return value
    return read_key_file(Path(value)).public_key.did_key()


def _describe(ident: DIDDocument) -> list[str]:
    key = ident.signing_key.did_key() if ident.signing_key is not None else "(none: account is broken)"
    return [
        f"did:     {ident.did}",
        f"handle:  {ident.handle or '(none)'} (claimed)",
        f"key:     {key}",
        f"pds:     {ident.pds_endpoint or '(none: account is broken)'}",
    ]


# --------------------------------------------------------------------------
# did


@did_app.command("resolve")
def did_resolve(
    did: Annotated[str, typer.Argument(help="DID to resolve.")],
    plc: PlcOption = DEFAULT_PLC_URL,
    as_json: JsonOption = False,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
) -> None:
    """Fetch a DID document and show its signing key, PDS and claimed handle."""
    _configure_logging()

    async def run() -> DIDDocument:
        async with DIDResolver(plc_url=plc, timeout=timeout) as resolver:
            return await resolver.resolve(did)

    ident = asyncio.run(run())
    _print(ident.to_json(), as_json, _describe(ident))


# --------------------------------------------------------------------------
# handle


def _nameserver(text: str | None) -> Nameserver | None:
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise typer.BadParameter("--dns must be HOST:PORT")
    return (host.strip("[]"), int(port))


@handle_app.command("resolve")
def handle_resolve(
    handle: Annotated[str, typer.Argument(help="Handle to resolve.")],
    *,
    as_json: JsonOption = False,
    dns: Annotated[
        str | None, typer.Option("--dns", help="Nameserver HOST:PORT (default: resolv.conf).")
    ] = None,
    plc: PlcOption = DEFAULT_PLC_URL,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
    dev: Annotated[
        bool, typer.Option("--dev", help="Development mode: allow .test and --http-origin.")
    ] = False,
    http_origin: Annotated[
        str | None, typer.Option("--http-origin", help="Dev only: fetch well-known from this http origin.")
    ] = None,
) -> None:
    """Resolve a handle to a DID and check that the DID document claims it back."""
    _configure_logging()
    nameserver = _nameserver(dns)

    async def run() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            DIDResolver(plc_url=plc, session=session, timeout=timeout, dev=dev) as dids,
            HandleResolver(
                dids,
                session=session,
                nameserver=nameserver,
                timeout=timeout,
                dev=dev,
                http_origin=http_origin,
            ) as resolver,
        ):
            did = await resolver.resolve(handle)
            try:
                doc = await resolver.resolve_verified(handle)
            except HandleMismatch as exc:
                return {"handle": handle.lower(), "did": did, "verified": False, "reason": str(exc)}
            return {"handle": handle.lower(), "did": did, "verified": True, "identity": doc.to_json()}

    result = asyncio.run(run())
    lines = [f"handle:   {result['handle']}", f"did:      {result['did']}"]
    lines.append("verified: yes" if result["verified"] else f"verified: NO ({result['reason']})")
    _print(result, as_json, lines)


# --------------------------------------------------------------------------
# plc


@plc_app.command("serve")
def plc_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 2582,
    data: Annotated[
        Path | None, typer.Option("--data", help="Directory for the SQLite log (memory if unset).")
    ] = None,
) -> None:
    """Run a did:plc directory (GET /<did>, POST /<did>, /log/audit, /export...)."""
    from aiohttp import web

    from atrepo.identity.plc.server import create_app

    _configure_logging(logging.INFO)
    if data is None:
        log.warning("plc: no --data directory; the directory lives in memory and is lost on exit")
    log.info("plc: listening on http://%s:%d", host, port)
    web.run_app(create_app(data), host=host, port=port, print=None, access_log=None)


def _services(pds: str | None, current: dict[str, Service] | None = None) -> dict[str, Service]:
    services = dict(current or {})
    if pds is not None:
        problem = pds_endpoint_problem(pds)
        if problem is not None:
            raise typer.BadParameter(f"--pds {pds!r}: {problem}")
        services["atproto_pds"] = Service(PDS_TYPE, pds)
    return services


def _submit(plc: str, did: str, op: dict[str, Any], timeout: float) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            return await submit_operation(session, plc, did, op, timeout=timeout)

    return asyncio.run(run())


def _current(plc: str, did: str, timeout: float) -> tuple[PLCState | None, str]:
    async def run() -> tuple[PLCState | None, str]:
        async with aiohttp.ClientSession() as session:
            audit = await fetch_verified_log(session, plc, did, timeout=timeout)
        return audit.state, audit.active[-1].cid

    return asyncio.run(run())


def _report(did: str, op: dict[str, Any], reply: dict[str, Any], as_json: bool, verb: str) -> None:
    cid = operation_cid(op)
    log.info("plc: %s %s (op %s)", verb, did, cid)
    _print(
        {"did": did, "cid": cid, "createdAt": reply.get("createdAt"), "operation": op},
        as_json,
        [f"{verb} {did}", f"op cid: {cid}"],
    )


@plc_app.command("create")
def plc_create(
    *,
    key: KeyOption,
    plc: PlcOption = DEFAULT_PLC_URL,
    handle: HandleOption = None,
    pds: PdsOption = None,
    signing_key: SigningOption = None,
    rotation_key: RotationOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
) -> None:
    """Create a did:plc signed by --key and register it with the directory."""
    _configure_logging()
    signer = read_key_file(key)
    rotation = [_did_key(v) for v in rotation_key] if rotation_key else [signer.public_key.did_key()]
    if signer.public_key.did_key() not in rotation:
        raise typer.BadParameter("--key must be one of the rotation keys (it signs the genesis operation)")
    op = build_operation(
        signer,
        rotation_keys=rotation,
        verification_methods={
            "atproto": _did_key(signing_key) if signing_key else signer.public_key.did_key()
        },
        also_known_as=[f"at://{handle.lower()}"] if handle else [],
        services=_services(pds),
        prev=None,
    )
    did = genesis_did(op)
    reply = _submit(plc, did, op, timeout)
    _report(did, op, reply, as_json, "created")


@plc_app.command("update")
def plc_update(
    did: Annotated[str, typer.Argument(help="did:plc to update.")],
    *,
    key: KeyOption,
    plc: PlcOption = DEFAULT_PLC_URL,
    handle: HandleOption = None,
    pds: PdsOption = None,
    signing_key: SigningOption = None,
    rotation_key: RotationOption = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
) -> None:
    """Change a DID's handle, PDS, signing key or rotation keys (signed by --key).

    The directory's audit log is fetched and verified locally first; the new
    operation follows its current head.
    """
    _configure_logging()
    signer = read_key_file(key)
    state, head = _current(plc, did, timeout)
    if state is None:
        raise typer.BadParameter(f"{did} is tombstoned; nothing can follow a tombstone")
    if signer.public_key.did_key() not in state.rotation_keys:
        raise typer.BadParameter("--key is not one of the DID's current rotation keys")
    methods = dict(state.verification_methods)
    if signing_key:
        methods["atproto"] = _did_key(signing_key)
    aka = list(state.also_known_as)
    if handle:
        aka = [f"at://{handle.lower()}"] + [u for u in aka if not u.startswith("at://")]
    op = build_operation(
        signer,
        rotation_keys=[_did_key(v) for v in rotation_key] if rotation_key else list(state.rotation_keys),
        verification_methods=methods,
        also_known_as=aka,
        services=_services(pds, dict(state.services)),
        prev=head,
    )
    reply = _submit(plc, did, op, timeout)
    _report(did, op, reply, as_json, "updated")


@plc_app.command("tombstone")
def plc_tombstone(
    did: Annotated[str, typer.Argument(help="did:plc to deactivate.")],
    key: KeyOption,
    plc: PlcOption = DEFAULT_PLC_URL,
    as_json: JsonOption = False,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
) -> None:
    """Deactivate a DID (a higher-priority key can still undo it within 72 h)."""
    _configure_logging()
    signer = read_key_file(key)
    _state, head = _current(plc, did, timeout)
    op = build_tombstone(signer, head)
    reply = _submit(plc, did, op, timeout)
    _report(did, op, reply, as_json, "tombstoned")


@plc_app.command("verify")
def plc_verify(
    did: Annotated[str, typer.Argument(help="did:plc whose audit log to check.")],
    plc: PlcOption = DEFAULT_PLC_URL,
    as_json: JsonOption = False,
    timeout: TimeoutOption = limits.LOOKUP_TIMEOUT_S,
) -> None:
    """Fetch a DID's full audit log and verify every rule locally."""
    _configure_logging()

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            audit = await fetch_verified_log(session, plc, did, timeout=timeout)
        return {
            "did": audit.did,
            "ok": True,
            "operations": len(audit.entries),
            "nullified": sum(e.nullified for e in audit.entries),
            "tombstoned": audit.tombstoned,
            "data": audit.state.to_data() if audit.state is not None else None,
        }

    result = asyncio.run(run())
    lines = [
        f"{did}: audit log verified",
        f"operations: {result['operations']} ({result['nullified']} nullified)",
        f"tombstoned: {'yes' if result['tombstoned'] else 'no'}",
    ]
    _print(result, as_json, lines)
