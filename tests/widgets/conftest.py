"""Browser fixtures for the widget tests: the system Chromium driven by Playwright.

No tool here downloads a browser. Without /usr/bin/chromium (or Playwright) the
browser tests skip locally, and fail when the ``CI`` environment variable is set,
because CI installs Chromium and a silent skip there would hide a broken view.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("INTERPLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: renders exported HTML in headless Chromium")
    config.addinivalue_line("markers", "jupyterlab: end-to-end test in a real JupyterLab server")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole session (starting it costs ~1 s)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found; install it with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed; pip install -e './widgets[test]'")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageWatch:
    """A page plus what it logged and what it tried to fetch."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        remote = [u for u in self.requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
        assert remote == [], f"network requests: {remote}"


@pytest.fixture
def watched_page(browser: Any) -> Iterator[PageWatch]:
    """A fresh page that records console errors, page errors and every request."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watch = PageWatch(page)
    page.on("console", lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", lambda req: watch.requests.append(req.url))
    try:
        yield watch
    finally:
        context.close()


@pytest.fixture
def open_html(watched_page: PageWatch, tmp_path: Path):
    """Write HTML to a file, open it, wait until every view on it has rendered."""

    def _open(html: str, name: str = "view.html") -> PageWatch:
        path = tmp_path / name
        path.write_text(html, encoding="utf-8")
        page = watched_page.page
        page.goto(path.as_uri())
        page.wait_for_function(
            "() => { const els = [...document.querySelectorAll('.ipl-export')];"
            " return els.length > 0 && els.every(e => ['rendered', 'error'].includes(e.dataset.iplState)); }"
        )
        states = page.eval_on_selector_all(".ipl-export", "els => els.map(e => e.dataset.iplState)")
        assert all(s == "rendered" for s in states), f"render states {states}; errors {watched_page.errors}"
        return watched_page

    return _open
