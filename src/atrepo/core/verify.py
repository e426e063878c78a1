"""Full repository verification from a CAR stream, in one pass.

The commit is checked (shape, DID, signature), then the tree is walked in key
order, validating every node and requiring every record block, while the
(key, CID) pairs are yielded. Blocks are consumed as they arrive: in the
streamable pre-order (commit, root, then depth-first with each record before
the subtree after it) each block is the one the walk asks for next, and memory
is bounded by the tree height. A block that arrives before the walk wants it
is set aside (the *stash*): an MST node with its bytes, any other block by its
CID alone (its hash is checked as it is read, so only its presence matters
later). In the reference host's order (nodes level by level, then the records
in walk order) only the nodes are set aside and the records stream; in a
shuffled file most blocks are. The stash is bounded (``STASH_BYTES`` and
``MAX_CAR_INDEX_BLOCKS``) and used only on a seekable stream, and only when
the C index is missing (``STASH_ONE_PASS``): with it, indexing the whole file
costs less than setting blocks aside in Python dicts, so the one pass gives up
at the first block out of pre-order.

Whatever one pass cannot answer exactly (a missing block, a record block used
twice, a node that is not node-shaped, blocks left over whose count must be
exact, the stash over its bound, the commit not first) hands over to the index
path: one pass builds a compact index of every block (``car.CarIndex``:
hash-checked, 60 to 80 bytes a block, MST nodes kept up to
``KEEP_NODE_BYTES``), then the tree is walked against it, resuming after the
last key already yielded and raising the precise error.

Reading order: ``_verify`` picks the path; ``_stream_path`` and ``_index_path``
each check the commit, open the tree with ``_open_tree`` (shared, so a rule
about the root applies to both), walk it (``_walk_streamed``/``_walk_indexed``)
and fill the summary (``_summarize_streamed``/``_summarize_indexed``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from . import _carnative, limits
from .car import CarIndex, CarReader, Readable, parse_raw_sections
from .cid import CID
from .commit import SignedCommit, decode_commit
from .errors import InvalidCAR, InvalidCommit, MissingBlock
from .keys import PublicKey
from .memory import collector_paused
from .mst.node import Node
from .mst.tree import MST, NodeLoader
from .mst.walk import Walker, resolve

#: How every MST node block starts: a map of two entries whose first key is
#: "e" (canonical DAG-CBOR orders the keys "e", "l"). The index keeps blocks
#: that start so, in file order, and the walk then reads no node twice; the
#: one-pass walk sets them aside with their bytes. A record can start so too:
#: the prefix only decides where a block waits, and ``decode_node`` checks
#: every node in full.
MST_NODE_PREFIX = b"\xa2\x61e"
#: Most bytes of such blocks the index keeps (nodes average ~300 bytes and a
#: repository has ~0.27 nodes a record, so this holds every node of one of
#: ~400k records); blocks past it are read back by offset instead. Keeping
#: them saves a read and a second hash per node; the cap bounds what a file
#: of node-shaped junk can make us hold.
KEEP_NODE_BYTES = 32 << 20
#: Most bytes the one-pass walk sets aside for blocks that arrive before it
#: wants them, as counted with the two costs below (a record is held by its
#: CID alone unless its bytes are asked for). A shuffled 200k-record
#: repository counts ~45 MB; past this the index path takes over.
STASH_BYTES = 64 << 20
#: Whether the one pass sets early blocks aside (on a seekable stream) rather than
#: handing over to the index path at the first block out of pre-order. Only
#: without the C index: with it, the index path is faster in every order but
#: pre-order and holds about as much (a 200k-record file: ~40 MB of index and
#: kept nodes in any order; the stash held ~30 MB breadth-first, ~45 MB
#: shuffled), and it decides the same cases the same way.
STASH_ONE_PASS = _carnative.Table is None
#: What a block set aside by its CID costs (an ``int`` of 64 bytes and a set slot).
_STASH_ENTRY_BYTES = 100
#: What a block set aside with its bytes costs besides them (key, object header, dict slot).
_STASH_KEPT_BYTES = 160
_PFX_DAG_CBOR = b"\x01\x71\x12\x20"

#: What the walks yield: (key, CID, bytes) when the bytes are asked for, else (key, CID).
Item = tuple[Any, ...]
#: A block as the one-pass walk reads it (``car.parse_raw_sections``): (binary CID, data).
RawBlock = tuple[bytes, bytes]


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


class _StreamSource:
    """Hands out blocks in arrival order, setting aside (when allowed) those that come early.

    ``get`` is what the node loader calls (one call a node); ``take`` is a
    record's block once something has been set aside (until then the walk
    reads records straight from ``blocks``). Either reads on until the block
    arrives, stashing what comes before it: nodes (blocks shaped like one)
    with their bytes, any other block by its CID alone (held as an ``int``, 64
    bytes where ``bytes`` take 72), or with its bytes when ``with_data``. A
    block is taken out of the stash when used, so a block used twice is not
    found the second time and the index path answers. ``_OutOfOrder`` means
    one pass cannot finish: the stash is not allowed or full, or a block is
    missing. Blocks are ``RawBlock`` pairs: CIDs are compared as bytes.
    """

    __slots__ = ("_budget", "_others", "_room", "_with_data", "blocks", "consumed", "kept", "stashed")

    def __init__(self, blocks: Iterator[RawBlock], *, stash: bool, with_data: bool) -> None:
        self.blocks = blocks
        #: blocks handed out by ``get`` (records are counted by the walk)
        self.consumed = 0
        self.stashed = False
        #: set-aside node-shaped blocks (and every block when ``with_data``): CID bytes -> data
        self.kept: dict[bytes, bytes] = {}
        #: the other blocks set aside, their binary CIDs as big-endian integers (one
        #: to one: a CID's first byte, its version, is never 0)
        self._others: set[int] = set()
        self._with_data = with_data
        # read now, so configuration can lower them; no stash at all on a stream that cannot seek
        self._room = limits.MAX_CAR_INDEX_BLOCKS if stash else 0
        self._budget = STASH_BYTES if stash else -1

    def get(self, cid: CID) -> bytes | None:
        raw = cid.raw
        if self.stashed:
            data = self.kept.pop(raw, None)
            if data is not None:
                self.consumed += 1
                return data
            others = self._others
            if others and int.from_bytes(raw) in others:  # not shaped like a node: the index path says why
                raise _OutOfOrder
        item = next(self.blocks, None)
        if item is None or item[0] != raw:
            item = self.read_until(raw, item)
        self.consumed += 1
        return item[1]

    def take(self, raw: bytes) -> bytes:
        """A record's block (its bytes, or b"" when set aside by CID alone); not counted in ``consumed``."""
        if self.stashed:
            others = self._others
            if others:
                number = int.from_bytes(raw)
                if number in others:
                    others.remove(number)
                    return b""
            data = self.kept.pop(raw, None)
            if data is not None:
                return data
        item = next(self.blocks, None)
        if item is None or item[0] != raw:
            item = self.read_until(raw, item)
        return item[1]

    def read_until(self, raw: bytes, item: RawBlock | None) -> RawBlock:
        """Set ``item`` aside and read on until the block ``raw`` arrives (missing: ``_OutOfOrder``)."""
        it = self.blocks
        kept = self.kept
        add = self._others.add
        from_bytes = int.from_bytes
        with_data = self._with_data
        room = self._room
        budget = self._budget
        self.stashed = True
        try:
            while item is not None:
                other, data = item
                if other == raw:
                    return item
                room -= 1
                if with_data or (data.startswith(MST_NODE_PREFIX) and other.startswith(_PFX_DAG_CBOR)):
                    budget -= len(data) + _STASH_KEPT_BYTES
                    kept[other] = data
                else:
                    budget -= _STASH_ENTRY_BYTES
                    add(from_bytes(other))
                if room < 0 or budget < 0:
                    raise _OutOfOrder
                item = next(it, None)
            raise _OutOfOrder  # the stream ended first: missing, or used twice
        finally:
            self._room = room
            self._budget = budget

    def left(self) -> int:
        """Blocks set aside and never used."""
        return len(self.kept) + len(self._others)


class _IndexSource:
    """Blocks of an indexed CAR by CID; the index remembers which blocks the walk used.

    ``mark`` (``CarIndex.marker``) finds a block by binary CID and sets its bit
    in the index's bitmap (one bit a block), so counting the blocks nothing
    referred to needs no set of CIDs. ``get`` is what the node loader calls:
    every call is one node.
    """

    __slots__ = ("_load", "_mark_node", "index", "mark", "mark_all", "nodes")

    def __init__(self, index: CarIndex, stream: Readable, base: int) -> None:
        # Two markers, since the pure-Python ones guess from the runs they have
        # seen: nodes and records are separate runs in the orders writers use.
        self.index = index
        self.mark = index.marker()
        self.mark_all = index.all_marker()
        self._mark_node = index.marker()
        self._load = index.loader(stream, base)
        self.nodes = 0

    def read(self, cid: CID) -> bytes | None:
        """The block's bytes (marked as referenced), or None when the CAR lacks it."""
        ordinal = self.mark(cid.raw)
        if ordinal < 0:
            return None
        return self._load(ordinal, cid)

    def get(self, cid: CID) -> bytes | None:
        """A node's bytes (for ``NodeLoader``); ``read`` written out, once per node."""
        self.nodes += 1
        ordinal = self._mark_node(cid.raw)
        if ordinal < 0:
            return None
        return self._load(ordinal, cid)

    def referenced_count(self) -> int:
        return self.index.referenced_count()


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
    # _verify yields (key, CID) pairs when not asked for the bytes: no layer re-packs them
    return cast(Iterator[tuple[str, CID]], _verify(stream, key, did, summary, False, strict_shape))


def iter_repo_records(
    stream: Readable,
    *,
    key: PublicKey | None = None,
    did: str | None = None,
    summary: RepoSummary | None = None,
    strict_shape: bool = False,
) -> Iterator[tuple[str, CID, bytes]]:
    """Like ``verify_repo_car`` but also yields each record's block bytes."""
    return cast(Iterator[tuple[str, CID, bytes]], _verify(stream, key, did, summary, True, strict_shape))


def _verify(
    stream: Readable,
    key: PublicKey | None,
    did: str | None,
    summary: RepoSummary | None,
    with_data: bool,
    strict_shape: bool = False,
) -> Iterator[Item]:
    """Try the one-pass walk; when it cannot finish exactly, index and walk again (resuming).

    Yields (key, CID, bytes) with ``with_data``, else (key, CID).
    """
    info = summary if summary is not None else RepoSummary()
    start = stream.tell() if _seekable(stream) else 0  # type: ignore[attr-defined]
    # blocks as (CID bytes, data) pairs, every hash checked: the one pass makes no object per block
    reader = CarReader(stream, sections=parse_raw_sections)
    if not reader.roots:
        raise InvalidCAR("CAR has no root (a repository CAR's first root is its commit)")
    if len(reader.roots) > 1:
        raise InvalidCAR(f"CAR has {len(reader.roots)} roots, a repository CAR has exactly one (its commit)")
    seekable = _seekable(stream)
    with collector_paused():
        try:
            stash = seekable and STASH_ONE_PASS  # read now, so tests can choose the path
            yield from _stream_path(reader, key, did, info, with_data, stash, strict_shape)
            return
        except _OutOfOrder:
            pass
        if not seekable:
            raise InvalidCAR("blocks are not in pre-order and the stream cannot seek to index them")
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


# --- stream path: blocks consumed as they arrive, early ones set aside -----------------------------


def _stream_path(
    reader: CarReader,
    key: PublicKey | None,
    did: str | None,
    info: RepoSummary,
    with_data: bool,
    stash: bool,
    strict_shape: bool = False,
) -> Iterator[Item]:
    """Verify a CAR in one pass; raise ``_OutOfOrder`` where that cannot be done exactly.

    Without ``stash`` (a stream that cannot seek) that is the first block out of pre-order.
    """
    root = reader.roots[0]
    blocks = cast(Iterator[RawBlock], iter(reader))
    source = _StreamSource(blocks, stash=stash, with_data=with_data)
    first = next(blocks, None)
    if first is None or first[0] != root.raw:
        first = source.read_until(root.raw, first)  # the commit comes later: set aside what comes first
    source.consumed = 1
    commit = info.commit = _check_commit(first[1], root, key, did)
    # the reader checked every block's hash as it read it
    tree = _open_tree(NodeLoader(source, cache_size=0, check_hashes=False), commit, info, strict_shape)
    yield from _walk_streamed(tree, source, info, with_data)
    _summarize_streamed(blocks, source, info)


def _walk_streamed(tree: MST, source: _StreamSource, info: RepoSummary, with_data: bool) -> Iterator[Item]:
    """Each record in key order, its block the next one in the stream (or set aside earlier).

    ``Walker.entries`` (forward) with each record's block read in the same
    loop: this is the per-record hot path of verification, and a generator
    between the two would add a resumption per record. A leaf's records are
    read in one inner loop (pushing and popping them gives the same order).
    Nodes are opened by ``resolve``, as every walk opens them; the tests
    compare the yield with ``MST.walk``.
    """
    stack = Walker(tree).stack
    pop = stack.pop
    push = stack.append
    loader = tree.loader
    blocks = source.blocks
    take = source.take
    read_until = source.read_until
    count = 0
    name = None
    try:
        while stack:
            item = pop()
            if len(item) == 2:
                raw, val = item
                if source.stashed:
                    data = take(val.raw)
                else:  # nothing set aside yet: the record's block must be the next one
                    block = next(blocks, None)
                    data = (
                        block[1]
                        if block is not None and block[0] == val.raw
                        else read_until(val.raw, block)[1]
                    )
                name = raw.decode()
                count += 1
                yield (name, val, data) if with_data else (name, val)
                continue
            sub, layer, lo, hi = item
            node = sub if type(sub) is Node else resolve(loader, sub, layer, lo, hi)
            keys, vals, subs = node.keys, node.vals, node.subs  # type: ignore[union-attr]
            n = len(keys)
            if subs.count(None) > n:  # a leaf: its records are all that comes next
                for raw, val in zip(keys, vals, strict=True):
                    if source.stashed:
                        data = take(val.raw)
                    else:
                        block = next(blocks, None)
                        data = (
                            block[1]
                            if block is not None and block[0] == val.raw
                            else read_until(val.raw, block)[1]
                        )
                    name = raw.decode()
                    count += 1
                    yield (name, val, data) if with_data else (name, val)
                continue
            below = layer - 1
            for i in range(n, -1, -1):
                if i < n:
                    push((keys[i], vals[i]))
                child = subs[i]
                if child is not None:
                    push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
    finally:  # the summary stays right however the walk ends
        info.records = count
        info.last_key = name


def _summarize_streamed(blocks: Iterator[RawBlock], source: _StreamSource, info: RepoSummary) -> None:
    """Count what follows the walk (read to the end, so every hash is checked) and fill the summary."""
    # The root node is always read, the empty one too, so it is among the consumed blocks.
    rest = 0
    for _block in blocks:
        rest += 1
    if source.stashed:
        # Distinct counts, as the index path gives them: a block set aside and
        # never used, or one after the walk, may repeat a block already used.
        if rest or source.left():
            raise _OutOfOrder
        info.streamed = False
    info.nodes = source.consumed - 1
    info.unreferenced = rest
    info.blocks = source.consumed + info.records + rest


# --- index path: any block order, read by offset from a compact index ------------------------------


def _index_path(
    stream: Readable,
    start: int,
    key: PublicKey | None,
    did: str | None,
    info: RepoSummary,
    with_data: bool,
    strict_shape: bool = False,
) -> Iterator[Item]:
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
    yield from _walk_indexed(tree, source, info, with_data)
    _summarize_indexed(index, source, info)


def _walk_indexed(tree: MST, source: _IndexSource, info: RepoSummary, with_data: bool) -> Iterator[Item]:
    """Each record in key order, required in the index (and read when ``with_data``).

    Records the stream path yielded before it gave up are counted, not yielded
    again. ``Walker.entries`` written out as in ``_walk_streamed`` (a leaf's
    records in one inner loop, no generator between walk and check): with the
    C index, this loop is most of what verifying a file in any order costs.
    """
    resume = info.last_key.encode() if info.last_key is not None else None
    mark = source.mark
    mark_all = source.mark_all
    read = source.read
    stack = Walker(tree).stack
    pop = stack.pop
    push = stack.append
    loader = tree.loader
    data = b""
    count = 0
    name = info.last_key
    try:
        while stack:
            item = pop()
            if len(item) == 2:
                entries: Any = (item,)
            else:
                sub, layer, lo, hi = item
                node = sub if type(sub) is Node else resolve(loader, sub, layer, lo, hi)
                keys, vals, subs = node.keys, node.vals, node.subs  # type: ignore[union-attr]
                n = len(keys)
                if subs.count(None) <= n:  # not a leaf: its entries and subtrees, in order, on the stack
                    below = layer - 1
                    for i in range(n, -1, -1):
                        if i < n:
                            push((keys[i], vals[i]))
                        child = subs[i]
                        if child is not None:
                            push((child, below, keys[i - 1] if i else lo, keys[i] if i < n else hi))
                    continue
                if not with_data:  # a leaf: its records marked in one call, then yielded
                    bad = mark_all(vals)
                    for raw, val in (
                        zip(keys, vals, strict=True) if bad < 0 else zip(keys[:bad], vals[:bad], strict=True)
                    ):
                        count += 1
                        if resume is not None:
                            if raw <= resume:
                                continue
                            resume = None
                        name = raw.decode()
                        yield (name, val)
                    if bad >= 0:
                        raise MissingBlock(vals[bad], f"record {keys[bad].decode()}")
                    continue
                entries = zip(keys, vals, strict=True)
            for raw, val in entries:
                if with_data:
                    found = read(val)
                    if found is None:
                        raise MissingBlock(val, f"record {raw.decode()}")
                    data = found
                elif mark(val.raw) < 0:
                    raise MissingBlock(val, f"record {raw.decode()}")
                count += 1
                if resume is not None:
                    if raw <= resume:
                        continue
                    resume = None
                name = raw.decode()
                yield (name, val, data) if with_data else (name, val)
    finally:  # the summary stays right however the walk ends
        info.records = count
        info.last_key = name


def _summarize_indexed(index: CarIndex, source: _IndexSource, info: RepoSummary) -> None:
    # The root node is always read (the empty one too), so ``source.nodes`` counts it.
    blocks = len(index)
    info.blocks = blocks
    info.unreferenced = blocks - source.referenced_count()
    info.nodes = source.nodes


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
