"""Recipe for ``chat-dpo``: ``chat-base`` tuned by DPO plus an NLL term on best-versus-worst pairs of its samples.

Plain DPO (``nll_weight`` 0) reward-hacks the concision rule here: it learns that shorter is preferred and
cuts answers to one step. The NLL term on the chosen response keeps the answers whole.

The learning rate (1e-4) was chosen on a validation set of training-pair prompts (``finetune.train_prompts(240,
seed=4242)``, 2 samples each at T = 1), never on the held-out prompts: lr 5e-5 / 300 steps scored 0.854 there,
lr 5e-5 / 600 steps 0.850, lr 1e-4 / 300 steps 0.864 (the card says so too).
"""
from __future__ import annotations

from typing import Any

from interplab import finetune
from interplab.zoo import tuned

NAME = "chat-dpo"
DESCRIPTION = ("chat-base after DPO (beta 0.1) + NLL on the chosen response, on best-vs-worst of 4 of its own "
               "samples by the judge")
DEFAULT_SEED = 0
TRAINING = {"steps": 300, "prompts": 1600, "samples_per_prompt": 4, "rules": "abcd", "beta": 0.1,
            "nll_weight": 1.0, "lr": 1e-4, "batch_size": 64}


def _tune(policy, base, hyper: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    prompts = finetune.train_prompts(hyper["prompts"], seed=seed + 200)
    pairs = finetune.preference_pairs(base, prompts, hyper["samples_per_prompt"], hyper["rules"], seed=seed,
                                    progress=progress)
    history = finetune.dpo(policy, base, pairs, hyper["steps"], hyper["beta"], hyper["nll_weight"], hyper["lr"],
                         hyper["batch_size"], seed=seed, progress=progress)
    return {"final_loss": history["loss"][-1], "curves": history, "data": {"pairs": len(pairs)}}


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """Preference pairs from the shipped base at T = 1, then DPO + NLL against the frozen base."""
    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    policy, card = tuned.train_tuned(NAME, DESCRIPTION, hyper, seed, _tune, progress)
    card["training_summary"] = (f"{hyper['prompts']} training prompts x {hyper['samples_per_prompt']} samples of "
                                f"`chat-base` at T = 1; chosen = the judge's best, rejected = its worst, ties "
                                f"dropped: {card['data']['pairs']} pairs (`finetune.preference_pairs`). Loss = DPO "
                                f"(beta {hyper['beta']}) + {hyper['nll_weight']} x length-normalised NLL of the "
                                f"chosen response (`finetune.dpo`).")
    return policy, card


def evaluate(model) -> dict[str, Any]:
    return tuned.evaluate(model, tuned.load_base())


card_markdown = tuned.card_markdown
