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
