"""SAEs on the shipped models: reconstruction, CE, ground-truth recovery, the L0/EV frontier, throughput.

    python benchmarks/saes.py [--steps N] [--width N] [--k N] [--l1 X] [--save DIR] [--quick]

Every SAE here is trained with the shipped recipes (``interplab.zoo.saes.RECIPES``: ``attn2-induction-topk``
for TopK, ``attn2-induction-relu`` for ReLU+L1); a flag changes one setting of the recipe, nothing else.

``--world induction`` (default): one activation cache at the recipe's hook (``blocks.1.hook_resid_pre`` of
``attn2-induction``, 12,500 sequences x 40 tokens, ``<bos>`` left out), a TopK and a ReLU+L1 SAE trained
from it, each evaluated on the recipe's held-out sequences:
  - L0, explained variance, dead fraction; CE clean / spliced / mean-ablated / zero-ablated, the
    CE increase in nats, CE recovered against mean ablation and against zero ablation;
  - for every world variable (current token, previous token, next token, repeated), the best single
    latent's AUROC; the linear-probe ceiling at the same site and the best raw dimension beside it;
  - the L0 / explained-variance frontier of both architectures (the same recipe at other k and L1);
  - the trainer's throughput against a bare loop of the same five matmuls (same shapes, interleaved).
Targets from the issue (TopK run): EV >= 0.95 at L0 <= 16, CE increase <= 0.05 nats, CE recovered
(mean ablation) >= 0.90, dead <= 5%, >= 90% of the probe-readable variables recovered at AUROC >= 0.95,
throughput ratio >= 0.5. ``--quick`` runs every step on a tiny setting (numbers meaningless);
``--throughput-only`` prints just the trainer-vs-bare-matmul ratio at the recipe's shapes (a few seconds).

    python benchmarks/saes.py --world ioi

``ioi-2l`` at ``blocks.1.hook_resid_pre`` and ``blocks.1.hook_resid_post`` (``--ioi-hooks``): the strict IOI
variables (``interplab.sae_variables.ioi_variables``), the fraction of the probe-readable ones that one latent
recovers beside the probe ceiling, and why the rest fail (not linearly readable; names split into one latent
per slot; "IO at END" passing only under the lenient definition before layer 1).

    python benchmarks/saes.py --world facts --width 128 --steps 600 --batch 1024

``facts-4l`` at the last subject token (trained templates for training, held-out templates for evaluation),
where the variables are the subject's attribute values; reported the same way.
"""
from __future__ import annotations

import argparse
import time

import torch

THRESHOLD = 0.95
TOPK_RECIPE, RELU_RECIPE = "attn2-induction-topk", "attn2-induction-relu"
IOI_HOOKS = "blocks.1.hook_resid_pre,blocks.1.hook_resid_post"


def _families(recovery, threshold: float = THRESHOLD) -> str:
    return " | ".join(f"{family} {hit}/{total}" for family, (hit, total) in recovery.by_family(threshold).items())


def _settings(args, architecture: str, **extra) -> dict:
    """train_sae's settings: the shipped recipe of this architecture, with the flags that were given."""
    from interplab.zoo.saes import train_settings

    flags = dict(d_sae=args.width, steps=args.steps, batch_size=args.batch, resample_at=args.resample_at)
    if architecture == "topk":
        flags.update(k=args.k, aux_coefficient=args.aux_coefficient)
    else:
        flags.update(l1_coefficient=args.l1)
    flags.update({key: value for key, value in extra.items() if value is not None})
    return train_settings(TOPK_RECIPE if architecture == "topk" else RELU_RECIPE, **flags)


def _label(settings: dict) -> str:
    return f"k={settings['k']}" if settings["architecture"] == "topk" else f"L1={settings['l1_coefficient']}"


def _report_recovery(recovery, ceiling, indent: str = "  ") -> float:
    """Per family: recovered by one latent, probe-readable; the fraction of probe-readable recovered; what misses.

    Returns that fraction (0 when nothing is probe-readable).
    """
    readable = ceiling.recovered(THRESHOLD)
    hit = recovery.recovered(THRESHOLD)
    fraction = float(hit[readable].float().mean()) if readable.any() else 0.0
    n = len(recovery.names)
    print(f"{indent}variables recovered by one latent: {_families(recovery)}")
    print(f"{indent}of the {int(readable.sum())} probe-readable variables (probe ceiling {int(readable.sum())}/{n} = "
          f"{float(readable.float().mean()):.1%}): {fraction:.1%} recovered by one latent "
          f"({int((hit & readable).sum())}/{int(readable.sum())})")
    for family in dict.fromkeys(recovery.families):
        inside = torch.tensor([f == family for f in recovery.families])
        total, readable_here = int(inside.sum()), int((readable & inside).sum())
        missed = int((readable & inside & ~hit).sum())
        if readable_here == 0:
            print(f"{indent}  {family}: not linearly readable here (best probe AUROC "
                  f"{float(ceiling.auroc[inside].max()):.2f} < {THRESHOLD}): no single latent can be asked for it")
        elif missed:
            print(f"{indent}  {family}: {missed} of {readable_here} probe-readable missed (their best latents' mean "
                  f"AUROC {float(recovery.auroc[readable & inside & ~hit].mean()):.3f})"
                  + ("" if readable_here == total else f"; {total - readable_here} not probe-readable"))
    return fraction


def _throughput(d_in: int, settings: dict, steps: int, rounds: int) -> tuple[float, float]:
    """Tokens per second of train_sae (the recipe's TopK without AuxK) and of a bare loop of its five matmuls."""
    from interplab import saes

    width, batch = settings["d_sae"], settings["batch_size"]
    acts = torch.randn(max(4 * batch, 8192), d_in)
    x, W_enc, W_dec = torch.randn(batch, d_in), torch.randn(d_in, width), torch.randn(width, d_in)
    f, x_hat, dW_dec, df, dW_enc = (torch.empty(batch, width), torch.empty(batch, d_in), torch.empty(width, d_in),
                                    torch.empty(batch, width), torch.empty(d_in, width))
    timed = dict(settings, steps=steps, aux_k=0, resample_at=())
    sae_s = bare_s = 0.0
    for _ in range(rounds):
        result = saes.train_sae(acts, progress=False, **timed)
        sae_s += result.seconds
        start = time.perf_counter()
        for _ in range(steps):
            torch.matmul(x, W_enc, out=f)  # encoder
            torch.matmul(f, W_dec, out=x_hat)  # decoder
            torch.matmul(f.T, x_hat, out=dW_dec)  # decoder gradient
            torch.matmul(x_hat, W_dec.T, out=df)  # back to the latents
            torch.matmul(x.T, df, out=dW_enc)  # encoder gradient
        bare_s += time.perf_counter() - start
    tokens = rounds * steps * batch
    return tokens / sae_s, tokens / bare_s


def _print_metrics(metrics, trained) -> None:
    print(f"  L0 {metrics.l0:.1f} | explained variance {metrics.explained_variance:.3f} | dead "
          f"{metrics.dead_fraction:.1%} (never fired on {metrics.n_tokens:,} held-out tokens; "
          f"{float(trained.dead_latents.float().mean()):.1%} silent for the last "
          f"{trained.settings['dead_after_tokens']:,} training tokens)")


def _print_ce(ce) -> None:
    print(f"  CE clean {ce.clean:.3f} | spliced {ce.spliced:.3f} | mean-ablated {ce.mean_ablated:.3f} | "
          f"zero-ablated {ce.zero_ablated:.3f} nats")
    print(f"  CE increase {ce.delta:+.4f} nats | CE recovered vs mean ablation {ce.recovered:.4f} | "
          f"vs zero ablation {ce.recovered_vs_zero:.4f}")


# ---------------------------------------------------------------- facts-4l

def facts_world(args, progress: bool) -> int:
    """``--world facts``: SAEs at the last subject token of ``facts-4l``; variables = the subject's attribute values."""
    from interplab import saes
    from interplab.sae_variables import facts_subject_mask, facts_variables
    from interplab.worlds import facts
    from interplab.zoo import load_model

    hook = args.hook or "blocks.1.hook_resid_pre"
    model = load_model("facts-4l")
    known, unknown = list(facts.KNOWN_SUBJECTS), list(facts.UNKNOWN_SUBJECTS)
    if args.quick:
        known, unknown = known[:30], unknown[:10]
    train = facts.all_prompts(known + unknown)
    held_out = facts.all_prompts(known, held_out=True)
    cache = saes.cache_activations(model, train.tokens, hook, positions=facts_subject_mask(train),
                                   model_name="facts-4l", progress=False)
    test = saes.cache_activations(model, held_out.tokens, hook, positions=facts_subject_mask(held_out),
                                  model_name="facts-4l", progress=False)
    variables = facts_variables(test, held_out)
    print(f"facts-4l at {hook}, last subject token: {len(cache):,} training rows "
          f"({torch.unique(cache.acts, dim=0).shape[0]} distinct), {len(test):,} held-out-template rows")
    ceiling = saes.probe_ceiling(test, variables)
    print(f"  linear probe ceiling: {_families(ceiling)}")
    print(f"  best raw dimension (either sign): {_families(saes.raw_dimension_baseline(test, variables))}")
    for architecture in ("topk", "standard"):
        settings = _settings(args, architecture)
        trained = saes.train_sae(cache, progress=progress, **settings)
        metrics = saes.reconstruction_metrics(trained.sae, test)
        recovery = saes.variable_recovery(saes.encode_all(trained.sae, test), variables, progress=False)
        print(f"{architecture} SAE, width {settings['d_sae']}, {_label(settings)}, {settings['steps']} steps x "
              f"{settings['batch_size']}: L0 {metrics.l0:.1f} | explained variance {metrics.explained_variance:.3f} | "
              f"dead {metrics.dead_fraction:.1%}")
        _report_recovery(recovery, ceiling)
        _facts_why(recovery, ceiling)
    return 0


def _facts_why(recovery, ceiling) -> None:
    """When subjects get latents and attribute values do not: the values are unions of subject latents."""
    hit, readable = recovery.recovered(THRESHOLD), ceiling.recovered(THRESHOLD)
    subject = torch.tensor([f == "subject" for f in recovery.families])
    attribute = ~subject & readable
    if not subject.any() or not attribute.any():
        return
    subjects_hit, attributes_hit = int((hit & subject).sum()), int((hit & attribute).sum())
    if subjects_hit >= 0.5 * int(subject.sum()) and attributes_hit < 0.5 * int(attribute.sum()):
        print(f"  why attribute values fail: {subjects_hit}/{int(subject.sum())} subjects have their own latent, "
              f"{attributes_hit}/{int(attribute.sum())} probe-readable attribute values do; an attribute value is "
              f"then a union of its subjects' latents (the probe reads it by adding them), not one latent")


# ---------------------------------------------------------------- ioi-2l

def _ioi_why(recovery, diagnostic, diagnostic_ceiling, variables) -> None:
    """What the diagnostic variables say about the misses: names split by slot, lenient vs strict IO at END."""
    from interplab.worlds import ioi

    hit = recovery.recovered(THRESHOLD)
    by_name = dict(zip(recovery.names, hit.tolist()))
    diag_hit = dict(zip(diagnostic.names, diagnostic.recovered(THRESHOLD).tolist()))
    diag_best = dict(zip(diagnostic.names, diagnostic.best.tolist()))
    slots = (ioi.POS_A, ioi.POS_B, ioi.POS_S2, ioi.PROMPT_LEN)
    missed_names = [n for n in ioi.NAMES if f"name = {n}" in by_name and not by_name[f"name = {n}"]]
    if missed_names:
        per_slot = [sum(diag_hit.get(f"name @ pos {p} = {n}", False) for n in missed_names) for p in slots]
        every_slot = sum(all(diag_hit.get(f"name @ pos {p} = {n}", False) for p in slots) for n in missed_names)
        distinct = [len({diag_best[f"name @ pos {p} = {n}"] for p in slots if f"name @ pos {p} = {n}" in diag_best})
                    for n in missed_names]
        split = sum(per_slot) >= 0.5 * len(slots) * len(missed_names)
        print(f"  why names fail: of the {len(missed_names)} names no single latent covers, "
              + ", ".join(f"{h}/{len(missed_names)} have a latent at pos {p}" for p, h in zip(slots, per_slot))
              + f"; {every_slot} at every slot, through {sum(distinct) / len(distinct):.1f} distinct latents per name "
              + ("on average: the SAE splits each name by position (name x slot)" if split else
                 "on average: most slots have no name latent either"))
    strict = [(n, by_name[f"IO at END = {n}"]) for n in ioi.NAMES if f"IO at END = {n}" in by_name]
    lenient_hits = sum(diag_hit.get(f"IO at END = {n}", False) for n, _ in strict)
    strict_hits = sum(ok for _, ok in strict)
    lenient_rows = [i for i, f in enumerate(diagnostic.families) if f == "IO at END (lenient)"]
    lenient_probe = int(diagnostic_ceiling.recovered(THRESHOLD)[lenient_rows].sum())
    print(f"  IO at END: strict (IO vs S among prompts containing the name) {strict_hits}/{len(strict)}; lenient "
          f"(among every END token) {lenient_hits}/{len(strict)} (probe {lenient_probe}/{len(strict)})"
          + ("; the lenient passes are 'this name occurs in the prompt' latents, which the strict test exposes"
             if lenient_hits > strict_hits else ""))
    control = [i for i, f in enumerate(diagnostic.families) if f == "IO at pos 2/4 (control)"]
    if control:
        print(f"  control (is the pos-2/4 name the IO? decided only at pos 10): best latent AUROC "
              f"{float(diagnostic.auroc[control[0]]):.2f}, probe {float(diagnostic_ceiling.auroc[control[0]]):.2f}")


def ioi_world(args, progress: bool) -> int:
    """``--world ioi``: SAEs on ``ioi-2l`` at each of ``--ioi-hooks``, judged on the strict IOI variables."""
    from interplab import saes
    from interplab.sae_variables import ioi_diagnostic_variables, ioi_variables
    from interplab.worlds import ioi
    from interplab.zoo import load_model

    model = load_model("ioi-2l")
    n_train = args.sequences or 33_334  # x 15 tokens: 500k, as for the induction recipe
    n_eval, n_ce = args.eval_sequences or 4000, args.ce_sequences or 500
    start = time.perf_counter()
    train, held = ioi.sample(n_train, seed=1), ioi.sample(n_eval, seed=2)
    hooks = [hook for hook in (args.hook or IOI_HOOKS).split(",") if hook]
    print(f"ioi-2l: {n_train:,} training and {n_eval:,} held-out prompts (prompt + answer, positions 1-15); "
          f"sampled in {time.perf_counter() - start:.1f} s")
    fractions = {}
    for hook in hooks:
        cache = saes.cache_activations(model, train.with_answer(), hook, model_name="ioi-2l", progress=progress)
        test = saes.cache_activations(model, held.with_answer(), hook, model_name="ioi-2l", progress=False)
        variables = ioi_variables(test, held)
        diagnostic = ioi_diagnostic_variables(test, held)
        ceiling = saes.probe_ceiling(test, variables)
        diagnostic_ceiling = saes.probe_ceiling(test, diagnostic)
        print(f"\nioi-2l at {hook}: {len(cache):,} training and {len(test):,} held-out tokens; "
              f"{len(variables)} strict variables at AUROC >= {THRESHOLD}")
        print(f"  linear probe ceiling: {_families(ceiling)}")
        print(f"  best raw dimension (either sign): {_families(saes.raw_dimension_baseline(test, variables))}")
        mean = test.acts.mean(0)
        for architecture in args.archs.split(","):
            settings = _settings(args, architecture)
            trained = saes.train_sae(cache, progress=progress, **settings)
            metrics = saes.reconstruction_metrics(trained.sae, test)
            ce = saes.ce_metrics(model, trained.sae, held.with_answer()[:n_ce], mean_activation=mean,
                                 progress=False)
            latents = saes.encode_all(trained.sae, test)
            recovery = saes.variable_recovery(latents, variables, progress=False)
            print(f"{architecture} SAE at {hook}, width {settings['d_sae']}, {_label(settings)}: "
                  f"{settings['steps']} steps x {settings['batch_size']} in {trained.seconds:.1f} s")
            _print_metrics(metrics, trained)
            print(f"  CE increase {ce.delta:+.4f} nats | CE recovered vs mean ablation {ce.recovered:.4f}")
            fractions[hook, architecture] = _report_recovery(recovery, ceiling)
            _ioi_why(recovery, saes.variable_recovery(latents, diagnostic, progress=False), diagnostic_ceiling,
                     variables)
    print("\nprobe-readable IOI variables recovered by one latent: " +
          " | ".join(f"{arch} at {hook} {value:.1%}" for (hook, arch), value in fractions.items()))
    return 0


def _print_throughput(args, d_in: int) -> float:
    """The trainer against the bare matmul loop at the TopK recipe's shapes, printed side by side; the ratio."""
    settings = _settings(args, "topk")
    sae_rate, bare_rate = _throughput(d_in, settings, args.throughput_steps, rounds=1 if args.quick else 3)
    ratio = sae_rate / bare_rate
    print(f"\nthroughput at width {settings['d_sae']}, batch {settings['batch_size']}: trainer "
          f"{sae_rate / 1e3:.0f}k tokens/s, bare matmul loop {bare_rate / 1e3:.0f}k tokens/s, ratio {ratio:.2f}")
    return ratio


# ---------------------------------------------------------------- attn2-induction

def induction_world(args, progress: bool) -> int:
    from interplab import saes
    from interplab.sae_variables import induction_variables
    from interplab.worlds import induction
    from interplab.zoo import load_model
    from interplab.zoo.saes import RECIPES

    recipe = RECIPES[TOPK_RECIPE]
    hook = args.hook or recipe["hook"]
    n_train = args.sequences or recipe["train_sequences"]
    n_eval, n_ce = args.eval_sequences or recipe["eval_sequences"], args.ce_sequences or recipe["ce_sequences"]
    if args.throughput_only:
        ratio = _print_throughput(args, d_in=64)
        print(f"target: throughput ratio >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}")
        return 0
    model = load_model(recipe["model"])
    start = time.perf_counter()
    train_batch = induction.sample_batch(n_train, seed=recipe["train_seed"])
    eval_batch = induction.sample_batch(n_eval, seed=recipe["eval_seed"])
    cache = saes.cache_activations(model, train_batch.tokens, hook, model_name=recipe["model"], progress=progress)
    held_out = saes.cache_activations(model, eval_batch.tokens, hook, model_name=recipe["model"], progress=False)
    print(f"{recipe['model']} at {hook}: cached {len(cache):,} training and {len(held_out):,} held-out tokens "
          f"(<bos> left out) in {time.perf_counter() - start:.1f} s")

    variables = induction_variables(held_out, eval_batch.repeated)
    ceiling = saes.probe_ceiling(held_out, variables)
    raw = saes.raw_dimension_baseline(held_out, variables)
    print(f"\nvariables at AUROC >= {THRESHOLD} ({len(variables)} in all):")
    print(f"  linear probe ceiling: {_families(ceiling)}")
    print(f"  best raw dimension (either sign): {_families(raw)}")

    main_runs = [_settings(args, "topk"), _settings(args, "standard")]
    further = [_settings(args, "topk", k=int(k), steps=args.frontier_steps) for k in args.frontier_k.split(",") if k]
    further += [_settings(args, "standard", l1_coefficient=float(l1), steps=args.frontier_steps)
                for l1 in args.frontier_l1.split(",") if l1]
    ce_tokens = eval_batch.tokens[:n_ce]
    mean = held_out.acts.mean(0)
    frontier, main_results = [], {}
    for index, settings in enumerate(main_runs + further):
        trained = saes.train_sae(cache, progress=progress, **settings)
        metrics = saes.reconstruction_metrics(trained.sae, held_out)
        arch = settings["architecture"]
        frontier.append((arch, _label(settings), settings["steps"], metrics.l0, metrics.explained_variance))
        if index >= len(main_runs):
            continue
        ce = saes.ce_metrics(model, trained.sae, ce_tokens, mean_activation=mean, progress=progress)
        recovery = saes.variable_recovery(saes.encode_all(trained.sae, held_out), variables, progress=progress)
        print(f"\n{arch} SAE ({TOPK_RECIPE if arch == 'topk' else RELU_RECIPE} recipe), width {settings['d_sae']}, "
              f"{_label(settings)}{', AuxK' if arch == 'topk' else ''}: {settings['steps']} steps x "
              f"{settings['batch_size']} in {trained.seconds:.1f} s ({trained.tokens_per_second / 1e3:.0f}k tokens/s)")
        _print_metrics(metrics, trained)
        _print_ce(ce)
        of_readable = _report_recovery(recovery, ceiling)
        main_results[arch] = dict(trained=trained, metrics=metrics, ce=ce, of_readable=of_readable)
        if arch == "topk" and args.save:
            folder = saes.save_sae(trained.sae, args.save, extra=dict(
                settings=trained.settings, l0=metrics.l0, explained_variance=metrics.explained_variance,
                dead_fraction=metrics.dead_fraction, ce_increase=ce.delta, ce_recovered_mean=ce.recovered,
                ce_recovered_zero=ce.recovered_vs_zero, recovery=recovery.by_family(THRESHOLD)))
            print(f"  saved in SAELens layout to {folder}")

    print("\nL0 / explained-variance frontier (held-out tokens):")
    print(f"  {'architecture':12s} {'setting':9s} {'steps':>6s} {'L0':>7s} {'EV':>7s}")
    for arch, label, steps, l0, ev in sorted(frontier, key=lambda row: (row[0], row[3])):
        print(f"  {arch:12s} {label:9s} {steps:6d} {l0:7.1f} {ev:7.3f}")

    ratio = _print_throughput(args, cache.d_in)

    topk = main_results["topk"]
    checks = [topk["metrics"].explained_variance >= 0.95 and topk["metrics"].l0 <= 16,
              topk["ce"].delta <= 0.05, topk["ce"].recovered >= 0.90, topk["metrics"].dead_fraction <= 0.05,
              topk["of_readable"] >= 0.90, ratio >= 0.5]
    names = ["EV >= 0.95 at L0 <= 16", "CE increase <= 0.05", "CE recovered >= 0.90", "dead <= 5%",
             "probe-readable recovered >= 90%", "throughput ratio >= 0.5"]
    print("targets (TopK run): " + ", ".join(f"{n}: {'met' if ok else 'NOT met'}" for n, ok in zip(names, checks)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("induction", "ioi", "facts"), default="induction",
                        help="ioi: ioi-2l with the strict IOI variables; facts: facts-4l at the last subject token")
    parser.add_argument("--hook", default=None, help="default: the recipe's (induction), blocks.1.hook_resid_pre "
                        "(facts), or both blocks.1 residual hooks (ioi; comma-separated)")
    parser.add_argument("--sequences", type=int, default=None, help="training sequences (default: the recipe's)")
    parser.add_argument("--eval-sequences", type=int, default=None, help="held-out sequences for every measure")
    parser.add_argument("--ce-sequences", type=int, default=None, help="of those, how many the CE runs use")
    # None: the shipped recipe's value (interplab.zoo.saes.RECIPES)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--l1", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--aux-coefficient", type=float, default=None, help="AuxK weight (TopK runs)")
    parser.add_argument("--resample-at", default=None, help="steps at which dead latents are resampled, e.g. 250,500")
    parser.add_argument("--archs", default="topk,standard", help="architectures for --world ioi")
    parser.add_argument("--frontier-k", default="4,16", help="further TopK k values for the frontier")
    parser.add_argument("--frontier-l1", default="3.0", help="further L1 coefficients for the frontier")
    parser.add_argument("--frontier-steps", type=int, default=None,
                        help="steps for the further frontier runs (default: the main runs'; fewer leaves ReLU "
                             "under-trained)")
    parser.add_argument("--throughput-steps", type=int, default=20)
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the trainer-vs-bare-matmul ratio at the TopK recipe's shapes (d_in 64)")
    parser.add_argument("--save", default=None, help="save the TopK SAE here (SAELens layout)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny setting that runs every step in seconds")
    args = parser.parse_args(argv)
    if args.resample_at is not None:
        args.resample_at = tuple(int(step) for step in args.resample_at.split(",") if step)
    if args.quick:
        args.sequences, args.eval_sequences, args.ce_sequences = 150, 60, 20
        if args.world == "ioi":
            args.sequences, args.eval_sequences = 400, 300
        args.width, args.steps, args.batch, args.frontier_steps, args.throughput_steps = 64, 30, 256, 10, 3
        args.frontier_k, args.frontier_l1 = "4", "3.0"
    torch.set_num_threads(args.threads)
    progress = not args.quick
    world = dict(induction=induction_world, ioi=ioi_world, facts=facts_world)[args.world]
    return world(args, progress)


if __name__ == "__main__":
    raise SystemExit(main())
