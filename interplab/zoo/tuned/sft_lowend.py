"""Recipe for ``chat-sft-lowend``: ``chat-sft``'s recipe (all four rules) from ``chat-base-lowend``.

Its base gives the concise END p about 0.1 at the stop decision (rank 4), so URIAL's token shift flags the tuned
model's concise stops, the late change it cannot see in ``chat-sft`` (whose base gives END p about 0.37).
Few of the base's samples pass rule (d) (about 500 of 12,000 are kept, against 1,926 for ``chat-sft``), so the
recipe runs 80 steps instead of 300: about 10 epochs over its data, as ``chat-sft`` runs. With 300 steps (39 epochs)
it memorised its few samples and lost capability (colour and repeat answers 0.59, against the base's 0.86).
"""
from __future__ import annotations

from interplab.zoo import tuned
from interplab.zoo.tuned import base_lowend, sft

NAME = "chat-sft-lowend"
BASE_NAME = base_lowend.NAME
DESCRIPTION = ("chat-sft's recipe (all four rules) from chat-base-lowend, whose concise END is rank 4 at the stop "
               "decision: the model on which URIAL's token shift sees the late change")
DEFAULT_SEED = sft.DEFAULT_SEED
TRAINING = dict(sft.TRAINING, steps=80)  # ~10 epochs over ~500 kept samples, as chat-sft's 300 over 1,926


train, evaluate = sft.variant(NAME, DESCRIPTION, TRAINING, base_name=BASE_NAME)
card_markdown = tuned.card_markdown
