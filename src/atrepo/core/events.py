"""Firehose (``com.atproto.sync.subscribeRepos``) frames and messages, sans I/O.

A frame is two concatenated DAG-CBOR items: a header ``{op, t?}`` and a body.
``op = 1`` is a message whose type ``t`` (``#commit``, ``#sync``...) selects the
body schema; ``op = -1`` is an error frame. Unknown ops and types are returned
as ``UnknownFrame`` for the caller to skip, as the spec asks of clients.

Parsing here is structural: presence, types, identifier syntax and size
limits, each failure an ``InvalidEvent`` naming the message type and field (or
``LimitExceeded`` naming the limit). Whether a commit's CAR slice, signature and
operations agree is the business of the Sync 1.1 validator built on these
types. Extra body fields are ignored, so only well-formed frames without extras
re-encode to the same bytes.

A frame's header is decoded first and alone: a frame of an op or type we do
not parse is returned undecoded, so skipping it costs the same whatever its
body holds.

Recorded streams are files of frames, each prefixed by its length as the same
unsigned LEB128 varint CAR files use; ``FrameStreamDecoder`` splits them as
bytes arrive and ``iter_stream_frames`` is a loop over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from . import cbor, limits
from .action import ACTIONS, Action
from .car import CHUNK_SIZE, PushDecoder, Readable, Writable
from .cid import CID
from .codec import decode_raw as _decode_raw
from .codec import encode_raw as _encode_raw
from .errors import AtrepoError, InvalidCAR, InvalidCBOR, InvalidEvent, InvalidSyntax, LimitExceeded
from .syntax import (
    is_valid_datetime,
    is_valid_did,
    is_valid_handle,
    is_valid_repo_path,
    is_valid_tid,
    validate_datetime,
    validate_did,
    validate_handle,
    validate_repo_path,
    validate_tid,
)
from .varint import encode_varint, scan_varint

__all__ = [
    "ACTIONS",
    "AccountEvent",
    "CommitEvent",
    "ErrorFrame",
    "Frame",
    "FrameStreamDecoder",
    "IdentityEvent",
    "InfoEvent",
    "Message",
    "RepoOp",
    "SyncEvent",
    "UnknownFrame",
    "commit_seq_slot",
    "decode_frame",
    "encode_error_frame",
    "encode_frame",
    "encode_frame_with_seq",
    "iter_stream_frames",
    "reseq_frame",
    "write_stream_frame",
]


OP_MESSAGE = 1
OP_ERROR = -1


# --- message types -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoOp:
    """One record mutation: ``cid`` is None exactly for deletes; ``prev`` is absent for creates."""

    action: Action
    path: str
    cid: CID | None
    prev: CID | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": self.action, "path": self.path, "cid": self.cid}
        if self.prev is not None:
            body["prev"] = self.prev
        return body


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """``#commit``: a repository transition ``since`` → ``rev`` with its CAR slice."""

    type_name: ClassVar[str] = "#commit"

    seq: int
    repo: str
    commit: CID
    rev: str
    since: str | None
    blocks: bytes
    ops: tuple[RepoOp, ...]
    time: str
    prev_data: CID | None = None
    blobs: tuple[CID, ...] = ()
    rebase: bool = False
    too_big: bool = False

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "seq": self.seq,
            "rebase": self.rebase,
            "tooBig": self.too_big,
            "repo": self.repo,
            "commit": self.commit,
            "rev": self.rev,
            "since": self.since,
            "blocks": self.blocks,
            "ops": [op.to_body() for op in self.ops],
            "blobs": list(self.blobs),
            "time": self.time,
        }
        if self.prev_data is not None:
            body["prevData"] = self.prev_data
        return body


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """``#sync``: "this signed commit (alone in ``blocks``) is the repo's current state"."""

    type_name: ClassVar[str] = "#sync"

    seq: int
    did: str
    blocks: bytes
    rev: str
    time: str

    def to_body(self) -> dict[str, Any]:
        return {"seq": self.seq, "did": self.did, "blocks": self.blocks, "rev": self.rev, "time": self.time}


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """``#identity``: the account's identity may have changed; refresh caches."""

    type_name: ClassVar[str] = "#identity"

    seq: int
    did: str
    time: str
    handle: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"seq": self.seq, "did": self.did, "time": self.time}
        if self.handle is not None:
            body["handle"] = self.handle
        return body


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """``#account``: hosting status of the account at the emitting service."""

    type_name: ClassVar[str] = "#account"

    seq: int
    did: str
    time: str
    active: bool
    status: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"seq": self.seq, "did": self.did, "time": self.time, "active": self.active}
        if self.status is not None:
            body["status"] = self.status
        return body


@dataclass(frozen=True, slots=True)
class InfoEvent:
    """``#info``: an unsequenced notice such as ``OutdatedCursor``."""

    type_name: ClassVar[str] = "#info"

    name: str
    message: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.message is not None:
            body["message"] = self.message
        return body


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """An ``op = -1`` frame; the server closes the connection after it."""

    error: str
    message: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.message is not None:
            body["message"] = self.message
        return body


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame with an unknown ``op`` or message type: kept only so callers can skip or forward it.

    ``body`` is the body item's bytes as they arrived, neither decoded nor
    checked: clients skip these frames (sync.md §3), and decoding a body only
    to drop it would let any frame cost what its worst body costs.
    """

    op: int
    t: str | None
    body: bytes

    def to_body(self) -> Any:
        """The body decoded (strictly, so it may raise ``InvalidCBOR``): only for a caller that asks."""
        return cbor.decode(self.body)


Message = CommitEvent | SyncEvent | IdentityEvent | AccountEvent | InfoEvent
Frame = CommitEvent | SyncEvent | IdentityEvent | AccountEvent | InfoEvent | ErrorFrame | UnknownFrame


# --- field checks ----------------------------------------------------------------


def _missing(kind: str, key: str) -> InvalidEvent:
    return InvalidEvent(f"{kind}: required field {key!r} is missing")


def _wrong(kind: str, key: str, expected: str, value: Any) -> InvalidEvent:
    return InvalidEvent(f"{kind}: field {key!r} must be {expected}, not {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is CID:
        return "a link"
    return type(value).__name__


def _get(body: dict[str, Any], key: str, kind: str) -> Any:
    try:
        return body[key]
    except KeyError:
        raise _missing(kind, key) from None


def _seq(body: dict[str, Any], kind: str) -> int:
    value = _get(body, "seq", kind)
    if type(value) is not int:
        raise _wrong(kind, "seq", "an integer", value)
    if not 0 < value <= limits.MAX_SAFE_INT:
        raise InvalidEvent(f"{kind}: field 'seq' is {value}, outside 1..2^53-1")
    return value


def _str(body: dict[str, Any], key: str, kind: str) -> str:
    value = _get(body, key, kind)
    if type(value) is not str:
        raise _wrong(kind, key, "a string", value)
    return value


def _opt_str(body: dict[str, Any], key: str, kind: str) -> str | None:
    value = body.get(key)
    if value is None:
        if key in body:
            raise _wrong(kind, key, "a string when present", value)
        return None
    if type(value) is not str:
        raise _wrong(kind, key, "a string", value)
    return value


def _bool(body: dict[str, Any], key: str, kind: str) -> bool:
    value = _get(body, key, kind)
    if type(value) is not bool:
        raise _wrong(kind, key, "a boolean", value)
    return value


def _link(body: dict[str, Any], key: str, kind: str) -> CID:
    value = _get(body, key, kind)
    if type(value) is not CID:
        raise _wrong(kind, key, "a link", value)
    return value


def _opt_link(body: dict[str, Any], key: str, kind: str) -> CID | None:
    value = body.get(key)
    if value is None:
        if key in body:
            raise _wrong(kind, key, "a link when present", value)
        return None
    if type(value) is not CID:
        raise _wrong(kind, key, "a link", value)
    return value


def _bytes(body: dict[str, Any], key: str, kind: str, maximum: int, limit: str) -> bytes:
    value = _get(body, key, kind)
    if type(value) is not bytes:
        raise _wrong(kind, key, "bytes", value)
    if len(value) > maximum:
        raise LimitExceeded(limit, len(value), maximum, f"{kind}.{key}")
    return value


def _syntax(
    value: str, key: str, kind: str, check: Callable[[object], bool], explain: Callable[[object], None]
) -> str:
    """Run a fast syntax predicate; on failure let the validator say why."""
    if not check(value):
        try:
            explain(value)
        except InvalidSyntax as exc:
            raise InvalidEvent(f"{kind}: field {key!r}: {exc}") from None
        raise InvalidEvent(f"{kind}: field {key!r} is invalid")  # pragma: no cover - validators agree
    return value


def _did(body: dict[str, Any], key: str, kind: str) -> str:
    return _syntax(_str(body, key, kind), key, kind, is_valid_did, validate_did)


def _tid(body: dict[str, Any], key: str, kind: str) -> str:
    return _syntax(_str(body, key, kind), key, kind, is_valid_tid, validate_tid)


def _time(body: dict[str, Any], kind: str) -> str:
    return _syntax(_str(body, "time", kind), "time", kind, is_valid_datetime, validate_datetime)


# --- body parsers ----------------------------------------------------------------


def _parse_op(item: Any, index: int) -> RepoOp:
    kind = f"#commit: ops[{index}]"
    if type(item) is not dict:
        raise InvalidEvent(f"{kind} must be a map, not {_kind(item)}")
    action = _str(item, "action", kind)
    if action not in ACTIONS:
        raise InvalidEvent(f"{kind}: field 'action' is {action!r}, not create, update or delete")
    path = _syntax(_str(item, "path", kind), "path", kind, is_valid_repo_path, validate_repo_path)
    if "cid" not in item:
        raise _missing(kind, "cid")
    cid = item["cid"]
    if action == "delete":
        if cid is not None:
            raise InvalidEvent(f"{kind}: field 'cid' must be null for a delete, not {_kind(cid)}")
    elif type(cid) is not CID:
        raise _wrong(kind, "cid", f"a link (action {action!r})", cid)
    return RepoOp(action, path, cid, _opt_link(item, "prev", kind))  # type: ignore[arg-type]


#: The actions whose op carries a record CID.
_WRITE_ACTIONS = frozenset(("create", "update"))


def _parse_commit(body: dict[str, Any]) -> CommitEvent:
    """A ``#commit`` body: the common well-formed case in one pass, anything else field by field."""
    event = _parse_commit_fast(body)
    return event if event is not None else _parse_commit_fields(body)


def _parse_commit_fast(body: dict[str, Any], *, exact: bool = False) -> CommitEvent | None:
    """``_parse_commit``'s one pass: the event, or None where the field-by-field parse must decide.

    ``exact`` also requires that the body and its ops hold no fields beyond
    the ones checked here: every value is then of a checked type (the only
    integer is the seq, in range), which is what lets ``decode_frame`` skip
    the data-model walk for such a body.

    The pass makes the same checks as ``_parse_commit_fields`` but inline,
    and gives up (None: the field-by-field parse then raises the error it
    always raised) at the first thing it does not like.
    """
    get = body.get
    seq = get("seq")
    repo = get("repo")
    commit = get("commit")
    rev = get("rev")
    since = get("since")
    blocks = get("blocks")
    raw_ops = get("ops")
    raw_blobs = get("blobs")
    prev_data = get("prevData")
    time = get("time")
    if (
        type(seq) is int
        and 0 < seq <= limits.MAX_SAFE_INT
        and body.get("rebase", True) is False
        and body.get("tooBig", True) is False
        and type(commit) is CID
        and type(blocks) is bytes
        and len(blocks) <= limits.MAX_COMMIT_BLOCKS_BYTES
        and type(raw_ops) is list
        and len(raw_ops) <= limits.MAX_COMMIT_OPS
        and type(raw_blobs) is list
        and (prev_data is None or type(prev_data) is CID)
        and "since" in body
        and (since is None or is_valid_tid(since))
        and is_valid_did(repo)
        and is_valid_tid(rev)
        and type(time) is str
        and is_valid_datetime(time)
        and (prev_data is not None or "prevData" not in body)
        and (not exact or len(body) == (12 if prev_data is not None else 11))
    ):
        ops = []
        for item in raw_ops:
            if type(item) is not dict:
                break
            action = item.get("action")
            path = item.get("path")
            cid = item.get("cid", False)
            prev = item.get("prev")
            if action == "delete":
                if cid is not None:
                    break
            elif type(cid) is not CID or action not in _WRITE_ACTIONS:
                break
            if (
                type(action) is not str
                or (prev is not None and type(prev) is not CID)
                or (prev is None and "prev" in item)
                or not is_valid_repo_path(path)
                or (exact and len(item) != (3 if prev is None else 4))
            ):
                break
            ops.append(RepoOp(action, path, cid, prev))  # type: ignore[arg-type]
        else:
            for blob in raw_blobs:
                if type(blob) is not CID:
                    break
            else:
                return CommitEvent(
                    seq, repo, commit, rev, since, blocks, tuple(ops), time, prev_data, tuple(raw_blobs)
                )
    return None


def _parse_commit_fields(body: dict[str, Any]) -> CommitEvent:
    """A ``#commit`` body checked field by field, in order: the first problem is the one reported."""
    kind = "#commit"
    seq = _seq(body, kind)
    rebase = _bool(body, "rebase", kind)
    too_big = _bool(body, "tooBig", kind)
    repo = _did(body, "repo", kind)
    commit = _link(body, "commit", kind)
    rev = _tid(body, "rev", kind)
    since = _get(body, "since", kind)
    if since is not None:
        if type(since) is not str:
            raise _wrong(kind, "since", "a string or null", since)
        _syntax(since, "since", kind, is_valid_tid, validate_tid)
    blocks = _bytes(body, "blocks", kind, limits.MAX_COMMIT_BLOCKS_BYTES, "MAX_COMMIT_BLOCKS_BYTES")
    raw_ops = _get(body, "ops", kind)
    if type(raw_ops) is not list:
        raise _wrong(kind, "ops", "an array", raw_ops)
    if len(raw_ops) > limits.MAX_COMMIT_OPS:
        raise LimitExceeded("MAX_COMMIT_OPS", len(raw_ops), limits.MAX_COMMIT_OPS, "#commit.ops")
    ops = tuple([_parse_op(item, i) for i, item in enumerate(raw_ops)])
    raw_blobs = _get(body, "blobs", kind)
    if type(raw_blobs) is not list:
        raise _wrong(kind, "blobs", "an array", raw_blobs)
    for i, blob in enumerate(raw_blobs):
        if type(blob) is not CID:
            raise _wrong(kind, f"blobs[{i}]", "a link", blob)
    prev_data = _opt_link(body, "prevData", kind)
    time = _time(body, kind)
    return CommitEvent(
        seq, repo, commit, rev, since, blocks, ops, time, prev_data, tuple(raw_blobs), rebase, too_big
    )


def _parse_sync(body: dict[str, Any]) -> SyncEvent:
    kind = "#sync"
    return SyncEvent(
        _seq(body, kind),
        _did(body, "did", kind),
        _bytes(body, "blocks", kind, limits.MAX_SYNC_BLOCKS_BYTES, "MAX_SYNC_BLOCKS_BYTES"),
        _tid(body, "rev", kind),
        _time(body, kind),
    )


def _parse_identity(body: dict[str, Any]) -> IdentityEvent:
    kind = "#identity"
    seq = _seq(body, kind)
    did = _did(body, "did", kind)
    time = _time(body, kind)
    handle = _opt_str(body, "handle", kind)
    if handle is not None:
        _syntax(handle, "handle", kind, is_valid_handle, validate_handle)
    return IdentityEvent(seq, did, time, handle)


def _parse_account(body: dict[str, Any]) -> AccountEvent:
    kind = "#account"
    return AccountEvent(
        _seq(body, kind),
        _did(body, "did", kind),
        _time(body, kind),
        _bool(body, "active", kind),
        _opt_str(body, "status", kind),
    )


def _parse_info(body: dict[str, Any]) -> InfoEvent:
    return InfoEvent(_str(body, "name", "#info"), _opt_str(body, "message", "#info"))


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "#commit": _parse_commit,
    "#sync": _parse_sync,
    "#identity": _parse_identity,
    "#account": _parse_account,
    "#info": _parse_info,
}

_HEADERS: dict[str, bytes] = {name: cbor.encode({"op": OP_MESSAGE, "t": name}) for name in _PARSERS}
_ERROR_HEADER = cbor.encode({"op": OP_ERROR})
#: The canonical header of every frame we parse, with its op and type: nearly
#: every frame starts with one of these, which says what it is without decoding.
_KNOWN_HEADERS: tuple[tuple[bytes, int, str | None], ...] = (
    *((header, OP_MESSAGE, name) for name, header in _HEADERS.items()),
    (_ERROR_HEADER, OP_ERROR, None),
)


# --- frames ----------------------------------------------------------------------


def decode_frame(data: bytes, *, max_bytes: int = limits.MAX_FRAME_BYTES) -> Frame:
    """Decode one frame: exactly two DAG-CBOR items, header then body.

    Bad CBOR raises ``InvalidCBOR`` (fatal for the connection per the spec);
    a frame over ``max_bytes`` raises ``LimitExceeded``. The header is read
    first (it must end within ``MAX_FRAME_HEADER_BYTES``): for an op other
    than 1/-1 or a type we do not parse, the body is not decoded and comes
    back as bytes in an ``UnknownFrame``.
    """
    if len(data) > max_bytes:
        raise LimitExceeded("MAX_FRAME_BYTES", len(data), max_bytes, "event-stream frame")
    if type(data) is not bytes:
        data = bytes(data)
    known = _known_header(data)
    if known is not None:
        op, t = known
        if t == "#commit" and len(data) <= limits.CBOR_PRESCAN_BYTES:
            body = _commit_body(data)
            if body is not None:
                # a body of exactly the known fields, all of their types, needs no data-model walk
                event = _parse_commit_fast(body, exact=True)
                if event is not None:
                    return event
                try:
                    cbor.check_values(body)
                except AtrepoError:
                    pass  # the general path below raises its located error
                else:
                    return _parse_commit(body)
    else:
        header, at = cbor.decode_first(data, max_bytes=limits.MAX_FRAME_HEADER_BYTES)
        op, t = _read_header(header)
        if not (op == OP_ERROR or (op == OP_MESSAGE and t in _PARSERS)):
            if at >= len(data):
                raise InvalidCBOR("expected 2 items, found 1", at)
            return UnknownFrame(op, t, data[at:])
    _, body = cbor.decode_multi(data, 2, max_bytes=max_bytes)
    if op == OP_ERROR:
        if type(body) is not dict:
            raise InvalidEvent(f"error frame: body must be a map, not {_kind(body)}")
        return ErrorFrame(_str(body, "error", "error frame"), _opt_str(body, "message", "error frame"))
    assert t is not None
    if type(body) is not dict:
        raise InvalidEvent(f"{t}: body must be a map, not {_kind(body)}")
    return _PARSERS[t](body)


_COMMIT_HEADER = _HEADERS["#commit"]
_COMMIT_HEADER_BYTES = len(_COMMIT_HEADER)


def _commit_body(data: bytes) -> dict[str, Any] | None:
    """The body of a small ``#commit`` frame decoded in one C call, or None for the general path.

    Strict DAG-CBOR as ``cbor.decode_multi`` reads it, but not yet its data
    model walk (``decode_frame`` runs it unless the body's shape makes it
    moot); anything the codec refuses, or a body that is not a map, returns
    None so that ``decode_frame``'s general path raises its own located error.
    """
    try:
        body, length = _decode_raw(memoryview(data)[_COMMIT_HEADER_BYTES:], CID, False)
    except (ValueError, TypeError, AtrepoError):
        return None
    if length != len(data) - _COMMIT_HEADER_BYTES or type(body) is not dict:
        return None
    return body


def _known_header(data: bytes) -> tuple[int, str | None] | None:
    """The op and type of a frame that starts with the canonical header of a frame we parse."""
    for prefix, op, t in _KNOWN_HEADERS:
        if data.startswith(prefix):
            return op, t
    return None


def _read_header(header: Any) -> tuple[int, str | None]:
    """Check a decoded frame header; return its op and type (None unless a string)."""
    if type(header) is not dict:
        raise InvalidEvent(f"frame header must be a map, not {_kind(header)}")
    op = _get(header, "op", "frame header")
    if type(op) is not int:
        raise _wrong("frame header", "op", "an integer", op)
    t = header.get("t")
    if op == OP_MESSAGE:
        if "t" not in header:
            raise _missing("frame header", "t")
        if type(t) is not str:
            raise _wrong("frame header", "t", "a string", t)
        if not t.startswith("#"):
            raise InvalidEvent(f"frame header: field 't' is {t!r}, which does not start with '#'")
    return op, t if type(t) is str else None


def encode_frame(frame: Frame) -> bytes:
    """Encode a message (or error/unknown frame) as header ‖ body bytes."""
    if isinstance(frame, ErrorFrame):
        return _ERROR_HEADER + cbor.encode(frame.to_body())
    if isinstance(frame, UnknownFrame):
        header: dict[str, Any] = {"op": frame.op}
        if frame.t is not None:
            header["t"] = frame.t
        return cbor.encode(header) + frame.body
    return _HEADERS[frame.type_name] + cbor.encode(frame.to_body())


def _head_len(n: int) -> int:
    """Bytes of a canonical CBOR head with argument ``n``."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _text_len(text: object) -> int:
    if type(text) is not str:
        raise TypeError
    n = len(text) if text.isascii() else len(text.encode())
    return _head_len(n) + n


def _link_len(cid: object) -> int:
    if type(cid) is not CID:
        raise TypeError
    n = len(cid.raw) + 1  # the multibase 0x00 byte, then the binary CID
    return 2 + _head_len(n) + n  # tag 42, then the byte string


def _uint_head(n: int) -> bytes:
    if n < 24:
        return bytes((n,))
    if n < 0x100:
        return bytes((24, n))
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return b"\x1b" + n.to_bytes(8, "big")


#: The ``seq`` field name as a ``#commit`` body encodes it (after ``ops`` and ``rev``, canonically).
_SEQ_KEY = b"\x63seq"


def commit_seq_slot(raw: bytes, frame: CommitEvent) -> tuple[int, int] | None:
    """Where the seq's value sits in ``raw`` (start, length) when ``raw`` is exactly ``encode_frame(frame)``.

    A relay passes most ``#commit`` frames on as they came, with its own seq:
    when the upstream's frame is byte for byte our encoding of the event, the
    new frame is the old one with the seq's few bytes replaced, and nothing
    needs encoding again. ``raw`` must be the frame ``decode_frame`` decoded
    to ``frame``: its decoding is strict (canonical key order, shortest
    heads), so the body is the canonical encoding of its fields, and ours
    differs only if the body has fields the event does not keep (unknown
    fields, a null ``prevData``, an op's null ``prev``). Those only add bytes,
    so the canonical length of our encoding, computed here field by field
    without encoding anything, equal to the frame's length proves the two the
    same. None otherwise (and for anything not of the plain types): the caller
    encodes the event (``encode_frame_with_seq``).
    """
    seq = frame.seq
    if type(seq) is not int or not 0 <= seq <= limits.MAX_SAFE_INT or not raw.startswith(_COMMIT_HEADER):
        return None
    try:
        ops_len = _head_len(len(frame.ops))
        for op in frame.ops:
            prev = op.prev
            ops_len += 1 + 4 + (1 if op.cid is None else _link_len(op.cid))  # map head, "cid"
            ops_len += 5 + _text_len(op.path) + 7 + _text_len(op.action)  # "path", "action"
            if prev is not None:
                ops_len += 5 + _link_len(prev)  # "prev"
        start = _COMMIT_HEADER_BYTES + 1 + 4 + ops_len + 4 + _text_len(frame.rev) + 4
        seq_len = _head_len(seq)
        blobs = frame.blobs
        since = frame.since
        blocks = frame.blocks
        if type(blocks) is not bytes or type(frame.rebase) is not bool or type(frame.too_big) is not bool:
            return None
        rest = 5 + _text_len(frame.repo) + 5 + _text_len(frame.time)  # "repo", "time"
        rest += 6 + _head_len(len(blobs)) + sum(map(_link_len, blobs))  # "blobs"
        rest += 6 + (1 if since is None else _text_len(since))  # "since"
        rest += 7 + _head_len(len(blocks)) + len(blocks)  # "blocks"
        rest += 7 + _link_len(frame.commit) + 7 + 1 + 7 + 1  # "commit", "rebase", "tooBig"
        if frame.prev_data is not None:
            rest += 9 + _link_len(frame.prev_data)  # "prevData"
    except TypeError:
        return None
    if (
        len(raw) != start + seq_len + rest
        or not raw.startswith(_SEQ_KEY, start - 4)
        or not raw.startswith(_uint_head(seq), start)
    ):
        return None
    return start, seq_len


def reseq_frame(raw: bytes, slot: tuple[int, int], seq: int) -> bytes:
    """``raw`` with the seq at ``slot`` (from ``commit_seq_slot``) replaced by ``seq``."""
    start, length = slot
    if type(seq) is not int or not 0 <= seq <= limits.MAX_SAFE_INT:
        raise ValueError(f"seq {seq!r} is outside 0..2^53-1")
    return b"".join((raw[:start], _uint_head(seq), raw[start + length :]))


def encode_frame_with_seq(frame: Message, seq: int) -> bytes:
    """``encode_frame(dataclasses.replace(frame, seq=seq))``, the same bytes, for a relay re-sequencing.

    A relay re-encodes every event it passes on with its own seq. For a
    ``#commit`` whose fields are the plain types ``decode_frame`` produces, the
    body map is built here and handed to the C codec directly: copying the
    frozen event, building its body and the data-model walk of
    ``cbor.encode`` (which can find nothing in such a map: its only integer is
    a seq checked here, and it nests three deep) cost twice the encoding
    itself. Anything else goes the general way (``tests/core/test_events.py``
    compares both).
    """
    if type(frame) is CommitEvent and type(seq) is int and 0 <= seq <= limits.MAX_SAFE_INT:
        body = _plain_commit_body(frame, seq)
        if body is not None:
            return _COMMIT_HEADER + _encode_raw(body, CID, False)
    return encode_frame(dataclasses.replace(frame, seq=seq))  # type: ignore[arg-type]


def _plain_commit_body(frame: CommitEvent, seq: int) -> dict[str, Any] | None:
    """``frame.to_body()`` with ``seq``, when every field is of its declared, plain type; else None."""
    since, prev_data = frame.since, frame.prev_data
    if not (
        type(frame.repo) is str
        and type(frame.commit) is CID
        and type(frame.rev) is str
        and (since is None or type(since) is str)
        and type(frame.blocks) is bytes
        and type(frame.time) is str
        and (prev_data is None or type(prev_data) is CID)
        and type(frame.rebase) is bool
        and type(frame.too_big) is bool
        and type(frame.ops) is tuple
        and type(frame.blobs) is tuple
    ):
        return None
    ops: list[dict[str, Any]] = []
    for op in frame.ops:
        if type(op) is not RepoOp:
            return None
        action, path, cid, prev = op.action, op.path, op.cid, op.prev
        if type(action) is not str or type(path) is not str or (cid is not None and type(cid) is not CID):
            return None
        if prev is None:
            ops.append({"action": action, "path": path, "cid": cid})
        elif type(prev) is CID:
            ops.append({"action": action, "path": path, "cid": cid, "prev": prev})
        else:
            return None
    for blob in frame.blobs:
        if type(blob) is not CID:
            return None
    body: dict[str, Any] = {
        "seq": seq,
        "rebase": frame.rebase,
        "tooBig": frame.too_big,
        "repo": frame.repo,
        "commit": frame.commit,
        "rev": frame.rev,
        "since": since,
        "blocks": frame.blocks,
        "ops": ops,
        "blobs": list(frame.blobs),
        "time": frame.time,
    }
    if prev_data is not None:
        body["prevData"] = prev_data
    return body


def encode_error_frame(error: str, message: str | None = None) -> bytes:
    """An ``op = -1`` frame, e.g. ``FutureCursor`` or ``ConsumerTooSlow``."""
    return encode_frame(ErrorFrame(error, message))


# --- recorded stream files -------------------------------------------------------


class FrameStreamDecoder(PushDecoder[tuple[int, bytes]]):
    """Push decoder of a recorded stream file: feed bytes as they arrive, get frames.

    ``feed(chunk)`` returns ``(offset, frame bytes)`` for every frame the
    chunk completes, ``offset`` being where the frame's length varint starts;
    the frames are not decoded here (pass them to ``decode_frame``).
    ``close()`` raises ``InvalidEvent`` if the stream ended inside a frame. A
    length over ``max_frame_bytes`` raises ``LimitExceeded`` as soon as it is
    read, so memory stays within one frame plus the chunk being fed.
    """

    __slots__ = ("_max",)

    def __init__(self, *, max_frame_bytes: int = limits.MAX_FRAME_BYTES) -> None:
        super().__init__()
        self._max = max_frame_bytes

    def _parse(self, buf: bytes, pos: int, base: int, out: list[tuple[int, bytes]]) -> tuple[int, int]:
        end = len(buf)
        maximum = self._max
        while pos < end:
            start = pos
            try:
                size, at = scan_varint(buf, pos, end, base)
            except InvalidCAR as exc:
                raise InvalidEvent(f"bad frame length in stream file: {exc}") from None
            if at < 0:
                return start, 1
            if size > maximum:
                raise LimitExceeded("MAX_FRAME_BYTES", size, maximum, f"stream frame at byte {base + start}")
            if size == 0:
                raise InvalidEvent(f"empty frame at byte {base + start}")
            pos = at + size
            if pos > end:
                return start, pos - end
            out.append((base + start, buf[at:pos]))
        return pos, 0

    def _truncated(self, buf: bytes, pos: int, base: int) -> AtrepoError | None:
        end = len(buf)
        if pos >= end:
            return None
        size, at = scan_varint(buf, pos, end, base)
        if at < 0:
            return InvalidEvent(f"truncated frame length varint at byte {base + pos}")
        return InvalidEvent(f"truncated frame at byte {base + pos}: {end - at} of {size} bytes")


def iter_stream_frames(
    stream: Readable, *, max_frame_bytes: int = limits.MAX_FRAME_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, frame bytes)`` from a file of varint-length-prefixed frames.

    A loop over ``FrameStreamDecoder``: read a chunk, feed it, hand out the
    frames it completes. ``offset`` is where the frame's length varint
    starts. The frames are not decoded here; pass them to ``decode_frame``.
    """
    decoder = FrameStreamDecoder(max_frame_bytes=max_frame_bytes)
    read = stream.read
    while True:
        data = read(max(decoder.needed, CHUNK_SIZE))
        if not data:
            decoder.close()
            return
        yield from decoder.feed(data)


def write_stream_frame(stream: Writable, frame: bytes) -> None:
    """Append one frame to a stream file (length varint, then the frame)."""
    stream.write(encode_varint(len(frame)) + frame)
