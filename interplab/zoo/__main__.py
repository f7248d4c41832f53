"""``python -m interplab.zoo list | train NAME [--seed S] [--steps N] [--out DIR]``."""
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
    train.add_argument("--threads", type=int, default=2, help="torch threads (results depend on it slightly)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, description in list_models().items():
            print(f"{name:24s} {description}")
        return 0

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


if __name__ == "__main__":
    sys.exit(main())
