"""Headless Chromium for the status page tests, shared by the host's and the relay's.

Both status pages are tested in a real browser (Debian's Chromium, driven by
Selenium) because only a browser proves their scripts run under the strict
Content-Security-Policy; how that browser is found, started and quit is the
same for both, so it lives here once. Without Chromium and chromedriver the
tests skip, except under CI (``CI`` set), where a missing browser is a failure:
a page tested in a real browser must not silently stop being tested.

Selenium's calls block and the server under test runs on the test's event
loop, so every browser call goes through :func:`call` (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

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
)
#: The longest a test waits for the page to show something (the pages refresh every 5 s).
WAIT_S = 30.0
#: Markup that would change the page's title if a page ran or parsed it instead of showing it as text.
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"

T = TypeVar("T")


def require_browser() -> None:
    """Skip when the browser is missing, unless under CI, where that is a failure."""
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


def start_driver(profile: Path, javascript: bool = True, extra_flags: Sequence[str] = ()) -> Any:
    """A headless Chromium with its own profile directory, keeping its console log for :func:`problems`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def browsers(tmp_path: Path, extra_flags: Sequence[str] = ()) -> Iterator[Callable[..., Any]]:
    """The body of a ``browser`` fixture: starts Chromiums on demand, then quits them all.

    Each gets its own profile under ``tmp_path``; ``start(False)`` starts one
    with JavaScript off.
    """
    require_browser()
    started: list[Any] = []

    def start(javascript: bool = True) -> Any:
        driver = start_driver(tmp_path / f"chromium-profile-{len(started)}", javascript, extra_flags)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.quit()


async def call(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking Selenium call off the event loop the server under test runs on."""
    return await asyncio.to_thread(fn, *args)


def problems(log: list[dict[str, Any]]) -> list[str]:
    """Console errors and policy violations in a Chromium browser log."""
    return [
        entry["message"]
        for entry in log
        if entry.get("level") == "SEVERE"
        or "Content Security Policy" in entry.get("message", "")
        or "Refused to" in entry.get("message", "")
    ]
