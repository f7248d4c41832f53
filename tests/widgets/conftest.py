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
from typing import Any, Callable

import numpy as np
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


# ---------------------------------------------------------------- shared data

TOKENS = ["<bos>", "The", " cat", " sat", " on"]
VIEW_KINDS = ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView"]


def make_causal_pattern(layers: int, heads: int, n: int, seed: int = 0) -> np.ndarray:
    """Random softmax rows with zeros above the diagonal, ``[layers, heads, n, n]``."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((layers, heads, n, n))
    upper = np.triu_indices(n, 1)
    scores[..., upper[0], upper[1]] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def build_view(kind: str) -> Any:
    """One small, deterministic instance of each view."""
    from interplab_widgets import AttentionView, FeatureDashboard, LogitLensView, PatchingHeatmap, TokenView

    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(30)]
    if kind == "AttentionView":
        return AttentionView(TOKENS, make_causal_pattern(2, 4, 5))
    if kind == "TokenView":
        return TokenView(TOKENS, {"act": rng.random(5), "probe": rng.standard_normal(5)})
    if kind == "FeatureDashboard":
        return FeatureDashboard([TOKENS, TOKENS[:3]], [rng.random(5), rng.random(3)], activation_sample=rng.random(100),
                                logit_effects=rng.standard_normal(30), vocab=vocab, k=3, title="feature 7", label="cats")
    if kind == "PatchingHeatmap":
        return PatchingHeatmap(rng.standard_normal((3, 5)), ["L0", "L1", "L2"], TOKENS)
    if kind == "LogitLensView":
        return LogitLensView.from_logits(TOKENS, rng.standard_normal((3, 5, 30)) * 3, vocab, targets=rng.integers(0, 30, 5), k=3)
    raise KeyError(kind)


@pytest.fixture
def tokens() -> list[str]:
    return list(TOKENS)


@pytest.fixture
def causal_pattern() -> Callable[..., np.ndarray]:
    return make_causal_pattern


@pytest.fixture
def view_builder() -> Callable[[str], Any]:
    return build_view


@pytest.fixture(params=VIEW_KINDS)
def any_view(request: pytest.FixtureRequest) -> Any:
    return build_view(request.param)
