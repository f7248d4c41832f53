"""What alignment tuning changed (chapter 06): KL by position and token type, URIAL's token shift,
weight-change norms.

``kl_by_position`` gives the exact KL(tuned || base) at every response position, each labelled opener /
content / stop / tail / end from the judge's parse; ``token_shift`` ranks each of the tuned model's greedy
tokens under the base (URIAL); ``weight_changes`` gives relative weight-change norms per parameter group
(compare with a control fine-tune: a norm means little alone)::

    expanded, responses = finetune.sample(policy, finetune.held_out_prompts(), n=4, seed=1)
    diffing.kl_summary(diffing.kl_by_position(policy, base, expanded, responses))
    diffing.token_shift(policy, base)                               # URIAL: rank under the base > 3
    diffing.weight_changes({"rl": policy, "control": load_model("chat-control")}, base)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from jaxtyping import Bool, Float

from interplab._device import model_device
from interplab.finetune import MAX_NEW_TOKENS, check_pair, held_out_prompts, pack
from interplab.generation import generate
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


def kl_by_position(tuned, base, prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]],
                   batch_size: int = 256) -> PositionProfile:
    """Exact KL(tuned || base) over the whole vocabulary at every response position (the distribution of the
    response token at that position, given the same prefix). Rows sum to each response's sequence KL."""
    check_pair(tuned, base)
    tokens, mask = pack(prompts, responses)
    starts = (prompts.lengths - 1).tolist()
    width = max(len(r) for r in responses)
    values = torch.zeros(len(responses), width)
    with torch.no_grad():
        for lo in range(0, len(responses), batch_size):
            t, m = tokens[lo:lo + batch_size], mask[lo:lo + batch_size]
            end = int(m.any(0).nonzero().max()) + 1
            device = model_device(tuned)
            lp_t = tuned(t[:, :end].to(device)).float().log_softmax(-1).cpu()
            lp_b = base(t[:, :end].to(model_device(base))).float().log_softmax(-1).cpu()
            kl = (lp_t.exp() * (lp_t - lp_b)).sum(-1)
            for j in range(t.shape[0]):
                n, s = len(responses[lo + j]), starts[lo + j]
                values[lo + j, :n] = kl[j, s:s + n]
    lengths = torch.tensor([len(r) for r in responses])
    valid = torch.arange(width)[None] < lengths[:, None]
    labels = [position_labels(r) + ["malformed"] * (len(r) - len(position_labels(r))) for r in responses]
    return PositionProfile(values.clamp(min=0) * valid, valid, labels)


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
    tokens, mask = pack(prompts, responses)
    starts = (prompts.lengths - 1).tolist()
    width = max(len(r) for r in responses)
    ranks = torch.zeros(len(responses), width)
    with torch.no_grad():
        for lo in range(0, len(responses), batch_size):
            t, m = tokens[lo:lo + batch_size], mask[lo:lo + batch_size]
            end = int(m.any(0).nonzero().max()) + 2
            logits = base(t[:, :end].to(model_device(base))).float().cpu()
            chosen = logits[:, :-1].gather(-1, t[:, 1:end, None])
            rank = (logits[:, :-1] > chosen).sum(-1) + 1
            for j in range(t.shape[0]):
                n, s = len(responses[lo + j]), starts[lo + j]
                ranks[lo + j, :n] = rank[j, s:s + n].float()
    lengths = torch.tensor([len(r) for r in responses])
    valid = torch.arange(width)[None] < lengths[:, None]
    labels = [position_labels(r) + ["malformed"] * (len(r) - len(position_labels(r))) for r in responses]
    return PositionProfile(ranks * valid, valid, labels)


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


__all__ = ["LABELS", "PositionProfile", "kl_by_position", "kl_summary", "parameter_group", "position_labels", "shift_summary", "token_ranks", "token_shift", "weight_changes"]
