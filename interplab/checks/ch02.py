"""Checkers for chapter 02 (patching): the metric, activation, path and attribution patching, circuits."""
from __future__ import annotations

from typing import Callable

import torch

from interplab import patching
from interplab.checks._core import CheckFailed, compare_outputs, passed, shipped_model
from interplab.worlds import ioi

MODEL = "ioi-2l"


def _prompts(seed: int, n: int = 8, kind: str = "abc") -> tuple[ioi.IOIBatch, ioi.IOIBatch]:
    clean = ioi.sample(n, seed=seed, held_out=True)
    return clean, ioi.corrupt(clean, kind, seed=seed)


def _metric(clean: ioi.IOIBatch) -> patching.Metric:
    return patching.logit_diff_metric(clean.answers, position=ioi.POS_END)


# ---------------------------------------------------------------- 1. the metric

def reference_logit_diff(logits: torch.Tensor, answers: torch.Tensor, position: int = -1) -> torch.Tensor:
    return patching.logit_diff_metric(answers, position)(logits)


def test_logit_diff(logit_diff: Callable) -> None:
    """``logit_diff(logits [batch, seq, vocab], answers [batch, 2], position) -> scalar``: mean over prompts of
    logit(answers[:, 0]) - logit(answers[:, 1]) at ``position``."""
    model = shipped_model(MODEL)
    for seed, position in ((1, ioi.POS_END), (2, -1), (3, ioi.POS_S2)):
        clean, _ = _prompts(seed)
        with torch.no_grad():
            logits = model(clean.tokens)
        got = logit_diff(logits, clean.answers, position)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise CheckFailed(f"return one number as a 0-d tensor (so gradients can flow through it), got {got!r}")
        compare_outputs(got.reshape(()), reference_logit_diff(logits, clean.answers, position),
                        case=f"8 prompts (seed {seed}), position {position}")
    passed("test_logit_diff", 3)


def reference_patching_score(patched, clean_value, corrupted_value):
    return (patched - corrupted_value) / (clean_value - corrupted_value)


def test_patching_score(patching_score: Callable) -> None:
    """``patching_score(patched, clean_value, corrupted_value)``: 0 = no better than corrupted, 1 = fully restored."""
    cases = [(7.0, 7.0, 0.5), (0.5, 7.0, 0.5), (2.0, 6.0, -6.0), (torch.tensor([[1.0, 3.0], [5.0, -1.0]]), 5.0, 1.0)]
    for patched, clean_value, corrupted_value in cases:
        expected = reference_patching_score(patched, clean_value, corrupted_value)
        compare_outputs(patching_score(patched, clean_value, corrupted_value), expected,
                        case=f"patched={patched}, clean={clean_value}, corrupted={corrupted_value}")
    passed("test_patching_score", len(cases))


# ---------------------------------------------------------------- 2. activation patching

def reference_patch_residual(model, corrupted_tokens, clean_cache, layer: int, pos: int, metric) -> float:
    name = f"blocks.{layer}.hook_resid_pre"

    def restore(resid, hook):
        resid = resid.clone()
        resid[:, pos] = clean_cache[name][:, pos]
        return resid

    with torch.no_grad():
        return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, restore)])).item()


def test_patch_residual(patch_residual: Callable) -> None:
    """``patch_residual(model, corrupted_tokens, clean_cache, layer, pos, metric) -> float``: the metric of the
    corrupted run with ``blocks.{layer}.hook_resid_pre`` at position ``pos`` restored from the clean cache."""
    model = shipped_model(MODEL)
    clean, corrupted = _prompts(4)
    metric = _metric(clean)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean.tokens)
    cases = [(0, ioi.POS_S2), (1, ioi.POS_S2), (1, ioi.POS_END), (0, ioi.POS_A)]
    for layer, pos in cases:
        with torch.no_grad():
            got = patch_residual(model, corrupted.tokens, cache, layer, pos, metric)
        compare_outputs(got, reference_patch_residual(model, corrupted.tokens, cache, layer, pos, metric),
                        case=f"layer {layer}, position {pos}", atol=1e-3)
    passed("test_patch_residual", len(cases))


class _CountingModel:
    """Passes everything through to a model, counting the forward passes asked of it."""

    def __init__(self, model):
        self._model, self.runs = model, 0

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name in {"run_with_hooks", "run_with_cache", "forward"}:
            def counted(*args, **kwargs):
                self.runs += 1
                return attr(*args, **kwargs)
            return counted
        return attr

    def __call__(self, *args, **kwargs):
        self.runs += 1
        return self._model(*args, **kwargs)


def reference_batched_head_patching(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    return patching.activation_patch_heads(model, clean_tokens, corrupted_tokens, metric)


def test_batched_head_patching(batched_head_patching: Callable) -> None:
    """``batched_head_patching(model, clean_tokens, corrupted_tokens, metric) -> [n_layers, n_heads]``: the metric
    of the corrupted run with each head's clean ``hook_z`` restored, with at most two model runs in all."""
    model = shipped_model(MODEL)
    for seed in (5, 6):
        clean, corrupted = _prompts(seed)
        expected = reference_batched_head_patching(model, clean.tokens, corrupted.tokens, _metric(clean))
        counting = _CountingModel(model)
        with torch.no_grad():
            got = batched_head_patching(counting, clean.tokens, corrupted.tokens, _metric(clean))
        model.reset_hooks()
        compare_outputs(got, expected, case=f"8 prompts (seed {seed})", atol=1e-3)
        if counting.runs > 2:
            raise CheckFailed(f"the values are right, but you ran the model {counting.runs} times: one run for the "
                              f"clean cache and ONE batched run for all {model.cfg.n_layers * model.cfg.n_heads} "
                              f"heads is the point of the exercise")
    passed("test_batched_head_patching", 2)


# ---------------------------------------------------------------- 3. path patching

def reference_direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer: int, head: int) -> float:
    graph = patching.ComputationalGraph.from_model(model)
    return patching.edge_patching_scores(model, clean_tokens, corrupted_tokens, metric, graph,
                                         [f"a{layer}.{head}->logits"])[0].item()


def test_direct_path_patch(direct_path_patch: Callable) -> None:
    """``direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer, head) -> float``: metric(clean run
    with only head layer.head's *direct* path to the logits corrupted) - metric(clean run)."""
    model = shipped_model(MODEL)
    clean, corrupted = _prompts(7)
    metric = _metric(clean)
    cases = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    graph = patching.ComputationalGraph.from_model(model)
    expected = patching.edge_patching_scores(model, clean.tokens, corrupted.tokens, metric, graph,
                                             [f"a{layer}.{head}->logits" for layer, head in cases])  # all at once
    for (layer, head), want in zip(cases, expected):
        with torch.no_grad():
            got = direct_path_patch(model, clean.tokens, corrupted.tokens, metric, layer, head)
        compare_outputs(got, want.item(), case=f"sender head {layer}.{head}", atol=1e-3)
    passed("test_direct_path_patch", len(cases))


def reference_path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender: tuple[int, int],
                                      receiver: tuple[int, int], channel: str) -> float:
    graph = patching.ComputationalGraph.from_model(model)
    edge = f"a{sender[0]}.{sender[1]}->a{receiver[0]}.{receiver[1]}.{channel}"
    return patching.edge_patching_scores(model, clean_tokens, corrupted_tokens, metric, graph, [edge])[0].item()


def test_path_patch_head_to_head(path_patch_head_to_head: Callable) -> None:
    """``path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel) -> float``:
    metric change when only the path sender head -> the ``channel`` ("q", "k" or "v") input of the receiver head
    carries the sender's corrupted output."""
    model = shipped_model(MODEL)
    clean, corrupted = _prompts(8, kind="third_name")
    metric = _metric(clean)
    last = model.cfg.n_layers - 1
    cases = [((0, h), (last, r), c) for h, r, c in ((0, 3, "v"), (2, 3, "v"), (1, 0, "q"), (3, 1, "k"), (0, 2, "q"))]
    graph = patching.ComputationalGraph.from_model(model)
    edges = [f"a{s[0]}.{s[1]}->a{r[0]}.{r[1]}.{c}" for s, r, c in cases]
    expected = patching.edge_patching_scores(model, clean.tokens, corrupted.tokens, metric, graph, edges)  # all at once
    for (sender, receiver, channel), want in zip(cases, expected):
        with torch.no_grad():
            got = path_patch_head_to_head(model, clean.tokens, corrupted.tokens, metric, sender, receiver, channel)
        compare_outputs(got, want.item(), case=f"{sender} -> {receiver} via {channel}", atol=1e-3)
    passed("test_path_patch_head_to_head", len(cases))


# ---------------------------------------------------------------- 4. attribution patching

def reference_attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    return patching.attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric)


def test_attribution_patch_heads(attribution_patch_heads: Callable) -> None:
    """``attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) -> [n_layers, n_heads]``:
    metric(corrupted) + sum over prompts, positions, d_head of (clean z - corrupted z) * d metric / d z,
    with the gradient taken on the corrupted run."""
    model = shipped_model(MODEL)
    for seed, kind in ((9, "abc"), (10, "s2_io")):
        clean, corrupted = _prompts(seed, kind=kind)
        got = attribution_patch_heads(model, clean.tokens, corrupted.tokens, _metric(clean))
        compare_outputs(got, reference_attribution_patch_heads(model, clean.tokens, corrupted.tokens, _metric(clean)),
                        case=f"'{kind}' corruption (seed {seed})", atol=1e-3)
    passed("test_attribution_patch_heads", 2)


# ---------------------------------------------------------------- 5. circuits

def reference_top_k_edges(scores: torch.Tensor, edge_names: list[str], k: int) -> list[str]:
    return [edge_names[i] for i in scores.abs().argsort(descending=True)[:k].tolist()]


def test_top_k_edges(top_k_edges: Callable) -> None:
    """``top_k_edges(scores [n_edges], edge_names, k) -> list[str]``: the k edge names with the largest |score|,
    largest first."""
    names = [f"e{i}" for i in range(6)]
    cases = [(torch.tensor([0.1, -3.0, 2.0, 0.0, -0.5, 1.0]), 3), (torch.tensor([-1.0, -2.0, -3.0, 4.0, 0.2, 0.1]), 2),
             (torch.tensor([0.3, 0.2, 0.1, 0.0, -0.1, -0.2]), 6)]
    for scores, k in cases:
        compare_outputs(list(top_k_edges(scores, names, k)), reference_top_k_edges(scores, names, k),
                        case=f"scores {scores.tolist()}, k={k}")
    passed("test_top_k_edges", len(cases))


def reference_circuit_overlap(found: list[str], reference: list[str]) -> tuple[float, float]:
    hits = len(set(found) & set(reference))
    return hits / max(len(set(found)), 1), hits / max(len(set(reference)), 1)


def test_circuit_overlap(circuit_overlap: Callable) -> None:
    """``circuit_overlap(found, reference) -> (precision, recall)``: the share of found edges that are in the
    reference, and the share of reference edges that were found."""
    cases = [(["a", "b", "c"], ["a", "b"]), (["a"], ["a", "b", "c", "d"]), (["x", "y"], ["a"]), (["a", "b"], ["b", "a"])]
    for found, reference in cases:
        got = circuit_overlap(found, reference)
        expected = reference_circuit_overlap(found, reference)
        if not isinstance(got, tuple) or len(got) != 2:
            raise CheckFailed(f"return a tuple (precision, recall), got {got!r}")
        compare_outputs(float(got[0]), expected[0], case=f"precision of found={found} against {reference}")
        compare_outputs(float(got[1]), expected[1], case=f"recall of found={found} against {reference}")
    passed("test_circuit_overlap", len(cases))


# ---------------------------------------------------------------- 6. reading the heads

def reference_attention_from_end(pattern: torch.Tensor, batch: ioi.IOIBatch) -> torch.Tensor:
    rows = torch.arange(len(batch))
    end = pattern[rows, :, batch.pos_end]  # batch head key
    picks = [end[rows, :, where] for where in (batch.pos_io, batch.pos_s1, batch.pos_s2)]
    return torch.stack(picks, dim=-1).mean(0)


def test_attention_from_end(attention_from_end: Callable) -> None:
    """``attention_from_end(pattern [batch, head, query, key], batch) -> [head, 3]``: mean attention from END to the
    IO, S1 and S2 positions (each prompt's own positions: IO comes first in ABBA, second in BABA)."""
    model = shipped_model(MODEL)
    for seed in (11, 12):
        clean, _ = _prompts(seed)
        with torch.no_grad():
            _, cache = model.run_with_cache(clean.tokens)
        for layer in range(model.cfg.n_layers):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
            compare_outputs(attention_from_end(pattern, clean), reference_attention_from_end(pattern, clean),
                            case=f"layer {layer} (seed {seed}); columns IO, S1, S2")
    passed("test_attention_from_end", 2 * model.cfg.n_layers)
