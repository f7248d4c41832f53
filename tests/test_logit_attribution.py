"""Direct logit attribution, the one recipe both chapters use: every component of the final residual stream,
read through the final norm frozen at its recorded scale, sums to the logit difference the model produced."""
import pytest
import torch

from interplab import circuits
from interplab.worlds import ioi
from interplab.zoo import build_random_model, load_model


def _logit_diff(logits, correct, wrong, position):
    picked = logits[:, position]
    return picked.gather(-1, correct[:, None])[:, 0] - picked.gather(-1, wrong[:, None])[:, 0]


@pytest.fixture(scope="module")
def ioi_model():
    return load_model("ioi-2l")


def test_components_sum_to_the_logit_difference_on_ioi(ioi_model):
    clean = ioi.sample(16, seed=3, held_out=True)
    with torch.no_grad():
        logits, cache = ioi_model.run_with_cache(clean.tokens)
        names, values = circuits.logit_attribution(ioi_model, cache, clean.io[:, None], clean.s[:, None],
                                                   positions=[ioi.POS_END])
    n_layers, n_heads = ioi_model.cfg.n_layers, ioi_model.cfg.n_heads
    assert names[0] == "embed" and names[-1] == "final_bias" and "a1.3" in names and "m1" in names
    assert len(names) == 1 + n_layers * (n_heads + 2) + 1 and values.shape == (len(names), 16, 1)
    expected = _logit_diff(logits, clean.io, clean.s, ioi.POS_END)
    torch.testing.assert_close(values.sum(0)[:, 0], expected, atol=1e-3, rtol=1e-4)
    assert expected.mean() > 5  # the model solves the task, so the test is not 0 == 0


def test_head_dla_is_the_same_recipe_as_chapter_01(ioi_model):
    """head_direct_logit_attribution keeps its results: LayerNorm's centring, scale and weight all applied."""
    tokens = ioi.sample(4, seed=5, held_out=True).tokens
    with torch.no_grad():
        _, cache = ioi_model.run_with_cache(tokens)
        dla = circuits.head_direct_logit_attribution(ioi_model, cache, tokens)
        out = circuits.head_outputs(ioi_model, cache)[..., :-1, :]
        out = (out - out.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][:, :-1] * ioi_model.ln_final.weight
        by_hand = torch.einsum("lhbpm,mbp->lhbp", out, ioi_model.W_U[:, tokens[:, 1:]])
    torch.testing.assert_close(dla, by_hand, atol=1e-4, rtol=1e-4)


def test_dividing_by_the_scale_alone_is_not_enough(ioi_model):
    """What chapter 02 used to do (scale only, no centring or weight) misses the logit difference."""
    clean = ioi.sample(16, seed=3, held_out=True)
    with torch.no_grad():
        logits, cache = ioi_model.run_with_cache(clean.tokens)
        names, parts = circuits.residual_components(ioi_model, cache)
        scale_only = parts[:, :, ioi.POS_END] / cache["ln_final.hook_scale"][:, ioi.POS_END]
        direction = ioi_model.W_U[:, clean.io] - ioi_model.W_U[:, clean.s]
        naive = torch.einsum("cbm,mb->b", scale_only, direction).mean()
    exact = _logit_diff(logits, clean.io, clean.s, ioi.POS_END).mean()
    assert abs(naive - exact) > 0.1 * exact


@pytest.mark.parametrize("family", ["gpt2", "pythia", "gemma"])
def test_components_sum_to_the_logit_difference_on_every_family(family):
    """GPT-2 (LayerNorm, b_O), Pythia (parallel blocks) and Gemma (RMSNorm with 1 + weight, no b_O). The final
    norm's weight and bias are randomised so that dropping either would break the sum."""
    model = build_random_model(family, n_layers=2, d_model=64, n_heads=4, d_vocab=100, n_ctx=32, seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.ln_final.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    tokens = torch.randint(0, 100, (3, 9), generator=generator)
    correct = torch.randint(0, 100, (3, 9), generator=generator)
    wrong = torch.randint(0, 100, (3, 9), generator=generator)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        names, values = circuits.logit_attribution(model, cache, correct, wrong)
        expected = logits.gather(-1, correct[..., None])[..., 0] - logits.gather(-1, wrong[..., None])[..., 0]
        torch.testing.assert_close(values.sum(0), expected, atol=1e-3, rtol=1e-4)
        # one answer instead of a difference: the components sum to the logit itself
        _, single = circuits.logit_attribution(model, cache, correct[:, 2:4], positions=slice(2, 4))
        torch.testing.assert_close(single.sum(0), logits[:, 2:4].gather(-1, correct[:, 2:4, None])[..., 0],
                                   atol=1e-3, rtol=1e-4)
        heads = circuits.head_direct_logit_attribution(model, cache, tokens)
    assert heads.shape == (2, 4, 3, 8) and heads.abs().sum() > 0
    components, _ = circuits.residual_components(model, cache)
    assert components == names[:-1]
    if family == "gemma":  # no attention output bias: its component is zero
        assert values[names.index("a0.b_O")].abs().max() < 1e-5


def test_logit_attribution_errors_say_how_to_fix(ioi_model):
    tokens = ioi.sample(2, seed=0, held_out=True).tokens
    with torch.no_grad():
        _, cache = ioi_model.run_with_cache(tokens)
        _, partial = ioi_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
    with pytest.raises(ValueError, match=r"correct must be \[batch, pos\]"):
        circuits.logit_attribution(ioi_model, cache, tokens[:, :3], positions=[ioi.POS_END])
    with pytest.raises(ValueError, match="without a names_filter"):
        circuits.logit_attribution(ioi_model, partial, tokens[:, :1], positions=[ioi.POS_END])
