"""``encode_frame_with_seq``: a relay's re-sequenced frame is byte for byte the general encoding.

The fast path builds a ``#commit`` body itself and skips ``cbor.encode``'s
data-model walk; these tests hold it to ``encode_frame(replace(frame, seq=...))``
for every shape of commit, for the other message types (general path) and for
events whose fields are not the plain types the fast path takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError
from atrepo.core.events import (
    AccountEvent,
    CommitEvent,
    IdentityEvent,
    Message,
    RepoOp,
    SyncEvent,
    commit_seq_slot,
    decode_frame,
    encode_frame,
    encode_frame_with_seq,
    reseq_frame,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
REV = "3kgnjdpmjtc2b"
SINCE = "3kgnjdi6ma22a"
TIME = "2024-05-01T12:34:56.789Z"


def cid_of(value: Any) -> CID:
    return CID.for_dag_cbor(cbor.encode(value))


COMMIT = cid_of({"commit": 1})
RECORD = cid_of({"text": "new"})
OLD = cid_of({"text": "old"})
BLOCKS = write_car([COMMIT], [(COMMIT, cbor.encode({"commit": 1}))])


def general(frame: Message, seq: int) -> bytes:
    return encode_frame(dataclasses.replace(frame, seq=seq))  # type: ignore[type-var]


def commit(**changes: Any) -> CommitEvent:
    base = CommitEvent(
        7,
        DID,
        COMMIT,
        REV,
        SINCE,
        BLOCKS,
        (
            RepoOp("create", "app.bsky.feed.post/3kgnjdpmjtc2b", RECORD),
            RepoOp("update", "app.bsky.feed.like/3kgnjdpmjtc2c", RECORD, OLD),
            RepoOp("delete", "app.bsky.feed.like/3kgnjdpmjtc2d", None, OLD),
        ),
        TIME,
        cid_of({"e": [], "l": None}),
        (CID.for_raw(b"blob"),),
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"since": None},
        {"prev_data": None},
        {"ops": ()},
        {"blobs": ()},
        {"rebase": True, "too_big": True},
        {"blocks": b""},
        {"ops": (RepoOp("delete", "a.b.c/d", None, OLD),)},
    ],
)
@pytest.mark.parametrize("seq", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32, limits.MAX_SAFE_INT])
def test_commit_same_bytes_as_general(changes: dict[str, Any], seq: int) -> None:
    frame = commit(**changes)
    out = encode_frame_with_seq(frame, seq)
    assert out == general(frame, seq)
    if seq:  # 0 is no firehose seq: the decoder refuses it
        assert decode_frame(out) == dataclasses.replace(frame, seq=seq)


@pytest.mark.parametrize(
    "frame",
    [
        SyncEvent(5, DID, BLOCKS, REV, TIME),
        IdentityEvent(5, DID, TIME, "alice.test"),
        IdentityEvent(5, DID, TIME),
        AccountEvent(5, DID, TIME, False, "takendown"),
        AccountEvent(5, DID, TIME, True),
    ],
)
def test_other_types_take_the_general_path(frame: Message) -> None:
    assert encode_frame_with_seq(frame, 99) == general(frame, 99)


class StrSub(str):
    """A str subclass: the general encoder refuses it; the fast path must not take it either."""


@pytest.mark.parametrize(
    "changes",
    [
        {"repo": StrSub(DID)},
        {"time": 1.5},
        {"since": 3},
        {"rebase": 1},
        {"blocks": bytearray(b"x")},
        {"ops": [RepoOp("create", "a.b.c/d", RECORD)]},
        {"ops": (RepoOp("create", "a.b.c/d", RECORD, prev="x"),)},  # type: ignore[arg-type]
        {"ops": (RepoOp("create", "a.b.c/d", "x"),)},  # type: ignore[arg-type]
        {"ops": ({"action": "create"},)},
        {"blobs": ("x",)},
        {"prev_data": b"x"},
        {"commit": None},
    ],
)
def test_unplain_fields_behave_as_the_general_encoder(changes: dict[str, Any]) -> None:
    frame = commit(**changes)
    try:
        want: bytes | type[BaseException] = general(frame, 9)
    except (AtrepoError, TypeError, ValueError, AttributeError) as exc:
        want = type(exc)
    try:
        got: bytes | type[BaseException] = encode_frame_with_seq(frame, 9)
    except (AtrepoError, TypeError, ValueError, AttributeError) as exc:
        got = type(exc)
    assert got == want


@pytest.mark.parametrize("seq", [-1, 2**63, 1.0])
def test_odd_seqs_take_the_general_path(seq: Any) -> None:
    frame = commit()
    try:
        want: bytes | type[BaseException] = general(frame, seq)
    except (AtrepoError, TypeError, ValueError, AttributeError) as exc:
        want = type(exc)
    try:
        got: bytes | type[BaseException] = encode_frame_with_seq(frame, seq)
    except (AtrepoError, TypeError, ValueError, AttributeError) as exc:
        got = type(exc)
    assert got == want


_paths = st.from_regex(r"\A[a-z]{1,8}\.[a-z]{1,8}\.[a-z]{1,8}/[a-z0-9]{1,13}\Z")


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["create", "update", "delete"]), _paths),
        max_size=5,
        unique_by=lambda t: t[1],
    ),
    seq=st.integers(min_value=1, max_value=limits.MAX_SAFE_INT),
    since=st.sampled_from([None, SINCE]),
    blocks=st.binary(max_size=300),
    text=st.text(max_size=30),
)
def test_property_commit_roundtrip(
    ops: list[tuple[str, str]], seq: int, since: str | None, blocks: bytes, text: str
) -> None:
    made = tuple(
        RepoOp(action, path, None if action == "delete" else RECORD, None if action == "create" else OLD)  # type: ignore[arg-type]
        for action, path in ops
    )
    frame = commit(ops=made, since=since, blocks=blocks, time=TIME + text)
    assert encode_frame_with_seq(frame, seq) == general(frame, seq)


# --- commit_seq_slot / reseq_frame: the upstream's frame with the relay's seq -----------------


def raw_frame(body: dict[str, Any]) -> bytes:
    """A ``#commit`` frame as an upstream may send it (any fields; the codec alone)."""
    import cbrrr

    def conv(v: Any) -> Any:
        if type(v) is CID:
            return cbrrr.CID(bytes(v.raw))
        if type(v) in (list, tuple):
            return [conv(x) for x in v]
        if type(v) is dict:
            return {k: conv(x) for k, x in v.items()}
        return v

    from atrepo.core.events import _COMMIT_HEADER

    return _COMMIT_HEADER + cbrrr.encode_dag_cbor(conv(body))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"since": None},
        {"prev_data": None},
        {"ops": ()},
        {"blobs": ()},
        {"rebase": True, "too_big": True},
        {"blocks": b""},
        {"blocks": bytes(70_000)},
        {"seq": 23},
        {"seq": 24},
        {"seq": 65_536},
        {"seq": limits.MAX_SAFE_INT},
        {"time": TIME + "é"},
        {"ops": (RepoOp("delete", "a.b.c/" + "d" * 300, None, OLD),)},
    ],
)
@pytest.mark.parametrize("new", [1, 23, 24, 255, 256, 2**32, limits.MAX_SAFE_INT])
def test_seq_slot_of_our_own_encoding(changes: dict[str, Any], new: int) -> None:
    frame = commit(**changes)
    raw = encode_frame(frame)
    slot = commit_seq_slot(raw, frame)
    assert slot is not None
    assert reseq_frame(raw, slot, new) == general(frame, new)


@pytest.mark.parametrize(
    "extra",
    [
        {"extra": 1},
        {"zzz": "x"},
        {"a": None},
    ],
)
def test_seq_slot_refuses_frames_with_more_than_the_event_keeps(extra: dict[str, Any]) -> None:
    frame = commit(prev_data=None)
    body = {**frame.to_body(), **extra}
    raw = raw_frame(body)
    assert decode_frame(raw) == frame  # the extra field is dropped on decoding
    assert commit_seq_slot(raw, frame) is None


def test_seq_slot_refuses_an_ops_null_prev_and_other_events() -> None:
    frame = commit(ops=(RepoOp("create", "a.b.c/d", RECORD),))
    body = frame.to_body()
    body["ops"] = [{**body["ops"][0], "prev": None}]
    raw = raw_frame(body)
    try:
        decoded = decode_frame(raw)
    except AtrepoError:
        pass  # refused on decoding: never relayed
    else:
        assert decoded == frame
        assert commit_seq_slot(raw, frame) is None
    other = commit(rev="3kgnjdpmjtc2c")  # same lengths, another event: the bytes are not its encoding
    assert commit_seq_slot(encode_frame(frame), other) is None or encode_frame(frame) == encode_frame(other)
    assert commit_seq_slot(encode_frame(frame)[:-1], frame) is None
    assert commit_seq_slot(b"", frame) is None
    with pytest.raises(ValueError):
        reseq_frame(encode_frame(frame), (0, 1), -1)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["create", "update", "delete"]), _paths),
        max_size=5,
        unique_by=lambda t: t[1],
    ),
    seq=st.integers(min_value=1, max_value=limits.MAX_SAFE_INT),
    new=st.integers(min_value=1, max_value=limits.MAX_SAFE_INT),
    since=st.sampled_from([None, SINCE]),
    blocks=st.binary(max_size=300),
    text=st.text(max_size=30),
    blobs=st.integers(0, 3),
    prev_data=st.booleans(),
    extra=st.sampled_from([None, "x", "seq2", "aaa"]),
)
def test_property_seq_slot(
    ops: list[tuple[str, str]],
    seq: int,
    new: int,
    since: str | None,
    blocks: bytes,
    text: str,
    blobs: int,
    prev_data: bool,
    extra: str | None,
) -> None:
    made = tuple(
        RepoOp(action, path, None if action == "delete" else RECORD, None if action == "create" else OLD)  # type: ignore[arg-type]
        for action, path in ops
    )
    frame = commit(
        seq=seq,
        ops=made,
        since=since,
        blocks=blocks,
        time=TIME + text,
        blobs=tuple(CID.for_raw(bytes([i])) for i in range(blobs)),
        prev_data=cid_of({"p": 1}) if prev_data else None,
    )
    body = frame.to_body()
    if extra is not None:
        body[extra] = 0
    try:
        raw = raw_frame(body)
        decoded = decode_frame(raw)
    except AtrepoError:
        return  # e.g. a time the decoder refuses: no frame to relay
    slot = commit_seq_slot(raw, decoded)  # type: ignore[arg-type]
    if slot is None:
        assert raw != encode_frame(decoded)
    else:
        assert raw == encode_frame(decoded)
        assert reseq_frame(raw, slot, new) == general(decoded, new)  # type: ignore[arg-type]
