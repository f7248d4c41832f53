"""The README keeps its promise: exactly two set-up commands, and CI runs the second one."""
import re


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_exactly_two_setup_commands(repo_root):
    blocks = _bash_blocks((repo_root / "README.md").read_text())
    assert len(blocks) == 2, blocks
    assert all("\n" not in block for block in blocks), "each is one copy-pasteable line"
    install_and_open, run_tests = blocks
    assert "-c constraints.txt" in install_and_open and "jupyter lab" in install_and_open
    assert "-c constraints.txt" in run_tests and run_tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command(repo_root):
    run_tests = _bash_blocks((repo_root / "README.md").read_text())[1]
    create_venv, install, test = run_tests.split(" && ")
    ci = (repo_root / ".ci" / "run").read_text()
    assert create_venv in ci
    assert install.replace(".venv/bin/pip install", ".venv/bin/pip install -q") in ci
    assert "tests=(.venv/bin/python -m pytest)" in ci and test == ".venv/bin/python -m pytest"
    assert "torch==2.13.0" in (repo_root / "constraints.txt").read_text()
