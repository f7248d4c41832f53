"""What every chapter's checkers share: comparing outputs and reporting clearly."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch


class CheckFailed(AssertionError):
    """The learner's answer differs from the reference; the message says how."""


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        preview = ", ".join(f"{v:.4g}" for v in flat[:6].tolist())
        more = ", ..." if flat.numel() > 6 else ""
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: [{preview}{more}]"
    return repr(value)


def compare_outputs(got: Any, expected: Any, case: str, atol: float = 1e-4, rtol: float = 1e-3) -> None:
    """Raise ``CheckFailed`` unless ``got`` matches ``expected`` (tensors: shape then values)."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{case}: expected a tensor, got {type(got).__name__} ({_describe(got)})")
        if tuple(got.shape) != tuple(expected.shape):
            raise CheckFailed(f"{case}: wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}")
        got_f, expected_f = got.detach().float(), expected.detach().float()
        if not torch.isfinite(got_f).all():
            raise CheckFailed(f"{case}: your output contains NaN or Inf: {_describe(got)}")
        if not torch.allclose(got_f, expected_f, atol=atol, rtol=rtol):
            worst = (got_f - expected_f).abs().argmax().item()
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected_f.shape))
            raise CheckFailed(
                f"{case}: values differ; largest difference at index {index}: expected "
                f"{expected_f[index].item():.5g}, got {got_f[index].item():.5g}\n"
                f"  expected {_describe(expected)}\n  got      {_describe(got)}")
        return
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or not math.isclose(got, expected, abs_tol=atol, rel_tol=rtol):
            raise CheckFailed(f"{case}: expected {expected:.5g}, got {_describe(got)}")
        return
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not isinstance(expected, (list, tuple, dict)):
        got = got.item()
    if got != expected:
        raise CheckFailed(f"{case}: expected {_describe(expected)}, got {_describe(got)}")


def passed(name: str, cases: int) -> None:
    print(f"✔ {name} passed ({cases} case{'s' if cases != 1 else ''})")


@lru_cache(maxsize=4)
def shipped_model(name: str):
    """The zoo model a checker tests against, loaded once per kernel."""
    from interplab.zoo import load_model

    return load_model(name)
