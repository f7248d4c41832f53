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


def _ioi_rows(cache: ActivationCache, batch) -> None:
    from interplab.worlds import ioi

    if len(batch) != cache.tokens.shape[0]:
        raise ValueError(f"the cache holds {cache.tokens.shape[0]} prompts but the IOIBatch has {len(batch)}: pass "
                         f"the batch the cache was built from")
    if not torch.equal(cache.tokens[:, :ioi.PROMPT_LEN], batch.tokens):
        raise ValueError("the cache's tokens are not this IOIBatch's prompts (or prompt + answer): pass the batch the "
                         "cache was built from")


def ioi_variables(cache: ActivationCache, batch, strict: bool = True) -> list[Variable]:
    """IOI-world (``ioi-2l``) variables over ``cache``'s rows, each within a population that controls a confound.

    ``cache`` holds ``batch.tokens`` or ``batch.with_answer()`` (positions 1-15: the answer at 15 is the IO).

    - ``name`` (30): this token is name k, among name tokens (so "is a name" alone cannot pass).
    - ``token class`` (3): this token is a name / a place / an object.
    - ``position`` (15 or 14): this token is at position p.
    - ``template`` (6): the prompt uses template t (every token of it).
    - ``ABBA`` (1): the IO came first, over positions >= 10 (where the repeated name first shows which it is).
    - ``IO at END`` (30): the IO is name k, at END; strictly among the prompts that contain k (as IO or as S),
      so a latent meaning "k occurs in this prompt" scores 0.5, not 1. ``strict=False`` asks among every
      END token instead, the lenient definition such a latent passes.
    """
    from interplab.worlds import ioi

    _ioi_rows(cache, batch)
    token = cache.token
    position = cache.position
    names = ioi.NAME_IDS
    is_name = (token[:, None] == names).any(-1)
    is_place = (token[:, None] == torch.tensor([ioi.word_id(w) for w in ioi.PLACES])).any(-1)
    is_object = (token[:, None] == torch.tensor([ioi.word_id(w) for w in ioi.OBJECTS])).any(-1)
    variables: list[Variable] = []
    for k, name in enumerate(ioi.NAMES):
        _keep(variables, f"name = {name}", "name", token == names[k], is_name)
    for label, labels in (("name", is_name), ("place", is_place), ("object", is_object)):
        _keep(variables, f"is a {label}", "token class", labels, None)
    for p in range(int(position.max()) + 1):
        _keep(variables, f"position = {p}", "position", position == p, None)
    template = batch.template[cache.prompt]
    for t in range(len(ioi.TEMPLATES)):
        _keep(variables, f"template = {t} ({ioi.TEMPLATES[t].split()[0]} ...)", "template", template == t, None)
    _keep(variables, "ABBA (IO first)", "ABBA", batch.abba[cache.prompt], position >= ioi.POS_S2)
    io, s = batch.io[cache.prompt], batch.s[cache.prompt]
    at_end = position == ioi.POS_END
    for k, name in enumerate(ioi.NAMES):
        contains = (io == names[k]) | (s == names[k])
        _keep(variables, f"IO at END = {name}", "IO at END", io == names[k], at_end & contains if strict else at_end)
    return variables


def ioi_diagnostic_variables(cache: ActivationCache, batch) -> list[Variable]:
    """Finer IOI variables that explain why some of :func:`ioi_variables` fail (not the world's variables themselves).

    - ``name @ pos p`` (30 per name slot 2, 4, 10 and 15): name k among the name tokens at that position.
      When these pass and ``name`` fails, the SAE split each name into one latent per slot.
    - ``IO at END (lenient)`` (30): IO is k among every END token; compare with the strict ``IO at END``.
    - ``IO at pos 2/4 (control)`` (1): the name at position 2 or 4 is the IO. That depends on the repeated name at
      position 10, which a causal model has not seen yet: every site should fail this one.
    """
    from interplab.worlds import ioi

    _ioi_rows(cache, batch)
    token, position = cache.token, cache.position
    variables: list[Variable] = []
    for slot in (ioi.POS_A, ioi.POS_B, ioi.POS_S2, ioi.PROMPT_LEN):
        here = position == slot
        for k, name in enumerate(ioi.NAMES):
            _keep(variables, f"name @ pos {slot} = {name}", f"name @ pos {slot}", token == ioi.NAME_IDS[k], here)
    lenient = [v for v in ioi_variables(cache, batch, strict=False) if v.family == "IO at END"]
    variables += [Variable(v.name, "IO at END (lenient)", v.labels, v.population) for v in lenient]
    early = (position == ioi.POS_A) | (position == ioi.POS_B)
    _keep(variables, "IO at pos 2/4 (control)", "IO at pos 2/4 (control)", token == batch.io[cache.prompt], early)
    return variables


def facts_subject_mask(prompts) -> Bool[torch.Tensor, "batch seq"]:
    """True at each prompt's last subject token: the position filter for :func:`facts_variables`' cache."""
    position = torch.arange(prompts.tokens.shape[1])
    return position[None] == prompts.subject_last[:, None]


__all__ = ["facts_subject_mask", "facts_variables", "induction_variables", "ioi_diagnostic_variables", "ioi_variables"]
