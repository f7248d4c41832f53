"""Recipe for ``chat-base-lowend``: ``chat-base``'s recipe on a base mix that almost always adds a tail.

The only change is the base mix's tail rate, 0.9 instead of 0.6 (``chat.sample_base_mix(tail_rate=0.9)``). At the
stop decision this base gives the concise END p about 0.1, below each of the three tail openings (about 0.3 each),
so END is its 4th choice. URIAL's rank metric (rank > 3 under the base) then flags every concise stop of a tuned
model as shifted, where under ``chat-base`` (END p about 0.37, rank 1-2) it flags none: the metric sees how the base
splits its probability, not where tuning acted. ``chat-sft-lowend`` is tuned from it.
"""
from __future__ import annotations

from typing import Any

from interplab.zoo import tuned
from interplab.zoo.tuned import base

NAME = "chat-base-lowend"
TAIL_RATE = 0.9
DESCRIPTION = ("chat-base's recipe on a variant base mix whose tail sentence follows with p 0.9 (not 0.6): the "
               "concise END is its least likely choice at the stop decision; the base of chat-sft-lowend")
DEFAULT_SEED = base.DEFAULT_SEED
TRAINING = dict(base.TRAINING, tail_rate=TAIL_RATE)
model_config = base.model_config
build = base.build


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """``chat-base``'s recipe (same seed, steps and optimiser) on the tail-rate-0.9 base mix."""
    return base.train_base(NAME, DESCRIPTION, TAIL_RATE, seed, steps, progress)


def evaluate(model) -> dict[str, Any]:
    return base.evaluate(model)


card_markdown = tuned.card_markdown
