"""``createAccount`` with an existing DID (a migration in) and the activation that follows it.

The DID is made here, in the host's own PLC directory, with keys the test
holds, so the test can sign the service-auth tokens the old host would sign
and move the DID document itself. Checked: the service-auth rules (issuer =
the DID, ``aud`` = this host, ``lxm`` = createAccount, a valid signature),
the account's start (deactivated, a fresh key, an empty repo, no event), the
refusals (an existing DID, a taken handle), and activation: refused while the
DID document names another host, then re-signing an imported head with this
host's key under a fresh rev, announced as ``#account``, ``#identity``,
``#sync``; a plain re-activation keeps its head.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from host_support import HostClient

from atrepo.core.car import CarReader, write_car
from atrepo.core.commit import decode_commit
from atrepo.core.events import AccountEvent, IdentityEvent, SyncEvent, decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.core.repo import Repo, Write
from atrepo.core.service_jwt import create_service_jwt
from atrepo.core.tid import tid_from_parts
from atrepo.identity.plc.client import fetch_verified_log, submit_operation
from atrepo.identity.plc.operations import Service, build_operation, genesis_did, operation_cid
from atrepo.store import SQLiteStore

CREATE = "com.atproto.server.createAccount"
POST = "app.bsky.feed.post"


class OutsideDid:
    """A did:plc living "elsewhere": its rotation and atproto keys are the test's."""

    def __init__(self, host: HostClient, handle: str) -> None:
        self.host = host
        self.handle = handle
        self.rotation = PrivateKey.generate("k256")
        self.key = PrivateKey.generate("k256")
        self.did = ""
        self.last: dict[str, Any] = {}

    async def create(self, endpoint: str = "https://old.example") -> str:
        op = build_operation(
            self.rotation,
            rotation_keys=[self.rotation.public_key.did_key()],
            verification_methods={"atproto": self.key.public_key.did_key()},
            also_known_as=[f"at://{self.handle}"],
            services={"atproto_pds": Service("AtprotoPersonalDataServer", endpoint)},
            prev=None,
        )
        self.did = genesis_did(op)
        ctx = self.host.running.context
        await submit_operation(ctx.http, ctx.plc_url, self.did, op)
        self.last = op
        return self.did

    async def point_at(self, *, key: str, endpoint: str, rotation: list[str]) -> None:
        op = build_operation(
            self.rotation,
            rotation_keys=[self.rotation.public_key.did_key(), *rotation],
            verification_methods={"atproto": key},
            also_known_as=[f"at://{self.handle}"],
            services={"atproto_pds": Service("AtprotoPersonalDataServer", endpoint)},
            prev=str(operation_cid(self.last)),
        )
        ctx = self.host.running.context
        await submit_operation(ctx.http, ctx.plc_url, self.did, op)
        self.last = op

    def token(
        self,
        *,
        aud: str | None = None,
        lxm: str | None = CREATE,
        key: PrivateKey | None = None,
        iss: str = "",
    ) -> str:
        now = int(time.time())
        return create_service_jwt(
            key or self.key,
            iss=iss or self.did,
            aud=aud or self.host.running.context.service_did,
            iat=now,
            exp=now + 60,
            lxm=lxm,
            jti=secrets.token_hex(16),
        )


async def _create(host: HostClient, outside: OutsideDid, token: str | None, **extra: Any) -> Any:
    body = {"handle": outside.handle, "password": "correct horse", "did": outside.did, **extra}
    return await host.call(CREATE, body=body, token=token)


async def test_service_auth_is_required_and_checked(host: HostClient) -> None:
    outside = OutsideDid(host, "mover.test")
    await outside.create()
    other = PrivateKey.generate("k256")
    cases = {
        "no token": (None, 401, "AuthenticationRequired"),
        "wrong aud": (outside.token(aud="did:web:elsewhere.example"), 401, "BadJwtAudience"),
        "wrong lxm": (outside.token(lxm="com.atproto.repo.createRecord"), 401, "BadJwtLexiconMethod"),
        "no lxm": (outside.token(lxm=None), 401, "BadJwtLexiconMethod"),
        "wrong key": (outside.token(key=other), 401, "BadJwtSignature"),
    }
    for name, (token, status, error) in cases.items():
        reply = await _create(host, outside, token)
        assert (reply.status, reply.error) == (status, error), (name, reply.body)
    # a valid token of another DID does not create this one
    second = OutsideDid(host, "second.test")
    await second.create()
    reply = await _create(host, outside, second.token())
    assert (reply.status, reply.error) == (401, "AuthenticationRequired"), reply.body
    assert await host.running.context.worker.read(SQLiteStore.get_account, outside.did) is None


async def test_account_starts_deactivated_with_a_fresh_key_and_no_events(host: HostClient) -> None:
    ctx = host.running.context
    before = await ctx.worker.read(SQLiteStore.head_seq)
    outside = OutsideDid(host, "mover.test")
    await outside.create()
    reply = await _create(host, outside, outside.token())
    assert reply.status == 200, reply.body
    assert reply.body["did"] == outside.did and reply.body["handle"] == "mover.test"
    assert await ctx.worker.read(SQLiteStore.head_seq) == before  # nothing announced
    account = await ctx.worker.read(SQLiteStore.get_account, outside.did)
    assert account is not None and account.status == "deactivated"
    fresh = ctx.signing_key(account).public_key.did_key()
    assert fresh != outside.key.public_key.did_key()
    token = reply.body["accessJwt"]
    creds = await host.call("com.atproto.identity.getRecommendedDidCredentials", token=token)
    assert creds.body["verificationMethods"] == {"atproto": fresh}
    assert creds.body["services"]["atproto_pds"]["endpoint"] == host.url
    session = await host.call("com.atproto.server.getSession", token=token)
    assert session.body["active"] is False and session.body["status"] == "deactivated"
    # the directory was not touched: the DID still names the old host and key
    state = (await fetch_verified_log(ctx.http, ctx.plc_url, outside.did)).state
    assert state is not None and state.verification_methods["atproto"] == outside.key.public_key.did_key()
    # a deactivated repo is not served
    reply = await host.call("com.atproto.sync.getLatestCommit", params={"did": outside.did})
    assert reply.error == "RepoDeactivated", reply.body
    # again: the DID exists here now
    again = await _create(host, outside, outside.token())
    assert again.status == 400 and "already exists" in again.body["message"], again.body


async def test_taken_handle_and_foreign_domain(host: HostClient) -> None:
    assert (await host.create_account("taken.test")).status == 200
    outside = OutsideDid(host, "taken.test")
    await outside.create()
    reply = await _create(host, outside, outside.token())
    assert (reply.status, reply.error) == (400, "HandleNotAvailable"), reply.body
    reply = await _create(host, outside, outside.token(), handle="mover.elsewhere.example")
    assert (reply.status, reply.error) == (400, "UnsupportedDomain"), reply.body


async def _frames_after(host: HostClient, seq: int) -> list[Any]:
    rows = await host.running.context.worker.read(SQLiteStore.read_events, seq, 100)
    return [decode_frame(row.frame) for row in rows]


async def test_activation_checks_the_did_then_resigns_the_imported_head(host: HostClient) -> None:
    ctx = host.running.context
    outside = OutsideDid(host, "mover.test")
    await outside.create()
    token = (await _create(host, outside, outside.token())).body["accessJwt"]
    # the old host's repository: two records, signed with the old key
    old = Repo.create(outside.did, outside.key, []).repo
    record = {"$type": POST, "text": "moved", "createdAt": "2026-01-01T00:00:00.000Z"}
    writes = [Write("create", POST, tid_from_parts(1_700_000_000_000_000 + i, 0), record) for i in range(2)]
    old = old.apply_writes(writes, outside.key).repo
    car = write_car([old.commit.cid], list(old.export_blocks()))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.ipld.car"}
    async with host.http.post(f"{host.url}/xrpc/com.atproto.repo.importRepo", data=car, headers=headers) as r:
        assert r.status == 200, await r.text()
    # the DID still names the old host: activation is refused, nothing changes
    reply = await host.call("com.atproto.server.activateAccount", method="POST", token=token)
    assert reply.status == 400 and "Cannot activate" in reply.body["message"], reply.body
    assert (await ctx.worker.read(SQLiteStore.get_account, outside.did)).status == "deactivated"  # type: ignore[union-attr]
    account = await ctx.worker.read(SQLiteStore.get_account, outside.did)
    assert account is not None
    new_key = ctx.signing_key(account)
    rotation = ctx.secrets.rotation_key.public_key.did_key()
    await outside.point_at(key=new_key.public_key.did_key(), endpoint=host.url, rotation=[rotation])
    seq = await ctx.worker.read(SQLiteStore.head_seq)
    reply = await host.call("com.atproto.server.activateAccount", method="POST", token=token)
    assert reply.status == 200, reply.body
    frames = await _frames_after(host, seq)
    assert [type(f) for f in frames] == [AccountEvent, IdentityEvent, SyncEvent]
    assert frames[0].active is True and frames[1].handle == "mover.test"
    sync = frames[2]
    root, blocks = _car(sync.blocks)
    commit = decode_commit(blocks[root], root)
    assert commit.is_signed_by(new_key.public_key) and not commit.is_signed_by(outside.key.public_key)
    assert commit.data == old.data and commit.rev > old.rev and sync.rev == commit.rev
    head = await ctx.worker.read(SQLiteStore.repo_head, outside.did)
    assert head is not None and head.cid == root
    # a plain re-activation keeps its head
    seq = await ctx.worker.read(SQLiteStore.head_seq)
    assert (await host.call("com.atproto.server.activateAccount", method="POST", token=token)).status == 200
    again = (await _frames_after(host, seq))[-1]
    assert isinstance(again, SyncEvent) and again.rev == commit.rev
    assert (await ctx.worker.read(SQLiteStore.repo_head, outside.did)).cid == root  # type: ignore[union-attr]


def _car(data: bytes) -> tuple[Any, dict[Any, bytes]]:
    import io

    reader = CarReader(io.BytesIO(data))
    return reader.roots[0], {cid: raw for cid, raw, _ in reader}
