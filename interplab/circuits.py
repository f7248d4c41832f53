"""Head detectors: scores that say which attention heads do what.

Each works on any TransformerLens 4.x model (a zoo model or GPT-2 on Colab):
it reads ``blocks.{l}.attn.hook_pattern`` from a cache and never looks inside
the model, so a chapter can run it on whatever a learner loaded.
"""
from __future__ import annotations

import torch
from jaxtyping import Float, Int

from transformer_lens import ActivationCache


def _patterns(cache: ActivationCache, n_layers: int) -> Float[torch.Tensor, "layer batch head query key"]:
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(n_layers)])


def _n_layers(cache: ActivationCache) -> int:
    return sum(1 for name in cache.keys() if name.endswith("attn.hook_pattern"))


def diagonal_attention_score(cache: ActivationCache, offset: int, first_query: int = 0) -> Float[torch.Tensor, "layer head"]:
    """Mean attention each head pays from query ``q`` to key ``q - offset``, over queries ``>= first_query``.

    ``offset=1`` is the previous-token score; ``offset=period-1`` on repeated tokens is the
    induction score; ``offset=period`` is the duplicate-token score.
    """
    patterns = _patterns(cache, _n_layers(cache))
    seq = patterns.shape[-1]
    start = max(first_query, offset)
    if start >= seq:
        raise ValueError(f"no query position has a key {offset} back in a sequence of {seq} tokens")
    queries = torch.arange(start, seq)
    diag = patterns[..., queries, queries - offset]  # layer batch head n_queries
    return diag.mean(dim=(1, 3))


def previous_token_scores(cache: ActivationCache) -> Float[torch.Tensor, "layer head"]:
    """How much each head attends to the token right before the query (skipping position 0's trivial case)."""
    return diagonal_attention_score(cache, offset=1, first_query=1)


def induction_scores(cache: ActivationCache, half_len: int) -> Float[torch.Tensor, "layer head"]:
    """On ``<bos> + A + A`` (``A`` of ``half_len`` tokens): attention from each token of the
    second ``A`` to the token *after* its earlier copy, averaged."""
    return diagonal_attention_score(cache, offset=half_len - 1, first_query=half_len + 1)


def duplicate_token_scores(cache: ActivationCache, half_len: int) -> Float[torch.Tensor, "layer head"]:
    """On ``<bos> + A + A``: attention from each token of the second ``A`` to its earlier copy."""
    return diagonal_attention_score(cache, offset=half_len, first_query=half_len + 1)


def next_token_accuracy(logits: Float[torch.Tensor, "batch seq vocab"], tokens: Int[torch.Tensor, "batch seq"],
                        mask: torch.Tensor | None = None) -> float:
    """Fraction of positions whose argmax prediction equals the next token (where ``mask`` is true)."""
    correct = logits[:, :-1].argmax(-1) == tokens[:, 1:]
    if mask is not None:
        correct = correct[mask[:, :-1]]
    return correct.float().mean().item()
