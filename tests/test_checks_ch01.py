"""Each chapter-01 checker accepts right answers, rejects wrong ones, and names the mistake it saw.

Checkers also run on a random model and tensors drawn at check time, so answers replayed from the
shipped model (the "cheats" below) fail.
"""
import pytest
import torch

from interplab import circuits
from interplab.checks import CheckFailed
from interplab.checks import ch01
from interplab.checks._core import shipped_model

SHIPPED = shipped_model(ch01.MODEL)


def test_previous_token_score_checker():
    ch01.test_previous_token_score(ch01.reference_previous_token_score)
    with pytest.raises(CheckFailed, match="main diagonal"):
        ch01.test_previous_token_score(lambda p: p.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)))
    with pytest.raises(CheckFailed, match="shape.*\n.*extra axis of size"):  # forgot to average over the batch
        ch01.test_previous_token_score(lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1))
    with pytest.raises(CheckFailed, match="sum over the queries"):
        ch01.test_previous_token_score(lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1).mean(0))


def test_detectors_reject_scores_replayed_from_the_shipped_model():
    with torch.no_grad():
        _, cache = SHIPPED.run_with_cache(ch01._probe(21, 6))
    table = circuits.previous_token_scores(cache)
    with pytest.raises(CheckFailed):
        ch01.test_previous_token_score(lambda p: table[0] if p.shape[1] == 4 else table[0].repeat(2)[: p.shape[1]])

    def shipped_heads_only(p, n):  # hard-codes the shipped model's 4 heads
        return ch01.reference_induction_score(p[:, :4], n)

    with pytest.raises(CheckFailed, match="random"):
        ch01.test_induction_score(shipped_heads_only)


def test_duplicate_token_score_checker():
    ch01.test_duplicate_token_score(ch01.reference_duplicate_token_score)
    with pytest.raises(CheckFailed, match="last token of the first A, kept"):  # keeps query half_len
        ch01.test_duplicate_token_score(lambda p, n: p.diagonal(offset=-n, dim1=-2, dim2=-1).mean(dim=(0, 2)))
    with pytest.raises(CheckFailed, match="induction offset"):
        ch01.test_duplicate_token_score(ch01.reference_induction_score)


def test_induction_score_checker():
    ch01.test_induction_score(ch01.reference_induction_score)
    with pytest.raises(CheckFailed, match="duplicate-token offset"):
        ch01.test_induction_score(ch01.reference_duplicate_token_score)
    with pytest.raises(CheckFailed, match="only one leading query dropped"):
        ch01.test_induction_score(lambda p, n: p.diagonal(offset=-(n - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2)))


def test_head_ablation_hook_checker():
    ch01.test_head_ablation_hook(ch01.reference_head_ablation_hook)

    def always_zero(head, mean_z=None):  # ignores mean_z
        return ch01.reference_head_ablation_hook(head)

    with pytest.raises(CheckFailed, match="mean-ablating.*\n(.*\n)*.*mean_z was ignored"):
        ch01.test_head_ablation_hook(always_zero)

    def wrong_axis(head, mean_z=None):  # indexes the position axis instead of the head axis
        def hook(z, hook):
            z = z.clone()
            z[:, head] = 0.0
            return z
        return hook

    with pytest.raises(CheckFailed, match="zero-ablating(.*\n)*.*position `head` overwritten"):
        ch01.test_head_ablation_hook(wrong_axis)

    def unsliced_mean(head, mean_z=None):  # mean_z over longer sequences is not cut to z's length
        def hook(z, hook):
            z = z.clone()
            z[:, :, head] = 0.0 if mean_z is None else mean_z[:, head]
            return z
        return hook

    with pytest.raises(CheckFailed, match="raised RuntimeError"):
        ch01.test_head_ablation_hook(unsliced_mean)


def test_repeated_half_loss_checker():
    ch01.test_repeated_half_loss(ch01.reference_repeated_half_loss)

    def includes_first_repeat(logits, tokens, half_len):  # also scores the unpredictable first repeated token
        return circuits.per_token_loss(logits, tokens)[:, half_len:2 * half_len].mean().item()

    with pytest.raises(CheckFailed, match="including position half_len"):
        ch01.test_repeated_half_loss(includes_first_repeat)

    def no_shift(logits, tokens, half_len):  # predicts the current token, not the next
        log_probs = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
        return -log_probs[:, half_len + 1:2 * half_len].mean().item()

    with pytest.raises(CheckFailed, match="no shift by one"):
        ch01.test_repeated_half_loss(no_shift)

    with pytest.raises(CheckFailed, match="flipped sign"):
        ch01.test_repeated_half_loss(lambda l, t, n: -circuits.repeated_half_loss(l, t, n))


def test_head_logit_attribution_checker():
    ch01.test_head_logit_attribution(ch01.reference_head_logit_attribution)
    variant = ch01._attribution_variant
    with pytest.raises(CheckFailed, match="without ln_final.weight"):
        ch01.test_head_logit_attribution(lambda m, c, t: variant(m, c, t, weight=False))
    with pytest.raises(CheckFailed, match="without centring"):
        ch01.test_head_logit_attribution(lambda m, c, t: variant(m, c, t, centre=False))
    with pytest.raises(CheckFailed, match="slice it to 0 ... seq-2"):
        ch01.test_head_logit_attribution(lambda m, c, t: variant(m, c, t, scale_shift=1))
    with pytest.raises(CheckFailed, match="current token"):
        ch01.test_head_logit_attribution(lambda m, c, t: variant(m, c, t, unembed="current"))

    def shipped_layers_only(model, cache, tokens):  # loops over the shipped model's 2 layers
        return torch.stack([variant(model, cache, tokens)[layer] for layer in range(2)])

    with pytest.raises(CheckFailed, match="random.*wrong shape"):
        ch01.test_head_logit_attribution(shipped_layers_only)


def test_full_ov_circuit_checker():
    ch01.test_full_ov_circuit(ch01.reference_full_ov_circuit)
    from transformer_lens import FactoredMatrix

    def qk_instead(model, layer, head):
        return FactoredMatrix(model.W_E, model.W_Q[layer, head]) @ FactoredMatrix(model.W_K[layer, head].T, model.W_U)

    with pytest.raises(CheckFailed, match="head 0.0(.*\n)*.*QK circuit"):
        ch01.test_full_ov_circuit(qk_instead)

    def transposed(model, layer, head):
        return ch01.reference_full_ov_circuit(model, layer, head).T

    with pytest.raises(CheckFailed, match="transposed"):
        ch01.test_full_ov_circuit(transposed)

    with pytest.raises(CheckFailed, match="return a FactoredMatrix"):
        ch01.test_full_ov_circuit(lambda model, layer, head: ch01.reference_full_ov_circuit(model, layer, head).AB)

    with pytest.raises(CheckFailed, match="random"):  # replayed from the shipped model
        ch01.test_full_ov_circuit(lambda model, layer, head: ch01.reference_full_ov_circuit(SHIPPED, layer % 2, head % 4))


def test_positional_pattern_checker():
    ch01.test_positional_pattern(ch01.reference_positional_pattern)
    variant = ch01._positional_variant
    with pytest.raises(CheckFailed, match="without the layer's ln1"):
        ch01.test_positional_pattern(lambda m, l, h: variant(m, l, h, ln=False))
    with pytest.raises(CheckFailed, match="sqrt"):
        ch01.test_positional_pattern(lambda m, l, h: variant(m, l, h, scale=False))
    with pytest.raises(CheckFailed, match="head 1.0(.*\n)*.*pattern of head 0.0: is the layer index used"):
        ch01.test_positional_pattern(lambda m, l, h: ch01.reference_positional_pattern(m, 0, h))


def test_composition_score_checker():
    ch01.test_composition_score(ch01.reference_composition_score)
    with pytest.raises(CheckFailed, match="not divided by"):
        ch01.test_composition_score(lambda left, right: (left @ right).norm().item())
    with pytest.raises(CheckFailed, match="squared"):
        ch01.test_composition_score(lambda l, r: ((l @ r).norm() / (l.norm() * r.norm())).item() ** 2)


def test_name_circuit_checker():
    ch01.test_name_circuit(ch01.reference_name_circuit)

    def reversed_order(scores, threshold=0.6):  # any order is right
        return {role: list(reversed(ch01.reference_name_circuit(scores, threshold)[role])) for role in scores}

    ch01.test_name_circuit(reversed_order)
    with pytest.raises(CheckFailed, match="exactly at the threshold counts"):
        ch01.test_name_circuit(lambda scores, threshold=0.6: {
            role: [tuple(h) for h in (values > threshold).nonzero().tolist()] for role, values in scores.items()})
    with pytest.raises(CheckFailed, match="same keys"):  # drops roles with no head
        ch01.test_name_circuit(lambda scores, threshold=0.6: {
            role: heads for role, heads in ch01.reference_name_circuit(scores, threshold).items() if heads})
    with pytest.raises(CheckFailed, match="missing"):  # ignores the threshold argument
        ch01.test_name_circuit(lambda scores, threshold=0.6: ch01.reference_name_circuit(scores, 0.6))


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


def test_chapters_use_the_learners_code_not_the_references(repo_root):
    """Cells after an exercise run the learner's function; nothing uses a library answer before it is asked for."""
    for chapter in ("00_tour.py", "01_circuits.py"):
        source = (repo_root / "solutions" / chapter).read_text()
        assert "checks.reference_" not in source, f"{chapter} calls a checker's reference answer"
    source = (repo_root / "solutions" / "01_circuits.py").read_text()
    exercise = source.index("def repeated_half_loss(")
    assert "circuits.repeated_half_loss" not in source[:exercise], "the library's loss is used before exercise 5"
    assert "circuits.repeated_half_loss" not in source, "after exercise 5 the chapter runs on the learner's loss"
