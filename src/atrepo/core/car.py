"""CAR v1 files: streaming reader, random-access index and writer.

A CAR is ``varint(len(H)) ‖ H ‖ section*`` where ``H`` is the DAG-CBOR map
``{"roots": [link...], "version": 1}`` and each section is
``varint(len(cid) + len(data)) ‖ cid ‖ data`` with the binary CID (no 0x00
prefix). Varints are unsigned LEB128; we require the minimal encoding and at
most 9 bytes so that one file has exactly one byte representation to check.

The reader never holds the whole file: it reads fixed-size chunks into a small
buffer and parses every complete section in that buffer in one tight loop, so a
100k-block repository costs a few hundred ``read`` calls, not 300k. Every
block's hash is checked by default; a file we accept is a file whose bytes we
have verified. Errors carry the byte offset of the item that was wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from . import cbor, limits
from .blocks import BlockMap
from .cid import CID
from .errors import AtrepoError, InvalidCAR, InvalidCID, LimitExceeded

__all__ = [
    "BufferedInput",
    "CarReader",
    "CarWriter",
    "decode_varint",
    "encode_car_header",
    "encode_varint",
    "index_car",
    "read_block_at",
    "read_car",
    "scan_varint",
    "varint_size",
    "write_car",
]

#: Bytes asked of the stream per read: large enough that per-call overhead
#: vanishes, small enough that the buffer stays cache-friendly.
CHUNK_SIZE = 65_536
#: A minimal varint of a value below 2**63 takes at most 9 bytes.
MAX_VARINT_BYTES = 9

_PFX_DAG_CBOR = b"\x01\x71\x12\x20"
_PFX_RAW = b"\x01\x55\x12\x20"
_sha256 = hashlib.sha256
_ONE_BYTE = [bytes((i,)) for i in range(128)]


class Readable(Protocol):
    """A binary stream we can read from (file, ``BytesIO``, socket file...)."""

    def read(self, size: int, /) -> bytes: ...


class SeekableReadable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


# --- varints -------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Minimal unsigned LEB128 of ``0 <= value < 2**63``."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"varint value {value} out of range")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_size(value: int) -> int:
    """Number of bytes ``encode_varint(value)`` produces."""
    return (value.bit_length() + 6) // 7 or 1


def scan_varint(buf: bytes, pos: int, end: int, base: int) -> tuple[int, int]:
    """Read a varint from ``buf[pos:end]``; return (value, next pos) or (0, -1) if incomplete.

    For parsers working on a buffer that may end mid-varint (streams): an
    incomplete varint is not an error here, a non-minimal or overlong one is.
    ``base`` is the file offset of ``buf[0]``, used only in error messages.
    """
    value = 0
    shift = 0
    i = pos
    while i < end:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i - pos > 1:
                raise InvalidCAR("non-minimal varint", base + pos)
            return value, i
        if i - pos >= MAX_VARINT_BYTES:
            raise InvalidCAR(f"varint longer than {MAX_VARINT_BYTES} bytes", base + pos)
        shift += 7
    return 0, -1


def decode_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Read a minimal varint at ``data[pos]``; return (value, offset after it)."""
    value, after = scan_varint(data, pos, len(data), 0)
    if after < 0:
        raise InvalidCAR("truncated varint", pos)
    return value, after


# --- buffered input --------------------------------------------------------------


class BufferedInput:
    """Bounded read-ahead over a binary stream, shared by CAR and frame-stream readers.

    ``buf[pos:]`` holds bytes read but not yet consumed; ``base`` is the stream
    offset of ``buf[0]`` (counted from where reading began). Consumers parse
    ``buf`` directly and advance ``pos``; ``fill`` compacts and reads more.
    """

    __slots__ = ("base", "buf", "chunk_size", "eof", "pos", "stream")

    def __init__(self, stream: Readable, chunk_size: int = CHUNK_SIZE) -> None:
        self.stream = stream
        self.chunk_size = chunk_size
        self.buf = b""
        self.pos = 0
        self.base = 0
        self.eof = False

    @property
    def offset(self) -> int:
        """Stream offset of the next unconsumed byte."""
        return self.base + self.pos

    def available(self) -> int:
        return len(self.buf) - self.pos

    def fill(self, need: int) -> bool:
        """Make at least ``need`` unconsumed bytes available; False if the stream ends first."""
        have = len(self.buf) - self.pos
        if have >= need:
            return True
        if self.eof:
            return False
        parts = [self.buf[self.pos :]] if have else []
        self.base += self.pos
        read = self.stream.read
        while have < need:
            chunk = read(max(need - have, self.chunk_size))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        self.pos = 0
        return have >= need


# --- header --------------------------------------------------------------------


def encode_car_header(roots: Iterable[CID]) -> bytes:
    """The length-prefixed CAR v1 header for ``roots`` (may be empty)."""
    header = cbor.encode({"roots": list(roots), "version": 1})
    return encode_varint(len(header)) + header


def _parse_header(data: bytes, offset: int) -> tuple[dict[str, Any], list[CID]]:
    """Decode and check the header map found at file offset ``offset``."""
    try:
        header = cbor.decode(data)
    except AtrepoError as exc:
        raise InvalidCAR(f"CAR header is not valid DAG-CBOR: {exc}", offset) from None
    if type(header) is not dict:
        raise InvalidCAR(f"CAR header is a {type(header).__name__}, not a map", offset)
    if "version" not in header:
        raise InvalidCAR("CAR header has no 'version'", offset)
    version = header["version"]
    if type(version) is not int or version != 1:
        raise InvalidCAR(f"unsupported CAR version {version!r} (only 1)", offset)
    if "roots" not in header:
        raise InvalidCAR("CAR header has no 'roots'", offset)
    roots = header["roots"]
    if type(roots) is not list:
        raise InvalidCAR(f"CAR header 'roots' is a {type(roots).__name__}, not a list", offset)
    for i, root in enumerate(roots):
        if type(root) is not CID:
            raise InvalidCAR(f"CAR header roots[{i}] is a {type(root).__name__}, not a link", offset)
    return header, list(roots)


# --- block sections --------------------------------------------------------------


def _cid_length(buf: bytes, pos: int, end: int, base: int) -> int:
    """Length of the binary CID at ``buf[pos]``, or -1 if it runs past ``end``."""
    if buf.startswith(_PFX_DAG_CBOR, pos) or buf.startswith(_PFX_RAW, pos):
        return 36
    at = pos
    for _ in range(3):  # version, codec, multihash code
        _, at = scan_varint(buf, at, end, base)
        if at < 0:
            return -1
    digest_len, at = scan_varint(buf, at, end, base)
    if at < 0:
        return -1
    return at + digest_len - pos


def _odd_cid(buf: bytes, pos: int, stop: int, base: int, section: int) -> tuple[CID, int]:
    """Parse a non-blessed CID inside the section ending at ``stop``; return it and its end."""
    length = _cid_length(buf, pos, stop, base)
    if length < 0 or pos + length > stop:
        raise InvalidCAR(
            f"CID runs past the end of its block section (section at byte {section})", base + pos
        )
    try:
        cid = CID(buf[pos : pos + length])
    except InvalidCID as exc:
        raise InvalidCAR(f"invalid CID in block section: {exc}", base + pos) from None
    return cid, pos + length


def _check_odd_hash(cid: CID, data: bytes, offset: int) -> None:
    try:
        ok = cid.matches(data)
    except InvalidCID as exc:
        raise InvalidCAR(f"cannot verify block {cid}: {exc}", offset) from None
    if not ok:
        raise InvalidCAR(f"block data does not match its CID {cid}", offset)


def _parse_sections(
    buf: bytes,
    pos: int,
    base: int,
    out: list[tuple[CID, bytes, int]],
    *,
    verify: bool,
    max_section: int,
) -> tuple[int, int]:
    """Parse every complete block section in ``buf[pos:]`` into ``out``.

    Stops at the first incomplete section. Returns (offset in ``buf`` of the
    first unparsed byte, bytes still missing to complete that section; 0 when
    ``buf`` was used up exactly; 1 when even its length varint is incomplete).
    This is the per-block hot loop, so the common case (blessed CID, short
    varint) is written out inline.
    """
    end = len(buf)
    sha = _sha256
    append = out.append
    startswith = buf.startswith
    pfx_cbor = _PFX_DAG_CBOR
    pfx_raw = _PFX_RAW
    while pos < end:
        start = pos
        byte = buf[pos]
        if byte < 0x80:
            size = byte
            pos += 1
        elif pos + 1 < end and 0 < buf[pos + 1] < 0x80:
            size = (byte & 0x7F) | (buf[pos + 1] << 7)
            pos += 2
        else:
            size, pos = scan_varint(buf, pos, end, base)
            if pos < 0:
                return start, 1
        if size > max_section:
            raise LimitExceeded(
                "MAX_CAR_BLOCK_BYTES", size, max_section, f"CAR block section at byte {base + start}"
            )
        if size == 0:
            raise InvalidCAR("empty block section (no CID)", base + start)
        stop = pos + size
        if stop > end:
            return start, stop - end
        if startswith(pfx_cbor, pos) or startswith(pfx_raw, pos):
            data_at = pos + 36
            if data_at > stop:
                raise InvalidCAR(
                    f"CID runs past the end of its block section (section at byte {base + start})",
                    base + pos,
                )
            data = buf[data_at:stop]
            if verify and sha(data).digest() != buf[pos + 4 : data_at]:
                cid = CID(buf[pos:data_at])
                raise InvalidCAR(f"block data does not match its CID {cid}", base + start)
            append((CID._trusted(buf[pos:data_at]), data, base + start))
        else:
            cid, data_at = _odd_cid(buf, pos, stop, base, base + start)
            data = buf[data_at:stop]
            if verify:
                _check_odd_hash(cid, data, base + start)
            append((cid, data, base + start))
        pos = stop
    return pos, 0


def _truncation_error(buf: bytes, pos: int, base: int) -> InvalidCAR:
    """Say which item of the section at ``buf[pos:]`` the end of the file cut off."""
    end = len(buf)
    size, cid_at = scan_varint(buf, pos, end, base)
    if cid_at < 0:
        return InvalidCAR("truncated block length varint", base + pos)
    cid_len = _cid_length(buf, cid_at, end, base)
    if cid_len < 0 or cid_at + cid_len > end:
        return InvalidCAR(f"truncated CID (section at byte {base + pos})", base + cid_at)
    if cid_len > size:
        return InvalidCAR(
            f"CID runs past the end of its block section (section at byte {base + pos})", base + cid_at
        )
    data_at = cid_at + cid_len
    want = size - cid_len
    return InvalidCAR(
        f"truncated block data (section at byte {base + pos}): {end - data_at} of {want} bytes",
        base + data_at,
    )


# --- reading ---------------------------------------------------------------------


class CarReader:
    """Stream the blocks of a CAR v1 file with bounded memory.

    The header is read on construction (``header``, ``roots``). Iterating once
    yields ``(cid, data, offset)`` for each section in file order, where
    ``offset`` is where the section's length varint starts (counted from the
    stream position at construction). With ``verify_hashes`` (the default)
    every block must hash to its CID.
    """

    __slots__ = ("_in", "_max_block", "_started", "_verify", "header", "roots")

    header: dict[str, Any]
    roots: list[CID]

    def __init__(
        self,
        stream: Readable,
        *,
        verify_hashes: bool = True,
        max_block_bytes: int = limits.MAX_CAR_BLOCK_BYTES,
        max_header_bytes: int = limits.MAX_CAR_HEADER_BYTES,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._in = BufferedInput(stream, chunk_size)
        self._verify = verify_hashes
        self._max_block = max_block_bytes
        self._started = False
        self.header, self.roots = self._read_header(max_header_bytes)

    def _read_header(self, max_header_bytes: int) -> tuple[dict[str, Any], list[CID]]:
        inp = self._in
        inp.fill(MAX_VARINT_BYTES + 1)
        if not inp.available():
            raise InvalidCAR("empty CAR file (no header)", 0)
        size, at = scan_varint(inp.buf, inp.pos, len(inp.buf), inp.base)
        if at < 0:
            raise InvalidCAR("truncated header length varint", 0)
        if size > max_header_bytes:
            raise LimitExceeded("MAX_CAR_HEADER_BYTES", size, max_header_bytes, "CAR header at byte 0")
        if size == 0:
            raise InvalidCAR("empty CAR header", 0)
        inp.pos = at
        offset = inp.offset
        if not inp.fill(size):
            raise InvalidCAR(f"truncated CAR header: {inp.available()} of {size} bytes", offset)
        data = inp.buf[inp.pos : inp.pos + size]
        inp.pos += size
        return _parse_header(data, offset)

    def __iter__(self) -> Iterator[tuple[CID, bytes, int]]:
        if self._started:
            raise RuntimeError("a CarReader can be iterated only once")
        self._started = True
        return self._blocks()

    def _blocks(self) -> Iterator[tuple[CID, bytes, int]]:
        inp = self._in
        verify = self._verify
        max_block = self._max_block
        while True:
            if inp.pos >= len(inp.buf) and not inp.fill(1):
                return
            out: list[tuple[CID, bytes, int]] = []
            inp.pos, missing = _parse_sections(
                inp.buf, inp.pos, inp.base, out, verify=verify, max_section=max_block
            )
            yield from out
            if missing and not inp.fill(inp.available() + missing):
                raise _truncation_error(inp.buf, inp.pos, inp.base)


def read_car(
    data: bytes,
    *,
    max_bytes: int = limits.MAX_FRAME_BYTES,
    verify_hashes: bool = True,
    max_block_bytes: int = limits.MAX_CAR_BLOCK_BYTES,
) -> tuple[list[CID], BlockMap]:
    """Parse a small in-memory CAR (a firehose ``blocks`` field, a ``getRecord`` proof).

    Duplicate sections for the same CID are allowed (one copy is kept). Roots
    may be empty; what they must contain is the caller's rule.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_bytes:
        raise LimitExceeded("max_bytes", len(data), max_bytes, "in-memory CAR")
    end = len(data)
    if not end:
        raise InvalidCAR("empty CAR file (no header)", 0)
    size, at = scan_varint(data, 0, end, 0)
    if at < 0:
        raise InvalidCAR("truncated header length varint", 0)
    if size > limits.MAX_CAR_HEADER_BYTES:
        raise LimitExceeded("MAX_CAR_HEADER_BYTES", size, limits.MAX_CAR_HEADER_BYTES, "CAR header at byte 0")
    if size == 0:
        raise InvalidCAR("empty CAR header", 0)
    if at + size > end:
        raise InvalidCAR(f"truncated CAR header: {end - at} of {size} bytes", at)
    _, roots = _parse_header(data[at : at + size], at)
    out: list[tuple[CID, bytes, int]] = []
    pos, missing = _parse_sections(data, at + size, 0, out, verify=verify_hashes, max_section=max_block_bytes)
    if missing:
        raise _truncation_error(data, pos, 0)
    blocks = BlockMap()
    put = blocks.put
    for cid, block, _ in out:
        put(cid, block)
    return roots, blocks


def index_car(
    stream: Readable,
    *,
    verify_hashes: bool = True,
    max_block_bytes: int = limits.MAX_CAR_BLOCK_BYTES,
) -> tuple[list[CID], dict[CID, tuple[int, int]]]:
    """Map each CID to ``(offset of its data, data length)`` without keeping the data.

    For files whose blocks are not in walk order: index once (hashes checked
    here), then fetch blocks with ``read_block_at``. Offsets count from the
    stream position at the start; the first section for a CID wins.
    """
    reader = CarReader(stream, verify_hashes=verify_hashes, max_block_bytes=max_block_bytes)
    index: dict[CID, tuple[int, int]] = {}
    for cid, data, offset in reader:
        if cid not in index:
            cid_len = len(cid.raw)
            size = cid_len + len(data)
            index[cid] = (offset + varint_size(size) + cid_len, len(data))
    return reader.roots, index


def read_block_at(stream: SeekableReadable, offset: int, length: int, cid: CID | None = None) -> bytes:
    """Read ``length`` bytes at ``offset`` (an ``index_car`` entry); check them against ``cid`` if given."""
    stream.seek(offset)
    parts: list[bytes] = []
    have = 0
    while have < length:
        chunk = stream.read(length - have)
        if not chunk:
            raise InvalidCAR(f"truncated block data: {have} of {length} bytes", offset)
        parts.append(chunk)
        have += len(chunk)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if cid is not None:
        _check_odd_hash(cid, data, offset)
    return data


# --- writing ---------------------------------------------------------------------


class CarWriter:
    """Write a CAR v1 to a binary stream: header on construction, then blocks.

    The writer trusts its caller: blocks are written as given, not re-hashed.
    """

    __slots__ = ("_stream", "bytes_written")

    def __init__(self, stream: Writable, roots: Iterable[CID]) -> None:
        self._stream = stream
        header = encode_car_header(roots)
        stream.write(header)
        self.bytes_written = len(header)

    def write_block(self, cid: CID, data: bytes) -> None:
        raw = cid.raw
        section = encode_varint(len(raw) + len(data)) + raw + data
        self._stream.write(section)
        self.bytes_written += len(section)


def write_car(roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> bytes:
    """A whole CAR v1 in memory."""
    parts = [encode_car_header(roots)]
    append = parts.append
    for cid, data in blocks:
        raw = cid.raw
        append(encode_varint(len(raw) + len(data)))
        append(raw)
        append(data)
    return b"".join(parts)
