"""Each chapter-04 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs (random weights, activations, latents, tokens) at check time; ``check_feature_names``
measures the shipped SAE on fresh sequences."""
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
    with pytest.raises(CheckFailed, match="raised RuntimeError"):  # W W^T where W^T W belongs: shapes clash if m != n
        ch04.test_toy_forward(lambda W, b, x: torch.relu(x @ W @ W.T + b))
    with pytest.raises(CheckFailed, match="does not carry gradients"):
        ch04.test_toy_forward(lambda W, b, x: ch04.reference_toy_forward(W.detach(), b, x))


def test_interference_checker():
    ch04.test_interference(ch04.reference_interference)

    def j_equals_i_included(W):
        unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
        return (unit.T @ W).pow(2).sum(-1)

    with pytest.raises(CheckFailed, match="j = i term included"):
        ch04.test_interference(j_equals_i_included)

    def not_unit(W):
        overlap = (W.T @ W).pow(2)
        return overlap.sum(-1) - overlap.diagonal()

    with pytest.raises(CheckFailed, match="unit direction"):
        ch04.test_interference(not_unit)

    def cosines(W):
        unit = W / W.norm(dim=0, keepdim=True).clamp_min(1e-8)
        overlap = (unit.T @ unit).pow(2)
        return torch.where(W.norm(dim=0) > 0, overlap.sum(-1) - 1, 0.0)

    with pytest.raises(CheckFailed, match="normalised too"):
        ch04.test_interference(cosines)

    def unguarded(W):
        unit = W / W.norm(dim=0, keepdim=True)
        overlap = (unit.T @ W).pow(2)
        return overlap.sum(-1) - overlap.diagonal()

    with pytest.raises(CheckFailed, match="exactly zero"):
        ch04.test_interference(unguarded)
    with pytest.raises(CheckFailed, match="one per hidden dimension"):
        ch04.test_interference(lambda W: ch04.reference_interference(W.T))


# ---------------------------------------------------------------- the SAE

def test_sae_encode_checker():
    ch04.test_sae_encode(ch04.reference_sae_encode)
    with pytest.raises(CheckFailed, match="b_dec not subtracted"):
        ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: torch.relu(x @ W_enc + b_enc))
    with pytest.raises(CheckFailed, match="b_dec added"):
        ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: torch.relu((x + b_dec) @ W_enc + b_enc))
    with pytest.raises(CheckFailed, match="no ReLU"):
        ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: (x - b_dec) @ W_enc + b_enc)


def _keep(score, values, k):
    indices = score.topk(k, dim=-1).indices
    return torch.zeros_like(values).scatter(-1, indices, values.gather(-1, indices))


def test_topk_activation_checker():
    ch04.test_topk_activation(ch04.reference_topk_activation)
    with pytest.raises(CheckFailed, match="largest \\|value\\|, not"):
        ch04.test_topk_activation(lambda pre, k: torch.relu(_keep(pre.abs(), pre, k)))
    with pytest.raises(CheckFailed, match="no ReLU after the TopK"):
        ch04.test_topk_activation(lambda pre, k: _keep(pre, pre, k))
    with pytest.raises(CheckFailed, match="k smallest"):
        ch04.test_topk_activation(lambda pre, k: torch.relu(_keep(-pre, pre, k)))
    with pytest.raises(CheckFailed, match="over the batch"):
        ch04.test_topk_activation(lambda pre, k: torch.relu(_keep(pre.T, pre.T, min(k, pre.shape[0])).T))
    with pytest.raises(CheckFailed, match="not zeroed"):
        ch04.test_topk_activation(lambda pre, k: pre.scatter(-1, pre.topk(k, dim=-1).indices,
                                                             torch.relu(pre.topk(k, dim=-1).values)))
    with pytest.raises(CheckFailed, match="off-by-one k"):
        ch04.test_topk_activation(lambda pre, k: ch04.reference_topk_activation(pre, min(k + 1, pre.shape[-1])))

    def numpy_route(pre, k):  # right values, but the result is rebuilt from numpy: no gradient
        return torch.tensor(ch04.reference_topk_activation(pre.detach(), k).numpy())

    with pytest.raises(CheckFailed, match="does not carry gradients"):
        ch04.test_topk_activation(numpy_route)


def test_sae_loss_checker():
    ch04.test_sae_loss(ch04.reference_sae_loss)
    with pytest.raises(CheckFailed, match="mean over everything"):
        ch04.test_sae_loss(lambda x, x_hat, f, l1: (x_hat - x).pow(2).mean() + l1 * f.abs().mean())
    with pytest.raises(CheckFailed, match="L2 penalty"):
        ch04.test_sae_loss(lambda x, x_hat, f, l1: (x_hat - x).pow(2).sum(-1).mean() + l1 * f.pow(2).sum(-1).mean())
    with pytest.raises(CheckFailed, match="not squared"):
        ch04.test_sae_loss(lambda x, x_hat, f, l1: (x_hat - x).abs().sum(-1).mean() + l1 * f.sum(-1).mean())
    with pytest.raises(CheckFailed, match="Python float"):
        ch04.test_sae_loss(lambda x, x_hat, f, l1: ch04.reference_sae_loss(x, x_hat, f, l1).item())


def test_project_decoder_grad_checker():
    ch04.test_project_decoder_grad(ch04.reference_project_decoder_grad)
    with pytest.raises(CheckFailed, match="each \\*column\\*"):
        ch04.test_project_decoder_grad(lambda W, g: g - (g * W).sum(0, keepdim=True) * W)
    with pytest.raises(CheckFailed, match="parallel part returned"):
        ch04.test_project_decoder_grad(lambda W, g: (g * W).sum(1, keepdim=True) * W)

    def in_place(W, g):
        g -= (g * W).sum(1, keepdim=True) * W
        return g

    with pytest.raises(CheckFailed, match="in place"):
        ch04.test_project_decoder_grad(in_place)


def test_autograd_checks_pass_with_grad_off():
    """The notebook runs with torch.set_grad_enabled(False): a right answer must still pass the gradient checks."""
    with torch.no_grad():
        ch04.test_toy_forward(ch04.reference_toy_forward)
        ch04.test_sae_encode(ch04.reference_sae_encode)
        ch04.test_topk_activation(ch04.reference_topk_activation)
        ch04.test_sae_loss(ch04.reference_sae_loss)
        with pytest.raises(CheckFailed, match="does not carry gradients"):
            ch04.test_sae_encode(lambda x, W_enc, b_enc, b_dec: ch04.reference_sae_encode(x, W_enc.detach(), b_enc,
                                                                                          b_dec))


# ---------------------------------------------------------------- evaluation

def test_explained_variance_checker():
    ch04.test_explained_variance(ch04.reference_explained_variance)

    def per_dimension(x, x_hat):
        return float((1 - (x - x_hat).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean())

    with pytest.raises(CheckFailed, match="each dimension, averaged"):
        ch04.test_explained_variance(per_dimension)
    with pytest.raises(CheckFailed, match="around 0"):
        ch04.test_explained_variance(lambda x, x_hat: float(1 - (x - x_hat).pow(2).sum() / x.pow(2).sum()))
    with pytest.raises(CheckFailed, match="one scalar mean"):
        ch04.test_explained_variance(lambda x, x_hat: float(1 - (x - x_hat).pow(2).sum() / (x - x.mean()).pow(2).sum()))
    with pytest.raises(CheckFailed, match="'1 -' is missing"):
        ch04.test_explained_variance(lambda x, x_hat: float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()))


def test_ce_recovered_checker():
    ch04.test_ce_recovered(ch04.reference_ce_recovered)
    with pytest.raises(CheckFailed, match="fraction lost"):
        ch04.test_ce_recovered(lambda clean, spliced, ablated: (spliced - clean) / (ablated - clean))
    with pytest.raises(CheckFailed, match="clipped"):
        ch04.test_ce_recovered(lambda clean, spliced, ablated: min(1.0, max(0.0, ch04.reference_ce_recovered(
            clean, spliced, ablated))))
    with pytest.raises(CheckFailed, match="swapped"):
        ch04.test_ce_recovered(lambda clean, spliced, ablated: (spliced - ablated) / (spliced - clean))
    with pytest.raises(CheckFailed, match="raise ValueError"):  # divides by zero unguarded
        ch04.test_ce_recovered(lambda clean, spliced, ablated: (ablated - spliced) / (ablated - clean))


# ---------------------------------------------------------------- ground truth

def test_best_latent_auroc_checker():
    ch04.test_best_latent_auroc(ch04.reference_best_latent_auroc)

    def rows(latents, labels, population):
        keep = slice(None) if population is None else population
        return latents[keep], labels[keep]

    def ties_as_losses(latents, labels, population):
        return ch04._best(ch04._aurocs_ties_as(*rows(latents, labels, population), 0.0))

    with pytest.raises(CheckFailed, match="ties counted as losses"):
        ch04.test_best_latent_auroc(ties_as_losses)

    def ties_as_wins(latents, labels, population):
        return ch04._best(ch04._aurocs_ties_as(*rows(latents, labels, population), 1.0))

    with pytest.raises(CheckFailed, match="ties counted as wins"):
        ch04.test_best_latent_auroc(ties_as_wins)
    with pytest.raises(CheckFailed, match="population ignored"):
        ch04.test_best_latent_auroc(lambda latents, labels, population: ch04.reference_best_latent_auroc(
            latents, labels, None))

    def either_direction(latents, labels, population):
        auc = ch04._auroc_columns(*rows(latents, labels, population))
        return ch04._best(torch.maximum(auc, 1 - auc))

    with pytest.raises(CheckFailed, match="\\*absence\\*"):
        ch04.test_best_latent_auroc(either_direction)

    def last_of_equals(latents, labels, population):
        auc = ch04._auroc_columns(*rows(latents, labels, population))
        best = len(auc) - 1 - int(auc.flip(0).argmax())
        return float(auc[best]), best

    with pytest.raises(CheckFailed, match="lowest index"):
        ch04.test_best_latent_auroc(last_of_equals)


def test_previous_token_variable_checker():
    ch04.test_previous_token_variable(ch04.reference_previous_token_variable)

    def combined(labels_fn, population_fn):
        return lambda tokens, prompt, position, word: (labels_fn(tokens, prompt, position, word),
                                                       population_fn(position))

    def reference_labels(tokens, prompt, position, word):
        return ch04.reference_previous_token_variable(tokens, prompt, position, word)[0]

    with pytest.raises(CheckFailed, match="current token"):
        ch04.test_previous_token_variable(combined(lambda t, p, q, w: t[p, q] == w, lambda q: q >= 2))
    with pytest.raises(CheckFailed, match="wraps around"):
        ch04.test_previous_token_variable(combined(lambda t, p, q, w: t[p, q - 1] == w, lambda q: q >= 2))
    with pytest.raises(CheckFailed, match="prompt 0's tokens"):
        ch04.test_previous_token_variable(combined(lambda t, p, q, w: (t[0, (q - 1).clamp_min(0)] == w) & (q >= 1),
                                               lambda q: q >= 2))
    with pytest.raises(CheckFailed, match="index both axes"):
        ch04.test_previous_token_variable(combined(lambda t, p, q, w: t[q - 1] == w, lambda q: q >= 2))
    with pytest.raises(CheckFailed, match="previous token is <bos>"):
        ch04.test_previous_token_variable(combined(reference_labels, lambda q: q >= 1))


def test_previous_token_reference_matches_the_library():
    """The checker's reference agrees with sae_variables.induction_variables' "previous token" family."""
    from interplab.sae_variables import induction_variables
    from interplab.worlds import induction

    batch = induction.sample_batch(20, seed=3)
    prompt, position = torch.meshgrid(torch.arange(20), torch.arange(1, batch.tokens.shape[1]), indexing="ij")
    cache = saes.ActivationCache(acts=torch.zeros(prompt.numel(), 2), hook_name="blocks.1.hook_resid_pre",
                                 tokens=batch.tokens, prompt=prompt.flatten(), position=position.flatten())
    variables = [v for v in induction_variables(cache) if v.family == "previous token"]
    assert len(variables) > 40
    for variable in variables:
        word_id = induction.FIRST_WORD_ID + induction.vocabulary().index(variable.name.split(" = ")[1])
        labels, population = ch04.reference_previous_token_variable(batch.tokens, cache.prompt, cache.position, word_id)
        assert torch.equal(population, variable.population)
        assert torch.equal(labels[population], variable.labels[population])


# ---------------------------------------------------------------- causal edits and splitting

def test_clamp_latent_hook_checker():
    ch04.test_clamp_latent_hook(ch04.reference_clamp_latent_hook)

    def reconstruction_only(sae, latent, value, positions):
        def hook(act, hook):
            f = sae.encode(act)
            f[..., latent] = value
            return torch.where(positions[..., None], sae.decode(f), act)
        return hook

    with pytest.raises(CheckFailed, match="drops the reconstruction error"):
        ch04.test_clamp_latent_hook(reconstruction_only)

    def added(sae, latent, value, positions):
        return lambda act, hook: act + positions[..., None] * value * sae.W_dec[latent]

    with pytest.raises(CheckFailed, match="remove it first"):
        ch04.test_clamp_latent_hook(added)
    with pytest.raises(CheckFailed, match="every position edited"):
        ch04.test_clamp_latent_hook(lambda sae, latent, value, positions: saes.latent_edit_hook(
            sae, latent, value, positions=None))

    def encoder_direction(sae, latent, value, positions):
        def hook(act, hook):
            f = sae.encode(act)[..., latent:latent + 1]
            return act + positions[..., None] * (value - f) * sae.W_enc[:, latent]
        return hook

    with pytest.raises(CheckFailed, match="encoder column"):
        ch04.test_clamp_latent_hook(encoder_direction)

    def no_return(sae, latent, value, positions):
        def hook(act, hook):
            act = act + 0
        return hook

    with pytest.raises(CheckFailed, match="returned None"):
        ch04.test_clamp_latent_hook(no_return)


def test_decoder_matches_checker():
    ch04.test_decoder_matches(ch04.reference_decoder_matches)

    def unit(W):
        return W / W.norm(dim=1, keepdim=True)

    def absolute(W_small, W_large):
        return (unit(W_small) @ unit(W_large).T).abs().max(1)

    with pytest.raises(CheckFailed, match="\\|cos\\|"):
        ch04.test_decoder_matches(absolute)
    with pytest.raises(CheckFailed, match="not normalised"):
        ch04.test_decoder_matches(lambda W_small, W_large: (W_small @ W_large.T).max(1))
    with pytest.raises(CheckFailed, match="dim 0|wrong shape"):
        ch04.test_decoder_matches(lambda W_small, W_large: (unit(W_small) @ unit(W_large).T).max(0))

    def wrong_index(W_small, W_large):
        cosine, index = ch04.reference_decoder_matches(W_small, W_large)
        return cosine, (index + 1) % W_large.shape[0]

    with pytest.raises(CheckFailed, match="indices differ"):
        ch04.test_decoder_matches(wrong_index)


# ---------------------------------------------------------------- the learner's named features

@pytest.fixture(scope="module")
def named_features():
    """Five latents of the shipped SAE with the variable each detects best, read off a measurement."""
    latents, variables = ch04._measured_latents(seed=11)
    recovery = saes.variable_recovery(latents, variables, progress=False)
    order = recovery.auroc.argsort(descending=True).tolist()
    chosen, families = {}, []
    for i in order:  # the best-recovered variables, three current-token and two previous-token ones
        family, latent = recovery.families[i], int(recovery.best[i])
        if latent in chosen or families.count(family) >= (3 if family == "current token" else 2):
            continue
        chosen[latent] = recovery.names[i]
        families.append(family)
        if len(chosen) == 5:
            break
    assert sorted(families) == ["current token"] * 3 + ["previous token"] * 2
    return chosen


def test_check_feature_names(named_features):
    ch04.check_feature_names(named_features)
    latents = list(named_features)
    swapped = dict(named_features)
    swapped[latents[0]], swapped[latents[1]] = named_features[latents[1]], named_features[latents[0]]
    with pytest.raises(CheckFailed, match="the variable it detects best is"):
        ch04.check_feature_names(swapped)
    misspelt = dict(named_features)
    misspelt[latents[0]] = named_features[latents[0]].replace(" = ", "=")
    with pytest.raises(CheckFailed, match="unknown variable .*Did you mean"):
        ch04.check_feature_names(misspelt)
    with pytest.raises(CheckFailed, match="out of range"):
        ch04.check_feature_names({**named_features, 100000: named_features[latents[0]]})
    with pytest.raises(CheckFailed, match="at least 5"):
        ch04.check_feature_names({latents[0]: named_features[latents[0]]})
