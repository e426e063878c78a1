"""Sync 1.1 validation of ``#commit`` and ``#sync`` messages.

``validate_commit`` runs every self-contained check of the inductive firehose
(sizes, CAR and commit, message/commit agreement, future revs, signature, op
well-formedness, forward check in the new tree, inversion back to
``prevData``) and returns the verified result or raises ``InvalidCommitEvent``
whose ``rule`` names the failed check. ``check_chain`` then compares a
verified commit with the stored ``(rev, data)`` of its repository.

The tree checks read only the nodes they need (``check_tree_ops``), so any
block set that suffices is accepted, not only the one this library sends.
"""

from __future__ import annotations

import enum
import time as _time
from collections.abc import Container, Sequence
from dataclasses import dataclass

from . import limits
from ._native import mst_invert as _native_invert
from .blocks import BlockMap, BlockSource
from .car import read_car
from .cid import CID
from .commit import SignedCommit, decode_commit
from .errors import AtrepoError, InvalidCommitEvent, InvalidSignature, MissingBlock
from .events import CommitEvent, RepoOp, SyncEvent
from .keys import PublicKey
from .mst.tree import MST, NodeLoader
from .syntax import is_valid_repo_path
from .tid import tid_to_parts

#: How far in the future a commit's rev may be (the Go relay allows 5 minutes).
MAX_FUTURE_REV_SECONDS = 300


class _CommitFields:
    """``commit_cid`` and ``data`` of a verified message's signed commit."""

    __slots__ = ()
    commit: SignedCommit

    @property
    def commit_cid(self) -> CID:
        return self.commit.cid

    @property
    def data(self) -> CID:
        return self.commit.data


@dataclass(frozen=True, slots=True)
class VerifiedCommit(_CommitFields):
    """A ``#commit`` that passed every self-contained check.

    ``canonical`` is False when the new tree's root or ``prevData`` was left
    untrimmed (an entry-less root over the real one, which the reference
    implementation can produce); ``warnings`` says which. A commit without ops
    reads no tree and counts as canonical.
    """

    did: str
    rev: str
    since: str | None
    commit: SignedCommit
    prev_data: CID | None
    ops: tuple[RepoOp, ...]
    blocks: BlockMap
    inverted: bool
    canonical: bool = True
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VerifiedSync(_CommitFields):
    """A ``#sync`` that passed every self-contained check."""

    did: str
    rev: str
    commit: SignedCommit


@dataclass(frozen=True, slots=True)
class RepoState:
    """What a consumer keeps per repository: the last verified rev and data."""

    rev: str
    data: CID
    commit: CID | None = None


class Chain(enum.Enum):
    """How a verified event relates to the stored state."""

    FIRST = "first"  # nothing stored yet
    NEXT = "next"  # follows the stored state exactly
    DUPLICATE = "duplicate"  # rev not after the stored rev: ignore
    OUT_OF_SYNC = "out-of-sync"  # valid, but the chain broke: resync
    SAME = "same"  # a #sync that restates the stored state


def _fail(rule: str, message: str) -> InvalidCommitEvent:
    return InvalidCommitEvent(rule, message)


def _commit_from_car(
    blocks_bytes: bytes, root_expected: CID | None, max_bytes: int
) -> tuple[SignedCommit, BlockMap]:
    if not blocks_bytes:
        raise _fail("car", "blocks is empty")
    if len(blocks_bytes) > max_bytes:
        raise _fail("size", f"blocks is {len(blocks_bytes)} bytes, more than {max_bytes}")
    try:
        roots, blocks = read_car(blocks_bytes, max_bytes=max_bytes)
    except AtrepoError as exc:
        raise _fail("car", str(exc)) from None
    if not roots:
        raise _fail("car", "CAR has no root")
    if len(roots) > 1:
        # The CAR is read as a repository slice: its one root is the commit.
        raise _fail("car", f"CAR has {len(roots)} roots, a repository CAR has exactly one")
    root = roots[0]
    if root_expected is not None and root != root_expected:
        raise _fail("car", f"CAR root {root} is not the message's commit {root_expected}")
    raw = blocks.get(root)
    if raw is None:
        raise _fail("car", f"commit block {root} is not in the CAR")
    try:
        commit = decode_commit(raw, root)
    except AtrepoError as exc:
        raise _fail("commit", str(exc)) from None
    return commit, blocks


def _check_rev_time(rev: str, now: float | None, max_future: float) -> None:
    micros, _ = tid_to_parts(rev)
    current = _time.time() if now is None else now
    if micros / 1_000_000 > current + max_future:
        raise _fail("future-rev", f"rev {rev} is more than {int(max_future)} s in the future")


def _check_signature(commit: SignedCommit, key: PublicKey | None) -> None:
    if key is None:
        return
    try:
        commit.verify(key)
    except InvalidSignature as exc:
        raise _fail("signature", str(exc)) from None


def validate_commit(
    event: CommitEvent,
    key: PublicKey | None,
    *,
    now: float | None = None,
    max_future_seconds: float = MAX_FUTURE_REV_SECONDS,
    require_record_blocks: bool = True,
    strict_shape: bool = False,
) -> VerifiedCommit:
    """Run the self-contained Sync 1.1 checks on a ``#commit`` (``key`` None skips the signature).

    ``strict_shape`` rejects an untrimmed root in ``data`` or ``prevData``;
    by default they are accepted with ``canonical`` False, since the reference
    host can send them.
    """
    commit, blocks, checked = validate_commit_parts(
        event,
        key,
        now=now,
        max_future_seconds=max_future_seconds,
        require_record_blocks=require_record_blocks,
        strict_shape=strict_shape,
    )
    return VerifiedCommit(
        commit.did,
        commit.rev,
        event.since,
        commit,
        event.prev_data,
        event.ops,
        blocks,
        checked.inverted,
        not checked.warnings,
        checked.warnings,
    )


def validate_commit_parts(
    event: CommitEvent,
    key: PublicKey | None,
    *,
    now: float | None = None,
    max_future_seconds: float = MAX_FUTURE_REV_SECONDS,
    require_record_blocks: bool = True,
    strict_shape: bool = False,
) -> tuple[SignedCommit, BlockMap, TreeCheck]:
    """``validate_commit``'s checks, giving back its parts: signed commit, CAR blocks, tree check.

    For a caller that keeps only some of the result (the relay keeps the
    commit and the warnings, once per event): it skips building the
    ``VerifiedCommit``. Raises as ``validate_commit`` does.
    """
    if event.too_big or event.rebase:
        raise _fail("flags", "tooBig and rebase are deprecated and must be false")
    if len(event.ops) > limits.MAX_COMMIT_OPS:
        raise _fail("size", f"{len(event.ops)} ops, more than {limits.MAX_COMMIT_OPS}")
    commit, blocks = _commit_from_car(event.blocks, event.commit, limits.MAX_COMMIT_BLOCKS_BYTES)
    if event.repo != commit.did:
        raise _fail("repo", f"message repo {event.repo} is not the commit's did {commit.did}")
    if event.rev != commit.rev:
        raise _fail("rev", f"message rev {event.rev} is not the commit's rev {commit.rev}")
    if event.since is not None and event.since >= event.rev:
        raise _fail("rev", f"since {event.since} is not before rev {event.rev}")
    _check_rev_time(commit.rev, now, max_future_seconds)
    _check_signature(commit, key)
    ops = event.ops
    seen: set[str] = set()
    for op in ops:
        if op.path in seen:
            raise _fail("ops", f"path {op.path} appears twice")
        seen.add(op.path)
        if not is_valid_repo_path(op.path):
            raise _fail("ops", f"path {op.path!r} is not a valid repo path")
        if op.action == "create":
            if op.cid is None or op.prev is not None:
                raise _fail("ops", f"create of {op.path} must have cid and no prev")
        elif op.action == "update":
            if op.cid is None or op.prev is None:
                raise _fail("ops", f"update of {op.path} must have cid and prev")
        elif op.action == "delete":
            if op.cid is not None or op.prev is None:
                raise _fail("ops", f"delete of {op.path} must have prev and a null cid")
        else:
            raise _fail("ops", f"unknown action {op.action!r} for {op.path}")
    # read_car checked every block against its CID
    checked = check_tree_ops(
        NodeLoader(blocks, check_hashes=False),
        commit.data,
        ops,
        event.prev_data,
        records=blocks if require_record_blocks else None,
        strict_shape=strict_shape,
    )
    return commit, blocks, checked


@dataclass(frozen=True, slots=True)
class TreeCheck:
    """Outcome of ``check_tree_ops``: whether it inverted, and shape warnings."""

    inverted: bool
    warnings: tuple[str, ...] = ()


#: The outcome of a clean inversion (frozen: one shared instance).
_INVERTED = TreeCheck(True)


def check_tree_ops(
    source: BlockSource | NodeLoader,
    data: CID,
    ops: Sequence[RepoOp],
    prev_data: CID | None,
    *,
    records: Container[CID] | None = None,
    strict_shape: bool = False,
) -> TreeCheck:
    """The forward check and the inversion of ``ops`` from the tree at ``data`` back to ``prev_data``.

    Reads only the nodes the checks need: none without ops (inverting nothing
    is the identity, so ``prev_data`` must equal ``data``), otherwise the root
    and the paths each operation touches. A missing block fails the check
    that needed it. Ops are assumed well-formed (``validate_commit`` checks
    them first). ``records``, when given, must hold each op's record block.
    """
    if not ops:
        if prev_data is not None and prev_data != data:
            raise _fail("inversion", f"no ops, but prevData {prev_data} is not data {data}")
        return TreeCheck(prev_data is not None)
    # one op: the C inversion first (``_inverted_natively``); anything it does not prove goes on below
    fast = len(ops) == 1 and prev_data is not None and isinstance(source, NodeLoader)
    if fast and _inverted_natively(source, data, ops[0], prev_data, records):  # type: ignore[arg-type]
        return _INVERTED
    warnings: list[str] = []
    try:
        tree = MST.load(source, data, strict_shape=strict_shape)
    except AtrepoError as exc:
        raise _fail("forward", f"cannot open the new tree: {exc}") from None
    if not tree.canonical:
        warnings.append(f"data {data}: untrimmed root (an entry-less node over the tree's real root)")
    try:
        for op in ops:
            found = tree.get(op.path)
            if found != op.cid:
                raise _fail("forward", f"{op.action} {op.path}: the new tree holds {found}, op says {op.cid}")
            if records is not None and op.cid is not None and op.cid not in records:
                raise _fail("forward", f"{op.action} {op.path}: record block {op.cid} is not in the CAR")
    except MissingBlock as exc:
        raise _fail("forward", f"proof is incomplete: {exc}") from None
    except InvalidCommitEvent:
        raise
    except AtrepoError as exc:
        raise _fail("forward", str(exc)) from None
    if prev_data is None:
        return TreeCheck(False, tuple(warnings))
    try:
        for op in ops:
            if op.action == "create":
                tree = tree.delete(op.path)
            else:
                assert op.prev is not None
                tree = tree.set(op.path, op.prev)
        root = tree.root_cid
        # The inverted tree is trimmed; a previous root the reference left
        # untrimmed is that tree under a chain of entry-less nodes.
        depth = None if root == prev_data else tree.untrimmed_depth(prev_data)
    except MissingBlock as exc:
        raise _fail("inversion", f"blocks do not cover the inverse ops: {exc}") from None
    except AtrepoError as exc:
        raise _fail("inversion", str(exc)) from None
    if root != prev_data:
        if depth is None:
            raise _fail("inversion", f"inverted tree has root {root}, prevData is {prev_data}")
        message = f"prevData {prev_data}: untrimmed root ({depth} entry-less nodes over {root})"
        if strict_shape:
            raise _fail("inversion", message)
        warnings.append(message)
    return TreeCheck(True, tuple(warnings))


def _inverted_natively(
    loader: NodeLoader, data: CID, op: RepoOp, prev_data: CID, records: Container[CID] | None
) -> bool:
    """Whether the C inversion proves ``op`` checks forward and inverts ``data`` to exactly ``prev_data``.

    Single-op commits are most of the network's, and their tree work is the
    largest part of verifying one after the signature. ``_mstnode.invert``
    reads the same nodes as the path below, with the same checks, and answers
    only in the common case (see ``_mstnode.c``); False means "not proven":
    the caller runs the pure-Python path, which accepts the commit or names the
    error, so every failure, and every canonical-shape warning, comes from there.
    """
    if _native_invert is None:
        return False
    blocks = loader.plain_blocks()
    path = op.path
    if blocks is None or type(path) is not str or not path.isascii():
        return False
    cid = op.cid
    if records is not None and cid is not None and cid not in records:
        return False
    new = None if op.action == "create" else op.prev
    root = _native_invert(
        blocks,
        data,
        path.encode(),
        cid,
        new,
        limits.MAX_CBOR_BYTES,
        limits.MAX_MST_KEY_BYTES,
        limits.MAX_MST_NODE_ENTRIES,
        limits.MAX_MST_LAYER,
    )
    return root is not None and root == prev_data.raw


def validate_sync(
    event: SyncEvent,
    key: PublicKey | None,
    *,
    now: float | None = None,
    max_future_seconds: float = MAX_FUTURE_REV_SECONDS,
) -> VerifiedSync:
    """Run the self-contained checks on a ``#sync`` message."""
    commit, _ = _commit_from_car(event.blocks, None, limits.MAX_SYNC_BLOCKS_BYTES)
    if event.did != commit.did:
        raise _fail("repo", f"message did {event.did} is not the commit's did {commit.did}")
    if event.rev != commit.rev:
        raise _fail("rev", f"message rev {event.rev} is not the commit's rev {commit.rev}")
    _check_rev_time(commit.rev, now, max_future_seconds)
    _check_signature(commit, key)
    return VerifiedSync(commit.did, commit.rev, commit)


def check_chain(state: RepoState | None, verified: VerifiedCommit) -> Chain:
    """Place a verified commit against the stored state of its repository."""
    if state is None:
        return Chain.FIRST
    if verified.rev <= state.rev:
        return Chain.DUPLICATE
    if verified.prev_data != state.data or verified.since != state.rev:
        return Chain.OUT_OF_SYNC
    return Chain.NEXT


def check_sync_chain(state: RepoState | None, verified: VerifiedSync) -> Chain:
    """Place a verified ``#sync`` against the stored state (sync.md §7).

    ``SAME``: it restates the stored rev and data (no-op). ``DUPLICATE``: any
    other rev not after the stored one (ignore; the stored state stays).
    ``NEXT``: a later rev over the same data (a re-signed commit; store it, no
    resync). ``OUT_OF_SYNC``: a later rev over other data (store it, resync).
    """
    if state is None:
        return Chain.FIRST
    if verified.rev <= state.rev:
        return Chain.SAME if verified.rev == state.rev and verified.data == state.data else Chain.DUPLICATE
    return Chain.NEXT if verified.data == state.data else Chain.OUT_OF_SYNC


def state_after(verified: VerifiedCommit | VerifiedSync) -> RepoState:
    """The repository state a consumer stores after accepting ``verified``."""
    return RepoState(verified.rev, verified.data, verified.commit_cid)
