"""The induction world: random blocks of tokens that repeat.

A learner's ground truth: the only way to predict a token in a repeated block
is to find the previous occurrence of the current token and copy what came
next, which is what an induction head does.

Why the block length varies: with a fixed period the model learns "attend 19
positions back" from position embeddings alone and no induction head forms
(measured, see the zoo model card). A random block of 4-20 tokens repeated to
fill the context leaves only the content-based route.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int

from interplab.worlds.vocab import BOS, SPECIAL_TOKENS, build_tokenizer, syllables

N_WORDS = 61  # + 3 special tokens = a 64-token vocabulary
SEQ_LEN = 40  # tokens after <bos>
MIN_BLOCK, MAX_BLOCK = 4, 20


def vocabulary() -> list[str]:
    return syllables(N_WORDS)


def tokenizer():
    return build_tokenizer(vocabulary())


FIRST_WORD_ID = len(SPECIAL_TOKENS)
D_VOCAB = FIRST_WORD_ID + N_WORDS


@dataclass
class InductionBatch:
    """Token ids with the ground truth of which positions are predictable by induction."""

    tokens: Int[torch.Tensor, "batch seq"]
    """``<bos>`` then ``SEQ_LEN`` word ids."""
    repeated: Bool[torch.Tensor, "batch seq"]
    """True where the *next* token is a copy of an earlier one (predictable by induction)."""
    block_len: Int[torch.Tensor, " batch"]
    """The period of each row's repetition."""


def _random_block(n: int, generator: torch.Generator, distinct: bool = True) -> torch.Tensor:
    if distinct:  # each token's previous occurrence is unique: a clean probe
        return torch.randperm(N_WORDS, generator=generator)[:n] + FIRST_WORD_ID
    return torch.randint(0, N_WORDS, (n,), generator=generator) + FIRST_WORD_ID


def sample_batch(batch_size: int, seed: int | None = None, generator: torch.Generator | None = None,
                 seq_len: int = SEQ_LEN) -> InductionBatch:
    """A batch of training sequences: a block of 4-20 random words, repeated until ``seq_len``."""
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    tokens = torch.empty(batch_size, seq_len + 1, dtype=torch.long)
    repeated = torch.zeros(batch_size, seq_len + 1, dtype=torch.bool)
    block_lens = torch.randint(MIN_BLOCK, MAX_BLOCK + 1, (batch_size,), generator=generator)
    tokens[:, 0] = 0  # <bos>
    for row, block_len in enumerate(block_lens.tolist()):
        # words may recur inside a training block, so a blurred "recent tokens" head is not enough
        # and layer 0 must learn a sharp previous-token head
        block = _random_block(block_len, generator, distinct=False)
        reps = -(-seq_len // block_len)
        tokens[row, 1:] = block.repeat(reps)[:seq_len]
        # position p predicts p+1; p+1 is a copy once p+1 > block_len
        repeated[row, block_len:seq_len] = True
    return InductionBatch(tokens=tokens, repeated=repeated, block_len=block_lens)


def repeated_tokens(batch_size: int, half_len: int = 20, seed: int = 0) -> Int[torch.Tensor, "batch seq"]:
    """``<bos>`` + ``half_len`` random words + the same words again: the classic induction probe.

    Position ``half_len + k`` (k >= 1) holds the same word as position ``k``; a perfect
    induction head at position ``i`` of the second half attends to ``i - half_len + 1``.
    """
    if not 1 <= half_len <= N_WORDS:
        raise ValueError(f"half_len must be between 1 and {N_WORDS} (distinct words), got {half_len}")
    generator = torch.Generator().manual_seed(seed)
    halves = torch.stack([_random_block(half_len, generator) for _ in range(batch_size)])
    bos = torch.zeros(batch_size, 1, dtype=torch.long)
    return torch.cat([bos, halves, halves], dim=1)


def describe(tokens: Int[torch.Tensor, " seq"]) -> str:
    """Human-readable text of one sequence."""
    words = list(SPECIAL_TOKENS) + vocabulary()
    return " ".join(words[int(t)] for t in tokens)


__all__ = ["BOS", "D_VOCAB", "InductionBatch", "SEQ_LEN", "describe", "repeated_tokens", "sample_batch",
           "tokenizer", "vocabulary"]
