import json
import subprocess
import sys
import time

import pytest
import torch

from interplab import circuits, zoo
from interplab.zoo import induction as recipe
from interplab.zoo.checkpoint import load_checkpoint, save_checkpoint


def test_list_models_describes_the_shipped_models():
    models = zoo.list_models()
    assert "attn2-induction" in models and "induction" in models["attn2-induction"]


def test_shipped_checkpoints_stay_small():
    total = sum(p.stat().st_size for p in zoo.MODELS_DIR.rglob("*") if p.is_file())
    assert total < 25 * 2**20


def test_shipped_model_clears_its_card(induction_model):
    """The card's claims, re-measured from the shipped weights."""
    card = zoo.model_card("attn2-induction")
    measured = recipe.evaluate(induction_model)
    thresholds = card["thresholds"]
    assert measured["max_induction_score"] >= thresholds["max_induction_score"]
    assert measured["max_previous_token_score"] >= thresholds["max_previous_token_score"]
    assert measured["repeat_accuracy"] >= thresholds["repeat_accuracy"]
    for key in ("max_induction_score", "max_previous_token_score", "repeat_accuracy"):
        assert measured[key] == pytest.approx(card["metrics"][key], abs=1e-3), key


def test_checkpoint_round_trips_exactly(induction_model, tmp_path):
    card = zoo.model_card("attn2-induction")
    save_checkpoint(induction_model, tmp_path, card, "card")
    reloaded = load_checkpoint(tmp_path)
    original, copy = induction_model.state_dict(), reloaded.state_dict()
    assert original.keys() == copy.keys()
    for name in original:
        assert torch.equal(original[name], copy[name]), name
    tokens = torch.tensor([[0, 5, 6, 7, 5, 6]])
    assert torch.equal(induction_model(tokens), reloaded(tokens))
    assert reloaded.to_str_tokens("ka to") == ["<bos>", "ka", "to"]


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(zoo.ModelNotAvailableError, match="attn2-induction"):
        zoo.load_model("gtp2-smal")


def test_real_model_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(zoo, "_cached_locally", lambda hf_id: False)
    start = time.perf_counter()
    with pytest.raises(zoo.ModelNotAvailableError) as error:
        zoo.load_model("gpt2-small")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "not reachable" in message and "attn2-induction" in message


def test_analysis_code_runs_on_a_random_gpt2_architecture():
    """The real-model path (boot_transformers), with no download."""
    model = zoo.build_random_gpt2(n_layers=2, d_model=64, n_heads=4, d_vocab=100, n_ctx=32)
    assert "GPT2" in type(model.original_model).__name__
    tokens = torch.randint(0, 100, (2, 21))
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 21, 100)
    assert circuits.previous_token_scores(cache).shape == (2, 4)
    assert circuits.induction_scores(cache, half_len=10).shape == (2, 4)


@pytest.mark.parametrize("family, hf_class", [("pythia", "GPTNeoX"), ("gemma", "Gemma")])
def test_random_models_of_other_families(family, hf_class):
    model = zoo.build_random_model(family, n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=4)
    assert hf_class in type(model.original_model).__name__
    tokens = torch.randint(0, 50, (2, 12))
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 12, 50) and cache["blocks.1.attn.hook_z"].shape == (2, 12, 4, 8)
    assert circuits.induction_scores(cache, half_len=6).shape == (2, 4)
    again = zoo.build_random_model(family, n_layers=2, d_model=32, n_heads=4, d_vocab=50, n_ctx=16, seed=4)
    assert torch.equal(again(tokens), model(tokens))  # seeded
    with pytest.raises(ValueError, match="unknown model family 'llama'; choose one of gpt2, pythia, gemma"):
        zoo.build_random_model("llama")
    with pytest.raises(ValueError, match="multiple of n_heads"):
        zoo.build_random_model(family, d_model=30, n_heads=4)


def test_cli_lists_and_trains_a_short_run(tmp_path, repo_root):
    listed = subprocess.run([sys.executable, "-m", "interplab.zoo", "list"], capture_output=True, text=True,
                            check=True, cwd=repo_root)
    assert "attn2-induction" in listed.stdout
    out = tmp_path / "short"
    run = subprocess.run([sys.executable, "-m", "interplab.zoo", "train", "attn2-induction", "--steps", "20",
                          "--seed", "3", "--out", str(out)], capture_output=True, text=True, cwd=repo_root)
    assert run.returncode == 0, run.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert card["seed"] == 3 and card["training"]["steps"] == 20
    assert load_checkpoint(out).cfg.n_layers == 2


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_metrics():
    """`python -m interplab.zoo train attn2-induction` from scratch lands on the card's numbers."""
    card = zoo.model_card("attn2-induction")
    _, fresh = recipe.train(seed=card["seed"], progress=False)
    for key in ("max_induction_score", "max_previous_token_score", "repeat_accuracy"):
        assert fresh["metrics"][key] == pytest.approx(card["metrics"][key], abs=0.03), key
