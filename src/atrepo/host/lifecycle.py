"""Account status lifecycle: activate, deactivate, request deletion, delete (accounts.md §6, §8, §9).

Every status change and the events that announce it are stored in one store
transaction: a relay never sees an ``#account`` event for a change that was
rolled back, nor a change without its event. The functions named ``*_account``
and :func:`apply_admin_status` run on the store's writer thread and are
shared with the admin API (:mod:`atrepo.host.admin`), so that an operator's
takedown or deletion emits exactly what the owner's own call would.

Events, as the reference host sends them:

* deactivation: ``#account {active: false, status: deactivated}``
  (``takendown`` when a takedown is also in force: it wins);
* activation: ``#account {active: true}``, ``#identity {handle}``, then a
  ``#sync`` carrying the current commit, so a consumer that dropped the
  account can start again from its head;
  after a migration in (the head is the imported commit, signed by the old
  host), the tree is re-signed with this host's key under a fresh rev first
  and the ``#sync`` carries that commit (the reference sends the old one);
* takedown: ``#account {active: false, status: takendown}``; its reversal the
  status that remains (``active``, or ``deactivated``);
* deletion: the account's rows, blocks, records, blobs (and their files once
  no account holds them), tokens and preferences go, every earlier event of
  the DID is removed from the backfill log, and ``#account {active: false,
  status: deleted}`` is appended after that, so it alone stays. Seqs keep
  rising: the counter is a row of its own.

We send no mail: ``requestAccountDelete`` writes its token to the host's log
at WARNING with the DID, and the operator can read it back through the admin
route ``/atrepo/admin/email-token`` (``atrepo account delete-token``).
Tokens are the reference's ``XXXXX-XXXXX`` (base32, upper case), one per
account and purpose, valid ``EMAIL_TOKEN_TTL_MS``, compared without case.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.car import write_car
from atrepo.core.commit import decode_commit
from atrepo.core.errors import (
    AtrepoError,
    AuthRequired,
    ExpiredToken,
    InvalidRequest,
    InvalidToken,
    XrpcError,
)
from atrepo.core.events import AccountEvent, IdentityEvent, SyncEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import CommitResult
from atrepo.core.syntax import parse_datetime
from atrepo.identity.plc.client import fetch_verified_log
from atrepo.store import Account, SQLiteStore
from atrepo.store.base import AccountStatus, MakeEvent
from atrepo.xrpc import XrpcContext, XrpcRouter

from .accounts import verify_password
from .auth import AccessCredentials

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "DELETE_PURPOSE",
    "EMAIL_TOKEN_TTL_MS",
    "activate_account",
    "apply_admin_status",
    "deactivate_account",
    "delete_account",
    "new_email_token",
    "register",
    "status_event",
]

log = logging.getLogger("atrepo.host.lifecycle")

#: The purpose of the account-deletion token (the reference's ``delete_account``).
DELETE_PURPOSE: Final = "delete_account"
#: Reference: an e-mailed token is valid for 15 minutes.
EMAIL_TOKEN_TTL_MS: Final = 15 * 60 * 1000
_BASE32: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_email_token() -> str:
    """``XXXXX-XXXXX``: ten random base32 characters, upper case (reference ``getRandomToken``)."""
    chars = "".join(secrets.choice(_BASE32) for _ in range(10))
    return f"{chars[:5]}-{chars[5:]}"


def account_not_found() -> XrpcError:
    return XrpcError("AccountNotFound", "Account not found", 403)


def status_event(did: str, status: AccountStatus) -> MakeEvent:
    """The ``#account`` event announcing ``status`` (``active`` carries no status field)."""
    active = status == "active"

    def make(seq: int, time: str) -> AccountEvent:
        return AccountEvent(seq=seq, did=did, time=time, active=active, status=None if active else status)

    return make


# --- store work (on the writer thread) ------------------------------------------------------------


def deactivate_account(store: SQLiteStore, did: str, now_ms: int, delete_after_ms: int | None) -> int:
    """Deactivate and announce it; the new event's seq."""
    with store.transaction(did) as tx:
        if tx.account() is None:
            raise account_not_found()
        status = tx.set_deactivated(True, now_ms=now_ms, delete_after_ms=delete_after_ms)
        return tx.append_event(status_event(did, status)).seq


def activate_account(store: SQLiteStore, did: str, now_ms: int) -> int:
    """Reactivate; ``#account``, ``#identity`` and ``#sync`` of the current commit; the last seq.

    When the stored head is not signed by the account's key here (an
    ``importRepo`` stored the old host's commit), the tree is first re-signed
    with that key under a fresh rev, in the same transaction, and the ``#sync``
    carries that new commit: a relay checks it against the DID's new key and
    the rev it announces. A plain re-activation keeps its head.

    A taken-down account is not found, as the reference answers (``AccountNotFound``).
    """
    with store.transaction(did) as tx:
        account = tx.account()
        if account is None or account.status in ("takendown", "suspended", "deleted"):
            raise XrpcError("AccountNotFound", "user not found", 400)
        status = tx.set_deactivated(False, now_ms=now_ms)
        head = tx.head()
        raw = tx.blocks.get(head.cid) if head is not None else None
        if head is None or raw is None:
            raise InvalidRequest("No repo root found")
        handle = account.handle
        key = PrivateKey.from_bytes("k256", account.signing_key)
        resigned: CommitResult | None = None
        if not decode_commit(raw, head.cid).is_signed_by(key.public_key):
            # After importRepo the head is the old host's commit (its key, its rev): announce
            # the same tree re-signed with this host's key under a later rev instead.
            resigned = tx.open_repo().resign(key)
            tx.apply_commit(resigned)
        tx.append_event(status_event(did, status))
        tx.append_event(lambda seq, time: IdentityEvent(seq=seq, did=did, time=time, handle=handle))
        if resigned is not None:
            return tx.append_event(resigned.to_sync_event).seq
        car = write_car([head.cid], [(head.cid, raw)])
        rev = head.rev
        last = tx.append_event(lambda seq, time: SyncEvent(seq=seq, did=did, blocks=car, rev=rev, time=time))
        return last.seq


def apply_admin_status(
    store: SQLiteStore,
    did: str,
    now_ms: int,
    *,
    takedown_ref: str | None = None,
    takedown: bool | None = None,
    deactivated: bool | None = None,
) -> tuple[AccountStatus, int]:
    """The admin's ``updateSubjectStatus`` on a repository: one transaction, one ``#account``.

    ``takedown`` True applies a takedown with ``takedown_ref``, False reverses
    it, None leaves it; ``deactivated`` likewise. With neither, the current
    status is announced again (the reference's way to re-emit). A takedown
    revokes every refresh token of the account, after the commit.
    """
    with store.transaction(did) as tx:
        account = tx.account()
        if account is None:
            raise XrpcError("NotFound", "Account not found", 400)
        status: AccountStatus = account.status
        if takedown is not None:
            status = tx.set_takedown(takedown_ref if takedown else None, now_ms=now_ms)
        if deactivated is not None:
            status = tx.set_deactivated(deactivated, now_ms=now_ms)
        seq = tx.append_event(status_event(did, status)).seq
    if takedown:
        store.revoke_refresh_tokens(did)
    return status, seq


def delete_account(store: SQLiteStore, did: str) -> int:
    """Delete everything of the account and its earlier events; then ``#account deleted``; its seq."""
    with store.transaction(did) as tx:
        if tx.account() is None:
            raise XrpcError("NotFound", "Account not found", 400)
        tx.delete_account()
        return tx.append_event(status_event(did, "deleted")).seq


# --- checks ---------------------------------------------------------------------------------------


async def did_problem(host: HostContext, account: Account) -> str | None:
    """Why the account's DID document does not name this host (None when it does).

    The reference's ``assertValidDidDocumentForService``: the directory's
    current state lists the host's rotation key, this host's URL as
    ``atproto_pds`` and the account's signing key as ``atproto``.
    """
    if not account.did.startswith("did:plc:"):
        return None  # a did:web is the operator's to publish; nothing here can change it
    try:
        state = (await fetch_verified_log(host.http, host.plc_url, account.did)).state
    except AtrepoError as exc:
        return f"could not resolve the DID: {exc.message}"
    if state is None:
        return "the DID is tombstoned"
    if host.secrets.rotation_key.public_key.did_key() not in state.rotation_keys:
        return "the DID's rotation keys do not include this host's"
    pds = state.services.get("atproto_pds")
    if pds is None or pds.endpoint.rstrip("/") != host.public_url.rstrip("/"):
        return "the DID document's atproto_pds endpoint is not this host"
    if state.verification_methods.get("atproto") != host.signing_key(account).public_key.did_key():
        return "the DID document's atproto key does not match the account's signing key"
    return None


def _delete_after_ms(value: Any) -> int | None:
    if value is None:
        return None
    moment: datetime = parse_datetime(value)
    return int(moment.timestamp() * 1000)


# --- handlers -------------------------------------------------------------------------------------


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare ``server.activateAccount``, ``deactivateAccount``, ``requestAccountDelete``, ``deleteAccount``.

    Each answers as the reference host does; see the module's docstring for the events.
    """
    verify = host.tokens.verify_full_access  # app-password sessions: 400 InvalidToken "Bad token scope"
    clock = host.tokens.clock_ms

    async def own_account(ctx: XrpcContext) -> Account:
        creds: AccessCredentials = ctx.auth
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None:
            raise account_not_found()
        return account

    @router.procedure("com.atproto.server.activateAccount", auth=verify)
    async def activate(ctx: XrpcContext) -> None:
        account = await own_account(ctx)
        if account.status in ("takendown", "suspended"):
            raise XrpcError("AccountNotFound", "user not found", 400)
        problem = await did_problem(host, account)
        if problem is not None:
            raise InvalidRequest(f"Cannot activate: {problem}")
        seq = await host.worker.run(activate_account, account.did, clock())
        await host.notify(seq, commits=0)
        log.info("account activated: %s", account.did)

    @router.procedure("com.atproto.server.deactivateAccount", auth=verify)
    async def deactivate(ctx: XrpcContext) -> None:
        account = await own_account(ctx)
        body = ctx.input or {}
        delete_after = _delete_after_ms(body.get("deleteAfter"))
        seq = await host.worker.run(deactivate_account, account.did, clock(), delete_after)
        await host.notify(seq, commits=0)
        log.info("account deactivated: %s", account.did)

    @router.procedure("com.atproto.server.requestAccountDelete", auth=verify)
    async def request_delete(ctx: XrpcContext) -> None:
        account = await own_account(ctx)
        token = new_email_token()
        await host.worker.run(SQLiteStore.put_email_token, account.did, DELETE_PURPOSE, token, clock())
        # No mail is sent: the operator hands the token over (atrepo account delete-token).
        log.warning(
            "account deletion requested for %s (%s): token %s, valid %d minutes",
            account.did,
            account.handle,
            token,
            EMAIL_TOKEN_TTL_MS // 60_000,
        )

    @router.procedure("com.atproto.server.deleteAccount")
    async def delete(ctx: XrpcContext) -> None:
        body = ctx.input
        did: str = body["did"]
        account = await host.worker.read(SQLiteStore.get_account, did)
        if account is None:
            raise InvalidRequest("account not found")
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, verify_password, body["password"], account.password_hash):
            raise AuthRequired("Invalid did or password")
        stored = await host.worker.read(SQLiteStore.get_email_token, did, DELETE_PURPOSE)
        given = str(body["token"]).strip().upper()
        if stored is None or not hmac.compare_digest(stored.token.encode(), given.encode()):
            raise InvalidToken("Token is invalid")
        if clock() > stored.requested_ms + EMAIL_TOKEN_TTL_MS:
            raise ExpiredToken("Token is expired")
        seq = await host.worker.run(delete_account, did)
        await host.notify(seq, commits=0)
        log.info("account deleted by its owner: %s (%s)", did, account.handle)
