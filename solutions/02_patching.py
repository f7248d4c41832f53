# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — Patching: find a circuit by causal intervention
#
# Reading attention patterns (chapter 01) suggests hypotheses; it does not prove that a component
# *causes* a behaviour. **Patching** does: run the model on a prompt, swap one internal activation for
# its value on a different prompt, and measure how the output moves. If a behaviour lives in a few
# components, patching finds them, and an alignment team can then monitor or edit exactly those
# components. That is the promise behind "circuits that interventions can target", and this chapter
# tests it by hand.
#
# The task is **indirect object identification** (IOI), made famous by Wang et al. (2022) in GPT-2:
# "when mary and john went to the store , john gave a drink to" → **mary**. The model must notice which
# name is repeated (the subject, S) and output the other one (the indirect object, IO). We study
# `ioi-2l`, a 2-layer transformer with MLPs trained on a synthetic IOI world shipped with the course.
# Its model card records a **reference circuit** found by exhaustively patching every edge of the
# model, so at the end you can check the circuit *you* find against it.
#
# Plan: a metric (logit difference) and corrupted prompts; activation patching (residual stream, heads);
# path patching (which head talks to which, through which input); attribution patching (the fast
# gradient approximation, and where it breaks); circuit discovery with edge attribution patching and
# faithfulness; finally, reading the circuit's heads. Everything runs offline on a laptop CPU.
#
# **One sign convention, four methods.** Every number in this chapter is a logit difference, or a change in
# one, measured from one of two runs. Keep this table in view:
#
# | section | method | run we start from | what is swapped in | number reported | 1 means | 0 means | negative means |
# |---|---|---|---|---|---|---|---|
# | §2 | activation patching (*denoising*) | corrupted | one clean activation | restored fraction (patched − corrupted) / (clean − corrupted) | the component alone restores the clean behaviour | no effect | the patch pushes further towards the wrong name |
# | §3 | path patching (*noising*) | clean | one path sees the corrupted sender | metric(path corrupted) − metric(clean), in logits | (not a fraction) | the path does not matter | the path is needed: corrupting it lowers the logit difference |
# | §4 | attribution patching | corrupted (gradient taken there) | first-order estimate of §2's patch | restored fraction, as §2 | as §2 | as §2 | as §2 |
# | §5 | edge attribution patching, circuits | clean (EAP's gradient taken there) | one edge sees the corrupted sender | metric(edge corrupted) − metric(clean), as §3; faithfulness = circuit-only / clean | faithfulness 1: the circuit alone keeps the whole logit difference | faithfulness 0: it keeps none | an important edge, as §3 |
#
# So in §2 and §4 *large positive* is important; in §3 and §5 *large negative* is (and a large positive edge
# is one whose corruption helps, which also matters). Every heatmap's title names its quantity.

# %% tags=["parameters"]
# The model this notebook studies: the shipped IOI model. The prompts below use the IOI world's words,
# so a real model (e.g. "gpt2-small" on Colab) needs prompts in its own vocabulary; section 7 shows the
# library running unchanged on a GPT-2-shaped model.
MODEL_NAME = "ioi-2l"
N_PROMPTS = 32

# %%
import time

import plotly.graph_objects as go
import torch

from interplab import circuits, patching
from interplab.checks import ch02 as checks
from interplab.worlds import ioi
from interplab.zoo import load_model, model_card
from interplab.zoo import ioi as recipe
from interplab_widgets import AttentionView, PatchingHeatmap

torch.manual_seed(0)
torch.set_grad_enabled(False)  # patching only reads and edits activations; section 4 turns gradients on locally

model = load_model(MODEL_NAME)
card = model_card(MODEL_NAME)
cfg = model.cfg
print(f"{MODEL_NAME}: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, MLPs: {not cfg.attn_only}")
print("card metrics:", {k: v for k, v in card["metrics"].items() if "held_out" in k})

# %% [markdown]
# ## 1. The task, the metric and the corruption
#
# Every prompt has 15 tokens: `<bos>` at 0, the two names of the first clause at positions 2 and 4 (call
# them A and B), the repeated subject S2 at 10 and the last word "to" (END) at 14. Only one thing differs
# between prompts in *where* things are: in ABBA prompts the IO is A (position 2) and S1 is B (4); in BABA
# prompts they swap, S1 at 2 and IO at 4. S2 and END never move. Half of our prompts are of each kind, so a
# map that averages over prompts shows position 2 as "A: IO or S1", and heatmaps label positions by this
# role, not by one prompt's words. We use name pairs the model never saw in training.

# %%
clean = ioi.sample(N_PROMPTS, seed=0, held_out=True)
str_tokens = model.to_str_tokens(clean.tokens[0])
# one label per position, by its role in every template (words at other positions vary with the template)
position_labels = ["0 <bos>", "1 when/as", "2 A: IO|S1", "3 and", "4 B: S1|IO", "5 verb", "6 word", "7 word",
                   "8 place", "9 ,", "10 S2", "11 verb", "12 a", "13 object", "14 END"]
print(f"ABBA prompts: {int(clean.abba.sum())} of {len(clean)}; IO at position 2 in those, 4 in the others")
for row in range(3):
    print(ioi.describe(clean.tokens[row]), "->", ioi.describe(clean.io[row:row + 1]),
          "(ABBA)" if clean.abba[row] else "(BABA)")
logits = model(clean.tokens)
print("top prediction at END:", ioi.describe(logits[:3, ioi.POS_END].argmax(-1)))

# %% [markdown]
# Accuracy is too coarse for patching: most interventions move the answer's probability without
# flipping the argmax. The **logit difference** logit(IO) − logit(S) at END is linear in the final
# residual stream, so it splits cleanly into contributions, and it measures exactly the choice we
# care about (IO rather than S), ignoring everything else in the vocabulary.
#
# ### Exercise 1 — the logit difference
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵🔵 · about 5 minutes
#
# Write `logit_diff(logits, answers, position)`: logits `[batch, seq, vocab]`, `answers [batch, 2]`
# (column 0 the correct name, column 1 the wrong one). Return the mean over the batch of
# `logits[b, position, answers[b, 0]] - logits[b, position, answers[b, 1]]` as a 0-d tensor.
#
# <details><summary>Hint</summary>
#
# `logits[:, position].gather(-1, answers)` has shape `[batch, 2]`; subtract its columns and take the mean.
# </details>

# %%
def logit_diff(logits: torch.Tensor, answers: torch.Tensor, position: int = -1) -> torch.Tensor:
    # BEGIN SOLUTION: gather the two answer logits at `position`, subtract the columns, take the mean
    picked = logits[:, position].gather(-1, answers)
    return (picked[:, 0] - picked[:, 1]).mean()
    # END SOLUTION


checks.test_logit_diff(logit_diff)

# %% [markdown]
# **Why the corruption matters.** Patching compares a *clean* run with a *corrupted* one, and a component
# only shows up if it carries information that differs between the two. The world offers three
# corruptions, all keeping the clean IO/S pair as the thing we score:
# - `abc`: three fresh names ("when tom and ben ..., eve gave a drink to"): no name repeats anywhere;
# - `s2_io`: S2 becomes the IO ("..., mary gave a drink to"): the *other* name is now right, the logit
#   difference flips sign, so it also tests what pushes *towards* S;
# - `third_name`: only S2 changes, to a name not in the sentence: the minimal change.
#
# A corruption that changes more also lights up more components, including ones that only carry the
# names themselves; a minimal one isolates the "which name is repeated" signal. From here on we use the
# library's version of the metric, `patching.logit_diff_metric`.

# %%
# NBVAL_CHECK_OUTPUT
metric = patching.logit_diff_metric(clean.answers, position=ioi.POS_END)
clean_value = metric(model(clean.tokens)).item()
print(f"clean logit difference: {clean_value:.2f}")
corruptions = {kind: ioi.corrupt(clean, kind, seed=0) for kind in ioi.CORRUPTIONS}
for kind, batch in corruptions.items():
    print(f"{kind:11s} e.g. '{ioi.describe(batch.tokens[0])}': logit difference {metric(model(batch.tokens)).item():+.2f}")
corrupted = corruptions["abc"]
corrupted_value = metric(model(corrupted.tokens)).item()

# %% [markdown]
# ### Exercise 2 — the restored fraction
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# Patching results are easiest to read on a common scale: 0 means "as bad as the corrupted run", 1 means
# "fully restored to the clean run". Write `patching_score(patched, clean_value, corrupted_value)`; it
# must work elementwise on tensors too.
#
# <details><summary>Hint</summary>
#
# How far the patched value moved from the corrupted one, divided by how far the clean value is from it.
# </details>

# %%
def patching_score(patched, clean_value, corrupted_value):
    # BEGIN SOLUTION: (patched - corrupted) / (clean - corrupted)
    return (patched - corrupted_value) / (clean_value - corrupted_value)
    # END SOLUTION


checks.test_patching_score(patching_score)

# %% [markdown]
# ## 2. Activation patching
#
# **Denoising** activation patching runs the *corrupted* prompt and restores one activation to its
# *clean* value. If that alone brings the logit difference back, the activation carries the information
# the corruption destroyed. We start with the residual stream: one layer and one position at a time.
#
# ### Exercise 3 — patch the residual stream at one layer and position
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Write `patch_residual(model, corrupted_tokens, clean_cache, layer, pos, metric)`: run the corrupted
# tokens with a hook on `blocks.{layer}.hook_resid_pre` that replaces position `pos` (every prompt) with
# the clean cache's value there; return the metric as a float.
#
# <details><summary>Hint</summary>
#
# In the hook: `resid = resid.clone(); resid[:, pos] = clean_cache[name][:, pos]; return resid`, then
# `metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])).item()`.
# </details>

# %%
def patch_residual(model, corrupted_tokens, clean_cache, layer: int, pos: int, metric) -> float:
    # BEGIN SOLUTION: a hook on blocks.{layer}.hook_resid_pre copying the clean value at `pos`; run; metric
    name = f"blocks.{layer}.hook_resid_pre"

    def restore(resid, hook):
        resid = resid.clone()
        resid[:, pos] = clean_cache[name][:, pos]
        return resid

    return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, restore)])).item()
    # END SOLUTION


checks.test_patch_residual(patch_residual)

# %% [markdown]
# Doing that for every (layer, position) is one forward pass each. The library runs them all in **one
# batched pass**: the corrupted prompts are repeated once per (layer, position), and each copy restores its
# own cell. Click a cell of the heatmap to select it.

# %%
resid_map = patching.activation_patch_resid(model, clean.tokens, corrupted.tokens, metric)
resid_scores = patching.restored_fraction(resid_map, clean_value, corrupted_value)
PatchingHeatmap(resid_scores, row_labels=[f"resid_pre {l}" for l in range(cfg.n_layers)], col_labels=position_labels,
                title="restored fraction (denoising: 1 = clean restored, 0 = corrupted): clean residual stream "
                      "patched into the 'abc' run", quantity="restored fraction", vmax=1.0)

# %%
# NBVAL_CHECK_OUTPUT
best_layer, best_pos = divmod(resid_scores.abs().argmax().item(), resid_scores.shape[1])
print(f"largest restoration: layer {best_layer}, position {best_pos} ({position_labels[best_pos]}): "
      f"{resid_scores[best_layer, best_pos]:.2f}")
print("restored fraction by position, last layer:", [round(v, 2) for v in resid_scores[-1].tolist()])

# %% [markdown]
# **Takeaway:** the information that decides the answer sits at very few positions. Where it sits before
# the last layer tells you which position the last layer's attention must read from.
#
# ### Exercise 4 — patch every head in one batched run
# > Difficulty: 🔴🔴🔴 · Importance: 🔵🔵🔵 · about 20 minutes
#
# Now per attention head: restore head `(layer, head)`'s clean output `blocks.{layer}.attn.hook_z[:, :, head]`
# (all positions) in the corrupted run. Write `batched_head_patching(model, clean_tokens, corrupted_tokens,
# metric)` returning `[n_layers, n_heads]` metric values, using **one** `run_with_cache` for the clean
# activations and **one** batched run for all heads (the checker counts).
#
# Repeat the corrupted tokens `n_layers * n_heads` times (`corrupted_tokens.repeat(n, 1)`); copy `i` patches
# head `i`. In each layer's hook, view the activation as `[n, batch, seq, head, d_head]`.
#
# <details><summary>Hint</summary>
#
# For layer `l`, copy `i = l * n_heads + h` patches head `h`: `view[i, :, :, h] = clean_z[l][:, :, h]`.
# After the run, `logits.view(n, batch, seq, vocab)` and apply `metric` to each copy; `torch.stack` and reshape.
# </details>

# %%
def batched_head_patching(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    # BEGIN SOLUTION: repeat the corrupted tokens once per head, patch copy l*n_heads+h at layer l head h, one run
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n, batch = n_layers * n_heads, clean_tokens.shape[0]
    _, cache = model.run_with_cache(clean_tokens)

    def make_hook(layer):
        def hook(z, hook):
            z = z.clone()
            view = z.view(n, batch, *z.shape[1:])
            for head in range(n_heads):
                view[layer * n_heads + head, :, :, head] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
            return z
        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", make_hook(layer)) for layer in range(n_layers)]
    logits = model.run_with_hooks(corrupted_tokens.repeat(n, 1), fwd_hooks=hooks)
    per_copy = logits.view(n, batch, *logits.shape[1:])
    return torch.stack([metric(per_copy[i]) for i in range(n)]).view(n_layers, n_heads)
    # END SOLUTION


checks.test_batched_head_patching(batched_head_patching)

# %% [markdown]
# The library's `activation_patch_heads` does the same (and can patch one position at a time). How much
# does batching buy? We time it against a plain loop with one forward pass per head.

# %%
start = time.perf_counter()
head_map = patching.activation_patch_heads(model, clean.tokens, corrupted.tokens, metric)
batched_seconds = time.perf_counter() - start
start = time.perf_counter()
loop_map = patching.activation_patch_heads_loop(model, clean.tokens, corrupted.tokens, metric)
loop_seconds = time.perf_counter() - start
print(f"batched {batched_seconds:.3f} s, loop {loop_seconds:.3f} s ({loop_seconds / batched_seconds:.1f}x); "
      f"same values: {torch.allclose(head_map, loop_map, atol=1e-4)}")
try:  # your exercise 4 from here on; the library's map if you skipped it
    your_head_map = batched_head_patching(model, clean.tokens, corrupted.tokens, metric)
    print(f"your batched_head_patching gives the same map: {torch.allclose(your_head_map, head_map, atol=1e-3)}")
except NotImplementedError:
    your_head_map = head_map
    print("exercise 4 not written yet: using the library's map")
head_scores = patching.restored_fraction(your_head_map, clean_value, corrupted_value)
PatchingHeatmap(head_scores, row_labels=[f"L{l}" for l in range(cfg.n_layers)],
                col_labels=[f"H{h}" for h in range(cfg.n_heads)], row_title="layer", col_title="head",
                title="restored fraction (denoising: 1 = clean restored): one head's clean output patched into "
                      "the corrupted run", quantity="restored fraction", vmax=1.0)

# %%
# NBVAL_CHECK_OUTPUT
per_position = patching.activation_patch_heads(model, clean.tokens, corrupted.tokens, metric, per_position=True)
per_position_scores = patching.restored_fraction(per_position, clean_value, corrupted_value)
head_labels = [f"{l}.{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
top_layer, top_head = divmod(head_scores.argmax().item(), cfg.n_heads)
print(f"the head that restores most on its own: {top_layer}.{top_head} ({head_scores[top_layer, top_head]:.2f}); "
      f"at END alone: {per_position_scores[top_layer, top_head, ioi.POS_END]:.2f}")

# %%
PatchingHeatmap(per_position_scores.flatten(0, 1), row_labels=head_labels, col_labels=position_labels,
                row_title="head", col_title="position (by role)",
                title="restored fraction (denoising) per head and position", quantity="restored fraction", vmax=1.0)

# %% [markdown]
# **Takeaway:** one late head restores most of the behaviour, and only at END; early heads restore a
# little each. Small individual effects can still matter together (redundancy): activation patching
# measures what one component is *sufficient* for, given everything else is corrupted.
#
# On speed: batching saves the fixed cost of each forward pass, so it pays most with few prompts and many
# components. With many prompts a model this small is compute-bound, and only computing less helps. The
# library's version therefore (1) puts the clean prompts in the same pass, so there is no separate clean
# run; (2) stops the pass at the last block's attention output and finishes only the END position, the
# only one the metric reads (after `hook_z` everything is position-wise; `logit_diff_metric` declares
# its position); and (3) gives heads in the last block only that finishing step. `benchmarks/patching.py`
# prints both regimes, and the floor set by `TransformerBridge`, which runs every block below a patch.
#
# ## 3. Path patching: who talks to whom
#
# A head's output reaches the logits directly and also through every later component. **Path patching**
# corrupts one path only: sender → receiver. When the receiver is a head, the path enters through its
# query, key or value input, which tells you *how* the receiver uses the sender. Here we patch in the
# noising direction (the table at the top): the clean run, with just that path seeing the sender's corrupted
# output, and report metric(path corrupted) − metric(clean), in logits. Negative: the path carries something the
# clean behaviour needs.
#
# ### Exercise 5 — the direct path from a head to the logits
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 15 minutes
#
# Write `direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer, head)`. A head writes
# `z[:, :, head] @ W_O[layer, head]` into the residual stream. Add (corrupted − clean) of that output to
# the *final* residual stream (`blocks.{n_layers-1}.hook_resid_post`) of a clean run, so nothing in between
# sees the change; return the metric change from the clean run as a float.
#
# <details><summary>Hint</summary>
#
# Caches of both runs; `delta = (z_corr[:, :, head] - z_clean[:, :, head]) @ model.W_O[layer, head]` has shape
# `[batch, seq, d_model]`; a hook `lambda resid, hook: resid + delta`.
# </details>

# %%
def direct_path_patch(model, clean_tokens, corrupted_tokens, metric, layer: int, head: int) -> float:
    # BEGIN SOLUTION: delta = (z_corr - z_clean)[:, :, head] @ W_O[layer, head], added to the final resid_post
    name = f"blocks.{layer}.attn.hook_z"
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupt_cache = model.run_with_cache(corrupted_tokens)
    delta = (corrupt_cache[name][:, :, head] - clean_cache[name][:, :, head]) @ model.W_O[layer, head]
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    patched = model.run_with_hooks(clean_tokens, fwd_hooks=[(final, lambda resid, hook: resid + delta)])
    return (metric(patched) - metric(model(clean_tokens))).item()
    # END SOLUTION


checks.test_direct_path_patch(direct_path_patch)

# %% [markdown]
# The library treats the model as a graph: senders (`embed`, each head `a{l}.{h}`, each MLP `m{l}`) write
# to the residual stream; receivers (each head's `q`, `k`, `v` input, each MLP, the `logits`) read from it.
# `patching.edge_patching_scores` path-patches every edge exactly, in batched runs. Below: every edge into
# the most important head found above, by the input it enters.

# %%
graph = patching.ComputationalGraph.from_model(model)
print(f"{len(graph.senders)} senders, {len(graph.receivers)} receivers, {len(graph.edges)} edges")
senders_before = [s for s in graph.senders if s == "embed" or int(s[1]) < top_layer]
into_top = [f"{s}->a{top_layer}.{top_head}.{c}" for c in patching.CHANNELS for s in senders_before]
into_top_scores = patching.edge_patching_scores(model, clean.tokens, corrupted.tokens, metric, graph, into_top)
into_top_grid = into_top_scores.view(len(patching.CHANNELS), len(senders_before))
PatchingHeatmap(into_top_grid, row_labels=[f"a{top_layer}.{top_head}.{c}" for c in patching.CHANNELS],
                col_labels=senders_before, row_title="receiver input", col_title="sender",
                title=f"metric(path corrupted) − metric(clean), in logits (noising; negative = needed): "
                      f"each path into head {top_layer}.{top_head}",
                quantity="metric(path corrupted) − metric(clean)")

# %%
# NBVAL_CHECK_OUTPUT
strongest = into_top_scores.abs().argmax().item()
print(f"strongest path into {top_layer}.{top_head}: {into_top[strongest]} ({into_top_scores[strongest]:+.2f})")
for channel, row in zip(patching.CHANNELS, into_top_grid):
    print(f"  via {channel}: total {row.sum():+.2f}")

# %% [markdown]
# ### Exercise 6 — path patching from one head into another head's query, key or value
# > Difficulty: 🔴🔴🔴 · Importance: 🔵🔵⚪ · about 20 minutes
#
# Write `path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel)`
# (`sender`, `receiver` are `(layer, head)`, `channel` is `"q"`, `"k"` or `"v"`). Two runs:
# 1. a clean run with the sender's (corrupted − clean) output added to `blocks.{receiver layer}.hook_resid_pre`,
#    recording `blocks.{receiver layer}.attn.hook_{channel}`;
# 2. a clean run where only the receiver head's `hook_{channel}` is replaced by the recorded one.
#
# Return metric(run 2) − metric(clean) as a float. Only the receiver's chosen input sees the change, which
# is why step 1 records and step 2 replaces just that head's slice.
#
# <details><summary>Hint</summary>
#
# `hook_q` has shape `[batch, seq, head, d_head]`: in run 2, `q = q.clone(); q[:, :, r_head] = recorded[:, :, r_head]`.
# </details>

# %%
def path_patch_head_to_head(model, clean_tokens, corrupted_tokens, metric, sender, receiver, channel: str) -> float:
    # BEGIN SOLUTION: run 1 adds the sender's delta at the receiver layer's resid_pre and records hook_{channel}; run 2 swaps it in
    (s_layer, s_head), (r_layer, r_head) = sender, receiver
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupt_cache = model.run_with_cache(corrupted_tokens)
    z = f"blocks.{s_layer}.attn.hook_z"
    delta = (corrupt_cache[z][:, :, s_head] - clean_cache[z][:, :, s_head]) @ model.W_O[s_layer, s_head]
    recorded = {}
    name = f"blocks.{r_layer}.attn.hook_{channel}"
    model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{r_layer}.hook_resid_pre", lambda x, hook: x + delta),
                                                  (name, lambda x, hook: recorded.update(value=x.clone()))])

    def replace(x, hook):
        x = x.clone()
        x[:, :, r_head] = recorded["value"][:, :, r_head]
        return x

    return (metric(model.run_with_hooks(clean_tokens, fwd_hooks=[(name, replace)])) - metric(model(clean_tokens))).item()
    # END SOLUTION


checks.test_path_patch_head_to_head(path_patch_head_to_head)

# %% [markdown]
# **Takeaway:** path patching separates *direct* from *indirect* effects. A component whose own output barely
# matters to the logits can still be essential because a later head reads it through its key, query or
# value; the heatmap above says which input carries the signal.
#
# ## 4. Attribution patching: the gradient shortcut
#
# Patching every head at every position, or every edge, costs one (batched) run per item. **Attribution
# patching** (Nanda 2023) replaces each run by a first-order Taylor expansion around the corrupted run:
# metric(patched) ≈ metric(corrupted) + (clean activation − corrupted activation) · ∂metric/∂activation.
# One forward and one backward pass estimate every component at once, which is what makes patching
# affordable on large models. Alignment auditing of big models leans on exactly such approximations, so it
# matters to know when they lie.
#
# ### Exercise 7 — attribution patching over heads
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 15 minutes
#
# Write `attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric)` → `[n_layers, n_heads]`:
# metric(corrupted) + Σ over prompts, positions and `d_head` of (clean z − corrupted z) · ∂metric/∂z, with
# the gradient of the metric taken on the corrupted run at each `blocks.{l}.attn.hook_z`.
#
# <details><summary>Hint</summary>
#
# Gradients are off in this notebook: work inside `with torch.enable_grad():`. A hook can record the
# activation, call `act.retain_grad()` and **return** `act` (TransformerLens 4 reshapes `hook_z` around the
# hook; only a returned tensor stays on the gradient's path); after `metric(logits).backward()`, read `act.grad`. Sum
# `(clean - corr) * grad` over dims `(0, 1, 3)` to get one number per head.
#
# Key what you record by the name you **registered**, not by `hook.name`: under TransformerLens 4 a hook on
# `blocks.0.attn.hook_z` sees `hook.name == "blocks.0.attn.o.hook_in"` (the bridge's own name for that point),
# so a dict keyed by `hook.name` raises `KeyError` when you look up `"blocks.0.attn.hook_z"`. Carry the name in
# with a closure:
# ```python
# def recorder(name):
#     def record(act, hook):
#         act.retain_grad()
#         acts[name] = act
#         return act
#     return record
# fwd_hooks = [(name, recorder(name)) for name in names]
# ```
# (or `functools.partial(record, name=name)`).
# </details>

# %%
def attribution_patch_heads(model, clean_tokens, corrupted_tokens, metric) -> torch.Tensor:
    # BEGIN SOLUTION: record hook_z on the corrupted run with retain_grad, backward the metric, (clean - corr) * grad
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    _, clean_cache = model.run_with_cache(clean_tokens)
    acts = {}

    def recorder(name):  # keyed by the registered name: under TransformerLens 4, hook.name is the bridge's own
        def record(act, hook):
            act.retain_grad()
            acts[name] = act
            return act  # TransformerLens 4 reshapes hook_z around the hook: return it so the gradient flows through it
        return record

    with torch.enable_grad():
        value = metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, recorder(name)) for name in names]))
        value.backward()
    return value.detach() + torch.stack([((clean_cache[name] - acts[name].detach()) * acts[name].grad).sum(dim=(0, 1, 3))
                                         for name in names])
    # END SOLUTION


checks.test_attribution_patch_heads(attribution_patch_heads)

# %% [markdown]
# Now the library version against activation patching, for heads (all positions), heads per position and the
# residual stream. Each point of the scatter plot is one component.

# %%
comparisons = {}
start = time.perf_counter()
try:
    attr_heads = attribution_patch_heads(model, clean.tokens, corrupted.tokens, metric)  # your exercise 7
except NotImplementedError:
    print("exercise 7 not written yet: using the library's attribution_patch_heads")
    attr_heads = patching.attribution_patch_heads(model, clean.tokens, corrupted.tokens, metric)
attr_seconds = time.perf_counter() - start
comparisons["heads"] = (head_map, attr_heads)
comparisons["heads x position"] = (per_position, patching.attribution_patch_heads(
    model, clean.tokens, corrupted.tokens, metric, per_position=True))
comparisons["residual stream"] = (resid_map, patching.attribution_patch_resid(model, clean.tokens, corrupted.tokens, metric))
print(f"head level: attribution {attr_seconds:.3f} s vs batched activation patching {batched_seconds:.3f} s")

# %%
# NBVAL_CHECK_OUTPUT
for name, (exact, approx) in comparisons.items():
    print(f"{name:17s} pearson r, attribution vs activation patching = {patching.pearson(exact, approx):.3f}")

# %%
figure = go.Figure()
for name, (exact, approx) in comparisons.items():
    r = patching.pearson(exact, approx)
    figure.add_trace(go.Scatter(x=patching.restored_fraction(exact, clean_value, corrupted_value).flatten().tolist(),
                                y=patching.restored_fraction(approx, clean_value, corrupted_value).flatten().tolist(),
                                mode="markers", name=f"{name} (r={r:.2f})"))
figure.add_trace(go.Scatter(x=[-0.2, 1.1], y=[-0.2, 1.1], mode="lines", name="y = x", line={"dash": "dot"}))
figure.update_layout(xaxis_title="activation patching (restored fraction)",
                     yaxis_title="attribution patching (restored fraction)", width=620, height=440,
                     title="restored fraction (denoising): attribution estimate vs activation patching")
figure.show()

# %%
# NBVAL_CHECK_OUTPUT
exact_resid, approx_resid = (patching.restored_fraction(m, clean_value, corrupted_value) for m in comparisons["residual stream"])
worst = (exact_resid - approx_resid).abs().argmax().item()
layer, pos = divmod(worst, exact_resid.shape[1])
print(f"worst residual-stream estimate: layer {layer}, {position_labels[pos]}: activation patching "
      f"{exact_resid[layer, pos]:.2f}, attribution {approx_resid[layer, pos]:.2f}")

# %% [markdown]
# **Where it breaks.** Attribution patching is exact for a change that enters the metric linearly, and drifts
# as the path from the patched activation to the logits becomes nonlinear: a large change (swapping a whole
# name embedding), a saturated attention softmax, an MLP, LayerNorm. A head's output at END feeds the logits
# almost linearly, hence the tight fit for heads. The residual stream at S2 feeds the first MLP, whose
# nonlinearity shows as the worst miss printed above. The failure is much larger for single *edges*
# into MLPs and attention inputs (section 5). Use the gradient estimate to rank and shortlist, then confirm
# the shortlist with real patching.
#
# ## 5. Circuit discovery: edge attribution patching
#
# **Edge attribution patching** (EAP, Syed et al. 2023) scores every *edge* of the graph with one forward and
# one backward pass: score(u → v) = Σ (corrupted − clean output of u) · ∂metric/∂(input of v). Keep the top-k
# edges, corrupt all the others, and see how much of the behaviour the circuit alone keeps: its
# **faithfulness**, circuit-only logit difference / full-model logit difference. We use the same 64 prompts
# the model card's reference circuit was measured on.
#
# Which run: like path patching (§3), EAP starts from the **clean** run and takes the gradient there; a score
# estimates metric(edge corrupted) − metric(clean), in logits, so negative = the edge is needed. This section
# runs on its own after the set-up cell: it builds the graph again.

# %%
graph = patching.ComputationalGraph.from_model(model)
ref = card["reference_circuit"]
ref_clean, ref_corrupted = recipe.circuit_prompts()
ref_metric = patching.logit_diff_metric(ref_clean.answers, position=ioi.POS_END)
start = time.perf_counter()
eap_scores = patching.edge_attribution_scores(model, ref_clean.tokens, ref_corrupted.tokens, ref_metric, graph)
print(f"EAP scored {len(graph.edges)} edges in {time.perf_counter() - start:.2f} s")

# %%
# NBVAL_CHECK_OUTPUT
exact_scores = torch.tensor([ref["all_edge_effects"][name] for name in graph.edge_names])  # exact, from the card
print(f"pearson r, EAP vs exact edge patching (the card's, all {len(graph.edges)} edges): "
      f"{patching.pearson(eap_scores, exact_scores):.3f}")

# %% [markdown]
# A good correlation over 110 edges hides where the estimate is wrong. Below: the ten edges where EAP misses most,
# with the exact effect **measured here** by patching each edge alone (it agrees with the card's number).

# %%
# NBVAL_CHECK_OUTPUT
misses = (eap_scores - exact_scores).abs().argsort(descending=True)[:10].tolist()
shown = [graph.edge_names[i] for i in misses]
measured = patching.edge_patching_scores(model, ref_clean.tokens, ref_corrupted.tokens, ref_metric, graph, shown,
                                         max_batch=16384)  # one pass: no progress bar in this checked cell
print(f"{'edge':14s} {'into':>6s} {'exact':>7s} {'EAP':>7s}  verdict")
for name, i, exact in zip(shown, misses, measured.tolist()):
    receiver = name.split("->")[1]
    into = "MLP" if receiver.startswith("m") else "logits" if receiver == "logits" else f"{receiver[-1]} input"
    eap = eap_scores[i].item()
    verdict = "sign flipped" if exact * eap < 0 else f"EAP {abs(eap / exact):.1f}x the exact size"
    print(f"{name:14s} {into:>6s} {exact:+7.2f} {eap:+7.2f}  {verdict}")
important = exact_scores.abs() > 0.1
flipped = important & (exact_scores * eap_scores < 0)
print(f"edges with |exact| > 0.1: {int(important.sum())}; EAP gets the sign wrong on {int(flipped.sum())}, "
      f"of which {sum(graph.edge_names[i].endswith(('m0', 'm1')) for i in flipped.nonzero().flatten().tolist())} "
      "go into an MLP")

# %% [markdown]
# ### Exercise 8 — keep the k most important edges
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# Write `top_k_edges(scores, edge_names, k)`: the names of the `k` edges with the largest **absolute**
# score, largest first (edges with equal scores may come in any order). (An edge whose corruption *raises*
# the metric is as much part of the mechanism as one that lowers it.)
#
# <details><summary>Hint</summary>
#
# `scores.abs().argsort(descending=True)[:k]`.
# </details>

# %%
def top_k_edges(scores: torch.Tensor, edge_names: list[str], k: int) -> list[str]:
    # BEGIN SOLUTION: sort by |score|, descending, keep k names
    return [edge_names[i] for i in scores.abs().argsort(descending=True)[:k].tolist()]
    # END SOLUTION


checks.test_top_k_edges(top_k_edges)

# %%
ks = [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 25, 30, 40, 60]
curves = {name: patching.faithfulness_curve(model, ref_clean.tokens, ref_corrupted.tokens, ref_metric, graph, scores, ks)
          for name, scores in (("EAP ranking", eap_scores), ("exact ranking (card)", exact_scores))}
figure = go.Figure([go.Scatter(x=ks, y=curve.tolist(), mode="lines+markers", name=name) for name, curve in curves.items()])
figure.update_layout(xaxis_title="edges kept (top k by |score|)", yaxis_title="faithfulness (circuit-only / clean)",
                     width=620, height=400, title=f"faithfulness: share of the clean logit difference the top-k "
                                                  f"circuit keeps ({len(graph.edges)} edges in all)")
figure.show()

# %%
# NBVAL_CHECK_OUTPUT
print("faithfulness by k:", {name: [round(f, 2) for f in curve.tolist()] for name, curve in curves.items()})
eap_k = next((k for k, f in zip(ks, curves["EAP ranking"].tolist()) if f >= ref["faithfulness_target"]), ks[-1])
print(f"reference circuit: {ref['k']} edges, faithfulness {ref['faithfulness']:.2f}; "
      f"EAP needs k = {eap_k} to reach {ref['faithfulness_target']}")

# %% [markdown]
# ### Exercise 9 — compare your circuit with the reference
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# Write `circuit_overlap(found, reference)` → `(precision, recall)`: the share of found edges that are in
# the reference circuit, and the share of reference edges that were found (each list taken as a set, so a
# duplicate counts once; a share of an empty list is 0.0).
#
# <details><summary>Hint</summary>
#
# `hits = len(set(found) & set(reference))`.
# </details>

# %%
def circuit_overlap(found: list[str], reference: list[str]) -> tuple[float, float]:
    # BEGIN SOLUTION: intersection size over len(found), and over len(reference)
    hits = len(set(found) & set(reference))
    return hits / max(len(set(found)), 1), hits / max(len(set(reference)), 1)
    # END SOLUTION


checks.test_circuit_overlap(circuit_overlap)

# %%
# NBVAL_CHECK_OUTPUT
try:  # your exercises 8 and 9
    eap_circuit = top_k_edges(eap_scores, graph.edge_names, ref["k"])
    precision, recall = circuit_overlap(eap_circuit, ref["edges"])
except NotImplementedError:
    print("exercises 8 and 9 not written yet: using the library's ranking")
    eap_circuit = [name for name, keep in zip(graph.edge_names, graph.top_edges(eap_scores, ref["k"])) if keep]
    hits = len(set(eap_circuit) & set(ref["edges"]))
    precision, recall = hits / len(eap_circuit), hits / len(ref["edges"])
print(f"EAP's top {ref['k']} edges vs the reference circuit: precision {precision:.2f}, recall {recall:.2f}")
print("reference edges EAP ranks outside its top k:", sorted(set(ref["edges"]) - set(eap_circuit)))
print("reference circuit:", ", ".join(ref["edges"]))

# %% [markdown]
# **Takeaway:** EAP recovers the backbone of the circuit from a single backward pass but misjudges edges that
# enter MLPs or carry large embedding changes (the nonlinear ones of section 4). The table of misses above
# shows both ways it fails: it underestimates the strongest edges several-fold (`m0->a1.3.v`, `embed->m0`), and
# on edges into the MLPs it gets even the sign wrong: corrupting `m0->m1` alone costs 0.52 of logit
# difference, EAP predicts it would *add* 3.70, and each `a0.h->m0` flips sign too. The linear estimate around
# the clean run cannot see that the first MLP's response to one corrupted input is not the sum of its
# responses. Its faithfulness curve rises more slowly than the exact ranking's: a circuit found by gradients
# needs checking by intervention.
#
# ## 6. Reading the circuit's heads
#
# Patching says *where*; attention patterns and the heads' writes to the logits say *what*. For every head:
# where does END attend, and does its output at END push towards IO or towards S?
#
# ### Exercise 10 — attention from END to the names
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵⚪ · about 10 minutes
#
# Write `attention_from_end(pattern, batch)`: `pattern` is one layer's `[batch, head, query, key]`; return
# `[head, 3]`, the mean over prompts of the attention from END to the IO, S1 and S2 positions. IO and S1 swap
# places between ABBA and BABA prompts (section 1), so read each prompt's positions from the batch:
# `batch.pos_io`, `batch.pos_s1`, `batch.pos_s2`, `batch.pos_end` (shape `[batch]`), rather than hard-coding
# 2, 4, 10 and 14. (The checker also tries a batch whose names sit elsewhere.)
#
# <details><summary>Hint</summary>
#
# `rows = torch.arange(len(batch))`; `pattern[rows, :, batch.pos_end]` is `[batch, head, key]`; index its
# last axis with `[rows, :, batch.pos_io]` and so on.
# </details>

# %%
def attention_from_end(pattern: torch.Tensor, batch) -> torch.Tensor:
    # BEGIN SOLUTION: pick the END query row per prompt, then the IO / S1 / S2 key columns, mean over prompts
    rows = torch.arange(len(batch))
    end = pattern[rows, :, batch.pos_end]
    return torch.stack([end[rows, :, where] for where in (batch.pos_io, batch.pos_s1, batch.pos_s2)], dim=-1).mean(0)
    # END SOLUTION


checks.test_attention_from_end(attention_from_end)

# %% [markdown]
# Now what each component **writes** at END, by **direct logit attribution** with the library's one recipe,
# `circuits.logit_attribution` (chapter 01's exercise 6 uses the same). The final LayerNorm is linear once its
# scale is frozen at the value the run recorded, so the logit of a name splits into one share per component
# of the final residual stream: centre the component (LayerNorm subtracts the mean), divide by the recorded
# scale, multiply by `ln_final.weight`, dot with the name's unembedding. The embeddings, each head, each
# layer's attention bias `b_O`, each MLP, and the final biases (`ln_final.b` and `b_U`) together rebuild the
# logit exactly. "writes IO" is a component's share of logit(IO), "writes S" of logit(S), and "logit diff"
# their difference, averaged over the 32 prompts; the last column sums to the clean logit difference.
# Direct only: what a head does *through* a later MLP shows up in that MLP's row, not its own.

# %%
# NBVAL_CHECK_OUTPUT
_, cache = model.run_with_cache(clean.tokens)
at_end = [ioi.POS_END]
names, to_io = circuits.logit_attribution(model, cache, clean.io[:, None], positions=at_end)
_, to_s = circuits.logit_attribution(model, cache, clean.s[:, None], positions=at_end)
_, to_diff = circuits.logit_attribution(model, cache, clean.io[:, None], clean.s[:, None], positions=at_end)
to_io, to_s, to_diff = (values[:, :, 0].mean(1) for values in (to_io, to_s, to_diff))
attention = {}  # head name -> mean attention from END to IO, S1, S2, by your exercise 10
for layer in range(cfg.n_layers):
    try:
        table = attention_from_end(cache[f"blocks.{layer}.attn.hook_pattern"], clean)
    except NotImplementedError:  # exercise 10 skipped: the same numbers, written out here
        end = cache[f"blocks.{layer}.attn.hook_pattern"][torch.arange(len(clean)), :, clean.pos_end]
        table = torch.stack([end[torch.arange(len(clean)), :, where]
                             for where in (clean.pos_io, clean.pos_s1, clean.pos_s2)], -1).mean(0)
    attention.update({f"a{layer}.{head}": table[head] for head in range(cfg.n_heads)})
print(f"{'component':10s} {'END->IO':>8s} {'END->S1':>8s} {'END->S2':>8s} {'writes IO':>10s} {'writes S':>9s} "
      f"{'logit diff':>11s}")
for name, io_share, s_share, diff_share in zip(names, to_io.tolist(), to_s.tolist(), to_diff.tolist()):
    looks = "".join(f"{a:8.2f} " for a in attention[name].tolist()) if name in attention else " " * 27
    print(f"{name:10s} {looks}{io_share:10.2f} {s_share:9.2f} {diff_share:11.2f}")
print(f"{'sum':10s} {'':27s}{to_io.sum():10.2f} {to_s.sum():9.2f} {to_diff.sum():11.2f}")
print(f"clean logit difference: {clean_value:.2f}; the column above sums to it (difference "
      f"{abs(to_diff.sum().item() - clean_value):.3f})")

# %% [markdown]
# How to read it. The "sum" row is the logit of IO ("writes IO"), of S ("writes S") and their difference, which
# equals the clean logit difference printed in section 1: nothing is left out. A head whose END row splits
# its attention evenly between the two first-clause names is gathering "A + B", both names; its own "logit
# diff" is small, because it writes both names alike. A head whose END row points at **S2** and whose "writes
# S" is clearly negative is pushing the repeated name *down*; its "logit diff" is the largest of any head. The
# first MLP writes both names up by the same amount (its "logit diff" is about 0); the last MLP writes IO far
# above S and carries most of the difference. The final-bias row (`ln_final.b` and `b_U` along the names'
# unembeddings) is the same for every prompt.
#
# ### Exercise 11 — name the circuit's heads, by role
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# From your own results: the head patching map of section 2, the paths into the top head in section 3, the
# reference circuit's edges printed in section 5, and the table above. Name the heads of the circuit in two
# roles:
# - **name collectors**: layer-0 heads that gather the names of the first clause and hand them to the first
#   MLP (the circuit has an edge `a0.h->m0` from each);
# - **S-inhibition heads**: later heads that read "this name was said again" at S2 through their **value**
#   input, from what the first MLP wrote there (an edge `m0->a{l}.{h}.v`), and write S down.
#
# Give heads as `(layer, head)` pairs or strings like `"a0.2"`. `checks.check_circuit` compares them with the
# reference circuit on the model card and tells you which are missing or in the wrong role.

# %%
# BEGIN SOLUTION: layer-0 heads attending from END to both names; later heads attending to S2 and writing S down
name_collectors = [head for head, looks in attention.items() if head.startswith("a0.") and min(looks[:2]) > 0.1]
s_inhibition_heads = [head for head, looks in attention.items()
                      if not head.startswith("a0.") and looks[2] > 0.5 and to_s[names.index(head)] < 0]
print("name collectors:", name_collectors, "S-inhibition:", s_inhibition_heads)
# END SOLUTION
checks.check_circuit(name_collectors, s_inhibition_heads)

# %% [markdown]
# The circuit, read together:
# - the **name collectors** attend from END to both first-clause names and hand "A + B" to the first MLP
#   (edges `a0.h->m0`), and that MLP at END writes *both* names up;
# - the **S-inhibition head** attends from END to **S2** and reads it through its value input, from what the
#   embedding and the first MLP wrote at S2 (`embed->m0`, `m0->a1.h.v`): "this name was said again". It writes
#   S *down*;
# - the last MLP reads the S-inhibition head (`a1.h->m1`) and writes IO far above S: the final sorting step.
#
# IO = (A + B) − S: the arithmetic of GPT-2's IOI circuit (name movers aside), squeezed into two layers. In
# the view below, the S-inhibition head's END row points at S2.

# %%
patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(cfg.n_layers)])
AttentionView(str_tokens, patterns, title=f"{MODEL_NAME}: '{ioi.describe(clean.tokens[0])}'")

# %% [markdown]
# ## 7. The same code on GPT-2-, Pythia- and Gemma-shaped models
#
# Every library function here takes any TransformerLens model. Offline, randomly initialised models of the
# real architectures stand in for the real ones (on Colab, `load_model("gpt2-small")` and prompts from
# Wang et al. run through the same calls). Two architectures change the graph itself:
# - **Pythia** runs attention and MLP *in parallel* on the block's input, so an MLP cannot read its own
#   layer's heads: there is no edge `a1.h->m1`;
# - **Gemma** uses *grouped-query attention*: several heads share one key and one value input, so a key or
#   value receiver is a group, `a1.kv0.k`, not a head.

# %%
# NBVAL_CHECK_OUTPUT
from interplab.zoo import build_random_model

toy_clean = torch.randint(0, 128, (4, 10), generator=torch.Generator().manual_seed(0))
toy_corrupted = toy_clean.clone()
toy_corrupted[:, 3] = (toy_corrupted[:, 3] + 1) % 128
toy_metric = patching.logit_diff_metric(torch.tensor([[1, 2]] * 4))
for family in ("gpt2", "pythia", "gemma"):
    shaped = build_random_model(family, n_layers=2, d_model=64, n_heads=4)
    shaped_graph = patching.ComputationalGraph.from_model(shaped)
    heads = patching.activation_patch_heads(shaped, toy_clean, toy_corrupted, toy_metric)
    eap = patching.edge_attribution_scores(shaped, toy_clean, toy_corrupted, toy_metric, shaped_graph)
    print(f"{family:7s} head patching {tuple(heads.shape)}; {len(shaped_graph.edges)} edges; "
          f"a1.0->m1 is an edge: {'a1.0->m1' in shaped_graph.edge_names}; "
          f"layer-1 key receivers: {[r for r in shaped_graph.receivers if r.startswith('a1.') and r.endswith('.k')]}")

# %% [markdown]
# ## Summary
#
# - Logit difference on clean vs corrupted prompts is the yardstick; the corruption decides which
#   information the experiment can see.
# - Activation patching says what a component is sufficient for; path patching says through which
#   connection and which input (q, k, v) it acts.
# - Attribution patching and EAP estimate all of that from one backward pass: excellent for ranking where
#   the model is near-linear, wrong where it is not. Confirm by intervention.
# - A circuit is a claim; faithfulness tests it. The reference circuit in the model card lets you test yours.
#
# For alignment, this is the workflow behind "find the circuit, then monitor or edit it": it works on a
# model whose ground truth we know. Whether the same holds for deception or harmful behaviour in large
# models, where circuits are bigger, superposed and redundant, is the open question later chapters return to.
