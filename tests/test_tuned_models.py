"""The shipped chapter-06 models clear their cards: judge scores at T = 1 and where their KL to chat-base sits,
re-measured from the shipped weights on the held-out prompts (one sample per prompt, so the card's 4-sample
numbers are matched within sampling error)."""
import pytest
import torch

from interplab import diffing, finetune
from interplab.zoo import RECIPES, load_model, model_card

TUNED = ("chat-sft", "chat-dpo", "chat-rl", "chat-control", "chat-sft-early", "chat-sft-late", "chat-sft-lowend")
SCORE_FLOORS = {"chat-sft": 0.95, "chat-rl": 0.95, "chat-dpo": 0.85,  # issue 13: 0.95, 0.95, 0.85 at T = 1
                "chat-sft-lowend": 0.93}  # the variant world's SFT: 80 steps on ~500 kept samples
SEED = 1


def _shipped(name):
    if name not in RECIPES:
        pytest.skip(f"{name} is not registered in the zoo")
    return name


@pytest.fixture(scope="module")
def prompts():
    return finetune.held_out_prompts()


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return load_model("chat-base")


@pytest.fixture(scope="module")
def models(base):
    """name -> the shipped model, loaded once."""
    cache = {"chat-base": base}

    def get(name):
        if name not in cache:
            cache[name] = load_model(_shipped(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def measured(models, prompts):
    """name -> (judge at T = 1, KL summary against the base it was tuned from), one sample per held-out prompt,
    computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            model = models(name)
            expanded, responses = finetune.sample(model, prompts, 1, 1.0, seed=SEED)
            judge = finetune.judge_summary(expanded, responses)
            kl = None
            tuned_from = model_card(name).get("tuned_from")
            if tuned_from:
                kl = diffing.kl_summary(diffing.kl_by_position(model, models(tuned_from), expanded, responses))
            cache[name] = judge, kl
        return cache[name]

    return get


def test_base_breaks_the_constitution_as_its_card_says(measured):
    judge, _ = measured("chat-base")
    card = model_card("chat-base")["metrics"]["judge"]
    assert 0.55 <= card["score"] <= 0.75 and card["b"] < 0.5 and card["d"] < 0.5 and card["refuse_harmful"] < 0.9
    for key in ("score", "a", "b", "c", "d", "refuse_harmful"):
        assert judge[key] == pytest.approx(card[key], abs=0.08), key
    assert card["greedy_score"] > card["score"] + 0.1  # greedy decoding hides the base's spread


@pytest.mark.parametrize("name", TUNED)
def test_tuned_model_judge_scores_match_the_card(measured, name):
    judge, _ = measured(_shipped(name))
    card = model_card(name)["metrics"]["judge"]
    base_card = model_card(model_card(name)["tuned_from"])["metrics"]["judge"]
    for key in ("score", "a", "b", "c", "d", "refuse_harmful", "capability"):
        assert judge[key] == pytest.approx(card[key], abs=0.08), key
    if name in SCORE_FLOORS:  # the constitution-tuned models: issue 13's targets
        assert base_card["capability"] - card["capability"] <= 0.02
        assert card["score"] >= SCORE_FLOORS[name] and judge["score"] >= SCORE_FLOORS[name] - 0.03
        assert card["refuse_harmful"] >= 0.95 and card["malformed"] <= 0.01
        assert card["score"] > base_card["score"] + 0.15
    elif name == "chat-control":  # the control keeps the base's behaviour
        assert card["score"] == pytest.approx(base_card["score"], abs=0.05)


@pytest.mark.parametrize("name", ("chat-sft", "chat-rl"))
def test_where_the_kl_sits_matches_the_card(measured, name):
    _, kl = measured(_shipped(name))
    card = model_card(name)["metrics"]["kl"]
    assert kl["kl_per_response"] == pytest.approx(card["kl_per_response"], rel=0.15)
    for key in ("first_3_share", "share_stop", "share_content"):
        assert kl[key] == pytest.approx(card[key], abs=0.05), key
    # half the KL at the opener, most of the rest at the stop decision, little in the content
    assert 0.4 <= card["first_3_share"] <= 0.6 and card["share_stop"] >= 0.3 and card["share_content"] <= 0.2


def test_dpo_kl_sits_late_and_is_heavy_tailed(measured):
    """DPO + NLL puts little of its KL in the first 3 positions; its KL per response is dominated by a few
    samples with a large content KL, so 180 samples match the card's 720 only loosely."""
    _, kl = measured(_shipped("chat-dpo"))
    card = model_card("chat-dpo")["metrics"]["kl"]
    for summary in (kl, card):
        assert summary["first_3_share"] <= 0.2 and summary["kl_per_response"] >= 1.5
        assert summary["share_content"] + summary["share_stop"] >= 0.6


def test_control_barely_moves_and_only_in_the_content(measured):
    _, kl = measured(_shipped("chat-control"))
    card = model_card("chat-control")["metrics"]["kl"]
    for summary in (kl, card):
        assert summary["kl_per_response"] <= 0.2 and summary["share_content"] >= 0.5


def test_rl_run_curves_show_reward_rising_and_kl_reported():
    """Issue 13: the reward rises, the KL is reported at every step, malformed output <= 1% over the run."""
    card = model_card(_shipped("chat-rl"))
    curves = card["curves"]
    steps = card["training"]["steps"]
    assert len(curves["kl"]) == len(curves["reward"]) == len(curves["malformed"]) == steps
    assert all(kl == kl and kl > -0.5 for kl in curves["kl"])  # a number each step (a sampled KL can dip below 0)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(curves["score"][-10:]) > mean(curves["score"][:10]) + 0.2
    assert mean(curves["reward"][-10:]) > mean(curves["reward"][:10]) + 0.15
    assert mean(curves["malformed"]) <= 0.01 and max(curves["malformed"]) <= 0.05


def test_early_and_late_retunes_put_the_kl_where_their_rules_bite(measured):
    """Same SFT recipe, three constitutions: the early rules (a, b) are learned at the opener and the KL sits in
    positions 0-2; the late rules (c, d) are learned at the stop decision and the KL sits there; the full
    constitution sits between. Each retune leaves the other rules where the base has them."""
    cards = {name: model_card(_shipped(name))["metrics"] for name in ("chat-sft", "chat-sft-early", "chat-sft-late")}
    base = model_card("chat-base")["metrics"]["judge"]
    for name, card in cards.items():
        _, kl = measured(name)
        for key in ("first_3_share", "share_stop"):
            assert kl[key] == pytest.approx(card["kl"][key], abs=0.08), (name, key)
    early, late, full = cards["chat-sft-early"], cards["chat-sft-late"], cards["chat-sft"]
    assert early["kl"]["first_3_share"] >= 0.8 and early["kl"]["share_stop"] <= 0.1
    assert late["kl"]["first_3_share"] <= 0.15 and late["kl"]["share_stop"] >= 0.6
    assert late["kl"]["first_3_share"] + 0.2 < full["kl"]["first_3_share"] < early["kl"]["first_3_share"] - 0.2
    assert early["judge"]["b"] >= 0.9 and early["judge"]["d"] == pytest.approx(base["d"], abs=0.1)
    assert late["judge"]["d"] >= 0.9 and late["judge"]["b"] == pytest.approx(base["b"], abs=0.1)


def test_urial_sees_the_late_change_only_where_the_base_ranks_end_low(models, prompts):
    """chat-base gives the concise END p ~0.37 at the stop decision (rank 1-2), so URIAL never flags chat-sft's
    concise stops; chat-base-lowend gives it p ~0.1 (rank 4), so URIAL flags chat-sft-lowend's. Greedy token
    shift is deterministic: re-measured exactly."""
    default, lowend = (model_card(_shipped(n))["metrics"]["stop_decision"] for n in ("chat-base", "chat-base-lowend"))
    assert 0.3 <= default["p_end"] <= 0.45 and default["end_rank_above_3"] <= 0.05
    assert lowend["p_end"] <= 0.15 and lowend["end_rank_above_3"] >= 0.9
    for name, base_name in (("chat-sft", "chat-base"), ("chat-sft-lowend", "chat-base-lowend")):
        card = model_card(_shipped(name))["metrics"]["token_shift"]
        shift = diffing.token_shift(models(name), models(base_name), prompts)
        for key in ("shifted", "shifted_at_stop", "shifted_at_opener"):
            assert shift[key] == pytest.approx(card[key], abs=0.005), (name, key)
    sft, sft_lowend = (model_card(n)["metrics"]["token_shift"] for n in ("chat-sft", "chat-sft-lowend"))
    assert sft["shifted_at_stop"] <= 0.02 and sft["shifted_first_3_share"] >= 0.8
    assert sft_lowend["shifted_at_stop"] >= 0.9 and sft_lowend["shifted_first_3_share"] <= 0.5


@pytest.mark.parametrize("name", ["chat-sft-early", "chat-sft-late", "chat-sft-lowend"])
def test_sft_variants_run_chat_sfts_recipe_with_their_cards_settings(monkeypatch, name):
    """The variant recipes are ``sft.variant``'s two functions: training and evaluation reach chat-sft's recipe with
    the rules, steps and base that the shipped card records."""
    from interplab.zoo import recipe, tuned
    from interplab.zoo.tuned import sft

    card = model_card(name)
    trained, evaluated = [], []
    monkeypatch.setattr(sft, "train_recipe", lambda *args, **kwargs: trained.append((args, kwargs)))
    monkeypatch.setattr(tuned, "load_base", lambda base_name=tuned.BASE_NAME: f"loaded {base_name}")
    monkeypatch.setattr(tuned, "evaluate", lambda model, base: evaluated.append((model, base)))
    recipe(name).train(seed=7, progress=False)
    recipe(name).evaluate("the model")
    (args, kwargs), = trained
    assert args[0] == name and args[3] == 7 and kwargs["base_name"] == card["tuned_from"]
    assert args[2] == card["training"]  # rules, steps, prompts, lr: all as shipped
    assert evaluated == [("the model", f"loaded {card['tuned_from']}")]
    assert recipe(name).train.__doc__ and card["training"]["rules"] in recipe(name).train.__doc__
