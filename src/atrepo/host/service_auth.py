"""Service auth on the host: tokens signed with an account's key, and ``getServiceAuth``.

Another service (an AppView, a chat service, a feed generator, another PDS
during a migration) has no session with this host; it trusts a call made on
an account's behalf because it carries a short-lived JWT signed with the
account's repository signing key, the key its DID document publishes. This
module mints those tokens (:func:`mint`, used by the proxy in
:mod:`atrepo.host.proxy`) and serves ``com.atproto.server.getServiceAuth``,
through which a client gets one to present itself.

Rules, as the reference PDS applies them (``getServiceAuth.ts`` and
``pipethrough.ts`` of ``@atproto/pds``):

* ``aud`` must be an atproto DID (``did:plc``/``did:web``) or a
  ``did#service`` reference, else 400 ``InvalidRequest``;
* ``exp`` (seconds since the epoch; 0 or absent: one minute from now) may not
  be in the past nor more than an hour ahead, nor more than a minute ahead
  for a token without ``lxm``: 400 ``BadExpiration``;
* account-management methods (:data:`PROTECTED_METHODS`) are never granted
  (400 ``InvalidRequest``) nor proxied (400 ``InvalidToken`` "Bad token
  method"): they must be called on the host itself;
* privileged methods (chat, ``createAccount``) need a privileged session, not
  a plain app-password one;
* a taken-down or suspended account may only get a token for
  ``createAccount`` (migrating away): otherwise 400 ``InvalidToken``
  "Bad token scope". A deleted account: 403 ``AccountNotFound``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.errors import InvalidRequest, InvalidToken, XrpcError
from atrepo.core.service_jwt import create_service_jwt
from atrepo.core.syntax import is_valid_did
from atrepo.store import Account, SQLiteStore
from atrepo.xrpc import XrpcContext, XrpcRouter

from .auth import ACCESS_SCOPE, AccessCredentials

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "CREATE_ACCOUNT",
    "MAX_LIFETIME_S",
    "MAX_METHODLESS_LIFETIME_S",
    "PRIVILEGED_METHODS",
    "PROTECTED_METHODS",
    "is_privileged",
    "is_protected",
    "mint",
    "register",
    "scope_is_privileged",
    "signer_account",
]

#: The furthest ``exp`` a client may ask for: one hour ahead; one minute without ``lxm``.
MAX_LIFETIME_S: Final = 60 * 60
MAX_METHODLESS_LIFETIME_S: Final = 60

CREATE_ACCOUNT: Final = "com.atproto.server.createAccount"

#: Account management: called on the host directly, never proxied, never service-authed
#: (the reference's list; NSIDs compare without case, as there).
PROTECTED_METHODS: Final = frozenset(
    name.lower()
    for name in (
        "com.atproto.admin.sendEmail",
        "com.atproto.identity.requestPlcOperationSignature",
        "com.atproto.identity.signPlcOperation",
        "com.atproto.identity.updateHandle",
        "com.atproto.server.activateAccount",
        "com.atproto.server.confirmEmail",
        "com.atproto.server.createAppPassword",
        "com.atproto.server.deactivateAccount",
        "com.atproto.server.getAccountInviteCodes",
        "com.atproto.server.getSession",
        "com.atproto.server.listAppPasswords",
        "com.atproto.server.requestAccountDelete",
        "com.atproto.server.requestEmailConfirmation",
        "com.atproto.server.requestEmailUpdate",
        "com.atproto.server.revokeAppPassword",
        "com.atproto.server.updateEmail",
    )
)

#: Methods a plain app-password session may not reach through us: private messages and
#: account creation elsewhere (the reference's ``PRIVILEGED_METHODS``).
PRIVILEGED_METHODS: Final = frozenset(
    name.lower()
    for name in (
        "chat.bsky.actor.deleteAccount",
        "chat.bsky.actor.exportAccountData",
        "chat.bsky.convo.deleteMessageForSelf",
        "chat.bsky.convo.getConvo",
        "chat.bsky.convo.getConvoForMembers",
        "chat.bsky.convo.getLog",
        "chat.bsky.convo.getMessages",
        "chat.bsky.convo.leaveConvo",
        "chat.bsky.convo.listConvos",
        "chat.bsky.convo.muteConvo",
        "chat.bsky.convo.sendMessage",
        "chat.bsky.convo.sendMessageBatch",
        "chat.bsky.convo.unmuteConvo",
        "chat.bsky.convo.updateRead",
        CREATE_ACCOUNT,
    )
)

#: Session scopes that reach privileged methods (a full session, a privileged app password).
_PRIVILEGED_SCOPES: Final = frozenset({ACCESS_SCOPE, "com.atproto.appPassPrivileged"})


def is_protected(nsid: str) -> bool:
    return nsid.lower() in PROTECTED_METHODS


def is_privileged(nsid: str) -> bool:
    return nsid.lower() in PRIVILEGED_METHODS


def scope_is_privileged(scope: str) -> bool:
    """Whether a session of ``scope`` may reach :data:`PRIVILEGED_METHODS`."""
    return scope in _PRIVILEGED_SCOPES


def _is_atproto_did(value: str) -> bool:
    if not is_valid_did(value):
        return False
    if value.startswith("did:plc:"):
        return len(value) == 32
    return value.startswith("did:web:")


def is_service_audience(aud: str) -> bool:
    """An atproto DID, or ``did#service`` with a non-empty service id (the reference's two forms)."""
    did, sep, fragment = aud.partition("#")
    if sep and (not fragment or "#" in fragment or any(c.isspace() for c in fragment)):
        return False
    return _is_atproto_did(did)


async def signer_account(host: HostContext, creds: AccessCredentials, *, lxm: str | None) -> Account:
    """The account a session speaks for, if it may have tokens signed for ``lxm`` (None: any method)."""
    account = await host.worker.read(SQLiteStore.get_account, creds.did)
    if account is None or account.status == "deleted":
        raise XrpcError("AccountNotFound", "Account not found", 403)
    if account.status in ("takendown", "suspended") and lxm != CREATE_ACCOUNT:
        raise InvalidToken("Bad token scope")
    return account


def mint(host: HostContext, account: Account, *, aud: str, lxm: str | None, exp: int | None = None) -> str:
    """A service-auth JWT from ``account`` to ``aud``, signed with its repository key (one minute)."""
    return create_service_jwt(
        host.signing_key(account),
        iss=account.did,
        aud=aud,
        iat=host.tokens.now_s(),
        exp=exp,
        lxm=lxm,
        jti=secrets.token_hex(16),
    )


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare ``com.atproto.server.getServiceAuth``."""

    @router.query("com.atproto.server.getServiceAuth", auth=host.tokens.verify_access)
    async def get_service_auth(ctx: XrpcContext) -> dict[str, Any]:
        creds: AccessCredentials = ctx.auth
        aud: str = ctx.params["aud"]
        exp: int | None = ctx.params.get("exp") or None
        lxm: str | None = ctx.params.get("lxm")
        if not is_service_audience(aud):
            raise InvalidRequest("aud must be a valid atproto DID or did#serviceId reference")
        account = await signer_account(host, creds, lxm=lxm)
        if lxm is not None and is_privileged(lxm) and not scope_is_privileged(creds.scope):
            raise InvalidRequest(
                f"insufficient access to request a service auth token for the following method: {lxm}"
            )
        if exp is not None:
            ahead_ms = exp * 1000 - host.tokens.clock_ms()
            if ahead_ms < 0:
                raise XrpcError("BadExpiration", "expiration is in past", 400)
            if ahead_ms > MAX_LIFETIME_S * 1000:
                raise XrpcError(
                    "BadExpiration",
                    "cannot request a token with an expiration more than an hour in the future",
                    400,
                )
            if lxm is None and ahead_ms > MAX_METHODLESS_LIFETIME_S * 1000:
                raise XrpcError(
                    "BadExpiration",
                    "cannot request a method-less token with an expiration more than a minute in the future",
                    400,
                )
        if lxm is not None and is_protected(lxm):
            raise InvalidRequest(
                f"cannot request a service auth token for the following protected method: {lxm}"
            )
        return {"token": mint(host, account, aud=aud, lxm=lxm, exp=exp)}
