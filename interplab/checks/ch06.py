"""Checkers for chapter 06 (what alignment tuning changes).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time: random rewards,
log-probabilities, logits, KL profiles with token-type labels, weight changes with planted singular directions,
activations and refusal curves. None needs a shipped model, so an answer replayed from an earlier run, or one that
hard-codes the shipped models' sizes, fails. When an answer matches a common mistake (the KL penalty added or
counted over padding, a baseline that includes the sample itself, ties counted against the token, the KL the wrong
way round or on raw logits, shares averaged per response, the squared singular values, the left singular vectors,
every position patched, a mean of per-prompt ratios, the index where the step belongs, DPO's margin the wrong way
round, an NLL that is not length-normalised) the message says which. ``check_metric_reading`` and
``check_verdict`` compare the learner's stated findings with the shipped models' cards.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from interplab import diffing, finetune
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    diagnose_mismatch, fresh_seed, passed)


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


def _expect_value_error(function: Callable, args: Sequence, case: str, why: str) -> None:
    """The learner's function must refuse bad input with a ValueError (not a silent number, not another error)."""
    try:
        function(*args)
    except NotImplementedError:
        raise
    except ValueError:
        return
    except Exception as error:
        raise CheckFailed(f"{case}: raise ValueError ({why}), got {type(error).__name__}: {error}") from error
    raise CheckFailed(f"{case}: {why}: raise ValueError instead of returning a value")


def _random_mask(batch: int, seq: int, generator: torch.Generator, min_len: int = 2) -> torch.Tensor:
    """Right-padded rows of random length (at least ``min_len``), one row full and one short."""
    lengths = torch.randint(min_len, seq + 1, (batch,), generator=generator)
    lengths[0], lengths[-1] = seq, min_len
    return torch.arange(seq)[None] < lengths[:, None]


# ---------------------------------------------------------------- 1. the reward with a KL penalty

def reference_kl_penalised_reward(score: torch.Tensor, policy_logp: torch.Tensor, reference_logp: torch.Tensor,
                                  mask: torch.Tensor, beta: float) -> torch.Tensor:
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (a KL penalty, not a bonus), got {beta}")
    log_ratio = torch.where(mask.bool(), policy_logp - reference_logp, torch.zeros_like(policy_logp))
    return score - beta * log_ratio.sum(-1)


def test_kl_penalised_reward(kl_penalised_reward: Callable) -> None:
    """``kl_penalised_reward(score [n], policy_logp [n, pos], reference_logp [n, pos], mask [n, pos], beta) -> [n]``:
    the judge's score minus ``beta`` times the sampled KL of each response, the sum over its response tokens (where
    ``mask`` is True) of ``policy_logp - reference_logp``; positions outside the mask hold garbage. ``beta < 0``
    raises ValueError."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, pos, beta in ((6, 10, 0.1), (4, 7, 0.03), (8, 12, 0.5), (5, 6, 0.0)):
        score = torch.randint(0, 5, (n,), generator=generator).float() / 4
        reference_logp = -3 * torch.rand(n, pos, generator=generator)
        policy_logp = reference_logp + torch.randn(n, pos, generator=generator) + 0.3
        mask = _random_mask(n, pos, generator)
        # padding holds large garbage, as a forward pass over padded rows gives: only the mask says where a response ends
        policy_logp[~mask] = 40 * torch.randn(int((~mask).sum()), generator=generator)
        reference_logp[~mask] = -40 * torch.rand(int((~mask).sum()), generator=generator)
        cases.append((score, policy_logp, reference_logp, mask, beta,
                      f"{n} random responses of lengths {mask.sum(-1).tolist()}, beta {beta} (seed {seed})"))
    for score, pol, ref, mask, beta, case in cases:
        got = _as_tensor(call_learner(kl_penalised_reward, score.clone(), pol.clone(), ref.clone(), mask.clone(), beta,
                                      case=case), case)
        expected = reference_kl_penalised_reward(score, pol, ref, mask, beta)
        kl = torch.where(mask, pol - ref, torch.zeros_like(pol)).sum(-1)
        variants = {"the KL penalty added, not subtracted (or the log-ratio the wrong way round, reference minus "
                    "policy)": score + beta * kl,
                    "the mask ignored: padding counted (sum the log-ratio only where mask is True)":
                        score - beta * (pol - ref).sum(-1),
                    "the mean log-ratio per token where the sum over the response belongs":
                        score - beta * kl / mask.sum(-1),
                    "beta forgotten": score - kl,
                    "the batch's mean KL subtracted from every response, not each response's own":
                        score - beta * kl.mean()}
        compare_outputs(got.float(), expected, case, atol=1e-4, rtol=1e-4, variants=variants, dims=("response",))
    score, pol, ref, mask, _, _ = cases[0]
    _expect_value_error(kl_penalised_reward, (score, pol, ref, mask, -0.1), "beta = -0.1",
                        "a negative KL coefficient would reward moving away from the reference")
    passed("test_kl_penalised_reward", len(cases) + 1)


# ---------------------------------------------------------------- 2. RLOO's leave-one-out advantage

def reference_rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    return finetune.rloo_advantages(rewards)


def test_rloo_advantages(rloo_advantages: Callable) -> None:
    """``rloo_advantages(rewards [prompt, k]) -> [prompt, k]``: each sample's reward minus the mean reward of the
    *other* k - 1 samples of the same prompt; k < 2 raises ValueError."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for prompts, k in ((5, 4), (3, 2), (6, 8), (4, 3)):
        rewards = torch.randint(0, 5, (prompts, k), generator=generator).float() / 4  # judge scores 0, 0.25 .. 1
        rewards -= 0.1 * torch.rand(prompts, k, generator=generator)  # minus a KL penalty
        rewards += torch.arange(prompts).float()[:, None] * 0.3  # prompts differ in difficulty
        cases.append((rewards, f"random rewards for {prompts} prompts x {k} samples (seed {seed})"))
    for rewards, case in cases:
        got = _as_tensor(call_learner(rloo_advantages, rewards.clone(), case=case), case)
        expected = reference_rloo_advantages(rewards)
        prompts, k = rewards.shape
        mean = rewards.mean(1, keepdim=True)
        variants = {f"the baseline is the mean of all k samples, the sample itself included: that gives (k-1)/k = "
                    f"{(k - 1) / k:.3g} times the right answer (leave the sample out)": rewards - mean,
                    "no baseline: the raw rewards": rewards,
                    "standardised, (r - mean) / std as GRPO does: RLOO only subtracts the others' mean":
                        (rewards - mean) / rewards.std(1, keepdim=True).clamp(min=1e-8),
                    "one baseline for the whole batch: each prompt has its own": rewards - rewards.mean(),
                    "the others' sum divided by k where k - 1 belongs": rewards - (rewards.sum(1, keepdim=True)
                                                                                   - rewards) / k,
                    "the others' mean minus the reward (the sign flipped)": -expected}
        if prompts > 1:
            variants["the baseline taken over prompts (axis 0) instead of over a prompt's k samples (axis 1)"] = \
                rewards - (rewards.sum(0, keepdim=True) - rewards) / (prompts - 1)
        compare_outputs(got.float(), expected, case, atol=1e-5, rtol=1e-4, variants=variants,
                        dims=("prompt", "sample"))
    _expect_value_error(rloo_advantages, (torch.rand(3, 1, generator=generator),), "rewards of shape (3, 1)",
                        "with one sample per prompt there are no others to form a baseline")
    passed("test_rloo_advantages", len(cases) + 1)


# ---------------------------------------------------------------- 3. URIAL: a token's rank under the base

def reference_token_ranks(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    chosen = logits.gather(-1, tokens[:, None].long())
    return (logits > chosen).sum(-1) + 1


def test_token_ranks(token_ranks: Callable) -> None:
    """``token_ranks(logits [n, vocab], tokens [n]) -> [n]`` (integer values): the rank of ``tokens[i]`` under the
    base's logits ``logits[i]``, 1 = the base's top token; a tie counts in the token's favour (rank = 1 + the number
    of tokens with a strictly higher logit)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, vocab, scale in ((12, 20, 2.0), (20, 57, 4.0), (9, 11, 1.0)):
        tokens = torch.randint(vocab, (n,), generator=generator)
        logits = torch.randn(n, vocab, generator=generator) * scale
        # the token is often the base's top pick, as for a fluent base
        boost = (torch.rand(n, generator=generator) < 0.4).float() * 3 * scale
        logits.scatter_add_(-1, tokens[:, None], boost[:, None])
        logits = logits.round()  # integer logits: ties occur
        logits[0, :] = logits[0, tokens[0]]  # a row where every token ties with the chosen one
        rival = (tokens[1] + 1) % vocab
        logits[1, rival] = logits[1, tokens[1]]  # a tie between the token and a rival, whoever was on top
        cases.append((logits, tokens, f"random integer logits {n} x {vocab}, with ties (seed {seed})"))
    for logits, tokens, case in cases:
        got = _as_tensor(call_learner(token_ranks, logits.clone(), tokens.clone(), case=case), case)
        expected = reference_token_ranks(logits, tokens)

        def double_argsort(stable: bool) -> torch.Tensor:
            order = logits.argsort(dim=-1, descending=True, stable=stable).argsort(dim=-1, stable=stable)
            return order.gather(-1, tokens[:, None])[:, 0] + 1

        chosen = logits.gather(-1, tokens[:, None])
        variants = {"ranks counted from 0: the base's top token has rank 1": expected - 1,
                    "ties counted against the token (>= where > belongs)": (logits >= chosen).sum(-1),
                    "ranks counted from the bottom (an ascending sort): rank 1 is the base's most likely token":
                        (logits < chosen).sum(-1) + 1,
                    "the token id found at each rank (argsort) where the rank of each token belongs":
                        logits.argsort(-1, descending=True).gather(-1, tokens[:, None])[:, 0],
                    "ranks from a double argsort: ties broken by token order, not in the token's favour":
                        double_argsort(True),
                    "ranks from a double argsort (ties broken by the sort, not in the token's favour)":
                        double_argsort(False)}
        compare_outputs(got.double(), expected.double(), case, atol=1e-6, rtol=0, variants=variants,
                        dims=("position",))
    passed("test_token_ranks", len(cases))


# ---------------------------------------------------------------- 4. KL(tuned || base) at every position

def reference_position_kl(tuned_logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    tuned = tuned_logits.double().log_softmax(-1)
    base = base_logits.double().log_softmax(-1)
    return (tuned.exp() * (tuned - base)).sum(-1).float()


def test_position_kl(position_kl: Callable) -> None:
    """``position_kl(tuned_logits [batch, pos, vocab], base_logits [batch, pos, vocab]) -> [batch, pos]``: the exact
    KL(tuned || base) of the two next-token distributions at every position, in nats, over the whole vocabulary."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, pos, vocab, shift in ((3, 7, 15, 1.0), (4, 10, 40, 0.5), (2, 5, 9, 2.5)):
        base = torch.randn(batch, pos, vocab, generator=generator) * 3
        tuned = base + shift * torch.randn(batch, pos, vocab, generator=generator) + 1.5  # a constant offset too
        cases.append((tuned, base, f"random logits {batch} x {pos} x {vocab}, the tuned ones moved by noise of scale "
                                   f"{shift} and a constant (seed {seed})"))
    for tuned, base, case in cases:
        got = _as_tensor(call_learner(position_kl, tuned.clone(), base.clone(), case=case), case)
        expected = reference_position_kl(tuned, base)

        def variants(tuned=tuned, base=base):
            lt, lb = tuned.double().log_softmax(-1), base.double().log_softmax(-1)
            return {"KL(base || tuned): the KL the wrong way round (weight by the tuned model's distribution, the one "
                    "that produced the response)": (lb.exp() * (lb - lt)).sum(-1).float(),
                    "KL on raw logits: apply log_softmax first": (tuned.softmax(-1) * (tuned - base)).sum(-1),
                    "the softmax taken over positions (dim 1), not over the vocabulary":
                        (tuned.softmax(1) * (tuned.log_softmax(1) - base.log_softmax(1))).sum(-1),
                    "the KL in bits (log2): use natural logarithms, nats": expected / math.log(2),
                    "the cross-entropy H(tuned, base), without subtracting the tuned entropy":
                        (-(lt.exp() * lb).sum(-1)).float()}

        compare_outputs(got.float(), expected, case, atol=1e-4, rtol=1e-3, variants=variants,
                        dims=("response", "position"))
    passed("test_position_kl", len(cases))


# ---------------------------------------------------------------- 5. where the KL sits: shares by position and type

def reference_kl_shares(kl: torch.Tensor, labels: Sequence[Sequence[str]], first: int = 3) -> dict[str, float]:
    lengths = torch.tensor([len(row) for row in labels])
    valid = torch.arange(kl.shape[1])[None] < lengths[:, None]
    values = torch.where(valid, kl.double(), torch.zeros((), dtype=torch.float64))
    total = float(values.sum())
    if total == 0:
        return {f"first_{first}_share": float("nan"), **{f"share_{label}": float("nan") for label in diffing.LABELS}}
    out = {f"first_{first}_share": float(values[:, :first].sum()) / total}
    for label in diffing.LABELS:
        part = sum(float(values[i, j]) for i, row in enumerate(labels) for j, lab in enumerate(row) if lab == label)
        out[f"share_{label}"] = part / total
    return out


def _random_labels(generator: torch.Generator, width: int) -> list[str]:
    """A response's token types in the order the judge's parse gives them: opener, content, stop, tails, end."""
    roll = float(torch.rand(1, generator=generator))
    if roll < 0.1:
        return ["malformed"] * int(torch.randint(2, width + 1, (1,), generator=generator))
    opener = ["opener"] * (2 if roll < 0.7 else 0)
    content = ["content"] * int(torch.randint(1, max(2, width - 8), (1,), generator=generator))
    row = opener + content + ["stop"]
    if float(torch.rand(1, generator=generator)) < 0.5:
        row += ["tail"] * int(torch.randint(2, 5, (1,), generator=generator)) + ["end"]
    return row[:width]


def _compare_dicts(got: Any, expected: dict[str, float], case: str, variants: dict[str, dict[str, float]]) -> None:
    if not isinstance(got, dict):
        raise CheckFailed(f"{case}: return a dict with keys {list(expected)}, got {type(got).__name__}")
    missing = [key for key in expected if key not in got]
    if missing:
        raise CheckFailed(f"{case}: your dict lacks {missing} (every label of diffing.LABELS gets a share, 0.0 when "
                          "it never occurs)")
    values = {key: _as_float(got[key], f"{case}, {key!r}") for key in expected}
    wrong = [key for key in expected
             if not (math.isnan(expected[key]) and math.isnan(values[key]))
             and not math.isclose(values[key], expected[key], abs_tol=1e-4, rel_tol=1e-4)]
    if not wrong:
        return
    keys = list(expected)
    as_tensor = lambda d: torch.tensor([float(d[k]) for k in keys], dtype=torch.float64)  # noqa: E731
    hint = diagnose_mismatch(as_tensor(values), as_tensor(expected), {text: as_tensor(v) for text, v in variants.items()},
                             atol=1e-4, rtol=1e-4)
    lines = [f"{case}: {len(wrong)} of {len(keys)} values differ"]
    lines += [f"  {key}: expected {expected[key]:.4g}, got {values[key]:.4g}" for key in wrong]
    if hint:
        lines.append(f"  your answer matches {hint}")
    raise CheckFailed("\n".join(lines))


def test_kl_shares(kl_shares: Callable) -> None:
    """``kl_shares(kl [batch, pos], labels, first=3) -> dict``: ``labels[i][j]`` is the token type
    (``diffing.LABELS``) of response position j of row i, and row i has ``len(labels[i])`` real positions (the rest
    is padding, to ignore). Returns ``f"first_{first}_share"``, the share of the total KL (over real positions of
    every row) in positions 0..first-1, and ``f"share_{label}"`` for every label (0.0 when it never occurs); every
    value NaN when the total KL is 0."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, width, first in ((6, 14, 3), (4, 9, 3), (10, 16, 2), (5, 20, 5)):
        labels = [_random_labels(generator, width) for _ in range(batch)]
        labels[-1] = ["content", "stop"]  # a row shorter than `first` positions
        kl = torch.rand(batch, width, generator=generator) ** 3
        kl[:, :2] *= 4  # front-loaded, as after tuning
        kl[int(torch.randint(batch, (1,), generator=generator))] *= 6  # one response carries much more KL
        for i, row in enumerate(labels):  # padding holds nonzero garbage
            kl[i, len(row):] = 2 + torch.rand(width - len(row), generator=generator)
        cases.append((kl, labels, first, f"a random KL profile {batch} x {width} with rows of "
                                         f"{[len(r) for r in labels]} real positions, first {first} (seed {seed})"))
    labels = [["opener", "opener", "content", "stop"], ["content", "stop"]]
    kl = torch.tensor([[0.0, 0, 0, 0, 1.5, 2.0], [0, 0, 0.7, 0.2, 0.1, 3.0]])
    cases.append((kl, labels, 3, "a profile whose KL is 0 on every real position (nonzero only on padding)"))
    for kl, labels, first, case in cases:
        got = call_learner(kl_shares, kl.clone(), [list(row) for row in labels], first, case=case)
        expected = reference_kl_shares(kl, labels, first)
        lengths = torch.tensor([len(row) for row in labels])
        valid = torch.arange(kl.shape[1])[None] < lengths[:, None]
        values = torch.where(valid, kl, torch.zeros(()))
        label_sums = {lab: sum(float(values[i, j]) for i, row in enumerate(labels) for j, l in enumerate(row)
                               if l == lab) for lab in diffing.LABELS}
        everything = float(kl.double().sum())
        variants = {"padding counted in the total: positions beyond len(labels[i]) are not part of the response": {
            f"first_{first}_share": float(kl[:, :first].double().sum()) / everything,
            **{f"share_{lab}": part / everything for lab, part in label_sums.items()}}}
        if float(values.sum()) > 0:
            per_position = {f"share_{lab}": part / max(1, sum(row.count(lab) for row in labels))
                            for lab, part in label_sums.items()}
            variants["the mean KL per position of each type where the share of the total KL belongs"] = {
                **expected, **per_position}
            variants["the first positions taken as the opener label, not as positions 0..first-1"] = {
                **expected, f"first_{first}_share": expected["share_opener"]}
            row_totals = values.double().sum(-1)
            keep = row_totals > 0
            per_row = {f"first_{first}_share": float((values[:, :first].double().sum(-1)[keep]
                                                      / row_totals[keep]).mean())}
            for lab in diffing.LABELS:
                parts = torch.tensor([sum(float(values[i, j]) for j, l in enumerate(row) if l == lab)
                                      for i, row in enumerate(labels)], dtype=torch.float64)
                per_row[f"share_{lab}"] = float((parts[keep] / row_totals[keep]).mean())
            variants["each response's shares averaged: the share of the summed KL weights responses by their KL"] = \
                per_row
        _compare_dicts(got, expected, case, variants)
    passed("test_kl_shares", len(cases))


# ---------------------------------------------------------------- 6. what each metric can see

def _card_metrics(name: str) -> dict | None:
    from interplab.zoo import RECIPES, model_card

    if name not in RECIPES:
        return None
    try:
        return model_card(name)["metrics"]
    except (FileNotFoundError, KeyError):
        return None


def _retuned(kind: str) -> dict | None:
    """The card metrics of an early-only or late-only retune, if the zoo ships one (``chat-*-early``/``-late``)."""
    from interplab.zoo import RECIPES

    for name in sorted(RECIPES):
        if name.startswith("chat-") and name.endswith(kind):
            metrics = _card_metrics(name)
            if metrics and "kl" in metrics and "token_shift" in metrics:
                return metrics
    return None


def metric_reading_truth() -> dict[str, Any]:
    """What the measurements say: from the early-only and late-only retunes' cards when the zoo ships them, else the
    values the feasibility study and the shipped models measured (late-only first-3 share 0.03; URIAL's shifted
    stop tokens 0 for every shipped model; early-only 0.88-0.98 against late-only 0.03 with one method)."""
    early, late = _retuned("early"), _retuned("late")
    truth = {"kl_sees_late_tuning": True, "urial_sees_late_tuning": False, "kl_location_set_by": "constitution",
             "source": "the feasibility study's numbers (no early/late retunes shipped)"}
    if late is not None:
        shifted = late["token_shift"].get("shifted_at_stop", 0.0)
        truth["kl_sees_late_tuning"] = late["kl"]["first_3_share"] < 0.5
        truth["urial_sees_late_tuning"] = not math.isnan(shifted) and shifted > 0.5  # most stops flagged
        truth["source"] = "the late-only retune's card"
        if early is not None:
            gap = early["kl"]["first_3_share"] - late["kl"]["first_3_share"]
            truth["kl_location_set_by"] = "constitution" if gap > 0.5 else "method"
            truth["source"] = "the early-only and late-only retunes' cards"
    return truth


def _check_words(text: Any, key: str) -> None:
    if not isinstance(text, str) or len(text.split()) < 8 or "TODO" in text:
        raise CheckFailed(f"write {key!r} in your own words (a sentence of at least 8 words): what the numbers in your "
                          "table show, and what that means for the metric")


def check_metric_reading(my_reading: dict) -> None:
    """``my_reading = {"kl_sees_late_tuning": bool, "urial_sees_late_tuning": bool, "kl_location_set_by":
    "constitution" | "method", "why": str}``: from the section-4 table of full, early-only and late-only tuning."""
    keys = ("kl_sees_late_tuning", "urial_sees_late_tuning", "kl_location_set_by", "why")
    if not isinstance(my_reading, dict):
        raise CheckFailed(f"give your reading as a dict with keys {list(keys)}, got {type(my_reading).__name__}")
    missing = [key for key in keys if key not in my_reading]
    if missing:
        raise CheckFailed(f"your reading lacks {missing}")
    _check_words(my_reading["why"], "why")
    for key in ("kl_sees_late_tuning", "urial_sees_late_tuning"):
        if not isinstance(my_reading[key], bool):
            raise CheckFailed(f"{key!r}: say True or False, got {my_reading[key]!r}")
    if my_reading["kl_location_set_by"] not in ("constitution", "method"):
        raise CheckFailed(f"'kl_location_set_by': say 'constitution' or 'method', got {my_reading['kl_location_set_by']!r}")
    truth = metric_reading_truth()
    problems = []
    if my_reading["kl_sees_late_tuning"] != truth["kl_sees_late_tuning"]:
        problems.append(f"'kl_sees_late_tuning' {my_reading['kl_sees_late_tuning']}: look at the late-only row's "
                        "first-3 share and its share at the stop decision; where does its KL sit?")
    if my_reading["urial_sees_late_tuning"] != truth["urial_sees_late_tuning"]:
        problems.append(f"'urial_sees_late_tuning' {my_reading['urial_sees_late_tuning']}: look at the late-only "
                        "row's shifted share at the stop decision; does any stop token rank above 3 under the base?")
    if my_reading["kl_location_set_by"] != truth["kl_location_set_by"]:
        problems.append(f"'kl_location_set_by' {my_reading['kl_location_set_by']!r}: compare the first-3 shares of "
                        "the early-only and late-only rows (one method, two constitutions) with the spread between "
                        "methods under the full constitution")
    if problems:
        raise CheckFailed(f"your reading differs from the measurements ({truth['source']}):\n  " + "\n  ".join(problems))
    print(f"✔ check_metric_reading passed (against {truth['source']})")


# ---------------------------------------------------------------- 7. the effective rank of a weight change

def reference_effective_rank(delta: torch.Tensor) -> float:
    singular = torch.linalg.svdvals(delta.double())
    if float(singular.sum()) == 0:
        return 0.0
    p = singular / singular.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _exact_spectrum(singular: Sequence[float], m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """An m x n matrix with exactly these singular values (some 0): a scaled, signed permutation of a diagonal."""
    diag = torch.zeros(m, n)
    for i, s in enumerate(singular):
        diag[i, i] = s
    signs = torch.where(torch.rand(m, generator=generator) < 0.5, -1.0, 1.0)
    return (signs[:, None] * diag)[torch.randperm(m, generator=generator)][:, torch.randperm(n, generator=generator)]


def test_effective_rank(effective_rank: Callable) -> None:
    """``effective_rank(delta [m, n]) -> float``: Roy and Vetterli's entropy effective rank, ``exp(H(p))`` with
    ``p_i = s_i / sum(s)`` (``s`` the singular values), ``H`` in nats, terms with ``p_i = 0`` counting 0: 1 for a
    rank-one change, n for an orthogonal n x n matrix, 0 for the zero matrix."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for m, n, rank in ((16, 24, 2), (32, 8, 3), (20, 20, 20)):
        scales = torch.tensor([3.0, 1.0, 0.5]) if rank <= 3 else torch.ones(rank)  # a few unequal directions
        low = (torch.randn(m, rank, generator=generator) * scales[:rank]) @ torch.randn(rank, n, generator=generator)
        cases.append((low + 0.05 * torch.randn(m, n, generator=generator), f"a random {m} x {n} change of rank about "
                                                                           f"{rank} plus noise (seed {seed})"))
    cases.append((_exact_spectrum([4.0, 2.0, 1.0, 0.0, 0.0], 7, 5, generator),
                  f"a 7 x 5 matrix with singular values 4, 2, 1, 0, 0 (seed {seed})"))
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    cases.append((2.5 * q, f"an orthogonal 6 x 6 matrix times 2.5 (seed {seed})"))
    cases.append((torch.randn(9, generator=generator)[:, None] * torch.randn(4, generator=generator)[None],
                  f"a rank-one 9 x 4 matrix (seed {seed})"))
    cases.append((torch.zeros(5, 3), "the zero matrix (nothing changed)"))
    for delta, case in cases:
        got = _as_float(call_learner(effective_rank, delta.clone(), case=case), case)
        expected = reference_effective_rank(delta)
        if math.isnan(got):
            raise CheckFailed(f"{case}: your answer is NaN, expected {expected:.4g}: a zero singular value gives "
                              "p log p = 0 * (-inf); drop the zero terms (their limit is 0)"
                              + (", and return 0.0 for the zero matrix" if expected == 0 else ""))
        s = torch.linalg.svdvals(delta.double())
        variants: dict[str, float] = {}
        if float(s.sum()) > 0:
            energy = s.pow(2) / s.pow(2).sum()
            p = s / s.sum()
            plogp = lambda x: torch.where(x > 0, x * x.clamp(min=1e-300).log(), torch.zeros_like(x))  # noqa: E731
            variants = {"p from the squared singular values (the energy): the definition normalises the singular "
                        "values themselves": float(torch.exp(-plogp(energy).sum())),
                        "the entropy in bits (log2) raised with exp: exp goes with the natural logarithm (2 ** H "
                        "goes with log2)": float(torch.exp(-plogp(p).sum() / math.log(2))),
                        "the entropy H itself, not exp(H)": float(-plogp(p).sum()),
                        "the numerical rank (a count of singular values above a tolerance): a small change in many "
                        "directions counts like a large one": float(torch.linalg.matrix_rank(delta.double())),
                        "the singular values not normalised to sum to 1": float(torch.exp(-plogp(s).sum())),
                        "the stable rank ||dW||_F^2 / ||dW||_2^2": float(s.pow(2).sum() / s[0] ** 2)}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-4, variants=variants)
    passed("test_effective_rank", len(cases))


# ---------------------------------------------------------------- 8. do ΔW's top directions line up with a direction?

def reference_direction_alignment(delta: torch.Tensor, direction: torch.Tensor, k: int = 1) -> float:
    if k < 1 or k > min(delta.shape):
        raise ValueError(f"k must be in 1..{min(delta.shape)} (the number of singular vectors), got {k}")
    if float(direction.norm()) == 0:
        raise ValueError("the direction is zero: it has no cosine with anything")
    _, _, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    unit = direction.double() / direction.double().norm()
    return float((vh[:k] @ unit).abs().max())


def test_direction_alignment(direction_alignment: Callable) -> None:
    """``direction_alignment(delta [m, d], direction [d], k=1) -> float``: the largest absolute cosine between
    ``direction`` (any norm) and the top-k right singular vectors of ``delta`` (rows of Vh, by decreasing singular
    value; the residual-stream side). ``k`` outside 1..min(m, d) or a zero direction raises ValueError."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for m, d, k, slot in ((40, 16, 1, 0), (24, 24, 1, 0), (30, 20, 3, 1), (20, 20, 2, 1), (12, 30, 1, 2)):
        direction = torch.randn(d, generator=generator) * 3
        unit = direction / direction.norm()
        outs = torch.linalg.qr(torch.randn(d, 3, generator=generator))[0].T  # three orthonormal output directions
        outs[slot] = 0.8 * unit + 0.6 * outs[slot]  # plant the direction (cosine ~0.8) in the `slot`-th one
        outs[slot] = outs[slot] / outs[slot].norm()
        ins = torch.linalg.qr(torch.randn(m, 3, generator=generator))[0].T
        delta = sum(s * ins[i][:, None] * outs[i][None] for i, s in enumerate((5.0, 2.5, 1.2))) \
            + 0.02 * torch.randn(m, d, generator=generator)
        for sign in (1, -1):  # the direction negated: one signed cosine of the two is negative, whatever the SVD's sign
            cases.append((delta, sign * direction, k, f"a random {m} x {d} change, k {k}, the direction planted in "
                                                      f"singular direction {slot}"
                                                      f"{', negated' if sign < 0 else ''} (seed {seed})"))
    for delta, direction, k, case in cases:
        got = _as_float(call_learner(direction_alignment, delta.clone(), direction.clone(), k, case=case), case)
        expected = reference_direction_alignment(delta, direction, k)
        u, _, vh = torch.linalg.svd(delta.double(), full_matrices=False)
        unit = direction.double() / direction.double().norm()
        variants = {"the signed cosine: a singular vector's sign is arbitrary, take the absolute value":
                        float((vh[:k] @ unit).max()),
                    "the dot product with the raw direction: normalise it to unit length":
                        float((vh[:k] @ direction.double()).abs().max()),
                    "the bottom-k singular vectors: torch sorts singular values in descending order, take the first k":
                        float((vh[-k:] @ unit).abs().max()),
                    "only the k-th singular vector, not the best of the top k": float((vh[k - 1] @ unit).abs()),
                    "only the top singular vector: take the largest cosine over the top k": float((vh[0] @ unit).abs())}
        if delta.shape[0] == delta.shape[1]:
            variants["the left singular vectors (columns of U, the input side): the residual side is the rows of Vh"] = \
                float((u[:, :k].T @ unit).abs().max())
            variants["columns of Vh: the right singular vectors are its rows"] = float((vh[:, :k].T @ unit).abs().max())
        variants = {text: value for text, value in variants.items()
                    if not math.isclose(value, expected, abs_tol=1e-4, rel_tol=1e-3)}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-3, variants=variants)
    delta, direction = cases[0][0], cases[0][1]
    _expect_value_error(direction_alignment, (delta, direction, min(delta.shape) + 1),
                        f"k = {min(delta.shape) + 1} for a {tuple(delta.shape)} change",
                        "there are only min(m, d) singular vectors")
    _expect_value_error(direction_alignment, (delta, torch.zeros_like(direction), 1), "a zero direction",
                        "a zero vector has no cosine with anything")
    passed("test_direction_alignment", len(cases) + 2)


# ---------------------------------------------------------------- 9. cross-model patching at chosen positions

def reference_patch_positions_hook(source: torch.Tensor, positions: torch.Tensor) -> Callable:
    def hook(act, hook=None):
        act = act.clone()
        rows = torch.arange(act.shape[0], device=act.device)
        index = positions.to(act.device)
        act[rows, index] = source.to(act.device, act.dtype)[rows, index]
        return act
    return hook


def test_patch_positions_hook(patch_positions_hook: Callable) -> None:
    """``patch_positions_hook(source [batch, seq, d], positions [batch]) -> hook``: ``hook(act, hook=None)`` returns
    ``act`` with ``act[b, positions[b]]`` replaced by ``source[b, positions[b]]`` (the other model's activation on the
    same tokens) and every other entry unchanged; ``source`` is left as it is."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, d in ((5, 9, 12), (3, 6, 8), (6, 14, 4)):
        source = torch.randn(batch, seq, d, generator=generator)
        act = torch.randn(batch, seq, d, generator=generator)
        positions = torch.randint(0, seq, (batch,), generator=generator)
        positions[0], positions[1] = 1, seq - 2  # rows that differ, so one shared position is visibly wrong
        cases.append((source, act, positions, f"random activations {batch} x {seq} x {d}, positions "
                                              f"{positions.tolist()} (seed {seed})"))
    for source, act, positions, case in cases:
        source_in = source.clone()
        hook = call_learner(patch_positions_hook, source_in, positions.clone(), case=case)
        if not callable(hook):
            raise CheckFailed(f"{case}: return a hook function hook(act, hook=None) -> act, got {type(hook).__name__}")
        got = call_learner(hook, act.clone(), None, case=case)
        if got is None:
            raise CheckFailed(f"{case}: your hook returned None: return the patched activation (TransformerLens "
                              "uses what a hook returns)")
        got = _as_tensor(got, case)
        if not torch.equal(source_in, source):
            raise CheckFailed(f"{case}: your function changed `source` (the cached activations): patch a copy of "
                              "`act`, never the cache, or the next patch reads corrupted values")
        expected = reference_patch_positions_hook(source, positions)(act)
        batch, seq = act.shape[:2]

        def variants(source=source, act=act, positions=positions):
            fancy = act.clone()
            fancy[:, positions] = source[:, positions]
            return {"every position patched, not only positions[b]": source,
                    "positions[0] used for every row": reference_patch_positions_hook(
                        source, positions[:1].expand(batch))(act),
                    "act[:, positions] patched: every row at every position listed (index rows and positions "
                    "together: act[torch.arange(batch), positions])": fancy,
                    "patched one position later (off by one)": reference_patch_positions_hook(
                        source, (positions + 1).clamp(max=seq - 1))(act),
                    "the activation unchanged": act,
                    "the source added to the activation, not written over it": act + (
                        reference_patch_positions_hook(source, positions)(torch.zeros_like(act)))}

        compare_outputs(got.float(), expected, case, atol=1e-6, rtol=1e-6, variants=variants,
                        dims=("prompt", "position", "d"))
    passed("test_patch_positions_hook", len(cases))


# ---------------------------------------------------------------- 10. how much of the change a patch recovers

def reference_recovered_fraction(base_metric: torch.Tensor, tuned_metric: torch.Tensor,
                                 patched_metric: torch.Tensor) -> float:
    base, tuned, patched = (float(torch.as_tensor(x).double().mean()) for x in
                            (base_metric, tuned_metric, patched_metric))
    if abs(tuned - base) < 1e-6:
        raise ValueError(f"the tuned and base means are equal ({tuned:.6g}): nothing changed, nothing to recover")
    return (patched - base) / (tuned - base)


def test_recovered_fraction(recovered_fraction: Callable) -> None:
    """``recovered_fraction(base_metric [n], tuned_metric [n], patched_metric [n]) -> float``:
    ``(mean(patched) - mean(base)) / (mean(tuned) - mean(base))``, the fraction of the base-to-tuned change of the
    mean that the patch reproduces (a ratio of means); equal means raise ValueError."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, fraction in ((20, 0.7), (8, 0.15), (30, 1.1), (12, -0.2)):
        base = torch.randn(n, generator=generator) - 2
        tuned = base + 3 + torch.randn(n, generator=generator)
        patched = base + fraction * (tuned - base) + 0.8 * torch.randn(n, generator=generator)
        base[0] = tuned[0] - 0.01  # one prompt barely changed: a per-prompt ratio blows up there
        cases.append((base, tuned, patched, f"{n} random prompts, the patch recovering about {fraction} of the "
                                            f"change (seed {seed})"))
    for base, tuned, patched, case in cases:
        got = _as_float(call_learner(recovered_fraction, base.clone(), tuned.clone(), patched.clone(), case=case), case,
                        "one fraction")
        expected = reference_recovered_fraction(base, tuned, patched)
        b, t, p = (float(x.double().mean()) for x in (base, tuned, patched))
        variants = {"the mean of per-prompt ratios: a prompt that barely changed dominates it; take the ratio of means":
                        float(((patched - base) / (tuned - base)).double().mean()),
                    "1 - the right answer (the fraction not recovered; or base and tuned swapped)": 1 - expected,
                    "the ratio upside down, (tuned - base) / (patched - base)": (t - b) / (p - b),
                    "(patched - base) / tuned: subtract the base in the denominator too": (p - b) / t}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-4, variants=variants)
    base = cases[0][0]
    _expect_value_error(recovered_fraction, (base, base.clone(), base + 1), "tuned equal to base",
                        "when tuning changed nothing the fraction is 0 / 0")
    passed("test_recovered_fraction", len(cases) + 1)


# ---------------------------------------------------------------- 11. how many steps undo the refusal

def reference_steps_to_undo(refusal, steps, threshold: float = 0.5) -> int | None:
    for rate, step in zip(torch.as_tensor(refusal).tolist(), torch.as_tensor(steps).tolist()):
        if rate < threshold:
            return int(step)
    return None


def test_steps_to_undo(steps_to_undo: Callable) -> None:
    """``steps_to_undo(refusal [c], steps [c], threshold=0.5) -> int | None``: the first ``steps[i]`` at which the
    refusal rate ``refusal[i]`` is strictly below ``threshold``, or None when it never is."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    checkpoints = [0, 5, 10, 20, 40, 80, 160]
    cases = []
    for threshold in (0.5, 0.3):
        fall = int(torch.randint(2, 5, (1,), generator=generator))
        refusal = torch.tensor([0.98, 0.95, 0.9, 0.7, 0.45, 0.2, 0.1])[:len(checkpoints)]
        refusal = torch.cat([refusal[:fall].clamp(min=threshold + 0.05),
                             torch.rand(len(checkpoints) - fall, generator=generator) * threshold * 0.9])
        refusal[-1] = threshold + 0.1  # it rises again at the end: the first fall counts, not the last
        refusal[-2] = threshold * 0.5
        cases.append((refusal, checkpoints, threshold, f"a refusal curve {[round(r, 2) for r in refusal.tolist()]} at "
                                                       f"steps {checkpoints}, threshold {threshold} (seed {seed})"))
    at_threshold = torch.tensor([0.97, 0.8, 0.5, 0.5, 0.35, 0.1])
    cases.append((at_threshold, torch.tensor([0, 10, 20, 30, 50, 100]), 0.5,
                  "a refusal curve [0.97, 0.8, 0.5, 0.5, 0.35, 0.1] at steps [0, 10, 20, 30, 50, 100], threshold 0.5"))
    cases.append((torch.tensor([0.99, 0.9, 0.8, 0.7]), [0, 25, 50, 100], 0.5,
                  "a refusal curve [0.99, 0.9, 0.8, 0.7] that never falls below 0.5"))
    cases.append((torch.tensor([0.4, 0.2, 0.1]), [3, 6, 9], 0.5,
                  "a refusal curve [0.4, 0.2, 0.1] at steps [3, 6, 9], already below 0.5 at the first checkpoint"))
    for refusal, steps, threshold, case in cases:
        steps_in = steps.clone() if isinstance(steps, torch.Tensor) else list(steps)
        got = call_learner(steps_to_undo, refusal.clone(), steps_in, threshold, case=case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        expected = reference_steps_to_undo(refusal, steps, threshold)
        if got is None or expected is None:
            if got is expected:
                continue
            raise CheckFailed(f"{case}: expected {expected}, got {got!r}"
                              + ("\n  return None when the refusal never falls below the threshold (0 would read as "
                                 "'undone before any fine-tuning')" if expected is None else ""))
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
            raise CheckFailed(f"{case}: return a step count (an int) or None, got {got!r}")
        steps_list, rates = torch.as_tensor(steps).tolist(), refusal.tolist()
        below = [i for i, r in enumerate(rates) if r < threshold]
        at_or_below = [i for i, r in enumerate(rates) if r <= threshold]
        variants = {"the checkpoint's index i where the step count steps[i] belongs": below[0],
                    "<= where < belongs: a rate equal to the threshold has not fallen below it":
                        steps_list[at_or_below[0]],
                    "the last step below the threshold, not the first": steps_list[below[-1]]}
        variants = {text: value for text, value in variants.items() if value != expected}
        compare_outputs(int(got), expected, case, variants=variants)
    passed("test_steps_to_undo", len(cases))


# ---------------------------------------------------------------- 12. DPO with an NLL term

def reference_dpo_nll_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                           ref_rejected: torch.Tensor, chosen_lengths: torch.Tensor, beta: float = 0.1,
                           nll_weight: float = 0.0) -> torch.Tensor:
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    loss, _ = finetune.dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    lengths = torch.as_tensor(chosen_lengths).to(policy_chosen.dtype)
    return loss + nll_weight * (-policy_chosen / lengths).mean()


def test_dpo_nll_loss(dpo_nll_loss: Callable) -> None:
    """``dpo_nll_loss(policy_chosen [n], policy_rejected [n], ref_chosen [n], ref_rejected [n], chosen_lengths [n],
    beta=0.1, nll_weight=0.0) -> scalar tensor``: ``-mean(logsigmoid(beta * margin)) + nll_weight *
    mean(-policy_chosen / chosen_lengths)``, margin = (policy_chosen - ref_chosen) - (policy_rejected -
    ref_rejected); differentiable; ``beta <= 0`` or ``nll_weight < 0`` raise ValueError."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, beta, nll_weight in ((8, 0.1, 0.0), (5, 0.5, 1.0), (16, 2.0, 0.3), (6, 0.1, 1.0)):
        ref_c = -20 - 10 * torch.rand(n, generator=generator)
        ref_r = -20 - 10 * torch.rand(n, generator=generator)
        pol_c = ref_c + 3 * torch.randn(n, generator=generator) + 1
        pol_r = ref_r + 3 * torch.randn(n, generator=generator) - 1
        lengths = torch.randint(4, 20, (n,), generator=generator)
        cases.append((pol_c, pol_r, ref_c, ref_r, lengths, beta, nll_weight,
                      f"{n} random pairs, chosen lengths {lengths.tolist()}, beta {beta}, nll_weight {nll_weight} "
                      f"(seed {seed})"))
    for pol_c, pol_r, ref_c, ref_r, lengths, beta, nll_weight, case in cases:
        pc, pr = pol_c.clone().requires_grad_(True), pol_r.clone().requires_grad_(True)
        got = call_learner(dpo_nll_loss, pc, pr, ref_c.clone(), ref_r.clone(), lengths.clone(), beta, nll_weight,
                           case=case)
        if isinstance(got, tuple):
            raise CheckFailed(f"{case}: return the loss alone (a scalar tensor), got a tuple of {len(got)}")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{case}: return a scalar tensor that keeps autograd (the optimiser calls "
                              f"loss.backward()), got {type(got).__name__}")
        value = _as_float(got.detach(), case, "the loss, one number")
        expected = float(reference_dpo_nll_loss(pol_c, pol_r, ref_c, ref_r, lengths, beta, nll_weight))
        logsig = torch.nn.functional.logsigmoid

        def mistakes(pc, pr, ref_c=ref_c, ref_r=ref_r, lengths=lengths, beta=beta, nll_weight=nll_weight):
            """Each known mistake's loss as a function of the policy's log-probabilities (so its gradient too)."""
            margin = (pc - ref_c) - (pr - ref_r)
            dpo, nll = -logsig(beta * margin).mean(), (-pc / lengths).mean()
            found = {"the margin the wrong way round (rejected minus chosen): the loss would push the chosen "
                     "response down": -logsig(-beta * margin).mean() + nll_weight * nll,
                     "beta forgotten: beta scales the margin inside the log-sigmoid":
                         -logsig(margin).mean() + nll_weight * nll,
                     "beta outside the log-sigmoid, -beta * log sigmoid(margin)":
                         -beta * logsig(margin).mean() + nll_weight * nll,
                     "log sigmoid without its minus sign (log sigmoid is negative; the loss is -log sigmoid)":
                         logsig(beta * margin).mean() + nll_weight * nll,
                     "the reference model left out: DPO measures how far the policy moved from the reference":
                         -logsig(beta * (pc - pr)).mean() + nll_weight * nll}
            if nll_weight > 0:
                found.update({
                    "the NLL not length-normalised (a sum over tokens): divide each chosen log p by its length":
                        dpo + nll_weight * (-pc).mean(),
                    "the NLL on the rejected response: the NLL term keeps the chosen response likely":
                        dpo + nll_weight * (-pr / lengths).mean(),
                    "the NLL with the wrong sign (+ log p where - log p belongs)": dpo - nll_weight * nll,
                    "the NLL term left out": dpo})
            return found

        variants = {text: float(loss) for text, loss in mistakes(pol_c, pol_r).items()}
        compare_outputs(value, expected, case, atol=1e-5, rtol=1e-5, variants=variants)
        if not got.requires_grad:
            raise CheckFailed(f"{case}: your loss does not keep autograd (did you call .item(), .detach() or build a "
                              "new tensor?): the optimiser needs loss.backward()")
        got.backward()
        want_c, want_r = pol_c.clone().requires_grad_(True), pol_r.clone().requires_grad_(True)
        reference_dpo_nll_loss(want_c, want_r, ref_c, ref_r, lengths, beta, nll_weight).backward()

        def gradient_variants(which, mistakes=mistakes):
            out = {}
            for text, _ in mistakes(pol_c, pol_r).items():
                mc, mr = pol_c.clone().requires_grad_(True), pol_r.clone().requires_grad_(True)
                mistakes(mc, mr)[text].backward()
                out[text] = (mc if which == "policy_chosen" else mr).grad
            return out

        for name, mine, want in (("policy_chosen", pc.grad, want_c.grad), ("policy_rejected", pr.grad, want_r.grad)):
            if mine is None:
                raise CheckFailed(f"{case}: no gradient reaches {name}: the loss must depend on it through autograd")
            compare_with_lazy_variants(mine, want, f"{case}: the value is right (by coincidence), but the gradient "
                                       f"with respect to {name}", lambda name=name: gradient_variants(name),
                                       atol=1e-5, rtol=1e-3)
    pol_c, pol_r, ref_c, ref_r, lengths = cases[0][:5]
    case = f"the policy equal to the reference, nll_weight 0 (seed {seed})"
    got = _as_float(call_learner(dpo_nll_loss, pol_c.clone(), pol_r.clone(), pol_c.clone(), pol_r.clone(),
                                 lengths.clone(), 0.1, 0.0, case=case), case)
    compare_outputs(got, math.log(2), case + ": the margin is 0, so the loss is log 2", atol=1e-5, rtol=1e-4)
    _expect_value_error(dpo_nll_loss, (pol_c, pol_r, ref_c, ref_r, lengths, 0.0, 0.0), "beta = 0",
                        "beta is the strength of the anchor to the reference and must be > 0")
    _expect_value_error(dpo_nll_loss, (pol_c, pol_r, ref_c, ref_r, lengths, 0.1, -1.0), "nll_weight = -1",
                        "a negative NLL weight would push the chosen response down")
    passed("test_dpo_nll_loss", len(cases) + 3)


# ---------------------------------------------------------------- 13. the verdict, against the cards

TUNED = {"sft": "chat-sft", "dpo": "chat-dpo", "rl": "chat-rl"}
TOLERANCE = 0.08
"""A learner's share, from fewer samples than the card's, may differ from the card's by this much."""


def verdict_truth() -> dict[str, Any]:
    """The numbers and claims ``check_verdict`` compares with, from the shipped cards."""
    shares = {}
    for method, name in TUNED.items():
        metrics = _card_metrics(name)
        if metrics is None:
            raise CheckFailed(f"the shipped model {name} or its card is missing: rebuild it with "
                              f"`python -m interplab.zoo train {name} --replace-shipped`")
        shares[method] = metrics["kl"]
    first = {method: kl["first_3_share"] for method, kl in shares.items()}
    decision = shares["rl"]["share_opener"] + shares["rl"]["share_stop"]
    return {"first_3_share": first, "decision_share_rl": decision,
            "first_tokens_claim": all(v > 0.5 for v in first.values()), "decision_tokens_claim": decision >= 0.8}


def check_verdict(my_verdict: dict) -> None:
    """``my_verdict = {"first_3_share": {"sft": float, "dpo": float, "rl": float}, "decision_share_rl": float,
    "first_tokens_claim": bool, "decision_tokens_claim": bool, "verdict": str}``: your measured KL shares (within
    0.08 of the shipped cards'), whether more than half of the KL sits in the first 3 response tokens for every
    method, whether the opener and stop decision carry at least 0.8 of RL's KL, and your verdict."""
    keys = ("first_3_share", "decision_share_rl", "first_tokens_claim", "decision_tokens_claim", "verdict")
    if not isinstance(my_verdict, dict):
        raise CheckFailed(f"give your verdict as a dict with keys {list(keys)}, got {type(my_verdict).__name__}")
    missing = [key for key in keys if key not in my_verdict]
    if missing:
        raise CheckFailed(f"your verdict lacks {missing}")
    verdict = my_verdict["verdict"]
    if not isinstance(verdict, str) or len(verdict.split()) < 8 or "TODO" in verdict:
        raise CheckFailed("write the 'verdict' in your own words (a sentence of at least 8 words): does alignment "
                          "tuning here change a few decision tokens, and what can a toy model not tell us?")
    shares = my_verdict["first_3_share"]
    if not isinstance(shares, dict) or sorted(shares) != sorted(TUNED):
        raise CheckFailed(f"'first_3_share': a dict with keys {sorted(TUNED)} (one share per method), got {shares!r}")
    truth = verdict_truth()
    problems = []
    for method, name in TUNED.items():
        mine = _as_float(shares[method], f"'first_3_share'[{method!r}]", "a share")
        if abs(mine - truth["first_3_share"][method]) > TOLERANCE:
            problems.append(f"'first_3_share'[{method!r}] {mine:.3f}: {name}'s card measures "
                            f"{truth['first_3_share'][method]:.3f} (tolerance {TOLERANCE}); did you sum the KL of "
                            "positions 0-2 over all responses and divide by the total?")
    decision = _as_float(my_verdict["decision_share_rl"], "'decision_share_rl'", "a share")
    if abs(decision - truth["decision_share_rl"]) > TOLERANCE:
        problems.append(f"'decision_share_rl' {decision:.3f}: chat-rl's card measures share_opener + share_stop = "
                        f"{truth['decision_share_rl']:.3f} (tolerance {TOLERANCE})")
    for key, text in (("first_tokens_claim", "more than half of the KL in the first 3 tokens for every method: "
                                             + ", ".join(f"{m} {v:.2f}" for m, v in truth["first_3_share"].items())),
                      ("decision_tokens_claim", f"opener + stop carry >= 0.8 of RL's KL: "
                                                f"{truth['decision_share_rl']:.2f}")):
        if not isinstance(my_verdict[key], bool):
            problems.append(f"{key!r}: say True or False, got {my_verdict[key]!r}")
        elif my_verdict[key] != truth[key]:
            problems.append(f"{key!r} {my_verdict[key]}: the cards say {truth[key]} ({text})")
    if problems:
        raise CheckFailed("your verdict differs from the shipped models' cards:\n  " + "\n  ".join(problems))
    print("✔ check_verdict passed: first-3 shares " + ", ".join(f"{m} {v:.2f}" for m, v in
                                                                 truth["first_3_share"].items())
          + f"; RL's opener + stop share {truth['decision_share_rl']:.2f}")
