"""The relay's admin API (``/admin/*``): credentials, host and domain bans, limits, takedowns, listings.

(Named ``test_relay_admin.py``, not ``test_admin.py``: ``tests/host/test_admin.py`` exists and
the test directories are not packages, so two files of one name would collide.)
"""

from __future__ import annotations

import asyncio
import os
import stat

from relay_testenv import ADMIN_PASSWORD, RelayEnv, RelayEnvFactory, basic_auth, request

from atrepo.core.events import AccountEvent
from atrepo.firehose.subscriber import Received, Subscriber
from atrepo.xrpc.basic_auth import check_basic


def host_key(env: RelayEnv, index: int = 0) -> str:
    link = env.relay.context.hosts.by_name(env.hosts[index].url.split("://", 1)[1])
    assert link is not None
    return link.key


def test_check_basic() -> None:
    good = basic_auth("pw")["Authorization"]
    assert check_basic(good, "pw")
    assert check_basic(good.replace("Basic", "basic"), "pw")
    for header in (
        None,
        "",
        "Bearer x",
        "Basic",
        "Basic !!!",
        basic_auth("pw", "root")["Authorization"],
        basic_auth("pw2")["Authorization"],
        "Basic " + "YWRtaW4=",
    ):  # "admin" without a colon
        assert not check_basic(header, "pw"), header
    assert not check_basic(good, "")  # no password: no admin


async def test_credentials_are_required(relay_env: RelayEnv) -> None:
    env = relay_env
    for headers in (
        {},
        basic_auth("wrong"),
        basic_auth(ADMIN_PASSWORD, "root"),
        {"Authorization": "Basic %%%"},
    ):
        reply = await request(env.http, "GET", f"{env.url}/admin/hosts", headers=headers)
        assert reply.status == 401, headers
        assert reply.body == {"error": "AuthenticationRequired", "message": "Authentication Required"}
        assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")
    reply = await request(env.http, "POST", f"{env.url}/admin/hosts/ban", body={"hostname": host_key(env)})
    assert reply.status == 401
    assert env.relay.context.hosts.by_name(host_key(env)).status == "active"  # type: ignore[union-attr]
    reply = await env.admin("GET", "/admin/hosts")
    assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"


async def test_a_generated_password_is_kept_in_the_data_directory(relay_env_factory: RelayEnvFactory) -> None:
    env = await relay_env_factory(admin_password=None)
    path = env.config.data_dir / "admin-password"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 24
    assert (await env.admin("GET", "/admin/hosts", password=password)).status == 200
    assert (await env.admin("GET", "/admin/hosts", password="relay-admin-secret")).status == 401
    await env.restart_relay()  # the same password after a restart
    assert (await env.admin("GET", "/admin/hosts", password=password)).status == 200


async def test_ban_and_unban_a_host(relay_env: RelayEnv) -> None:
    env = relay_env
    key = host_key(env)
    link = env.relay.context.hosts.by_name(key)
    assert link is not None
    await env.wait_for(lambda: _true(link.to_json()["connected"]), what="the relay connected")

    reply = await env.admin("POST", "/admin/hosts/ban", {"hostname": key})
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "banned" and reply.body["connected"] is False
    assert reply.body["lastError"] == "banned by the operator"
    status = await env.call("com.atproto.sync.getHostStatus", params={"hostname": key})
    assert status.body["status"] == "banned"
    doc = await env.status()
    assert doc["hosts"]["list"][0]["status"] == "banned" and doc["hosts"]["byStatus"] == {"banned": 1}
    reply = await env.admin("POST", "/admin/hosts/unban", {"hostname": env.hosts[0].url})  # a URL works too
    assert reply.status == 200 and reply.body["status"] == "active", reply.body
    await env.wait_for(lambda: _true(link.to_json()["connected"]), what="the relay reconnected")
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 1)
    await env.wait_relayed(alice)


async def _true(value: object) -> bool:
    return bool(value)


async def test_bad_requests_and_unknown_hosts(relay_env: RelayEnv) -> None:
    env = relay_env
    for path in ("/admin/hosts/ban", "/admin/hosts/unban", "/admin/hosts/limits"):
        reply = await env.admin("POST", path, {"hostname": "nowhere.example.com", "accountLimit": 5})
        assert reply.status == 404 and reply.error == "HostNotFound", (path, reply.body)
        for body in ({}, {"hostname": 7}, {"hostname": ""}, ["x"]):
            reply = await env.admin("POST", path, body)
            assert reply.status == 400 and reply.error == "InvalidRequest", (path, body, reply.body)
    reply = await request(
        env.http, "POST", f"{env.url}/admin/hosts/ban", headers={**basic_auth(ADMIN_PASSWORD)}, body=None
    )
    assert reply.status == 400 and reply.error == "InvalidRequest"
    for body in ({"did": "did:plc:nobodyhere"},):
        reply = await env.admin("POST", "/admin/repo/takedown", body)
        assert reply.status == 404 and reply.error == "RepoNotFound", reply.body
    reply = await env.admin("POST", "/admin/repo/takedown", {"did": "alice"})
    assert reply.status == 400
    key = host_key(env)
    for body in (
        {"hostname": key},
        {"hostname": key, "accountLimit": -1},
        {"hostname": key, "accountLimit": "5"},
        {"hostname": key, "perSecond": 0},
        {"hostname": key, "perDay": True},
    ):
        reply = await env.admin("POST", "/admin/hosts/limits", body)
        assert reply.status == 400 and reply.error == "InvalidRequest", (body, reply.body)
    reply = await env.admin("POST", "/admin/domains/ban", {"domain": "https://x.example.com/"})
    assert reply.status == 400


async def test_domain_ban_bans_its_hosts(relay_env: RelayEnv) -> None:
    env = relay_env
    key = host_key(env)
    reply = await env.admin("POST", "/admin/domains/ban", {"domain": "127.0.0.1"})
    assert reply.status == 200 and reply.body == {"domain": "127.0.0.1", "bannedHosts": [key]}, reply.body
    assert (await env.admin("GET", "/admin/domains")).body == {"domains": ["127.0.0.1"]}
    assert env.relay.context.hosts.by_name(key).status == "banned"  # type: ignore[union-attr]
    reply = await env.admin("POST", "/admin/hosts/unban", {"hostname": key})
    assert reply.status == 400 and "unban the domain first" in reply.body["message"]
    # a subdomain ban, and a second ban of the same domain, are harmless
    assert (await env.admin("POST", "/admin/domains/ban", {"domain": "Bad.Example.COM."})).status == 200
    assert (await env.admin("GET", "/admin/domains")).body == {"domains": ["127.0.0.1", "bad.example.com"]}

    reply = await env.admin("POST", "/admin/domains/unban", {"domain": "127.0.0.1"})
    assert reply.body == {"domain": "127.0.0.1", "removed": True}
    assert (await env.admin("POST", "/admin/domains/unban", {"domain": "127.0.0.1"})).body["removed"] is False
    assert env.relay.context.hosts.by_name(key).status == "banned"  # type: ignore[union-attr]
    reply = await env.admin("POST", "/admin/hosts/unban", {"hostname": key})
    assert reply.status == 200 and reply.body["status"] == "active"


async def test_limits_and_backfill(relay_env: RelayEnv) -> None:
    env = relay_env
    key = host_key(env)
    reply = await env.admin(
        "POST", "/admin/hosts/limits", {"hostname": key, "accountLimit": 1, "perSecond": 500}
    )
    assert reply.status == 200, reply.body
    assert reply.body["accountLimit"] == 1 and reply.body["perSecond"] == 500 and reply.body["perDay"] is None
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 1)
    await env.wait_relayed(alice)
    bob = await env.create_account("bob.test")
    await env.create_records(bob, 1)

    async def throttled() -> bool:
        reply = await env.call("com.atproto.sync.getRepoStatus", params={"did": bob.did})
        return reply.status == 200 and reply.body.get("status") == "throttled"

    await env.wait_for(throttled, what="bob kept as throttled")
    assert any(f.kind == "account-limit" and f.did == bob.did for f in env.relay.context.ingest.faults)

    reply = await env.admin(
        "POST", "/admin/hosts/limits", {"hostname": key, "accountLimit": 10, "perSecond": None}
    )
    assert reply.status == 200 and reply.body["accountLimit"] == 10 and reply.body["perSecond"] is None
    await env.wait_relayed(bob)  # backfilled: fetched again, restated, now relayed
    listed = (await env.admin("GET", "/admin/hosts")).body["hosts"]
    assert [(h["hostname"], h["accountLimit"], h["accounts"]) for h in listed] == [(key, 10, 2)]
    assert listed[0]["configured"] is True and listed[0]["url"] == env.hosts[0].url


def _takedowns(events: list[AccountEvent]) -> list[AccountEvent]:
    return [e for e in events if e.status == "takendown"]


def _reversals(events: list[AccountEvent]) -> list[AccountEvent]:
    """The ``#account`` events that came after the (first) takedown."""
    for index, event in enumerate(events):
        if event.status == "takendown":
            return [e for e in events[index + 1 :] if e.active]
    return []


async def test_takedown_and_reversal(relay_env: RelayEnv) -> None:
    env = relay_env
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 2)
    await env.wait_relayed(alice)
    events: list[AccountEvent] = []

    async def handle(received: Received) -> None:
        if isinstance(received.frame, AccountEvent):
            events.append(received.frame)

    subscriber = Subscriber(env.url, handle)  # live only
    task = asyncio.get_running_loop().create_task(subscriber.run())
    try:
        await env.wait_for(
            lambda: _true(env.relay.context.fanout.subscribers), what="the subscriber connected"
        )
        reply = await env.admin("POST", "/admin/repo/takedown", {"did": alice.did})
        assert reply.status == 200 and reply.body == {
            "did": alice.did,
            "status": "takendown",
            "active": False,
        }
        status = await env.call("com.atproto.sync.getRepoStatus", params={"did": alice.did})
        assert status.body == {"did": alice.did, "active": False, "status": "takendown"}
        latest = await env.call("com.atproto.sync.getLatestCommit", params={"did": alice.did})
        assert latest.status == 400 and latest.error == "RepoTakendown"
        # (#account events of alice's creation may still be on their way: look for the takedown's)
        await env.wait_for(lambda: _true(_takedowns(events)), what="the #account event")
        first = _takedowns(events)[0]
        assert (first.did, first.active, first.status) == (alice.did, False, "takendown")
        # a second takedown changes nothing and says nothing
        assert (await env.admin("POST", "/admin/repo/takedown", {"did": alice.did})).body[
            "status"
        ] == "takendown"
        await env.create_records(alice, 1)  # not relayed while taken down

        reply = await env.admin("POST", "/admin/repo/reverse-takedown", {"did": alice.did})
        assert reply.status == 200 and reply.body == {"did": alice.did, "status": "active", "active": True}
        await env.wait_for(lambda: _true(_reversals(events)), what="the second #account event")
        assert len(_takedowns(events)) == 1
        assert [(e.did, e.status) for e in _reversals(events)] == [(alice.did, None)]
        await env.create_records(alice, 1)
        await env.wait_relayed(alice, timeout=30)  # the relay catches up (a resync restates the gap)
    finally:
        subscriber.stop()
        await task


async def test_consumers(relay_env: RelayEnv) -> None:
    env = relay_env
    reply = await env.admin("GET", "/admin/consumers")
    assert reply.status == 200 and reply.body["count"] == 0 and reply.body["consumers"] == []

    async def ignore(received: Received) -> None:
        pass

    subscriber = Subscriber(env.url, ignore, cursor=0)
    task = asyncio.get_running_loop().create_task(subscriber.run())
    try:

        async def listed() -> bool:
            body = (await env.admin("GET", "/admin/consumers")).body
            return body["count"] == 1 and body["consumers"][0]["live"] is True

        await env.wait_for(listed, what="the consumer listed")
        (row,) = (await env.admin("GET", "/admin/consumers")).body["consumers"]
        assert set(row) == {"lastSeq", "behind", "live", "buffered", "maxQueue"}
    finally:
        subscriber.stop()
        await task
