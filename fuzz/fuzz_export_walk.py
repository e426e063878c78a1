"""getRepo's C walker on any bytes as a stored MST node: ``_mstnode.export_chunk`` either
hands the block back untouched or writes it as one CAR section and pushes exactly the
links the pure-Python decoder finds in it (left, then each entry's value and subtree),
in the walk's order, and asks the reader for exactly its child nodes.

Without the extension (not built, or ``ATREPO_PURE=1``) there is nothing to check.
"""

from __future__ import annotations

from collections.abc import Iterator

from atrepo.core import _native
from atrepo.core.varint import encode_varint
from atrepo.host.sync_api import node_children

NODE = b"n" * 36


def _links(data: bytes) -> tuple[list[tuple[bytes, bool]], list[bytes]] | None:
    """The pushes and reads the walk makes for ``data`` by the pure-Python decoder, or None."""
    try:
        kids = node_children(data)
    except (ValueError, TypeError, KeyError):
        return None
    reads = [cid for cid, is_node in kids if is_node]
    kids.reverse()
    return kids, reads


def test_one_input(data: bytes) -> None:
    chunk = _native.export_chunk
    if chunk is None:
        return
    asked: list[bytes] = []

    def read(cids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        asked.extend(cids)
        return iter(())

    stack = [(NODE, True)]
    piece, count, state = chunk(stack, {NODE: data}, read, None, 50, 1 << 20)
    if count == 0:
        assert (piece, state, stack, asked) == (b"", 2, [(NODE, True)], [])
        return
    assert count == 1 and state in (0, 2)
    assert piece == encode_varint(len(NODE) + len(data)) + NODE + data
    expected = _links(data)
    assert expected is not None, "the C walker took a block the pure-Python decoder cannot walk"
    kids, reads = expected
    assert stack == kids and asked == reads
