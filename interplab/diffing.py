"""What alignment tuning changed (chapter 06): KL by position and token type, URIAL's token shift,
weight-change norms and spectra, and where a change lives (cross-model activation patching).

``kl_by_position`` gives the exact KL(tuned || base) at every response position, each labelled opener /
content / stop / tail / end from the judge's parse; ``token_shift`` ranks each of the tuned model's greedy
tokens under the base (URIAL); ``weight_changes`` gives relative weight-change norms per parameter group
(compare with a control fine-tune: a norm means little alone)::

    expanded, responses = finetune.sample(policy, finetune.held_out_prompts(), n=4, seed=1)
    diffing.kl_summary(diffing.kl_by_position(policy, base, expanded, responses))
    diffing.token_shift(policy, base)                               # URIAL: rank under the base > 3
    diffing.weight_changes({"rl": policy, "control": load_model("chat-control")}, base)

``weight_spectra`` adds the effective rank of each residual matrix's change and how its top singular directions
line up with a residual direction. ``cross_model_patch`` swaps one component's output (an embedding, a block's
attention or MLP output, one head, or the unembedding) between the base and the tuned model on the same tokens,
at a decision (``decision_points``: the opener, the stop decision), and ``carrying_components`` names the
smallest set of components carrying 80% of the change::

    points = diffing.decision_points(prompts, responses, "opener")
    metric = diffing.decision_metric(points.positions, *diffing.decision_tokens("opener"))
    diffing.cross_model_patching(base, policy, points.tokens, points.positions, metric)   # both directions
    print(diffing.carrying_components(policy, base, points.tokens, points.positions, metric))
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.finetune import MAX_NEW_TOKENS, check_pair, held_out_prompts, pack
from interplab.generation import generate
from interplab.patching import _check_tokens, _scalar_metric, restored_fraction
from interplab.worlds import chat

LABELS: tuple[str, ...] = ("opener", "content", "stop", "tail", "end", "malformed")
"""Token types of a response position: the opener (``sorry ,`` counts as a refusal's opener), the content, the
stop decision (the first token after the content: END or a tail's first word, where rule (d) is decided), the
rest of a tail sentence, END after a tail, and every position of a response that does not parse."""


# ---------------------------------------------------------------------------------------------
# what changed: KL per position, URIAL's token shift, weight norms
# ---------------------------------------------------------------------------------------------

def position_labels(response: chat.Response) -> list[str]:
    """The token type (``LABELS``) of each position of a response, from the judge's parse."""
    words = chat.response_words(response)
    parsed = chat.parse_response(response)
    if parsed is None:
        return ["malformed"] * len(words)
    n_opener = len(parsed.opener.split()) if parsed.opener else (2 if parsed.refusal else 0)
    labels = ["opener"] * n_opener + ["content"] * (parsed.stop - n_opener) + ["stop"]
    if parsed.tails:
        labels += ["tail"] * (len(words) - parsed.stop - 2) + ["end"]
    return labels


@dataclass
class PositionProfile:
    """A value at every response position (KL, or a rank), with the position's token type."""

    values: Float[torch.Tensor, "batch pos"]
    """0 beyond each response's end."""
    mask: Bool[torch.Tensor, "batch pos"]
    labels: list[list[str]]

    def label_mask(self, label: str) -> Bool[torch.Tensor, "batch pos"]:
        if label not in LABELS:
            raise KeyError(f"unknown label {label!r}; choose one of {LABELS}")
        out = torch.zeros_like(self.mask)
        for i, row in enumerate(self.labels):
            out[i, :len(row)] = torch.tensor([lab == label for lab in row], dtype=torch.bool)
        return out


def _per_response_position(prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]], batch_size: int,
                           extra: int, measure) -> PositionProfile:
    """``measure(tokens)`` (``[batch, pos]``, position p read where token p + 1 is predicted) on batches of the
    packed prompt + response rows, cut ``extra`` past the batch's last response token, kept at each row's response
    positions and labelled by the judge's parse. 0 beyond each response's end."""
    tokens, mask = pack(prompts, responses)
    starts = (prompts.lengths - 1).tolist()
    width = max(len(r) for r in responses)
    values = torch.zeros(len(responses), width)
    with torch.no_grad():
        for lo in range(0, len(responses), batch_size):
            t, m = tokens[lo:lo + batch_size], mask[lo:lo + batch_size]
            measured = measure(t[:, :int(m.any(0).nonzero().max()) + extra])
            for j in range(t.shape[0]):
                n, s = len(responses[lo + j]), starts[lo + j]
                values[lo + j, :n] = measured[j, s:s + n]
    lengths = torch.tensor([len(r) for r in responses])
    valid = torch.arange(width)[None] < lengths[:, None]
    labels = [position_labels(r) + ["malformed"] * (len(r) - len(position_labels(r))) for r in responses]
    return PositionProfile(values * valid, valid, labels)


def kl_by_position(tuned, base, prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]],
                   batch_size: int = 256) -> PositionProfile:
    """Exact KL(tuned || base) over the whole vocabulary at every response position (the distribution of the
    response token at that position, given the same prefix). Rows sum to each response's sequence KL."""
    check_pair(tuned, base)

    def kl(t: torch.Tensor) -> torch.Tensor:
        lp_t = tuned(t.to(model_device(tuned))).float().log_softmax(-1).cpu()
        lp_b = base(t.to(model_device(base))).float().log_softmax(-1).cpu()
        return (lp_t.exp() * (lp_t - lp_b)).sum(-1).clamp(min=0)

    return _per_response_position(prompts, responses, batch_size, 1, kl)


def kl_summary(profile: PositionProfile, first: int = 3) -> dict[str, float]:
    """``kl_per_response`` (nats), ``first_{first}_share`` (share of the KL in response positions 0..first-1),
    ``share_<label>`` for each token type, and ``kl_per_<label>`` (mean KL per position of that type)."""
    total = float(profile.values.sum())
    out = {"kl_per_response": round(total / len(profile.labels), 4),
           f"first_{first}_share": round(float(profile.values[:, :first].sum()) / total, 4) if total else float("nan")}
    for label in LABELS:
        where = profile.label_mask(label)
        part = float(profile.values[where].sum())
        out[f"share_{label}"] = round(part / total, 4) if total else float("nan")
        out[f"kl_per_{label}"] = round(part / int(where.sum()), 4) if where.any() else float("nan")
    return out


def token_ranks(base, prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]], batch_size: int = 256
                ) -> PositionProfile:
    """URIAL's measure: the rank of each response token under ``base`` given the same prefix (1 = the base's
    top token; ties counted in the token's favour). 0 beyond each response's end."""
    def rank(t: torch.Tensor) -> torch.Tensor:
        logits = base(t.to(model_device(base))).float().cpu()
        chosen = logits[:, :-1].gather(-1, t[:, 1:, None])
        return ((logits[:, :-1] > chosen).sum(-1) + 1).float()

    return _per_response_position(prompts, responses, batch_size, 2, rank)


def shift_summary(ranks: PositionProfile, threshold: int = 3, first: int = 3) -> dict[str, float]:
    """``shifted`` (share of tokens ranked above ``threshold`` under the base, URIAL's "shifted"), ``marginal``
    (rank 2..threshold), ``shifted_first_{first}_share`` (share of shifted tokens in positions 0..first-1) and
    ``shifted_at_<label>`` (share of that type's tokens shifted)."""
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    shifted = (ranks.values > threshold) & ranks.mask
    n_tokens, n_shifted = int(ranks.mask.sum()), int(shifted.sum())
    out = {"tokens": n_tokens, "shifted": round(n_shifted / n_tokens, 4),
           "marginal": round(float(((ranks.values >= 2) & (ranks.values <= threshold) & ranks.mask).sum())
                             / n_tokens, 4),
           f"shifted_first_{first}_share": round(float(shifted[:, :first].sum()) / n_shifted, 4) if n_shifted
           else float("nan")}
    for label in LABELS:
        where = ranks.label_mask(label)
        out[f"shifted_at_{label}"] = round(float((shifted & where).sum()) / int(where.sum()), 4) if where.any() \
            else float("nan")
    return out


def token_shift(tuned, base, prompts: chat.ChatPrompts | None = None, threshold: int = 3) -> dict[str, float]:
    """URIAL's token-shift statistics of ``tuned``'s greedy responses, ranked under ``base``."""
    check_pair(tuned, base)
    prompts = held_out_prompts() if prompts is None else prompts
    responses = generate(tuned, prompts, max_new_tokens=MAX_NEW_TOKENS)
    return shift_summary(token_ranks(base, prompts, responses), threshold)


_LAYER = re.compile(r"(?:layers|blocks|h|layer)\.(\d+)\.")


def parameter_group(name: str) -> str:
    """``embed``, ``L{l}.attn``, ``L{l}.mlp``, ``L{l}.ln`` or ``unembed`` (the head and the final norm)."""
    clean = name.replace("._original_component", "")
    layer = _LAYER.search(clean)
    if layer:
        rest = clean[layer.end():]
        kind = "attn" if "attn" in rest else "mlp" if "mlp" in rest else "ln"
        return f"L{layer.group(1)}.{kind}"
    if "embed" in clean and "unembed" not in clean:
        return "embed"
    return "unembed"


def weight_changes(models: Mapping[str, torch.nn.Module], base) -> dict[str, dict[str, float]]:
    """Relative Frobenius norm of the weight change, ||W_model - W_base|| / ||W_base||, per parameter group
    (``parameter_group``), for each named model. Include a control fine-tune: a norm means little alone."""
    reference = dict(base.named_parameters())
    out = {}
    for model_name, model in models.items():
        check_pair(model, base)
        diff: dict[str, float] = {}
        norm: dict[str, float] = {}
        for name, param in model.named_parameters():
            group = parameter_group(name)
            before = reference[name].detach().float().cpu()
            diff[group] = diff.get(group, 0.0) + float((param.detach().float().cpu() - before).pow(2).sum())
            norm[group] = norm.get(group, 0.0) + float(before.pow(2).sum())
        out[model_name] = {g: round(math.sqrt(diff[g] / norm[g]), 4) if norm[g] else float("nan") for g in diff}
    return out


# ---------------------------------------------------------------------------------------------
# where the change lives: cross-model activation patching
# ---------------------------------------------------------------------------------------------

DECISION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "opener": (("certainly",), ("sure", "ok", "well")),
    "stop": (("END",), tuple(dict.fromkeys(t.split()[0] for t in chat.TAILS))),
}
"""The chat world's two decisions the constitution changes, as (words the tuned models favour, words the base
also says): the opener (rule b: ``certainly`` over the base's other openers, read at response position 0) and
the stop decision (rule d: END over a tail sentence's first word, read where the content ends)."""


def decision_tokens(decision: str) -> tuple[list[int], list[int]]:
    """``(good, bad)`` token ids of a chat-world decision in ``DECISION_WORDS`` (``"opener"`` or ``"stop"``)."""
    if decision not in DECISION_WORDS:
        raise KeyError(f"unknown decision {decision!r}; choose one of {tuple(DECISION_WORDS)}")
    good, bad = DECISION_WORDS[decision]
    return [chat.word_id(w) for w in good], [chat.word_id(w) for w in bad]


@dataclass
class DecisionPoints:
    """Prompt + response token rows and, in each, the position whose logits make one decision."""

    tokens: Int[torch.Tensor, "batch seq"]
    positions: Int[torch.Tensor, " batch"]
    """The position that *predicts* the decision token (its logits are read there)."""
    rows: list[int]
    """Which of the given responses these rows are (responses without the label are left out)."""


def decision_points(prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]], label: str = "stop"
                    ) -> DecisionPoints:
    """For each response with a position of type ``label`` (``LABELS``; ``"opener"`` or ``"stop"``), the packed
    prompt + response tokens and the position predicting that label's first token: ``last + stop`` for the stop
    decision. The opener is decided at response position 0 whatever was said there (an answer without an opener
    decided against one), so ``"opener"`` keeps every row, at ``last``. Both models then run on the same tokens."""
    if label not in LABELS:
        raise KeyError(f"unknown label {label!r}; choose one of {LABELS}")
    if len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; pass one response per prompt")
    rows, where = [], []
    for i, response in enumerate(responses):
        labels = ["opener"] if label == "opener" and len(response) else position_labels(response)
        if label in labels:
            rows.append(i)
            where.append(int(prompts.last[i]) + labels.index(label))
    if not rows:
        raise ValueError(f"no response has a position labelled {label!r} (position_labels): for 'stop' the "
                         "responses must parse (end in END after their content); sample or decode more of them")
    tokens, _ = pack(prompts.subset(rows), [responses[i] for i in rows])
    return DecisionPoints(tokens, torch.tensor(where), rows)


def _check_positions(positions, tokens: torch.Tensor) -> Int[torch.Tensor, " batch"]:
    positions = torch.as_tensor(positions)
    if positions.ndim == 0:
        positions = positions.expand(tokens.shape[0])
    if positions.dtype.is_floating_point or positions.dtype == torch.bool or positions.shape != (tokens.shape[0],):
        raise ValueError(f"positions must be one integer position per row ([{tokens.shape[0]}]) or one int for "
                         f"all rows, got {tuple(positions.shape)} {positions.dtype}")
    seq = tokens.shape[1]
    if (positions < 0).any() or (positions >= seq).any():
        bad = positions[(positions < 0) | (positions >= seq)][0].item()
        raise ValueError(f"position {bad} is outside rows of {seq} tokens (0..{seq - 1}); positions count from the "
                         "start of each row (use decision_points to find them)")
    return positions.long()


def decision_metric(positions: Int[torch.Tensor, " batch"] | int, good: Sequence[int], bad: Sequence[int]):
    """A patching metric (logits ``[batch, seq, vocab]`` -> a 0-d tensor): the mean over rows of the log-odds of
    the ``good`` tokens against the ``bad`` ones at each row's decision position,
    ``logsumexp(logits[good]) - logsumexp(logits[bad])``. Independent of every other token's logit."""
    good, bad = [int(t) for t in good], [int(t) for t in bad]
    if not good or not bad or set(good) & set(bad):
        raise ValueError(f"good {good} and bad {bad} must be non-empty, disjoint sets of token ids")
    where = torch.as_tensor(positions)

    def metric(logits: Float[torch.Tensor, "batch seq vocab"]) -> Float[torch.Tensor, ""]:
        rows = torch.arange(logits.shape[0], device=logits.device)
        at = logits[rows, where.to(logits.device).expand(logits.shape[0])].float()
        return (at[:, good].logsumexp(-1) - at[:, bad].logsumexp(-1)).mean()

    metric.answers = torch.tensor([[max(good), max(bad)]] * int(where.numel()))  # checked against the vocabulary
    return metric


def _check_same_world(a, b) -> None:
    check_pair(a, b)
    vocab = [getattr(getattr(m, "tokenizer", None), "get_vocab", None) for m in (a, b)]
    if all(vocab) and vocab[0]() != vocab[1]():
        raise ValueError("the two models have different tokenizers: the same token ids mean different words to "
                         "them; compare a model with a fine-tune of itself")


UNEMBED = "unembed"
"""The head as a component: the final norm and the unembedding (``parameter_group``'s ``unembed``). Patching it
runs the other model's head on this model's final residual stream (a hook on the last ``hook_resid_post``)."""


_HEAD = re.compile(r"blocks\.(\d+)\.attn\.head\.(\d+)")


def _head(name: str) -> tuple[int, int] | None:
    match = _HEAD.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def component_name(hook: str) -> str:
    """The short name of a component, as ``parameter_group`` names weights: ``embed``, ``pos_embed``,
    ``L{l}.attn``, ``L{l}.mlp``, ``L{l}.H{h}`` (one head), ``unembed``."""
    if hook == UNEMBED:
        return UNEMBED
    if hook in ("hook_embed", "hook_pos_embed"):
        return hook[len("hook_"):]
    head = _head(hook)
    if head is not None:
        return f"L{head[0]}.H{head[1]}"
    match = re.fullmatch(r"blocks\.(\d+)\.hook_(attn|mlp)_out", hook)
    if not match:
        raise ValueError(f"{hook!r} is not a component (hook_embed, hook_pos_embed, blocks.L.hook_attn_out, "
                         "blocks.L.attn.head.H, blocks.L.hook_mlp_out, unembed)")
    return f"L{match.group(1)}.{match.group(2)}"


def patch_components(model, heads: bool = False) -> list[str]:
    """The components cross-model patching swaps: every write into the residual stream (``hook_embed``,
    ``hook_pos_embed`` for learned positions, each block's ``hook_attn_out`` and ``hook_mlp_out``) and the head
    (``UNEMBED``: the final norm and unembedding, which read the stream rather than write it).

    ``heads``: each ``hook_attn_out`` is split into its heads, ``blocks.L.attn.head.H``: head H's term
    ``z_H W_O[H]`` of the attention output (its ``hook_z`` times its output weights). The heads of a layer together
    carry its attention change except a change of the output bias ``b_O``."""
    from interplab.steering import residual_write_hooks
    names = residual_write_hooks(model) + [UNEMBED]
    if not heads:
        return names
    out = []
    for name in names:
        match = re.fullmatch(r"blocks\.(\d+)\.hook_attn_out", name)
        out += [f"blocks.{match.group(1)}.attn.head.{h}" for h in range(model.cfg.n_heads)] if match else [name]
    return out


@dataclass
class CrossPatch:
    """Metric of the ``target`` model with components' outputs taken from the ``source`` model (same tokens).

    ``fractions`` is the share of the source-vs-target change each patch carries: 0 = the target's own value,
    1 = the source's. Patching base into tuned asks "what undoes the change?", tuned into base "what installs it?".
    """

    components: list[str]
    """Hook names, one per patch (for a set: the names joined with ``+``)."""
    values: Float[torch.Tensor, " patch"]
    source_value: float
    target_value: float
    direction: str = "source -> target"

    @property
    def fractions(self) -> Float[torch.Tensor, " patch"]:
        return restored_fraction(self.values, self.source_value, self.target_value)

    @property
    def change(self) -> float:
        """``source_value - target_value``: the size of what the fractions divide (a tiny change gives noisy
        fractions; compare with a control fine-tune)."""
        return self.source_value - self.target_value

    @property
    def labels(self) -> list[str]:
        return ["+".join(component_name(h) for h in name.split("+")) for name in self.components]

    def table(self) -> list[dict]:
        return [{"component": label, "value": round(float(v), 4), "fraction": round(float(f), 4)}
                for label, v, f in zip(self.labels, self.values, self.fractions)]


def _final_resid(model) -> str:
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def _patched_values(source, target, tokens, mask, metric, sets: Sequence[Sequence[str]], max_batch: int,
                    progress: bool) -> tuple[list[float], float, float]:
    """Metric of ``target`` with each set of components patched from ``source`` at ``mask``, batched: every
    chunk runs the rows once per set (plus the unpatched target), each copy swapping its own components. A head
    swaps its term ``z_h W_O[h]`` of its layer's ``hook_attn_out``; copies whose set holds ``UNEMBED`` finish in
    ``source``'s head from their final residual stream."""
    parts = {n for s in sets for n in s if n != UNEMBED}
    heads = sorted({h for h in map(_head, parts) if h is not None})
    outputs = sorted(n for n in parts if _head(n) is None)
    head_layers = sorted({layer for layer, _ in heads})
    z_names = {layer: f"blocks.{layer}.attn.hook_z" for layer in head_layers}
    cached = set(outputs) | set(z_names.values())
    device = model_device(target)
    with torch.no_grad():
        source_logits, cache = source.run_with_cache(tokens.to(model_device(source)),
                                                     names_filter=lambda name: name in cached)
        source_value = float(metric(source_logits))
        acts = {n: cache[n].to(device) for n in cached}
        del cache, source_logits
        w_o = {(layer, model_id): m.W_O[layer].detach().to(device)
               for layer in head_layers for model_id, m in (("source", source), ("target", target))}
    batch = tokens.shape[0]
    here = mask.to(device)[..., None]
    per_chunk = max(1, max_batch // batch - 1)
    chunks = [list(range(i, min(i + per_chunk, len(sets)))) for i in range(0, len(sets), per_chunk)] or [[]]
    values: list[float] = []
    target_value = float("nan")
    for chunk in tqdm(chunks, desc="cross-model patching", disable=not progress or len(chunks) < 3, leave=False):
        copies = 1 + len(chunk)  # the unpatched target, then one copy per set
        rows_with = lambda name: [1 + j for j, s in enumerate(chunk) if name in sets[s]]  # noqa: E731
        captured: dict[str, torch.Tensor] = {}

        def make_hook(name, rows, head_terms):
            def hook(act, hook):
                view = act.reshape(copies, batch, *act.shape[1:]).clone()
                if rows is not None:
                    view[rows] = torch.where(here, acts[name].to(view.dtype), view[rows])
                for layer, head, head_rows in head_terms:  # swap one head's term of hook_attn_out
                    z_t = captured[z_names[layer]][head_rows, :, :, head]
                    z_s = acts[z_names[layer]][:, :, head]
                    delta = z_s @ w_o[layer, "source"][head] - z_t @ w_o[layer, "target"][head]
                    view[head_rows] = torch.where(here, view[head_rows] + delta.to(view.dtype), view[head_rows])
                return view.reshape(act.shape)
            return hook

        def capture(act, hook, name=None):
            captured[name] = act.reshape(copies, batch, *act.shape[1:])

        hooks = []
        for layer in head_layers:
            hooks.append((z_names[layer], lambda act, hook, name=z_names[layer]: capture(act, hook, name)))
        head_terms: dict[str, list] = {}
        for layer, head in heads:
            rows = rows_with(f"blocks.{layer}.attn.head.{head}")
            if rows:
                head_terms.setdefault(f"blocks.{layer}.hook_attn_out", []).append(
                    (layer, head, torch.tensor(rows, device=device)))
        for name in sorted(set(outputs) | set(head_terms)):
            rows = rows_with(name)
            if rows or name in head_terms:
                hooks.append((name, make_hook(name, torch.tensor(rows, device=device) if rows else None,
                                              head_terms.get(name, []))))
        head_rows = [1 + j for j, s in enumerate(chunk) if UNEMBED in sets[s]]
        if head_rows:
            def grab(act, hook):
                captured["resid"] = act.reshape(copies, batch, *act.shape[1:])[head_rows].reshape(-1, *act.shape[1:])
            hooks.append((_final_resid(target), grab))
        with torch.no_grad():
            logits = target.run_with_hooks(tokens.to(device).repeat(copies, 1), fwd_hooks=hooks)
            logits = logits.view(copies, batch, *logits.shape[1:])
            if head_rows:
                resid = captured["resid"].to(model_device(source))
                head = source.run_with_hooks(tokens.to(model_device(source)).repeat(len(head_rows), 1),
                                             fwd_hooks=[(_final_resid(source), lambda act, hook: resid.to(act.dtype))])
                logits = logits.clone()
                logits[head_rows] = head.view(len(head_rows), batch, *head.shape[1:]).to(device, logits.dtype)
        target_value = float(metric(logits[0]))
        values += [float(metric(logits[1 + j])) for j in range(len(chunk))]
    return values, source_value, target_value


def _patch_mask(where, positions: torch.Tensor, tokens: torch.Tensor) -> Bool[torch.Tensor, "batch seq"]:
    seq = torch.arange(tokens.shape[1])[None]
    if isinstance(where, str):
        if where == "decision":
            return seq == positions[:, None]
        if where == "all":
            return seq <= positions[:, None]
        raise ValueError(f"where must be 'decision' (the decision position only), 'all' (every position up to it) "
                         f"or a boolean mask [batch, seq]; got {where!r}")
    where = torch.as_tensor(where)
    if where.dtype != torch.bool or where.shape != tokens.shape:
        raise ValueError(f"a where mask must be boolean with the tokens' shape {tuple(tokens.shape)}, got "
                         f"{tuple(where.shape)} {where.dtype}")
    return where


def _checked_run(source, target, tokens, positions, metric, components, where):
    _check_same_world(source, target)
    _check_tokens(target, tokens, "tokens")
    if tokens.shape[1] > target.cfg.n_ctx:
        raise ValueError(f"rows of {tokens.shape[1]} tokens exceed the models' context n_ctx={target.cfg.n_ctx}")
    positions = _check_positions(positions, tokens)
    metric = _scalar_metric(metric)
    answers = getattr(metric, "answers", None)
    if isinstance(answers, torch.Tensor) and answers.ndim == 2 and answers.shape[0] not in (1, tokens.shape[0]):
        raise ValueError(f"the metric was built for {answers.shape[0]} rows but the tokens have {tokens.shape[0]}: "
                         "build it from these rows' positions (decision_metric(points.positions, ...))")
    if isinstance(answers, torch.Tensor) and answers.numel() and int(answers.max()) >= target.cfg.d_vocab:
        raise ValueError(f"the metric reads token id {int(answers.max())}, outside the models' vocabulary "
                         f"[0, {target.cfg.d_vocab})")
    known = patch_components(target)
    if isinstance(components, str) or (components is not None and not len(components)):
        raise ValueError(f"components must be a non-empty list of names, e.g. {known[:2]}")
    components = known if components is None else list(components)
    known = known + [n for n in patch_components(target, heads=True) if n not in known]
    unknown = [part for c in components for part in str(c).split("+") if part not in known]
    if unknown:
        raise ValueError(f"unknown components {unknown}; choose among {known} (patch_components(model), "
                         "heads=True for single heads); join names with '+' to patch several at once")
    for c in components:
        layers = {_head(part)[0] for part in c.split("+") if _head(part)}
        whole = [layer for layer in layers if f"blocks.{layer}.hook_attn_out" in c.split("+")]
        if whole:
            raise ValueError(f"{c!r} patches layer {whole[0]}'s whole attention output and some of its heads; "
                             "choose one or the other")
    mask = _patch_mask(where, positions, tokens)
    width = int(positions.max()) + 1  # later tokens cannot change the logits read (causal attention): skip them
    return tokens[:, :width], positions, metric, components, mask[:, :width]


def cross_model_patch(source, target, tokens: Int[torch.Tensor, "batch seq"],
                      positions: Int[torch.Tensor, " batch"] | int, metric,
                      components: Sequence[str] | None = None, where="decision", max_batch: int = 1024,
                      progress: bool = False, direction: str = "source -> target") -> CrossPatch:
    """Run ``target`` on ``tokens`` with one component's output replaced by ``source``'s, for each component.

    ``positions``: each row's decision position (``decision_points``); ``where`` chooses the patched positions:
    ``"decision"`` (that position only: the component's direct say in the decision there), ``"all"`` (every
    position up to it: the component's whole contribution, through attention too) or a ``[batch, seq]`` mask.
    ``metric`` maps logits ``[batch, seq, vocab]`` to a 0-d tensor (``decision_metric``). ``components``: names
    from ``patch_components`` (default: all of them, one at a time); ``"a+b"`` patches a and b together. The two
    models must be one architecture with one tokenizer (a base and its fine-tune).
    """
    tokens, positions, metric, components, mask = _checked_run(source, target, tokens, positions, metric, components,
                                                               where)
    values, source_value, target_value = _patched_values(source, target, tokens, mask, metric,
                                                         [c.split("+") for c in components], max_batch, progress)
    return CrossPatch(components, torch.tensor(values), source_value, target_value, direction)


def cross_model_patching(base, tuned, tokens: Int[torch.Tensor, "batch seq"],
                         positions: Int[torch.Tensor, " batch"] | int, metric,
                         components: Sequence[str] | None = None, where="decision", max_batch: int = 1024,
                         progress: bool = False) -> dict[str, CrossPatch]:
    """Both directions: ``"base -> tuned"`` (each base component patched into the tuned run: what undoes the
    change) and ``"tuned -> base"`` (each tuned component into the base run: what installs it)."""
    return {"base -> tuned": cross_model_patch(base, tuned, tokens, positions, metric, components, where,
                                               max_batch, progress, "base -> tuned"),
            "tuned -> base": cross_model_patch(tuned, base, tokens, positions, metric, components, where,
                                               max_batch, progress, "tuned -> base")}


def patching_grid(results: Mapping[str, CrossPatch]
                  ) -> tuple[Float[torch.Tensor, "run component"], list[str], list[str]]:
    """``(fractions [run, component], row labels, column labels)`` of several ``CrossPatch`` results over the same
    components, ready for ``PatchingHeatmap(*diffing.patching_grid(results), row_title="patch",
    col_title="component")``."""
    if not results:
        raise ValueError("no results to lay out; pass {name: CrossPatch}")
    runs = list(results.values())
    if any(r.components != runs[0].components for r in runs):
        raise ValueError("the results patch different components; lay out results of one component list")
    return torch.stack([r.fractions for r in runs]), list(results), runs[0].labels


@dataclass
class Carriers:
    """The smallest set of components found that carries at least ``threshold`` of a change, patched jointly."""

    components: list[str]
    fraction: float
    """The share of the change the set carries when all of it is patched at once (measured, not summed)."""
    threshold: float
    exhaustive: bool
    """True when every smaller set was tried (so no smaller set reaches the threshold); False when the search
    fell back to adding components greedily."""
    singles: CrossPatch
    direction: str

    @property
    def labels(self) -> list[str]:
        return [component_name(c) for c in self.components]

    def __str__(self) -> str:
        found = "+".join(self.labels) if self.fraction >= self.threshold else "no set"
        return (f"{self.direction}: {found} carries {self.fraction:.2f} of the change ({self.singles.change:+.3f}; "
                f"threshold {self.threshold:.2f}, {'exhaustive' if self.exhaustive else 'greedy'} search)")


def carrying_components(source, target, tokens: Int[torch.Tensor, "batch seq"],
                        positions: Int[torch.Tensor, " batch"] | int, metric, threshold: float = 0.8,
                        components: Sequence[str] | None = None, where="decision", max_sets: int = 256,
                        max_batch: int = 1024, progress: bool = False, direction: str = "source -> target"
                        ) -> Carriers:
    """The smallest set of components whose joint patch from ``source`` into ``target`` carries ``threshold`` of
    the change in ``metric`` (see ``cross_model_patch``). Sets are measured jointly, not summed from single
    patches (effects need not add). Every set of size 1, 2, ... is tried while a size has at most ``max_sets``
    sets; past that, components are added greedily in order of their single-patch fraction (``max_sets=0``: the
    quick greedy search only). If even all the components fall short, ``fraction`` says so."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    tokens, positions, metric, components, mask = _checked_run(source, target, tokens, positions, metric, components,
                                                               where)
    if any("+" in c for c in components):
        raise ValueError("carrying_components searches over single components; pass names without '+'")
    values, source_value, target_value = _patched_values(source, target, tokens, mask, metric,
                                                         [[c] for c in components], max_batch, progress)
    singles = CrossPatch(components, torch.tensor(values), source_value, target_value, direction)
    change = source_value - target_value
    if abs(change) < 1e-6 * max(1.0, abs(source_value)):
        raise ValueError(f"the two models agree on this metric ({source_value:.4g}): there is no change to "
                         "localise; pick a decision where they differ")
    share = lambda value: (value - target_value) / change  # noqa: E731
    best: tuple[float, list[str]] = (float(singles.fractions.max()), [components[int(singles.fractions.argmax())]])
    size = 1
    while best[0] < threshold and size < len(components):
        size += 1
        if math.comb(len(components), size) > max_sets:
            break
        sets = [list(s) for s in itertools.combinations(components, size)]
        vals, _, _ = _patched_values(source, target, tokens, mask, metric, sets, max_batch, progress)
        i = max(range(len(sets)), key=lambda j: share(vals[j]))
        best = (share(vals[i]), sets[i])
    exhaustive = best[0] >= threshold or size == len(components)
    if not exhaustive:  # greedy: prefixes of the components ordered by their single-patch fraction
        order = [components[int(i)] for i in singles.fractions.argsort(descending=True)]
        sets = [order[:k] for k in range(size, len(order) + 1)]
        vals, _, _ = _patched_values(source, target, tokens, mask, metric, sets, max_batch, progress)
        hit = next((j for j, v in enumerate(vals) if share(v) >= threshold), None)
        j = hit if hit is not None else max(range(len(sets)), key=lambda k: share(vals[k]))
        best = (share(vals[j]), sets[j])
    return Carriers(best[1], round(float(best[0]), 4), threshold, exhaustive, singles, direction)


# ---------------------------------------------------------------------------------------------
# weight diffing beyond norms: the rank of a change, and whether it lines up with a direction
# ---------------------------------------------------------------------------------------------

_READS = ("W_Q", "W_K", "W_V", "W_in", "W_gate")
_WRITES = ("W_O", "W_out")
_BLOCK_MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out")


def _weight(model, name: str):
    try:
        value = getattr(model, name)
    except AttributeError:  # e.g. W_gate of a model without a gated MLP
        return None
    return None if value is None else value.detach().float().cpu()


def residual_matrices(model) -> dict[str, Float[torch.Tensor, "d_model n"]]:
    """Every weight matrix that reads or writes the residual stream, as ``[d_model, n]`` with the residual side
    first (TransformerLens conventions): ``embed.W_E``, ``pos_embed.W_pos`` (learned positions), ``L{l}.W_Q`` /
    ``W_K`` / ``W_V`` / ``W_O`` (heads side by side), ``L{l}.W_in`` / ``W_gate`` / ``W_out`` and
    ``unembed.W_U``. Biases and norm weights are vectors and left out."""
    d = model.cfg.d_model
    out: dict[str, torch.Tensor] = {}
    embed = _weight(model, "W_E")
    out["embed.W_E"] = embed.T
    if "hook_pos_embed" in patch_components(model):
        out["pos_embed.W_pos"] = _weight(model, "W_pos").T
    stacked = {name: _weight(model, name) for name in _BLOCK_MATRICES}
    for layer in range(model.cfg.n_layers):
        for name, weights in stacked.items():
            if weights is None:
                continue
            axis = -2 if name in _READS else -1  # d_model's axis: W_Q [layer, head, d_model, d_head], W_O [.., d_model]
            w = weights[layer]
            if w.shape[axis] != d:
                raise ValueError(f"{name} of layer {layer} has shape {tuple(w.shape)}, with no d_model={d} axis "
                                 f"where TransformerLens puts it; this architecture is not supported")
            out[f"L{layer}.{name}"] = w.movedim(axis, 0).reshape(d, -1)
    out["unembed.W_U"] = _weight(model, "W_U")
    return out


def effective_rank(matrix: Float[torch.Tensor, "m n"], share: float = 0.9) -> dict[str, float]:
    """How many directions a matrix (a weight change) uses: ``rank_{share}``, the fewest singular values holding
    ``share`` of its squared Frobenius norm; ``erank``, exp of the entropy of the singular values normalised to sum
    1 (Roy and Vetterli 2007; between 1 and ``full``); ``top_share``, the top singular value's share of the norm²;
    ``full``, min(m, n)."""
    if matrix.ndim != 2:
        raise ValueError(f"effective_rank takes a matrix, got shape {tuple(matrix.shape)}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if not torch.isfinite(matrix).all():
        raise ValueError("the matrix holds NaN or inf")
    s = torch.linalg.svdvals(matrix.double())
    full = min(matrix.shape)
    key = f"rank_{round(share * 100)}"
    if s.sum() == 0:
        return {key: 0, "erank": 0.0, "top_share": float("nan"), "full": full}
    energy = s.pow(2) / s.pow(2).sum()
    rank = int((energy.cumsum(0) < share - 1e-12).sum()) + 1
    p = s / s.sum()
    p = p[p > 0]
    return {key: min(rank, full), "erank": round(float(torch.exp(-(p * p.log()).sum())), 3),
            "top_share": round(float(energy[0]), 4), "full": full}


def chance_cosine(d: int) -> float:
    """E|cos| between a fixed unit vector and a random direction in ``d`` dimensions: the level a cosine must
    clear to mean anything (about sqrt(2 / (pi d)))."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _direction_for(direction, key: str, n_layers: int, d: int):
    if direction is None:
        return None
    if isinstance(direction, Mapping):
        part = key.split(".")
        if part[0] in ("embed", "pos_embed"):
            layer = 0
        elif part[0] == "unembed":
            layer = n_layers
        else:  # a block reads residual layer l and writes residual layer l + 1
            layer = int(part[0][1:]) + (1 if part[1] in _WRITES else 0)
        if layer not in direction:
            raise KeyError(f"{key} needs a direction at residual layer {layer}; the mapping has {sorted(direction)}")
        vector = direction[layer]
    else:
        vector = direction
    vector = torch.as_tensor(vector).detach().double().cpu()
    if vector.shape != (d,) or not torch.isfinite(vector).all() or vector.norm() == 0:
        raise ValueError(f"a direction must be a finite, nonzero vector [d_model={d}] of this model (a direction "
                         f"from another model does not fit); got shape {tuple(vector.shape)}")
    return vector / vector.norm()


def weight_spectra(models: Mapping[str, torch.nn.Module], base, direction=None, top: int = 3, share: float = 0.9
                   ) -> dict[str, list[dict]]:
    """Per residual matrix (``residual_matrices``) of each named model, its change ΔW = W_model - W_base: the
    relative norm ``rel_change``, ``effective_rank`` of ΔW, and with a ``direction`` in the residual stream (a
    vector [d_model], or ``{residual layer: vector}`` as ``steering.mean_difference_directions`` returns; a block
    reads layer l and writes layer l + 1) how ΔW lines up with it: ``cos_top`` (|cos| of ΔW's top singular
    direction on the residual side), ``max_cos_top{top}`` (the best of its top ``top``) and ``along`` (the share of
    ||ΔW||² along the direction; a random direction gets 1 / d_model). ``chance_cos`` is E|cos| for a random
    direction. Include a control fine-tune: a rank or a cosine means little alone."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    reference = residual_matrices(base)
    d, n_layers = base.cfg.d_model, base.cfg.n_layers
    out = {}
    for model_name, model in models.items():
        check_pair(model, base)
        rows = []
        for key, after in residual_matrices(model).items():
            before = reference[key]
            delta = (after - before).double()
            row = {"matrix": key, "group": key.split(".")[0] if not key.startswith("L") else
                   f"{key.split('.')[0]}.{'mlp' if key.split('.')[1] in ('W_in', 'W_gate', 'W_out') else 'attn'}",
                   "rel_change": round(float(delta.norm() / before.double().norm()), 4) if before.norm() else
                   float("nan")}
            row.update(effective_rank(delta, share))
            unit = _direction_for(direction, key, n_layers, d)
            if unit is not None:
                if delta.norm() == 0:
                    row.update({"cos_top": float("nan"), f"max_cos_top{top}": float("nan"), "along": float("nan")})
                else:
                    u = torch.linalg.svd(delta, full_matrices=False).U[:, :top]
                    cos = (unit @ u).abs()
                    row.update({"cos_top": round(float(cos[0]), 4), f"max_cos_top{top}": round(float(cos.max()), 4),
                                "along": round(float((unit @ delta).pow(2).sum() / delta.pow(2).sum()), 4)})
                row["chance_cos"] = round(chance_cosine(d), 4)
            rows.append(row)
        out[model_name] = rows
    return out


__all__ = ["LABELS", "PositionProfile", "kl_by_position", "kl_summary", "parameter_group", "position_labels", "shift_summary", "token_ranks", "token_shift", "weight_changes",
           "DECISION_WORDS", "UNEMBED", "Carriers", "CrossPatch", "DecisionPoints", "carrying_components", "component_name",
           "cross_model_patch", "cross_model_patching", "decision_metric", "decision_points", "decision_tokens",
           "patch_components", "patching_grid",
           "chance_cosine", "effective_rank", "residual_matrices", "weight_spectra"]
