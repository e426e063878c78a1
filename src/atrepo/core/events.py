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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from . import cbor, limits
from .action import ACTIONS, Action
from .car import CHUNK_SIZE, PushDecoder, Readable, Writable
from .cid import CID
from .codec import decode_raw as _decode_raw
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
    "decode_frame",
    "encode_error_frame",
    "encode_frame",
    "iter_stream_frames",
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
    """A ``#commit`` body: the common well-formed case in one pass, anything else field by field.

    The fast pass makes the same checks as ``_parse_commit_fields`` but
    inline, and gives up (returns to the field-by-field parse, which then
    raises the error it always raised) at the first thing it does not like.
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
    return _parse_commit_fields(body)


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


_COMMIT_HEADER_BYTES = len(_HEADERS["#commit"])


def _commit_body(data: bytes) -> dict[str, Any] | None:
    """The body of a small ``#commit`` frame decoded in one C call, or None for the general path.

    Checked as ``cbor.decode_multi`` checks it (strict DAG-CBOR, then the data
    model walk); anything it would refuse, or a body that is not a map,
    returns None so that ``decode_frame``'s general path raises its own
    located error.
    """
    try:
        body, length = _decode_raw(memoryview(data)[_COMMIT_HEADER_BYTES:], CID, False)
        if length != len(data) - _COMMIT_HEADER_BYTES or type(body) is not dict:
            return None
        cbor.check_values(body)
    except (ValueError, TypeError, AtrepoError):
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
