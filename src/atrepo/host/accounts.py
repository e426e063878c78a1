"""Accounts and sessions: ``com.atproto.server.*`` and ``com.atproto.identity.resolveHandle``.

Behaviour follows the reference host as accounts.md §2-§3 records it. What
differs on purpose:

* ``createAccount`` stores the account, its genesis commit and the four
  events (``#identity``, ``#account`` active, ``#commit``, ``#sync``) in one
  store transaction, so a crash leaves either all of them or none (the
  reference writes two databases and can lose the events).
* A taken handle is ``HandleNotAvailable`` (the reference sends a bare
  ``InvalidRequest``), as the lexicon names it.
* Passwords are required (the lexicon allows none for entryway setups, which
  atrepo is not) and hashed with scrypt, each with its own salt.
* ``createAccount`` with an existing ``did`` (a migration in) needs a
  service-auth token that DID issued for this host and this method; the
  account starts deactivated with a fresh signing key and an empty repo, and
  nothing is sent to the directory or announced on the firehose until it is
  activated (accounts.md §2 step 6, §11).

The did:plc is registered with the directory *before* any local row exists,
as the reference does: a failure afterwards leaves an orphan DID in the
directory that points here but is unknown to us, which is harmless (no one
holds its signing key); the opposite order could leave a local account with
no identity.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.errors import (
    AccountTakedown,
    AtrepoError,
    AuthRequired,
    ExpiredToken,
    HandleNotAvailable,
    InvalidHandle,
    InvalidPassword,
    InvalidRequest,
    InvalidSyntax,
    UnsupportedDomain,
    XrpcError,
)
from atrepo.core.events import AccountEvent, IdentityEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo
from atrepo.core.syntax import is_valid_did, normalize_handle
from atrepo.identity.plc.client import submit_operation
from atrepo.identity.plc.operations import (
    Service,
    build_operation,
    build_tombstone,
    genesis_did,
    operation_cid,
    state_after,
)
from atrepo.store import Account, RefreshToken, SQLiteStore
from atrepo.store.base import AccountStatus
from atrepo.store.sqlite import SQLiteTransaction
from atrepo.xrpc import XrpcContext, XrpcRouter

from . import app_passwords
from .auth import REFRESH_GRACE_MS, AccessCredentials, RefreshCredentials, authorization, new_token_id

if TYPE_CHECKING:
    from .app import HostContext
    from .inbound_auth import InboundAuth

__all__ = ["check_new_password", "hash_password", "register", "verify_password"]

log = logging.getLogger("atrepo.host.accounts")

#: Reference limits: a new password is at most 256 characters; login accepts up to 512 (old passwords).
MAX_NEW_PASSWORD: Final = 256
MAX_LOGIN_PASSWORD: Final = 512
#: The label before a user domain: 3 to 18 characters (reference ``ensureHandleServiceConstraints``).
MIN_HANDLE_LABEL: Final = 3
MAX_HANDLE_LABEL: Final = 18
#: A few names under a user domain that would mislead if anyone could take them.
RESERVED_LABELS: Final = frozenset(
    {
        "admin",
        "administrator",
        "root",
        "support",
        "help",
        "security",
        "abuse",
        "postmaster",
        "www",
        "mod",
        "moderator",
        "staff",
        "system",
        "atproto",
        "bsky",
        "pds",
        "plc",
        "relay",
        "api",
        "xrpc",
    }
)
#: How long resolveHandle waits on DNS/HTTPS for a handle that is not ours.
RESOLVE_TIMEOUT_S: Final = 5.0

# --- passwords ----------------------------------------------------------------------------

#: scrypt cost: N=2^15, r=8, p=1 (32 MiB, ~50-100 ms): OWASP's minimum for scrypt.
_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``: self-describing, so the cost can rise without breaking old hashes."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string (False for anything else)."""
    if stored is None:
        return False
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


@functools.cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_hex(16))


# --- handles ------------------------------------------------------------------------------


def check_new_handle(handle: str, user_domains: tuple[str, ...]) -> str:
    """The normalized handle if an account may be created with it here (accounts.md §2 step 3)."""
    try:
        normal = normalize_handle(handle)
    except InvalidSyntax as exc:
        raise InvalidHandle(f"Input/handle must be a valid handle: {exc}") from None
    domain = next((d for d in user_domains if normal.endswith(d.lower())), None)
    if domain is None:
        raise UnsupportedDomain("Not a supported handle domain")
    front = normal[: -len(domain)]
    if "." in front:
        raise InvalidHandle("Invalid characters in handle")
    if len(front) < MIN_HANDLE_LABEL:
        raise InvalidHandle("Handle too short")
    if len(front) > MAX_HANDLE_LABEL:
        raise InvalidHandle("Handle too long")
    if front in RESERVED_LABELS:
        raise HandleNotAvailable("Reserved handle")
    return normal


# --- store work (runs on the writer thread) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Created:
    account: Account
    head_seq: int


def _account_row(
    tx: SQLiteTransaction,
    handle: str,
    key: PrivateKey,
    email: str | None,
    password_hash: str,
    status: AccountStatus,
) -> Account:
    """The account's row, a taken handle or email answered as the reference does (both paths)."""
    try:
        return tx.create_account(
            handle=handle, signing_key=key.to_bytes(), email=email, password_hash=password_hash, status=status
        )
    except InvalidRequest as exc:
        if exc.path == "handle":
            raise HandleNotAvailable(f"Handle already taken: {handle}") from None
        if exc.path == "email":
            raise InvalidRequest(f"Email already taken: {email}") from None
        raise


def _store_new_account(
    store: SQLiteStore,
    did: str,
    handle: str,
    email: str | None,
    password_hash: str,
    key: PrivateKey,
    refresh_id: str,
    refresh_expires_ms: int,
) -> _Created:
    genesis = Repo.create(did, key, [])
    with store.transaction(did) as tx:
        account = _account_row(tx, handle, key, email, password_hash, "active")
        tx.apply_commit(genesis)
        tx.append_event(lambda seq, time: IdentityEvent(seq=seq, did=did, time=time, handle=handle))
        tx.append_event(lambda seq, time: AccountEvent(seq=seq, did=did, time=time, active=True))
        tx.append_event(genesis.to_event)
        last = tx.append_event(genesis.to_sync_event)
    store.create_refresh_token(RefreshToken(refresh_id, did, refresh_expires_ms))
    return _Created(account, last.seq)


def _store_migrated_account(
    store: SQLiteStore,
    did: str,
    handle: str,
    email: str | None,
    password_hash: str,
    key: PrivateKey,
    refresh_id: str,
    refresh_expires_ms: int,
) -> Account:
    """An account moving in (accounts.md §2 step 6): deactivated, an empty repo under a fresh key, no events.

    Nothing is announced: the DID still names the old host, and this host
    speaks for the account only once it is activated (``lifecycle``), which
    re-signs whatever ``importRepo`` stored with ``key``.
    """
    genesis = Repo.create(did, key, [])
    with store.transaction(did) as tx:
        if tx.account() is not None:
            raise InvalidRequest(f"An account already exists for {did} on this host", path="did")
        account = _account_row(tx, handle, key, email, password_hash, "deactivated")
        tx.apply_commit(genesis)
    store.create_refresh_token(RefreshToken(refresh_id, did, refresh_expires_ms))
    return account


def _find_login(store: SQLiteStore, identifier: str) -> Account | None:
    ident = identifier.strip().lower()
    if "@" in ident:
        return store.get_account_by_email(ident)
    if ident.startswith("did:"):
        return store.get_account(ident)
    return store.get_account_by_handle(ident)


async def _tombstone(host: HostContext, did: str, genesis: dict[str, Any]) -> None:
    try:
        await submit_operation(
            host.http, host.plc_url, did, build_tombstone(host.secrets.rotation_key, operation_cid(genesis))
        )
    except Exception as exc:
        log.warning("could not tombstone the orphan DID %s: %s", did, exc)
    else:
        log.info("tombstoned %s: its account was not created", did)


# --- handlers ------------------------------------------------------------------------------


def _session_fields(account: Account) -> dict[str, Any]:
    out: dict[str, Any] = {"did": account.did, "handle": account.handle}
    if account.email is not None:
        out["email"] = account.email
        out["emailConfirmed"] = False
    out["active"] = account.active
    if not account.active:
        out["status"] = account.status
    return out


def _private(ctx: XrpcContext) -> None:
    """Replies that depend on the caller's token must not be shared by caches (as the reference)."""
    ctx.response_headers["Cache-Control"] = "private"
    ctx.response_headers["Vary"] = "Authorization"


def check_new_password(password: str | None) -> str:
    """A new password's rules (createAccount, the admin's reset): present, not longer than the limit."""
    if not password:
        raise InvalidPassword("Password is required")
    if len(password) > MAX_NEW_PASSWORD:
        raise InvalidPassword(f"Password too long (at most {MAX_NEW_PASSWORD} characters)")
    return password


def _new_email(email: str | None) -> str | None:
    """``createAccount``'s email, normalised (trimmed, lower case), if one was given."""
    if email is None:
        return None
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise InvalidRequest("This email address is not supported, please use a different email.")
    return email


def register(router: XrpcRouter, host: HostContext, inbound: InboundAuth | None = None) -> None:
    """Declare the account and session methods on ``router``, bound to ``host``.

    ``inbound`` verifies the service-auth token of a ``createAccount`` that
    brings its own DID (a migration); without it such calls are refused.
    """
    tokens = host.tokens

    async def _migration_handle(raw: str, did: str) -> str:
        """A handle under our domains, or one elsewhere that already resolves to ``did`` (reference)."""
        try:
            return check_new_handle(raw, host.config.user_domains)
        except UnsupportedDomain:
            pass
        handle = normalize_handle(raw)
        try:
            resolved = await asyncio.wait_for(host.handle_resolver.resolve(handle), RESOLVE_TIMEOUT_S)
        except (AtrepoError, TimeoutError):
            resolved = None
        if resolved != did:
            raise UnsupportedDomain("External handle did not resolve to DID")
        return handle

    async def _migration_requester(ctx: XrpcContext, did: str) -> None:
        """The Bearer service token must be issued by ``did`` for this host and createAccount (else 401)."""
        parsed = authorization(ctx.request)
        requester = None
        if parsed is not None and parsed[0] == "Bearer" and parsed[1] and inbound is not None:
            requester = await inbound.verify(parsed[1], lxm="com.atproto.server.createAccount")
        if requester is None or requester.partition("#")[0] != did:
            raise AuthRequired(f"Missing auth to create account with did: {did}")

    async def _create_migrated(ctx: XrpcContext, did: str) -> dict[str, Any]:
        """``createAccount`` with an existing DID: no directory operation, the account starts deactivated."""
        body = ctx.input
        if not is_valid_did(did):
            raise InvalidRequest(f"Input/did must be a valid DID: {did[:100]}", path="did")
        await _migration_requester(ctx, did)
        handle = await _migration_handle(body["handle"], did)
        password = check_new_password(body.get("password"))
        email = _new_email(body.get("email"))
        if await host.worker.read(SQLiteStore.get_account, did) is not None:
            raise InvalidRequest(f"An account already exists for {did} on this host", path="did")
        if await host.worker.read(SQLiteStore.get_account_by_handle, handle) is not None:
            raise HandleNotAvailable(f"Handle already taken: {handle}")
        if email is not None and await host.worker.read(SQLiteStore.get_account_by_email, email) is not None:
            raise InvalidRequest(f"Email already taken: {email}")
        key = PrivateKey.generate("k256")
        password_hash = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        refresh_id = new_token_id()
        refresh_expires = tokens.refresh_expiry_ms()
        await host.worker.run(
            _store_migrated_account, did, handle, email, password_hash, key, refresh_id, refresh_expires
        )
        log.info("account created for a migration in: %s %s (deactivated)", did, handle)
        session = tokens.session(did, refresh_id, refresh_expires)
        return {
            "accessJwt": session.access_jwt,
            "refreshJwt": session.refresh_jwt,
            "handle": handle,
            "did": did,
        }

    @router.query("com.atproto.server.describeServer")
    async def describe_server(ctx: XrpcContext) -> dict[str, Any]:
        return {
            "did": host.service_did,
            "availableUserDomains": list(host.config.user_domains),
            "inviteCodeRequired": False,
            "links": {},
            "contact": {},
        }

    @router.procedure("com.atproto.server.createAccount")
    async def create_account(ctx: XrpcContext) -> dict[str, Any]:
        limits = host.rate_limits
        limits.charge(ctx.request, "com.atproto.server.createAccount", limits.client_ip(ctx.request))
        body = ctx.input
        if body.get("plcOp") is not None:
            raise InvalidRequest("Unsupported input: plcOp")
        if body.get("did") is not None:
            return await _create_migrated(ctx, str(body["did"]))
        handle = check_new_handle(body["handle"], host.config.user_domains)
        password = check_new_password(body.get("password"))
        email = _new_email(body.get("email"))
        # Cheap checks before the directory sees anything; the transaction checks again.
        if await host.worker.read(SQLiteStore.get_account_by_handle, handle) is not None:
            raise HandleNotAvailable(f"Handle already taken: {handle}")
        if email is not None and await host.worker.read(SQLiteStore.get_account_by_email, email) is not None:
            raise InvalidRequest(f"Email already taken: {email}")
        recovery = body.get("recoveryKey")
        rotation_keys = ([recovery] if recovery else []) + [host.secrets.rotation_key.public_key.did_key()]
        key = PrivateKey.generate("k256")
        loop = asyncio.get_running_loop()
        password_hash = await loop.run_in_executor(None, hash_password, password)
        op = build_operation(
            host.secrets.rotation_key,
            rotation_keys=rotation_keys,
            verification_methods={"atproto": key.public_key.did_key()},
            also_known_as=[f"at://{handle}"],
            services={"atproto_pds": Service("AtprotoPersonalDataServer", host.public_url)},
            prev=None,
        )
        did = genesis_did(op)
        try:
            await submit_operation(host.http, host.plc_url, did, op)
        except AtrepoError as exc:
            log.warning("directory refused the genesis op of %s: %s", did, exc)
            raise XrpcError("UpstreamFailure", f"the PLC directory refused the new DID: {exc}", 502) from None
        refresh_id = new_token_id()
        refresh_expires = tokens.refresh_expiry_ms()
        try:
            created = await host.worker.run(
                _store_new_account, did, handle, email, password_hash, key, refresh_id, refresh_expires
            )
        except BaseException:
            # The DID exists in the directory but not here (a handle taken meanwhile, a full
            # queue, shutdown): tombstone it so that it does not name this host forever.
            await _tombstone(host, did, op)
            raise
        await host.notify(created.head_seq)
        log.info("account created: %s %s", did, handle)
        session = tokens.session(did, refresh_id, refresh_expires)
        state = state_after(did, op)
        out: dict[str, Any] = {
            "accessJwt": session.access_jwt,
            "refreshJwt": session.refresh_jwt,
            "handle": handle,
            "did": did,
        }
        if state is not None:
            out["didDoc"] = state.document()
        return out

    @router.procedure("com.atproto.server.createSession")
    async def create_session(ctx: XrpcContext) -> dict[str, Any]:
        identifier: str = ctx.input["identifier"]
        password: str = ctx.input["password"]
        # Keyed by identifier and address (as the reference), the identifier without regard to
        # case, as login matches it: "Alice.test" must not buy another 30 guesses.
        limits = host.rate_limits
        key = f"{identifier.strip().lower()}-{limits.client_ip(ctx.request)}"
        limits.charge(ctx.request, "com.atproto.server.createSession", key)
        account = await host.worker.read(_find_login, identifier)
        ok = False
        if len(password) <= MAX_LOGIN_PASSWORD:
            # An unknown identifier costs one scrypt too, so timing does not tell who has an account.
            stored = account.password_hash if account is not None else _decoy_hash()
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, verify_password, password, stored)
        # Not the account password: perhaps one of its app passwords (a session of lesser scope).
        app_password = None if ok else await app_passwords.check_login(host, account, password)
        if account is None or not (ok or app_password is not None):
            raise AuthRequired("Invalid identifier or password")
        if account.status == "takendown":
            raise AccountTakedown("Account has been taken down")
        refresh_id = new_token_id()
        refresh_expires = tokens.refresh_expiry_ms()
        app_name = app_password.name if app_password is not None else None
        await host.worker.run(
            SQLiteStore.create_refresh_token,
            RefreshToken(refresh_id, account.did, refresh_expires, app_password=app_name),
        )
        scope = app_passwords.scope_for(app_password)
        session = tokens.session(account.did, refresh_id, refresh_expires, scope=scope)
        return {
            "accessJwt": session.access_jwt,
            "refreshJwt": session.refresh_jwt,
            **_session_fields(account),
        }

    @router.query("com.atproto.server.getSession", auth=tokens.verify_access)
    async def get_session(ctx: XrpcContext) -> dict[str, Any]:
        creds: AccessCredentials = ctx.auth
        _private(ctx)
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None:
            raise XrpcError("AccountNotFound", "Account not found", 403)
        return _session_fields(account)

    def _rotate(
        store: SQLiteStore, creds: RefreshCredentials, next_id: str, now_ms: int, next_exp: int
    ) -> str:
        """The successor's id, or ``ExpiredToken`` (revoking the chain when a stale token came back)."""
        rotation = store.rotate_refresh_token(
            creds.token_id, next_id, now_ms=now_ms, next_expires_ms=next_exp, grace_ms=REFRESH_GRACE_MS
        )
        if rotation is None or rotation.presented.did != creds.did:
            raise ExpiredToken("Token has been revoked")
        if rotation.presented.expires_ms <= now_ms:
            if rotation.reused:  # a rotated token replayed after its grace: likely stolen
                store.revoke_refresh_chain(creds.token_id)
                log.warning("refresh token reused after its grace period; chain revoked for %s", creds.did)
            raise ExpiredToken("Token has been revoked")
        if rotation.successor is None:
            raise ExpiredToken("Token has been revoked")
        return rotation.successor.id

    @router.procedure("com.atproto.server.refreshSession", auth=tokens.verify_refresh)
    async def refresh_session(ctx: XrpcContext) -> dict[str, Any]:
        creds: RefreshCredentials = ctx.auth
        _private(ctx)
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None:
            raise ExpiredToken("Token has been revoked")
        if account.status == "takendown":
            raise AccountTakedown("Account has been taken down")
        next_exp = tokens.refresh_expiry_ms()
        successor = await host.worker.run(_rotate, creds, new_token_id(), tokens.clock_ms(), next_exp)
        row = await host.worker.read(SQLiteStore.get_refresh_token, successor)
        if row is None:  # revoked meanwhile (an app password, a takedown)
            raise ExpiredToken("Token has been revoked")
        # the scope of the login, again: an app password's session stays one
        scope = await app_passwords.refresh_scope(host, row)
        session = tokens.session(creds.did, successor, row.expires_ms, scope=scope)
        return {
            "accessJwt": session.access_jwt,
            "refreshJwt": session.refresh_jwt,
            **_session_fields(account),
        }

    @router.procedure("com.atproto.server.deleteSession", auth=tokens.verify_refresh_allow_expired)
    async def delete_session(ctx: XrpcContext) -> None:
        creds: RefreshCredentials = ctx.auth
        await host.worker.run(SQLiteStore.delete_refresh_token, creds.token_id)

    @router.query("com.atproto.identity.resolveHandle")
    async def resolve_handle(ctx: XrpcContext) -> dict[str, Any]:
        handle = normalize_handle(ctx.params["handle"])
        account = await host.worker.read(SQLiteStore.get_account_by_handle, handle)
        if account is not None:
            return {"did": account.did}
        if any(handle.endswith(d.lower()) for d in host.config.user_domains):
            raise XrpcError("HandleNotFound", "Unable to resolve handle", 400)
        try:
            did = await asyncio.wait_for(host.handle_resolver.resolve(handle), RESOLVE_TIMEOUT_S)
        except (AtrepoError, TimeoutError) as exc:
            log.info("resolveHandle %s: %s", handle, exc)
            raise XrpcError("HandleNotFound", "Unable to resolve handle", 400) from None
        if not is_valid_did(did):
            raise XrpcError("HandleNotFound", "Unable to resolve handle", 400)
        return {"did": did}
