"""Each chapter-06 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs (rewards, log-probabilities, logits, KL profiles, weight changes, activations) at check
time and never need a model; the two finding checks read the shipped cards."""
import math

import pytest
import torch

from interplab import diffing
from interplab.checks import CheckFailed
from interplab.checks import ch06

logsigmoid = torch.nn.functional.logsigmoid


# ---------------------------------------------------------------- 1. the KL-penalised reward

def test_kl_penalised_reward_checker():
    ch06.test_kl_penalised_reward(ch06.reference_kl_penalised_reward)

    def masked(p, r, m):
        return torch.where(m, p - r, torch.zeros_like(p)).sum(-1)

    with pytest.raises(CheckFailed, match="added, not subtracted"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s + beta * masked(p, r, m))
    with pytest.raises(CheckFailed, match="added, not subtracted"):  # the log-ratio reversed is the same number
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * masked(r, p, m))
    with pytest.raises(CheckFailed, match="padding counted"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * (p - r).sum(-1))
    with pytest.raises(CheckFailed, match="mean log-ratio per token"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * masked(p, r, m) / m.sum(-1))
    with pytest.raises(CheckFailed, match="beta forgotten"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - masked(p, r, m))
    with pytest.raises(CheckFailed, match="raise ValueError"):  # right numbers, no guard on beta
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * masked(p, r, m))


# ---------------------------------------------------------------- 2. RLOO

def test_rloo_advantages_checker():
    ch06.test_rloo_advantages(ch06.reference_rloo_advantages)

    def guarded(formula):
        def advantages(r):
            if r.shape[1] < 2:
                raise ValueError("k < 2")
            return formula(r)
        return advantages

    with pytest.raises(CheckFailed, match="sample itself included"):
        ch06.test_rloo_advantages(guarded(lambda r: r - r.mean(1, keepdim=True)))
    with pytest.raises(CheckFailed, match="GRPO"):
        ch06.test_rloo_advantages(guarded(lambda r: (r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)))
    with pytest.raises(CheckFailed, match="whole batch"):
        ch06.test_rloo_advantages(guarded(lambda r: r - r.mean()))
    with pytest.raises(CheckFailed, match="over prompts"):
        ch06.test_rloo_advantages(guarded(lambda r: r - (r.sum(0, keepdim=True) - r) / (r.shape[0] - 1)))
    with pytest.raises(CheckFailed, match="raise ValueError"):  # divides by k - 1 = 0 without a word
        ch06.test_rloo_advantages(lambda r: r - (r.sum(1, keepdim=True) - r) / (r.shape[1] - 1))


# ---------------------------------------------------------------- 3. URIAL ranks

def test_token_ranks_checker():
    ch06.test_token_ranks(ch06.reference_token_ranks)
    with pytest.raises(CheckFailed, match="counted from 0"):
        ch06.test_token_ranks(lambda logits, tokens: ch06.reference_token_ranks(logits, tokens) - 1)

    def chosen(logits, tokens):
        return logits.gather(-1, tokens[:, None])

    with pytest.raises(CheckFailed, match="ties counted against"):
        ch06.test_token_ranks(lambda logits, tokens: (logits >= chosen(logits, tokens)).sum(-1))
    with pytest.raises(CheckFailed, match="from the bottom"):
        ch06.test_token_ranks(lambda logits, tokens: (logits < chosen(logits, tokens)).sum(-1) + 1)
    with pytest.raises(CheckFailed, match="token id found at each rank"):
        ch06.test_token_ranks(lambda logits, tokens: logits.argsort(-1, descending=True).gather(-1, tokens[:, None])[:, 0])
    with pytest.raises(CheckFailed, match="double argsort"):
        ch06.test_token_ranks(lambda logits, tokens: logits.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
                              .gather(-1, tokens[:, None])[:, 0] + 1)


# ---------------------------------------------------------------- 4. KL by position

def test_position_kl_checker():
    ch06.test_position_kl(ch06.reference_position_kl)
    with pytest.raises(CheckFailed, match="wrong way round"):
        ch06.test_position_kl(lambda tuned, base: ch06.reference_position_kl(base, tuned))
    with pytest.raises(CheckFailed, match="apply log_softmax"):
        ch06.test_position_kl(lambda tuned, base: (tuned.softmax(-1) * (tuned - base)).sum(-1))
    with pytest.raises(CheckFailed, match="over positions"):
        ch06.test_position_kl(lambda tuned, base: (tuned.softmax(1) * (tuned.log_softmax(1) - base.log_softmax(1)))
                              .sum(-1))
    with pytest.raises(CheckFailed, match="bits"):
        ch06.test_position_kl(lambda tuned, base: ch06.reference_position_kl(tuned, base) / math.log(2))
    with pytest.raises(CheckFailed, match="lacks position"):
        ch06.test_position_kl(lambda tuned, base: ch06.reference_position_kl(tuned, base).sum(-1))


# ---------------------------------------------------------------- 5. KL shares

def _shares(kl, labels, first, per_row=False, count_padding=False):
    out = {}
    lengths = torch.tensor([len(row) for row in labels])
    valid = torch.arange(kl.shape[1])[None] < lengths[:, None]
    values = kl if count_padding else kl * valid
    total = values.sum()
    out[f"first_{first}_share"] = float(values[:, :first].sum() / total)
    for label in diffing.LABELS:
        where = torch.zeros_like(valid)
        for i, row in enumerate(labels):
            where[i, :len(row)] = torch.tensor([lab == label for lab in row])
        if per_row:
            out[f"share_{label}"] = float(((values * where).sum(-1) / values.sum(-1)).mean())
        else:
            out[f"share_{label}"] = float((values * where).sum() / total)
    if per_row:
        out[f"first_{first}_share"] = float((values[:, :first].sum(-1) / values.sum(-1)).mean())
    return out


def test_kl_shares_checker():
    ch06.test_kl_shares(ch06.reference_kl_shares)

    def via_library(kl, labels, first=3):  # diffing.kl_summary gives the same shares (rounded to 4 decimals)
        lengths = torch.tensor([len(row) for row in labels])
        valid = torch.arange(kl.shape[1])[None] < lengths[:, None]
        summary = diffing.kl_summary(diffing.PositionProfile(kl * valid, valid, labels), first)
        return {key: value for key, value in summary.items() if "share" in key}

    ch06.test_kl_shares(via_library)
    with pytest.raises(CheckFailed, match="padding counted"):
        ch06.test_kl_shares(lambda kl, labels, first=3: _shares(kl, labels, first, count_padding=True))
    with pytest.raises(CheckFailed, match="shares averaged"):
        ch06.test_kl_shares(lambda kl, labels, first=3: _shares(kl, labels, first, per_row=True))

    def opener_as_first(kl, labels, first=3):
        out = ch06.reference_kl_shares(kl, labels, first)
        return {**out, f"first_{first}_share": out["share_opener"]}

    with pytest.raises(CheckFailed, match="opener label"):
        ch06.test_kl_shares(opener_as_first)

    def present_labels_only(kl, labels, first=3):
        out = ch06.reference_kl_shares(kl, labels, first)
        seen = {lab for row in labels for lab in row}
        return {key: value for key, value in out.items() if not key.startswith("share_") or key[6:] in seen}

    with pytest.raises(CheckFailed, match="lacks"):
        ch06.test_kl_shares(present_labels_only)


# ---------------------------------------------------------------- 6. reading the metrics

def test_check_metric_reading():
    truth = ch06.metric_reading_truth()
    right = {key: truth[key] for key in ("kl_sees_late_tuning", "urial_sees_late_tuning", "kl_location_set_by")}
    right["why"] = "the KL of the late-only model sits at the stop decision while URIAL ranks stay low"
    ch06.check_metric_reading(right)
    with pytest.raises(CheckFailed, match="'urial_sees_late_tuning'"):
        ch06.check_metric_reading(dict(right, urial_sees_late_tuning=not right["urial_sees_late_tuning"]))
    with pytest.raises(CheckFailed, match="'kl_sees_late_tuning'"):
        ch06.check_metric_reading(dict(right, kl_sees_late_tuning=not right["kl_sees_late_tuning"]))
    other = "method" if right["kl_location_set_by"] == "constitution" else "constitution"
    with pytest.raises(CheckFailed, match="early-only and late-only"):
        ch06.check_metric_reading(dict(right, kl_location_set_by=other))
    with pytest.raises(CheckFailed, match="own words"):
        ch06.check_metric_reading(dict(right, why="TODO"))
    with pytest.raises(CheckFailed, match="lacks"):
        ch06.check_metric_reading({"why": right["why"]})
    with pytest.raises(CheckFailed, match="'constitution' or 'method'"):
        ch06.check_metric_reading(dict(right, kl_location_set_by="both"))


def test_metric_reading_follows_the_retunes_cards(monkeypatch):
    """With early-only and late-only cards shipped, the truth is read from them: here a late retune whose stop tokens
    URIAL does flag (as in the variant world where the base gives END a low probability)."""
    cards = {"early": {"kl": {"first_3_share": 0.95}, "token_shift": {"shifted_at_stop": 0.0}},
             "late": {"kl": {"first_3_share": 0.04}, "token_shift": {"shifted_at_stop": 0.6}}}
    monkeypatch.setattr(ch06, "_retuned", lambda kind: cards[kind])
    truth = ch06.metric_reading_truth()
    assert truth["urial_sees_late_tuning"] and truth["kl_sees_late_tuning"]
    assert truth["kl_location_set_by"] == "constitution" and "cards" in truth["source"]
    reading = {"kl_sees_late_tuning": True, "urial_sees_late_tuning": False, "kl_location_set_by": "constitution",
               "why": "the late-only model's KL sits at the stop decision and URIAL misses it"}
    with pytest.raises(CheckFailed, match="'urial_sees_late_tuning'"):
        ch06.check_metric_reading(reading)
    ch06.check_metric_reading(dict(reading, urial_sees_late_tuning=True))


# ---------------------------------------------------------------- 7. effective rank

def _plogp_rank(delta, square=False, base=math.e, exp=True, normalise=True):
    s = torch.linalg.svdvals(delta.double())
    if square:
        s = s ** 2
    p = s / s.sum() if normalise else s
    p = p[p > 0]
    entropy = -(p * p.log()).sum() / math.log(base)
    return float(math.e ** entropy) if exp else float(entropy)  # exp of an entropy in bits is the mistake


def test_effective_rank_checker():
    ch06.test_effective_rank(ch06.reference_effective_rank)

    def guarded(formula):
        return lambda delta: 0.0 if float(delta.abs().sum()) == 0 else formula(delta)

    with pytest.raises(CheckFailed, match="squared singular values"):
        ch06.test_effective_rank(guarded(lambda d: _plogp_rank(d, square=True)))
    with pytest.raises(CheckFailed, match="bits"):
        ch06.test_effective_rank(guarded(lambda d: _plogp_rank(d, base=2)))
    with pytest.raises(CheckFailed, match="numerical rank"):
        ch06.test_effective_rank(lambda d: float(torch.linalg.matrix_rank(d)))
    with pytest.raises(CheckFailed, match="not normalised"):
        ch06.test_effective_rank(guarded(lambda d: _plogp_rank(d, normalise=False)))
    with pytest.raises(CheckFailed, match="not exp"):
        ch06.test_effective_rank(guarded(lambda d: _plogp_rank(d, exp=False)))

    def naive(delta):  # 0 * log 0 = NaN
        s = torch.linalg.svdvals(delta)
        p = s / s.sum()
        return float(torch.exp(-(p * p.log()).sum()))

    with pytest.raises(CheckFailed, match="NaN"):
        ch06.test_effective_rank(naive)


# ---------------------------------------------------------------- 8. direction alignment

def _alignment(delta, direction, k=1, side="right", signed=False, normalise=True, bottom=False):
    if k > min(delta.shape) or float(direction.norm()) == 0:
        raise ValueError("bad input")
    u, _, vh = torch.linalg.svd(delta, full_matrices=False)
    vectors = vh if side == "right" else u.T
    if vectors.shape[1] != direction.shape[0]:
        vectors = vh  # a left-vector answer that falls back when the shapes do not fit
    vectors = vectors[-k:] if bottom else vectors[:k]
    unit = direction / direction.norm() if normalise else direction
    cosines = vectors @ unit
    return float(cosines.max() if signed else cosines.abs().max())


def test_direction_alignment_checker():
    ch06.test_direction_alignment(ch06.reference_direction_alignment)
    ch06.test_direction_alignment(_alignment)
    with pytest.raises(CheckFailed, match="left singular vectors"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, k, side="left"))
    with pytest.raises(CheckFailed, match="signed cosine"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, k, signed=True))
    with pytest.raises(CheckFailed, match="normalise it"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, k, normalise=False))
    with pytest.raises(CheckFailed, match="bottom-k"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, k, bottom=True))
    with pytest.raises(CheckFailed, match="only the top singular vector"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, 1))
    with pytest.raises(CheckFailed, match="raise ValueError"):
        ch06.test_direction_alignment(lambda d, v, k=1: _alignment(d, v, min(k, min(d.shape))))


# ---------------------------------------------------------------- 9. the patching hook

def test_patch_positions_hook_checker():
    ch06.test_patch_positions_hook(ch06.reference_patch_positions_hook)

    def in_place(source, positions):  # allowed: modify act in place and return it
        def hook(act, hook=None):
            rows = torch.arange(act.shape[0])
            act[rows, positions] = source[rows, positions]
            return act
        return hook

    ch06.test_patch_positions_hook(in_place)
    with pytest.raises(CheckFailed, match="every position patched"):
        ch06.test_patch_positions_hook(lambda source, positions: lambda act, hook=None: source.clone())
    with pytest.raises(CheckFailed, match=r"positions\[0\] used for every row"):
        ch06.test_patch_positions_hook(lambda source, positions: ch06.reference_patch_positions_hook(
            source, positions[:1].expand(len(positions))))

    def fancy(source, positions):
        def hook(act, hook=None):
            act = act.clone()
            act[:, positions] = source[:, positions]
            return act
        return hook

    with pytest.raises(CheckFailed, match="every row at every position listed"):
        ch06.test_patch_positions_hook(fancy)

    def into_source(source, positions):
        def hook(act, hook=None):
            rows = torch.arange(act.shape[0])
            patched = source  # writes the rest of act into the cache
            keep = torch.ones(act.shape[:2], dtype=torch.bool)
            keep[rows, positions] = False
            patched[keep] = act[keep]
            return patched
        return hook

    with pytest.raises(CheckFailed, match="changed `source`"):
        ch06.test_patch_positions_hook(into_source)

    def no_return(source, positions):
        def hook(act, hook=None):
            act[torch.arange(act.shape[0]), positions] = source[torch.arange(act.shape[0]), positions]
        return hook

    with pytest.raises(CheckFailed, match="returned None"):
        ch06.test_patch_positions_hook(no_return)


# ---------------------------------------------------------------- 10. recovered fraction

def test_recovered_fraction_checker():
    ch06.test_recovered_fraction(ch06.reference_recovered_fraction)

    def guarded(formula):
        def fraction(b, t, p):
            if abs(float(t.mean() - b.mean())) < 1e-6:
                raise ValueError("nothing changed")
            return formula(b, t, p)
        return fraction

    with pytest.raises(CheckFailed, match="per-prompt ratios"):
        ch06.test_recovered_fraction(guarded(lambda b, t, p: float(((p - b) / (t - b)).mean())))
    with pytest.raises(CheckFailed, match="1 - the right answer"):
        ch06.test_recovered_fraction(guarded(lambda b, t, p: float((p.mean() - t.mean()) / (b.mean() - t.mean()))))
    with pytest.raises(CheckFailed, match="upside down"):
        ch06.test_recovered_fraction(guarded(lambda b, t, p: float((t.mean() - b.mean()) / (p.mean() - b.mean()))))
    with pytest.raises(CheckFailed, match="raise ValueError|ZeroDivisionError"):
        ch06.test_recovered_fraction(lambda b, t, p: float((p.mean() - b.mean()) / (t.mean() - b.mean())))


# ---------------------------------------------------------------- 11. steps to undo

def test_steps_to_undo_checker():
    ch06.test_steps_to_undo(ch06.reference_steps_to_undo)

    def index(refusal, steps, threshold=0.5):
        below = (refusal < threshold).nonzero()
        return int(below[0]) if len(below) else None

    with pytest.raises(CheckFailed, match="index i"):
        ch06.test_steps_to_undo(index)

    def at_or_below(refusal, steps, threshold=0.5):
        return next((int(s) for r, s in zip(refusal.tolist(), list(steps)) if r <= threshold), None)

    with pytest.raises(CheckFailed, match="<= where < belongs"):
        ch06.test_steps_to_undo(at_or_below)

    def last(refusal, steps, threshold=0.5):
        found = [int(s) for r, s in zip(refusal.tolist(), list(steps)) if r < threshold]
        return found[-1] if found else None

    with pytest.raises(CheckFailed, match="the last step"):
        ch06.test_steps_to_undo(last)
    with pytest.raises(CheckFailed, match="return None"):
        ch06.test_steps_to_undo(lambda refusal, steps, threshold=0.5: ch06.reference_steps_to_undo(
            refusal, steps, threshold) or 0)


# ---------------------------------------------------------------- 12. DPO + NLL

def _dpo(pc, pr, rc, rr, lengths, beta=0.1, nll_weight=0.0, margin_sign=1, beta_inside=True, nll_of=None,
         normalise=True):
    if beta <= 0 or nll_weight < 0:
        raise ValueError("bad beta or nll_weight")
    margin = margin_sign * ((pc - rc) - (pr - rr))
    dpo = -logsigmoid(beta * margin).mean() if beta_inside else -logsigmoid(margin).mean()
    target = pc if nll_of is None else nll_of(pc, pr)
    nll = (-target / lengths).mean() if normalise else (-target).mean()
    return dpo + nll_weight * nll


def test_dpo_nll_loss_checker():
    ch06.test_dpo_nll_loss(ch06.reference_dpo_nll_loss)
    ch06.test_dpo_nll_loss(_dpo)
    with pytest.raises(CheckFailed, match="wrong way round"):
        ch06.test_dpo_nll_loss(lambda *a, **k: _dpo(*a, **k, margin_sign=-1))
    with pytest.raises(CheckFailed, match="beta forgotten"):
        ch06.test_dpo_nll_loss(lambda *a, **k: _dpo(*a, **k, beta_inside=False))
    with pytest.raises(CheckFailed, match="not length-normalised"):
        ch06.test_dpo_nll_loss(lambda *a, **k: _dpo(*a, **k, normalise=False))
    with pytest.raises(CheckFailed, match="NLL on the rejected"):
        ch06.test_dpo_nll_loss(lambda *a, **k: _dpo(*a, **k, nll_of=lambda pc, pr: pr))
    with pytest.raises(CheckFailed, match="autograd"):
        ch06.test_dpo_nll_loss(lambda *a, **k: _dpo(*a, **k).detach())

    def no_guard(pc, pr, rc, rr, lengths, beta=0.1, nll_weight=0.0):
        return -logsigmoid(beta * ((pc - rc) - (pr - rr))).mean() + nll_weight * (-pc / lengths).mean()

    with pytest.raises(CheckFailed, match="raise ValueError"):
        ch06.test_dpo_nll_loss(no_guard)


# ---------------------------------------------------------------- 13. the verdict

def test_check_verdict():
    truth = ch06.verdict_truth()
    right = {"first_3_share": {m: v + 0.03 for m, v in truth["first_3_share"].items()},
             "decision_share_rl": truth["decision_share_rl"] - 0.02,
             "first_tokens_claim": truth["first_tokens_claim"], "decision_tokens_claim": truth["decision_tokens_claim"],
             "verdict": "tuning changed a few decision tokens here, but a toy world cannot show real values"}
    ch06.check_verdict(right)
    with pytest.raises(CheckFailed, match=r"'first_3_share'\['dpo'\]"):
        ch06.check_verdict(dict(right, first_3_share=dict(right["first_3_share"], dpo=0.6)))
    with pytest.raises(CheckFailed, match="'decision_share_rl'"):
        ch06.check_verdict(dict(right, decision_share_rl=0.5))
    with pytest.raises(CheckFailed, match="'first_tokens_claim'"):
        ch06.check_verdict(dict(right, first_tokens_claim=not truth["first_tokens_claim"]))
    with pytest.raises(CheckFailed, match="'decision_tokens_claim'"):
        ch06.check_verdict(dict(right, decision_tokens_claim=not truth["decision_tokens_claim"]))
    with pytest.raises(CheckFailed, match="own words"):
        ch06.check_verdict(dict(right, verdict="TODO"))
    with pytest.raises(CheckFailed, match="lacks"):
        ch06.check_verdict({"verdict": right["verdict"]})
    with pytest.raises(CheckFailed, match="one share per method"):
        ch06.check_verdict(dict(right, first_3_share=0.5))
