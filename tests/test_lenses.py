"""Logit lens and tuned lens on the shipped IOI model and on random GPT-2, Pythia and Gemma bridges."""
from __future__ import annotations

import pytest
import torch

from interplab.lenses import (TunedLens, decode_residual, lens_hook_names, lens_kl_by_layer, lens_layer_labels,
                              logit_lens, residual_stack, train_tuned_lens)
from interplab.worlds import ioi
from interplab.zoo import build_random_model, load_model

FAMILIES = ("gpt2", "pythia", "gemma")


@pytest.fixture(scope="module")
def ioi_model():
    return load_model("ioi-2l")


@pytest.fixture(scope="module", params=FAMILIES)
def random_model(request):
    return build_random_model(request.param, n_layers=3)


@pytest.fixture(scope="module")
def ioi_lens(ioi_model):
    """A tuned lens trained on training-pair prompts (about 2 s)."""
    return train_tuned_lens(ioi_model, ioi.sample(512, seed=1).with_answer(), steps=200, seed=0, model_name="ioi-2l",
                            progress=False)


def _random_tokens(model, batch: int = 3, seq: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _check_last_layer_is_the_model(model, tokens):
    with torch.no_grad():
        logits = model(tokens)
    lens = logit_lens(model, tokens)
    assert lens.shape == (model.cfg.n_layers + 1, *logits.shape)
    assert lens.device.type == "cpu"
    torch.testing.assert_close(lens[-1], logits.cpu(), atol=1e-5, rtol=0)
    # a lower layer is a different reading, so the test above can fail
    assert (lens[0] - logits.cpu()).abs().max() > 1e-2


def test_logit_lens_last_layer_is_the_model_random(random_model):
    _check_last_layer_is_the_model(random_model, _random_tokens(random_model))


def test_logit_lens_last_layer_is_the_model_ioi(ioi_model):
    _check_last_layer_is_the_model(ioi_model, ioi.sample(4, seed=3).tokens)


def test_logit_lens_reads_each_layer_through_ln_final_and_unembed(random_model):
    tokens = _random_tokens(random_model)
    _, cache = random_model.run_with_cache(tokens)
    lens = logit_lens(random_model, cache)
    for i, name in enumerate(lens_hook_names(random_model)):
        expected = random_model.unembed(random_model.ln_final(cache[name]))
        torch.testing.assert_close(lens[i], expected.detach().cpu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit_lens(random_model, tokens), lens)


@pytest.mark.parametrize("family", ["gpt2", "gemma"])
def test_logit_lens_is_unchanged_by_folded_norms(family):
    """Compatibility mode folds ln_final's weights into the unembedding and centres the writing weights;
    the lens reads the same distributions because it calls the model's own ln_final and unembed."""
    plain, folded = build_random_model(family, n_layers=3), build_random_model(family, n_layers=3)
    folded.enable_compatibility_mode(disable_warnings=True)
    tokens = _random_tokens(plain)
    _check_last_layer_is_the_model(folded, tokens)
    torch.testing.assert_close(logit_lens(folded, tokens).softmax(-1), logit_lens(plain, tokens).softmax(-1),
                               atol=1e-6, rtol=1e-4)


def test_positions_shared_and_per_prompt(ioi_model):
    batch = ioi.sample(4, seed=3)
    full = logit_lens(ioi_model, batch.tokens)
    torch.testing.assert_close(logit_lens(ioi_model, batch.tokens, positions=-1), full[:, :, -1:])
    torch.testing.assert_close(logit_lens(ioi_model, batch.tokens, positions=[2, 4]), full[:, :, [2, 4]])
    per_prompt = torch.stack([batch.pos_io, batch.pos_end], dim=1)
    picked = logit_lens(ioi_model, batch.tokens, positions=per_prompt)
    for b in range(4):
        torch.testing.assert_close(picked[:, b], full[:, b, per_prompt[b]])


def test_labels_and_hooks(ioi_model):
    assert lens_layer_labels(ioi_model) == ["embed", "L0", "L1"]
    assert lens_hook_names(ioi_model) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]


def test_logit_lens_plugs_into_the_view(ioi_model):
    pytest.importorskip("interplab_widgets")
    from interplab_widgets import LogitLensView

    batch = ioi.sample(1, seed=3)
    vocab = ioi_model.to_str_tokens(torch.arange(ioi_model.cfg.d_vocab))
    view = LogitLensView.from_logits(ioi_model.to_str_tokens(batch.tokens[0]), logit_lens(ioi_model, batch.tokens)[:, 0],
                                     vocab, layer_labels=lens_layer_labels(ioi_model))
    assert view.shape[:2] == [3, batch.tokens.shape[1]]


def test_bad_input_errors(ioi_model):
    tokens = ioi.sample(2, seed=3).tokens
    with pytest.raises(ValueError, match="outside a sequence"):
        logit_lens(ioi_model, tokens, positions=[99])
    with pytest.raises(ValueError, match="token ids"):
        logit_lens(ioi_model, tokens + 1000)
    with pytest.raises(TypeError, match="integer tensor"):
        logit_lens(ioi_model, tokens.float())
    _, cache = ioi_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
    with pytest.raises(ValueError, match="cache lacks"):
        logit_lens(ioi_model, cache)
    with pytest.raises(ValueError, match="d_model"):
        decode_residual(ioi_model, torch.zeros(3, 32))


# ---------------------------------------------------------------- tuned lens

def test_untrained_tuned_lens_is_the_logit_lens(random_model):
    tokens = _random_tokens(random_model)
    torch.testing.assert_close(TunedLens.for_model(random_model).apply(random_model, tokens), logit_lens(random_model, tokens))


def test_tuned_lens_beats_logit_lens_on_held_out_prompts(ioi_model, ioi_lens):
    held_out = ioi.sample(256, seed=2, held_out=True).with_answer()
    kl = lens_kl_by_layer(ioi_model, held_out, ioi_lens)
    assert kl.layer_labels == lens_layer_labels(ioi_model)
    assert (kl.tuned_lens[:-1] < 0.5 * kl.logit_lens[:-1]).all(), (kl.logit_lens, kl.tuned_lens)
    assert kl.logit_lens[-1] < 1e-5 and kl.tuned_lens[-1] < 1e-5  # the last layer is the model itself
    assert (kl.logit_lens[:-1] > 0.1).all()  # there is something to improve


def test_padding_is_left_out(ioi_model, ioi_lens):
    tokens = ioi.sample(32, seed=6).tokens  # 15 tokens; the model's context is 16
    pad = 1  # any id: this column is padding by declaration
    padded = torch.cat([tokens, torch.full((32, 1), pad)], dim=1)
    plain, skipped = lens_kl_by_layer(ioi_model, tokens, ioi_lens), lens_kl_by_layer(ioi_model, padded, ioi_lens, pad_token_id=pad)
    torch.testing.assert_close(skipped.tuned_lens, plain.tuned_lens)
    torch.testing.assert_close(skipped.logit_lens, plain.logit_lens)
    assert not torch.allclose(lens_kl_by_layer(ioi_model, padded, ioi_lens).logit_lens, plain.logit_lens)
    with pytest.raises(ValueError, match="no positions left"):
        train_tuned_lens(ioi_model, tokens[:, :1], steps=1, progress=False)


def test_tuned_lens_training_is_deterministic_and_trains_only_the_lens(ioi_model):
    tokens = ioi.sample(64, seed=4).with_answer()
    before = {name: p.detach().clone() for name, p in ioi_model.named_parameters()}
    a = train_tuned_lens(ioi_model, tokens, steps=5, seed=3, batch_size=64, progress=False)
    b = train_tuned_lens(ioi_model, [tokens[:32], tokens[32:]], steps=5, seed=3, batch_size=64, progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert any(p.abs().max() > 0 for p in a.parameters())
    for name, p in ioi_model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None or not p.grad.any(), f"{name} received a gradient"


def test_tuned_lens_trains_with_gradients_switched_off(ioi_model):
    """Notebooks call torch.set_grad_enabled(False); training the translators must still work."""
    tokens = ioi.sample(64, seed=4).with_answer()
    with torch.no_grad():
        lens = train_tuned_lens(ioi_model, tokens, steps=5, seed=3, batch_size=64, progress=False)
    reference = train_tuned_lens(ioi_model, tokens, steps=5, seed=3, batch_size=64, progress=False)
    for (name, pa), pb in zip(lens.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert any(p.abs().max() > 0 for p in lens.parameters())


@pytest.mark.parametrize("family", ["pythia", "gemma"])
def test_tuned_lens_trains_on_other_architectures(family):
    model = build_random_model(family, n_layers=2)
    tokens = _random_tokens(model, batch=32, seq=12, seed=1)
    lens = train_tuned_lens(model, tokens, steps=60, lr=3e-2, progress=False)
    kl = lens_kl_by_layer(model, tokens, lens)
    assert (kl.tuned_lens[:-1] < kl.logit_lens[:-1]).all(), (kl.logit_lens, kl.tuned_lens)


def test_save_load_round_trip(ioi_model, ioi_lens, tmp_path):
    tokens = ioi.sample(3, seed=5).tokens
    ioi_lens.save(tmp_path / "lens")
    loaded = TunedLens.load(tmp_path / "lens", ioi_model)
    assert loaded.model_name == "ioi-2l" and sorted(p.name for p in (tmp_path / "lens").iterdir()) == [
        "tuned_lens.json", "tuned_lens.safetensors"]
    torch.testing.assert_close(loaded.apply(ioi_model, tokens), ioi_lens.apply(ioi_model, tokens), atol=0, rtol=0)
    assert not torch.allclose(loaded.apply(ioi_model, tokens)[0], logit_lens(ioi_model, tokens)[0])


def test_lens_on_a_differently_shaped_model_is_refused(ioi_lens, tmp_path):
    ioi_lens.save(tmp_path)
    for other in (build_random_model("gpt2", d_model=32), build_random_model("gpt2", n_layers=3)):
        with pytest.raises(ValueError, match=r"\(trained on 'ioi-2l'\) has d_model=64, n_layers=2, but the model has"):
            TunedLens.load(tmp_path, other)
        with pytest.raises(ValueError, match="train a lens for this model"):
            ioi_lens.apply(other, _random_tokens(other))
        with pytest.raises(ValueError, match="d_model"):
            lens_kl_by_layer(other, _random_tokens(other), ioi_lens)
    with pytest.raises(FileNotFoundError, match="does not hold a tuned lens"):
        TunedLens.load(tmp_path / "nothing")


def test_residual_stack_from_cache_matches_tokens(random_model):
    tokens = _random_tokens(random_model)
    _, cache = random_model.run_with_cache(tokens)
    torch.testing.assert_close(residual_stack(random_model, cache, positions=[1]), residual_stack(random_model, tokens, positions=[1]))


# ---------------------------------------------------------------- the chapter 03 target, on the shipped facts model

def _facts_model():
    from interplab.zoo import RECIPES, model_dir

    if "facts-4l" not in RECIPES or not (model_dir("facts-4l") / "model.safetensors").exists():
        pytest.skip("facts-4l is not shipped in this checkout")
    return load_model("facts-4l")


def check_tuned_lens_beats_logit_lens_on_facts(model) -> None:
    """Issue 10's target: on held-out training-style sequences, the tuned lens is closer to the final
    distribution than the logit lens at every layer below the last."""
    from interplab.worlds import facts

    generator = torch.Generator().manual_seed(0)
    train = [facts.sample_training(64, generator)[0] for _ in range(8)]
    held_out = torch.cat([facts.sample_training(64, torch.Generator().manual_seed(99))[0] for _ in range(4)])
    lens = train_tuned_lens(model, train, steps=150, pad_token_id=facts.PAD_ID, progress=False)
    kl = lens_kl_by_layer(model, held_out, lens, pad_token_id=facts.PAD_ID)
    assert (kl.tuned_lens[:-1] < kl.logit_lens[:-1]).all(), (kl.logit_lens, kl.tuned_lens)


def test_tuned_lens_beats_logit_lens_on_the_shipped_facts_model():
    check_tuned_lens_beats_logit_lens_on_facts(_facts_model())
