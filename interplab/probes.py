"""Linear probes, kept honest: control tasks, and ablating or steering along the probe's direction.

A linear probe asks whether a property can be *read* from activations with one
linear map. That is weaker than it sounds: a probe with enough capacity reads
almost anything it can memorise. Two habits keep it honest:

- **Control tasks** (Hewitt & Liang, 2019). Give every input *type* (a subject, a
  word) a random label, consistent across its occurrences, with the real labels'
  distribution, and train the same probe on it. ``selectivity = accuracy(real) -
  accuracy(control)``: high when the probe reads the property, not the identity.
- **Interventions.** Decodable is not used. Project the probe's direction out of the
  residual (:func:`ablation_hooks`) or add it (:func:`steering_hooks`) and watch the output.

Activations come from :func:`collect_activations` (any TransformerLens 4.x bridge, any hook)
or any ``[n, d]`` tensor. Probes train full batch with L-BFGS from zero: the L2-regularised
logistic loss is convex, so the result is deterministic and does not depend on a seed
(seeds only choose train/test splits and control labels). Everything returns CPU tensors.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from interplab._device import model_device

Tokens = Int[torch.Tensor, "batch seq"]
Labels = Union[Int[torch.Tensor, " n"], Bool[torch.Tensor, " n"], Sequence[int]]
PromptPositions = Union[None, int, Int[torch.Tensor, " batch"], Sequence[int]]
Hook = tuple[str, Callable]


# ---------------------------------------------------------------- collecting activations

class _Captured(Exception):
    """Raised from a hook once every requested activation is captured: the rest of the pass is not needed."""


def _prompt_positions(positions: PromptPositions, batch: int, seq: int) -> torch.Tensor | int | None:
    """None, one shared int, or a LongTensor [batch] with one position per prompt (negative = from the end)."""
    if positions is None:
        return None
    if isinstance(positions, int) or (isinstance(positions, torch.Tensor) and positions.ndim == 0):
        position = int(positions)
        if not -seq <= position < seq:
            raise ValueError(f"position {position} is outside a sequence of {seq} tokens")
        return position
    index = torch.as_tensor(positions).long()
    if index.shape != (batch,):
        raise ValueError(f"positions must be an int (shared) or one position per prompt ([{batch}]), got shape "
                         f"{tuple(index.shape)}")
    if ((index < -seq) | (index >= seq)).any():
        raise ValueError(f"positions must lie in [-{seq}, {seq}) for sequences of {seq} tokens")
    return index % seq


def _at_positions(act: torch.Tensor, positions: torch.Tensor | int | None) -> torch.Tensor:
    if positions is None:
        return act
    if isinstance(positions, int):
        return act[:, positions]
    return act[torch.arange(act.shape[0], device=act.device), positions.to(act.device)]


def collect_activations(model, tokens: Tokens, hook_names: str | Sequence[str], positions: PromptPositions = None,
                        batch_size: int = 256, progress: bool = True) -> dict[str, torch.Tensor]:
    """Activations at ``hook_names`` (e.g. ``blocks.2.hook_resid_post``), as CPU tensors.

    ``positions``: an int shared by every prompt or one position per prompt (``[batch]``,
    e.g. each prompt's last subject token) gives ``[batch, *act]`` (``[batch, d_model]`` for a
    residual hook); None keeps every position, ``[batch, seq, *act]``. Runs in batches of
    ``batch_size`` prompts and stops each pass at the last hook it needs.
    """
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    if not names:
        raise ValueError("hook_names is empty: name at least one hook, e.g. 'blocks.0.hook_resid_post'")
    unknown = [name for name in names if name not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook names {unknown[:3]}; residual hooks are named like 'blocks.0.hook_resid_post' "
                         f"(see model.hook_dict)")
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError("tokens must be an integer tensor [batch, seq]")
    batch, seq = tokens.shape
    where = _prompt_positions(positions, batch, seq)
    starts = list(range(0, batch, batch_size))
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in tqdm(starts, desc="collecting activations", leave=False, disable=not progress or len(starts) < 3):
        chunk = tokens[start:start + batch_size].to(model_device(model))
        chunk_positions = where[start:start + batch_size] if isinstance(where, torch.Tensor) else where
        captured: dict[str, torch.Tensor] = {}

        def capture(act, hook, name=None):
            captured[name] = _at_positions(act, chunk_positions).detach().cpu()
            if len(captured) == len(names):
                raise _Captured

        hooks = [(name, lambda act, hook, name=name: capture(act, hook, name)) for name in dict.fromkeys(names)]
        try:
            with torch.no_grad():
                model.run_with_hooks(chunk, fwd_hooks=hooks)
        except _Captured:
            pass
        silent = [name for name in names if name not in captured]
        if silent:
            raise ValueError(f"hooks {silent[:3]} did not fire during the forward pass; pick hooks the model runs "
                             f"(e.g. 'blocks.0.hook_resid_post')")
        for name in names:
            collected[name].append(captured[name])
    return {name: torch.cat(parts) for name, parts in collected.items()}


# ---------------------------------------------------------------- checking inputs

def _check_activations(acts: torch.Tensor, name: str = "activations") -> Float[torch.Tensor, "n d"]:
    if not isinstance(acts, torch.Tensor):
        raise TypeError(f"{name} must be a tensor [n, d], got {type(acts).__name__}")
    if acts.ndim != 2:
        raise ValueError(f"{name} must be [n, d] (one row per example), got shape {tuple(acts.shape)}; "
                         f"pick one position per prompt (collect_activations(..., positions=...)) or flatten")
    if not acts.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {acts.dtype}")
    if not torch.isfinite(acts).all():
        bad = int((~torch.isfinite(acts)).any(-1).sum())
        raise ValueError(f"{name} contain NaN or inf in {bad} rows; drop those rows or find where they came from")
    return acts


def _check_labels(labels: Labels, n: int) -> Int[torch.Tensor, " n"]:
    labels = torch.as_tensor(labels)
    if labels.dtype == torch.bool:
        labels = labels.long()
    if labels.is_floating_point():
        if not torch.isfinite(labels).all():
            raise ValueError("labels contain NaN or inf")
        if not torch.equal(labels, labels.round()):
            raise ValueError("labels must be class ids (integers or bools), not scores; map each class to an int")
        labels = labels.long()
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integer class ids, got {labels.dtype}; map strings to ints first")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per example), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"got {labels.shape[0]} labels for {n} activation rows: they must match one to one "
                         f"(did you collect activations at every position instead of one per prompt?)")
    return labels.long().cpu()


# ---------------------------------------------------------------- the probe

@dataclass
class LinearProbe:
    """A logistic (two classes) or multinomial (more) linear probe on standardised activations.

    ``weight`` and ``bias`` act on ``(acts - mean) / scale``; ``classes`` are the label values,
    sorted, so ``classes[i]`` is output ``i``. A binary probe has one output: the log-odds of
    ``classes[1]``.
    """

    weight: Float[torch.Tensor, "out d"]
    bias: Float[torch.Tensor, " out"]
    mean: Float[torch.Tensor, " d"]
    scale: Float[torch.Tensor, " d"]
    classes: Int[torch.Tensor, " n_classes"]

    @property
    def d(self) -> int:
        return self.weight.shape[1]

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def logits(self, acts: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n out"]:
        """``[n, 1]`` log-odds of ``classes[1]`` for a binary probe, ``[n, n_classes]`` otherwise."""
        acts = _check_activations(acts)
        if acts.shape[1] != self.d:
            raise ValueError(f"this probe was trained on {self.d}-dimensional activations, got {acts.shape[1]}: "
                             f"use activations from the same hook")
        x = (acts.detach().cpu().to(self.weight.dtype) - self.mean) / self.scale
        return x @ self.weight.T + self.bias

    def scores(self, acts: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, " n"]:
        """A binary probe's log-odds of ``classes[1]``: the score AUROC ranks."""
        if not self.binary:
            raise ValueError(f"scores are for binary probes; this one has {len(self.classes)} classes (use logits)")
        return self.logits(acts)[:, 0]

    def predict(self, acts: Float[torch.Tensor, "n d"]) -> Int[torch.Tensor, " n"]:
        """Predicted label values (from ``classes``)."""
        logits = self.logits(acts)
        index = (logits[:, 0] > 0).long() if self.binary else logits.argmax(-1)
        return self.classes[index]


def train_linear_probe(acts: Float[torch.Tensor, "n d"], labels: Labels, l2: float = 1e-2, standardize: bool = True,
                       max_iter: int = 200) -> LinearProbe:
    """Fit a probe minimising cross-entropy + ``l2``/2 * ||W||^2 (bias unpenalised), full batch, L-BFGS.

    ``standardize`` rescales each feature to zero mean and unit variance first (fit on these rows
    only), so ``l2`` means the same whatever the activations' scale. Deterministic: no seed.
    """
    acts = _check_activations(acts)
    labels = _check_labels(labels, acts.shape[0])
    classes, targets = torch.unique(labels, sorted=True, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels have a single class ({int(classes[0]) if len(classes) else 'none'}): a probe needs "
                         f"at least two; check the labels or the train/test split")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    x = acts.detach().cpu().double()
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1], dtype=x.dtype)
    scale = x.std(0, unbiased=False) if standardize else torch.ones(x.shape[1], dtype=x.dtype)
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    x = (x - mean) / scale
    n_out = 1 if len(classes) == 2 else len(classes)
    weight = torch.zeros(n_out, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(n_out, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        if n_out == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], targets.double())
        else:
            loss = torch.nn.functional.cross_entropy(logits, targets)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearProbe(weight=weight.detach(), bias=bias.detach(), mean=mean, scale=scale, classes=classes)


def probe_accuracy(probe: LinearProbe, acts: Float[torch.Tensor, "n d"], labels: Labels) -> float:
    """Fraction of rows whose predicted label is right."""
    labels = _check_labels(labels, acts.shape[0] if isinstance(acts, torch.Tensor) else len(acts))
    return float((probe.predict(acts) == labels).double().mean())


def auroc(scores: Float[torch.Tensor, " n"], labels: Labels) -> float:
    """Area under the ROC curve: the chance a random positive scores above a random negative (ties count half).

    ``labels`` are 0/1 (or bools); computed from ranks (Mann-Whitney U), no sklearn needed.
    """
    scores = torch.as_tensor(scores).detach().cpu().double()
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    labels = _check_labels(labels, scores.shape[0])
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("AUROC needs binary labels (0/1 or bools)")
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positives and {n_neg} negatives")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based, ties share their mean rank
    rank_sum = average_rank[inverse][labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def probe_auroc(probe: LinearProbe, acts: Float[torch.Tensor, "n d"], labels: Labels) -> float:
    """AUROC of a binary probe's scores; labels are mapped through ``probe.classes`` (``classes[1]`` = positive)."""
    labels = _check_labels(labels, acts.shape[0])
    if not probe.binary:
        raise ValueError(f"AUROC is for binary probes; this one has {len(probe.classes)} classes")
    return auroc(probe.scores(acts), (labels == probe.classes[1]).long())


# ---------------------------------------------------------------- splits and scores

def _type_ids(types: Sequence[Hashable] | torch.Tensor, n: int) -> Int[torch.Tensor, " n"]:
    """Types (subjects, words: ints or strings) as ids 0..T-1 in order of first appearance."""
    values = types.tolist() if isinstance(types, torch.Tensor) else list(types)
    if len(values) != n:
        raise ValueError(f"got {len(values)} types for {n} examples: give one type (e.g. the subject) per example")
    ids: dict[Hashable, int] = {}
    return torch.tensor([ids.setdefault(v, len(ids)) for v in values], dtype=torch.long)


def train_test_split(n: int, test_fraction: float = 0.25, seed: int = 0,
                     groups: Sequence[Hashable] | torch.Tensor | None = None
                     ) -> tuple[Int[torch.Tensor, " n_train"], Int[torch.Tensor, " n_test"]]:
    """Shuffled row indices for training and testing. With ``groups``, each group lands on one side only
    (to test generalisation to unseen subjects); without, rows are split one by one (as control tasks need)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        order = torch.randperm(n, generator=generator)
        n_test = max(1, round(test_fraction * n))
        if n_test >= n:
            raise ValueError(f"{n} examples are too few to split")
        return order[n_test:].sort().values, order[:n_test].sort().values
    group_ids = _type_ids(groups, n)
    n_groups = int(group_ids.max()) + 1 if n else 0
    if n_groups < 2:
        raise ValueError("a grouped split needs at least two groups")
    test_groups = torch.randperm(n_groups, generator=generator)[:max(1, round(test_fraction * n_groups))]
    is_test = torch.isin(group_ids, test_groups)
    return (~is_test).nonzero()[:, 0], is_test.nonzero()[:, 0]


def kfold_indices(n: int, k: int = 5, seed: int = 0, groups: Sequence[Hashable] | torch.Tensor | None = None
                  ) -> list[tuple[Int[torch.Tensor, " n_train"], Int[torch.Tensor, " n_test"]]]:
    """``k`` (train, test) index pairs whose test sets partition the rows (or the groups)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    generator = torch.Generator().manual_seed(seed)
    units = _type_ids(groups, n) if groups is not None else torch.arange(n)
    n_units = int(units.max()) + 1 if n else 0
    if n_units < k:
        raise ValueError(f"cannot make {k} folds from {n_units} {'groups' if groups is not None else 'examples'}")
    fold_of_unit = torch.empty(n_units, dtype=torch.long)
    fold_of_unit[torch.randperm(n_units, generator=generator)] = torch.arange(n_units) % k
    fold = fold_of_unit[units]
    return [((fold != f).nonzero()[:, 0], (fold == f).nonzero()[:, 0]) for f in range(k)]


@dataclass
class ProbeScore:
    """A probe trained on one split and scored on the other; ``test_auroc`` only for binary probes."""

    probe: LinearProbe
    train_accuracy: float
    test_accuracy: float
    test_auroc: float | None = None


def fit_and_score(acts: Float[torch.Tensor, "n d"], labels: Labels, test_fraction: float = 0.25, seed: int = 0,
                  l2: float = 1e-2, groups: Sequence[Hashable] | torch.Tensor | None = None,
                  split: tuple[torch.Tensor, torch.Tensor] | None = None, standardize: bool = True) -> ProbeScore:
    """Train on a random split of the rows, score on the rest (or on the given ``split`` indices)."""
    acts = _check_activations(acts)
    labels = _check_labels(labels, acts.shape[0])
    train, test = split if split is not None else train_test_split(acts.shape[0], test_fraction, seed, groups)
    probe = train_linear_probe(acts[train], labels[train], l2=l2, standardize=standardize)
    test_auroc = None
    if probe.binary and len(torch.unique(labels[test])) == 2:
        test_auroc = probe_auroc(probe, acts[test], labels[test])
    return ProbeScore(probe, probe_accuracy(probe, acts[train], labels[train]),
                      probe_accuracy(probe, acts[test], labels[test]), test_auroc)


def cross_validated_accuracy(acts: Float[torch.Tensor, "n d"], labels: Labels, k: int = 5, seed: int = 0,
                             l2: float = 1e-2, groups: Sequence[Hashable] | torch.Tensor | None = None,
                             standardize: bool = True) -> Float[torch.Tensor, " k"]:
    """Test accuracy on each of ``k`` folds."""
    acts = _check_activations(acts)
    labels = _check_labels(labels, acts.shape[0])
    return torch.tensor([fit_and_score(acts, labels, l2=l2, split=fold, standardize=standardize).test_accuracy
                         for fold in kfold_indices(acts.shape[0], k, seed, groups)])


# ---------------------------------------------------------------- control tasks

def control_task_labels(types: Sequence[Hashable] | torch.Tensor, labels: Labels, seed: int = 0) -> Int[torch.Tensor, " n"]:
    """Hewitt & Liang control labels: a random label per *type*, shared by all its examples.

    When each type has one real label (a subject has one city), the control shuffles which type
    gets which label, so the label distribution over types is exactly the real one. Otherwise each
    type draws a label from the real labels' empirical distribution.
    """
    labels = _check_labels(labels, len(types))
    type_ids = _type_ids(types, labels.shape[0])
    n_types = int(type_ids.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    first = torch.full((n_types,), n, dtype=torch.long).scatter_reduce(0, type_ids, torch.arange(n), reduce="amin")
    per_type = labels[first]
    if torch.equal(per_type[type_ids], labels):
        control = per_type[torch.randperm(n_types, generator=generator)]
    else:
        classes, counts = torch.unique(labels, return_counts=True)
        control = classes[torch.multinomial(counts.double(), n_types, replacement=True, generator=generator)]
    return control[type_ids]


@dataclass
class Selectivity:
    """Real task vs control task on the same split: ``selectivity = real.test_accuracy - control.test_accuracy``."""

    real: ProbeScore
    control: ProbeScore
    seen_type_fraction: float
    """Fraction of test rows whose type also occurs in training: the control can only be memorised for those."""

    @property
    def accuracy(self) -> float:
        return self.real.test_accuracy

    @property
    def control_accuracy(self) -> float:
        return self.control.test_accuracy

    @property
    def selectivity(self) -> float:
        return self.real.test_accuracy - self.control.test_accuracy


def probe_selectivity(acts: Float[torch.Tensor, "n d"], labels: Labels, types: Sequence[Hashable] | torch.Tensor,
                      test_fraction: float = 0.25, seed: int = 0, l2: float = 1e-2, standardize: bool = True
                      ) -> Selectivity:
    """Train the same probe on the real labels and on :func:`control_task_labels`, split the same way.

    The split is over examples, so a type (a subject) seen in training also appears in the test
    set in another context, and a probe that memorises types scores well on the control. That
    needs several examples per type; with one each the control falls to chance and selectivity
    measures nothing (a warning says so). Selectivity depends on the probe's capacity, as Hewitt &
    Liang found: a larger ``l2`` or fewer input features (e.g. the model's own logits for the candidate
    answers) leaves less room to memorise types.
    """
    acts = _check_activations(acts)
    labels = _check_labels(labels, acts.shape[0])
    type_ids = _type_ids(types, acts.shape[0])
    control = control_task_labels(type_ids, labels, seed)
    split = train_test_split(acts.shape[0], test_fraction, seed)
    seen = float(torch.isin(type_ids[split[1]], type_ids[split[0]]).double().mean())
    if seen < 0.5:
        warnings.warn(f"only {seen:.0%} of test rows have a type seen in training: the control task cannot be "
                      f"memorised, so selectivity is inflated; give each type several examples", stacklevel=2)
    real = fit_and_score(acts, labels, l2=l2, split=split, standardize=standardize)
    return Selectivity(real, fit_and_score(acts, control, l2=l2, split=split, standardize=standardize), seen)


def selectivity_by_hook(activations: dict[str, torch.Tensor], labels: Labels, types: Sequence[Hashable] | torch.Tensor,
                        test_fraction: float = 0.25, seed: int = 0, l2: float = 1e-2, standardize: bool = True,
                        progress: bool = True) -> dict[str, Selectivity]:
    """:func:`probe_selectivity` at every hook of :func:`collect_activations`' output (e.g. one per layer)."""
    return {name: probe_selectivity(acts, labels, types, test_fraction, seed, l2, standardize)
            for name, acts in tqdm(activations.items(), desc="probing", leave=False,
                                   disable=not progress or len(activations) < 4)}


# ---------------------------------------------------------------- directions

def probe_direction(probe: LinearProbe, class_value: int | None = None) -> Float[torch.Tensor, " d"]:
    """The unit direction in the *raw* activation space along which the probe's log-odds rise.

    The standardisation is undone (weight / scale), so the direction can be added to or projected
    out of the model's activations. Binary: towards ``classes[1]``. Multinomial: pass
    ``class_value``; the direction raises that class's logit against the average of the others.
    """
    raw = probe.weight / probe.scale
    if probe.binary:
        if class_value is not None and class_value not in probe.classes.tolist():
            raise ValueError(f"class_value {class_value} is not one of the probe's classes {probe.classes.tolist()}")
        vector = raw[0] if class_value is None or class_value == int(probe.classes[1]) else -raw[0]
    else:
        if class_value is None or class_value not in probe.classes.tolist():
            raise ValueError(f"a multinomial probe has one direction per class: pass class_value, one of "
                             f"{probe.classes.tolist()}")
        row = probe.classes.tolist().index(class_value)
        vector = raw[row] - raw.mean(0)
    norm = vector.norm()
    if norm == 0:
        raise ValueError("the probe's weights are zero (l2 too strong, or nothing to learn): no direction")
    return (vector / norm).float()


def difference_of_means(acts: Float[torch.Tensor, "n d"], mask: Bool[torch.Tensor, " n"]) -> Float[torch.Tensor, " d"]:
    """``mean(acts[mask]) - mean(acts[~mask])``, unnormalised: the simplest direction for a binary property."""
    acts = _check_activations(acts)
    mask = _check_labels(mask, acts.shape[0]).bool()
    if mask.all() or not mask.any():
        raise ValueError("the mask must select some rows and leave some out")
    return (acts[mask].mean(0) - acts[~mask].mean(0)).cpu()


# ---------------------------------------------------------------- interventions

def _check_direction(direction: torch.Tensor) -> Float[torch.Tensor, " d"]:
    direction = torch.as_tensor(direction)
    if direction.ndim != 1 or not direction.is_floating_point():
        raise ValueError(f"direction must be a 1-D float vector [d_model], got shape {tuple(direction.shape)}")
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("direction must be finite and non-zero")
    return direction.detach()


def _hook_names(hook_names: str | Sequence[str]) -> list[str]:
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    if not names:
        raise ValueError("name at least one hook, e.g. 'blocks.1.hook_resid_post'")
    return names


def _position_mask(act: torch.Tensor, positions: PromptPositions) -> torch.Tensor | None:
    """A [batch, seq, 1] 0/1 mask of the positions to change (None = every position)."""
    if positions is None:
        return None
    where = _prompt_positions(positions, act.shape[0], act.shape[1])
    mask = torch.zeros(act.shape[0], act.shape[1], 1, dtype=act.dtype, device=act.device)
    if isinstance(where, int):
        mask[:, where] = 1
    else:
        mask[torch.arange(act.shape[0], device=act.device), where.to(act.device)] = 1
    return mask


def _fitted(direction: torch.Tensor, act: torch.Tensor, hook) -> torch.Tensor:
    if act.shape[-1] != direction.shape[0]:
        name = getattr(hook, "name", "this hook")
        raise ValueError(f"the direction has {direction.shape[0]} dimensions but {name} has {act.shape[-1]}: "
                         f"use a residual hook of the model the direction came from")
    return direction.to(device=act.device, dtype=act.dtype)


def ablate_direction_hook(direction: Float[torch.Tensor, " d"], positions: PromptPositions = None) -> Callable:
    """A hook function that projects ``direction`` out of the activation: ``x - (x . u) u`` with ``u`` unit.

    Only at this hook: later layers can write the direction back (ablate at every layer to stop that).
    ``positions`` as in :func:`collect_activations`; None ablates everywhere.
    """
    unit = _check_direction(direction)
    unit = unit / unit.norm()

    def hook_fn(act, hook):
        u = _fitted(unit, act, hook)
        change = (act @ u)[..., None] * u
        mask = _position_mask(act, positions)
        return act - (change if mask is None else change * mask)

    return hook_fn


def steer_hook(direction: Float[torch.Tensor, " d"], alpha: float, positions: PromptPositions = None) -> Callable:
    """A hook function that adds ``alpha * direction`` (as given, not renormalised) to the activation."""
    vector = _check_direction(direction)

    def hook_fn(act, hook):
        v = alpha * _fitted(vector, act, hook)
        mask = _position_mask(act, positions)
        return act + (v if mask is None else v * mask)

    return hook_fn


def ablation_hooks(hook_names: str | Sequence[str], direction: Float[torch.Tensor, " d"],
                   positions: PromptPositions = None) -> list[Hook]:
    """``fwd_hooks`` for ``model.run_with_hooks`` or ``model.hooks``: project ``direction`` out at each hook."""
    return [(name, ablate_direction_hook(direction, positions)) for name in _hook_names(hook_names)]


def steering_hooks(hook_names: str | Sequence[str], direction: Float[torch.Tensor, " d"], alpha: float,
                   positions: PromptPositions = None) -> list[Hook]:
    """``fwd_hooks`` for ``model.run_with_hooks`` or ``model.hooks``: add ``alpha * direction`` at each hook."""
    return [(name, steer_hook(direction, alpha, positions)) for name in _hook_names(hook_names)]


def _checked_hooks(model, hooks: list[Hook]) -> list[Hook]:
    unknown = [name for name, _ in hooks if name not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook names {unknown[:3]}; residual hooks are named like 'blocks.0.hook_resid_post'")
    return hooks


@contextmanager
def ablating(model, hook_names: str | Sequence[str], direction: Float[torch.Tensor, " d"],
             positions: PromptPositions = None) -> Iterator:
    """``with ablating(model, "blocks.1.hook_resid_post", u): model(tokens)`` runs with ``u`` projected out."""
    with model.hooks(fwd_hooks=_checked_hooks(model, ablation_hooks(hook_names, direction, positions))):
        yield model


@contextmanager
def steering(model, hook_names: str | Sequence[str], direction: Float[torch.Tensor, " d"], alpha: float,
             positions: PromptPositions = None) -> Iterator:
    """``with steering(model, "blocks.1.hook_resid_post", u, 4.0): model(tokens)`` runs with ``4 u`` added."""
    with model.hooks(fwd_hooks=_checked_hooks(model, steering_hooks(hook_names, direction, alpha, positions))):
        yield model


__all__ = ["LinearProbe", "ProbeScore", "Selectivity", "ablate_direction_hook", "ablating", "ablation_hooks", "auroc",
           "collect_activations", "control_task_labels", "cross_validated_accuracy", "difference_of_means",
           "fit_and_score", "kfold_indices", "probe_accuracy", "probe_auroc", "probe_direction", "probe_selectivity",
           "selectivity_by_hook", "steer_hook", "steering", "steering_hooks", "train_linear_probe", "train_test_split"]
