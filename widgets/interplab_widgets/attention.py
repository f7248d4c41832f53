"""AttentionView: every head's pattern as a thumbnail, one enlarged, tokens tinted on hover."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_axis, check_cap, check_dtype, check_finite, check_rank, check_tokens, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm

SCALES = ("head", "global", "one")


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
    #: Colour maximum: each head's own max, the max over all heads, or 1.
    scale = traitlets.Enum(SCALES, default_value="head").tag(sync=True)
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
        labels = list(head_labels) if head_labels is not None else default_labels
        if len(labels) != layers * heads:
            raise ValueError(f"head_labels: got {len(labels)} labels for {layers * heads} heads (layers x heads, flattened).")
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

    def _describe(self) -> str:
        layers, heads, _, _ = self.shape
        lead = f"{layers} layers x {heads} heads" if self._input_ndim == 4 else f"{heads} heads"
        return f"{lead}, {len(self.tokens)} tokens"
