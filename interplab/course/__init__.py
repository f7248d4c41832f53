"""Build the course notebooks from their single sources.

``solutions/NN_slug.py`` (jupytext percent format) is the only file an author
edits. ``build`` writes ``solutions/NN_slug.ipynb`` (everything) and
``notebooks/NN_slug.ipynb`` (each ``# BEGIN SOLUTION`` / ``# END SOLUTION``
block replaced by a stub that raises ``NotImplementedError``). Both are
written without execution counts or random cell ids, so a rebuild of unchanged
sources is byte-identical and ``--check`` can fail CI on drift.

The one exception to "no outputs": a code cell whose first line is
``# NBVAL_CHECK_OUTPUT`` keeps, in the solution notebook only, the outputs that
``build --refresh-outputs`` recorded for it (see ``interplab.course.outputs``),
as long as its source is unchanged; nbval then compares them on every test run.
Every error names the line of the ``.py`` source it is about.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\b:?\s*(?P<hint>.*)$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
CELL_MARKER = re.compile(r"^# %%")
CHECK_OUTPUT = "# NBVAL_CHECK_OUTPUT"
EXERCISE_HEADING = re.compile(r"^#+\s*Exercise\s+(?P<number>\w+)", re.IGNORECASE | re.MULTILINE)
FOLDED_HINT = re.compile(r"<details>\s*<summary>[^<]*hint", re.IGNORECASE)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
REPOSITORY = "https://github.com/interplab/interplab"
SETUP_TAG = "colab-setup"


def setup_cell_source(version: str | None = None) -> str:
    """The first code cell of every notebook: installs the course on Colab, does nothing locally.

    It pins the release the notebook was built from, so an old notebook never runs
    against newer library code, and pins torch to the build Colab already has (with
    CUDA), so installing the course never replaces it. Written here once rather than
    in every chapter source.
    """
    if version is None:
        from interplab import __version__ as version

    ref = f"{REPOSITORY}@v{version}"
    return (
        f"# Setup: on Colab this installs the course (interplab {version}, the release this notebook\n"
        "# belongs to) and keeps Colab's own torch; locally, where the course is installed, it does nothing.\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        "    import torch  # Colab's build, with CUDA: pinned below so that pip never replaces it\n\n"
        '    %pip install -q "torch=={torch.__version__}" '
        f'"interplab-widgets @ git+{ref}#subdirectory=widgets" "interplab @ git+{ref}"'
    )


class CourseBuildError(ValueError):
    """A chapter source that cannot be turned into notebooks."""


def _pyproject_version(text: str) -> str | None:
    """``[project] version`` of a pyproject.toml text, or None."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line is enough
        section = re.search(r"^\[project\]\s*$(?P<body>.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
        line = section and re.search(r'^version\s*=\s*"(?P<v>[^"]+)"', section["body"], re.MULTILINE)
        return line["v"] if line else None
    try:
        return tomllib.loads(text)["project"]["version"]
    except (KeyError, ValueError):
        return None


def project_version(root: Path, required: bool = True) -> str:
    """``[project] version`` from the course's pyproject.toml (else, unless ``required``, the installed one)."""
    path = root / "pyproject.toml"
    version = _pyproject_version(path.read_text()) if path.exists() else None
    if version:
        return version
    if required:
        raise CourseBuildError(f"{path}: no [project] version")
    from interplab import __version__

    return __version__


@dataclass(frozen=True)
class Chapter:
    source: Path

    @property
    def slug(self) -> str:
        return self.source.stem

    @property
    def number(self) -> str:
        return self.slug.split("_", 1)[0]

    @property
    def label(self) -> str:
        """``solutions/NN_slug.py``: how errors name the source."""
        return f"{self.source.parent.name}/{self.source.name}"

    def solution_path(self) -> Path:
        return self.source.with_suffix(".ipynb")

    def exercise_path(self, root: Path) -> Path:
        return root / "notebooks" / f"{self.slug}.ipynb"


def find_chapters(root: Path) -> list[Chapter]:
    return [Chapter(p) for p in sorted((root / "solutions").glob("[0-9][0-9]_*.py"))]


def select_chapters(root: Path, wanted: str | None) -> list[Chapter]:
    """All chapters, or the one named by ``wanted`` (``02``, ``02_patching`` or its path)."""
    chapters = find_chapters(root)
    if not chapters:
        raise CourseBuildError(f"no chapter sources (solutions/NN_slug.py) under {root}")
    if wanted is None:
        return chapters
    key = Path(wanted).stem
    chosen = [c for c in chapters if key in (c.slug, c.number)]
    if not chosen:
        names = ", ".join(c.slug for c in chapters)
        raise CourseBuildError(f"no chapter {wanted!r}; the chapters are {names} (give the number, e.g. 02, or the name)")
    return chosen


def stub_message(exercise: str | None, hint_folded: bool) -> str:
    """What a stub says. Never the hint itself: the hint stays folded in the exercise's text."""
    label = f"Exercise {exercise}" if exercise else "Exercise"
    if hint_folded:
        return f"{label}: write your solution here; a hint is folded in the exercise text above"
    return f"{label}: write your solution here, then run the check cell below"


def strip_solutions(code: str, where: str = "<source>", first_line: int = 1, message: str | None = None
                    ) -> tuple[str, int]:
    """Replace each solution block with a ``NotImplementedError`` stub; return the code and the block count.

    ``where`` and ``first_line`` (the source line of ``code``'s first line) make errors read
    ``solutions/NN_slug.py:LINE``.
    """
    message = message or stub_message(None, hint_folded=False)
    stub_text = message.replace("\\", "\\\\").replace('"', '\\"')
    out: list[str] = []
    inside_since = 0
    blocks = 0
    for offset, line in enumerate(code.splitlines()):
        number = first_line + offset
        begin = BEGIN.match(line)
        if begin:
            if inside_since:
                raise CourseBuildError(f"{where}:{number}: BEGIN SOLUTION inside the solution block opened at line "
                                       f"{inside_since}; add '# END SOLUTION' before it")
            inside_since = number
            blocks += 1
            out.append(f'{begin.group("indent")}raise NotImplementedError("{stub_text}")')
            continue
        if END.match(line):
            if not inside_since:
                raise CourseBuildError(f"{where}:{number}: END SOLUTION without a BEGIN SOLUTION above it")
            inside_since = 0
            continue
        if not inside_since:
            out.append(line)
    if inside_since:
        raise CourseBuildError(f"{where}:{inside_since}: this BEGIN SOLUTION block is never closed; "
                               "add '# END SOLUTION' in the same cell")
    return "\n".join(out), blocks


def _cell_lines(text: str, cells: list) -> list[int]:
    """The source line of each jupytext cell's first line (the line after its ``# %%`` marker)."""
    lines = text.splitlines()
    markers = [number for number, line in enumerate(lines, start=1) if CELL_MARKER.match(line)]
    if len(markers) + 1 == len(cells):  # a first cell without a marker
        markers = [0, *markers]
    if len(markers) != len(cells):  # jupytext split differently: fall back to the cells' text
        starts, cursor = [], 0
        for cell in cells:
            first = cell.source.splitlines()[0] if cell.source.strip() else None
            found = next((i for i in range(cursor, len(lines)) if first is not None and first in lines[i]), None)
            cursor = found if found is not None else cursor
            starts.append(cursor + 1)
        return starts
    starts = []
    for marker, cell in zip(markers, cells):
        first = cell.source.splitlines()[0] if cell.source.strip() else None
        start = marker + 1
        while first is not None and start <= len(lines) and first not in lines[start - 1]:
            start += 1  # skip blank lines jupytext dropped
        starts.append(start if start <= len(lines) else marker + 1)
    return starts


def is_checked(cell) -> bool:
    """A code cell whose first line is ``# NBVAL_CHECK_OUTPUT``: nbval compares its outputs."""
    return cell.cell_type == "code" and cell.source.split("\n", 1)[0].strip() == CHECK_OUTPUT


def _check_marker_placement(cell, label: str, first_line: int) -> None:
    for offset, line in enumerate(cell.source.splitlines()):
        if line.strip().lstrip("#").strip() == "NBVAL_CHECK_OUTPUT" and (offset > 0 or cell.cell_type != "code"):
            what = "a markdown cell" if cell.cell_type != "code" else "the middle of a code cell"
            raise CourseBuildError(f"{label}:{first_line + offset}: NBVAL_CHECK_OUTPUT in {what}; it must be the "
                                   "first line of a code cell, so that the build keeps that cell's recorded outputs")


@dataclass
class RenderedChapter:
    """A chapter's two notebooks, the source line of each solution cell, and the checked cells left unrecorded."""

    chapter: Chapter
    solution: object
    exercise: object
    lines: list[int]
    unrecorded: list[str] = field(default_factory=list)

    def where(self, index: int) -> str:
        return f"{self.chapter.label}:{self.lines[index]}"

    def texts(self) -> tuple[str, str]:
        import nbformat

        return nbformat.writes(self.solution) + "\n", nbformat.writes(self.exercise) + "\n"


def recorded_outputs(path: Path) -> dict[str, list[list]]:
    """Outputs recorded for checked cells in a built solution notebook, by cell source (empty when none)."""
    if not path.exists():
        return {}
    try:
        notebook = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    recorded: dict[str, list[list]] = {}
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "code" and cell.get("execution_count") is not None \
                and source.split("\n", 1)[0].strip() == CHECK_OUTPUT:
            recorded.setdefault(source, []).append(cell.get("outputs", []))
    return recorded


def _set_recorded(cell, outputs: list, count: int) -> None:
    import nbformat

    cell["outputs"] = [nbformat.from_dict(copy.deepcopy(output)) for output in outputs]
    for output in cell["outputs"]:
        if output.get("output_type") == "execute_result":
            output["execution_count"] = count
    # nbval compares only cells with an execution count: an "unrun" reference cell is skipped.
    cell["execution_count"] = count


def render_chapter(chapter: Chapter, recorded: dict[str, list[list]] | None = None, version: str | None = None
                   ) -> RenderedChapter:
    """Both notebooks of a chapter, with ``recorded`` outputs put back into unchanged checked cells.

    ``version`` is the release the Colab setup cell installs (default: the course's pyproject version).
    """
    import jupytext
    import nbformat

    text = chapter.source.read_text()
    label = chapter.label
    version = version or project_version(chapter.source.parent.parent, required=False)
    if "google.colab" in text:
        number = next(i for i, line in enumerate(text.splitlines(), 1) if "google.colab" in line)
        raise CourseBuildError(f"{label}:{number}: the build adds the Colab setup cell to every notebook; "
                               "remove the chapter's own")
    try:
        solution = jupytext.reads(text, fmt="py:percent")
    except Exception as error:  # jupytext raises many types; all mean "not a percent script"
        raise CourseBuildError(f"{label}:1: jupytext cannot read this as a percent script: {error}") from error
    lines = _cell_lines(text, solution.cells)
    for index, cell in enumerate(solution.cells):
        _check_marker_placement(cell, label, lines[index])

    # Exercise numbers and folded hints, from the markdown above each exercise cell.
    exercise_of: dict[int, str | None] = {}
    folded: dict[int, bool] = {}
    added_hints: list[tuple[int, str]] = []
    number, hint_seen = None, False
    for index, cell in enumerate(solution.cells):
        if cell.cell_type == "markdown":
            heading = EXERCISE_HEADING.search(cell.source)
            if heading or re.search(r"^#", cell.source, re.MULTILINE):
                number, hint_seen = (heading.group("number") if heading else None), False
            hint_seen = hint_seen or bool(FOLDED_HINT.search(cell.source))
            continue
        hints = [m.group("hint") for m in map(BEGIN.match, cell.source.splitlines()) if m]
        if not hints:
            continue
        exercise_of[index] = number
        written = " ".join(h.strip() for h in hints if h.strip())
        if not hint_seen and written:  # fold the BEGIN SOLUTION text into a hint above the exercise
            added_hints.append((index, written))
            hint_seen = True
        folded[index] = hint_seen

    # Solution and exercise code cells; the setup cell goes first among code cells.
    solution_cells, cell_lines = [], []
    exercise_sources: dict[int, str] = {}
    total = 0
    first_code = next((i for i, cell in enumerate(solution.cells) if cell.cell_type == "code"), len(solution.cells))
    hint_at = dict(added_hints)
    for index, cell in enumerate(solution.cells):
        if index == first_code:
            solution_cells.append(nbformat.v4.new_code_cell(setup_cell_source(version), metadata={"tags": [SETUP_TAG]}))
            cell_lines.append(lines[index])
        if index in hint_at:
            hint = nbformat.v4.new_markdown_cell(f"<details><summary>Hint</summary>\n\n{hint_at[index]}\n</details>")
            solution_cells.append(hint)
            cell_lines.append(lines[index])
        if cell.cell_type == "code":
            where = label
            stub = stub_message(exercise_of.get(index), folded.get(index, False))
            exercise_code, blocks = strip_solutions(cell.source, where=where, first_line=lines[index], message=stub)
            total += blocks
            exercise_sources[len(solution_cells)] = exercise_code
            cell.source = "\n".join(line for line in cell.source.splitlines() if not (BEGIN.match(line) or END.match(line)))
        solution_cells.append(cell)
        cell_lines.append(lines[index])
    if first_code == len(solution.cells):
        solution_cells.append(nbformat.v4.new_code_cell(setup_cell_source(version), metadata={"tags": [SETUP_TAG]}))
        cell_lines.append(len(text.splitlines()))
    if total == 0:
        raise CourseBuildError(f"{label}:1: the chapter has no exercises (no '# BEGIN SOLUTION' block); "
                               "wrap each exercise's answer in '# BEGIN SOLUTION' ... '# END SOLUTION'")
    solution.cells = solution_cells
    _normalise(solution)
    exercise = nbformat.from_dict(copy.deepcopy(dict(solution)))
    for index, source in exercise_sources.items():
        lines_ = source.split("\n")
        if lines_ and lines_[0].strip() == CHECK_OUTPUT:  # learners' notebooks are never compared
            source = "\n".join(lines_[1:])
        exercise.cells[index].source = source

    rendered = RenderedChapter(chapter, solution, exercise, cell_lines)
    pool = {source: list(outputs) for source, outputs in (recorded or {}).items()}
    count = 0
    for index, cell in enumerate(solution.cells):
        if cell.cell_type != "code":
            continue
        count += 1
        if is_checked(cell):
            kept = pool.get(cell.source)
            if kept:
                _set_recorded(cell, kept.pop(0), count)
            else:
                rendered.unrecorded.append(rendered.where(index))
    for notebook in (solution, exercise):
        nbformat.validate(notebook)
    return rendered


def render(chapter: Chapter, recorded: dict[str, list[list]] | None = None) -> tuple[str, str]:
    """The (solution, exercise) notebooks of a chapter as JSON text."""
    return render_chapter(chapter, recorded).texts()


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


@dataclass
class BuildResult:
    """What ``build`` wrote (or, with ``check``, would write), what no source generates, and what needs a refresh."""

    changed: list[Path]
    orphans: list[Path]
    unrecorded: list[str]

    @property
    def stale(self) -> list[Path]:
        """Every notebook that is out of date or that no source generates."""
        return self.changed + self.orphans


def build(root: Path, check: bool = False) -> BuildResult:
    """Write (or, with ``check``, compare) every chapter's notebooks.

    Outputs recorded for ``# NBVAL_CHECK_OUTPUT`` cells are kept while their source is
    unchanged; the cells whose outputs are missing are listed in ``unrecorded`` (as
    ``solutions/NN_slug.py:LINE``). Notebooks in ``notebooks/`` or ``solutions/`` that no
    source generates are listed in ``orphans``, never deleted silently.
    """
    chapters = select_chapters(root, None)
    result = BuildResult([], [], [])
    expected = set()
    for chapter in chapters:
        rendered = render_chapter(chapter, recorded_outputs(chapter.solution_path()))
        result.unrecorded += rendered.unrecorded
        solution_text, exercise_text = rendered.texts()
        for path, text in ((chapter.solution_path(), solution_text), (chapter.exercise_path(root), exercise_text)):
            expected.add(path)
            if not path.exists() or path.read_text() != text:
                result.changed.append(path)
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    result.orphans = [p for p in [*(root / "notebooks").glob("*.ipynb"), *(root / "solutions").glob("*.ipynb")]
                      if p not in expected]
    return result
