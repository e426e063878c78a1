"""What every store offers: synchronous protocols, frozen rows, and blob files on disk.

A store keeps, per account, the repository's blocks (each with the rev of the
commit that wrote it), an index of its records, the account row with its head
commit, refresh tokens and blob metadata; and, for the whole host, the event
log that the firehose serves. Everything is synchronous, like the core's
``BlockSource``: the tree reads blocks lazily from inside the core, so a store
must answer ``get(cid)`` without awaiting. Async code reaches a store only
through :class:`atrepo.store.worker.StoreWorker`.

**Reads and writes.** Read methods may be called from any thread (a backend
gives each thread its own connection). Every change goes through a method
marked *writer* or through ``Store.transaction(did)``, and those run on the
worker's writer thread, so a backend can rely on one writer at a time per
repository.

**One transaction per repository change.** ``with store.transaction(did) as
tx:`` locks that one repository; inside it the caller reads the locked head,
builds the commit with the core, calls ``tx.apply_commit(result)`` and
``tx.append_event(result.to_event)``. Blocks, record index, head pointer,
blob references and events are committed together or not at all; an
exception inside the block rolls all of it back.

How each backend implements that lock and the event sequence:

* SQLite (:mod:`atrepo.store.sqlite`): ``BEGIN IMMEDIATE`` takes the database's
  single write lock, so repositories are serialized as a whole; the event
  counter is a row updated in the same transaction, so a seq is never seen
  before its commit and a rolled-back transaction leaves no gap.
* PostgreSQL (to come): ``transaction(did)`` opens a transaction and runs
  ``SELECT ... FROM accounts WHERE did = $1 FOR UPDATE`` (a transaction-scoped
  advisory lock on the DID for ``create_account``, whose row does not exist
  yet), so writes to different repositories proceed in parallel and writes to
  one repository queue on its row. ``append_event`` updates a one-row counter
  (``UPDATE event_seq SET seq = seq + 1 RETURNING seq``): the row lock orders
  appends by commit time, so a reader of ``seq > cursor`` never sees seq N+1
  committed before N, and a rollback returns the number. (A PostgreSQL
  ``SEQUENCE`` alone would do neither: ``nextval`` is not rolled back, leaving
  gaps, and two transactions can commit out of seq order; it needs an
  advisory lock around allocation-to-commit to be safe.) The append should be
  the last statement of the transaction so the counter row is held briefly.
  Its worker may then run several writer threads; nothing above the store
  changes.

**Times** are integers, milliseconds since the Unix epoch (``*_ms``), so
windows and expiries compare as numbers in every backend; rendering them as
datetime strings is the caller's business, except the event ``time`` that the
store writes into the frame it encodes.

**Blob bytes** live in files named by CID under ``<data>/blobs/``, written by
:class:`BlobFiles` (temporary file, fsync, rename, fsync of the directory)
before the metadata row that names them is committed; every backend shares it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from atrepo.core.blocks import BlockSource
from atrepo.core.cid import CID
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent
from atrepo.core.repo import CommitResult, Repo

__all__ = [
    "ACCOUNT_STATUSES",
    "Account",
    "AccountReader",
    "AccountState",
    "AccountStatus",
    "AppPassword",
    "AppPasswordStore",
    "BlobFiles",
    "BlobReader",
    "BlobRow",
    "EmailToken",
    "EventLog",
    "EventRow",
    "MakeEvent",
    "Preference",
    "PreferenceStore",
    "RecordIndex",
    "RecordRow",
    "RefreshToken",
    "RepoHead",
    "RepoReader",
    "RepoTransaction",
    "Rotation",
    "SeqFloor",
    "SequencedEvent",
    "Store",
    "TokenStore",
    "in_namespace",
]

AccountStatus = Literal["active", "takendown", "suspended", "deactivated", "deleted"]
#: Every value ``Account.status`` may hold (accounts.md §9; ``deleted`` for a
#: host that keeps the row for a while before purging it).
ACCOUNT_STATUSES: Final[frozenset[str]] = frozenset(
    {"active", "takendown", "suspended", "deactivated", "deleted"}
)

#: The events a log holds: ``#info`` is never sequenced, so it is not one of them.
SequencedEvent = CommitEvent | SyncEvent | IdentityEvent | AccountEvent
#: Builds an event from the seq and time the log allocated (``CommitResult.to_event`` is one).
MakeEvent = Callable[[int, str], SequencedEvent]


# --- rows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoHead:
    """Where a repository stands: its commit CID and that commit's rev."""

    cid: CID
    rev: str


@dataclass(frozen=True, slots=True)
class Account:
    """One hosted account.

    ``handle`` is unique without regard to case and ``email`` (optional) too.
    ``password_hash`` and ``signing_key`` are opaque to the store: the host
    chooses the hash format and the key encoding (and may encrypt the key).
    ``head`` and ``rev`` are None until the repository's first commit.
    """

    did: str
    handle: str
    email: str | None
    password_hash: str | None
    status: AccountStatus
    signing_key: bytes
    head: CID | None
    rev: str | None
    created_ms: int

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def repo_head(self) -> RepoHead | None:
        if self.head is None or self.rev is None:
            return None
        return RepoHead(self.head, self.rev)


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account's lifecycle columns beside its effective ``status`` (accounts.md §6, §8).

    ``takedown_ref`` is the operator's reference of a takedown in force (None
    when there is none), ``deactivated_ms`` when the owner deactivated it
    (None when active) and ``delete_after_ms`` the owner's ``deleteAfter``
    hint. ``status`` is what they add up to, a takedown winning.
    """

    did: str
    status: AccountStatus
    takedown_ref: str | None
    deactivated_ms: int | None
    delete_after_ms: int | None

    @property
    def taken_down(self) -> bool:
        return self.takedown_ref is not None or self.status == "takendown"

    @property
    def deactivated(self) -> bool:
        return self.deactivated_ms is not None or self.status == "deactivated"


@dataclass(frozen=True, slots=True)
class EmailToken:
    """A one-time token of an account for a ``purpose`` (``delete_account``), as the reference mails them."""

    did: str
    purpose: str
    token: str
    requested_ms: int


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One entry of the record index: the path's current CID and the rev that wrote it."""

    did: str
    collection: str
    rkey: str
    cid: CID
    rev: str

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A refresh-token row: ``next_id`` is set once the token has been rotated."""

    id: str
    did: str
    expires_ms: int
    next_id: str | None = None
    #: The name of the app password this session logged in with (None: the account password).
    #: Rotation passes it on; revoking the app password deletes its tokens.
    app_password: str | None = None


@dataclass(frozen=True, slots=True)
class SeqFloor:
    """What raising the event log's seq floor found and left: the next seq, before and after."""

    old_next: int
    new_next: int

    @property
    def changed(self) -> bool:
        return self.new_next != self.old_next


@dataclass(frozen=True, slots=True)
class AppPassword:
    """An app password's row: the hash only (the password is shown once, at creation)."""

    did: str
    name: str
    password_hash: str
    privileged: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``TokenStore.rotate_refresh_token`` found and did.

    ``presented`` is the presented token's row as stored before the call.
    ``reused`` is True when it had already been rotated: then nothing changed
    and ``successor`` is the token it was rotated to (None if that one has
    since been revoked or pruned). The host's rule (accounts.md §3):

    * ``presented.expires_ms <= now``: refuse (``ExpiredToken``); if also
      ``reused``, a rotated token came back after its grace period, the mark
      of a stolen token: revoke the chain (``revoke_refresh_chain``);
    * ``reused`` within the grace period: answer with the same ``successor``;
    * otherwise the rotation just happened: issue ``successor``.
    """

    presented: RefreshToken
    successor: RefreshToken | None
    reused: bool


@dataclass(frozen=True, slots=True)
class BlobRow:
    """A blob an account uploaded: ``temporary`` until a record references it."""

    did: str
    cid: CID
    mime: str
    size: int
    created_ms: int
    temporary: bool


@dataclass(frozen=True, slots=True)
class Preference:
    """One private preference of an account (``app.bsky.actor.putPreferences``).

    ``name`` is the preference's ``$type`` (``app.bsky.actor.defs#adultContentPref``),
    kept beside the value so that a namespace's preferences can be replaced
    without touching another's; ``value`` is the whole preference as JSON text,
    opaque to the store (the host encodes and decodes it).
    """

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event of the log: ``frame`` is the whole firehose frame, encoded once at append."""

    seq: int
    did: str
    type: str
    time_ms: int
    frame: bytes


# --- protocols ---------------------------------------------------------------------------


class RepoReader(Protocol):
    """Repository blocks and heads."""

    def repo_blocks(self, did: str) -> BlockSource:
        """A ``BlockSource`` over the DID's blocks (empty for an unknown DID).

        ``Repo.open(store.repo_blocks(did), head.cid)`` opens the repository;
        ``Repo.export_blocks()`` then streams a full export in pre-order.
        """
        ...

    def repo_head(self, did: str) -> RepoHead | None: ...

    def get_blocks(self, did: str, cids: Iterable[CID]) -> dict[CID, bytes]:
        """The blocks of ``cids`` that the DID's repository holds (``sync.getBlocks``)."""
        ...

    def blocks_since(self, did: str, since: str | None) -> Iterator[tuple[CID, bytes]]:
        """Blocks written by commits with rev > ``since`` (all when None): ``getRepo?since=``.

        Consume the iterator on the thread that asked for it.
        """
        ...


class RecordIndex(Protocol):
    """(did, collection, rkey) -> CID, kept by ``apply_commit`` from each commit's ops."""

    def get_record(self, did: str, collection: str, rkey: str) -> RecordRow | None: ...

    def list_records(
        self, did: str, collection: str, *, cursor: str | None = None, limit: int = 50, reverse: bool = False
    ) -> list[RecordRow]:
        """One page of a collection, as ``repo.listRecords`` orders it.

        Newest first, that is rkey descending, with rkeys strictly below
        ``cursor``; ``reverse=True`` gives rkey ascending, strictly above
        ``cursor``. (The core's ``MST.list`` uses ``reverse`` the other way
        round: it follows the tree, this follows the XRPC parameter.)
        """
        ...

    def list_collections(self, did: str) -> list[str]:
        """Every collection holding a record, sorted (``describeRepo``)."""
        ...


class AccountReader(Protocol):
    def get_account(self, did: str) -> Account | None: ...

    def get_account_by_handle(self, handle: str) -> Account | None:
        """Case-insensitive, as handles are."""
        ...

    def get_account_by_email(self, email: str) -> Account | None:
        """Case-insensitive."""
        ...

    def list_accounts(self, *, after: tuple[int, str] | None = None, limit: int = 500) -> list[Account]:
        """Accounts by (created_ms, did), those after ``after`` (``sync.listRepos`` order)."""
        ...

    def count_accounts(self) -> dict[str, int]:
        """How many accounts hold each status, statuses with none left out (status pages).

        One aggregate query instead of paging every row through ``list_accounts``.
        """
        ...

    def get_account_state(self, did: str) -> AccountState | None:
        """The account's takedown and deactivation columns (None for an unknown DID)."""
        ...


class TokenStore(Protocol):
    """Refresh tokens and their rotation chain (accounts.md §3)."""

    def get_refresh_token(self, token_id: str) -> RefreshToken | None: ...

    def create_refresh_token(self, token: RefreshToken) -> None:
        """*Writer.* Store a new token (a login); ``token.next_id`` must be None."""
        ...

    def rotate_refresh_token(
        self, token_id: str, next_id: str, *, now_ms: int, next_expires_ms: int, grace_ms: int
    ) -> Rotation | None:
        """*Writer.* Rotate a token once; None when it is unknown (revoked, pruned).

        If the token is unrotated and unexpired at ``now_ms``: store
        ``next_id`` as its successor (expiring at ``next_expires_ms``) and cut
        its own expiry to ``min(expires, now + grace)``. Otherwise change
        nothing. See :class:`Rotation` for how to read the answer.
        """
        ...

    def revoke_refresh_chain(self, token_id: str) -> int:
        """*Writer.* Delete the token, its successors and its predecessors; return how many."""
        ...

    def revoke_refresh_tokens(self, did: str) -> int:
        """*Writer.* Delete every token of the DID (password change, takedown)."""
        ...

    def delete_refresh_token(self, token_id: str) -> bool:
        """*Writer.* Delete one token (``deleteSession``)."""
        ...

    def prune_refresh_tokens(self, now_ms: int) -> int:
        """*Writer.* Delete tokens expired at ``now_ms``."""
        ...

    def put_email_token(self, did: str, purpose: str, token: str, now_ms: int) -> EmailToken:
        """*Writer.* Store the account's one token for ``purpose``, replacing an earlier one.

        Raises ``RuntimeError`` for an unknown account. Deleting the account deletes its tokens.
        """
        ...

    def get_email_token(self, did: str, purpose: str) -> EmailToken | None: ...

    def delete_email_token(self, did: str, purpose: str) -> bool:
        """*Writer.* Forget the token once used."""
        ...

    def list_email_tokens(self, purpose: str, *, requested_after_ms: int) -> list[EmailToken]:
        """The tokens for ``purpose`` requested after ``requested_after_ms``, oldest first.

        We send no mail: an operator reads pending tokens (those still within
        their lifetime) here and hands them to the account holder.
        """
        ...


class AppPasswordStore(Protocol):
    """App passwords (accounts.md §4): ``(did, name)`` is unique."""

    def list_app_passwords(self, did: str) -> list[AppPassword]:
        """The account's app passwords, newest first."""
        ...

    def get_app_password(self, did: str, name: str) -> AppPassword | None: ...

    def create_app_password(self, password: AppPassword) -> None:
        """*Writer.* Store a new one; ``InvalidRequest`` (path ``name``) if the name is taken."""
        ...

    def revoke_app_password(self, did: str, name: str) -> tuple[bool, int]:
        """*Writer.* Delete it and the refresh tokens issued under it, in one transaction.

        Returns (whether it existed, how many refresh tokens went).
        """
        ...


class BlobReader(Protocol):
    """Blob metadata; the bytes are in ``Store.blob_files``."""

    def get_blob(self, did: str, cid: CID) -> BlobRow | None: ...

    def list_blobs(
        self, did: str, *, since: str | None = None, cursor: str | None = None, limit: int = 500
    ) -> list[CID]:
        """Distinct blobs referenced by current records, by CID string, after ``cursor`` (``listBlobs``).

        ``since``: only blobs of records written by a commit with rev > ``since``.
        """
        ...

    def blob_records(self, did: str, cid: CID) -> list[str]:
        """Paths of the records referencing the blob, sorted."""
        ...

    def list_missing_blobs(
        self, did: str, *, cursor: str | None = None, limit: int = 500
    ) -> list[tuple[CID, str]]:
        """(blob, record path) for referenced blobs never uploaded (``listMissingBlobs``)."""
        ...

    def prune_temporary_blobs(self, before_ms: int) -> int:
        """*Writer.* Forget unreferenced uploads created before ``before_ms``; delete orphaned files."""
        ...

    def blob_takedown(self, did: str, cid: CID) -> str | None:
        """The takedown reference of the account's blob (None: not taken down, or no such blob)."""
        ...

    def set_blob_takedown(self, did: str, cid: CID, ref: str | None) -> bool:
        """*Writer.* Take the account's blob down (``ref``) or restore it (None); False for no such blob."""
        ...


def in_namespace(name: str, namespace: str) -> bool:
    """``name`` (a ``$type``) is ``namespace`` or below it: ``app.bsky`` holds ``app.bsky.actor.defs#x``.

    Compared by NSID segments, so ``app.bskyx.y`` is not in ``app.bsky``.
    """
    nsid = name.split("#", 1)[0]
    return nsid == namespace or nsid.startswith(namespace + ".")


class PreferenceStore(Protocol):
    """Private per-account preferences, kept by the host (the reference's ``account_pref``).

    They are not repository data: no commit, no event. Deleting the account
    deletes them.
    """

    def get_preferences(self, did: str, namespace: str) -> list[Preference]:
        """The account's preferences whose ``name`` is in ``namespace``, in the order they were put."""
        ...

    def put_preferences(self, did: str, namespace: str, prefs: Sequence[Preference]) -> None:
        """*Writer.* Replace every preference of the account in ``namespace`` with ``prefs``.

        Preferences of other namespaces are kept. Raises ``ValueError`` when one
        of ``prefs`` is not in ``namespace`` (the reference refuses those) and
        ``RuntimeError`` for an unknown account.
        """
        ...


class EventLog(Protocol):
    """The host's sequenced firehose events."""

    def head_seq(self) -> int:
        """The last seq ever allocated by a committed transaction (0 for none): never goes back."""
        ...

    def oldest_seq(self) -> int | None:
        """The first seq still stored (None when the log is empty)."""
        ...

    def read_events(self, after: int, limit: int) -> list[EventRow]:
        """Events with seq > ``after``, in seq order, at most ``limit``."""
        ...

    def prune_events(self, before_ms: int) -> int:
        """*Writer.* Delete events older than ``before_ms`` (times never decrease along the log)."""
        ...


class RepoTransaction(Protocol):
    """Every change to one account and its repository, committed together or not at all.

    Reads through the transaction (``account``, ``head``, ``blocks``) see the
    locked, current state including this transaction's own writes. The
    object is dead once its ``with`` block ends.
    """

    @property
    def did(self) -> str: ...

    @property
    def blocks(self) -> BlockSource:
        """The repository's blocks as this transaction sees them (committed ones once it is over)."""
        ...

    @property
    def events(self) -> Sequence[EventRow]:
        """The events appended so far, to hand to fan-out once the transaction has committed."""
        ...

    def account(self) -> Account | None: ...

    def head(self) -> RepoHead | None: ...

    def open_repo(self) -> Repo:
        """The repository at its locked head (raises ``RuntimeError`` without a first commit)."""
        ...

    def create_account(
        self,
        *,
        handle: str,
        signing_key: bytes,
        email: str | None = None,
        password_hash: str | None = None,
        status: AccountStatus = "active",
    ) -> Account:
        """Create the account row (raises ``InvalidRequest`` if the handle or email is taken)."""
        ...

    def set_handle(self, handle: str) -> None:
        """Raises ``InvalidRequest`` when another account holds the handle (in any case)."""
        ...

    def set_email(self, email: str | None) -> None: ...

    def set_password_hash(self, password_hash: str | None) -> None: ...

    def set_status(self, status: AccountStatus) -> None: ...

    def set_takedown(self, ref: str | None, *, now_ms: int) -> AccountStatus:
        """Apply a takedown with ``ref`` (None: reverse it); return the new effective status.

        Reversing leaves the account deactivated if its owner had deactivated it.
        """
        ...

    def set_deactivated(
        self, deactivated: bool, *, now_ms: int, delete_after_ms: int | None = None
    ) -> AccountStatus:
        """Deactivate (keeping the first deactivation time) or reactivate; return the new effective status.

        A takedown in force stays in force either way.
        """
        ...

    def apply_commit(
        self, result: CommitResult, *, blob_refs: Mapping[str, Iterable[CID]] | None = None
    ) -> None:
        """Store a commit built on the locked head.

        ``result.since`` must be the stored rev (None for the first commit),
        else ``OutOfSync``. Writes ``result.blocks`` tagged with the new rev
        (a block already stored keeps its rev), updates the record index from
        ``result.ops`` and the head, then deletes the ``result.removed``
        blocks except record blocks still indexed at another path (identical
        records share a block). ``blob_refs`` maps the path of a created or
        updated record to the blobs it references: they stop being temporary;
        a blob whose last reference goes is deleted (its file once no account
        holds it).
        """
        ...

    def append_event(self, make: MakeEvent) -> EventRow:
        """Allocate the next seq and time, build the event with them, encode its frame once, store it."""
        ...

    def stage_blocks(self, blocks: Iterable[tuple[bytes, bytes]]) -> BlockSource:
        """Hold blocks (binary CID, bytes) aside, on disk, for this transaction only (an import's CAR).

        What the staged source serves never reaches the repository by itself:
        :meth:`replace_repo` stores the blocks the caller found reachable.
        Memory stays bounded whatever the CAR's size.
        """
        ...

    def replace_repo(
        self,
        commit: CID,
        rev: str,
        blocks: Iterable[tuple[CID, bytes]],
        records: Iterable[tuple[str, CID, Sequence[str]]],
    ) -> int:
        """Replace the repository wholesale (an import): blocks, record index, blob refs, head.

        ``records`` are (path, record CID, blob CIDs the record names). Blobs
        no record names any more become temporary (collected after the grace
        period). Appends no event. Returns how many blocks were stored.
        """
        ...

    def add_blob(self, cid: CID, mime: str, size: int) -> BlobRow:
        """Record an upload whose bytes ``BlobFiles.write`` already stored (temporary until referenced).

        Uploading an existing blob again changes nothing. Raises
        ``MissingBlock`` when the file is not on disk.
        """
        ...

    def delete_account(self) -> None:
        """Delete the account and all it owns, and every event of its DID so far.

        Append the ``#account {active: false, status: deleted}`` event after
        this call, so that it stays in the log.
        """
        ...


class Store(
    RepoReader,
    RecordIndex,
    AccountReader,
    TokenStore,
    AppPasswordStore,
    BlobReader,
    PreferenceStore,
    EventLog,
    Protocol,
):
    """A whole host store."""

    @property
    def blob_files(self) -> BlobFiles: ...

    def transaction(self, did: str) -> AbstractContextManager[RepoTransaction]:
        """*Writer.* Lock one repository; commit on normal exit, roll back on an exception."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Pin this thread's reads to one consistent state for the ``with`` block.

        For reads that must agree across calls while writers go on (a head
        and the export of its blocks). Keep it short: SQLite cannot
        checkpoint its log past an open snapshot. (PostgreSQL: a
        ``REPEATABLE READ`` transaction on this thread's connection.)
        """
        ...

    def close(self) -> None: ...


# --- blob files ---------------------------------------------------------------------------


class BlobFiles:
    """Blob bytes on disk, content-addressed: ``<root>/<last 2 chars of CID>/<CID>``.

    A write streams into a temporary file under ``<root>/tmp`` while hashing,
    fsyncs it, renames it to its CID's name and fsyncs the directory: after
    ``write`` returns the file survives a power loss, and a reader never sees
    a partial file. Writing bytes that are already stored changes nothing.
    Safe from any thread; files are shared by every account holding the blob.
    """

    __slots__ = ("_tmp", "root")

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # half-written uploads of a process that died
            leftover.unlink(missing_ok=True)

    def path(self, cid: CID) -> Path:
        name = str(cid)
        return self.root / name[-2:] / name

    def exists(self, cid: CID) -> bool:
        return self.path(cid).is_file()

    def write(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> tuple[CID, int]:
        """Store the concatenated chunks; return their raw CID and size.

        Raises ``ValueError`` (and keeps nothing) past ``max_bytes``: the
        caller turns that into its own limit error with the limit's name.
        """
        digest = hashlib.sha256()
        size = 0
        tmp = self._tmp / secrets.token_hex(16)
        try:
            with open(tmp, "xb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ValueError(f"blob larger than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            cid = CID(b"\x01\x55\x12\x20" + digest.digest())
            final = self.path(cid)
            if final.is_file():
                tmp.unlink()
                return cid, size
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return cid, size

    def read(self, cid: CID) -> bytes | None:
        try:
            return self.path(cid).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, cid: CID) -> None:
        self.path(cid).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
