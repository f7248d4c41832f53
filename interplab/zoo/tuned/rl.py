"""Recipe for ``chat-rl``: ``chat-base`` tuned by RLOO on the judge's score with a KL penalty to the frozen base.

The judge is the reward (RLAIF, as in constitutional AI); beta 0.03 is the feasibility study's choice that
reached the constitution (beta 0.1 under-learns the opener: making ``certainly`` certain costs ~1.9 nats).
"""
from __future__ import annotations

from typing import Any

from interplab import finetune
from interplab.zoo import tuned

NAME = "chat-rl"
DESCRIPTION = ("chat-base after RLOO (4 samples x 16 prompts a step) on the judge's score minus 0.03 x KL to the "
               "frozen base")
DEFAULT_SEED = 0
TRAINING = {"steps": 300, "prompts": 2000, "k": 4, "prompts_per_step": 16, "beta": 0.03, "lr": 1e-4,
            "rules": "abcd"}


def _tune(policy, base, hyper: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    prompts = finetune.train_prompts(hyper["prompts"], seed=seed + 300)
    history = finetune.rloo(policy, base, prompts, hyper["steps"], hyper["k"], hyper["prompts_per_step"],
                          hyper["beta"], hyper["lr"], hyper["rules"], seed=seed, progress=progress)
    curves = {"reward": history.reward, "score": history.score, "kl": history.kl, "length": history.length,
              "malformed": history.malformed}
    return {"final_loss": -history.reward[-1], "curves": curves}


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """On-policy RLOO from the shipped base (its ``final_loss`` is minus the last step's mean reward)."""
    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    policy, card = tuned.train_tuned(NAME, DESCRIPTION, hyper, seed, _tune, progress)
    card["training_summary"] = (f"each step samples {hyper['k']} responses at T = 1 to {hyper['prompts_per_step']} "
                                f"of {hyper['prompts']} training prompts; reward = judge score (rules "
                                f"{hyper['rules']}) - {hyper['beta']} x the sampled sequence KL to `chat-base`; "
                                f"advantage = reward - mean of the prompt's other samples (`finetune.rloo`).")
    return policy, card


def evaluate(model) -> dict[str, Any]:
    return tuned.evaluate(model, tuned.load_base())


card_markdown = tuned.card_markdown
