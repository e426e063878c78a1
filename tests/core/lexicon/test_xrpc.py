"""XRPC endpoints checked against their lexicons: parameters, bodies, outputs, subscription messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atrepo.core import limits
from atrepo.core.cid import CID
from atrepo.core.errors import (
    InvalidLexiconData,
    InvalidRequest,
    LexiconNotFound,
    PayloadTooLarge,
)
from atrepo.core.lexicon import Registry
from atrepo.core.lexicon.schema import Procedure, Query, Subscription
from atrepo.core.lexicon.xrpc import JSON_BODY_LIMIT, Endpoint, endpoint
from atrepo.lexicons import builtin_documents, builtin_registry

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID_STR = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
POST_URI = f"at://{DID}/app.bsky.feed.post/3k2akdwn2by2d"
JSON = "application/json"


def shipped(nsid: str) -> Endpoint:
    return endpoint(builtin_registry(), nsid)


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# A small lexicon set of our own: every parameter kind, and bodies with defaults at every depth.
TEST_DOCS: list[dict[str, Any]] = [
    {
        "lexicon": 1,
        "id": "com.example.test.params",
        "defs": {
            "main": {
                "type": "query",
                "parameters": {
                    "type": "params",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 5},
                        "count": {"type": "integer", "minimum": -10, "maximum": 10, "default": 3},
                        "flag": {"type": "boolean", "default": False},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "did": {"type": "string", "format": "did"},
                        "nums": {
                            "type": "array",
                            "items": {"type": "integer", "maximum": 100},
                            "minLength": 2,
                            "maxLength": 3,
                        },
                        "flags": {"type": "array", "items": {"type": "boolean"}},
                        "dids": {"type": "array", "items": {"type": "string", "format": "did"}},
                    },
                },
                "output": {"encoding": JSON, "schema": {"type": "ref", "ref": "com.example.test.defs#thing"}},
            }
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.test.defs",
        "defs": {
            "thing": {
                "type": "object",
                "required": ["size"],
                "nullable": ["label"],
                "properties": {
                    "size": {"type": "integer", "default": 1},
                    "label": {"type": "string", "default": "none"},
                    "child": {"type": "ref", "ref": "#thing"},  # recursive
                },
            },
            "other": {
                "type": "object",
                "properties": {"on": {"type": "boolean", "default": True}},
            },
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.test.procedure",
        "defs": {
            "main": {
                "type": "procedure",
                "input": {
                    "encoding": JSON,
                    "schema": {
                        "type": "object",
                        "required": ["items"],
                        "properties": {
                            "mode": {"type": "string", "default": "fast", "knownValues": ["fast", "slow"]},
                            "items": {
                                "type": "array",
                                "items": {"type": "ref", "ref": "com.example.test.defs#thing"},
                            },
                            "pick": {
                                "type": "union",
                                "refs": ["com.example.test.defs#thing", "com.example.test.defs#other"],
                            },
                            "link": {"type": "cid-link"},
                            "data": {"type": "bytes"},
                        },
                    },
                },
                "output": {"encoding": "text/plain"},
            }
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.test.stream",
        "defs": {
            "main": {
                "type": "subscription",
                "message": {"schema": {"type": "union", "refs": ["#tick"], "closed": True}},
            },
            "tick": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
        },
    },
    {
        "lexicon": 1,
        "id": "com.example.test.bare",
        "defs": {"main": {"type": "query"}},
    },
]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(TEST_DOCS)


@pytest.fixture(scope="module")
def ep_params(reg: Registry) -> Endpoint:
    return endpoint(reg, "com.example.test.params")


def raises_request(fn: Any, *args: Any, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        fn(*args, **kwargs)
    return info.value


# --- endpoint() -------------------------------------------------------------------------


def test_endpoint_attributes() -> None:
    ep = shipped("com.atproto.repo.listRecords")
    assert (ep.nsid, ep.kind, ep.http_method) == ("com.atproto.repo.listRecords", "query", "GET")
    assert ep.input is None
    assert ep.output is not None and ep.output.encoding == JSON
    assert ep.errors == ()
    ep = shipped("com.atproto.repo.createRecord")
    assert (ep.kind, ep.http_method) == ("procedure", "POST")
    assert ep.input is not None and ep.input.encoding == JSON
    assert "InvalidSwap" in ep.errors
    ep = shipped("com.atproto.sync.subscribeRepos")
    assert (ep.kind, ep.http_method) == ("subscription", "GET")
    assert ep.errors == ("FutureCursor", "ConsumerTooSlow")
    assert ep.input is None and ep.output is None
    assert shipped("com.atproto.repo.getRecord").errors == ("RecordNotFound",)


@pytest.mark.parametrize(
    "nsid",
    [
        "app.bsky.feed.post",
        "com.atproto.repo.strongRef",
        "app.bsky.actor.defs#profileView",
        "com.example.none",
    ],
)
def test_endpoint_of_a_non_method(nsid: str) -> None:
    with pytest.raises(LexiconNotFound) as info:
        shipped(nsid)
    assert nsid in str(info.value)


def test_endpoint_of_a_record_names_it_as_method() -> None:
    with pytest.raises(LexiconNotFound, match=r"XRPC method: app\.bsky\.feed\.post"):
        shipped("app.bsky.feed.post")


def _methods() -> list[str]:
    return sorted(
        doc.id for doc in builtin_documents() if isinstance(doc.main, Query | Procedure | Subscription)
    )


def test_shipped_set_has_many_methods() -> None:
    methods = _methods()
    assert len(methods) > 300
    assert "com.atproto.sync.subscribeRepos" in methods


@pytest.mark.parametrize("nsid", _methods())
def test_every_shipped_method_builds_and_parses_empty_params(nsid: str) -> None:
    ep = shipped(nsid)
    params = ep.schema.parameters
    required = params.required if params is not None else ()
    try:
        out = ep.parse_params({})
    except InvalidRequest as exc:
        assert exc.rule == "required"
        assert exc.path in required
        assert exc.path in str(exc)
        assert exc.to_xrpc()[0] == 400
        return
    assert isinstance(out, dict)
    assert not required
    if params is None:
        assert out == {}
    else:  # only defaults come back
        assert set(out) <= set(params.properties)
        for name, value in out.items():
            assert value == getattr(params.properties[name], "default", object())


# --- parameters ------------------------------------------------------------------------------

LIST = [("repo", DID), ("collection", "app.bsky.feed.post")]


def test_list_records_params() -> None:
    ep = shipped("com.atproto.repo.listRecords")
    assert ep.parse_params(LIST) == {"repo": DID, "collection": "app.bsky.feed.post", "limit": 50}
    out = ep.parse_params([*LIST, ("limit", "10"), ("reverse", "true"), ("cursor", "abc")])
    assert out == {
        "repo": DID,
        "collection": "app.bsky.feed.post",
        "limit": 10,
        "reverse": True,
        "cursor": "abc",
    }
    assert type(out["limit"]) is int and type(out["reverse"]) is bool


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("-3", -3), ("0", 0), ("007", 7), ("-0", 0)])
def test_integer_params_ok(ep_params: Endpoint, text: str, value: int) -> None:
    assert ep_params.parse_params({"name": "x", "count": text})["count"] == value


@pytest.mark.parametrize(
    "text", ["1e3", "0x10", " 5", "5 ", "5abc", "+5", "1.0", "1_0", "٣", "--1", "-", "true", "0b1", "５"]
)
def test_integer_params_rejected(ep_params: Endpoint, text: str) -> None:
    err = raises_request(ep_params.parse_params, {"name": "x", "count": text})
    assert (err.path, err.rule) == ("count", "type")
    assert "count" in str(err)


def test_integer_param_outside_safe_range() -> None:
    ep = shipped("com.atproto.sync.subscribeRepos")
    assert ep.parse_params({"cursor": str(limits.MAX_SAFE_INT)}) == {"cursor": limits.MAX_SAFE_INT}
    err = raises_request(ep.parse_params, {"cursor": str(limits.MAX_SAFE_INT + 1)})
    assert err.path == "cursor"
    assert err.rule == "range"
    err = raises_request(ep.parse_params, {"cursor": "9" * 400})  # no huge int() conversion
    assert err.path == "cursor"


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_boolean_params_ok(ep_params: Endpoint, text: str, value: bool) -> None:
    assert ep_params.parse_params({"name": "x", "flag": text})["flag"] is value


@pytest.mark.parametrize("text", ["True", "FALSE", "1", "0", "yes", "t", " true"])
def test_boolean_params_rejected(ep_params: Endpoint, text: str) -> None:
    err = raises_request(ep_params.parse_params, {"name": "x", "flag": text})
    assert (err.path, err.rule) == ("flag", "type")


def test_param_defaults(ep_params: Endpoint) -> None:
    assert ep_params.parse_params({"name": "x"}) == {"name": "x", "count": 3, "flag": False, "mode": "a"}
    out = ep_params.parse_params({"name": "x", "count": "-10", "flag": "true", "mode": "b"})
    assert out == {"name": "x", "count": -10, "flag": True, "mode": "b"}


def test_array_params_from_repeated_keys(ep_params: Endpoint) -> None:
    out = ep_params.parse_params([("name", "x"), ("nums", "1"), ("nums", "-2"), ("nums", "3")])
    assert out["nums"] == [1, -2, 3]
    out = ep_params.parse_params({"name": "x", "nums": ["4", "5"], "flags": ["true", "false", "true"]})
    assert out["nums"] == [4, 5]
    assert out["flags"] == [True, False, True]
    # a single occurrence is a one-element list
    assert ep_params.parse_params({"name": "x", "flags": "false"})["flags"] == [False]
    assert ep_params.parse_params([("name", "x"), ("dids", DID)])["dids"] == [DID]


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        (["1"], "minLength"),
        (["1", "2", "3", "4"], "maxLength"),
        (["1", "x"], "type"),
        (["1", "1.5"], "type"),
        (["1", "101"], "maximum"),
    ],
)
def test_array_param_violations(ep_params: Endpoint, values: list[str], rule: str) -> None:
    err = raises_request(ep_params.parse_params, [("name", "x"), *(("nums", v) for v in values)])
    assert (err.path, err.rule) == ("nums", rule)


def test_array_param_item_format(ep_params: Endpoint) -> None:
    err = raises_request(ep_params.parse_params, [("name", "x"), ("dids", DID), ("dids", "not-a-did")])
    assert (err.path, err.rule) == ("dids", "format")
    err = raises_request(ep_params.parse_params, [("name", "x"), ("flags", "true"), ("flags", "1")])
    assert (err.path, err.rule) == ("flags", "type")


def test_shipped_array_params() -> None:
    ep = shipped("app.bsky.feed.getPosts")
    assert ep.parse_params([("uris", POST_URI)]) == {"uris": [POST_URI]}
    err = raises_request(ep.parse_params, [("uris", POST_URI)] * 26)
    assert (err.path, err.rule) == ("uris", "maxLength")
    err = raises_request(ep.parse_params, [("uris", POST_URI), ("uris", "https://example.com")])
    assert (err.path, err.rule) == ("uris", "format")
    ep = shipped("com.atproto.sync.getBlocks")
    out = ep.parse_params([("did", DID), ("cids", CID_STR), ("cids", CID_STR)])
    assert out == {"did": DID, "cids": [CID_STR, CID_STR]}


@pytest.mark.parametrize("name", ["count", "flag", "name", "mode", "did"])
def test_repeated_scalar_rejected(ep_params: Endpoint, name: str) -> None:
    values = {"count": "1", "flag": "true", "name": "x", "mode": "a", "did": DID}
    query = [("name", "x"), (name, values[name]), (name, values[name])]
    err = raises_request(ep_params.parse_params, query)
    assert (err.path, err.rule) == (name, "repeated")
    err = raises_request(
        shipped("com.atproto.repo.listRecords").parse_params, [*LIST, ("limit", "1"), ("limit", "2")]
    )
    assert (err.path, err.rule) == ("limit", "repeated")


def test_empty_values_count_as_absent(ep_params: Endpoint) -> None:
    out = ep_params.parse_params([("name", "x"), ("count", ""), ("flag", ""), ("nums", ""), ("did", "")])
    assert out == {"name": "x", "count": 3, "flag": False, "mode": "a"}
    # an empty occurrence next to a real one is dropped, so the scalar is not "repeated"
    assert ep_params.parse_params([("name", "x"), ("count", ""), ("count", "4")])["count"] == 4
    out = ep_params.parse_params([("name", "x"), ("nums", "1"), ("nums", ""), ("nums", "2")])
    assert out["nums"] == [1, 2]
    ep = shipped("com.atproto.repo.listRecords")
    assert "cursor" not in ep.parse_params([*LIST, ("cursor", "")])
    # and an empty required parameter is missing
    err = raises_request(ep_params.parse_params, {"name": ""})
    assert (err.path, err.rule) == ("name", "required")


def test_required_params_missing() -> None:
    ep = shipped("com.atproto.repo.listRecords")
    err = raises_request(ep.parse_params, [("collection", "app.bsky.feed.post")])
    assert (err.path, err.rule) == ("repo", "required")
    assert "com.atproto.repo.listRecords" in str(err)
    assert err.to_xrpc() == (400, {"error": "InvalidRequest", "message": str(err)})
    err = raises_request(ep.parse_params, [("repo", DID)])
    assert (err.path, err.rule) == ("collection", "required")


def test_undeclared_params_ignored(reg: Registry, ep_params: Endpoint) -> None:
    out = ep_params.parse_params([("name", "x"), ("other", "1"), ("other", "2"), ("nums[]", "1")])
    assert "other" not in out and "nums[]" not in out and "nums" not in out
    bare = endpoint(reg, "com.example.test.bare")
    assert bare.parse_params([("anything", "1")]) == {}
    assert shipped("com.atproto.server.describeServer").parse_params({"x": ["1", "2"]}) == {}


@pytest.mark.parametrize(
    ("query", "path", "rule"),
    [
        ([*LIST, ("limit", "0")], "limit", "minimum"),
        ([*LIST, ("limit", "101")], "limit", "maximum"),
        ([("repo", "not a handle"), ("collection", "app.bsky.feed.post")], "repo", "format"),
        ([("repo", DID), ("collection", "feed")], "collection", "format"),
        ([*LIST, ("reverse", "yes")], "reverse", "type"),
    ],
)
def test_param_violations_name_the_parameter(query: list[tuple[str, str]], path: str, rule: str) -> None:
    err = raises_request(shipped("com.atproto.repo.listRecords").parse_params, query)
    assert (err.path, err.rule) == (path, rule)
    assert str(err).startswith(f"Invalid com.atproto.repo.listRecords params: {path}:")


def test_string_param_constraints(ep_params: Endpoint) -> None:
    assert ep_params.parse_params({"name": "abcde"})["name"] == "abcde"
    err = raises_request(ep_params.parse_params, {"name": "abcdef"})
    assert (err.path, err.rule) == ("name", "maxLength")
    err = raises_request(ep_params.parse_params, {"name": "x", "mode": "c"})
    assert (err.path, err.rule) == ("mode", "enum")
    err = raises_request(ep_params.parse_params, {"name": "\ud800"})
    assert (err.path, err.rule) == ("name", "type")
    assert ep_params.parse_params({"name": "é"})["name"] == "é"


def test_params_error_messages_stay_small(ep_params: Endpoint) -> None:
    err = raises_request(ep_params.parse_params, {"name": "x", "count": "7" * 100_000})
    assert len(str(err)) < 1000
    err = raises_request(ep_params.parse_params, {"name": "x", "did": "d" * 100_000})
    assert len(str(err)) < 1000


# --- input bodies --------------------------------------------------------------------------

CREATE = {"repo": DID, "collection": "app.bsky.feed.post", "record": {"text": "hi"}}


def test_no_body_expected() -> None:
    ep = shipped("com.atproto.repo.describeRepo")
    assert ep.parse_input(None, None) is None
    assert ep.parse_input(JSON, b"") is None  # Content-Length: 0 is fine
    err = raises_request(ep.parse_input, JSON, b"{}")
    assert err.rule == "body"
    assert "none was expected" in str(err)
    err = raises_request(shipped("com.atproto.server.activateAccount").parse_input, JSON, b"{}")
    assert err.rule == "body"  # a procedure without input


def test_body_expected_but_none() -> None:
    ep = shipped("com.atproto.repo.createRecord")
    for empty in (None, b""):
        err = raises_request(ep.parse_input, JSON, empty)
        assert err.rule == "body"
        assert "A request body is expected but none was provided" in str(err)


@pytest.mark.parametrize("content_type", [None, ""])
def test_content_type_missing(content_type: str | None) -> None:
    err = raises_request(shipped("com.atproto.repo.createRecord").parse_input, content_type, body(CREATE))
    assert err.rule == "encoding"
    assert "Content-Type" in str(err)


@pytest.mark.parametrize("content_type", ["text/plain", "application/jsonx", "application/*", "*/*", "json"])
def test_content_type_wrong(content_type: str) -> None:
    err = raises_request(shipped("com.atproto.repo.createRecord").parse_input, content_type, body(CREATE))
    assert err.rule == "encoding"
    assert str(err).startswith("Wrong request encoding (Content-Type)")


@pytest.mark.parametrize(
    "content_type",
    [JSON, "application/json; charset=utf-8", "Application/JSON", " application/json ;charset=UTF-8"],
)
def test_content_type_with_charset(content_type: str) -> None:
    assert shipped("com.atproto.repo.createRecord").parse_input(content_type, body(CREATE)) == CREATE


@pytest.mark.parametrize(
    "content_type", ["image/png", "application/octet-stream", JSON, "text/plain; charset=utf-8"]
)
def test_any_encoding_endpoint_gets_bytes(content_type: str) -> None:
    ep = shipped("com.atproto.repo.uploadBlob")
    assert ep.input is not None and ep.input.encoding == "*/*"
    for data in (b"\x89PNG\r\n", b'{"a": 1.5}', b"[1, 2]", b"x" * (JSON_BODY_LIMIT + 1)):
        out = ep.parse_input(content_type, data)
        assert out == data and type(out) is bytes


def test_car_endpoint() -> None:
    ep = shipped("com.atproto.repo.importRepo")
    assert ep.parse_input("application/vnd.ipld.car", b"\x0a\xa1") == b"\x0a\xa1"
    err = raises_request(ep.parse_input, JSON, b"{}")
    assert err.rule == "encoding"


def test_json_over_the_limit() -> None:
    ep = shipped("com.atproto.repo.createRecord")
    big = {**CREATE, "record": {"text": "x" * JSON_BODY_LIMIT}}
    with pytest.raises(PayloadTooLarge) as info:
        ep.parse_input(JSON, body(big))
    status, reply = info.value.to_xrpc()
    assert status == 413
    assert reply["error"] == "PayloadTooLarge"
    assert isinstance(info.value, InvalidRequest)
    # a route may raise its limit
    assert (
        ep.parse_input(JSON, body(big), max_json_bytes=1_000_000)["record"]["text"] == "x" * JSON_BODY_LIMIT
    )
    # and lower it
    with pytest.raises(PayloadTooLarge):
        ep.parse_input(JSON, body(CREATE), max_json_bytes=10)
    exact = body(CREATE)
    assert ep.parse_input(JSON, exact, max_json_bytes=len(exact)) == CREATE


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b'{"repo": 1.5}',
        b'{"a": NaN}',
        b"\xff\xfe",
        b'{"a": {"$link": "nope"}}',
        b'{"a": {"$bytes": "!!"}}',
        b"[" * 200 + b"]" * 200,
    ],
)
def test_invalid_json(data: bytes) -> None:
    err = raises_request(shipped("com.atproto.repo.createRecord").parse_input, JSON, data)
    assert err.rule == "json"
    assert not isinstance(err, PayloadTooLarge)
    assert err.to_xrpc()[0] == 400


@pytest.mark.parametrize(
    ("value", "path", "rule"),
    [
        ({"collection": "app.bsky.feed.post", "record": {}}, "repo", "required"),
        ({"repo": DID, "record": {}}, "collection", "required"),
        ({"repo": DID, "collection": "app.bsky.feed.post"}, "record", "required"),
        ({**CREATE, "repo": "not a handle"}, "repo", "format"),
        ({**CREATE, "repo": 5}, "repo", "type"),
        ({**CREATE, "record": "text"}, "record", "type"),
        ({**CREATE, "validate": "true"}, "validate", "type"),
        ({**CREATE, "rkey": "a" * 513}, "rkey", "maxLength"),
        ({**CREATE, "swapCommit": "nope"}, "swapCommit", "format"),
        ({**CREATE, "repo": None}, "repo", "nullable"),
    ],
)
def test_create_record_schema_failures(value: dict[str, Any], path: str, rule: str) -> None:
    err = raises_request(shipped("com.atproto.repo.createRecord").parse_input, JSON, body(value))
    assert (err.path, err.rule) == (path, rule)
    assert str(err).startswith(f"Invalid com.atproto.repo.createRecord input at {path}: ")
    assert err.to_xrpc() == (400, {"error": "InvalidRequest", "message": str(err)})


def test_nested_body_paths() -> None:
    ep = shipped("com.atproto.repo.applyWrites")
    create = {"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": {}}
    ok = {"repo": DID, "writes": [create, {**create, "rkey": "abc"}]}
    assert ep.parse_input(JSON, body(ok)) == ok
    bad = {"repo": DID, "writes": [create, {**create, "collection": "nope"}]}
    err = raises_request(ep.parse_input, JSON, body(bad))
    assert (err.path, err.rule) == ("writes/1/collection", "format")
    closed = {"repo": DID, "writes": [{**create, "$type": "com.example.other"}]}
    err = raises_request(ep.parse_input, JSON, body(closed))
    assert (err.path, err.rule) == ("writes/0/$type", "closed-union")


def test_body_values_are_data_model() -> None:
    ep = shipped("com.atproto.repo.createRecord")
    record = {"text": "hi", "link": {"$link": CID_STR}, "raw": {"$bytes": "aGk="}}
    out = ep.parse_input(JSON, body({**CREATE, "record": record}))
    assert isinstance(out["record"]["link"], CID)
    assert out["record"]["raw"] == b"hi"
    assert out["record"]["text"] == "hi"


def test_body_defaults_shipped() -> None:
    # codeCount is required *and* has a default: the reference fills it in before validating
    ep = shipped("com.atproto.server.createInviteCodes")
    assert ep.parse_input(JSON, body({"useCount": 2})) == {"useCount": 2, "codeCount": 1}
    assert ep.parse_input(JSON, body({"useCount": 2, "codeCount": 5})) == {"useCount": 2, "codeCount": 5}
    err = raises_request(ep.parse_input, JSON, body({"codeCount": 5}))
    assert (err.path, err.rule) == ("useCount", "required")
    ep = shipped("tools.ozone.safelink.queryRules")
    assert ep.parse_input(JSON, b"{}") == {"limit": 50, "sortDirection": "desc"}
    assert ep.parse_input(JSON, body({"limit": 3}))["limit"] == 3


def test_body_defaults_nested(reg: Registry) -> None:
    ep = endpoint(reg, "com.example.test.procedure")
    sent = {
        "items": [{}, {"size": 7, "label": None}, {"size": 2, "child": {"size": 3, "label": "c"}}],
        "pick": {"$type": "com.example.test.defs#other"},
    }
    out = ep.parse_input(JSON, body(sent))
    assert out == {
        "mode": "fast",
        "items": [
            {"size": 1, "label": "none"},
            {"size": 7, "label": None},  # null in a nullable field stays null
            {"size": 2, "label": "none", "child": {"size": 3, "label": "c"}},
        ],
        "pick": {"$type": "com.example.test.defs#other", "on": True},
    }
    out = ep.parse_input(JSON, body({"items": [], "pick": {"$type": "com.example.test.defs#thing"}}))
    assert out["pick"] == {"$type": "com.example.test.defs#thing", "size": 1, "label": "none"}
    # an open union member we don't know is left alone
    out = ep.parse_input(JSON, body({"items": [], "pick": {"$type": "com.example.unknown", "x": 1}}))
    assert out["pick"] == {"$type": "com.example.unknown", "x": 1}


def test_body_defaults_in_recursive_defs(reg: Registry) -> None:
    ep = endpoint(reg, "com.example.test.procedure")
    out = ep.parse_input(JSON, body({"items": [{"size": 2, "child": {"child": {}}}]}))
    assert out["items"][0] == {
        "size": 2,
        "label": "none",
        "child": {"size": 1, "label": "none", "child": {"size": 1, "label": "none"}},
    }


def test_body_defaults_do_not_hide_errors(reg: Registry) -> None:
    ep = endpoint(reg, "com.example.test.procedure")
    err = raises_request(ep.parse_input, JSON, body({"items": [{}, {"size": "big"}]}))
    assert (err.path, err.rule) == ("items/1/size", "type")
    err = raises_request(ep.parse_input, JSON, body({"items": [{"size": None}]}))
    assert (err.path, err.rule) == ("items/0/size", "nullable")
    err = raises_request(ep.parse_input, JSON, body({"items": "many"}))
    assert (err.path, err.rule) == ("items", "type")
    err = raises_request(ep.parse_input, JSON, body({"mode": "fast"}))
    assert (err.path, err.rule) == ("items", "required")
    err = raises_request(ep.parse_input, JSON, body({"items": [], "pick": {"size": 1}}))
    assert (err.path, err.rule) == ("pick/$type", "$type")
    err = raises_request(ep.parse_input, JSON, body({"items": [], "link": "bafy"}))
    assert (err.path, err.rule) == ("link", "type")


def test_text_output_endpoint_has_no_output_check(reg: Registry) -> None:
    ep = endpoint(reg, "com.example.test.procedure")
    assert ep.output is not None and ep.output.encoding == "text/plain"
    ep.check_output("anything")  # no schema, nothing to check


# --- outputs ----------------------------------------------------------------------------

DESCRIBE = {
    "handle": "alice.example.com",
    "did": DID,
    "didDoc": {"id": DID},
    "collections": ["app.bsky.feed.post"],
    "handleIsCorrect": True,
}


def test_describe_repo_output() -> None:
    ep = shipped("com.atproto.repo.describeRepo")
    ep.check_output(DESCRIBE)
    ep.check_output({**DESCRIBE, "extra": [1, 2]})  # extra fields are fine


@pytest.mark.parametrize(
    ("change", "path", "rule"),
    [
        ({"handleIsCorrect": None}, "handleIsCorrect", "nullable"),
        ({"handleIsCorrect": "yes"}, "handleIsCorrect", "type"),
        ({"did": "alice"}, "did", "format"),
        ({"handle": "-bad-"}, "handle", "format"),
        ({"collections": ["app.bsky.feed.post", "nope"]}, "collections/1", "format"),
        ({"didDoc": "did"}, "didDoc", "type"),
    ],
)
def test_describe_repo_output_invalid(change: dict[str, Any], path: str, rule: str) -> None:
    ep = shipped("com.atproto.repo.describeRepo")
    with pytest.raises(InvalidLexiconData) as info:
        ep.check_output({**DESCRIBE, **change})
    assert (info.value.path, info.value.rule, info.value.nsid) == (
        path,
        rule,
        "com.atproto.repo.describeRepo",
    )
    assert info.value.to_xrpc()[0] == 400


def test_describe_repo_output_missing_field() -> None:
    value = {k: v for k, v in DESCRIBE.items() if k != "handleIsCorrect"}
    with pytest.raises(InvalidLexiconData) as info:
        shipped("com.atproto.repo.describeRepo").check_output(value)
    assert (info.value.path, info.value.rule) == ("handleIsCorrect", "required")
    assert "output" in str(info.value)


def test_get_record_output() -> None:
    ep = shipped("com.atproto.repo.getRecord")
    uri = f"at://{DID}/app.bsky.feed.post/3k2akdwn2by2d"
    ep.check_output({"uri": uri, "cid": CID_STR, "value": {"$type": "app.bsky.feed.post", "text": "hi"}})
    ep.check_output({"uri": uri, "value": {}})
    for bad, path, rule in [
        ({"uri": uri}, "value", "required"),
        ({"uri": uri, "value": []}, "value", "type"),
        ({"uri": "https://example.com", "value": {}}, "uri", "format"),
        ({"uri": uri, "cid": "nope", "value": {}}, "cid", "format"),
        ([], "", "type"),
    ]:
        with pytest.raises(InvalidLexiconData) as info:
            ep.check_output(bad)
        assert (info.value.path, info.value.rule) == (path, rule)


def test_output_without_schema() -> None:
    shipped("com.atproto.sync.getBlocks").check_output(b"car bytes")
    shipped("com.atproto.sync.subscribeRepos").check_output({"anything": 1})


# --- subscription messages ---------------------------------------------------------------

IDENTITY = {"seq": 1, "did": DID, "time": "2024-01-01T00:00:00.000Z", "handle": "alice.example.com"}
ACCOUNT = {"seq": 2, "did": DID, "time": "2024-01-01T00:00:00Z", "active": False, "status": "takendown"}


def test_subscribe_repos_messages() -> None:
    ep = shipped("com.atproto.sync.subscribeRepos")
    assert ep.check_message("#identity", IDENTITY) is True
    assert ep.check_message("#identity", {k: IDENTITY[k] for k in ("seq", "did", "time")}) is True
    assert ep.check_message("#account", ACCOUNT) is True
    assert ep.check_message("#account", {**ACCOUNT, "status": "something-new"}) is True  # knownValues: open
    assert ep.check_message("#info", {"name": "OutdatedCursor"}) is True
    # an unlisted type of an open union: consumers skip it
    assert ep.check_message("#foo", {}) is False
    assert ep.check_message("#foo", "not even an object") is False


@pytest.mark.parametrize(
    ("kind", "message", "path", "rule"),
    [
        ("#identity", {**IDENTITY, "did": "nope"}, "did", "format"),
        ("#identity", {**IDENTITY, "time": "2024-01-01"}, "time", "format"),
        ("#identity", {**IDENTITY, "seq": "1"}, "seq", "type"),
        ("#identity", {"did": DID, "time": IDENTITY["time"]}, "seq", "required"),
        ("#account", {k: v for k, v in ACCOUNT.items() if k != "active"}, "active", "required"),
        ("#account", {**ACCOUNT, "active": "false"}, "active", "type"),
        ("#account", {**ACCOUNT, "$type": "com.atproto.sync.subscribeRepos#identity"}, "$type", "$type"),
        ("#identity", [], "", "type"),
    ],
)
def test_subscribe_repos_bad_messages(kind: str, message: Any, path: str, rule: str) -> None:
    ep = shipped("com.atproto.sync.subscribeRepos")
    with pytest.raises(InvalidLexiconData) as info:
        ep.check_message(kind, message)
    assert (info.value.path, info.value.rule) == (path, rule)
    assert kind in str(info.value)


def test_closed_message_union(reg: Registry) -> None:
    ep = endpoint(reg, "com.example.test.stream")
    assert ep.check_message("#tick", {"n": 1}) is True
    with pytest.raises(InvalidLexiconData) as info:
        ep.check_message("#tock", {"n": 1})
    assert info.value.rule == "closed-union"
    with pytest.raises(InvalidLexiconData) as info:
        ep.check_message("#tick", {})
    assert (info.value.path, info.value.rule) == ("n", "required")


def test_message_types_of_other_lexicons_use_their_full_name() -> None:
    """A frame header names a def of the subscription's own lexicon "#name", any other "nsid#name"."""
    reg = Registry(
        [
            *TEST_DOCS,
            {
                "lexicon": 1,
                "id": "com.example.test.mixed",
                "defs": {
                    "main": {
                        "type": "subscription",
                        "message": {
                            "schema": {
                                "type": "union",
                                "refs": ["#tick", "com.example.test.stream#tick"],
                                "closed": True,
                            }
                        },
                    },
                    "tick": {"type": "object", "properties": {"s": {"type": "string"}}},
                },
            },
        ]
    )
    ep = endpoint(reg, "com.example.test.mixed")
    assert ep.check_message("#tick", {"s": "local"}) is True
    assert ep.check_message("com.example.test.stream#tick", {"n": 1}) is True
    with pytest.raises(InvalidLexiconData) as info:
        ep.check_message("com.example.test.stream#tick", {"s": "no n"})
    assert info.value.rule == "required"
    with pytest.raises(InvalidLexiconData):  # closed: an unlisted type is an error, not a skip
        ep.check_message("#other", {})


def test_check_message_on_non_subscriptions() -> None:
    with pytest.raises(LexiconNotFound):
        shipped("com.atproto.repo.listRecords").check_message("#commit", {})


# --- errors -----------------------------------------------------------------------------------


def test_error_replies() -> None:
    err = InvalidRequest("bad things", path="limit", rule="maximum")
    assert err.to_xrpc() == (400, {"error": "InvalidRequest", "message": "bad things"})
    too_big = PayloadTooLarge("request entity too large")
    assert too_big.to_xrpc() == (413, {"error": "PayloadTooLarge", "message": "request entity too large"})
    assert (too_big.path, too_big.rule) == ("", None)
    data_err = InvalidLexiconData("com.example.x", "output", "a/b", "type", "expected an integer")
    assert data_err.to_xrpc() == (
        400,
        {"error": "InvalidRequest", "message": "Invalid com.example.x output at a/b: expected an integer"},
    )
