"""Unsigned LEB128 varints, the one length prefix of CAR sections, stream files and CIDs.

We accept only the minimal encoding of a value below ``2**63`` (at most 9
bytes), so every length has exactly one byte form and a reader never buffers
an unbounded run of continuation bytes. Errors are ``InvalidCAR`` with the
byte offset: a varint is always part of some framing, and callers that frame
something else (a CID) re-raise in their own terms.
"""

from __future__ import annotations

from .errors import InvalidCAR

__all__ = ["MAX_VARINT_BYTES", "decode_varint", "encode_varint", "scan_varint", "varint_size"]

#: A minimal varint of a value below 2**63 takes at most 9 bytes.
MAX_VARINT_BYTES = 9

_ONE_BYTE = [bytes((i,)) for i in range(128)]


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
    ``base`` is the stream offset of ``buf[0]``, used only in error messages.
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
