"""Alignment tuning on the chat world, and the measurements of what it changed (chapter 06).

Three ways to tune a base model towards the constitution (``chat.CONSTITUTION``,
scored by ``chat.judge``):

- ``best_of_n`` + ``sft``: keep the base's own samples the judge fully approves, fine-tune on them;
- ``preference_pairs`` + ``dpo``: best-versus-worst of the base's samples, DPO against the frozen base,
  optionally with an NLL term on the chosen response (plain DPO reward-hacks the concision rule: it learns
  "shorter wins" and cuts answers short);
- ``rloo``: on-policy REINFORCE with a leave-one-out baseline, reward = judge score - beta * KL to the base.

``fine_tune`` on base-mix batches is the control: same optimiser, no preference.

What changed: ``judge_model`` (per-rule scores at T = 1, plus greedy), ``kl_by_position``
(exact KL(tuned || base) at every response position, each labelled opener / content / stop / tail / end from
the judge's parse), ``token_shift`` (URIAL's rank of each tuned token under the base) and ``weight_changes``
(relative weight-change norms per parameter group; compare with a control fine-tune).

Every function takes TransformerLens bridges whose vocabulary is the chat world's, prompts as
``chat.ChatPrompts`` and responses as token-id lists (what ``generation.generate`` returns). Sampling is
seeded: the same seed gives the same samples and the same tuned weights on one machine. Tuning works in
place, so tune a copy (``copy_model``) and keep the base as the frozen reference::

    base = load_model("chat-base")
    policy = tuning.copy_model(base)
    history = tuning.rloo(policy, base, tuning.train_prompts(500), steps=30, beta=0.03)  # a short live run
    tuning.judge_model(policy)                                     # per rule at T = 1, plus greedy
    expanded, responses = tuning.sample(policy, tuning.held_out_prompts(), n=4, seed=1)
    tuning.kl_summary(tuning.kl_by_position(policy, base, expanded, responses))
    tuning.token_shift(policy, base)                               # URIAL: rank under the base > 3
    tuning.weight_changes({"rl": policy, "control": load_model("chat-control")}, base)

``rules="ab"`` (early rules only) or ``rules="cd"`` (late rules only) retunes with part of the constitution.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.generation import generate
from interplab.worlds import chat

MAX_NEW_TOKENS = 40  # a response fits the world's 48-token context after an 8-token prompt
EVAL_SEED = 6060
LABELS: tuple[str, ...] = ("opener", "content", "stop", "tail", "end", "malformed")
"""Token types of a response position: the opener (``sorry ,`` counts as a refusal's opener), the content, the
stop decision (the first token after the content: END or a tail's first word, where rule (d) is decided), the
rest of a tail sentence, END after a tail, and every position of a response that does not parse."""


# ---------------------------------------------------------------------------------------------
# prompts and the judge
# ---------------------------------------------------------------------------------------------

def _check_rules(rules: str) -> str:
    if not isinstance(rules, str) or not rules or any(r not in chat.CONSTITUTION for r in rules) \
            or len(set(rules)) != len(rules):
        raise ValueError(f"rules must be distinct letters of the constitution {''.join(chat.CONSTITUTION)} "
                         f"(e.g. 'abcd', 'ab' for the early rules, 'cd' for the late ones); got {rules!r}")
    return rules


def train_prompts(n: int, seed: int = 0) -> chat.ChatPrompts:
    """``n`` tuning prompts from the training pairs, in the base mix's proportions (70% tasks, 15% colour
    questions, 15% repeats), shuffled with ``seed``."""
    if n < 3:
        raise ValueError(f"n={n}: ask for at least 3 prompts")
    generator = torch.Generator().manual_seed(seed)
    n_colour = n_repeat = round(n * chat.BASE_PROMPT_MIX["colour"])
    n_task = n - n_colour - n_repeat
    tasks = [chat.TRAIN_PAIRS[int(i)] for i in torch.randint(len(chat.TRAIN_PAIRS), (n_task,), generator=generator)]
    objects = [chat.BENIGN_OBJECTS[int(i)] for i in torch.randint(len(chat.BENIGN_OBJECTS), (n_colour,),
                                                                   generator=generator)]
    prompts = chat.ChatPrompts.concat([chat.task_prompts(tasks, seed=seed + 1),
                                       chat.colour_prompts(objects, seed=seed + 2),
                                       chat.repeat_prompts(n_repeat, seed=seed + 3)])
    return prompts.subset(torch.randperm(n, generator=generator).tolist())


def held_out_prompts(seed: int = EVAL_SEED) -> chat.ChatPrompts:
    """The evaluation set: every held-out (verb, object) pair (120), 30 colour questions and 30 repeats (180)."""
    generator = torch.Generator().manual_seed(seed)
    objects = [chat.BENIGN_OBJECTS[int(i)] for i in torch.randint(len(chat.BENIGN_OBJECTS), (30,),
                                                                   generator=generator)]
    return chat.ChatPrompts.concat([chat.task_prompts(chat.HELD_OUT_PAIRS, seed=seed),
                                    chat.colour_prompts(objects, seed=seed + 1),
                                    chat.repeat_prompts(30, seed=seed + 2)])


def judge_responses(prompts: chat.ChatPrompts, responses: Sequence[chat.Response], rules: str = "abcd"
                    ) -> dict[str, Float[torch.Tensor, " batch"]]:
    """Each rule of the constitution (0/1 per response), ``score`` (the mean over ``rules``), ``malformed``,
    ``refusal`` and ``length`` (tokens, END included)."""
    rules = _check_rules(rules)
    if len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; pass one response per prompt")
    rows = []
    for i, response in enumerate(responses):
        verdict = chat.judge(prompts.row(i), response)
        parsed = chat.parse_response(response)
        rows.append({**{r: verdict[r] for r in chat.CONSTITUTION}, "malformed": verdict["malformed"],
                     "score": sum(verdict[r] for r in rules) / len(rules),
                     "refusal": float(parsed is not None and parsed.refusal),
                     "length": float(len(chat.response_words(response)))})
    return {key: torch.tensor([row[key] for row in rows]) for key in rows[0]}


def expand(prompts: chat.ChatPrompts, n: int) -> chat.ChatPrompts:
    """Each prompt repeated ``n`` times in a row (prompt 0 n times, then prompt 1, ...)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return prompts.subset([i for i in range(len(prompts)) for _ in range(n)])


def sample(model, prompts: chat.ChatPrompts, n: int = 1, temperature: float = 1.0, seed: int = 0,
           batch_size: int = 512, progress: bool = False) -> tuple[chat.ChatPrompts, list[list[int]]]:
    """``n`` responses per prompt, ``(expanded prompts, responses)``; seeded (``seed``, batch by batch)."""
    expanded = expand(prompts, n)
    responses: list[list[int]] = []
    starts = range(0, len(expanded), batch_size)
    for b, start in enumerate(tqdm(starts, desc="sampling", disable=not progress or len(starts) < 2)):
        part = expanded.subset(list(range(start, min(start + batch_size, len(expanded)))))
        responses += generate(model, part, max_new_tokens=MAX_NEW_TOKENS, temperature=temperature,
                              seed=seed * 1_000_003 + b)
    return expanded, responses


def judge_summary(prompts: chat.ChatPrompts, responses: Sequence[chat.Response], rules: str = "abcd"
                  ) -> dict[str, float]:
    """``judge_responses`` averaged: each rule, ``score`` (mean over ``rules``), ``refuse_harmful`` (refusal rate on
    harmful requests), ``help_benign`` (non-refusal on benign ones), ``capability`` (rule c on colour and repeat
    questions), ``malformed``, ``length`` and ``samples``."""
    verdict = judge_responses(prompts, responses, rules)
    task = prompts.kind == chat.KINDS.index("task")
    harmful = prompts.harmful
    mean = lambda x: round(float(x.float().mean()), 4) if len(x) else float("nan")  # noqa: E731
    out = {r: mean(verdict[r]) for r in chat.CONSTITUTION}
    out.update(score=mean(verdict["score"]), refuse_harmful=mean(verdict["refusal"][harmful]),
               help_benign=mean(1 - verdict["refusal"][task & ~harmful]), capability=mean(verdict["c"][~task]),
               malformed=mean(verdict["malformed"]), length=round(float(verdict["length"].mean()), 2),
               samples=len(prompts))
    return out


def judge_model(model, prompts: chat.ChatPrompts | None = None, samples: int = 4, temperature: float = 1.0,
                seed: int = 0, rules: str = "abcd", greedy: bool = True, progress: bool = False) -> dict[str, float]:
    """The judge's verdict on ``model`` (``judge_summary``), over ``samples`` responses per prompt at
    ``temperature`` (default: T = 1 on ``held_out_prompts()``); with ``greedy`` also ``greedy_score``, the score
    of greedy responses, which hides most differences between models."""
    prompts = held_out_prompts() if prompts is None else prompts
    expanded, responses = sample(model, prompts, samples, temperature, seed, progress=progress)
    out = judge_summary(expanded, responses, rules)
    out["temperature"] = temperature
    if greedy:
        greedy_responses = generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS)
        out["greedy_score"] = round(float(judge_responses(prompts, greedy_responses, rules)["score"].mean()), 4)
    return out


# ---------------------------------------------------------------------------------------------
# log-probabilities of responses
# ---------------------------------------------------------------------------------------------

def pack(prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]]
         ) -> tuple[Int[torch.Tensor, "batch seq"], Bool[torch.Tensor, "batch seq"]]:
    """``(tokens, mask)``: each prompt followed by its response, right-padded; ``mask`` marks the positions whose
    *next* token is a response token (from the last prompt token to the one before the response's last)."""
    if any(len(r) == 0 for r in responses):
        raise ValueError("an empty response has no tokens to score; drop it first")
    tokens, lengths = prompts.with_responses([list(r) for r in responses])
    positions = torch.arange(tokens.shape[1])[None]
    mask = (positions >= prompts.lengths[:, None] - 1) & (positions < lengths[:, None] - 1)
    return tokens, mask


def _check_tokens(model, tokens: torch.Tensor, mask: torch.Tensor) -> None:
    if tokens.ndim != 2 or mask.shape != tokens.shape or mask.dtype != torch.bool:
        raise ValueError(f"tokens [batch, seq] and a boolean mask of the same shape expected; got "
                         f"{tuple(tokens.shape)} and {tuple(mask.shape)} {mask.dtype} (build them with tuning.pack)")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed the model's context n_ctx={model.cfg.n_ctx}")
    if int(tokens.max()) >= model.cfg.d_vocab or int(tokens.min()) < 0:
        raise ValueError(f"token ids must lie in 0..{model.cfg.d_vocab - 1}; was the batch built for another world?")


def token_logprobs(model, tokens: Int[torch.Tensor, "batch seq"], mask: Bool[torch.Tensor, "batch seq"]
                   ) -> Float[torch.Tensor, "batch seq"]:
    """log p(next token) at every masked position (0 elsewhere); differentiable, so a loss can use it."""
    _check_tokens(model, tokens, mask)
    width = int(mask.any(0).nonzero().max()) + 2 if mask.any() else 1
    device = model_device(model)
    tokens, mask = tokens[:, :width].to(device), mask[:, :width].to(device)
    log_probs = model(tokens)[:, :-1].float().log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    out = torch.zeros(tokens.shape, device=device)
    out[:, :-1] = torch.where(mask[:, :-1], log_probs, torch.zeros_like(log_probs))
    return out


def response_logprobs(model, tokens: Int[torch.Tensor, "batch seq"], mask: Bool[torch.Tensor, "batch seq"],
                      normalize: bool = False) -> Float[torch.Tensor, " batch"]:
    """log p(response | prompt), summed over the response tokens (``normalize``: averaged per token)."""
    out = token_logprobs(model, tokens, mask).sum(-1)
    return out / mask.sum(-1).clamp(min=1).to(out.device) if normalize else out


def copy_model(model):
    """An independent copy of a bridge, to tune while the original stays the frozen reference.

    Use this rather than ``copy.deepcopy``: a bridge that has run a forward pass holds hooks bound (by weak
    reference) to its own modules, and a plain deep copy keeps them, so the copy's forward passes would write
    into the original (and a later deep copy of the original fails). The hooks are removed before copying; both
    models re-install their own on their next forward pass.
    """
    for module in model.modules():
        if hasattr(module, "_teardown_capture_hooks"):
            module._teardown_capture_hooks()
        if hasattr(module, "_captured_pre_ln_residual"):
            module._captured_pre_ln_residual = None
    return copy.deepcopy(model)


def _check_pair(policy, reference) -> None:
    if policy is reference:
        raise ValueError("policy and reference are the same object; tune a copy (tuning.copy_model(base))")
    for key in ("d_vocab", "n_ctx"):
        a, b = getattr(policy.cfg, key), getattr(reference.cfg, key)
        if a != b:
            raise ValueError(f"the two models differ in {key} ({a} vs {b}): tune and compare models of one world "
                             f"and one tokenizer")
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    if shapes(policy) != shapes(reference):
        raise ValueError("the two models have parameters of different shapes; tune a copy of the base itself")


# ---------------------------------------------------------------------------------------------
# SFT on best-of-n samples, and the control fine-tune
# ---------------------------------------------------------------------------------------------

def fine_tune(model, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float = 3e-4,
              progress: bool = True, desc: str = "fine-tuning") -> list[float]:
    """Response-only cross-entropy with AdamW (constant lr, no weight decay, clip 1.0), in place; returns the
    loss of every step. ``next_batch()`` gives ``(tokens, mask)`` as ``pack`` does."""
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0; got steps={steps}, lr={lr}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        tokens, mask = next_batch()
        lp = token_logprobs(model, tokens, mask)
        loss = -lp.sum() / mask.sum().clamp(min=1)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def best_of_n(model, prompts: chat.ChatPrompts, n: int = 8, rules: str = "abcd", seed: int = 0,
              progress: bool = True) -> tuple[chat.ChatPrompts, list[list[int]]]:
    """Rejection sampling: ``n`` samples per prompt at T = 1, keep those the judge scores 1 on ``rules``."""
    expanded, responses = sample(model, prompts, n, 1.0, seed, progress=progress)
    keep = (judge_responses(expanded, responses, rules)["score"] == 1).nonzero().flatten().tolist()
    if not keep:
        raise ValueError(f"none of {len(responses)} samples passes rules {rules!r}; sample more (n, prompts)")
    return expanded.subset(keep), [responses[i] for i in keep]


def _epoch_batches(size: int, batch_size: int, generator: torch.Generator):
    while True:
        order = torch.randperm(size, generator=generator)
        for start in range(0, size - batch_size + 1 if size >= batch_size else 1, batch_size):
            yield order[start:start + batch_size].tolist()


def sft(model, prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]], steps: int = 300, lr: float = 3e-4,
        batch_size: int = 64, seed: int = 0, progress: bool = True) -> list[float]:
    """Supervised fine-tuning on ``(prompt, response)`` pairs (shuffled epochs), loss on the response only."""
    if len(responses) != len(prompts) or not len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; pass one response per prompt")
    tokens, mask = pack(prompts, responses)
    batches = _epoch_batches(len(prompts), batch_size, torch.Generator().manual_seed(seed))

    def next_batch():
        index = next(batches)
        return tokens[index], mask[index]

    return fine_tune(model, next_batch, steps, lr, progress, desc="SFT")


# ---------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------

@dataclass
class PreferencePairs:
    """For each prompt, a chosen and a rejected response (the judge prefers the chosen)."""

    prompts: chat.ChatPrompts
    chosen: list[list[int]]
    rejected: list[list[int]]
    chosen_score: Float[torch.Tensor, " pair"]
    rejected_score: Float[torch.Tensor, " pair"]

    def __len__(self) -> int:
        return len(self.chosen)


def preference_pairs(model, prompts: chat.ChatPrompts, n: int = 4, rules: str = "abcd", seed: int = 0,
                     progress: bool = True) -> PreferencePairs:
    """Best versus worst of ``n`` samples per prompt at T = 1 by the judge's ``rules`` score; ties dropped."""
    if n < 2:
        raise ValueError(f"n must be at least 2 to form a pair, got {n}")
    expanded, responses = sample(model, prompts, n, 1.0, seed, progress=progress)
    scores = judge_responses(expanded, responses, rules)["score"].view(len(prompts), n)
    keep, chosen, rejected = [], [], []
    for i in range(len(prompts)):
        best, worst = int(scores[i].argmax()), int(scores[i].argmin())
        if scores[i, best] > scores[i, worst]:
            keep.append(i)
            chosen.append(responses[i * n + best])
            rejected.append(responses[i * n + worst])
    if not keep:
        raise ValueError("every prompt's samples tie on the judge's score: no preference pair to learn from")
    index = torch.tensor(keep)
    return PreferencePairs(prompts.subset(keep), chosen, rejected, scores.max(1).values[index],
                           scores.min(1).values[index])


def dpo_loss(policy_chosen: Float[torch.Tensor, " batch"], policy_rejected: Float[torch.Tensor, " batch"],
             reference_chosen: Float[torch.Tensor, " batch"], reference_rejected: Float[torch.Tensor, " batch"],
             beta: float = 0.1) -> tuple[Float[torch.Tensor, ""], Float[torch.Tensor, " batch"]]:
    """DPO's loss, -log sigmoid(beta * margin), and the margin: how much more the policy than the reference
    raised log p(chosen) over log p(rejected). At the reference the margin is 0 and the loss log 2."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (the strength of the KL anchor to the reference), got {beta}")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean(), margin


def dpo(policy, reference, pairs: PreferencePairs, steps: int = 300, beta: float = 0.1, nll_weight: float = 0.0,
        lr: float = 5e-5, batch_size: int = 64, seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Direct preference optimisation of ``policy`` (in place) against the frozen ``reference``.

    ``nll_weight`` adds that times the length-normalised NLL of the chosen response: without it DPO can raise
    the margin by pushing both responses down, and here it learns to truncate answers (reward hacking of the
    concision rule). Returns per-step ``loss``, ``margin``, ``chosen_logp``, ``rejected_logp`` and ``nll``.
    """
    _check_pair(policy, reference)
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    same = [i for i, (c, r) in enumerate(zip(pairs.chosen, pairs.rejected)) if list(c) == list(r)]
    if same:
        raise ValueError(f"pairs {same[:5]} have identical chosen and rejected responses: nothing to prefer")
    chosen_tokens, chosen_mask = pack(pairs.prompts, pairs.chosen)
    rejected_tokens, rejected_mask = pack(pairs.prompts, pairs.rejected)
    with torch.no_grad():
        ref_chosen = torch.cat([response_logprobs(reference, chosen_tokens[i:i + 512], chosen_mask[i:i + 512])
                                for i in range(0, len(pairs), 512)]).cpu()
        ref_rejected = torch.cat([response_logprobs(reference, rejected_tokens[i:i + 512], rejected_mask[i:i + 512])
                                  for i in range(0, len(pairs), 512)]).cpu()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    batches = _epoch_batches(len(pairs), batch_size, torch.Generator().manual_seed(seed))
    history: dict[str, list[float]] = {k: [] for k in ("loss", "margin", "chosen_logp", "rejected_logp", "nll")}
    policy.train()
    bar = tqdm(range(steps), desc="DPO" + (" + NLL" if nll_weight else ""), disable=not progress, mininterval=1.0)
    for step in bar:
        index = next(batches)
        lp_chosen = token_logprobs(policy, chosen_tokens[index], chosen_mask[index])
        lp_rejected = response_logprobs(policy, rejected_tokens[index], rejected_mask[index])
        n_chosen = chosen_mask[index].sum(-1).clamp(min=1).to(lp_chosen.device)
        chosen_sum = lp_chosen.sum(-1)
        loss, margin = dpo_loss(chosen_sum, lp_rejected, ref_chosen[index].to(lp_chosen.device),
                                ref_rejected[index].to(lp_chosen.device), beta)
        nll = -(chosen_sum / n_chosen).mean()
        total = loss + nll_weight * nll
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {total.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        for key, value in (("loss", loss), ("margin", margin.mean()), ("chosen_logp", chosen_sum.mean()),
                           ("rejected_logp", lp_rejected.mean()), ("nll", nll)):
            history[key].append(round(value.item(), 4))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", margin=f"{history['margin'][-1]:.2f}")
    policy.eval()
    return history


# ---------------------------------------------------------------------------------------------
# RL: RLOO with a KL penalty to the frozen base
# ---------------------------------------------------------------------------------------------

def rloo_advantages(rewards: Float[torch.Tensor, "prompt k"]) -> Float[torch.Tensor, "prompt k"]:
    """Each sample's reward minus the mean reward of the other k - 1 samples of its prompt (the leave-one-out
    baseline: unbiased, because a sample never sets its own baseline)."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompt, k] with k >= 2 samples per prompt; got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    k = rewards.shape[1]
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


@dataclass
class RLHistory:
    """Per-step curves of an RL run (means over the step's samples)."""

    reward: list[float] = field(default_factory=list)
    """Judge score minus beta times the sampled sequence KL."""
    score: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    """Sampled sequence KL to the reference, sum over the response of log pi - log pi_ref (nats)."""
    length: list[float] = field(default_factory=list)
    malformed: list[float] = field(default_factory=list)


def rloo(policy, reference, prompts: chat.ChatPrompts, steps: int = 300, k: int = 4, prompts_per_step: int = 16,
         beta: float = 0.1, lr: float = 1e-4, rules: str = "abcd", seed: int = 0, progress: bool = True
         ) -> RLHistory:
    """REINFORCE leave-one-out on ``policy`` (in place): each step samples ``k`` responses at T = 1 to
    ``prompts_per_step`` random prompts; reward = judge score on ``rules`` - ``beta`` * sampled KL to the
    frozen ``reference``; loss = -advantage * log pi(response). AdamW, clip 1.0."""
    _check_pair(policy, reference)
    rules = _check_rules(rules)
    if beta < 0:
        raise ValueError(f"the KL coefficient beta must be >= 0, got {beta}")
    if k < 2 or prompts_per_step < 1 or steps < 1:
        raise ValueError(f"need k >= 2, prompts_per_step >= 1, steps >= 1; got {k}, {prompts_per_step}, {steps}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    history = RLHistory()
    bar = tqdm(range(steps), desc=f"RLOO beta {beta}", disable=not progress, mininterval=1.0)
    for step in bar:
        chosen = torch.randint(len(prompts), (prompts_per_step,), generator=generator).tolist()
        batch, responses = sample(policy, prompts.subset(chosen), k, 1.0, seed * 100_003 + step)
        verdict = judge_responses(batch, responses, rules)
        tokens, mask = pack(batch, responses)
        policy.train()
        lp = token_logprobs(policy, tokens, mask)
        with torch.no_grad():
            ref = token_logprobs(reference, tokens, mask)
        seq_logp = lp.sum(-1)
        kl = (lp.detach() - ref).sum(-1).cpu()
        reward = verdict["score"] - beta * kl
        advantage = rloo_advantages(reward.view(prompts_per_step, k)).flatten().to(seq_logp.device)
        loss = -(advantage * seq_logp).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        history.reward.append(round(float(reward.mean()), 4))
        history.score.append(round(float(verdict["score"].mean()), 4))
        history.kl.append(round(float(kl.mean()), 4))
        history.length.append(round(float(verdict["length"].mean()), 2))
        history.malformed.append(round(float(verdict["malformed"].mean()), 4))
        if step % 10 == 0:
            bar.set_postfix(score=f"{history.score[-1]:.2f}", kl=f"{history.kl[-1]:.2f}")
    policy.eval()
    return history


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
    _check_pair(tuned, base)
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
    _check_pair(tuned, base)
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
        _check_pair(model, base)
        diff: dict[str, float] = {}
        norm: dict[str, float] = {}
        for name, param in model.named_parameters():
            group = parameter_group(name)
            before = reference[name].detach().float().cpu()
            diff[group] = diff.get(group, 0.0) + float((param.detach().float().cpu() - before).pow(2).sum())
            norm[group] = norm.get(group, 0.0) + float(before.pow(2).sum())
        out[model_name] = {g: round(math.sqrt(diff[g] / norm[g]), 4) if norm[g] else float("nan") for g in diff}
    return out


__all__ = ["EVAL_SEED", "LABELS", "MAX_NEW_TOKENS", "PositionProfile", "PreferencePairs", "RLHistory", "best_of_n",
           "copy_model", "dpo", "dpo_loss", "expand", "fine_tune", "held_out_prompts", "judge_model",
           "judge_responses", "judge_summary", "kl_by_position", "kl_summary", "pack", "parameter_group",
           "position_labels", "preference_pairs", "response_logprobs", "rloo", "rloo_advantages", "sample", "sft",
           "shift_summary", "token_logprobs", "token_ranks", "token_shift", "train_prompts", "weight_changes"]
