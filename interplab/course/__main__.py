"""Build and release the course.

    python -m interplab.course build [--check] [--root DIR]
    python -m interplab.course build --refresh-outputs [CHAPTER] [--root DIR]
    python -m interplab.course release --check [--root DIR]
    python -m interplab.course release [VERSION] [--root DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interplab.course import CourseBuildError, build

REFRESH_HINT = "python -m interplab.course build --refresh-outputs"


def _build(args, root: Path) -> int:
    if args.refresh_outputs is not None:
        if args.check:
            print("error: --check and --refresh-outputs do not go together", file=sys.stderr)
            return 2
        from interplab.course.outputs import refresh_outputs

        wanted = None if args.refresh_outputs == "all" else args.refresh_outputs
        written = refresh_outputs(root, wanted)
        for path in written:
            print(f"wrote {path.relative_to(root)}")
        if not written:
            print("the recorded outputs were already up to date")
        return 0
    result = build(root, check=args.check)
    unrecorded = [f"  {where}" for where in result.unrecorded]
    if args.check:
        failed = False
        if result.stale:
            print("out of date (run `python -m interplab.course build`):", file=sys.stderr)
            for path in result.stale:
                print(f"  {path.relative_to(root)}", file=sys.stderr)
            failed = True
        if unrecorded:
            print(f"NBVAL_CHECK_OUTPUT cells without recorded outputs (new, or their source changed since the outputs "
                  f"were recorded), which nbval would skip; run `{REFRESH_HINT} NN`:", file=sys.stderr)
            print("\n".join(unrecorded), file=sys.stderr)
            failed = True
        if failed:
            return 1
        print("notebooks are up to date with solutions/*.py")
        return 0
    for path in result.changed:
        print(f"wrote {path.relative_to(root)}")
    for path in result.orphans:
        print(f"no source generates {path.relative_to(root)}: delete it or add solutions/{path.stem}.py",
              file=sys.stderr)
    if unrecorded:
        print(f"note: these NBVAL_CHECK_OUTPUT cells have no recorded outputs (new, or their source changed); "
              f"run `{REFRESH_HINT} NN` to record them:", file=sys.stderr)
        print("\n".join(unrecorded), file=sys.stderr)
    if result.orphans:
        return 1
    if not result.changed:
        print("nothing to do: notebooks are up to date")
    return 0


def _release(args, root: Path) -> int:
    from interplab.course import release

    if args.check:
        problems = release.check(root)
        if problems:
            print("the release is not consistent:", file=sys.stderr)
            print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
            return 1
        version = release.project_version(root)
        print(f"v{version}: pyproject, interplab.__version__, README badges, Colab setup cells and the tag agree")
        return 0
    print(release.release(root, args.version))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="generate solution and exercise notebooks from solutions/*.py")
    cmd.add_argument("--check", action="store_true",
                     help="write nothing; fail if a rebuild would change a notebook or a checked cell has no outputs")
    cmd.add_argument("--refresh-outputs", nargs="?", const="all", metavar="CHAPTER",
                     help="execute the solution notebook (one chapter, e.g. 02, or all) offline in this Python "
                          "and record the outputs of its '# NBVAL_CHECK_OUTPUT' cells")
    cmd.add_argument("--root", default=".", help="the course repository (default: the current folder)")
    rel = sub.add_parser("release", help="check that the version, badges, Colab cells and git tag agree; create the tag")
    rel.add_argument("version", nargs="?", help="the version to tag (must be pyproject.toml's; default: that one)")
    rel.add_argument("--check", action="store_true", help="tag nothing; list every disagreement")
    rel.add_argument("--root", default=".", help="the course repository (default: the current folder)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        return _build(args, root) if args.command == "build" else _release(args, root)
    except CourseBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
