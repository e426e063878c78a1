"""``com.atproto.repo.*`` end to end on a real host (127.0.0.1, embedded PLC directory).

Every reply is checked against its lexicon by the host itself (the fixture
starts it with ``validate_output=True``: a reply off the lexicon is a 500).
Tests that write end by reading the store back as a relay would: every
``#commit`` of the account passes Sync 1.1 validation chained from genesis,
and the exported repository verifies and equals the record index.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, Reply
from test_writes import check_events, check_repo

from atrepo.core.cid import CID
from atrepo.core.events import CommitEvent, SyncEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Write
from atrepo.core.tracker import RepoTracker, Verdict
from atrepo.host.repo_api import BLOB_UPLOAD_LIMIT, sniff_mime

POST = "app.bsky.feed.post"
UNKNOWN = "com.example.thing"
AW = "com.atproto.repo.applyWrites"
NOW = "2024-05-01T12:34:56.789Z"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


@dataclass
class User:
    did: str
    handle: str
    token: str


async def new_user(host: HostClient, handle: str) -> User:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return User(reply.body["did"], handle, reply.body["accessJwt"])


@pytest.fixture
async def alice(host: HostClient) -> User:
    return await new_user(host, "alice.test")


@pytest.fixture
async def bob(host: HostClient) -> User:
    return await new_user(host, "bob.test")


def post(text: str, **extra: Any) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": NOW, **extra}


async def rpc(host: HostClient, user: User | None, nsid: str, **body: Any) -> Reply:
    return await host.call(nsid, body=body, token=user.token if user is not None else None)


async def get(host: HostClient, nsid: str, **params: Any) -> Reply:
    return await host.call(
        nsid, params={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    )


async def upload(host: HostClient, user: User, data: bytes, content_type: str = "*/*") -> Reply:
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": content_type}
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=data, headers=headers
    ) as resp:
        return Reply(resp.status, await resp.json(content_type=None))


def key_of(host: HostClient, did: str) -> PrivateKey:
    ctx = host.running.context
    account = ctx.store.get_account(did)
    assert account is not None
    return ctx.signing_key(account)


def check_store(host: HostClient, did: str) -> None:
    """The log chains and passes Sync 1.1 validation; the repository verifies and equals the index."""
    store = host.running.context.store
    key = key_of(host, did)
    check_events(store, did, key)
    check_repo(store, did, key)


def assert_error(reply: Reply, status: int, error: str, message: str | None = None) -> None:
    assert (reply.status, reply.error) == (status, error), reply.body
    if message is not None:
        assert message in reply.body["message"], reply.body


# --- createRecord, getRecord ---------------------------------------------------------------------


async def test_create_then_get_record(host: HostClient, alice: User) -> None:
    heads: list[int] = []
    host.running.context.notify_event.append(heads.append)
    reply = await rpc(
        host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=POST, record=post("hi")
    )
    assert reply.status == 200, reply.body
    out = reply.body
    assert set(out) == {"uri", "cid", "commit", "validationStatus"}
    assert out["validationStatus"] == "valid"
    assert out["uri"].startswith(f"at://{alice.did}/{POST}/")
    store = host.running.context.store
    head = store.repo_head(alice.did)
    assert head is not None and out["commit"] == {"cid": str(head.cid), "rev": head.rev}
    assert heads == [store.head_seq()]  # the firehose was woken with the commit's seq

    rkey = out["uri"].rsplit("/", 1)[1]
    for repo in (alice.did, alice.handle, "ALICE.test"):
        got = await get(host, "com.atproto.repo.getRecord", repo=repo, collection=POST, rkey=rkey)
        assert got.status == 200, got.body
        assert got.body == {"uri": out["uri"], "cid": out["cid"], "value": post("hi")}
    # the version asked for by CID: this one, or RecordNotFound
    got = await get(
        host, "com.atproto.repo.getRecord", repo=alice.did, collection=POST, rkey=rkey, cid=out["cid"]
    )
    assert got.status == 200
    other = str(CID.for_dag_cbor(b"\xa0"))
    got = await get(host, "com.atproto.repo.getRecord", repo=alice.did, collection=POST, rkey=rkey, cid=other)
    assert_error(got, 400, "RecordNotFound", f"Could not locate record: {out['uri']}")
    check_store(host, alice.did)


async def test_create_record_with_rkey_and_type_rules(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.createRecord"
    # $type missing: filled in from the collection
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, rkey="self", record={"a": 1})
    assert reply.status == 200, reply.body
    assert reply.body["uri"] == f"at://{alice.did}/{UNKNOWN}/self"
    assert reply.body["validationStatus"] == "unknown"
    got = await get(host, "com.atproto.repo.getRecord", repo=alice.did, collection=UNKNOWN, rkey="self")
    assert got.body["value"] == {"$type": UNKNOWN, "a": 1}
    # the same path again: a 4xx, not the reference's 500
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, rkey="self", record={"a": 2})
    assert_error(reply, 400, "InvalidRequest", "Record already exists")
    # a $type other than the collection
    reply = await rpc(
        host, alice, call, repo=alice.did, collection=POST, record={**post("x"), "$type": UNKNOWN}
    )
    assert_error(reply, 400, "InvalidRequest", "Invalid $type")
    # validate=true and an unknown lexicon
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, record={"a": 1}, validate=True)
    assert_error(reply, 400, "InvalidRequest", f"Unknown lexicon type: {UNKNOWN}")
    # an invalid post (no createdAt) is refused unless validate=false, which then reports no status
    bad = {"$type": POST, "text": "no date"}
    reply = await rpc(host, alice, call, repo=alice.did, collection=POST, record=bad)
    assert_error(reply, 400, "InvalidRequest")
    reply = await rpc(host, alice, call, repo=alice.did, collection=POST, record=bad, validate=False)
    assert reply.status == 200, reply.body
    assert "validationStatus" not in reply.body
    # data-model violations are refused whatever validate says (floats)
    reply = await rpc(
        host, alice, call, repo=alice.did, collection=UNKNOWN, record={"f": 1.5}, validate=False
    )
    assert_error(reply, 400, "InvalidRequest")
    check_store(host, alice.did)


async def test_writes_need_the_callers_own_repo(host: HostClient, alice: User, bob: User) -> None:
    record = {"collection": UNKNOWN, "rkey": "k", "record": {"a": 1}}
    bodies = {
        "com.atproto.repo.createRecord": record,
        "com.atproto.repo.putRecord": record,
        "com.atproto.repo.deleteRecord": {"collection": UNKNOWN, "rkey": "k"},
        "com.atproto.repo.applyWrites": {
            "writes": [{"$type": f"{AW}#delete", "collection": UNKNOWN, "rkey": "k"}]
        },
    }
    before = host.running.context.store.head_seq()
    for nsid, body in bodies.items():
        # no session at all
        reply = await rpc(host, None, nsid, repo=alice.did, **body)
        assert_error(reply, 401, "AuthMissing")
        # Bob's session on Alice's repository (by DID or handle): the reference's AuthRequiredError()
        for repo in (alice.did, alice.handle):
            reply = await rpc(host, bob, nsid, repo=repo, **body)
            assert_error(reply, 401, "AuthenticationRequired", "Authentication Required")
        # a repository that is not here
        reply = await rpc(host, alice, nsid, repo="carol.test", **body)
        assert_error(reply, 400, "RepoNotFound", "Could not find repo: carol.test")
        # a garbage token
        reply = await host.call(nsid, body={"repo": alice.did, **body}, token="not-a-jwt")
        assert_error(reply, 400, "InvalidToken")
    assert host.running.context.store.head_seq() == before  # nothing was written


async def test_bad_bodies(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.createRecord"
    reply = await rpc(host, alice, call, repo=alice.did, collection="not an nsid", record={})
    assert_error(reply, 400, "InvalidRequest")
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN)
    assert_error(reply, 400, "InvalidRequest")
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, rkey="..", record={})
    assert_error(reply, 400, "InvalidRequest")
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, record={}, swapCommit="nope")
    assert_error(reply, 400, "InvalidRequest")
    reply = await host.call(call, method="GET", token=alice.token)
    assert_error(reply, 400, "InvalidRequest", "Incorrect HTTP method")


async def test_write_body_limit_is_one_million_bytes(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.createRecord"
    # over the 150 KiB default, under 1,000,000: accepted on the write routes, as the reference
    big = {"s": "x" * 400_000}
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, rkey="big", record=big)
    assert reply.status == 200, reply.body
    huge = {"s": "x" * 1_000_001}
    reply = await rpc(host, alice, call, repo=alice.did, collection=UNKNOWN, rkey="huge", record=huge)
    assert_error(reply, 413, "PayloadTooLarge")
    check_store(host, alice.did)


# --- putRecord, deleteRecord, swaps ------------------------------------------------------------


async def test_put_record_create_update_noop_and_swaps(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.putRecord"
    store = host.running.context.store
    base = {"repo": alice.did, "collection": UNKNOWN, "rkey": "r"}
    # swapRecord null: the record must not exist yet -> create
    first = await rpc(host, alice, call, **base, record={"v": 1}, swapRecord=None)
    assert first.status == 200, first.body
    assert "commit" in first.body
    # null again: it exists now
    reply = await rpc(host, alice, call, **base, record={"v": 2}, swapRecord=None)
    assert_error(reply, 400, "InvalidSwap")
    # a wrong CID
    wrong = str(CID.for_dag_cbor(b"\xa0"))
    reply = await rpc(host, alice, call, **base, record={"v": 2}, swapRecord=wrong)
    assert_error(reply, 400, "InvalidSwap")
    # a wrong commit
    reply = await rpc(host, alice, call, **base, record={"v": 2}, swapCommit=wrong)
    assert_error(reply, 400, "InvalidSwap", "Commit was at")
    # both right: update
    head = store.repo_head(alice.did)
    assert head is not None
    second = await rpc(
        host, alice, call, **base, record={"v": 2}, swapRecord=first.body["cid"], swapCommit=str(head.cid)
    )
    assert second.status == 200, second.body
    assert second.body["cid"] != first.body["cid"]
    # the same record again: no commit, no event
    seq = store.head_seq()
    again = await rpc(host, alice, call, **base, record={"v": 2})
    assert again.status == 200, again.body
    assert "commit" not in again.body and again.body["cid"] == second.body["cid"]
    assert store.head_seq() == seq
    check_store(host, alice.did)


async def test_delete_record(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.deleteRecord"
    store = host.running.context.store
    created = await rpc(
        host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=POST, record=post("x")
    )
    rkey = created.body["uri"].rsplit("/", 1)[1]
    base = {"repo": alice.did, "collection": POST, "rkey": rkey}
    wrong = str(CID.for_dag_cbor(b"\xa0"))
    reply = await rpc(host, alice, call, **base, swapRecord=wrong)
    assert_error(reply, 400, "InvalidSwap")
    reply = await rpc(host, alice, call, **base, swapCommit=wrong)
    assert_error(reply, 400, "InvalidSwap")
    reply = await rpc(host, alice, call, **base, swapRecord=created.body["cid"])
    assert reply.status == 200, reply.body
    head = store.repo_head(alice.did)
    assert head is not None and reply.body == {"commit": {"cid": str(head.cid), "rev": head.rev}}
    got = await get(host, "com.atproto.repo.getRecord", **base)
    assert_error(got, 400, "RecordNotFound")
    # deleting what is not there: success without a commit, swaps unchecked (the reference)
    seq = store.head_seq()
    reply = await rpc(host, alice, call, **base, swapRecord=wrong)
    assert (reply.status, reply.body) == (200, {})
    assert store.head_seq() == seq
    check_store(host, alice.did)


# --- applyWrites ----------------------------------------------------------------------------------


async def test_apply_writes(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.applyWrites"
    store = host.running.context.store
    setup = [
        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": "a", "value": {"n": 1}},
        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": "b", "value": {"n": 2}},
    ]
    reply = await rpc(host, alice, call, repo=alice.did, writes=setup)
    assert reply.status == 200, reply.body
    assert [r["$type"] for r in reply.body["results"]] == [f"{AW}#createResult"] * 2
    seq = store.head_seq()
    mixed = [
        {"$type": f"{AW}#create", "collection": POST, "value": post("new")},
        {"$type": f"{AW}#update", "collection": UNKNOWN, "rkey": "a", "value": {"n": 10}},
        {"$type": f"{AW}#delete", "collection": UNKNOWN, "rkey": "b"},
    ]
    reply = await rpc(host, alice, call, repo=alice.handle, writes=mixed)
    assert reply.status == 200, reply.body
    created, updated, deleted = reply.body["results"]
    assert created["$type"] == f"{AW}#createResult" and created["validationStatus"] == "valid"
    assert updated["$type"] == f"{AW}#updateResult" and updated["uri"] == f"at://{alice.did}/{UNKNOWN}/a"
    assert updated["validationStatus"] == "unknown"
    assert deleted == {"$type": f"{AW}#deleteResult"}
    head = store.repo_head(alice.did)
    assert head is not None and reply.body["commit"] == {"cid": str(head.cid), "rev": head.rev}
    assert store.head_seq() == seq + 1  # one commit, one event
    check_store(host, alice.did)


async def test_apply_writes_errors_change_nothing(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.applyWrites"
    store = host.running.context.store
    seq, head = store.head_seq(), store.repo_head(alice.did)
    too_many = [
        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": f"k{i}", "value": {"i": i}}
        for i in range(201)
    ]
    reply = await rpc(host, alice, call, repo=alice.did, writes=too_many)
    assert_error(reply, 400, "InvalidRequest", "Too many writes. Max: 200")
    unknown_type = [{"$type": f"{AW}#upsert", "collection": UNKNOWN, "rkey": "a", "value": {}}]
    reply = await rpc(host, alice, call, repo=alice.did, writes=unknown_type)
    assert_error(reply, 400, "InvalidRequest")
    # the first write is fine, the second updates a record that is not there: neither happens
    half = [
        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": "ok", "value": {}},
        {"$type": f"{AW}#update", "collection": UNKNOWN, "rkey": "missing", "value": {}},
    ]
    reply = await rpc(host, alice, call, repo=alice.did, writes=half)
    assert_error(reply, 400, "InvalidRequest", "Could not find record to update")
    reply = await rpc(
        host, alice, call, repo=alice.did, writes=half[:1], swapCommit=str(CID.for_dag_cbor(b"\xa0"))
    )
    assert_error(reply, 400, "InvalidSwap")
    reply = await rpc(host, alice, call, repo=alice.did, writes=half[:1], validate=True)
    assert_error(reply, 400, "InvalidRequest", "Unknown lexicon type")
    assert (store.head_seq(), store.repo_head(alice.did)) == (seq, head)
    # exactly 200 is one commit
    reply = await rpc(host, alice, call, repo=alice.did, writes=too_many[:200])
    assert reply.status == 200, reply.body
    assert len(reply.body["results"]) == 200 and store.head_seq() == seq + 1
    check_store(host, alice.did)


# --- listRecords, describeRepo --------------------------------------------------------------------


async def test_list_records_pages_both_ways(host: HostClient, alice: User) -> None:
    rkeys = [f"r{i:02d}" for i in range(7)]
    writes = [{"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": r, "value": {"r": r}} for r in rkeys]
    reply = await rpc(host, alice, "com.atproto.repo.applyWrites", repo=alice.did, writes=writes)
    assert reply.status == 200, reply.body

    async def walk(reverse: bool | None) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": alice.handle, "collection": UNKNOWN, "limit": 3}
            if reverse is not None:
                params["reverse"] = reverse
            if cursor is not None:
                params["cursor"] = cursor
            page = await get(host, "com.atproto.repo.listRecords", **params)
            assert page.status == 200, page.body
            records = page.body["records"]
            assert len(records) <= 3
            for record in records:
                rkey = record["uri"].rsplit("/", 1)[1]
                assert record["uri"] == f"at://{alice.did}/{UNKNOWN}/{rkey}"
                assert record["value"] == {"$type": UNKNOWN, "r": rkey}
                assert record["cid"] == str(CID.for_dag_cbor(_encode({"$type": UNKNOWN, "r": rkey})))
                seen.append(rkey)
            if not records:
                assert "cursor" not in page.body
                return seen
            assert page.body["cursor"] == seen[-1]
            cursor = page.body["cursor"]

    assert await walk(None) == sorted(rkeys, reverse=True)  # newest (highest rkey) first
    assert await walk(False) == sorted(rkeys, reverse=True)
    assert await walk(True) == sorted(rkeys)
    # default limit 50; other collections are empty
    page = await get(host, "com.atproto.repo.listRecords", repo=alice.did, collection=POST)
    assert page.status == 200 and page.body == {"records": []}


def _encode(value: Any) -> bytes:
    from atrepo.core import cbor

    return cbor.encode(value)


async def test_list_records_bad_params_and_unknown_repo(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.listRecords"
    for limit in (0, 101, "x"):
        reply = await get(host, call, repo=alice.did, collection=UNKNOWN, limit=limit)
        assert_error(reply, 400, "InvalidRequest")
    reply = await get(host, call, repo=alice.did, collection="nope")
    assert_error(reply, 400, "InvalidRequest")
    reply = await get(host, call, repo=alice.did)
    assert_error(reply, 400, "InvalidRequest")
    reply = await get(host, call, repo="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", collection=UNKNOWN)
    assert_error(reply, 400, "RepoNotFound", "Could not find repo: did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    reply = await get(host, "com.atproto.repo.getRecord", repo="nobody.test", collection=UNKNOWN, rkey="a")
    assert_error(reply, 400, "RepoNotFound")
    reply = await get(host, "com.atproto.repo.getRecord", repo=alice.did, collection=UNKNOWN, rkey="a")
    assert_error(reply, 400, "RecordNotFound", f"Could not locate record: at://{alice.did}/{UNKNOWN}/a")
    reply = await get(host, "com.atproto.repo.getRecord", repo=alice.did, collection=UNKNOWN)
    assert_error(reply, 400, "InvalidRequest")


async def test_describe_repo(host: HostClient, alice: User) -> None:
    await rpc(host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=POST, record=post("x"))
    await rpc(host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=UNKNOWN, record={})
    for repo in (alice.did, alice.handle):
        reply = await get(host, "com.atproto.repo.describeRepo", repo=repo)
        assert reply.status == 200, reply.body
        body = reply.body
        assert body["did"] == alice.did and body["handle"] == alice.handle
        assert body["collections"] == sorted([POST, UNKNOWN])
        assert body["handleIsCorrect"] is True
        assert body["didDoc"]["id"] == alice.did
        assert body["didDoc"]["alsoKnownAs"] == [f"at://{alice.handle}"]
    reply = await get(host, "com.atproto.repo.describeRepo", repo="nobody.test")
    assert_error(reply, 400, "RepoNotFound", "Could not find repo for DID: nobody.test")
    reply = await get(host, "com.atproto.repo.describeRepo")
    assert_error(reply, 400, "InvalidRequest")


async def test_reads_of_an_unavailable_repo(host: HostClient, alice: User) -> None:
    store = host.running.context.store
    worker = host.running.context.worker

    def set_status(s: Any, status: str) -> None:
        with s.transaction(alice.did) as tx:
            tx.set_status(status)

    await worker.run(set_status, "deactivated")
    reply = await get(host, "com.atproto.repo.describeRepo", repo=alice.did)
    assert_error(reply, 400, "RepoDeactivated")
    reply = await get(host, "com.atproto.repo.listRecords", repo=alice.did, collection=POST)
    assert_error(reply, 400, "RepoDeactivated")
    await worker.run(set_status, "takendown")
    reply = await get(host, "com.atproto.repo.getRecord", repo=alice.did, collection=POST, rkey="x")
    assert_error(reply, 400, "RepoTakendown")
    reply = await rpc(
        host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=POST, record=post("x")
    )
    assert_error(reply, 401, "AccountTakedown")
    assert store.get_account(alice.did) is not None


# --- uploadBlob -----------------------------------------------------------------------------------


async def test_upload_blob_and_post_with_it(host: HostClient, alice: User, bob: User) -> None:
    store = host.running.context.store
    reply = await upload(host, alice, PNG)  # the MarshalX SDK sends */*
    assert reply.status == 200, reply.body
    cid = CID.for_raw(PNG)
    assert reply.body == {
        "blob": {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": "image/png", "size": len(PNG)}
    }
    row = store.get_blob(alice.did, cid)
    assert row is not None and row.temporary
    assert store.blob_files.read(cid) == PNG
    # the same bytes again: nothing changes
    again = await upload(host, alice, PNG, "image/png")
    assert again.body == reply.body

    blob = reply.body["blob"]
    images = {"$type": "app.bsky.embed.images", "images": [{"image": blob, "alt": "a picture"}]}
    created = await rpc(
        host,
        alice,
        "com.atproto.repo.createRecord",
        repo=alice.did,
        collection=POST,
        record=post("look", embed=images),
    )
    assert created.status == 200, created.body
    row = store.get_blob(alice.did, cid)
    assert row is not None and not row.temporary  # referenced: permanent
    got = await get(
        host,
        "com.atproto.repo.getRecord",
        repo=alice.did,
        collection=POST,
        rkey=created.body["uri"].rsplit("/", 1)[1],
    )
    assert got.body["value"]["embed"]["images"][0]["image"] == blob

    # Bob cannot reference Alice's upload, nor a blob nobody uploaded
    refused = await rpc(
        host,
        bob,
        "com.atproto.repo.createRecord",
        repo=bob.did,
        collection=POST,
        record=post("mine", embed=images),
    )
    assert_error(refused, 400, "BlobNotFound", f"Could not find blob: {cid}")
    # a reference whose type differs from the upload's is refused while the upload is temporary
    text = await upload(host, bob, b"just some words\n")
    assert text.body["blob"]["mimeType"] == "text/plain"
    wrong = {**text.body["blob"], "mimeType": "image/png"}
    refused = await rpc(
        host, bob, "com.atproto.repo.createRecord", repo=bob.did, collection=UNKNOWN, record={"file": wrong}
    )
    assert_error(refused, 400, "InvalidRequest", "Mimetype does not match")
    check_store(host, alice.did)


async def test_upload_blob_errors(host: HostClient, alice: User) -> None:
    url = f"{host.url}/xrpc/com.atproto.repo.uploadBlob"
    async with host.http.post(url, data=PNG, headers={"Content-Type": "*/*"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "AuthMissing"
    # declared too large: refused before reading
    reply = await upload(host, alice, bytes(BLOB_UPLOAD_LIMIT + 1))
    assert_error(reply, 413, "PayloadTooLarge")

    # streamed without a length: counted as it arrives, and nothing is kept
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BLOB_UPLOAD_LIMIT // 65536 + 2):
            yield bytes(65536)

    headers = {"Authorization": f"Bearer {alice.token}", "Content-Type": "application/octet-stream"}
    async with host.http.post(url, data=chunks(), headers=headers) as resp:
        assert resp.status == 413, await resp.text()
        assert (await resp.json())["error"] == "PayloadTooLarge"
    store = host.running.context.store
    assert store.get_blob(alice.did, CID.for_raw(bytes(BLOB_UPLOAD_LIMIT + 1))) is None
    assert list((store.blob_files.root / "tmp").iterdir()) == []
    # exactly the limit is accepted
    reply = await upload(host, alice, bytes(BLOB_UPLOAD_LIMIT), "application/octet-stream")
    assert reply.status == 200, reply.body
    assert reply.body["blob"]["size"] == BLOB_UPLOAD_LIMIT
    assert reply.body["blob"]["mimeType"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("head", "declared", "expected"),
    [
        (PNG, "*/*", "image/png"),
        (PNG, "image/jpeg", "image/png"),  # the bytes win, as the reference
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "*/*", "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00", "*/*", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "*/*", "image/webp"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "*/*", "video/mp4"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "*/*", "image/avif"),
        (b"%PDF-1.7\n", "*/*", "application/pdf"),
        (b"hello world\n", "*/*", "text/plain"),
        ("h\u00e9llo".encode(), "*/*", "text/plain"),
        (b'{"a": 1}', "application/json", "application/json"),
        (b"\x00\x01\x02binary", "*/*", "application/octet-stream"),
        (b"\x00\x01\x02binary", "audio/ogg", "audio/ogg"),
        (b"", "*/*", "application/octet-stream"),
    ],
)
def test_sniff_mime(head: bytes, declared: str, expected: str) -> None:
    assert sniff_mime(head, declared) == expected


# --- the log a relay reads ------------------------------------------------------------------------


async def test_a_series_of_writes_chains_and_validates(host: HostClient, alice: User, bob: User) -> None:
    heads: list[int] = []
    host.running.context.notify_event.append(heads.append)
    uris: list[str] = []
    for i in range(5):
        for user in (alice, bob):
            reply = await rpc(
                host,
                user,
                "com.atproto.repo.createRecord",
                repo=user.did,
                collection=POST,
                record=post(f"{i}"),
            )
            assert reply.status == 200, reply.body
            if user is alice:
                uris.append(reply.body["uri"])
    await rpc(
        host,
        alice,
        "com.atproto.repo.putRecord",
        repo=alice.did,
        collection=UNKNOWN,
        rkey="p",
        record={"v": 1},
    )
    await rpc(
        host,
        alice,
        "com.atproto.repo.putRecord",
        repo=alice.did,
        collection=UNKNOWN,
        rkey="p",
        record={"v": 2},
    )
    await rpc(
        host,
        alice,
        "com.atproto.repo.deleteRecord",
        repo=alice.did,
        collection=POST,
        rkey=uris[0].rsplit("/", 1)[1],
    )
    writes = [
        {"$type": f"{AW}#delete", "collection": POST, "rkey": uri.rsplit("/", 1)[1]} for uri in uris[1:3]
    ] + [{"$type": f"{AW}#create", "collection": UNKNOWN, "value": {"x": 1}}]
    reply = await rpc(host, alice, "com.atproto.repo.applyWrites", repo=alice.did, writes=writes)
    assert reply.status == 200, reply.body
    assert heads == sorted(heads) and len(heads) == 14
    assert heads[-1] == host.running.context.store.head_seq()
    for user in (alice, bob):
        check_store(host, user.did)


async def test_concurrent_writes_all_land_in_one_chain(host: HostClient, alice: User, bob: User) -> None:
    """Writes racing on one repository are serialized: each gets its own commit, none is lost."""

    async def create(user: User, i: int) -> Reply:
        return await rpc(
            host,
            user,
            "com.atproto.repo.createRecord",
            repo=user.did,
            collection=UNKNOWN,
            rkey=f"c{i}",
            record={},
        )

    replies = await asyncio.gather(*(create(user, i) for i in range(12) for user in (alice, bob)))
    assert all(r.status == 200 for r in replies), [r.body for r in replies if r.status != 200]
    revs = [r.body["commit"]["rev"] for r in replies]
    assert len(set(revs)) == len(revs)
    for user in (alice, bob):
        page = await get(host, "com.atproto.repo.listRecords", repo=user.did, collection=UNKNOWN, limit=100)
        assert len(page.body["records"]) == 12
        check_store(host, user.did)


async def test_an_upload_cut_short_keeps_nothing(host: HostClient, alice: User) -> None:
    """A client that goes away mid-upload leaves no file behind and the host keeps serving."""
    port = int(host.url.rsplit(":", 1)[1])
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /xrpc/com.atproto.repo.uploadBlob HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {alice.token}\r\n".encode()
        + b"Content-Type: */*\r\nContent-Length: 100000\r\n\r\n"
        + PNG
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # the request is counted once its handler has finished (with a 400 nobody reads)
    counted = 'atrepo_xrpc_requests_total{nsid="com.atproto.repo.uploadBlob",method="POST",status="400"} 1'
    for _ in range(1000):
        async with host.http.get(f"{host.url}/metrics") as resp:
            if counted in await resp.text():
                break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the cut upload never finished")
    store = host.running.context.store
    assert not any((store.blob_files.root / "tmp").iterdir())
    assert store.get_blob(alice.did, CID.for_raw(PNG)) is None
    reply = await upload(host, alice, PNG)
    assert reply.status == 200, reply.body


async def test_a_subscriber_sees_each_api_write_as_one_valid_commit(host: HostClient, alice: User) -> None:
    """Frames a real WebSocket subscriber receives for API writes: one ``#commit`` each, valid and chained."""
    tracker = RepoTracker()
    key = key_of(host, alice.did).public_key
    async with host.http.ws_connect(f"{host.url}/xrpc/com.atproto.sync.subscribeRepos?cursor=0") as ws:

        async def next_frame() -> Any:
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            return decode_frame(message.data)

        kinds: list[type] = []
        for _ in range(4):  # the account's creation events, the genesis commit among them
            frame = await next_frame()
            kinds.append(type(frame))
            if isinstance(frame, CommitEvent | SyncEvent):
                outcome = tracker.process(frame, key)
                assert outcome.ok, outcome.error
        assert kinds.count(CommitEvent) == 1
        created = await rpc(
            host, alice, "com.atproto.repo.createRecord", repo=alice.did, collection=POST, record=post("a")
        )
        rkey = created.body["uri"].rsplit("/", 1)[1]
        calls: list[tuple[str, dict[str, Any], list[str]]] = [
            ("putRecord", {"collection": POST, "rkey": rkey, "record": post("b")}, ["update"]),
            (
                "applyWrites",
                {
                    "writes": [
                        {"$type": f"{AW}#create", "collection": UNKNOWN, "rkey": "x", "value": {}},
                        {"$type": f"{AW}#delete", "collection": POST, "rkey": rkey},
                    ]
                },
                ["create", "delete"],
            ),
            ("deleteRecord", {"collection": UNKNOWN, "rkey": "x"}, ["delete"]),
        ]
        frame = await next_frame()
        assert isinstance(frame, CommitEvent) and [op.action for op in frame.ops] == ["create"]
        assert str(frame.commit) == created.body["commit"]["cid"]
        assert tracker.process(frame, key).verdict is Verdict.NEXT
        for name, body, actions in calls:
            reply = await rpc(host, alice, f"com.atproto.repo.{name}", repo=alice.did, **body)
            assert reply.status == 200, reply.body
            frame = await next_frame()
            assert isinstance(frame, CommitEvent) and frame.repo == alice.did
            assert sorted(op.action for op in frame.ops) == sorted(actions)
            assert (
                str(frame.commit) == reply.body["commit"]["cid"] and frame.rev == reply.body["commit"]["rev"]
            )
            outcome = tracker.process(frame, key)
            assert outcome.ok and outcome.verdict is Verdict.NEXT, (outcome.verdict, outcome.error)


async def test_list_missing_blobs(host: HostClient, alice: User) -> None:
    call = "com.atproto.repo.listMissingBlobs"
    assert_error(await host.call(call), 401, "AuthMissing")
    reply = await host.call(call, token=alice.token)
    assert (reply.status, reply.body) == (200, {"blobs": []})
    # records referencing blobs never uploaded here, as an imported repository has them
    missing = sorted(CID.for_raw(bytes([i])) for i in range(3))
    key = key_of(host, alice.did)

    def import_records(store: Any) -> None:
        with store.transaction(alice.did) as tx:
            repo = tx.open_repo()
            writes = [
                Write(
                    "create",
                    UNKNOWN,
                    f"m{i}",
                    {
                        "$type": UNKNOWN,
                        "b": {"$type": "blob", "ref": cid, "mimeType": "image/png", "size": 1},
                    },
                )
                for i, cid in enumerate(missing)
            ]
            result = repo.apply_writes(writes, key)
            tx.apply_commit(result, blob_refs={f"{UNKNOWN}/m{i}": [cid] for i, cid in enumerate(missing)})
            tx.append_event(result.to_event)

    await host.running.context.worker.run(import_records)
    seen: list[dict[str, str]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        reply = await host.call(call, params=params, token=alice.token)
        assert reply.status == 200, reply.body
        if not reply.body["blobs"]:
            assert "cursor" not in reply.body
            break
        seen += reply.body["blobs"]
        cursor = reply.body["cursor"]
        assert cursor == reply.body["blobs"][-1]["cid"]
    by_cid = {b["cid"]: b["recordUri"] for b in seen}
    assert sorted(by_cid) == sorted(str(c) for c in missing) and len(seen) == 3
    for i, cid in enumerate(missing):
        assert by_cid[str(cid)] == f"at://{alice.did}/{UNKNOWN}/m{i}"
    reply = await host.call(call, params={"limit": "1001"}, token=alice.token)
    assert_error(reply, 400, "InvalidRequest")
