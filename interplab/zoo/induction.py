"""Recipe for ``attn2-induction``: a 2-layer attention-only model on the induction world."""
from __future__ import annotations

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

# Ground truth: which heads form the circuit, decided by ablations (see ground_truth()).
GROUND_TRUTH_THRESHOLDS = {
    "layer_loss_increase": 1.0,  # mean-ablating a whole layer must raise the repeated-half loss by >= 1 nat
    "recovery": 0.5,  # a circuit head, alone in its layer, recovers >= half of that loss
    "role_score": 0.6,  # a circuit head's role: the head score (previous-token, duplicate, induction) it reaches
    "necessary_loss_increase": 1.0,  # a head whose ablation alone costs >= 1 nat is "necessary"
}
ROLES = ("previous_token_heads", "duplicate_token_heads", "induction_heads")


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


@torch.no_grad()
def ground_truth(model) -> dict[str, Any]:
    """The model's induction circuit, derived from mean ablations on ``<bos> + A + A`` (held-out seed).

    Heads in one layer can be redundant (four induction heads each do the job alone), so removing
    one head at a time misses them. Instead, per layer: mean-ablate the whole layer (it must cost
    ``layer_loss_increase`` nats of repeated-half loss, or the layer plays no part), then keep one head
    and ablate the rest. A head that recovers at least ``recovery`` of the layer's loss is in the
    circuit; its role is the head score (previous-token, duplicate-token, induction) that reaches
    ``role_score``. Heads whose ablation alone costs ``necessary_loss_increase`` are "necessary".
    Returns ``{"ground_truth": {...}}`` for the model card.
    """
    limits = GROUND_TRUTH_THRESHOLDS
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    probe = induction.repeated_tokens(64, EVAL_HALF_LEN, seed=EVAL_SEED)
    means = circuits.mean_head_z(model, probe)

    def loss(heads: list) -> float:
        return circuits.ablated_repeated_half_loss(model, probe, EVAL_HALF_LEN, heads, "mean", means)

    logits, cache = model.run_with_cache(probe)
    clean = circuits.repeated_half_loss(logits, probe, EVAL_HALF_LEN)
    scores = {"previous_token_heads": circuits.previous_token_scores(cache),
              "duplicate_token_heads": circuits.duplicate_token_scores(cache, EVAL_HALF_LEN),
              "induction_heads": circuits.induction_scores(cache, EVAL_HALF_LEN)}
    single = [[loss([(layer, head)]) for head in range(n_heads)] for layer in range(n_layers)]
    layer_loss, alone, recovery = [], [], []
    for layer in range(n_layers):
        everyone = [(layer, head) for head in range(n_heads)]
        layer_loss.append(loss(everyone))
        alone.append([loss([h for h in everyone if h[1] != head]) for head in range(n_heads)])
        gap = layer_loss[-1] - clean
        recovery.append([(layer_loss[-1] - a) / gap if gap > 0 else 0.0 for a in alone[-1]])
    circuit: dict[str, list[list[int]]] = {role: [] for role in ROLES}
    for layer in range(n_layers):
        if layer_loss[layer] - clean < limits["layer_loss_increase"]:
            continue
        for head in range(n_heads):
            if recovery[layer][head] < limits["recovery"]:
                continue
            for role in ROLES:
                if scores[role][layer, head] >= limits["role_score"]:
                    circuit[role].append([layer, head])
    necessary = [[layer, head] for layer in range(n_layers) for head in range(n_heads)
                 if single[layer][head] - clean >= limits["necessary_loss_increase"]]

    def rounded(rows):
        return [[round(float(v), 4) for v in row] for row in rows]

    return {"ground_truth": {
        "circuit": circuit,
        "necessary_heads": necessary,
        "method": "mean ablation (per-position batch mean of hook_z) on <bos> + A + A, "
                  f"A = {EVAL_HALF_LEN} distinct random words, 64 sequences, seed {EVAL_SEED}; "
                  "loss = mean cross-entropy on the repeated half",
        "thresholds": dict(limits),
        "clean_loss": round(clean, 4),
        "layer_ablated_loss": [round(v, 4) for v in layer_loss],
        "single_head_ablated_loss": rounded(single),
        "head_alone_in_layer_loss": rounded(alone),
        "recovery": rounded(recovery),
    }}


def _ground_truth_markdown(truth: dict[str, Any]) -> str:
    limits = truth["thresholds"]

    def names(heads) -> str:
        return ", ".join(f"{layer}.{head}" for layer, head in heads) or "none"

    rows = "\n".join(
        f"| {layer}.{head} | {truth['single_head_ablated_loss'][layer][head]:.3f} | "
        f"{truth['head_alone_in_layer_loss'][layer][head]:.3f} | {truth['recovery'][layer][head]:.2f} |"
        for layer in range(len(truth["recovery"])) for head in range(len(truth["recovery"][0])))
    layers = ", ".join(f"layer {layer}: {v:.3f}" for layer, v in enumerate(truth["layer_ablated_loss"]))
    circuit = truth["circuit"]
    return f"""
## Ground truth: the circuit (`python -m interplab.zoo card {NAME}` recomputes it)
- previous-token heads: **{names(circuit['previous_token_heads'])}**
- induction heads: **{names(circuit['induction_heads'])}**
- duplicate-token heads: **{names(circuit['duplicate_token_heads'])}**
- necessary on their own (ablating just this head costs >= {limits['necessary_loss_increase']} nat): {names(truth['necessary_heads'])}

How: {truth['method']}. Clean loss {truth['clean_loss']:.4f}; with a whole layer ablated: {layers}
(a layer counts if this rises by >= {limits['layer_loss_increase']} nat). A head is in the circuit if, with the
other heads of its layer ablated, it recovers >= {limits['recovery']} of the layer's loss; its role is the head
score (above) that reaches {limits['role_score']}.

| head | loss, this head ablated | loss, only this head kept in its layer | recovery |
|---|---|---|---|
{rows}
"""


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True,
          lr: float | None = None, batch_size: int | None = None):
    """Train from scratch; same seed, same steps, same thread count -> same weights.

    ``lr`` and ``batch_size`` override the shipped recipe (a notebook's quick run trades a little
    polish for speed); leave them alone to reproduce the shipped model.
    """
    from interplab.zoo.training import provenance, train_from_scratch

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    if lr is not None:
        hyper["lr"] = lr
    if batch_size is not None:
        hyper["batch_size"] = batch_size

    def sample(size: int, generator: torch.Generator):
        return induction.sample_batch(size, generator=generator).tokens, None

    model, result = train_from_scratch(build, sample, hyper, seed, progress, desc=f"{NAME} seed {seed}")
    card = {
        "name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.induction", "seed": seed,
        "training": hyper, "metrics": evaluate(model),
        "thresholds": {"max_induction_score": INDUCTION_THRESHOLD, "repeat_accuracy": ACCURACY_THRESHOLD,
                       "max_previous_token_score": PREVIOUS_TOKEN_THRESHOLD},
        **provenance(result),
    }
    return model, card


def card_markdown(card: dict[str, Any]) -> str:
    metrics = card["metrics"]
    rows = "\n".join(
        f"| {layer}.{head} | {metrics['previous_token_scores'][layer][head]:.2f} | {metrics['induction_scores'][layer][head]:.2f} |"
        for layer in range(len(metrics["induction_scores"])) for head in range(len(metrics["induction_scores"][0]))
    )
    from interplab.zoo.training import reproducibility_markdown

    extra = _ground_truth_markdown(card["ground_truth"]) if "ground_truth" in card else ""
    extra += reproducibility_markdown(card)
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
