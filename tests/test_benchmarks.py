"""The benchmark scripts still run, and the claims they print hold, on a tiny setting (timings are not checked)."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patching_benchmark_methods_agree(capsys):
    threads = torch.get_num_threads()
    try:  # 16 prompts: large enough that the pass stops and finishes at the metric's position
        assert _load("patching").main(["--prompts", "16", "--reps", "1", "--sweep", "", "--edge-prompts", "2",
                                       "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "maps identical across the four: True" in out
    assert "same scores: True" in out
    assert "head-level r target >= 0.9: met" in out
