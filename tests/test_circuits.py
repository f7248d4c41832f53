"""The circuit-analysis library: each function on the shipped model, on a random GPT-2, and the ground truth."""
import pytest
import torch

from interplab import circuits, zoo
from interplab.worlds import induction
from interplab.zoo import induction as recipe

HALF_LEN = 10


@pytest.fixture(scope="module")
def probe():
    return induction.repeated_tokens(8, half_len=HALF_LEN, seed=5)


@pytest.fixture(scope="module")
def gpt2():
    return zoo.build_random_gpt2(n_layers=2, d_model=64, n_heads=4, d_vocab=100, n_ctx=32)


def test_head_types_find_the_documented_heads(induction_model, probe):
    with torch.no_grad():
        _, cache = induction_model.run_with_cache(probe)
    types = circuits.head_types(cache, HALF_LEN)
    assert types["previous_token_heads"] == [(0, 2)]
    assert types["induction_heads"] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert types["duplicate_token_heads"] == []


def test_repeated_half_loss_is_low_only_on_the_second_half(induction_model, probe):
    with torch.no_grad():
        logits = induction_model(probe)
    losses = circuits.per_token_loss(logits, probe)
    assert losses.shape == (8, 2 * HALF_LEN)
    assert circuits.repeated_half_loss(logits, probe, HALF_LEN) < 0.1 < losses[:, :HALF_LEN].mean().item()
    mask = circuits.repeated_half_mask(probe, HALF_LEN)
    assert mask.sum().item() == 8 * (HALF_LEN - 1)
    assert circuits.next_token_accuracy(logits, probe, mask) > 0.95


def test_ablation_hooks_zero_and_mean(induction_model, probe):
    means = circuits.mean_head_z(induction_model, probe)
    assert means.shape == (2, probe.shape[1], 4, 16)
    seen = []

    def record(z, hook):
        seen.append(z.clone())

    for mode in ("zero", "mean"):
        hooks = circuits.ablation_hooks(induction_model, [(0, 2), (1, 1), (1, 3)], mode, means)
        assert [name for name, _ in hooks] == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
        with torch.no_grad():
            induction_model.run_with_hooks(probe, fwd_hooks=hooks + [("blocks.1.attn.hook_z", record)])
        z = seen.pop()
        expected = torch.zeros_like(z[:, :, 1]) if mode == "zero" else means[1, :, 1].expand_as(z[:, :, 1])
        assert torch.allclose(z[:, :, 1], expected) and torch.allclose(z[:, :, [1, 3]].std(0).sum(), torch.tensor(0.0))
        assert z[:, :, 0].std(0).sum() > 0, "heads not named are left alone"
    with pytest.raises(ValueError, match="means"):
        circuits.ablation_hooks(induction_model, [(0, 0)], "mean")
    with pytest.raises(ValueError, match="mode"):
        circuits.ablation_hooks(induction_model, [(0, 0)], "resample")


def test_ablating_the_previous_token_head_breaks_induction(induction_model, probe):
    losses = circuits.head_ablation_losses(induction_model, probe, HALF_LEN, mode="mean")
    assert losses.shape == (2, 4)
    assert losses.argmax().item() == 2 and losses[0, 2] > 1.0
    assert circuits.ablated_repeated_half_loss(induction_model, probe, HALF_LEN, [(1, h) for h in range(4)]) > 1.0


def test_direct_logit_attribution_sums_to_the_logits(induction_model, gpt2, probe):
    """Head terms + everything else (embeddings, biases) rebuild the logit of the true next token."""
    for model, tokens in ((induction_model, probe), (gpt2, torch.randint(0, 100, (2, 21)))):
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens)
            dla = circuits.head_direct_logit_attribution(model, cache, tokens)
        n = model.cfg.n_layers
        assert dla.shape == (n, model.cfg.n_heads, tokens.shape[0], tokens.shape[1] - 1)
        resid = cache[f"blocks.{n - 1}.hook_resid_post"]
        heads = circuits.head_outputs(model, cache).sum(dim=(0, 1))
        rest = model.ln_final(resid) - model.ln_final.weight * (heads - heads.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"]
        rest_logit = (rest @ model.W_U + model.b_U)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        true_logit = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        assert torch.allclose(dla.sum(dim=(0, 1)) + rest_logit, true_logit, atol=1e-3)
    assert dla.abs().sum() > 0


def test_induction_heads_dominate_the_direct_logit(induction_model, probe):
    with torch.no_grad():
        _, cache = induction_model.run_with_cache(probe)
        dla = circuits.head_direct_logit_attribution(induction_model, cache, probe)[..., HALF_LEN + 1:].mean(dim=(-2, -1))
    assert dla[1].min() > dla[0].abs().max()


def test_ov_and_qk_readings(induction_model):
    words = torch.arange(induction.FIRST_WORD_ID, induction.D_VOCAB)
    with torch.no_grad():
        full = circuits.full_ov_circuit(induction_model, 1, 1)
        assert full.shape == (64, 64)
        dense = induction_model.W_E @ induction_model.W_V[1, 1] @ induction_model.W_O[1, 1] @ induction_model.W_U
        assert torch.allclose(full.AB, dense, atol=1e-4)
        assert circuits.copying_accuracy(full, words) > 0.9
        assert circuits.copying_accuracy(full.AB, words, chunk=7) == circuits.copying_accuracy(full, words)
        assert circuits.copying_accuracy(circuits.full_ov_circuit(induction_model, 0, 0), words) < 0.3
        assert circuits.copying_accuracy(torch.eye(5)) == 1.0 and circuits.copying_accuracy(-torch.eye(5) + 0.5) == 0.0
        pattern = circuits.positional_attention_pattern(induction_model, 0, 2)
    assert pattern.shape == (41, 41) and torch.allclose(pattern.sum(-1), torch.ones(41))
    assert torch.triu(pattern, 1).abs().max() == 0
    q = torch.arange(1, 41)
    assert pattern[q, q - 1].mean() > 0.8


def test_composition(induction_model):
    from transformer_lens import FactoredMatrix

    eye = FactoredMatrix(torch.eye(4), torch.eye(4))
    assert circuits.composition_score(eye, eye) == pytest.approx(0.5)  # ||I|| / ||I||^2 = 1 / 2
    zero_into = FactoredMatrix(torch.eye(4)[:, :2], torch.eye(4)[:2])
    disjoint = FactoredMatrix(torch.eye(4)[:, 2:], torch.eye(4)[2:])
    assert circuits.composition_score(zero_into, disjoint) == pytest.approx(0.0)
    k = circuits.composition_scores(induction_model, "K")
    assert k.shape == (2, 4, 2, 4) and k[1].abs().sum() == 0 and k[:, :, 0].abs().sum() == 0
    manual = circuits.composition_score(induction_model.OV[0, 2], induction_model.QK.T[1, 0])
    assert k[0, 2, 1, 0].item() == pytest.approx(manual, abs=1e-4)
    baseline = circuits.composition_baseline(64, 16)
    assert 0.1 < baseline < 0.15
    assert k[0, :, 1].argmax(0).tolist() == [2, 2, 2, 2], "every induction head reads the previous-token head most"
    assert k[0, 2, 1].min() > baseline


def test_every_function_runs_on_a_random_gpt2(gpt2):
    """The real-model path (boot_transformers, GPT-2 architecture, with MLPs), with no download."""
    tokens = torch.randint(0, 100, (3, 1 + 2 * 8))
    with torch.no_grad():
        logits, cache = gpt2.run_with_cache(tokens)
        types = circuits.head_types(cache, 8)
        assert set(types) == {"previous_token_heads", "duplicate_token_heads", "induction_heads"}
        assert circuits.duplicate_token_scores(cache, 8).shape == (2, 4)
        means = circuits.mean_head_z(gpt2, tokens)
        assert means.shape == (2, 17, 4, 16)
        ablated = circuits.ablated_repeated_half_loss(gpt2, tokens, 8, [(0, 1), (1, 3)], "mean", means)
        assert ablated != circuits.repeated_half_loss(logits, tokens, 8)
        assert circuits.head_ablation_losses(gpt2, tokens, 8).shape == (2, 4)
        assert circuits.head_direct_logit_attribution(gpt2, cache, tokens).shape == (2, 4, 3, 16)
        assert 0.0 <= circuits.copying_accuracy(circuits.full_ov_circuit(gpt2, 1, 0)) <= 1.0
        assert circuits.positional_attention_pattern(gpt2, 0, 1).shape == (32, 32)
        assert circuits.composition_scores(gpt2, "V").shape == (2, 4, 2, 4)


@pytest.mark.parametrize("family", ["pythia", "gemma"])
def test_every_function_runs_on_other_families(family):
    """Pythia (rotary, parallel attention and MLP) and Gemma (RMSNorm, each key/value head shared by two heads)."""
    model = zoo.build_random_model(family, n_layers=2, d_model=64, n_heads=4, d_vocab=100, n_ctx=32)
    tokens = torch.randint(0, 100, (3, 1 + 2 * 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        assert circuits.induction_scores(cache, 8).shape == (2, 4)
        means = circuits.mean_head_z(model, tokens)
        ablated = circuits.ablated_repeated_half_loss(model, tokens, 8, [(0, 1), (1, 3)], "mean", means)
        assert ablated != circuits.repeated_half_loss(logits, tokens, 8)
        dla = circuits.head_direct_logit_attribution(model, cache, tokens)
        assert dla.shape == (2, 4, 3, 16) and torch.isfinite(dla).all()
        ov = circuits.full_ov_circuit(model, 1, 3)
        value_head = 3 // (4 // model.W_V.shape[1])  # Gemma: heads 2 and 3 share key/value head 1
        assert model.W_V.shape[1] == (2 if family == "gemma" else 4)
        by_hand = model.W_E @ model.W_V[1, value_head] @ model.W_O[1, 3] @ model.W_U
        torch.testing.assert_close(ov.AB, by_hand, atol=1e-4, rtol=1e-3)
        assert circuits.composition_scores(model, "K").shape == (2, 4, 2, 4)
        with pytest.raises(ValueError, match="'rotary' positions"):
            circuits.positional_attention_pattern(model, 0, 1)


def test_shipped_ground_truth_clears_its_thresholds(induction_model):
    """The circuit on the card, re-derived from the shipped weights, with the effects that define it."""
    card = zoo.model_card("attn2-induction")
    fresh = recipe.ground_truth(induction_model)["ground_truth"]
    limits = fresh["thresholds"]
    assert fresh["circuit"] == card["ground_truth"]["circuit"]
    assert fresh["circuit"] == {"previous_token_heads": [[0, 2]], "duplicate_token_heads": [],
                                "induction_heads": [[1, 0], [1, 1], [1, 2], [1, 3]]}
    assert fresh["necessary_heads"] == [[0, 2]]
    for layer in range(2):
        assert fresh["layer_ablated_loss"][layer] - fresh["clean_loss"] >= limits["layer_loss_increase"]
    members = [tuple(h) for heads in fresh["circuit"].values() for h in heads]
    for layer in range(2):
        for head in range(4):
            if (layer, head) in members:
                assert fresh["recovery"][layer][head] >= limits["recovery"]
            else:
                assert fresh["recovery"][layer][head] < limits["recovery"]
    assert fresh["single_head_ablated_loss"][0][2] - fresh["clean_loss"] >= limits["necessary_loss_increase"]
    for key in ("clean_loss", "layer_ablated_loss", "recovery"):
        assert torch.allclose(torch.tensor(fresh[key]), torch.tensor(card["ground_truth"][key]), atol=2e-3), key


def test_card_markdown_renders_the_ground_truth():
    card = zoo.model_card("attn2-induction")
    text = recipe.card_markdown(card)
    assert "induction heads: **1.0, 1.1, 1.2, 1.3**" in text and "previous-token heads: **0.2**" in text
    assert "Ground truth" not in recipe.card_markdown({k: v for k, v in card.items() if k != "ground_truth"})


def test_card_cli_rewrites_the_card_not_the_weights(tmp_path, monkeypatch):
    """`python -m interplab.zoo card NAME` on a copy of the shipped folder."""
    import shutil

    from interplab.zoo import __main__ as cli

    copy = tmp_path / "attn2-induction"
    shutil.copytree(zoo.model_dir("attn2-induction"), copy)
    weights = (copy / "model.safetensors").read_bytes()
    card = (copy / "card.json").read_text()
    (copy / "card.json").write_text(card.replace('"repeat_accuracy": 0.9952', '"repeat_accuracy": 0.1'))
    monkeypatch.setattr(zoo, "model_dir", lambda name: copy)  # the CLI looks it up in interplab.zoo at call time
    assert cli.main(["card", "attn2-induction", "--threads", "1"]) == 0
    assert (copy / "model.safetensors").read_bytes() == weights
    from interplab.zoo.checkpoint import read_card

    rewritten = read_card(copy)
    assert rewritten["metrics"]["repeat_accuracy"] == pytest.approx(0.9952, abs=1e-3)
    assert rewritten["ground_truth"]["circuit"]["previous_token_heads"] == [[0, 2]]
    assert "Ground truth" in (copy / "MODEL_CARD.md").read_text()


def test_head_scores_say_when_the_cache_has_no_patterns(induction_model):
    _, cache = induction_model.run_with_cache(torch.tensor([[0, 5, 6, 7]]),
                                              names_filter=lambda name: name.endswith("hook_resid_post"))
    with pytest.raises(ValueError, match="no attention patterns"):
        circuits.previous_token_scores(cache)
