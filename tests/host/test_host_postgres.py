"""The host on PostgreSQL end to end: accounts, writes, getRepo, the firehose, a restart, two hosts.

The host runs in-process (``start_host``) with ``database`` set to a fresh
database of the test cluster (tests/pg_support.py), exactly what ``atrepo
serve --database postgresql://...`` builds; the crash test runs the real
process on it (tests/host/test_crash_host.py). Blob files, the JWT secret
and keys stay in the data directory.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, TokenClock, firehose_seqs

from atrepo.core.errors import InputFileError
from atrepo.core.events import CommitEvent, decode_frame
from atrepo.core.verify import verify_repo_car
from atrepo.host import HostConfig, load_config, start_host
from atrepo.store import SQLiteStore
from atrepo.store.postgres import PostgresStore

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"
#: Bounds a wait on the firehose so a broken host fails instead of hanging (not a timing assert).
RECEIVE_TIMEOUT_S = 20.0


def _config(tmp_path: Path, url: str, **extra: Any) -> HostConfig:
    return HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=url, **extra)


@pytest.fixture
async def pg_host(
    tmp_path: Path, pg_url: str, http: aiohttp.ClientSession, clock: TokenClock
) -> AsyncIterator[HostClient]:
    running = await start_host(_config(tmp_path, pg_url), clock_ms=clock, validate_output=True)
    try:
        yield HostClient(running, http, clock)
    finally:
        await running.stop()


async def _account(host: HostClient, name: str) -> tuple[str, str]:
    reply = await host.create_account(f"{name}.test")
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def _post(host: HostClient, did: str, token: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {
        "repo": did,
        "collection": POST,
        "record": {"$type": POST, "text": text, "createdAt": NOW, **extra},
    }
    reply = await host.call("com.atproto.repo.createRecord", body=body, token=token)
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.body
    return result


async def _repo_records(host: HostClient, did: str) -> dict[str, str]:
    """getRepo, verified with the account's key: path -> record CID."""
    account = await host.running.context.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    key = host.running.context.signing_key(account).public_key
    async with host.http.get(f"{host.url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
        assert resp.status == 200
        car = await resp.read()
    return {path: str(cid) for path, cid in verify_repo_car(io.BytesIO(car), key=key, did=did)}


async def _firehose_seqs(host: HostClient, cursor: int, head: int) -> list[int]:
    return await firehose_seqs(host.http, host.url, cursor, head, RECEIVE_TIMEOUT_S)


async def test_accounts_writes_get_repo_and_the_firehose(pg_host: HostClient) -> None:
    host = pg_host
    assert isinstance(host.running.context.store, PostgresStore)
    alice, alice_token = await _account(host, "alice")
    bob, bob_token = await _account(host, "bob")
    written: dict[str, str] = {}
    for i in range(6):
        reply = await _post(host, alice, alice_token, f"post {i}")
        written[reply["uri"].split("/", 3)[3]] = reply["cid"]
    upload = await _upload(host, alice_token, b"\x89PNG\r\n\x1a\n" + b"pixels" * 100)
    with_image = await _post(
        host,
        alice,
        alice_token,
        "with an image",
        embed={"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": upload}]},
    )
    written[with_image["uri"].split("/", 3)[3]] = with_image["cid"]
    gone = sorted(written)[0]
    collection, rkey = gone.split("/")
    reply = await host.call(
        "com.atproto.repo.deleteRecord",
        body={"repo": alice, "collection": collection, "rkey": rkey},
        token=alice_token,
    )
    assert reply.status == 200, reply.body
    del written[gone]
    await _post(host, bob, bob_token, "bob's")

    assert await _repo_records(host, alice) == written
    listed = await host.call("com.atproto.repo.listRecords", params={"repo": alice, "collection": POST})
    assert {r["uri"].split("/", 3)[3]: r["cid"] for r in listed.body["records"]} == written
    blob = await host.call(
        "com.atproto.sync.listBlobs", params={"did": alice}
    )  # the uploaded blob is referenced now
    assert blob.body["cids"] == [upload["ref"]["$link"]]
    async with host.http.get(
        f"{host.url}/xrpc/com.atproto.sync.getBlob", params={"did": alice, "cid": upload["ref"]["$link"]}
    ) as resp:
        assert resp.status == 200 and (await resp.read()).startswith(b"\x89PNG")

    # handles are case-insensitive on PostgreSQL too
    session = await host.call(
        "com.atproto.server.createSession", body={"identifier": "ALICE.test", "password": "correct horse"}
    )
    assert session.status == 200 and session.body["did"] == alice
    taken = await host.create_account("Bob.TEST")
    assert taken.status == 400, taken.body

    head = await host.running.context.worker.read(SQLiteStore.head_seq)
    # two accounts (4 events each) + 7 creates + 1 delete + bob's post
    assert head == 8 + 7 + 1 + 1
    assert await _firehose_seqs(host, 0, head) == list(range(1, head + 1))
    assert host.running.context.store.integrity_check() == []


async def _upload(host: HostClient, token: str, data: bytes) -> dict[str, Any]:
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.uploadBlob",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "*/*"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    blob: dict[str, Any] = body["blob"]
    return blob


async def test_a_restarted_host_keeps_its_data_and_its_seq(
    tmp_path: Path, pg_url: str, http: aiohttp.ClientSession, clock: TokenClock
) -> None:
    config = _config(tmp_path, pg_url)
    running = await start_host(config, clock_ms=clock)
    try:
        host = HostClient(running, http, clock)
        did, token = await _account(host, "carol")
        first = await _post(host, did, token, "before")
    finally:
        await running.stop()
    running = await start_host(config, clock_ms=clock)
    try:
        host = HostClient(running, http, clock)
        second = await _post(host, did, token, "after")  # same JWT secret and keys: the data directory's
        assert second["commit"]["rev"] > first["commit"]["rev"]
        assert set((await _repo_records(host, did)).values()) == {first["cid"], second["cid"]}
        assert await _firehose_seqs(host, 4, 6) == [5, 6]
    finally:
        await running.stop()


async def test_two_hosts_on_one_database_share_one_gapless_log(
    tmp_path: Path, pg_url: str, http: aiohttp.ClientSession, clock: TokenClock
) -> None:
    """Two host instances (as two worker processes would) write at once: one log, seqs 1..n, chains intact."""
    secret = "x" * 64
    hosts = []
    for name in ("one", "two"):
        config = HostConfig(
            host="127.0.0.1",
            port=0,
            plc_port=0,
            data_dir=tmp_path / name,
            database=pg_url,
            jwt_secret=secret,
            rate_limits=False,
        )
        hosts.append(HostClient(await start_host(config, clock_ms=clock), http, clock))
    try:
        accounts = [await _account(hosts[0], "dora"), await _account(hosts[1], "eve")]

        async def writes(host: HostClient, did: str, token: str) -> list[str]:
            return [(await _post(host, did, token, f"p{i}"))["cid"] for i in range(15)]

        # each account is written through both hosts at once: per-repo locks serialize them
        jobs = [(host, did, token) for host in hosts for did, token in accounts]
        results = await asyncio.gather(*(writes(host, did, token) for host, did, token in jobs))
        store = hosts[0].running.context.store
        rows = store.read_events(0, 1000)
        assert [row.seq for row in rows] == list(range(1, 8 + 60 + 1))
        chains: dict[str, list[str]] = {}
        for row in rows:
            frame = decode_frame(row.frame)
            if isinstance(frame, CommitEvent):
                chain = chains.setdefault(row.did, [])
                assert frame.since == (chain[-1] if chain else None), f"seq {row.seq}: the chain breaks"
                chain.append(frame.rev)
        for did, _ in accounts:
            expected = {
                cid for (_, of, _), cids in zip(jobs, results, strict=True) if of == did for cid in cids
            }
            records = await _repo_records(hosts[1], did)
            assert set(records.values()) == expected and len(chains[did]) == 1 + 30
        assert store.integrity_check() == []
    finally:
        for host in hosts:
            await host.running.stop()


def test_the_database_setting_is_read_checked_and_printed_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://atrepo:s3cret@127.0.0.1:5432/atrepo"
    config = load_config(env={"ATREPO_DATABASE": url, "ATREPO_DATA_DIR": str(tmp_path)})
    assert config.database == url
    described = config.describe(bound_port=1)
    assert described["database"] == "postgresql://atrepo:***@127.0.0.1:5432/atrepo"
    assert "s3cret" not in repr(config) and "s3cret" not in str(described)
    assert load_config({"database": "postgres://h/db"}, env={}).database == "postgres://h/db"
    assert "SQLite" in load_config(env={}).describe(bound_port=1)["database"]
    with pytest.raises(InputFileError, match="postgresql://"):
        load_config(env={"ATREPO_DATABASE": "/var/lib/atrepo.db"})
