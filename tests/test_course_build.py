import json
import subprocess
import sys

import nbformat
import pytest

from interplab.course import CourseBuildError, build, find_chapters, strip_solutions

MINI_CHAPTER = '''# %% [markdown]
# # A chapter

# %% tags=["parameters"]
MODEL_NAME = "attn2-induction"

# %%
def double(x):
    # BEGIN SOLUTION: multiply by two
    y = x * 2
    return y
    # END SOLUTION


print(double(2))
'''


def test_strip_solutions_keeps_indentation_and_hint():
    code, blocks = strip_solutions(MINI_CHAPTER.split("# %%\n")[-1])
    assert blocks == 1
    assert '    raise NotImplementedError("Exercise: multiply by two")' in code
    assert "x * 2" not in code and "SOLUTION" not in code
    assert "print(double(2))" in code


@pytest.mark.parametrize("bad", [
    "# BEGIN SOLUTION\nx = 1\n",
    "x = 1\n# END SOLUTION\n",
    "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n",
])
def test_unbalanced_markers_are_refused(bad):
    with pytest.raises(CourseBuildError):
        strip_solutions(bad)


def _mini_repo(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_mini.py").write_text(MINI_CHAPTER)
    return tmp_path


def test_build_writes_clean_deterministic_notebooks(tmp_path):
    root = _mini_repo(tmp_path)
    written = build(root)
    assert {p.relative_to(root).as_posix() for p in written} == {"solutions/01_mini.ipynb", "notebooks/01_mini.ipynb"}
    solution = nbformat.read(root / "solutions" / "01_mini.ipynb", as_version=4)
    exercise = nbformat.read(root / "notebooks" / "01_mini.ipynb", as_version=4)
    for notebook in (solution, exercise):
        nbformat.validate(notebook)
        assert [c["id"] for c in notebook.cells] == [f"cell-{i:03d}" for i in range(len(notebook.cells))]
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
    setup = solution.cells[1]
    assert setup.metadata["tags"] == ["colab-setup"], "the build puts the Colab setup cell first among code cells"
    assert "google.colab" in setup.source and "@v0.1.0" in setup.source
    assert solution.cells[2].metadata["tags"] == ["parameters"]
    assert "x * 2" in solution.cells[3].source and "SOLUTION" not in solution.cells[3].source
    assert "NotImplementedError" in exercise.cells[3].source and "x * 2" not in exercise.cells[3].source
    assert build(root, check=True) == [], "a second build of the same source changes nothing"


def test_check_detects_drift_and_outputs(tmp_path):
    root = _mini_repo(tmp_path)
    build(root)
    path = root / "notebooks" / "01_mini.ipynb"
    notebook = json.loads(path.read_text())
    notebook["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "4\n"}]
    path.write_text(json.dumps(notebook))
    assert build(root, check=True) == [path]
    (root / "notebooks" / "99_orphan.ipynb").write_text("{}")
    assert root / "notebooks" / "99_orphan.ipynb" in build(root, check=True)


def test_setup_cell_runs_nothing_locally():
    from IPython.core.inputtransformer2 import TransformerManager

    from interplab.course import setup_cell_source

    python = TransformerManager().transform_cell(setup_cell_source())
    namespace = {"get_ipython": lambda: pytest.fail("the setup cell ran pip outside Colab")}
    exec(compile(python, "setup", "exec"), namespace)


def test_source_with_its_own_setup_cell_is_refused(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_dup.py").write_text(
        MINI_CHAPTER + '\n# %%\nimport sys\nif "google.colab" in sys.modules:\n    pass\n')
    with pytest.raises(CourseBuildError, match="setup cell"):
        build(tmp_path)


def test_chapter_without_exercises_is_refused(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_empty.py").write_text("# %%\nx = 1\n")
    with pytest.raises(CourseBuildError, match="no exercises"):
        build(tmp_path)


def test_committed_notebooks_match_their_sources(repo_root):
    result = subprocess.run([sys.executable, "-m", "interplab.course", "build", "--check", "--root", str(repo_root)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert find_chapters(repo_root), "the course has chapters"
