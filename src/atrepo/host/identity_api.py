"""Identity changes and account status: ``identity.updateHandle``, ``server.checkAccountStatus``.

Behaviour follows the reference host as accounts.md §6-§7 records it:

* ``updateHandle`` checks the handle (a user domain: the createAccount rules;
  another domain: it must already resolve to the caller's DID), refuses one
  held by another account (``HandleNotAvailable``), then for a did:plc sends
  the directory an update operation signed with the host's rotation key
  (``alsoKnownAs``' ``at://`` entry replaced, everything else kept, ``prev`` =
  the last operation). The handle and an ``#identity {handle}`` event are
  stored in one transaction afterwards. An unchanged handle sends no
  operation but still emits ``#identity`` (the reference's way to re-announce
  an identity).
* ``checkAccountStatus``: ``validDid`` is the activation check (the directory's
  current state names the host's rotation key, this host's URL as
  ``atproto_pds`` and the account's signing key); the counts come from the
  store; ``privateStateValues`` is 0 as in the reference, and
  ``importedBlobs`` counts the referenced blobs that are present.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.errors import (
    AccountTakedown,
    AtrepoError,
    HandleNotAvailable,
    InvalidHandle,
    InvalidPLCOperation,
    InvalidRequest,
    InvalidSyntax,
    UnsupportedDomain,
    XrpcError,
)
from atrepo.core.events import IdentityEvent
from atrepo.core.syntax import normalize_handle
from atrepo.identity.plc.client import fetch_verified_log, submit_operation
from atrepo.identity.plc.operations import PLCState, build_operation
from atrepo.store import Account, SQLiteStore
from atrepo.xrpc import XrpcContext, XrpcRouter

from .accounts import RESOLVE_TIMEOUT_S, check_new_handle
from .auth import AccessCredentials

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["register"]

log = logging.getLogger("atrepo.host.identity")

#: Page size of the counting reads of checkAccountStatus.
_PAGE: Final = 500


def _with_handle(also_known_as: tuple[str, ...], handle: str) -> list[str]:
    """``alsoKnownAs`` with its first ``at://`` entry replaced by the new handle (prepended if none)."""
    new = f"at://{handle}"
    for i, aka in enumerate(also_known_as):
        if aka.startswith("at://"):
            return [*also_known_as[:i], new, *also_known_as[i + 1 :]]
    return [new, *also_known_as]


def _current_handle(state: PLCState) -> str | None:
    return next((a[len("at://") :] for a in state.also_known_as if a.startswith("at://")), None)


def _store_handle(store: SQLiteStore, did: str, handle: str) -> int:
    with store.transaction(did) as tx:
        try:
            tx.set_handle(handle)
        except InvalidRequest as exc:
            if exc.path == "handle":
                raise HandleNotAvailable(f"Handle already taken: {handle}") from None
            raise
        last = tx.append_event(lambda seq, time: IdentityEvent(seq=seq, did=did, time=time, handle=handle))
    return last.seq


def _counts(store: SQLiteStore, did: str) -> tuple[int, int, int, int]:
    """(blocks, indexed records, expected blobs, imported blobs) of ``did``'s repository."""
    blocks = sum(1 for _ in store.blocks_since(did, None))
    records = 0
    for collection in store.list_collections(did):
        cursor: str | None = None
        while page := store.list_records(did, collection, cursor=cursor, limit=_PAGE):
            records += len(page)
            cursor = page[-1].rkey
    expected = 0
    blob_cursor: str | None = None
    while cids := store.list_blobs(did, cursor=blob_cursor, limit=_PAGE):
        expected += len(cids)
        blob_cursor = str(cids[-1])
    missing: set[str] = set()
    missing_cursor: str | None = None
    while rows := store.list_missing_blobs(did, cursor=missing_cursor, limit=_PAGE):
        missing.update(str(cid) for cid, _ in rows)
        new_cursor = str(rows[-1][0])
        if new_cursor == missing_cursor:  # one blob referenced by more than a page of records
            break
        missing_cursor = new_cursor
    return blocks, records, expected, expected - len(missing)


def _plc_error(exc: AtrepoError) -> XrpcError | InvalidRequest:
    if isinstance(exc, InvalidPLCOperation):
        return InvalidRequest(f"the PLC directory refused the operation: {exc.message}")
    return XrpcError("UpstreamFailure", f"the PLC directory could not be reached: {exc.message}", 502)


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare ``identity.updateHandle`` and ``server.checkAccountStatus`` on ``router``."""
    verify = host.tokens.verify_access

    async def _account(ctx: XrpcContext) -> Account:
        creds: AccessCredentials = ctx.auth
        ctx.response_headers["Cache-Control"] = "private"
        ctx.response_headers["Vary"] = "Authorization"
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None:
            raise XrpcError("AccountNotFound", "Account not found", 403)
        return account

    async def _check_handle(raw: str, did: str) -> str:
        try:
            return check_new_handle(raw, host.config.user_domains)
        except UnsupportedDomain:
            pass
        try:
            handle = normalize_handle(raw)
        except InvalidSyntax as exc:  # pragma: no cover - check_new_handle raised InvalidHandle first
            raise InvalidHandle(f"Input/handle must be a valid handle: {exc}") from None
        try:
            resolved = await asyncio.wait_for(host.handle_resolver.resolve(handle), RESOLVE_TIMEOUT_S)
        except (AtrepoError, TimeoutError):
            resolved = None
        if resolved != did:
            raise UnsupportedDomain("External handle did not resolve to DID")
        return handle

    @router.procedure("com.atproto.identity.updateHandle", auth=verify)
    async def update_handle(ctx: XrpcContext) -> None:
        account = await _account(ctx)
        did = account.did
        if account.status == "takendown":
            raise AccountTakedown("Account has been taken down")
        handle = await _check_handle(ctx.input["handle"], did)
        holder = await host.worker.read(SQLiteStore.get_account_by_handle, handle)
        if holder is not None and holder.did != did:
            raise HandleNotAvailable(f"Handle already taken: {handle}")
        if did.startswith("did:plc:"):
            try:
                audit = await fetch_verified_log(host.http, host.plc_url, did)
            except AtrepoError as exc:
                raise _plc_error(exc) from None
            state = audit.state
            if state is None:
                raise InvalidRequest("The DID is tombstoned in the PLC directory")
            if _current_handle(state) != handle:
                op = build_operation(
                    host.secrets.rotation_key,
                    rotation_keys=state.rotation_keys,
                    verification_methods=state.verification_methods,
                    also_known_as=_with_handle(state.also_known_as, handle),
                    services=state.services,
                    prev=audit.active[-1].cid,
                )
                try:
                    await submit_operation(host.http, host.plc_url, did, op)
                except AtrepoError as exc:
                    log.warning("directory refused the handle update of %s: %s", did, exc)
                    raise _plc_error(exc) from None
        head = await host.worker.run(_store_handle, did, handle)
        await host.notify(head, commits=0)
        log.info("handle of %s: %s -> %s", did, account.handle, handle)

    async def _valid_did(account: Account) -> bool:
        if not account.did.startswith("did:plc:"):
            return False
        try:
            state = (await fetch_verified_log(host.http, host.plc_url, account.did)).state
        except AtrepoError as exc:
            log.info("checkAccountStatus %s: %s", account.did, exc)
            return False
        if state is None:
            return False
        pds = state.services.get("atproto_pds")
        return (
            host.secrets.rotation_key.public_key.did_key() in state.rotation_keys
            and pds is not None
            and pds.type == "AtprotoPersonalDataServer"
            and pds.endpoint.rstrip("/") == host.public_url.rstrip("/")
            and state.verification_methods.get("atproto") == host.signing_key(account).public_key.did_key()
        )

    @router.query("com.atproto.server.checkAccountStatus", auth=verify)
    async def check_account_status(ctx: XrpcContext) -> dict[str, Any]:
        account = await _account(ctx)
        head = account.repo_head
        if head is None:
            raise InvalidRequest("No repo root found")
        valid = await _valid_did(account)
        blocks, records, expected, imported = await host.worker.read(_counts, account.did)
        return {
            "activated": account.active,
            "validDid": valid,
            "repoCommit": str(head.cid),
            "repoRev": head.rev,
            "repoBlocks": blocks,
            "indexedRecords": records,
            "privateStateValues": 0,
            "expectedBlobs": expected,
            "importedBlobs": imported,
        }
