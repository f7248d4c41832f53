"""SAEs on the shipped induction model: reconstruction, CE, ground-truth recovery, the L0/EV frontier, throughput.

    python benchmarks/saes.py [--steps 1500] [--width 512] [--k 8] [--l1 1.0] [--save DIR] [--quick]

One activation cache at ``blocks.1.hook_resid_pre`` of ``attn2-induction`` (12,500 sequences x 40
tokens, ``<bos>`` left out), then a TopK SAE (with AuxK) and a ReLU+L1 SAE trained from it, each
evaluated on held-out sequences:
  - L0, explained variance, dead fraction; CE clean / spliced / mean-ablated / zero-ablated, the
    CE increase in nats, CE recovered against mean ablation and against zero ablation;
  - for every world variable (current token, previous token, next token, repeated), the best single
    latent's AUROC; the linear-probe ceiling at the same site and the best raw dimension beside it;
  - the L0 / explained-variance frontier of both architectures (the same recipe at other k and L1);
  - the trainer's throughput against a bare loop of the same five matmuls (same shapes, interleaved).
Targets from the issue (TopK run): EV >= 0.95 at L0 <= 16, CE increase <= 0.05 nats, CE recovered
(mean ablation) >= 0.90, dead <= 5%, >= 90% of the probe-readable variables recovered at AUROC >= 0.95,
throughput ratio >= 0.5. ``--quick`` runs every step on a tiny setting (numbers meaningless).

    python benchmarks/saes.py --world facts --width 128 --steps 600 --batch 1024

runs the same two architectures on ``facts-4l`` at the last subject token (trained templates for
training, held-out templates for evaluation), where the variables are the subject's attribute values.
"""
from __future__ import annotations

import argparse
import time

import torch

THRESHOLD = 0.95


def _families(recovery, threshold: float = THRESHOLD) -> str:
    return " | ".join(f"{family} {hit}/{total}" for family, (hit, total) in recovery.by_family(threshold).items())


def _throughput(d_in: int, width: int, k: int, batch: int, steps: int, rounds: int) -> tuple[float, float]:
    """Tokens per second of train_sae (TopK, no AuxK) and of a bare loop of its five matmuls, interleaved."""
    from interplab import saes

    acts = torch.randn(max(4 * batch, 8192), d_in)
    x, W_enc, W_dec = torch.randn(batch, d_in), torch.randn(d_in, width), torch.randn(width, d_in)
    f, x_hat, dW_dec, df, dW_enc = (torch.empty(batch, width), torch.empty(batch, d_in), torch.empty(width, d_in),
                                    torch.empty(batch, width), torch.empty(d_in, width))
    sae_s = bare_s = 0.0
    for _ in range(rounds):
        result = saes.train_sae(acts, d_sae=width, k=k, steps=steps, batch_size=batch, aux_k=0, progress=False)
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


def facts_world(args, progress: bool) -> int:
    """``--world facts``: SAEs at the last subject token of ``facts-4l``; variables = the subject's attribute values."""
    from interplab import saes
    from interplab.sae_variables import facts_subject_mask, facts_variables
    from interplab.worlds import facts
    from interplab.zoo import load_model

    model = load_model("facts-4l")
    known, unknown = list(facts.KNOWN_SUBJECTS), list(facts.UNKNOWN_SUBJECTS)
    if args.quick:
        known, unknown = known[:30], unknown[:10]
    train = facts.all_prompts(known + unknown)
    held_out = facts.all_prompts(known, held_out=True)
    cache = saes.cache_activations(model, train.tokens, args.hook, positions=facts_subject_mask(train),
                                   model_name="facts-4l", progress=False)
    test = saes.cache_activations(model, held_out.tokens, args.hook, positions=facts_subject_mask(held_out),
                                  model_name="facts-4l", progress=False)
    variables = facts_variables(test, held_out)
    print(f"facts-4l at {args.hook}, last subject token: {len(cache):,} training rows "
          f"({torch.unique(cache.acts, dim=0).shape[0]} distinct), {len(test):,} held-out-template rows")
    print(f"  linear probe ceiling: {_families(saes.probe_ceiling(test, variables))}")
    print(f"  best raw dimension (either sign): {_families(saes.raw_dimension_baseline(test, variables))}")
    for arch, settings in (("topk", dict(architecture="topk", k=args.k)),
                           ("standard", dict(architecture="standard", l1_coefficient=args.l1))):
        trained = saes.train_sae(cache, d_sae=args.width, steps=args.steps, batch_size=args.batch, progress=progress,
                                 **settings)
        metrics = saes.reconstruction_metrics(trained.sae, test)
        recovery = saes.variable_recovery(saes.encode_all(trained.sae, test), variables, progress=False)
        print(f"{arch} SAE, width {args.width}, {args.steps} steps x {args.batch}: L0 {metrics.l0:.1f} | explained "
              f"variance {metrics.explained_variance:.3f} | dead {metrics.dead_fraction:.1%}")
        print(f"  variables recovered by one latent: {_families(recovery)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("induction", "facts"), default="induction",
                        help="facts: facts-4l at the last subject token instead (set --width/--steps/--batch to fit)")
    parser.add_argument("--model", default="attn2-induction")
    parser.add_argument("--hook", default="blocks.1.hook_resid_pre")
    parser.add_argument("--sequences", type=int, default=12500, help="training sequences (40 tokens each)")
    parser.add_argument("--eval-sequences", type=int, default=1500, help="held-out sequences for every measure")
    parser.add_argument("--ce-sequences", type=int, default=500, help="of those, how many the CE runs use")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--l1", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--aux-coefficient", type=float, default=1 / 32, help="AuxK weight (TopK runs)")
    parser.add_argument("--resample-at", default="", help="steps at which dead latents are resampled, e.g. 250,500")
    parser.add_argument("--frontier-k", default="4,16", help="further TopK k values for the frontier")
    parser.add_argument("--frontier-l1", default="3.0", help="further L1 coefficients for the frontier")
    parser.add_argument("--frontier-steps", type=int, default=None,
                        help="steps for the further frontier runs (default: --steps; fewer leaves ReLU under-trained)")
    parser.add_argument("--throughput-steps", type=int, default=20)
    parser.add_argument("--save", default=None, help="save the TopK SAE here (SAELens layout)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny setting that runs every step in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.eval_sequences, args.ce_sequences = 150, 60, 20
        args.width, args.steps, args.batch, args.frontier_steps, args.throughput_steps = 64, 30, 256, 10, 3
        args.frontier_k, args.frontier_l1 = "4", "3.0"
    if args.frontier_steps is None:
        args.frontier_steps = args.steps
    torch.set_num_threads(args.threads)
    progress = not args.quick
    if args.world == "facts":
        return facts_world(args, progress)

    from interplab import saes
    from interplab.sae_variables import induction_variables
    from interplab.worlds import induction
    from interplab.zoo import load_model

    model = load_model(args.model)
    start = time.perf_counter()
    train_batch = induction.sample_batch(args.sequences, seed=1)
    eval_batch = induction.sample_batch(args.eval_sequences, seed=2)
    cache = saes.cache_activations(model, train_batch.tokens, args.hook, model_name=args.model, progress=progress)
    held_out = saes.cache_activations(model, eval_batch.tokens, args.hook, model_name=args.model, progress=False)
    print(f"{args.model} at {args.hook}: cached {len(cache):,} training and {len(held_out):,} held-out tokens "
          f"(<bos> left out) in {time.perf_counter() - start:.1f} s")

    variables = induction_variables(held_out, eval_batch.repeated)
    ceiling = saes.probe_ceiling(held_out, variables)
    readable = ceiling.recovered(THRESHOLD)
    raw = saes.raw_dimension_baseline(held_out, variables)
    print(f"\nvariables at AUROC >= {THRESHOLD} ({len(variables)} in all):")
    print(f"  linear probe ceiling: {_families(ceiling)}")
    print(f"  best raw dimension (either sign): {_families(raw)}")

    common = dict(aux_coefficient=args.aux_coefficient,
                  resample_at=tuple(int(step) for step in args.resample_at.split(",") if step))
    runs = [("topk", dict(architecture="topk", k=args.k), args.steps),
            ("standard", dict(architecture="standard", l1_coefficient=args.l1), args.steps)]
    runs += [("topk", dict(architecture="topk", k=int(k)), args.frontier_steps)
             for k in args.frontier_k.split(",") if k]
    runs += [("standard", dict(architecture="standard", l1_coefficient=float(l1)), args.frontier_steps)
             for l1 in args.frontier_l1.split(",") if l1]
    ce_tokens = eval_batch.tokens[:args.ce_sequences]
    mean = held_out.acts.mean(0)
    frontier, main_results = [], {}
    for index, (arch, settings, steps) in enumerate(runs):
        trained = saes.train_sae(cache, d_sae=args.width, steps=steps, batch_size=args.batch, progress=progress,
                                 **settings, **common)
        metrics = saes.reconstruction_metrics(trained.sae, held_out)
        label = f"k={settings['k']}" if arch == "topk" else f"L1={settings['l1_coefficient']}"
        frontier.append((arch, label, steps, metrics.l0, metrics.explained_variance))
        if index >= 2:
            continue
        ce = saes.ce_metrics(model, trained.sae, ce_tokens, mean_activation=mean, progress=progress)
        recovery = saes.variable_recovery(saes.encode_all(trained.sae, held_out), variables, progress=progress)
        of_readable = float(recovery.recovered(THRESHOLD)[readable].float().mean()) if readable.any() else 0.0
        main_results[arch] = dict(trained=trained, metrics=metrics, ce=ce, of_readable=of_readable)
        print(f"\n{arch} SAE, width {args.width}, {label}{', AuxK' if arch == 'topk' else ''}: {steps} steps x "
              f"{args.batch} in {trained.seconds:.1f} s ({trained.tokens_per_second / 1e3:.0f}k tokens/s)")
        print(f"  L0 {metrics.l0:.1f} | explained variance {metrics.explained_variance:.3f} | dead "
              f"{metrics.dead_fraction:.1%} (never fired on {metrics.n_tokens:,} held-out tokens; "
              f"{float(trained.dead_latents.float().mean()):.1%} silent for the last "
              f"{trained.settings['dead_after_tokens']:,} training tokens)")
        print(f"  CE clean {ce.clean:.3f} | spliced {ce.spliced:.3f} | mean-ablated {ce.mean_ablated:.3f} | "
              f"zero-ablated {ce.zero_ablated:.3f} nats")
        print(f"  CE increase {ce.delta:+.4f} nats | CE recovered vs mean ablation {ce.recovered:.4f} | "
              f"vs zero ablation {ce.recovered_vs_zero:.4f}")
        print(f"  variables recovered by one latent: {_families(recovery)}")
        print(f"  of the {int(readable.sum())} probe-readable variables: {of_readable:.1%} recovered")
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

    sae_rate, bare_rate = _throughput(cache.d_in, args.width, args.k, args.batch, args.throughput_steps,
                                      rounds=1 if args.quick else 3)
    ratio = sae_rate / bare_rate
    print(f"\nthroughput at width {args.width}, batch {args.batch}: trainer {sae_rate / 1e3:.0f}k tokens/s, bare "
          f"matmul loop {bare_rate / 1e3:.0f}k tokens/s, ratio {ratio:.2f}")

    topk = main_results["topk"]
    checks = [topk["metrics"].explained_variance >= 0.95 and topk["metrics"].l0 <= 16,
              topk["ce"].delta <= 0.05, topk["ce"].recovered >= 0.90, topk["metrics"].dead_fraction <= 0.05,
              topk["of_readable"] >= 0.90, ratio >= 0.5]
    names = ["EV >= 0.95 at L0 <= 16", "CE increase <= 0.05", "CE recovered >= 0.90", "dead <= 5%",
             "probe-readable recovered >= 90%", "throughput ratio >= 0.5"]
    print("targets (TopK run): " + ", ".join(f"{n}: {'met' if ok else 'NOT met'}" for n, ok in zip(names, checks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
