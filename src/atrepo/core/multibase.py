"""Exact base32 (RFC 4648, lower case, unpadded) and base58btc codecs.

Both are strict: decoding rejects characters outside the alphabet, padding and
non-canonical forms (non-zero trailing bits), so that every string has exactly
one byte value and back.
"""

from __future__ import annotations

import base64
import binascii

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def b32encode(data: bytes) -> str:
    """Lower-case, unpadded base32 as CIDs and did:plc identifiers use."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    """Decode lower-case unpadded base32; raise ValueError on any other form."""
    if not _B32_CHARS.issuperset(text):
        raise ValueError("invalid base32 character")
    rem = len(text) % 8
    if rem in (1, 3, 6):
        raise ValueError("invalid base32 length")
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error as exc:  # pragma: no cover - alphabet checked above
        raise ValueError(f"invalid base32: {exc}") from None
    if b32encode(raw) != text:
        raise ValueError("non-canonical base32 (non-zero trailing bits)")
    return raw


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (leading zero bytes become leading '1's)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out: list[str] = []
    while num:
        num, rem = divmod(num, 58)
        out.append(B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Decode base58btc; raise ValueError on a character outside the alphabet."""
    num = 0
    for ch in text:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            raise ValueError(f"invalid base58 character {ch!r}")
        num = num * 58 + idx
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def b64decode_loose(text: str) -> bytes:
    """Standard-alphabet base64 with optional padding (the data model's $bytes)."""
    if "-" in text or "_" in text:
        raise ValueError("base64 uses the standard alphabet (+/), not base64url")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def b64encode_unpadded(data: bytes) -> str:
    """Standard-alphabet base64 without padding, as atproto emitters write it."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64url_decode_strict(text: str) -> bytes:
    """Unpadded base64url with zero trailing bits (did:plc signatures)."""
    if "=" in text:
        raise ValueError("base64url padding is not allowed")
    if any(c in text for c in "+/\n\r \t"):
        raise ValueError("invalid base64url character")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(f"invalid base64url: {exc}") from None
    if b64url_encode(raw) != text:
        raise ValueError("non-canonical base64url (non-zero trailing bits)")
    return raw


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
