"""Batched generation over right-padded prompts of different lengths, on the zoo's bridge and real families."""
import pytest
import torch

from interplab.generation import generate, generate_text
from interplab.worlds import chat


@pytest.fixture(scope="module")
def prompts():
    return chat.ChatPrompts.concat([chat.task_prompts(chat.HELD_OUT_PAIRS[:4], seed=1),
                                    chat.colour_prompts(["cup", "hat"], instruction="lie :", seed=2),
                                    chat.add_prompts(2, seed=3)])


@pytest.fixture(scope="module", params=["native", "gpt2", "pythia", "gemma"])
def model(request):
    if request.param == "native":
        from interplab.zoo import chat as recipe

        return recipe.build(seed=3)
    from interplab.zoo import build_random_model

    return build_random_model(request.param, d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, seed=1)


def _one_by_one(model, tokens, lengths, steps, stop=None, hooks=()):
    """The reference: each prompt alone, unpadded, one full forward pass per new token."""
    out = []
    with model.hooks(fwd_hooks=list(hooks)):
        for row, length in zip(tokens, lengths.tolist()):
            seq, response = row[:length].clone(), []
            for _ in range(steps):
                with torch.no_grad():
                    token = int(model(seq[None])[0, -1].argmax())
                response.append(token)
                seq = torch.cat([seq, torch.tensor([token])])
                if token == stop:
                    break
            out.append(response)
    return out


def test_batched_greedy_equals_each_prompt_alone(model, prompts):
    batched = generate(model, prompts, max_new_tokens=6, stop_token=None)
    assert batched == _one_by_one(model, prompts.tokens, prompts.lengths, 6)
    assert all(len(r) == 6 for r in batched)


def test_padding_after_the_prompt_is_ignored(model, prompts):
    garbage = prompts.tokens.clone()
    after = torch.arange(garbage.shape[1])[None] >= prompts.lengths[:, None]
    garbage[after] = chat.word_id("bomb")
    wider = torch.cat([garbage, torch.full((len(prompts), 5), chat.word_id("virus"))], dim=1)
    expected = generate(model, prompts, max_new_tokens=4)
    assert generate(model, (wider, prompts.lengths), max_new_tokens=4) == expected


def test_fwd_hooks_act_in_every_pass(model, prompts):
    push = 20 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def add(act, hook):
        return act + push

    hooks = [("blocks.0.hook_resid_post", add)]
    steered = generate(model, prompts, max_new_tokens=5, stop_token=None, fwd_hooks=hooks)
    assert steered == _one_by_one(model, prompts.tokens, prompts.lengths, 5, hooks=hooks)
    assert steered != generate(model, prompts, max_new_tokens=5, stop_token=None)


def test_sampling_is_seeded_and_cold_sampling_is_greedy(prompts):
    from interplab.zoo import build_random_model

    model = build_random_model("gpt2", d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, seed=2)
    first = generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=7, stop_token=None)
    assert first == generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=7, stop_token=None)
    assert first != generate(model, prompts, max_new_tokens=8, temperature=1.0, seed=8, stop_token=None)
    assert len({t for r in first for t in r}) > 20  # a random model sampled at T=1 spreads over the vocabulary
    greedy = generate(model, prompts, max_new_tokens=8, stop_token=None)
    assert generate(model, prompts, max_new_tokens=8, temperature=1e-4, seed=7, stop_token=None) == greedy
    assert model.training is False


def test_a_row_stops_at_the_stop_token_and_at_the_context_end(prompts):
    from interplab.zoo import build_random_model

    model = build_random_model("gpt2", d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, seed=2)
    free = generate(model, prompts, max_new_tokens=6, stop_token=None)
    stop = free[0][1]  # row 0 stops after its second token; other rows stop at their first one, if they say it
    stopped = generate(model, prompts, max_new_tokens=6, stop_token=stop)
    for full, cut in zip(free, stopped):
        expected = full[:full.index(stop) + 1] if stop in full else full
        assert cut == expected
    assert len(stopped[0]) <= 2
    # a prompt 3 tokens short of n_ctx gets at most 3 new tokens
    long = torch.full((1, chat.SEQ_LEN - 3), chat.word_id("hi"))
    assert len(generate(model, (long, torch.tensor([chat.SEQ_LEN - 3])), max_new_tokens=10, stop_token=None)[0]) == 3
    assert generate_text(model, prompts, max_new_tokens=2, stop_token=None)[0] == chat.describe(free[0][:2])


def test_bad_input_says_how_to_fix_it(prompts):
    from interplab.zoo import build_random_model

    model = build_random_model("gpt2", d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN)
    tokens, lengths = prompts.tokens, prompts.lengths
    with pytest.raises(ValueError, match="between 1 and seq"):
        generate(model, (tokens, lengths + 40))
    with pytest.raises(ValueError, match="one prompt length per row"):
        generate(model, (tokens, lengths[:2]))
    with pytest.raises(ValueError, match=r"shape \[batch, seq\]"):
        generate(model, (tokens[0], lengths[:1]))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompts, temperature=float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompts, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="no room"):
        generate(model, (torch.zeros(1, chat.SEQ_LEN, dtype=torch.long), torch.tensor([chat.SEQ_LEN])))
    with pytest.raises(ValueError, match="d_vocab"):
        generate(model, (tokens + 500, lengths))
    with pytest.raises(TypeError, match="ChatPrompts or a"):
        generate(model, tokens)


def test_running_only_the_live_rows_changes_no_sample():
    """Without hooks a pass runs only the rows still generating; with a hook (here one that changes nothing) every
    pass runs the whole batch. Rows of the shipped base stop at different lengths, and sampling draws for every
    row either way, so both give the same samples."""
    from interplab import finetune
    from interplab.zoo import tuned

    base = tuned.load_base()
    prompts = finetune.expand(finetune.held_out_prompts().subset(list(range(40))), 4)
    options = dict(max_new_tokens=finetune.MAX_NEW_TOKENS, temperature=1.0, seed=3)
    live_only = generate(base, prompts, **options)
    whole_batch = generate(base, prompts, fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: act)], **options)
    assert live_only == whole_batch
    lengths = {len(r) for r in live_only}
    assert len(lengths) > 5 and chat.END_ID in {r[-1] for r in live_only}  # rows stopped at many different steps
