"""Checkers for chapter 04 (superposition and sparse autoencoders).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time: random
toy-model weights and features, random SAE weights and activations with an offset mean (as residual
streams have), random latent codes with many exact zeros (as ReLU latents have), and, for the
hooks, a random model (GPT-2 family, 3 layers, d_model 48, random LayerNorm weights) built once per
kernel from a seed drawn then. An answer replayed from an earlier run, or one that hard-codes the
shipped SAE's sizes, fails. When an answer matches a common mistake (importance left out of the
toy loss, the norm of a row where a feature is a column, interference without the unit direction,
``b_dec`` not subtracted before encoding, TopK keeping the largest ``|value|`` or negative values,
decoder directions normalised along the wrong axis, the L1 penalty on pre-activations, a mean over
dimensions where the squared error is summed, dead entries counted where dead latents belong,
explained variance averaged per dimension or not centred, CE recovered against zero ablation,
AUROC ties counted as losses, an off-by-one previous token, a clamp that drops the SAE's error
term) the message says which.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch

from interplab import saes, superposition
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_random_model, fresh_seed, passed)


@lru_cache(maxsize=1)
def _random_model_and_seed():
    seed = fresh_seed()
    return fresh_random_model(seed), seed


def _where(model, seed: int) -> str:
    return f"a random {model.cfg.n_layers}-layer model (d_model {model.cfg.d_model}) built for this check (seed {seed})"


def _as_tensor(got, case: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{case}: return a tensor, got {type(got).__name__}")
    return got.detach().cpu()


def _as_float(got, case: str) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise CheckFailed(f"{case}: return one number, got a tensor of shape {tuple(got.shape)}: did you forget "
                              "to reduce over an axis?")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise CheckFailed(f"{case}: return a number, got {type(got).__name__}")
    return float(got)


def _random_W(generator: torch.Generator, m: int, n: int, dropped: int = 1) -> torch.Tensor:
    """Toy-model weights [m, n] with columns of unequal length, and ``dropped`` exactly-zero columns."""
    W = torch.randn(m, n, generator=generator) * torch.rand(n, generator=generator).add(0.2)
    if dropped:
        W[:, torch.randperm(n, generator=generator)[:dropped]] = 0.0
    return W


# ---------------------------------------------------------------- 1. toy models of superposition

def reference_toy_forward(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x @ W.T @ W + b)


def test_toy_forward(toy_forward: Callable) -> None:
    """``toy_forward(W [m, n], b [n], x [batch, n]) -> x_hat [batch, n]``: ``h = W x``, ``x_hat = ReLU(W^T h + b)``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for m, n, batch in ((3, 7, 10), (5, 20, 16), (2, 5, 4)):
        W = torch.randn(m, n, generator=generator)
        b = torch.randn(n, generator=generator) * 0.5
        x = superposition.sample_features(batch, n, 0.6, generator)[:, 0]
        cases.append((W, b, x, f"random W [{m}, {n}], b [{n}], {batch} sparse inputs (seed {seed})"))
    for W, b, x, case in cases:
        got = _as_tensor(call_learner(toy_forward, W.clone(), b.clone(), x.clone(), case=case), case)
        expected = reference_toy_forward(W, b, x)

        def variants(W=W, b=b, x=x):
            return {"no ReLU on the output: the ReLU is what filters the interference": x @ W.T @ W + b,
                    "the bias left out": torch.relu(x @ W.T @ W),
                    "the bias added after the ReLU (it belongs inside: ReLU(W^T W x + b))": torch.relu(x @ W.T @ W) + b,
                    "the ReLU on the hidden layer h, not on the output": torch.relu(x @ W.T) @ W + b}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, dims=("example", "feature"))
    passed("test_toy_forward", len(cases))


def reference_toy_loss(x: torch.Tensor, x_hat: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    return (importance * (x - x_hat).pow(2)).sum(-1).mean()


def test_toy_loss(toy_loss: Callable) -> None:
    """``toy_loss(x [batch, n], x_hat [batch, n], importance [n]) -> scalar``: ``sum_i importance_i (x_i - x_hat_i)^2``,
    summed over features and averaged over the batch."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, n, decay in ((12, 6, 0.7), (40, 20, 0.9), (5, 9, 0.5)):
        x = superposition.sample_features(batch, n, 0.5, generator)[:, 0]
        x_hat = (x + 0.3 * torch.randn(batch, n, generator=generator)).clamp_min(0)
        importance = superposition.importance_weights(n, decay)
        cases.append((x, x_hat, importance, f"{batch} random inputs of {n} features, importance {decay}^i (seed {seed})"))
    for x, x_hat, importance, case in cases:
        got = _as_float(call_learner(toy_loss, x.clone(), x_hat.clone(), importance.clone(), case=case), case)
        expected = float(reference_toy_loss(x, x_hat, importance))
        error = (x - x_hat).pow(2)
        variants = {"the importance left out: every feature weighted 1, so the model has no reason to prefer the "
                    "important ones": float(error.sum(-1).mean()),
                    "a mean over features where the sum belongs": float((importance * error).mean()),
                    "a sum over the batch where the mean belongs": float((importance * error).sum()),
                    "the importance squared (inside the square: (importance * (x - x_hat))^2)":
                        float((importance.pow(2) * error).sum(-1).mean()),
                    "the square root of the importance": float((importance.sqrt() * error).sum(-1).mean()),
                    "the absolute error where the squared error belongs":
                        float((importance * (x - x_hat).abs()).sum(-1).mean())}
        compare_outputs(got, expected, case, atol=1e-5, rtol=1e-4, variants=variants)
    passed("test_toy_loss", len(cases))


def reference_feature_norms(W: torch.Tensor) -> torch.Tensor:
    return superposition.feature_norms(W)


def _check_feature_shape(got: torch.Tensor, W: torch.Tensor, case: str) -> None:
    m, n = W.shape
    if got.shape == (m,):
        raise CheckFailed(f"{case}: expected one value per feature, shape ({n},), got ({m},): that is one per hidden "
                          f"dimension. W is [m, n] = [{m}, {n}]: feature i is the column W[:, i], so reduce over "
                          "dim 0")
    if got.shape == (n, n):
        raise CheckFailed(f"{case}: expected one value per feature, shape ({n},), got a matrix ({n}, {n}): reduce "
                          "over j")


def test_feature_norms(feature_norms: Callable) -> None:
    """``feature_norms(W [m, n]) -> [n]``: the length ``||W_i||`` of each feature's column."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_W(generator, m, n), f"random W [{m}, {n}] (seed {seed})") for m, n in ((3, 8), (5, 20), (2, 3))]
    for W, case in cases:
        got = _as_tensor(call_learner(feature_norms, W.clone(), case=case), case)
        _check_feature_shape(got, W, case)
        expected = reference_feature_norms(W)

        def variants(W=W):
            return {"the squared norms: take the square root": W.pow(2).sum(0),
                    "the sum of the column's entries, not its length": W.sum(0)}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-5, dims=("feature",))
    passed("test_feature_norms", len(cases))


def reference_interference(W: torch.Tensor) -> torch.Tensor:
    return superposition.superposition(W)


def test_interference(interference: Callable) -> None:
    """``interference(W [m, n]) -> [n]``: ``sum_{j != i} (W_i_hat . W_j)^2`` with ``W_i_hat`` feature i's unit
    direction; 0 for a feature whose column is exactly zero."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_W(generator, m, n), f"random W [{m}, {n}] with one zero column (seed {seed})")
             for m, n in ((3, 8), (5, 20), (2, 4))]
    for W, case in cases:
        got = _as_tensor(call_learner(interference, W.clone(), case=case), case)
        _check_feature_shape(got, W, case)
        expected = reference_interference(W)
        zero = W.norm(dim=0) == 0
        if not torch.isfinite(got[zero]).all():
            raise CheckFailed(f"{case}: NaN or Inf for the feature(s) {zero.nonzero().flatten().tolist()} whose column "
                              "is exactly zero (a dropped feature): dividing by a zero norm; clamp the norm "
                              "(norm.clamp_min(1e-8)) or set those features to 0")

        def variants(W=W):
            unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
            overlap = (unit.T @ W).pow(2)
            raw = (W.T @ W).pow(2)
            return {"the diagonal j = i included: it adds ||W_i||^2, the feature's own length":
                        torch.where(zero, 0.0, overlap.sum(-1)),
                    "W_i where its unit direction W_i_hat belongs: the score then grows with the feature's own length":
                        raw.sum(-1) - raw.diagonal(),
                    "the dot products not squared": torch.where(zero, 0.0, (unit.T @ W).sum(-1) - W.norm(dim=0)),
                    "W_j normalised too (squared cosines): interference is how much of feature j's *length* leaks "
                    "along feature i": torch.where(zero, 0.0, (unit.T @ unit).pow(2).sum(-1) - 1)}
        compare_with_lazy_variants(torch.nan_to_num(got.float()), expected, case, variants, atol=1e-4,
                                   dims=("feature",))
    passed("test_interference", len(cases))


def reference_feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    return superposition.feature_dimensionality(W)


def test_feature_dimensionality(feature_dimensionality: Callable) -> None:
    """``feature_dimensionality(W [m, n]) -> [n]``: ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2`` (j = i included);
    0 for a feature whose column is exactly zero."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_W(generator, m, n), f"random W [{m}, {n}] with one zero column (seed {seed})")
             for m, n in ((3, 8), (5, 20), (2, 4))]
    antipodal = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    cases.append((antipodal, "an antipodal pair, a feature alone and a dropped one (D = 1/2, 1/2, 1, 0)"))
    for W, case in cases:
        got = _as_tensor(call_learner(feature_dimensionality, W.clone(), case=case), case)
        _check_feature_shape(got, W, case)
        expected = reference_feature_dimensionality(W)
        zero = W.norm(dim=0) == 0
        if not torch.isfinite(got[zero]).all():
            raise CheckFailed(f"{case}: NaN or Inf for the feature(s) {zero.nonzero().flatten().tolist()} whose column "
                              "is exactly zero: D is 0 for a dropped feature; guard the division")

        def variants(W=W):
            unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
            norm2 = W.pow(2).sum(0)
            overlap = (unit.T @ W).pow(2)
            off = overlap.sum(-1) - overlap.diagonal()
            return {"the sum over j != i only in the denominator: it includes j = i (a lone feature has D = 1)":
                        torch.where(zero, 0.0, norm2 / off.clamp_min(1e-12)),
                    "W_i where its unit direction belongs in the denominator":
                        torch.where(zero, 0.0, norm2 / (W.T @ W).pow(2).sum(-1).clamp_min(1e-12)),
                    "the reciprocal: D is ||W_i||^2 over the sum": torch.where(zero, 0.0, overlap.sum(-1) / norm2.clamp_min(1e-12))}
        compare_with_lazy_variants(torch.nan_to_num(got.float()), expected, case, variants, atol=1e-4,
                                   dims=("feature",))
    passed("test_feature_dimensionality", len(cases))


# ---------------------------------------------------------------- 2. the SAE: encode, TopK, decode, loss

def _random_sae_weights(generator: torch.Generator, d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    W_dec = torch.randn(d_sae, d_in, generator=generator)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    return dict(W_enc=W_dec.T.clone() + 0.3 * torch.randn(d_in, d_sae, generator=generator),
                b_enc=0.5 * torch.randn(d_sae, generator=generator) - 0.3,
                W_dec=W_dec, b_dec=2.0 * torch.randn(d_in, generator=generator))


def _random_acts(generator: torch.Generator, n: int, d: int, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Activations with a large shared offset and unequal scales per dimension, like a residual stream."""
    scales = torch.exp(0.7 * torch.randn(d, generator=generator))
    offset = 3.0 * torch.randn(d, generator=generator) if offset is None else offset
    return torch.randn(n, d, generator=generator) * scales + offset


def reference_sae_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor
                         ) -> torch.Tensor:
    return torch.relu((x - b_dec) @ W_enc + b_enc)


def test_sae_encode(sae_encode: Callable) -> None:
    """``sae_encode(x [batch, d_in], W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in]) -> f [batch, d_sae]``:
    ``ReLU((x - b_dec) @ W_enc + b_enc)``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, d_in, d_sae in ((8, 6, 20), (5, 16, 48), (3, 4, 9)):
        w = _random_sae_weights(generator, d_in, d_sae)
        x = _random_acts(generator, batch, d_in, offset=w["b_dec"] + torch.randn(d_in, generator=generator))
        cases.append((x, w, f"random SAE weights (d_in {d_in}, d_sae {d_sae}), {batch} activations (seed {seed})"))
    for x, w, case in cases:
        got = _as_tensor(call_learner(sae_encode, x.clone(), w["W_enc"].clone(), w["b_enc"].clone(), w["b_dec"].clone(),
                                      case=case), case)
        expected = reference_sae_encode(x, w["W_enc"], w["b_enc"], w["b_dec"])

        def variants(x=x, w=w):
            pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
            return {"b_dec not subtracted from x before encoding (SAELens's apply_b_dec_to_input)":
                        torch.relu(x @ w["W_enc"] + w["b_enc"]),
                    "b_dec added to x where it is subtracted": torch.relu((x + w["b_dec"]) @ w["W_enc"] + w["b_enc"]),
                    "no ReLU: those are the pre-activations": pre,
                    "b_enc left out": torch.relu((x - w["b_dec"]) @ w["W_enc"])}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, dims=("example", "latent"))
    passed("test_sae_encode", len(cases))


def reference_sae_decode(f: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    return f @ W_dec + b_dec


def test_sae_decode(sae_decode: Callable) -> None:
    """``sae_decode(f [batch, d_sae], W_dec [d_sae, d_in], b_dec [d_in]) -> x_hat [batch, d_in]``: ``f @ W_dec + b_dec``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, d_in, d_sae in ((8, 6, 20), (5, 16, 48)):
        w = _random_sae_weights(generator, d_in, d_sae)
        f = torch.relu(torch.randn(batch, d_sae, generator=generator) - 1) * 3
        cases.append((f, w, f"random latents (d_sae {d_sae}) and decoder (d_in {d_in}) (seed {seed})"))
    for f, w, case in cases:
        got = _as_tensor(call_learner(sae_decode, f.clone(), w["W_dec"].clone(), w["b_dec"].clone(), case=case), case)
        expected = reference_sae_decode(f, w["W_dec"], w["b_dec"])
        compare_with_lazy_variants(got.float(), expected, case,
                                   lambda f=f, w=w: {"b_dec left out": f @ w["W_dec"],
                                                     "b_dec subtracted where it is added": f @ w["W_dec"] - w["b_dec"]},
                                   atol=1e-4, dims=("example", "d_in"))
    passed("test_sae_decode", len(cases))


def reference_topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def _keep_top(score: torch.Tensor, values: torch.Tensor, k: int) -> torch.Tensor:
    indices = score.topk(k, dim=-1).indices
    return torch.zeros_like(values).scatter(-1, indices, values.gather(-1, indices))


def test_topk_activation(topk_activation: Callable) -> None:
    """``topk_activation(pre [batch, d_sae], k) -> f [batch, d_sae]``: in each row keep the ``k`` largest
    pre-activations, ReLU them, and set every other latent to 0."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, d_sae, k in ((6, 20, 4), (4, 50, 8), (5, 9, 1)):
        pre = torch.randn(batch, d_sae, generator=generator) * 2
        pre[0] = -pre[0].abs() - 0.1  # a row with no positive pre-activation: nothing fires
        pre[1] = -pre[1].abs() - 0.1
        pre[1, :k - 1] = pre[1, :k - 1].abs() + 1  # a row with k - 1 positives: fewer than k fire
        pre[2, 0] = -10.0  # a large negative value: the largest |value| of its row
        cases.append((pre, k, f"random pre-activations [{batch}, {d_sae}], k {k} (seed {seed})"))
    for pre, k, case in cases:
        got = _as_tensor(call_learner(topk_activation, pre.clone(), k, case=case), case)
        expected = reference_topk_activation(pre, k)

        def variants(pre=pre, k=k):
            found = {"the k largest |value|, not the k largest values: a large negative pre-activation is a latent "
                     "that does not fire": torch.relu(_keep_top(pre.abs(), pre, k)),
                     "the k largest |value| kept with their signs": _keep_top(pre.abs(), pre, k),
                     "no ReLU after the TopK: when fewer than k pre-activations are positive, negative values are "
                     "kept": _keep_top(pre, pre, k),
                     "the k smallest values, not the k largest": torch.relu(_keep_top(-pre, pre, k)),
                     "the TopK taken over the batch (dim 0), not over the latents of each row":
                         torch.relu(_keep_top(pre.T, pre.T, min(k, pre.shape[0])).T)}
            for other in (k - 1, k + 1):
                if 1 <= other <= pre.shape[-1]:
                    found[f"{other} latents kept where k = {k} belong (an off-by-one k)"] = reference_topk_activation(
                        pre, other)
            found["the pre-activations returned unchanged"] = pre
            found["ReLU only: no TopK"] = torch.relu(pre)
            return found
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-5, dims=("example", "latent"))
    passed("test_topk_activation", len(cases))


def reference_normalize_decoder(W_dec: torch.Tensor) -> torch.Tensor:
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def test_normalize_decoder(normalize_decoder: Callable) -> None:
    """``normalize_decoder(W_dec [d_sae, d_in]) -> [d_sae, d_in]``: every latent's decoder direction ``W_dec[i]``
    scaled to unit length (returned, not changed in place)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for d_sae, d_in in ((12, 5), (40, 16), (7, 7)):
        W = torch.randn(d_sae, d_in, generator=generator) * torch.rand(d_sae, 1, generator=generator).mul(3).add(0.1)
        cases.append((W, f"a random decoder [d_sae {d_sae}, d_in {d_in}] with rows of unequal length (seed {seed})"))
    for W, case in cases:
        original = W.clone()
        got = _as_tensor(call_learner(normalize_decoder, W, case=case), case)
        expected = reference_normalize_decoder(original)

        def variants(W=original):
            return {"each column normalised (dim 0): W_dec is [d_sae, d_in], so latent i's direction is the *row* "
                    "W_dec[i] (dim=1)": W / W.norm(dim=0, keepdim=True),
                    "the decoder unchanged: no normalisation": W,
                    "the whole matrix divided by one norm": W / W.norm(),
                    "divided by the squared norm": W / W.pow(2).sum(1, keepdim=True)}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-5, dims=("latent", "d_in"))
    passed("test_normalize_decoder", len(cases))


def reference_sae_loss(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                       b_dec: torch.Tensor, l1_coefficient: float) -> torch.Tensor:
    f = reference_sae_encode(x, W_enc, b_enc, b_dec)
    x_hat = f @ W_dec + b_dec
    return (x_hat - x).pow(2).sum(-1).mean() + l1_coefficient * f.sum(-1).mean()


def test_sae_loss(sae_loss: Callable) -> None:
    """``sae_loss(x [batch, d_in], W_enc, b_enc, W_dec, b_dec, l1_coefficient) -> scalar``: the squared error
    ``||x - x_hat||^2`` summed over dimensions, plus ``l1_coefficient * sum_i f_i`` (the L1 norm of the latents,
    after the ReLU), both averaged over the batch. The decoder rows are unit length."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, d_in, d_sae, l1 in ((16, 6, 24, 0.5), (10, 12, 40, 2.0), (6, 4, 9, 0.1)):
        w = _random_sae_weights(generator, d_in, d_sae)
        x = _random_acts(generator, batch, d_in, offset=w["b_dec"])
        cases.append((x, w, l1, f"random SAE (d_in {d_in}, d_sae {d_sae}), {batch} activations, l1_coefficient {l1} "
                                f"(seed {seed})"))
    for x, w, l1, case in cases:
        got = _as_float(call_learner(sae_loss, x.clone(), w["W_enc"].clone(), w["b_enc"].clone(), w["W_dec"].clone(),
                                     w["b_dec"].clone(), l1, case=case), case)
        expected = float(reference_sae_loss(x, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], l1))
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        f = torch.relu(pre)
        error = (f @ w["W_dec"] + w["b_dec"] - x).pow(2)
        mse, sparsity = float(error.sum(-1).mean()), float(f.sum(-1).mean())
        no_sub = torch.relu(x @ w["W_enc"] + w["b_enc"])
        variants = {"the L1 penalty on the pre-activations |pre|, not on the latents after the ReLU (the ReLU's "
                    "zeros cost nothing)": mse + l1 * float(pre.abs().sum(-1).mean()),
                    "the squared error averaged over dimensions where it is summed (the L1 coefficient then means "
                    "something else at every width)": float(error.mean()) + l1 * sparsity,
                    "no L1 term: the squared error alone": mse,
                    "the L1 coefficient left out (multiply the L1 term by it)": mse + sparsity,
                    "an L2 penalty sum f^2 where the L1 sum |f| belongs": mse + l1 * float(f.pow(2).sum(-1).mean()),
                    "the L1 term averaged over latents too (a mean where the sum over latents belongs)":
                        mse + l1 * float(f.mean()),
                    "the reconstruction error's norm, not its square": float(error.sum(-1).sqrt().mean()) + l1 * sparsity,
                    "b_dec not subtracted before encoding":
                        float((no_sub @ w["W_dec"] + w["b_dec"] - x).pow(2).sum(-1).mean())
                        + l1 * float(no_sub.sum(-1).mean())}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-4, variants=variants)
    passed("test_sae_loss", len(cases))


# ---------------------------------------------------------------- 3. evaluation: L0, dead latents, variance, CE

def _random_latents(generator: torch.Generator, n: int, d_sae: int, dead: int) -> torch.Tensor:
    """ReLU-like latents: mostly exact zeros, some latents never firing, firing rates that differ by latent."""
    rate = torch.rand(d_sae, generator=generator) * 0.3
    rate[torch.randperm(d_sae, generator=generator)[:dead]] = 0.0
    fires = torch.rand(n, d_sae, generator=generator) < rate
    return fires * torch.rand(n, d_sae, generator=generator).mul(3).add(0.05)


def reference_l0(latents: torch.Tensor) -> float:
    return float((latents > 0).sum(-1).float().mean())


def test_l0(l0: Callable) -> None:
    """``l0(latents [n, d_sae]) -> float``: the mean number of latents that fire (``> 0``) per token."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_latents(generator, n, d, dead), f"{n} tokens x {d} random latents (seed {seed})")
             for n, d, dead in ((50, 30, 4), (200, 64, 10), (9, 12, 0))]
    for latents, case in cases:
        got = _as_float(call_learner(l0, latents.clone(), case=case), case)
        fired = (latents > 0).float()
        variants = {"the mean activation summed per token (an L1 norm), not the count of latents that fire":
                        float(latents.sum(-1).mean()),
                    "the fraction of latents that fire, not their number": float(fired.mean()),
                    "the mean over latents of how many tokens each fires on": float(fired.sum(0).mean()),
                    "the total count over all tokens, not the mean per token": float(fired.sum())}
        compare_outputs(got, reference_l0(latents), case, atol=1e-5, variants=variants)
    passed("test_l0", len(cases))


def reference_dead_fraction(latents: torch.Tensor) -> float:
    return float((~(latents > 0).any(0)).float().mean())


def test_dead_fraction(dead_fraction: Callable) -> None:
    """``dead_fraction(latents [n, d_sae]) -> float``: the fraction of latents that never fire (``> 0``) on any of
    the ``n`` tokens."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_latents(generator, n, d, dead), f"{n} tokens x {d} random latents, {dead} dead (seed {seed})")
             for n, d, dead in ((60, 30, 4), (150, 64, 17), (40, 12, 1))]
    for latents, case in cases:
        got = _as_float(call_learner(dead_fraction, latents.clone(), case=case), case)
        silent = ~(latents > 0)
        variants = {"the fraction of zero *entries* (latent-token pairs), not of latents that never fire":
                        float(silent.float().mean()),
                    "the fraction of tokens on which no latent fires": float(silent.all(1).float().mean()),
                    "the number of dead latents, not their fraction": float(silent.all(0).sum()),
                    "the fraction of latents that fire (alive), not of dead ones": float((~silent.all(0)).float().mean())}
        compare_outputs(got, reference_dead_fraction(latents), case, atol=1e-6, variants=variants)
    passed("test_dead_fraction", len(cases))


def reference_explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_explained_variance(explained_variance: Callable) -> None:
    """``explained_variance(x [n, d], x_hat [n, d]) -> float``: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``,
    sums over tokens and dimensions, the mean over tokens (the total variance, not one ratio per dimension)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d, noise in ((40, 8, 0.3), (200, 16, 0.1), (12, 5, 0.6)):
        x = _random_acts(generator, n, d)
        scale = torch.exp(torch.randn(d, generator=generator))  # errors unequal across dimensions
        x_hat = x + noise * scale * torch.randn(n, d, generator=generator)
        cases.append((x, x_hat, f"{n} random activations of {d} dimensions with a mean offset, reconstruction "
                                f"noise {noise} (seed {seed})"))
    for x, x_hat, case in cases:
        got = _as_float(call_learner(explained_variance, x.clone(), x_hat.clone(), case=case), case)
        xd, hd = x.double(), x_hat.double()
        error = (xd - hd).pow(2)
        centred = (xd - xd.mean(0)).pow(2)
        variants = {"the explained variance of each dimension, averaged: the measure is over the total variance, so "
                    "a dimension with little variance must not count as much as a large one":
                        float((1 - error.sum(0) / centred.sum(0)).mean()),
                    "the variance around 0, not around the mean: x's offset counts as 'explained' (centre x)":
                        float(1 - error.sum() / xd.pow(2).sum()),
                    "the explained variance of each token, averaged": float((1 - error.sum(1) / centred.sum(1)).mean()),
                    "the unexplained fraction (1 - EV), not the explained one": float(error.sum() / centred.sum()),
                    "the unbiased variance (n - 1) in the denominator with a mean squared error over n":
                        float(1 - error.sum(-1).mean() / xd.var(0).sum())}
        compare_outputs(got, reference_explained_variance(x, x_hat), case, atol=1e-5, rtol=1e-5, variants=variants)
    passed("test_explained_variance", len(cases))


def reference_ce_recovered(ce_clean: float, ce_spliced: float, ce_mean_ablated: float, ce_zero_ablated: float) -> float:
    return (ce_mean_ablated - ce_spliced) / (ce_mean_ablated - ce_clean)


def test_ce_recovered(ce_recovered: Callable) -> None:
    """``ce_recovered(ce_clean, ce_spliced, ce_mean_ablated, ce_zero_ablated) -> float``: the fraction of the loss
    increase from *mean* ablation that splicing the SAE in avoids: 1 = as good as clean, 0 = no better than
    replacing the activation by its mean."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(4):
        clean = 1.0 + float(torch.rand(1, generator=generator))
        mean_ablated = clean + 0.5 + 2 * float(torch.rand(1, generator=generator))
        zero_ablated = mean_ablated + 8 + 4 * float(torch.rand(1, generator=generator))
        spliced = clean + float(torch.rand(1, generator=generator)) * (mean_ablated - clean)
        cases.append((clean, spliced, mean_ablated, zero_ablated,
                      f"CE clean {clean:.3f}, spliced {spliced:.3f}, mean-ablated {mean_ablated:.3f}, zero-ablated "
                      f"{zero_ablated:.3f} nats (seed {seed})"))
    for clean, spliced, mean_ablated, zero_ablated, case in cases:
        got = _as_float(call_learner(ce_recovered, clean, spliced, mean_ablated, zero_ablated, case=case), case)
        expected = reference_ce_recovered(clean, spliced, mean_ablated, zero_ablated)
        variants = {"CE recovered against zero ablation: zeroing costs so many nats that every SAE scores near 1; "
                    "use the mean-ablated CE": (zero_ablated - spliced) / (zero_ablated - clean),
                    "the lost fraction (1 - recovered)": 1 - expected,
                    "the CE increase in nats, not a fraction": spliced - clean,
                    "the ratio the wrong way up": (mean_ablated - clean) / (mean_ablated - spliced)}
        compare_outputs(got, expected, case, atol=1e-6, rtol=1e-6, variants=variants)
    passed("test_ce_recovered", len(cases))


# ---------------------------------------------------------------- 4. ground truth: does one latent detect a variable?

def reference_latent_aurocs(latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return saes.auroc_matrix(latents, labels.bool()[:, None])[:, 0]


def _aurocs_ties_as(latents: torch.Tensor, labels: torch.Tensor, tie: float) -> torch.Tensor:
    labels = labels.bool()
    pos, neg = latents[labels], latents[~labels]
    wins = (pos[:, None, :] > neg[None, :, :]).double() + tie * (pos[:, None, :] == neg[None, :, :]).double()
    return wins.mean((0, 1)).float()


def test_latent_aurocs(latent_aurocs: Callable) -> None:
    """``latent_aurocs(latents [n, d_sae], labels [n] of 0/1) -> [d_sae]``: for each latent, the AUROC of its
    activation as a detector of the label: the chance that a random positive token activates it more than a random
    negative one, ties counting one half (most latents are 0 on most tokens, so ties are the rule)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_sae, dead in ((60, 12, 2), (150, 30, 5), (25, 6, 1)):
        latents = _random_latents(generator, n, d_sae, dead)
        labels = (torch.rand(n, generator=generator) < 0.3).long()
        labels[0], labels[1] = 0, 1
        latents[:, 0] = labels * (1 + torch.rand(n, generator=generator))  # a latent that detects the variable
        latents[:, 1] = (1 - labels) * torch.rand(n, generator=generator)  # one that fires on its absence
        cases.append((latents, labels, f"{n} tokens x {d_sae} random latents (mostly zeros), a random label "
                                       f"(seed {seed})"))
    for latents, labels, case in cases:
        got = _as_tensor(call_learner(latent_aurocs, latents.clone(), labels.clone(), case=case), case)
        expected = reference_latent_aurocs(latents, labels)

        def variants(latents=latents, labels=labels):
            auc = expected
            return {"ties counted as losses: a positive and a negative token where the latent is 0 in both count "
                    "one half": _aurocs_ties_as(latents, labels, 0.0),
                    "ties counted as wins: they count one half": _aurocs_ties_as(latents, labels, 1.0),
                    "max(AUROC, 1 - AUROC): a latent detects a variable when it fires *on* it; one that fires on its "
                    "absence is not that variable's feature": torch.maximum(auc, 1 - auc),
                    "1 - AUROC: the labels reversed": 1 - auc}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-5, dims=("latent",))
    passed("test_latent_aurocs", len(cases))


def reference_previous_token_labels(tokens: torch.Tensor, word: int) -> torch.Tensor:
    labels = torch.zeros_like(tokens, dtype=torch.bool)
    labels[:, 1:] = tokens[:, :-1] == word
    return labels


def test_previous_token_labels(previous_token_labels: Callable) -> None:
    """``previous_token_labels(tokens [batch, seq], word) -> [batch, seq] bool``: True at position p when the token
    at p - 1 is ``word``; False at position 0 (there is no previous token)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab in ((4, 10, 5), (6, 16, 8), (3, 7, 3)):
        tokens = torch.randint(vocab, (batch, seq), generator=generator)
        word = int(tokens[0, 2])
        tokens[1, -1] = word  # the word at the last position: a wrap-around would mark position 0
        cases.append((tokens, word, f"{batch} random sequences of {seq} tokens from {vocab} words, word {word} "
                                    f"(seed {seed})"))
    for tokens, word, case in cases:
        got = call_learner(previous_token_labels, tokens.clone(), word, case=case)
        got = _as_tensor(got, case)
        expected = reference_previous_token_labels(tokens, word)
        nxt = torch.zeros_like(expected)
        nxt[:, :-1] = tokens[:, 1:] == word
        variants = {"the current token, not the previous one": tokens == word,
                    "the next token (p + 1), not the previous one (p - 1)": nxt,
                    "torch.roll wraps the last token around to position 0: position 0 has no previous token":
                        torch.roll(tokens, 1, dims=1) == word}
        compare_outputs(got.bool(), expected, case, variants=variants, dims=("sequence", "position"))
    passed("test_previous_token_labels", len(cases))


# ---------------------------------------------------------------- 5. features are causal: clamp one latent

def _random_sae(model, generator: torch.Generator, architecture: str) -> saes.SAE:
    d = model.cfg.d_model
    cfg = saes.SAEConfig(d_in=d, d_sae=4 * d, architecture=architecture, k=8 if architecture == "topk" else None)
    sae = saes.SAE(cfg, seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(cfg.d_sae, generator=generator))
        sae.b_dec.copy_(0.5 * torch.randn(d, generator=generator))
    return sae


def reference_clamp_hook(sae: saes.SAE, latent: int, value: float) -> Callable:
    return saes.latent_edit_hook(sae, latent, value, positions=None)


def test_clamp_hook(clamp_hook: Callable) -> None:
    """``clamp_hook(sae, latent, value) -> hook``: a hook function that sets latent ``latent`` of the SAE to ``value``
    at every position and keeps everything else, the SAE's reconstruction error included:
    ``x' = x + (value - f_latent(x)) * W_dec[latent]``."""
    model, model_seed = _random_model_and_seed()
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model.cfg.d_vocab, (4, 9), generator=generator)
    n_cases = 0
    for architecture, layer, value in (("standard", 1, 5.0), ("topk", model.cfg.n_layers - 1, 0.0)):
        sae = _random_sae(model, generator, architecture)
        hook_name = f"blocks.{layer}.hook_resid_pre"
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda name: name == hook_name)
            f = sae.encode(cache[hook_name])
        latent = int((f > 0).float().mean((0, 1)).argmax())  # a latent that fires, so ablating it changes something
        what = "clamped to 5.0" if value else "ablated (set to 0)"
        case = (f"{_where(model, model_seed)}: a random {architecture} SAE at {hook_name}, latent {latent} {what}, "
                f"4 random prompts of 9 tokens (seed {seed})")
        hook = call_learner(clamp_hook, sae, latent, value, case=case)
        if not callable(hook):
            raise CheckFailed(f"{case}: return a hook function hook(act, hook) -> act, got {type(hook).__name__}")
        with torch.no_grad():
            got = call_learner(model.run_with_hooks, tokens, fwd_hooks=[(hook_name, hook)], case=case)
            expected = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, reference_clamp_hook(sae, latent, value))])

        def variants(sae=sae, latent=latent, value=value, hook_name=hook_name):
            def reconstruction_only(act, hook):
                f = sae.encode(act)
                f[..., latent] = value
                return sae.decode(f)

            def added(act, hook):
                return act + value * sae.W_dec[latent]

            with torch.no_grad():
                return {"the activation replaced by the SAE's reconstruction with the latent clamped: that drops the "
                        "reconstruction error x - x_hat, so everything else changes too; add the latent's change "
                        "(value - f) * W_dec[latent] to x instead": model.run_with_hooks(
                            tokens, fwd_hooks=[(hook_name, reconstruction_only)]),
                        "value * W_dec[latent] added on top of the latent's current contribution: subtract it first "
                        "((value - f) * W_dec[latent])": model.run_with_hooks(tokens, fwd_hooks=[(hook_name, added)]),
                        "the model unchanged: does the hook return the edited activation?": model(tokens),
                        "the bos position left out: clamp every position": model.run_with_hooks(
                            tokens, fwd_hooks=[(hook_name, saes.latent_edit_hook(sae, latent, value))])}
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-3, rtol=1e-3,
                                   dims=("prompt", "position", "vocab"))
        n_cases += 1
    passed("test_clamp_hook", n_cases)
