"""Content identifiers: a compact, always-valid ``CID`` value.

A ``CID`` holds the binary CID (no multibase prefix) and is validated when
built, so holding one means holding a well-formed CIDv1. Repositories only
generate the "blessed" form (CIDv1, dag-cbor 0x71 or raw 0x55, sha2-256, 32-byte
digest); ``is_blessed``/``is_dag_cbor`` tell callers where stricter rules apply.
"""

from __future__ import annotations

import hashlib
from typing import Final

from . import limits
from .codec import cid_from_base32 as _from_base32
from .codec import cid_to_string as _to_string
from .errors import InvalidCAR, InvalidCID
from .multibase import b58decode
from .varint import decode_varint

CODEC_DAG_CBOR: Final = 0x71
CODEC_RAW: Final = 0x55
HASH_SHA256: Final = 0x12

_PFX_DAG_CBOR: Final = b"\x01\x71\x12\x20"
_PFX_RAW: Final = b"\x01\x55\x12\x20"
_sha256 = hashlib.sha256


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    """Read one varint of a binary CID, as an ``InvalidCID`` that names the CID."""
    try:
        return decode_varint(raw, pos)
    except InvalidCAR as exc:
        raise InvalidCID(f"{exc} of CID {raw.hex()}") from None


def _as_bytes(raw: object) -> bytes:
    """Copy a bytes-like value (bytearray, memoryview, bytes subclass) to ``bytes``.

    A CID must hold immutable, hashable ``bytes``: a bytearray would make it
    unhashable and let its value change under a dict.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    raise InvalidCID(f"CID must be bytes, not {type(raw).__name__}")


def _check_structure(raw: bytes) -> None:
    """Full structural check of a binary CIDv1 (slow path of the constructor)."""
    if not isinstance(raw, bytes):
        raise InvalidCID(f"CID must be bytes, not {type(raw).__name__}")
    if len(raw) > limits.MAX_CID_BYTES:
        raise InvalidCID(f"CID is {len(raw)} bytes, more than {limits.MAX_CID_BYTES}")
    if len(raw) == 34 and raw[:2] == b"\x12\x20":
        raise InvalidCID("CIDv0 is not supported")
    version, pos = _read_varint(raw, 0)
    if version != 1:
        raise InvalidCID(f"unsupported CID version {version}")
    _codec, pos = _read_varint(raw, pos)
    _hash, pos = _read_varint(raw, pos)
    length, pos = _read_varint(raw, pos)
    if len(raw) - pos != length:
        raise InvalidCID(f"CID digest is {len(raw) - pos} bytes but its header says {length}")


class CID:
    """A CIDv1 in binary form; ``str(cid)`` is the base32 ``b...`` string."""

    __slots__ = ("raw",)

    raw: bytes

    def __init__(self, raw: bytes) -> None:
        if type(raw) is not bytes:
            raw = _as_bytes(raw)
        if len(raw) != 36 or (raw[:4] != _PFX_DAG_CBOR and raw[:4] != _PFX_RAW):
            _check_structure(raw)
        self.raw = raw

    @classmethod
    def _trusted(cls, raw: bytes) -> CID:
        """Build without checks, for bytes this module just produced."""
        cid = object.__new__(cls)
        cid.raw = raw
        return cid

    @classmethod
    def for_dag_cbor(cls, data: bytes) -> CID:
        """The blessed CID of a DAG-CBOR block (record, MST node, commit)."""
        return cls._trusted(_PFX_DAG_CBOR + _sha256(data).digest())

    @classmethod
    def for_raw(cls, data: bytes) -> CID:
        """The blessed CID of raw bytes (a blob)."""
        return cls._trusted(_PFX_RAW + _sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse a CID string: base32 ``b...`` (canonical) or base58btc ``z...``.

        CIDv0 (``Qm...``) is rejected; other multibase prefixes are not used by
        atproto data and are rejected here.
        """
        if not isinstance(text, str):
            raise InvalidCID(f"CID string must be str, not {type(text).__name__}")
        if len(text) > limits.MAX_CID_STRING_LENGTH or len(text) < 2:
            raise InvalidCID(f"CID string length {len(text)} out of range")
        prefix = text[0]
        try:
            if prefix == "b":
                # the C codec's base32 is case-insensitive; only lower case is canonical
                # (``lower() !=`` is a few times faster than ``islower()`` here)
                if text.lower() != text:
                    raise InvalidCID(f"CID string {text[:40]!r} is not lower-case base32")
                raw = _from_base32(text)
            elif prefix == "z":
                raw = b58decode(text[1:])
            else:
                raise InvalidCID(f"unsupported multibase prefix {prefix!r} in CID {text[:40]!r}")
        except ValueError as exc:
            raise InvalidCID(f"invalid CID string {text[:40]!r}: {str(exc)[:100]}") from None
        return cls(raw)

    @classmethod
    def coerce(cls, value: CID | str | bytes) -> CID:
        """Accept a CID, its string form or its binary form."""
        if isinstance(value, CID):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        return cls(value)

    # --- properties -----------------------------------------------------
    @property
    def version(self) -> int:
        return 1

    @property
    def codec(self) -> int:
        if self.raw[:4] == _PFX_DAG_CBOR:
            return CODEC_DAG_CBOR
        if self.raw[:4] == _PFX_RAW:
            return CODEC_RAW
        return _read_varint(self.raw, 1)[0]

    @property
    def multihash_code(self) -> int:
        _, pos = _read_varint(self.raw, 1)
        return _read_varint(self.raw, pos)[0]

    @property
    def digest(self) -> bytes:
        _, pos = _read_varint(self.raw, 1)
        _, pos = _read_varint(self.raw, pos)
        _, pos = _read_varint(self.raw, pos)
        return self.raw[pos:]

    @property
    def is_blessed(self) -> bool:
        """CIDv1, dag-cbor or raw, sha2-256: the only forms repositories generate."""
        return len(self.raw) == 36 and (self.raw[:4] == _PFX_DAG_CBOR or self.raw[:4] == _PFX_RAW)

    @property
    def is_dag_cbor(self) -> bool:
        """Blessed dag-cbor: required for commit ``data`` and MST node links."""
        return len(self.raw) == 36 and self.raw[:4] == _PFX_DAG_CBOR

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` hashes to this CID (sha2-256 CIDs only)."""
        if len(self.raw) == 36 and self.raw[2:4] == b"\x12\x20":
            return self.raw[4:] == _sha256(data).digest()
        if self.multihash_code != HASH_SHA256:
            raise InvalidCID(f"cannot verify CID {self} with hash function {self.multihash_code:#x}")
        return self.digest == _sha256(data).digest()

    # --- value semantics ------------------------------------------------
    def __bytes__(self) -> bytes:
        return self.raw

    def __str__(self) -> str:
        return _to_string(self.raw)

    def encode(self) -> str:
        return _to_string(self.raw)

    def __repr__(self) -> str:
        return f"CID({self})"

    def __eq__(self, other: object) -> bool:
        return type(other) is CID and other.raw == self.raw

    def __ne__(self, other: object) -> bool:
        return not (type(other) is CID and other.raw == self.raw)

    def __hash__(self) -> int:
        return hash(self.raw)

    # Ordering is by binary form; comparing with anything else is a TypeError.
    def __lt__(self, other: object) -> bool:
        if type(other) is not CID:
            return NotImplemented
        return self.raw < other.raw

    def __le__(self, other: object) -> bool:
        if type(other) is not CID:
            return NotImplemented
        return self.raw <= other.raw

    def __gt__(self, other: object) -> bool:
        if type(other) is not CID:
            return NotImplemented
        return self.raw > other.raw

    def __ge__(self, other: object) -> bool:
        if type(other) is not CID:
            return NotImplemented
        return self.raw >= other.raw

    def __reduce__(self) -> tuple[type[CID], tuple[bytes]]:
        return (CID, (self.raw,))


#: The root of an empty MST: the CID of ``{"e": [], "l": null}``.
EMPTY_MST_ROOT: Final = CID.parse("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
