"""Where alignment tuning's changes live in the shipped chapter-06 models: cross-model patching and weight spectra.

    python benchmarks/diffing.py [--models chat-sft,chat-rl] [--prompts 40] [--threads 1]

For each model tuned from ``chat-base`` (``chat-sft``, ``chat-rl``, ``chat-dpo`` and the control ``chat-control``):
  - cross-model activation patching (``diffing.cross_model_patch``) of every component (embeddings, each block's
    attention and MLP output, the head) at three decisions, both directions (base -> tuned: what undoes the
    change; tuned -> base: what installs it), patched at the decision position:
      * opener: log-odds of ``certainly`` against the base's other openers, at response position 0 of benign
        held-out prompts;
      * stop: log-odds of END against a tail sentence's first word, where the content ends, on the tuned
        model's greedy responses to the same prompts;
      * refusal: log-odds of ``sorry`` against the openers, at response position 0 of harmful held-out prompts;
    and the smallest set of components carrying >= 80% of each change (``diffing.carrying_components``, measured
    jointly; the issue's target), and the three single heads installing most of it;
  - per residual matrix, ΔW's relative norm, its effective rank (singular values holding 90% of ||ΔW||², and
    the entropy rank) and how its top singular directions line up with a harm direction computed on chat-base
    itself (difference of means of harmful and benign task prompts at the last prompt token, every residual
    layer; chapter 05's refusal direction belongs to chat-4l, another model, so it cannot be used here), next
    to the chance level for a random direction.
"""
from __future__ import annotations

import argparse
import time

import torch

MODELS = ("chat-sft", "chat-rl", "chat-dpo", "chat-control")
DECISIONS = ("opener", "stop", "refusal")


def decision_inputs(tuned, prompts, decision: str):
    """``(tokens, positions, metric)`` of one decision on ``tuned``'s greedy responses."""
    from interplab import diffing, finetune
    from interplab.generation import generate
    from interplab.worlds import chat

    responses = generate(tuned, prompts, max_new_tokens=finetune.MAX_NEW_TOKENS)
    if decision == "refusal":
        points = diffing.decision_points(prompts, responses, "opener")
        good = [chat.word_id("sorry")]
        bad = [chat.word_id(w) for w in ("sure", "ok", "certainly", "well")]
    else:
        points = diffing.decision_points(prompts, responses, decision)
        good, bad = diffing.decision_tokens(decision)
    return points.tokens, points.positions, diffing.decision_metric(points.positions, good, bad)


def harm_directions(base, n: int = 600):
    """chat-base's harm direction at every residual layer, and how well it separates held-out prompts (AUROC)."""
    from interplab import finetune, probes, steering
    from interplab.worlds import chat

    task = chat.KINDS.index("task")
    train = finetune.train_prompts(n, seed=11)
    train = train.subset(train.kind == task)
    harmful, benign = train.subset(train.harmful), train.subset(~train.harmful)
    directions = steering.mean_difference_directions(base, harmful.tokens, benign.tokens, harmful.last, benign.last)
    held = finetune.held_out_prompts()
    held = held.subset(held.kind == task)
    names = [steering.resid_hook(base, layer) for layer in directions]
    acts = probes.collect_activations(base, held.tokens, names, held.last, progress=False)
    separation = {layer: round(probes.auroc(acts[name] @ directions[layer], held.harmful), 3)
                  for layer, name in zip(directions, names)}
    return directions, separation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--prompts", type=int, default=40, help="held-out prompts per decision (benign or harmful)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from interplab import diffing, finetune
    from interplab.zoo import load_model

    start = time.perf_counter()
    base = load_model("chat-base")
    held = finetune.held_out_prompts()
    benign = held.subset(~held.harmful)
    benign = benign.subset(torch.linspace(0, len(benign) - 1, args.prompts).round().long().unique())
    harmful = held.subset(held.harmful)
    harmful = harmful.subset(torch.linspace(0, len(harmful) - 1, args.prompts).round().long().unique())
    prompts = {"opener": benign, "stop": benign, "refusal": harmful}
    directions, separation = harm_directions(base)
    print(f"harm direction on chat-base (difference of means at the last prompt token), held-out AUROC by "
          f"residual layer: {separation}")

    models = {name: load_model(name) for name in args.models.split(",")}
    for name, tuned in models.items():
        print(f"\n## {name} vs chat-base: cross-model patching at the decision position")
        for decision in DECISIONS:
            tokens, positions, metric = decision_inputs(tuned, prompts[decision], decision)
            for source, target, direction in ((base, tuned, "base -> tuned"), (tuned, base, "tuned -> base")):
                try:
                    found = diffing.carrying_components(source, target, tokens, positions, metric, threshold=0.8,
                                                        direction=direction)
                except ValueError as error:
                    print(f"{decision:8s} {direction}: {error}")
                    continue
                singles = found.singles
                print(f"{decision:8s} {direction}: metric {singles.target_value:+.3f} -> source "
                      f"{singles.source_value:+.3f} ({tokens.shape[0]} rows); single fractions "
                      + " ".join(f"{row['component']} {row['fraction']:+.2f}" for row in singles.table()))
                print(f"{'':8s} {found}")
            heads = [n for n in diffing.patch_components(tuned, heads=True) if ".head." in n]
            per_head = diffing.cross_model_patch(tuned, base, tokens, positions, metric, heads,
                                                 direction="tuned -> base")
            top = per_head.fractions.argsort(descending=True)[:3].tolist()
            print(f"{'':8s} single heads, tuned -> base, top 3: "
                  + " ".join(f"{per_head.labels[i]} {per_head.fractions[i].item():+.2f}" for i in top))

    print("\n## weight changes: effective rank of ΔW and alignment of its top directions with chat-base's harm "
          "direction")
    spectra = diffing.weight_spectra(models, base, direction=directions)
    for name, rows in spectra.items():
        print(f"\n{name} (chance |cos| for a random direction {rows[0]['chance_cos']:.3f}, chance 'along' "
              f"{1 / base.cfg.d_model:.4f})")
        print(f"{'matrix':16s} {'rel':>6s} {'rank90':>6s} {'erank':>6s} {'full':>4s} {'top':>5s} {'cos1':>5s} "
              f"{'cos3':>5s} {'along':>6s}")
        for row in rows:
            print(f"{row['matrix']:16s} {row['rel_change']:6.3f} {row['rank_90']:6d} {row['erank']:6.1f} "
                  f"{row['full']:4d} {row['top_share']:5.2f} {row['cos_top']:5.2f} {row['max_cos_top3']:5.2f} "
                  f"{row['along']:6.3f}")
        mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
        print(f"{'mean':16s} {mean('rel_change'):6.3f} {mean('rank_90'):6.1f} {mean('erank'):6.1f} {'':4s} "
              f"{mean('top_share'):5.2f} {mean('cos_top'):5.2f} {mean('max_cos_top3'):5.2f} {mean('along'):6.3f}")
    print(f"\ntook {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
