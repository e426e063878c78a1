"""The fast paths of ``#commit`` verification against the general paths they stand in for.

Each fast path (``read_car``'s one-root slice reader, ``decode_frame``'s
one-call ``#commit`` body decode and its one-pass body parse, and
``decode_commit``'s six-field shortcut) either returns exactly what the general
path returns or hands the input to it. So for real inputs and mutated ones,
the outcome (value, or error type and message) must be the general path's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import car, commit, events
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError
from atrepo.core.events import decode_frame, encode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import CommitResult, Repo, Write

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
POST = "app.bsky.feed.post"
TIME = "2024-05-01T12:34:56.789Z"
KEY = PrivateKey.generate("k256")
REPO = Repo.build(DID, KEY, [(f"{POST}/base{i:04d}", {"$type": POST, "text": str(i)}) for i in range(300)])


def _result() -> CommitResult:
    return REPO.apply_writes(
        [
            Write("update", POST, "base0100", {"$type": POST, "text": "x"}),
            Write("create", POST, "new1", {"$type": POST, "text": "n"}),
            Write("delete", POST, "base0200"),
        ],
        KEY,
    )


RESULT = _result()
EVENT = RESULT.to_event(7, TIME)
FRAME = encode_frame(EVENT)
BLOCKS = EVENT.blocks
COMMIT_RAW = RESULT.event_blocks.get(EVENT.commit)
assert COMMIT_RAW is not None


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        value = call()
    except AtrepoError as exc:
        return "error", (type(exc), str(exc))
    return "value", value


def _mutate(data: bytes, draw: st.DataObject) -> bytes:
    block = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 3))):
        kind = draw.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = draw.draw(st.integers(0, max(len(block) - 1, 0)))
        if kind == "flip" and block:
            block[at] ^= 1 << draw.draw(st.integers(0, 7))
        elif kind == "cut":
            del block[at:]
        elif kind == "insert":
            block[at:at] = bytes([draw.draw(st.integers(0, 255))])
        elif block:
            del block[at]
    return bytes(block)


# --- read_car -------------------------------------------------------------------


def _general_read_car(data: bytes) -> tuple[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(car, "_read_small_car", lambda data, max_section: None)
        return _outcome(lambda: car.read_car(data))


def _same_car(data: bytes) -> None:
    """``read_car`` with the C section reader (when built), with the pure-Python one, and general."""
    general = _general_read_car(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(car, "_native_car_blocks", None)
        pure = _outcome(lambda: car.read_car(data))
    for fast in (_outcome(lambda: car.read_car(data)), pure):
        if fast[0] == "value":
            assert general[0] == "value"
            assert fast[1][0] == general[1][0] and type(fast[1][0][0]) is CID
            assert list(fast[1][1].items()) == list(general[1][1].items())
            assert all(type(cid) is CID for cid in fast[1][1])
        else:
            assert fast == general


def test_read_car_takes_the_fast_path() -> None:
    fast = car._read_small_car(BLOCKS, car.limits.MAX_CAR_BLOCK_BYTES)
    assert fast is not None
    roots, blocks = fast
    assert roots == [EVENT.commit] and type(roots[0]) is CID
    assert list(blocks.items()) == list(RESULT.event_blocks.items())


def test_read_car_c_sections_when_built() -> None:
    from atrepo.core import _native

    if _native.car_blocks is None:
        pytest.skip("the C extension is not built, or hashes without the SHA extensions")
    held = _native.car_blocks(BLOCKS, car._ONE_ROOT_END, car.limits.MAX_CAR_BLOCK_BYTES)
    assert held is not None and list(held.items()) == list(RESULT.event_blocks.items())
    bad = bytearray(BLOCKS)
    bad[-1] ^= 1
    assert _native.car_blocks(bytes(bad), car._ONE_ROOT_END, car.limits.MAX_CAR_BLOCK_BYTES) is None
    assert _native.car_blocks(BLOCKS, car._ONE_ROOT_END, 10) is None


def test_read_car_duplicate_sections() -> None:
    cid, data = next(iter(RESULT.event_blocks.items()))
    doubled = car.write_car([EVENT.commit], [*RESULT.event_blocks.items(), (cid, data)])
    assert car._read_small_car(doubled, car.limits.MAX_CAR_BLOCK_BYTES) is not None
    _same_car(doubled)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_read_car_mutated(data: st.DataObject) -> None:
    _same_car(_mutate(BLOCKS, data))


# --- decode_frame ----------------------------------------------------------------


def _general_frame(frame: bytes) -> tuple[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events, "_commit_body", lambda data: None)
        patch.setattr(events, "_parse_commit", events._parse_commit_fields)
        patch.setitem(events._PARSERS, "#commit", events._parse_commit_fields)
        return _outcome(lambda: decode_frame(frame))


def _same_frame(frame: bytes) -> None:
    assert _outcome(lambda: decode_frame(frame)) == _general_frame(frame)


def test_decode_frame_fast_path() -> None:
    assert events._commit_body(FRAME) is not None
    assert decode_frame(FRAME) == EVENT
    _same_frame(FRAME)


def _body_variants() -> list[dict[str, Any]]:
    body = EVENT.to_body()
    op = body["ops"][0]
    variants: list[dict[str, Any]] = []
    for key in body:
        variants.append({k: v for k, v in body.items() if k != key})  # each field missing
    for key, bad in [
        ("seq", 0),
        ("seq", 2**53),
        ("seq", True),
        ("rebase", True),
        ("rebase", 1),
        ("tooBig", True),
        ("repo", "did:bad"),
        ("commit", "bafy"),
        ("rev", "x"),
        ("since", 5),
        ("since", "notatid"),
        ("blocks", "x"),
        ("ops", {}),
        ("blobs", [b"x"]),
        ("prevData", None),
        ("prevData", "x"),
        ("time", "yesterday"),
        ("time", 3),
        ("extra", {"nested": [1, 2, 3]}),
    ]:
        variants.append({**body, key: bad})
    for key, bad in [
        ("action", "upsert"),
        ("action", 1),
        ("path", "no-slash"),
        ("path", None),
        ("cid", None),
        ("cid", "x"),
        ("prev", None),
        ("prev", "x"),
        ("extra", 1),
    ]:
        variants.append({**body, "ops": [{**op, key: bad}, *body["ops"][1:]]})
        variants.append({**body, "ops": [*body["ops"][:-1], {**op, key: bad}]})
    variants.append({**body, "ops": [{k: v for k, v in op.items() if k != "cid"}]})
    variants.append({**body, "ops": [{**op, "action": "delete", "cid": None}]})
    variants.append({**body, "ops": [1]})
    return variants


def test_decode_frame_body_variants() -> None:
    from atrepo.core import cbor

    header = events._HEADERS["#commit"]
    for body in _body_variants():
        try:
            frame = header + cbor.encode(body)
        except AtrepoError:
            continue
        _same_frame(frame)


def test_decode_frame_float_in_an_extra_field() -> None:
    import cbrrr

    body = {**EVENT.to_body(), "extra": 1.5}
    body = {k: (cbrrr.CID(bytes(v.raw)) if type(v) is CID else v) for k, v in body.items()}
    body["ops"] = [
        {k: (cbrrr.CID(bytes(v.raw)) if type(v) is CID else v) for k, v in op.items()} for op in body["ops"]
    ]
    frame = events._HEADERS["#commit"] + cbrrr.encode_dag_cbor(body)
    fast = _outcome(lambda: decode_frame(frame))
    assert fast[0] == "error"
    _same_frame(frame)


def _raw_frame(body: dict[str, Any]) -> bytes:
    """A ``#commit`` frame encoded by the codec alone: floats and big integers get through."""
    import cbrrr

    def conv(v: Any) -> Any:
        if type(v) is CID:
            return cbrrr.CID(bytes(v.raw))
        if type(v) is list:
            return [conv(x) for x in v]
        if type(v) is dict:
            return {k: conv(x) for k, x in v.items()}
        return v

    return events._HEADERS["#commit"] + cbrrr.encode_dag_cbor(conv(body))


@pytest.mark.parametrize("bad", [1.5, 2**64 - 1, -(2**64), 0.0])
def test_decode_frame_data_model_in_every_field(bad: Any) -> None:
    """A body of exactly the known fields skips the data-model walk: a float or out-of-range
    integer in any field, of the body or of an op, still gets the general path's outcome."""
    body = EVENT.to_body()
    op = body["ops"][0]
    frames = [_raw_frame({**body, key: bad}) for key in body]
    frames += [_raw_frame({**body, "ops": [{**op, key: bad}]}) for key in op]
    frames.append(_raw_frame({**body, "ops": [{**op, "extra": bad}]}))
    frames.append(_raw_frame({**body, "extra": bad}))
    for frame in frames:
        assert _outcome(lambda frame=frame: decode_frame(frame))[0] == "error"  # type: ignore[misc]
        _same_frame(frame)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_frame_mutated(data: st.DataObject) -> None:
    _same_frame(_mutate(FRAME, data))


# --- decode_commit ---------------------------------------------------------------


def _same_commit(raw: bytes) -> None:
    cid = CID.for_dag_cbor(raw)
    assert _outcome(lambda: commit.decode_commit(raw, cid)) == _outcome(
        lambda: commit._decode_commit_checked(raw, cid)
    )
    assert _outcome(lambda: commit.decode_commit(raw)) == _outcome(
        lambda: commit._decode_commit_checked(raw, None)
    )


def test_decode_commit_fast_path() -> None:
    assert COMMIT_RAW is not None
    decoded = commit.decode_commit(COMMIT_RAW, EVENT.commit)
    assert decoded == commit._decode_commit_checked(COMMIT_RAW, EVENT.commit)
    decoded.verify(KEY.public_key)
    _same_commit(COMMIT_RAW)


def test_unsigned_bytes_fast_path() -> None:
    from atrepo.core import cbor

    assert COMMIT_RAW is not None
    decoded = commit.decode_commit(COMMIT_RAW, EVENT.commit)
    assert decoded.unsigned_bytes() == cbor.encode(decoded.unsigned_map())
    for changes in [
        {"prev": decoded.data},
        {"extra": {"x": 1}},
        {"version": 2},
        {"did": "did:web:x.example"},
    ]:
        other = dataclasses.replace(decoded, **changes)  # type: ignore[arg-type]
        assert other.unsigned_bytes() == cbor.encode(other.unsigned_map())


def test_decode_commit_variants() -> None:
    from atrepo.core import cbor

    assert COMMIT_RAW is not None
    value = cbor.decode(COMMIT_RAW)
    variants = [{k: v for k, v in value.items() if k != key} for key in value]
    for key, bad in [
        ("version", 2),
        ("version", "3"),
        ("did", "nope"),
        ("rev", "x"),
        ("data", CID.for_raw(b"x")),
        ("data", "x"),
        ("prev", CID.for_raw(b"x")),
        ("prev", value["data"]),
        ("sig", b""),
        ("sig", "x"),
    ]:
        variants.append({**value, key: bad})
    variants.append({**value, "extra": 1})
    variants.append({**{k: v for k, v in value.items() if k != "prev"}, "other": None})
    for variant in variants:
        _same_commit(cbor.encode(variant))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_commit_mutated(data: st.DataObject) -> None:
    assert COMMIT_RAW is not None
    _same_commit(_mutate(COMMIT_RAW, data))


def test_events_equal_through_both_paths() -> None:
    other = dataclasses.replace(EVENT, since=None, prev_data=None)
    for event in (EVENT, other):
        frame = encode_frame(event)
        assert decode_frame(frame) == event
        _same_frame(frame)
