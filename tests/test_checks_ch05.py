"""Each chapter-05 checker accepts the reference, rejects plausible mistakes, and says which mistake it saw.
Checkers draw their inputs (a random model, prompts, tensors) at check time and never need the shipped model."""
import pytest
import torch

from interplab.checks import CheckFailed
from interplab.checks import ch05


def _resid(model, tokens, hook_name):
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda name: name == hook_name)
    return cache[hook_name][0, -1]


def test_actadd_vector_checker():
    ch05.test_actadd_vector(ch05.reference_actadd_vector)

    def resid_post(model, a, b, layer):
        name = f"blocks.{layer}.hook_resid_post"
        return _resid(model, a, name) - _resid(model, b, name)

    with pytest.raises(CheckFailed, match="hook_resid_post"):
        ch05.test_actadd_vector(resid_post)
    with pytest.raises(CheckFailed, match="normalised"):
        ch05.test_actadd_vector(lambda model, a, b, layer: torch.nn.functional.normalize(
            ch05.reference_actadd_vector(model, a, b, layer), dim=0))
    with pytest.raises(CheckFailed, match="b minus prompt a"):
        ch05.test_actadd_vector(lambda model, a, b, layer: ch05.reference_actadd_vector(model, b, a, layer))


def test_steering_hook_checker():
    ch05.test_steering_hook(ch05.reference_steering_hook)

    def only_at_start(vector, coeff, start):
        def hook(act, hook):
            act = act.clone()
            act[torch.arange(act.shape[0]), start] += coeff * vector
            return act
        return hook

    with pytest.raises(CheckFailed, match="only at position start"):
        ch05.test_steering_hook(only_at_start)
    with pytest.raises(CheckFailed, match="every position"):
        ch05.test_steering_hook(lambda vector, coeff, start: ch05.reference_steering_hook(
            vector, coeff, torch.zeros_like(start)))
    with pytest.raises(CheckFailed, match="off by one"):
        ch05.test_steering_hook(lambda vector, coeff, start: ch05.reference_steering_hook(vector, coeff, start + 1))
    with pytest.raises(CheckFailed, match="unit length"):
        ch05.test_steering_hook(lambda vector, coeff, start: ch05.reference_steering_hook(
            vector / vector.norm(), coeff, start))

    def no_return(vector, coeff, start):
        def hook(act, hook):
            act = act + coeff * vector
        return hook

    with pytest.raises(CheckFailed, match="does the hook return"):
        ch05.test_steering_hook(no_return)


def test_mean_difference_checker():
    ch05.test_mean_difference(ch05.reference_mean_difference)
    with pytest.raises(CheckFailed, match="sign flipped"):
        ch05.test_mean_difference(lambda acts, harmful: -ch05.reference_mean_difference(acts, harmful))
    with pytest.raises(CheckFailed, match="normalised"):
        ch05.test_mean_difference(lambda acts, harmful: torch.nn.functional.normalize(
            ch05.reference_mean_difference(acts, harmful), dim=-1))
    with pytest.raises(CheckFailed, match="mean of all prompts"):
        ch05.test_mean_difference(lambda acts, harmful: acts[:, harmful].mean(1) - acts.mean(1))
    with pytest.raises(CheckFailed, match="lacks layer"):
        ch05.test_mean_difference(lambda acts, harmful: ch05.reference_mean_difference(acts, harmful).mean(0))


def test_refusal_score_checker():
    ch05.test_refusal_score(ch05.reference_refusal_score)
    with pytest.raises(CheckFailed, match="raw logit"):
        ch05.test_refusal_score(lambda logits, refusal_id: logits[:, refusal_id])
    with pytest.raises(CheckFailed, match="without subtracting log"):
        ch05.test_refusal_score(lambda logits, refusal_id: logits.log_softmax(-1)[:, refusal_id])
    with pytest.raises(CheckFailed, match="the probability p"):
        ch05.test_refusal_score(lambda logits, refusal_id: logits.softmax(-1)[:, refusal_id])


def test_directional_ablation_checker():
    ch05.test_directional_ablation(ch05.reference_directional_ablation)
    with pytest.raises(CheckFailed, match="without normalising"):
        ch05.test_directional_ablation(lambda acts, d, offset=0.0: acts - ((acts @ d) - offset)[..., None] * d)
    with pytest.raises(CheckFailed, match="offset ignored"):
        ch05.test_directional_ablation(lambda acts, d, offset=0.0: ch05.reference_directional_ablation(acts, d))
    with pytest.raises(CheckFailed, match="wrong sign"):
        ch05.test_directional_ablation(lambda acts, d, offset=0.0: ch05.reference_directional_ablation(
            acts, d, -offset))
    with pytest.raises(CheckFailed, match="unchanged"):
        ch05.test_directional_ablation(lambda acts, d, offset=0.0: acts)


def test_ablation_hooks_checker():
    ch05.test_ablation_hooks(ch05.reference_ablation_hooks)

    def no_pos_embed(model, direction, offsets=None):
        return [hook for hook in ch05.reference_ablation_hooks(model, direction, offsets) if hook[0] != "hook_pos_embed"]

    with pytest.raises(CheckFailed, match="hook_pos_embed forgotten"):
        ch05.test_ablation_hooks(no_pos_embed)

    def late_binding(model, direction, offsets=None):
        hooks = []
        for name in ch05.write_points(model):
            offset = 0.0 if offsets is None else offsets[name]
            hooks.append((name, lambda act, hook: ch05.reference_directional_ablation(act, direction, offset)))
        return hooks

    with pytest.raises(CheckFailed, match="closure in a loop"):
        ch05.test_ablation_hooks(late_binding)

    def resid_pre_only(model, direction, offsets=None):  # misses the offsets' write points
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
        return [(name, ch05._ablate_at(direction, 0.0)) for name in names]

    with pytest.raises(CheckFailed, match="write points without a hook"):
        ch05.test_ablation_hooks(resid_pre_only)


def test_benign_kl_checker():
    ch05.test_benign_kl(ch05.reference_benign_kl)
    with pytest.raises(CheckFailed, match="wrong way round"):
        ch05.test_benign_kl(lambda clean, steered: ch05.reference_benign_kl(steered, clean))
    with pytest.raises(CheckFailed, match="sum over prompts"):
        ch05.test_benign_kl(lambda clean, steered: ch05.reference_benign_kl(clean, steered) * clean.shape[0])

    def per_prompt(clean, steered):
        c, s = clean.log_softmax(-1), steered.log_softmax(-1)
        return (c.exp() * (c - s)).sum(-1)

    with pytest.raises(CheckFailed, match="one number"):
        ch05.test_benign_kl(per_prompt)


def test_select_direction_checker():
    ch05.test_select_direction(ch05.reference_select_direction)

    def no_kl_filter(candidates, max_kl=0.1, min_added=0.5):
        return ch05.reference_select_direction(candidates, max_kl=float("inf"), min_added=min_added)

    with pytest.raises(CheckFailed, match="KL filter skipped"):
        ch05.test_select_direction(no_kl_filter)

    def no_addition_filter(candidates, max_kl=0.1, min_added=0.5):
        return ch05.reference_select_direction(candidates, max_kl=max_kl, min_added=-1.0)

    with pytest.raises(CheckFailed, match="addition filter skipped"):
        ch05.test_select_direction(no_addition_filter)

    def index_not_layer(candidates, max_kl=0.1, min_added=0.5):
        layer = ch05.reference_select_direction(candidates, max_kl, min_added)
        return None if layer is None else [c["layer"] for c in candidates].index(layer)

    with pytest.raises(CheckFailed, match="position in the list"):
        ch05.test_select_direction(index_not_layer)

    def always_one(candidates, max_kl=0.1, min_added=0.5):
        kept = [c for c in candidates if c["kl"] <= max_kl and c["added_refusal"] >= min_added] or candidates
        return min(kept, key=lambda c: (c["ablated_refusal"], c["kl"], c["layer"]))["layer"]

    with pytest.raises(CheckFailed, match="return None"):
        ch05.test_select_direction(always_one)


def test_choose_k_checker():
    from interplab import steering

    ch05.test_choose_k(ch05.reference_choose_k)

    def first_under_target(candidates, max_refusal=0.05):
        return steering.select_protection(candidates, max_refusal=max_refusal, rule="first under target")

    with pytest.raises(CheckFailed, match="threshold rule"):
        ch05.test_choose_k(first_under_target)

    def no_refusal_filter(candidates, max_refusal=0.05):
        return steering.select_protection(candidates, max_refusal=float("inf"))

    with pytest.raises(CheckFailed, match="refusal filter skipped"):
        ch05.test_choose_k(no_refusal_filter)

    def capability_only(candidates, max_refusal=0.05):
        return steering.select_protection([dict(c, help_drop=0.0) for c in candidates], max_refusal=max_refusal)

    with pytest.raises(CheckFailed, match="only the capability drop"):
        ch05.test_choose_k(capability_only)

    def more_components(candidates, max_refusal=0.05):
        kept = [c for c in candidates if c["refusal"] <= max_refusal]
        return max(kept, key=lambda c: (-max(c["help_drop"], c["capability_drop"]), c["k"]))["k"] if kept else None

    with pytest.raises(CheckFailed, match="towards more components"):
        ch05.test_choose_k(more_components)

    def index_not_k(candidates, max_refusal=0.05):
        k = steering.select_protection(candidates, max_refusal=max_refusal)
        return None if k is None else [c["k"] for c in candidates].index(k)

    with pytest.raises(CheckFailed, match="position in the list"):
        ch05.test_choose_k(index_not_k)

def test_orthogonalize_output_checker():
    ch05.test_orthogonalize_output(ch05.reference_orthogonalize_output)

    def offset_in_weight(weight, bias, direction, offset=0.0):
        unit = direction / direction.norm()
        new_weight = weight - ((weight @ unit) - offset)[..., None] * unit
        return new_weight, None if bias is None else bias - ((bias @ unit) - offset) * unit

    with pytest.raises(CheckFailed, match="into every row of the weight"):
        ch05.test_orthogonalize_output(offset_in_weight)

    def bias_untouched(weight, bias, direction, offset=0.0):
        return ch05.reference_orthogonalize_output(weight, None, direction)[0], bias

    with pytest.raises(CheckFailed, match="bias unchanged"):
        ch05.test_orthogonalize_output(bias_untouched)

    def drops_offset(weight, bias, direction, offset=0.0):
        if bias is None:
            return ch05.reference_orthogonalize_output(weight, None, direction)
        return ch05.reference_orthogonalize_output(weight, bias, direction, offset)

    with pytest.raises(CheckFailed, match="raise ValueError"):
        ch05.test_orthogonalize_output(drops_offset)


def test_monitor_at_fpr_checker():
    ch05.test_monitor_at_fpr(ch05.reference_monitor_at_fpr)

    def on_test_negatives(calibration, positives, negatives, fpr=0.01):
        return ch05.reference_monitor_at_fpr(negatives, positives, negatives, fpr)

    with pytest.raises(CheckFailed, match="set on the test negatives"):
        ch05.test_monitor_at_fpr(on_test_negatives)

    def wrong_quantile(calibration, positives, negatives, fpr=0.01):
        return ch05.reference_monitor_at_fpr(calibration, positives, negatives, 1 - fpr)

    with pytest.raises(CheckFailed, match="fpr quantile"):
        ch05.test_monitor_at_fpr(wrong_quantile)

    def at_least(calibration, positives, negatives, fpr=0.01):
        threshold = float(torch.quantile(calibration.double(), 1 - fpr))
        return threshold, float((positives >= threshold).double().mean()), float((negatives >= threshold).double().mean())

    with pytest.raises(CheckFailed, match=">= where > belongs"):
        ch05.test_monitor_at_fpr(at_least)


def test_residual_direction_checker():
    ch05.test_residual_direction(ch05.reference_residual_direction)
    with pytest.raises(CheckFailed, match="standardised units"):
        ch05.test_residual_direction(lambda weight, scale: weight / weight.norm())
    with pytest.raises(CheckFailed, match="without normalising"):
        ch05.test_residual_direction(lambda weight, scale: weight / scale)


@pytest.fixture(scope="module")
def measured():
    return ch05.measured_refusal_directions()


def test_check_refusal_finding(measured):
    kind = next(k for k in ch05.KINDS if measured["selected"][k] is not None
                and ch05._is_clean(measured["tests"][k][measured["selected"][k]]))
    layer = measured["selected"][kind]
    verdict = "ablating the direction removed refusal and adding it induced refusal on benign requests here"
    right = {"candidate": f"L{layer}", "ablation": kind, "still_recognised": measured["recognised_auroc"][kind] >= 0.95,
             "verdict": verdict}
    ch05.check_refusal_finding(right)
    with pytest.raises(CheckFailed, match="is not the candidate"):
        ch05.check_refusal_finding(dict(right, candidate=f"L{(layer + 1) % len(measured['tests'][kind])}"))
    with pytest.raises(CheckFailed, match="retrained harm probe"):
        ch05.check_refusal_finding(dict(right, still_recognised=not right["still_recognised"]))
    with pytest.raises(CheckFailed, match="own words"):
        ch05.check_refusal_finding(dict(right, verdict="TODO"))
    with pytest.raises(CheckFailed, match="lacks"):
        ch05.check_refusal_finding({"candidate": f"L{layer}"})
    with pytest.raises(CheckFailed, match="'affine' or 'projection'"):
        ch05.check_refusal_finding(dict(right, ablation="zero"))
    other = next(k for k in ch05.KINDS if k != kind)
    other_layer = measured["selected"][other]
    if other_layer is None or not ch05._is_clean(measured["tests"][other][other_layer]):
        with pytest.raises(CheckFailed, match="no candidate passes|not a clean jailbreak"):
            ch05.check_refusal_finding(dict(right, ablation=other))
