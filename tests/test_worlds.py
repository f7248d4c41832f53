import pytest
import torch

from interplab.worlds import induction
from interplab.worlds.vocab import build_tokenizer, syllables


def test_sample_batch_is_seeded_and_shaped():
    a = induction.sample_batch(8, seed=3)
    b = induction.sample_batch(8, seed=3)
    c = induction.sample_batch(8, seed=4)
    assert a.tokens.shape == (8, induction.SEQ_LEN + 1)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert (a.tokens[:, 0] == 0).all(), "every row starts with <bos>"
    assert ((a.tokens[:, 1:] >= 3) & (a.tokens[:, 1:] < induction.D_VOCAB)).all()


def test_repeated_mask_marks_exactly_the_predictable_positions():
    batch = induction.sample_batch(32, seed=0)
    for row in range(32):
        period = int(batch.block_len[row])
        assert induction.MIN_BLOCK <= period <= induction.MAX_BLOCK
        words = batch.tokens[row, 1:]
        for p in range(period, len(words)):
            assert words[p] == words[p - period]
        # position p (in the full sequence) predicts p+1; predictable iff p+1 is a copy
        assert batch.repeated[row].nonzero().flatten().tolist() == list(range(period, induction.SEQ_LEN))


def test_repeated_tokens_probe_has_distinct_halves():
    probe = induction.repeated_tokens(4, half_len=10, seed=1)
    assert probe.shape == (4, 21)
    assert torch.equal(probe[:, 1:11], probe[:, 11:])
    for row in probe:
        assert len(set(row[1:11].tolist())) == 10
    with pytest.raises(ValueError, match="half_len"):
        induction.repeated_tokens(1, half_len=0)


def test_tokenizer_round_trips_words():
    tokenizer = induction.tokenizer()
    text = "ka to mi"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens([0]) == ["<bos>"]
    assert len(tokenizer) == induction.D_VOCAB
    assert induction.describe(torch.tensor([0, ids[0]])) == "<bos> ka"


def test_vocabulary_errors_are_clear():
    with pytest.raises(ValueError, match="unique"):
        build_tokenizer(["ab", "ab"])
    with pytest.raises(ValueError, match="spaces"):
        build_tokenizer(["a b"])
    with pytest.raises(ValueError, match="at most"):
        syllables(1000)
