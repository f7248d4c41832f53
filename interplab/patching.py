"""Causal interventions, batched: activation, path, attribution and edge attribution patching.

Every function takes any TransformerLens 4.x model (a zoo model or GPT-2 through
``TransformerBridge``) and a ``metric``: a function from logits ``[batch, seq, vocab]``
to a scalar (for example the mean logit difference). It uses hook names and ``W_O`` only.
The maps and scores come back on the CPU, ready to plot, whatever device the model runs on.

Why it is fast: patching one component per forward pass wastes the CPU on tiny
matrices and computes logits nobody reads. Here the prompts are repeated once per
component and every copy patches its own component, all in one forward pass (split in
chunks of about ``max_batch`` sequences) that also holds the clean prompts the copies
take their clean values from; the pass finishes only the positions the metric reads
(``patch_and_measure``).

Conventions:
- *activation patching* denoises: run the corrupted prompts, restore one component's
  clean activation, return the metric of that run (as ``transformer_lens.patching`` does).
- *attribution patching* is its first-order Taylor estimate: metric(corrupted) +
  (clean - corrupted activation) . d metric / d activation (gradient on the corrupted run).
- *edges* (path patching, EAP, circuits) are corrupted on the clean run: an edge
  ``sender -> receiver`` is corrupted when the receiver's input sees the sender's
  output from the corrupted run instead of the current one. Scores are
  metric(edge corrupted) - metric(clean).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device

Metric = Callable[[Float[torch.Tensor, "batch seq vocab"]], Float[torch.Tensor, ""]]
Tokens = Int[torch.Tensor, "batch seq"]
CHANNELS = ("q", "k", "v")


def logit_diff_metric(answers: Int[torch.Tensor, "batch 2"], position: int = -1) -> Metric:
    """Mean of logit(answers[:, 0]) - logit(answers[:, 1]) at ``position``: the IOI metric."""
    if not isinstance(answers, torch.Tensor) or answers.ndim != 2 or answers.shape[1] != 2:
        raise ValueError(f"answers must be [batch, 2] (correct, wrong) token ids, got "
                         f"{'shape ' + str(tuple(answers.shape)) if isinstance(answers, torch.Tensor) else repr(answers)}")
    if answers.dtype.is_floating_point or answers.dtype.is_complex or answers.dtype == torch.bool:
        raise ValueError(f"answers must be integer token ids, got dtype {answers.dtype}: use answers.long()")
    if answers.numel() and answers.min() < 0:
        raise ValueError(f"answers must be token ids >= 0, got {answers.min().item()}")

    def metric(logits: Float[torch.Tensor, "batch seq vocab"]) -> Float[torch.Tensor, ""]:
        if logits.ndim != 3 or logits.shape[0] != answers.shape[0]:
            raise ValueError(f"this metric holds answers for {answers.shape[0]} prompts but got logits of shape "
                             f"{tuple(logits.shape)}: build one metric per prompt batch")
        picked = logits[:, position].gather(-1, answers.to(logits.device))
        return (picked[:, 0] - picked[:, 1]).mean()

    metric.positions = (position,)  # what it reads: patching computes only these positions' logits
    metric.answers = answers  # what it reads them for: checked against the model's vocabulary before a run
    return metric


# ---------------------------------------------------------------- input checks, shared by every public function

def _check_tokens(model, tokens, name: str) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be a [batch, seq] tensor of token ids, got {shape}: "
                         "tokenize with model.to_tokens(prompts), or add a batch axis with tokens[None]")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {tokens.dtype}: use {name}.long()")
    d_vocab = model.cfg.d_vocab
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= d_vocab):
        bad = tokens[(tokens < 0) | (tokens >= d_vocab)][0].item()
        raise ValueError(f"{name} holds token id {bad}, outside this model's vocabulary [0, {d_vocab}): "
                         "were the prompts tokenized for another model?")


def _check_pair(clean_tokens: Tokens, corrupted_tokens: Tokens, model=None) -> None:
    if model is not None:
        _check_tokens(model, clean_tokens, "clean_tokens")
        _check_tokens(model, corrupted_tokens, "corrupted_tokens")
    if clean_tokens.shape != corrupted_tokens.shape or clean_tokens.ndim != 2:
        raise ValueError(f"clean and corrupted tokens must both be [batch, seq] of the same shape, got "
                         f"{tuple(clean_tokens.shape)} and {tuple(corrupted_tokens.shape)}: corrupt each clean prompt")


def _scalar_metric(metric: Metric) -> Metric:
    """``metric``, checked at every call to return one number (a 0-d tensor); its declared positions kept."""
    if not callable(metric):
        raise TypeError(f"metric must be a function from logits [batch, seq, vocab] to a 0-d tensor, got "
                        f"{type(metric).__name__}: for example patching.logit_diff_metric(answers)")
    if getattr(metric, "checked_scalar", False):
        return metric

    def checked(logits):
        value = metric(logits)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"the metric returned {type(value).__name__}, not a tensor: return a 0-d tensor (no "
                             ".item()), so patching can batch it and attribution patching can take its gradient")
        if value.numel() != 1:
            raise ValueError(f"the metric returned shape {tuple(value.shape)}, not one number: reduce over the batch "
                             "(e.g. .mean()) so that each patched run gives a single value")
        return value.reshape(())

    for attribute in ("positions", "answers"):
        if hasattr(metric, attribute):
            setattr(checked, attribute, getattr(metric, attribute))
    checked.checked_scalar = True
    return checked


def _check_inputs(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric) -> Metric:
    """What every public function checks before a run; returns the metric wrapped to insist on a scalar."""
    _check_pair(clean_tokens, corrupted_tokens, model)
    metric = _scalar_metric(metric)
    answers = getattr(metric, "answers", None)
    if isinstance(answers, torch.Tensor):
        if answers.shape[0] != clean_tokens.shape[0]:
            raise ValueError(f"the metric holds answers for {answers.shape[0]} prompts but there are "
                             f"{clean_tokens.shape[0]} clean prompts: build the metric from these prompts' answers")
        if answers.numel() and answers.max() >= model.cfg.d_vocab:
            raise ValueError(f"the metric's answers hold token id {answers.max().item()}, outside this model's "
                             f"vocabulary [0, {model.cfg.d_vocab}): were they tokenized for another model?")
    return metric


def _check_graph(model, graph: "ComputationalGraph | None") -> "ComputationalGraph":
    own = ComputationalGraph.from_model(model)
    if graph is None:
        return own
    if not isinstance(graph, ComputationalGraph):
        raise TypeError(f"graph must be a ComputationalGraph, got {type(graph).__name__}: "
                        "use ComputationalGraph.from_model(model)")
    if graph.edge_names != own.edge_names:
        raise ValueError(f"this graph ({graph.n_layers} layers x {graph.n_heads} heads, {len(graph.edges)} edges) "
                         f"is not this model's ({own.n_layers} x {own.n_heads}, {len(own.edges)} edges): "
                         "build it with ComputationalGraph.from_model(model)")
    return graph


def _check_edge_values(values: torch.Tensor, graph: "ComputationalGraph", name: str) -> None:
    if not isinstance(values, torch.Tensor) or values.shape[-1:] != (len(graph.edges),):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{name} must have one entry per edge of the graph ({len(graph.edges)}) on its last axis, "
                         f"got {shape}: score edges in graph.edge_names order")


def restored_fraction(values, clean_value, corrupted_value):
    """Rescale patched metric values: 0 = as bad as the corrupted run, 1 = fully restored to the clean run."""
    return (values - corrupted_value) / (clean_value - corrupted_value)


# ---------------------------------------------------------------- activation patching (nodes)

def _progress(chunks, desc: str):
    """A progress bar when there are enough batched passes for the wait to be noticeable."""
    return tqdm(chunks, desc=desc, leave=False, disable=len(chunks) < 3, mininterval=0.5)


def declared_positions(metric: Metric, seq: int) -> list[int] | None:
    """The sequence positions whose logits ``metric`` reads (its ``positions`` attribute), or None if unknown."""
    positions = getattr(metric, "positions", None)
    return None if positions is None else _in_range(positions, seq)


def _in_range(positions: Sequence[int], seq: int) -> list[int]:
    """Positions as sorted indices in ``[0, seq)``; negative ones count from the end, as in Python."""
    bad = [p for p in positions if not -seq <= int(p) < seq]
    if bad:
        raise ValueError(f"metric positions {bad} are outside a sequence of {seq} tokens")
    return sorted({int(p) % seq for p in positions})


ONE_PASS_MAX_TOKENS = 1024
"""Below this many tokens in one pass, a pass is overhead-bound: the finishing step's extra call costs more
than the positions it skips (ioi-2l on one CPU thread: equal at about 1200; ``benchmarks/patching.py``)."""


class _StopForward(Exception):
    """Raised from a hook once a run has captured everything the metric can see."""


_SHORTCUT_WORKS: dict[str, bool] = {}  # by architecture: the shortcut depends on the block's wiring, not its weights


def _finish_last_block(model, resid_pre: Float[torch.Tensor, "n read d_model"],
                       z: Float[torch.Tensor, "n read head d_head"]) -> Float[torch.Tensor, "n read vocab"]:
    """Logits at a few positions, from the last block's input and its attention ``z`` there.

    After ``z`` every operation (``W_O``, MLP, final norm, unembedding) is position-wise, so the
    last block can run on these positions alone; the attention it computes there is overwritten.
    """
    last = model.cfg.n_layers - 1
    return model.run_with_hooks(resid_pre, start_at_layer=last,
                                fwd_hooks=[(f"blocks.{last}.attn.hook_z", lambda act, hook: z)])


def _run_and_capture_last_block(model, tokens: Tokens, hooks: list, positions: Sequence[int]
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``tokens`` with ``hooks`` up to the last block's ``z``; return its input and ``z`` at ``positions``."""
    last, captured = model.cfg.n_layers - 1, {}

    def grab_resid(act, hook):
        captured["resid_pre"] = act[:, positions]

    def grab_z_and_stop(act, hook):
        captured["z"] = act[:, positions]
        raise _StopForward

    try:
        model.run_with_hooks(tokens, fwd_hooks=hooks + [(f"blocks.{last}.hook_resid_pre", grab_resid),
                                                        (f"blocks.{last}.attn.hook_z", grab_z_and_stop)])
    except _StopForward:
        pass
    return captured["resid_pre"], captured["z"]


def _architecture(model) -> str:
    return str(getattr(model.cfg, "architecture", None) or type(model).__name__)


def _shortcut_works(model) -> bool:
    """Once per architecture: does finishing the last block at one position reproduce the full forward pass?"""
    architecture = _architecture(model)
    if architecture not in _SHORTCUT_WORKS:
        seq = min(8, model.cfg.n_ctx)
        tokens = torch.randint(0, model.cfg.d_vocab, (2, seq), generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(model_device(model))
        with torch.no_grad():
            full = model(tokens)[:, [seq - 1]]
            short = _finish_last_block(model, *_run_and_capture_last_block(model, tokens, [], [seq - 1]))
        _SHORTCUT_WORKS[architecture] = bool(torch.allclose(full, short, atol=1e-4, rtol=1e-3))
        if not _SHORTCUT_WORKS[architecture]:
            warnings.warn(f"{architecture}: finishing the last block at the metric positions does not reproduce "
                          "the model's logits; patching runs every position instead (slower, same values)")
    return _SHORTCUT_WORKS[architecture]


def _finishing_positions(model, metric: Metric, metric_positions: Sequence[int] | None, seq: int,
                         tokens_in_pass: int) -> list[int] | None:
    """The positions a pass may stop and finish at, or None for one pass over every position."""
    positions = _in_range(metric_positions, seq) if metric_positions is not None else declared_positions(metric, seq)
    if positions is None or tokens_in_pass <= ONE_PASS_MAX_TOKENS or not _shortcut_works(model):
        return None  # unknown positions, or small enough that the finishing call costs more than it saves
    return positions


def _metric_at(metric: Metric, logits_at: Float[torch.Tensor, "batch read vocab"], positions: list[int], seq: int
               ) -> Float[torch.Tensor, ""]:
    """The metric of logits known only at ``positions``: the rest are NaN, so a metric reading them fails loudly."""
    full = logits_at.new_full((logits_at.shape[0], seq, logits_at.shape[-1]), float("nan"))
    full[:, positions] = logits_at
    value = metric(full)
    if value.isnan():
        raise ValueError(f"the metric is NaN: it reads logits outside the positions it declares ({positions}), "
                         "or the model produced NaN; set the metric's `positions` to every position it reads, "
                         "or pass metric_positions")
    return value


@torch.no_grad()
def patch_and_measure(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric, site: str,
                      patches: Sequence[tuple[int, tuple]], max_batch: int = 4096,
                      metric_positions: Sequence[int] | None = None) -> tuple[Float[torch.Tensor, " patch"], float]:
    """Metric of the corrupted run with each patch alone restored to its clean value, and the corrupted metric.

    ``site`` is ``"resid_pre"`` (``blocks.L.hook_resid_pre``, index ``(pos,)``) or ``"z"``
    (``blocks.L.attn.hook_z``, index ``(pos, head)``, ``pos`` a slice for every position);
    a patch is ``(L, index)``. What makes it fast, all exact:

    - *one pass*: the clean prompts, the corrupted prompts and one corrupted copy per patch run as a
      single batch; each copy takes its clean value from the clean rows of the same pass, so no
      separate clean run is needed;
    - *only what the metric reads*: when the metric declares its positions (``logit_diff_metric``
      does) and the pass is larger than ``ONE_PASS_MAX_TOKENS``, the pass stops at the last block's
      ``z`` and a second, small call finishes those positions alone (everything after ``z`` is
      position-wise);
    - *last-block heads need no pass*: their ``z`` is the corrupted one with one head's clean value
      written in, so they only take the finishing step; at a position the metric does not read they
      cannot change it, and their value is the corrupted metric.
    """
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    if site not in ("resid_pre", "z"):
        raise ValueError(f"site must be 'resid_pre' or 'z', got {site!r}")
    batch, seq = clean_tokens.shape
    last = model.cfg.n_layers - 1
    hook_name = {"resid_pre": "blocks.{}.hook_resid_pre", "z": "blocks.{}.attn.hook_z"}[site].format
    positions = _finishing_positions(model, metric, metric_positions, seq, (2 + len(patches)) * batch * seq)
    finish_only = [positions is not None and site == "z" and layer == last for layer, _ in patches]
    in_pass = [i for i, only in enumerate(finish_only) if not only]

    per_chunk = max(1, max_batch // batch - 2)  # a pass holds clean + corrupted + at least one copy
    pass_outputs = []  # per chunk: logits, or (resid_pre, z) of the last block at the metric positions
    chunks = [in_pass[i:i + per_chunk] for i in range(0, len(in_pass), per_chunk)] or [[]]
    for chunk in _progress(chunks, "patching"):
        rows = 2 + len(chunk)  # clean, corrupted, then one corrupted copy per patch
        by_layer: dict[int, list[tuple[int, tuple]]] = {}
        for row, i in enumerate(chunk, start=2):
            layer, index = patches[i]
            by_layer.setdefault(layer, []).append((row, index))

        def make_hook(entries):
            def hook(act, hook):
                act = act.clone()
                view = act.view(rows, batch, *act.shape[1:])
                for row, index in entries:
                    view[(row, slice(None)) + index] = view[(0, slice(None)) + index]
                return act
            return hook

        hooks = [(hook_name(layer), make_hook(entries)) for layer, entries in by_layer.items()]
        tokens = torch.cat([clean_tokens, corrupted_tokens.repeat(rows - 1, 1)])
        if positions is None:
            pass_outputs.append(model.run_with_hooks(tokens, fwd_hooks=hooks))
        else:
            pass_outputs.append(_run_and_capture_last_block(model, tokens, hooks, positions))

    if positions is None:
        logits = [out.view(-1, batch, *out.shape[1:]) for out in pass_outputs]
        corrupted_value = metric(logits[0][1])
        values = [metric(out[row]) for out, chunk in zip(logits, chunks) for row in range(2, 2 + len(chunk))]
        return _ordered(values, in_pass, [], None, len(patches)), corrupted_value.item()

    # finishing step: the corrupted row, every in-pass copy, and the last-block heads built from the first chunk
    resid = [r.view(-1, batch, *r.shape[1:]) for r, _ in pass_outputs]
    z = [zz.view(-1, batch, *zz.shape[1:]) for _, zz in pass_outputs]
    finish_resid, finish_z = [resid[0][1]], [z[0][1]]
    for r, zz, chunk in zip(resid, z, chunks):
        finish_resid += list(r[2:2 + len(chunk)])
        finish_z += list(zz[2:2 + len(chunk)])
    finished_heads, constant = [], []
    for i, only in enumerate(finish_only):
        if not only:
            continue
        _, (pos, head) = patches[i]
        if isinstance(pos, int) and pos % seq not in positions:
            constant.append(i)  # a last-block head where the metric does not read: no effect
            continue
        read = slice(None) if isinstance(pos, slice) else positions.index(pos % seq)
        copy_z = z[0][1].clone()
        copy_z[:, read, head] = z[0][0][:, read, head]
        finish_resid.append(resid[0][1])
        finish_z.append(copy_z)
        finished_heads.append(i)
    logits = _finish_in_chunks(model, torch.cat(finish_resid), torch.cat(finish_z), max_batch)
    per_copy = logits.view(-1, batch, *logits.shape[1:])
    corrupted_value = _metric_at(metric, per_copy[0], positions, seq)
    values = [_metric_at(metric, per_copy[row], positions, seq) for row in range(1, per_copy.shape[0])]
    return _ordered(values, in_pass + finished_heads, constant, corrupted_value, len(patches)), corrupted_value.item()


def _finish_in_chunks(model, resid_pre: torch.Tensor, z: torch.Tensor, max_batch: int) -> torch.Tensor:
    rows = max(1, max_batch)
    return torch.cat([_finish_last_block(model, resid_pre[i:i + rows], z[i:i + rows])
                      for i in range(0, resid_pre.shape[0], rows)])


def _ordered(values: list[torch.Tensor], order: list[int], constant: list[int], constant_value, n: int
             ) -> Float[torch.Tensor, " patch"]:
    out = torch.empty(n)
    for i, value in zip(order, values):
        out[i] = float(value)  # maps live on the CPU, ready to plot, whatever device the model is on
    for i in constant:
        out[i] = float(constant_value)
    return out


def _clean_acts(model, tokens: Tokens, names: Sequence[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in set(names))
    return {name: cache[name] for name in names}


def activation_patch_resid(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                           max_batch: int = 4096, metric_positions: Sequence[int] | None = None
                           ) -> Float[torch.Tensor, "layer pos"]:
    """Restore the clean residual stream (``hook_resid_pre``) at one layer and position at a time."""
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    n_layers, seq = model.cfg.n_layers, clean_tokens.shape[1]
    patches = [(layer, (pos,)) for layer in range(n_layers) for pos in range(seq)]
    values, _ = patch_and_measure(model, clean_tokens, corrupted_tokens, metric, "resid_pre", patches, max_batch,
                                  metric_positions)
    return values.view(n_layers, seq)


def activation_patch_heads(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                           per_position: bool = False, max_batch: int = 4096,
                           metric_positions: Sequence[int] | None = None) -> Float[torch.Tensor, "layer head *pos"]:
    """Restore one head's clean output (``attn.hook_z``), at every position or one position at a time.

    All heads in one batched pass that computes only what the metric reads (see ``patch_and_measure``).
    """
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    n_layers, n_heads, seq = model.cfg.n_layers, model.cfg.n_heads, clean_tokens.shape[1]
    positions = list(range(seq)) if per_position else [slice(None)]
    patches = [(layer, (pos, head)) for layer in range(n_layers) for head in range(n_heads) for pos in positions]
    values, _ = patch_and_measure(model, clean_tokens, corrupted_tokens, metric, "z", patches, max_batch,
                                  metric_positions)
    return values.view(n_layers, n_heads, seq) if per_position else values.view(n_layers, n_heads)


@torch.no_grad()
def activation_patch_heads_loop(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric
                                ) -> Float[torch.Tensor, "layer head"]:
    """The textbook version: one forward pass per head. Slow; kept as the reference the batched one must match."""
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    _, cache = model.run_with_cache(clean_tokens)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def restore(z, hook, head=head, layer=layer):
                z = z.clone()
                z[:, :, head] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
                return z

            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", restore)])
            out[layer, head] = metric(logits).item()
    return out


# ---------------------------------------------------------------- attribution patching (nodes)

def _grads_at(model, tokens: Tokens, metric: Metric, names: Sequence[str]
              ) -> tuple[Float[torch.Tensor, ""], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Metric, activations and d metric / d activation at ``names``, from one forward and one backward pass."""
    probes: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def make_hook(name):
        def hook(act, hook):
            probe = torch.zeros_like(act, requires_grad=True)
            probes[name], acts[name] = probe, act.detach()
            return act + probe
        return hook

    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=[(name, make_hook(name)) for name in names]))
        grads = torch.autograd.grad(value, [probes[name] for name in names])
    return value.detach(), acts, dict(zip(names, grads))


def attribution_patch_heads(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                            per_position: bool = False) -> Float[torch.Tensor, "layer head *pos"]:
    """First-order estimate of ``activation_patch_heads`` from one forward + backward pass."""
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    clean = _clean_acts(model, clean_tokens, names)
    base, corrupt, grads = _grads_at(model, corrupted_tokens, metric, names)
    per = torch.stack([((clean[n] - corrupt[n]) * grads[n]).sum(dim=(0, -1)) for n in names])  # layer pos head
    per = per.transpose(1, 2)
    return (base + (per if per_position else per.sum(-1))).cpu()


def attribution_patch_resid(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric
                            ) -> Float[torch.Tensor, "layer pos"]:
    """First-order estimate of ``activation_patch_resid``."""
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    clean = _clean_acts(model, clean_tokens, names)
    base, corrupt, grads = _grads_at(model, corrupted_tokens, metric, names)
    return (base + torch.stack([((clean[n] - corrupt[n]) * grads[n]).sum(dim=(0, -1)) for n in names])).cpu()


# ---------------------------------------------------------------- the computational graph

def edge_nodes(edge_name: str) -> tuple[str, str]:
    """``"a0.1->a1.2.q"`` -> ``("a0.1", "a1.2")``: the sender and receiving node of an edge."""
    sender, receiver = edge_name.split("->")
    if receiver.endswith((".q", ".k", ".v")):
        receiver = receiver[:-2]
    return sender, receiver


class UnknownEdge(KeyError, ValueError):
    """An edge name the graph does not have; the message suggests the closest ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class ComputationalGraph:
    """Nodes and edges of a transformer seen as a DAG of residual-stream reads and writes.

    Senders write to the residual stream: ``embed`` (token + position embeddings),
    every head ``a{l}.{h}``, every MLP ``m{l}``. Receivers read from it: each head's
    query, key and value input (``a{l}.{h}.q`` ...), each MLP ``m{l}``, and ``logits``.
    An edge joins a sender to every receiver that comes after it.

    Two real-model variants: with grouped-query attention (``n_kv_heads`` < ``n_heads``, as in
    Gemma) a key or value input is shared by a group of heads and is one receiver,
    ``a{l}.kv{g}.k``; with parallel attention and MLP (``parallel_mlp``, as in Pythia) the MLP
    reads the block's input, so it does not receive from its own layer's heads.
    """

    n_layers: int
    n_heads: int
    has_mlp: bool
    n_kv_heads: int | None = None
    parallel_mlp: bool = False
    senders: list[str] = field(init=False)
    receivers: list[str] = field(init=False)
    edges: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={kv}")
        self.senders, self.receivers = ["embed"], []
        available = [1]  # how many senders each receiver may read, receiver by receiver
        for layer in range(self.n_layers):
            before_layer = len(self.senders)
            for name, _, _ in self.attention_receivers(layer):
                self.receivers.append(name)
                available.append(before_layer)
            self.senders += [f"a{layer}.{head}" for head in range(self.n_heads)]
            if self.has_mlp:
                self.receivers.append(f"m{layer}")
                available.append(before_layer if self.parallel_mlp else len(self.senders))
                self.senders.append(f"m{layer}")
        self.receivers.append("logits")
        available.append(len(self.senders))
        self.edges = [(s, r) for r, n in enumerate(available[1:]) for s in range(n)]

    @property
    def grouped(self) -> bool:
        return (self.n_kv_heads or self.n_heads) != self.n_heads

    def attention_receivers(self, layer: int) -> list[tuple[str, str, int]]:
        """``(name, channel, index)`` of the layer's attention inputs; ``index`` is the head, or the key/value
        group under grouped-query attention."""
        if not self.grouped:
            return [(f"a{layer}.{head}.{c}", c, head) for head in range(self.n_heads) for c in CHANNELS]
        return ([(f"a{layer}.{head}.q", "q", head) for head in range(self.n_heads)]
                + [(f"a{layer}.kv{group}.{c}", c, group) for group in range(self.n_kv_heads) for c in ("k", "v")])

    @property
    def receivers_per_layer(self) -> int:
        """Attention inputs plus the MLP: also how many copies of each prompt an edge run holds besides the real one."""
        return len(self.attention_receivers(0)) + int(self.has_mlp)

    def receiver_name(self, layer: int, head: int, channel: str) -> str:
        """The receiver through which head ``layer.head`` reads its ``channel`` input."""
        if self.grouped and channel != "q":
            return f"a{layer}.kv{head // (self.n_heads // self.n_kv_heads)}.{channel}"
        return f"a{layer}.{head}.{channel}"

    @classmethod
    def from_model(cls, model) -> "ComputationalGraph":
        cfg = model.cfg
        kv = getattr(cfg, "n_key_value_heads", None)
        return cls(cfg.n_layers, cfg.n_heads, not cfg.attn_only, n_kv_heads=kv if kv and kv != cfg.n_heads else None,
                   parallel_mlp=bool(getattr(cfg, "parallel_attn_mlp", False)))

    @property
    def edge_names(self) -> list[str]:
        return [f"{self.senders[s]}->{self.receivers[r]}" for s, r in self.edges]

    def edge_index(self, name: str) -> int:
        """Position of edge ``name`` in ``edge_names``; an unknown name raises ``UnknownEdge`` with a suggestion."""
        names = self.edge_names
        if name not in names:
            raise UnknownEdge(self._unknown_edge_message(name, names))
        return names.index(name)

    def _unknown_edge_message(self, name, names: list[str]) -> str:
        import difflib

        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"edges look like {names[-1]!r}"
        why = ""
        if isinstance(name, str) and "->" in name:
            sender, receiver = name.split("->", 1)
            if sender not in self.senders:
                why = f" (no sender {sender!r}: senders are embed, a{{layer}}.{{head}}, m{{layer}})"
            elif receiver not in self.receivers:
                why = f" (no receiver {receiver!r}: receivers look like a1.0.q, m1, logits)"
            else:
                why = f" ({receiver!r} does not come after {sender!r}: edges go from earlier to later components)"
        return f"no edge {name!r} in this graph{why}; {hint}"

    def edge_mask(self, names: Sequence[str]) -> Bool[torch.Tensor, " edge"]:
        """A boolean mask over edges, true for the named ones."""
        if isinstance(names, str):
            raise TypeError(f"edge_mask takes a list of edge names, got the string {names!r}: wrap it in a list")
        mask = torch.zeros(len(self.edges), dtype=torch.bool)
        edge_names = self.edge_names
        index = {name: i for i, name in enumerate(edge_names)}
        for name in names:
            if name not in index:
                raise UnknownEdge(self._unknown_edge_message(name, edge_names))
            mask[index[name]] = True
        return mask

    def top_edges(self, scores: Float[torch.Tensor, " edge"], k: int) -> Bool[torch.Tensor, " edge"]:
        """Mask of the ``k`` edges with the largest |score|."""
        mask = torch.zeros(len(self.edges), dtype=torch.bool)
        mask[scores.abs().topk(min(k, len(self.edges))).indices.cpu()] = True
        return mask

    def dense(self, edge_values: Float[torch.Tensor, "*runs edge"]) -> Float[torch.Tensor, "*runs receiver sender"]:
        """Per-edge values laid out as a [receiver, sender] matrix (zero where no edge exists)."""
        out = edge_values.new_zeros(*edge_values.shape[:-1], len(self.receivers), len(self.senders))
        s_idx = torch.tensor([s for s, _ in self.edges])
        r_idx = torch.tensor([r for _, r in self.edges])
        out[..., r_idx, s_idx] = edge_values
        return out


def _sender_outputs(model, tokens: Tokens, graph: ComputationalGraph) -> Float[torch.Tensor, "sender batch pos d_model"]:
    """What every sender writes to the residual stream on ``tokens``."""
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(graph.n_layers)]
    names += [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers)] if graph.has_mlp else []
    acts = _clean_acts(model, tokens, names)
    outs = [acts["blocks.0.hook_resid_pre"]]
    for layer in range(graph.n_layers):
        z = acts[f"blocks.{layer}.attn.hook_z"]
        outs += list(torch.einsum("bphd,hdm->hbpm", z, model.W_O[layer].to(z.dtype)))
        if graph.has_mlp:
            outs.append(acts[f"blocks.{layer}.hook_mlp_out"])
    return torch.stack(outs)


def _run_with_edges(model, clean_tokens: Tokens, corrupt_out: Float[torch.Tensor, "sender batch pos d_model"],
                    graph: ComputationalGraph, corrupted_edges: Float[torch.Tensor, "run edge"], metric: Metric,
                    probes: dict[str, torch.Tensor] | None = None) -> Float[torch.Tensor, " run"]:
    """Metric of the clean run with, in run ``r``, the edges where ``corrupted_edges[r]`` is 1 corrupted.

    How it stays model-agnostic: each layer has one residual stream but up to ``3 * n_heads + 1``
    receivers that must each see a *different* mix of clean and corrupted senders. The batch
    holds one copy of every prompt per receiver channel (copy 0 is the real run); at each
    layer's ``hook_resid_pre`` copy ``1 + 3h + c`` gets the real stream minus the corrupted
    edges' (current - corrupted) sender outputs, and the real run's ``hook_q/k/v`` of head ``h``
    is taken from that copy. MLPs do the same through ``hook_resid_mid`` / ``hook_mlp_out``.
    ``probes`` (zeros with ``requires_grad``) are added to each receiver's input so their
    gradients are the receivers' input gradients: edge attribution patching.

    Without probes, a large run stops at the last block's ``z`` and finishes only the positions
    the metric reads, as ``patch_and_measure`` does.
    """
    n_runs, batch = corrupted_edges.shape[0], clean_tokens.shape[0]
    n_layers = graph.n_layers
    attention = graph.attention_receivers(0)  # the same layout in every layer
    n_attn = len(attention)
    copy_of = {(channel, index): 1 + j for j, (_, channel, index) in enumerate(attention)}
    n_copies = 1 + graph.receivers_per_layer
    mlp_copy = n_attn + 1
    weights = graph.dense(corrupted_edges.to(corrupt_out))  # run receiver sender, on the model's device
    current: list[torch.Tensor] = []  # sender outputs of the real run, [run, batch, pos, d_model] each
    corrupted = {"out": corrupt_out}  # the corrupted senders, cut to the finishing positions for the last step
    receivers_per_layer = graph.receivers_per_layer

    def delta(receiver_slice: slice) -> torch.Tensor:
        """Sum over corrupted edges of (current - corrupted) sender output, for a slice of receivers."""
        if not current:
            return torch.zeros(())
        n = len(current)
        diff = torch.stack(current, dim=1) - corrupted["out"][:n]  # run sender batch pos d
        return torch.einsum("rjs,rsbpd->rjbpd", weights[:, receiver_slice, :n], diff)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(n_runs, n_copies, batch, *x.shape[1:])

    def resid_pre(layer):
        def hook(x, hook):
            x = split(x)
            main = x[:, 0]
            if layer == 0:
                current.append(main)
            first = layer * receivers_per_layer
            heads_in = main[:, None] - delta(slice(first, first + n_attn))
            if probes is not None:
                heads_in = heads_in + probes[f"heads{layer}"]
            parts = [main[:, None], heads_in.expand(n_runs, n_attn, *main.shape[1:])]
            if graph.has_mlp and graph.parallel_mlp:  # the MLP reads the block's input too
                mlp_in = main - delta(slice(first + n_attn, first + n_attn + 1))[:, 0]
                if probes is not None:
                    mlp_in = mlp_in + probes[f"mlp{layer}"]
                parts.append(mlp_in[:, None])
            elif graph.has_mlp:
                parts.append(x[:, mlp_copy:])
            return torch.cat(parts, dim=1).flatten(0, 2)
        return hook

    def qkv(channel):
        indices = [index for c, index in copy_of if c == channel]

        def hook(a, hook):
            a = split(a)
            if a.shape[-2] != len(indices):
                raise ValueError(f"{hook.name} has {a.shape[-2]} heads but the graph expects {len(indices)}: build "
                                 "the graph with ComputationalGraph.from_model(model)")
            main = torch.stack([a[:, copy_of[(channel, i)], :, :, i] for i in indices], dim=-2)
            return torch.cat([main[:, None], a[:, 1:]], dim=1).flatten(0, 2)
        return hook

    def z_hook(layer):
        def hook(z, hook):
            main = split(z)[:, 0]
            current.extend(torch.einsum("rbphd,hdm->hrbpm", main, model.W_O[layer].to(main.dtype)).unbind(0))
            return z
        return hook

    def resid_mid(layer):
        def hook(x, hook):
            x = split(x)
            main = x[:, 0]
            index = layer * receivers_per_layer + n_attn
            mlp_in = main - delta(slice(index, index + 1))[:, 0]
            if probes is not None:
                mlp_in = mlp_in + probes[f"mlp{layer}"]
            return torch.cat([x[:, :mlp_copy], mlp_in[:, None]], dim=1).flatten(0, 2)
        return hook

    def mlp_out(layer):
        def hook(m, hook):
            m = split(m)
            out = m[:, mlp_copy]
            current.append(out)
            return torch.cat([out[:, None], m[:, 1:]], dim=1).flatten(0, 2)
        return hook

    def final(x, hook):
        x = split(x)
        main = x[:, 0] - delta(slice(len(graph.receivers) - 1, len(graph.receivers)))[:, 0]
        if probes is not None:
            main = main + probes["logits"]
        return torch.cat([main[:, None], x[:, 1:]], dim=1).flatten(0, 2)

    hooks, after_z = [], []  # after_z: the hooks of the last block that come after its attention
    for layer in range(n_layers):
        hooks.append((f"blocks.{layer}.hook_resid_pre", resid_pre(layer)))
        hooks += [(f"blocks.{layer}.attn.hook_{c}", qkv(c)) for c in CHANNELS]
        hooks.append((f"blocks.{layer}.attn.hook_z", z_hook(layer)))
        later = hooks if layer < n_layers - 1 else after_z
        if graph.has_mlp and not graph.parallel_mlp:
            later.append((f"blocks.{layer}.hook_resid_mid", resid_mid(layer)))
        if graph.has_mlp:
            later.append((f"blocks.{layer}.hook_mlp_out", mlp_out(layer)))
    after_z.append((f"blocks.{n_layers - 1}.hook_resid_post", final))
    tokens = clean_tokens.repeat(n_runs * n_copies, 1)
    seq = tokens.shape[1]
    positions = None if probes is not None else _finishing_positions(model, metric, None, seq, tokens.numel())
    if positions is None:
        logits = split(model.run_with_hooks(tokens, fwd_hooks=hooks + after_z))[:, 0]
        return torch.stack([metric(logits[r]) for r in range(n_runs)])
    # the last block's attention needs every position; from its z on, only the metric's positions matter
    resid_at, z_at = _run_and_capture_last_block(model, tokens, hooks, positions)
    current[:] = [out[:, :, positions] for out in current]
    corrupted["out"] = corrupt_out[:, :, positions]
    logits = split(model.run_with_hooks(resid_at, start_at_layer=n_layers - 1, fwd_hooks=[
        (f"blocks.{n_layers - 1}.attn.hook_z", lambda z, hook: z_at)] + after_z))[:, 0]
    return torch.stack([_metric_at(metric, logits[r], positions, seq) for r in range(n_runs)])


@torch.no_grad()
def run_with_corrupted_edges(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                             graph: ComputationalGraph, corrupted_edges: Float[torch.Tensor, "run edge"],
                             max_batch: int = 4096) -> Float[torch.Tensor, " run"]:
    """Metric of the clean run with a set of edges corrupted, one set per run, batched."""
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    graph = _check_graph(model, graph)
    _check_edge_values(corrupted_edges, graph, "corrupted_edges")
    if corrupted_edges.ndim != 2:
        raise ValueError(f"corrupted_edges must be [run, edge], got shape {tuple(corrupted_edges.shape)}: "
                         "add a run axis with mask[None]")
    corrupt_out = _sender_outputs(model, corrupted_tokens, graph)
    chunk = max(1, max_batch // (clean_tokens.shape[0] * (1 + graph.receivers_per_layer)))
    masks = corrupted_edges.float()
    return torch.cat([_run_with_edges(model, clean_tokens, corrupt_out, graph, masks[i:i + chunk], metric)
                      for i in _progress(range(0, masks.shape[0], chunk), "edge runs")]).cpu()


def edge_patching_scores(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                         graph: ComputationalGraph | None = None, edges: Sequence[str] | None = None,
                         max_batch: int = 4096) -> Float[torch.Tensor, " edge"]:
    """Exact effect of corrupting each edge alone: metric(edge corrupted) - metric(clean).

    This is path patching restricted to direct paths, for every sender -> receiver pair
    (or just ``edges``): the ground truth edge attribution patching approximates.
    """
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    graph = _check_graph(model, graph)
    if isinstance(edges, str):
        raise TypeError(f"edges must be a list of edge names, got the string {edges!r}: wrap it in a list")
    index = [graph.edge_index(e) for e in edges] if edges is not None else list(range(len(graph.edges)))
    masks = torch.zeros(len(index) + 1, len(graph.edges))  # row 0: nothing corrupted, the baseline
    masks[torch.arange(1, len(index) + 1), torch.tensor(index, dtype=torch.long)] = 1.0
    values = run_with_corrupted_edges(model, clean_tokens, corrupted_tokens, metric, graph, masks, max_batch)
    return values[1:] - values[0]


def path_patch_heads(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                     receivers: Sequence[tuple[int, int]], channels: Sequence[str] = CHANNELS,
                     max_batch: int = 4096) -> Float[torch.Tensor, "receiver channel sender_layer sender_head"]:
    """Path patching sender head -> receiver head via its query / key / value input.

    Entry ``[r, c, l, h]``: metric change when only the path from head ``l.h`` into
    input ``c`` of receiver ``receivers[r]`` sees the corrupted output; senders in or after
    the receiver's layer are NaN (no such path). Under grouped-query attention a key or value
    input is shared by a group of heads, so its path reaches every head of the group.
    """
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    graph = ComputationalGraph.from_model(model)
    for receiver in receivers:
        if (not isinstance(receiver, (tuple, list)) or len(receiver) != 2
                or not 0 <= int(receiver[0]) < graph.n_layers or not 0 <= int(receiver[1]) < graph.n_heads):
            raise ValueError(f"receivers must be (layer, head) pairs with layer < {graph.n_layers} and head < "
                             f"{graph.n_heads}, got {receiver!r}")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or isinstance(channels, str):
        raise ValueError(f"channels must be a sequence of 'q', 'k', 'v', got {channels!r}")
    out = torch.full((len(receivers), len(channels), graph.n_layers, graph.n_heads), float("nan"))
    names, where = [], []
    for r, (r_layer, r_head) in enumerate(receivers):
        for c, channel in enumerate(channels):
            for layer in range(r_layer):
                for head in range(graph.n_heads):
                    names.append(f"a{layer}.{head}->{graph.receiver_name(r_layer, r_head, channel)}")
                    where.append((r, c, layer, head))
    if names:
        scores = edge_patching_scores(model, clean_tokens, corrupted_tokens, metric, graph, names, max_batch)
        for (r, c, layer, head), score in zip(where, scores.tolist()):
            out[r, c, layer, head] = score
    return out


def edge_attribution_scores(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                            graph: ComputationalGraph | None = None) -> Float[torch.Tensor, " edge"]:
    """Edge attribution patching (Syed et al. 2023): every edge's score from one forward + backward pass.

    score(u -> v) = sum over prompts and positions of (corrupted - clean output of u) . d metric / d input of v,
    the first-order estimate of ``edge_patching_scores``.
    """
    metric = _check_inputs(model, clean_tokens, corrupted_tokens, metric)
    graph = _check_graph(model, graph)
    corrupt_out = _sender_outputs(model, corrupted_tokens, graph)
    clean_out = _sender_outputs(model, clean_tokens, graph)
    batch, seq, d_model = clean_tokens.shape[0], clean_tokens.shape[1], corrupt_out.shape[-1]
    n_attn = len(graph.attention_receivers(0))
    like = {"device": corrupt_out.device, "dtype": corrupt_out.dtype, "requires_grad": True}
    probes = {f"heads{l}": torch.zeros(1, n_attn, batch, seq, d_model, **like) for l in range(graph.n_layers)}
    if graph.has_mlp:
        probes.update({f"mlp{l}": torch.zeros(1, batch, seq, d_model, **like) for l in range(graph.n_layers)})
    probes["logits"] = torch.zeros(1, batch, seq, d_model, **like)
    with torch.enable_grad():
        value = _run_with_edges(model, clean_tokens, corrupt_out, graph, torch.zeros(1, len(graph.edges)), metric,
                                probes)[0]
        names = list(probes)
        grads = dict(zip(names, torch.autograd.grad(value, [probes[n] for n in names])))
    receiver_grads = []  # receiver batch pos d_model, in graph.receivers order
    for layer in range(graph.n_layers):
        receiver_grads += list(grads[f"heads{layer}"][0])
        if graph.has_mlp:
            receiver_grads.append(grads[f"mlp{layer}"][0])
    receiver_grads.append(grads["logits"][0])
    g = torch.stack(receiver_grads)
    diff = corrupt_out - clean_out
    s_idx = torch.tensor([s for s, _ in graph.edges])
    r_idx = torch.tensor([r for _, r in graph.edges])
    pair = torch.einsum("rbpd,sbpd->rs", g, diff)
    return pair[r_idx, s_idx].detach().cpu()


def circuit_faithfulness(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                         graph: ComputationalGraph, circuit: Bool[torch.Tensor, " edge"]) -> float:
    """metric(only the circuit's edges clean, every other edge corrupted) / metric(full clean model)."""
    graph = _check_graph(model, graph)
    _check_edge_values(circuit, graph, "circuit")
    if circuit.dtype != torch.bool:
        raise ValueError(f"circuit must be a boolean mask over edges, got dtype {circuit.dtype}: "
                         "use graph.edge_mask(names) or graph.top_edges(scores, k)")
    masks = torch.stack([torch.zeros(len(graph.edges)), (~circuit).float()])
    clean_value, circuit_value = run_with_corrupted_edges(model, clean_tokens, corrupted_tokens, metric, graph, masks)
    return (circuit_value / clean_value).item()


def faithfulness_curve(model, clean_tokens: Tokens, corrupted_tokens: Tokens, metric: Metric,
                       graph: ComputationalGraph, scores: Float[torch.Tensor, " edge"], ks: Sequence[int]
                       ) -> Float[torch.Tensor, " k"]:
    """Faithfulness of the top-k edges by |score|, for each k, all in batched runs."""
    graph = _check_graph(model, graph)
    _check_edge_values(scores, graph, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be one score per edge, [edge], got shape {tuple(scores.shape)}")
    bad = [k for k in ks if isinstance(k, bool) or not float(k).is_integer() or k < 0]
    if bad:
        raise ValueError(f"ks must be non-negative whole numbers of edges, got {bad}")
    ks = [int(k) for k in ks]
    masks = torch.stack([torch.zeros(len(graph.edges))] + [(~graph.top_edges(scores, k)).float() for k in ks])
    values = run_with_corrupted_edges(model, clean_tokens, corrupted_tokens, metric, graph, masks)
    return values[1:] / values[0]


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two maps of the same shape (NaNs dropped)."""
    x, y = x.detach().flatten().float().cpu(), y.detach().flatten().float().cpu()
    keep = ~(x.isnan() | y.isnan())
    return torch.corrcoef(torch.stack([x[keep], y[keep]]))[0, 1].item()


__all__ = ["CHANNELS", "ComputationalGraph", "Metric", "activation_patch_heads",
           "activation_patch_heads_loop", "activation_patch_resid", "attribution_patch_heads",
           "attribution_patch_resid", "UnknownEdge", "circuit_faithfulness", "declared_positions",
           "edge_attribution_scores", "edge_nodes", "edge_patching_scores", "faithfulness_curve",
           "logit_diff_metric", "patch_and_measure", "path_patch_heads", "pearson", "restored_fraction",
           "run_with_corrupted_edges"]
