"""The C fast path of MST node decoding against the pure-Python decoder.

``decode_node`` asks ``_mstnode.parse`` first and falls back to
``_decode_python`` whenever the C code does not prove a node valid, so the
one property that matters is soundness: whenever ``parse`` accepts a block,
the pure-Python decoder accepts it too and builds the same node (keys, values,
subtrees, layer, encoded pieces). Completeness is checked too, so the fast
path really is the one taken: every canonical node our builder makes is
accepted by it. Inputs: the interop vectors, hypothesis-built trees, and
malformed nodes (hand-made and hypothesis-mutated).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atrepo.core import _native, limits
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError
from atrepo.core.mst import MST
from atrepo.core.mst import node as node_module
from atrepo.core.mst.layer import key_layer
from atrepo.core.mst.node import _decode_python, _heads, _tails, decode_node, encode_node

INTEROP = Path(__file__).resolve().parent.parent / "interop"
EXAMPLE_KEYS = (INTEROP / "mst" / "example_keys.txt").read_text().split()
PROOF_CASES: list[dict[str, Any]] = json.loads(
    (INTEROP / "firehose" / "commit-proof-fixtures.json").read_text()
)
LEAF = CID.for_dag_cbor(b"\xa0")
RAW_LEAF = CID.for_raw(b"blob")

parse = _native.mst_node_parse
needs_native = pytest.mark.skipif(
    parse is None, reason="the C extension is not built (or ATREPO_PURE is set)"
)


def _parse(data: bytes) -> tuple[Any, ...] | None:
    assert parse is not None
    return parse(data, limits.MAX_MST_KEY_BYTES, limits.MAX_MST_NODE_ENTRIES, limits.MAX_MST_LAYER)


def _python_outcome(data: bytes) -> tuple[str, Any]:
    try:
        node = _decode_python(data, None)
    except AtrepoError as exc:
        return "error", (type(exc), str(exc))
    return "node", node


def _same_node(a: Any, b: Any) -> None:
    assert list(a.keys) == list(b.keys)
    assert list(a.vals) == list(b.vals)
    assert list(a.subs) == list(b.subs)
    assert a.layer == b.layer
    assert _heads(a) == _heads(b)
    assert _tails(a) == _tails(b)
    assert a.encode() == b.encode()
    assert a.cid == b.cid


def check_equivalent(data: bytes) -> bool:
    """Soundness (C acceptance implies the same node from Python) and equal outcomes of
    ``decode_node`` and ``_decode_python``; returns whether the C code accepted ``data``."""
    expected_kind, expected = _python_outcome(data)
    accepted = parse is not None and _parse(data) is not None
    if accepted:
        assert expected_kind == "node", f"C accepted what Python refuses: {expected}"
    try:
        got = decode_node(data, None)
    except AtrepoError as exc:
        assert expected_kind == "error"
        assert (type(exc), str(exc)) == expected
    else:
        assert expected_kind == "node"
        _same_node(got, expected)
    return accepted


def _tree_blocks(keys: list[str], leaf: CID = LEAF) -> list[bytes]:
    tree = MST.build([(k, leaf) for k in sorted(set(keys))])
    return [data for _, data in tree.new_blocks().items()]


# --- the switch ---------------------------------------------------------------


def test_pure_switch_turns_the_extension_off() -> None:
    code = "from atrepo.core import _native; print(_native.PURE, _native.mst_node_parse is None)"
    env = {**os.environ, "ATREPO_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_decode_node_works_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "_native_parse", None)
    blocks = _tree_blocks(EXAMPLE_KEYS)
    for data in blocks:
        assert decode_node(data).encode() == data


# --- SHA-256 and key layers in C (portable and SHA-extension paths) ------------


@needs_native
def test_c_sha256_matches_hashlib() -> None:
    import hashlib
    import random

    module: Any = importlib.import_module("atrepo.core._mstnode")
    rng = random.Random(7)
    for size in [*range(0, 200), 447, 448, 511, 512, 1024, 4099]:
        data = rng.randbytes(size)
        assert module._digest(data) == hashlib.sha256(data).digest(), size


@needs_native
def test_c_key_layers_match_the_interop_vectors() -> None:
    module: Any = importlib.import_module("atrepo.core._mstnode")
    vectors = json.loads((INTEROP / "mst" / "key_heights.json").read_text())
    for vector in vectors:
        key = vector["key"].encode()
        assert module._key_layers(key) == (vector["height"], vector["height"]), vector
    for key in EXAMPLE_KEYS:
        raw = key.encode()
        assert module._key_layers(raw) == (key_layer(raw), key_layer(raw))


# --- valid nodes: the interop vectors and built trees ---------------------------


@needs_native
def test_interop_example_keys() -> None:
    blocks = _tree_blocks(EXAMPLE_KEYS)
    assert len(blocks) > 5
    assert all(check_equivalent(data) for data in blocks)


@needs_native
@pytest.mark.parametrize("case", PROOF_CASES, ids=lambda case: str(case["comment"]))
def test_interop_commit_proof_trees(case: dict[str, Any]) -> None:
    leaf = CID.parse(case["leafValue"])
    before = MST.build([(k, leaf) for k in sorted(case["keys"])])
    after = before.apply(
        [("set", k, leaf) for k in case["adds"]] + [("delete", k, None) for k in case["dels"]]
    )
    for tree in (before, after):
        for _, data in tree.new_blocks().items():
            assert check_equivalent(data)


@needs_native
def test_links_are_cids() -> None:
    blocks = _tree_blocks([f"app.bsky.feed.post/3k{i:011d}" for i in range(300)])
    parsed = [_parse(data) for data in blocks]
    assert all(p is not None for p in parsed)
    for keys, vals, subs, *_pieces, layer in parsed:  # type: ignore[misc]
        for cid in [*vals, *(s for s in subs if s is not None)]:
            assert type(cid) is CID
            assert cid == CID(cid.raw) and hash(cid) == hash(CID(cid.raw))
            assert pickle.loads(pickle.dumps(cid)) == cid
        assert all(key_layer(k) == layer for k in keys)


@needs_native
def test_raw_values_take_the_fast_path() -> None:
    assert all(check_equivalent(data) for data in _tree_blocks(EXAMPLE_KEYS, RAW_LEAF))


_KEY = st.from_regex(rb"[a-z]{1,3}(\.[a-z]{1,3}){0,2}/[A-Za-z0-9._~:-]{1,8}", fullmatch=True)


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_KEY, min_size=1, max_size=80))
def test_built_trees(keys: list[bytes]) -> None:
    texts = sorted({k.decode() for k in keys if k.split(b"/")[0] not in (b".", b"..")})
    texts = [t for t in texts if t.split("/")[1] not in (".", "..")]
    if not texts:
        return
    assert all(check_equivalent(data) for data in _tree_blocks(texts))


# --- malformed nodes ------------------------------------------------------------


def _node(keys: list[bytes], subs: list[CID | None] | None = None) -> bytes:
    return encode_node(keys, [LEAF] * len(keys), subs if subs is not None else [None] * (len(keys) + 1))


def _layer0(n: int, prefix: bytes = b"com.example.record/") -> list[bytes]:
    out = []
    i = 0
    while len(out) < n:
        key = prefix + b"k%d" % i
        if key_layer(key) == 0:
            out.append(key)
        i += 1
    return out


def _malformed() -> list[bytes]:
    keys = _layer0(3)
    good = _node(keys)
    cases = [
        good[:-1],  # truncated
        good + b"\x00",  # trailing byte
        b"\xa3" + good[1:],  # three fields claimed
        good.replace(b"\x61p\x00", b"\x61p\x18\x00", 1),  # non-minimal p
        good.replace(b"\xa2\x61e\x83", b"\xa2\x61e\x98\x03", 1),  # non-minimal array length
        good.replace(b"\xa2\x61e", b"\xa2\x61f", 1),  # wrong field name
        good.replace(b"\xa4\x61k", b"\xa4\x61K", 1),
        good.replace(b"\x61l\xf6", b"\x61l\xf5", 1),  # l is true
        _node([keys[1], keys[0], keys[2]]),  # out of order
        _node([keys[0], keys[0]]),  # duplicate
        _node([b"com.example/./"]),
        _node([b"./abc"]),
        _node([b"../abc"]),
        _node([b"com.example/."]),
        _node([b"com.example/.."]),
        _node([b"com.example/a/b"]),
        _node([b"com.example"]),
        _node([b"/abc"]),
        _node([b"abc/"]),
        _node([b"com.example/a b"]),
        _node([b"com.example/a\nb"]),
        _node([b"com.example/\xff"]),
        _node([b""]),
        _node([b"com.example/" + b"a" * (limits.MAX_MST_KEY_BYTES - 11)]),  # one byte too long
        _node([b"com.example/" + b"a" * (limits.MAX_MST_KEY_BYTES - 12)]),  # exactly the limit
    ]
    # a layer-0 node with a subtree link
    cases.append(_node(keys, [LEAF, None, None, None]))
    # keys of two layers in one node
    high = next(b"com.example/h%d" % i for i in range(10_000) if key_layer(b"com.example/h%d" % i) == 1)
    cases.append(_node(sorted([keys[0], high])))
    # a higher-layer node with a subtree (valid)
    cases.append(_node([high], [LEAF, None]))
    # t links to a raw block (must be dag-cbor), v to a raw block (allowed)
    raw_link = b"\xd8\x2a\x58\x25\x00" + RAW_LEAF.raw
    cbor_link = b"\xd8\x2a\x58\x25\x00" + LEAF.raw
    with_sub = _node([high], [None, LEAF])
    cases.append(with_sub.replace(b"\x61t" + cbor_link, b"\x61t" + raw_link, 1))
    cases.append(good.replace(b"\x61v" + cbor_link, b"\x61v" + raw_link, 1))
    # a CIDv1 with another hash function as a value: valid, but not the fast path's form
    odd = b"\x01\x71\x13\x20" + bytes(32)
    cases.append(good.replace(b"\x61v" + cbor_link, b"\x61v\xd8\x2a\x58\x25\x00" + odd, 1))
    # prefix compression: not the shortest, and longer than the previous key
    a, b = keys[0], keys[1]
    shared = next(i for i in range(len(a)) if a[i] != b[i])
    assert 2 <= shared < 24 and len(b) - shared == 1
    entry = b"\x61kA" + b[shared:] + b"\x61p" + bytes([shared])
    assert entry in good
    longer = b"\x61kB" + b[shared - 1 :] + b"\x61p" + bytes([shared - 1])
    cases.append(good.replace(entry, longer, 1))
    cases.append(good.replace(entry, b"\x61kA" + b[shared:] + b"\x61p" + bytes([len(a) + 1]), 1))
    # the first entry with a prefix length
    cases.append(good.replace(b"\x61p\x00", b"\x61p\x01", 1))
    # the empty node, an entry-less node with a link, and a node over the entry limit
    cases.append(encode_node([], [], [None]))
    cases.append(encode_node([], [], [LEAF]))
    many = _layer0(limits.MAX_MST_NODE_ENTRIES + 1, b"c.e/")
    cases.append(_node(sorted(many)))
    cases.append(_node(sorted(many[:-1])))
    return cases


@needs_native
def test_malformed_nodes() -> None:
    outcomes = [check_equivalent(data) for data in _malformed()]
    assert any(outcomes) and not all(outcomes)


@needs_native
@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10_000), st.data())
def test_mutated_nodes(seed: int, data: st.DataObject) -> None:
    blocks = _tree_blocks(EXAMPLE_KEYS[: 20 + seed % 100])
    block = bytearray(blocks[seed % len(blocks)])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, max(len(block) - 1, 0)))
        if kind == "flip" and block:
            block[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del block[at:]
        elif kind == "insert":
            block[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif block:
            del block[at]
    check_equivalent(bytes(block))


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    check_equivalent(b"\xa2\x61e" + data)
    check_equivalent(data)


@needs_native
def test_non_bytes_input_is_not_taken() -> None:
    data = _node(_layer0(2))
    assert _parse(bytearray(data)) is None  # type: ignore[arg-type]
    assert decode_node(data).encode() == data
