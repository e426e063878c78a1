"""The whole host survives ``kill -9`` under concurrent write load: nothing acknowledged is lost.

``atrepo serve`` runs as a real process. Three accounts are created over
HTTP; then several client tasks write concurrently (``createRecord``,
``deleteRecord``, ``applyWrites``) and remember every write the host
acknowledged (HTTP 200 received). After a random number of
acknowledgements, plus a random few milliseconds so that the kill lands
anywhere in a request or a transaction, the host gets SIGKILL. With the
host dead, the store is opened directly: the SQLite integrity check passes,
the event log's seqs run 1..head with no gap or duplicate, each repo's
``#commit`` events chain (``since`` is the previous rev), every
acknowledged commit rev is in the log. The host is restarted on the same
data directory and read back over HTTP: each repository's ``getRepo`` CAR
verifies with the account's signing key, its records equal the record index
(``listRecords``) and equal what the acknowledgements promise. Writes in
flight at the kill are the only unknowns: the check reads them back and
adopts what it finds (committed but unacknowledged, or never committed).
Rounds repeat on the same directory. It runs on each backend (``--database`` for
PostgreSQL, whose check is the store's own cheap one). Nothing here asserts on timing: waits
are bounded only so a broken host fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import firehose_seqs

from atrepo.core.events import CommitEvent, decode_frame
from atrepo.core.keys import PrivateKey, PublicKey
from atrepo.core.tid import tid_from_parts, tid_to_parts
from atrepo.core.verify import RepoSummary, verify_repo_car
from atrepo.store.postgres import PostgresStore
from atrepo.store.sqlite import SQLiteStore

ROUNDS = 5
ACCOUNTS = 3
#: Writer tasks per account (they write to the same repository concurrently).
TASKS_PER_ACCOUNT = 2
#: A round kills the host after between these many acknowledgements.
FEWEST_ACKS, MOST_ACKS = 5, 60
#: Bounds that turn a hung host into a failure (not timing assertions).
START_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 30.0
COLLECTION = "app.bsky.feed.post"  # its records are keyed by TID
TID_BASE_US = 1_700_000_000_000_000
NOW = "2024-05-01T12:34:56.789Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Account:
    did: str
    token: str
    #: What the acknowledgements (and resolved unknowns) say the repo holds: rkey -> record CID.
    records: dict[str, str] = field(default_factory=dict)
    #: Revs of acknowledged commits.
    revs: set[str] = field(default_factory=set)
    #: Writes in flight at a kill, committed or not, to be read back: (created rkeys, deleted rkey -> CID).
    unknown: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    #: rkeys acknowledged as deleted (never to come back).
    deleted: set[str] = field(default_factory=set)


@dataclass
class Tally:
    """Counts over the whole test, for the failure message and the report."""

    acked: int = 0
    #: Writes in flight at a kill (including ones whose request had not left the client).
    in_flight: int = 0
    #: Of those, found committed after the restart (the reply was lost with the process).
    committed_unacked: int = 0
    #: Of those, found not committed.
    not_committed: int = 0


class Host:
    """``atrepo serve`` on fixed free ports and one data directory, started and killed at will."""

    def __init__(self, data: Path, logs: Path, database: str | None = None) -> None:
        self.data = data
        self.database = database
        self.logs = logs
        self.port = free_port()
        self.plc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.starts += 1
        # logs go to a file: a pipe nobody drains could block the host mid-write
        with open(self.logs / f"serve-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "atrepo",
                    "serve",
                    "--port",
                    str(self.port),
                    "--plc-port",
                    str(self.plc_port),
                    "--data",
                    str(self.data),
                    *(["--database", self.database] if self.database else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ATREPO_LOG_FORMAT": "text"},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"atrepo serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                async with http.get(f"{self.url}/xrpc/_health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"atrepo serve not healthy in {START_TIMEOUT_S} s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            assert self.proc.returncode == -signal.SIGKILL

    def log_tail(self) -> str:
        path = self.logs / f"serve-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # a fresh connection per request: pooled keep-alive sockets die with each killed host
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20), connector=connector) as session:
        yield session


async def call(http: aiohttp.ClientSession, url: str, nsid: str, body: Any = None, **params: str) -> Any:
    """One XRPC call that must succeed; its JSON reply (or bytes for CARs)."""
    headers = {}
    if isinstance(body, tuple):
        token, body = body
        headers["Authorization"] = f"Bearer {token}"
    method = "POST" if body is not None else "GET"
    async with http.request(
        method, f"{url}/xrpc/{nsid}", json=body, params=params or None, headers=headers
    ) as resp:
        if resp.content_type == "application/vnd.ipld.car" and resp.status == 200:
            return await resp.read()
        reply = await resp.json(content_type=None)
        assert resp.status == 200, f"{nsid}: HTTP {resp.status} {reply}"
        return reply


class Load:
    """Concurrent writers over HTTP, each owning its own rkeys, recording what was acknowledged."""

    def __init__(
        self, url: str, accounts: list[Account], rng: random.Random, round_no: int, tally: Tally
    ) -> None:
        self.url = url
        self.accounts = accounts
        self.rng = rng
        self.round_no = round_no
        self.tally = tally
        self.acks = 0
        self.killing = False
        self.enough = asyncio.Event()
        self.target = rng.randint(FEWEST_ACKS, MOST_ACKS)

    def ack(self, account: Account, rev: str) -> None:
        account.revs.add(rev)
        self.acks += 1
        self.tally.acked += 1
        if self.acks >= self.target:
            self.enough.set()

    async def writer(self, http: aiohttp.ClientSession, account: Account, task_no: int) -> None:
        # the rkeys this task owns (TIDs with its number as clock id) that are there, earlier
        # rounds' too: no two tasks ever touch one record, so each knows what it may delete
        mine = [rkey for rkey in account.records if tid_to_parts(rkey)[1] == task_no]
        counter = 0

        def new_rkey() -> str:
            nonlocal counter
            counter += 1
            return tid_from_parts(TID_BASE_US + self.round_no * 1_000_000 + counter, task_no)

        while True:
            choice = self.rng.random()
            creating: list[str] = []
            deleting: dict[str, str] = {}
            try:
                if choice < 0.5 or not mine:
                    rkey = new_rkey()
                    creating = [rkey]
                    body: dict[str, Any] = {
                        "repo": account.did,
                        "collection": COLLECTION,
                        "rkey": rkey,
                        "record": {"$type": COLLECTION, "text": f"post {rkey}", "createdAt": NOW},
                    }
                    reply = await call(http, self.url, "com.atproto.repo.createRecord", (account.token, body))
                    assert reply["uri"] == f"at://{account.did}/{COLLECTION}/{rkey}"
                    account.records[rkey] = reply["cid"]
                    mine.append(rkey)
                    self.ack(account, reply["commit"]["rev"])
                elif choice < 0.75:
                    rkey = mine.pop(self.rng.randrange(len(mine)))
                    deleting = {rkey: account.records[rkey]}
                    body = {"repo": account.did, "collection": COLLECTION, "rkey": rkey}
                    reply = await call(http, self.url, "com.atproto.repo.deleteRecord", (account.token, body))
                    del account.records[rkey]
                    account.deleted.add(rkey)
                    self.ack(account, reply["commit"]["rev"])
                else:
                    creates = [new_rkey() for _ in range(self.rng.randint(1, 3))]
                    gone = mine.pop(self.rng.randrange(len(mine)))
                    creating, deleting = creates, {gone: account.records[gone]}
                    writes: list[dict[str, Any]] = [
                        {
                            "$type": "com.atproto.repo.applyWrites#create",
                            "collection": COLLECTION,
                            "rkey": rkey,
                            "value": {"$type": COLLECTION, "text": f"batch {rkey}", "createdAt": NOW},
                        }
                        for rkey in creates
                    ]
                    writes.append(
                        {
                            "$type": "com.atproto.repo.applyWrites#delete",
                            "collection": COLLECTION,
                            "rkey": gone,
                        }
                    )
                    body = {"repo": account.did, "writes": writes}
                    reply = await call(http, self.url, "com.atproto.repo.applyWrites", (account.token, body))
                    for rkey, result in zip(creates, reply["results"], strict=False):
                        account.records[rkey] = result["cid"]
                        mine.append(rkey)
                    del account.records[gone]
                    account.deleted.add(gone)
                    self.ack(account, reply["commit"]["rev"])
            except (TimeoutError, ConnectionError, aiohttp.ClientError):
                if not self.killing:
                    raise
                # the kill interrupted this write: committed or not, unknown until read back
                account.unknown.append((creating, deleting))
                for rkey in deleting:
                    del account.records[rkey]
                self.tally.in_flight += 1
                return

    async def run(self, http: aiohttp.ClientSession, host: Host) -> None:
        tasks = [
            asyncio.create_task(self.writer(http, account, i * TASKS_PER_ACCOUNT + j))
            for i, account in enumerate(self.accounts)
            for j in range(TASKS_PER_ACCOUNT)
        ]
        waiter = asyncio.create_task(self.enough.wait())
        try:
            done, _ = await asyncio.wait(
                [waiter, *tasks], timeout=LOAD_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {waiter}:
                task.result()  # a writer that failed before the kill: its error
            assert waiter in done, (
                f"no {self.target} acknowledgements in {LOAD_TIMEOUT_S} s: {host.log_tail()}"
            )
            await asyncio.sleep(self.rng.random() * 0.02)  # land anywhere in the next writes
            self.killing = True
            host.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=LOAD_TIMEOUT_S)
        finally:
            self.killing = True
            waiter.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def check_offline(
    data: Path, accounts: list[Account], database: str | None = None
) -> tuple[dict[str, PublicKey], int]:
    """With the host dead: integrity, a continuous log, chained commits holding every acknowledged rev.

    Returns the accounts' signing keys and the log's head seq.
    """
    store = SQLiteStore(data) if database is None else PostgresStore(database, data)
    try:
        assert store.integrity_check() == (["ok"] if database is None else [])
        rows = store.read_events(0, 10_000_000)
        assert [row.seq for row in rows] == list(range(1, store.head_seq() + 1))  # no gap, no duplicate
        revs: dict[str, list[str]] = {}
        for row in rows:
            frame = decode_frame(row.frame)
            if isinstance(frame, CommitEvent):
                chain = revs.setdefault(row.did, [])
                assert frame.since == (chain[-1] if chain else None), f"seq {row.seq}: {row.did} chain breaks"
                chain.append(frame.rev)
        keys = {}
        for account in accounts:
            missing = account.revs - set(revs.get(account.did, []))
            assert not missing, f"acknowledged commits of {account.did} missing from the log: {missing}"
            stored = store.get_account(account.did)
            assert stored is not None and stored.rev == revs[account.did][-1]
            keys[account.did] = PrivateKey.from_bytes("k256", stored.signing_key).public_key
        return keys, store.head_seq()
    finally:
        store.close()


async def check_firehose(http: aiohttp.ClientSession, url: str, head: int) -> None:
    """After the restart, ``subscribeRepos`` from cursor 0 replays seqs 1..head once each, in order."""
    seqs = await firehose_seqs(http, url, 0, head, LOAD_TIMEOUT_S)
    assert seqs == list(range(1, head + 1))


async def check_online(
    http: aiohttp.ClientSession, url: str, accounts: list[Account], keys: dict[str, PublicKey], tally: Tally
) -> None:
    """After the restart: each repo verifies and equals its index and what was acknowledged."""
    for account in accounts:
        car = await call(http, url, "com.atproto.sync.getRepo", did=account.did)
        summary = RepoSummary()
        verified = dict(
            verify_repo_car(io.BytesIO(car), key=keys[account.did], did=account.did, summary=summary)
        )
        assert summary.commit is not None and summary.commit.rev >= max(account.revs, default="")
        in_repo = {path.split("/", 1)[1]: str(cid) for path, cid in verified.items()}
        assert all(path.startswith(f"{COLLECTION}/") for path in verified)
        index: dict[str, str] = {}
        cursor: str | None = None
        while True:
            params = {"repo": account.did, "collection": COLLECTION, "limit": "100"}
            if cursor:
                params["cursor"] = cursor
            page = await call(http, url, "com.atproto.repo.listRecords", **params)
            index.update({r["uri"].rsplit("/", 1)[1]: r["cid"] for r in page["records"]})
            cursor = page.get("cursor")
            if not page["records"] or not cursor:
                break
        assert index == in_repo, f"{account.did}: the record index differs from the repository"
        # writes in flight at the kill: each is there whole or not at all; adopt what was committed
        for creating, deleting in account.unknown:
            created = [rkey in in_repo for rkey in creating]
            kept = [in_repo.get(rkey) == cid for rkey, cid in deleting.items()]
            if all(created) and not any(kept):
                account.records.update({rkey: in_repo[rkey] for rkey in creating})
                account.deleted.update(deleting)
                tally.committed_unacked += 1
            else:
                assert not any(created) and all(kept), (
                    f"{account.did}: a write was torn: {creating} {deleting}"
                )
                account.records.update(deleting)
                tally.not_committed += 1
        account.unknown.clear()
        assert not (account.deleted & in_repo.keys()), f"{account.did}: acknowledged deletes came back"
        assert in_repo == account.records, f"{account.did}: the repository differs from the acknowledgements"
        for rkey, cid in list(account.records.items())[:5]:  # getRecord answers with the acknowledged CID
            record = await call(
                http, url, "com.atproto.repo.getRecord", repo=account.did, collection=COLLECTION, rkey=rkey
            )
            assert record["cid"] == cid


@pytest.mark.timeout(180)
async def test_acknowledged_writes_survive_kill_9_of_the_host(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    # the seed picks the operations and the kill points (timing still varies); set it to replay a failure
    seed = int(os.environ.get("ATREPO_CRASH_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    host = Host(tmp_path / "data", tmp_path, database)
    tally = Tally()
    try:
        await host.start(http)
        accounts = []
        for i in range(ACCOUNTS):
            reply = await call(
                http,
                host.url,
                "com.atproto.server.createAccount",
                {"handle": f"crash{i}.test", "password": "correct horse"},
            )
            accounts.append(Account(reply["did"], reply["accessJwt"]))
        for round_no in range(ROUNDS):
            await Load(host.url, accounts, rng, round_no, tally).run(http, host)
            keys, head = check_offline(host.data, accounts, database)
            await host.start(http)
            await check_firehose(http, host.url, head)
            await check_online(http, host.url, accounts, keys, tally)
    except BaseException as exc:
        exc.add_note(f"seed {seed}, {tally}")
        raise
    finally:
        host.kill()
    assert tally.acked >= ROUNDS * FEWEST_ACKS
    print(f"crash test: seed {seed}, {tally}")
