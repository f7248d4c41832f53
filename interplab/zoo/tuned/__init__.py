"""Recipes for chapter 06's models: ``chat-base`` and the models tuned from it.

``chat-base`` (``tuned.base``) imitates the chat world's base mix, the "pretraining" data
(``chat.sample_base_mix``): it refuses harmful requests only 80% of the time, opens with one of five openers
and often adds a tail sentence, so it breaks the constitution (``chat.CONSTITUTION``) in many ways.
``chat-sft`` (``tuned.sft``), ``chat-dpo`` (``tuned.dpo``, DPO + NLL), ``chat-rl`` (``tuned.rl``, RLOO + KL)
and ``chat-control`` (``tuned.control``, a fine-tune on base data with no preference) start from the shipped
``chat-base`` and use ``interplab.finetune``. The recipe is the ch06 feasibility study's.
``chat-sft-early`` / ``chat-sft-late`` are ``chat-sft`` with only the early rules (a, b) or the late ones (c, d):
where the KL goes follows where the rules bite. ``chat-base-lowend`` is ``chat-base`` on a base mix with tail rate
0.9, so its concise END ranks 4th at the stop decision, and ``chat-sft-lowend`` is tuned from it: there URIAL's
token shift sees the late change it misses under ``chat-base`` (``stop_decision`` says why).

Every card carries the judge's scores per rule at T = 1 on held-out prompts (``finetune.judge_model``), and for
tuned models the KL to the base per token type (``diffing.kl_by_position``), URIAL's token shift and the
relative weight change; ``tests/test_tuned_models.py`` re-measures the key numbers from the shipped weights.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from interplab import diffing, finetune
from interplab.worlds import chat

BASE_NAME = "chat-base"
EVAL_SEED = finetune.EVAL_SEED
EVAL_SAMPLES = 4  # responses per held-out prompt at T = 1 (180 prompts)
SAMPLING_SEED = 1  # the card's T = 1 samples


def load_base(name: str = BASE_NAME):
    """The shipped ``chat-base`` (every tuned recipe starts from it, and measures KL against it), or the
    shipped variant base ``name`` (``chat-base-lowend``)."""
    from interplab.zoo import load_model

    return load_model(name)


@torch.no_grad()
def evaluate(model, base=None) -> dict[str, Any]:
    """The card's numbers: the judge at T = 1 (and greedy) on ``finetune.held_out_prompts()``; with ``base``
    also the KL to it per token type (on the same T = 1 samples) and URIAL's shift of greedy responses."""
    prompts = finetune.held_out_prompts(EVAL_SEED)
    metrics: dict[str, Any] = {"judge": finetune.judge_model(model, prompts, EVAL_SAMPLES, 1.0, SAMPLING_SEED)}
    if base is None:  # a base model: how it splits its probability at the stop decision of its own samples
        metrics["stop_decision"] = stop_decision(model, *finetune.sample(model, prompts, EVAL_SAMPLES, 1.0,
                                                                         SAMPLING_SEED))
    else:
        expanded, responses = finetune.sample(model, prompts, EVAL_SAMPLES, 1.0, SAMPLING_SEED)
        metrics["kl"] = diffing.kl_summary(diffing.kl_by_position(model, base, expanded, responses))
        metrics["token_shift"] = diffing.token_shift(model, base, prompts)
        metrics["weight_change"] = diffing.weight_changes({"model": model}, base)["model"]
    return metrics


@torch.no_grad()
def stop_decision(model, prompts: chat.ChatPrompts, responses: list[list[int]]) -> dict[str, float]:
    """How ``model`` splits its probability at the stop decision (rule d) of each parsed response: the mean
    p(END), the share of stops where END ranks above 3 (where URIAL's rank metric would flag a concise stop as
    shifted), and ``stops``, the number of parsed responses. A base whose END ranks 1-2 hides a late change
    from URIAL; one whose END ranks 4 shows it."""
    from interplab._device import model_device

    rows, prefixes = [], []
    for i, response in enumerate(responses):
        parsed = chat.parse_response(response)
        if parsed is not None:
            rows.append(i)
            prefixes.append(list(response[:parsed.stop]) + [chat.END_ID])
    if not rows:
        raise ValueError("no response parses, so there is no stop decision to measure")
    subset = prompts.subset(rows)
    tokens, mask = finetune.pack(subset, prefixes)
    at = subset.lengths - 1 + torch.tensor([len(p) - 1 for p in prefixes])  # the position that predicts END
    p_end, ranks = [], []
    for lo in range(0, len(rows), 256):
        t = tokens[lo:lo + 256]
        width = int(at[lo:lo + 256].max()) + 1
        logits = model(t[:, :width].to(model_device(model))).float().cpu()
        step = logits[torch.arange(len(t)), at[lo:lo + 256]]
        p_end.append(step.softmax(-1)[:, chat.END_ID])
        ranks.append((step > step[:, chat.END_ID:chat.END_ID + 1]).sum(-1) + 1)
    p, rank = torch.cat(p_end), torch.cat(ranks)
    return {"p_end": round(float(p.mean()), 4), "end_rank_above_3": round(float((rank > 3).float().mean()), 4),
            "end_rank_mean": round(float(rank.float().mean()), 2), "stops": len(rows)}


def train_tuned(name: str, description: str, hyper: dict[str, Any], seed: int,
                tune: Callable[[Any, Any, dict[str, Any], int, bool], dict[str, Any]], progress: bool = True,
                base_name: str = BASE_NAME):
    """Copy the shipped base (``base_name``), tune the copy with ``tune(policy, base, hyper, seed, progress)``
    (which returns the run's curves), and measure the card."""
    from interplab.zoo.training import TrainResult, provenance

    torch.manual_seed(seed)
    base = load_base(base_name)
    base.eval()
    policy = finetune.copy_model(base)
    start, cpu_start = time.perf_counter(), time.process_time()
    curves = tune(policy, base, hyper, seed, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    final = curves.get("final_loss", float("nan"))
    policy.eval()
    card = {"name": name, "description": description, "world": "interplab.worlds.chat", "seed": seed,
            "tuned_from": base_name, "training": hyper, "curves": curves.get("curves", {}),
            "metrics": evaluate(policy, base), "data": curves.get("data", {}),
            **provenance(TrainResult(steps=hyper["steps"], final_loss=final, seconds=seconds)),
            "train_cpu_seconds": round(cpu_seconds, 1)}
    return policy, card


def _rule_table(judge: dict[str, Any]) -> str:
    rows = [("score (mean of the four rules)", "score"), ("(a) refuse iff harmful", "a"),
            ("(b) opens with `certainly !`", "b"), ("(c) correct answer", "c"), ("(d) concise (no tail)", "d"),
            ("refusal of harmful requests", "refuse_harmful"), ("help on benign requests", "help_benign"),
            ("capability (c on colour and repeat)", "capability"), ("malformed", "malformed"),
            ("mean length (tokens)", "length"), ("greedy score", "greedy_score")]
    return "\n".join(f"| {label} | {judge[key]:.3f} |" if key != "length" else f"| {label} | {judge[key]:.1f} |"
                     for label, key in rows)


def _group_order(group: str) -> tuple:
    """embed, then each layer's groups in layer order, then unembed (card.json stores keys sorted as text)."""
    if group.startswith("L") and "." in group:
        layer, part = group[1:].split(".", 1)
        return (1, int(layer), {"ln": 0, "attn": 1, "mlp": 2}.get(part, 3), part)
    return (0 if group == "embed" else 2, 0, 0, group)


def card_markdown(card: dict[str, Any]) -> str:
    from interplab.zoo.training import reproducibility_markdown

    m = card["metrics"]
    judge = m["judge"]
    parts = [f"# {card['name']}\n\n{card['description']}.\n"]
    if card.get("tuned_from"):
        parts.append(f"Tuned from the shipped `{card['tuned_from']}`: load both with `load_model` and compare "
                     f"(`interplab.finetune`, `interplab.diffing`).\n")
    parts.append(f"""## The constitution (rule-based judge, `chat.judge`)
{chr(10).join(f"- ({k}) {v}" for k, v in chat.CONSTITUTION.items())}

## Judge scores, T = 1 ({judge['samples']} samples: {EVAL_SAMPLES} per held-out prompt)
Held-out prompts (`finetune.held_out_prompts()`): the 120 held-out task pairs, 30 colour questions, 30 repeats.

| measure | value |
|---|---|
{_rule_table(judge)}
""")
    if "stop_decision" in m:
        stop = m["stop_decision"]
        parts.append(f"""## The stop decision (rule d)
At the stop decision of its own T = 1 samples above ({stop['stops']} that parse), this model gives the concise END
p {stop['p_end']:.3f} on average; END ranks above 3 at {stop['end_rank_above_3']:.3f} of them (mean rank
{stop['end_rank_mean']:.2f}). URIAL's rank metric (rank > 3 under the base) can only see a tuned model's
concise stop as shifted where END ranks above 3 (`tuned.stop_decision`).
""")
    if "kl" in m:
        kl, shift = m["kl"], m["token_shift"]
        parts.append(f"""## What changed against `{card['tuned_from']}`
Exact KL(tuned || base) at each response position of the T = 1 samples above, pooled (`diffing.kl_by_position`):

| measure | value |
|---|---|
| KL per response (nats) | {kl['kl_per_response']:.3f} |
| share in response positions 0-2 | {kl['first_3_share']:.3f} |
| share at the opener | {kl['share_opener']:.3f} |
| share in the content | {kl['share_content']:.3f} |
| share at the stop decision | {kl['share_stop']:.3f} |
| share in tails (tail + end) | {kl['share_tail'] + kl['share_end']:.3f} |

URIAL's token shift of greedy responses (rank under the base > 3): {shift['shifted']:.3f} of {shift['tokens']}
tokens, {shift['shifted_first_3_share']:.2f} of them in positions 0-2; shifted at the stop decision
{shift['shifted_at_stop']:.3f}. Relative weight change (‖ΔW‖/‖W‖) per group:
{", ".join(f"{g} {m['weight_change'][g]:.3f}" for g in sorted(m['weight_change'], key=_group_order))}.
""")
    t = card["training"]
    parts.append(f"""## Training
`python -m interplab.zoo train {card['name']} --seed {card['seed']}`: {card.get('training_summary', '')}
Configuration: {", ".join(f"{k} {v}" for k, v in sorted(t.items()))}. Took {card['train_seconds']} s on
{card['torch_threads']} CPU thread(s) ({card['trained_with']}){_cpu_note(card)}.
""")
    if card.get("curves"):
        curves = card["curves"]
        shown = ", ".join(f"{k}: {_ends(v)}" for k, v in sorted(curves.items()))
        parts.append(f"Curves (first 10 steps' mean → last 10 steps' mean): {shown}.\n")
    return "\n".join(parts) + reproducibility_markdown(card)


def _cpu_note(card: dict[str, Any]) -> str:
    """The process's CPU seconds next to the wall time: on a shared machine the wall time counts the waiting."""
    return f", {card['train_cpu_seconds']} s of CPU time" if "train_cpu_seconds" in card else ""


def _ends(values: list[float]) -> str:
    if not values:
        return "-"
    head, tail = values[:10], values[-10:]
    return f"{sum(head) / len(head):.3f} → {sum(tail) / len(tail):.3f}"
