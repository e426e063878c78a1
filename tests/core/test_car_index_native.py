"""The C index of CAR blocks (``_carindex``) against the pure-Python one: same blocks, same errors.

Also its section parser for the streaming reader (``parse_raw_sections``).

``CarIndex`` uses the C table when it is built (``_carnative.Table``) and the
pure-Python table otherwise. The C scan proves sections well formed and hands
every other one back to Python, so for any input both must end the same way:
the same exception (type, message, offset), or the same blocks at the same
ordinals and locations, with the same ones kept in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import _carnative, cbor, limits
from atrepo.core.car import CHUNK_SIZE, CarIndex, CarReader, encode_car_header, parse_raw_sections, write_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidCAR
from atrepo.core.varint import encode_varint

native_only = pytest.mark.skipif(_carnative.Table is None, reason="the C index is not built (or ATREPO_PURE)")

NODE_PREFIX = b"\xa2\x61e"


def dag(value: Any) -> tuple[CID, bytes]:
    raw = cbor.encode(value)
    return CID.for_dag_cbor(raw), raw


def sample_blocks() -> list[tuple[CID, bytes]]:
    """Every kind a repository CAR can hold, and a few it should not: node-shaped,
    raw, empty data, an odd two-byte codec, a large block."""
    blocks = [dag({"n": i, "text": "x" * (i % 50)}) for i in range(40)]
    blocks += [dag({"e": [], "l": None}), dag({"e": [{"k": b"a"}], "l": None})]  # node-shaped
    blocks += [(CID.for_raw(b"blob"), b"blob"), (CID.for_raw(b""), b"")]
    json_block = b'{"a":1}'
    blocks.append((CID(b"\x01\xa9\x02\x12\x20" + hashlib.sha256(json_block).digest()), json_block))
    big = os.urandom(100_000)
    blocks.append((CID.for_raw(big), big))
    return blocks


BLOCKS = sample_blocks()
CAR = write_car([BLOCKS[0][0]], [*BLOCKS, *BLOCKS[3:6]])  # with duplicate sections


class Trickle(io.RawIOBase):
    """A stream that returns at most ``n`` bytes per read (sections split across buffers)."""

    def __init__(self, data: bytes, n: int) -> None:
        self._data = data
        self._pos = 0
        self._n = n

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._n if size < 0 else min(size, self._n)
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out


def outcome(data: bytes, native: bool, trickle: int = 0, **kw: Any) -> tuple[Any, ...]:
    """Everything observable about indexing ``data``: the error, or the blocks as indexed."""
    stream: Any = io.BytesIO(data) if not trickle else Trickle(data, trickle)
    try:
        index = CarIndex.build(stream, native=native, **kw)
    except AtrepoError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "offset", None))
    assert index.native == native
    load = index.loader(io.BytesIO(data))
    finder = index.finder()
    mark = index.marker()
    candidates = [cid for cid, _ in BLOCKS] + [CID.for_dag_cbor(b"absent"), CID.for_raw(BLOCKS[0][1])]
    found = [finder(cid) for cid in candidates]
    marked = [mark(cid.raw) for cid in candidates[::2]]
    mark_all = index.all_marker()
    marked_all = [
        mark_all(candidates[1::2]),
        mark_all(candidates[1:-2]),
        mark_all(()),
        mark_all(candidates * 3),
    ]
    return (
        "ok",
        index.roots,
        len(index),
        index.kept_bytes,
        found,
        marked,
        marked_all,
        index.referenced_count(),
        [index.location(i) for i in range(len(index))],
        [load(i, cid) for i, cid in zip(found, candidates, strict=True) if i >= 0],
    )


def both(data: bytes, **kw: Any) -> tuple[Any, ...]:
    pure = outcome(data, False, **kw)
    assert outcome(data, True, **kw) == pure
    return pure


# --- SHA-256 -----------------------------------------------------------------------------------


@native_only
@pytest.mark.parametrize("portable", [False, True])
def test_digest_matches_hashlib(portable: bool) -> None:
    from atrepo.core import _carindex  # type: ignore[attr-defined]

    rng = random.Random(5)
    for size in [*range(130), 1000, 4095, 4096, 65_537]:
        data = rng.randbytes(size)
        assert _carindex._digest(data, portable) == hashlib.sha256(data).digest(), size


# --- valid files -------------------------------------------------------------------------------


@native_only
@pytest.mark.parametrize("trickle", [0, 1, 7, 100])
def test_same_index_as_pure_python(trickle: int) -> None:
    got = both(CAR, trickle=trickle, keep_prefix=NODE_PREFIX, keep_bytes=1 << 20)
    assert got[0] == "ok" and got[2] == len(BLOCKS)
    assert got[3] == sum(len(b) for _, b in BLOCKS if b.startswith(NODE_PREFIX))
    assert all(i >= 0 for i in got[4][: len(BLOCKS)]) and got[4][-2:] == [-1, -1]


@native_only
def test_keep_budget_and_growth() -> None:
    """Many blocks from a tiny table (it grows), kept until the budget is spent."""
    blocks = [dag({"e": [i], "l": None}) for i in range(5000)]
    data = write_car([blocks[0][0]], blocks)
    for budget in (0, 1, 100, 10_000, 1 << 30):
        index = CarIndex.build(io.BytesIO(data), native=True, keep_prefix=NODE_PREFIX, keep_bytes=budget)
        pure = CarIndex.build(io.BytesIO(data), native=False, keep_prefix=NODE_PREFIX, keep_bytes=budget)
        assert index.kept_bytes == pure.kept_bytes <= budget
        find, find_pure = index.finder(), pure.finder()
        assert [find(c) for c, _ in blocks] == [find_pure(c) for c, _ in blocks] == list(range(5000))
        load = index.loader(io.BytesIO(data))
        assert all(load(i, c) == b for i, (c, b) in enumerate(blocks))
    assert index.memory_bytes() < 200 * len(blocks) + (1 << 21)


@native_only
def test_constructor_and_bad_arguments() -> None:
    index = CarIndex([], native=True)
    assert len(index) == 0 and index.native and index.find(BLOCKS[0][0]) == -1
    with pytest.raises(TypeError):
        index.marker()("not bytes")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        index.location(0)
    mark_all = index.all_marker()
    assert mark_all([]) == -1 and mark_all([BLOCKS[0][0]]) == 0
    with pytest.raises(AttributeError):
        mark_all([b"not a CID"])
    with pytest.raises(TypeError):
        mark_all(5)  # type: ignore[arg-type]
    table = _carnative.Table(0, 1)
    with pytest.raises(ValueError):
        table.scan(b"", 1, 0, 10, 10, b"", -1)
    with pytest.raises(RuntimeError):
        table.__init__(0, 1)


def test_native_true_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_carnative, "Table", None)
    with pytest.raises(ValueError, match="not available"):
        CarIndex([], native=True)
    assert not CarIndex.build(io.BytesIO(CAR)).native


# --- every refusal, both ways ------------------------------------------------------------------

HEADER = encode_car_header([BLOCKS[0][0]])
CID0, DATA0 = BLOCKS[0]


def section(body: bytes, length: bytes | None = None) -> bytes:
    return (encode_varint(len(body)) if length is None else length) + body


MALFORMED = {
    "non-minimal varint": HEADER + b"\x80\x00" + CID0.raw,
    "overlong varint": HEADER + b"\xff" * 10,
    "empty section": HEADER + section(CID0.raw + DATA0) + b"\x00",
    "CID past its section": HEADER + section(CID0.raw[:20]),
    "short blessed prefix": HEADER + section(CID0.raw[:4]),
    "one byte at the end": HEADER + section(b"\x01"),
    "hash mismatch": HEADER + section(CID0.raw + DATA0 + b"!"),
    "raw hash mismatch": HEADER + section(CID.for_raw(b"x").raw + b"y"),
    "odd hash mismatch": HEADER + section(BLOCKS[-2][0].raw + b"{}"),
    "bad CID version": HEADER + section(b"\x02" + CID0.raw[1:] + DATA0),
    "truncated data": HEADER + section(CID0.raw + DATA0)[:-3],
    "truncated varint": HEADER + b"\x80",
    "over the section limit": HEADER + encode_varint(limits.MAX_CAR_BLOCK_BYTES + 1),
    "unknown hash": HEADER + section(b"\x01\x71\x13\x20" + bytes(32) + DATA0),
}


@native_only
@pytest.mark.parametrize("name", MALFORMED)
@pytest.mark.parametrize("trickle", [0, 3])
def test_malformed_sections_fail_alike(name: str, trickle: int) -> None:
    got = both(MALFORMED[name], trickle=trickle)
    assert got[0] == "error", got


@native_only
def test_block_limit_alike() -> None:
    blocks = [dag(i) for i in range(50)]
    data = write_car([blocks[0][0]], [*blocks, BLOCKS[-2]])  # the odd CID comes last
    for limit in (1, 10, 49, 50, 51):
        got = both(data, max_blocks=limit)
        assert (got[0] == "error") == (limit < 51), limit
        if got[0] == "error":
            assert "MAX_CAR_INDEX_BLOCKS" in got[2]


@native_only
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_cars_index_alike(data: st.DataObject) -> None:
    buf = bytearray(write_car([CID0], BLOCKS[:6] + BLOCKS[-4:-1] + BLOCKS[2:4]))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        if action == "flip" and buf:
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del buf[at:]
        elif action == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at : at + data.draw(st.integers(1, 40))]
    trickle = data.draw(st.sampled_from([0, 1, 5, CHUNK_SIZE]))
    both(bytes(buf), trickle=trickle, keep_prefix=NODE_PREFIX, keep_bytes=data.draw(st.integers(0, 400)))


@native_only
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_sections_index_alike(junk: bytes) -> None:
    both(HEADER + junk)
    both(HEADER + section(CID0.raw + DATA0) + junk, trickle=2)


# --- the streaming reader's sections (``parse_raw_sections``) ---------------------------------

raw_native_only = pytest.mark.skipif(
    _carnative.raw_sections is None,
    reason="C section parsing needs the extension on a CPU with SHA extensions",
)


def raw_outcome(data: bytes, native: bool, trickle: int = 0) -> tuple[Any, ...]:
    """What the one-pass reader makes of ``data``: its blocks as (CID bytes, data), or its error."""
    saved = _carnative.raw_sections
    if not native:
        _carnative.raw_sections = None
    stream: Any = io.BytesIO(data) if not trickle else Trickle(data, trickle)
    got: list[Any] = []
    try:
        got.extend(CarReader(stream, sections=parse_raw_sections))
    except AtrepoError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "offset", None), got)
    finally:
        _carnative.raw_sections = saved
    return ("ok", got)


def raw_both(data: bytes, trickle: int = 0) -> tuple[Any, ...]:
    pure = raw_outcome(data, False, trickle)
    assert raw_outcome(data, True, trickle) == pure
    return pure


@raw_native_only
@pytest.mark.parametrize("trickle", [0, 1, 7, 100])
def test_raw_sections_as_pure_python(trickle: int) -> None:
    got = raw_both(CAR, trickle)
    assert got[0] == "ok" and [(CID(c), b) for c, b in got[1]] == [*BLOCKS, *BLOCKS[3:6]]


@raw_native_only
@pytest.mark.parametrize("name", MALFORMED)
@pytest.mark.parametrize("trickle", [0, 3])
def test_raw_sections_refuse_alike(name: str, trickle: int) -> None:
    assert raw_both(MALFORMED[name], trickle)[0] == "error"


@raw_native_only
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_cars_read_alike(data: st.DataObject) -> None:
    buf = bytearray(write_car([CID0], BLOCKS[:6] + BLOCKS[-4:-1] + BLOCKS[2:4]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and buf:
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del buf[at:]
        else:
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    raw_both(bytes(buf), data.draw(st.sampled_from([0, 1, 5])))


def test_one_byte_section_at_the_end() -> None:
    """A last section of one byte 0x01: the pure-Python index read past the buffer (IndexError)."""
    for native in (False, True) if _carnative.Table is not None else (False,):
        with pytest.raises(InvalidCAR, match="CID runs past the end of its block section") as info:
            CarIndex.build(io.BytesIO(MALFORMED["one byte at the end"]), native=native)
        assert info.value.offset == len(HEADER) + 1


@native_only
def test_more_blocks_than_the_c_table_holds() -> None:
    """The default limit fits the C table's 23-bit ordinals; a larger one takes the pure-Python table."""
    assert limits.MAX_CAR_INDEX_BLOCKS <= _carnative.MAX_BLOCKS
    assert CarIndex.build(io.BytesIO(CAR)).native
    assert not CarIndex.build(io.BytesIO(CAR), max_blocks=_carnative.MAX_BLOCKS + 1).native
    with pytest.raises(ValueError, match="at most"):
        CarIndex.build(io.BytesIO(CAR), max_blocks=_carnative.MAX_BLOCKS + 1, native=True)
    assert not CarIndex.build(io.BytesIO(CAR), verify_hashes=False).native
