"""Recipe for ``facts-4l``: a 4-layer transformer that knows (and edits) made-up facts.

The world (``interplab.worlds.facts``) is built so the model stores each
subject's attributes at the subject's last token in an early MLP, which causal
tracing finds and a rank-one edit changes. That storage is fragile: in the
feasibility study 2 of 3 seeds showed it; the shipped seed's tracing map is in
the card and a test re-measures it from the shipped weights.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from interplab.worlds import facts

NAME = "facts-4l"
DESCRIPTION = ("4-layer transformer with MLPs (d_model 64, 4 heads) trained on the facts world; "
               "stores facts at the subject in an early MLP and says 'unknown' for subjects without facts")
DEFAULT_SEED = 0
TRAINING = {"steps": 4000, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "warmup_steps": 200,
            "betas": [0.9, 0.98], "final_lr_fraction": 0.1, "apposition": 0.5}
EVAL_SEED = 4321
TRACE_PROMPTS = 120  # prompts (known subjects, trained templates, p_clean > 0.5) for the card's tracing map
TRACE_SAMPLES = 4  # noise samples per prompt
TRACE_NOISE = 3.0  # noise sd, in units of the std of the subject tokens' embeddings
TRACE_SEED = 7
EDIT_SEED = 11
RECALL_THRESHOLD = 0.98
PARAPHRASE_THRESHOLD = 0.9
MIN_SUBJECT_MLP_PEAK = 0.2  # MLP restoration at the last subject token, best layer: the card's test floor


def model_config(seed: int):
    from transformer_lens import TransformerBridgeConfig

    return TransformerBridgeConfig(
        n_layers=4, d_model=64, n_heads=4, d_head=16, attn_only=False, d_mlp=256, act_fn="gelu",
        d_vocab=facts.D_VOCAB, n_ctx=facts.SEQ_LEN, normalization_type="LN", seed=seed,
        positional_embedding_type="standard", initializer_range=0.02,
    )


def build(seed: int):
    from transformer_lens import TransformerBridge

    return TransformerBridge.boot_native(model_config(seed), tokenizer=facts.tokenizer())


def train(seed: int = DEFAULT_SEED, steps: int | None = None, progress: bool = True,
          apposition: float | None = None):
    """Train from scratch, loss on the object token only; same seed, steps and threads -> same weights.

    The schedule (warm-up, cosine decay to 10%, AdamW betas 0.9/0.98) is the feasibility study's, which
    the storage-at-the-subject result was measured with (``train_next_token``'s default is a constant rate).
    """
    from interplab.zoo.training import provenance, train_from_scratch

    hyper = dict(TRAINING, steps=steps or TRAINING["steps"])
    if apposition is not None:
        hyper["apposition"] = apposition
    def sample(size: int, generator: torch.Generator):
        return facts.sample_training(size, generator, apposition=hyper["apposition"])

    model, result = train_from_scratch(build, sample, hyper, seed, progress, desc=f"{NAME} seed {seed}",
                                       decay="cosine")
    card = {
        "name": NAME, "description": DESCRIPTION, "world": "interplab.worlds.facts", "seed": seed,
        "training": hyper, "metrics": evaluate(model),
        "thresholds": {"recall": RECALL_THRESHOLD, "held_out_paraphrase_accuracy": PARAPHRASE_THRESHOLD,
                       "subject_mlp_peak": MIN_SUBJECT_MLP_PEAK},
        **provenance(result),
    }
    return model, card


# ---------------------------------------------------------------------------------------------
# card metrics, all re-measured from the weights
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def predictions(model, prompts: facts.FactPrompts, batch_size: int = 1024) -> torch.Tensor:
    """Top-1 next token at each prompt's last word."""
    out = []
    for start in range(0, len(prompts), batch_size):
        tokens, last = prompts.tokens[start:start + batch_size], prompts.last[start:start + batch_size]
        logits = model(tokens)
        out.append(logits[torch.arange(tokens.shape[0]), last].argmax(-1))
    return torch.cat(out)


def _object_ids() -> torch.Tensor:
    return facts.OBJECT_IDS.flatten()


@torch.no_grad()
def evaluate_answers(model) -> dict[str, float]:
    """Recall, paraphrase accuracy and the 'unknown' behaviour, over every question of each kind."""
    metrics = {}
    known_train, known_held = facts.all_prompts(facts.KNOWN_SUBJECTS), facts.all_prompts(facts.KNOWN_SUBJECTS, True)
    metrics["recall"] = (predictions(model, known_train) == known_train.answer).float().mean().item()
    metrics["held_out_paraphrase_accuracy"] = (predictions(model, known_held) == known_held.answer).float().mean().item()
    unknown = facts.all_prompts(facts.UNKNOWN_SUBJECTS)
    metrics["unknown_subjects_answered_unknown"] = (predictions(model, unknown) == facts.UNKNOWN_ID).float().mean().item()
    metrics["known_subjects_answered_unknown"] = (predictions(model, known_train) == facts.UNKNOWN_ID).float().mean().item()
    never = predictions(model, facts.all_prompts(facts.NEVER_SEEN_SUBJECTS))
    metrics["never_seen_answered_unknown"] = (never == facts.UNKNOWN_ID).float().mean().item()
    metrics["never_seen_answered_an_object"] = torch.isin(never, _object_ids()).float().mean().item()
    return {k: round(v, 4) for k, v in metrics.items()}


def trace_prompts(model) -> facts.FactPrompts:
    """The card's tracing prompts: known subjects, trained templates, clean answer probability > 0.5."""
    candidates = facts.sample_prompts(3 * TRACE_PROMPTS, seed=TRACE_SEED)
    with torch.no_grad():
        logits = model(candidates.tokens)
    p = logits[torch.arange(len(candidates)), candidates.last].softmax(-1)[torch.arange(len(candidates)), candidates.answer]
    keep = (p > 0.5).nonzero().flatten()[:TRACE_PROMPTS]
    if len(keep) < 10:
        raise ValueError(f"only {len(keep)} of {len(candidates)} questions have a clean answer probability > 0.5: "
                         "this model has not learned the facts, so there is nothing to trace")
    return facts.make_prompts([(candidates.subjects[i], int(candidates.relation[i]),
                                _template_of(candidates, i)) for i in keep.tolist()])


def _template_of(prompts: facts.FactPrompts, i: int) -> facts.Template:
    words = facts.describe(prompts.tokens[i]).split()
    relation = int(prompts.relation[i])
    word = 0 if facts.RELATION_WORDS[relation][0] in words else 1
    return int(prompts.frame[i]), word


def tracing_map(model, components=("resid", "mlp", "attn"), progress: bool = False) -> dict[str, Any]:
    """The card's causal-tracing map: restored fraction per component x layer x position bucket."""
    from interplab import knowledge

    prompts = trace_prompts(model)
    trace = knowledge.causal_trace(model, (prompts.tokens, prompts.last), prompts.subject_mask, prompts.answer,
                                   components=components, noise=TRACE_NOISE, samples=TRACE_SAMPLES,
                                   seed=TRACE_SEED, progress=progress)
    table = trace.bucketed(prompts.position_buckets(), len(facts.BUCKETS))
    out = {"prompts": len(prompts), "p_clean": round(trace.p_clean.mean().item(), 4),
           "p_corrupt": round(trace.p_corrupt.mean().item(), 4), "buckets": list(facts.BUCKETS),
           "noise_sd": round(trace.noise_sd, 4)}
    for c, component in enumerate(components):
        out[component] = [[round(v, 4) for v in row] for row in table[c].tolist()]  # [layer][bucket]
    return out


def subject_mlp_peak(tracing: dict[str, Any]) -> tuple[int, float]:
    """(layer, value) of the largest MLP restoration at the last subject token."""
    column = [row[facts.BUCKETS.index("subject last")] for row in tracing["mlp"]]
    layer = max(range(len(column)), key=column.__getitem__)
    return layer, column[layer]


def evaluate(model) -> dict[str, Any]:
    metrics: dict[str, Any] = evaluate_answers(model)
    try:
        tracing = tracing_map(model)
    except ValueError as error:  # a short test run that has not learned the facts yet
        metrics.update({"tracing": None, "tracing_skipped": str(error)})
        return metrics
    layer, value = subject_mlp_peak(tracing)
    last = [row[facts.BUCKETS.index("last token")] for row in tracing["mlp"]]
    metrics.update({"tracing": tracing, "subject_mlp_peak_layer": layer, "subject_mlp_peak": value,
                    "last_token_mlp_max": max(last)})
    return metrics


# ---------------------------------------------------------------------------------------------
# edits: the world's edit cases, ROME vs fine-tuning
# ---------------------------------------------------------------------------------------------

SUBJECT_FIRST_FRAMES = tuple(i for i, f in enumerate(facts.FRAMES) if f.startswith("{S}"))


def edit_contexts(relation: int) -> list[facts.Template]:
    """Three trained subject-first templates of ``relation``; the first is the one efficacy is measured on."""
    options = [t for t in facts.train_templates(relation) if t[0] in SUBJECT_FIRST_FRAMES and t[1] == 0]
    return options[:3]


def _pack(prompts: facts.FactPrompts) -> tuple[torch.Tensor, torch.Tensor]:
    return prompts.tokens, prompts.last


def edit_cases(n: int, seed: int = EDIT_SEED) -> list[dict[str, Any]]:
    """``n`` edits (subject, relation, new object) with every prompt set the metrics need."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(n):
        s = int(torch.randint(len(facts.KNOWN_SUBJECTS), (1,), generator=generator))
        r = int(torch.randint(len(facts.RELATIONS), (1,), generator=generator))
        shift = int(torch.randint(1, len(facts.OBJECTS[r]), (1,), generator=generator))
        new = facts.OBJECTS[r][(int(facts.FACTS[s, r]) + shift) % len(facts.OBJECTS[r])]
        subject = facts.KNOWN_SUBJECTS[s]
        contexts = edit_contexts(r)
        others = [o for o in torch.randperm(len(facts.KNOWN_SUBJECTS), generator=generator).tolist() if o != s][:30]
        neighbours = [x for x in facts.KNOWN_SUBJECTS if x != subject and set(x.split()) & set(subject.split())][:15]
        other_relations = [q for q in range(len(facts.RELATIONS)) if q != r]
        cases.append({
            "subject": subject, "relation": r, "old": facts.obj(s, r), "new": new,
            "contexts": facts.make_prompts([(subject, r, t) for t in contexts]),
            "efficacy": facts.make_prompts([(subject, r, contexts[0])]),
            "paraphrase": facts.make_prompts([(subject, r, t) for t in facts.held_out_templates(r)]),
            "other_subjects": facts.make_prompts([(facts.KNOWN_SUBJECTS[o], r, contexts[0]) for o in others]
                                                 + [(x, r, contexts[0]) for x in neighbours]),
            # KL during the edit on one template per other relation; measured on the other trained templates
            "preserve": facts.make_prompts([(subject, q, facts.train_templates(q)[0]) for q in other_relations]),
            "same_subject": facts.make_prompts([(subject, q, t) for q in other_relations
                                                for t in facts.train_templates(q)[1:]]),
        })
    return cases


def key_covariance(model, layer: int, sequences: int = 3000) -> torch.Tensor:
    """ROME's key statistics: MLP keys at ``layer`` over every token of ``sequences`` training sequences."""
    from interplab import knowledge

    tokens, _ = facts.sample_training(sequences, torch.Generator().manual_seed(EDIT_SEED))
    return knowledge.mlp_key_covariance(model, layer, tokens, mask=tokens != facts.PAD_ID)


def run_edits(model, cases: list[dict[str, Any]], layer: int, method: str = "rome",
              covariance: torch.Tensor | None = None, progress: bool = True, **options) -> dict[str, float]:
    """Mean edit metrics over ``cases``, each edit applied alone; ``method`` is "rome" or "finetune";
    ``options`` go to ``knowledge.rome_edit`` / ``knowledge.finetune_edit`` (steps, lr, ...)."""
    from interplab import knowledge

    if method == "rome" and covariance is None:
        covariance = key_covariance(model, layer)
    totals: dict[str, float] = {}
    steps = 0
    for case in tqdm(cases, desc=f"{method} edits", disable=not progress):
        if method == "rome":
            edit = knowledge.rome_edit(model, _pack(case["contexts"]), case["subject"], case["new"], layer, covariance,
                                       preserve_prompts=_pack(case["preserve"]), **options)
        elif method == "finetune":
            edit = knowledge.finetune_edit(model, _pack(case["contexts"]), case["new"], layer, **options)
        else:
            raise ValueError(f"unknown edit method {method!r}; choose 'rome' or 'finetune'")
        steps += edit.info["steps"]
        scores = knowledge.edit_metrics(model, edit, case["new"], _pack(case["efficacy"]), _pack(case["paraphrase"]),
                                        _pack(case["other_subjects"]), _pack(case["same_subject"]))
        for key, value in scores.items():
            totals[key] = totals.get(key, 0.0) + value
    out = {key: round(value / len(cases), 4) for key, value in totals.items()}
    out["mean_steps"] = round(steps / len(cases), 1)
    out["edits"] = len(cases)
    return out


EDITS = 50  # edits the card's ROME and fine-tuning rows average over (each applied alone)


def edit_layer(card_or_metrics: dict[str, Any]) -> int:
    """The layer edits target: where the MLP tracing peak at the last subject token is."""
    metrics = card_or_metrics.get("metrics", card_or_metrics)
    return int(metrics["subject_mlp_peak_layer"])


def rome_options() -> dict[str, float]:
    """``knowledge.rome_edit``'s optimisation defaults, recorded on the card beside the numbers they gave."""
    import inspect

    from interplab import knowledge

    keep = ("steps", "lr", "kl_weight", "l2_weight", "stop_probability", "ridge", "relax_every")
    return {k: p.default for k, p in inspect.signature(knowledge.rome_edit).parameters.items() if k in keep}


def ground_truth(model, n_edits: int = EDITS, progress: bool = True) -> dict[str, Any]:
    """The world's facts and subject sets, plus ROME vs fine-tuning over ``n_edits`` edits at the peak layer."""
    truth = {
        "ground_truth": {
            "facts": {s: {rel: facts.obj(i, r) for r, rel in enumerate(facts.RELATIONS)}
                      for i, s in enumerate(facts.KNOWN_SUBJECTS)},
            "unknown_subjects": list(facts.UNKNOWN_SUBJECTS),
            "never_seen_subjects": list(facts.NEVER_SEEN_SUBJECTS),
            "held_out_frames": {rel: [facts.FRAMES[f] for f in facts.held_out_frames(r)]
                                for r, rel in enumerate(facts.RELATIONS)},
        }}
    try:
        layer, _ = subject_mlp_peak(tracing_map(model, components=("mlp",)))
    except ValueError as error:
        return {**truth, "edits": {"skipped": str(error)}}
    cases = edit_cases(n_edits)
    rome = run_edits(model, cases, layer, "rome", progress=progress)
    finetune = run_edits(model, cases, layer, "finetune", progress=progress)
    return {
        **truth,
        "edits": {"layer": layer, "seed": EDIT_SEED, "rome": rome, "finetune": finetune,
                  "rome_options": rome_options(),
                  "method": "each edit alone on the shipped weights; contexts: 3 trained subject-first templates "
                            "(efficacy on the first); paraphrase: the 4 held-out templates; other subjects: 30 "
                            "random + up to 15 sharing a syllable, same template, top-1 unchanged; same subject: "
                            "the other 7 relations' trained templates except the one ROME's KL term sees"},
    }


def _table(tracing: dict[str, Any]) -> str:
    layers = len(tracing["mlp"])
    header = "| bucket | " + " | ".join(f"{c} L{l}" for c in ("resid", "mlp", "attn") if c in tracing
                                        for l in range(layers)) + " |"
    rule = "|---" * (1 + header.count("|") - 2) + "|"
    rows = []
    for b, bucket in enumerate(tracing["buckets"]):
        cells = [f"{tracing[c][l][b]:.2f}" for c in ("resid", "mlp", "attn") if c in tracing for l in range(layers)]
        rows.append(f"| {bucket} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule] + rows)


def loss_floor(apposition: float) -> float:
    """The lowest reachable training loss: appositions of known subjects leave the relation (1 of 8) open."""
    return apposition * len(facts.KNOWN_SUBJECTS) / len(facts.TRAINING_SUBJECTS) * math.log(len(facts.RELATIONS))


def card_markdown(card: dict[str, Any]) -> str:
    from interplab.zoo.training import reproducibility_markdown

    m = card["metrics"]
    t = m["tracing"]
    edits = card.get("edits")
    tracing_md = (f"## Where the facts are: causal tracing\n{m.get('tracing_skipped', '')}\n" if t is None
                  else _tracing_markdown(card))
    edits_md = ""
    if edits and "rome" in edits:
        r, f = edits["rome"], edits["finetune"]
        edits_md = f"""
## Editing a fact ({r['edits']} edits, each alone, at MLP layer {edits['layer']})
| method | efficacy | held-out paraphrase | other subjects unchanged | same subject's other relations unchanged | mean optimisation steps |
|---|---|---|---|---|---|
| ROME (rank-one, KL on the subject's other facts) | {r['efficacy']:.3f} | {r['paraphrase']:.3f} | {r['other_subjects_unchanged']:.3f} | {r['same_subject_unchanged']:.3f} | {r['mean_steps']} |
| fine-tuning the same MLP | {f['efficacy']:.3f} | {f['paraphrase']:.3f} | {f['other_subjects_unchanged']:.3f} | {f['same_subject_unchanged']:.3f} | {f['mean_steps']} |

Method: {edits['method']}. ROME settings (`knowledge.rome_edit`): {_settings(edits.get('rome_options', {}))}.
Reproduce with `python benchmarks/knowledge.py`.
"""
    return f"""# {card['name']}

{card['description']}.

## World
`interplab.worlds.facts`: {facts.N_KNOWN} known subjects (two-syllable names such as "{facts.KNOWN_SUBJECTS[0]}"),
{len(facts.RELATIONS)} relations ({", ".join(facts.RELATIONS)}) with 2 relation words and 10 objects each;
{len(facts.FRAMES)} subject-first frames, 2 per relation held out ("{facts.prompt_text(facts.KNOWN_SUBJECTS[0], 0, (0, 0))}" -> {facts.obj(0, 0)}).
{card['training']['apposition']:.0%} of training sequences are appositions (`<bos> S O R .`), which make the
loss at the subject need its attributes. {facts.N_UNKNOWN} further training subjects have no facts and are
answered `unknown`; {facts.N_NEVER_SEEN} names are never seen in training. The facts table and subject
sets are in `card.json` under `ground_truth`.

## Training
`python -m interplab.zoo train {card['name']} --seed {card['seed']}`: AdamW (betas {card['training']['betas']}),
lr {card['training']['lr']}, {card['training']['warmup_steps']} warm-up steps, cosine decay to
{card['training']['final_lr_fraction']}x, batch {card['training']['batch_size']}, {card['training']['steps']} steps,
loss on the object token only. Took {card['train_seconds']} s on {card['torch_threads']} CPU thread(s)
({card['trained_with']}). Final loss {card['final_loss']}: an apposition about a known subject cannot know
which of the 8 relations follows, so the loss cannot go below {loss_floor(card['training']['apposition']):.2f}
(apposition share x known share x ln 8) even when every fact is recalled.

## Metrics
- recall on trained templates: **{m['recall']:.3f}**; held-out paraphrases: **{m['held_out_paraphrase_accuracy']:.3f}**
- unknown training subjects answered `unknown`: {m['unknown_subjects_answered_unknown']:.3f};
  known subjects answered `unknown`: {m['known_subjects_answered_unknown']:.3f}
- never-seen names answered `unknown`: **{m['never_seen_answered_unknown']:.3f}**; answered with a made-up object:
  {m['never_seen_answered_an_object']:.3f}

{tracing_md}
{edits_md}{reproducibility_markdown(card)}"""


def _settings(options: dict[str, Any]) -> str:
    """Sorted, so the card reads the same from a fresh run and from card.json (saved with sorted keys)."""
    return ", ".join(f"{key}={value}" for key, value in sorted(options.items()))


def _tracing_markdown(card: dict[str, Any]) -> str:
    m = card["metrics"]
    t = m["tracing"]
    return f"""## Where the facts are: causal tracing
{t['prompts']} prompts (known subjects, trained templates, clean p > 0.5), noise sd {TRACE_NOISE} x the
subject embeddings' std on both subject tokens, {TRACE_SAMPLES} samples; p_clean {t['p_clean']:.2f},
p_corrupt {t['p_corrupt']:.2f}. Each cell restores one component at one layer and position bucket:
(p_restored - p_corrupt) / (p_clean - p_corrupt).

{_table(t)}

**MLP peak at the last subject token: layer {m['subject_mlp_peak_layer']}, {m['subject_mlp_peak']:.2f}**
(largest final-token MLP restoration: {m['last_token_mlp_max']:.2f}).

Fragility: this storage at the subject depends on the apposition fraction and the seed. In the feasibility
study (without unknown subjects) 2 of 3 seeds at 50% apposition put the peak at the subject (0.45, 0.38)
and one did not (0.06); 30% and 80% apposition never did. {_seed_runs(card)}A test re-measures this peak
from the shipped weights.
"""


def _seed_runs(card: dict[str, Any]) -> str:
    runs = card.get("seed_runs")
    if not runs:
        return ""
    listed = "; ".join(f"seed {r['seed']}: MLP peak {r['subject_mlp_peak']:.2f} at layer {r['subject_mlp_peak_layer']}, "
                       f"recall {r['recall']:.3f}" for r in runs)
    return f"With this world (unknown subjects included), same recipe: {listed}. "

