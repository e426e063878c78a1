"""Helpers of the issue-12 acceptance test: ``atrepo sync`` as a process, its mirror, a write load.

The acceptance scenario kills the consumer with ``-9``, so it runs as a real
process (:class:`SyncProcess`); the test reads the mirror (the SQLite file
read-only, or the PostgreSQL schema in one snapshot) while the process holds
its lock (:func:`mirror_view`), the way ``MirrorStore.records_digest``
computes its digest. :class:`Writer` is the
background write load: creates, updates and deletes across accounts, each
account behind a lock so that the scenario can take one out of the load
(deactivation, deletion, migration) without racing a write in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_testenv import Account
from sync_support import SyncEnv

from atrepo.core.cid import CID
from atrepo.store.mirror import MIRROR_DB_FILENAME, digest_records

POSTS = "app.bsky.feed.post"
NOTES = "com.example.note"


@dataclass
class MirrorView:
    """One account as the mirror holds it: repo state, account status, digests (all / visible)."""

    state: str | None
    account_status: str | None
    digest: str
    visible_digest: str
    records: int


def mirror_view(data: Path, did: str, database: str | None = None) -> MirrorView:
    """Read ``did`` from the mirror read-only (the running process holds the store's lock).

    ``database``: the PostgreSQL URL the process was given (its tables are in ``atrepo_mirror``).
    """
    if database is not None:
        import psycopg

        with psycopg.connect(database, autocommit=True) as pg:
            pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one state of both tables
            found = pg.execute(
                "SELECT state, account_status FROM atrepo_mirror.repos WHERE did = %s", (did,)
            ).fetchone()
            rows = pg.execute(
                "SELECT collection, rkey, cid FROM atrepo_mirror.records WHERE did = %s", (did,)
            ).fetchall()
            pg.execute("COMMIT")
        row = tuple(found) if found is not None else None
    else:
        db = sqlite3.connect(f"file:{data / MIRROR_DB_FILENAME}?mode=ro", uri=True, timeout=5)
        try:
            db.execute("BEGIN")  # one state of both tables
            row = db.execute("SELECT state, account_status FROM repos WHERE did = ?", (did,)).fetchone()
            rows = db.execute("SELECT collection, rkey, cid FROM records WHERE did = ?", (did,)).fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
    digest = digest_records([(c, r, CID(bytes(cid))) for c, r, cid in rows])
    state, status = (row[0], row[1]) if row else (None, None)
    visible = digest if status == "active" else digest_records([])
    return MirrorView(state, status, digest, visible, len(rows))


class SyncProcess:
    """``python -m atrepo sync`` following ``upstream``; stderr kept in a file for the failure message."""

    def __init__(
        self,
        env: SyncEnv,
        upstream: str,
        data: Path,
        dids: list[str],
        collection: str,
        database: str | None = None,
    ) -> None:
        self.args = [sys.executable, "-m", "atrepo", "sync", "--upstream", upstream, "--plc", env.plc_url]
        self.args += ["--data", str(data), "--port", "0", "--json", "--collection", collection]
        if database is not None:
            self.args += ["--database", database]
        for did in dids:
            self.args += ["--did", did]
        self.data = data
        self.proc: asyncio.subprocess.Process | None = None
        self.url: str | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.data.parent / f"{self.data.name}-stderr-{self.runs}.log"

    async def start(self) -> None:
        self.runs += 1
        self.data.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdout=asyncio.subprocess.PIPE, stderr=err, env={**os.environ}
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert line, f"atrepo sync exited at start: {self.log_path.read_text()[-2000:]}"
        doc = json.loads(line)
        assert doc["ok"] and doc["listening"].startswith("http://127.0.0.1:"), doc
        if "--database" in self.args:  # the mirror's location, its password never shown
            assert "atrepo_mirror" in doc["mirror"] and ":***@" not in doc["mirror"], doc
        self.url = doc["listening"]

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> dict[str, Any]:
        """SIGTERM; the last JSON line (``stopped``, ``cursor``) once it exited with 0."""
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), 30)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        assert code == 0, (code, self.log_text())
        last: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return last

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def log_text(self, tail: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-tail:]
        return ""


@dataclass
class Slot:
    """One account in the write load; ``active`` False takes it out (under ``lock``)."""

    account: Account
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: bool = True
    rkeys: list[str] = field(default_factory=list)


class Writer:
    """Creates, updates and deletes (posts, and notes that must not be mirrored) across accounts."""

    def __init__(self, env: SyncEnv, accounts: list[Account], seed: int = 12) -> None:
        self.env = env
        self.slots = {a.did: Slot(a) for a in accounts}
        self.random = random.Random(seed)
        self.done: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task  # re-raises a failed write

    async def pause(self, did: str) -> Slot:
        """Take ``did`` out of the load; returns once no write of it is in flight."""
        slot = self.slots[did]
        async with slot.lock:
            slot.active = False
        return slot

    async def resume(self, did: str, account: Account | None = None) -> None:
        slot = self.slots[did]
        async with slot.lock:
            if account is not None:
                slot.account = account
            slot.active = True

    async def _run(self) -> None:
        while not self._stop.is_set():
            active = [s for s in self.slots.values() if s.active]
            if active:
                slot = self.random.choice(active)
                async with slot.lock:
                    if slot.active:
                        await self._one(slot)
            await asyncio.sleep(0.01)

    async def _one(self, slot: Slot) -> None:
        roll = self.random.random()
        if roll < 0.1:
            await self.env.post(slot.account, "a note", NOTES)
            self.done["note"] += 1
        elif roll < 0.55 or len(slot.rkeys) < 3:
            slot.rkeys.append(await self.env.post(slot.account, f"post {self.done['create']}"))
            self.done["create"] += 1
        elif roll < 0.8:
            await self.env.put(slot.account, self.random.choice(slot.rkeys), f"edit {self.done['update']}")
            self.done["update"] += 1
        else:
            rkey = slot.rkeys.pop(self.random.randrange(len(slot.rkeys)))
            await self.env.delete(slot.account, rkey)
            self.done["delete"] += 1
