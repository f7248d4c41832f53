"""How the suite splits over cores (pytest-xdist: ``-n auto --dist loadscope`` in pyproject.toml).

A notebook's cells share one kernel and must run in order on one worker, and a test module's fixtures (shipped
models, fitted probes) are worth building once, so each notebook and each test module is one unit of work, as
``loadscope`` makes them. The exercise-notebook test is the exception: one unit per notebook, since each runs a
whole chapter and together they would keep one worker busy for minutes while the other waits.
"""
from __future__ import annotations

import pytest


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; `-p no:xdist` leaves it unused
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class OneUnitPerFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "test_exercise_notebooks.py::" in nodeid:
                return nodeid
            return nodeid.split("::", 1)[0]

    return OneUnitPerFile(config, log)
