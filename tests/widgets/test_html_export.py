"""Standalone HTML export: self-contained, offline, safe to put twice on a page."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from interplab_widgets import AttentionView, PatchingHeatmap, TokenView

# Anything that would make the browser fetch code or data from a server.
REMOTE_CODE = [
    re.compile(r"<script[^>]*\bsrc\s*=", re.I),
    re.compile(r"<link[^>]*\bhref\s*=", re.I),
    re.compile(r"\bimport\s*\(?\s*[\"'](?:https?:)?//", re.I),
    re.compile(r"\bfrom\s*[\"'](?:https?:)?//", re.I),
    re.compile(r"\bfetch\s*\(", re.I),
    re.compile(r"XMLHttpRequest|require\.js|requirejs|esm\.sh|unpkg|jsdelivr|cdnjs", re.I),
    re.compile(r"@import\s+url", re.I),
]


def test_html_is_self_contained(any_view: Any) -> None:
    view = any_view
    html = view.to_html()
    assert html.startswith("<!DOCTYPE html>")
    for pattern in REMOTE_CODE:
        assert not pattern.search(html), f"{type(view).__name__} export matches {pattern.pattern}"
    urls = re.findall(r"https?://[^\s\"'<>\\]+", html)
    assert set(urls) <= {"http://www.w3.org/2000/svg"}, urls  # an SVG namespace name is not a request
    assert "export default" in html  # the same ESM the widget uses, inlined
    assert html.count("</script>") == 1


def test_html_embeds_the_exact_bytes_base64(tokens: list[str], causal_pattern: Callable[..., np.ndarray]) -> None:
    view = AttentionView(tokens, causal_pattern(1, 2, 5)[0])
    html = view.to_html()
    state_json = re.search(r"^const STATE = (.*);$", html, re.M).group(1)
    state = json.loads(state_json)
    assert base64.b64decode(state["attention"]["__b64__"]) == view.attention
    assert state["tokens"] == tokens
    assert "layout" not in state and "_esm" not in state  # only the view's own traits


def test_token_strings_cannot_break_out_of_the_script() -> None:
    tokens = ["</script>", "<img src=x onerror=alert(1)>", "a&b", "\u2028"]
    view = TokenView(tokens, np.arange(4.0))
    html = view.to_html()
    assert html.count("</script>") == 1
    assert "<img" not in html
    state = json.loads(re.search(r"^const STATE = (.*);$", html, re.M).group(1))
    assert state["tokens"] == tokens


def test_element_ids_come_from_the_content() -> None:
    """Deterministic exports (nbval, diffs): the same view gives the same id, other data another."""
    view = PatchingHeatmap(np.eye(3))
    ids = {re.search(r'<div id="([^"]+)"', view.to_html(full_document=False)).group(1) for _ in range(3)}
    assert len(ids) == 1
    assert view.to_html() == PatchingHeatmap(np.eye(3)).to_html()
    other = re.search(r'<div id="([^"]+)"', PatchingHeatmap(2 * np.eye(3)).to_html()).group(1)
    assert other not in ids


def test_export_carries_the_static_picture_until_the_script_runs(any_view: Any) -> None:
    html = any_view.to_html(full_document=False)
    static = any_view.static_html()
    assert f'data-ipl-view="{type(any_view).__name__}">{static}</div>' in html


def test_save_writes_the_document(tmp_path: Path) -> None:
    view = PatchingHeatmap(np.eye(2))
    path = view.save(tmp_path / "heat.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "PatchingHeatmap(2 layer x 2 position)" in text


def test_export_inlines_the_widget_esm_verbatim(any_view: Any) -> None:
    esm = str(any_view._esm)
    assert len(re.findall(r"^export default", esm, re.M)) == 1
    html = any_view.to_html()
    inlined = json.loads(re.search(r"^const ESM = (.*);$", html, re.M).group(1))
    assert inlined == esm


def test_nbconvert_shows_the_static_picture_of_a_saved_notebook(view_builder: Callable[[str], Any]) -> None:
    """A notebook saved without widget state (the usual case) exports with every view visible."""
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    kinds = ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView"]
    nb = nbformat.v4.new_notebook()
    for kind in kinds:
        data, metadata = view_builder(kind)._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data  # the live widget is still there for Jupyter
        cell = nbformat.v4.new_code_cell(f"view  # {kind}")
        cell.outputs = [nbformat.v4.new_output("display_data", data=data, metadata=metadata)]
        nb.cells.append(cell)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    for kind in kinds:
        assert f'data-ipl-static="{kind}"' in body, kind
