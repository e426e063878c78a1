"""The account lifecycle on a real host: deactivation, activation, takedown, deletion (accounts.md §6, §9).

For each status, the events the change emits (read back from the store's log
and from ``subscribeRepos``, decoded) and every read and write endpoint's
answer (HTTP status and error name).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from host_support import HostClient, Reply, admin_headers

from atrepo.core.car import read_car
from atrepo.core.cid import CID
from atrepo.core.events import AccountEvent, CommitEvent, IdentityEvent, SyncEvent, decode_frame
from atrepo.core.tracker import RepoTracker, Verdict
from atrepo.host.lifecycle import EMAIL_TOKEN_TTL_MS
from atrepo.store import SQLiteStore
from atrepo.store.base import AccountState

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


@dataclass
class User:
    did: str
    handle: str
    token: str
    refresh: str
    password: str = "correct horse"


async def new_user(host: HostClient, handle: str) -> User:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    b = reply.body
    return User(b["did"], b["handle"], b["accessJwt"], b["refreshJwt"])


async def populate(host: HostClient, user: User) -> tuple[str, CID]:
    """A post and a post with an image: the rkey of the first and the image's blob CID."""
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "image/png"}
    async with host.http.post(f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=PNG, headers=headers) as r:
        assert r.status == 200
        blob = (await r.json())["blob"]
    first = await write(host, user, "hello")
    assert first.status == 200, first.body
    embed = {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}
    second = await write(host, user, "look", embed=embed)
    assert second.status == 200, second.body
    return first.body["uri"].rsplit("/", 1)[1], CID.parse(blob["ref"]["$link"])


async def write(host: HostClient, user: User, text: str, **extra: Any) -> Reply:
    record = {"$type": POST, "text": text, "createdAt": NOW, **extra}
    return await host.call(
        "com.atproto.repo.createRecord",
        body={"repo": user.did, "collection": POST, "record": record},
        token=user.token,
    )


async def call(host: HostClient, user: User, nsid: str, body: Any = None) -> Reply:
    return await host.call(nsid, body=body, token=user.token, method="POST")


def events_after(host: HostClient, seq: int) -> list[Any]:
    return [decode_frame(row.frame) for row in host.running.context.store.read_events(seq, 1000)]


def head_seq(host: HostClient) -> int:
    return host.running.context.store.head_seq()


async def reads(host: HostClient, user: User, rkey: str, blob: CID) -> dict[str, tuple[int, str | None]]:
    """Every public read of the user's repository: (HTTP status, error name or None)."""
    did = user.did
    account = host.running.context.store.get_account(did)
    head = (
        str(account.head)
        if account is not None
        else "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    )
    calls: dict[str, dict[str, str]] = {
        "com.atproto.sync.getRepo": {"did": did},
        "com.atproto.sync.getRecord": {"did": did, "collection": POST, "rkey": rkey},
        "com.atproto.sync.getBlocks": {"did": did, "cids": head},
        "com.atproto.sync.getLatestCommit": {"did": did},
        "com.atproto.sync.getRepoStatus": {"did": did},
        "com.atproto.sync.getBlob": {"did": did, "cid": str(blob)},
        "com.atproto.sync.listBlobs": {"did": did},
        "com.atproto.repo.getRecord": {"repo": did, "collection": POST, "rkey": rkey},
        "com.atproto.repo.listRecords": {"repo": did, "collection": POST},
        "com.atproto.repo.describeRepo": {"repo": did},
    }
    out = {}
    for nsid, params in calls.items():
        async with host.http.get(f"{host.url}/xrpc/{nsid}", params=params) as resp:
            body = await resp.read()
            error = None
            if resp.status != 200:
                error = (await resp.json(content_type=None))["error"]
            elif resp.content_type == "application/json":
                await resp.json()
            assert body is not None
            out[nsid] = (resp.status, error)
    return out


def all_refused(answers: dict[str, tuple[int, str | None]], error: str) -> None:
    for nsid, answer in answers.items():
        if nsid == "com.atproto.sync.getRepoStatus":
            continue
        assert answer == (400, error), nsid


async def writes(host: HostClient, user: User) -> dict[str, tuple[int, str | None]]:
    out = {}
    reply = await write(host, user, "while inactive")
    out["createRecord"] = (reply.status, reply.error)
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "image/png"}
    async with host.http.post(
        f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=b"x", headers=headers
    ) as r:
        out["uploadBlob"] = (r.status, (await r.json(content_type=None)).get("error"))
    return out


async def login(host: HostClient, user: User, password: str | None = None) -> Reply:
    return await host.call(
        "com.atproto.server.createSession",
        body={"identifier": user.handle, "password": password or user.password},
    )


# --- deactivation and activation ------------------------------------------------------------------


async def test_deactivate_then_activate(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    rkey, blob = await populate(host, alice)
    before = head_seq(host)

    reply = await call(
        host, alice, "com.atproto.server.deactivateAccount", {"deleteAfter": "2030-01-01T00:00:00Z"}
    )
    assert reply.status == 200, reply.body
    (event,) = events_after(host, before)
    assert isinstance(event, AccountEvent)
    assert (event.did, event.active, event.status, event.seq) == (alice.did, False, "deactivated", before + 1)
    state = host.running.context.store.get_account_state(alice.did)
    assert state is not None and state.deactivated_ms is not None and state.delete_after_ms == 1893456000000

    answers = await reads(host, alice, rkey, blob)
    all_refused(answers, "RepoDeactivated")
    status = await host.call("com.atproto.sync.getRepoStatus", params={"did": alice.did})
    assert status.body == {"did": alice.did, "active": False, "status": "deactivated"}
    listed = await host.call("com.atproto.sync.listRepos")
    (entry,) = [r for r in listed.body["repos"] if r["did"] == alice.did]
    assert entry["active"] is False and entry["status"] == "deactivated"
    assert await writes(host, alice) == {
        "createRecord": (401, "AccountDeactivated"),
        "uploadBlob": (200, None),  # as the reference: a migration uploads before activating
    }
    # A deactivated account may still log in (to reactivate or migrate) and says so.
    session = await login(host, alice)
    assert session.status == 200, session.body
    assert session.body["active"] is False and session.body["status"] == "deactivated"
    checked = await host.call("com.atproto.server.checkAccountStatus", token=alice.token)
    assert checked.status == 200 and checked.body["activated"] is False
    # Deactivating again is allowed and announced again; nothing else changes.
    again = await call(host, alice, "com.atproto.server.deactivateAccount", {})
    assert again.status == 200
    assert host.running.context.store.get_account_state(alice.did) == AccountState(
        alice.did, "deactivated", None, state.deactivated_ms, None
    )

    mid = head_seq(host)
    reply = await call(host, alice, "com.atproto.server.activateAccount")
    assert reply.status == 200, reply.body
    account_event, identity, sync = events_after(host, mid)
    assert isinstance(account_event, AccountEvent) and account_event.active and account_event.status is None
    assert isinstance(identity, IdentityEvent) and identity.handle == "alice.test"
    assert isinstance(sync, SyncEvent)
    account = host.running.context.store.get_account(alice.did)
    assert account is not None and account.active
    assert sync.rev == account.rev
    roots, blocks = read_car(sync.blocks)
    assert roots == [account.head] and list(blocks) == [account.head]
    assert [e.seq for e in (account_event, identity, sync)] == [mid + 1, mid + 2, mid + 3]

    answers = await reads(host, alice, rkey, blob)
    assert all(status == 200 for status, _ in answers.values()), answers
    assert (await write(host, alice, "back")).status == 200


async def test_lifecycle_calls_need_a_full_session(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    for nsid in (
        "com.atproto.server.activateAccount",
        "com.atproto.server.deactivateAccount",
        "com.atproto.server.requestAccountDelete",
    ):
        reply = await host.call(nsid, method="POST", body={} if "deactivate" in nsid else None)
        assert (reply.status, reply.error) == (401, "AuthMissing"), nsid
    reply = await host.call("com.atproto.server.deactivateAccount", body={}, token=alice.refresh)
    assert (reply.status, reply.error) == (400, "InvalidToken")
    # an app-password session may not change the account's status
    made = await call(host, alice, "com.atproto.server.createAppPassword", {"name": "client"})
    assert made.status == 200, made.body
    session = await login(host, alice, made.body["password"])
    assert session.status == 200, session.body
    app = User(alice.did, alice.handle, session.body["accessJwt"], session.body["refreshJwt"])
    for nsid in ("com.atproto.server.deactivateAccount", "com.atproto.server.requestAccountDelete"):
        reply = await call(host, app, nsid, {} if "deactivate" in nsid else None)
        assert (reply.status, reply.error) == (400, "InvalidToken"), nsid
    state = host.running.context.store.get_account_state(alice.did)
    assert state is not None and state.status == "active"


# --- takedown -------------------------------------------------------------------------------------


async def takedown(host: HostClient, did: str, applied: bool, ref: str | None = None) -> Reply:
    attr: dict[str, Any] = {"applied": applied}
    if ref is not None:
        attr["ref"] = ref
    return await host.call(
        "com.atproto.admin.updateSubjectStatus",
        body={"subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did}, "takedown": attr},
        headers=admin_headers(host),
    )


async def test_takedown_and_reversal(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    rkey, blob = await populate(host, alice)
    jti = jwt.decode(alice.refresh, options={"verify_signature": False})["jti"]
    assert host.running.context.store.get_refresh_token(jti) is not None
    before = head_seq(host)

    reply = await takedown(host, alice.did, True, "case-17")
    assert reply.status == 200, reply.body
    assert reply.body["takedown"] == {"applied": True, "ref": "case-17"}
    (event,) = events_after(host, before)
    assert isinstance(event, AccountEvent)
    assert (event.active, event.status) == (False, "takendown")

    all_refused(await reads(host, alice, rkey, blob), "RepoTakendown")
    status = await host.call("com.atproto.sync.getRepoStatus", params={"did": alice.did})
    assert status.body == {"did": alice.did, "active": False, "status": "takendown"}
    assert await writes(host, alice) == {
        "createRecord": (401, "AccountTakedown"),
        "uploadBlob": (401, "AccountTakedown"),
    }
    session = await login(host, alice)
    assert (session.status, session.error) == (401, "AccountTakedown")
    refreshed = await host.call("com.atproto.server.refreshSession", method="POST", token=alice.refresh)
    assert (refreshed.status, refreshed.error) == (401, "AccountTakedown")
    assert host.running.context.store.get_refresh_token(jti) is None  # every session revoked
    activate = await call(host, alice, "com.atproto.server.activateAccount")
    assert (activate.status, activate.error) == (400, "AccountNotFound")

    mid = head_seq(host)
    reply = await takedown(host, alice.did, False)
    assert reply.status == 200, reply.body
    (event,) = events_after(host, mid)
    assert isinstance(event, AccountEvent) and event.active is True and event.status is None
    answers = await reads(host, alice, rkey, blob)
    assert all(status == 200 for status, _ in answers.values()), answers
    assert (await login(host, alice)).status == 200


async def test_takedown_wins_over_deactivation_and_reversal_keeps_it(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    assert (await call(host, alice, "com.atproto.server.deactivateAccount", {})).status == 200
    start = head_seq(host)
    assert (await takedown(host, alice.did, True)).status == 200
    # the owner deactivating again while taken down: the event still says takendown
    assert (await call(host, alice, "com.atproto.server.deactivateAccount", {})).status == 200
    assert (await takedown(host, alice.did, False)).status == 200
    statuses = [(e.active, e.status) for e in events_after(host, start)]
    assert statuses == [(False, "takendown"), (False, "takendown"), (False, "deactivated")]
    state = host.running.context.store.get_account_state(alice.did)
    assert state is not None and state.status == "deactivated" and state.takedown_ref is None


# --- deletion -------------------------------------------------------------------------------------


async def test_owner_deletes_the_account(host: HostClient, caplog: pytest.LogCaptureFixture) -> None:
    ctx = host.running.context
    alice = await new_user(host, "alice.test")
    bob = await new_user(host, "bob.test")
    rkey, blob = await populate(host, alice)
    await populate(host, bob)  # the same image: its file is shared and must stay
    bob_events = [r.seq for r in ctx.store.read_events(0, 1000) if r.did == bob.did]
    assert ctx.store.blob_files.exists(blob)

    prefs = [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False}]
    put = await call(host, alice, "app.bsky.actor.putPreferences", {"preferences": prefs})
    assert put.status == 200, put.body
    assert ctx.store.get_preferences(alice.did, "app.bsky") != []
    jti = jwt.decode(alice.refresh, options={"verify_signature": False})["jti"]
    assert ctx.store.get_refresh_token(jti) is not None
    head = ctx.store.repo_head(alice.did)
    assert head is not None and ctx.store.get_blocks(alice.did, [head.cid]) != {}

    with caplog.at_level(logging.WARNING, logger="atrepo.host.lifecycle"):
        reply = await call(host, alice, "com.atproto.server.requestAccountDelete")
    assert reply.status == 200, reply.body
    (line,) = [r.getMessage() for r in caplog.records if "deletion requested" in r.getMessage()]
    assert alice.did in line
    token = re.search(r"token ([A-Z2-7]{5}-[A-Z2-7]{5})", line)
    assert token is not None
    code = token.group(1)
    stored = ctx.store.get_email_token(alice.did, "delete_account")
    assert stored is not None and stored.token == code

    async def delete(password: str, token: str) -> Reply:
        return await host.call(
            "com.atproto.server.deleteAccount", body={"did": alice.did, "password": password, "token": token}
        )

    assert ((r := await delete("wrong", code)).status, r.error) == (401, "AuthenticationRequired")
    assert ((r := await delete(alice.password, "AAAAA-BBBBB")).status, r.error) == (400, "InvalidToken")
    host.clock.advance(EMAIL_TOKEN_TTL_MS / 1000 + 1)
    assert ((r := await delete(alice.password, code)).status, r.error) == (400, "ExpiredToken")
    host.clock.advance(-(EMAIL_TOKEN_TTL_MS / 1000 + 1))
    assert ctx.store.get_account(alice.did) is not None  # nothing happened yet

    before = head_seq(host)
    reply = await delete(alice.password, code.lower())  # compared without case
    assert reply.status == 200, reply.body

    # The log keeps only the #account deleted of alice; bob's events stay; seq keeps rising.
    rows = ctx.store.read_events(0, 1000)
    (mine,) = [r for r in rows if r.did == alice.did]
    event = decode_frame(mine.frame)
    assert isinstance(event, AccountEvent) and (event.active, event.status) == (False, "deleted")
    assert mine.seq == before + 1 == head_seq(host)
    assert [r.seq for r in rows if r.did == bob.did] == bob_events
    # Data gone: account, records, tokens, blobs (the shared file stays for bob).
    assert ctx.store.get_account(alice.did) is None
    assert ctx.store.get_account_state(alice.did) is None
    assert ctx.store.get_record(alice.did, POST, rkey) is None
    assert ctx.store.get_blob(alice.did, blob) is None
    assert ctx.store.get_email_token(alice.did, "delete_account") is None
    assert ctx.store.get_preferences(alice.did, "app.bsky") == []
    assert ctx.store.get_refresh_token(jti) is None
    assert ctx.store.repo_head(alice.did) is None and ctx.store.get_blocks(alice.did, [head.cid]) == {}
    assert list(ctx.store.blocks_since(alice.did, None)) == []
    assert ctx.store.get_blob(bob.did, blob) is not None and ctx.store.blob_files.exists(blob)

    answers = await reads(host, alice, rkey, blob)
    assert all(answer == (400, "RepoNotFound") for answer in answers.values()), answers
    listed = await host.call("com.atproto.sync.listRepos")
    assert alice.did not in [r["did"] for r in listed.body["repos"]]
    assert (await login(host, alice)).status == 401
    gone = await write(host, alice, "ghost")
    assert gone.status in (400, 403) and gone.error in ("RepoNotFound", "AccountNotFound")


async def test_deleting_the_last_holder_removes_the_blob_file(host: HostClient) -> None:
    ctx = host.running.context
    alice = await new_user(host, "alice.test")
    _, blob = await populate(host, alice)
    assert ctx.store.blob_files.exists(blob)
    reply = await host.call(
        "com.atproto.admin.deleteAccount", body={"did": alice.did}, headers=admin_headers(host)
    )
    assert reply.status == 200, reply.body
    assert not ctx.store.blob_files.exists(blob)
    assert [r.type for r in ctx.store.read_events(0, 100) if r.did == alice.did] == ["#account"]


# --- the same events on the firehose --------------------------------------------------------------


async def test_subscribers_see_the_lifecycle_in_order(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    cursor = head_seq(host)
    url = host.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
    async with host.http.ws_connect(f"{url}?cursor={cursor}", max_msg_size=0) as ws:
        assert (await call(host, alice, "com.atproto.server.deactivateAccount", {})).status == 200
        assert (await call(host, alice, "com.atproto.server.activateAccount")).status == 200
        assert (await takedown(host, alice.did, True)).status == 200
        assert (await takedown(host, alice.did, False)).status == 200
        assert (await write(host, alice, "still here")).status == 200
        received = []
        for _ in range(7):
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            received.append(decode_frame(msg.data))
    kinds = [(type(e).__name__, getattr(e, "active", None), getattr(e, "status", None)) for e in received]
    assert kinds == [
        ("AccountEvent", False, "deactivated"),
        ("AccountEvent", True, None),
        ("IdentityEvent", None, None),
        ("SyncEvent", None, None),
        ("AccountEvent", False, "takendown"),
        ("AccountEvent", True, None),
        ("CommitEvent", None, None),
    ]
    assert [e.seq for e in received] == list(range(cursor + 1, cursor + 8))
    assert isinstance(received[-1], CommitEvent) and received[-1].repo == alice.did
    account = await host.running.context.worker.read(SQLiteStore.get_account, alice.did)
    assert account is not None and account.active
    # The whole log passes Sync 1.1 validation: the activation's #sync restates the head it had.
    key = host.running.context.signing_key(account).public_key
    tracker = RepoTracker()
    verdicts = []
    for row in host.running.context.store.read_events(0, 1000):
        outcome = tracker.process(decode_frame(row.frame), key)
        assert outcome.ok, (row.seq, row.type, outcome.error)
        verdicts.append(outcome.verdict)
    assert verdicts == [
        Verdict.IDENTITY,
        Verdict.ACCOUNT,
        Verdict.FIRST,
        Verdict.DUPLICATE,  # the creation's #sync of the genesis commit
        Verdict.ACCOUNT,
        Verdict.ACCOUNT,
        Verdict.IDENTITY,
        Verdict.DUPLICATE,  # the activation's #sync of the same head
        Verdict.ACCOUNT,
        Verdict.ACCOUNT,
        Verdict.NEXT,
    ]


async def test_owner_and_admin_still_read_an_inactive_repo(host: HostClient) -> None:
    """An export before migrating: the owner's session or the admin skips the status checks."""
    alice = await new_user(host, "alice.test")
    bob = await new_user(host, "bob.test")
    rkey, blob = await populate(host, alice)
    assert (await call(host, alice, "com.atproto.server.deactivateAccount", {})).status == 200
    account = host.running.context.store.get_account(alice.did)
    assert account is not None
    reads = {
        "com.atproto.sync.getRepo": {"did": alice.did},
        "com.atproto.sync.getRecord": {"did": alice.did, "collection": POST, "rkey": rkey},
        "com.atproto.sync.getBlocks": {"did": alice.did, "cids": str(account.head)},
        "com.atproto.sync.getLatestCommit": {"did": alice.did},
        "com.atproto.sync.getBlob": {"did": alice.did, "cid": str(blob)},
        "com.atproto.sync.listBlobs": {"did": alice.did},
    }
    for who, headers, expected in [
        ("owner", {"Authorization": f"Bearer {alice.token}"}, 200),
        ("admin", admin_headers(host), 200),
        ("another account", {"Authorization": f"Bearer {bob.token}"}, 400),
        ("a bad token", {"Authorization": "Bearer not-a-token"}, 400),
        ("nobody", {}, 400),
    ]:
        for nsid, params in reads.items():
            async with host.http.get(f"{host.url}/xrpc/{nsid}", params=params, headers=headers) as resp:
                body = await resp.read()
                assert resp.status == expected, (who, nsid, body[:200])
                if expected == 400:
                    assert (await resp.json(content_type=None))["error"] == "RepoDeactivated"
    async with host.http.get(
        f"{host.url}/xrpc/com.atproto.sync.getRepo",
        params={"did": alice.did},
        headers={"Authorization": f"Bearer {alice.token}"},
    ) as resp:
        roots, _ = read_car(await resp.read())
    assert roots == [account.head]


@pytest.mark.sqlite_only("builds a SQLite file of the schema before the lifecycle migration by hand")
def test_an_older_store_gains_the_lifecycle_columns(tmp_path: Path) -> None:
    """A file from before the lifecycle migration keeps its inactive accounts inactive, reversibly."""
    import sqlite3

    from atrepo.store.sqlite import _MIGRATIONS, DB_FILENAME

    db = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    db.executescript(f"BEGIN;\n{_MIGRATIONS[0]}\n{_MIGRATIONS[1]}\nPRAGMA user_version = 2;\nCOMMIT;")
    for i, status in enumerate(("active", "deactivated", "takendown")):
        db.execute(
            "INSERT INTO accounts (did, handle, status, signing_key, created_ms) VALUES (?, ?, ?, ?, ?)",
            (f"did:plc:{status}", f"{status}.test", status, b"k", 1000 + i),
        )
    db.close()
    store = SQLiteStore(tmp_path)
    try:
        states = {s: store.get_account_state(f"did:plc:{s}") for s in ("active", "deactivated", "takendown")}
        assert states["active"] == AccountState("did:plc:active", "active", None, None, None)
        assert states["deactivated"] == AccountState("did:plc:deactivated", "deactivated", None, 1001, None)
        assert states["takendown"] == AccountState("did:plc:takendown", "takendown", "takendown", None, None)
        with store.transaction("did:plc:deactivated") as tx:
            assert tx.set_takedown("case", now_ms=5) == "takendown"
            assert tx.set_takedown(None, now_ms=6) == "deactivated"  # the owner's state comes back
            assert tx.set_deactivated(False, now_ms=7) == "active"
        with store.transaction("did:plc:takendown") as tx:
            assert tx.set_deactivated(True, now_ms=8, delete_after_ms=9) == "takendown"
            assert tx.set_takedown(None, now_ms=10) == "deactivated"
        assert store.get_account_state("did:plc:takendown") == AccountState(
            "did:plc:takendown", "deactivated", None, 8, 9
        )
        assert store.integrity_check() == ["ok"]
    finally:
        store.close()
