"""Shared fixtures: the repository root and the shipped induction model (loaded once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# One thread: the zoo models are tiny, and a second thread spin-waits badly on a busy machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def induction_model():
    from interplab.zoo import load_model

    return load_model("attn2-induction")
