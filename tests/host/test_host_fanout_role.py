"""``atrepo serve --role fanout``: a read-only process serving a PostgreSQL host's firehose and sync reads.

A host process writes; a fan-out process on the same database (and data
directory, for blob bytes) follows its event log through LISTEN/NOTIFY. Its
subscribers must get exactly the frames the host's own subscribers get, live
and replayed, and every method that writes must be absent from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from host_support import HostClient, TokenClock, firehose_frames

from atrepo.host import HostConfig, start_host

WRITES = 25
WAIT_S = 20.0
ATREPO = str(Path(sys.executable).parent / "atrepo")


@pytest.fixture
async def pair(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, pg_url: str
) -> AsyncIterator[tuple[HostClient, HostClient]]:
    """A host and a fan-out process on one PostgreSQL database and one data directory."""
    data = tmp_path / "data"
    writer = await start_host(
        HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=data, database=pg_url), clock_ms=clock
    )
    try:
        fan = await start_host(
            HostConfig(
                host="127.0.0.1",
                port=0,
                data_dir=data,
                database=pg_url,
                plc_url=writer.plc_url,
                role="fanout",
            ),
            clock_ms=clock,
            validate_output=True,
        )
        try:
            yield HostClient(writer, http, clock), HostClient(fan, http, clock)
        finally:
            await fan.stop()
    finally:
        await writer.stop()


async def _frames(http: aiohttp.ClientSession, url: str, cursor: int | None, count: int) -> list[bytes]:
    """The first ``count`` event frames (``#info`` skipped) a subscriber gets, as sent."""
    out: list[bytes] = []
    async with contextlib.aclosing(firehose_frames(http, url, cursor, WAIT_S)) as frames:
        async for _seq, raw in frames:
            out.append(raw)
            if len(out) == count:
                break
    return out


async def test_fanout_serves_the_hosts_firehose_and_sync_reads(
    pair: tuple[HostClient, HostClient], http: aiohttp.ClientSession
) -> None:
    host, fan = pair
    reply = await host.create_account("alice.test")
    assert reply.status == 200, reply.body
    did, token = reply.body["did"], reply.body["accessJwt"]
    head = await host.running.context.worker.read(type(host.running.context.store).head_seq)

    # a live subscriber of the fan-out, attached before the writes
    live = asyncio.create_task(_frames(http, fan.url, None, WRITES))
    deadline = time.monotonic() + WAIT_S
    while not fan.running.context.fanout.subscribers:  # attached (and live) before the first write
        assert time.monotonic() < deadline, "the live subscriber never attached"
        await asyncio.sleep(0.02)
    for n in range(WRITES):
        reply = await host.call(
            "com.atproto.repo.createRecord",
            body={"repo": did, "collection": "com.example.thing", "record": {"n": n}},
            token=token,
        )
        assert reply.status == 200, reply.body
    got_live = await asyncio.wait_for(live, WAIT_S)

    # replays from both processes: the same frames, byte for byte, and the live ones are their tail
    from_host = await _frames(http, host.url, 0, head + WRITES)
    from_fan = await _frames(http, fan.url, 0, head + WRITES)
    assert from_fan == from_host
    assert got_live == from_host[head:]

    # the sync reads answer from the shared store
    for nsid, params in [
        ("com.atproto.sync.getLatestCommit", {"did": did}),
        ("com.atproto.sync.getRepoStatus", {"did": did}),
        ("com.atproto.sync.listRepos", {}),
    ]:
        ours, theirs = await fan.call(nsid, params=params), await host.call(nsid, params=params)
        assert (ours.status, ours.body) == (theirs.status, theirs.body), nsid
    async with http.get(f"{fan.url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
        assert resp.status == 200
        car = await resp.read()
    async with http.get(f"{host.url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
        assert car == await resp.read()

    # nothing that writes or needs a session is served
    for nsid, body in [
        ("com.atproto.server.createAccount", {"handle": "bob.test", "password": "correct horse"}),
        ("com.atproto.server.createSession", {"identifier": "alice.test", "password": "correct horse"}),
        ("com.atproto.repo.createRecord", {"repo": did, "collection": "com.example.thing", "record": {}}),
    ]:
        refused = await fan.call(nsid, body=body, token=token)
        assert (refused.status, refused.error) == (501, "MethodNotImplemented"), nsid
    assert (await fan.call("com.atproto.repo.getRecord", params={"repo": did})).status == 501
    async with http.get(f"{fan.url}/xrpc/_health") as resp:
        assert resp.status == 200
    async with http.get(f"{fan.url}/metrics") as resp:
        assert resp.status == 200 and "atrepo_" in await resp.text()
    # the host's own count of accounts is unchanged by the refused calls
    listed = await host.call("com.atproto.sync.listRepos")
    assert [r["did"] for r in listed.body["repos"]] == [did]


def test_a_fanout_needs_a_postgresql_database(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fanout process follows"):
        HostConfig(data_dir=tmp_path, role="fanout")
    with pytest.raises(ValueError, match="role must be host or fanout"):
        HostConfig(data_dir=tmp_path, role="relay")  # type: ignore[arg-type]
    assert not HostConfig(data_dir=tmp_path, database="postgresql://x/y", role="fanout").runs_maintenance
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATREPO_")}
    proc = subprocess.run(
        [ATREPO, "serve", "--role", "fanout", "--data", str(tmp_path / "d"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode != 0 and "fanout process follows" in proc.stderr, (proc.returncode, proc.stderr)


async def test_serve_role_fanout_from_the_command_line(
    pair: tuple[HostClient, HostClient], pg_url: str
) -> None:
    host, _ = pair
    data = Path(str(host.running.context.config.data_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATREPO_")}
    proc = await asyncio.create_subprocess_exec(
        ATREPO,
        "serve",
        "--role",
        "fanout",
        "--database",
        pg_url,
        "--data",
        str(data),
        "--port",
        "0",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT_S)
        doc = json.loads(line)
        assert doc["ok"] and doc["role"] == "fanout" and doc["plc"] == "", doc
        reply = await host.create_account("carol.test")
        assert reply.status == 200, reply.body
        async with aiohttp.ClientSession() as http:
            frames = await _frames(http, doc["listening"], 0, 1)
        assert frames  # the account's first event, read through the separate process
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), WAIT_S)
    assert proc.returncode == 0
