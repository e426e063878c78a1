"""CAR files: ``read_car`` in memory and ``CarReader`` over a stream agree."""

from __future__ import annotations

import io

from atrepo.core.car import CarReader, read_car
from atrepo.core.cid import CID
from atrepo.core.errors import AtrepoError

from .harness import check_error


def _streamed(data: bytes) -> list[tuple[CID, bytes]]:
    reader = CarReader(io.BytesIO(data), chunk_size=7)
    return [(cid, block) for cid, block, _ in reader]


def test_one_input(data: bytes) -> None:
    try:
        roots, blocks = read_car(data)
    except AtrepoError as exc:
        check_error(exc)
        in_memory = None
    else:
        in_memory = (roots, blocks)
    try:
        streamed = _streamed(data)
    except AtrepoError as exc:
        check_error(exc)
        assert in_memory is None, f"stream refused what read_car accepted: {exc}"
        return
    assert in_memory is not None, "read_car refused what the stream reader accepted"
    for cid, block in streamed:
        assert in_memory[1].get(cid) == block
