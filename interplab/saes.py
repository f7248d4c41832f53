"""Sparse autoencoders on a model's activations, judged against the world's ground truth.

An SAE rewrites an activation ``x`` (``[d_in]``) as a sparse, non-negative code ``f`` over many
more latents (``d_sae``) than dimensions, and back: ``x_hat = f @ W_dec + b_dec``. If the model
stores features in superposition, the hope is that each latent is one feature.

The workflow, in the order a notebook runs it:

1. :func:`cache_activations`: run the model once and keep the activations at one hook
   (``<bos>`` left out by default: it carries no world variable and dwarfs the rest).
2. :func:`train_sae`: train from the cache, ``architecture="standard"`` (ReLU + L1) or
   ``"topk"`` (Gao et al. 2024: exactly ``k`` latents fire, no L1 shrinkage; an AuxK loss
   makes dead latents reconstruct what the live ones miss). Decoder rows stay unit norm.
3. Evaluate the way SAEBench does: :func:`reconstruction_metrics` (L0, explained variance,
   dead fraction) and :func:`ce_metrics` (the loss with the SAE spliced into the forward pass;
   *CE recovered* against mean ablation, and against zero ablation to show why that cannot rank
   SAEs: zeroing a residual costs so much that every SAE scores about 1).
4. Then what no real-model tutorial can do: :func:`variable_recovery` asks, for every ground-truth
   variable of the world (see :mod:`interplab.sae_variables`), whether one latent detects it
   (AUROC), and :func:`probe_ceiling` asks whether a linear probe can read it at all at that site.
5. :func:`save_sae` / :func:`load_sae` use SAELens's on-disk layout (``cfg.json`` +
   ``sae_weights.safetensors``), so an SAE trained here loads in SAELens elsewhere.

Training works in normalised units (inputs scaled so that ``E||x||^2 = d_in``, so an L1
coefficient means the same at every site) and folds the scale back in at the end: the
returned SAE takes and returns raw activations. Everything returns CPU tensors.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.probes import collect_activations

ARCHITECTURES = ("standard", "topk")
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# SAELens reads a cfg.json without metadata.sae_lens_version >= 6 as a pre-6.0 file and rewrites its keys:
# this marks ours as the 6.x layout it is (it is not a claim that SAELens wrote it)
SAELENS_FORMAT_VERSION = "6.0.0"
Tokens = Int[torch.Tensor, "batch seq"]
PositionFilter = Union[None, slice, Sequence[int], Bool[torch.Tensor, "batch seq"]]


# ---------------------------------------------------------------- checking inputs

def _check_acts(acts, d_in: int | None = None, name: str = "activations") -> Float[torch.Tensor, "n d"]:
    if isinstance(acts, ActivationCache):
        acts = acts.acts
    if not isinstance(acts, torch.Tensor):
        raise TypeError(f"{name} must be a tensor [n, d_in] or an ActivationCache, got {type(acts).__name__}")
    if acts.ndim != 2:
        raise ValueError(f"{name} must be [n, d_in] (one row per token), got shape {tuple(acts.shape)}; flatten "
                         f"[batch, seq, d] with acts.reshape(-1, d) or use cache_activations")
    if not acts.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {acts.dtype}")
    if d_in is not None and acts.shape[1] != d_in:
        raise ValueError(f"{name} have d_model {acts.shape[1]} but the SAE expects d_in = {d_in}: use activations "
                         f"from the hook the SAE was trained on")
    if acts.shape[0] == 0:
        raise ValueError(f"{name} are empty")
    if not torch.isfinite(acts).all():
        bad = int((~torch.isfinite(acts)).any(-1).sum())
        raise ValueError(f"{name} contain NaN or inf in {bad} rows; drop those rows or find where they came from")
    return acts


# ---------------------------------------------------------------- the activation cache

@dataclass
class ActivationCache:
    """Activations at one hook, one row per kept token, with where each row came from.

    Row ``r`` is token ``position[r]`` of prompt ``prompt[r]`` (``tokens[prompt[r], position[r]]``),
    so ground-truth variables and the CE evaluation can be rebuilt from the cache alone.
    """

    acts: Float[torch.Tensor, "n d"]
    hook_name: str
    tokens: Int[torch.Tensor, "batch seq"]
    prompt: Int[torch.Tensor, " n"]
    position: Int[torch.Tensor, " n"]
    model_name: str | None = None

    def __len__(self) -> int:
        return self.acts.shape[0]

    @property
    def d_in(self) -> int:
        return self.acts.shape[1]

    @property
    def mask(self) -> Bool[torch.Tensor, "batch seq"]:
        """The ``[batch, seq]`` positions that were kept (the filter, reusable for splicing)."""
        mask = torch.zeros(self.tokens.shape, dtype=torch.bool)
        mask[self.prompt, self.position] = True
        return mask

    @property
    def token(self) -> Int[torch.Tensor, " n"]:
        """The token id at each row."""
        return self.tokens[self.prompt, self.position]


def _position_mask(positions: PositionFilter, batch: int, seq: int) -> Bool[torch.Tensor, "batch seq"]:
    if positions is None:
        return torch.ones(batch, seq, dtype=torch.bool)
    if isinstance(positions, slice):
        mask = torch.zeros(batch, seq, dtype=torch.bool)
        mask[:, positions] = True
        return mask
    if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool:
        if positions.shape != (batch, seq):
            raise ValueError(f"a boolean position mask must be [batch, seq] = [{batch}, {seq}], got "
                             f"{tuple(positions.shape)}")
        return positions.clone()
    index = torch.as_tensor(positions).long().reshape(-1)
    if ((index < -seq) | (index >= seq)).any():
        raise ValueError(f"positions must lie in [-{seq}, {seq}) for sequences of {seq} tokens, got {index.tolist()}")
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    mask[:, index % seq] = True
    return mask


def cache_activations(model, tokens: Tokens, hook_name: str, positions: PositionFilter = slice(1, None),
                      batch_size: int = 256, model_name: str | None = None, progress: bool = True) -> ActivationCache:
    """Run ``model`` once over ``tokens`` and keep the activations at ``hook_name`` as ``[n_tokens, d]`` rows.

    ``positions`` picks the tokens kept: a slice (default ``slice(1, None)``: every token but
    ``<bos>``), a list of positions, a ``[batch, seq]`` boolean mask, or None (all).
    ``model_name`` goes into the saved SAE's metadata (zoo models do not know their own name).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        raise ValueError("tokens must be an integer tensor [batch, seq]")
    if hook_name not in model.hook_dict:
        raise ValueError(f"unknown hook name {hook_name!r}; residual hooks are named like 'blocks.1.hook_resid_pre' "
                         f"(see model.hook_dict)")
    batch, seq = tokens.shape
    mask = _position_mask(positions, batch, seq)
    n = int(mask.sum())
    if n == 0:
        raise ValueError("the position filter keeps no token")
    prompt, position = mask.nonzero(as_tuple=True)
    acts = None
    row = 0
    starts = range(0, batch, batch_size)
    for start in tqdm(starts, desc=f"caching {hook_name}", leave=False, disable=not progress or len(starts) < 3):
        chunk = tokens[start:start + batch_size]
        out = collect_activations(model, chunk, hook_name, batch_size=batch_size, progress=False)[hook_name]
        kept = out[mask[start:start + batch_size]]
        if acts is None:
            acts = torch.empty(n, kept.shape[-1], dtype=torch.float32)
        acts[row:row + len(kept)] = kept
        row += len(kept)
    bad = ~torch.isfinite(acts).all(-1)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"the model produced NaN or inf at {hook_name} in {int(bad.sum())} of {n} kept tokens (first: "
                         f"prompt {int(prompt[first])}, position {int(position[first])}); an SAE cannot be trained on "
                         f"them: check the model's weights and these tokens, or leave those positions out")
    return ActivationCache(acts=acts, hook_name=hook_name, tokens=tokens.cpu(), prompt=prompt, position=position,
                           model_name=model_name)


# ---------------------------------------------------------------- the SAE

@dataclass
class SAEConfig:
    """What defines an SAE, and where it belongs (``hook_name`` of ``model_name``)."""

    d_in: int
    d_sae: int
    architecture: str = "topk"
    """``"standard"`` (ReLU, trained with L1) or ``"topk"`` (the k largest pre-activations, then ReLU)."""
    k: int | None = None
    model_name: str | None = None
    hook_name: str | None = None

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in and d_sae must be >= 1, got {self.d_in} and {self.d_sae}")
        if self.architecture == "topk":
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise ValueError(f"a TopK SAE needs 1 <= k <= d_sae = {self.d_sae}, got k = {self.k}: lower k or widen "
                             f"the SAE (d_sae)")
        elif self.k is not None:
            raise ValueError("k is for architecture='topk'; a standard SAE is made sparse by its L1 penalty")


class SAE(torch.nn.Module):
    """``f = act((x - b_dec) @ W_enc + b_enc)``, ``x_hat = f @ W_dec + b_dec`` (SAELens's parameter names and shapes).

    ``act`` is ReLU (``standard``) or TopK: keep the ``k`` largest pre-activations, ReLU them,
    zero the rest. Decoder rows ``W_dec[i]`` are unit norm, so a latent's activation is the
    length of its contribution to the reconstruction.
    """

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        generator = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        # the encoder starts as the decoder's transpose (smaller for ReLU, whose L1 then sparsifies)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone() * (1.0 if cfg.architecture == "topk" else 0.5))
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_in))

    def __repr__(self) -> str:
        k = f", k={self.cfg.k}" if self.cfg.k else ""
        return f"SAE({self.cfg.architecture}, d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}{k}, hook={self.cfg.hook_name})"

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.cfg.d_in:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"the SAE expects [..., d_in = {self.cfg.d_in}], got {shape}: use activations from "
                             f"{self.cfg.hook_name or 'the hook it was trained on'}")
        return x.to(self.W_enc.dtype)

    def pre_acts(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Encoder pre-activations, before ReLU / TopK."""
        return (self._input(x) - self.b_dec) @ self.W_enc + self.b_enc

    def topk(self, x: Float[torch.Tensor, "... d_in"]) -> tuple[Float[torch.Tensor, "... k"], Int[torch.Tensor, "... k"]]:
        """A TopK SAE's code as (values, latent indices): the sparse form training uses."""
        if self.cfg.architecture != "topk":
            raise ValueError("topk() is for TopK SAEs; use encode() for a standard SAE")
        values, indices = self.pre_acts(x).topk(self.cfg.k, dim=-1)
        return torch.relu(values), indices

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """The latent activations ``f`` (dense, mostly zeros)."""
        pre = self.pre_acts(x)
        if self.cfg.architecture == "standard":
            return torch.relu(pre)
        values, indices = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def decode(self, f: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_in"]:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_in"]:
        """The reconstruction ``x_hat``."""
        if self.cfg.architecture == "topk":
            values, indices = self.topk(x)
            return _decode_sparse(self.W_dec, values, indices) + self.b_dec
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm (after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_gradient_(self) -> None:
        """Drop the part of each decoder row's gradient along the row: it would only change the norm we fix."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad.sub_(along * self.W_dec)


def _decode_sparse(W_dec: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``sum_j values[..., j] * W_dec[indices[..., j]]``: k rows per token instead of a dense [n, d_sae] matmul.

    ``embedding_bag`` does the gather, weighting and sum in one kernel, forward and backward (twice as fast as
    gathering ``[n, k, d]`` rows and multiplying, measured at width 512, k 8, batch 4096).
    """
    k = values.shape[-1]
    out = torch.nn.functional.embedding_bag(indices.reshape(-1, k), W_dec, mode="sum",
                                            per_sample_weights=values.reshape(-1, k).to(W_dec.dtype))
    return out.reshape(*values.shape[:-1], W_dec.shape[1])


class _TopKEncode(torch.autograd.Function):
    """The k largest of ``x @ W_enc + bias`` per row; the backward pass touches only the chosen k columns per row.

    Autograd's own topk backward scatters into a dense [batch, d_sae] gradient and multiplies it by
    ``x`` in full; here the encoder's gradient is an ``index_add`` of ``batch * k`` rows instead.
    """

    @staticmethod
    def forward(ctx, x, W_enc, bias, k):
        values, indices = torch.addmm(bias, x, W_enc).topk(k, dim=-1)
        ctx.save_for_backward(x, indices)
        ctx.mark_non_differentiable(indices)
        ctx.d_sae = W_enc.shape[1]
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x, indices = ctx.saved_tensors
        flat = indices.reshape(-1)
        rows = (grad_values.unsqueeze(-1) * x.unsqueeze(1)).reshape(-1, x.shape[1])
        grad_W = torch.zeros(ctx.d_sae, x.shape[1], dtype=x.dtype).index_add_(0, flat, rows).T
        grad_bias = torch.zeros(ctx.d_sae, dtype=x.dtype).index_add_(0, flat, grad_values.reshape(-1))
        return None, grad_W, grad_bias, None, None


# ---------------------------------------------------------------- training

@dataclass
class TrainedSAE:
    """An SAE with how it was trained: the settings, a loss curve, the time and throughput."""

    sae: SAE
    settings: dict
    history: list[dict] = field(default_factory=list)
    """Every ``log_every`` steps: step, mse (normalised units, summed over dims), aux, l0, dead fraction."""
    seconds: float = 0.0
    tokens_seen: int = 0
    input_scale: float = 1.0
    """The constant the inputs were multiplied by during training (E||scale * x||^2 = d_in)."""
    dead_latents: Bool[torch.Tensor, " d_sae"] | None = None
    """Latents that had not fired for ``dead_after_tokens`` training tokens at the end."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / max(self.seconds, 1e-9)


def input_scale(acts: Float[torch.Tensor, "n d"], sample: int = 65536, seed: int = 0) -> float:
    """``sqrt(d / E||x||^2)``: the constant that gives inputs a mean squared norm of ``d`` (from a sample of rows)."""
    acts = _check_acts(acts)
    idx = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed))[:sample]
    mean_sq = acts[idx].double().pow(2).sum(1).mean()
    if mean_sq == 0:
        raise ValueError("every activation is zero: there is nothing to reconstruct")
    return float(math.sqrt(acts.shape[1] / mean_sq))


def _aux_k_loss(sae: SAE, x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor,
                aux_k: int) -> torch.Tensor:
    """Gao et al.'s AuxK: the top ``aux_k`` *dead* latents reconstruct what the live ones missed."""
    dead_index = dead.nonzero(as_tuple=True)[0]
    pre = torch.addmm(bias[dead_index], x, sae.W_enc[:, dead_index])  # only the dead latents' columns
    values, which = pre.topk(min(aux_k, len(dead_index)), dim=-1)
    # ReLU as in the main code: a negative pre-activation would learn a flipped decoder row and stay dead
    reconstruction = _decode_sparse(sae.W_dec, torch.relu(values), dead_index[which])
    return (reconstruction - residual).pow(2).sum(-1).mean()


@torch.no_grad()
def resample_dead_latents_(sae: SAE, acts: Float[torch.Tensor, "n d_in"], dead: Bool[torch.Tensor, " d_sae"],
                           optimizer: torch.optim.Optimizer | None = None, seed: int = 0) -> int:
    """Give each dead latent a new direction: an input the SAE reconstructs badly (Anthropic's recipe, simplified).

    Inputs are drawn with probability proportional to their squared reconstruction error; the
    decoder row becomes the unit vector of ``x - b_dec``, the encoder column the same vector
    scaled to 0.2 x the mean live encoder norm, ``b_enc`` 0, and the optimiser forgets their moments.
    Returns how many latents were resampled.
    """
    acts = _check_acts(acts, sae.cfg.d_in)
    dead_index = dead.nonzero(as_tuple=True)[0]
    if len(dead_index) == 0:
        return 0
    error = (sae(acts) - acts).pow(2).sum(-1)
    weights = error.pow(2).double()
    if weights.sum() == 0:
        weights = torch.ones_like(weights)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.multinomial(weights, len(dead_index), replacement=len(dead_index) > len(weights),
                               generator=generator)
    directions = acts[chosen] - sae.b_dec
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    encoder_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[dead_index] = directions
    sae.W_enc[:, dead_index] = directions.T * 0.2 * encoder_norm
    sae.b_enc[dead_index] = 0.0
    if optimizer is not None:
        for param, rows in ((sae.W_dec, (dead_index, slice(None))), (sae.W_enc, (slice(None), dead_index)),
                            (sae.b_enc, (dead_index,))):
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][rows] = 0.0
    return len(dead_index)


def train_sae(acts: ActivationCache | Float[torch.Tensor, "n d"], d_sae: int = 512, architecture: str = "topk",
              k: int | None = 8, l1_coefficient: float = 1.0, steps: int = 1500, batch_size: int = 4096,
              lr: float = 1e-3, aux_k: int = 32, aux_coefficient: float = 1 / 32, dead_after_tokens: int = 200_000,
              resample_at: Sequence[int] = (), normalize: bool = True, seed: int = 0, log_every: int = 100,
              progress: bool = True, model_name: str | None = None, hook_name: str | None = None) -> TrainedSAE:
    """Train an SAE from cached activations (Adam, batches drawn at random from the cache).

    Loss: squared error summed over dimensions, averaged over the batch, in normalised units,
    plus ``l1_coefficient * sum(f)`` (standard) or ``aux_coefficient * AuxK`` (TopK, with the
    ``aux_k`` largest dead latents; ``aux_k = 0`` switches it off). A latent is dead after
    ``dead_after_tokens`` training tokens without firing. ``resample_at``: steps at which dead
    latents are resampled (:func:`resample_dead_latents_`). ``b_dec`` starts at the data mean.
    Deterministic for a given ``seed`` (one thread).
    """
    cache = acts if isinstance(acts, ActivationCache) else None
    x_all = _check_acts(acts)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    if architecture == "standard":
        k = None
        if l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {l1_coefficient}")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}")
    if aux_k < 0 or aux_coefficient < 0:
        raise ValueError("aux_k and aux_coefficient must be >= 0")
    cfg = SAEConfig(d_in=x_all.shape[1], d_sae=d_sae, architecture=architecture, k=k,
                    model_name=model_name or (cache.model_name if cache else None),
                    hook_name=hook_name or (cache.hook_name if cache else None))
    settings = dict(d_sae=d_sae, architecture=architecture, k=k, l1_coefficient=l1_coefficient if k is None else None,
                    steps=steps, batch_size=batch_size, lr=lr, aux_k=aux_k if k else None,
                    aux_coefficient=aux_coefficient if k else None, dead_after_tokens=dead_after_tokens,
                    resample_at=list(resample_at), normalize=normalize, seed=seed, n_cached_tokens=x_all.shape[0])
    scale = input_scale(x_all, seed=seed) if normalize else 1.0
    generator = torch.Generator().manual_seed(seed)
    sae = SAE(cfg, seed=seed)
    with torch.no_grad():
        sample = x_all[torch.randperm(x_all.shape[0], generator=generator)[:65536]]
        sae.b_dec.copy_(sample.mean(0) * scale)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    history: list[dict] = []
    resample_steps = set(resample_at)
    start = time.perf_counter()
    with torch.enable_grad():
        for step in tqdm(range(1, steps + 1), desc=f"training {architecture} SAE", leave=False,
                         disable=not progress):
            x = x_all[torch.randint(0, x_all.shape[0], (batch_size,), generator=generator)] * scale
            # (x - b_dec) @ W_enc + b_enc, with b_dec folded into the bias: its gradient then costs a
            # vector-matrix product instead of a [batch, d_sae] x [d_sae, d_in] matmul
            bias = sae.b_enc - sae.b_dec @ sae.W_enc
            dead = since_fired >= dead_after_tokens
            if architecture == "topk":
                values, indices = _TopKEncode.apply(x, sae.W_enc, bias, k)
                values = torch.relu(values)
                x_hat = _decode_sparse(sae.W_dec, values, indices) + sae.b_dec
                fired = torch.zeros(d_sae, dtype=torch.bool)
                fired[indices[values > 0]] = True
                l0 = (values > 0).sum(-1).float().mean()
            else:
                f = torch.relu(torch.addmm(bias, x, sae.W_enc))
                x_hat = f @ sae.W_dec + sae.b_dec
                fired = (f > 0).any(0)
                l0 = (f > 0).sum(-1).float().mean()
            mse = (x_hat - x).pow(2).sum(-1).mean()
            loss = mse
            aux = torch.zeros(())
            if architecture == "topk" and aux_k > 0 and aux_coefficient > 0 and dead.any():
                aux = _aux_k_loss(sae, x, bias, (x - x_hat).detach(), dead, aux_k)
                loss = loss + aux_coefficient * aux
            if architecture == "standard" and l1_coefficient > 0:
                loss = loss + l1_coefficient * f.sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_gradient_()
            optimizer.step()
            sae.normalize_decoder_()
            since_fired += batch_size
            since_fired[fired] = 0
            if step in resample_steps:
                dead_now = since_fired >= dead_after_tokens
                with torch.no_grad():
                    pool = x_all[torch.randint(0, x_all.shape[0], (min(65536, x_all.shape[0]),),
                                               generator=generator)] * scale
                if resample_dead_latents_(sae, pool, dead_now, optimizer, seed=seed + step):
                    since_fired[dead_now] = 0
            if step % log_every == 0 or step == steps:
                history.append(dict(step=step, mse=float(mse.detach()), aux=float(aux.detach()), l0=float(l0),
                                    dead_fraction=float((since_fired >= dead_after_tokens).float().mean())))
    seconds = time.perf_counter() - start
    with torch.no_grad():  # fold the input scale in: the SAE now takes raw activations
        sae.b_enc.div_(scale)
        sae.b_dec.div_(scale)
    return TrainedSAE(sae=sae, settings=settings, history=history, seconds=seconds, tokens_seen=steps * batch_size,
                      input_scale=scale, dead_latents=since_fired >= dead_after_tokens)


# ---------------------------------------------------------------- reconstruction metrics

@dataclass
class ReconstructionMetrics:
    l0: float
    """Mean number of latents firing per token."""
    explained_variance: float
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``."""
    mse: float
    """Mean squared error per token, summed over dimensions, in raw units."""
    dead_fraction: float
    """Latents that never fire on these tokens."""
    n_tokens: int


@torch.no_grad()
def encode_all(sae: SAE, acts: ActivationCache | Float[torch.Tensor, "n d"], batch_size: int = 8192
               ) -> Float[torch.Tensor, "n d_sae"]:
    """``sae.encode`` over every row, in batches."""
    x = _check_acts(acts, sae.cfg.d_in)
    return torch.cat([sae.encode(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def reconstruction_metrics(sae: SAE, acts: ActivationCache | Float[torch.Tensor, "n d"],
                           batch_size: int = 8192) -> ReconstructionMetrics:
    """L0, explained variance, MSE and the dead fraction on held-out activations."""
    x = _check_acts(acts, sae.cfg.d_in).double()
    mean = x.mean(0)
    error = total = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i:i + batch_size]
        f = sae.encode(chunk.float())
        x_hat = sae.decode(f).double()
        error += float((x_hat - chunk).pow(2).sum())
        total += float((chunk - mean).pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    n = x.shape[0]
    return ReconstructionMetrics(l0=l0 / n, explained_variance=1 - error / max(total, 1e-30), mse=error / n,
                                 dead_fraction=float((~fired).float().mean()), n_tokens=n)


# ---------------------------------------------------------------- splicing into the model

def _mask_fn(positions: PositionFilter) -> Callable[[torch.Tensor], torch.Tensor | None]:
    def mask(act: torch.Tensor) -> torch.Tensor | None:
        if positions is None:
            return None
        if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool and positions.shape[0] != act.shape[0]:
            raise ValueError(f"the position mask has {positions.shape[0]} rows but the batch has {act.shape[0]}: "
                             f"pass the mask of these prompts")
        return _position_mask(positions, act.shape[0], act.shape[1]).to(act.device)[..., None]
    return mask


def splice_hook(sae: SAE, positions: PositionFilter = slice(1, None)) -> Callable:
    """A hook function that replaces the activation with the SAE's reconstruction at ``positions``.

    Default: every token but ``<bos>``, as in training (an SAE never saw ``<bos>``).
    """
    mask_of = _mask_fn(positions)

    def hook_fn(act, hook):
        x_hat = sae(act.float()).to(act.dtype)
        mask = mask_of(act)
        return x_hat if mask is None else torch.where(mask, x_hat, act)

    return hook_fn


def replace_hook(value: Float[torch.Tensor, " d"], positions: PositionFilter = slice(1, None)) -> Callable:
    """A hook function that replaces the activation by ``value`` (e.g. the mean: *mean ablation*) at ``positions``."""
    mask_of = _mask_fn(positions)

    def hook_fn(act, hook):
        filled = value.to(device=act.device, dtype=act.dtype).expand_as(act)
        mask = mask_of(act)
        return filled if mask is None else torch.where(mask, filled, act)

    return hook_fn


def latent_edit_hook(sae: SAE, latent: int, value: float = 0.0, positions: PositionFilter = slice(1, None)
                     ) -> Callable:
    """A hook function that sets one latent to ``value`` (0 ablates it) and keeps everything else, error included.

    ``x' = x + (value - f_latent(x)) * W_dec[latent]``: only that latent's contribution changes.
    """
    if not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent must be in [0, {sae.cfg.d_sae}), got {latent}")
    mask_of = _mask_fn(positions)

    def hook_fn(act, hook):
        with torch.no_grad():
            f = sae.encode(act.float())[..., latent]
        change = ((value - f)[..., None] * sae.W_dec[latent]).to(act.dtype)
        mask = mask_of(act)
        return act + (change if mask is None else change * mask)

    return hook_fn


def _hook_name(model, sae: SAE, hook_name: str | None) -> str:
    name = hook_name or sae.cfg.hook_name
    if name is None:
        raise ValueError("the SAE does not record its hook: pass hook_name='blocks.L.hook_...'")
    if name not in model.hook_dict:
        raise ValueError(f"unknown hook name {name!r} for this model; residual hooks are named like "
                         f"'blocks.1.hook_resid_pre'")
    residual = name.split(".")[-1] in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                                       "hook_mlp_out", "hook_embed", "hook_pos_embed")
    width = model.cfg.d_model if residual else None
    if width is not None and width != sae.cfg.d_in:
        raise ValueError(f"the SAE has d_in = {sae.cfg.d_in} but {name} of this model has d_model = {width}: use "
                         f"the model and hook the SAE was trained on (its cfg says {sae.cfg.model_name!r} at "
                         f"{sae.cfg.hook_name!r})")
    return name


@contextmanager
def splicing(model, sae: SAE, positions: PositionFilter = slice(1, None), hook_name: str | None = None) -> Iterator:
    """``with splicing(model, sae): model(tokens)`` runs with the SAE's reconstruction in place of the activation."""
    with model.hooks(fwd_hooks=[(_hook_name(model, sae, hook_name), splice_hook(sae, positions))]):
        yield model


# ---------------------------------------------------------------- cross-entropy when spliced in

@dataclass
class CEMetrics:
    """Mean next-token cross-entropy (nats) with the activation clean, reconstructed, mean- or zero-ablated."""

    clean: float
    spliced: float
    mean_ablated: float
    zero_ablated: float

    @property
    def delta(self) -> float:
        """The CE increase in nats when the SAE is spliced in."""
        return self.spliced - self.clean

    @property
    def recovered(self) -> float:
        """CE recovered against mean ablation: 1 = as good as clean, 0 = no better than the mean activation."""
        return (self.mean_ablated - self.spliced) / (self.mean_ablated - self.clean)

    @property
    def recovered_vs_zero(self) -> float:
        """The same against zero ablation: near 1 for any SAE when zeroing costs many nats, so it cannot rank them."""
        return (self.zero_ablated - self.spliced) / (self.zero_ablated - self.clean)


def _next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-prediction CE ``[batch, seq - 1]``: position p predicts token p + 1."""
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]


@torch.no_grad()
def ce_metrics(model, sae: SAE, tokens: Tokens, positions: PositionFilter = slice(1, None),
               mean_activation: Float[torch.Tensor, " d"] | None = None, hook_name: str | None = None,
               batch_size: int = 128, progress: bool = True) -> CEMetrics:
    """Next-token CE averaged over every prediction of ``tokens``, four ways.

    The activation at the SAE's hook is replaced at ``positions`` (default: all but ``<bos>``) by
    the SAE's reconstruction, by ``mean_activation`` (default: its mean over these tokens and
    positions) or by zeros. Predictions at every position count (``<bos>`` predicting the first
    word included), so a change anywhere shows up.
    """
    name = _hook_name(model, sae, hook_name)
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError("tokens must be an integer tensor [batch, seq] with seq >= 2")
    device = model_device(model)
    if mean_activation is None:
        acts = cache_activations(model, tokens, name, positions, batch_size=batch_size, progress=False)
        mean_activation = acts.acts.mean(0)
    mean_activation = torch.as_tensor(mean_activation).float()
    if mean_activation.shape != (sae.cfg.d_in,):
        raise ValueError(f"mean_activation must be [d_in = {sae.cfg.d_in}], got {tuple(mean_activation.shape)}")
    zero = torch.zeros(sae.cfg.d_in)
    totals = dict(clean=0.0, spliced=0.0, mean_ablated=0.0, zero_ablated=0.0)
    count = 0
    starts = range(0, tokens.shape[0], batch_size)
    home = sae.W_enc.device
    sae = sae.to(device)
    for start in tqdm(starts, desc="CE with the SAE spliced in", leave=False, disable=not progress or len(starts) < 3):
        chunk = tokens[start:start + batch_size].to(device)
        where = positions[start:start + batch_size] if isinstance(positions, torch.Tensor) and \
            positions.dtype == torch.bool else positions
        hooks = dict(clean=[], spliced=[(name, splice_hook(sae, where))],
                     mean_ablated=[(name, replace_hook(mean_activation, where))],
                     zero_ablated=[(name, replace_hook(zero, where))])
        for run, fwd_hooks in hooks.items():
            logits = model.run_with_hooks(chunk, fwd_hooks=fwd_hooks)
            totals[run] += float(_next_token_ce(logits, chunk).sum())
        count += chunk.shape[0] * (chunk.shape[1] - 1)
    sae.to(home)
    return CEMetrics(**{run: total / count for run, total in totals.items()})


# ---------------------------------------------------------------- ground truth: one latent per variable?

@dataclass
class Variable:
    """A binary ground-truth variable over the rows of a cache: ``labels`` within ``population``.

    ``population`` (None = every row) is where the variable is defined and its confounds are
    controlled: "previous token is X" only where there is a previous word, "this name is the IO"
    only among prompts that contain the name.
    """

    name: str
    family: str
    labels: Bool[torch.Tensor, " n"]
    population: Bool[torch.Tensor, " n"] | None = None


def _tied_ranks(scores: Float[torch.Tensor, "n c"]) -> Float[torch.Tensor, "n c"]:
    """1-based ranks down each column, ties sharing their mean rank."""
    n, c = scores.shape
    values, order = scores.sort(0)
    new = torch.ones(n, c, dtype=torch.bool)
    new[1:] = values[1:] != values[:-1]
    group = new.long().cumsum(0) - 1 + torch.arange(c) * n  # a global id per (column, tie group)
    position = torch.arange(n, dtype=torch.float64)[:, None].expand(n, c)
    first = torch.full((n * c,), float(n), dtype=torch.float64).scatter_reduce(
        0, group.reshape(-1), position.reshape(-1), "amin")
    last = torch.zeros(n * c, dtype=torch.float64).scatter_reduce(0, group.reshape(-1), position.reshape(-1), "amax")
    sorted_ranks = ((first + last) / 2 + 1)[group]
    return torch.empty(n, c, dtype=torch.float64).scatter_(0, order, sorted_ranks)


def auroc_matrix(scores: Float[torch.Tensor, "n s"], labels: Bool[torch.Tensor, "n v"], chunk: int = 64
                 ) -> Float[torch.Tensor, "s v"]:
    """AUROC of every score column against every label column (Mann-Whitney U with tied ranks), vectorised."""
    labels = labels.bool()
    n_pos = labels.sum(0).double()
    n_neg = labels.shape[0] - n_pos
    if (n_pos == 0).any() or (n_neg == 0).any():
        raise ValueError("every variable needs positives and negatives within its population")
    y = labels.double()
    out = []
    for i in range(0, scores.shape[1], chunk):
        ranks = _tied_ranks(scores[:, i:i + chunk].double())
        out.append((ranks.T @ y - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return torch.cat(out).float()


@dataclass
class Recovery:
    """Per variable: the best detector's AUROC (and, for latents, which latent)."""

    names: list[str]
    families: list[str]
    auroc: Float[torch.Tensor, " v"]
    best: Int[torch.Tensor, " v"]
    """The best latent per variable (-1 for a probe)."""

    def recovered(self, threshold: float = 0.95) -> Bool[torch.Tensor, " v"]:
        return self.auroc >= threshold

    def fraction(self, threshold: float = 0.95, family: str | None = None) -> float:
        keep = torch.tensor([family is None or f == family for f in self.families])
        return float(self.recovered(threshold)[keep].float().mean())

    def by_family(self, threshold: float = 0.95) -> dict[str, tuple[int, int]]:
        """``{family: (recovered, total)}``."""
        hit = self.recovered(threshold)
        table: dict[str, tuple[int, int]] = {}
        for family, ok in zip(self.families, hit.tolist()):
            done, total = table.get(family, (0, 0))
            table[family] = (done + ok, total + 1)
        return table


def _check_variables(variables: Sequence[Variable], n: int) -> None:
    if not variables:
        raise ValueError("no variables given")
    for v in variables:
        if v.labels.shape != (n,) or (v.population is not None and v.population.shape != (n,)):
            raise ValueError(f"variable {v.name!r} has labels for {v.labels.shape[0]} rows but there are {n} "
                             f"activation rows: build variables from the same cache")


def _population_groups(variables: Sequence[Variable]) -> list[tuple[torch.Tensor | None, list[int]]]:
    groups: list[tuple[torch.Tensor | None, list[int]]] = []
    for i, v in enumerate(variables):
        for population, members in groups:
            if (population is None and v.population is None) or (
                    population is not None and v.population is not None and torch.equal(population, v.population)):
                members.append(i)
                break
        else:
            groups.append((v.population, [i]))
    return groups


def variable_recovery(latents: Float[torch.Tensor, "n d_sae"], variables: Sequence[Variable],
                      progress: bool = True) -> Recovery:
    """For each variable, the single latent whose activation best separates it (AUROC, positive direction only).

    ``latents``: :func:`encode_all` of the SAE on the cache the variables were built from.
    """
    _check_acts(latents, name="latents")
    _check_variables(variables, latents.shape[0])
    auroc = torch.zeros(len(variables))
    best = torch.zeros(len(variables), dtype=torch.long)
    for population, members in tqdm(_population_groups(variables), desc="variables", leave=False,
                                    disable=not progress):
        rows = slice(None) if population is None else population
        labels = torch.stack([variables[i].labels[rows] for i in members], 1)
        matrix = auroc_matrix(latents[rows], labels)
        value, index = matrix.max(0)
        auroc[members], best[members] = value, index
    return Recovery([v.name for v in variables], [v.family for v in variables], auroc, best)


def raw_dimension_baseline(acts: ActivationCache | Float[torch.Tensor, "n d"], variables: Sequence[Variable]
                           ) -> Recovery:
    """The same test on the raw dimensions, both signs: what an SAE must beat to be worth having."""
    x = _check_acts(acts)
    return variable_recovery(torch.cat([x, -x], 1), variables, progress=False)


def probe_ceiling(acts: ActivationCache | Float[torch.Tensor, "n d"], variables: Sequence[Variable],
                  l2: float = 1e-2, seed: int = 0) -> Recovery:
    """Held-out AUROC of a linear (ridge) probe per variable: whether the site represents it at all.

    Fit on half of each variable's population (closed form, standardised inputs), scored on
    the other half. A variable the probe cannot read is not a fair question for an SAE.
    """
    x = _check_acts(acts).double()
    _check_variables(variables, x.shape[0])
    auroc = torch.zeros(len(variables))
    generator = torch.Generator().manual_seed(seed)
    for population, members in _population_groups(variables):
        rows = torch.arange(x.shape[0]) if population is None else population.nonzero(as_tuple=True)[0]
        rows = rows[torch.randperm(len(rows), generator=generator)]
        train, test = rows[: len(rows) // 2], rows[len(rows) // 2:]
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        design = torch.cat([(x[train] - mean) / std, torch.ones(len(train), 1, dtype=x.dtype)], 1)
        targets = torch.stack([variables[i].labels[train] for i in members], 1).double()
        gram = design.T @ design + l2 * len(train) * torch.eye(design.shape[1], dtype=x.dtype)
        weights = torch.linalg.solve(gram, design.T @ targets)
        scores = torch.cat([(x[test] - mean) / std, torch.ones(len(test), 1, dtype=x.dtype)], 1) @ weights
        test_labels = torch.stack([variables[i].labels[test] for i in members], 1)
        for j, i in enumerate(members):
            labels = test_labels[:, j]
            if labels.all() or not labels.any():
                raise ValueError(f"variable {variables[i].name!r} has a single class in the probe's test half; "
                                 f"use more tokens")
            auroc[i] = auroc_matrix(scores[:, j:j + 1], labels[:, None])[0, 0]
    return Recovery([v.name for v in variables], [v.family for v in variables], auroc,
                    torch.full((len(variables),), -1, dtype=torch.long))


# ---------------------------------------------------------------- SAELens's on-disk layout

def save_sae(sae: SAE, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` as SAELens 6.x does (``SAE.load_from_disk`` reads them).

    Weights: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in].
    ``cfg.json``: ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
    ``normalize_activations`` and ``reshape_activations`` ("none"), ``architecture``
    ("standard", or "topk" with ``k`` and ``rescale_acts_by_decoder_norm``) and ``metadata``
    with the model and hook. ``extra`` (e.g. the training settings and metrics) goes under an
    ``interplab`` key, which SAELens ignores.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    layer = None
    if cfg.hook_name and cfg.hook_name.startswith("blocks."):
        layer = int(cfg.hook_name.split(".")[1])
    config = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
              "metadata": {"model_name": cfg.model_name, "hook_name": cfg.hook_name, "hook_layer": layer,
                           "hook_head_index": None, "prepend_bos": True,
                           "sae_lens_version": SAELENS_FORMAT_VERSION,
                           "sae_lens_training_version": SAELENS_FORMAT_VERSION},
              "architecture": cfg.architecture}
    if cfg.architecture == "topk":
        config.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    if extra:
        config["interplab"] = extra
    tensors = {name: getattr(sae, name).detach().float().contiguous().cpu()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(tensors, str(folder / WEIGHTS_FILENAME))
    (folder / CFG_FILENAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_sae_config(folder: str | Path) -> dict:
    """The raw ``cfg.json`` of a saved SAE (with the ``interplab`` extras, if any)."""
    path = Path(folder) / CFG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CFG_FILENAME} in {folder}: an SAE folder holds {CFG_FILENAME} and "
                                f"{WEIGHTS_FILENAME} (write one with save_sae)")
    return json.loads(path.read_text())


def load_sae(folder: str | Path) -> SAE:
    """Load an SAE saved by :func:`save_sae` or by SAELens (architectures "standard" and "topk")."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_sae_config(folder)
    weights_path = folder / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILENAME} in {folder}")
    architecture = config.get("architecture", "standard")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not supported here (only {ARCHITECTURES})")
    if config.get("normalize_activations", "none") != "none":
        raise ValueError(f"normalize_activations={config['normalize_activations']!r}: fold the normalisation into "
                         f"the weights first (SAELens: fold_activation_norm_scaling_factor)")
    if not config.get("apply_b_dec_to_input", True):
        raise ValueError("apply_b_dec_to_input=false SAEs are not supported here")
    meta = config.get("metadata") or config.get("meta") or {}
    cfg = SAEConfig(d_in=int(config["d_in"]), d_sae=int(config["d_sae"]), architecture=architecture,
                    k=int(config["k"]) if architecture == "topk" else None, model_name=meta.get("model_name"),
                    hook_name=meta.get("hook_name") or config.get("hook_name"))
    sae = SAE(cfg)
    tensors = load_file(str(weights_path))
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in),
                "b_dec": (cfg.d_in,)}
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"{weights_path} has no {name!r} (it holds {sorted(tensors)})")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} in {weights_path} has shape {tuple(tensors[name].shape)}, cfg.json implies "
                             f"{shape}")
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(tensors[name].float())
    return sae


__all__ = ["ARCHITECTURES", "ActivationCache", "CEMetrics", "ReconstructionMetrics", "Recovery", "SAE", "SAEConfig",
           "TrainedSAE", "Variable", "auroc_matrix", "cache_activations", "ce_metrics", "encode_all", "input_scale",
           "latent_edit_hook", "load_sae", "probe_ceiling", "raw_dimension_baseline", "read_sae_config",
           "reconstruction_metrics", "replace_hook", "resample_dead_latents_", "save_sae", "splice_hook", "splicing",
           "train_sae", "variable_recovery"]
