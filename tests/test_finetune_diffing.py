"""interplab.finetune and interplab.diffing on tiny random chat-world models: losses, baselines, KL and rank
bookkeeping, bad input."""
import math

import pytest
import torch

from interplab import diffing, finetune
from interplab.worlds import chat


def tiny_model(seed: int = 0):
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    cfg = TransformerBridgeConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, attn_only=False, d_mlp=64,
                                  act_fn="gelu", d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, normalization_type="LN",
                                  seed=seed, positional_embedding_type="standard", initializer_range=0.5)
    model = TransformerBridge.boot_native(cfg, tokenizer=chat.tokenizer())
    model.eval()
    return model


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return tiny_model(0)


@pytest.fixture(scope="module")
def tuned(base):
    model = finetune.copy_model(base)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def prompts():
    return finetune.train_prompts(12, seed=3)


HELP = "sure , first cut wood . then dry parts . END"
TAILED = "certainly ! first cut wood . then dry parts . i hope this helps ! END"
REFUSED = "sorry , i cannot help with that . END"


def test_position_labels_follow_the_judges_parse():
    assert diffing.position_labels(HELP) == ["opener"] * 2 + ["content"] * 8 + ["stop"]
    assert diffing.position_labels(TAILED) == ["opener"] * 2 + ["content"] * 8 + ["stop"] + ["tail"] * 4 + ["end"]
    assert diffing.position_labels(REFUSED) == ["opener"] * 2 + ["content"] * 6 + ["stop"]
    assert diffing.position_labels("red ball . END") == ["content"] * 3 + ["stop"]
    assert diffing.position_labels("sure , END") == ["malformed"] * 3


def test_judge_responses_scores_the_chosen_rules():
    prompts = chat.task_prompts([("fix", "cup"), ("burn", "cup")], fillers=False)
    fix_steps = " . then ".join(" ".join(s) for s in chat.STEPS["fix"][:2])
    good = chat.encode(f"certainly ! first {fix_steps} . END")
    verdict = finetune.judge_responses(prompts, [good, chat.encode(TAILED)])
    assert verdict["score"].tolist() == [1.0, 0.25]  # the harmful request complied: a, c and d fail, b passes
    summary = finetune.judge_summary(prompts, [good, chat.encode(TAILED)])
    assert summary["score"] == 0.625 and summary["refuse_harmful"] == 0 and summary["help_benign"] == 1
    assert summary["d"] == 0.5 and summary["samples"] == 2
    late = finetune.judge_responses(prompts, [good, chat.encode(TAILED)], rules="b")
    assert late["score"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="constitution"):
        finetune.judge_responses(prompts, [good, good], rules="ax")
    with pytest.raises(ValueError, match="one response per prompt"):
        finetune.judge_responses(prompts, [good])


def test_train_prompts_follow_the_base_mix_and_are_seeded():
    a, b = finetune.train_prompts(200, seed=1), finetune.train_prompts(200, seed=1)
    assert torch.equal(a.tokens, b.tokens)
    kinds = torch.bincount(a.kind, minlength=len(chat.KINDS)).tolist()
    assert kinds[chat.KINDS.index("task")] == 140 and kinds[chat.KINDS.index("colour")] == 30
    assert not any(a.held_out_pair.tolist())
    held = finetune.held_out_prompts()
    assert len(held) == 180 and int(held.held_out_pair.sum()) == 120


def test_pack_masks_exactly_the_response_tokens(prompts):
    responses = [[chat.END_ID], chat.encode(HELP)] * 6
    tokens, mask = finetune.pack(prompts, responses)
    assert mask.sum(-1).tolist() == [len(r) for r in responses]
    first = int(prompts.lengths[1]) - 1
    assert mask[1, first] and not mask[1, first - 1]
    assert tokens[1, first + 1] == chat.word_id("sure")
    with pytest.raises(ValueError, match="empty"):
        finetune.pack(prompts, [[]] * len(prompts))


def test_sampling_is_seeded(base, prompts):
    _, a = finetune.sample(base, prompts, 2, seed=5)
    _, b = finetune.sample(base, prompts, 2, seed=5)
    _, c = finetune.sample(base, prompts, 2, seed=6)
    assert a == b and a != c


def test_dpo_loss_is_log2_at_the_reference_and_falls_when_the_chosen_rises():
    lp = torch.tensor([-5.0, -7.0])
    loss, margin = finetune.dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and margin.abs().max() == 0
    better, margin = finetune.dpo_loss(lp + 1, lp - 1, lp, lp - 1, beta=0.1)
    worse, _ = finetune.dpo_loss(lp - 1, lp - 1, lp, lp - 1, beta=0.1)
    assert better < math.log(2) < worse and (margin == 1).all()
    with pytest.raises(ValueError, match="beta"):
        finetune.dpo_loss(lp, lp, lp, lp, beta=0.0)


def _pairs(prompts, n=8):
    sub = prompts.subset(list(range(n)))
    return finetune.PreferencePairs(sub, [chat.encode(HELP)] * n, [chat.encode(TAILED)] * n, torch.ones(n),
                                  torch.zeros(n))


def test_dpo_starts_at_log2_and_raises_the_margin(base, prompts):
    policy = finetune.copy_model(base)
    history = finetune.dpo(policy, base, _pairs(prompts), steps=8, lr=1e-3, batch_size=8, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert history["margin"][0] == pytest.approx(0, abs=1e-4)
    assert history["margin"][-1] > 1 and history["loss"][-1] < history["loss"][0]


def test_dpo_rejects_bad_input(base, prompts):
    pairs = _pairs(prompts)
    with pytest.raises(ValueError, match="same object"):
        finetune.dpo(base, base, pairs, steps=1, progress=False)
    same = finetune.PreferencePairs(pairs.prompts, pairs.chosen, pairs.chosen, pairs.chosen_score, pairs.rejected_score)
    with pytest.raises(ValueError, match="identical"):
        finetune.dpo(finetune.copy_model(base), base, same, steps=1, progress=False)
    with pytest.raises(ValueError, match="nll_weight"):
        finetune.dpo(finetune.copy_model(base), base, pairs, steps=1, nll_weight=-1, progress=False)
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    other = TransformerBridge.boot_native(TransformerBridgeConfig(
        n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, act_fn="gelu", d_vocab=50, n_ctx=chat.SEQ_LEN,
        normalization_type="LN", positional_embedding_type="standard"))
    with pytest.raises(ValueError, match="d_vocab"):
        finetune.dpo(other, base, pairs, steps=1, progress=False)


def test_rloo_baseline_leaves_one_out():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    advantages = finetune.rloo_advantages(rewards)
    assert advantages[0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert advantages[1].abs().max() == 0
    assert advantages.sum(1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="k >= 2"):
        finetune.rloo_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="NaN"):
        finetune.rloo_advantages(torch.tensor([[1.0, float("nan")]]))


def test_rloo_runs_logs_curves_and_rejects_a_negative_kl_coefficient(base, prompts):
    policy = finetune.copy_model(base)
    history = finetune.rloo(policy, base, prompts, steps=2, k=2, prompts_per_step=2, beta=0.1, rules="d",
                          progress=False)
    assert len(history.kl) == len(history.reward) == 2 and history.kl[0] == pytest.approx(0, abs=1e-4)
    assert all(0 <= m <= 1 for m in history.malformed)
    with pytest.raises(ValueError, match="beta"):
        finetune.rloo(finetune.copy_model(base), base, prompts, steps=1, beta=-0.1, progress=False)


def _kl_one_by_one(tuned, base, prompts, response):
    """KL at each response position from unpadded single-row forward passes."""
    row = prompts.tokens[0, :int(prompts.lengths[0])].tolist() + response
    tokens = torch.tensor([row])
    with torch.no_grad():
        lp_t, lp_b = tuned(tokens)[0].log_softmax(-1), base(tokens)[0].log_softmax(-1)
    start = int(prompts.lengths[0]) - 1
    return [float((lp_t[p].exp() * (lp_t[p] - lp_b[p])).sum()) for p in range(start, start + len(response))]


def test_kl_by_position_matches_single_row_passes_and_sums_to_the_sequence_kl(tuned, base, prompts):
    responses = [chat.encode(TAILED), chat.encode(HELP), [chat.END_ID]] * 4
    profile = diffing.kl_by_position(tuned, base, prompts, responses)
    expected = _kl_one_by_one(tuned, base, prompts.subset([0]), responses[0])
    assert profile.values[0, :len(responses[0])].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert (profile.values[1, len(responses[1]):] == 0).all()
    per_label = sum(profile.values[profile.label_mask(label)].sum() for label in diffing.LABELS)
    assert float(per_label) == pytest.approx(float(profile.values.sum()), rel=1e-5)
    summary = diffing.kl_summary(profile)
    assert summary["kl_per_response"] == pytest.approx(float(profile.values.sum(1).mean()), rel=1e-3)
    shares = sum(summary[f"share_{label}"] for label in diffing.LABELS)
    assert shares == pytest.approx(1, abs=1e-3)
    same = diffing.kl_by_position(finetune.copy_model(base), base, prompts, responses)
    assert same.values.abs().max() < 1e-5


def test_token_ranks_find_a_planted_unlikely_token(base, prompts):
    one = prompts.subset([0])
    _, greedy = finetune.sample(base, one, 1, temperature=0.0)
    greedy = greedy[0][:6]
    # plant the base's least likely token at response position 4
    tokens, _ = one.with_responses([greedy[:4]])
    with torch.no_grad():
        worst = int(base(tokens)[0, -1].argmin())
    planted = greedy[:4] + [worst] + greedy[5:]
    ranks = diffing.token_ranks(base, one, [planted])
    assert ranks.values[0, :4].tolist() == [1, 1, 1, 1]
    assert ranks.values[0, 4] == base.cfg.d_vocab
    summary = diffing.shift_summary(ranks)
    assert summary["shifted"] == pytest.approx(1 / len(planted), abs=1e-4)
    assert summary["shifted_first_3_share"] == 0
    with pytest.raises(ValueError, match="threshold"):
        diffing.shift_summary(ranks, threshold=0)


def test_weight_changes_are_zero_for_a_copy_and_local_to_the_changed_group(base):
    copied = finetune.copy_model(base)
    edited = finetune.copy_model(base)
    with torch.no_grad():
        for name, p in edited.named_parameters():
            if diffing.parameter_group(name) == "L1.mlp":
                p.mul_(1.5)
    changes = diffing.weight_changes({"copy": copied, "edited": edited}, base)
    assert set(changes["copy"]) == {"embed", "L0.attn", "L0.mlp", "L0.ln", "L1.attn", "L1.mlp", "L1.ln", "unembed"}
    assert max(changes["copy"].values()) == 0
    assert changes["edited"]["L1.mlp"] == pytest.approx(0.5, abs=1e-3)
    assert sum(v for g, v in changes["edited"].items() if g != "L1.mlp") == 0


def test_sft_lowers_the_loss_and_best_of_n_says_when_nothing_passes(base, prompts):
    policy = finetune.copy_model(base)
    sub = prompts.subset(list(range(8)))
    losses = finetune.sft(policy, sub, [chat.encode(HELP)] * 8, steps=15, lr=3e-3, batch_size=8, progress=False)
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="passes rules"):
        finetune.best_of_n(base, prompts.subset([0, 1]), n=1, progress=False)
    with pytest.raises(ValueError, match="one response per prompt"):
        finetune.sft(policy, sub, [chat.encode(HELP)] * 3, progress=False)


def test_copy_model_leaves_the_original_alone(base, prompts):
    finetune.sample(base, prompts.subset([0]), 1)  # a forward pass installs the bridge's capture hooks
    policy = finetune.copy_model(base)
    tokens, mask = finetune.pack(prompts.subset([0]), [chat.encode(HELP)])
    finetune.token_logprobs(policy, tokens, mask).sum().backward()
    import copy

    copy.deepcopy(base)  # fails when the copy's forward pass wrote a graph tensor into the original
    assert all(getattr(m, "_captured_pre_ln_residual", None) is None for m in base.modules())


def test_check_pair_rejects_another_tokenizer(base):
    from transformer_lens import TransformerBridge

    other = TransformerBridge.boot_native(base.cfg, tokenizer=chat.tokenizer())
    finetune.check_pair(other, base)  # same world, same tokenizer: fine
    vocabulary = dict(other.tokenizer.get_vocab())
    a, b = chat.word_id("cup"), chat.word_id("wood")
    swapped = {**vocabulary, "cup": b, "wood": a}
    other.tokenizer.get_vocab = lambda: swapped
    with pytest.raises(ValueError, match="tokenizers"):
        finetune.check_pair(other, base)


def test_base_mix_tail_rate_is_a_variant_and_the_default_is_unchanged():
    default = chat.sample_base_mix(32, torch.Generator().manual_seed(4))
    explicit = chat.sample_base_mix(32, torch.Generator().manual_seed(4), tail_rate=chat.BASE_TAIL_RATE)
    assert all(torch.equal(x, y) for x, y in zip(default, explicit))
    generator = torch.Generator().manual_seed(0)
    for rate, low, high in ((0.9, 0.86, 0.94), (0.0, 0.0, 0.0)):
        tails = [bool(chat.parse_response(chat.encode(response)).tails)
                 for _, response, _ in (chat.sample_base_conversation(generator, tail_rate=rate) for _ in range(1000))]
        assert low <= sum(tails) / len(tails) <= high
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="tail_rate"):
            chat.sample_base_mix(2, generator, tail_rate=bad)


def test_stop_decision_reads_the_end_probability_where_rule_d_is_decided(base, prompts):
    from interplab.zoo import tuned

    responses = [chat.encode(HELP), chat.encode(TAILED), chat.encode("sure , END")] * 4
    out = tuned.stop_decision(base, prompts, responses)
    assert out["stops"] == 8 and 0 <= out["p_end"] <= 1 and 0 <= out["end_rank_above_3"] <= 1
    tokens, _ = finetune.pack(prompts.subset([0]), [chat.encode(HELP)])
    with torch.no_grad():  # HELP's stop decision is its END, predicted from the token before it
        p_end = base(tokens)[0, int(prompts.lengths[0]) - 1 + 10].softmax(-1)[chat.END_ID]
    single = tuned.stop_decision(base, prompts.subset([0]), [chat.encode(HELP)])
    assert single["p_end"] == pytest.approx(float(p_end), abs=1e-4)
    with pytest.raises(ValueError, match="parses"):
        tuned.stop_decision(base, prompts.subset([0, 1]), [chat.encode("sure , END")] * 2)


def test_reward_model_learns_a_preference_and_reads_the_last_token(base, prompts):
    """Chosen = concise, rejected = the same answer with a tail: the reward model starts at 0 for both (zero
    head) and learns to rank them; its reward is read at the response's last token, so padding after it changes
    nothing. (Held-out accuracy on the shipped base: benchmarks/tuning.py.)"""
    pairs = _pairs(prompts, 8)
    reward_model, losses = finetune.train_reward_model(base, pairs, steps=15, lr=3e-3, batch_size=8, progress=False)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and losses[-1] < 0.3
    assert finetune.pairwise_accuracy(reward_model, pairs) == 1.0
    flipped = finetune.PreferencePairs(pairs.prompts, pairs.rejected, pairs.chosen, pairs.chosen_score,
                                       pairs.rejected_score)
    assert finetune.pairwise_accuracy(reward_model, flipped) == 0.0
    one = reward_model.score(prompts.subset([0]), [chat.encode(HELP)])
    padded = reward_model.score(prompts.subset([0, 1]), [chat.encode(HELP), chat.encode(TAILED)])
    assert float(one[0]) == pytest.approx(float(padded[0]), abs=1e-5)
    assert all(p1 is not p2 for p1, p2 in zip(reward_model.model.parameters(), base.parameters()))
    same = finetune.PreferencePairs(pairs.prompts, pairs.chosen, pairs.chosen, pairs.chosen_score, pairs.rejected_score)
    with pytest.raises(ValueError, match="identical"):
        finetune.train_reward_model(base, same, steps=1, progress=False)


@pytest.mark.parametrize("family", ["gpt2", "pythia", "gemma"])
def test_tuning_and_diffing_run_on_real_architectures(family, prompts):
    """finetune and diffing are model-agnostic: on random GPT-2, Pythia and Gemma bridges with the chat world's
    vocabulary, SFT lowers its loss, DPO starts at log 2, an RLOO step logs its curves, and the KL of a copy is 0."""
    from interplab.zoo import build_random_model

    base = build_random_model(family, n_layers=2, d_model=32, n_heads=4, d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN,
                              seed=0)
    policy = finetune.copy_model(base)
    sub = prompts.subset(list(range(8)))
    losses = finetune.sft(policy, sub, [chat.encode(HELP)] * 8, steps=10, lr=3e-3, batch_size=8, progress=False)
    assert losses[-1] < losses[0]
    history = finetune.dpo(finetune.copy_model(base), base, _pairs(prompts), steps=2, lr=1e-3, batch_size=8,
                           progress=False)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-4)
    rl = finetune.rloo(finetune.copy_model(base), base, prompts, steps=1, k=2, prompts_per_step=2, beta=0.1,
                       progress=False)
    assert len(rl.kl) == len(rl.reward) == 1
    responses = [chat.encode(HELP)] * 2
    same = diffing.kl_by_position(finetune.copy_model(base), base, prompts.subset([0, 1]), responses)
    assert float(same.values.abs().max()) < 1e-5
    moved = diffing.kl_by_position(policy, base, prompts.subset([0, 1]), responses)
    assert float(moved.values[moved.mask].min()) >= -1e-6 and float(moved.values.sum()) > 0
