"""PatchingHeatmap: a labelled 2-D effect array whose clicked cell syncs back to Python."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets

from ._arrays import check_cap, check_dtype, check_finite, check_rank, from_wire, to_numpy, to_wire
from ._base import InterplabView, view_css, view_esm
from ._static import MUTED, card, div_rgb, esc, fmt, image, ink, legend, rgb, token_text


def _labels(labels: Sequence[Any] | None, n: int, name: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, str):
        raise ValueError(f"{name}: expected a list of {n} labels, got one str.")
    out = [str(x) for x in labels]
    if len(out) != n:
        raise ValueError(f"{name}: got {len(out)} labels for an axis of length {n}; they must match.")
    return out


class PatchingHeatmap(InterplabView):
    """``values[rows, cols]`` (layer x position, layer x head, ...) on a diverging scale at 0.

    Clicking a cell sets ``selected`` to ``(row, col)`` in Python, so a notebook can
    react with ``view.observe(callback, names="selected")``.
    """

    MAX_SIDE: ClassVar[int] = 2048
    MAX_CELLS: ClassVar[int] = 1_048_576

    _esm = view_esm("patching.js")
    _css = view_css("patching.css")

    #: [rows, cols]
    shape = traitlets.List(traitlets.Int()).tag(sync=True)
    values = traitlets.Bytes().tag(sync=True)
    dtype = traitlets.Unicode("float32").tag(sync=True)
    row_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    col_labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    row_title = traitlets.Unicode("layer").tag(sync=True)
    col_title = traitlets.Unicode("position").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    #: What the values are, e.g. "logit difference recovered (1 = clean)"; names the legend.
    quantity = traitlets.Unicode("").tag(sync=True)
    #: Colour saturates at +-vmax (default: the largest |value|).
    vmax = traitlets.Float(1.0).tag(sync=True)
    #: (row, col) of the clicked cell, or None before any click.
    selected = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=None, allow_none=True).tag(sync=True)

    def __init__(
        self,
        values: Any,
        row_labels: Sequence[Any] | None = None,
        col_labels: Sequence[Any] | None = None,
        *,
        row_title: str = "layer",
        col_title: str = "position",
        title: str = "",
        quantity: str = "",
        vmax: float | None = None,
        dtype: str = "float32",
    ) -> None:
        arr = to_numpy(values, "values")
        check_rank(arr, "values", (2,), "[rows, cols]")
        rows, cols = arr.shape
        how = "Slice it, e.g. values[:, :512], or aggregate positions first."
        check_cap(rows, self.MAX_SIDE, "rows", how)
        check_cap(cols, self.MAX_SIDE, "columns", how)
        check_cap(arr.size, self.MAX_CELLS, "cells", how)
        check_finite(arr, "values")
        rlab = _labels(row_labels, rows, "row_labels")
        clab = _labels(col_labels, cols, "col_labels")
        if vmax is not None and (isinstance(vmax, (bool, complex)) or not isinstance(vmax, (int, float, np.integer, np.floating))):
            raise ValueError(f"vmax must be a finite number >= 0, got {vmax!r}.")
        if vmax is None:
            vmax = float(np.abs(arr).max()) if arr.size else 1.0
        if not np.isfinite(vmax) or vmax < 0:
            raise ValueError(f"vmax must be a finite number >= 0, got {vmax}.")
        super().__init__(
            shape=[rows, cols],
            values=to_wire(arr, check_dtype(dtype)),
            dtype=dtype,
            row_labels=rlab,
            col_labels=clab,
            row_title=row_title,
            col_title=col_title,
            title=title,
            quantity=quantity,
            vmax=float(vmax) or 1.0,
        )

    @property
    def array(self) -> np.ndarray:
        """The values as received by the browser, ``[rows, cols]`` float32."""
        return from_wire(self.values, self.dtype, self.shape).astype(np.float32)

    @property
    def selected_labels(self) -> tuple[str, str] | None:
        """Labels of the clicked cell, e.g. ``("L3", "H7")``."""
        if self.selected is None:
            return None
        r, c = self.selected
        return self.row_labels[r], self.col_labels[c]

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict[str, Any]) -> tuple[int, int] | None:
        value = proposal["value"]
        if value is None:
            return None
        r, c = value
        if not (0 <= r < self.shape[0] and 0 <= c < self.shape[1]):
            raise traitlets.TraitError(f"selected {value} is outside the {self.shape[0]} x {self.shape[1]} grid.")
        return (r, c)

    #: Grids up to this many cells get a table with values in the static picture; larger ones an image.
    STATIC_TABLE_CELLS: ClassVar[int] = 400

    def _static_html(self) -> str:
        rows, cols = self.shape
        arr = self.array.astype(np.float64)
        vmax = self.vmax or 1.0
        colors = div_rgb(np.clip(arr / vmax, -1, 1))
        clipped = np.abs(arr) > vmax * (1 + 1e-6)
        quantity = self.quantity or "value"
        label_style = "max-width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
        if rows * cols <= self.STATIC_TABLE_CELLS:
            cell = max(14, min(56, 720 // max(cols, 1)))
            show_values = cell >= 36
            head = "".join(
                f'<th title="{esc(c)}" style="font-weight:400;font-size:11px;{label_style};max-width:{max(cell, 14)}px;'
                f'{"writing-mode:vertical-rl;" if not show_values else ""}">{esc(token_text(c))}</th>'
                for c in self.col_labels
            )
            body_rows = []
            for r in range(rows):
                tds = []
                for c in range(cols):
                    col = colors[r, c]
                    mark = "▲" if clipped[r, c] and arr[r, c] > 0 else "▼" if clipped[r, c] else ""
                    text = f"{mark}{fmt(float(arr[r, c]))}" if show_values else mark
                    tds.append(
                        f'<td title="{esc(self.row_labels[r])}, {esc(self.col_labels[c])}: {esc(fmt(float(arr[r, c])))}" '
                        f'style="width:{cell}px;height:{min(cell, 28) if show_values else cell}px;padding:0;text-align:center;font-size:10px;'
                        f'background:{rgb(col)};color:{ink(col)};border:1px solid #fff">{esc(text)}</td>'
                    )
                body_rows.append(
                    f'<tr><th title="{esc(self.row_labels[r])}" style="font-weight:400;font-size:11px;text-align:right;{label_style}">'
                    f'{esc(token_text(self.row_labels[r]))}</th>{"".join(tds)}</tr>'
                )
            grid = (f'<table style="border-collapse:collapse"><tr><th style="font-size:11px;color:#444;font-weight:400">'
                    f'{esc(self.row_title)} \\ {esc(self.col_title)}</th>{head}</tr>{"".join(body_rows)}</table>')
        else:
            scale = max(1, min(8, 640 // max(cols, 1), 480 // max(rows, 1)))
            grid = (f'<div style="{MUTED}">rows: {esc(self.row_title)} ({rows}), columns: {esc(self.col_title)} ({cols})</div>'
                    + image(colors, cols * scale, rows * scale, quantity))
        note = f"; ▲/▼: beyond ±{fmt(vmax)}, clipped" if clipped.any() else ""
        body = f'<div style="{MUTED}">{legend(-vmax, vmax, True, quantity)}{esc(note)}</div>{grid}'
        return card("PatchingHeatmap", self.title or f"{self.row_title} x {self.col_title}", body)

    def _describe(self) -> str:
        rows, cols = self.shape
        return f"{rows} {self.row_title} x {cols} {self.col_title}"
