"""Build the course notebooks from their single sources.

``solutions/NN_slug.py`` (jupytext percent format) is the only file an author
edits. ``build`` writes ``solutions/NN_slug.ipynb`` (everything) and
``notebooks/NN_slug.ipynb`` (each ``# BEGIN SOLUTION`` / ``# END SOLUTION``
block replaced by a stub that raises ``NotImplementedError``). Both are
written without outputs, execution counts or random cell ids, so a rebuild of
unchanged sources is byte-identical and ``--check`` can fail CI on drift.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\b:?\s*(?P<hint>.*)$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
DEFAULT_STUB_HINT = "write your solution here, then run the check cell below"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
REPOSITORY = "https://github.com/interplab/interplab"
SETUP_TAG = "colab-setup"


def setup_cell_source() -> str:
    """The first code cell of every notebook: installs the course on Colab, does nothing locally.

    It pins the release the notebook was built from, so an old notebook never runs
    against newer library code. Written here once rather than in every chapter source.
    """
    from interplab import __version__

    ref = f"{REPOSITORY}@v{__version__}"
    return (
        f"# Setup: on Colab this installs the course (interplab {__version__}, the release this notebook\n"
        "# belongs to); locally, where the course is installed, it does nothing.\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "interplab-widgets @ git+{ref}#subdirectory=widgets" "interplab @ git+{ref}"'
    )


class CourseBuildError(ValueError):
    """A chapter source that cannot be turned into notebooks."""


@dataclass(frozen=True)
class Chapter:
    source: Path

    @property
    def slug(self) -> str:
        return self.source.stem

    def solution_path(self) -> Path:
        return self.source.with_suffix(".ipynb")

    def exercise_path(self, root: Path) -> Path:
        return root / "notebooks" / f"{self.slug}.ipynb"


def find_chapters(root: Path) -> list[Chapter]:
    return [Chapter(p) for p in sorted((root / "solutions").glob("[0-9][0-9]_*.py"))]


def strip_solutions(code: str, where: str = "") -> tuple[str, int]:
    """Replace each solution block with a ``NotImplementedError`` stub; return the code and the block count."""
    out: list[str] = []
    inside = False
    blocks = 0
    for number, line in enumerate(code.splitlines(), start=1):
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise CourseBuildError(f"{where} line {number}: BEGIN SOLUTION inside another solution block")
            inside = True
            blocks += 1
            hint = (begin.group("hint") or DEFAULT_STUB_HINT).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{begin.group("indent")}raise NotImplementedError("Exercise: {hint}")')
            continue
        if END.match(line):
            if not inside:
                raise CourseBuildError(f"{where} line {number}: END SOLUTION without BEGIN SOLUTION")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise CourseBuildError(f"{where}: a BEGIN SOLUTION block is never closed")
    return "\n".join(out), blocks


def _normalise(notebook) -> None:
    """Drop everything that changes between runs: outputs, counts, random ids, jupytext metadata."""
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell.cell_type == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


def render(chapter: Chapter) -> tuple[str, str]:
    """The (solution, exercise) notebooks of a chapter as JSON text."""
    import jupytext
    import nbformat

    text = chapter.source.read_text()
    if "google.colab" in text:
        raise CourseBuildError(f"{chapter.source.name}: the build adds the Colab setup cell to every notebook; "
                               "remove the chapter's own")
    solution = jupytext.reads(text, fmt="py:percent")
    first_code = next((i for i, cell in enumerate(solution.cells) if cell.cell_type == "code"), len(solution.cells))
    setup = nbformat.v4.new_code_cell(setup_cell_source(), metadata={"tags": [SETUP_TAG]})
    solution.cells.insert(first_code, setup)
    _normalise(solution)
    exercise = nbformat.from_dict(nbformat.reads(nbformat.writes(solution), as_version=4))
    total = 0
    for cell in exercise.cells:
        if cell.cell_type == "code":
            cell.source, blocks = strip_solutions(cell.source, where=f"{chapter.source.name} cell {cell['id']}")
            total += blocks
    for cell in solution.cells:
        if cell.cell_type == "code":
            cell.source = "\n".join(
                line for line in cell.source.splitlines() if not (BEGIN.match(line) or END.match(line)))
    for notebook in (solution, exercise):
        nbformat.validate(notebook)
    if total == 0:
        raise CourseBuildError(f"{chapter.source.name} has no exercises (no '# BEGIN SOLUTION' block)")
    return nbformat.writes(solution) + "\n", nbformat.writes(exercise) + "\n"


def build(root: Path, check: bool = False) -> list[Path]:
    """Write (or, with ``check``, compare) every chapter's notebooks.

    Returns the notebooks that were (or would be) rewritten, then any notebook in
    ``notebooks/`` or ``solutions/`` that no source generates (those are never deleted
    silently: the caller reports them).
    """
    chapters = find_chapters(root)
    if not chapters:
        raise CourseBuildError(f"no chapter sources (solutions/NN_slug.py) under {root}")
    stale: list[Path] = []
    expected = set()
    for chapter in chapters:
        solution_text, exercise_text = render(chapter)
        for path, text in ((chapter.solution_path(), solution_text), (chapter.exercise_path(root), exercise_text)):
            expected.add(path)
            if not path.exists() or path.read_text() != text:
                stale.append(path)
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    orphans = [p for p in [*(root / "notebooks").glob("*.ipynb"), *(root / "solutions").glob("*.ipynb")]
               if p not in expected]
    return stale + orphans
