"""Exercise checkers, one module per chapter: ``checks.ch00.test_top_prediction(fn)``.

A checker runs the learner's function and the reference on the same inputs (the shipped model,
a random model built at check time, tensors drawn from a fresh seed) and either prints a short
pass message or raises ``CheckFailed`` saying what differed: the case, the relative error, where
the values differ, and which common mistake the answer matches.
"""
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, diagnose_mismatch, fresh_random_model,
                                    fresh_seed, passed, relative_error)

__all__ = ["CheckFailed", "call_learner", "compare_outputs", "diagnose_mismatch", "fresh_random_model", "fresh_seed",
           "passed", "relative_error"]
