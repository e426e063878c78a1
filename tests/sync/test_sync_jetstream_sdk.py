"""``atrepo sync``'s Jetstream endpoint read by the MarshalX SDK's Jetstream client, unchanged.

Every event the endpoint serves came from a verified repository (a backfill
or a verified live commit); the SDK sees only the filtered ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from atproto_jetstream import AsyncJetstreamClient
from sync_support import SyncEnv, wait_for


async def test_sdk_jetstream_client_gets_the_filtered_verified_events(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    bob = await host.create_account("bob.test")
    backfilled = [await sync_env.post(alice, f"before {i}") for i in range(3)]
    await sync_env.post(alice, "a note", "com.example.note")
    await sync_env.post(bob, "bob's post")
    running = await sync_env.start_sync(host.url, dids=(alice.did, bob.did))
    await sync_env.wait_mirrored(running, alice)
    await sync_env.wait_mirrored(running, bob)

    ws = running.url.replace("http://", "ws://")
    params = {"collections": ["app.bsky.feed.*"], "dids": [alice.did], "cursor": 0}
    client = AsyncJetstreamClient(params=params, base_uri=f"{ws}/xrpc", compress=False)
    got: list[Any] = []
    errors: list[BaseException] = []

    async def on_message(message: Any) -> None:
        got.append(message)

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    task = asyncio.get_running_loop().create_task(client.start(on_message, on_error))
    try:

        def commits() -> list[Any]:
            return [m for m in got if type(m).__name__ == "Commit"]

        async def replayed() -> bool:
            return len(commits()) >= len(backfilled)

        await wait_for(replayed, what="the backfilled posts")
        live = await sync_env.post(alice, "live")
        await sync_env.post(bob, "bob live")  # another DID: filtered out
        await sync_env.post(alice, "live note", "com.example.note")  # another collection: filtered out

        async def arrived() -> bool:
            return any(getattr(c, "rkey", None) == live for c in commits())

        await wait_for(arrived, what="the live post")
        await asyncio.sleep(0.3)  # anything filtered wrongly would arrive by now
    finally:
        await client.stop()
        async with asyncio.timeout(10):
            await task
    assert not errors
    seen = commits()
    assert {c.did for c in seen} == {alice.did}
    assert {c.collection for c in seen} == {"app.bsky.feed.post"}
    assert [c.rkey for c in seen] == [*backfilled, live]
    assert all(c.operation == "create" and c.cid and c.record for c in seen)
    seqs = [m.seq for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
