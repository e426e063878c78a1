"""The host's status page over HTTP: negotiation, the JSON document, headers, escaping, live counts.

The same page in a real browser (script, policy, self-refresh) is
``test_status_browser.py``; here, what any HTTP client sees.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, TokenClock

from atrepo.host import HostConfig, start_host
from atrepo.host.status import TALLY_IDLE_S, TALLY_MAX_AGE_S, AccountTally
from atrepo.xrpc.status_page import CSP, format_value, prefers_html, public_url

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
HOSTILE = "<script>alert('x')</script>&\"<img src=x onerror=alert(1)>"


async def get(
    http: aiohttp.ClientSession, url: str, accept: str | None = None
) -> tuple[int, str, dict[str, str], str]:
    headers = {"Accept": accept} if accept is not None else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, resp.content_type, dict(resp.headers), await resp.text()


async def status_json(host: HostClient) -> dict[str, Any]:
    async with host.http.get(f"{host.url}/status.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        return body


def test_prefers_html() -> None:
    assert prefers_html(BROWSER_ACCEPT)
    assert prefers_html("text/html")
    assert prefers_html("text/plain;q=0.5, text/html")
    for accept in (
        None,
        "",
        "*/*",
        "application/json",
        "text/*",
        "text/plain, text/html;q=0.5",
        "text/html;q=0",
        "text/html;q=bogus",
        "application/json, */*;q=0.8",
    ):
        assert not prefers_html(accept), accept


def test_format_value() -> None:
    assert format_value(None, "count") == "\u2014"
    assert format_value(1234567, "count") == "1,234,567"
    assert format_value(0, "duration") == "0s"
    assert format_value(59, "duration") == "59s"
    assert format_value(3600, "duration") == "1h 0m 0s"
    assert format_value(90061, "duration") == "1d 1h 1m 1s"
    assert format_value([], "list") == "none"
    assert format_value(["a", "b"], "list") == "a, b"
    assert format_value({}, "counts") == "none"
    assert format_value({"active": 1200, "deactivated": 1}, "counts") == "active: 1,200, deactivated: 1"
    assert format_value(72.0, unit="h") == "72 h"
    assert format_value(0.5, unit="h") == "0.5 h"
    assert format_value(True) == "yes"


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("https://user:pw@relay.example:8443/x?token=t#f") == "https://relay.example:8443/x"
    assert public_url("http://[::1]:2583") == "http://[::1]:2583"
    assert public_url("no-scheme@host") == "(URL hidden)"


async def test_root_answers_text_unless_html_is_preferred(host: HostClient) -> None:
    for accept in (None, "*/*", "application/json", "text/plain, text/html;q=0.5"):
        status, ctype, headers, body = await get(host.http, f"{host.url}/", accept)
        assert (status, ctype) == (200, "text/plain"), accept
        assert body.startswith("This is an AT Protocol repository host (atrepo).")
        assert "<" not in body
        assert headers["Vary"] == "Accept"
    status, ctype, headers, body = await get(host.http, f"{host.url}/", BROWSER_ACCEPT)
    assert (status, ctype) == (200, "text/html")
    assert headers["Vary"] == "Accept"
    assert body.startswith("<!DOCTYPE html>")
    # server-rendered: the values are in the markup, no script needed to see them
    assert f">{host.running.context.service_did}</dd>" in body
    assert f">{host.url}</dd>" in body
    assert re.search(r'data-key="accounts.total"[^>]*>0</dd>', body)
    # HEAD works like GET for monitors
    async with host.http.head(f"{host.url}/", headers={"Accept": BROWSER_ACCEPT}) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"


async def test_json_document_fields_and_types(host: HostClient) -> None:
    doc = await status_json(host)
    ctx = host.running.context
    assert doc["software"] == {"name": "atrepo", "version": doc["software"]["version"], "role": "host"}
    assert isinstance(doc["software"]["version"], str) and doc["software"]["version"]
    service = doc["service"]
    assert (service["publicUrl"], service["did"], service["plcUrl"]) == (
        ctx.public_url,
        ctx.service_did,
        ctx.plc_url,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", service["startedAt"])
    assert isinstance(service["uptimeSeconds"], int) and service["uptimeSeconds"] >= 0
    assert doc["accounts"] == {"total": 0, "byStatus": {}}
    assert doc["events"] == {"headSeq": 0, "oldestSeq": None, "retentionHours": 72.0}
    assert doc["firehose"] == {"subscribers": 0}
    writes = doc["writes"]
    assert (writes["commitsSinceStart"], writes["eventsSinceStart"]) == (0, 0)
    # the start-up maintenance pass (pruning) may still hold the writer: a depth, not necessarily 0
    assert isinstance(writes["writerQueueDepth"], int) and 0 <= writes["writerQueueDepth"] <= 3
    assert doc["relays"] == []


async def test_security_headers_on_page_json_and_assets(host: HostClient) -> None:
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in CSP.split(";")}
    assert directives["default-src"] == "default-src 'none'"
    assert directives["script-src"] == "script-src 'self'"
    assert directives["style-src"] == "style-src 'self'"
    assert directives["connect-src"] == "connect-src 'self'"
    expected_types = {
        "/": "text/html",
        "/status.json": "application/json",
        "/status.js": "text/javascript",
        "/status.css": "text/css",
        "/status.svg": "image/svg+xml",
    }
    for path, ctype in expected_types.items():
        status, got, headers, body = await get(host.http, f"{host.url}{path}", BROWSER_ACCEPT)
        assert (status, got) == (200, ctype), path
        assert headers["Content-Security-Policy"] == CSP, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Cache-Control"] == "no-store", path
        assert body, path
    _, _, _, page = await get(host.http, f"{host.url}/", BROWSER_ACCEPT)
    # nothing inline for the policy to refuse: no script bodies, no style attributes or elements
    assert "<script>" not in page and "<style" not in page and "style=" not in page
    assert re.search(r"\son[a-z]+=", page) is None
    assert '<script src="/status.js" defer></script>' in page


@pytest.fixture
async def hostile_host(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> AsyncIterator[HostClient]:
    """A host whose configured relays carry markup and credentials, and whose secrets are known."""
    config = HostConfig(
        host="127.0.0.1",
        port=0,
        plc_port=0,
        data_dir=tmp_path / "data",
        database=database,
        # port 9 (discard): nothing listens, so the start-up requestCrawl fails at once
        relays=(f"http://127.0.0.1:9/{HOSTILE}", "http://operator:relay-password@127.0.0.1:9/"),
        admin_password="admin-password-not-shown",
        jwt_secret="jwt-secret-not-shown-0123456789abcdef",
    )
    running = await start_host(config)
    try:
        yield HostClient(running, http, TokenClock())
    finally:
        await running.stop()


async def test_hostile_values_are_escaped_and_secrets_never_shown(hostile_host: HostClient) -> None:
    host = hostile_host
    _, _, _, page = await get(host.http, f"{host.url}/", BROWSER_ACCEPT)
    doc = await status_json(host)
    assert doc["relays"] == [f"http://127.0.0.1:9/{HOSTILE}", "http://127.0.0.1:9"]
    assert HOSTILE not in page and "<script>alert" not in page and "<img" not in page
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;&lt;img src=x onerror=alert(1)&gt;"
    assert f"http://127.0.0.1:9/{escaped}, http://127.0.0.1:9</dd>" in page
    raw_json = await (await host.http.get(f"{host.url}/status.json")).text()
    for secret in ("admin-password-not-shown", "jwt-secret-not-shown", "relay-password", "operator"):
        assert secret not in page and secret not in raw_json, secret
    key = host.running.context.secrets.rotation_key.to_bytes()
    for form in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert form not in page and form not in raw_json


async def test_numbers_follow_writes(host: HostClient) -> None:
    before = await status_json(host)
    created = await host.create_account("alice.test")
    assert created.status == 200
    after_account = await status_json(host)
    assert after_account["accounts"] == {"total": 1, "byStatus": {"active": 1}}
    assert after_account["events"]["headSeq"] > before["events"]["headSeq"]
    assert after_account["events"]["oldestSeq"] == 1
    assert after_account["writes"]["commitsSinceStart"] == 1
    assert after_account["writes"]["eventsSinceStart"] == after_account["events"]["headSeq"]

    reply = await host.call(
        "com.atproto.repo.createRecord",
        body={
            "repo": created.body["did"],
            "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"},
        },
        token=created.body["accessJwt"],
    )
    assert reply.status == 200
    after_record = await status_json(host)
    assert after_record["writes"]["commitsSinceStart"] == 2
    assert after_record["events"]["headSeq"] > after_account["events"]["headSeq"]
    assert after_record["writes"]["eventsSinceStart"] == after_record["events"]["headSeq"]
    assert after_record["accounts"]["total"] == 1
    _, _, _, page = await get(host.http, f"{host.url}/", BROWSER_ACCEPT)
    assert re.search(r'data-key="writes.commitsSinceStart"[^>]*>2</dd>', page)
    assert re.search(r'data-key="accounts.byStatus"[^>]*>active: 1</dd>', page)


async def test_firehose_subscribers_are_counted(host: HostClient) -> None:
    async def subscribers() -> int:
        count: int = (await status_json(host))["firehose"]["subscribers"]
        return count

    async def until(wanted: int) -> None:
        for _ in range(200):  # at most ~10 s: the socket is added and removed in the background
            if await subscribers() == wanted:
                return
            await asyncio.sleep(0.05)
        assert await subscribers() == wanted

    ws = await host.http.ws_connect(f"{host.url}/xrpc/com.atproto.sync.subscribeRepos")
    try:
        await until(1)
    finally:
        await ws.close()
    await until(0)


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_account_tally_recounts_after_writes_when_cheap(host: HostClient) -> None:
    clock = Clock()
    tally = AccountTally(host.running.context.worker, clock=clock)
    assert await tally.get() == {}
    assert (await host.create_account("alice.test")).status == 200
    assert await tally.get() == {}  # no write noticed, not yet a second old: the kept count
    clock.now += TALLY_IDLE_S
    assert await tally.get() == {"active": 1}  # idle expiry
    assert (await host.create_account("bob.test")).status == 200
    tally.invalidate(0)  # what the host's notify hook does after a write
    assert await tally.get() == {"active": 2}
    # concurrent readers share one count
    tally.invalidate(0)
    first, second = await asyncio.gather(tally.get(), tally.get())
    assert first is second


async def test_account_tally_is_kept_for_its_cost_when_expensive(host: HostClient) -> None:
    clock = Clock()
    # every count is "expensive", and kept for as long as the cap allows
    tally = AccountTally(host.running.context.worker, clock=clock, cheap_s=0.0, cost_factor=1e12)
    assert await tally.get() == {}
    assert (await host.create_account("alice.test")).status == 200
    tally.invalidate(0)
    assert await tally.get() == {}  # writes do not make an expensive count run again
    clock.now += TALLY_MAX_AGE_S - 0.5
    assert await tally.get() == {}
    clock.now += 1.0
    assert await tally.get() == {"active": 1}
