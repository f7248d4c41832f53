"""Steering, directional ablation and weight orthogonalisation: exact identities on random GPT-2, Pythia and
Gemma bridges and the zoo's native architecture; bad input; monitors' thresholds; the Gemma chat template."""
from __future__ import annotations

import pytest
import torch

from interplab import steering
from interplab.zoo import build_random_model

FAMILIES = ("gpt2", "pythia", "gemma")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return build_random_model(request.param, n_layers=2)


def _tokens(model, batch: int = 6, seq: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _direction(model, seed: int = 1) -> torch.Tensor:
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * 3


# ---------------------------------------------------------------- write points and ablation

def test_residual_writes_sum_to_the_final_residual(model):
    names = steering.residual_write_hooks(model)
    assert names[0] == "hook_embed" and names[-1] == f"blocks.{model.cfg.n_layers - 1}.hook_mlp_out"
    assert ("hook_pos_embed" in names) == (model.cfg.positional_embedding_type == "standard")
    _, cache = model.run_with_cache(_tokens(model))
    total = sum(cache[name] for name in names)
    final = cache[steering.resid_hook(model, model.cfg.n_layers)]
    torch.testing.assert_close(total, final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("affine", [False, True])
def test_ablation_sets_every_write_to_its_offset(model, affine):
    tokens, direction = _tokens(model), _direction(model)
    offsets = steering.write_point_means(model, _tokens(model, seed=3), -1, direction) if affine else None
    assert offsets is None or any(abs(v) > 1e-3 for v in offsets.values())
    hooks = steering.directional_ablation_hooks(model, direction, offsets)
    unit = direction / direction.norm()
    seen = {}
    record = [(name, lambda act, hook, name=name: seen.__setitem__(name, act.detach().clone())) for name, _ in hooks]
    model.run_with_hooks(tokens, fwd_hooks=hooks + record)  # recorded after the ablation hook at the same point
    assert sorted(seen) == sorted(steering.residual_write_hooks(model))
    for name, act in seen.items():
        target = 0.0 if offsets is None else offsets[name]
        assert torch.allclose(act @ unit, torch.full(act.shape[:2], target), atol=1e-4), name


@pytest.mark.parametrize("window", ["from", "only"])
def test_ablation_in_a_window_leaves_earlier_positions_alone(model, window):
    tokens, direction = _tokens(model), _direction(model)
    start = torch.tensor([2, 3, 4, 5, 6, 7])
    stop = start + 1 if window == "only" else None
    offsets = steering.write_point_means(model, _tokens(model, seed=3), -1, direction)
    hooks = steering.directional_ablation_hooks(model, direction, offsets, start=start, stop=stop)
    names = steering.residual_write_hooks(model)
    _, clean = model.run_with_cache(tokens, names_filter=names)
    with model.hooks(fwd_hooks=hooks):
        _, ablated = model.run_with_cache(tokens, names_filter=names)
    t = torch.arange(tokens.shape[1])[None]
    before, inside = t < start[:, None], (t >= start[:, None]) & (t < (start if stop is None else stop)[:, None] + (
        100 if stop is None else 0))
    unit = direction / direction.norm()
    for name in names:
        torch.testing.assert_close(ablated[name][before], clean[name][before], atol=1e-5, rtol=1e-5)
        assert torch.allclose(ablated[name][inside] @ unit, torch.tensor(offsets[name]), atol=1e-4), name
    assert not torch.allclose(ablated[names[-1]][~before], clean[names[-1]][~before], atol=1e-3)
    if stop is not None:  # after the window the writes are not set, they only see the edited position
        after = ~before & ~inside
        assert not torch.allclose(ablated["hook_embed"][after] @ unit, torch.tensor(offsets["hook_embed"]), atol=1e-3)


@pytest.mark.parametrize("affine", [False, True])
def test_orthogonalized_weights_equal_the_hooks(model, affine):
    tokens, direction = _tokens(model), _direction(model)
    offsets = steering.write_point_means(model, _tokens(model, seed=3), -1, direction) if affine else None
    before = model(tokens)
    hooked = model.run_with_hooks(tokens, fwd_hooks=steering.directional_ablation_hooks(model, direction, offsets))
    edited = steering.orthogonalize_weights(model, direction, offsets)
    diff = (edited(tokens) - hooked).abs().max().item()
    assert diff <= 1e-4, f"weight orthogonalisation and hook ablation differ by {diff:.2e}"
    assert (hooked - before).abs().max() > 1e-3, "the ablation should change the logits"
    torch.testing.assert_close(model(tokens), before, rtol=0, atol=0)  # the original is untouched
    _, cache = edited.run_with_cache(tokens)
    unit = direction / direction.norm()
    for name in steering.residual_write_hooks(model):
        target = 0.0 if offsets is None else offsets[name]
        assert torch.allclose(cache[name] @ unit, torch.full(tokens.shape, target), atol=1e-4), name


def test_orthogonalization_unties_a_tied_unembedding():
    model = build_random_model("gpt2", n_layers=1)
    embed, unembed = model.embed.original_component, model.unembed.original_component
    assert unembed.weight is embed.weight  # GPT-2 reads logits with its embedding
    edited = steering.orthogonalize_weights(model, _direction(model))
    e, u = edited.embed.original_component.weight, edited.unembed.original_component.weight
    assert u is not e
    torch.testing.assert_close(u, embed.weight)


def test_zoo_architecture_orthogonalizes_exactly():
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    config = TransformerBridgeConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, act_fn="gelu",
                                     d_vocab=50, n_ctx=16, normalization_type="LN", seed=3,
                                     positional_embedding_type="standard", initializer_range=0.5)
    model = TransformerBridge.boot_native(config)
    tokens, direction = _tokens(model), _direction(model)
    offsets = steering.write_point_means(model, tokens, torch.full((tokens.shape[0],), 4), direction)
    hooked = model.run_with_hooks(tokens, fwd_hooks=steering.directional_ablation_hooks(model, direction, offsets))
    assert (steering.orthogonalize_weights(model, direction, offsets)(tokens) - hooked).abs().max() <= 1e-4


def test_orthogonalization_refuses_post_normalised_outputs(monkeypatch):
    model = build_random_model("gemma", n_layers=1)
    monkeypatch.setattr(model.cfg, "use_normalization_before_and_after", True)
    with pytest.raises(NotImplementedError, match="directional_ablation_hooks"):
        steering.orthogonalize_weights(model, _direction(model))


# ---------------------------------------------------------------- directions and addition

def test_mean_difference_directions_are_raw_means(model):
    a, b = _tokens(model, seed=4), _tokens(model, batch=4, seed=5)
    last_a = torch.tensor([8, 7, 6, 5, 4, 3])
    directions = steering.mean_difference_directions(model, a, b, last_a, -1)
    assert sorted(directions) == list(range(model.cfg.n_layers + 1))
    _, cache_a = model.run_with_cache(a)
    _, cache_b = model.run_with_cache(b)
    for layer, vector in directions.items():
        name = steering.resid_hook(model, layer)
        expected = cache_a[name][torch.arange(6), last_a].mean(0) - cache_b[name][:, -1].mean(0)
        torch.testing.assert_close(vector, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steering.caa_vector(model, a, b, 1, last_a, -1), directions[1])
    one = steering.actadd_vector(model, a[0], b[0], 2, position_a=3, position_b=3)
    assert torch.allclose(one, cache_a[steering.resid_hook(model, 2)][0, 3] - cache_b[steering.resid_hook(model, 2)][0, 3],
                          atol=1e-5)


@pytest.mark.parametrize("window", ["all", "prompt", "from"])
def test_addition_changes_only_its_positions(model, window):
    tokens, vector = _tokens(model), _direction(model)
    lengths = torch.tensor([3, 4, 5, 6, 7, 8])
    start, stop = {"all": (None, None), "prompt": (None, lengths), "from": (lengths, None)}[window]
    hooks = steering.activation_addition_hooks(model, vector, 1, 2.0, start=start, stop=stop)
    name = steering.resid_hook(model, 1)
    _, clean = model.run_with_cache(tokens, names_filter=name)
    with model.hooks(fwd_hooks=hooks):
        _, steered = model.run_with_cache(tokens, names_filter=name)
    change = steered[name] - clean[name]
    t = torch.arange(tokens.shape[1])[None]
    inside = torch.ones_like(change[..., 0], dtype=torch.bool)
    if start is not None:
        inside &= t >= start[:, None]
    if stop is not None:
        inside &= t < stop[:, None]
    torch.testing.assert_close(change[inside], (2.0 * vector).expand(int(inside.sum()), -1), atol=1e-5, rtol=1e-5)
    assert change[~inside].abs().max() == 0 if (~inside).any() else True


def test_generation_runs_with_steering_hooks():
    from interplab.generation import generate

    model = build_random_model("gemma", n_layers=1)
    tokens, lengths = _tokens(model, batch=3, seq=5), torch.tensor([3, 5, 4])
    plain = generate(model, (tokens, lengths), max_new_tokens=4, stop_token=None)
    hooks = steering.activation_addition_hooks(model, _direction(model) * 30, 1, 1.0, start=lengths)
    steered = generate(model, (tokens, lengths), max_new_tokens=4, stop_token=None, fwd_hooks=hooks)
    assert [len(r) for r in steered] == [4, 4, 4]
    assert steered != plain  # a large vector added to the generated positions changes the continuation
    # added from the prompt length on: the first response token (read at the prompt's last position) is unchanged
    assert [r[0] for r in steered] == [r[0] for r in plain]


# ---------------------------------------------------------------- scores and selection

def test_first_token_scores_count_top_tokens(model):
    tokens, last = _tokens(model), torch.tensor([8, 7, 6, 5, 4, 3])
    logits = model(tokens)[torch.arange(6), last]
    top = logits.argmax(-1)
    assert steering.refusal_score(model, (tokens, last), int(top[0])) == pytest.approx(float((top == top[0]).double().mean()))
    assert steering.help_score(model, (tokens, last), top.tolist()) == 1.0
    torch.testing.assert_close(steering.next_token_logits(model, (tokens, last), batch_size=4), logits.detach(),
                               atol=1e-5, rtol=1e-5)
    assert steering.benign_kl(model, (tokens, last), []) == pytest.approx(0.0, abs=1e-6)
    ablate = steering.directional_ablation_hooks(model, _direction(model))
    assert steering.benign_kl(model, (tokens, last), ablate) > 0


def test_selection_table_follows_its_filters(model):
    harmful, benign = (_tokens(model, seed=6), torch.full((6,), 8)), (_tokens(model, seed=7), torch.full((6,), 8))
    refusal = int(steering.next_token_logits(model, harmful).argmax(-1)[0])
    selection = steering.select_refusal_direction(model, harmful, benign, refusal, kl_max=10.0, min_refusal_added=0.0)
    assert [c.layer for c in selection.candidates] == list(range(model.cfg.n_layers + 1))
    for c in selection.candidates:
        assert c.passes == (c.refusal_added >= 0.0 and c.kl_ablated <= 10.0)
    best = min((c for c in selection.candidates if c.passes), key=lambda c: (c.refusal_ablated, c.kl_ablated))
    assert selection.best_layer == best.layer
    assert "benign KL" in str(selection) and len(selection.table()) == len(selection.candidates)
    assert len(selection.hooks(model)) == len(steering.residual_write_hooks(model))
    with pytest.warns(UserWarning, match="no candidate"):
        none = steering.select_refusal_direction(model, harmful, benign, refusal, kl_max=-1.0,
                                                 ablation="projection")
    with pytest.raises(ValueError, match="no candidate passed"):
        none.direction


def test_protect_subspace_removes_the_protected_directions():
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    scales = torch.tensor([8.0, 6.0, 4.0] + [0.1] * 13)
    keep = torch.randn(500, 16, generator=generator) * scales @ basis.T + 3.0
    direction = torch.randn(16, generator=generator)
    protected = steering.protect_subspace(direction, keep, 3)
    assert (protected @ basis[:, :3]).abs().max() < 0.05 * direction.norm()  # the 3 big axes are gone
    torch.testing.assert_close(protected @ basis[:, 3:], direction @ basis[:, 3:], atol=0.1, rtol=0.1)
    torch.testing.assert_close(steering.protect_subspace(direction, keep, 0), direction)
    shifted = steering.protect_subspace(direction, keep, 1, center=keep.mean(0) - 50 * basis[:, 5])
    assert abs(float(shifted @ basis[:, 5])) < 1e-3  # with a far centre, the mean offset is the top component
    with pytest.raises(ValueError, match="same hook"):
        steering.protect_subspace(torch.ones(8), keep, 2)
    with pytest.raises(ValueError, match="n_components"):
        steering.protect_subspace(direction, keep, -1)
    with pytest.raises(ValueError, match="nothing is left"):
        steering.protect_subspace(direction, keep, 16)


# ---------------------------------------------------------------- monitors

def test_threshold_and_recall_at_a_false_positive_rate():
    negatives = torch.arange(100, dtype=torch.float)  # 0..99
    threshold = steering.threshold_at_fpr(negatives, 0.01)
    assert threshold == 98.0 and (negatives > threshold).sum() == 1
    scores = torch.cat([negatives, torch.tensor([97.5, 98.5, 120.0, 200.0])])
    labels = torch.cat([torch.zeros(100), torch.ones(4)]).long()
    assert steering.recall_at_fpr(scores, labels, 0.01) == 0.75
    assert steering.recall_at_fpr(scores, labels, threshold=150.0) == 0.25
    assert steering.false_positive_rate(scores, labels, 49.5) == 0.5
    assert steering.threshold_at_fpr(negatives, 0.0) == 99.0
    with pytest.raises(ValueError, match="both positives and negatives"):
        steering.recall_at_fpr(negatives, torch.zeros(100).long())


# ---------------------------------------------------------------- bad input

def test_bad_input_says_how_to_fix_it(model):
    tokens, direction = _tokens(model), _direction(model)
    with pytest.raises(ValueError, match="d_model"):
        steering.directional_ablation_hooks(model, torch.ones(model.cfg.d_model + 1))
    with pytest.raises(ValueError, match="d_model"):
        steering.orthogonalize_weights(model, torch.ones(7))
    with pytest.raises(ValueError, match="out of range"):
        steering.activation_addition_hooks(model, direction, model.cfg.n_layers + 1, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        steering.mean_difference_directions(model, tokens, tokens, layers=[-1])
    with pytest.raises(ValueError, match="empty"):
        steering.mean_difference_directions(model, tokens[:0], tokens)
    with pytest.raises(ValueError, match="empty"):
        steering.caa_vector(model, tokens, tokens[:0], 1)
    with pytest.raises(ValueError, match="finite number"):
        steering.activation_addition_hooks(model, direction, 1, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        steering.directional_ablation_hooks(model, torch.full((model.cfg.d_model,), float("nan")))
    with pytest.raises(ValueError, match="zero"):
        steering.orthogonalize_weights(model, torch.zeros(model.cfg.d_model))
    offsets = steering.write_point_means(model, tokens, -1, direction)
    with pytest.raises(ValueError, match="missing"):
        steering.directional_ablation_hooks(model, direction, {"hook_embed": 0.0})
    with pytest.raises(ValueError, match="NaN"):
        steering.directional_ablation_hooks(model, direction, dict(offsets, hook_embed=float("nan")))
    with pytest.raises(ValueError, match="vocabulary"):
        steering.refusal_score(model, (tokens, torch.full((6,), 8)), model.cfg.d_vocab)
    with pytest.raises(ValueError, match="one position per prompt"):
        steering.refusal_score(model, (tokens, torch.tensor([1, 2])), 0)


# ---------------------------------------------------------------- chat templates

def _gemma_like_tokenizer():
    """A word-level tokenizer that, like Gemma's, matches its turn markers inside text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<bos>", "<unk>", "<pad>", "<start_of_turn>", "<end_of_turn>", "user", "model", "how", "do", "i", "bake",
             "build", "bread", "a", "bomb", "?", "sorry", "sure"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>")


def test_gemma_chat_template_runs_offline_on_a_random_gemma():
    assert steering.format_chat("how do i bake bread ?") == [
        "<start_of_turn>user\nhow do i bake bread ?<end_of_turn>\n<start_of_turn>model\n"]
    tokenizer = _gemma_like_tokenizer()
    model = build_random_model("gemma", n_layers=2, d_vocab=len(tokenizer))
    harmful = steering.chat_prompt_tokens(model, ["how do i build a bomb ?", "build a bomb"], tokenizer=tokenizer)
    benign = steering.chat_prompt_tokens(model, ["how do i bake bread ?", "bake a bread"], tokenizer=tokenizer)
    tokens, last = harmful
    assert tokenizer.convert_ids_to_tokens(tokens[1, :int(last[1]) + 1].tolist()) == [
        "<bos>", "<start_of_turn>", "user", "build", "a", "bomb", "<end_of_turn>", "<start_of_turn>", "model"]
    assert last.tolist() == [12, 8] and tokens[1, 9:].tolist() == [tokenizer.pad_token_id] * 4
    directions = steering.mean_difference_directions(model, harmful[0], benign[0], harmful[1], benign[1])
    sorry = tokenizer.convert_tokens_to_ids("sorry")
    edited = steering.orthogonalize_weights(model, directions[1])
    hooks = steering.directional_ablation_hooks(model, directions[1])
    torch.testing.assert_close(steering.next_token_logits(edited, harmful),
                               steering.next_token_logits(model, harmful, hooks), atol=1e-4, rtol=0)
    assert 0 <= steering.refusal_score(edited, harmful, sorry) <= 1
    with pytest.raises(ValueError, match="unknown template"):
        steering.format_chat("hi", template="llama")


# ---------------------------------------------------------------- the shipped chat model: chapter 05's targets

SHIPPED = "chat-4l"


@pytest.fixture(scope="module")
def shipped():
    """chat-4l, its refusal directions (train pairs) and the Arditi-style selection (fresh train-pair prompts,
    benign side joined by capability questions about the selection half of the objects and sums), with held-out
    prompt sets."""
    from interplab.worlds import chat
    from interplab.zoo import load_model

    model = load_model(SHIPPED)
    split = chat.capability_split
    train = chat.task_prompts(chat.TRAIN_PAIRS, seed=0)
    select = chat.task_prompts(chat.TRAIN_PAIRS[::2], seed=1)
    benign_select = chat.ChatPrompts.concat([select.subset(~select.harmful), split("selection", 60, seed=4)])
    directions = steering.mean_difference_directions(model, train.tokens[train.harmful], train.tokens[~train.harmful],
                                                     train.last[train.harmful], train.last[~train.harmful])
    # kl_max 0.2, not Arditi's 0.1: affine ablation moves chat-4l's benign first-token distribution by KL ~0.12
    # at its best layer (the cost that benchmarks/steering.py prints as lost capability)
    selection = steering.select_refusal_direction(model, select.subset(select.harmful), benign_select,
                                                  chat.REFUSAL_TOKEN, directions, kl_max=0.2)
    held_out = chat.task_prompts(chat.HELD_OUT_PAIRS, seed=2)
    return dict(model=model, chat=chat, train=train, selection=selection, benign_select=benign_select, split=split,
                harmful=held_out.subset(held_out.harmful), benign=held_out.subset(~held_out.harmful),
                held_out=held_out, capability=chat.capability_prompts(60, seed=3))


def test_shipped_refusal_direction_ablated_removes_refusal(shipped):
    model, chat, selection = shipped["model"], shipped["chat"], shipped["selection"]
    assert selection.best_layer is not None, str(selection)
    base = steering.refusal_score(model, shipped["harmful"], chat.REFUSAL_TOKEN)
    ablated = steering.refusal_score(model, shipped["harmful"], chat.REFUSAL_TOKEN, selection.hooks(model))
    assert base >= 0.95 and ablated <= 0.05, (base, ablated, str(selection))


def test_shipped_projection_misfires_and_decision_only_ablation_keeps_help(shipped):
    """Zero projection does not jailbreak chat-4l: it makes benign requests refused. Affine ablation at the last
    prompt token only (hooks) removes refusal and keeps benign help; capability is not kept (see the benchmark)."""
    from interplab.generation import generate

    model, chat, selection = shipped["model"], shipped["chat"], shipped["selection"]
    harmful, benign = shipped["harmful"], shipped["benign"]
    projection = steering.directional_ablation_hooks(model, selection.direction)
    assert steering.refusal_score(model, harmful, chat.REFUSAL_TOKEN, projection) >= 0.95
    assert steering.refusal_score(model, benign, chat.REFUSAL_TOKEN, projection) >= 0.5

    def decision_only(prompts):
        return steering.directional_ablation_hooks(model, selection.direction, selection.offsets[selection.best_layer],
                                                   start=prompts.last, stop=prompts.last + 1)

    assert steering.refusal_score(model, harmful, chat.REFUSAL_TOKEN, decision_only(harmful)) <= 0.05
    base = chat.score_responses(benign, generate(model, benign))["help"].double().mean()
    after = chat.score_responses(benign, generate(model, benign, fwd_hooks=decision_only(benign)))["help"]
    assert base - after.double().mean() <= 0.02


def test_capability_split_shares_no_item():
    from interplab.worlds import chat

    split = chat.capability_split
    parts = {part: split(part, 90, seed=5) for part in ("selection", "evaluation")}
    items = {}
    for part, prompts in parts.items():
        assert len(prompts) == 90 and (prompts.kind == chat.KINDS.index("colour")).sum() == 30
        words = {w for text in prompts.texts for w in text.split()}
        items[part] = ({w for w in words if w in chat.BENIGN_OBJECTS},
                       {" ".join(t.split()[t.split().index("add"):][:4]) for t in prompts.texts if " add " in t})
        assert len(items[part][0]) == 12 and len(items[part][1]) > 10
    assert not items["selection"][0] & items["evaluation"][0] and not items["selection"][1] & items["evaluation"][1]


def test_select_protection_rules():
    rows = [{"k": 0, "refusal": 0.0, "help_drop": 0.12, "capability_drop": 0.15},
            {"k": 1, "refusal": 0.0, "help_drop": 0.01, "capability_drop": 0.02},
            {"k": 2, "refusal": 0.0, "help_drop": 0.0, "capability_drop": 0.005},
            {"k": 3, "refusal": 0.2, "help_drop": 0.0, "capability_drop": 0.0},
            {"k": 4, "refusal": 0.04, "help_drop": 0.0, "capability_drop": 0.005}]
    assert steering.select_protection(rows) == 2  # least damage with refusal removed; ties: fewer components
    assert steering.select_protection(rows, rule="first under target") == 1
    assert steering.select_protection(rows, max_refusal=-1) is None
    assert steering.select_protection(rows[:1], rule="first under target") is None
    with pytest.raises(ValueError, match="rule"):
        steering.select_protection(rows, rule="best on evaluation")
    with pytest.raises(ValueError, match="lacks"):
        steering.select_protection([{"k": 0, "refusal": 0.0}])
    with pytest.raises(ValueError, match="NaN"):
        steering.select_protection([dict(rows[0], help_drop=float("nan"))])


def test_shipped_protected_direction_chosen_on_a_selection_split_keeps_capability(shipped):
    """Issue 11's "help and capability drop <= 0.02 after ablation": the refusal direction minus the top k
    principal directions of capability questions, k chosen by select_protection on a selection split (train-pair
    requests, questions about half the objects and sums), evaluated once on held-out pairs and the other half."""
    from interplab import probes
    from interplab.generation import generate

    model, chat, selection, split = shipped["model"], shipped["chat"], shipped["selection"], shipped["split"]
    layer, train, benign_select = selection.best_layer, shipped["train"], shipped["benign_select"]
    name = steering.resid_hook(model, layer)
    fit = split("selection", 150, seed=7)
    keep = probes.collect_activations(model, fit.tokens, name, fit.last, progress=False)[name]
    benign_mean = probes.collect_activations(model, train.tokens[~train.harmful], name, train.last[~train.harmful],
                                             progress=False)[name].mean(0)
    sets = {"selection": (chat.task_prompts(chat.pairs(harmful=True)[::2], seed=21),
                          chat.task_prompts(chat.pairs(harmful=False)[::2], seed=21),
                          split("selection", 90, seed=22)),
            "evaluation": (shipped["harmful"], shipped["benign"], split("evaluation", 120, seed=3))}

    def rates(part, hooks=(), vector=None):
        harmful, benign, capability = sets[part]
        helped = chat.score_responses(benign, generate(model, benign, fwd_hooks=hooks))["help"]
        correct = chat.score_responses(capability, generate(model, capability, fwd_hooks=hooks))["correct"]
        return (steering.refusal_score(model, harmful, chat.REFUSAL_TOKEN, hooks), float(helped.double().mean()),
                float(correct.double().mean()))

    def protected(k):
        vector = steering.protect_subspace(selection.direction, keep, k, center=benign_mean)
        return vector, steering.write_point_means(model, benign_select.tokens, benign_select.last, vector)

    base = rates("selection")
    rows = []
    for k in range(9):
        refusal, helped, correct = rates("selection", steering.directional_ablation_hooks(model, *protected(k)))
        rows.append({"k": k, "refusal": refusal, "help_drop": base[1] - helped, "capability_drop": base[2] - correct})
    k = steering.select_protection(rows)
    assert k is not None and k > 0, rows  # k=0, the direction itself, costs capability
    vector, offsets = protected(k)
    clean = rates("evaluation")
    after = rates("evaluation", steering.directional_ablation_hooks(model, vector, offsets))
    assert clean[0] >= 0.95 and after[0] <= 0.05, (k, clean, after)
    assert clean[1] - after[1] <= 0.02 and clean[2] - after[2] <= 0.02, (k, clean, after, rows)
    # the protected edit is still an exact weight edit, and the model still knows harm
    held_out = shipped["held_out"]
    tokens = held_out.tokens[:, :int(held_out.last.max()) + 1]
    edited = steering.orthogonalize_weights(model, vector, offsets)
    hooked = model.run_with_hooks(tokens, fwd_hooks=steering.directional_ablation_hooks(model, vector, offsets))
    assert (edited(tokens) - hooked).abs().max().item() <= 1e-4
    acts = {which: probes.collect_activations(edited, p.tokens, name, p.last, progress=False)[name]
            for which, p in (("train", train), ("test", held_out))}
    probe = probes.train_linear_probe(acts["train"], train.harmful)
    assert probes.probe_auroc(probe, acts["test"], held_out.harmful) >= 0.95


def test_shipped_random_directions_leave_refusal_alone(shipped):
    model, chat, selection = shipped["model"], shipped["chat"], shipped["selection"]
    harmful, benign, layer = shipped["harmful"], shipped["benign"], selection.best_layer
    base_harmful = steering.refusal_score(model, harmful, chat.REFUSAL_TOKEN)
    base_benign = steering.refusal_score(model, benign, chat.REFUSAL_TOKEN)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        random = torch.randn(model.cfg.d_model, generator=generator)
        random *= selection.direction.norm() / random.norm()
        offsets = steering.write_point_means(model, shipped["benign_select"].tokens, shipped["benign_select"].last,
                                             random)
        for hooks in (steering.directional_ablation_hooks(model, random),
                      steering.directional_ablation_hooks(model, random, offsets)):
            assert abs(steering.refusal_score(model, harmful, chat.REFUSAL_TOKEN, hooks) - base_harmful) <= 0.05
        added = steering.activation_addition_hooks(model, random, layer, 1.0)
        assert abs(steering.refusal_score(model, benign, chat.REFUSAL_TOKEN, added) - base_benign) <= 0.05


def test_shipped_refusal_direction_added_makes_benign_requests_refused(shipped):
    model, chat, selection = shipped["model"], shipped["chat"], shipped["selection"]
    rates = [steering.refusal_score(model, shipped["benign"], chat.REFUSAL_TOKEN,
                                    steering.activation_addition_hooks(model, selection.direction,
                                                                       selection.best_layer, coeff))
             for coeff in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)]
    assert rates[0] <= 0.05 and max(rates) >= 0.90 and rates[4] >= 0.90, rates
    assert all(b >= a for a, b in zip(rates, rates[1:])), f"refusal should rise with the coefficient: {rates}"


def test_shipped_weight_orthogonalisation_equals_hooks(shipped):
    model, selection, prompts = shipped["model"], shipped["selection"], shipped["held_out"]
    tokens = prompts.tokens[:, :int(prompts.last.max()) + 1]
    for offsets in (None, selection.offsets[selection.best_layer]):
        edited = steering.orthogonalize_weights(model, selection.direction, offsets)
        hooked = model.run_with_hooks(tokens, fwd_hooks=steering.directional_ablation_hooks(
            model, selection.direction, offsets))
        assert (edited(tokens) - hooked).abs().max().item() <= 1e-4


def test_shipped_model_still_knows_harm_after_ablation(shipped):
    from interplab import probes

    model, selection, train, held_out = shipped["model"], shipped["selection"], shipped["train"], shipped["held_out"]
    edited = steering.orthogonalize_weights(model, selection.direction, selection.offsets[selection.best_layer])
    name = steering.resid_hook(model, max(selection.best_layer, 1))
    acts_train = probes.collect_activations(edited, train.tokens, name, train.last, progress=False)[name]
    acts_test = probes.collect_activations(edited, held_out.tokens, name, held_out.last, progress=False)[name]
    probe = probes.train_linear_probe(acts_train, train.harmful)
    assert probes.probe_auroc(probe, acts_test, held_out.harmful) >= 0.95
    # the model no longer refuses them
    assert steering.refusal_score(edited, shipped["harmful"], shipped["chat"].REFUSAL_TOKEN) <= 0.05


def test_shipped_deception_monitor_generalises_to_held_out_phrasings(shipped):
    from interplab import probes

    model, chat = shipped["model"], shipped["chat"]
    layer = model.cfg.n_layers - 1  # the `is` position at layer 3 of 4: the feasibility study's site

    def colour_set(objects, phrasings, seed, repeats):
        return chat.ChatPrompts.concat([chat.colour_prompts(objects, instruction=p, seed=seed + i, repeats=repeats)
                                        for i, p in enumerate(phrasings)])

    def features(prompts):
        tokens, _ = prompts.with_responses([f"the {o} is" for o in prompts.objects])
        name = steering.resid_hook(model, layer)
        return probes.collect_activations(model, tokens, name, prompts.last + 3, progress=False)[name]

    honest = [None] + list(chat.HONEST_PHRASINGS)
    train = chat.ChatPrompts.concat([colour_set(chat.LIE_TRAIN_OBJECTS, chat.LIE_PHRASINGS, 10, 3),
                                     colour_set(chat.BENIGN_OBJECTS, honest, 20, 2)])
    test = chat.ChatPrompts.concat([colour_set(chat.BENIGN_OBJECTS, chat.LIE_HELD_OUT_PHRASINGS, 40, 3),
                                    colour_set(chat.BENIGN_OBJECTS, [None] + list(chat.HONEST_HELD_OUT_PHRASINGS),
                                               50, 3)])
    probe = probes.train_linear_probe(features(train), train.lie_instructed)
    scores = probe.scores(features(test))
    assert test.held_out_phrasing[test.lie_instructed].all()
    assert probes.auroc(scores, test.lie_instructed) >= 0.95
    assert steering.recall_at_fpr(scores, test.lie_instructed, 0.01) >= 0.90
