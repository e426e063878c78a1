"""Several ``atrepo sync`` workers sharing one PostgreSQL mirror, accounts split by DID hash (issue 13).

Two engines in this process, partitions 0/2 and 1/2 on one database, follow
one host: each tracks only its accounts, with its own cursor, and together
they mirror every account; the shared Jetstream log reaches a client of
either worker. Then ``atrepo sync --workers 2`` as real processes: one worker
is killed with ``-9`` and started again by the supervisor, and the mirror
still equals the host. The store's locks keep a worker from running twice
and a whole-mirror consumer from running beside partitioned ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from relay_testenv import Account
from sync_support import SyncEnv, host_digest, wait_for

from atrepo.core.errors import StoreInUse
from atrepo.store.mirror import JETSTREAM_NSID, MirrorStore, open_mirror


def _part(did: str, count: int = 2) -> int:
    return zlib.crc32(did.encode()) % count


async def _accounts(env: SyncEnv, n: int) -> list[Account]:
    """At least one account in each of two partitions (the hash decides), two posts each."""
    host = await env.add_host()
    accounts: list[Account] = []
    i = 0
    while len(accounts) < n or len({_part(a.did) for a in accounts}) < 2:
        account = await host.create_account(f"part{i:02d}.test")
        accounts.append(account)
        i += 1
    for account in accounts:
        await env.post(account, "one")
        await env.post(account, "two")
    return accounts


def test_partition_locks(pg_url: str, tmp_path: Path) -> None:
    zero = open_mirror(pg_url, partition=(0, 2))
    one = open_mirror(pg_url, partition=(1, 2))
    try:
        with pytest.raises(StoreInUse):
            open_mirror(pg_url, partition=(0, 2))  # the same worker twice
        with pytest.raises(StoreInUse):
            open_mirror(pg_url)  # a whole-mirror consumer beside the workers
        assert "partition 1/2" in one.location
    finally:
        zero.close()
        one.close()
    whole = open_mirror(pg_url)
    try:
        with pytest.raises(StoreInUse):
            open_mirror(pg_url, partition=(1, 2))  # and the other way round
    finally:
        whole.close()
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_mirror(tmp_path / "m.sqlite3", partition=(0, 2))
    with pytest.raises(ValueError, match="index"):
        open_mirror(pg_url, partition=(2, 2))


async def test_two_partitions_share_one_mirror(pg_url: str, sync_env: SyncEnv) -> None:
    accounts = await _accounts(sync_env, 4)
    url = accounts[0].host.url
    dids = tuple(a.did for a in accounts)
    workers = [
        await sync_env.start_sync(url, f"w{i}", dids=dids, database=pg_url, partition=(i, 2))
        for i in range(2)
    ]
    for account in accounts:
        await sync_env.wait_mirrored(workers[_part(account.did)], account)
    for i, worker in enumerate(workers):
        assert set(worker.engine.tracked) == {a.did for a in accounts if _part(a.did) == i}
    # each worker's cursor under its own key; the whole-mirror key is unused
    cursors = {w.engine.cursor_source for w in workers}
    assert len(cursors) == 2 and all("#" in c for c in cursors)
    # a Jetstream client of worker 0 gets the events of worker 1's accounts too (the shared log)
    other = next(a for a in accounts if _part(a.did) == 1)
    jetstream = workers[0].url.replace("http://", "ws://") + "/xrpc/network.bsky.jetstream.subscribeEvents"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{jetstream}?dids={other.did}", protocols=("xrpc.v1.json",)) as ws,
    ):
        await asyncio.sleep(0.3)
        rkey = await sync_env.post(other, "live, to the other worker")
        message = json.loads((await ws.receive(timeout=10)).data)["payload"]
        assert message["$type"] == f"{JETSTREAM_NSID}#commit" and message["rkey"] == rkey
    await sync_env.wait_mirrored(workers[1], other)
    for account in accounts:
        got = await workers[0].engine.worker.read(MirrorStore.records_digest, account.did)
        assert got == await host_digest(account)


async def test_supervisor_restarts_a_killed_worker(pg_url: str, sync_env: SyncEnv, tmp_path: Path) -> None:
    accounts = await _accounts(sync_env, 4)
    url = accounts[0].host.url
    args = [sys.executable, "-m", "atrepo", "sync", "--upstream", url, "--plc", sync_env.plc_url]
    args += [
        "--data",
        str(tmp_path / "data"),
        "--database",
        pg_url,
        "--workers",
        "2",
        "--port",
        "0",
        "--json",
    ]
    for account in accounts:
        args += ["--did", account.did]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ}
    )
    assert proc.stdout is not None

    async def line() -> dict[str, Any]:
        assert proc.stdout is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert raw, "the supervisor exited"
        return dict(json.loads(raw))

    async def mirrored() -> bool:
        with open_mirror_reader(pg_url) as conn:
            for account in accounts:
                if conn(account.did) != await host_digest(account):
                    return False
        return True

    try:
        first = await line()
        assert first["ok"] and [w["partition"] for w in first["workers"]] == ["0/2", "1/2"], first
        await wait_for(mirrored, what="both workers' accounts mirrored")
        victim = first["workers"][1]["pid"]
        os.kill(victim, signal.SIGKILL)
        again = await line()  # the supervisor says so when it started the worker again
        assert (
            again["workers"][1]["pid"] != victim and again["workers"][0]["pid"] == first["workers"][0]["pid"]
        )
        for account in accounts:
            await sync_env.post(account, "after the kill")
        await wait_for(mirrored, what="the mirror equal to the host after the restart")
        proc.send_signal(signal.SIGTERM)
        last = await line()
        assert last["stopped"] is True
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class open_mirror_reader:  # noqa: N801 (a context manager named as the function it stands for)
    """A read-only look at the shared mirror while its workers hold the writer locks: did -> digest."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def __enter__(self) -> Any:
        from atrepo.core.cid import CID
        from atrepo.store.mirror import digest_records

        def digest(did: str) -> str:
            rows = self.conn.execute(
                "SELECT collection, rkey, cid FROM atrepo_mirror.records WHERE did = %s", (did,)
            ).fetchall()
            return digest_records([(c, r, CID(bytes(cid))) for c, r, cid in rows])

        return digest

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
