"""Full repository verification from a CAR stream, in one pass.

The commit is checked (shape, DID, signature), then the tree is walked in key
order, validating every node and requiring every record block, while the
(key, CID) pairs are yielded. When the CAR is in the streamable pre-order
(commit, root, then depth-first with each record before the subtree after it)
blocks are consumed as they arrive and memory is bounded by the tree height.
Any other order switches to an index of block offsets (the stream must then be
seekable) and the walk reads blocks by offset; blocks are never all held in
memory, and blocks no record or node refers to are counted, not kept.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from .car import CarReader, Readable, index_car, read_block_at
from .cid import CID
from .commit import SignedCommit, decode_commit
from .errors import InvalidCAR, InvalidCommit, MissingBlock
from .keys import PublicKey
from .memory import collector_paused
from .mst.tree import MST, NodeLoader


@dataclass(slots=True)
class RepoSummary:
    """What a completed verification saw."""

    commit: SignedCommit | None = None
    records: int = 0
    blocks: int = 0
    nodes: int = 0
    unreferenced: int = 0
    height: int = -1
    streamed: bool = True
    last_key: str | None = field(default=None, repr=False)


class _OutOfOrder(Exception):
    """The next block is not the one pre-order walking needs."""


class _StreamSource:
    """Hands out blocks in arrival order, only if each is the one asked for."""

    __slots__ = ("_it", "consumed")

    def __init__(self, blocks: Iterator[tuple[CID, bytes, int]]) -> None:
        self._it = blocks
        self.consumed = 0

    def get(self, cid: CID) -> bytes | None:
        item = next(self._it, None)
        if item is None:
            raise _OutOfOrder
        self.consumed += 1
        if item[0].raw != cid.raw:
            raise _OutOfOrder
        return item[1]


class _IndexSource:
    """Reads blocks by offset from a seekable stream, using a CAR index."""

    __slots__ = ("_base", "_index", "_stream", "referenced")

    def __init__(self, stream: Readable, index: dict[CID, tuple[int, int]], base: int = 0) -> None:
        self._stream = stream
        self._index = index
        self._base = base  # index offsets count from where the CAR starts in the stream
        self.referenced: set[CID] = set()

    def get(self, cid: CID) -> bytes | None:
        where = self._index.get(cid)
        if where is None:
            return None
        self.referenced.add(cid)
        return read_block_at(self._stream, self._base + where[0], where[1])  # type: ignore[arg-type]

    def has(self, cid: CID) -> bool:
        if cid in self._index:
            self.referenced.add(cid)
            return True
        return False


def verify_repo_car(
    stream: Readable,
    *,
    key: PublicKey | None = None,
    did: str | None = None,
    summary: RepoSummary | None = None,
) -> Iterator[tuple[str, CID]]:
    """Verify a full-repository CAR and yield its (key, record CID) pairs in key order.

    Raises ``InvalidCAR``, ``InvalidCommit``, ``InvalidSignature``, ``InvalidMST``
    or ``MissingBlock`` at the first problem. ``summary`` is filled as it goes.
    """
    for name, cid, _data in _verify(stream, key, did, summary, False):
        yield name, cid


def iter_repo_records(
    stream: Readable,
    *,
    key: PublicKey | None = None,
    did: str | None = None,
    summary: RepoSummary | None = None,
) -> Iterator[tuple[str, CID, bytes]]:
    """Like ``verify_repo_car`` but also yields each record's block bytes."""
    yield from _verify(stream, key, did, summary, True)


def _verify(
    stream: Readable,
    key: PublicKey | None,
    did: str | None,
    summary: RepoSummary | None,
    with_data: bool,
) -> Iterator[tuple[str, CID, bytes]]:
    info = summary if summary is not None else RepoSummary()
    start = stream.tell() if _seekable(stream) else 0  # type: ignore[attr-defined]
    reader = CarReader(stream)
    if not reader.roots:
        raise InvalidCAR("CAR has no root (a repository CAR's first root is its commit)")
    root = reader.roots[0]
    blocks = iter(reader)
    source = _StreamSource(blocks)
    with collector_paused():
        try:
            first = next(blocks, None)
            if first is None or first[0] != root:
                raise _OutOfOrder
            source.consumed = 1
            commit = _check_commit(first[1], root, key, did)
            info.commit = commit
            tree = MST.load(NodeLoader(source, cache_size=0, check_hashes=False), commit.data)
            info.height = tree.layer + 1
            get = source.get
            count = 0
            name = None
            try:
                for raw, val in tree._walk_raw():
                    data = get(val)
                    if data is None:  # pragma: no cover - _StreamSource raises instead
                        raise MissingBlock(val)
                    name = raw.decode()
                    count += 1
                    yield name, val, data
            finally:  # the summary stays right however the walk ends
                info.records = count
                info.last_key = name
            # An empty tree's root node is never read (its CID is well known);
            # when the file carries it, it is a node, not an unreferenced block.
            empty_root = 1 if tree.root is None else 0
            rest = 0
            for cid, _data, _offset in blocks:
                if empty_root == 1 and cid == commit.data:
                    empty_root = 2
                else:
                    rest += 1
            info.nodes = source.consumed - info.records - 1 + (empty_root == 2)
            info.unreferenced = rest
            info.blocks = source.consumed + rest + (empty_root == 2)
            return
        except _OutOfOrder:
            pass
        # Fall back: index every block, then walk by offset.
        if not _seekable(stream):
            raise InvalidCAR("blocks are not in pre-order and the stream cannot seek to index them")
        info.streamed = False
        stream.seek(start)  # type: ignore[attr-defined]
        roots, index = index_car(stream)
        indexed = _IndexSource(stream, index, start)
        raw_commit = indexed.get(roots[0])
        if raw_commit is None:
            raise MissingBlock(roots[0], "commit")
        commit = info.commit or _check_commit(raw_commit, roots[0], key, did)
        info.commit = commit
        tree = MST.load(NodeLoader(indexed, cache_size=0), commit.data)
        if tree.root is None:
            indexed.has(commit.data)  # the empty root node counts as referenced when present
        info.height = tree.layer + 1
        resume = info.last_key
        info.records = 0
        for raw, val in tree._walk_raw():
            if with_data:
                data = indexed.get(val)
                if data is None:
                    raise MissingBlock(val, f"record {raw.decode()}")
            elif not indexed.has(val):
                raise MissingBlock(val, f"record {raw.decode()}")
            else:
                data = b""
            name = raw.decode()
            info.records += 1
            if resume is not None and name <= resume:
                continue
            info.last_key = name
            yield name, val, data
        info.blocks = len(index)
        info.unreferenced = len(index) - len(indexed.referenced)
        info.nodes = len(indexed.referenced) - info.records - 1


def _check_commit(raw: bytes, cid: CID, key: PublicKey | None, did: str | None) -> SignedCommit:
    commit = decode_commit(raw, cid)
    if did is not None and commit.did != did:
        raise InvalidCommit(f"commit {cid} is for {commit.did}, expected {did}")
    if key is not None:
        commit.verify(key)
    return commit


def _seekable(stream: Readable) -> bool:
    check = getattr(stream, "seekable", None)
    try:
        return bool(check()) if check is not None else False
    except (OSError, ValueError):
        return False


def verify_repo_bytes(data: bytes, **kwargs: object) -> tuple[RepoSummary, list[tuple[str, CID]]]:
    """Verify an in-memory CAR; return the summary and every (key, CID)."""
    summary = RepoSummary()
    items = list(verify_repo_car(io.BytesIO(data), summary=summary, **kwargs))  # type: ignore[arg-type]
    return summary, items
