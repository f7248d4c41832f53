"""Circuit analysis: head detectors, ablation, direct logit attribution, OV/QK and composition.

Each works on any TransformerLens 4.x model (a zoo model or GPT-2 on Colab).
The head detectors read ``blocks.{l}.attn.hook_pattern`` from a cache and never
look inside the model; the rest use the standard hook names and the bridge's
``W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, QK, OV``, so a chapter can run them on
whatever a learner loaded.
"""
from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from transformer_lens import ActivationCache, FactoredMatrix


def _patterns(cache: ActivationCache, n_layers: int) -> Float[torch.Tensor, "layer batch head query key"]:
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(n_layers)])


def _n_layers(cache: ActivationCache) -> int:
    n_layers = sum(1 for name in cache.keys() if name.endswith("attn.hook_pattern"))
    if n_layers == 0:
        raise ValueError("the cache holds no attention patterns (blocks.{l}.attn.hook_pattern); run "
                         "model.run_with_cache(tokens) without a names_filter, or one that keeps hook_pattern")
    return n_layers


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


# ---------------------------------------------------------------------------
# Losses on the repeated half: the quantity an induction circuit exists to lower
# ---------------------------------------------------------------------------

def per_token_loss(logits: Float[torch.Tensor, "batch seq vocab"],
                   tokens: Int[torch.Tensor, "batch seq"]) -> Float[torch.Tensor, "batch seq_minus_1"]:
    """Cross-entropy of predicting ``tokens[:, p + 1]`` from position ``p``."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


def repeated_half_loss(logits: Float[torch.Tensor, "batch seq vocab"], tokens: Int[torch.Tensor, "batch seq"],
                       half_len: int) -> float:
    """Mean loss on ``<bos> + A + A`` where only induction can help: predicting A's 2nd..last token the
    second time (positions ``half_len + 1`` to ``2 * half_len - 1`` predict the next token)."""
    return per_token_loss(logits, tokens)[:, half_len + 1:2 * half_len].mean().item()


def repeated_half_mask(tokens: Int[torch.Tensor, "batch seq"], half_len: int) -> Bool[torch.Tensor, "batch seq"]:
    """True at the positions :func:`repeated_half_loss` averages over (for :func:`next_token_accuracy`)."""
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, half_len + 1:2 * half_len] = True
    return mask


# ---------------------------------------------------------------------------
# Ablation: remove a head and see what breaks (the causal test of a hypothesis)
# ---------------------------------------------------------------------------

Head = tuple[int, int]


def mean_head_z(model, tokens: Int[torch.Tensor, "batch seq"]) -> Float[torch.Tensor, "layer seq head d_head"]:
    """Each head's output ``hook_z`` averaged over the batch (position by position).

    Mean ablation replaces a head's output with this: it removes what the head says about *these*
    tokens while keeping its average contribution, so the rest of the model stays on distribution
    (zero ablation can break a model for reasons that have nothing to do with the head's job).
    """
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    return torch.stack([cache[name].mean(0) for name in names])


def ablation_hooks(model, heads: list[Head], mode: str = "zero",
                   means: Float[torch.Tensor, "layer seq head d_head"] | None = None) -> list:
    """Forward hooks on ``blocks.{l}.attn.hook_z`` that zero (or mean-ablate) the given heads.

    Pass them to ``model.run_with_hooks(tokens, fwd_hooks=...)``. ``mode="mean"`` needs ``means``
    from :func:`mean_head_z`, computed on sequences of the same length.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs means=mean_head_z(model, reference_tokens)")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))

    def make_hook(layer: int, layer_heads: list[int]):
        def hook(z, hook):
            z = z.clone()
            if mode == "zero":
                z[:, :, layer_heads] = 0.0
            else:
                z[:, :, layer_heads] = means[layer, : z.shape[1], layer_heads].to(z.dtype)
            return z

        return hook

    return [(f"blocks.{layer}.attn.hook_z", make_hook(layer, hs)) for layer, hs in sorted(by_layer.items())]


def ablated_repeated_half_loss(model, tokens: Int[torch.Tensor, "batch seq"], half_len: int, heads: list[Head],
                               mode: str = "zero", means: torch.Tensor | None = None) -> float:
    """The repeated-half loss with ``heads`` ablated together."""
    if mode == "mean" and means is None:
        means = mean_head_z(model, tokens)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, heads, mode, means))
    return repeated_half_loss(logits, tokens, half_len)


def head_ablation_losses(model, tokens: Int[torch.Tensor, "batch seq"], half_len: int,
                         mode: str = "zero") -> Float[torch.Tensor, "layer head"]:
    """The repeated-half loss with each head ablated on its own: which heads the task needs."""
    means = mean_head_z(model, tokens) if mode == "mean" else None
    cfg = model.cfg
    return torch.tensor([[ablated_repeated_half_loss(model, tokens, half_len, [(layer, head)], mode, means)
                          for head in range(cfg.n_heads)] for layer in range(cfg.n_layers)])


# ---------------------------------------------------------------------------
# Direct logit attribution: which heads write the answer
# ---------------------------------------------------------------------------

def head_outputs(model, cache: ActivationCache) -> Float[torch.Tensor, "layer head batch seq d_model"]:
    """What each head adds to the residual stream: ``hook_z @ W_O`` (the shared bias ``b_O`` left out)."""
    z = torch.stack([cache[f"blocks.{layer}.attn.hook_z"] for layer in range(model.cfg.n_layers)])
    return torch.einsum("lbphd,lhdm->lhbpm", z, model.W_O.to(z.dtype))


def residual_components(model, cache: ActivationCache) -> tuple[list[str], Float[torch.Tensor, "component batch seq d_model"]]:
    """Everything written to the final residual stream, one component at a time; they sum to it exactly.

    Names: ``embed`` (token and position embeddings, as ``blocks.0.hook_resid_pre`` holds them),
    each head ``a{l}.{h}`` (``z @ W_O``), each layer's attention bias ``a{l}.b_O`` (what
    ``hook_attn_out`` adds beyond its heads: ``b_O``, zero for models without one) and each MLP
    ``m{l}``. Works for sequential and parallel (Pythia) blocks alike, since both add
    ``hook_attn_out`` and ``hook_mlp_out`` to the stream.
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    needed = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.{name}" for l in range(n_layers)
                                            for name in ("attn.hook_z", "hook_attn_out", "hook_mlp_out")
                                            if name != "hook_mlp_out" or not model.cfg.attn_only]
    missing = [name for name in needed if name not in cache.keys()]
    if missing:
        raise ValueError(f"the cache lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}: run "
                         "model.run_with_cache(tokens) without a names_filter")
    heads = head_outputs(model, cache)
    names, parts = ["embed"], [cache["blocks.0.hook_resid_pre"]]
    for layer in range(n_layers):
        names += [f"a{layer}.{head}" for head in range(n_heads)] + [f"a{layer}.b_O"]
        parts += list(heads[layer]) + [cache[f"blocks.{layer}.hook_attn_out"] - heads[layer].sum(0)]
        if not model.cfg.attn_only:
            names.append(f"m{layer}")
            parts.append(cache[f"blocks.{layer}.hook_mlp_out"])
    return names, torch.stack(parts)


def final_norm_affine(model) -> tuple[Float[torch.Tensor, " d_model"], Float[torch.Tensor, " d_model"]]:
    """The final norm's effective per-dimension weight and bias: ``ln_final(x) = normalised(x) * weight + bias``.

    Read from the module's behaviour rather than its parameters, so it holds whatever the convention:
    LayerNorm, RMSNorm, Gemma's ``1 + weight``, or a folded norm (weight 1, bias 0). Probed with a
    large zero-mean vector of +-c, whose normalised form is +-1 under LayerNorm and RMSNorm alike.
    """
    d_model = model.cfg.d_model
    signs = torch.tensor([(-1.0) ** i for i in range(d_model)])
    if d_model % 2:  # odd width: make the mean zero again without a zero entry
        signs[:3] = torch.tensor([1.0, 1.0, -2.0])
    rms = signs.pow(2).mean().sqrt()
    parameter = next(model.parameters())
    probe = torch.stack([torch.zeros(d_model), signs * 1e3])[None].to(parameter.device, parameter.dtype)
    with torch.no_grad():
        out = model.ln_final(probe)[0].float()
    bias = out[0]
    return (out[1] - bias) * rms / signs.to(out.device), bias


def logit_attribution(model, cache: ActivationCache, correct: Int[torch.Tensor, "batch pos"],
                      wrong: Int[torch.Tensor, "batch pos"] | None = None, positions=slice(None)
                      ) -> tuple[list[str], Float[torch.Tensor, "component batch pos"]]:
    """Direct logit attribution along ``W_U[:, correct] - W_U[:, wrong]`` (or ``W_U[:, correct]``), every component.

    The one recipe of the course. Frozen at the scale the cache recorded, the final norm is linear:
    each component of :func:`residual_components` is centred (LayerNorm only), divided by
    ``ln_final.hook_scale``, multiplied by the norm's weight and dotted with the direction. The norm's
    bias and ``b_U`` along the direction are one more component, ``final_bias``, so the components sum
    to the logit (difference) the model produced. ``positions`` picks the cache positions (a slice or
    a list) matching the last axis of ``correct``; ``correct[b, p]`` is read at ``positions[p]``.
    Direct only: what a component does through later components is not counted here.
    """
    names, parts = residual_components(model, cache)
    parts = parts[:, :, positions]
    if tuple(parts.shape[1:3]) != tuple(correct.shape):
        raise ValueError(f"correct must be [batch, pos] for the {tuple(parts.shape[1:3])} (batch, positions) picked "
                         f"from the cache, got {tuple(correct.shape)}")
    if wrong is not None and wrong.shape != correct.shape:
        raise ValueError(f"wrong must have the shape of correct {tuple(correct.shape)}, got {tuple(wrong.shape)}")
    weight, bias = final_norm_affine(model)
    parts = parts.float()
    if model.cfg.normalization_type in ("LN", "LNPre"):
        parts = parts - parts.mean(-1, keepdim=True)
    if model.cfg.normalization_type is not None:
        parts = parts / cache["ln_final.hook_scale"][:, positions].float()
    parts = parts * weight
    W_U = model.W_U.float()
    b_U = getattr(model, "b_U", None)
    b_U = torch.zeros(W_U.shape[1], device=W_U.device) if b_U is None else b_U.float()
    correct = correct.to(W_U.device)
    direction = W_U[:, correct]  # d_model batch pos
    offset = b_U[correct]
    if wrong is not None:
        wrong = wrong.to(W_U.device)
        direction = direction - W_U[:, wrong]
        offset = offset - b_U[wrong]
    values = torch.einsum("cbpm,mbp->cbp", parts, direction)
    final_bias = torch.einsum("m,mbp->bp", bias, direction) + offset
    return names + ["final_bias"], torch.cat([values, final_bias[None]])


def head_direct_logit_attribution(model, cache: ActivationCache,
                                  tokens: Int[torch.Tensor, "batch seq"]) -> Float[torch.Tensor, "layer head batch seq_minus_1"]:
    """Each head's direct contribution to the logit of the true next token, at every position.

    The heads' rows of :func:`logit_attribution` (the course's one recipe) along the unembedding of
    the token that came next: a head's output, centred (LayerNorm), divided by the final norm's
    recorded scale, times its weight, dotted with ``W_U[:, next token]``. Direct only: effects through
    later heads are not counted. With the embeddings, biases and MLPs it sums to the logit.
    """
    names, values = logit_attribution(model, cache, tokens[:, 1:], positions=slice(None, -1))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    rows = [names.index(f"a{layer}.{head}") for layer in range(n_layers) for head in range(n_heads)]
    return values[rows].view(n_layers, n_heads, *values.shape[1:])


# ---------------------------------------------------------------------------
# Reading the weights: OV (what a head copies) and QK (where it looks)
# ---------------------------------------------------------------------------

def full_ov_circuit(model, layer: int, head: int) -> FactoredMatrix:
    """``W_E W_V W_O W_U`` as a ``[d_vocab, d_vocab]`` FactoredMatrix: row ``s`` is how attending to
    token ``s`` moves each output logit. A copying head has a dominant diagonal.

    Layer norms are left out (their scales are per-token constants that do not change a row's argmax).
    Under grouped-query attention (Gemma) the head reads its group's shared ``W_V``.
    """
    value_head = head // (model.cfg.n_heads // model.W_V.shape[1])
    return FactoredMatrix(model.W_E, model.W_V[layer, value_head]) @ FactoredMatrix(model.W_O[layer, head], model.W_U)


def copying_accuracy(circuit: FactoredMatrix | Float[torch.Tensor, "src dst"],
                     token_ids: Int[torch.Tensor, " n"] | None = None, chunk: int = 256) -> float:
    """Fraction of source tokens ``s`` whose largest entry in row ``s`` is column ``s`` (the token itself).

    ``token_ids`` restricts the rows and columns (e.g. to real words, not special tokens); rows are
    materialised ``chunk`` at a time, so a 50k-token vocabulary fits in memory.
    """
    n = circuit.shape[-1]
    ids = torch.arange(n) if token_ids is None else torch.as_tensor(token_ids)
    hits = 0
    for start in range(0, len(ids), chunk):
        rows_ids = ids[start:start + chunk]
        if isinstance(circuit, FactoredMatrix):
            rows = circuit.A[rows_ids] @ circuit.B[:, ids]
        else:
            rows = circuit[rows_ids][:, ids]
        hits += (rows.argmax(-1) == torch.arange(start, start + len(rows_ids), device=rows.device)).sum().item()
    return hits / len(ids)


def positional_attention_pattern(model, layer: int, head: int) -> Float[torch.Tensor, "query key"]:
    """The attention pattern a head would have if it saw positions only (no token identity).

    Each position's input is ``W_pos[p]`` plus the average token embedding, through the layer's
    ``ln1``; scores are ``x QK x^T / sqrt(d_head)`` with ``QK = W_Q W_K^T`` (query and key biases
    left out), causally masked, softmaxed. Meaningful for layer 0, which reads only the embeddings.
    """
    if model.cfg.positional_embedding_type != "standard":
        raise ValueError(f"positional_attention_pattern needs learned absolute positions (W_pos); this model uses "
                         f"{model.cfg.positional_embedding_type!r} positions")
    x = model.W_pos + model.W_E.mean(0)
    ln1 = getattr(model.blocks[layer], "ln1", None)
    if ln1 is not None and model.cfg.normalization_type is not None:
        x = ln1(x)
    scores = (x @ model.QK[layer, head] @ x.T).AB
    if model.cfg.use_attn_scale:
        scores = scores / (model.cfg.d_head ** 0.5)
    n = scores.shape[-1]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool, device=scores.device), 1), float("-inf"))
    return scores.softmax(-1)


# ---------------------------------------------------------------------------
# Composition: which earlier head feeds which later one
# ---------------------------------------------------------------------------

def composition_score(left: FactoredMatrix, right: FactoredMatrix) -> float:
    """``||left right||_F / (||left||_F ||right||_F)``: how much of what ``left`` writes ``right`` reads.

    For K-composition ``left`` is an earlier head's OV circuit and ``right`` a later head's ``QK^T``.
    """
    return ((left @ right).norm() / (left.norm() * right.norm())).item()


def composition_scores(model, mode: str) -> Float[torch.Tensor, "layer head layer head"]:
    """``scores[l1, h1, l2, h2]``: composition of head ``l1.h1`` into ``l2.h2`` via its Q, K or V input.

    Wraps TransformerLens' ``all_composition_scores`` (entries with ``l1 >= l2`` are 0).
    Compare with :func:`composition_baseline`: random matrices already score above 0.
    """
    return model.all_composition_scores(mode).scores


def composition_baseline(d_model: int, d_head: int, samples: int = 200, seed: int = 0) -> float:
    """Mean composition score of two random rank-``d_head`` matrices: the "no composition" level."""
    generator = torch.Generator().manual_seed(seed)

    def random_circuits() -> Float[torch.Tensor, "samples d_model d_model"]:
        return (torch.randn(samples, d_model, d_head, generator=generator)
                @ torch.randn(samples, d_head, d_model, generator=generator))

    left, right = random_circuits(), random_circuits()
    norms = torch.linalg.matrix_norm(left @ right) / (torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right))
    return norms.mean().item()


# ---------------------------------------------------------------------------
# Naming heads from their scores
# ---------------------------------------------------------------------------

def heads_above(scores: Float[torch.Tensor, "layer head"], threshold: float) -> list[Head]:
    """``(layer, head)`` pairs whose score reaches ``threshold``, in order."""
    return [(int(layer), int(head)) for layer, head in (scores >= threshold).nonzero().tolist()]


def head_types(cache: ActivationCache, half_len: int, threshold: float = 0.6) -> dict[str, list[Head]]:
    """Previous-token, duplicate-token and induction heads on a ``<bos> + A + A`` cache."""
    return {
        "previous_token_heads": heads_above(previous_token_scores(cache), threshold),
        "duplicate_token_heads": heads_above(duplicate_token_scores(cache, half_len), threshold),
        "induction_heads": heads_above(induction_scores(cache, half_len), threshold),
    }
