"""MST nodes, C fast path against pure Python: whatever ``_mstnode.parse`` accepts, the
pure-Python decoder accepts as the same node, and ``decode_node`` (C first, then the
fallback) has exactly the pure-Python outcome: the same node or the same error.

Without the extension (not built, or ``ATREPO_PURE=1``) only the second half runs.
"""

from __future__ import annotations

from atrepo.core import _native, limits
from atrepo.core.errors import AtrepoError
from atrepo.core.mst.node import _decode_python, _heads, _tails, decode_node

from .harness import check_error


def test_one_input(data: bytes) -> None:
    parse = _native.mst_node_parse
    parts = (
        None
        if parse is None
        else parse(data, limits.MAX_MST_KEY_BYTES, limits.MAX_MST_NODE_ENTRIES, limits.MAX_MST_LAYER)
    )
    try:
        expected = _decode_python(data, None)
    except AtrepoError as exc:
        check_error(exc)
        assert parts is None, "the C fast path accepted a node the pure-Python decoder refuses"
        try:
            decode_node(data, None)
        except AtrepoError as again:
            assert (type(again), str(again)) == (type(exc), str(exc))
        else:
            raise AssertionError("decode_node accepted a node the pure-Python decoder refuses") from None
        return
    got = decode_node(data, None)
    if parts is not None:
        keys, vals, subs, heads, tails, layer = parts
        assert (keys, vals, subs, layer) == (
            list(expected.keys),
            list(expected.vals),
            list(expected.subs),
            expected.layer,
        )
        assert heads == _heads(expected) and tails == _tails(expected)
    assert list(got.keys) == list(expected.keys) and list(got.vals) == list(expected.vals)
    assert list(got.subs) == list(expected.subs) and got.layer == expected.layer
    assert _heads(got) == _heads(expected) and _tails(got) == _tails(expected)
    assert got.encode() == expected.encode() == data
