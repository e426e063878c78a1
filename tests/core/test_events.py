"""Firehose frames: byte-exact round trips, strict field checks, limits, stream files."""

from __future__ import annotations

import contextlib
import io
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atrepo.core import cbor, limits
from atrepo.core.car import write_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError, InvalidCBOR, InvalidEvent, LimitExceeded
from atrepo.core.events import (
    AccountEvent,
    CommitEvent,
    ErrorFrame,
    Frame,
    FrameStreamDecoder,
    IdentityEvent,
    InfoEvent,
    RepoOp,
    SyncEvent,
    UnknownFrame,
    decode_frame,
    encode_error_frame,
    encode_frame,
    iter_stream_frames,
    write_stream_frame,
)
from atrepo.core.varint import encode_varint
from support import feed_in_chunks

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
REV = "3kgnjdpmjtc2b"
SINCE = "3kgnjdi6ma22a"
TIME = "2024-05-01T12:34:56.789Z"


def cid_of(value: Any) -> CID:
    return CID.for_dag_cbor(cbor.encode(value))


COMMIT_CID = cid_of({"commit": 1})
RECORD_CID = cid_of({"$type": "app.bsky.feed.post", "text": "hi"})
OLD_RECORD_CID = cid_of({"$type": "app.bsky.feed.post", "text": "old"})
PREV_DATA = cid_of({"e": [], "l": None})
BLOB = CID.for_raw(b"a picture")
BLOCKS = write_car([COMMIT_CID], [(COMMIT_CID, cbor.encode({"commit": 1}))])


def commit_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "seq": 42,
        "rebase": False,
        "tooBig": False,
        "repo": DID,
        "commit": COMMIT_CID,
        "rev": REV,
        "since": SINCE,
        "blocks": BLOCKS,
        "ops": [
            {"action": "create", "path": "app.bsky.feed.post/3kgnjdpmjtc2b", "cid": RECORD_CID},
            {
                "action": "update",
                "path": "app.bsky.actor.profile/self",
                "cid": RECORD_CID,
                "prev": OLD_RECORD_CID,
            },
            {"action": "delete", "path": "app.bsky.feed.like/3kgnjdi6ma22a", "cid": None, "prev": RECORD_CID},
        ],
        "blobs": [],
        "prevData": PREV_DATA,
        "time": TIME,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


DROP: Any = object()

BODIES: dict[str, dict[str, Any]] = {
    "#commit": commit_body(),
    "#sync": {"seq": 43, "did": DID, "blocks": BLOCKS, "rev": REV, "time": TIME},
    "#identity": {"seq": 44, "did": DID, "time": TIME, "handle": "alice.bsky.social"},
    "#account": {"seq": 45, "did": DID, "time": TIME, "active": False, "status": "takendown"},
    "#info": {"name": "OutdatedCursor", "message": "cursor is too old"},
}


def frame(t: str | None, body: Any, op: int = 1) -> bytes:
    header: dict[str, Any] = {"op": op}
    if t is not None:
        header["t"] = t
    return cbor.encode(header) + cbor.encode(body)


# --- header bytes and round trips --------------------------------------------------


def test_commit_header_bytes() -> None:
    data = frame("#commit", BODIES["#commit"])
    assert data.startswith(bytes.fromhex("a2 61 74 67 23 63 6f 6d 6d 69 74 62 6f 70 01"))
    msg = decode_frame(data)
    assert encode_frame(msg)[:15] == bytes.fromhex("a261746723636f6d6d6974626f7001")


@pytest.mark.parametrize("t", list(BODIES))
def test_foreign_frames_round_trip_byte_exact(t: str) -> None:
    data = frame(t, BODIES[t])
    msg = decode_frame(data)
    assert msg.type_name == t  # type: ignore[union-attr]
    assert encode_frame(msg) == data
    assert msg.to_body() == BODIES[t]


def test_commit_fields() -> None:
    msg = decode_frame(frame("#commit", BODIES["#commit"]))
    assert isinstance(msg, CommitEvent)
    assert (msg.seq, msg.repo, msg.commit, msg.rev, msg.since) == (42, DID, COMMIT_CID, REV, SINCE)
    assert msg.blocks == BLOCKS
    assert msg.prev_data == PREV_DATA
    assert msg.rebase is False and msg.too_big is False and msg.blobs == ()
    assert msg.ops == (
        RepoOp("create", "app.bsky.feed.post/3kgnjdpmjtc2b", RECORD_CID),
        RepoOp("update", "app.bsky.actor.profile/self", RECORD_CID, OLD_RECORD_CID),
        RepoOp("delete", "app.bsky.feed.like/3kgnjdi6ma22a", None, RECORD_CID),
    )
    with pytest.raises(AttributeError):
        msg.seq = 1  # type: ignore[misc]


MESSAGES: list[Frame] = [
    CommitEvent(1, DID, COMMIT_CID, REV, None, BLOCKS, (), TIME),
    CommitEvent(
        2,
        DID,
        COMMIT_CID,
        REV,
        SINCE,
        BLOCKS,
        (RepoOp("create", "app.bsky.feed.post/abc", RECORD_CID),),
        TIME,
        prev_data=PREV_DATA,
        blobs=(BLOB,),
        rebase=True,
        too_big=True,
    ),
    SyncEvent(3, DID, BLOCKS, REV, TIME),
    IdentityEvent(4, DID, TIME),
    IdentityEvent(5, DID, TIME, "handle.invalid"),
    AccountEvent(6, DID, TIME, True),
    AccountEvent(7, DID, TIME, False, "deactivated"),
    InfoEvent("OutdatedCursor"),
    InfoEvent("OutdatedCursor", "too old"),
    ErrorFrame("FutureCursor"),
    ErrorFrame("ConsumerTooSlow", "bye"),
    UnknownFrame(1, "#handle", cbor.encode({"seq": 1, "handle": "x.test"})),
    UnknownFrame(7, None, cbor.encode([1, 2])),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_built_messages_round_trip(msg: Frame) -> None:
    data = encode_frame(msg)
    assert decode_frame(data) == msg
    assert encode_frame(decode_frame(data)) == data


def test_first_commit_since_null_and_no_prev_data() -> None:
    body = commit_body(since=None, prevData=DROP)
    msg = decode_frame(frame("#commit", body))
    assert isinstance(msg, CommitEvent)
    assert msg.since is None and msg.prev_data is None
    data = frame("#commit", body)
    assert encode_frame(msg) == data
    assert "since" in msg.to_body() and "prevData" not in msg.to_body()


def test_extra_fields_ignored() -> None:
    for t, body in BODIES.items():
        msg = decode_frame(frame(t, {**body, "zzNew": [1, {"a": None}]}))
        assert msg == decode_frame(frame(t, body))
    ops = [{**op, "extra": 1} for op in BODIES["#commit"]["ops"]]
    msg = decode_frame(frame("#commit", commit_body(ops=ops)))
    assert msg == decode_frame(frame("#commit", BODIES["#commit"]))


def test_empty_commit_allowed() -> None:
    msg = decode_frame(frame("#commit", commit_body(ops=[])))
    assert isinstance(msg, CommitEvent) and msg.ops == ()


# --- error frames and unknown frames ------------------------------------------------


def test_error_frames() -> None:
    data = encode_error_frame("FutureCursor", "cursor in the future")
    assert data.startswith(bytes.fromhex("a1 62 6f 70 20"))
    assert decode_frame(data) == ErrorFrame("FutureCursor", "cursor in the future")
    assert decode_frame(encode_error_frame("ConsumerTooSlow")) == ErrorFrame("ConsumerTooSlow")
    assert encode_error_frame("X") == bytes.fromhex("a1 62 6f 70 20") + cbor.encode({"error": "X"})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "'error' is missing"),
        ({"error": 1}, "'error' must be a string"),
        ({"error": "X", "message": None}, "'message' must be a string"),
        ({"error": "X", "message": 5}, "'message' must be a string"),
        ([], "body must be a map"),
    ],
)
def test_bad_error_frames(body: Any, words: str) -> None:
    with pytest.raises(InvalidEvent, match=words):
        decode_frame(frame(None, body, op=-1))


def unknown(op: int, t: str | None, body: Any) -> UnknownFrame:
    return UnknownFrame(op, t, cbor.encode(body))


def test_unknown_op_and_type_are_not_errors() -> None:
    assert decode_frame(frame("#commit", "anything", op=2)) == unknown(2, "#commit", "anything")
    assert decode_frame(frame(None, {}, op=0)) == unknown(0, None, {})
    for legacy in ("#handle", "#migrate", "#tombstone", "#future"):
        got = decode_frame(frame(legacy, {"seq": 1}))
        assert got == unknown(1, legacy, {"seq": 1})
        assert got.to_body() == {"seq": 1}
    # the body of an unknown type need not be a map
    assert decode_frame(frame("#new", [1])) == unknown(1, "#new", [1])
    # an unknown op with a non-string t keeps op only
    odd_header = cbor.encode({"op": 5, "t": 7}) + cbor.encode({})
    assert decode_frame(odd_header) == unknown(5, None, {})


HOSTILE_ITEMS = 4_999_000
#: The body of the issue's report: one array of ~5M empty maps (a 5 MB frame that took 3-4 s and 430 MB).
HOSTILE_BODY = b"\x9a" + HOSTILE_ITEMS.to_bytes(4, "big") + b"\xa0" * HOSTILE_ITEMS


def peak_bytes(run: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize(
    "header",
    [{"op": 1, "t": "#future"}, {"op": 1, "t": "#handle"}, {"op": 2, "t": "#commit"}, {"op": 0}],
    ids=["unknown type", "legacy type", "unknown op", "unknown op without t"],
)
def test_skipped_frames_do_not_decode_their_body(header: dict[str, Any]) -> None:
    data = cbor.encode(header) + HOSTILE_BODY
    assert len(data) <= limits.MAX_FRAME_BYTES
    got, peak = peak_bytes(lambda: decode_frame(data))
    assert got == UnknownFrame(header["op"], header.get("t"), HOSTILE_BODY)
    assert peak < 20_000_000, peak  # the body is copied once, never decoded


def test_skipped_frames_still_check_size_and_shape() -> None:
    with pytest.raises(LimitExceeded, match="MAX_FRAME_BYTES"):
        decode_frame(cbor.encode({"op": 1, "t": "#future"}) + HOSTILE_BODY, max_bytes=1_000_000)
    with pytest.raises(InvalidCBOR, match="expected 2 items, found 1") as info:
        decode_frame(cbor.encode({"op": 1, "t": "#future"}))
    assert info.value.offset == len(cbor.encode({"op": 1, "t": "#future"}))
    # a header that does not end within MAX_FRAME_HEADER_BYTES is refused cheaply, whatever follows
    padded = cbor.encode({"op": 1, "pad": [{}] * 2_000, "t": "#future"}) + cbor.encode({})
    with pytest.raises(InvalidCBOR):
        decode_frame(padded)
    hostile_header = b"\xa2\x62op\x01\x61t" + HOSTILE_BODY  # t is the hostile array

    def refuse() -> str:
        with pytest.raises(InvalidCBOR) as info:
            decode_frame(hostile_header)
        return str(info.value)

    _, peak = peak_bytes(refuse)
    assert peak < 20_000_000, peak


def test_known_frames_with_extra_header_fields_are_parsed() -> None:
    """Only the canonical headers take the shortcut; any other header is decoded and judged."""
    body = BODIES["#identity"]
    data = cbor.encode({"op": 1, "t": "#identity", "x": 1}) + cbor.encode(body)
    assert decode_frame(data) == decode_frame(frame("#identity", body))
    data = cbor.encode({"op": -1, "x": True}) + cbor.encode({"error": "FutureCursor"})
    assert decode_frame(data) == ErrorFrame("FutureCursor")


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ([1], "header must be a map"),
        ({}, "'op' is missing"),
        ({"op": "1", "t": "#commit"}, "'op' must be an integer"),
        ({"op": True, "t": "#commit"}, "'op' must be an integer"),
        ({"op": 1}, "'t' is missing"),
        ({"op": 1, "t": 7}, "'t' must be a string"),
        ({"op": 1, "t": None}, "'t' must be a string"),
        ({"op": 1, "t": "commit"}, "does not start with '#'"),
    ],
)
def test_bad_headers(header: Any, words: str) -> None:
    with pytest.raises(InvalidEvent, match=words):
        decode_frame(cbor.encode(header) + cbor.encode(BODIES["#commit"]))


def test_body_must_be_a_map() -> None:
    for t, body in BODIES.items():
        with pytest.raises(InvalidEvent, match=f"{t}: body must be a map"):
            decode_frame(frame(t, [body]))


def test_frame_must_be_two_items() -> None:
    header = cbor.encode({"op": 1, "t": "#info"})
    body = cbor.encode({"name": "x"})
    with pytest.raises(InvalidCBOR, match="expected 2 items"):
        decode_frame(header)
    with pytest.raises(InvalidCBOR, match="trailing"):
        decode_frame(header + body + body)
    with pytest.raises(InvalidCBOR):
        decode_frame(header + body[:-1])
    with pytest.raises(InvalidCBOR):
        decode_frame(b"")


def test_frame_size_limit() -> None:
    with pytest.raises(LimitExceeded, match="MAX_FRAME_BYTES"):
        decode_frame(b"\x00" * (limits.MAX_FRAME_BYTES + 1))
    with pytest.raises(LimitExceeded, match="MAX_FRAME_BYTES"):
        decode_frame(frame("#info", {"name": "x" * 100}), max_bytes=50)


# --- strict fields -------------------------------------------------------------------

REQUIRED = {
    "#commit": [
        "seq",
        "rebase",
        "tooBig",
        "repo",
        "commit",
        "rev",
        "since",
        "blocks",
        "ops",
        "blobs",
        "time",
    ],
    "#sync": ["seq", "did", "blocks", "rev", "time"],
    "#identity": ["seq", "did", "time"],
    "#account": ["seq", "did", "time", "active"],
    "#info": ["name"],
}


@pytest.mark.parametrize(("t", "field"), [(t, f) for t, fields in REQUIRED.items() for f in fields])
def test_missing_required_field(t: str, field: str) -> None:
    body = {k: v for k, v in BODIES[t].items() if k != field}
    with pytest.raises(InvalidEvent, match=f"{t}: required field '{field}' is missing"):
        decode_frame(frame(t, body))


@pytest.mark.parametrize(
    ("t", "field"),
    [
        ("#commit", "prevData"),
        ("#identity", "handle"),
        ("#account", "status"),
        ("#info", "message"),
    ],
)
def test_optional_fields_may_be_absent(t: str, field: str) -> None:
    body = {k: v for k, v in BODIES[t].items() if k != field}
    data = frame(t, body)
    msg = decode_frame(data)
    assert encode_frame(msg) == data


WRONG_TYPES: list[tuple[str, str, Any]] = [
    ("#commit", "seq", "42"),
    ("#commit", "seq", True),
    ("#commit", "seq", None),
    ("#commit", "rebase", 0),
    ("#commit", "tooBig", None),
    ("#commit", "repo", 5),
    ("#commit", "commit", str(COMMIT_CID)),
    ("#commit", "commit", None),
    ("#commit", "rev", None),
    ("#commit", "since", 12),
    ("#commit", "blocks", "car"),
    ("#commit", "ops", {}),
    ("#commit", "ops", None),
    ("#commit", "blobs", None),
    ("#commit", "blobs", [str(BLOB)]),
    ("#commit", "prevData", None),
    ("#commit", "prevData", b"\x01"),
    ("#commit", "time", 1700000000),
    ("#sync", "seq", "1"),
    ("#sync", "did", None),
    ("#sync", "blocks", [1]),
    ("#sync", "rev", 3),
    ("#sync", "time", None),
    ("#identity", "handle", None),
    ("#identity", "handle", 3),
    ("#identity", "did", b"did"),
    ("#account", "active", "true"),
    ("#account", "active", None),
    ("#account", "status", None),
    ("#account", "status", 1),
    ("#info", "name", None),
    ("#info", "message", None),
]


@pytest.mark.parametrize(("t", "field", "value"), WRONG_TYPES)
def test_wrong_type(t: str, field: str, value: Any) -> None:
    body = {**BODIES[t], field: value}
    with pytest.raises(InvalidEvent, match=rf"{t}: field '{field}(\[\d+\])?' must be") as info:
        decode_frame(frame(t, body))
    assert field in str(info.value)


BAD_SYNTAX: list[tuple[str, str, Any, str]] = [
    ("#commit", "repo", "plc:abc", "invalid did"),
    ("#commit", "repo", "did:plc:", "invalid did"),
    ("#commit", "rev", "3kgnjdpmjtc2", "invalid tid"),
    ("#commit", "rev", "zzzzzzzzzzzzz", "invalid tid"),
    ("#commit", "since", "not-a-tid", "invalid tid"),
    ("#commit", "time", "2024-05-01", "invalid datetime"),
    ("#commit", "time", "yesterday", "invalid datetime"),
    ("#sync", "did", "DID:plc:abc", "invalid did"),
    ("#sync", "rev", "", "invalid tid"),
    ("#identity", "handle", "-bad-.test", "invalid handle"),
    ("#identity", "time", "2024-02-30T00:00:00Z", "invalid datetime"),
    ("#account", "did", "did:plc:abc%", "invalid did"),
]


@pytest.mark.parametrize(("t", "field", "value", "words"), BAD_SYNTAX)
def test_bad_syntax(t: str, field: str, value: Any, words: str) -> None:
    body = {**BODIES[t], field: value}
    with pytest.raises(InvalidEvent, match=f"{t}: field '{field}': {words}"):
        decode_frame(frame(t, body))


@pytest.mark.parametrize("seq", [0, -1, 2**53])
def test_seq_range(seq: int) -> None:
    for t in ("#commit", "#sync", "#identity", "#account"):
        with pytest.raises(InvalidEvent, match=r"'seq' is .* outside"):
            decode_frame(frame(t, {**BODIES[t], "seq": seq}))
    assert isinstance(decode_frame(frame("#sync", {**BODIES["#sync"], "seq": 2**53 - 1})), SyncEvent)


def test_since_must_be_present_even_if_null() -> None:
    assert isinstance(decode_frame(frame("#commit", commit_body(since=None))), CommitEvent)
    with pytest.raises(InvalidEvent, match="required field 'since' is missing"):
        decode_frame(frame("#commit", commit_body(since=DROP)))


OP = {"action": "create", "path": "app.bsky.feed.post/abc", "cid": RECORD_CID}
BAD_OPS: list[tuple[Any, str]] = [
    ("op", "must be a map, not str"),
    ({**OP, "action": "upsert"}, "'action' is 'upsert'"),
    ({**OP, "action": None}, "'action' must be a string"),
    ({k: v for k, v in OP.items() if k != "action"}, "'action' is missing"),
    ({k: v for k, v in OP.items() if k != "path"}, "'path' is missing"),
    ({**OP, "path": 5}, "'path' must be a string"),
    ({**OP, "path": "app.bsky.feed.post"}, "'path': invalid repo-path"),
    ({**OP, "path": "/app.bsky.feed.post/abc"}, "'path': invalid repo-path"),
    ({**OP, "path": "app.bsky.feed.post/.."}, "'path': invalid repo-path"),
    ({k: v for k, v in OP.items() if k != "cid"}, "'cid' is missing"),
    ({**OP, "cid": None}, "'cid' must be a link \\(action 'create'\\)"),
    ({**OP, "action": "update", "cid": None}, "'cid' must be a link \\(action 'update'\\)"),
    ({**OP, "cid": str(RECORD_CID)}, "'cid' must be a link"),
    ({**OP, "action": "delete"}, "'cid' must be null for a delete"),
    ({**OP, "prev": None}, "'prev' must be a link when present"),
    ({**OP, "prev": "x"}, "'prev' must be a link"),
]


@pytest.mark.parametrize(("op", "words"), BAD_OPS)
def test_bad_ops(op: Any, words: str) -> None:
    body = commit_body(ops=[OP, op])
    with pytest.raises(InvalidEvent, match=r"#commit: ops\[1\]") as info:
        decode_frame(frame("#commit", body))
    assert info.match(words)


def test_ops_limit() -> None:
    ok = commit_body(ops=[OP] * limits.MAX_COMMIT_OPS)
    assert len(decode_frame(frame("#commit", ok)).ops) == 200  # type: ignore[union-attr]
    with pytest.raises(LimitExceeded, match=r"MAX_COMMIT_OPS.*201 > 200"):
        decode_frame(frame("#commit", commit_body(ops=[OP] * 201)))


def test_blocks_limits() -> None:
    at_limit = commit_body(blocks=b"\x00" * limits.MAX_COMMIT_BLOCKS_BYTES)
    assert isinstance(decode_frame(frame("#commit", at_limit)), CommitEvent)
    with pytest.raises(LimitExceeded, match="MAX_COMMIT_BLOCKS_BYTES"):
        decode_frame(frame("#commit", commit_body(blocks=b"\x00" * (limits.MAX_COMMIT_BLOCKS_BYTES + 1))))
    sync = BODIES["#sync"]
    assert isinstance(decode_frame(frame("#sync", {**sync, "blocks": b"\x00" * 10_000})), SyncEvent)
    with pytest.raises(LimitExceeded, match=r"MAX_SYNC_BLOCKS_BYTES.*#sync\.blocks"):
        decode_frame(frame("#sync", {**sync, "blocks": b"\x00" * 10_001}))


# --- hostile input -------------------------------------------------------------------

SAMPLES = [frame(t, body) for t, body in BODIES.items()] + [encode_error_frame("FutureCursor", "x")]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_frames_raise_only_atrepo_errors(sample: bytes, data: st.DataObject) -> None:
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        if not buf:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            buf[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif action == "cut":
            del buf[at:]
        elif action == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=6))
        else:
            del buf[at : at + data.draw(st.integers(min_value=1, max_value=20))]
    try:
        msg = decode_frame(bytes(buf))
    except AtrepoError:
        return
    # anything accepted must encode again (extra or unknown parts aside)
    encode_frame(msg)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(BODIES)),
    st.sampled_from([k for fields in REQUIRED.values() for k in fields] + ["handle", "status", "prevData"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.binary(max_size=20)),
)
def test_random_field_values_raise_only_atrepo_errors(t: str, key: str, value: Any) -> None:
    with contextlib.suppress(AtrepoError):
        decode_frame(frame(t, {**BODIES[t], key: value}))


# --- stream files ------------------------------------------------------------------


def test_stream_file_round_trip() -> None:
    frames = [encode_frame(m) for m in MESSAGES]
    out = io.BytesIO()
    for f in frames:
        write_stream_frame(out, f)
    data = out.getvalue()
    got = list(iter_stream_frames(io.BytesIO(data)))
    assert [f for _, f in got] == frames
    offset = 0
    for (at, _), expected in zip(got, frames, strict=True):
        assert at == offset
        offset += len(encode_varint(len(expected))) + len(expected)
    assert offset == len(data)
    assert [decode_frame(f) for _, f in got] == MESSAGES
    assert list(iter_stream_frames(io.BytesIO(b""))) == []


def test_stream_file_large_frame() -> None:
    big = frame("#commit", commit_body(blocks=b"\x01" * 300_000))
    out = io.BytesIO()
    for f in (big, SAMPLES[1], big):
        write_stream_frame(out, f)
    assert [f for _, f in iter_stream_frames(io.BytesIO(out.getvalue()))] == [big, SAMPLES[1], big]


def test_stream_file_errors() -> None:
    one = encode_varint(len(SAMPLES[1])) + SAMPLES[1]
    start = len(one)
    cases: list[tuple[bytes, str]] = [
        (one + b"\x80", f"truncated frame length varint at byte {start}"),
        (one + encode_varint(100) + b"abc", f"truncated frame at byte {start}: 3 of 100 bytes"),
        (one + b"\x00", f"empty frame at byte {start}"),
        (one + b"\x85\x00" + b"x" * 5, f"non-minimal varint at byte {start}"),
        (one + b"\xff" * 12, f"longer than 9 bytes at byte {start}"),
    ]
    for data, words in cases:
        frames = iter_stream_frames(io.BytesIO(data))
        assert next(frames) == (0, SAMPLES[1])
        with pytest.raises(InvalidEvent, match=words):
            next(frames)
    with pytest.raises(LimitExceeded, match=f"MAX_FRAME_BYTES.*stream frame at byte {start}"):
        list(iter_stream_frames(io.BytesIO(one + encode_varint(limits.MAX_FRAME_BYTES + 1))))
    with pytest.raises(LimitExceeded, match="MAX_FRAME_BYTES"):
        list(iter_stream_frames(io.BytesIO(one + one), max_frame_bytes=10))


STREAM = b"".join(
    encode_varint(len(f)) + f for f in [*SAMPLES[:3], frame("#commit", commit_body(blocks=b"\x01" * 300))]
)


def push_frames(data: bytes, sizes: list[int], **kw: Any) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = feed_in_chunks(FrameStreamDecoder(**kw), data, sizes)
    return got


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30))
def test_frame_decoder_any_split_matches_the_reader(sizes: list[int]) -> None:
    assert push_frames(STREAM, sizes) == list(iter_stream_frames(io.BytesIO(STREAM)))


def test_frame_decoder_bytewise_and_whole() -> None:
    expected = list(iter_stream_frames(io.BytesIO(STREAM)))
    assert len(expected) == 4
    assert push_frames(STREAM, [1]) == expected
    assert push_frames(STREAM, [len(STREAM)]) == expected
    decoder = FrameStreamDecoder()
    assert decoder.feed(STREAM[:3]) == []
    assert decoder.needed == len(encode_varint(len(SAMPLES[0]))) + len(SAMPLES[0]) - 3
    with pytest.raises(InvalidEvent, match="truncated frame at byte 0"):
        decoder.close()


def test_frame_decoder_truncation_at_every_position() -> None:
    full = list(iter_stream_frames(io.BytesIO(STREAM)))
    boundaries = {0} | {offset for offset, _ in full} | {len(STREAM)}
    for cut in range(len(STREAM)):
        decoder = FrameStreamDecoder()
        got = decoder.feed(STREAM[:cut])
        assert got == full[: len(got)]
        if cut in boundaries:
            decoder.close()
            continue
        with pytest.raises(InvalidEvent, match="truncated frame") as info:
            decoder.close()
        with pytest.raises(InvalidEvent) as pulled:
            list(iter_stream_frames(io.BytesIO(STREAM[:cut])))
        assert str(info.value) == str(pulled.value)
        assert f"at byte {max(b for b in boundaries if b < cut)}" in str(info.value)


def test_frame_decoder_errors_after_good_frames() -> None:
    one = encode_varint(len(SAMPLES[1])) + SAMPLES[1]
    for tail, words in [
        (b"\x00", f"empty frame at byte {len(one)}"),
        (b"\x85\x00", f"non-minimal varint at byte {len(one)}"),
    ]:
        decoder = FrameStreamDecoder()
        assert decoder.feed(one + tail) == [(0, SAMPLES[1])]  # the good frame first
        with pytest.raises(InvalidEvent, match=words):
            decoder.close()
        with pytest.raises(InvalidEvent, match=words):
            decoder.feed(one)  # failed for good
    decoder = FrameStreamDecoder(max_frame_bytes=10)
    with pytest.raises(LimitExceeded, match=r"MAX_FRAME_BYTES.*stream frame at byte 0"):
        decoder.feed(encode_varint(11))  # refused as soon as the length is read


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_stream_file_junk_raises_only_atrepo_errors(junk: bytes) -> None:
    with contextlib.suppress(AtrepoError):
        for _, f in iter_stream_frames(io.BytesIO(junk)):
            with contextlib.suppress(AtrepoError):
                decode_frame(f)
