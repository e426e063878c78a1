"""One error family for all of atrepo.

Every failure that comes from outside data is an ``AtrepoError`` subclass that
names what went wrong; the message says where (byte offset, CID, key, field).

Each class also carries the reply a server sends for it: ``xrpc_error`` (the
XRPC error name) and ``http_status``. Servers map every error in one place
with ``to_xrpc()``; the CLI prints ``name: message``. Where a failure breaks a
named rule of a procedure (a Sync 1.1 check, a did:plc rule, a syntax rule),
``rule`` names it, under that one attribute for every class.

Messages are capped at ``limits.MAX_ERROR_MESSAGE_CHARS``, so an error built
from hostile input stays small however large the quoted value was.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .limits import MAX_ERROR_MESSAGE_CHARS


def _capped(message: str) -> str:
    """Keep the head and the tail: the quoted value is usually in between, the rule at the end."""
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    tail = MAX_ERROR_MESSAGE_CHARS // 4
    head = MAX_ERROR_MESSAGE_CHARS - tail - 40
    cut = len(message) - head - tail
    return f"{message[:head]} ...[{cut:,} characters cut]... {message[-tail:]}"


def _short(text: str, limit: int) -> str:
    """A name or path from outside, shortened for a message (the attribute keeps it whole)."""
    if len(text) <= limit:
        return text
    keep = limit // 2 - 2
    return f"{text[:keep]}...{text[-keep:]}"


class AtrepoError(Exception):
    """Base of every error atrepo raises on purpose."""

    #: The XRPC ``error`` name a server replies with.
    xrpc_error: ClassVar[str] = "InvalidRequest"
    #: The HTTP status of that reply.
    http_status: ClassVar[int] = 400
    #: The named rule or check that failed, where the failure has one.
    rule: str | None = None

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > MAX_ERROR_MESSAGE_CHARS:
            args = (_capped(args[0]),)
        super().__init__(*args)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def message(self) -> str:
        return str(self)

    def to_xrpc(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and the ``{"error", "message"}`` body of this error's reply."""
        return self.http_status, {"error": self.xrpc_error, "message": str(self)}


class InvalidCBOR(AtrepoError):
    """Bytes that are not strict, canonical DAG-CBOR in the AT data model."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class InvalidCID(AtrepoError):
    """A CID that cannot be parsed, or is not allowed where it was found."""


class InvalidDataModel(AtrepoError):
    """A value (JSON or decoded CBOR) outside the AT data model."""


class InvalidSyntax(AtrepoError):
    """An identifier or string format (DID, handle, NSID, TID, ...) broke a rule."""

    rule: str

    def __init__(self, kind: str, value: object, rule: str) -> None:
        self.kind = kind
        self.value = value
        self.rule = rule
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:77] + "...")
        super().__init__(f"invalid {kind} {shown}: {rule}")


class InvalidKey(AtrepoError):
    """A public or private key that cannot be parsed or is not on its curve."""


class InvalidSignature(AtrepoError):
    """A signature that is malformed (length, DER, high-S) or does not verify."""


class LimitExceeded(AtrepoError):
    """Input larger or deeper than a named limit in ``atrepo.core.limits``."""

    def __init__(self, limit: str, value: int, maximum: int, where: str = "") -> None:
        self.limit = limit
        self.value = value
        self.maximum = maximum
        at = f" ({where})" if where else ""
        super().__init__(f"{limit} exceeded: {value} > {maximum}{at}")


class InvalidMST(AtrepoError):
    """A Merkle Search Tree node or tree that breaks a structural rule."""


class MissingBlock(AtrepoError):
    """A block needed to answer was not present in the block source.

    A 400: where a server meets it, the blocks came from the caller (an
    imported CAR, an event); a host missing its own blocks is a bug that the
    server reports as such.
    """

    def __init__(self, cid: object, context: str = "") -> None:
        self.cid = cid
        extra = f" ({context})" if context else ""
        super().__init__(f"missing block {cid}{extra}")


class InvalidCommit(AtrepoError):
    """A commit object that is malformed or fails verification."""


class InvalidCAR(AtrepoError):
    """A CAR file that is truncated, garbled or inconsistent."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class InvalidEvent(AtrepoError):
    """A firehose frame or event message that breaks the event-stream rules."""


class OutOfSync(AtrepoError):
    """A valid event that does not follow the stored state of its repository."""


class InvalidDIDDocument(AtrepoError):
    """A DID document that is malformed or lacks what atproto needs."""


class InvalidPLCOperation(AtrepoError):
    """A did:plc operation or audit log that breaks a rule of the method."""


class ResolutionError(AtrepoError):
    """A DID or handle could not be resolved."""

    xrpc_error = "UpstreamFailure"
    http_status = 502


class UnsupportedDIDMethod(ResolutionError):
    """A syntactically valid DID whose method atproto does not support."""

    xrpc_error = "InvalidRequest"
    http_status = 400


class InputFileError(AtrepoError):
    """An input file that cannot be opened (missing, unreadable, a directory...)."""


class InvalidWrite(AtrepoError):
    """A repository write that cannot be applied (bad path, record, or state)."""


class StoreInUse(AtrepoError):
    """The store is open elsewhere (a running host) and an offline operation needs it alone."""


class InvalidCommitEvent(InvalidEvent):
    """A ``#commit`` or ``#sync`` message that fails a Sync 1.1 check.

    ``rule`` names the failed check (``flags``, ``size``, ``car``, ``commit``,
    ``repo``, ``rev``, ``future-rev``, ``signature``, ``ops``, ``forward``,
    ``inversion``).
    """

    rule: str

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(f"{rule}: {message}")


class PLCRuleError(InvalidPLCOperation):
    """An operation or log that broke the did:plc rule named by ``rule``.

    Rules: ``format``, ``size``, ``limits``, ``signature-encoding``,
    ``signature``, ``genesis``, ``prev``, ``tombstone``,
    ``nullification-priority``, ``recovery-window``, ``timestamp``,
    ``rate-limit``, ``audit-log``.
    """

    rule: str

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}")


class HandleNotFound(ResolutionError):
    """No DID could be found for a handle."""

    xrpc_error = "HandleNotFound"


class HandleMismatch(ResolutionError):
    """A handle resolves to a DID whose document does not claim the handle."""


class InvalidLexicon(AtrepoError):
    """A lexicon document that breaks a rule of the schema language.

    ``path`` locates the offending part inside the document
    (``defs/main/record/properties/text/maxLength``); ``rule`` names the rule.
    A registry raises it at load time, for refs that don't resolve too.
    """

    rule: str

    def __init__(self, lexicon: str, path: str, rule: str, detail: str) -> None:
        self.lexicon = lexicon
        self.path = path
        self.rule = rule
        self.detail = detail
        where = f" at {_short(path, 200)}" if path else ""
        super().__init__(f"invalid lexicon {_short(lexicon, 120)}{where}: {detail}")


class InvalidLexiconData(AtrepoError):
    """A value that does not match its lexicon schema.

    ``path`` is the place inside the value, slash-separated
    (``embed/images/2/alt``; empty for the value itself), ``rule`` the schema
    constraint it broke (``maxGraphemes``, ``required``, ``type``, ``format``,
    ``closed-union``, ...), and ``nsid`` the schema it was checked against.
    """

    rule: str

    def __init__(self, nsid: str, what: str, path: str, rule: str, detail: str) -> None:
        self.nsid = nsid
        self.path = path
        self.rule = rule
        self.detail = detail
        where = f" at {_short(path, 200)}" if path else ""
        super().__init__(f"Invalid {_short(nsid, 120)} {what}{where}: {detail}")


class LexiconNotFound(AtrepoError):
    """No lexicon of that NSID (or def) is known to the registry."""

    def __init__(self, nsid: str, what: str = "lexicon") -> None:
        self.nsid = nsid
        super().__init__(f"Unknown {what}: {nsid}")


class InvalidRequest(AtrepoError):
    """An XRPC call whose parameters, body or method break its lexicon.

    ``path`` names the parameter or the place inside the body; ``rule`` the
    broken constraint, as for :class:`InvalidLexiconData`.
    """

    def __init__(self, message: str, *, path: str = "", rule: str | None = None) -> None:
        self.path = path
        self.rule = rule
        super().__init__(message)


class PayloadTooLarge(InvalidRequest):
    """A request body larger than the route's limit."""

    xrpc_error = "PayloadTooLarge"
    http_status = 413


class UpgradeRequired(InvalidRequest):
    """A plain GET to a subscription (WebSocket) endpoint: ``426`` with an ``Upgrade`` header."""

    http_status = 426


# --- errors a server answers with (names and statuses of the reference XRPC stack) -----------
#
# Source of truth: ``@atproto/xrpc-server`` (``errors.ts``: the generic names and
# statuses; a 500's message is always "Internal Server Error") and the reference
# PDS (``auth-verifier.ts``: token errors are ``InvalidRequestError`` with a
# custom name, so 400; a missing header is ``AuthRequiredError`` named
# ``AuthMissing``, 401; repo/record/blob lookups throw ``InvalidRequestError``
# with the lexicon's error name, so 400). Clients must key on the name, not the
# status: the Go relay answers ``RepoNotFound`` with 404.


class MethodNotImplemented(AtrepoError):
    """No handler for this XRPC method here (the lexicon may or may not know it)."""

    xrpc_error = "MethodNotImplemented"
    http_status = 501


class AuthRequired(AtrepoError):
    """The method needs credentials the request did not carry or that do not suffice.

    The generic 401 of the reference (``AuthRequiredError``), whose name on the
    wire is ``AuthenticationRequired``.
    """

    xrpc_error = "AuthenticationRequired"
    http_status = 401


class AuthMissing(AuthRequired):
    """No ``Authorization`` header at all (the reference PDS's name for it)."""

    xrpc_error = "AuthMissing"


class AccountTakedown(AuthRequired):
    """Credentials of an account that has been taken down (reference PDS: 401)."""

    xrpc_error = "AccountTakedown"


class InvalidToken(InvalidRequest):
    """A malformed token, a bad signature, scheme, ``typ``, audience or scope (reference: 400)."""

    xrpc_error = "InvalidToken"


class ExpiredToken(InvalidRequest):
    """A token past its ``exp``, or a revoked refresh token (reference: 400; clients refresh on it)."""

    xrpc_error = "ExpiredToken"


class Forbidden(AtrepoError):
    """Authenticated, but not allowed to do this (the generic 403)."""

    xrpc_error = "Forbidden"
    http_status = 403


class RateLimitExceeded(AtrepoError):
    """Too many requests in the window; the reply may carry ``Retry-After``."""

    xrpc_error = "RateLimitExceeded"
    http_status = 429


class RepoNotFound(InvalidRequest):
    """No repository (account) of that DID or handle on this service."""

    xrpc_error = "RepoNotFound"


class RepoTakendown(InvalidRequest):
    """The repository's account is taken down: its data is not served."""

    xrpc_error = "RepoTakendown"


class RepoSuspended(InvalidRequest):
    """The repository's account is suspended: its data is not served."""

    xrpc_error = "RepoSuspended"


class RepoDeactivated(InvalidRequest):
    """The repository's account is deactivated: its data is not served."""

    xrpc_error = "RepoDeactivated"


class RecordNotFound(InvalidRequest):
    """No record at that path (or not of the CID asked for)."""

    xrpc_error = "RecordNotFound"


class BlobNotFound(InvalidRequest):
    """No stored blob of that CID for that account."""

    xrpc_error = "BlobNotFound"


class InternalServerError(AtrepoError):
    """A failure of ours, raised on purpose (e.g. a handler's output broke its lexicon).

    The reply's message is always "Internal Server Error"; the details are logged.
    """

    xrpc_error = "InternalServerError"
    http_status = 500


class WriteAborted(InternalServerError):
    """A storage failure rolled back a write, together with the writes grouped into its transaction.

    Nothing of it was stored and nothing was acknowledged; the client may retry.
    """


class CursorTooOld(InvalidRequest):
    """A Jetstream seq cursor below the event log's retention floor (refused before the upgrade).

    The message names the floor, the oldest seq still kept, from which the
    client may resume after re-fetching what it missed.
    """

    xrpc_error = "CursorTooOld"


class StoreUnavailable(InternalServerError):
    """The store's database server cannot be reached (PostgreSQL down, refused, or a bad URL).

    Raised when a store opens or reopens its connection; nothing was written.
    """


class HandleNotAvailable(InvalidRequest):
    """``createAccount``/``updateHandle``: the handle is taken (or reserved)."""

    xrpc_error = "HandleNotAvailable"


class InvalidHandle(InvalidRequest):
    """A handle that is not valid syntax or not under one of the host's user domains."""

    xrpc_error = "InvalidHandle"


class UnsupportedDomain(InvalidRequest):
    """A handle under a domain this host does not serve."""

    xrpc_error = "UnsupportedDomain"


class InvalidPassword(InvalidRequest):
    """A password that breaks the host's rules (length)."""

    xrpc_error = "InvalidPassword"


class InvalidSwap(InvalidRequest):
    """``swapCommit``/``swapRecord`` named a CID that is no longer current."""

    xrpc_error = "InvalidSwap"


class NotEnoughResources(AtrepoError):
    """The server is overloaded right now (a full queue); the client should retry later."""

    xrpc_error = "NotEnoughResources"
    http_status = 503


# --- inbound service auth (names of ``@atproto/xrpc-server`` ``verifyJwt``: all 401) ----------


class ServiceAuthError(AuthRequired):
    """An inter-service JWT that cannot be accepted; each subclass is one of the reference's names."""


class MissingJwt(ServiceAuthError):
    """A route that needs a service-auth token got no Bearer token."""

    xrpc_error = "MissingJwt"


class BadJwt(ServiceAuthError):
    """Not three base64url JSON segments, or a claim missing or of the wrong type."""

    xrpc_error = "BadJwt"


class BadJwtType(ServiceAuthError):
    """A header ``typ`` of a token that is not a service token (access, refresh, DPoP)."""

    xrpc_error = "BadJwtType"


class JwtExpired(ServiceAuthError):
    """``exp`` is in the past."""

    xrpc_error = "JwtExpired"


class BadJwtAudience(ServiceAuthError):
    """``aud`` does not name this service."""

    xrpc_error = "BadJwtAudience"


class BadJwtLexiconMethod(ServiceAuthError):
    """``lxm`` is missing or names another method than the one called."""

    xrpc_error = "BadJwtLexiconMethod"


class BadJwtIss(ServiceAuthError):
    """``iss`` is not a DID (optionally with one ``#service`` fragment)."""

    xrpc_error = "BadJwtIss"


class BadJwtSignature(ServiceAuthError):
    """The signature does not verify with the issuer's key (even freshly resolved), or cannot be checked."""

    xrpc_error = "BadJwtSignature"


# --- identity resolution (lexicon errors of ``com.atproto.identity.resolve*``) ---------------


class DidNotFound(InvalidRequest):
    """The DID resolution process confirmed that there is no current DID."""

    xrpc_error = "DidNotFound"


class DidDeactivated(InvalidRequest):
    """The DID existed but has been deactivated (a tombstoned did:plc)."""

    xrpc_error = "DidDeactivated"


# --- relays (lexicon errors of ``com.atproto.sync.requestCrawl`` / ``getHostStatus``) -----------


class HostBanned(InvalidRequest):
    """``requestCrawl`` for a host (or a domain it is under) that the relay's operator banned."""

    xrpc_error = "HostBanned"


class HostNotFound(InvalidRequest):
    """No upstream host of that name at this relay, or one that did not answer as a host."""

    xrpc_error = "HostNotFound"


class XrpcError(AtrepoError):
    """An XRPC error reply whose name has no class here, as a client received it.

    ``error`` is the name on the wire, ``status`` the HTTP status; ``to_xrpc``
    gives both back, so a service relaying the call can answer as it was answered.
    """

    def __init__(self, error: str, message: str, status: int) -> None:
        self.error = error
        self.status = status
        super().__init__(message)

    def to_xrpc(self) -> tuple[int, dict[str, Any]]:
        status = self.status if 400 <= self.status < 600 else 500
        return status, {"error": self.error, "message": str(self)}


#: Error names on the wire -> the class a client raises for them. Each class here
#: takes one message argument and answers with exactly that name.
XRPC_ERROR_CLASSES: dict[str, type[AtrepoError]] = {
    cls.xrpc_error: cls
    for cls in (
        InvalidRequest,
        PayloadTooLarge,
        HandleNotFound,
        MethodNotImplemented,
        AuthRequired,
        AuthMissing,
        AccountTakedown,
        InvalidToken,
        ExpiredToken,
        Forbidden,
        RateLimitExceeded,
        RepoNotFound,
        RepoTakendown,
        RepoSuspended,
        RepoDeactivated,
        RecordNotFound,
        BlobNotFound,
        InternalServerError,
        HandleNotAvailable,
        InvalidHandle,
        UnsupportedDomain,
        InvalidPassword,
        InvalidSwap,
        NotEnoughResources,
        MissingJwt,
        BadJwt,
        BadJwtType,
        JwtExpired,
        BadJwtAudience,
        BadJwtLexiconMethod,
        BadJwtIss,
        BadJwtSignature,
        DidNotFound,
        DidDeactivated,
        HostBanned,
        HostNotFound,
    )
}
