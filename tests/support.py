"""Helpers shared by test modules (``pythonpath`` in pyproject.toml puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class PushDecoder(Protocol):
    def feed(self, chunk: bytes) -> Sequence[Any]: ...

    def close(self) -> None: ...


def feed_in_chunks(decoder: PushDecoder, data: bytes, sizes: list[int]) -> list[Any]:
    """Feed ``data`` to a push decoder in chunks of the given sizes (the last repeats), then close it."""
    got: list[Any] = []
    at = 0
    i = 0
    while at < len(data):
        size = sizes[min(i, len(sizes) - 1)]
        got += decoder.feed(data[at : at + size])
        at += size
        i += 1
    decoder.close()
    return got
