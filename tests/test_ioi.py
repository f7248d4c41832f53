"""The IOI world's labels, and the shipped ioi-2l model: accuracy, logit difference, reference circuit."""
import pytest
import torch

from interplab.worlds import ioi
from interplab.zoo import ioi as recipe
from interplab.zoo import model_card


def test_prompts_share_one_layout_and_labels_are_right():
    batch = ioi.sample(48, seed=3)
    assert batch.tokens.shape == (48, ioi.PROMPT_LEN)
    words = [ioi.describe(row).split() for row in batch.tokens]
    for i, sentence in enumerate(words):
        io, s = ioi.describe(batch.io[i:i + 1]), ioi.describe(batch.s[i:i + 1])
        assert sentence[ioi.POS_END] == "to" and sentence[ioi.POS_S2] == s
        assert sentence[int(batch.pos_io[i])] == io and sentence[int(batch.pos_s1[i])] == s and io != s
        assert sentence[3] == "and"
    assert batch.abba.float().mean() == 0.5
    assert set(batch.template.tolist()) == set(range(len(ioi.TEMPLATES)))
    for template in ioi.TEMPLATES:
        assert len(template.split()) == ioi.PROMPT_LEN - 1


def test_held_out_pairs_never_appear_in_training():
    held = set(ioi.HELD_OUT_PAIRS)
    assert not held & set(ioi.TRAIN_PAIRS) and len(held) == round(0.2 * len(held | set(ioi.TRAIN_PAIRS)))
    names = {name: i for i, name in enumerate(ioi.NAMES)}
    batch = ioi.sample(256, seed=5)
    for io, s in zip(ioi.describe(batch.io).split(), ioi.describe(batch.s).split()):
        assert tuple(sorted((names[io], names[s]))) not in held
    batch = ioi.sample(64, seed=5, held_out=True)
    for io, s in zip(ioi.describe(batch.io).split(), ioi.describe(batch.s).split()):
        assert tuple(sorted((names[io], names[s]))) in held


def test_corruptions_change_only_name_slots():
    batch = ioi.sample(32, seed=7)
    name_ids = set(ioi.NAME_IDS.tolist())
    for kind in ioi.CORRUPTIONS:
        corrupted = ioi.corrupt(batch, kind, seed=1)
        changed = (corrupted.tokens != batch.tokens).any(0).nonzero().flatten().tolist()
        assert set(changed) <= {ioi.POS_A, ioi.POS_B, ioi.POS_S2}
        assert torch.equal(corrupted.io, batch.io) and torch.equal(corrupted.s, batch.s)
        assert set(corrupted.tokens[:, ioi.POS_S2].tolist()) <= name_ids
    abc = ioi.corrupt(batch, "abc").tokens
    names = abc[:, [ioi.POS_A, ioi.POS_B, ioi.POS_S2]]
    assert all(len(set(row.tolist())) == 3 for row in names)  # three distinct names
    assert not (names == batch.io[:, None]).any() and not (names == batch.s[:, None]).any()
    assert torch.equal(ioi.corrupt(batch, "s2_io").tokens[:, ioi.POS_S2], batch.io)
    with pytest.raises(ValueError, match="unknown corruption"):
        ioi.corrupt(batch, "shuffle")


def test_tokenizer_round_trips_a_prompt():
    tok = ioi.tokenizer()
    batch = ioi.sample(2, seed=0)
    text = ioi.describe(batch.tokens[0][1:])
    assert tok(text)["input_ids"] == batch.tokens[0][1:].tolist()
    assert len(tok) == ioi.D_VOCAB


@pytest.fixture(scope="module")
def model():
    from interplab.zoo import load_model

    return load_model(recipe.NAME)


def test_shipped_model_meets_its_card(model):
    card = model_card(recipe.NAME)
    metrics = recipe.evaluate(model)
    assert metrics["held_out_accuracy"] >= recipe.ACCURACY_THRESHOLD
    assert metrics["held_out_logit_diff"] > 3.0
    assert metrics["held_out_accuracy"] == pytest.approx(card["metrics"]["held_out_accuracy"], abs=0.01)
    assert metrics["held_out_logit_diff"] == pytest.approx(card["metrics"]["held_out_logit_diff"], abs=0.05)
    assert abs(metrics["logit_diff_abc"]) < 2.0 and metrics["logit_diff_s2_io"] < -2.0  # the corruptions bite


def test_reference_circuit_is_faithful_and_small(model):
    from interplab import patching

    circuit = model_card(recipe.NAME)["reference_circuit"]
    clean, corrupted = recipe.circuit_prompts()
    metric = patching.logit_diff_metric(clean.answers, position=ioi.POS_END)
    graph = patching.ComputationalGraph.from_model(model)
    mask = graph.edge_mask(circuit["edges"])
    faithfulness = patching.circuit_faithfulness(model, clean.tokens, corrupted.tokens, metric, graph, mask)
    assert faithfulness == pytest.approx(circuit["faithfulness"], abs=0.01)
    assert faithfulness >= circuit["faithfulness_target"]
    assert len(circuit["edges"]) <= 0.4 * len(graph.edges)
    # the edges' recorded effects are the exact single-edge patching effects
    top = circuit["edges"][:3]
    scores = patching.edge_patching_scores(model, clean.tokens, corrupted.tokens, metric, graph, top)
    torch.testing.assert_close(scores, torch.tensor(circuit["edge_effects"][:3]), atol=0.01, rtol=0.01)
    # corrupting the whole circuit instead destroys the behaviour
    everything_else_clean = patching.circuit_faithfulness(model, clean.tokens, corrupted.tokens, metric, graph, ~mask)
    assert everything_else_clean < 0.5
