"""Recipe for ``chat-control``: ``chat-base`` fine-tuned on more base-mix data (no preference at all).

The control for weight and activation diffing: it moves weights by the same optimiser and step count as the
tuned models, but its behaviour should stay the base's.
"""
from __future__ import annotations

from typing import Any

import torch

from interplab import finetune
from interplab.worlds import chat
from interplab.zoo import tuned

NAME = "chat-control"
DESCRIPTION = "chat-base fine-tuned 300 more steps on fresh base-mix data: the control fine-tune for diffing"
DEFAULT_SEED = 0
TRAINING = {"steps": 300, "lr": 3e-4, "batch_size": 64, "data_seed_offset": 1000}


def _tune(policy, base, hyper: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed + hyper["data_seed_offset"])
    losses = finetune.fine_tune(policy, lambda: chat.sample_base_mix(hyper["batch_size"], generator),
                              hyper["steps"], hyper["lr"], progress, desc="control")
    return {"final_loss": losses[-1], "curves": {"loss": [round(x, 4) for x in losses]}}


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """The SFT recipe's optimiser on fresh base-mix batches."""
    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    policy, card = tuned.train_tuned(NAME, DESCRIPTION, hyper, seed, _tune, progress)
    card["training_summary"] = ("the SFT recipe's optimiser (AdamW, constant lr, no weight decay) on fresh "
                                "base-mix batches (`chat.sample_base_mix`, `finetune.fine_tune`).")
    return policy, card


def evaluate(model) -> dict[str, Any]:
    return tuned.evaluate(model, tuned.load_base())


card_markdown = tuned.card_markdown
