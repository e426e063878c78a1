"""The host through a PostgreSQL crash: every acknowledged write survives, and the host recovers by itself.

A host on its own throwaway PostgreSQL server takes writes from several
clients; the server is stopped the way a crash stops it (``immediate``: no
checkpoint, every connection cut) and started again, which replays its WAL.
While it is down, writes fail with an error reply (never a hang, never an
acknowledgement); once it is back, the same host process (not restarted)
writes again. Afterwards every write that was acknowledged is in the
repository with its CID, the repository verifies, and the event log replays
1..head without a gap (a transaction the crash cut gave its seq back).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import firehose_seqs

from atrepo.core.verify import verify_repo_car
from atrepo.host import HostConfig, start_host
from atrepo.store import SQLiteStore
from pg_support import Cluster

pytestmark = pytest.mark.timeout(180)

CLIENTS = 4
DOWN_S = 1.5  # how long the server stays down
RECOVER_S = 60.0  # the host must write again within this long of the server's return
COLLECTION = "com.example.thing"


async def _writer(
    http: aiohttp.ClientSession, url: str, did: str, token: str, stop: asyncio.Event, log: dict[str, Any]
) -> None:
    """createRecord until told to stop; acknowledged URIs with their CIDs, and the failures' statuses."""
    n = 0
    while not stop.is_set():
        body = {"repo": did, "collection": COLLECTION, "record": {"n": n}}
        n += 1
        try:
            async with http.post(
                f"{url}/xrpc/com.atproto.repo.createRecord",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp:
                reply = await resp.json(content_type=None)
                if resp.status == 200:
                    log["acked"][reply["uri"]] = reply["cid"]
                    log["last_ok"] = time.monotonic()
                else:
                    log["failed"].append((resp.status, reply.get("error") if reply else None))
                    await asyncio.sleep(0.05)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the host must answer, not drop or hang
            log["failed"].append((0, repr(exc)))
            await asyncio.sleep(0.05)


async def test_acknowledged_writes_survive_a_postgresql_crash_and_the_host_recovers(
    own_cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atrepo")
    database = own_cluster.new_database()
    config = HostConfig(
        host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database, rate_limits=False
    )
    running = await start_host(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            accounts = []
            for i in range(CLIENTS):
                async with http.post(
                    f"{running.url}/xrpc/com.atproto.server.createAccount",
                    json={"handle": f"writer{i}.test", "password": "correct horse"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    accounts.append(await resp.json())
            logs: list[dict[str, Any]] = [{"acked": {}, "failed": [], "last_ok": 0.0} for _ in accounts]
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(_writer(http, running.url, a["did"], a["accessJwt"], stop, log))
                for a, log in zip(accounts, logs, strict=True)
            ]
            try:
                deadline = time.monotonic() + RECOVER_S
                while not all(log["acked"] for log in logs):  # every writer under way before the crash
                    assert time.monotonic() < deadline, [log["failed"][:3] for log in logs]
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(own_cluster.crash)
                await asyncio.sleep(DOWN_S)
                async with http.get(f"{running.url}/xrpc/_health") as resp:
                    assert resp.status == 503, await resp.text()  # the store is unreachable, and it says so
                back = time.monotonic()
                await asyncio.to_thread(own_cluster.start)
                # the same host process writes again, for every client
                deadline = time.monotonic() + RECOVER_S
                while not all(log["last_ok"] > back for log in logs):
                    assert time.monotonic() < deadline, [log["failed"][-3:] for log in logs]
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            failures = [f for log in logs for f in log["failed"]]
            assert failures, "the crash should have failed some writes"
            # each failure was an answer naming a server-side error, not a dropped connection
            assert all(status >= 500 for status, _ in failures), failures[:10]
            async with http.get(f"{running.url}/xrpc/_health") as resp:
                assert resp.status == 200
            # the outage is logged as what it is, one line per failed call, without a driver traceback
            failed_calls = [
                r for r in caplog.records if r.name == "atrepo.xrpc" and r.levelno >= logging.ERROR
            ]
            assert failed_calls
            assert all("StoreUnavailable (500)" in r.getMessage() for r in failed_calls), failed_calls[
                0
            ].getMessage()
            assert all(r.exc_info is None for r in failed_calls)

            ctx = running.context
            for account, log in zip(accounts, logs, strict=True):
                row = await ctx.worker.read(SQLiteStore.get_account, account["did"])
                assert row is not None
                key = ctx.signing_key(row).public_key
                async with http.get(
                    f"{running.url}/xrpc/com.atproto.sync.getRepo", params={"did": account["did"]}
                ) as resp:
                    assert resp.status == 200
                    car = await resp.read()
                records = verify_repo_car(io.BytesIO(car), key=key, did=account["did"])
                stored = {f"at://{account['did']}/{path}": str(cid) for path, cid in records}
                missing = {uri: cid for uri, cid in log["acked"].items() if stored.get(uri) != cid}
                assert not missing, f"acknowledged writes lost or changed: {list(missing)[:5]}"
            head = await ctx.worker.read(SQLiteStore.head_seq)
            seqs = await firehose_seqs(http, running.url, 0, head, timeout=20)
            assert seqs == list(range(1, head + 1))
    finally:
        with contextlib.suppress(Exception):
            await running.stop()
