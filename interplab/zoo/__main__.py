"""``python -m interplab.zoo list | train NAME [--seed S] [--steps N] [--out DIR | --replace-shipped] | card NAME``.

Run it with the course's interpreter (``.venv/bin/python -m interplab.zoo ...``, or activate
the venv first with ``source .venv/bin/activate``).

``train NAME`` retrains a zoo model from scratch into ``~/.cache/interplab/zoo/NAME`` (or
``--out DIR``); the shipped checkpoint stays as it is unless ``--replace-shipped`` is given.
Load the result with ``load_model("<the folder it printed>")``. On one machine with the same
thread count, retraining gives the same weights every time; elsewhere it gives the card's
metrics and ground truth but weights that differ slightly from the shipped ones.

``card NAME`` re-measures a shipped model's card (metrics and, where the recipe
has one, its ground truth) from the shipped weights, without retraining and
without touching ``model.safetensors``; it rewrites ``card.json`` and ``MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CommandError(Exception):
    """Bad input to the command line: printed as one message, no traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped models with one-line descriptions")
    train = sub.add_parser("train", help="retrain a zoo model from scratch, deterministically, into a user folder")
    train.add_argument("name")
    train.add_argument("--seed", type=int, default=None, help="default: the shipped model's seed")
    train.add_argument("--steps", type=int, default=None, help="default: the shipped model's step count")
    where = train.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="folder to write; default: ~/.cache/interplab/zoo/NAME")
    where.add_argument("--replace-shipped", action="store_true",
                       help="overwrite the shipped checkpoint and card in the package (authors only)")
    train.add_argument("--threads", type=int, default=1,
                       help="torch threads; these models are too small to gain from more, and extra threads "
                            "spin-wait badly on a busy machine. Weights are bit-identical only for the same "
                            "thread count on the same machine")
    card = sub.add_parser("card", help="recompute a shipped model's card (metrics, ground truth) from its weights")
    card.add_argument("name")
    card.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    from interplab.zoo import BrokenCheckpointError, ModelNotAvailableError

    try:
        if args.command == "list":
            return list_command()
        if args.command == "card":
            return rewrite_card(args.name, args.threads)
        return train_command(args)
    except (CommandError, ModelNotAvailableError, BrokenCheckpointError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def list_command() -> int:
    from interplab.zoo import list_models, minilm, python_command

    for name, description in list_models().items():
        print(f"{name:24s} {description}")
    status = "" if minilm.available() else f"  [not installed: {minilm.INSTALL_HINT}]"
    print(f"{minilm.NAME:24s} {minilm.DESCRIPTION}{status}")
    print(f"\nretrain one with `{python_command()} -m interplab.zoo train NAME` (writes to ~/.cache/interplab/zoo/NAME)")
    print(f"shipped sparse autoencoders: `{python_command()} -m interplab.zoo.saes list`")
    return 0


def train_command(args) -> int:
    import torch

    from interplab.zoo import model_dir, python_command, recipe, user_model_dir
    from interplab.zoo.checkpoint import save_checkpoint

    module = recipe(args.name)
    if args.threads < 1:
        raise CommandError(f"--threads must be at least 1, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    if args.replace_shipped:
        folder = model_dir(args.name)
    else:
        folder = Path(args.out).expanduser() if args.out else user_model_dir(args.name)
        if folder.resolve() == model_dir(args.name).resolve():
            raise CommandError(f"{folder} is the shipped checkpoint; pass --replace-shipped to overwrite it")
        if folder.exists() and not folder.is_dir():
            raise CommandError(f"--out {folder} is a file, not a folder")
    torch.set_num_threads(args.threads)
    seed = module.DEFAULT_SEED if args.seed is None else args.seed
    model, card = module.train(seed=seed, steps=args.steps)
    if hasattr(module, "ground_truth"):
        card.update(module.ground_truth(model))
    save_checkpoint(model, folder, card, module.card_markdown(card))
    print(json.dumps({k: card["metrics"][k] for k in card["metrics"] if not isinstance(card["metrics"][k], list)}))
    print(f"wrote {folder} (model.safetensors, config.json, tokenizer, card.json, MODEL_CARD.md)")
    if args.replace_shipped:
        print(f"replaced the shipped {args.name}; `git diff --stat {folder}` shows what changed")
    else:
        print(f"the shipped model in {model_dir(args.name)} is untouched; load yours with "
              f"load_model({str(folder)!r})")
    print(f"(run with {python_command()})")
    return 0


def rewrite_card(name: str, threads: int) -> int:
    """Re-measure the card of a shipped model from its weights; keep what only training knows."""
    import torch

    from interplab.zoo import load_model, model_card, model_dir, recipe

    torch.set_num_threads(threads)
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
