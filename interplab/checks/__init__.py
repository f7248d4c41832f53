"""Exercise checkers, one module per chapter: ``checks.ch00.test_top_prediction(fn)``.

A checker runs the learner's function and the reference on the same inputs
and either prints a short pass message or raises ``CheckFailed`` saying what
differed: the case, expected vs got, shapes.
"""
from interplab.checks._core import CheckFailed, compare_outputs, passed

__all__ = ["CheckFailed", "compare_outputs", "passed"]
