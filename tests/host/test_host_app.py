"""The host process around the handlers: well-known DID, relays notified, orphan DIDs tombstoned, metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from host_support import HostClient

from atrepo.host import HostConfig, start_host
from atrepo.host import accounts as accounts_module
from atrepo.store import SQLiteStore


async def test_well_known_atproto_did(host: HostClient) -> None:
    did = (await host.create_account("alice.test")).body["did"]
    port = host.url.rsplit(":", 1)[1]
    async with host.http.get(
        f"{host.url}/.well-known/atproto-did", headers={"Host": f"alice.test:{port}"}
    ) as r:
        assert (r.status, await r.text(), r.content_type) == (200, did, "text/plain")
    async with host.http.get(f"{host.url}/.well-known/atproto-did", headers={"Host": "bob.test"}) as r:
        assert r.status == 404


async def test_health_and_metrics(host: HostClient) -> None:
    reply = await host.call("_health")
    assert reply.status == 200 and "version" in reply.body
    await host.create_account("alice.test")
    async with host.http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    assert "atrepo_host_event_head_seq 4" in text
    assert (
        'atrepo_xrpc_requests_total{nsid="com.atproto.server.createAccount",method="POST",status="200"} 1'
        in text
    )


async def test_unknown_method(host: HostClient) -> None:
    reply = await host.call(
        "com.atproto.sync.listReposByCollection", params={"collection": "app.bsky.feed.post"}
    )
    assert (reply.status, reply.error) == (501, "MethodNotImplemented")


async def test_orphan_did_is_tombstoned_when_the_handle_was_taken_meanwhile(
    host: HostClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = host.running.context

    def take_handle(store: SQLiteStore) -> None:
        with store.transaction("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz") as tx:
            tx.create_account(handle="race.test", signing_key=b"\x01" * 32)

    real_hash = accounts_module.hash_password

    def hash_then_race(password: str) -> str:
        ctx.worker.submit(take_handle).result(timeout=10)  # another request wins the handle now
        return real_hash(password)

    monkeypatch.setattr(accounts_module, "hash_password", hash_then_race)
    reply = await host.create_account("race.test")
    assert (reply.status, reply.error) == (400, "HandleNotAvailable")
    assert ctx.store.head_seq() == 0  # nothing of the losing attempt was stored
    async with host.http.get(f"{host.running.plc_url}/export", params={"count": "100"}) as resp:
        ops = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [op["operation"]["type"] for op in ops] == ["plc_operation", "plc_tombstone"]
    did = ops[0]["did"]
    async with host.http.get(f"{host.running.plc_url}/{did}") as resp:
        assert resp.status == 404


async def test_relays_are_asked_to_crawl(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    received: list[Any] = []
    arrived = asyncio.Event()

    async def request_crawl(request: web.Request) -> web.Response:
        received.append(await request.json())
        arrived.set()
        return web.json_response({})

    relay = web.Application()
    relay.router.add_post("/xrpc/com.atproto.sync.requestCrawl", request_crawl)
    runner = web.AppRunner(relay, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        relay_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        config = HostConfig(
            port=0, plc_port=0, data_dir=tmp_path / "data", relays=(relay_url,), database=database
        )
        running = await start_host(config)
        try:
            await asyncio.wait_for(arrived.wait(), 10)
            assert received == [{"hostname": running.url.removeprefix("http://")}]
            async with http.post(
                f"{running.url}/xrpc/com.atproto.server.createAccount",
                json={"handle": "alice.test", "password": "pw"},
            ) as resp:
                assert resp.status == 200
            assert running.context.crawlers.scheduled == 1  # within the interval: not sent again
        finally:
            await running.stop()
    finally:
        await runner.cleanup()


async def test_relay_down_does_not_break_the_host(tmp_path: Path, database: str | None) -> None:
    config = HostConfig(
        port=0, plc_port=0, data_dir=tmp_path / "data", relays=("http://127.0.0.1:9",), database=database
    )
    running = await start_host(config)
    await running.stop()
    await running.stop()  # idempotent


async def test_concurrent_writes_are_group_committed_and_all_land(host: HostClient) -> None:
    """Writes queued behind a busy writer share one transaction; each gets its own reply and record.

    On PostgreSQL the host's writer threads commit side by side instead of grouping (``PG_WRITERS``,
    ``group_max=1``): the same writes must all land, those of one repository serialized by its lock.
    """
    ctx = host.running.context
    grouping = ctx.worker.group_max > 1
    accounts = []
    for name in ("gc-a", "gc-b", "gc-c"):
        body = (await host.create_account(f"{name}.test")).body
        accounts.append((body["did"], body["accessJwt"]))
    release, running = threading.Event(), threading.Event()

    def block(_store: object) -> bool:
        running.set()
        return release.wait(30)

    blocker = ctx.worker.submit(block)
    # Running before the writes are sent: had the writer thread woken late (a loaded machine), it would
    # have taken the blocker together with writes already queued, in one group counted before release.
    assert await asyncio.to_thread(running.wait, 30)

    async def post(did: str, token: str, text: str, **extra: Any) -> Any:
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T00:00:00Z"}
        return await host.call(
            "com.atproto.repo.createRecord",
            body={"repo": did, "collection": "app.bsky.feed.post", "record": record, **extra},
            token=token,
        )

    writes = [asyncio.ensure_future(post(did, token, f"gc{i}")) for i in range(5) for did, token in accounts]
    # a write that fails inside the group (its swap names no commit of the repo), alone
    bogus = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    writes.append(asyncio.ensure_future(post(*accounts[0], "never", swapCommit=bogus)))
    # until every request is queued behind the blocker (15 s at most, under load); several
    # writer threads (no grouping) take them instead of queueing them
    for _ in range(1500 if grouping else 0):
        if ctx.worker.pending >= len(writes) + 1:
            break
        await asyncio.sleep(0.01)
    assert ctx.worker.pending >= 2 or not grouping, "no writes queued behind the blocker"
    groups_before = ctx.worker.groups
    release.set()
    await asyncio.wrap_future(blocker)
    replies = await asyncio.gather(*writes)
    assert ctx.worker.groups > groups_before or not grouping
    assert sorted(r.status for r in replies) == [200] * 15 + [400]
    assert replies[-1].error == "InvalidSwap"
    for did, _token in accounts:
        listed = await host.call(
            "com.atproto.repo.listRecords", params={"repo": did, "collection": "app.bsky.feed.post"}
        )
        assert sorted(r["value"]["text"] for r in listed.body["records"]) == [f"gc{i}" for i in range(5)]
    async with host.http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    grouped = [
        line for line in text.splitlines() if line.startswith("atrepo_host_store_grouped_writes_total ")
    ]
    assert grouped and float(grouped[0].split()[1]) >= (2 if grouping else 0)


async def _metric(host: HostClient, name: str) -> float:
    async with host.http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")))


async def test_a_write_is_counted_and_fanned_out_before_the_next_request(host: HostClient) -> None:
    """Record writes notify just after their reply is sent (``notify_soon``), yet before the loop
    reads another request: a client's next call already sees the write counted."""
    created = (await host.create_account("notified.test")).body
    did, token = created["did"], created["accessJwt"]
    for n in range(5):
        commits = await _metric(host, "atrepo_host_commits_total")
        reply = await host.call(
            "com.atproto.repo.createRecord",
            body={"repo": did, "collection": "app.bsky.feed.post", "record": _post(f"n{n}")},
            token=token,
        )
        assert reply.status == 200
        head = await host.running.context.worker.read(lambda s: s.head_seq())
        assert await _metric(host, "atrepo_host_commits_total") == commits + 1
        # the gauge is set where the firehose is offered the event (HostContext._notify_now)
        assert await _metric(host, "atrepo_host_event_head_seq") == head


def _post(text: str) -> dict[str, Any]:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}
