"""LogitLensView: what each layer would predict at each position, target highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_axis, check_cap, check_finite, check_int, check_rank, check_tokens, from_wire, to_int_array, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm
from ._static import MONO, MUTED, card, esc, fmt, ink, legend, rgb, seq_rgb, token_text


class LogitLensView(InterplabView):
    """Top-k predictions per (layer, position), with the target token's rank and probability.

    Build it from decoded predictions (``top_tokens[layer][pos][k]`` strings plus
    ``top_probs[layer, pos, k]``) or, usually simpler, from per-layer logits with
    :meth:`from_logits`. Token strings are sent once in a string table and the
    grid refers to them by int32 index, so repeated predictions cost 4 bytes.
    """

    MAX_LAYERS: ClassVar[int] = 128
    MAX_POSITIONS: ClassVar[int] = 512
    MAX_K: ClassVar[int] = 20
    MAX_CELLS: ClassVar[int] = 16384

    _esm = view_esm("logit_lens.js")
    _css = view_css("logit_lens.css")

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layer_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: [layers, positions, k]
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    #: Unique prediction strings; top_index points into it.
    strings = traitlets.List(traitlets.Unicode()).tag(sync=True)
    top_index = traitlets.Bytes().tag(sync=True)  # int32 [layers, positions, k]
    top_probs = traitlets.Bytes().tag(sync=True)  # float32 [layers, positions, k]
    #: One target per position (e.g. the next token); empty when there is none.
    target_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    target_probs = traitlets.Bytes().tag(sync=True)  # float32 [layers, positions]
    target_ranks = traitlets.Bytes().tag(sync=True)  # int32 [layers, positions], 0 = top-1
    #: "top" colours cells by the top-1 probability, "target" by the target's probability.
    color_by = traitlets.Enum(("top", "target"), default_value="top").tag(sync=True)
    #: (layer, position) pinned by a click, or None.
    selected = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=None, allow_none=True).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Sequence[str],
        top_tokens: Sequence[Sequence[Sequence[str]]],
        top_probs: Any,
        *,
        target_tokens: Sequence[str] | None = None,
        target_probs: Any = None,
        target_ranks: Any = None,
        layer_labels: Sequence[str] | None = None,
        title: str = "",
    ) -> None:
        toks = check_tokens(tokens)
        probs = to_numpy(top_probs, "top_probs")
        check_rank(probs, "top_probs", (3,), "[layers, positions, k]")
        layers, positions, k = probs.shape
        check_axis(probs, "top_probs", 1, len(toks), "tokens (positions)")
        check_cap(layers, self.MAX_LAYERS, "layers", "Pass every other layer, e.g. top_probs[::2].")
        check_cap(positions, self.MAX_POSITIONS, "positions", "Slice positions, e.g. tokens[-64:] and top_probs[:, -64:].")
        check_cap(k, self.MAX_K, "top-k predictions", "Keep fewer, e.g. top_probs[..., :5].")
        check_cap(layers * positions, self.MAX_CELLS, "cells (layers x positions)", "Slice layers or positions, e.g. top_probs[:, -32:].")
        check_finite(probs, "top_probs")
        if probs.size and (probs.min() < 0 or probs.max() > 1 + 1e-3):
            raise ValueError("top_probs: probabilities must lie in [0, 1]; apply softmax to logits first (or use LogitLensView.from_logits).")
        grid = np.asarray(top_tokens, dtype=object)
        if grid.shape != (layers, positions, k):
            raise ValueError(f"top_tokens: shape {grid.shape} must equal top_probs' shape {(layers, positions, k)} ([layers][positions][k] strings).")
        if not all(isinstance(t, str) for t in grid.flat):
            raise ValueError("top_tokens: every entry must be a str; decode token ids first, e.g. model.to_str_tokens.")
        # A dict, not np.unique: numpy's str arrays drop trailing "\x00", and token strings must stay exact.
        table: dict[str, int] = {}
        index = np.array([table.setdefault(t, len(table)) for t in grid.flat], dtype=np.int64)
        strings = list(table)
        labels = [str(x) for x in layer_labels] if layer_labels is not None else [str(i) for i in range(layers)]
        if len(labels) != layers:
            raise ValueError(f"layer_labels: got {len(labels)} labels for {layers} layers.")
        targets, t_probs, t_ranks = self._check_targets(target_tokens, target_probs, target_ranks, layers, positions)
        super().__init__(
            tokens=toks,
            layer_labels=labels,
            shape=[layers, positions, k],
            strings=strings,
            top_index=to_wire(index.reshape(layers, positions, k), "int32"),
            top_probs=to_wire(probs, "float32"),
            target_tokens=targets,
            target_probs=to_wire(t_probs, "float32"),
            target_ranks=to_wire(t_ranks, "int32"),
            color_by="target" if targets else "top",
            title=title,
        )

    @staticmethod
    def _check_targets(tokens: Any, probs: Any, ranks: Any, layers: int, positions: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        given = [x is not None for x in (tokens, probs, ranks)]
        if not any(given):
            return [], np.zeros((0,)), np.zeros((0,))
        if not all(given):
            raise ValueError("target_tokens, target_probs and target_ranks go together: pass all three or none (from_logits computes them).")
        toks = check_tokens(tokens, "target_tokens")
        if len(toks) != positions:
            raise ValueError(f"target_tokens: got {len(toks)} targets for {positions} positions.")
        p = to_numpy(probs, "target_probs")
        r = to_numpy(ranks, "target_ranks")
        for arr, name in ((p, "target_probs"), (r, "target_ranks")):
            check_rank(arr, name, (2,), "[layers, positions]")
            if arr.shape != (layers, positions):
                raise ValueError(f"{name}: shape {arr.shape} must be {(layers, positions)} ([layers, positions]).")
            check_finite(arr, name)
        if p.min() < 0 or p.max() > 1 + 1e-3:
            raise ValueError("target_probs: probabilities must lie in [0, 1].")
        r = to_int_array(r, "target_ranks")
        if r.min() < 0:
            raise ValueError("target_ranks: ranks must be integers >= 0 (0 means the top prediction).")
        return toks, p, r.astype(np.int32)

    @classmethod
    def from_logits(
        cls,
        tokens: Sequence[str],
        logits: Any,
        vocab: Sequence[str],
        *,
        targets: Sequence[int] | None = None,
        k: int = 5,
        layer_labels: Sequence[str] | None = None,
        title: str = "",
    ) -> LogitLensView:
        """Build from ``logits[layers, positions, vocab]`` (e.g. the residual stream through
        ``ln_final`` and ``W_U`` at every layer). ``targets`` are token ids, one per position.
        """
        arr = to_numpy(logits, "logits")
        check_rank(arr, "logits", (3,), "[layers, positions, vocab]")
        check_axis(arr, "logits", 2, len(vocab), "vocab strings")
        check_finite(arr, "logits")
        k = check_int(k, "k")
        if not 1 <= k <= min(cls.MAX_K, arr.shape[2]):
            raise ValueError(f"k must be in [1, {min(cls.MAX_K, arr.shape[2])}], got {k}.")
        shifted = arr.astype(np.float64) - arr.max(axis=-1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=-1, keepdims=True)
        top = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
        top_probs = np.take_along_axis(probs, top, axis=-1)
        vocab_arr = np.asarray(list(vocab), dtype=object)
        kwargs: dict[str, Any] = {}
        if targets is not None:
            ids = to_int_array(targets, "targets")
            if ids.shape != (arr.shape[1],):
                raise ValueError(f"targets: expected one token id per position ({arr.shape[1]}), got shape {ids.shape}.")
            if ids.min() < 0 or ids.max() >= arr.shape[2]:
                raise ValueError(f"targets: token ids must be in [0, {arr.shape[2]}).")
            t_probs = probs[:, np.arange(arr.shape[1]), ids]
            kwargs = {
                "target_tokens": [str(vocab_arr[i]) for i in ids],
                "target_probs": t_probs,
                "target_ranks": (probs > t_probs[..., None]).sum(axis=-1),
            }
        return cls(tokens, vocab_arr[top].tolist(), top_probs, layer_labels=layer_labels, title=title, **kwargs)

    def top(self, layer: int, position: int) -> list[tuple[str, float]]:
        """The (token, probability) list shown for one cell, as received by the browser."""
        index = from_wire(self.top_index, "int32", self.shape)
        probs = from_wire(self.top_probs, "float32", self.shape)
        return [(self.strings[i], float(p)) for i, p in zip(index[layer, position], probs[layer, position])]

    #: The static picture shows at most this many layers x positions (the last positions, all layers first).
    STATIC_CELLS: ClassVar[int] = 1200

    def _static_html(self) -> str:
        layers, positions, k = self.shape
        index = from_wire(self.top_index, "int32", self.shape)
        probs = from_wire(self.top_probs, "float32", self.shape)
        has_target = bool(self.target_tokens)
        by_target = self.color_by == "target" and has_target
        t_probs = from_wire(self.target_probs, "float32", (layers, positions)) if has_target else None
        t_ranks = from_wire(self.target_ranks, "int32", (layers, positions)) if has_target else None
        n_pos = max(1, min(positions, self.STATIC_CELLS // max(layers, 1)))
        first = positions - n_pos
        cell_style = f"padding:1px 4px;border:1px solid #eee;white-space:pre;max-width:80px;overflow:hidden;text-overflow:ellipsis;{MONO};font-size:11px"
        head = "".join(f'<th title="{esc(self.tokens[p])}" style="font-weight:500;{cell_style}">{esc(token_text(self.tokens[p]))}</th>'
                       for p in range(first, positions))
        trs = []
        for l in range(layers):
            tds = []
            for p in range(first, positions):
                value = float(t_probs[l, p]) if by_target else float(probs[l, p, 0])
                col = seq_rgb(np.array(value))
                pred = self.strings[index[l, p, 0]]
                extra = ""
                style = cell_style + f";background:{rgb(col)};color:{ink(col)}"
                tip = f"{self.layer_labels[l]}, {p}: top-1 {pred!r} {fmt(float(probs[l, p, 0]))}"
                if has_target:
                    if t_ranks[l, p] == 0:
                        style += ";outline:2px solid #1a7f37;outline-offset:-2px;font-weight:700"
                    else:
                        extra = f'<sup style="font-size:9px">#{int(t_ranks[l, p]) + 1}</sup>'
                    tip += f"; target {self.target_tokens[p]!r} rank {int(t_ranks[l, p]) + 1}, p {fmt(float(t_probs[l, p]))}"
                tds.append(f'<td title="{esc(tip)}" style="{style}">{esc(token_text(pred))}{extra}</td>')
            trs.append(f'<tr><th style="text-align:right;font-weight:500;padding:1px 4px;{MONO};font-size:11px">{esc(self.layer_labels[l])}</th>{"".join(tds)}</tr>')
        foot = ""
        if has_target:
            foot = ('<tr><th style="font-weight:500;font-size:11px">target</th>'
                    + "".join(f'<th style="color:#1a7f37;font-weight:500;{cell_style}">{esc(token_text(self.target_tokens[p]))}</th>' for p in range(first, positions))
                    + "</tr>")
        cut = f"; showing the last {n_pos} of {positions} positions" if first else ""
        what = "target probability" if by_target else "top-1 probability"
        marks = "; outlined: target is top-1; #r: target's rank" if has_target else ""
        body = (f'<div style="{MUTED}">{legend(0, 1, False, "colour: " + what)}{esc(marks + cut)}</div>'
                f'<table style="border-collapse:collapse"><tr><th style="font-weight:500;font-size:11px">layer \\ input</th>{head}</tr>'
                f'{"".join(trs)}{foot}</table>')
        return card("LogitLensView", self.title or f"Logit lens: {layers} layers x {positions} positions", body)

    def _describe(self) -> str:
        layers, positions, k = self.shape
        target = ", with targets" if self.target_tokens else ""
        return f"{layers} layers x {positions} positions, top {k}{target}"
