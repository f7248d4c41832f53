"""AttentionView: every head's pattern as a thumbnail, one enlarged, tokens tinted on hover."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_axis, check_cap, check_dtype, check_finite, check_int, check_rank, check_tokens, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm
from ._static import MASKED, MUTED, card, esc, image, legend, max_pool, seq_rgb, thinned, token_text

#: Colour maximum. "head" and "global" leave out the first query row and the first
#: key column: in a causal model query 0 attends 1.0 to itself and many heads park
#: weight on BOS, so with them in, every maximum is about 1 and weak heads look blank.
SCALES = ("head", "global", "row", "one")
SCALE_TEXT = {
    "head": "each head, first token left out",
    "global": "all heads, first token left out",
    "row": "each query row",
    "one": "1",
}


def colour_max(pattern: np.ndarray, scale: str) -> np.ndarray:
    """Colour maximum for ``pattern[heads, Q, K]`` (NaN = masked): shape [heads, 1, 1] or, for "row", [heads, Q, 1].

    The browser computes the same numbers (attention.js, attnScales); values above
    the maximum saturate.
    """
    filled = np.nan_to_num(pattern, nan=0.0)
    full = filled.max(axis=(1, 2), initial=0.0)
    if scale == "one":
        out = np.ones((pattern.shape[0], 1, 1))
    elif scale == "row":
        rest = filled[:, :, 1:].max(axis=2, initial=0.0) if filled.shape[2] > 1 else np.zeros(filled.shape[:2])
        rows = np.where(rest > 0, rest, filled.max(axis=2, initial=0.0))
        out = rows[:, :, None]
    else:
        inner = filled[:, 1:, 1:].max(axis=(1, 2), initial=0.0) if min(filled.shape[1:]) > 1 else np.zeros(len(filled))
        per_head = np.where(inner > 0, inner, full)
        if scale == "global":
            per_head = np.full_like(per_head, per_head.max(initial=0.0))
        out = per_head[:, None, None]
    return np.where(out > 0, out, 1.0)


class AttentionView(InterplabView):
    """Attention patterns ``[heads, query, key]`` or ``[layers, heads, query, key]``.

    The pattern travels as float16 by default (attention weights live in [0, 1], so
    three significant digits are plenty on screen and the payload halves). When the
    pattern is causal (every entry above the diagonal is exactly 0) only the lower
    triangle is sent, and the view greys out the masked cells instead of painting
    them as "zero attention".
    """

    MAX_TOKENS: ClassVar[int] = 1024
    MAX_HEADS: ClassVar[int] = 576
    MAX_VALUES: ClassVar[int] = 2**25  # about 64 MB as float16

    _esm = view_esm("attention.js")
    _css = view_css("attention.css")

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: Always four axes on the wire: [layers, heads, query, key].
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    attention = traitlets.Bytes().tag(sync=True)
    dtype = traitlets.Unicode("float16").tag(sync=True)
    #: "causal": per head, rows q = 0..Q-1 of length q+1 concatenated; "dense": Q*K values.
    packing = traitlets.Unicode("dense").tag(sync=True)
    head_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: Colour maximum (see SCALES): "head", "global", "row" or "one".
    scale = traitlets.Enum(SCALES, default_value="head").tag(sync=True)
    #: Colour = (weight / max) ** gamma; below 1 brings out weak attention.
    gamma = traitlets.Float(1.0).tag(sync=True)
    #: Flat head index (layer * heads + head) shown enlarged; set by clicks in the browser.
    selected_head = traitlets.Int(0).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Sequence[str],
        attention: Any,
        head_labels: Sequence[str] | None = None,
        *,
        scale: str = "head",
        gamma: float = 1.0,
        title: str = "",
        dtype: str = "float16",
        selected_head: int = 0,
    ) -> None:
        toks = check_tokens(tokens)
        arr = to_numpy(attention, "attention")
        check_rank(arr, "attention", (3, 4), "[heads, query, key] or [layers, heads, query, key]")
        check_axis(arr, "attention", -1, len(toks), "tokens (key axis)")
        check_axis(arr, "attention", -2, len(toks), "tokens (query axis)")
        input_ndim = arr.ndim
        if arr.ndim == 3:
            arr = arr[None]
            default_labels = [f"H{h}" for h in range(arr.shape[1])]
        else:
            default_labels = [f"L{l}H{h}" for l in range(arr.shape[0]) for h in range(arr.shape[1])]
        layers, heads, n_query, n_key = arr.shape
        check_cap(len(toks), self.MAX_TOKENS, "tokens", "Slice the sequence, e.g. tokens[:512] and attention[..., :512, :512].")
        check_cap(layers * heads, self.MAX_HEADS, "heads (layers x heads)", "Show fewer layers, e.g. attention[:4].")
        check_cap(arr.size, self.MAX_VALUES, "attention values", "Slice layers or tokens, e.g. attention[:2] or attention[..., :256, :256].")
        check_finite(arr, "attention")
        if arr.size and arr.min() < -1e-6:
            raise ValueError(
                f"attention: has negative values (min {arr.min():.4g}); pass softmax probabilities "
                "(hook_pattern), not scores (hook_attn_scores)."
            )
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
        gamma = self._check_gamma(gamma)
        labels = list(head_labels) if head_labels is not None else default_labels
        if len(labels) != layers * heads:
            raise ValueError(f"head_labels: got {len(labels)} labels for {layers * heads} heads (layers x heads, flattened).")
        selected_head = check_int(selected_head, "selected_head")
        if not 0 <= selected_head < layers * heads:
            raise ValueError(f"selected_head must be in [0, {layers * heads}), got {selected_head}.")
        arr = np.clip(arr, 0.0, None)
        causal = n_query == n_key and not np.triu(arr, k=1).any()
        if causal:
            rows, cols = np.tril_indices(n_query)
            payload = arr[:, :, rows, cols]
        else:
            payload = arr
        super().__init__(
            tokens=toks,
            shape=[layers, heads, n_query, n_key],
            attention=to_wire(payload, check_dtype(dtype)),
            dtype=dtype,
            packing="causal" if causal else "dense",
            head_labels=[str(x) for x in labels],
            scale=scale,
            gamma=gamma,
            selected_head=selected_head,
            title=title,
        )
        self._input_ndim = input_ndim

    @property
    def pattern(self) -> np.ndarray:
        """The pattern as received by the browser, ``[layers, heads, query, key]`` float32."""
        layers, heads, n_query, n_key = self.shape
        if self.packing == "dense":
            return from_wire(self.attention, self.dtype, self.shape).astype(np.float32)
        tri = from_wire(self.attention, self.dtype, (layers, heads, n_query * (n_query + 1) // 2))
        out = np.zeros((layers, heads, n_query, n_key), np.float32)
        rows, cols = np.tril_indices(n_query)
        out[:, :, rows, cols] = tri
        return out

    @staticmethod
    def _check_gamma(gamma: Any) -> float:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) or not 0.05 <= float(gamma) <= 20:
            raise ValueError(f"gamma must be a number in [0.05, 20] (e.g. 0.5 brightens weak attention), got {gamma!r}.")
        return float(gamma)

    @traitlets.validate("gamma")
    def _validate_gamma(self, proposal: dict[str, Any]) -> float:
        try:
            return self._check_gamma(proposal["value"])
        except ValueError as err:
            raise traitlets.TraitError(str(err)) from None

    def colours(self, head: int) -> np.ndarray:
        """Colour positions in [0, 1] of one flat head as drawn (NaN where causally masked), ``[Q, K]``."""
        layers, heads, n_query, n_key = self.shape
        pattern = self.pattern.reshape(layers * heads, n_query, n_key).astype(np.float64)
        if self.packing == "causal":
            pattern[:, ~np.tri(n_query, n_key, dtype=bool)] = np.nan
        vmax = colour_max(pattern, self.scale)
        t = np.clip(pattern / vmax, 0.0, 1.0) ** self.gamma
        return t[head]

    def _head_pixels(self, t: np.ndarray, max_side: int) -> np.ndarray:
        pooled = max_pool(t, max_side)
        px = seq_rgb(np.nan_to_num(pooled, nan=0.0))
        px[np.isnan(pooled)] = MASKED
        return px

    def _static_html(self) -> str:
        layers, heads, n_query, n_key = self.shape
        n_heads = layers * heads
        sel = self.selected_head
        t_all = [self.colours(h) for h in range(n_heads)]
        shown = min(n_heads, 64)
        thumbs = "".join(
            f'<div style="text-align:center;font-size:10px;color:#444">{image(self._head_pixels(t_all[h], 48), 48, 48, self.head_labels[h])}'
            f"{esc(self.head_labels[h])}</div>"
            for h in range(shown)
        )
        more = f'<div style="{MUTED}">... and {n_heads - shown} more heads</div>' if shown < n_heads else ""
        side = 240
        px = self._head_pixels(t_all[sel], side)
        step_q = thinned(n_query, side)
        step_k = thinned(n_key, side)
        ylabels = "".join(
            f'<div style="position:absolute;right:2px;top:{(q + 0.5) * side / n_query - 6:.1f}px;white-space:pre">{esc(token_text(self.tokens[q]))}</div>'
            for q in range(0, n_query, step_q)
        ) if n_query <= 256 else ""
        xlabels = "".join(
            f'<div style="position:absolute;left:{(k + 0.5) * side / n_key - 6:.1f}px;top:2px;writing-mode:vertical-rl;white-space:pre">{esc(token_text(self.tokens[k]))}</div>'
            for k in range(0, n_key, step_k)
        ) if n_key <= 256 else ""
        big = (
            '<div style="display:grid;grid-template-columns:auto auto;font-size:10px;font-family:ui-monospace,Menlo,Consolas,monospace">'
            f'<div style="position:relative;width:90px;height:{side}px;overflow:hidden">{ylabels}</div>'
            f"<div>{image(px, side, side, self.head_labels[sel])}</div><div></div>"
            f'<div style="position:relative;width:{side}px;height:70px;overflow:hidden">{xlabels}</div></div>'
        )
        scale = f"colour max: {SCALE_TEXT[self.scale]}" + (f", gamma {self.gamma:g}" if self.gamma != 1 else "")
        masked = "; grey: causally masked; " if self.packing == "causal" else "; "
        body = (
            f'<div style="{MUTED}">{esc(scale)}{masked}{legend(0, 1, False, "colour: weight / max")}</div>'
            f'<div style="display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start">'
            f'<div><div style="display:grid;grid-template-columns:repeat({min(heads, 8)},auto);gap:3px">{thumbs}</div>{more}</div>'
            f'<div><div style="font-weight:600;font-size:12px">{esc(self.head_labels[sel])} (rows: query, columns: key)</div>{big}</div></div>'
        )
        return card("AttentionView", self.title or f"Attention: {n_heads} heads, {n_query} tokens", body)

    def _describe(self) -> str:
        layers, heads, _, _ = self.shape
        lead = f"{layers} layers x {heads} heads" if self._input_ndim == 4 else f"{heads} heads"
        return f"{lead}, {len(self.tokens)} tokens"
