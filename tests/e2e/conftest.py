"""Fixtures of the example-frontend browser tests: the page's static server, Playwright and
Debian's Chromium (one per module), a fresh browser context per test."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

from tests.e2e.test_browser import chromium
from tests.e2e.test_example_frontend import EXAMPLE, Quiet, serve


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    with serve(functools.partial(Quiet, directory=str(EXAMPLE))) as port:  # type: ignore[arg-type]
        yield port


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    yield launched
    launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 900, "height": 720})
    yield ctx
    ctx.close()
