"""Host maintenance and metrics: stale temporary blobs are collected; /metrics counts commits and events."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from host_support import HostClient

from atrepo.core.cid import CID
from atrepo.host import HostConfig, start_host
from atrepo.host.app import TEMPORARY_BLOB_GRACE_S

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"


async def upload(host: HostClient, token: str, data: bytes) -> dict[str, Any]:
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.uploadBlob",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "*/*"},
    ) as resp:
        assert resp.status == 200
        blob: dict[str, Any] = (await resp.json())["blob"]
        return blob


async def metrics_of(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The unlabelled samples of ``/metrics`` (labelled ones keep their labels in the name)."""
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([^#\s][^ ]*) (\S+)$", text, re.MULTILINE)}


async def test_prune_collects_unreferenced_uploads_after_the_grace(host: HostClient) -> None:
    account = (await host.create_account("alice.test")).body
    did, token = account["did"], account["accessJwt"]
    kept = await upload(host, token, PNG)
    stale = await upload(host, token, PNG + b"unused")
    record = {
        "$type": POST,
        "text": "look",
        "createdAt": NOW,
        "embed": {"$type": "app.bsky.embed.images", "images": [{"image": kept, "alt": "a picture"}]},
    }
    reply = await host.call(
        "com.atproto.repo.createRecord",
        body={"repo": did, "collection": POST, "record": record},
        token=token,
    )
    assert reply.status == 200, reply.body
    ctx = host.running.context
    kept_cid, stale_cid = CID.parse(kept["ref"]["$link"]), CID.parse(stale["ref"]["$link"])

    assert (await ctx.prune()).blobs == 0  # within the grace: a record may still name it
    later_ms = time.time_ns() // 1_000_000 + int(TEMPORARY_BLOB_GRACE_S * 1000) + 60_000
    pruned = await ctx.prune(now_ms=later_ms)
    assert pruned.blobs == 1 and pruned.events == 0  # events keep their 72 h window
    assert ctx.store.get_blob(did, stale_cid) is None
    assert not ctx.store.blob_files.exists(stale_cid)
    row = ctx.store.get_blob(did, kept_cid)
    assert row is not None and not row.temporary and ctx.store.blob_files.exists(kept_cid)
    assert (await ctx.prune(now_ms=later_ms)).blobs == 0

    samples = await metrics_of(host.http, host.url)
    assert samples['atrepo_host_pruned_total{kind="temporary_blobs"}'] == 1


async def test_metrics_count_commits_events_and_queue_depth(host: HostClient) -> None:
    samples = await metrics_of(host.http, host.url)
    assert samples["atrepo_host_commits_total"] == 0 and samples["atrepo_host_events_total"] == 0
    account = (await host.create_account("alice.test")).body
    did, token = account["did"], account["accessJwt"]
    record = {"$type": POST, "text": "hi", "createdAt": NOW}
    reply = await host.call(
        "com.atproto.repo.createRecord", body={"repo": did, "collection": POST, "record": record}, token=token
    )
    assert reply.status == 200
    samples = await metrics_of(host.http, host.url)
    assert samples["atrepo_host_commits_total"] == 2  # genesis, then the record
    assert samples["atrepo_host_events_total"] == 5  # #identity #account #commit #sync, then #commit
    assert samples["atrepo_host_event_head_seq"] == 5
    # queue depth: hold the writer thread on one job while another waits behind it (or, with
    # several writer threads as on PostgreSQL, beside it: it waits for the same gate); once the
    # held job runs, the writer has finished the books of every job before it
    started, gate = threading.Event(), threading.Event()

    def hold(_store: object) -> None:
        started.set()
        gate.wait(20)

    held = host.running.context.worker.submit(hold)
    queued = host.running.context.worker.submit(lambda _store: gate.wait(20))
    try:
        assert await asyncio.to_thread(started.wait, 20)
        samples = await metrics_of(host.http, host.url)
        assert samples["atrepo_host_store_writer_queue_depth"] == 2
    finally:
        gate.set()
        await asyncio.wrap_future(held)
        await asyncio.wrap_future(queued)
    async with host.http.ws_connect(f"{host.url}/xrpc/com.atproto.sync.subscribeRepos") as ws:
        for _ in range(200):  # the subscriber registers after the handshake; bounded, not timed
            samples = await metrics_of(host.http, host.url)
            if samples.get("atrepo_firehose_subscribers") == 1:
                break
            await asyncio.sleep(0.01)
        assert samples.get("atrepo_firehose_subscribers") == 1
        await ws.close()
    assert any(name.startswith("atrepo_xrpc_request_duration_seconds_bucket") for name in samples)


async def test_event_counter_starts_from_the_head_after_a_restart(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    config = HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database)
    running = await start_host(config)
    try:
        async with http.post(
            f"{running.url}/xrpc/com.atproto.server.createAccount",
            json={"handle": "alice.test", "password": "correct horse"},
        ) as resp:
            assert resp.status == 200
            token, did = (body := await resp.json())["accessJwt"], body["did"]
    finally:
        await running.stop()
    running = await start_host(config)
    try:
        samples = await metrics_of(http, running.url)
        assert samples["atrepo_host_event_head_seq"] == 4 and samples["atrepo_host_events_total"] == 0
        record = {"$type": POST, "text": "hi", "createdAt": NOW}
        async with http.post(
            f"{running.url}/xrpc/com.atproto.repo.createRecord",
            json={"repo": did, "collection": POST, "record": record},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200
        samples = await metrics_of(http, running.url)
        assert samples["atrepo_host_events_total"] == 1 and samples["atrepo_host_commits_total"] == 1
    finally:
        await running.stop()
