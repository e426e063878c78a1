"""TID encoding and the TIDClock's never-repeat, never-go-back promise."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atrepo.core.errors import InvalidSyntax, LimitExceeded
from atrepo.core.syntax import is_valid_tid
from atrepo.core.tid import (
    DEFAULT_CLOCK,
    MAX_CLOCK_ID,
    MAX_TID_MICROS,
    TID_MAX,
    TID_SYNTAX_MAX,
    TID_ZERO,
    TIDClock,
    now_tid,
    tid_from_datetime,
    tid_from_parts,
    tid_to_datetime,
    tid_to_parts,
)

micros_st = st.integers(min_value=0, max_value=MAX_TID_MICROS)
clock_id_st = st.integers(min_value=0, max_value=MAX_CLOCK_ID)


def _fixed_source(readings: list[int]) -> Iterator[int]:
    yield from readings
    while True:
        yield readings[-1]


def test_known_values() -> None:
    assert tid_to_parts(TID_ZERO) == (0, 0)
    assert tid_from_parts(0, 0) == TID_ZERO
    assert tid_to_parts(TID_MAX) == (MAX_TID_MICROS, MAX_CLOCK_ID)
    assert tid_from_parts(MAX_TID_MICROS, MAX_CLOCK_ID) == TID_MAX
    # The syntax admits bit 63 set; such TIDs decode but cannot be issued.
    assert is_valid_tid(TID_SYNTAX_MAX)
    assert tid_to_parts(TID_SYNTAX_MAX) == (2**54 - 1, MAX_CLOCK_ID)
    assert TID_MAX < "c222222222222" <= TID_SYNTAX_MAX
    assert tid_to_parts("3jzfcijpj2z2a") == (1_688_137_381_887_007, 6)
    assert tid_to_datetime("3jzfcijpj2z2a") == datetime(2023, 6, 30, 15, 3, 1, 887007, tzinfo=UTC)
    assert tid_from_parts(1_688_137_381_887_007, 6) == "3jzfcijpj2z2a"
    assert tid_from_parts(0, 1) == "2222222222223"
    assert tid_from_parts(1, 0) == "2222222222322"  # 1 << 10 = 32 * 32: third digit from the end


def test_tid_from_datetime() -> None:
    moment = datetime(2023, 6, 30, 15, 3, 1, 887007, tzinfo=UTC)
    assert tid_from_datetime(moment, 6) == "3jzfcijpj2z2a"
    with pytest.raises(ValueError, match="naive"):
        tid_from_datetime(datetime(2023, 6, 30))


@pytest.mark.parametrize(("micros", "clock_id"), [(-1, 0), (MAX_TID_MICROS + 1, 0), (0, -1), (0, 1024)])
def test_parts_out_of_range(micros: int, clock_id: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        tid_from_parts(micros, clock_id)


@pytest.mark.parametrize("bad", ["3JZFCIJPJ2Z2A", "kjzfcijpj2z2a", "3jzf-cij-pj2z-2a", "", "3jzfcijpj2z2a\n"])
def test_decode_rejects_invalid(bad: str) -> None:
    with pytest.raises(InvalidSyntax):
        tid_to_parts(bad)


@given(micros_st, clock_id_st)
def test_round_trip(micros: int, clock_id: int) -> None:
    tid = tid_from_parts(micros, clock_id)
    assert len(tid) == 13
    assert is_valid_tid(tid)
    assert tid_to_parts(tid) == (micros, clock_id)


@given(micros_st, clock_id_st, micros_st, clock_id_st)
def test_string_order_is_value_order(m1: int, c1: int, m2: int, c2: int) -> None:
    a, b = tid_from_parts(m1, c1), tid_from_parts(m2, c2)
    assert (a < b) == ((m1, c1) < (m2, c2))
    assert (a == b) == ((m1, c1) == (m2, c2))


@given(st.lists(st.integers(min_value=0, max_value=2**52), min_size=1, max_size=60), clock_id_st)
def test_clock_strictly_increasing_whatever_the_wall_clock_does(readings: list[int], clock_id: int) -> None:
    source = _fixed_source(readings)
    clock = TIDClock(clock_id=clock_id, now_micros=lambda: next(source))
    issued = [clock.next() for _ in range(len(readings) + 5)]
    assert all(a < b for a, b in itertools.pairwise(issued))
    for tid, reading in zip(issued, readings, strict=False):
        micros, cid = tid_to_parts(tid)
        assert cid == clock_id
        assert micros >= reading


def test_clock_stalled_and_backwards() -> None:
    readings = iter([100, 100, 100, 50, 200])
    clock = TIDClock(clock_id=7, now_micros=lambda: next(readings))
    assert [tid_to_parts(clock.next()) for _ in range(5)] == [
        (100, 7),
        (101, 7),
        (102, 7),
        (103, 7),
        (200, 7),
    ]


def _collect_from_threads(clock: TIDClock, threads: int, per_thread: int) -> list[list[str]]:
    results: list[list[str]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(slot: list[str]) -> None:
        start.wait()
        for _ in range(per_thread):
            slot.append(clock.next())

    workers = [threading.Thread(target=work, args=(results[i],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


@pytest.mark.parametrize("stalled", [False, True], ids=["wall-clock", "stalled-clock"])
def test_clock_across_threads(stalled: bool) -> None:
    clock = TIDClock(now_micros=(lambda: 1_700_000_000_000_000) if stalled else None)
    results = _collect_from_threads(clock, threads=4, per_thread=2000)
    every = [tid for seq in results for tid in seq]
    assert len(every) == 8000
    assert len(set(every)) == len(every)
    for seq in results:
        assert all(a < b for a, b in itertools.pairwise(seq))


@given(st.data())
def test_clock_across_threads_property(data: st.DataObject) -> None:
    per_thread = data.draw(st.integers(min_value=1, max_value=200))
    clock = TIDClock(clock_id=data.draw(clock_id_st))
    results = _collect_from_threads(clock, threads=4, per_thread=per_thread)
    every = [tid for seq in results for tid in seq]
    assert len(set(every)) == 4 * per_thread
    for seq in results:
        assert all(a < b for a, b in itertools.pairwise(seq))


def test_next_after() -> None:
    clock = TIDClock(clock_id=3, now_micros=lambda: 1_000)
    assert tid_to_parts(clock.next_after(None)) == (1_000, 3)
    # An older prev does not hold the clock back...
    assert tid_to_parts(clock.next_after(tid_from_parts(10, 1023))) == (1_001, 3)
    # ...a later one (another writer, a faster clock) is jumped over, even with a smaller clock id.
    prev = tid_from_parts(5_000, 0)
    after = clock.next_after(prev)
    assert after > prev
    assert tid_to_parts(after) == (5_001, 3)
    # The raised floor sticks: plain next() stays above everything issued.
    assert clock.next() > after
    # Equal micros with a larger clock id still yields a greater TID.
    prev = tid_from_parts(9_000, 1023)
    assert clock.next_after(prev) > prev


@given(st.integers(min_value=0, max_value=MAX_TID_MICROS - 2), clock_id_st, clock_id_st)
def test_next_after_property(prev_micros: int, prev_clock: int, clock_id: int) -> None:
    clock = TIDClock(clock_id=clock_id)
    prev = tid_from_parts(prev_micros, prev_clock)
    after = clock.next_after(prev)
    assert after > prev
    assert clock.next() > after


def test_next_after_rejects_bad_input() -> None:
    clock = TIDClock()
    with pytest.raises(InvalidSyntax):
        clock.next_after("not-a-tid")
    for last in (TID_MAX, "c222222222222", TID_SYNTAX_MAX):
        with pytest.raises(LimitExceeded):
            clock.next_after(last)


def test_clock_id() -> None:
    assert TIDClock(clock_id=0).clock_id == 0
    assert TIDClock(clock_id=MAX_CLOCK_ID).clock_id == MAX_CLOCK_ID
    assert 0 <= TIDClock().clock_id <= MAX_CLOCK_ID
    for bad in (-1, MAX_CLOCK_ID + 1):
        with pytest.raises(ValueError, match="clock id"):
            TIDClock(clock_id=bad)


def test_reset_after_fork_changes_clock_id_and_keeps_order() -> None:
    clock = TIDClock(clock_id=5)
    before = clock.next()
    clock._reset_after_fork()
    assert clock.clock_id != 5
    assert clock.next() > before


def test_now_tid() -> None:
    first = now_tid()
    second = now_tid()
    assert is_valid_tid(first)
    assert first < second
    assert tid_to_parts(first)[1] == DEFAULT_CLOCK.clock_id
