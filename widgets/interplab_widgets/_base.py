"""Shared machinery for every view: ESM loading, deterministic repr, HTML export.

Each view is one ESM file in ``static/``. anywidget cannot resolve relative
imports from a widget's ESM, so the small shared helpers in ``static/_common.js``
are prepended as plain text; that concatenation is the whole "build".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import anywidget

STATIC = Path(__file__).parent / "static"
HTML_FALLBACKS = ("static", "interactive", "none")


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def view_esm(name: str) -> str:
    """Shared helpers + one view's ESM, as one module source string."""
    return _static("_common.js") + "\n" + _static(name)


def view_css(name: str) -> str:
    """Shared CSS + one view's CSS."""
    return _static("_common.css") + "\n" + _static(name)


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside an inline <script> (token strings may hold '</script>')."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class InterplabView(anywidget.AnyWidget):
    """Base for all views: subclasses set ``_esm``/``_css`` and implement ``_describe``."""

    _base_sync: ClassVar[frozenset[str]] = frozenset(anywidget.AnyWidget.class_traits(sync=True)) | {
        "_esm",
        "_css",
        "_anywidget_id",
    }
    #: What goes into the ``text/html`` of notebook outputs, shown where no widget
    #: manager runs (nbconvert, nbviewer, GitHub, VS Code without widgets):
    #: "static" a small picture drawn in Python (no script, a few kB),
    #: "interactive" the whole :meth:`to_html` fragment (needs scripts; stores the
    #: data again), "none" nothing. Set it on a class or on ``InterplabView``.
    html_fallback: ClassVar[str] = "static"

    def _describe(self) -> str:
        """Short shape summary, e.g. ``2 layers x 4 heads, 41 tokens``."""
        raise NotImplementedError

    def _static_html(self) -> str:
        """A script-free picture of the view (see ``_static.py``)."""
        raise NotImplementedError

    def static_html(self) -> str:
        """The static picture that notebook outputs carry as ``text/html``."""
        return self._static_html()

    def __repr__(self) -> str:
        # Jupyter's text/plain for an anywidget is repr(self); keep it free of ids
        # and addresses so nbval compares notebook outputs cleanly.
        return f"{type(self).__name__}({self._describe()})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def view_state(self) -> dict[str, Any]:
        """The synced traits this view's ESM reads (no ipywidgets bookkeeping)."""
        names = sorted(set(self.trait_names(sync=True)) - self._base_sync)
        return {name: getattr(self, name) for name in names}

    def to_html(self, full_document: bool = True, title: str | None = None) -> str:
        """Self-contained HTML: the same ESM inlined, data base64-embedded, no network.

        A mock model (get/set/on/save_changes) stands in for the widget manager, so
        the ESM's ``render({model, el})`` runs unchanged. With ``full_document=False``
        the result is a fragment that can sit beside other views on one page.
        """
        state: dict[str, Any] = {}
        for name, value in self.view_state().items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                state[name] = {"__b64__": base64.b64encode(bytes(value)).decode("ascii")}
            elif isinstance(value, tuple):
                state[name] = list(value)
            else:
                state[name] = value
        esm = str(self._esm)
        css = str(self._css)
        # The id comes from the content, so an export is deterministic (nbval, diffs);
        # copies of one output share it and the runtime renders each copy once.
        digest = hashlib.sha1((esm + css + json.dumps(state, sort_keys=True)).encode()).hexdigest()[:16]
        element_id = f"ipl-{digest}"
        fragment = (
            f'<div id="{element_id}" class="ipl-export" data-ipl-view="{type(self).__name__}">{self._static_html()}</div>\n'
            f'<script type="module">\n'
            f"const ESM = {_json_for_script(esm)};\n"
            f"const CSS = {_json_for_script(css)};\n"
            f"const CSS_KEY = {_json_for_script(type(self).__name__)};\n"
            f"const STATE = {_json_for_script(state)};\n"
            f'const ELEMENT_ID = "{element_id}";\n'
            f"{_static('_runtime.js')}\n"
            f"</script>\n"
        )
        if not full_document:
            return fragment
        heading = title or repr(self)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_escape(heading)}</title>\n</head>\n<body>\n{fragment}</body>\n</html>\n"
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_html` to ``path`` and return it as a Path."""
        out = Path(path)
        out.write_text(self.to_html(), encoding="utf-8")
        return out

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        """anywidget's bundle (text/plain = our repr) plus a ``text/html`` fallback.

        Front ends with a widget manager pick the widget; the others show the HTML,
        by default the static picture (deterministic, so nbval can compare it).
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return bundle
        mode = self.html_fallback
        if mode not in HTML_FALLBACKS:
            raise ValueError(f"html_fallback must be one of {HTML_FALLBACKS}, got {mode!r}.")
        if mode == "static":
            bundle[0]["text/html"] = self._static_html()
        elif mode == "interactive":
            bundle[0]["text/html"] = self.to_html(full_document=False)
        return bundle


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
