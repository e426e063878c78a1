"""Regressions found by fuzzing or reported against decoders, outside the MST/identity/datamodel suites."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from atrepo.core.car import CarReader, read_car
from atrepo.core.cid import CID
from atrepo.core.errors import InvalidCAR, InvalidCID, InvalidSyntax
from atrepo.core.syntax import format_datetime, is_valid_datetime, parse_datetime


@pytest.mark.parametrize(
    ("data", "offset", "words"),
    [
        (b"\x02\xa1\xff", 2, "indefinite-length"),
        (b"\x01\xff", 1, "indefinite-length"),
        (b"\x03\xa1\x61\x00", 4, "unexpected end"),
        (b"\x05\xa2\x61a\x01\x00", 5, "map key is not a text string"),
    ],
    ids=["inner-offset", "first-byte", "truncated", "map-key"],
)
def test_bad_car_header_names_one_location_in_file_bytes(data: bytes, offset: int, words: str) -> None:
    """Regression: the decoder's offset and the header's both ended the message ("at byte 1 at byte 1").

    The one location left is in file bytes: the header's start plus the offset inside it.
    """
    for parse in (lambda: read_car(data), lambda: CarReader(io.BytesIO(data))):
        with pytest.raises(InvalidCAR) as info:
            parse()
        message = str(info.value)
        assert message.count("at byte") == 1, message
        assert message.endswith(f"at byte {offset}") and info.value.offset == offset, message
        assert words in message


def test_datetime_before_year_1000_formats_with_four_digits() -> None:
    """Found by the syntax target: strftime wrote year 992 as "992", an invalid datetime."""
    moment = parse_datetime("0992-04-12T23:20:50.123Z")
    assert format_datetime(moment) == "0992-04-12T23:20:50.123Z"
    assert is_valid_datetime(format_datetime(datetime(1, 1, 1, tzinfo=UTC)))


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59.999+01:00"])
def test_datetime_whose_utc_instant_is_in_year_zero(text: str) -> None:
    """Found by the syntax target: a valid local time in year 1 made format_datetime raise OverflowError."""
    moment = parse_datetime(text)
    with pytest.raises(InvalidSyntax, match="outside years 0001-9999"):
        format_datetime(moment)


def test_cid_string_errors_quote_little() -> None:
    """Found by the cid target: a 256-character string of escapes made a 900-character message."""
    for text in ("\udcdf" * 200, "B" * 200, "b" + "\x00" * 200):
        with pytest.raises(InvalidCID) as info:
            CID.parse(text)
        assert len(str(info.value)) < 400, str(info.value)
