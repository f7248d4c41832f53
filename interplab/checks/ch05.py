"""Checkers for chapter 05 (steering, refusal and monitors).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time: a
random model (GPT-2 family, 3 layers, d_model 48, learned positions, random LayerNorm weights)
built once per kernel from a seed drawn then, random prompts and random tensors. None of them
needs the shipped ``chat-4l``, so an answer replayed from an earlier run, or one that hard-codes
the shipped model's sizes, layers or token ids, fails. When an answer matches a common mistake
(the directions the wrong way round, resid_post where resid_pre belongs, a normalised vector
where the raw one belongs, the steering vector added at one position only, a forgotten write
into the residual stream, every hook closing over the last offset, the KL the wrong way round,
a filter skipped in the selection, a threshold rule or a skipped refusal filter when choosing
what to protect, the offset written into the weights instead of the bias, a threshold set on
the test negatives, a probe direction read in standardised units) the message says which. ``check_refusal_finding`` re-measures the learner's stated refusal direction on the shipped model.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch

from interplab import probes, steering
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_random_model, fresh_seed, passed, shipped_model)
from interplab.worlds import chat


@lru_cache(maxsize=1)
def _random_model_and_seed():
    seed = fresh_seed()
    return fresh_random_model(seed), seed


def _where(model, seed: int) -> str:
    return (f"a random {model.cfg.n_layers}-layer model (d_model {model.cfg.d_model}, learned positions) built for "
            f"this check (seed {seed})")


def _unit(direction: torch.Tensor) -> torch.Tensor:
    return direction / direction.norm()


def _as_tensor(got, case: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{case}: return a tensor, got {type(got).__name__}")
    return got.detach().cpu()


# ---------------------------------------------------------------- 1. ActAdd: one pair of prompts

def _resid_at_last(model, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda name: name == hook_name)
    return cache[hook_name][0, -1].detach().cpu()


def reference_actadd_vector(model, prompt_a: torch.Tensor, prompt_b: torch.Tensor, layer: int) -> torch.Tensor:
    hook_name = f"blocks.{layer}.hook_resid_pre"
    with torch.no_grad():
        return _resid_at_last(model, prompt_a, hook_name) - _resid_at_last(model, prompt_b, hook_name)


def test_actadd_vector(actadd_vector: Callable) -> None:
    """``actadd_vector(model, prompt_a [seq_a], prompt_b [seq_b], layer) -> [d_model]``: the residual stream entering
    block ``layer`` (``blocks.{layer}.hook_resid_pre``) at prompt a's last token minus the same at prompt b's last
    token; the prompts may differ in length."""
    model, model_seed = _random_model_and_seed()
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for layer, (len_a, len_b) in ((0, (7, 7)), (1, (9, 6)), (model.cfg.n_layers - 1, (5, 8))):
        prompt_a = torch.randint(model.cfg.d_vocab, (len_a,), generator=generator)
        prompt_b = torch.randint(model.cfg.d_vocab, (len_b,), generator=generator)
        case = (f"{_where(model, model_seed)}: layer {layer}, random prompts of {len_a} and {len_b} tokens "
                f"(seed {seed})")
        with torch.no_grad():
            got = _as_tensor(call_learner(actadd_vector, model, prompt_a.clone(), prompt_b.clone(), layer, case=case),
                             case)
        expected = reference_actadd_vector(model, prompt_a, prompt_b, layer)

        def variants(layer=layer, prompt_a=prompt_a, prompt_b=prompt_b):
            pre, post = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"
            found = {f"blocks.{layer}.hook_resid_post (the residual leaving the block) where hook_resid_pre (entering "
                     "it) belongs": _resid_at_last(model, prompt_a, post) - _resid_at_last(model, prompt_b, post),
                     "the direction normalised to unit length: ActAdd adds the raw difference (its norm is part of "
                     "the lesson)": _unit(expected),
                     "prompt b minus prompt a: the vector points away from prompt a's behaviour": -expected}
            _, cache_a = model.run_with_cache(prompt_a[None], names_filter=lambda name: name == pre)
            _, cache_b = model.run_with_cache(prompt_b[None], names_filter=lambda name: name == pre)
            found["the mean over positions, not the last token"] = (cache_a[pre][0].mean(0) - cache_b[pre][0].mean(0)).cpu()
            found["the first token, not the last"] = (cache_a[pre][0, 0] - cache_b[pre][0, 0]).cpu()
            if layer > 0:
                found[f"layer - 1: blocks.{layer - 1}.hook_resid_pre"] = (
                    _resid_at_last(model, prompt_a, f"blocks.{layer - 1}.hook_resid_pre")
                    - _resid_at_last(model, prompt_b, f"blocks.{layer - 1}.hook_resid_pre"))
            return found

        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, rtol=1e-3)
        n_cases += 1
    passed("test_actadd_vector", n_cases)


# ---------------------------------------------------------------- 1b. a steering hook for generation

def reference_steering_hook(vector: torch.Tensor, coeff: float, start: torch.Tensor) -> Callable:
    def hook(act, hook):
        positions = torch.arange(act.shape[1], device=act.device)
        mask = (positions[None, :] >= start.to(act.device)[:, None]).to(act.dtype)[..., None]
        return act + coeff * mask * vector.to(act.device, act.dtype)
    return hook


def _mask_hook(vector: torch.Tensor, coeff: float, mask: torch.Tensor) -> Callable:
    def hook(act, hook):
        return act + coeff * mask.to(act.dtype)[..., None] * vector.to(act.dtype)
    return hook


def test_steering_hook(steering_hook: Callable) -> None:
    """``steering_hook(vector [d_model], coeff, start [batch]) -> hook``: a hook function that adds ``coeff * vector``
    (as given) to ``act [batch, seq, d_model]`` at every position from ``start[b]`` on, in row ``b`` (the prompt's
    last token and every token generated after it), and nowhere before."""
    model, model_seed = _random_model_and_seed()
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    batch, seq = 5, 10
    tokens = torch.randint(model.cfg.d_vocab, (batch, seq), generator=generator)
    start = torch.randint(2, seq - 2, (batch,), generator=generator)
    start[0], start[1] = 2, seq - 3  # rows with different starts, so one shared start is visibly wrong
    n_cases = 0
    for layer, coeff in ((1, 4.0), (model.cfg.n_layers - 1, -2.5)):
        vector = torch.randn(model.cfg.d_model, generator=generator) * 3
        hook_name = f"blocks.{layer}.hook_resid_pre"
        case = (f"{_where(model, model_seed)}: {hook_name}, coeff {coeff}, {batch} random prompts of {seq} tokens "
                f"with starts {start.tolist()} (seed {seed})")
        hook = call_learner(steering_hook, vector.clone(), coeff, start.clone(), case=case)
        if not callable(hook):
            raise CheckFailed(f"{case}: return a hook function hook(act, hook) -> act, got {type(hook).__name__}")
        with torch.no_grad():
            got = call_learner(model.run_with_hooks, tokens, fwd_hooks=[(hook_name, hook)], case=case)
            expected = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, reference_steering_hook(vector, coeff, start))])

        def variants(vector=vector, coeff=coeff, hook_name=hook_name):
            positions = torch.arange(seq)
            masks = {"the vector added only at position start[b], not at every position after it too (generated "
                     "tokens would be unsteered)": positions[None] == start[:, None],
                     "the vector added at every position, the prompt's start included":
                         torch.ones(batch, seq, dtype=torch.bool),
                     "the vector added from start[b] + 1 on (off by one: the prompt's last token is left unsteered)":
                         positions[None] > start[:, None],
                     "the first row's start used for every row": positions[None] >= start[0]}
            with torch.no_grad():
                found = {text: model.run_with_hooks(tokens, fwd_hooks=[(hook_name, _mask_hook(vector, coeff, mask))])
                         for text, mask in masks.items()}
                found["the vector normalised to unit length: add coeff * vector as given"] = model.run_with_hooks(
                    tokens, fwd_hooks=[(hook_name, reference_steering_hook(_unit(vector), coeff, start))])
                found["the model unchanged: does the hook return the steered activation?"] = model(tokens)
            return found

        compare_with_lazy_variants(got, expected, case, variants, atol=1e-3, rtol=1e-3,
                                   dims=("prompt", "position", "vocab"))
        n_cases += 1
    passed("test_steering_hook", n_cases)


# ---------------------------------------------------------------- 2. CAA: the difference of means, per layer

def reference_mean_difference(acts: torch.Tensor, harmful: torch.Tensor) -> torch.Tensor:
    harmful = torch.as_tensor(harmful).bool()
    return acts[:, harmful].mean(1) - acts[:, ~harmful].mean(1)


def test_mean_difference(mean_difference: Callable) -> None:
    """``mean_difference(acts [layer, n, d_model], harmful [n] bool) -> [layer, d_model]``: at each layer, the mean
    activation of the harmful prompts minus the mean of the others; raw, not normalised."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for layers, n, d, n_harmful in ((5, 30, 16, 9), (3, 12, 8, 6), (2, 50, 24, 35)):
        acts = torch.randn(layers, n, d, generator=generator) * torch.linspace(0.5, 4, layers)[:, None, None]
        harmful = torch.zeros(n, dtype=torch.bool)
        harmful[torch.randperm(n, generator=generator)[:n_harmful]] = True
        acts[:, harmful] += torch.randn(layers, 1, d, generator=generator)  # a real difference to find
        cases.append((acts, harmful, f"random activations {layers} x {n} x {d}, {n_harmful} harmful (seed {seed})"))
    for acts, harmful, case in cases:
        got = _as_tensor(call_learner(mean_difference, acts.clone(), harmful.clone(), case=case), case)
        expected = reference_mean_difference(acts, harmful)

        def variants(acts=acts, harmful=harmful):
            return {"each layer's difference normalised to unit length: keep the raw difference (its norm tells how "
                    "far apart the two groups are)": expected / expected.norm(dim=-1, keepdim=True),
                    "the harmful mean minus the mean of all prompts (the benign ones belong on the other side)":
                        acts[:, harmful].mean(1) - acts.mean(1),
                    "sums where means belong (the groups differ in size)":
                        acts[:, harmful].sum(1) - acts[:, ~harmful].sum(1)}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, rtol=1e-3,
                                   dims=("layer", "d_model"))
    passed("test_mean_difference", len(cases))


# ---------------------------------------------------------------- 3. the refusal score, from one forward pass

def reference_refusal_score(logits: torch.Tensor, refusal_id: int) -> torch.Tensor:
    logp = logits.double().log_softmax(-1)
    others = torch.cat([logp[:, :refusal_id], logp[:, refusal_id + 1:]], dim=-1)
    return (logp[:, refusal_id] - others.logsumexp(-1)).float()


def test_refusal_score(refusal_score: Callable) -> None:
    """``refusal_score(logits [n, vocab], refusal_id) -> [n]``: the log-odds that the first response token is the
    refusal token, ``log p - log (1 - p)`` with ``p`` its softmax probability (positive: the model would refuse)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, vocab, scale in ((6, 20, 1.0), (4, 57, 6.0), (8, 9, 15.0)):
        logits = torch.randn(n, vocab, generator=generator) * scale
        refusal_id = int(torch.randint(1, vocab - 1, (1,), generator=generator))
        logits[: n // 2, refusal_id] += 3 * scale  # some rows that would refuse
        cases.append((logits, refusal_id, f"random logits {n} x {vocab}, scale {scale}, refusal token {refusal_id} "
                                          f"(seed {seed})"))
    for logits, refusal_id, case in cases:
        got = _as_tensor(call_learner(refusal_score, logits.clone(), refusal_id, case=case), case)
        expected = reference_refusal_score(logits, refusal_id)

        def variants(logits=logits, refusal_id=refusal_id):
            logp = logits.log_softmax(-1)
            return {"the raw logit of the refusal token: logits are not comparable across prompts; use log-odds":
                        logits[:, refusal_id],
                    "log p, without subtracting log (1 - p)": logp[:, refusal_id],
                    "the probability p, not the log-odds": logp[:, refusal_id].exp(),
                    "the softmax taken over the batch axis (dim 0), not over the vocabulary":
                        logits.log_softmax(0)[:, refusal_id] - torch.log1p(-logits.softmax(0)[:, refusal_id]),
                    "the refusal logit minus the largest other logit, not the log-odds":
                        logits[:, refusal_id] - torch.cat([logits[:, :refusal_id], logits[:, refusal_id + 1:]], -1).max(-1).values}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-3, rtol=1e-3, dims=("prompt",))
    passed("test_refusal_score", len(cases))


# ---------------------------------------------------------------- 4. directional ablation: zero or affine

def reference_directional_ablation(acts: torch.Tensor, direction: torch.Tensor, offset=0.0) -> torch.Tensor:
    unit = _unit(direction)
    return acts - ((acts @ unit) - offset)[..., None] * unit


def test_directional_ablation(directional_ablation: Callable) -> None:
    """``directional_ablation(acts [..., d], direction [d], offset=0.0) -> [..., d]``: set the component of every
    activation along ``direction`` (any length: normalise it) to ``offset``; the rest is unchanged. ``offset = 0``
    is Arditi et al.'s projection; the benign mean's component is the affine ablation."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, scale, offset in (((6, 8), 3.0, 0.0), ((2, 5, 16), 0.2, 1.7), ((4, 32), 5.0, -2.5)):
        acts = torch.randn(*shape, generator=generator) + 2 * torch.randn(shape[-1], generator=generator)
        direction = torch.randn(shape[-1], generator=generator) * scale
        cases.append((acts, direction, offset, f"random activations {shape}, a direction of norm "
                                               f"{direction.norm():.2f}, offset {offset} (seed {seed})"))
    for acts, direction, offset, case in cases:
        if offset == 0.0:
            got = call_learner(directional_ablation, acts.clone(), direction.clone(), case=case)
        else:
            got = call_learner(directional_ablation, acts.clone(), direction.clone(), offset, case=case)
        got = _as_tensor(got, case)
        expected = reference_directional_ablation(acts, direction, offset)

        def variants(acts=acts, direction=direction, offset=offset):
            unit = _unit(direction)
            found = {"the direction used without normalising it to unit length":
                         acts - ((acts @ direction) - offset)[..., None] * direction,
                     "the activations unchanged": acts,
                     "only the component along the direction kept (that is what to replace)":
                         (acts @ unit)[..., None] * unit}
            if offset != 0.0:
                found["the offset ignored: the component set to 0, not to offset"] = reference_directional_ablation(
                    acts, direction)
                found["the offset with the wrong sign: the component should end at +offset"] = (
                    reference_directional_ablation(acts, direction, -offset))
                found["the offset added to every coordinate, not along the direction"] = (
                    reference_directional_ablation(acts, direction) + offset)
            return found

        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, rtol=1e-3)
    passed("test_directional_ablation", len(cases))


# ---------------------------------------------------------------- 4b. ablation at every write into the residual

def write_points(model) -> list[str]:
    """Every hook whose output is added to the residual stream: the token and position embeddings, then each
    block's attention and MLP outputs."""
    names = ["hook_embed"] + (["hook_pos_embed"] if "hook_pos_embed" in model.hook_dict else [])
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
    return names


def _ablate_at(direction: torch.Tensor, offset: float) -> Callable:
    def hook(act, hook):
        return reference_directional_ablation(act, direction.to(act.dtype), offset)
    return hook


def _hooks_for(names, direction, offsets) -> list:
    return [(name, _ablate_at(direction, 0.0 if offsets is None else offsets[name])) for name in names]


def reference_ablation_hooks(model, direction: torch.Tensor, offsets: dict[str, float] | None = None) -> list:
    return _hooks_for(write_points(model), direction, offsets)


def test_ablation_hooks(ablation_hooks: Callable) -> None:
    """``ablation_hooks(model, direction, offsets=None) -> [(hook_name, hook_fn), ...]``: hooks that ablate
    ``direction`` at every write into the residual stream (``hook_embed``, ``hook_pos_embed`` when the model has
    learned positions, and each block's ``hook_attn_out`` and ``hook_mlp_out``), setting the component to
    ``offsets[hook_name]`` (0 everywhere when ``offsets`` is None)."""
    model, model_seed = _random_model_and_seed()
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model.cfg.d_vocab, (4, 9), generator=generator)
    names = write_points(model)
    n_cases = 0
    for with_offsets in (False, True):
        direction = torch.randn(model.cfg.d_model, generator=generator) * 2
        offsets = None
        if with_offsets:
            offsets = {name: float(v) for name, v in zip(names, torch.randn(len(names), generator=generator) * 2)}
        case = (f"{_where(model, model_seed)}: a random direction, "
                f"{'random offsets per write point' if with_offsets else 'offsets None'} (seed {seed})")
        hooks = call_learner(ablation_hooks, model, direction.clone(), None if offsets is None else dict(offsets),
                             case=case)
        try:
            hooks = list(hooks)
            hook_names = [name for name, _ in hooks]
        except (TypeError, ValueError) as error:
            raise CheckFailed(f"{case}: return a list of (hook_name, hook_function) pairs ({error})") from error
        unknown = [name for name in hook_names if name not in model.hook_dict]
        if unknown:
            raise CheckFailed(f"{case}: {unknown[:3]} are not hook names of this model")
        missing = [name for name in names if name not in hook_names]
        with torch.no_grad():
            got = call_learner(model.run_with_hooks, tokens, fwd_hooks=hooks, case=case)
            expected = model.run_with_hooks(tokens, fwd_hooks=reference_ablation_hooks(model, direction, offsets))

        def variants(direction=direction, offsets=offsets):
            def run(names_used, offsets_used):
                return model.run_with_hooks(tokens, fwd_hooks=_hooks_for(names_used, direction, offsets_used))
            found = {"hook_pos_embed forgotten: the position embedding writes the direction back":
                         run([n for n in names if n != "hook_pos_embed"], offsets),
                     "the embeddings forgotten (hook_embed, hook_pos_embed): they write into the residual too":
                         run([n for n in names if "embed" not in n], offsets),
                     "only the MLP outputs: attention writes into the residual as well":
                         run([n for n in names if "mlp" in n], offsets),
                     "only the first write point: did the loop return early?": run(names[:1], offsets),
                     "the model unchanged: do the hooks return the ablated activation?": model(tokens)}
            if offsets is not None:
                found["every hook used the last write point's offset: a closure in a loop reads the loop variable "
                      "when it runs, not when it was made (bind it: lambda act, hook, offset=offset: ...)"] = run(
                    names, {n: offsets[names[-1]] for n in names})
                found["the offsets ignored: the component set to 0"] = run(names, None)
            return found

        try:
            compare_with_lazy_variants(got, expected, case, variants, atol=1e-3, rtol=1e-3,
                                       dims=("prompt", "position", "vocab"))
        except CheckFailed as failure:
            if missing:
                raise CheckFailed(f"{failure}\n  write points without a hook: {missing}") from None
            raise
        n_cases += 1
    passed("test_ablation_hooks", n_cases)


# ---------------------------------------------------------------- 5. KL on benign prompts

def reference_benign_kl(clean_logits: torch.Tensor, steered_logits: torch.Tensor) -> float:
    clean = clean_logits.double().log_softmax(-1)
    steered = steered_logits.double().log_softmax(-1)
    return float((clean.exp() * (clean - steered)).sum(-1).mean())


def test_benign_kl(benign_kl: Callable) -> None:
    """``benign_kl(clean_logits [n, vocab], steered_logits [n, vocab]) -> float``: KL(clean || steered) of the
    next-token distributions, in nats, averaged over the n prompts."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, vocab, shift in ((6, 20, 0.3), (3, 50, 2.0), (10, 7, 1.0)):
        clean = torch.randn(n, vocab, generator=generator) * 3
        steered = clean + shift * torch.randn(n, vocab, generator=generator)
        cases.append((clean, steered, f"random logits {n} x {vocab}, steered by noise of scale {shift} (seed {seed})"))
    for clean, steered, case in cases:
        got = call_learner(benign_kl, clean.clone(), steered.clone(), case=case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            raise CheckFailed(f"{case}: return one number (a float), got {type(got).__name__}"
                              + (f" of shape {tuple(got.shape)}: average over the prompts" if isinstance(got, torch.Tensor)
                                 else ""))
        expected = reference_benign_kl(clean, steered)
        lc, ls = clean.double().log_softmax(-1), steered.double().log_softmax(-1)
        variants = {"KL(steered || clean): the KL the wrong way round (weight by the clean model's distribution)":
                        float((ls.exp() * (ls - lc)).sum(-1).mean()),
                    "a sum over prompts where the mean belongs": float((lc.exp() * (lc - ls)).sum(-1).sum()),
                    "the cross-entropy H(clean, steered), without subtracting the clean entropy":
                        float(-(lc.exp() * ls).sum(-1).mean()),
                    "KL on raw logits: apply log_softmax first":
                        float((clean.softmax(-1) * (clean - steered)).sum(-1).mean())}
        compare_outputs(float(got), expected, case, atol=1e-4, rtol=1e-3, variants=variants)
    passed("test_benign_kl", len(cases))


# ---------------------------------------------------------------- 6. choosing a candidate, Arditi-style

def reference_select_direction(candidates: list[dict], max_kl: float = 0.1, min_added: float = 0.5) -> int | None:
    kept = [c for c in candidates if c["kl"] <= max_kl and c["added_refusal"] >= min_added]
    if not kept:
        return None
    return min(kept, key=lambda c: (c["ablated_refusal"], c["kl"], c["layer"]))["layer"]


def _check_choices(name: str, learner: Callable, reference: Callable, tables: list, variants_for: Callable,
                   settings: Callable[[dict], str]) -> None:
    """The frame of the table-choice checkers: each ``(candidates, kwargs, case)`` goes to the learner on a copy; a
    wrong answer is diagnosed against ``variants_for(candidates, kwargs, expected)`` (likely mistakes, text ->
    their answer) and the message ends with the table and ``settings(kwargs)``."""
    for candidates, kwargs, case in tables:
        got = call_learner(learner, [dict(c) for c in candidates], **kwargs, case=case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = int(got.item())
        expected = reference(candidates, **kwargs)
        if got == expected and (got is None) == (expected is None):
            continue
        variants = {text: value for text, value in variants_for(candidates, kwargs, expected).items()
                    if value != expected}
        try:
            compare_outputs(got, expected, case, variants=variants)
        except CheckFailed as failure:
            rows = "\n".join(f"    {c}" for c in candidates)
            raise CheckFailed(f"{failure}\n  the candidates ({settings(kwargs)}):\n{rows}") from None
    passed(name, len(tables))


def _random_candidates(generator: torch.Generator, n_layers: int) -> list[dict]:
    layers = torch.randperm(n_layers, generator=generator).tolist()  # listed out of order: index != layer
    rows = []
    for layer in layers:
        values = torch.rand(3, generator=generator)
        rows.append({"layer": int(layer), "ablated_refusal": round(float(values[0]), 2),
                     "added_refusal": round(float(values[1]), 2), "kl": round(float(values[2]) * 0.3, 3)})
    return rows


def test_select_direction(select_direction: Callable) -> None:
    """``select_direction(candidates, max_kl=0.1, min_added=0.5) -> layer or None``. ``candidates`` is a list of
    dicts ``{"layer", "ablated_refusal", "added_refusal", "kl"}``. Keep the candidates whose benign KL under
    ablation is at most ``max_kl`` and whose addition makes at least ``min_added`` of benign prompts refuse; among
    them return the layer whose ablation leaves the least refusal on harmful prompts (ties: smaller KL, then the
    earlier layer); None if no candidate passes both filters."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    tables = []
    for n_layers in (5, 7, 9, 6, 8):
        tables.append((_random_candidates(generator, n_layers), {}, f"{n_layers} random candidates (seed {seed})"))
    # hand-made tables where each filter decides the answer
    tables.append(([{"layer": 0, "ablated_refusal": 0.0, "added_refusal": 0.9, "kl": 0.8},
                    {"layer": 3, "ablated_refusal": 0.1, "added_refusal": 0.95, "kl": 0.02},
                    {"layer": 2, "ablated_refusal": 0.05, "added_refusal": 0.1, "kl": 0.01},
                    {"layer": 1, "ablated_refusal": 0.6, "added_refusal": 0.7, "kl": 0.05}], {},
                   "an early layer that breaks benign prompts (KL 0.8) and one that cannot induce refusal"))
    tables.append(([{"layer": 1, "ablated_refusal": 0.2, "added_refusal": 0.9, "kl": 0.05},
                    {"layer": 2, "ablated_refusal": 0.2, "added_refusal": 0.9, "kl": 0.01}], {},
                   "a tie in ablated refusal, broken by the smaller KL"))
    tables.append(([{"layer": 0, "ablated_refusal": 0.0, "added_refusal": 0.3, "kl": 0.3},
                    {"layer": 1, "ablated_refusal": 0.5, "added_refusal": 0.4, "kl": 0.02}], {},
                   "no candidate passes both filters"))
    tables.append(([{"layer": 2, "ablated_refusal": 0.3, "added_refusal": 0.6, "kl": 0.15},
                    {"layer": 4, "ablated_refusal": 0.4, "added_refusal": 0.5, "kl": 0.12}],
                   {"max_kl": 0.2, "min_added": 0.6}, "thresholds passed as arguments (max_kl 0.2, min_added 0.6)"))

    def variants_for(candidates: list[dict], kwargs: dict, expected: int | None) -> dict:
        max_kl, min_added = kwargs.get("max_kl", 0.1), kwargs.get("min_added", 0.5)
        by_kl = [c for c in candidates if c["kl"] <= max_kl]
        by_added = [c for c in candidates if c["added_refusal"] >= min_added]
        kept = [c for c in by_kl if c["added_refusal"] >= min_added]
        order = {"layer": lambda c: (c["ablated_refusal"], c["kl"], c["layer"])}
        return {
            "the KL filter skipped: an ablation that breaks benign prompts is not a clean jailbreak":
                min(by_added, key=order["layer"])["layer"] if by_added else None,
            "the addition filter skipped: a direction whose addition cannot induce refusal is not *the* refusal "
            "direction": min(by_kl, key=order["layer"])["layer"] if by_kl else None,
            "the candidate with the *most* refusal left under ablation (lower is better)":
                max(kept, key=lambda c: (c["ablated_refusal"], -c["kl"]))["layer"] if kept else None,
            "the position in the list, not the candidate's layer": next(
                (i for i, c in enumerate(candidates) if kept and c is min(kept, key=order["layer"])), None),
            "a candidate although none passes both filters (return None)":
                min(candidates, key=order["layer"])["layer"] if not kept else expected,
        }

    _check_choices("test_select_direction", select_direction, reference_select_direction, tables, variants_for,
                   lambda kwargs: f"max_kl {kwargs.get('max_kl', 0.1)}, min_added {kwargs.get('min_added', 0.5)}")


# ---------------------------------------------------------------- 6b. how much to protect, chosen on a selection split

def reference_choose_k(candidates: list[dict], max_refusal: float = 0.05) -> int | None:
    return steering.select_protection(candidates, max_refusal=max_refusal)


def _worst(row: dict) -> float:
    return max(row["help_drop"], row["capability_drop"])


def _random_protection_rows(generator: torch.Generator, n: int) -> list[dict]:
    ks = torch.randperm(n, generator=generator).tolist()  # listed out of order: index != k
    rows = []
    for k in ks:
        values = torch.rand(3, generator=generator)
        rows.append({"k": int(k), "refusal": round(float(values[0]) * 0.12, 2),
                     "help_drop": round(float(values[1]) * 0.06, 3), "capability_drop": round(float(values[2]) * 0.06, 3)})
    return rows


def test_choose_k(choose_k: Callable) -> None:
    """``choose_k(candidates, max_refusal=0.05) -> k or None``. ``candidates``: one dict per number of protected
    components, ``{"k", "refusal", "help_drop", "capability_drop"}``, all measured on the selection split. Keep
    the k whose harmful prompts are refused at most ``max_refusal`` of the time (the ablation still works); among
    them return the k whose larger drop (help or capability) is smallest (ties: the smaller k); None if none is
    kept."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    tables = [(_random_protection_rows(generator, n), {}, f"{n} random candidates (seed {seed})") for n in (6, 9, 12, 8)]
    tables.append(([{"k": 0, "refusal": 0.0, "help_drop": 0.12, "capability_drop": 0.15},
                    {"k": 1, "refusal": 0.0, "help_drop": 0.004, "capability_drop": 0.018},
                    {"k": 2, "refusal": 0.0, "help_drop": 0.0, "capability_drop": 0.004},
                    {"k": 3, "refusal": 0.0, "help_drop": 0.0, "capability_drop": 0.004},
                    {"k": 4, "refusal": 0.3, "help_drop": 0.0, "capability_drop": 0.0}], {},
                   "k=1 is just under 0.02, k=2 and k=3 tie lower, k=4 no longer removes refusal"))
    tables.append(([{"k": 0, "refusal": 0.0, "help_drop": 0.0, "capability_drop": 0.02},
                    {"k": 2, "refusal": 0.0, "help_drop": 0.05, "capability_drop": 0.01}], {},
                   "help drops where capability does not: the larger of the two drops counts"))
    tables.append(([{"k": 0, "refusal": 0.2, "help_drop": 0.1, "capability_drop": 0.1},
                    {"k": 5, "refusal": 0.4, "help_drop": 0.0, "capability_drop": 0.0}], {},
                   "no k keeps refusal removed"))
    tables.append(([{"k": 3, "refusal": 0.08, "help_drop": 0.0, "capability_drop": 0.0},
                    {"k": 1, "refusal": 0.0, "help_drop": 0.01, "capability_drop": 0.01}],
                   {"max_refusal": 0.1}, "max_refusal passed as an argument (0.1)"))

    def variants_for(candidates: list[dict], kwargs: dict, expected: int | None) -> dict:
        max_refusal = kwargs.get("max_refusal", 0.05)
        kept = [c for c in candidates if c["refusal"] <= max_refusal]
        least = lambda rows, key: min(rows, key=key)["k"] if rows else None  # noqa: E731
        return {
            "the fewest components whose drops are under 0.02 (a threshold rule): it stops where the selection "
            "split's drop just passes the target, so on fresh prompts it misses about as often as it meets it":
                least([c for c in kept if _worst(c) <= 0.02], lambda c: c["k"]),
            "the refusal filter skipped: protecting capability is easy once the ablation no longer removes refusal":
                least(candidates, lambda c: (_worst(c), c["k"])),
            "only the capability drop counts (benign help must not drop either: take the larger of the two)":
                least(kept, lambda c: (c["capability_drop"], c["k"])),
            "the sum of the two drops, not the larger one": least(kept, lambda c: (c["help_drop"] + c["capability_drop"],
                                                                                 c["k"])),
            "ties broken towards more components (take the smaller k: the direction stays closer to the original)":
                min(kept, key=lambda c: (_worst(c), -c["k"]))["k"] if kept else None,
            "the position in the list, not the candidate's k": next(
                (i for i, c in enumerate(candidates) if kept and c["k"] == expected), None),
            "a k although none keeps refusal removed (return None)":
                least(candidates, lambda c: (_worst(c), c["k"])) if not kept else expected,
        }

    _check_choices("test_choose_k", choose_k, reference_choose_k, tables, variants_for,
                   lambda kwargs: f"max_refusal {kwargs.get('max_refusal', 0.05)}")


# ---------------------------------------------------------------- 7. weight orthogonalisation of one output

def reference_orthogonalize_output(weight: torch.Tensor, bias: torch.Tensor | None, direction: torch.Tensor,
                                   offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    unit = _unit(direction.to(weight.dtype))
    new_weight = weight - (weight @ unit)[..., None] * unit
    if bias is None:
        if offset != 0.0:
            raise ValueError("a map without a bias cannot write a constant offset")
        return new_weight, None
    return new_weight, bias - ((bias @ unit) - offset) * unit


def test_orthogonalize_output(orthogonalize_output: Callable) -> None:
    """``orthogonalize_output(weight [..., d_model], bias [d_model] or None, direction [d_model], offset=0.0)
    -> (weight, bias)``: an output map ``x @ weight + bias`` that writes nothing along ``direction`` except the
    constant ``offset``: every row of the weight loses its component along the direction, and the bias's component
    is set to ``offset``. Without a bias the offset must be 0 (raise ValueError otherwise)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, with_bias, offset, label in (((3, 5, 8), True, 0.0, "an attention output W_O [heads, d_head, d_model]"),
                                            ((12, 8), True, 1.5, "an MLP output W_out [d_mlp, d_model]"),
                                            ((16, 8), False, 0.0, "an output without a bias"),
                                            ((20, 8), True, -0.7, "an MLP output W_out [d_mlp, d_model]")):
        weight = torch.randn(*shape, generator=generator)
        bias = torch.randn(shape[-1], generator=generator) + 1.0 if with_bias else None
        direction = torch.randn(shape[-1], generator=generator) * 3
        cases.append((weight, bias, direction, offset, f"{label} of shape {shape}, offset {offset} (seed {seed})"))
    for weight, bias, direction, offset, case in cases:
        args = (weight.clone(), None if bias is None else bias.clone(), direction.clone())
        got = call_learner(orthogonalize_output, *args, offset, case=case) if offset else call_learner(
            orthogonalize_output, *args, case=case)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise CheckFailed(f"{case}: return a pair (weight, bias), got {type(got).__name__}")
        got_weight, got_bias = got
        expected_weight, expected_bias = reference_orthogonalize_output(weight, bias, direction, offset)
        unit = _unit(direction)

        def weight_variants(weight=weight, direction=direction, offset=offset, unit=unit):
            found = {"the direction used without normalising it": weight - (weight @ direction)[..., None] * direction,
                     "the weight unchanged": weight}
            if offset:
                found["the offset written into every row of the weight: a row is multiplied by the input, so only "
                      "the bias can write a constant"] = weight - ((weight @ unit) - offset)[..., None] * unit
            if weight.shape[-2] == weight.shape[-1]:
                found["projected on the input side (weight @ (I - u u^T) acts on d_model outputs only when rows "
                      "are inputs)"] = weight - torch.outer(unit, unit @ weight)
            return found

        compare_with_lazy_variants(_as_tensor(got_weight, case + ", weight").float(), expected_weight,
                                   case + ", weight", weight_variants, atol=1e-4, rtol=1e-3)
        if bias is None:
            if got_bias is not None:
                raise CheckFailed(f"{case}: there is no bias to change: return None for it, got {type(got_bias).__name__}")
        else:
            def bias_variants(bias=bias, offset=offset, unit=unit):
                found = {"the bias unchanged: it writes along the direction on every token": bias}
                if offset:
                    found["the bias's component set to 0, not to offset"] = bias - (bias @ unit) * unit
                    found["the offset with the wrong sign"] = bias - ((bias @ unit) + offset) * unit
                return found

            compare_with_lazy_variants(_as_tensor(got_bias, case + ", bias").float(), expected_bias, case + ", bias",
                                       bias_variants, atol=1e-4, rtol=1e-3)
    # without a bias, an offset has nowhere to go
    weight, direction = torch.randn(10, 8, generator=generator), torch.randn(8, generator=generator)
    case = "an output without a bias and offset 0.5"
    try:
        orthogonalize_output(weight, None, direction, 0.5)
    except ValueError:
        pass
    except Exception as error:
        raise CheckFailed(f"{case}: raise ValueError (saying the offset needs a bias), got {type(error).__name__}: "
                          f"{error}") from error
    else:
        raise CheckFailed(f"{case}: a map without a bias cannot write a constant: raise ValueError instead of "
                          "silently dropping the offset")
    passed("test_orthogonalize_output", len(cases) + 1)


# ---------------------------------------------------------------- 8. a monitor's operating point

def reference_monitor_at_fpr(calibration_negatives: torch.Tensor, test_positives: torch.Tensor,
                             test_negatives: torch.Tensor, fpr: float = 0.01) -> tuple[float, float, float]:
    threshold = float(torch.quantile(calibration_negatives.double(), 1 - fpr))
    recall = float((test_positives.double() > threshold).double().mean())
    false_positive_rate = float((test_negatives.double() > threshold).double().mean())
    return threshold, recall, false_positive_rate


def test_monitor_at_fpr(monitor_at_fpr: Callable) -> None:
    """``monitor_at_fpr(calibration_negatives, test_positives, test_negatives, fpr=0.01) -> (threshold, recall,
    test_fpr)``: the threshold is the ``1 - fpr`` quantile of the calibration negatives' scores
    (``torch.quantile``); a score above it is flagged; recall is the flagged fraction of test positives, test_fpr
    the flagged fraction of test negatives."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n_cal, n_pos, n_neg, drift, fpr in ((400, 120, 300, 0.5, 0.01), (200, 50, 80, 1.0, 0.05),
                                           (1000, 30, 500, 0.0, 0.01), (150, 60, 60, 0.8, 0.1)):
        calibration = torch.randn(n_cal, generator=generator)
        positives = torch.randn(n_pos, generator=generator) + 2.5
        negatives = torch.randn(n_neg, generator=generator) * 1.3 + drift  # test negatives drift from calibration
        cases.append((calibration, positives, negatives, fpr,
                      f"{n_cal} calibration negatives, {n_pos} test positives, {n_neg} test negatives shifted by "
                      f"{drift}, fpr {fpr} (seed {seed})"))
    # integer scores with a run of 7s around the 0.9 quantile (rank 90 of 101), so the threshold is exactly 7 in any
    # precision, and scores equal to it decide between > and >=
    calibration = torch.cat([torch.randint(0, 7, (85,), generator=generator), torch.full((11,), 7),
                             torch.randint(8, 10, (5,), generator=generator)])[torch.randperm(101, generator=generator)]
    calibration = calibration.float()
    positives = torch.cat([torch.full((5,), 7.0), torch.randint(5, 15, (20,), generator=generator).float()])
    negatives = torch.cat([torch.full((5,), 7.0), torch.randint(0, 12, (40,), generator=generator).float()])
    cases.append((calibration, positives, negatives, 0.1, f"integer scores, some equal to the threshold (seed {seed})"))
    for calibration, positives, negatives, fpr, case in cases:
        got = call_learner(monitor_at_fpr, calibration.clone(), positives.clone(), negatives.clone(), fpr, case=case)
        if not (isinstance(got, tuple) and len(got) == 3):
            raise CheckFailed(f"{case}: return a tuple (threshold, recall, test_fpr), got {type(got).__name__}")
        got = tuple(float(v) for v in got)
        expected = reference_monitor_at_fpr(calibration, positives, negatives, fpr)

        def at(threshold, flag=lambda s, t: s > t):
            return (threshold, float(flag(positives, threshold).double().mean()),
                    float(flag(negatives, threshold).double().mean()))

        variants = {
            "the threshold set on the test negatives: the optimistic convention; a deployed monitor never sees "
            "its test negatives": at(float(torch.quantile(negatives.double(), 1 - fpr))),
            "the fpr quantile where the 1 - fpr quantile belongs (the threshold sits among the lowest negatives)":
                at(float(torch.quantile(calibration.double(), fpr))),
            "scores equal to the threshold flagged (>= where > belongs)":
                at(expected[0], lambda s, t: s >= t),
            "recall and test_fpr swapped": (expected[0], expected[2], expected[1]),
            "the threshold from the positives, not the negatives": at(float(torch.quantile(positives.double(), fpr))),
        }
        variants = {text: value for text, value in variants.items()
                    if not all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(value, expected))}
        # float32 and float64 quantiles differ in the 7th digit: tolerate that, never a different flag count
        matched = [text for text, value in variants.items()
                   if all(math.isclose(a, b, abs_tol=1e-5, rel_tol=1e-5) for a, b in zip(got, value))]
        if not all(math.isclose(a, b, abs_tol=1e-5, rel_tol=1e-5) for a, b in zip(got, expected)):
            raise CheckFailed(f"{case}: expected (threshold, recall, test_fpr) = "
                              f"({expected[0]:.4g}, {expected[1]:.4g}, {expected[2]:.4g}), got "
                              f"({got[0]:.4g}, {got[1]:.4g}, {got[2]:.4g})"
                              + (f"\n  your answer matches {'; or '.join(matched)}" if matched else ""))
    passed("test_monitor_at_fpr", len(cases))


# ---------------------------------------------------------------- 9. a probe's direction in the residual stream

def reference_residual_direction(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    raw = weight / scale
    return raw / raw.norm()


def test_residual_direction(residual_direction: Callable) -> None:
    """``residual_direction(weight [d], scale [d]) -> [d]``: a probe trained on standardised activations
    ``(x - mean) / scale`` has log-odds ``weight . (x - mean) / scale + bias``; return the unit vector in the raw
    residual along which its log-odds rise fastest."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for d, spread in ((8, 1.0), (32, 3.0), (64, 0.5)):
        weight = torch.randn(d, generator=generator)
        scale = torch.exp(spread * torch.randn(d, generator=generator))  # features with very different scales
        cases.append((weight, scale, f"a random probe on {d} features whose scales span "
                                     f"{float(scale.min()):.2g}..{float(scale.max()):.2g} (seed {seed})"))
    for weight, scale, case in cases:
        got = _as_tensor(call_learner(residual_direction, weight.clone(), scale.clone(), case=case), case)
        expected = reference_residual_direction(weight, scale)

        def variants(weight=weight, scale=scale):
            return {"the probe's weight used as it is: it lives in standardised units; divide by scale to map it "
                    "back to the residual": _unit(weight),
                    "weight * scale where weight / scale belongs": _unit(weight * scale),
                    "weight / scale without normalising to unit length": weight / scale}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, rtol=1e-3)
    passed("test_residual_direction", len(cases))


# ---------------------------------------------------------------- the verdict, re-measured

MODEL = "chat-4l"
KINDS = ("affine", "projection")
CLEAN = {"ablated_refusal": 0.05, "benign_refusal_ablated": 0.05, "kl": 0.1}
"""A clean jailbreak: harmful requests refused at most this often, benign ones too, benign KL at most this."""


@lru_cache(maxsize=2)
def measured_refusal_directions(model_name: str = MODEL, model=None) -> dict:
    """The three tests of section 3 for every candidate and both ablations, and the harm probe retrained under
    the selected ablation, measured on ``model`` (default: the shipped ``model_name``) with the library."""
    model = shipped_model(model_name) if model is None else model
    train_harmful = chat.task_prompts(chat.pairs(harmful=True), seed=1)
    train_benign = chat.task_prompts(chat.pairs(harmful=False), seed=1)
    held_harmful = chat.task_prompts(chat.pairs(harmful=True, held_out=True), seed=2)
    held_benign = chat.task_prompts(chat.pairs(harmful=False, held_out=True), seed=2)
    benign_mix = chat.ChatPrompts.concat([train_benign, chat.capability_prompts(60, seed=7)])
    with torch.no_grad():
        directions = steering.mean_difference_directions(model, train_harmful.tokens, train_benign.tokens,
                                                         train_harmful.last, train_benign.last)
        out = {}
        for kind in KINDS:
            rows = {}
            for layer, direction in directions.items():
                offsets = steering.write_point_means(model, benign_mix.tokens, benign_mix.last, direction) \
                    if kind == "affine" else None
                ablate = steering.directional_ablation_hooks(model, direction, offsets)
                rows[layer] = {
                    "ablated_refusal": steering.refusal_score(model, held_harmful, chat.REFUSAL_TOKEN, ablate),
                    "benign_refusal_ablated": steering.refusal_score(model, held_benign, chat.REFUSAL_TOKEN, ablate),
                    "added_refusal": steering.refusal_score(model, held_benign, chat.REFUSAL_TOKEN,
                                                            steering.activation_addition_hooks(
                                                                model, direction, layer, 1.0, start=held_benign.last)),
                    "kl": steering.benign_kl(model, held_benign, ablate), "offsets": offsets}
            out[kind] = rows
        selected = {kind: reference_select_direction([dict(layer=layer, **{k: v for k, v in row.items() if k != "offsets"})
                                                      for layer, row in rows.items()]) for kind, rows in out.items()}
        recognised = {}
        contrast = chat.ChatPrompts.concat([train_harmful, train_benign])
        held = chat.ChatPrompts.concat([held_harmful, held_benign])
        for kind, layer in selected.items():
            if layer is None:
                continue
            hooks = steering.directional_ablation_hooks(model, directions[layer], out[kind][layer]["offsets"])
            names = [steering.resid_hook(model, l) for l in range(1, model.cfg.n_layers + 1)]
            with model.hooks(fwd_hooks=hooks):
                train_acts = probes.collect_activations(model, contrast.tokens, names, contrast.last, progress=False)
                test_acts = probes.collect_activations(model, held.tokens, names, held.last, progress=False)
            recognised[kind] = min(probes.auroc(probes.train_linear_probe(train_acts[n], contrast.harmful, l2=1.0)
                                                .scores(test_acts[n]), held.harmful) for n in names)
    return {"tests": out, "selected": selected, "recognised_auroc": recognised}


def _is_clean(row: dict) -> bool:
    return all(row[key] <= limit for key, limit in CLEAN.items())


def check_refusal_finding(finding: dict, model_name: str = MODEL, model=None) -> None:
    """``finding = {"candidate": "L0".."L{n_layers}", "ablation": "affine" | "projection", "still_recognised":
    bool, "verdict": str}``: the candidate you selected, the ablation that removed refusal without breaking benign
    prompts, and whether a retrained harm probe still read harm after it. Re-measured with the library."""
    if not isinstance(finding, dict):
        raise CheckFailed(f"give your finding as a dict with keys 'candidate', 'ablation', 'still_recognised' and "
                          f"'verdict', got {type(finding).__name__}")
    missing = [k for k in ("candidate", "ablation", "still_recognised", "verdict") if k not in finding]
    if missing:
        raise CheckFailed(f"your finding lacks {missing}")
    verdict = finding["verdict"]
    if not isinstance(verdict, str) or len(verdict.split()) < 8 or "TODO" in verdict:
        raise CheckFailed("write the verdict in your own words (a sentence of at least 8 words): what removing and "
                          "adding the direction did, and what that would and would not mean for a real assistant")
    truth = measured_refusal_directions(model_name, model)
    kind = finding["ablation"]
    if kind not in KINDS:
        raise CheckFailed(f"ablation {kind!r}: say 'affine' or 'projection'")
    candidate = str(finding["candidate"])
    try:
        layer = int(candidate.lstrip("Ll"))
    except ValueError:
        raise CheckFailed(f"candidate {candidate!r}: name it like the tables do, 'L0' ... 'L4'") from None
    rows = truth["tests"][kind]
    if layer not in rows:
        raise CheckFailed(f"candidate {candidate!r}: the candidates are {', '.join(f'L{l}' for l in rows)}")
    problems = []
    if truth["selected"][kind] is None:
        problems.append(f"with {kind} ablation no candidate passes both filters here; look at the other ablation")
    elif layer != truth["selected"][kind]:
        problems.append(f"{candidate} is not the candidate the three tests select under {kind} ablation (re-measured: "
                        f"L{truth['selected'][kind]}); redo the selection with your table")
    row = rows[layer]
    if not _is_clean(row):
        problems.append(f"{kind} ablation of {candidate} is not a clean jailbreak: harmful refused "
                        f"{row['ablated_refusal']:.2f}, benign refused {row['benign_refusal_ablated']:.2f}, benign KL "
                        f"{row['kl']:.3f} (clean: at most {CLEAN['ablated_refusal']}, {CLEAN['benign_refusal_ablated']}, "
                        f"{CLEAN['kl']})")
    recognised = truth["recognised_auroc"].get(kind)
    if recognised is not None and bool(finding["still_recognised"]) != (recognised >= 0.95):
        problems.append(f"still_recognised {finding['still_recognised']}: a retrained harm probe reads harm with AUROC "
                        f"{recognised:.3f} (lowest over layers 1..{len(rows) - 1}) after this ablation")
    if problems:
        raise CheckFailed("your finding differs from the re-measured tests:\n  " + "\n  ".join(problems))
    print(f"✔ check_refusal_finding passed: {candidate} with {kind} ablation: harmful refused "
          f"{row['ablated_refusal']:.2f}, benign refused {row['benign_refusal_ablated']:.2f}, benign KL {row['kl']:.3f}; "
          f"harm probe after ablation AUROC {recognised:.3f}")
