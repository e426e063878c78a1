"""identity.updateHandle and server.checkAccountStatus against a real host and its PLC directory."""

from __future__ import annotations

from typing import Any

from host_support import HostClient

from atrepo.core.events import decode_frame


async def _login(host: HostClient, handle: str) -> tuple[str, str]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def _plc(host: HostClient, path: str) -> Any:
    async with host.http.get(f"{host.running.plc_url}/{path}") as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def test_update_handle_updates_directory_store_and_firehose(host: HostClient) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    heads: list[int] = []
    ctx.notify_event.append(heads.append)
    head_before = ctx.store.head_seq()

    reply = await host.call("com.atproto.identity.updateHandle", body={"handle": "Alice2.test"}, token=token)
    assert reply.status == 200, reply.body

    doc = await _plc(host, did)
    assert doc["alsoKnownAs"] == ["at://alice2.test"]
    audit = await _plc(host, f"{did}/log/audit")
    assert len(audit) == 2 and audit[1]["operation"]["prev"] == audit[0]["cid"]
    data = await _plc(host, f"{did}/data")
    assert data["rotationKeys"] == [ctx.secrets.rotation_key.public_key.did_key()]

    found = await host.call("com.atproto.identity.resolveHandle", params={"handle": "alice2.test"})
    assert found.status == 200 and found.body == {"did": did}
    old = await host.call("com.atproto.identity.resolveHandle", params={"handle": "alice.test"})
    assert old.status == 400 and old.error == "HandleNotFound"

    rows = ctx.store.read_events(head_before, 10)
    assert [(r.seq, r.type, r.did) for r in rows] == [(head_before + 1, "#identity", did)]
    assert decode_frame(rows[0].frame).handle == "alice2.test"  # type: ignore[union-attr]
    assert heads == [head_before + 1]

    session = await host.call("com.atproto.server.getSession", token=token)
    assert session.body["handle"] == "alice2.test"

    # Unchanged: no new directory operation, but #identity again (the reference re-announces).
    again = await host.call("com.atproto.identity.updateHandle", body={"handle": "alice2.test"}, token=token)
    assert again.status == 200, again.body
    assert len(await _plc(host, f"{did}/log/audit")) == 2
    assert [r.type for r in ctx.store.read_events(head_before + 1, 10)] == ["#identity"]


async def test_update_handle_refusals(host: HostClient) -> None:
    did, token = await _login(host, "alice.test")
    await _login(host, "bob.test")
    head = host.running.context.store.head_seq()

    taken = await host.call("com.atproto.identity.updateHandle", body={"handle": "bob.test"}, token=token)
    assert taken.status == 400 and taken.error == "HandleNotAvailable"
    other = await host.call(
        "com.atproto.identity.updateHandle", body={"handle": "alice.invalid"}, token=token
    )
    assert other.status == 400 and other.error in {"UnsupportedDomain", "InvalidHandle"}
    short = await host.call("com.atproto.identity.updateHandle", body={"handle": "ab.test"}, token=token)
    assert short.status == 400 and short.error == "InvalidHandle"
    syntax = await host.call(
        "com.atproto.identity.updateHandle", body={"handle": "not a handle"}, token=token
    )
    assert syntax.status == 400
    anonymous = await host.call("com.atproto.identity.updateHandle", body={"handle": "alice3.test"})
    assert anonymous.status == 401

    # Nothing changed anywhere.
    assert host.running.context.store.head_seq() == head
    assert len(await _plc(host, f"{did}/log/audit")) == 1
    assert (await _plc(host, did))["alsoKnownAs"] == ["at://alice.test"]


async def test_check_account_status(host: HostClient) -> None:
    did, token = await _login(host, "alice.test")
    for i in range(3):
        reply = await host.call(
            "com.atproto.repo.createRecord",
            body={
                "repo": did,
                "collection": "app.bsky.feed.post",
                "record": {
                    "$type": "app.bsky.feed.post",
                    "text": f"post {i}",
                    "createdAt": "2024-01-01T00:00:00Z",
                },
            },
            token=token,
        )
        assert reply.status == 200, reply.body
    status = await host.call("com.atproto.server.checkAccountStatus", token=token)
    assert status.status == 200, status.body
    body = status.body
    head = host.running.context.store.repo_head(did)
    assert head is not None
    assert body["activated"] is True and body["validDid"] is True
    assert body["repoCommit"] == str(head.cid) and body["repoRev"] == head.rev
    assert body["indexedRecords"] == 3 and body["repoBlocks"] > 3
    assert body["privateStateValues"] == 0 and body["expectedBlobs"] == body["importedBlobs"] == 0
    assert status.headers["Cache-Control"] == "private"

    assert (await host.call("com.atproto.server.checkAccountStatus")).status == 401
