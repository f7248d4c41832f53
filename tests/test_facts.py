"""The facts world's ground truth, and the shipped facts-4l model: recall, tracing peak, unknowns, edits."""
import pytest
import torch

from interplab.worlds import facts


def test_world_is_fixed_and_its_subject_sets_are_disjoint():
    known, unknown, never = map(set, (facts.KNOWN_SUBJECTS, facts.UNKNOWN_SUBJECTS, facts.NEVER_SEEN_SUBJECTS))
    assert (len(known), len(unknown), len(never)) == (facts.N_KNOWN, facts.N_UNKNOWN, facts.N_NEVER_SEEN)
    assert not known & unknown and not known & never and not unknown & never
    for name in known | unknown | never:
        a, b = name.split()
        assert a != b and a in facts.SYLLABLES and b in facts.SYLLABLES
    assert facts.FACTS.shape == (100, 8) and facts.FACTS.min() >= 0 and facts.FACTS.max() < 10
    assert facts.KNOWN_SUBJECTS[0] == "so mo" and facts.obj(0, 0) in facts.OBJECTS[0]  # seeded, not drawn anew
    assert facts.answer_id(facts.UNKNOWN_SUBJECTS[0], 3) == facts.UNKNOWN_ID
    assert facts.answer_id(facts.KNOWN_SUBJECTS[0], 0) == facts.word_id(facts.obj(0, 0))
    with pytest.raises(KeyError, match="not a subject"):
        facts.answer_id("zz yy", 0)


def test_held_out_templates_are_two_frames_each_trained_elsewhere():
    for r in range(len(facts.RELATIONS)):
        held, train = facts.held_out_templates(r), facts.train_templates(r)
        assert len(held) == 4 and len(train) == 10 and not set(held) & set(train)
        for frame, _ in held:  # every held-out frame is trained with some other relation
            assert any(frame in {f for f, _ in facts.train_templates(q)} for q in range(8) if q != r)


def test_training_batches_hold_appositions_templates_and_unknowns():
    tokens, mask = facts.sample_training(2000, torch.Generator().manual_seed(0))
    assert tokens.shape == (2000, facts.SEQ_LEN) and (mask.sum(1) == 1).all() and (tokens[:, 0] == facts.BOS_ID).all()
    target_pos = mask.float().argmax(1)
    apposition = target_pos == 2
    assert 0.45 < apposition.float().mean() < 0.55
    answers = tokens[torch.arange(2000), target_pos + 1]
    assert 0.3 < (answers == facts.UNKNOWN_ID).float().mean() < 0.45  # 60 of 160 training subjects
    never = {tuple(facts.word_id(w) for w in name.split()) for name in facts.NEVER_SEEN_SUBJECTS}
    for row, pos, answer in zip(tokens[:300], target_pos[:300], answers[:300]):
        words = facts.describe(row).split()
        assert words[-1] == "."
        text = " ".join(words[1:])
        # never-seen names never occur in training
        syllables = [t for t in row.tolist() if facts.word_id("ka") <= t < facts.word_id("ka") + 20]
        assert tuple(syllables) not in never, text
        if int(pos) != 2:  # a template: its relation word is in the question, its held-out frames never
            relation = next(r for r, ws in enumerate(facts.RELATION_WORDS) if set(ws) & set(words))
            assert int(answer) in facts.OBJECT_IDS[relation].tolist() + [facts.UNKNOWN_ID]
            held = {facts.prompt_text("X Y", relation, t) for t in facts.held_out_templates(relation)}
            subject = facts.describe(torch.tensor(syllables))
            question = " ".join(words[1:-2])
            assert question.replace(subject, "X Y", 1) not in held


def test_prompts_know_where_the_subject_and_answer_are():
    prompts = facts.sample_prompts(40, seed=3)
    buckets = prompts.position_buckets()
    for i in range(40):
        words = facts.describe(prompts.tokens[i]).split()
        first, last = int(prompts.subject_first[i]), int(prompts.subject_last[i])
        assert " ".join(words[first:last + 1]) == prompts.subjects[i]
        assert int(prompts.last[i]) == len(words) - 1
        assert buckets[i, first] == 0 and buckets[i, last] == 1 and buckets[i, prompts.last[i]] == 4
        assert prompts.subject_mask[i].sum() == 2
    tok = facts.tokenizer()
    assert tok(facts.prompt_text("ka mo", 0, (0, 0)))["input_ids"] == facts.encode("ka mo 's city is")[1:]
    assert len(tok) == facts.D_VOCAB


# ---------------------------------------------------------------------------------------------
# the shipped facts-4l model: every claim of its card re-measured from the weights
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    from interplab.zoo import load_model

    return load_model("facts-4l")


@pytest.fixture(scope="module")
def card():
    from interplab.zoo import model_card

    return model_card("facts-4l")


def _accuracy(model, prompts, expected):
    from interplab.zoo import facts as recipe

    return (recipe.predictions(model, prompts) == expected).float().mean().item()


def test_shipped_model_recalls_facts_and_says_unknown(model, card):
    """A seeded sample of each question set (the card's numbers are over all of them)."""
    m = card["metrics"]
    known = facts.sample_prompts(800, seed=1)
    held = facts.sample_prompts(400, seed=2, held_out=True)
    unknown = facts.sample_prompts(400, seed=3, subjects=facts.UNKNOWN_SUBJECTS)
    never = facts.sample_prompts(400, seed=4, subjects=facts.NEVER_SEEN_SUBJECTS)
    recall, paraphrase = _accuracy(model, known, known.answer), _accuracy(model, held, held.answer)
    assert recall >= card["thresholds"]["recall"] and recall == pytest.approx(m["recall"], abs=0.02)
    assert paraphrase >= card["thresholds"]["held_out_paraphrase_accuracy"]
    assert paraphrase == pytest.approx(m["held_out_paraphrase_accuracy"], abs=0.03)
    assert _accuracy(model, unknown, unknown.answer) == pytest.approx(m["unknown_subjects_answered_unknown"], abs=0.03)
    assert _accuracy(model, never, never.answer) == pytest.approx(m["never_seen_answered_unknown"], abs=0.06)


def test_tracing_peak_is_at_the_last_subject_token_below_the_top_layer(model, card):
    """The card's MLP map, re-measured exactly (same prompts, noise and seed)."""
    from interplab.zoo import facts as recipe

    measured = recipe.tracing_map(model, components=("mlp",))
    layer, value = recipe.subject_mlp_peak(measured)
    assert layer == card["metrics"]["subject_mlp_peak_layer"] and layer < model.cfg.n_layers - 1
    assert value >= recipe.MIN_SUBJECT_MLP_PEAK
    assert value == pytest.approx(card["metrics"]["subject_mlp_peak"], abs=1e-3)
    torch.testing.assert_close(torch.tensor(measured["mlp"]), torch.tensor(card["metrics"]["tracing"]["mlp"]),
                               atol=1e-3, rtol=0)
    # the subject's MLP beats every MLP at the final token, where a lookup would otherwise happen
    assert value > card["metrics"]["last_token_mlp_max"]


@pytest.mark.slow
def test_rome_edits_a_fact_and_leaves_others_alone(model, card):
    """A few edits here; the card's 50 (and benchmarks/knowledge.py) give the averages."""
    from interplab.zoo import facts as recipe

    layer = recipe.edit_layer(card)
    cases = recipe.edit_cases(3)
    covariance = recipe.key_covariance(model, layer, sequences=1000)
    rome = recipe.run_edits(model, cases, layer, "rome", covariance=covariance, progress=False)
    finetune = recipe.run_edits(model, cases, layer, "finetune", progress=False)
    assert rome["efficacy"] >= 0.66 and rome["other_subjects_unchanged"] >= 0.95
    assert finetune["efficacy"] == 1.0
    assert rome["other_subjects_unchanged"] >= finetune["other_subjects_unchanged"]
    edits = card["edits"]
    assert edits["rome"]["edits"] >= 50 and edits["layer"] == layer
    assert edits["rome"]["other_subjects_unchanged"] > edits["finetune"]["other_subjects_unchanged"]
    assert edits["rome"]["same_subject_unchanged"] > edits["finetune"]["same_subject_unchanged"]
    # the course's targets for 50 edits (benchmarks/knowledge.py re-measures them); same subject has the
    # least room (0.872 measured): a person's facts share one key
    assert edits["rome"]["efficacy"] >= 0.95 and edits["rome"]["paraphrase"] >= 0.90
    assert edits["rome"]["other_subjects_unchanged"] >= 0.98 and edits["rome"]["same_subject_unchanged"] >= 0.85
    assert edits["rome_options"] == recipe.rome_options()  # the card's numbers are the library defaults' numbers


def test_card_markdown_is_current_and_states_reproducibility(card):
    from interplab.zoo import facts as recipe
    from interplab.zoo import model_dir

    markdown = (model_dir("facts-4l") / "MODEL_CARD.md").read_text()
    assert markdown == recipe.card_markdown(card), \
        "MODEL_CARD.md is stale; regenerate it with `python -m interplab.zoo card facts-4l`"
    assert "## Reproducibility" in markdown and "python -m interplab.zoo train facts-4l" in markdown


def test_edit_of_a_subject_the_tokenizer_splits_differently_says_how_to_fix_it(model):
    from interplab import knowledge

    with pytest.raises(ValueError, match="tokenizer splits it differently"):
        knowledge.rome_edit(model, ["so mo 's city is"], "somo", "paris", 0, torch.eye(model.cfg.d_mlp))
    with pytest.raises(ValueError, match="is 2 tokens"):
        knowledge.rome_edit(model, ["so mo 's city is"], "so mo", "paris rome", 0, torch.eye(model.cfg.d_mlp))
