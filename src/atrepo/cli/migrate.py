"""``atrepo account migrate``: move an account from one host to another, client side, resumably.

The flow is goat's ``account migrate`` (accounts.md §11), over plain XRPC, so
it works between any two hosts that speak the protocol, not only atrepo ones:

1. ``create_account``: the old host issues a service-auth token for the new
   host's service DID (``getServiceAuth``, ``lxm`` = createAccount) and the new
   host creates the account with the existing DID, deactivated;
2. ``import_repo``: old ``sync.getRepo`` -> new ``repo.importRepo``;
3. ``upload_blobs``: every blob the new host lists as missing
   (``listMissingBlobs``, all pages) from old ``getBlob`` to new ``uploadBlob``;
4. ``preferences``: old ``getPreferences`` -> new ``putPreferences``;
5. ``request_plc_token``: the old host makes a one-time token (it mails it;
   atrepo writes it to its log and serves it to its operator);
6. ``sign_plc_operation``: the old host signs an operation naming what the new
   host recommends (``getRecommendedDidCredentials``), not submitted;
7. ``submit_plc_operation``: the new host submits it (the DID now names it);
8. ``activate_new``: the new host activates the account (and announces it);
9. ``deactivate_old``: the old host deactivates its copy.

Why a state file: a migration talks to two hosts and a directory and can be
cut anywhere (a network error, an operator's Ctrl-C, a token the user has to
fetch). Each completed step is recorded in the file (written atomically)
before the next one starts, and a second run with the same file skips what is
done, so nothing is requested twice: no second PLC token that would void the
first, no second activation or deactivation event on a firehose. Steps are
also idempotent on their own where the protocol lets them be: an account that
already exists on the new host for this DID (its password works) is reused, a
PLC operation the directory already applied (``checkAccountStatus.validDid``)
is not sent again, an account already active (or inactive on the old host) is
left alone. The file holds the DID, the steps done and the signed operation;
no password or session token.

Without ``--plc-token`` the run stops after requesting the token and says
where the operator finds it (the old host's log, or for an atrepo host the
admin route also read with ``--from-admin-password``); running again with
``--plc-token`` continues from there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Protocol

import typer

from ..core.errors import AtrepoError, AuthRequired
from .output import emit_json

if TYPE_CHECKING:  # imported when a migration runs: the CLI's start-up stays light
    import aiohttp

__all__ = [
    "STEPS",
    "ConsoleReporter",
    "MigrationOptions",
    "MigrationResult",
    "MigrationState",
    "QuietReporter",
    "Reporter",
    "account_migrate",
    "migrate",
]

#: The steps, in order; their names are what the state file records.
STEPS: Final = (
    "create_account",
    "import_repo",
    "upload_blobs",
    "preferences",
    "request_plc_token",
    "sign_plc_operation",
    "submit_plc_operation",
    "activate_new",
    "deactivate_old",
)
#: Largest repository CAR the migration holds in memory (the importer's own limit).
MAX_CAR_BYTES: Final = 1024 * 1024 * 1024
#: Largest blob moved (the reference's default upload limit is far below this).
MAX_BLOB_BYTES: Final = 256 * 1024 * 1024
#: listMissingBlobs page size (the lexicon's maximum).
MISSING_PAGE: Final = 1000
#: The atrepo operator route serving a pending e-mail-style token (``atrepo.host.admin``).
EMAIL_TOKEN_PATH: Final = "/atrepo/admin/email-token"
PLC_TOKEN_PURPOSE: Final = "plc_operation"
CREATE_ACCOUNT: Final = "com.atproto.server.createAccount"
CALL_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    """What the operator asked for (the command's flags)."""

    from_url: str
    to_url: str
    handle: str
    password: str
    new_handle: str | None = None
    new_password: str | None = None
    plc_token: str | None = None
    state_path: Path | None = None
    #: An atrepo old host's admin password: fetch the PLC token from its operator route.
    from_admin_password: str | None = None


@dataclass
class MigrationState:
    """The resumable part of a run: whose migration, the steps done, the signed operation."""

    did: str | None = None
    done: list[str] = field(default_factory=list)
    operation: dict[str, Any] | None = None
    from_url: str | None = None
    to_url: str | None = None

    @classmethod
    def load(cls, path: Path | None) -> MigrationState:
        if path is None or not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AtrepoError(f"cannot read the state file {path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("done", []), list):
            raise AtrepoError(f"{path} is not a migration state file")
        return cls(
            did=raw.get("did"),
            done=[str(step) for step in raw.get("done", [])],
            operation=raw.get("operation"),
            from_url=raw.get("from"),
            to_url=raw.get("to"),
        )

    def save(self, path: Path | None) -> None:
        """Write the file whole and rename it into place: a crash leaves the old or the new state."""
        if path is None:
            return
        body: dict[str, Any] = {"did": self.did, "from": self.from_url, "to": self.to_url, "done": self.done}
        if self.operation is not None:
            body["operation"] = self.operation
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """How a run ended: ``done``, or ``needs_plc_token`` (run again with ``--plc-token``)."""

    did: str
    status: str
    steps_run: tuple[str, ...]
    blobs_uploaded: int
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "did": self.did,
            "status": self.status,
            "stepsRun": list(self.steps_run),
            "blobsUploaded": self.blobs_uploaded,
            "message": self.message,
        }


class Reporter(Protocol):
    """Where progress goes (the CLI: stderr lines and a rich bar for blobs; tests: a list)."""

    def line(self, text: str) -> None: ...

    def blobs_start(self, total: int) -> None: ...

    def blob_done(self) -> None: ...

    def blobs_end(self) -> None: ...


class QuietReporter:
    """A reporter that keeps the lines (for callers that print nothing)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def blobs_start(self, total: int) -> None:
        pass

    def blob_done(self) -> None:
        pass

    def blobs_end(self) -> None:
        pass


class _Run:
    """One run of the flow: the two clients, the state and the bookkeeping around each step."""

    def __init__(
        self,
        opts: MigrationOptions,
        state: MigrationState,
        reporter: Reporter,
        after_step: Callable[[str], None] | None,
        session: aiohttp.ClientSession,
    ) -> None:
        self.opts = opts
        self.state = state
        self.reporter = reporter
        self.after_step = after_step
        from ..xrpc import XrpcClient

        self.session = session
        self.old = XrpcClient(opts.from_url, session=session, max_response_bytes=MAX_CAR_BYTES)
        self.new = XrpcClient(opts.to_url, session=session, max_response_bytes=MAX_BLOB_BYTES)
        self.ran: list[str] = []
        self.blobs = 0

    @property
    def did(self) -> str:
        assert self.state.did is not None
        return self.state.did

    def pending(self, step: str) -> bool:
        return step not in self.state.done

    def finish(self, step: str, note: str) -> None:
        self.state.done.append(step)
        self.state.save(self.opts.state_path)
        self.ran.append(step)
        self.reporter.line(f"[{STEPS.index(step) + 1}/{len(STEPS)}] {step}: {note}")
        if self.after_step is not None:
            self.after_step(step)

    async def login_old(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.old.procedure(
            "com.atproto.server.createSession",
            input={"identifier": self.opts.handle, "password": self.opts.password},
        )
        self.old.token = out["accessJwt"]
        did = str(out["did"])
        if self.state.did is None:
            self.state.did = did
            self.state.from_url, self.state.to_url = self.opts.from_url, self.opts.to_url
        elif self.state.did != did:
            raise AtrepoError(f"the state file is for {self.state.did}, but {self.opts.handle} is {did}")
        return out

    async def login_new(self) -> bool:
        """Log in to the new host with the DID; False when there is no such account there (yet)."""
        try:
            out = await self.new.procedure(
                "com.atproto.server.createSession",
                input={"identifier": self.did, "password": self.new_password},
            )
        except AuthRequired:
            return False
        self.new.token = out["accessJwt"]
        return True

    @property
    def new_password(self) -> str:
        return self.opts.new_password or self.opts.password

    # --- the steps ------------------------------------------------------------------------------

    async def create_account(self, old_session: dict[str, Any]) -> None:
        if await self.login_new():
            self.finish("create_account", f"{self.did} already has an account on the new host; reusing it")
            return
        server = await self.new.query("com.atproto.server.describeServer")
        aud = str(server["did"])
        token = (
            await self.old.query("com.atproto.server.getServiceAuth", {"aud": aud, "lxm": CREATE_ACCOUNT})
        )["token"]
        handle = self.opts.new_handle or str(old_session["handle"])
        body: dict[str, Any] = {"did": self.did, "handle": handle, "password": self.new_password}
        if old_session.get("email"):
            body["email"] = old_session["email"]
        await self.new.procedure(CREATE_ACCOUNT, input=body, headers={"Authorization": f"Bearer {token}"})
        if not await self.login_new():
            raise AtrepoError("the new host created the account but refuses its password")
        self.finish("create_account", f"created {handle} ({self.did}) on the new host, deactivated")

    async def import_repo(self) -> None:
        car = await self.old.query("com.atproto.sync.getRepo", {"did": self.did})
        if not isinstance(car, bytes):
            raise AtrepoError("the old host's getRepo did not answer with a CAR")
        started = time.monotonic()
        await self.new.procedure(
            "com.atproto.repo.importRepo", input=car, encoding="application/vnd.ipld.car"
        )
        self.finish("import_repo", f"{len(car):,} bytes imported in {time.monotonic() - started:.1f} s")

    async def missing_blobs(self) -> list[str]:
        cids: dict[str, None] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": MISSING_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await self.new.query("com.atproto.repo.listMissingBlobs", params)
            for blob in page.get("blobs", []):
                cids[str(blob["cid"])] = None
            cursor = page.get("cursor")
            if not cursor or not page.get("blobs"):
                return list(cids)

    async def upload_blobs(self) -> None:
        missing = await self.missing_blobs()
        self.reporter.blobs_start(len(missing))
        try:
            for cid in missing:
                reply = await self.old.call("GET", "com.atproto.sync.getBlob", {"did": self.did, "cid": cid})
                mime = reply.content_type or "application/octet-stream"
                await self.new.procedure("com.atproto.repo.uploadBlob", input=reply.body, encoding=mime)
                self.blobs += 1
                self.reporter.blob_done()
        finally:
            self.reporter.blobs_end()
        left = await self.missing_blobs()
        if left:
            raise AtrepoError(f"{len(left)} blobs are still missing on the new host (first: {left[0]})")
        self.finish("upload_blobs", f"{len(missing)} blobs uploaded")

    async def preferences(self) -> None:
        prefs = (await self.old.query("app.bsky.actor.getPreferences")).get("preferences", [])
        await self.new.procedure("app.bsky.actor.putPreferences", input={"preferences": prefs})
        self.finish("preferences", f"{len(prefs)} preferences copied")

    async def request_plc_token(self) -> None:
        if self.opts.plc_token is not None:
            self.finish("request_plc_token", "a token was given (--plc-token): not requesting another")
            return
        await self.old.procedure("com.atproto.identity.requestPlcOperationSignature")
        self.finish("request_plc_token", "the old host made a PLC operation token")

    async def fetch_plc_token(self) -> str | None:
        """The token from an atrepo old host's operator route (needs its admin password)."""
        password = self.opts.from_admin_password
        if password is None:
            return None
        url = self.opts.from_url.rstrip("/") + EMAIL_TOKEN_PATH
        auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
        params = {"did": self.did, "purpose": PLC_TOKEN_PURPOSE}
        async with self.session.get(url, params=params, headers=auth) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(body, dict):
                raise AtrepoError(f"the old host's admin route did not give the token (HTTP {resp.status})")
            return str(body["token"])

    async def sign_plc_operation(self) -> bool:
        token = self.opts.plc_token or await self.fetch_plc_token()
        if token is None:
            return False
        creds = await self.new.query("com.atproto.identity.getRecommendedDidCredentials")
        out = await self.old.procedure(
            "com.atproto.identity.signPlcOperation", input={"token": token, **dict(creds)}
        )
        self.state.operation = dict(out["operation"])
        self.finish("sign_plc_operation", "the old host signed the operation naming the new host")
        return True

    async def submit_plc_operation(self) -> None:
        status = await self.new.query("com.atproto.server.checkAccountStatus")
        if status.get("validDid"):
            self.finish("submit_plc_operation", "the DID already names the new host")
            return
        if self.state.operation is None:
            raise AtrepoError("no signed PLC operation in the state file: sign it again")
        await self.new.procedure(
            "com.atproto.identity.submitPlcOperation", input={"operation": self.state.operation}
        )
        self.finish("submit_plc_operation", "the DID now names the new host and its key")

    async def activate_new(self) -> None:
        status = await self.new.query("com.atproto.server.checkAccountStatus")
        if status.get("activated"):
            self.finish("activate_new", "already active on the new host")
            return
        await self.new.procedure("com.atproto.server.activateAccount")
        self.finish("activate_new", "active on the new host")

    async def deactivate_old(self) -> None:
        session = await self.old.query("com.atproto.server.getSession")
        if session.get("active") is False:
            self.finish("deactivate_old", "already inactive on the old host")
            return
        await self.old.procedure("com.atproto.server.deactivateAccount", input={})
        self.finish("deactivate_old", "deactivated on the old host")

    def token_message(self) -> str:
        return (
            f"the old host made a one-time PLC token for {self.did}: its operator finds it in the "
            f"old host's log ('PLC operation token for {self.did}: XXXXX-XXXXX'; an atrepo host also "
            f"serves it at {EMAIL_TOKEN_PATH}?did={self.did}&purpose={PLC_TOKEN_PURPOSE} with the "
            "admin password). Run the same command again with --plc-token TOKEN (and the same "
            "--state file) to continue; the token is valid 15 minutes."
        )

    async def run(self) -> MigrationResult:
        old_session = await self.login_old()
        self.state.save(self.opts.state_path)
        self.reporter.line(f"migrating {self.did} from {self.opts.from_url} to {self.opts.to_url}")
        if self.pending("create_account"):
            await self.create_account(old_session)
        elif not await self.login_new():
            raise AtrepoError("the new host does not accept the account's password")
        if self.pending("import_repo"):
            await self.import_repo()
        if self.pending("upload_blobs"):
            await self.upload_blobs()
        if self.pending("preferences"):
            await self.preferences()
        if self.pending("request_plc_token"):
            await self.request_plc_token()
        if self.pending("sign_plc_operation") and not await self.sign_plc_operation():
            message = self.token_message()
            self.reporter.line(message)
            return MigrationResult(self.did, "needs_plc_token", tuple(self.ran), self.blobs, message)
        if self.pending("submit_plc_operation"):
            await self.submit_plc_operation()
        if self.pending("activate_new"):
            await self.activate_new()
        if self.pending("deactivate_old"):
            await self.deactivate_old()
        self.reporter.line(f"{self.did} now lives on {self.opts.to_url}")
        return MigrationResult(self.did, "done", tuple(self.ran), self.blobs)


async def migrate(
    opts: MigrationOptions,
    *,
    reporter: Reporter | None = None,
    after_step: Callable[[str], None] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> MigrationResult:
    """Run (or resume, with the state file) the migration; ``after_step`` is called after each step.

    Raises the mapped XRPC error of the call that failed (the state file
    keeps the steps done before it) or :class:`AtrepoError` for a network
    failure. ``session``: share a connection pool (not closed here).
    """
    import aiohttp

    state = MigrationState.load(opts.state_path)
    if state.done and (state.from_url, state.to_url) != (opts.from_url, opts.to_url):
        raise AtrepoError(
            f"the state file is for a migration from {state.from_url} to {state.to_url}, not this one"
        )
    owned = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
    try:
        return await _Run(opts, state, reporter or QuietReporter(), after_step, http).run()
    except aiohttp.ClientError as exc:
        raise AtrepoError(f"a host could not be reached: {exc}") from None
    finally:
        if owned:
            await http.close()


# --- the command's reporter --------------------------------------------------------------------


class ConsoleReporter:
    """Progress lines on stderr, and a rich progress bar while blobs move."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None

    def line(self, text: str) -> None:
        self.console.print(f"migrate: {text}", markup=False, highlight=False)

    def blobs_start(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("blobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console
        )
        self._progress.start()
        self._task = self._progress.add_task("blobs", total=total)

    def blob_done(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def blobs_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# --- the command (registered in the ``account`` group by ``atrepo.cli.account``) ------------------


def account_migrate(
    from_url: Annotated[str, typer.Option("--from", help="the old host's URL")],
    to_url: Annotated[str, typer.Option("--to", help="the new host's URL")],
    handle: Annotated[str, typer.Option(help="the account's handle (or DID) on the old host")],
    password: Annotated[str, typer.Option(help="the account's password on the old host")],
    new_handle: Annotated[
        str | None, typer.Option("--new-handle", help="the handle on the new host [the current one]")
    ] = None,
    new_password: Annotated[
        str | None, typer.Option("--new-password", help="the password on the new host [--password]")
    ] = None,
    plc_token: Annotated[
        str | None, typer.Option("--plc-token", help="the old host's PLC operation token (second run)")
    ] = None,
    from_admin_password: Annotated[
        str | None,
        typer.Option("--from-admin-password", help="an atrepo old host's admin password: fetch the token"),
    ] = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="state file: a rerun resumes where a run stopped")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Move an account to another host (goat's flow; resumable with --state). Progress goes to stderr."""
    opts = MigrationOptions(
        from_url=from_url,
        to_url=to_url,
        handle=handle,
        password=password,
        new_handle=new_handle,
        new_password=new_password,
        plc_token=plc_token,
        state_path=state,
        from_admin_password=from_admin_password,
    )
    result = asyncio.run(migrate(opts, reporter=ConsoleReporter()))
    if as_json:
        emit_json(result.to_json())
    elif result.status == "done":
        print(f"migrated {result.did} to {to_url}")
    else:
        print(f"stopped: {result.message}")
    if result.status != "done":
        raise typer.Exit(3)
