import json
import sys
import types

import nbformat
import pytest

from interplab.course import (
    BEGIN,
    CourseBuildError,
    build,
    find_chapters,
    render_chapter,
    setup_cell_source,
    strip_solutions,
)
from interplab.course.__main__ import main

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

FOLDED_CHAPTER = '''# %% [markdown]
# ### Exercise 3 — double it
#
# <details><summary>Hint</summary>
#
# Multiply by two.
# </details>

# %%
def double(x):
    # BEGIN SOLUTION: x * 2, the spoiler
    return x * 2
    # END SOLUTION


# %%
# NBVAL_CHECK_OUTPUT
print(double(0.1) + 0.2)
'''


def _repo(tmp_path, text=MINI_CHAPTER, name="01_mini.py"):
    (tmp_path / "solutions").mkdir(exist_ok=True)
    (tmp_path / "solutions" / name).write_text(text)
    return tmp_path


def test_strip_solutions_keeps_indentation_and_stub_message():
    code, blocks = strip_solutions(MINI_CHAPTER.split("# %%\n")[-1], message="Exercise 1: write it")
    assert blocks == 1
    assert '    raise NotImplementedError("Exercise 1: write it")' in code
    assert "x * 2" not in code and "SOLUTION" not in code and "multiply by two" not in code
    assert "print(double(2))" in code


@pytest.mark.parametrize("bad, line", [
    ("# BEGIN SOLUTION\nx = 1\n", 10),
    ("x = 1\n# END SOLUTION\n", 11),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", 11),
])
def test_unbalanced_markers_are_refused_with_their_line(bad, line):
    with pytest.raises(CourseBuildError, match=rf"^solutions/01_x\.py:{line}: "):
        strip_solutions(bad, where="solutions/01_x.py", first_line=10)


@pytest.mark.parametrize("source, line, message", [
    (MINI_CHAPTER.replace("    # END SOLUTION\n", ""), 9, "never closed"),
    (MINI_CHAPTER + "\n# %%\n# just a comment\n# END SOLUTION\n", 19, "END SOLUTION without"),
    (MINI_CHAPTER + '\n# %%\nimport sys\nif "google.colab" in sys.modules:\n    pass\n', 19, "setup cell"),
    (MINI_CHAPTER + "\n# %%\nx = 1\n# NBVAL_CHECK_OUTPUT\nprint(x)\n", 19, "first line of a code cell"),
    ("# %%\nx = 1\n", 1, "no exercises"),
])
def test_build_errors_name_the_source_line(tmp_path, source, line, message):
    root = _repo(tmp_path, source, "03_slug.py")
    with pytest.raises(CourseBuildError) as error:
        build(root)
    text = str(error.value)
    assert text.startswith(f"solutions/03_slug.py:{line}: "), text
    assert message in text


def test_build_writes_clean_deterministic_notebooks(tmp_path):
    root = _repo(tmp_path)
    result = build(root)
    assert {p.relative_to(root).as_posix() for p in result.changed} == {"solutions/01_mini.ipynb",
                                                                        "notebooks/01_mini.ipynb"}
    assert result.orphans == [] and result.unrecorded == []
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
    # No folded hint in the source: the BEGIN SOLUTION text becomes one, above the exercise.
    assert solution.cells[3].cell_type == "markdown" and "<details>" in solution.cells[3].source
    assert "multiply by two" in exercise.cells[3].source
    assert "x * 2" in solution.cells[4].source and "SOLUTION" not in solution.cells[4].source
    assert "NotImplementedError" in exercise.cells[4].source and "x * 2" not in exercise.cells[4].source
    assert "multiply by two" not in exercise.cells[4].source, "the stub does not repeat the hint"
    assert build(root, check=True).stale == [], "a second build of the same source changes nothing"


def test_stub_keeps_the_folded_hint_folded(tmp_path):
    rendered = render_chapter(find_chapters(_repo(tmp_path, FOLDED_CHAPTER, "04_fold.py"))[0])
    exercise = rendered.exercise
    hints = [c for c in exercise.cells if c.cell_type == "markdown" and "<details>" in c.source]
    assert len(hints) == 1, "the source's folded hint is kept, and no second one is added"
    stub = next(c.source for c in exercise.cells if "NotImplementedError" in c.source)
    assert "Exercise 3:" in stub and "hint is folded" in stub
    assert "spoiler" not in stub and "Multiply by two" not in stub
    assert "NBVAL_CHECK_OUTPUT" not in "".join(c.source for c in exercise.cells), "learners' notebooks are not compared"


def test_course_stubs_never_spoil_their_hints(repo_root):
    """Every exercise of every chapter has a folded hint above it, and its stub does not repeat it."""
    for chapter in find_chapters(repo_root):
        hints = [m.group("hint").strip() for line in chapter.source.read_text().splitlines()
                 if (m := BEGIN.match(line)) and m.group("hint").strip()]
        rendered = render_chapter(chapter)
        stubs = [line for cell in rendered.exercise.cells if cell.cell_type == "code"
                 for line in cell.source.splitlines() if "raise NotImplementedError" in line]
        assert stubs, chapter.slug
        for stub in stubs:
            assert "hint is folded" in stub, f"{chapter.label}: {stub.strip()}"
            assert not any(hint in stub for hint in hints), f"{chapter.label}: the stub spoils its hint: {stub}"


def _record(path, outputs):
    """What ``build --refresh-outputs`` leaves: outputs and a count on each checked cell."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("# NBVAL_CHECK_OUTPUT"):
            cell["outputs"], cell["execution_count"] = outputs, 7
    path.write_text(json.dumps(notebook))


def test_build_keeps_recorded_outputs_until_the_checked_cell_changes(tmp_path):
    root = _repo(tmp_path, FOLDED_CHAPTER, "04_fold.py")
    source = root / "solutions" / "04_fold.py"
    solution_path, exercise_path = root / "solutions" / "04_fold.ipynb", root / "notebooks" / "04_fold.ipynb"
    assert build(root).unrecorded == ["solutions/04_fold.py:17"], "a checked cell starts without outputs"
    stdout = [{"output_type": "stream", "name": "stdout", "text": "0.30000000000000004\n"}]
    _record(solution_path, stdout)

    result = build(root)
    assert result.unrecorded == [] and result.changed == [solution_path], "the count becomes the cell's position"
    assert build(root, check=True).stale == []
    checked = nbformat.read(solution_path, as_version=4).cells[-1]
    assert checked.outputs == stdout and checked.execution_count == 3
    assert all(not c.get("outputs") for c in nbformat.read(exercise_path, as_version=4).cells)

    source.write_text(source.read_text().replace("return x * 2", "return 2 * x"))  # another cell: kept
    build(root)
    assert nbformat.read(solution_path, as_version=4).cells[-1].outputs == stdout

    source.write_text(source.read_text().replace("+ 0.2)", "+ 0.3)"))  # the checked cell: dropped
    check = build(root, check=True)
    assert check.unrecorded == ["solutions/04_fold.py:17"] and solution_path in check.changed
    build(root)
    checked = nbformat.read(solution_path, as_version=4).cells[-1]
    assert checked.outputs == [] and checked.execution_count is None


def test_check_cli_names_checked_cells_without_outputs(tmp_path, capsys):
    root = _repo(tmp_path, FOLDED_CHAPTER, "04_fold.py")
    build(root)
    assert main(["build", "--check", "--root", str(root)]) == 1
    stderr = capsys.readouterr().err
    assert "solutions/04_fold.py:17" in stderr and "--refresh-outputs" in stderr


def test_check_detects_drift_and_outputs(tmp_path):
    root = _repo(tmp_path)
    build(root)
    path = root / "notebooks" / "01_mini.ipynb"
    notebook = json.loads(path.read_text())
    notebook["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "4\n"}]
    path.write_text(json.dumps(notebook))
    assert build(root, check=True).stale == [path]
    (root / "notebooks" / "99_orphan.ipynb").write_text("{}")
    assert root / "notebooks" / "99_orphan.ipynb" in build(root, check=True).orphans


def test_setup_cell_runs_nothing_locally():
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(setup_cell_source())
    namespace = {"get_ipython": lambda: pytest.fail("the setup cell ran pip outside Colab")}
    exec(compile(python, "setup", "exec"), namespace)


def test_setup_cell_on_colab_keeps_colabs_torch(monkeypatch):
    """On Colab the cell installs the tagged release with torch pinned to the build already there."""
    import torch
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.utils.text import DollarFormatter

    magics = []

    class Shell:
        def run_line_magic(self, name, line, *args, **kwargs):
            magics.append((name, line))

    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    python = TransformerManager().transform_cell(setup_cell_source("9.8.7"))
    namespace = {"get_ipython": Shell}
    exec(compile(python, "setup", "exec"), namespace)
    assert [name for name, _ in magics] == ["pip"]
    line = DollarFormatter().vformat(magics[0][1], [], namespace)  # how IPython expands {…} in a magic
    assert f'"torch=={torch.__version__}"' in line
    assert "--upgrade" not in line and "-U " not in line
    assert line.count("@v9.8.7") == 2


def test_chapter_without_exercises_is_refused(tmp_path):
    with pytest.raises(CourseBuildError, match="no exercises"):
        build(_repo(tmp_path, "# %%\nx = 1\n"))


def test_committed_notebooks_match_their_sources(repo_root, capsys):
    assert main(["build", "--check", "--root", str(repo_root)]) == 0, capsys.readouterr().err
    assert find_chapters(repo_root), "the course has chapters"
