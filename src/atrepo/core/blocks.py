"""Blocks are the currency: CID -> bytes maps and the source protocol.

The tree and the repository read through ``BlockSource`` (anything with
``get(cid) -> bytes | None``) and hand new blocks back as a ``BlockMap``. A store
is anything that answers ``get`` and writes a ``BlockMap`` atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from .cid import CID
from .errors import MissingBlock


class BlockSource(Protocol):
    """Read access to blocks by CID."""

    def get(self, cid: CID) -> bytes | None: ...


class BlockMap:
    """An ordered, in-memory CID -> bytes map (insertion order is kept)."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: Mapping[CID, bytes] | Iterable[tuple[CID, bytes]] | None = None) -> None:
        self._blocks: dict[CID, bytes] = dict(blocks) if blocks is not None else {}

    def get(self, cid: CID) -> bytes | None:
        return self._blocks.get(cid)

    def require(self, cid: CID, context: str = "") -> bytes:
        data = self._blocks.get(cid)
        if data is None:
            raise MissingBlock(cid, context)
        return data

    def put(self, cid: CID, data: bytes) -> None:
        self._blocks[cid] = data

    def add(self, data: bytes) -> CID:
        """Store a DAG-CBOR block under its computed CID and return the CID."""
        cid = CID.for_dag_cbor(data)
        self._blocks[cid] = data
        return cid

    def update(self, other: BlockMap | Mapping[CID, bytes]) -> None:
        self._blocks.update(other.items())

    def discard(self, cid: CID) -> None:
        self._blocks.pop(cid, None)

    def items(self) -> Iterable[tuple[CID, bytes]]:
        return self._blocks.items()

    def cids(self) -> Iterable[CID]:
        return self._blocks.keys()

    def byte_size(self) -> int:
        return sum(len(d) for d in self._blocks.values())

    def __contains__(self, cid: object) -> bool:
        return cid in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[CID]:
        return iter(self._blocks)

    def __repr__(self) -> str:
        return f"BlockMap({len(self._blocks)} blocks)"


class LayeredSource:
    """Read from several sources in order (new blocks over a store, say)."""

    __slots__ = ("_sources",)

    def __init__(self, *sources: BlockSource) -> None:
        self._sources = sources

    def get(self, cid: CID) -> bytes | None:
        for source in self._sources:
            data = source.get(cid)
            if data is not None:
                return data
        return None
