"""Strict, canonical DAG-CBOR for the AT data model.

The only module that touches the C codec (cbrrr). The codec already enforces
most of DAG-CBOR (minimal integers, definite lengths, canonical key order,
string keys, tag 42 with a 0x00 prefix, no trailing bytes); this wrapper closes
the rest: floats (the AT data model has none), integers outside int64, nesting
depth, input size, and CID validity (links are built as ``CID``, which checks
itself). Errors from the fast path are re-diagnosed by a small pure-Python
scanner so that every ``InvalidCBOR`` says what was wrong and at which byte.
"""

from __future__ import annotations

from typing import Any

from . import limits
from .cid import CID
from .codec import decode_raw as _decode
from .codec import encode_raw as _encode
from .errors import AtrepoError, InvalidCBOR, InvalidCID, InvalidDataModel, LimitExceeded

__all__ = [
    "check_values",
    "decode",
    "decode_first",
    "decode_json_direct",
    "decode_multi",
    "decode_node",
    "encode",
    "encode_with_cid",
]


#: Every byte that is not a definite array/map header: deleting these leaves a
#: count that bounds the nesting depth from above.
_NOT_CONTAINER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9B or 0xA0 <= b <= 0xBB))


def encode(value: Any) -> bytes:
    """Encode a data-model value (dict/list/str/bytes/int/bool/None/CID) canonically.

    Only exact types encode (no tuples, bytearrays or subclasses). Whatever
    encodes also decodes with the default limits: floats, integers outside
    int64 and nesting deeper than ``MAX_CBOR_DEPTH`` raise ``InvalidDataModel``.
    """
    try:
        out: bytes = _encode(value, CID, False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidDataModel(f"cannot encode value as DAG-CBOR: {exc}") from None
    except SystemError as exc:
        # cbrrr's key sort leaves a pending UnicodeEncodeError for a lone
        # surrogate in a key of a multi-key map, which surfaces as SystemError.
        if isinstance(exc.__cause__, UnicodeError):
            raise InvalidDataModel(f"cannot encode value as DAG-CBOR: {exc.__cause__}") from None
        raise
    if _needs_walk(out, limits.MAX_CBOR_DEPTH):
        _check_values(value)
    return out


def encode_with_cid(value: Any) -> tuple[bytes, CID]:
    """Encode and return the bytes with their blessed dag-cbor CID."""
    data = encode(value)
    return data, CID.for_dag_cbor(data)


def decode(
    data: bytes,
    *,
    max_bytes: int = limits.MAX_CBOR_BYTES,
    max_depth: int = limits.MAX_CBOR_DEPTH,
) -> Any:
    """Decode exactly one strict DAG-CBOR item in the AT data model."""
    data, value = _decode_whole(data, max_bytes, max_depth)
    _check_model(data, value, max_depth)
    return value


def decode_node(data: bytes, *, max_bytes: int = limits.MAX_CBOR_BYTES) -> Any:
    """Decode one item for a caller that validates every field's type itself.

    Skips the float/integer/depth walk of ``decode``: MST nodes and other
    fixed-shape blocks check each value's type, which excludes floats, and
    their shape bounds the depth. Size, canonical form and CIDs are still
    checked.
    """
    return _decode_whole(data, max_bytes, limits.MAX_CBOR_DEPTH)[1]


def _decode_whole(data: bytes, max_bytes: int, max_depth: int) -> tuple[bytes, Any]:
    """Size checks, the depth pre-scan of large inputs, and one C decode with no trailing bytes."""
    data = _check_input(data, max_bytes)
    if len(data) > limits.CBOR_PRESCAN_BYTES:
        _scan(data, 0, max_depth, whole=True)
    try:
        value, length = _decode(data, CID, False)
    except (ValueError, AtrepoError, TypeError) as exc:
        raise _diagnose(data, max_depth, exc) from None
    if length != len(data):
        raise InvalidCBOR("trailing bytes after the top-level item", length)
    return data, value


def _check_model(data: bytes, value: Any, max_depth: int) -> None:
    """Walk the decoded value when its bytes could hide a float, a big integer or deep nesting."""
    if _needs_walk(data, max_depth):
        try:
            _check_values(value, max_depth)
        except InvalidDataModel as exc:
            raise _diagnose(data, max_depth, exc) from None


def decode_json_direct(data: bytes, *, max_bytes: int = limits.MAX_RECORD_BYTES) -> tuple[bool, Any]:
    """The JSON form (``$bytes``) straight from the C codec, validated as ``decode``.

    Returns ``(False, None)`` when the item needs the general path: it holds
    links (in JSON mode the codec does not check CID structure), or a map whose
    keys clash with ``$link``/``$bytes``. ``datamodel.decode_to_json`` then
    decodes and converts the value.
    """
    data = _check_input(data, max_bytes)
    if b"\xd8\x2a" in data:
        return False, None
    if len(data) > limits.CBOR_PRESCAN_BYTES:
        _scan(data, 0, limits.MAX_CBOR_DEPTH, whole=True)
    try:
        value, length = _decode(data, None, True)
    except (ValueError, TypeError):
        return False, None
    if length != len(data):
        raise InvalidCBOR("trailing bytes after the top-level item", length)
    _check_model(data, value, limits.MAX_CBOR_DEPTH)
    return True, value


def decode_multi(
    data: bytes,
    count: int,
    *,
    max_bytes: int = limits.MAX_CBOR_BYTES,
    max_depth: int = limits.MAX_CBOR_DEPTH,
) -> list[Any]:
    """Decode exactly ``count`` concatenated items (a firehose frame is two).

    Each item is walked after decoding: frames hold few items (their large
    parts are byte strings), so the walk is cheaper than scanning the bytes.
    """
    data = _check_input(data, max_bytes)
    if len(data) > limits.CBOR_PRESCAN_BYTES:
        offset = 0
        for _ in range(count):
            if offset >= len(data):
                break
            offset = _scan(data, offset, max_depth, whole=False)
    view = memoryview(data)
    items: list[Any] = []
    offset = 0
    for index in range(count):
        if offset >= len(data):
            raise InvalidCBOR(f"expected {count} items, found {index}", offset)
        try:
            value, length = _decode(view[offset:], CID, False)
            _check_values(value, max_depth)
        except (ValueError, AtrepoError, TypeError) as exc:
            raise _diagnose_at(data, offset, max_depth, exc) from None
        items.append(value)
        offset += length
    if offset != len(data):
        raise InvalidCBOR(f"trailing bytes after {count} items", offset)
    return items


def decode_first(data: bytes, *, max_bytes: int, max_depth: int = limits.MAX_CBOR_DEPTH) -> tuple[Any, int]:
    """Decode the item at the start of ``data``; return it and its length. What follows is not read.

    For a small item that says what comes after it (a firehose frame's
    header): only ``data[:max_bytes]`` is looked at, so the cost is bounded by
    ``max_bytes`` whatever follows, and an item that does not end within it is
    reported as if the input ended there. Checked as strictly as ``decode``.
    """
    head = bytes(data[:max_bytes])
    if not head:
        raise InvalidCBOR("empty input", 0)
    end = _scan(head, 0, max_depth, whole=False)
    return decode(head[:end], max_bytes=max_bytes, max_depth=max_depth), end


# --- internals -------------------------------------------------------------


def _check_input(data: bytes, max_bytes: int) -> bytes:
    """Size and type checks; returns the input as ``bytes`` (copying other buffers)."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidCBOR(f"expected bytes, not {type(data).__name__}")
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > max_bytes:
            raise LimitExceeded("MAX_CBOR_BYTES", size, max_bytes, "DAG-CBOR input")
        data = bytes(data)
    if len(data) > max_bytes:
        raise LimitExceeded("MAX_CBOR_BYTES", len(data), max_bytes, "DAG-CBOR input")
    if not data:
        raise InvalidCBOR("empty input", 0)
    return data


def _needs_walk(data: bytes, max_depth: int) -> bool:
    """Whether the decoded value could hold a float, an out-of-range int or excess depth.

    A float64 head is 0xfb; an integer outside int64 is a 0x1b/0x3b head whose
    next byte has the top bit set; every array or map has a header byte in
    ``0x80-0x9b``/``0xa0-0xbb``. Bytes inside strings can only cause a walk
    that was not needed, never skip one that was.
    """
    if b"\xfb" in data:
        return True
    end = len(data) - 1
    for marker in b"\x1b;":  # 0x1b, 0x3b
        at = data.find(marker)
        while 0 <= at < end:
            if data[at + 1] >= 0x80:
                return True
            at = data.find(marker, at + 1)
    return len(data.translate(None, _NOT_CONTAINER)) > max_depth


def _check_values(value: Any, max_depth: int = limits.MAX_CBOR_DEPTH) -> None:
    """Walk a decoded value: no floats, int64 range, nesting within ``max_depth``.

    Breadth-first, one level at a time, so no per-item depth bookkeeping.
    """
    level: list[Any] = [value]
    depth = 0
    lo, hi = limits.MIN_INT, limits.MAX_INT
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                if depth > max_depth:
                    raise InvalidDataModel(f"nesting deeper than {max_depth}")
                below += item.values()
            elif kind is list:
                if depth > max_depth:
                    raise InvalidDataModel(f"nesting deeper than {max_depth}")
                below += item
            elif kind is int:
                if not lo <= item <= hi:
                    raise InvalidDataModel(f"integer {item} outside the signed 64-bit range")
            elif kind is float:
                raise InvalidDataModel("floats are not allowed in the AT data model")
        level = below


#: The data-model walk ``decode`` makes after the C codec, for callers that run the codec themselves.
check_values = _check_values


def _diagnose(data: bytes, max_depth: int, exc: BaseException) -> AtrepoError:
    """Turn a fast-path failure into a located error by re-reading with the scanner."""
    return _diagnose_at(data, 0, max_depth, exc, whole=True)


def _diagnose_at(
    data: bytes, offset: int, max_depth: int, exc: BaseException, *, whole: bool = False
) -> AtrepoError:
    try:
        _scan(data, offset, max_depth, whole=whole)
    except (InvalidCBOR, LimitExceeded) as located:
        return located
    if isinstance(exc, AtrepoError):
        return exc
    return InvalidCBOR(str(exc), offset)


def _scan(data: bytes, start: int, max_depth: int, *, whole: bool) -> int:
    """Validate one item at ``start`` token by token; return the offset after it.

    Pure Python and strict: used to locate errors, to bound depth before the
    C decoder sees a large input, and to split concatenated items.
    """
    n = len(data)
    pos = start
    # stack of [remaining, is_map, expect_key, prev_key]
    stack: list[list[Any]] = []
    remaining_root = 1
    while True:
        if stack:
            frame = stack[-1]
            if frame[0] == 0:
                stack.pop()
                continue
        elif remaining_root == 0:
            break
        if pos >= n:
            raise InvalidCBOR("unexpected end of input", pos)
        head = pos
        ib = data[pos]
        major = ib >> 5
        info = ib & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > n:
                raise InvalidCBOR("unexpected end of input in a header", head)
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
            if major != 7 and arg < (24 if size == 1 else 1 << (4 * size)):
                raise InvalidCBOR("integer or length not minimally encoded", head)
        elif info == 31:
            raise InvalidCBOR("indefinite-length items are not allowed", head)
        else:
            raise InvalidCBOR(f"reserved additional information {info}", head)

        key_slot = bool(stack) and stack[-1][1] and stack[-1][2]
        if key_slot and major != 3:
            raise InvalidCBOR("map key is not a text string", head)

        if major < 2:  # unsigned or negative integer
            if arg > limits.MAX_INT:
                raise InvalidCBOR("integer outside the signed 64-bit range", head)
        elif major < 4:  # byte or text string
            if pos + arg > n:
                raise InvalidCBOR(f"string of {arg} bytes runs past the end of input", head)
            raw = data[pos : pos + arg]
            pos += arg
            if major == 3:
                try:
                    bytes(raw).decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidCBOR("text string is not valid UTF-8", head) from None
            if key_slot:
                frame = stack[-1]
                prev = frame[3]
                if prev is not None and (len(raw), raw) <= (len(prev), prev):
                    what = "duplicate map key" if raw == prev else "map keys not in canonical order"
                    raise InvalidCBOR(f"{what} ({bytes(raw)!r} after {bytes(prev)!r})", head)
                frame[3] = raw
                frame[2] = False
                continue  # a key does not consume an entry; its value does
        elif major < 6:  # array or map
            if arg > n - pos:
                raise InvalidCBOR(f"container of {arg} items longer than the input", head)
            _consume(stack)
            if len(stack) + 1 > max_depth:
                raise InvalidCBOR(f"nesting deeper than {max_depth}", head)
            if not stack:
                remaining_root -= 1
            stack.append([arg, major == 5, True, None])
            continue
        elif major == 6:
            if arg != 42:
                raise InvalidCBOR(f"tag {arg} is not allowed (only 42)", head)
            if pos >= n:
                raise InvalidCBOR("unexpected end of input after tag 42", head)
            ib2 = data[pos]
            if ib2 >> 5 != 2:
                raise InvalidCBOR("tag 42 must wrap a byte string", pos)
            # read the byte-string header for the CID payload
            inner = _scan_bytes_header(data, pos)
            blen, body = inner
            if body + blen > n:
                raise InvalidCBOR("CID runs past the end of input", pos)
            payload = data[body : body + blen]
            if not payload or payload[0] != 0:
                raise InvalidCBOR("tag-42 CID must start with a 0x00 byte", pos)
            try:
                CID(bytes(payload[1:]))
            except InvalidCID as exc:
                raise InvalidCBOR(f"invalid CID in tag 42: {exc}", pos) from None
            pos = body + blen
        elif major == 7:
            if info in (25, 26, 27):
                raise InvalidCBOR("floats are not allowed in the AT data model", head)
            if info not in (20, 21, 22):
                raise InvalidCBOR(f"simple value {arg} is not allowed", head)
        _consume(stack)
        if not stack:
            remaining_root -= 1
            if remaining_root == 0:
                break
    if whole and pos != n:
        raise InvalidCBOR("trailing bytes after the top-level item", pos)
    return pos


def _consume(stack: list[list[Any]]) -> None:
    """Count one finished value against the innermost container."""
    if stack:
        frame = stack[-1]
        frame[0] -= 1
        if frame[1]:
            frame[2] = True


def _scan_bytes_header(data: bytes, pos: int) -> tuple[int, int]:
    """Read a byte-string header at ``pos``; return (length, body offset)."""
    ib = data[pos]
    info = ib & 0x1F
    pos += 1
    if info < 24:
        return info, pos
    if info > 27:
        raise InvalidCBOR("bad byte-string header", pos - 1)
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise InvalidCBOR("unexpected end of input in a header", pos - 1)
    arg = int.from_bytes(data[pos : pos + size], "big")
    if arg < (24 if size == 1 else 1 << (4 * size)):
        raise InvalidCBOR("integer or length not minimally encoded", pos - 1)
    return arg, pos + size
