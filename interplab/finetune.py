"""Alignment tuning on the chat world (chapter 06): SFT, DPO and RL against a frozen base.

Three ways to tune a base model towards the constitution (``chat.CONSTITUTION``,
scored by ``chat.judge``):

- ``best_of_n`` + ``sft``: keep the base's own samples the judge fully approves, fine-tune on them;
- ``preference_pairs`` + ``dpo``: best-versus-worst of the base's samples, DPO against the frozen base,
  optionally with an NLL term on the chosen response (plain DPO reward-hacks the concision rule: it learns
  "shorter wins" and cuts answers short);
- ``rloo``: on-policy REINFORCE with a leave-one-out baseline, reward = judge score - beta * KL to the base.

``fine_tune`` on base-mix batches is the control: same optimiser, no preference. ``judge_model`` scores a
model per rule at T = 1 (plus greedy). What tuning changed is measured in ``interplab.diffing``.

Every function takes TransformerLens bridges whose vocabulary is the chat world's, prompts as
``chat.ChatPrompts`` and responses as token-id lists (what ``generation.generate`` returns). Sampling is
seeded: the same seed gives the same samples and the same tuned weights on one machine. Tuning works in
place, so tune a copy (``copy_model``) and keep the base as the frozen reference::

    base = load_model("chat-base")
    policy = finetune.copy_model(base)
    history = finetune.rloo(policy, base, finetune.train_prompts(500), steps=30, beta=0.03)  # a short live run
    finetune.judge_model(policy)                                     # per rule at T = 1, plus greedy

``rules="ab"`` (early rules only) or ``rules="cd"`` (late rules only) retunes with part of the constitution.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device
from interplab.generation import generate
from interplab.worlds import chat

MAX_NEW_TOKENS = 40  # a response fits the world's 48-token context after an 8-token prompt
EVAL_SEED = 6060

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


def _train_without_dropout(model) -> None:
    """Tune in eval mode, i.e. with dropout off, as TRL's ``disable_dropout``: the policy must equal the frozen
    reference at step 0 (DPO's loss starts at log 2, RLOO's KL at 0), and real checkpoints ship dropout (GPT-2:
    0.1, which Hugging Face's attention also reads from the module's training flag). Gradients flow either way."""
    model.eval()


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


def check_pair(policy, reference) -> None:
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
    vocabularies = [getattr(getattr(m, "tokenizer", None), "get_vocab", lambda: None)() for m in (policy, reference)]
    if None not in vocabularies and vocabularies[0] != vocabularies[1]:
        differ = sorted(set(vocabularies[0].items()) ^ set(vocabularies[1].items()))[:3]
        raise ValueError(f"the two models' tokenizers map tokens to different ids (e.g. {differ}): the same id would "
                         f"mean different words; tune and compare models of one world and one tokenizer")


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
    _train_without_dropout(model)
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
    check_pair(policy, reference)
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
    _train_without_dropout(policy)
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
# a reward model trained on the judge's preferences (the RLHF of the survey)
# ---------------------------------------------------------------------------------------------

REWARD_HOOK = "ln_final.hook_normalized"


@dataclass
class RewardModel:
    """A copy of a base model with a linear head on its final normalised residual at the response's last token:
    a scalar reward per ``(prompt, response)``, trained on preference pairs (``train_reward_model``)."""

    model: torch.nn.Module
    head: torch.nn.Linear

    def _rewards(self, tokens: Int[torch.Tensor, "batch seq"], last: Int[torch.Tensor, " batch"]
                 ) -> Float[torch.Tensor, " batch"]:
        captured = {}

        def capture(act, hook):
            captured["x"] = act

        device = model_device(self.model)
        width = int(last.max()) + 1
        self.model.run_with_hooks(tokens[:, :width].to(device), fwd_hooks=[(REWARD_HOOK, capture)])
        x = captured["x"][torch.arange(len(tokens), device=device), last.to(device)]
        return self.head(x)[:, 0]

    def score(self, prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]], batch_size: int = 512
              ) -> Float[torch.Tensor, " batch"]:
        """The reward of each response to its prompt (read at the response's last token)."""
        tokens, last = _reward_inputs(prompts, responses)
        with torch.no_grad():
            return torch.cat([self._rewards(tokens[i:i + batch_size], last[i:i + batch_size]).cpu()
                              for i in range(0, len(tokens), batch_size)])


def _reward_inputs(prompts: chat.ChatPrompts, responses: Sequence[Sequence[int]]):
    if len(responses) != len(prompts) or not len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; pass one response per prompt")
    tokens, mask = pack(prompts, responses)
    return tokens, prompts.lengths - 1 + torch.tensor([len(r) for r in responses])


def pairwise_accuracy(reward_model: RewardModel, pairs: PreferencePairs) -> float:
    """Share of pairs whose chosen response the reward model scores above the rejected one (ties count half)."""
    chosen = reward_model.score(pairs.prompts, pairs.chosen)
    rejected = reward_model.score(pairs.prompts, pairs.rejected)
    return round(float((chosen > rejected).float().mean() + 0.5 * (chosen == rejected).float().mean()), 4)


def train_reward_model(base, pairs: PreferencePairs, steps: int = 200, lr: float = 3e-4, batch_size: int = 64,
                       seed: int = 0, progress: bool = True) -> tuple[RewardModel, list[float]]:
    """A reward model learned from the judge's preferences: a copy of ``base`` plus a linear head, trained with
    the Bradley-Terry loss -log sigmoid(r(chosen) - r(rejected)) (AdamW, clip 1.0). Returns the model and the
    loss of every step; score it with ``pairwise_accuracy`` on pairs from held-out prompts. Where the judge is
    the reward (``rloo``) this is RLAIF; a learned reward in its place is the RLHF of the survey, and can be
    wrong where the judge is not."""
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"steps >= 1, lr > 0 and batch_size >= 1 expected; got {steps}, {lr}, {batch_size}")
    same = [i for i, (c, r) in enumerate(zip(pairs.chosen, pairs.rejected)) if list(c) == list(r)]
    if same:
        raise ValueError(f"pairs {same[:5]} have identical chosen and rejected responses: nothing to prefer")
    torch.manual_seed(seed)
    model = copy_model(base)
    head = torch.nn.Linear(model.cfg.d_model, 1).to(model_device(model))
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    reward_model = RewardModel(model, head)
    chosen_tokens, chosen_last = _reward_inputs(pairs.prompts, pairs.chosen)
    rejected_tokens, rejected_last = _reward_inputs(pairs.prompts, pairs.rejected)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=lr, weight_decay=0.0)
    batches = _epoch_batches(len(pairs), batch_size, torch.Generator().manual_seed(seed))
    losses = []
    _train_without_dropout(model)
    bar = tqdm(range(steps), desc="reward model", disable=not progress, mininterval=1.0)
    for step in bar:
        index = next(batches)
        margin = (reward_model._rewards(chosen_tokens[index], chosen_last[index])
                  - reward_model._rewards(rejected_tokens[index], rejected_last[index]))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 1.0)
        optimizer.step()
        losses.append(round(loss.item(), 4))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return reward_model, losses


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
    check_pair(policy, reference)
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
        _train_without_dropout(policy)
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


__all__ = ["EVAL_SEED", "MAX_NEW_TOKENS", "PreferencePairs", "REWARD_HOOK", "RLHistory", "RewardModel", "best_of_n", "check_pair", "copy_model", "dpo", "dpo_loss", "expand", "fine_tune", "held_out_prompts", "judge_model", "judge_responses", "judge_summary", "pack", "pairwise_accuracy", "preference_pairs", "response_logprobs", "rloo", "rloo_advantages", "sample", "sft", "token_logprobs", "train_prompts", "train_reward_model"]
