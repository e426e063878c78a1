"""Lexicon documents: the interop fixtures, the shipped set, one negative test per rule, files on disk."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from atrepo.core import datamodel
from atrepo.core.errors import (
    InputFileError,
    InvalidDataModel,
    InvalidLexicon,
    InvalidLexiconData,
    LexiconNotFound,
)
from atrepo.core.lexicon import LexiconDoc, Registry, parse_document
from atrepo.core.lexicon.records import check_record_key
from atrepo.core.lexicon.schema import (
    Object,
    PermissionSet,
    Procedure,
    Query,
    Record,
    String,
    Subscription,
    Token,
)
from atrepo.core.lexicon.xrpc import endpoint
from atrepo.lexicons import (
    MAX_LEXICON_FILE_BYTES,
    builtin_documents,
    builtin_registry,
    load_directory,
    load_file,
    registry_with,
)

INTEROP = Path(__file__).resolve().parents[2] / "interop" / "lexicon"
DATA = resources.files("atrepo.lexicons").joinpath("data")


def _fixture(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((INTEROP / name).read_text(encoding="utf-8"))
    return cases


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


VALID = _fixture("lexicon-valid.json")
INVALID = _fixture("lexicon-invalid.json")
RECORDS = _fixture("record-data-valid.json")


# --- (1) interop fixtures -------------------------------------------------------------


def test_fixtures_present() -> None:
    assert len(VALID) == 3
    assert len(INVALID) == 7
    assert len(RECORDS) == 3
    assert sorted(p.name for p in (INTEROP / "catalog").glob("*.json")) == [
        "permission-set.json",
        "procedure.json",
        "query.json",
        "record.json",
        "subscription.json",
    ]


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_lexicon_fixture_parses(case: dict[str, Any]) -> None:
    doc = parse_document(case["lexicon"])
    assert doc.id == case["lexicon"]["id"]
    assert set(doc.defs) == set(case["lexicon"]["defs"])
    Registry([doc])  # and loads on its own: the fixtures have no outside refs


# name -> (rule, path) our parser reports; every one names the offending place
INVALID_EXPECTED = {
    "invalid lexicon field": ("lexicon", "lexicon"),
    "invalid id field": ("id", "id"),
    "invalid NSID": ("id", "id"),
    "defined unknown": ("def-type", "defs/demo/type"),
    "defined ref": ("def-type", "defs/demo/type"),
    "non-main primary": ("primary-type", "defs/demo/type"),
    "record missing type object": ("type", "defs/main/record/type"),
}


def test_invalid_fixture_names_are_all_expected() -> None:
    assert set(_ids(INVALID)) == set(INVALID_EXPECTED)


@pytest.mark.parametrize("case", INVALID, ids=_ids(INVALID))
def test_invalid_lexicon_fixture_raises(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidLexicon) as info:
        parse_document(case["lexicon"])
    rule, path = INVALID_EXPECTED[case["name"]]
    assert (info.value.rule, info.value.path) == (rule, path)
    assert path in str(info.value)
    assert info.value.to_xrpc()[0] == 400


@pytest.fixture(scope="module")
def catalog() -> list[LexiconDoc]:
    return load_directory(INTEROP / "catalog")


@pytest.fixture(scope="module")
def catalog_registry(catalog: list[LexiconDoc]) -> Registry:
    return registry_with(catalog)


def test_catalog_loads(catalog: list[LexiconDoc], catalog_registry: Registry) -> None:
    ids = sorted(doc.id for doc in catalog)
    assert ids == [
        "example.lexicon.permissionset",
        "example.lexicon.procedure",
        "example.lexicon.query",
        "example.lexicon.record",
        "example.lexicon.subscription",
    ]
    for nsid in ids:
        assert nsid in catalog_registry
    assert len(catalog_registry) == len(builtin_registry()) + len(ids)
    record = catalog_registry.record_def("example.lexicon.record")
    assert record is not None and record.key == "literal:demo"
    assert isinstance(catalog_registry.get_def("example.lexicon.record#demoToken"), Token)
    for nsid in ("example.lexicon.query", "example.lexicon.procedure", "example.lexicon.subscription"):
        endpoint(catalog_registry, nsid)


def test_catalog_alone_has_an_unresolved_ref(catalog: list[LexiconDoc]) -> None:
    # the catalog procedure refs app.bsky.actor.defs#preferences: only loadable over the shipped set
    with pytest.raises(InvalidLexicon) as info:
        Registry(catalog)
    assert info.value.rule == "unresolved-ref"
    assert info.value.lexicon == "example.lexicon.procedure"
    assert info.value.path == "defs/main/input/schema/properties/preferences/ref"


def _record_value(data: dict[str, Any]) -> Any:
    # The fixture's blobs carry a dag-cbor CID (bafyrei...) as their ref. The data
    # model wants a raw (0x55) CID in a blob ref and rejects anything else by default
    # (the write path only ever sees raw, uploaded blobs); raw_blob_refs=False admits
    # any codec, which is what the interop fixture needs to be read at all.
    return datamodel.json_to_value(data, raw_blob_refs=False)


def test_fixture_blob_refs_are_not_raw() -> None:
    full = next(case for case in RECORDS if case["name"] == "full")
    with pytest.raises(InvalidDataModel):
        datamodel.json_to_value(full["data"])


@pytest.mark.parametrize("case", RECORDS, ids=_ids(RECORDS))
@pytest.mark.parametrize("strict", [True, False])
def test_record_data_valid(catalog_registry: Registry, case: dict[str, Any], strict: bool) -> None:
    nsid = case["data"]["$type"]
    value = _record_value(case["data"])
    catalog_registry.validate_record(nsid, value, strict=strict)
    record = catalog_registry.record_def(nsid)
    assert record is not None
    check_record_key(nsid, record.key, case["rkey"])


# --- (2) the shipped set ------------------------------------------------------------


def _data_files(folder: Any = DATA, prefix: str = "") -> list[str]:
    out = []
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            out += _data_files(entry, name + "/")
        elif entry.name.endswith(".json"):
            out.append(name)
    return out


def test_builtin_documents_load() -> None:
    docs = builtin_documents()
    registry = builtin_registry()
    assert len(docs) >= 400
    assert len(registry) == len(docs)
    ids = [doc.id for doc in docs]
    assert len(set(ids)) == len(ids)
    for prefix in ("com.atproto.", "app.bsky.", "chat.bsky.", "tools.ozone."):
        assert sum(i.startswith(prefix) for i in ids) >= 5, prefix
    for nsid in (
        "com.atproto.repo.createRecord",
        "com.atproto.sync.subscribeRepos",
        "app.bsky.feed.post",
        "app.bsky.actor.profile",
        "chat.bsky.actor.declaration",
        "com.atproto.lexicon.schema",
    ):
        assert nsid in registry
    assert builtin_registry() is registry  # built once


def test_every_shipped_file_is_a_document_named_by_its_path() -> None:
    files = _data_files()
    assert len(files) == len(builtin_documents())
    ids = {doc.id for doc in builtin_documents()}
    for name in files:
        assert name.removesuffix(".json").replace("/", ".") in ids, name
        assert len((DATA / name).read_bytes()) < MAX_LEXICON_FILE_BYTES


def test_data_folder_has_licences_and_source() -> None:
    for name in ("LICENSE-MIT.txt", "LICENSE-APACHE.txt", "SOURCE.md"):
        assert DATA.joinpath(name).is_file(), name
    assert "MIT" in DATA.joinpath("LICENSE-MIT.txt").read_text(encoding="utf-8")
    assert "Apache" in DATA.joinpath("LICENSE-APACHE.txt").read_text(encoding="utf-8")
    source = DATA.joinpath("SOURCE.md").read_text(encoding="utf-8")
    assert "bluesky-social/atproto" in source
    assert "d6296a1cfdb40a773319cb59061300e4e8e52f26" in source


def test_every_shipped_data_def_compiles() -> None:
    registry = builtin_registry()
    count = 0
    for doc in builtin_documents():
        for name, d in doc.defs.items():
            if isinstance(d, Token | Query | Procedure | Subscription | PermissionSet):
                with pytest.raises(LexiconNotFound):
                    registry.validator(f"{doc.id}#{name}")
                continue
            for strict in (True, False):
                assert callable(registry.validator(f"{doc.id}#{name}", strict=strict))
            count += 1
    assert count > 400


def test_shipped_post_record_validates() -> None:
    registry = builtin_registry()
    post = {"$type": "app.bsky.feed.post", "text": "hello", "createdAt": "2024-01-01T00:00:00Z"}
    registry.validate_record("app.bsky.feed.post", post)
    assert isinstance(registry.record_def("app.bsky.feed.post"), Record)
    assert registry.record_def("com.atproto.repo.listRecords") is None


# --- (3) one negative test per document rule ---------------------------------------


def lexicon(defs: dict[str, Any], nsid: str = "com.example.test", **top: Any) -> dict[str, Any]:
    return {"lexicon": 1, "id": nsid, "defs": defs, **top}


def prop(field: dict[str, Any]) -> dict[str, Any]:
    """A document whose ``main`` object has one property ``f``."""
    return lexicon({"main": {"type": "object", "properties": {"f": field}}})


F = "defs/main/properties/f"


def query(**main: Any) -> dict[str, Any]:
    return lexicon({"main": {"type": "query", **main}})


def procedure(**main: Any) -> dict[str, Any]:
    return lexicon({"main": {"type": "procedure", **main}})


def params(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "params", "properties": properties, **more}


def record(**main: Any) -> dict[str, Any]:
    body = {"type": "record", "key": "tid", "record": {"type": "object", "properties": {}}}
    return lexicon({"main": {**body, **main}})


def subscription(message: Any) -> dict[str, Any]:
    return lexicon({"main": {"type": "subscription", "message": message}})


NEGATIVE: list[tuple[str, Any, str, str]] = [
    # (name, document, rule, path)
    ("not an object", [], "document", ""),
    ("lexicon 2", lexicon({"a": {"type": "integer"}}) | {"lexicon": 2}, "lexicon", "lexicon"),
    ("lexicon string", lexicon({"a": {"type": "integer"}}) | {"lexicon": "1"}, "lexicon", "lexicon"),
    ("lexicon true", lexicon({"a": {"type": "integer"}}) | {"lexicon": True}, "lexicon", "lexicon"),
    ("lexicon missing", {"id": "com.example.test", "defs": {"a": {"type": "integer"}}}, "lexicon", "lexicon"),
    ("id missing", {"lexicon": 1, "defs": {"a": {"type": "integer"}}}, "id", "id"),
    ("id one segment", lexicon({"a": {"type": "integer"}}, "one"), "id", "id"),
    ("id with slash", lexicon({"a": {"type": "integer"}}, "com.example/test"), "id", "id"),
    ("revision negative", lexicon({"a": {"type": "integer"}}, revision=-1), "revision", "revision"),
    ("revision string", lexicon({"a": {"type": "integer"}}, revision="2"), "revision", "revision"),
    ("revision float", lexicon({"a": {"type": "integer"}}, revision=1.5), "revision", "revision"),
    ("description not string", lexicon({"a": {"type": "integer"}}, description=3), "type", "description"),
    ("defs empty", lexicon({}), "defs", "defs"),
    ("defs missing", {"lexicon": 1, "id": "com.example.test"}, "defs", "defs"),
    ("defs a list", lexicon([{"type": "integer"}]), "defs", "defs"),  # type: ignore[arg-type]
    ("def name with #", lexicon({"a#b": {"type": "integer"}}), "def-name", "defs/a#b"),
    ("def name with .", lexicon({"a.b": {"type": "integer"}}), "def-name", "defs/a.b"),
    ("def name empty", lexicon({"": {"type": "integer"}}), "def-name", "defs/"),
    ("def not an object", lexicon({"a": "integer"}), "type", "defs/a"),
    ("def without type", lexicon({"a": {"description": "x"}}), "type", "defs/a/type"),
    ("def type not a string", lexicon({"a": {"type": 1}}), "type", "defs/a/type"),
]
for _kind, _body in [
    ("record", {"key": "tid", "record": {"type": "object", "properties": {}}}),
    ("query", {}),
    ("procedure", {}),
    ("subscription", {}),
    ("permission-set", {"permissions": []}),
]:
    NEGATIVE.append(
        (f"{_kind} not main", lexicon({"x": {"type": _kind, **_body}}), "primary-type", "defs/x/type")
    )
for _kind, _body in [
    ("ref", {"ref": "com.atproto.repo.strongRef"}),
    ("union", {"refs": []}),
    ("unknown", {}),
    ("params", {"properties": {}}),
    ("permission", {"resource": "repo"}),
]:
    NEGATIVE.append((f"named {_kind}", lexicon({"x": {"type": _kind, **_body}}), "def-type", "defs/x/type"))
    NEGATIVE.append(
        (f"{_kind} as main", lexicon({"main": {"type": _kind, **_body}}), "def-type", "defs/main/type")
    )
NEGATIVE += [
    # unknown types
    ("unknown def type", lexicon({"x": {"type": "float"}}), "def-type", "defs/x/type"),
    ("null def type", lexicon({"x": {"type": "null"}}), "def-type", "defs/x/type"),
    ("unknown property type", prop({"type": "number"}), "field-type", f"{F}/type"),
    ("token as property", prop({"type": "token"}), "field-type", f"{F}/type"),
    ("params as property", prop({"type": "params", "properties": {}}), "field-type", f"{F}/type"),
    ("record as property", prop({"type": "record"}), "field-type", f"{F}/type"),
    (
        "unknown array item type",
        prop({"type": "array", "items": {"type": "float"}}),
        "field-type",
        f"{F}/items/type",
    ),
    ("array without items", prop({"type": "array"}), "items", f"{F}/items"),
    ("properties a list", lexicon({"main": {"type": "object", "properties": []}}), "properties", ""),
    (
        "empty property name",
        lexicon({"main": {"type": "object", "properties": {"": {"type": "integer"}}}}),
        "properties",
        "defs/main/properties",
    ),
    # formats
    ("unknown format", prop({"type": "string", "format": "email"}), "format", f"{F}/format"),
    ("format not a string", prop({"type": "string", "format": 1}), "format", f"{F}/format"),
    # min > max
    ("integer min > max", prop({"type": "integer", "minimum": 5, "maximum": 4}), "bounds", f"{F}/minimum"),
    ("integer minimum float", prop({"type": "integer", "minimum": 1.5}), "type", f"{F}/minimum"),
    ("string minLength > maxLength", prop({"type": "string", "minLength": 3, "maxLength": 2}), "bounds", ""),
    (
        "string minGraphemes > maxGraphemes",
        prop({"type": "string", "minGraphemes": 3, "maxGraphemes": 2}),
        "bounds",
        f"{F}/minGraphemes",
    ),
    (
        "bytes minLength > maxLength",
        prop({"type": "bytes", "minLength": 3, "maxLength": 2}),
        "bounds",
        f"{F}/minLength",
    ),
    (
        "array minLength > maxLength",
        prop({"type": "array", "items": {"type": "integer"}, "minLength": 3, "maxLength": 2}),
        "bounds",
        f"{F}/minLength",
    ),
    # negative and non-integer lengths
    ("string negative maxLength", prop({"type": "string", "maxLength": -1}), "bounds", f"{F}/maxLength"),
    ("string negative minGraphemes", prop({"type": "string", "minGraphemes": -1}), "bounds", ""),
    ("bytes negative minLength", prop({"type": "bytes", "minLength": -1}), "bounds", f"{F}/minLength"),
    (
        "array negative maxLength",
        prop({"type": "array", "items": {"type": "integer"}, "maxLength": -2}),
        "bounds",
        f"{F}/maxLength",
    ),
    ("string maxLength boolean", prop({"type": "string", "maxLength": True}), "type", f"{F}/maxLength"),
    # const and default together
    ("integer const+default", prop({"type": "integer", "const": 1, "default": 1}), "const-default", ""),
    ("boolean const+default", prop({"type": "boolean", "const": True, "default": True}), "const-default", ""),
    ("string const+default", prop({"type": "string", "const": "a", "default": "a"}), "const-default", ""),
    # default / const / enum values that break the field's own constraints
    ("boolean default not bool", prop({"type": "boolean", "default": "yes"}), "type", f"{F}/default"),
    ("integer default float", prop({"type": "integer", "default": 1.5}), "type", f"{F}/default"),
    ("integer const bool", prop({"type": "integer", "const": True}), "type", f"{F}/const"),
    ("integer enum strings", prop({"type": "integer", "enum": ["1"]}), "type", f"{F}/enum"),
    ("string default int", prop({"type": "string", "default": 1}), "type", f"{F}/default"),
    ("string enum not list", prop({"type": "string", "enum": "a"}), "type", f"{F}/enum"),
    ("knownValues not strings", prop({"type": "string", "knownValues": [1]}), "type", f"{F}/knownValues"),
    (
        "integer default below minimum",
        prop({"type": "integer", "minimum": 1, "default": 0}),
        "default-value",
        f"{F}/default",
    ),
    (
        "integer const above maximum",
        prop({"type": "integer", "maximum": 10, "const": 11}),
        "default-value",
        f"{F}/const",
    ),
    (
        "integer enum outside range",
        prop({"type": "integer", "minimum": 0, "maximum": 10, "enum": [1, 20]}),
        "default-value",
        f"{F}/enum/1",
    ),
    (
        "integer default not in enum",
        prop({"type": "integer", "enum": [1, 2], "default": 3}),
        "default-value",
        f"{F}/default",
    ),
    (
        "string default too long",
        prop({"type": "string", "maxLength": 3, "default": "abcd"}),
        "default-value",
        f"{F}/default",
    ),
    (
        "string const too many graphemes",
        prop({"type": "string", "maxGraphemes": 1, "const": "ab"}),
        "default-value",
        f"{F}/const",
    ),
    (
        "string default breaks format",
        prop({"type": "string", "format": "did", "default": "nope"}),
        "default-value",
        f"{F}/default",
    ),
    (
        "string enum breaks format",
        prop({"type": "string", "format": "nsid", "enum": ["com.example.a", "not an nsid"]}),
        "default-value",
        f"{F}/enum/1",
    ),
    (
        "string default not in enum",
        prop({"type": "string", "enum": ["a", "b"], "default": "c"}),
        "default-value",
        f"{F}/default",
    ),
    # required / nullable names
    (
        "required not a property",
        lexicon({"main": {"type": "object", "required": ["a"], "properties": {}}}),
        "required",
        "defs/main/required/0",
    ),
    (
        "nullable not a property",
        lexicon({"main": {"type": "object", "nullable": ["b"], "properties": {"a": {"type": "integer"}}}}),
        "nullable",
        "defs/main/nullable/0",
    ),
    (
        "required not strings",
        lexicon({"main": {"type": "object", "required": [1], "properties": {}}}),
        "type",
        "defs/main/required",
    ),
    (
        "record required not a property",
        record(record={"type": "object", "required": ["text"], "properties": {}}),
        "required",
        "defs/main/record/required/0",
    ),
    (
        "params required not a property",
        query(parameters=params({"a": {"type": "string"}}, required=["a", "b"])),
        "required",
        "defs/main/parameters/required/1",
    ),
    # record.record and record keys
    ("record record a string", record(record={"type": "string"}), "record", "defs/main/record/type"),
    (
        "record record a ref",
        record(record={"type": "ref", "ref": "#x"}),
        "record",
        "defs/main/record/type",
    ),
    ("record without record", record(record=None), "type", "defs/main/record"),
    ("record key missing", record(key=None), "key", "defs/main/key"),
    ("record key unknown", record(key="uuid"), "key", "defs/main/key"),
    ("record key literal empty", record(key="literal:"), "key", "defs/main/key"),
    ("record key literal dot", record(key="literal:."), "key", "defs/main/key"),
    ("record key literal dotdot", record(key="literal:.."), "key", "defs/main/key"),
    ("record key literal slash", record(key="literal:a/b"), "key", "defs/main/key"),
    ("record key capitalised", record(key="Literal:self"), "key", "defs/main/key"),
    ("record key not a string", record(key=1), "key", "defs/main/key"),
    # blobs
    ("blob maxSize 0", prop({"type": "blob", "maxSize": 0}), "bounds", f"{F}/maxSize"),
    ("blob maxSize negative", prop({"type": "blob", "maxSize": -5}), "bounds", f"{F}/maxSize"),
    ("blob accept not a list", prop({"type": "blob", "accept": "image/*"}), "type", f"{F}/accept"),
]
for _i, _pattern in enumerate(
    ["image", "*", "image/png*", "*/png", "text/ht*", "image/ png", "/png", "image/", "a/b/c", "**/*"]
):
    NEGATIVE.append(
        (
            f"blob accept {_pattern!r}",
            prop({"type": "blob", "accept": ["image/png", _pattern]}),
            "accept",
            f"{F}/accept/1",
        )
    )
NEGATIVE += [
    # unions
    ("closed union without refs", prop({"type": "union", "refs": [], "closed": True}), "refs", f"{F}/refs"),
    ("union without refs", prop({"type": "union"}), "refs", f"{F}/refs"),
    ("union closed not bool", prop({"type": "union", "refs": [], "closed": "yes"}), "type", f"{F}/closed"),
    (
        "duplicate union refs",
        prop({"type": "union", "refs": ["#a", "com.example.test#b", "#a"]}),
        "refs",
        f"{F}/refs",
    ),
    (
        "duplicate union refs after normalising",
        prop({"type": "union", "refs": ["#a", "com.example.test#a"]}),
        "refs",
        f"{F}/refs",
    ),
    (
        "duplicate union refs main",
        prop({"type": "union", "refs": ["com.example.other", "com.example.other#main"]}),
        "refs",
        f"{F}/refs",
    ),
]
for _ref in [
    "#",
    "",
    "a#b#c",
    "#a#b",
    "#a.b",
    "com.example.x#",
    "not an nsid#x",
    "lex:com.example.x",
    5,
    None,
]:
    NEGATIVE.append((f"malformed ref {_ref!r}", prop({"type": "ref", "ref": _ref}), "ref", f"{F}/ref"))
NEGATIVE += [
    (
        "malformed union ref",
        prop({"type": "union", "refs": ["#ok", "#bad#ref"]}),
        "ref",
        f"{F}/refs/1",
    ),
    # params
    (
        "params object property",
        query(parameters=params({"o": {"type": "object", "properties": {}}})),
        "params",
        "defs/main/parameters/properties/o/type",
    ),
    (
        "params unknown property",
        query(parameters=params({"u": {"type": "unknown"}})),
        "params",
        "defs/main/parameters/properties/u/type",
    ),
    (
        "params ref property",
        query(parameters=params({"r": {"type": "ref", "ref": "#x"}})),
        "params",
        "defs/main/parameters/properties/r/type",
    ),
    (
        "params bytes property",
        query(parameters=params({"b": {"type": "bytes"}})),
        "params",
        "defs/main/parameters/properties/b/type",
    ),
    (
        "params array of objects",
        query(parameters=params({"a": {"type": "array", "items": {"type": "object", "properties": {}}}})),
        "params",
        "defs/main/parameters/properties/a/items/type",
    ),
    (
        "params array of arrays",
        query(
            parameters=params(
                {"a": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}
            )
        ),
        "params",
        "defs/main/parameters/properties/a/items/type",
    ),
    (
        "parameters not params",
        query(parameters={"type": "object", "properties": {}}),
        "params",
        "defs/main/parameters/type",
    ),
    # bodies
    (
        "body encoding with parameters",
        procedure(input={"encoding": "application/json;charset=utf-8"}),
        "encoding",
        "defs/main/input/encoding",
    ),
    ("object without properties", prop({"type": "object"}), "properties", f"{F}/properties"),
    (
        "body encoding with a comma",
        procedure(input={"encoding": "application/json,text/plain"}),
        "encoding",
        "defs/main/input/encoding",
    ),
    (
        "body encoding list with space",
        procedure(input={"encoding": "image/png, image/jpeg"}),
        "encoding",
        "defs/main/input/encoding",
    ),
    ("body without encoding", query(output={"schema": {"type": "object"}}), "encoding", ""),
    ("body encoding not mime", query(output={"encoding": "json"}), "encoding", "defs/main/output/encoding"),
    ("body not an object", query(output="application/json"), "body", "defs/main/output"),
    (
        "body schema a string",
        procedure(input={"encoding": "application/json", "schema": {"type": "string"}}),
        "body",
        "defs/main/input/schema/type",
    ),
    (
        "body schema an array",
        query(output={"encoding": "application/json", "schema": {"type": "array", "items": {}}}),
        "body",
        "defs/main/output/schema/type",
    ),
    # subscriptions
    (
        "message schema an object",
        subscription({"schema": {"type": "object", "properties": {}}}),
        "message",
        "defs/main/message/schema/type",
    ),
    (
        "message schema a ref",
        subscription({"schema": {"type": "ref", "ref": "#x"}}),
        "message",
        "defs/main/message/schema/type",
    ),
    ("message not an object", subscription(["#x"]), "message", "defs/main/message"),
    # errors
    ("error without name", query(errors=[{"description": "x"}]), "errors", "defs/main/errors/0"),
    ("error with empty name", query(errors=[{"name": "A"}, {"name": ""}]), "errors", "defs/main/errors/1"),
    ("error a string", procedure(errors=["A"]), "errors", "defs/main/errors/0"),
    ("errors not a list", query(errors={"name": "A"}), "errors", "defs/main/errors"),
    # permission sets
    (
        "permissions missing",
        lexicon({"main": {"type": "permission-set"}}),
        "permissions",
        "defs/main/permissions",
    ),
    (
        "permission of another type",
        lexicon({"main": {"type": "permission-set", "permissions": [{"type": "token", "resource": "repo"}]}}),
        "permissions",
        "defs/main/permissions/0/type",
    ),
    (
        "permission without resource",
        lexicon({"main": {"type": "permission-set", "permissions": [{"type": "permission"}]}}),
        "permissions",
        "defs/main/permissions/0/resource",
    ),
]


@pytest.mark.parametrize(("doc", "rule", "path"), [c[1:] for c in NEGATIVE], ids=[c[0] for c in NEGATIVE])
def test_document_rule(doc: Any, rule: str, path: str) -> None:
    doc = {k: v for k, v in copy.deepcopy(doc).items() if v is not None} if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and isinstance(doc.get("defs"), dict):
        main = doc["defs"].get("main")
        if isinstance(main, dict):  # record(key=None) and friends: None means "leave the key out"
            doc["defs"]["main"] = {k: v for k, v in main.items() if v is not None}
    with pytest.raises(InvalidLexicon) as info:
        parse_document(doc)
    err = info.value
    assert err.rule == rule, (err.rule, err.path, str(err))
    if path:
        assert err.path == path, (err.rule, err.path, str(err))
    else:
        assert err.path.startswith("defs/") or err.rule == "document", err.path
    if isinstance(doc, dict) and type(doc.get("id")) is str and doc["id"] == "com.example.test":
        assert err.lexicon == "com.example.test"
    assert len(str(err)) < 1000


def test_negative_cases_have_unique_names() -> None:
    names = [c[0] for c in NEGATIVE]
    assert len(names) == len(set(names))


# the unfilled paths above, pinned here (kept out of the table to keep the table readable)
@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (prop({"type": "string", "minLength": 3, "maxLength": 2}), f"{F}/minLength"),
        (prop({"type": "string", "minGraphemes": -1}), f"{F}/minGraphemes"),
        (prop({"type": "integer", "const": 1, "default": 1}), f"{F}/default"),
        (query(output={"schema": {"type": "object"}}), "defs/main/output/encoding"),
        (lexicon({"main": {"type": "object", "properties": []}}), "defs/main/properties"),
    ],
)
def test_document_rule_paths(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidLexicon) as info:
        parse_document(doc)
    assert info.value.path == path


def test_oversized_values_are_capped_in_messages() -> None:
    with pytest.raises(InvalidLexicon) as info:
        parse_document(lexicon({"a": {"type": "integer"}}, "x" * 100_000))
    assert info.value.lexicon == "(document)"
    assert len(str(info.value)) < 1000
    with pytest.raises(InvalidLexicon) as info:
        parse_document(prop({"type": "string", "format": "y" * 100_000}))
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    "doc",
    [
        lexicon({"a": {"type": "integer"}}, revision=0),
        lexicon(
            {"main": {"type": "string", "knownValues": ["com.example.test#tok"]}, "tok": {"type": "token"}}
        ),
        prop({"type": "integer", "minimum": 1, "maximum": 1, "default": 1, "enum": [1]}),
        prop({"type": "string", "format": "did", "const": "did:plc:abc"}),
        prop({"type": "string", "maxLength": 3, "knownValues": ["longer than three"]}),  # an open hint
        prop({"type": "blob", "accept": ["*/*", "image/*", "video/mp4"], "maxSize": 1}),
        prop({"type": "union", "refs": []}),  # open and empty: unknown with a $type
        prop({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}),
        prop({"type": "object", "properties": {"x": {"type": "object", "properties": {}}}}),
        prop({"type": "integer", "futureKey": {"anything": True}}),  # unknown keys are ignored
        record(key="literal:self"),
        record(key="nsid"),
        record(key="any"),
        lexicon({"main": {"type": "object", "properties": {"a": {"type": "integer"}}, "nullable": ["a"]}}),
        procedure(input={"encoding": "*/*"}, output={"encoding": "application/vnd.ipld.car"}),
    ],
)
def test_document_rules_accept_legal_edges(doc: dict[str, Any]) -> None:
    parse_document(doc)


def test_refs_are_normalised() -> None:
    doc = parse_document(
        lexicon(
            {
                "main": {
                    "type": "object",
                    "properties": {
                        "local": {"type": "ref", "ref": "#a"},
                        "bare": {"type": "ref", "ref": "com.example.other"},
                        "full": {"type": "ref", "ref": "com.example.other#b"},
                        "u": {"type": "union", "refs": ["#a", "com.example.other"]},
                    },
                }
            }
        )
    )
    main = doc.defs["main"]
    assert isinstance(main, Object)
    refs = {k: getattr(v, "ref", None) or getattr(v, "refs", None) for k, v in main.properties.items()}
    assert refs == {
        "local": "com.example.test#a",
        "bare": "com.example.other#main",
        "full": "com.example.other#b",
        "u": ("com.example.test#a", "com.example.other#main"),
    }


# --- registry rules ---------------------------------------------------------------------


def _target(defs: dict[str, Any]) -> dict[str, Any]:
    return lexicon(defs, "com.example.target")


def _user(field: dict[str, Any]) -> dict[str, Any]:
    return lexicon({"main": {"type": "object", "properties": {"f": field}}}, "com.example.user")


def test_unresolved_ref_at_load() -> None:
    with pytest.raises(InvalidLexicon) as info:
        Registry([_user({"type": "ref", "ref": "com.example.target#missing"})])
    assert (info.value.rule, info.value.path, info.value.lexicon) == (
        "unresolved-ref",
        "defs/main/properties/f/ref",
        "com.example.user",
    )


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ({"type": "ref", "ref": "#nope"}, "defs/main/properties/f/ref"),
        ({"type": "union", "refs": ["com.example.target#a", "#nope"]}, "defs/main/properties/f/refs/1"),
        ({"type": "array", "items": {"type": "ref", "ref": "#nope"}}, "defs/main/properties/f/items/ref"),
        (
            {"type": "object", "properties": {"g": {"type": "ref", "ref": "#nope"}}},
            "defs/main/properties/f/properties/g/ref",
        ),
    ],
)
def test_unresolved_refs_everywhere(field: dict[str, Any], path: str) -> None:
    target = _target({"a": {"type": "object", "properties": {}}})
    with pytest.raises(InvalidLexicon) as info:
        Registry([target, _user(field)])
    assert (info.value.rule, info.value.path) == ("unresolved-ref", path)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (
            record(record={"type": "object", "properties": {"r": {"type": "ref", "ref": "#nope"}}}),
            "defs/main/record/properties/r/ref",
        ),
        (
            query(output={"encoding": "application/json", "schema": {"type": "ref", "ref": "#nope"}}),
            "defs/main/output/schema/ref",
        ),
        (
            procedure(input={"encoding": "application/json", "schema": {"type": "union", "refs": ["#nope"]}}),
            "defs/main/input/schema/refs/0",
        ),
        (subscription({"schema": {"type": "union", "refs": ["#nope"]}}), "defs/main/message/schema/refs/0"),
    ],
)
def test_unresolved_refs_in_primary_defs(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidLexicon) as info:
        Registry([doc])
    assert (info.value.rule, info.value.path) == ("unresolved-ref", path)


def test_failed_batch_leaves_registry_unchanged() -> None:
    registry = Registry([_target({"a": {"type": "object", "properties": {}}})])
    good = lexicon({"main": {"type": "object", "properties": {}}}, "com.example.good")
    bad = _user({"type": "ref", "ref": "com.example.target#missing"})
    with pytest.raises(InvalidLexicon):
        registry.add(good, bad)
    assert len(registry) == 1
    assert list(registry) == ["com.example.target"]
    assert "com.example.good" not in registry
    with pytest.raises(LexiconNotFound):
        registry.get_def("com.example.good")
    with pytest.raises(LexiconNotFound):
        registry.document("com.example.user")
    # a malformed document fails the batch before anything is added
    with pytest.raises(InvalidLexicon):
        registry.add(good, lexicon({}, "com.example.empty"))
    assert "com.example.good" not in registry
    registry.add(good)  # and the good one alone loads afterwards
    assert "com.example.good" in registry
    registry.validate("com.example.good", {})


def test_refs_resolve_within_a_batch_in_any_order() -> None:
    target = _target({"a": {"type": "object", "properties": {"n": {"type": "integer"}}}})
    user = _user({"type": "ref", "ref": "com.example.target#a"})
    registry = Registry([user, target])
    registry.validate("com.example.user", {"f": {"n": 1}})


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ({"a": {"type": "token"}}, "ref-target"),
        ({"main": {"type": "query"}}, "ref-target"),
        ({"main": {"type": "procedure"}}, "ref-target"),
        ({"main": {"type": "subscription"}}, "ref-target"),
        ({"main": {"type": "permission-set", "permissions": []}}, "ref-target"),
    ],
)
def test_refs_to_non_data_defs(target: dict[str, Any], rule: str) -> None:
    name = next(iter(target))
    ref = f"com.example.target#{name}"
    for field, path in [
        ({"type": "ref", "ref": ref}, "defs/main/properties/f/ref"),
        ({"type": "union", "refs": [ref]}, "defs/main/properties/f/refs/0"),
    ]:
        registry = Registry([_target(target)])
        with pytest.raises(InvalidLexicon) as info:
            registry.add(_user(field))
        assert (info.value.rule, info.value.path) == (rule, path)
        assert "com.example.user" not in registry


def test_refs_to_records_and_plain_defs_are_fine() -> None:
    target = lexicon(
        {"main": {"type": "record", "key": "tid", "record": {"type": "object", "properties": {}}}},
        "com.example.target",
    )
    registry = Registry([target, _user({"type": "union", "refs": ["com.example.target"]})])
    registry.validate("com.example.user", {"f": {"$type": "com.example.target"}})
    strings = _target({"s": {"type": "string", "maxLength": 2}})
    registry = Registry([strings, _user({"type": "ref", "ref": "com.example.target#s"})])
    assert isinstance(registry.get_def("com.example.target#s"), String)


def test_duplicate_ids() -> None:
    doc = lexicon({"main": {"type": "object", "properties": {}}}, "com.example.dup")
    with pytest.raises(InvalidLexicon) as info:
        Registry([doc, copy.deepcopy(doc)])
    assert (info.value.rule, info.value.path, info.value.lexicon) == ("duplicate", "id", "com.example.dup")
    registry = Registry([doc])
    with pytest.raises(InvalidLexicon) as info:
        registry.add(doc)
    assert info.value.rule == "duplicate"
    assert len(registry) == 1


def test_shipped_id_is_a_duplicate_in_the_shipped_registry() -> None:
    registry = Registry(builtin_documents())
    shipped = registry.document("com.atproto.repo.strongRef")
    with pytest.raises(InvalidLexicon) as info:
        registry.add(shipped)
    assert info.value.rule == "duplicate"
    assert len(registry) == len(builtin_documents())


def test_registry_lookups() -> None:
    registry = builtin_registry()
    assert registry.get_def("com.atproto.repo.strongRef") is registry.get_def(
        "com.atproto.repo.strongRef#main"
    )
    with pytest.raises(LexiconNotFound):
        registry.document("com.example.none")
    with pytest.raises(LexiconNotFound):
        registry.get_def("com.atproto.repo.strongRef#none")
    with pytest.raises(LexiconNotFound):
        registry.validate_record("com.atproto.repo.strongRef", {})


# --- (4) files on disk --------------------------------------------------------------------


def _write(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


GOOD = lexicon({"main": {"type": "object", "properties": {"n": {"type": "integer"}}}}, "com.example.good")


def test_load_file_and_directory(tmp_path: Path) -> None:
    _write(tmp_path / "b" / "good.json", GOOD)
    _write(tmp_path / "a.json", lexicon({"x": {"type": "token"}}, "com.example.first"))
    _write(tmp_path / "notes.txt", "not a lexicon")
    (tmp_path / "dir.json").mkdir()  # a directory named like a file is skipped
    doc = load_file(tmp_path / "b" / "good.json")
    assert doc.id == "com.example.good"
    docs = load_directory(tmp_path)
    assert [d.id for d in docs] == ["com.example.first", "com.example.good"]
    assert load_directory(str(tmp_path))[1].id == "com.example.good"  # str paths too
    registry = registry_with(docs)
    registry.validate("com.example.good", {"n": 1})


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ("{not json", "json"),
        ('{"lexicon": 1, "id": "com.example.x", "defs": {"a": {"type": "integer"}}', "json"),
        ("[" * 100 + "]" * 100, "json"),  # too deep
        ('{"lexicon": 1, "id": "com.example.x", "defs": {"a": {"type": "integer", "default": NaN}}}', "json"),
        (
            json.dumps(lexicon({"a": {"type": "integer", "minimum": 2, "maximum": 1}}, "com.example.bad")),
            "bounds",
        ),
        (json.dumps(lexicon({"a": {"type": "integer"}}, "bad")), "id"),
        ("[]", "document"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content: str, rule: str) -> None:
    path = _write(tmp_path / "sub" / "broken.json", content)
    _write(tmp_path / "ok.json", GOOD)
    for load in (lambda: load_file(path), lambda: load_directory(tmp_path)):
        with pytest.raises(InvalidLexicon) as info:
            load()
        assert info.value.rule == rule
        assert str(path) in info.value.lexicon
        assert str(path) in str(info.value)


def test_deep_json_document(tmp_path: Path) -> None:
    # nesting the document itself beyond 64 levels (objects inside objects)
    inner: dict[str, Any] = {"type": "integer"}
    for _ in range(70):
        inner = {"type": "object", "properties": {"x": inner}}
    path = _write(tmp_path / "deep.json", lexicon({"main": inner}, "com.example.deep"))
    with pytest.raises(InvalidLexicon) as info:
        load_file(path)
    assert info.value.rule == "json"
    assert "deep" in str(info.value)


def test_oversized_file(tmp_path: Path) -> None:
    big = lexicon({"a": {"type": "integer", "description": "x" * MAX_LEXICON_FILE_BYTES}}, "com.example.big")
    path = _write(tmp_path / "big.json", big)
    with pytest.raises(InvalidLexicon) as info:
        load_file(path)
    assert info.value.rule == "json"
    assert str(path) in str(info.value)


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"lexicon": 1, "id": "com.example.x", "description": "\xe9", "defs": {}}')
    with pytest.raises(InvalidLexicon) as info:
        load_file(path)
    assert info.value.rule == "json"


def test_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as info:
        load_directory(tmp_path / "absent")
    assert "absent" in str(info.value)
    file = _write(tmp_path / "file.json", GOOD)
    with pytest.raises(InputFileError):
        load_directory(file)  # a file is not a directory
    with pytest.raises(InputFileError) as info:
        load_file(tmp_path / "absent.json")
    assert "absent.json" in str(info.value)
    with pytest.raises(InputFileError):
        load_file(tmp_path)  # a directory is not a file
    assert load_directory(_empty(tmp_path)) == []


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def _shipped_json(nsid: str) -> dict[str, Any]:
    parts = nsid.split(".")
    parts[-1] += ".json"
    doc: dict[str, Any] = json.loads(DATA.joinpath(*parts).read_text(encoding="utf-8"))
    return doc


def test_registry_with_replaces_a_shipped_document() -> None:
    raw = _shipped_json("com.atproto.repo.listRecords")
    raw["defs"]["main"]["parameters"]["properties"]["limit"]["default"] = 7
    replaced = registry_with([parse_document(raw)])
    assert len(replaced) == len(builtin_registry())
    params = [("repo", "did:plc:abc"), ("collection", "app.bsky.feed.post")]
    assert endpoint(replaced, "com.atproto.repo.listRecords").parse_params(params)["limit"] == 7
    # the shipped registry and documents are untouched
    assert endpoint(builtin_registry(), "com.atproto.repo.listRecords").parse_params(params)["limit"] == 50
    shipped = builtin_registry().get_def("com.atproto.repo.listRecords")
    assert isinstance(shipped, Query) and shipped.parameters is not None


def test_registry_with_replacement_must_keep_referenced_defs() -> None:
    # app.bsky.feed.post#replyRef etc. are referenced elsewhere; strongRef is referenced everywhere
    stripped = lexicon({"other": {"type": "token"}}, "com.atproto.repo.strongRef")
    with pytest.raises(InvalidLexicon) as info:
        registry_with([parse_document(stripped)])
    assert info.value.rule in {"unresolved-ref", "ref-target"}


def test_registry_with_changes_record_validation() -> None:
    raw = _shipped_json("app.bsky.feed.like")
    raw["defs"]["main"]["record"]["properties"]["note"] = {"type": "string", "maxLength": 3}
    registry = registry_with([parse_document(raw)])
    like = {
        "$type": "app.bsky.feed.like",
        "subject": {"uri": "at://did:plc:abc/app.bsky.feed.post/3k", "cid": _CID},
        "createdAt": "2024-01-01T00:00:00Z",
        "note": "toolong",
    }
    value = datamodel.json_to_value(like)
    builtin_registry().validate_record("app.bsky.feed.like", value)  # note is an unknown extra field there
    with pytest.raises(InvalidLexiconData, match="note"):
        registry.validate_record("app.bsky.feed.like", value)


_CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
