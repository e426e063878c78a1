"""``com.atproto.sync.*`` on a running host over HTTP: every CAR verifies, every listing pages.

Accounts come from ``createAccount``; records are written with
:class:`~atrepo.host.writes.RepoWriter` on the host's own store worker (what
the repo API does), so these tests do not depend on ``com.atproto.repo.*``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from host_support import HostClient

from atrepo.core.car import read_car
from atrepo.core.cid import CID
from atrepo.core.commit import decode_commit
from atrepo.core.mst.proof import check_proof
from atrepo.core.repo import Repo
from atrepo.core.verify import RepoSummary, verify_repo_car
from atrepo.host.sync_api import CarStreams, export_repo
from atrepo.host.writes import CreateOp, DeleteOp, RepoWriter, WriteOp, WriteOutcome
from atrepo.store import SQLiteStore

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"


def post(text: str, **extra: Any) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": NOW, **extra}


async def new_account(host: HostClient, name: str) -> str:
    reply = await host.create_account(f"{name}.test")
    assert reply.status == 200, reply.body
    did: str = reply.body["did"]
    return did


async def write(host: HostClient, did: str, ops: list[WriteOp]) -> WriteOutcome:
    """One commit through the host's writer thread, then the firehose wake-up, as the repo API does."""
    ctx = host.running.context
    account = await ctx.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    writer = RepoWriter(ctx.registry)
    outcome = await ctx.worker.run(writer.apply, did, ctx.signing_key(account), ops)
    if outcome.seq is not None:
        await ctx.notify(outcome.seq)
    return outcome


async def posts(host: HostClient, did: str, count: int, prefix: str = "p") -> dict[str, CID]:
    """``count`` posts in batches of 200; their paths and CIDs."""
    out: dict[str, CID] = {}
    for start in range(0, count, 200):
        ops: list[WriteOp] = [
            CreateOp(POST, None, post(f"{prefix}{i}")) for i in range(start, min(count, start + 200))
        ]
        outcome = await write(host, did, ops)
        for result in outcome.results:
            assert result.cid is not None
            out[result.uri.split("/", 3)[3]] = result.cid
    return out


async def get_raw(host: HostClient, nsid: str, params: Any) -> tuple[int, bytes, dict[str, str]]:
    async with host.http.get(f"{host.url}/xrpc/{nsid}", params=params) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def exports_in_progress(host: HostClient) -> str:
    async with host.http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    (line,) = [line for line in text.splitlines() if line.startswith("atrepo_sync_exports ")]
    return line.split()[1]


async def public_key(host: HostClient, did: str) -> Any:
    account = await host.running.context.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    return host.running.context.signing_key(account).public_key


# --- getRepo ----------------------------------------------------------------------------------


async def test_get_repo_verifies_and_holds_exactly_the_records_written(host: HostClient) -> None:
    did = await new_account(host, "alice")
    written = await posts(host, did, 450)
    deleted = sorted(written)[:3]
    await write(host, did, [DeleteOp(*path.split("/")) for path in deleted])
    for path in deleted:
        del written[path]
    status, body, headers = await get_raw(host, "com.atproto.sync.getRepo", {"did": did})
    assert status == 200 and headers["Content-Type"] == "application/vnd.ipld.car"
    summary = RepoSummary()
    records = dict(
        verify_repo_car(io.BytesIO(body), key=await public_key(host, did), did=did, summary=summary)
    )
    assert records == written
    latest = await host.call("com.atproto.sync.getLatestCommit", params={"did": did})
    roots, _ = read_car(body, max_bytes=len(body) + 1)
    assert str(roots[0]) == latest.body["cid"]
    assert await exports_in_progress(host) in ("0", "0.0")


async def test_get_repo_is_in_pre_order(host: HostClient) -> None:
    """The blocks arrive in exactly the order the core's streamable export walks them."""
    did = await new_account(host, "order")
    await posts(host, did, 300)
    _, body, _ = await get_raw(host, "com.atproto.sync.getRepo", {"did": did})
    store = host.running.context.store
    head = store.repo_head(did)
    assert head is not None
    expected = [cid for cid, _ in Repo.open(store.repo_blocks(did), head.cid).export_blocks()]
    from atrepo.core.car import CarReader

    got = [block[0] for block in CarReader(io.BytesIO(body))]
    assert got == expected


@pytest.mark.parametrize(
    "collections", [("com.example.a",), ("com.example.a", "com.example.a.b", "com.example.ab")]
)
async def test_get_repo_keeps_the_tree_order_where_the_index_order_parts_from_it(
    host: HostClient, collections: tuple[str, ...]
) -> None:
    """Records stream from the index in (collection, rkey) order while it agrees with the tree's key order.

    ``com.example.a.b/...`` sorts before ``com.example.a/...`` in the tree ('.' < '/') but after it
    in the index: the export must notice and read the rest by CID, in the tree's order. A record
    block at two paths and a deleted record are in there too.
    """
    did = await new_account(host, f"order{len(collections)}")
    same = {"$type": collections[-1], "n": "same"}  # one block at two paths
    for c in collections:
        await write(host, did, [CreateOp(c, f"r{i:03d}", {"$type": c, "n": i}) for i in range(150)])
    await write(
        host, did, [CreateOp(collections[-1], "twin1", same), CreateOp(collections[-1], "twin2", same)]
    )
    await write(host, did, [DeleteOp(collections[0], "r007")])
    _, body, _ = await get_raw(host, "com.atproto.sync.getRepo", {"did": did})
    store = host.running.context.store
    head = store.repo_head(did)
    assert head is not None
    expected = list(Repo.open(store.repo_blocks(did), head.cid).export_blocks())
    from atrepo.core.car import CarReader

    got = [(block[0], bytes(block[1])) for block in CarReader(io.BytesIO(body))]
    assert [cid for cid, _ in got] == [cid for cid, _ in expected]
    assert [data for _, data in got] == [bytes(data) for _, data in expected]


async def test_get_repo_since_returns_the_blocks_of_later_commits(host: HostClient) -> None:
    did = await new_account(host, "since")
    await posts(host, did, 20, "old")
    before = (await host.call("com.atproto.sync.getLatestCommit", params={"did": did})).body
    later = await write(host, did, [CreateOp(POST, None, post("the new one"))])
    assert later.result is not None
    status, body, _ = await get_raw(host, "com.atproto.sync.getRepo", {"did": did, "since": before["rev"]})
    assert status == 200
    roots, blocks = read_car(body)
    assert roots == [later.result.commit.cid]
    assert set(blocks.cids()) == set(later.result.blocks.cids())  # the commit, new nodes, the record
    assert later.results[0].cid in blocks
    # since the current rev: the root and nothing else
    _, body, _ = await get_raw(host, "com.atproto.sync.getRepo", {"did": did, "since": later.result.rev})
    roots, blocks = read_car(body)
    assert roots == [later.result.commit.cid] and len(blocks) == 0


async def test_get_repo_memory_is_bounded_by_the_queue_not_the_repository(host: HostClient) -> None:
    """By construction: the export thread stops when the queue is full, so at most
    (queue + 2) chunks of blocks are ever held, for a repository of thousands of blocks."""
    did = await new_account(host, "big")
    written = await posts(host, did, 3000)
    streams = CarStreams(host.running.context.store, queue_chunks=2)
    try:
        chunks = 0
        body = bytearray()
        stream = await streams.open(export_repo, did, None, chunk_blocks=16)
        async for piece in stream:
            body += piece
            chunks += 1
        stats = streams.last_stats
    finally:
        streams.close()
    total = stats.produced
    assert total > 3000 and chunks > 100
    assert stats.peak_held <= (2 + 1) * 16, stats
    records = dict(verify_repo_car(io.BytesIO(bytes(body)), key=await public_key(host, did), did=did))
    assert records == written


async def test_an_export_is_one_snapshot_while_writes_go_on(host: HostClient) -> None:
    """Commits that land mid-export delete the nodes they replace; the export still sees its own state."""
    did = await new_account(host, "snap")
    written = await posts(host, did, 1000)
    streams = CarStreams(host.running.context.store, queue_chunks=1)
    try:
        stream = await streams.open(export_repo, did, None, chunk_blocks=8)
        body = bytearray()
        async for piece in stream:
            body += piece
            if len(body) > 1000 and not any(p.startswith("x") for p in written):
                doomed = sorted(written)[::2][:200]
                await write(host, did, [DeleteOp(*path.split("/")) for path in doomed])
                await posts(host, did, 50, "later")
                written["x"] = written[doomed[0]]  # mark: done once
    finally:
        streams.close()
    del written["x"]
    records = dict(verify_repo_car(io.BytesIO(bytes(body)), key=await public_key(host, did), did=did))
    assert records == written  # the state at the start, whole, despite the deletions


async def test_a_consumer_that_leaves_early_releases_the_export(host: HostClient) -> None:
    did = await new_account(host, "early")
    await posts(host, did, 600)
    streams = CarStreams(host.running.context.store, queue_chunks=1, threads=1)
    try:
        for _ in range(3):  # one thread: each stream must give it back for the next to start
            stream = await streams.open(export_repo, did, None, chunk_blocks=8)
            async for _piece in stream:
                break
            await stream.aclose()  # type: ignore[attr-defined]
            assert streams.last_stats.produced <= (1 + 2) * 8  # stopped at the hand-off after the first piece
    finally:
        streams.close()


async def test_unknown_did_is_repo_not_found_everywhere(host: HostClient) -> None:
    did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    for nsid, params in [
        ("com.atproto.sync.getRepo", {"did": did}),
        ("com.atproto.sync.getRecord", {"did": did, "collection": POST, "rkey": "3jzfcijpj2z2a"}),
        ("com.atproto.sync.getBlocks", {"did": did, "cids": cid}),
        ("com.atproto.sync.getLatestCommit", {"did": did}),
        ("com.atproto.sync.getRepoStatus", {"did": did}),
        ("com.atproto.sync.listBlobs", {"did": did}),
        ("com.atproto.sync.getBlob", {"did": did, "cid": cid}),
    ]:
        reply = await host.call(nsid, params=params)
        assert (reply.status, reply.error) == (400, "RepoNotFound"), nsid
        assert reply.body["message"] == f"Could not find repo for DID: {did}", nsid
    assert await exports_in_progress(host) in ("0", "0.0")  # a refused export is not left counted


@pytest.mark.parametrize(
    ("status", "error"),
    [("takendown", "RepoTakendown"), ("deactivated", "RepoDeactivated"), ("suspended", "RepoSuspended")],
)
async def test_inactive_accounts_are_not_served_but_report_their_status(
    host: HostClient, status: str, error: str
) -> None:
    did = await new_account(host, f"x{status[:8]}")
    ctx = host.running.context

    def set_status(store: SQLiteStore) -> None:
        with store.transaction(did) as tx:
            tx.set_status(status)  # type: ignore[arg-type]

    await ctx.worker.run(set_status)
    for nsid in (
        "com.atproto.sync.getRepo",
        "com.atproto.sync.getLatestCommit",
        "com.atproto.sync.listBlobs",
    ):
        reply = await host.call(nsid, params={"did": did})
        assert (reply.status, reply.error) == (400, error), nsid
    reply = await host.call("com.atproto.sync.getRepoStatus", params={"did": did})
    assert reply.body == {"did": did, "active": False, "status": status}
    page = await host.call("com.atproto.sync.listRepos")
    (entry,) = [r for r in page.body["repos"] if r["did"] == did]
    assert entry["active"] is False and entry["status"] == status


# --- getRecord --------------------------------------------------------------------------------


async def test_get_record_proof_verifies_for_present_and_absent_records(host: HostClient) -> None:
    did = await new_account(host, "proof")
    written = await posts(host, did, 300)
    key = await public_key(host, did)
    path = sorted(written)[150]
    collection, rkey = path.split("/")
    for asked, expected in [(rkey, written[path]), ("3zzzzzzzzzzzz", None)]:
        status, body, headers = await get_raw(
            host, "com.atproto.sync.getRecord", {"did": did, "collection": collection, "rkey": asked}
        )
        assert status == 200 and headers["Content-Type"] == "application/vnd.ipld.car"
        roots, blocks = read_car(body)
        commit = decode_commit(blocks.require(roots[0]), roots[0])
        commit.verify(key)
        assert commit.did == did
        check_proof(commit.data, f"{collection}/{asked}", expected, blocks)
        if expected is not None:
            assert expected in blocks  # the record itself
        else:
            assert all(cid not in blocks for cid in written.values())
        # only the path: a handful of nodes, not the tree
        assert len(blocks) < 10


# --- getBlocks, getLatestCommit, getRepoStatus ------------------------------------------------


async def test_get_blocks_returns_the_blocks_asked_for_and_refuses_missing_ones(host: HostClient) -> None:
    did = await new_account(host, "blocks")
    written = await posts(host, did, 5)
    latest = (await host.call("com.atproto.sync.getLatestCommit", params={"did": did})).body
    wanted = [latest["cid"], *map(str, list(written.values())[:3])]
    status, body, _ = await get_raw(
        host, "com.atproto.sync.getBlocks", [("did", did), *(("cids", c) for c in wanted)]
    )
    assert status == 200
    roots, blocks = read_car(body)
    assert roots == [] and [str(c) for c in blocks.cids()] == wanted
    ghost = str(CID.for_dag_cbor(b"\xa0"))
    reply = await host.call(
        "com.atproto.sync.getBlocks", params=[("did", did), ("cids", wanted[0]), ("cids", ghost)]
    )  # type: ignore[arg-type]
    assert (reply.status, reply.error) == (400, "InvalidRequest")
    assert reply.body["message"] == f"Could not find cids: {ghost}"


async def test_get_latest_commit_and_repo_status_follow_writes(host: HostClient) -> None:
    did = await new_account(host, "latest")
    first = (await host.call("com.atproto.sync.getLatestCommit", params={"did": did})).body
    outcome = await write(host, did, [CreateOp(POST, None, post("hi"))])
    assert outcome.commit is not None
    second = (await host.call("com.atproto.sync.getLatestCommit", params={"did": did})).body
    assert second == {"cid": str(outcome.commit.cid), "rev": outcome.commit.rev}
    assert second["rev"] > first["rev"]
    reply = await host.call("com.atproto.sync.getRepoStatus", params={"did": did})
    assert reply.body == {"did": did, "active": True, "rev": outcome.commit.rev}


# --- listRepos --------------------------------------------------------------------------------


async def test_list_repos_pages_through_every_account_once(host: HostClient) -> None:
    dids = [await new_account(host, f"lister{i}") for i in range(7)]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    calls = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        reply = await host.call("com.atproto.sync.listRepos", params=params)
        assert reply.status == 200, reply.body
        seen += reply.body["repos"]
        calls += 1
        cursor = reply.body.get("cursor")
        if cursor is None:
            break
    assert [r["did"] for r in seen] == dids  # creation order
    assert calls == 3
    for repo in seen:
        latest = (await host.call("com.atproto.sync.getLatestCommit", params={"did": repo["did"]})).body
        assert repo == {"did": repo["did"], "head": latest["cid"], "rev": latest["rev"], "active": True}
    bad = await host.call("com.atproto.sync.listRepos", params={"cursor": "nonsense"})
    assert (bad.status, bad.error, bad.body["message"]) == (400, "InvalidRequest", "Malformed cursor")


# --- blobs ------------------------------------------------------------------------------------


async def add_blob(host: HostClient, did: str, data: bytes, mime: str) -> CID:
    """An upload through the store's own API: the file, then its row (temporary until referenced)."""

    def store_it(store: SQLiteStore) -> CID:
        cid, size = store.blob_files.write([data])
        with store.transaction(did) as tx:
            tx.add_blob(cid, mime, size)
        return cid

    return await host.running.context.worker.run(store_it)


def with_image(text: str, cid: CID, size: int, mime: str) -> dict[str, Any]:
    image = {"$type": "blob", "ref": cid, "mimeType": mime, "size": size}
    return post(text, embed={"$type": "app.bsky.embed.images", "images": [{"image": image, "alt": ""}]})


async def test_get_blob_streams_the_bytes_with_the_reference_headers(host: HostClient) -> None:
    did = await new_account(host, "blobby")
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2000  # ~512 KB: several read pieces
    cid = await add_blob(host, did, data, "image/png")
    params = {"did": did, "cid": str(cid)}
    temporary = await host.call("com.atproto.sync.getBlob", params=params)
    assert (temporary.status, temporary.error) == (400, "BlobNotFound")  # not referenced yet
    await write(host, did, [CreateOp(POST, None, with_image("look", cid, len(data), "image/png"))])
    status, body, headers = await get_raw(host, "com.atproto.sync.getBlob", params)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(data))
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == f'attachment; filename="{cid}"'
    other = str(CID.for_raw(b"never uploaded"))
    missing = await host.call("com.atproto.sync.getBlob", params={"did": did, "cid": other})
    assert (missing.status, missing.error, missing.body["message"]) == (400, "BlobNotFound", "Blob not found")


async def test_list_blobs_pages_and_honours_since(host: HostClient) -> None:
    did = await new_account(host, "bloblist")
    cids = []
    for i in range(5):
        data = f"blob number {i}".encode()
        cid = await add_blob(host, did, data, "image/png")
        await write(host, did, [CreateOp(POST, None, with_image(str(i), cid, len(data), "image/png"))])
        cids.append(str(cid))
        if i == 2:
            middle = (await host.call("com.atproto.sync.getLatestCommit", params={"did": did})).body["rev"]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"did": did, "limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await host.call("com.atproto.sync.listBlobs", params=params)
        seen += reply.body["cids"]
        cursor = reply.body.get("cursor")
        if cursor is None:
            break
    assert seen == sorted(cids)
    later = await host.call("com.atproto.sync.listBlobs", params={"did": did, "since": middle})
    assert later.body == {"cids": sorted(cids[3:])}
