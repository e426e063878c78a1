"""The host's status page in a real browser: Debian's Chromium, headless, driven by Selenium.

What only a browser proves: the page's own script runs under its strict
Content-Security-Policy without a single violation or console error, the
self-refresh from ``/status.json`` shows a write made meanwhile, hostile text
stays text, and the page still reads right with JavaScript off.

Chromium and chromedriver come from Debian (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them). Without them the tests skip,
except under CI (``CI`` set), where a missing browser is a failure: a
status page tested in a real browser must not silently stop being tested.

Selenium's calls block, and the host under test runs on this test's event
loop, so every browser call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from host_support import HostClient, TokenClock

from atrepo.host import HostConfig, start_host
from atrepo.store import SQLiteStore
from browser_support import HOSTILE, WAIT_S, browsers, call, problems


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts fresh headless Chromiums on demand (each with its own profile); quits them all at the end."""
    yield from browsers(tmp_path)


@pytest.fixture
async def page_host(
    tmp_path: Path, http: aiohttp.ClientSession, database: str | None
) -> AsyncIterator[HostClient]:
    """A host with one configured relay whose URL carries markup (nothing listens on port 9)."""
    config = HostConfig(
        host="127.0.0.1",
        port=0,
        plc_port=0,
        data_dir=tmp_path / "data",
        database=database,
        relays=(f"http://127.0.0.1:9/{HOSTILE}",),
    )
    running = await start_host(config, validate_output=True)
    try:
        yield HostClient(running, http, TokenClock())
    finally:
        await running.stop()


async def cell(driver: Any, key: str) -> str:
    """The visible text of the value cell of ``key``."""
    from selenium.webdriver.common.by import By

    element = await call(driver.find_element, By.CSS_SELECTOR, f'dd[data-key="{key}"]')
    text: str = await call(lambda: element.text)
    return text


async def wait_for(driver: Any, key: str, wanted: str) -> None:
    """Until the cell of ``key`` shows ``wanted`` (at most ``WAIT_S``; the page refreshes itself)."""
    deadline = time.monotonic() + WAIT_S
    seen = await cell(driver, key)
    while seen != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"{key} still shows {seen!r}, not {wanted!r}, after {WAIT_S} s")
        await asyncio.sleep(0.2)
        seen = await cell(driver, key)


async def test_status_page_refreshes_itself_under_its_policy(
    page_host: HostClient, browser: Callable[..., Any]
) -> None:
    host = page_host
    created = await host.create_account("alice.test")
    assert created.status == 200
    driver = await call(browser)
    await call(driver.get, f"{host.url}/")

    title: str = await call(lambda: driver.title)
    assert title == "atrepo repository host"
    ctx = host.running.context
    assert await cell(driver, "service.did") == ctx.service_did
    assert await cell(driver, "service.publicUrl") == host.url
    assert await cell(driver, "service.plcUrl") == ctx.plc_url
    assert await cell(driver, "accounts.total") == "1"
    assert await cell(driver, "accounts.byStatus") == "active: 1"
    assert await cell(driver, "writes.commitsSinceStart") == "1"
    assert await cell(driver, "events.retentionHours") == "72 h"
    # the hostile relay URL is shown as the text it is, neither run nor parsed
    assert await cell(driver, "relays") == f"http://127.0.0.1:9/{HOSTILE}"

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
    head_seq = await ctx.worker.read(SQLiteStore.head_seq)
    await wait_for(driver, "writes.commitsSinceStart", "2")
    await wait_for(driver, "events.headSeq", f"{head_seq:,}")
    assert await cell(driver, "accounts.total") == "1"
    # refreshed values are formatted as the server rendered them, hostile text included
    assert await cell(driver, "relays") == f"http://127.0.0.1:9/{HOSTILE}"
    assert await cell(driver, "events.retentionHours") == "72 h"
    state: str = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("Live: refreshed at ")
    assert await call(lambda: driver.title) == "atrepo repository host"

    log = await call(driver.get_log, "browser")
    assert problems(log) == []

    # the check above can see a violation: an inline script injected now is refused by the policy
    await call(
        driver.execute_script,
        "var s = document.createElement('script'); s.textContent = 'window.injected = 1;';"
        "document.body.appendChild(s);",
    )
    assert await call(driver.execute_script, "return window.injected === undefined;") is True
    deadline = time.monotonic() + WAIT_S
    refused: list[str] = []
    while not refused and time.monotonic() < deadline:
        refused = problems(await call(driver.get_log, "browser"))
        if not refused:
            await asyncio.sleep(0.2)
    assert any("Content Security Policy" in message for message in refused), refused


async def test_status_page_reads_right_with_javascript_off(
    host: HostClient, browser: Callable[..., Any]
) -> None:
    assert (await host.create_account("alice.test")).status == 200
    driver = await call(browser, False)
    await call(driver.get, f"{host.url}/")
    assert await cell(driver, "accounts.total") == "1"
    assert await cell(driver, "service.did") == host.running.context.service_did
    assert await cell(driver, "relays") == "none"
    state: str = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("As of ")
    assert problems(await call(driver.get_log, "browser")) == []


async def test_status_page_says_when_its_values_are_stale(
    host: HostClient, browser: Callable[..., Any]
) -> None:
    driver = await call(browser)
    await call(driver.get, f"{host.url}/")
    assert await cell(driver, "accounts.total") == "0"
    await host.running.stop()  # the next refresh finds nobody (the fixture's stop is then a no-op)
    deadline = time.monotonic() + WAIT_S
    state = ""
    while not state.startswith("Refresh failed") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        state = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("Refresh failed"), state
    assert await cell(driver, "accounts.total") == "0"  # the last values stay
