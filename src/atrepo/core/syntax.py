"""Validators for atproto identifiers and Lexicon string formats.

Conventions, the same for every kind:

* ``validate_<kind>(value)`` returns ``None`` when ``value`` is valid and raises
  :class:`~atrepo.core.errors.InvalidSyntax` otherwise, whose ``rule`` names the
  rule that was broken. Validators never normalize: records must round-trip
  verbatim, so changing a value is a separate, explicit step
  (:func:`normalize_handle`, :func:`normalize_nsid`, :func:`normalize_at_uri`,
  which validate first).
* ``is_valid_<kind>(value)`` is the same decision as a boolean, for branching.
* Both accept any object (decoded CBOR/JSON may hold anything); a non-string is
  simply invalid.

Speed: these run on every firehose event, so the decision is one precompiled
``re.fullmatch`` plus length checks (the ``is_valid_*`` functions; datetimes and
language tags add a few integer checks, and NSIDs already seen skip the regex).
Only when that fails does a slower walk over the value find the rule to report;
that walk never accepts, and ends in a generic rule when nothing more specific
applies.
Regexes use explicit ASCII classes (``[0-9]``, never ``\\d``/``\\w``, which match
other scripts' digits and letters) and ``fullmatch`` (``$`` would accept a
trailing newline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Final, NoReturn, TypeGuard

from atrepo.core.errors import InvalidSyntax
from atrepo.core.limits import (
    MAX_ATURI_LENGTH,
    MAX_CID_STRING_LENGTH,
    MAX_DATETIME_LENGTH,
    MAX_DID_LENGTH,
    MAX_HANDLE_LENGTH,
    MAX_LANGUAGE_LENGTH,
    MAX_MST_KEY_BYTES,
    MAX_NSID_LENGTH,
    MAX_RKEY_LENGTH,
    MAX_URI_LENGTH,
    MIN_CID_STRING_LENGTH,
)

__all__ = [
    "KINDS",
    "format_datetime",
    "is_valid",
    "is_valid_at_identifier",
    "is_valid_at_uri",
    "is_valid_cid_string",
    "is_valid_datetime",
    "is_valid_did",
    "is_valid_handle",
    "is_valid_language",
    "is_valid_nsid",
    "is_valid_record_key",
    "is_valid_repo_path",
    "is_valid_tid",
    "is_valid_uri",
    "normalize_at_uri",
    "normalize_handle",
    "normalize_nsid",
    "parse_datetime",
    "validate",
    "validate_at_identifier",
    "validate_at_uri",
    "validate_cid_string",
    "validate_datetime",
    "validate_did",
    "validate_handle",
    "validate_language",
    "validate_nsid",
    "validate_record_key",
    "validate_repo_path",
    "validate_tid",
    "validate_uri",
]

# --- Regexes (decide validity; lengths are checked separately) ----------------

#: One DNS label: 1-63 chars, alphanumeric at both ends, hyphens inside. Written
#: with lookarounds rather than "{0,61}[A-Za-z0-9]" so the run never backtracks.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
#: Same, but must start with a letter (handle TLD, NSID first segment).
_ALPHA_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]{0,62}(?<!-))?"

_HANDLE_RE: Final = re.compile(rf"(?:{_LABEL}\.)+{_ALPHA_LABEL}")
_DID_RE: Final = re.compile(r"did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-]")
_NSID_BODY = rf"{_ALPHA_LABEL}(?:\.{_LABEL})+\.[A-Za-z][A-Za-z0-9]{{0,62}}"
_NSID_RE: Final = re.compile(_NSID_BODY)
_TID_RE: Final = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
#: The exact values "." and ".." are excluded by the lookahead.
_RKEY_BODY = r"(?!\.\.?\Z)[A-Za-z0-9._:~-]{1,512}"
_RKEY_RE: Final = re.compile(_RKEY_BODY)
#: Group 1 is the NSID, so its length can be checked without splitting.
_REPO_PATH_RE: Final = re.compile(rf"({_NSID_BODY})/{_RKEY_BODY}")
#: The whole restricted at-uri; group lengths are checked after the match.
_AT_URI_RE: Final = re.compile(
    rf"at://(?:(?P<did>{_DID_RE.pattern})|(?P<handle>{_HANDLE_RE.pattern}))"
    rf"(?:/(?P<nsid>{_NSID_BODY})(?:/(?P<rkey>{_RKEY_BODY}))?)?"
)
_CID_RE: Final = re.compile(r"[A-Za-z0-9+=]{8,256}")
_CIDV0_RE: Final = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}")
#: Scheme, then a non-empty rest of printable, non-space ASCII.
_URI_RE: Final = re.compile(r"[a-z][a-z0-9.+-]{0,80}:[!-~]+")
_DATETIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
#: A subset of valid datetimes decided by the regex alone (the usual shape of
#: a record's ``createdAt``): UTC ``Z``, days 01-28 (in every month), hours,
#: minutes and seconds in range. Anything else takes the full check.
_COMMON_DATETIME_RE: Final = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?Z"
)
#: BCP 47 langtag with atproto's lower-case 2-3 letter primary subtag, or a
#: private-use-only tag. Named groups feed the duplicate checks.
_LANGUAGE_RE: Final = re.compile(
    r"[a-z]{2,3}(?:-[A-Za-z]{3}){0,3}"  # language, extlangs
    r"(?:-[A-Za-z]{4})?"  # script
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?"  # region
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
    r"(?P<extensions>(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*)"
    r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?"  # private use
    r"|[xX](?:-[A-Za-z0-9]{1,8})+"
)
#: RFC 5646 grandfathered tags, lower-cased (matched case-insensitively after
#: the primary subtag, like every other tag).
_GRANDFATHERED: Final = frozenset(
    tag.lower()
    for tag in (
        "en-GB-oed",
        "sgn-BE-FR",
        "sgn-BE-NL",
        "sgn-CH-DE",
        "i-ami",
        "i-bnn",
        "i-default",
        "i-enochian",
        "i-hak",
        "i-klingon",
        "i-lux",
        "i-mingo",
        "i-navajo",
        "i-pwn",
        "i-tao",
        "i-tay",
        "i-tsu",
        "art-lojban",
        "cel-gaulish",
        "no-bok",
        "no-nyn",
        "zh-guoyu",
        "zh-hakka",
        "zh-min",
        "zh-min-nan",
        "zh-xiang",
    )
)

# Character sets used only to explain failures.
_HANDLE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_DID_IDENT_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:%-")
_RKEY_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:~-")
_TID_CHARS: Final = frozenset("234567abcdefghijklmnopqrstuvwxyz")
_CID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=")
_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DIGITS: Final = frozenset("0123456789")
_WHITESPACE_RE: Final = re.compile(r"[ \t\n\r\x0b\x0c]")

_YEAR_PREFIX_RE: Final = re.compile(r"[0-9]{4}(?![0-9])")
_DATE_PREFIX_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9])")
_TIME_PREFIX_RE: Final = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(?![0-9])")
_FRACTION_RE: Final = re.compile(r"\.([0-9]*)")
_URI_SCHEME_RE: Final = re.compile(r"[a-z][a-z0-9.+-]{0,80}")

_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _fail(kind: str, value: object, rule: str) -> NoReturn:
    raise InvalidSyntax(kind, value, rule)


def _first_outside(text: str, allowed: frozenset[str]) -> str | None:
    for ch in text:
        if ch not in allowed:
            return ch
    return None


def _basic_problem(value: object, max_length: int) -> str | None:
    """Rules shared by every kind: a non-empty, bounded, ASCII, space-free string."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value:
        return "empty"
    if len(value) > max_length:
        return f"longer than {max_length} characters"
    if not value.isascii():
        return "non-ASCII character"
    if _WHITESPACE_RE.search(value):
        return "contains whitespace"
    return None


def _label_problem(label: str, what: str) -> str | None:
    if not label:
        return f"empty {what} (leading, trailing or doubled '.')"
    if len(label) > 63:
        return f"{what} longer than 63 characters"
    if label[0] == "-":
        return f"{what} starts with a hyphen"
    if label[-1] == "-":
        return f"{what} ends with a hyphen"
    return None


# --- Handle -------------------------------------------------------------------


def is_valid_handle(value: object) -> TypeGuard[str]:
    """True for a syntactically valid handle (any case)."""
    return (
        isinstance(value, str) and len(value) <= MAX_HANDLE_LENGTH and _HANDLE_RE.fullmatch(value) is not None
    )


def _why_not_handle(value: object) -> str:
    problem = _basic_problem(value, MAX_HANDLE_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    bad = _first_outside(value, _HANDLE_CHARS)
    if bad is not None:
        return f"disallowed character {bad!r}"
    labels = value.split(".")
    for label in labels:
        problem = _label_problem(label, "label")
        if problem is not None:
            return problem
    if len(labels) < 2:
        return "fewer than two labels"
    if labels[-1][0] in _DIGITS:
        return "TLD starts with a digit"
    return "not a valid handle"


def validate_handle(value: object) -> None:
    """Check handle syntax; case is not significant (see :func:`normalize_handle`)."""
    if not is_valid_handle(value):
        _fail("handle", value, _why_not_handle(value))


def normalize_handle(value: object) -> str:
    """Validate a handle and return it lower-cased, the form to store and compare."""
    validate_handle(value)
    assert isinstance(value, str)
    return value.lower()


# --- DID ----------------------------------------------------------------------


def is_valid_did(value: object) -> TypeGuard[str]:
    """True for a syntactically valid DID of any method."""
    return isinstance(value, str) and len(value) <= MAX_DID_LENGTH and _DID_RE.fullmatch(value) is not None


def _why_not_did(value: object) -> str:
    problem = _basic_problem(value, MAX_DID_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if not value.startswith("did:"):
        return "does not start with lower-case 'did:'"
    method, sep, ident = value[4:].partition(":")
    if not sep:
        return "missing ':' after the method"
    if not method:
        return "empty method"
    if not method.isalpha() or not method.islower():
        return "method is not lower-case letters"
    if not ident:
        return "empty method-specific identifier"
    bad = _first_outside(ident, _DID_IDENT_CHARS)
    if bad is not None:
        return f"disallowed character {bad!r}"
    if ident[-1] in ":%":
        return f"ends with {ident[-1]!r}"
    return "not a valid DID"


def validate_did(value: object) -> None:
    """Check generic DID syntax (any method; method support is checked by resolvers)."""
    if not is_valid_did(value):
        _fail("did", value, _why_not_did(value))


# --- at-identifier -------------------------------------------------------------


def is_valid_at_identifier(value: object) -> TypeGuard[str]:
    """True for a valid DID (if it starts with ``did:``) or else a valid handle."""
    if isinstance(value, str) and value.startswith("did:"):
        return is_valid_did(value)
    return is_valid_handle(value)


def _why_not_at_identifier(value: object) -> str:
    if isinstance(value, str) and value.startswith("did:"):
        return _why_not_did(value)
    return _why_not_handle(value)


def validate_at_identifier(value: object) -> None:
    """Check a handle-or-DID; the ``did:`` prefix decides which rules apply."""
    if not is_valid_at_identifier(value):
        _fail("at-identifier", value, _why_not_at_identifier(value))


# --- NSID ---------------------------------------------------------------------


#: NSIDs already found valid. A stream uses a handful of collections over and
#: over, so a set lookup replaces the regex almost always. Bounded, so hostile
#: input can only stop it growing, never grow memory.
_KNOWN_NSIDS: Final[set[str]] = set()
_KNOWN_NSIDS_MAX: Final = 4096


def _remember_nsid(value: str) -> None:
    if len(_KNOWN_NSIDS) < _KNOWN_NSIDS_MAX:
        _KNOWN_NSIDS.add(value)


def is_valid_nsid(value: object) -> TypeGuard[str]:
    """True for a valid NSID (reversed domain authority plus a name)."""
    if type(value) is str and value in _KNOWN_NSIDS:
        return True
    if isinstance(value, str) and len(value) <= MAX_NSID_LENGTH and _NSID_RE.fullmatch(value) is not None:
        if type(value) is str:
            _remember_nsid(value)
        return True
    return False


def _why_not_nsid(value: object) -> str:
    problem = _basic_problem(value, MAX_NSID_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if "*" in value:
        return "globs are not NSIDs"
    bad = _first_outside(value, _HANDLE_CHARS)
    if bad is not None:
        return f"disallowed character {bad!r}"
    segments = value.split(".")
    for segment in segments[:-1]:
        problem = _label_problem(segment, "segment")
        if problem is not None:
            return problem
    name = segments[-1]
    if not name:
        return "empty name (trailing '.')"
    if len(segments) < 3:
        return "fewer than three segments"
    if segments[0][0] in _DIGITS:
        return "first segment (TLD) starts with a digit"
    if len(name) > 63:
        return "name longer than 63 characters"
    if "-" in name:
        return "name contains a hyphen"
    if name[0] in _DIGITS:
        return "name starts with a digit"
    return "not a valid NSID"


def validate_nsid(value: object) -> None:
    """Check NSID syntax; only the 317-character total is enforced (see syntax.md)."""
    if not is_valid_nsid(value):
        _fail("nsid", value, _why_not_nsid(value))


def normalize_nsid(value: object) -> str:
    """Validate an NSID and lower-case its authority; the name keeps its case."""
    validate_nsid(value)
    assert isinstance(value, str)
    authority, _, name = value.rpartition(".")
    return f"{authority.lower()}.{name}"


# --- TID ----------------------------------------------------------------------


def is_valid_tid(value: object) -> TypeGuard[str]:
    """True for a 13-character base32-sortable TID with the top bit clear."""
    return isinstance(value, str) and len(value) == 13 and _TID_RE.fullmatch(value) is not None


def _why_not_tid(value: object) -> str:
    problem = _basic_problem(value, 13)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if len(value) != 13:
        return "not 13 characters"
    bad = _first_outside(value, _TID_CHARS)
    if bad is not None:
        return f"character {bad!r} outside the base32-sortable alphabet"
    if value[0] > "j":
        return "top bit set (first character after 'j')"
    return "not a valid TID"


def validate_tid(value: object) -> None:
    """Check TID syntax (see :mod:`atrepo.core.tid` for its meaning)."""
    if not is_valid_tid(value):
        _fail("tid", value, _why_not_tid(value))


# --- Record key ---------------------------------------------------------------


def is_valid_record_key(value: object) -> TypeGuard[str]:
    """True for 1-512 chars of ``[A-Za-z0-9._:~-]`` other than ``.`` and ``..``."""
    return isinstance(value, str) and len(value) <= MAX_RKEY_LENGTH and _RKEY_RE.fullmatch(value) is not None


def _why_not_record_key(value: object) -> str:
    problem = _basic_problem(value, MAX_RKEY_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if value in (".", ".."):
        return "'.' and '..' are not record keys"
    bad = _first_outside(value, _RKEY_CHARS)
    if bad is not None:
        return f"disallowed character {bad!r}"
    return "not a valid record key"


def validate_record_key(value: object) -> None:
    """Check record key syntax (case-sensitive; no percent-encoding)."""
    if not is_valid_record_key(value):
        _fail("record-key", value, _why_not_record_key(value))


# --- Repo path ----------------------------------------------------------------


def is_valid_repo_path(value: object) -> TypeGuard[str]:
    """True for ``<nsid>/<record-key>``, the MST key of a record."""
    if not isinstance(value, str) or len(value) > MAX_MST_KEY_BYTES:
        return False
    # A match below is pure ASCII, so its length in characters is its length in bytes.
    if type(value) is str:
        collection, _, rkey = value.partition("/")
        if collection in _KNOWN_NSIDS:
            return _RKEY_RE.fullmatch(rkey) is not None
    m = _REPO_PATH_RE.fullmatch(value)
    if m is None or m.end(1) > MAX_NSID_LENGTH:
        return False
    if type(value) is str:
        _remember_nsid(m.group(1))
    return True


def _why_not_repo_path(value: object) -> str:
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_MST_KEY_BYTES:
        return f"longer than {MAX_MST_KEY_BYTES} bytes"
    if value.count("/") != 1:
        return "not exactly one '/'"
    collection, _, rkey = value.partition("/")
    if not is_valid_nsid(collection):
        return f"collection: {_why_not_nsid(collection)}"
    if not is_valid_record_key(rkey):
        return f"record key: {_why_not_record_key(rkey)}"
    return "not a valid repo path"


def validate_repo_path(value: object) -> None:
    """Check a repo path ``<nsid>/<rkey>``: one ``/``, at most the MST key size limit."""
    if not is_valid_repo_path(value):
        _fail("repo-path", value, _why_not_repo_path(value))


# --- AT-URI -------------------------------------------------------------------


def is_valid_at_uri(value: object) -> TypeGuard[str]:
    """True for the restricted Lexicon ``at-uri``: authority, optional NSID and rkey.

    One regex decides the shape (a handle cannot contain ``:``, so a ``did:``
    authority can only match as a DID, as for ``at-identifier``); the groups
    then get their own length limits.
    """
    if not isinstance(value, str) or len(value) > MAX_ATURI_LENGTH:
        return False
    m = _AT_URI_RE.fullmatch(value)
    if m is None:
        return False
    did, handle, nsid, rkey = m.group("did", "handle", "nsid", "rkey")
    return (
        (len(did) <= MAX_DID_LENGTH if did is not None else len(handle) <= MAX_HANDLE_LENGTH)
        and (nsid is None or len(nsid) <= MAX_NSID_LENGTH)
        and (rkey is None or len(rkey) <= MAX_RKEY_LENGTH)
    )


def _why_not_at_uri(value: object) -> str:
    problem = _basic_problem(value, MAX_ATURI_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if not value.startswith("at://"):
        return "does not start with 'at://'"
    rest = value[5:]
    if "?" in rest:
        return "query not allowed"
    if "#" in rest:
        return "fragment not allowed"
    if rest.endswith("/"):
        return "trailing slash"
    parts = rest.split("/")
    if "" in parts:
        return "empty authority or path segment"
    if len(parts) > 3:
        return "more than two path segments"
    if not is_valid_at_identifier(parts[0]):
        return f"authority: {_why_not_at_identifier(parts[0])}"
    if len(parts) >= 2 and not is_valid_nsid(parts[1]):
        return f"collection: {_why_not_nsid(parts[1])}"
    if len(parts) == 3 and not is_valid_record_key(parts[2]):
        return f"record key: {_why_not_record_key(parts[2])}"
    return "not a valid AT-URI"


def validate_at_uri(value: object) -> None:
    """Check the strict ``at-uri`` format (no query, fragment or trailing slash)."""
    if not is_valid_at_uri(value):
        _fail("at-uri", value, _why_not_at_uri(value))


def normalize_at_uri(value: object) -> str:
    """Validate an AT-URI; lower-case a handle authority and the NSID authority.

    DIDs and record keys are case-sensitive and kept as they are.
    """
    validate_at_uri(value)
    assert isinstance(value, str)
    parts = value[5:].split("/")
    if not parts[0].startswith("did:"):
        parts[0] = parts[0].lower()
    if len(parts) >= 2:
        parts[1] = normalize_nsid(parts[1])
    return "at://" + "/".join(parts)


# --- CID string ---------------------------------------------------------------


def is_valid_cid_string(value: object) -> TypeGuard[str]:
    """True for 8-256 chars of ``[A-Za-z0-9+=]`` that are not a CIDv0 (``Qm...``)."""
    return (
        isinstance(value, str)
        and _CID_RE.fullmatch(value) is not None
        and (len(value) != 46 or _CIDV0_RE.fullmatch(value) is None)
    )


def _why_not_cid_string(value: object) -> str:
    problem = _basic_problem(value, MAX_CID_STRING_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    bad = _first_outside(value, _CID_CHARS)
    if bad is not None:
        return f"disallowed character {bad!r}"
    if len(value) < MIN_CID_STRING_LENGTH:
        return f"shorter than {MIN_CID_STRING_LENGTH} characters"
    if _CIDV0_RE.fullmatch(value):
        return "CIDv0 not allowed"
    return "not a valid CID string"


def validate_cid_string(value: object) -> None:
    """Syntax-only CID string check; structure is parsed by :mod:`atrepo.core.cid`."""
    if not is_valid_cid_string(value):
        _fail("cid", value, _why_not_cid_string(value))


# --- URI ----------------------------------------------------------------------


def is_valid_uri(value: object) -> TypeGuard[str]:
    """True for a generic ``scheme:rest`` URI of printable ASCII, at most 8 KiB."""
    return isinstance(value, str) and len(value) <= MAX_URI_LENGTH and _URI_RE.fullmatch(value) is not None


def _why_not_uri(value: object) -> str:
    problem = _basic_problem(value, MAX_URI_LENGTH)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    scheme, sep, rest = value.partition(":")
    if not sep:
        return "missing scheme"
    if not _URI_SCHEME_RE.fullmatch(scheme):
        return "invalid scheme"
    if not rest:
        return "empty after the scheme"
    return "not a valid URI"


def validate_uri(value: object) -> None:
    """Check the Lexicon ``uri`` format: any scheme, no whitespace, at most 8 KiB."""
    if not is_valid_uri(value):
        _fail("uri", value, _why_not_uri(value))


# --- Datetime -----------------------------------------------------------------


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and _is_leap_year(year):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def _why_not_datetime_syntax(value: str) -> str:
    """Explain a datetime that failed the regex (it is ASCII and space-free)."""
    if not _DATE_PREFIX_RE.match(value):
        if not _YEAR_PREFIX_RE.match(value):
            return "year is not exactly 4 digits"
        return "date is not YYYY-MM-DD"
    if len(value) == 10:
        return "missing time"
    if value[10] != "T":
        return "date and time not separated by upper-case 'T'"
    if not _TIME_PREFIX_RE.match(value, 11):
        return "time is not HH:MM:SS"
    pos = 19
    fraction = _FRACTION_RE.match(value, pos)
    if fraction is not None:
        if not fraction.group(1):
            return "empty fractional seconds"
        pos = fraction.end()
    zone = value[pos:]
    if not zone:
        return "missing timezone"
    if zone == "z":
        return "'Z' must be upper case"
    return "timezone is not 'Z' or ±HH:MM"


def _datetime_fields(value: object) -> re.Match[str] | str:
    """Return the regex match of a valid datetime, or the rule it breaks."""
    m = None
    if isinstance(value, str) and len(value) <= MAX_DATETIME_LENGTH:
        m = _DATETIME_RE.fullmatch(value)
    if m is None:
        problem = _basic_problem(value, MAX_DATETIME_LENGTH)
        if problem is not None:
            return problem
        assert isinstance(value, str)
        return _why_not_datetime_syntax(value)
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    if not 1 <= month <= 12:
        return "month out of range"
    if not 1 <= day <= _days_in_month(year, month):
        return "day out of range for the month"
    if hour > 23:
        return "hour out of range"
    if minute > 59:
        return "minute out of range"
    if second > 60:
        return "second out of range"
    offset = 0
    if m[8] is not None:
        off_hour, off_minute = int(m[9]), int(m[10])
        if off_hour > 23:
            return "offset hour out of range"
        if off_minute > 59:
            return "offset minute out of range"
        offset = off_hour * 60 + off_minute
        if m[8] == "-":
            if offset == 0:
                return "offset -00:00 not allowed"
            offset = -offset
    # The offset shifts the instant by less than a day, so only the first and
    # last day of the allowed range can cross it.
    utc_minute = hour * 60 + minute - offset
    if utc_minute < 0 and (year, month, day) == (0, 1, 1):
        return "instant before year 0000"
    if utc_minute >= 1440 and (year, month, day) == (9999, 12, 31):
        return "instant after year 9999"
    if second == 60 and utc_minute % 1440 != 23 * 60 + 59:
        return "second 60 outside the leap-second minute (23:59 UTC)"
    return m


def is_valid_datetime(value: object) -> TypeGuard[str]:
    """True for an RFC 3339 / ISO 8601 datetime that also names a real instant."""
    if type(value) is str and len(value) <= MAX_DATETIME_LENGTH and _COMMON_DATETIME_RE.fullmatch(value):
        return True
    return not isinstance(_datetime_fields(value), str)


def validate_datetime(value: object) -> None:
    """Check datetime syntax and meaning.

    Real calendar dates (leap years), hour 00-23, minute 00-59, second 00-59 or
    60 when the UTC time is 23:59 (leap seconds only happen then), offsets up to
    23:59 but never ``-00:00``, and the instant within years 0000-9999.
    """
    result = _datetime_fields(value)
    if isinstance(result, str):
        _fail("datetime", value, result)


def parse_datetime(value: object) -> datetime:
    """Validate and parse a datetime to an aware :class:`datetime` in its own offset.

    Python's datetime cannot hold everything the format allows, so: fractions
    beyond microseconds are truncated, a leap second becomes ``:59.999999``
    (keeping order within the minute), and a local year 0000 raises
    ``InvalidSyntax`` even though the string is valid.
    """
    m = _datetime_fields(value)
    if isinstance(m, str):
        _fail("datetime", value, m)
    year = int(m[1])
    if year == 0:
        _fail("datetime", value, "year 0000 cannot be represented as a Python datetime")
    second, micros = int(m[6]), int((m[7] or "0")[:6].ljust(6, "0"))
    if second == 60:
        second, micros = 59, 999_999
    if m[8] is None:
        tz = UTC
    else:
        delta = timedelta(hours=int(m[9]), minutes=int(m[10]))
        tz = timezone(delta if m[8] == "+" else -delta)
    return datetime(year, int(m[2]), int(m[3]), int(m[4]), int(m[5]), second, micros, tzinfo=tz)


def format_datetime(value: datetime) -> str:
    """Format an aware datetime the preferred way: UTC, milliseconds, ``Z``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: its instant is ambiguous")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        # a valid local time whose UTC instant falls in year 0 or 10000
        _fail("datetime", value.isoformat(), "its UTC instant is outside years 0001-9999")
    # Years are zero-padded by hand: strftime("%Y") writes year 992 as "992" on
    # some platforms, which is not a valid datetime string.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond // 1000:03d}Z"
    )


# --- Language -----------------------------------------------------------------


def _is_grandfathered(value: str) -> bool:
    primary = value.partition("-")[0]
    return primary.islower() and value.lower() in _GRANDFATHERED


def _duplicate(subtags: list[str]) -> str | None:
    seen: set[str] = set()
    for tag in subtags:
        if tag in seen:
            return tag
        seen.add(tag)
    return None


def _why_not_language_syntax(value: str) -> str:
    subtags = value.split("-")
    if "" in subtags:
        return "empty subtag (leading, trailing or doubled '-')"
    bad = _first_outside(value, _ALNUM | {"-"})
    if bad is not None:
        return f"disallowed character {bad!r}"
    if any(len(tag) > 8 for tag in subtags):
        return "subtag longer than 8 characters"
    primary = subtags[0]
    if not primary.isalpha():
        return "primary language subtag is not letters"
    if not primary.islower():
        return "primary language subtag is not lower case"
    if not 2 <= len(primary) <= 3:
        return "primary language subtag is not 2-3 letters"
    return "subtags out of order or of the wrong length"


def _language_problem(value: object) -> str | None:
    m = None
    if isinstance(value, str) and len(value) <= MAX_LANGUAGE_LENGTH:
        m = _LANGUAGE_RE.fullmatch(value)
    if m is None:
        problem = _basic_problem(value, MAX_LANGUAGE_LENGTH)
        if problem is not None:
            return problem
        assert isinstance(value, str)
        if _is_grandfathered(value):
            return None
        return _why_not_language_syntax(value)
    variants = m.group("variants")
    if variants and variants.count("-") > 1:
        dup = _duplicate(variants.lower().split("-")[1:])
        if dup is not None:
            return f"duplicate variant subtag {dup!r}"
    extensions = m.group("extensions")
    if extensions:
        singletons = [tag for tag in extensions.lower().split("-") if len(tag) == 1]
        dup = _duplicate(singletons)
        if dup is not None:
            return f"duplicate extension singleton {dup!r}"
    return None


def is_valid_language(value: object) -> TypeGuard[str]:
    """True for a well-formed BCP 47 tag under atproto's rules."""
    return _language_problem(value) is None


def validate_language(value: object) -> None:
    """Check a BCP 47 language tag: well-formed, lower-case 2-3 letter primary
    subtag, and (RFC 5646 validity rules needing no registry) no repeated
    variant or extension singleton."""
    problem = _language_problem(value)
    if problem is not None:
        _fail("language", value, problem)


# --- By kind name ---------------------------------------------------------------

#: Validators by Lexicon string-format name (plus ``repo-path``); the same names
#: appear as ``InvalidSyntax.kind``.
KINDS: Final[Mapping[str, Callable[[object], None]]] = MappingProxyType(
    {
        "at-identifier": validate_at_identifier,
        "at-uri": validate_at_uri,
        "cid": validate_cid_string,
        "datetime": validate_datetime,
        "did": validate_did,
        "handle": validate_handle,
        "language": validate_language,
        "nsid": validate_nsid,
        "record-key": validate_record_key,
        "repo-path": validate_repo_path,
        "tid": validate_tid,
        "uri": validate_uri,
    }
)

_PREDICATES: Final[Mapping[str, Callable[[object], bool]]] = MappingProxyType(
    {
        "at-identifier": is_valid_at_identifier,
        "at-uri": is_valid_at_uri,
        "cid": is_valid_cid_string,
        "datetime": is_valid_datetime,
        "did": is_valid_did,
        "handle": is_valid_handle,
        "language": is_valid_language,
        "nsid": is_valid_nsid,
        "record-key": is_valid_record_key,
        "repo-path": is_valid_repo_path,
        "tid": is_valid_tid,
        "uri": is_valid_uri,
    }
)


def validate(kind: str, value: object) -> None:
    """Validate ``value`` as the named kind; unknown kinds are a programming error."""
    try:
        check = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown syntax kind {kind!r}") from None
    check(value)


def is_valid(kind: str, value: object) -> bool:
    """Boolean form of :func:`validate`."""
    try:
        check = _PREDICATES[kind]
    except KeyError:
        raise ValueError(f"unknown syntax kind {kind!r}") from None
    return check(value)
