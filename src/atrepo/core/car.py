"""CAR v1 files: streaming reader, random-access index and writer.

A CAR is ``varint(len(H)) ‖ H ‖ section*`` where ``H`` is the DAG-CBOR map
``{"roots": [link...], "version": 1}`` and each section is
``varint(len(cid) + len(data)) ‖ cid ‖ data`` with the binary CID (no 0x00
prefix). Varints are unsigned LEB128; we require the minimal encoding and at
most 9 bytes so that one file has exactly one byte representation to check.

Reading is push-based: ``CarDecoder`` is fed bytes as they arrive (a file
chunk, an HTTP body chunk) and parses every complete section it holds in one
tight loop, so a 100k-block repository costs a few hundred calls, not 300k,
and an HTTP body is verified as it arrives with no thread. ``CarReader`` and
``read_car`` are short loops over it. Neither ever holds the whole file. Every
block's hash is checked by default; a file we accept is a file whose bytes we
have verified. Errors carry the byte offset of the item that was wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from . import _carnative, cbor, limits
from ._native import car_blocks as _native_car_blocks
from .blocks import BlockMap
from .cid import CID
from .errors import AtrepoError, InvalidCAR, InvalidCBOR, InvalidCID, LimitExceeded
from .varint import encode_varint, scan_varint

__all__ = [
    "Block",
    "CarDecoder",
    "CarIndex",
    "CarReader",
    "CarWriter",
    "PushDecoder",
    "ReceiveBuffer",
    "block_reader",
    "encode_car_header",
    "parse_raw_sections",
    "read_block_at",
    "read_car",
    "write_car",
]

#: Bytes asked of the stream per read: large enough that per-call overhead
#: vanishes, small enough that the buffer stays cache-friendly.
CHUNK_SIZE = 65_536

_PFX_DAG_CBOR = b"\x01\x71\x12\x20"
_PFX_RAW = b"\x01\x55\x12\x20"
_sha256 = hashlib.sha256


class Readable(Protocol):
    """A binary stream we can read from (file, ``BytesIO``, socket file...)."""

    def read(self, size: int, /) -> bytes: ...


class SeekableReadable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


# --- push decoding ---------------------------------------------------------------

#: One decoded block: ``(cid, data, offset of its section's length varint)``.
Block = tuple[CID, bytes, int]

T = TypeVar("T")


class ReceiveBuffer:
    """The bytes a push decoder was fed and has not consumed yet.

    ``buf[pos:]`` holds unconsumed bytes and ``base`` is the stream offset of
    ``buf[0]``. Chunks fed while the item in progress still lacks bytes wait
    in ``parts`` and are joined once when it can complete (``size`` reaches
    ``need``): an item that arrives in a thousand small chunks costs one
    copy, not a thousand, and no decoder re-parses a partial item per chunk.
    """

    __slots__ = ("base", "buf", "need", "parts", "pos", "size")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0
        self.base = 0
        self.parts: list[bytes] = []
        self.size = 0
        self.need = 1

    @property
    def offset(self) -> int:
        """Stream offset of the next unconsumed byte."""
        return self.base + self.pos

    @property
    def wanted(self) -> int:
        """Bytes still to arrive before the item in progress can complete."""
        return max(self.need - self.size, 0)

    def add(self, data: bytes) -> bool:
        """Hold ``data``; True when enough is held for the decoder to make progress."""
        self.parts.append(data)
        self.size += len(data)
        return self.size >= self.need

    def gather(self) -> None:
        """Join the held chunks into ``buf``: one copy, none for a lone chunk on an empty buffer."""
        parts = self.parts
        if not parts:
            return
        buf = self.buf
        pos = self.pos
        self.base += pos
        if pos >= len(buf):
            self.buf = parts[0] if len(parts) == 1 else b"".join(parts)
        else:
            self.buf = b"".join([memoryview(buf)[pos:], *parts])
        self.pos = 0
        parts.clear()

    def consumed(self, pos: int, missing: int) -> None:
        """Record that ``buf[:pos]`` is used up and the next item lacks ``missing`` bytes (0: none begun)."""
        self.pos = pos
        self.size = len(self.buf) - pos
        self.need = self.size + (missing or 1)


class PushDecoder(Generic[T]):
    """Shared shape of the push decoders: feed chunks, get items, close at the end.

    Written after h11's ``receive_data``/``next_event`` split, but batched:
    ``feed`` returns every item its bytes complete, parsed in one pass over the
    buffer, since per-item calls would cost the CAR reader a tenth of its
    speed. Items before a bad one are still delivered: the error is raised by
    the first call that has nothing before it to return (this ``feed`` if the
    bad item comes first, else the next ``feed`` or ``close``), so what a
    caller sees does not depend on how the bytes were split. After an error
    every call raises it again.

    Subclasses implement ``_parse`` (every complete item in ``buf[pos:]``) and
    ``_truncated`` (the error for input that ended at ``buf[pos:]``).
    """

    __slots__ = ("_closed", "_error", "_in")

    def __init__(self) -> None:
        self._in = ReceiveBuffer()
        self._error: AtrepoError | None = None
        self._closed = False

    @property
    def needed(self) -> int:
        """Bytes that must still arrive before another item can complete (a hint for read sizes)."""
        return self._in.wanted

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet consumed by a returned item."""
        return self._in.offset

    def feed(self, data: bytes | bytearray | memoryview) -> list[T]:
        """Take the next bytes of the stream; return the items they complete, in stream order."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.feed() after close()")
        if type(data) is not bytes:
            data = bytes(data)  # items are slices of the buffer and must not change under the caller
        inp = self._in
        if not data or not inp.add(data):
            return []
        inp.gather()
        out: list[T] = []
        try:
            pos, missing = self._parse(inp.buf, inp.pos, inp.base, out)
        except AtrepoError as exc:
            self._error = exc
            if out:
                return out
            raise
        inp.consumed(pos, missing)
        return out

    def close(self) -> None:
        """Declare the end of the stream; raise if it ended inside an item (or an earlier error)."""
        if self._error is not None:
            raise self._error
        if self._closed:
            return
        self._closed = True
        inp = self._in
        inp.gather()
        error = self._truncated(inp.buf, inp.pos, inp.base)
        inp.buf = b""
        inp.pos = 0
        if error is not None:
            self._error = error
            raise error

    def _parse(self, buf: bytes, pos: int, base: int, out: list[T]) -> tuple[int, int]:
        """Append every complete item of ``buf[pos:]`` to ``out``; same return as ``_parse_sections``."""
        raise NotImplementedError

    def _truncated(self, buf: bytes, pos: int, base: int) -> AtrepoError | None:
        """The error for a stream that ended with ``buf[pos:]`` unconsumed, or None if that is fine."""
        raise NotImplementedError


# --- header --------------------------------------------------------------------


def encode_car_header(roots: Iterable[CID]) -> bytes:
    """The length-prefixed CAR v1 header for ``roots`` (may be empty)."""
    header = cbor.encode({"roots": list(roots), "version": 1})
    return encode_varint(len(header)) + header


def _parse_header(data: bytes, offset: int) -> tuple[dict[str, Any], list[CID]]:
    """Decode and check the header map found at file offset ``offset``."""
    try:
        header = cbor.decode(data)
    except InvalidCBOR as exc:
        # The decoder counts from the header's first byte and says so in its
        # message; report one location, in file bytes, instead of both.
        inner = exc.offset
        if inner is None:
            raise InvalidCAR(f"CAR header is not valid DAG-CBOR: {exc}", offset) from None
        reason = str(exc).removesuffix(f" at byte {inner}")
        raise InvalidCAR(f"CAR header is not valid DAG-CBOR: {reason}", offset + inner) from None
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


def parse_raw_sections(
    buf: bytes, pos: int, base: int, out: list[Any], max_section: int = limits.MAX_CAR_BLOCK_BYTES
) -> tuple[int, int]:
    """``_parse_sections`` for readers that want no objects: appends ``(binary CID, data)`` pairs.

    A ``SectionParser`` for ``CarReader(sections=...)`` (bind ``max_section``
    first if it is not the default): every block's hash is checked, with the
    same errors at the same offsets, but no ``CID`` and no offset is made per
    block. Full verification compares CIDs as bytes, so a block it walks past
    costs a slice and a hash. With the C extension on a CPU with SHA
    extensions (``_carnative.raw_sections``) the common sections are parsed
    in C and the rest, one at a time, here.
    """
    native = _carnative.raw_sections
    if native is None:
        return _parse_raw_python(buf, pos, base, out, max_section, -1)
    while True:
        pos, missing = native(buf, pos, base, max_section, out)
        if missing >= 0:
            return pos, missing
        pos, missing = _parse_raw_python(buf, pos, base, out, max_section, 1)
        if missing:  # the C loop hands back only complete sections, or ones the Python loop refuses
            return pos, missing


def _parse_raw_python(
    buf: bytes, pos: int, base: int, out: list[Any], max_section: int, count: int
) -> tuple[int, int]:
    """``parse_raw_sections`` in Python, for at most ``count`` sections (-1: all of them)."""
    end = len(buf)
    sha = _sha256
    append = out.append
    startswith = buf.startswith
    pfx_cbor = _PFX_DAG_CBOR
    pfx_raw = _PFX_RAW
    while pos < end and count:
        count -= 1
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
        data_at = pos + 36
        if data_at <= stop and (startswith(pfx_cbor, pos) or startswith(pfx_raw, pos)):
            data = buf[data_at:stop]
            if not startswith(sha(data).digest(), pos + 4):
                cid = CID(buf[pos:data_at])
                raise InvalidCAR(f"block data does not match its CID {cid}", base + start)
            append((buf[pos:data_at], data))
        else:  # an odd CID, or a blessed one running past its section (``_odd_cid`` says so)
            cid, data_at = _odd_cid(buf, pos, stop, base, base + start)
            data = buf[data_at:stop]
            _check_odd_hash(cid, data, base + start)
            append((cid.raw, data))
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

#: A replacement for the block-section parser (``CarIndex`` indexes sections
#: without making objects): same arguments and return as ``_parse_sections``.
SectionParser = Callable[[bytes, int, int, list[Block]], tuple[int, int]]


class CarDecoder(PushDecoder[Block]):
    """Push decoder of a CAR v1 stream: feed bytes as they arrive, get blocks.

    ``feed(chunk)`` returns the ``(cid, data, offset)`` of every block section
    the chunk completes, in file order; ``offset`` is where the section's
    length varint starts, counted from the first byte fed. ``header`` and
    ``roots`` are None until the header has arrived (always before the first
    block). ``close()`` raises ``InvalidCAR`` if the stream ended inside the
    header or a section. Every check of the pull reader is made here: header
    shape, minimal varints, section and header size limits (checked as soon as
    a length is read, before its bytes are awaited), CID validity and, with
    ``verify_hashes``, every block's hash; errors carry the byte offset.
    Memory: the unconsumed part of one section plus the chunk being fed.

    For an HTTP body (aiohttp)::

        decoder = CarDecoder()
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            for cid, data, offset in decoder.feed(chunk):
                ...
        decoder.close()
    """

    __slots__ = ("_max_block", "_max_header", "_sections", "_verify", "header", "roots")

    header: dict[str, Any] | None
    roots: list[CID] | None

    def __init__(
        self,
        *,
        verify_hashes: bool = True,
        max_block_bytes: int = limits.MAX_CAR_BLOCK_BYTES,
        max_header_bytes: int = limits.MAX_CAR_HEADER_BYTES,
        sections: SectionParser | None = None,
    ) -> None:
        super().__init__()
        self._verify = verify_hashes
        self._max_block = max_block_bytes
        self._max_header = max_header_bytes
        self._sections = sections
        self.header = None
        self.roots = None

    def _parse(self, buf: bytes, pos: int, base: int, out: list[Block]) -> tuple[int, int]:
        if self.roots is None:
            pos, missing = self._parse_header(buf, pos, base)
            if missing:
                return pos, missing
        if self._sections is not None:
            return self._sections(buf, pos, base, out)
        return _parse_sections(buf, pos, base, out, verify=self._verify, max_section=self._max_block)

    def _parse_header(self, buf: bytes, pos: int, base: int) -> tuple[int, int]:
        """Parse the header at ``buf[pos:]`` if it is all there; same return as ``_parse_sections``."""
        end = len(buf)
        size, at = scan_varint(buf, pos, end, base)
        if at < 0:
            return pos, 1
        if size > self._max_header:
            raise LimitExceeded(
                "MAX_CAR_HEADER_BYTES", size, self._max_header, f"CAR header at byte {base + pos}"
            )
        if size == 0:
            raise InvalidCAR("empty CAR header", base + pos)
        stop = at + size
        if stop > end:
            return pos, stop - end
        self.header, self.roots = _parse_header(buf[at:stop], base + at)
        return stop, 0

    def _truncated(self, buf: bytes, pos: int, base: int) -> AtrepoError | None:
        end = len(buf)
        if self.roots is not None:
            return _truncation_error(buf, pos, base) if pos < end else None
        if pos >= end:
            return InvalidCAR("empty CAR file (no header)", base + pos)
        size, at = scan_varint(buf, pos, end, base)
        if at < 0:
            return InvalidCAR("truncated header length varint", base + pos)
        return InvalidCAR(f"truncated CAR header: {end - at} of {size} bytes", base + at)


class CarReader:
    """Stream the blocks of a CAR v1 file with bounded memory.

    A loop over ``CarDecoder``: read a chunk, feed it, hand out the blocks it
    completes. The header is read on construction (``header``, ``roots``).
    Iterating once yields ``(cid, data, offset)`` for each section in file
    order, where ``offset`` is where the section's length varint starts
    (counted from the stream position at construction). With
    ``verify_hashes`` (the default) every block must hash to its CID.
    """

    __slots__ = ("_chunk", "_decoder", "_first", "_started", "_stream", "header", "roots")

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
        sections: SectionParser | None = None,
    ) -> None:
        decoder = CarDecoder(
            verify_hashes=verify_hashes,
            max_block_bytes=max_block_bytes,
            max_header_bytes=max_header_bytes,
            sections=sections,
        )
        self._decoder = decoder
        self._stream = stream
        self._chunk = chunk_size
        self._started = False
        first: list[Block] = []
        read = stream.read
        while decoder.header is None:
            data = read(max(decoder.needed, chunk_size))
            if not data:
                decoder.close()  # raises: the stream ended before the header did
            first = decoder.feed(data)  # blocks in the same chunk as the header's end
        assert decoder.roots is not None
        self._first = first
        self.header = decoder.header
        self.roots = decoder.roots

    def __iter__(self) -> Iterator[Block]:
        """The blocks: each chunk's batch from the decoder, chained (no Python frame per block)."""
        if self._started:
            raise RuntimeError("a CarReader can be iterated only once")
        self._started = True
        first, self._first = self._first, []
        return chain(first, chain.from_iterable(map(self._decoder.feed, self._chunks())))

    def _chunks(self) -> Iterator[bytes]:
        """The rest of the stream in chunks (at least what the section in progress needs); then close."""
        decoder = self._decoder
        read = self._stream.read
        chunk = self._chunk
        while True:
            data = read(max(decoder.needed, chunk))
            if not data:
                decoder.close()
                return
            yield data


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
    if verify_hashes:
        fast = _read_small_car(data, max_block_bytes)
        if fast is not None:
            return fast
    decoder = CarDecoder(verify_hashes=verify_hashes, max_block_bytes=max_block_bytes)
    sections = decoder.feed(data)
    decoder.close()
    assert decoder.roots is not None
    blocks = BlockMap()
    put = blocks.put
    for cid, block, _ in sections:
        put(cid, block)
    return decoder.roots, blocks


#: The whole length-prefixed header of a CAR with one blessed root, around its 36-byte CID:
#: ``{"roots": [root], "version": 1}`` in canonical DAG-CBOR (a firehose slice's header).
_ONE_ROOT_HEAD = b"\x3a\xa2\x65roots\x81\xd8\x2a\x58\x25\x00"
_ONE_ROOT_TAIL = b"\x67version\x01"
_ONE_ROOT_CID_AT = len(_ONE_ROOT_HEAD)
_ONE_ROOT_END = _ONE_ROOT_CID_AT + 36 + len(_ONE_ROOT_TAIL)


def _read_small_car(data: bytes, max_section: int) -> tuple[list[CID], BlockMap] | None:
    """``read_car`` for the common case, or None to let the general reader decide.

    A firehose slice is small, in memory, and shaped one way: the canonical
    one-root header and blessed sha2-256 CIDs with short length varints. This
    recognises the header by its bytes (no CBOR decode) and parses the
    sections into the block map in one loop, checking every block's hash (in C
    when the extension hashes on the CPU's SHA extensions: ``_native.car_blocks``).
    Anything else, including any error, returns None: the general reader then
    reads the same bytes and accepts them or raises its located error, so the
    outcome is the general reader's in every case.
    """
    if not data.startswith(_ONE_ROOT_HEAD):
        return None
    at = _ONE_ROOT_CID_AT
    root = data[at : at + 36]
    if (root[:4] != _PFX_DAG_CBOR and root[:4] != _PFX_RAW) or not data.startswith(_ONE_ROOT_TAIL, at + 36):
        return None
    if _native_car_blocks is not None:
        held_native = _native_car_blocks(data, _ONE_ROOT_END, max_section)
        if held_native is None:
            return None
        blocks = BlockMap()
        blocks._blocks = held_native
        return [CID._trusted(root)], blocks
    pos = _ONE_ROOT_END
    end = len(data)
    sha = _sha256
    startswith = data.startswith
    trusted = CID._trusted
    held: dict[CID, bytes] = {}
    while pos < end:
        byte = data[pos]
        if byte < 0x80:
            size = byte
            pos += 1
        elif pos + 1 < end and 0 < data[pos + 1] < 0x80:
            size = (byte & 0x7F) | (data[pos + 1] << 7)
            pos += 2
        else:
            return None
        stop = pos + size
        data_at = pos + 36
        if (
            size > max_section
            or data_at > stop
            or stop > end
            or not (startswith(_PFX_DAG_CBOR, pos) or startswith(_PFX_RAW, pos))
        ):
            return None
        block = data[data_at:stop]
        if not startswith(sha(block).digest(), pos + 4):
            return None
        held[trusted(data[pos:data_at])] = block
        pos = stop
    blocks = BlockMap()
    blocks._blocks = held
    return [trusted(root)], blocks


#: Width of one table entry in ``CarIndex``: a CIDv1 with one-byte codec and
#: multihash varints and a 32-byte digest (every sha2-256 CID a repository uses).
_ENTRY = 36
#: Bits of a block's length in a ``CarIndex`` location (the offset sits above them).
_LENGTH_BITS = 22
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
#: Slot-table size per entry, at least (the load factor stays at or below 1/2).
_LOAD_SHIFT = 1
#: Typical bytes a block in a repository CAR (records ~350, nodes ~300), to size the table up front.
_TYPICAL_BLOCK_BYTES = 256
#: Guessing the next block in file order pays while it mostly hits: each hit
#: earns a credit (up to the cap), each miss costs ``_GUESS_MISS_COST``, and at
#: zero the finder tries only its first guess until hits earn credit back (a
#: shuffled file then pays one failed compare a lookup).
_GUESS_CREDIT_CAP = 1024
_GUESS_MISS_COST = 4


class CarIndex:
    """Where each block of a CAR file is, in 60 to 80 bytes a block and no object per block.

    A full-repository CAR in any order but the streamable one must be indexed
    before its tree can be walked. A ``dict`` of ``CID`` objects costs ~600
    bytes a block (1.35 GB for a hostile file of 5M tiny blocks), so this keeps
    flat arrays: block ``i`` (in file order, duplicates skipped) has its binary
    CID at ``cids[36*i : 36*i+36]``, and ``where[i]`` packs the offset of its
    data (from where the CAR starts in the stream) above its 22-bit length
    (sections are at most ``MAX_CAR_BLOCK_BYTES``, 2 MiB). Lookup is linear
    probing in ``slots`` (``array('I')`` of ordinal + 1, 0 for empty), keyed by
    Python's ``hash`` of the CID bytes: SipHash with a per-process random key,
    so a hostile file cannot pile its blocks into one probe run. A CID is
    compared in place (``bytearray.startswith`` at an offset), with no copy.

    Every block we accept hashes with sha2-256 (the only function we can
    check), so nearly every CID is 36 bytes; a longer one (a codec whose varint
    takes two bytes) is exotic in a repository and goes to a small side dict.
    The first section for a CID wins. At most ``max_blocks`` distinct blocks
    (``MAX_CAR_INDEX_BLOCKS``) are indexed.

    Blocks whose data starts with ``keep_prefix`` can be kept in memory (one
    ``bytearray``, ``kept_at[i]`` = position + 1), up to ``keep_bytes`` in all:
    verification keeps MST nodes so the walk neither reads nor hashes them again.

    When the C extension is there (``_carnative.Table``) the same layout lives
    in C: it scans the sections it proves well formed, hashing each, and hands
    every other one back to ``_native_section`` here, which indexes an odd CID
    or raises the error the pure-Python scan raises. ``marker`` and
    ``referenced_count`` keep one bit a block for what a walk used.
    """

    __slots__ = (
        "_cids",
        "_count",
        "_kept",
        "_kept_at",
        "_mask",
        "_native",
        "_odd",
        "_slots",
        "_used",
        "_where",
        "roots",
    )

    def __init__(self, roots: list[CID], expected_blocks: int = 0, *, native: bool | None = None) -> None:
        """An empty index; ``native`` None uses the C table when it is there, False never, True always."""
        self.roots = roots
        table = _carnative.Table if native is not False else None
        if native and table is None:
            raise ValueError("the C index (atrepo.core._carindex) is not available")
        self._native: Any = table(expected_blocks, _carnative.table_seed()) if table is not None else None
        if self._native is not None:
            expected_blocks = 0  # the Python arrays stay empty
        self._used = bytearray()
        self._cids = bytearray()
        self._where = array("Q")
        self._kept_at = array("I")
        self._kept = bytearray()
        self._odd: dict[bytes, int] = {}
        self._count = 0
        capacity = 1024
        while capacity < expected_blocks << _LOAD_SHIFT:
            capacity <<= 1
        self._slots = array("I", bytes(4 * capacity))
        self._mask = capacity - 1

    @classmethod
    def build(
        cls,
        stream: Readable,
        *,
        verify_hashes: bool = True,
        max_blocks: int = limits.MAX_CAR_INDEX_BLOCKS,
        max_block_bytes: int = limits.MAX_CAR_BLOCK_BYTES,
        keep_prefix: bytes | None = None,
        keep_bytes: int = 0,
        native: bool | None = None,
    ) -> CarIndex:
        """Read the whole CAR once from the stream's position, checking every block's hash.

        Raises ``InvalidCAR`` (with the byte offset) for a malformed or
        truncated file or a block that does not match its CID, and
        ``LimitExceeded`` naming ``MAX_CAR_INDEX_BLOCKS`` or
        ``MAX_CAR_BLOCK_BYTES``. ``native``: as for the constructor (the C
        table always checks hashes and holds at most ``_carnative.MAX_BLOCKS``
        blocks, so without ``verify_hashes`` or above that it is not used).
        """
        if not 0 < max_blocks < 1 << 31:
            raise ValueError(f"max_blocks must be in 1..2**31-1, not {max_blocks}")
        if max_block_bytes > _LENGTH_MASK:
            raise ValueError(f"max_block_bytes above {_LENGTH_MASK} cannot be indexed")
        expected = min(_remaining_bytes(stream) // _TYPICAL_BLOCK_BYTES, max_blocks)
        fits = verify_hashes and max_blocks <= _carnative.MAX_BLOCKS
        if native and not fits:
            raise ValueError("the C index checks every hash and holds at most _carnative.MAX_BLOCKS blocks")
        index = cls([], expected, native=native if fits else False)
        keep = (keep_prefix, min(keep_bytes, (1 << 32) - 2)) if keep_prefix and keep_bytes > 0 else None

        def scan(buf: bytes, pos: int, base: int, _out: list[Block]) -> tuple[int, int]:
            return index._scan(buf, pos, base, verify_hashes, max_block_bytes, max_blocks, keep)

        if index._native is not None:

            def scan(buf: bytes, pos: int, base: int, _out: list[Block]) -> tuple[int, int]:
                return index._scan_native(buf, pos, base, max_block_bytes, max_blocks, keep)

        reader = CarReader(
            stream, verify_hashes=verify_hashes, max_block_bytes=max_block_bytes, sections=scan
        )
        index.roots = reader.roots
        for _ in reader:  # every section goes to the index; the reader yields none
            pass
        return index

    def _scan(
        self,
        buf: bytes,
        pos: int,
        base: int,
        verify: bool,
        max_section: int,
        max_blocks: int,
        keep: tuple[bytes, int] | None,
    ) -> tuple[int, int]:
        """Index every complete section in ``buf[pos:]``; same contract as ``_parse_sections``.

        The per-block hot loop of the indexed path: data is hashed through a
        view of the buffer (no copy) and its CID goes straight into the flat
        arrays, so a block costs no Python object beyond its CID bytes.
        """
        end = len(buf)
        view = memoryview(buf)
        sha = _sha256
        startswith = buf.startswith
        pfx_cbor = _PFX_DAG_CBOR
        cids = self._cids
        held_cid = cids.startswith
        add_where = self._where.append
        add_kept_at = self._kept_at.append
        kept = self._kept
        slots = self._slots
        mask = self._mask
        count = self._count
        grow_at = (mask + 1) >> _LOAD_SHIFT
        keep_prefix, keep_budget = keep if keep is not None else (b"", -1)
        try:
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
                data_at = pos + _ENTRY
                if not startswith(pfx_cbor, pos) and not _table_form(buf, pos, stop):
                    self._count = count
                    self._add_odd(buf, pos, stop, base, start, verify, max_blocks)
                    count = self._count
                    pos = stop
                    continue
                if data_at > stop:
                    raise InvalidCAR(
                        f"CID runs past the end of its block section (section at byte {base + start})",
                        base + pos,
                    )
                if verify and not startswith(sha(view[data_at:stop]).digest(), pos + 4):
                    cid = CID(buf[pos:data_at])
                    raise InvalidCAR(f"block data does not match its CID {cid}", base + start)
                raw = buf[pos:data_at]
                i = hash(raw) & mask
                while True:
                    held = slots[i]
                    if not held:
                        break
                    if held_cid(raw, (held - 1) * _ENTRY):
                        break  # a duplicate section: the first one stays
                    i = (i + 1) & mask
                if not held:
                    if count >= max_blocks:
                        raise LimitExceeded(
                            "MAX_CAR_INDEX_BLOCKS", count + 1, max_blocks, f"CAR index at byte {base + start}"
                        )
                    if startswith(keep_prefix, data_at, stop) and len(kept) + stop - data_at <= keep_budget:
                        add_kept_at(len(kept) + 1)
                        kept += view[data_at:stop]
                    else:
                        add_kept_at(0)
                    count += 1
                    slots[i] = count
                    cids += raw
                    add_where((base + data_at) << _LENGTH_BITS | (stop - data_at))
                    if count >= grow_at:
                        self._count = count
                        self._grow()
                        slots = self._slots
                        mask = self._mask
                        grow_at = (mask + 1) >> _LOAD_SHIFT
                pos = stop
            return pos, 0
        finally:
            self._count = count
            view.release()

    def _add_odd(
        self, buf: bytes, pos: int, stop: int, base: int, start: int, verify: bool, max_blocks: int
    ) -> None:
        """Index a section whose CID is not a 36-byte sha2-256 one, in the side dict."""
        cid, data_at = _odd_cid(buf, pos, stop, base, base + start)
        if verify:
            _check_odd_hash(cid, buf[data_at:stop], base + start)
        if cid.raw in self._odd:
            return
        count = self._count
        if count >= max_blocks:
            raise LimitExceeded(
                "MAX_CAR_INDEX_BLOCKS", count + 1, max_blocks, f"CAR index at byte {base + start}"
            )
        self._odd[cid.raw] = count
        self._cids += bytes(_ENTRY)  # a placeholder no probe reaches (odd ordinals are not in slots)
        self._where.append((base + data_at) << _LENGTH_BITS | (stop - data_at))
        self._kept_at.append(0)
        self._count = count + 1

    def _grow(self) -> None:
        """Double the slot table and re-insert every table entry."""
        capacity = (self._mask + 1) << 1
        mask = capacity - 1
        slots = array("I", bytes(4 * capacity))
        cids = self._cids
        odd = set(self._odd.values())
        for ordinal in range(self._count):
            if ordinal in odd:
                continue
            at = ordinal * _ENTRY
            i = hash(bytes(cids[at : at + _ENTRY])) & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = ordinal + 1
        self._slots = slots
        self._mask = mask

    def _scan_native(
        self,
        buf: bytes,
        pos: int,
        base: int,
        max_section: int,
        max_blocks: int,
        keep: tuple[bytes, int] | None,
    ) -> tuple[int, int]:
        """``_scan`` on the C table: it indexes what it proves well formed, this does the rest."""
        scan = self._native.scan
        prefix, budget = keep if keep is not None else (b"", -1)
        while True:
            pos, missing = scan(buf, pos, base, max_section, max_blocks, prefix, budget)
            if missing >= 0:
                return pos, missing
            pos = self._native_section(buf, pos, base, max_section, max_blocks)

    def _native_section(self, buf: bytes, pos: int, base: int, max_section: int, max_blocks: int) -> int:
        """The complete section at ``buf[pos:]`` that the C scan handed back; return its end.

        The checks of ``_scan``, in its order, so the error is the one the
        pure-Python index raises: a bad length varint, a section over
        ``max_section`` or empty, a CID running past its section, data that
        does not hash to its CID, the block limit. What passes them all is a
        section with an odd CID, indexed in the side dict.
        """
        table = self._native
        start = pos
        size, pos = scan_varint(buf, pos, len(buf), base)
        if pos < 0:  # the C scan returns incomplete varints itself
            raise RuntimeError(f"the C index handed back an incomplete section at byte {base + start}")
        if size > max_section:
            raise LimitExceeded(
                "MAX_CAR_BLOCK_BYTES", size, max_section, f"CAR block section at byte {base + start}"
            )
        if size == 0:
            raise InvalidCAR("empty block section (no CID)", base + start)
        stop = pos + size
        if buf.startswith(_PFX_DAG_CBOR, pos) or _table_form(buf, pos, stop):
            data_at = pos + _ENTRY
            if data_at > stop:
                raise InvalidCAR(
                    f"CID runs past the end of its block section (section at byte {base + start})",
                    base + pos,
                )
            if not buf.startswith(_sha256(buf[data_at:stop]).digest(), pos + 4):
                cid = CID(buf[pos:data_at])
                raise InvalidCAR(f"block data does not match its CID {cid}", base + start)
            if table.find(buf[pos:data_at]) < 0 and len(table) >= max_blocks:
                raise LimitExceeded(
                    "MAX_CAR_INDEX_BLOCKS", len(table) + 1, max_blocks, f"CAR index at byte {base + start}"
                )
            raise RuntimeError(f"the C index handed back a valid section at byte {base + start}")
        cid, data_at = _odd_cid(buf, pos, stop, base, base + start)
        _check_odd_hash(cid, buf[data_at:stop], base + start)
        if table.find(cid.raw) >= 0:
            return stop
        if len(table) >= max_blocks:
            raise LimitExceeded(
                "MAX_CAR_INDEX_BLOCKS", len(table) + 1, max_blocks, f"CAR index at byte {base + start}"
            )
        table.add_odd(cid.raw, base + data_at, stop - data_at)
        return stop

    def __len__(self) -> int:
        """Distinct blocks indexed."""
        return self._count if self._native is None else len(self._native)

    @property
    def native(self) -> bool:
        """Whether the C table holds this index."""
        return self._native is not None

    @property
    def kept_bytes(self) -> int:
        """Bytes of block data kept in memory."""
        return len(self._kept) if self._native is None else int(self._native.kept_bytes)

    def find(self, cid: CID) -> int:
        """The ordinal of ``cid``'s block, or -1 when the CAR does not hold it."""
        return self.finder()(cid)

    def finder(self) -> Callable[[CID], int]:
        """``find`` as a closure over the finished table, for lookups in a loop.

        Index nothing more while it is in use.
        """
        find = self._native.find if self._native is not None else self._raw_finder()
        return lambda cid: int(find(cid.raw))

    def marker(self) -> Callable[[bytes], int]:
        """``mark(binary CID)``: the block's ordinal, noted as used by the walk; -1 when absent.

        ``referenced_count`` counts the blocks marked. On the C table this is
        one C call; the pure-Python one keeps the bits in a ``bytearray``.
        Index nothing more while it is in use.
        """
        if self._native is not None:
            return self._native.mark  # type: ignore[no-any-return]
        find = self._raw_finder()
        if len(self._used) * 8 < self._count:
            self._used.extend(bytes(((self._count + 7) >> 3) - len(self._used)))
        used = self._used

        def mark(raw: bytes) -> int:
            ordinal = find(raw)
            if ordinal >= 0:
                used[ordinal >> 3] |= 1 << (ordinal & 7)
            return ordinal

        return mark

    def all_marker(self) -> Callable[[Sequence[CID]], int]:
        """``mark_all(cids)``: mark every block of the sequence; -1, or the position of the first absent.

        The records of one MST leaf in one call: the C table fetches their
        slots together, so the cache misses of a file in any order overlap.
        Blocks before the first absent one are marked; those after it may be.
        """
        if self._native is not None:
            return self._native.mark_all  # type: ignore[no-any-return]
        mark = self.marker()

        def mark_all(cids: Sequence[CID]) -> int:
            for i, cid in enumerate(cids):
                if mark(cid.raw) < 0:
                    return i
            return -1

        return mark_all

    def referenced_count(self) -> int:
        """Distinct blocks marked by ``marker`` functions."""
        if self._native is not None:
            return int(self._native.referenced_count())
        return int.from_bytes(self._used, "little").bit_count()

    def _raw_finder(self) -> Callable[[bytes], int]:
        """The pure-Python lookup by binary CID, guessing from the runs it has seen.

        Before hashing, it tries the blocks right after the last three it
        found: a tree walked in key order over a file written by walking the
        tree (level by level, or records after nodes) mostly asks for the next
        block of one of a few runs, and a hit costs one in-place compare and
        no cache miss in the slot table. While guesses do not pay (a shuffled
        file) only the first is tried, which also tells when they pay again.
        """
        slots = self._slots
        mask = self._mask
        held_cid = self._cids.startswith
        odd = self._odd.get
        # the last three ordinals found, most recent first (-1: none yet; never
        # lower, since startswith counts negative offsets from the end)
        last = [-1, -1, -1]
        credit = [_GUESS_CREDIT_CAP]

        def find(raw: bytes) -> int:
            if len(raw) != _ENTRY:
                return odd(raw, -1)
            a, b, c = last
            if held_cid(raw, (a + 1) * _ENTRY):
                last[0] = a + 1
                if credit[0] < _GUESS_CREDIT_CAP:
                    credit[0] += 1
                return a + 1
            if credit[0] > 0:
                if held_cid(raw, (b + 1) * _ENTRY):
                    last[0] = b + 1
                    last[1] = a
                    credit[0] += 1
                    return b + 1
                if held_cid(raw, (c + 1) * _ENTRY):
                    last[:] = (c + 1, a, b)
                    credit[0] += 1
                    return c + 1
                credit[0] -= _GUESS_MISS_COST
            i = hash(raw) & mask
            while True:
                held = slots[i]
                if not held:  # not in the table; a 36-byte CID that is not sha2-256 would be odd
                    return odd(raw, -1)
                if held_cid(raw, (held - 1) * _ENTRY):
                    last[:] = (held - 1, last[0], last[1])
                    return held - 1
                i = (i + 1) & mask

        return find

    def location(self, ordinal: int) -> tuple[int, int]:
        """(offset of the block's data from the start of the CAR, its length)."""
        if self._native is not None:
            return self._native.location(ordinal)  # type: ignore[no-any-return]
        where = self._where[ordinal]
        return where >> _LENGTH_BITS, where & _LENGTH_MASK

    def loader(self, stream: Readable, base: int = 0) -> Callable[[int, CID], bytes]:
        """``load(ordinal, cid)``: the block's data, from memory if kept, else read and hash-checked again.

        A block read back from the stream is checked against its CID once more:
        the file is read twice and could have changed in between. ``base`` is
        where the CAR starts in the stream.
        """
        read = block_reader(stream, base)
        sha = _sha256
        if self._native is not None:
            kept = self._native.kept
            location = self._native.location

            def where(ordinal: int) -> tuple[bytes | None, int, int]:
                data = kept(ordinal)
                if data is not None:
                    return data, 0, 0
                offset, length = location(ordinal)
                return None, offset, length

        else:
            locations = self._where
            kept_at = self._kept_at
            held = bytes(self._kept) if len(self._kept) < 4096 else memoryview(self._kept).toreadonly()

            def where(ordinal: int) -> tuple[bytes | None, int, int]:
                packed = locations[ordinal]
                at = kept_at[ordinal]
                if at:
                    return bytes(held[at - 1 : at - 1 + (packed & _LENGTH_MASK)]), 0, 0
                return None, packed >> _LENGTH_BITS, packed & _LENGTH_MASK

        def load(ordinal: int, cid: CID) -> bytes:
            data, offset, length = where(ordinal)
            if data is not None:
                return data
            data = read(offset, length)
            raw = cid.raw
            if len(raw) == _ENTRY and raw[2] == 0x12:  # sha2-256: the digest is the last 32 bytes
                same = raw.endswith(sha(data).digest())
            else:
                same = cid.matches(data)
            if not same:
                raise InvalidCAR(f"block {cid} changed after it was indexed", base + offset)
            return data

        return load

    def memory_bytes(self) -> int:
        """Bytes held by the index's arrays and kept blocks, for tests and reports."""
        if self._native is not None:
            return int(self._native.memory_bytes())
        return (
            len(self._cids)
            + len(self._kept)
            + len(self._used)
            + sum(a.itemsize * len(a) for a in (self._where, self._kept_at, self._slots))
        )


def _table_form(buf: bytes, pos: int, stop: int) -> bool:
    """Whether ``buf[pos:stop]`` starts with a CIDv1 of one-byte codec and 32-byte sha2-256 digest."""
    return stop - pos >= 4 and buf[pos] == 1 and buf[pos + 1] < 0x80 and buf.startswith(b"\x12\x20", pos + 2)


def _remaining_bytes(stream: Readable) -> int:
    """Bytes from the stream's position to its end when it can seek, else 0 (a sizing hint only).

    Seeking to the end and back is cheap on files and ``BytesIO`` alike; asking
    a ``BytesIO`` for its buffer instead would copy the whole file.
    """
    tell = getattr(stream, "tell", None)
    seek = getattr(stream, "seek", None)
    if tell is None or seek is None:
        return 0
    try:
        here = int(tell())
        end = int(seek(0, os.SEEK_END))
        seek(here)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return 0
    return max(0, end - here)


def block_reader(stream: Readable, base: int = 0) -> Callable[[int, int], bytes]:
    """``read(offset, length)`` for blocks located by an index: ``pread`` on a file, else seek and read.

    ``base`` is where the CAR starts in the stream (index offsets count from
    there). ``pread`` does not move the stream and costs one system call; it is
    used only on plain files, since wrappers such as ``GzipFile`` hand out the
    descriptor of the compressed file underneath.
    """
    raw = getattr(stream, "raw", stream)
    if type(stream) in (io.BufferedReader, io.BufferedRandom, io.FileIO) and type(raw) is io.FileIO:
        pread = getattr(os, "pread", None)
        if pread is not None:
            fd = raw.fileno()

            def read_file(offset: int, length: int) -> bytes:
                data: bytes = pread(fd, length, base + offset)
                if len(data) != length:  # the file shrank: say so with its offset
                    data = read_block_at(stream, base + offset, length)  # type: ignore[arg-type]
                return data

            return read_file

    def read_stream(offset: int, length: int) -> bytes:
        return read_block_at(stream, base + offset, length)  # type: ignore[arg-type]

    return read_stream


def read_block_at(stream: SeekableReadable, offset: int, length: int, cid: CID | None = None) -> bytes:
    """Read ``length`` bytes at ``offset`` (a ``CarIndex`` location); check them against ``cid`` if given."""
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
