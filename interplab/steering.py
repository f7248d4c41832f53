"""Steering and directional ablation: add a direction, remove it, or bake its removal into the weights.

- **Directions** (:func:`mean_difference_directions`): the difference of two prompt sets' mean residuals at
  one position, one candidate per layer. :func:`actadd_vector` (Turner et al.'s ActAdd: one contrastive pair)
  and :func:`caa_vector` (Rimsky et al.'s CAA: many pairs) are the same computation. Vectors come back raw,
  not normalised: their norm says how far the two sets sit apart, and an added vector's scale matters.
- **Addition** (:func:`activation_addition_hooks`): add ``coeff * vector`` to the residual entering one layer,
  at every position, the prompt only, or from a position on.
- **Directional ablation** (:func:`directional_ablation_hooks`): change the direction's component of *every*
  write into the residual stream (:func:`residual_write_hooks`: the embeddings, each attention and each MLP
  output), so no layer can write it back. ``offsets=None`` is Arditi et al. (2024)'s projection,
  ``h <- h - (h.u) u``; per-write offsets ``c_k`` (:func:`write_point_means`, the benign prompts' mean
  component) give affine ablation, ``h <- h - (h.u - c_k) u`` (Marshall et al. 2024). In small models the
  benign mean along a refusal direction is often far from zero, so projecting it to zero moves benign
  prompts too (to refusal, in chat-4l); setting it to the benign mean keeps them on their side. Either way
  every prompt ends up with the same value along the direction, which costs any task that used it for
  something else (``start``/``stop`` restrict the edit to some positions).
- **Protecting other behaviour** (:func:`protect_subspace`): remove from a direction the main directions along
  which prompts that must keep working (capability tasks) vary, before ablating it; :func:`select_protection`
  chooses how many from scores on a selection split (never the prompts the result is reported on).
- **Weight orthogonalisation** (:func:`orthogonalize_weights`): the same ablation as a weight edit of a copy
  of the model (embedding, positional embedding, every attention and MLP output matrix, offsets in biases),
  so the edited model runs with no hooks. It gives the hook version's logits to float precision.
- **Scores** from one forward pass: :func:`refusal_score` / :func:`help_score` (the share of prompts whose
  most likely first response token is a refusal / help token, ids from the world), :func:`benign_kl`;
  :func:`select_refusal_direction` ranks per-layer candidates the way Arditi et al. do.
- **Monitors**: :func:`threshold_at_fpr`, :func:`recall_at_fpr` (probes themselves come from
  :mod:`interplab.probes`).
- **Chat templates** (:data:`CHAT_TEMPLATES`, :func:`format_chat`, :func:`chat_prompt_tokens`): real chat
  models expect their own turn markers; the same cells run on Gemma with its template.

Layers are numbered as residual positions: layer ``l`` is the stream entering block ``l``
(``blocks.{l}.hook_resid_pre``), and layer ``n_layers`` is the output of the last block
(``blocks.{n_layers-1}.hook_resid_post``). Works on any TransformerLens 4.x bridge (zoo models, GPT-2, Pythia,
Gemma); results are CPU tensors.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence, Union

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.probes import _check_labels, collect_activations, difference_of_means

Tokens = Int[torch.Tensor, "batch seq"]
Hook = tuple[str, Callable]
# a prompt batch: anything with ``.tokens`` [batch, seq] and ``.last`` [batch] (e.g. chat.ChatPrompts),
# or a (tokens, last) pair; ``last`` is each prompt's final token, where the response is decided
PromptBatch = Union[tuple[torch.Tensor, torch.Tensor], object]
Positions = Union[None, int, Int[torch.Tensor, " batch"], Sequence[int]]


# ---------------------------------------------------------------------------------------------
# checks and names
# ---------------------------------------------------------------------------------------------

def _check_layer(model, layer: int) -> int:
    n = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
        raise ValueError(f"layer {layer!r} is out of range: residual layers run 0..{n} (layer l enters block l; "
                         f"{n} is the output of the last block)")
    return layer


def resid_hook(model, layer: int) -> str:
    """The hook name of residual layer ``layer``: ``blocks.{l}.hook_resid_pre``, or the last block's
    ``hook_resid_post`` for ``layer == n_layers``."""
    _check_layer(model, layer)
    n = model.cfg.n_layers
    return f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post"


def _check_vector(model, vector, what: str = "direction") -> Float[torch.Tensor, " d_model"]:
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"the {what} must be a tensor [d_model], got {type(vector).__name__}")
    d = model.cfg.d_model
    if vector.ndim != 1 or vector.shape[0] != d:
        raise ValueError(f"the {what} has shape {tuple(vector.shape)} but this model's residual stream has d_model="
                         f"{d}: compute it on this model (a direction from another model does not fit)")
    if not vector.is_floating_point():
        raise TypeError(f"the {what} must be floating point, got {vector.dtype}")
    if not torch.isfinite(vector).all():
        raise ValueError(f"the {what} contains NaN or inf; recompute it (empty prompt sets give NaN means)")
    if vector.norm() == 0:
        raise ValueError(f"the {what} is zero: there is nothing to add or remove")
    return vector.detach().cpu()


def _unit(model, direction) -> Float[torch.Tensor, " d_model"]:
    vector = _check_vector(model, direction).double()
    return vector / vector.norm()


def _check_coeff(coeff: float) -> float:
    if isinstance(coeff, torch.Tensor):
        if coeff.numel() != 1:
            raise ValueError(f"coeff must be one number, got a tensor of shape {tuple(coeff.shape)}")
        coeff = float(coeff)
    if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or not math.isfinite(coeff):
        raise ValueError(f"coeff must be a finite number, got {coeff!r}; sweep finite values such as 0, 1, 2, 4")
    return float(coeff)


def _unpack(prompts: PromptBatch) -> tuple[Tokens, Int[torch.Tensor, " batch"]]:
    """``(tokens, last)`` from a world's prompt batch (``.tokens``, ``.last``) or a pair."""
    if hasattr(prompts, "tokens") and hasattr(prompts, "last"):
        tokens, last = prompts.tokens, prompts.last
    elif isinstance(prompts, (tuple, list)) and len(prompts) == 2:
        tokens, last = prompts
    else:
        raise TypeError("prompts must have .tokens and .last (e.g. chat.ChatPrompts) or be a (tokens [batch, seq], "
                        f"last [batch]) pair; got {type(prompts).__name__}")
    tokens, last = torch.as_tensor(tokens), torch.as_tensor(last).long()
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens must be integer ids [batch, seq]; got shape {tuple(tokens.shape)}, {tokens.dtype}")
    if tokens.shape[0] == 0:
        raise ValueError("the prompt set is empty: give at least one prompt")
    if last.shape != (tokens.shape[0],):
        raise ValueError(f"last must hold one position per prompt ([{tokens.shape[0]}]), got {tuple(last.shape)}")
    if (last < 0).any() or (last >= tokens.shape[1]).any():
        raise ValueError(f"last positions must lie in 0..{tokens.shape[1] - 1}")
    return tokens, last


def _check_tokens(tokens, what: str) -> Tokens:
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what} must be integer token ids [batch, seq]; got shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError(f"{what} is empty: a contrastive direction needs at least one prompt on each side")
    return tokens


# ---------------------------------------------------------------------------------------------
# directions
# ---------------------------------------------------------------------------------------------

def mean_difference_directions(model, tokens_a: Tokens, tokens_b: Tokens, positions_a: Positions = -1,
                               positions_b: Positions = -1, layers: Sequence[int] | None = None,
                               batch_size: int = 256, progress: bool = False) -> dict[int, Float[torch.Tensor, " d"]]:
    """``{layer: mean(resid_a) - mean(resid_b)}`` at one position per prompt, for each residual layer.

    ``positions_*``: an int shared by every prompt (``-1`` = the last column) or one position per prompt
    (right-padded batches: each prompt's last token). ``layers`` default to every residual layer
    ``0..n_layers`` (see :func:`resid_hook`). The vectors are raw (not normalised): layer 0 holds only the
    embedding at that position, and norms grow with depth.
    """
    tokens_a, tokens_b = _check_tokens(tokens_a, "tokens_a"), _check_tokens(tokens_b, "tokens_b")
    layers = list(range(model.cfg.n_layers + 1)) if layers is None else [_check_layer(model, l) for l in layers]
    if not layers:
        raise ValueError("layers is empty: name at least one residual layer")
    names = [resid_hook(model, layer) for layer in layers]
    acts_a = collect_activations(model, tokens_a, names, positions_a, batch_size=batch_size, progress=progress)
    acts_b = collect_activations(model, tokens_b, names, positions_b, batch_size=batch_size, progress=progress)
    mask = torch.cat([torch.ones(tokens_a.shape[0], dtype=torch.bool), torch.zeros(tokens_b.shape[0], dtype=torch.bool)])
    return {layer: difference_of_means(torch.cat([acts_a[name], acts_b[name]]), mask)
            for layer, name in zip(layers, names)}


def actadd_vector(model, prompt_a: Int[torch.Tensor, " seq"], prompt_b: Int[torch.Tensor, " seq"], layer: int,
                  position_a: int = -1, position_b: int = -1) -> Float[torch.Tensor, " d"]:
    """ActAdd (Turner et al. 2023): one contrastive pair's residual difference at ``layer`` (e.g. "love" - "hate")."""
    prompt_a, prompt_b = _check_tokens(prompt_a, "prompt_a"), _check_tokens(prompt_b, "prompt_b")
    if prompt_a.shape[0] != 1 or prompt_b.shape[0] != 1:
        raise ValueError("ActAdd takes one prompt per side ([seq] or [1, seq]); for many pairs use caa_vector")
    return mean_difference_directions(model, prompt_a, prompt_b, position_a, position_b, [layer])[layer]


def caa_vector(model, tokens_a: Tokens, tokens_b: Tokens, layer: int, positions_a: Positions = -1,
               positions_b: Positions = -1) -> Float[torch.Tensor, " d"]:
    """Contrastive activation addition (Rimsky et al. 2024): the mean difference over many pairs at ``layer``."""
    return mean_difference_directions(model, tokens_a, tokens_b, positions_a, positions_b, [layer])[layer]


def protect_subspace(direction: Float[torch.Tensor, " d"], keep_acts: Float[torch.Tensor, "n d"], n_components: int,
                     center: Float[torch.Tensor, " d"] | None = None) -> Float[torch.Tensor, " d"]:
    """``direction`` minus its part in the top ``n_components`` principal directions of ``keep_acts``.

    ``keep_acts``: residuals (same layer and position as the direction) of prompts whose behaviour an ablation
    must leave alone, e.g. capability tasks. Rows are taken relative to ``center`` (default: their own mean;
    pass the benign requests' mean to also protect how far they sit from benign requests). Ablating the
    result cannot erase what those prompts vary along (in the top components), at the price of a direction
    less aligned with the original: check that it still removes the behaviour."""
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 0:
        raise ValueError(f"n_components must be an int >= 0, got {n_components!r}")
    if not isinstance(keep_acts, torch.Tensor) or keep_acts.ndim != 2 or keep_acts.shape[0] == 0:
        raise ValueError("keep_acts must be a non-empty [n, d_model] tensor (one residual per prompt to protect)")
    vector = torch.as_tensor(direction).detach().cpu().double()
    if vector.ndim != 1 or vector.shape[0] != keep_acts.shape[1]:
        raise ValueError(f"the direction has shape {tuple(vector.shape)} but keep_acts rows have {keep_acts.shape[1]} "
                         "dimensions: take both at the same hook")
    if not torch.isfinite(keep_acts).all() or not torch.isfinite(vector).all():
        raise ValueError("direction and keep_acts must be finite")
    if n_components > min(keep_acts.shape):
        raise ValueError(f"n_components={n_components} exceeds what {keep_acts.shape[0]} rows of dimension "
                         f"{keep_acts.shape[1]} can span")
    acts = keep_acts.detach().cpu().double()
    centre = acts.mean(0) if center is None else torch.as_tensor(center).detach().cpu().double()
    _, _, components = torch.linalg.svd(acts - centre, full_matrices=False)
    basis = components[:n_components]
    kept = vector - basis.T @ (basis @ vector)
    if kept.norm() <= 1e-6 * vector.norm():
        raise ValueError("the direction lies inside the protected subspace: nothing is left; use fewer components")
    return kept.to(torch.as_tensor(direction).dtype)


PROTECTION_RULES = ("least damage", "first under target")


def select_protection(candidates: Sequence[Mapping[str, float]], max_refusal: float = 0.05, max_drop: float = 0.02,
                      rule: Literal["least damage", "first under target"] = "least damage") -> int | None:
    """The number of protected components ``k`` (:func:`protect_subspace`) to use, from scores on a *selection*
    split: prompts that share nothing with the ones the result will be reported on.

    ``candidates``: one dict per ``k`` with ``"k"``, ``"refusal"`` (harmful prompts still refused with the
    protected direction ablated), ``"help_drop"`` and ``"capability_drop"`` (base minus ablated rates).

    - ``"least damage"`` (default): among the ``k`` whose refusal is at most ``max_refusal``, the one with the
      smallest larger drop (ties: fewer components). Removal must still work; after that, harm nothing else.
    - ``"first under target"``: the fewest components whose refusal is at most ``max_refusal`` and both drops
      at most ``max_drop``. It stops where the selection split's drop just passes the target, so on fresh
      prompts it misses the target about as often as it meets it (the winner's curse of a threshold).

    Returns None when no candidate qualifies. Never pass evaluation-split scores here."""
    if rule not in PROTECTION_RULES:
        raise ValueError(f"rule must be one of {PROTECTION_RULES}, got {rule!r}")
    rows = list(candidates)
    if not rows:
        raise ValueError("no candidates given: score at least one k (k=0 is the unprotected direction)")
    needed = ("k", "refusal", "help_drop", "capability_drop")
    for row in rows:
        missing = [key for key in needed if key not in row]
        if missing:
            raise ValueError(f"each candidate needs {needed}; one lacks {missing}")
        if not all(math.isfinite(float(row[key])) for key in needed):
            raise ValueError(f"candidate k={row['k']} has a NaN or inf score")
    worst = lambda row: max(float(row["help_drop"]), float(row["capability_drop"]))  # noqa: E731
    removed = [row for row in rows if float(row["refusal"]) <= max_refusal]
    if rule == "first under target":
        removed = [row for row in removed if worst(row) <= max_drop]
        return int(min(removed, key=lambda row: row["k"])["k"]) if removed else None
    return int(min(removed, key=lambda row: (worst(row), row["k"]))["k"]) if removed else None


# ---------------------------------------------------------------------------------------------
# addition
# ---------------------------------------------------------------------------------------------

def _row_bound(bound, batch: int, device) -> torch.Tensor | None:
    if bound is None:
        return None
    bound = torch.as_tensor(bound, device=device).long()
    if bound.ndim == 0:
        return bound.expand(batch)
    if bound.shape != (batch,):
        raise ValueError(f"start/stop must be an int or one position per prompt ([{batch}]); got shape "
                         f"{tuple(bound.shape)} for a batch of {batch}")
    return bound


def _window(act: torch.Tensor, start, stop) -> torch.Tensor:
    """[batch, seq, 1] of ones at positions ``start <= t < stop`` of each row (either bound may be None)."""
    t = torch.arange(act.shape[1], device=act.device)[None]
    keep = torch.ones(act.shape[0], act.shape[1], dtype=torch.bool, device=act.device)
    lo, hi = _row_bound(start, act.shape[0], act.device), _row_bound(stop, act.shape[0], act.device)
    if lo is not None:
        keep &= t >= lo[:, None]
    if hi is not None:
        keep &= t < hi[:, None]
    return keep[..., None].to(act.dtype)


def add_vector_hook(vector: Float[torch.Tensor, " d"], coeff: float, start: Positions = None,
                    stop: Positions = None) -> Callable:
    """A hook function adding ``coeff * vector`` at positions ``start <= t < stop`` (None: unbounded).

    ``start``/``stop`` are an int or one position per prompt: ``stop=prompt_lengths`` steers the prompt only,
    ``start=prompt_lengths`` only the generated tokens. Generation reruns the whole sequence each step
    (``generation.generate``), so the positions stay those of the full sequence."""
    coeff = _check_coeff(coeff)
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1 or not torch.isfinite(vector).all():
        raise ValueError("vector must be a finite 1-D tensor [d_model]")
    vector = vector.detach()

    def hook_fn(act, hook):
        if act.shape[-1] != vector.shape[0]:
            raise ValueError(f"the vector has {vector.shape[0]} dimensions but {hook.name} has {act.shape[-1]}")
        added = coeff * vector.to(device=act.device, dtype=act.dtype)
        if start is None and stop is None:
            return act + added
        return act + _window(act, start, stop) * added

    return hook_fn


def activation_addition_hooks(model, vector: Float[torch.Tensor, " d"], layer: int, coeff: float = 1.0,
                              start: Positions = None, stop: Positions = None) -> list[Hook]:
    """``fwd_hooks`` adding ``coeff * vector`` to residual layer ``layer`` (see :func:`add_vector_hook`)."""
    vector = _check_vector(model, vector, "vector")
    return [(resid_hook(model, layer), add_vector_hook(vector, _check_coeff(coeff), start, stop))]


# ---------------------------------------------------------------------------------------------
# directional ablation
# ---------------------------------------------------------------------------------------------

def _learned_positions(model) -> bool:
    return getattr(model.cfg, "positional_embedding_type", "standard") == "standard" and \
        "hook_pos_embed" in model.hook_dict


def residual_write_hooks(model) -> list[str]:
    """Every hook whose output is added into the residual stream: ``hook_embed``, ``hook_pos_embed`` (learned
    positions only; rotary models rotate queries and keys instead) and each block's ``hook_attn_out`` and
    ``hook_mlp_out``. The final residual is their sum, so changing all of them changes the whole stream."""
    names = ["hook_embed"] + (["hook_pos_embed"] if _learned_positions(model) else [])
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise ValueError(f"this model has no hooks {missing[:3]}: directional ablation needs every write into the "
                         "residual stream (attention-only models are not supported)")
    return names


def _check_offsets(model, offsets) -> dict[str, float]:
    names = residual_write_hooks(model)
    if offsets is None:
        return {name: 0.0 for name in names}
    if not isinstance(offsets, Mapping):
        raise TypeError("offsets must map each write hook to a value (as write_point_means returns), or be None")
    missing = [n for n in names if n not in offsets]
    extra = [n for n in offsets if n not in names]
    if missing or extra:
        raise ValueError(f"offsets must name exactly the write hooks of residual_write_hooks(model); missing "
                         f"{missing[:3]}, unknown {extra[:3]}. Compute them with write_point_means(model, ...)")
    values = {n: float(offsets[n]) for n in names}
    bad = [n for n, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"offsets at {bad[:3]} are NaN or inf; recompute them on a non-empty benign set")
    return values


def write_point_means(model, tokens: Tokens, positions: Positions, direction: Float[torch.Tensor, " d"],
                      batch_size: int = 256) -> dict[str, float]:
    """The mean component along ``direction`` (normalised) of each residual write, at one position per prompt.

    Pass benign prompts at their last token: :func:`directional_ablation_hooks` with these offsets sets each
    write's component to its benign mean (affine ablation) instead of zero."""
    unit = _unit(model, direction)
    tokens = _check_tokens(tokens, "tokens")
    names = residual_write_hooks(model)
    acts = collect_activations(model, tokens, names, positions, batch_size=batch_size, progress=False)
    for name in names:
        if acts[name].ndim != 2:
            raise ValueError("give one position per prompt (an int or [batch]), not None")
    return {name: float((acts[name].double() @ unit).mean()) for name in names}


def _ablation_hook(unit: torch.Tensor, offset: float, start: Positions = None, stop: Positions = None) -> Callable:
    def hook_fn(act, hook):
        u = unit.to(device=act.device, dtype=act.dtype)
        change = ((act @ u) - offset)[..., None] * u
        if start is None and stop is None:
            return act - change
        return act - _window(act, start, stop) * change

    return hook_fn


def directional_ablation_hooks(model, direction: Float[torch.Tensor, " d"],
                               offsets: Mapping[str, float] | None = None, start: Positions = None,
                               stop: Positions = None) -> list[Hook]:
    """``fwd_hooks`` that set ``direction``'s component of every residual write, at every position.

    ``offsets=None``: project it out, ``h <- h - (h.u) u`` (Arditi et al. 2024). With ``offsets`` from
    :func:`write_point_means`: ``h <- h - (h.u - c_k) u``, the component set to ``c_k`` at write ``k``
    (affine ablation). ``u`` is ``direction`` normalised.

    ``start``/``stop`` (an int or one position per prompt) ablate only at positions ``start <= t < stop``:
    ``start=last`` leaves the request's own tokens alone and edits the decision and the answer;
    ``start=last, stop=last + 1`` edits the decision only. No weight edit does that
    (:func:`orthogonalize_weights` is the every-position version)."""
    unit = _unit(model, direction).float()
    values = _check_offsets(model, offsets)
    bounds = []
    for bound in (start, stop):
        if bound is not None and not isinstance(bound, int):
            bound = torch.as_tensor(bound).long()
            if bound.ndim != 1:
                raise ValueError(f"start/stop must be an int or one position per prompt ([batch]), got shape "
                                 f"{tuple(bound.shape)}")
        bounds.append(bound)
    return [(name, _ablation_hook(unit, values[name], *bounds)) for name in residual_write_hooks(model)]


def _inner(module):
    return getattr(module, "original_component", module)


def _write_module(model, name: str):
    """The module whose output the write hook ``name`` sees, found through the bridge (as
    ``knowledge.mlp_output_weight`` finds W_out): ``embed``, ``pos_embed``, ``blocks.{l}.attn.o``,
    ``blocks.{l}.mlp.out``."""
    if name == "hook_embed":
        return _inner(model.embed)
    if name == "hook_pos_embed":
        return _inner(model.pos_embed)
    layer, kind = int(name.split(".")[1]), name.split(".")[2]
    try:
        bridge = model.blocks[layer].attn.o if kind == "hook_attn_out" else model.blocks[layer].mlp.out
    except AttributeError as error:
        raise ValueError(f"cannot find the output projection behind {name} in this bridge; weight "
                         "orthogonalisation needs blocks.{l}.attn.o and blocks.{l}.mlp.out") from error
    return _inner(bridge)


def _embedding_scales(model, names: list[str]) -> dict[str, float]:
    """How each embedding hook relates to its weight table: ``hook = scale * W[index]`` (Gemma multiplies
    token embeddings by sqrt(d_model)); a clear error where it is not a scaled lookup."""
    device = model_device(model)
    seq = min(8, model.cfg.n_ctx)
    tokens = (torch.arange(seq, device=device) % model.cfg.d_vocab)[None]
    captured: dict[str, torch.Tensor] = {}
    hooks = [(n, lambda act, hook, n=n: captured.__setitem__(n, act.detach())) for n in names]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    scales = {}
    for name in names:
        weight = _write_module(model, name).weight.detach()
        table = weight[tokens[0]] if name == "hook_embed" else weight[:seq]
        out = captured[name][0].to(table.dtype)
        scale = float((out * table).sum() / (table * table).sum())
        if not torch.allclose(out, scale * table, rtol=1e-4, atol=1e-6):
            raise NotImplementedError(f"{name} is not a scaled row of its weight table in this model, so the "
                                      "embedding cannot be orthogonalised; use directional_ablation_hooks instead")
        scales[name] = scale
    return scales


@torch.no_grad()
def _project_output(module, unit: torch.Tensor, offset: float) -> None:
    """Make a Linear/Conv1D write ``(I - u u^T) W x + (I - u u^T) b + offset u``."""
    weight = module.weight
    u = unit.to(device=weight.device, dtype=torch.float64)
    w = weight.double()
    if type(module).__name__ == "Conv1D":  # GPT-2 stores [in, out]: y = x W + b
        w = w - torch.outer(w @ u, u)
    else:  # nn.Linear stores [out, in]: y = W x + b
        w = w - torch.outer(u, u @ w)
    weight.copy_(w.to(weight.dtype))
    bias = getattr(module, "bias", None)
    if bias is None:
        if offset == 0:
            return
        module.bias = torch.nn.Parameter(torch.zeros(u.shape[0], dtype=weight.dtype, device=weight.device),
                                         requires_grad=weight.requires_grad)
        bias = module.bias
    b = bias.double()
    bias.copy_((b - (b @ u) * u + offset * u).to(bias.dtype))


def _detached_memo(model) -> dict[int, torch.Tensor]:
    """Activation caches some bridges keep after a forward pass with gradients (e.g. an attention pattern) are
    not graph leaves and cannot be deep-copied: copy them detached."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return memo


def orthogonalize_weights(model, direction: Float[torch.Tensor, " d"], offsets: Mapping[str, float] | None = None):
    """A deep copy of ``model`` whose weights never write ``direction``: the weight form of
    :func:`directional_ablation_hooks` (same ``offsets``), so the copy runs with no hooks.

    Edits the token embedding (and learned positional embedding) rows, each attention output matrix and each
    MLP output matrix: ``W <- (I - u u^T) W``; biases ``b <- b - (b.u) u + c_k u`` (a zero bias is added where
    a layer has none and ``c_k != 0``). A tied unembedding (GPT-2, Gemma) is untied first, so reading the
    logits is unchanged. Models that normalise after an output projection (Gemma 2's post-norms) cannot be
    orthogonalised exactly: a clear error."""
    unit = _unit(model, direction)
    values = _check_offsets(model, offsets)
    if getattr(model.cfg, "use_normalization_before_and_after", False):
        raise NotImplementedError("this model normalises each attention/MLP output before adding it to the "
                                  "residual (e.g. Gemma 2), so no edit of the output matrices removes the "
                                  "direction exactly; use directional_ablation_hooks instead")
    names = residual_write_hooks(model)
    embeds = [n for n in names if n in ("hook_embed", "hook_pos_embed")]
    scales = _embedding_scales(model, embeds)
    edited = copy.deepcopy(model, _detached_memo(model))
    with torch.no_grad():
        embedding, unembedding = _inner(edited.embed), _inner(edited.unembed)
        if getattr(unembedding, "weight", None) is embedding.weight:  # tied: keep reading logits with the original
            unembedding.weight = torch.nn.Parameter(embedding.weight.detach().clone(),
                                                    requires_grad=embedding.weight.requires_grad)
        for name in names:
            module = _write_module(edited, name)
            if name in embeds:
                weight = module.weight
                u = unit.to(device=weight.device)
                w = weight.double()
                w = w - torch.outer(w @ u, u) + (values[name] / scales[name]) * u
                weight.copy_(w.to(weight.dtype))
            else:
                _project_output(module, unit, values[name])
    return edited


# ---------------------------------------------------------------------------------------------
# scores from the first response token
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def next_token_logits(model, prompts: PromptBatch, fwd_hooks: Sequence[Hook] = (), batch_size: int = 256
                      ) -> Float[torch.Tensor, "batch vocab"]:
    """Logits of each prompt's first response token (read at ``last``), with ``fwd_hooks`` active."""
    tokens, last = _unpack(prompts)
    device = model_device(model)
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start:start + batch_size].to(device)
        width = int(last[start:start + batch_size].max()) + 1
        logits = model.run_with_hooks(chunk[:, :width], fwd_hooks=list(fwd_hooks)) if fwd_hooks \
            else model(chunk[:, :width])
        rows = torch.arange(chunk.shape[0], device=device)
        out.append(logits[rows, last[start:start + batch_size].to(device)].float().cpu())
    return torch.cat(out)


def _token_set(tokens, d_vocab: int, what: str) -> torch.Tensor:
    ids = torch.as_tensor([tokens] if isinstance(tokens, int) else list(tokens), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError(f"{what} is empty: give the world's token ids (e.g. chat.REFUSAL_TOKEN)")
    if (ids < 0).any() or (ids >= d_vocab).any():
        raise ValueError(f"{what} {ids.tolist()} lie outside the vocabulary 0..{d_vocab - 1}")
    return ids


def first_token_rate(model, prompts: PromptBatch, token_ids: int | Sequence[int], fwd_hooks: Sequence[Hook] = ()
                     ) -> float:
    """Share of prompts whose most likely first response token is one of ``token_ids``."""
    ids = _token_set(token_ids, model.cfg.d_vocab, "token_ids")
    top = next_token_logits(model, prompts, fwd_hooks).argmax(-1)
    return float(torch.isin(top, ids).double().mean())


def refusal_score(model, prompts: PromptBatch, refusal_tokens: int | Sequence[int],
                  fwd_hooks: Sequence[Hook] = ()) -> float:
    """Share of prompts the model starts to refuse (first response token in ``refusal_tokens``, e.g.
    ``chat.REFUSAL_TOKEN``). One forward pass; greedy generation starts with the same token."""
    return first_token_rate(model, prompts, refusal_tokens, fwd_hooks)


def help_score(model, prompts: PromptBatch, help_tokens: int | Sequence[int], fwd_hooks: Sequence[Hook] = ()) -> float:
    """Share of prompts the model starts to help with (first response token in ``help_tokens``, e.g.
    ``chat.HELP_TOKENS``). Whether the rest of the answer is good needs generation."""
    return first_token_rate(model, prompts, help_tokens, fwd_hooks)


def benign_kl(model, prompts: PromptBatch, fwd_hooks: Sequence[Hook]) -> float:
    """Mean KL(clean || hooked) of the first response token's distribution: how much an intervention changes
    prompts it should leave alone (Arditi et al. filter candidate directions on it)."""
    clean = next_token_logits(model, prompts).log_softmax(-1)
    hooked = next_token_logits(model, prompts, fwd_hooks).log_softmax(-1)
    return float((clean.exp() * (clean - hooked)).sum(-1).mean())


# ---------------------------------------------------------------------------------------------
# selecting the refusal direction
# ---------------------------------------------------------------------------------------------

@dataclass
class DirectionCandidate:
    """One layer's difference-of-means direction, scored three ways."""

    layer: int
    norm: float
    """Norm of the raw difference of means."""
    refusal_ablated: float
    """Harmful prompts still refused with the direction ablated (want: low)."""
    refusal_added: float
    """Benign prompts refused with the direction added at its layer (want: high)."""
    benign_refusal_ablated: float
    """Benign prompts refused with the direction ablated (want: low; projection often breaks this)."""
    kl_ablated: float
    """KL on benign prompts under ablation (want: small)."""
    passes: bool = False


@dataclass
class RefusalDirectionSelection:
    """Arditi-style selection over candidate layers. ``best_layer`` is None when no candidate passes."""

    candidates: list[DirectionCandidate]
    best_layer: int | None
    directions: dict[int, torch.Tensor] = field(repr=False)
    offsets: dict[int, dict[str, float] | None] = field(repr=False)
    ablation: str = "affine"

    @property
    def direction(self) -> Float[torch.Tensor, " d"]:
        """The chosen raw direction."""
        if self.best_layer is None:
            raise ValueError("no candidate passed the filters; look at the table (str(selection)), loosen kl_max "
                             "or min_refusal_added, or try ablation='affine'")
        return self.directions[self.best_layer]

    def hooks(self, model) -> list[Hook]:
        """Ablation hooks for the chosen direction (with its offsets when affine)."""
        return directional_ablation_hooks(model, self.direction, self.offsets[self.best_layer])

    def table(self) -> list[dict]:
        return [vars(c).copy() for c in self.candidates]

    def __str__(self) -> str:
        lines = [f"{'layer':>5} {'norm':>7} {'harm refused, ablated':>22} {'benign refused, added':>22} "
                 f"{'benign refused, ablated':>24} {'benign KL':>9}  pass"]
        for c in self.candidates:
            mark = "*" if c.layer == self.best_layer else ("yes" if c.passes else "")
            lines.append(f"{c.layer:>5} {c.norm:>7.2f} {c.refusal_ablated:>22.2f} {c.refusal_added:>22.2f} "
                         f"{c.benign_refusal_ablated:>24.2f} {c.kl_ablated:>9.3f}  {mark}")
        return "\n".join(lines)


def select_refusal_direction(model, harmful: PromptBatch, benign: PromptBatch, refusal_tokens: int | Sequence[int],
                             directions: Mapping[int, torch.Tensor] | None = None,
                             ablation: Literal["affine", "projection"] = "affine", coeff: float = 1.0,
                             kl_max: float = 0.1, min_refusal_added: float = 0.5, progress: bool = False
                             ) -> RefusalDirectionSelection:
    """Score each candidate direction (default: :func:`mean_difference_directions` harmful - benign at the
    last prompt token, every layer) and pick one, as Arditi et al. (2024) do:

    - ablate it at every write (``ablation``: affine with benign means, or projection) and count harmful
      prompts still refused;
    - add ``coeff`` x the raw direction at its layer to benign prompts and count refusals;
    - KL on benign prompts under ablation.

    A candidate passes when ``refusal_added >= min_refusal_added`` and ``kl_ablated <= kl_max``; the best
    passing one has the lowest ablated refusal (ties: lower KL). Use held-out prompts here, not the ones the
    directions came from."""
    if ablation not in ("affine", "projection"):
        raise ValueError(f"ablation must be 'affine' or 'projection', got {ablation!r}")
    coeff = _check_coeff(coeff)
    harmful_tokens, harmful_last = _unpack(harmful)
    benign_tokens, benign_last = _unpack(benign)
    if directions is None:
        directions = mean_difference_directions(model, harmful_tokens, benign_tokens, harmful_last, benign_last)
    if not directions:
        raise ValueError("no candidate directions given")
    directions = {_check_layer(model, int(l)): _check_vector(model, v) for l, v in directions.items()}
    candidates, offsets = [], {}
    for layer, vector in tqdm(directions.items(), desc="scoring candidates", disable=not progress):
        offsets[layer] = write_point_means(model, benign_tokens, benign_last, vector) if ablation == "affine" else None
        ablate = directional_ablation_hooks(model, vector, offsets[layer])
        add = activation_addition_hooks(model, vector, layer, coeff)
        candidate = DirectionCandidate(
            layer=layer, norm=float(vector.norm()),
            refusal_ablated=refusal_score(model, (harmful_tokens, harmful_last), refusal_tokens, ablate),
            refusal_added=refusal_score(model, (benign_tokens, benign_last), refusal_tokens, add),
            benign_refusal_ablated=refusal_score(model, (benign_tokens, benign_last), refusal_tokens, ablate),
            kl_ablated=benign_kl(model, (benign_tokens, benign_last), ablate))
        candidate.passes = candidate.refusal_added >= min_refusal_added and candidate.kl_ablated <= kl_max
        candidates.append(candidate)
    passing = [c for c in candidates if c.passes]
    best = min(passing, key=lambda c: (c.refusal_ablated, c.kl_ablated)).layer if passing else None
    if best is None:
        warnings.warn("no candidate direction passed the filters (see the table)", stacklevel=2)
    return RefusalDirectionSelection(candidates, best, dict(directions), offsets, ablation)


# ---------------------------------------------------------------------------------------------
# monitors: thresholds at a false-positive rate
# ---------------------------------------------------------------------------------------------

def _scores(scores) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach().cpu().double()
    if scores.ndim != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores


def threshold_at_fpr(negative_scores: Float[torch.Tensor, " n"], fpr: float = 0.01) -> float:
    """The threshold that flags (score > threshold) at most a ``fpr`` share of ``negative_scores``.

    Set it on a calibration split of negatives and apply it to new data: the false-positive rate there is
    what a deployed monitor would see, which need not be ``fpr``."""
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    negatives = _scores(negative_scores).sort(descending=True).values
    allowed = int(math.floor(fpr * negatives.numel() + 1e-9))
    return float(negatives[allowed])


def recall_at_fpr(scores: Float[torch.Tensor, " n"], labels, fpr: float = 0.01, threshold: float | None = None
                  ) -> float:
    """Share of positives flagged (score > threshold). The threshold defaults to :func:`threshold_at_fpr` on
    these rows' own negatives (the optimistic convention); pass one set on a calibration split instead."""
    scores = _scores(scores)
    labels = _check_labels(labels, scores.numel())
    positive = labels == 1
    if not positive.any() or positive.all():
        raise ValueError("recall at a false-positive rate needs both positives and negatives")
    if threshold is None:
        threshold = threshold_at_fpr(scores[~positive], fpr)
    return float((scores[positive] > threshold).double().mean())


def false_positive_rate(scores: Float[torch.Tensor, " n"], labels, threshold: float) -> float:
    """Share of negatives flagged (score > threshold)."""
    scores = _scores(scores)
    labels = _check_labels(labels, scores.numel())
    if (labels == 1).all():
        raise ValueError("no negatives among the labels")
    return float((scores[labels == 0] > threshold).double().mean())


# ---------------------------------------------------------------------------------------------
# chat templates for real models
# ---------------------------------------------------------------------------------------------

CHAT_TEMPLATES: dict[str, str] = {
    # Gemma / Gemma 2 instruction-tuned models (google/gemma-2-2b-it); the tokenizer adds <bos> in front
    "gemma": "<start_of_turn>user\n{request}<end_of_turn>\n<start_of_turn>model\n",
    # interplab's toy chat world (chat-4l); world prompts are built by interplab.worlds.chat directly
    "chat-world": "USER : {request} ASSISTANT :",
}


def format_chat(requests: str | Sequence[str], template: str = "gemma") -> list[str]:
    """Each request wrapped in a chat template, ready for the model to write its answer.

    A chat model's refusal direction lives at the tokens *after* the request (for Gemma, the
    ``<end_of_turn>\\n<start_of_turn>model\\n`` tokens); without the template the model sees plain text and
    may not refuse at all. ``template`` is a name in :data:`CHAT_TEMPLATES` or a format string with
    ``{request}``. Gemma's string is what ``tokenizer.apply_chat_template([{"role": "user", "content": r}],
    add_generation_prompt=True, tokenize=False)`` returns, minus the ``<bos>``."""
    if isinstance(requests, str):
        requests = [requests]
    if not requests:
        raise ValueError("no requests given")
    pattern = CHAT_TEMPLATES.get(template, template)
    if "{request}" not in pattern:
        raise ValueError(f"unknown template {template!r}: use one of {', '.join(CHAT_TEMPLATES)} or a format string "
                         "containing {request}")
    return [pattern.format(request=r) for r in requests]


def chat_prompt_tokens(model, requests: str | Sequence[str], template: str = "gemma", tokenizer=None
                       ) -> tuple[Tokens, Int[torch.Tensor, " batch"]]:
    """``(tokens, last)``: the templated requests tokenized (``<bos>`` first), right-padded, ``last`` = each
    prompt's final token (where the answer starts). Feed it to every function here that takes prompts."""
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer; pass tokenizer=... (the one it was trained with)")
    rows = []
    for text in format_chat(requests, template):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        rows.append(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(r) - 1 for r in rows])


__all__ = ["CHAT_TEMPLATES", "DirectionCandidate", "RefusalDirectionSelection", "actadd_vector",
           "activation_addition_hooks", "add_vector_hook", "benign_kl", "caa_vector", "chat_prompt_tokens",
           "directional_ablation_hooks", "false_positive_rate", "first_token_rate", "format_chat", "help_score",
           "mean_difference_directions", "next_token_logits", "orthogonalize_weights", "protect_subspace", "recall_at_fpr",
           "select_protection", "PROTECTION_RULES",
           "refusal_score", "resid_hook", "residual_write_hooks", "select_refusal_direction", "threshold_at_fpr",
           "write_point_means"]
