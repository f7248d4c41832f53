"""TokenView: text coloured by one of several per-token value series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_axis, check_cap, check_dtype, check_int, check_rank, check_tokens, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm
from ._static import MUTED, NO_VALUE, card, div_rgb, fmt, legend, rgb, seq_rgb, token_span


def _check_series(row: np.ndarray, name: str, n_tokens: int) -> np.ndarray:
    """One series as ``[tokens]``: NaN means "no value"; one value short is a next-token loss."""
    check_rank(row, name, (1,), "[tokens]")
    if row.shape[0] == n_tokens - 1:
        # Entry i belongs to predicting token i + 1 (a per-token loss): token 0 gets no value.
        row = np.concatenate([[np.nan], row])
    check_axis(row, name, 0, n_tokens, "tokens (or one fewer: a next-token loss)")
    if np.isinf(row).any():
        i = int(np.argwhere(np.isinf(row))[0, 0])
        raise ValueError(f"{name}: value at index {i} is {row[i]}; use NaN for \"no value\" (shown grey), or clip, e.g. np.clip(x, -1e4, 1e4).")
    return row


class TokenView(InterplabView):
    """Tokens coloured by per-token values: a feature's activations, a probe score, a loss.

    ``values`` is ``[tokens]`` (one series), ``[series, tokens]``, or a mapping
    ``{name: [tokens]}``. A series with negative values gets a diverging red/blue
    scale centred at 0; a non-negative one a white-to-blue scale. NaN means "no
    value" and is shown grey. A series one value shorter than the tokens is read as
    a next-token loss: its entry ``i`` colours token ``i + 1`` and token 0 is grey.
    """

    MAX_TOKENS: ClassVar[int] = 8192
    MAX_SERIES: ClassVar[int] = 64

    _esm = view_esm("tokens.js")
    _css = view_css("tokens.css")

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: [series, tokens]
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    #: float32 (or float16) [series, tokens]; NaN = no value.
    values = traitlets.Bytes().tag(sync=True)
    dtype = traitlets.Unicode("float32").tag(sync=True)
    series_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: Index into series_names of the series shown; the selector in the browser sets it.
    selected_series = traitlets.Int(0).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Sequence[str],
        values: Any,
        series_names: Sequence[str] | None = None,
        *,
        title: str = "",
        dtype: str = "float32",
        selected_series: int = 0,
    ) -> None:
        toks = check_tokens(tokens)
        arr, names = self._series(toks, values, series_names)
        selected_series = check_int(selected_series, "selected_series")
        if not 0 <= selected_series < arr.shape[0]:
            raise ValueError(f"selected_series must be in [0, {arr.shape[0]}), got {selected_series}.")
        super().__init__(
            tokens=toks,
            shape=list(arr.shape),
            values=to_wire(arr, check_dtype(dtype)),
            dtype=dtype,
            series_names=names,
            selected_series=selected_series,
            title=title,
        )

    @classmethod
    def _series(cls, toks: list[str], values: Any, series_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """Validate values into ``[series, tokens]`` and their names."""
        n = len(toks)
        if isinstance(values, Mapping):
            if series_names is not None:
                raise ValueError("series_names: leave it out when values is a dict; the keys are the names.")
            series_names = [str(k) for k in values]
            rows = [_check_series(to_numpy(v, f"values[{k!r}]"), f"values[{k!r}]", n) for k, v in values.items()]
            arr = np.stack(rows) if rows else np.zeros((0, n))
        else:
            arr = to_numpy(values, "values")
            check_rank(arr, "values", (1, 2), "[tokens] or [series, tokens]")
            if arr.ndim == 1:
                arr = arr[None]
            rows = [_check_series(row, "values" if len(arr) == 1 else f"values[{i}]", n) for i, row in enumerate(arr)]
            arr = np.stack(rows) if rows else np.zeros((0, n))
        check_cap(n, cls.MAX_TOKENS, "tokens", "Show a window, e.g. tokens[:2000] and values[..., :2000].")
        if arr.shape[0] == 0:
            raise ValueError("values: no series given; pass at least one [tokens] array.")
        check_cap(arr.shape[0], cls.MAX_SERIES, "series", "Pass fewer series, e.g. values[:16].")
        names = list(series_names) if series_names is not None else [f"series {i}" for i in range(arr.shape[0])]
        if len(names) != arr.shape[0]:
            raise ValueError(f"series_names: got {len(names)} names for {arr.shape[0]} series.")
        return arr, [str(x) for x in names]

    def set_series(self, values: Any, series_names: Sequence[str] | None = None, selected_series: int = 0) -> None:
        """Replace the value series (same forms as the constructor); the open view repaints."""
        arr, names = self._series(self.tokens, values, series_names)
        selected_series = check_int(selected_series, "selected_series")
        if not 0 <= selected_series < arr.shape[0]:
            raise ValueError(f"selected_series must be in [0, {arr.shape[0]}), got {selected_series}.")
        with self.hold_sync():
            self.selected_series = selected_series
            self.series_names = names
            self.shape = list(arr.shape)
            self.values = to_wire(arr, self.dtype)

    @property
    def array(self) -> np.ndarray:
        """The values as received by the browser, ``[series, tokens]`` float32 (NaN = no value)."""
        return from_wire(self.values, self.dtype, self.shape).astype(np.float32)

    def colours(self, series: int | None = None) -> tuple[np.ndarray, bool, float]:
        """Colour position per token (NaN = no value), whether the scale is diverging, and its max |v|."""
        row = self.array[self.selected_series if series is None else series].astype(np.float64)
        finite = row[np.isfinite(row)]
        signed = bool(finite.size and finite.min() < 0)
        vmax = float(np.abs(finite).max()) if finite.size else 0.0
        vmax = vmax or 1.0
        return row / vmax, signed, vmax

    def _static_html(self) -> str:
        s = self.selected_series
        t, signed, vmax = self.colours()
        row = self.array[s]
        shown = min(len(self.tokens), self.STATIC_TOKENS)
        colors = div_rgb(np.nan_to_num(t)) if signed else seq_rgb(np.nan_to_num(t))
        name = self.series_names[s]
        spans = "".join(
            token_span(self.tokens[i], NO_VALUE if np.isnan(t[i]) else colors[i],
                       f"{i}: {name} " + ("no value" if np.isnan(row[i]) else fmt(float(row[i]))))
            for i in range(shown)
        )
        more = f'<span style="{MUTED}"> ... {len(self.tokens) - shown} more tokens</span>' if shown < len(self.tokens) else ""
        lo = -vmax if signed else 0.0
        grey = f'; <span style="background:{rgb(NO_VALUE)};padding:0 4px">grey</span>: no value' if np.isnan(t[:shown]).any() else ""
        others = f" (series {s + 1} of {len(self.series_names)})" if len(self.series_names) > 1 else ""
        body = (f'<div style="{MUTED}">{legend(lo, vmax, signed, name + others)}{grey}</div>'
                f'<div style="display:flex;flex-wrap:wrap;gap:1px;margin-top:4px">{spans}{more}</div>')
        return card("TokenView", self.title or f"{len(self.tokens)} tokens", body)

    STATIC_TOKENS: ClassVar[int] = 2000

    def _describe(self) -> str:
        n = self.shape[0]
        return f"{n} series, {len(self.tokens)} tokens"
