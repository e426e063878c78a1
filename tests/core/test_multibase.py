"""Base32, base58btc and base64 codecs: exact round trips and strict rejection."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core.multibase import (
    B58_ALPHABET,
    b32decode,
    b32encode,
    b58decode,
    b58encode,
    b64decode_loose,
    b64encode_unpadded,
    b64url_decode_strict,
    b64url_encode,
)

# --- base32 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"f", "my"),
        (b"fo", "mzxq"),
        (b"foo", "mzxw6"),
        (b"foob", "mzxw6yq"),
        (b"fooba", "mzxw6ytb"),
        (b"foobar", "mzxw6ytboi"),
        (b"\x00", "aa"),
        (b"\x01", "ae"),
        (b"\xff" * 5, "77777777"),
    ],
)
def test_b32_vectors(raw: bytes, text: str) -> None:
    """RFC 4648 test vectors, lower case and unpadded."""
    assert b32encode(raw) == text
    assert b32decode(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "MZXW6",  # upper case
        "mzxW6",
        "mzxw6===",  # padding
        "my======",
        "m",  # impossible lengths: 1, 3 and 6 characters
        "mzx",
        "mzxw6y",
        "mz",  # non-zero trailing bits
        "mzxr",
        "mzxw7",
        "mzxw6yr",
        "mzxw6ytboj",
        "mzx0",  # outside the alphabet
        "mzx1",
        "mzx8",
        "mzx9",
        "mzx w6",
        "mzxw6\n",
        "mzxw-",
        "é",
    ],
)
def test_b32_rejections(text: str) -> None:
    with pytest.raises(ValueError):
        b32decode(text)


# --- base58btc ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"\x00", "1"),
        (b"\x00\x00\x01", "112"),
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (b"\x00\x00\x28\x7f\xb4\xcd", "11233QC4"),
        (b"\xff", "5Q"),
    ],
)
def test_b58_vectors(raw: bytes, text: str) -> None:
    assert b58encode(raw) == text
    assert b58decode(text) == raw


@pytest.mark.parametrize("text", ["0", "O", "I", "l", "abc0", "2NEpo7TZRRrLZSi2U ", "+", "é", "z-"])
def test_b58_rejections(text: str) -> None:
    with pytest.raises(ValueError):
        b58decode(text)


def test_b58_alphabet() -> None:
    assert len(B58_ALPHABET) == 58
    assert not set("0OIl") & set(B58_ALPHABET)


# --- base64 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("", b""),
        ("Zg", b"f"),
        ("Zg==", b"f"),
        ("Zm8", b"fo"),
        ("Zm8=", b"fo"),
        ("Zm9v", b"foo"),
        ("Zm9vYmFy", b"foobar"),
        ("+/8", b"\xfb\xff"),
    ],
)
def test_b64_loose_accepts_padded_and_unpadded(text: str, raw: bytes) -> None:
    assert b64decode_loose(text) == raw


def test_b64_loose_tolerates_trailing_bits() -> None:
    """Loose by design: non-zero unused bits are ignored, as JSON ``$bytes`` readers do."""
    assert b64decode_loose("Zh") == b"f"


@pytest.mark.parametrize(
    "text",
    ["Z", "Zm9vY", "-_8", "Zm_v", "Zm9v\n", "Zm 9v", "Zg=A", "Zg==Zg", "====", "Zg===", "Zm9v!", "é"],
)
def test_b64_loose_rejections(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_loose(text)


def test_b64_unpadded_encode() -> None:
    assert b64encode_unpadded(b"f") == "Zg"
    assert b64encode_unpadded(b"foo") == "Zm9v"
    assert b64encode_unpadded(b"\xfb\xff") == "+/8"
    assert b64encode_unpadded(b"") == ""


@pytest.mark.parametrize(("raw", "text"), [(b"", ""), (b"f", "Zg"), (b"\xfb\xff", "-_8"), (b"foo", "Zm9v")])
def test_b64url(raw: bytes, text: str) -> None:
    assert b64url_encode(raw) == text
    assert b64url_decode_strict(text) == raw


@pytest.mark.parametrize("text", ["Zg==", "Zg=", "+/8", "Zh", "Z", "Zm9v\n", "Zm 9v", "Zm9v!", "é"])
def test_b64url_strict_rejections(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode_strict(text)


# --- properties --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_property_round_trips(raw: bytes) -> None:
    assert b32decode(b32encode(raw)) == raw
    assert b32encode(raw) == base64.b32encode(raw).decode().rstrip("=").lower()
    assert b58decode(b58encode(raw)) == raw
    assert b64decode_loose(b64encode_unpadded(raw)) == raw
    assert b64decode_loose(base64.b64encode(raw).decode()) == raw
    assert b64url_decode_strict(b64url_encode(raw)) == raw


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567ABZ=01 ", max_size=24))
def test_property_b32_is_unique(text: str) -> None:
    """Every accepted string is the one canonical encoding of its bytes."""
    try:
        raw = b32decode(text)
    except ValueError:
        return
    assert b32encode(raw) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=B58_ALPHABET + "0OIl", max_size=24))
def test_property_b58_is_unique(text: str) -> None:
    try:
        raw = b58decode(text)
    except ValueError:
        return
    assert b58encode(raw) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCZabcz0189+/-_= ", max_size=24))
def test_property_b64url_is_unique(text: str) -> None:
    try:
        raw = b64url_decode_strict(text)
    except ValueError:
        return
    assert b64url_encode(raw) == text
