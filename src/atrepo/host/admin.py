"""The admin API, ``com.atproto.admin.*``, under HTTP Basic ``admin:<password>`` (accounts.md §8).

goat and the reference's tooling send ``Authorization: Basic
base64("admin:" + password)``; the header is split at the first ``:``. A
missing, malformed or wrong header is the reference's 401
``AuthenticationRequired`` "Authentication Required" (``AuthRequiredError()``),
whatever was wrong, so a prober learns nothing from the answer. The password
is configured (``admin_password``) or generated into ``<data>/admin-password``
at first start (mode 0600; :func:`atrepo.host.config.load_secrets`).

Methods:

* ``getAccountInfo``/``getAccountInfos``/``searchAccounts``: ``accountView``
  (``indexedAt`` is the creation time; an unknown DID is 400 ``NotFound``;
  ``searchAccounts`` without ``email`` lists every account, oldest first, for
  ``atrepo account list``).
* ``updateSubjectStatus``: a ``repoRef`` takedown (``ref`` kept, or the time
  when none is given; every refresh token revoked) or its reversal, and
  ``deactivated``, in one transaction with one ``#account`` event
  (:func:`atrepo.host.lifecycle.apply_admin_status`); neither re-announces the
  status. A ``repoBlobRef`` takedown hides the blob from ``sync.getBlob``
  ("Blob not found"), no event. Record (``strongRef``) takedowns are not
  offered yet: 400.
* ``getSubjectStatus``: ``did``, or ``blob`` with ``did``; 400 ``NotFound``
  for an unknown subject.
* ``deleteAccount``: the owner's deletion without password or token (same
  events); ``updateAccountHandle``: a signed PLC update (did:plc) then the
  handle and ``#identity {handle}``, any valid handle allowed (the
  reference skips the reserved-name rules for admins); ``updateAccountPassword``:
  new hash, every session revoked, no event.

One route outside XRPC, for the operator only: ``GET
/atrepo/admin/email-token?did=D[&purpose=delete_account]`` answers the
pending e-mail-style token (we send no mail), under the same Basic auth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from atrepo.core.cid import CID
from atrepo.core.errors import (
    AtrepoError,
    AuthRequired,
    HandleNotAvailable,
    InvalidHandle,
    InvalidRequest,
    InvalidSyntax,
    XrpcError,
)
from atrepo.core.syntax import format_datetime, normalize_handle
from atrepo.store import Account, SQLiteStore
from atrepo.store.base import AccountState
from atrepo.xrpc import XrpcContext, XrpcRouter
from atrepo.xrpc.basic_auth import ADMIN_USER, check_basic

from .accounts import check_new_password, hash_password
from .identity_api import plc_set_handle, store_handle
from .lifecycle import DELETE_PURPOSE, EMAIL_TOKEN_TTL_MS, apply_admin_status, delete_account

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "ADMIN_USER",
    "ADMIN_VIEWER",
    "EMAIL_TOKEN_PATH",
    "AdminCredentials",
    "attach",
    "check_basic",
    "may_see_inactive",
    "owner_or_admin",
    "register",
]

log = logging.getLogger("atrepo.host.admin")

EMAIL_TOKEN_PATH: Final = "/atrepo/admin/email-token"
REPO_REF: Final = "com.atproto.admin.defs#repoRef"
BLOB_REF: Final = "com.atproto.admin.defs#repoBlobRef"
STRONG_REF: Final = "com.atproto.repo.strongRef"
#: ``searchAccounts`` pages: the stored accounts read per page (then filtered by e-mail).
_SCAN_PAGE: Final = 500


class AdminCredentials:
    """What ``ctx.auth`` holds on admin routes: the caller knew the admin password."""

    __slots__ = ()
    kind: Final = "admin_token"


#: What :func:`owner_or_admin` gives for the admin (a DID always starts with ``did:``).
ADMIN_VIEWER: Final = "admin"


def owner_or_admin(host: HostContext) -> Callable[[web.Request, dict[str, Any]], Awaitable[str | None]]:
    """``auth=`` hook of ``sync.*`` reads: who may see an inactive repository (accounts.md §9).

    The admin's Basic credentials give ``ADMIN_VIEWER``, a valid session token
    its DID; anything else (no header, a wrong or expired one) gives None: the
    call goes on as an anonymous one. The reference refuses a bad token on these
    public routes; ignoring it keeps every public reader (relays, clients that
    send a stale token everywhere) answered exactly as before.
    """

    async def verify(request: web.Request, params: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        if check_basic(header, host.secrets.admin_password):
            return ADMIN_VIEWER
        try:
            creds = await host.tokens.verify_access(request, params)
        except AtrepoError:
            return None
        return creds.did

    return verify


def may_see_inactive(viewer: object, did: str) -> bool:
    """Whether ``viewer`` (from :func:`owner_or_admin`) is the admin or the repository's owner."""
    return viewer in (ADMIN_VIEWER, did)


def _ms_datetime(ms: int) -> str:
    from datetime import UTC, datetime

    return format_datetime(datetime.fromtimestamp(ms / 1000, UTC))


def account_view(account: Account, state: AccountState | None) -> dict[str, Any]:
    """``admin.defs#accountView`` of an account (no invites here: the host has none)."""
    out: dict[str, Any] = {
        "did": account.did,
        "handle": account.handle,
        "indexedAt": _ms_datetime(account.created_ms),
        "invitesDisabled": False,
    }
    if account.email is not None:
        out["email"] = account.email
    if state is not None and state.deactivated_ms is not None:
        out["deactivatedAt"] = _ms_datetime(state.deactivated_ms)
    return out


def _views(store: SQLiteStore, dids: list[str]) -> list[dict[str, Any]]:
    out = []
    for did in dict.fromkeys(dids):
        account = store.get_account(did)
        if account is not None:
            out.append(account_view(account, store.get_account_state(did)))
    return out


def _search(
    store: SQLiteStore, email: str | None, after: tuple[int, str] | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Accounts (with ``email`` when given, without regard to case) by creation, after the cursor."""
    found: list[dict[str, Any]] = []
    last: Account | None = None
    while len(found) < limit:
        page = store.list_accounts(after=after, limit=_SCAN_PAGE)
        for account in page:
            last = account
            if email is None or (account.email or "").lower() == email.lower():
                found.append(account_view(account, store.get_account_state(account.did)))
                if len(found) == limit:
                    break
        if len(page) < _SCAN_PAGE or len(found) == limit:
            break
        after = (page[-1].created_ms, page[-1].did)
    cursor = f"{last.created_ms}::{last.did}" if last is not None and len(found) == limit else None
    return found, cursor


def _cursor(text: str) -> tuple[int, str]:
    created, sep, did = text.partition("::")
    if not sep or not created.lstrip("-").isdigit() or not did:
        raise InvalidRequest("Malformed cursor")
    return int(created), did


def _status_attr(applied: bool, ref: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"applied": applied}
    if ref is not None:
        out["ref"] = ref
    return out


def _set_password(store: SQLiteStore, did: str, password_hash: str) -> None:
    with store.transaction(did) as tx:
        if tx.account() is None:
            raise XrpcError("NotFound", "Account not found", 400)
        tx.set_password_hash(password_hash)
    store.revoke_refresh_tokens(did)


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare the ``com.atproto.admin.*`` methods on ``router``, bound to ``host``."""

    async def verify(request: web.Request, params: dict[str, Any]) -> AdminCredentials:
        if not check_basic(request.headers.get("Authorization"), host.secrets.admin_password):
            raise AuthRequired("Authentication Required")
        return AdminCredentials()

    worker = host.worker
    clock = host.tokens.clock_ms

    async def existing(did: str) -> Account:
        account = await worker.read(SQLiteStore.get_account, did)
        if account is None:
            raise XrpcError("NotFound", "Account not found", 400)
        return account

    @router.query("com.atproto.admin.getAccountInfo", auth=verify)
    async def get_account_info(ctx: XrpcContext) -> dict[str, Any]:
        did = ctx.params["did"]
        account = await existing(did)
        state = await worker.read(SQLiteStore.get_account_state, did)
        return account_view(account, state)

    @router.query("com.atproto.admin.getAccountInfos", auth=verify)
    async def get_account_infos(ctx: XrpcContext) -> dict[str, Any]:
        return {"infos": await worker.read(_views, list(ctx.params["dids"]))}

    @router.query("com.atproto.admin.searchAccounts", auth=verify)
    async def search_accounts(ctx: XrpcContext) -> dict[str, Any]:
        p = ctx.params
        after = _cursor(p["cursor"]) if p.get("cursor") else None
        accounts, cursor = await worker.read(_search, p.get("email"), after, p["limit"])
        out: dict[str, Any] = {"accounts": accounts}
        if cursor is not None:
            out["cursor"] = cursor
        return out

    @router.procedure("com.atproto.admin.updateSubjectStatus", auth=verify)
    async def update_subject_status(ctx: XrpcContext) -> dict[str, Any]:
        body = ctx.input
        subject: dict[str, Any] = body["subject"]
        takedown: dict[str, Any] | None = body.get("takedown")
        deactivated: dict[str, Any] | None = body.get("deactivated")
        kind = subject.get("$type")
        if kind == REPO_REF:
            did = subject["did"]
            taking_down = takedown is not None and takedown["applied"]
            if taking_down and deactivated is not None and not deactivated["applied"]:
                raise InvalidRequest("Cannot reactivate an account while taking it down")
            ref: str | None = None
            if takedown is not None and takedown["applied"]:
                ref = takedown.get("ref") or _ms_datetime(clock())
            status, seq = await worker.run(
                apply_admin_status,
                did,
                clock(),
                takedown_ref=ref,
                takedown=None if takedown is None else bool(takedown["applied"]),
                deactivated=None if deactivated is None else bool(deactivated["applied"]),
            )
            await host.notify(seq, commits=0)
            log.info("admin status of %s: %s", did, status)
        elif kind == BLOB_REF:
            if deactivated is not None:
                raise InvalidRequest("Only a repository can be deactivated")
            if takedown is not None:
                did, cid = subject["did"], CID.coerce(subject["cid"])
                blob_ref = (takedown.get("ref") or _ms_datetime(clock())) if takedown["applied"] else None
                if not await worker.run(SQLiteStore.set_blob_takedown, did, cid, blob_ref):
                    raise XrpcError("NotFound", "Blob not found", 400)
                log.info("admin blob takedown of %s %s: %s", did, cid, takedown["applied"])
        elif kind == STRONG_REF:
            raise InvalidRequest("Record takedowns are not supported by this host")
        else:
            raise InvalidRequest("Invalid subject")
        out: dict[str, Any] = {"subject": subject}
        if takedown is not None:
            out["takedown"] = takedown
        return out

    @router.query("com.atproto.admin.getSubjectStatus", auth=verify)
    async def get_subject_status(ctx: XrpcContext) -> dict[str, Any]:
        p = ctx.params
        did, uri, blob = p.get("did"), p.get("uri"), p.get("blob")
        if blob is not None:
            if did is None:
                raise InvalidRequest("Must provide a did to request blob state")
            cid = CID.coerce(blob)
            row = await worker.read(SQLiteStore.get_blob, did, cid)
            if row is None:
                raise XrpcError("NotFound", "Subject not found", 400)
            blob_ref = await worker.read(SQLiteStore.blob_takedown, did, cid)
            return {
                "subject": {"$type": BLOB_REF, "did": did, "cid": str(cid)},
                "takedown": _status_attr(blob_ref is not None, blob_ref),
            }
        if uri is not None:
            raise XrpcError("NotFound", "Subject not found", 400)  # no record takedowns here
        if did is None:
            raise InvalidRequest("No provided subject")
        state = await worker.read(SQLiteStore.get_account_state, did)
        if state is None:
            raise XrpcError("NotFound", "Subject not found", 400)
        return {
            "subject": {"$type": REPO_REF, "did": did},
            "takedown": _status_attr(state.taken_down, state.takedown_ref),
            "deactivated": _status_attr(state.deactivated),
        }

    @router.procedure("com.atproto.admin.deleteAccount", auth=verify)
    async def admin_delete_account(ctx: XrpcContext) -> None:
        did = ctx.input["did"]
        account = await existing(did)
        seq = await worker.run(delete_account, did)
        await host.notify(seq, commits=0)
        log.warning("account deleted by the admin: %s (%s)", did, account.handle)

    @router.procedure("com.atproto.admin.updateAccountHandle", auth=verify)
    async def update_account_handle(ctx: XrpcContext) -> None:
        did = ctx.input["did"]
        try:
            handle = normalize_handle(ctx.input["handle"])
        except InvalidSyntax as exc:
            raise InvalidHandle(f"Input/handle must be a valid handle: {exc}") from None
        account = await existing(did)
        holder = await worker.read(SQLiteStore.get_account_by_handle, handle)
        if holder is not None and holder.did != did:
            raise HandleNotAvailable(f"Handle already taken: {handle}")
        if did.startswith("did:plc:"):
            await plc_set_handle(host, did, handle)
        seq = await worker.run(store_handle, did, handle)
        await host.notify(seq, commits=0)
        log.info("admin handle of %s: %s -> %s", did, account.handle, handle)

    @router.procedure("com.atproto.admin.updateAccountPassword", auth=verify)
    async def update_account_password(ctx: XrpcContext) -> None:
        did, password = ctx.input["did"], ctx.input["password"]
        password = check_new_password(password)
        await existing(did)
        loop = asyncio.get_running_loop()
        password_hash = await loop.run_in_executor(None, hash_password, password)
        await worker.run(_set_password, did, password_hash)
        log.info("admin reset the password of %s (sessions revoked)", did)


def attach(app: web.Application, host: HostContext) -> None:
    """The operator's route for pending e-mail-style tokens (``atrepo account delete-token``)."""

    async def email_token(request: web.Request) -> web.Response:
        if not check_basic(request.headers.get("Authorization"), host.secrets.admin_password):
            return web.json_response(
                {"error": "AuthenticationRequired", "message": "Authentication Required"}, status=401
            )
        did = request.query.get("did", "")
        purpose = request.query.get("purpose", DELETE_PURPOSE)
        token = await host.worker.read(SQLiteStore.get_email_token, did, purpose) if did else None
        if token is None:
            return web.json_response({"error": "NotFound", "message": "No pending token"}, status=404)
        return web.json_response(
            {
                "did": did,
                "purpose": purpose,
                "token": token.token,
                "requestedAt": _ms_datetime(token.requested_ms),
                "expiresAt": _ms_datetime(token.requested_ms + EMAIL_TOKEN_TTL_MS),
                "expired": host.tokens.clock_ms() > token.requested_ms + EMAIL_TOKEN_TTL_MS,
            },
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get(EMAIL_TOKEN_PATH, email_token)
