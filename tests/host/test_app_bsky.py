"""The host's own ``app.bsky`` answers over raw HTTP: errors and edges the SDK test does not reach."""

from __future__ import annotations

from typing import Any

import pytest
from host_support import HostClient

from atrepo.store import AccountStatus, SQLiteStore

PROFILE = "app.bsky.actor.getProfile"
GET_PREFS = "app.bsky.actor.getPreferences"
PUT_PREFS = "app.bsky.actor.putPreferences"
ADULT = {"$type": "app.bsky.actor.defs#adultContentPref", "enabled": True}


async def account(host: HostClient, handle: str) -> dict[str, Any]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return dict(reply.body)


def set_status(store: SQLiteStore, did: str, status: AccountStatus) -> None:
    with store.transaction(did) as tx:
        tx.set_status(status)


async def test_profile_from_the_record(host: HostClient) -> None:
    alice = await account(host, "alice.test")
    reply = await host.call(PROFILE, params={"actor": "ALICE.test"})
    assert (reply.status, reply.body) == (200, {"did": alice["did"], "handle": "alice.test"})
    record = {
        "$type": "app.bsky.actor.profile",
        "displayName": "Alice",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "!no-unauthenticated"}]},
    }
    put = await host.call(
        "com.atproto.repo.putRecord",
        body={"repo": alice["did"], "collection": "app.bsky.actor.profile", "rkey": "self", "record": record},
        token=alice["accessJwt"],
    )
    assert put.status == 200, put.body
    reply = await host.call(PROFILE, params={"actor": alice["did"]})
    assert reply.status == 200, reply.body
    uri = f"at://{alice['did']}/app.bsky.actor.profile/self"
    assert reply.body == {
        "did": alice["did"],
        "handle": "alice.test",
        "displayName": "Alice",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "labels": [
            {
                "src": alice["did"],
                "uri": uri,
                "cid": put.body["cid"],
                "val": "!no-unauthenticated",
                "cts": "2024-05-01T12:00:00.000Z",
            }
        ],
    }


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        ("takendown", "AccountTakedown", "Account has been suspended"),
        ("suspended", "AccountTakedown", "Account has been suspended"),
        ("deactivated", "AccountDeactivated", "Account is deactivated"),
        ("deleted", "InvalidRequest", "Profile not found"),
    ],
)
async def test_profile_of_an_unavailable_account(
    host: HostClient, status: AccountStatus, error: str, message: str
) -> None:
    alice = await account(host, "alice.test")
    await host.running.context.worker.run(set_status, alice["did"], status)
    reply = await host.call(PROFILE, params={"actor": "alice.test"})
    assert (reply.status, reply.body) == (400, {"error": error, "message": message})


async def test_profile_errors(host: HostClient) -> None:
    reply = await host.call(PROFILE, params={"actor": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"})
    assert (reply.status, reply.body) == (400, {"error": "InvalidRequest", "message": "Profile not found"})
    reply = await host.call(PROFILE, params={"actor": "not a handle"})
    assert (reply.status, reply.error) == (400, "InvalidRequest")
    assert (await host.call(PROFILE)).status == 400


async def test_preferences_need_a_session_and_stay_per_account(host: HostClient) -> None:
    alice = await account(host, "alice.test")
    bob = await account(host, "bob.test")
    assert (await host.call(GET_PREFS)).error == "AuthMissing"
    assert (await host.call(PUT_PREFS, body={"preferences": []})).error == "AuthMissing"
    reply = await host.call(PUT_PREFS, body={"preferences": [ADULT]}, token=alice["accessJwt"])
    assert (reply.status, reply.body) == (200, None)
    reply = await host.call(GET_PREFS, token=alice["accessJwt"])
    assert (reply.status, reply.body) == (200, {"preferences": [ADULT]})
    assert (await host.call(GET_PREFS, token=bob["accessJwt"])).body == {"preferences": []}
    # a put replaces the whole set
    feed = {"$type": "app.bsky.actor.defs#feedViewPref", "feed": "home", "hideReplies": True}
    await host.call(PUT_PREFS, body={"preferences": [feed]}, token=alice["accessJwt"])
    assert (await host.call(GET_PREFS, token=alice["accessJwt"])).body == {"preferences": [feed]}


async def test_preferences_outside_app_bsky_are_refused(host: HostClient) -> None:
    alice = await account(host, "alice.test")
    reply = await host.call(
        PUT_PREFS,
        body={"preferences": [ADULT, {"$type": "com.example.pref", "x": 1}]},
        token=alice["accessJwt"],
    )
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidRequest", "message": "Some preferences are not in the app.bsky namespace"},
    )
    assert (await host.call(GET_PREFS, token=alice["accessJwt"])).body == {"preferences": []}
    reply = await host.call(PUT_PREFS, body={"preferences": [{"enabled": True}]}, token=alice["accessJwt"])
    assert (reply.status, reply.error) == (400, "InvalidRequest")
