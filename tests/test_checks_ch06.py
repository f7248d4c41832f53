"""Each chapter-06 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs (random logits, rewards, weights, a random model and a perturbed copy) at check time and
never need the shipped models."""
import pytest
import torch

from interplab.checks import CheckFailed
from interplab.checks import ch06

logsigmoid = torch.nn.functional.logsigmoid


def test_token_ranks_checker():
    ch06.test_token_ranks(ch06.reference_token_ranks)

    def same_position(logits, tokens):  # token t under the logits at t
        chosen = logits.gather(-1, tokens[..., None])
        return ((logits > chosen).sum(-1) + 1)[:, 1:]

    with pytest.raises(CheckFailed, match="off-by-one"):
        ch06.test_token_ranks(same_position)
    with pytest.raises(CheckFailed, match="counted from 0"):
        ch06.test_token_ranks(lambda logits, tokens: ch06.reference_token_ranks(logits, tokens) - 1)

    def ties_against(logits, tokens):
        chosen = logits[:, :-1].gather(-1, tokens[:, 1:, None])
        return (logits[:, :-1] >= chosen).sum(-1)

    with pytest.raises(CheckFailed, match="ties counted against"):
        ch06.test_token_ranks(ties_against)

    def ascending(logits, tokens):
        chosen = logits[:, :-1].gather(-1, tokens[:, 1:, None])
        return (logits[:, :-1] < chosen).sum(-1) + 1

    with pytest.raises(CheckFailed, match="from the bottom"):
        ch06.test_token_ranks(ascending)


def test_kl_by_position_checker():
    ch06.test_kl_by_position(ch06.reference_kl_by_position)
    with pytest.raises(CheckFailed, match="wrong way round"):
        ch06.test_kl_by_position(lambda tuned, base, mask: ch06.reference_kl_by_position(base, tuned, mask))
    with pytest.raises(CheckFailed, match="padding counted"):
        ch06.test_kl_by_position(lambda tuned, base, mask: ch06.reference_kl_by_position(
            tuned, base, torch.ones_like(mask)))
    with pytest.raises(CheckFailed, match="apply log_softmax"):
        ch06.test_kl_by_position(lambda tuned, base, mask: (tuned.softmax(-1) * (tuned - base)).sum(-1) * mask)
    with pytest.raises(CheckFailed, match="lacks position"):
        ch06.test_kl_by_position(lambda tuned, base, mask: ch06.reference_kl_by_position(tuned, base, mask).sum(-1))


def test_first_share_checker():
    ch06.test_first_share(ch06.reference_first_share)
    with pytest.raises(CheckFailed, match="share of sums"):
        ch06.test_first_share(lambda kl, first=3: float((kl[:, :first].sum(-1) / kl.sum(-1)).mean()))
    with pytest.raises(CheckFailed, match="one too many"):
        ch06.test_first_share(lambda kl, first=3: float(kl[:, :first + 1].sum() / kl.sum()))
    with pytest.raises(CheckFailed, match="a ratio, not a share"):
        ch06.test_first_share(lambda kl, first=3: float(kl[:, :first].sum() / kl[:, first:].sum()))


def test_dpo_loss_checker():
    ch06.test_dpo_loss(ch06.reference_dpo_loss)
    with pytest.raises(CheckFailed, match="wrong way round"):
        ch06.test_dpo_loss(lambda pc, pr, rc, rr, beta=0.1: ch06.reference_dpo_loss(pr, pc, rr, rc, beta))
    with pytest.raises(CheckFailed, match="reference model left out"):
        ch06.test_dpo_loss(lambda pc, pr, rc, rr, beta=0.1: -logsigmoid(beta * (pc - pr)).mean())
    with pytest.raises(CheckFailed, match="beta outside"):
        ch06.test_dpo_loss(lambda pc, pr, rc, rr, beta=0.1: -beta * logsigmoid((pc - rc) - (pr - rr)).mean())
    with pytest.raises(CheckFailed, match="minus sign"):
        ch06.test_dpo_loss(lambda pc, pr, rc, rr, beta=0.1: logsigmoid(beta * ((pc - rc) - (pr - rr))).mean())
    with pytest.raises(CheckFailed, match="return the loss alone"):
        ch06.test_dpo_loss(lambda pc, pr, rc, rr, beta=0.1: (ch06.reference_dpo_loss(pc, pr, rc, rr, beta), 0))


def test_rloo_advantages_checker():
    ch06.test_rloo_advantages(ch06.reference_rloo_advantages)
    with pytest.raises(CheckFailed, match="sample itself included"):
        ch06.test_rloo_advantages(lambda r: r - r.mean(1, keepdim=True))
    with pytest.raises(CheckFailed, match="divided by k where k - 1"):
        ch06.test_rloo_advantages(lambda r: r - (r.sum(1, keepdim=True) - r) / r.shape[1])
    with pytest.raises(CheckFailed, match="per prompt"):
        ch06.test_rloo_advantages(lambda r: r - r.mean())


def test_kl_penalised_reward_checker():
    ch06.test_kl_penalised_reward(ch06.reference_kl_penalised_reward)
    with pytest.raises(CheckFailed, match="added, not subtracted"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s + beta * ((p - r) * m).sum(-1))
    with pytest.raises(CheckFailed, match="padding counted"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * (p - r).sum(-1))
    with pytest.raises(CheckFailed, match="mean log-ratio per token"):
        ch06.test_kl_penalised_reward(lambda s, p, r, m, beta: s - beta * ((p - r) * m).sum(-1) / m.sum(-1))


def test_relative_change_checker():
    ch06.test_relative_change(ch06.reference_relative_change)
    with pytest.raises(CheckFailed, match="difference of the norms"):
        ch06.test_relative_change(lambda t, b: float((t.norm() - b.norm()) / b.norm()))
    with pytest.raises(CheckFailed, match="absolute norm"):
        ch06.test_relative_change(lambda t, b: float((t - b).norm()))
    with pytest.raises(CheckFailed, match="divided by"):
        ch06.test_relative_change(lambda t, b: float((t - b).norm() / t.norm()))


def test_effective_rank_checker():
    ch06.test_effective_rank(ch06.reference_effective_rank)

    def from_energy(delta):
        s = torch.linalg.svdvals(delta)
        p = s ** 2 / (s ** 2).sum()
        return float(torch.exp(-(p * p.log()).sum()))

    with pytest.raises(CheckFailed, match="squared singular values"):
        ch06.test_effective_rank(from_energy)
    with pytest.raises(CheckFailed, match="matrix rank"):
        ch06.test_effective_rank(lambda delta: float(torch.linalg.matrix_rank(delta)))

    def entropy_only(delta):
        s = torch.linalg.svdvals(delta)
        p = s / s.sum()
        return float(-(p * p.log()).sum())

    with pytest.raises(CheckFailed, match="not exp"):
        ch06.test_effective_rank(entropy_only)


def test_top_direction_cosine_checker():
    ch06.test_top_direction_cosine(ch06.reference_top_direction_cosine)

    def signed(delta, direction):
        _, _, vh = torch.linalg.svd(delta, full_matrices=False)
        return float(vh[0] @ direction / direction.norm())

    with pytest.raises(CheckFailed, match="absolute value"):
        ch06.test_top_direction_cosine(signed)

    def left(delta, direction):
        u, _, _ = torch.linalg.svd(delta, full_matrices=False)
        if u.shape[0] != direction.shape[0]:
            return ch06.reference_top_direction_cosine(delta, direction)
        return float((u[:, 0] @ direction / direction.norm()).abs())

    with pytest.raises(CheckFailed, match="left singular vector"):
        ch06.test_top_direction_cosine(left)

    def raw_direction(delta, direction):
        _, _, vh = torch.linalg.svd(delta, full_matrices=False)
        return float((vh[0] @ direction).abs())

    with pytest.raises(CheckFailed, match="normalise it"):
        ch06.test_top_direction_cosine(raw_direction)


def test_patch_hook_checker():
    ch06.test_patch_hook(ch06.reference_patch_hook)

    def every_position(source, positions):
        return lambda act, hook: source

    with pytest.raises(CheckFailed, match="every position patched"):
        ch06.test_patch_hook(every_position)
    with pytest.raises(CheckFailed, match="off by one"):
        ch06.test_patch_hook(lambda source, positions: ch06.reference_patch_hook(source, positions + 1))

    def no_return(source, positions):
        def hook(act, hook):
            act = act.clone()
            act[torch.arange(act.shape[0]), positions] = source[torch.arange(act.shape[0]), positions]
        return hook

    with pytest.raises(CheckFailed, match="does the hook return"):
        ch06.test_patch_hook(no_return)
