"""The binding to the C DAG-CBOR codec (cbrrr): the only module that imports it.

Two modules need the codec: ``cbor`` (decode and encode, with our data-model
checks on top) and ``cid`` (its C base32, about 7x faster than the standard
library's, for CID strings). Both import it from here, so the dependency is
named once and neither module rewrites the other's state at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cbrrr import _cbrrr

__all__ = ["cid_from_base32", "cid_to_string", "decode_raw", "encode_raw"]

#: ``decode_raw(data, link_type, atjson) -> (value, bytes consumed)``; reads any
#: buffer ("y*"), not only ``bytes`` as the stub says.
decode_raw: Callable[..., tuple[Any, int]] = _cbrrr.decode_dag_cbor
#: ``encode_raw(value, link_type, atjson) -> bytes``.
encode_raw: Callable[..., bytes] = _cbrrr.encode_dag_cbor


class _NoLinks:
    """A link type no value is an instance of: the base32 helpers encode only strings."""


def _link_head(length: int) -> bytes:
    n = length + 1
    return b"\xd8\x2a" + (bytes((0x40 | n,)) if n < 24 else bytes((0x58, n))) + b"\x00"


_HEAD36 = _link_head(36)


def cid_to_string(raw: bytes) -> str:
    """Base32 multibase string of a binary CID, computed by the C codec."""
    head = _HEAD36 if len(raw) == 36 else _link_head(len(raw))
    text: str = decode_raw(head + raw, None, True)[0]["$link"]
    return text


def cid_from_base32(text: str) -> bytes:
    """Binary CID from a ``b...`` string, decoded strictly by the C codec (ValueError if bad)."""
    try:
        out = encode_raw({"$link": text}, _NoLinks, True)
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    # tag 42 header, byte-string header, 0x00 prefix
    return out[5:] if out[2] == 0x58 else out[4:]
