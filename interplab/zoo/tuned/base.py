"""Recipe for ``chat-base``: the chat world's base mix, imitated (chapter 06's "pretrained" model).

d_model 64, 3 layers, 4 heads, trained 1,000 steps on ``chat.sample_base_mix`` with the loss on the response:
the feasibility study's base. It breaks the constitution the way its data does (judge score about 0.6).
"""
from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from interplab.worlds import chat
from interplab.zoo import tuned

NAME = tuned.BASE_NAME
DESCRIPTION = ("3-layer chat-world base model (d_model 64) trained on chapter 06's base mix: refuses harmful "
               "requests only about 80% of the time, as its data does, varied openers, optional tail sentences; the "
               "model chat-sft, chat-dpo, chat-rl and chat-control are tuned from")
DEFAULT_SEED = 0
TRAINING = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01, "warmup_steps": 50,
            "final_lr_fraction": 0.1, "betas": [0.9, 0.99]}


def model_config(seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=3, d_model=64, n_heads=4, d_head=16, attn_only=False, d_mlp=256, act_fn="gelu",
        d_vocab=chat.D_VOCAB, n_ctx=chat.SEQ_LEN, normalization_type="LN", seed=seed,
        positional_embedding_type="standard", initializer_range=0.02,
    )


def build(seed: int):
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(seed), tokenizer=chat.tokenizer())


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """From scratch on fresh base-mix batches; warm-up, then linear decay to 10%. Same seed, steps and
    threads -> same weights."""
    from interplab.zoo.training import TrainResult, provenance

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    torch.manual_seed(seed)
    model = build(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper["lr"], weight_decay=hyper["weight_decay"],
                                  betas=tuple(hyper["betas"]))
    total, warm, floor = hyper["steps"], hyper["warmup_steps"], hyper["final_lr_fraction"]

    def rate(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 1 - (1 - floor) * (step - warm) / max(1, total - warm)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    start, loss_value = time.perf_counter(), float("nan")
    bar = tqdm(range(total), desc=f"{NAME} seed {seed}", disable=not progress, mininterval=1.0)
    for step in bar:
        tokens, mask = chat.sample_base_mix(hyper["batch_size"], generator)
        width = int(mask.any(0).nonzero().max()) + 2
        tokens, mask = tokens[:, :width], mask[:, :width]
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][mask[:, :-1]], tokens[:, 1:][mask[:, :-1]])
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
    result = TrainResult(steps=total, final_loss=loss_value, seconds=time.perf_counter() - start)
    card = {"name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.chat", "seed": seed,
            "training": hyper, "metrics": evaluate(model),
            "training_summary": (f"d_model 64, 3 layers, 4 heads, MLP 256 (GELU), LayerNorm, learned positions, "
                                 f"context {chat.SEQ_LEN}; AdamW, linear decay after warm-up, gradient clip 1.0, "
                                 f"fresh base-mix batches (`chat.sample_base_mix`), loss on response tokens only. "
                                 f"Final loss {loss_value:.3f}: the base mix is random (openers, steps, tails), so "
                                 f"the loss cannot reach 0."),
            **provenance(result)}
    return model, card


def evaluate(model) -> dict[str, Any]:
    """The judge at T = 1 and greedy on the held-out prompts (``tuned.evaluate``)."""
    return tuned.evaluate(model)


card_markdown = tuned.card_markdown
