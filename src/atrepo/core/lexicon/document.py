"""Parsing lexicon documents into the schema model, checking every rule on the way.

A document that breaks a rule raises :class:`InvalidLexicon` naming the place
inside the document (``defs/main/record/properties/text/maxGraphemes``) and the
rule. Unknown *types* and *formats* are errors; unknown extra keys inside a
def are ignored, as the reference loaders do, so a later revision of the
language can add a field without breaking us. Refs are normalised here to
``nsid#name``; whether their targets exist is the registry's question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from .. import syntax
from ..errors import InvalidLexicon
from .compile import FORMATS, Bad, Options, scalar_checker
from .schema import (
    FIELD_TYPES,
    NAMED_TYPES,
    PRIMARY_TYPES,
    Array,
    Blob,
    Body,
    Boolean,
    Bytes,
    CidLink,
    Def,
    Field,
    Integer,
    LexiconDoc,
    Object,
    Params,
    PermissionSet,
    Procedure,
    Query,
    Record,
    Ref,
    String,
    Subscription,
    Token,
    Union,
    Unknown,
)

__all__ = ["normalize_ref", "parse_document", "valid_mime_pattern"]

_NOT_NAMED = {
    "ref": "a ref cannot be a named def",
    "union": "a union cannot be a named def",
    "unknown": "unknown cannot be a named def",
    "params": "params cannot be a named def",
    "permission": "a permission cannot be a named def",
}
_PARAM_TYPES = frozenset({"boolean", "integer", "string"})


class _Doc:
    """The document being read: its id, for messages and local refs."""

    __slots__ = ("id",)

    def __init__(self, lexicon_id: str) -> None:
        self.id = lexicon_id

    def fail(self, path: tuple[str, ...], rule: str, detail: str) -> NoReturn:
        raise InvalidLexicon(self.id, "/".join(path), rule, detail)


def parse_document(obj: Any) -> LexiconDoc:
    """Parse and check one lexicon document (JSON already parsed)."""
    if type(obj) is not dict:
        raise InvalidLexicon("(document)", "", "document", "a lexicon document is a JSON object")
    raw_id = obj.get("id")
    shown_id = raw_id if type(raw_id) is str and len(raw_id) <= 320 else "(document)"
    doc = _Doc(shown_id)
    version = obj.get("lexicon")
    if type(version) is not int or version != 1:
        doc.fail(("lexicon",), "lexicon", f"the lexicon version must be the integer 1, not {version!r}"[:200])
    if type(raw_id) is not str or not syntax.is_valid_nsid(raw_id):
        doc.fail(("id",), "id", f"id must be an NSID, not {raw_id!r}"[:200])
    revision = obj.get("revision")
    if revision is not None and (type(revision) is not int or revision < 0):
        doc.fail(("revision",), "revision", "revision must be a non-negative integer")
    description = _opt_str(doc, obj, "description", ())
    defs_obj = obj.get("defs")
    if type(defs_obj) is not dict or not defs_obj:
        doc.fail(("defs",), "defs", "defs must be a non-empty object")
    defs: dict[str, Def] = {}
    for name, raw in defs_obj.items():
        path = ("defs", name)
        if not name or "#" in name or "." in name or len(name) > 128:
            doc.fail(path, "def-name", f"def name {name!r} must be non-empty, without '#' or '.'"[:200])
        defs[name] = _named_def(doc, raw, name, path)
    return LexiconDoc(id=raw_id, defs=defs, revision=revision, description=description)


def normalize_ref(ref: str, lexicon_id: str) -> str | None:
    """``#name`` / ``nsid`` / ``nsid#name`` as ``nsid#name``; ``None`` if malformed."""
    nsid, hash_, name = ref.partition("#")
    if hash_ and (not name or "#" in name or "." in name):
        return None
    if not nsid:
        if not hash_:
            return None
        nsid = lexicon_id
    elif not syntax.is_valid_nsid(nsid):
        return None
    return f"{nsid}#{name or 'main'}"


def valid_mime_pattern(pattern: str) -> bool:
    """``type/subtype``, ``type/*`` or ``*/*``; no other wildcards."""
    kind, slash, sub = pattern.partition("/")
    if not slash or not kind or not sub or "/" in sub or ";" in pattern or any(c.isspace() for c in pattern):
        return False
    if kind == "*":
        return sub == "*"
    return "*" not in kind and ("*" not in sub or sub == "*")


# --- helpers -----------------------------------------------------------------


def _opt_str(doc: _Doc, d: dict[str, Any], key: str, path: tuple[str, ...]) -> str | None:
    value = d.get(key)
    if value is not None and type(value) is not str:
        doc.fail((*path, key), "type", f"{key} must be a string")
    return value


def _opt_int(
    doc: _Doc, d: dict[str, Any], key: str, path: tuple[str, ...], *, minimum: int = 0
) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not int:
        doc.fail((*path, key), "type", f"{key} must be an integer")
    if value < minimum:
        doc.fail((*path, key), "bounds", f"{key} must be at least {minimum}")
    return value


def _str_list(doc: _Doc, d: dict[str, Any], key: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not list or any(type(v) is not str for v in value):
        doc.fail((*path, key), "type", f"{key} must be a list of strings")
    return tuple(value)


def _bounds(
    doc: _Doc, d: dict[str, Any], path: tuple[str, ...], low: str, high: str
) -> tuple[int | None, int | None]:
    lo, hi = _opt_int(doc, d, low, path), _opt_int(doc, d, high, path)
    if lo is not None and hi is not None and lo > hi:
        doc.fail((*path, low), "bounds", f"{low} ({lo}) is greater than {high} ({hi})")
    return lo, hi


def _type_of(doc: _Doc, raw: Any, path: tuple[str, ...]) -> str:
    if type(raw) is not dict:
        doc.fail(path, "type", "a definition must be an object")
    kind = raw.get("type")
    if type(kind) is not str:
        doc.fail((*path, "type"), "type", "a definition needs a string type")
    return kind


def _ref(doc: _Doc, value: Any, path: tuple[str, ...]) -> str:
    if type(value) is not str:
        doc.fail(path, "ref", "a ref must be a string")
    full = normalize_ref(value, doc.id)
    if full is None:
        doc.fail(path, "ref", f"malformed ref {value!r} (want #name, nsid or nsid#name)"[:200])
    return full


# --- defs ----------------------------------------------------------------------


def _named_def(doc: _Doc, raw: Any, name: str, path: tuple[str, ...]) -> Def:
    kind = _type_of(doc, raw, path)
    if kind in _NOT_NAMED:
        doc.fail((*path, "type"), "def-type", _NOT_NAMED[kind])
    if kind not in NAMED_TYPES:
        doc.fail((*path, "type"), "def-type", f"unknown type {kind!r}"[:200])
    if kind in PRIMARY_TYPES and name != "main":
        doc.fail((*path, "type"), "primary-type", f"a {kind} def must be named main")
    if kind == "token":
        return Token(description=_opt_str(doc, raw, "description", path))
    if kind == "record":
        return _record(doc, raw, path)
    if kind == "query":
        return Query(
            parameters=_params(doc, raw.get("parameters"), (*path, "parameters")),
            output=_body(doc, raw.get("output"), (*path, "output")),
            errors=_errors(doc, raw.get("errors"), (*path, "errors")),
            description=_opt_str(doc, raw, "description", path),
        )
    if kind == "procedure":
        return Procedure(
            parameters=_params(doc, raw.get("parameters"), (*path, "parameters")),
            input=_body(doc, raw.get("input"), (*path, "input")),
            output=_body(doc, raw.get("output"), (*path, "output")),
            errors=_errors(doc, raw.get("errors"), (*path, "errors")),
            description=_opt_str(doc, raw, "description", path),
        )
    if kind == "subscription":
        return _subscription(doc, raw, path)
    if kind == "permission-set":
        return _permission_set(doc, raw, path)
    field = _field(doc, raw, path)
    assert not isinstance(field, Ref | Union | Unknown)  # excluded above
    return field


def _field(doc: _Doc, raw: Any, path: tuple[str, ...]) -> Field:
    kind = _type_of(doc, raw, path)
    if kind not in FIELD_TYPES:
        doc.fail((*path, "type"), "field-type", f"type {kind!r} cannot be used here"[:200])
    description = _opt_str(doc, raw, "description", path)
    result: Field
    if kind == "boolean":
        for key in ("default", "const"):
            if key in raw and type(raw[key]) is not bool:
                doc.fail((*path, key), "type", f"{key} must be a boolean")
        result = Boolean(default=raw.get("default"), const=raw.get("const"), description=description)
    elif kind == "integer":
        lo, hi = _int_bounds(doc, raw, path)
        enum = raw.get("enum")
        if enum is not None and (type(enum) is not list or any(type(v) is not int for v in enum)):
            doc.fail((*path, "enum"), "type", "enum must be a list of integers")
        for key in ("default", "const"):
            if key in raw and type(raw[key]) is not int:
                doc.fail((*path, key), "type", f"{key} must be an integer")
        result = Integer(
            minimum=lo,
            maximum=hi,
            enum=tuple(enum) if enum is not None else None,
            default=raw.get("default"),
            const=raw.get("const"),
            description=description,
        )
    elif kind == "string":
        result = _string(doc, raw, path, description)
    elif kind == "bytes":
        lo, hi = _bounds(doc, raw, path, "minLength", "maxLength")
        result = Bytes(min_length=lo, max_length=hi, description=description)
    elif kind == "cid-link":
        result = CidLink(description=description)
    elif kind == "blob":
        accept = _str_list(doc, raw, "accept", path)
        for i, pattern in enumerate(accept or ()):
            if not valid_mime_pattern(pattern):
                doc.fail(
                    (*path, "accept", str(i)), "accept", f"not a MIME type or pattern: {pattern!r}"[:200]
                )
        result = Blob(
            accept=accept, max_size=_opt_int(doc, raw, "maxSize", path, minimum=1), description=description
        )
    elif kind == "unknown":
        result = Unknown(description=description)
    elif kind == "ref":
        result = Ref(ref=_ref(doc, raw.get("ref"), (*path, "ref")), description=description)
    elif kind == "union":
        result = _union(doc, raw, path, description)
    elif kind == "array":
        if "items" not in raw:
            doc.fail((*path, "items"), "items", "an array needs items")
        lo, hi = _bounds(doc, raw, path, "minLength", "maxLength")
        result = Array(
            items=_field(doc, raw["items"], (*path, "items")),
            min_length=lo,
            max_length=hi,
            description=description,
        )
    else:
        result = _object(doc, raw, path, description)
    _check_defaults(doc, raw, path, result)
    return result


def _int_bounds(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...]) -> tuple[int | None, int | None]:
    values = []
    for key in ("minimum", "maximum"):
        value = raw.get(key)
        if value is not None and type(value) is not int:
            doc.fail((*path, key), "type", f"{key} must be an integer")
        values.append(value)
    lo, hi = values
    if lo is not None and hi is not None and lo > hi:
        doc.fail((*path, "minimum"), "bounds", f"minimum ({lo}) is greater than maximum ({hi})")
    return lo, hi


def _string(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...], description: str | None) -> String:
    fmt = raw.get("format")
    if fmt is not None and (type(fmt) is not str or fmt not in FORMATS):
        doc.fail((*path, "format"), "format", f"unknown string format {fmt!r}"[:200])
    min_b, max_b = _bounds(doc, raw, path, "minLength", "maxLength")
    min_g, max_g = _bounds(doc, raw, path, "minGraphemes", "maxGraphemes")
    for key in ("default", "const"):
        if key in raw and type(raw[key]) is not str:
            doc.fail((*path, key), "type", f"{key} must be a string")
    enum = _str_list(doc, raw, "enum", path)
    known = _str_list(doc, raw, "knownValues", path)
    return String(
        format=fmt,
        min_length=min_b,
        max_length=max_b,
        min_graphemes=min_g,
        max_graphemes=max_g,
        enum=enum,
        const=raw.get("const"),
        known_values=known,
        default=raw.get("default"),
        description=description,
    )


def _check_defaults(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...], field: Field) -> None:
    """``const`` excludes ``default``; both, and every ``enum`` value, meet the field's own rules."""
    if "const" in raw and "default" in raw:
        doc.fail((*path, "default"), "const-default", "const and default are mutually exclusive")
    if not isinstance(field, Boolean | Integer | String):
        return
    plain = _without_values(field)
    check = scalar_checker(plain, Options(strict=False))
    assert check is not None
    samples: list[tuple[str, Any]] = [(k, raw[k]) for k in ("default", "const") if k in raw]
    samples += [(f"enum/{i}", v) for i, v in enumerate(raw.get("enum") or ())]
    for where, value in samples:
        try:
            check(value)
        except Bad as bad:
            doc.fail(
                (*path, *where.split("/")),
                "default-value",
                f"{where} {value!r} breaks the field: {bad.reason}"[:300],
            )
    enum = getattr(field, "enum", None)
    if enum is not None and field.default is not None and field.default not in enum:
        doc.fail((*path, "default"), "default-value", "default is not one of enum")


def _without_values(field: Boolean | Integer | String) -> Field:
    """The field's constraints without its value lists (to test those values against)."""
    if isinstance(field, Boolean):
        return Boolean()
    if isinstance(field, Integer):
        return Integer(minimum=field.minimum, maximum=field.maximum)
    return String(
        format=field.format,
        min_length=field.min_length,
        max_length=field.max_length,
        min_graphemes=field.min_graphemes,
        max_graphemes=field.max_graphemes,
    )


def _union(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...], description: str | None) -> Union:
    refs = raw.get("refs")
    if type(refs) is not list:
        doc.fail((*path, "refs"), "refs", "a union needs a list of refs")
    closed = raw.get("closed", False)
    if type(closed) is not bool:
        doc.fail((*path, "closed"), "type", "closed must be a boolean")
    full = tuple(_ref(doc, r, (*path, "refs", str(i))) for i, r in enumerate(refs))
    if len(set(full)) != len(full):
        doc.fail((*path, "refs"), "refs", "a union lists a ref twice")
    if closed and not full:
        doc.fail((*path, "refs"), "refs", "a closed union with no refs admits nothing")
    return Union(refs=full, closed=closed, description=description)


def _properties(
    doc: _Doc, raw: dict[str, Any], path: tuple[str, ...], parse: Callable[[Any, tuple[str, ...]], Field]
) -> tuple[dict[str, Field], tuple[str, ...]]:
    if "properties" not in raw and raw.get("type") == "object":
        doc.fail((*path, "properties"), "properties", "an object needs properties (may be {})")
    props_raw = raw.get("properties", {})
    if type(props_raw) is not dict:
        doc.fail((*path, "properties"), "properties", "properties must be an object")
    props = {}
    for key, value in props_raw.items():
        if not key:
            doc.fail((*path, "properties"), "properties", "a property name must not be empty")
        props[key] = parse(value, (*path, "properties", key))
    required = _str_list(doc, raw, "required", path) or ()
    for i, key in enumerate(required):
        if key not in props:
            doc.fail(
                (*path, "required", str(i)), "required", f"required field {key!r} is not a property"[:200]
            )
    return props, required


def _object(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...], description: str | None) -> Object:
    props, required = _properties(doc, raw, path, lambda v, p: _field(doc, v, p))
    nullable = _str_list(doc, raw, "nullable", path) or ()
    for i, key in enumerate(nullable):
        if key not in props:
            doc.fail(
                (*path, "nullable", str(i)), "nullable", f"nullable field {key!r} is not a property"[:200]
            )
    return Object(properties=props, required=required, nullable=frozenset(nullable), description=description)


def _record(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...]) -> Record:
    key = raw.get("key")
    if type(key) is not str or not _valid_key_type(key):
        doc.fail(
            (*path, "key"),
            "key",
            f"record key type must be tid, nsid, any or literal:<rkey>, not {key!r}"[:200],
        )
    body = raw.get("record")
    if _type_of(doc, body, (*path, "record")) != "object":
        doc.fail((*path, "record", "type"), "record", "a record's record must be an object")
    record = _field(doc, body, (*path, "record"))
    assert isinstance(record, Object)
    return Record(key=key, record=record, description=_opt_str(doc, raw, "description", path))


def _valid_key_type(key: str) -> bool:
    if key in ("tid", "nsid", "any"):
        return True
    prefix, _, literal = key.partition(":")
    return prefix == "literal" and syntax.is_valid_record_key(literal)


def _param(doc: _Doc, raw: Any, path: tuple[str, ...]) -> Field:
    kind = _type_of(doc, raw, path)
    if kind == "array":
        items_kind = _type_of(doc, raw.get("items"), (*path, "items"))
        if items_kind not in _PARAM_TYPES:
            doc.fail(
                (*path, "items", "type"),
                "params",
                f"a parameter array holds booleans, integers or strings, not {items_kind}"[:200],
            )
    elif kind not in _PARAM_TYPES:
        doc.fail(
            (*path, "type"),
            "params",
            f"a parameter is a boolean, integer, string or array of them, not {kind}"[:200],
        )
    return _field(doc, raw, path)


def _params(doc: _Doc, raw: Any, path: tuple[str, ...]) -> Params | None:
    if raw is None:
        return None
    if _type_of(doc, raw, path) != "params":
        doc.fail((*path, "type"), "params", "parameters must have type params")
    props, required = _properties(doc, raw, path, lambda v, p: _param(doc, v, p))
    return Params(properties=props, required=required, description=_opt_str(doc, raw, "description", path))


def _body(doc: _Doc, raw: Any, path: tuple[str, ...]) -> Body | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        doc.fail(path, "body", "a body is an object")
    encoding = raw.get("encoding")
    if type(encoding) is not str or not valid_mime_pattern(encoding) or "," in encoding:
        doc.fail((*path, "encoding"), "encoding", f"encoding must be one MIME type, not {encoding!r}"[:200])
    schema: Object | Ref | Union | None = None
    if "schema" in raw:
        kind = _type_of(doc, raw["schema"], (*path, "schema"))
        if kind not in ("object", "ref", "union"):
            doc.fail(
                (*path, "schema", "type"),
                "body",
                f"a body schema is an object, ref or union, not {kind}"[:200],
            )
        parsed = _field(doc, raw["schema"], (*path, "schema"))
        assert isinstance(parsed, Object | Ref | Union)
        schema = parsed
    return Body(encoding=encoding, schema=schema, description=_opt_str(doc, raw, "description", path))


def _errors(doc: _Doc, raw: Any, path: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        doc.fail(path, "errors", "errors must be a list")
    names = []
    for i, entry in enumerate(raw):
        if type(entry) is not dict or type(entry.get("name")) is not str or not entry["name"]:
            doc.fail((*path, str(i)), "errors", "each error is an object with a non-empty name")
        _opt_str(doc, entry, "description", (*path, str(i)))
        names.append(entry["name"])
    return tuple(names)


def _subscription(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...]) -> Subscription:
    message = raw.get("message")
    union = None
    if message is not None:
        if type(message) is not dict:
            doc.fail((*path, "message"), "message", "message must be an object")
        schema = message.get("schema")
        if schema is not None:
            if _type_of(doc, schema, (*path, "message", "schema")) != "union":
                doc.fail(
                    (*path, "message", "schema", "type"), "message", "a message schema is a union of refs"
                )
            field = _field(doc, schema, (*path, "message", "schema"))
            assert isinstance(field, Union)
            union = field
    return Subscription(
        parameters=_params(doc, raw.get("parameters"), (*path, "parameters")),
        message=union,
        errors=_errors(doc, raw.get("errors"), (*path, "errors")),
        description=_opt_str(doc, raw, "description", path),
    )


def _permission_set(doc: _Doc, raw: dict[str, Any], path: tuple[str, ...]) -> PermissionSet:
    perms = raw.get("permissions")
    if type(perms) is not list:
        doc.fail((*path, "permissions"), "permissions", "a permission set needs a list of permissions")
    for i, perm in enumerate(perms):
        where = (*path, "permissions", str(i))
        if _type_of(doc, perm, where) != "permission":
            doc.fail((*where, "type"), "permissions", "each entry of permissions has type permission")
        if type(perm.get("resource")) is not str:
            doc.fail((*where, "resource"), "permissions", "a permission names its resource")
    return PermissionSet(
        permissions=tuple(perms),
        title=_opt_str(doc, raw, "title", path),
        detail=_opt_str(doc, raw, "detail", path),
        description=_opt_str(doc, raw, "description", path),
    )
