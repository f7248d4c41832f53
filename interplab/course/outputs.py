"""Record the outputs of ``# NBVAL_CHECK_OUTPUT`` cells, so nbval compares them on every test run.

``build --refresh-outputs [CHAPTER]`` executes a chapter's solution notebook in a kernel of
the running Python environment, offline, and keeps the outputs of the checked cells only.
What it keeps is what nbval can compare reliably: streams (coalesced, carriage returns
applied, as nbval does), ``text/plain``, ``text/markdown`` and ``text/latex``. Widget model ids and images
are dropped (nbval skips them anyway); HTML, plotly or JavaScript outputs are refused,
because nbval would compare them byte for byte and they carry random ids.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from interplab.course import (
    CourseBuildError,
    RenderedChapter,
    _set_recorded,
    is_checked,
    recorded_outputs,
    render_chapter,
    select_chapters,
)

COMPARED_MIME = ("text/plain", "text/markdown", "text/latex")
SKIPPED_MIME = ("application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def _current_env_kernel():
    """A kernel manager for this Python (the venv the command runs in), whatever kernelspecs are installed."""
    import ipykernel.kernelspec
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class CurrentEnvironment(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    return KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvironment())


def comparable_outputs(outputs: list, where: str) -> list[dict]:
    """The outputs nbval will compare, in a form that does not change between identical runs."""
    kept: list[dict] = []
    streams: dict[str, dict] = {}
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream":
            if output["name"] in streams:
                streams[output["name"]]["text"] += output["text"]
            else:
                streams[output["name"]] = {"output_type": "stream", "name": output["name"], "text": output["text"]}
                kept.append(streams[output["name"]])
        elif kind in ("display_data", "execute_result"):
            data = {}
            for mime, value in output["data"].items():
                if mime in COMPARED_MIME:
                    data[mime] = value
                elif mime not in SKIPPED_MIME:
                    raise CourseBuildError(
                        f"{where}: this NBVAL_CHECK_OUTPUT cell displays {mime}, which nbval would compare byte for "
                        "byte (random ids, timings); move the plot or view into a cell of its own below")
            if data:
                entry = {"output_type": kind, "data": data, "metadata": {}}
                if kind == "execute_result":
                    entry["execution_count"] = None
                kept.append(entry)
        elif kind == "error":
            kept.append({"output_type": "error", "ename": output["ename"], "evalue": output["evalue"],
                         "traceback": []})
    for stream in streams.values():  # as nbval 0.11 does to both sides: apply carriage returns (progress bars)
        stream["text"] = _CARRIAGE_RETURN.sub("", stream["text"])
    return kept


def execute(rendered: RenderedChapter, timeout: int = 900) -> None:
    """Run the solution notebook top to bottom in place; an error names the source line of its cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = rendered.solution
    saved = {name: os.environ.get(name) for name in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    try:
        client = NotebookClient(notebook, km=_current_env_kernel(), timeout=timeout, allow_errors=False,
                                resources={"metadata": {"path": str(rendered.chapter.source.parent)}})
        client.execute()
    except CellExecutionError as error:
        failed = next((i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                       and any(o.get("output_type") == "error" for o in cell.get("outputs", []))), None)
        where = rendered.where(failed) if failed is not None else f"{rendered.chapter.label}:1"
        if failed is not None:  # IPython's traceback names the line inside the cell: "Cell In[7], line 3"
            traceback = "\n".join(line for output in notebook.cells[failed].outputs
                                  if output.get("output_type") == "error" for line in output.get("traceback", []))
            inside = re.search(r"Cell In\[\d+\], line (\d+)", re.sub(r"\x1b\[[0-9;]*m", "", traceback))
            if inside:
                where = f"{rendered.chapter.label}:{rendered.lines[failed] + int(inside.group(1)) - 1}"
        summary = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise CourseBuildError(f"{where}: the cell failed while recording outputs: {summary}") from error
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def refresh_outputs(root: Path, wanted: str | None = None, log=print) -> list[Path]:
    """Execute each chosen chapter and store the outputs of its checked cells; return the notebooks written.

    Chapters without checked cells are rebuilt (keeping nothing) without being executed. A chapter
    with a problem is left as it was; the others are still recorded, and every problem is reported
    at the end in one error.
    """
    written: list[Path] = []
    problems: list[str] = []
    for chapter in select_chapters(root, wanted):
        previous = recorded_outputs(chapter.solution_path())
        rendered = render_chapter(chapter)
        checked = [i for i, cell in enumerate(rendered.solution.cells) if is_checked(cell)]
        if checked:
            log(f"running {chapter.label} ({len(checked)} checked cells) in {sys.executable} ...")
            executed = render_chapter(chapter)
            try:
                execute(executed)
            except CourseBuildError as error:
                problems.append(str(error))
                continue
            count, failed = 0, False
            for index, cell in enumerate(executed.solution.cells):
                if cell.cell_type != "code":
                    continue
                count += 1
                if index in checked:
                    try:
                        outputs = comparable_outputs(cell.get("outputs", []), executed.where(index))
                    except CourseBuildError as error:
                        problems.append(str(error))
                        failed = True
                        continue
                    _set_recorded(rendered.solution.cells[index], outputs, count)
            if failed:
                continue
            rendered.unrecorded.clear()
        elif previous:
            log(f"{chapter.label} has no NBVAL_CHECK_OUTPUT cells any more: dropping its recorded outputs")
        solution_text, exercise_text = rendered.texts()
        for path, text in ((chapter.solution_path(), solution_text), (chapter.exercise_path(root), exercise_text)):
            if not path.exists() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                written.append(path)
    if problems:
        done = "".join(f"\n  wrote {path.relative_to(root)}" for path in written)
        raise CourseBuildError("outputs not recorded:\n  " + "\n  ".join(problems)
                               + (f"\nthe other chapters were recorded:{done}" if done else ""))
    return written
