"""Where a model lives, so the analyses make their tensors there (CPU here, CUDA on Colab)."""
from __future__ import annotations

import torch


def model_device(model) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device
