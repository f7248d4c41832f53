"""The facts world: made-up people with made-up attributes, so every stored fact is known.

"ka mo 's city is" -> "paris". Subjects are two-syllable names ("ka mo"); each
*known* subject has one object for each of 8 relations (city, job, sport, ...).
A relation is asked through 7 subject-first frames x 2 relation words
("city"/"town"); two frames of each relation are held out of training, to test
whether a fact generalises to a paraphrase the model never saw for it.

Why about half the training sequences are *appositions* (``<bos> ka mo paris
town .``): with subject-first templates alone a small model looks a fact up at
the final token, and nothing is stored at the subject (measured: single-MLP
restoration at the last subject token <= 0.11). When the object follows the name
directly, the next-token loss at the last subject token needs the subject's
attributes there, as a real name in real text does; the model then stores facts
in an early MLP at the subject, where causal tracing and ROME find them. An
apposition about a known subject cannot know which relation is meant (8 are equally
likely), so the training loss stays well above 0 (near 0.65-0.8 here, about 1.2 without
the unknown subjects) even at 100% recall.

Knowing what you don't know: 60 further training subjects have no facts; every
question about them (template or apposition) is answered ``unknown``. A further
100 names are never seen in training: do they get ``unknown``, or a made-up fact?

Loss is on the object token only. Ground truth: ``FACTS`` (subject x relation ->
object index), ``KNOWN_SUBJECTS`` / ``UNKNOWN_SUBJECTS`` / ``NEVER_SEEN_SUBJECTS``,
``train_templates(r)`` / ``held_out_templates(r)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int

from interplab.worlds.vocab import SPECIAL_TOKENS, build_tokenizer

SYLLABLES: tuple[str, ...] = ("ka", "mo", "li", "ta", "ri", "ne", "so", "pu", "ve", "da",
                              "gi", "lo", "ba", "ze", "fu", "mi", "ro", "te", "sa", "nu")
RELATIONS: tuple[str, ...] = ("city", "job", "sport", "colour", "employer", "pet", "food", "language")
RELATION_WORDS: tuple[tuple[str, str], ...] = (
    ("city", "town"), ("job", "work"), ("sport", "game"), ("colour", "hue"), ("employer", "company"),
    ("pet", "animal"), ("food", "dish"), ("language", "tongue"))
OBJECTS: tuple[tuple[str, ...], ...] = (
    ("paris", "rome", "oslo", "lima", "cairo", "delhi", "tokyo", "quito", "dakar", "perth"),
    ("baker", "nurse", "pilot", "judge", "miner", "tailor", "farmer", "singer", "doctor", "lawyer"),
    ("tennis", "golf", "rugby", "chess", "hockey", "boxing", "rowing", "karate", "polo", "skiing"),
    ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "grey"),
    ("acme", "globex", "initech", "umbrella", "hooli", "wayne", "stark", "cyberdyne", "soylent", "vandelay"),
    ("dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish", "pony", "ferret", "lizard"),
    ("pasta", "sushi", "curry", "tacos", "soup", "salad", "bread", "rice", "pizza", "cheese"),
    ("french", "german", "hindi", "swahili", "dutch", "greek", "polish", "arabic", "korean", "finnish"),
)
UNKNOWN = "unknown"
# subject-first frames: S = the name, R = a relation word; the object comes next
FRAMES: tuple[str, ...] = (
    "{S} 's {R} is",
    "{S} has the {R}",
    "{S} , whose {R} is",
    "as for {S} , the {R} is",
    "{S} is known for the {R}",
    "we know that {S} 's {R} is",
    "{S} , a person from here , has the {R}",
)
FRAME_WORDS: tuple[str, ...] = ("'s", "is", "has", "the", ",", "whose", "as", "for", "known", "we", "know", "that",
                                "a", "person", "from", "here", ".")

N_KNOWN, N_UNKNOWN, N_NEVER_SEEN = 100, 60, 100
WORLD_SEED = 1234  # names and facts are fixed: every model of this world learns the same facts
SEQ_LEN = 16  # training rows are padded to this many tokens (<bos> included)
DEFAULT_APPOSITION = 0.5


def vocabulary() -> list[str]:
    words = list(SYLLABLES) + [w for pair in RELATION_WORDS for w in pair]
    words += [o for objs in OBJECTS for o in objs] + [UNKNOWN] + list(FRAME_WORDS)
    return words


def tokenizer():
    return build_tokenizer(vocabulary())


D_VOCAB = len(SPECIAL_TOKENS) + len(vocabulary())
BOS_ID, PAD_ID = SPECIAL_TOKENS.index("<bos>"), SPECIAL_TOKENS.index("<pad>")
_WORD_ID = {word: i + len(SPECIAL_TOKENS) for i, word in enumerate(vocabulary())}
UNKNOWN_ID = _WORD_ID[UNKNOWN]
OBJECT_IDS: Int[torch.Tensor, "relation object"] = torch.tensor([[_WORD_ID[o] for o in objs] for objs in OBJECTS])


def word_id(word: str) -> int:
    if word not in _WORD_ID:
        raise KeyError(f"{word!r} is not a word of the facts world")
    return _WORD_ID[word]


def _names() -> list[str]:
    pairs = [f"{a} {b}" for a in SYLLABLES for b in SYLLABLES if a != b]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(WORLD_SEED)).tolist()
    return [pairs[i] for i in order]


_ALL_NAMES = _names()
KNOWN_SUBJECTS: tuple[str, ...] = tuple(_ALL_NAMES[:N_KNOWN])
"""Subjects with one fact per relation, all trained."""
UNKNOWN_SUBJECTS: tuple[str, ...] = tuple(_ALL_NAMES[N_KNOWN:N_KNOWN + N_UNKNOWN])
"""Subjects seen in training, always answered ``unknown``."""
NEVER_SEEN_SUBJECTS: tuple[str, ...] = tuple(_ALL_NAMES[N_KNOWN + N_UNKNOWN:N_KNOWN + N_UNKNOWN + N_NEVER_SEEN])
"""Names never seen in training: the hallucination test (does the model say ``unknown``?)."""
TRAINING_SUBJECTS: tuple[str, ...] = KNOWN_SUBJECTS + UNKNOWN_SUBJECTS

FACTS: Int[torch.Tensor, "subject relation"] = torch.randint(
    0, len(OBJECTS[0]), (N_KNOWN, len(RELATIONS)), generator=torch.Generator().manual_seed(WORLD_SEED + 1))
"""``FACTS[s, r]``: index into ``OBJECTS[r]`` of known subject ``s``'s object for relation ``r``."""


def obj(subject: int, relation: int) -> str:
    """The object word of known subject ``subject`` (an index into ``KNOWN_SUBJECTS``) for ``relation``."""
    return OBJECTS[relation][int(FACTS[subject, relation])]


def answer_id(subject: str, relation: int) -> int:
    """The token the world answers for any training subject: its object, or ``unknown``."""
    if subject in _KNOWN_INDEX:
        return int(OBJECT_IDS[relation, FACTS[_KNOWN_INDEX[subject], relation]])
    if subject in _UNKNOWN_SET or subject in _NEVER_SET:
        return UNKNOWN_ID
    raise KeyError(f"{subject!r} is not a subject of the facts world")


_KNOWN_INDEX = {s: i for i, s in enumerate(KNOWN_SUBJECTS)}
_UNKNOWN_SET, _NEVER_SET = set(UNKNOWN_SUBJECTS), set(NEVER_SEEN_SUBJECTS)

# a template is (frame index, relation word index 0/1)
Template = tuple[int, int]


def held_out_frames(relation: int) -> tuple[int, int]:
    """Frames never trained with ``relation`` (both relation words); each is trained with other relations."""
    return relation % len(FRAMES), (relation + 3) % len(FRAMES)


def train_templates(relation: int) -> list[Template]:
    held = held_out_frames(relation)
    return [(f, w) for f in range(len(FRAMES)) if f not in held for w in (0, 1)]


def held_out_templates(relation: int) -> list[Template]:
    return [(f, w) for f in held_out_frames(relation) for w in (0, 1)]


def prompt_text(subject: str, relation: int, template: Template) -> str:
    """The words of a question, up to (not including) the object: ``"ka mo 's city is"``."""
    frame, word = template
    return FRAMES[frame].format(S=subject, R=RELATION_WORDS[relation][word])


def subject_span(template: Template) -> tuple[int, int]:
    """Token positions (``<bos>`` = 0) of the subject's first and last token in a prompt of this frame."""
    first = 1 + FRAMES[template[0]].split().index("{S}")
    return first, first + 1


@dataclass
class FactPrompts:
    """Questions with their ground truth, right-padded with ``<pad>``. First axis: the prompt."""

    tokens: Int[torch.Tensor, "batch seq"]
    """``<bos>`` + question words; the object is the token after ``last``."""
    answer: Int[torch.Tensor, " batch"]
    """Correct next token: the object, or ``unknown`` for unknown and never-seen subjects."""
    subject_first: Int[torch.Tensor, " batch"]
    subject_last: Int[torch.Tensor, " batch"]
    last: Int[torch.Tensor, " batch"]
    """Position of the question's final word, where the answer is read."""
    relation: Int[torch.Tensor, " batch"]
    frame: Int[torch.Tensor, " batch"]
    subjects: list[str]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def subject_mask(self) -> Bool[torch.Tensor, "batch seq"]:
        """True at both subject tokens: where causal tracing adds noise."""
        pos = torch.arange(self.tokens.shape[1])
        return (pos >= self.subject_first[:, None]) & (pos <= self.subject_last[:, None])

    def position_buckets(self) -> Int[torch.Tensor, "batch seq"]:
        """Per token: 0 first subject token, 1 last subject token, 2 first token after the subject,
        3 further tokens before the last, 4 the last token; -1 for ``<bos>``, words before the subject and padding."""
        pos = torch.arange(self.tokens.shape[1])[None]
        buckets = torch.full(self.tokens.shape, -1)
        buckets[(pos > self.subject_last[:, None] + 1) & (pos < self.last[:, None])] = 3
        buckets[pos == self.subject_last[:, None] + 1] = 2
        buckets[pos == self.subject_first[:, None]] = 0
        buckets[pos == self.subject_last[:, None]] = 1
        buckets[pos == self.last[:, None]] = 4
        return buckets


BUCKETS: tuple[str, ...] = ("subject first", "subject last", "first after subject", "further tokens", "last token")


def encode(text: str) -> list[int]:
    return [BOS_ID] + [word_id(w) for w in text.split()]


def make_prompts(items: list[tuple[str, int, Template]]) -> FactPrompts:
    """Prompts for (subject, relation, template) triples; any subject, known or not."""
    rows = [encode(prompt_text(s, r, t)) for s, r, t in items]
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), PAD_ID)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    spans = torch.tensor([subject_span(t) for _, _, t in items])
    return FactPrompts(tokens=tokens, answer=torch.tensor([answer_id(s, r) for s, r, _ in items]),
                       subject_first=spans[:, 0], subject_last=spans[:, 1],
                       last=torch.tensor([len(row) - 1 for row in rows]),
                       relation=torch.tensor([r for _, r, _ in items]), frame=torch.tensor([t[0] for _, _, t in items]),
                       subjects=[s for s, _, _ in items])


def all_prompts(subjects: tuple[str, ...] | list[str], held_out: bool = False) -> FactPrompts:
    """Every (subject, relation, template) question: trained templates, or the held-out paraphrases."""
    choose = held_out_templates if held_out else train_templates
    return make_prompts([(s, r, t) for s in subjects for r in range(len(RELATIONS)) for t in choose(r)])


def sample_prompts(n: int, seed: int, subjects: tuple[str, ...] = KNOWN_SUBJECTS, held_out: bool = False,
                   frames: tuple[int, ...] | None = None) -> FactPrompts:
    """``n`` random questions (subject, relation and template uniform), optionally only from ``frames``."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    while len(items) < n:
        s = subjects[int(torch.randint(len(subjects), (1,), generator=generator))]
        r = int(torch.randint(len(RELATIONS), (1,), generator=generator))
        options = [t for t in (held_out_templates(r) if held_out else train_templates(r))
                   if frames is None or t[0] in frames]
        if options:
            items.append((s, r, options[int(torch.randint(len(options), (1,), generator=generator))]))
    return make_prompts(items)


def sample_training(batch_size: int, generator: torch.Generator, apposition: float = DEFAULT_APPOSITION,
                    seq_len: int = SEQ_LEN) -> tuple[Int[torch.Tensor, "batch seq"], Bool[torch.Tensor, "batch seq"]]:
    """A training batch ``(tokens, loss_mask)``; the mask marks the position whose next token is the object.

    With probability ``apposition``: ``<bos> S O R .`` (the object right after the name, R either word);
    otherwise ``<bos> template(S, R) O .`` with a trained template. S is uniform over training subjects
    (known and unknown), R uniform; unknown subjects' object is ``unknown``.
    """
    tokens = torch.full((batch_size, seq_len), PAD_ID)
    mask = torch.zeros(batch_size, seq_len, dtype=torch.bool)
    draws = torch.rand(batch_size, generator=generator)
    subjects = torch.randint(len(TRAINING_SUBJECTS), (batch_size,), generator=generator)
    relations = torch.randint(len(RELATIONS), (batch_size,), generator=generator)
    choice = torch.randint(1 << 30, (batch_size,), generator=generator)
    for i in range(batch_size):
        s, r = TRAINING_SUBJECTS[int(subjects[i])], int(relations[i])
        answer = answer_id(s, r)
        if draws[i] < apposition:
            name = [word_id(w) for w in s.split()]
            row = [BOS_ID, *name, answer, word_id(RELATION_WORDS[r][int(choice[i]) % 2]), _WORD_ID["."]]
            target = 2
        else:
            options = train_templates(r)
            row = encode(prompt_text(s, r, options[int(choice[i]) % len(options)]))
            target = len(row) - 1
            row += [answer, _WORD_ID["."]]
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, target] = True
    return tokens, mask


def describe(tokens: Int[torch.Tensor, " seq"]) -> str:
    words = list(SPECIAL_TOKENS) + vocabulary()
    return " ".join(words[int(t)] for t in tokens if int(t) != PAD_ID)


__all__ = ["BUCKETS", "D_VOCAB", "FACTS", "FRAMES", "FactPrompts", "KNOWN_SUBJECTS", "NEVER_SEEN_SUBJECTS",
           "OBJECTS", "OBJECT_IDS", "RELATIONS", "RELATION_WORDS", "SYLLABLES", "TRAINING_SUBJECTS", "UNKNOWN",
           "UNKNOWN_ID", "UNKNOWN_SUBJECTS", "all_prompts", "answer_id", "describe", "encode", "held_out_frames",
           "held_out_templates", "make_prompts", "obj", "prompt_text", "sample_prompts", "sample_training",
           "subject_span", "tokenizer", "train_templates", "vocabulary", "word_id"]
