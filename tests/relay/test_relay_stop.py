"""Stopping the relay while it reconnects its upstreams after a failed batch leaves nothing running.

A failed batch makes the host manager reconnect every upstream from the stored cursors (a task of its
own). If the relay is stopped meanwhile, that task must not connect an upstream the stop has already
disconnected: the subscriber would outlive the relay, writing to a closed store.
"""

from __future__ import annotations

import asyncio

from relay_testenv import RelayEnv


async def test_a_reconnection_racing_stop_connects_nothing(relay_env: RelayEnv) -> None:
    hosts = relay_env.relay.context.hosts

    async def connected() -> bool:
        return bool(hosts.links) and all(link.task is not None for link in hosts.links.values())

    await relay_env.wait_for(connected, what="the upstream connected")
    hosts._after_failed_batch()  # what the ingest calls when a batch's transaction fails
    await relay_env.relay.stop()
    await asyncio.sleep(0.2)  # a reconnection that escaped the stop would have connected by now

    assert [link.key for link in hosts.links.values() if link.task is not None] == []
    assert not hosts._tasks
    hosts._after_failed_batch()  # a batch failing during the shutdown starts nothing either
    assert not hosts._tasks
