"""Accounts end to end: describeServer, createAccount, createSession, resolveHandle (real servers)."""

from __future__ import annotations

import pytest
from host_support import HostClient

from atrepo.core.events import decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.host.accounts import check_new_handle, hash_password, verify_password


async def test_describe_server(host: HostClient) -> None:
    reply = await host.call("com.atproto.server.describeServer")
    assert reply.status == 200
    assert reply.body["did"] == "did:web:127.0.0.1"
    assert reply.body["availableUserDomains"] == [".test"]
    assert reply.body["inviteCodeRequired"] is False


async def test_create_account_registers_did_and_emits_the_four_events(host: HostClient) -> None:
    heads: list[int] = []
    host.running.context.notify_event.append(heads.append)
    reply = await host.create_account("alice.test", email="alice@example.com")
    assert reply.status == 200, reply.body
    did = reply.body["did"]
    assert did.startswith("did:plc:")
    assert reply.body["handle"] == "alice.test"
    assert reply.body["accessJwt"].count(".") == 2
    assert reply.body["refreshJwt"].count(".") == 2

    ctx = host.running.context
    account = ctx.store.get_account(did)
    assert account is not None and account.active and account.email == "alice@example.com"
    key = ctx.signing_key(account)

    # The directory holds the DID, naming our endpoint and the account's signing key.
    async with host.http.get(f"{host.running.plc_url}/{did}") as resp:
        assert resp.status == 200
        doc = await resp.json(content_type=None)
    assert doc == reply.body["didDoc"]
    assert doc["alsoKnownAs"] == ["at://alice.test"]
    assert doc["service"] == [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": ctx.public_url}
    ]
    assert ctx.public_url == host.url
    (method,) = doc["verificationMethod"]
    assert "did:key:" + method["publicKeyMultibase"] == key.public_key.did_key()
    async with host.http.get(f"{host.running.plc_url}/{did}/data") as resp:
        data = await resp.json(content_type=None)
    assert data["rotationKeys"] == [ctx.secrets.rotation_key.public_key.did_key()]

    # #identity, #account (active), then the genesis #commit and #sync, seq continuous.
    rows = ctx.store.read_events(0, 100)
    assert [r.type for r in rows] == ["#identity", "#account", "#commit", "#sync"]
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert {r.did for r in rows} == {did}
    events = [decode_frame(r.frame) for r in rows]
    identity, acct, commit, sync = events
    assert identity.handle == "alice.test"  # type: ignore[union-attr]
    assert acct.active is True and acct.status is None  # type: ignore[union-attr]
    head = ctx.store.repo_head(did)
    assert head is not None
    assert commit.commit == head.cid and commit.since is None and commit.ops == ()  # type: ignore[union-attr]
    assert commit.rev == sync.rev == head.rev  # type: ignore[union-attr]
    assert heads == [4]
    assert ctx.store.head_seq() == 4

    # A second account continues the sequence.
    assert (await host.create_account("bob.test")).status == 200
    assert [r.seq for r in ctx.store.read_events(0, 100)] == list(range(1, 9))
    assert heads == [4, 8]


async def test_created_signing_key_is_a_k256_key(host: HostClient) -> None:
    reply = await host.create_account("carol.test")
    ctx = host.running.context
    account = ctx.store.get_account(reply.body["did"])
    assert account is not None
    assert isinstance(ctx.signing_key(account), PrivateKey)
    assert ctx.signing_key(account).curve == "k256"


async def test_duplicate_handle(host: HostClient) -> None:
    assert (await host.create_account("alice.test", email="a@example.com")).status == 200
    for handle in ("alice.test", "ALICE.test"):
        reply = await host.create_account(handle)
        assert (reply.status, reply.error) == (400, "HandleNotAvailable")
        assert reply.body["message"] == "Handle already taken: alice.test"
    reply = await host.create_account("alice2.test", email="A@example.com")
    assert (reply.status, reply.error) == (400, "InvalidRequest")
    # Nothing was written for the refused attempts.
    assert host.running.context.store.head_seq() == 4


@pytest.mark.parametrize(
    ("handle", "error", "message"),
    [
        ("al.test", "InvalidHandle", "Handle too short"),
        ("abcdefghijklmnopqrs.test", "InvalidHandle", "Handle too long"),
        ("a.bob.test", "InvalidHandle", "Invalid characters in handle"),
        ("alice.example.com", "UnsupportedDomain", "Not a supported handle domain"),
        ("admin.test", "HandleNotAvailable", "Reserved handle"),
    ],
)
async def test_bad_handles(host: HostClient, handle: str, error: str, message: str) -> None:
    reply = await host.create_account(handle)
    assert (reply.status, reply.error, reply.body["message"]) == (400, error, message)


async def test_handle_syntax_is_checked_by_the_lexicon(host: HostClient) -> None:
    reply = await host.create_account("-bad-.test")
    assert (reply.status, reply.error) == (400, "InvalidRequest")


async def test_password_rules(host: HostClient) -> None:
    reply = await host.call("com.atproto.server.createAccount", body={"handle": "dave.test"})
    assert (reply.status, reply.error) == (400, "InvalidPassword")
    reply = await host.create_account("dave.test", password="x" * 257)
    assert (reply.status, reply.error) == (400, "InvalidPassword")
    assert (await host.create_account("dave.test", password="x" * 256)).status == 200


async def test_migration_and_plc_op_are_refused(host: HostClient) -> None:
    # an existing DID needs that DID's service-auth token (tests/host/test_migration_in.py)
    reply = await host.create_account("erin.test", did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert (reply.status, reply.error) == (401, "AuthenticationRequired")
    reply = await host.create_account("erin.test", plcOp={})
    assert (reply.status, reply.error) == (400, "InvalidRequest")


async def test_create_session_by_handle_did_and_email(host: HostClient) -> None:
    created = await host.create_account("alice.test", password="pw-alice", email="alice@example.com")
    did = created.body["did"]
    for identifier in ("alice.test", "ALICE.TEST", did, "alice@example.com", "Alice@Example.com"):
        reply = await host.call(
            "com.atproto.server.createSession", body={"identifier": identifier, "password": "pw-alice"}
        )
        assert reply.status == 200, (identifier, reply.body)
        assert reply.body["did"] == did and reply.body["handle"] == "alice.test"
        assert reply.body["active"] is True and reply.body["email"] == "alice@example.com"
        assert "didDoc" not in reply.body


@pytest.mark.parametrize(("identifier", "password"), [("alice.test", "wrong"), ("nobody.test", "pw-alice")])
async def test_create_session_refused(host: HostClient, identifier: str, password: str) -> None:
    await host.create_account("alice.test", password="pw-alice")
    reply = await host.call(
        "com.atproto.server.createSession", body={"identifier": identifier, "password": password}
    )
    assert reply.status == 401
    assert reply.body == {"error": "AuthenticationRequired", "message": "Invalid identifier or password"}


async def test_resolve_handle(host: HostClient) -> None:
    did = (await host.create_account("alice.test")).body["did"]
    reply = await host.call("com.atproto.identity.resolveHandle", params={"handle": "Alice.Test"})
    assert reply.body == {"did": did}
    reply = await host.call("com.atproto.identity.resolveHandle", params={"handle": "nobody.test"})
    assert (reply.status, reply.error) == (400, "HandleNotFound")


def test_password_hash_round_trip() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$")
    assert stored != hash_password("s3cret")  # a salt per password
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret!", stored)
    assert not verify_password("s3cret", None)
    assert not verify_password("s3cret", "plain")
    assert not verify_password("s3cret", "scrypt$x$8$1$AA$AA")


def test_check_new_handle_normalizes() -> None:
    assert check_new_handle("Alice.TEST", (".test",)) == "alice.test"
    assert check_new_handle("bob.example.org", (".test", ".example.org")) == "bob.example.org"
