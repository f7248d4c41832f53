"""Recipe for ``ioi-2l``: a 2-layer transformer with MLPs that solves indirect-object identification.

Its card carries the reference circuit, found by exact patching of every edge of
the model's computational graph (``interplab.patching.edge_patching_scores``), so a
learner can check a circuit found with a cheaper method against it.
"""
from __future__ import annotations

from typing import Any

import torch

from interplab.worlds import ioi

NAME = "ioi-2l"
DESCRIPTION = "2-layer transformer with MLPs (d_model 64, 4 heads) trained on the IOI world; finds the indirect object"
DEFAULT_SEED = 0
TRAINING = {"steps": 1800, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 50}
EVAL_SEED = 4321
EVAL_SIZE = 512
ACCURACY_THRESHOLD = 0.95  # held-out name pairs: the IO must be the top prediction
CIRCUIT_SEED = 77  # prompts the reference circuit is measured on
CIRCUIT_SIZE = 64
CIRCUIT_CORRUPTION = "abc"
FAITHFULNESS_TARGET = 0.9  # the reference circuit is the smallest top-k edge set reaching this


def model_config(seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=2, d_model=64, n_heads=4, d_head=16, attn_only=False, d_mlp=256, act_fn="gelu",
        d_vocab=ioi.D_VOCAB, n_ctx=ioi.PROMPT_LEN + 1, normalization_type="LN", seed=seed,
        positional_embedding_type="standard",
    )


def build(seed: int):
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(seed), tokenizer=ioi.tokenizer())


def logit_diff(logits: torch.Tensor, batch: ioi.IOIBatch) -> torch.Tensor:
    """Per-prompt logit(IO) - logit(S) at the END position."""
    end = logits[:, ioi.POS_END]
    return end.gather(-1, batch.io[:, None])[:, 0] - end.gather(-1, batch.s[:, None])[:, 0]


@torch.no_grad()
def evaluate(model) -> dict[str, Any]:
    """Accuracy and logit difference at END, on held-out and on training name pairs."""
    metrics: dict[str, Any] = {}
    for split, held_out in (("held_out", True), ("train_pairs", False)):
        batch = ioi.sample(EVAL_SIZE, seed=EVAL_SEED, held_out=held_out)
        logits = model(batch.tokens)
        metrics[f"{split}_accuracy"] = round((logits[:, ioi.POS_END].argmax(-1) == batch.io).float().mean().item(), 4)
        metrics[f"{split}_logit_diff"] = round(logit_diff(logits, batch).mean().item(), 3)
    batch = ioi.sample(EVAL_SIZE, seed=EVAL_SEED, held_out=True)
    for kind in ioi.CORRUPTIONS:
        corrupted = ioi.corrupt(batch, kind, seed=EVAL_SEED)
        metrics[f"logit_diff_{kind}"] = round(logit_diff(model(corrupted.tokens), batch).mean().item(), 3)
    return metrics


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True):
    """Train from scratch with full next-token loss; same seed, steps and threads -> same weights."""
    from interplab.zoo.training import provenance, train_from_scratch

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])

    def sample(size: int, generator: torch.Generator):
        return ioi.sample(size, generator=generator).with_answer(), None

    model, result = train_from_scratch(build, sample, hyper, seed, progress, desc=f"{NAME} seed {seed}")
    card = {
        "name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.ioi", "seed": seed,
        "training": hyper, "metrics": evaluate(model),
        "thresholds": {"held_out_accuracy": ACCURACY_THRESHOLD},
        **provenance(result),
    }
    return model, card


def circuit_prompts() -> tuple[ioi.IOIBatch, ioi.IOIBatch]:
    """The (clean, corrupted) prompts the reference circuit is measured on."""
    clean = ioi.sample(CIRCUIT_SIZE, seed=CIRCUIT_SEED, held_out=True)
    return clean, ioi.corrupt(clean, CIRCUIT_CORRUPTION, seed=CIRCUIT_SEED)


@torch.no_grad()
def ground_truth(model) -> dict[str, Any]:
    """The reference circuit: every edge patched exactly, alone; edges ranked by |effect|; the smallest
    top-k set whose circuit-only logit difference reaches ``FAITHFULNESS_TARGET`` of the full model's."""
    from interplab import patching

    clean, corrupted = circuit_prompts()
    metric = patching.logit_diff_metric(clean.answers, position=ioi.POS_END)
    graph = patching.ComputationalGraph.from_model(model)
    scores = patching.edge_patching_scores(model, clean.tokens, corrupted.tokens, metric, graph)
    ks = list(range(1, len(graph.edges) + 1))
    curve = patching.faithfulness_curve(model, clean.tokens, corrupted.tokens, metric, graph, scores, ks)
    k = next((k for k, f in zip(ks, curve.tolist()) if f >= FAITHFULNESS_TARGET), len(graph.edges))
    ranked = scores.abs().argsort(descending=True).tolist()[:k]
    edges = [graph.edge_names[i] for i in ranked]
    return {"reference_circuit": {
        "method": "exact edge patching: each edge of the computational graph corrupted alone (its receiver sees the "
                  f"sender's output on the '{CIRCUIT_CORRUPTION}' prompts), change in mean logit difference; the "
                  f"smallest top-k set by |change| whose faithfulness reaches {FAITHFULNESS_TARGET}",
        "corruption": CIRCUIT_CORRUPTION, "prompts": {"n": CIRCUIT_SIZE, "seed": CIRCUIT_SEED, "held_out": True},
        "faithfulness_target": FAITHFULNESS_TARGET, "k": k, "faithfulness": round(curve[k - 1].item(), 4),
        "faithfulness_curve": [round(v, 4) for v in curve.tolist()[:30]],
        "edges": edges, "edge_effects": [round(scores[i].item(), 4) for i in ranked],
        "heads": sorted({n for e in edges for n in patching.edge_nodes(e) if n.startswith("a")}),
        "n_edges_in_graph": len(graph.edges),
        "all_edge_effects": {name: round(v, 4) for name, v in zip(graph.edge_names, scores.tolist())},
    }}


def card_markdown(card: dict[str, Any]) -> str:
    from interplab.zoo.training import reproducibility_markdown

    m = card["metrics"]
    circuit = card.get("reference_circuit")
    circuit_md = ""
    if circuit:
        rows = "\n".join(f"| `{e}` | {v:+.3f} |" for e, v in zip(circuit["edges"], circuit["edge_effects"]))
        circuit_md = f"""
## Reference circuit
Method: {circuit['method']}. Prompts: {circuit['prompts']['n']} held-out prompts (seed {circuit['prompts']['seed']}).
Node names: `embed`, `a{{layer}}.{{head}}` (attention head), `m{{layer}}` (MLP), `logits`; an edge
`sender->receiver[.q|.k|.v]` says which input of a head it enters.

Faithfulness of these {circuit['k']} of {circuit['n_edges_in_graph']} edges alone (every other edge corrupted): **{circuit['faithfulness']:.3f}**
(circuit logit difference / full model logit difference). Heads in it: {', '.join(circuit['heads'])}.

| edge | change in logit difference when corrupted |
|---|---|
{rows}
"""
    return f"""# {card['name']}

{card['description']}.

## World
`interplab.worlds.ioi`: {len(ioi.TEMPLATES)} templates of 14 words such as "{ioi.TEMPLATES[0].format(A='mary', B='john', C='john', place='store', object='drink')}" -> mary,
{len(ioi.NAMES)} names, ABBA and BABA orders; {len(ioi.HELD_OUT_PAIRS)} of {len(ioi.HELD_OUT_PAIRS) + len(ioi.TRAIN_PAIRS)} name pairs never seen in training.

## Training
`python -m interplab.zoo train {card['name']} --seed {card['seed']}`: AdamW, full next-token loss,
{card['training']['steps']} steps, batch {card['training']['batch_size']}, lr {card['training']['lr']}.
Took {card['train_seconds']} s on {card['torch_threads']} CPU threads ({card['trained_with']}). Final loss {card['final_loss']}.

## Metrics (seed {EVAL_SEED}, {EVAL_SIZE} prompts)
- held-out name pairs: accuracy **{m['held_out_accuracy']:.3f}** (threshold {card['thresholds']['held_out_accuracy']}),
  mean logit difference logit(IO) - logit(S) **{m['held_out_logit_diff']:.2f}**
- training name pairs: accuracy {m['train_pairs_accuracy']:.3f}, logit difference {m['train_pairs_logit_diff']:.2f}
- logit difference (for the clean IO/S pair) on corrupted prompts: abc {m['logit_diff_abc']:.2f},
  s2_io {m['logit_diff_s2_io']:.2f}, third_name {m['logit_diff_third_name']:.2f}
{circuit_md}{reproducibility_markdown(card)}"""
