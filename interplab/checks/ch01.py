"""Checkers for chapter 01 (circuits): head detectors, ablation, attribution, OV/QK, composition, the circuit.

Each ``test_*`` runs the learner's function and the reference in :mod:`interplab.circuits`
on the same inputs; ``check_circuit`` compares the heads a learner names with the ground
truth recorded (from ablations) on the shipped model's card.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from interplab import circuits
from interplab.checks._core import CheckFailed, compare_outputs, passed, shipped_model
from interplab.worlds import induction

MODEL = "attn2-induction"


def _probe(seed: int, half_len: int, batch: int = 4) -> torch.Tensor:
    return induction.repeated_tokens(batch, half_len=half_len, seed=seed)


def _random_patterns(seed: int, heads: int = 3, seq: int = 17) -> torch.Tensor:
    """Causal softmax patterns with no structure: every diagonal has a different value."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, heads, seq, seq, generator=generator) * 2
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def _pattern_cases(half_len: int):
    """(description, pattern [batch, head, query, key]) pairs: real heads and random patterns."""
    model = shipped_model(MODEL)
    with torch.no_grad():
        _, cache = model.run_with_cache(_probe(21, half_len))
    for layer in range(model.cfg.n_layers):
        yield f"layer {layer} of {MODEL} on <bos> + A + A (len(A) = {half_len})", cache[f"blocks.{layer}.attn.hook_pattern"]
    yield f"random causal patterns of 2 x {2 * half_len + 1} tokens", _random_patterns(half_len, seq=2 * half_len + 1)


def _single_layer_cache(pattern: torch.Tensor) -> dict:
    return {"blocks.0.attn.hook_pattern": pattern}


def _reference_layer_score(pattern: torch.Tensor, offset: int, first_query: int) -> torch.Tensor:
    return circuits.diagonal_attention_score(_single_layer_cache(pattern), offset, first_query)[0]


# --- head detectors ---------------------------------------------------------------------------

def reference_previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=1, first_query=1)


def reference_duplicate_token_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=half_len, first_query=half_len + 1)


def reference_induction_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=half_len - 1, first_query=half_len + 1)


def test_previous_token_score(previous_token_score: Callable) -> None:
    """``previous_token_score(pattern [batch, head, q, k]) -> [head]``: mean attention from q to q - 1, q >= 1."""
    cases = 0
    for half_len in (6, 10):
        for case, pattern in _pattern_cases(half_len):
            compare_outputs(previous_token_score(pattern), reference_previous_token_score(pattern), case=case)
            cases += 1
    passed("test_previous_token_score", cases)


def test_duplicate_token_score(duplicate_token_score: Callable) -> None:
    """``duplicate_token_score(pattern, half_len) -> [head]``: from each token of the second A to its first copy."""
    cases = 0
    for half_len in (6, 10):
        for case, pattern in _pattern_cases(half_len):
            compare_outputs(duplicate_token_score(pattern, half_len),
                            reference_duplicate_token_score(pattern, half_len), case=case)
            cases += 1
    passed("test_duplicate_token_score", cases)


def test_induction_score(induction_score: Callable) -> None:
    """``induction_score(pattern, half_len) -> [head]``: from each token of the second A to the token
    after its first copy."""
    cases = 0
    for half_len in (6, 10):
        for case, pattern in _pattern_cases(half_len):
            compare_outputs(induction_score(pattern, half_len), reference_induction_score(pattern, half_len), case=case)
            cases += 1
    passed("test_induction_score", cases)


# --- ablation ---------------------------------------------------------------------------------

def reference_head_ablation_hook(head: int, mean_z: torch.Tensor | None = None) -> Callable:
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0 if mean_z is None else mean_z[: z.shape[1], head]
        return z

    return hook


def test_head_ablation_hook(head_ablation_hook: Callable) -> None:
    """``head_ablation_hook(head, mean_z=None)``: a ``hook_z`` hook that zeroes one head, or with
    ``mean_z`` (``[seq, head, d_head]``, one layer of ``circuits.mean_head_z``) puts in its mean output."""
    model = shipped_model(MODEL)
    tokens = _probe(31, half_len=8)
    means = circuits.mean_head_z(model, _probe(32, half_len=8, batch=16))
    cases = 0
    for mode in ("zero", "mean"):
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                mean_z = None if mode == "zero" else means[layer]
                name = f"blocks.{layer}.attn.hook_z"
                with torch.no_grad():
                    got = model.run_with_hooks(tokens, fwd_hooks=[(name, head_ablation_hook(head, mean_z))])
                    expected = model.run_with_hooks(tokens, fwd_hooks=[(name, reference_head_ablation_hook(head, mean_z))])
                compare_outputs(got, expected, case=f"logits with head {layer}.{head} {mode}-ablated")
                cases += 1
    passed("test_head_ablation_hook", cases)


def reference_repeated_half_loss(logits: torch.Tensor, tokens: torch.Tensor, half_len: int) -> float:
    return circuits.repeated_half_loss(logits, tokens, half_len)


def test_repeated_half_loss(repeated_half_loss: Callable) -> None:
    """``repeated_half_loss(logits, tokens, half_len) -> float``: mean cross-entropy where the next token
    is predictable by induction (positions half_len + 1 ... 2 half_len - 1 predicting their next token)."""
    model = shipped_model(MODEL)
    generator = torch.Generator().manual_seed(0)
    cases = 0
    for half_len in (5, 12):
        tokens = _probe(41 + half_len, half_len)
        with torch.no_grad():
            model_logits = model(tokens)
        random_logits = torch.randn(model_logits.shape, generator=generator) * 3
        for what, logits in (("the model's logits", model_logits), ("random logits", random_logits)):
            got = repeated_half_loss(logits, tokens, half_len)
            compare_outputs(got, reference_repeated_half_loss(logits, tokens, half_len),
                            case=f"{what}, len(A) = {half_len}", atol=1e-4, rtol=1e-3)
            cases += 1
    passed("test_repeated_half_loss", cases)


# --- direct logit attribution -----------------------------------------------------------------

def reference_head_logit_attribution(model, cache, tokens: torch.Tensor) -> torch.Tensor:
    return circuits.head_direct_logit_attribution(model, cache, tokens)


def test_head_logit_attribution(head_logit_attribution: Callable) -> None:
    """``head_logit_attribution(model, cache, tokens) -> [layer, head, batch, seq - 1]``: each head's direct
    contribution to the logit of the token that comes next."""
    model = shipped_model(MODEL)
    cases = 0
    for seed, half_len in ((51, 8), (52, 13)):
        tokens = _probe(seed, half_len, batch=3)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
            compare_outputs(head_logit_attribution(model, cache, tokens),
                            reference_head_logit_attribution(model, cache, tokens),
                            case=f"<bos> + A + A, len(A) = {half_len}", atol=1e-3, rtol=1e-3)
        cases += 1
    passed("test_head_logit_attribution", cases)


# --- weights: OV and QK -----------------------------------------------------------------------

def _dense(matrix) -> torch.Tensor:
    return matrix.AB if hasattr(matrix, "AB") else matrix


def reference_full_ov_circuit(model, layer: int, head: int):
    return circuits.full_ov_circuit(model, layer, head)


def test_full_ov_circuit(full_ov_circuit: Callable) -> None:
    """``full_ov_circuit(model, layer, head)``: ``W_E W_V W_O W_U`` as a ``[d_vocab, d_vocab]`` FactoredMatrix."""
    model = shipped_model(MODEL)
    cases = 0
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                got = full_ov_circuit(model, layer, head)
                compare_outputs(_dense(got), _dense(reference_full_ov_circuit(model, layer, head)),
                                case=f"head {layer}.{head}", atol=1e-3, rtol=1e-3)
                cases += 1
    passed("test_full_ov_circuit", cases)


def reference_positional_pattern(model, layer: int, head: int) -> torch.Tensor:
    return circuits.positional_attention_pattern(model, layer, head)


def test_positional_pattern(positional_pattern: Callable) -> None:
    """``positional_pattern(model, layer, head) -> [n_ctx, n_ctx]``: the head's attention from positions alone."""
    model = shipped_model(MODEL)
    cases = 0
    with torch.no_grad():
        for head in range(model.cfg.n_heads):
            compare_outputs(positional_pattern(model, 0, head), reference_positional_pattern(model, 0, head),
                            case=f"head 0.{head}", atol=1e-4, rtol=1e-3)
            cases += 1
    passed("test_positional_pattern", cases)


# --- composition ------------------------------------------------------------------------------

def reference_composition_score(left, right) -> float:
    return circuits.composition_score(left, right)


def test_composition_score(composition_score: Callable) -> None:
    """``composition_score(left, right) -> float``: ``||left @ right||_F / (||left||_F ||right||_F)``
    for two FactoredMatrix circuits."""
    from transformer_lens import FactoredMatrix

    model = shipped_model(MODEL)
    cases = 0
    with torch.no_grad():
        qk_t = model.QK.T  # K-composition reads W_QK transposed
        for head0 in range(model.cfg.n_heads):
            for head1 in (0, 3):
                left = model.OV[0, head0]
                right = qk_t[1, head1]
                compare_outputs(composition_score(left, right), reference_composition_score(left, right),
                                case=f"OV of 0.{head0} into QK^T of 1.{head1}", atol=1e-4)
                cases += 1
        generator = torch.Generator().manual_seed(3)
        left = FactoredMatrix(torch.randn(8, 2, generator=generator), torch.randn(2, 8, generator=generator) * 5)
        right = FactoredMatrix(torch.randn(8, 3, generator=generator) * 0.1, torch.randn(3, 8, generator=generator))
        compare_outputs(composition_score(left, right), reference_composition_score(left, right),
                        case="two random small-rank matrices of different scales", atol=1e-4)
        cases += 1
    passed("test_composition_score", cases)


# --- the circuit ------------------------------------------------------------------------------

ROLE_NAMES = {"previous_token_heads": "previous-token", "induction_heads": "induction",
              "duplicate_token_heads": "duplicate-token"}


def _as_heads(heads: Iterable, role: str) -> set[tuple[int, int]]:
    out = set()
    for item in heads:
        if isinstance(item, str):
            item = item.split(".")
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise CheckFailed(f"{role}: name each head as (layer, head), e.g. (0, 2), or '0.2'; got {item!r}") from None
        out.add((layer, head))
    return out


def ground_truth_circuit(model_name: str = MODEL) -> dict[str, set[tuple[int, int]]]:
    """The circuit recorded on the model card (``python -m interplab.zoo card NAME`` derives it)."""
    from interplab.zoo import model_card

    truth = model_card(model_name)["ground_truth"]["circuit"]
    return {role: {tuple(h) for h in heads} for role, heads in truth.items()}


def check_circuit(previous_token_heads: Iterable, induction_heads: Iterable, duplicate_token_heads: Iterable = (),
                  model_name: str = MODEL) -> None:
    """Compare the heads you name, by role, with the ground truth of the shipped model
    (derived from mean ablations; thresholds on its card)."""
    from interplab.zoo import model_card

    truth = ground_truth_circuit(model_name)
    named = {"previous_token_heads": _as_heads(previous_token_heads, "previous_token_heads"),
             "induction_heads": _as_heads(induction_heads, "induction_heads"),
             "duplicate_token_heads": _as_heads(duplicate_token_heads, "duplicate_token_heads")}
    problems = []
    for role, expected in truth.items():
        got = named[role]

        def fmt(heads) -> str:
            return ", ".join(f"{l}.{h}" for l, h in sorted(heads)) or "none"

        if got != expected:
            detail = []
            if got - expected:
                detail.append(f"not in the circuit in this role: {fmt(got - expected)}")
            if expected - got:
                detail.append(f"missing: {len(expected - got)} head(s)")
            problems.append(f"{ROLE_NAMES[role]} heads: you named {fmt(got)} ({'; '.join(detail)})")
    if problems:
        method = model_card(model_name)["ground_truth"]["thresholds"]
        raise CheckFailed("the circuit differs from the ground truth:\n  " + "\n  ".join(problems) +
                          f"\n(ground truth from mean ablations, thresholds {method}; a head's role is the score "
                          "that reaches role_score; look again at your scores and ablation table)")
    summary = "; ".join(f"{ROLE_NAMES[r]}: {', '.join(f'{l}.{h}' for l, h in sorted(truth[r])) or 'none'}" for r in truth)
    print(f"✔ check_circuit passed: {summary}")
