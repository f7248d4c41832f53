"""Checkers for chapter 01 (circuits): head detectors, ablation, attribution, OV/QK, composition, the circuit.

Each ``test_*`` runs the learner's function and the reference in :mod:`interplab.circuits`
on the same inputs: the shipped model, a random model built at check time (3 layers x 6 heads,
random LayerNorm weights) and tensors drawn from a seed picked at check time, so a replayed or
hard-coded answer fails; messages name the mistake an answer matches. ``check_circuit`` compares the heads a learner names with the ground
truth recorded (from ablations) on the shipped model's card.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Iterable

import torch

from interplab import circuits
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, fresh_random_model, fresh_seed,
                                    passed, shipped_model)
from interplab.worlds import induction

MODEL = "attn2-induction"


def _probe(seed: int, half_len: int, batch: int = 4) -> torch.Tensor:
    return induction.repeated_tokens(batch, half_len=half_len, seed=seed)


def _random_patterns(seed: int, heads: int = 3, seq: int = 17, batch: int = 2) -> torch.Tensor:
    """Causal softmax patterns with no structure: every diagonal has a different value."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, heads, seq, seq, generator=generator) * 2
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def _pattern_cases(half_len: int, seed: int):
    """(description, pattern [batch, head, query, key]) pairs: the shipped model's heads, a random model's
    heads on a sequence built at check time, and random patterns drawn at check time."""
    model = shipped_model(MODEL)
    with torch.no_grad():
        _, cache = model.run_with_cache(_probe(21, half_len))
    for layer in range(model.cfg.n_layers):
        yield f"layer {layer} of {MODEL} on <bos> + A + A (len(A) = {half_len})", cache[f"blocks.{layer}.attn.hook_pattern"]
    random_model = fresh_random_model(seed)
    generator = torch.Generator().manual_seed(seed)
    block = torch.randint(1, random_model.cfg.d_vocab, (3, half_len), generator=generator)
    tokens = torch.cat([torch.zeros(3, 1, dtype=torch.long), block, block], dim=1)
    with torch.no_grad():
        _, random_cache = random_model.run_with_cache(tokens)
    for layer in range(random_model.cfg.n_layers):
        yield (f"layer {layer} of a random {random_model.cfg.n_heads}-head model built for this check on <bos> + A + A "
               f"(len(A) = {half_len}, seed {seed})", random_cache[f"blocks.{layer}.attn.hook_pattern"])
    yield (f"random causal patterns of 5 heads x {2 * half_len + 1} tokens (seed {seed})",
           _random_patterns(seed + half_len, heads=5, seq=2 * half_len + 1))


def _single_layer_cache(pattern: torch.Tensor) -> dict:
    return {"blocks.0.attn.hook_pattern": pattern}


def _reference_layer_score(pattern: torch.Tensor, offset: int, first_query: int) -> torch.Tensor:
    return circuits.diagonal_attention_score(_single_layer_cache(pattern), offset, first_query)[0]


def _diagonal_variants(pattern: torch.Tensor, right: tuple[int, int],
                       near: list[tuple[int, int, str]]) -> dict[str, torch.Tensor]:
    """Scores of near-miss diagonals: (offset, first query, why) -> the score that mistake gives."""
    variants = {}
    seq = pattern.shape[-1]
    for offset, first_query, why in near:
        if max(offset, first_query) < seq and (offset, max(offset, first_query)) != (right[0], max(right)):
            described = f"attention from q to q - {offset} over queries q = {max(offset, first_query)} ... seq-1 ({why})"
            variants[described] = _reference_layer_score(pattern, offset, first_query)
    offset, first_query = right
    queries = torch.arange(max(offset, first_query), seq)
    variants["a sum over the queries where the mean belongs"] = pattern[..., queries, queries - offset].sum(-1).mean(0)
    return variants


_DETECTOR_DIMS = ("head",)


def _check_detector(learner: Callable, name: str, offset_of: Callable[[int], tuple[int, int]],
                    near_of: Callable[[int], list[tuple[int, int, str]]], with_half_len: bool) -> None:
    seed = fresh_seed()
    cases = 0
    for half_len in (6, 10, 4 + seed % 9):
        for case, pattern in _pattern_cases(half_len, seed):
            args = (pattern, half_len) if with_half_len else (pattern,)
            got = call_learner(learner, *args, case=case)
            offset, first_query = offset_of(half_len)
            compare_outputs(got, _reference_layer_score(pattern, offset, first_query), case=case, dims=_DETECTOR_DIMS,
                            variants=lambda: _diagonal_variants(pattern, (offset, first_query), near_of(half_len)))
            cases += 1
    passed(name, cases)


# --- head detectors ---------------------------------------------------------------------------

def reference_previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=1, first_query=1)


def reference_duplicate_token_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=half_len, first_query=half_len + 1)


def reference_induction_score(pattern: torch.Tensor, half_len: int) -> torch.Tensor:
    return _reference_layer_score(pattern, offset=half_len - 1, first_query=half_len + 1)


def test_previous_token_score(previous_token_score: Callable) -> None:
    """``previous_token_score(pattern [batch, head, q, k]) -> [head]``: mean attention from q to q - 1, q >= 1."""
    _check_detector(previous_token_score, "test_previous_token_score", lambda n: (1, 1),
                    lambda n: [(0, 0, "the main diagonal: attention to itself"), (0, 1, "the main diagonal"),
                               (2, 2, "two tokens back, not one")], with_half_len=False)


def test_duplicate_token_score(duplicate_token_score: Callable) -> None:
    """``duplicate_token_score(pattern, half_len) -> [head]``: from each token of the second A to its first copy."""
    _check_detector(duplicate_token_score, "test_duplicate_token_score", lambda n: (n, n + 1),
                    lambda n: [(n, n, "query half_len, the last token of the first A, kept"),
                               (n, n + 2, "one query too many dropped"),
                               (n - 1, n + 1, "the induction offset half_len - 1"),
                               (n + 1, n + 1, "one token too far back")], with_half_len=True)


def test_induction_score(induction_score: Callable) -> None:
    """``induction_score(pattern, half_len) -> [head]``: from each token of the second A to the token
    after its first copy."""
    _check_detector(induction_score, "test_induction_score", lambda n: (n - 1, n + 1),
                    lambda n: [(n - 1, n, "only one leading query dropped: query half_len is in the first A"),
                               (n - 1, n - 1, "no leading query dropped"),
                               (n - 1, n + 2, "three leading queries dropped"),
                               (n, n + 1, "the duplicate-token offset half_len, not half_len - 1"),
                               (n - 2, n + 1, "one token too far forward")], with_half_len=True)


# --- ablation ---------------------------------------------------------------------------------

def reference_head_ablation_hook(head: int, mean_z: torch.Tensor | None = None) -> Callable:
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0 if mean_z is None else mean_z[: z.shape[1], head]
        return z

    return hook


def _apply_hook(hook_fn: Callable, z: torch.Tensor, case: str) -> torch.Tensor:
    edited = z.clone()
    out = call_learner(hook_fn, edited, SimpleNamespace(name="blocks.0.attn.hook_z"), case=case)
    return edited if out is None else out


def test_head_ablation_hook(head_ablation_hook: Callable) -> None:
    """``head_ablation_hook(head, mean_z=None)``: a ``hook_z`` hook that zeroes one head, or with
    ``mean_z`` (``[seq, head, d_head]``, one layer of ``circuits.mean_head_z``) puts in its mean output."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 7, 5, 8, generator=generator)  # [batch, pos, head, d_head]
    long_mean = torch.randn(9, 5, 8, generator=generator)  # means over longer sequences: slice to z's length
    cases = 0
    for mode, mean_z in (("zero", None), ("mean", long_mean)):
        for head in range(z.shape[2]):
            case = (f"{mode}-ablating head {head} of a hook_z of shape {tuple(z.shape)} [batch, pos, head, d_head]"
                    + (f" with mean_z of shape {tuple(long_mean.shape)} (longer than z: use mean_z[:z.shape[1]])"
                       if mean_z is not None else "") + f" (seed {seed})")
            hook = call_learner(head_ablation_hook, head, mean_z, case=case)
            expected = _apply_hook(reference_head_ablation_hook(head, mean_z), z, case)
            variants = {"every head zeroed, not just one": torch.zeros_like(z)}
            zero_one = z.clone()
            zero_one[:, :, head] = 0.0
            wrong_axis = z.clone()
            wrong_axis[:, head] = 0.0 if mean_z is None else mean_z[head]
            variants["position `head` overwritten (z[:, head]) instead of head `head` (z[:, :, head])"] = wrong_axis
            if mean_z is not None:
                variants["zero: mean_z was ignored"] = zero_one
                every = z.clone()
                every[:] = mean_z[: z.shape[1]]
                variants["every head replaced by its mean, not just one"] = every
            compare_outputs(_apply_hook(hook, z, case), expected, case=case, dims=("batch", "pos", "head", "d_head"),
                            variants=variants)
            cases += 1
    for case_model, model, tokens in list(_models_and_tokens(seed))[:1]:  # in a real run; other shapes above
        means = circuits.mean_head_z(model, tokens)
        for layer in range(model.cfg.n_layers):
            head = (layer + seed) % model.cfg.n_heads
            for mode, mean_z in (("zero", None), ("mean", means[layer])):
                name = f"blocks.{layer}.attn.hook_z"
                with torch.no_grad():
                    got = model.run_with_hooks(tokens, fwd_hooks=[(name, head_ablation_hook(head, mean_z))])
                    expected = model.run_with_hooks(tokens, fwd_hooks=[(name, reference_head_ablation_hook(head, mean_z))])
                compare_outputs(got, expected, case=f"logits of {case_model} with head {layer}.{head} {mode}-ablated",
                                dims=("batch", "pos", "vocab"))
                cases += 1
    passed("test_head_ablation_hook", cases)


def _models_and_tokens(seed: int):
    """(description, model, tokens): the shipped model on its world, then a random model built for the check."""
    yield f"{MODEL} (seed {seed})", shipped_model(MODEL), _probe(seed % 10_000, half_len=7)
    model = fresh_random_model(seed)
    generator = torch.Generator().manual_seed(seed)
    yield (f"a random {model.cfg.n_layers}-layer, {model.cfg.n_heads}-head model built for this check (seed {seed})",
           model, torch.randint(0, model.cfg.d_vocab, (3, 13), generator=generator))


def reference_repeated_half_loss(logits: torch.Tensor, tokens: torch.Tensor, half_len: int) -> float:
    return circuits.repeated_half_loss(logits, tokens, half_len)


def test_repeated_half_loss(repeated_half_loss: Callable) -> None:
    """``repeated_half_loss(logits, tokens, half_len) -> float``: mean cross-entropy where the next token
    is predictable by induction (positions half_len + 1 ... 2 half_len - 1 predicting their next token)."""
    model = shipped_model(MODEL)
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = 0
    for half_len in (5, 12, 3 + seed % 11):
        tokens = _probe(seed % 10_000 + half_len, half_len)
        with torch.no_grad():
            model_logits = model(tokens)
        random_logits = torch.randn(model_logits.shape, generator=generator) * 3
        for what, logits in (("the model's logits", model_logits), (f"random logits (seed {seed})", random_logits)):
            case = f"{what}, len(A) = {half_len}"
            got = call_learner(repeated_half_loss, logits, tokens, half_len, case=case)
            losses = circuits.per_token_loss(logits, tokens)
            current = -logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
            compare_outputs(got, reference_repeated_half_loss(logits, tokens, half_len), case=case, atol=1e-4, rtol=1e-3,
                            variants={
                                "the loss including position half_len, whose next token nothing announces":
                                    losses[:, half_len:2 * half_len].mean().item(),
                                "the loss of predicting the current token, not the next (no shift by one)":
                                    current[:, half_len + 1:2 * half_len].mean().item(),
                                "the loss one position later (positions half_len + 2 ... 2 half_len)":
                                    losses[:, half_len + 2:].mean().item(),
                                "the loss on the first A, not the second": losses[:, 1:half_len].mean().item(),
                                "the loss over the whole sequence": losses.mean().item(),
                                "the log-probability, not its negative (flipped sign)":
                                    -losses[:, half_len + 1:2 * half_len].mean().item(),
                            })
            cases += 1
    passed("test_repeated_half_loss", cases)


# --- direct logit attribution -----------------------------------------------------------------

def reference_head_logit_attribution(model, cache, tokens: torch.Tensor) -> torch.Tensor:
    return circuits.head_direct_logit_attribution(model, cache, tokens)


def _attribution_variant(model, cache, tokens, centre=True, scale=True, weight=True, scale_shift=0,
                         unembed="next") -> torch.Tensor:
    """The recipe of exercise 6 with one step changed: what a near-miss computes."""
    out = circuits.head_outputs(model, cache)[..., :-1, :]
    if centre:
        out = out - out.mean(-1, keepdim=True)
    if scale:
        recorded = cache["ln_final.hook_scale"]
        out = out / (recorded[:, :-1] if scale_shift == 0 else recorded[:, 1:])
    if weight:
        out = out * model.ln_final.weight
    targets = tokens[:, 1:] if unembed == "next" else tokens[:, :-1]
    return torch.einsum("lhbpm,mbp->lhbp", out, model.W_U[:, targets])


def test_head_logit_attribution(head_logit_attribution: Callable) -> None:
    """``head_logit_attribution(model, cache, tokens) -> [layer, head, batch, seq - 1]``: each head's direct
    contribution to the logit of the token that comes next."""
    seed = fresh_seed()
    cases = 0
    for case, model, tokens in _models_and_tokens(seed):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
            got = call_learner(head_logit_attribution, model, cache, tokens, case=case)
            variants = lambda: {  # noqa: E731 (computed only for a wrong answer)
                "the recipe without centring (LayerNorm subtracts each vector's mean first)":
                    _attribution_variant(model, cache, tokens, centre=False),
                "the recipe without ln_final.weight (LayerNorm's per-dimension weight)":
                    _attribution_variant(model, cache, tokens, weight=False),
                "the recipe without dividing by ln_final.hook_scale":
                    _attribution_variant(model, cache, tokens, scale=False),
                "hook_scale read at positions 1 ... seq-1; slice it to 0 ... seq-2, the positions you attribute":
                    _attribution_variant(model, cache, tokens, scale_shift=1),
                "the logit of the current token, not the next (W_U[:, tokens[:, :-1]])":
                    _attribution_variant(model, cache, tokens, unembed="current"),
            }
            compare_outputs(got, reference_head_logit_attribution(model, cache, tokens), case=case, atol=1e-3,
                            rtol=1e-3, dims=("layer", "head", "batch", "pos"), variants=variants)
        cases += 1
    passed("test_head_logit_attribution", cases)


# --- weights: OV and QK -----------------------------------------------------------------------

def reference_full_ov_circuit(model, layer: int, head: int):
    return circuits.full_ov_circuit(model, layer, head)


def test_full_ov_circuit(full_ov_circuit: Callable) -> None:
    """``full_ov_circuit(model, layer, head)``: ``W_E W_V W_O W_U`` as a ``[d_vocab, d_vocab]`` FactoredMatrix."""
    from transformer_lens import FactoredMatrix

    seed = fresh_seed()
    cases = 0
    with torch.no_grad():
        for description, model, _ in _models_and_tokens(seed):
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    case = f"head {layer}.{head} of {description}"
                    got = call_learner(full_ov_circuit, model, layer, head, case=case)
                    if not isinstance(got, FactoredMatrix):
                        raise CheckFailed(f"{case}: return a FactoredMatrix (got {type(got).__name__}): the exercise "
                                          "keeps the product factored, as a real vocabulary needs")
                    other = (head + 1) % model.cfg.n_heads
                    variants = lambda: {  # noqa: E731
                        "the QK circuit W_E W_Q W_K^T W_U, not OV": (
                            model.W_E @ model.W_Q[layer, head] @ model.W_K[layer, head].T @ model.W_U),
                        f"W_V of head {layer}.{head} with W_O of head {layer}.{other} (mixed head indices)": (
                            model.W_E @ model.W_V[layer, head] @ model.W_O[layer, other] @ model.W_U),
                    }
                    compare_outputs(got.AB, reference_full_ov_circuit(model, layer, head).AB, case=case, atol=1e-3,
                                    rtol=1e-3, dims=("source token", "output token"), variants=variants)
                    cases += 1
    passed("test_full_ov_circuit", cases)


def reference_positional_pattern(model, layer: int, head: int) -> torch.Tensor:
    return circuits.positional_attention_pattern(model, layer, head)


def _positional_variant(model, layer, head, ln=True, scale=True, mean_embed=True) -> torch.Tensor:
    x = model.W_pos + (model.W_E.mean(0) if mean_embed else 0)
    if ln:
        x = model.blocks[layer].ln1(x)
    scores = (x @ model.QK[layer, head] @ x.T).AB
    if scale:
        scores = scores / model.cfg.d_head ** 0.5
    n = scores.shape[-1]
    return scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf")).softmax(-1)


def test_positional_pattern(positional_pattern: Callable) -> None:
    """``positional_pattern(model, layer, head) -> [n_ctx, n_ctx]``: the head's attention from positions alone."""
    seed = fresh_seed()
    cases = 0
    with torch.no_grad():
        for description, model, _ in _models_and_tokens(seed):
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    case = f"head {layer}.{head} of {description}"
                    got = call_learner(positional_pattern, model, layer, head, case=case)
                    compare_outputs(got, reference_positional_pattern(model, layer, head), case=case, atol=1e-4,
                                    rtol=1e-3, dims=("query", "key"), variants=lambda: {
                                        **{f"the pattern of head {other}.{head}: is the layer index used everywhere?":
                                           reference_positional_pattern(model, other, head)
                                           for other in range(model.cfg.n_layers) if other != layer},
                                        "the pattern without the layer's ln1": _positional_variant(model, layer, head, ln=False),
                                        "the pattern without dividing scores by sqrt(d_head)":
                                            _positional_variant(model, layer, head, scale=False),
                                        "the pattern from W_pos alone, without the average token embedding":
                                            _positional_variant(model, layer, head, mean_embed=False),
                                    })
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
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    pairs = []
    with torch.no_grad():
        qk_t, ov = model.QK.T, model.OV  # K-composition reads W_QK transposed
        for head0 in range(model.cfg.n_heads):
            for head1 in range(model.cfg.n_heads):
                pairs.append((f"OV of 0.{head0} into QK^T of 1.{head1}", ov[0, head0], qk_t[1, head1]))
        for shapes in (((8, 2, 8), (8, 3, 8)), ((7, 3, 5), (5, 2, 9)), ((6, 6, 6), (6, 1, 6))):
            (a, r1, b), (c, r2, d) = shapes
            left = FactoredMatrix(torch.randn(a, r1, generator=generator) * 5, torch.randn(r1, b, generator=generator))
            right = FactoredMatrix(torch.randn(c, r2, generator=generator) * 0.1, torch.randn(r2, d, generator=generator))
            pairs.append((f"random factored matrices {a}x{b} (rank {r1}) and {c}x{d} (rank {r2}) (seed {seed})",
                          left, right))
        for case, left, right in pairs:
            got = call_learner(composition_score, left, right, case=case)
            product = (left @ right).norm().item()
            variants = {
                "||left @ right||_F, not divided by ||left||_F ||right||_F": product,
                "the score squared (squared norms)": (product / (left.norm() * right.norm()).item()) ** 2,
                "||left @ right||_F / ||left||_F, without ||right||_F": product / left.norm().item(),
            }
            compare_outputs(got, reference_composition_score(left, right), case=case, atol=1e-4, variants=variants)
    passed("test_composition_score", len(pairs))


# --- naming the heads ---------------------------------------------------------------------------

def reference_name_circuit(scores: dict[str, torch.Tensor], threshold: float = 0.6) -> dict[str, list[tuple[int, int]]]:
    return {role: circuits.heads_above(values, threshold) for role, values in scores.items()}


def test_name_circuit(name_circuit: Callable) -> None:
    """``name_circuit(scores, threshold) -> {role: [(layer, head), ...]}``: the heads whose score reaches
    ``threshold`` (ties included), in any order; a role no head reaches gets an empty list."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = 0
    for n_layers, n_heads, threshold in ((2, 4, 0.6), (3, 6, 0.5), (1, 5, 0.25)):
        scores = {role: torch.rand(n_layers, n_heads, generator=generator) for role in ROLE_NAMES}
        scores["previous_token_heads"][0, 1] = threshold  # exactly at the threshold: in
        scores["duplicate_token_heads"].clamp_(max=threshold - 0.01)  # no head reaches it: an empty list
        case = f"{n_layers} layers x {n_heads} heads of random scores, threshold {threshold} (seed {seed})"
        got = call_learner(name_circuit, {role: values.clone() for role, values in scores.items()}, threshold, case=case)
        if not isinstance(got, dict) or set(got) != set(scores):
            raise CheckFailed(f"{case}: return a dict with the same keys as scores ({', '.join(scores)}), got "
                              f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
        for role, expected in reference_name_circuit(scores, threshold).items():
            named = _as_heads(got[role], role)
            if len(named) != len(list(got[role])):
                raise CheckFailed(f"{case}, {role}: a head is named twice: {list(got[role])}")
            if named != set(expected):
                detail = []
                if set(expected) - named:
                    at = [h for h in set(expected) - named if abs(scores[role][h].item() - threshold) < 1e-6]
                    detail.append(f"missing {sorted(set(expected) - named)}"
                                  + (" (a score exactly at the threshold counts: use >=, not >)" if at else ""))
                if named - set(expected):
                    detail.append(f"below the threshold: {sorted(named - set(expected))}")
                raise CheckFailed(f"{case}, {role}: " + "; ".join(detail))
        cases += 1
    passed("test_name_circuit", cases)


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
