"""Checkers for chapter 06 (what alignment tuning changes).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time: random logits,
log-probabilities, rewards and weight matrices, and, for the patching hook, a random model (GPT-2 family, 3
layers, d_model 48) with a randomly perturbed copy standing in for the tuned model, built once per kernel from a
seed drawn then. None of them needs the shipped ``chat-*`` models, so an answer replayed from an earlier run, or
one that hard-codes the shipped models' sizes, fails. When an answer matches a common mistake (the logits at
position t ranked against token t instead of t + 1, the KL the wrong way round or on raw logits, padding counted,
a mean of shares where a share of sums belongs, DPO's margin the wrong way round or without the reference, beta
outside the log-sigmoid, a baseline that includes the sample itself, the KL penalty added instead of subtracted,
the left singular vector where the right one belongs) the message says which.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch

from interplab import finetune
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_random_model, fresh_seed, passed)


@lru_cache(maxsize=1)
def _base_and_tuned():
    """A random model and a copy with every weight moved by noise: a 'base' and a 'tuned' model of one shape."""
    seed = fresh_seed()
    base = fresh_random_model(seed)
    tuned = finetune.copy_model(base)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.2 * param.detach().std().clamp(min=0.05) * torch.randn(param.shape, generator=generator))
    tuned.eval()
    return base, tuned, seed


def _where(model, seed: int) -> str:
    return (f"a random {model.cfg.n_layers}-layer model (d_model {model.cfg.d_model}) and a copy with noise added to "
            f"every weight, built for this check (seed {seed})")


def _as_tensor(got, case: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{case}: return a tensor, got {type(got).__name__}")
    return got.detach().cpu()


def _as_float(got, case: str, what: str = "one number") -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise CheckFailed(f"{case}: return {what} (a float), got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise CheckFailed(f"{case}: return {what} (a float), got {type(got).__name__}")
    return float(got)


def _random_mask(batch: int, seq: int, generator: torch.Generator, min_len: int = 2) -> torch.Tensor:
    """Right-padded rows of random length (each at least ``min_len``), one row full, one row short."""
    lengths = torch.randint(min_len, seq + 1, (batch,), generator=generator)
    lengths[0], lengths[-1] = seq, min_len
    return torch.arange(seq)[None] < lengths[:, None]


# ---------------------------------------------------------------- URIAL: a token's rank under the base

def reference_token_ranks(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    chosen = logits[:, :-1].gather(-1, tokens[:, 1:, None])
    return (logits[:, :-1] > chosen).sum(-1) + 1


def test_token_ranks(token_ranks: Callable) -> None:
    """``token_ranks(logits [batch, seq, vocab], tokens [batch, seq]) -> [batch, seq - 1]`` (integers): the rank of
    each next token ``tokens[:, t + 1]`` under the base's logits at position ``t`` (1 = the base's top token; a tie
    counts in the token's favour: rank = 1 + the number of tokens with a strictly higher logit)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab, scale in ((3, 8, 20, 2.0), (2, 12, 57, 4.0), (4, 6, 11, 1.0)):
        tokens = torch.randint(vocab, (batch, seq), generator=generator)
        logits = torch.randn(batch, seq, vocab, generator=generator) * scale
        # make the next token the top pick often enough that rank 1 is common, as for a fluent base
        boost = torch.rand(batch, seq - 1, generator=generator) < 0.4
        logits[:, :-1].scatter_add_(-1, tokens[:, 1:, None], (boost * 3 * scale).float()[..., None])
        logits = logits.round()  # integer logits: ties occur, so how they are counted is tested
        cases.append((logits, tokens, f"random integer logits {batch} x {seq} x {vocab} (seed {seed})"))
    for logits, tokens, case in cases:
        got = _as_tensor(call_learner(token_ranks, logits.clone(), tokens.clone(), case=case), case)
        expected = reference_token_ranks(logits, tokens)

        def variants(logits=logits, tokens=tokens):
            same = logits.gather(-1, tokens[..., None])
            chosen = logits[:, :-1].gather(-1, tokens[:, 1:, None])
            return {"token t ranked under the logits at position t: the logits at position t predict token t + 1 "
                    "(an off-by-one position)": ((logits > same).sum(-1) + 1)[:, 1:],
                    "the same off-by-one, token t under the logits at t, for t = 0..seq - 2":
                        ((logits > same).sum(-1) + 1)[:, :-1],
                    "ranks counted from 0: the base's top token has rank 1": expected - 1,
                    "ties counted against the token (>= where > belongs)": (logits[:, :-1] >= chosen).sum(-1),
                    "ranks counted from the bottom (an ascending sort): rank 1 is the base's most likely token":
                        (logits[:, :-1] < chosen).sum(-1) + 1,
                    "the token at each rank (argsort) where the rank of each token belongs":
                        logits[:, :-1].argsort(-1, descending=True).gather(-1, tokens[:, 1:, None])[..., 0]}

        compare_with_lazy_variants(got.double(), expected.double(), case, variants, atol=1e-6, rtol=0,
                                   dims=("response", "position"))
    passed("test_token_ranks", len(cases))


# ---------------------------------------------------------------- KL(tuned || base) at every position

def reference_kl_by_position(tuned_logits: torch.Tensor, base_logits: torch.Tensor, mask: torch.Tensor
                             ) -> torch.Tensor:
    tuned = tuned_logits.double().log_softmax(-1)
    base = base_logits.double().log_softmax(-1)
    return ((tuned.exp() * (tuned - base)).sum(-1) * mask).float()


def test_kl_by_position(kl_by_position: Callable) -> None:
    """``kl_by_position(tuned_logits [batch, seq, vocab], base_logits [batch, seq, vocab], mask [batch, seq]) ->
    [batch, seq]``: KL(tuned || base) of the two next-token distributions at every position where ``mask`` is True,
    in nats, over the whole vocabulary; 0 where ``mask`` is False (padding)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab, shift in ((3, 7, 15, 1.0), (4, 10, 40, 0.5), (2, 5, 9, 2.5)):
        base = torch.randn(batch, seq, vocab, generator=generator) * 3
        tuned = base + shift * torch.randn(batch, seq, vocab, generator=generator) + 1.5  # a constant offset too
        mask = _random_mask(batch, seq, generator)
        cases.append((tuned, base, mask, f"random logits {batch} x {seq} x {vocab}, the tuned ones moved by noise of "
                                         f"scale {shift}, rows of lengths {mask.sum(-1).tolist()} (seed {seed})"))
    for tuned, base, mask, case in cases:
        got = _as_tensor(call_learner(kl_by_position, tuned.clone(), base.clone(), mask.clone(), case=case), case)
        expected = reference_kl_by_position(tuned, base, mask)

        def variants(tuned=tuned, base=base, mask=mask):
            lt, lb = tuned.double().log_softmax(-1), base.double().log_softmax(-1)
            return {"KL(base || tuned): the KL the wrong way round (weight by the tuned model's distribution, the one "
                    "that produced the response)": ((lb.exp() * (lb - lt)).sum(-1) * mask).float(),
                    "padding counted: set the KL to 0 where mask is False":
                        reference_kl_by_position(tuned, base, torch.ones_like(mask)),
                    "KL on raw logits: apply log_softmax first":
                        ((tuned.softmax(-1) * (tuned - base)).sum(-1) * mask).float(),
                    "the cross-entropy H(tuned, base), without subtracting the tuned entropy":
                        (-(lt.exp() * lb).sum(-1) * mask).float(),
                    "the log-ratio summed without weighting by the tuned probabilities":
                        ((lt - lb).sum(-1) * mask).float()}

        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, rtol=1e-3,
                                   dims=("response", "position"))
    passed("test_kl_by_position", len(cases))


# ---------------------------------------------------------------- the share of the KL in the first tokens

def reference_first_share(kl: torch.Tensor, first: int = 3) -> float:
    return float(kl[:, :first].double().sum() / kl.double().sum())


def test_first_share(first_share: Callable) -> None:
    """``first_share(kl [batch, pos], first=3) -> float``: the share of all the KL (summed over every response and
    position) that sits in response positions ``0 .. first - 1``; ``kl`` is 0 beyond each response's end."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, pos, first in ((6, 12, 3), (4, 9, 3), (10, 15, 2), (5, 20, 5)):
        kl = torch.rand(batch, pos, generator=generator) ** 3
        kl[:, :2] *= 4  # a front-loaded profile, as after tuning
        kl[torch.randint(batch, (1,), generator=generator), :] *= 5  # one response carries much more KL than others
        kl = kl * _random_mask(batch, pos, generator, min_len=first + 1)
        cases.append((kl, first, f"a random KL profile {batch} x {pos}, first {first} (seed {seed})"))
    for kl, first, case in cases:
        got = _as_float(call_learner(first_share, kl.clone(), first, case=case), case, "one share")
        expected = reference_first_share(kl, first)
        lengths = (kl > 0).sum(-1).clamp(min=1)
        variants = {"the mean of each response's share: weight responses by their KL (a share of sums)":
                        float((kl[:, :first].sum(-1) / kl.sum(-1)).mean()),
                    f"positions 0..{first} (one too many)": reference_first_share(kl, first + 1),
                    f"positions 0..{first - 2} (one too few)": reference_first_share(kl, first - 1),
                    "the KL in the first positions divided by the KL in the others (a ratio, not a share)":
                        float(kl[:, :first].sum() / kl[:, first:].sum()),
                    "the mean KL per position in the first positions over the mean per position overall":
                        float(kl[:, :first].mean() / (kl.sum() / lengths.sum()))}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-3, variants=variants)
    passed("test_first_share", len(cases))


# ---------------------------------------------------------------- DPO's loss

def reference_dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
                       reference_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    return finetune.dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)[0]


def test_dpo_loss(dpo_loss: Callable) -> None:
    """``dpo_loss(policy_chosen [batch], policy_rejected [batch], reference_chosen [batch], reference_rejected
    [batch], beta=0.1) -> scalar``: ``-log sigmoid(beta * margin)`` averaged over the batch, with margin = (policy
    chosen - reference chosen) - (policy rejected - reference rejected), each a summed log-probability of a
    response."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, beta in ((8, 0.1), (5, 0.5), (16, 2.0)):
        ref_c = -20 - 10 * torch.rand(batch, generator=generator, dtype=torch.float64)
        ref_r = -20 - 10 * torch.rand(batch, generator=generator, dtype=torch.float64)
        pol_c = ref_c + 3 * torch.randn(batch, generator=generator, dtype=torch.float64) + 1
        pol_r = ref_r + 3 * torch.randn(batch, generator=generator, dtype=torch.float64) - 1
        cases.append((pol_c, pol_r, ref_c, ref_r, beta, f"{batch} random pairs, beta {beta} (seed {seed})"))
    n_cases = 0
    for pol_c, pol_r, ref_c, ref_r, beta, case in cases:
        got = call_learner(dpo_loss, pol_c.clone(), pol_r.clone(), ref_c.clone(), ref_r.clone(), beta, case=case)
        if isinstance(got, tuple):
            raise CheckFailed(f"{case}: return the loss alone (a scalar tensor), got a tuple of {len(got)}")
        got = _as_float(got, case, "the loss, one number averaged over the batch")
        expected = float(reference_dpo_loss(pol_c, pol_r, ref_c, ref_r, beta))
        logsig = torch.nn.functional.logsigmoid
        margin = (pol_c - ref_c) - (pol_r - ref_r)
        variants = {"the margin the wrong way round (rejected minus chosen): the loss would push the chosen "
                    "response down": float(-logsig(-beta * margin).mean()),
                    "the reference model left out: DPO measures how much the policy moved from the reference":
                        float(-logsig(beta * (pol_c - pol_r)).mean()),
                    "beta outside the log-sigmoid, -beta * log sigmoid(margin): beta scales the margin inside":
                        float(-beta * logsig(margin).mean()),
                    "the loss without its minus sign (log sigmoid is negative; the loss is -log sigmoid)":
                        float(logsig(beta * margin).mean()),
                    "a sum over pairs where the mean belongs": float(-logsig(beta * margin).sum()),
                    "sigmoid where log-sigmoid belongs": float(-torch.sigmoid(beta * margin).mean()),
                    "the reference added where it is subtracted ((policy + reference) chosen - ... rejected)":
                        float(-logsig(beta * ((pol_c + ref_c) - (pol_r + ref_r))).mean())}
        compare_outputs(got, expected, case, atol=1e-5, rtol=1e-4, variants=variants)
        n_cases += 1
    # at the reference the margin is 0, whatever the log-probabilities: the loss is log 2
    pol_c, pol_r = cases[0][0], cases[0][1]
    case = f"the policy equal to the reference (seed {seed})"
    got = _as_float(call_learner(dpo_loss, pol_c.clone(), pol_r.clone(), pol_c.clone(), pol_r.clone(), 0.1, case=case),
                    case)
    compare_outputs(got, math.log(2), case + ": the margin is 0, so the loss is log 2", atol=1e-5, rtol=1e-4)
    passed("test_dpo_loss", n_cases + 1)


# ---------------------------------------------------------------- RLOO's leave-one-out advantage

def reference_rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    return finetune.rloo_advantages(rewards)


def test_rloo_advantages(rloo_advantages: Callable) -> None:
    """``rloo_advantages(rewards [prompt, k]) -> [prompt, k]``: each sample's reward minus the mean reward of the
    *other* k - 1 samples of the same prompt."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for prompts, k in ((5, 4), (3, 2), (6, 8)):
        rewards = torch.randint(0, 5, (prompts, k), generator=generator).double() / 4  # judge scores: 0, 0.25 .. 1
        rewards -= 0.1 * torch.rand(prompts, k, generator=generator, dtype=torch.float64)  # minus a KL penalty
        rewards += torch.arange(prompts, dtype=torch.float64)[:, None] * 0.3  # prompts differ in difficulty
        cases.append((rewards, f"random rewards for {prompts} prompts x {k} samples (seed {seed})"))
    for rewards, case in cases:
        got = _as_tensor(call_learner(rloo_advantages, rewards.clone(), case=case), case)
        expected = reference_rloo_advantages(rewards)
        k = rewards.shape[1]
        mean = rewards.mean(1, keepdim=True)
        variants = {"the baseline is the mean over all k samples, the sample itself included (leave it out)":
                        rewards - mean,
                    "no baseline: the raw rewards": rewards,
                    "the others' sum divided by k where k - 1 belongs": rewards - (rewards.sum(1, keepdim=True)
                                                                                   - rewards) / k,
                    "one baseline for the whole batch: the baseline is per prompt": rewards - rewards.mean(),
                    "standardised (GRPO's (r - mean) / std): RLOO only subtracts the others' mean":
                        (rewards - mean) / rewards.std(1, keepdim=True).clamp(min=1e-8),
                    "the others' mean minus the reward (the sign flipped)": -expected}
        compare_outputs(got.double(), expected, case, atol=1e-6, rtol=1e-5, variants=variants,
                        dims=("prompt", "sample"))
    passed("test_rloo_advantages", len(cases))


# ---------------------------------------------------------------- the reward with a KL penalty

def reference_kl_penalised_reward(score: torch.Tensor, policy_logp: torch.Tensor, reference_logp: torch.Tensor,
                                  mask: torch.Tensor, beta: float) -> torch.Tensor:
    return score - beta * ((policy_logp - reference_logp) * mask).sum(-1)


def test_kl_penalised_reward(kl_penalised_reward: Callable) -> None:
    """``kl_penalised_reward(score [batch], policy_logp [batch, seq], reference_logp [batch, seq], mask [batch, seq],
    beta) -> [batch]``: the judge's score minus ``beta`` times the sampled KL of each response, the sum over its
    tokens (where ``mask`` is True) of log pi(token) - log pi_ref(token)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, beta in ((6, 10, 0.1), (4, 7, 0.03), (8, 12, 0.5)):
        score = torch.randint(0, 5, (batch,), generator=generator).double() / 4
        reference_logp = -3 * torch.rand(batch, seq, generator=generator, dtype=torch.float64)
        policy_logp = reference_logp + torch.randn(batch, seq, generator=generator, dtype=torch.float64) + 0.3
        mask = _random_mask(batch, seq, generator)
        # padding holds garbage, as a forward pass over padded rows gives: only the mask says where responses end
        cases.append((score, policy_logp, reference_logp, mask, beta,
                      f"{batch} random responses of lengths {mask.sum(-1).tolist()}, beta {beta} (seed {seed})"))
    for score, pol, ref, mask, beta, case in cases:
        got = _as_tensor(call_learner(kl_penalised_reward, score.clone(), pol.clone(), ref.clone(), mask.clone(), beta,
                                      case=case), case)
        expected = reference_kl_penalised_reward(score, pol, ref, mask, beta)
        kl = ((pol - ref) * mask).sum(-1)
        variants = {"the KL penalty added, not subtracted (or the log-ratio the wrong way round)": score + beta * kl,
                    "padding counted: sum the log-ratio only where mask is True":
                        score - beta * (pol - ref).sum(-1),
                    "the mean log-ratio per token where the sum over the response belongs":
                        score - beta * kl / mask.sum(-1),
                    "beta left out": score - kl,
                    "the KL of the whole batch (its mean) subtracted from every response": score - beta * kl.mean()}
        compare_outputs(got.double(), expected, case, atol=1e-5, rtol=1e-4, variants=variants, dims=("response",))
    passed("test_kl_penalised_reward", len(cases))


# ---------------------------------------------------------------- weight diffing: how much, how many directions

def reference_relative_change(tuned_weight: torch.Tensor, base_weight: torch.Tensor) -> float:
    return float((tuned_weight.double() - base_weight.double()).norm() / base_weight.double().norm())


def _weight_pairs(generator: torch.Generator, low_rank: bool = False):
    pairs = []
    for shape, scale in (((16, 24), 0.1), ((32, 8), 0.5), ((20, 20), 0.02)):
        base = torch.randn(*shape, generator=generator) * 0.3 + 0.2
        if low_rank:
            rank = 2
            delta = torch.randn(shape[0], rank, generator=generator) @ (
                torch.randn(rank, shape[1], generator=generator) * torch.tensor([[3.0], [1.0]]))
            delta = delta + 0.05 * torch.randn(*shape, generator=generator)
        else:
            delta = torch.randn(*shape, generator=generator)
        pairs.append((base + scale * delta / delta.norm() * base.norm(), base, shape))
    return pairs


def test_relative_change(relative_change: Callable) -> None:
    """``relative_change(tuned_weight [...], base_weight [...]) -> float``: ``||W_tuned - W_base|| / ||W_base||``
    (Frobenius norms): how far tuning moved a weight, in units of the weight's own size."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = _weight_pairs(generator)
    for tuned, base, shape in cases:
        case = f"a random weight of shape {shape} (seed {seed})"
        got = _as_float(call_learner(relative_change, tuned.clone(), base.clone(), case=case), case)
        expected = reference_relative_change(tuned, base)
        t, b = tuned.double(), base.double()
        variants = {"divided by ||W_tuned||: the change is measured in units of the base weight":
                        float((t - b).norm() / t.norm()),
                    "the absolute norm ||W_tuned - W_base||, not relative to ||W_base||": float((t - b).norm()),
                    "the difference of the norms (||W_tuned|| - ||W_base||) / ||W_base||: two different matrices can "
                    "have one norm": float((t.norm() - b.norm()) / b.norm()),
                    "the squared ratio (a norm of the squared entries)": float((t - b).pow(2).sum() / b.pow(2).sum()),
                    "the mean absolute change over the mean absolute weight": float((t - b).abs().mean() / b.abs().mean())}
        compare_outputs(got, expected, case, atol=1e-5, rtol=1e-4, variants=variants)
    passed("test_relative_change", len(cases))


def reference_effective_rank(delta: torch.Tensor) -> float:
    singular = torch.linalg.svdvals(delta.double())
    p = singular / singular.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def test_effective_rank(effective_rank: Callable) -> None:
    """``effective_rank(delta [m, n]) -> float``: Roy and Vetterli's effective rank, ``exp(H(p))`` with ``p`` the
    singular values divided by their sum and ``H`` the entropy in nats: 1 for a rank-one change, ``min(m, n)`` when
    every singular value is equal."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(tuned - base, shape) for tuned, base, shape in _weight_pairs(generator, low_rank=True)]
    cases += [(tuned - base, shape) for tuned, base, shape in _weight_pairs(generator)[:1]]
    for delta, shape in cases:
        case = f"a random weight change of shape {shape} (seed {seed})"
        got = _as_float(call_learner(effective_rank, delta.clone(), case=case), case)
        expected = reference_effective_rank(delta)
        s = torch.linalg.svdvals(delta.double())
        energy = s.pow(2) / s.pow(2).sum()
        p = s / s.sum()
        variants = {"p from the squared singular values (the energy): the definition normalises the singular values "
                    "themselves": float(torch.exp(-(energy * energy.log()).sum())),
                    "the entropy in bits (2 ** H): use the natural logarithm": float(2 ** (-(p * p.log2()).sum())),
                    "the entropy H itself, not exp(H)": float(-(p * p.log()).sum()),
                    "the matrix rank (a count of nonzero singular values): noise makes every one nonzero":
                        float(torch.linalg.matrix_rank(delta.double())),
                    "the stable rank ||dW||_F^2 / ||dW||_2^2": float(s.pow(2).sum() / s[0] ** 2)}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-4, variants=variants)
    passed("test_effective_rank", len(cases))


def reference_top_direction_cosine(delta: torch.Tensor, direction: torch.Tensor) -> float:
    _, _, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    unit = direction.double() / direction.double().norm()
    return float((vh[0] @ unit).abs())


def test_top_direction_cosine(top_direction_cosine: Callable) -> None:
    """``top_direction_cosine(delta [d_in, d_out], direction [d_out]) -> float``: the absolute cosine between
    ``direction`` and ΔW's top *output* direction, the first right singular vector (TransformerLens weights map
    ``x @ W``, so a row of W is what one input writes; the output space is W's second axis). The sign of a singular
    vector is arbitrary, hence the absolute value: 1 when they line up, about 1/sqrt(d_out) for a random one."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for d_in, d_out, planted in ((24, 24, 0.9), (40, 16, 0.6), (12, 30, 0.0)):
        direction = torch.randn(d_out, generator=generator) * 3
        out_top = torch.randn(d_out, generator=generator)
        unit = direction / direction.norm()
        out_top = planted * unit + (1 - planted) * out_top / out_top.norm()
        if planted < 0.7:
            out_top = -out_top  # an anti-aligned top direction: the SVD sign is arbitrary
        delta = 4 * torch.randn(d_in, generator=generator)[:, None] * out_top[None] \
            + 0.3 * torch.randn(d_in, d_out, generator=generator)
        cases.append((delta, direction, f"a random change {d_in} x {d_out} (seed {seed})"))
        if planted > 0:  # the direction negated: one of the two signed cosines is negative, whatever the SVD's sign
            cases.append((delta, -direction, f"a random change {d_in} x {d_out}, the direction negated (seed {seed})"))
    for delta, direction, case in cases:
        got = _as_float(call_learner(top_direction_cosine, delta.clone(), direction.clone(), case=case), case)
        expected = reference_top_direction_cosine(delta, direction)
        u, _, vh = torch.linalg.svd(delta.double(), full_matrices=False)
        unit = direction.double() / direction.double().norm()
        variants = {"the signed cosine: a singular vector's sign is arbitrary, take the absolute value":
                        float(vh[0] @ unit),
                    "the dot product with the raw direction: normalise it to unit length": float((vh[0] @ direction.double()).abs()),
                    "the last singular vector (the smallest singular value): torch sorts them in descending order":
                        float((vh[-1] @ unit).abs())}
        if delta.shape[0] == delta.shape[1]:
            variants["the first left singular vector (U[:, 0], the input side): the output direction is Vh[0]"] = \
                float((u[:, 0] @ unit).abs())
            variants["Vh[:, 0], a column of Vh: its rows are the right singular vectors"] = float((vh[:, 0] @ unit).abs())
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-3, variants=variants)
    passed("test_top_direction_cosine", len(cases))


# ---------------------------------------------------------------- cross-model patching

def reference_patch_hook(source: torch.Tensor, positions: torch.Tensor) -> Callable:
    def hook(act, hook):
        act = act.clone()
        rows = torch.arange(act.shape[0], device=act.device)
        act[rows, positions.to(act.device)] = source.to(act.device, act.dtype)[rows, positions.to(act.device)]
        return act
    return hook


def test_patch_hook(patch_hook: Callable) -> None:
    """``patch_hook(source [batch, seq, d_model], positions [batch]) -> hook``: a hook that replaces the activation of
    row ``b`` at position ``positions[b]`` (only there) with ``source[b, positions[b]]``, the other model's
    activation at the same hook point on the same tokens; every other position is left as it is."""
    base, tuned, model_seed = _base_and_tuned()
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    batch, seq = 5, 9
    tokens = torch.randint(base.cfg.d_vocab, (batch, seq), generator=generator)
    positions = torch.randint(1, seq - 1, (batch,), generator=generator)
    positions[0], positions[1] = 1, seq - 2  # rows that differ, so one shared position is visibly wrong
    n_cases = 0
    for source_model, target_model, direction in ((base, tuned, "base into tuned"), (tuned, base, "tuned into base")):
        for hook_name in ("blocks.1.hook_resid_pre", f"blocks.{base.cfg.n_layers - 1}.hook_mlp_out"):
            with torch.no_grad():
                _, cache = source_model.run_with_cache(tokens, names_filter=lambda name, h=hook_name: name == h)
            source = cache[hook_name].detach().clone()
            case = (f"{_where(base, model_seed)}: {direction} at {hook_name}, {batch} random prompts of {seq} tokens, "
                    f"positions {positions.tolist()} (seed {seed})")
            hook = call_learner(patch_hook, source.clone(), positions.clone(), case=case)
            if not callable(hook):
                raise CheckFailed(f"{case}: return a hook function hook(act, hook) -> act, got {type(hook).__name__}")
            with torch.no_grad():
                got = call_learner(target_model.run_with_hooks, tokens, fwd_hooks=[(hook_name, hook)], case=case)
                expected = target_model.run_with_hooks(tokens,
                                                       fwd_hooks=[(hook_name, reference_patch_hook(source, positions))])

            def variants(source=source, hook_name=hook_name, target_model=target_model):
                def run(p):
                    return target_model.run_with_hooks(tokens, fwd_hooks=[(hook_name, reference_patch_hook(source, p))])

                def every_position(act, hook):
                    return source.to(act.dtype)

                def added(act, hook):
                    rows = torch.arange(batch)
                    act = act.clone()
                    act[rows, positions] += source[rows, positions]
                    return act

                return {"every position patched, not only positions[b]": target_model.run_with_hooks(
                            tokens, fwd_hooks=[(hook_name, every_position)]),
                        "patched one position later (off by one)": run(positions + 1),
                        "patched one position earlier (off by one)": run(positions - 1),
                        "the first row's position used for every row": run(positions[:1].expand(batch)),
                        "the source added to the activation, not written over it": target_model.run_with_hooks(
                            tokens, fwd_hooks=[(hook_name, added)]),
                        "the model unchanged: does the hook return the patched activation?": target_model(tokens)}

            compare_with_lazy_variants(got, expected, case, variants, atol=1e-3, rtol=1e-3,
                                       dims=("prompt", "position", "vocab"))
            n_cases += 1
    passed("test_patch_hook", n_cases)
