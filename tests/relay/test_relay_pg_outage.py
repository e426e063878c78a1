"""The relay through a PostgreSQL crash: it keeps running, catches up, and relays every write once.

A relay on its own throwaway PostgreSQL server follows one upstream host
that keeps taking writes; the server is stopped as a crash stops it and
started again. The relay process is not restarted: once the database is
back it writes again, resumes each host from the cursor stored with the
events (the same transaction), and a verifying subscriber receives every
write exactly once, seqs without gaps or repeats.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from relay_support import Net, Watcher, until

from atrepo.relay import RelayConfig, start_relay
from pg_support import Cluster

pytestmark = pytest.mark.timeout(150)

DOWN_S = 1.5


async def test_the_relay_rides_out_a_postgresql_crash(
    tmp_path: Path, http: aiohttp.ClientSession, own_cluster: Cluster
) -> None:
    database = own_cluster.new_database()
    net = Net(tmp_path, http)
    try:
        node = await net.add_node("up")
        relay = await start_relay(
            RelayConfig(
                port=0,
                data_dir=tmp_path / "relay",
                plc_url=net.plc_url,
                upstreams=(node.proxy.url,),
                database=database,
            )
        )
        watcher = Watcher(relay.url, net.plc_url, http)
        try:
            await until(lambda: node.proxy.connected > 0, "the relay subscribed")
            accounts = [await net.create_account(node, f"user{i}.test") for i in range(2)]
            watcher.start()
            for account in accounts:
                await net.write(account, 3)
            await until(lambda: all(watcher.accounted(w) for w in net.writes), "the first writes relayed")

            await asyncio.to_thread(own_cluster.crash)
            # the host keeps writing while the relay's database is down
            for account in accounts:
                await net.write(account, 3, text="while down")
            await asyncio.sleep(DOWN_S)
            async with http.get(f"{relay.url}/xrpc/_health") as resp:
                assert resp.status == 503
            await asyncio.to_thread(own_cluster.start)
            for account in accounts:
                await net.write(account, 3, text="after")
            await until(
                lambda: all(watcher.accounted(w) for w in net.writes),
                "every write relayed after the outage",
                60,
            )
            async with http.get(f"{relay.url}/xrpc/_health") as resp:
                assert resp.status == 200
            assert watcher.problems == []
            # every seq once, none missing (the watcher handles accounts in parallel lanes: sort first)
            assert sorted(watcher.seqs) == list(range(1, len(watcher.seqs) + 1))
        finally:
            await watcher.stop()
            await relay.stop()
    finally:
        await net.close()
