"""Issue 10's acceptance: an account moves between two atrepo hosts sharing one PLC directory.

Host A runs the embedded directory; host B uses it. An account on A with
2,000 records and 20 blobs (and a preference) is moved with the same function
``atrepo account migrate`` runs, then:

* B's ``getRepo`` verifies with B's key for the account and holds every record;
* every blob is on B, byte for byte;
* the DID document names B's endpoint and key;
* A answers ``RepoDeactivated``;
* both firehoses, read with ``subscribeRepos`` from cursor 0, carry exactly
  what accounts.md §11 prescribes (A: creation, the writes, ``#account
  deactivated``; B: ``#identity`` from the PLC submission, then ``#account
  active``, ``#identity {handle}``, ``#sync``), and pass our Sync 1.1 tracker
  chained across the move, B's ``#sync`` verifying with the new key and
  restating A's last tree under a later rev.

The second test interrupts the migration after every step and resumes it
with the same state file (the last step through the CLI, as a subprocess);
the same checks then show that nothing was lost or done twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, TokenClock, admin_headers

from atrepo.cli.migrate import STEPS, MigrationOptions, QuietReporter, migrate
from atrepo.core.cid import CID
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent, decode_frame
from atrepo.core.keys import PublicKey
from atrepo.core.tracker import RepoTracker, Verdict
from atrepo.core.verify import verify_repo_car
from atrepo.host import HostConfig, start_host
from atrepo.identity.plc.client import fetch_verified_log
from atrepo.store import SQLiteStore

pytestmark = pytest.mark.timeout(120)

POST = "app.bsky.feed.post"
NOW = "2026-12-01T00:00:00.000Z"
PASSWORD = "correct horse"
HANDLE = "alice.test"
PREFS = [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False}]
#: Bound on every wait for a firehose frame.
RECEIVE_S = 15.0


@dataclass
class Pair:
    a: HostClient
    b: HostClient


@pytest.fixture
async def pair(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None, other_database: str | None
) -> AsyncIterator[Pair]:
    """Two hosts sharing the first one's PLC directory, each with its own store on the backend under test."""
    first = await start_host(
        HostConfig(
            host="127.0.0.1",
            port=0,
            plc_port=0,
            data_dir=tmp_path / "a",
            rate_limits=False,
            database=database,
        ),
        validate_output=True,
    )
    try:
        plc_url = first.context.plc_url
        second = await start_host(
            HostConfig(
                host="127.0.0.1",
                port=0,
                plc_url=plc_url,
                data_dir=tmp_path / "b",
                rate_limits=False,
                database=other_database,
            ),
            validate_output=True,
        )
        try:
            yield Pair(HostClient(first, http, TokenClock()), HostClient(second, http, TokenClock()))
        finally:
            await second.stop()
    finally:
        await first.stop()


@dataclass
class Source:
    did: str
    records: dict[str, CID]
    blobs: dict[str, bytes]
    key: PublicKey


async def _populate(host: HostClient, records: int, blobs: int) -> Source:
    reply = await host.create_account(HANDLE, PASSWORD)
    assert reply.status == 200, reply.body
    did, token = reply.body["did"], reply.body["accessJwt"]
    auth = {"Authorization": f"Bearer {token}"}
    uploaded: dict[str, bytes] = {}
    refs: list[Any] = []
    for i in range(blobs):
        data = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(200 + i)
        headers = {**auth, "Content-Type": "image/png"}
        async with host.http.post(
            f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=data, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            blob = (await resp.json())["blob"]
        uploaded[blob["ref"]["$link"]] = data
        refs.append(blob)
    writes: list[dict[str, Any]] = []
    for i in range(records):
        record: dict[str, Any] = {"$type": POST, "text": f"post {i}", "createdAt": NOW}
        if i < len(refs):
            image = {"alt": "", "image": refs[i]}
            record["embed"] = {"$type": "app.bsky.embed.images", "images": [image]}
        writes.append({"$type": "com.atproto.repo.applyWrites#create", "collection": POST, "value": record})
    for start in range(0, len(writes), 200):
        body = {"repo": did, "writes": writes[start : start + 200]}
        reply = await host.call("com.atproto.repo.applyWrites", body=body, token=token)
        assert reply.status == 200, reply.body
    reply = await host.call("app.bsky.actor.putPreferences", body={"preferences": PREFS}, token=token)
    assert reply.status == 200, reply.body
    ctx = host.running.context
    account = await ctx.worker.read(SQLiteStore.get_account, did)
    assert account is not None
    key = ctx.signing_key(account).public_key
    car = await _get_repo(host, did)
    stored = dict(verify_repo_car(io.BytesIO(car), key=key, did=did))
    assert len(stored) == records
    return Source(did, stored, uploaded, key)


async def _get_repo(host: HostClient, did: str) -> bytes:
    async with host.http.get(f"{host.url}/xrpc/com.atproto.sync.getRepo", params={"did": did}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def _firehose(host: HostClient) -> list[Any]:
    """Every frame of the host's log, from cursor 0, over a real subscription."""
    head = await host.running.context.worker.read(SQLiteStore.head_seq)
    url = host.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
    out: list[Any] = []
    async with host.http.ws_connect(url, max_msg_size=0) as ws:
        while not out or out[-1].seq < head:
            msg = await asyncio.wait_for(ws.receive(), RECEIVE_S)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            out.append(decode_frame(msg.data))
    assert [f.seq for f in out] == list(range(1, head + 1))
    return out


def _shape(frame: Any) -> tuple[Any, ...]:
    if isinstance(frame, IdentityEvent):
        return ("identity", frame.handle)
    if isinstance(frame, AccountEvent):
        return ("account", frame.active, frame.status)
    if isinstance(frame, CommitEvent):
        return ("commit",)
    if isinstance(frame, SyncEvent):
        return ("sync",)
    return (type(frame).__name__,)


async def _check_after(pair: Pair, source: Source, commits: int) -> None:
    """Everything the acceptance lists, once the migration has finished."""
    a, b = pair.a, pair.b
    did = source.did
    ctx_b = b.running.context
    account_b = await ctx_b.worker.read(SQLiteStore.get_account, did)
    assert account_b is not None and account_b.status == "active"
    key_b = ctx_b.signing_key(account_b).public_key
    assert key_b != source.key
    # B's repository: verifies with B's key, every record
    car = await _get_repo(b, did)
    assert dict(verify_repo_car(io.BytesIO(car), key=key_b, did=did)) == source.records
    # every blob, byte for byte
    for cid, data in source.blobs.items():
        params = {"did": did, "cid": cid}
        async with b.http.get(f"{b.url}/xrpc/com.atproto.sync.getBlob", params=params) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.read() == data
    missing = await b.call("com.atproto.repo.listMissingBlobs", token=await _login(b, did))
    assert missing.body["blobs"] == []
    prefs = await b.call("app.bsky.actor.getPreferences", token=await _login(b, did))
    assert prefs.body["preferences"] == PREFS
    # the DID document names B
    state = (await fetch_verified_log(ctx_b.http, ctx_b.plc_url, did)).state
    assert state is not None
    assert state.services["atproto_pds"].endpoint == b.url
    assert state.verification_methods["atproto"] == key_b.did_key()
    assert state.also_known_as[0] == f"at://{HANDLE}"
    # A serves it no more
    reply = await a.call("com.atproto.sync.getRepo", params={"did": did})
    assert (reply.status, reply.error) == (400, "RepoDeactivated"), reply.body
    # both firehoses, exactly as accounts.md prescribes
    frames_a = await _firehose(a)
    frames_b = await _firehose(b)
    assert {f.did if not isinstance(f, CommitEvent) else f.repo for f in frames_a + frames_b} == {did}
    assert [_shape(f) for f in frames_a] == [
        ("identity", HANDLE),
        ("account", True, None),
        ("commit",),
        ("sync",),
        *[("commit",)] * commits,
        ("account", False, "deactivated"),
    ]
    assert [_shape(f) for f in frames_b] == [
        ("identity", None),
        ("account", True, None),
        ("identity", HANDLE),
        ("sync",),
    ]
    # Sync 1.1, chained across the move: A's commits with A's key, then B's #sync with B's key
    tracker = RepoTracker()
    last_a = None
    for frame in frames_a:
        outcome = tracker.process(frame, source.key)
        assert outcome.ok, outcome.error
        if isinstance(frame, CommitEvent):
            assert outcome.verdict in (Verdict.FIRST, Verdict.NEXT), outcome.verdict
            last_a = frame
    assert last_a is not None
    before = tracker.states.get(did)
    assert before is not None
    sync = frames_b[-1]
    assert not tracker.process(sync, source.key).ok  # not A's key: the commit was re-signed
    tracker.states[did] = before
    outcome = tracker.process(sync, key_b)
    assert outcome.ok and outcome.verdict is Verdict.RESTATED, (outcome.verdict, outcome.error)
    after = tracker.states.get(did)
    assert after is not None and after.data == before.data and after.rev > last_a.rev
    head_b = await ctx_b.worker.read(SQLiteStore.repo_head, did)
    assert head_b is not None and sync.rev == head_b.rev and after.commit == head_b.cid


async def _login(host: HostClient, did: str) -> str:
    reply = await host.call(
        "com.atproto.server.createSession", body={"identifier": did, "password": PASSWORD}
    )
    assert reply.status == 200, reply.body
    token: str = reply.body["accessJwt"]
    return token


def _options(pair: Pair, state: Path | None, **extra: Any) -> MigrationOptions:
    return MigrationOptions(
        from_url=pair.a.url, to_url=pair.b.url, handle=HANDLE, password=PASSWORD, state_path=state, **extra
    )


async def test_migrate_2000_records_and_20_blobs(pair: Pair, tmp_path: Path) -> None:
    source = await _populate(pair.a, 2000, 20)
    reporter = QuietReporter()
    admin = pair.a.running.context.secrets.admin_password
    result = await migrate(
        _options(pair, tmp_path / "state.json", from_admin_password=admin), reporter=reporter
    )
    assert result.status == "done", result
    assert result.steps_run == STEPS and result.blobs_uploaded == 20
    assert len(reporter.lines) == len(STEPS) + 2
    await _check_after(pair, source, commits=10)
    # a finished migration run again does nothing (and says so)
    again = await migrate(_options(pair, tmp_path / "state.json", from_admin_password=admin))
    assert again.status == "done" and again.steps_run == ()


class Interrupted(Exception):
    pass


def _stop_after(step: str) -> Any:
    def hook(done: str) -> None:
        if done == step:
            raise Interrupted(step)

    return hook


async def test_interrupted_at_every_step_then_resumed(pair: Pair, tmp_path: Path) -> None:
    source = await _populate(pair.a, 250, 3)
    state = tmp_path / "state.json"
    token_steps = STEPS.index("sign_plc_operation")
    for step in STEPS[:token_steps]:
        with pytest.raises(Interrupted):
            await migrate(_options(pair, state), after_step=_stop_after(step))
        assert json.loads(state.read_text())["done"][-1] == step
        if step == "create_account":  # the state file lost: the account on B is found and reused
            state.unlink()
            reporter = QuietReporter()
            with pytest.raises(Interrupted):
                await migrate(_options(pair, state), reporter=reporter, after_step=_stop_after(step))
            assert "reusing it" in reporter.lines[-1]
    # no token given: the run stops and says where the operator finds it
    stopped = await migrate(_options(pair, state))
    assert stopped.status == "needs_plc_token" and stopped.steps_run == ()
    assert "/atrepo/admin/email-token" in stopped.message and source.did in stopped.message
    async with pair.a.http.get(
        f"{pair.a.url}/atrepo/admin/email-token",
        params={"did": source.did, "purpose": "plc_operation"},
        headers=admin_headers(pair.a),
    ) as resp:
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
    for step in STEPS[token_steps:-1]:
        with pytest.raises(Interrupted):
            await migrate(_options(pair, state, plc_token=token), after_step=_stop_after(step))
        assert json.loads(state.read_text())["done"][-1] == step
    # the last step through the command itself
    args = ["--from", pair.a.url, "--to", pair.b.url, "--handle", HANDLE, "--password", PASSWORD]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atrepo",
        "account",
        "migrate",
        *args,
        "--plc-token",
        token,
        "--state",
        str(state),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["status"] == "done" and reply["stepsRun"] == ["deactivate_old"], reply
    assert b"deactivate_old" in err
    assert json.loads(state.read_text())["done"] == list(STEPS)
    await _check_after(pair, source, commits=2)
