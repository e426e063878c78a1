"""Key layers, shared prefixes and MST key syntax."""

from __future__ import annotations

import hashlib
import re

from .. import limits

_sha256 = hashlib.sha256

#: collection/rkey with the characters both reference implementations allow,
#: and neither segment "." or "..".
KEY_PATTERN = rb"(?!\.\.?/)[A-Za-z0-9._~:-]+/(?!\.\.?(?:\n|\Z))[A-Za-z0-9._~:-]+"
KEY_RE = re.compile(KEY_PATTERN)


def key_layer(key: bytes) -> int:
    """Layer of a key: leading zero bits of SHA-256(key), counted in pairs."""
    return digest_layer(_sha256(key).digest())


def digest_layer(digest: bytes) -> int:
    """Layer of a key whose SHA-256 digest is ``digest`` (``key_layer`` without the hashing)."""
    b0 = digest[0]
    if b0 >= 64:
        return 0
    if b0 >= 16:
        return 1
    if b0 >= 4:
        return 2
    if b0:
        return 3
    head = int.from_bytes(digest[:8], "big")
    if head:
        return (64 - head.bit_length()) >> 1
    whole = int.from_bytes(digest, "big")
    return (256 - whole.bit_length()) >> 1


def common_prefix_length(a: bytes, b: bytes) -> int:
    """Number of leading bytes ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if not n:
        return 0
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (x.bit_length() + 7) // 8


#: Most key bytes an error message quotes; the length is given beside them.
SHOWN_KEY_BYTES = 100


def show_key(key: bytes) -> str:
    """A key for an error message: quoted, escaped, and cut to ``SHOWN_KEY_BYTES``.

    Keys in messages come from hostile input: repr() escapes control characters
    so a message stays one line, and the cut keeps a megabyte key from making a
    megabyte message (the length says how much was left out).
    """
    shown = repr(key[:SHOWN_KEY_BYTES].decode("latin-1"))
    if len(shown) > SHOWN_KEY_BYTES + 2:  # escapes make repr() up to 4x longer
        shown = shown[:SHOWN_KEY_BYTES] + "..."
    return shown if len(key) <= SHOWN_KEY_BYTES else f"{shown}... ({len(key)} bytes)"


def key_problem(key: bytes) -> str | None:
    """Why ``key`` is not a valid MST key (repo path), or None when it is."""
    if KEY_RE.fullmatch(key) is not None and len(key) <= limits.MAX_MST_KEY_BYTES:
        return None
    if not key:
        return "empty key"
    if len(key) > limits.MAX_MST_KEY_BYTES:
        return f"key is {len(key)} bytes, more than {limits.MAX_MST_KEY_BYTES}"
    parts = key.split(b"/")
    if len(parts) != 2:
        return "key must be collection/rkey with exactly one '/'"
    if not parts[0] or not parts[1]:
        return "key has an empty segment"
    if any(part in (b".", b"..") for part in parts):
        return "'.' and '..' are not valid path segments"
    return "key has characters outside A-Z a-z 0-9 . - _ ~ :"
