"""``atrepo account ...``: accounts on a running host, over its HTTP API.

``create`` calls ``com.atproto.server.createAccount`` like any client. The
operator commands (``list``, ``info``, ``takedown``, ``reverse-takedown``,
``delete``, ``reset-password``, ``delete-token``) call the host's admin API
(``com.atproto.admin.*``) with HTTP Basic ``admin:<password>``, exactly as
goat does, so they work against any host the operator can reach, and never
open the host's database behind its back. The admin password comes from
``--admin-password``, else ``ATREPO_ADMIN_PASSWORD``, else the file the host
generated in its data directory (``--data``, default ``./data``).

Every command takes ``--json`` (one JSON object on stdout) and exits 0 on
success, 1 with one ``error: Name: message`` line (or ``{"ok": false, ...}``)
otherwise. The host package is not imported here: these commands only talk HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import AtrepoError
from .migrate import account_migrate
from .output import emit_json

__all__ = ["app"]

DEFAULT_URL = "http://127.0.0.1:2583"
#: The host's generated admin password file (atrepo.host.config.ADMIN_PASSWORD_FILENAME).
ADMIN_PASSWORD_FILE = "admin-password"
EMAIL_TOKEN_PATH = "/atrepo/admin/email-token"
REPO_REF = "com.atproto.admin.defs#repoRef"

app = typer.Typer(help="Accounts on a repository host.", no_args_is_help=True, rich_markup_mode=None)

UrlOpt = Annotated[str, typer.Option(help="the host's URL")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--admin-password", help="admin password [ATREPO_ADMIN_PASSWORD, or --data's file]"),
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="the host's data directory, to read its admin password [./data]")
]
SubjectArg = Annotated[str, typer.Argument(help="the account's DID or handle")]


def admin_password(given: str | None, data: Path | None) -> str:
    """The flag, the environment, or the host's generated file, in that order."""
    if given:
        return given
    env = os.environ.get("ATREPO_ADMIN_PASSWORD")
    if env:
        return env
    path = (data or Path("data")) / ADMIN_PASSWORD_FILE
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AtrepoError(
            f"no admin password: give --admin-password, set ATREPO_ADMIN_PASSWORD or --data DIR ({exc})"
        ) from None
    if not text:
        raise AtrepoError(f"no admin password: {path} is empty")
    return text


class _Admin:
    """An XRPC client of one host, with the admin's Basic credentials on every call."""

    def __init__(self, url: str, password: str | None) -> None:
        from ..xrpc import XrpcClient

        headers = {}
        if password is not None:
            basic = base64.b64encode(f"admin:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        self.url = url.rstrip("/")
        self.client = XrpcClient(url, headers=headers, timeout=30.0)

    async def __aenter__(self) -> _Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def query(self, nsid: str, params: dict[str, Any] | None = None) -> Any:
        return await self._wrap(self.client.query(nsid, params))

    async def procedure(self, nsid: str, body: Any) -> Any:
        return await self._wrap(self.client.procedure(nsid, input=body))

    async def _wrap(self, call: Any) -> Any:
        import aiohttp

        from ..core.errors import XrpcError

        try:
            return await call
        except aiohttp.ClientError as exc:
            raise AtrepoError(f"cannot reach the host at {self.url}: {exc}") from None
        except AtrepoError as exc:  # the host's reply: say it with the name on the wire
            wire = exc.error if isinstance(exc, XrpcError) else exc.xrpc_error
            raise AtrepoError(f"the host answered {wire}: {exc}") from None

    async def did_of(self, subject: str) -> str:
        """A DID as given; a handle resolved by the host (its own accounts first)."""
        if subject.startswith("did:"):
            return subject
        out = await self.query("com.atproto.identity.resolveHandle", {"handle": subject})
        return str(out["did"])

    async def statuses(self) -> dict[str, str]:
        """Every repository's status from ``sync.listRepos`` (public), DID -> status."""
        out: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = await self.query("com.atproto.sync.listRepos", params)
            for repo in page.get("repos", []):
                out[repo["did"]] = "active" if repo.get("active", True) else repo.get("status", "inactive")
            cursor = page.get("cursor")
            if not cursor or not page.get("repos"):
                return out

    async def email_token(self, did: str) -> dict[str, Any]:
        import aiohttp

        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0))
        try:
            async with session.get(
                self.url + EMAIL_TOKEN_PATH, params={"did": did}, headers=self.client.headers
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    name = body.get("error", "Error") if isinstance(body, dict) else "Error"
                    message = body.get("message", "") if isinstance(body, dict) else ""
                    raise AtrepoError(f"{name}: {message} (HTTP {resp.status})")
                return dict(body)
        except aiohttp.ClientError as exc:
            raise AtrepoError(f"cannot reach the host at {self.url}: {exc}") from None
        finally:
            await session.close()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- create (a client call, no admin password) ------------------------------------------------------


@app.command("create")
def account_create(
    handle: Annotated[str, typer.Option(help="handle under one of the host's user domains (alice.test)")],
    password: Annotated[str, typer.Option(help="the account's password")],
    email: Annotated[str | None, typer.Option(help="e-mail address (optional)")] = None,
    url: UrlOpt = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (with the tokens)")] = False,
) -> None:
    """Create an account on a running host (com.atproto.server.createAccount)."""
    body: dict[str, Any] = {"handle": handle, "password": password}
    if email is not None:
        body["email"] = email

    async def go() -> Any:
        async with _Admin(url, None) as host:
            return await host.procedure("com.atproto.server.createAccount", body)

    out = _run(go())
    if not isinstance(out, dict):
        raise AtrepoError("the host answered createAccount without a JSON object")
    if as_json:
        emit_json({"ok": True, **{k: out[k] for k in ("did", "handle", "accessJwt", "refreshJwt")}})
    else:
        print(f"created {out['handle']} {out['did']}")


# --- operator commands (admin API) -----------------------------------------------------------------


@app.command("list")
def account_list(
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    email: Annotated[str | None, typer.Option(help="only the account with this e-mail address")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the host's accounts, oldest first, with their status."""

    async def go() -> list[dict[str, Any]]:
        async with _Admin(url, admin_password(admin_pw, data)) as host:
            accounts: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 100}
                if cursor:
                    params["cursor"] = cursor
                if email:
                    params["email"] = email
                page = await host.query("com.atproto.admin.searchAccounts", params)
                accounts += page["accounts"]
                cursor = page.get("cursor")
                if not cursor:
                    break
            statuses = await host.statuses()
            for account in accounts:
                account["status"] = statuses.get(account["did"], "unknown")
            return accounts

    accounts = _run(go())
    if as_json:
        emit_json({"ok": True, "accounts": accounts})
        return
    for account in accounts:
        print(f"{account['did']}  {account['handle']}  {account['status']}  {account.get('email', '-')}")
    print(f"{len(accounts)} account(s)")


@app.command("info")
def account_info(
    subject: SubjectArg,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One account: handle, e-mail, creation, status, takedown and deactivation."""

    async def go() -> dict[str, Any]:
        async with _Admin(url, admin_password(admin_pw, data)) as host:
            did = await host.did_of(subject)
            info = await host.query("com.atproto.admin.getAccountInfo", {"did": did})
            status = await host.query("com.atproto.admin.getSubjectStatus", {"did": did})
            repo = await host.query("com.atproto.sync.getRepoStatus", {"did": did})
            return {
                **info,
                "active": repo.get("active"),
                "status": repo.get("status", "active"),
                "rev": repo.get("rev"),
                "takedown": status.get("takedown"),
                "deactivated": status.get("deactivated"),
            }

    info = _run(go())
    if as_json:
        emit_json({"ok": True, **info})
        return
    for key in ("did", "handle", "email", "indexedAt", "status", "rev", "deactivatedAt"):
        if info.get(key) is not None:
            print(f"{key}: {info[key]}")
    takedown = info.get("takedown") or {}
    if takedown.get("applied"):
        print(f"takedown: {takedown.get('ref', 'applied')}")


def _set_takedown(subject: str, url: str, password: str, applied: bool, ref: str | None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with _Admin(url, password) as host:
            did = await host.did_of(subject)
            attr: dict[str, Any] = {"applied": applied}
            if ref:
                attr["ref"] = ref
            await host.procedure(
                "com.atproto.admin.updateSubjectStatus",
                {"subject": {"$type": REPO_REF, "did": did}, "takedown": attr},
            )
            status = await host.query("com.atproto.sync.getRepoStatus", {"did": did})
            return {"did": did, "status": status.get("status", "active")}

    out: dict[str, Any] = _run(go())
    return out


@app.command("takedown")
def account_takedown(
    subject: SubjectArg,
    ref: Annotated[str | None, typer.Option(help="the operator's reference (case number) [the time]")] = None,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an account down: its data is no longer served, its sessions are revoked (#account takendown)."""
    out = _set_takedown(subject, url, admin_password(admin_pw, data), True, ref)
    if as_json:
        emit_json({"ok": True, **out})
    else:
        print(f"taken down {out['did']} (status {out['status']})")


@app.command("reverse-takedown")
def account_reverse_takedown(
    subject: SubjectArg,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift a takedown (the account returns to active, or deactivated if its owner had deactivated it)."""
    out = _set_takedown(subject, url, admin_password(admin_pw, data), False, None)
    if as_json:
        emit_json({"ok": True, **out})
    else:
        print(f"takedown reversed for {out['did']} (status {out['status']})")


@app.command("delete")
def account_delete(
    subject: SubjectArg,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete an account and all its data, for good (#account deleted)."""
    password = admin_password(admin_pw, data)
    if not yes and not typer.confirm(f"Delete {subject} and all its data for good?"):
        raise AtrepoError("not confirmed (use --yes)")

    async def go() -> str:
        async with _Admin(url, password) as host:
            did = await host.did_of(subject)
            await host.procedure("com.atproto.admin.deleteAccount", {"did": did})
            return did

    did = _run(go())
    if as_json:
        emit_json({"ok": True, "did": did, "status": "deleted"})
    else:
        print(f"deleted {did}")


@app.command("reset-password")
def account_reset_password(
    subject: SubjectArg,
    password: Annotated[
        str | None, typer.Option("--password", help="the new password [a random one, printed]")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a new password for an account; its sessions are revoked."""
    new = password or secrets.token_urlsafe(12)

    async def go() -> str:
        async with _Admin(url, admin_password(admin_pw, data)) as host:
            did = await host.did_of(subject)
            await host.procedure("com.atproto.admin.updateAccountPassword", {"did": did, "password": new})
            return did

    did = _run(go())
    out: dict[str, Any] = {"ok": True, "did": did}
    if password is None:
        out["password"] = new
    if as_json:
        emit_json(out)
    else:
        print(f"password reset for {did}" + ("" if password is not None else f": {new}"))


@app.command("delete-token")
def account_delete_token(
    subject: SubjectArg,
    url: UrlOpt = DEFAULT_URL,
    admin_pw: PasswordOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The pending account-deletion token an owner requested (requestAccountDelete; we send no mail)."""

    async def go() -> dict[str, Any]:
        async with _Admin(url, admin_password(admin_pw, data)) as host:
            return await host.email_token(await host.did_of(subject))

    out = _run(go())
    if as_json:
        emit_json({"ok": True, **out})
    else:
        state = "expired" if out.get("expired") else f"valid until {out.get('expiresAt')}"
        print(f"{out['token']} ({state})")


# --- migrate (a client of both hosts; the flow lives in atrepo.cli.migrate) ----------------------

app.command("migrate")(account_migrate)
