"""Save and load zoo checkpoints: safetensors weights + config json + tokenizer + card.

A checkpoint folder holds ``model.safetensors``, ``config.json`` (a
``TransformerBridgeConfig`` as a dict, without dtype), the tokenizer files and
``card.json`` (world, training config, metrics); ``MODEL_CARD.md`` is the same
card for people.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "card.json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    return value


def config_to_dict(cfg) -> dict[str, Any]:
    raw = cfg.to_dict()
    raw.pop("dtype", None)
    raw["device"] = "cpu"
    return {key: _jsonable(value) for key, value in raw.items()}


def save_checkpoint(model, folder: str | Path, card: dict[str, Any], card_markdown: str) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(config_to_dict(model.cfg), indent=1, sort_keys=True) + "\n")
    model.tokenizer.save_pretrained(str(folder))
    (folder / CARD).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown)
    return folder


def load_checkpoint(folder: str | Path, device: str | None = None):
    """Boot a native TransformerBridge from a checkpoint folder; no network involved."""
    from safetensors.torch import load_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    from interplab.worlds.vocab import load_tokenizer

    folder = Path(folder)
    cfg = TransformerBridgeConfig.from_dict(json.loads((folder / CONFIG).read_text()))
    model = TransformerBridge.boot_native(cfg, tokenizer=load_tokenizer(folder), device=device)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return model


def read_card(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / CARD).read_text())
