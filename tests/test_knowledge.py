"""interplab.knowledge on random GPT-2-, Pythia- and Gemma-shaped bridges: tracing, rank-one edits, errors.

The shipped facts model's tracing map and edit metrics are tested in tests/test_facts.py.
"""
import pytest
import torch

from interplab import knowledge
from interplab.zoo import build_random_model

FAMILIES = ("gpt2", "pythia", "gemma")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build_random_model(request.param, n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=1)


def _prompts(n=3, seq=6, seed=0):
    tokens = torch.randint(5, 50, (n, seq), generator=torch.Generator().manual_seed(seed))
    tokens[:, 2], tokens[:, 3] = 3, 4  # the "subject" is the token pair (3, 4) at positions 2-3
    return tokens


def test_batched_tracing_equals_the_per_position_loop(model):
    tokens, answers = _prompts(), torch.tensor([5, 6, 7])
    batched = knowledge.causal_trace(model, tokens, [2, 3], answers, samples=2, seed=3, progress=False)
    chunked = knowledge.causal_trace(model, tokens, [2, 3], answers, samples=2, seed=3, max_batch=7, progress=False)
    loop = knowledge.causal_trace_loop(model, tokens, [2, 3], answers, components=("attn",), samples=2, seed=3)
    assert batched.p_restored.shape == (3, 2, 6, 3) and batched.p_restored.device.type == "cpu"
    torch.testing.assert_close(batched.p_restored[2:], loop.p_restored, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked.p_restored, batched.p_restored, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batched.p_corrupt, loop.p_corrupt)
    effect = batched.effect()
    # restoring the last block's output at the answer position gives the clean run back exactly
    assert effect[0, -1, -1].item() == pytest.approx(1.0, abs=1e-4)
    # nothing before the subject was corrupted, so restoring there changes nothing
    assert effect[:, :, :2].abs().max().item() < 1e-5
    # a different seed draws different noise
    other = knowledge.causal_trace(model, tokens, [2, 3], answers, samples=2, seed=4, progress=False)
    assert not torch.equal(other.p_corrupt, batched.p_corrupt)


def test_batched_tracing_skips_only_restorations_that_cannot_reach_the_answer(model):
    """Prompts of different layouts (subject at different places, right padding): the batched trace, which
    does not run restorations before the subject, after the answer or off-answer in the last layer, equals
    the loop, which runs them all."""
    tokens = torch.randint(5, 50, (3, 7), generator=torch.Generator().manual_seed(4))
    subject = torch.zeros(3, 7, dtype=torch.bool)
    subject[0, 1:3], subject[1, 3:5], subject[2, 2] = True, True, True
    answer_pos = torch.tensor([6, 5, 3])  # prompts 1 and 2 are right-padded
    answers = torch.tensor([5, 6, 7])
    batched = knowledge.causal_trace(model, (tokens, answer_pos), subject, answers, samples=2, seed=1,
                                     max_batch=16, progress=False)
    loop = knowledge.causal_trace_loop(model, (tokens, answer_pos), subject, answers, samples=2, seed=1)
    torch.testing.assert_close(batched.p_restored, loop.p_restored, atol=1e-5, rtol=1e-4)
    # the skipped cells are p_corrupt exactly: before prompt 1's subject, after prompt 2's answer, last layer
    assert torch.equal(batched.p_restored[:, :, :3, 1], batched.p_corrupt[1].expand(3, 2, 3))
    assert torch.equal(batched.p_restored[:, :, 4:, 2], batched.p_corrupt[2].expand(3, 2, 3))
    assert torch.equal(batched.p_restored[:, -1, :6, 0], batched.p_corrupt[0].expand(3, 6))
    # restoring the last block's output at the answer gives the clean probability back
    torch.testing.assert_close(batched.p_restored[0, -1, answer_pos, torch.arange(3)], batched.p_clean,
                               atol=1e-5, rtol=1e-4)


def test_bucketed_tracing_averages_per_prompt_and_checks_shapes(model):
    tokens, answers = _prompts(), torch.tensor([5, 6, 7])
    trace = knowledge.causal_trace(model, tokens, [2, 3], answers, components=("mlp",), samples=1, progress=False)
    buckets = torch.full((3, 6), -1)
    buckets[:, 3] = 0
    buckets[:, 5] = 1
    table = trace.bucketed(buckets)
    torch.testing.assert_close(table[..., 0], trace.effect()[..., 3])
    torch.testing.assert_close(table[..., 1], trace.effect()[..., 5])
    with pytest.raises(ValueError, match="buckets must be"):
        trace.bucketed(buckets[:2])


def test_tracing_rejects_bad_input(model):
    tokens = _prompts()
    with pytest.raises(ValueError, match="one token id per prompt"):
        knowledge.causal_trace(model, tokens, [2, 3], torch.tensor([5, 6]), progress=False)
    with pytest.raises(ValueError, match="components must be"):
        knowledge.causal_trace(model, tokens, [2, 3], torch.tensor([5, 6, 7]), components=("mlp_out",))
    with pytest.raises(ValueError, match="subject_positions must lie"):
        knowledge.causal_trace(model, tokens, [2, 9], torch.tensor([5, 6, 7]))
    with pytest.raises(ValueError, match=r"mask must be \[batch, seq\]"):
        knowledge.causal_trace(model, tokens, torch.ones(3, 5, dtype=torch.bool), torch.tensor([5, 6, 7]))


def test_rome_update_is_rank_one_and_writes_delta_at_the_key(model):
    """W_out k* changes by exactly delta: with one context, the MLP output at the subject moves by delta."""
    tokens = _prompts(n=1, seq=6, seed=2)
    name, weight, transposed = knowledge.mlp_output_weight(model, 0)
    d_mlp = weight.shape[0] if transposed else weight.shape[1]
    assert d_mlp == model.cfg.d_mlp
    covariance = knowledge.mlp_key_covariance(model, 0, torch.randint(0, 50, (16, 8),
                                                                      generator=torch.Generator().manual_seed(0)))
    assert covariance.shape == (d_mlp, d_mlp) and torch.allclose(covariance, covariance.T)
    edit = knowledge.rome_edit(model, tokens, [3, 4], 9, layer=0, covariance=covariance, steps=5)
    assert set(edit.deltas) == {name} and torch.linalg.matrix_rank(edit.deltas[name]).item() == 1
    hook = "blocks.0.hook_mlp_out"
    _, before = model.run_with_cache(tokens, names_filter=lambda n: n == hook)
    with edit.applied(model):
        _, after = model.run_with_cache(tokens, names_filter=lambda n: n == hook)
    change = after[hook][0, 3] - before[hook][0, 3]
    torch.testing.assert_close(change, edit.info["delta"], atol=1e-4, rtol=1e-3)
    assert edit.info["delta"].norm() > 0
    # positions before the subject see other keys: much smaller change
    assert (after[hook][0, :2] - before[hook][0, :2]).norm() < change.norm()
    # leaving the context restores the weights exactly
    assert torch.equal(dict(model.named_parameters())[name], weight)


def test_rome_relaxes_the_kl_weight_only_while_the_edit_does_not_take(model):
    tokens = _prompts(n=2, seed=2)
    covariance = torch.eye(model.cfg.d_mlp)
    with torch.no_grad():
        worst = int(model(tokens[:1])[0, -1].argmin())  # not the top answer after a few tiny steps
    edit = knowledge.rome_edit(model, tokens[:1], [3, 4], worst, layer=0, covariance=covariance,
                               preserve_prompts=tokens[1:], steps=4, lr=1e-4, kl_weight=2.0, relax_every=2)
    assert edit.info["steps"] == 4 and edit.info["kl_weight"] == pytest.approx(0.5)  # halved at steps 2 and 4
    fixed = knowledge.rome_edit(model, tokens[:1], [3, 4], worst, layer=0, covariance=covariance,
                                preserve_prompts=tokens[1:], steps=4, lr=1e-4, kl_weight=2.0, relax_every=None)
    assert fixed.info["kl_weight"] == 2.0
    with pytest.raises(ValueError, match="relax_every must be"):
        knowledge.rome_edit(model, tokens[:1], [3, 4], worst, layer=0, covariance=covariance, relax_every=0)


def test_finetune_edit_touches_only_that_mlp_and_restores_the_model(model):
    tokens = _prompts()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    edit = knowledge.finetune_edit(model, tokens, 9, layer=1, steps=3)
    assert edit.info["steps"] == 3 and all(".1." in n or "layers.1" in n or "h.1" in n for n in edit.deltas)
    assert any(d.abs().sum() > 0 for d in edit.deltas.values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    metrics = knowledge.edit_metrics(model, edit, 9, tokens, other_subject_prompts=_prompts(seed=5))
    assert set(metrics) == {"efficacy", "other_subjects_unchanged"} and 0 <= metrics["efficacy"] <= 1


def test_edits_reject_bad_input(model):
    tokens = _prompts()
    d_mlp = model.cfg.d_mlp
    good = torch.eye(d_mlp)
    with pytest.raises(ValueError, match=r"covariance must be \[d_mlp, d_mlp\]"):
        knowledge.rome_edit(model, tokens, [3, 4], 9, layer=0, covariance=torch.eye(d_mlp + 1))
    with pytest.raises(ValueError, match="NaN"):
        knowledge.rome_edit(model, tokens, [3, 4], 9, layer=0, covariance=good * float("nan"))
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        knowledge.rome_edit(model, tokens, [3, 4], 9, layer=5, covariance=good)
    with pytest.raises(ValueError, match="does not occur in the prompt"):
        knowledge.rome_edit(model, tokens, [4, 3], 9, layer=0, covariance=good)
    with pytest.raises(ValueError, match="is 2 tokens"):
        knowledge.rome_edit(model, tokens, [3, 4], [9, 10], layer=0, covariance=good)
    with pytest.raises(ValueError, match="answer positions must lie"):
        knowledge.encode_prompts(model, (tokens, torch.tensor([1, 2, 6])))
