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


def facts_variables(cache: ActivationCache, prompts) -> list[Variable]:
    """Variables of the facts world (``facts-4l``): what the model should know about the subject.

    For a cache taken at each prompt's last subject token (``positions=prompts.subject_last ==
    position``, see :func:`facts_subject_mask`) of :class:`~interplab.worlds.facts.FactPrompts`:

    - one family per relation (``city``, ``job``, ...; 10 values each): the subject's object for that
      relation is o, over the rows whose subject is known (it has facts);
    - ``subject`` (one per known subject): the subject is s. Finer than its attributes: an SAE that
      learns one latent per subject recovers these and may leave the attribute values to combinations.
    """
    from interplab.worlds import facts

    if len(prompts.subjects) != cache.tokens.shape[0]:
        raise ValueError(f"the cache holds {cache.tokens.shape[0]} prompts but {len(prompts.subjects)} were given: "
                         f"pass the FactPrompts the cache was built from")
    index = {s: i for i, s in enumerate(facts.KNOWN_SUBJECTS)}
    subject = torch.tensor([index.get(s, -1) for s in prompts.subjects])[cache.prompt]
    known = subject >= 0
    values = facts.FACTS[subject.clamp_min(0)]  # [n, relations]
    variables: list[Variable] = []
    for r, relation in enumerate(facts.RELATIONS):
        for o, word in enumerate(facts.OBJECTS[r]):
            _keep(variables, f"{relation} = {word}", relation, known & (values[:, r] == o), known)
    for s, name in enumerate(facts.KNOWN_SUBJECTS):
        _keep(variables, f"subject = {name}", "subject", subject == s, None)
    return variables


def facts_subject_mask(prompts) -> Bool[torch.Tensor, "batch seq"]:
    """True at each prompt's last subject token: the position filter for :func:`facts_variables`' cache."""
    position = torch.arange(prompts.tokens.shape[1])
    return position[None] == prompts.subject_last[:, None]


__all__ = ["facts_subject_mask", "facts_variables", "induction_variables"]
