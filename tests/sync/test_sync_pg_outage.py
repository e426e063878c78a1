"""The sync consumer through a PostgreSQL crash: it keeps running and its mirror catches up exactly.

``atrepo sync`` mirrors a host into its own throwaway PostgreSQL server,
which is stopped as a crash stops it and started again while the host keeps
taking writes. The consumer process is not restarted: once the database is
back it resumes from the cursor stored with the mirror's rows (one
transaction), and the mirror equals the host record for record.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from relay_testenv import Account
from sync_support import SyncEnv

from pg_support import Cluster

pytestmark = pytest.mark.timeout(150)

DOWN_S = 1.5


async def test_the_consumer_rides_out_a_postgresql_crash(sync_env: SyncEnv, own_cluster: Cluster) -> None:
    database = own_cluster.new_database()
    host = await sync_env.add_host()
    accounts: list[Account] = [await host.create_account(f"mirror{i}.test") for i in range(2)]
    for account in accounts:
        await sync_env.post(account, "before")
    running = await sync_env.start_sync(host.url, dids=tuple(a.did for a in accounts), database=database)
    for account in accounts:
        await sync_env.wait_mirrored(running, account)

    await asyncio.to_thread(own_cluster.crash)
    for account in accounts:  # the host keeps writing while the mirror's database is down
        await sync_env.post(account, "while down")
    await asyncio.sleep(DOWN_S)
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/xrpc/_health") as resp:
        assert resp.status == 503
    await asyncio.to_thread(own_cluster.start)
    for account in accounts:
        await sync_env.post(account, "after")
    for account in accounts:
        await sync_env.wait_mirrored(running, account, timeout=60)
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/xrpc/_health") as resp:
        assert resp.status == 200
