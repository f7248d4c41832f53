"""One training loop for every zoo model: seeded, step-capped, with a progress bar.

Steps, not seconds, bound training: wall time on a shared 2-core machine varies
tenfold, the step count does not.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float


DECAYS = ("constant", "linear", "cosine")


def lr_multiplier(step: int, steps: int, warmup_steps: int, decay: str = "constant",
                  final_lr_fraction: float = 0.1) -> float:
    """The learning-rate factor at ``step``: linear warm-up, then constant, linear or cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    done = (step - warmup_steps) / max(1, steps - warmup_steps)
    if decay == "linear":
        return 1 - (1 - final_lr_fraction) * done
    return final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * done))


def train_next_token(
    model: torch.nn.Module,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 50,
    progress: bool = True,
    desc: str = "training",
    betas: tuple[float, float] = (0.9, 0.99),
    decay: str = "constant",
    final_lr_fraction: float = 0.1,
    crop_padding: bool = False,
) -> TrainResult:
    """Train ``model`` with AdamW on next-token cross-entropy.

    ``next_batch`` returns ``(tokens [batch, seq], loss_mask [batch, seq] or None)``;
    the mask marks the positions whose *next* token counts in the loss. The learning rate warms up
    linearly, then stays (``decay="constant"``) or falls to ``final_lr_fraction`` (``"linear"``,
    ``"cosine"``). ``crop_padding`` drops columns after the last masked position: same loss, less compute.
    """
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; choose one of {', '.join(DECAYS)}")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, steps, warmup_steps, decay, final_lr_fraction))
    start = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        tokens, mask = next_batch()
        if crop_padding and mask is not None:
            width = int(mask.any(0).nonzero().max()) + 2
            tokens, mask = tokens[:, :width], mask[:, :width]
        logits = model(tokens)
        log_probs = logits[:, :-1].log_softmax(-1)
        token_loss = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
        loss = token_loss[mask[:, :-1]].mean() if mask is not None else token_loss.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    return TrainResult(steps=steps, final_loss=loss_value, seconds=time.perf_counter() - start)


def train_from_scratch(
    build: Callable[[int], torch.nn.Module],
    sample: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]],
    hyper: dict[str, Any],
    seed: int,
    progress: bool,
    desc: str,
    decay: str = "constant",
    crop_padding: bool = False,
) -> tuple[torch.nn.Module, TrainResult]:
    """A zoo recipe's whole training run: seed, build, stream seeded batches, train.

    ``sample(batch_size, generator)`` returns ``(tokens, loss_mask or None)``. ``hyper`` may set
    ``betas`` and ``final_lr_fraction`` beside steps, batch size, lr, weight decay and warm-up. Same seed,
    ``hyper`` and thread count -> same weights.
    """
    torch.manual_seed(seed)
    model = build(seed)
    generator = torch.Generator().manual_seed(seed)
    result = train_next_token(model, lambda: sample(hyper["batch_size"], generator), steps=hyper["steps"],
                              lr=hyper["lr"], weight_decay=hyper["weight_decay"],
                              warmup_steps=hyper["warmup_steps"], progress=progress, desc=desc,
                              betas=tuple(hyper.get("betas", (0.9, 0.99))), decay=decay,
                              final_lr_fraction=hyper.get("final_lr_fraction", 0.1), crop_padding=crop_padding)
    return model, result


# How far a retrained weight may sit from the shipped one (absolute), on another machine or torch build.
# Measured: a full retrain of attn2-induction with other CPU kernels (ATEN_CPU_CAPABILITY=default,
# MKL_ENABLE_INSTRUCTIONS=SSE4_2) moved every weight by at most 2e-6, except the key biases, by up to 0.006:
# attention ignores a key bias (it adds the same amount to every score of a query, and softmax drops it), so
# its gradient is float noise, which Adam scales up to full-size steps. tests/test_zoo.py checks both bounds.
WEIGHT_TOLERANCE = 1e-3
KEY_BIAS_TOLERANCE = 0.01


def reproducibility_markdown(card: dict[str, Any]) -> str:
    """The card's statement of what a retrain reproduces, and what it does not."""
    return f"""
## Reproducibility
Training is seeded (seed {card['seed']}, batches from a seeded generator). Retraining with
`python -m interplab.zoo train {card['name']}` (it writes to `~/.cache/interplab/zoo/{card['name']}`, not over
this folder) gives:
- bit-identical weights every time on one machine with the same thread count (`--threads`);
- on any machine, the metrics and ground truth on this card, to the card's rounding;
- not bit-identical weights to the shipped ones: another CPU, thread count or torch build adds floating-point
  sums in another order. Every weight stays within {WEIGHT_TOLERANCE:g} of the shipped one, except the attention key
  biases (within {KEY_BIAS_TOLERANCE:g}): attention ignores them, so their gradient is float noise that Adam scales up.
  `tests/test_zoo.py` checks this for `attn2-induction`.
"""


def provenance(result: TrainResult) -> dict[str, Any]:
    """The card fields that say how a checkpoint was made (every recipe's card carries them)."""
    return {
        "final_loss": round(result.final_loss, 4),
        "train_seconds": round(result.seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "trained_with": f"torch {torch.__version__}, {platform.machine()}",
    }
