"""The indirect-object-identification (IOI) world: who gets the drink?

"when mary and john went to the store , john gave a drink to" -> "mary". Two names
appear in the first clause; one of them (the subject, S) appears again; the answer
is the other one (the indirect object, IO). A model can only solve it by noticing
which name is duplicated and copying the *other* one: the algorithm Wang et al.
(2022) found in GPT-2 small, here in a world whose every label we know.

Every template has the same token layout, so the name positions are the same in
every prompt (``S1``/``IO`` at 2 and 4, ``S2`` at 10, ``END`` at 14 counting
``<bos>`` as 0): batched patching by position needs no per-prompt bookkeeping.
Order ``ABBA`` puts IO first ("mary and john ..., john"), ``BABA`` puts S first.
A fifth of the unordered name pairs never appear in training (``held_out=True``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Int

from interplab.worlds.vocab import SPECIAL_TOKENS, build_tokenizer

NAMES: tuple[str, ...] = (
    "mary", "john", "tom", "anna", "paul", "kate", "mark", "lisa", "adam", "emma", "sam", "rose", "jack", "lucy",
    "ben", "sara", "dan", "amy", "max", "eve", "leo", "nina", "ivan", "ruth", "hugo", "jane", "carl", "iris",
    "fred", "ella",
)
PLACES: tuple[str, ...] = ("store", "park", "school", "garden", "station", "office", "market", "beach")
OBJECTS: tuple[str, ...] = ("drink", "book", "ball", "letter", "ring", "bag", "key", "pen", "cake", "gift")
# Every template: opener A and B <2 words> the <place> , C <verb> a <object> to  (14 words)
TEMPLATES: tuple[str, ...] = (
    "when {A} and {B} went to the {place} , {C} gave a {object} to",
    "then {A} and {B} were at the {place} , {C} handed a {object} to",
    "after {A} and {B} visited the big {place} , {C} passed a {object} to",
    "while {A} and {B} sat in the {place} , {C} brought a {object} to",
    "as {A} and {B} walked to the {place} , {C} threw a {object} to",
    "once {A} and {B} arrived at the {place} , {C} sent a {object} to",
)
FILLER_WORDS: tuple[str, ...] = (
    "when", "then", "after", "while", "as", "once", "and", "went", "to", "the", "were", "at", "visited", "big",
    "sat", "in", "walked", "arrived", ",", "gave", "handed", "passed", "brought", "threw", "sent", "a", ".",
)

# token positions (<bos> = 0) shared by every template
POS_A, POS_B, POS_S2, POS_END = 2, 4, 10, 14
PROMPT_LEN = POS_END + 1  # tokens in a prompt, <bos> included; the answer comes next
HELD_OUT_FRACTION = 0.2
PAIR_SPLIT_SEED = 2022
CORRUPTIONS: tuple[str, ...] = ("abc", "s2_io", "third_name")


def vocabulary() -> list[str]:
    return list(NAMES) + list(PLACES) + list(OBJECTS) + list(FILLER_WORDS)


def tokenizer():
    return build_tokenizer(vocabulary())


D_VOCAB = len(SPECIAL_TOKENS) + len(vocabulary())
_WORD_ID = {word: i + len(SPECIAL_TOKENS) for i, word in enumerate(vocabulary())}
NAME_IDS: Int[torch.Tensor, " name"] = torch.tensor([_WORD_ID[n] for n in NAMES])


def word_id(word: str) -> int:
    return _WORD_ID[word]


def _pairs() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Unordered name-index pairs, split once into (training, held out) with a fixed seed."""
    pairs = list(itertools.combinations(range(len(NAMES)), 2))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(PAIR_SPLIT_SEED)).tolist()
    n_held = round(HELD_OUT_FRACTION * len(pairs))
    held = sorted(pairs[i] for i in order[:n_held])
    train = sorted(pairs[i] for i in order[n_held:])
    return train, held


TRAIN_PAIRS, HELD_OUT_PAIRS = _pairs()


@dataclass
class IOIBatch:
    """Prompts with their ground truth. Every tensor's first axis is the prompt."""

    tokens: Int[torch.Tensor, "batch seq"]
    """``<bos>`` + 14 words, ending at END (the word "to"); the answer is the next token."""
    io: Int[torch.Tensor, " batch"]
    """Token id of the indirect object (the correct answer)."""
    s: Int[torch.Tensor, " batch"]
    """Token id of the subject (the name said twice, the wrong answer)."""
    template: Int[torch.Tensor, " batch"]
    abba: Bool[torch.Tensor, " batch"]
    """True where IO comes first ("mary and john ..., john"), False for BABA."""

    @property
    def answers(self) -> Int[torch.Tensor, "batch 2"]:
        """``[:, 0]`` the correct name, ``[:, 1]`` the wrong one: the logit-difference pair."""
        return torch.stack([self.io, self.s], dim=1)

    @property
    def pos_io(self) -> Int[torch.Tensor, " batch"]:
        return torch.where(self.abba, POS_A, POS_B)

    @property
    def pos_s1(self) -> Int[torch.Tensor, " batch"]:
        return torch.where(self.abba, POS_B, POS_A)

    @property
    def pos_s2(self) -> Int[torch.Tensor, " batch"]:
        return torch.full_like(self.io, POS_S2)

    @property
    def pos_end(self) -> Int[torch.Tensor, " batch"]:
        return torch.full_like(self.io, POS_END)

    def with_answer(self) -> Int[torch.Tensor, "batch seq_plus_1"]:
        """The full training sentence: the prompt followed by the IO name."""
        return torch.cat([self.tokens, self.io[:, None]], dim=1)

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _encode(template: int, a: int, b: int, c: int, place: int, obj: int) -> list[int]:
    text = TEMPLATES[template].format(A=NAMES[a], B=NAMES[b], C=NAMES[c], place=PLACES[place], object=OBJECTS[obj])
    return [0] + [_WORD_ID[w] for w in text.split()]


def sample(batch_size: int, seed: int | None = None, generator: torch.Generator | None = None,
           held_out: bool = False, templates: tuple[int, ...] | None = None) -> IOIBatch:
    """Random IOI prompts: half ABBA, half BABA (alternating), names from the training or held-out pairs."""
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    pairs = HELD_OUT_PAIRS if held_out else TRAIN_PAIRS
    templates = templates or tuple(range(len(TEMPLATES)))
    rows, ios, ss, temps, abbas = [], [], [], [], []
    for i in range(batch_size):
        pair = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        flip = bool(torch.randint(2, (1,), generator=generator))
        io, s = (pair[1], pair[0]) if flip else pair
        template = templates[int(torch.randint(len(templates), (1,), generator=generator))]
        place = int(torch.randint(len(PLACES), (1,), generator=generator))
        obj = int(torch.randint(len(OBJECTS), (1,), generator=generator))
        abba = i % 2 == 0
        a, b = (io, s) if abba else (s, io)
        rows.append(_encode(template, a, b, s, place, obj))
        ios.append(int(NAME_IDS[io]))
        ss.append(int(NAME_IDS[s]))
        temps.append(template)
        abbas.append(abba)
    return IOIBatch(tokens=torch.tensor(rows), io=torch.tensor(ios), s=torch.tensor(ss),
                    template=torch.tensor(temps), abba=torch.tensor(abbas))


def _other_names(exclude: Int[torch.Tensor, "batch k"], n: int, generator: torch.Generator) -> Int[torch.Tensor, "batch n"]:
    """For each row, ``n`` distinct name ids that are not in ``exclude``."""
    out = torch.empty(exclude.shape[0], n, dtype=torch.long)
    for row in range(exclude.shape[0]):
        allowed = [int(t) for t in NAME_IDS if int(t) not in set(exclude[row].tolist())]
        pick = torch.randperm(len(allowed), generator=generator)[:n]
        out[row] = torch.tensor([allowed[i] for i in pick])
    return out


def corrupt(batch: IOIBatch, kind: str = "abc", seed: int = 0) -> IOIBatch:
    """The corrupted prompts patching compares against; same templates, places, objects, positions.

    - ``"abc"``: all three name slots get three fresh names ("when tom and ben ..., eve gave a drink to"):
      no name is repeated, so the information "which name is duplicated" is gone everywhere.
    - ``"s2_io"``: the second subject mention becomes the IO ("..., mary gave a drink to"): the
      *other* name is now the right answer, so the logit difference flips sign.
    - ``"third_name"``: only S2 changes, to a name not in the sentence: a minimal corruption
      that removes the duplication signal at one position.

    The returned batch keeps the clean ``io``/``s`` labels, so the logit difference of a
    corrupted run is measured for the *clean* answer pair.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
    generator = torch.Generator().manual_seed(seed)
    tokens = batch.tokens.clone()
    if kind == "abc":
        fresh = _other_names(torch.stack([batch.io, batch.s], dim=1), 3, generator)
        tokens[:, POS_A], tokens[:, POS_B], tokens[:, POS_S2] = fresh[:, 0], fresh[:, 1], fresh[:, 2]
    elif kind == "s2_io":
        tokens[:, POS_S2] = batch.io
    else:
        tokens[:, POS_S2] = _other_names(torch.stack([batch.io, batch.s], dim=1), 1, generator)[:, 0]
    return replace(batch, tokens=tokens)


def describe(tokens: Int[torch.Tensor, " seq"]) -> str:
    words = list(SPECIAL_TOKENS) + vocabulary()
    return " ".join(words[int(t)] for t in tokens)


__all__ = ["CORRUPTIONS", "D_VOCAB", "HELD_OUT_PAIRS", "IOIBatch", "NAMES", "NAME_IDS", "POS_A", "POS_B", "POS_END",
           "POS_S2", "PROMPT_LEN", "TEMPLATES", "TRAIN_PAIRS", "corrupt", "describe", "sample", "tokenizer",
           "vocabulary", "word_id"]
