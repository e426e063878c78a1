"""Timestamp identifiers (TIDs) and the clock that issues them.

A TID is a 64-bit value written as 13 base32-sortable characters: bits 62..10
are microseconds since the Unix epoch, bits 9..0 a clock id chosen at random per
generator, and bit 63 is 0 in every TID a generator makes. The alphabet is in
ASCII order and the width is fixed, so comparing TID strings compares their
values; that is why repo revisions and record keys use them, and why a
generator must never repeat itself or go backwards.

The syntax rule (first character at most ``j``) only keeps the value within 64
bits, so a syntactically valid TID may still have bit 63 set (first character
``c``..``j``). Such TIDs decode to more than :data:`MAX_TID_MICROS`
microseconds; they can be read but never issued, and nothing can follow them.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from atrepo.core.errors import LimitExceeded
from atrepo.core.syntax import validate_tid

__all__ = [
    "DEFAULT_CLOCK",
    "MAX_CLOCK_ID",
    "MAX_TID_MICROS",
    "TID_LENGTH",
    "TID_MAX",
    "TID_SYNTAX_MAX",
    "TID_ZERO",
    "TIDClock",
    "now_tid",
    "tid_from_datetime",
    "tid_from_parts",
    "tid_to_datetime",
    "tid_to_parts",
]

_ALPHABET: Final = "234567abcdefghijklmnopqrstuvwxyz"
#: Maps base32-sortable digits to the digits ``int(text, 32)`` understands.
_TO_BASE32HEX: Final = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
#: Every pair of digits, so encoding takes 10 bits per step instead of 5.
_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)

TID_LENGTH: Final = 13
#: The smallest TID (value 0).
TID_ZERO: Final = "2222222222222"
#: The largest TID a generator may issue (bit 63 clear, every other bit set).
TID_MAX: Final = "bzzzzzzzzzzzz"
#: The largest string the TID syntax accepts (bit 63 set too).
TID_SYNTAX_MAX: Final = "jzzzzzzzzzzzz"
MAX_TID_MICROS: Final = 2**53 - 1
MAX_CLOCK_ID: Final = 1023

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


def tid_from_parts(micros: int, clock_id: int) -> str:
    """Encode microseconds since the epoch and a 10-bit clock id as a TID.

    Out-of-range arguments are a caller's bug, so they raise ``ValueError``.
    """
    if not 0 <= micros <= MAX_TID_MICROS:
        raise ValueError(f"TID timestamp out of range: {micros}")
    if not 0 <= clock_id <= MAX_CLOCK_ID:
        raise ValueError(f"TID clock id out of range: {clock_id}")
    pairs = _PAIRS
    # 13 digits = 65 bits: one digit for bits 64..60, then six 10-bit pairs.
    return (
        _ALPHABET[micros >> 50]
        + pairs[(micros >> 40) & 1023]
        + pairs[(micros >> 30) & 1023]
        + pairs[(micros >> 20) & 1023]
        + pairs[(micros >> 10) & 1023]
        + pairs[micros & 1023]
        + pairs[clock_id]
    )


def tid_to_parts(tid: str) -> tuple[int, int]:
    """Decode a TID into ``(microseconds since the epoch, clock id)``.

    Raises ``InvalidSyntax`` for anything that is not a TID. The microseconds
    exceed :data:`MAX_TID_MICROS` only for TIDs with bit 63 set.
    """
    validate_tid(tid)
    value = int(tid.translate(_TO_BASE32HEX), 32)
    return value >> 10, value & 1023


def tid_to_datetime(tid: str) -> datetime:
    """The UTC instant a TID records (exact: integer microseconds, no floats)."""
    micros, _ = tid_to_parts(tid)
    return _EPOCH + timedelta(microseconds=micros)


def tid_from_datetime(moment: datetime, clock_id: int = 0) -> str:
    """The TID for an aware datetime (for back-dating and range queries)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: its instant is ambiguous")
    return tid_from_parts((moment - _EPOCH) // _ONE_MICROSECOND, clock_id)


def _wall_micros() -> int:
    return time.time_ns() // 1000


class TIDClock:
    """Issues TIDs that strictly increase across all calls, from any thread.

    Each TID uses ``max(wall clock, last + 1 µs)``, so a stalled or regressing
    wall clock costs a microsecond of drift instead of a repeat. The clock id is
    random (10 bits) so that separate generators rarely collide; pass one to get
    reproducible values in tests, and a ``now_micros`` source to simulate clocks.
    """

    __slots__ = ("_clock_id", "_last", "_lock", "_now_micros")

    def __init__(self, clock_id: int | None = None, now_micros: Callable[[], int] | None = None) -> None:
        if clock_id is None:
            clock_id = secrets.randbelow(MAX_CLOCK_ID + 1)
        elif not 0 <= clock_id <= MAX_CLOCK_ID:
            raise ValueError(f"TID clock id out of range: {clock_id}")
        self._clock_id = clock_id
        self._now_micros = now_micros or _wall_micros
        self._last = -1
        self._lock = threading.Lock()

    @property
    def clock_id(self) -> int:
        return self._clock_id

    def next(self) -> str:
        """A TID greater than every TID this clock issued before."""
        return self._issue(-1)

    def next_after(self, prev: str | None) -> str:
        """A TID greater than ``prev`` and than every TID this clock issued before.

        Used when a repo's last revision is known: the new one must sort after
        it even if it was written by another process or with a faster clock.
        The clock keeps the raised floor, so a far-future ``prev`` drags later
        TIDs with it; callers should reject implausible revisions first.
        """
        if prev is None:
            return self._issue(-1)
        floor, _ = tid_to_parts(prev)
        return self._issue(floor)

    def _issue(self, floor: int) -> str:
        with self._lock:
            micros = max(self._now_micros(), self._last + 1, floor + 1)
            if micros > MAX_TID_MICROS:
                raise LimitExceeded("TID timestamp", micros, MAX_TID_MICROS, "no later TID exists")
            self._last = micros
        return tid_from_parts(micros, self._clock_id)

    def _reset_after_fork(self) -> None:
        """In a forked child: fresh lock, and a clock id different from the parent's."""
        self._lock = threading.Lock()
        self._clock_id = (self._clock_id + 1 + secrets.randbelow(MAX_CLOCK_ID)) % (MAX_CLOCK_ID + 1)


#: The process-wide clock behind :func:`now_tid`.
DEFAULT_CLOCK: Final = TIDClock()

if hasattr(os, "register_at_fork"):
    # Parent and child would otherwise share clock id and last value and could
    # issue identical TIDs.
    os.register_at_fork(after_in_child=DEFAULT_CLOCK._reset_after_fork)


def now_tid() -> str:
    """The next TID from the process-wide clock."""
    return DEFAULT_CLOCK.next()
