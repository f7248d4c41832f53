"""TokenView: text coloured by one of several per-token value series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_axis, check_cap, check_dtype, check_finite, check_rank, check_tokens, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm


class TokenView(InterplabView):
    """Tokens coloured by per-token values: a feature's activations, a probe score, a loss.

    ``values`` is ``[tokens]`` (one series), ``[series, tokens]``, or a mapping
    ``{name: [tokens]}``. A series with negative values gets a diverging red/blue
    scale centred at 0; a non-negative one a white-to-blue scale.
    """

    MAX_TOKENS: ClassVar[int] = 8192
    MAX_SERIES: ClassVar[int] = 64

    _esm = view_esm("tokens.js")
    _css = view_css("tokens.css")

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    #: [series, tokens]
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
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
        if isinstance(values, Mapping):
            if series_names is not None:
                raise ValueError("series_names: leave it out when values is a dict; the keys are the names.")
            series_names = [str(k) for k in values]
            rows = [to_numpy(v, f"values[{k!r}]") for k, v in values.items()]
            for name, row in zip(series_names, rows):
                check_rank(row, f"values[{name!r}]", (1,), "[tokens]")
                check_axis(row, f"values[{name!r}]", 0, len(toks), "tokens")
                check_finite(row, f"values[{name!r}]")
            arr = np.stack(rows) if rows else np.zeros((0, len(toks)))
        else:
            arr = to_numpy(values, "values")
            check_rank(arr, "values", (1, 2), "[tokens] or [series, tokens]")
            check_axis(arr, "values", -1, len(toks), "tokens")
            check_finite(arr, "values")
            if arr.ndim == 1:
                arr = arr[None]
        check_cap(len(toks), self.MAX_TOKENS, "tokens", "Show a window, e.g. tokens[:2000] and values[..., :2000].")
        if arr.shape[0] == 0:
            raise ValueError("values: no series given; pass at least one [tokens] array.")
        check_cap(arr.shape[0], self.MAX_SERIES, "series", "Pass fewer series, e.g. values[:16].")
        names = list(series_names) if series_names is not None else [f"series {i}" for i in range(arr.shape[0])]
        if len(names) != arr.shape[0]:
            raise ValueError(f"series_names: got {len(names)} names for {arr.shape[0]} series.")
        if not 0 <= selected_series < arr.shape[0]:
            raise ValueError(f"selected_series must be in [0, {arr.shape[0]}), got {selected_series}.")
        super().__init__(
            tokens=toks,
            shape=list(arr.shape),
            values=to_wire(arr, check_dtype(dtype)),
            dtype=dtype,
            series_names=[str(n) for n in names],
            selected_series=selected_series,
            title=title,
        )

    @property
    def array(self) -> np.ndarray:
        """The values as received by the browser, ``[series, tokens]`` float32."""
        return from_wire(self.values, self.dtype, self.shape).astype(np.float32)

    def _describe(self) -> str:
        n = self.shape[0]
        return f"{n} series, {len(self.tokens)} tokens"
