"""A repository: a signed commit over an MST of record CIDs, read from blocks.

``Repo`` is an immutable view over a ``BlockSource``. ``apply_writes`` returns a
``CommitResult`` holding the new repository, its signed commit, the record
operations (with previous CIDs), the blocks to store, and exactly the blocks a
``#commit`` event must carry (new records, the commit, and the covering proofs
that let a consumer invert the operations).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import cbor, limits
from .action import Action
from .blocks import BlockMap, BlockSource, LayeredSource
from .car import encode_car_header, write_car
from .cid import CID
from .commit import SignedCommit, decode_commit, sign_commit
from .datamodel import validate_record
from .errors import InvalidDataModel, InvalidWrite, LimitExceeded, MissingBlock
from .events import CommitEvent, RepoOp, SyncEvent
from .keys import PrivateKey
from .mst import MST
from .mst.diff import diff_trees
from .mst.proof import covering_blocks
from .syntax import is_valid_nsid, is_valid_record_key
from .tid import DEFAULT_CLOCK
from .varint import varint_size


@dataclass(frozen=True, slots=True)
class Write:
    """One requested change: ``record`` is the data-model value (None for delete).

    ``encoded`` is the record's DAG-CBOR and CID when the caller has already
    checked the record against the data model, encoded it and hashed it (a
    host does that before its writer thread): the commit then uses them as
    they are instead of doing the same work again. Only code that made them
    from ``record`` may pass them.
    """

    action: Action
    collection: str
    rkey: str
    record: Any = None
    encoded: tuple[bytes, CID] | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Everything one commit produced.

    ``removed`` holds the blocks this commit stopped referencing: the old
    commit, replaced MST nodes and the record blocks dropped from the changed
    paths. Identical records share one block, so a record CID in ``removed``
    may still be referenced from a path this commit did not touch; a store
    must count references to record blocks before deleting them.
    """

    repo: Repo
    commit: SignedCommit
    since: str | None
    prev_data: CID | None
    ops: tuple[RepoOp, ...]
    blocks: BlockMap
    event_blocks: BlockMap
    removed: frozenset[CID]

    @property
    def rev(self) -> str:
        return self.commit.rev

    def car_slice(self) -> bytes:
        """The ``#commit`` event's ``blocks``: a CAR rooted at the new commit."""
        return write_car([self.commit.cid], self.event_blocks.items())

    def to_event(self, seq: int, time: str) -> CommitEvent:
        return CommitEvent(
            seq=seq,
            repo=self.commit.did,
            commit=self.commit.cid,
            rev=self.commit.rev,
            since=self.since,
            blocks=self.car_slice(),
            ops=self.ops,
            time=time,
            prev_data=self.prev_data,
        )

    def to_sync_event(self, seq: int, time: str) -> SyncEvent:
        return SyncEvent(
            seq=seq,
            did=self.commit.did,
            blocks=write_car([self.commit.cid], [(self.commit.cid, self.commit.raw)]),
            rev=self.commit.rev,
            time=time,
        )


class Repo:
    """An immutable repository view: ``commit`` plus its ``tree`` over ``source``."""

    __slots__ = ("commit", "source", "tree")

    def __init__(self, source: BlockSource, commit: SignedCommit, tree: MST) -> None:
        self.source = source
        self.commit = commit
        self.tree = tree

    # --- opening and creating ---------------------------------------------------
    @classmethod
    def open(cls, source: BlockSource, commit_cid: CID) -> Repo:
        raw = source.get(commit_cid)
        if raw is None:
            raise MissingBlock(commit_cid, "commit")
        commit = decode_commit(raw, commit_cid)
        return cls(source, commit, MST.load(source, commit.data))

    @classmethod
    def create(
        cls,
        did: str,
        key: PrivateKey,
        writes: Sequence[Write] = (),
        *,
        rev: str | None = None,
        source: BlockSource | None = None,
    ) -> CommitResult:
        """The first commit of a new repository (optionally with records)."""
        base = source if source is not None else BlockMap()
        empty = MST.empty(base)
        tree, ops, records, removed = _apply(empty, writes, base)
        rev = rev or DEFAULT_CLOCK.next()
        commit = sign_commit(did, tree.root_cid, rev, key)
        blocks = tree.new_blocks()
        blocks.update(records)
        blocks.put(commit.cid, commit.raw)
        event_blocks = BlockMap()
        event_blocks.put(commit.cid, commit.raw)
        event_blocks.update(records)
        event_blocks.update(tree.new_blocks())
        _check_event_size(commit, event_blocks)
        repo = cls(_grow(base, blocks), commit, tree)
        return CommitResult(repo, commit, None, None, ops, blocks, event_blocks, frozenset(removed))

    @classmethod
    def build(
        cls,
        did: str,
        key: PrivateKey,
        records: Iterable[tuple[str, Any]],
        *,
        rev: str | None = None,
        source: BlockMap | None = None,
    ) -> Repo:
        """A repository holding ``records`` ((path, value) pairs) in one commit.

        For imports and fixtures: no 200-write limit, the tree is built in one
        linear pass, and every block lands in ``source`` (a new ``BlockMap``
        by default).
        """
        blocks = source if source is not None else BlockMap()
        items: list[tuple[str, CID]] = []
        for index, (path, value) in enumerate(records):
            collection, _, rkey = path.partition("/")
            write = Write("create", collection, rkey, value)
            _check_path(write, index)
            data = _encode_record(write, index)
            items.append((path, blocks.add(data)))
        items.sort()
        for (a, _), (b, _) in itertools.pairwise(items):
            if a == b:
                raise InvalidWrite(f"{a} appears twice")
        tree = MST.build(items, blocks)
        blocks.update(tree.new_blocks())
        commit = sign_commit(did, tree.root_cid, rev or DEFAULT_CLOCK.next(), key)
        blocks.put(commit.cid, commit.raw)
        return cls(blocks, commit, MST.load(blocks, commit.data))

    # --- reading ------------------------------------------------------------------
    @property
    def did(self) -> str:
        return self.commit.did

    @property
    def rev(self) -> str:
        return self.commit.rev

    @property
    def data(self) -> CID:
        return self.commit.data

    def get_record_cid(self, collection: str, rkey: str) -> CID | None:
        return self.tree.get(f"{collection}/{rkey}")

    def get_record(self, collection: str, rkey: str) -> tuple[CID, Any] | None:
        """The record's CID and decoded value, or None when absent."""
        cid = self.get_record_cid(collection, rkey)
        if cid is None:
            return None
        raw = self.source.get(cid)
        if raw is None:
            raise MissingBlock(cid, f"record {collection}/{rkey}")
        return cid, cbor.decode(raw, max_bytes=limits.MAX_RECORD_BYTES)

    def list_records(
        self, collection: str, *, cursor: str | None = None, limit: int = 50, reverse: bool = False
    ) -> list[tuple[str, CID]]:
        """(rkey, CID) pairs of one collection, paginated by rkey."""
        cut = len(collection) + 1
        return [
            (key[cut:], cid)
            for key, cid in self.tree.list(collection, cursor=cursor, limit=limit, reverse=reverse)
        ]

    def collections(self) -> list[str]:
        """Every collection with at least one record, skipping through the tree."""
        out: list[str] = []
        lower: bytes | None = None
        while True:
            found = next(iter(self.tree.range_raw(lower, None)), None)
            if found is None:
                return out
            collection = found[0].split(b"/", 1)[0]
            out.append(collection.decode())
            lower = collection + b"0"  # '0' sorts right after '/'

    def walk(self) -> Iterator[tuple[str, CID]]:
        return self.tree.walk()

    def export_blocks(self) -> Iterator[tuple[CID, bytes]]:
        """Every block in the streamable order: commit, then the tree in pre-order."""
        yield self.commit.cid, self.commit.raw
        tree = self.tree
        if tree.root is None:
            yield tree.root_cid, tree.new_blocks().require(tree.root_cid)
            return
        # The tree's walk, yielding each node as it is opened (pre-order) and
        # each record as it is passed (key order): the streamable order.
        walker = tree.walker()
        stack = walker.stack
        get = self.source.get
        while stack:
            if len(stack[-1]) == 4:  # a subtree slot
                node = walker.open()
                yield node.cid, node.encode()
            else:
                key, val = stack.pop()
                raw = get(val)
                if raw is None:
                    raise MissingBlock(val, f"record {key.decode()}")
                yield val, raw

    # --- writing ------------------------------------------------------------------
    def apply_writes(
        self, writes: Sequence[Write], key: PrivateKey, *, rev: str | None = None
    ) -> CommitResult:
        """Apply a batch (at most 200 writes) and sign the new commit."""
        tree, ops, records, removed = _apply(self.tree, writes, self.source)
        new_rev = rev if rev is not None else DEFAULT_CLOCK.next_after(self.rev)
        if new_rev <= self.rev:
            raise InvalidWrite(f"rev {new_rev} is not after the current rev {self.rev}")
        commit = sign_commit(self.did, tree.root_cid, new_rev, key)
        diff = diff_trees(self.tree, tree)
        blocks = diff.new_blocks
        blocks.update(records)
        blocks.put(commit.cid, commit.raw)
        event_blocks = BlockMap()
        event_blocks.put(commit.cid, commit.raw)
        event_blocks.update(records)
        # Covering proofs hold the node ``data`` names even when no path reaches
        # it: the empty node after the last delete, the root of a commit without ops.
        covering_blocks(tree, [op.path for op in ops], event_blocks)
        _check_event_size(commit, event_blocks)
        removed.update(diff.removed_nodes)
        removed.add(self.commit.cid)
        repo = Repo(_grow(self.source, blocks), commit, tree)
        return CommitResult(repo, commit, self.rev, self.data, ops, blocks, event_blocks, frozenset(removed))

    def resign(self, key: PrivateKey, *, rev: str | None = None) -> CommitResult:
        """A new commit over the same data (after a signing-key rotation)."""
        return self.apply_writes((), key, rev=rev)


def _check_event_size(commit: SignedCommit, event_blocks: BlockMap) -> None:
    """Refuse a commit whose ``#commit`` CAR slice (header, sections and all) would be too big."""
    size = len(encode_car_header([commit.cid]))
    for cid, data in event_blocks.items():
        section = len(cid.raw) + len(data)
        size += varint_size(section) + section
    if size > limits.MAX_COMMIT_BLOCKS_BYTES:
        raise LimitExceeded("MAX_COMMIT_BLOCKS_BYTES", size, limits.MAX_COMMIT_BLOCKS_BYTES, "Max event size")


def _grow(source: BlockSource, blocks: BlockMap) -> BlockSource:
    """A source with ``blocks`` added.

    Blocks are content-addressed, so adding to an in-memory ``BlockMap`` never
    changes what an older view reads; other sources get a layer on top.
    """
    if isinstance(source, BlockMap):
        source.update(blocks)
        return source
    return LayeredSource(blocks, source)


def _apply(
    tree: MST, writes: Sequence[Write], source: BlockSource
) -> tuple[MST, tuple[RepoOp, ...], BlockMap, set[CID]]:
    """Validate and apply writes to a tree; return it, the ops, record blocks, and removed CIDs."""
    if len(writes) > limits.MAX_COMMIT_OPS:
        raise LimitExceeded("MAX_COMMIT_OPS", len(writes), limits.MAX_COMMIT_OPS, "Too many writes")
    seen: set[str] = set()
    ops: list[RepoOp] = []
    records = BlockMap()
    removed: set[CID] = set()
    for index, write in enumerate(writes):
        path = _check_path(write, index)
        if path in seen:
            raise InvalidWrite(f"write {index}: {path} is written twice in one commit")
        seen.add(path)
        current = tree.get(path)
        if write.action == "delete":
            if current is None:
                raise InvalidWrite(f"write {index}: cannot delete {path}: no such record")
            tree = tree.delete(path)
            ops.append(RepoOp("delete", path, None, current))
            removed.add(current)
            continue
        if write.encoded is not None:
            data, cid = write.encoded
        else:
            data = _encode_record(write, index)
            cid = CID.for_dag_cbor(data)
        records.put(cid, data)
        if write.action == "create":
            if current is not None:
                raise InvalidWrite(f"write {index}: cannot create {path}: record already exists")
            ops.append(RepoOp("create", path, cid))
        elif write.action == "update":
            if current is None:
                raise InvalidWrite(f"write {index}: cannot update {path}: no such record")
            ops.append(RepoOp("update", path, cid, current))
            if current != cid:
                removed.add(current)
        else:
            raise InvalidWrite(f"write {index}: unknown action {write.action!r}")
        tree = tree.set(path, cid)
    del source
    removed.difference_update(records.cids())  # a value moved or copied within the batch
    return tree, tuple(ops), records, removed


def _check_path(write: Write, index: int) -> str:
    if not is_valid_nsid(write.collection):
        raise InvalidWrite(f"write {index}: collection {write.collection!r} is not a valid NSID")
    if not is_valid_record_key(write.rkey):
        raise InvalidWrite(f"write {index}: rkey {write.rkey!r} is not a valid record key")
    path = write.path
    if len(path) > limits.MAX_MST_KEY_BYTES:
        raise InvalidWrite(f"write {index}: path longer than {limits.MAX_MST_KEY_BYTES} bytes")
    return path


def _encode_record(write: Write, index: int) -> bytes:
    try:
        validate_record(write.record)
    except InvalidDataModel as exc:
        raise InvalidWrite(f"write {index} ({write.path}): {exc}") from None
    data = cbor.encode(write.record)
    if len(data) > limits.MAX_RECORD_BYTES:
        raise LimitExceeded("MAX_RECORD_BYTES", len(data), limits.MAX_RECORD_BYTES, write.path)
    return data
