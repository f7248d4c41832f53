"""Toy models of superposition (Elhage et al., 2022): why one neuron ends up meaning several things.

``n`` sparse features are squeezed into ``m < n`` dimensions by ``h = W x`` and read back with
``x_hat = ReLU(W^T h + b)``. Feature ``i`` matters with weight ``importance[i]`` (decaying, so the
model must choose). When features are dense, the model keeps the ``m`` most important ones, each in
its own dimension, and drops the rest. When they are sparse, two features rarely fire together, so
sharing a direction costs little and the ReLU filters the small interference: the model packs *more
features than it has dimensions*. That jump as sparsity grows is the phase change.

One call trains a whole sparsity sweep at once (one model per sparsity, batched into one tensor),
in seconds on one CPU core::

    toy = train_toy_models(n_features=20, n_hidden=5, sparsities=(0.0, 0.7, 0.9, 0.97, 0.99))
    n_represented(toy.W)          # e.g. [5, 10, 12, 16, 18]: more features than dimensions when sparse
    gram(toy.W)[4]                # W^T W of the sparsest model: the feature geometry
    superposition(toy.W)[4]       # how much each feature shares its direction with the others

The measures take ``W`` as ``[m, n]`` (one model) or ``[models, m, n]`` (a sweep).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.7, 0.9, 0.97, 0.99)
REPRESENTED_NORM = 0.5  # a feature counts as represented when its column of W is at least this long


def importance_weights(n_features: int, decay: float = 0.9) -> Float[torch.Tensor, " n"]:
    """``decay ** i``: feature 0 matters most. ``decay = 1`` makes every feature equally important."""
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    return decay ** torch.arange(n_features, dtype=torch.float32)


def sample_features(batch_size: int, n_features: int, sparsity: float | Sequence[float] | torch.Tensor,
                    generator: torch.Generator | None = None) -> Float[torch.Tensor, "batch models n"]:
    """Inputs for each model: ``x_i ~ U[0, 1]`` with probability ``1 - S``, else exactly 0.

    ``sparsity`` is one value or one per model; the result is ``[batch, models, n_features]``.
    """
    s = _check_sparsities(sparsity)[None, :, None]
    u = torch.rand(batch_size, s.shape[1], n_features, generator=generator)
    # one draw does both: present when u >= S, and then (u - S) / (1 - S) is uniform on [0, 1)
    return torch.relu(u - s) / (1 - s)


def _check_sparsities(sparsity) -> torch.Tensor:
    s = torch.as_tensor(sparsity, dtype=torch.float32).reshape(-1)
    if len(s) == 0:
        raise ValueError("give at least one sparsity, e.g. (0.0, 0.9, 0.99)")
    if not torch.isfinite(s).all() or (s < 0).any() or (s >= 1).any():
        raise ValueError(f"sparsities are probabilities that a feature is zero, in [0, 1): got {s.tolist()}")
    return s


class ToyModel(torch.nn.Module):
    """``models`` independent toy models in one module: ``x_hat = ReLU(W^T W x + b)``, ``W`` of shape [m, n] each."""

    def __init__(self, n_features: int, n_hidden: int, n_models: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        if n_hidden < 1 or n_features < 1 or n_models < 1:
            raise ValueError(f"sizes must be >= 1, got n_features={n_features}, n_hidden={n_hidden}, "
                             f"n_models={n_models}")
        weight = torch.empty(n_models, n_hidden, n_features)
        bound = math.sqrt(6 / (n_hidden + n_features))  # Xavier uniform, as in the paper's code
        weight.uniform_(-bound, bound, generator=generator)
        self.W = torch.nn.Parameter(weight)
        self.b = torch.nn.Parameter(torch.zeros(n_models, n_features))

    def hidden(self, x: Float[torch.Tensor, "batch models n"]) -> Float[torch.Tensor, "batch models m"]:
        return torch.bmm(x.transpose(0, 1), self.W.transpose(1, 2)).transpose(0, 1)

    def forward(self, x: Float[torch.Tensor, "batch models n"]) -> Float[torch.Tensor, "batch models n"]:
        if x.ndim != 3 or x.shape[1:] != (self.W.shape[0], self.W.shape[2]):
            raise ValueError(f"x must be [batch, {self.W.shape[0]} models, {self.W.shape[2]} features], "
                             f"got {tuple(x.shape)}")
        h = torch.bmm(x.transpose(0, 1), self.W.transpose(1, 2))  # [models, batch, m]
        return torch.relu(torch.bmm(h, self.W).transpose(0, 1) + self.b)


@dataclass
class ToyModels:
    """A trained sparsity sweep: ``W[i]`` is the model trained at ``sparsities[i]``."""

    model: ToyModel
    sparsities: Float[torch.Tensor, " models"]
    importance: Float[torch.Tensor, " n"]
    losses: Float[torch.Tensor, "logged models"]
    """Importance-weighted squared error per model, averaged over the batch, every ``log_every`` steps."""
    steps: int
    seconds: float
    history: list[tuple[int, list[int]]] = field(default_factory=list)
    """(step, features represented per model) at each log point: watch the phase change form."""

    @property
    def W(self) -> Float[torch.Tensor, "models m n"]:
        return self.model.W.detach()

    @property
    def b(self) -> Float[torch.Tensor, "models n"]:
        return self.model.b.detach()


def train_toy_models(n_features: int = 20, n_hidden: int = 5,
                     sparsities: Sequence[float] | torch.Tensor = DEFAULT_SPARSITIES, importance_decay: float = 0.9,
                     steps: int = 3000, batch_size: int = 1024, lr: float = 1e-3, seed: int = 0, log_every: int = 250,
                     progress: bool = True) -> ToyModels:
    """Train one toy model per sparsity, all at once, on ``sum_i importance_i (x_i - x_hat_i)^2``.

    Adam, fresh inputs every step. With the defaults (n 20, m 5) the count of represented features
    settles within about 2,000 steps; 3,000 steps take about 5 s on one busy core.
    """
    s = _check_sparsities(sparsities)
    if n_hidden >= n_features:
        raise ValueError(f"n_hidden ({n_hidden}) must be smaller than n_features ({n_features}): superposition "
                         f"is about fitting more features than dimensions")
    if steps < 1 or batch_size < 1 or log_every < 1:
        raise ValueError("steps, batch_size and log_every must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    importance = importance_weights(n_features, importance_decay)
    model = ToyModel(n_features, n_hidden, len(s), generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, history = [], []
    start = time.perf_counter()
    with torch.enable_grad():
        for step in tqdm(range(1, steps + 1), desc="toy models", leave=False, disable=not progress):
            x = sample_features(batch_size, n_features, s, generator)
            error = (importance * (model(x) - x).pow(2)).sum(-1).mean(0)  # [models]
            optimizer.zero_grad(set_to_none=True)
            error.sum().backward()
            optimizer.step()
            if step % log_every == 0 or step == steps:
                losses.append(error.detach())
                history.append((step, n_represented(model.W.detach()).tolist()))
    return ToyModels(model=model, sparsities=s, importance=importance, losses=torch.stack(losses), steps=steps,
                     seconds=time.perf_counter() - start, history=history)


# ---------------------------------------------------------------- measures for the plots

def _as_batch(W: torch.Tensor) -> tuple[torch.Tensor, bool]:
    W = torch.as_tensor(W).detach().float()
    if W.ndim == 2:
        return W[None], True
    if W.ndim != 3:
        raise ValueError(f"W must be [m, n] (one model) or [models, m, n], got shape {tuple(W.shape)}")
    return W, False


def _unbatch(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def gram(W: Float[torch.Tensor, "*models m n"]) -> Float[torch.Tensor, "*models n n"]:
    """``W^T W``: entry (i, j) is how much feature j leaks into feature i's output. Diagonal = squared norms."""
    Wb, single = _as_batch(W)
    return _unbatch(Wb.transpose(-1, -2) @ Wb, single)


def feature_norms(W: Float[torch.Tensor, "*models m n"]) -> Float[torch.Tensor, "*models n"]:
    """``||W_i||``: about 1 for a feature the model represents, about 0 for one it drops."""
    Wb, single = _as_batch(W)
    return _unbatch(Wb.norm(dim=-2), single)


def n_represented(W: Float[torch.Tensor, "*models m n"], threshold: float = REPRESENTED_NORM) -> torch.Tensor:
    """How many features have ``||W_i|| > threshold`` (an int tensor, one per model)."""
    return (feature_norms(W) > threshold).sum(-1)


def superposition(W: Float[torch.Tensor, "*models m n"]) -> Float[torch.Tensor, "*models n"]:
    """Interference per feature: ``sum_{j != i} (W_i_hat . W_j)^2``, with ``W_i_hat`` the unit direction of feature i.

    0 when feature i has a dimension to itself; large when other features point along it
    (Elhage et al.'s colour in their bar plots). Read it beside the norm: a dropped feature's
    tiny column points anywhere, so its score means nothing (an exactly zero column scores 0).
    """
    Wb, single = _as_batch(W)
    norms = Wb.norm(dim=-2, keepdim=True)
    unit = Wb / norms.clamp_min(1e-8)
    overlap = (unit.transpose(-1, -2) @ Wb).pow(2)  # [models, n(i), n(j)]: (W_i_hat . W_j)^2
    off_diagonal = overlap.sum(-1) - overlap.diagonal(dim1=-2, dim2=-1)
    return _unbatch(torch.where(norms[:, 0] > 1e-8, off_diagonal, torch.zeros_like(off_diagonal)), single)


def feature_dimensionality(W: Float[torch.Tensor, "*models m n"]) -> Float[torch.Tensor, "*models n"]:
    """Elhage et al.'s ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2``: the share of a dimension feature i owns.

    1 for a feature alone in its dimension, 1/2 for one of an antipodal pair, 2/5 in a pentagon,
    0 for a dropped feature. The ``D_i`` of one model sum to at most ``m``.
    """
    Wb, single = _as_batch(W)
    norms = Wb.norm(dim=-2)
    unit = Wb / norms[:, None].clamp_min(1e-8)
    denominator = (unit.transpose(-1, -2) @ Wb).pow(2).sum(-1)
    D = torch.where(norms > 1e-8, norms.pow(2) / denominator.clamp_min(1e-12), torch.zeros_like(norms))
    return _unbatch(D, single)


def dimensions_per_feature(W: Float[torch.Tensor, "*models m n"]) -> Float[torch.Tensor, " *models"]:
    """``m / ||W||_F^2``: hidden dimensions per embedded feature. 1 with no superposition, 1/2 for antipodal pairs."""
    Wb, single = _as_batch(W)
    return _unbatch(Wb.shape[-2] / Wb.pow(2).sum((-1, -2)).clamp_min(1e-12), single)


__all__ = ["DEFAULT_SPARSITIES", "REPRESENTED_NORM", "ToyModel", "ToyModels", "dimensions_per_feature",
           "feature_dimensionality", "feature_norms", "gram", "importance_weights", "n_represented",
           "sample_features", "superposition", "train_toy_models"]
