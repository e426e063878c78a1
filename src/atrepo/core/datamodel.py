"""The AT data model: JSON <-> value conversion and validation.

Values are what ``cbor.decode`` returns: ``dict`` (str keys), ``list``, ``str``,
``bytes``, ``int``, ``bool``, ``None`` and ``CID``. JSON is the convenience form:
``{"$link": "b..."}`` for a CID, ``{"$bytes": "<base64>"}`` for bytes. Objects
carrying ``$type`` must give it as a non-empty string, and ``$type: "blob"``
objects must be well-formed blob references.
"""

from __future__ import annotations

import json
from typing import Any

from . import cbor, limits
from .cid import CID
from .errors import InvalidCID, InvalidDataModel
from .multibase import b64decode_loose, b64encode_unpadded

__all__ = [
    "json_to_value",
    "parse_json",
    "record_cid",
    "validate_record",
    "validate_value",
    "value_to_json",
]


def json_to_value(obj: Any, *, top_level_object: bool = True) -> Any:
    """Convert parsed JSON into a data-model value, validating as it goes."""
    if top_level_object and type(obj) is not dict:
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(obj)}")
    value = _from_json(obj, "$", 1)
    if top_level_object and type(value) is not dict:
        # {"$link": ...} / {"$bytes": ...} are objects in JSON but not in the data model
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(value)}")
    return value


def parse_json(text: str | bytes, *, max_bytes: int = limits.MAX_RECORD_JSON_BYTES) -> Any:
    """Parse JSON text (a record or body) into a data-model value."""
    if len(text) > max_bytes:
        raise InvalidDataModel(f"JSON is {len(text)} bytes, more than {max_bytes}")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InvalidDataModel(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise InvalidDataModel(f"JSON nesting deeper than {limits.MAX_CBOR_DEPTH}") from None
    return json_to_value(obj)


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


def validate_value(value: Any, *, top_level_object: bool = False) -> None:
    """Check that a decoded value is in the data model (types, ints, $type, blobs)."""
    if top_level_object and type(value) is not dict:
        raise InvalidDataModel(f"top-level value must be an object, not {_kind(value)}")
    _check(value, "$", 1)


def validate_record(value: Any) -> None:
    """A record: an object whose ``$type`` is a non-empty string, in the data model."""
    validate_value(value, top_level_object=True)
    if "$type" not in value:
        raise InvalidDataModel("record has no $type")


def record_cid(value: Any) -> CID:
    """The CID of a record value (its canonical DAG-CBOR bytes, sha2-256)."""
    return CID.for_dag_cbor(cbor.encode(value))


# --- internals -------------------------------------------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_str(text: str, path: str) -> None:
    """Strings must be Unicode scalar values: a lone surrogate has no UTF-8 form."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDataModel(f"{path}: string {text!r} is not valid Unicode (lone surrogate)") from None


def _from_json(obj: Any, path: str, depth: int) -> Any:
    kind = type(obj)
    if kind is str:
        _check_str(obj, path)
        return obj
    if kind is bool or obj is None:
        return obj
    if kind is int:
        _check_int(obj, path)
        return obj
    if kind is float:
        if obj.is_integer() and abs(obj) <= limits.MAX_SAFE_INT:
            return int(obj)
        raise InvalidDataModel(f"{path}: floats are not allowed in the AT data model ({obj!r})")
    if kind is dict:
        # links and bytes are scalars in the data model: they add no depth
        if "$link" in obj:
            return _link_from_json(obj, path)
        if "$bytes" in obj:
            return _bytes_from_json(obj, path)
    if depth > limits.MAX_CBOR_DEPTH:
        raise InvalidDataModel(f"{path}: nesting deeper than {limits.MAX_CBOR_DEPTH}")
    if kind is list:
        return [_from_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if kind is dict:
        out = {}
        for key, item in obj.items():
            if type(key) is not str:
                raise InvalidDataModel(f"{path}: object key {key!r} is not a string")
            _check_str(key, path)
            out[key] = _from_json(item, f"{path}.{key}", depth + 1)
        _check_typed_object(out, path)
        return out
    raise InvalidDataModel(f"{path}: {_kind(obj)} is not a JSON data-model value")


def _link_from_json(obj: dict[str, Any], path: str) -> CID:
    if len(obj) != 1:
        raise InvalidDataModel(f"{path}: $link object must have no other keys")
    text = obj["$link"]
    if type(text) is not str:
        raise InvalidDataModel(f"{path}: $link must be a string, not {_kind(text)}")
    try:
        return CID.parse(text)
    except InvalidCID as exc:
        raise InvalidDataModel(f"{path}: $link is not a CID: {exc}") from None


def _bytes_from_json(obj: dict[str, Any], path: str) -> bytes:
    if len(obj) != 1:
        raise InvalidDataModel(f"{path}: $bytes object must have no other keys")
    text = obj["$bytes"]
    if type(text) is not str:
        raise InvalidDataModel(f"{path}: $bytes must be a string, not {_kind(text)}")
    try:
        return b64decode_loose(text)
    except ValueError as exc:
        raise InvalidDataModel(f"{path}: $bytes is not base64: {exc}") from None


def _check_int(value: int, path: str) -> None:
    if not limits.MIN_INT <= value <= limits.MAX_INT:
        raise InvalidDataModel(f"{path}: integer {value} outside the signed 64-bit range")


def _check_typed_object(obj: dict[str, Any], path: str) -> None:
    """Rules for objects with ``$type``: a non-empty string; blobs well-formed."""
    if "$type" not in obj:
        return
    type_name = obj["$type"]
    if type(type_name) is not str or not type_name:
        raise InvalidDataModel(f"{path}: $type must be a non-empty string, not {type_name!r}")
    if type_name == "blob":
        ref = obj.get("ref")
        if type(ref) is not CID:
            raise InvalidDataModel(f"{path}: blob ref must be a link, not {_kind(ref)}")
        if ref.codec != 0x55:
            raise InvalidDataModel(f"{path}: blob ref {ref} must use the raw codec")
        mime = obj.get("mimeType")
        if type(mime) is not str or not mime:
            raise InvalidDataModel(f"{path}: blob mimeType must be a non-empty string")
        size = obj.get("size")
        if type(size) is not int or size < 0:
            raise InvalidDataModel(f"{path}: blob size must be a non-negative integer, not {size!r}")


def _check(value: Any, path: str, depth: int) -> None:
    kind = type(value)
    if kind is str:
        _check_str(value, path)
        return
    if kind is bool or kind is bytes or kind is CID or value is None:
        return
    if kind is int:
        _check_int(value, path)
        return
    if depth > limits.MAX_CBOR_DEPTH:
        raise InvalidDataModel(f"{path}: nesting deeper than {limits.MAX_CBOR_DEPTH}")
    if kind is list:
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidDataModel(f"{path}: object key {key!r} is not a string")
            _check_str(key, path)
            _check(item, f"{path}.{key}", depth + 1)
        _check_typed_object(value, path)
        return
    raise InvalidDataModel(f"{path}: {_kind(value)} is not a data-model value")
