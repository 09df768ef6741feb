"""The ``browser`` fixture: ONE real headless Chromium for the whole pytest session.

Registered for every test by ``pytest_plugins`` in tests/conftest.py. It drives Debian's Chromium
(``/usr/bin/chromium``, or ``RELAYDESK_CHROMIUM``) through the ``playwright`` package; no browser is
ever downloaded. Without Chromium (or playwright) the tests that use it are skipped with the reason,
or fail under RELAYDESK_REQUIRE_SERVICES=1 (as CI runs; .ci/run installs Debian's chromium).
Each test gets its own browser context (``new_context``): its own storage, like a separate device.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext

INSTALL_HINT = "install Debian's chromium (apt-get install -y chromium) or set RELAYDESK_CHROMIUM"


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when there is none."""
    configured = os.environ.get("RELAYDESK_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    """Skip, or fail under RELAYDESK_REQUIRE_SERVICES=1 (the pattern of tests/services.py)."""
    if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium, started once per session."""
    path = chromium_path()
    if path is None:
        _unavailable(f"the browser tests need Chromium, which is not installed: {INSTALL_HINT}")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the browser tests need the playwright package: pip install -e '.[dev]'")
    playwright = await async_playwright().start()
    try:
        try:
            browser = await playwright.chromium.launch(executable_path=path, headless=True)
        except Exception as exc:
            _unavailable(f"Chromium ({path}) did not start: {exc}")
        yield browser
        await browser.close()
    finally:
        await playwright.stop()


@pytest.fixture
async def browser_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (cookies, storage) for one test; closed afterwards."""
    context = await browser.new_context()
    yield context
    await context.close()
