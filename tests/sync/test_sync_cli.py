"""``python -m atrepo sync`` as a process: killed with -9 under writes, restarted, stopped with SIGTERM.

The mirror must come back exactly: every change lands in the same
transaction as its cursor, so a process killed at any point resumes from a
cursor that matches what it stored. At the end the mirror equals the host's
``getRepo`` by digest, and a SIGTERM leaves a stored cursor and exit code 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from sync_support import SyncEnv, host_digest, wait_for

from atrepo.core.cid import CID
from atrepo.store.mirror import MIRROR_DB_FILENAME, digest_records, open_mirror


async def _spawn(env: SyncEnv, upstream: str, data: Path, dids: list[str]) -> tuple[Any, dict[str, Any]]:
    args = [sys.executable, "-m", "atrepo", "sync", "--upstream", upstream, "--plc", env.plc_url]
    args += ["--data", str(data), "--port", "0", "--json"]
    for did in dids:
        args += ["--did", did]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ}
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    doc = json.loads(line)
    assert doc["ok"] and doc["listening"].startswith("http://127.0.0.1:")
    assert doc["mirror"] == str(data / MIRROR_DB_FILENAME), doc  # where the mirror is, said at start
    return proc, doc


def _raw_digest(data: Path, did: str) -> tuple[str | None, str]:
    """Read the mirror directly (the process holds its lock): its state and digest of ``did``."""
    db = sqlite3.connect(f"file:{data / MIRROR_DB_FILENAME}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT state FROM repos WHERE did = ?", (did,)).fetchone()
        rows = db.execute("SELECT collection, rkey, cid FROM records WHERE did = ?", (did,)).fetchall()
    finally:
        db.close()
    return (row[0] if row else None), digest_records([(c, r, CID(bytes(cid))) for c, r, cid in rows])


async def test_kill_9_and_restart(sync_env: SyncEnv) -> None:
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    rkeys = [await sync_env.post(alice, f"before {i}") for i in range(3)]
    data = sync_env.tmp / "sync-cli"
    proc, _ = await _spawn(sync_env, host.url, data, [alice.did])
    try:

        async def mirrored() -> bool:
            want = await host_digest(alice)
            state, got = await asyncio.to_thread(_raw_digest, data, alice.did)
            return state == "active" and got == want

        await wait_for(mirrored, what="the first process to mirror alice")
        # writes, with the kill in the middle of them
        for i in range(5):
            rkeys.append(await sync_env.post(alice, f"live {i}"))
        await sync_env.delete(alice, rkeys[0])
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await sync_env.put(alice, rkeys[1], "edited while down")
        await sync_env.delete(alice, rkeys[2])
        rkeys.append(await sync_env.post(alice, "while down"))

        proc, _ = await _spawn(sync_env, host.url, data, [alice.did])
        await wait_for(mirrored, what="the restarted process to catch up")
        await sync_env.post(alice, "after the restart")
        await wait_for(mirrored, what="the restarted process to follow")
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        out = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        last = json.loads(out.decode().strip().splitlines()[-1])
        assert last["stopped"] is True and last["cursor"] is not None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    store = open_mirror(data)
    try:
        assert store.records_digest(alice.did) == await host_digest(alice)
        assert store.get_cursor(host.url) == last["cursor"]
        repo = store.get_repo(alice.did)
        assert repo is not None and repo.state == "active" and repo.host == host.url
    finally:
        store.close()


def test_database_flag_is_checked_before_anything_starts(tmp_path: Path) -> None:
    """A --database that is not a PostgreSQL URL is a usage error; an unreachable server exits 1 and says
    so without printing the password."""
    import socket
    import subprocess

    base = [sys.executable, "-m", "atrepo", "sync", "--upstream", "http://127.0.0.1:9", "--did", "did:plc:x"]
    base += ["--data", str(tmp_path / "d"), "--port", "0", "--plc", "http://127.0.0.1:9"]
    bad = subprocess.run(
        [*base, "--database", "mysql://x"], check=False, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "postgresql://" in bad.stderr, bad.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://me:hunter2@127.0.0.1:{port}/db?connect_timeout=2"
    down = subprocess.run([*base, "--database", url], check=False, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot connect" in down.stderr, down.stderr
    assert "hunter2" not in down.stderr + down.stdout
