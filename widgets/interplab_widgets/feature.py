"""FeatureDashboard: one SAE feature or neuron at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_cap, check_finite, check_int, check_rank, check_tokens, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm
from ._static import MUTED, card, div_rgb, esc, fmt, legend, seq_rgb, token_span, token_text


class FeatureDashboard(InterplabView):
    """Top-activating contexts, an activation histogram and logit effects for one feature.

    - ``contexts``: list of token lists, e.g. the top-20 activating windows.
    - ``activations``: the feature's activation on each of those tokens, a list of
      1-D arrays (one per context) or a ``[contexts, tokens]`` array.
    - ``activation_sample`` (optional): activations over a dataset, 1-D; summarised
      in Python into a histogram (of the non-zero values when none is negative, as
      SAE features are sparse; ``density`` is then the non-zero fraction).
    - ``logit_effects`` + ``vocab`` (optional): the feature's direct effect on each
      vocabulary logit (e.g. ``W_dec[f] @ W_U``), ``[d_vocab]``; only the top ``k``
      promoted and suppressed tokens are sent.
    """

    MAX_CONTEXTS: ClassVar[int] = 100
    MAX_CONTEXT_LEN: ClassVar[int] = 512
    MAX_BINS: ClassVar[int] = 200
    MAX_K: ClassVar[int] = 50

    _esm = view_esm("feature.js")
    _css = view_css("feature.css")

    title = traitlets.Unicode("").tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    #: All contexts' tokens, concatenated; context_lengths splits them.
    context_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    context_lengths = traitlets.List(traitlets.Int()).tag(sync=True)
    context_values = traitlets.Bytes().tag(sync=True)  # float32, same length as context_tokens
    hist_counts = traitlets.Bytes().tag(sync=True)  # float32 [bins]
    hist_edges = traitlets.Bytes().tag(sync=True)  # float32 [bins + 1]
    #: Fraction of sampled activations that are non-zero (-1 when no sample was given).
    density = traitlets.Float(-1.0).tag(sync=True)
    promoted_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    promoted_values = traitlets.Bytes().tag(sync=True)  # float32 [k], descending
    suppressed_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    suppressed_values = traitlets.Bytes().tag(sync=True)  # float32 [k], ascending
    #: True when the sample had negative values (a dense unit): the histogram then covers every value.
    sample_signed = traitlets.Bool(False).tag(sync=True)
    #: Index of the context clicked in the browser, or -1.
    selected_context = traitlets.Int(-1).tag(sync=True)

    def __init__(
        self,
        contexts: Sequence[Sequence[str]],
        activations: Any,
        *,
        activation_sample: Any = None,
        bins: int = 40,
        logit_effects: Any = None,
        vocab: Sequence[str] | None = None,
        k: int = 10,
        title: str = "feature",
        label: str = "",
    ) -> None:
        if isinstance(contexts, str):
            raise ValueError("contexts: expected a list of token lists, got one str.")
        ctx = [check_tokens(c, f"contexts[{i}]") for i, c in enumerate(contexts)]
        check_cap(len(ctx), self.MAX_CONTEXTS, "contexts", "Keep the top ones, e.g. contexts[:20] and activations[:20].")
        if not ctx:
            raise ValueError("contexts: need at least one context (a list of token strings).")
        acts = self._check_activations(ctx, activations)
        flat = np.concatenate(acts) if acts else np.zeros(0)
        counts, edges, density, sample_signed = self._histogram(activation_sample, bins)
        promoted, suppressed = self._logit_effects(logit_effects, vocab, k)
        super().__init__(
            title=title,
            label=label,
            context_tokens=[t for c in ctx for t in c],
            context_lengths=[len(c) for c in ctx],
            context_values=to_wire(flat, "float32"),
            hist_counts=to_wire(counts, "float32"),
            hist_edges=to_wire(edges, "float32"),
            density=density,
            sample_signed=sample_signed,
            promoted_tokens=[t for t, _ in promoted],
            promoted_values=to_wire(np.array([v for _, v in promoted]), "float32"),
            suppressed_tokens=[t for t, _ in suppressed],
            suppressed_values=to_wire(np.array([v for _, v in suppressed]), "float32"),
        )

    def _check_activations(self, ctx: list[list[str]], activations: Any) -> list[np.ndarray]:
        if hasattr(activations, "detach") or isinstance(activations, np.ndarray):
            arr = to_numpy(activations, "activations")
            check_rank(arr, "activations", (2,), "[contexts, tokens] (or a list of 1-D arrays)")
            rows = list(arr)
        else:
            rows = [to_numpy(a, f"activations[{i}]") for i, a in enumerate(activations)]
        if len(rows) != len(ctx):
            raise ValueError(f"activations: got {len(rows)} rows for {len(ctx)} contexts; pass one activation array per context.")
        for i, (row, toks) in enumerate(zip(rows, ctx)):
            check_rank(row, f"activations[{i}]", (1,), "[tokens]")
            if row.shape[0] != len(toks):
                raise ValueError(f"activations[{i}]: has {row.shape[0]} values but contexts[{i}] has {len(toks)} tokens; they must match.")
            check_cap(len(toks), self.MAX_CONTEXT_LEN, f"tokens in contexts[{i}]", "Cut a window around the peak, e.g. toks[max(0, j - 32):j + 8].")
            check_finite(row, f"activations[{i}]")
        return rows

    def _histogram(self, sample: Any, bins: int) -> tuple[np.ndarray, np.ndarray, float, bool]:
        if sample is None:
            return np.zeros(0), np.zeros(0), -1.0, False
        arr = to_numpy(sample, "activation_sample").reshape(-1)
        check_finite(arr, "activation_sample")
        bins = check_int(bins, "bins")
        if not 1 <= bins <= self.MAX_BINS:
            raise ValueError(f"bins must be in [1, {self.MAX_BINS}], got {bins}.")
        if arr.size == 0:
            raise ValueError("activation_sample: is empty; pass the feature's activations over some dataset.")
        sparse = arr.min() >= 0
        shown = arr[arr > 0] if sparse else arr
        density = float((arr != 0).mean())
        if shown.size == 0:
            return np.zeros(0), np.zeros(0), density, not sparse
        counts, edges = np.histogram(shown, bins=bins)
        return counts.astype(np.float32), edges, density, not sparse

    def _logit_effects(self, effects: Any, vocab: Sequence[str] | None, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        if effects is None and vocab is None:
            return [], []
        if effects is None or vocab is None:
            raise ValueError("logit_effects and vocab go together: pass both (vocab[i] is the string of logit i) or neither.")
        arr = to_numpy(effects, "logit_effects")
        check_rank(arr, "logit_effects", (1,), "[d_vocab]")
        words = check_tokens(vocab, "vocab")
        if arr.shape[0] != len(words):
            raise ValueError(f"logit_effects: has {arr.shape[0]} entries but vocab has {len(words)} strings; they must match.")
        check_finite(arr, "logit_effects")
        k = check_int(k, "k")
        if not 1 <= k <= self.MAX_K:
            raise ValueError(f"k must be in [1, {self.MAX_K}], got {k}.")
        order = np.argsort(arr, kind="stable")
        top = order[::-1][:k]
        bottom = order[:k]
        return [(words[i], float(arr[i])) for i in top], [(words[i], float(arr[i])) for i in bottom]

    @property
    def context_activations(self) -> list[np.ndarray]:
        """Per-context activations as received by the browser."""
        flat = from_wire(self.context_values, "float32", (sum(self.context_lengths),))
        return np.split(flat, np.cumsum(self.context_lengths)[:-1])

    STATIC_CONTEXTS: ClassVar[int] = 20

    def density_text(self) -> str:
        """How often the unit fires, worded so it means something for dense units too."""
        if self.density < 0:
            return ""
        if self.sample_signed:
            return f"{self.density:.0%} of sampled activations are non-zero (a dense unit; the histogram shows every value)"
        if self.density >= 0.5:
            return f"active (> 0) on {self.density:.0%} of sampled tokens, so not sparse"
        return f"active (> 0) on {self.density:.2%} of sampled tokens (1 in {max(1, round(1 / self.density)) if self.density else 'none'})"

    def _static_html(self) -> str:
        acts = self.context_activations
        flat = np.concatenate(acts) if acts else np.zeros(0)
        max_abs = float(np.abs(flat).max()) if flat.size else 0.0
        max_abs = max_abs or 1.0
        signed = bool(flat.size and flat.min() < 0)
        rows = []
        start = 0
        for c, n in enumerate(self.context_lengths[: self.STATIC_CONTEXTS]):
            toks = self.context_tokens[start : start + n]
            vals = acts[c]
            colors = div_rgb(vals / max_abs) if signed else seq_rgb(vals / max_abs)
            peak = int(np.argmax(vals)) if n else -1
            spans = "".join(
                token_span(t, colors[i], f"{t!r}: {fmt(float(vals[i]))}").replace('style="', 'style="outline:1px solid #000;font-weight:700;', 1)
                if i == peak else token_span(t, colors[i], f"{t!r}: {fmt(float(vals[i]))}")
                for i, t in enumerate(toks)
            )
            rows.append(f'<div style="display:flex;gap:6px;align-items:baseline"><span style="{MUTED};min-width:3.5em;text-align:right">'
                        f'{esc(fmt(float(vals[peak])) if n else "-")}</span><span style="display:flex;flex-wrap:wrap;gap:1px">{spans}</span></div>')
            start += n
        more = len(self.context_lengths) - self.STATIC_CONTEXTS
        if more > 0:
            rows.append(f'<div style="{MUTED}">... {more} more contexts</div>')
        side = []
        counts = from_wire(self.hist_counts, "float32", (len(self.hist_counts) // 4,))
        if counts.size:
            edges = from_wire(self.hist_edges, "float32", (counts.size + 1,))
            top = np.log10(counts.max() + 1)
            bars = "".join(
                f'<div title="[{fmt(float(edges[i]))}, {fmt(float(edges[i + 1]))}): {int(v)}" style="flex:1;background:#6baed6;'
                f'height:{(np.log10(v + 1) / top * 100) if top else 0:.1f}%"></div>'
                for i, v in enumerate(counts)
            )
            side.append(f'<div style="font-weight:600;font-size:12px">activation histogram (count, log scale)</div>'
                        f'<div style="display:flex;align-items:flex-end;gap:1px;width:260px;height:70px;border-left:1px solid #999;border-bottom:1px solid #999">{bars}</div>'
                        f'<div style="{MUTED};display:flex;justify-content:space-between;width:260px"><span>{fmt(float(edges[0]))}</span>'
                        f'<span>activation</span><span>{fmt(float(edges[-1]))}</span></div>')
        if self.density >= 0:
            side.append(f'<div style="{MUTED}">{esc(self.density_text())}</div>')
        for caption, toks, raw in (("promoted tokens (logit effect)", self.promoted_tokens, self.promoted_values),
                                   ("suppressed tokens", self.suppressed_tokens, self.suppressed_values)):
            if toks:
                vals = from_wire(raw, "float32", (len(toks),))
                items = "".join(f'<div style="font-size:12px"><code>{esc(token_text(t))}</code> {fmt(float(v))}</div>' for t, v in zip(toks, vals))
                side.append(f'<div style="font-weight:600;font-size:12px;margin-top:4px">{caption}</div>{items}')
        title = self.title + (f" — {self.label}" if self.label else "")
        lo = -max_abs if signed else 0.0
        body = (f'<div style="{MUTED}">{legend(lo, max_abs, signed, "token colour: activation")}; outlined: peak token</div>'
                f'<div style="display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start"><div>{"".join(rows)}</div><div>{"".join(side)}</div></div>')
        return card("FeatureDashboard", title, body)

    def _describe(self) -> str:
        extras = []
        if self.hist_counts:
            extras.append(f"histogram {len(self.hist_counts) // 4} bins")
        if self.promoted_tokens:
            extras.append(f"top {len(self.promoted_tokens)} logits")
        label = f" {self.label!r}" if self.label else ""
        tail = "".join(f", {e}" for e in extras)
        return f"{self.title}{label}: {len(self.context_lengths)} contexts{tail}"
