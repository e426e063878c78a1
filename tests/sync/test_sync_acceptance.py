"""Issue 12's acceptance scenario, end to end: ``atrepo sync`` behind a relay, under writes and faults.

On 127.0.0.1: two hosts (the first runs the PLC directory), a fault proxy
between the second host and the relay (that host's public URL is the proxy,
so its accounts' DID documents name it), a relay with both as upstreams, and
``atrepo sync`` as a real process following the relay and mirroring
``app.bsky.feed.post`` of five accounts into SQLite, and again into
PostgreSQL (a real server, tests/pg_support.py). A background writer
creates, updates and deletes records (and notes, which must not be mirrored)
across the accounts for the whole scenario, while:

* commits of one account are dropped on the relay's path (a ``prevData``
  gap: the relay resyncs it and so must the mirror);
* an account migrates from the first host to the second;
* ``atrepo sync`` is killed with ``-9`` and restarted on the same data (right
  after the relay saw the gap, and again after the account changes);
* an account is deactivated (hidden), reactivated (shown), another deleted.

At the end, writes stopped and everything caught up, the mirror of each
account equals its host's verified ``getRepo`` restricted to the collection,
by digest, deletes included; the deleted account has no records; the
reactivated one is visible again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from acceptance_support import POSTS, SyncProcess, Writer, mirror_view
from relay_testenv import ADMIN_PASSWORD, Account
from sync_support import EMPTY_DIGEST, HOST_ADMIN_PASSWORD, SyncEnv, host_digest, wait_for
from upstream_proxy import UpstreamProxy, bind_local

from atrepo.cli.migrate import MigrationOptions, QuietReporter, migrate
from atrepo.relay import RelayConfig, start_relay
from atrepo.relay.app import RunningRelay
from atrepo.store.mirror import open_mirror


async def test_acceptance_sync_through_a_relay_under_faults(sync_env: SyncEnv, database: str | None) -> None:
    host_a = await sync_env.add_host()
    proxy = UpstreamProxy(bind_local())
    host_b = await sync_env.add_host(public_url=proxy.url)
    await proxy.start(host_b.url)
    relay: RunningRelay | None = None
    sync: SyncProcess | None = None
    writer: Writer | None = None
    try:
        ann = await host_a.create_account("ann.test")  # written all along
        dee = await host_a.create_account("dee.test")  # deactivated, then reactivated
        dan = await host_a.create_account("dan.test")  # deleted
        max_ = await host_a.create_account("max.test")  # migrates to host B
        gil = await host_b.create_account("gil.test")  # loses commits on the relay's path
        ola = await host_a.create_account("ola.test")  # not tracked
        tracked = [ann, dee, dan, max_, gil]
        for account in [*tracked, ola]:
            await sync_env.post(account, "before")
            await sync_env.post(account, "a note before", "com.example.note")

        relay = await start_relay(
            RelayConfig(
                host="127.0.0.1",
                port=0,
                data_dir=sync_env.tmp / "relay",
                plc_url=sync_env.plc_url,
                upstreams=(host_a.url, proxy.url),
                admin_password=ADMIN_PASSWORD,
            )
        )
        await wait_for(lambda: _true(proxy.connected > 0), what="the relay subscribed to host B's proxy")
        data = sync_env.tmp / "mirror"
        sync = SyncProcess(sync_env, relay.url, data, [a.did for a in tracked], POSTS, database)
        await sync.start()
        current: dict[str, Account] = {a.did: a for a in tracked}

        async def mirrored(*accounts: Account) -> bool:
            for account in accounts:
                acc = current[account.did]
                view = await asyncio.to_thread(mirror_view, data, acc.did, database)
                if view.state != "active" or view.account_status != "active":
                    return False
                if view.digest != await host_digest(acc, (POSTS,)):
                    return False
            return True

        await wait_for(lambda: mirrored(*tracked), what="the first backfill")

        writer = Writer(sync_env, [*tracked, ola])
        writer.start()
        await asyncio.sleep(0.5)

        # --- commits of gil dropped between host B and the relay: a gap, resynced -------------
        proxy.drop_commits(gil.did, 2)
        await wait_for(lambda: _true(len(proxy.dropped) >= 2), what="two of gil's commits dropped")

        def gil_faults() -> list[Any]:
            faults = relay.context.ingest.faults if relay is not None else ()
            return [f for f in faults if f.kind == "desynchronized" and f.did == gil.did]

        await wait_for(lambda: _true(bool(gil_faults())), what="the relay to see gil's gap")

        # --- kill -9 in the middle of the load (and of gil's resync), restart on the same data --
        await sync.kill9()
        await asyncio.sleep(0.5)  # writes go on while it is down
        await sync.start()

        # --- max migrates from host A to host B ---------------------------------------------
        await writer.pause(max_.did)
        result = await migrate(
            MigrationOptions(
                from_url=host_a.url,
                to_url=host_b.url,
                handle=max_.handle,
                password="correct horse",
                from_admin_password=HOST_ADMIN_PASSWORD,
            ),
            reporter=QuietReporter(),
            session=sync_env.http,
        )
        assert result.status == "done", result
        moved = await sync_env.login(host_b, max_)
        current[max_.did] = moved
        await writer.resume(max_.did, moved)

        # --- dee deactivated: hidden; reactivated: shown ------------------------------------
        await writer.pause(dee.did)
        await sync_env.deactivate(dee)

        async def dee_hidden() -> bool:
            view = await asyncio.to_thread(mirror_view, data, dee.did, database)
            return view.account_status == "deactivated" and view.visible_digest == EMPTY_DIGEST

        await wait_for(dee_hidden, what="dee hidden after her deactivation", timeout=20)
        await sync_env.activate(dee)
        await writer.resume(dee.did)

        # --- dan deleted by the host's admin --------------------------------------------------
        await writer.pause(dan.did)
        await sync_env.admin_delete(dan)

        await asyncio.sleep(0.5)  # more load over everything
        await _no_errors(sync_env, sync)

        # --- killed with -9 again, with the deletion and reactivation maybe not yet applied ---
        await sync.kill9()
        await asyncio.sleep(0.3)
        await sync.start()
        await asyncio.sleep(0.5)
        await writer.stop()
        assert writer.done["create"] and writer.done["update"] and writer.done["delete"], writer.done

        # --- caught up: every account equal to its host, by digest ---------------------------
        live = [ann, dee, max_, gil]

        async def dan_gone() -> bool:
            view = await asyncio.to_thread(mirror_view, data, dan.did, database)
            return view.account_status == "deleted" and view.records == 0

        try:
            await wait_for(lambda: mirrored(*live), what="the mirror to equal the hosts", timeout=30)
            await wait_for(dan_gone, what="dan's records removed", timeout=10)
        except AssertionError as exc:
            views = {a.handle: await asyncio.to_thread(mirror_view, data, a.did, database) for a in tracked}
            raise AssertionError(f"{exc}\nmirror: {views}\nsync stderr:\n{sync.log_text()}") from None
        await _no_errors(sync_env, sync)
        last = await sync.terminate()
        assert last["stopped"] is True and last["cursor"] is not None, last

        store = open_mirror(database or data)
        try:
            for account in live:
                acc = current[account.did]
                want = await host_digest(acc, (POSTS,))
                assert store.records_digest(acc.did) == want, acc.handle
                assert store.records_digest(acc.did, visible_only=True) == want, acc.handle
                repo = store.get_repo(acc.did)
                assert repo is not None and repo.state == "active" and repo.account_status == "active"
                assert {r.collection for r in store.list_records(acc.did)} <= {POSTS}
            assert store.records_digest(dan.did) == EMPTY_DIGEST and not store.list_records(dan.did)
            gone = store.get_repo(dan.did)
            assert gone is not None and gone.account_status == "deleted", gone
            assert store.get_repo(ola.did) is None
            assert store.get_cursor(relay.url) == last["cursor"]
        finally:
            store.close()
    finally:
        if writer is not None:
            await asyncio.gather(writer.stop(), return_exceptions=True)
        if sync is not None:
            await sync.close()
        if relay is not None:
            await relay.stop()
        await proxy.stop()


async def _true(value: bool) -> bool:
    return value


async def _no_errors(env: SyncEnv, sync: SyncProcess) -> None:
    """The process's ``/status.json``: no repository in error, no fetch failed, nothing invalid."""
    async with env.http.get(f"{sync.url}/status.json") as resp:
        assert resp.status == 200, await resp.text()
        status = await resp.json()
    assert status["repos"]["error"] == 0, status
    assert status["counts"].get("fetch_failures", 0) == 0 and status["counts"].get("invalid", 0) == 0, status
