"""Checkers for chapter 02 (patching): the metric, activation, path and attribution patching, circuits.

Each ``test_*`` runs the learner's function and the reference on the same inputs: the shipped
``ioi-2l`` on prompts drawn at check time, and a random model (3 layers x 6 heads, random
LayerNorm weights) built for each check from a seed drawn at check time, on random tokens; so
an answer replayed from an earlier run, or one that hard-codes the shipped model's sizes or
positions, fails. When an answer matches a common mistake (the wrong run, the wrong hook
point, every head of a layer patched, a flipped sign, a missing normalisation) the message says
which. Where an exercise asks for a method (one batched pass, a gradient), answers that bypass
it by calling the library fail. ``check_circuit`` compares the heads a learner names, by role,
with the reference circuit on the model card.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Callable, Iterable

import torch

from interplab import patching
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_random_model, fresh_seed, passed, shipped_model)
from interplab.worlds import ioi

MODEL = "ioi-2l"
_HEAD_DIMS = ("layer", "head")


def _prompts(seed: int, n: int = 8, kind: str = "abc") -> tuple[ioi.IOIBatch, ioi.IOIBatch]:
    clean = ioi.sample(n, seed=seed, held_out=True)
    return clean, ioi.corrupt(clean, kind, seed=seed)


def _metric(clean: ioi.IOIBatch) -> patching.Metric:
    return patching.logit_diff_metric(clean.answers, position=ioi.POS_END)


def _random_setting(seed: int, batch: int = 4, seq: int = 9):
    """A random 3-layer, 6-head model built for this check from its seed (drawn at check time), clean tokens,
    corrupted tokens (positions 2 and 5 changed), a metric at the last position, and a description."""
    model = fresh_random_model(seed)
    generator = torch.Generator().manual_seed(seed)
    d_vocab = model.cfg.d_vocab
    clean = torch.randint(0, d_vocab, (batch, seq), generator=generator)
    corrupted = clean.clone()
    for pos in (2, 5):
        corrupted[:, pos] = (clean[:, pos] + torch.randint(1, d_vocab, (batch,), generator=generator)) % d_vocab
    answers = torch.stack([torch.randperm(d_vocab, generator=generator)[:2] for _ in range(batch)])
    where = (f"a random {model.cfg.n_layers}-layer, {model.cfg.n_heads}-head model built for this check "
             f"on {batch} random prompts of {seq} tokens (seed {seed})")
    return model, clean, corrupted, patching.logit_diff_metric(answers, position=-1), where


def _settings(seed: int, kind: str = "abc"):
    """The shipped model on fresh prompts, then the random model on random tokens."""
    model = shipped_model(MODEL)
    clean, corrupted = _prompts(seed, kind=kind)
    yield model, clean.tokens, corrupted.tokens, _metric(clean), f"{MODEL} on 8 fresh '{kind}' prompts (seed {seed})"
    yield _random_setting(seed)


@contextlib.contextmanager
def _library_blocked(exercise: str, names: Iterable[str]):
    """Replace library functions that would do the exercise, for the duration of the learner's call."""
    saved = {name: getattr(patching, name) for name in names}

    def blocked(name):
        def refuse(*args, **kwargs):
            raise CheckFailed(f"{exercise} asks you to write this yourself; your function called "
                              f"patching.{name}, which does it for you")
        return refuse

    try:
        for name in saved:
            setattr(patching, name, blocked(name))
        yield
    finally:
        for name, function in saved.items():
            setattr(patching, name, function)


def _corrupting(model, clean_tokens, corrupted_tokens, metric, graph, edges: list[str]) -> float:
    """metric(clean run with these edges corrupted together) - metric(clean)."""
    mask = torch.stack([torch.zeros(len(graph.edges)), graph.edge_mask(edges).float()])
    clean_value, value = patching.run_with_corrupted_edges(model, clean_tokens, corrupted_tokens, metric, graph, mask)
    return (value - clean_value).item()


# ---------------------------------------------------------------- 1. the metric

def reference_logit_diff(logits: torch.Tensor, answers: torch.Tensor, position: int = -1) -> torch.Tensor:
    return patching.logit_diff_metric(answers, position)(logits)


def test_logit_diff(logit_diff: Callable) -> None:
    """``logit_diff(logits [batch, seq, vocab], answers [batch, 2], position) -> scalar``: mean over prompts of
    logit(answers[:, 0]) - logit(answers[:, 1]) at ``position``."""
    model = shipped_model(MODEL)
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for offset, position in ((1, ioi.POS_END), (2, -1), (3, ioi.POS_S2)):
        clean, _ = _prompts(seed + offset)
        with torch.no_grad():
            cases.append((model(clean.tokens), clean.answers, position, f"{MODEL} logits, 8 fresh prompts, position {position}"))
    for batch, seq, vocab, position in ((5, 7, 11, 3), (1, 4, 6, -2), (3, 6, 20, 0)):
        logits = torch.randn(batch, seq, vocab, generator=generator) * 3
        answers = torch.stack([torch.randperm(vocab, generator=generator)[:2] for _ in range(batch)])
        cases.append((logits, answers, position, f"random logits {batch} x {seq} x {vocab} (seed {seed}), position {position}"))
    for logits, answers, position, case in cases:
        got = call_learner(logit_diff, logits, answers, position, case=case)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            shape = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else repr(got)
            raise CheckFailed(f"{case}: return one number as a 0-d tensor (so gradients can flow through it), got {shape}"
                              + (": average over the batch" if isinstance(got, torch.Tensor) and got.numel() > 1 else ""))
        picked = logits[:, position].gather(-1, answers)
        variants = {"the sum over prompts, where the mean belongs": (picked[:, 0] - picked[:, 1]).sum().item(),
                    "the logits at the last position, not at `position`":
                        reference_logit_diff(logits, answers, -1).item(),
                    "prompt 0's answers used for every prompt":
                        (logits[:, position, answers[0, 0]] - logits[:, position, answers[0, 1]]).mean().item()}
        compare_outputs(got.reshape(()).item(), reference_logit_diff(logits, answers, position).item(), case=case,
                        variants=variants)
    passed("test_logit_diff", len(cases))


def reference_patching_score(patched, clean_value, corrupted_value):
    return (patched - corrupted_value) / (clean_value - corrupted_value)


def test_patching_score(patching_score: Callable) -> None:
    """``patching_score(patched, clean_value, corrupted_value)``: 0 = no better than corrupted, 1 = fully restored."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randn(3, 4, generator=generator) * 4
    clean_value, corrupted_value = (float(v) for v in torch.randn(2, generator=generator) * 5)
    if abs(clean_value - corrupted_value) < 0.5:
        clean_value = corrupted_value + 1.5
    cases = [(7.0, 7.0, 0.5), (0.5, 7.0, 0.5), (2.0, 6.0, -6.0),
             (1.0, -2.0, 3.0),  # corrupted above clean: the denominator is negative
             (torch.tensor([[1.0, 3.0], [5.0, -1.0]]), 5.0, 1.0), (drawn, clean_value, corrupted_value)]
    for patched, clean, corrupted in cases:
        case = (f"patched={patched if not isinstance(patched, torch.Tensor) or patched.numel() < 5 else 'a random 3x4 tensor'}"
                f", clean={clean:.4g}, corrupted={corrupted:.4g}")
        expected = reference_patching_score(patched, clean, corrupted)
        got = call_learner(patching_score, patched, clean, corrupted, case=case)
        variants = {"1 - score: the distance from the clean run, not from the corrupted one":
                        1 - reference_patching_score(patched, clean, corrupted),
                    "(patched - clean) / (clean - corrupted): measured from the clean value":
                        (patched - clean) / (clean - corrupted),
                    "a division by |clean - corrupted|: the sign must follow the denominator":
                        (patched - corrupted) / abs(clean - corrupted),
                    "patched / clean, without subtracting the corrupted value": patched / clean}
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"{case}: a tensor in must give a tensor out, elementwise; got {type(got).__name__}")
            compare_outputs(got.double(), expected.double(), case=case,
                            variants={k: torch.as_tensor(v, dtype=torch.float64) for k, v in variants.items()})
        else:
            compare_outputs(got, float(expected), case=case, variants={k: float(v) for k, v in variants.items()})
    passed("test_patching_score", len(cases))


# ---------------------------------------------------------------- 2. activation patching

def _restore_at(model, corrupted_tokens, clean_cache, name: str, pos, metric) -> float:
    def restore(resid, hook):
        resid = resid.clone()
        resid[:, pos] = clean_cache[name][:, pos]
        return resid

    with torch.no_grad():
        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, restore)])).item()


def reference_patch_residual(model, corrupted_tokens, clean_cache, layer: int, pos: int, metric) -> float:
    return _restore_at(model, corrupted_tokens, clean_cache, f"blocks.{layer}.hook_resid_pre", pos, metric)


def test_patch_residual(patch_residual: Callable) -> None:
    """``patch_residual(model, corrupted_tokens, clean_cache, layer, pos, metric) -> float``: the metric of the
    corrupted run with ``blocks.{layer}.hook_resid_pre`` at position ``pos`` restored from the clean cache."""
    seed = fresh_seed()
    n_cases = 0
    for model, clean_tokens, corrupted_tokens, metric, where in _settings(seed):
        with torch.no_grad():
            _, cache = model.run_with_cache(clean_tokens)
        seq = clean_tokens.shape[1]
        changed = (clean_tokens != corrupted_tokens).any(0).nonzero().flatten().tolist()
        for layer in range(model.cfg.n_layers):  # every layer, at a changed position and at the last one
            for pos in (changed[layer % len(changed)], seq - 1):
                case = f"{where}: layer {layer}, position {pos}"
                with torch.no_grad():
                    got = call_learner(patch_residual, model, corrupted_tokens, cache, layer, pos, metric, case=case)
                def variants(layer=layer, pos=pos, cache=cache, model=model, metric=metric,
                             corrupted_tokens=corrupted_tokens):
                    pre, post, mid = (f"blocks.{layer}.hook_resid_{where}" for where in ("pre", "post", "mid"))
                    found = {"the corrupted run with no patch: did the hook run, and did it return the patched tensor?":
                                 metric(model(corrupted_tokens)).item(),
                             "every position restored, not only `pos`":
                                 _restore_at(model, corrupted_tokens, cache, pre, slice(None), metric),
                             f"the wrong hook point: {post}, after the layer, not hook_resid_pre":
                                 _restore_at(model, corrupted_tokens, cache, post, pos, metric),
                             f"the wrong hook point: {mid}, after attention":
                                 _restore_at(model, corrupted_tokens, cache, mid, pos, metric)}
                    if layer > 0:
                        found["the layer before: an off-by-one layer index"] = _restore_at(
                            model, corrupted_tokens, cache, f"blocks.{layer - 1}.hook_resid_pre", pos, metric)
                    return found

                compare_with_lazy_variants(got, reference_patch_residual(model, corrupted_tokens, cache, layer, pos, metric),
                         case=case, atol=1e-3, variants=variants)
                n_cases += 1
    passed("test_patch_residual", n_cases)


class _CountingModel:
    """Passes everything through to a model, counting the forward passes asked of it and their batch sizes."""

    def __init__(self, model):
        self._model, self.runs, self.batches = model, 0, []

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name in {"run_with_hooks", "run_with_cache", "forward"}:
            def counted(*args, **kwargs):
                self._count(args, kwargs)
                return attr(*args, **kwargs)
            return counted
        return attr

    def _count(self, args, kwargs) -> None:
        self.runs += 1
        tokens = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
        self.batches.append(tokens.shape[0] if isinstance(tokens, torch.Tensor) and tokens.ndim >= 1 else None)

    def __call__(self, *args, **kwargs):
        self._count(args, kwargs)
        return self._model(*args, **kwargs)


def reference_batched_head_patching(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    """Exercise 4 written out: one clean cache, one batched run with copy ``l * n_heads + h`` patching head l.h."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n, batch = n_layers * n_heads, clean_tokens.shape[0]
    _, cache = model.run_with_cache(clean_tokens)

    def make_hook(layer):
        def hook(z, hook):
            z = z.clone()
            view = z.view(n, batch, *z.shape[1:])
            for head in range(n_heads):
                view[layer * n_heads + head, :, :, head] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
            return z
        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", make_hook(layer)) for layer in range(n_layers)]
    logits = model.run_with_hooks(corrupted_tokens.repeat(n, 1), fwd_hooks=hooks)
    per_copy = logits.view(n, batch, *logits.shape[1:])
    return torch.stack([metric(per_copy[i]) for i in range(n)]).view(n_layers, n_heads)


def _whole_layer_patched(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    values, _ = patching.patch_and_measure(model, clean_tokens, corrupted_tokens, metric, "z",
                                           [(layer, (slice(None), slice(None))) for layer in range(n_layers)])
    return values[:, None].expand(n_layers, n_heads).contiguous()


def _head_patching_variants(model, clean_tokens, corrupted_tokens, metric, expected) -> dict[str, torch.Tensor]:
    clean_value = metric(model(clean_tokens)).item()
    corrupted_value = metric(model(corrupted_tokens)).item()
    last = clean_tokens.shape[1] - 1
    return {"the wrong run: the clean run with one head's corrupted output (noising), not the corrupted run with "
            "its clean output restored (denoising)": patching.activation_patch_heads(model, corrupted_tokens,
                                                                                       clean_tokens, metric),
            "every head of the layer patched in each copy, not one head": _whole_layer_patched(
                model, clean_tokens, corrupted_tokens, metric),
            "only the last position patched, not every position": patching.activation_patch_heads(
                model, clean_tokens, corrupted_tokens, metric, per_position=True)[..., last],
            "the restored fraction, not the metric itself": patching.restored_fraction(
                expected, clean_value, corrupted_value),
            "the corrupted run with nothing patched: did your hooks return the patched tensor?":
                torch.full_like(expected, corrupted_value)}


def test_batched_head_patching(batched_head_patching: Callable) -> None:
    """``batched_head_patching(model, clean_tokens, corrupted_tokens, metric) -> [n_layers, n_heads]``: the metric
    of the corrupted run with each head's clean ``hook_z`` restored, with at most two model runs in all."""
    seed = fresh_seed()
    n_cases = 0
    for model, clean_tokens, corrupted_tokens, metric, where in _settings(seed):
        with torch.no_grad():
            expected = reference_batched_head_patching(model, clean_tokens, corrupted_tokens, metric)
        counting = _CountingModel(model)
        with torch.no_grad(), _library_blocked("exercise 4", ["activation_patch_heads", "patch_and_measure",
                                                               "activation_patch_heads_loop"]):
            got = call_learner(batched_head_patching, counting, clean_tokens, corrupted_tokens, metric, case=where)
        model.reset_hooks()
        compare_with_lazy_variants(got, expected, where, atol=1e-3, dims=_HEAD_DIMS, variants=lambda: _head_patching_variants(
            model, clean_tokens, corrupted_tokens, metric, expected))
        n = model.cfg.n_layers * model.cfg.n_heads
        if counting.runs > 2:
            raise CheckFailed(f"{where}: the values are right, but you ran the model {counting.runs} times: one run for "
                              f"the clean cache and ONE batched run for all {n} heads is the point of the exercise")
        if max(b or 0 for b in counting.batches) < n * clean_tokens.shape[0]:
            raise CheckFailed(f"{where}: the values are right, but no run held {n} copies of the "
                              f"{clean_tokens.shape[0]} prompts: patch every head in one batched run")
        n_cases += 1
    passed("test_batched_head_patching", n_cases)


# ---------------------------------------------------------------- 3. path patching

def reference_direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer: int, head: int) -> float:
    """Exercise 5 written out: the head's (corrupted - clean) output added to the final residual stream."""
    name = f"blocks.{layer}.attn.hook_z"
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupt_cache = model.run_with_cache(corrupted_tokens)
    delta = (corrupt_cache[name][:, :, head] - clean_cache[name][:, :, head]) @ model.W_O[layer, head]
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(final, lambda resid, hook: resid + delta)])
    return (metric(patched) - metric(model(clean_tokens))).item()


def _direct_path_variants(model, clean_tokens, corrupted_tokens, metric, heads: list[int]) -> dict[str, torch.Tensor]:
    """Known mistakes, as [layer, head] maps filled at the ``heads`` columns."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    clean_value = metric(model(clean_tokens)).item()
    total = patching.activation_patch_heads(model, corrupted_tokens, clean_tokens, metric) - clean_value
    last = n_layers - 1
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    _, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name in names)
    _, corrupt_cache = model.run_with_cache(corrupted_tokens, names_filter=lambda name: name in names)

    def added_before_last_block(layer: int, head: int) -> float:
        name = names[layer]
        delta = (corrupt_cache[name][:, :, head] - clean_cache[name][:, :, head]) @ model.W_O[layer, head]
        patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{last}.hook_resid_pre",
                                                                 lambda resid, hook: resid + delta)])
        return metric(patched).item() - clean_value

    through_last_block = torch.tensor([[added_before_last_block(layer, head) if head in heads else 0.0
                                        for head in range(n_heads)] for layer in range(n_layers)])
    variants = {"the head's total effect: you patched its output itself, so every later component saw the change "
                "(add the delta to the final residual stream instead)": total}
    if n_layers > 1:
        variants[f"the delta added at blocks.{last}.hook_resid_pre: the last block still reads it (add it to "
                 f"blocks.{last}.hook_resid_post)"] = through_last_block
    return variants


def test_direct_path_patch(direct_path_patch: Callable) -> None:
    """``direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer, head) -> float``: metric(clean run
    with only head layer.head's *direct* path to the logits corrupted) - metric(clean run)."""
    seed = fresh_seed()
    n_cases = 0
    for index, (model, clean_tokens, corrupted_tokens, metric, where) in enumerate(_settings(seed)):
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        graph = patching.ComputationalGraph.from_model(model)
        # every head of the shipped model; on the random one, three heads of every layer (one drawn at check time)
        heads = list(range(n_heads)) if index == 0 else sorted({0, 1 + seed % (n_heads - 1), n_heads - 1})
        expected = patching.edge_patching_scores(model, clean_tokens, corrupted_tokens, metric, graph,
                                                 [f"a{l}.{h}->logits" for l in range(n_layers) for h in heads])
        expected = expected.view(n_layers, len(heads))
        got = torch.zeros(n_layers, len(heads))
        for layer in range(n_layers):
            for column, head in enumerate(heads):
                with torch.no_grad():
                    value = call_learner(direct_path_patch, model, clean_tokens, corrupted_tokens, metric, layer, head,
                                         case=f"{where}: sender head {layer}.{head}")
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = value.item()
                if not isinstance(value, (int, float)):
                    raise CheckFailed(f"{where}: sender head {layer}.{head}: return a float, got {value!r}")
                got[layer, column] = value
        compare_with_lazy_variants(got, expected, f"{where}: sender heads (layer, head) with head in {heads}", atol=1e-3,
                 dims=("layer", f"head ({heads})"),
                 variants=lambda: {"metric(patched run), without subtracting metric(clean run)":
                                       expected + metric(model(clean_tokens)).item(),
                                   **{name: value[:, heads] for name, value in _direct_path_variants(
                                       model, clean_tokens, corrupted_tokens, metric, heads).items()}})
        n_cases += n_layers * len(heads)
    passed("test_direct_path_patch", n_cases)


def reference_path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender: tuple[int, int],
                                      receiver: tuple[int, int], channel: str) -> float:
    """Exercise 6 written out: run 1 adds the sender's delta before the receiver's layer and records its input;
    run 2 swaps only the receiver head's slice of that input in."""
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupt_cache = model.run_with_cache(corrupted_tokens)
    z = f"blocks.{s_layer}.attn.hook_z"
    delta = (corrupt_cache[z][:, :, s_head] - clean_cache[z][:, :, s_head]) @ model.W_O[s_layer, s_head]
    recorded = {}
    name = f"blocks.{r_layer}.attn.hook_{channel}"
    model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{r_layer}.hook_resid_pre", lambda x, hook: x + delta),
                                                  (name, lambda x, hook: recorded.update(value=x.clone()))])

    def replace(x, hook):
        x = x.clone()
        x[:, :, r_head] = recorded["value"][:, :, r_head]
        return x

    return (metric(model.run_with_hooks(clean_tokens, fwd_hooks=[(name, replace)])) - metric(model(clean_tokens))).item()


def _path_variants(model, clean_tokens, corrupted_tokens, metric, graph, sender, receiver, channel) -> dict[str, float]:
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    out = f"a{s_layer}.{s_head}->"
    edges = [e for e in graph.edge_names if e.startswith(out)]
    later = [e for e in edges if e.endswith("logits") or int(e.split("->")[1][1:].split(".")[0]) >= r_layer]
    layer_channel = [f"{out}a{r_layer}.{h}.{channel}" for h in range(graph.n_heads)]
    variants = {f"every component from layer {r_layer} on saw the sender's change (you added it to the residual "
                f"stream and stopped there: record the receiver's hook_{channel} in run 1 and swap only that head's "
                "slice in run 2)": _corrupting(model, clean_tokens, corrupted_tokens, metric, graph, later),
                f"every head of layer {r_layer} got the corrupted {channel} input, not only head {r_head}":
                    _corrupting(model, clean_tokens, corrupted_tokens, metric, graph, layer_channel)}
    for other in patching.CHANNELS:
        if other != channel:
            variants[f"the path into the receiver's {other} input, not its {channel} input"] = _corrupting(
                model, clean_tokens, corrupted_tokens, metric, graph, [f"{out}a{r_layer}.{r_head}.{other}"])
    if r_head != s_head:
        variants["the receiver layer's head with the sender's head index"] = _corrupting(
            model, clean_tokens, corrupted_tokens, metric, graph, [f"{out}a{r_layer}.{s_head}.{channel}"])
    return variants


def test_path_patch_head_to_head(path_patch_head_to_head: Callable) -> None:
    """``path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel) -> float``:
    metric change when only the path sender head -> the ``channel`` ("q", "k" or "v") input of the receiver head
    carries the sender's corrupted output."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for index, (model, clean_tokens, corrupted_tokens, metric, where) in enumerate(_settings(seed, kind="third_name")):
        graph = patching.ComputationalGraph.from_model(model)
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        if index == 0:  # the shipped model: its own circuit's paths
            cases = [((0, h), (1, r), c) for h, r, c in ((0, 3, "v"), (2, 3, "v"), (1, 0, "q"), (3, 1, "k"))]
        else:  # every channel, senders in several layers, receivers in the layer right after and further on
            cases = []
            for channel in patching.CHANNELS:
                s_layer = int(torch.randint(0, n_layers - 1, (1,), generator=generator))
                r_layer = int(torch.randint(s_layer + 1, n_layers, (1,), generator=generator))
                s_head, r_head = (int(h) for h in torch.randint(0, n_heads, (2,), generator=generator))
                cases.append(((s_layer, s_head), (r_layer, r_head), channel))
            cases.append(((0, 1), (n_layers - 1, n_heads - 1), "v"))
        edges = [f"a{s[0]}.{s[1]}->a{r[0]}.{r[1]}.{c}" for s, r, c in cases]
        expected = patching.edge_patching_scores(model, clean_tokens, corrupted_tokens, metric, graph, edges)
        for (sender, receiver, channel), want in zip(cases, expected):
            case = f"{where}: {sender} -> {receiver} via {channel}"
            with torch.no_grad():
                got = call_learner(path_patch_head_to_head, model, clean_tokens, corrupted_tokens, metric, sender,
                                   receiver, channel, case=case)
            compare_with_lazy_variants(got, want.item(), case, atol=1e-3, variants=lambda: _path_variants(
                model, clean_tokens, corrupted_tokens, metric, graph, sender, receiver, channel))
            n_cases += 1
    passed("test_path_patch_head_to_head", n_cases)


# ---------------------------------------------------------------- 4. attribution patching

def reference_attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    """Exercise 7 written out: record each hook_z on the corrupted run (keyed by the name it was registered
    under, not ``hook.name``), backward the metric, then metric + (clean - corrupted) . grad per head."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean_tokens)
    acts = {}

    def recorder(name):
        def record(act, hook):
            act.retain_grad()
            acts[name] = act
            return act
        return record

    with torch.enable_grad():
        value = metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, recorder(name)) for name in names]))
        value.backward()
    return value.detach() + torch.stack([((clean_cache[name] - acts[name].detach()) * acts[name].grad).sum(dim=(0, 1, 3))
                                         for name in names])


def _attribution_variants(model, clean_tokens, corrupted_tokens, metric, expected) -> dict[str, torch.Tensor]:
    clean_value = metric(model(clean_tokens)).item()
    corrupted_value = metric(model(corrupted_tokens)).item()
    on_clean = patching.attribution_patch_heads(model, corrupted_tokens, clean_tokens, metric)
    return {"the gradient taken on the clean run: take it on the corrupted run, the point the estimate starts from":
                corrupted_value + clean_value - on_clean,
            "the first-order term alone: add metric(corrupted run)": expected - corrupted_value,
            "(corrupted - clean) * grad: the difference has its sign flipped": 2 * corrupted_value - expected,
            "exact activation patching, not its gradient estimate": patching.activation_patch_heads(
                model, clean_tokens, corrupted_tokens, metric)}


def test_attribution_patch_heads(attribution_patch_heads: Callable) -> None:
    """``attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) -> [n_layers, n_heads]``:
    metric(corrupted) + sum over prompts, positions, d_head of (clean z - corrupted z) * d metric / d z,
    with the gradient taken on the corrupted run."""
    seed = fresh_seed()
    n_cases = 0
    settings = list(_settings(seed)) + [next(iter(_settings(seed + 1, kind="s2_io")))]
    for model, clean_tokens, corrupted_tokens, metric, where in settings:
        expected = reference_attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric)
        with _library_blocked("exercise 7", ["attribution_patch_heads", "activation_patch_heads", "patch_and_measure",
                                             "_grads_at"]):
            got = call_learner(attribution_patch_heads, model, clean_tokens, corrupted_tokens, metric, case=where)
        model.reset_hooks()
        compare_with_lazy_variants(got, expected, where, atol=1e-3, dims=_HEAD_DIMS, variants=lambda: _attribution_variants(
            model, clean_tokens, corrupted_tokens, metric, expected))
        n_cases += 1
    passed("test_attribution_patch_heads", n_cases)


# ---------------------------------------------------------------- 5. circuits

def reference_top_k_edges(scores: torch.Tensor, edge_names: list[str], k: int) -> list[str]:
    return [edge_names[i] for i in scores.abs().argsort(descending=True, stable=True)[:k].tolist()]


def _check_top_k(got, scores: torch.Tensor, names: list[str], k: int, case: str) -> None:
    """Right when the names are k distinct edges whose |scores|, in order, are the k largest: ties in any order."""
    if isinstance(got, torch.Tensor):
        raise CheckFailed(f"{case}: return a list of edge names, got a tensor (indices?): map them with edge_names[i]")
    got = list(got)
    expected = reference_top_k_edges(scores, names, k)
    index = {name: i for i, name in enumerate(names)}
    unknown = [g for g in got if g not in index]
    if unknown:
        hint = " (indices? map them with edge_names[i])" if all(isinstance(g, int) for g in unknown) else ""
        raise CheckFailed(f"{case}: {unknown[:3]} are not edge names{hint}")
    if len(got) != len(expected):
        raise CheckFailed(f"{case}: expected {len(expected)} edges, got {len(got)}")
    if len(set(got)) != len(got):
        raise CheckFailed(f"{case}: an edge appears twice in {got}")
    magnitudes = [abs(scores[index[g]].item()) for g in got]
    want = [abs(scores[index[e]].item()) for e in expected]
    if magnitudes != want:
        signed = [names[i] for i in scores.argsort(descending=True)[:k].tolist()]
        if got == signed:
            raise CheckFailed(f"{case}: you ranked by the signed score; rank by |score| (a large negative effect is "
                              f"as important as a large positive one). expected e.g. {expected}, got {got}")
        if sorted(magnitudes) == sorted(want):
            raise CheckFailed(f"{case}: the right edges in the wrong order: largest |score| first. expected e.g. "
                              f"{expected}, got {got}")
        raise CheckFailed(f"{case}: expected the edges with the largest |score|, e.g. {expected} (|scores| "
                          f"{[round(w, 4) for w in want]}), got {got} (|scores| {[round(m, 4) for m in magnitudes]})")


def test_top_k_edges(top_k_edges: Callable) -> None:
    """``top_k_edges(scores [n_edges], edge_names, k) -> list[str]``: the k edge names with the largest |score|,
    largest first (edges with tied scores in any order)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    names6 = [f"e{i}" for i in range(6)]
    drawn = torch.randn(40, generator=generator)
    drawn_names = [f"a{i // 8}.{i % 8}->logits" for i in range(40)]
    cases = [(torch.tensor([0.1, -3.0, 2.0, 0.0, -0.5, 1.0]), names6, 3),
             (torch.tensor([-1.0, -2.0, -3.0, 4.0, 0.2, 0.1]), names6, 2),
             (torch.tensor([0.3, 0.2, 0.1, 0.0, -0.1, -0.2]), names6, 6),
             (torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 0.1]), names6, 2),  # a three-way tie at the top: any two
             (torch.tensor([0.5, -0.5, 0.5, 3.0, 0.1, 0.2]), names6, 3),  # a tie at the cut
             (torch.tensor([0.1, -3.0, 2.0, 0.0, -0.5, 1.0]), names6, 0),  # nothing asked, nothing returned
             (drawn, drawn_names, 7)]
    for scores, names, k in cases:
        case = (f"scores {[round(s, 3) for s in scores.tolist()]}, k={k}" if len(names) <= 6
                else f"40 random scores (seed {seed}), k={k}")
        got = call_learner(top_k_edges, scores, names, k, case=case)
        _check_top_k(got, scores, names, k, case)
    passed("test_top_k_edges", len(cases))


def reference_circuit_overlap(found: list[str], reference: list[str]) -> tuple[float, float]:
    hits = len(set(found) & set(reference))
    return hits / max(len(set(found)), 1), hits / max(len(set(reference)), 1)


def test_circuit_overlap(circuit_overlap: Callable) -> None:
    """``circuit_overlap(found, reference) -> (precision, recall)``: the share of found edges that are in the
    reference, and the share of reference edges that were found (lists taken as sets; 0.0 for an empty list)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    pool = [f"a0.{h}->m0" for h in range(8)] + [f"embed->a1.{h}.v" for h in range(8)]
    drawn_found = [pool[i] for i in torch.randperm(16, generator=generator)[:7].tolist()]
    drawn_reference = [pool[i] for i in torch.randperm(16, generator=generator)[:5].tolist()]
    cases = [(["a", "b", "c"], ["a", "b"]), (["a"], ["a", "b", "c", "d"]), (["x", "y"], ["a"]),
             (["a", "b"], ["b", "a"]),
             (["a", "a", "b"], ["a", "c"]),  # a duplicate in the found list counts once
             ([], ["a", "b"]), (["a"], []),  # empty lists
             (drawn_found, drawn_reference)]
    for found, reference in cases:
        case = (f"found={found} against reference={reference}" if len(found) < 7
                else f"7 random edges against 5 (seed {seed})")
        got = call_learner(circuit_overlap, list(found), list(reference), case=case)
        expected = reference_circuit_overlap(found, reference)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailed(f"{case}: return a tuple (precision, recall), got {got!r}")
        hits = len(set(found) & set(reference))
        got_pair = (round(float(got[0]), 6), round(float(got[1]), 6))
        if got_pair == (round(expected[1], 6), round(expected[0], 6)) and expected[0] != expected[1]:
            raise CheckFailed(f"{case}: precision and recall are swapped: precision is the share of YOUR edges that "
                              f"are in the reference ({expected[0]:.3g}), recall the share of the reference you found "
                              f"({expected[1]:.3g})")
        with_duplicates = (hits / max(len(found), 1), hits / max(len(reference), 1))
        if got_pair == tuple(round(v, 6) for v in with_duplicates) and with_duplicates != expected:
            raise CheckFailed(f"{case}: you divided by the list's length; take each list as a set (duplicates "
                              "count once)")
        compare_outputs(float(got[0]), float(expected[0]), case=f"precision of {case}")
        compare_outputs(float(got[1]), float(expected[1]), case=f"recall of {case}")
    passed("test_circuit_overlap", len(cases))


# ---------------------------------------------------------------- 6. reading the heads

def reference_attention_from_end(pattern: torch.Tensor, batch: ioi.IOIBatch) -> torch.Tensor:
    rows = torch.arange(len(batch))
    end = pattern[rows, :, batch.pos_end]  # batch head key
    picks = [end[rows, :, where] for where in (batch.pos_io, batch.pos_s1, batch.pos_s2)]
    return torch.stack(picks, dim=-1).mean(0)


class _Positions(SimpleNamespace):
    """A batch with positions drawn at check time: names elsewhere than in the IOI templates."""

    def __len__(self) -> int:
        return len(self.pos_end)


def _moved_batch(seed: int, batch: int, seq: int) -> _Positions:
    generator = torch.Generator().manual_seed(seed)
    pos_end = torch.randint(seq // 2, seq - 1, (batch,), generator=generator)  # never the last position
    rows = [torch.randperm(int(end), generator=generator)[:3].tolist() for end in pos_end]
    io, s1, s2 = (torch.tensor(col) for col in zip(*rows))
    return _Positions(pos_io=io, pos_s1=s1, pos_s2=s2, pos_end=pos_end, abba=io < s1)


def _end_variants(pattern: torch.Tensor, batch) -> dict[str, torch.Tensor]:
    rows = torch.arange(len(batch))
    first = SimpleNamespace(**{name: torch.full_like(getattr(batch, name), int(getattr(batch, name)[0]))
                               for name in ("pos_io", "pos_s1", "pos_s2", "pos_end")})
    first_ref = torch.stack([pattern[rows, :, first.pos_end][rows, :, w] for w in (first.pos_io, first.pos_s1,
                                                                                    first.pos_s2)], -1).mean(0)
    expected = reference_attention_from_end(pattern, batch)
    last = pattern[rows, :, -1]
    return {"prompt 0's positions used for every prompt: in BABA prompts IO and S1 swap places":
                first_ref,
            "the IO and S1 columns swapped": expected[:, [1, 0, 2]],
            "the last query row, not each prompt's END (batch.pos_end)":
                torch.stack([last[rows, :, w] for w in (batch.pos_io, batch.pos_s1, batch.pos_s2)], -1).mean(0),
            "a sum over prompts, where the mean belongs": expected * len(batch)}


def test_attention_from_end(attention_from_end: Callable) -> None:
    """``attention_from_end(pattern [batch, head, query, key], batch) -> [head, 3]``: mean attention from END to the
    IO, S1 and S2 positions (each prompt's own positions: IO comes first in ABBA, second in BABA)."""
    model = shipped_model(MODEL)
    seed = fresh_seed()
    cases = []
    for offset in (0, 1):
        clean = ioi.sample(8, seed=seed + offset, held_out=bool(offset))
        with torch.no_grad():
            _, cache = model.run_with_cache(clean.tokens)
        cases += [(cache[f"blocks.{layer}.attn.hook_pattern"], clean,
                   f"{MODEL} layer {layer} on 8 fresh prompts (seed {seed + offset})") for layer in range(model.cfg.n_layers)]
    random_model = fresh_random_model(seed)
    batch = _moved_batch(seed, 5, 13)
    tokens = torch.randint(0, random_model.cfg.d_vocab, (5, 13), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _, random_cache = random_model.run_with_cache(tokens)
    cases.append((random_cache["blocks.1.attn.hook_pattern"], batch,
                  f"layer 1 of a random 6-head model built for this check, 5 prompts of 13 tokens whose names and END "
                  f"sit at positions drawn at check time (seed {seed})"))
    for pattern, batch, case in cases:
        got = call_learner(attention_from_end, pattern, batch, case=f"{case}; columns IO, S1, S2")
        compare_outputs(got, reference_attention_from_end(pattern, batch), case=f"{case}; columns IO, S1, S2",
                        variants=_end_variants(pattern, batch), dims=("head", "IO/S1/S2"))
    passed("test_attention_from_end", len(cases))


# ---------------------------------------------------------------- naming the circuit

ROLE_NAMES = {"name_collectors": "name collector",
              "s_inhibition_heads": "S-inhibition"}
ROLE_RULES = {"name_collectors": "a layer-0 head whose output feeds the first MLP (an edge a0.h->m0 in the circuit)",
              "s_inhibition_heads": "a later head that reads the first MLP through its value input (an edge "
                                    "m0->a{l}.{h}.v in the circuit)"}


def reference_circuit_roles(model_name: str = MODEL) -> dict[str, set[tuple[int, int]]]:
    """The heads of the card's reference circuit, by role, read off its edges (rules in ``ROLE_RULES``)."""
    from interplab.zoo import model_card

    edges = set(model_card(model_name)["reference_circuit"]["edges"])
    roles: dict[str, set[tuple[int, int]]] = {role: set() for role in ROLE_NAMES}
    for edge in edges:
        sender, receiver = edge.split("->")
        if sender.startswith("a0.") and receiver == "m0":
            roles["name_collectors"].add((0, int(sender.split(".")[1])))
        if sender == "m0" and receiver.startswith("a") and receiver.endswith(".v"):
            layer, head = receiver[1:].split(".")[:2]
            roles["s_inhibition_heads"].add((int(layer), int(head)))
    return roles


def _as_heads(heads: Iterable, role: str) -> set[tuple[int, int]]:
    if isinstance(heads, str) or (isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads)):
        heads = [heads]  # one head given on its own
    out = set()
    for item in heads:
        text = item
        if isinstance(item, str):
            item = item.removeprefix("a").split(".")
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise CheckFailed(f"{role}: name each head as (layer, head), e.g. (0, 2), or 'a0.2'; got {text!r}") from None
        out.add((layer, head))
    return out


def check_circuit(name_collectors: Iterable, s_inhibition_heads: Iterable, model_name: str = MODEL) -> None:
    """Compare the heads you name, by role, with the reference circuit on the model card (found by exact edge
    patching); a head's role is read off the circuit's edges (``ROLE_RULES``)."""
    truth = reference_circuit_roles(model_name)
    named = {"name_collectors": _as_heads(name_collectors, "name_collectors"),
             "s_inhibition_heads": _as_heads(s_inhibition_heads, "s_inhibition_heads")}
    role_of = {head: role for role, heads in truth.items() for head in heads}

    def fmt(heads) -> str:
        return ", ".join(f"{l}.{h}" for l, h in sorted(heads)) or "none"

    problems = []
    for role, expected in truth.items():
        got = named[role]
        if got == expected:
            continue
        detail = []
        for head in sorted(got - expected):
            other = role_of.get(head)
            why = (f"it is in the circuit, but in the role '{ROLE_NAMES[other]}'" if other
                   else "it has no edge of this kind in the reference circuit")
            detail.append(f"not in the circuit in this role: {head[0]}.{head[1]} ({why})")
        if expected - got:
            detail.append(f"missing: {len(expected - got)} head(s)")
        problems.append(f"{ROLE_NAMES[role]} heads: you named {fmt(got)} ({'; '.join(detail)})\n"
                        f"    a {ROLE_NAMES[role]} head is {ROLE_RULES[role]}")
    if problems:
        raise CheckFailed("the circuit differs from the reference circuit on the card:\n  " + "\n  ".join(problems) +
                          "\n(look again at the path patching into the top head, the edges of the reference circuit "
                          "and the attention and logit table of section 6)")
    summary = "; ".join(f"{ROLE_NAMES[r]}: {fmt(truth[r])}" for r in truth)
    print(f"✔ check_circuit passed: {summary}")
