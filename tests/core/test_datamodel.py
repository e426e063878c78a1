"""The AT data model: interop fixtures, JSON <-> value conversion, validation rules."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.cid import CID
from atrepo.core.datamodel import (
    json_to_value,
    parse_json,
    record_cid,
    validate_record,
    validate_value,
    value_to_json,
)
from atrepo.core.errors import InvalidCID, InvalidDataModel
from atrepo.core.jsonio import json_depth_exceeds, parse_outside_json
from atrepo.core.multibase import b58encode

FIXTURES = Path(__file__).parent.parent / "interop" / "data-model"
RAW_CID = "bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"
DAG_CID = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"


def _load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text("utf-8"))
    return data


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _via_text(obj: Any) -> Any:
    """What a JSON value looks like after being written out and read back."""
    return json.loads(json.dumps(obj))


def blob(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"$type": "blob", "ref": {"$link": RAW_CID}, "mimeType": "image/png", "size": 10}
    value.update(changes)
    return {key: item for key, item in value.items() if item is not _MISSING}


_MISSING = object()


# --- interop fixtures --------------------------------------------------------------

FIXTURE_CASES = _load("data-model-fixtures.json")
VALID_CASES = _load("data-model-valid.json")
INVALID_CASES = _load("data-model-invalid.json")


def test_fixture_files_are_present() -> None:
    assert len(FIXTURE_CASES) >= 3
    assert len(VALID_CASES) >= 5
    assert len(INVALID_CASES) >= 12


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=lambda c: c["cid"])
def test_fixture_bytes_and_cid(case: dict[str, Any]) -> None:
    value = json_to_value(case["json"])
    data = cbor.encode(value)
    assert data == _b64(case["cbor_base64"])
    assert str(CID.for_dag_cbor(data)) == case["cid"]
    assert str(record_cid(value)) == case["cid"]
    decoded = cbor.decode(data)
    assert decoded == value
    validate_value(decoded, top_level_object=True)
    assert value_to_json(decoded) == case["json"]
    assert _via_text(value_to_json(decoded)) == case["json"]
    assert parse_json(json.dumps(case["json"])) == value


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda c: c["note"])
def test_valid_cases(case: dict[str, Any]) -> None:
    value = json_to_value(case["json"])
    validate_value(value, top_level_object=True)
    assert parse_json(json.dumps(case["json"])) == value
    data = cbor.encode(value)
    back = value_to_json(cbor.decode(data))
    assert back == case["json"]  # 123.0 == 123 in Python, so the integral float compares equal
    assert json_to_value(_via_text(back)) == value
    assert cbor.encode(json_to_value(back)) == data


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c["note"])
def test_invalid_cases(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataModel):
        json_to_value(case["json"])
    with pytest.raises(InvalidDataModel):
        parse_json(json.dumps(case["json"]))


def test_integral_float_becomes_int() -> None:
    value = json_to_value({"a": 123.0, "b": -5.0, "c": 0.0, "d": -0.0, "e": 1e2})
    assert value == {"a": 123, "b": -5, "c": 0, "d": 0, "e": 100}
    assert all(type(v) is int for v in value.values())
    assert parse_json('{"a": 1.0e2, "b": 5.00}') == {"a": 100, "b": 5}
    assert json_to_value({"a": float(limits.MAX_SAFE_INT)}) == {"a": limits.MAX_SAFE_INT}
    assert json_to_value({"a": -float(limits.MAX_SAFE_INT)}) == {"a": -limits.MAX_SAFE_INT}


@pytest.mark.parametrize(
    "number",
    [123.456, 0.5, -0.1, 1e-5, float(2**53), 1e20, float("nan"), float("inf"), float("-inf")],
    ids=repr,
)
def test_real_floats_rejected(number: float) -> None:
    with pytest.raises(InvalidDataModel):
        json_to_value({"a": number})
    with pytest.raises(InvalidDataModel):
        json_to_value({"a": [1, {"b": number}]})
    with pytest.raises(InvalidDataModel):
        validate_value({"a": number})


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e400}'])
def test_json_float_specials_rejected(text: str) -> None:
    with pytest.raises(InvalidDataModel):
        parse_json(text)


def test_large_integers() -> None:
    for number in (limits.MAX_INT, limits.MIN_INT, limits.MAX_SAFE_INT + 1, -(2**40)):
        value = json_to_value({"n": number})
        assert value == {"n": number}
        validate_value(value)
        assert cbor.decode(cbor.encode(value)) == value
        assert parse_json(json.dumps({"n": number})) == value
    for number in (limits.MAX_INT + 1, limits.MIN_INT - 1, 2**64, 10**40):
        with pytest.raises(InvalidDataModel):
            json_to_value({"n": number})
        with pytest.raises(InvalidDataModel):
            validate_value({"n": [number]})
        with pytest.raises(InvalidDataModel):
            parse_json(json.dumps({"n": number}))


# --- $bytes and $link ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("", b""),
        ("AA", b"\x00"),
        ("AA==", b"\x00"),
        ("AAA", b"\x00\x00"),
        ("AAA=", b"\x00\x00"),
        ("AAAA", b"\x00\x00\x00"),
        ("+/+/", b"\xfb\xff\xbf"),
        ("aGVsbG8", b"hello"),
    ],
)
def test_bytes_accepted(text: str, raw: bytes) -> None:
    assert json_to_value({"b": {"$bytes": text}}) == {"b": raw}


@pytest.mark.parametrize(
    "shape",
    [
        {"$bytes": "A"},
        {"$bytes": "AAAAA"},
        {"$bytes": "-_-_"},
        {"$bytes": "AA AA"},
        {"$bytes": "AA\n"},
        {"$bytes": "!!!!"},
        {"$bytes": "A=AA"},
        {"$bytes": None},
        {"$bytes": 5},
        {"$bytes": [1, 2]},
        {"$bytes": {"$bytes": "AA"}},
        {"$bytes": "AA", "x": 1},
        {"$bytes": "AA", "$type": "bytes"},
        {"$bytes": "AA", "$link": DAG_CID},
    ],
    ids=repr,
)
def test_bytes_shape_rejected(shape: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataModel):
        json_to_value({"b": shape})


def test_link_accepted() -> None:
    value = json_to_value({"l": {"$link": DAG_CID}, "r": [{"$link": RAW_CID}]})
    assert value == {"l": CID.parse(DAG_CID), "r": [CID.parse(RAW_CID)]}
    # base58btc CID strings parse too; they come back as base32
    z = "z" + b58encode(CID.parse(DAG_CID).raw)
    assert json_to_value({"l": {"$link": z}}) == {"l": CID.parse(DAG_CID)}
    assert value_to_json({"l": CID.parse(DAG_CID)}) == {"l": {"$link": DAG_CID}}


@pytest.mark.parametrize(
    "shape",
    [
        {"$link": "."},
        {"$link": ""},
        {"$link": "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"},
        {"$link": DAG_CID.upper()},
        {"$link": DAG_CID + "="},
        {"$link": " " + DAG_CID},
        {"$link": None},
        {"$link": 1234},
        {"$link": {"$link": DAG_CID}},
        {"$link": [DAG_CID]},
        {"$link": DAG_CID, "other": "blah"},
        {"$link": DAG_CID, "$type": "link"},
    ],
    ids=repr,
)
def test_link_shape_rejected(shape: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataModel):
        json_to_value({"l": shape})


def test_link_and_bytes_are_not_top_level_objects() -> None:
    for shape in ({"$link": DAG_CID}, {"$bytes": "AA"}):
        with pytest.raises(InvalidDataModel, match="top-level"):
            json_to_value(shape)
        with pytest.raises(InvalidDataModel, match="top-level"):
            parse_json(json.dumps(shape))
    assert json_to_value({"$link": DAG_CID}, top_level_object=False) == CID.parse(DAG_CID)
    assert json_to_value({"$bytes": "AA"}, top_level_object=False) == b"\x00"


def test_value_to_json_forms() -> None:
    link = CID.parse(DAG_CID)
    value = {"b": b"\x00\x01\x02\x03", "e": b"", "l": link, "n": [None, True, 1, "s", [link]], "m": {}}
    assert value_to_json(value) == {
        "b": {"$bytes": "AAECAw"},
        "e": {"$bytes": ""},
        "l": {"$link": DAG_CID},
        "n": [None, True, 1, "s", [{"$link": DAG_CID}]],
        "m": {},
    }
    assert json_to_value(_via_text(value_to_json(value))) == value


# --- $type and blobs ------------------------------------------------------------------


@pytest.mark.parametrize("type_value", [None, 123, "", True, [], {}, ["x"]], ids=repr)
def test_type_must_be_non_empty_string(type_value: Any) -> None:
    for where in ({"$type": type_value}, {"a": {"$type": type_value}}, {"a": [{"$type": type_value}]}):
        with pytest.raises(InvalidDataModel, match=r"\$type"):
            json_to_value(where)
        with pytest.raises(InvalidDataModel, match=r"\$type"):
            validate_value(where)


def test_unknown_dollar_keys_are_ignored() -> None:
    value = {"$type": "com.example.x", "$foo": 1, "$": None, "a": {"$unknown": [1]}}
    assert json_to_value(value) == value
    validate_record(value)


def test_blob_valid() -> None:
    value = json_to_value({"b": blob()})
    assert value["b"]["ref"] == CID.parse(RAW_CID)
    validate_value(value)
    assert list(cbor.decode(cbor.encode(value["b"]))) == ["ref", "size", "$type", "mimeType"]
    for ok in (blob(size=0), blob(mimeType="application/octet-stream"), blob(extra="field")):
        validate_value(json_to_value({"b": ok}))


@pytest.mark.parametrize(
    "bad",
    [
        blob(ref=_MISSING),
        blob(ref=None),
        blob(ref=RAW_CID),
        blob(ref={"$bytes": "AA"}),
        blob(ref={"$link": DAG_CID}),
        blob(mimeType=_MISSING),
        blob(mimeType=""),
        blob(mimeType=None),
        blob(mimeType=5),
        blob(size=_MISSING),
        blob(size="10000"),
        blob(size=-1),
        blob(size=None),
        blob(size=True),
        blob(size=1.5),
    ],
    ids=repr,
)
def test_blob_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataModel):
        json_to_value({"b": bad})
    with pytest.raises(InvalidDataModel):
        json_to_value({"list": [{"b": bad}]})


def test_blob_rules_apply_to_decoded_values() -> None:
    good = json_to_value({"b": blob()})
    validate_value(good)
    for change in ({"size": -1}, {"size": "1"}, {"ref": CID.parse(DAG_CID)}, {"mimeType": ""}):
        bad = {"b": {**good["b"], **change}}
        with pytest.raises(InvalidDataModel):
            validate_value(bad)
        # the codec itself does not apply data-model rules
        assert cbor.decode(cbor.encode(bad)) == bad


def test_legacy_blob_accepted() -> None:
    legacy = {"cid": RAW_CID, "mimeType": "image/jpeg"}
    assert json_to_value({"img": legacy}) == {"img": legacy}


# --- structure ------------------------------------------------------------------------


@pytest.mark.parametrize("top", ["blah", 1, None, True, [], [{}]], ids=repr)
def test_top_level_must_be_object(top: Any) -> None:
    with pytest.raises(InvalidDataModel, match="top-level"):
        json_to_value(top)
    with pytest.raises(InvalidDataModel, match="top-level"):
        validate_value(top, top_level_object=True)
    with pytest.raises(InvalidDataModel):
        validate_record(top)
    assert json_to_value(top, top_level_object=False) == top
    validate_value(top)


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit() -> None:
    depth = limits.MAX_CBOR_DEPTH
    assert json_to_value(_nest(depth, 1), top_level_object=False) == _nest(depth, 1)
    validate_value(_nest(depth, 1))
    with pytest.raises(InvalidDataModel, match="nesting"):
        json_to_value(_nest(depth + 1, 1), top_level_object=False)
    with pytest.raises(InvalidDataModel, match="nesting"):
        validate_value(_nest(depth + 1, 1))


def test_links_and_bytes_add_no_depth() -> None:
    """A CID or bytes at the deepest level is a scalar, in JSON as in CBOR."""
    link = CID.parse(DAG_CID)
    for leaf in (link, b"\x01"):
        value = _nest(limits.MAX_CBOR_DEPTH, leaf)
        data = cbor.encode(value)
        assert cbor.decode(data) == value
        validate_value(value)
        assert json_to_value(value_to_json(value), top_level_object=False) == value


def test_parse_json_deep_nesting_is_data_model_error() -> None:
    depth = 100_000
    with pytest.raises(InvalidDataModel):
        parse_json('{"a": ' + "[" * depth + "]" * depth + "}")


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {"a": {None: 1}},
        {"a": (1, 2)},
        {"a": {1, 2}},
        {"a": bytearray(b"x")},
        {"a": 1.0},
        {"a": object()},
    ],
    ids=repr,
)
def test_validate_value_rejects_non_model_values(value: Any) -> None:
    with pytest.raises(InvalidDataModel):
        validate_value(value)


@pytest.mark.parametrize(
    "value",
    [{"a": "\ud800"}, {"a": ["ok", "x\udfffy"]}, {"\ud800": 1}, {"a": {"k\udc00": None}}],
    ids=repr,
)
def test_lone_surrogates_rejected(value: Any) -> None:
    """Strings must be encodable as UTF-8: json.loads turns ``"\\ud800"`` into a lone surrogate."""
    with pytest.raises(InvalidDataModel):
        json_to_value(value)
    with pytest.raises(InvalidDataModel):
        validate_value(value)
    with pytest.raises(InvalidDataModel):
        parse_json(json.dumps(value))
    with pytest.raises(InvalidDataModel):
        cbor.encode(value)


def test_surrogate_pairs_in_json_escapes_are_fine() -> None:
    assert parse_json('{"a": "\\ud83d\\ude00"}') == {"a": "😀"}


def test_parse_json() -> None:
    assert parse_json('{"$type": "x", "a": [1, {"$bytes": "AA"}]}') == {"$type": "x", "a": [1, b"\x00"]}
    assert parse_json(b'{"a": 1}') == {"a": 1}
    for bad in ("", "{", '{"a": 1} x', "{'a': 1}", b'{"a": "\xff"}', "[1]", '"s"'):
        with pytest.raises(InvalidDataModel):
            parse_json(bad)


def test_parse_json_size_limit() -> None:
    text = json.dumps({"a": "x" * 100})
    assert parse_json(text, max_bytes=len(text)) == {"a": "x" * 100}
    with pytest.raises(InvalidDataModel):
        parse_json(text, max_bytes=len(text) - 1)
    with pytest.raises(InvalidDataModel):
        parse_json(" " * (limits.MAX_RECORD_JSON_BYTES + 1))


def test_validate_record() -> None:
    validate_record({"$type": "app.bsky.feed.post", "text": "hi"})
    for bad in ({"text": "hi"}, {"$type": ""}, {"$type": None}, {"$type": 1}):
        with pytest.raises(InvalidDataModel):
            validate_record(bad)


def test_record_cid() -> None:
    record = {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2024-01-01T00:00:00Z"}
    assert record_cid(record) == CID.for_dag_cbor(cbor.encode(record))
    assert record_cid(record).is_dag_cbor
    with pytest.raises(InvalidDataModel):
        record_cid({"a": 1.5})


# --- properties ---------------------------------------------------------------------------

_keys = st.text(max_size=10).filter(lambda k: not k.startswith("$"))
_cids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: CID(b"\x01\x71\x12\x20" + d)),
    st.binary(min_size=32, max_size=32).map(lambda d: CID(b"\x01\x55\x12\x20" + d)),
    st.binary(max_size=10).map(lambda d: CID(b"\x01\x70\x00" + bytes([len(d)]) + d)),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=limits.MIN_INT, max_value=limits.MAX_INT),
    st.text(max_size=20),
    st.binary(max_size=30),
    _cids,
)
values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_keys, children, max_size=5),
        # typed objects follow the $type rule
        st.builds(
            lambda t, d: {**d, "$type": t},
            st.text(min_size=1, max_size=12).filter(lambda t: t != "blob"),
            st.dictionaries(_keys, children, max_size=3),
        ),
    ),
    max_leaves=25,
)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(values)
def test_property_json_round_trip(value: Any) -> None:
    validate_value(value)
    as_json = value_to_json(value)
    back = json_to_value(_via_text(as_json), top_level_object=False)
    assert back == value
    assert value_to_json(back) == as_json


@_FAST
@given(values)
def test_property_json_cbor_json(value: Any) -> None:
    as_json = _via_text(value_to_json(value))
    data = cbor.encode(json_to_value(as_json, top_level_object=False))
    assert data == cbor.encode(value)
    decoded = cbor.decode(data)
    assert cbor.encode(decoded) == data
    assert _via_text(value_to_json(decoded)) == as_json


@_FAST
@given(st.dictionaries(_keys, values, max_size=4))
def test_property_records(record: dict[str, Any]) -> None:
    record = {**record, "$type": "com.example.record"}
    validate_record(record)
    text = json.dumps(value_to_json(record))
    assert parse_json(text) == record
    assert record_cid(parse_json(text)) == record_cid(record)


# --- bounded work and bounded messages ---------------------------------------------


def _long_key_record() -> dict[str, Any]:
    """Just under the 2 MiB JSON limit: a 1,000,000-character key over 520,000 elements.

    Each element once cost a copy of its path (the key): 0.5 TB of copying,
    about 30 s per walk; now about 0.1 s.
    """
    return {"$type": "com.example.big", "k" * 1_000_000: [0] * 520_000}


def _deep_record() -> dict[str, Any]:
    """About 2 MB: 100,000 objects in an array under 40 levels of 20,000-character keys."""
    inner: dict[str, Any] = {"items": [{"n": i} for i in range(100_000)]}
    for level in range(40):
        inner = {f"{level:02d}" + "k" * 20_000: inner}
    return {**inner, "$type": "com.example.deep"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("build", [_long_key_record, _deep_record], ids=["long-key", "deep"])
def test_large_valid_record_validates_in_linear_work(build: Any) -> None:
    """Regression: a path string was built per element, so each walk took ~30 s; now ~0.1 s.

    No wall-time assertion: the timeout (100x the time needed) is only there
    so the old quadratic walk fails instead of holding up the suite.
    """
    record = build()
    text = json.dumps(record, separators=(",", ":"))
    assert len(text) <= limits.MAX_RECORD_JSON_BYTES
    assert parse_json(text) == record
    validate_record(record)
    validate_value(record)


def test_failure_path_is_still_exact() -> None:
    """The path is built on the way out of a failure, and names the failing element."""
    value = {"$type": "x.y", "a": [1, {"b": [0, 0, 1.5]}]}
    with pytest.raises(InvalidDataModel, match=r"^\$\.a\[1\]\.b\[2\]: floats are not allowed"):
        json_to_value(value)
    with pytest.raises(InvalidDataModel, match=r"^\$\.a\[1\]\.b: \$type must be a non-empty string"):
        validate_value({"a": [0, {"b": {"$type": ""}}]})
    with pytest.raises(InvalidDataModel, match=r"^\$\.x: object key 1 is not a string"):
        validate_value({"x": {1: 2}})
    with pytest.raises(InvalidDataModel, match=r"^\$: string .*\(lone surrogate\)"):
        validate_value({"\ud800": 1})


@pytest.mark.parametrize(
    "value",
    [
        {"k" * 100_000: [{"$type": "x" * 100_000, "size": 2**70}]},
        {"a": {"$type": "blob", "ref": CID.parse(RAW_CID), "mimeType": "a/b", "size": 10**5000}},
        {"a": 10**5000},
        {"a": "\ud800" * 100_000},
        {"a": {"$type": ["x" * 100_000]}},
    ],
    ids=["long-key", "blob-size", "huge-int", "surrogates", "type-list"],
)
def test_error_messages_stay_short(value: Any) -> None:
    """Messages quote at most about 100 characters of any value, key or string.

    Regression: a huge int raised ``ValueError`` (int-to-str digit limit)
    while the message was being built.
    """
    for check in (lambda: validate_value(value), lambda: json_to_value(value_to_json(value))):
        with pytest.raises(InvalidDataModel) as info:
            check()
        assert len(str(info.value)) < 500, str(info.value)[:600]


@pytest.mark.parametrize(
    "value",
    [
        {"a": {"$bytes": "!" * 100_000}},
        {"a": {"$link": "b" * 100_000}},
        {"a": {"$link": "x", "y" * 10**5: 1}},
    ],
    ids=["bytes", "link", "link-extra-key"],
)
def test_json_error_messages_stay_short(value: Any) -> None:
    with pytest.raises(InvalidDataModel) as info:
        json_to_value(value)
    assert len(str(info.value)) < 500, str(info.value)[:600]


@pytest.mark.parametrize(
    "text",
    [b"[NaN]", b'{"a": Infinity}', '{"a": 1}'.encode("utf-16"), b'{"a": "\xff"}', b"{"],
    ids=["nan", "infinity", "utf16", "bad-utf8", "truncated"],
)
def test_parse_json_refuses_what_is_not_utf8_json(text: bytes) -> None:
    with pytest.raises(InvalidDataModel, match="invalid JSON"):
        parse_json(text)


def test_parse_json_link_at_deepest_level() -> None:
    """The JSON pre-check leaves one level for a link object, which adds no depth."""
    value = _nest(limits.MAX_CBOR_DEPTH - 1, {"$link": DAG_CID})
    assert parse_json(json.dumps({"a": value})) == {"a": _nest(limits.MAX_CBOR_DEPTH - 1, CID.parse(DAG_CID))}
    with pytest.raises(InvalidDataModel, match="nest"):
        parse_json(json.dumps({"a": _nest(limits.MAX_CBOR_DEPTH, 0)}))


# --- core.jsonio: every parse of outside JSON ---------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 70 + b"]" * 70,
        b"\xff",
        b"[NaN]",
        b"",
        b"[" + b"9" * 5000 + b"]",
    ],
    ids=["deep-array", "deep-object", "over-limit", "bad-utf8", "nan", "empty", "huge-int"],
)
def test_parse_outside_json_raises_only_the_callers_error(text: bytes) -> None:
    with pytest.raises(InvalidCID, match=r"^outside: "):
        parse_outside_json(text, lambda why: InvalidCID(f"outside: {why}"))
    with pytest.raises(InvalidCID, match=r"^outside: "):
        parse_outside_json(text.decode("latin-1"), lambda why: InvalidCID(f"outside: {why}"))


def test_parse_outside_json_accepts_plain_json() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": _nest(limits.MAX_CBOR_DEPTH - 1, 0)}
    assert parse_outside_json(json.dumps(value).encode(), InvalidCID) == value
    assert not json_depth_exceeds(_nest(10, 0), 11)
    assert json_depth_exceeds(_nest(12, 0), 11)
    with pytest.raises(InvalidCID, match="more than 5"):
        parse_outside_json(b"[1, 2]", InvalidCID, max_bytes=5)
