"""Every syntax validator, on the input and (one input in 16) on it repeated to 100k characters.

The long form is against regex backtracking: a validator must stay linear
however long and repetitive the string. ``is_valid`` and ``validate`` must
agree, and normalizers must return valid values.
"""

from __future__ import annotations

from atrepo.core import syntax
from atrepo.core.errors import InvalidSyntax

from .harness import check_error

LONG = 100_000


def _check(text: str) -> None:
    for kind in syntax.KINDS:
        ok = syntax.is_valid(kind, text)
        try:
            syntax.validate(kind, text)
        except InvalidSyntax as exc:
            check_error(exc)
            assert not ok, (kind, text[:100])
        else:
            assert ok, (kind, text[:100])
    for normalize, kind in (
        (syntax.normalize_handle, "handle"),
        (syntax.normalize_nsid, "nsid"),
        (syntax.normalize_at_uri, "at-uri"),
    ):
        try:
            out = normalize(text)
        except InvalidSyntax as exc:
            check_error(exc)
        else:
            assert syntax.is_valid(kind, out), (kind, text[:100])
    try:
        when = syntax.parse_datetime(text)
    except InvalidSyntax as exc:
        check_error(exc)
    else:
        # An instant outside years 1-9999 in UTC may refuse to format (typed);
        # anything formatted must be a valid datetime.
        try:
            shown = syntax.format_datetime(when)
        except InvalidSyntax as exc:
            check_error(exc)
        else:
            assert syntax.is_valid("datetime", shown), shown


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0], data[1:]
    text = body.decode("utf-8", "surrogateescape")
    _check(text)
    if mode & 0x0F == 0 and text:
        _check((text * (LONG // len(text) + 1))[:LONG])
