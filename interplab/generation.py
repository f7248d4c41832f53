"""Generate responses from a batch of prompts of different lengths, greedily or by seeded sampling.

Prompts come right-padded, as every world builds them. Each row continues at
its own position (the token after its prompt), so a batch needs no left
padding and no attention mask: causal attention never looks at the padding
after a row's last token, and each new token overwrites it. That keeps every
position the same as in an unpadded run, which matters for learned positional
embeddings and rotary models alike.

``fwd_hooks`` (TransformerLens ``(name, fn)`` pairs) are active in every
forward pass: this is how steered or ablated models generate. With hooks, each
pass sees the whole batch (rows that have stopped keep running and are
ignored), so a hook may hold per-row tensors of the batch's size. Without
hooks, a pass runs only the rows still generating; sampling still draws for
every row (a stopped row gets a uniform distribution it ignores), so the
random stream, and with it every sample, is the same either way.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.worlds import chat

Hook = tuple[str | Callable[[str], bool], Callable]
PromptBatch = chat.ChatPrompts | tuple[Int[torch.Tensor, "batch seq"], Int[torch.Tensor, " batch"]]


def _unpack(prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(prompts, chat.ChatPrompts):
        return prompts.tokens, prompts.lengths
    if not isinstance(prompts, (tuple, list)) or len(prompts) != 2:
        raise TypeError("prompts must be a ChatPrompts or a (tokens [batch, seq], lengths [batch]) pair; "
                        f"got {type(prompts).__name__}")
    tokens, lengths = (torch.as_tensor(x) for x in prompts)
    return tokens, lengths


def _check(tokens: torch.Tensor, lengths: torch.Tensor, n_ctx: int, d_vocab: int) -> None:
    if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens must be integer ids of shape [batch, seq]; got {tuple(tokens.shape)} "
                         f"{tokens.dtype}. For one prompt use tokens[None] and lengths=torch.tensor([len])")
    if lengths.shape != (tokens.shape[0],):
        raise ValueError(f"lengths must hold one prompt length per row: shape ({tokens.shape[0]},), "
                         f"got {tuple(lengths.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError("no prompts to continue: the batch is empty")
    if (lengths < 1).any() or (lengths > tokens.shape[1]).any():
        raise ValueError(f"every prompt length must be between 1 and seq={tokens.shape[1]}; got "
                         f"{lengths.min().item()}..{lengths.max().item()}")
    if int(lengths.max()) >= n_ctx:
        raise ValueError(f"a prompt of {int(lengths.max())} tokens leaves no room in the model's context "
                         f"(n_ctx={n_ctx}); shorten the prompt")
    valid = torch.arange(tokens.shape[1])[None] < lengths.cpu()[:, None]
    used = tokens.cpu()[valid]
    if (used < 0).any() or (used >= d_vocab).any():
        raise ValueError(f"prompt token ids must lie in 0..{d_vocab - 1} (the model's d_vocab); got "
                         f"{used.min().item()}..{used.max().item()}. Was the prompt built for another world?")


@torch.no_grad()
def generate(model, prompts: PromptBatch, max_new_tokens: int = 24, temperature: float = 0.0, seed: int = 0,
             stop_token: int | None = chat.END_ID, fwd_hooks: Sequence[Hook] = (), progress: bool = False
             ) -> list[list[int]]:
    """Continue each prompt; returns each row's response token ids (prompt excluded, stop token included).

    ``prompts``: a ``chat.ChatPrompts`` or ``(tokens [batch, seq], lengths [batch])`` with right padding.
    Greedy when ``temperature`` is 0, otherwise sampling from ``softmax(logits / temperature)`` with a generator
    seeded by ``seed`` (same seed, same samples). A row stops at ``stop_token`` (None: never), after
    ``max_new_tokens`` tokens, or when it fills the model's context ``n_ctx``.
    """
    tokens, lengths = _unpack(prompts)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    n_ctx, d_vocab = model.cfg.n_ctx, model.cfg.d_vocab
    _check(tokens, lengths, n_ctx, d_vocab)
    device = model_device(model)
    batch = tokens.shape[0]
    width = min(int(lengths.max()) + max_new_tokens, n_ctx)
    buffer = torch.zeros(batch, width, dtype=torch.long, device=device)
    keep = min(tokens.shape[1], width)
    buffer[:, :keep] = tokens[:, :keep].to(device=device, dtype=torch.long)
    position = lengths.to(device=device, dtype=torch.long) - 1  # each row's current last token
    rows = torch.arange(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    responses: list[list[int]] = [[] for _ in range(batch)]
    generator = torch.Generator().manual_seed(seed)
    hooks = model.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else contextlib.nullcontext()
    was_training = model.training
    model.eval()  # dropout off: generation is deterministic
    try:
        with hooks:
            for _ in tqdm(range(max_new_tokens), desc="generating", disable=not progress):
                done |= position + 1 >= width
                if done.all():
                    break
                end = int(position[~done].max()) + 1
                # hooks may hold per-row tensors, so with hooks every pass runs the whole batch; without, only
                # the rows still running. Rows left out get a uniform distribution, drawn from and ignored.
                active = rows if fwd_hooks else rows[~done]
                logits = model(buffer[active, :end])
                step_logits = torch.zeros(batch, logits.shape[-1], device=device)
                step_logits[active] = logits[torch.arange(len(active), device=device),
                                             position[active].clamp(max=end - 1)].float()
                if temperature == 0:
                    chosen = step_logits.argmax(-1)
                else:
                    probs = torch.softmax(step_logits / temperature, dim=-1).cpu()
                    chosen = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
                live = ~done
                buffer[rows[live], position[live] + 1] = chosen[live]
                position[live] += 1
                chosen_ids = chosen.tolist()  # one transfer per step, not one per row
                for i in rows[live].tolist():
                    responses[i].append(chosen_ids[i])
                if stop_token is not None:
                    done |= live & (chosen == stop_token)
    finally:
        model.train(was_training)
    return responses


def generate_text(model, prompts: PromptBatch, **options) -> list[str]:
    """``generate``, with each response decoded to words of the chat world (for printing)."""
    return [chat.describe(r) for r in generate(model, prompts, **options)]


__all__ = ["generate", "generate_text"]
