"""Each chapter-04 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs (random weights, activations, latents, a random model) at check time."""
import pytest
import torch

from interplab import saes
from interplab.checks import CheckFailed
from interplab.checks import ch04


# ---------------------------------------------------------------- toy models

def test_toy_forward_checker():
    ch04.test_toy_forward(ch04.reference_toy_forward)
    with pytest.raises(CheckFailed, match="no ReLU on the output"):
        ch04.test_toy_forward(lambda W, b, x: x @ W.T @ W + b)
    with pytest.raises(CheckFailed, match="bias left out"):
        ch04.test_toy_forward(lambda W, b, x: torch.relu(x @ W.T @ W))
    with pytest.raises(CheckFailed, match="on the hidden layer"):
        ch04.test_toy_forward(lambda W, b, x: torch.relu(x @ W.T) @ W + b)
    with pytest.raises(CheckFailed, match="wrong shape|raised"):  # W W^T where W^T W belongs
        ch04.test_toy_forward(lambda W, b, x: torch.relu(x @ W @ W.T + b))


def test_toy_loss_checker():
    ch04.test_toy_loss(ch04.reference_toy_loss)
    with pytest.raises(CheckFailed, match="importance left out"):
        ch04.test_toy_loss(lambda x, x_hat, importance: (x - x_hat).pow(2).sum(-1).mean())
    with pytest.raises(CheckFailed, match="mean over features"):
        ch04.test_toy_loss(lambda x, x_hat, importance: (importance * (x - x_hat).pow(2)).mean())
    with pytest.raises(CheckFailed, match="importance squared"):
        ch04.test_toy_loss(lambda x, x_hat, importance: (importance * (x - x_hat)).pow(2).sum(-1).mean())
    with pytest.raises(CheckFailed, match="one number"):
        ch04.test_toy_loss(lambda x, x_hat, importance: (importance * (x - x_hat).pow(2)).sum(-1))


def test_feature_norms_checker():
    ch04.test_feature_norms(ch04.reference_feature_norms)
    with pytest.raises(CheckFailed, match="one per hidden dimension"):
        ch04.test_feature_norms(lambda W: W.norm(dim=1))
    with pytest.raises(CheckFailed, match="squared norms"):
        ch04.test_feature_norms(lambda W: W.pow(2).sum(0))


def test_interference_checker():
    ch04.test_interference(ch04.reference_interference)

    def diagonal_included(W):
        unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
        return (unit.T @ W).pow(2).sum(-1)

    with pytest.raises(CheckFailed, match="diagonal j = i included"):
        ch04.test_interference(diagonal_included)

    def not_unit(W):
        overlap = (W.T @ W).pow(2)
        return overlap.sum(-1) - overlap.diagonal()

    with pytest.raises(CheckFailed, match="unit direction"):
        ch04.test_interference(not_unit)

    def unguarded(W):
        unit = W / W.norm(dim=0, keepdim=True)
        overlap = (unit.T @ W).pow(2)
        return overlap.sum(-1) - overlap.diagonal()

    with pytest.raises(CheckFailed, match="exactly zero"):
        ch04.test_interference(unguarded)


def test_feature_dimensionality_checker():
    ch04.test_feature_dimensionality(ch04.reference_feature_dimensionality)

    def off_diagonal_only(W):
        norms = W.norm(dim=0)
        unit = W / norms.clamp_min(1e-8)
        overlap = (unit.T @ W).pow(2)
        return torch.where(norms > 0, norms.pow(2) / (overlap.sum(-1) - overlap.diagonal()).clamp_min(1e-12), 0.0)

    with pytest.raises(CheckFailed, match="j != i only"):
        ch04.test_feature_dimensionality(off_diagonal_only)


# ---------------------------------------------------------------- the SAE

def test_sae_encode_checker():
    ch04.test_sae_encode(ch04.reference_sae_encode)
    with pytest.raises(CheckFailed, match="b_dec not subtracted"):
        ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: torch.relu(x @ W_enc + b_enc))
    with pytest.raises(CheckFailed, match="no ReLU"):
        ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: (x - b_dec) @ W_enc + b_enc)


def test_sae_decode_checker():
    ch04.test_sae_decode(ch04.reference_sae_decode)
    with pytest.raises(CheckFailed, match="b_dec left out"):
        ch04.test_sae_decode(lambda f, W_dec, b_dec: f @ W_dec)


def _keep(score, values, k):
    indices = score.topk(k, dim=-1).indices
    return torch.zeros_like(values).scatter(-1, indices, values.gather(-1, indices))


def test_topk_activation_checker():
    ch04.test_topk_activation(ch04.reference_topk_activation)
    with pytest.raises(CheckFailed, match="largest \\|value\\|"):
        ch04.test_topk_activation(lambda pre, k: torch.relu(_keep(pre.abs(), pre, k)))
    with pytest.raises(CheckFailed, match="no ReLU after the TopK"):
        ch04.test_topk_activation(lambda pre, k: _keep(pre, pre, k))
    with pytest.raises(CheckFailed, match="off-by-one k"):
        ch04.test_topk_activation(lambda pre, k: ch04.reference_topk_activation(pre, k + 1))
    with pytest.raises(CheckFailed, match="ReLU only"):
        ch04.test_topk_activation(lambda pre, k: torch.relu(pre))


def test_normalize_decoder_checker():
    ch04.test_normalize_decoder(ch04.reference_normalize_decoder)
    with pytest.raises(CheckFailed, match="each column normalised"):
        ch04.test_normalize_decoder(lambda W: W / W.norm(dim=0, keepdim=True))
    with pytest.raises(CheckFailed, match="no normalisation"):
        ch04.test_normalize_decoder(lambda W: W.clone())


def test_sae_loss_checker():
    ch04.test_sae_loss(ch04.reference_sae_loss)

    def l1_on_pre(x, W_enc, b_enc, W_dec, b_dec, l1):
        pre = (x - b_dec) @ W_enc + b_enc
        x_hat = torch.relu(pre) @ W_dec + b_dec
        return (x_hat - x).pow(2).sum(-1).mean() + l1 * pre.abs().sum(-1).mean()

    with pytest.raises(CheckFailed, match="pre-activations"):
        ch04.test_sae_loss(l1_on_pre)

    def mse_mean(x, W_enc, b_enc, W_dec, b_dec, l1):
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        return (f @ W_dec + b_dec - x).pow(2).mean() + l1 * f.sum(-1).mean()

    with pytest.raises(CheckFailed, match="averaged over dimensions"):
        ch04.test_sae_loss(mse_mean)

    def no_l1(x, W_enc, b_enc, W_dec, b_dec, l1):
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        return (f @ W_dec + b_dec - x).pow(2).sum(-1).mean()

    with pytest.raises(CheckFailed, match="no L1 term"):
        ch04.test_sae_loss(no_l1)


# ---------------------------------------------------------------- evaluation

def test_l0_checker():
    ch04.test_l0(ch04.reference_l0)
    with pytest.raises(CheckFailed, match="L1 norm"):
        ch04.test_l0(lambda latents: latents.sum(-1).mean())
    with pytest.raises(CheckFailed, match="fraction of latents"):
        ch04.test_l0(lambda latents: (latents > 0).float().mean())


def test_dead_fraction_checker():
    ch04.test_dead_fraction(ch04.reference_dead_fraction)
    with pytest.raises(CheckFailed, match="zero \\*entries\\*"):
        ch04.test_dead_fraction(lambda latents: (latents == 0).float().mean())
    with pytest.raises(CheckFailed, match="number of dead latents"):
        ch04.test_dead_fraction(lambda latents: (latents == 0).all(0).sum())
    with pytest.raises(CheckFailed, match="fraction of tokens"):
        ch04.test_dead_fraction(lambda latents: (latents == 0).all(1).float().mean())


def test_explained_variance_checker():
    ch04.test_explained_variance(ch04.reference_explained_variance)

    def per_dimension(x, x_hat):
        return (1 - (x - x_hat).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean()

    with pytest.raises(CheckFailed, match="each dimension, averaged"):
        ch04.test_explained_variance(per_dimension)
    with pytest.raises(CheckFailed, match="around 0"):
        ch04.test_explained_variance(lambda x, x_hat: 1 - (x - x_hat).pow(2).sum() / x.pow(2).sum())
    with pytest.raises(CheckFailed, match="unbiased"):
        ch04.test_explained_variance(lambda x, x_hat: 1 - (x - x_hat).pow(2).sum(-1).mean() / x.var(0).sum())


def test_ce_recovered_checker():
    ch04.test_ce_recovered(ch04.reference_ce_recovered)
    with pytest.raises(CheckFailed, match="against zero ablation"):
        ch04.test_ce_recovered(lambda clean, spliced, mean, zero: (zero - spliced) / (zero - clean))
    with pytest.raises(CheckFailed, match="1 - recovered"):
        ch04.test_ce_recovered(lambda clean, spliced, mean, zero: (spliced - clean) / (mean - clean))


# ---------------------------------------------------------------- ground truth

def test_latent_aurocs_checker():
    ch04.test_latent_aurocs(ch04.reference_latent_aurocs)
    with pytest.raises(CheckFailed, match="ties counted as losses"):
        ch04.test_latent_aurocs(lambda latents, labels: ch04._aurocs_ties_as(latents, labels, 0.0))

    def either_direction(latents, labels):
        auc = ch04.reference_latent_aurocs(latents, labels)
        return torch.maximum(auc, 1 - auc)

    with pytest.raises(CheckFailed, match="fires \\*on\\* it"):
        ch04.test_latent_aurocs(either_direction)


def test_previous_token_labels_checker():
    ch04.test_previous_token_labels(ch04.reference_previous_token_labels)
    with pytest.raises(CheckFailed, match="current token"):
        ch04.test_previous_token_labels(lambda tokens, word: tokens == word)
    with pytest.raises(CheckFailed, match="torch.roll"):
        ch04.test_previous_token_labels(lambda tokens, word: torch.roll(tokens, 1, dims=1) == word)

    def next_token(tokens, word):
        labels = torch.zeros_like(tokens, dtype=torch.bool)
        labels[:, :-1] = tokens[:, 1:] == word
        return labels

    with pytest.raises(CheckFailed, match="next token"):
        ch04.test_previous_token_labels(next_token)


# ---------------------------------------------------------------- causal edits

def test_clamp_hook_checker():
    ch04.test_clamp_hook(ch04.reference_clamp_hook)

    def reconstruction_only(sae, latent, value):
        def hook(act, hook):
            f = sae.encode(act)
            f[..., latent] = value
            return sae.decode(f)
        return hook

    with pytest.raises(CheckFailed, match="drops the reconstruction error"):
        ch04.test_clamp_hook(reconstruction_only)

    def added(sae, latent, value):
        return lambda act, hook: act + value * sae.W_dec[latent]

    with pytest.raises(CheckFailed, match="subtract it first"):
        ch04.test_clamp_hook(added)
    with pytest.raises(CheckFailed, match="bos position"):
        ch04.test_clamp_hook(lambda sae, latent, value: saes.latent_edit_hook(sae, latent, value))
