"""Where a model keeps a fact, and how to change it: causal tracing and rank-one editing.

- ``causal_trace`` (Meng et al. 2022): add noise to the subject's token embeddings,
  then restore the clean output of one component (the block's residual output, the
  MLP output or the attention output) at one (layer, position), and measure how much
  of the answer's probability comes back. All (layer, position) restorations of a
  component run as rows of a few big batched forward passes, not one pass each, and restorations
  that cannot reach the answer (before the subject, after the answer, off-answer in the last layer)
  are not run at all.
- ``rome_edit``: a rank-one change to one MLP's output weights that makes the MLP
  write a new value ``v* = v + delta`` for the subject's key ``k*``, while keys
  that look like the rest of the text (the key covariance ``C``) change as little
  as possible: ``W_out += delta (C^-1 k*)^T / (k*^T C^-1 k*)``.
- ``finetune_edit``: the baseline, gradient steps on the same MLP's weights.
- ``edit_metrics``: efficacy, paraphrase, and the specificity checks.

Everything works on any ``TransformerBridge`` (the zoo's native models, GPT-2,
Pythia's parallel attention and MLP, Gemma's gated MLP) through the bridge's hook
names: ``hook_embed``, ``blocks.{l}.hook_resid_post``, ``blocks.{l}.hook_mlp_out``,
``blocks.{l}.hook_attn_out`` and ``blocks.{l}.mlp.out.hook_in`` (the MLP's key, the
input of its output projection). Results come back on the CPU.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device

COMPONENT_HOOKS: dict[str, str] = {
    "resid": "blocks.{layer}.hook_resid_post",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "attn": "blocks.{layer}.hook_attn_out",
}
EMBED_HOOK = "hook_embed"
KEY_HOOK = "blocks.{layer}.mlp.out.hook_in"

# prompts: strings, or a token batch [batch, seq] with the answer read at the last position,
# or (tokens, answer_positions) for right-padded batches
Prompts = Union[Sequence[str], Int[torch.Tensor, "batch seq"], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------------------
# prompt handling
# ---------------------------------------------------------------------------------------------

def encode_prompts(model, prompts: Prompts) -> tuple[Int[torch.Tensor, "batch seq"], Int[torch.Tensor, " batch"]]:
    """``(tokens, answer_positions)``: strings are tokenized one by one (``<bos>`` first) and right-padded;
    the answer is read at each prompt's last token."""
    if isinstance(prompts, tuple) and len(prompts) == 2 and isinstance(prompts[0], torch.Tensor):
        tokens, positions = prompts
        positions = torch.as_tensor(positions).long()
        if tokens.ndim != 2 or positions.shape != (tokens.shape[0],):
            raise ValueError(f"(tokens, answer_positions) must be shaped [batch, seq] and [batch]; got "
                             f"{tuple(tokens.shape)} and {tuple(positions.shape)}")
        if (positions < 0).any() or (positions >= tokens.shape[1]).any():
            raise ValueError(f"answer positions must lie in 0..{tokens.shape[1] - 1}; got {positions.tolist()}")
        return tokens.long(), positions
    if isinstance(prompts, torch.Tensor):
        if prompts.ndim != 2:
            raise ValueError(f"a token batch must be [batch, seq]; got shape {tuple(prompts.shape)}")
        return prompts.long(), torch.full((prompts.shape[0],), prompts.shape[1] - 1)
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    rows = [model.to_tokens(p)[0].cpu() for p in prompts]
    pad = model.tokenizer.pad_token_id if model.tokenizer is not None and model.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    return tokens, torch.tensor([len(r) - 1 for r in rows])


def _token_ids(model, value: str | int | Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(value, str):
        return model.to_tokens(value, prepend_bos=False)[0].cpu()
    if isinstance(value, int):
        return torch.tensor([value])
    return torch.as_tensor(value).long().flatten()


def _show(model, ids: torch.Tensor) -> list:
    """Token strings where the model has a tokenizer, else ids."""
    try:
        return list(model.to_str_tokens(ids))
    except Exception:  # a random model without tokenizer
        return ids.tolist()


def _single_token(model, target: str | int, what: str = "target") -> int:
    ids = _token_ids(model, target, what)
    if ids.numel() != 1:
        pieces = _show(model, ids)
        raise ValueError(f"the {what} {target!r} is {ids.numel()} tokens ({pieces}); an edit here targets one next "
                         "token. Choose a one-token answer (GPT-2-style tokenizers: include the leading space, ' Paris').")
    return int(ids[0])


def subject_last_positions(model, tokens: Int[torch.Tensor, "batch seq"], subject) -> Int[torch.Tensor, " batch"]:
    """Position of the subject's last token in each prompt (its first occurrence), or a clear error.

    The subject is tokenized on its own; if a prompt tokenizes it differently (GPT-2 turns "Paris" and
    " Paris" into different tokens), the subject is not found there and the error says so.
    """
    ids = _token_ids(model, subject, "subject")
    if ids.numel() == 0:
        raise ValueError("the subject is empty")
    found = []
    for row in tokens.cpu():
        windows = row.unfold(0, ids.numel(), 1) if row.numel() >= ids.numel() else row[None, :0]
        hits = (windows == ids).all(-1).nonzero().flatten()
        if hits.numel() == 0:
            shown, subject_shown = _show(model, row), _show(model, ids)
            raise ValueError(
                f"subject {subject!r} (tokens {subject_shown}) does not occur in the prompt {shown}: the tokenizer "
                "splits it differently inside the sentence. Pass the subject as it is tokenized there (for GPT-2, "
                "with its leading space: ' Eiffel Tower'), or pass its token ids.")
        found.append(int(hits[0]) + ids.numel() - 1)
    return torch.tensor(found)


def _as_mask(positions, tokens: torch.Tensor, what: str) -> Bool[torch.Tensor, "batch seq"]:
    """A [batch, seq] mask from a mask, a list of positions shared by every prompt, or [batch, k] positions."""
    batch, seq = tokens.shape
    positions = torch.as_tensor(positions)
    if positions.dtype == torch.bool:
        if positions.shape != (batch, seq):
            raise ValueError(f"{what} mask must be [batch, seq] = {[batch, seq]}; got {list(positions.shape)}")
        return positions.cpu()
    positions = positions.long()
    if positions.ndim == 1:
        positions = positions[None].expand(batch, -1)
    if positions.ndim != 2 or positions.shape[0] != batch:
        raise ValueError(f"{what} must be a [batch, seq] mask, a list of positions, or [batch, k] positions; "
                         f"got shape {list(positions.shape)} for {batch} prompts")
    if (positions < 0).any() or (positions >= seq).any():
        raise ValueError(f"{what} must lie in 0..{seq - 1}")
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    mask.scatter_(1, positions.cpu(), True)
    return mask


# ---------------------------------------------------------------------------------------------
# causal tracing
# ---------------------------------------------------------------------------------------------

@dataclass
class CausalTrace:
    """Answer probabilities of a causal-tracing run (CPU tensors).

    ``p_restored[c, l, t, b]`` is prompt ``b``'s answer probability, averaged over noise samples, when
    component ``components[c]`` at layer ``l`` and position ``t`` is restored to its clean value.
    """

    components: tuple[str, ...]
    p_clean: Float[torch.Tensor, " batch"]
    p_corrupt: Float[torch.Tensor, " batch"]
    p_restored: Float[torch.Tensor, "component layer seq batch"]
    noise_sd: float

    def effect(self) -> Float[torch.Tensor, "component layer seq"]:
        """Restored fraction on prompt means: (p_restored - p_corrupt) / (p_clean - p_corrupt).

        Meaningful per position when every prompt has the same layout (same template)."""
        clean, corrupt = self.p_clean.mean(), self.p_corrupt.mean()
        return (self.p_restored.mean(-1) - corrupt) / (clean - corrupt)

    def bucketed(self, buckets: Int[torch.Tensor, "batch seq"], n_buckets: int | None = None
                 ) -> Float[torch.Tensor, "component layer bucket"]:
        """Restored fraction per position bucket (e.g. "last subject token"), for prompts of different layouts.

        ``buckets[b, t]`` names the bucket of prompt ``b``'s token ``t`` (-1: none). Each prompt counts once
        per bucket (its positions in a bucket are averaged), then prompts are averaged."""
        buckets = torch.as_tensor(buckets).cpu()
        if buckets.shape != self.p_restored.shape[2:][::-1]:
            raise ValueError(f"buckets must be [batch, seq] = {list(self.p_restored.shape[2:][::-1])}; "
                             f"got {list(buckets.shape)}")
        n_buckets = int(buckets.max()) + 1 if n_buckets is None else n_buckets
        restored = self.p_restored.permute(0, 1, 3, 2)  # [c, l, batch, seq]
        out = torch.full(self.p_restored.shape[:2] + (n_buckets,), float("nan"))
        for k in range(n_buckets):
            member = (buckets == k).float()
            has = member.sum(-1) > 0
            if not has.any():
                continue
            per_prompt = (restored * member).sum(-1)[..., has] / member.sum(-1)[has]
            clean, corrupt = self.p_clean[has].mean(), self.p_corrupt[has].mean()
            out[..., k] = (per_prompt.mean(-1) - corrupt) / (clean - corrupt)
        return out


def _answer_probs(logits: torch.Tensor, positions: torch.Tensor, answers: torch.Tensor, repeats: int) -> torch.Tensor:
    """Probability of each row's answer at its answer position; rows are ``repeats`` copies of the batch."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at = logits[rows, positions.repeat(repeats)]
    return at.float().softmax(-1)[rows, answers.repeat(repeats)]


@torch.no_grad()
def causal_trace(
    model,
    prompts: Prompts,
    subject_positions,
    answer_ids: Int[torch.Tensor, " batch"] | Sequence[int],
    components: Sequence[str] = ("resid", "mlp", "attn"),
    noise: float = 3.0,
    samples: int = 4,
    seed: int = 0,
    max_batch: int = 2048,
    progress: bool = True,
) -> CausalTrace:
    """Causal tracing with every (layer, position) restoration batched into few forward passes.

    Noise ``N(0, (noise * s)^2)``, with ``s`` the std of the clean token embeddings at the subject positions,
    is added to the embeddings (``hook_embed``) at ``subject_positions`` (a [batch, seq] mask, shared
    positions, or [batch, k] positions); ``samples`` noise draws per prompt, seeded. Then each component's
    clean output is restored at one (layer, position) at a time: one row of a big batch per restoration and
    noise sample, up to ``max_batch`` rows a pass. Rows that cannot change the answer in a causal model are
    not run but set to ``p_corrupt``, which is what running them gives: positions before a prompt's first
    subject token (the corrupted run equals the clean run there), positions after its answer (padding), and
    last-layer positions other than the answer (they reach only their own logits).
    """
    tokens, answer_pos = encode_prompts(model, prompts)
    batch, seq = tokens.shape
    answers = torch.as_tensor(answer_ids).long().flatten()
    if answers.shape != (batch,):
        raise ValueError(f"answer_ids must hold one token id per prompt ({batch}); got shape {list(answers.shape)}")
    unknown = [c for c in components if c not in COMPONENT_HOOKS]
    if unknown or not components:
        raise ValueError(f"components must be a non-empty subset of {tuple(COMPONENT_HOOKS)}; got {tuple(components)}")
    if samples < 1 or noise < 0:
        raise ValueError("samples must be >= 1 and noise >= 0")
    subject_mask = _as_mask(subject_positions, tokens, "subject_positions")
    if not subject_mask.any(-1).all():
        raise ValueError("every prompt needs at least one subject position to corrupt")
    device = model_device(model)
    n_layers = model.cfg.n_layers
    tokens_d, answers_d, pos_d = tokens.to(device), answers.to(device), answer_pos.to(device)

    names = [EMBED_HOOK] + [COMPONENT_HOOKS[c].format(layer=l) for c in components for l in range(n_layers)]
    logits, cache = model.run_with_cache(tokens_d, names_filter=lambda name: name in names)
    p_clean = _answer_probs(logits, pos_d, answers_d, 1).cpu()
    embed = cache[EMBED_HOOK]
    sd = float(embed[subject_mask.to(device)].float().std()) * noise
    generator = torch.Generator().manual_seed(seed)
    noise_draw = torch.randn(samples, batch, seq, embed.shape[-1], generator=generator) * sd
    noise_draw = (noise_draw * subject_mask[None, :, :, None]).to(device=device, dtype=embed.dtype)

    all_noise = noise_draw.reshape(-1, seq, embed.shape[-1])  # row s * batch + b
    corrupt_logits = model.run_with_hooks(tokens_d.repeat(samples, 1),
                                          fwd_hooks=[(EMBED_HOOK, lambda act, hook: act + all_noise)])
    p_corrupt = _answer_probs(corrupt_logits, pos_d, answers_d, samples).view(samples, batch).mean(0).cpu()

    # Rows that can change the answer: (component, layer, position, prompt). The rest are p_corrupt exactly:
    # - before the prompt's first corrupted position the corrupted run *is* the clean run (the noise enters at
    #   the subject and causal attention never carries it backwards), so restoring there restores nothing;
    # - after the answer position (right padding), a position cannot reach the answer;
    # - in the last layer, a component's output at a position only reaches that position's logits.
    first = subject_mask.float().argmax(-1)
    position = torch.arange(seq)
    wanted = (position[None] >= first[:, None]) & (position[None] <= answer_pos[:, None])  # [batch, seq]
    wanted = wanted[None].expand(n_layers, batch, seq).clone()
    wanted[-1] = position[None] == answer_pos[:, None]
    layer_i, prompt_i, pos_i = wanted.nonzero(as_tuple=True)
    count = len(layer_i)
    comp_i = torch.arange(len(components)).repeat_interleave(count)
    layer_i, prompt_i, pos_i = layer_i.repeat(len(components)), prompt_i.repeat(len(components)), pos_i.repeat(len(components))

    p_restored = p_corrupt[None, None, None].repeat(len(components), n_layers, seq, 1)
    per_pass = max(1, max_batch // samples)
    starts = range(0, len(comp_i), per_pass)
    bar = tqdm(total=len(starts), desc="causal tracing", disable=not progress or len(starts) < 3)
    sample_of_row = torch.arange(samples)
    for start in starts:
        cs, ls = comp_i[start:start + per_pass], layer_i[start:start + per_pass]
        bs, ts = prompt_i[start:start + per_pass], pos_i[start:start + per_pass]
        row_prompt = bs.repeat_interleave(samples)  # row j * samples + s: restoration j, noise sample s
        row_noise = noise_draw[sample_of_row.repeat(len(bs)).to(device), row_prompt.to(device)]

        def corrupt(act, hook, row_noise=row_noise):
            return act + row_noise
        hooks = [(EMBED_HOOK, corrupt)]
        for c, layer in sorted(set(zip(cs.tolist(), ls.tolist()))):
            js = ((cs == c) & (ls == layer)).nonzero().flatten()
            name = COMPONENT_HOOKS[components[c]].format(layer=layer)
            rows = (js[:, None] * samples + sample_of_row).flatten().to(device)
            at = ts[js].repeat_interleave(samples).to(device)
            clean = cache[name][bs[js].to(device), ts[js].to(device)].repeat_interleave(samples, 0)

            def restore(act, hook, rows=rows, at=at, clean=clean):
                act = act.clone()
                act[rows, at] = clean.to(act.dtype)
                return act
            hooks.append((name, restore))
        row_prompt_d = row_prompt.to(device)
        out = model.run_with_hooks(tokens_d[row_prompt_d], fwd_hooks=hooks)
        rows_all = torch.arange(len(row_prompt), device=device)
        probs = out[rows_all, pos_d[row_prompt_d]].float().softmax(-1)[rows_all, answers_d[row_prompt_d]]
        p_restored[cs, ls, ts, bs] = probs.view(len(bs), samples).mean(1).cpu()
        bar.update(1)
    bar.close()
    return CausalTrace(components=tuple(components), p_clean=p_clean, p_corrupt=p_corrupt, p_restored=p_restored,
                       noise_sd=sd)


@torch.no_grad()
def causal_trace_loop(model, prompts: Prompts, subject_positions, answer_ids, components=("resid", "mlp", "attn"),
                      noise: float = 3.0, samples: int = 4, seed: int = 0) -> CausalTrace:
    """The same measurement with one forward pass per (component, layer, position): the reference the batched
    version is checked and timed against (``benchmarks/knowledge.py``)."""
    tokens, answer_pos = encode_prompts(model, prompts)
    batch, seq = tokens.shape
    answers = torch.as_tensor(answer_ids).long().flatten()
    subject_mask = _as_mask(subject_positions, tokens, "subject_positions")
    device = model_device(model)
    tokens_d, answers_d, pos_d = tokens.to(device), answers.to(device), answer_pos.to(device)
    names = [EMBED_HOOK] + [COMPONENT_HOOKS[c].format(layer=l) for c in components for l in range(model.cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens_d, names_filter=lambda name: name in names)
    embed = cache[EMBED_HOOK]
    sd = float(embed[subject_mask.to(device)].float().std()) * noise
    draw = torch.randn(samples, batch, seq, embed.shape[-1], generator=torch.Generator().manual_seed(seed)) * sd
    draw = (draw * subject_mask[None, :, :, None]).to(device=device, dtype=embed.dtype).reshape(-1, seq, embed.shape[-1])
    noisy = (EMBED_HOOK, lambda act, hook: act + draw)
    repeated = tokens_d.repeat(samples, 1)
    corrupt = _answer_probs(model.run_with_hooks(repeated, fwd_hooks=[noisy]), pos_d, answers_d, samples)
    p_restored = torch.empty(len(components), model.cfg.n_layers, seq, batch)
    for c, component in enumerate(components):
        for layer in range(model.cfg.n_layers):
            name = COMPONENT_HOOKS[component].format(layer=layer)
            for t in range(seq):
                def restore(act, hook, t=t, clean=cache[name]):
                    act = act.clone()
                    act[:, t] = clean[:, t].repeat(samples, 1)
                    return act
                out = model.run_with_hooks(repeated, fwd_hooks=[noisy, (name, restore)])
                p_restored[c, layer, t] = _answer_probs(out, pos_d, answers_d, samples).view(samples, batch).mean(0).cpu()
    return CausalTrace(components=tuple(components), p_clean=_answer_probs(logits, pos_d, answers_d, 1).cpu(),
                       p_corrupt=corrupt.view(samples, batch).mean(0).cpu(), p_restored=p_restored, noise_sd=sd)


# ---------------------------------------------------------------------------------------------
# weight edits
# ---------------------------------------------------------------------------------------------

def _check_layer(model, layer: int) -> None:
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist; the model has layers 0..{model.cfg.n_layers - 1}")


def mlp_output_weight(model, layer: int) -> tuple[str, torch.nn.Parameter, bool]:
    """``(name, weight, transposed)`` of layer ``layer``'s MLP output projection (W_out).

    ``transposed`` is True where the weight is stored [d_mlp, d_model] (GPT-2's ``Conv1D``) rather than
    ``nn.Linear``'s [d_model, d_mlp]. Found through the bridge's ``blocks.{l}.mlp.out``, so it is
    ``fc_out`` (zoo models), ``c_proj`` (GPT-2), ``dense_4h_to_h`` (Pythia) or ``down_proj`` (Gemma)."""
    _check_layer(model, layer)
    try:
        module = model.blocks[layer].mlp.out
    except AttributeError as error:
        raise ValueError(f"block {layer} has no MLP output projection (blocks.{layer}.mlp.out); attention-only "
                         "models store no facts in MLPs") from error
    inner = getattr(module, "original_component", module)
    weight = inner.weight
    name = next(n for n, p in model.named_parameters() if p is weight)
    transposed = type(inner).__name__ == "Conv1D"
    return name, weight, transposed


def _mlp_parameters(model, layer: int) -> dict[str, torch.nn.Parameter]:
    module = model.blocks[layer].mlp
    owned = {id(p) for p in module.parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) in owned}


@dataclass
class WeightEdit:
    """An edit as additive weight changes; ``with edit.applied(model):`` applies it and restores exactly."""

    method: str
    layer: int
    deltas: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def applied(self, model) -> Iterator[None]:
        params = dict(model.named_parameters())
        saved = {}
        try:
            with torch.no_grad():
                for name, delta in self.deltas.items():
                    saved[name] = params[name].detach().clone()
                    params[name].add_(delta.to(params[name].device, params[name].dtype))
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def apply(self, model) -> None:
        """Apply permanently (no way back but reloading the model)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, delta in self.deltas.items():
                params[name].add_(delta.to(params[name].device, params[name].dtype))


@contextlib.contextmanager
def _frozen(model) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def mlp_key_covariance(model, layer: int, tokens: Int[torch.Tensor, "batch seq"],
                       mask: Bool[torch.Tensor, "batch seq"] | None = None, batch_size: int = 256
                       ) -> Float[torch.Tensor, "d_mlp d_mlp"]:
    """Uncentred covariance ``E[k k^T]`` of layer ``layer``'s MLP keys over the (masked) tokens of some text:
    the statistics that tell ROME which directions ordinary text uses, so the edit leaves them alone."""
    _check_layer(model, layer)
    if mask is not None and mask.shape != tokens.shape:
        raise ValueError(f"mask must match tokens {list(tokens.shape)}; got {list(mask.shape)}")
    name = KEY_HOOK.format(layer=layer)
    total, count = None, 0
    device = model_device(model)
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start:start + batch_size].to(device)
        _, cache = model.run_with_cache(chunk, names_filter=lambda n: n == name)
        keys = cache[name].float()
        keys = keys[mask[start:start + batch_size].to(device)] if mask is not None else keys.reshape(-1, keys.shape[-1])
        total = keys.T @ keys if total is None else total + keys.T @ keys
        count += keys.shape[0]
    if not count:
        raise ValueError("the mask selects no tokens")
    return (total / count).cpu()


def _add_at_positions(vector: torch.Tensor, positions: torch.Tensor):
    def hook(act, hook):
        rows = torch.arange(act.shape[0], device=act.device)
        add = torch.zeros_like(act)
        add[rows, positions] = vector.to(act.dtype)
        return act + add
    return hook


def _stack_padded(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Two right-padded token batches as one (padding after a prompt's answer cannot reach it)."""
    width = max(first.shape[1], second.shape[1])
    out = torch.zeros(first.shape[0] + second.shape[0], width, dtype=first.dtype, device=first.device)
    out[:first.shape[0], :first.shape[1]] = first
    out[first.shape[0]:, :second.shape[1]] = second
    return out


def _final_log_probs(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return logits[torch.arange(logits.shape[0], device=logits.device), positions].float().log_softmax(-1)


def rome_edit(
    model,
    prompts: Prompts,
    subject: str | Sequence[int] | torch.Tensor,
    target: str | int,
    layer: int,
    covariance: Float[torch.Tensor, "d_mlp d_mlp"],
    preserve_prompts: Prompts | None = None,
    steps: int = 300,
    lr: float = 0.2,
    kl_weight: float = 2.0,
    l2_weight: float = 1e-4,
    stop_probability: float = 0.9,
    ridge: float = 1e-3,
    relax_every: int | None = 100,
) -> WeightEdit:
    """A ROME-style rank-one edit of layer ``layer``'s MLP output weights, so ``prompts`` answer ``target``.

    1. ``k*``: the MLP key at the subject's last token, averaged over ``prompts``.
    2. ``delta``: a vector added to the MLP output at that token, found with Adam; its loss is the NLL of
       ``target`` on ``prompts`` + ``kl_weight`` x KL(before || after) on ``preserve_prompts`` (the subject's
       *other* facts, ROME's "essence" term) + ``l2_weight`` |delta|^2. Stops once ``target`` is top-1 with
       probability > ``stop_probability`` on every prompt. Where the KL term holds ``target`` below the top
       answer (the subject's facts share one key, so a new value pulls on the others), the KL weight halves
       after every ``relax_every`` steps in which ``target`` is not yet top-1 on every prompt: an edit that
       does not take is no use, so the edit buys efficacy with as little specificity as it needs.
    3. ``W_out += delta (C^-1 k*)^T / (k*^T C^-1 k*)``, ``C`` = ``covariance`` + ridge x mean diagonal.
    The model is left unchanged; use ``edit.applied(model)``.
    """
    _check_layer(model, layer)
    name, weight, transposed = mlp_output_weight(model, layer)
    d_mlp = weight.shape[0] if transposed else weight.shape[1]
    covariance = torch.as_tensor(covariance)
    if covariance.shape != (d_mlp, d_mlp):
        raise ValueError(f"covariance must be [d_mlp, d_mlp] = [{d_mlp}, {d_mlp}] for layer {layer}; got "
                         f"{list(covariance.shape)} (compute it with mlp_key_covariance(model, {layer}, tokens))")
    if not torch.isfinite(covariance).all():
        raise ValueError("covariance contains NaN or inf")
    tokens, answer_pos = encode_prompts(model, prompts)
    subject_pos = subject_last_positions(model, tokens, subject)
    target_id = _single_token(model, target)
    device = model_device(model)
    tokens, answer_pos, subject_pos = tokens.to(device), answer_pos.to(device), subject_pos.to(device)
    key_name, out_name = KEY_HOOK.format(layer=layer), COMPONENT_HOOKS["mlp"].format(layer=layer)
    n_edit = tokens.shape[0]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == key_name)
        keys = cache[key_name][torch.arange(n_edit, device=device), subject_pos].float()
        k_star = keys.mean(0)
        if preserve_prompts is not None:  # one batch: the edit's prompts, then the ones to keep
            p_tokens, p_answer = encode_prompts(model, preserve_prompts)
            p_subject = subject_last_positions(model, p_tokens, subject).to(device)
            tokens = _stack_padded(tokens, p_tokens.to(device))
            answer_pos, subject_pos = torch.cat([answer_pos, p_answer.to(device)]), torch.cat([subject_pos, p_subject])
            before = _final_log_probs(model(tokens[n_edit:]), answer_pos[n_edit:])
    d_model = weight.shape[1] if transposed else weight.shape[0]
    delta = torch.zeros(d_model, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    targets = torch.full((n_edit,), target_id, device=device)
    rows = torch.arange(n_edit, device=device)
    if relax_every is not None and relax_every < 1:
        raise ValueError(f"relax_every must be a positive number of steps or None; got {relax_every}")
    steps_taken, weight_now = 0, kl_weight
    with _frozen(model), torch.enable_grad():
        for steps_taken in range(1, steps + 1):
            log_probs = _final_log_probs(
                model.run_with_hooks(tokens, fwd_hooks=[(out_name, _add_at_positions(delta, subject_pos))]), answer_pos)
            on_top = bool((log_probs[:n_edit].detach().argmax(-1) == targets).all())
            if relax_every is not None and steps_taken % relax_every == 0 and not on_top:
                weight_now /= 2
            loss = -log_probs[rows, targets].mean() + l2_weight * delta.pow(2).sum()
            if preserve_prompts is not None:
                loss = loss + weight_now * torch.nn.functional.kl_div(log_probs[n_edit:], before, log_target=True,
                                                                     reduction="batchmean")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the edit's loss became {loss.item()} at step {steps_taken}; lower lr ({lr})")
            if on_top and (log_probs[:n_edit, target_id].detach().exp() > stop_probability).all():
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    delta = delta.detach()
    c = covariance.to(device).float()
    c = c + ridge * c.diagonal().mean() * torch.eye(d_mlp, device=device)
    solved = torch.linalg.solve(c, k_star)
    u = solved / (k_star @ solved)
    update = torch.outer(u, delta) if transposed else torch.outer(delta, u)
    if not torch.isfinite(update).all():
        raise FloatingPointError("the rank-one update is not finite; is the covariance singular? raise `ridge`")
    return WeightEdit(method="rome", layer=layer, deltas={name: update.cpu()},
                      info={"steps": steps_taken, "delta": delta.cpu(), "key": k_star.cpu(),
                            "target": target_id, "kl_weight": weight_now})


def finetune_edit(
    model,
    prompts: Prompts,
    target: str | int,
    layer: int,
    steps: int = 200,
    lr: float = 1e-3,
    stop_probability: float = 0.9,
) -> WeightEdit:
    """The baseline: Adam on every weight of layer ``layer``'s MLP, NLL of ``target`` on ``prompts`` only,
    with the same stopping rule as ``rome_edit``. The model is left unchanged; use ``edit.applied(model)``."""
    _check_layer(model, layer)
    tokens, answer_pos = encode_prompts(model, prompts)
    target_id = _single_token(model, target)
    device = model_device(model)
    tokens, answer_pos = tokens.to(device), answer_pos.to(device)
    params = _mlp_parameters(model, layer)
    original = {n: p.detach().clone() for n, p in params.items()}
    targets = torch.full((tokens.shape[0],), target_id, device=device)
    optimizer = torch.optim.Adam(list(params.values()), lr=lr)
    steps_taken = 0
    try:
        with _frozen(model), torch.enable_grad():
            for p in params.values():
                p.requires_grad_(True)
            for steps_taken in range(1, steps + 1):
                log_probs = _final_log_probs(model(tokens), answer_pos)
                probs = log_probs.detach().exp()
                if (probs.argmax(-1) == targets).all() and (probs[:, target_id] > stop_probability).all():
                    break
                loss = -log_probs[torch.arange(len(targets)), targets].mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"fine-tuning loss became {loss.item()}; lower lr ({lr})")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        deltas = {n: (p.detach() - original[n]).cpu() for n, p in params.items()}
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(original[n])
    return WeightEdit(method="finetune", layer=layer, deltas=deltas, info={"steps": steps_taken, "target": target_id})


@torch.no_grad()
def top1(model, prompts: Prompts) -> Int[torch.Tensor, " batch"]:
    """The top next-token prediction at each prompt's answer position (CPU)."""
    tokens, positions = encode_prompts(model, prompts)
    device = model_device(model)
    logits = model(tokens.to(device))
    return logits[torch.arange(tokens.shape[0], device=device), positions.to(device)].argmax(-1).cpu()


@torch.no_grad()
def edit_metrics(
    model,
    edit: WeightEdit,
    target: str | int,
    efficacy_prompts: Prompts,
    paraphrase_prompts: Prompts | None = None,
    other_subject_prompts: Prompts | None = None,
    same_subject_prompts: Prompts | None = None,
) -> dict[str, float]:
    """Top-1 edit metrics: ``efficacy`` and ``paraphrase`` (fraction answering ``target``), and for the
    specificity sets the fraction whose top-1 answer is the same as before the edit
    (``other_subjects_unchanged``: other subjects' facts; ``same_subject_unchanged``: the edited
    subject's other relations)."""
    target_id = _single_token(model, target)
    before = {key: top1(model, p) for key, p in (("other_subjects_unchanged", other_subject_prompts),
                                                   ("same_subject_unchanged", same_subject_prompts)) if p is not None}
    out: dict[str, float] = {}
    with edit.applied(model):
        out["efficacy"] = (top1(model, efficacy_prompts) == target_id).float().mean().item()
        if paraphrase_prompts is not None:
            out["paraphrase"] = (top1(model, paraphrase_prompts) == target_id).float().mean().item()
        for key, p in (("other_subjects_unchanged", other_subject_prompts),
                       ("same_subject_unchanged", same_subject_prompts)):
            if p is not None:
                out[key] = (top1(model, p) == before[key]).float().mean().item()
    return out


__all__ = ["COMPONENT_HOOKS", "CausalTrace", "WeightEdit", "causal_trace", "causal_trace_loop", "edit_metrics",
           "encode_prompts", "finetune_edit", "mlp_key_covariance", "mlp_output_weight", "rome_edit",
           "subject_last_positions", "top1"]
