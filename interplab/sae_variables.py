"""The worlds' ground-truth variables, one boolean per cached token, for judging SAE latents.

Each builder takes the :class:`~interplab.saes.ActivationCache` the SAE is evaluated on and
returns :class:`~interplab.saes.Variable` objects over its rows. A variable is defined inside a
*population* that controls its confounds: "the previous token is X" only where a previous word
exists. Variables with no positive or no negative row in their population are left out (a small
cache may miss a rare word), so count ``len(variables)`` rather than assuming the full set.
"""
from __future__ import annotations

import torch
from jaxtyping import Bool

from interplab.saes import ActivationCache, Variable


def _keep(variables: list[Variable], name: str, family: str, labels: torch.Tensor,
          population: torch.Tensor | None) -> None:
    inside = labels if population is None else labels[population]
    if inside.any() and not inside.all():
        variables.append(Variable(name, family, labels, population))


def induction_variables(cache: ActivationCache, repeated: Bool[torch.Tensor, "batch seq"] | None = None
                        ) -> list[Variable]:
    """Variables of the induction world (``attn2-induction``) over ``cache``'s rows.

    - ``current token`` (61): the token at this position is word w.
    - ``previous token`` (61): the token before is word w, over positions >= 2 (position 1 follows ``<bos>``).
      Layer 0's previous-token head writes it, so it is there from ``blocks.1.hook_resid_pre`` on.
    - with ``repeated`` (``InductionBatch.repeated``: the next token is a copy of an earlier one):
      ``next token`` (61): the next token is word w, over the positions where induction can predict it
      (computed by the layer-1 induction head, so look for it at ``blocks.1.hook_resid_post``);
      and ``repeated`` (1): this position's next token is predictable, over all positions but the last.
    """
    from interplab.worlds import induction

    words = induction.vocabulary()
    first = induction.FIRST_WORD_ID
    current = cache.token
    previous = cache.tokens[cache.prompt, (cache.position - 1).clamp_min(0)]
    has_previous = cache.position >= 2
    variables: list[Variable] = []
    for i, word in enumerate(words):
        _keep(variables, f"current token = {word}", "current token", current == first + i, None)
    for i, word in enumerate(words):
        _keep(variables, f"previous token = {word}", "previous token", previous == first + i, has_previous)
    if repeated is not None:
        if repeated.shape != cache.tokens.shape:
            raise ValueError(f"repeated must be [batch, seq] like the cache's tokens {tuple(cache.tokens.shape)}, got "
                             f"{tuple(repeated.shape)}")
        seq = cache.tokens.shape[1]
        not_last = cache.position < seq - 1
        predictable = repeated[cache.prompt, cache.position] & not_last
        following = cache.tokens[cache.prompt, (cache.position + 1).clamp_max(seq - 1)]
        for i, word in enumerate(words):
            _keep(variables, f"next token = {word}", "next token", following == first + i, predictable)
        _keep(variables, "repeated", "repeated", predictable, not_last)
    return variables


__all__ = ["induction_variables"]
