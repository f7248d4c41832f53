"""Save and load zoo checkpoints: safetensors weights + config json + tokenizer + card.

A checkpoint folder holds ``model.safetensors``, ``config.json`` (a
``TransformerBridgeConfig`` as a dict, without dtype), the tokenizer files and
``card.json`` (world, training config, metrics); ``MODEL_CARD.md`` is the same
card for people. ``model.safetensors`` also carries a copy of the config in its
header metadata, so an edited ``config.json`` is caught instead of booting a
different model on the same weights.

Loading checks the folder before booting: every file present and readable, the
config valid, and the config agreeing with the weights (every tensor's shape, the
layer count, widths and vocabulary). A broken folder raises
:class:`BrokenCheckpointError` naming the file and how to rebuild it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "card.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
CONFIG_METADATA_KEY = "interplab_config"  # config.json as saved, inside model.safetensors' header

# Config fields that must be positive integers for any model (more when the model has MLPs).
POSITIVE_INT_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")


class BrokenCheckpointError(RuntimeError):
    """A checkpoint folder that cannot be loaded as it is: a missing, truncated or edited file."""


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
    config = config_to_dict(model.cfg)
    save_file(state, str(folder / WEIGHTS), metadata={CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True)})
    (folder / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    model.tokenizer.save_pretrained(str(folder))
    (folder / CARD).write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(card_markdown)
    return folder


def _broken(path: Path, problem: str, rebuild: str) -> BrokenCheckpointError:
    return BrokenCheckpointError(f"{path}: {problem}.\nTo rebuild it: {rebuild}")


def _default_rebuild(folder: Path) -> str:
    return (f"retrain the model into this folder (`python -m interplab.zoo train NAME --out {folder}`), "
            "or restore the folder from where it came from")


def read_config(folder: Path, rebuild: str) -> dict[str, Any]:
    """``config.json`` as a dict, checked for JSON syntax and for the fields every model needs."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise _broken(path, f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})",
                      rebuild) from None
    if not isinstance(config, dict):
        raise _broken(path, f"expected a JSON object of config fields, found {type(config).__name__}", rebuild)
    fields = POSITIVE_INT_FIELDS + (() if config.get("attn_only") else ("d_mlp",))
    for field in fields:
        value = config.get(field)
        if type(value) is not int or value <= 0:
            raise _broken(path, f"field {field!r} must be a positive integer, found {value!r}", rebuild)
    return config


def read_weights(folder: Path, rebuild: str) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor shapes and header metadata of ``model.safetensors``; a truncated file fails here."""
    from safetensors import SafetensorError, safe_open

    path = folder / WEIGHTS
    try:
        with safe_open(str(path), "pt") as weights:
            shapes = {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
            metadata = weights.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise _broken(path, f"not a readable safetensors file ({error}); it may be truncated or overwritten",
                      rebuild) from None
    return shapes, metadata


def check_config_matches_weights(config: dict[str, Any], shapes: dict[str, list[int]], metadata: dict[str, str],
                                 folder: Path, rebuild: str) -> None:
    """Fail when ``config.json`` describes a different model than the weights hold.

    Two checks: the config the weights were saved with (in the safetensors header, when present)
    must equal ``config.json`` field by field, which catches edits no tensor shape reveals (an
    activation function, heads split differently); and the layer count, ``d_model`` and ``d_vocab``
    must match the tensors themselves.
    """
    path = folder / CONFIG
    if CONFIG_METADATA_KEY in metadata:
        saved = json.loads(metadata[CONFIG_METADATA_KEY])
        differ = sorted(key for key in set(saved) | set(config) if saved.get(key, "<absent>") != config.get(key, "<absent>"))
        if differ:
            details = "; ".join(f"{key}: {config.get(key, '<absent>')!r} here, {saved.get(key, '<absent>')!r} "
                                f"when the weights were saved" for key in differ[:6])
            more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
            raise _broken(path, f"disagrees with the config saved in {WEIGHTS}: {details}{more}", rebuild)
    layers = {int(match.group(1)) for name in shapes if (match := re.match(r"blocks\.(\d+)\.", name))}
    n_layers = max(layers) + 1 if layers else 0
    if n_layers != config["n_layers"]:
        raise _broken(path, f"n_layers is {config['n_layers']} but {WEIGHTS} holds {n_layers} blocks", rebuild)
    embed = shapes.get("embed.weight")
    if embed is not None and embed != [config["d_vocab"], config["d_model"]]:
        raise _broken(path, f"d_vocab x d_model is {config['d_vocab']} x {config['d_model']} but embed.weight in "
                            f"{WEIGHTS} is {embed[0]} x {embed[1]}", rebuild)


def _check_state_shapes(expected: dict[str, torch.Tensor], shapes: dict[str, list[int]], folder: Path,
                        rebuild: str) -> None:
    """Every tensor the config's model needs is in the file with the same shape, and nothing else is."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{name} is {shapes[name]} in the file, {list(expected[name].shape)} for config.json"
             for name in sorted(set(expected) & set(shapes)) if list(expected[name].shape) != shapes[name]]
    problems = []
    if missing:
        problems.append(f"missing tensors {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"tensors config.json has no place for: {', '.join(unexpected[:5])}"
                        f"{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("shapes differ: " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
    if problems:
        raise _broken(folder / CONFIG, f"describes a different model than {WEIGHTS} holds: " + " | ".join(problems),
                      rebuild)


def load_checkpoint(folder: str | Path, device: str | None = None, rebuild: str | None = None):
    """Boot a native TransformerBridge from a checkpoint folder; no network involved.

    ``rebuild`` is the instruction a :class:`BrokenCheckpointError` gives (how to restore this folder).
    """
    from safetensors.torch import load_file
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    from interplab.worlds.vocab import load_tokenizer

    folder = Path(folder)
    rebuild = rebuild or _default_rebuild(folder)
    if not folder.is_dir():
        raise BrokenCheckpointError(f"{folder}: no such checkpoint folder.\nTo rebuild it: {rebuild}")
    for name in (WEIGHTS, CONFIG) + TOKENIZER_FILES:
        if not (folder / name).is_file():
            what = "tokenizer file" if name in TOKENIZER_FILES else "file"
            raise _broken(folder / name, f"{what} missing from the checkpoint folder", rebuild)
    config = read_config(folder, rebuild)
    shapes, metadata = read_weights(folder, rebuild)
    check_config_matches_weights(config, shapes, metadata, folder, rebuild)
    try:
        tokenizer = load_tokenizer(folder)
    except Exception as error:  # tokenizers raise many kinds; all mean the same to a learner
        raise _broken(folder / TOKENIZER_FILES[0], f"the tokenizer does not load ({type(error).__name__}: {error})",
                      rebuild) from None
    try:
        model = TransformerBridge.boot_native(TransformerBridgeConfig.from_dict(config), tokenizer=tokenizer,
                                              device=device)
    except Exception as error:
        raise _broken(folder / CONFIG, f"describes a model that cannot be built ({type(error).__name__}: {error})",
                      rebuild) from None
    _check_state_shapes(model.state_dict(), shapes, folder, rebuild)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return model


def read_card(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / CARD).read_text())
