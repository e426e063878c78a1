"""The relay's status page in a real browser: Debian's Chromium, headless, driven by Selenium.

What only a browser proves: the page's script rebuilds the tables from
``/status.json`` under the strict Content-Security-Policy without a console
error or a policy violation, a change made meanwhile (a host banned through
the admin API, a fault) appears in its table without a reload, hostile text
in a cell stays text, and the tables read right with JavaScript off. A
screenshot of the page is saved in the test's directory (``relay-status.png``).

(Named apart from ``tests/host/test_status_browser.py``: the test directories
are not packages, so two files of one name would collide.) The browser is
started by ``tests/browser_support.py``, shared with the host's page test:
Chromium and chromedriver come from Debian; without them the tests skip,
except under CI (``CI`` set), where that is a failure. Selenium's calls
block, and the relay runs on this test's event loop, so every browser call
goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from relay_testenv import RelayEnv

from browser_support import HOSTILE, WAIT_S, browsers, call, problems


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts headless Chromiums on demand (each with its own profile); quits them all at the end."""
    yield from browsers(tmp_path, ("--window-size=1400,1800",))


async def rows(driver: Any, key: str) -> list[list[str]]:
    """The visible cell texts of the table of ``key``, row by row."""
    script = (
        "var t = document.querySelector('table[data-table=\"' + arguments[0] + '\"]');"
        "if (!t) { return null; }"
        "return Array.prototype.map.call(t.tBodies[0].rows, function (r) {"
        "  return Array.prototype.map.call(r.cells, function (c) { return c.textContent; }); });"
    )
    found: list[list[str]] | None = await call(driver.execute_script, script, key)
    assert found is not None, f"no table {key}"
    return found


async def wait_rows(
    driver: Any, key: str, check: Callable[[list[list[str]]], bool], what: str
) -> list[list[str]]:
    deadline = time.monotonic() + WAIT_S
    seen = await rows(driver, key)
    while not check(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"table {key} never showed {what}: {seen!r}")
        await asyncio.sleep(0.2)
        seen = await rows(driver, key)
    return seen


async def test_tables_refresh_under_the_policy(
    relay_env: RelayEnv, browser: Callable[..., Any], tmp_path: Path
) -> None:
    env = relay_env
    alice = await env.create_account("alice.test")
    await env.create_records(alice, 2)
    await env.wait_relayed(alice)
    link = next(iter(env.relay.context.hosts.links.values()))
    await env.wait_for(lambda: asyncio.sleep(0, link.to_json()["connected"]), what="the relay connected")

    driver = await call(browser)
    await call(driver.get, f"{env.url}/")
    assert await call(lambda: driver.title) == "atrepo relay"
    hosts = await rows(driver, "hosts.list")
    assert hosts[0][:3] == [link.key, "active", "yes"]
    assert await rows(driver, "faults.recent") == [["no faults"]]

    # an operator bans the host, and something goes wrong with a hostile reason: both show up by themselves
    reply = await env.admin("POST", "/admin/hosts/ban", {"hostname": link.key})
    assert reply.status == 200, reply.body
    env.relay.context.ingest.fault("invalid-signature", link.key, alice.did, HOSTILE)
    hosts = await wait_rows(driver, "hosts.list", lambda r: r[0][1] == "banned", "the host banned")
    assert hosts[0][0] == link.key and hosts[0][2] == "no" and hosts[0][7] == "banned by the operator"
    faults = await wait_rows(driver, "faults.recent", lambda r: r[0][0] != "no faults", "the fault")
    assert faults[0][1:] == ["invalid-signature", link.key, alice.did, HOSTILE]  # as text, not markup
    state: str = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("Live: refreshed at ")
    assert await call(lambda: driver.title) == "atrepo relay"
    assert (
        await call(
            driver.execute_script, "return document.querySelectorAll('tbody img, tbody script').length;"
        )
        == 0
    )
    assert problems(await call(driver.get_log, "browser")) == []
    shot = tmp_path / "relay-status.png"
    assert await call(driver.save_screenshot, str(shot))
    assert shot.stat().st_size > 0


async def test_tables_read_right_with_javascript_off(
    relay_env: RelayEnv, browser: Callable[..., Any]
) -> None:
    env = relay_env
    link = next(iter(env.relay.context.hosts.links.values()))
    env.relay.context.ingest.fault("authority", link.key, "did:plc:someone", HOSTILE)
    driver = await call(browser, False)
    await call(driver.get, f"{env.url}/")
    assert (await rows(driver, "hosts.list"))[0][:2] == [link.key, "active"]
    assert (await rows(driver, "faults.recent"))[0][1:] == ["authority", link.key, "did:plc:someone", HOSTILE]
    assert await rows(driver, "subscribers.list") == [["no subscribers"]]
    state: str = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("As of ")
    assert problems(await call(driver.get_log, "browser")) == []
