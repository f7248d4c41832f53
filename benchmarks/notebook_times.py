"""How long each solution notebook takes to run start to finish, against its budget.

    python benchmarks/notebook_times.py [solutions/00_tour.ipynb ...]

Budgets come from the issues: a chapter must run on 2 CPU cores in minutes
(00: 60 s, 01: 2 min, 02: 3 min). Wall time on a shared machine is noisy; rerun
before concluding anything from one slow run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = {"00": 60, "01": 120, "02": 180, "03": 180, "04": 180, "05": 180, "06": 180}


def run(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every solutions/NN_*.ipynb")
    paths = parser.parse_args(argv).notebooks or sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    print(f"{'notebook':28s} {'seconds':>8s} {'budget':>7s} {'share of budget':>16s}")
    over = 0
    for path in paths:
        seconds = run(path)
        budget = BUDGET_SECONDS.get(path.name[:2])
        share = f"{seconds / budget:.2f}" if budget else "-"
        over += bool(budget and seconds > budget)
        print(f"{path.name:28s} {seconds:8.1f} {budget or '-':>7} {share:>16s}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
