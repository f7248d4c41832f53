"""Each chapter-00 checker accepts the reference and rejects a plausible mistake."""
import pytest
import torch

from interplab.checks import CheckFailed
from interplab.checks import ch00


def test_top_prediction_checker():
    ch00.test_top_prediction(ch00.reference_top_prediction)
    with pytest.raises(CheckFailed, match="values differ|expected"):
        ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, 0].argmax(-1))  # first position
    with pytest.raises(CheckFailed, match="shape"):
        ch00.test_top_prediction(lambda model, tokens: model(tokens)[:, -1])  # logits, not ids


def test_previous_token_attention_checker():
    ch00.test_previous_token_attention(ch00.reference_previous_token_attention)

    def self_attention(cache, layer, head):  # the main diagonal instead of the one below it
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
        return pattern.diagonal(dim1=-2, dim2=-1).mean().item()

    with pytest.raises(CheckFailed, match="layer 0, head 0"):
        ch00.test_previous_token_attention(self_attention)


def test_residual_norms_checker():
    ch00.test_residual_norms(ch00.reference_residual_norms)

    def pre_norms(model, tokens):  # reads resid_pre instead of resid_post
        norms = []
        hooks = [(f"blocks.{l}.hook_resid_pre", lambda r, hook: norms.append(r.norm(dim=-1).mean()))
                 for l in range(model.cfg.n_layers)]
        model.run_with_hooks(tokens, fwd_hooks=hooks)
        return torch.stack(norms)

    with pytest.raises(CheckFailed, match="values differ"):
        ch00.test_residual_norms(pre_norms)

    def leaves_hooks(model, tokens):
        norms = []
        for layer in range(model.cfg.n_layers):
            model.add_hook(f"blocks.{layer}.hook_resid_post", lambda r, hook: norms.append(r.norm(dim=-1).mean()))
        model(tokens)
        return torch.stack(norms)

    with pytest.raises(CheckFailed, match="left attached"):
        ch00.test_residual_norms(leaves_hooks)


def test_ablate_head_hook_checker():
    ch00.test_ablate_head_hook(ch00.reference_ablate_head_hook)

    def ablates_everything(head):
        return lambda z, hook: torch.zeros_like(z)

    with pytest.raises(CheckFailed, match="head 0 ablated"):
        ch00.test_ablate_head_hook(ablates_everything)
