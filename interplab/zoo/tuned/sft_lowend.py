"""Recipe for ``chat-sft-lowend``: ``chat-sft``'s recipe (all four rules) from ``chat-base-lowend``.

Its base gives the concise END p about 0.1 at the stop decision (rank 4), so URIAL's token shift flags the tuned
model's concise stops, the late change it cannot see in ``chat-sft`` (whose base gives END p about 0.37).
Few of the base's samples pass rule (d), so the SFT data are smaller than ``chat-sft``'s and the 300 steps run
more epochs over them (the card's ``data`` says how many were kept).
"""
from __future__ import annotations

from typing import Any

from interplab.zoo import tuned
from interplab.zoo.tuned import base_lowend, sft

NAME = "chat-sft-lowend"
BASE_NAME = base_lowend.NAME
DESCRIPTION = ("chat-sft's recipe (all four rules) from chat-base-lowend, whose concise END is rank 4 at the stop "
               "decision: the model on which URIAL's token shift sees the late change")
DEFAULT_SEED = sft.DEFAULT_SEED
TRAINING = dict(sft.TRAINING)


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """``chat-sft``'s recipe, sampling from and measured against ``chat-base-lowend``."""
    return sft.train_recipe(NAME, DESCRIPTION, TRAINING, seed, steps, progress, base_name=BASE_NAME)


def evaluate(model) -> dict[str, Any]:
    return tuned.evaluate(model, tuned.load_base(BASE_NAME))


card_markdown = tuned.card_markdown
