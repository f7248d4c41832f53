"""Each view's exported HTML in headless Chromium: elements, interactions, no errors, no network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from interplab_widgets import AttentionView, FeatureDashboard, LogitLensView, PatchingHeatmap, TokenView

pytestmark = pytest.mark.browser

MODEL = "Object.values(window.__interplab_models)[0]"


def backgrounds(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.style.background)")


def test_attention_view_renders_heads_and_reacts(open_html: Callable, tokens: list[str], causal_pattern: Callable) -> None:
    view = AttentionView(tokens, causal_pattern(2, 3, 5))
    watch = open_html(view.to_html())
    page = watch.page
    assert page.locator(".ipl-thumb").count() == 6
    assert page.locator(".ipl-thumb canvas").count() == 6
    assert page.locator(".ipl-strip-out .ipl-token").count() == 5
    assert page.locator(".ipl-strip-in .ipl-token").count() == 5
    assert page.inner_text(".ipl-strip-out .ipl-token >> nth=2") == "\u00a0cat"

    # Hover token 3 as query: keys 0..3 get tinted, key 4 is causally masked.
    assert set(backgrounds(page, ".ipl-strip-out .ipl-token")) == {""}
    assert page.is_hidden(".ipl-row-marker")
    page.hover(".ipl-strip-out .ipl-token >> nth=3")
    assert page.is_visible(".ipl-row-marker")
    assert page.eval_on_selector(".ipl-row-marker", "m => m.style.top") == "60%"  # row 3 of 5
    tinted = backgrounds(page, ".ipl-strip-out .ipl-token")
    assert all(bg.startswith("rgb(") for bg in tinted[:4]) and tinted[4] == "rgb(236, 236, 236)"
    assert "attends most to" in page.inner_text(".ipl-readout")
    pattern = view.pattern[0, 0]
    best = int(np.argmax(pattern[3]))
    assert f'"{tokens[best]}" ({best})' in page.inner_text(".ipl-readout")

    # Click head 4: it becomes selected, the model trait follows, the big canvas redraws.
    before = page.eval_on_selector(".ipl-big", "c => c.toDataURL()")
    page.click(".ipl-thumb >> nth=4")
    assert page.get_attribute(".ipl-thumb.ipl-selected", "data-head") == "4"
    assert page.evaluate(f"{MODEL}.get('selected_head')") == 4
    assert page.eval_on_selector(".ipl-big", "c => c.toDataURL()") != before
    assert page.inner_text(".ipl-big-label").startswith("L1H1")

    # Hovering the enlarged pattern shows query, key and weight.
    box = page.locator(".ipl-big").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.9)
    assert "query 4" in page.inner_text(".ipl-tooltip") and "key 0" in page.inner_text(".ipl-tooltip")
    watch.assert_clean()


def test_attention_scale_changes_thumbnail_colours(open_html: Callable, tokens: list[str]) -> None:
    pattern = np.tril(np.full((1, 5, 5), 0.1))  # max 0.1: per-head scale saturates, scale "one" is pale
    view = AttentionView(tokens, pattern)
    page = open_html(view.to_html()).page
    per_head = page.eval_on_selector(".ipl-thumb canvas", "c => c.toDataURL()")
    page.select_option(".ipl-scale", "one")
    assert page.evaluate(f"{MODEL}.get('scale')") == "one"
    assert page.eval_on_selector(".ipl-thumb canvas", "c => c.toDataURL()") != per_head


def causal_lm_like(n: int = 12, heads: int = 3, seed: int = 0) -> np.ndarray:
    """Query 0 attends 1.0 to itself and BOS soaks up weight, as in a real causal model; head h gets weaker."""
    rng = np.random.default_rng(seed)
    pattern = np.tril(rng.random((heads, n, n)) * (0.3 / (1 + np.arange(heads)))[:, None, None])
    pattern[:, :, 0] += 2.0
    return pattern / pattern.sum(-1, keepdims=True)


def big_pixels(page: Any) -> np.ndarray:
    data = page.eval_on_selector(".ipl-big", "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    w, h = page.eval_on_selector(".ipl-big", "c => [c.width, c.height]")
    return np.array(data, np.int32).reshape(h, w, 4)[..., :3]


def test_attention_scales_match_python(open_html: Callable) -> None:
    """Each colour scale draws what AttentionView.colours computes (the static picture uses the same)."""
    from interplab_widgets._static import seq_rgb

    tokens = [f"t{i}" for i in range(12)]
    view = AttentionView(tokens, causal_lm_like(), selected_head=2, dtype="float32")
    page = open_html(view.to_html()).page
    for scale in ["head", "global", "row", "one"]:
        page.select_option(".ipl-scale", scale)
        view.scale = scale
        drawn = big_pixels(page)
        t = view.colours(2)
        expected = seq_rgb(np.nan_to_num(t))
        inside = ~np.isnan(t)
        assert np.abs(drawn[inside] - expected[inside]).max() <= 3, scale
        assert (drawn[~inside] == 236).all()


def test_attention_head_scale_brings_out_weak_heads(open_html: Callable) -> None:
    tokens = [f"t{i}" for i in range(12)]
    view = AttentionView(tokens, causal_lm_like(), selected_head=2)
    page = open_html(view.to_html()).page
    frames = {}
    for scale in ["head", "global", "row", "one"]:
        page.select_option(".ipl-scale", scale)
        frames[scale] = big_pixels(page)
    assert len({f.tobytes() for f in frames.values()}) == 4  # four different pictures, not one
    off_bos = np.tril(np.ones((12, 12), bool), -1)
    off_bos[:, 0] = False  # the cells a weak head's story is in: below the diagonal, BOS column left out
    assert frames["head"][off_bos].mean() < frames["one"][off_bos].mean() - 40  # weak head: darker, i.e. visible
    page.select_option(".ipl-gamma", "0.5")  # on scale "one", the last chosen
    assert page.evaluate(f"{MODEL}.get('gamma')") == 0.5
    assert big_pixels(page)[off_bos].mean() < frames["one"][off_bos].mean() - 15
    assert "^0.5" in page.inner_text(".ipl-legend")


def test_attention_axes_are_labelled_with_tokens_and_thinned(open_html: Callable, causal_pattern: Callable) -> None:
    few = [f"w{i}" for i in range(8)]
    page = open_html(AttentionView(few, causal_pattern(1, 1, 8)[0]).to_html(), "few.html").page
    assert page.locator(".ipl-axis-y .ipl-axis-label").all_inner_texts() == few
    assert page.locator(".ipl-axis-x .ipl-axis-label").all_inner_texts() == few

    many = [f"w{i}" for i in range(100)]
    page = open_html(AttentionView(many, causal_pattern(1, 1, 100)[0]).to_html(), "many.html").page
    labels = page.locator(".ipl-axis-y .ipl-axis-label")
    assert 10 <= labels.count() < 100  # thinned
    tops = page.eval_on_selector_all(".ipl-axis-y .ipl-axis-label", "ls => ls.map(l => l.getBoundingClientRect().top)")
    assert min(np.diff(tops)) >= 10  # no two labels overlap
    xs = page.eval_on_selector_all(".ipl-axis-x .ipl-axis-label", "ls => ls.map(l => l.getBoundingClientRect().left)")
    assert len(xs) == len(tops) and min(np.diff(xs)) >= 10


def test_attention_hover_preview_key_column_and_leaving(open_html: Callable, tokens: list[str], causal_pattern: Callable) -> None:
    view = AttentionView(tokens, causal_pattern(2, 3, 5))
    watch = open_html(view.to_html())
    page = watch.page
    selected = page.eval_on_selector(".ipl-big", "c => c.toDataURL()")
    page.hover(".ipl-thumb >> nth=4")
    assert page.inner_text(".ipl-big-label") == "preview: L1H1"
    assert page.eval_on_selector(".ipl-big", "c => c.toDataURL()") != selected
    assert page.evaluate(f"{MODEL}.get('selected_head')") == 0  # a preview selects nothing
    page.mouse.move(5, 880)  # leave the grid
    assert page.inner_text(".ipl-big-label") == "L0H0"
    assert page.eval_on_selector(".ipl-big", "c => c.toDataURL()") == selected

    # Hovering a key outlines its column, not its row.
    page.hover(".ipl-strip-in .ipl-token >> nth=2")
    assert page.is_visible(".ipl-col-marker") and page.is_hidden(".ipl-row-marker")
    assert page.eval_on_selector(".ipl-col-marker", "m => m.style.left") == "40%"
    assert "gets most attention from" in page.inner_text(".ipl-readout")
    inn = backgrounds(page, ".ipl-strip-in .ipl-token")
    assert inn[0] == "rgb(236, 236, 236)" and inn[2].startswith("rgb(") and inn[4].startswith("rgb(")  # query 0 cannot see key 2
    assert set(backgrounds(page, ".ipl-strip-out .ipl-token")) == {""}

    # Leaving a strip and leaving the enlarged head both clear the hover.
    page.mouse.move(5, 880)
    after_strip = (page.is_hidden(".ipl-col-marker"), page.inner_text(".ipl-readout"), set(backgrounds(page, ".ipl-token")))
    box = page.locator(".ipl-big").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.9)
    assert page.is_visible(".ipl-row-marker") and page.is_visible(".ipl-col-marker") and page.is_visible(".ipl-tooltip")
    page.mouse.move(5, 880)
    after_big = (page.is_hidden(".ipl-col-marker"), page.inner_text(".ipl-readout"), set(backgrounds(page, ".ipl-token")))
    assert after_strip == after_big == (True, after_strip[1], {""})
    assert page.is_hidden(".ipl-row-marker") and page.is_hidden(".ipl-tooltip")
    watch.assert_clean()


def test_attention_keyboard(open_html: Callable, tokens: list[str], causal_pattern: Callable) -> None:
    view = AttentionView(tokens, causal_pattern(1, 3, 5)[0])
    page = open_html(view.to_html()).page
    page.focus(".ipl-big")
    page.keyboard.press("ArrowDown")  # first key press lands on cell (0, 0)
    assert "query 0" in page.inner_text(".ipl-tooltip")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    tip = page.inner_text(".ipl-tooltip")
    assert 'query 2 " cat"' in tip and 'key 1 "The"' in tip
    assert 'query 2 " cat" \u2192 key 1 "The"' in page.inner_text(".ipl-readout")
    page.keyboard.press("Escape")
    assert page.is_hidden(".ipl-tooltip") and page.is_hidden(".ipl-row-marker")
    # Thumbnails are buttons: Tab reaches them, Enter selects.
    page.focus(".ipl-thumb >> nth=2")
    assert page.inner_text(".ipl-big-label") == "preview: H2"
    page.keyboard.press("Enter")
    assert page.evaluate(f"{MODEL}.get('selected_head')") == 2
    # Strips: arrows walk the tokens.
    page.focus(".ipl-strip-out .ipl-tokens")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute(".ipl-strip-out .ipl-token.ipl-active", "data-index") == "1"


def test_token_view_hover_and_series_selector(open_html: Callable, tokens: list[str]) -> None:
    view = TokenView(tokens, {"act": np.array([0.0, 0.25, 0.5, 0.75, 1.0]), "probe": np.array([-2.0, -1.0, 0.0, 1.0, 2.0])})
    watch = open_html(view.to_html())
    page = watch.page
    assert page.locator(".ipl-token").count() == 5
    page.hover(".ipl-token >> nth=1")
    assert "act: 0.250" in page.inner_text(".ipl-tooltip")
    assert 'act at 1 "The": 0.250' in page.inner_text(".ipl-readout")
    first = backgrounds(page, ".ipl-token")
    page.select_option(".ipl-series", "1")
    assert page.evaluate(f"{MODEL}.get('selected_series')") == 1
    second = backgrounds(page, ".ipl-token")
    assert second != first
    assert second[0] != second[4]  # diverging: negative red, positive blue
    assert second[2] == "rgb(255, 255, 255)"  # zero is white
    watch.assert_clean()


def test_patching_heatmap_click_selects_cell(open_html: Callable) -> None:
    values = np.arange(12.0).reshape(3, 4) - 6
    view = PatchingHeatmap(values, ["L0", "L1", "L2"], ["a", "b", "c", "d"], col_title="pos")
    watch = open_html(view.to_html())
    page = watch.page
    assert page.eval_on_selector(".ipl-heat", "c => [c.width, c.height]") == [4, 3]
    assert page.locator(".ipl-ylabel").count() == 3 and page.locator(".ipl-xlabel").count() == 4
    box = page.locator(".ipl-heat").bounding_box()
    x, y = box["x"] + box["width"] * (2.5 / 4), box["y"] + box["height"] * (1.5 / 3)
    page.mouse.move(x, y)
    tip = page.inner_text(".ipl-tooltip")
    assert "layer: L1" in tip and "pos: c" in tip and "value: 0.000" in tip
    assert page.is_hidden(".ipl-marker")
    page.mouse.click(x, y)
    assert page.evaluate(f"{MODEL}.get('selected')") == [1, 2]
    assert page.is_visible(".ipl-marker")
    assert "selected layer L1, pos c" in page.inner_text(".ipl-selection")
    watch.assert_clean()


def test_logit_lens_cells_targets_and_pin(open_html: Callable) -> None:
    vocab = ["a", "b", "c", "d"]
    logits = np.log(np.array([[[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], [[0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]]]))
    view = LogitLensView.from_logits(["x", "y"], logits, vocab, targets=[3, 0], k=2)
    watch = open_html(view.to_html())
    page = watch.page
    assert page.locator(".ipl-cell").count() == 4
    assert page.locator(".ipl-cell.ipl-hit").count() == 2  # (0,0) predicts d, (0,1) predicts a
    assert page.inner_text(".ipl-cell >> nth=3").replace("\n", "") == "d#2"  # layer 1, pos 1: a ties for 2nd
    assert page.locator(".ipl-target").all_inner_texts() == ["d", "a"]
    page.hover(".ipl-cell >> nth=2")
    assert '1. "a" 0.400' in page.inner_text(".ipl-tooltip")
    page.click(".ipl-cell >> nth=2")
    assert page.evaluate(f"{MODEL}.get('selected')") == [1, 0]
    assert "target \"d\": rank 4" in page.inner_text(".ipl-detail")
    watch.assert_clean()


def test_feature_dashboard_contexts_histogram_logits(open_html: Callable) -> None:
    view = FeatureDashboard(
        [["a", "b", "c"], ["d", "e"]],
        [np.array([0.1, 2.0, 0.3]), np.array([0.5, 0.0])],
        activation_sample=np.array([0.0, 0.5, 1.0, 1.5, 2.0]),
        bins=4,
        logit_effects=np.array([1.0, -1.0, 0.5]),
        vocab=["x", "y", "z"],
        k=2,
        title="feature 3",
        label="letters",
    )
    watch = open_html(view.to_html())
    page = watch.page
    assert page.locator(".ipl-context").count() == 2
    assert page.locator(".ipl-contexts .ipl-token").count() == 5
    assert page.locator(".ipl-peak").all_inner_texts() == ["b", "d"]
    assert page.locator(".ipl-bar").count() == 4
    assert page.locator(".ipl-logit-row").count() == 4
    assert "letters" in page.inner_text(".ipl-title")
    page.hover(".ipl-contexts .ipl-token >> nth=1")
    assert "activation 2.00" in page.inner_text(".ipl-tooltip")
    page.click(".ipl-context >> nth=1")
    assert page.evaluate(f"{MODEL}.get('selected_context')") == 1
    assert 'peak 0.500 at token 0 "d"' in page.inner_text(".ipl-readout")
    page.hover(".ipl-bar >> nth=0")
    assert "count 1" in page.inner_text(".ipl-tooltip")
    watch.assert_clean()


def test_many_views_on_one_page_and_a_repeated_output(open_html: Callable, view_builder: Callable) -> None:
    fragments = [view_builder(kind).to_html(full_document=False) for kind in
                 ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView", "AttentionView"]]
    fragments.append(fragments[0])  # the same output twice, as after re-displaying a cell
    html = "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>" + "".join(fragments) + "</body></html>"
    watch = open_html(html, "page.html")
    page = watch.page
    assert page.locator(".ipl-attention").count() == 3
    assert page.locator(".ipl-root").count() == 7
    assert page.locator("style[data-ipl-css]").count() == 5  # one stylesheet per view class
    # The two copies of one output have separate models: a click in one leaves the other alone.
    page.click(".ipl-attention >> nth=2 >> .ipl-thumb >> nth=3")
    selected = page.eval_on_selector_all(".ipl-attention .ipl-thumb.ipl-selected", "els => els.map(e => e.dataset.head)")
    assert selected == ["0", "0", "3"]
    watch.assert_clean()


# ---------------------------------------------------------------- PatchingHeatmap


def test_patching_small_grid_gets_big_cells_with_values_and_clipped_marks(open_html: Callable) -> None:
    values = np.array([[0.1, -0.5, 2.0, 0.02], [0.3, 0.9, -1.5, 0.0]])
    long_label = "a very long position label that cannot fit"
    view = PatchingHeatmap(values, ["L0", "L1"], [long_label, "b", "c", "d"], quantity="logit diff recovered", vmax=1.0)
    watch = open_html(view.to_html())
    page = watch.page
    box = page.locator(".ipl-heat").bounding_box()
    assert box["width"] >= 4 * 56 and box["height"] >= 2 * 56  # chapter 02's 2x4 grid was 112 x 56 px
    texts = page.locator(".ipl-value").all_inner_texts()
    assert texts == ["0.100", "-0.500", "\u25b22.00", "0.020", "0.300", "0.900", "\u25bc-1.50", "0.000"]
    assert page.locator(".ipl-value.ipl-clipped").count() == 2
    assert "2 cell(s) beyond \u00b11.00" in page.inner_text(".ipl-clip-note")
    legend = page.inner_text(".ipl-legend")
    assert "logit diff recovered" in legend and "\u2265 1.00" in legend
    label = page.locator(".ipl-xlabel >> nth=0")
    assert label.get_attribute("title") == long_label
    assert page.eval_on_selector(".ipl-xlabel", "e => e.scrollWidth > e.clientWidth")  # cut with an ellipsis
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.25)
    assert "logit diff recovered: 2.00 (beyond \u00b11.00: colour clipped)" in page.inner_text(".ipl-tooltip")
    watch.assert_clean()


def test_patching_keyboard_and_clearable_selection(open_html: Callable) -> None:
    view = PatchingHeatmap(np.arange(6.0).reshape(2, 3), ["L0", "L1"], ["a", "b", "c"])
    page = open_html(view.to_html()).page
    assert page.is_hidden(".ipl-clear")
    page.focus(".ipl-plot")
    for key in ["ArrowDown", "ArrowDown", "ArrowRight", "ArrowRight"]:  # first press shows the cursor at (0, 0)
        page.keyboard.press(key)
    assert page.is_visible(".ipl-cursor") and "position: c" in page.inner_text(".ipl-tooltip")
    page.keyboard.press("Enter")
    assert page.evaluate(f"{MODEL}.get('selected')") == [1, 2]
    page.keyboard.press("Escape")
    assert page.evaluate(f"{MODEL}.get('selected')") is None
    assert page.is_hidden(".ipl-marker")
    box = page.locator(".ipl-heat").bounding_box()
    page.mouse.click(box["x"] + 5, box["y"] + 5)
    assert page.evaluate(f"{MODEL}.get('selected')") == [0, 0] and page.is_visible(".ipl-clear")
    page.click(".ipl-clear")
    assert page.evaluate(f"{MODEL}.get('selected')") is None and page.is_hidden(".ipl-clear")


# ---------------------------------------------------------------- LogitLensView


def chapter02_like_lens() -> LogitLensView:
    rng = np.random.default_rng(0)
    tokens = ["<bos>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John", " gave", " a", " drink", " to"]
    vocab = [" Mary", " John", " the", " store", " drink", " something_quite_long", " a", " to", ",", " gave"]
    return LogitLensView.from_logits(tokens, rng.standard_normal((3, 15, 10)) * 3, vocab, targets=rng.integers(0, 10, 15), k=3,
                                     layer_labels=["embed", "L0", "L1"])


def test_logit_lens_fits_an_836px_output(watched_page: Any, tmp_path: Any) -> None:
    page = watched_page.page
    page.set_viewport_size({"width": 836 + 16, "height": 700})  # body margin 8 px each side
    path = tmp_path / "lens.html"
    path.write_text(chapter02_like_lens().to_html(), encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_selector(".ipl-cell")
    widths = page.eval_on_selector(".ipl-scroll", "s => [s.scrollWidth, s.clientWidth]")
    assert widths[0] <= widths[1], widths  # all 15 positions, END included, without scrolling
    last = page.locator(".ipl-cell >> nth=44").bounding_box()
    assert last["x"] + last["width"] <= 836 + 8
    # A tooltip at the right edge flips to stay inside the viewport.
    page.mouse.move(last["x"] + last["width"] - 2, last["y"] + 3)
    tip = page.locator(".ipl-tooltip").bounding_box()
    assert tip["x"] >= 0 and tip["x"] + tip["width"] <= 852
    watched_page.assert_clean()


def test_logit_lens_scrolls_with_a_sticky_layer_column_and_keyboard(watched_page: Any, tmp_path: Any) -> None:
    page = watched_page.page
    page.set_viewport_size({"width": 420, "height": 700})
    path = tmp_path / "lens.html"
    path.write_text(chapter02_like_lens().to_html(), encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_selector(".ipl-cell")
    assert page.eval_on_selector(".ipl-scroll", "s => s.scrollWidth > s.clientWidth")  # too narrow: it scrolls
    scroller_x = page.locator(".ipl-scroll").bounding_box()["x"]
    page.eval_on_selector(".ipl-scroll", "s => { s.scrollLeft = s.scrollWidth; }")
    layer = page.locator("th.ipl-layer >> nth=1").bounding_box()
    assert abs(layer["x"] - scroller_x) < 2  # still in view at the left edge
    assert page.is_hidden(".ipl-clear")
    page.focus(".ipl-lens")
    for key in ["ArrowDown", "ArrowDown", "End"]:
        page.keyboard.press(key)
    assert page.get_attribute(".ipl-cell.ipl-cursor", "data-pos") == "14"
    tip = page.locator(".ipl-tooltip").bounding_box()
    assert tip["x"] >= 0 and tip["x"] + tip["width"] <= 420
    page.keyboard.press("Enter")
    assert page.evaluate(f"{MODEL}.get('selected')") == [1, 14]
    page.click(".ipl-clear")
    assert page.evaluate(f"{MODEL}.get('selected')") is None
    watched_page.assert_clean()


# ---------------------------------------------------------------- TokenView


def test_token_view_loss_series_nan_and_readout_follows_series(open_html: Callable, tokens: list[str]) -> None:
    view = TokenView(tokens, {"loss": np.array([2.0, 1.0, np.nan, 0.5]), "act": np.array([0.1, 0.2, 0.3, 0.4, 0.5])})
    watch = open_html(view.to_html())
    page = watch.page
    bgs = backgrounds(page, ".ipl-token")
    assert bgs[0] == bgs[3] == "rgb(236, 236, 236)"  # no value at token 0 (loss is one shorter) and the NaN
    assert "grey: no value (2 tokens)" in page.inner_text(".ipl-novalue-note")
    page.hover(".ipl-token >> nth=0")
    assert 'loss at 0 "<bos>": no value' in page.inner_text(".ipl-readout")
    page.hover(".ipl-token >> nth=1")
    assert 'loss at 1 "The": 2.00' in page.inner_text(".ipl-readout")
    page.select_option(".ipl-series", "1")
    assert 'act at 1 "The": 0.200' in page.inner_text(".ipl-readout")  # updated without moving the mouse
    assert page.inner_text(".ipl-novalue-note") == ""
    page.evaluate(f"{MODEL}.set('selected_series', 0)")  # a change from Python
    assert 'loss at 1 "The": 2.00' in page.inner_text(".ipl-readout")
    page.mouse.move(5, 880)  # leaving clears the hover...
    assert "Hover a token" in page.inner_text(".ipl-readout")
    page.focus(".ipl-tokens")  # ...and the keyboard starts at token 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert 'loss at 1 "The"' in page.inner_text(".ipl-readout")
    page.keyboard.press("Escape")
    assert "Hover a token" in page.inner_text(".ipl-readout")
    watch.assert_clean()


def test_control_characters_are_shown_escaped_and_kept_exactly(open_html: Callable) -> None:
    tokens = ["\x00", "a\x1b", "\r\n", " b", "\\u0001\x01"]  # the last: a real backslash, then \x01
    view = TokenView(tokens, np.arange(5.0))
    page = open_html(view.to_html()).page
    assert page.locator(".ipl-token").all_inner_texts() == ["\\x00", "a\\x1b", "\\x0d\u21b5", "\u00a0b", "\\u0001\\x01"]
    assert page.evaluate(f"{MODEL}.get('tokens')") == tokens
    page.hover(".ipl-token >> nth=0")
    assert '"\\x00" (0)' in page.inner_text(".ipl-tooltip")  # shown as on the token
    page.hover(".ipl-token >> nth=4")
    assert '"\\\\u0001\\x01" (4)' in page.inner_text(".ipl-tooltip")  # an escaped backslash stays one


# ---------------------------------------------------------------- FeatureDashboard


def test_feature_dashboard_legend_log_histogram_density_and_keyboard(open_html: Callable) -> None:
    sample = np.concatenate([np.zeros(900), np.full(99, 0.5), [10.0]])  # one rare high activation
    view = FeatureDashboard([["a", "b"], ["c", "d"]], [np.array([0.5, 10.0]), np.array([0.2, 0.1])], activation_sample=sample, bins=10)
    watch = open_html(view.to_html())
    page = watch.page
    assert "token colour: activation" in page.inner_text(".ipl-feature > .ipl-controls")
    heights = page.eval_on_selector_all(".ipl-bar", "bars => bars.map(b => Number(b.getAttribute('height')))")
    assert heights[0] > 0 and heights[-1] > 0.1 * heights[0]  # log scale: 1 vs 99 is not invisible
    assert heights[-1] == pytest.approx(heights[0] * np.log10(2) / np.log10(100), rel=0.01)
    ticks = page.eval_on_selector_all(".ipl-hist-svg text", "ts => ts.map(t => t.textContent)")
    assert {"1", "10", "count (log)", "activation"} <= set(ticks)
    page.hover(".ipl-bar-hit >> nth=9")  # the tail bin is hoverable over its full height
    assert "count 1" in page.inner_text(".ipl-tooltip")
    assert "active (> 0) on 10.00% of sampled tokens (1 in 10)" in page.inner_text(".ipl-density")
    page.focus(".ipl-context >> nth=0")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert page.evaluate(f"{MODEL}.get('selected_context')") == 1
    page.keyboard.press("Escape")
    assert page.evaluate(f"{MODEL}.get('selected_context')") == -1
    page.click(".ipl-context >> nth=0")
    page.click(".ipl-clear")
    assert page.evaluate(f"{MODEL}.get('selected_context')") == -1
    watch.assert_clean()


def test_feature_dashboard_dense_unit_density_text(open_html: Callable) -> None:
    view = FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.linspace(-1, 1, 101))
    page = open_html(view.to_html()).page
    assert "a dense unit" in page.inner_text(".ipl-density")
    assert "non-zero density 1.00" not in page.inner_text(".ipl-feature")
    assert view.density_text() == page.inner_text(".ipl-density")


# ---------------------------------------------------------------- theme and static pictures

DARK = {"--jp-layout-color0": "rgb(17, 17, 17)", "--jp-ui-font-color1": "rgb(230, 230, 230)", "--jp-layout-color2": "rgb(66, 66, 66)"}


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_every_view_follows_the_jupyterlab_theme(open_html: Callable, view_builder: Callable, dark: bool) -> None:
    kinds = ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView"]
    style = ""
    if dark:
        style = "<style>:root{" + ";".join(f"{k}:{v}" for k, v in DARK.items()) + "}</style>"
    body = '<body data-jp-theme-light="false">' if dark else "<body>"
    html = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head>{body}" + "".join(
        view_builder(k).to_html(full_document=False) for k in kinds) + "</body></html>"
    watch = open_html(html, "theme.html")
    page = watch.page
    colours = page.eval_on_selector_all(".ipl-root", "els => els.map(e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color])")
    expected = (DARK["--jp-layout-color0"], DARK["--jp-ui-font-color1"]) if dark else ("rgb(255, 255, 255)", "rgb(34, 34, 34)")
    assert colours == [list(expected)] * len(kinds)
    # The data colours follow too: zero attention is near the background, not a white square.
    corner = page.eval_on_selector(".ipl-big", "c => Array.from(c.getContext('2d').getImageData(c.width - 1, 0, 1, 1).data)")
    masked_dark = corner[:3] == [64, 64, 64]
    assert masked_dark == dark
    watch.assert_clean()


def test_static_pictures_show_without_javascript(browser: Any, view_builder: Callable, tmp_path: Any) -> None:
    """What GitHub or an untrusted notebook shows: the text/html fallback with scripts off."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        html = "".join(view_builder(k)._repr_mimebundle_()[0]["text/html"] for k in
                       ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView"])
        path = tmp_path / "static.html"
        path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{html}</body></html>", encoding="utf-8")
        page.goto(path.as_uri())
        boxes = page.eval_on_selector_all("[data-ipl-static]", "els => els.map(e => [e.dataset.iplStatic, e.offsetWidth, e.offsetHeight])")
        assert [b[0] for b in boxes] == ["AttentionView", "TokenView", "FeatureDashboard", "PatchingHeatmap", "LogitLensView"]
        assert all(w > 150 and h > 60 for _, w, h in boxes), boxes
        images = page.eval_on_selector_all("[data-ipl-static] img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 8 + 1 and all(ok and w > 0 for ok, w in images)  # 8 thumbnails + the enlarged head decode
        assert all(u.startswith(("file:", "data:")) for u in requests)
    finally:
        context.close()
