"""benchmarks/tuning.py runs end to end on the shipped chapter-06 models (a small prompt set; the card numbers
are asserted in tests/test_tuned_models.py)."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tuning_benchmark_runs_quickly(capsys):
    threads = torch.get_num_threads()
    try:
        assert _load("tuning").main(["--quick", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for line in ("judge at T = 1: 30 held-out prompts x 1 samples", "chat-base", "KL(tuned || base)", "targets"):
        assert line in out, line
