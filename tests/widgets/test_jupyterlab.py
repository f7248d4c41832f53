"""End to end: a real JupyterLab, and Notebook 7, run a notebook that displays an AttentionView.

This is the only test that exercises the live widget path (kernel comm, binary
buffers, anywidget's front end loading our ESM), which the exported-HTML tests
replace with a mock model. Notebook 7 is built from JupyterLab's parts but is its
own application with its own URL scheme and shell, so it gets its own run.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.jupyterlab, pytest.mark.browser]

SERVER_START_S = 90
WIDGET_RENDER_MS = 120_000

NOTEBOOK_SOURCE = """\
import numpy as np
from interplab_widgets import AttentionView

pattern = np.tril(np.ones((3, 6, 6)))
pattern /= pattern.sum(-1, keepdims=True)
view = AttentionView(["<bos>", "When", " Mary", " and", " John", " went"], pattern, title="e2e attention")
view
"""


@dataclass(frozen=True)
class Frontend:
    """How to start one Jupyter front end and where it opens a notebook."""

    name: str
    module: str  # python -m <module>
    app: str  # the traitlets class holding its options
    notebook_url: str


FRONTENDS = [
    Frontend("jupyterlab", "jupyterlab", "LabApp", "/lab/tree/demo.ipynb"),
    Frontend("notebook7", "notebook", "JupyterNotebookApp", "/notebooks/demo.ipynb"),
]


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    frontend: Frontend


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_SOURCE), nbformat.v4.new_code_cell('print("selected head:", view.selected_head)')]
    nbformat.write(nb, path)


@pytest.fixture(params=FRONTENDS, ids=[f.name for f in FRONTENDS])
def lab_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabServer]:
    """`jupyter lab` (or `jupyter notebook`) on 127.0.0.1, a free port, a token and a temp root; always stopped."""
    frontend: Frontend = request.param
    try:
        __import__(frontend.module)
    except ImportError:
        reason = f"{frontend.module} is not installed; pip install -e './widgets[test]'"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set)", pytrace=False)
        pytest.skip(reason)
    root = tmp_path / "root"
    root.mkdir()
    _write_notebook(root / "demo.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    state = tmp_path / "jupyter"
    env = {
        **os.environ,
        # Keep the user's Jupyter config, settings and workspaces out of the test.
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
    }
    cmd = [
        sys.executable, "-m", frontend.module,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--{frontend.app}.expose_app_in_browser=True",
    ]
    if frontend.name == "jupyterlab":  # no PyPI queries from the test
        cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log_path = tmp_path / "lab.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + SERVER_START_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{frontend.name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"{frontend.name} did not answer in {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.5)
            yield LabServer(url, token, root, frontend)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def test_attention_view_renders_in_jupyterlab(browser: Any, lab_server: LabServer) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WIDGET_RENDER_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{lab_server.url}{lab_server.frontend.notebook_url}?token={lab_server.token}")
        # Wait for the notebook panel and its kernel, then run the cell through Lab's command.
        page.wait_for_function(
            "() => { const w = window.jupyterapp?.shell?.currentWidget;"
            " return w?.sessionContext?.session?.kernel?.status === 'idle' && !!w.content?.widgets?.length; }"
        )
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jp-OutputArea .ipl-attention")
        page.wait_for_function("document.querySelectorAll('.jp-OutputArea .ipl-thumb').length === 3")
        assert page.inner_text(".jp-OutputArea .ipl-title") == "e2e attention"
        assert page.locator(".jp-OutputArea .ipl-strip-out .ipl-token").count() == 6
        page.wait_for_selector(".jp-OutputArea :text('selected head: 0')")
        # A click in the browser syncs back to the kernel: re-running cell 2 prints the new head.
        page.click(".jp-OutputArea .ipl-thumb >> nth=2")
        page.wait_for_selector(".jp-OutputArea .ipl-thumb.ipl-selected[data-head='2']")
        page.evaluate(
            "async () => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = 1;"
            " await window.jupyterapp.commands.execute('notebook:run-cell'); }"
        )
        page.wait_for_selector(".jp-OutputArea :text('selected head: 2')")
        # The front end shows the live widget, not the static text/html fallback next to it.
        assert page.locator(".jp-OutputArea [data-ipl-static]").count() == 0
        # In the dark theme the view takes JupyterLab's colours instead of staying a white box.
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_function(
            "() => { const r = document.querySelector('.jp-OutputArea .ipl-root');"
            " const want = getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim();"
            " const probe = document.createElement('div'); probe.style.color = want; document.body.appendChild(probe);"
            " const ok = getComputedStyle(r).backgroundColor === getComputedStyle(probe).color"
            "   && getComputedStyle(r).backgroundColor !== 'rgb(255, 255, 255)'; probe.remove(); return ok; }"
        )
        assert not [e for e in errors if "ipl" in e or "interplab" in e or "anywidget" in e], errors
    finally:
        context.close()
