"""Session tokens over HTTP: getSession, refreshSession rotation and reuse, deleteSession, token errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from host_support import HostClient

from atrepo.host.auth import ACCESS_LIFETIME_S, REFRESH_GRACE_MS

GET_SESSION = "com.atproto.server.getSession"
REFRESH = "com.atproto.server.refreshSession"
DELETE = "com.atproto.server.deleteSession"


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def header_of(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


async def login(host: HostClient) -> dict[str, Any]:
    reply = await host.create_account("alice.test", password="pw", email="alice@example.com")
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def test_token_shapes(host: HostClient) -> None:
    session = await login(host)
    access, refresh = session["accessJwt"], session["refreshJwt"]
    assert header_of(access) == {"alg": "HS256", "typ": "at+jwt"}
    assert header_of(refresh) == {"alg": "HS256", "typ": "refresh+jwt"}
    a = claims_of(access)
    assert a["scope"] == "com.atproto.access" and a["sub"] == session["did"]
    assert a["aud"] == "did:web:127.0.0.1"
    assert isinstance(a["iat"], int) and isinstance(a["exp"], int)
    assert a["exp"] - a["iat"] == ACCESS_LIFETIME_S
    r = claims_of(refresh)
    assert r["scope"] == "com.atproto.refresh" and r["sub"] == session["did"]
    row = host.running.context.store.get_refresh_token(r["jti"])
    assert row is not None and row.did == session["did"] and row.next_id is None
    assert r["exp"] == row.expires_ms // 1000


async def test_get_session(host: HostClient) -> None:
    session = await login(host)
    reply = await host.call(GET_SESSION, token=session["accessJwt"])
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "private"
    assert reply.body == {
        "did": session["did"],
        "handle": "alice.test",
        "email": "alice@example.com",
        "emailConfirmed": False,
        "active": True,
    }


async def test_missing_garbage_and_wrong_tokens(host: HostClient) -> None:
    session = await login(host)
    reply = await host.call(GET_SESSION)
    assert (reply.status, reply.body) == (401, {"error": "AuthMissing", "message": "Authentication Required"})
    reply = await host.call(GET_SESSION, token="garbage")
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidToken", "message": "Token could not be verified"},
    )
    reply = await host.call(GET_SESSION, headers={"Authorization": "Basic YWRtaW46eA=="})
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidToken", "message": "Unexpected authorization type"},
    )
    reply = await host.call(GET_SESSION, headers={"Authorization": "Bearer"})
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidToken", "message": "Malformed authorization header"},
    )
    reply = await host.call(GET_SESSION, headers={"Authorization": "Token abc"})
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidToken", "message": "Unsupported authorization type: Token"},
    )
    # The scheme is compared without case.
    assert (
        await host.call(GET_SESSION, headers={"Authorization": "bearer " + session["accessJwt"]})
    ).status == 200
    # Refresh routes treat another scheme as no credentials at all (as the reference).
    reply = await host.call(REFRESH, headers={"Authorization": "Basic YWRtaW46eA=="}, method="POST")
    assert (reply.status, reply.error) == (401, "AuthMissing")
    # A refresh token is not an access token, nor the other way round.
    reply = await host.call(GET_SESSION, token=session["refreshJwt"])
    assert (reply.status, reply.body) == (400, {"error": "InvalidToken", "message": "Invalid token type"})
    reply = await host.call(REFRESH, token=session["accessJwt"], method="POST")
    assert (reply.status, reply.error) == (400, "InvalidToken")
    # Signed with another secret, or for another audience.
    claims = claims_of(session["accessJwt"])
    forged = jwt.encode(claims, "not-the-secret-" * 4, algorithm="HS256", headers={"typ": "at+jwt"})
    reply = await host.call(GET_SESSION, token=forged)
    assert (reply.status, reply.error) == (400, "InvalidToken")
    secret = host.running.context.secrets.jwt_secret
    elsewhere = jwt.encode({**claims, "aud": "did:web:elsewhere.example"}, secret, headers={"typ": "at+jwt"})
    reply = await host.call(GET_SESSION, token=elsewhere)
    assert (reply.status, reply.error) == (400, "InvalidToken")
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"typ": "at+jwt"})
    reply = await host.call(GET_SESSION, token=unsigned)
    assert (reply.status, reply.error) == (400, "InvalidToken")
    # Right typ and signature, wrong scope; a service-auth style lxm claim; a sub that is no DID.
    for bad, message in (
        ({**claims, "scope": "com.atproto.refresh"}, "Bad token scope"),
        ({**claims, "lxm": "com.atproto.server.getSession"}, "Malformed token"),
        ({**claims, "sub": "alice"}, "Malformed token"),
    ):
        token = jwt.encode(bad, secret, algorithm="HS256", headers={"typ": "at+jwt"})
        reply = await host.call(GET_SESSION, token=token)
        assert (reply.status, reply.body) == (400, {"error": "InvalidToken", "message": message})
    # A token without typ (the reference's entryway issues those) is accepted.
    no_typ = jwt.encode(claims, secret, algorithm="HS256", headers={"typ": None})
    assert "typ" not in header_of(no_typ)
    assert (await host.call(GET_SESSION, token=no_typ)).status == 200


async def test_expired_access_token(host: HostClient) -> None:
    session = await login(host)
    claims = claims_of(session["accessJwt"])
    secret = host.running.context.secrets.jwt_secret
    past = {**claims, "iat": claims["iat"] - 10_000, "exp": claims["iat"] - 1}
    expired = jwt.encode(past, secret, algorithm="HS256", headers={"typ": "at+jwt"})
    reply = await host.call(GET_SESSION, token=expired)
    assert (reply.status, reply.body) == (400, {"error": "ExpiredToken", "message": "Token has expired"})
    # The host's own token expires with its clock too.
    host.clock.advance(ACCESS_LIFETIME_S + 1)
    reply = await host.call(GET_SESSION, token=session["accessJwt"])
    assert (reply.status, reply.error) == (400, "ExpiredToken")


async def test_refresh_rotation_and_reuse(host: HostClient) -> None:
    session = await login(host)
    first = session["refreshJwt"]
    reply = await host.call(REFRESH, token=first, method="POST")
    assert reply.status == 200, reply.body
    second = reply.body["refreshJwt"]
    assert reply.body["did"] == session["did"] and reply.body["handle"] == "alice.test"
    assert claims_of(second)["jti"] != claims_of(first)["jti"]
    assert (await host.call(GET_SESSION, token=reply.body["accessJwt"])).status == 200

    # A retry with the old token within the grace period gets the same successor.
    host.clock.advance(60)
    again = await host.call(REFRESH, token=first, method="POST")
    assert again.status == 200
    assert claims_of(again.body["refreshJwt"])["jti"] == claims_of(second)["jti"]

    # The successor rotates normally.
    third = await host.call(REFRESH, token=second, method="POST")
    assert third.status == 200
    third_token = third.body["refreshJwt"]

    # The first token replayed after its grace period: refused, and the whole chain revoked.
    host.clock.advance(REFRESH_GRACE_MS / 1000 + 1)
    stale = await host.call(REFRESH, token=first, method="POST")
    assert (stale.status, stale.body) == (400, {"error": "ExpiredToken", "message": "Token has been revoked"})
    latest = await host.call(REFRESH, token=third_token, method="POST")
    assert (latest.status, latest.error) == (400, "ExpiredToken")
    store = host.running.context.store
    for token in (first, second, third_token):
        assert store.get_refresh_token(claims_of(token)["jti"]) is None


async def test_delete_session(host: HostClient) -> None:
    session = await login(host)
    reply = await host.call(DELETE, token=session["refreshJwt"], method="POST")
    assert reply.status == 200
    reply = await host.call(REFRESH, token=session["refreshJwt"], method="POST")
    assert (reply.status, reply.body) == (400, {"error": "ExpiredToken", "message": "Token has been revoked"})
    # Access tokens are stateless: still valid until exp.
    assert (await host.call(GET_SESSION, token=session["accessJwt"])).status == 200
    # deleteSession needs a refresh token.
    reply = await host.call(DELETE, token=session["accessJwt"], method="POST")
    assert (reply.status, reply.error) == (400, "InvalidToken")
    reply = await host.call(DELETE, method="POST")
    assert (reply.status, reply.error) == (401, "AuthMissing")


async def test_expired_refresh_token(host: HostClient) -> None:
    session = await login(host)
    host.clock.advance(91 * 24 * 3600)
    reply = await host.call(REFRESH, token=session["refreshJwt"], method="POST")
    assert (reply.status, reply.body) == (400, {"error": "ExpiredToken", "message": "Token has expired"})
    # deleteSession accepts an expired refresh token (as the reference).
    assert (await host.call(DELETE, token=session["refreshJwt"], method="POST")).status == 200


async def test_session_of_another_host_secret_is_refused(host: HostClient) -> None:
    token = jwt.encode(
        {
            "scope": "com.atproto.access",
            "sub": "did:plc:x",
            "aud": "did:web:127.0.0.1",
            "iat": 1,
            "exp": 2**40,
        },
        "another-hosts-secret-" * 3,
        headers={"typ": "at+jwt"},
    )
    reply = await host.call(GET_SESSION, token=token)
    assert (reply.status, reply.error) == (400, "InvalidToken")


async def test_prune_drops_expired_refresh_tokens_only(host: HostClient) -> None:
    session = await login(host)
    ctx = host.running.context
    assert await ctx.prune() == (0, 0, 0)
    host.clock.advance(91 * 24 * 3600)
    assert await ctx.prune() == (0, 1, 0)  # events are within the 72 h window of the wall clock
    assert ctx.store.get_refresh_token(claims_of(session["refreshJwt"])["jti"]) is None
    assert ctx.store.head_seq() == 4
