"""The repository API: ``com.atproto.repo.*`` (repo-api.md §2-§9).

Writes (``createRecord``, ``putRecord``, ``deleteRecord``, ``applyWrites``)
need a session whose DID is the ``repo`` named in the body (a DID or a local
handle). Each parses its body, runs :meth:`RepoWriter.prepare` on the event
loop (pure: lexicon and data-model checks, CBOR encoding), then
:meth:`RepoWriter.commit` on the store's writer thread, where the whole
change is one transaction; once it has committed, the firehose is woken with
the new event (:meth:`HostContext.notify_soon`, right after the reply is
sent). Reads (``getRecord``, ``listRecords``, ``describeRepo``) are public and
answer from the record index and the stored record blocks.
``uploadBlob`` streams the body to disk under a size limit and records a
temporary blob of the account; a record that references it makes it permanent
(:mod:`atrepo.host.writes` and the store do that). ``listMissingBlobs`` lists
the caller's referenced blobs that were never uploaded (after a migration).

Reference behaviour kept (``@atproto/pds`` ``api/com/atproto/repo/*.ts``):

* a ``repo`` that is another account's: 401 ``AuthenticationRequired``
  "Authentication Required" (``AuthRequiredError()``);
* ``swapCommit``/``swapRecord`` mismatch: 400 ``InvalidSwap``;
* ``getRecord`` of a missing record or of another version (``cid``): 400
  ``RecordNotFound`` "Could not locate record: <uri>";
* ``listRecords``: rkey descending by default, ``reverse`` ascending; the
  cursor is the last record's rkey whenever the page is not empty;
* ``describeRepo``: ``assertRepoAvailability`` errors ("Could not find repo for
  DID: X", ``RepoTakendown``, ``RepoDeactivated``); ``handleIsCorrect`` is the
  DID document's handle equal to the account's;
* ``uploadBlob``: the type sniffed from the bytes wins over the header;
* writes and ``uploadBlob`` by a taken-down account: 401 ``AccountTakedown``;
  writes by a deactivated one: 401 ``AccountDeactivated`` (accounts.md §9), while
  its uploads go on, as the reference allows (a migration uploads blobs before
  activating).

Deliberate differences: an unknown ``repo`` is ``RepoNotFound`` (the same 400
and message, where the reference says ``InvalidRequest``), and reads of a
taken-down or deactivated repository name that state instead of pretending
the repository does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from atrepo.core import cbor, limits
from atrepo.core.cid import CID
from atrepo.core.errors import (
    AccountTakedown,
    AtrepoError,
    AuthRequired,
    InvalidRequest,
    PayloadTooLarge,
    RecordNotFound,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    XrpcError,
)
from atrepo.core.syntax import normalize_handle
from atrepo.identity.did import did_method, did_web_url
from atrepo.identity.document import parse_did_document_bytes
from atrepo.identity.fetch import get_bounded
from atrepo.identity.limits import MAX_DID_DOCUMENT_BYTES
from atrepo.store import Account, SQLiteStore
from atrepo.store.base import BlobRow
from atrepo.xrpc import RawBody, XrpcContext, XrpcRouter

from .auth import AccessCredentials
from .config import REPO_WRITE_RULE
from .writes import (
    UNCHECKED,
    CreateOp,
    DeleteOp,
    RepoWriter,
    SwapRecord,
    UpdateOp,
    WriteOp,
    WriteOutcome,
    ops_from_apply_writes,
)

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["BLOB_UPLOAD_LIMIT", "WRITE_JSON_LIMIT", "WRITE_POINTS", "register", "sniff_mime", "write_points"]

log = logging.getLogger("atrepo.host.repo_api")

#: JSON bodies of the write methods: the reference raises its 150 KiB default to this for them.
WRITE_JSON_LIMIT: Final = 1_000_000
#: Writes of at most this many ops may commit on the event loop when the writer is idle
#: (``StoreWorker.run_short``): a millisecond or two; bigger batches always go to the writer thread.
INLINE_MAX_OPS: Final = 10
#: Largest blob ``uploadBlob`` accepts (the reference's default ``blobUploadLimit``, 5 MiB).
BLOB_UPLOAD_LIMIT: Final = 5 * 1024 * 1024
#: Bytes of an upload kept for type sniffing (magic numbers and the plain-text check).
SNIFF_BYTES: Final = 512
#: How long the thread writing an upload waits for the next chunk before giving up.
UPLOAD_IDLE_TIMEOUT_S: Final = 120.0

_OCTET_STREAM: Final = "application/octet-stream"

#: Threads that write uploads to disk. Each waits on its client's network between chunks,
#: so uploads get their own pool: slow uploaders must not starve the default executor
#: (password hashing runs there). One per process; threads start only when needed.
UPLOAD_THREADS: Final = 16
_UPLOADS: Final = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="atrepo-upload")


# --- resolving the repo parameter --------------------------------------------------------------


def _find_account(store: SQLiteStore, repo: str) -> Account | None:
    """The local account named by a DID or a handle (handles without regard to case)."""
    if repo.startswith("did:"):
        return store.get_account(repo)
    try:
        handle = normalize_handle(repo)
    except AtrepoError:
        return None
    return store.get_account_by_handle(handle)


async def _writable_repo(host: HostContext, repo: str, creds: AccessCredentials) -> Account:
    """The account a write names, which must be the caller's own (the reference's order of checks)."""
    account = await host.worker.read(_find_account, repo)
    if account is None or account.status == "deleted":
        raise RepoNotFound(f"Could not find repo: {repo}")
    if account.did != creds.did:
        raise AuthRequired("Authentication Required")
    _check_writer(account)
    return account


def _check_writer(account: Account) -> None:
    """An inactive account's session may not write (reference ``authorization`` checks: 401)."""
    if account.status in ("takendown", "suspended"):
        raise AccountTakedown("Account has been taken down")
    if account.status == "deactivated":
        raise XrpcError("AccountDeactivated", "Account is deactivated", 401)


async def _readable_repo(host: HostContext, repo: str, *, not_found: str) -> Account:
    """The account a read names, if its repository is available (reference ``assertRepoAvailability``)."""
    account = await host.worker.read(_find_account, repo)
    if account is None or account.status == "deleted":
        raise RepoNotFound(not_found)
    if account.status == "takendown":
        raise RepoTakendown(f"Repo has been takendown: {repo}")
    if account.status == "suspended":
        raise RepoSuspended(f"Repo has been suspended: {repo}")
    if account.status == "deactivated":
        raise RepoDeactivated(f"Repo has been deactivated: {repo}")
    return account


def _swap_commit(body: dict[str, Any]) -> CID | None:
    value = body.get("swapCommit")
    return CID.coerce(value) if value is not None else None


def _swap_record(body: dict[str, Any]) -> SwapRecord:
    """Absent: nothing checked; ``null``: the record must not exist; a CID: it must be that record."""
    if "swapRecord" not in body:
        return UNCHECKED
    value = body["swapRecord"]
    return CID.coerce(value) if value is not None else None


# --- reads ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    uri: str
    cid: CID
    value: Any


def _decode_record(data: bytes | None, cid: CID) -> Any:
    if data is None:  # the index names a block the repository lacks: a broken store, not the client
        raise RuntimeError(f"record block {cid} is missing from the store")
    return cbor.decode(data, max_bytes=limits.MAX_RECORD_BYTES)


def _get_record(store: SQLiteStore, did: str, collection: str, rkey: str) -> _Record | None:
    """The current record at the path, index and block read from one snapshot."""
    with store.snapshot():
        row = store.get_record(did, collection, rkey)
        if row is None:
            return None
        data = store.get_blocks(did, [row.cid]).get(row.cid)
    return _Record(row.uri, row.cid, _decode_record(data, row.cid))


def _list_records(
    store: SQLiteStore, did: str, collection: str, cursor: str | None, limit: int, reverse: bool
) -> list[_Record]:
    """One page of records with their values; one snapshot, so a concurrent delete cannot split it."""
    with store.snapshot():
        rows = store.list_records(did, collection, cursor=cursor, limit=limit, reverse=reverse)
        blocks = store.get_blocks(did, {row.cid for row in rows}) if rows else {}
    return [_Record(row.uri, row.cid, _decode_record(blocks.get(row.cid), row.cid)) for row in rows]


async def _did_document(host: HostContext, did: str) -> dict[str, Any]:
    """The account's DID document, fetched fresh (describeRepo is rare; a cache would need closing)."""
    url = f"{host.plc_url}/{did}" if did_method(did) == "plc" else did_web_url(did)
    try:
        status, body = await get_bounded(
            host.http,
            url,
            max_bytes=MAX_DID_DOCUMENT_BYTES,
            timeout=10.0,
            headers={"Accept": "application/did+ld+json,application/json"},
        )
        if status != 200:
            raise InvalidRequest(f"HTTP {status} from {url}")
        return dict(parse_did_document_bytes(body, did).doc)
    except AtrepoError as exc:
        raise InvalidRequest(f"Could not resolve DID: {exc}") from None


# --- blobs ----------------------------------------------------------------------------------------

#: (offset, magic, MIME type): the types clients upload most, as the reference's ``file-type`` names them.
_MAGIC: Final[tuple[tuple[int, bytes, str], ...]] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),
    (0, b"BM", "image/bmp"),
)
#: ISO base media brands (bytes 8-12 after ``ftyp``) that are not plain MP4 video.
_FTYP_BRANDS: Final = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
}


def _magic(head: bytes) -> str | None:
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    for offset, magic, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if mime == "image/bmp" and len(head) < 26:  # "BM" alone is too common in text
                continue
            return mime
    return None


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without control characters other than tab, newline, carriage return and form feed."""
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sniff window is still text
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return False
        text = head[: exc.start].decode("utf-8")
    return all((ch >= " " and ch != "\x7f") or ch in "\t\n\r\f" for ch in text)


def sniff_mime(head: bytes, declared: str | None) -> str:
    """The MIME type of an upload from its first bytes, else the client's ``Content-Type``.

    Magic numbers win, as the reference (``mimeTypeFromStream``): a PNG sent as
    ``image/jpeg`` is a PNG. Then a specific declared type (``application/json``
    knows more than "text"). The MarshalX SDK declares ``*/*``: then UTF-8
    text is ``text/plain`` and anything else ``application/octet-stream``.
    """
    found = _magic(head)
    if found is not None:
        return found
    if declared and declared != "*/*" and "*" not in declared:
        return declared
    return "text/plain" if _looks_like_text(head) else _OCTET_STREAM


def _store_upload(store: SQLiteStore, did: str, chunks: Iterator[bytes]) -> tuple[CID, int]:
    """Write the upload's bytes (content-addressed, fsynced) off the event loop."""
    try:
        return store.blob_files.write(chunks, max_bytes=BLOB_UPLOAD_LIMIT)
    except ValueError:
        raise PayloadTooLarge(f"request entity too large: more than {BLOB_UPLOAD_LIMIT} bytes") from None


def _record_blob(store: SQLiteStore, did: str, cid: CID, mime: str, size: int) -> BlobRow:
    with store.transaction(did) as tx:
        return tx.add_blob(cid, mime, size)


class _Pull:
    """The async body as a blocking iterator for a worker thread, keeping the first bytes to sniff.

    The thread asks the event loop for each chunk in turn, so at most one
    chunk is in memory whatever the upload's size.
    """

    def __init__(self, body: RawBody, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks: AsyncIterator[bytes] = body.chunks()
        self._loop = loop
        self.head = b""

    async def _next(self) -> bytes | None:
        return await anext(self._chunks, None)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
            try:
                chunk = future.result(timeout=UPLOAD_IDLE_TIMEOUT_S)
            except TimeoutError:
                future.cancel()
                raise InvalidRequest("upload stalled: no data received", rule="body") from None
            if chunk is None:
                return
            if len(self.head) < SNIFF_BYTES:
                self.head += chunk[: SNIFF_BYTES - len(self.head)]
            yield chunk


# --- handlers -------------------------------------------------------------------------------------


#: Rate-limit points of each kind of write (the reference's: a create costs most, a delete least).
WRITE_POINTS: Final = {"create": 3, "update": 2, "delete": 1}


def write_points(ctx: XrpcContext) -> int:
    """The points a write call costs: by method, or for ``applyWrites`` the sum over its writes.

    Counted from the body as sent, before the writes are parsed (as the
    reference): an ``applyWrites`` refused as invalid has still been charged.
    """
    nsid = ctx.nsid
    if nsid == "com.atproto.repo.createRecord":
        return WRITE_POINTS["create"]
    if nsid == "com.atproto.repo.putRecord":
        return WRITE_POINTS["update"]
    if nsid == "com.atproto.repo.deleteRecord":
        return WRITE_POINTS["delete"]
    total = 0
    for op in ctx.input.get("writes") or ():
        kind = op.get("$type", "") if isinstance(op, dict) else ""
        total += WRITE_POINTS.get(kind.rsplit("#", 1)[-1], 1) if isinstance(kind, str) else 1
    return total


def _write_reply(outcome: WriteOutcome) -> dict[str, Any]:
    """``createRecord``/``putRecord`` output: ``uri``, ``cid``, ``commit`` (if one was made), status."""
    out = outcome.results[0].to_json()
    if outcome.commit is not None:
        out["commit"] = outcome.commit.to_json()
    return out


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare the ``com.atproto.repo.*`` methods on ``router``, bound to ``host``."""
    writer = RepoWriter(host.registry)
    verify = host.tokens.verify_access

    async def write(
        ctx: XrpcContext, ops: list[WriteOp], *, validate: bool | None, swap_commit: CID | None
    ) -> WriteOutcome:
        creds: AccessCredentials = ctx.auth
        # Write points per account, refused before anything is prepared or committed.
        host.rate_limits.charge(ctx.request, REPO_WRITE_RULE, creds.did, write_points(ctx))
        repo: str = ctx.input["repo"]
        # Clients mostly name their own DID: then the account is read on the writer thread,
        # with the commit, instead of costing a reader-thread round trip first.
        did = creds.did if repo == creds.did else (await _writable_repo(host, repo, creds)).did
        batch = writer.prepare(did, ops, validate=validate)

        def commit(store: SQLiteStore) -> WriteOutcome:
            return writer.commit(store, host.signing_key, batch, swap_commit=swap_commit)

        # A few records: on the event loop when the writer is idle (one small commit, about a millisecond).
        run = host.worker.run_short if len(batch.ops) <= INLINE_MAX_OPS else host.worker.run
        try:
            outcome = await run(commit)
        except RepoDeactivated:  # the writer's check of the caller's own account (accounts.md §9)
            raise XrpcError("AccountDeactivated", "Account is deactivated", 401) from None
        if outcome.seq is not None:  # counted and fanned out right after the reply goes out
            host.notify_soon(outcome.seq, events=(outcome.event,) if outcome.event else ())
        return outcome

    @router.procedure("com.atproto.repo.createRecord", auth=verify, json_limit=WRITE_JSON_LIMIT)
    async def create_record(ctx: XrpcContext) -> dict[str, Any]:
        body = ctx.input
        op = CreateOp(body["collection"], body.get("rkey"), body["record"], replace_duplicates=True)
        outcome = await write(ctx, [op], validate=body.get("validate"), swap_commit=_swap_commit(body))
        return _write_reply(outcome)

    @router.procedure("com.atproto.repo.putRecord", auth=verify, json_limit=WRITE_JSON_LIMIT)
    async def put_record(ctx: XrpcContext) -> dict[str, Any]:
        body = ctx.input
        op = UpdateOp(body["collection"], body["rkey"], body["record"], _swap_record(body))
        outcome = await write(ctx, [op], validate=body.get("validate"), swap_commit=_swap_commit(body))
        return _write_reply(outcome)

    @router.procedure("com.atproto.repo.deleteRecord", auth=verify, json_limit=WRITE_JSON_LIMIT)
    async def delete_record(ctx: XrpcContext) -> dict[str, Any]:
        body = ctx.input
        op = DeleteOp(body["collection"], body["rkey"], _swap_record(body))
        outcome = await write(ctx, [op], validate=None, swap_commit=_swap_commit(body))
        return {"commit": outcome.commit.to_json()} if outcome.commit is not None else {}

    @router.procedure("com.atproto.repo.applyWrites", auth=verify, json_limit=WRITE_JSON_LIMIT)
    async def apply_writes(ctx: XrpcContext) -> dict[str, Any]:
        body = ctx.input
        ops = ops_from_apply_writes(body["writes"])
        outcome = await write(ctx, ops, validate=body.get("validate"), swap_commit=_swap_commit(body))
        out: dict[str, Any] = {"results": [r.to_apply_writes_result() for r in outcome.results]}
        if outcome.commit is not None:
            out["commit"] = outcome.commit.to_json()
        return out

    @router.query("com.atproto.repo.getRecord")
    async def get_record(ctx: XrpcContext) -> dict[str, Any]:
        params = ctx.params
        repo = params["repo"]
        account = await _readable_repo(host, repo, not_found=f"Could not find repo: {repo}")
        collection, rkey = params["collection"], params["rkey"]
        found = await host.worker.read(_get_record, account.did, collection, rkey)
        wanted = params.get("cid")
        if found is None or (wanted is not None and CID.coerce(wanted) != found.cid):
            raise RecordNotFound(f"Could not locate record: at://{account.did}/{collection}/{rkey}")
        return {"uri": found.uri, "cid": str(found.cid), "value": found.value}

    @router.query("com.atproto.repo.listRecords")
    async def list_records(ctx: XrpcContext) -> dict[str, Any]:
        params = ctx.params
        repo = params["repo"]
        account = await _readable_repo(host, repo, not_found=f"Could not find repo: {repo}")
        page = await host.worker.read(
            _list_records,
            account.did,
            params["collection"],
            params.get("cursor"),
            params["limit"],
            bool(params.get("reverse", False)),
        )
        out: dict[str, Any] = {"records": [{"uri": r.uri, "cid": str(r.cid), "value": r.value} for r in page]}
        if page:  # the reference: a cursor whenever the page is not empty
            out["cursor"] = page[-1].uri.rsplit("/", 1)[1]
        return out

    @router.query("com.atproto.repo.describeRepo")
    async def describe_repo(ctx: XrpcContext) -> dict[str, Any]:
        repo = ctx.params["repo"]
        account = await _readable_repo(host, repo, not_found=f"Could not find repo for DID: {repo}")
        doc = await _did_document(host, account.did)
        claimed = _doc_handle(doc)
        collections = await host.worker.read(SQLiteStore.list_collections, account.did)
        return {
            "handle": account.handle,
            "did": account.did,
            "didDoc": doc,
            "collections": collections,
            "handleIsCorrect": claimed == account.handle.lower(),
        }

    @router.procedure("com.atproto.repo.uploadBlob", auth=verify, raw_limit=BLOB_UPLOAD_LIMIT)
    async def upload_blob(ctx: XrpcContext) -> dict[str, Any]:
        creds: AccessCredentials = ctx.auth
        limits = host.rate_limits
        limits.charge(ctx.request, "com.atproto.repo.uploadBlob", limits.client_ip(ctx.request))
        account = await host.worker.read(SQLiteStore.get_account, creds.did)
        if account is None or account.status == "deleted":
            raise XrpcError("AccountNotFound", "Account not found", 403)
        # only a takedown stops uploads (the reference's accessCheckTakedown): a deactivated account
        # being migrated in uploads its blobs before it is activated
        if account.status in ("takendown", "suspended"):
            raise AccountTakedown("Account has been taken down")
        body = ctx.body
        assert body is not None  # the router always streams a */* body
        loop = asyncio.get_running_loop()
        pull = _Pull(body, loop)
        cid, size = await loop.run_in_executor(_UPLOADS, _store_upload, host.store, account.did, iter(pull))
        mime = sniff_mime(pull.head, body.content_type)
        row = await host.worker.run(_record_blob, account.did, cid, mime, size)
        return {"blob": {"$type": "blob", "ref": row.cid, "mimeType": row.mime, "size": row.size}}

    @router.query("com.atproto.repo.listMissingBlobs", auth=verify)
    async def list_missing_blobs(ctx: XrpcContext) -> dict[str, Any]:
        """Blobs the caller's records reference but that were never uploaded (account migration)."""
        did = ctx.auth.did
        cursor, limit = ctx.params.get("cursor"), ctx.params["limit"]
        missing = await host.worker.read(SQLiteStore.list_missing_blobs, did, cursor=cursor, limit=limit)
        blobs = [{"cid": str(cid), "recordUri": f"at://{did}/{path}"} for cid, path in missing]
        out: dict[str, Any] = {"blobs": blobs}
        if blobs:  # the reference: the last CID whenever the page is not empty
            out["cursor"] = blobs[-1]["cid"]
        return out


def _doc_handle(doc: dict[str, Any]) -> str | None:
    """The handle a DID document claims (its first ``at://`` alias), lower-cased."""
    for alias in doc.get("alsoKnownAs") or ():
        if isinstance(alias, str) and alias.startswith("at://"):
            return alias[len("at://") :].lower()
    return None
