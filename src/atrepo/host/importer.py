"""``com.atproto.repo.importRepo``: a whole repository, verified, into a deactivated account.

A migration moves a repository as one CAR (``getRepo`` on the old host,
``importRepo`` here) before the account is activated. What this host checks,
beyond the reference (which stores what it is given, and does not check that
the commit is the account's: an open bug there):

* the CAR is complete and well formed: one root, the commit; every block
  hashes to its CID; the tree is a valid MST whose every node and record is
  present (blocks nothing reaches are dropped, not stored);
* the commit is the account's (``did``) and its signature verifies with the
  atproto key of the account's current DID document. During a migration that
  is still the old host's key: the DID document is switched to this host
  afterwards, and activation re-signs the tree with this host's key under a
  fresh rev (``lifecycle``), which is what the firehose announces;
* the account is deactivated: importing into an active account would make its
  firehose history jump to an unrelated commit, which consumers reject.

Memory stays bounded whatever the repository's size: the body is spooled to a
file in the data directory as it arrives; on the writer thread the CAR's
blocks go to a staging table on disk, the tree is verified from there, and the
reachable blocks are copied into the repository in pre-order, all in the one
transaction that also swaps the record index and the head. Progress (blocks
staged, records indexed) is logged every ``PROGRESS_EVERY`` records.

Records name blobs that are not here yet: ``listMissingBlobs`` lists them until
the client uploads each (``uploadBlob``), as the reference does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from atrepo.core.blobrefs import find_blobs
from atrepo.core.car import CarReader
from atrepo.core.cbor import decode
from atrepo.core.cid import CID
from atrepo.core.commit import decode_commit
from atrepo.core.errors import (
    InvalidCAR,
    InvalidRequest,
    MissingBlock,
    RepoNotFound,
    ResolutionError,
)
from atrepo.core.keys import PublicKey
from atrepo.core.mst.tree import MST, NodeLoader
from atrepo.core.repo import Repo
from atrepo.identity.resolver import DIDResolver
from atrepo.store import SQLiteStore
from atrepo.xrpc import RawBody, XrpcContext, XrpcRouter

from .auth import AccessCredentials

if TYPE_CHECKING:
    from .app import HostContext

__all__ = ["IMPORT_LIMIT", "PROGRESS_EVERY", "ImportSummary", "import_car", "register"]

log = logging.getLogger("atrepo.host.import")

#: Largest CAR ``importRepo`` accepts (bytes). A 100k-record repository is about 50 MB.
IMPORT_LIMIT: Final = 1024 * 1024 * 1024
#: Decoded tree nodes an import keeps at once (each node is read once per walk).
IMPORT_NODE_CACHE: Final = 1024
#: Records between two progress lines in the log.
PROGRESS_EVERY: Final = 10_000


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import stored: the head it set and how much it wrote."""

    commit: CID
    rev: str
    blocks: int
    records: int
    car_blocks: int


def _read_root_commit(car: IO[bytes]) -> tuple[CID, bytes]:
    """The CAR's single root and that root's block (found in a first pass over the file)."""
    reader = CarReader(car)
    roots = reader.roots
    if len(roots) != 1:
        raise InvalidCAR(f"CAR has {len(roots)} roots, a repository CAR has exactly one (its commit)")
    root = roots[0]
    for cid, data, _offset in reader:
        if cid == root:
            return root, data
    raise MissingBlock(root, "commit (the CAR's root)")


def _staged_blocks(car: IO[bytes], counter: list[int]) -> Iterator[tuple[bytes, bytes]]:
    for cid, data, _offset in CarReader(car):  # every block's hash is checked by the reader
        counter[0] += 1
        yield cid.raw, data


def import_car(store: SQLiteStore, did: str, car_path: Path, key: PublicKey | None) -> ImportSummary:
    """Verify the CAR at ``car_path`` and make it ``did``'s repository; on the store's writer thread.

    ``key`` is the atproto key the commit must verify with (None skips the
    signature check: tests of other rules only). Raises a typed error, with
    nothing stored, for any defect.
    """
    started = time.monotonic()
    with car_path.open("rb") as car:
        root, raw = _read_root_commit(car)
        commit = decode_commit(raw, root)
        if commit.did != did:
            raise InvalidRequest(
                f"the CAR's commit is for {commit.did}, not for this account ({did})", rule="did"
            )
        if key is not None:
            commit.verify(key)
        car.seek(0)
        with store.transaction(did) as tx:
            account = tx.account()
            if account is None or account.status == "deleted":
                raise RepoNotFound(f"Could not find repo: {did}")
            if account.status != "deactivated":
                raise InvalidRequest(
                    "importRepo needs a deactivated account: deactivate it first (an active account's "
                    "firehose would jump to an unrelated commit)",
                    rule="status",
                )
            staged_count = [0]
            staged = tx.stage_blocks(_staged_blocks(car, staged_count))
            log.info("import %s: %d blocks staged from the CAR; verifying the tree", did, staged_count[0])
            # a small node cache: the walks read each node once or twice, and a big cache would hold
            # most of a large tree decoded (the default keeps 65,536 nodes: ~80 MB at 100k records)
            tree = MST.load(NodeLoader(staged, cache_size=IMPORT_NODE_CACHE), commit.data)
            repo = Repo(staged, commit, tree)
            records = [0]

            def indexed() -> Iterator[tuple[str, CID, list[str]]]:
                for path, cid in repo.walk():
                    data = staged.get(cid)
                    if data is None:
                        raise MissingBlock(cid, f"record {path}")
                    blobs = [str(ref.cid) for ref in find_blobs(decode(data))]
                    records[0] += 1
                    if records[0] % PROGRESS_EVERY == 0:
                        log.info("import %s: %d records indexed", did, records[0])
                    yield path, cid, blobs

            # export_blocks reads every node and record (pre-order), so a missing or bad one fails here
            stored = tx.replace_repo(root, commit.rev, repo.export_blocks(), indexed())
    summary = ImportSummary(root, commit.rev, stored, records[0], staged_count[0])
    log.info(
        "import %s: done in %.1f s: %d records, %d blocks stored (%d in the CAR), head %s rev %s",
        did,
        time.monotonic() - started,
        summary.records,
        summary.blocks,
        summary.car_blocks,
        root,
        commit.rev,
    )
    return summary


async def _spool(body: RawBody, directory: Path) -> Path:
    """Write the request body to a new file in ``directory`` as it arrives (bounded memory)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="import-", suffix=".car", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in body.chunks():
                out.write(chunk)  # page cache: a local disk write, cheap next to the network
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def register(router: XrpcRouter, host: HostContext) -> None:
    """Declare ``com.atproto.repo.importRepo`` on ``router``, bound to ``host``."""
    resolver = DIDResolver(plc_url=host.plc_url, session=host.http)

    async def account_key(did: str) -> PublicKey:
        try:
            doc = await resolver.resolve(did, force_refresh=True)
        except ResolutionError as exc:
            raise InvalidRequest(f"could not resolve {did} to check the commit's signature: {exc}") from None
        if doc.signing_key is None:
            raise InvalidRequest(f"the DID document of {did} names no atproto signing key", rule="key")
        return doc.signing_key

    @router.procedure(
        "com.atproto.repo.importRepo", auth=host.tokens.verify_full_access, raw_limit=IMPORT_LIMIT
    )
    async def import_repo(ctx: XrpcContext) -> None:
        creds: AccessCredentials = ctx.auth
        body = ctx.body
        if not isinstance(body, RawBody):  # pragma: no cover - the lexicon declares a CAR body
            raise InvalidRequest("importRepo takes a CAR body (application/vnd.ipld.car)")
        key = await account_key(creds.did)
        path = await _spool(body, host.config.data_dir / "tmp")
        try:
            log.info("import %s: %d bytes received", creds.did, path.stat().st_size)
            try:
                await host.worker.run(import_car, creds.did, path, key)
            except ValueError as exc:  # a malformed CAR the reader could not frame
                raise InvalidCAR(f"not a repository CAR: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
