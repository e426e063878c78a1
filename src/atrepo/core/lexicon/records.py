"""Records on the write path: ``$type``, record key type, and the ``validate`` switch.

The reference host's rules for ``createRecord``/``putRecord``/``applyWrites``,
as pure functions over a registry (spec digest: lexicon.md section 7):

* the record is an object; a missing ``$type`` means the collection, any other
  ``$type`` is refused;
* the record key is checked against the lexicon's key type (``tid``, ``nsid``,
  ``literal:self``, ``any``) whenever the type is known and ``validate`` is not
  ``false``;
* legacy ``{cid, mimeType}`` blobs are refused always, even with ``validate: false``;
* ``validate``: ``true`` requires a known type and validates; ``false`` skips
  the schema (no ``validationStatus``); unset validates known types
  (``valid``) and stores unknown ones as they are (``unknown``).

Records are never rewritten beyond the ``$type`` the caller omitted: no defaults
are inserted and nothing is normalised, so the stored bytes are the sent ones.
"""

from __future__ import annotations

from typing import Any, Literal

from .. import syntax
from ..errors import InvalidLexiconData, InvalidRequest
from .registry import Registry

__all__ = ["ValidationStatus", "check_record_key", "find_legacy_blob", "prepare_record"]

ValidationStatus = Literal["valid", "unknown"]

_LEGACY_BLOB_KEYS = frozenset({"cid", "mimeType"})


def check_record_key(nsid: str, key_type: str, rkey: str) -> None:
    """Check ``rkey`` against a record key type; raises :class:`InvalidLexiconData` (rule ``key``)."""
    if key_type == "tid":
        ok = syntax.is_valid_tid(rkey)
    elif key_type == "nsid":
        ok = syntax.is_valid_nsid(rkey)
    elif key_type == "any":
        ok = syntax.is_valid_record_key(rkey)
    elif key_type.startswith("literal:"):
        ok = rkey == key_type[len("literal:") :]
    else:  # documents are checked at load; a new key type would be a bug here
        raise ValueError(f"unknown record key type {key_type!r}")
    if not ok:
        shown = rkey if len(rkey) <= 80 else rkey[:77] + "..."
        raise InvalidLexiconData(nsid, "record key", "", "key", f"{shown!r} is not a valid {key_type} key")


def find_legacy_blob(value: Any) -> str | None:
    """The CID string of the first legacy ``{cid, mimeType}`` blob inside ``value``, if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            if (
                item.keys() == _LEGACY_BLOB_KEYS
                and type(item["mimeType"]) is str
                and item["mimeType"]
                and syntax.is_valid_cid_string(item["cid"])
            ):
                return str(item["cid"])
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return None


def prepare_record(
    registry: Registry, collection: str, rkey: str, record: Any, *, validate: bool | None = None
) -> tuple[dict[str, Any], ValidationStatus | None]:
    """Check one record write; returns the record to store and its ``validationStatus``.

    ``record`` is a data-model value (parsed from the request body). Errors are
    :class:`InvalidRequest` (shape, ``$type``, key syntax, unknown type with
    ``validate: true``, legacy blobs) or :class:`InvalidLexiconData` (schema and
    key type, with the path inside the record); both reply 400 ``InvalidRequest``.
    """
    if not syntax.is_valid_nsid(collection):
        raise InvalidRequest(
            f"invalid collection {collection[:320]!r}: not an NSID", path="collection", rule="nsid"
        )
    if type(record) is not dict:
        raise InvalidRequest("record must be an object", path="record", rule="type")
    type_ = record.get("$type")
    if type_ is None:
        record = {**record, "$type": collection}
    elif type_ != collection:
        shown = type_ if type(type_) is str and len(type_) <= 320 else type(type_).__name__
        raise InvalidRequest(
            f"Invalid $type: expected {collection}, got {shown}", path="record/$type", rule="$type"
        )
    if not syntax.is_valid_record_key(rkey):
        raise InvalidRequest(f"invalid record key {rkey[:80]!r}", path="rkey", rule="record-key")
    legacy = find_legacy_blob(record)
    if legacy is not None:
        raise InvalidRequest(f"Legacy blobs are not allowed ({legacy[:100]})", path="record", rule="blob")
    if validate is False:
        return record, None
    schema = registry.record_def(collection)
    if schema is None:
        if validate is True:
            raise InvalidRequest(
                f"Unknown lexicon type: {collection}", path="record/$type", rule="unknown-type"
            )
        return record, "unknown"
    check_record_key(collection, schema.key, rkey)
    registry.validate_record(collection, record)
    return record, "valid"
