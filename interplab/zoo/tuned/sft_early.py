"""Recipe for ``chat-sft-early``: ``chat-sft`` with the constitution restricted to rules "ab".

Best-of-8 samples of ``chat-base`` are kept when they pass rules (a) and (b) only; everything else is
``chat-sft``'s recipe (``tuned.sft.train_recipe``). Set side by side with ``chat-sft`` (all four rules) and
``chat-sft-late``, its card shows where the KL to the base goes when only the
early rules bite (``diffing.kl_summary``: the share in response positions 0-2). The card still scores all four rules.
"""
from __future__ import annotations

from interplab.zoo import tuned
from interplab.zoo.tuned import sft

NAME = "chat-sft-early"
DESCRIPTION = ("chat-sft's recipe with the constitution's early rules only, (a) and (b), both decided at response "
               "position 0: where the KL goes when only early rules bite")
DEFAULT_SEED = sft.DEFAULT_SEED
TRAINING = dict(sft.TRAINING, rules="ab")


train, evaluate = sft.variant(NAME, DESCRIPTION, TRAINING)
card_markdown = tuned.card_markdown
