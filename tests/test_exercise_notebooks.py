"""Exercise notebooks run start to finish; the only errors allowed are the stubs' NotImplementedError.

(The solution notebooks are executed by nbval: ``pytest`` collects ``solutions/*.ipynb``.)
"""
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercise_notebook_fails_only_on_stubs(path):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [(cell["id"], output) for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    unexpected = [f"{cell_id}: {out.ename}: {out.evalue}" for cell_id, out in errors if out.ename != "NotImplementedError"]
    assert not unexpected, "errors other than the exercise stubs:\n" + "\n".join(unexpected)
    stubs = sum(cell.source.count("raise NotImplementedError") for cell in notebook.cells)
    assert stubs >= 3 and len(errors) >= stubs, "every stub is reached and raises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercise_notebook_is_committed_clean(path):
    """No outputs, no nbval markers, and stubs that point at the folded hint instead of repeating it."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert not any("NBVAL_CHECK_OUTPUT" in cell.source for cell in code), "learners' notebooks are never compared"
    stubs = [line.strip() for cell in code for line in cell.source.splitlines() if "raise NotImplementedError" in line]
    assert stubs and all(re.search(r'"Exercise \w+: write your solution here; a hint is folded', s) for s in stubs), stubs
