"""Repository sync: ``com.atproto.sync.*`` except ``subscribeRepos`` (served by :mod:`atrepo.firehose`).

Behaviour follows the reference host as ``sync.md`` §2 records it:

* Availability (reference ``assertRepoAvailability``): an unknown or deleted
  account is ``RepoNotFound`` "Could not find repo for DID: <did>"; a
  taken-down, suspended or deactivated one is ``RepoTakendown``,
  ``RepoSuspended`` or ``RepoDeactivated`` for every endpoint that serves repo
  data (``getRepoStatus`` and ``listRepos`` report the status instead). All
  400, as the reference answers them. The owner's session or the admin's
  Basic credentials skip these checks (the reference's ``isUserOrAdmin``:
  an export before migrating); a bad or expired token counts as none.
* ``getRepo``: a full export in the streamable pre-order (commit, root, then
  depth first), or with ``since`` the blocks written by commits with a rev
  after it (root: the current commit). ``getRecord``: commit, the MST path
  of the key and the record; for a missing record the path alone, a proof of
  absence, as the reference does (not ``RecordNotFound``). ``getBlocks``: a CAR
  without roots; a CID the repository lacks fails the call with the
  reference's 400 ``InvalidRequest`` "Could not find cids: a,b" (the lexicon's
  ``BlockNotFound`` is a name no reference host sends).
* ``listRepos``/``listBlobs``: a ``cursor`` only after a full page (the
  reference also sends one after a short last page, costing clients one more
  call; both are correct under the cursor contract). ``listRepos`` cursors are
  the reference's ``<created ms>::<did>``.
* ``getBlob``: only blobs a record references (a temporary upload is not
  served: the reference keeps those in a temporary area), streamed from its
  file with ``Content-Length``, the stored MIME type, ``Content-Disposition``
  and the reference's ``Content-Security-Policy``/``X-Content-Type-Options``.

**Why ``getRepo`` runs on its own threads.** A full export must come from one
consistent state (a commit that lands mid-export deletes the nodes it
replaced), so it runs inside one ``store.snapshot()`` on one thread, walking
the tree, reading its nodes many to a query as the walk reaches them and its
records from one join in key order (:func:`_stored_pre_order`; the store
checked them when they were written; :func:`_stored_pieces` runs the same walk
in C while it can). That thread
hands the CAR to the event loop in chunks through a queue of a few chunks:
when the client reads slowly the thread waits, so memory stays at
``queue_chunks + 2`` chunks whatever the repository's size (see
:class:`CarStreams`). The exports have their own small pool (``EXPORT_THREADS``)
instead of the store worker's readers, so that slow downloads never starve
ordinary reads; a client that stops reading for ``STALL_TIMEOUT_S`` is cut
off, since its open snapshot keeps SQLite from checkpointing its log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from atrepo.core import _native
from atrepo.core.car import encode_car_header, write_car
from atrepo.core.cid import CID
from atrepo.core.codec import decode_raw
from atrepo.core.errors import (
    BlobNotFound,
    InvalidMST,
    InvalidRequest,
    MissingBlock,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
)
from atrepo.core.mst.proof import proof_blocks
from atrepo.core.repo import Repo
from atrepo.core.varint import encode_varint
from atrepo.store import Account, SQLiteStore
from atrepo.store.base import RepoHead, Store
from atrepo.xrpc import RawOutput, XrpcContext, XrpcRouter
from atrepo.xrpc.metrics import Gauge

from .admin import may_see_inactive, owner_or_admin

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["CarStreams", "car_pieces", "check_available", "register"]

log = logging.getLogger("atrepo.host.sync")

CAR: Final = "application/vnd.ipld.car"
#: Concurrent ``getRepo`` exports; more wait for a thread.
EXPORT_THREADS: Final = 4
#: A chunk of CAR handed to the event loop closes at this many bytes or blocks, whichever first.
CHUNK_BYTES: Final = 64 * 1024
CHUNK_BLOCKS: Final = 256
#: Chunks waiting for the client; the export thread waits when they are all full.
QUEUE_CHUNKS: Final = 4
#: How long an export waits for a client that has stopped reading before giving up.
STALL_TIMEOUT_S: Final = 60.0
#: ``getBlob`` reads its file in pieces of this size.
BLOB_CHUNK_BYTES: Final = 256 * 1024
#: ``getBlob``'s security headers (reference ``getBlob``; sync.md §2).
BLOB_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


# --- availability (reference assertRepoAvailability) ------------------------------------------


def check_available(account: Account | None, did: str, *, privileged: bool = False) -> Account:
    """The account if its repository may be served to anyone; else the reference's error.

    ``privileged``: the caller is the owner or the admin (reference ``isUserOrAdmin``), who may
    read an inactive repository (an export before migrating, an operator's copy).
    """
    if account is None or account.status == "deleted":
        raise RepoNotFound(f"Could not find repo for DID: {did}")
    if privileged:
        return account
    if account.status == "takendown":
        raise RepoTakendown(f"Repo has been takendown: {did}")
    if account.status == "suspended":
        raise RepoSuspended(f"Repo has been suspended: {did}")
    if account.status == "deactivated":
        raise RepoDeactivated(f"Repo has been deactivated: {did}")
    return account


def _available_head(store: Store, did: str, privileged: bool = False) -> RepoHead:
    head = check_available(store.get_account(did), did, privileged=privileged).repo_head
    if head is None:  # an account row whose genesis commit is not stored: nothing to serve
        raise RepoNotFound(f"Could not find root for DID: {did}")
    return head


# --- CAR pieces and their streaming -------------------------------------------------------------


def car_pieces(
    roots: Iterable[CID],
    blocks: Iterable[tuple[CID, bytes]],
    *,
    chunk_bytes: int = CHUNK_BYTES,
    chunk_blocks: int = CHUNK_BLOCKS,
) -> Iterator[tuple[bytes, int]]:
    """A CAR v1 as (bytes, blocks in them) chunks: the header first, then at most ``chunk_blocks`` a chunk.

    Pieces, not one buffer: a chunk is handed on as soon as it is full, so
    only one chunk's blocks are held here however many the source yields.
    """
    yield encode_car_header(roots), 0
    parts: list[bytes] = []
    size = count = 0
    for cid, data in blocks:
        raw = cid.raw
        parts += (encode_varint(len(raw) + len(data)), raw, data)
        size += len(raw) + len(data) + 4
        count += 1
        if size >= chunk_bytes or count >= chunk_blocks:
            yield b"".join(parts), count
            parts, size, count = [], 0, 0
    if parts:
        yield b"".join(parts), count


class _Stop(Exception):
    """The consumer went away: the export thread stops at its next hand-off."""


@dataclass(slots=True)
class StreamStats:
    """What one stream held: blocks produced but not yet taken by the client, at most."""

    produced: int = 0
    taken: int = 0
    peak_held: int = 0


_DONE: Final = object()


class CarStreams:
    """Runs CAR exports on their own threads and hands their chunks to the event loop, a few at a time.

    ``open(fn, *args, **kwargs)`` runs ``fn(store, *args, **kwargs)`` on an export thread: a
    generator of (bytes, block count) pieces (see :func:`car_pieces`), which
    typically opens ``store.snapshot()`` and walks a repository. The first
    piece is awaited before ``open`` returns, so an error raised before it
    (``RepoNotFound``) becomes an ordinary XRPC error reply; the rest arrive
    through a queue of ``queue_chunks`` pieces, the thread blocking while it is
    full. ``last_stats`` is the accounting of the most recent stream (tests
    check the bound on it).
    """

    def __init__(
        self,
        store: Store,
        *,
        threads: int = EXPORT_THREADS,
        queue_chunks: int = QUEUE_CHUNKS,
        stall_timeout: float = STALL_TIMEOUT_S,
        in_progress: Gauge | None = None,
    ) -> None:
        self.store = store
        #: Exports running or waiting for a thread (``/metrics``), when given.
        self.in_progress = in_progress
        self.queue_chunks = queue_chunks
        self.stall_timeout = stall_timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="atrepo-sync-export")
        self.last_stats = StreamStats()

    def close(self) -> None:
        """Stop the export threads once their streams end (called after the HTTP server has stopped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def open(
        self, fn: Callable[..., Generator[tuple[bytes, int], None, None]], *args: Any, **kwargs: Any
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_chunks)
        stop = threading.Event()
        stats = self.last_stats = StreamStats()

        def hand(item: Any) -> None:
            """On the export thread: put one item, waiting while the queue is full."""
            if stop.is_set():
                raise _Stop
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            try:
                future.result(self.stall_timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise TimeoutError(f"the client took no data for {self.stall_timeout} s") from None

        def produce() -> None:
            try:
                pieces = fn(self.store, *args, **kwargs)
                try:
                    for piece, count in pieces:
                        stats.produced += count
                        stats.peak_held = max(stats.peak_held, stats.produced - stats.taken)
                        hand((piece, count))
                finally:
                    pieces.close()  # its snapshot ends here, on this thread
                hand(_DONE)
            except _Stop:
                return
            except BaseException as exc:
                with contextlib.suppress(_Stop, TimeoutError, RuntimeError):  # RuntimeError: loop closed
                    hand(exc)

        job = asyncio.wrap_future(self._pool.submit(produce))
        self._count(1)
        try:
            first = await queue.get()
        except BaseException:  # cancelled before the reply started: release the thread
            stop.set()
            while not queue.empty():
                queue.get_nowait()
            self._count(-1)
            raise
        if isinstance(first, BaseException):
            self._count(-1)
            await job
            raise first
        if first is _DONE:  # a producer that yielded nothing: an empty body
            first = (b"", 0)
        return self._drain(first, queue, stop, job, stats)

    async def _drain(
        self,
        first: tuple[bytes, int],
        queue: asyncio.Queue[Any],
        stop: threading.Event,
        job: asyncio.Future[None],
        stats: StreamStats,
    ) -> AsyncIterator[bytes]:
        """The pieces after ``first``; stops the export thread however the consumer leaves."""
        item: Any = first
        try:
            while item is not _DONE:
                if isinstance(item, BaseException):  # after the reply started: all we can do is cut it
                    log.error("export failed mid-stream: %r", item)
                    raise ConnectionAbortedError("export failed mid-stream") from item
                piece, count = item
                stats.taken += count
                yield piece
                item = await queue.get()
        finally:
            stop.set()
            while not queue.empty():  # free a blocked hand-off so the thread sees the flag
                queue.get_nowait()
            self._count(-1)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(job), self.stall_timeout)

    def _count(self, delta: int) -> None:
        if self.in_progress is not None:
            self.in_progress.inc(delta)


# --- exports (on an export thread or a store reader) -------------------------------------------


def export_repo(
    store: Store, did: str, since: str | None, *, chunk_blocks: int = CHUNK_BLOCKS, privileged: bool = False
) -> Generator[tuple[bytes, int], None, None]:
    """``getRepo``: the full export in pre-order, or the blocks after ``since``, from one snapshot."""
    with store.snapshot():
        head = _available_head(store, did, privileged)
        if since is not None:
            yield from car_pieces([head.cid], store.blocks_since(did, since), chunk_blocks=chunk_blocks)
            return
        reader = store.repo_block_reader(did) if isinstance(store, SQLiteStore) else None
        repo = Repo.open(store.repo_blocks(did), head.cid)
        if reader is None or repo.tree.root is None:  # another store, or the empty tree (not stored)
            yield from car_pieces([head.cid], repo.export_blocks(), chunk_blocks=chunk_blocks)
            return
        assert isinstance(store, SQLiteStore)
        if store.read_ahead_nodes:
            reader = _reading_ahead(reader, store.read_ahead_nodes)
        records = store.repo_record_blocks(did)
        yield from _stored_pieces(reader, head.cid, repo.commit.raw, repo.data.raw, records, chunk_blocks)


def _stored_pieces(
    read: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]],
    head: CID,
    commit: bytes,
    root: bytes,
    in_order: Iterator[tuple[bytes, bytes]] | None,
    chunk_blocks: int,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tuple[bytes, int]]:
    """The CAR of :func:`_stored_pre_order` in pieces: the C walker (``_native.export_chunk``)
    while it can, then the same walk in Python from the stack and read-ahead nodes it left.

    The C walker writes the sections of a 100k-record export in about half the time
    (bench/README.md); it hands the walk back at the first record the join does not
    match, or at a node it does not take (Python then reads by CID and names the error).
    """
    native = _native.export_chunk
    if native is None:
        walk = _stored_pre_order(read, head.raw, commit, root, in_order)
        yield from _raw_pieces([head], walk, chunk_blocks, chunk_bytes)
        return
    yield from _raw_pieces([head], [(head.raw, commit)], chunk_blocks, chunk_bytes)
    stack: list[tuple[bytes, bool]] = [(root, True)]
    nodes = dict(read([root]))
    while True:
        piece, count, state = native(stack, nodes, read, in_order, chunk_blocks, chunk_bytes)
        if count:
            yield piece, count
        if state == 0:
            return
        if state == 2:  # handed back: by CID from here on
            yield from _raw_pieces(None, _walk(read, stack, nodes, None), chunk_blocks, chunk_bytes)
            return


#: Record blocks read in one query (and emitted together, in order, after it).
PREFETCH_BLOCKS: Final = 256


def _stored_pre_order(
    read: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]],
    commit_cid: bytes,
    commit: bytes,
    root: bytes,
    in_order: Iterator[tuple[bytes, bytes]] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """``Repo.export_blocks`` over a store's blocks, as (binary CID, data): the same pre-order.

    The store validated every node and record when it was written, so a node
    is only decoded to find its children (the C codec, links as raw bytes).
    A node's child nodes are read together when it is opened (only nodes steer
    the walk). Records come from ``in_order`` (the record blocks in the
    index's (collection, rkey) order, one join) while its CIDs match the
    walk's, which they do unless an NSID extends another; from the first
    mismatch on, or without it, in runs of ``PREFETCH_BLOCKS`` read by CID and
    held back with the nodes between them until their run is read. Memory:
    one run, plus the child nodes along the current path.
    """
    yield commit_cid, commit
    yield from _walk(read, [(root, True)], {}, in_order)


def _walk(
    read: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]],
    stack: list[tuple[bytes, bool]],
    nodes: dict[bytes, bytes],
    in_order: Iterator[tuple[bytes, bytes]] | None,
) -> Iterator[tuple[bytes, bytes]]:
    """The walk of :func:`_stored_pre_order` from ``stack`` (top last: (cid, is_node); a node's
    children are pushed in reverse) and ``nodes`` (child nodes read ahead, until their turn)."""
    out: list[tuple[bytes, bytes | None]] = []  # the walk's next blocks; None: a record not read yet
    records = 0
    stepping = in_order is not None  # blocks go out as the walk meets them; out stays empty
    pop = stack.pop
    while stack:
        cid, is_node = pop()
        if not is_node:
            if stepping:
                assert in_order is not None
                row = next(in_order, None)
                if row is not None and row[0] == cid:
                    yield row
                    continue
                stepping = False  # the index's order and the tree's parted: by CID from here on
            out.append((cid, None))
            records += 1
            if records >= PREFETCH_BLOCKS:
                yield from _with_records(read, out)
                out.clear()
                records = 0
            continue
        data = nodes.pop(cid, None)
        if data is None:
            data = next((block for _, block in read([cid])), None)
            if data is None:
                raise MissingBlock(CID(cid), "MST node")
        if stepping:
            yield cid, data
        else:
            out.append((cid, data))
        try:
            kids = node_children(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidMST(f"node {CID(cid)}: {exc!r}") from None
        below = [kid for kid, is_sub in kids if is_sub and kid not in nodes]
        for start in range(0, len(below), PREFETCH_BLOCKS):
            nodes.update(read(below[start : start + PREFETCH_BLOCKS]))
        kids.reverse()
        stack += kids
    yield from _with_records(read, out)


def node_children(data: bytes) -> list[tuple[bytes, bool]]:
    """A stored node's links in the walk's order, as (binary CID, is_node): left, then each entry's
    value and subtree. Raises ValueError, TypeError or KeyError for bytes that are not a node."""
    node = decode_raw(data, bytes, False)[0]
    left = node["l"]
    kids: list[tuple[bytes, bool]] = [] if left is None else [(left, True)]
    for entry in node["e"]:
        kids.append((entry["v"], False))
        if entry["t"] is not None:
            kids.append((entry["t"], True))
    return kids


def _reading_ahead(
    read: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]], budget: int
) -> Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]]:
    """``read`` that also returns the asked nodes' descendants, a level per query, up to ``budget`` rows.

    For a store where each query is a round trip (PostgreSQL): the walk opens a
    node with children about once per three nodes and asked for them each
    time (7,900 queries for 100k records); it skips a child already read, so
    with this it asks once per few hundred nodes. Memory: ``budget`` nodes
    per level of the path at most. Bytes that are not a node are passed on
    unread below; the walk names them when it gets there.
    """

    def read_ahead(cids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        level = list(read(cids))
        rows = list(level)
        while level and len(rows) < budget:
            below: list[bytes] = []
            for _, data in level:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    below += [kid for kid, is_sub in node_children(data) if is_sub]
            below = below[: budget - len(rows)]
            level = []
            for start in range(0, len(below), PREFETCH_BLOCKS):
                level += read(below[start : start + PREFETCH_BLOCKS])
            rows += level
        return iter(rows)

    return read_ahead


def _with_records(
    read: Callable[[list[bytes]], Iterator[tuple[bytes, bytes]]], out: list[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """``out`` in order, its unread records read in one query (at most ``PREFETCH_BLOCKS`` of them)."""
    wanted = list({cid: None for cid, data in out if data is None})
    found = dict(read(wanted)) if wanted else {}
    for cid, data in out:
        if data is None:
            data = found.get(cid)
            if data is None:
                raise MissingBlock(CID(cid), "record")
        yield cid, data


def _raw_pieces(
    roots: Iterable[CID] | None,
    blocks: Iterable[tuple[bytes, bytes]],
    chunk_blocks: int,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tuple[bytes, int]]:
    """:func:`car_pieces` for (binary CID, data) pairs; without roots, the sections alone (no header)."""
    if roots is not None:
        yield encode_car_header(roots), 0
    parts: list[bytes] = []
    add = parts.append
    size = count = 0
    for raw, data in blocks:
        n = len(raw) + len(data)
        add(bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7)) if n < 0x4000 else encode_varint(n))
        add(raw)
        add(data)
        size += n + 4
        count += 1
        if size >= chunk_bytes or count >= chunk_blocks:
            yield b"".join(parts), count
            parts.clear()
            size = count = 0
    if parts:
        yield b"".join(parts), count


def record_proof(store: Store, did: str, collection: str, rkey: str, privileged: bool = False) -> bytes:
    """``getRecord``: commit, the key's MST path, then the record when present."""
    with store.snapshot():
        head = _available_head(store, did, privileged)
        repo = Repo.open(store.repo_blocks(did), head.cid)
        blocks = proof_blocks(repo.tree, f"{collection}/{rkey}")
        found = repo.get_record_cid(collection, rkey)
        if found is not None:
            raw = repo.source.get(found)
            if raw is not None:
                blocks.put(found, raw)
        return write_car([head.cid], [(head.cid, repo.commit.raw), *blocks.items()])


def requested_blocks(store: Store, did: str, cids: list[CID], privileged: bool = False) -> bytes:
    """``getBlocks``: the blocks in the order asked, no roots; any missing one fails the call."""
    check_available(store.get_account(did), did, privileged=privileged)
    found = store.get_blocks(did, cids)
    missing = [str(cid) for cid in cids if cid not in found]
    if missing:
        raise InvalidRequest(f"Could not find cids: {','.join(missing)}")
    return write_car(
        [], [(cid, found[cid]) for cid in dict.fromkeys(cids)]
    )  # each block once, in asked order


def _blob_file(store: Store, did: str, cid: CID, privileged: bool = False) -> tuple[str, int, IO[bytes]]:
    check_available(store.get_account(did), did, privileged=privileged)
    row = store.get_blob(did, cid)
    if row is None or row.temporary or store.blob_takedown(did, cid) is not None:  # admin blob takedown
        raise BlobNotFound("Blob not found")
    path: Path = store.blob_files.path(cid)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the stream that reads it
    except FileNotFoundError:
        raise BlobNotFound("Blob not found") from None
    return row.mime, row.size, handle


# --- routes -------------------------------------------------------------------------------------


def _cursor_pair(cursor: str) -> tuple[int, str]:
    created, sep, did = cursor.partition("::")
    if not sep or not created.lstrip("-").isdigit() or not did:
        raise InvalidRequest("Malformed cursor")
    return int(created), did


def _status(account: Account) -> dict[str, Any]:
    return {"active": True} if account.active else {"active": False, "status": account.status}


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare the sync methods (all unauthenticated) on ``router``, bound to ``host``."""
    worker = host.worker
    viewer = owner_or_admin(host)  # the owner or the admin may read an inactive repository
    streams = CarStreams(
        host.store,
        in_progress=host.metrics.gauge(
            "atrepo_sync_exports", "getRepo exports streaming or waiting for a thread"
        ),
    )

    @router.query("com.atproto.sync.getRepo", auth=viewer)
    async def get_repo(ctx: XrpcContext) -> RawOutput:
        did = ctx.params["did"]
        stream = await streams.open(
            export_repo, did, ctx.params.get("since"), privileged=may_see_inactive(ctx.auth, did)
        )
        return RawOutput(CAR, stream)

    @router.query("com.atproto.sync.getRecord", auth=viewer)
    async def get_record(ctx: XrpcContext) -> RawOutput:
        p = ctx.params
        privileged = may_see_inactive(ctx.auth, p["did"])
        car = await worker.read(record_proof, p["did"], p["collection"], p["rkey"], privileged)
        return RawOutput(CAR, car)

    @router.query("com.atproto.sync.getBlocks", auth=viewer)
    async def get_blocks(ctx: XrpcContext) -> RawOutput:
        cids = [c if isinstance(c, CID) else CID.parse(c) for c in ctx.params["cids"]]
        did = ctx.params["did"]
        return RawOutput(CAR, await worker.read(requested_blocks, did, cids, may_see_inactive(ctx.auth, did)))

    @router.query("com.atproto.sync.getLatestCommit", auth=viewer)
    async def get_latest_commit(ctx: XrpcContext) -> dict[str, Any]:
        did = ctx.params["did"]
        head = await worker.read(_available_head, did, may_see_inactive(ctx.auth, did))
        return {"cid": str(head.cid), "rev": head.rev}

    @router.query("com.atproto.sync.getRepoStatus")
    async def get_repo_status(ctx: XrpcContext) -> dict[str, Any]:
        did = ctx.params["did"]
        account = await worker.read(SQLiteStore.get_account, did)
        if account is None or account.status == "deleted":
            raise RepoNotFound(f"Could not find repo for DID: {did}")
        out: dict[str, Any] = {"did": did, **_status(account)}
        if account.active and account.rev is not None:  # rev only when active, as the reference
            out["rev"] = account.rev
        return out

    @router.query("com.atproto.sync.listRepos")
    async def list_repos(ctx: XrpcContext) -> dict[str, Any]:
        limit: int = ctx.params["limit"]
        cursor = ctx.params.get("cursor")
        after = _cursor_pair(cursor) if cursor else None
        page = await worker.read(SQLiteStore.list_accounts, after=after, limit=limit)
        repos = [
            {"did": a.did, "head": str(a.head), "rev": a.rev or "", **_status(a)}
            for a in page
            if a.head is not None
        ]
        out: dict[str, Any] = {"repos": repos}
        if len(page) == limit:
            out["cursor"] = f"{page[-1].created_ms}::{page[-1].did}"
        return out

    @router.query("com.atproto.sync.listBlobs", auth=viewer)
    async def list_blobs(ctx: XrpcContext) -> dict[str, Any]:
        p = ctx.params
        did, limit = p["did"], p["limit"]
        privileged = may_see_inactive(ctx.auth, did)

        def page(store: SQLiteStore) -> list[CID]:
            check_available(store.get_account(did), did, privileged=privileged)
            return store.list_blobs(did, since=p.get("since"), cursor=p.get("cursor"), limit=limit)

        cids = await worker.read(page)
        out: dict[str, Any] = {"cids": [str(c) for c in cids]}
        if len(cids) == limit:
            out["cursor"] = str(cids[-1])
        return out

    @router.query("com.atproto.sync.getBlob", auth=viewer)
    async def get_blob(ctx: XrpcContext) -> RawOutput:
        did, cid_param = ctx.params["did"], ctx.params["cid"]
        cid = cid_param if isinstance(cid_param, CID) else CID.parse(cid_param)
        mime, size, handle = await worker.read(_blob_file, did, cid, may_see_inactive(ctx.auth, did))
        ctx.response_headers.update(BLOB_HEADERS)
        ctx.response_headers["Content-Disposition"] = f'attachment; filename="{cid}"'
        return RawOutput(mime or "application/octet-stream", _read_file(handle), length=size)


async def _read_file(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """A blob file in pieces, each read off the event loop; the file closes however the reply ends."""
    loop = asyncio.get_running_loop()
    try:
        while chunk := await loop.run_in_executor(None, handle.read, BLOB_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
