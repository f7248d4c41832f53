"""Checkers for chapter 00 (the tour): predictions, the cache, reading and editing hooks."""
from __future__ import annotations

from typing import Callable

import torch

from interplab import circuits
from interplab.checks._core import CheckFailed, compare_outputs, passed, shipped_model
from interplab.worlds import induction

MODEL = "attn2-induction"


def _probe_tokens(seed: int) -> torch.Tensor:
    return induction.repeated_tokens(2, half_len=8, seed=seed)


def reference_top_prediction(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens)[:, -1].argmax(-1)


def test_top_prediction(top_prediction: Callable) -> None:
    """``top_prediction(model, tokens [batch, seq]) -> [batch]`` token ids predicted after the last position."""
    model = shipped_model(MODEL)
    for seed in (1, 2, 3):
        tokens = _probe_tokens(seed)[:, :12]
        with torch.no_grad():
            compare_outputs(top_prediction(model, tokens), reference_top_prediction(model, tokens),
                            case=f"tokens of shape {tuple(tokens.shape)} (seed {seed})")
    passed("test_top_prediction", 3)


def reference_previous_token_attention(cache, layer: int, head: int) -> float:
    return circuits.previous_token_scores(cache)[layer, head].item()


def test_previous_token_attention(previous_token_attention: Callable) -> None:
    """``previous_token_attention(cache, layer, head) -> float``: mean attention from each
    position (from 1 on) to the position just before it."""
    model = shipped_model(MODEL)
    _, cache = model.run_with_cache(_probe_tokens(4))
    cases = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    for layer, head in cases:
        compare_outputs(previous_token_attention(cache, layer, head),
                        reference_previous_token_attention(cache, layer, head),
                        case=f"layer {layer}, head {head}")
    passed("test_previous_token_attention", len(cases))


def reference_residual_norms(model, tokens: torch.Tensor) -> torch.Tensor:
    norms: list[torch.Tensor] = []

    def record(resid, hook):
        norms.append(resid.norm(dim=-1).mean())

    hooks = [(f"blocks.{layer}.hook_resid_post", record) for layer in range(model.cfg.n_layers)]
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return torch.stack(norms)


def test_residual_norms(residual_norms: Callable) -> None:
    """``residual_norms(model, tokens) -> [n_layers]``: mean L2 norm of ``hook_resid_post`` per layer,
    collected with a reading hook."""
    model = shipped_model(MODEL)
    for seed in (5, 6):
        tokens = _probe_tokens(seed)
        with torch.no_grad():
            got = residual_norms(model, tokens)
            _, cache = model.run_with_cache(tokens)
        if any(point.fwd_hooks for point in model.hook_dict.values()):  # they would change every later run
            model.reset_hooks()
            raise CheckFailed("hooks were left attached to the model; use run_with_hooks (or model.hooks(...)) "
                              "so they are removed after the run")
        expected = torch.stack([cache[f"blocks.{layer}.hook_resid_post"].norm(dim=-1).mean()
                                for layer in range(model.cfg.n_layers)])
        compare_outputs(got, expected, case=f"seed {seed}")
    passed("test_residual_norms", 2)


def reference_ablate_head_hook(head: int) -> Callable:
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook


def test_ablate_head_hook(ablate_head_hook: Callable) -> None:
    """``ablate_head_hook(head)`` returns a hook for ``blocks.{l}.attn.hook_z`` that zeroes one head's output."""
    model = shipped_model(MODEL)
    tokens = _probe_tokens(7)
    cases = 0
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            name = f"blocks.{layer}.attn.hook_z"
            with torch.no_grad():
                got = model.run_with_hooks(tokens, fwd_hooks=[(name, ablate_head_hook(head))])
                expected = model.run_with_hooks(tokens, fwd_hooks=[(name, reference_ablate_head_hook(head))])
            compare_outputs(got, expected, case=f"logits with layer {layer} head {head} ablated")
            cases += 1
    passed("test_ablate_head_hook", cases)
