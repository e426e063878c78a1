"""AppView proxying and service auth, against real services on 127.0.0.1 that check our tokens.

The fake AppView and the second service are real aiohttp servers. Each one
verifies every service-auth token on its own, as a real AppView would: it
resolves the ``iss`` DID from the PLC directory the host uses, takes the
``#atproto`` key of that document, and checks the signature and claims with
PyJWT and ``cryptography`` (never the host's own minting code). A token that
does not verify is answered 401 ``BadJwt``, which the host would relay, so any
test seeing a 200 from a fake also proves its token was good.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from host_support import HostClient, TokenClock
from yarl import URL

from atrepo.core.errors import InputFileError
from atrepo.core.keys import PrivateKey
from atrepo.host import HostConfig, start_host
from atrepo.host.app_bsky import UNSERVED_MESSAGE
from atrepo.host.config import load_config
from atrepo.host.proxy import PROXY_KEY, PublicOnlyResolver, is_public_address
from atrepo.identity.plc.client import submit_operation
from atrepo.identity.plc.operations import Service, build_operation, genesis_did
from atrepo.store import SQLiteStore

APPVIEW_DID = "did:web:appview.test"
TIMELINE = "app.bsky.feed.getTimeline"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Multicodec prefixes of compressed public keys (secp256k1-pub, p256-pub).
CURVES: dict[bytes, tuple[ec.EllipticCurve, str]] = {
    b"\xe7\x01": (ec.SECP256K1(), "ES256K"),
    b"\x80\x24": (ec.SECP256R1(), "ES256"),
}


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + B58.index(char)
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + raw


@dataclass
class Seen:
    """One call a fake service received, with the claims of its verified token."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    header: dict[str, Any]
    claims: dict[str, Any]
    raw_path: str = ""


@dataclass
class FakeService:
    """A service that verifies service auth (for ``did``) and answers by the ``cursor`` parameter."""

    plc_url: str
    did: str = ""
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    #: Set to make the next calls hang (a service that never answers).
    stall: asyncio.Event | None = None
    #: The endpoint its DID document lists, when not its own URL.
    endpoint: str | None = None

    async def verify(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise web.HTTPUnauthorized(text='{"error":"AuthMissing"}', content_type="application/json")
        token = auth.removeprefix("Bearer ")
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.plc_url}/{claims['iss']}") as resp,
        ):
            assert resp.status == 200
            doc = await resp.json(content_type=None)
        methods = [
            m for m in doc["verificationMethod"] if m["id"] in ("#atproto", f"{claims['iss']}#atproto")
        ]
        assert methods[0]["type"] == "Multikey"
        multikey = b58decode(methods[0]["publicKeyMultibase"][1:])
        curve, alg = CURVES[multikey[:2]]
        key = ec.EllipticCurvePublicKey.from_encoded_point(curve, multikey[2:])
        assert header == {"typ": "JWT", "alg": alg}
        verified = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=self.did,
            issuer=claims["iss"],
            options={"require": ["iat", "exp", "iss", "aud", "jti"]},
        )
        return header, verified

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/.well-known/did.json":
            return web.json_response(self.document())
        try:
            header, claims = await self.verify(request)
        except (jwt.PyJWTError, AssertionError, KeyError, IndexError) as exc:
            return web.json_response(
                {"error": "BadJwt", "message": f"{type(exc).__name__}: {exc}"}, status=401
            )
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                header,
                claims,
                request.raw_path,
            )
        )
        if self.stall is not None:
            await self.stall.wait()
        nsid = request.match_info["nsid"]
        cursor = request.query.get("cursor", "")
        extra = {"atproto-repo-rev": "3kfakerev", "Set-Cookie": "secret=1", "X-Internal": "no"}
        if cursor == "error400":
            return web.json_response(
                {"error": "BadCursor", "message": "that cursor is stale"},
                status=400,
                headers={"Retry-After": "7"},
            )
        if cursor == "error500":
            return web.json_response({"error": "Oops", "message": "it broke"}, status=500)
        if cursor == "html404":
            return web.Response(status=404, text="<html>no</html>", content_type="text/html")
        if cursor == "gzip":
            compressed = web.json_response({"feed": [], "cursor": "z" * 2000}, headers=extra)
            compressed.enable_compression(web.ContentCoding.gzip)
            return compressed
        if cursor == "big":
            return web.Response(body=b"x" * 1000, content_type="application/octet-stream")
        if nsid == "app.bsky.actor.getProfile":
            actor = request.query["actor"]
            return web.json_response(
                {"did": claims["iss"], "handle": "from.appview", "displayName": f"AppView's {actor}"},
                headers=extra,
            )
        if nsid == "app.bsky.feed.getTimeline":
            return web.json_response({"feed": [], "cursor": "next"}, headers=extra)
        echo = {"nsid": nsid, "method": request.method, "service": self.did, "body": body.decode()}
        return web.json_response(echo, headers=extra)

    def document(self) -> dict[str, Any]:
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": self.did,
            "service": [{"id": "#svc", "type": "TestService", "serviceEndpoint": self.endpoint or self.url}],
        }


@dataclass
class Setup:
    host: HostClient
    appview: FakeService
    other: FakeService


async def serve_fake(service: FakeService, runners: list[web.AppRunner]) -> int:
    app = web.Application()
    app.router.add_route("*", "/xrpc/{nsid}", service.handle)
    app.router.add_get("/.well-known/did.json", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    service.url = f"http://127.0.0.1:{port}"
    return port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def start(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    clock: TokenClock,
    *,
    appview: bool = True,
    dead: bool = False,
    allow_private: bool = True,
    database: str | None = None,
) -> AsyncIterator[Setup]:
    """A host (with or without an AppView), the fake AppView and a second service named by DID."""
    runners: list[web.AppRunner] = []
    plc_port = free_port()
    plc_url = f"http://127.0.0.1:{plc_port}"
    fake_appview = FakeService(plc_url, did=APPVIEW_DID)
    other = FakeService(plc_url)
    try:
        await serve_fake(fake_appview, runners)
        port = await serve_fake(other, runners)
        other.did = f"did:web:localhost%3A{port}"
        # the second service is on 127.0.0.1 over http: only reachable with the SSRF guard off
        settings: dict[str, Any] = {"proxy_allow_private": allow_private}
        if appview:
            url = f"http://127.0.0.1:{free_port()}" if dead else fake_appview.url
            settings |= {"appview_url": url, "appview_did": APPVIEW_DID}
        config = HostConfig(
            host="127.0.0.1",
            port=0,
            plc_port=plc_port,
            data_dir=tmp_path / "data",
            database=database,
            **settings,
        )
        running = await start_host(config, clock_ms=clock, validate_output=True)
        assert running.plc_url == plc_url
        try:
            yield Setup(HostClient(running, http, clock), fake_appview, other)
        finally:
            await running.stop()
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def setup(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> AsyncIterator[Setup]:
    """The usual setup, on each backend."""
    async for s in start(tmp_path, http, clock, database=database):
        yield s


@pytest.fixture
async def bare(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> AsyncIterator[Setup]:
    """No AppView configured (on each backend)."""
    async for s in start(tmp_path, http, clock, appview=False, database=database):
        yield s


async def account(host: HostClient, handle: str = "alice.test") -> tuple[str, str]:
    reply = await host.create_account(handle)
    assert reply.status == 200, reply.body
    return reply.body["did"], reply.body["accessJwt"]


# --- proxied to the configured AppView -------------------------------------------------------


async def test_app_bsky_call_goes_to_the_appview_with_a_verified_token(setup: Setup) -> None:
    did, token = await account(setup.host)
    sent = {
        "Accept-Language": "fr, en;q=0.5",
        "atproto-accept-labelers": "did:plc:ar7c4by46qjdydhdevvrndac;redact",
        "X-Bsky-Topics": "dev",
        "Cookie": "session=1",
        "X-Forwarded-For": "10.0.0.1",
    }
    before = int(time.time())
    reply = await setup.host.call(TIMELINE, params={"limit": "5"}, token=token, headers=sent)
    assert (reply.status, reply.body) == (200, {"feed": [], "cursor": "next"})
    # back: content headers and atproto-repo-rev; never the service's cookies or private headers
    assert reply.headers["atproto-repo-rev"] == "3kfakerev"
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "Set-Cookie" not in reply.headers and "X-Internal" not in reply.headers

    (seen,) = setup.appview.seen
    assert (seen.method, seen.path, seen.query) == ("GET", f"/xrpc/{TIMELINE}", {"limit": "5"})
    # the token: from the account, to the AppView's bare DID, for this method, one minute
    assert seen.header == {"typ": "JWT", "alg": "ES256K"}
    assert seen.claims["iss"] == did
    assert seen.claims["aud"] == APPVIEW_DID
    assert seen.claims["lxm"] == TIMELINE
    assert seen.claims["exp"] - seen.claims["iat"] == 60
    assert before - 5 <= seen.claims["iat"] <= int(time.time()) + 5
    assert re.fullmatch(r"[0-9a-f]{32}", seen.claims["jti"])
    # to the service: only the reference's request headers, and our token instead of the session's
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["accept-language"] == sent["Accept-Language"]
    assert headers["atproto-accept-labelers"] == sent["atproto-accept-labelers"]
    assert headers["x-bsky-topics"] == "dev"
    assert headers["accept-encoding"] == "identity" or "gzip" in headers["accept-encoding"]
    assert "cookie" not in headers and "x-forwarded-for" not in headers
    assert headers["authorization"] != f"Bearer {token}"

    # a second call gets a fresh token (new jti)
    assert (await setup.host.call(TIMELINE, token=token)).status == 200
    assert setup.appview.seen[1].claims["jti"] != seen.claims["jti"]


async def test_get_profile_comes_from_the_appview_and_preferences_stay_local(setup: Setup) -> None:
    _, token = await account(setup.host)
    reply = await setup.host.call("app.bsky.actor.getProfile", params={"actor": "alice.test"}, token=token)
    assert (reply.status, reply.body["handle"], reply.body["displayName"]) == (
        200,
        "from.appview",
        "AppView's alice.test",
    )
    assert setup.appview.seen[-1].claims["lxm"] == "app.bsky.actor.getProfile"
    # the AppView needs to know who asks: without a session there is no token to sign
    reply = await setup.host.call("app.bsky.actor.getProfile", params={"actor": "alice.test"})
    assert (reply.status, reply.error) == (401, "AuthMissing")

    prefs = [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False}]
    put = await setup.host.call("app.bsky.actor.putPreferences", body={"preferences": prefs}, token=token)
    assert put.status == 200
    got = await setup.host.call("app.bsky.actor.getPreferences", token=token)
    assert (got.status, got.body) == (200, {"preferences": prefs})
    # naming the configured AppView explicitly changes nothing
    named = {"atproto-proxy": f"{APPVIEW_DID}#bsky_appview"}
    got = await setup.host.call("app.bsky.actor.getPreferences", token=token, headers=named)
    assert (got.status, got.body) == (200, {"preferences": prefs})
    assert len(setup.appview.seen) == 1  # only getProfile went out


async def test_a_procedure_body_is_forwarded(setup: Setup) -> None:
    _, token = await account(setup.host)
    body = {"actor": "did:plc:ewvi7nxzyoun6zhxrhs64oiz"}
    reply = await setup.host.call("app.bsky.graph.muteActor", body=body, token=token)
    assert reply.status == 200
    assert (reply.body["method"], reply.body["nsid"], json.loads(reply.body["body"])) == (
        "POST",
        "app.bsky.graph.muteActor",
        body,
    )
    seen = setup.appview.seen[-1]
    assert seen.headers["Content-Type"].startswith("application/json")
    assert seen.claims["lxm"] == "app.bsky.graph.muteActor"


async def test_path_and_query_go_as_sent(setup: Setup, http: aiohttp.ClientSession) -> None:
    _, token = await account(setup.host)
    # ("%2F" would arrive as "/": the same query once decoded, normalised by the HTTP client)
    raw = f"/xrpc/{TIMELINE}?algorithm=a+b%20c%26&limit=5&limit=6&x=%C3%A9"
    url = URL(setup.host.url + raw, encoded=True)  # sent exactly as written
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
    assert setup.appview.seen[-1].raw_path == raw


async def test_no_session_is_401_and_nothing_goes_out(setup: Setup) -> None:
    reply = await setup.host.call(TIMELINE)
    assert (reply.status, reply.error) == (401, "AuthMissing")
    reply = await setup.host.call(TIMELINE, token="not.a.token")
    assert (reply.status, reply.error) == (400, "InvalidToken")
    assert setup.appview.seen == []


async def test_methods_never_proxied(setup: Setup) -> None:
    _, token = await account(setup.host)
    other = {"atproto-proxy": f"{setup.other.did}#svc"}
    # account management must be called on the host itself
    reply = await setup.host.call(
        "com.atproto.server.requestEmailUpdate", body={}, token=token, headers=other
    )
    assert (reply.status, reply.body) == (400, {"error": "InvalidToken", "message": "Bad token method"})
    # XRPC is GET and POST only
    reply = await setup.host.call(TIMELINE, token=token, method="PUT")
    assert reply.status == 400 and reply.error == "InvalidRequest"
    # a locally served com.atproto method ignores the header, as the reference
    reply = await setup.host.call("com.atproto.server.describeServer", headers=other)
    assert reply.status == 200 and "availableUserDomains" in reply.body
    assert setup.other.seen == [] and setup.appview.seen == []


# --- atproto-proxy: any service, by DID ----------------------------------------------------------


@pytest.mark.parametrize("with_appview", [True, False])
async def test_header_names_another_service(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, with_appview: bool, database: str | None
) -> None:
    async for s in start(tmp_path, http, clock, appview=with_appview, database=database):
        did, token = await account(s.host)
        header = {"atproto-proxy": f"{s.other.did}#svc"}
        reply = await s.host.call(
            "chat.bsky.convo.listConvos", params={"limit": "2"}, token=token, headers=header
        )
        assert reply.status == 200, reply.body
        assert (reply.body["service"], reply.body["nsid"]) == (s.other.did, "chat.bsky.convo.listConvos")
        (seen,) = s.other.seen
        assert (seen.claims["iss"], seen.claims["aud"], seen.claims["lxm"]) == (
            did,
            s.other.did,
            "chat.bsky.convo.listConvos",
        )
        assert seen.query == {"limit": "2"}
        # an app.bsky method goes where the header says, not to the AppView
        reply = await s.host.call(TIMELINE, token=token, headers=header)
        assert reply.status == 200 and s.other.seen[-1].claims["lxm"] == TIMELINE
        # and so do the preferences the host otherwise keeps
        reply = await s.host.call("app.bsky.actor.getPreferences", token=token, headers=header)
        assert reply.status == 200 and reply.body["service"] == s.other.did
        assert s.appview.seen == []


async def test_header_names_a_did_plc_service(setup: Setup, http: aiohttp.ClientSession) -> None:
    # a service whose identity is a did:plc in the directory the host uses
    key = PrivateKey.generate("k256")
    op = build_operation(
        key,
        rotation_keys=[key.public_key.did_key()],
        verification_methods={"atproto": key.public_key.did_key()},
        also_known_as=[],
        services={"svc": Service("TestService", setup.other.url)},
        prev=None,
    )
    plc_did = genesis_did(op)
    await submit_operation(http, setup.host.running.plc_url, plc_did, op)
    setup.other.did = plc_did
    did, token = await account(setup.host)
    header = {"atproto-proxy": f"{plc_did}#svc"}
    reply = await setup.host.call("chat.bsky.convo.getLog", token=token, headers=header)
    assert reply.status == 200, reply.body
    assert (setup.other.seen[-1].claims["iss"], setup.other.seen[-1].claims["aud"]) == (did, plc_did)
    assert setup.appview.seen == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("#svc", "no did specified in proxy header"),
        ("did:web:localhost", "no service id specified in proxy header"),
        ("did:web:localhost#", "no service id specified in proxy header"),
        ("did:web:localhost#a#b", "invalid proxy header format"),
        ("did:web:local host#svc", "proxy header cannot contain spaces"),
        ("not-a-did#svc", "could not resolve proxy did"),
        ("did:example:123#svc", "could not resolve proxy did"),
    ],
)
async def test_bad_proxy_header_is_400(setup: Setup, value: str, message: str) -> None:
    _, token = await account(setup.host)
    reply = await setup.host.call(TIMELINE, token=token, headers={"atproto-proxy": value})
    assert (reply.status, reply.body) == (400, {"error": "InvalidRequest", "message": message})


async def test_unknown_service_or_unreachable_did(setup: Setup) -> None:
    _, token = await account(setup.host)
    missing = {"atproto-proxy": f"{setup.other.did}#nope"}
    reply = await setup.host.call(TIMELINE, token=token, headers=missing)
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidRequest", "message": "could not resolve proxy did service url"},
    )
    gone = {"atproto-proxy": f"did:web:localhost%3A{free_port()}#svc"}
    reply = await setup.host.call(TIMELINE, token=token, headers=gone)
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidRequest", "message": "could not resolve proxy did"},
    )
    unknown_plc = {"atproto-proxy": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa#svc"}
    reply = await setup.host.call(TIMELINE, token=token, headers=unknown_plc)
    assert (reply.status, reply.body) == (
        400,
        {"error": "InvalidRequest", "message": "could not resolve proxy did"},
    )


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        (None, "not https"),
        ("https://127.0.0.1:{port}", "not a public address"),
        ("https://[::ffff:10.0.0.1]:{port}", "not a public address"),
        ("https://localhost:{port}", "resolves to no public unicast address"),
    ],
)
async def test_ssrf_guard_keeps_did_named_services_public(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    clock: TokenClock,
    caplog: pytest.LogCaptureFixture,
    endpoint: str | None,
    why: str,
    database: str | None,
) -> None:
    # by default a DID-named service must be https at a public address: these are neither
    async for s in start(tmp_path, http, clock, allow_private=False, database=database):
        _, token = await account(s.host)
        if endpoint is not None:
            s.other.endpoint = endpoint.format(port=s.other.url.rsplit(":", 1)[1])
        header = {"atproto-proxy": f"{s.other.did}#svc"}
        reply = await s.host.call(TIMELINE, token=token, headers=header)
        assert (reply.status, reply.body) == (
            502,
            {"error": "UpstreamFailure", "message": "Upstream service unreachable"},
        )
        assert s.other.seen == []
        assert why in caplog.text  # refused by the guard, not by chance (TLS to a plain server)
        # the configured AppView is the operator's choice: reachable on loopback over http
        assert (await s.host.call(TIMELINE, token=token)).status == 200


def test_public_addresses() -> None:
    for ip in ("8.8.8.8", "2606:4700:4700::1111"):
        assert is_public_address(ip)
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1%eth0", "224.0.0.1"):
        assert not is_public_address(ip), ip
    assert not is_public_address("::ffff:127.0.0.1") and not is_public_address("example.com")


async def test_public_only_resolver_drops_loopback() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="no public unicast address"):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()


# --- failures of the service ------------------------------------------------------------------


async def test_appview_down_is_502(
    tmp_path: Path, http: aiohttp.ClientSession, clock: TokenClock, database: str | None
) -> None:
    async for s in start(tmp_path, http, clock, dead=True, database=database):
        _, token = await account(s.host)
        reply = await s.host.call(TIMELINE, token=token)
        assert (reply.status, reply.body) == (
            502,
            {"error": "UpstreamFailure", "message": "Upstream service unreachable"},
        )


async def test_appview_that_never_answers_is_502(setup: Setup) -> None:
    _, token = await account(setup.host)
    setup.host.running._runner.app[PROXY_KEY].headers_timeout = 0.5
    setup.appview.stall = asyncio.Event()
    try:
        reply = await setup.host.call(TIMELINE, token=token)
    finally:
        setup.appview.stall.set()
    assert (reply.status, reply.body) == (
        502,
        {"error": "UpstreamFailure", "message": "Upstream service unreachable"},
    )


async def test_error_replies_are_relayed(setup: Setup) -> None:
    _, token = await account(setup.host)
    reply = await setup.host.call(TIMELINE, params={"cursor": "error400"}, token=token)
    assert (reply.status, reply.body) == (400, {"error": "BadCursor", "message": "that cursor is stale"})
    assert reply.headers["Retry-After"] == "7"
    reply = await setup.host.call(TIMELINE, params={"cursor": "error500"}, token=token)
    assert (reply.status, reply.body) == (502, {"error": "Oops", "message": "it broke"})
    reply = await setup.host.call(TIMELINE, params={"cursor": "html404"}, token=token)
    assert (reply.status, reply.body) == (404, {"error": "XRPCNotSupported", "message": "XRPC Not Supported"})


async def test_compressed_replies_pass_as_they_came(setup: Setup) -> None:
    _, token = await account(setup.host)
    headers = {"Accept-Encoding": "gzip"}
    reply = await setup.host.call(TIMELINE, params={"cursor": "gzip"}, token=token, headers=headers)
    assert (reply.status, reply.body) == (200, {"feed": [], "cursor": "z" * 2000})
    assert reply.headers["Content-Encoding"] == "gzip"  # relayed compressed, decoded by the client
    assert setup.appview.seen[-1].headers["Accept-Encoding"] == "gzip"


async def test_oversized_reply_is_refused(setup: Setup) -> None:
    _, token = await account(setup.host)
    setup.host.running._runner.app[PROXY_KEY].max_response_bytes = 100
    reply = await setup.host.call(TIMELINE, params={"cursor": "big"}, token=token)
    assert (reply.status, reply.error) == (502, "UpstreamFailure")


# --- without an AppView ----------------------------------------------------------------------


async def test_without_appview_app_methods_stay_501(bare: Setup) -> None:
    did, token = await account(bare.host)
    reply = await bare.host.call(TIMELINE, token=token)
    assert (reply.status, reply.body) == (501, {"error": "MethodNotImplemented", "message": UNSERVED_MESSAGE})
    profile = await bare.host.call("app.bsky.actor.getProfile", params={"actor": did})
    assert (profile.status, profile.body) == (200, {"did": did, "handle": "alice.test"})
    reply = await bare.host.call("com.example.nothing.here")
    assert (reply.status, reply.error) == (501, "MethodNotImplemented")
    assert bare.appview.seen == []


# --- getServiceAuth ----------------------------------------------------------------------------


async def test_get_service_auth_token_verifies_at_the_service(setup: Setup) -> None:
    did, token = await account(setup.host)
    now = setup.host.clock() // 1000
    aud = f"{setup.other.did}#svc"
    reply = await setup.host.call(
        "com.atproto.server.getServiceAuth",
        params={"aud": aud, "lxm": "chat.bsky.convo.listConvos", "exp": str(now + 1800)},
        token=token,
    )
    assert reply.status == 200, reply.body
    minted = reply.body["token"]
    claims = jwt.decode(minted, options={"verify_signature": False})
    # as asked: the aud keeps its fragment here, exp as requested
    assert (claims["iss"], claims["aud"], claims["lxm"], claims["exp"]) == (
        did,
        aud,
        "chat.bsky.convo.listConvos",
        now + 1800,
    )
    # presented directly to a service whose DID is that aud, it verifies there
    setup.other.did = aud
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{setup.other.url}/xrpc/chat.bsky.convo.listConvos",
            headers={"Authorization": f"Bearer {minted}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    assert setup.other.seen[-1].claims["jti"] == claims["jti"]

    # defaults: one minute, no lxm
    reply = await setup.host.call(
        "com.atproto.server.getServiceAuth", params={"aud": APPVIEW_DID}, token=token
    )
    claims = jwt.decode(reply.body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60 and "lxm" not in claims and claims["aud"] == APPVIEW_DID


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"aud": "https://example.com"},
            "InvalidRequest",
            "aud must be a valid atproto DID or did#serviceId reference",
        ),
        (
            {"aud": "did:example:123"},
            "InvalidRequest",
            "aud must be a valid atproto DID or did#serviceId reference",
        ),
        (
            {"aud": "did:web:example.com#"},
            "InvalidRequest",
            "aud must be a valid atproto DID or did#serviceId reference",
        ),
        ({"aud": APPVIEW_DID, "exp": "-100"}, "BadExpiration", "expiration is in past"),
        (
            {"aud": APPVIEW_DID, "lxm": TIMELINE, "exp": "+3700"},
            "BadExpiration",
            "cannot request a token with an expiration more than an hour in the future",
        ),
        (
            {"aud": APPVIEW_DID, "exp": "+120"},
            "BadExpiration",
            "cannot request a method-less token with an expiration more than a minute in the future",
        ),
        (
            {"aud": APPVIEW_DID, "lxm": "com.atproto.server.getSession"},
            "InvalidRequest",
            "cannot request a service auth token for the following protected method: "
            "com.atproto.server.getSession",
        ),
    ],
)
async def test_get_service_auth_refusals(
    setup: Setup, params: dict[str, str], error: str, message: str
) -> None:
    _, token = await account(setup.host)
    now = setup.host.clock() // 1000
    if "exp" in params:
        params = {**params, "exp": str(now + int(params["exp"]))}
    reply = await setup.host.call("com.atproto.server.getServiceAuth", params=params, token=token)
    assert (reply.status, reply.body) == (400, {"error": error, "message": message})


async def test_taken_down_account_signs_nothing_but_a_migration(setup: Setup) -> None:
    did, token = await account(setup.host)

    def take_down(store: SQLiteStore) -> None:
        with store.transaction(did) as tx:
            tx.set_status("takendown")

    await setup.host.running.context.worker.run(take_down)
    refused = (400, {"error": "InvalidToken", "message": "Bad token scope"})
    reply = await setup.host.call(
        "com.atproto.server.getServiceAuth", params={"aud": APPVIEW_DID}, token=token
    )
    assert (reply.status, reply.body) == refused
    reply = await setup.host.call(TIMELINE, token=token)
    assert (reply.status, reply.body) == refused
    # moving away stays possible: a token for createAccount at the new host
    params = {"aud": "did:web:new-pds.example", "lxm": "com.atproto.server.createAccount"}
    reply = await setup.host.call("com.atproto.server.getServiceAuth", params=params, token=token)
    assert reply.status == 200
    assert jwt.decode(reply.body["token"], options={"verify_signature": False})["lxm"] == params["lxm"]
    assert setup.appview.seen == []


async def test_get_service_auth_needs_a_session(setup: Setup) -> None:
    reply = await setup.host.call("com.atproto.server.getServiceAuth", params={"aud": APPVIEW_DID})
    assert (reply.status, reply.error) == (401, "AuthMissing")


# --- a stock client through the host -----------------------------------------------------------


async def test_sdk_reads_through_the_appview(setup: Setup) -> None:
    from atproto import AsyncClient

    did, _ = await account(setup.host, "sdk.test")
    client = AsyncClient(base_url=setup.host.url + "/xrpc")
    profile = await client.login("sdk.test", "correct horse")  # createSession, then getProfile (proxied)
    assert (profile.did, profile.handle, profile.display_name) == (did, "from.appview", "AppView's sdk.test")
    timeline = await client.get_timeline(limit=3)
    assert (timeline.feed, timeline.cursor) == ([], "next")
    assert [s.claims["lxm"] for s in setup.appview.seen] == ["app.bsky.actor.getProfile", TIMELINE]
    assert setup.appview.seen[-1].query == {"limit": "3"}


# --- settings ----------------------------------------------------------------------------------


def test_appview_settings_are_checked() -> None:
    env = {"ATREPO_APPVIEW_URL": "https://api.bsky.app", "ATREPO_APPVIEW_DID": "did:web:api.bsky.app"}
    config = load_config(env={**env, "ATREPO_PROXY_ALLOW_PRIVATE": "true"})
    assert (config.appview_url, config.appview_did, config.proxy_allow_private) == (
        "https://api.bsky.app",
        "did:web:api.bsky.app",
        True,
    )
    assert load_config(env={}).proxy_allow_private is False
    for bad, message in (
        ({"ATREPO_APPVIEW_URL": "https://api.bsky.app"}, "needs both its URL and its DID"),
        ({**env, "ATREPO_APPVIEW_URL": "ftp://api.bsky.app"}, "AppView URL must be http"),
        ({**env, "ATREPO_APPVIEW_DID": "api.bsky.app"}, "AppView DID is not a DID"),
    ):
        with pytest.raises(InputFileError, match=message):
            load_config(env=bad)
