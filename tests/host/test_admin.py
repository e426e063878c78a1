"""The admin API over HTTP: goat's Basic auth, account views, subject status, handle, password, deletion."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, Reply, admin_headers, basic_auth

from atrepo.core.cid import CID
from atrepo.core.events import AccountEvent, IdentityEvent, decode_frame
from atrepo.host import HostConfig, start_host
from atrepo.host.config import ADMIN_PASSWORD_FILENAME

POST = "app.bsky.feed.post"
NOW = "2024-05-01T12:34:56.789Z"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(32))
REPO_REF = "com.atproto.admin.defs#repoRef"
BLOB_REF = "com.atproto.admin.defs#repoBlobRef"


async def new_user(host: HostClient, handle: str, **extra: Any) -> dict[str, Any]:
    reply = await host.create_account(handle, **extra)
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


async def admin(host: HostClient, nsid: str, body: Any = None, **params: str) -> Reply:
    return await host.call(nsid, body=body, params=params or None, headers=admin_headers(host))


# --- auth -----------------------------------------------------------------------------------------


async def test_generated_password_file_and_every_wrong_credential_is_401(
    host: HostClient, tmp_path: Path
) -> None:
    path = tmp_path / "data" / ADMIN_PASSWORD_FILENAME
    password = path.read_text().strip()
    assert password == host.running.context.secrets.admin_password and len(password) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    alice = await new_user(host, "alice.test")
    wrong = [
        None,
        basic_auth("nope"),
        basic_auth(password, user="root"),
        basic_auth(password + "x"),
        {"Authorization": f"Bearer {alice['accessJwt']}"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(password.encode()).decode()},  # no "admin:"
        {"Authorization": "Basic"},
    ]
    for headers in wrong:
        for nsid, body, params in [
            ("com.atproto.admin.getAccountInfo", None, {"did": alice["did"]}),
            ("com.atproto.admin.deleteAccount", {"did": alice["did"]}, None),
        ]:
            reply = await host.call(nsid, body=body, params=params, headers=headers)
            assert (reply.status, reply.error) == (401, "AuthenticationRequired"), (headers, nsid)
            assert reply.body["message"] == "Authentication Required"
    async with host.http.get(
        f"{host.url}/atrepo/admin/email-token", params={"did": alice["did"]}, headers=basic_auth("nope")
    ) as resp:
        assert resp.status == 401
    assert host.running.context.store.get_account(alice["did"]) is not None
    ok = await admin(host, "com.atproto.admin.getAccountInfo", did=alice["did"])
    assert ok.status == 200, ok.body


async def test_a_configured_password_is_used_and_no_file_is_written(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> None:
    config = HostConfig(
        host="127.0.0.1",
        port=0,
        plc_port=0,
        data_dir=tmp_path / "data",
        admin_password="s3cret-admin",
        database=database,
    )
    running = await start_host(config, validate_output=True)
    try:
        url = f"{running.url}/xrpc/com.atproto.admin.searchAccounts"
        async with http.get(url, headers=basic_auth("s3cret-admin")) as resp:
            assert resp.status == 200
            assert await resp.json() == {"accounts": []}
        async with http.get(url, headers=basic_auth("other")) as resp:
            assert resp.status == 401
    finally:
        await running.stop()
    assert not (tmp_path / "data" / ADMIN_PASSWORD_FILENAME).exists()


async def test_start_up_says_where_the_password_is_but_not_what(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database: str | None
) -> None:
    config = HostConfig(host="127.0.0.1", port=0, plc_port=0, data_dir=tmp_path / "data", database=database)
    with caplog.at_level("INFO", logger="atrepo.host"):
        running = await start_host(config)
        await running.stop()
    password = (tmp_path / "data" / ADMIN_PASSWORD_FILENAME).read_text().strip()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert str(tmp_path / "data" / ADMIN_PASSWORD_FILENAME) in text
    assert password not in text


# --- account views --------------------------------------------------------------------------------


async def test_account_infos_and_search(host: HostClient) -> None:
    alice = await new_user(host, "alice.test", email="alice@example.com")
    bob = await new_user(host, "bob.test")
    reply = await admin(host, "com.atproto.admin.getAccountInfo", did=alice["did"])
    assert reply.status == 200
    assert reply.body["did"] == alice["did"] and reply.body["handle"] == "alice.test"
    assert reply.body["email"] == "alice@example.com" and reply.body["indexedAt"].endswith("Z")
    assert "deactivatedAt" not in reply.body
    missing = await admin(host, "com.atproto.admin.getAccountInfo", did="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
    assert (missing.status, missing.error) == (400, "NotFound")

    async with host.http.get(
        f"{host.url}/xrpc/com.atproto.admin.getAccountInfos",
        params=[("dids", alice["did"]), ("dids", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"), ("dids", bob["did"])],
        headers=admin_headers(host),
    ) as resp:
        assert resp.status == 200
        infos = (await resp.json())["infos"]
    assert [i["did"] for i in infos] == [alice["did"], bob["did"]]

    carol = await new_user(host, "carol.test")
    first = await admin(host, "com.atproto.admin.searchAccounts", limit="2")
    assert [a["did"] for a in first.body["accounts"]] == [alice["did"], bob["did"]]
    rest = await admin(host, "com.atproto.admin.searchAccounts", limit="2", cursor=first.body["cursor"])
    assert [a["did"] for a in rest.body["accounts"]] == [carol["did"]] and "cursor" not in rest.body
    by_mail = await admin(host, "com.atproto.admin.searchAccounts", email="ALICE@example.com")
    assert [a["did"] for a in by_mail.body["accounts"]] == [alice["did"]]

    # deactivatedAt appears once the owner deactivates
    await host.call("com.atproto.server.deactivateAccount", body={}, token=alice["accessJwt"], method="POST")
    reply = await admin(host, "com.atproto.admin.getAccountInfo", did=alice["did"])
    assert reply.body["deactivatedAt"].endswith("Z")


# --- subject status -------------------------------------------------------------------------------


async def test_repo_subject_status(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    did = alice["did"]
    status = await admin(host, "com.atproto.admin.getSubjectStatus", did=did)
    assert status.body == {
        "subject": {"$type": REPO_REF, "did": did},
        "takedown": {"applied": False},
        "deactivated": {"applied": False},
    }
    before = host.running.context.store.head_seq()
    reply = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {"subject": {"$type": REPO_REF, "did": did}, "takedown": {"applied": True}},
    )
    assert reply.status == 200, reply.body
    status = await admin(host, "com.atproto.admin.getSubjectStatus", did=did)
    assert status.body["takedown"]["applied"] is True
    assert status.body["takedown"]["ref"].endswith("Z")  # no ref given: the time
    # admin deactivation beside the takedown: takedown still wins
    reply = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {"subject": {"$type": REPO_REF, "did": did}, "deactivated": {"applied": True}},
    )
    assert reply.status == 200
    # neither field: the status is announced again
    reply = await admin(
        host, "com.atproto.admin.updateSubjectStatus", {"subject": {"$type": REPO_REF, "did": did}}
    )
    assert reply.status == 200 and "takedown" not in reply.body
    reply = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {"subject": {"$type": REPO_REF, "did": did}, "takedown": {"applied": False}},
    )
    assert reply.status == 200
    events = [decode_frame(r.frame) for r in host.running.context.store.read_events(before, 100)]
    assert all(isinstance(e, AccountEvent) for e in events)
    assert [(e.active, e.status) for e in events] == [  # type: ignore[union-attr]
        (False, "takendown"),
        (False, "takendown"),
        (False, "takendown"),
        (False, "deactivated"),
    ]
    status = await admin(host, "com.atproto.admin.getSubjectStatus", did=did)
    assert status.body["takedown"] == {"applied": False} and status.body["deactivated"] == {"applied": True}

    both = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {
            "subject": {"$type": REPO_REF, "did": did},
            "takedown": {"applied": True},
            "deactivated": {"applied": False},
        },
    )
    assert (both.status, both.error) == (400, "InvalidRequest")
    record = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {
            "subject": {
                "$type": "com.atproto.repo.strongRef",
                "uri": f"at://{did}/{POST}/3kabc",
                "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            },
            "takedown": {"applied": True},
        },
    )
    assert (record.status, record.error) == (400, "InvalidRequest")
    unknown = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {
            "subject": {"$type": REPO_REF, "did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"},
            "takedown": {"applied": True},
        },
    )
    assert (unknown.status, unknown.error) == (400, "NotFound")
    for params in ({"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, {}):
        reply = await admin(host, "com.atproto.admin.getSubjectStatus", **params)
        assert reply.status == 400, params


async def test_blob_takedown_hides_the_blob(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    headers = {"Authorization": f"Bearer {alice['accessJwt']}", "Content-Type": "image/png"}
    async with host.http.post(f"{host.url}/xrpc/com.atproto.repo.uploadBlob", data=PNG, headers=headers) as r:
        blob = (await r.json())["blob"]
    embed = {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]}
    record = {"$type": POST, "text": "pic", "createdAt": NOW, "embed": embed}
    made = await host.call(
        "com.atproto.repo.createRecord",
        body={"repo": alice["did"], "collection": POST, "record": record},
        token=alice["accessJwt"],
    )
    assert made.status == 200
    cid = blob["ref"]["$link"]
    get_blob = f"{host.url}/xrpc/com.atproto.sync.getBlob"
    async with host.http.get(get_blob, params={"did": alice["did"], "cid": cid}) as resp:
        assert resp.status == 200 and await resp.read() == PNG
    before = host.running.context.store.head_seq()
    subject = {"$type": BLOB_REF, "did": alice["did"], "cid": cid}
    reply = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {"subject": subject, "takedown": {"applied": True, "ref": "dmca-1"}},
    )
    assert reply.status == 200, reply.body
    assert reply.body == {"subject": subject, "takedown": {"applied": True, "ref": "dmca-1"}}
    async with host.http.get(get_blob, params={"did": alice["did"], "cid": cid}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "BlobNotFound", "message": "Blob not found"}
    status = await admin(host, "com.atproto.admin.getSubjectStatus", did=alice["did"], blob=cid)
    assert status.body == {"subject": subject, "takedown": {"applied": True, "ref": "dmca-1"}}
    assert host.running.context.store.head_seq() == before  # no event for a blob
    reply = await admin(
        host, "com.atproto.admin.updateSubjectStatus", {"subject": subject, "takedown": {"applied": False}}
    )
    assert reply.status == 200
    async with host.http.get(get_blob, params={"did": alice["did"], "cid": cid}) as resp:
        assert resp.status == 200 and await resp.read() == PNG
    other = str(CID.for_raw(b"never uploaded"))
    missing = await admin(
        host,
        "com.atproto.admin.updateSubjectStatus",
        {"subject": {**subject, "cid": other}, "takedown": {"applied": True}},
    )
    assert (missing.status, missing.error) == (400, "NotFound")
    no_did = await admin(host, "com.atproto.admin.getSubjectStatus", blob=cid)
    assert (no_did.status, no_did.error) == (400, "InvalidRequest")


# --- handle, password, deletion -------------------------------------------------------------------


async def test_update_account_handle(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    await new_user(host, "bob.test")
    before = host.running.context.store.head_seq()
    reply = await admin(
        host, "com.atproto.admin.updateAccountHandle", {"did": alice["did"], "handle": "admin.test"}
    )
    assert reply.status == 200, reply.body  # reserved names are the admin's to give
    (event,) = [decode_frame(r.frame) for r in host.running.context.store.read_events(before, 10)]
    assert isinstance(event, IdentityEvent) and event.handle == "admin.test"
    async with host.http.get(f"{host.running.plc_url}/{alice['did']}") as resp:
        doc = await resp.json(content_type=None)
    assert doc["alsoKnownAs"] == ["at://admin.test"]
    taken = await admin(
        host, "com.atproto.admin.updateAccountHandle", {"did": alice["did"], "handle": "bob.test"}
    )
    assert (taken.status, taken.error) == (400, "HandleNotAvailable")
    unknown = await admin(
        host,
        "com.atproto.admin.updateAccountHandle",
        {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "handle": "x.test"},
    )
    assert (unknown.status, unknown.error) == (400, "NotFound")


async def test_update_account_password_revokes_sessions(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    before = host.running.context.store.head_seq()
    reply = await admin(
        host, "com.atproto.admin.updateAccountPassword", {"did": alice["did"], "password": "new pw"}
    )
    assert reply.status == 200, reply.body
    assert host.running.context.store.head_seq() == before  # no event
    refreshed = await host.call("com.atproto.server.refreshSession", method="POST", token=alice["refreshJwt"])
    assert (refreshed.status, refreshed.error) == (400, "ExpiredToken")
    old = await host.call(
        "com.atproto.server.createSession", body={"identifier": "alice.test", "password": "correct horse"}
    )
    assert old.status == 401
    new = await host.call(
        "com.atproto.server.createSession", body={"identifier": "alice.test", "password": "new pw"}
    )
    assert new.status == 200
    too_long = await admin(
        host, "com.atproto.admin.updateAccountPassword", {"did": alice["did"], "password": "x" * 257}
    )
    assert (too_long.status, too_long.error) == (400, "InvalidPassword")


async def test_admin_delete_and_email_token_route(host: HostClient) -> None:
    alice = await new_user(host, "alice.test")
    route = f"{host.url}/atrepo/admin/email-token"
    async with host.http.get(route, params={"did": alice["did"]}, headers=admin_headers(host)) as resp:
        assert resp.status == 404
    asked = await host.call(
        "com.atproto.server.requestAccountDelete", token=alice["accessJwt"], method="POST"
    )
    assert asked.status == 200
    async with host.http.get(route, params={"did": alice["did"]}, headers=admin_headers(host)) as resp:
        assert resp.status == 200
        pending = await resp.json()
    assert pending["did"] == alice["did"] and pending["expired"] is False
    stored = host.running.context.store.get_email_token(alice["did"], "delete_account")
    assert stored is not None and pending["token"] == stored.token

    before = host.running.context.store.head_seq()
    reply = await admin(host, "com.atproto.admin.deleteAccount", {"did": alice["did"]})
    assert reply.status == 200, reply.body
    rows = host.running.context.store.read_events(0, 100)
    assert [(r.did, r.type, r.seq) for r in rows if r.did == alice["did"]] == [
        (alice["did"], "#account", before + 1)
    ]
    again = await admin(host, "com.atproto.admin.deleteAccount", {"did": alice["did"]})
    assert (again.status, again.error) == (400, "NotFound")
