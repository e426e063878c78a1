"""PLC operations and identity resolution on a real host and its embedded PLC directory.

Every success path reads the DID document back from the directory; every
refusal leaves the directory and the host's event log as they were.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from host_support import HostClient

from atrepo.core.events import decode_frame
from atrepo.core.keys import PrivateKey
from atrepo.host.auth import APP_PASS_SCOPE
from atrepo.host.identity_api import PLC_TOKEN_PURPOSE, pending_plc_tokens
from atrepo.identity.plc.operations import Service, build_operation, build_tombstone
from atrepo.store import SQLiteStore

TOKEN_RE = re.compile(r"PLC operation token for (did:plc:[a-z2-7]{24}): ([A-Z2-7]{5}-[A-Z2-7]{5})")


async def _login(host: HostClient, handle: str) -> tuple[str, str]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def _plc(host: HostClient, path: str) -> Any:
    async with host.http.get(f"{host.running.plc_url}/{path}") as resp:
        assert resp.status == 200, path
        return await resp.json(content_type=None)


async def _plc_post(host: HostClient, did: str, op: dict[str, Any]) -> None:
    async with host.http.post(f"{host.running.plc_url}/{did}", json=op) as resp:
        assert resp.status == 200, await resp.text()


async def _request_token(host: HostClient, token: str, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atrepo.host.identity"):
        reply = await host.call(
            "com.atproto.identity.requestPlcOperationSignature", token=token, method="POST"
        )
    assert reply.status == 200, reply.body
    found = [
        m for r in caplog.records if r.levelno == logging.WARNING and (m := TOKEN_RE.search(r.getMessage()))
    ]
    assert len(found) == 1
    return found[0].group(2)


async def _current_op(host: HostClient, did: str) -> tuple[dict[str, Any], str]:
    """The DID's current data and the CID of its last operation, from the directory."""
    audit = await _plc(host, f"{did}/log/audit")
    data = await _plc(host, f"{did}/data")
    return data, audit[-1]["cid"]


def _op_from(host: HostClient, data: dict[str, Any], prev: str, **changes: Any) -> dict[str, Any]:
    fields = {
        "rotation_keys": data["rotationKeys"],
        "verification_methods": data["verificationMethods"],
        "also_known_as": data["alsoKnownAs"],
        "services": {k: Service(v["type"], v["endpoint"]) for k, v in data["services"].items()},
    }
    fields.update(changes)
    return build_operation(host.running.context.secrets.rotation_key, prev=prev, **fields)


async def test_recommended_credentials_match_the_directory(host: HostClient) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    reply = await host.call("com.atproto.identity.getRecommendedDidCredentials", token=token)
    assert reply.status == 200, reply.body
    account = ctx.store.get_account(did)
    assert account is not None
    assert reply.body == {
        "rotationKeys": [ctx.secrets.rotation_key.public_key.did_key()],
        "alsoKnownAs": ["at://alice.test"],
        "verificationMethods": {"atproto": ctx.signing_key(account).public_key.did_key()},
        "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": ctx.public_url}},
    }
    # what a fresh account's DID already says
    data = await _plc(host, f"{did}/data")
    for field in ("rotationKeys", "alsoKnownAs", "verificationMethods", "services"):
        assert data[field] == reply.body[field], field
    anonymous = await host.call("com.atproto.identity.getRecommendedDidCredentials")
    assert anonymous.status == 401


async def test_request_sign_submit_round_trip(host: HostClient, caplog: pytest.LogCaptureFixture) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    plc_token = await _request_token(host, token, caplog)
    pending = pending_plc_tokens(ctx.store, host.clock())
    assert [(t.did, t.purpose, t.token) for t in pending] == [(did, PLC_TOKEN_PURPOSE, plc_token)]

    extra_key = PrivateKey.generate("p256").public_key.did_key()
    host_key = ctx.secrets.rotation_key.public_key.did_key()
    sign = await host.call(
        "com.atproto.identity.signPlcOperation",
        body={"token": plc_token.lower(), "rotationKeys": [extra_key, host_key]},  # case-insensitive
        token=token,
    )
    assert sign.status == 200, sign.body
    op = sign.body["operation"]
    _, last_cid = await _current_op(host, did)
    assert op["prev"] == last_cid and op["rotationKeys"] == [extra_key, host_key]
    assert op["alsoKnownAs"] == ["at://alice.test"]
    # signing submits nothing
    assert len(await _plc(host, f"{did}/log/audit")) == 1
    # the token is used up
    again = await host.call("com.atproto.identity.signPlcOperation", body={"token": plc_token}, token=token)
    assert again.status == 400 and again.error == "InvalidToken"
    assert pending_plc_tokens(ctx.store, host.clock()) == []

    head = ctx.store.head_seq()
    submit = await host.call("com.atproto.identity.submitPlcOperation", body={"operation": op}, token=token)
    assert submit.status == 200, submit.body
    data = await _plc(host, f"{did}/data")
    assert data["rotationKeys"] == [extra_key, host_key]
    doc = await _plc(host, did)
    assert doc["id"] == did
    rows = ctx.store.read_events(head, 10)
    assert [(r.type, r.did) for r in rows] == [("#identity", did)]
    event = decode_frame(rows[0].frame)
    assert event.handle is None  # type: ignore[union-attr]

    # resolveDid serves the new document (the submit refreshed the host's cache)
    resolved = await host.call("com.atproto.identity.resolveDid", params={"did": did})
    assert resolved.status == 200 and resolved.body["didDoc"] == doc


async def test_sign_changes_every_field_and_reads_back(
    host: HostClient, caplog: pytest.LogCaptureFixture
) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    plc_token = await _request_token(host, token, caplog)
    new_key = PrivateKey.generate("k256").public_key.did_key()
    sign = await host.call(
        "com.atproto.identity.signPlcOperation",
        body={
            "token": plc_token,
            "alsoKnownAs": ["at://alice.test", "https://alice.example"],
            "verificationMethods": {"atproto": new_key},
            "services": {
                "atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://b.example"}
            },
        },
        token=token,
    )
    assert sign.status == 200, sign.body
    op = sign.body["operation"]
    # an account active here may not hand its key and endpoint away
    refused = await host.call("com.atproto.identity.submitPlcOperation", body={"operation": op}, token=token)
    assert refused.status == 400 and refused.body["message"] == "Incorrect endpoint on atproto_pds service"
    # once deactivated (moving out), it may
    await ctx.worker.run(_deactivate, did)
    moved = await host.call("com.atproto.identity.submitPlcOperation", body={"operation": op}, token=token)
    assert moved.status == 200, moved.body
    data = await _plc(host, f"{did}/data")
    assert data["verificationMethods"] == {"atproto": new_key}
    assert data["alsoKnownAs"] == ["at://alice.test", "https://alice.example"]
    assert data["services"]["atproto_pds"]["endpoint"] == "https://b.example"
    assert data["rotationKeys"] == [ctx.secrets.rotation_key.public_key.did_key()]


def _deactivate(store: SQLiteStore, did: str) -> None:
    with store.transaction(did) as tx:
        tx.set_status("deactivated")


async def test_token_refusals(host: HostClient, caplog: pytest.LogCaptureFixture) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    missing = await host.call("com.atproto.identity.signPlcOperation", body={}, token=token)
    assert missing.status == 400 and missing.error == "InvalidRequest"
    assert "token required" in missing.body["message"]
    none_yet = await host.call(
        "com.atproto.identity.signPlcOperation", body={"token": "AAAAA-BBBBB"}, token=token
    )
    assert none_yet.status == 400 and none_yet.error == "InvalidToken"

    plc_token = await _request_token(host, token, caplog)
    wrong = await host.call(
        "com.atproto.identity.signPlcOperation", body={"token": "AAAAA-BBBBB"}, token=token
    )
    assert wrong.status == 400 and wrong.error == "InvalidToken"
    # a second request replaces the first token
    newer = await _request_token(host, token, caplog)
    assert newer != plc_token
    stale = await host.call("com.atproto.identity.signPlcOperation", body={"token": plc_token}, token=token)
    assert stale.status == 400 and stale.error == "InvalidToken"

    host.clock.advance(15 * 60 + 1)
    expired = await host.call("com.atproto.identity.signPlcOperation", body={"token": newer}, token=token)
    assert expired.status == 400 and expired.error == "ExpiredToken"
    assert pending_plc_tokens(ctx.store, host.clock()) == []

    # an app-password session manages no identity
    app_token = ctx.tokens.access_token(did, scope=APP_PASS_SCOPE)
    for nsid, body in (
        ("com.atproto.identity.requestPlcOperationSignature", None),
        ("com.atproto.identity.signPlcOperation", {"token": newer}),
    ):
        reply = await host.call(nsid, body=body, token=app_token, method="POST")
        assert reply.status == 400 and reply.error == "InvalidToken", (nsid, reply.body)
    anonymous = await host.call("com.atproto.identity.requestPlcOperationSignature", method="POST")
    assert anonymous.status == 401
    assert len(await _plc(host, f"{did}/log/audit")) == 1


async def test_submit_refusals(host: HostClient) -> None:
    did, token = await _login(host, "alice.test")
    ctx = host.running.context
    data, prev = await _current_op(host, did)
    other = PrivateKey.generate("k256").public_key.did_key()
    pds = data["services"]["atproto_pds"]
    cases = {
        "Rotation keys do not include server's rotation key": _op_from(
            host, data, prev, rotation_keys=[other]
        ),
        "Incorrect type on atproto_pds service": _op_from(
            host, data, prev, services={"atproto_pds": Service("SomethingElse", pds["endpoint"])}
        ),
        "Incorrect endpoint on atproto_pds service": _op_from(
            host, data, prev, services={"atproto_pds": Service(pds["type"], "https://elsewhere.example")}
        ),
        "Incorrect signing key": _op_from(host, data, prev, verification_methods={"atproto": other}),
        "Incorrect handle in alsoKnownAs": _op_from(host, data, prev, also_known_as=["at://bob.test"]),
        "Invalid operation": build_tombstone(ctx.secrets.rotation_key, prev),
    }
    head = ctx.store.head_seq()
    for message, op in cases.items():
        reply = await host.call(
            "com.atproto.identity.submitPlcOperation", body={"operation": op}, token=token
        )
        assert reply.status == 400 and reply.body["message"] == message, (message, reply.body)
    garbage = await host.call(
        "com.atproto.identity.submitPlcOperation", body={"operation": {"type": "nonsense"}}, token=token
    )
    assert garbage.status == 400 and garbage.body["message"] == "Invalid operation"
    unsigned = {k: v for k, v in _op_from(host, data, prev).items() if k != "sig"}
    nosig = await host.call(
        "com.atproto.identity.submitPlcOperation", body={"operation": unsigned}, token=token
    )
    assert nosig.status == 400 and nosig.body["message"] == "Invalid operation"
    # the directory's own refusal (a signature by a key that is not a rotation key)
    forged = build_operation(
        PrivateKey.generate("k256"),
        rotation_keys=data["rotationKeys"],
        verification_methods=data["verificationMethods"],
        also_known_as=data["alsoKnownAs"],
        services={k: Service(v["type"], v["endpoint"]) for k, v in data["services"].items()},
        prev=prev,
    )
    refused = await host.call(
        "com.atproto.identity.submitPlcOperation", body={"operation": forged}, token=token
    )
    assert refused.status == 400 and "PLC directory refused" in refused.body["message"]
    assert len(await _plc(host, f"{did}/log/audit")) == 1
    assert ctx.store.head_seq() == head  # no #identity for a refused operation

    # the same checks pass for an operation that keeps everything (a no-op update is accepted)
    ok = await host.call(
        "com.atproto.identity.submitPlcOperation", body={"operation": _op_from(host, data, prev)}, token=token
    )
    assert ok.status == 200, ok.body
    assert len(await _plc(host, f"{did}/log/audit")) == 2
    assert [r.type for r in ctx.store.read_events(head, 10)] == ["#identity"]


async def test_resolve_did_and_identity(host: HostClient) -> None:
    did, _ = await _login(host, "alice.test")
    doc = await _plc(host, did)
    resolved = await host.call("com.atproto.identity.resolveDid", params={"did": did})
    assert resolved.status == 200 and resolved.body == {"didDoc": doc}

    by_did = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": did})
    assert by_did.status == 200 and by_did.body == {"did": did, "handle": "alice.test", "didDoc": doc}
    by_handle = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": "Alice.Test"})
    assert by_handle.status == 200 and by_handle.body == by_did.body

    unknown_did = "did:plc:" + "a" * 24
    for nsid, params in (
        ("com.atproto.identity.resolveDid", {"did": unknown_did}),
        ("com.atproto.identity.resolveIdentity", {"identifier": unknown_did}),
    ):
        reply = await host.call(nsid, params=params)
        assert reply.status == 400 and reply.error == "DidNotFound", reply.body
    no_handle = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": "nobody.test"})
    assert no_handle.status == 400 and no_handle.error == "HandleNotFound"
    refresh_missing = await host.call(
        "com.atproto.identity.refreshIdentity", body={"identifier": "nobody.test"}
    )
    assert refresh_missing.status == 400 and refresh_missing.error == "HandleNotFound"


async def test_refresh_identity_and_deactivated_did(host: HostClient) -> None:
    did, _ = await _login(host, "alice.test")
    first = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": did})
    assert first.status == 200 and first.body["handle"] == "alice.test"
    # the DID changes behind the host's back (another holder of a rotation key)
    data, prev = await _current_op(host, did)
    await _plc_post(host, did, _op_from(host, data, prev, also_known_as=["at://elsewhere.test"]))
    cached = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": did})
    assert cached.body == first.body  # served from the cache
    refreshed = await host.call("com.atproto.identity.refreshIdentity", body={"identifier": did})
    assert refreshed.status == 200, refreshed.body
    # the document now claims a handle that does not point back to the DID
    assert refreshed.body["handle"] == "handle.invalid"
    assert refreshed.body["didDoc"]["alsoKnownAs"] == ["at://elsewhere.test"]
    # a handle whose DID no longer claims it back
    by_handle = await host.call("com.atproto.identity.resolveIdentity", params={"identifier": "alice.test"})
    assert by_handle.status == 200 and by_handle.body["handle"] == "handle.invalid"

    # tombstoned: DidDeactivated
    _, prev = await _current_op(host, did)
    await _plc_post(host, did, build_tombstone(host.running.context.secrets.rotation_key, prev))
    gone = await host.call("com.atproto.identity.refreshIdentity", body={"identifier": did})
    assert gone.status == 400 and gone.error == "DidDeactivated", gone.body
    head = host.running.context.store.head_seq()
    resolved = await host.call("com.atproto.identity.resolveDid", params={"did": did})
    assert resolved.status == 400 and resolved.error == "DidDeactivated"
    assert host.running.context.store.head_seq() == head  # resolution emits nothing
