"""Recipe for ``chat-sft-late``: ``chat-sft`` with the constitution restricted to rules "cd".

Best-of-8 samples of ``chat-base`` are kept when they pass rules (c) and (d) only; everything else is
``chat-sft``'s recipe (``tuned.sft.train_recipe``). Set side by side with ``chat-sft`` (all four rules) and
``chat-sft-early``, its card shows where the KL to the base goes when only the
late rules bite (``diffing.kl_summary``: the share in response positions 0-2). The card still scores all four rules.
"""
from __future__ import annotations

from interplab.zoo import tuned
from interplab.zoo.tuned import sft

NAME = "chat-sft-late"
DESCRIPTION = ("chat-sft's recipe with the constitution's late rules only, (c) and (d), decided in the content and "
               "at the stop decision: where the KL goes when only late rules bite")
DEFAULT_SEED = sft.DEFAULT_SEED
TRAINING = dict(sft.TRAINING, rules="cd")


train, evaluate = sft.variant(NAME, DESCRIPTION, TRAINING)
card_markdown = tuned.card_markdown
