"""The shipped SAEs load, sit in SAELens's layout, and still measure what their cards say.

Each card's metrics are re-measured from the shipped weights on a fresh held-out sample (another
seed, fewer sequences than the card used), so they agree within a sampling tolerance, not exactly.
"""
import json

import pytest
import torch

from interplab import saes as sae_lib
from interplab.zoo import ModelNotAvailableError
from interplab.zoo import saes as zoo_saes

NAMES = sorted(zoo_saes.list_saes())
EVAL = dict(eval_sequences=300, ce_sequences=100, eval_seed=3)


@pytest.fixture(scope="module")
def model():
    from interplab.zoo import load_model

    return load_model("attn2-induction")


@pytest.fixture(scope="module")
def measured(model):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: zoo_saes.evaluate(zoo_saes.load_sae(name), zoo_saes.RECIPES[name], model=model, ceiling=False,
                                        **EVAL) for name in NAMES}
    finally:
        torch.set_num_threads(threads)


def test_shipped_names_and_layout():
    assert NAMES == ["attn2-induction-relu", "attn2-induction-topk"]
    for name in NAMES:
        folder = zoo_saes.sae_dir(name)
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "cfg.json", "sae_weights.safetensors"]
        assert sum(p.stat().st_size for p in folder.iterdir()) < 300_000
        cfg = json.loads((folder / "cfg.json").read_text())
        for key in ("d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
                    "reshape_activations", "metadata", "architecture"):
            assert key in cfg, key
        assert cfg["metadata"]["model_name"] == "attn2-induction"
        assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_pre"
        sae = zoo_saes.load_sae(name)
        card = zoo_saes.sae_card(name)
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (64, 512)
        assert card["name"] == name and card["settings"]["d_sae"] == 512
        readme = (folder / "README.md").read_text()
        assert f"python -m interplab.zoo.saes train {name}" in readme and "## Reproducibility" in readme
        assert f"{card['metrics']['explained_variance']:.4f}" in readme
    assert zoo_saes.load_sae("attn2-induction-topk").cfg.architecture == "topk"
    assert zoo_saes.load_sae("attn2-induction-topk").cfg.k == 8
    assert zoo_saes.load_sae("attn2-induction-relu").cfg.architecture == "standard"


@pytest.fixture(scope="module")
def card_sample(model):
    """The held-out activations the cards were measured on (same sequences, same seed)."""
    from interplab.worlds import induction

    recipe = zoo_saes.RECIPES["attn2-induction-topk"]
    batch = induction.sample_batch(recipe["eval_sequences"], seed=recipe["eval_seed"])
    return sae_lib.cache_activations(model, batch.tokens, recipe["hook"], progress=False)


@pytest.mark.parametrize("name", NAMES)
def test_card_reconstruction_on_its_own_sample(card_sample, name):
    card = zoo_saes.sae_card(name)["metrics"]
    now = sae_lib.reconstruction_metrics(zoo_saes.load_sae(name), card_sample)
    assert now.n_tokens == card["n_tokens"]
    assert now.explained_variance == pytest.approx(card["explained_variance"], abs=1e-3)
    assert now.l0 == pytest.approx(card["l0"], abs=0.01)
    assert now.dead_fraction == pytest.approx(card["dead_fraction"], abs=1.5 / 512)


def test_topk_dead_latents_are_rare_not_broken(card_sample):
    """What the card's note says: the latents that never fire on the card's tokens only just miss the top k."""
    sae = zoo_saes.load_sae("attn2-induction-topk")
    with torch.no_grad():
        pre = sae.pre_acts(card_sample.acts)
    kth = pre.topk(sae.cfg.k, dim=-1).values[:, -1:]
    fires = ((pre >= kth) & (pre > 0)).sum(0)
    dead = fires == 0
    assert 0 < int(dead.sum()) <= 0.05 * sae.cfg.d_sae
    assert (pre[:, dead] - kth).max(0).values.min() > -0.1  # every one comes within 0.1 of the k-th largest
    assert int(((fires > 0) & (fires < 10)).sum()) > int(dead.sum())  # and rare latents outnumber them


@pytest.mark.parametrize("name", NAMES)
def test_card_metrics_remeasured(measured, name):
    card, now = zoo_saes.sae_card(name)["metrics"], measured[name]
    assert now["explained_variance"] == pytest.approx(card["explained_variance"], abs=0.01)
    assert now["l0"] == pytest.approx(card["l0"], rel=0.05, abs=0.1)
    # a smaller sample sees fewer latents fire (rare latents look dead): the card's sample is checked exactly below
    assert now["dead_fraction"] >= card["dead_fraction"] - 0.01
    assert now["ce_increase"] == pytest.approx(card["ce_increase"], abs=0.02)
    assert now["ce_recovered_mean"] == pytest.approx(card["ce_recovered_mean"], abs=0.02)
    for family in ("current token", "previous token"):
        assert now["variables"][family]["total"] == 61
        assert now["variables"][family]["recovered"] == pytest.approx(card["variables"][family]["recovered"], abs=3)


def test_topk_meets_course_targets():
    metrics = zoo_saes.sae_card("attn2-induction-topk")["metrics"]
    assert metrics["explained_variance"] >= 0.95 and metrics["l0"] <= 16
    assert metrics["ce_increase"] <= 0.05 and metrics["ce_recovered_mean"] >= 0.90
    assert metrics["probe_readable_recovered"] >= 0.90
    assert metrics["dead_fraction"] <= 0.05  # never fire on the card's 60,000 held-out tokens
    card = zoo_saes.sae_card("attn2-induction-topk")
    assert card["training"]["dead_in_training"] <= 0.05
    assert card["settings"]["k"] == 8 and card["settings"]["aux_coefficient"] == 1.0


def test_unknown_names_say_what_exists():
    for call in (zoo_saes.load_sae, zoo_saes.sae_card, zoo_saes.sae_dir):
        with pytest.raises(ModelNotAvailableError, match="Did you mean 'attn2-induction-topk'"):
            call("attn2-induction-tpok")
    with pytest.raises(ModelNotAvailableError, match="Shipped: attn2-induction-relu, attn2-induction-topk"):
        zoo_saes.load_sae("gpt2-res-jb")


def test_cli(capsys):
    assert zoo_saes.main(["list"]) == 0
    assert "attn2-induction-topk" in capsys.readouterr().out
    assert zoo_saes.main(["train", "attn2-induction-tpok"]) == 2
    assert "Did you mean 'attn2-induction-topk'" in capsys.readouterr().err
    assert zoo_saes.main(["train", "attn2-induction-topk", "--out", str(zoo_saes.sae_dir("attn2-induction-topk"))]) == 2
    assert "--replace-shipped" in capsys.readouterr().err
    assert zoo_saes.main(["train", "attn2-induction-topk", "--dead-after-tokens", "0"]) == 2
    assert "--dead-after-tokens must be positive" in capsys.readouterr().err
    assert zoo_saes.main(["train", "attn2-induction-topk", "--aux-coefficient", "-1"]) == 2
    assert "--aux-coefficient must be >= 0" in capsys.readouterr().err
    assert zoo_saes.main(["train", "attn2-induction-topk", "--resample-at", "late"]) == 2
    assert "--resample-at takes steps" in capsys.readouterr().err


def test_train_settings_come_from_the_recipe():
    """One source of truth: benchmarks/saes.py and build() take train_sae's settings from RECIPES."""
    topk = zoo_saes.train_settings("attn2-induction-topk")
    assert topk["k"] == 8 and topk["aux_coefficient"] == 1.0 and topk["d_sae"] == 512
    assert zoo_saes.train_settings("attn2-induction-topk", k=16, steps=None)["k"] == 16
    assert zoo_saes.train_settings("attn2-induction-topk", steps=None)["steps"] == 1500
    relu = zoo_saes.train_settings("attn2-induction-relu")
    assert relu["architecture"] == "standard" and "k" not in relu and relu["l1_coefficient"] == 1.0
    with pytest.raises(ValueError, match="unknown train_sae settings"):
        zoo_saes.train_settings("attn2-induction-topk", width=64)
    card = zoo_saes.card_markdown(dict(zoo_saes.sae_card("attn2-induction-topk"), recipe=dict(
        zoo_saes.sae_card("attn2-induction-topk")["recipe"], aux_coefficient=0.03125, resample_at=[250, 500])))
    assert "train attn2-induction-topk --aux-coefficient 0.03125 --resample-at 250,500 --replace-shipped" in card


def test_shipped_sae_round_trips(tmp_path):
    sae = zoo_saes.load_sae("attn2-induction-relu")
    again = sae_lib.load_sae(sae_lib.save_sae(sae, tmp_path / "copy"))
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(again, name))


def test_build_writes_a_loadable_sae_and_card(monkeypatch, tmp_path):
    tiny = dict(zoo_saes.RECIPES["attn2-induction-topk"], train_sequences=60, eval_sequences=30, ce_sequences=10,
                steps=8, batch_size=128, d_sae=32)
    monkeypatch.setitem(zoo_saes.RECIPES, "tiny-topk", tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, card = zoo_saes.build("tiny-topk", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert card["metrics"]["l0"] <= 8 and set(card["metrics"]["variables"]) == {"current token", "previous token"}
    folder = zoo_saes.save(first, card, tmp_path / "tiny")
    assert sae_lib.read_sae_config(folder)["interplab"]["settings"]["steps"] == 8
    assert "python -m interplab.zoo.saes train tiny-topk" in (folder / "README.md").read_text()
    assert torch.equal(sae_lib.load_sae(folder).W_enc, first.W_enc)


def test_card_notes_quote_the_cards():
    topk, relu = zoo_saes.sae_card("attn2-induction-topk"), zoo_saes.sae_card("attn2-induction-relu")
    notes = zoo_saes.NOTES["attn2-induction-topk"]
    assert notes.startswith(f"Dead latents: {topk['metrics']['dead_fraction']:.1%} of the latents never fire on the "
                            f"{topk['metrics']['n_tokens']:,} held-out tokens")
    assert f"and {topk['training']['dead_in_training']:.1%} were silent" in notes
    assert f"explained variance ({topk['metrics']['explained_variance']:.3f})" in notes
    assert f"against {topk['metrics']['ce_increase']:+.3f} nats" in notes
    assert "weighted 1 here" in notes and topk["settings"]["aux_coefficient"] == 1
    notes = zoo_saes.NOTES["attn2-induction-relu"]
    assert f"about {relu['metrics']['l0']:.0f} latents" in notes
    assert f"{relu['metrics']['explained_variance']:.3f} against TopK's {topk['metrics']['explained_variance']:.3f}" \
        in notes
    assert relu["metrics"]["ce_increase"] > topk["metrics"]["ce_increase"]
    for name in NAMES:
        assert notes.splitlines()[0] in (zoo_saes.sae_dir("attn2-induction-relu") / "README.md").read_text()
        assert "## Notes" in (zoo_saes.sae_dir(name) / "README.md").read_text()
