"""``atrepo sync``'s status page in a real browser (Debian's Chromium, headless, through Selenium).

The page is the shared status page (``xrpc/status_page.py``) with the
consumer's facts: it must render them server-side, refresh them from
``/status.json`` under the strict Content-Security-Policy without a console
error, and read the same with JavaScript off. A screenshot is saved in the
test's directory (``sync-status.png``). Browser plumbing: ``tests/browser_support.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_support import SyncEnv

from browser_support import WAIT_S, browsers, call, problems


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    yield from browsers(tmp_path)


async def fact(driver: Any, key: str) -> str:
    """The text shown for the fact of ``key``."""
    script = (
        "var d = document.querySelector('dd[data-key=\"' + arguments[0] + '\"]'); return d && d.textContent;"
    )
    text: str | None = await call(driver.execute_script, script, key)
    assert text is not None, f"no fact {key}"
    return text


async def wait_fact(driver: Any, key: str, check: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + WAIT_S
    seen = await fact(driver, key)
    while not check(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"{key} never showed {what}: {seen!r}")
        await asyncio.sleep(0.2)
        seen = await fact(driver, key)
    return seen


async def test_sync_status_page_refreshes_under_the_policy(
    sync_env: SyncEnv, browser: Callable[..., Any], tmp_path: Path
) -> None:
    host = await sync_env.add_host()
    alice = await host.create_account("alice.test")
    await sync_env.post(alice, "before")
    running = await sync_env.start_sync(host.url, dids=(alice.did,))
    await sync_env.wait_mirrored(running, alice)

    driver = await call(browser)
    await call(driver.get, f"{running.url}/")
    assert await call(lambda: driver.title) == "atrepo sync"
    assert await fact(driver, "repos.active") == "1"
    assert await fact(driver, "repos.error") == "0"
    before = int((await fact(driver, "counts.commits_applied")).replace(",", ""))

    # a live write: the page shows it by itself (the script re-reads /status.json)
    await sync_env.post(alice, "live")
    await sync_env.wait_mirrored(running, alice)
    await wait_fact(
        driver, "counts.commits_applied", lambda t: int(t.replace(",", "")) > before, "the live commit"
    )
    state: str = await call(lambda: driver.find_element("id", "status-state").text)
    assert state.startswith("Live: refreshed at ")
    assert problems(await call(driver.get_log, "browser")) == []
    shot = tmp_path / "sync-status.png"
    assert await call(driver.save_screenshot, str(shot))
    assert shot.stat().st_size > 0

    # without JavaScript the server-rendered page says the same
    plain = await call(browser, False)
    await call(plain.get, f"{running.url}/")
    assert await fact(plain, "repos.active") == "1"
    assert (await call(lambda: plain.find_element("id", "status-state").text)).startswith("As of ")
    assert problems(await call(plain.get_log, "browser")) == []
