"""``com.atproto.repo.importRepo`` on a real host: verified, whole, only into a deactivated account."""

from __future__ import annotations

import io
import secrets
from typing import Any

from host_support import HostClient

from atrepo.core.car import CarReader, write_car
from atrepo.core.cid import CID
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.core.verify import verify_repo_car
from atrepo.store import SQLiteStore

POST = "app.bsky.feed.post"
NOW = "2026-12-01T00:00:00.000Z"


def post(text: str, image: CID | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": NOW}
    if image is not None:
        blob = {"$type": "blob", "ref": image, "mimeType": "image/png", "size": 64}
        record["embed"] = {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}
    return record


async def _account(host: HostClient, name: str) -> tuple[str, str]:
    body = (await host.create_account(f"{name}.test")).body
    return body["did"], body["accessJwt"]


async def _post(host: HostClient, did: str, token: str, rkey: str) -> None:
    body = {"repo": did, "collection": POST, "record": post(rkey)}  # a TID key
    reply = await host.call("com.atproto.repo.createRecord", body=body, token=token)
    assert reply.status == 200, reply.body


async def _get_repo(host: HostClient, did: str) -> bytes:
    async with host.http.get(f"{host.url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def _import(host: HostClient, token: str, car: bytes) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.ipld.car"}
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.importRepo", data=car, headers=headers
    ) as resp:
        body = await resp.json(content_type=None) if resp.content_length != 0 else None
        return resp.status, body


async def _set_status(host: HostClient, did: str, status: str) -> None:
    def change(store: SQLiteStore) -> None:
        with store.transaction(did) as tx:
            tx.set_status(status)  # type: ignore[arg-type]

    await host.running.context.worker.run(change)


async def _stored(host: HostClient, did: str) -> tuple[CID | None, dict[str, CID]]:
    """The account's head and its records, read from the store and verified from an export."""
    ctx = host.running.context

    def read(store: SQLiteStore) -> tuple[CID | None, dict[str, CID]]:
        head = store.repo_head(did)
        with store.snapshot():
            repo = Repo.open(store.repo_blocks(did), head.cid) if head else None
            blocks = list(repo.export_blocks()) if repo else []
        car = write_car([head.cid], blocks) if head else b""
        records = dict(verify_repo_car(io.BytesIO(car), did=did)) if head else {}
        return (head.cid if head else None), records

    return await ctx.worker.read(read)


async def _signing_key(host: HostClient, did: str) -> PrivateKey:
    ctx = host.running.context
    account = await ctx.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    return ctx.signing_key(account)


async def test_a_deactivated_account_imports_an_earlier_export_whole(host: HostClient) -> None:
    did, token = await _account(host, "alice")
    for i in range(30):
        await _post(host, did, token, f"old{i:02d}")
    car = await _get_repo(host, did)
    exported = dict(verify_repo_car(io.BytesIO(car), did=did))
    for i in range(10):
        await _post(host, did, token, f"new{i:02d}")
    await _set_status(host, did, "deactivated")
    head_seq = await host.running.context.worker.read(SQLiteStore.head_seq)

    status, body = await _import(host, token, car)
    assert (status, body) == (200, None)
    head, records = await _stored(host, did)
    assert records == exported
    assert head == CarReader(io.BytesIO(car)).roots[0]  # the imported commit, as it was
    # nothing announced: the account is deactivated; activation announces the new state
    assert await host.running.context.worker.read(SQLiteStore.head_seq) == head_seq


async def test_blobs_the_import_names_are_missing_until_uploaded(host: HostClient) -> None:
    did, token = await _account(host, "bob")
    key = await _signing_key(host, did)
    image = secrets.token_bytes(64)
    image_cid = CID.for_raw(image)
    result = Repo.create(did, key, [Write("create", POST, "3kimg22222222", post("with image", image_cid))])
    car = write_car([result.commit.cid], result.repo.export_blocks())
    await _set_status(host, did, "deactivated")
    assert (await _import(host, token, car))[0] == 200

    missing = await host.call("com.atproto.repo.listMissingBlobs", token=token)
    assert missing.status == 200
    assert [b["cid"] for b in missing.body["blobs"]] == [str(image_cid)]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=image, headers=headers
    ) as r:
        assert r.status == 200, await r.text()
    missing = await host.call("com.atproto.repo.listMissingBlobs", token=token)
    assert missing.body["blobs"] == []


async def test_refusals_store_nothing(host: HostClient) -> None:
    did, token = await _account(host, "carol")
    other, _ = await _account(host, "dave")
    await _post(host, did, token, "kept")
    own_car = await _get_repo(host, did)
    other_car = await _get_repo(host, other)
    before = await _stored(host, did)

    # an active account: refused before anything else
    status, body = await _import(host, token, own_car)
    assert (status, body["error"]) == (400, "InvalidRequest") and "deactivate" in body["message"]

    await _set_status(host, did, "deactivated")
    key = await _signing_key(host, did)
    forged = Repo.create(
        did, PrivateKey.generate("k256"), [Write("create", POST, "3kforged22222", post("x"))]
    )
    missing_record = Repo.create(did, key, [Write("create", POST, "3kmissing2222", post("y"))])
    record_cid = missing_record.ops[0].cid
    blocks = [(c, d) for c, d in missing_record.repo.export_blocks() if c != record_cid]
    tampered = bytearray(own_car)
    tampered[-5] ^= 0xFF
    cases = {
        "another account's repository": other_car,
        "a commit signed with another key": write_car([forged.commit.cid], forged.repo.export_blocks()),
        "a CAR without a record block": write_car([missing_record.commit.cid], blocks),
        "a block that does not hash to its CID": bytes(tampered),
        "not a CAR": b"hello, this is not a CAR",
        "an empty body": b"",
    }
    for what, car in cases.items():
        status, body = await _import(host, token, car)
        assert status == 400, (what, status, body)
        assert body["error"] == "InvalidRequest" and body["message"], what
        assert await _stored(host, did) == before, what


async def test_import_needs_a_session(host: HostClient) -> None:
    did, _token = await _account(host, "erin")
    car = await _get_repo(host, did)
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.importRepo",
        data=car,
        headers={"Content-Type": "application/vnd.ipld.car"},
    ) as resp:
        assert resp.status == 401
