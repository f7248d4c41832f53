"""Python-side contract of the widget kit: traits, validation, wire format, repr."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

from interplab_widgets import AttentionView, FeatureDashboard, LogitLensView, PatchingHeatmap, TokenView
from interplab_widgets._arrays import from_wire

TOKENS = ["<bos>", "The", " cat", " sat", " on"]


# ---------------------------------------------------------------- AttentionView


def test_attention_accepts_torch_tensor_that_requires_grad(causal_pattern: Callable[..., np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    pattern = torch.tensor(causal_pattern(1, 3, 5)[0], dtype=torch.float32, requires_grad=True)
    view = AttentionView(TOKENS, pattern)
    assert view.shape == [1, 3, 5, 5]
    np.testing.assert_allclose(view.pattern[0], pattern.detach().numpy(), atol=1e-3)


def test_attention_accepts_bfloat16_tensor(causal_pattern: Callable[..., np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    pattern = torch.tensor(causal_pattern(1, 2, 5)[0]).to(torch.bfloat16)
    view = AttentionView(TOKENS, pattern)
    np.testing.assert_allclose(view.pattern[0], pattern.float().numpy(), atol=1e-3)


def test_attention_causal_pattern_sends_lower_triangle_as_float16(causal_pattern: Callable[..., np.ndarray]) -> None:
    pattern = causal_pattern(2, 4, 5)
    view = AttentionView(TOKENS, pattern)
    assert view.packing == "causal"
    assert view.dtype == "float16"
    assert isinstance(view.attention, bytes)
    assert len(view.attention) == 2 * 4 * (5 * 6 // 2) * 2
    np.testing.assert_allclose(view.pattern, pattern, atol=1e-3)


def test_attention_dense_pattern_float32_round_trips_exactly() -> None:
    pattern = np.full((2, 5, 5), 0.2, dtype=np.float32)
    view = AttentionView(TOKENS, pattern, dtype="float32")
    assert view.packing == "dense"
    assert len(view.attention) == 2 * 5 * 5 * 4
    np.testing.assert_array_equal(from_wire(view.attention, "float32", view.shape)[0], pattern)


def test_attention_head_labels_default_and_custom(causal_pattern: Callable[..., np.ndarray]) -> None:
    assert AttentionView(TOKENS, causal_pattern(1, 2, 5)[0]).head_labels == ["H0", "H1"]
    assert AttentionView(TOKENS, causal_pattern(2, 2, 5)).head_labels == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert AttentionView(TOKENS, causal_pattern(1, 2, 5)[0], ["prev", "ind"]).head_labels == ["prev", "ind"]


def test_attention_tensor_travels_as_binary_buffer_not_json(causal_pattern: Callable[..., np.ndarray]) -> None:
    view = AttentionView(TOKENS, causal_pattern(1, 2, 5)[0])
    state, buffer_paths, buffers = _remove_buffers(view.get_state())
    assert ["attention"] in buffer_paths
    assert all(isinstance(b, (bytes, memoryview)) for b in buffers)
    assert "attention" not in state


@pytest.mark.parametrize(
    ("attention", "tokens", "match"),
    [
        (np.zeros((5, 5)), TOKENS, r"expected shape \[heads, query, key\] or \[layers, heads, query, key\], got 2-D"),
        (np.zeros((1, 2, 3, 5, 5)), TOKENS, r"It looks batched: drop the batch axis, e.g. attention\[0\]"),
        (np.zeros((2, 5, 4)), TOKENS, r"axis 2 has length 4 but there are 5 tokens \(key axis\)"),
        (np.zeros((2, 4, 5)), TOKENS, r"axis 1 has length 4 but there are 5 tokens \(query axis\)"),
        (np.full((2, 5, 5), np.nan), TOKENS, r"non-finite .*np.nan_to_num"),
        (np.full((2, 5, 5), np.inf), TOKENS, r"non-finite"),
        (np.full((2, 5, 5), -0.5), TOKENS, r"negative values .*hook_pattern"),
        (np.zeros((2, 5, 5)), "The cat sat on mat", r"got one str"),
        (np.zeros((2, 5, 5)), [1, 2, 3, 4, 5], r"item 0 is int, expected str"),
        (np.array([["a"]]), TOKENS, r"expected numbers"),
    ],
)
def test_attention_rejects_bad_input(attention: np.ndarray, tokens: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttentionView(tokens, attention)  # type: ignore[arg-type]


def test_attention_caps_name_the_cap_and_how_to_slice(monkeypatch: pytest.MonkeyPatch, causal_pattern: Callable[..., np.ndarray]) -> None:
    monkeypatch.setattr(AttentionView, "MAX_TOKENS", 4)
    with pytest.raises(ValueError, match=r"too many tokens: 5 > cap 4\. Slice the sequence, e\.g\. tokens\[:512\]"):
        AttentionView(TOKENS, causal_pattern(1, 1, 5)[0])
    monkeypatch.setattr(AttentionView, "MAX_TOKENS", 1024)
    monkeypatch.setattr(AttentionView, "MAX_HEADS", 3)
    with pytest.raises(ValueError, match=r"too many heads \(layers x heads\): 4 > cap 3\. .*attention\[:4\]"):
        AttentionView(TOKENS, causal_pattern(2, 2, 5))
    monkeypatch.setattr(AttentionView, "MAX_HEADS", 576)
    monkeypatch.setattr(AttentionView, "MAX_VALUES", 10)
    with pytest.raises(ValueError, match=r"too many attention values: 25 > cap 10"):
        AttentionView(TOKENS, causal_pattern(1, 1, 5)[0])


def test_attention_rejects_bad_options(causal_pattern: Callable[..., np.ndarray]) -> None:
    pattern = causal_pattern(1, 2, 5)[0]
    with pytest.raises(ValueError, match=r"head_labels: got 1 labels for 2 heads"):
        AttentionView(TOKENS, pattern, ["only one"])
    with pytest.raises(ValueError, match=r"scale must be one of"):
        AttentionView(TOKENS, pattern, scale="max")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        AttentionView(TOKENS, pattern, dtype="float64")
    with pytest.raises(ValueError, match=r"selected_head must be in \[0, 2\)"):
        AttentionView(TOKENS, pattern, selected_head=2)


# ---------------------------------------------------------------- repr


EXPECTED_REPRS = {
    "AttentionView": "AttentionView(2 layers x 4 heads, 5 tokens)",
    "TokenView": "TokenView(2 series, 5 tokens)",
    "FeatureDashboard": "FeatureDashboard(feature 7 'cats': 2 contexts, histogram 40 bins, top 3 logits)",
    "PatchingHeatmap": "PatchingHeatmap(3 layer x 5 position)",
    "LogitLensView": "LogitLensView(3 layers x 5 positions, top 3, with targets)",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_REPRS))
def test_repr_is_deterministic_and_is_jupyters_text_plain(kind: str, view_builder: Callable[[str], Any]) -> None:
    from IPython.lib.pretty import pretty

    view, again, expected = view_builder(kind), view_builder(kind), EXPECTED_REPRS[kind]
    assert repr(view) == expected
    assert repr(again) == expected
    assert pretty(view) == expected
    bundle, _ = view._repr_mimebundle_()
    assert bundle["text/plain"] == expected
    assert bundle["text/html"] == again._repr_mimebundle_()[0]["text/html"]  # deterministic fallback


def test_repr_without_layers_axis(causal_pattern: Callable[..., np.ndarray]) -> None:
    assert repr(AttentionView(TOKENS, causal_pattern(1, 3, 5)[0])) == "AttentionView(3 heads, 5 tokens)"


@pytest.mark.parametrize("kind", sorted(EXPECTED_REPRS))
def test_mime_bundle_has_a_static_picture_for_viewers_without_widgets(kind: str, view_builder: Callable[[str], Any]) -> None:
    """nbconvert / nbviewer / GitHub show text/html when there is no widget state: it must need no script."""
    view = view_builder(kind)
    bundle, _ = view._repr_mimebundle_()
    html = bundle["text/html"]
    assert html == view.static_html()
    assert html.startswith(f'<div data-ipl-static="{kind}"')
    assert "<script" not in html and "<style" not in html  # sanitisers strip both
    assert " id=" not in html and "ipl-" not in html.replace("data-ipl-static", "")  # no ids to collide on a page
    assert "static picture" in html
    assert len(html) < 16_000, len(html)  # a small output, not the data a second time


def test_static_picture_size_stays_small_for_a_chapter_sized_view(causal_pattern: Callable[..., np.ndarray]) -> None:
    tokens = [f"t{i}" for i in range(21)]
    view = AttentionView(tokens, causal_pattern(2, 4, 21))
    assert len(view._repr_mimebundle_()[0]["text/html"]) < 20_000
    big = AttentionView([f"t{i}" for i in range(300)], causal_pattern(1, 2, 300))
    assert len(big.static_html()) < 120_000  # thumbnails and the enlarged head are pooled down


def test_html_fallback_modes(monkeypatch: pytest.MonkeyPatch, view_builder: Callable[[str], Any]) -> None:
    view = view_builder("PatchingHeatmap")
    monkeypatch.setattr(type(view), "html_fallback", "interactive")
    html = view._repr_mimebundle_()[0]["text/html"]
    assert html.startswith('<div id="ipl-') and html == view.to_html(full_document=False)
    monkeypatch.setattr(type(view), "html_fallback", "none")
    assert "text/html" not in view._repr_mimebundle_()[0]
    monkeypatch.setattr(type(view), "html_fallback", "pdf")
    with pytest.raises(ValueError, match=r"html_fallback must be one of"):
        view._repr_mimebundle_()


def test_importing_the_kit_never_imports_torch() -> None:
    code = "import sys, interplab_widgets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- TokenView


def test_tokenview_series_forms() -> None:
    one = TokenView(TOKENS, np.arange(5.0))
    assert one.shape == [1, 5] and one.series_names == ["series 0"]
    many = TokenView(TOKENS, np.ones((3, 5)), ["a", "b", "c"])
    assert many.shape == [3, 5] and len(many.values) == 3 * 5 * 4
    named = TokenView(TOKENS, {"loss": np.arange(5.0), "probe": -np.arange(5.0)})
    assert named.series_names == ["loss", "probe"]
    np.testing.assert_array_equal(named.array[1], -np.arange(5.0))


@pytest.mark.parametrize(
    ("values", "names", "match"),
    [
        (np.ones(3), None, r"axis 0 has length 3 but there are 5 tokens \(or one fewer: a next-token loss\)"),
        (np.ones(6), None, r"axis 0 has length 6 but there are 5 tokens"),
        (np.ones((2, 2, 5)), None, r"expected shape \[tokens\] or \[series, tokens\], got 3-D"),
        (np.array([1, 2, np.inf, 4, 5]), None, r"values: value at index 2 is inf; use NaN for \"no value\""),
        (np.ones((2, 5)) + 1j, None, r"values: expected real numbers, got complex dtype complex128; .*np.abs\(values\)"),
        (np.ones((2, 5)), ["only"], r"series_names: got 1 names for 2 series"),
        ({"a": np.ones(3)}, None, r"values\['a'\]: axis 0 has length 3 but there are 5 tokens"),
        ({"a": np.array([1.0, -np.inf, 0, 0, 0])}, None, r"values\['a'\]: value at index 1 is -inf"),
        (np.ones((0, 5)), None, r"no series given"),
    ],
)
def test_tokenview_rejects_bad_input(values: object, names: list[str] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenView(TOKENS, values, names)


def test_tokenview_loss_series_one_shorter_and_nan_as_no_value() -> None:
    loss = np.array([2.0, 1.0, 0.5, 0.25])  # loss of predicting tokens 1..4
    view = TokenView(TOKENS, {"loss": loss, "probe": np.array([np.nan, 1.0, -1.0, np.nan, 0.0])})
    assert view.shape == [2, 5]
    assert np.isnan(view.array[0, 0]) and view.array[0, 1:].tolist() == loss.tolist()  # entry i colours token i + 1
    assert np.isnan(view.array[1, [0, 3]]).all()
    t, signed, vmax = view.colours(0)
    assert not signed and vmax == 2.0 and np.isnan(t[0])
    html = view.static_html()
    assert html.count("no value") >= 2 and "grey</span>: no value" in html
    all_nan = TokenView(TOKENS[:2], np.array([np.nan, np.nan]))
    assert np.isnan(all_nan.array).all() and all_nan.colours()[2] == 1.0


def test_tokenview_keeps_token_strings_exactly() -> None:
    tokens = ["\x00", "a\x00", "\r\n", "\x1b[0m", " ", "\u200b", "</span>"]
    view = TokenView(tokens, np.arange(7.0))
    assert view.tokens == tokens
    assert view.get_state()["tokens"] == tokens
    html = view.static_html()
    assert "\\x00" in html and "\\x1b[0m" in html  # control characters shown escaped...
    assert "\x00" not in html and "\x1b" not in html and "\r" not in html  # ...never raw in the page
    assert "&lt;/span&gt;" in html


def test_tokenview_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TokenView, "MAX_SERIES", 2)
    with pytest.raises(ValueError, match=r"too many series: 3 > cap 2\. Pass fewer series, e.g\. values\[:16\]"):
        TokenView(TOKENS, np.ones((3, 5)))


# ---------------------------------------------------------------- PatchingHeatmap


def test_patching_selection_syncs_back_as_a_tuple() -> None:
    view = PatchingHeatmap(np.arange(6.0).reshape(2, 3) - 2, ["L0", "L1"], ["a", "b", "c"])
    seen: list[object] = []
    view.observe(lambda change: seen.append(change["new"]), names="selected")
    assert view.selected is None and view.selected_labels is None
    view.set_state({"selected": [1, 2]})  # what the browser sends: a JSON list
    assert view.selected == (1, 2)
    assert view.selected_labels == ("L1", "c")
    assert seen == [(1, 2)]
    with pytest.raises(traitlets.TraitError, match=r"outside the 2 x 3 grid"):
        view.selected = (2, 0)
    assert view.vmax == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("values", "rows", "cols", "match"),
    [
        (np.ones(4), None, None, r"expected shape \[rows, cols\], got 1-D"),
        (np.ones((2, 3)), ["a"], None, r"row_labels: got 1 labels for an axis of length 2"),
        (np.ones((2, 3)), None, ["a", "b"], r"col_labels: got 2 labels for an axis of length 3"),
        (np.array([[1.0, np.inf]]), None, None, r"non-finite"),
    ],
)
def test_patching_rejects_bad_input(values: np.ndarray, rows: list[str] | None, cols: list[str] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PatchingHeatmap(values, rows, cols)


def test_patching_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PatchingHeatmap, "MAX_CELLS", 5)
    with pytest.raises(ValueError, match=r"too many cells: 6 > cap 5\. Slice it"):
        PatchingHeatmap(np.ones((2, 3)))


# ---------------------------------------------------------------- LogitLensView


def test_logit_lens_from_logits_computes_topk_and_target_rank() -> None:
    vocab = ["a", "b", "c", "d"]
    logits = np.log(np.array([[[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]]))  # 1 layer, 2 positions
    view = LogitLensView.from_logits(["x", "y"], logits, vocab, targets=[1, 0], k=2)
    assert view.top(0, 0) == [("d", pytest.approx(0.4)), ("c", pytest.approx(0.3))]
    assert view.target_tokens == ["b", "a"]
    ranks = from_wire(view.target_ranks, "int32", (1, 2))
    probs = from_wire(view.target_probs, "float32", (1, 2))
    np.testing.assert_array_equal(ranks, [[2, 0]])
    np.testing.assert_allclose(probs, [[0.2, 0.7]], rtol=1e-5)
    assert view.color_by == "target"


def test_logit_lens_string_table_dedupes_predictions() -> None:
    top_tokens = [[["a", "b"], ["a", "b"]], [["b", "a"], ["a", "b"]]]
    view = LogitLensView(["x", "y"], top_tokens, np.full((2, 2, 2), 0.5))
    assert view.strings == ["a", "b"]
    assert len(view.top_index) == 2 * 2 * 2 * 4
    assert view.top(1, 0) == [("b", 0.5), ("a", 0.5)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_probs": np.full((1, 2, 1), 2.0)}, r"probabilities must lie in \[0, 1\]; apply softmax"),
        ({"top_probs": np.full((1, 3, 1), 0.5)}, r"axis 1 has length 3 but there are 2 tokens"),
        ({"top_tokens": [[["a"], ["b"], ["c"]]]}, r"top_tokens: shape \(1, 3, 1\) must equal"),
        ({"target_tokens": ["a", "b"]}, r"go together: pass all three or none"),
        ({"layer_labels": ["x", "y"]}, r"layer_labels: got 2 labels for 1 layers"),
    ],
)
def test_logit_lens_rejects_bad_input(kwargs: dict, match: str) -> None:
    args = {"tokens": ["x", "y"], "top_tokens": [[["a"], ["b"]]], "top_probs": np.full((1, 2, 1), 0.5)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LogitLensView(**args)


def test_logit_lens_from_logits_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match=r"targets: token ids must be in \[0, 3\)"):
        LogitLensView.from_logits(["x"], np.zeros((1, 1, 3)), ["a", "b", "c"], targets=[3], k=1)
    with pytest.raises(ValueError, match=r"axis 2 has length 3 but there are 2 vocab strings"):
        LogitLensView.from_logits(["x"], np.zeros((1, 1, 3)), ["a", "b"])


# ---------------------------------------------------------------- FeatureDashboard


def test_feature_dashboard_summarises_in_python() -> None:
    sample = np.array([0.0, 0.0, 0.5, 1.0, 0.0, 2.0])
    effects = np.array([0.5, -2.0, 3.0, 0.0])
    view = FeatureDashboard([["a", "b"], ["c"]], [np.array([0.1, 0.9]), np.array([0.4])], activation_sample=sample,
                            bins=4, logit_effects=effects, vocab=["w", "x", "y", "z"], k=2)
    assert view.density == pytest.approx(0.5)
    assert from_wire(view.hist_counts, "float32", (4,)).sum() == 3  # only non-zero activations
    assert view.promoted_tokens == ["y", "w"]
    assert view.suppressed_tokens == ["x", "z"]
    np.testing.assert_allclose(from_wire(view.promoted_values, "float32", (2,)), [3.0, 0.5])
    assert [a.tolist() for a in view.context_activations] == [pytest.approx([0.1, 0.9]), pytest.approx([0.4])]
    assert view.context_tokens == ["a", "b", "c"] and view.context_lengths == [2, 1]


def test_feature_dashboard_accepts_padded_array_and_signed_histogram() -> None:
    view = FeatureDashboard([["a", "b"], ["c", "d"]], np.array([[1.0, -1.0], [0.0, 2.0]]), activation_sample=np.array([-1.0, 0.0, 1.0]), bins=2)
    assert from_wire(view.hist_counts, "float32", (2,)).sum() == 3  # negatives present: all values
    assert view.promoted_tokens == []


@pytest.mark.parametrize(
    ("contexts", "acts", "kwargs", "match"),
    [
        ([["a", "b"]], [np.ones(3)], {}, r"activations\[0\]: has 3 values but contexts\[0\] has 2 tokens"),
        ([["a"], ["b"]], [np.ones(1)], {}, r"got 1 rows for 2 contexts"),
        ([["a"]], [np.array([np.nan])], {}, r"activations\[0\]: contains 1 non-finite"),
        ([["a"]], [np.ones(1)], {"logit_effects": np.ones(3)}, r"logit_effects and vocab go together"),
        ([["a"]], [np.ones(1)], {"logit_effects": np.ones(3), "vocab": ["x"]}, r"has 3 entries but vocab has 1 strings"),
        ([["a"]], [np.ones(1)], {"activation_sample": np.array([np.inf])}, r"activation_sample: contains 1 non-finite"),
        ([], [], {}, r"need at least one context"),
        ("abc", [], {}, r"got one str"),
    ],
)
def test_feature_dashboard_rejects_bad_input(contexts: object, acts: object, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureDashboard(contexts, acts, **kwargs)  # type: ignore[arg-type]


def test_feature_dashboard_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FeatureDashboard, "MAX_CONTEXT_LEN", 2)
    with pytest.raises(ValueError, match=r"too many tokens in contexts\[0\]: 3 > cap 2\. Cut a window"):
        FeatureDashboard([["a", "b", "c"]], [np.ones(3)])
    monkeypatch.setattr(FeatureDashboard, "MAX_CONTEXTS", 1)
    with pytest.raises(ValueError, match=r"too many contexts: 2 > cap 1\. Keep the top ones"):
        FeatureDashboard([["a"], ["b"]], [np.ones(1), np.ones(1)])


# ---------------------------------------------------------------- reliability: no silent truncation


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: AttentionView(TOKENS, np.tril(np.ones((1, 5, 5))) * (1 + 0.5j)), r"attention: expected real numbers, got complex"),
        (lambda: PatchingHeatmap(np.ones((2, 2), np.complex64)), r"values: expected real numbers, got complex dtype complex64; pass .*values\.real"),
        (lambda: LogitLensView.from_logits(["x"], np.zeros((1, 1, 3)) + 1j, ["a", "b", "c"]), r"logits: expected real numbers"),
        (lambda: FeatureDashboard([["a"]], [np.ones(1) * 1j]), r"activations\[0\]: expected real numbers"),
        (lambda: FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.ones(4) + 0j), r"activation_sample: expected real numbers"),
    ],
)
def test_complex_arrays_are_rejected_not_truncated(build: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_complex_tensor_is_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"values: expected real numbers, got complex dtype complex64"):
        PatchingHeatmap(torch.ones(2, 2, dtype=torch.complex64))


def test_non_integer_ids_are_rejected_not_truncated() -> None:
    logits, vocab = np.zeros((1, 2, 6)), ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(ValueError, match=r"targets: expected integer ids, got 1\.5 at index \(1,\); ids are never rounded"):
        LogitLensView.from_logits(["x", "y"], logits, vocab, targets=[0.0, 1.5])
    with pytest.raises(ValueError, match=r"targets: expected integer ids, got booleans"):
        LogitLensView.from_logits(["x", "y"], logits, vocab, targets=np.array([True, False]))
    whole = LogitLensView.from_logits(["x", "y"], logits, vocab, targets=np.array([2.0, 1.0]))  # whole floats are ids
    assert whole.target_tokens == ["c", "b"]
    with pytest.raises(ValueError, match=r"target_ranks: expected integer ids, got 0\.5"):
        LogitLensView(["x"], [[["a"]]], np.full((1, 1, 1), 0.5), target_tokens=["a"], target_probs=np.full((1, 1), 0.5),
                      target_ranks=np.full((1, 1), 0.5))
    with pytest.raises(ValueError, match=r"k: expected an int, got 2\.5"):
        LogitLensView.from_logits(["x", "y"], logits, vocab, k=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bins: expected an int, got 4\.0"):
        FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.ones(3), bins=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"selected_head: expected an int, got 1\.0"):
        AttentionView(TOKENS, np.tril(np.ones((2, 5, 5))), selected_head=1.0)  # type: ignore[arg-type]
    assert AttentionView(TOKENS, np.tril(np.ones((2, 5, 5))), selected_head=np.int64(1)).selected_head == 1


def test_logit_lens_keeps_prediction_strings_exactly() -> None:
    """numpy's str arrays drop trailing NULs; the string table must not."""
    top_tokens = [[["a\x00", "a"], ["\x00", "\r"]]]
    view = LogitLensView(["x\x00", "\x1b"], top_tokens, np.full((1, 2, 2), 0.5))
    assert view.strings == ["a\x00", "a", "\x00", "\r"]
    assert view.top(0, 0) == [("a\x00", 0.5), ("a", 0.5)]
    assert view.tokens == ["x\x00", "\x1b"]
    vocab = ["\x00", "\x00\x00", " "]
    lens = LogitLensView.from_logits(["p"], np.array([[[0.0, 5.0, 1.0]]]), vocab, targets=[0], k=2)
    assert lens.top(0, 0)[0][0] == "\x00\x00" and lens.target_tokens == ["\x00"]


def test_feature_dashboard_keeps_token_strings_exactly() -> None:
    view = FeatureDashboard([["\x00", "a\n"]], [np.ones(2)], logit_effects=np.ones(2), vocab=["\x00", "\t\x00"], k=1)
    assert view.context_tokens == ["\x00", "a\n"]
    assert view.promoted_tokens[0] in ("\x00", "\t\x00")


def test_patching_quantity_names_the_legend() -> None:
    view = PatchingHeatmap(np.array([[0.5, -2.0]]), ["L0"], ["a", "b"], quantity="logit diff recovered", vmax=1.0)
    assert view.quantity == "logit diff recovered"
    html = view.static_html()
    assert "logit diff recovered" in html
    assert "\u25bc-2.00" in html and "clipped" in html  # -2 is beyond -vmax: marked
    assert ">\u25b2" not in html  # 0.5 is inside: no mark (the note names both marks)
    with pytest.raises(ValueError, match=r"vmax must be a finite number"):
        PatchingHeatmap(np.ones((1, 1)), vmax=1j)  # type: ignore[arg-type]


# ---------------------------------------------------------------- AttentionView colour scales


def test_attention_colour_max_leaves_out_first_query_and_bos() -> None:
    from interplab_widgets.attention import colour_max

    pattern = np.array([[[1.0, np.nan, np.nan], [0.9, 0.1, np.nan], [0.7, 0.2, 0.1]],
                        [[1.0, np.nan, np.nan], [0.5, 0.5, np.nan], [0.2, 0.4, 0.4]]])
    assert colour_max(pattern, "head")[:, 0, 0].tolist() == [0.2, 0.5]  # not 1.0: query 0 and BOS are left out
    assert colour_max(pattern, "global")[:, 0, 0].tolist() == [0.5, 0.5]
    assert colour_max(pattern, "one")[:, 0, 0].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(colour_max(pattern, "row")[0, :, 0], [1.0, 0.1, 0.2])  # query 0 has only BOS
    only_bos = np.zeros((1, 3, 3))
    only_bos[0, :, 0] = 1.0
    assert colour_max(only_bos, "head")[0, 0, 0] == 1.0  # nothing else: fall back to the full max


def test_attention_gamma_and_colours() -> None:
    pattern = np.tril(np.ones((1, 3, 3)))
    pattern /= pattern.sum(-1, keepdims=True)
    view = AttentionView(["a", "b", "c"], pattern, gamma=0.5, scale="one", dtype="float32")
    np.testing.assert_allclose(view.colours(0)[2], np.sqrt([1 / 3, 1 / 3, 1 / 3]), rtol=1e-6)
    assert np.isnan(view.colours(0)[0, 1])
    with pytest.raises(ValueError, match=r"gamma must be a number in \[0.05, 20\]"):
        AttentionView(["a", "b", "c"], pattern, gamma=0)
    with pytest.raises(traitlets.TraitError, match=r"gamma must be"):
        view.gamma = -1.0
    with pytest.raises(ValueError, match=r"scale must be one of \('head', 'global', 'row', 'one'\)"):
        AttentionView(["a", "b", "c"], pattern, scale="max")


def test_attention_static_picture_shows_every_head_and_the_selected_one(causal_pattern: Callable[..., np.ndarray]) -> None:
    view = AttentionView(TOKENS, causal_pattern(2, 3, 5), selected_head=4, title="two layers")
    html = view.static_html()
    assert html.count("<img ") == 6 + 1  # thumbnails + the enlarged head
    assert "L1H1 (rows: query, columns: key)" in html and "two layers" in html
    assert "&lt;bos&gt;" in html and "\u00a0cat" in html  # token axes, whitespace made visible
    assert "grey: causally masked" in html


def test_tokenview_set_series_replaces_values_and_names() -> None:
    view = TokenView(TOKENS, np.arange(5.0))
    seen: list[str] = []
    view.observe(lambda change: seen.append(change["name"]), names=["values", "series_names", "shape"])
    view.set_series({"loss": np.ones(4), "probe": -np.ones(5)}, selected_series=1)
    assert view.series_names == ["loss", "probe"] and view.shape == [2, 5] and view.selected_series == 1
    assert np.isnan(view.array[0, 0]) and view.array[1].tolist() == [-1.0] * 5
    assert set(seen) == {"values", "series_names", "shape"}
    with pytest.raises(ValueError, match=r"selected_series must be in \[0, 1\)"):
        view.set_series(np.ones(5), selected_series=1)


def test_logit_lens_static_picture_keeps_the_last_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    view = LogitLensView.from_logits([f"p{i}" for i in range(10)], rng.standard_normal((2, 10, 4)), ["a", "b", "c", "d"], targets=[0] * 10, k=2)
    monkeypatch.setattr(LogitLensView, "STATIC_CELLS", 8)
    html = view.static_html()
    assert "showing the last 4 of 10 positions" in html
    assert ">p9<" in html and ">p5<" not in html
    assert "colour: target probability" in html


def test_feature_dashboard_density_wording() -> None:
    sparse = FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.r_[np.zeros(99), 1.0])
    assert sparse.density_text() == "active (> 0) on 1.00% of sampled tokens (1 in 100)"
    busy = FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.r_[np.zeros(20), np.ones(80)])
    assert busy.density_text() == "active (> 0) on 80% of sampled tokens, so not sparse"
    dense = FeatureDashboard([["a"]], [np.ones(1)], activation_sample=np.linspace(-1, 1, 100))
    assert dense.sample_signed and "a dense unit" in dense.density_text()
    assert FeatureDashboard([["a"]], [np.ones(1)]).density_text() == ""
    html = sparse.static_html()
    assert "count, log scale" in html and "(1 in 100)" in html and "token colour: activation" in html


def test_static_pictures_escape_every_string() -> None:
    evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    toks = [evil, "b", "c"]
    views = [
        AttentionView(toks, np.tril(np.ones((1, 3, 3))) / 3, [evil], title=evil),
        TokenView(toks, {evil: np.ones(3)}, title=evil),
        FeatureDashboard([toks], [np.ones(3)], activation_sample=np.ones(5), logit_effects=np.ones(3), vocab=toks, k=1, title=evil, label=evil),
        PatchingHeatmap(np.ones((1, 3)), [evil], toks, row_title=evil, col_title=evil, title=evil, quantity=evil),
        LogitLensView(toks, [[[evil], [evil], ["x"]]], np.full((1, 3, 1), 0.5), target_tokens=toks, target_probs=np.full((1, 3), 0.5),
                      target_ranks=np.zeros((1, 3)), layer_labels=[evil], title=evil),
    ]
    for view in views:
        html = view.static_html()
        assert "<script" not in html and "<img src=x" not in html and 'onerror=alert(2)>' not in html, type(view).__name__
        assert "&lt;script&gt;" in html
