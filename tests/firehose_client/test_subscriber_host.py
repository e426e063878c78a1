"""The subscriber and ``FrameVerifier`` against a real host, and ``atrepo firehose tail`` end to end.

A host with its embedded PLC directory runs on 127.0.0.1; records are written
through its XRPC API; the subscriber reads its firehose from cursor 0 and live,
and every ``#commit``/``#sync`` is checked with keys resolved from the PLC
directory. A commit signed by another key fails after one forced refresh.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from client_support import TIME, WAIT_S, Recorder
from host_support import HostClient

from atrepo.core.events import CommitEvent, IdentityEvent
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.core.tracker import Outcome, RepoTracker, Verdict
from atrepo.firehose.subscriber import FrameVerifier, Received, Subscriber
from atrepo.identity.resolver import DIDResolver

POST = "app.bsky.feed.post"


def post(text: str) -> dict[str, Any]:
    return {"$type": POST, "text": text, "createdAt": TIME}


async def account(host: HostClient, name: str) -> tuple[str, str]:
    reply = await host.create_account(f"{name}.test")
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def create_record(host: HostClient, did: str, token: str, text: str) -> None:
    reply = await host.call(
        "com.atproto.repo.createRecord",
        body={"repo": did, "collection": POST, "record": post(text)},
        token=token,
    )
    assert reply.status == 200, reply.body


class Verifying:
    """A handler that verifies every event and records the outcomes."""

    def __init__(self, verifier: FrameVerifier) -> None:
        self.verifier = verifier
        self.rec = Recorder()
        self.outcomes: list[Outcome] = []

    async def __call__(self, item: Received) -> None:
        self.outcomes.append(await self.verifier.check(item.frame))
        await self.rec(item)


async def test_host_stream_verifies_from_zero_and_live(host: HostClient) -> None:
    alice, alice_jwt = await account(host, "alice")
    bob, bob_jwt = await account(host, "bob")
    for i in range(3):
        await create_record(host, alice, alice_jwt, f"a{i}")
        await create_record(host, bob, bob_jwt, f"b{i}")
    async with DIDResolver(plc_url=host.running.plc_url) as resolver:
        handler = Verifying(FrameVerifier(resolver))
        sub = Subscriber(host.url, handler, cursor=0, lanes=8)
        task = asyncio.create_task(sub.run())
        try:
            # per account: #identity, #account, first #commit, #sync; then one #commit per record
            await handler.rec.until(lambda: len(handler.rec.accepted) == 2 * 4 + 6)
            backlog = sub.cursor
            assert backlog == 14
            for i in range(2):
                await create_record(host, alice, alice_jwt, f"live{i}")
            await handler.rec.until(lambda: len(handler.rec.accepted) == 16)
        finally:
            sub.stop()
            await asyncio.wait_for(task, WAIT_S)
    assert sorted(handler.rec.seqs) == list(range(1, 17))  # type: ignore[type-var]
    assert sub.cursor == 16
    assert all(o.error is None for o in handler.outcomes), [o.error for o in handler.outcomes if o.error]
    verdicts = handler.verifier.stats
    assert verdicts["invalid"] == 0
    assert verdicts["first"] == 2
    assert verdicts["next"] == 8  # 6 from the backlog, 2 live
    assert verdicts["identity"] == 2 and verdicts["account"] == 2
    assert handler.verifier.refreshes == 0
    commits = [o for o in handler.outcomes if isinstance(o.frame, CommitEvent) and o.did == alice]
    assert [o.verdict for o in commits] == [Verdict.FIRST] + [Verdict.NEXT] * 5


async def test_forged_commit_is_invalid_after_one_refresh(host: HostClient) -> None:
    alice, _ = await account(host, "alice")
    forger = PrivateKey.generate("k256")
    forged = Repo.create(alice, forger, [Write("create", POST, "x", post("not alice"))]).to_event(99, TIME)
    async with DIDResolver(plc_url=host.running.plc_url) as resolver:
        tracker = RepoTracker()
        verifier = FrameVerifier(resolver, tracker)
        outcome = await verifier.check(forged)
        assert outcome.verdict is Verdict.INVALID
        assert outcome.error is not None and getattr(outcome.error, "rule", None) == "signature"
        assert verifier.refreshes == 1
        assert tracker.states.get(alice) is None
        # the same commit signed by alice's real key passes
        ctx = host.running.context
        from atrepo.store import SQLiteStore

        acct = await ctx.worker.read(SQLiteStore.get_account, alice)
        assert acct is not None
        genuine = Repo.create(alice, ctx.signing_key(acct), [Write("create", POST, "x", post("alice"))])
        ok = await verifier.check(genuine.to_event(100, TIME))
        assert ok.verdict is Verdict.FIRST
        # an unresolvable DID makes its event invalid without a signature check
        stranger = Repo.create("did:plc:" + "z" * 24, forger, [Write("create", POST, "x", post("?"))])
        assert (await verifier.check(stranger.to_event(101, TIME))).verdict is Verdict.INVALID
        assert (await verifier.check(IdentityEvent(102, alice, TIME))).verdict is Verdict.IDENTITY
        assert verifier.refreshes == 1
        assert verifier.stats["invalid"] == 2


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "atrepo", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_tail_saves_a_file_that_verify_accepts(host: HostClient, tmp_path: Path) -> None:
    alice, jwt = await account(host, "alice")
    for i in range(3):
        await create_record(host, alice, jwt, f"p{i}")
    saved = tmp_path / "tail.stream"
    code, out, err = await run_cli(
        "firehose", "tail", host.url, "--cursor", "0", "--limit", "6", "--save", str(saved), "--json",
        "--verify", "--plc", host.running.plc_url,
    )  # fmt: skip
    assert code == 0, out + err
    *rows, summary = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["type"] for r in rows] == ["#identity", "#account", "#commit", "#sync", "#commit", "#commit"]
    assert all(r["did"] == alice for r in rows)
    assert [r["verdict"] for r in rows] == ["identity", "account", "first", "duplicate", "next", "next"]
    assert rows[4]["ops"] == 1 and rows[4]["rev"] is not None
    assert summary["summary"] is True and summary["events"] == 6 and summary["invalid"] == 0
    assert summary["cursor"] == 6
    code, out, err = await run_cli("firehose", "verify", str(saved), "--json")
    assert code == 0, out + err
    *vrows, vsummary = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in vrows] == [1, 2, 3, 4, 5, 6]
    assert vsummary["frames"] == 6 and vsummary["failed"] == 0 and vsummary["commits"] == 3
    # human output, resuming after the printed cursor (the last record's commit is left), --duration stops it
    code, out, err = await run_cli("firehose", "tail", host.url, "--cursor", "6", "--duration", "1")
    assert code == 0, out + err
    assert out.splitlines() == [f"7 #commit {alice} rev={out.split('rev=')[1].split()[0]} ops=1"]
    assert "1 events" in err and "cursor 7" in err


async def test_cli_tail_exits_nonzero_on_future_cursor(host: HostClient) -> None:
    code, out, _ = await run_cli("firehose", "tail", host.url, "--cursor", "1000", "--json", "--limit", "1")
    assert code == 1
    summary = json.loads(out.splitlines()[-1])
    assert summary["error_frame"].startswith("FutureCursor")
    assert summary["events"] == 0
