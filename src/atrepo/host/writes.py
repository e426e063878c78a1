"""The host's record write path: ``createRecord``, ``putRecord``, ``deleteRecord``, ``applyWrites``.

Synchronous and HTTP-free: an XRPC handler parses its body into data-model
values, calls :class:`RepoWriter` on the store's writer thread, and turns the
:class:`WriteOutcome` into its reply (and the appended event's seq into a
firehose notification). Everything one call changes, the blocks, the record
index, the head, the blob references and the ``#commit`` event, happens inside
one ``store.transaction(did)``, so a failure at any step leaves the store as
it was (repo-api.md §13).

The order of the steps follows the reference PDS, because it decides which
error a request with several problems gets:

1. :meth:`RepoWriter.prepare` (pure, any thread): at most 200 ops; ``$type``,
   record key, lexicon per ``validate``, data model (``prepare_record``);
   TID record keys for creates without one; one op per path.
2. In the transaction: the account exists and may write; each op's current
   record decides what it does: a ``putRecord`` of the record already there
   and a ``deleteRecord`` of a missing record are no-ops that the reference
   answers before looking at any swap; a batch left without ops makes no
   commit.
3. ``createRecord`` of a follow, block, like or repost deletes the account's
   older records of the same subject in the same commit (reference
   ``getBacklinkConflicts``, ``validate`` not false).
4. ``swapCommit`` against the head, then each op's ``swapRecord``
   (``InvalidSwap``).
5. Every blob a record references is an upload of this account; one still
   temporary must match the record's ``mimeType`` and ``size``.
6. The commit is built and signed (2,000,000-byte event limit), stored with
   its blob references, and its ``#commit`` event appended.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from atrepo.core import cbor, limits
from atrepo.core.action import Action
from atrepo.core.blobrefs import BlobRef, find_blobs
from atrepo.core.cid import CID
from atrepo.core.commit import SignedCommit
from atrepo.core.datamodel import validate_record
from atrepo.core.errors import (
    AccountTakedown,
    BlobNotFound,
    InvalidDataModel,
    InvalidRequest,
    InvalidSwap,
    LimitExceeded,
    RepoDeactivated,
    RepoNotFound,
)
from atrepo.core.keys import PrivateKey
from atrepo.core.lexicon.records import ValidationStatus, prepare_record
from atrepo.core.lexicon.registry import Registry
from atrepo.core.mst.tree import MST, NodeLoader
from atrepo.core.repo import CommitResult, Repo, Write
from atrepo.core.syntax import is_valid_at_uri, is_valid_did, is_valid_nsid, is_valid_record_key
from atrepo.core.tid import DEFAULT_CLOCK, TIDClock
from atrepo.store.base import Account, BlobRow, EventRow, RepoTransaction, Store

__all__ = [
    "UNCHECKED",
    "CommitMeta",
    "CreateOp",
    "DeleteOp",
    "OpResult",
    "PreparedBatch",
    "RepoWriter",
    "SwapRecord",
    "UpdateOp",
    "WriteOp",
    "WriteOutcome",
    "ops_from_apply_writes",
]

_APPLY_WRITES: Final = "com.atproto.repo.applyWrites"
#: Collections whose records the reference keeps unique per subject on ``createRecord``,
#: and where the subject is: a DID in ``subject`` or an AT-URI in ``subject.uri``.
_SUBJECT_DID: Final = frozenset({"app.bsky.graph.follow", "app.bsky.graph.block"})
_SUBJECT_URI: Final = frozenset({"app.bsky.feed.like", "app.bsky.feed.repost"})


class _Unchecked:
    """The type of :data:`UNCHECKED`: no ``swapRecord`` was given, which differs from ``null``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHECKED"


#: ``swap_record`` when the request had no ``swapRecord`` key: nothing is checked.
UNCHECKED: Final = _Unchecked()

#: A record compare-and-swap (repo-api.md §3): :data:`UNCHECKED` checks nothing,
#: ``None`` requires that no record exists, a CID that the record exists with exactly it.
SwapRecord = CID | None | _Unchecked


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateOp:
    """Create a record; the path must be free (``createRecord``, ``applyWrites#create``).

    ``rkey`` None means a new TID. ``record`` is a data-model value (a dict;
    ``$type`` may be left out). ``replace_duplicates`` is ``createRecord``'s
    rule: older follows/blocks/likes/reposts of the same subject are deleted
    in the same commit (unless the batch's ``validate`` is false).
    """

    collection: str
    rkey: str | None
    record: Any
    replace_duplicates: bool = False


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """Write a record at a path (``putRecord``): replaces the record there, or creates it.

    ``must_exist`` is ``applyWrites#update``: a missing record is an error
    instead of a create, and a record equal to the stored one still makes an
    ``update`` op (the reference commits it). Without it, an equal record is
    a no-op, as in ``putRecord``.
    """

    collection: str
    rkey: str
    record: Any
    swap_record: SwapRecord = UNCHECKED
    must_exist: bool = False


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Delete a record (``deleteRecord``): a missing record is a no-op, swap unchecked.

    ``must_exist`` is ``applyWrites#delete``: a missing record is an error.
    """

    collection: str
    rkey: str
    swap_record: SwapRecord = UNCHECKED
    must_exist: bool = False


WriteOp = CreateOp | UpdateOp | DeleteOp


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpResult:
    """What one requested op did.

    ``action`` is what it did to the tree (a ``putRecord`` reports ``create``
    when the path was free). ``applied`` is False for a no-op: a put of the
    record already stored, a delete of a missing record. ``cid`` is the
    record's CID (None for deletes); ``validation_status`` is None when
    ``validate`` was false and for deletes.
    """

    action: Action
    uri: str
    cid: CID | None
    validation_status: ValidationStatus | None
    applied: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``createRecord``/``putRecord`` reply fields (``uri``, ``cid``, ``validationStatus``)."""
        out: dict[str, Any] = {"uri": self.uri}
        if self.cid is not None:
            out["cid"] = str(self.cid)
        if self.validation_status is not None:
            out["validationStatus"] = self.validation_status
        return out

    def to_apply_writes_result(self) -> dict[str, Any]:
        """One item of ``applyWrites``' ``results`` (``#createResult``, ``#updateResult``...)."""
        if self.action == "delete":
            return {"$type": f"{_APPLY_WRITES}#deleteResult"}
        return {"$type": f"{_APPLY_WRITES}#{self.action}Result", **self.to_json()}


@dataclass(frozen=True, slots=True)
class CommitMeta:
    """``com.atproto.repo.defs#commitMeta``: the new commit's CID and rev."""

    cid: CID
    rev: str

    def to_json(self) -> dict[str, Any]:
        return {"cid": str(self.cid), "rev": self.rev}


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """Everything a handler needs for its reply and for the firehose.

    ``results`` is aligned with the requested ops. ``commit``, ``event`` and
    ``result`` are None when nothing changed (every op was a no-op): then no
    commit was made and no event appended, and the reply omits ``commit``.
    ``replaced`` holds the URIs of the older duplicates a ``createRecord``
    deleted. ``event`` is the appended ``#commit``; wake the firehose with its
    ``seq`` once this call has returned (the transaction is committed then).
    """

    did: str
    results: tuple[OpResult, ...]
    commit: CommitMeta | None
    event: EventRow | None
    result: CommitResult | None
    replaced: tuple[str, ...] = ()

    @property
    def seq(self) -> int | None:
        return self.event.seq if self.event is not None else None


# --- preparation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One op after the checks that need no repository: its path, record bytes' CID and blobs."""

    op: WriteOp
    collection: str
    rkey: str
    record: dict[str, Any] | None
    cid: CID | None
    status: ValidationStatus | None
    blobs: tuple[BlobRef, ...]
    #: The record's DAG-CBOR (None for a delete), encoded once here and reused by the commit.
    data: bytes | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Ops that passed :meth:`RepoWriter.prepare`: ready for :meth:`RepoWriter.commit`."""

    did: str
    ops: tuple[_Prepared, ...]
    validate: bool | None


def ops_from_apply_writes(writes: Sequence[Any]) -> list[WriteOp]:
    """``applyWrites``' ``writes`` (data-model values) as ops with that endpoint's semantics.

    Each write is the closed union ``#create {collection, rkey?, value}``,
    ``#update {collection, rkey, value}``, ``#delete {collection, rkey}``;
    updates and deletes of missing records are errors there (repo-api.md §5).
    """
    if len(writes) > limits.MAX_COMMIT_OPS:
        raise _too_many(len(writes))
    ops: list[WriteOp] = []
    for index, write in enumerate(writes):
        where = f"writes/{index}"
        if type(write) is not dict:
            raise InvalidRequest(f"{where} must be an object", path=where, rule="type")
        kind = write.get("$type")
        collection = _field(write, "collection", where)
        if kind == f"{_APPLY_WRITES}#create":
            rkey = write.get("rkey")
            if rkey is not None and type(rkey) is not str:
                raise InvalidRequest(f"{where}/rkey must be a string", path=f"{where}/rkey", rule="type")
            ops.append(CreateOp(collection, rkey, _value(write, where)))
        elif kind == f"{_APPLY_WRITES}#update":
            ops.append(
                UpdateOp(collection, _field(write, "rkey", where), _value(write, where), must_exist=True)
            )
        elif kind == f"{_APPLY_WRITES}#delete":
            ops.append(DeleteOp(collection, _field(write, "rkey", where), must_exist=True))
        else:
            shown = kind[:200] if type(kind) is str else type(kind).__name__
            raise InvalidRequest(f"Action not supported: {shown}", path=f"{where}/$type", rule="closed-union")
    return ops


def _field(write: dict[str, Any], name: str, where: str) -> str:
    value = write.get(name)
    if type(value) is not str:
        raise InvalidRequest(f"{where}/{name} must be a string", path=f"{where}/{name}", rule="required")
    return value


def _value(write: dict[str, Any], where: str) -> Any:
    if "value" not in write:
        raise InvalidRequest(f"{where}/value is required", path=f"{where}/value", rule="required")
    return write["value"]


def _too_many(count: int) -> InvalidRequest:
    # The reference's words; LimitExceeded would answer with the same name and status.
    return InvalidRequest(
        f"Too many writes. Max: {limits.MAX_COMMIT_OPS} (got {count})", path="writes", rule="MAX_COMMIT_OPS"
    )


# --- the writer ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Planned:
    """What one prepared op turned out to do against the locked repository."""

    prepared: _Prepared
    action: Action
    current: CID | None
    applied: bool


class RepoWriter:
    """Applies record writes to hosted repositories, one commit per call.

    ``registry`` holds the lexicons the host knows (``validate`` decides what
    happens to the others); ``clock`` issues record keys and revs (the
    process-wide clock by default, so both keep increasing across writers).
    Stateless otherwise: one writer serves every account, from any thread.
    """

    __slots__ = ("_clock", "_trees", "_trees_lock", "registry")

    def __init__(self, registry: Registry, *, clock: TIDClock = DEFAULT_CLOCK) -> None:
        self.registry = registry
        self._clock = clock
        # did -> the tree its last commit here produced (see _open); the lock for stores
        # with several writer threads (PostgreSQL), whose commits of different repos interleave
        self._trees: OrderedDict[str, _OpenTree] = OrderedDict()
        self._trees_lock = threading.Lock()

    def _open(self, tx: RepoTransaction, did: str, head: CID) -> tuple[Repo, bool]:
        """The repository at ``head`` and whether it reuses the tree this writer's last commit built.

        Opening from the store reads and decodes the commit and the nodes on
        every path a write touches, the very nodes the previous commit built
        in memory. The kept tree is used only when the stored head is the
        commit it belongs to (content addressed: then it is exactly that
        state), so a commit rolled back, or a head moved by anything else
        (an import, a re-sign, a deletion), simply misses. In-memory nodes
        accumulate as writes touch new paths, so a tree is reopened from the
        store after ``TREE_REUSES`` commits, and at most ``TREES_KEPT``
        repositories are kept.
        """
        with self._trees_lock:
            kept = self._trees.get(did)
            if kept is not None:
                self._trees.move_to_end(did)
        if kept is None or kept.commit.cid != head or kept.uses >= TREE_REUSES:
            return Repo.open(tx.blocks, head), False
        tree = MST(NodeLoader(tx.blocks), kept.tree.root, kept.tree.layer)
        return Repo(tx.blocks, kept.commit, tree), True

    def _keep(self, did: str, result: CommitResult, reused: bool) -> None:
        with self._trees_lock:
            kept = self._trees.get(did)
            uses = kept.uses + 1 if reused and kept is not None else 0
            self._trees[did] = _OpenTree(result.commit, result.repo.tree, uses)
            self._trees.move_to_end(did)
            while len(self._trees) > TREES_KEPT:
                self._trees.popitem(last=False)

    # --- the endpoints -------------------------------------------------------------------

    def create_record(
        self,
        store: Store,
        did: str,
        key: PrivateKey,
        collection: str,
        record: Any,
        *,
        rkey: str | None = None,
        validate: bool | None = None,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """``com.atproto.repo.createRecord``: a new record (a TID key unless ``rkey``)."""
        op = CreateOp(collection, rkey, record, replace_duplicates=True)
        return self.apply(store, did, key, [op], validate=validate, swap_commit=swap_commit)

    def put_record(
        self,
        store: Store,
        did: str,
        key: PrivateKey,
        collection: str,
        rkey: str,
        record: Any,
        *,
        validate: bool | None = None,
        swap_record: SwapRecord = UNCHECKED,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """``com.atproto.repo.putRecord``: create or replace; the same record again is a no-op."""
        op = UpdateOp(collection, rkey, record, swap_record)
        return self.apply(store, did, key, [op], validate=validate, swap_commit=swap_commit)

    def delete_record(
        self,
        store: Store,
        did: str,
        key: PrivateKey,
        collection: str,
        rkey: str,
        *,
        swap_record: SwapRecord = UNCHECKED,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """``com.atproto.repo.deleteRecord``: a missing record is a success without a commit."""
        op = DeleteOp(collection, rkey, swap_record)
        return self.apply(store, did, key, [op], swap_commit=swap_commit)

    def apply_writes(
        self,
        store: Store,
        did: str,
        key: PrivateKey,
        writes: Sequence[Any],
        *,
        validate: bool | None = None,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """``com.atproto.repo.applyWrites``, ``writes`` as in the body (see :func:`ops_from_apply_writes`)."""
        ops = ops_from_apply_writes(writes)
        return self.apply(store, did, key, ops, validate=validate, swap_commit=swap_commit)

    # --- the general form ----------------------------------------------------------------

    def apply(
        self,
        store: Store,
        did: str,
        key: PrivateKey,
        ops: Iterable[WriteOp],
        *,
        validate: bool | None = None,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """Prepare ``ops`` and commit them in one transaction: all of them or, on any error, none."""
        return self.commit(store, key, self.prepare(did, ops, validate=validate), swap_commit=swap_commit)

    def prepare(self, did: str, ops: Iterable[WriteOp], *, validate: bool | None = None) -> PreparedBatch:
        """Every check that needs no repository: pure, so it may run off the writer thread.

        Errors: :class:`InvalidRequest` (too many ops, shape, ``$type``, key
        syntax, unknown type with ``validate=True``, data model, a path twice)
        and :class:`~atrepo.core.errors.InvalidLexiconData` (schema, key type).
        """
        ops = tuple(ops)
        if len(ops) > limits.MAX_COMMIT_OPS:
            raise _too_many(len(ops))
        prepared: list[_Prepared] = []
        seen: set[str] = set()
        for index, op in enumerate(ops):
            item = self._prepare_one(op, index, validate)
            if item.path in seen:
                raise InvalidRequest(
                    f"writes/{index}: {item.path[:600]} is written twice in one batch",
                    path=f"writes/{index}",
                    rule="duplicate-path",
                )
            seen.add(item.path)
            prepared.append(item)
        return PreparedBatch(did, tuple(prepared), validate)

    def _prepare_one(self, op: WriteOp, index: int, validate: bool | None) -> _Prepared:
        if isinstance(op, DeleteOp):
            _check_path(op.collection, op.rkey, index)
            return _Prepared(op, op.collection, op.rkey, None, None, None, ())
        if not isinstance(op, CreateOp | UpdateOp):
            raise TypeError(f"not a write op: {type(op).__name__}")
        rkey = op.rkey if op.rkey is not None else self._clock.next()
        record, status = prepare_record(self.registry, op.collection, rkey, op.record, validate=validate)
        try:
            validate_record(record)
        except InvalidDataModel as exc:
            raise InvalidRequest(
                f"Invalid record at writes/{index}: {exc}", path=f"writes/{index}/record", rule="data-model"
            ) from None
        data = cbor.encode(record)
        if len(data) > limits.MAX_RECORD_BYTES:
            raise LimitExceeded("MAX_RECORD_BYTES", len(data), limits.MAX_RECORD_BYTES, f"writes/{index}")
        blobs = tuple(find_blobs(record))
        return _Prepared(op, op.collection, rkey, record, CID.for_dag_cbor(data), status, blobs, data)

    def commit(
        self,
        store: Store,
        key: PrivateKey | Callable[[Account], PrivateKey],
        batch: PreparedBatch,
        *,
        swap_commit: CID | None = None,
    ) -> WriteOutcome:
        """Apply a prepared batch in one ``store.transaction``; on the store's writer thread.

        ``key`` is the signing key, or a function from the account (as read
        inside the transaction) to it, which saves the caller reading the
        account a second time.

        Errors: :class:`RepoNotFound`, :class:`AccountTakedown`,
        :class:`RepoDeactivated` (the account), :class:`InvalidRequest` (a
        create on an existing record, a strict update/delete of a missing one,
        a blob that does not match its upload, the 2 MB event limit),
        :class:`InvalidSwap`, :class:`BlobNotFound`.
        """
        did = batch.did
        with store.transaction(did) as tx:
            account = tx.account()
            _check_account(account, did)
            assert account is not None
            if not isinstance(key, PrivateKey):
                key = key(account)
            head = tx.head()
            if head is None:
                raise InvalidRequest(f"No repo root found for {did}", path="repo", rule="no-repo")
            repo, reused = self._open(tx, did, head.cid)  # tx.open_repo() would read the head again
            planned = [_plan(item, repo, did, index) for index, item in enumerate(batch.ops)]
            results = tuple(_result(plan, did) for plan in planned)
            live = [plan for plan in planned if plan.applied]
            if not live:  # every op a no-op: no swap is checked, as in the reference
                return WriteOutcome(did, results, None, None, None)
            replaced = _duplicates(repo, live) if batch.validate is not False else []
            if len(live) + len(replaced) > limits.MAX_COMMIT_OPS:
                raise _too_many(len(live) + len(replaced))
            if swap_commit is not None and swap_commit != head.cid:
                raise InvalidSwap(f"Commit was at {head.cid}")
            for plan in live:
                _check_swap(plan, did)
            refs = _check_blobs(store, did, live)
            writes = [Write("delete", c, r) for c, r in replaced]
            writes += [
                Write(
                    p.action, p.prepared.collection, p.prepared.rkey, p.prepared.record, _encoded(p.prepared)
                )
                for p in live
            ]
            result = _build(repo, writes, key, self._clock.next_after(repo.rev))
            tx.apply_commit(result, blob_refs=refs)
            event = tx.append_event(result.to_event)
            self._keep(did, result, reused)
            return WriteOutcome(
                did,
                results,
                CommitMeta(result.commit.cid, result.rev),
                event,
                result,
                tuple(_uri(did, c, r) for c, r in replaced),
            )


# --- the steps inside the transaction --------------------------------------------------------------


#: Commits a kept tree serves before it is reopened from the store (bounds its in-memory nodes).
TREE_REUSES: Final = 32
#: Repositories whose last tree :class:`RepoWriter` keeps (least recently written dropped first).
TREES_KEPT: Final = 256


@dataclass(frozen=True, slots=True)
class _OpenTree:
    commit: SignedCommit
    tree: MST
    uses: int


def _check_account(account: Account | None, did: str) -> None:
    """The reference refuses writes to missing, taken-down and deactivated accounts."""
    if account is None or account.status == "deleted":
        raise RepoNotFound(f"Could not find repo: {did}")
    if account.status in ("takendown", "suspended"):
        raise AccountTakedown("Account has been taken down")
    if account.status == "deactivated":
        raise RepoDeactivated("Account is deactivated")


def _check_path(collection: str, rkey: str, index: int) -> None:
    if not is_valid_nsid(collection):
        raise InvalidRequest(
            f"writes/{index}: invalid collection {collection[:320]!r}: not an NSID",
            path=f"writes/{index}/collection",
            rule="nsid",
        )
    if not is_valid_record_key(rkey):
        raise InvalidRequest(
            f"writes/{index}: invalid record key {rkey[:80]!r}",
            path=f"writes/{index}/rkey",
            rule="record-key",
        )


def _uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{rkey}"


def _encoded(item: _Prepared) -> tuple[bytes, CID] | None:
    """The bytes and CID ``prepare`` made, for the commit to use as they are."""
    if item.data is None or item.cid is None:
        return None
    return item.data, item.cid


def _plan(item: _Prepared, repo: Repo, did: str, index: int) -> _Planned:
    """Decide, from the record at the path now, what the op does (or that it is refused)."""
    op = item.op
    current = repo.get_record_cid(item.collection, item.rkey)
    uri = _uri(did, item.collection, item.rkey)
    if isinstance(op, CreateOp):
        if current is not None:
            # The reference's tree insert throws (a 500); repo-api.md §2 asks for a 4xx.
            raise InvalidRequest(f"Record already exists: {uri}", path=f"writes/{index}", rule="exists")
        return _Planned(item, "create", None, True)
    if isinstance(op, UpdateOp):
        if current is None:
            if op.must_exist:
                raise InvalidRequest(
                    f"Could not find record to update: {uri}", path=f"writes/{index}", rule="missing"
                )
            return _Planned(item, "create", None, True)
        # putRecord of the stored record: no commit (reference putRecord.ts, before any swap check).
        return _Planned(item, "update", current, op.must_exist or current != item.cid)
    if current is None:
        if op.must_exist:
            raise InvalidRequest(
                f"Could not find record to delete: {uri}", path=f"writes/{index}", rule="missing"
            )
        return _Planned(item, "delete", None, False)  # reference deleteRecord.ts: a no-op success
    return _Planned(item, "delete", current, True)


def _result(plan: _Planned, did: str) -> OpResult:
    item = plan.prepared
    return OpResult(plan.action, _uri(did, item.collection, item.rkey), item.cid, item.status, plan.applied)


def _check_swap(plan: _Planned, did: str) -> None:
    """``swapRecord``: None requires no record, a CID exactly that record (reference ``formatCommit``)."""
    op = plan.prepared.op
    swap = op.swap_record if isinstance(op, UpdateOp | DeleteOp) else UNCHECKED
    if isinstance(swap, _Unchecked):
        return
    if swap != plan.current:
        item = plan.prepared
        raise InvalidSwap(f"Record was at {plan.current} ({_uri(did, item.collection, item.rkey)})")


def _subject(collection: str, record: Any) -> str | None:
    """The subject of a follow/block (a DID) or like/repost (an AT-URI): reference ``getBacklinks``."""
    if type(record) is not dict or record.get("$type") != collection:
        return None
    subject = record.get("subject")
    if collection in _SUBJECT_DID:
        return subject if is_valid_did(subject) else None
    if collection in _SUBJECT_URI and type(subject) is dict:
        uri = subject.get("uri")
        return uri if is_valid_at_uri(uri) else None
    return None


def _duplicates(repo: Repo, live: Sequence[_Planned]) -> list[tuple[str, str]]:
    """(collection, rkey) of older records with the subject of a ``createRecord`` follow/block/like/repost.

    The store keeps no index of subjects, so this reads the collection's
    records: one pass per such create, paid only for those four collections.
    """
    found: list[tuple[str, str]] = []
    written = {plan.prepared.path for plan in live}
    for plan in live:
        item = plan.prepared
        op = item.op
        if not (isinstance(op, CreateOp) and op.replace_duplicates):
            continue
        collection = item.collection
        subject = _subject(collection, item.record)
        if subject is None:
            continue
        prefix = collection.encode() + b"/"
        matches: dict[CID, bool] = {}
        for raw, cid in repo.tree.range_raw(prefix, None):
            if not raw.startswith(prefix):
                break
            match = matches.get(cid)
            if match is None:
                data = repo.source.get(cid)
                value = cbor.decode(data, max_bytes=limits.MAX_RECORD_BYTES) if data is not None else None
                match = matches[cid] = _subject(collection, value) == subject
            path = raw.decode()
            if match and path not in written:
                found.append((collection, path[len(prefix) :]))
                written.add(path)
    return found


def _check_blobs(store: Store, did: str, live: Sequence[_Planned]) -> dict[str, list[CID]]:
    """Every referenced blob is this account's upload; returns ``apply_commit``'s ``blob_refs``.

    A temporary upload must match the record's ``mimeType`` and ``size``; one
    already referenced was checked when it was first used and is not checked
    again, as in the reference (``verifyBlobAndMakePermanent``), so a record
    copied from another host keeps working with a blob whose type the upload
    sniffed differently.
    """
    rows: dict[CID, BlobRow | None] = {}
    refs: dict[str, list[CID]] = {}
    for plan in live:
        item = plan.prepared
        if not item.blobs:
            continue
        cids: dict[CID, None] = {}
        for blob in item.blobs:
            if blob.cid not in rows:
                rows[blob.cid] = store.get_blob(did, blob.cid)
            row = rows[blob.cid]
            if row is None:
                raise BlobNotFound(f"Could not find blob: {blob.cid}")
            if row.temporary:
                if blob.mime_type != row.mime:
                    raise InvalidRequest(
                        f"Referenced Mimetype does not match stored blob. Expected: {row.mime}, "
                        f"Got: {blob.mime_type}",
                        path=item.path,
                        rule="mimeType",
                    )
                if blob.size != row.size:
                    raise InvalidRequest(
                        f"Referenced Size does not match stored blob. Expected: {row.size}, Got: {blob.size}",
                        path=item.path,
                        rule="size",
                    )
            cids.setdefault(blob.cid, None)
        refs[item.path] = list(cids)
    return refs


def _build(repo: Repo, writes: Sequence[Write], key: PrivateKey, rev: str) -> CommitResult:
    try:
        return repo.apply_writes(writes, key, rev=rev)
    except LimitExceeded as exc:
        if exc.limit != "MAX_COMMIT_BLOCKS_BYTES":
            raise
        raise InvalidRequest(
            f"Too many writes. Max event size: 2MB ({exc.value} bytes)", path="writes", rule=exc.limit
        ) from None
