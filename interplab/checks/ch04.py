"""Checkers for chapter 04 (superposition and sparse autoencoders).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time, with
sizes unlike the shipped SAE's: random toy-model weights (one column exactly zero, a dropped
feature), random SAE weights and activations with an offset mean and unequal scales (as residual
streams have), random latent codes with many exact zeros (as ReLU latents have, so AUROC ties are
the rule), random token sequences, random decoders. An answer replayed from an earlier run, or one
that hard-codes the shipped SAE's sizes, fails. When an answer matches a common mistake (no ReLU,
``W W^T`` where ``W^T W`` belongs, the j = i term in the interference, ``b_dec`` not subtracted,
TopK keeping the largest ``|value|`` or negative values, a mean over dimensions where the squared
error is summed, the decoder gradient projected along columns, explained variance per dimension or
not centred, the fraction of CE lost instead of recovered, AUROC ties counted as losses or the
population ignored, an off-by-one previous token, a clamp that drops the SAE's error term, |cos|
where the signed cosine belongs) the message says which. ``check_feature_names`` measures the
learner's named latents of the shipped SAE on fresh sequences against the world's variables.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from interplab import saes, superposition
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_seed, passed, shipped_model)

MODEL = "attn2-induction"
SAE_NAME = "attn2-induction-topk"
FEATURE_AUROC = 0.9
"""A named latent passes when it detects its variable with at least this AUROC on fresh sequences."""
MIN_FEATURES = 5


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
    elif type(got).__module__ == "numpy" and getattr(got, "ndim", None) == 0:  # a numpy scalar such as float32
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise CheckFailed(f"{case}: return a number, got {type(got).__name__}")
    return float(got)


def _check_grad(got: torch.Tensor, case: str, what: str) -> None:
    if not got.requires_grad:
        raise CheckFailed(f"{case}: the result does not carry gradients although {what} requires grad: keep the "
                          "computation in torch (no .detach(), .item(), .numpy() or torch.tensor(...) of a result), "
                          "so the notebook can train with it")


# ---------------------------------------------------------------- 1. toy models of superposition

def reference_toy_forward(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x @ W.T @ W + b)


def test_toy_forward(toy_forward: Callable) -> None:
    """``toy_forward(W [m, n], b [n], x [batch, n]) -> x_hat [batch, n]``: ``x_hat = ReLU(x @ W.T @ W + b)``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for m, n, batch in ((3, 7, 10), (5, 20, 16), (2, 5, 4), (4, 4, 6)):
        W = torch.randn(m, n, generator=generator)
        b = torch.randn(n, generator=generator) * 0.5
        x = superposition.sample_features(batch, n, 0.6, generator)[:, 0]
        cases.append((W, b, x, f"random W [{m}, {n}], b [{n}], {batch} sparse inputs (seed {seed})"))
    for W, b, x, case in cases:
        W_in = W.clone().requires_grad_(True)
        with torch.enable_grad():  # the notebook runs with grad off; the exercise must keep autograd
            got = call_learner(toy_forward, W_in, b.clone(), x.clone(), case=case)
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            _check_grad(got, case, "W")
        got = _as_tensor(got, case)
        expected = reference_toy_forward(W, b, x)

        def variants(W=W, b=b, x=x):
            found = {"no ReLU on the output: the ReLU is what filters the interference": x @ W.T @ W + b,
                     "the bias left out": torch.relu(x @ W.T @ W),
                     "the bias added after the ReLU (it belongs inside: ReLU(x W^T W + b))":
                         torch.relu(x @ W.T @ W) + b,
                     "the ReLU on the hidden layer h = x @ W.T, not on the output": torch.relu(x @ W.T) @ W + b}
            if W.shape[0] == W.shape[1]:
                found["W W^T where W^T W belongs (x @ W @ W.T)"] = torch.relu(x @ W @ W.T + b)
            return found
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, dims=("example", "feature"))
    passed("test_toy_forward", len(cases))


def _random_W(generator: torch.Generator, m: int, n: int, dropped: int = 1) -> torch.Tensor:
    """Toy-model weights [m, n] with columns of unequal length, and ``dropped`` exactly-zero columns."""
    W = torch.randn(m, n, generator=generator) * torch.rand(n, generator=generator).add(0.2)
    if dropped:
        W[:, torch.randperm(n, generator=generator)[:dropped]] = 0.0
    return W


def _check_feature_shape(got: torch.Tensor, W: torch.Tensor, case: str) -> None:
    m, n = W.shape
    if got.shape == (m,) and m != n:
        raise CheckFailed(f"{case}: expected one value per feature, shape ({n},), got ({m},): that is one per hidden "
                          f"dimension. W is [m, n] = [{m}, {n}]: feature i is the column W[:, i] (rows are hidden "
                          "dimensions)")
    if got.shape == (n, n):
        raise CheckFailed(f"{case}: expected one value per feature, shape ({n},), got a matrix ({n}, {n}): sum over "
                          "j != i")


def reference_interference(W: torch.Tensor) -> torch.Tensor:
    return superposition.superposition(W)


def test_interference(interference: Callable) -> None:
    """``interference(W [m, n]) -> [n]``: ``sum_{j != i} (W_hat_i . W_j)^2`` with ``W_hat_i = W_i / ||W_i||`` (``W_i``
    the column of feature i); 0 for a feature whose column is exactly zero."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(_random_W(generator, m, n), f"random W [{m}, {n}] with one zero column (seed {seed})")
             for m, n in ((3, 8), (5, 20), (2, 4), (6, 6))]
    for W, case in cases:
        got = _as_tensor(call_learner(interference, W.clone(), case=case), case)
        _check_feature_shape(got, W, case)
        expected = reference_interference(W)
        zero = W.norm(dim=0) == 0
        if got.shape == expected.shape and not torch.isfinite(got[zero]).all():
            raise CheckFailed(f"{case}: NaN or Inf for feature(s) {zero.nonzero().flatten().tolist()}, whose column is "
                              "exactly zero (a dropped feature): a division by a zero norm; clamp the norm "
                              "(norm.clamp_min(1e-8)) or set those features to 0")

        def variants(W=W, zero=zero):
            unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
            overlap = (unit.T @ W).pow(2)
            raw = (W.T @ W).pow(2)
            rows = W.T  # treating rows as features: only comparable when W is square
            row_unit = rows / rows.norm(dim=0, keepdim=True).clamp_min(1e-8)
            row_overlap = (row_unit.T @ rows).pow(2)
            found = {"the j = i term included: it adds ||W_i||^2, the feature's own length":
                         torch.where(zero, 0.0, overlap.sum(-1)),
                     "W_i where its unit direction W_hat_i belongs: the score then grows with the feature's own "
                     "length": raw.sum(-1) - raw.diagonal(),
                     "W_j normalised too (squared cosines): interference counts how much of feature j's *length* "
                     "lies along feature i": torch.where(zero, 0.0, (unit.T @ unit).pow(2).sum(-1) - 1),
                     "the dot products not squared": torch.where(zero, 0.0, (unit.T @ W).sum(-1) - W.norm(dim=0))}
            if W.shape[0] == W.shape[1]:
                found["rows of W where features are its columns"] = row_overlap.sum(-1) - row_overlap.diagonal()
            return found
        compare_with_lazy_variants(torch.nan_to_num(got.float()), expected, case, variants, atol=1e-4,
                                   dims=("feature",))
    passed("test_interference", len(cases))


# ---------------------------------------------------------------- 2. an SAE, built by hand

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
    """``sae_encode(x [n, d_in], W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in]) -> f [n, d_sae]``:
    ``ReLU((x - b_dec) @ W_enc + b_enc)``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_in, d_sae in ((8, 6, 20), (5, 16, 48), (3, 4, 9), (6, 7, 7)):
        w = _random_sae_weights(generator, d_in, d_sae)
        x = _random_acts(generator, n, d_in, offset=w["b_dec"] + torch.randn(d_in, generator=generator))
        cases.append((x, w, f"random SAE weights (d_in {d_in}, d_sae {d_sae}), {n} activations (seed {seed})"))
    for x, w, case in cases:
        W_enc = w["W_enc"].clone().requires_grad_(True)
        with torch.enable_grad():
            got = call_learner(sae_encode, x.clone(), W_enc, w["b_enc"].clone(), w["b_dec"].clone(), case=case)
        expected = reference_sae_encode(x, w["W_enc"], w["b_enc"], w["b_dec"])
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            _check_grad(got, case, "W_enc")
        got = _as_tensor(got, case)

        def variants(x=x, w=w):
            pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
            found = {"b_dec not subtracted from x before encoding (x - b_dec centres the input on the decoder's "
                     "bias)": torch.relu(x @ w["W_enc"] + w["b_enc"]),
                     "b_dec added to x where it is subtracted": torch.relu((x + w["b_dec"]) @ w["W_enc"] + w["b_enc"]),
                     "no ReLU: those are the pre-activations": pre,
                     "b_enc left out": torch.relu((x - w["b_dec"]) @ w["W_enc"])}
            if w["W_enc"].shape[0] == w["W_enc"].shape[1]:
                found["W_enc.T where W_enc belongs"] = torch.relu((x - w["b_dec"]) @ w["W_enc"].T + w["b_enc"])
            return found
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-4, dims=("token", "latent"))
    passed("test_sae_encode", len(cases))


def reference_topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def _keep_top(score: torch.Tensor, values: torch.Tensor, k: int) -> torch.Tensor:
    indices = score.topk(k, dim=-1).indices
    return torch.zeros_like(values).scatter(-1, indices, values.gather(-1, indices))


def test_topk_activation(topk_activation: Callable) -> None:
    """``topk_activation(pre [n, d_sae], k) -> f [n, d_sae]``: in each row keep the ``k`` largest pre-activations,
    ReLU them (a negative one among the k becomes 0), and set every other entry to 0; gradients flow to the kept
    entries."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_sae, k in ((6, 20, 4), (4, 50, 8), (5, 9, 1), (4, 6, 6)):
        pre = torch.randn(n, d_sae, generator=generator) * 2
        pre[0] = -pre[0].abs() - 0.1  # a row with no positive pre-activation: nothing fires
        pre[1] = -pre[1].abs() - 0.1
        pre[1, :k - 1] = pre[1, :k - 1].abs() + 1  # a row with k - 1 positives: fewer than k fire
        pre[2, 0] = -10.0  # a large negative value: the largest |value| of its row
        what = "k = d_sae" if k == d_sae else f"k {k}"
        cases.append((pre, k, f"random pre-activations [{n}, {d_sae}], {what} (seed {seed})"))
    for pre, k, case in cases:
        pre_in = pre.clone().requires_grad_(True)
        with torch.enable_grad():
            got = call_learner(topk_activation, pre_in, k, case=case)
        expected = reference_topk_activation(pre, k)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            _check_grad(got, case, "pre")
        got_t = _as_tensor(got, case)

        def variants(pre=pre, k=k):
            found = {"the k largest |value|, not the k largest values: a large negative pre-activation is a latent "
                     "that does not fire": torch.relu(_keep_top(pre.abs(), pre, k)),
                     "the k largest |value| kept with their signs": _keep_top(pre.abs(), pre, k),
                     "no ReLU after the TopK: when fewer than k pre-activations are positive, negative values are "
                     "kept": _keep_top(pre, pre, k),
                     "the k smallest values, not the k largest": torch.relu(_keep_top(-pre, pre, k)),
                     "the top k over the batch (dim 0), not over the latents of each row":
                         torch.relu(_keep_top(pre.T, pre.T, min(k, pre.shape[0])).T),
                     "the top k ReLU'd but the other entries not zeroed":
                         pre.scatter(-1, pre.topk(k, dim=-1).indices, torch.relu(pre.topk(k, dim=-1).values)),
                     "ReLU only: no TopK": torch.relu(pre)}
            flat = torch.zeros(pre.numel()).scatter(0, pre.flatten().topk(k).indices,
                                                    torch.relu(pre.flatten().topk(k).values)).reshape(pre.shape)
            found["the top k of the whole batch (flattened), not k per row"] = flat
            for other in (k - 1, k + 1):
                if 1 <= other <= pre.shape[-1]:
                    found[f"{other} latents kept where k = {k} belong (an off-by-one k)"] = reference_topk_activation(
                        pre, other)
            return found
        compare_with_lazy_variants(got_t.float(), expected, case, variants, atol=1e-5, dims=("token", "latent"))
        with torch.enable_grad():
            got.sum().backward()
        kept = expected > 0
        if pre_in.grad is None or not torch.equal(pre_in.grad != 0, kept):
            where = "no gradient at all" if pre_in.grad is None else (
                f"gradient at {int((pre_in.grad != 0).sum())} entries, the kept positive entries are {int(kept.sum())}")
            raise CheckFailed(f"{case}: the values are right but the gradient is not: {where}. Build the output from "
                              "pre with differentiable ops (topk, then scatter ReLU'd values into zeros_like(pre))")
    passed("test_topk_activation", len(cases))


def reference_sae_loss(x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor, l1_coefficient: float) -> torch.Tensor:
    return (x_hat - x).pow(2).sum(-1).mean() + l1_coefficient * f.abs().sum(-1).mean()


def test_sae_loss(sae_loss: Callable) -> None:
    """``sae_loss(x [n, d_in], x_hat [n, d_in], f [n, d_sae], l1_coefficient) -> 0-dim tensor``: the squared error
    summed over dimensions plus ``l1_coefficient`` times the L1 norm of the code, both averaged over tokens."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_in, d_sae, l1 in ((16, 6, 24, 0.5), (10, 12, 40, 2.0), (6, 4, 9, 0.1), (8, 5, 15, 0.0)):
        x = _random_acts(generator, n, d_in)
        x_hat = x + 0.5 * torch.randn(n, d_in, generator=generator)
        f = torch.relu(torch.randn(n, d_sae, generator=generator) - 0.5) * 2
        cases.append((x, x_hat, f, l1, f"{n} random activations (d_in {d_in}), reconstructions and latents "
                                        f"(d_sae {d_sae}), l1_coefficient {l1} (seed {seed})"))
    for x, x_hat, f, l1, case in cases:
        x_hat_in = x_hat.clone().requires_grad_(True)
        with torch.enable_grad():
            got = call_learner(sae_loss, x.clone(), x_hat_in, f.clone(), l1, case=case)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            _check_grad(got, case, "x_hat")
        elif not isinstance(got, torch.Tensor) and isinstance(got, (int, float)):
            raise CheckFailed(f"{case}: return a 0-dim tensor, got a Python {type(got).__name__}: a number carries no "
                              "gradient, so the SAE could not train on it (no .item() or float(...))")
        got = _as_float(got, case)
        expected = float(reference_sae_loss(x, x_hat, f, l1))
        error = (x_hat - x).pow(2)
        mse, sparsity = float(error.sum(-1).mean()), float(f.sum(-1).mean())
        variants = {"a mean over everything: the squared error averaged over dimensions and the L1 over latents, "
                    "where both are summed (off by factors d_in and d_sae)": float(error.mean()) + l1 * float(f.mean()),
                    "the squared error averaged over dimensions where it is summed":
                        float(error.mean()) + l1 * sparsity,
                    "the L1 averaged over latents where it is summed": mse + l1 * float(f.mean()),
                    "an L2 penalty sum f^2 where the L1 sum |f| belongs": mse + l1 * float(f.pow(2).sum(-1).mean()),
                    "the reconstruction error not squared (|x_hat - x|)": float((x_hat - x).abs().sum(-1).mean())
                                                                          + l1 * sparsity,
                    "the error's norm ||x_hat - x||, not its square":
                        float(error.sum(-1).sqrt().mean()) + l1 * sparsity,
                    "no L1 term: the squared error alone": mse,
                    "the L1 coefficient left out (multiply the L1 term by it)": mse + sparsity,
                    "sums over tokens where the means belong": float(error.sum()) + l1 * float(f.sum())}
        variants = {text: value for text, value in variants.items() if not math.isclose(value, expected, rel_tol=1e-6)}
        compare_outputs(got, expected, case, atol=1e-4, rtol=1e-4, variants=variants)
    passed("test_sae_loss", len(cases))


def reference_project_decoder_grad(W_dec: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad - (grad * W_dec).sum(1, keepdim=True) * W_dec


def test_project_decoder_grad(project_decoder_grad: Callable) -> None:
    """``project_decoder_grad(W_dec [d_sae, d_in], grad [d_sae, d_in]) -> [d_sae, d_in]``: each row of ``grad`` minus
    its component along the same (unit) row of ``W_dec``; the inputs stay unchanged."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for d_sae, d_in in ((12, 5), (40, 16), (7, 7), (3, 10)):
        W_dec = torch.randn(d_sae, d_in, generator=generator)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        grad = torch.randn(d_sae, d_in, generator=generator) + 0.8 * W_dec  # a sizeable part along each row
        cases.append((W_dec, grad, f"a random unit-row decoder [d_sae {d_sae}, d_in {d_in}] and gradient "
                                   f"(seed {seed})"))
    for W_dec, grad, case in cases:
        W_in, grad_in = W_dec.clone(), grad.clone()
        got = _as_tensor(call_learner(project_decoder_grad, W_in, grad_in, case=case), case)
        if not torch.equal(grad_in, grad) or not torch.equal(W_in, W_dec):
            which = "grad" if not torch.equal(grad_in, grad) else "W_dec"
            raise CheckFailed(f"{case}: your function changed its input {which} in place: return a new tensor "
                              f"({which} - ..., not {which} -= ... or {which}.sub_(...)); the optimiser still needs "
                              "the original")
        expected = reference_project_decoder_grad(W_dec, grad)

        def variants(W_dec=W_dec, grad=grad):
            along = (grad * W_dec).sum(1, keepdim=True) * W_dec
            return {"the component along each *column* removed (a sum over dim 0): W_dec is [d_sae, d_in], so latent "
                    "i's direction is the row W_dec[i]": grad - (grad * W_dec).sum(0, keepdim=True) * W_dec,
                    "the parallel part returned: that is the part to remove, keep the rest": along,
                    "the gradient unchanged": grad,
                    "every decoder row's direction removed from every gradient row (grad - grad @ W_dec.T @ W_dec): "
                    "remove each row's own direction only": grad - grad @ W_dec.T @ W_dec,
                    "the component added, not removed": grad + along}
        compare_with_lazy_variants(got.float(), expected, case, variants, atol=1e-5, dims=("latent", "d_in"))
    passed("test_project_decoder_grad", len(cases))


# ---------------------------------------------------------------- 3. evaluation

def reference_explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_explained_variance(explained_variance: Callable) -> None:
    """``explained_variance(x [n, d], x_hat [n, d]) -> float``: ``1 - sum (x - x_hat)^2 / sum (x - x.mean(0))^2``,
    sums over tokens and dimensions (the total variance, not one ratio per dimension)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d, noise in ((40, 8, 0.3), (200, 16, 0.1), (12, 5, 0.6)):
        x = _random_acts(generator, n, d)
        scale = torch.exp(torch.randn(d, generator=generator))  # errors unequal across dimensions
        x_hat = x + noise * scale * torch.randn(n, d, generator=generator)
        cases.append((x, x_hat, f"{n} random activations of {d} dimensions with a mean offset, reconstruction "
                                f"noise {noise} (seed {seed})"))
    x = _random_acts(generator, 30, 6)
    cases.append((x, x.mean(0).expand_as(x).clone(), f"the mean activation as the reconstruction (EV 0) (seed {seed})"))
    cases.append((x, x.clone(), f"a perfect reconstruction (EV 1) (seed {seed})"))
    for x, x_hat, case in cases:
        got = _as_float(call_learner(explained_variance, x.clone(), x_hat.clone(), case=case), case)
        xd, hd = x.double(), x_hat.double()
        error = (xd - hd).pow(2)
        centred = (xd - xd.mean(0)).pow(2)
        expected = reference_explained_variance(x, x_hat)
        variants = {"the explained variance of each dimension, averaged over dimensions: the measure is over the "
                    "total variance, so a dimension with little variance must not count as much as a large one":
                        float((1 - error.sum(0) / centred.sum(0)).mean()),
                    "the variance around 0, not around the mean: x's offset counts as 'explained' (centre x with "
                    "x.mean(0))": float(1 - error.sum() / xd.pow(2).sum()),
                    "x centred by one scalar mean (x.mean()) where the mean of each dimension (x.mean(0)) belongs":
                        float(1 - error.sum() / (xd - xd.mean()).pow(2).sum()),
                    "the explained variance of each token, averaged": float((1 - error.sum(1) / centred.sum(1)).mean()),
                    "the unexplained fraction: the '1 -' is missing": float(error.sum() / centred.sum()),
                    "the unbiased variance (n - 1) in the denominator with the error averaged over n":
                        float(1 - error.sum(-1).mean() / xd.var(0).sum())}
        variants = {text: value for text, value in variants.items() if not math.isclose(value, expected, abs_tol=1e-9)}
        compare_outputs(got, expected, case, atol=1e-5, rtol=1e-5, variants=variants)
    passed("test_explained_variance", len(cases))


def reference_ce_recovered(clean: float, spliced: float, ablated: float) -> float:
    if ablated == clean:
        raise ValueError("the ablated and clean losses are equal: CE recovered is undefined")
    return (ablated - spliced) / (ablated - clean)


def test_ce_recovered(ce_recovered: Callable) -> None:
    """``ce_recovered(clean, spliced, ablated) -> float``: ``(ablated - spliced) / (ablated - clean)``; 1 = as good as
    clean, 0 = no better than the ablation, below 0 when worse (not clipped); ``ValueError`` when ablated == clean."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)

    def draw() -> float:
        return float(torch.rand(1, generator=generator))

    cases = []
    for share in (draw(), draw(), 0.0, 1.0, 1.3 + draw()):  # 0: as clean; 1: as ablated; > 1: worse than ablating
        clean = round(1.0 + draw(), 4)
        ablated = round(clean + 0.5 + 3 * draw(), 4)
        spliced = clean + share * (ablated - clean)
        cases.append((clean, spliced, ablated, f"CE clean {clean:.4f}, spliced {spliced:.4f}, ablated {ablated:.4f} "
                                               f"nats (seed {seed})"))
    for clean, spliced, ablated, case in cases:
        got = _as_float(call_learner(ce_recovered, clean, spliced, ablated, case=case), case)
        expected = reference_ce_recovered(clean, spliced, ablated)
        variants = {"the fraction lost, (spliced - clean) / (ablated - clean): CE *recovered* is 1 minus that":
                        1 - expected,
                    "the CE increase in nats, not a fraction": spliced - clean,
                    "the ratio upside down":
                        (ablated - clean) / (ablated - spliced) if ablated != spliced else math.nan,
                    "spliced and ablated swapped": (spliced - ablated) / (spliced - clean) if spliced != clean
                    else math.nan,
                    "clipped to [0, 1]: an SAE worse than the ablation scores below 0, and the chapter wants to see "
                    "it": min(1.0, max(0.0, expected))}
        variants = {text: value for text, value in variants.items()
                    if not math.isnan(value) and not math.isclose(value, expected, abs_tol=1e-9)}
        compare_outputs(got, expected, case, atol=1e-6, rtol=1e-6, variants=variants)
    clean = round(1.0 + draw(), 4)
    case = f"CE clean {clean}, spliced {clean + 0.2:.4f}, ablated {clean} (ablation costs nothing)"
    try:
        got = ce_recovered(clean, clean + 0.2, clean)
    except ValueError:
        pass
    except Exception as error:
        raise CheckFailed(f"{case}: raise ValueError when ablated == clean (the ratio is undefined), not "
                          f"{type(error).__name__}: check the denominator before dividing") from error
    else:
        raise CheckFailed(f"{case}: expected ValueError (the ratio is undefined when ablating costs nothing), got "
                          f"{got!r}")
    passed("test_ce_recovered", len(cases) + 1)


# ---------------------------------------------------------------- 4. ground truth: does one latent detect a variable?

def _auroc_columns(latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return saes.auroc_matrix(latents, labels.bool()[:, None])[:, 0].double()


def reference_best_latent_auroc(latents: torch.Tensor, labels: torch.Tensor, population: torch.Tensor | None
                                ) -> tuple[float, int]:
    rows = slice(None) if population is None else population.bool()
    auc = _auroc_columns(latents[rows], labels[rows])
    best = int(auc.argmax())
    return float(auc[best]), best


def _aurocs_ties_as(latents: torch.Tensor, labels: torch.Tensor, tie: float) -> torch.Tensor:
    labels = labels.bool()
    pos, neg = latents[labels], latents[~labels]
    wins = (pos[:, None, :] > neg[None, :, :]).double() + tie * (pos[:, None, :] == neg[None, :, :]).double()
    return wins.mean((0, 1))


def _best(auc: torch.Tensor) -> tuple[float, int]:
    best = int(auc.argmax())
    return float(auc[best]), best


def _planted_latents(generator: torch.Generator, n: int, d_sae: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ReLU-like latents (mostly exact zeros) with a planted detector, a detector of the label's absence, and a
    latent that looks best only if the population is ignored."""
    rate = torch.rand(d_sae, generator=generator) * 0.3
    rate[torch.randperm(d_sae, generator=generator)[:2]] = 0.0  # dead latents: AUROC 0.5 from ties alone
    latents = (torch.rand(n, d_sae, generator=generator) < rate) * torch.rand(n, d_sae, generator=generator).mul(3)
    labels = torch.rand(n, generator=generator) < 0.3
    population = torch.rand(n, generator=generator) < 0.6
    labels[:2], population[:4] = torch.tensor([False, True]), True
    labels[2:4] = torch.tensor([False, True])
    detector, absence, confound = torch.randperm(d_sae, generator=generator)[:3].tolist()
    # fires on 80% of positives and 25% of negatives in the population (ties at zero on both sides, so its AUROC
    # is below 1), and on every negative outside it, strongly: the best latent only within the population
    u = torch.rand(n, generator=generator)
    latents[:, detector] = (labels & (u < 0.8)) * (1 + u) + (~labels & (u < 0.25)) * 0.5 * u
    latents[3, detector] = 0.0  # a positive in the population where it is silent
    latents[~population & ~labels, detector] = 3.0
    u = torch.rand(n, generator=generator)
    # fires on negatives: 1 - AUROC beats every detector
    latents[:, absence] = (~labels) * (1 + u) + (labels & (u < 0.02)) * 0.1
    # a weaker detector inside the population, a clean one outside: the best when the population is ignored
    u = torch.rand(n, generator=generator)
    latents[:, confound] = (labels & (u < 0.6)) * u + (~labels & (u < 0.3)) * 0.3 * u
    latents[~population, confound] = labels[~population] * 2.0
    return latents.float(), labels, population


def test_best_latent_auroc(best_latent_auroc: Callable) -> None:
    """``best_latent_auroc(latents [n, d_sae], labels bool [n], population bool [n] | None) -> (auroc, latent)``: over
    the rows in ``population`` (None: every row), each latent's AUROC as a score for ``labels`` (high activation =
    positive; ties count one half); the best AUROC and its latent (the lowest index on equal AUROCs)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, d_sae in ((80, 12), (200, 30), (50, 7)):
        latents, labels, population = _planted_latents(generator, n, d_sae)
        cases.append((latents, labels, population, f"{n} tokens x {d_sae} random latents (mostly zeros), a random "
                                                   f"label and population (seed {seed})"))
    latents, labels, population = _planted_latents(generator, 60, 10)
    cases.append((latents, labels, None, f"60 tokens x 10 random latents, population None (every row) (seed {seed})"))
    twin = torch.cat([latents, latents], 1)  # every AUROC appears twice: the lowest index wins
    cases.append((twin, labels, population, f"60 tokens x 20 latents, each appearing twice (seed {seed})"))
    for latents, labels, population, case in cases:
        args = (latents.clone(), labels.clone(), None if population is None else population.clone())
        got = call_learner(best_latent_auroc, *args, case=case)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise CheckFailed(f"{case}: return a pair (auroc, latent), got {type(got).__name__}")
        auroc = _as_float(got[0], case)
        try:
            latent = int(got[1])
        except (TypeError, ValueError, RuntimeError):
            raise CheckFailed(f"{case}: the second value must be the latent's index (an int), got {got[1]!r}") from None
        expected = reference_best_latent_auroc(latents, labels, population)
        if math.isclose(auroc, expected[0], abs_tol=1e-5) and latent == expected[1]:
            continue
        rows = slice(None) if population is None else population
        auc = _auroc_columns(latents[rows], labels[rows])
        variants = {
            "ties counted as losses: a positive and a negative both at 0 count one half (most latents are 0 on "
            "most tokens, so this moves every AUROC)": _best(_aurocs_ties_as(latents[rows], labels[rows], 0.0)),
            "ties counted as wins (>= where > belongs): they count one half":
                _best(_aurocs_ties_as(latents[rows], labels[rows], 1.0)),
            "the population ignored: the AUROC is taken over the rows in `population` only (the variable is defined "
            "there)": _best(_auroc_columns(latents, labels)),
            "max(AUROC, 1 - AUROC): a latent that fires on the variable's *absence* is not its detector":
                _best(torch.maximum(auc, 1 - auc)),
            "latent 0's AUROC, not the best latent's": (float(auc[0]), 0)}
        if latent != expected[1] and math.isclose(auroc, expected[0], abs_tol=1e-5):
            same = (auc - expected[0]).abs() < 1e-9
            raise CheckFailed(f"{case}: the AUROC {auroc:.5f} is right but latent {latent} is not the one: expected "
                              f"latent {expected[1]}" + (f" (latents {same.nonzero().flatten().tolist()} tie: return "
                                                         "the lowest index, as argmax does)" if same.sum() > 1 else ""))
        matched = [text for text, (a, i) in variants.items()
                   if math.isclose(auroc, a, abs_tol=1e-5) and latent == i and (a, i) != expected]
        message = f"{case}: expected (auroc, latent) = ({expected[0]:.5f}, {expected[1]}), got ({auroc:.5f}, {latent})"
        if 0 <= latent < len(auc):
            message += f"; latent {latent}'s AUROC is {float(auc[latent]):.5f}"
        else:
            message += f", and {latent} is not a latent index (0..{len(auc) - 1})"
        if matched:
            message += f"\n  your answer matches {'; or '.join(matched)}"
        raise CheckFailed(message)
    passed("test_best_latent_auroc", len(cases))


def reference_previous_token_variable(tokens: torch.Tensor, prompt: torch.Tensor, position: torch.Tensor,
                                      word_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    previous = tokens[prompt, (position - 1).clamp_min(0)]
    labels = (previous == word_id) & (position >= 1)
    return labels, position >= 2


def test_previous_token_variable(previous_token_variable: Callable) -> None:
    """``previous_token_variable(tokens [batch, seq], prompt [n], position [n], word_id) -> (labels, population)``,
    both bool ``[n]``: row r is token ``position[r]`` of prompt ``prompt[r]``; ``labels[r]`` is whether the token before
    it is ``word_id`` (False at position 0), ``population[r]`` whether that previous token is a word
    (``position[r] >= 2``: position 0 is ``<bos>``)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, seq, vocab, n in ((4, 10, 6, 30), (7, 16, 9, 80), (3, 7, 4, 21)):
        tokens = torch.randint(1, vocab, (batch, seq), generator=generator)
        tokens[:, 0] = 0  # <bos>
        word = int(tokens[1, 3])
        tokens[0, -1] = word  # the word at a last position: a wrap-around at position 0 would find it
        prompt = torch.randint(batch, (n,), generator=generator)
        position = torch.randint(seq, (n,), generator=generator)
        prompt[:3], position[:3] = 0, torch.tensor([0, 1, 2])  # rows at <bos>, after <bos>, after a word
        prompt[3], position[3] = 1, 4  # a row whose previous token is the word
        order = torch.randperm(n, generator=generator)
        cases.append((tokens, prompt[order], position[order], word,
                      f"{n} rows from {batch} random sequences of {seq} tokens (position 0 is <bos>), word {word} "
                      f"(seed {seed})"))
    for tokens, prompt, position, word, case in cases:
        try:
            got = call_learner(previous_token_variable, tokens.clone(), prompt.clone(), position.clone(), word,
                               case=case)
        except CheckFailed as failure:
            if isinstance(failure.__cause__, IndexError):
                raise CheckFailed(f"{failure}\n  row r is token tokens[prompt[r], position[r]]: index both axes with "
                                  "the two index tensors (tokens[position - 1] alone picks whole sequences)"
                                  ) from failure.__cause__
            raise
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise CheckFailed(f"{case}: return a pair (labels, population), got {type(got).__name__}")
        labels, population = (_as_tensor(g, case) for g in got)
        expected_labels, expected_population = reference_previous_token_variable(tokens, prompt, position, word)
        seq = tokens.shape[1]
        if labels.shape == (len(prompt), seq):
            raise CheckFailed(f"{case}: labels: expected one per row, shape ({len(prompt)},), got "
                              f"{tuple(labels.shape)}: "
                              "tokens[position - 1] picks whole sequences; index both axes, "
                              "tokens[prompt, position - 1]")
        following = (tokens[prompt, (position + 1).clamp_max(seq - 1)] == word) & (position < seq - 1)
        label_variants = {
            "the current token (position p), not the previous one (p - 1)": tokens[prompt, position] == word,
            "the next token (p + 1), not the previous one (p - 1)": following,
            "index -1 at position 0 wraps around to the sequence's last token: position 0 has no previous token "
            "(label it False)": tokens[prompt, position - 1] == word,
            "prompt 0's tokens for every row: index tokens[prompt, position - 1], not tokens[0, ...]":
                (tokens[0, (position - 1).clamp_min(0)] == word) & (position >= 1)}
        compare_outputs(labels.bool(), expected_labels, f"{case}: labels", variants=label_variants, dims=("row",))
        population_variants = {
            "position >= 1: at position 1 the previous token is <bos>, not a word": position >= 1,
            "every row: the variable is defined only where a previous word exists": torch.ones_like(position).bool(),
            "position >= 3 (off by one): position 2's previous token is the first word": position >= 3}
        compare_outputs(population.bool(), expected_population, f"{case}: population", variants=population_variants,
                        dims=("row",))
    passed("test_previous_token_variable", len(cases))


# ---------------------------------------------------------------- 5. features are causal: clamp one latent

def _random_sae(generator: torch.Generator, d_in: int, d_sae: int, architecture: str) -> saes.SAE:
    cfg = saes.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture, k=4 if architecture == "topk" else None)
    sae = saes.SAE(cfg, seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(d_sae, generator=generator))
        sae.b_dec.copy_(0.5 * torch.randn(d_in, generator=generator))
    return sae


def reference_clamp_latent_hook(sae: saes.SAE, latent: int, value: float, positions: torch.Tensor) -> Callable:
    return saes.latent_edit_hook(sae, latent, value, positions)


def _hook_point(name: str):
    from transformer_lens.hook_points import HookPoint

    point = HookPoint()
    point.name = name
    return point


def test_clamp_latent_hook(clamp_latent_hook: Callable) -> None:
    """``clamp_latent_hook(sae, latent, value, positions bool [batch, seq]) -> hook_fn(act, hook)``: the hook returns
    ``act + positions[..., None] * (value - f_latent(act)) * W_dec[latent]`` (``f_latent = sae.encode(act)[...,
    latent]``): only that latent's contribution changes, to ``value``, only at ``positions``; the SAE's reconstruction
    error and the other latents are kept."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    settings = (("standard", 12, 40, 5.0), ("topk", 16, 48, 0.0), ("standard", 9, 30, 0.0))
    for architecture, d_in, d_sae, value in settings:
        sae = _random_sae(generator, d_in, d_sae, architecture)
        batch, seq = 3, 7
        act = _random_acts(generator, batch * seq, d_in, offset=sae.b_dec.detach()).reshape(batch, seq, d_in)
        positions = torch.rand(batch, seq, generator=generator) < 0.5
        positions[:, 0] = False  # <bos> left alone, as the chapter does
        positions[0, 1] = True
        with torch.no_grad():
            f = sae.encode(act)
        latent = int(((f > 0) & positions[..., None]).float().sum((0, 1)).argmax())  # one that fires where we edit
        what = f"clamped to {value}" if value else "ablated (set to 0)"
        hook_name = "blocks.1.hook_resid_pre"
        case = (f"a random {architecture} SAE (d_in {d_in}, d_sae {d_sae}), latent {latent} {what} at "
                f"{int(positions.sum())} of {batch * seq} positions, random activations at {hook_name} (seed {seed})")
        hook = call_learner(clamp_latent_hook, sae, latent, value, positions.clone(), case=case)
        if not callable(hook):
            raise CheckFailed(f"{case}: return a hook function hook_fn(act, hook) -> act, got {type(hook).__name__}")
        with torch.no_grad():
            got = call_learner(hook, act.clone(), _hook_point(hook_name), case=case)
            expected = reference_clamp_latent_hook(sae, latent, value, positions)(act.clone(), _hook_point(hook_name))
        if got is None:
            raise CheckFailed(f"{case}: the hook returned None: return the edited activation (TransformerLens keeps "
                              "the original when a hook returns nothing)")
        got = _as_tensor(got, case)

        def variants(sae=sae, latent=latent, value=value, act=act, positions=positions, f=f):
            mask = positions[..., None].float()
            current = f[..., latent:latent + 1]
            clamped = f.clone()
            clamped[..., latent] = value
            return {"the activation replaced by the SAE's reconstruction with the latent clamped: that drops the "
                    "reconstruction error x - x_hat, so everything else changes too; add the latent's change "
                    "(value - f) * W_dec[latent] to act instead": torch.where(positions[..., None], sae.decode(clamped),
                                                                              act),
                    "value * W_dec[latent] added on top of the latent's current contribution: remove it first "
                    "((value - f) * W_dec[latent])": act + mask * value * sae.W_dec[latent],
                    "every position edited: edit only where positions is True":
                        act + (value - current) * sae.W_dec[latent],
                    "the encoder column W_enc[:, latent] used as the direction: a latent writes along its decoder "
                    "row W_dec[latent]": act + mask * (value - current) * sae.W_enc[:, latent],
                    "the activation unchanged": act}
        compare_with_lazy_variants(got.float(), expected.detach(), case, variants, atol=1e-4, rtol=1e-4,
                                   dims=("prompt", "position", "d_in"))
        n_cases += 1
    passed("test_clamp_latent_hook", n_cases)


# ---------------------------------------------------------------- 6. where it breaks: splitting

def reference_decoder_matches(W_small: torch.Tensor, W_large: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    small = W_small / W_small.norm(dim=1, keepdim=True)
    large = W_large / W_large.norm(dim=1, keepdim=True)
    cosine, index = (small @ large.T).max(1)
    return cosine, index


def test_decoder_matches(decoder_matches: Callable) -> None:
    """``decoder_matches(W_small [a, d], W_large [b, d]) -> (cosine float [a], index int64 [a])``: for each row of
    ``W_small``, the largest (signed) cosine similarity with any row of ``W_large``, and which row."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for a, b, d in ((6, 15, 8), (10, 30, 12), (4, 9, 5)):
        W_small = torch.randn(a, d, generator=generator)
        parents = torch.randint(a, (b,), generator=generator)
        W_large = W_small[parents] + 0.8 * torch.randn(b, d, generator=generator)  # split children of small rows
        W_large[0] = -3.0 * W_small[0]  # an anti-parallel row: |cos| = 1, cos = -1
        W_large *= torch.rand(b, 1, generator=generator).mul(4).add(0.2)  # unequal lengths
        W_small = W_small * torch.rand(a, 1, generator=generator).mul(3).add(0.3)
        cases.append((W_small, W_large, f"random decoders of {a} and {b} rows, d {d}, rows of unequal length "
                                        f"(seed {seed})"))
    for W_small, W_large, case in cases:
        got = call_learner(decoder_matches, W_small.clone(), W_large.clone(), case=case)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise CheckFailed(f"{case}: return a pair (cosine [a], index [a]), got {type(got).__name__}")
        cosine, index = (_as_tensor(g, case) for g in got)
        expected_cosine, expected_index = reference_decoder_matches(W_small, W_large)
        small = W_small / W_small.norm(dim=1, keepdim=True)
        large = W_large / W_large.norm(dim=1, keepdim=True)
        cos = small @ large.T

        def variants(W_small=W_small, W_large=W_large, cos=cos):
            return {"|cos| where the signed cosine belongs: an anti-parallel row is the opposite feature":
                        cos.abs().max(1).values,
                    "the rows not normalised: raw dot products favour long rows": (W_small @ W_large.T).max(1).values,
                    "the max over the small SAE's rows (dim 0), not over the large one's (one value per row of "
                    "W_small)": cos.max(0).values,
                    "the smallest cosine, not the largest": cos.min(1).values}
        compare_with_lazy_variants(cosine.float(), expected_cosine, f"{case}: cosine", variants, atol=1e-4,
                                   dims=("small row",))
        if index.shape != expected_index.shape:
            raise CheckFailed(f"{case}: index: expected shape {tuple(expected_index.shape)} (one per row of W_small), "
                              f"got {tuple(index.shape)}")
        index = index.long()
        wrong = (index != expected_index) & ~(cos.gather(1, index.clamp(0, cos.shape[1] - 1)[:, None])[:, 0]
                                             >= expected_cosine - 1e-6)
        if wrong.any():
            row = int(wrong.nonzero()[0])
            given = int(index[row])
            given_cosine = float(cos[row, given]) if 0 <= given < cos.shape[1] else math.nan
            raise CheckFailed(f"{case}: index: row {row} of W_small is closest to row {int(expected_index[row])} of "
                              f"W_large (cosine {float(expected_cosine[row]):.4f}), you gave {given} (cosine "
                              f"{given_cosine:.4f}); {int(wrong.sum())} of {len(index)} indices differ: return the "
                              "argmax of the same cosines")
    passed("test_decoder_matches", len(cases))


# ---------------------------------------------------------------- the result: named latents, against the world

def _measured_latents(seed: int, n_sequences: int = 300, model=None):
    """The shipped SAE's latents on fresh induction sequences, and the world's variables over the same rows."""
    from interplab.sae_variables import induction_variables
    from interplab.worlds import induction
    from interplab.zoo.saes import load_sae

    sae = load_sae(SAE_NAME)
    model = shipped_model(MODEL) if model is None else model
    batch = induction.sample_batch(n_sequences, seed=seed)
    cache = saes.cache_activations(model, batch.tokens, sae.cfg.hook_name, progress=False)
    return saes.encode_all(sae, cache), induction_variables(cache)


def _latent_auroc(latents: torch.Tensor, variable: saes.Variable, latent: int) -> float:
    rows = slice(None) if variable.population is None else variable.population
    return float(saes.auroc_matrix(latents[rows][:, latent:latent + 1], variable.labels[rows][:, None])[0, 0])


def _variable_names() -> list[str]:
    from interplab.worlds import induction

    words = induction.vocabulary()
    return [f"current token = {w}" for w in words] + [f"previous token = {w}" for w in words]


def check_feature_names(my_features: dict, model=None, n_sequences: int = 300) -> None:
    """``my_features = {latent: "current token = ka" | "previous token = ka", ...}`` (at least 5): latents of the
    shipped ``attn2-induction-topk`` SAE and the variable you read in each. Each latent must detect its variable with
    AUROC >= 0.9, measured on fresh sequences within the variable's population. ``model``: the ``attn2-induction``
    model you already loaded (saves loading it again)."""
    from interplab.zoo import did_you_mean
    from interplab.zoo.saes import sae_card

    if not isinstance(my_features, dict):
        raise CheckFailed(f"give your features as a dict {{latent: name}}, got {type(my_features).__name__}")
    if len(my_features) < MIN_FEATURES:
        raise CheckFailed(f"name at least {MIN_FEATURES} latents, got {len(my_features)}")
    if model is not None and model.cfg.d_model != sae_card(SAE_NAME)["d_in"]:
        raise CheckFailed(f"the model you passed has d_model {model.cfg.d_model}, but {SAE_NAME} reads "
                          f"{MODEL}'s residual stream (d_model {sae_card(SAE_NAME)['d_in']}): pass that model")
    d_sae = int(sae_card(SAE_NAME)["settings"]["d_sae"])
    known = _variable_names()
    problems, named = [], []
    for key, name in my_features.items():
        try:
            latent = int(key)
        except (TypeError, ValueError):
            problems.append(f"{key!r} is not a latent index (an int in 0..{d_sae - 1})")
            continue
        if not 0 <= latent < d_sae:
            problems.append(f"latent {latent} is out of range: the SAE has latents 0..{d_sae - 1}")
        elif name not in known:
            problems.append(f"latent {latent}: unknown variable {name!r}.{did_you_mean(str(name), known)} Names "
                            "look like 'current token = ka' or 'previous token = ka' (words from "
                            "interplab.worlds.induction.vocabulary())")
        else:
            named.append((latent, name))
    if problems:
        raise CheckFailed("your features:\n  " + "\n  ".join(problems))
    seed = fresh_seed()
    latents, variables = _measured_latents(seed, n_sequences, model)
    by_name = {v.name: v for v in variables}
    results = []
    for latent, name in named:
        if name not in by_name:
            problems.append(f"latent {latent}: {name!r} has no positive example in this sample; run the check again")
            continue
        auroc = _latent_auroc(latents, by_name[name], latent)
        if auroc < FEATURE_AUROC:
            scores = {v.name: _latent_auroc(latents, v, latent) for v in variables}
            best = max(scores, key=scores.get)
            problems.append(f"latent {latent} detects {name!r} with AUROC {auroc:.3f} only (needs {FEATURE_AUROC}); "
                            f"the variable it detects best is {best!r} (AUROC {scores[best]:.3f})")
            continue
        results.append((latent, name, auroc))
    if problems:
        raise CheckFailed(f"measured on {n_sequences} fresh sequences (seed {seed}):\n  " + "\n  ".join(problems))
    lines = "\n".join(f"  latent {latent}: {name!r}, AUROC {auroc:.3f}" for latent, name, auroc in results)
    print(f"✔ check_feature_names passed: {len(results)} latents each detect the variable you named (AUROC >= "
          f"{FEATURE_AUROC} on {n_sequences} fresh sequences):\n{lines}")
