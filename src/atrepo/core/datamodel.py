"""The AT data model: JSON <-> value conversion and validation.

Values are what ``cbor.decode`` returns: ``dict`` (str keys), ``list``, ``str``,
``bytes``, ``int``, ``bool``, ``None`` and ``CID``. JSON is the convenience form:
``{"$link": "b..."}`` for a CID, ``{"$bytes": "<base64>"}`` for bytes. Objects
carrying ``$type`` must give it as a non-empty string, and ``$type: "blob"``
objects must be well-formed blob references.
"""

from __future__ import annotations

from typing import Any

from . import cbor, limits
from .cid import CID
from .errors import InvalidCID, InvalidDataModel
from .jsonio import parse_outside_json
from .multibase import b64decode_loose, b64encode_unpadded

__all__ = [
    "bytes_from_json",
    "check_typed_object",
    "decode_to_json",
    "json_to_value",
    "link_from_json",
    "parse_json",
    "record_cid",
    "validate_record",
    "validate_value",
    "value_to_json",
]


def json_to_value(obj: Any, *, top_level_object: bool = True, raw_blob_refs: bool = True) -> Any:
    """Convert parsed JSON into a data-model value, validating as it goes.

    ``raw_blob_refs=False`` admits blob refs of any codec. The data model wants
    ``raw``, but the community's lexicon fixtures carry dag-cbor blob refs; it is
    for reading such data, never for a write path.
    """
    if top_level_object and type(obj) is not dict:
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(obj)}")
    try:
        value = _from_json(obj, 1, raw_blob_refs)
    except _Bad as bad:
        raise _error(bad) from None
    if top_level_object and type(value) is not dict:
        # {"$link": ...} / {"$bytes": ...} are objects in JSON but not in the data model
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(value)}")
    return value


def parse_json(text: str | bytes, *, max_bytes: int = limits.MAX_RECORD_JSON_BYTES) -> Any:
    """Parse JSON text (a record or body) into a data-model value."""
    # One level of slack: a {"$link"}/{"$bytes"} object at the deepest level is
    # a scalar in the data model; the walk applies the exact rule.
    obj = parse_outside_json(text, _invalid_json, max_bytes=max_bytes, max_depth=limits.MAX_CBOR_DEPTH + 1)
    return json_to_value(obj)


def _invalid_json(why: str) -> InvalidDataModel:
    return InvalidDataModel(f"invalid JSON: {why}")


def value_to_json(value: Any) -> Any:
    """Convert a data-model value into JSON-ready Python objects."""
    kind = type(value)
    if kind is dict:
        return {k: value_to_json(v) for k, v in value.items()}
    if kind is list:
        return [value_to_json(v) for v in value]
    if kind is CID:
        return {"$link": str(value)}
    if kind is bytes:
        return {"$bytes": b64encode_unpadded(value)}
    return value


def decode_to_json(data: bytes, *, max_bytes: int = limits.MAX_RECORD_BYTES) -> Any:
    """A DAG-CBOR block straight to its JSON form (``$link``, ``$bytes``), checked as ``cbor.decode``."""
    done, value = cbor.decode_json_direct(data, max_bytes=max_bytes)
    if done:
        return value
    return value_to_json(cbor.decode(data, max_bytes=max_bytes))


def link_from_json(obj: Any) -> CID:
    """A ``{"$link": "<cid>"}`` object as a CID (raises :class:`InvalidDataModel`)."""
    if type(obj) is not dict or "$link" not in obj:
        raise InvalidDataModel('expected a {"$link": ...} object')
    try:
        return _link_from_json(obj)
    except _Bad as bad:
        raise _error(bad) from None


def bytes_from_json(obj: Any) -> bytes:
    """A ``{"$bytes": "<base64>"}`` object as bytes (raises :class:`InvalidDataModel`)."""
    if type(obj) is not dict or "$bytes" not in obj:
        raise InvalidDataModel('expected a {"$bytes": ...} object')
    try:
        return _bytes_from_json(obj)
    except _Bad as bad:
        raise _error(bad) from None


def check_typed_object(obj: dict[str, Any], *, raw_blob_refs: bool = True) -> None:
    """The data model's rules for an object's ``$type`` (non-empty string; blobs well-formed)."""
    try:
        _check_typed_object(obj, raw_blob_refs)
    except _Bad as bad:
        raise _error(bad) from None


def validate_value(value: Any, *, top_level_object: bool = False) -> None:
    """Check that a decoded value is in the data model (types, ints, $type, blobs)."""
    if top_level_object and type(value) is not dict:
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(value)}")
    try:
        _check(value, 1)
    except _Bad as bad:
        raise _error(bad) from None


def validate_record(value: Any) -> None:
    """A record: an object whose ``$type`` is a non-empty string, in the data model."""
    validate_value(value, top_level_object=True)
    if "$type" not in value:
        raise InvalidDataModel("record has no $type")


def record_cid(value: Any) -> CID:
    """The CID of a record value (its canonical DAG-CBOR bytes, sha2-256)."""
    return CID.for_dag_cbor(cbor.encode(value))


# --- internals -------------------------------------------------------------
#
# The walks below carry no path. Building "$.a[3].b" for every element of a
# valid value cost time proportional to the path length per element: a long
# key over a large array made validation quadratic (a valid 2 MB record took
# seconds). A failure raises ``_Bad`` with its reason; each container it passes
# through on the way out adds its index or key, so the path is built once, for
# the one element that failed.

#: Characters of a hostile string, key or value quoted in a message.
_SHOWN_CHARS = 100


class _Bad(Exception):
    """A data-model failure on its way up; ``parts`` is the path, innermost first."""

    __slots__ = ("parts", "reason")

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[str | int] = []


def _error(bad: _Bad) -> InvalidDataModel:
    path = ["$"]
    for part in reversed(bad.parts):
        path.append(f".{_shown_str(part, quote=False)}" if isinstance(part, str) else f"[{part}]")
    return InvalidDataModel(f"{''.join(path)}: {bad.reason}")


def _shown_str(text: str, *, quote: bool = True) -> str:
    """At most ``_SHOWN_CHARS`` of ``text`` for a message, with its length when cut."""
    shown = repr(text[:_SHOWN_CHARS]) if quote else text[:_SHOWN_CHARS]
    if len(shown) > _SHOWN_CHARS + 2:  # escapes make repr() up to 10x longer
        shown = shown[:_SHOWN_CHARS] + "..."
    return shown if len(text) <= _SHOWN_CHARS else f"{shown}... ({len(text)} characters)"


def _shown(value: Any) -> str:
    """A value for a message, never long whatever it is."""
    kind = type(value)
    if kind is str:
        return _shown_str(value)
    if kind is int:
        # str() of a huge int is slow, and raises past sys.get_int_max_str_digits()
        return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"
    if value is None or kind is bool or kind is float:
        return repr(value)
    return _kind(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_str(text: str) -> None:
    """Strings must be Unicode scalar values: a lone surrogate has no UTF-8 form."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"string {_shown_str(text)} is not valid Unicode (lone surrogate)") from None


def _from_json(obj: Any, depth: int, raw_refs: bool) -> Any:
    kind = type(obj)
    if kind is str:
        if not obj.isascii():  # ASCII is always valid; skip the call
            _check_str(obj)
        return obj
    if kind is bool or obj is None:
        return obj
    if kind is int:
        _check_int(obj)
        return obj
    if kind is float:
        if obj.is_integer() and abs(obj) <= limits.MAX_SAFE_INT:
            return int(obj)
        raise _Bad(f"floats are not allowed in the AT data model ({obj!r})")
    if kind is dict:
        # links and bytes are scalars in the data model: they add no depth
        if "$link" in obj:
            return _link_from_json(obj)
        if "$bytes" in obj:
            return _bytes_from_json(obj)
    if depth > limits.MAX_CBOR_DEPTH:
        raise _Bad(f"nesting deeper than {limits.MAX_CBOR_DEPTH}")
    deeper = depth + 1
    if kind is list:
        out_list: list[Any] = []
        append = out_list.append
        for index, item in enumerate(obj):
            try:
                append(_from_json(item, deeper, raw_refs))
            except _Bad as bad:
                bad.parts.append(index)
                raise
        return out_list
    if kind is dict:
        out = {}
        for key, item in obj.items():
            if type(key) is not str:
                raise _Bad(f"object key {_shown(key)} is not a string")
            if not key.isascii():
                _check_str(key)
            try:
                out[key] = _from_json(item, deeper, raw_refs)
            except _Bad as bad:
                bad.parts.append(key)
                raise
        _check_typed_object(out, raw_refs)
        return out
    raise _Bad(f"{_kind(obj)} is not a JSON data-model value")


def _link_from_json(obj: dict[str, Any]) -> CID:
    if len(obj) != 1:
        raise _Bad("$link object must have no other keys")
    text = obj["$link"]
    if type(text) is not str:
        raise _Bad(f"$link must be a string, not {_kind(text)}")
    try:
        return CID.parse(text)
    except InvalidCID as exc:
        raise _Bad(f"$link is not a CID: {exc}") from None


def _bytes_from_json(obj: dict[str, Any]) -> bytes:
    if len(obj) != 1:
        raise _Bad("$bytes object must have no other keys")
    text = obj["$bytes"]
    if type(text) is not str:
        raise _Bad(f"$bytes must be a string, not {_kind(text)}")
    try:
        return b64decode_loose(text)
    except ValueError as exc:
        raise _Bad(f"$bytes is not base64: {str(exc)[:_SHOWN_CHARS]}") from None


def _check_int(value: int) -> None:
    if not limits.MIN_INT <= value <= limits.MAX_INT:
        raise _Bad(f"integer {_shown(value)} outside the signed 64-bit range")


def _check_typed_object(obj: dict[str, Any], raw_refs: bool = True) -> None:
    """Rules for objects with ``$type``: a non-empty string; blobs well-formed."""
    if "$type" not in obj:
        return
    type_name = obj["$type"]
    if type(type_name) is not str or not type_name:
        raise _Bad(f"$type must be a non-empty string, not {_shown(type_name)}")
    if type_name == "blob":
        ref = obj.get("ref")
        if type(ref) is not CID:
            raise _Bad(f"blob ref must be a link, not {_kind(ref)}")
        if raw_refs and ref.codec != 0x55:
            raise _Bad(f"blob ref {ref} must use the raw codec")
        mime = obj.get("mimeType")
        if type(mime) is not str or not mime:
            raise _Bad("blob mimeType must be a non-empty string")
        size = obj.get("size")
        if type(size) is not int or size < 0:
            raise _Bad(f"blob size must be a non-negative integer, not {_shown(size)}")


def _check(value: Any, depth: int) -> None:
    kind = type(value)
    if kind is str:
        _check_str(value)
        return
    if kind is bool or kind is bytes or kind is CID or value is None:
        return
    if kind is int:
        _check_int(value)
        return
    if depth > limits.MAX_CBOR_DEPTH:
        raise _Bad(f"nesting deeper than {limits.MAX_CBOR_DEPTH}")
    deeper = depth + 1
    if kind is list:
        for index, item in enumerate(value):
            try:
                _check(item, deeper)
            except _Bad as bad:
                bad.parts.append(index)
                raise
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise _Bad(f"object key {_shown(key)} is not a string")
            _check_str(key)
            try:
                _check(item, deeper)
            except _Bad as bad:
                bad.parts.append(key)
                raise
        _check_typed_object(value)
        return
    raise _Bad(f"{_kind(value)} is not a data-model value")
