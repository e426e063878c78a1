"""Full repository verification from a CAR stream, in one pass.

The commit is checked (shape, DID, signature), then the tree is walked in key
order, validating every node and requiring every record block, while the
(key, CID) pairs are yielded. When the CAR is in the streamable pre-order
(commit, root, then depth-first with each record before the subtree after it)
blocks are consumed as they arrive and memory is bounded by the tree height.
Any other order (the reference host writes nodes level by level, then the
records) switches to the index path: one pass builds a compact index of every
block (``car.CarIndex``: hash-checked, about 60 bytes a block, at most
``MAX_CAR_INDEX_BLOCKS``; MST nodes kept in memory up to ``KEEP_NODE_BYTES``),
then the tree is walked against it, reading any other block it needs by offset
(the stream must then be seekable). Blocks no record or node refers to are
counted, not kept.

Reading order: ``_verify`` picks the path; ``_stream_path`` and ``_index_path``
each check the commit, open the tree with ``_open_tree`` (shared, so a rule
about the root applies to both), walk it (``_walk_streamed``/``_walk_indexed``)
and fill the summary (``_summarize_streamed``/``_summarize_indexed``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import limits
from .car import CarBlockSet, CarIndex, CarReader, Readable
from .cid import CID
from .commit import SignedCommit, decode_commit
from .errors import InvalidCAR, InvalidCommit, MissingBlock
from .keys import PublicKey
from .memory import collector_paused
from .mst.tree import MST, NodeLoader

#: How every MST node block starts: a map of two entries whose first key is
#: "e" (canonical DAG-CBOR orders the keys "e", "l"). The index keeps blocks
#: that start so, in file order, and the walk then reads no node twice.
MST_NODE_PREFIX = b"\xa2\x61e"
#: Most bytes of such blocks the index keeps (nodes average ~300 bytes and a
#: repository has ~0.27 nodes a record, so this holds every node of one of
#: ~400k records); blocks past it are read back by offset instead. Keeping
#: them saves a read and a second hash per node; the cap bounds what a file
#: of node-shaped junk can make us hold.
KEEP_NODE_BYTES = 32 << 20
#: Most distinct blocks the set path holds (``car.CarBlockSet``, ~100 bytes a
#: block besides the nodes it keeps); a larger CAR goes to the compact index.
SET_PATH_BLOCKS = 400_000


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
    #: False when the root is left untrimmed (entry-less over the real root), as the reference can leave it.
    canonical: bool = True


class _OutOfOrder(Exception):
    """The next block is not the one pre-order walking needs."""


class _Fallback(Exception):
    """The set path met something only the index path answers exactly (a missing block, a repeat)."""


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
    """Blocks of an indexed CAR by CID; remembers which blocks the walk used.

    ``referenced`` is a bitmap over the index's ordinals (one bit a block), so
    counting the blocks nothing referred to needs no set of CIDs. ``get`` is
    what the node loader calls: every call is one node.
    """

    __slots__ = ("_find_node", "_load", "find", "nodes", "referenced")

    def __init__(self, index: CarIndex, stream: Readable, base: int) -> None:
        # Two finders, since each guesses from the runs it has seen: nodes and
        # records are separate runs in the orders writers use.
        self.find = index.finder()
        self._find_node = index.finder()
        self._load = index.loader(stream, base)
        self.referenced = bytearray((len(index) + 7) >> 3)
        self.nodes = 0

    def mark(self, cid: CID) -> int:
        """The block's ordinal, marked as referenced; -1 when the CAR lacks it."""
        ordinal = self.find(cid)
        if ordinal >= 0:
            self.referenced[ordinal >> 3] |= 1 << (ordinal & 7)
        return ordinal

    def read(self, cid: CID) -> bytes | None:
        """The block's bytes (marked as referenced), or None when the CAR lacks it."""
        ordinal = self.find(cid)
        if ordinal < 0:
            return None
        self.referenced[ordinal >> 3] |= 1 << (ordinal & 7)
        return self._load(ordinal, cid)

    def get(self, cid: CID) -> bytes | None:
        """A node's bytes (for ``NodeLoader``); ``read`` written out, once per node."""
        self.nodes += 1
        ordinal = self._find_node(cid)
        if ordinal < 0:
            return None
        self.referenced[ordinal >> 3] |= 1 << (ordinal & 7)
        return self._load(ordinal, cid)

    def referenced_count(self) -> int:
        return int.from_bytes(self.referenced, "little").bit_count()


def verify_repo_car(
    stream: Readable,
    *,
    key: PublicKey | None = None,
    did: str | None = None,
    summary: RepoSummary | None = None,
    strict_shape: bool = False,
) -> Iterator[tuple[str, CID]]:
    """Verify a full-repository CAR and yield its (key, record CID) pairs in key order.

    Raises ``InvalidCAR``, ``InvalidCommit``, ``InvalidSignature``, ``InvalidMST``
    or ``MissingBlock`` at the first problem. ``summary`` is filled as it goes.
    An untrimmed root is accepted (``summary.canonical`` False) unless ``strict_shape``.
    """
    for name, cid, _data in _verify(stream, key, did, summary, False, strict_shape):
        yield name, cid


def iter_repo_records(
    stream: Readable,
    *,
    key: PublicKey | None = None,
    did: str | None = None,
    summary: RepoSummary | None = None,
    strict_shape: bool = False,
) -> Iterator[tuple[str, CID, bytes]]:
    """Like ``verify_repo_car`` but also yields each record's block bytes."""
    yield from _verify(stream, key, did, summary, True, strict_shape)


def _verify(
    stream: Readable,
    key: PublicKey | None,
    did: str | None,
    summary: RepoSummary | None,
    with_data: bool,
    strict_shape: bool = False,
) -> Iterator[tuple[str, CID, bytes]]:
    """Try the one-pass streamed walk; on the first block out of pre-order, index and walk again."""
    info = summary if summary is not None else RepoSummary()
    start = stream.tell() if _seekable(stream) else 0  # type: ignore[attr-defined]
    reader = CarReader(stream)
    if not reader.roots:
        raise InvalidCAR("CAR has no root (a repository CAR's first root is its commit)")
    if len(reader.roots) > 1:
        raise InvalidCAR(f"CAR has {len(reader.roots)} roots, a repository CAR has exactly one (its commit)")
    with collector_paused():
        try:
            yield from _stream_path(reader, key, did, info, strict_shape)
            return
        except _OutOfOrder:
            pass
        if not _seekable(stream):
            raise InvalidCAR("blocks are not in pre-order and the stream cannot seek to index them")
        if info.commit is not None and not with_data:
            stream.seek(start)  # type: ignore[attr-defined]
            found = CarBlockSet.build(
                stream,
                keep_prefix=MST_NODE_PREFIX,
                keep_bytes=KEEP_NODE_BYTES,
                max_blocks=min(SET_PATH_BLOCKS, limits.MAX_CAR_INDEX_BLOCKS),
            )
            if found is not None:
                try:
                    yield from _set_path(found, info, strict_shape)
                    return
                except _Fallback:
                    pass
        stream.seek(start)  # type: ignore[attr-defined]
        yield from _index_path(stream, start, key, did, info, with_data, strict_shape)


def _open_tree(
    loader: NodeLoader, commit: SignedCommit, info: RepoSummary, strict_shape: bool = False
) -> MST:
    """The tree under the commit, its root node checked; both paths open it here."""
    tree = MST.load(loader, commit.data, strict_shape=strict_shape)
    info.height = tree.layer + 1
    info.canonical = tree.canonical
    return tree


# --- stream path: blocks consumed as they arrive, memory bounded by tree height --------------------


def _stream_path(
    reader: CarReader, key: PublicKey | None, did: str | None, info: RepoSummary, strict_shape: bool = False
) -> Iterator[tuple[str, CID, bytes]]:
    """Verify a CAR in the streamable pre-order; raise ``_OutOfOrder`` at the first block that is not."""
    root = reader.roots[0]
    blocks = iter(reader)
    first = next(blocks, None)
    if first is None or first[0] != root:
        raise _OutOfOrder
    source = _StreamSource(blocks)
    source.consumed = 1
    commit = info.commit = _check_commit(first[1], root, key, did)
    # the reader checked every block's hash as it read it
    tree = _open_tree(NodeLoader(source, cache_size=0, check_hashes=False), commit, info, strict_shape)
    yield from _walk_streamed(tree, source, info)
    _summarize_streamed(blocks, tree, commit, source, info)


def _walk_streamed(tree: MST, source: _StreamSource, info: RepoSummary) -> Iterator[tuple[str, CID, bytes]]:
    """Each record in key order, its block the next one in the stream."""
    get = source.get
    count = 0
    name = None
    try:
        for raw, val in tree.walk_raw():
            data = get(val)
            if data is None:  # pragma: no cover - _StreamSource raises instead
                raise MissingBlock(val)
            name = raw.decode()
            count += 1
            yield name, val, data
    finally:  # the summary stays right however the walk ends
        info.records = count
        info.last_key = name


def _summarize_streamed(
    blocks: Iterator[tuple[CID, bytes, int]],
    tree: MST,
    commit: SignedCommit,
    source: _StreamSource,
    info: RepoSummary,
) -> None:
    """Count what follows the walk (read to the end, so every hash is checked) and fill the summary."""
    # The root node is always read, the empty one too, so it is among the consumed blocks.
    rest = 0
    for _cid, _data, _offset in blocks:
        rest += 1
    info.nodes = source.consumed - info.records - 1
    info.unreferenced = rest
    info.blocks = source.consumed + rest


# --- set path: any block order, every block hash-checked in one pass, nodes kept -------------------


class _TakeSource:
    """Hands out each kept node once, taking it from the set (``get`` is the node loader's call)."""

    __slots__ = ("_take", "nodes")

    def __init__(self, found: CarBlockSet) -> None:
        self._take = found.take_kept
        self.nodes = 0

    def get(self, cid: CID) -> bytes | None:
        self.nodes += 1
        data = self._take(cid.raw)
        if data is None:  # missing, not node-shaped or read twice: the index path says which
            raise _Fallback
        return data


def _set_path(found: CarBlockSet, info: RepoSummary, strict_shape: bool) -> Iterator[tuple[str, CID, bytes]]:
    """Walk the tree over the blocks of one pass (``CarBlockSet``); raise ``_Fallback`` at any doubt.

    The commit was checked by the stream path. Every block the walk uses is
    taken from the set, so what remains at the end is unreferenced. Anything
    the set cannot answer exactly (a block missing, a record block used twice,
    a node not kept) goes back to the index path, which resumes the walk after
    the last key yielded and raises the precise error.
    """
    info.streamed = False
    commit = info.commit
    assert commit is not None
    blocks = len(found)
    if not found.taker()(found.roots[0].raw):
        raise _Fallback
    source = _TakeSource(found)
    # the set path checked every block's hash as it read it
    tree = _open_tree(NodeLoader(source, cache_size=0, check_hashes=False), commit, info, strict_shape)
    empty_root = False
    if tree.root is None and not source.nodes:  # an empty tree's root node may go unread
        empty_root = found.take_kept(commit.data.raw) is not None
    yield from _walk_taken(tree, found, info)
    info.blocks = blocks
    info.unreferenced = len(found)
    info.nodes = source.nodes + empty_root


def _walk_taken(tree: MST, found: CarBlockSet, info: RepoSummary) -> Iterator[tuple[str, CID, bytes]]:
    """Each record in key order, its block taken from the set.

    Records the stream path yielded before it gave up are counted, not yielded again.
    """
    resume = info.last_key.encode() if info.last_key is not None else None
    take = found.taker()
    count = 0
    name = info.last_key
    try:
        for raw, val in tree.walk_raw():
            if not take(val.raw):  # missing or used twice: the index path tells
                raise _Fallback
            count += 1
            if resume is not None:
                if raw <= resume:
                    continue
                resume = None
            name = raw.decode()
            yield name, val, b""
    finally:  # the summary stays right however the walk ends
        info.records = count
        info.last_key = name


# --- index path: any block order, read by offset from a compact index ------------------------------


def _index_path(
    stream: Readable,
    start: int,
    key: PublicKey | None,
    did: str | None,
    info: RepoSummary,
    with_data: bool,
    strict_shape: bool = False,
) -> Iterator[tuple[str, CID, bytes]]:
    """Index every block (hash-checked), then walk the tree reading blocks by offset."""
    info.streamed = False
    index = CarIndex.build(
        stream,
        max_blocks=limits.MAX_CAR_INDEX_BLOCKS,  # read now, so configuration can lower it
        keep_prefix=MST_NODE_PREFIX,
        keep_bytes=KEEP_NODE_BYTES,
    )
    source = _IndexSource(index, stream, start)
    root = index.roots[0]
    raw_commit = source.read(root)
    if raw_commit is None:
        raise MissingBlock(root, "commit")
    # a commit the stream path already checked is not checked twice
    commit = info.commit = info.commit or _check_commit(raw_commit, root, key, did)
    # ``source.read`` checks each block's hash, so the loader need not
    tree = _open_tree(NodeLoader(source, cache_size=0, check_hashes=False), commit, info, strict_shape)
    # An empty tree's root node may go unread (its CID is well known); when the
    # file carries it, it is a node, not an unreferenced block.
    empty_root = tree.root is None and not source.nodes and source.mark(commit.data) >= 0
    yield from _walk_indexed(tree, source, info, with_data)
    _summarize_indexed(index, source, info, empty_root)


def _walk_indexed(
    tree: MST, source: _IndexSource, info: RepoSummary, with_data: bool
) -> Iterator[tuple[str, CID, bytes]]:
    """Each record in key order, required in the index (and read when ``with_data``).

    Records the stream path yielded before it gave up are counted, not yielded again.
    """
    resume = info.last_key.encode() if info.last_key is not None else None
    find = source.find
    referenced = source.referenced
    read = source.read
    data = b""
    count = 0
    name = info.last_key
    try:
        for raw, val in tree.walk_raw():
            if with_data:
                found = read(val)
                if found is None:
                    raise MissingBlock(val, f"record {raw.decode()}")
                data = found
            else:
                ordinal = find(val)
                if ordinal < 0:
                    raise MissingBlock(val, f"record {raw.decode()}")
                referenced[ordinal >> 3] |= 1 << (ordinal & 7)
            count += 1
            if resume is not None:
                if raw <= resume:
                    continue
                resume = None
            name = raw.decode()
            yield name, val, data
    finally:  # the summary stays right however the walk ends
        info.records = count
        info.last_key = name


def _summarize_indexed(index: CarIndex, source: _IndexSource, info: RepoSummary, empty_root: bool) -> None:
    blocks = len(index)
    info.blocks = blocks
    info.unreferenced = blocks - source.referenced_count()
    info.nodes = source.nodes + empty_root


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
