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

PLC operations for a user who changes hosts or keys (accounts.md §7):

* ``getRecommendedDidCredentials``: what the DID should say for this host to
  serve the account: the host's rotation key, ``at://<handle>``, the
  account's signing key here (for an account migrating in, its fresh key) and
  this host's URL as ``atproto_pds``.
* ``requestPlcOperationSignature`` (full session): the reference mails a
  one-time token; we send no mail, so the token is written to the log at
  WARNING with the DID, and kept 15 minutes (the store's ``email_tokens``,
  purpose ``plc_operation``; ``SQLiteStore.list_email_tokens`` lists those
  pending for an operator).
* ``signPlcOperation {token, ...}``: an operation after the DID's last one,
  with the given fields replaced, signed with the host's rotation key and
  returned, not submitted. The token is used up only once an operation has
  been built (a directory outage does not cost the user a new token).
* ``submitPlcOperation {operation}``: for an account active here the
  operation must keep this host's rotation key, ``atproto_pds`` endpoint,
  ``atproto`` key and ``at://<handle>`` first in ``alsoKnownAs`` (the
  reference's refusals); a deactivated account (moving in or out) may submit
  any valid operation. Then the directory gets it, ``#identity`` (without a
  handle) is emitted and our cached document is refreshed.
* ``resolveDid``, ``resolveIdentity``, ``refreshIdentity``: through the DID
  cache shared with inbound service auth; ``DidNotFound`` (unknown DID),
  ``DidDeactivated`` (tombstoned or 410), ``HandleNotFound``; a handle that
  does not match both ways is reported as ``handle.invalid``, as the lexicon
  says. ``refreshIdentity`` refetches both directions.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.errors import (
    AccountTakedown,
    AtrepoError,
    DidDeactivated,
    DidNotFound,
    ExpiredToken,
    HandleNotAvailable,
    InvalidDIDDocument,
    InvalidHandle,
    InvalidPLCOperation,
    InvalidRequest,
    InvalidSyntax,
    InvalidToken,
    ResolutionError,
    UnsupportedDIDMethod,
    UnsupportedDomain,
    XrpcError,
)
from atrepo.core.events import IdentityEvent
from atrepo.core.syntax import normalize_handle
from atrepo.identity import limits as identity_limits
from atrepo.identity.document import DIDDocument
from atrepo.identity.fetch import get_bounded
from atrepo.identity.handle import INVALID_HANDLE
from atrepo.identity.plc.client import (
    MAX_AUDIT_LOG_BYTES,
    fetch_verified_log,
    submit_operation,
    verify_audit_log_bytes,
)
from atrepo.identity.plc.operations import (
    OPERATION,
    PLCState,
    Service,
    build_operation,
    check_operation,
    check_reference_limits,
)
from atrepo.store import Account, SQLiteStore
from atrepo.store.base import EmailToken
from atrepo.xrpc import XrpcContext, XrpcRouter

from .accounts import RESOLVE_TIMEOUT_S, check_new_handle
from .auth import AccessCredentials
from .inbound_auth import InboundAuth

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "PLC_TOKEN_LIFETIME_MS",
    "PLC_TOKEN_PURPOSE",
    "new_plc_token",
    "pending_plc_tokens",
    "plc_set_handle",
    "register",
    "store_handle",
]

log = logging.getLogger("atrepo.host.identity")

#: Page size of the counting reads of checkAccountStatus.
_PAGE: Final = 500

#: The store's token purpose for ``signPlcOperation`` and its lifetime (the reference's 15 minutes).
PLC_TOKEN_PURPOSE: Final = "plc_operation"
PLC_TOKEN_LIFETIME_MS: Final = 15 * 60 * 1000
_TOKEN_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _with_handle(also_known_as: tuple[str, ...], handle: str) -> list[str]:
    """``alsoKnownAs`` with its first ``at://`` entry replaced by the new handle (prepended if none)."""
    new = f"at://{handle}"
    for i, aka in enumerate(also_known_as):
        if aka.startswith("at://"):
            return [*also_known_as[:i], new, *also_known_as[i + 1 :]]
    return [new, *also_known_as]


def _current_handle(state: PLCState) -> str | None:
    return next((a[len("at://") :] for a in state.also_known_as if a.startswith("at://")), None)


def store_handle(store: SQLiteStore, did: str, handle: str) -> int:
    """Set the handle and append its ``#identity`` (updateHandle and the admin's updateAccountHandle)."""
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


async def plc_set_handle(host: HostContext, did: str, handle: str) -> None:
    """Send the directory an update naming ``handle`` in ``alsoKnownAs`` (nothing when it already does).

    Signed with the host's rotation key; shared by ``updateHandle`` and the
    admin's ``updateAccountHandle``.
    """
    try:
        audit = await fetch_verified_log(host.http, host.plc_url, did)
    except AtrepoError as exc:
        raise _plc_error(exc) from None
    state = audit.state
    if state is None:
        raise InvalidRequest("The DID is tombstoned in the PLC directory")
    if _current_handle(state) == handle:
        return
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


def _plc_error(exc: AtrepoError) -> XrpcError | InvalidRequest:
    if isinstance(exc, InvalidPLCOperation):
        return InvalidRequest(f"the PLC directory refused the operation: {exc.message}")
    return XrpcError("UpstreamFailure", f"the PLC directory could not be reached: {exc.message}", 502)


def register(router: XrpcRouter, host: HostContext, inbound: InboundAuth) -> None:
    """Declare ``identity.*`` (PLC operations and resolution) and ``server.checkAccountStatus``.

    ``inbound`` owns the DID cache the resolution endpoints read and the PLC
    endpoints refresh.
    """
    _register_plc(router, host, inbound)
    _register_resolution(router, host, inbound)
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
            await plc_set_handle(host, did, handle)
        head = await host.worker.run(store_handle, did, handle)
        inbound.resolver.purge(did)
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


# --- PLC operations ------------------------------------------------------------------------------


def new_plc_token() -> str:
    """A one-time token as the reference mails them: ten base32 letters, ``XXXXX-XXXXX``."""
    text = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(10))
    return f"{text[:5]}-{text[5:]}"


def pending_plc_tokens(store: SQLiteStore, now_ms: int) -> list[EmailToken]:
    """The PLC-operation tokens still valid at ``now_ms`` (for an operator to hand out)."""
    return store.list_email_tokens(PLC_TOKEN_PURPOSE, requested_after_ms=now_ms - PLC_TOKEN_LIFETIME_MS)


def _check_plc_token(store: SQLiteStore, did: str, token: str, now_ms: int) -> None:
    """Raise unless ``token`` is the account's current, unexpired PLC token (case-insensitive)."""
    stored = store.get_email_token(did, PLC_TOKEN_PURPOSE)
    if stored is None or not secrets.compare_digest(stored.token.upper(), token.upper()):
        raise InvalidToken("Token is invalid")
    if now_ms - stored.requested_ms >= PLC_TOKEN_LIFETIME_MS:
        raise ExpiredToken("Token is expired")


def _take_plc_token(store: SQLiteStore, did: str, token: str, now_ms: int) -> None:
    """*Writer.* Check the token and use it up, in one step of the writer (no double use)."""
    _check_plc_token(store, did, token, now_ms)
    store.delete_email_token(did, PLC_TOKEN_PURPOSE)


def _append_identity(store: SQLiteStore, did: str) -> int:
    with store.transaction(did) as tx:
        last = tx.append_event(lambda seq, time: IdentityEvent(seq=seq, did=did, time=time))
    return last.seq


def _methods_input(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidRequest(
            "verificationMethods must map names to did:key strings", path="verificationMethods"
        )
    return dict(value)


def _services_input(value: object) -> dict[str, Service]:
    if not isinstance(value, Mapping):
        raise InvalidRequest("services must map names to {type, endpoint}", path="services")
    out: dict[str, Service] = {}
    for name, svc in value.items():
        if (
            not isinstance(name, str)
            or not isinstance(svc, Mapping)
            or not isinstance(svc.get("type"), str)
            or not isinstance(svc.get("endpoint"), str)
        ):
            raise InvalidRequest("services must map names to {type, endpoint}", path="services")
        out[name] = Service(svc["type"], svc["endpoint"])
    return out


def _submission_problem(op: Mapping[str, Any], host: HostContext, account: Account) -> str | None:
    """Why an operation would take an account active here away from this host (None: it would not)."""
    if host.secrets.rotation_key.public_key.did_key() not in op["rotationKeys"]:
        return "Rotation keys do not include server's rotation key"
    pds = op["services"].get("atproto_pds")
    if not isinstance(pds, Mapping) or pds.get("type") != "AtprotoPersonalDataServer":
        return "Incorrect type on atproto_pds service"
    endpoint = pds.get("endpoint")
    if not isinstance(endpoint, str) or endpoint.rstrip("/") != host.public_url.rstrip("/"):
        return "Incorrect endpoint on atproto_pds service"
    if op["verificationMethods"].get("atproto") != host.signing_key(account).public_key.did_key():
        return "Incorrect signing key"
    aka = op["alsoKnownAs"]
    if account.handle and (not aka or aka[0] != f"at://{account.handle}"):
        return "Incorrect handle in alsoKnownAs"
    return None


def _register_plc(router: XrpcRouter, host: HostContext, inbound: InboundAuth) -> None:
    tokens = host.tokens

    async def _account(creds: AccessCredentials) -> Account:
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None or account.status == "deleted":
            raise XrpcError("AccountNotFound", "Account not found", 403)
        return account

    async def _plc_audit(did: str) -> tuple[PLCState, str]:
        """The DID's current state and the CID of its last operation (refusing did:web and tombstones)."""
        if not did.startswith("did:plc:"):
            raise InvalidRequest("Only did:plc identities have PLC operations")
        try:
            audit = await fetch_verified_log(host.http, host.plc_url, did)
        except AtrepoError as exc:
            raise _plc_error(exc) from None
        if audit.state is None:
            raise InvalidRequest("Did is tombstoned")
        return audit.state, audit.active[-1].cid

    @router.query("com.atproto.identity.getRecommendedDidCredentials", auth=tokens.verify_access)
    async def get_recommended_did_credentials(ctx: XrpcContext) -> dict[str, Any]:
        account = await _account(ctx.auth)
        ctx.response_headers["Cache-Control"] = "private"
        out: dict[str, Any] = {
            "rotationKeys": [host.secrets.rotation_key.public_key.did_key()],
            "verificationMethods": {"atproto": host.signing_key(account).public_key.did_key()},
            "services": {
                "atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": host.public_url},
            },
        }
        if account.handle:
            out["alsoKnownAs"] = [f"at://{account.handle}"]
        return out

    @router.procedure("com.atproto.identity.requestPlcOperationSignature", auth=tokens.verify_full_access)
    async def request_plc_operation_signature(ctx: XrpcContext) -> None:
        account = await _account(ctx.auth)
        token = new_plc_token()
        await host.worker.run(
            SQLiteStore.put_email_token, account.did, PLC_TOKEN_PURPOSE, token, tokens.clock_ms()
        )
        # No mail is sent: the operator hands this to the account holder.
        log.warning(
            "PLC operation token for %s: %s (valid %d minutes)",
            account.did,
            token,
            PLC_TOKEN_LIFETIME_MS // 60_000,
        )

    @router.procedure("com.atproto.identity.signPlcOperation", auth=tokens.verify_full_access)
    async def sign_plc_operation(ctx: XrpcContext) -> dict[str, Any]:
        account = await _account(ctx.auth)
        body: dict[str, Any] = ctx.input
        token = body.get("token")
        if not token:
            raise InvalidRequest("email confirmation token required to sign PLC operations")
        did = account.did
        await host.worker.read(_check_plc_token, did, token, tokens.clock_ms())
        state, prev = await _plc_audit(did)
        rotation_keys = body.get("rotationKeys")
        also_known_as = body.get("alsoKnownAs")
        methods = body.get("verificationMethods")
        services = body.get("services")
        op = build_operation(
            host.secrets.rotation_key,
            rotation_keys=state.rotation_keys if rotation_keys is None else rotation_keys,
            verification_methods=state.verification_methods if methods is None else _methods_input(methods),
            also_known_as=state.also_known_as if also_known_as is None else also_known_as,
            services=state.services if services is None else _services_input(services),
            prev=prev,
        )
        try:
            check_operation(op)
            check_reference_limits(op)
        except InvalidPLCOperation as exc:
            raise InvalidRequest(f"Invalid operation: {exc}") from None
        await host.worker.run(_take_plc_token, did, token, tokens.clock_ms())
        log.info("signed a PLC operation for %s (not submitted)", did)
        return {"operation": op}

    @router.procedure("com.atproto.identity.submitPlcOperation", auth=tokens.verify_access)
    async def submit_plc_operation(ctx: XrpcContext) -> None:
        account = await _account(ctx.auth)
        did = account.did
        op = ctx.input["operation"]
        try:
            kind = check_operation(op)
        except InvalidPLCOperation:
            raise InvalidRequest("Invalid operation") from None
        if kind != OPERATION or "sig" not in op:
            raise InvalidRequest("Invalid operation")
        if not did.startswith("did:plc:"):
            raise InvalidRequest("Only did:plc identities have PLC operations")
        if account.active:
            problem = _submission_problem(op, host, account)
            if problem is not None:
                raise InvalidRequest(problem)
        try:
            await submit_operation(host.http, host.plc_url, did, op)
        except AtrepoError as exc:
            log.warning("directory refused the operation submitted by %s: %s", did, exc)
            raise _plc_error(exc) from None
        head = await host.worker.run(_append_identity, did)
        await host.notify(head, commits=0)
        log.info("submitted a PLC operation for %s", did)
        try:
            await inbound.resolver.resolve(did, force_refresh=True)
        except AtrepoError as exc:
            log.error("could not refresh the DID document of %s after a PLC update: %s", did, exc)


# --- resolution ----------------------------------------------------------------------------------


def _handle_not_found(handle: str) -> XrpcError:
    # 400 as resolveHandle answers it (the HandleNotFound class is a 502 resolution failure)
    return XrpcError("HandleNotFound", f"Unable to resolve handle: {handle[:253]}", 400)


def _register_resolution(router: XrpcRouter, host: HostContext, inbound: InboundAuth) -> None:
    resolver = inbound.resolver

    async def _why_not_found(did: str, exc: ResolutionError) -> AtrepoError:
        """Tell an unknown DID from a deactivated one, or the directory failing, after a failed fetch."""
        try:
            if did.startswith("did:plc:"):
                url = f"{host.plc_url.rstrip('/')}/{did}/log/audit"
                status, body = await get_bounded(
                    host.http, url, max_bytes=MAX_AUDIT_LOG_BYTES, timeout=identity_limits.LOOKUP_TIMEOUT_S
                )
                if status == 200 and verify_audit_log_bytes(body, did).state is None:
                    return DidDeactivated(f"DID has been deactivated: {did}")
            else:
                status, _ = await get_bounded(
                    host.http,
                    resolver.document_url(did),
                    max_bytes=identity_limits.MAX_DID_DOCUMENT_BYTES,
                    timeout=identity_limits.LOOKUP_TIMEOUT_S,
                )
        except AtrepoError as probe:
            return XrpcError("UpstreamFailure", f"could not resolve {did}: {probe}", 502)
        if status in (404, 410):
            if status == 410:
                return DidDeactivated(f"DID has been deactivated: {did}")
            return DidNotFound(f"DID not found: {did}")
        if 400 <= status < 500:
            return InvalidRequest(f"could not resolve {did}: {exc}")
        return XrpcError("UpstreamFailure", f"could not resolve {did}: {exc}", 502)

    async def _document(did: str, *, force_refresh: bool) -> DIDDocument:
        try:
            return await resolver.resolve(did, force_refresh=force_refresh)
        except UnsupportedDIDMethod as exc:
            raise DidNotFound(f"DID not found: {exc}") from None
        except ResolutionError as exc:
            why = await _why_not_found(did, exc)
            if isinstance(why, DidNotFound | DidDeactivated):
                # the cache keeps a stale document when a refresh fails; this one is gone for good
                resolver.purge(did)
            raise why from None
        except InvalidDIDDocument as exc:
            raise InvalidRequest(f"invalid DID document: {exc}") from None

    async def _handle_to_did(handle: str, *, force_refresh: bool) -> str | None:
        """The DID ``handle`` names: a local account's first; None when it resolves to nothing."""
        account = await host.worker.read(SQLiteStore.get_account_by_handle, handle)
        if account is not None:
            return account.did
        if any(handle.endswith(d.lower()) for d in host.config.user_domains):
            return None
        try:
            return await asyncio.wait_for(
                host.handle_resolver.resolve(handle, force_refresh=force_refresh), RESOLVE_TIMEOUT_S
            )
        except (AtrepoError, TimeoutError) as exc:
            log.info("resolveIdentity %s: %s", handle, exc)
            return None

    async def _verified_handle(doc: DIDDocument, *, force_refresh: bool) -> str:
        """The document's handle if it resolves back to the DID, else ``handle.invalid``."""
        if doc.handle is None:
            return INVALID_HANDLE
        back = await _handle_to_did(doc.handle, force_refresh=force_refresh)
        return doc.handle if back == doc.did else INVALID_HANDLE

    async def _identity(identifier: str, *, force_refresh: bool) -> dict[str, Any]:
        if identifier.startswith("did:"):
            doc = await _document(identifier, force_refresh=force_refresh)
            handle = await _verified_handle(doc, force_refresh=force_refresh)
        else:
            try:
                wanted = normalize_handle(identifier)
            except InvalidSyntax:
                raise _handle_not_found(identifier) from None
            did = await _handle_to_did(wanted, force_refresh=force_refresh)
            if did is None:
                raise _handle_not_found(wanted)
            doc = await _document(did, force_refresh=force_refresh)
            handle = wanted if doc.handle == wanted else INVALID_HANDLE
        return {"did": doc.did, "handle": handle, "didDoc": dict(doc.doc)}

    @router.query("com.atproto.identity.resolveDid")
    async def resolve_did(ctx: XrpcContext) -> dict[str, Any]:
        doc = await _document(ctx.params["did"], force_refresh=False)
        return {"didDoc": dict(doc.doc)}

    @router.query("com.atproto.identity.resolveIdentity")
    async def resolve_identity(ctx: XrpcContext) -> dict[str, Any]:
        return await _identity(ctx.params["identifier"], force_refresh=False)

    @router.procedure("com.atproto.identity.refreshIdentity")
    async def refresh_identity(ctx: XrpcContext) -> dict[str, Any]:
        return await _identity(ctx.input["identifier"], force_refresh=True)
