"""App passwords: ``com.atproto.server.{create,list,revoke}AppPassword`` and logging in with one.

An app password is a second, revocable password an account gives one client
(accounts.md §4). Behaviour as the reference host's, with the differences
marked:

* ``createAppPassword {name, privileged?}`` answers ``{name, password,
  createdAt, privileged}``; the password is ``xxxx-xxxx-xxxx-xxxx``, 16
  random lowercase base32 characters (80 bits), shown this once and stored
  only as an scrypt hash. ``(account, name)`` is unique: a taken name is 400
  ``InvalidRequest`` (the reference fails on its unique index with a 500).
  Names are 1 to ``MAX_NAME_CHARS`` characters, not blank, without control
  characters (the reference checks nothing; its app enforces 4 to 32).
* ``createSession`` accepts an app password where the account password is
  expected (see :func:`check_login`). The session's tokens carry the scope
  ``com.atproto.appPass``, or ``com.atproto.appPassPrivileged`` for a
  privileged one; the refresh token's row names the app password, so every
  refresh grants the same scope again, read from the app password's row.
* ``revokeAppPassword {name}`` deletes it and, in the same transaction,
  every refresh token issued under it: its sessions cannot refresh. Access
  tokens are stateless JWTs and stay valid until their ``exp`` (at most two
  hours), exactly as in the reference. An unknown name is not an error.
* An app-password session cannot manage the account. The reference refuses
  it only ``createAppPassword``; the atproto specification says app
  passwords must not manage auth settings, so here all three methods take
  ``TokenAuthority.verify_full_access`` (400 ``InvalidToken`` "Bad token
  scope" for an app-password token, the reference's answer).

Hashes: each app password is hashed with scrypt under a salt derived from
the account's DID, as the reference does, so a login attempt costs one
scrypt whatever the number of app passwords the account has (a random salt
per row would cost one per row). That loses nothing here: the salt's job is
to make precomputation useless, and each of these passwords is already 80
random bits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from atrepo.core.errors import AccountTakedown, ExpiredToken, InvalidRequest, XrpcError
from atrepo.core.syntax import format_datetime
from atrepo.store import Account, RefreshToken, SQLiteStore
from atrepo.store.base import AppPassword
from atrepo.xrpc import XrpcContext, XrpcRouter

from .auth import ACCESS_SCOPE, APP_PASS_PRIVILEGED_SCOPE, APP_PASS_SCOPE, AccessCredentials

if TYPE_CHECKING:
    from .app import HostContext

__all__ = [
    "MAX_NAME_CHARS",
    "check_login",
    "generate_app_password",
    "hash_app_password",
    "looks_like_app_password",
    "refresh_scope",
    "register",
    "scope_for",
]

log = logging.getLogger("atrepo.host.app_passwords")

#: Longest app-password name accepted (characters).
MAX_NAME_CHARS: Final = 100
#: RFC 4648 base32 in lowercase: what the reference's ``randomStr(16, 'base32')`` draws from.
_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
_FORMAT: Final = re.compile(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}")
#: scrypt cost, as account passwords (``accounts.hash_password``): N=2^15, r=8, p=1.
_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 64 * 1024 * 1024
#: Statuses whose accounts cannot log in with an app password (the reference: "soft-deleted").
_NO_APP_LOGIN: Final = frozenset({"takendown", "suspended"})
#: Hashed for logins to unknown accounts, so that their timing matches a known one's.
_DECOY_DID: Final = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def generate_app_password() -> str:
    """``xxxx-xxxx-xxxx-xxxx``: 16 characters of lowercase base32 from the OS's CSPRNG."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


def looks_like_app_password(password: str) -> bool:
    """Whether ``password`` has the shape of one we issue (anything else is not worth a scrypt)."""
    return _FORMAT.fullmatch(password) is not None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _salt(did: str) -> bytes:
    return hashlib.sha256(b"atrepo app password\x00" + did.encode()).digest()[:16]


def _hash(password: str, did: str, n: int, r: int, p: int) -> str:
    salt = _salt(did)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def hash_app_password(did: str, password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` with the account's salt: equal passwords of one account hash equal."""
    return _hash(password, did, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)


def _match(did: str, password: str, candidates: list[AppPassword]) -> AppPassword | None:
    """The app password among ``candidates`` that ``password`` is (one scrypt per cost setting in use)."""
    found: AppPassword | None = None
    hashes: dict[str, str] = {}
    for candidate in candidates:
        params = candidate.password_hash.split("$")
        if len(params) != 6 or params[0] != "scrypt":
            continue
        key = "$".join(params[1:4])
        if key not in hashes:
            try:
                hashes[key] = _hash(password, did, int(params[1]), int(params[2]), int(params[3]))
            except ValueError:
                continue
        # every candidate compared in constant time: which one matched does not show in the timing
        if hmac.compare_digest(hashes[key].encode(), candidate.password_hash.encode()) and found is None:
            found = candidate
    return found


def scope_for(app_password: AppPassword | None) -> str:
    """The access scope of a session: full without an app password, else by its ``privileged`` flag."""
    if app_password is None:
        return ACCESS_SCOPE
    return APP_PASS_PRIVILEGED_SCOPE if app_password.privileged else APP_PASS_SCOPE


async def check_login(host: HostContext, account: Account | None, password: str) -> AppPassword | None:
    """The app password ``password`` is for ``account``, after its account password did not match.

    None when it is none of them, when it does not have the app-password
    shape (no scrypt is spent then), or when the account is taken down or
    suspended (as the reference: those log in with the account password or
    not at all). An unknown account costs the same scrypt as a known one.
    """
    if not looks_like_app_password(password):
        return None
    loop = asyncio.get_running_loop()
    if account is None:
        await loop.run_in_executor(None, hash_app_password, _DECOY_DID, password)
        return None
    candidates = await host.worker.read(SQLiteStore.list_app_passwords, account.did)
    if not candidates:
        await loop.run_in_executor(None, hash_app_password, account.did, password)
        return None
    found = await loop.run_in_executor(None, _match, account.did, password, candidates)
    if found is None or account.status in _NO_APP_LOGIN:
        return None
    return found


async def refresh_scope(host: HostContext, token: RefreshToken) -> str:
    """The scope a refresh of ``token`` grants: the one its login had (``ExpiredToken`` if revoked since)."""
    if token.app_password is None:
        return ACCESS_SCOPE
    found = await host.worker.read(SQLiteStore.get_app_password, token.did, token.app_password)
    if found is None:  # revoked while this refresh ran: its tokens are being deleted
        raise ExpiredToken("Token has been revoked")
    return scope_for(found)


def check_name(name: str) -> str:
    """``name`` if it may name an app password (``InvalidRequest`` with path ``name`` otherwise)."""
    if not name.strip():
        raise InvalidRequest("App password name must not be empty", path="name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(
            f"App password name is too long (at most {MAX_NAME_CHARS} characters)", path="name"
        )
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        raise InvalidRequest("App password name must not contain control characters", path="name")
    return name


def _created_at(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms / 1000, UTC))


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare the three app-password methods on ``router``, bound to ``host``."""
    tokens = host.tokens

    async def account_of(creds: AccessCredentials) -> Account:
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None:
            raise XrpcError("AccountNotFound", "Account not found", 403)
        if account.status in _NO_APP_LOGIN:
            raise AccountTakedown("Account has been taken down")
        return account

    @router.procedure("com.atproto.server.createAppPassword", auth=tokens.verify_full_access)
    async def create_app_password(ctx: XrpcContext) -> dict[str, Any]:
        account = await account_of(ctx.auth)
        name = check_name(ctx.input["name"])
        privileged = bool(ctx.input.get("privileged", False))
        password = generate_app_password()
        loop = asyncio.get_running_loop()
        password_hash = await loop.run_in_executor(None, hash_app_password, account.did, password)
        created_ms = tokens.clock_ms()
        row = AppPassword(account.did, name, password_hash, privileged, created_ms)
        await host.worker.run(SQLiteStore.create_app_password, row)
        log.info("app password created for %s (privileged: %s)", account.did, privileged)
        ctx.response_headers["Cache-Control"] = "no-store"
        return {
            "name": name,
            "password": password,
            "createdAt": _created_at(created_ms),
            "privileged": privileged,
        }

    @router.query("com.atproto.server.listAppPasswords", auth=tokens.verify_full_access)
    async def list_app_passwords(ctx: XrpcContext) -> dict[str, Any]:
        account = await account_of(ctx.auth)
        ctx.response_headers["Cache-Control"] = "private"
        ctx.response_headers["Vary"] = "Authorization"
        rows = await host.worker.read(SQLiteStore.list_app_passwords, account.did)
        return {
            "passwords": [
                {"name": r.name, "createdAt": _created_at(r.created_ms), "privileged": r.privileged}
                for r in rows
            ]
        }

    @router.procedure("com.atproto.server.revokeAppPassword", auth=tokens.verify_full_access)
    async def revoke_app_password(ctx: XrpcContext) -> None:
        account = await account_of(ctx.auth)
        name: str = ctx.input["name"]
        found, revoked = await host.worker.run(SQLiteStore.revoke_app_password, account.did, name)
        if found:
            log.info("app password revoked for %s (%d refresh tokens deleted)", account.did, revoked)
