"""Each chapter-03 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs at check time, so answers replayed from the shipped model fail."""
import pytest
import torch

from interplab import lenses, probes
from interplab.checks import CheckFailed
from interplab.checks import ch03


def test_logit_lens_decode_checker():
    ch03.test_logit_lens_decode(ch03.reference_logit_lens_decode)

    def no_final_norm(model, resid):
        return model.unembed(resid.reshape(-1, 1, resid.shape[-1])).reshape(*resid.shape[:-1], -1)

    with pytest.raises(CheckFailed, match="without the final LayerNorm"):
        ch03.test_logit_lens_decode(no_final_norm)
    with pytest.raises(CheckFailed, match="softmax"):
        ch03.test_logit_lens_decode(lambda model, resid: lenses.decode_residual(model, resid).softmax(-1))


def test_lens_accuracy_checker():
    ch03.test_lens_accuracy(ch03.reference_lens_accuracy)
    with pytest.raises(CheckFailed, match="per prompt"):
        ch03.test_lens_accuracy(lambda logits, answers: (logits.argmax(-1) == answers[None]).float().mean(0))
    with pytest.raises(CheckFailed):  # accuracy of the last layer only, repeated
        ch03.test_lens_accuracy(lambda logits, answers: ch03.reference_lens_accuracy(logits, answers)[-1].expand(
            logits.shape[0]))


def test_kl_to_final_checker():
    ch03.test_kl_to_final(ch03.reference_kl_to_final)

    def reversed_kl(logits):
        final, lens = logits[-1].log_softmax(-1), logits.log_softmax(-1)
        return (lens.exp() * (lens - final)).sum(-1).mean(-1)

    with pytest.raises(CheckFailed, match="wrong way round"):
        ch03.test_kl_to_final(reversed_kl)

    def cross_entropy(logits):
        final, lens = logits[-1].log_softmax(-1), logits.log_softmax(-1)
        return -(final.exp() * lens).sum(-1).mean(-1)

    with pytest.raises(CheckFailed, match="cross-entropy"):
        ch03.test_kl_to_final(cross_entropy)
    with pytest.raises(CheckFailed, match="sum over tokens"):
        ch03.test_kl_to_final(lambda logits: ch03.reference_kl_to_final(logits) * logits.shape[1])


def test_control_labels_checker():
    ch03.test_control_labels(ch03.reference_control_labels)

    def per_example(subjects, labels, seed):  # a random label per example, not per subject
        return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]

    with pytest.raises(CheckFailed, match="different control labels"):
        ch03.test_control_labels(per_example)
    with pytest.raises(CheckFailed, match="equal the real labels"):
        ch03.test_control_labels(lambda subjects, labels, seed: labels.clone())

    def uniform(subjects, labels, seed):  # per subject, but not the real labels' distribution
        names = sorted(set(subjects))
        drawn = torch.randint(int(labels.max()) + 1, (len(names),), generator=torch.Generator().manual_seed(seed))
        return torch.tensor([int(drawn[names.index(s)]) for s in subjects])

    with pytest.raises(CheckFailed, match="real labels' counts"):
        ch03.test_control_labels(uniform)

    def fixed_seed(subjects, labels, seed):
        return probes.control_task_labels(subjects, labels, 0)

    with pytest.raises(CheckFailed, match="same control labels"):
        ch03.test_control_labels(fixed_seed)


def test_project_out_checker():
    ch03.test_project_out(ch03.reference_project_out)
    with pytest.raises(CheckFailed, match="without normalising"):
        ch03.test_project_out(lambda acts, d: acts - (acts @ d)[..., None] * d)
    with pytest.raises(CheckFailed, match="unchanged"):
        ch03.test_project_out(lambda acts, d: acts)


def test_restore_one_checker():
    ch03.test_restore_one(ch03.reference_restore_one)

    def every_position(model, tokens, answer_pos, answers, noise, hook_name, pos):
        return ch03._restored(model, tokens, answer_pos, answers, noise, hook_name, slice(None))

    with pytest.raises(CheckFailed, match="every position restored"):
        ch03.test_restore_one(every_position)

    def last_token(model, tokens, answer_pos, answers, noise, hook_name, pos):
        last = torch.full_like(answer_pos, tokens.shape[1] - 1)
        return ch03._restored(model, tokens, last, answers, noise, hook_name, pos)

    with pytest.raises(CheckFailed, match="at the last token"):
        ch03.test_restore_one(last_token)

    def forgets_to_return(model, tokens, answer_pos, answers, noise, hook_name, pos):
        _, cache = model.run_with_cache(tokens)

        def restore(act, hook):
            act = act.clone()
            act[:, pos] = cache[hook_name][:, pos]

        logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda act, hook: act + noise), (hook_name, restore)])
        return ch03._answer_prob(logits, answer_pos, answers)

    with pytest.raises(CheckFailed, match="without a restoration"):
        ch03.test_restore_one(forgets_to_return)


def test_rank_one_update_checker():
    ch03.test_rank_one_update(ch03.reference_rank_one_update)
    with pytest.raises(CheckFailed, match="without the key covariance"):
        ch03.test_rank_one_update(lambda k, delta, c: torch.outer(delta, k / (k @ k)))
    with pytest.raises(CheckFailed, match="no normalisation"):
        ch03.test_rank_one_update(lambda k, delta, c: torch.outer(delta, torch.linalg.solve(c, k)))
    with pytest.raises(CheckFailed, match="transposed|axes are reversed|wrong shape"):
        ch03.test_rank_one_update(lambda k, delta, c: ch03.reference_rank_one_update(k, delta, c).T)


def test_next_token_entropy_checker():
    ch03.test_next_token_entropy(ch03.reference_next_token_entropy)
    with pytest.raises(CheckFailed, match="bits"):
        ch03.test_next_token_entropy(lambda logits: ch03.reference_next_token_entropy(logits) / torch.log(torch.tensor(2.0)))
    with pytest.raises(CheckFailed, match="sign flipped|without the minus"):
        ch03.test_next_token_entropy(lambda logits: -ch03.reference_next_token_entropy(logits))

    def softmax_over_the_batch(logits):
        p = logits.softmax(0)
        return -(p * p.log()).sum(-1)

    with pytest.raises(CheckFailed, match="batch axis"):
        ch03.test_next_token_entropy(softmax_over_the_batch)


def test_auroc_checker():
    ch03.test_auroc(ch03.reference_auroc)
    with pytest.raises(CheckFailed, match="ties counted as losses"):
        ch03.test_auroc(ch03._auroc_ties_zero)
    with pytest.raises(CheckFailed, match="reversed"):
        ch03.test_auroc(lambda scores, labels: 1 - probes.auroc(scores, labels))


def test_steering_hook_checker():
    ch03.test_steering_hook(ch03.reference_steering_hook)
    with pytest.raises(CheckFailed, match="every position"):
        ch03.test_steering_hook(lambda direction, alpha, positions: probes.steer_hook(direction, alpha))
    with pytest.raises(CheckFailed, match="unit length"):
        ch03.test_steering_hook(lambda direction, alpha, positions: probes.steer_hook(
            direction / direction.norm(), alpha, positions))

    def no_return(direction, alpha, positions):
        def hook(act, hook):
            act = act + 0
        return hook

    with pytest.raises(CheckFailed, match="does the hook return"):
        ch03.test_steering_hook(no_return)


def test_check_storage_site():
    truth = ch03.card_storage_site()
    assert truth["position"] == "subject last" and truth["layer"] < truth["n_layers"] - 1
    ch03.check_storage_site({"component": "mlp", "layer": truth["layer"], "position": "subject last"})
    with pytest.raises(CheckFailed, match="which component \\*writes\\*"):
        ch03.check_storage_site({"component": "resid", "layer": truth["layer"], "position": "subject last"})
    with pytest.raises(CheckFailed, match="position 'last token'"):
        ch03.check_storage_site({"component": "mlp", "layer": truth["layer"], "position": "last token"})
    with pytest.raises(CheckFailed, match="not where the MLP restoration peaks"):
        ch03.check_storage_site({"component": "mlp", "layer": truth["layer"] + 1, "position": "subject last"})
    with pytest.raises(CheckFailed, match="lacks"):
        ch03.check_storage_site({"layer": 0})
