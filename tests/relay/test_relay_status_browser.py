"""The relay's status page in a real browser: Debian's Chromium, headless, driven by Selenium.

What only a browser proves: the page's script rebuilds the tables from
``/status.json`` under the strict Content-Security-Policy without a console
error or a policy violation, a change made meanwhile (a host banned through
the admin API, a fault) appears in its table without a reload, hostile text
in a cell stays text, and the tables read right with JavaScript off. A
screenshot of the page is saved in the test's directory (``relay-status.png``).

(Named apart from ``tests/host/test_status_browser.py``: the test directories
are not packages, so two files of one name would collide.) Chromium and
chromedriver come from Debian; without them the tests skip, except under CI
(``CI`` set), where that is a failure. Selenium's calls block, and the relay
runs on this test's event loop, so every browser call goes through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from relay_testenv import RelayEnv

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Without these, Chromium on a machine with no outside network hangs reaching Google's services.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
#: The longest a test waits for the page to show something (the page refreshes every 5 s).
WAIT_S = 30.0
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"

T = TypeVar("T")


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    message = f"no browser for the status page test: missing {', '.join(missing)}"
    if "CI" in os.environ:
        pytest.fail(message + " (CI is set: apt-get install chromium chromium-driver)")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Starts headless Chromiums on demand (each with its own profile); quits them all at the end."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started: list[Any] = []

    def start(javascript: bool = True) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / f'chromium-profile-{len(started)}'}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if not javascript:
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2}
            )
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.quit()


async def call(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


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


def problems(log: list[dict[str, Any]]) -> list[str]:
    """Console errors and policy violations in a Chromium browser log."""
    return [
        entry["message"]
        for entry in log
        if entry.get("level") == "SEVERE"
        or "Content Security Policy" in entry.get("message", "")
        or "Refused to" in entry.get("message", "")
    ]


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
