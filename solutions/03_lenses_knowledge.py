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
# # 03 — Lenses, probes and where knowledge lives
#
# A model that knows facts can be asked three alignment questions. **Monitoring:** can we read what it is
# about to say, or what it knows, from its activations before it says it? **Editing:** if a fact is wrong
# (or dangerous), can we change that one fact and nothing else? **Honesty:** does the model know when it
# does not know, and can we tell when it is making something up? Interpretability research on large models
# found that facts sit in early-to-middle MLPs at the subject's last token (Meng et al. 2022), that those
# MLPs can be edited with a rank-one change (ROME), and that models carry a linear "do I know this entity?"
# direction (Ferrando et al. 2024). This chapter tests each claim by hand, on a model whose facts we wrote
# ourselves, so every answer can be checked against the truth.
#
# The model is `facts-4l`: 4 layers with MLPs, d_model 64, trained on a made-up world of people with
# attributes: "so mo 's city is" → **lima**. 100 *known* people have one object for each of 8 relations
# (city, job, sport, colour, employer, pet, food, language); 60 *unknown* people are in the training data
# with every question answered `unknown`; 100 further names are never seen at all. Two of the 7 question
# frames of each relation are held out of training (paraphrases).
#
# Plan: (1) the logit lens, (2) the tuned lens, (3) linear probes and whether the model uses what they
# read, (4) causal tracing: where the facts are written, (5) editing one fact, (6) knowing what you don't
# know. Everything runs offline on a laptop CPU in about a minute.
#
# **Definitions used throughout.** Keep this table in view:
#
# | quantity | section | computed as | 1 (or high) means | 0 (or low) means |
# |---|---|---|---|---|
# | lens accuracy | §1, §2 | top-1 of the lens at a layer = the model's eventual answer | the answer is readable there | it is not (yet) |
# | KL to final | §2 | KL(final ‖ lens), nats, mean over tokens | far from the output distribution | the lens reads what the model will say |
# | selectivity | §3 | probe accuracy on real labels − on control labels (Hewitt & Liang) | the probe reads the property | it memorises subjects |
# | restored fraction | §4 | (p_restored − p_corrupt) / (p_clean − p_corrupt), the answer's probability | restoring this component alone brings the fact back | no effect |
# | efficacy / paraphrase | §5 | fraction of edited prompts answering the new object | the edit took (and generalises) | it did not |
# | unchanged | §5 | fraction of other prompts whose top-1 answer is the same as before the edit | specific: nothing else moved | collateral damage |
# | AUROC | §6 | chance a random positive scores above a random negative | perfect detector | perfectly inverted (0.5 = chance) |

# %% tags=["parameters"]
# The model this notebook studies: the shipped facts model. Its world (names, relations, objects) is the
# course's own; a real model needs prompts in its own vocabulary (the library calls are the same).
MODEL_NAME = "facts-4l"
N_EDITS = 20  # ROME and fine-tuning edits made here, one at a time; benchmarks/knowledge.py runs 50

# %%
import time

import plotly.graph_objects as go
import torch
from IPython.display import display

from interplab import knowledge, lenses, probes
from interplab.checks import ch03 as checks
from interplab.worlds import facts
from interplab.worlds.vocab import SPECIAL_TOKENS
from interplab.zoo import facts as recipe
from interplab.zoo import load_model, model_card
from interplab_widgets import LogitLensView, PatchingHeatmap

torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small runs as fast on one thread, and then never waits for a busy second core
torch.set_grad_enabled(False)  # we read and edit activations; the tuned lens and the edits turn gradients on locally

model = load_model(MODEL_NAME)
card = model_card(MODEL_NAME)
cfg = model.cfg
VOCAB = list(SPECIAL_TOKENS) + facts.vocabulary()  # token id -> word
print(f"{MODEL_NAME}: {cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, vocabulary {cfg.d_vocab}")

# %% [markdown]
# ## 0. The world, and why the training loss stays near 0.9
#
# Half of the training sequences are questions (`<bos> so mo 's city is lima .`); the other half are
# *appositions*, where the object follows the name directly (`<bos> so mo lima town .`). Appositions are
# what make this model interesting: to predict the token after a name, the model needs the person's
# attributes **at the name**, before it knows which relation will be asked, as with real entities in real
# text. Without them (measured while designing the world) a small model looks each fact up at the last token
# and nothing is stored at the subject.
#
# The price: after a known name, any of its 8 objects may follow, so even a perfect model pays about ln 8 ≈
# 2.08 nats on those tokens. The card's final loss below is therefore no sign of failed training; recall is
# what to look at.

# %%
# NBVAL_CHECK_OUTPUT
metrics = card["metrics"]
print(f"final training loss {card['final_loss']:.2f}; floor from appositions alone: "
      f"{recipe.loss_floor(card['training']['apposition']):.2f}")
print(f"recall on trained questions {metrics['recall']:.3f}; held-out paraphrases {metrics['held_out_paraphrase_accuracy']:.3f}")
print(f"unknown training subjects answered 'unknown' {metrics['unknown_subjects_answered_unknown']:.2f}; "
      f"never-seen names answered 'unknown' {metrics['never_seen_answered_unknown']:.2f}, "
      f"with a made-up object {metrics['never_seen_answered_an_object']:.2f}")
example = facts.make_prompts([(facts.KNOWN_SUBJECTS[0], 0, (0, 0)), (facts.KNOWN_SUBJECTS[0], 1, (2, 1)),
                              (facts.UNKNOWN_SUBJECTS[0], 0, (0, 0)), (facts.NEVER_SEEN_SUBJECTS[0], 0, (0, 0))])
for row, prediction in zip(example.tokens, recipe.predictions(model, example)):
    print(f"  {facts.describe(row):28s} -> {VOCAB[int(prediction)]}")

# %% [markdown]
# ## 1. The logit lens: at which layer does the answer appear?
#
# The residual stream is a sum that every layer writes into, and the model reads it only at the end, through
# the final LayerNorm and the unembedding. The **logit lens** (nostalgebraist 2020) applies that same
# read-out to the residual after every layer: "what would the model say if it stopped here?". For
# monitoring this is the cheapest tool there is: one matrix product per layer.
#
# ### Exercise 1 — decode a residual through the model's own read-out
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵🔵 · about 5 minutes
#
# Write `logit_lens_decode(model, resid)`: residual vectors `[..., d_model]` → logits `[..., d_vocab]`,
# through `model.ln_final` and then `model.unembed`, exactly as the model does after its last block.
#
# <details><summary>Hint</summary>
#
# Both modules expect `[batch, pos, d_model]`: `flat = resid.reshape(-1, 1, resid.shape[-1])`, then
# `model.unembed(model.ln_final(flat))`, and reshape back to `resid.shape[:-1] + (-1,)`. Forgetting
# `ln_final` is the classic mistake: the residual's scale grows with depth, and the unembedding was only
# trained on normalised vectors.
# </details>

# %%
def logit_lens_decode(model, resid: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: reshape to [n, 1, d_model], ln_final, unembed, reshape back
    flat = resid.reshape(-1, 1, resid.shape[-1])
    return model.unembed(model.ln_final(flat)).reshape(*resid.shape[:-1], -1)
    # END SOLUTION


checks.test_logit_lens_decode(logit_lens_decode)

# %% [markdown]
# `lenses.residual_stack` gives the residual after 0, 1, ..., 4 blocks (`embed`, `L0`, ..., `L3`: label `L3`
# is the residual *after* block 3, which is what the model outputs). Below, your decoder reads every layer
# of one question. Each cell shows the top predictions; the target row is the next token (the answer at the
# last position). Click a cell to pin it.

# %%
lens_prompt = facts.make_prompts([(facts.KNOWN_SUBJECTS[0], 0, (0, 0))])
resid = lenses.residual_stack(model, lens_prompt.tokens)  # [layer, batch, pos, d_model]
try:  # your exercise 1; the library's decoder if you skipped it
    lens_logits = logit_lens_decode(model, resid)
except NotImplementedError:
    print("exercise 1 not written yet: using lenses.decode_residual")
    lens_logits = lenses.decode_residual(model, resid)
words = facts.describe(lens_prompt.tokens[0]).split()
next_tokens = lens_prompt.tokens[0, 1:].tolist() + [int(lens_prompt.answer[0])]
LogitLensView.from_logits(words, lens_logits[:, 0], VOCAB, targets=next_tokens, k=5,
                          layer_labels=lenses.lens_layer_labels(model),
                          title=f"logit lens: top-5 next-token predictions after each layer, '{' '.join(words[1:])}'")

# %% [markdown]
# ### Exercise 2 — lens accuracy per layer
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# One prompt is an anecdote. Write `lens_accuracy(lens_logits, answers)`: `lens_logits [layer, batch, vocab]`
# (the lens at each prompt's answer position), `answers [batch]` → `[layer]`, the fraction of prompts whose
# top-1 at that layer is the answer.
#
# <details><summary>Hint</summary>
#
# `lens_logits.argmax(-1)` is `[layer, batch]`; compare with `answers[None]` and average over the batch axis.
# </details>

# %%
def lens_accuracy(lens_logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: argmax over the vocabulary, compare with the answers, mean over prompts
    return (lens_logits.argmax(-1) == answers[None]).float().mean(-1)
    # END SOLUTION


checks.test_lens_accuracy(lens_accuracy)

# %%
# NBVAL_CHECK_OUTPUT
questions = facts.sample_prompts(400, seed=1)  # known subjects, trained frames
rows = torch.arange(len(questions))
logit_lens_at_answer = lenses.logit_lens(model, questions.tokens)[:, rows, questions.last]  # [layer, batch, vocab]
try:
    logit_lens_accuracy = lens_accuracy(logit_lens_at_answer, questions.answer)
except NotImplementedError:
    logit_lens_accuracy = checks.reference_lens_accuracy(logit_lens_at_answer, questions.answer)
labels = lenses.lens_layer_labels(model)
print("logit lens accuracy at the answer position:",
      ", ".join(f"{label} {acc:.2f}" for label, acc in zip(labels, logit_lens_accuracy.tolist())))
embed_top = logit_lens_at_answer[0].argmax(-1)
is_object = torch.isin(embed_top, facts.OBJECT_IDS.flatten()).float().mean().item()
print(f"at 'embed', the lens's top-1 is an object word for {is_object:.2f} of prompts, but the right one for "
      f"{logit_lens_accuracy[0]:.2f}")

# %% [markdown]
# The answer becomes readable late: the logit lens finds it for under a fifth of the questions through
# block 1, for fewer than half after block 2, and for all of them only at the output.
# **Why the raw lens misleads early.** At `embed` the residual is just the last word's embedding ("is",
# "the"), and the lens reads it as a bigram guess: always *some* object word, almost never the person's.
# That is not "the model thinks the answer is X": early residuals live in a different basis from the last
# one, and the final LayerNorm and unembedding were trained only on the last. A monitor built on the raw
# lens would mistake that basis mismatch for the model's belief. Note also what the lens *cannot* see: a
# fact stored at the subject token is invisible at the answer position until attention moves it there.
#
# ## 2. The tuned lens: translate each layer before reading it
#
# The **tuned lens** (Belrose et al. 2023) learns one affine translator per layer, `h → h + A h + b`,
# trained so that the translated residual, read through the model's own read-out, matches the model's final
# distribution: it minimises KL(final ‖ lens). Starting from `A = 0, b = 0` (the logit lens) it can only do
# better, and on a small model it trains in seconds.
#
# ### Exercise 3 — KL to the final distribution, by layer
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Write `kl_to_final(lens_logits)`: `[layer, n, vocab]` logits of a lens at `n` tokens, whose last layer is
# the model's output → `[layer]`, KL(final ‖ lens) = Σ p_final (log p_final − log p_lens), in nats, averaged
# over the `n` tokens. The last entry is 0.
#
# <details><summary>Hint</summary>
#
# `final = lens_logits[-1].log_softmax(-1)`; `lens = lens_logits.log_softmax(-1)`;
# `(final.exp() * (final - lens)).sum(-1).mean(-1)`. The order matters: KL(final ‖ lens) weights the
# tokens the model actually predicts.
# </details>

# %%
def kl_to_final(lens_logits: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: log_softmax both, p_final * (log p_final - log p_lens), sum over vocab, mean over tokens
    final = lens_logits[-1].log_softmax(-1)
    lens_logp = lens_logits.log_softmax(-1)
    return (final.exp() * (final - lens_logp)).sum(-1).mean(-1)
    # END SOLUTION


checks.test_kl_to_final(kl_to_final)

# %% [markdown]
# Training data: sequences drawn like the model's training data (questions and appositions). We evaluate
# on other sequences, at every non-padding position. `train_tuned_lens` caches the residuals once and
# fits the translators with Adam.

# %%
start = time.perf_counter()
lens_generator = torch.Generator().manual_seed(0)
lens_train = [facts.sample_training(64, lens_generator)[0] for _ in range(8)]
with torch.enable_grad():
    tuned = lenses.train_tuned_lens(model, lens_train, steps=150, pad_token_id=facts.PAD_ID, seed=0,
                                    model_name=MODEL_NAME)
print(f"tuned lens trained in {time.perf_counter() - start:.1f} s")

# %%
# NBVAL_CHECK_OUTPUT
held_out = torch.cat([facts.sample_training(64, torch.Generator().manual_seed(99))[0] for _ in range(4)])
kl = lenses.lens_kl_by_layer(model, held_out, tuned, pad_token_id=facts.PAD_ID)
print("KL(final || lens), nats, on held-out sequences:")
for label, logit_kl, tuned_kl in zip(kl.layer_labels, kl.logit_lens.tolist(), kl.tuned_lens.tolist()):
    print(f"  {label:5s} logit lens {logit_kl:.2f}   tuned lens {tuned_kl:.2f}")
print("tuned lens lower at every layer before the last:", bool((kl.tuned_lens[:-1] < kl.logit_lens[:-1]).all()))
tuned_at_answer = tuned.apply(model, questions.tokens)[:, rows, questions.last]
try:  # your exercises 2 and 3 on the question prompts
    tuned_accuracy = lens_accuracy(tuned_at_answer, questions.answer)
    answer_kl = (kl_to_final(logit_lens_at_answer), kl_to_final(tuned_at_answer))
except NotImplementedError:
    tuned_accuracy = checks.reference_lens_accuracy(tuned_at_answer, questions.answer)
    answer_kl = (checks.reference_kl_to_final(logit_lens_at_answer), checks.reference_kl_to_final(tuned_at_answer))
print("at the answer position: tuned lens accuracy", [round(v, 2) for v in tuned_accuracy.tolist()],
      "| KL logit", [round(v, 2) for v in answer_kl[0].tolist()], "tuned", [round(v, 2) for v in answer_kl[1].tolist()])

# %%
figure = go.Figure()
figure.add_trace(go.Scatter(x=kl.layer_labels, y=kl.logit_lens.tolist(), mode="lines+markers", name="logit lens"))
figure.add_trace(go.Scatter(x=kl.layer_labels, y=kl.tuned_lens.tolist(), mode="lines+markers", name="tuned lens"))
figure.update_layout(title="KL(final || lens) in nats by layer, held-out sequences (lower = closer to the output)",
                     xaxis_title="residual after", yaxis_title="KL (nats)", width=620, height=380)
figure.show()

# %% [markdown]
# The tuned lens is closer to the final distribution at every layer, several times closer early on: most
# of the logit lens's early "error" was the basis mismatch, not ignorance. But at the *answer position* its
# accuracy stays low until the last layers, like the logit lens's. A better read-out cannot show what is not
# there yet: the fact arrives at the last token late, carried by attention from the subject. For monitoring,
# that is the lesson: a lens reads what a position already holds; where a fact *is* is a different question,
# which probes and causal tracing answer.
#
# ## 3. Linear probes: decodable is not used
#
# A **linear probe** is a logistic regression from activations to a label. We probe the residual at the
# subject's last token ("so **mo**") for the person's *city*, one of 10, at every layer. If the model
# stores facts at the subject, the city should be decodable there.
#
# Probes are easy to fool yourself with. A probe with 64 inputs can memorise 100 people: it learns *who*
# this is, and a lookup table from person to city, without the model representing city in any usable way.
# Hewitt & Liang's **control task** measures that: give every *person* a random city (the same one in all
# their examples, with the real cities' frequencies) and train the same probe. **Selectivity** = accuracy on
# the real task − accuracy on the control. High selectivity: the probe reads the property, not the identity.
#
# ### Exercise 4 — control-task labels
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Write `control_labels(subjects, labels, seed)`: `subjects` is a list of names (one per example), `labels`
# their real labels (each subject has one). Return one control label per example: a random permutation of
# the subjects' real labels, applied per subject, so every example of a subject gets the same control label.
# Use `seed` for the permutation.
#
# <details><summary>Hint</summary>
#
# `names = list(dict.fromkeys(subjects))`; each name's real label is the label of its first example;
# `order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))`; name `i` gets the
# real label of name `order[i]`.
# </details>

# %%
def control_labels(subjects: list[str], labels: torch.Tensor, seed: int) -> torch.Tensor:
    # BEGIN SOLUTION: one real label per subject, permuted across subjects with the seed, broadcast to examples
    names = list(dict.fromkeys(subjects))
    first = {name: i for i, name in reversed(list(enumerate(subjects)))}
    per_name = torch.tensor([int(labels[first[name]]) for name in names])
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    shuffled = dict(zip(names, per_name[order].tolist()))
    return torch.tensor([shuffled[s] for s in subjects])
    # END SOLUTION


checks.test_control_labels(control_labels)

# %% [markdown]
# The data: each known person in three question frames (300 prompts), read at the last subject token:
# "S 's city is", "as for S , ..." and "we know that S 's ...". So each person appears in three contexts
# (the model is causal: every frame that starts with the name gives the same activation there). Both tasks
# use the same train/test split, by example, as Hewitt & Liang do; and, stricter, a split by *person*: does
# a probe trained on 75 people read the city of 25 people it never saw?

# %%
probe_items = [(s, 0, (frame, 0)) for s in facts.KNOWN_SUBJECTS for frame in (0, 3, 5)]
probe_prompts = facts.make_prompts(probe_items)
city = facts.FACTS[[facts.KNOWN_SUBJECTS.index(s) for s in probe_prompts.subjects], 0]  # index into the 10 cities
probe_hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(cfg.n_layers)]
probe_labels = ["embed"] + [f"L{layer}" for layer in range(cfg.n_layers)]
subject_acts = probes.collect_activations(model, probe_prompts.tokens, probe_hooks,
                                          positions=probe_prompts.subject_last, progress=False)
try:
    city_control = control_labels(probe_prompts.subjects, city, seed=0)
except NotImplementedError:
    city_control = probes.control_task_labels(probe_prompts.subjects, city, seed=0)
by_example = probes.train_test_split(len(probe_prompts), 0.25, seed=0)
by_person = probes.train_test_split(len(probe_prompts), 0.25, seed=0, groups=probe_prompts.subjects)

# %%
# NBVAL_CHECK_OUTPUT
probe_table = {}
print("city probe at the last subject token, test accuracy (10 cities: chance 0.10)")
print("layer | l2 0.01: real control selectivity | l2 1.0: real control selectivity | new people (l2 1.0): real control")
for label, hook in zip(probe_labels, probe_hooks):
    acts = subject_acts[hook]
    cells = []
    for l2 in (0.01, 1.0):
        real = probes.fit_and_score(acts, city, split=by_example, l2=l2).test_accuracy
        control = probes.fit_and_score(acts, city_control, split=by_example, l2=l2).test_accuracy
        probe_table[label, l2] = (real, control)
        cells.append(f"{real:.2f} {control:.2f} {real - control:+.2f}")
    new_real = probes.fit_and_score(acts, city, split=by_person, l2=1.0).test_accuracy
    new_control = probes.fit_and_score(acts, city_control, split=by_person, l2=1.0).test_accuracy
    print(f"{label:5s} | {cells[0]} | {cells[1]} | {new_real:.2f} {new_control:.2f}")
best, best_l2 = max(probe_table, key=lambda key: probe_table[key][0] - probe_table[key][1])
best_real, best_control = probe_table[best, best_l2]
print(f"most selective: {best} with l2 {best_l2}: accuracy {best_real:.2f}, control {best_control:.2f}, "
      f"selectivity {best_real - best_control:.2f}")

# %% [markdown]
# Read the table row by row. With a weak penalty (l2 0.01) the city becomes decodable as depth grows, but
# the control task is far above chance too (0.10): the probe memorises people, as Hewitt & Liang warned. A
# stronger penalty (l2 1.0) takes capacity away from both, and both fall. The most selective cell is
# printed last: compare it with the course's target (accuracy ≥ 0.95, selectivity ≥ 0.5), and notice where
# it is. The residual after the *last* block at the subject token is the model's own output there, its
# guess at an apposition's object, so the person's objects are readable in it; but no later layer reads
# that vector, so it cannot be where the answer to a question comes from. On people the probe never saw,
# the city is barely decodable at any layer: the model does not write "city = lima" in one shared linear
# code at the subject; what MLP 0 writes there behaves more like a per-person code that later layers
# decode. "Decodable" depended on probe capacity and split at every layer, which is why the next step is an
# intervention.
#
# **Does the model use what the probe reads?** Remove the probe's directions from the residual at the
# subject, and see if the model still answers the city. Projecting out a direction `u` means
# `x ← x − (x·û) û`, with û = u / |u|.
#
# ### Exercise 5 — project a direction out
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# Write `project_out(acts, direction)`: activations `[..., d]`, a direction `[d]` of any length → the
# activations with their component along the direction removed.
#
# <details><summary>Hint</summary>
#
# Normalise first: `u = direction / direction.norm()`; then `acts - (acts @ u)[..., None] * u`.
# </details>

# %%
def project_out(acts: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: normalise the direction, subtract the projection onto it
    unit = direction / direction.norm()
    return acts - (acts @ unit)[..., None] * unit
    # END SOLUTION


checks.test_project_out(project_out)

# %% [markdown]
# We ablate at the residual after block 0 (where section 4 will find the facts written), at the last subject
# token only, the whole subspace the city probe uses (its 10 class directions, made orthonormal, each
# projected out with your function). Two controls keep the test honest: a random subspace of the same size,
# and the *other* relations' answers, which should survive if the ablated directions are about city only.

# %%
# NBVAL_CHECK_OUTPUT
use_hook = "blocks.0.hook_resid_post"
city_probe = probes.train_linear_probe(subject_acts[use_hook], city, l2=1.0)
probe_basis = torch.linalg.qr((city_probe.weight / city_probe.scale).float().T).Q.T  # [10, d_model], orthonormal
random_basis = torch.linalg.qr(torch.randn(cfg.d_model, len(probe_basis),
                                           generator=torch.Generator().manual_seed(0))).Q.T
try:
    project_out(torch.zeros(1, cfg.d_model), torch.ones(cfg.d_model))
    remove = project_out
except NotImplementedError:
    remove = checks.reference_project_out


def ablated_accuracy(prompts, basis) -> float:
    """Answer accuracy with the rows of ``basis`` projected out of the residual after block 0 at the subject."""
    def hook(act, hook):
        at_subject = act[torch.arange(act.shape[0]), prompts.subject_last]
        for direction in basis:
            at_subject = remove(at_subject, direction)
        act = act.clone()
        act[torch.arange(act.shape[0]), prompts.subject_last] = at_subject
        return act
    logits = model.run_with_hooks(prompts.tokens, fwd_hooks=[(use_hook, hook)])
    answers = logits[torch.arange(len(prompts)), prompts.last].argmax(-1)
    return (answers == prompts.answer).float().mean().item()


city_questions = facts.make_prompts([(s, 0, facts.train_templates(0)[0]) for s in facts.KNOWN_SUBJECTS])
job_questions = facts.make_prompts([(s, 1, facts.train_templates(1)[0]) for s in facts.KNOWN_SUBJECTS])
print(f"city answers correct: clean {ablated_accuracy(city_questions, probe_basis[:0]):.2f}, "
      f"city-probe subspace removed {ablated_accuracy(city_questions, probe_basis):.2f}, "
      f"random subspace of the same size removed {ablated_accuracy(city_questions, random_basis):.2f}")
print(f"job answers correct:  clean {ablated_accuracy(job_questions, probe_basis[:0]):.2f}, "
      f"city-probe subspace removed {ablated_accuracy(job_questions, probe_basis):.2f}, "
      f"random subspace removed {ablated_accuracy(job_questions, random_basis):.2f}")
lima = facts.OBJECTS[0].index("lima")
lima_direction = probes.probe_direction(city_probe, lima)
scale = subject_acts[use_hook].norm(dim=-1).mean().item()
steered = []
for alpha in (0.5, 1.0, 2.0):
    with probes.steering(model, use_hook, lima_direction, alpha * scale, positions=city_questions.subject_last):
        steered.append((recipe.predictions(model, city_questions) == facts.word_id("lima")).float().mean().item())
print("steering along the probe's 'lima' direction (alpha x the mean residual norm 0.5, 1, 2): fraction answering "
      "lima", [round(v, 2) for v in steered], f"(clean: {(city_questions.answer == facts.word_id('lima')).float().mean():.2f})")

# %% [markdown]
# Compare the removal with the random control: removing the probe's 10 directions breaks more than half
# of the city answers, removing 10 random directions breaks almost none. So the model does read the
# subspace the probe found. But the job answers break just as much: the probe's directions are not a
# "city" variable, they are part of the person's identity code, which every relation reads. And steering
# along one class direction moves answers towards that city as the push grows, without reaching all of
# them. For alignment this is the difference between a monitor (reads a signal) and a handle (changes
# behaviour through it), and between a handle and a *specific* handle: only interventions, with controls,
# tell you which you have.
#
# ## 4. Causal tracing: where is the fact written?
#
# Causal tracing (Meng et al. 2022) asks which hidden states carry the fact. Add noise to the subject's two
# token embeddings, so the model can no longer tell who is asked about, and the answer's probability
# collapses. Then restore *one* state to its clean value (one layer, one position, one component) and see
# how much probability comes back. Three ways: the residual after a block (everything up to there), the MLP
# output alone, the attention output alone.
#
# ### Exercise 6 — one restoration by hand
# > Difficulty: 🔴🔴🔴 · Importance: 🔵🔵🔵 · about 20 minutes
#
# Write `restore_one(model, tokens, answer_pos, answers, noise, hook_name, pos)`: `noise [batch, seq, d_model]`
# is already zero outside the subject. Run the clean tokens with a cache; then run them again with the noise
# added at `hook_embed` **and** `hook_name` (e.g. `blocks.0.hook_mlp_out`) restored to its clean value at
# position `pos` for every prompt. Return the answer's probability at each prompt's `answer_pos`, averaged
# over prompts, as a float.
#
# <details><summary>Hint</summary>
#
# Two hooks in one `run_with_hooks`: `("hook_embed", lambda act, hook: act + noise)` and a restore hook that
# clones the activation, sets `act[:, pos] = cache[hook_name][:, pos]` and returns it. Then
# `logits[rows, answer_pos].softmax(-1)[rows, answers].mean().item()` with `rows = torch.arange(batch)`.
# </details>

# %%
def restore_one(model, tokens, answer_pos, answers, noise, hook_name: str, pos: int) -> float:
    # BEGIN SOLUTION: clean cache; corrupted run (noise at hook_embed) with hook_name restored at pos; mean answer prob
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name == hook_name)

    def restore(act, hook):
        act = act.clone()
        act[:, pos] = cache[hook_name][:, pos]
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda act, hook: act + noise), (hook_name, restore)])
    rows = torch.arange(tokens.shape[0])
    return logits[rows, answer_pos].softmax(-1)[rows, answers].mean().item()
    # END SOLUTION


checks.test_restore_one(restore_one)

# %% [markdown]
# Your function on one frame ("S 's R is": every prompt has the subject at positions 1-2), restoring the MLP
# output of each layer at the last subject token and at the last token; then the library's
# `knowledge.causal_trace`, which runs every (layer, position) restoration of a component as rows of a few
# big batches, on 40 questions in all trained frames. Positions are grouped by their role, because frames differ
# in length: first and last subject token, the token after the subject, further tokens, the last token.

# %%
# NBVAL_CHECK_OUTPUT
one_frame = facts.sample_prompts(24, seed=3, frames=(0,))
embed_sd = model.W_E[one_frame.tokens[one_frame.subject_mask]].std().item()
noise = torch.randn(*one_frame.tokens.shape, cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3 * embed_sd
noise = noise * one_frame.subject_mask[..., None]
trace_rows = torch.arange(len(one_frame))
p_clean = model(one_frame.tokens)[trace_rows, one_frame.last].softmax(-1)[trace_rows, one_frame.answer].mean().item()
try:
    p_corrupt = restore_one(model, one_frame.tokens, one_frame.last, one_frame.answer, noise, "hook_embed", 0)
    by_hand = [[restore_one(model, one_frame.tokens, one_frame.last, one_frame.answer, noise,
                            f"blocks.{layer}.hook_mlp_out", pos) for pos in (2, int(one_frame.last[0]))]
               for layer in range(cfg.n_layers)]
    print(f"answer probability: clean {p_clean:.2f}, subject corrupted {p_corrupt:.2f}")
    for layer, (at_subject, at_last) in enumerate(by_hand):
        print(f"  MLP {layer} restored: at the last subject token {at_subject:.2f}, at the last token {at_last:.2f}")
except NotImplementedError:
    print("exercise 6 not written yet: the library's trace follows")

# %%
trace_generator = torch.Generator().manual_seed(7)
trace_items = []
for _ in range(40):  # known people, random relations, any trained frame
    subject = facts.KNOWN_SUBJECTS[int(torch.randint(len(facts.KNOWN_SUBJECTS), (1,), generator=trace_generator))]
    relation = int(torch.randint(len(facts.RELATIONS), (1,), generator=trace_generator))
    frames = facts.train_templates(relation)
    trace_items.append((subject, relation, frames[int(torch.randint(len(frames), (1,), generator=trace_generator))]))
trace_prompts = facts.make_prompts(trace_items)
trace = knowledge.causal_trace(model, (trace_prompts.tokens, trace_prompts.last), trace_prompts.subject_mask,
                               trace_prompts.answer, noise=3.0, samples=2, seed=0, progress=False)
trace_maps = trace.bucketed(trace_prompts.position_buckets(), len(facts.BUCKETS))  # [component, layer, bucket]

# %%
for c, component in enumerate(trace.components):
    display(PatchingHeatmap(trace_maps[c], row_labels=[f"L{layer}" for layer in range(cfg.n_layers)],
                            col_labels=list(facts.BUCKETS), row_title="layer", col_title="position (by role)",
                            title=f"restored fraction of the answer's probability: {component} output restored "
                                  "(1 = fact back, 0 = no effect)", quantity="restored fraction", vmax=1.0))

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(trace_prompts)} questions; answer probability clean {trace.p_clean.mean():.2f}, "
      f"subject corrupted {trace.p_corrupt.mean():.2f}")
for c, component in enumerate(trace.components):
    print(f"{component}: rows = layers 0..{cfg.n_layers - 1}; columns = {', '.join(facts.BUCKETS)}")
    for layer in range(cfg.n_layers):
        print(f"  L{layer} " + " ".join(f"{v:5.2f}" for v in trace_maps[c, layer].tolist()))
mlp_map = trace_maps[trace.components.index("mlp")]
peak_layer, peak_bucket = divmod(int(mlp_map.argmax()), mlp_map.shape[1])
print(f"MLP peak here: layer {peak_layer}, '{facts.BUCKETS[peak_bucket]}', {mlp_map.max():.2f}; "
      f"card: layer {metrics['subject_mlp_peak_layer']}, 'subject last', {metrics['subject_mlp_peak']:.2f}")

# %% [markdown]
# How to read the three maps:
# - **residual**: restoring the whole residual at the last subject token after block 0 brings most of the
#   answer back; that effect fades at the subject with depth while it grows at the last token (block 1, 2,
#   3). The information sits at the subject until attention carries it to the end.
# - **MLP**: one cell stands out, MLP 0 at the last subject token. The MLPs elsewhere, and every MLP at the
#   last token, restore almost nothing: the MLP at the subject *writes* the fact; nothing downstream
#   recomputes it.
# - **attention**: the large value in layer 0 at the subject is attention combining the two noised name
#   tokens (restoring it un-noises the name itself); at the last token, layers 1-3, it is attention
#   *moving* the fact to where it is said, most of it in the top layer.
#
# So: written by an early MLP at the subject, moved late by attention, the pattern Meng et al. found in
# GPT-2 XL. Two things a 4-layer toy cannot show. The "early-middle layers" of a 48-layer model are
# layer 0 here, the only one before the subject's information is needed. And this placement is
# **fragile**: it depends on the apposition share and the seed. In the study that designed this world,
# 2 of 3 seeds at 50% apposition put the MLP peak at the subject (0.45, 0.38) and one did not (0.06), and
# 30% or 80% apposition never did. "Knowledge is localised" was true of this checkpoint; a test asserts
# it from the shipped weights, and you should not assume it of another model without tracing it.
#
# ## 5. Editing one fact: a rank-one change
#
# If MLP 0 at the subject maps "this person" (a *key*: the MLP's hidden activation at the last subject
# token, `k*`) to "their attributes" (a *value* it adds to the residual), then changing a fact means
# changing what that MLP writes for that one key. ROME (Meng et al. 2022) does it in two steps:
# 1. find a vector `delta` which, added to the MLP's output at the subject, makes the model say the new
#    object (a few steps of Adam, while a KL term keeps the person's *other* facts as they were; where
#    that term keeps the new object from the top, the library halves its weight every 100 steps until the
#    edit takes, because a person's facts share one key and some new values cannot avoid pulling on them);
# 2. change `W_out` (`[d_model, d_mlp]`) by a rank-one matrix so that `W_out k*` grows by exactly `delta`, while
#    keys that ordinary text produces move as little as possible. With `C` the keys' covariance over
#    training text, the answer is `W_out += delta (C⁻¹ k*)ᵀ / (k*ᵀ C⁻¹ k*)`.
#
# ### Exercise 7 — the rank-one update
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Write `rank_one_update(k_star, delta, covariance)`: `k_star [d_mlp]`, `delta [d_model]`,
# `covariance [d_mlp, d_mlp]` → the update `[d_model, d_mlp]`.
#
# <details><summary>Hint</summary>
#
# `solved = torch.linalg.solve(covariance, k_star)` is `C⁻¹ k*` (never form the inverse);
# `torch.outer(delta, solved / (k_star @ solved))`. Check: `update @ k_star` equals `delta`. Without `C`
# (`k* / |k*|²`) the update also moves every other key that points the same way: other people.
# </details>

# %%
def rank_one_update(k_star: torch.Tensor, delta: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: u = C^-1 k* / (k*^T C^-1 k*), update = outer(delta, u)
    solved = torch.linalg.solve(covariance, k_star)
    return torch.outer(delta, solved / (k_star @ solved))
    # END SOLUTION


checks.test_rank_one_update(rank_one_update)

# %% [markdown]
# Now `N_EDITS` edits at the layer your trace found, each made alone on the shipped weights and undone
# after: "person S's relation R is now X". `knowledge.rome_edit` finds `delta` and `k*` (shortened to 30
# optimisation steps to fit this notebook's time; the card's 50 edits use the library's defaults); your
# `rank_one_update` builds the weight change. The baseline fine-tunes every weight of the same MLP on the
# same three prompts. `knowledge.edit_metrics` scores each edit: efficacy (the edited prompt), held-out
# paraphrases (frames never trained for this relation), other people asked the same question (30 random +
# up to 15 sharing a syllable with S), and S's other 7 relations.

# %%
edit_layer = peak_layer  # where your trace put the facts
weight_name, _, transposed = knowledge.mlp_output_weight(model, edit_layer)
key_covariance = recipe.key_covariance(model, edit_layer, sequences=1000)
ridged = key_covariance + 1e-3 * key_covariance.diagonal().mean() * torch.eye(cfg.d_mlp)
edit_cases = recipe.edit_cases(N_EDITS)
edit_results = {"ROME": [], "fine-tuning": []}
start = time.perf_counter()
for case in edit_cases:
    contexts = (case["contexts"].tokens, case["contexts"].last)
    rome = knowledge.rome_edit(model, contexts, case["subject"], case["new"], edit_layer, key_covariance,
                               preserve_prompts=(case["preserve"].tokens, case["preserve"].last), steps=30, lr=0.5)
    try:  # your rank-one update from ROME's key and delta
        update = rank_one_update(rome.info["key"], rome.info["delta"], ridged)
        rome = knowledge.WeightEdit("rome", edit_layer, {weight_name: update.T if transposed else update}, rome.info)
    except NotImplementedError:
        pass
    finetune = knowledge.finetune_edit(model, contexts, case["new"], edit_layer)
    for method, edit in (("ROME", rome), ("fine-tuning", finetune)):
        edit_results[method].append(knowledge.edit_metrics(
            model, edit, case["new"], *[(case[k].tokens, case[k].last) for k in
                                        ("efficacy", "paraphrase", "other_subjects", "same_subject")]))
print(f"{2 * N_EDITS} edits in {time.perf_counter() - start:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
edit_keys = ("efficacy", "paraphrase", "other_subjects_unchanged", "same_subject_unchanged")
edit_means = {method: {k: sum(r[k] for r in rows) / len(rows) for k in edit_keys} for method, rows in edit_results.items()}
print(f"{N_EDITS} edits at MLP {edit_layer}  | efficacy | paraphrase | other people unchanged | same person's other relations unchanged")
for method, means in edit_means.items():
    print(f"  {method:12s} here | " + " | ".join(f"{means[k]:.2f}" for k in edit_keys))
card_edits = card["edits"]
rome_steps = card_edits.get("rome_options", {}).get("steps", "default")
for method, key, steps in (("ROME", "rome", f"up to {rome_steps} steps"), ("fine-tuning", "finetune", "library defaults")):
    print(f"  {method:12s} card ({card_edits[key]['edits']} edits, {steps}) | "
          + " | ".join(f"{card_edits[key][k]:.2f}" for k in edit_keys))

# %%
figure = go.Figure()
for method, rows in edit_results.items():
    figure.add_trace(go.Scatter(x=[r["other_subjects_unchanged"] for r in rows], y=[r["paraphrase"] for r in rows],
                                mode="markers", name=f"{method}, each edit here", opacity=0.6))
for method, key, symbol in (("ROME", "rome", "star"), ("fine-tuning", "finetune", "diamond")):
    figure.add_trace(go.Scatter(x=[card_edits[key]["other_subjects_unchanged"]], y=[card_edits[key]["paraphrase"]],
                                mode="markers", marker={"size": 16, "symbol": symbol},
                                name=f"{method}, mean of the card's {card_edits[key]['edits']} edits"))
figure.update_layout(title="fact edits: generalisation (held-out paraphrases answering the new object) vs "
                           "specificity (other people's answers unchanged)",
                     xaxis_title="other people unchanged (specificity)", yaxis_title="paraphrase (generalisation)",
                     width=720, height=440)
figure.show()

# %% [markdown]
# The trade-off in one picture: fine-tuning the MLP takes every edit and generalises better to
# paraphrases, but it rewrites other people's facts too (it changes every weight of the MLP, for every
# key); the rank-one edit changes what the MLP writes for one key, and other people barely move. Both
# damage the *same* person's other facts more than other people's: a person's 8 facts share one key, and
# a new value for that key spills into its other relations; ROME's KL term limits that, fine-tuning has
# nothing to stop it. The edits here are shortened (30 steps), so ROME takes fewer of them than the card's
# 50 full-length edits; compare the card's row with the course's targets (efficacy ≥ 0.95, paraphrase ≥
# 0.90, other people ≥ 0.98, same person ≥ 0.85), and run `python benchmarks/knowledge.py` to re-measure the
# 50 edits and print the verdict. For alignment, editing is the most direct use of "where knowledge
# lives": a targeted, auditable change. Its failure modes (spill-over to related facts, paraphrases it
# misses) are what an editor must measure every time.
#
# ## 6. Knowing what you don't know
#
# A model that says "unknown" when it does not know is more honest than one that makes up an answer. After
# Ferrando et al. (2024), "Do I know this entity?": is there a direction in the residual that separates
# known from unknown people, does it generalise to people the probe never saw, and does the model *use* it
# to decide between answering and saying "unknown"?
#
# One measured fact shaped this world: when unfamiliar names never occur in training, a known-vs-unknown
# probe was at chance at every layer (AUROC 0.41–0.57): the model had no reason to represent familiarity.
# So 60 training people have no facts and are always answered `unknown`; the 100 never-seen names then test
# whether the model says "unknown" or makes something up (the card: it answers with an object for about
# two thirds of them: a hallucination).
#
# ### Exercise 8 — the entropy of the next-token distribution
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵⚪ · about 5 minutes
#
# The usual black-box uncertainty signal. Write `next_token_entropy(logits)`: `[n, vocab]` → `[n]`,
# −Σ p log p of each row's softmax, in nats.
#
# <details><summary>Hint</summary>
#
# `logp = logits.log_softmax(-1)`; `-(logp.exp() * logp).sum(-1)`.
# </details>

# %%
def next_token_entropy(logits: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION: -(p * log p).sum(-1) with log_softmax for stability
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)
    # END SOLUTION


checks.test_next_token_entropy(next_token_entropy)

# %% [markdown]
# ### Exercise 9 — AUROC
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# A detector's quality, independent of its threshold. Write `auroc(scores, labels)`: the probability that a
# random positive (label 1) has a higher score than a random negative (label 0), ties counting one half.
#
# <details><summary>Hint</summary>
#
# With `pos = scores[labels == 1]` and `neg = scores[labels == 0]`, compare every pair:
# `(pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()`.
# </details>

# %%
def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    # BEGIN SOLUTION: all positive-negative pairs, wins plus half the ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None]).double().mean()
    ties = (pos[:, None] == neg[None]).double().mean()
    return (wins + 0.5 * ties).item()
    # END SOLUTION


checks.test_auroc(auroc)

# %% [markdown]
# The data: every training person (100 known, 60 unknown) in one trained frame per relation, read at the
# last subject token at every layer; the split is by *person*, so the test people were never seen by the
# probe. Then the 100 never-seen names: does the probe's score predict whether the model will make up an
# answer? Entropy is computed on the model's answer distribution at the last token.

# %%
try:
    auroc(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    score_auroc = auroc
except NotImplementedError:
    score_auroc = checks.reference_auroc
try:
    next_token_entropy(torch.zeros(1, 2))
    entropy_of = next_token_entropy
except NotImplementedError:
    entropy_of = checks.reference_next_token_entropy
people = list(facts.KNOWN_SUBJECTS) + list(facts.UNKNOWN_SUBJECTS)
known_items = [(s, r, facts.train_templates(r)[0]) for s in people for r in range(len(facts.RELATIONS))]
known_prompts = facts.make_prompts(known_items)
is_known = torch.tensor([s in facts.KNOWN_SUBJECTS for s in known_prompts.subjects]).long()
never = facts.make_prompts([(s, r, facts.train_templates(r)[0]) for s in facts.NEVER_SEEN_SUBJECTS
                            for r in range(len(facts.RELATIONS))])
known_hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(cfg.n_layers)]
known_acts = probes.collect_activations(model, known_prompts.tokens, known_hooks, positions=known_prompts.subject_last,
                                        progress=False)
never_acts = probes.collect_activations(model, never.tokens, known_hooks, positions=never.subject_last, progress=False)
never_logits = model(never.tokens)[torch.arange(len(never)), never.last]
never_answers = (never_logits.argmax(-1) != facts.UNKNOWN_ID).long()  # 1 = made up an answer
train_people, test_people = probes.train_test_split(len(known_prompts), 0.25, seed=0, groups=known_prompts.subjects)
known_logits = model(known_prompts.tokens)[torch.arange(len(known_prompts)), known_prompts.last]

# %%
# NBVAL_CHECK_OUTPUT
known_probes = {}
print("known-vs-unknown probe at the last subject token (l2 1.0), AUROC:")
for layer, hook in enumerate(known_hooks):
    known_probes[layer] = probes.train_linear_probe(known_acts[hook][train_people], is_known[train_people], l2=1.0)
    held = score_auroc(known_probes[layer].scores(known_acts[hook][test_people]), is_known[test_people])
    hallucination = score_auroc(known_probes[layer].scores(never_acts[hook]), never_answers)
    print(f"  L{layer}: held-out people {held:.3f} | never-seen names, score predicts a made-up answer {hallucination:.3f}")
test_entropy = entropy_of(known_logits[test_people])
never_entropy = entropy_of(never_logits)
print(f"entropy, AUROC for 'known' on held-out people: {score_auroc(test_entropy, is_known[test_people]):.3f}; "
      f"for 'made up an answer' on never-seen names: {score_auroc(never_entropy, never_answers):.3f}")
print(f"mean entropy (nats): known {test_entropy[is_known[test_people] == 1].mean():.2f}, "
      f"unknown {test_entropy[is_known[test_people] == 0].mean():.2f}; never-seen answering "
      f"{never_entropy[never_answers == 1].mean():.2f}, never-seen saying unknown {never_entropy[never_answers == 0].mean():.2f}")

# %% [markdown]
# The probe separates known from unknown people it never saw at every layer, from layer 0 on, and on
# never-seen names its score predicts which ones the model will answer (hallucinate) rather than call
# unknown. Entropy, read honestly, does about as well, with a twist. Known people get the *higher*
# entropy (several similar objects compete), and "unknown", learned as one more answer, comes out almost
# certain; so "high entropy = does not know" would flag exactly the wrong training people here. On
# never-seen names, though, high entropy does predict a made-up answer, nearly as well as the probe. On
# this toy neither signal wins on detection; the probe's advantage is where it reads (at the name, before
# any answer is produced) and that it is a variable the model uses, as the next exercise tests. Both are
# measured on one small model; neither is a guarantee elsewhere.
#
# ### Exercise 10 — a steering hook at each prompt's subject
# > Difficulty: 🔴🔴⚪ · Importance: 🔵🔵🔵 · about 10 minutes
#
# Is the direction *used*? Write `steering_hook(direction, alpha, positions)`: returns a hook function
# `hook(act, hook)` that adds `alpha * direction` (as given, not normalised) to `act [batch, seq, d]` at
# position `positions[b]` of prompt `b` only, and returns the result.
#
# <details><summary>Hint</summary>
#
# Inside: `act = act.clone(); rows = torch.arange(act.shape[0]); act[rows, positions] += alpha * direction;
# return act`.
# </details>

# %%
def steering_hook(direction: torch.Tensor, alpha: float, positions: torch.Tensor):
    # BEGIN SOLUTION: a closure adding alpha * direction at (b, positions[b])
    def hook(act, hook):
        act = act.clone()
        rows = torch.arange(act.shape[0])
        act[rows, positions] += alpha * direction.to(act.dtype)
        return act
    return hook
    # END SOLUTION


checks.test_steering_hook(steering_hook)

# %% [markdown]
# We steer after block 0, at the last subject token, along the layer-0 probe's direction (unit length),
# by 1.5 times the gap between the known and unknown people's mean projections on it: towards "unknown"
# for known people, towards "known" for unknown people. The people are the held-out test people.

# %%
# NBVAL_CHECK_OUTPUT
steer_layer = 0
steer_hook_name = f"blocks.{steer_layer}.hook_resid_post"
known_direction = probes.probe_direction(known_probes[steer_layer])  # towards "known"
projection = known_acts[steer_hook_name] @ known_direction
gap = (projection[is_known == 1].mean() - projection[is_known == 0].mean()).item()
test_known = [known_items[i] for i in test_people.tolist() if is_known[i] == 1]
test_unknown = [known_items[i] for i in test_people.tolist() if is_known[i] == 0]
make_hook = steering_hook
try:
    steering_hook(known_direction, 0.0, torch.zeros(1, dtype=torch.long))
except NotImplementedError:
    make_hook = checks.reference_steering_hook
flips = {}
for name, items, sign, flipped in (("known -> says 'unknown'", test_known, -1, lambda p: p == facts.UNKNOWN_ID),
                                   ("unknown -> makes up an object", test_unknown, +1,
                                    lambda p: torch.isin(p, facts.OBJECT_IDS.flatten()))):
    prompts = facts.make_prompts(items)
    before = flipped(recipe.predictions(model, prompts)).float().mean().item()
    logits = model.run_with_hooks(prompts.tokens, fwd_hooks=[(steer_hook_name, make_hook(
        known_direction, sign * 1.5 * gap, prompts.subject_last))])
    after = flipped(logits[torch.arange(len(prompts)), prompts.last].argmax(-1)).float().mean().item()
    flips[name] = after
    print(f"{name:30s} ({len(prompts)} prompts): before steering {before:.2f}, after {after:.2f}")

# %% [markdown]
# Pushing known people along "unknown" makes the model refuse facts it knows; pushing unknown people along
# "known" makes it produce an object for someone it has no facts about, a hallucination made to order. The
# direction the probe found is one the model reads to decide between answering and abstaining. For
# honesty this cuts both ways: a monitor on this direction flags likely hallucinations before they are
# said, and the same direction is a lever that can make a model confidently wrong.
#
# ## 7. Your result
#
# ### Exercise 11 — state where the facts are stored, and what you conclude
# > Difficulty: 🔴⚪⚪ · Importance: 🔵🔵🔵 · about 5 minutes
#
# Fill in `my_finding` from *your* measurements above: the component that writes the facts
# (`"mlp"`, `"attn"` or `"resid"`), its layer, its position (one of `facts.BUCKETS`), and a one-line verdict
# of your own on whether "knowledge is localised" held here and what limits the claim. The checker compares
# the site with the card's tracing map.
#
# <details><summary>Hint</summary>
#
# The MLP map's largest cell (section 4) names the layer and the position. The residual and attention maps
# are high wherever the fact *passes*; the MLP map is high where it is *written*.
# </details>

# %%
# BEGIN SOLUTION: the MLP map's largest cell, and a verdict from the numbers
my_finding = {
    "component": "mlp",
    "layer": peak_layer,
    "position": facts.BUCKETS[peak_bucket],
    "verdict": "facts are written by MLP 0 at the last subject token and moved to the answer by late attention; "
               "a rank-one edit there changes one person's fact with little damage to others, but this placement "
               "depends on the training mix and seed, and spills into the same person's other relations",
}
# END SOLUTION
checks.check_storage_site(my_finding)

# %% [markdown]
# ## Summary: what this notebook measured, against the course's targets
#
# The cell below prints what this notebook measured beside each target the course sets for this chapter, and the card's
# 50-edit numbers. The prose above was written from these numbers; where a target is not met, it says so.

# %%
# NBVAL_CHECK_OUTPUT
print(f"tuned lens below the logit lens at every layer before the last: "
      f"{bool((kl.tuned_lens[:-1] < kl.logit_lens[:-1]).all())} (target: yes)")
print(f"city probe at the subject, most selective: {best}, l2 {best_l2}: accuracy {best_real:.2f}, "
      f"selectivity {best_real - best_control:.2f} (target: >= 0.95 and >= 0.5)")
print(f"causal tracing, MLP peak: layer {peak_layer} of {cfg.n_layers}, '{facts.BUCKETS[peak_bucket]}' "
      f"(target: the last subject token, below the top layer; card {metrics['subject_mlp_peak']:.2f})")
rome_card = card_edits["rome"]
print(f"ROME, card's {rome_card['edits']} edits: efficacy {rome_card['efficacy']:.2f}, paraphrase {rome_card['paraphrase']:.2f}, "
      f"other people {rome_card['other_subjects_unchanged']:.3f}, same person {rome_card['same_subject_unchanged']:.2f} "
      "(target: 0.95 / 0.90 / 0.98 / 0.85)")
print(f"fine-tuning, same edits: other people {card_edits['finetune']['other_subjects_unchanged']:.2f} "
      f"(target: below ROME's {rome_card['other_subjects_unchanged']:.2f})")
print(f"known-vs-unknown probe on held-out people, layer {steer_layer}: AUROC "
      f"{score_auroc(known_probes[steer_layer].scores(known_acts[steer_hook_name][test_people]), is_known[test_people]):.3f}; "
      f"steering flips {min(flips.values()):.2f} or more (target: >= 0.95 and >= 0.8)")

# %% [markdown]
# What this chapter showed, and its limits:
# - **Monitoring.** Lenses read what a position already holds; the tuned lens removes the early layers'
#   basis mismatch, but no lens sees a fact before it reaches the position read. Probes read much more, and
#   the control task shows how much of that is the probe memorising, not the model representing.
# - **Editing.** Tracing found a site; a rank-one edit there changes one fact with far less collateral
#   damage than fine-tuning, but it is not clean: the same person's other facts move.
# - **Honesty.** The model carries a linear known-vs-unknown direction that generalises to new names and
#   that it uses to choose between answering and abstaining; output entropy carried the same information
#   with the opposite sign of what one would assume.
# - **What a toy cannot show.** Four layers leave one early layer to store in; the storage site depends on
#   the data mix and the seed; the training loss stays near 0.9 because appositions cannot know which
#   relation follows. Real models have superposed, redundant, multi-layer storage, where each of these
#   tools is weaker, and where the later chapters pick them up.
