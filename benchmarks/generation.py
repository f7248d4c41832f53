"""Sampling from chat-base: passes over the running rows only, against passes over the whole batch, side by side.

    python benchmarks/generation.py [--prompts 300] [--samples 8] [--reps 1] [--threads 1]

``generation.generate`` runs a forward pass on the rows still generating when no hooks are active, and on the
whole batch when hooks are (a hook may hold per-row tensors). A hook that changes nothing forces the whole-batch
path, so the two are timed on the same prompts, seed and model in one run: best-of-8 sampling as chat-sft's
recipe does it (``finetune.sample``, T = 1, batches of 512). Both must give the same samples; the speed-up is
the ratio of the two times, which is what makes chapter 06's retrain fit (``benchmarks/tuning.py --time``).
"""
from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=300, help="training prompts (chat-sft's recipe uses 1500)")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--reps", type=int, default=1, help="timed runs of each path (the best is kept)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from interplab import finetune, generation
    from interplab.zoo import tuned

    base = tuned.load_base()
    prompts = finetune.expand(finetune.train_prompts(args.prompts, seed=100), args.samples)
    noop = [("blocks.0.hook_resid_post", lambda act, hook: act)]  # forces a pass over the whole batch

    def sample(hooks) -> tuple[float, list[list[int]]]:
        best, responses = float("inf"), []
        for _ in range(args.reps):
            started = time.perf_counter()
            responses = []
            for b, start in enumerate(range(0, len(prompts), 512)):
                part = prompts.subset(list(range(start, min(start + 512, len(prompts)))))
                responses += generation.generate(base, part, max_new_tokens=finetune.MAX_NEW_TOKENS,
                                                 temperature=1.0, seed=b, fwd_hooks=hooks)
            best = min(best, time.perf_counter() - started)
        return best, responses

    whole_seconds, whole = sample(noop)
    running_seconds, running = sample(())
    lengths = [len(r) for r in running]
    print(f"chat-base, {len(prompts)} samples at T = 1 ({args.prompts} prompts x {args.samples}), batches of 512, "
          f"{args.threads} thread(s); response length mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")
    print(f"  whole batch every pass (a no-op hook): {whole_seconds:7.2f} s")
    print(f"  running rows only (no hooks):         {running_seconds:7.2f} s")
    print(f"  speed-up {whole_seconds / running_seconds:.1f}x; same samples: {whole == running}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
