"""Recipe for ``chat-sft``: ``chat-base`` fine-tuned on its own best-of-8 samples that the judge fully approves."""
from __future__ import annotations

from typing import Any

from interplab import finetune
from interplab.zoo import tuned

NAME = "chat-sft"
DESCRIPTION = ("chat-base after SFT on its own best-of-8 samples with judge score 1 (rejection sampling): "
               "follows the constitution at T = 1")
DEFAULT_SEED = 0
TRAINING = {"steps": 300, "prompts": 1500, "samples_per_prompt": 8, "rules": "abcd", "lr": 3e-4, "batch_size": 64}


def _tune(policy, base, hyper: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    prompts = finetune.train_prompts(hyper["prompts"], seed=seed + 100)
    kept_prompts, kept = finetune.best_of_n(base, prompts, hyper["samples_per_prompt"], hyper["rules"], seed=seed,
                                          progress=progress)
    losses = finetune.sft(policy, kept_prompts, kept, hyper["steps"], hyper["lr"], hyper["batch_size"], seed=seed,
                        progress=progress)
    return {"final_loss": losses[-1], "curves": {"loss": [round(x, 4) for x in losses]},
            "data": {"samples": hyper["prompts"] * hyper["samples_per_prompt"], "kept": len(kept),
                     "prompts_with_a_kept_sample": len(set(kept_prompts.texts))}}


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """Best-of-8 from the shipped base at T = 1, keep judge score 1, then SFT (AdamW, constant lr)."""
    return train_recipe(NAME, DESCRIPTION, TRAINING, seed, steps, progress)


def train_recipe(name: str, description: str, training: dict[str, Any], seed: int, steps: int | None = None,
                 progress: bool = True, base_name: str = tuned.BASE_NAME):
    """This recipe under another name, rule set (``training["rules"]``) or base: ``chat-sft-early``,
    ``chat-sft-late`` and ``chat-sft-lowend`` are ``chat-sft`` with one of those changed."""
    hyper = dict(training, steps=steps or training["steps"])
    policy, card = tuned.train_tuned(name, description, hyper, seed, _tune, progress, base_name=base_name)
    card["training_summary"] = (f"{hyper['prompts']} training prompts x {hyper['samples_per_prompt']} samples of "
                                f"`{base_name}` at T = 1; the {card['data']['kept']} the judge scores 1 on rules "
                                f"{hyper['rules']} are the SFT data (`finetune.best_of_n`, `finetune.sft`).")
    return policy, card


def evaluate(model) -> dict[str, Any]:
    return tuned.evaluate(model, tuned.load_base())


def variant(name: str, description: str, training: dict[str, Any], base_name: str = tuned.BASE_NAME):
    """``(train, evaluate)`` of a recipe that is this one under another name, rule set or base (the recipe
    modules ``sft_early``, ``sft_late`` and ``sft_lowend`` are these two functions and their settings)."""

    def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
        return train_recipe(name, description, training, seed, steps, progress, base_name=base_name)

    def evaluate(model) -> dict[str, Any]:
        return tuned.evaluate(model, tuned.load_base(base_name))

    train.__doc__ = (f"``chat-sft``'s recipe as ``{name}``: rules {training['rules']}, {training['steps']} steps, "
                     f"sampling from and measured against ``{base_name}``.")
    return train, evaluate


card_markdown = tuned.card_markdown
