"""Property tests: records generated from the schemas pass; one mutation fails exactly there.

A strategy builder walks the compiled schema model (``atrepo.core.lexicon.schema``)
and draws a valid data-model value for any def: strings from pools of valid
examples per format (the interop syntax files, filtered through our own
validators) or from grapheme clusters sized to the byte and grapheme limits;
integers, arrays, bytes and blobs within their bounds; unions pick a listed
member (or, when open, an unlisted type) and set its ``$type``. While it draws,
it records every place it filled ("sites") with the schema that governs it, so a
second property can break one site and demand the failure be reported at that
exact path with the expected rule.

The shipped record types hold no closed unions, enums or consts, so a synthetic
lexicon (``com.example.sink``) with every constraint kind joins them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from atrepo.core import datamodel, limits
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidDataModel, InvalidLexiconData
from atrepo.core.lexicon import Registry, parse_document
from atrepo.core.lexicon.compile import FORMATS, blob_accepts, type_name
from atrepo.core.lexicon.graphemes import count_graphemes
from atrepo.core.lexicon.schema import (
    Array,
    Blob,
    Boolean,
    Bytes,
    CidLink,
    Field,
    Integer,
    Object,
    Record,
    Ref,
    String,
    Union,
    Unknown,
)
from atrepo.lexicons import builtin_registry, registry_with

SYNTAX = Path(__file__).resolve().parents[2] / "interop" / "syntax"
_FORMAT_FILES = {
    "at-identifier": "atidentifier",
    "at-uri": "aturi",
    "cid": "cid",
    "datetime": "datetime",
    "did": "did",
    "handle": "handle",
    "language": "language",
    "nsid": "nsid",
    "record-key": "recordkey",
    "tid": "tid",
    "uri": "uri",
}


def _lines(stem: str, kind: str) -> list[str]:
    text = (SYNTAX / f"{stem}_syntax_{kind}.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


#: Valid and invalid examples per format, each filtered through our syntax validator.
VALID_POOL = {f: [s for s in _lines(stem, "valid") if FORMATS[f](s)] for f, stem in _FORMAT_FILES.items()}
INVALID_POOL = {
    f: [s for s in _lines(stem, "invalid") if not FORMATS[f](s)] for f, stem in _FORMAT_FILES.items()
}

#: Grapheme clusters that never merge with a neighbour from this list.
CLUSTERS = [
    "a",
    "Z",
    "7",
    " ",
    "-",
    "\u00e9",  # precomposed: 1 code point, 2 bytes
    "e\u0301",  # e + combining acute: 2 code points, 3 bytes
    "\u65e5",  # 3 bytes
    "\u0915\u093f",  # Devanagari ki: consonant + vowel sign
    "\U0001f600",  # 4 bytes
    "\U0001f44d\U0001f3ff",  # emoji + skin tone
    "\U0001f1fa\U0001f1f8",  # flag: regional indicator pair
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # ZWJ family: 25 bytes
]
UNLISTED_TYPES = ["com.example.future", "com.example.future#thing", "org.example.app.widget"]
MAX_DEPTH = 5


def _nbytes(units: list[str]) -> int:
    return sum(len(u.encode()) for u in units)


# --- the synthetic lexicon ------------------------------------------------------------------

SINK = "com.example.sink"
SINK_DOCS: list[dict[str, Any]] = [
    {
        "lexicon": 1,
        "id": SINK,
        "defs": {
            "main": {
                "type": "record",
                "key": "tid",
                "record": {
                    "type": "object",
                    "required": ["count", "name", "kind", "parts"],
                    "nullable": ["note", "maybe"],
                    "properties": {
                        "count": {"type": "integer", "minimum": 0, "maximum": 100},
                        "low": {"type": "integer", "minimum": -(2**60)},
                        "high": {"type": "integer", "maximum": 5},
                        "any": {"type": "integer"},
                        "level": {"type": "integer", "enum": [1, 2, 3]},
                        "seven": {"type": "integer", "const": 7},
                        "on": {"type": "boolean"},
                        "yes": {"type": "boolean", "const": True},
                        "name": {"type": "string", "minLength": 1, "maxLength": 30, "maxGraphemes": 10},
                        "short": {"type": "string", "maxGraphemes": 4},
                        "atLeast": {"type": "string", "minGraphemes": 2, "maxLength": 40},
                        "bytes6": {"type": "string", "minLength": 2, "maxLength": 6},
                        "kind": {"type": "string", "enum": ["alpha", "beta"]},
                        "fixed": {"type": "string", "const": "fixed"},
                        "hint": {"type": "string", "knownValues": ["x", "y"], "maxLength": 8},
                        "note": {"type": "string"},
                        "maybe": {"type": "ref", "ref": "#part"},
                        **{f"f-{fmt}": {"type": "string", "format": fmt} for fmt in _FORMAT_FILES},
                        "shortDid": {"type": "string", "format": "did", "maxLength": 32},
                        "raw": {"type": "bytes", "minLength": 1, "maxLength": 8},
                        "link": {"type": "cid-link"},
                        "pic": {"type": "blob", "accept": ["image/*"], "maxSize": 5000},
                        "doc": {"type": "blob", "accept": ["application/pdf", "text/plain"]},
                        "file": {"type": "blob", "accept": ["*/*"]},
                        "free": {"type": "blob"},
                        "parts": {
                            "type": "array",
                            "minLength": 1,
                            "maxLength": 3,
                            "items": {"type": "ref", "ref": "#part"},
                        },
                        "tags": {
                            "type": "array",
                            "maxLength": 4,
                            "items": {"type": "string", "maxLength": 5},
                        },
                        "extra": {"type": "unknown"},
                        "pick": {
                            "type": "union",
                            "refs": ["#part", "com.example.sinkExtra#leaf"],
                            "closed": True,
                        },
                        "open": {"type": "union", "refs": ["#part", "com.example.sinkExtra"]},
                        "tree": {"type": "ref", "ref": "#node"},
                        "inline": {
                            "type": "object",
                            "required": ["a"],
                            "nullable": ["b"],
                            "properties": {"a": {"type": "integer", "maximum": 9}, "b": {"type": "string"}},
                        },
                        "rec": {"type": "ref", "ref": "com.example.sinkRecord"},
                        "size": {"type": "ref", "ref": "#size"},
                    },
                },
            },
            "part": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "format": "tid"},
                    "weight": {"type": "integer", "minimum": 1},
                    "label": {"type": "string", "maxGraphemes": 3, "maxLength": 12},
                },
            },
            "node": {
                "type": "object",
                "required": ["value"],
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"type": "ref", "ref": "#node"}, "maxLength": 2},
                    "next": {"type": "union", "refs": ["#node"]},
                },
            },
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.sinkExtra",
        "defs": {
            "main": {
                "type": "object",
                "required": ["on"],
                "properties": {
                    "on": {"type": "boolean", "const": False},
                    "at": {"type": "string", "format": "datetime"},
                },
            },
            "leaf": {"type": "object", "properties": {"data": {"type": "bytes", "maxLength": 2}}},
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.sinkRecord",
        "defs": {
            "main": {
                "type": "record",
                "key": "any",
                "record": {
                    "type": "object",
                    "required": ["uri"],
                    "properties": {"uri": {"type": "string", "format": "at-uri"}},
                },
            }
        },
    },
]

REG: Registry = registry_with([parse_document(d) for d in SINK_DOCS])

#: The shipped record types under test.
BUILTIN_RECORDS = sorted(
    nsid
    for nsid in builtin_registry()
    if builtin_registry().record_def(nsid) is not None
    and nsid.startswith(("app.bsky.", "chat.bsky.", "com.atproto."))
)
SINK_RECORDS = [SINK, "com.example.sinkRecord"]


# --- the generator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A place the generator filled, and the schema that governs it."""

    path: tuple[str, ...]
    field: Any  # the resolved schema: String, Integer, ..., Object, Union, Array
    slot: str  # "prop" (an object property), "item" (an array item), "member" (a union member), "root"
    nullable: bool = False
    name: str | None = None  # an object's $type when it is a named def
    via: str = "inline"  # how an object was reached: "ref", "union", "root" or "inline"
    typed: bool = False  # a record's object: $type required


class Gen:
    """Draws one valid value for a schema, recording every site on the way."""

    def __init__(self, reg: Registry, draw: st.DrawFn) -> None:
        self.reg = reg
        self.draw = draw
        self.sites: list[Site] = []

    def record(self, nsid: str) -> dict[str, Any]:
        rdef = self.reg.record_def(nsid)
        assert rdef is not None
        value = self.object(rdef.record, (), 0, nsid, typed=True)
        self.sites.append(Site((), rdef.record, "root", name=nsid, via="root", typed=True))
        return value

    def value(self, f: Field, path: tuple[str, ...], depth: int, slot: str, nullable: bool = False) -> Any:
        name: str | None = None
        typed = False
        via = "inline"
        target: Any = f
        if isinstance(f, Ref):
            d = self.reg.get_def(f.ref)
            if isinstance(d, Record):
                target, name, typed, via = d.record, type_name(f.ref), True, "ref"
            elif isinstance(d, Object):
                target, name, via = d, type_name(f.ref), "ref"
            else:
                target = d
        if isinstance(target, Object):
            value: Any = self.object(target, path, depth, name, typed=typed)
        elif isinstance(target, Union):
            value = self.union(target, path, depth)
        else:
            value = self.scalar_or_array(target, path, depth)
        self.sites.append(Site(path, target, slot, nullable, name, via, typed))
        return value

    def object(
        self, f: Object, path: tuple[str, ...], depth: int, name: str | None, *, typed: bool = False
    ) -> dict[str, Any]:
        draw = self.draw
        out: dict[str, Any] = {}
        if name is not None and (typed or draw(st.integers(0, 2)) == 0):
            out["$type"] = name
        for key, prop in f.properties.items():
            required = key in f.required
            if not required and (depth >= MAX_DEPTH or not draw(st.booleans())):
                continue
            nullable = key in f.nullable
            if nullable and draw(st.integers(0, 3)) == 0:
                out[key] = None
                continue
            out[key] = self.value(prop, (*path, key), depth + 1, "prop", nullable)
        if "zzExtra" not in f.properties and draw(st.integers(0, 7)) == 0:
            out["zzExtra"] = draw(_plain_values)
        return out

    def union(self, f: Union, path: tuple[str, ...], depth: int) -> dict[str, Any]:
        draw = self.draw
        if f.refs and (f.closed or draw(st.integers(0, 4)) > 0):
            ref = draw(st.sampled_from(f.refs))
            d = self.reg.get_def(ref)
            target = d.record if isinstance(d, Record) else d
            assert isinstance(target, Object), ref
            value = self.object(target, path, depth, type_name(ref), typed=True)
            self.sites.append(Site(path, target, "member", name=type_name(ref), via="union"))
            return value
        listed = {type_name(r) for r in f.refs}
        type_ = draw(st.sampled_from([t for t in UNLISTED_TYPES if t not in listed]))
        return {"$type": type_, **draw(_plain_objects)}

    def scalar_or_array(self, f: Any, path: tuple[str, ...], depth: int) -> Any:
        draw = self.draw
        if isinstance(f, String):
            return self.string(f)
        if isinstance(f, Integer):
            if f.const is not None:
                return f.const
            if f.enum is not None:
                return draw(st.sampled_from(f.enum))
            lo = max(f.minimum if f.minimum is not None else -limits.MAX_SAFE_INT, -limits.MAX_SAFE_INT)
            hi = min(f.maximum if f.maximum is not None else limits.MAX_SAFE_INT, limits.MAX_SAFE_INT)
            return draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi])))
        if isinstance(f, Boolean):
            return f.const if f.const is not None else draw(st.booleans())
        if isinstance(f, Bytes):
            lo = f.min_length or 0
            hi = lo + 16 if f.max_length is None else min(f.max_length, lo + 16)
            return draw(st.binary(min_size=lo, max_size=hi))
        if isinstance(f, CidLink):
            data = draw(st.binary(max_size=8))
            return draw(st.sampled_from([CID.for_raw(data), CID.for_dag_cbor(data)]))
        if isinstance(f, Blob):
            return self.blob(f)
        if isinstance(f, Unknown):
            value = draw(_plain_objects)
            if draw(st.booleans()):
                value["$type"] = draw(st.sampled_from(UNLISTED_TYPES))
            return value
        if isinstance(f, Array):
            lo = f.min_length or 0
            top = lo if depth >= MAX_DEPTH else lo + 3
            if f.max_length is not None:
                top = min(top, f.max_length)
            n = draw(st.integers(lo, top))
            return [self.value(f.items, (*path, str(i)), depth + 1, "item") for i in range(n)]
        raise AssertionError(f"no generator for {type(f).__name__}")

    def string(self, f: String) -> str:
        draw = self.draw
        if f.const is not None:
            return f.const
        if f.enum is not None:
            return draw(st.sampled_from(f.enum))
        if f.format is not None:
            pool = [s for s in VALID_POOL[f.format] if _fits(f, s)]
            assert pool, f"no valid {f.format} example fits {f}"
            return draw(st.sampled_from(pool))
        if f.known_values and draw(st.booleans()):
            fitting = [s for s in f.known_values if _fits(f, s)]
            if fitting:
                return draw(st.sampled_from(fitting))
        lo = f.min_graphemes or 0
        hi = f.max_graphemes if f.max_graphemes is not None else lo + 12
        hi = min(hi, lo + 12)
        units = draw(st.lists(st.sampled_from(CLUSTERS), min_size=lo, max_size=hi))
        if f.max_length is not None:
            while _nbytes(units) > f.max_length:
                widest = max(range(len(units)), key=lambda i: len(units[i].encode()))
                if len(units[widest]) > 1 or len(units[widest].encode()) > 1:
                    units[widest] = "a"
                else:
                    units.pop()
        if f.min_length is not None:
            while _nbytes(units) < f.min_length:
                units.append("b")
        text = "".join(units)
        assert count_graphemes(text) == len(units), units
        assert _fits(f, text), (f, text)
        return text

    def blob(self, f: Blob) -> dict[str, Any]:
        draw = self.draw
        mimes = ["application/octet-stream", "image/png", "text/plain", "video/mp4"]
        if f.accept is not None:
            choices = []
            for pattern in f.accept:
                if pattern == "*/*":
                    choices += mimes
                elif pattern.endswith("/*"):
                    choices += [pattern[:-1] + "png", pattern[:-1] + "x-other"]
                else:
                    choices.append(pattern)
            mimes = choices
        size = draw(st.integers(0, f.max_size if f.max_size is not None else 10**9))
        ref = CID.for_raw(draw(st.binary(max_size=8)))
        return {"$type": "blob", "ref": ref, "mimeType": draw(st.sampled_from(mimes)), "size": size}


def _fits(f: String, text: str) -> bool:
    n = len(text.encode())
    g = count_graphemes(text)
    return (
        (f.max_length is None or n <= f.max_length)
        and (f.min_length is None or n >= f.min_length)
        and (f.max_graphemes is None or g <= f.max_graphemes)
        and (f.min_graphemes is None or g >= f.min_graphemes)
    )


_scalars = st.one_of(
    st.integers(-limits.MAX_SAFE_INT, limits.MAX_SAFE_INT),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)
_keys = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
_plain_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=6,
)
_plain_objects = st.dictionaries(_keys, _plain_values, max_size=3)


@st.composite
def records(draw: st.DrawFn, collections: list[str]) -> tuple[str, dict[str, Any], list[Site]]:
    nsid = draw(st.sampled_from(collections))
    gen = Gen(REG, draw)
    value = gen.record(nsid)
    return nsid, value, gen.sites


# --- property 1: generated records are valid ------------------------------------------------


def test_every_builtin_record_type_is_covered() -> None:
    assert len(BUILTIN_RECORDS) >= 19
    for nsid in ("app.bsky.feed.post", "app.bsky.actor.profile", "chat.bsky.actor.declaration"):
        assert nsid in BUILTIN_RECORDS


def test_pools_cover_every_format() -> None:
    for fmt in FORMATS:
        assert len(VALID_POOL[fmt]) >= 4 and INVALID_POOL[fmt], fmt


def _check_valid(reg: Registry, nsid: str, value: dict[str, Any]) -> None:
    datamodel.validate_value(value, top_level_object=True)
    assert datamodel.json_to_value(datamodel.value_to_json(value)) == value
    reg.validate_record(nsid, value)
    reg.validate_record(nsid, value, strict=False)


@pytest.mark.parametrize("nsid", BUILTIN_RECORDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_builtin_records_are_valid(nsid: str, data: st.DataObject) -> None:
    _, value, _ = data.draw(records([nsid]))
    _check_valid(builtin_registry(), nsid, value)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(SINK_RECORDS))
def test_generated_synthetic_records_are_valid(case: tuple[str, dict[str, Any], list[Site]]) -> None:
    nsid, value, _ = case
    _check_valid(REG, nsid, value)


# --- property 2: one mutation fails at its place ------------------------------------------------


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _parent(root: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    node = root
    for part in path[:-1]:
        node = node[int(part)] if type(node) is list else node[part]
    last = path[-1]
    return node, int(last) if type(node) is list else last


def _get(root: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return root
    node, key = _parent(root, path)
    return node[key]


def _set(root: Any, path: tuple[str, ...], value: Any) -> None:
    node, key = _parent(root, path)
    node[key] = value


#: A mutation: (label, group, how to change the value at a site, extra path, rule).
Mutation = tuple[str, str, Any, tuple[str, ...], str]
_DELETE = object()


def _wrong_type(f: Any) -> Any:
    if isinstance(f, String):
        return 12
    if isinstance(f, Integer):
        return "12"
    if isinstance(f, Boolean):
        return 1
    if isinstance(f, Bytes):
        return "AAAA"
    if isinstance(f, CidLink):
        return "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"
    if isinstance(f, Array):
        return {"0": 1}
    if isinstance(f, Blob | Unknown | Object | Union):
        return ["x"]
    raise AssertionError(type(f).__name__)


def mutations(site: Site, current: Any) -> list[Mutation]:
    """Every single change at ``site`` that breaks exactly one rule there."""
    f = site.field
    out: list[Mutation] = []
    if site.slot in ("prop", "item"):
        out.append(("wrong type", "type", _wrong_type(f), (), "type"))
        if site.slot == "item":
            out.append(("null item", "type", None, (), "type"))
        elif not site.nullable:
            out.append(("null property", "null", None, (), "nullable"))
        if isinstance(f, Integer):
            out.append(("boolean for integer", "type", True, (), "type"))
    if isinstance(f, Integer):
        if f.maximum is not None:
            out.append(("above maximum", "integer", f.maximum + 1, (), "maximum"))
        if f.minimum is not None:
            out.append(("below minimum", "integer", f.minimum - 1, (), "minimum"))
        if f.maximum is None or f.maximum > limits.MAX_SAFE_INT:
            out.append(("unsafe integer", "integer", limits.MAX_SAFE_INT + 1, (), "range"))
        if f.minimum is None or f.minimum < -limits.MAX_SAFE_INT:
            out.append(("unsafe negative", "integer", -limits.MAX_SAFE_INT - 1, (), "range"))
        if f.enum is not None and f.minimum is None and f.maximum is None:
            out.append(("not in enum", "enum-const", max(f.enum) + 1, (), "enum"))
        if f.const is not None and f.minimum is None and f.maximum is None:
            out.append(("not const", "enum-const", f.const + 1, (), "const"))
    elif isinstance(f, Boolean) and f.const is not None:
        out.append(("not const", "enum-const", not f.const, (), "const"))
    elif isinstance(f, String):
        out += _string_mutations(f)
    elif isinstance(f, Bytes):
        if f.max_length is not None:
            out.append(("bytes too long", "bytes", bytes(f.max_length + 1), (), "maxLength"))
        if f.min_length:
            out.append(("bytes too short", "bytes", b"", (), "minLength"))
    elif isinstance(f, Blob):
        if f.accept is not None and not blob_accepts(f.accept, "zz/unaccepted"):
            out.append(("mime not accepted", "blob", {**current, "mimeType": "zz/unaccepted"}, (), "accept"))
        if f.max_size is not None:
            out.append(("blob too big", "blob", {**current, "size": f.max_size + 1}, (), "maxSize"))
        out.append(("blob extra key", "blob", {**current, "alt": "x"}, (), "blob"))
        out.append(("legacy blob", "blob", {"cid": str(current["ref"]), "mimeType": "image/png"}, (), "type"))
    elif isinstance(f, Array):
        if f.max_length is not None and current:
            longer = current + [current[0]] * (f.max_length + 1 - len(current))
            out.append(("array too long", "array", longer, (), "maxLength"))
        if f.min_length:
            out.append(("array too short", "array", [], (), "minLength"))
    elif isinstance(f, Object):
        for key in f.required:
            out.append(("missing required", "required", _DELETE, (key,), "required"))
        if site.typed and site.via in ("ref", "root"):
            out.append(("missing record $type", "required", _DELETE, ("$type",), "required"))
        if site.name is not None and site.via in ("ref", "root"):
            out.append(("$type mismatch", "ref-type", "com.example.wrong#thing", ("$type",), "$type"))
            out.append(("$type with #main", "ref-type", f"{site.name}#main", ("$type",), "$type"))
    elif isinstance(f, Union):
        out.append(("union without $type", "union", _DELETE, ("$type",), "$type"))
        if f.closed:
            out.append(
                ("unlisted in closed union", "union", "com.example.unlisted", ("$type",), "closed-union")
            )
            main = f.refs[0].partition("#")[0] + "#main"
            out.append(("#main in closed union", "union", main, ("$type",), "closed-union"))
        else:
            out.append(("#main in open union", "union", "com.example.unlisted#main", ("$type",), "$type"))
            out.append(("malformed $type", "union", "not an nsid", ("$type",), "$type"))
    return out


def _string_mutations(f: String) -> list[Mutation]:
    out: list[Mutation] = []
    if f.const is not None:
        return [("not const", "enum-const", f.const + "x", (), "const")]
    if f.enum is not None:
        return [("not in enum", "enum-const", "zz-" + f.enum[0], (), "enum")]
    if f.max_length is not None:
        # over in bytes, and within any grapheme limit: lengths are checked first anyway
        text = "\u00e9" * (f.max_length // 2 + 1)
        out.append(("too many bytes", "string-length", text, (), "maxLength"))
    if f.max_graphemes is not None:
        text = "a" * (f.max_graphemes + 1)
        if f.max_length is None or len(text) <= f.max_length:
            out.append(("too many graphemes", "graphemes", text, (), "maxGraphemes"))
        emoji = "\U0001f468\u200d\U0001f469\u200d\U0001f467" * (f.max_graphemes + 1)
        if f.max_length is None or len(emoji.encode()) <= f.max_length:
            out.append(("too many emoji", "graphemes", emoji, (), "maxGraphemes"))
    if f.min_length:
        out.append(("too few bytes", "string-length", "", (), "minLength"))
    elif f.min_graphemes:
        text = "e\u0301" * (f.min_graphemes - 1)
        out.append(("too few graphemes", "graphemes", text, (), "minGraphemes"))
    if f.format is not None:
        pool = [s for s in INVALID_POOL[f.format] if _fits(f, s)]
        out += [(f"bad {f.format}", "format", s, (), "format") for s in pool[:6]]
    return out


GROUPS = [
    "type",
    "null",
    "integer",
    "enum-const",
    "string-length",
    "graphemes",
    "format",
    "bytes",
    "blob",
    "array",
    "required",
    "union",
    "ref-type",
]
ALL_RECORDS = [*SINK_RECORDS, *BUILTIN_RECORDS]


@st.composite
def mutated(draw: st.DrawFn, group: str) -> tuple[str, dict[str, Any], str, str, str]:
    """A generated record with one mutation of ``group``: (nsid, record, path, rule, label)."""
    collections = draw(st.sampled_from([SINK_RECORDS, ALL_RECORDS]))
    nsid, value, sites = draw(records(collections))
    options = [(site, m) for site in sites for m in mutations(site, _get(value, site.path)) if m[1] == group]
    assume(options)
    site, (label, _, new, extra, rule) = draw(st.sampled_from(options))
    broken = _copy(value)
    where = (*site.path, *extra)
    if new is _DELETE:
        node, key = _parent(broken, where)
        del node[key]
    else:
        _set(broken, where, new)
    return nsid, broken, "/".join(where), rule, label


@pytest.mark.parametrize("group", GROUPS)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_one_mutation_fails_at_its_path(group: str, data: st.DataObject) -> None:
    nsid, broken, path, rule, label = data.draw(mutated(group))
    event(label)
    with pytest.raises(InvalidLexiconData) as info:
        REG.validate_record(nsid, broken)
    err = info.value
    assert (err.path, err.rule, err.nsid) == (path, rule, nsid), f"{label}: {err}"


# --- the one-pass JSON path agrees with json_to_value + validate_record ----------------------


def _two_step(reg: Registry, nsid: str, obj: Any) -> tuple[Any, BaseException | None]:
    try:
        value = datamodel.json_to_value(obj)
        reg.validate_record(nsid, value)
    except (InvalidLexiconData, InvalidDataModel) as exc:
        return None, exc
    return value, None


def _fused(reg: Registry, nsid: str, obj: Any) -> tuple[Any, BaseException | None]:
    before = _copy(obj)
    try:
        value = reg.validate_json_record(nsid, obj)
    except InvalidLexiconData as exc:
        return None, exc
    finally:
        assert obj == before  # the input is never changed
    return value, None


def _agree(reg: Registry, nsid: str, obj: Any) -> None:
    value, error = _two_step(reg, nsid, obj)
    fused_value, fused_error = _fused(reg, nsid, obj)
    assert (error is None) == (fused_error is None), (error, fused_error)
    if error is None:
        assert fused_value == value
        assert type(fused_value) is dict
    elif isinstance(error, InvalidLexiconData):
        assert isinstance(fused_error, InvalidLexiconData)
        assert (fused_error.path, fused_error.rule) == (error.path, error.rule)
    else:
        # a data-model failure; the one-pass path may meet a schema rule at the same place first
        assert isinstance(fused_error, InvalidLexiconData)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(ALL_RECORDS))
def test_json_path_agrees_on_generated_records(case: tuple[str, dict[str, Any], list[Site]]) -> None:
    nsid, value, _ = case
    reg = REG if nsid in SINK_RECORDS else builtin_registry()
    obj = datamodel.value_to_json(value)
    assert reg.validate_json_record(nsid, obj) == value
    _agree(reg, nsid, obj)


@pytest.mark.parametrize("group", GROUPS)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_json_path_agrees_on_mutations(group: str, data: st.DataObject) -> None:
    nsid, broken, _, _, label = data.draw(mutated(group))
    event(label)
    reg = REG if nsid in SINK_RECORDS else builtin_registry()
    _agree(reg, nsid, datamodel.value_to_json(broken))


@pytest.mark.parametrize(
    "extra",
    [
        {"x": 1.5},  # a float
        {"x": {"$link": "not a cid"}},
        {"x": {"$bytes": "!!"}},
        {"x": {"$type": ""}},
        {
            "x": {
                "$type": "blob",
                "ref": {"$link": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"},
            }
        },
        {"x": "\ud800"},
        {"\ud800": 1},
        {"x": [1, {"$link": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"}]},
        {"x": 2**63},
        {"x": 3.0},
    ],
)
def test_json_path_agrees_on_data_model_edges(extra: dict[str, Any]) -> None:
    reg = builtin_registry()
    like = {
        "$type": "app.bsky.feed.like",
        "subject": {
            "uri": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.feed.post/3kz7lqvwc6d2a",
            "cid": "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq",
        },
        "createdAt": "2026-11-30T12:00:00Z",
    }
    _agree(reg, "app.bsky.feed.like", {**like, **extra})  # undeclared property
    _agree(reg, "app.bsky.feed.like", {**like, "subject": {**like["subject"], **extra}})  # inside a ref
    _agree(reg, "app.bsky.feed.like", {**like, "createdAt": extra.get("x", 1)})  # in a declared field
