"""Linear probes, control tasks and direction interventions: synthetic data with known answers, and
hooks checked on random GPT-2, Pythia and Gemma bridges."""
from __future__ import annotations

import pytest
import torch

from interplab.probes import (ablating, ablation_hooks, auroc, collect_activations, control_task_labels,
                              cross_validated_accuracy, difference_of_means, fit_and_score, kfold_indices,
                              probe_accuracy, probe_auroc, probe_direction, probe_selectivity, selectivity_by_hook,
                              steering, steering_hooks, train_linear_probe, train_test_split)
from interplab.zoo import build_random_model

FAMILIES = ("gpt2", "pythia", "gemma")


def _planted(n: int = 1200, d: int = 24, seed: int = 0):
    """Anisotropic activations whose binary label is the sign along a hidden unit direction."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=generator)
    direction /= direction.norm()
    acts = torch.randn(n, d, generator=generator) * torch.linspace(0.3, 4.0, d) + 2.0
    margin = (acts - 2.0) @ direction
    return acts, (margin > 0).long(), direction


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build_random_model(request.param, n_layers=2)


def _tokens(model, batch: int = 5, seq: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- probes

def test_probe_recovers_a_planted_direction():
    acts, labels, direction = _planted()
    score = fit_and_score(acts, labels, l2=1e-3)
    assert score.test_accuracy > 0.95 and score.test_auroc > 0.99
    found = probe_direction(score.probe)
    assert abs(found.norm() - 1) < 1e-5
    assert found @ direction > 0.97, "the probe direction, mapped back through the standardisation, should be the planted one"
    # the direction in standardised space would be wrong: the scales differ 13-fold
    assert torch.nn.functional.normalize(score.probe.weight[0].float(), dim=0) @ direction < 0.9
    flipped = probe_direction(score.probe, class_value=0)
    torch.testing.assert_close(flipped, -found)


def test_unstandardised_probe_finds_the_direction_too():
    acts, labels, direction = _planted()
    score = fit_and_score(acts, labels, l2=1e-4, standardize=False)
    assert score.test_accuracy > 0.95 and probe_direction(score.probe) @ direction > 0.97
    assert torch.equal(score.probe.scale, torch.ones(acts.shape[1], dtype=score.probe.scale.dtype))


def test_probe_training_is_deterministic():
    acts, labels, _ = _planted(n=300)
    a, b = train_linear_probe(acts, labels), train_linear_probe(acts, labels)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_stronger_l2_shrinks_weights():
    acts, labels, _ = _planted(n=300)
    assert train_linear_probe(acts, labels, l2=10.0).weight.norm() < 0.2 * train_linear_probe(acts, labels, l2=1e-3).weight.norm()


def test_multinomial_probe_and_class_directions():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 16, generator=generator) * 3
    labels = torch.arange(400) % 4 + 10  # class ids need not start at 0
    acts = centres[labels - 10] + torch.randn(400, 16, generator=generator)
    score = fit_and_score(acts, labels)
    assert score.test_accuracy > 0.95 and score.test_auroc is None
    assert score.probe.classes.tolist() == [10, 11, 12, 13]
    assert set(score.probe.predict(acts).tolist()) <= {10, 11, 12, 13}
    for value in (10, 13):
        step = probe_direction(score.probe, class_value=value)
        before = score.probe.logits(acts).log_softmax(-1)[:, value - 10]
        after = score.probe.logits(acts + step).log_softmax(-1)[:, value - 10]
        assert (after > before).all()
    with pytest.raises(ValueError, match="pass class_value"):
        probe_direction(score.probe)
    folds = cross_validated_accuracy(acts, labels, k=4)
    assert folds.shape == (4,) and (folds > 0.9).all()


def test_auroc_matches_pairwise_counting_with_ties():
    generator = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 5, (60,), generator=generator).float()
    labels = torch.randint(0, 2, (60,), generator=generator)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert auroc(scores, labels) == pytest.approx(float(pairwise), abs=1e-12)
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 1.0]), [0, 0, 1, 1]) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 1.0]), [1, 1, 0, 0]) == 0.0
    acts, labels, _ = _planted(n=400)
    probe = train_linear_probe(acts, labels)
    assert probe_auroc(probe, acts, labels) == pytest.approx(auroc(probe.scores(acts), labels))
    assert probe_accuracy(probe, acts, labels) > 0.95


@pytest.mark.parametrize("bad, message", [
    (lambda a, y: (a, y[:-1]), "labels for 100 activation rows"),
    (lambda a, y: (a.clone().index_fill_(0, torch.tensor([3]), float("nan")), y), "NaN or inf in 1 rows"),
    (lambda a, y: (a, torch.zeros_like(y)), "single class"),
    (lambda a, y: (a[:, None], y), r"must be \[n, d\]"),
    (lambda a, y: (a, y + 0.5), "class ids"),
    (lambda a, y: (a, y[:, None]), "must be 1-D"),
    (lambda a, y: (a.long(), y), "floating point"),
])
def test_bad_probe_input_says_what_to_fix(bad, message):
    acts, labels, _ = _planted(n=100)
    with pytest.raises((ValueError, TypeError), match=message):
        train_linear_probe(*bad(acts, labels))


def test_probe_on_other_width_and_auroc_errors():
    acts, labels, _ = _planted(n=100)
    probe = train_linear_probe(acts, labels)
    with pytest.raises(ValueError, match="trained on 24-dimensional"):
        probe.predict(acts[:, :10])
    with pytest.raises(ValueError, match="both classes"):
        auroc(torch.randn(5), [1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="binary labels"):
        auroc(torch.randn(3), [0, 1, 2])


# ---------------------------------------------------------------- splits and control tasks

def test_splits_partition_rows_and_keep_groups_apart():
    train, test = train_test_split(100, 0.25, seed=3)
    assert len(test) == 25 and sorted(train.tolist() + test.tolist()) == list(range(100))
    groups = [f"subject{i % 10}" for i in range(100)]
    train, test = train_test_split(100, 0.3, seed=3, groups=groups)
    assert not {groups[i] for i in train} & {groups[i] for i in test} and len(test) == 30
    folds = kfold_indices(100, k=5, seed=0, groups=groups)
    tested = torch.cat([t for _, t in folds]).sort().values
    assert torch.equal(tested, torch.arange(100))
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 groups"):
        kfold_indices(9, 5, groups=[i % 3 for i in range(9)])


def test_control_labels_are_a_shuffled_function_of_type():
    types = [f"s{i % 30}" for i in range(300)]
    real = torch.tensor([(i % 30) % 3 for i in range(300)])
    control = control_task_labels(types, real, seed=0)
    per_type = {}
    for t, c in zip(types, control.tolist()):
        assert per_type.setdefault(t, c) == c, "a type must keep one control label"
    assert sorted(per_type.values()) == sorted(((i % 30) % 3) for i in range(30)), "same label distribution over types"
    assert not torch.equal(control, real)
    assert torch.equal(control, control_task_labels(types, real, seed=0))
    assert not torch.equal(control, control_task_labels(types, real, seed=1))
    noisy = real.clone()
    noisy[0] = 2  # labels no longer a function of type: the control draws per type from the label distribution
    control = control_task_labels(types, noisy, seed=0)
    assert all(control[i] == control[i % 30] for i in range(300))


def test_memorised_types_have_low_selectivity_and_a_planted_property_high():
    generator = torch.Generator().manual_seed(4)
    d = 32
    # 24 types, each its own random point: the probe can memorise any labelling of them
    embedding = torch.randn(24, d, generator=generator) * 3
    types = torch.randint(24, (600,), generator=generator)
    labels = torch.randint(3, (24,), generator=generator)[types]
    acts = embedding[types] + 0.3 * torch.randn(600, d, generator=generator)
    memorised = probe_selectivity(acts, labels, types)
    assert memorised.accuracy > 0.95 and memorised.control_accuracy > 0.9 and memorised.selectivity < 0.1
    assert probe_selectivity(acts, labels, types, l2=100.0).control_accuracy < memorised.control_accuracy - 0.2
    by_hook = selectivity_by_hook({"all": acts, "two dims": acts[:, :2]}, labels, types.tolist(), progress=False)
    assert list(by_hook) == ["all", "two dims"]
    assert by_hook["all"].accuracy == memorised.accuracy and by_hook["two dims"].accuracy < 0.9
    # 2000 types, label = side of a hyperplane: readable, but too many types to memorise in 32 dimensions
    _, _, direction = _planted(d=d)
    embedding = torch.randn(2000, d, generator=generator)
    types = torch.randint(2000, (4000,), generator=generator)
    acts = embedding[types] + 0.05 * torch.randn(4000, d, generator=generator)
    readable = probe_selectivity(acts, (embedding @ direction > 0).long()[types], types)
    assert readable.accuracy > 0.95 and readable.selectivity > 0.3 and readable.seen_type_fraction > 0.7


def test_selectivity_warns_when_no_type_repeats():
    acts, labels, _ = _planted(n=200)
    with pytest.warns(UserWarning, match="selectivity is inflated"):
        probe_selectivity(acts, labels, list(range(200)))
    with pytest.raises(ValueError, match="one type"):
        probe_selectivity(acts, labels, list(range(10)))


def test_difference_of_means():
    acts, labels, direction = _planted(n=2000)
    diff = difference_of_means(acts, labels.bool())
    assert torch.nn.functional.cosine_similarity(diff, direction * (acts.std(0) ** 2), dim=0) > 0.9
    with pytest.raises(ValueError, match="some rows"):
        difference_of_means(acts, torch.ones(2000, dtype=torch.bool))


# ---------------------------------------------------------------- collecting activations and interventions

def test_collect_activations_matches_the_cache(model):
    tokens = _tokens(model)
    names = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.0.attn.hook_z"]
    _, cache = model.run_with_cache(tokens)
    positions = torch.tensor([0, 5, 2, -1, 3])
    got = collect_activations(model, tokens, names, positions=positions, batch_size=2, progress=False)
    rows = torch.arange(5)
    for name in names:
        torch.testing.assert_close(got[name], cache[name][rows, positions % 6].detach())
    assert got["blocks.0.hook_resid_post"].shape == (5, model.cfg.d_model)
    shared = collect_activations(model, tokens, "blocks.1.hook_resid_post", positions=-1, progress=False)
    torch.testing.assert_close(shared["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"][:, -1].detach())
    every = collect_activations(model, tokens, "blocks.0.hook_resid_pre", progress=False)["blocks.0.hook_resid_pre"]
    assert every.shape == (5, 6, model.cfg.d_model) and every.device.type == "cpu"


def test_collect_activations_errors(model):
    tokens = _tokens(model)
    with pytest.raises(ValueError, match="unknown hook names"):
        collect_activations(model, tokens, "blocks.0.resid_post", progress=False)
    with pytest.raises(ValueError, match=r"one position per prompt \(\[5\]\)"):
        collect_activations(model, tokens, "blocks.0.hook_resid_pre", positions=[1, 2], progress=False)
    with pytest.raises(ValueError, match="outside a sequence"):
        collect_activations(model, tokens, "blocks.0.hook_resid_pre", positions=9, progress=False)


def test_a_hook_that_never_fires_is_an_error():
    rotary = build_random_model("pythia")  # rotary positions: hook_pos_embed exists but is never called
    with pytest.raises(ValueError, match="did not fire"):
        collect_activations(rotary, _tokens(rotary), ["blocks.0.hook_resid_pre", "hook_pos_embed"], progress=False)


def _resid(model, tokens, hooks, name):
    with model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    return cache[name].detach()


def test_ablation_removes_exactly_the_direction(model):
    tokens = _tokens(model)
    generator = torch.Generator().manual_seed(5)
    direction = torch.randn(model.cfg.d_model, generator=generator)
    unit = direction / direction.norm()
    site, later = "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"
    clean = _resid(model, tokens, [], later)
    ablated = _resid(model, tokens, ablation_hooks(site, direction), later)
    assert (ablated @ unit).abs().max() < 1e-4, "the next block must see no component along the direction"
    assert (clean @ unit).abs().max() > 1e-2
    torch.testing.assert_close(ablated, clean - (clean @ unit)[..., None] * unit, atol=1e-5, rtol=1e-5)
    # at two positions of each prompt only
    where = torch.tensor([1, 2, 3, 4, 5])
    partly = _resid(model, tokens, ablation_hooks(site, direction, positions=where), later)
    rows = torch.arange(5)
    assert (partly[rows, where] @ unit).abs().max() < 1e-4
    untouched = torch.ones(5, 6, dtype=torch.bool)
    untouched[rows, where] = False
    torch.testing.assert_close(partly[untouched], clean[untouched])


def test_steering_adds_alpha_times_direction_and_context_managers_clean_up(model):
    tokens = _tokens(model)
    direction = torch.zeros(model.cfg.d_model)
    direction[3] = 2.0
    site = "blocks.1.hook_resid_pre"
    clean = _resid(model, tokens, [], site)
    steered = _resid(model, tokens, steering_hooks(site, direction, alpha=1.5, positions=-1), site)
    expected = clean.clone()
    expected[:, -1, 3] += 3.0
    torch.testing.assert_close(steered, expected)
    with torch.no_grad():
        before = model(tokens)
        with steering(model, [site], direction, alpha=4.0):
            steered_logits = model(tokens)
        with ablating(model, site, direction):
            ablated_logits = model(tokens)
        after = model(tokens)
    assert (steered_logits - before).abs().max() > 1e-3 and (ablated_logits - before).abs().max() > 1e-3
    torch.testing.assert_close(after, before)


def test_intervention_errors(model):
    tokens = _tokens(model)
    with pytest.raises(ValueError, match="direction has 7 dimensions"):
        with steering(model, "blocks.0.hook_resid_post", torch.ones(7), 1.0):
            model(tokens)
    with pytest.raises(ValueError, match="unknown hook names"):
        with ablating(model, "blocks.0.resid", torch.ones(model.cfg.d_model)):
            pass
    with pytest.raises(ValueError, match="non-zero"):
        ablation_hooks("blocks.0.hook_resid_post", torch.zeros(model.cfg.d_model))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model(tokens))  # a failed run leaves no hook behind


def test_probe_direction_steers_a_model_probe(model):
    """End to end: probe a residual for a planted label, then steering along the probe's direction moves its score."""
    tokens = torch.randint(0, model.cfg.d_vocab, (200, 6), generator=torch.Generator().manual_seed(6))
    site = "blocks.1.hook_resid_pre"
    acts = collect_activations(model, tokens, site, positions=-1, progress=False)[site]
    labels = (tokens[:, -1] % 2).long()  # the last token's parity: in the embedding, so readable
    probe = train_linear_probe(acts, labels)
    assert probe_accuracy(probe, acts, labels) > 0.75
    unit = probe_direction(probe)
    with steering(model, "blocks.0.hook_resid_post", unit, alpha=2 * float(acts.norm(dim=-1).mean())):
        steered = collect_activations(model, tokens, site, positions=-1, progress=False)[site]
    assert (probe.scores(steered) > probe.scores(acts)).all()
    assert (probe.predict(steered) == 1).float().mean() > 0.9
