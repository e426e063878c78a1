"""``atrepo host seq-floor N`` on a real host's data directory, through the real console script."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from atrepo.core.errors import InputFileError, InvalidRequest, StoreInUse
from atrepo.host import HostConfig, RunningHost, start_host
from atrepo.store import SQLiteStore
from atrepo.store.pgfile import redact_url
from atrepo.store.postgres import PostgresStore, open_host_store
from atrepo.store.sqlite import raise_seq_floor

ATREPO = str(Path(sys.executable).parent / "atrepo")

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATREPO_")}
    return subprocess.run([ATREPO, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


async def run_async(*args: str) -> subprocess.CompletedProcess[str]:
    """``run`` off the event loop, so that a host running in this process keeps serving meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: run(*args))


async def start(data: Path, database: str | None = None) -> RunningHost:
    return await start_host(
        HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=data, database=database)
    )


def where(data: Path, database: str | None) -> list[str]:
    """The command's arguments naming the store: the data directory, and the database if any."""
    return ["--data", str(data), *(["--database", database] if database else [])]


async def create_account(running: RunningHost, handle: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{running.url}/xrpc/com.atproto.server.createAccount",
            json={"handle": handle, "password": "pw"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


def head_seq(data: Path, database: str | None = None) -> int:
    store = open_host_store(data, database)
    try:
        return store.head_seq()
    finally:
        store.close()


async def test_raise_restart_and_the_next_event(tmp_path: Path, database: str | None) -> None:
    data = tmp_path / "data"
    running = await start(data, database)
    try:
        await create_account(running, "alice.test")  # four events: seqs 1-4
    finally:
        await running.stop()
    assert head_seq(data, database) == 4

    proc = await run_async("host", "seq-floor", "1000", *where(data, database))
    assert proc.returncode == 0, proc.stderr
    shown = str(data) if database is None else "schema atrepo_host"
    assert proc.stdout.startswith("next seq raised from 5 to 1000 (") and shown in proc.stdout
    assert head_seq(data, database) == 999

    # the next event after a restart gets exactly the floor, and the log goes on from there
    running = await start(data, database)
    try:
        await create_account(running, "bob.test")
        events = await running.context.worker.read(SQLiteStore.read_events, 4, 100)
    finally:
        await running.stop()
    assert [e.seq for e in events] == [1000, 1001, 1002, 1003]
    assert all(e.did == events[0].did for e in events)


async def test_never_lowers(tmp_path: Path, database: str | None) -> None:
    data = tmp_path / "data"
    running = await start(data, database)
    try:
        await create_account(running, "alice.test")
    finally:
        await running.stop()
    proc = await run_async("host", "seq-floor", "3", *where(data, database), "--json")
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply.pop("store") == (
        str(data) if database is None else f"{redact_url(database)} (schema atrepo_host)"
    )
    assert reply == {"ok": True, "dataDir": str(data), "oldNextSeq": 5, "newNextSeq": 5, "changed": False}
    proc = await run_async("host", "seq-floor", "5", *where(data, database))
    assert proc.returncode == 0 and "nothing changed" in proc.stdout
    assert head_seq(data, database) == 4
    # raising twice: the second, lower floor leaves the first in place
    pg = PostgresStore(database, data) if database else None
    floor = pg.raise_seq_floor if pg else functools.partial(raise_seq_floor, data)
    try:
        assert floor(50).new_next == 50
        assert floor(20).old_next == 50
    finally:
        if pg:
            pg.close()
    assert head_seq(data, database) == 49


async def test_on_postgresql_a_running_host_takes_the_floor_at_once(tmp_path: Path, pg_url: str) -> None:
    # every commit takes its seq from the counter row the command locks: no need to stop the host
    data = tmp_path / "data"
    running = await start(data, pg_url)
    try:
        await create_account(running, "alice.test")
        proc = await run_async("host", "seq-floor", "500", *where(data, pg_url), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["newNextSeq"] == 500
        await create_account(running, "bob.test")
        events = await running.context.worker.read(SQLiteStore.read_events, 0, 100)
    finally:
        await running.stop()
    assert [e.seq for e in events] == [1, 2, 3, 4, 500, 501, 502, 503]


async def test_refuses_a_live_host(tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = await start(data)
    try:
        await create_account(running, "alice.test")
        proc = await run_async("host", "seq-floor", "1000", "--data", str(data))
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: StoreInUse: ") and "stop the host" in proc.stderr
        proc = await run_async("host", "seq-floor", "1000", "--data", str(data), "--json")
        assert proc.returncode == 1 and json.loads(proc.stdout)["error"]["name"] == "StoreInUse"
        # the host is unharmed and its log unchanged
        await create_account(running, "bob.test")
        assert await running.context.worker.read(SQLiteStore.head_seq) == 8
    finally:
        await running.stop()
    with pytest.raises(StoreInUse):
        store = SQLiteStore(data)  # any open connection counts, in this process too
        try:
            raise_seq_floor(data, 10)
        finally:
            store.close()
    assert raise_seq_floor(data, 10).new_next == 10


def test_bad_arguments(tmp_path: Path) -> None:
    proc = run("host", "seq-floor", "10", "--data", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and "InputFileError" in proc.stderr
    assert not (tmp_path / "nothing" / "store.sqlite3").exists()
    proc = run("host", "seq-floor", "0", "--data", str(tmp_path))
    assert proc.returncode == 2  # a usage error: N starts at 1
    with pytest.raises(InputFileError):
        raise_seq_floor(tmp_path, 10)
    SQLiteStore(tmp_path).close()
    with pytest.raises(InvalidRequest):
        raise_seq_floor(tmp_path, 2**53)
    assert raise_seq_floor(tmp_path, 2**53 - 1).new_next == 2**53 - 1
