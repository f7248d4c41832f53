"""``python -m interplab.zoo list | train NAME [--seed S] [--steps N] [--out DIR] | card NAME``.

``card NAME`` re-measures a shipped model's card (metrics and, where the recipe
has one, its ground truth) from the shipped weights, without retraining and
without touching ``model.safetensors``; it rewrites ``card.json`` and ``MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from interplab.zoo import list_models, model_dir, recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped models with one-line descriptions")
    train = sub.add_parser("train", help="retrain a shipped model from scratch, deterministically")
    train.add_argument("name")
    train.add_argument("--seed", type=int, default=None, help="default: the shipped model's seed")
    train.add_argument("--steps", type=int, default=None, help="default: the shipped model's step count")
    train.add_argument("--out", default=None, help="folder to write; default: the shipped checkpoint (overwrites it)")
    train.add_argument("--threads", type=int, default=1,
                       help="torch threads; these models are too small to gain from more, and extra threads "
                            "spin-wait badly on a busy machine (the shipped metrics reproduce with 1 or 2)")
    card = sub.add_parser("card", help="recompute a shipped model's card (metrics, ground truth) from its weights")
    card.add_argument("name")
    card.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, description in list_models().items():
            print(f"{name:24s} {description}")
        return 0
    if args.command == "card":
        torch.set_num_threads(args.threads)
        return rewrite_card(args.name)

    torch.set_num_threads(args.threads)
    module = recipe(args.name)
    seed = module.DEFAULT_SEED if args.seed is None else args.seed
    model, card = module.train(seed=seed, steps=args.steps)
    if hasattr(module, "ground_truth"):
        card.update(module.ground_truth(model))
    from interplab.zoo.checkpoint import save_checkpoint

    folder = save_checkpoint(model, args.out or model_dir(args.name), card, module.card_markdown(card))
    print(json.dumps({k: card["metrics"][k] for k in card["metrics"] if not isinstance(card["metrics"][k], list)}))
    print(f"wrote {folder}")
    return 0


def rewrite_card(name: str) -> int:
    """Re-measure the card of a shipped model from its weights; keep what only training knows."""
    from interplab.zoo import load_model, model_card

    module = recipe(name)
    folder = model_dir(name)
    model = load_model(name)
    card = model_card(name)
    with torch.no_grad():
        card["metrics"] = module.evaluate(model)
        if hasattr(module, "ground_truth"):
            card.update(module.ground_truth(model))
    (folder / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(module.card_markdown(card))
    print(f"rewrote {folder / 'card.json'} and {folder / 'MODEL_CARD.md'} (weights untouched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
