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
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from . import cbor, limits
from .blocks import BlockMap
from .cid import CID
from .errors import AtrepoError, InvalidCAR, InvalidCID, LimitExceeded
from .varint import MAX_VARINT_BYTES, encode_varint, scan_varint, varint_size

__all__ = [
    "BufferedInput",
    "CarIndex",
    "CarReader",
    "CarWriter",
    "encode_car_header",
    "index_car",
    "block_reader",
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


#: Stored for a fast-path entry whose codec does not fit one byte (never a real codec byte).
_KIND_ODD = 0xFF
#: Slots of the open-addressing table per entry, at most (load factor at least 1/2).
_MAX_LOAD_SHIFT = 1
#: Typical bytes per block of a repository CAR (records ~350, nodes ~300), for sizing the table.
_TYPICAL_BLOCK_BYTES = 256


class CarIndex:
    """Where each block of a CAR file is, in about 55 bytes a block and no object per block.

    A full-repository CAR in an order other than the streamable one has to be
    indexed before its tree can be walked. A ``dict`` of ``CID`` objects costs
    ~600 bytes a block (1.35 GB for a hostile file of 5M tiny blocks), so this
    keeps flat arrays instead: every block gets an ordinal ``i``, its 32-byte
    SHA-256 digest is ``digests[32*i : 32*i+32]``, its codec byte ``kinds[i]``,
    and where its data lies ``offsets[i]``/``lengths[i]`` (counted from where
    the CAR starts in the stream). Lookup is by linear probing in ``slots``
    (``array('I')`` of ordinal + 1, 0 for empty) at a load factor of at most
    1/2, keyed by Python's ``hash`` of the digest, which is SipHash with a
    per-process random key, so a hostile file cannot pile its blocks into
    one probe run. Every accepted block is sha2-256 (the only hash we can
    check), so a CID is its digest plus its codec: one-byte codecs (dag-cbor,
    raw, and anything else below 0x80) take the table; a CID with a longer
    codec varint is exotic in a repository and goes to a small side dict.

    The first section for a CID wins; later duplicates are not counted. At most
    ``max_blocks`` distinct blocks (``MAX_CAR_INDEX_BLOCKS``) are indexed.
    """

    __slots__ = ("_count", "_digests", "_kinds", "_lengths", "_mask", "_odd", "_offsets", "_slots", "roots")

    def __init__(self, roots: list[CID], expected_blocks: int = 0) -> None:
        self.roots = roots
        self._digests = bytearray()
        self._kinds = bytearray()
        self._offsets = array("Q")
        self._lengths = array("I")
        self._odd: dict[bytes, int] = {}
        self._count = 0
        capacity = 1024
        while capacity < expected_blocks << _MAX_LOAD_SHIFT:
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
    ) -> CarIndex:
        """Read the whole CAR once from the stream's position, checking every block's hash.

        Raises ``InvalidCAR`` (with the byte offset) for a malformed or
        truncated file or a block that does not match its CID, and
        ``LimitExceeded`` naming ``MAX_CAR_INDEX_BLOCKS`` or
        ``MAX_CAR_BLOCK_BYTES``.
        """
        if not 0 < max_blocks < 1 << 31:
            raise ValueError(f"max_blocks must be in 1..2**31-1, not {max_blocks}")
        reader = CarReader(stream, verify_hashes=verify_hashes, max_block_bytes=max_block_bytes)
        reader._started = True  # the sections are consumed here, not by iterating the reader
        expected = min(_remaining_bytes(stream) // _TYPICAL_BLOCK_BYTES, max_blocks)
        index = cls(reader.roots, expected)
        inp = reader._in
        while True:
            if inp.pos >= len(inp.buf) and not inp.fill(1):
                return index
            inp.pos, missing = index._scan(
                inp.buf, inp.pos, inp.base, verify_hashes, max_block_bytes, max_blocks
            )
            if missing and not inp.fill(inp.available() + missing):
                raise _truncation_error(inp.buf, inp.pos, inp.base)

    def _scan(
        self, buf: bytes, pos: int, base: int, verify: bool, max_section: int, max_blocks: int
    ) -> tuple[int, int]:
        """Index every complete section in ``buf[pos:]``; same contract as ``_parse_sections``.

        The per-block hot loop of the indexed path: the digest is hashed from a
        view of the buffer (no copy of the data) and goes straight into the
        flat arrays, so a block costs no Python object beyond its digest.
        """
        end = len(buf)
        view = memoryview(buf)
        sha = _sha256
        startswith = buf.startswith
        pfx_cbor = _PFX_DAG_CBOR
        digests = self._digests
        kinds = self._kinds
        has_digest = digests.startswith
        add_offset = self._offsets.append
        add_length = self._lengths.append
        slots = self._slots
        mask = self._mask
        count = self._count
        grow_at = (mask + 1) >> _MAX_LOAD_SHIFT
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
                data_at = pos + 36
                if startswith(pfx_cbor, pos):
                    kind = 0x71
                elif buf[pos] == 1 and buf[pos + 1] < 0x80 and buf[pos + 2] == 0x12 and buf[pos + 3] == 0x20:
                    kind = buf[pos + 1]
                else:
                    cid, data_at = _odd_cid(buf, pos, stop, base, base + start)
                    if verify:
                        _check_odd_hash(cid, buf[data_at:stop], base + start)
                    if cid.raw not in self._odd:
                        if count >= max_blocks:
                            raise LimitExceeded(
                                "MAX_CAR_INDEX_BLOCKS",
                                count + 1,
                                max_blocks,
                                f"CAR index at byte {base + start}",
                            )
                        self._odd[cid.raw] = count
                        digests += bytes(32)
                        kinds.append(_KIND_ODD)
                        add_offset(base + data_at)
                        add_length(stop - data_at)
                        count += 1
                    pos = stop
                    continue
                if data_at > stop:
                    raise InvalidCAR(
                        f"CID runs past the end of its block section (section at byte {base + start})",
                        base + pos,
                    )
                digest = buf[pos + 4 : data_at]
                if verify and sha(view[data_at:stop]).digest() != digest:
                    cid = CID(buf[pos:data_at])
                    raise InvalidCAR(f"block data does not match its CID {cid}", base + start)
                i = hash(digest) & mask
                while True:
                    held = slots[i]
                    if not held:
                        break
                    if has_digest(digest, (held - 1) << 5) and kinds[held - 1] == kind:
                        break  # a duplicate section: the first one stays
                    i = (i + 1) & mask
                if not held:
                    if count >= max_blocks:
                        raise LimitExceeded(
                            "MAX_CAR_INDEX_BLOCKS", count + 1, max_blocks, f"CAR index at byte {base + start}"
                        )
                    count += 1
                    slots[i] = count
                    digests += digest
                    kinds.append(kind)
                    add_offset(base + data_at)
                    add_length(stop - data_at)
                    if count >= grow_at:
                        self._count = count
                        self._grow()
                        slots = self._slots
                        mask = self._mask
                        grow_at = (mask + 1) >> _MAX_LOAD_SHIFT
                pos = stop
            return pos, 0
        finally:
            self._count = count
            view.release()

    def _grow(self) -> None:
        """Double the slot table and re-insert every table entry."""
        capacity = (self._mask + 1) << 1
        mask = capacity - 1
        slots = array("I", bytes(4 * capacity))
        digests = self._digests
        kinds = self._kinds
        for ordinal in range(self._count):
            if kinds[ordinal] == _KIND_ODD:
                continue
            i = hash(bytes(digests[ordinal << 5 : (ordinal + 1) << 5])) & mask
            while slots[i]:
                i = (i + 1) & mask
            slots[i] = ordinal + 1
        self._slots = slots
        self._mask = mask

    def __len__(self) -> int:
        """Distinct blocks indexed."""
        return self._count

    def find(self, cid: CID) -> int:
        """The ordinal of ``cid``'s block, or -1 when the CAR does not hold it."""
        return self.finder()(cid)

    def finder(self) -> Callable[[CID], int]:
        """``find`` as a closure over the finished table, for lookups in a loop.

        Verification looks up every record and node once, so the per-call
        attribute loads of a method are worth saving. Do not index further
        blocks while using it (a growing table moves).
        """
        slots = self._slots
        mask = self._mask
        kinds = self._kinds
        has_digest = self._digests.startswith
        odd = self._odd.get
        pfx_cbor = _PFX_DAG_CBOR

        def find(cid: CID) -> int:
            raw = cid.raw
            if raw.startswith(pfx_cbor):
                kind = 0x71
            elif len(raw) == 36 and raw[0] == 1 and raw[1] < 0x80 and raw[2] == 0x12 and raw[3] == 0x20:
                kind = raw[1]
            else:
                return odd(raw, -1)
            digest = raw[4:]
            i = hash(digest) & mask
            while True:
                held = slots[i]
                if not held:
                    return -1
                if has_digest(digest, (held - 1) << 5) and kinds[held - 1] == kind:
                    return held - 1
                i = (i + 1) & mask

        return find

    def location(self, ordinal: int) -> tuple[int, int]:
        """(offset of the block's data from the start of the CAR, its length)."""
        return self._offsets[ordinal], self._lengths[ordinal]

    def memory_bytes(self) -> int:
        """Bytes held by the index's arrays (for tests and reports)."""
        return (
            len(self._digests)
            + len(self._kinds)
            + self._offsets.itemsize * len(self._offsets)
            + self._lengths.itemsize * len(self._lengths)
            + self._slots.itemsize * len(self._slots)
        )


def _remaining_bytes(stream: Readable) -> int:
    """Bytes from the stream's position to its end, or 0 when it cannot tell."""
    try:
        here = stream.tell()  # type: ignore[attr-defined]
        size = os.fstat(stream.fileno()).st_size  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        getbuffer = getattr(stream, "getbuffer", None)
        if getbuffer is None:
            return 0
        try:
            with getbuffer() as whole:
                return max(0, len(whole) - stream.tell())  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return 0
    return max(0, size - here)


def block_reader(stream: Readable, base: int = 0) -> Callable[[int, int], bytes]:
    """``read(offset, length)`` for blocks located by an index: ``pread`` on a file, else seek and read.

    ``base`` is where the CAR starts in the stream (index offsets count from
    there). ``pread`` does not move the stream and costs one system call.
    """
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd >= 0 and hasattr(os, "pread"):
        pread = os.pread

        def read_file(offset: int, length: int) -> bytes:
            data = pread(fd, length, base + offset)
            if len(data) != length:
                data = read_block_at(stream, base + offset, length)  # type: ignore[arg-type]
            return data

        return read_file

    def read_stream(offset: int, length: int) -> bytes:
        return read_block_at(stream, base + offset, length)  # type: ignore[arg-type]

    return read_stream


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
