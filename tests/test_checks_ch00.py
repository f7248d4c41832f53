"""Each chapter-00 checker accepts right answers, rejects wrong ones, and says which mistake it saw.

Every checker also runs on a random model built at check time, so answers replayed from the
shipped model (the "cheats" below) fail.
"""
import functools

import pytest
import torch

from interplab.checks import CheckFailed
from interplab.checks import ch00
from interplab.checks._core import shipped_model

SHIPPED = shipped_model(ch00.MODEL)


def test_top_prediction_checker():
    ch00.test_top_prediction(ch00.reference_top_prediction)
    ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, -1].softmax(-1).argmax(-1))  # another right way
    with pytest.raises(CheckFailed, match="first position"):
        ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, 0].argmax(-1))
    with pytest.raises(CheckFailed, match="not the id of the top one"):
        ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, -1])
    with pytest.raises(CheckFailed, match="argmin"):
        ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, -1].argmin(-1))


def test_top_prediction_rejects_answers_from_the_shipped_model():
    def replayed(model, tokens):  # ignores the model it is given
        return SHIPPED(tokens.clamp(max=SHIPPED.cfg.d_vocab - 1))[:, -1].argmax(-1)

    with pytest.raises(CheckFailed, match="random"):
        ch00.test_top_prediction(replayed)


def test_top_prediction_accepts_any_tied_top_token():
    class Tied(torch.nn.Module):
        cfg = SHIPPED.cfg

        def forward(self, tokens):
            logits = torch.zeros(*tokens.shape, 5)
            logits[..., 1] = logits[..., 3] = 1.0
            return logits

    original = ch00._models_and_tokens
    ch00._models_and_tokens = lambda seed: iter([("tied logits", Tied(), torch.zeros(2, 4, dtype=torch.long))])
    try:
        ch00.test_top_prediction(lambda model, tokens: torch.full((2,), 3))  # the other tied id
        with pytest.raises(CheckFailed):
            ch00.test_top_prediction(lambda model, tokens: torch.full((2,), 2))
    finally:
        ch00._models_and_tokens = original


def test_previous_token_attention_checker():
    ch00.test_previous_token_attention(ch00.reference_previous_token_attention)

    def self_attention(cache, layer, head):  # the main diagonal instead of the one below it
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
        return pattern.diagonal(dim1=-2, dim2=-1).mean().item()

    with pytest.raises(CheckFailed, match="main diagonal"):
        ch00.test_previous_token_attention(self_attention)

    def layer_zero_only(cache, layer, head):  # ignores the layer
        return cache["blocks.0.attn.hook_pattern"][:, head].diagonal(offset=-1, dim1=-2, dim2=-1).mean().item()

    with pytest.raises(CheckFailed, match="layer 1, head 0.*\n.*is the layer index used"):
        ch00.test_previous_token_attention(layer_zero_only)

    def summed(cache, layer, head):
        return cache[f"blocks.{layer}.attn.hook_pattern"][:, head].diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1).mean().item()

    with pytest.raises(CheckFailed, match="sum over query positions"):
        ch00.test_previous_token_attention(summed)


def test_previous_token_attention_rejects_replayed_scores():
    with torch.no_grad():
        _, cache = SHIPPED.run_with_cache(ch00._probe_tokens(4))
    table = {(l, h): ch00.reference_previous_token_attention(cache, l, h) for l in range(2) for h in range(4)}

    with pytest.raises(CheckFailed, match="seed"):  # tokens drawn at check time: the table is stale
        ch00.test_previous_token_attention(lambda cache, layer, head: table[layer, head])

    def table_on_fresh_tokens(cache, layer, head):  # recomputed on the shipped model: fails on the random one
        return ch00.reference_previous_token_attention(cache, layer, head) if cache["blocks.0.attn.hook_pattern"].shape[1] == 4 else 0.5

    with pytest.raises(CheckFailed, match="random"):
        ch00.test_previous_token_attention(table_on_fresh_tokens)


def _hooked_norms(model, tokens, point="hook_resid_post"):
    norms = []
    hooks = [(f"blocks.{l}.{point}", lambda r, hook: norms.append(r.norm(dim=-1).mean())) for l in range(model.cfg.n_layers)]
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return torch.stack(norms)


def test_residual_norms_checker():
    ch00.test_residual_norms(ch00.reference_residual_norms)

    def keyed_by_registered_name(model, tokens):  # the safe pattern: the name travels in functools.partial
        norms = {}

        def record(resid, hook, name):
            norms[name] = resid.norm(dim=-1).mean()

        names = [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
        model.run_with_hooks(tokens, fwd_hooks=[(n, functools.partial(record, name=n)) for n in names])
        return torch.stack([norms[n] for n in names])

    ch00.test_residual_norms(keyed_by_registered_name)

    with pytest.raises(CheckFailed, match="hook_resid_pre"):
        ch00.test_residual_norms(lambda model, tokens: _hooked_norms(model, tokens, "hook_resid_pre"))

    def keyed_by_hook_name(model, tokens):  # hook.name is the bridge's name, not the registered one
        norms = {}
        hooks = [(f"blocks.{l}.hook_resid_post", lambda r, hook: norms.__setitem__(hook.name, r.norm(dim=-1).mean()))
                 for l in range(model.cfg.n_layers)]
        model.run_with_hooks(tokens, fwd_hooks=hooks)
        return torch.stack([norms[f"blocks.{l}.hook_resid_post"] for l in range(model.cfg.n_layers)])

    with pytest.raises(CheckFailed, match="functools.partial"):
        ch00.test_residual_norms(keyed_by_hook_name)

    def norm_of_mean(model, tokens):
        norms = []
        hooks = [(f"blocks.{l}.hook_resid_post", lambda r, hook: norms.append(r.mean(dim=(0, 1)).norm()))
                 for l in range(model.cfg.n_layers)]
        model.run_with_hooks(tokens, fwd_hooks=hooks)
        return torch.stack(norms)

    with pytest.raises(CheckFailed, match="norm of the mean"):
        ch00.test_residual_norms(norm_of_mean)

    def leaves_hooks(model, tokens):
        norms = []
        for layer in range(model.cfg.n_layers):
            model.add_hook(f"blocks.{layer}.hook_resid_post", lambda r, hook: norms.append(r.norm(dim=-1).mean()))
        model(tokens)
        return torch.stack(norms)

    with pytest.raises(CheckFailed, match="left attached"):
        ch00.test_residual_norms(leaves_hooks)


def test_residual_norms_refuses_a_cache_and_replayed_answers():
    def from_cache(model, tokens):
        _, cache = model.run_with_cache(tokens)
        return torch.stack([cache[f"blocks.{l}.hook_resid_post"].norm(dim=-1).mean() for l in range(model.cfg.n_layers)])

    with pytest.raises(CheckFailed, match="reading hooks"):
        ch00.test_residual_norms(from_cache)

    with pytest.raises(CheckFailed, match="random"):  # hard-codes the shipped model's two layers
        ch00.test_residual_norms(lambda model, tokens: _hooked_norms(SHIPPED, tokens.clamp(max=SHIPPED.cfg.d_vocab - 1)))


def test_ablate_head_hook_checker():
    ch00.test_ablate_head_hook(ch00.reference_ablate_head_hook)

    def in_place(head):  # edits the activation in place and returns nothing: also correct
        def hook(z, hook):
            z[:, :, head] = 0.0
        return hook

    ch00.test_ablate_head_hook(in_place)

    with pytest.raises(CheckFailed, match="every head zeroed"):
        ch00.test_ablate_head_hook(lambda head: lambda z, hook: torch.zeros_like(z))

    def wrong_axis(head):
        def hook(z, hook):
            z = z.clone()
            z[:, head] = 0.0
            return z
        return hook

    with pytest.raises(CheckFailed, match=r"position `head` zeroed"):
        ch00.test_ablate_head_hook(wrong_axis)

    def shipped_head_count(head):  # assumes 4 heads: fails on the 6-head model built for the check
        def hook(z, hook):
            z = z.clone()
            z[:, :, head % 4] = 0.0
            return z
        return hook

    with pytest.raises(CheckFailed, match="head 4"):
        ch00.test_ablate_head_hook(shipped_head_count)


def test_compare_outputs_names_common_mistakes():
    from interplab.checks._core import compare_outputs, diagnose_mismatch

    expected = torch.arange(20.0).reshape(4, 5) + 1
    square = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    assert "transposed" in diagnose_mismatch(square.T, square)
    assert "sign flipped" in diagnose_mismatch(-expected, expected)
    assert "times 0.125" in diagnose_mismatch(expected / 8, expected)
    shifted = torch.cat([torch.zeros(4, 1), expected[:, :-1]], dim=1)
    assert "one step later along position" in diagnose_mismatch(shifted, expected, dims=("head", "position"))
    assert "extra axis of size 3" in diagnose_mismatch(expected.expand(3, 4, 5), expected)
    assert diagnose_mismatch(expected + 1, expected, variants={"the wrong hook point": expected + 1}) == "the wrong hook point"
    assert diagnose_mismatch(expected, expected * 2, variants=lambda: {"lazy": expected}) == "lazy"
    one_row_wrong = expected.clone()
    one_row_wrong[2, 3] += 0.5
    with pytest.raises(CheckFailed, match=r"relative error (.*\n)*.*differences only at layer 2 \(of 0..3\)(.*\n)*"
                                          r".*entries \[2, 0:5\]"):
        compare_outputs(one_row_wrong, expected, case="case", dims=("layer", "head"))
    with pytest.raises(CheckFailed, match="relative error 0.05"):
        compare_outputs(2.1, 2.0, case="a float")
