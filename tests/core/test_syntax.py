"""Identifier validators against the interop fixtures, plus rules the fixtures miss."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atrepo.core import syntax
from atrepo.core.errors import InvalidSyntax
from atrepo.core.syntax import (
    format_datetime,
    is_valid,
    normalize_at_uri,
    normalize_handle,
    normalize_nsid,
    parse_datetime,
    validate,
    validate_at_identifier,
    validate_at_uri,
    validate_cid_string,
    validate_datetime,
    validate_did,
    validate_handle,
    validate_language,
    validate_nsid,
    validate_record_key,
    validate_repo_path,
    validate_tid,
    validate_uri,
)

FIXTURES = Path(__file__).resolve().parent.parent / "interop" / "syntax"

#: Fixture file prefix -> (kind name used in errors, validator).
FILE_KINDS: dict[str, tuple[str, Callable[[object], None]]] = {
    "atidentifier": ("at-identifier", validate_at_identifier),
    "aturi": ("at-uri", validate_at_uri),
    "cid": ("cid", validate_cid_string),
    "datetime": ("datetime", validate_datetime),
    "did": ("did", validate_did),
    "handle": ("handle", validate_handle),
    "language": ("language", validate_language),
    "nsid": ("nsid", validate_nsid),
    "recordkey": ("record-key", validate_record_key),
    "tid": ("tid", validate_tid),
    "uri": ("uri", validate_uri),
}


def _fixture_cases(suffix: str) -> list[object]:
    """One param per test line; only the LF terminator is removed, nothing stripped."""
    cases: list[object] = []
    for prefix in sorted(FILE_KINDS):
        path = FIXTURES / f"{prefix}_syntax_{suffix}.txt"
        text = path.read_bytes().decode("utf-8")
        for number, line in enumerate(text.split("\n"), start=1):
            if not line or line.startswith("#"):
                continue
            cases.append(pytest.param(prefix, line, id=f"{prefix}_{suffix}:L{number}"))
    return cases


VALID_CASES = _fixture_cases("valid")
INVALID_CASES = _fixture_cases("invalid")


def test_every_fixture_file_is_used() -> None:
    names = {p.name for p in FIXTURES.glob("*_syntax_*.txt")}
    expected = {f"{k}_syntax_{s}.txt" for k in FILE_KINDS for s in ("valid", "invalid")}
    assert names == expected
    assert len(VALID_CASES) == 244
    assert len(INVALID_CASES) == 281


@pytest.mark.parametrize(("prefix", "line"), VALID_CASES)
def test_fixture_valid(prefix: str, line: str) -> None:
    kind, check = FILE_KINDS[prefix]
    assert check(line) is None
    assert validate(kind, line) is None
    assert is_valid(kind, line)


@pytest.mark.parametrize(("prefix", "line"), INVALID_CASES)
def test_fixture_invalid(prefix: str, line: str) -> None:
    kind, check = FILE_KINDS[prefix]
    with pytest.raises(InvalidSyntax) as info:
        check(line)
    assert info.value.kind == kind
    assert info.value.value == line
    assert isinstance(info.value.rule, str)
    assert info.value.rule
    assert not is_valid(kind, line)


# --- Rule messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "rule"),
    [
        ("handle", "short." + "o" * 64 + ".test", "label longer than 63 characters"),
        ("handle", "john.0", "TLD starts with a digit"),
        ("handle", "john..test", "empty label (leading, trailing or doubled '.')"),
        ("handle", "john", "fewer than two labels"),
        ("handle", "-john.test", "label starts with a hyphen"),
        ("handle", "bücher.test", "non-ASCII character"),
        ("handle", "john.test ", "contains whitespace"),
        ("handle", "a" * 254, "longer than 253 characters"),
        ("did", "DID:method:val", "does not start with lower-case 'did:'"),
        ("did", "did:METHOD:val", "method is not lower-case letters"),
        ("did", "did:method:val:", "ends with ':'"),
        ("did", "did:method:val#frag", "disallowed character '#'"),
        ("nsid", "com.example.fooBar.2", "name starts with a digit"),
        ("nsid", "com.example.*", "globs are not NSIDs"),
        ("nsid", "example.com", "fewer than three segments"),
        ("nsid", "0two.example.foo", "first segment (TLD) starts with a digit"),
        ("tid", "kjzfcijpj2z2a", "top bit set (first character after 'j')"),
        ("tid", "3jzfcijpj2z2", "not 13 characters"),
        ("record-key", "..", "'.' and '..' are not record keys"),
        ("record-key", "a%20b", "disallowed character '%'"),
        ("at-uri", "at://did:plc:asdf123/", "trailing slash"),
        ("at-uri", "at://did:plc:asdf123#frag", "fragment not allowed"),
        ("at-uri", "at://did:plc:asdf123?q=1", "query not allowed"),
        ("at-uri", "at://a.com/com.example.foo/a/b", "more than two path segments"),
        ("at-uri", "at://name.0", "authority: TLD starts with a digit"),
        ("at-uri", "at://did:plc:x/short/x", "collection: fewer than three segments"),
        ("datetime", "1985-13-12T23:20:50Z", "month out of range"),
        ("datetime", "2023-02-29T00:00:00Z", "day out of range for the month"),
        ("datetime", "1985-04-12T24:00:00Z", "hour out of range"),
        ("datetime", "1985-04-12T23:60:00Z", "minute out of range"),
        ("datetime", "1985-04-12T23:59:61Z", "second out of range"),
        ("datetime", "1985-04-12T23:20:50.123-00:00", "offset -00:00 not allowed"),
        ("datetime", "1985-04-12T23:20:50+24:00", "offset hour out of range"),
        ("datetime", "1985-04-12T23:20:50+01:60", "offset minute out of range"),
        ("datetime", "0000-01-01T00:00:00+01:00", "instant before year 0000"),
        ("datetime", "9999-12-31T23:30:00-01:00", "instant after year 9999"),
        ("datetime", "1985-04-12T23:20:50z", "'Z' must be upper case"),
        ("datetime", "1985-04-12T23:20:50", "missing timezone"),
        ("datetime", "2016-12-31T12:00:60Z", "second 60 outside the leap-second minute (23:59 UTC)"),
        ("language", "JA", "primary language subtag is not lower case"),
        ("language", "jaja", "primary language subtag is not 2-3 letters"),
        ("language", "ja-", "empty subtag (leading, trailing or doubled '-')"),
        ("language", "de-1901-1901", "duplicate variant subtag '1901'"),
        ("language", "sl-rozaj-ROZAJ", "duplicate variant subtag 'rozaj'"),
        ("language", "en-u-co-phonebk-U-nu-thai", "duplicate extension singleton 'u'"),
        ("cid", "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR", "CIDv0 not allowed"),
        ("cid", "bafy", "shorter than 8 characters"),
        ("uri", "http:", "empty after the scheme"),
        ("uri", "example.com", "missing scheme"),
        ("repo-path", "app.bsky.feed.post", "not exactly one '/'"),
        ("repo-path", "app.bsky.feed.post/a/b", "not exactly one '/'"),
        ("repo-path", "app.bsky/abc", "collection: fewer than three segments"),
        ("repo-path", "app.bsky.feed.post/..", "record key: '.' and '..' are not record keys"),
        ("repo-path", "app.bsky.feed.post/" + "é" * 600, "longer than 1024 bytes"),
    ],
)
def test_rule_messages(kind: str, value: str, rule: str) -> None:
    with pytest.raises(InvalidSyntax) as info:
        validate(kind, value)
    assert info.value.kind == kind
    assert info.value.rule == rule
    assert rule in str(info.value)
    assert not is_valid(kind, value)


# --- Rules beyond the fixtures ----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(syntax.KINDS))
@pytest.mark.parametrize("value", [None, 123, b"did:plc:abc", ["x"]], ids=repr)
def test_non_strings_rejected(kind: str, value: object) -> None:
    with pytest.raises(InvalidSyntax, match="not a string"):
        validate(kind, value)
    assert not is_valid(kind, value)


GOOD_EXAMPLES = {
    "at-identifier": "alice.bsky.social",
    "at-uri": "at://did:plc:7iza6de2dwap2sbkpav7c6c6/app.bsky.feed.post/3jzfcijpj2z2a",
    "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
    "datetime": "2024-01-15T12:30:00.000Z",
    "did": "did:plc:7iza6de2dwap2sbkpav7c6c6",
    "handle": "alice.bsky.social",
    "language": "en-GB",
    "nsid": "app.bsky.feed.post",
    "record-key": "self",
    "repo-path": "app.bsky.feed.post/3jzfcijpj2z2a",
    "tid": "3jzfcijpj2z2a",
    "uri": "https://example.com/",
}


@pytest.mark.parametrize("kind", sorted(syntax.KINDS))
def test_trailing_newline_and_unicode_digits_rejected(kind: str) -> None:
    good = GOOD_EXAMPLES[kind]
    validate(kind, good)
    for bad in (good + "\n", good + "\u0661", "\u0661" + good):  # ARABIC-INDIC DIGIT ONE
        with pytest.raises(InvalidSyntax):
            validate(kind, bad)


def test_kinds_cover_every_validator() -> None:
    assert set(syntax.KINDS) == set(GOOD_EXAMPLES)
    with pytest.raises(ValueError, match="unknown syntax kind"):
        validate("email", "a@b.c")
    with pytest.raises(ValueError, match="unknown syntax kind"):
        is_valid("email", "a@b.c")


@pytest.mark.parametrize(
    "value",
    [
        "2000-02-29T00:00:00Z",  # divisible by 400: leap
        "2024-02-29T00:00:00Z",
        "0000-02-29T00:00:00Z",  # proleptic year 0 is a leap year
        "2016-12-31T23:59:60Z",
        "1990-12-31T15:59:60-08:00",  # RFC 3339's own leap second example
        "0000-01-01T00:00:00-01:00",
        "9999-12-31T23:30:00+01:00",
        "9999-12-31T23:59:59.999999Z",
        "1985-04-12T23:20:50+23:59",
    ],
)
def test_datetime_semantic_edges_valid(value: str) -> None:
    validate_datetime(value)


@pytest.mark.parametrize(
    "value",
    ["1900-02-29T00:00:00Z", "2023-04-31T00:00:00Z", "2023-00-10T00:00:00Z", "2023-01-00T00:00:00Z"],
)
def test_datetime_semantic_edges_invalid(value: str) -> None:
    with pytest.raises(InvalidSyntax, match="out of range"):
        validate_datetime(value)


def test_parse_datetime() -> None:
    assert parse_datetime("1985-04-12T23:20:50.123456789Z") == datetime(
        1985, 4, 12, 23, 20, 50, 123456, tzinfo=UTC
    )
    moment = parse_datetime("1985-04-12T23:20:50.5-07:00")
    assert moment.utcoffset() == timedelta(hours=-7)
    assert moment == datetime(1985, 4, 13, 6, 20, 50, 500000, tzinfo=UTC)
    assert parse_datetime("2016-12-31T23:59:60Z") == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    with pytest.raises(InvalidSyntax, match="cannot be represented"):
        parse_datetime("0000-01-01T00:00:00Z")
    with pytest.raises(InvalidSyntax, match="month out of range"):
        parse_datetime("1985-13-12T23:20:50Z")


def test_format_datetime() -> None:
    moment = datetime(2024, 1, 15, 14, 30, 0, 123999, tzinfo=timezone(timedelta(hours=2)))
    text = format_datetime(moment)
    assert text == "2024-01-15T12:30:00.123Z"
    validate_datetime(text)
    with pytest.raises(ValueError, match="naive"):
        format_datetime(datetime(2024, 1, 15))


@pytest.mark.parametrize(
    "value",
    [
        "sgn-be-nl",
        "i-DEFAULT",
        "zh-min-nan",
        "en-a-bbb-x-a-ccc",
        "de-x-aa-aa",
        "x-private",
        "en-Latn-US-u-ca-gregory",
    ],
)
def test_language_more_valid(value: str) -> None:
    validate_language(value)


@pytest.mark.parametrize("value", ["I-default", "SGN-BE-NL", "en-x", "en-abcdefghi", "en--GB", "x"])
def test_language_more_invalid(value: str) -> None:
    with pytest.raises(InvalidSyntax):
        validate_language(value)


def test_repo_path() -> None:
    validate_repo_path("app.bsky.feed.post/3jzfcijpj2z2a")
    validate_repo_path("com.example.record/self.")
    validate_repo_path("a.b." + "c" * 63 + "/" + "k" * 512)
    # The collection is now remembered as valid; that must not let bad rkeys through.
    for bad in (
        "/abc",
        "app.bsky.feed.post",
        "app.bsky.feed.post/",
        "app.bsky.feed.post/.",
        "app.bsky.feed.post/a b",
        "app.bsky.feed.post/a/b",
        "app.bsky.feed.post/" + "k" * 513,
    ):
        with pytest.raises(InvalidSyntax) as info:
            validate_repo_path(bad)
        assert info.value.kind == "repo-path"


def test_normalization() -> None:
    assert normalize_handle("Alice.Bsky.SOCIAL") == "alice.bsky.social"
    assert normalize_nsid("COM.Example.fooBar") == "com.example.fooBar"
    assert (
        normalize_at_uri("at://Alice.Bsky.Social/COM.Example.fooBar/AbC")
        == "at://alice.bsky.social/com.example.fooBar/AbC"
    )
    assert normalize_at_uri("at://did:web:Example.com") == "at://did:web:Example.com"
    with pytest.raises(InvalidSyntax):
        normalize_handle("john.0")
    with pytest.raises(InvalidSyntax):
        normalize_at_uri("at://john.0")


def test_long_values_are_rejected_quickly() -> None:
    """Length is checked before any regex runs, so huge inputs cost little."""
    huge = "a." * 500_000 + "com"
    for kind in syntax.KINDS:
        assert not is_valid(kind, huge)


# --- Properties -------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _label_ok(label: str) -> bool:
    return 1 <= len(label) <= 63 and set(label) <= set(_ALNUM + "-") and label[0] != "-" and label[-1] != "-"


def _reference_handle(value: str) -> bool:
    """The handle rules restated label by label, to cross-check the regex."""
    labels = value.split(".")
    return (
        len(value) <= 253
        and len(labels) >= 2
        and all(_label_ok(label) for label in labels)
        and labels[-1][0].isalpha()
    )


def _reference_nsid(value: str) -> bool:
    segments = value.split(".")
    name = segments[-1]
    return (
        len(value) <= 317
        and len(segments) >= 3
        and all(_label_ok(seg) for seg in segments[:-1])
        and segments[0][0].isalpha()
        and 1 <= len(name) <= 63
        and set(name) <= set(_ALNUM)
        and name[0].isalpha()
    )


_dns_text = st.text(alphabet="aZ09-.", max_size=24) | st.builds(
    ".".join,
    st.lists(st.text(alphabet="ab9-", min_size=0, max_size=66), min_size=1, max_size=5),
)


@given(_dns_text)
def test_handle_regex_matches_reference(value: str) -> None:
    assert syntax.is_valid_handle(value) == _reference_handle(value)


@given(_dns_text)
def test_nsid_regex_matches_reference(value: str) -> None:
    assert syntax.is_valid_nsid(value) == _reference_nsid(value)
    path = value + "/self"
    assert syntax.is_valid_repo_path(path) == _reference_nsid(value)


@given(st.sampled_from(sorted(syntax.KINDS)), st.text(alphabet="aZ09-.:/_%#?@ T+=z", max_size=30))
def test_boolean_and_raising_forms_agree(kind: str, value: str) -> None:
    try:
        validate(kind, value)
    except InvalidSyntax as exc:
        assert exc.rule
        assert not is_valid(kind, value)
    else:
        assert is_valid(kind, value)
