"""Toy models of superposition: the phase change, and the measures behind its plots."""
import math

import pytest
import torch

from interplab import superposition as sp


@pytest.fixture(scope="module")
def sweep():
    # dense and very sparse inputs, 20 features into 5 dimensions (measured: 5 and 18-20 features represented)
    return sp.train_toy_models(n_features=20, n_hidden=5, sparsities=(0.0, 0.99), steps=2000, batch_size=512,
                               seed=0, progress=False)


def test_dense_features_get_their_own_dimensions(sweep):
    norms = sp.feature_norms(sweep.W[0])
    assert sp.n_represented(sweep.W[0]) == 5
    assert (norms[:5] > 0.9).all()  # the five most important features, each kept whole
    assert (norms[5:] < 0.5).all()
    assert sp.superposition(sweep.W[0])[:5].mean() < 0.1  # (almost) alone in their dimensions
    assert sp.dimensions_per_feature(sweep.W[0]) > 0.9


def test_sparse_features_share_dimensions(sweep):
    W = sweep.W[1]
    assert sp.n_represented(W) >= 12  # more features than the 5 dimensions
    represented = sp.feature_norms(W) > sp.REPRESENTED_NORM
    assert sp.superposition(W)[represented].mean() > 0.3
    assert sp.dimensions_per_feature(W) < 0.5
    assert sp.feature_dimensionality(W).sum() <= 5 + 1e-3
    assert sweep.history[-1] == (2000, sp.n_represented(sweep.W).tolist())


def test_training_is_deterministic():
    a = sp.train_toy_models(n_features=6, n_hidden=2, sparsities=(0.5,), steps=20, seed=3, progress=False)
    b = sp.train_toy_models(n_features=6, n_hidden=2, sparsities=(0.5,), steps=20, seed=3, progress=False)
    assert torch.equal(a.W, b.W)
    assert a.losses.shape == (1, 1)


def test_measures_on_known_geometry():
    # two antipodal features in one dimension, one orthogonal feature, one dropped
    W = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(sp.gram(W), W.T @ W)
    assert torch.allclose(sp.feature_norms(W), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert torch.allclose(sp.superposition(W), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(sp.feature_dimensionality(W), torch.tensor([0.5, 0.5, 1.0, 0.0]))
    assert math.isclose(float(sp.dimensions_per_feature(W)), 2 / 3, rel_tol=1e-6)
    pentagon = torch.stack([torch.tensor([math.cos(a), math.sin(a)]) for a in torch.arange(5) * 2 * math.pi / 5], 1)
    assert torch.allclose(sp.feature_dimensionality(pentagon), torch.full((5,), 0.4), atol=1e-5)
    batched = torch.stack([W, -W])
    assert sp.n_represented(batched).tolist() == [3, 3]


def test_sample_features_sparsity():
    x = sp.sample_features(20000, 4, (0.0, 0.9), torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2, 4)
    assert (x[:, 0] > 0).float().mean() > 0.99
    assert abs((x[:, 1] > 0).float().mean().item() - 0.1) < 0.01
    assert 0.45 < x[:, 1][x[:, 1] > 0].mean() < 0.55  # still uniform on [0, 1] when present


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsities": (1.0,)}, "in \\[0, 1\\)"),
    ({"sparsities": ()}, "at least one sparsity"),
    ({"n_features": 5, "n_hidden": 5}, "smaller than n_features"),
    ({"importance_decay": 0.0}, "decay"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sp.train_toy_models(steps=1, progress=False, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="\\[m, n\\]"):
        sp.gram(torch.zeros(5))
    with pytest.raises(ValueError, match="models"):
        sp.ToyModel(4, 2, n_models=3)(torch.zeros(8, 2, 4))
