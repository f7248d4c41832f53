"""The release step: one version in every place a learner's link or install points to, and its git tag.

The README's Colab and Binder badges open ``notebooks/NN_slug.ipynb`` at tag ``vX.Y.Z``; the
setup cell of every notebook installs the course from the same tag. ``release --check``
lists every place that disagrees with ``pyproject.toml``'s version; ``release`` checks the
same on a clean tree whose notebooks are up to date, then creates the annotated tag.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from interplab.course import (
    REPOSITORY,
    SETUP_TAG,
    CourseBuildError,
    _pyproject_version,
    find_chapters,
    project_version,
    setup_cell_source,
)

GITHUB = REPOSITORY.removeprefix("https://github.com/")
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/(?P<repo>[^/\s)]+/[^/\s)]+)/blob/"
                        r"(?P<ref>[^/\s)]+)/(?P<path>[^\s)?#]+)")
BINDER_LINK = re.compile(r"https://mybinder\.org/v2/gh/(?P<repo>[^/\s)]+/[^/\s)]+)/(?P<ref>[^?\s)]+)"
                         r"(?:\?urlpath=lab/tree/(?P<path>[^\s)&#]+))?")
VERSION_LINE = re.compile(r'^__version__\s*=\s*["\'](?P<version>[^"\']+)["\']', re.MULTILINE)


def badge_problems(readme: str, version: str, root: Path) -> list[str]:
    """Every Colab or Binder link in the README that does not open this repository at ``v{version}``,
    and every chapter without both badges."""
    problems: list[str] = []
    tag = f"v{version}"
    opened = {"colab": set(), "binder": set()}
    for kind, pattern in (("colab", COLAB_LINK), ("binder", BINDER_LINK)):
        for match in pattern.finditer(readme):
            line = readme.count("\n", 0, match.start()) + 1
            if match["repo"] != GITHUB:
                problems.append(f"README.md:{line}: {kind} link to {match['repo']}, not {GITHUB}")
            if match["ref"] != tag:
                problems.append(f"README.md:{line}: {kind} link opens {match['ref']}, not {tag}")
            if match["path"]:
                opened[kind].add(match["path"])
                if not (root / match["path"]).exists():
                    problems.append(f"README.md:{line}: {kind} link opens {match['path']}, which does not exist")
    for chapter in find_chapters(root):
        path = f"notebooks/{chapter.slug}.ipynb"
        for kind in ("colab", "binder"):
            if path not in opened[kind]:
                problems.append(f"README.md: no {kind} badge opens {path}")
    return problems


def setup_cell_problems(root: Path, version: str) -> list[str]:
    """Every built notebook whose setup cell does not install ``v{version}`` as the build writes it today."""
    problems: list[str] = []
    expected = setup_cell_source(version)
    for path in sorted([*(root / "notebooks").glob("*.ipynb"), *(root / "solutions").glob("*.ipynb")]):
        name = path.relative_to(root).as_posix()
        try:
            cells = json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            problems.append(f"{name}: not a notebook")
            continue
        setup = [c for c in cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
        source = "".join(setup[0]["source"]) if setup and isinstance(setup[0]["source"], list) else \
            (setup[0]["source"] if setup else "")
        if not setup:
            problems.append(f"{name}: no Colab setup cell (run `python -m interplab.course build`)")
        elif source != expected:
            found = re.findall(r"@v[^\"#\s]+", source)
            problems.append(f"{name}: the Colab setup cell installs {sorted(set(found)) or 'something else'}, "
                            f"not @v{version} (run `python -m interplab.course build`)")
    return problems


def file_problems(root: Path) -> list[str]:
    """Disagreements between pyproject.toml, interplab/__init__.py, the README's badges and the notebooks' setup cells."""
    version = project_version(root)
    problems = []
    init = root / "interplab" / "__init__.py"
    declared = VERSION_LINE.search(init.read_text()) if init.exists() else None
    if not declared or declared["version"] != version:
        problems.append(f"interplab/__init__.py: __version__ is {declared['version'] if declared else 'missing'}, "
                        f"pyproject.toml says {version}")
    readme = root / "README.md"
    problems += badge_problems(readme.read_text() if readme.exists() else "", version, root)
    problems += setup_cell_problems(root, version)
    return problems


def _git(root: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise CourseBuildError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip() if result.returncode == 0 else ""


def tag_problems(root: Path, version: str) -> list[str]:
    """Whether tag ``v{version}`` exists and holds this version."""
    tag = f"v{version}"
    if not _git(root, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False):
        return [f"tag {tag} does not exist, so the badges and the Colab cell point nowhere: "
                f"run `python -m interplab.course release {version}` on a clean tree, then `git push origin {tag}`"]
    tagged = _pyproject_version(_git(root, "show", f"{tag}:pyproject.toml", check=False))
    if tagged != version:
        return [f"tag {tag} holds pyproject version {tagged}, not {version}"]
    return []


def check(root: Path) -> list[str]:
    """``release --check``: every problem with the files, then with the tag."""
    return file_problems(root) + tag_problems(root, project_version(root))


def release(root: Path, version: str | None = None) -> str:
    """Create tag ``v{version}`` at HEAD once everything agrees; return what was done."""
    from interplab.course import build

    current = project_version(root)
    if version is not None and version.removeprefix("v") != current:
        raise CourseBuildError(
            f"pyproject.toml is at {current}, not {version}: set the version in pyproject.toml and "
            "interplab/__init__.py, point the README's badges at the new tag, run "
            "`python -m interplab.course build`, commit, then release")
    tag = f"v{current}"
    problems = file_problems(root)
    result = build(root, check=True)
    problems += [f"{p.relative_to(root)}: out of date (run `python -m interplab.course build`)" for p in result.stale]
    problems += [f"{where}: NBVAL_CHECK_OUTPUT cell without recorded outputs "
                 "(run `python -m interplab.course build --refresh-outputs`)" for where in result.unrecorded]
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        problems.append("the working tree has uncommitted changes; commit them first:\n    "
                        + "\n    ".join(dirty.splitlines()[:10]))
    if problems:
        raise CourseBuildError("cannot release:\n  " + "\n  ".join(problems))
    head = _git(root, "rev-parse", "HEAD")
    existing = _git(root, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False)
    if existing:
        if existing == head:
            return f"tag {tag} already marks HEAD ({head[:10]}); nothing to do"
        raise CourseBuildError(f"tag {tag} already exists at {existing[:10]}, not at HEAD ({head[:10]}); "
                               "a published tag is never moved: release a new version instead")
    _git(root, "tag", "-a", tag, "-m", f"interplab {current}")
    return f"created tag {tag} at {head[:10]}; publish it with `git push origin {tag}`"
