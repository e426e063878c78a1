"""``atrepo serve --workers 2`` on PostgreSQL: one port, two processes, one store, one firehose.

The supervisor runs as a real process; it starts two workers that bind the
same port (``SO_REUSEPORT``), so each new connection lands on one of them.
Writers use a fresh connection per request, so their writes are spread over
both workers; live firehose subscribers, each on whichever worker accepted
it, must see every event of both in seq order (the other worker's arrive
through PostgreSQL notifications). In the middle of the load one worker
(either, at random; ``ATREPO_CRASH_SEED`` fixes which) is killed with
SIGKILL: the supervisor starts it again, the other keeps serving, and at
the end every acknowledged write is in its repository, every ``getRepo``
verifies, and the log replays 1..head without a gap or a duplicate on
several connections.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import firehose_seqs

from atrepo.core.events import ErrorFrame, InfoEvent, UnknownFrame, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.verify import verify_repo_car
from atrepo.store.postgres import PostgresStore

pytestmark = pytest.mark.timeout(180)

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"
#: Bounds each wait (a frame, a start line) so a broken host fails instead of hanging.
WAIT_S = 30.0
WRITERS = 3
WRITES_EACH = 16
FIRST_WRITES = 5
#: Live subscribers, spread by the kernel over the two workers.
SUBSCRIBERS = 8


class Supervisor:
    """``atrepo serve --workers 2`` as a process; its JSON listing lines read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def listing(self) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT_S)
        assert line, "the supervisor closed its output"
        doc = json.loads(line)
        assert doc["ok"], doc
        workers: list[dict[str, Any]] = doc["workers"]
        return workers


@pytest.fixture
async def supervisor(tmp_path: Path, pg_url: str) -> AsyncIterator[Supervisor]:
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atrepo",
        "serve",
        "--workers",
        "2",
        "--database",
        pg_url,
        "--data",
        str(tmp_path / "data"),
        "--port",
        "0",
        "--plc-port",
        "0",
        "--no-rate-limits",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        start_new_session=True,
        env={**os.environ, "ATREPO_LOG_FORMAT": "text"},
    )
    try:
        yield Supervisor(proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WAIT_S)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()


def _fresh() -> aiohttp.ClientSession:
    # a new TCP connection per request: the kernel picks a worker for each
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def _call(url: str, nsid: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with _fresh() as http, http.post(f"{url}/xrpc/{nsid}", json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _live(url: str, seen: list[int], stop: asyncio.Event) -> None:
    """A subscriber without a cursor; reconnects with its last seq when its worker goes away."""
    endpoint = f"{url}/xrpc/com.atproto.sync.subscribeRepos"
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            params = {"cursor": str(seen[-1])} if seen else {}
            try:
                async with http.ws_connect(endpoint, params=params, max_msg_size=0) as ws:
                    while not stop.is_set():
                        try:
                            message = await ws.receive(timeout=0.5)
                        except TimeoutError:
                            continue
                        if message.type != aiohttp.WSMsgType.BINARY:
                            break  # closed (the worker was killed): reconnect from the last seq
                        frame = decode_frame(message.data)
                        assert not isinstance(frame, ErrorFrame | UnknownFrame), frame
                        if not isinstance(frame, InfoEvent):
                            seen.append(frame.seq)
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)


async def _reach(seen: list[int], seq: int) -> None:
    while not seen or seen[-1] < seq:
        await asyncio.sleep(0.05)


async def test_two_workers_one_store_one_firehose(
    supervisor: Supervisor, pg_url: str, tmp_path: Path
) -> None:
    workers = await supervisor.listing()
    assert [w["worker"] for w in workers] == ["0/2", "1/2"]
    url = workers[0]["listening"]
    assert workers[1]["listening"] == url  # one port for both
    assert workers[0]["pid"] != workers[1]["pid"]

    accounts: list[tuple[str, str]] = []
    for i in range(WRITERS):
        status, body = await _call(
            url,
            "com.atproto.server.createAccount",
            {"handle": f"writer{i}.test", "password": "correct horse"},
        )
        assert status == 200, body
        accounts.append((body["did"], body["accessJwt"]))

    stop = asyncio.Event()
    live: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
    listeners = [asyncio.create_task(_live(url, seen, stop)) for seen in live]
    await asyncio.sleep(0.5)  # let them attach before the writes start

    # First, a few writes on one kept-alive connection, so through one worker only: the subscribers
    # the kernel gave to the other one can only get them through that worker's follower.
    did, token = accounts[0]
    async with aiohttp.ClientSession() as http:
        for n in range(FIRST_WRITES):
            body = {
                "repo": did,
                "collection": POST,
                "record": {"$type": POST, "text": f"{n}", "createdAt": NOW},
            }
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(
                f"{url}/xrpc/com.atproto.repo.createRecord", json=body, headers=headers
            ) as resp:
                reply = await resp.json()
                assert resp.status == 200, reply
    first_head = WRITERS * 4 + FIRST_WRITES
    await asyncio.wait_for(asyncio.gather(*(_reach(seen, first_head) for seen in live)), WAIT_S)

    acked: dict[str, dict[str, str]] = {did: {} for did, _ in accounts}
    victim = random.Random(os.environ.get("ATREPO_CRASH_SEED")).randrange(2)  # which worker dies
    count = {"acks": 0}
    killed = asyncio.Event()

    async def write(did: str, token: str) -> None:
        n = 0
        while n < WRITES_EACH:
            body = {
                "repo": did,
                "collection": POST,
                "record": {"$type": POST, "text": f"{n}", "createdAt": NOW},
            }
            try:
                status, reply = await _call(url, "com.atproto.repo.createRecord", body, token)
            except (aiohttp.ClientError, ConnectionError):
                continue  # the kill cut this request: not acknowledged, so nothing is promised
            if status != 200:
                assert status >= 500 or status == 429, reply
                continue
            acked[did][reply["uri"].split("/", 3)[3]] = reply["cid"]
            n += 1
            count["acks"] += 1
            if count["acks"] == WRITERS * WRITES_EACH // 2 and not killed.is_set():
                killed.set()
                os.kill(workers[victim]["pid"], signal.SIGKILL)

    await asyncio.gather(*(write(did, token) for did, token in accounts))
    assert killed.is_set()
    restarted = await supervisor.listing()  # the supervisor's new listing, the victim started again
    assert restarted[victim]["pid"] != workers[victim]["pid"]
    assert restarted[1 - victim]["pid"] == workers[1 - victim]["pid"]  # the other one kept serving

    store = PostgresStore(pg_url, tmp_path / "reader")
    try:
        head = store.head_seq()
        keys = {}
        for did, _ in accounts:
            account = store.get_account(did)
            assert account is not None
            keys[did] = PrivateKey.from_bytes("k256", account.signing_key).public_key
    finally:
        store.close()
    # 3 accounts x 4 creation events, and at least one commit per acknowledged write
    assert head >= WRITERS * 4 + FIRST_WRITES + WRITERS * WRITES_EACH

    await asyncio.wait_for(asyncio.gather(*(_reach(seen, head) for seen in live)), WAIT_S)
    stop.set()
    await asyncio.gather(*listeners)
    for seen in live:  # live from attachment on: contiguous, each seq once, across the kill
        assert seen == list(range(seen[0], seen[-1] + 1)), seen
        assert seen[0] <= WRITERS * 4 + 1  # attached before the first write's commit
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            assert await firehose_seqs(http, url, 0, head, WAIT_S) == list(range(1, head + 1))
        for did, _ in accounts:
            async with http.get(f"{url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
                assert resp.status == 200
                car = await resp.read()
            records = {
                path: str(cid) for path, cid in verify_repo_car(io.BytesIO(car), key=keys[did], did=did)
            }
            # every acknowledged write is there (a write cut by the kill may be there too)
            assert acked[did].items() <= records.items()


async def test_workers_need_postgresql(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "atrepo", "serve", "--workers", "2", "--data", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "PostgreSQL" in proc.stderr
