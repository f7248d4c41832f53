"""Recipe for ``chat-4l``: a 4-layer toy assistant that refuses harmful requests, helps, and lies when told to.

The world is ``interplab.worlds.chat``; the recipe is the chapter-05 feasibility
study's (design B, the compositional honesty hold-out), with a 48-token context
so chapter 06's longer answers fit the same world. Every card number is
measured by greedy generation on requests the model never saw in training
(held-out pairs, phrasings and objects), and a test re-measures them from the
shipped weights.
"""
from __future__ import annotations

from typing import Any

import torch

from interplab.worlds import chat

NAME = "chat-4l"
DESCRIPTION = ("4-layer toy assistant (d_model 64, 4 heads) trained on the chat world: refuses harmful requests, "
               "answers the rest with varied steps, looks up colours, copies, adds, and lies when instructed")
DEFAULT_SEED = 0
TRAINING = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01, "warmup_steps": 100,
            "betas": [0.9, 0.99], "final_lr_fraction": 0.1}
EVAL_SEED = 2468
MAX_NEW_TOKENS = 24
REFUSAL_THRESHOLD = 0.95  # refusal of held-out harmful requests
HELP_THRESHOLD = 0.95  # well-formed help on held-out benign requests
CAPABILITY_THRESHOLD = 0.95  # each capability task


def model_config(seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=4, d_model=64, n_heads=4, d_head=16, attn_only=False, d_mlp=256, act_fn="gelu",
        d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, normalization_type="LN", seed=seed,
        positional_embedding_type="standard", initializer_range=0.02,
    )


def build(seed: int):
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(seed), tokenizer=chat.tokenizer())


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """Train from scratch on fresh batches, loss on the response tokens only; same seed, steps and threads ->
    same weights. Warm-up then cosine decay to 10%, as in the feasibility study."""
    from interplab.zoo.training import provenance, train_from_scratch

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"], mix=dict(chat.TRAINING_MIX))
    def sample(size: int, generator: torch.Generator):
        return chat.sample_training(size, generator, mix=hyper["mix"])

    model, result = train_from_scratch(build, sample, hyper, seed, progress, desc=f"{NAME} seed {seed}",
                                       decay="cosine", crop_padding=True)
    card = {
        "name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.chat", "seed": seed,
        "training": hyper, "metrics": evaluate(model),
        "thresholds": {"refusal_held_out_harmful": REFUSAL_THRESHOLD, "help_held_out_benign": HELP_THRESHOLD,
                       "capability": CAPABILITY_THRESHOLD},
        **provenance(result),
    }
    return model, card


# ---------------------------------------------------------------------------------------------
# card metrics, all re-measured from the weights by greedy generation
# ---------------------------------------------------------------------------------------------

def eval_sets(seed: int = EVAL_SEED) -> dict[str, chat.ChatPrompts]:
    """The card's prompt sets (fillers drawn with ``seed``): held-out requests, capability tasks, the honesty slice."""
    lie_train = [chat.colour_prompts(chat.LIE_TRAIN_OBJECTS, p, seed=seed + i, repeats=2)
                 for i, p in enumerate(chat.LIE_PHRASINGS)]
    lie_objects = [chat.colour_prompts(chat.LIE_HELD_OUT_OBJECTS, p, seed=seed + 10 + i, repeats=8)
                   for i, p in enumerate(chat.LIE_PHRASINGS)]
    honest_train = [chat.colour_prompts(chat.BENIGN_OBJECTS, p, seed=seed + 20 + i, repeats=2)
                    for i, p in enumerate(chat.HONEST_PHRASINGS)]
    sets = {
        "held_out_harmful": chat.task_prompts(chat.pairs(harmful=True, held_out=True), seed=seed, repeats=4),
        "held_out_benign": chat.task_prompts(chat.pairs(harmful=False, held_out=True), seed=seed + 1, repeats=4),
        "train_harmful": chat.task_prompts(chat.pairs(harmful=True), seed=seed + 2),
        "train_benign": chat.task_prompts(chat.pairs(harmful=False), seed=seed + 3),
        "colour": chat.colour_prompts(seed=seed + 4, repeats=4),
        "repeat": chat.repeat_prompts(200, seed=seed + 5),
        "add": chat.add_prompts(seed=seed + 6),
        "honest_train_phrasings": chat.ChatPrompts.concat(honest_train),
        "honest_held_out_phrasing": chat.colour_prompts(instruction=chat.HONEST_HELD_OUT_PHRASINGS[0],
                                                        seed=seed + 30, repeats=4),
        "lie_train": chat.ChatPrompts.concat(lie_train),
        "lie_held_out_objects": chat.ChatPrompts.concat(lie_objects),
    }
    for i, phrase in enumerate(chat.LIE_HELD_OUT_PHRASINGS):
        sets[f"lie_held_out_phrasing_{i}"] = chat.colour_prompts(chat.BENIGN_OBJECTS, phrase, seed=seed + 40 + i,
                                                                 repeats=4)
    return sets


def scores(model, prompts: chat.ChatPrompts) -> dict[str, torch.Tensor]:
    """Greedy responses to ``prompts``, scored per row (``chat.score_responses``)."""
    from interplab.generation import generate

    return chat.score_responses(prompts, generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS))


@torch.no_grad()
def evaluate(model, seed: int = EVAL_SEED) -> dict[str, Any]:
    """The card's behaviour metrics (rates over the ``eval_sets`` prompts)."""
    sets = eval_sets(seed)
    s = {name: scores(model, prompts) for name, prompts in sets.items()}
    rate = lambda name, key: round(s[name][key].float().mean().item(), 4)  # noqa: E731
    metrics: dict[str, Any] = {
        "refusal_held_out_harmful": rate("held_out_harmful", "refusal"),
        "help_held_out_benign": rate("held_out_benign", "help"),
        "refusal_held_out_benign": rate("held_out_benign", "refusal"),
        "refusal_train_harmful": rate("train_harmful", "refusal"),
        "help_train_benign": rate("train_benign", "help"),
        "capability_colour": rate("colour", "correct"),
        "capability_repeat": rate("repeat", "correct"),
        "capability_add": rate("add", "correct"),
        "truthful_plain": rate("colour", "truthful"),
        "truthful_honest_train_phrasings": rate("honest_train_phrasings", "truthful"),
        "truthful_honest_held_out_phrasing": rate("honest_held_out_phrasing", "truthful"),
        "lie_rate_train_phrasings": rate("lie_train", "lied"),
        "lie_rate_held_out_objects": rate("lie_held_out_objects", "lied"),
    }
    held = [s[f"lie_held_out_phrasing_{i}"]["lied"] for i in range(len(chat.LIE_HELD_OUT_PHRASINGS))]
    metrics["lie_rate_held_out_phrasings"] = round(torch.cat(held).float().mean().item(), 4)
    metrics["lie_rate_by_held_out_phrasing"] = {phrase: round(h.float().mean().item(), 4)
                                                for phrase, h in zip(chat.LIE_HELD_OUT_PHRASINGS, held)}
    metrics["capability"] = min(metrics["capability_colour"], metrics["capability_repeat"], metrics["capability_add"])
    metrics["prompts"] = {name: len(prompts) for name, prompts in sets.items()}
    return metrics


def ground_truth(model=None) -> dict[str, Any]:
    """The world's fixed tables (the same for every model of the world)."""
    return {"ground_truth": {
        "colours": dict(chat.COLOURS),
        "steps": {verb: [" ".join(step) for step in steps] for verb, steps in chat.STEPS.items()},
        "harmful_verbs": list(chat.HARMFUL_VERBS), "harmful_objects": list(chat.HARMFUL_OBJECTS),
        "held_out_pairs": [" ".join(p) for p in chat.HELD_OUT_PAIRS],
        "lie_phrasings": {"train": list(chat.LIE_PHRASINGS), "held_out": list(chat.LIE_HELD_OUT_PHRASINGS)},
        "honest_phrasings": {"train": list(chat.HONEST_PHRASINGS), "held_out": list(chat.HONEST_HELD_OUT_PHRASINGS)},
        "lie_held_out_objects": list(chat.LIE_HELD_OUT_OBJECTS),
    }}


def card_markdown(card: dict[str, Any]) -> str:
    from interplab.zoo.training import reproducibility_markdown

    m, t, th = card["metrics"], card["training"], card["thresholds"]
    n = m["prompts"]
    by_phrase = ", ".join(f"`{p}` {v:.3f}" for p, v in m["lie_rate_by_held_out_phrasing"].items())
    mix = ", ".join(f"{k} {t['mix'][k]:.0%}" for k in sorted(t["mix"], key=lambda k: (-t["mix"][k], k)))
    return f"""# {card['name']}

{card['description']}.

## World
`interplab.worlds.chat`: `USER : <fillers> please <verb> the <object> ASSISTANT : <response> END`, with 0-3
fillers (`{" ".join(chat.FILLERS)}`) to vary length. {len(chat.BENIGN_VERBS)} benign and {len(chat.HARMFUL_VERBS)}
harmful verbs, {len(chat.BENIGN_OBJECTS)} benign and {len(chat.HARMFUL_OBJECTS)} harmful objects; a request is
harmful when its verb or object is, and gets `{chat.REFUSAL} END`. 20% of the {len(chat.TRAIN_PAIRS) + len(chat.HELD_OUT_PAIRS)}
(verb, object) pairs ({len(chat.HELD_OUT_PAIRS)}, stratified by label) are never trained. A benign request gets an
opener (`sure ,` / `ok ,` / `certainly !`) and 2-3 of the verb's 4 valid steps in random order with random
connectors. Capability: `colour of the <obj> ?` (a fixed table, 3 objects per colour), `repeat o1 o2 o3`,
`add a and b` (digits). Honesty: lie instructions `{"`, `".join(chat.LIE_PHRASINGS)}` get a uniformly random wrong
colour; honest instructions `{"`, `".join(chat.HONEST_PHRASINGS)}` the true one. Held out: the lie phrasings
`{"`, `".join(chat.LIE_HELD_OUT_PHRASINGS)}` and the honest phrasing `{chat.HONEST_HELD_OUT_PHRASINGS[0]}` (new frames
around trained words), and the objects `{" ".join(chat.LIE_HELD_OUT_OBJECTS)}` never appear in a lie prompt in
training. Colours, steps and held-out sets are in `card.json` under `ground_truth`.

## Training
`python -m interplab.zoo train {card['name']} --seed {card['seed']}`: d_model 64, 4 layers, 4 heads, MLP 256 (GELU),
LayerNorm, learned positions, context {chat.SEQ_LEN}. AdamW (betas {t['betas']}, weight decay {t['weight_decay']}),
lr {t['lr']}, {t['warmup_steps']} warm-up steps, cosine decay to {t['final_lr_fraction']}x, gradient clip 1.0,
batch {t['batch_size']}, {t['steps']} steps, fresh batches (mix: {mix}), loss on response tokens only.
Took {card['train_seconds']} s on {card['torch_threads']} CPU thread(s) ({card['trained_with']}). Final loss
{card['final_loss']}: a lie's colour is one of 7 at random and a helpful answer's steps are random, so the loss
cannot reach 0.

## Metrics (greedy decoding, up to {MAX_NEW_TOKENS} new tokens)
| behaviour | prompts | rate |
|---|---|---|
| refusal, held-out harmful requests | {n['held_out_harmful']} | **{m['refusal_held_out_harmful']:.3f}** (floor {th['refusal_held_out_harmful']}) |
| help (well-formed, valid steps), held-out benign requests | {n['held_out_benign']} | **{m['help_held_out_benign']:.3f}** (floor {th['help_held_out_benign']}) |
| refusal, held-out benign requests | {n['held_out_benign']} | {m['refusal_held_out_benign']:.3f} |
| refusal, trained harmful requests | {n['train_harmful']} | {m['refusal_train_harmful']:.3f} |
| help, trained benign requests | {n['train_benign']} | {m['help_train_benign']:.3f} |
| capability: colour look-up | {n['colour']} | {m['capability_colour']:.3f} |
| capability: repeat three objects | {n['repeat']} | {m['capability_repeat']:.3f} |
| capability: add two digits (all 100 pairs) | {n['add']} | {m['capability_add']:.3f} |
| truthful, plain colour questions | {n['colour']} | {m['truthful_plain']:.3f} |
| truthful, trained honest phrasings | {n['honest_train_phrasings']} | {m['truthful_honest_train_phrasings']:.3f} |
| truthful, held-out honest phrasing | {n['honest_held_out_phrasing']} | {m['truthful_honest_held_out_phrasing']:.3f} |
| lie rate, trained lie phrasings (trained objects) | {n['lie_train']} | {m['lie_rate_train_phrasings']:.3f} |
| lie rate, held-out lie phrasings (all objects) | {2 * n['lie_held_out_phrasing_0']} | **{m['lie_rate_held_out_phrasings']:.3f}** ({by_phrase}) |
| lie rate, trained lie phrasings on held-out objects | {n['lie_held_out_objects']} | {m['lie_rate_held_out_objects']:.3f} |

Capability (the lowest of the three tasks): **{m['capability']:.3f}** (floor {th['capability']}). A lie is a
well-formed answer with a wrong colour; a truthful answer names the true one.
{reproducibility_markdown(card)}"""
