"""Checkers for chapter 03 (lenses, probes and where knowledge lives).

Each ``test_*`` runs the learner's function and a reference on inputs drawn at check time: the
shipped ``facts-4l`` on fresh prompts, a random model (GPT-2 family, 3 layers, d_model 48, random
LayerNorm weights) built once per kernel from a seed drawn then, and random tensors. An answer
replayed from an earlier run, or one that hard-codes the shipped model's sizes, fails. When an
answer matches a common mistake (no final LayerNorm, the KL the wrong way round, a control label
per example instead of per subject, an unnormalised direction, every position restored, the plain
``k / |k|^2`` update without the key covariance, ties counted wrong) the message says which.
``check_storage_site`` compares the learner's stated storage site with the card's tracing map.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from interplab import lenses, probes
from interplab.checks._core import (CheckFailed, call_learner, compare_outputs, compare_with_lazy_variants,
                                    fresh_random_model, fresh_seed, passed, shipped_model)
from interplab.worlds import facts

MODEL = "facts-4l"


@lru_cache(maxsize=1)
def _random_model_and_seed():
    seed = fresh_seed()
    return fresh_random_model(seed), seed


def _fresh_prompts(seed: int, n: int = 6) -> facts.FactPrompts:
    return facts.sample_prompts(n, seed=seed)


# ---------------------------------------------------------------- 1. the logit lens

def reference_logit_lens_decode(model, resid: torch.Tensor) -> torch.Tensor:
    return lenses.decode_residual(model, resid)


def test_logit_lens_decode(logit_lens_decode: Callable) -> None:
    """``logit_lens_decode(model, resid [..., d_model]) -> logits [..., d_vocab]``: the final norm, then the unembedding."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    random_model, model_seed = _random_model_and_seed()
    settings = [(shipped_model(MODEL), f"{MODEL}"), (random_model, f"a random 3-layer model (seed {model_seed})")]
    n_cases = 0
    for model, where in settings:
        d = model.cfg.d_model
        for shape in ((5, d), (2, 3, d)):
            resid = torch.randn(*shape, generator=generator) * 4 + torch.randn(d, generator=generator)
            case = f"{where}: random residuals of shape {shape} (seed {seed})"
            with torch.no_grad():
                got = call_learner(logit_lens_decode, model, resid, case=case)
                expected = reference_logit_lens_decode(model, resid)

            def variants(model=model, resid=resid):
                flat = resid.reshape(-1, 1, resid.shape[-1])
                raw = model.unembed(flat).reshape(*resid.shape[:-1], -1).cpu()
                return {"the unembedding without the final LayerNorm (ln_final) first": raw,
                        "a softmax: return logits, not probabilities": expected.softmax(-1),
                        "log-probabilities: return logits, not log_softmax": expected.log_softmax(-1)}

            if isinstance(got, torch.Tensor):
                got = got.detach().cpu()
            compare_with_lazy_variants(got, expected.detach().cpu(), case, variants, atol=1e-3, rtol=1e-3)
            n_cases += 1
    passed("test_logit_lens_decode", n_cases)


def reference_lens_accuracy(lens_logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    return (lens_logits.argmax(-1) == answers[None]).float().mean(-1)


def test_lens_accuracy(lens_accuracy: Callable) -> None:
    """``lens_accuracy(lens_logits [layer, batch, vocab], answers [batch]) -> [layer]``: top-1 accuracy per layer."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for layers, batch, vocab in ((5, 12, 30), (3, 7, 9), (2, 40, 5)):
        logits = torch.randn(layers, batch, vocab, generator=generator)
        answers = torch.randint(vocab, (batch,), generator=generator)
        logits[-1, torch.arange(batch), answers] += 5  # the last layer mostly right, earlier ones by chance
        cases.append((logits, answers, f"random lens logits {layers} x {batch} x {vocab} (seed {seed})"))
    for logits, answers, case in cases:
        got = call_learner(lens_accuracy, logits, answers, case=case)
        expected = reference_lens_accuracy(logits, answers)

        def variants(logits=logits, answers=answers):
            return {"accuracy per prompt (averaged over layers), not per layer":
                        (logits.argmax(-1) == answers[None]).float().mean(0),
                    "the argmax over the wrong axis": (logits.argmax(1) == answers[:1, None]).float().mean(-1)
                    if logits.shape[1] == logits.shape[2] else torch.full((1,), -1.0)}
        if isinstance(got, torch.Tensor):
            got = got.float()
        compare_with_lazy_variants(got, expected, case, variants, dims=("layer",))
    passed("test_lens_accuracy", len(cases))


# ---------------------------------------------------------------- 2. the tuned lens

def reference_kl_to_final(lens_logits: torch.Tensor) -> torch.Tensor:
    final = lens_logits[-1].log_softmax(-1)
    return (final.exp() * (final - lens_logits.log_softmax(-1))).sum(-1).mean(-1)


def test_kl_to_final(kl_to_final: Callable) -> None:
    """``kl_to_final(lens_logits [layer, n, vocab]) -> [layer]``: KL(final || lens) in nats, mean over the n tokens;
    the final distribution is the last layer's."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for layers, n, vocab in ((5, 16, 23), (3, 4, 7), (6, 9, 50)):
        logits = torch.randn(layers, n, vocab, generator=generator) * torch.linspace(0.5, 3, layers)[:, None, None]
        cases.append((logits, f"random lens logits {layers} x {n} x {vocab} (seed {seed})"))
    for logits, case in cases:
        got = call_learner(kl_to_final, logits, case=case)
        expected = reference_kl_to_final(logits)

        def variants(logits=logits):
            final = logits[-1].log_softmax(-1)
            lens_logp = logits.log_softmax(-1)
            return {"KL(lens || final): the KL the wrong way round (the tuned lens minimises KL(final || lens))":
                        (lens_logp.exp() * (lens_logp - final)).sum(-1).mean(-1),
                    "a sum over tokens where the mean belongs": (final.exp() * (final - lens_logp)).sum(-1).sum(-1),
                    "the cross-entropy H(final, lens), without subtracting the final entropy":
                        -(final.exp() * lens_logp).sum(-1).mean(-1),
                    "KL on raw logits: apply log_softmax first": (logits[-1].softmax(-1) * (logits[-1] - logits)).sum(-1).mean(-1)}
        if isinstance(got, torch.Tensor):
            got = got.float()
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-4, dims=("layer",))
    passed("test_kl_to_final", len(cases))


# ---------------------------------------------------------------- 3. probes

def reference_control_labels(subjects: list[str], labels: torch.Tensor, seed: int) -> torch.Tensor:
    return probes.control_task_labels(subjects, labels, seed)


def test_control_labels(control_labels: Callable) -> None:
    """``control_labels(subjects, labels, seed) -> [n]``: Hewitt & Liang's control task. Every subject gets one random
    label, shared by all its examples; over subjects the labels keep the real labels' distribution."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    n_cases = 0
    for n_subjects, repeats, n_classes in ((30, 4, 5), (12, 3, 3), (50, 2, 10)):
        names = [f"s{i}" for i in range(n_subjects)]
        per_subject = torch.randint(n_classes, (n_subjects,), generator=generator)
        order = torch.randperm(n_subjects * repeats, generator=generator)
        subjects = [names[i % n_subjects] for i in order.tolist()]
        labels = torch.tensor([int(per_subject[i % n_subjects]) for i in order.tolist()])
        case = f"{n_subjects} random subjects x {repeats} examples each, {n_classes} classes (seed {seed})"
        outputs = []
        for draw in (seed % 1000, seed % 1000 + 1):
            got = call_learner(control_labels, subjects, labels, draw, case=case)
            got = torch.as_tensor(got).long().flatten()
            if got.shape != labels.shape:
                raise CheckFailed(f"{case}: return one control label per example ({labels.shape[0]}), got shape "
                                  f"{tuple(got.shape)}")
            by_subject: dict[str, set] = {}
            for s, value in zip(subjects, got.tolist()):
                by_subject.setdefault(s, set()).add(value)
            split = [s for s, values in by_subject.items() if len(values) > 1]
            if split:
                raise CheckFailed(f"{case}: subject {split[0]!r} got different control labels "
                                  f"{sorted(by_subject[split[0]])} in different examples: a control task gives each "
                                  "*type* (subject) one random label, so a probe can only score by memorising subjects")
            real_counts = torch.bincount(per_subject, minlength=n_classes)
            got_counts = torch.bincount(torch.tensor([next(iter(by_subject[s])) for s in names]).clamp(min=0),
                                        minlength=n_classes)
            if not set(got.tolist()) <= set(range(n_classes)):
                raise CheckFailed(f"{case}: control labels must come from the real label values 0..{n_classes - 1}, "
                                  f"got {sorted(set(got.tolist()))}")
            if not torch.equal(real_counts, got_counts[:n_classes]):
                raise CheckFailed(f"{case}: over subjects, the control labels should have the real labels' counts "
                                  f"{real_counts.tolist()}, got {got_counts.tolist()}: shuffle which subject gets "
                                  "which label (a permutation of the subjects' real labels)")
            if torch.equal(got, labels):
                raise CheckFailed(f"{case}: the control labels equal the real labels: shuffle them across subjects")
            outputs.append(got)
            n_cases += 1
        if torch.equal(outputs[0], outputs[1]):
            raise CheckFailed(f"{case}: seeds {seed % 1000} and {seed % 1000 + 1} gave the same control labels: "
                              "draw the shuffle from the seed (torch.Generator().manual_seed(seed))")
    passed("test_control_labels", n_cases)


def reference_project_out(acts: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    unit = direction / direction.norm()
    return acts - (acts @ unit)[..., None] * unit


def test_project_out(project_out: Callable) -> None:
    """``project_out(acts [..., d], direction [d]) -> [..., d]``: remove the component along ``direction`` (any length)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, scale in (((6, 8), 3.0), ((2, 5, 16), 0.2), ((4, 64), 1.0)):
        acts = torch.randn(*shape, generator=generator)
        direction = torch.randn(shape[-1], generator=generator) * scale
        cases.append((acts, direction, f"random activations {shape}, a direction of norm {direction.norm():.2f} (seed {seed})"))
    for acts, direction, case in cases:
        got = call_learner(project_out, acts.clone(), direction.clone(), case=case)
        expected = reference_project_out(acts, direction)

        def variants(acts=acts, direction=direction):
            return {"the direction used without normalising it to unit length":
                        acts - (acts @ direction)[..., None] * direction,
                    "only the component along the direction kept (that is what to remove)":
                        (acts @ (direction / direction.norm()))[..., None] * direction / direction.norm(),
                    "the activations unchanged": acts}
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-4, dims=None)
    passed("test_project_out", len(cases))


# ---------------------------------------------------------------- 4. causal tracing

def _answer_prob(logits: torch.Tensor, answer_pos: torch.Tensor, answers: torch.Tensor) -> float:
    rows = torch.arange(logits.shape[0])
    return logits[rows, answer_pos].softmax(-1)[rows, answers].mean().item()


def _restored(model, tokens, answer_pos, answers, noise, hook_name: str, pos, clean_from=None) -> float:
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name == hook_name)

    def restore(act, hook):
        act = act.clone()
        act[:, pos] = cache[hook_name][:, pos]
        return act

    hooks = [("hook_embed", lambda act, hook: act + noise), (hook_name, restore)]
    return _answer_prob(model.run_with_hooks(tokens, fwd_hooks=hooks), answer_pos, answers)


def reference_restore_one(model, tokens, answer_pos, answers, noise, hook_name: str, pos: int) -> float:
    with torch.no_grad():
        return _restored(model, tokens, answer_pos, answers, noise, hook_name, pos)


def test_restore_one(restore_one: Callable) -> None:
    """``restore_one(model, tokens, answer_pos, answers, noise, hook_name, pos) -> float``: the answer's mean probability
    when ``noise`` is added to the token embeddings (``hook_embed``) and ``hook_name`` is restored to its clean value
    at position ``pos`` (every prompt)."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    random_model, model_seed = _random_model_and_seed()
    shipped = shipped_model(MODEL)
    prompts = _fresh_prompts(seed)
    settings = []
    embed_sd = shipped.W_E.std().item()
    noise = torch.randn(*prompts.tokens.shape, shipped.cfg.d_model, generator=generator) * 3 * embed_sd
    noise = noise * prompts.subject_mask[..., None]
    settings.append((shipped, prompts.tokens, prompts.last, prompts.answer, noise, prompts.subject_last,
                     f"{MODEL} on 6 fresh prompts (seed {seed})"))
    batch, seq = 4, 8
    tokens = torch.randint(random_model.cfg.d_vocab, (batch, seq), generator=generator)
    noise = torch.zeros(batch, seq, random_model.cfg.d_model)
    noise[:, 1:3] = torch.randn(batch, 2, random_model.cfg.d_model, generator=generator) * 2
    answer_pos = torch.randint(4, seq, (batch,), generator=generator)
    settings.append((random_model, tokens, answer_pos, torch.randint(random_model.cfg.d_vocab, (batch,), generator=generator),
                     noise, torch.full((batch,), 2), f"a random model (seed {model_seed}) on random tokens (seed {seed})"))
    n_cases = 0
    for model, tokens, answer_pos, answers, noise, subject_last, where in settings:
        for layer, component in ((0, "mlp"), (1, "attn"), (model.cfg.n_layers - 2, "mlp")):
            hook_name = f"blocks.{layer}.hook_{component}_out"
            pos = int(subject_last[0])
            case = f"{where}: {hook_name} at position {pos}"
            with torch.no_grad():
                got = call_learner(restore_one, model, tokens, answer_pos, answers, noise, hook_name, pos, case=case)
            if isinstance(got, torch.Tensor):
                got = got.item()

            def variants(model=model, tokens=tokens, answer_pos=answer_pos, answers=answers, noise=noise,
                         hook_name=hook_name, pos=pos):
                with torch.no_grad():
                    corrupted = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda act, hook: act + noise)])
                    last = torch.full_like(answer_pos, tokens.shape[1] - 1)
                    return {"the corrupted run without a restoration: did the hook return the restored tensor?":
                                _answer_prob(corrupted, answer_pos, answers),
                            "the clean run: is the noise added at hook_embed in the restored run?":
                                _answer_prob(model(tokens), answer_pos, answers),
                            "every position restored, not only `pos`":
                                _restored(model, tokens, answer_pos, answers, noise, hook_name, slice(None)),
                            "the probability read at the last token, not at each prompt's answer_pos":
                                _restored(model, tokens, last, answers, noise, hook_name, pos),
                            "the restoration at the position before `pos` (off by one)":
                                _restored(model, tokens, answer_pos, answers, noise, hook_name, pos - 1)}

            compare_with_lazy_variants(got, reference_restore_one(model, tokens, answer_pos, answers, noise, hook_name, pos), case,
                     variants, atol=1e-4)
            n_cases += 1
    passed("test_restore_one", n_cases)


# ---------------------------------------------------------------- 5. the rank-one edit

def reference_rank_one_update(k_star: torch.Tensor, delta: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    solved = torch.linalg.solve(covariance, k_star)
    return torch.outer(delta, solved / (k_star @ solved))


def test_rank_one_update(rank_one_update: Callable) -> None:
    """``rank_one_update(k_star [d_mlp], delta [d_model], covariance [d_mlp, d_mlp]) -> [d_model, d_mlp]``: the
    ROME update ``delta (C^-1 k*)^T / (k*^T C^-1 k*)``, so ``(W + update) k* = W k* + delta``."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for d_model, d_mlp in ((8, 20), (16, 12), (5, 5)):
        basis = torch.randn(d_mlp, d_mlp, generator=generator, dtype=torch.float64)
        covariance = basis @ basis.T / d_mlp + 0.1 * torch.eye(d_mlp, dtype=torch.float64)
        k_star = torch.randn(d_mlp, generator=generator, dtype=torch.float64)
        delta = torch.randn(d_model, generator=generator, dtype=torch.float64)
        cases.append((k_star, delta, covariance, f"d_model {d_model}, d_mlp {d_mlp}, random key, delta and covariance "
                                                 f"(seed {seed})"))
    for k_star, delta, covariance, case in cases:
        got = call_learner(rank_one_update, k_star.clone(), delta.clone(), covariance.clone(), case=case)
        expected = reference_rank_one_update(k_star, delta, covariance)
        def variants(k_star=k_star, delta=delta, covariance=covariance):
            return {"the plain update delta k*^T / |k*|^2, without the key covariance C^-1 (it moves every key that "
                    "overlaps k*, not only the subject's)": torch.outer(delta, k_star / (k_star @ k_star)),
                    "the covariance multiplied where its inverse belongs (C k*, not C^-1 k*)":
                        torch.outer(delta, covariance @ k_star / (k_star @ covariance @ k_star)),
                    "no normalisation by k*^T C^-1 k*: the edited key would not land on W k* + delta":
                        torch.outer(delta, torch.linalg.solve(covariance, k_star))}
        if isinstance(got, torch.Tensor):
            got = got.double()
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-6, rtol=1e-4, dims=("d_model", "d_mlp"))
    passed("test_rank_one_update", len(cases))


# ---------------------------------------------------------------- 6. knowing what you don't know

def reference_next_token_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def test_next_token_entropy(next_token_entropy: Callable) -> None:
    """``next_token_entropy(logits [n, vocab]) -> [n]``: the entropy of each softmax distribution, in nats."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, vocab, scale in ((6, 10, 1.0), (3, 50, 8.0), (5, 4, 40.0)):
        logits = torch.randn(n, vocab, generator=generator) * scale
        cases.append((logits, f"random logits {n} x {vocab}, scale {scale} (seed {seed})"))
    for logits, case in cases:
        got = call_learner(next_token_entropy, logits.clone(), case=case)
        expected = reference_next_token_entropy(logits)

        def variants(logits=logits):
            p = logits.softmax(-1)
            return {"entropy in bits (log2): use natural logs, nats": expected / torch.log(torch.tensor(2.0)),
                    "the entropy of the raw logits, not of the softmax": -(logits * logits.clamp(min=1e-9).log()).sum(-1),
                    "the negative entropy (a sign flipped)": -expected,
                    "the mean over the batch, not one value per row": expected.mean().expand(len(expected)),
                    "the sum of p log p without the minus sign": (p * logits.log_softmax(-1)).sum(-1),
                    "the softmax taken over the batch axis (dim 0), not over the vocabulary (dim -1)":
                        -(logits.softmax(0) * logits.log_softmax(0)).sum(-1)}
        if isinstance(got, torch.Tensor):
            got = got.float()
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-4, dims=("row",))
    passed("test_next_token_entropy", len(cases))


def reference_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return probes.auroc(scores, labels)


def _auroc_ties_zero(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return (pos[:, None] > neg[None]).double().mean().item()


def test_auroc(auroc: Callable) -> None:
    """``auroc(scores [n], labels [n] of 0/1) -> float``: the chance that a random positive scores above a random
    negative, ties counting one half."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    labels = torch.tensor([1, 0, 1, 0, 1, 1, 0, 0])
    cases.append((torch.tensor([0.9, 0.1, 0.8, 0.3, 0.7, 0.6, 0.2, 0.4]), labels, "perfectly separated scores"))
    cases.append((torch.tensor([1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 2.0]), labels, "scores with ties"))
    for n in (40, 15):
        labels = (torch.rand(n, generator=generator) < 0.4).long()
        labels[0], labels[1] = 0, 1
        scores = (torch.randint(5, (n,), generator=generator) + labels).float()
        cases.append((scores, labels, f"{n} random integer scores with many ties (seed {seed})"))
    for scores, labels, case in cases:
        got = call_learner(auroc, scores.clone(), labels.clone(), case=case)
        if isinstance(got, torch.Tensor):
            got = got.item()
        expected = reference_auroc(scores, labels)
        variants = {"ties counted as losses: a tie between a positive and a negative counts one half":
                        _auroc_ties_zero(scores, labels),
                    "1 - AUROC: the labels or the scores reversed": 1 - expected,
                    "accuracy at threshold 0.5, not the area under the ROC curve":
                        ((scores > 0.5).long() == labels).double().mean().item()}
        variants = {k: v for k, v in variants.items() if abs(v - expected) > 1e-9}
        compare_outputs(float(got), float(expected), case, atol=1e-6, variants=variants)
    passed("test_auroc", len(cases))


def reference_steering_hook(direction: torch.Tensor, alpha: float, positions: torch.Tensor) -> Callable:
    return probes.steer_hook(direction, alpha, positions)


def test_steering_hook(steering_hook: Callable) -> None:
    """``steering_hook(direction [d], alpha, positions [batch]) -> hook``: a hook function that adds
    ``alpha * direction`` (as given) to the activation at each prompt's own position, and nowhere else."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    shipped = shipped_model(MODEL)
    prompts = _fresh_prompts(seed)
    n_cases = 0
    for layer, alpha in ((0, 6.0), (2, -3.5)):
        direction = torch.randn(shipped.cfg.d_model, generator=generator)
        hook_name = f"blocks.{layer}.hook_resid_post"
        case = f"{MODEL}, {hook_name}, alpha {alpha}, at each of 6 fresh prompts' last subject token (seed {seed})"
        hook = call_learner(steering_hook, direction.clone(), alpha, prompts.subject_last.clone(), case=case)
        if not callable(hook):
            raise CheckFailed(f"{case}: return a hook function hook(act, hook) -> act, got {type(hook).__name__}")
        with torch.no_grad():
            got = call_learner(shipped.run_with_hooks, prompts.tokens, fwd_hooks=[(hook_name, hook)], case=case)
            expected = shipped.run_with_hooks(prompts.tokens, fwd_hooks=[(hook_name, reference_steering_hook(
                direction, alpha, prompts.subject_last))])

        def variants(direction=direction, alpha=alpha, hook_name=hook_name):
            with torch.no_grad():
                unit = direction / direction.norm()
                return {"the direction added at every position, not only at each prompt's own position":
                            shipped.run_with_hooks(prompts.tokens, fwd_hooks=[(hook_name, probes.steer_hook(direction, alpha))]),
                        "the direction normalised to unit length: add alpha * direction as given":
                            shipped.run_with_hooks(prompts.tokens, fwd_hooks=[(hook_name, probes.steer_hook(
                                unit, alpha, prompts.subject_last))]),
                        "the model unchanged: does the hook return the steered activation?": shipped(prompts.tokens),
                        "the first prompt's position used for every prompt":
                            shipped.run_with_hooks(prompts.tokens, fwd_hooks=[(hook_name, probes.steer_hook(
                                direction, alpha, int(prompts.subject_last[0])))])}
        compare_with_lazy_variants(got, expected, case, variants, atol=1e-3, rtol=1e-3, dims=("prompt", "position", "vocab"))
        n_cases += 1
    passed("test_steering_hook", n_cases)


# ---------------------------------------------------------------- the result, against the card

def card_storage_site(model_name: str = MODEL) -> dict:
    """Where the card's tracing map puts the facts: the (layer, position bucket) of the largest MLP restoration."""
    from interplab.zoo import model_card

    tracing = model_card(model_name)["metrics"]["tracing"]
    best = max(((layer, bucket) for layer in range(len(tracing["mlp"])) for bucket in range(len(tracing["buckets"]))),
               key=lambda lb: tracing["mlp"][lb[0]][lb[1]])
    return {"component": "mlp", "layer": best[0], "position": tracing["buckets"][best[1]],
            "value": tracing["mlp"][best[0]][best[1]], "n_layers": len(tracing["mlp"])}


def check_storage_site(finding: dict, model_name: str = MODEL) -> None:
    """``finding = {"component": "mlp" | "attn" | "resid", "layer": int, "position": one of facts.BUCKETS}``: where
    you traced the facts to be written. Compared with the card's MLP tracing peak."""
    if not isinstance(finding, dict):
        raise CheckFailed(f"give your finding as a dict with keys 'component', 'layer' and 'position', got "
                          f"{type(finding).__name__}")
    missing = [k for k in ("component", "layer", "position") if k not in finding]
    if missing:
        raise CheckFailed(f"your finding lacks {missing}: say which component writes the fact, at which layer, at "
                          f"which position (one of {list(facts.BUCKETS)})")
    truth = card_storage_site(model_name)
    problems = []
    if str(finding["component"]) != truth["component"]:
        problems.append(f"component {finding['component']!r}: the residual stream and attention *carry* the fact "
                        "(their restoration is high wherever it passes); which component *writes* it?")
    if str(finding["position"]) not in facts.BUCKETS:
        problems.append(f"position {finding['position']!r} is not one of {list(facts.BUCKETS)}")
    elif str(finding["position"]) != truth["position"]:
        problems.append(f"position {finding['position']!r}: look at the MLP map's column with the largest value")
    try:
        layer = int(finding["layer"])
    except (TypeError, ValueError):
        layer = None
        problems.append(f"layer {finding['layer']!r} is not a layer index")
    if layer is not None and layer != truth["layer"]:
        problems.append(f"layer {layer}: not where the MLP restoration peaks (the card's map has {truth['n_layers']} "
                        "layers, 0 first)")
    if problems:
        raise CheckFailed("your storage site differs from the card's tracing map:\n  " + "\n  ".join(problems))
    print(f"✔ check_storage_site passed: the {truth['component']} of layer {truth['layer']} at the "
          f"'{truth['position']}' token (card: restores {truth['value']:.2f} of the answer's probability on its own)")
