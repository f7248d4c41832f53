"""benchmarks/steering.py runs end to end on the shipped chat model (small prompt sets; the numbers are
measured by the full run, and the shipped model's targets are asserted in tests/test_steering.py)."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steering_benchmark_runs_quickly(capsys):
    threads = torch.get_num_threads()
    try:
        assert _load("steering").main(["--quick", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for line in ("held-out harmful refusal", "random directions: max |refusal change|", "monotone in the coefficient",
                 "max |logit difference|", "retrained on the ablated residual", "site chosen in advance"):
        assert line in out, line
    assert "target <= 1e-4: met" in out  # exact at any size: weight orthogonalisation equals the hooks
