"""Synthetic worlds: seeded data generators whose ground truth is known.

Each world module offers a tokenizer, a sampler of training batches and the
probes a chapter uses, with labels that say what a correct circuit must do.
"""
from interplab.worlds import chat
from interplab.worlds import facts
from interplab.worlds import induction
from interplab.worlds import ioi

__all__ = ["chat", "facts", "induction", "ioi"]
