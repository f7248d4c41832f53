import hashlib
import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

from interplab import circuits, zoo
from interplab.zoo import induction as recipe
from interplab.zoo.checkpoint import load_checkpoint, save_checkpoint
from interplab.zoo.training import KEY_BIAS_TOLERANCE, WEIGHT_TOLERANCE


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
    assert "not reachable" in message and "attn2-induction" in message and "all-minilm-l6-v2" in message


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


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_cli_lists_and_trains_into_a_user_folder_leaving_the_shipped_model_alone(tmp_path, repo_root, monkeypatch,
                                                                                 capsys):
    from interplab.zoo.__main__ import main

    listed = subprocess.run([sys.executable, "-m", "interplab.zoo", "list"], capture_output=True, text=True,
                            check=True, cwd=repo_root)
    assert "attn2-induction" in listed.stdout and "all-minilm-l6-v2" in listed.stdout
    shipped = zoo.model_dir("attn2-induction")
    before = _digest(shipped)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["train", "attn2-induction", "--steps", "20", "--seed", "3"]) == 0  # in-process: no second cold start
    stdout = capsys.readouterr().out
    out = tmp_path / "cache" / "interplab" / "zoo" / "attn2-induction"
    assert f"wrote {out}" in stdout and "untouched" in stdout
    assert _digest(shipped) == before
    card = json.loads((out / "card.json").read_text())
    assert card["seed"] == 3 and card["training"]["steps"] == 20
    assert zoo.load_model(str(out)).cfg.n_layers == 2  # a retrained folder loads by its path


def test_cli_errors_are_messages_not_tracebacks(capsys, monkeypatch, tmp_path):
    from interplab.zoo.__main__ import main

    assert main(["train", "attn2-inducton"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'attn2-induction'?" in err and "Traceback" not in err
    assert main(["train", "attn2-induction", "--out", str(zoo.model_dir("attn2-induction"))]) == 2
    assert "--replace-shipped" in capsys.readouterr().err
    assert main(["train", "attn2-induction", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one destination only
        main(["train", "attn2-induction", "--out", str(tmp_path), "--replace-shipped"])
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path)  # a shipped folder gone missing
    assert main(["card", "attn2-induction"]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint folder" in err and "--replace-shipped" in err and "Traceback" not in err


def test_misspelled_model_names_get_a_suggestion():
    with pytest.raises(zoo.ModelNotAvailableError, match="Did you mean 'gpt2-small'"):
        zoo.load_model("gtp2-smal")
    with pytest.raises(zoo.ModelNotAvailableError, match="Did you mean 'ioi-2l'"):
        zoo.load_model("ioi2l")
    with pytest.raises(zoo.ModelNotAvailableError, match="Did you mean 'all-minilm-l6-v2'"):
        zoo.load_model("minilm")
    with pytest.raises(zoo.ModelNotAvailableError, match="no checkpoint folder at"):
        zoo.load_model("./no/such/folder")


# --- broken checkpoint folders: each fails naming the file and how to rebuild it -------------------------

@pytest.fixture
def copied_model(tmp_path):
    """A copy of a shipped model folder to break (``copied_model("ioi-2l")``)."""
    def copy(name: str = "attn2-induction"):
        folder = tmp_path / name
        shutil.copytree(zoo.model_dir(name), folder)
        return folder
    return copy


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def _strip_config_stamp(folder):
    """Weights saved before the config was stamped into them (or by other tools): only shapes can be checked."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(folder / "model.safetensors")), str(folder / "model.safetensors"))


def _fails(folder, file: str, *needles: str):
    with pytest.raises(zoo.BrokenCheckpointError) as error:
        load_checkpoint(folder)
    message = str(error.value)
    assert str(folder / file) in message and "To rebuild it" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_truncated_weights_name_the_file(copied_model):
    folder = copied_model()
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    _fails(folder, "model.safetensors", "truncated")
    (folder / "model.safetensors").write_bytes(data[:5])
    _fails(folder, "model.safetensors", "truncated")


def test_invalid_config_names_the_file(copied_model):
    folder = copied_model()
    config = (folder / "config.json").read_bytes()
    (folder / "config.json").unlink()
    with pytest.raises(zoo.BrokenCheckpointError, match="config.json: file missing"):
        zoo.load_model(str(folder))  # by path, as a retrained folder loads
    (folder / "config.json").write_bytes(config)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[:-10])
    _fails(folder, "config.json", "not valid JSON", "line")
    (folder / "config.json").write_text("[1, 2]")
    _fails(folder, "config.json", "JSON object")
    (folder / "config.json").write_text(text)
    _edit_config(folder, n_layers="two")
    _fails(folder, "config.json", "'n_layers' must be a positive integer")


def test_missing_or_broken_tokenizer_names_the_file(copied_model):
    folder = copied_model()
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").unlink()
    _fails(folder, "tokenizer.json", "tokenizer file missing")
    (folder / "tokenizer.json").write_text(text[: len(text) // 2])
    _fails(folder, "tokenizer.json", "tokenizer does not load")


def test_config_edits_that_keep_every_shape_are_caught_by_the_stamp(copied_model):
    """Splitting 64 dimensions into 8 heads of 8 instead of 4 of 16 keeps every tensor's shape."""
    folder = copied_model()
    _edit_config(folder, n_heads=8, d_head=8)
    _fails(folder, "config.json", "n_heads: 8 here, 4 when the weights were saved", "d_head")
    ioi = copied_model("ioi-2l")
    _edit_config(ioi, act_fn="relu")
    _fails(ioi, "config.json", "act_fn: 'relu' here, 'gelu'")


@pytest.mark.parametrize("changes, needle", [
    ({"n_layers": 3}, "n_layers is 3 but model.safetensors holds 2 blocks"),
    ({"d_vocab": 80, "d_vocab_out": 80}, "embed.weight in model.safetensors is 64 x 64"),
    ({"n_ctx": 20}, "pos_embed.weight is [41, 64] in the file, [20, 64] for config.json"),
    ({"attn_only": False}, "missing tensors blocks.0.ln2.bias"),
])
def test_config_disagreeing_with_the_weights_fails_without_the_stamp(copied_model, changes, needle):
    folder = copied_model()
    _strip_config_stamp(folder)
    assert load_checkpoint(folder).cfg.n_layers == 2  # unedited, an unstamped folder still loads
    _edit_config(folder, **changes)
    _fails(folder, "config.json", needle)


def test_shipped_models_carry_their_config_in_the_weights():
    from safetensors import safe_open

    for name in ("attn2-induction", "ioi-2l"):
        folder = zoo.model_dir(name)
        with safe_open(str(folder / "model.safetensors"), "pt") as weights:
            stamp = json.loads(weights.metadata()["interplab_config"])
        assert stamp == json.loads((folder / "config.json").read_text()), name


def test_a_broken_shipped_model_says_how_to_restore_it(monkeypatch, copied_model):
    folder = copied_model()
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(zoo, "MODELS_DIR", folder.parent)
    with pytest.raises(zoo.BrokenCheckpointError, match=r"git checkout -- .*--replace-shipped"):
        zoo.load_model("attn2-induction")


def test_same_seed_same_threads_gives_bit_identical_weights():
    """The first half of the cards' reproducibility statement, on a short run (the full one is below)."""
    from interplab.worlds import induction
    from interplab.zoo.training import train_from_scratch

    def run(seed: int):
        hyper = dict(recipe.TRAINING, steps=6, batch_size=16)
        model, _ = train_from_scratch(recipe.build, lambda size, g: (induction.sample_batch(size, generator=g).tokens, None),
                                      hyper, seed, progress=False, desc="")
        return model.state_dict()

    first, second, other_seed = run(5), run(5), run(6)
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert not torch.equal(first["embed.weight"], other_seed["embed.weight"])


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_model_cards_state_reproducibility_and_match_card_json(name):
    folder = zoo.model_dir(name)
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert markdown == zoo.recipe(name).card_markdown(zoo.model_card(name)), \
        f"MODEL_CARD.md is stale; regenerate it from card.json with recipe('{name}').card_markdown"
    assert "## Reproducibility" in markdown and "not bit-identical weights to the shipped ones" in markdown
    assert f"within {WEIGHT_TOLERANCE:g} of the shipped one" in markdown and f"(within {KEY_BIAS_TOLERANCE:g})" in markdown
    readme = (zoo.MODELS_DIR.parents[2] / "README.md").read_text().replace("\n", " ")
    assert f"within {WEIGHT_TOLERANCE:g} of the shipped one" in readme and f"within {KEY_BIAS_TOLERANCE:g}" in readme


def _close(fresh, shipped, path=""):
    """Numbers equal to the card's rounding (one unit in the last of its 4 decimals), everything else equal."""
    if isinstance(shipped, dict):
        assert fresh.keys() == shipped.keys(), path
        for key in shipped:
            _close(fresh[key], shipped[key], f"{path}.{key}")
    elif isinstance(shipped, list):
        assert len(fresh) == len(shipped), path
        for i, (a, b) in enumerate(zip(fresh, shipped)):
            _close(a, b, f"{path}[{i}]")
    elif isinstance(shipped, float):
        assert fresh == pytest.approx(shipped, abs=1.01e-4), path
    else:
        assert fresh == shipped, path


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_metrics():
    """`python -m interplab.zoo train attn2-induction` from scratch lands on the card's metrics and ground truth,
    with every weight within WEIGHT_TOLERANCE of the shipped one, key biases within KEY_BIAS_TOLERANCE
    (bit-identical on the machine that trained it; see interplab/zoo/training.py for the measured spread)."""
    card = zoo.model_card("attn2-induction")
    model, fresh = recipe.train(seed=card["seed"], progress=False)
    fresh.update(recipe.ground_truth(model))
    _close(fresh["metrics"], card["metrics"], "metrics")
    _close(fresh["ground_truth"], card["ground_truth"], "ground_truth")
    assert fresh["ground_truth"]["circuit"] == card["ground_truth"]["circuit"]
    shipped = zoo.load_model("attn2-induction").state_dict()
    for name, tensor in model.state_dict().items():
        tolerance = KEY_BIAS_TOLERANCE if name.endswith("attn.k.bias") else WEIGHT_TOLERANCE
        assert (tensor - shipped[name]).abs().max().item() <= tolerance, name


def test_attention_ignores_the_key_bias(induction_model):
    """Why key biases get their own, looser reproducibility tolerance: zeroing them changes no output."""
    tokens = torch.tensor([[0, 5, 6, 7, 8, 5, 6, 7]])
    with torch.no_grad():
        before = induction_model(tokens)
        saved = {l: induction_model.blocks[l].attn.k.bias.clone() for l in range(induction_model.cfg.n_layers)}
        try:
            for layer in saved:
                induction_model.blocks[layer].attn.k.bias.zero_()
            after = induction_model(tokens)
        finally:
            for layer, bias in saved.items():
                induction_model.blocks[layer].attn.k.bias.copy_(bias)
    assert max(b.abs().max().item() for b in saved.values()) > 1e-3  # the biases are not zero to begin with
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_learning_rate_schedules_warm_up_then_decay_to_the_floor():
    from interplab.zoo.training import lr_multiplier, train_next_token

    assert [lr_multiplier(s, 100, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    for decay in ("linear", "cosine"):
        rates = [lr_multiplier(s, 100, 10, decay, 0.1) for s in range(10, 101)]
        assert rates[0] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1)
        assert all(a >= b for a, b in zip(rates, rates[1:])), decay
    assert lr_multiplier(55, 100, 10, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_multiplier(55, 100, 10, "linear", 0.1) == pytest.approx(0.55)
    assert lr_multiplier(30, 100, 10, "cosine", 0.1) > lr_multiplier(30, 100, 10, "linear", 0.1)
    with pytest.raises(ValueError, match="unknown decay 'step'"):
        train_next_token(torch.nn.Linear(2, 2), lambda: None, steps=1, lr=1e-3, decay="step")
