"""``python -m interplab.course build [--check] [--root DIR]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interplab.course import CourseBuildError, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.course")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="generate solution and exercise notebooks from solutions/*.py")
    cmd.add_argument("--check", action="store_true", help="write nothing; fail if a rebuild would change a notebook")
    cmd.add_argument("--root", default=".", help="the course repository (default: the current folder)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        changed = build(root, check=args.check)
    except CourseBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print("out of date (run `python -m interplab.course build`):", file=sys.stderr)
            for path in changed:
                print(f"  {path.relative_to(root)}", file=sys.stderr)
            return 1
        print("notebooks are up to date with solutions/*.py")
        return 0
    orphans = [path for path in changed if not (root / "solutions" / f"{path.stem}.py").exists()]
    for path in changed:
        if path in orphans:
            print(f"no source generates {path.relative_to(root)}: delete it or add solutions/{path.stem}.py",
                  file=sys.stderr)
        else:
            print(f"wrote {path.relative_to(root)}")
    if orphans:
        return 1
    if not changed:
        print("nothing to do: notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
