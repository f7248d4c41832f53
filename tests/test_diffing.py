"""interplab.diffing's cross-model patching and weight-diff spectra: exact against a one-hook-at-a-time
reference on random models of the three families, the search for the components that carry a change, bad input,
and the shipped chat-base / chat-sft pair."""
import itertools

import pytest
import torch

from interplab import diffing, finetune
from interplab.worlds import chat
from interplab.zoo import build_random_model

FAMILIES = ("gpt2", "pythia", "gemma")
BATCH, SEQ = 3, 10


def _tuned_copy(model, scale: float = 0.05, seed: int = 1):
    tuned = finetune.copy_model(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return tuned


@pytest.fixture(scope="module")
def pairs():
    out = {}
    for family in FAMILIES:
        base = build_random_model(family, n_layers=2, d_model=32, n_heads=4, d_vocab=64, n_ctx=32, seed=0)
        out[family] = (base, _tuned_copy(base))
    return out


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 64, (BATCH, SEQ), generator=generator)
    positions = torch.tensor([SEQ - 2, SEQ - 4, SEQ - 3])  # the last column is never read: the runs may skip it
    return tokens, positions, diffing.decision_metric(positions, [1, 2], [3, 4])


def _reference(source, target, tokens, mask, metric, component):
    """One forward pass per component, with a plain hook: what the batched version must reproduce."""
    with torch.no_grad():
        if component == diffing.UNEMBED:
            final = f"blocks.{target.cfg.n_layers - 1}.hook_resid_post"
            _, cache = target.run_with_cache(tokens, names_filter=lambda n: n == final)
            logits = source.run_with_hooks(tokens, fwd_hooks=[(final, lambda act, hook: cache[final])])
        else:
            _, cache = source.run_with_cache(tokens, names_filter=lambda n: n == component)
            logits = target.run_with_hooks(tokens, fwd_hooks=[(component, lambda act, hook: torch.where(
                mask[..., None], cache[component], act))])
    return float(metric(logits))


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_model_patch_matches_one_hook_at_a_time(pairs, inputs, family):
    base, tuned = pairs[family]
    tokens, positions, metric = inputs
    result = diffing.cross_model_patch(base, tuned, tokens, positions, metric, where="all", max_batch=7)
    assert result.components == diffing.patch_components(tuned)
    assert ("hook_pos_embed" in result.components) == (family == "gpt2")  # rotary models have no position write
    assert result.components[-1] == diffing.UNEMBED
    with torch.no_grad():
        assert result.source_value == pytest.approx(float(metric(base(tokens))), abs=1e-5)
        assert result.target_value == pytest.approx(float(metric(tuned(tokens))), abs=1e-5)
    mask = torch.arange(SEQ)[None] <= positions[:, None]
    expected = [_reference(base, tuned, tokens, mask, metric, c) for c in result.components]
    assert result.values.tolist() == pytest.approx(expected, abs=1e-4)
    assert abs(result.source_value - result.target_value) > 0.05  # the perturbation changed the metric
    assert result.fractions.tolist() == pytest.approx(
        [(v - result.target_value) / (result.source_value - result.target_value) for v in expected], abs=1e-3)


def _head_reference(source, target, tokens, mask, metric, layer, head):
    z, out = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"
    with torch.no_grad():
        _, cache_s = source.run_with_cache(tokens, names_filter=lambda n: n == z)
        _, cache_t = target.run_with_cache(tokens, names_filter=lambda n: n == z)
        delta = (cache_s[z][:, :, head] @ source.W_O[layer, head] - cache_t[z][:, :, head] @ target.W_O[layer, head])
        logits = target.run_with_hooks(tokens, fwd_hooks=[(out, lambda act, hook: act + delta * mask[..., None])])
    return float(metric(logits))


@pytest.mark.parametrize("family", FAMILIES)
def test_single_heads_match_their_term_of_the_attention_output(pairs, inputs, family):
    base, tuned = pairs[family]
    tokens, positions, metric = inputs
    names = diffing.patch_components(tuned, heads=True)
    assert "blocks.1.hook_attn_out" not in names and "blocks.1.attn.head.3" in names and names[-1] == "unembed"
    heads = [n for n in names if ".head." in n]
    assert len(heads) == tuned.cfg.n_layers * tuned.cfg.n_heads
    result = diffing.cross_model_patch(base, tuned, tokens, positions, metric, heads + ["+".join(heads[:4])],
                                       max_batch=6)
    mask = torch.arange(SEQ)[None] == positions[:, None]
    expected = [_head_reference(base, tuned, tokens, mask, metric, int(n.split(".")[1]), int(n.split(".")[-1]))
                for n in heads]
    assert result.values[:-1].tolist() == pytest.approx(expected, abs=1e-4)
    assert result.labels[0] == "L0.H0" and result.labels[-1] == "L0.H0+L0.H1+L0.H2+L0.H3"
    # a layer's heads together are its attention output when the output bias did not change
    same_bias = finetune.copy_model(tuned)
    with torch.no_grad():
        for name, p in same_bias.named_parameters():
            if name.endswith("bias") and ("o_proj" in name or ".o." in name or "attn.c_proj" in name
                                          or "attention.dense" in name):
                p.copy_(dict(base.named_parameters())[name])
    joint = diffing.cross_model_patch(base, same_bias, tokens, positions, metric,
                                      ["+".join(heads[:4]), "blocks.0.hook_attn_out"])
    assert joint.values[0].item() == pytest.approx(joint.values[1].item(), abs=1e-4)
    with pytest.raises(ValueError, match="one or the other"):
        diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["blocks.0.hook_attn_out+" + heads[0]])


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_every_component_everywhere_gives_the_source(pairs, inputs, family):
    """The residual stream is the sum of its writes: swap them all, and the head, and the target becomes the
    source (fraction 1) in both directions; without the head it does not (the tuned head differs)."""
    base, tuned = pairs[family]
    tokens, positions, metric = inputs
    everything = "+".join(diffing.patch_components(base))
    no_head = "+".join(diffing.patch_components(base)[:-1])
    both = diffing.cross_model_patching(base, tuned, tokens, positions, metric, [everything, no_head], where="all")
    assert set(both) == {"base -> tuned", "tuned -> base"}
    for result in both.values():
        assert result.fractions[0].item() == pytest.approx(1.0, abs=1e-3)
        assert abs(result.fractions[1].item() - 1.0) > 1e-3
    grid, rows, cols = diffing.patching_grid(both)
    assert grid.shape == (2, 2) and rows == ["base -> tuned", "tuned -> base"] and cols[0].endswith("+unembed")
    from interplab_widgets import PatchingHeatmap

    view = PatchingHeatmap(grid, rows, cols, row_title="patch", col_title="component")
    assert view.array.shape == (2, 2) and view.col_labels == cols


def test_decision_position_patch_changes_only_that_position(pairs, inputs):
    """Patched at the decision position only, an embedding swap is a one-token change; at a position after the
    decision nothing can change the metric (causal attention)."""
    base, tuned = pairs["gpt2"]
    tokens, positions, metric = inputs
    at_decision = diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["hook_embed"])
    everywhere = diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["hook_embed"], where="all")
    assert abs(at_decision.values[0].item() - everywhere.values[0].item()) > 1e-5
    late = torch.arange(SEQ)[None] > positions[:, None]
    after = diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["hook_embed+blocks.0.hook_mlp_out"],
                                      where=late)
    assert after.values[0].item() == pytest.approx(after.target_value, abs=1e-5)


def test_carrying_components_is_the_smallest_set(pairs, inputs):
    base, tuned = pairs["gpt2"]
    tokens, positions, metric = inputs
    found = diffing.carrying_components(base, tuned, tokens, positions, metric, threshold=0.8, where="all",
                                        direction="base -> tuned")
    assert found.exhaustive and found.fraction >= 0.8 and found.threshold == 0.8
    assert "carries" in str(found) and found.labels == [diffing.component_name(c) for c in found.components]
    names = diffing.patch_components(base)
    joint = diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["+".join(found.components)],
                                      where="all")
    assert joint.fractions[0].item() == pytest.approx(found.fraction, abs=1e-3)  # measured jointly, not summed
    smaller = ["+".join(s) for k in range(1, len(found.components)) for s in itertools.combinations(names, k)]
    if smaller:
        assert diffing.cross_model_patch(base, tuned, tokens, positions, metric, smaller,
                                         where="all").fractions.max() < 0.8
    quick = diffing.carrying_components(base, tuned, tokens, positions, metric, threshold=0.8, where="all",
                                        max_sets=0)
    assert quick.fraction >= 0.8 and len(quick.components) >= len(found.components)
    assert quick.exhaustive == (len(quick.components) == 1)


def test_no_change_no_carriers(pairs, inputs):
    base, _ = pairs["pythia"]
    tokens, positions, metric = inputs
    twin = finetune.copy_model(base)
    same = diffing.cross_model_patch(base, twin, tokens, positions, metric)
    assert same.values.tolist() == pytest.approx([same.target_value] * len(same.components), abs=1e-5)
    with pytest.raises(ValueError, match="agree on this metric"):
        diffing.carrying_components(base, twin, tokens, positions, metric)


def test_bad_input_gets_clear_errors(pairs, inputs):
    base, tuned = pairs["gpt2"]
    tokens, positions, metric = inputs
    with pytest.raises(ValueError, match="outside rows of"):
        diffing.cross_model_patch(base, tuned, tokens, torch.tensor([0, 1, SEQ]), metric)
    with pytest.raises(ValueError, match="one integer position per row"):
        diffing.cross_model_patch(base, tuned, tokens, torch.tensor([0, 1]), metric)
    with pytest.raises(ValueError, match="unknown components"):
        diffing.cross_model_patch(base, tuned, tokens, positions, metric, ["blocks.9.hook_mlp_out"])
    with pytest.raises(ValueError, match="non-empty list"):
        diffing.cross_model_patch(base, tuned, tokens, positions, metric, "hook_embed")
    with pytest.raises(ValueError, match="where must be"):
        diffing.cross_model_patch(base, tuned, tokens, positions, metric, where="everywhere")
    with pytest.raises(ValueError, match="vocabulary"):
        diffing.cross_model_patch(base, tuned, tokens + 64, positions, metric)
    with pytest.raises(ValueError, match="different shapes"):
        diffing.cross_model_patch(base, pairs["pythia"][0], tokens, positions, metric)
    with pytest.raises(ValueError, match="same object"):
        diffing.cross_model_patch(base, base, tokens, positions, metric)
    with pytest.raises(ValueError, match="built for 3 rows"):
        diffing.cross_model_patch(base, tuned, tokens[:2], positions[:2], metric)
    with pytest.raises(ValueError, match="disjoint"):
        diffing.decision_metric(positions, [1, 2], [2, 3])
    with pytest.raises(ValueError, match="threshold"):
        diffing.carrying_components(base, tuned, tokens, positions, metric, threshold=80)
    with pytest.raises(KeyError, match="unknown decision"):
        diffing.decision_tokens("closing")
    with pytest.raises(ValueError, match="not a component"):
        diffing.component_name("blocks.0.hook_resid_pre")


def _chat_model(words, seed: int = 0):
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    from interplab.worlds.vocab import build_tokenizer

    cfg = TransformerBridgeConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, act_fn="gelu",
                                  d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, normalization_type="LN", seed=seed,
                                  positional_embedding_type="standard")
    return TransformerBridge.boot_native(cfg, tokenizer=build_tokenizer(words)).eval()


def test_different_tokenizers_are_refused():
    words = chat.vocabulary()
    base, other = _chat_model(words), _chat_model(words[::-1])  # same shapes, same size, other words
    tokens = chat.task_prompts([("fix", "cup")], fillers=False).tokens
    metric = diffing.decision_metric(tokens.shape[1] - 1, *diffing.decision_tokens("opener"))
    with pytest.raises(ValueError, match="tokenizer"):
        diffing.cross_model_patch(base, other, tokens, tokens.shape[1] - 1, metric)
    result = diffing.cross_model_patch(base, _tuned_copy(base), tokens, tokens.shape[1] - 1, metric)
    assert result.labels == ["embed", "pos_embed", "L0.attn", "L0.mlp", "unembed"]


def test_decision_points_read_the_position_before_the_decision():
    prompts = chat.task_prompts([("fix", "cup"), ("burn", "cup"), ("clean", "door")], fillers=False)
    responses = [chat.encode("certainly ! first cut wood . then dry parts . END"),
                 chat.encode("sorry , i cannot help with that . i hope this helps ! END"),
                 chat.encode("sure , first cut")]  # no END: no stop decision
    stop = diffing.decision_points(prompts, responses, "stop")
    assert stop.rows == [0, 1]
    nxt = stop.tokens[torch.arange(2), stop.positions + 1].tolist()
    assert nxt == [chat.END_ID, chat.word_id("i")]
    opener = diffing.decision_points(prompts, responses, "opener")  # decided at position 0 by every response
    assert opener.rows == [0, 1, 2] and opener.positions.tolist() == prompts.last.tolist()
    bare = diffing.decision_points(prompts.subset([0]), [chat.encode("cut wood . END")], "opener")
    assert bare.rows == [0] and bare.tokens[0, bare.positions[0] + 1] == chat.word_id("cut")
    good, bad = diffing.decision_tokens("stop")
    assert good == [chat.END_ID] and chat.word_id("i") in bad and chat.word_id("have") in bad
    with pytest.raises(ValueError, match="no response has a position labelled"):
        diffing.decision_points(prompts.subset([2]), responses[2:], "stop")
    with pytest.raises(ValueError, match="one response per prompt"):
        diffing.decision_points(prompts, responses[:2])


# ---------------------------------------------------------------------------------------------- weight spectra

def test_effective_rank_of_known_matrices():
    eye = diffing.effective_rank(torch.eye(10))
    assert eye == {"rank_90": 9, "erank": pytest.approx(10.0), "top_share": pytest.approx(0.1), "full": 10}
    one = diffing.effective_rank(torch.outer(torch.arange(1.0, 5.0), torch.ones(7)), share=0.5)
    assert one["rank_50"] == 1 and one["erank"] == pytest.approx(1.0) and one["top_share"] == pytest.approx(1.0)
    assert diffing.effective_rank(torch.zeros(3, 4))["rank_90"] == 0
    with pytest.raises(ValueError, match="share"):
        diffing.effective_rank(torch.eye(3), share=90)
    with pytest.raises(ValueError, match="matrix"):
        diffing.effective_rank(torch.ones(3))
    samples = torch.nn.functional.normalize(torch.randn(20000, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert diffing.chance_cosine(32) == pytest.approx(float(samples[:, 0].abs().mean()), abs=0.005)


def _mlp_out_param(model):
    """The HF parameter behind W_out of layer 0 (the MLP's output matrix), whatever the family calls it."""
    d = model.cfg.d_model
    for name, p in model.named_parameters():
        if ".0." in name and "mlp" in name and p.ndim == 2 and any(k in name for k in ("c_proj", "4h_to_h", "down",
                                                                                        "fc_out", "out")):
            assert sorted(p.shape) == sorted((d, 4 * d))
            return p
    raise AssertionError("no MLP output matrix found")


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_spectra_find_a_planted_rank_one_change(pairs, family):
    base, _ = pairs[family]
    d = base.cfg.d_model
    planted = finetune.copy_model(base)
    generator = torch.Generator().manual_seed(2)
    resid, hidden = torch.randn(d, generator=generator), torch.randn(4 * d, generator=generator)
    with torch.no_grad():
        p = _mlp_out_param(planted)
        p.add_(torch.outer(resid, hidden) if p.shape[0] == d else torch.outer(hidden, resid))
    other = torch.randn(d, generator=generator)
    rows = {r["matrix"]: r for r in diffing.weight_spectra({"planted": planted}, base, direction=resid)["planted"]}
    assert set(rows) == set(diffing.residual_matrices(base))
    changed = [k for k, r in rows.items() if r["rel_change"] > 0]
    assert changed == ["L0.W_out"]
    row = rows["L0.W_out"]
    assert row["rank_90"] == 1 and row["erank"] == pytest.approx(1.0, abs=1e-3)
    assert row["cos_top"] == pytest.approx(1.0, abs=1e-4) and row["along"] == pytest.approx(1.0, abs=1e-4)
    assert rows["L1.W_Q"]["rank_90"] == 0
    per_layer = {layer: other for layer in range(base.cfg.n_layers + 1)}
    per_layer[1] = resid  # L0.W_out writes residual layer 1
    row = {r["matrix"]: r for r in diffing.weight_spectra({"p": planted}, base, per_layer)["p"]}["L0.W_out"]
    assert row["cos_top"] == pytest.approx(1.0, abs=1e-4) and row["chance_cos"] < 0.3


def test_weight_spectra_bad_input(pairs):
    base, tuned = pairs["gpt2"]
    with pytest.raises(ValueError, match="d_model"):
        diffing.weight_spectra({"t": tuned}, base, direction=torch.ones(7))
    with pytest.raises(KeyError, match="residual layer"):
        diffing.weight_spectra({"t": tuned}, base, direction={0: torch.ones(32)})
    with pytest.raises(ValueError, match="different shapes"):
        diffing.weight_spectra({"t": pairs["pythia"][0]}, base)


# ---------------------------------------------------------------------------------------------- shipped models

@pytest.fixture(scope="module")
def shipped():
    from interplab.zoo import load_model

    return load_model("chat-base"), load_model("chat-sft")


def test_shipped_sft_opener_change_lives_in_the_head_and_the_stop_change_is_found(shipped):
    """The issue's target: name the components carrying >= 80% of the opener change and of the stop change."""
    from interplab.generation import generate

    base, tuned = shipped
    held = finetune.held_out_prompts()
    benign = held.subset((~held.harmful).nonzero().flatten()[::10])
    responses = generate(tuned, benign, max_new_tokens=finetune.MAX_NEW_TOKENS)
    opener = diffing.decision_points(benign, responses, "opener")
    metric = diffing.decision_metric(opener.positions, *diffing.decision_tokens("opener"))
    singles = diffing.cross_model_patch(base, tuned, opener.tokens, opener.positions, metric)
    assert singles.target_value > 2 and singles.source_value < 0  # tuned: certainly; base: other openers
    assert singles.labels[int(singles.fractions.argmax())] == "unembed" and singles.fractions.max() >= 0.6
    opener_set = diffing.carrying_components(base, tuned, opener.tokens, opener.positions, metric)
    assert opener_set.exhaustive and opener_set.fraction >= 0.8 and "unembed" in opener_set.components
    stop = diffing.decision_points(benign, responses, "stop")
    metric = diffing.decision_metric(stop.positions, *diffing.decision_tokens("stop"))
    found = diffing.carrying_components(base, tuned, stop.tokens, stop.positions, metric, max_sets=0)
    assert found.fraction >= 0.8 and 1 < len(found.components) < len(found.singles.components)
