"""NBVAL_CHECK_OUTPUT end to end: record outputs with the build, then nbval compares them.

A tiny chapter in tmp_path is executed by ``build --refresh-outputs``; nbval (as the test suite
runs it: --nbval-lax and the repository's sanitizer) passes on it although its timings,
memory addresses and float noise differ between runs, and fails once a checked number changes.
"""
import re
import subprocess
import sys

import nbformat
import pytest

from interplab.course import CourseBuildError, build
from interplab.course.outputs import comparable_outputs, refresh_outputs

CHAPTER = '''# %% [markdown]
# ### Exercise 1 — a number
#
# <details><summary>Hint</summary>
#
# Return it.
# </details>

# %%
import time

SCALE = 2.0


def answer():
    # BEGIN SOLUTION
    return 0.1 + 0.2
    # END SOLUTION


# %%
# NBVAL_CHECK_OUTPUT
start = time.perf_counter()
value = answer() * SCALE + time.perf_counter_ns() % 97 * 1e-9  # float noise below the third decimal
print(f"logit difference {value!r} in {time.perf_counter() - start:.6f} s")
object()

# %%
print("unchecked: any output", time.time())
'''


def _chapter(tmp_path, text=CHAPTER):
    (tmp_path / "solutions").mkdir(exist_ok=True)
    (tmp_path / "solutions" / "01_tiny.py").write_text(text)
    return tmp_path


def _nbval(root, repo_root, *notebooks):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(root), "--nbval-lax",
         "--nbval-current-env", "--nbval-sanitize-with", str(repo_root / "nbval_sanitize.cfg"), *map(str, notebooks)],
        capture_output=True, text=True, cwd=root, timeout=300)


@pytest.mark.slow  # two kernels and a pytest run: 10-40 s on a busy machine
def test_recorded_outputs_are_compared_by_nbval(tmp_path, repo_root):
    root = _chapter(tmp_path)
    written = refresh_outputs(root, "01", log=lambda *_: None)
    solution = root / "solutions" / "01_tiny.ipynb"
    assert solution in written
    notebook = nbformat.read(solution, as_version=4)
    checked, unchecked = notebook.cells[-2], notebook.cells[-1]
    assert checked.execution_count == 3 and unchecked.execution_count is None and unchecked.outputs == []
    kinds = [output.output_type for output in checked.outputs]
    assert kinds == ["stream", "execute_result"]
    assert checked.outputs[0].text.startswith("logit difference 0.6000")
    assert re.fullmatch(r"<object (object )?at 0x[0-9a-f]+>", checked.outputs[1].data["text/plain"])
    assert build(root, check=True).stale == [] and build(root, check=True).unrecorded == []
    assert all(not cell.get("outputs") for cell in nbformat.read(root / "notebooks" / "01_tiny.ipynb", 4).cells)
    (root / "fresh").mkdir()
    fresh = root / "fresh" / "01_tiny.ipynb"
    fresh.write_text(solution.read_text())

    # A change elsewhere that alters the checked number keeps the (now stale) recorded outputs: nbval must fail.
    source = root / "solutions" / "01_tiny.py"
    source.write_text(source.read_text().replace("SCALE = 2.0", "SCALE = 2.5"))
    build(root)
    run = _nbval(root, repo_root, fresh, solution)  # one pytest run for both: its start-up is the slow part
    report = run.stdout
    assert re.search(r"fresh/01_tiny\S*::Cell 2 PASSED", report), report[-3000:]
    assert re.search(r"solutions/01_tiny\S*::Cell 2 FAILED", report), report[-3000:]
    assert "Cell outputs differ" in report and "0.750" in report
    assert len(re.findall(r"::Cell \d+ FAILED", report)) == 1, "only the changed number fails"


def test_refresh_refuses_outputs_nbval_cannot_compare():
    html = [{"output_type": "display_data", "metadata": {},
             "data": {"text/plain": "<View>", "text/html": "<div id='a1b2'>"}}]
    with pytest.raises(CourseBuildError, match=r"solutions/01_x\.py:5: .*text/html"):
        comparable_outputs(html, "solutions/01_x.py:5")
    widget = [{"output_type": "display_data", "metadata": {},
               "data": {"text/plain": "  0%|   | 0/3 [00:00<?, ?it/s]",
                        "application/vnd.jupyter.widget-view+json": {"model_id": "ab12", "version_major": 2}}}]
    assert comparable_outputs(widget, "x") == [
        {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "  0%|   | 0/3 [00:00<?, ?it/s]"}}]
    bars = [{"output_type": "stream", "name": "stderr", "text": " 50%|#   | 1/2\r"},
            {"output_type": "stream", "name": "stderr", "text": "100%|####| 2/2\n"}]
    assert comparable_outputs(bars, "x") == [{"output_type": "stream", "name": "stderr", "text": "100%|####| 2/2\n"}]


def test_refresh_reports_every_problem_and_records_the_other_chapters(tmp_path):
    root = _chapter(tmp_path, CHAPTER.replace("print(\"unchecked", "x = 1\n1 / 0\nprint(\"unchecked"))
    html = CHAPTER.replace("object()\n", "from IPython.display import HTML\nHTML('<b>0.6</b>')\n")
    (root / "solutions" / "02_html.py").write_text(html)
    (root / "solutions" / "03_fine.py").write_text(CHAPTER)
    with pytest.raises(CourseBuildError) as error:
        refresh_outputs(root, log=lambda *_: None)
    lines = str(error.value).splitlines()
    assert lines[0] == "outputs not recorded:"
    assert re.match(r"  solutions/01_tiny\.py:30: .*ZeroDivisionError", lines[1]), lines
    assert re.match(r"  solutions/02_html\.py:22: .*displays text/html.*a cell of its own", lines[2]), lines
    assert "wrote solutions/03_fine.ipynb" in str(error.value)
    assert nbformat.read(root / "solutions" / "03_fine.ipynb", as_version=4).cells[-2].outputs
    assert not (root / "solutions" / "01_tiny.ipynb").exists() and not (root / "solutions" / "02_html.ipynb").exists()


def test_sanitizer_masks_noise_but_not_numbers(repo_root):
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((repo_root / "nbval_sanitize.cfg").read_text())

    def clean(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    same = [("0.30000000000000004", "0.3000000000000001"), ("done in 1.2 s", "done in 13.75 s"),
            ("took 35ms", "took 4 ms"), ("<Foo object at 0x7f3a2b1c9d40>", "<Foo object at 0x7f00aa11bb22>"),
            ("100%|##########| 10/10 [00:01<00:00,  7.50it/s]", "100%|##########| 10/10 [00:03<00:00,  3.10it/s]"),
            ("tensor([-0.00001, 1.23456])", "tensor([0.00002, 1.23459])"), ("1.234567e-05", "1.234999e-05")]
    for left, right in same:
        assert clean(left) == clean(right), (left, right)
    different = [("head 1.3: 2.67", "head 1.3: 2.12"), ("logit diff 7.7", "logit diff 6.1"),
                 ("0.1234", "0.1244"), ("8 samples", "9 samples"), ("layer 0", "layer 1")]
    for left, right in different:
        assert clean(left) != clean(right), (left, right)
