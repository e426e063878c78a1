"""App passwords over HTTP: create, list, revoke, logging in with one, and where its sessions are refused."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from host_support import HostClient

from atrepo.core.syntax import parse_datetime
from atrepo.host.auth import ACCESS_LIFETIME_S

CREATE = "com.atproto.server.createAppPassword"
LIST = "com.atproto.server.listAppPasswords"
REVOKE = "com.atproto.server.revokeAppPassword"
LOGIN = "com.atproto.server.createSession"
GET_SESSION = "com.atproto.server.getSession"
REFRESH = "com.atproto.server.refreshSession"
SERVICE_AUTH = "com.atproto.server.getServiceAuth"

APP_PASSWORD = re.compile(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}")
PASSWORD = "main password"


def scope_of(token: str) -> str:
    part = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["scope"])


async def signup(host: HostClient, handle: str = "alice.test") -> dict[str, Any]:
    reply = await host.create_account(
        handle, password=PASSWORD, email=f"{handle.partition('.')[0]}@example.com"
    )
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def login(host: HostClient, password: str, identifier: str = "alice.test") -> dict[str, Any]:
    reply = await host.call(LOGIN, body={"identifier": identifier, "password": password})
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def new_app_password(host: HostClient, token: str, name: str, privileged: bool | None = None) -> str:
    body: dict[str, Any] = {"name": name}
    if privileged is not None:
        body["privileged"] = privileged
    reply = await host.call(CREATE, body=body, token=token)
    assert reply.status == 200, reply.body
    return str(reply.body["password"])


async def test_create_list_revoke(host: HostClient) -> None:
    session = await signup(host)
    token = session["accessJwt"]
    reply = await host.call(CREATE, body={"name": "phone"}, token=token)
    assert reply.status == 200, reply.body
    created = reply.body
    assert set(created) == {"name", "password", "createdAt", "privileged"}
    assert created["name"] == "phone" and created["privileged"] is False
    assert APP_PASSWORD.fullmatch(created["password"])
    parse_datetime(created["createdAt"])
    assert reply.headers["Cache-Control"] == "no-store"
    # stored hashed: the password itself is nowhere in the row
    rows = host.running.context.store.list_app_passwords(session["did"])
    assert [r.name for r in rows] == ["phone"]
    assert created["password"] not in rows[0].password_hash and rows[0].password_hash.startswith("scrypt$")

    other = await host.call(CREATE, body={"name": "bot", "privileged": True}, token=token)
    assert other.status == 200 and other.body["privileged"] is True
    assert other.body["password"] != created["password"]

    listed = await host.call(LIST, token=token)
    assert listed.status == 200
    assert listed.headers["Cache-Control"] == "private"
    assert sorted(listed.body["passwords"], key=lambda p: p["name"]) == [
        {"name": "bot", "createdAt": other.body["createdAt"], "privileged": True},
        {"name": "phone", "createdAt": created["createdAt"], "privileged": False},
    ]

    revoked = await host.call(REVOKE, body={"name": "phone"}, token=token)
    assert revoked.status == 200
    listed = await host.call(LIST, token=token)
    assert [p["name"] for p in listed.body["passwords"]] == ["bot"]
    # unknown names are not an error (as the reference)
    assert (await host.call(REVOKE, body={"name": "phone"}, token=token)).status == 200
    # the name is free again
    assert (await host.call(CREATE, body={"name": "phone"}, token=token)).status == 200


async def test_names(host: HostClient) -> None:
    session = await signup(host)
    token = session["accessJwt"]
    await new_app_password(host, token, "phone")
    dup = await host.call(CREATE, body={"name": "phone", "privileged": True}, token=token)
    assert (dup.status, dup.error) == (400, "InvalidRequest")
    assert "already exists" in dup.body["message"]
    for bad in ["", "   ", "x" * 101, "tab\there"]:
        reply = await host.call(CREATE, body={"name": bad}, token=token)
        assert (reply.status, reply.error) == (400, "InvalidRequest"), bad
    # names are per account: bob may use "phone" too
    bob = await signup(host, "bob.test")
    assert (await host.call(CREATE, body={"name": "phone"}, token=bob["accessJwt"])).status == 200
    listed = await host.call(LIST, token=token)
    assert [p["name"] for p in listed.body["passwords"]] == ["phone"]


async def test_login_with_an_app_password(host: HostClient) -> None:
    session = await signup(host)
    plain = await new_app_password(host, session["accessJwt"], "phone")
    privileged = await new_app_password(host, session["accessJwt"], "bot", privileged=True)

    app = await login(host, plain)
    assert scope_of(app["accessJwt"]) == "com.atproto.appPass"
    assert app["did"] == session["did"] and app["handle"] == "alice.test"
    priv = await login(host, privileged, identifier=session["did"])
    assert scope_of(priv["accessJwt"]) == "com.atproto.appPassPrivileged"
    full = await login(host, PASSWORD)
    assert scope_of(full["accessJwt"]) == "com.atproto.access"

    # the refresh token's row names the app password
    for s, name in ((app, "phone"), (priv, "bot"), (full, None)):
        jti = json.loads(base64.urlsafe_b64decode(s["refreshJwt"].split(".")[1] + "=="))["jti"]
        row = host.running.context.store.get_refresh_token(jti)
        assert row is not None and row.app_password == name

    # getSession answers an app-password session as any other
    mine = await host.call(GET_SESSION, token=app["accessJwt"])
    theirs = await host.call(GET_SESSION, token=full["accessJwt"])
    assert mine.status == 200 and mine.body == theirs.body

    # a wrong password of the same shape, another account's app password: refused alike
    for identifier, password in (("alice.test", "abcd-efgh-ijkl-mnop"), ("nobody.test", plain)):
        reply = await host.call(LOGIN, body={"identifier": identifier, "password": password})
        assert (reply.status, reply.error) == (401, "AuthenticationRequired")
        assert reply.body["message"] == "Invalid identifier or password"
    await signup(host, "bob.test")
    reply = await host.call(LOGIN, body={"identifier": "bob.test", "password": plain})
    assert (reply.status, reply.error) == (401, "AuthenticationRequired")


async def test_app_password_sessions_cannot_manage_the_account(host: HostClient) -> None:
    session = await signup(host)
    plain = await new_app_password(host, session["accessJwt"], "phone")
    privileged = await new_app_password(host, session["accessJwt"], "bot", privileged=True)
    for password in (plain, privileged):
        token = (await login(host, password))["accessJwt"]
        for nsid, body in ((CREATE, {"name": "more"}), (LIST, None), (REVOKE, {"name": "phone"})):
            reply = await host.call(nsid, body=body, token=token)
            assert (reply.status, reply.body) == (
                400,
                {"error": "InvalidToken", "message": "Bad token scope"},
            ), nsid
        # ordinary calls work
        assert (await host.call(GET_SESSION, token=token)).status == 200
    listed = await host.call(LIST, token=session["accessJwt"])
    assert sorted(p["name"] for p in listed.body["passwords"]) == ["bot", "phone"]


async def test_privileged_versus_not(host: HostClient) -> None:
    """Service tokens for privileged methods (``createAccount``, ``chat.bsky.*``): privileged scope only."""
    session = await signup(host)
    plain = (await login(host, await new_app_password(host, session["accessJwt"], "phone")))["accessJwt"]
    priv = (await login(host, await new_app_password(host, session["accessJwt"], "bot", True)))["accessJwt"]
    for lxm in ("com.atproto.server.createAccount", "chat.bsky.convo.listConvos"):
        params = {"aud": "did:web:other.example", "lxm": lxm}
        refused = await host.call(SERVICE_AUTH, params=params, token=plain)
        assert (refused.status, refused.error) == (400, "InvalidRequest"), refused.body
        assert "insufficient access" in refused.body["message"]
        for token in (priv, session["accessJwt"]):
            reply = await host.call(SERVICE_AUTH, params=params, token=token)
            assert reply.status == 200, reply.body
    # a method that is not privileged: any session
    params = {"aud": "did:web:other.example", "lxm": "app.bsky.feed.getTimeline"}
    assert (await host.call(SERVICE_AUTH, params=params, token=plain)).status == 200


async def test_refresh_keeps_the_scope(host: HostClient) -> None:
    session = await signup(host)
    plain = await new_app_password(host, session["accessJwt"], "phone")
    privileged = await new_app_password(host, session["accessJwt"], "bot", privileged=True)
    for password, scope in ((plain, "com.atproto.appPass"), (privileged, "com.atproto.appPassPrivileged")):
        current = await login(host, password)
        for _ in range(2):
            reply = await host.call(REFRESH, body=None, method="POST", token=current["refreshJwt"])
            assert reply.status == 200, reply.body
            assert scope_of(reply.body["accessJwt"]) == scope
            current = reply.body
        # still refused where an app password is
        reply = await host.call(LIST, token=current["accessJwt"])
        assert (reply.status, reply.error) == (400, "InvalidToken")
    full = await host.call(REFRESH, method="POST", token=session["refreshJwt"])
    assert scope_of(full.body["accessJwt"]) == "com.atproto.access"


async def test_revoke_ends_its_sessions(host: HostClient) -> None:
    session = await signup(host)
    full_token = session["accessJwt"]
    phone = await new_app_password(host, full_token, "phone")
    bot = await new_app_password(host, full_token, "bot")
    first = await login(host, phone)
    second = await login(host, phone)
    rotated = await host.call(REFRESH, method="POST", token=second["refreshJwt"])
    assert rotated.status == 200
    other = await login(host, bot)

    assert (await host.call(REVOKE, body={"name": "phone"}, token=full_token)).status == 200
    # every refresh token issued under it is gone: the originals, the rotated one
    for refresh in (first["refreshJwt"], second["refreshJwt"], rotated.body["refreshJwt"]):
        reply = await host.call(REFRESH, method="POST", token=refresh)
        assert (reply.status, reply.body) == (
            400,
            {"error": "ExpiredToken", "message": "Token has been revoked"},
        )
    # it no longer logs in
    reply = await host.call(LOGIN, body={"identifier": "alice.test", "password": phone})
    assert (reply.status, reply.error) == (401, "AuthenticationRequired")
    # other sessions are untouched: another app password's, the account password's
    assert (await host.call(REFRESH, method="POST", token=other["refreshJwt"])).status == 200
    assert (await host.call(REFRESH, method="POST", token=session["refreshJwt"])).status == 200
    # access tokens are stateless (as the reference): valid until their exp, at most two hours
    assert (await host.call(GET_SESSION, token=first["accessJwt"])).status == 200
    host.clock.advance(ACCESS_LIFETIME_S + 1)
    reply = await host.call(GET_SESSION, token=first["accessJwt"])
    assert (reply.status, reply.error) == (400, "ExpiredToken")


async def test_takendown_accounts_cannot_use_app_passwords(host: HostClient) -> None:
    session = await signup(host)
    phone = await new_app_password(host, session["accessJwt"], "phone")
    store = host.running.context.store
    await host.running.context.worker.run(_take_down, session["did"])
    reply = await host.call(LOGIN, body={"identifier": "alice.test", "password": phone})
    assert (reply.status, reply.error) == (401, "AuthenticationRequired")
    # the account password still gets the reference's AccountTakedown
    reply = await host.call(LOGIN, body={"identifier": "alice.test", "password": PASSWORD})
    assert (reply.status, reply.error) == (401, "AccountTakedown")
    # a full session from before the takedown cannot create one
    reply = await host.call(CREATE, body={"name": "late"}, token=session["accessJwt"])
    assert (reply.status, reply.error) == (401, "AccountTakedown")
    assert [p.name for p in store.list_app_passwords(session["did"])] == ["phone"]


def _take_down(store: Any, did: str) -> None:
    with store.transaction(did) as tx:
        tx.set_status("takendown")
