"""Recipe for ``chat-base``: the chat world's base mix, imitated (chapter 06's "pretrained" model).

d_model 64, 3 layers, 4 heads, trained 1,000 steps on ``chat.sample_base_mix`` with the loss on the response:
the feasibility study's base. It breaks the constitution the way its data does (judge score about 0.6).
"""
from __future__ import annotations

from typing import Any

import torch

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
    return train_base(NAME, DESCRIPTION, chat.BASE_TAIL_RATE, seed, steps, progress)


def train_base(name: str, description: str, tail_rate: float, seed: int = DEFAULT_SEED, steps: int | None = None,
               progress: bool = True):
    """This recipe on a base mix whose tail follows with p ``tail_rate`` (``chat.sample_base_mix``)."""
    import time

    from interplab.zoo.training import provenance, train_from_scratch

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    if tail_rate != chat.BASE_TAIL_RATE:
        hyper["tail_rate"] = tail_rate

    def sample(size: int, generator: torch.Generator):
        return chat.sample_base_mix(size, generator, tail_rate=tail_rate)

    cpu_start = time.process_time()
    model, result = train_from_scratch(build, sample, hyper, seed, progress, desc=f"{name} seed {seed}",
                                       decay="linear", crop_padding=True)
    cpu_seconds = time.process_time() - cpu_start
    loss_value = result.final_loss
    mix = "`chat.sample_base_mix`" + (f" with tail_rate {tail_rate}" if "tail_rate" in hyper else "")
    card = {"name": name, "description": description, "world": "interplab.worlds.chat", "seed": seed,
            "training": hyper, "metrics": evaluate(model),
            "training_summary": (f"d_model 64, 3 layers, 4 heads, MLP 256 (GELU), LayerNorm, learned positions, "
                                 f"context {chat.SEQ_LEN}; AdamW, linear decay after warm-up, gradient clip 1.0, "
                                 f"fresh base-mix batches ({mix}), loss on response tokens only. "
                                 f"Final loss {loss_value:.3f}: the base mix is random (openers, steps, tails), so "
                                 f"the loss cannot reach 0."),
            **provenance(result), "train_cpu_seconds": round(cpu_seconds, 1)}
    return model, card


def evaluate(model) -> dict[str, Any]:
    """The judge at T = 1 and greedy on the held-out prompts (``tuned.evaluate``)."""
    return tuned.evaluate(model)


card_markdown = tuned.card_markdown
