"""Each chapter-01 checker accepts the reference and rejects a plausible mistake."""
import pytest
import torch

from interplab import circuits
from interplab.checks import CheckFailed
from interplab.checks import ch01


def test_previous_token_score_checker():
    ch01.test_previous_token_score(ch01.reference_previous_token_score)
    with pytest.raises(CheckFailed, match="values differ"):  # the main diagonal: attention to itself
        ch01.test_previous_token_score(lambda p: p.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)))
    with pytest.raises(CheckFailed, match="shape"):  # forgot to average over the batch
        ch01.test_previous_token_score(lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1))


def test_duplicate_token_score_checker():
    ch01.test_duplicate_token_score(ch01.reference_duplicate_token_score)
    with pytest.raises(CheckFailed, match="values differ"):  # keeps query half_len (not a duplicate)
        ch01.test_duplicate_token_score(lambda p, n: p.diagonal(offset=-n, dim1=-2, dim2=-1).mean(dim=(0, 2)))


def test_induction_score_checker():
    ch01.test_induction_score(ch01.reference_induction_score)
    with pytest.raises(CheckFailed, match="values differ"):  # the duplicate-token offset instead of half_len - 1
        ch01.test_induction_score(ch01.reference_duplicate_token_score)
    with pytest.raises(CheckFailed, match="values differ"):  # drops only one leading query
        ch01.test_induction_score(lambda p, n: p.diagonal(offset=-(n - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2)))


def test_head_ablation_hook_checker():
    ch01.test_head_ablation_hook(ch01.reference_head_ablation_hook)

    def always_zero(head, mean_z=None):  # ignores mean_z
        return ch01.reference_head_ablation_hook(head)

    with pytest.raises(CheckFailed, match="mean-ablated"):
        ch01.test_head_ablation_hook(always_zero)

    def wrong_axis(head, mean_z=None):  # indexes the position axis instead of the head axis
        def hook(z, hook):
            z = z.clone()
            z[:, head] = 0.0
            return z
        return hook

    with pytest.raises(CheckFailed, match="zero-ablated"):
        ch01.test_head_ablation_hook(wrong_axis)


def test_repeated_half_loss_checker():
    ch01.test_repeated_half_loss(ch01.reference_repeated_half_loss)

    def includes_first_repeat(logits, tokens, half_len):  # also scores the unpredictable first repeated token
        losses = circuits.per_token_loss(logits, tokens)
        return losses[:, half_len:2 * half_len].mean().item()

    with pytest.raises(CheckFailed, match="expected"):
        ch01.test_repeated_half_loss(includes_first_repeat)

    def no_shift(logits, tokens, half_len):  # predicts the current token, not the next
        log_probs = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
        return -log_probs[:, half_len + 1:2 * half_len].mean().item()

    with pytest.raises(CheckFailed, match="expected"):
        ch01.test_repeated_half_loss(no_shift)


def test_head_logit_attribution_checker():
    ch01.test_head_logit_attribution(ch01.reference_head_logit_attribution)

    def no_layer_norm(model, cache, tokens):  # forgets the final LayerNorm
        out = circuits.head_outputs(model, cache)[..., :-1, :]
        return torch.einsum("lhbpm,mbp->lhbp", out, model.W_U[:, tokens[:, 1:]])

    with pytest.raises(CheckFailed, match="values differ"):
        ch01.test_head_logit_attribution(no_layer_norm)


def test_full_ov_circuit_checker():
    ch01.test_full_ov_circuit(ch01.reference_full_ov_circuit)
    from transformer_lens import FactoredMatrix

    def qk_instead(model, layer, head):
        return FactoredMatrix(model.W_E, model.W_Q[layer, head]) @ FactoredMatrix(model.W_K[layer, head].T, model.W_U)

    with pytest.raises(CheckFailed, match="head 0.0"):
        ch01.test_full_ov_circuit(qk_instead)


def test_positional_pattern_checker():
    ch01.test_positional_pattern(ch01.reference_positional_pattern)

    def without_ln(model, layer, head):  # skips ln1: the right shape, the wrong pattern
        x = model.W_pos + model.W_E.mean(0)
        scores = (x @ model.QK[layer, head] @ x.T).AB / model.cfg.d_head ** 0.5
        n = scores.shape[-1]
        return scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf")).softmax(-1)

    with pytest.raises(CheckFailed, match="values differ"):
        ch01.test_positional_pattern(without_ln)


def test_composition_score_checker():
    ch01.test_composition_score(ch01.reference_composition_score)
    with pytest.raises(CheckFailed, match="expected"):  # not normalised
        ch01.test_composition_score(lambda left, right: (left @ right).norm().item())


def test_check_circuit():
    truth = ch01.ground_truth_circuit()
    ch01.check_circuit(previous_token_heads=sorted(truth["previous_token_heads"]),
                       induction_heads=sorted(truth["induction_heads"]),
                       duplicate_token_heads=sorted(truth["duplicate_token_heads"]))
    ch01.check_circuit(previous_token_heads=["0.2"], induction_heads=["1.0", "1.1", "1.2", "1.3"])
    with pytest.raises(CheckFailed, match="missing: 1 head"):  # one induction head forgotten
        ch01.check_circuit(previous_token_heads=[(0, 2)], induction_heads=[(1, 0), (1, 1), (1, 2)])
    with pytest.raises(CheckFailed, match="not in the circuit in this role: 0.1"):
        ch01.check_circuit(previous_token_heads=[(0, 1)], induction_heads=[(1, 0), (1, 1), (1, 2), (1, 3)])
    with pytest.raises(CheckFailed, match="duplicate-token"):
        ch01.check_circuit(previous_token_heads=[(0, 2)], induction_heads=[(1, 0), (1, 1), (1, 2), (1, 3)],
                           duplicate_token_heads=[(0, 0)])
    with pytest.raises(CheckFailed, match="name each head"):
        ch01.check_circuit(previous_token_heads=[2], induction_heads=[])
