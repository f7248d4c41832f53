"""The release step: pyproject, __version__, README badges, Colab setup cells and the git tag agree."""
import shutil
import subprocess

import pytest

from interplab.course import CourseBuildError, build
from interplab.course.__main__ import main
from interplab.course.release import badge_problems, check, file_problems, release

CHAPTER = '''# %% [markdown]
# ### Exercise 1 — one
#
# <details><summary>Hint</summary>
#
# One.
# </details>

# %%
def one():
    # BEGIN SOLUTION
    return 1
    # END SOLUTION
'''


def _badges(tag, path="notebooks/01_one.ipynb", repo="interplab/interplab"):
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/{tag}/{path}) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/{repo}/{tag}"
            f"?urlpath=lab/tree/{path})\n")


def _git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def course(tmp_path, monkeypatch):
    """A one-chapter course at version 0.3.0, built and committed in a fresh git repository."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for role in ("AUTHOR", "COMMITTER"):  # an annotated tag needs an identity, which CI may not have
        monkeypatch.setenv(f"GIT_{role}_NAME", "interplab tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@interplab.invalid")
    (tmp_path / "solutions").mkdir()
    (tmp_path / "interplab").mkdir()
    (tmp_path / "solutions" / "01_one.py").write_text(CHAPTER)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "interplab"\nversion = "0.3.0"\n')
    (tmp_path / "interplab" / "__init__.py").write_text('__version__ = "0.3.0"\n')
    (tmp_path / "README.md").write_text("# course\n\n| 01 | one | " + _badges("v0.3.0"))
    build(tmp_path)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "course")
    return tmp_path


def test_badges_must_open_this_repository_at_the_tag(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_one.py").write_text(CHAPTER)
    (tmp_path / "solutions" / "02_two.py").write_text(CHAPTER)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_one.ipynb").write_text("{}")
    assert badge_problems(_badges("v0.3.0"), "0.3.0", tmp_path) == [
        "README.md: no colab badge opens notebooks/02_two.ipynb",
        "README.md: no binder badge opens notebooks/02_two.ipynb"]
    readme = "intro\n" + _badges("v0.2.0") + _badges("v0.3.0", repo="someone/fork", path="notebooks/02_two.ipynb")
    problems = badge_problems(readme, "0.3.0", tmp_path)
    assert "README.md:2: colab link opens v0.2.0, not v0.3.0" in problems
    assert "README.md:2: binder link opens v0.2.0, not v0.3.0" in problems
    assert "README.md:3: colab link to someone/fork, not interplab/interplab" in problems
    assert "README.md:3: colab link opens notebooks/02_two.ipynb, which does not exist" in problems


def test_release_tags_a_consistent_clean_tree_once(course):
    assert file_problems(course) == []
    assert any("tag v0.3.0 does not exist" in problem for problem in check(course))
    assert release(course, "0.3.0").startswith("created tag v0.3.0")
    assert _git(course, "tag", "--list") == "v0.3.0\n"
    assert _git(course, "rev-parse", "v0.3.0^{commit}") == _git(course, "rev-parse", "HEAD")
    assert check(course) == []
    assert "nothing to do" in release(course)


def test_release_refuses_what_disagrees(course):
    with pytest.raises(CourseBuildError, match="not 0.4.0"):
        release(course, "0.4.0")
    (course / "interplab" / "__init__.py").write_text('__version__ = "0.2.9"\n')
    (course / "README.md").write_text((course / "README.md").read_text().replace("v0.3.0", "v0.2.9"))
    with pytest.raises(CourseBuildError) as error:
        release(course)
    message = str(error.value)
    assert "interplab/__init__.py: __version__ is 0.2.9, pyproject.toml says 0.3.0" in message
    assert "colab link opens v0.2.9, not v0.3.0" in message
    assert "uncommitted changes" in message
    assert _git(course, "tag", "--list") == "", "nothing was tagged"


def test_setup_cells_must_install_the_version(course, capsys):
    (course / "pyproject.toml").write_text('[project]\nname = "interplab"\nversion = "0.4.0"\n')
    problems = file_problems(course)
    assert "notebooks/01_one.ipynb: the Colab setup cell installs ['@v0.3.0'], not @v0.4.0 " \
           "(run `python -m interplab.course build`)" in problems
    assert main(["release", "--check", "--root", str(course)]) == 1
    stderr = capsys.readouterr().err
    assert "not @v0.4.0" in stderr and "tag v0.4.0 does not exist" in stderr


def test_the_course_files_agree_on_one_version(repo_root):
    """pyproject, interplab.__version__, every README badge and every notebook's setup cell (the tag is not
    checked here: a clone may lack tags; `python -m interplab.course release --check` checks it)."""
    assert file_problems(repo_root) == []
