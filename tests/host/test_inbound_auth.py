"""Inbound service auth over HTTP: a tiny route guarded by the hook, issuers on the host's PLC directory.

The issuer is a real account of the host under test (its DID in the embedded
directory, its tokens minted by ``getServiceAuth``); the route is served by
its own router on another port with its own :class:`InboundAuth`, so its DID
cache is only refreshed by the hook itself. A key rotation in the directory
between two calls proves the refresh-once path.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from host_support import HostClient, Reply

from atrepo.core.keys import PrivateKey
from atrepo.core.service_jwt import create_service_jwt
from atrepo.host.inbound_auth import InboundAuth
from atrepo.identity.plc.operations import Service, build_operation
from atrepo.xrpc import XrpcContext, XrpcRouter

#: The method the test route answers, and the ``lxm`` its hook requires.
LXM = "com.atproto.server.describeServer"


@dataclass
class Guarded:
    """The tiny route: its base URL and the hook's owner (to read its refresh count)."""

    url: str
    inbound: InboundAuth
    host: HostClient

    async def call(self, token: str | None, *, scheme: str = "Bearer") -> Reply:
        headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
        async with self.host.http.get(f"{self.url}/xrpc/{LXM}", headers=headers) as resp:
            return Reply(resp.status, await resp.json(content_type=None), dict(resp.headers))


@pytest.fixture
async def guarded(host: HostClient) -> AsyncIterator[Guarded]:
    inbound = InboundAuth(host.running.context)
    router = XrpcRouter()

    @router.query(LXM, auth=inbound.verify_service_auth(LXM))
    async def answer(ctx: XrpcContext) -> dict[str, Any]:
        return {"iss": ctx.auth}

    app = web.Application()
    router.setup(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port: int = runner.addresses[0][1]
        yield Guarded(f"http://127.0.0.1:{port}", inbound, host)
    finally:
        await runner.cleanup()
        await inbound.close()


async def _account(host: HostClient, handle: str) -> tuple[str, str]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


async def _service_token(host: HostClient, access: str, *, aud: str, lxm: str = LXM) -> str:
    reply = await host.call(
        "com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm}, token=access
    )
    assert reply.status == 200, reply.body
    token: str = reply.body["token"]
    return token


def _mint(key: PrivateKey, host: HostClient, iss: str, **claims: Any) -> str:
    fields: dict[str, Any] = {
        "iss": iss,
        "aud": host.running.context.service_did,
        "iat": host.clock() // 1000,
        "jti": secrets.token_hex(8),
        "lxm": LXM,
    }
    fields.update(claims)
    return create_service_jwt(key, **fields)


async def _rotate_signing_key(host: HostClient, did: str, new_key: PrivateKey) -> None:
    """Point the DID's ``#atproto`` key at ``new_key`` in the directory (as another host would)."""
    plc = host.running.plc_url
    async with host.http.get(f"{plc}/{did}/log/audit") as resp:
        prev = (await resp.json(content_type=None))[-1]["cid"]
    async with host.http.get(f"{plc}/{did}/data") as resp:
        data = await resp.json(content_type=None)
    op = build_operation(
        host.running.context.secrets.rotation_key,
        rotation_keys=data["rotationKeys"],
        verification_methods={"atproto": new_key.public_key.did_key()},
        also_known_as=data["alsoKnownAs"],
        services={k: Service(v["type"], v["endpoint"]) for k, v in data["services"].items()},
        prev=prev,
    )
    async with host.http.post(f"{plc}/{did}", json=op) as resp:
        assert resp.status == 200, await resp.text()


async def test_accepts_tokens_and_refreshes_once_after_a_key_rotation(guarded: Guarded) -> None:
    host = guarded.host
    did, access = await _account(host, "alice.test")
    service_did = host.running.context.service_did

    token = await _service_token(host, access, aud=service_did)
    ok = await guarded.call(token)
    assert ok.status == 200 and ok.body == {"iss": did}
    # the did#service form of the audience names this host too
    ref = await guarded.call(await _service_token(host, access, aud=f"{service_did}#atproto_pds"))
    assert ref.status == 200 and ref.body == {"iss": did}
    assert guarded.inbound.refreshes == 0

    # the account's key rotates in the directory; the hook's cache still names the old one
    new_key = PrivateKey.generate("p256")
    await _rotate_signing_key(host, did, new_key)
    rotated = await guarded.call(_mint(new_key, host, did))
    assert rotated.status == 200 and rotated.body == {"iss": did}
    assert guarded.inbound.refreshes == 1
    # now cached: a second token with the new key needs no refresh
    assert (await guarded.call(_mint(new_key, host, did))).status == 200
    assert guarded.inbound.refreshes == 1

    # the old key no longer speaks for the DID, even after refreshing once more
    old = await guarded.call(token)
    assert old.status == 401 and old.error == "BadJwtSignature", old.body
    assert old.body["message"] == "jwt signature does not match jwt issuer"
    assert guarded.inbound.refreshes == 2


async def test_refusals_over_http(guarded: Guarded) -> None:
    host = guarded.host
    did, access = await _account(host, "alice.test")
    ctx = host.running.context
    key = ctx.signing_key(ctx.store.get_account(did))  # type: ignore[arg-type]

    missing = await guarded.call(None)
    assert missing.status == 401 and missing.error == "MissingJwt"
    basic = await guarded.call(base64.b64encode(b"admin:pw").decode(), scheme="Basic")
    assert basic.status == 401 and basic.error == "MissingJwt"

    wrong_aud = await guarded.call(await _service_token(host, access, aud="did:web:elsewhere.example"))
    assert wrong_aud.status == 401 and wrong_aud.error == "BadJwtAudience"
    wrong_lxm = await guarded.call(
        await _service_token(host, access, aud=ctx.service_did, lxm="app.bsky.feed.getTimeline")
    )
    assert wrong_lxm.status == 401 and wrong_lxm.error == "BadJwtLexiconMethod"
    no_lxm = await guarded.call(_mint(key, host, did, lxm=None))
    assert no_lxm.status == 401 and no_lxm.error == "BadJwtLexiconMethod"

    fresh = await _service_token(host, access, aud=ctx.service_did)
    host.clock.advance(61)
    expired = await guarded.call(fresh)
    assert expired.status == 401 and expired.error == "JwtExpired"

    stranger = PrivateKey.generate("k256")
    forged = await guarded.call(_mint(stranger, host, did))
    assert forged.status == 401 and forged.error == "BadJwtSignature"

    # high-S: the same signature with s replaced by n - s
    good = _mint(key, host, did)
    head, body, sig = good.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    flipped = raw[:32] + (key.order - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    high_s = f"{head}.{body}.{base64.urlsafe_b64encode(flipped).decode().rstrip('=')}"
    assert (await guarded.call(good)).status == 200
    malleated = await guarded.call(high_s)
    assert malleated.status == 401 and malleated.error == "BadJwtSignature"

    unknown = await guarded.call(_mint(stranger, host, "did:plc:" + "a" * 24))
    assert unknown.status == 401 and unknown.error == "AuthenticationRequired"
    assert unknown.body["message"] == "could not resolve iss did"

    garbage = await guarded.call("not-a-jwt")
    assert garbage.status == 401 and garbage.error == "BadJwt"
    # a session token of the host is not a service token
    session = await guarded.call(access)
    assert session.status == 401 and session.error == "BadJwtType"
