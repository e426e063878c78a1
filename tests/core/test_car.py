"""CAR v1: round trips, block order, every error with its offset, push decoding, index/random access."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.car import Block as Section
from atrepo.core.car import (
    CarDecoder,
    CarIndex,
    CarReader,
    CarWriter,
    Readable,
    encode_car_header,
    read_block_at,
    read_car,
    write_car,
)
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidCAR, LimitExceeded
from atrepo.core.varint import decode_varint, encode_varint, varint_size
from support import feed_in_chunks

Block = tuple[CID, bytes]


def make_block(i: int, pad: int = 0) -> Block:
    data = cbor.encode({"$type": "app.bsky.feed.like", "i": i, "pad": "x" * pad})
    return CID.for_dag_cbor(data), data


def odd_cid(prefix: bytes, data: bytes) -> CID:
    """A sha2-256 CID with a non-blessed codec (takes the reader's slow path)."""
    return CID(prefix + hashlib.sha256(data).digest())


BLOCKS = [make_block(i) for i in range(20)]
ROOT = BLOCKS[0][0]


class Trickle(io.RawIOBase):
    """A stream that returns at most ``n`` bytes per read, like a raw socket file."""

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


def read_stream(
    data: bytes, chunk: int = 65_536, **kw: object
) -> tuple[list[CID], list[tuple[CID, bytes, int]]]:
    reader = CarReader(io.BytesIO(data), chunk_size=chunk, **kw)  # type: ignore[arg-type]
    return reader.roots, list(reader)


# Every reader under test, as (roots, blocks without offsets).
def via_bytes(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = read_car(data)
    return roots, list(blocks.items())


def via_stream_big(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = read_stream(data)
    return roots, [(c, d) for c, d, _ in blocks]


def via_stream_tiny(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = read_stream(data, chunk=3)
    return roots, [(c, d) for c, d, _ in blocks]


def via_trickle(data: bytes) -> tuple[list[CID], list[Block]]:
    reader = CarReader(Trickle(data, 5), chunk_size=64)
    return reader.roots, [(c, d) for c, d, _ in reader]


def push(data: bytes, sizes: list[int], **kw: object) -> tuple[list[CID] | None, list[Section]]:
    """Feed ``data`` to a ``CarDecoder`` in chunks of the given sizes (the last repeats), then close."""
    decoder = CarDecoder(**kw)  # type: ignore[arg-type]
    got: list[Section] = feed_in_chunks(decoder, data, sizes)
    return decoder.roots, got


def via_push_bytewise(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = push(data, [1])
    assert roots is not None
    return roots, [(c, d) for c, d, _ in blocks]


def via_push_whole(data: bytes) -> tuple[list[CID], list[Block]]:
    roots, blocks = push(data, [len(data) or 1])
    assert roots is not None
    return roots, [(c, d) for c, d, _ in blocks]


READERS: list[Callable[[bytes], tuple[list[CID], list[Block]]]] = [
    via_bytes,
    via_stream_big,
    via_stream_tiny,
    via_trickle,
    via_push_bytewise,
    via_push_whole,
]
readers = pytest.mark.parametrize("read", READERS, ids=lambda f: f.__name__)


# --- varints ---------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert len(raw) == varint_size(value) <= 9
    assert decode_varint(raw) == (value, len(raw))
    assert decode_varint(b"\xff" + raw, 1) == (value, len(raw) + 1)


def test_varint_known_values() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(2**63 - 1) == b"\xff" * 8 + b"\x7f"
    for bad in (-1, 2**63):
        with pytest.raises(ValueError):
            encode_varint(bad)


@pytest.mark.parametrize(
    ("raw", "offset", "words"),
    [
        (b"\x80\x00", 0, "non-minimal"),
        (b"\x81\x80\x00", 0, "non-minimal"),
        (b"\xff" * 9 + b"\x01", 0, "longer than 9"),
        (b"\x80", 0, "truncated"),
        (b"", 0, "truncated"),
    ],
)
def test_varint_errors(raw: bytes, offset: int, words: str) -> None:
    with pytest.raises(InvalidCAR, match=words) as info:
        decode_varint(raw)
    assert info.value.offset == offset


# --- round trips -----------------------------------------------------------------


@readers
def test_round_trip(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    data = write_car([ROOT], BLOCKS)
    assert read(data) == ([ROOT], BLOCKS)


def test_offsets_point_at_sections() -> None:
    data = write_car([ROOT], BLOCKS)
    _, blocks = read_stream(data, chunk=10)
    expected = len(encode_car_header([ROOT]))
    for cid, block, offset in blocks:
        assert offset == expected
        size, after = decode_varint(data, offset)
        assert data[after : after + len(cid.raw)] == cid.raw
        assert data[after + len(cid.raw) : offset + varint_size(size) + size] == block
        expected = after + size
    assert expected == len(data)


def test_writer_matches_write_car() -> None:
    out = io.BytesIO()
    writer = CarWriter(out, [ROOT, BLOCKS[1][0]])
    for cid, block in BLOCKS:
        writer.write_block(cid, block)
    assert out.getvalue() == write_car([ROOT, BLOCKS[1][0]], BLOCKS)
    assert writer.bytes_written == len(out.getvalue())


@readers
def test_empty_roots_and_no_blocks(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    data = write_car([], [])
    assert data == encode_car_header([])
    assert read(data) == ([], [])
    assert read(write_car([], BLOCKS[:3])) == ([], BLOCKS[:3])


@readers
def test_any_order_and_duplicates(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    shuffled = BLOCKS[::-1] + BLOCKS[3:5]
    roots, got = read(write_car([ROOT, ROOT], shuffled))
    assert roots == [ROOT, ROOT]
    assert dict(got) == dict(BLOCKS)


def test_read_car_keeps_one_copy_of_duplicates() -> None:
    _, blocks = read_car(write_car([ROOT], BLOCKS + BLOCKS))
    assert len(blocks) == len(BLOCKS)
    assert list(blocks.items()) == BLOCKS


@readers
def test_non_blessed_cids(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    data = b"some raw bytes"
    blocks = [
        (CID.for_raw(data), data),
        (odd_cid(b"\x01\x70\x12\x20", data), data),  # dag-pb
        (odd_cid(b"\x01\xa9\x02\x12\x20", data), data),  # dag-json: two-byte codec varint
    ]
    assert read(write_car([blocks[2][0]], blocks)) == ([blocks[2][0]], blocks)


@readers
def test_blocks_larger_than_a_chunk(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    blocks = [make_block(1, 200_000), make_block(2, 10), make_block(3, 70_000)]
    assert read(write_car([blocks[0][0]], blocks)) == ([blocks[0][0]], blocks)


def test_verify_hashes_off_accepts_mismatch() -> None:
    cid, _ = BLOCKS[0]
    data = write_car([cid], [(cid, b"not the data")])
    _, blocks = read_stream(data, verify_hashes=False)
    assert [(c, d) for c, d, _ in blocks] == [(cid, b"not the data")]
    _, bm = read_car(data, verify_hashes=False)
    assert bm.get(cid) == b"not the data"


def test_reader_iterates_once() -> None:
    reader = CarReader(io.BytesIO(write_car([ROOT], BLOCKS)))
    assert len(list(reader)) == len(BLOCKS)
    with pytest.raises(RuntimeError):
        iter(reader)


def make_raw_or_cbor(payload: bytes, kind: str) -> Block:
    if kind == "raw":
        return CID.for_raw(payload), payload
    data = cbor.encode({"b": payload})
    return CID.for_dag_cbor(data), data


block_lists = st.lists(
    st.builds(make_raw_or_cbor, st.binary(max_size=300), st.sampled_from(["cbor", "raw"])), max_size=25
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_lists, st.data())
def test_round_trip_property(blocks: list[Block], data: st.DataObject) -> None:
    cids = [c for c, _ in blocks]
    roots = data.draw(st.lists(st.sampled_from(cids), max_size=3)) if cids else []
    order = data.draw(st.permutations(blocks))
    chunk = data.draw(st.integers(min_value=1, max_value=600))
    car = write_car(roots, order)
    got_roots, got = read_stream(car, chunk=chunk)
    assert got_roots == roots
    assert [(c, d) for c, d, _ in got] == order
    mem_roots, mem = read_car(car)
    assert mem_roots == roots
    assert dict(mem.items()) == dict(order)
    idx_roots, where = _index(car)
    assert idx_roots == roots
    stream = io.BytesIO(car)
    for cid, block in order:
        assert read_block_at(stream, *where(cid), cid=cid) == block


# --- errors with offsets -----------------------------------------------------------

HEADER = encode_car_header([ROOT])
CID0, DATA0 = BLOCKS[0]
SECTION0 = encode_varint(len(CID0.raw) + len(DATA0)) + CID0.raw + DATA0


def raw_header(value: object) -> bytes:
    body = cbor.encode(value)
    return encode_varint(len(body)) + body


ERROR_CASES: list[tuple[str, bytes, int, str]] = [
    ("empty file", b"", 0, "empty CAR"),
    ("truncated header varint", b"\x80", 0, "truncated header length"),
    ("non-minimal header varint", b"\x80\x00", 0, "non-minimal"),
    ("truncated header", HEADER[:10], 1, "truncated CAR header"),
    ("empty header", b"\x00", 0, "empty CAR header"),
    ("header not cbor", b"\x03\xff\xff\xff", 1, "not valid DAG-CBOR"),
    ("header trailing bytes", b"\x02\x01\x02", 2, "not valid DAG-CBOR"),
    ("header not a map", raw_header([1]), 1, "not a map"),
    ("version 2", raw_header({"version": 2}), 1, "unsupported CAR version 2"),
    ("version 2 with roots", raw_header({"roots": [ROOT], "version": 2}), 1, "version 2"),
    ("version is text", raw_header({"roots": [], "version": "1"}), 1, "unsupported CAR version"),
    ("version bool", raw_header({"roots": [], "version": True}), 1, "unsupported CAR version"),
    ("missing version", raw_header({"roots": [ROOT]}), 1, "no 'version'"),
    ("missing roots", raw_header({"version": 1}), 1, "no 'roots'"),
    ("roots not a list", raw_header({"roots": ROOT, "version": 1}), 1, "not a list"),
    ("roots not links", raw_header({"roots": [str(ROOT)], "version": 1}), 1, r"roots\[0\] is a str"),
    ("truncated block varint", HEADER + b"\x80", len(HEADER), "truncated block length varint"),
    ("non-minimal block varint", HEADER + b"\xa8\x00" + SECTION0[1:], len(HEADER), "non-minimal"),
    ("overlong block varint", HEADER + b"\xff" * 10, len(HEADER), "longer than 9"),
    ("truncated CID", HEADER + SECTION0[:10], len(HEADER) + 1, "truncated CID"),
    ("truncated CID in prefix", HEADER + SECTION0[:3], len(HEADER) + 1, "truncated CID"),
    ("truncated data", HEADER + SECTION0[:-5], len(HEADER) + 37, "truncated block data"),
    ("empty section", HEADER + b"\x00", len(HEADER), "empty block section"),
    ("CID longer than section", HEADER + b"\x05" + CID0.raw, len(HEADER) + 1, "CID runs past"),
    ("CIDv0", HEADER + b"\x30\x12\x20" + bytes(46), len(HEADER) + 1, "invalid CID"),
    ("CID version 2", HEADER + b"\x30\x02\x71\x12\x20" + bytes(44), len(HEADER) + 1, "invalid CID"),
]


@readers
@pytest.mark.parametrize(("name", "data", "offset", "words"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_with_offsets(
    read: Callable[[bytes], tuple[list[CID], list[Block]]], name: str, data: bytes, offset: int, words: str
) -> None:
    with pytest.raises(InvalidCAR, match=words) as info:
        read(data)
    assert info.value.offset == offset, str(info.value)
    assert f"at byte {info.value.offset}" in str(info.value)


@readers
def test_errors_after_good_blocks(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    good = write_car([ROOT], BLOCKS)
    cid, block = make_block(99)
    section = encode_varint(len(cid.raw) + len(block)) + cid.raw + block
    with pytest.raises(InvalidCAR, match="truncated block data") as info:
        read(good + section[:-1])
    assert info.value.offset == len(good) + 1 + 36
    with pytest.raises(InvalidCAR, match="truncated CID") as info:
        read(good + section[:20])
    assert info.value.offset == len(good) + 1


@readers
def test_hash_mismatch(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    good = write_car([ROOT], BLOCKS[:3])
    cid, block = BLOCKS[3]
    bad = good + encode_varint(36 + len(block)) + cid.raw + block[:-1] + b"\x00"
    with pytest.raises(InvalidCAR, match=str(cid)) as info:
        read(bad)
    assert info.value.offset == len(good)
    # the slow path (non-blessed CID) says the same
    odd = odd_cid(b"\x01\x70\x12\x20", b"abc")
    bad = good + encode_varint(len(odd.raw) + 3) + odd.raw + b"abd"
    with pytest.raises(InvalidCAR, match=str(odd)) as info:
        read(bad)
    assert info.value.offset == len(good)


@readers
def test_unverifiable_hash(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    sha512 = CID(b"\x01\x55\x13\x40" + hashlib.sha512(b"abc").digest())
    data = write_car([], [(sha512, b"abc")])
    with pytest.raises(InvalidCAR, match="cannot verify") as info:
        read(data)
    assert info.value.offset == len(encode_car_header([]))
    _, blocks = read_stream(data, verify_hashes=False)
    assert [(c, d) for c, d, _ in blocks] == [(sha512, b"abc")]


@readers
def test_oversize_block_declared(read: Callable[[bytes], tuple[list[CID], list[Block]]]) -> None:
    data = HEADER + encode_varint(limits.MAX_CAR_BLOCK_BYTES + 1) + CID0.raw
    with pytest.raises(LimitExceeded, match=f"MAX_CAR_BLOCK_BYTES.*at byte {len(HEADER)}"):
        read(data)


def test_oversize_block_custom_limit() -> None:
    data = write_car([ROOT], [make_block(1, 500)])
    with pytest.raises(LimitExceeded, match="MAX_CAR_BLOCK_BYTES"):
        read_stream(data, max_block_bytes=100)
    with pytest.raises(LimitExceeded, match="MAX_CAR_BLOCK_BYTES"):
        read_car(data, max_block_bytes=100)


def test_oversize_header_and_car() -> None:
    data = encode_varint(limits.MAX_CAR_HEADER_BYTES + 1) + b"\xa0"
    with pytest.raises(LimitExceeded, match="MAX_CAR_HEADER_BYTES"):
        read_stream(data)
    with pytest.raises(LimitExceeded, match="MAX_CAR_HEADER_BYTES"):
        read_car(data)
    with pytest.raises(LimitExceeded, match="max_bytes"):
        read_car(write_car([ROOT], BLOCKS), max_bytes=100)


# --- push decoding ---------------------------------------------------------------------

MIXED = write_car(
    [ROOT],
    [
        *BLOCKS[:6],
        make_block(100, 200),  # a two-byte length varint
        (CID.for_raw(b"blob"), b"blob"),
        (odd_cid(b"\x01\xa9\x02\x12\x20", b"json"), b"json"),  # the slow path
        *BLOCKS[6:9],
    ],
)


def pull_all(data: bytes) -> tuple[list[CID], list[Section]]:
    return read_stream(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=60))
def test_push_any_split_matches_pull(sizes: list[int]) -> None:
    assert push(MIXED, sizes) == pull_all(MIXED)


def test_push_bytewise_matches_pull_with_offsets() -> None:
    expected = pull_all(MIXED)
    assert push(MIXED, [1]) == expected
    assert push(MIXED, [len(MIXED)]) == expected
    assert expected[1][0][2] == len(HEADER)


def test_push_header_known_before_blocks() -> None:
    decoder = CarDecoder()
    assert decoder.feed(HEADER[:5]) == [] and decoder.roots is None and decoder.header is None
    assert decoder.feed(HEADER[5:]) == [] and decoder.roots == [ROOT]
    assert decoder.header == {"roots": [ROOT], "version": 1}
    assert decoder.feed(SECTION0[:-1]) == []
    assert decoder.needed == 1
    assert decoder.offset == len(HEADER)
    assert decoder.feed(SECTION0[-1:]) == [(CID0, DATA0, len(HEADER))]
    assert decoder.offset == len(HEADER) + len(SECTION0)
    decoder.close()
    decoder.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="after close"):
        decoder.feed(b"x")


def test_push_needed_is_the_rest_of_the_section() -> None:
    cid, block = make_block(1, 100_000)
    section = encode_varint(len(cid.raw) + len(block)) + cid.raw + block
    decoder = CarDecoder()
    decoder.feed(HEADER + section[:1000])
    assert decoder.needed == len(section) - 1000
    for at in range(1000, len(section) - 1, 4096):  # held, not parsed, until the section is complete
        assert decoder.feed(section[at : min(at + 4096, len(section) - 1)]) == []
    assert decoder.needed == 1
    assert decoder.feed(section[-1:]) == [(cid, block, len(HEADER))]


def test_push_accepts_other_buffers() -> None:
    decoder = CarDecoder()
    got = decoder.feed(bytearray(MIXED)) + decoder.feed(memoryview(b""))
    decoder.close()
    assert got == pull_all(MIXED)[1]
    assert all(type(data) is bytes for _, data, _ in got)


def test_push_truncation_at_every_position_raises_at_close() -> None:
    full = pull_all(MIXED)[1]
    boundaries = {len(HEADER), len(MIXED)} | {offset for _, _, offset in full}
    for cut in range(len(MIXED)):
        decoder = CarDecoder()
        got = decoder.feed(MIXED[:cut])
        assert got == full[: len(got)]
        if cut in boundaries:  # a CAR cut between sections is a shorter CAR
            decoder.close()
            assert len(got) == sum(offset < cut for _, _, offset in full)
            continue
        with pytest.raises(InvalidCAR) as info:
            decoder.close()
        # the same error, at the same offset, as the pull reader on the cut file
        with pytest.raises(InvalidCAR) as pulled:
            read_stream(MIXED[:cut], chunk=7)
        assert (str(info.value), info.value.offset) == (str(pulled.value), pulled.value.offset)
        assert info.value.offset is not None and info.value.offset <= cut


def test_push_good_blocks_come_before_the_error() -> None:
    bad = MIXED + encode_varint(36 + len(DATA0)) + CID0.raw + DATA0[:-1] + b"\x00"
    decoder = CarDecoder()
    got = decoder.feed(bad)
    assert got == pull_all(MIXED)[1]  # everything before the bad section, whatever the split
    with pytest.raises(InvalidCAR, match="does not match") as info:
        decoder.close()
    assert info.value.offset == len(MIXED)
    with pytest.raises(InvalidCAR, match="does not match"):  # and it stays failed
        decoder.feed(b"")
    # a split before the bad section: the error comes from the feed that reaches it
    decoder = CarDecoder()
    assert decoder.feed(bad[: len(MIXED)]) == got
    with pytest.raises(InvalidCAR, match="does not match"):
        decoder.feed(bad[len(MIXED) :])


def test_push_limits_before_the_data() -> None:
    decoder = CarDecoder()
    decoder.feed(HEADER)
    with pytest.raises(LimitExceeded, match=f"MAX_CAR_BLOCK_BYTES.*at byte {len(HEADER)}"):
        decoder.feed(encode_varint(limits.MAX_CAR_BLOCK_BYTES + 1))
    decoder = CarDecoder(max_header_bytes=10)
    with pytest.raises(LimitExceeded, match="MAX_CAR_HEADER_BYTES"):
        decoder.feed(HEADER[:1])


def test_push_verify_hashes_off() -> None:
    data = write_car([CID0], [(CID0, b"not the data")])
    offset = len(encode_car_header([CID0]))
    assert push(data, [3], verify_hashes=False)[1] == [(CID0, b"not the data", offset)]
    with pytest.raises(InvalidCAR, match="does not match"):
        push(data, [3])


def test_push_empty_stream() -> None:
    decoder = CarDecoder()
    assert decoder.feed(b"") == []
    with pytest.raises(InvalidCAR, match="empty CAR file") as info:
        decoder.close()
    assert info.value.offset == 0


def until_error(run: Callable[[list[Section]], None]) -> tuple[list[Section], str]:
    """The blocks a reader hands out, then how it ended."""
    got: list[Section] = []
    try:
        run(got)
    except AtrepoError as exc:
        return got, f"{type(exc).__name__}: {exc}"
    return got, "ok"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_cars_push_like_pull(data: st.DataObject) -> None:
    """On damaged input the push decoder hands out what the pull reader does, then the same error."""
    buf = bytearray(MIXED)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        buf[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    mutated = bytes(buf)
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=20))

    def pull(into: list[Section]) -> None:
        into.extend(CarReader(io.BytesIO(mutated), chunk_size=64))

    def feed(into: list[Section]) -> None:
        decoder = CarDecoder()
        at = 0
        for i in range(len(mutated)):
            if at >= len(mutated):
                break
            size = sizes[min(i, len(sizes) - 1)]
            into += decoder.feed(mutated[at : at + size])
            at += size
        decoder.close()

    assert until_error(feed) == until_error(pull)


# --- random access -----------------------------------------------------------------


def _index(data: bytes | Readable, **kw: Any) -> tuple[list[CID], Callable[[CID], tuple[int, int]]]:
    """Index a CAR; return its roots and ``where(cid)`` -> (offset, length) of the block's data."""
    index = CarIndex.build(io.BytesIO(data) if isinstance(data, bytes) else data, **kw)
    find = index.finder()

    def where(cid: CID) -> tuple[int, int]:
        ordinal = find(cid)
        assert ordinal >= 0, cid
        return index.location(ordinal)

    return index.roots, where


def test_index_and_read_block_at() -> None:
    blocks = [*BLOCKS[::-1], BLOCKS[2]]
    data = write_car([ROOT], blocks)
    index = CarIndex.build(io.BytesIO(data))
    assert index.roots == [ROOT]
    find = index.finder()
    assert sorted(find(c) for c, _ in BLOCKS) == list(range(len(BLOCKS)))  # duplicates skipped
    _, where = _index(data)
    stream = io.BytesIO(data)
    for cid, block in BLOCKS:
        offset, length = where(cid)
        assert data[offset : offset + length] == block
        assert read_block_at(stream, offset, length) == block
        assert read_block_at(stream, offset, length, cid) == block
    # first section wins for duplicates
    first = data.index(BLOCKS[2][0].raw) + 36
    assert where(BLOCKS[2][0])[0] == first


def test_index_checks_hashes() -> None:
    cid, block = BLOCKS[0]
    data = write_car([cid], [(cid, block + b"!")])
    with pytest.raises(InvalidCAR, match="does not match"):
        _index(data)
    _, where = _index(data, verify_hashes=False)
    offset, length = where(cid)
    with pytest.raises(InvalidCAR, match="does not match") as info:
        read_block_at(io.BytesIO(data), offset, length, cid)
    assert info.value.offset == offset


def test_read_block_at_truncated() -> None:
    data = write_car([ROOT], BLOCKS[:2])
    _, where = _index(data)
    offset, length = where(BLOCKS[1][0])
    with pytest.raises(InvalidCAR, match="truncated block data") as info:
        read_block_at(io.BytesIO(data[:-1]), offset, length)
    assert info.value.offset == offset


def test_index_from_a_trickling_stream() -> None:
    data = write_car([ROOT], BLOCKS)
    roots, where = _index(Trickle(data, 7))
    assert roots == [ROOT]
    stream = io.BytesIO(data)
    for cid, block in BLOCKS:
        assert read_block_at(stream, *where(cid), cid=cid) == block


# --- hostile input -------------------------------------------------------------------

SAMPLE = write_car([ROOT], [*BLOCKS[:4], (CID.for_raw(b"blob"), b"blob")])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_cars_raise_only_atrepo_errors(data: st.DataObject) -> None:
    buf = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not buf:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        if action == "flip":
            buf[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif action == "cut":
            del buf[at:]
        elif action == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[at : at + data.draw(st.integers(min_value=1, max_value=40))]
    mutated = bytes(buf)
    chunk = data.draw(st.integers(min_value=1, max_value=100))
    with contextlib.suppress(AtrepoError):
        read_car(mutated)
    with contextlib.suppress(AtrepoError):
        read_stream(mutated, chunk=chunk)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_atrepo_errors(junk: bytes) -> None:
    for candidate in (junk, HEADER + junk):
        with contextlib.suppress(AtrepoError):
            read_car(candidate)
        with contextlib.suppress(AtrepoError):
            read_stream(candidate, chunk=16)
