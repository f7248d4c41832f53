"""Checkers for chapter 00 (the tour): predictions, the cache, reading and editing hooks.

Every checker runs the learner's function on the shipped model *and* on a small random model
built at check time (3 layers x 6 heads, unlike the shipped 2 x 4) with tokens drawn from a fresh
seed, so an answer replayed from an earlier run, or one that hard-codes the shipped model's
sizes or only handles layer 0, fails. Messages name the mistake an answer matches.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Iterator

import torch

from interplab import circuits
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, fresh_random_model, fresh_seed,
                                    passed, shipped_model)
from interplab.worlds import induction

MODEL = "attn2-induction"


def _probe_tokens(seed: int) -> torch.Tensor:
    return induction.repeated_tokens(2, half_len=8, seed=seed)


def _models_and_tokens(seed: int) -> Iterator[tuple[str, object, torch.Tensor]]:
    """(description, model, tokens): the shipped model on its world, then a fresh random model on random ids."""
    yield f"{MODEL} on <bos> + A + A (seed {seed})", shipped_model(MODEL), _probe_tokens(seed % 10_000)
    model = fresh_random_model(seed)
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 11), generator=generator)
    yield (f"a random {model.cfg.n_layers}-layer, {model.cfg.n_heads}-head model built for this check (seed {seed})",
           model, tokens)


# --- exercise 1 -------------------------------------------------------------------------------

def reference_top_prediction(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens)[:, -1].argmax(-1)


def test_top_prediction(top_prediction: Callable) -> None:
    """``top_prediction(model, tokens [batch, seq]) -> [batch]`` token ids predicted after the last position."""
    seed = fresh_seed()
    cases = 0
    for case, model, tokens in _models_and_tokens(seed):
        with torch.no_grad():
            got = call_learner(top_prediction, model, tokens, case=case)
            logits = model(tokens)
        expected = logits[:, -1].argmax(-1)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.is_floating_point():
            best = logits[:, -1].max(-1).values
            in_range = (got >= 0) & (got < logits.shape[-1])
            if in_range.all() and torch.equal(logits[:, -1].gather(-1, got[:, None])[:, 0], best):
                cases += 1
                continue  # the top token, or one tied with it
        compare_outputs(got, expected, case=case, dims=("batch",), variants={
            "the prediction at the first position, not the last (logits[:, 0])": logits[:, 0].argmax(-1),
            "the prediction at the second-to-last position": logits[:, -2].argmax(-1),
            "the lowest-scoring token (argmin instead of argmax)": logits[:, -1].argmin(-1),
            "the largest logit's value, not its token id (max instead of argmax)": logits[:, -1].max(-1).values,
            "the last position's logits, not the id of the top one": logits[:, -1],
        })
        cases += 1
    passed("test_top_prediction", cases)


# --- exercise 2 -------------------------------------------------------------------------------

def reference_previous_token_attention(cache, layer: int, head: int) -> float:
    return circuits.previous_token_scores(cache)[layer, head].item()


def _scalar_variants(cache, n_layers: int, n_heads: int, layer: int, head: int) -> dict[str, float]:
    """Values a near-miss gives: another head or layer, the wrong diagonal, a sum for a mean."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    sub = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)
    variants = {
        "the attention of each position to itself (the main diagonal), not to the one before": (
            pattern.diagonal(dim1=-2, dim2=-1).mean().item()),
        "the attention two positions back (offset -2), not one": pattern.diagonal(offset=-2, dim1=-2, dim2=-1).mean().item(),
        "a sum over query positions where the mean belongs": sub.sum(-1).mean().item(),
        "the mean over queries 0 ... seq-1, counting query 0 (which has no previous token) as 0": (
            sub.sum(-1).mean().item() / pattern.shape[-1]),
    }
    scores = circuits.previous_token_scores(cache)
    for other_layer in range(n_layers):
        for other_head in range(n_heads):
            if (other_layer, other_head) != (layer, head):
                what = "layer" if other_layer != layer else "head"
                variants.setdefault(f"the score of head {other_layer}.{other_head}: is the {what} index used?",
                                    scores[other_layer, other_head].item())
    return variants


def test_previous_token_attention(previous_token_attention: Callable) -> None:
    """``previous_token_attention(cache, layer, head) -> float``: mean attention from each
    position (from 1 on) to the position just before it."""
    seed = fresh_seed()
    cases = 0
    for description, model, tokens in _models_and_tokens(seed):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        cfg = model.cfg
        for layer in range(cfg.n_layers):
            for head in range(cfg.n_heads):
                case = f"layer {layer}, head {head} of {description}"
                got = call_learner(previous_token_attention, cache, layer, head, case=case)
                compare_outputs(got, reference_previous_token_attention(cache, layer, head), case=case,
                                variants=lambda: _scalar_variants(cache, cfg.n_layers, cfg.n_heads, layer, head))
                cases += 1
    passed("test_previous_token_attention", cases)


# --- exercise 3 -------------------------------------------------------------------------------

def reference_residual_norms(model, tokens: torch.Tensor) -> torch.Tensor:
    norms: list[torch.Tensor] = []

    def record(resid, hook):
        norms.append(resid.norm(dim=-1).mean())

    hooks = [(f"blocks.{layer}.hook_resid_post", record) for layer in range(model.cfg.n_layers)]
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return torch.stack(norms)


def _no_cache(model) -> Callable:
    def refuse(*args, **kwargs):
        raise CheckFailed("this exercise asks for reading hooks (model.run_with_hooks), not a cache: "
                          "run_with_cache stores every activation of the model to use one per layer")

    return refuse


def test_residual_norms(residual_norms: Callable) -> None:
    """``residual_norms(model, tokens) -> [n_layers]``: mean L2 norm of ``hook_resid_post`` per layer,
    collected with a reading hook (a cache is refused)."""
    seed = fresh_seed()
    cases = 0
    for case, model, tokens in _models_and_tokens(seed):
        model.run_with_cache = _no_cache(model)  # an instance attribute shadows the method for this call only
        try:
            with torch.no_grad():
                got = call_learner(residual_norms, model, tokens, case=case)
        finally:
            del model.run_with_cache
        if any(point.fwd_hooks for point in model.hook_dict.values()):  # they would change every later run
            model.reset_hooks()
            raise CheckFailed("hooks were left attached to the model; use run_with_hooks (or model.hooks(...)) "
                              "so they are removed after the run")
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        layers = range(model.cfg.n_layers)

        def per_layer(name: str, reduce=lambda x: x.norm(dim=-1).mean()) -> torch.Tensor:
            return torch.stack([reduce(cache[name.format(layer=layer)]) for layer in layers])

        variants = {
            "norms of hook_resid_pre (the residual stream before each block), not hook_resid_post":
                per_layer("blocks.{layer}.hook_resid_pre"),
            "the norm of the mean residual vector, not the mean of the norms":
                per_layer("blocks.{layer}.hook_resid_post", lambda x: x.mean(dim=(0, 1)).norm()),
            "the mean squared norm (a missing square root)":
                per_layer("blocks.{layer}.hook_resid_post", lambda x: x.pow(2).sum(-1).mean()),
            "the norm over the position axis, not over d_model":
                per_layer("blocks.{layer}.hook_resid_post", lambda x: x.norm(dim=1).mean()),
            "the attention output of each layer (hook_attn_out), not the residual stream":
                per_layer("blocks.{layer}.hook_attn_out"),
        }
        compare_outputs(got, per_layer("blocks.{layer}.hook_resid_post"), case=case, dims=("layer",),
                        variants=variants)
        cases += 1
    passed("test_residual_norms", cases)


# --- exercise 4 -------------------------------------------------------------------------------

def reference_ablate_head_hook(head: int) -> Callable:
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook


def _apply_hook(hook_fn: Callable, z: torch.Tensor, name: str, case: str) -> torch.Tensor:
    """The activation after the learner's hook: its return value, or ``z`` edited in place if it returns None."""
    edited = z.clone()
    out = call_learner(hook_fn, edited, SimpleNamespace(name=name), case=case)
    return edited if out is None else out


def test_ablate_head_hook(ablate_head_hook: Callable) -> None:
    """``ablate_head_hook(head)`` returns a hook for ``blocks.{l}.attn.hook_z`` that zeroes one head's output."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = 0
    for shape in ((2, 7, 6, 8), (1, 5, 3, 16)):  # [batch, pos, head, d_head], pos > head so axes cannot be confused
        z = torch.randn(shape, generator=generator)
        for head in range(shape[2]):
            case = f"hook_z of shape {shape} [batch, pos, head, d_head], head {head} (seed {seed})"
            got = _apply_hook(call_learner(ablate_head_hook, head, case=case), z, "blocks.0.attn.hook_z", case)
            zero_position, all_but = z.clone(), torch.zeros_like(z)
            zero_position[:, head] = 0.0
            all_but[:, :, head] = z[:, :, head]
            zero_last = z.clone()
            zero_last[..., head] = 0.0
            compare_outputs(got, _apply_hook(reference_ablate_head_hook(head), z, "", case), case=case,
                            dims=("batch", "pos", "head", "d_head"), variants={
                                "every head zeroed, not just one": torch.zeros_like(z),
                                "position `head` zeroed (z[:, head]) instead of head `head` (z[:, :, head])": zero_position,
                                "every head zeroed except the one asked for": all_but,
                                "component `head` of d_head zeroed in every head (z[..., head])": zero_last,
                            })
            cases += 1
    for description, model, tokens in _models_and_tokens(seed):
        for layer in range(model.cfg.n_layers):
            head = (layer + seed) % model.cfg.n_heads
            name = f"blocks.{layer}.attn.hook_z"
            with torch.no_grad():
                got = model.run_with_hooks(tokens, fwd_hooks=[(name, ablate_head_hook(head))])
                expected = model.run_with_hooks(tokens, fwd_hooks=[(name, reference_ablate_head_hook(head))])
            compare_outputs(got, expected, case=f"logits of {description} with head {layer}.{head} ablated",
                            dims=("batch", "pos", "vocab"))
            cases += 1
    passed("test_ablate_head_hook", cases)
