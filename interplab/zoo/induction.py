"""Recipe for ``attn2-induction``: a 2-layer attention-only model on the induction world."""
from __future__ import annotations

import platform
from typing import Any

import torch

from interplab import circuits
from interplab.worlds import induction

NAME = "attn2-induction"
DESCRIPTION = "2-layer attention-only transformer (d_model 64, 4 heads) trained on repeated random blocks; grows induction heads"
DEFAULT_SEED = 0
TRAINING = {"steps": 2500, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 50}
EVAL_HALF_LEN = 20
EVAL_SEED = 12345
INDUCTION_THRESHOLD = 0.6  # a layer-1 head must put at least this much attention on the induction target
ACCURACY_THRESHOLD = 0.9  # next-token accuracy where the next token is a repeat
PREVIOUS_TOKEN_THRESHOLD = 0.6  # a layer-0 head must attend to the previous token at least this much


def model_config(seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, attn_only=True, d_vocab=induction.D_VOCAB,
        n_ctx=induction.SEQ_LEN + 1, normalization_type="LN", seed=seed, positional_embedding_type="standard",
    )


def build(seed: int):
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(seed), tokenizer=induction.tokenizer())


@torch.no_grad()
def evaluate(model) -> dict[str, Any]:
    """The metrics on the model card, measured on held-out seeds."""
    batch = induction.sample_batch(256, seed=EVAL_SEED)
    logits = model(batch.tokens)
    accuracy = circuits.next_token_accuracy(logits, batch.tokens, batch.repeated)
    probe = induction.repeated_tokens(64, EVAL_HALF_LEN, seed=EVAL_SEED)
    probe_logits, cache = model.run_with_cache(probe)
    second_half = torch.zeros_like(probe, dtype=torch.bool)
    second_half[:, EVAL_HALF_LEN + 1:] = True
    ind = circuits.induction_scores(cache, EVAL_HALF_LEN)
    prev = circuits.previous_token_scores(cache)
    return {
        "repeat_accuracy": round(accuracy, 4),
        "repeated_tokens_accuracy": round(circuits.next_token_accuracy(probe_logits, probe, second_half), 4),
        "induction_scores": [[round(v, 3) for v in row] for row in ind.tolist()],
        "previous_token_scores": [[round(v, 3) for v in row] for row in prev.tolist()],
        "max_induction_score": round(ind[1].max().item(), 4),
        "max_previous_token_score": round(prev[0].max().item(), 4),
    }


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """Train from scratch; same seed, same steps, same thread count -> same weights."""
    from interplab.zoo.training import train_next_token

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    torch.manual_seed(seed)
    model = build(seed)
    generator = torch.Generator().manual_seed(seed)

    def next_batch():
        batch = induction.sample_batch(hyper["batch_size"], generator=generator)
        return batch.tokens, None

    result = train_next_token(model, next_batch, steps=hyper["steps"], lr=hyper["lr"],
                              weight_decay=hyper["weight_decay"], warmup_steps=hyper["warmup_steps"],
                              progress=progress, desc=f"{NAME} seed {seed}")
    metrics = evaluate(model)
    card = {
        "name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.induction", "seed": seed,
        "training": hyper, "final_loss": round(result.final_loss, 4), "metrics": metrics,
        "thresholds": {"max_induction_score": INDUCTION_THRESHOLD, "repeat_accuracy": ACCURACY_THRESHOLD,
                       "max_previous_token_score": PREVIOUS_TOKEN_THRESHOLD},
        "train_seconds": round(result.seconds, 1), "torch_threads": torch.get_num_threads(),
        "trained_with": f"torch {torch.__version__}, {platform.machine()}",
    }
    return model, card


def card_markdown(card: dict[str, Any]) -> str:
    metrics = card["metrics"]
    rows = "\n".join(
        f"| {layer}.{head} | {metrics['previous_token_scores'][layer][head]:.2f} | {metrics['induction_scores'][layer][head]:.2f} |"
        for layer in range(len(metrics["induction_scores"])) for head in range(len(metrics["induction_scores"][0]))
    )
    extra = card.get("ground_truth_markdown", "")
    return f"""# {card['name']}

{card['description']}.

## World
`interplab.worlds.induction`: `<bos>` then a block of {induction.MIN_BLOCK}-{induction.MAX_BLOCK} distinct random words
(from {induction.N_WORDS} syllables), repeated until {induction.SEQ_LEN} tokens. A fixed period would let layer 0
solve the task from position embeddings alone with no induction head; the variable period leaves only
the content-based route.

## Training
`python -m interplab.zoo train {card['name']} --seed {card['seed']}`: AdamW, full next-token loss,
{card['training']['steps']} steps, batch {card['training']['batch_size']}, lr {card['training']['lr']},
seed {card['seed']}. Took {card['train_seconds']} s on {card['torch_threads']} CPU threads ({card['trained_with']}).
Final training loss {card['final_loss']}.

## Metrics (held-out seed {EVAL_SEED})
- next-token accuracy where the next token repeats an earlier one: **{metrics['repeat_accuracy']:.3f}**
  (threshold {card['thresholds']['repeat_accuracy']})
- accuracy on the second half of `<bos> + A + A` (A = {EVAL_HALF_LEN} random words): {metrics['repeated_tokens_accuracy']:.3f}
- best layer-1 induction score: **{metrics['max_induction_score']:.3f}** (threshold {card['thresholds']['max_induction_score']})
- best layer-0 previous-token score: **{metrics['max_previous_token_score']:.3f}** (threshold {card['thresholds']['max_previous_token_score']})

| head | previous-token score | induction score |
|---|---|---|
{rows}
{extra}"""
