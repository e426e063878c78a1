"""Record validation: one negative test (and its positive twin) per constraint kind.

Most cases use a small inline lexicon (``com.example.constraints``) with one
property per constraint, so each failure is pinned to a property; the rest use
the shipped ``app.bsky`` lexicons. Every failure asserts the exact ``path``
inside the record and the ``rule`` that was broken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atrepo.core import datamodel, limits
from atrepo.core.cid import CID
from atrepo.core.errors import (
    InvalidLexicon,
    InvalidLexiconData,
    InvalidRequest,
    LexiconNotFound,
)
from atrepo.core.lexicon import Registry, parse_document
from atrepo.core.lexicon.graphemes import count_graphemes
from atrepo.core.lexicon.records import check_record_key, find_legacy_blob, prepare_record
from atrepo.lexicons import builtin_registry

SYNTAX = Path(__file__).resolve().parents[2] / "interop" / "syntax"

NSID = "com.example.constraints"
OTHER = "com.example.other"
PLAIN = "com.example.plain"

#: Every lexicon string format and the stem of its interop example files.
FORMAT_FILES = {
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

CONSTRAINTS_DOC: dict[str, Any] = {
    "lexicon": 1,
    "id": NSID,
    "defs": {
        "main": {
            "type": "record",
            "key": "tid",
            "record": {
                "type": "object",
                "required": ["req"],
                "nullable": ["nul"],
                "properties": {
                    "req": {"type": "string"},
                    "count": {"type": "integer", "minimum": -5, "maximum": 10},
                    "choice": {"type": "integer", "enum": [1, 2, 3]},
                    "seven": {"type": "integer", "const": 7},
                    "big": {"type": "integer"},
                    "flag": {"type": "boolean"},
                    "yes": {"type": "boolean", "const": True},
                    "byteLen": {"type": "string", "minLength": 2, "maxLength": 6},
                    "graphemes": {"type": "string", "minGraphemes": 2, "maxGraphemes": 3},
                    "both": {"type": "string", "maxLength": 12, "maxGraphemes": 3},
                    "color": {"type": "string", "enum": ["red", "green"]},
                    "fixed": {"type": "string", "const": "fixed"},
                    "known": {"type": "string", "knownValues": ["x", "y"]},
                    **{fmt: {"type": "string", "format": fmt} for fmt in FORMAT_FILES},
                    "shortDid": {"type": "string", "format": "did", "maxLength": 20},
                    "data": {"type": "bytes", "minLength": 1, "maxLength": 4},
                    "link": {"type": "cid-link"},
                    "anyBlob": {"type": "blob"},
                    "starBlob": {"type": "blob", "accept": ["*/*"]},
                    "imageBlob": {"type": "blob", "accept": ["image/*"]},
                    "exactBlob": {"type": "blob", "accept": ["image/png", "video/mp4"]},
                    "smallBlob": {"type": "blob", "maxSize": 1000},
                    "nums": {
                        "type": "array",
                        "minLength": 1,
                        "maxLength": 3,
                        "items": {"type": "integer", "maximum": 5},
                    },
                    "points": {"type": "array", "items": {"type": "ref", "ref": "#point"}},
                    "nul": {"type": "string"},
                    "opt": {"type": "string"},
                    "nulls": {
                        "type": "object",
                        "required": ["must", "mustOrNull"],
                        "nullable": ["mustOrNull", "mayOrNull"],
                        "properties": {
                            "must": {"type": "string"},
                            "mustOrNull": {"type": "string"},
                            "may": {"type": "string"},
                            "mayOrNull": {"type": "string"},
                        },
                    },
                    "unk": {"type": "unknown"},
                    "point": {"type": "ref", "ref": "#point"},
                    "plain": {"type": "ref", "ref": PLAIN},
                    "rec": {"type": "ref", "ref": OTHER},
                    "open": {"type": "union", "refs": ["#point", f"{OTHER}#thing"]},
                    "closed": {"type": "union", "refs": ["#point", PLAIN], "closed": True},
                    "empty": {"type": "union", "refs": []},
                    "withRecord": {"type": "union", "refs": [OTHER], "closed": True},
                },
            },
        },
        "point": {
            "type": "object",
            "required": ["x"],
            "properties": {
                "x": {"type": "integer"},
                "label": {"type": "string", "maxLength": 4},
            },
        },
    },
}

OTHER_DOC: dict[str, Any] = {
    "lexicon": 1,
    "id": OTHER,
    "defs": {
        "main": {
            "type": "record",
            "key": "any",
            "record": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
        },
        "thing": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxGraphemes": 2}},
        },
    },
}

PLAIN_DOC: dict[str, Any] = {
    "lexicon": 1,
    "id": PLAIN,
    "defs": {"main": {"type": "object", "properties": {"s": {"type": "string", "const": "s"}}}},
}


def _key_doc(name: str, key: str) -> dict[str, Any]:
    return {
        "lexicon": 1,
        "id": f"com.example.{name}",
        "defs": {"main": {"type": "record", "key": key, "record": {"type": "object", "properties": {}}}},
    }


KEY_DOCS = [
    _key_doc("keyTid", "tid"),
    _key_doc("keyNsid", "nsid"),
    _key_doc("keySelf", "literal:self"),
    _key_doc("keyAny", "any"),
]

REG = Registry([CONSTRAINTS_DOC, OTHER_DOC, PLAIN_DOC, *KEY_DOCS])

BLOB_CID = CID.for_raw(b"a blob")
DAG_CID = CID.for_dag_cbor(b"\xa0")
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TID = "3jzfcijpj2z2a"
TIME = "2024-05-01T12:34:56.789Z"

#: Grapheme clusters made of several code points.
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # ZWJ sequence: 7 code points, 25 bytes
E_ACUTE = "e\u0301"  # e + combining acute: 2 code points, 3 bytes
FLAG = "\U0001f1fa\U0001f1f8"  # regional indicator pair: 2 code points, 8 bytes
THUMB_DARK = "\U0001f44d\U0001f3ff"  # emoji + skin tone modifier: 2 code points, 8 bytes


def blob(mime: str = "image/png", size: int = 100, ref: Any = BLOB_CID) -> dict[str, Any]:
    return {"$type": "blob", "ref": ref, "mimeType": mime, "size": size}


def legacy_blob(mime: str = "image/png") -> dict[str, Any]:
    return {"cid": str(BLOB_CID), "mimeType": mime}


def record(**fields: Any) -> dict[str, Any]:
    return {"$type": NSID, "req": "r", **fields}


def ok(value: dict[str, Any], *, strict: bool = True, reg: Registry = REG, nsid: str = NSID) -> None:
    reg.validate_record(nsid, value, strict=strict)


def bad(
    value: Any,
    path: str,
    rule: str,
    *,
    strict: bool = True,
    reg: Registry = REG,
    nsid: str = NSID,
) -> InvalidLexiconData:
    with pytest.raises(InvalidLexiconData) as info:
        reg.validate_record(nsid, value, strict=strict)
    err = info.value
    assert (err.path, err.rule, err.nsid) == (path, rule, nsid), str(err)
    assert (f" at {path}:" in str(err)) == bool(path), str(err)
    return err


def _examples(stem: str, kind: str) -> list[str]:
    lines = (SYNTAX / f"{stem}_syntax_{kind}.txt").read_text("utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


# --- the test lexicon itself --------------------------------------------------------------


def test_minimal_record_passes() -> None:
    ok(record())
    ok(record(), strict=False)


def test_every_property_valid_at_once() -> None:
    ok(
        record(
            count=10,
            choice=2,
            seven=7,
            big=-(2**53) + 1,
            flag=False,
            yes=True,
            byteLen="\u00e9\u00e9\u00e9",
            graphemes=FAMILY + E_ACUTE + FLAG,
            color="green",
            fixed="fixed",
            known="not-listed",
            did=DID,
            handle="alice.example.com",
            **{"at-identifier": DID, "at-uri": f"at://{DID}/app.bsky.feed.post/{TID}"},
            cid=str(DAG_CID),
            datetime=TIME,
            language="pt-BR",
            nsid="com.example.fooBar",
            tid=TID,
            **{"record-key": "self"},
            uri="https://example.com/a?b#c",
            data=b"\x00\x01\x02\x03",
            link=DAG_CID,
            anyBlob=blob("application/octet-stream"),
            starBlob=blob("text/plain"),
            imageBlob=blob("image/webp"),
            exactBlob=blob("video/mp4"),
            smallBlob=blob(size=1000),
            nums=[5, -100, 0],
            points=[{"x": 1}, {"x": 2, "label": "abcd"}],
            nul=None,
            opt="o",
            nulls={"must": "m", "mustOrNull": None, "mayOrNull": None},
            unk={"anything": [1, "two", {"three": None}]},
            point={"$type": f"{NSID}#point", "x": 0},
            plain={"$type": PLAIN, "s": "s"},
            rec={"$type": OTHER, "n": 0},
            open={"$type": f"{OTHER}#thing", "name": "ab"},
            closed={"$type": PLAIN},
            empty={"$type": "com.example.anything"},
            withRecord={"$type": OTHER},
            extra={"not": "in the schema"},
        )
    )


# --- integers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("count", 11, "maximum"),
        ("count", -6, "minimum"),
        ("count", 2**70, "maximum"),
        ("choice", 4, "enum"),
        ("choice", 0, "enum"),
        ("seven", 8, "const"),
        ("count", True, "type"),
        ("count", False, "type"),
        ("big", True, "type"),
        ("choice", True, "type"),  # True == 1, but a boolean is not an integer
        ("seven", 7.0, "type"),
        ("big", 1.5, "type"),
        ("big", "1", "type"),
        ("big", [1], "type"),
        ("big", 2**53, "range"),
        ("big", -(2**53), "range"),
    ],
)
def test_integer_constraints(field: str, value: Any, rule: str) -> None:
    bad(record(**{field: value}), field, rule)


@pytest.mark.parametrize(("field", "value"), [("count", 10), ("count", -5), ("choice", 3), ("seven", 7)])
def test_integer_bounds_are_inclusive(field: str, value: int) -> None:
    ok(record(**{field: value}))


def test_integer_range_strict_and_lenient() -> None:
    for value in (limits.MAX_SAFE_INT, -limits.MAX_SAFE_INT):
        ok(record(big=value))
    for value in (limits.MAX_SAFE_INT + 1, limits.MAX_INT, limits.MIN_INT):
        bad(record(big=value), "big", "range")
        ok(record(big=value), strict=False)
    for value in (limits.MAX_INT + 1, limits.MIN_INT - 1):
        bad(record(big=value), "big", "range", strict=False)


# --- booleans -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [("flag", 1, "type"), ("flag", 0, "type"), ("flag", "true", "type"), ("yes", False, "const")],
)
def test_boolean_constraints(field: str, value: Any, rule: str) -> None:
    bad(record(**{field: value}), field, rule)


# --- strings: lengths in UTF-8 bytes, graphemes -------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("a", "minLength"),
        ("\u00e9\u00e9\u00e9a", "maxLength"),  # 4 code points, 7 bytes
        ("\u65e5\u672c\u8a9e", "maxLength"),  # 3 code points, 9 bytes
        ("\U0001f600\U0001f600", "maxLength"),  # 2 code points, 8 bytes
        ("abcdefg", "maxLength"),
        ("", "minLength"),
    ],
)
def test_string_byte_lengths(value: str, rule: str) -> None:
    bad(record(byteLen=value), "byteLen", rule)


@pytest.mark.parametrize(
    "value", ["ab", "abcdef", "\u00e9", "\u00e9\u00e9\u00e9", "\u65e5\u672c", "\U0001f600"]
)
def test_string_byte_lengths_pass(value: str) -> None:
    assert 2 <= len(value.encode()) <= 6
    ok(record(byteLen=value))


@pytest.mark.parametrize(
    "value",
    [
        FAMILY * 4,
        "abcd",
        E_ACUTE * 4,
        FLAG * 4,
        "a" + E_ACUTE + FAMILY + THUMB_DARK,
        "a\r\nbc",  # CR LF is one cluster: 4 clusters, 5 code points
    ],
)
def test_max_graphemes(value: str) -> None:
    assert count_graphemes(value) == 4
    bad(record(graphemes=value), "graphemes", "maxGraphemes")


@pytest.mark.parametrize("value", ["a", FAMILY, E_ACUTE, FLAG, "", "\r\n"])
def test_min_graphemes(value: str) -> None:
    assert count_graphemes(value) < 2
    bad(record(graphemes=value), "graphemes", "minGraphemes")


@pytest.mark.parametrize(
    "value",
    [
        FAMILY + FAMILY + FAMILY,  # 21 code points, 3 clusters
        E_ACUTE * 3,  # 6 code points
        FLAG + THUMB_DARK + FAMILY,  # 11 code points
        "a\r\nb",  # 4 code points, 3 clusters
        "ab",
    ],
)
def test_more_code_points_than_graphemes_passes(value: str) -> None:
    assert count_graphemes(value) <= 3
    ok(record(graphemes=value))


def test_bytes_and_graphemes_both_apply() -> None:
    ok(record(both="abc"))
    ok(record(both=FLAG + "a"))  # 9 bytes, 2 clusters
    bad(record(both=FAMILY), "both", "maxLength")  # 1 cluster but 25 bytes
    bad(record(both="abcd"), "both", "maxGraphemes")  # 4 bytes but 4 clusters


# --- strings: enum, const, knownValues ------------------------------------------------------


def test_string_enum_const_and_known_values() -> None:
    bad(record(color="blue"), "color", "enum")
    bad(record(color="Red"), "color", "enum")
    bad(record(fixed="fixed "), "fixed", "const")
    bad(record(fixed=""), "fixed", "const")
    bad(record(color=1), "color", "type")
    for value in ("x", "y", "z", "", "anything at all"):
        ok(record(known=value))  # knownValues is open: never enforced


# --- strings: formats -----------------------------------------------------------------------

HAND_PICKED: dict[str, tuple[list[str], list[str]]] = {
    "did": (
        [DID, "did:web:example.com", "did:method:a:b%20c"],
        ["did:PLC:abc", "did:plc", "plc:abc", DID + " "],
    ),
    "handle": (
        ["alice.example.com", "XN--ls8h.test", "a.b"],
        ["alice", "-alice.example.com", "alice.example.com.", "al ice.com"],
    ),
    "at-identifier": (
        ["alice.example.com", DID],
        ["did:alice.example.com", "alice", "@alice.example.com"],
    ),
    "at-uri": (
        [f"at://{DID}", f"at://{DID}/app.bsky.feed.post", f"at://{DID}/app.bsky.feed.post/{TID}"],
        [
            "https://example.com",
            f"at://{DID}/app.bsky.feed.post/{TID}/extra",
            f"at://{DID}/app.bsky.feed.post/{TID}#frag",
        ],
    ),
    "nsid": (["com.example.fooBar", "app.bsky.feed.post"], ["com.example", "com.example.foo-bar", "com..a"]),
    "cid": ([str(DAG_CID), str(BLOB_CID)], ["bafyrei", "not a cid", str(DAG_CID) + "!"]),
    "datetime": (
        [TIME, "1985-04-12T23:20:50Z", "1985-04-12T23:20:50.123+05:30"],
        ["1985-04-12", "1985-04-12T23:20:50", "1985-04-12 23:20:50Z", "1985-02-30T00:00:00Z"],
    ),
    "language": (["en", "pt-BR", "zh-Hant", "i-default"], ["", "e", "en_US", "123"]),
    "tid": ([TID, "2222222222222"], ["3jzfcijpj2z2", "3JZFCIJPJ2Z2A", "3jzfcijpj2z2aa", "zzzzzzzzzzzzz"]),
    "record-key": (["self", TID, "a:b~c_d-e.f"], [".", "..", "a/b", "a b", ""]),
    "uri": (["https://example.com/a?b#c", "at://x", "mailto:a@b.c"], ["example.com", "not a uri", "/path"]),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_FILES))
def test_format_hand_picked_examples(fmt: str) -> None:
    valid, invalid = HAND_PICKED[fmt]
    for value in valid:
        ok(record(**{fmt: value}))
    for value in invalid:
        err = bad(record(**{fmt: value}), fmt, "format")
        assert fmt in err.detail


@pytest.mark.parametrize("fmt", sorted(FORMAT_FILES))
def test_format_interop_examples(fmt: str) -> None:
    valid = _examples(FORMAT_FILES[fmt], "valid")
    invalid = _examples(FORMAT_FILES[fmt], "invalid")
    assert valid and invalid
    for value in valid:
        ok(record(**{fmt: value}))
    for value in invalid:
        bad(record(**{fmt: value}), fmt, "format")


@pytest.mark.parametrize("fmt", sorted(FORMAT_FILES))
def test_format_needs_a_string(fmt: str) -> None:
    bad(record(**{fmt: 12}), fmt, "type")
    bad(record(**{fmt: None}), fmt, "nullable")


def test_format_and_length_together() -> None:
    ok(record(shortDid="did:web:example.com"))
    bad(record(shortDid=DID), "shortDid", "maxLength")
    bad(record(shortDid="did:x"), "shortDid", "format")


def test_lenient_datetime_reads_older_forms() -> None:
    for value in ("2023-04-12T23:20:50", "2023-04-12T23:20:50.123+0000", "2023-04-12", "20230412T232050Z"):
        bad(record(datetime=value), "datetime", "format")
        ok(record(datetime=value), strict=False)
    for value in ("yesterday", "2023-13-01T00:00:00Z", ""):
        bad(record(datetime=value), "datetime", "format", strict=False)


# --- bytes and cid-link ---------------------------------------------------------------------


def test_bytes_lengths_and_type() -> None:
    ok(record(data=b"\x00"))
    bad(record(data=b""), "data", "minLength")
    bad(record(data=b"12345"), "data", "maxLength")
    bad(record(data="AAE="), "data", "type")
    bad(record(data=[0, 1]), "data", "type")
    bad(record(data=BLOB_CID), "data", "type")


@pytest.mark.parametrize(
    "value",
    [str(DAG_CID), {"$link": str(DAG_CID)}, b"\x01q\x12 " + bytes(32), DAG_CID.raw, 7, {}],
)
def test_cid_link_wrong_type(value: Any) -> None:
    bad(record(link=value), "link", "type")


def test_cid_link_from_json() -> None:
    ok(datamodel.json_to_value(record(link={"$link": str(BLOB_CID)})))


# --- blobs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "mime", "accepted"),
    [
        ("starBlob", "text/plain", True),
        ("starBlob", "application/x-whatever", True),
        ("imageBlob", "image/png", True),
        ("imageBlob", "image/svg+xml", True),
        ("imageBlob", "video/mp4", False),
        ("imageBlob", "images/png", False),
        ("imageBlob", "text/image", False),
        ("exactBlob", "image/png", True),
        ("exactBlob", "video/mp4", True),
        ("exactBlob", "image/jpeg", False),
        ("exactBlob", "image/PNG", False),
        ("exactBlob", "video/mp4v", False),
        ("anyBlob", "application/octet-stream", True),
    ],
)
def test_blob_accept(field: str, mime: str, accepted: bool) -> None:
    value = record(**{field: blob(mime)})
    if accepted:
        ok(value)
    else:
        bad(value, field, "accept")


def test_blob_mime_type_must_be_a_mime_type() -> None:
    bad(record(anyBlob=blob("png")), "anyBlob", "blob")
    bad(record(starBlob=blob("")), "starBlob", "blob")


def test_blob_max_size() -> None:
    ok(record(smallBlob=blob(size=1000)))
    ok(record(smallBlob=blob(size=0)))
    bad(record(smallBlob=blob(size=1001)), "smallBlob", "maxSize")
    ok(record(anyBlob=blob(size=10**12)))


@pytest.mark.parametrize(
    "value",
    [
        {**blob(), "extra": 1},
        {**blob(), "cid": str(BLOB_CID)},
        {k: v for k, v in blob().items() if k != "size"},
        {k: v for k, v in blob().items() if k != "ref"},
        {k: v for k, v in blob().items() if k != "mimeType"},
        blob(ref=str(BLOB_CID)),
        blob(size=-1),
        blob(size=True),
        blob(size="100"),
    ],
)
def test_blob_shape(value: dict[str, Any]) -> None:
    bad(record(anyBlob=value), "anyBlob", "blob")


@pytest.mark.parametrize("value", [{}, {"$type": "blobby"}, "blob", [blob()], BLOB_CID, {"ref": BLOB_CID}])
def test_not_a_blob(value: Any) -> None:
    bad(record(anyBlob=value), "anyBlob", "type")


def test_blob_ref_of_any_codec_passes_the_schema() -> None:
    ok(record(anyBlob=blob(ref=DAG_CID)))


def test_legacy_blob_strict_and_lenient() -> None:
    value = record(anyBlob=legacy_blob(), imageBlob=legacy_blob("image/jpeg"))
    bad(value, "anyBlob", "type")
    ok(value, strict=False)
    bad(record(imageBlob=legacy_blob("text/plain")), "imageBlob", "accept", strict=False)
    bad(record(smallBlob=legacy_blob()), "smallBlob", "maxSize", strict=False)  # no size to check
    bad(record(anyBlob={"cid": "not-a-cid", "mimeType": "image/png"}), "anyBlob", "blob", strict=False)
    bad(record(anyBlob={**legacy_blob(), "size": 1}), "anyBlob", "type", strict=False)
    bad(record(anyBlob={"cid": str(BLOB_CID)}), "anyBlob", "type", strict=False)


# --- arrays ---------------------------------------------------------------------------------


def test_array_lengths_and_items() -> None:
    ok(record(nums=[1]))
    ok(record(nums=[1, 2, 3]))
    bad(record(nums=[]), "nums", "minLength")
    bad(record(nums=[1, 2, 3, 4]), "nums", "maxLength")
    bad(record(nums=[1, 2, 6]), "nums/2", "maximum")
    bad(record(nums=[0, "1"]), "nums/1", "type")
    bad(record(nums=[True]), "nums/0", "type")
    bad(record(nums=[1, None]), "nums/1", "type")
    bad(record(nums=(1, 2)), "nums", "type")
    bad(record(nums={"0": 1}), "nums", "type")


def test_array_item_errors_name_the_index_deep_down() -> None:
    points = [{"x": 1}, {"x": 2}, {"x": 3, "label": "toolong"}]
    bad(record(points=points), "points/2/label", "maxLength")
    bad(record(points=[{"x": 1}, {}]), "points/1/x", "required")
    bad(record(points=[{"x": 1}, {"$type": f"{NSID}#other", "x": 1}]), "points/1/$type", "$type")
    bad(record(points=[[]]), "points/0", "type")


# --- required, optional, nullable -----------------------------------------------------------


def test_required_optional_nullable() -> None:
    bad({"$type": NSID}, "req", "required")
    bad(record(req=None), "req", "nullable")  # required, not nullable
    ok(record(nul=None))  # optional and nullable
    bad(record(opt=None), "opt", "nullable")  # optional, not nullable: absent is not null
    ok(record(nulls={"must": "", "mustOrNull": None}))
    ok(record(nulls={"must": "", "mustOrNull": "v", "may": "", "mayOrNull": None}))
    bad(record(nulls={"mustOrNull": None}), "nulls/must", "required")
    bad(record(nulls={"must": ""}), "nulls/mustOrNull", "required")  # nullable does not mean optional
    bad(record(nulls={"must": None, "mustOrNull": None}), "nulls/must", "nullable")
    bad(record(nulls={"must": "", "mustOrNull": None, "may": None}), "nulls/may", "nullable")
    bad(record(nulls={"must": "", "mustOrNull": 0}), "nulls/mustOrNull", "type")


@pytest.mark.parametrize("value", [0, False, [], {}])
def test_falsy_values_are_not_null(value: Any) -> None:
    bad(record(nul=value), "nul", "type")
    ok(record(nul=""))


def test_extra_properties_are_ignored() -> None:
    ok(record(unlisted=None, other=[1], **{"$extra": "x"}))


# --- unknown --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{}, {"a": 1}, {"$type": "com.example.whatever", "n": "not validated"}, {"$type": NSID}, {"$type": "x"}],
)
def test_unknown_accepts_objects_without_validating_type(value: dict[str, Any]) -> None:
    ok(record(unk=value))


def test_unknown_content_is_not_validated_even_with_a_known_type() -> None:
    # $type names our own record type, whose required "req" is missing: still fine
    ok(record(unk={"$type": NSID, "count": 999}))
    ok(record(unk={"$type": f"{NSID}#point", "x": "not an integer"}))


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ([], "type"),
        ([{"a": 1}], "type"),
        ("string", "type"),
        (1, "type"),
        (True, "type"),
        (b"bytes", "type"),
        (DAG_CID, "type"),
        (blob(), "type"),
        (None, "nullable"),
    ],
)
def test_unknown_rejects_non_objects_and_blobs(value: Any, rule: str) -> None:
    bad(record(unk=value), "unk", rule)


# --- refs -------------------------------------------------------------------------------------


def test_ref_to_named_object() -> None:
    ok(record(point={"x": 1}))
    ok(record(point={"$type": f"{NSID}#point", "x": 1}))
    bad(record(point={}), "point/x", "required")
    bad(record(point={"x": "1"}), "point/x", "type")
    bad(record(point={"x": 1, "label": "12345"}), "point/label", "maxLength")
    bad(record(point=[{"x": 1}]), "point", "type")


@pytest.mark.parametrize(
    "type_",
    [f"{OTHER}#thing", "#point", "point", f"{NSID}#point ", f"{NSID}#Point", NSID, f"{NSID}#main", "", 3],
)
def test_ref_type_mismatch(type_: Any) -> None:
    bad(record(point={"$type": type_, "x": 1}), "point/$type", "$type")


def test_ref_to_main_object_uses_the_bare_nsid() -> None:
    ok(record(plain={}))
    ok(record(plain={"$type": PLAIN}))
    bad(record(plain={"$type": f"{PLAIN}#main"}), "plain/$type", "$type")
    bad(record(plain={"s": "t"}), "plain/s", "const")


def test_ref_to_a_record_requires_its_type() -> None:
    ok(record(rec={"$type": OTHER}))
    bad(record(rec={}), "rec/$type", "required")
    bad(record(rec={"$type": f"{OTHER}#main"}), "rec/$type", "$type")
    bad(record(rec={"$type": OTHER, "n": -1}), "rec/n", "minimum")


# --- unions -----------------------------------------------------------------------------------


def test_union_member_is_validated() -> None:
    ok(record(open={"$type": f"{NSID}#point", "x": 1}))
    bad(record(open={"$type": f"{NSID}#point"}), "open/x", "required")
    bad(record(open={"$type": f"{OTHER}#thing", "name": "abc"}), "open/name", "maxGraphemes")
    bad(record(closed={"$type": PLAIN, "s": "x"}), "closed/s", "const")


@pytest.mark.parametrize(
    "type_",
    ["com.example.unknown", "com.example.unknown#thing", f"{NSID}#other", f"{OTHER}#nope", OTHER],
)
def test_open_union_accepts_unlisted_types_unvalidated(type_: str) -> None:
    ok(record(open={"$type": type_, "x": "anything"}))
    ok(record(empty={"$type": type_}))


@pytest.mark.parametrize(
    "type_",
    [
        f"{NSID}#point#x",
        "not an nsid",
        "com.example",
        "#point",
        "blob",
        f"{PLAIN}#main",
        "com.example.unknown#main",
        "com.example.unknown#",
    ],
)
def test_open_union_rejects_malformed_types(type_: str) -> None:
    bad(record(open={"$type": type_}), "open/$type", "$type")
    bad(record(empty={"$type": type_}), "empty/$type", "$type")


@pytest.mark.parametrize(
    "type_", ["com.example.unknown", f"{OTHER}#thing", f"{NSID}#point#x", f"{PLAIN}#main", f"{NSID}#main"]
)
def test_closed_union_rejects_unlisted_types(type_: str) -> None:
    bad(record(closed={"$type": type_}), "closed/$type", "closed-union")


def test_union_needs_a_type() -> None:
    for field in ("open", "closed", "empty"):
        bad(record(**{field: {"x": 1}}), f"{field}/$type", "$type")
        bad(record(**{field: {"$type": 1, "x": 1}}), f"{field}/$type", "$type")
        bad(record(**{field: []}), field, "type")
        bad(record(**{field: "com.example.plain"}), field, "type")


def test_union_of_a_record_type() -> None:
    ok(record(withRecord={"$type": OTHER, "n": 1}))
    bad(record(withRecord={"$type": OTHER, "n": -1}), "withRecord/n", "minimum")
    bad(record(withRecord={"$type": f"{OTHER}#main"}), "withRecord/$type", "closed-union")


def test_union_member_nsid_hash_def_type() -> None:
    """A member that is not ``main`` is named ``nsid#def``; a local ``#def`` is not a $type."""
    ok(record(closed={"$type": f"{NSID}#point", "x": 1}))
    bad(record(closed={"$type": "#point", "x": 1}), "closed/$type", "closed-union")
    bad(record(open={"$type": "#point", "x": 1}), "open/$type", "$type")


# --- the record's own $type -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ({"req": "r"}, "required"),
        ({"$type": OTHER, "req": "r"}, "$type"),
        ({"$type": f"{NSID}#main", "req": "r"}, "$type"),
        ({"$type": NSID.upper(), "req": "r"}, "$type"),
    ],
)
def test_record_type_must_be_its_nsid(value: dict[str, Any], rule: str) -> None:
    bad(value, "$type", rule)


@pytest.mark.parametrize("value", [[], "x", None, 1])
def test_record_must_be_an_object(value: Any) -> None:
    bad(value, "", "type")


def test_unknown_record_type() -> None:
    with pytest.raises(LexiconNotFound):
        REG.validate_record("com.example.nothing", {"$type": "com.example.nothing"})
    with pytest.raises(LexiconNotFound):
        REG.validate_record(f"{NSID}#point", {"x": 1})  # a def, but not a record
    with pytest.raises(LexiconNotFound):
        REG.validate_record(PLAIN, {"$type": PLAIN})  # an object main, not a record


# --- the shipped app.bsky lexicons ------------------------------------------------------------

POST = "app.bsky.feed.post"
STRONG_REF = {"uri": f"at://{DID}/{POST}/{TID}", "cid": str(DAG_CID)}


def post(**fields: Any) -> dict[str, Any]:
    return {"$type": POST, "text": "hello", "createdAt": TIME, **fields}


def image(**fields: Any) -> dict[str, Any]:
    return {"image": blob("image/jpeg", 1_000_000), "alt": "a cat", **fields}


def images(*items: dict[str, Any]) -> dict[str, Any]:
    return {"$type": "app.bsky.embed.images", "images": list(items)}


def bsky_ok(value: dict[str, Any], nsid: str = POST, *, strict: bool = True) -> None:
    builtin_registry().validate_record(nsid, value, strict=strict)


def bsky_bad(value: dict[str, Any], path: str, rule: str, nsid: str = POST, *, strict: bool = True) -> None:
    bad(value, path, rule, reg=builtin_registry(), nsid=nsid, strict=strict)


def test_bsky_post_valid() -> None:
    bsky_ok(post())
    bsky_ok(post(text=""))
    bsky_ok(
        post(
            text="\U0001f44d" * 300,
            langs=["en", "pt-BR", "ja"],
            tags=["a", "b"],
            reply={"root": STRONG_REF, "parent": {**STRONG_REF, "$type": "com.atproto.repo.strongRef"}},
            embed=images(image(), image(aspectRatio={"width": 1, "height": 2})),
            labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]},
            facets=[
                {
                    "index": {"byteStart": 0, "byteEnd": 5},
                    "features": [
                        {"$type": "app.bsky.richtext.facet#mention", "did": DID},
                        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"},
                        {"$type": "com.example.futureFeature", "anything": True},
                    ],
                }
            ],
        )
    )


def test_bsky_post_text_graphemes_and_bytes() -> None:
    bsky_ok(post(text="\U0001f44d" * 300))  # 300 clusters, 1200 bytes
    bsky_ok(post(text=FAMILY * 120))  # 120 clusters, 3000 bytes, 840 code points
    bsky_bad(post(text="\u00e9" * 301), "text", "maxGraphemes")  # 602 bytes
    bsky_bad(post(text=E_ACUTE * 301), "text", "maxGraphemes")  # 903 bytes, 602 code points
    bsky_bad(post(text=FAMILY * 121), "text", "maxLength")  # 121 clusters, 3025 bytes
    bsky_bad(post(text="a" * 3001), "text", "maxLength")
    bsky_bad(post(text=None), "text", "nullable")
    bsky_bad({k: v for k, v in post().items() if k != "text"}, "text", "required")


def test_bsky_post_nested_paths() -> None:
    bsky_bad(post(embed=images(image(), {"image": blob()})), "embed/images/1/alt", "required")
    bsky_bad(post(embed=images(*[image()] * 5)), "embed/images", "maxLength")
    bsky_bad(post(embed=images(image(), image(image=blob("text/plain")))), "embed/images/1/image", "accept")
    bsky_bad(post(embed=images(image(image=blob("image/png", 2_000_001)))), "embed/images/0/image", "maxSize")
    bsky_bad(
        post(embed=images(image(aspectRatio={"width": 0, "height": 1}))),
        "embed/images/0/aspectRatio/width",
        "minimum",
    )
    bsky_bad(post(embed=images(image(alt=5))), "embed/images/0/alt", "type")
    bsky_bad(post(langs=["en", "english_US"]), "langs/1", "format")
    bsky_bad(post(langs=["en", "fr", "de", "ja"]), "langs", "maxLength")
    bsky_bad(post(tags=["x" * 65]), "tags/0", "maxGraphemes")
    bsky_bad(post(reply={"root": STRONG_REF}), "reply/parent", "required")
    bsky_bad(
        post(reply={"root": STRONG_REF, "parent": {"uri": STRONG_REF["uri"]}}), "reply/parent/cid", "required"
    )
    bsky_bad(
        post(reply={"root": {**STRONG_REF, "cid": "bafy"}, "parent": STRONG_REF}), "reply/root/cid", "format"
    )
    bsky_bad(
        post(reply={"root": {**STRONG_REF, "uri": "https://x.com"}, "parent": STRONG_REF}),
        "reply/root/uri",
        "format",
    )
    bsky_bad(post(createdAt="2024-05-01T12:34:56"), "createdAt", "format")
    bsky_ok(post(createdAt="2024-05-01T12:34:56"), strict=False)


def test_bsky_ref_type_mismatch() -> None:
    bsky_ok(post(reply={"$type": f"{POST}#replyRef", "root": STRONG_REF, "parent": STRONG_REF}))
    bsky_bad(
        post(reply={"$type": f"{POST}#entity", "root": STRONG_REF, "parent": STRONG_REF}),
        "reply/$type",
        "$type",
    )
    bsky_bad(
        post(
            reply={"root": {**STRONG_REF, "$type": "com.atproto.repo.strongRef#main"}, "parent": STRONG_REF}
        ),
        "reply/root/$type",
        "$type",
    )


def test_bsky_unions() -> None:
    facet = {"index": {"byteStart": 0, "byteEnd": 1}, "features": [{"did": DID}]}
    bsky_bad(post(facets=[facet]), "facets/0/features/0/$type", "$type")
    facet["features"] = [{"$type": "app.bsky.richtext.facet#mention", "did": "alice"}]
    bsky_bad(post(facets=[facet]), "facets/0/features/0/did", "format")
    facet["features"] = [{"$type": "app.bsky.richtext.facet#mention#x", "did": DID}]
    bsky_bad(post(facets=[facet]), "facets/0/features/0/$type", "$type")
    facet["index"] = {"byteStart": -1, "byteEnd": 1}
    bsky_bad(post(facets=[facet]), "facets/0/index/byteStart", "minimum")
    bsky_bad(post(embed=images(image()) | {"$type": "app.bsky.embed.images#main"}), "embed/$type", "$type")
    bsky_ok(post(embed={"$type": "com.example.embed#future", "whatever": [1]}))
    bsky_bad(post(embed={"images": []}), "embed/$type", "$type")
    bsky_bad(
        post(labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{}]}),
        "labels/values/0/val",
        "required",
    )
    labels = {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "x"}] * 11}
    bsky_bad(post(labels=labels), "labels/values", "maxLength")


def test_bsky_integer_range_strict_and_lenient() -> None:
    facet = {
        "index": {"byteStart": 0, "byteEnd": 2**53},
        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "t"}],
    }
    bsky_bad(post(facets=[facet]), "facets/0/index/byteEnd", "range")
    bsky_ok(post(facets=[facet]), strict=False)


def test_bsky_profile_blobs() -> None:
    profile = "app.bsky.actor.profile"
    bsky_ok({"$type": profile, "avatar": blob("image/png", 1000)}, profile)
    bsky_bad({"$type": profile, "avatar": blob("image/gif", 1000)}, "avatar", "accept", profile)
    bsky_bad({"$type": profile, "avatar": blob("image/png", 10**9)}, "avatar", "maxSize", profile)
    bsky_bad({"$type": profile, "avatar": legacy_blob()}, "avatar", "type", profile)
    bsky_bad({"$type": profile, "displayName": "x" * 65}, "displayName", "maxGraphemes", profile)


def test_bsky_record_from_json() -> None:
    value = datamodel.json_to_value(
        {
            **post(),
            "embed": {
                "$type": "app.bsky.embed.images",
                "images": [
                    {
                        "alt": "",
                        "image": {
                            "$type": "blob",
                            "ref": {"$link": str(BLOB_CID)},
                            "mimeType": "image/webp",
                            "size": 12,
                        },
                    }
                ],
            },
        }
    )
    bsky_ok(value)


# --- record keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "rkey", "valid"),
    [
        ("tid", TID, True),
        ("tid", "self", False),
        ("tid", "3JZFCIJPJ2Z2A", False),
        ("tid", "3jzfcijpj2z2", False),
        ("nsid", "com.example.fooBar", True),
        ("nsid", "self", False),
        ("nsid", TID, False),
        ("literal:self", "self", True),
        ("literal:self", "Self", False),
        ("literal:self", TID, False),
        ("literal:self", "self.", False),
        ("any", "self", True),
        ("any", TID, True),
        ("any", "a:b~c", True),
        ("any", ".", False),
        ("any", "..", False),
        ("any", "a/b", False),
        ("any", "x" * 513, False),
    ],
)
def test_check_record_key(key_type: str, rkey: str, valid: bool) -> None:
    if valid:
        check_record_key("com.example.x", key_type, rkey)
        return
    with pytest.raises(InvalidLexiconData) as info:
        check_record_key("com.example.x", key_type, rkey)
    assert (info.value.path, info.value.rule, info.value.nsid) == ("", "key", "com.example.x")


def test_check_record_key_refuses_unknown_key_types() -> None:
    with pytest.raises(ValueError, match="unknown record key type"):
        check_record_key("com.example.x", "uuid", "self")


@pytest.mark.parametrize(
    ("collection", "good", "wrong"),
    [
        ("com.example.keyTid", TID, "self"),
        ("com.example.keyNsid", "com.example.fooBar", TID),
        ("com.example.keySelf", "self", TID),
        ("com.example.keyAny", "anything:goes", None),
    ],
)
def test_prepare_record_checks_the_key_type(collection: str, good: str, wrong: str | None) -> None:
    stored, status = prepare_record(REG, collection, good, {})
    assert (stored, status) == ({"$type": collection}, "valid")
    if wrong is None:
        return
    for validate in (None, True):
        with pytest.raises(InvalidLexiconData) as info:
            prepare_record(REG, collection, wrong, {}, validate=validate)
        assert (info.value.path, info.value.rule, info.value.nsid) == ("", "key", collection)
    assert prepare_record(REG, collection, wrong, {}, validate=False) == ({"$type": collection}, None)


def test_bsky_key_types() -> None:
    reg = builtin_registry()
    assert prepare_record(reg, POST, TID, post())[1] == "valid"
    with pytest.raises(InvalidLexiconData) as info:
        prepare_record(reg, POST, "self", post())
    assert info.value.rule == "key"
    profile = {"$type": "app.bsky.actor.profile"}
    assert prepare_record(reg, "app.bsky.actor.profile", "self", profile)[1] == "valid"
    with pytest.raises(InvalidLexiconData) as info:
        prepare_record(reg, "app.bsky.actor.profile", TID, profile)
    assert info.value.rule == "key"


# --- prepare_record ---------------------------------------------------------------------------


def _request_error(call: Any, path: str, rule: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call()
    assert (info.value.path, info.value.rule) == (path, rule), str(info.value)
    assert info.value.xrpc_error == "InvalidRequest" and info.value.http_status == 400
    return info.value


def test_prepare_record_statuses() -> None:
    value = record(count=1)
    assert prepare_record(REG, NSID, TID, value) == (value, "valid")
    assert prepare_record(REG, NSID, TID, value, validate=True) == (value, "valid")
    assert prepare_record(REG, NSID, TID, value, validate=False) == (value, None)
    unknown = {"$type": "com.example.unknown", "x": [1]}
    assert prepare_record(REG, "com.example.unknown", "any", unknown) == (unknown, "unknown")
    assert prepare_record(REG, "com.example.unknown", "any", unknown, validate=False) == (unknown, None)


def test_prepare_record_validates_unless_told_not_to() -> None:
    value = record(count=11)
    for validate in (None, True):
        with pytest.raises(InvalidLexiconData) as info:
            prepare_record(REG, NSID, TID, value, validate=validate)
        assert (info.value.path, info.value.rule, info.value.nsid) == ("count", "maximum", NSID)
    assert prepare_record(REG, NSID, TID, value, validate=False) == (value, None)
    assert prepare_record(REG, NSID, TID, {"$type": NSID}, validate=False)[1] is None


def test_prepare_record_fills_in_a_missing_type() -> None:
    sent = {"req": "r"}
    for validate in (None, True, False):
        stored, _ = prepare_record(REG, NSID, TID, sent, validate=validate)
        assert stored == {"req": "r", "$type": NSID}
    assert sent == {"req": "r"}  # the caller's value is not changed
    stored, status = prepare_record(REG, "com.example.unknown", TID, {})
    assert (stored, status) == ({"$type": "com.example.unknown"}, "unknown")


@pytest.mark.parametrize("validate", [None, True, False])
@pytest.mark.parametrize("type_", [OTHER, f"{NSID}#main", NSID.upper(), "", 7])
def test_prepare_record_type_mismatch(validate: bool | None, type_: Any) -> None:
    err = _request_error(
        lambda: prepare_record(REG, NSID, TID, {**record(), "$type": type_}, validate=validate),
        "record/$type",
        "$type",
    )
    assert str(err).startswith(f"Invalid $type: expected {NSID}, got ")


@pytest.mark.parametrize("validate", [None, True, False])
def test_prepare_record_refuses_legacy_blobs_always(validate: bool | None) -> None:
    for collection, value in [
        (NSID, record(anyBlob=legacy_blob())),
        (NSID, record(unk={"deep": [{"x": legacy_blob()}]})),
        ("com.example.unknown", {"$type": "com.example.unknown", "b": legacy_blob()}),
    ]:
        if validate is True and collection == "com.example.unknown":
            continue
        err = _request_error(
            lambda c=collection, v=value: prepare_record(REG, c, TID, v, validate=validate), "record", "blob"
        )
        assert str(err) == f"Legacy blobs are not allowed ({BLOB_CID})"


def test_find_legacy_blob() -> None:
    assert find_legacy_blob(record()) is None
    assert find_legacy_blob(record(anyBlob=blob())) is None
    assert find_legacy_blob({"a": [1, {"b": legacy_blob()}]}) == str(BLOB_CID)
    assert find_legacy_blob({"cid": str(BLOB_CID), "mimeType": "x", "size": 1}) is None
    assert find_legacy_blob({"cid": BLOB_CID, "mimeType": "x"}) is None
    # as the reference PDS: only a CID string with a non-empty mimeType is a legacy blob
    assert find_legacy_blob({"cid": "hello", "mimeType": "text/plain"}) is None
    assert find_legacy_blob({"cid": str(BLOB_CID), "mimeType": ""}) is None


def test_prepare_record_keeps_look_alikes_of_legacy_blobs() -> None:
    for look_alike in ({"cid": "hello", "mimeType": "text/plain"}, {"cid": str(BLOB_CID), "mimeType": ""}):
        value = record(unk={"x": look_alike})
        assert prepare_record(REG, NSID, TID, value) == (value, "valid")


def test_prepare_record_unknown_type_with_validate_true() -> None:
    err = _request_error(
        lambda: prepare_record(REG, "com.example.unknown", TID, {}, validate=True),
        "record/$type",
        "unknown-type",
    )
    assert str(err) == "Unknown lexicon type: com.example.unknown"
    # a def that exists but is not a record is an unknown record type too
    _request_error(lambda: prepare_record(REG, PLAIN, TID, {}, validate=True), "record/$type", "unknown-type")


@pytest.mark.parametrize("rkey", ["", ".", "..", "a/b", "a b", "x" * 513, "caf\u00e9"])
def test_prepare_record_refuses_bad_record_keys(rkey: str) -> None:
    for validate in (None, True, False):
        _request_error(
            lambda v=validate: prepare_record(REG, NSID, rkey, record(), validate=v), "rkey", "record-key"
        )


@pytest.mark.parametrize("value", [[], "x", None, 1])
def test_prepare_record_needs_an_object(value: Any) -> None:
    _request_error(lambda: prepare_record(REG, NSID, TID, value), "record", "type")


# --- hostile lexicons: messages stay short (found by the lexicon fuzz target) -----------------


def test_long_def_and_property_names_are_shortened_in_messages() -> None:
    long = "d" * 2000
    with pytest.raises(InvalidLexicon) as info:
        parse_document({"lexicon": 1, "id": "com.example.long", "defs": {long: {"type": "integer"}}})
    assert info.value.rule == "def-name" and len(str(info.value)) <= 600
    assert info.value.path == f"defs/{long}"  # the attribute is exact; only the message shortens it
    nested: dict[str, Any] = {"type": "string", "maxLength": "x"}
    for i in range(20):
        nested = {"type": "object", "properties": {f"{i}{long}": nested}}
    with pytest.raises(InvalidLexicon) as info:
        parse_document({"lexicon": 1, "id": "com.example.long", "defs": {"main": nested}})
    assert info.value.rule == "type" and len(str(info.value)) <= 600
    assert info.value.path.startswith("defs/main/properties/") and info.value.path.endswith("/maxLength")


def test_long_type_names_are_quoted_short() -> None:
    nsid = ".".join(["a" * 63] * 4) + "." + "r" * 61  # a valid NSID of the longest length, 317
    many = [f"{nsid}#{'x' * 100}{i}" for i in range(10)]
    reg = Registry(
        [
            {
                "lexicon": 1,
                "id": nsid,
                "defs": {
                    "main": {
                        "type": "record",
                        "key": "any",
                        "record": {
                            "type": "object",
                            "properties": {
                                "u": {"type": "union", "refs": many, "closed": True},
                                "e": {"type": "string", "enum": [f"{'v' * 50}{i}" for i in range(10)]},
                            },
                        },
                    },
                    **{ref.partition("#")[2]: {"type": "object", "properties": {}} for ref in many},
                },
            }
        ]
    )
    for value, path, rule in [
        ({}, "$type", "required"),
        ({"$type": nsid + "x"}, "$type", "$type"),
        ({"$type": nsid, "u": {"$type": "com.example.other"}}, "u/$type", "closed-union"),
        ({"$type": nsid, "e": "w"}, "e", "enum"),
    ]:
        err = bad(value, path, rule, reg=reg, nsid=nsid)
        assert len(str(err)) <= 600, str(err)


def test_long_paths_and_nsids_are_shortened_in_data_error_messages() -> None:
    long = "p" * 3000
    doc = {
        "lexicon": 1,
        "id": "com.example.deep",
        "defs": {"main": {"type": "object", "properties": {long: {"type": "integer"}}}},
    }
    reg = Registry([doc])
    with pytest.raises(InvalidLexiconData) as info:
        reg.validate("com.example.deep", {long: "x"})
    assert info.value.path == long and info.value.rule == "type"
    assert len(str(info.value)) <= 600
    dangling = {
        "lexicon": 1,
        "id": "com.example.dangling",
        "defs": {"main": {"type": "object", "properties": {long: {"type": "ref", "ref": "#nowhere"}}}},
    }
    with pytest.raises(InvalidLexicon) as linfo:
        Registry([dangling])
    assert linfo.value.rule == "unresolved-ref" and len(str(linfo.value)) <= 600
