"""End-to-end: ``atrepo sync`` mirrors real hosts into SQLite, verified, under writes and faults.

Two scenarios on 127.0.0.1, each against real hosts (and the first one a
fault-injecting proxy on the stream, the second a real relay):

* **Chosen DIDs from a host**: backfill, then creates/updates/deletes
  mirrored live; deactivation hides, reactivation shows, deletion removes; a
  dropped commit (the proxy's ``drop_commits``) breaks the chain, and the
  resync emits the delete the mirror had missed; a stop with writes meanwhile
  and a restart resume from the stored cursor. At every checkpoint the mirror
  equals the host's ``getRepo`` by digest.
* **One collection through a relay**: seeded from ``listReposByCollection``,
  accounts without the collection ignored, a new account discovered from its
  first post, and only the wanted collection mirrored; an account migrates
  to another host and the mirror follows it there.
"""

from __future__ import annotations

import json

from relay_testenv import ADMIN_PASSWORD
from sync_support import EMPTY_DIGEST, HOST_ADMIN_PASSWORD, SyncEnv, host_digest, wait_for
from upstream_proxy import UpstreamProxy, bind_local

from atrepo.cli.migrate import MigrationOptions, QuietReporter, migrate
from atrepo.relay import RelayConfig, start_relay
from atrepo.store.mirror import MirrorStore
from atrepo.sync import RunningSync


async def _read(running: RunningSync, fn: object, *args: object) -> object:
    return await running.engine.worker.read(fn, *args)  # type: ignore[arg-type]


async def _events(running: RunningSync, did: str) -> list[dict[str, object]]:
    events = await running.engine.worker.read(MirrorStore.read_events, 0, 10_000, dids=[did])
    return [json.loads(e.payload) for e in events]


async def test_mirror_dids_from_a_host(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    bob = await host.create_account("bob.test")
    carol = await host.create_account("carol.test")
    first = [await sync_env.post(alice, f"before {i}") for i in range(3)]
    await sync_env.post(bob, "bob before", "com.example.note")
    await sync_env.post(carol, "carol, untracked")

    proxy = UpstreamProxy(bind_local())
    await proxy.start(host.url)
    try:
        running = await sync_env.start_sync(proxy.url, dids=(alice.did, bob.did))
        await sync_env.wait_mirrored(running, alice)
        await sync_env.wait_mirrored(running, bob)
        assert await _read(running, MirrorStore.get_repo, carol.did) is None

        # live writes: create, update, delete
        new = await sync_env.post(alice, "live")
        await sync_env.put(alice, first[0], "edited")
        await sync_env.delete(alice, first[1])
        await sync_env.post(bob, "bob live")
        await sync_env.wait_mirrored(running, alice)
        await sync_env.wait_mirrored(running, bob)
        record = await running.engine.worker.read(
            MirrorStore.get_record, alice.did, "app.bsky.feed.post", first[0]
        )
        assert record is not None and record.value["text"] == "edited"
        assert await running.engine.worker.read(MirrorStore.get_record, alice.did, "app.bsky.feed.post", new)
        ops = [(e["operation"], e["rkey"]) for e in await _events(running, alice.did) if e.get("operation")]
        assert ("delete", first[1]) in ops and ("update", first[0]) in ops and ("create", new) in ops

        # deactivation hides, reactivation shows, deletion removes
        stored = await running.engine.worker.read(lambda s: s.records_digest(alice.did))
        await sync_env.deactivate(alice)

        async def hidden() -> bool:
            got = await running.engine.worker.read(lambda s: s.records_digest(alice.did, visible_only=True))
            return bool(got == EMPTY_DIGEST)

        await wait_for(hidden, what="alice's records hidden")
        assert await running.engine.worker.read(lambda s: s.records_digest(alice.did)) == stored
        await sync_env.activate(alice)

        async def shown() -> bool:
            got = await running.engine.worker.read(lambda s: s.records_digest(alice.did, visible_only=True))
            return bool(got == stored)

        await wait_for(shown, what="alice's records shown again")
        await sync_env.admin_delete(bob)

        async def removed() -> bool:
            repo = await running.engine.worker.read(MirrorStore.get_repo, bob.did)
            records = await running.engine.worker.read(MirrorStore.list_records, bob.did)
            return repo is not None and repo.account_status == "deleted" and not records

        await wait_for(removed, what="bob's records removed")

        # a dropped commit (a delete) breaks the chain: the resync emits the missed delete
        proxy.drop_commits(alice.did, 1)
        await sync_env.delete(alice, first[2])
        await sync_env.post(alice, "after the gap")
        await sync_env.wait_mirrored(running, alice)
        assert running.engine.counts["desyncs"] >= 1 and running.engine.counts["resyncs"] >= 1
        ops = [(e["operation"], e["rkey"]) for e in await _events(running, alice.did) if e.get("operation")]
        assert ("delete", first[2]) in ops

        # status and metrics
        async with sync_env.http.get(f"{running.url}/status.json") as resp:
            doc = await resp.json()
        assert doc["repos"]["active"] >= 1 and doc["cursor"] is not None

        # caught up: no lag in events nor in time (the newest event handled had an upstream time)
        async def caught_up() -> bool:
            return running.engine.lag == 0 and running.engine.lag_seconds == 0.0

        await wait_for(caught_up, what="no lag")
        assert "lagSeconds" in doc
        assert running.engine.last_event_time is not None and running.engine.last_event_time.endswith("Z")
        async with sync_env.http.get(f"{running.url}/metrics") as resp:
            text = await resp.text()
        assert "atrepo_sync_repos" in text and "atrepo_sync_cursor" in text
        assert "atrepo_sync_lag_seconds" in text
        async with sync_env.http.get(running.url + "/", headers={"Accept": "text/html"}) as resp:
            page = await resp.text()
        assert resp.status == 200 and "atrepo sync" in page and "Desynchronized" in page

        # stop; writes meanwhile; restart resumes from the stored cursor
        cursor = running.engine.cursor
        await sync_env.stop_sync(running)
        await sync_env.post(alice, "while stopped")
        await sync_env.delete(alice, new)
        running = await sync_env.start_sync(proxy.url, dids=(alice.did, bob.did))
        assert running.engine.subscriber is not None
        assert running.engine.cursor is not None and cursor is not None and running.engine.cursor >= cursor
        await sync_env.wait_mirrored(running, alice)
        assert running.engine.counts["resyncs"] == 0  # the stream carried it forward, no refetch
        assert await running.engine.worker.read(lambda s: s.records_digest(alice.did)) == await host_digest(
            alice
        )
    finally:
        await proxy.stop()


async def test_one_collection_through_a_relay(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    second = await sync_env.add_host()
    posts = "app.bsky.feed.post"
    xena = await host.create_account("xena.test")
    yuri = await host.create_account("yuri.test")
    zoe = await host.create_account("zoe.test")
    await sync_env.post(xena, "x post")
    await sync_env.post(xena, "x note", "com.example.note")
    await sync_env.post(yuri, "y post")
    await sync_env.post(zoe, "z note only", "com.example.note")
    relay = await start_relay(
        RelayConfig(
            host="127.0.0.1",
            port=0,
            data_dir=sync_env.tmp / "relay",
            plc_url=sync_env.plc_url,
            upstreams=(host.url, second.url),
            admin_password=ADMIN_PASSWORD,
        )
    )
    try:

        async def relay_knows() -> bool:
            url = f"{relay.url}/xrpc/com.atproto.sync.listReposByCollection"
            async with sync_env.http.get(url, params={"collection": posts}) as resp:
                body = await resp.json()
            return resp.status == 200 and {xena.did, yuri.did} <= {r["did"] for r in body.get("repos", [])}

        await wait_for(relay_knows, what="the relay to index the posts collection")
        running = await sync_env.start_sync(relay.url, collections=(posts,))
        await sync_env.wait_mirrored(running, xena, (posts,))
        await sync_env.wait_mirrored(running, yuri, (posts,))
        assert await _read(running, MirrorStore.get_repo, zoe.did) is None
        records = await running.engine.worker.read(MirrorStore.list_records, xena.did)
        assert {r.collection for r in records} == {posts}

        # a new account is discovered from its first post; notes are verified but not mirrored
        walt = await host.create_account("walt.test")
        await sync_env.post(walt, "w note", "com.example.note")
        await sync_env.post(walt, "w post")
        await sync_env.post(xena, "x note 2", "com.example.note")
        await sync_env.post(xena, "x post 2")
        await sync_env.wait_mirrored(running, walt, (posts,))
        await sync_env.wait_mirrored(running, xena, (posts,))
        await sync_env.post(zoe, "z note 2", "com.example.note")
        await running.engine.wait_idle()
        assert await _read(running, MirrorStore.get_repo, zoe.did) is None

        # xena migrates to the second host; the mirror follows her there
        result = await migrate(
            MigrationOptions(
                from_url=host.url,
                to_url=second.url,
                handle=xena.handle,
                password="correct horse",
                from_admin_password=HOST_ADMIN_PASSWORD,
            ),
            reporter=QuietReporter(),
            session=sync_env.http,
        )
        assert result.status == "done", result
        moved = await sync_env.login(second, xena)
        await sync_env.post(moved, "x post from the new host")
        await sync_env.wait_mirrored(running, moved, (posts,))
        repo = await running.engine.worker.read(MirrorStore.get_repo, xena.did)
        assert repo is not None and repo.account_status == "active"
        await sync_env.stop_sync(running)
    finally:
        await relay.stop()


async def test_event_log_retention_prunes_outputs_not_records(sync_env: SyncEnv) -> None:
    """Past the retention the Jetstream/record-stream log is pruned and the floor moves; records stay."""
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    for i in range(3):
        await sync_env.post(alice, f"post {i}")
    running = await sync_env.start_sync(
        host.url, dids=(alice.did,), event_retention_s=0.5, prune_interval_s=0.2
    )
    await sync_env.wait_mirrored(running, alice)
    assert (await _read(running, MirrorStore.stats))["events"] > 0

    async def pruned() -> bool:
        stats = await _read(running, MirrorStore.stats)
        return stats["events"] == 0 and stats["floor_time_us"] > 0

    await wait_for(pruned, what="the event log pruned", timeout=10)
    assert running.engine.counts["events_pruned"] >= 3
    assert len(await _read(running, MirrorStore.list_records, alice.did)) == 3
    assert await _read(running, MirrorStore.records_digest, alice.did) == await host_digest(alice)


async def test_upstream_seq_gone_back_replays_its_window(sync_env: SyncEnv) -> None:
    """FutureCursor (the upstream's seq went back, as after a restore): the consumer replays the
    upstream's window from 0, drops what it already applied, and goes on mirroring; nothing stops."""
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    for i in range(3):
        await sync_env.post(alice, f"post {i}")
    proxy = UpstreamProxy(bind_local())
    await proxy.start(host.url)
    try:
        running = await sync_env.start_sync(proxy.url, dids=(alice.did,))
        await sync_env.wait_mirrored(running, alice)
        await sync_env.post(alice, "before the reset")
        await sync_env.wait_mirrored(running, alice)
        before = running.engine.cursor
        assert before is not None
        proxy.reset_seq(2)  # the upstream now numbers its events lower: our cursor is past its head
        await proxy.close_streams()

        async def replayed() -> bool:
            return running.engine.counts["future_cursor"] >= 1 and running.engine.connected.is_set()

        await wait_for(replayed, what="FutureCursor answered by a replay")
        assert "FutureCursor" in proxy.error_frames
        await sync_env.post(alice, "after the reset")
        await sync_env.wait_mirrored(running, alice)
        after = running.engine.cursor
        assert after is not None and after < before  # the cursor follows the upstream's new numbering
        assert await _read(running, MirrorStore.records_digest, alice.did) == await host_digest(alice)
        assert running.engine.counts["invalid"] == 0
    finally:
        await proxy.stop()
