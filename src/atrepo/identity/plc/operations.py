"""did:plc operations: build, sign, hash, verify, replay audit logs (pure).

An operation is kept as the JSON-shaped mapping it arrived as, because its
signature and CID are over the DAG-CBOR of *that* mapping (legacy ``create``
ops included); :class:`PLCState` is the interpreted result. Every rejection is
a :class:`PLCRuleError` whose ``rule`` names the rule of identity spec §4 that
was broken, so a directory can answer with it and a test can assert on it.

The directory's acceptance rule (:func:`check_next_operation`) and the full
audit-log check (:func:`verify_audit_log`) are the same code: the audit check
replays the log as the directory would have accepted it, then compares the
``nullified`` flags it computed with those recorded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from atrepo.core import cbor
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidKey, InvalidSignature, PLCRuleError
from atrepo.core.keys import PrivateKey, PublicKey, parse_did_key
from atrepo.core.multibase import b32encode, b64url_decode_strict, b64url_encode
from atrepo.core.syntax import is_valid_did
from atrepo.identity import limits

__all__ = [
    "LEGACY_CREATE",
    "OPERATION",
    "TOMBSTONE",
    "AuditResult",
    "LogEntry",
    "NextOperation",
    "PLCRuleError",
    "PLCState",
    "Service",
    "build_operation",
    "build_tombstone",
    "check_next_operation",
    "check_operation",
    "check_reference_limits",
    "encode_operation",
    "format_timestamp",
    "genesis_did",
    "operation_cid",
    "parse_timestamp",
    "render_document",
    "sign_operation",
    "state_after",
    "unsigned_bytes",
    "verify_audit_log",
    "verify_signature",
]

OPERATION: Final = "plc_operation"
TOMBSTONE: Final = "plc_tombstone"
LEGACY_CREATE: Final = "create"

_FIELDS: Final = {
    OPERATION: frozenset(
        {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev", "sig"}
    ),
    TOMBSTONE: frozenset({"type", "prev", "sig"}),
    LEGACY_CREATE: frozenset({"type", "signingKey", "recoveryKey", "handle", "service", "prev", "sig"}),
}
_PDS_TYPE: Final = "AtprotoPersonalDataServer"
_TIMESTAMP_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of an operation's ``services`` map."""

    type: str
    endpoint: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "endpoint": self.endpoint}


@dataclass(frozen=True, slots=True)
class PLCState:
    """The identity an operation establishes (what ``GET /<did>/data`` shows)."""

    did: str
    rotation_keys: tuple[str, ...]
    verification_methods: Mapping[str, str]
    also_known_as: tuple[str, ...]
    services: Mapping[str, Service]

    def to_data(self) -> dict[str, Any]:
        """``GET /<did>/data`` body."""
        return {
            "did": self.did,
            "verificationMethods": dict(self.verification_methods),
            "rotationKeys": list(self.rotation_keys),
            "alsoKnownAs": list(self.also_known_as),
            "services": {name: svc.to_json() for name, svc in self.services.items()},
        }

    def document(self) -> dict[str, Any]:
        """The DID document this state renders to."""
        return render_document(self)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of an audit log (``GET /<did>/log/audit``)."""

    did: str
    operation: Mapping[str, Any]
    cid: str
    nullified: bool
    created_at_ms: int

    @property
    def created_at(self) -> str:
        return format_timestamp(self.created_at_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "operation": self.operation,
            "cid": self.cid,
            "nullified": self.nullified,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_json(cls, index: int, value: object) -> LogEntry:
        """Parse one audit-log entry; ``index`` only labels errors."""
        if not isinstance(value, Mapping):
            raise PLCRuleError("audit-log", f"entry {index} is not an object")
        did, op, cid, nullified, created = (
            value.get(k) for k in ("did", "operation", "cid", "nullified", "createdAt")
        )
        if not isinstance(did, str) or not isinstance(cid, str) or not isinstance(created, str):
            raise PLCRuleError("audit-log", f"entry {index}: did, cid and createdAt must be strings")
        if not isinstance(nullified, bool):
            raise PLCRuleError("audit-log", f"entry {index}: nullified must be a boolean")
        if not isinstance(op, Mapping):
            raise PLCRuleError("audit-log", f"entry {index}: operation must be an object")
        return cls(did, op, cid, nullified, parse_timestamp(created))


@dataclass(frozen=True, slots=True)
class NextOperation:
    """An accepted operation: its CID, the ops it nullifies and the new state."""

    cid: str
    prev_index: int | None
    nullified: tuple[LogEntry, ...]
    state: PLCState | None
    encoded_size: int


@dataclass(frozen=True, slots=True)
class AuditResult:
    """A verified audit log: the DID, its current state and the active chain."""

    did: str
    state: PLCState | None
    entries: tuple[LogEntry, ...]
    active: tuple[LogEntry, ...] = field(repr=False)

    @property
    def tombstoned(self) -> bool:
        return self.state is None

    def document(self) -> dict[str, Any] | None:
        return None if self.state is None else render_document(self.state)


# --------------------------------------------------------------------------
# Timestamps


def format_timestamp(ms: int) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` from milliseconds since the Unix epoch.

    Years 1 to 9999, always four digits as JavaScript's ``toISOString`` writes
    them (``strftime("%Y")`` gives "999" on some platforms, which
    :func:`parse_timestamp` would then refuse). Epoch arithmetic rather than
    ``fromtimestamp`` keeps years before 1970 working everywhere.
    """
    try:
        when = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise PLCRuleError("timestamp", f"{ms} ms since the epoch is outside years 1 to 9999") from None
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}.{when.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch of a directory ``createdAt`` string."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        raise PLCRuleError("audit-log", f"createdAt {text[:40]!r} is not YYYY-MM-DDTHH:mm:ss.sssZ")
    y, mo, d, h, mi, s, ms = (int(g) for g in match.groups())
    try:
        when = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError as exc:
        raise PLCRuleError("audit-log", f"createdAt {text!r}: {exc}") from None
    # Exact integer arithmetic (a float of seconds loses milliseconds far from 1970).
    return (when - _EPOCH) // timedelta(milliseconds=1) + ms


# --------------------------------------------------------------------------
# Shape


def _str_list(op: Mapping[str, Any], name: str) -> list[str]:
    value = op[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PLCRuleError("format", f"{name} must be an array of strings")
    return value


def check_operation(op: object) -> str:
    """Check an operation's shape (fields and their types); return its type.

    ``sig`` may be absent (an unsigned operation being built); everything
    else must be exactly the fields of the type.
    """
    if not isinstance(op, Mapping):
        raise PLCRuleError("format", f"operation must be an object, not {type(op).__name__}")
    kind = op.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise PLCRuleError("format", f"unknown operation type {kind!r}"[:120])
    allowed = _FIELDS[kind]
    extra = set(op) - allowed
    if extra:
        names = ", ".join(sorted(map(str, extra)))
        raise PLCRuleError("format", f"{kind} has unknown field(s) {names}"[:200])
    missing = allowed - set(op) - {"sig"}
    if missing:
        raise PLCRuleError("format", f"{kind} lacks field(s) {', '.join(sorted(missing))}")
    if "sig" in op and not isinstance(op["sig"], str):
        raise PLCRuleError("format", "sig must be a string")
    prev = op["prev"]
    if kind == TOMBSTONE and prev is None:
        raise PLCRuleError("format", "a tombstone must have a prev")
    if kind == LEGACY_CREATE and prev is not None:
        raise PLCRuleError("format", "a legacy create operation must have prev null")
    if prev is not None:
        if not isinstance(prev, str):
            raise PLCRuleError("format", "prev must be a CID string or null")
        try:
            canonical = str(CID.parse(prev))
        except AtrepoError:
            raise PLCRuleError("format", f"prev {prev[:80]!r} is not a CID") from None
        if canonical != prev:
            raise PLCRuleError("format", f"prev {prev!r} is not in canonical base32 form")
    if kind == OPERATION:
        _str_list(op, "rotationKeys")
        _str_list(op, "alsoKnownAs")
        methods = op["verificationMethods"]
        if not isinstance(methods, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in methods.items()
        ):
            raise PLCRuleError("format", "verificationMethods must map names to did:key strings")
        for name, key in methods.items():
            if not key.startswith("did:key:") or not is_valid_did(key):
                raise PLCRuleError("format", f"verificationMethods[{name!r}] is not a did:key"[:120])
        services = op["services"]
        if not isinstance(services, Mapping):
            raise PLCRuleError("format", "services must be an object")
        for name, svc in services.items():
            if (
                not isinstance(svc, Mapping)
                or set(svc) != {"type", "endpoint"}
                or not isinstance(svc["type"], str)
                or not isinstance(svc["endpoint"], str)
            ):
                raise PLCRuleError("format", f"services[{name!r}] must be {{type, endpoint}} strings"[:120])
    elif kind == LEGACY_CREATE:
        for name in ("signingKey", "recoveryKey", "handle", "service"):
            if not isinstance(op[name], str):
                raise PLCRuleError("format", f"{name} must be a string")
    return kind


def _at_most(what: str, count: int, maximum: int) -> None:
    if count > maximum:
        raise PLCRuleError("limits", f"{what} is {count}, at most {maximum}")


def check_reference_limits(op: Mapping[str, Any]) -> None:
    """The reference directory's field limits, applied to new submissions only."""
    if op.get("type") != OPERATION:
        return
    keys = op["rotationKeys"]
    _at_most("number of rotationKeys", len(keys), limits.PLC_MAX_ROTATION_KEYS)
    for key in keys:
        try:
            parse_did_key(key)
        except InvalidKey as exc:
            raise PLCRuleError("limits", f"rotation key is not a usable did:key: {exc}") from None
    aka = op["alsoKnownAs"]
    _at_most("number of alsoKnownAs entries", len(aka), limits.PLC_MAX_ALSO_KNOWN_AS)
    if len(set(aka)) != len(aka):
        raise PLCRuleError("limits", "alsoKnownAs has duplicate entries")
    for uri in aka:
        _at_most("length of an alsoKnownAs entry", len(uri), limits.PLC_MAX_ALSO_KNOWN_AS_CHARS)
    services = op["services"]
    _at_most("number of services", len(services), limits.PLC_MAX_SERVICES)
    for name, svc in services.items():
        _at_most("length of a service id", len(name), limits.PLC_MAX_SERVICE_ID_CHARS)
        _at_most("length of a service type", len(svc["type"]), limits.PLC_MAX_SERVICE_TYPE_CHARS)
        _at_most("length of a service endpoint", len(svc["endpoint"]), limits.PLC_MAX_SERVICE_ENDPOINT_CHARS)
    methods = op["verificationMethods"]
    _at_most("number of verificationMethods", len(methods), limits.PLC_MAX_VERIFICATION_METHODS)
    for name, key in methods.items():
        _at_most("length of a verification method id", len(name), limits.PLC_MAX_VERIFICATION_METHOD_ID_CHARS)
        _at_most("length of a method's key", len(key), limits.PLC_MAX_VERIFICATION_METHOD_KEY_CHARS)


# --------------------------------------------------------------------------
# Bytes, CIDs, DIDs, signatures


def unsigned_bytes(op: Mapping[str, Any]) -> bytes:
    """DAG-CBOR of the operation without ``sig``: the bytes that are signed."""
    return cbor.encode({k: v for k, v in op.items() if k != "sig"})


def encode_operation(op: Mapping[str, Any]) -> bytes:
    """DAG-CBOR of the signed operation: the bytes its CID and DID hash."""
    return cbor.encode(dict(op))


def operation_cid(op: Mapping[str, Any]) -> str:
    """CIDv1 dag-cbor sha256 of the signed operation, base32 (``bafyrei...``)."""
    return str(CID.for_dag_cbor(encode_operation(op)))


def _did_from_bytes(encoded: bytes) -> str:
    return "did:plc:" + b32encode(hashlib.sha256(encoded).digest())[:24]


def genesis_did(op: Mapping[str, Any]) -> str:
    """The DID a signed genesis operation creates."""
    return _did_from_bytes(encode_operation(op))


def sign_operation(op: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """A copy of ``op`` signed by ``key`` (base64url, unpadded, low-S r||s)."""
    unsigned = {k: v for k, v in op.items() if k != "sig"}
    check_operation(unsigned)
    return {**unsigned, "sig": b64url_encode(key.sign(cbor.encode(unsigned)))}


def _decode_sig(op: Mapping[str, Any]) -> bytes:
    text = op.get("sig")
    if not isinstance(text, str):
        raise PLCRuleError("format", "operation is not signed (no sig)")
    try:
        sig = b64url_decode_strict(text)
    except ValueError as exc:
        raise PLCRuleError("signature-encoding", f"sig is not canonical unpadded base64url: {exc}") from None
    if len(sig) != 64:
        hint = " (DER-encoded?)" if sig[:1] == b"\x30" else ""
        raise PLCRuleError("signature-encoding", f"sig is {len(sig)} bytes, expected 64-byte r||s{hint}")
    return sig


def _looks_der(sig: bytes) -> bool:
    """Whether bytes are exactly a DER SEQUENCE of two INTEGERs (only to explain a failure)."""
    if len(sig) < 8 or sig[0] != 0x30 or sig[1] != len(sig) - 2:
        return False
    pos = 2
    for _ in range(2):
        if pos + 2 > len(sig) or sig[pos] != 0x02:
            return False
        pos += 2 + sig[pos + 1]
    return pos == len(sig)


def _parse_keys(rotation_keys: Sequence[str]) -> list[PublicKey | None]:
    out: list[PublicKey | None] = []
    for text in rotation_keys:
        try:
            out.append(parse_did_key(text))
        except InvalidKey:
            out.append(None)
    return out


def verify_signature(op: Mapping[str, Any], rotation_keys: Sequence[str]) -> int:
    """Index in ``rotation_keys`` of the first key whose signature ``op`` carries.

    With duplicate keys the first (highest-priority) position counts, as in
    the reference directory.
    """
    sig = _decode_sig(op)
    data = unsigned_bytes(op)
    keys = _parse_keys(rotation_keys)
    for index, key in enumerate(keys):
        if key is not None and key.verify(data, sig):
            return index
    reasons: set[str] = set()
    for key in keys:
        if key is not None:
            try:
                key.check(data, sig)
            except InvalidSignature as exc:
                reasons.add(str(exc))
    if _looks_der(sig):
        reasons.add("it is DER-encoded, not raw r||s")
    why = f" ({'; '.join(sorted(reasons))})" if reasons - {"signature does not verify"} else ""
    count = len(rotation_keys)
    raise PLCRuleError("signature", f"does not verify with any of the {count} allowed rotation keys{why}")


# --------------------------------------------------------------------------
# State


def state_after(did: str, op: Mapping[str, Any]) -> PLCState | None:
    """The state an operation (already shape-checked) establishes; None for a tombstone."""
    kind = op["type"]
    if kind == TOMBSTONE:
        return None
    if kind == LEGACY_CREATE:
        service = op["service"]
        endpoint = service if "://" in service else "https://" + service
        return PLCState(
            did=did,
            rotation_keys=(op["recoveryKey"], op["signingKey"]),
            verification_methods=MappingProxyType({"atproto": op["signingKey"]}),
            also_known_as=("at://" + op["handle"],),
            services=MappingProxyType({"atproto_pds": Service(_PDS_TYPE, endpoint)}),
        )
    return PLCState(
        did=did,
        rotation_keys=tuple(op["rotationKeys"]),
        verification_methods=MappingProxyType(dict(op["verificationMethods"])),
        also_known_as=tuple(op["alsoKnownAs"]),
        services=MappingProxyType({n: Service(s["type"], s["endpoint"]) for n, s in op["services"].items()}),
    )


def _key_context(did_key: str) -> str | None:
    try:
        curve = parse_did_key(did_key).curve
    except InvalidKey:
        return None
    if curve == "p256":
        return "https://w3id.org/security/suites/ecdsa-2019/v1"
    return "https://w3id.org/security/suites/secp256k1-2019/v1"


def render_document(state: PLCState) -> dict[str, Any]:
    """The DID document of a state (identity spec §4.6); rotation keys stay out."""
    context = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
    methods = []
    for name, key in state.verification_methods.items():
        suite = _key_context(key)
        if suite is not None and suite not in context:
            context.append(suite)
        methods.append(
            {
                "id": f"{state.did}#{name}",
                "type": "Multikey",
                "controller": state.did,
                "publicKeyMultibase": key.removeprefix("did:key:"),
            }
        )
    return {
        "@context": context,
        "id": state.did,
        "alsoKnownAs": list(state.also_known_as),
        "verificationMethod": methods,
        "service": [
            {"id": f"#{name}", "type": svc.type, "serviceEndpoint": svc.endpoint}
            for name, svc in state.services.items()
        ],
    }


# --------------------------------------------------------------------------
# Building operations


def build_operation(
    signer: PrivateKey,
    *,
    rotation_keys: Sequence[str],
    verification_methods: Mapping[str, str],
    also_known_as: Sequence[str],
    services: Mapping[str, Service],
    prev: str | None,
) -> dict[str, Any]:
    """A signed ``plc_operation`` (genesis when ``prev`` is None)."""
    unsigned = {
        "type": OPERATION,
        "rotationKeys": list(rotation_keys),
        "verificationMethods": dict(verification_methods),
        "alsoKnownAs": list(also_known_as),
        "services": {name: svc.to_json() for name, svc in services.items()},
        "prev": prev,
    }
    return sign_operation(unsigned, signer)


def build_tombstone(signer: PrivateKey, prev: str) -> dict[str, Any]:
    """A signed ``plc_tombstone`` deactivating the DID after ``prev``."""
    return sign_operation({"type": TOMBSTONE, "prev": prev}, signer)


# --------------------------------------------------------------------------
# Acceptance rules


def _check_size(encoded: bytes, max_op_bytes: int) -> None:
    if len(encoded) > max_op_bytes:
        raise PLCRuleError("size", f"operation is {len(encoded)} bytes of DAG-CBOR, at most {max_op_bytes}")


def check_next_operation(
    did: str,
    active: Sequence[LogEntry],
    proposed: Mapping[str, Any],
    created_at_ms: int,
    *,
    nullified_cids: Container[str] = (),
    max_op_bytes: int = limits.PLC_OP_MAX_BYTES,
    recovery_window_ms: int = limits.PLC_RECOVERY_WINDOW_MS,
) -> NextOperation:
    """Decide whether ``proposed`` may follow the DID's active (non-nullified) log.

    ``nullified_cids`` only sharpens the error when ``prev`` names a nullified
    op. Raises :class:`PLCRuleError`; returns what accepting it changes.
    """
    check_operation(proposed)
    encoded = encode_operation(proposed)
    _check_size(encoded, max_op_bytes)
    cid = str(CID.for_dag_cbor(encoded))
    prev = proposed["prev"]
    if not active:
        if prev is not None:
            raise PLCRuleError("genesis", "the first operation of a DID must have prev null")
        state = state_after(did, proposed)
        assert state is not None
        verify_signature(proposed, state.rotation_keys)
        derived = _did_from_bytes(encoded)
        if derived != did:
            raise PLCRuleError("genesis", f"genesis operation hashes to {derived}, not {did}")
        return NextOperation(cid, None, (), state, len(encoded))
    if prev is None:
        raise PLCRuleError("prev", f"{did} already exists; only its first operation may have prev null")
    index = next((i for i, entry in enumerate(active) if entry.cid == prev), -1)
    if index < 0:
        if prev in nullified_cids:
            raise PLCRuleError("prev", f"prev {prev} is a nullified operation")
        raise PLCRuleError("prev", f"prev {prev} is not an operation in the log of {did}")
    base = active[index]
    base_state = state_after(did, base.operation)
    if base_state is None:
        raise PLCRuleError("tombstone", f"{did} is tombstoned; no operation may follow the tombstone {prev}")
    keys = base_state.rotation_keys
    disputed = tuple(active[index + 1 :])
    if not disputed:
        verify_signature(proposed, keys)
    else:
        first = disputed[0]
        rival = verify_signature(first.operation, keys)
        try:
            verify_signature(proposed, keys[:rival])
        except PLCRuleError as exc:
            if exc.rule != "signature":
                raise
            verify_signature(proposed, keys)  # raises the plain signature error if it is forged
            raise PLCRuleError(
                "nullification-priority",
                f"nullifying {first.cid} needs a rotation key of strictly higher priority than the one "
                f"that signed it (index {rival} of prev's rotationKeys)",
            ) from None
        elapsed = created_at_ms - first.created_at_ms
        if elapsed > recovery_window_ms:
            raise PLCRuleError(
                "recovery-window",
                f"nullifying {first.cid} {elapsed / 3_600_000:.2f} h after it was accepted; "
                f"the recovery window is {recovery_window_ms / 3_600_000:g} h",
            )
    return NextOperation(cid, index, disputed, state_after(did, proposed), len(encoded))


def verify_audit_log(
    log: Sequence[object] | Sequence[LogEntry],
    *,
    expected_did: str | None = None,
    max_op_bytes: int = limits.PLC_OP_MAX_BYTES_SPEC,
) -> AuditResult:
    """Verify a DID's whole audit log (identity spec §4.7), oldest entry first.

    Replays the log through :func:`check_next_operation` at each entry's
    ``createdAt``; every entry's CID and DID must match and the recorded
    ``nullified`` flags must equal the ones the replay produces.
    """
    if not isinstance(log, Sequence) or isinstance(log, str | bytes | bytearray):
        raise PLCRuleError("audit-log", f"an audit log is an array, not {type(log).__name__}")
    entries = [e if isinstance(e, LogEntry) else LogEntry.from_json(i, e) for i, e in enumerate(log)]
    if not entries:
        raise PLCRuleError("audit-log", "an audit log has at least the genesis operation")
    did = entries[0].did
    if expected_did is not None and did != expected_did:
        raise PLCRuleError("audit-log", f"log is for {did}, not {expected_did}")
    nullified: set[str] = set()
    active: list[LogEntry] = []
    last_ms = entries[0].created_at_ms
    state: PLCState | None = None
    for number, entry in enumerate(entries):
        if entry.did != did:
            raise PLCRuleError("audit-log", f"entry {number} is for {entry.did}, not {did}")
        if entry.created_at_ms < last_ms:
            raise PLCRuleError("timestamp", f"entry {number} createdAt {entry.created_at} goes backwards")
        last_ms = entry.created_at_ms
        try:
            verdict = check_next_operation(
                did,
                active,
                entry.operation,
                entry.created_at_ms,
                nullified_cids=nullified,
                max_op_bytes=max_op_bytes,
            )
        except PLCRuleError as exc:
            raise PLCRuleError(exc.rule, f"entry {number} ({entry.cid}): {exc.detail}") from None
        if verdict.cid != entry.cid:
            raise PLCRuleError(
                "audit-log", f"entry {number} says cid {entry.cid} but the operation hashes to {verdict.cid}"
            )
        if verdict.prev_index is not None:
            del active[verdict.prev_index + 1 :]
        nullified.update(e.cid for e in verdict.nullified)
        active.append(entry)
        state = verdict.state
    for number, entry in enumerate(entries):
        if entry.nullified != (entry.cid in nullified):
            raise PLCRuleError(
                "audit-log",
                f"entry {number} ({entry.cid}) is marked nullified={entry.nullified} "
                f"but the log makes it nullified={entry.cid in nullified}",
            )
    return AuditResult(did, state, tuple(entries), tuple(active))
