"""Static HTML pictures of the views, for places with no widget manager and no JavaScript.

nbconvert, nbviewer, GitHub and VS Code without the widget manager show a view's
``text/html`` instead of the live widget. These helpers build that HTML in Python:
inline styles only (sanitisers drop ``<style>`` blocks and scripts), heatmaps as
small PNG data URIs, every number rounded the same way on every machine, no ids,
so the output is deterministic and a notebook stays small. The colours are the
ones the live views use on a light page.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

BLUES = np.array([[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], float)
REDS = np.array([[255, 255, 255], [252, 187, 161], [251, 106, 74], [203, 24, 29], [103, 0, 13]], float)
MASKED = (236, 236, 236)
NO_VALUE = (210, 210, 210)

CARD = ("font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.4;"
        "color:#222;background:#fff;padding:6px;border:1px solid #ddd;border-radius:4px;max-width:100%;overflow-x:auto")
MUTED = "color:#666;font-size:11px"
MONO = "font-family:ui-monospace,Menlo,Consolas,monospace"
NOTE = "static picture; run the notebook for the interactive view"


def esc(text: str) -> str:
    """Escape for HTML text and attributes."""
    return html.escape(text, quote=True)


def token_text(tok: str) -> str:
    """Whitespace and control characters made visible, as in the live views (the data keeps them)."""
    out = []
    for ch in tok:
        code = ord(ch)
        if ch == "\n":
            out.append("\u21b5")
        elif ch == "\t":
            out.append("\u21e5")
        elif ch == " ":
            out.append("\u00a0")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def fmt(v: float) -> str:
    """Number formatting shared with the browser's iplFmt."""
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e4):
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant}e{int(exp):+d}"
    return f"{v:.{3 if a < 1 else 2}f}"


def _lerp(stops: np.ndarray, t: np.ndarray) -> np.ndarray:
    x = np.clip(t, 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(len(stops) - 2, np.floor(x)).astype(int)
    f = (x - i)[..., None]
    return np.floor(stops[i] + (stops[i + 1] - stops[i]) * f + 0.5).astype(np.uint8)


def seq_rgb(t: np.ndarray) -> np.ndarray:
    """White to blue for t in [0, 1]; returns [..., 3] uint8."""
    return _lerp(BLUES, np.asarray(t, float))


def div_rgb(t: np.ndarray) -> np.ndarray:
    """Red (negative) to white (0) to blue (positive) for t in [-1, 1]."""
    t = np.asarray(t, float)
    return np.where((t < 0)[..., None], _lerp(REDS, -t), _lerp(BLUES, t))


def rgb(c: Sequence[int]) -> str:
    return f"rgb({int(c[0])},{int(c[1])},{int(c[2])})"


def ink(c: Sequence[int]) -> str:
    return "#111" if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 else "#fff"


def png_data_uri(pixels: np.ndarray) -> str:
    """A [rows, cols, 3] uint8 image as a PNG data URI (zlib only, no imaging library)."""
    rows, cols, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].astype(np.uint8).tobytes() for r in range(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def max_pool(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink a 2-D array to at most max_side per axis by block maxima (NaN-aware: NaN only if all NaN)."""
    out = arr
    for axis in (0, 1):
        n = out.shape[axis]
        if n <= max_side:
            continue
        starts = (np.arange(max_side) * n) // max_side
        filled = np.where(np.isnan(out), -np.inf, out)
        pooled = np.maximum.reduceat(filled, starts, axis=axis)
        out = np.where(np.isneginf(pooled), np.nan, pooled)
    return out


def image(pixels: np.ndarray, width: int, height: int, alt: str) -> str:
    return (f'<img src="{png_data_uri(pixels)}" width="{width}" height="{height}" alt="{esc(alt)}" '
            f'style="image-rendering:pixelated;border:1px solid #ccc;display:block">')


def thinned(n: int, extent_px: float, label_px: float = 11.0) -> int:
    """Every how many'th of n labels fits along extent_px without overlapping."""
    per = extent_px / max(n, 1)
    return max(1, math.ceil(label_px / per))


def gradient(colors: np.ndarray) -> str:
    stops = ",".join(rgb(c) for c in colors)
    return f"display:inline-block;width:96px;height:10px;border:1px solid #ccc;vertical-align:middle;background:linear-gradient(to right,{stops})"


def legend(lo: float, hi: float, signed: bool, label: str = "") -> str:
    t = np.linspace(-1, 1, 9) if signed else np.linspace(0, 1, 9)
    colors = div_rgb(t) if signed else seq_rgb(t)
    lab = f"{esc(label)} " if label else ""
    return f'<span style="{MUTED}">{lab}{esc(fmt(lo))} <span style="{gradient(colors)}"></span> {esc(fmt(hi))}</span>'


def token_span(tok: str, color: Sequence[int] | None, tip: str) -> str:
    style = f"padding:0 2px;border-radius:2px;white-space:pre;{MONO}"
    if color is not None:
        style += f";background:{rgb(color)};color:{ink(color)}"
    return f'<span title="{esc(tip)}" style="{style}">{esc(token_text(tok))}</span>'


def card(view_name: str, title: str, body: str) -> str:
    """The outer box; data-ipl-static lets tests and the live runtime find it."""
    return (f'<div data-ipl-static="{esc(view_name)}" style="{CARD}">'
            f'<div style="font-weight:600">{esc(title)}</div>{body}'
            f'<div style="{MUTED};margin-top:4px">{NOTE}</div></div>')
