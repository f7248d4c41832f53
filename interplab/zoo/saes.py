"""Trained SAEs shipped with the zoo, so a notebook loads one in a second instead of training it for minutes.

``load_sae("attn2-induction-topk")`` returns an :class:`interplab.saes.SAE`; ``sae_card(name)`` its
card (recipe settings, metrics, variable recovery). Each folder under ``interplab/zoo/saes/`` is in
SAELens's layout (``cfg.json`` + ``sae_weights.safetensors``; the card sits under ``cfg.json``'s
``interplab`` key, which SAELens ignores) with a ``README.md`` model card beside it.

    python -m interplab.zoo.saes list
    python -m interplab.zoo.saes train attn2-induction-topk [--replace-shipped] [--threads 1]

``train`` rebuilds one from its recipe, deterministically (seeded activations, seeded batches), into
``~/.cache/interplab/saes/NAME`` unless ``--replace-shipped`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from interplab import saes as sae_lib
from interplab.zoo import ModelNotAvailableError, did_you_mean

SAES_DIR = Path(__file__).parent / "saes"
CARD_FILENAME = "README.md"
THRESHOLD = 0.95  # AUROC at which a latent (or a probe) counts as recovering a variable

_INDUCTION = dict(model="attn2-induction", hook="blocks.1.hook_resid_pre", d_sae=512, steps=1500, batch_size=4096,
                  lr=1e-3, seed=0, train_sequences=12500, train_seed=1, eval_sequences=1500, eval_seed=2,
                  ce_sequences=500)

# name -> recipe: where the activations come from, the architecture, and train_sae's settings
RECIPES: dict[str, dict] = {
    "attn2-induction-topk": dict(
        _INDUCTION, architecture="topk", k=8, aux_k=32, aux_coefficient=1.0, dead_after_tokens=200_000,
        description="TopK (k 8) + AuxK SAE, width 512, at attn2-induction's blocks.1.hook_resid_pre"),
    "attn2-induction-relu": dict(
        _INDUCTION, architecture="standard", l1_coefficient=1.0, dead_after_tokens=200_000,
        description="ReLU + L1 (coefficient 1.0) SAE, width 512, at attn2-induction's blocks.1.hook_resid_pre"),
}

# what a card must say beyond its numbers (shown when the card's recipe is the shipped one)
NOTES: dict[str, str] = {
    "attn2-induction-topk": """Dead latents: 4.9% of the latents never fire on the 60,000 held-out tokens (course target
<= 5%), and 0.2% were silent for the last 200,000 training tokens (the criterion AuxK acts on). The AuxK loss is
weighted 1 here, not Gao et al.'s 1/32: with 1/32 the same recipe leaves 7.2% dead on the held-out tokens (3.5% in
training) at the same explained variance (0.958) and nearly the same CE increase (+0.016 against +0.015 nats);
rerun it with
`python -m interplab.zoo.saes train attn2-induction-topk --aux-coefficient 0.03125`.
Most of the latents that never fire here are rare rather than broken: their largest pre-activation on the held-out
tokens falls just short of the k-th largest, and many more fire only a handful of times in 60,000 tokens, so the
dead fraction depends on how many tokens are watched (a smaller sample shows more). It is one seed, and it moves
by more than a point with floating-point summation order alone: 4.9% is at the target, not comfortably below it.
Resampling (`--resample-at 250,500,750,1000`) is the other lever the CLI exposes.""",
    "attn2-induction-relu": """The contrast to `attn2-induction-topk` on the same activations: L1 fires about 42 latents a token
and still explains less variance (0.931 against TopK's 0.958 at exactly 8), with a larger CE increase. The L1
penalty also shrinks the activations of the latents that fire; TopK (Gao et al. 2024) has no such penalty.""",
}


def _recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ModelNotAvailableError(f"{name!r} is not a shipped SAE.{did_you_mean(name, RECIPES)} "
                                     f"Shipped: {', '.join(sorted(RECIPES))} (see list_saes())")
    return RECIPES[name]


def list_saes() -> dict[str, str]:
    """Shipped SAE names with one-line descriptions."""
    return {name: recipe["description"] for name, recipe in RECIPES.items()}


def sae_dir(name: str) -> Path:
    """The shipped folder of an SAE (inside the package; ``train`` leaves it alone)."""
    _recipe(name)
    return SAES_DIR / name


def user_sae_dir(name: str) -> Path:
    """Where ``python -m interplab.zoo.saes train NAME`` writes by default: ``~/.cache/interplab/saes/NAME``."""
    _recipe(name)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "interplab" / "saes" / name


def _shipped_folder(name: str) -> Path:
    folder = sae_dir(name)
    if not (folder / sae_lib.CFG_FILENAME).is_file() or not (folder / sae_lib.WEIGHTS_FILENAME).is_file():
        raise ModelNotAvailableError(
            f"the shipped SAE {name!r} is missing from {folder}: restore it from git, or rebuild it with "
            f"`python -m interplab.zoo.saes train {name} --replace-shipped`")
    return folder


def load_sae(name: str) -> sae_lib.SAE:
    """A shipped SAE by name (``list_saes()``); for a folder of your own use :func:`interplab.saes.load_sae`."""
    return sae_lib.load_sae(_shipped_folder(name))


def sae_card(name: str) -> dict:
    """The card of a shipped SAE: recipe settings, metrics on held-out tokens, variable recovery, provenance."""
    return sae_lib.read_sae_config(_shipped_folder(name))["interplab"]


# ---------------------------------------------------------------- recipe: data, evaluation, training

def _induction_data(recipe: dict, sequences: int, seed: int):
    from interplab.worlds import induction

    return induction.sample_batch(sequences, seed=seed)


def evaluate(sae: sae_lib.SAE, recipe: dict, model=None, eval_sequences: int | None = None,
             ce_sequences: int | None = None, eval_seed: int | None = None, ceiling: bool = True,
             progress: bool = False) -> dict:
    """The card's metrics for ``sae`` on held-out sequences (the recipe's, or a smaller/other sample).

    L0, explained variance and dead fraction on every held-out token; CE clean / spliced / mean- and
    zero-ablated on the first ``ce_sequences``; for each current-token and previous-token variable
    the best single latent's AUROC and (``ceiling``) the linear-probe ceiling at the same site.
    """
    from interplab.sae_variables import induction_variables
    from interplab.zoo import load_model

    model = model if model is not None else load_model(recipe["model"])
    batch = _induction_data(recipe, eval_sequences or recipe["eval_sequences"],
                            recipe["eval_seed"] if eval_seed is None else eval_seed)
    held_out = sae_lib.cache_activations(model, batch.tokens, recipe["hook"], model_name=recipe["model"],
                                         progress=False)
    metrics = sae_lib.reconstruction_metrics(sae, held_out)
    ce_tokens = batch.tokens[:ce_sequences or recipe["ce_sequences"]]
    ce = sae_lib.ce_metrics(model, sae, ce_tokens, mean_activation=held_out.acts.mean(0), progress=progress)
    variables = induction_variables(held_out)  # current and previous token: what lives at resid_pre
    recovery = sae_lib.variable_recovery(sae_lib.encode_all(sae, held_out), variables, progress=progress)
    readable = sae_lib.probe_ceiling(held_out, variables).recovered(THRESHOLD) if ceiling else \
        torch.ones(len(variables), dtype=torch.bool)
    recovered = recovery.recovered(THRESHOLD)
    families = {}
    for family, (hit, total) in recovery.by_family(THRESHOLD).items():
        in_family = torch.tensor([f == family for f in recovery.families])
        families[family] = dict(recovered=hit, total=total, probe_readable=int((readable & in_family).sum()),
                                mean_best_auroc=round(float(recovery.auroc[in_family].mean()), 4))
    return dict(
        n_tokens=metrics.n_tokens, l0=round(metrics.l0, 3), explained_variance=round(metrics.explained_variance, 4),
        dead_fraction=round(metrics.dead_fraction, 4), ce_clean=round(ce.clean, 4), ce_spliced=round(ce.spliced, 4),
        ce_mean_ablated=round(ce.mean_ablated, 4), ce_zero_ablated=round(ce.zero_ablated, 4),
        ce_increase=round(ce.delta, 4), ce_recovered_mean=round(ce.recovered, 4),
        ce_recovered_zero=round(ce.recovered_vs_zero, 4),
        probe_readable_recovered=round(float(recovered[readable].float().mean()) if readable.any() else 0.0, 4),
        variables=families)


TRAIN_KEYS = ("d_sae", "architecture", "steps", "batch_size", "lr", "seed", "dead_after_tokens", "k", "aux_k",
              "aux_coefficient", "l1_coefficient", "resample_at")


def train_settings(recipe: dict | str, **overrides) -> dict:
    """The keyword arguments of :func:`interplab.saes.train_sae` that a recipe (or a shipped SAE's name) fixes.

    ``overrides`` replace them (None values are ignored), so a benchmark or a notebook trains "the shipped
    recipe, but at k 16" without copying it.
    """
    recipe = _recipe(recipe) if isinstance(recipe, str) else recipe
    unknown = set(overrides) - set(TRAIN_KEYS)
    if unknown:
        raise ValueError(f"unknown train_sae settings {sorted(unknown)}; a recipe sets {TRAIN_KEYS}")
    settings = {key: recipe[key] for key in TRAIN_KEYS if key in recipe}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    if settings.get("architecture") == "standard":
        for key in ("k", "aux_k", "aux_coefficient"):
            settings.pop(key, None)
    return settings


def build(name: str, progress: bool = True, overrides: dict | None = None) -> tuple[sae_lib.SAE, dict]:
    """Train a shipped SAE from its recipe (with ``overrides``) and measure its card.

    Same recipe, threads and machine -> same weights.
    """
    from interplab.zoo import load_model

    recipe = dict(_recipe(name), **(overrides or {}))
    model = load_model(recipe["model"])
    start = time.perf_counter()
    train_batch = _induction_data(recipe, recipe["train_sequences"], recipe["train_seed"])
    cache = sae_lib.cache_activations(model, train_batch.tokens, recipe["hook"], model_name=recipe["model"],
                                      progress=progress)
    trained = sae_lib.train_sae(cache, progress=progress, **train_settings(recipe))
    metrics = evaluate(trained.sae, recipe, model=model, progress=progress)
    card = dict(
        name=name, description=recipe["description"], model=recipe["model"], hook_name=recipe["hook"],
        d_in=trained.sae.cfg.d_in,
        recipe={key: value for key, value in recipe.items() if key != "description"},
        settings=trained.settings, metrics=metrics,
        training=dict(final_mse=round(trained.history[-1]["mse"], 4), train_seconds=round(trained.seconds, 1),
                      total_seconds=round(time.perf_counter() - start, 1),
                      dead_in_training=round(float(trained.dead_latents.float().mean()), 4),
                      torch_threads=torch.get_num_threads(),
                      trained_with=f"torch {torch.__version__}, {platform.machine()}"))
    return trained.sae, card


CLI_OVERRIDES = ("dead_after_tokens", "aux_coefficient", "resample_at")  # recipe keys `train` takes as flags


def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def card_markdown(card: dict) -> str:
    """The README.md model card of a shipped SAE."""
    m, s, r = card["metrics"], card["settings"], card["recipe"]
    arch = f"TopK, k {s['k']}, AuxK (k {s['aux_k']}, weight {s['aux_coefficient']:.4g})" if s["k"] else \
        f"ReLU + L1 (coefficient {s['l1_coefficient']:g})"
    rows = "\n".join(f"| {family} | {v['recovered']}/{v['total']} | {v['probe_readable']}/{v['total']} | "
                     f"{v['mean_best_auroc']:.3f} |" for family, v in m["variables"].items())
    dead_note = ("meets the course target (<= 5%)" if m["dead_fraction"] <= 0.05 else
                 "ABOVE the course target of 5%: these latents never fire on the held-out tokens")
    shipped = {key: value for key, value in RECIPES.get(card["name"], {}).items() if key != "description"}
    flags = "".join(f" --{key.replace('_', '-')} {_flag_value(r.get(key))}" for key in CLI_OVERRIDES
                    if shipped and r.get(key) != shipped.get(key))
    notes = f"\n## Notes\n{NOTES[card['name']]}\n" if card["name"] in NOTES and card["recipe"] == shipped else ""
    return f"""# {card['name']}

{card['description']}.

SAELens layout: `cfg.json` + `sae_weights.safetensors` (`W_enc` [{card['d_in']}, {s['d_sae']}], `W_dec`
[{s['d_sae']}, {card['d_in']}], `b_enc`, `b_dec`); the card's numbers also sit under `cfg.json`'s
`interplab` key, which SAELens ignores.

```python
from interplab.zoo.saes import load_sae, sae_card
sae = load_sae("{card['name']}")  # an interplab.saes.SAE: takes and returns raw activations
```

## Recipe
- Activations: `{card['model']}` at `{card['hook_name']}`, {r['train_sequences']:,} induction-world sequences
  (`induction.sample_batch(seed={r['train_seed']})`, 40 tokens, `<bos>` left out): {s['n_cached_tokens']:,} tokens.
- Architecture: {arch}; width {s['d_sae']}; decoder rows unit norm; inputs normalised to E||x||^2 = d_in
  during training, the scale folded back into the saved weights.
- Adam lr {s['lr']:g}, {s['steps']} steps x {s['batch_size']} tokens, seed {s['seed']}; a latent counts as dead
  {'(and joins AuxK) ' if s['k'] else ''}after {s['dead_after_tokens']:,} training tokens without firing.

## Metrics
On held-out tokens: {r['eval_sequences']:,} sequences, `sample_batch(seed={r['eval_seed']})`, {m['n_tokens']:,} tokens.

| measure | value |
|---|---|
| L0 (latents firing per token) | {m['l0']:.2f} |
| explained variance | {m['explained_variance']:.4f} |
| dead latents (never fire on the held-out tokens) | {m['dead_fraction']:.1%} ({dead_note}) |
| CE clean / spliced (nats, first {r['ce_sequences']} sequences) | {m['ce_clean']:.4f} / {m['ce_spliced']:.4f} |
| CE increase when spliced in | {m['ce_increase']:+.4f} nats |
| CE mean-ablated / zero-ablated | {m['ce_mean_ablated']:.3f} / {m['ce_zero_ablated']:.3f} nats |
| CE recovered vs mean ablation | {m['ce_recovered_mean']:.4f} |
| CE recovered vs zero ablation (cannot rank SAEs: zeroing costs too much) | {m['ce_recovered_zero']:.4f} |
| probe-readable variables recovered by one latent (AUROC >= {THRESHOLD}) | {m['probe_readable_recovered']:.1%} |

## Variable recovery (ground truth of the induction world)
One latent "recovers" a variable when its activation separates the variable's positive tokens from
the rest of its population at AUROC >= {THRESHOLD}; the probe column is the ceiling, a supervised
linear probe at the same site.

| variable family | recovered by one latent | probe-readable | mean best-latent AUROC |
|---|---|---|---|
{rows}
{notes}
## Reproducibility
Rebuilt by

    python -m interplab.zoo.saes train {card['name']}{flags} --replace-shipped --threads 1

(without `--replace-shipped` it writes to `~/.cache/interplab/saes/{card['name']}` and leaves this folder alone).
Everything is seeded: the activation cache (sequence seeds above), the SAE's initialisation and its batches
(seed {s['seed']}). On one machine with the same thread count a rebuild gives bit-identical weights; on another
CPU, thread count or torch build floating-point sums run in another order, so weights differ slightly and the
metrics agree to about their last printed digit. This one was trained with {card['training']['trained_with']},
{card['training']['torch_threads']} thread(s), in {card['training']['train_seconds']:.0f} s of training
({card['training']['total_seconds']:.0f} s with caching and evaluation). `tests/test_shipped_saes.py`
re-measures these metrics from the shipped weights on a smaller held-out sample.
"""


def save(sae: sae_lib.SAE, card: dict, folder: str | Path) -> Path:
    """Write the SAE (SAELens layout, card under ``interplab``) and its README.md card."""
    folder = sae_lib.save_sae(sae, folder, extra=card)
    (Path(folder) / CARD_FILENAME).write_text(card_markdown(card))
    return Path(folder)


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.zoo.saes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="shipped SAEs with one-line descriptions")
    train = sub.add_parser("train", help="rebuild a shipped SAE from its recipe, deterministically")
    train.add_argument("name")
    where = train.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="folder to write; default: ~/.cache/interplab/saes/NAME")
    where.add_argument("--replace-shipped", action="store_true", help="overwrite the shipped folder (authors only)")
    train.add_argument("--threads", type=int, default=1, help="torch threads (same count -> same weights)")
    train.add_argument("--dead-after-tokens", type=int, default=None,
                       help="an experiment: training tokens without firing before a latent counts as dead "
                            "(and joins AuxK); default: the recipe's")
    train.add_argument("--aux-coefficient", type=float, default=None,
                       help="an experiment: the AuxK loss weight (TopK recipes); default: the recipe's")
    train.add_argument("--resample-at", default=None,
                       help="an experiment: steps at which dead latents are resampled, e.g. 250,500; default: none")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, description in list_saes().items():
            print(f"{name:24s} {description}")
        return 0
    try:
        _recipe(args.name)
    except ModelNotAvailableError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"{parser.prog}: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    folder = sae_dir(args.name) if args.replace_shipped else \
        (Path(args.out).expanduser() if args.out else user_sae_dir(args.name))
    if not args.replace_shipped and folder.resolve() == sae_dir(args.name).resolve():
        print(f"{parser.prog}: error: {folder} is the shipped SAE; pass --replace-shipped", file=sys.stderr)
        return 2
    overrides = {}
    if args.dead_after_tokens is not None:
        if args.dead_after_tokens < 1:
            print(f"{parser.prog}: error: --dead-after-tokens must be positive", file=sys.stderr)
            return 2
        overrides["dead_after_tokens"] = args.dead_after_tokens
    if args.aux_coefficient is not None:
        if args.aux_coefficient < 0:
            print(f"{parser.prog}: error: --aux-coefficient must be >= 0", file=sys.stderr)
            return 2
        overrides["aux_coefficient"] = args.aux_coefficient
    if args.resample_at is not None:
        try:
            overrides["resample_at"] = [int(step) for step in args.resample_at.split(",") if step]
        except ValueError:
            print(f"{parser.prog}: error: --resample-at takes steps like 250,500,750", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    sae, card = build(args.name, overrides=overrides)
    save(sae, card, folder)
    keys = ("l0", "explained_variance", "dead_fraction", "ce_increase", "ce_recovered_mean", "probe_readable_recovered")
    print(json.dumps({key: card["metrics"][key] for key in keys}))
    print(f"wrote {folder} ({sae_lib.CFG_FILENAME}, {sae_lib.WEIGHTS_FILENAME}, {CARD_FILENAME})")
    if not args.replace_shipped:
        print(f"load it with interplab.saes.load_sae({str(folder)!r}); the shipped one is untouched")
    return 0


__all__ = ["RECIPES", "TRAIN_KEYS", "build", "card_markdown", "evaluate", "list_saes", "load_sae", "sae_card",
           "sae_dir", "train_settings", "user_sae_dir"]

if __name__ == "__main__":
    sys.exit(main())
