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
# # 00 — A tour of a transformer you can take apart
#
# Mechanistic interpretability asks *how* a network computes what it computes, by reading its
# activations and weights. Alignment needs that: to trust, monitor or fix a model's behaviour, we
# have to find where the behaviour lives. This chapter teaches the tools every later chapter uses:
# tokens and logits, the activation cache, hook names, and hooks that read or edit activations.
#
# We work on `attn2-induction`, a 2-layer attention-only model shipped with the course and trained
# on a synthetic world (blocks of random syllables that repeat). Because we built the world, we know
# what the model *must* do to succeed: copy what followed the previous occurrence of the current
# token. Chapter 01 reverse-engineers exactly how it does that.
#
# Everything here runs offline on a laptop CPU in well under a minute.

# %% tags=["parameters"]
# The model this notebook studies. Any shipped zoo model name, or on a machine that reaches the
# Hugging Face hub a real one such as "gpt2-small" (the token examples below assume the zoo's words).
MODEL_NAME = "attn2-induction"

# %%
import torch

from interplab import circuits
from interplab.checks import ch00 as checks
from interplab.worlds import induction
from interplab.zoo import list_models, load_model

torch.manual_seed(0)
torch.set_grad_enabled(False)  # we only read the model in this chapter

for name, description in list_models().items():
    print(f"{name}: {description}")

# %% [markdown]
# ## 1. Load a model
#
# `load_model` returns a TransformerLens 4.x `TransformerBridge`: the same object you get for GPT-2,
# Pythia or Gemma. Its config says what is inside.

# %%
model = load_model(MODEL_NAME)
cfg = model.cfg
print(f"{cfg.n_layers} layers, {cfg.n_heads} heads of size {cfg.d_head}, d_model {cfg.d_model}, "
      f"vocabulary {cfg.d_vocab}, context {cfg.n_ctx}, attention only: {cfg.attn_only}")

# %% [markdown]
# ## 2. Tokens and logits
#
# The world's words are syllables. `to_tokens` turns text into ids (prepending `<bos>`, as GPT-2
# prepends `<|endoftext|>`), `to_str_tokens` shows how the text was split. The model returns
# **logits**: for every position, a score for every possible *next* token.

# %%
text = "ka to mi su ne ka to mi su"
tokens = model.to_tokens(text)
print(tokens)
print(model.to_str_tokens(text))
logits = model(tokens)
print("logits shape [batch, position, vocabulary]:", tuple(logits.shape))

# %% [markdown]
# ### Exercise 1 — predict the next token
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵🔵 · about 5 minutes
#
# Write `top_prediction(model, tokens)`: for each sequence in the batch, the id of the token the
# model ranks highest at the **last** position. Input `tokens` has shape `[batch, seq]`; return a
# tensor of shape `[batch]`.
#
# <details><summary>Hint</summary>
#
# `model(tokens)` gives logits `[batch, seq, vocab]`; take position `-1` and `argmax` over the last axis.
# </details>

# %%
def top_prediction(model, tokens: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: run the model, take the last position, argmax over the vocabulary
    logits = model(tokens)
    return logits[:, -1].argmax(dim=-1)
    # END SOLUTION


checks.test_top_prediction(top_prediction)

# %% [markdown]
# After `ka to mi su ne ka to mi su`, a model that has learned the world should continue with `ne`:
# the word that followed `su` last time.

# %%
# NBVAL_CHECK_OUTPUT
prediction = top_prediction(model, tokens)
print("the model predicts:", model.to_string(prediction))

# %% [markdown]
# ## 3. The activation cache and hook names
#
# `run_with_cache` runs the model and records every intermediate activation under a **hook name**.
# These names are the lingua franca of interpretability tools: `blocks.{layer}.attn.hook_pattern`
# is the attention pattern of a layer, `blocks.{layer}.hook_resid_post` the residual stream after a
# block, `blocks.{layer}.attn.hook_z` each head's output before it is mixed back into the stream.

# %%
probe = induction.repeated_tokens(1, half_len=10, seed=3)  # <bos> + 10 random words + the same 10 again
logits, cache = model.run_with_cache(probe)
for name in cache.keys():
    if name.startswith("blocks.0."):
        print(f"{name:36s} {tuple(cache[name].shape)}")

# %% [markdown]
# ### Exercise 2 — read an attention pattern from the cache
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# `cache["blocks.{layer}.attn.hook_pattern"]` has shape `[batch, head, query position, key position]`:
# row `q` says how much position `q` attends to each earlier position. Write
# `previous_token_attention(cache, layer, head)`: the mean, over the batch and over query positions
# `q = 1 … seq-1`, of the attention from `q` to `q - 1`. Return a Python float.
#
# A head that scores near 1 is a **previous-token head**, the first half of the induction circuit.
#
# <details><summary>Hint</summary>
#
# `pattern.diagonal(offset=-1, dim1=-2, dim2=-1)` collects the entries `[q, q-1]` for every `q >= 1`.
# </details>

# %%
def previous_token_attention(cache, layer: int, head: int) -> float:
    # BEGIN SOLUTION: take the sub-diagonal of cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean().item()
    # END SOLUTION


checks.test_previous_token_attention(previous_token_attention)

# %%
# NBVAL_CHECK_OUTPUT
for layer in range(cfg.n_layers):  # your function on every head
    print(f"layer {layer}: " + "  ".join(f"head {h}: {previous_token_attention(cache, layer, h):.2f}"
                                         for h in range(cfg.n_heads)))
print("the library's circuits.previous_token_scores(cache) gives the same table in one call:",
      torch.allclose(circuits.previous_token_scores(cache),
                     torch.tensor([[previous_token_attention(cache, l, h) for h in range(cfg.n_heads)]
                                   for l in range(cfg.n_layers)]), atol=1e-4))

# %% [markdown]
# ## 4. Hooks that read
#
# A cache stores everything; a **hook** is a function called with one activation as the model runs,
# so it can record just what you need. `model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])`
# calls `fn(activation, hook)` at `name` and removes the hook afterwards.
#
# ### Exercise 3 — collect residual-stream norms with a hook
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵⚪ · about 10 minutes
#
# Write `residual_norms(model, tokens)`: for each layer, the mean (over batch and positions) L2 norm
# of `blocks.{layer}.hook_resid_post`, gathered by reading hooks, not by a cache. Return a tensor of
# shape `[n_layers]`.
#
# <details><summary>Hint</summary>
#
# Append `resid.norm(dim=-1).mean()` to a list from inside the hook; return nothing from the hook
# (returning `None` leaves the activation unchanged); `torch.stack` the list at the end. The hooks
# run in layer order. (If you would rather key a dict by name, read the next section first:
# `hook.name` is not the name you registered.)
# </details>

# %%
def residual_norms(model, tokens: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: a hook that appends resid.norm(dim=-1).mean() to a list, on each hook_resid_post
    norms = []

    def record(resid, hook):
        norms.append(resid.norm(dim=-1).mean())

    hooks = [(f"blocks.{layer}.hook_resid_post", record) for layer in range(model.cfg.n_layers)]
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return torch.stack(norms)
    # END SOLUTION


checks.test_residual_norms(residual_norms)

# %% [markdown]
# ### `hook.name` is not the name you registered
#
# A hook receives a second argument, `hook`, whose `.name` looks like the obvious way to tell one
# hook point from another. Under TransformerLens 4 it is not: the bridge wraps the real model's
# modules, and many of the classic names (`hook_z`, `hook_resid_post`, ...) are **aliases** for
# the bridge's own hook points. The hook sees the bridge's name:

# %%
# NBVAL_CHECK_OUTPUT
registered = ["blocks.0.attn.hook_z", "blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"]
seen = []
model.run_with_hooks(probe, fwd_hooks=[(name, lambda activation, hook: seen.append(hook.name)) for name in registered])
for name, hook_name in zip(registered, seen):
    print(f"registered {name:28s} -> hook.name {hook_name}")

# %% [markdown]
# So a recording hook written as `store[hook.name] = activation` files `hook_z` under
# `blocks.0.attn.o.hook_in`, and `store["blocks.0.attn.hook_z"]` raises `KeyError`. The safe
# pattern: carry the name you registered into the hook yourself, with a closure (as `residual_norms`
# and `ablate_head_hook` do) or `functools.partial`:

# %%
# NBVAL_CHECK_OUTPUT
from functools import partial


def store_activation(activation, hook, name, store):
    store[name] = activation.detach()  # `name` is the registered name, whatever hook.name says


store = {}
model.run_with_hooks(probe, fwd_hooks=[(name, partial(store_activation, name=name, store=store)) for name in registered])
print(sorted(store))

# %% [markdown]
# ## 5. Hooks that edit
#
# A hook that *returns* a tensor replaces the activation. That is an **intervention**: the tool
# behind ablations, activation patching and steering in later chapters. Removing one head's output
# and watching what breaks is the simplest causal test of what the head is for.
#
# ### Exercise 4 — ablate one attention head
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Write `ablate_head_hook(head)`, which returns a hook for `blocks.{layer}.attn.hook_z`
# (shape `[batch, position, head, d_head]`) that sets the output of head `head` to zero.
#
# <details><summary>Hint</summary>
#
# Inside the returned function: `z = z.clone(); z[:, :, head] = 0; return z`.
# </details>

# %%
def ablate_head_hook(head: int):
    # BEGIN SOLUTION: return a function (z, hook) -> z with z[:, :, head] set to zero
    def hook(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook
    # END SOLUTION


checks.test_ablate_head_hook(ablate_head_hook)

# %% [markdown]
# How much does each head matter? We ablate them one at a time and measure the accuracy on the
# repeated half of `<bos> + A + A`, where only induction can predict the next word. (The library's
# `circuits.next_token_accuracy` counts correct argmax predictions where a mask is true.)

# %%
# NBVAL_CHECK_OUTPUT
batch = induction.repeated_tokens(16, half_len=15, seed=11)
second_half = torch.zeros_like(batch, dtype=torch.bool)
second_half[:, 16:] = True
clean_accuracy = circuits.next_token_accuracy(model(batch), batch, second_half)
print(f"no ablation: accuracy {clean_accuracy:.2f}")
for layer in range(cfg.n_layers):
    for head in range(cfg.n_heads):
        ablated = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate_head_hook(head))])
        print(f"ablate {layer}.{head}: accuracy {circuits.next_token_accuracy(ablated, batch, second_half):.2f}")

# %% [markdown]
# ## 6. Look at attention
#
# Numbers summarise; pictures suggest hypotheses. Below, every head of both layers on
# `<bos> + A + A`. Look for a head whose pattern is a stripe just below the diagonal (attends to the
# previous token) and a layer-1 head whose stripe sits `len(A) - 1` positions back in the second
# half (attends to the token *after* the earlier copy of the current one).

# %%
from interplab_widgets import AttentionView

str_tokens = model.to_str_tokens(probe[0])
patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(cfg.n_layers)])
AttentionView(str_tokens, patterns, title=f"{MODEL_NAME} on <bos> + A + A")

# %% [markdown]
# Click a thumbnail to enlarge a head; hover a token to see where it looks (and what looks at it).

# %% [markdown]
# **Takeaway:** layer 0 has a head that looks one token back, and layer-1 heads look at the token
# after the previous copy: the two halves of an induction circuit. Chapter 01 proves it causally.
#
# ## 7. The same code on a real model
#
# Nothing above is specific to the zoo. With internet and the hub, set `MODEL_NAME = "gpt2-small"`
# in the parameters cell and rerun. Offline, `load_model("gpt2-small")` fails fast and says what to
# do instead. As a stand-in, here is a randomly initialised model of GPT-2's architecture (built
# with no download), scored by your `previous_token_attention`:

# %%
from interplab.zoo import ModelNotAvailableError, build_random_gpt2, hub_reachable

if not hub_reachable():
    try:
        load_model("gpt2-small")
    except ModelNotAvailableError as error:
        print(str(error).splitlines()[0])

gpt2_shaped = build_random_gpt2(n_layers=2, d_model=64, n_heads=4)
_, gpt2_cache = gpt2_shaped.run_with_cache(torch.randint(0, 128, (1, 12)))
print("previous-token scores of a random GPT-2-shaped model (layer x head):")
for layer in range(gpt2_shaped.cfg.n_layers):
    print(f"layer {layer}: " + "  ".join(f"{previous_token_attention(gpt2_cache, layer, head):.2f}"
                                         for head in range(gpt2_shaped.cfg.n_heads)))
