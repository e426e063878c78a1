"""A real client against a real host: the MarshalX ``atproto`` SDK (issue 9, "A real client").

The SDK's ``AsyncClient`` runs on the test's event loop beside the host (on
127.0.0.1), so every call goes over HTTP through the SDK's own request code,
models and error handling; its firehose client reads our ``subscribeRepos``.
What it proves is that a stock client, with nothing configured but the URL,
can create an account, log in (which also fetches ``app.bsky.actor.getProfile``),
post text and images, list, read and delete records, keep preferences,
refresh an expired session by itself, and decode every frame of our stream.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any

import pytest
from atproto import (
    CAR,
    AsyncClient,
    AsyncFirehoseSubscribeReposClient,
    FirehoseSubscribeReposClient,
    SessionEvent,
    models,
    parse_subscribe_repos_message,
)
from atproto_client.exceptions import BadRequestError, RequestErrorBase
from host_support import HostClient

from atrepo.host.app_bsky import UNSERVED_MESSAGE
from atrepo.host.auth import ACCESS_LIFETIME_S

# The SDK's uploadBlob hands httpx raw bytes as ``data=``, which httpx deprecates: its business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

POST = "app.bsky.feed.post"
PASSWORD = "correct horse battery"
#: Bound on the firehose client's whole run (it stops as soon as it saw what it looks for).
FIREHOSE_BOUND_S = 20.0


def tiny_png() -> bytes:
    """A valid 1x1 PNG, so the host sniffs ``image/png`` whatever the SDK's ``*/*`` says."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


async def sdk_account(host: HostClient, handle: str) -> tuple[AsyncClient, str]:
    """An account created through the SDK's ``createAccount``, then a full SDK ``login``."""
    client = AsyncClient(base_url=host.url + "/xrpc")
    created = await client.com.atproto.server.create_account(
        models.ComAtprotoServerCreateAccount.Data(
            handle=handle, password=PASSWORD, email=f"{handle}@example.com"
        )
    )
    assert created.handle == handle and created.did.startswith("did:plc:")
    profile = await client.login(handle, PASSWORD)  # createSession, then app.bsky.actor.getProfile
    assert profile is not None and client.me is not None
    assert (profile.did, profile.handle) == (created.did, handle)
    return client, created.did


async def test_sdk_session_posts_records_and_preferences(host: HostClient) -> None:
    client, did = await sdk_account(host, "alice.test")

    hello = await client.send_post("hello")
    assert hello.uri.startswith(f"at://{did}/{POST}/")
    image = tiny_png()
    with_image = await client.send_image("a picture", image=image, image_alt="one green pixel")

    listed = await client.com.atproto.repo.list_records(
        models.ComAtprotoRepoListRecords.Params(repo=did, collection=POST)
    )
    assert {r.uri for r in listed.records} == {hello.uri, with_image.uri}
    texts = {r.value.text for r in listed.records}
    assert texts == {"hello", "a picture"}

    rkey = with_image.uri.rsplit("/", 1)[1]
    post = await client.get_post(rkey, profile_identify=did)
    assert post.uri == with_image.uri and post.cid == with_image.cid
    embed = post.value.embed
    assert isinstance(embed, models.AppBskyEmbedImages.Main)
    (img,) = embed.images
    assert img.alt == "one green pixel"
    assert img.image.mime_type == "image/png" and img.image.size == len(image)
    # The uploaded blob is served back byte for byte.
    blob = await client.com.atproto.sync.get_blob(
        models.ComAtprotoSyncGetBlob.Params(did=did, cid=img.image.cid.encode())
    )
    assert blob == image

    raw = await client.com.atproto.repo.get_record(
        models.ComAtprotoRepoGetRecord.Params(repo=did, collection=POST, rkey=hello.uri.rsplit("/", 1)[1])
    )
    assert raw.uri == hello.uri and raw.cid == hello.cid and raw.value["text"] == "hello"

    assert await client.delete_post(hello.uri) is True
    listed = await client.com.atproto.repo.list_records(
        models.ComAtprotoRepoListRecords.Params(repo=did, collection=POST)
    )
    assert [r.uri for r in listed.records] == [with_image.uri]
    with pytest.raises(BadRequestError) as missing:
        await client.get_post(hello.uri.rsplit("/", 1)[1], profile_identify=did)
    assert missing.value.response is not None and missing.value.response.content.error == "RecordNotFound"

    # Preferences: empty at first, then what was put, as the SDK's models.
    prefs = await client.app.bsky.actor.get_preferences()
    assert prefs.preferences == []
    await client.app.bsky.actor.put_preferences(
        models.AppBskyActorPutPreferences.Data(
            preferences=[
                models.AppBskyActorDefs.AdultContentPref(enabled=True),
                models.AppBskyActorDefs.SavedFeedsPrefV2(
                    items=[
                        models.AppBskyActorDefs.SavedFeed(
                            id="3l6ovcmm2vd2j", type="timeline", value="following", pinned=True
                        )
                    ]
                ),
            ]
        )
    )
    prefs = await client.app.bsky.actor.get_preferences()
    adult, saved = prefs.preferences
    assert isinstance(adult, models.AppBskyActorDefs.AdultContentPref) and adult.enabled is True
    assert isinstance(saved, models.AppBskyActorDefs.SavedFeedsPrefV2) and saved.items[0].value == "following"


async def test_sdk_profile_and_unserved_app_methods(host: HostClient) -> None:
    client, did = await sdk_account(host, "bob.test")
    assert client.me is not None and client.me.display_name is None  # no profile record yet

    avatar = await client.upload_blob(tiny_png())
    await client.com.atproto.repo.put_record(
        models.ComAtprotoRepoPutRecord.Data(
            repo=did,
            collection="app.bsky.actor.profile",
            rkey="self",
            record=models.AppBskyActorProfile.Record(
                display_name="Bob",
                description="builds hosts",
                avatar=avatar.blob,
                created_at=client.get_current_time_iso(),
            ),
        )
    )
    profile = await client.get_profile("bob.test")
    assert (profile.did, profile.handle, profile.display_name, profile.description) == (
        did,
        "bob.test",
        "Bob",
        "builds hosts",
    )
    assert profile.avatar == (
        f"{host.running.context.public_url}/xrpc/com.atproto.sync.getBlob?did={did}&cid={avatar.blob.cid.encode()}"
    )
    assert (await client.get_profile(did)).handle == "bob.test"

    with pytest.raises(BadRequestError) as unknown:
        await client.get_profile("nobody.test")
    assert unknown.value.response is not None
    assert (unknown.value.response.content.error, unknown.value.response.content.message) == (
        "InvalidRequest",
        "Profile not found",
    )

    # Everything else under app.* needs an AppView: a clear 501 the SDK recognises as "not served".
    with pytest.raises(RequestErrorBase) as unserved:
        await client.get_timeline()
    response = unserved.value.response
    assert response is not None and response.status_code == 501
    assert (response.content.error, response.content.message) == ("MethodNotImplemented", UNSERVED_MESSAGE)
    reply = await host.call("app.bsky.feed.getTimeline")
    assert (reply.status, reply.body) == (501, {"error": "MethodNotImplemented", "message": UNSERVED_MESSAGE})
    # Other namespaces keep the router's plain answer.
    reply = await host.call("com.example.nothing.here")
    assert (reply.status, reply.error) == (501, "MethodNotImplemented")


async def test_sdk_refreshes_an_expired_session(host: HostClient) -> None:
    await host.create_account("carol.test", password=PASSWORD)
    client = AsyncClient(base_url=host.url + "/xrpc")
    events: list[SessionEvent] = []

    async def on_change(event: SessionEvent, _session: Any) -> None:
        events.append(event)

    client.on_session_change(on_change)
    # Log in while the host's token clock is an access lifetime (and a minute) behind:
    # the access token it issues has already expired by the wall clock.
    host.clock.advance(-(ACCESS_LIFETIME_S + 60))
    await client.login("carol.test", PASSWORD, fetch_bsky_profile=False)
    host.clock.advance(ACCESS_LIFETIME_S + 60)
    assert client._session is not None
    stale = client._session.access_jwt
    reply = await host.call("com.atproto.server.getSession", token=stale)
    assert (reply.status, reply.body) == (400, {"error": "ExpiredToken", "message": "Token has expired"})

    # The SDK notices from the token's integer exp, refreshes, and the call succeeds.
    session = await client.com.atproto.server.get_session()
    assert session.handle == "carol.test"
    assert events == [SessionEvent.CREATE, SessionEvent.REFRESH]
    assert client._session.access_jwt != stale
    assert (await host.call("com.atproto.server.getSession", token=client._session.access_jwt)).status == 200
    # without the profile fetch, ``me`` is unset: name the repo
    await client.send_post("after refresh", profile_identify=session.did)


@pytest.mark.parametrize("flavour", ["async", "threaded"])
async def test_sdk_firehose_decodes_our_stream(host: HostClient, flavour: str) -> None:
    """Both SDK firehose clients: ``AsyncFirehoseSubscribeReposClient`` on our loop, and the
    threaded ``FirehoseSubscribeReposClient`` (blocking ``start`` in a worker thread, stopped
    from another thread, as its docstring allows)."""
    client, did = await sdk_account(host, "dave.test")
    posts = [await client.send_post(f"post {i}") for i in range(3)]
    with_image = await client.send_image("picture", image=tiny_png(), image_alt="pixel")
    await client.delete_post(posts[0].uri)
    head = host.running.context.store.head_seq()

    seen: list[Any] = []
    records: dict[str, dict[str, Any]] = {}
    deleted: set[str] = set()
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def handle(message: Any) -> None:
        parsed = parse_subscribe_repos_message(message)
        seen.append(parsed)
        if isinstance(parsed, models.ComAtprotoSyncSubscribeRepos.Commit):
            car = CAR.from_bytes(parsed.blocks)
            assert car.root == parsed.commit
            for op in parsed.ops:
                uri = f"at://{parsed.repo}/{op.path}"
                if op.action == "delete":
                    deleted.add(uri)
                elif op.path.startswith(POST + "/"):
                    records[uri] = car.blocks[op.cid]
        if parsed.seq >= head:
            loop.call_soon_threadsafe(done.set)

    def handle_error(exc: BaseException) -> None:
        errors.append(exc)
        loop.call_soon_threadsafe(done.set)

    ws_base = "ws" + host.url.removeprefix("http") + "/xrpc"
    if flavour == "async":
        firehose = AsyncFirehoseSubscribeReposClient(params={"cursor": 0}, base_uri=ws_base)

        async def on_message(message: Any) -> None:
            handle(message)

        async def on_error(exc: BaseException) -> None:
            handle_error(exc)

        task = asyncio.create_task(firehose.start(on_message, on_error))
        try:
            await asyncio.wait_for(done.wait(), FIREHOSE_BOUND_S)
        finally:
            await firehose.stop()
            await asyncio.wait_for(task, FIREHOSE_BOUND_S)
    else:
        threaded = FirehoseSubscribeReposClient(params={"cursor": 0}, base_uri=ws_base)
        running = loop.run_in_executor(None, threaded.start, handle, handle_error)
        try:
            await asyncio.wait_for(done.wait(), FIREHOSE_BOUND_S)
        finally:
            threaded.stop()  # closes the socket, so a blocked recv returns at once
            await asyncio.wait_for(running, FIREHOSE_BOUND_S)
    assert errors == []

    # Every event arrived and decoded (the SDK silently drops frames it cannot parse).
    assert [m.seq for m in seen] == list(range(1, head + 1))
    kinds = [type(m).__name__ for m in seen]
    assert kinds[:4] == ["Identity", "Account", "Commit", "Sync"]
    assert set(kinds) == {"Identity", "Account", "Commit", "Sync"}
    assert records[with_image.uri]["text"] == "picture"
    assert records[with_image.uri]["embed"]["images"][0]["alt"] == "pixel"
    assert {records[p.uri]["text"] for p in posts} == {"post 0", "post 1", "post 2"}
    assert deleted == {posts[0].uri}
    assert all(m.repo == did for m in seen if isinstance(m, models.ComAtprotoSyncSubscribeRepos.Commit))
