"""Word-level vocabularies and tokenizers for the synthetic worlds.

Every world speaks in whole words separated by spaces, so a token is always a
readable word in an attention view. The tokenizer is a Hugging Face
``PreTrainedTokenizerFast`` so TransformerLens's ``to_tokens`` /
``to_str_tokens`` work on zoo models exactly as on GPT-2.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<unk>", "<pad>")
BOS, UNK, PAD = SPECIAL_TOKENS


def syllables(count: int) -> list[str]:
    """Distinct consonant-vowel syllables ("ba", "be", ...), readable in plots."""
    consonants = "bdfgklmnprstvz"
    vowels = "aeiou"
    pool = [c + v for c in consonants for v in vowels]
    if count > len(pool):
        raise ValueError(f"at most {len(pool)} syllables exist, asked for {count}")
    return pool[:count]


def build_tokenizer(words: Sequence[str]):
    """A word-level tokenizer whose ids are the positions of ``words`` after the specials.

    Id 0 is ``<bos>``, so TransformerLens prepends it like GPT-2's ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_words = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
    if len(set(vocab_words)) != len(vocab_words):
        raise ValueError("vocabulary words must be unique")
    bad = [w for w in vocab_words if not w or any(ch.isspace() for ch in w)]
    if bad:
        raise ValueError(f"vocabulary words cannot be empty or contain spaces: {bad[:5]}")
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab_words)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # TransformerLens re-reads a tokenizer from its ``name_or_path`` folder, so it must be
    # saved somewhere that lasts: a cache folder keyed by the vocabulary.
    folder = _cache_dir() / hashlib.sha1("\n".join(vocab_words).encode()).hexdigest()[:16]
    if not (folder / "tokenizer.json").exists():
        fresh = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, unk_token=UNK, pad_token=PAD)
        staging = Path(tempfile.mkdtemp(dir=folder.parent))
        fresh.save_pretrained(str(staging))
        try:
            staging.rename(folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(staging, ignore_errors=True)
    return load_tokenizer(folder)


def _cache_dir() -> Path:
    root = os.environ.get("INTERPLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "interplab")
    path = Path(root) / "tokenizers"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir()) / "interplab-tokenizers"
        path.mkdir(parents=True, exist_ok=True)
    return path


def load_tokenizer(folder: str | Path):
    """Reload a tokenizer written by ``save_pretrained`` (TransformerLens needs the reloaded form)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))
