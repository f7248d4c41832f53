"""What every chapter's checkers share: comparing outputs, diagnosing mistakes, fresh inputs.

A checker should say *why* an answer is wrong, not only that it is. :func:`compare_outputs`
reports the relative error, where two tensors differ (which indices of each axis), and, through
:func:`diagnose_mismatch`, whether the answer equals a known wrong variant of the reference
(transposed, shifted by one position, flipped sign, off by a constant factor, or a variant the
checker names, such as "the wrong hook point").

Checkers also run on inputs the learner cannot have seen: :func:`fresh_seed` draws a seed at
check time, and :func:`fresh_random_model` builds a small random model whose shapes differ from
the shipped one, so an answer replayed from an earlier run, or one that hard-codes the shipped
model's sizes, fails.
"""
from __future__ import annotations

import math
import secrets
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

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


# ---------------------------------------------------------------------------
# Diagnosis: how far off, where, and which known mistake an answer matches
# ---------------------------------------------------------------------------

def relative_error(got: torch.Tensor | float, expected: torch.Tensor | float) -> float:
    """``||got - expected|| / ||expected||`` (Frobenius norms); the absolute error if ``expected`` is 0."""
    got_t = torch.as_tensor(got, dtype=torch.float64)
    expected_t = torch.as_tensor(expected, dtype=torch.float64)
    difference = (got_t - expected_t).norm().item()
    scale = expected_t.norm().item()
    return difference / scale if scale > 0 else difference


def _close(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> bool:
    if tuple(got.shape) != tuple(expected.shape):
        return False
    got_f, expected_f = got.detach().double(), expected.detach().double()
    both_nan = got_f.isnan() & expected_f.isnan()
    if both_nan.any():
        got_f, expected_f = got_f[~both_nan], expected_f[~both_nan]
    return bool(torch.allclose(got_f, expected_f, atol=atol, rtol=rtol))


def _generic_variants(expected: torch.Tensor, dims: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Wrong answers any square matrix can have: transposed (shifts are :func:`_shift_match`'s job)."""
    variants: dict[str, torch.Tensor] = {}
    if expected.ndim >= 2 and expected.shape[-1] == expected.shape[-2]:
        variants["the expected matrix transposed (rows and columns swapped)"] = expected.transpose(-1, -2)
    return variants


def _shift_match(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                 dims: Sequence[str] | None) -> str | None:
    """Whether ``got`` is ``expected`` moved one step along some axis (an off-by-one position or diagonal)."""
    for axis in range(expected.ndim):
        size = expected.shape[axis]
        if size < 3:
            continue
        name = dims[axis] if dims and axis < len(dims) else f"axis {axis}"
        later, earlier = got.narrow(axis, 1, size - 1), expected.narrow(axis, 0, size - 1)
        if _close(later, earlier, atol, rtol) and not _close(later, expected.narrow(axis, 1, size - 1), atol, rtol):
            return f"the expected values moved one step later along {name} (an off-by-one index or diagonal)"
        got_earlier, expected_later = got.narrow(axis, 0, size - 1), expected.narrow(axis, 1, size - 1)
        if _close(got_earlier, expected_later, atol, rtol) and not _close(got_earlier, earlier, atol, rtol):
            return f"the expected values moved one step earlier along {name} (an off-by-one index or diagonal)"
    return None


Variants = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None


def diagnose_mismatch(got: Any, expected: Any, variants: Variants = None,
                      atol: float = 1e-4, rtol: float = 1e-3, dims: Sequence[str] | None = None) -> str | None:
    """Name the known mistake ``got`` matches, or return ``None``.

    ``variants`` maps a description of a mistake ("reads hook_resid_pre instead of hook_resid_post")
    to the value the reference gives when it makes that mistake (or is a function returning that
    mapping, called only when an answer is wrong). Checked before the generic ones:
    a flipped sign, a constant factor (a missing or extra scale), all zeros, a transposed matrix, a
    shift by one along any axis (``dims`` names the axes in the message).
    """
    if callable(variants):
        variants = variants()
    matched = []  # on some inputs two mistakes give the same value: name each, not whichever comes first
    for description, value in (variants or {}).items():
        if isinstance(value, torch.Tensor) and isinstance(got, torch.Tensor):
            if _close(got, value, atol, rtol):
                matched.append(description)
        elif isinstance(value, (int, float)) and isinstance(got, (int, float)) and not isinstance(value, bool):
            if math.isclose(got, value, abs_tol=atol, rel_tol=rtol):
                matched.append(description)
        elif not isinstance(value, torch.Tensor) and not isinstance(got, torch.Tensor):
            try:
                if got == value:
                    matched.append(description)
            except Exception:  # values that cannot be compared are simply not this mistake
                continue
    if matched:
        return "; or ".join(matched)
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        got, expected = torch.tensor(float(got)), torch.tensor(float(expected))
    if not (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return None
    got_f, expected_f = got.detach().double(), expected.detach().double()
    if got_f.shape != expected_f.shape:
        return _diagnose_shape(tuple(got_f.shape), tuple(expected_f.shape), dims)
    if not torch.isfinite(expected_f).all():
        finite = torch.isfinite(expected_f) & torch.isfinite(got_f)
        got_f, expected_f = got_f[finite], expected_f[finite]
    if expected_f.abs().max() <= atol if expected_f.numel() else True:
        return None
    if got_f.abs().max() <= atol:
        return "all zeros"
    if _close(got_f, -expected_f, atol, rtol):
        return "the expected values with the sign flipped"
    factor = (got_f * expected_f).sum() / (expected_f * expected_f).sum()
    # one or two numbers always differ by "a factor": only a longer tensor can show a missing scale
    if expected_f.numel() >= 3 and abs(factor.item() - 1) > 1e-2 and _close(got_f, factor * expected_f, atol, rtol):
        return (f"the expected values times {factor.item():.4g} (a missing or extra scale factor, "
                "or a sum where a mean belongs, or the reverse)")
    if got.shape == expected.shape:
        for description, value in _generic_variants(expected.detach().double(), dims).items():
            if _close(got.detach().double(), value, atol, rtol):
                return description
        return _shift_match(got.detach().double(), expected.detach().double(), atol, rtol, dims)
    return None


def _diagnose_shape(got: tuple[int, ...], expected: tuple[int, ...], dims: Sequence[str] | None) -> str | None:
    if len(got) == len(expected) and got == tuple(reversed(expected)) and len(got) >= 2:
        return "its axes are reversed: a transpose or einsum output in the wrong order"
    if len(got) == len(expected) + 1:
        for axis in range(len(got)):
            if got[:axis] + got[axis + 1:] == expected:
                return (f"it has an extra axis of size {got[axis]} at position {axis}: "
                        "did you forget to average or sum over it?")
    if len(got) + 1 == len(expected):
        for axis in range(len(expected)):
            if expected[:axis] + expected[axis + 1:] == got:
                name = dims[axis] if dims and axis < len(dims) else f"axis {axis}"
                return f"it lacks {name} (size {expected[axis]}): did you average over it, or index it away?"
    return None


def _where_they_differ(got: torch.Tensor, expected: torch.Tensor, bad: torch.Tensor,
                       dims: Sequence[str] | None) -> str:
    """One line per axis whose mismatches sit at only some of its indices (e.g. "only at layer 1")."""
    lines = []
    for axis in range(expected.ndim):
        other = tuple(a for a in range(expected.ndim) if a != axis)
        per_index = bad.any(dim=other) if other else bad
        indices = per_index.nonzero().flatten().tolist()
        size = expected.shape[axis]
        if size > 1 and 0 < len(indices) < size:
            name = dims[axis] if dims and axis < len(dims) else f"axis {axis}"
            shown = ", ".join(str(i) for i in indices[:12]) + (", ..." if len(indices) > 12 else "")
            lines.append(f"  differences only at {name} {shown} (of 0..{size - 1})")
    return "\n".join(lines)


def _row_around(got: torch.Tensor, expected: torch.Tensor, index: tuple[int, ...], width: int = 8) -> str:
    """The stretch of the last axis around the worst entry, expected above got, so the eye can compare."""
    if not index:
        return f"  expected {expected.item():.5g}\n  got      {got.item():.5g}"
    size = expected.shape[-1]
    start = max(0, min(index[-1] - width // 2, size - width))
    stop = min(size, start + width)
    where = ", ".join(str(i) for i in index[:-1])
    label = f"[{where + ', ' if where else ''}{start}:{stop}]"

    def row(t: torch.Tensor) -> str:
        return ", ".join(f"{v:8.4g}" for v in t[index[:-1]][start:stop].tolist())

    return (f"  around it, entries {label}:\n    expected [{row(expected)}]\n    got      [{row(got)}]")


def compare_outputs(got: Any, expected: Any, case: str, atol: float = 1e-4, rtol: float = 1e-3, *,
                    variants: Variants = None, dims: Sequence[str] | None = None) -> None:
    """Raise ``CheckFailed`` unless ``got`` matches ``expected`` (tensors: shape then values).

    On a mismatch the message gives the relative error, the largest difference, which indices of
    each axis differ (``dims`` names the axes), and the known mistake the answer matches
    (``variants``: description -> the reference's value under that mistake, or a function returning
    that mapping so it is computed only for a wrong answer; see :func:`diagnose_mismatch`).
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{case}: expected a tensor, got {type(got).__name__} ({_describe(got)})")
        if tuple(got.shape) != tuple(expected.shape):
            hint = diagnose_mismatch(got, expected, variants, atol, rtol, dims)
            axes = f" [{', '.join(dims)}]" if dims and len(dims) == expected.ndim else ""
            raise CheckFailed(f"{case}: wrong shape: expected {tuple(expected.shape)}{axes}, got {tuple(got.shape)}"
                              + (f"\n  it looks like {hint}" if hint else ""))
        got_f, expected_f = got.detach().float(), expected.detach().float()
        expected_nan = expected_f.isnan()
        got_nonfinite = ~torch.isfinite(got_f) & ~expected_nan
        if got_nonfinite.any():
            index = tuple(int(i) for i in got_nonfinite.nonzero()[0])
            raise CheckFailed(f"{case}: your output contains NaN or Inf (first at index {index}): {_describe(got)}")
        got_c = torch.where(expected_nan, torch.zeros_like(got_f), got_f)
        expected_c = torch.where(expected_nan, torch.zeros_like(expected_f), expected_f)
        bad = (got_c - expected_c).abs() > atol + rtol * expected_c.abs()
        if bad.any():
            worst = (got_c - expected_c).abs().flatten().argmax().item()
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected_f.shape))
            hint = diagnose_mismatch(got, expected, variants, atol, rtol, dims)
            where = _where_they_differ(got_c, expected_c, bad, dims)
            lines = [f"{case}: values differ: relative error {relative_error(got_c, expected_c):.3g} "
                     f"(||got - expected|| / ||expected||); {int(bad.sum())} of {bad.numel()} entries off",
                     f"  largest difference at index {index}: expected {expected_f[index].item():.5g}, "
                     f"got {got_f[index].item():.5g}"]
            if where:
                lines.append(where)
            if hint:
                lines.append(f"  your answer matches {hint}")
            lines.append(_row_around(got_f, expected_f, index))
            raise CheckFailed("\n".join(lines))
        return
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            raise CheckFailed(f"{case}: expected a number like {expected:.5g}, got {_describe(got)}")
        if not math.isclose(got, expected, abs_tol=atol, rel_tol=rtol):
            hint = diagnose_mismatch(float(got), expected, variants, atol, rtol)
            raise CheckFailed(f"{case}: expected {expected:.5g}, got {got:.5g} (relative error "
                              f"{relative_error(got, expected):.3g})" + (f"\n  your answer matches {hint}" if hint else ""))
        return
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not isinstance(expected, (list, tuple, dict)):
        got = got.item()
    if got != expected:
        hint = diagnose_mismatch(got, expected, variants, atol, rtol)
        raise CheckFailed(f"{case}: expected {_describe(expected)}, got {_describe(got)}"
                          + (f"\n  your answer matches {hint}" if hint else ""))


def compare_with_lazy_variants(got: Any, expected: Any, case: str, variants: Callable[[], Variants],
                               **kwargs: Any) -> None:
    """``compare_outputs``, computing the known mistakes (some cost model runs) only when the answer is wrong."""
    try:
        compare_outputs(got, expected, case, **kwargs)
    except CheckFailed:
        with torch.no_grad():
            mistakes = variants()
        compare_outputs(got, expected, case, variants=mistakes, **kwargs)
        raise


def call_learner(function: Callable, *args: Any, case: str, **kwargs: Any) -> Any:
    """Call the learner's function; an exception it raises fails the check, naming the case."""
    try:
        return function(*args, **kwargs)
    except CheckFailed:
        raise
    except NotImplementedError:
        raise
    except Exception as error:  # the learner's bug, reported with the inputs that triggered it
        hint = ""
        if isinstance(error, KeyError) and "hook_" in str(error):
            hint = ("\n  under TransformerLens 4, hook.name inside a hook is the bridge's own name for the point "
                    "(blocks.0.attn.hook_z is seen as blocks.0.attn.o.hook_in, blocks.0.hook_resid_post as "
                    "blocks.0.hook_out), not the name you registered: carry the registered name into the hook "
                    "with a closure or functools.partial instead of reading hook.name")
        raise CheckFailed(f"{case}: your function raised {type(error).__name__}: {error}{hint}") from error


def passed(name: str, cases: int) -> None:
    print(f"✔ {name} passed ({cases} case{'s' if cases != 1 else ''})")


# ---------------------------------------------------------------------------
# Inputs the learner cannot have seen
# ---------------------------------------------------------------------------

def fresh_seed() -> int:
    """A seed drawn at check time (printed in failure messages so a failure can be reproduced)."""
    return secrets.randbelow(2**31)


@lru_cache(maxsize=4)
def shipped_model(name: str):
    """The zoo model a checker tests against, loaded once per kernel."""
    from interplab.zoo import load_model

    return load_model(name)


@lru_cache(maxsize=2)  # one checker reuses its model across cases; a new check draws a new seed
def fresh_random_model(seed: int, n_layers: int = 3, d_model: int = 48, n_heads: int = 6, d_vocab: int = 97,
                       n_ctx: int = 40, family: str = "gpt2"):
    """A small random model with shapes unlike the shipped one, and non-trivial LayerNorm weights.

    Built at check time from ``seed``, so no answer computed earlier can match it; LayerNorm
    weights and biases are randomised (a fresh GPT-2 has them at 1 and 0, which would hide a
    forgotten ``ln.weight``).
    """
    from interplab.zoo import build_random_model

    model = build_random_model(family, n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_vocab=d_vocab,
                               n_ctx=n_ctx, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    model.eval()
    return model
