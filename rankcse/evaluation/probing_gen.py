"""Surrogate probing tasks generated from raw sentences, because SentEval's probing files are not shipped.

Five of SentEval's ten probing tasks (Conneau et al., 2018) can be approximated from plain
sentences without a parser or tagger. The rebuilt tasks are *surrogates*: same question,
different sentences and heuristics. Their names end in ``_gen`` everywhere (task keys, metric
keys, files, tables).

- ``sentlen_gen`` (surface): the sentence length in words, in ``bins`` equal-frequency bins of
  the corpus' length distribution (SentEval: 6 fixed bins).
- ``wc_gen`` (surface): which of 30 mid-frequency words the sentence contains; the words are drawn
  (seeded) from the alphabetic words of document-frequency ranks 50-300 that occur in at least
  100 sentences, and a sentence qualifies when exactly one target word occurs in it, once
  (SentEval: 1,000 words of frequency ranks 2k-3k).
- ``bshift_gen`` (syntactic): ``O`` the sentence as is, ``I`` two adjacent words swapped. Only
  alphabetic, different words are swapped and never the first word, so capitalisation and
  punctuation give nothing away.
- ``coordinv_gen`` (semantic): ``O`` a sentence of two clauses joined by one coordinating
  conjunction, ``I`` the clauses in inverted order. A clause split is accepted only when exactly one
  conjunction position qualifies: both sides have at least three words and an auxiliary or copula,
  and the right side starts like a subject (determiner, pronoun, number or capitalised word). The
  sentence-initial capital moves to the new first clause.
- ``somo_gen`` (semantic): ``O`` the sentence as is, ``C`` one lower-case content word (not a
  closed-class word, seen 5+ times) replaced by another content word whose frequency is within a
  factor 2 and that forms bigrams with both neighbours that occur in the corpus -- SentEval's
  OddManOut matches bigram frequencies so that a language model cannot spot the change.

Each task asks for 6,000 / 1,000 / 2,000 train / valid / test examples (:class:`GenSizes`); when the
corpus has too few for the rarest label, all splits shrink in proportion (valid and test keep at
least 5 per label). On the packaged corpus wc_gen gets about 1,500 / 240 / 480 and coordinv_gen
about 110 / 18 / 36 (few sentences there coordinate two clauses; a larger corpus fixes both).

Every source sentence is used at most once per task (as original or modified), labels are
balanced, and the splits share no sentence. The same corpus and seed give the same task.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankcse.errors import ConfigError, DataError
from rankcse.paths import DEFAULT_CORPUS

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_SEED = 1111  # SentEval's default seed; fixed so every trial probes the same data
MIN_PER_CLASS_SPLIT = 5  # fewer examples per class in a split makes the probe meaningless

CONJUNCTIONS = frozenset({"and", "but", "or", "so", "yet"})
AUXILIARIES = frozenset(
    "is are am was were be been being has have had does do did will would can could shall should may might must 're 'm 've 'll 'd".split()
)
#: "'s" is a verb ("it 's raining") only after these; after a noun it is a possessive.
S_VERB_AFTER = frozenset("it he she that there here what who this".split())
SUBJECT_STARTS = frozenset(
    "a an the this that these those some many several two three four five six one another each every no any all both "
    "he she it they we i you his her their its my our your there here people someone somebody nobody everyone".split()
)
FINAL_PUNCT = frozenset({".", "!", "?", '"', "''", "'", "``"})
#: Closed-class words that somo_gen never replaces (it targets nouns, verbs, adjectives).
FUNCTION_WORDS = (
    AUXILIARIES
    | SUBJECT_STARTS
    | CONJUNCTIONS
    | frozenset(
        "of in on at to for with by from into onto over under near behind through across along around about against between "
        "during after before while as than like up down out off not nor if when where who whom whose which what how why "
        "him them me us her his its their our your very too also just only then".split()
    )
)


@dataclass(frozen=True)
class GeneratedSplit:
    """One split of a generated task: sentences, their string labels, and the corpus line each came from."""

    sentences: list[str]
    labels: list[str]
    sources: list[int]


#: Per label, ``(sentence, index of its source sentence)`` in a seeded random order.
Candidates = dict[str, list[tuple[str, int]]]


@dataclass(frozen=True)
class GenSizes:
    """Requested examples per split (balanced over labels); less when the corpus runs short."""

    train: int = 6000
    valid: int = 1000
    test: int = 2000

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.train, self.valid, self.test)


# -- corpus ----------------------------------------------------------------------------------------


def read_sentences(path: str | Path | None = None) -> list[str]:
    """Distinct, whitespace-normalised, non-empty sentences of a UTF-8 file (default: the packaged corpus)."""
    path = Path(path or DEFAULT_CORPUS).expanduser()
    if not path.is_file():
        raise DataError(f"probing corpus {path} does not exist; pass --probing-corpus PATH (one sentence a line)")
    seen: set[str] = set()
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        text = " ".join(line.split())
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    if not out:
        raise DataError(f"probing corpus {path} holds no sentences")
    return out


# -- balancing and splitting -----------------------------------------------------------------------


def balance_and_split(candidates: Candidates, sizes: GenSizes, task: str) -> dict[str, GeneratedSplit]:
    """Take the same number of examples from every label and cut them into train / valid / test.

    ``candidates`` lists each label's examples in a seeded random order, each from a different
    source sentence. Requested sizes shrink proportionally when the rarest label has too few.
    """
    labels = sorted(candidates)
    if len(labels) < 2:
        raise DataError(f"{task}: the corpus yields fewer than two labels; pass a larger or more varied --probing-corpus")
    wanted = [math.ceil(n / len(labels)) for n in sizes.as_tuple()]
    available = min(len(candidates[label]) for label in labels)
    scale = min(1.0, available / sum(wanted))
    per_label = [int(w * scale) for w in wanted]
    for i in (1, 2):  # a short corpus still gets usable valid and test splits, at train's expense
        lack = max(0, MIN_PER_CLASS_SPLIT - per_label[i])
        per_label[i] += lack
        per_label[0] -= lack
    if min(per_label) < MIN_PER_CLASS_SPLIT:
        raise DataError(
            f"{task}: the corpus yields only {available} example(s) per label, too few for three splits; pass a larger --probing-corpus"
        )
    if scale < 1.0:
        log.info("%s: the corpus yields %d examples per label; using %s per label for train/valid/test", task, available, per_label)
    out = {}
    start = 0
    for split, n in zip(SPLITS, per_label):
        chosen = [(text, source, label) for label in labels for text, source in candidates[label][start : start + n]]
        out[split] = GeneratedSplit([c[0] for c in chosen], [c[2] for c in chosen], [c[1] for c in chosen])
        start += n
    return out


def _interleave(split: GeneratedSplit, rng: np.random.Generator) -> GeneratedSplit:
    order = rng.permutation(len(split.sentences))
    return GeneratedSplit([split.sentences[i] for i in order], [split.labels[i] for i in order], [split.sources[i] for i in order])


def _drop_collisions(candidates: Candidates, originals: set[str]) -> Candidates:
    """Drop modified sentences that equal some corpus sentence or another example (case-insensitive)."""
    seen = set()
    out: Candidates = {}
    for label in sorted(candidates):
        kept = []
        for text, source in candidates[label]:
            key = text.lower()
            if key in seen or (label != "O" and key in originals):
                continue
            seen.add(key)
            kept.append((text, source))
        out[label] = kept
    return out


# -- the four generators ---------------------------------------------------------------------------


def gen_sentlen(sentences: Sequence[str], rng: np.random.Generator, bins: int = 6) -> Candidates:
    """Label = bin of the word count; bins are equal-frequency ranges of the corpus' lengths."""
    lengths = np.array([len(s.split()) for s in sentences])
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)[1:-1], method="lower"))
    # bin b holds lengths in (edges[b-1], edges[b]]; labels name the range and sort numerically
    lows = np.concatenate([[lengths.min()], edges + 1])
    highs = np.concatenate([edges, [lengths.max()]])
    names = [f"{lo:02d}-{hi:02d}" for lo, hi in zip(lows, highs)]
    which = np.searchsorted(edges, lengths, side="left")
    out: Candidates = {name: [] for name in names}
    for i in rng.permutation(len(sentences)):
        out[names[which[i]]].append((sentences[i], int(i)))
    return out


def gen_wc(
    sentences: Sequence[str], rng: np.random.Generator, words: int = 30, band: tuple[int, int] = (50, 300), min_df: int = 100
) -> Candidates:
    """Label = the one target word (of ``words`` mid-frequency words) that the sentence contains."""
    tokens = [[w.lower() for w in s.split()] for s in sentences]
    df = Counter(w for toks in tokens for w in set(toks) if w.isalpha())
    ranked = sorted(df, key=lambda w: (-df[w], w))
    pool = [w for w in ranked[band[0] : band[1]] if df[w] >= min_df]
    if len(pool) < words:
        raise DataError(
            f"wc_gen: the corpus has only {len(pool)} words of frequency ranks {band[0]}-{band[1]} in {min_df}+ sentences; "
            "pass a larger --probing-corpus"
        )
    targets = sorted(pool[i] for i in rng.choice(len(pool), size=words, replace=False))
    target_set = set(targets)
    out: Candidates = {w: [] for w in targets}
    for i in rng.permutation(len(sentences)):
        hits = [w for w in tokens[i] if w in target_set]
        if len(hits) == 1:
            out[hits[0]].append((sentences[i], int(i)))
    return out


def bigram_shift(tokens: list[str], rng: np.random.Generator) -> list[str] | None:
    """Swap one random adjacent pair of different alphabetic words (never the first word); None if there is none."""
    spots = [
        i
        for i in range(1, len(tokens) - 1)
        if tokens[i].isalpha() and tokens[i + 1].isalpha() and tokens[i].lower() != tokens[i + 1].lower()
    ]
    if not spots:
        return None
    i = spots[int(rng.integers(len(spots)))]
    return tokens[:i] + [tokens[i + 1], tokens[i]] + tokens[i + 2 :]


def gen_bshift(sentences: Sequence[str], rng: np.random.Generator) -> Candidates:
    """Label ``O`` (original) or ``I`` (a bigram inverted); each source sentence gives one of the two."""
    out: Candidates = {"O": [], "I": []}
    flip = False
    for i in rng.permutation(len(sentences)):
        tokens = sentences[i].split()
        shifted = bigram_shift(tokens, rng)
        if shifted is None:
            continue
        if flip:
            out["I"].append((" ".join(shifted), int(i)))
        else:
            out["O"].append((sentences[i], int(i)))
        flip = not flip
    return _drop_collisions(out, {s.lower() for s in sentences})


def _has_verb(words: list[str]) -> bool:
    lowered = [w.lower() for w in words]
    return any(w in AUXILIARIES or (w == "'s" and i > 0 and lowered[i - 1] in S_VERB_AFTER) for i, w in enumerate(lowered))


def coordination_split(tokens: list[str]) -> tuple[list[str], bool, str, list[str], list[str]] | None:
    """``(left, comma, conjunction, right, tail)`` when the sentence is two clauses joined by one conjunction, else None."""
    end = len(tokens)
    while end > 0 and tokens[end - 1] in FINAL_PUNCT:
        end -= 1
    body, tail = tokens[:end], tokens[end:]
    found = []
    for i, word in enumerate(body):
        if word.lower() not in CONJUNCTIONS:
            continue
        comma = i > 0 and body[i - 1] == ","
        left, right = body[: i - 1] if comma else body[:i], body[i + 1 :]
        if len(left) < 3 or len(right) < 3:
            continue
        starts_like_subject = right[0].lower() in SUBJECT_STARTS or right[0][:1].isupper() or right[0].isdigit()
        if starts_like_subject and _has_verb(left) and _has_verb(right):
            found.append((left, comma, word, right, tail))
    return found[0] if len(found) == 1 else None


def invert_coordination(left: list[str], comma: bool, conj: str, right: list[str], tail: list[str]) -> list[str]:
    """The clauses in inverted order, moving the sentence-initial capital to the new first clause."""
    left, right = list(left), list(right)
    if left[0][:1].isupper() and not right[0][:1].isupper():
        right[0] = right[0][:1].upper() + right[0][1:]
        if left[0].lower() in SUBJECT_STARTS and left[0] != "I":
            left[0] = left[0].lower()
    return right + ([","] if comma else []) + [conj] + left + tail


def gen_coordinv(sentences: Sequence[str], rng: np.random.Generator) -> Candidates:
    """Label ``O`` (original clause order) or ``I`` (inverted); each source sentence gives one of the two."""
    out: Candidates = {"O": [], "I": []}
    flip = False
    for i in rng.permutation(len(sentences)):
        parts = coordination_split(sentences[i].split())
        if parts is None:
            continue
        if flip:
            out["I"].append((" ".join(invert_coordination(*parts)), int(i)))
        else:
            out["O"].append((sentences[i], int(i)))
        flip = not flip
    return _drop_collisions(out, {s.lower() for s in sentences})


def gen_somo(sentences: Sequence[str], rng: np.random.Generator, min_count: int = 5) -> Candidates:
    """Label ``O`` (original) or ``C`` (one content word replaced by another that fits its neighbours)."""
    tokenized = [s.split() for s in sentences]
    lowered = [[w.lower() for w in toks] for toks in tokenized]
    freq = Counter(w for toks in lowered for w in toks)
    follows: dict[str, set[str]] = {}
    precedes: dict[str, set[str]] = {}
    for toks in lowered:
        for a, b in zip(toks, toks[1:]):
            follows.setdefault(a, set()).add(b)
            precedes.setdefault(b, set()).add(a)

    def content(word: str) -> bool:
        return word.isalpha() and word.islower() and len(word) >= 3 and word not in FUNCTION_WORDS and freq[word] >= min_count

    out: Candidates = {"O": [], "C": []}
    flip = False
    for i in rng.permutation(len(sentences)):
        toks, low = tokenized[i], lowered[i]
        spots = [j for j in range(1, len(toks) - 1) if content(toks[j])]
        replaced = None
        for j in rng.permutation(spots) if spots else []:
            word = low[j]
            # SentEval matches the bigrams the new word forms; here both bigrams must occur in the corpus
            # and the new word's frequency must be within a factor 2 of the old one's.
            options = sorted(
                w
                for w in follows.get(low[j - 1], set()) & precedes.get(low[j + 1], set())
                if w != word and content(w) and freq[word] / 2 <= freq[w] <= 2 * freq[word]
            )
            if options:
                replaced = toks[:j] + [options[int(rng.integers(len(options)))]] + toks[j + 1 :]
                break
        if replaced is None:
            continue
        if flip:
            out["C"].append((" ".join(replaced), int(i)))
        else:
            out["O"].append((sentences[i], int(i)))
        flip = not flip
    return _drop_collisions(out, {s.lower() for s in sentences})


@dataclass(frozen=True)
class Generator:
    """A surrogate task: its generator function and the SentEval task it stands in for."""

    key: str
    stands_for: str
    group: str
    build: Callable[..., Candidates]


GENERATORS: dict[str, Generator] = {
    g.key: g
    for g in (
        Generator("sentlen_gen", "Length", "surface", gen_sentlen),
        Generator("wc_gen", "WordContent", "surface", gen_wc),
        Generator("bshift_gen", "BigramShift", "syntactic", gen_bshift),
        Generator("coordinv_gen", "CoordinationInversion", "semantic", gen_coordinv),
        Generator("somo_gen", "OddManOut", "semantic", gen_somo),
    )
}


def _task_seed(seed: int, key: str) -> int:
    # independent, reproducible streams per task (Python's hash() is salted per process)
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def generate_task(key: str, sentences: Sequence[str], seed: int = DEFAULT_SEED, sizes: GenSizes = GenSizes()) -> dict[str, GeneratedSplit]:
    """Build one surrogate task from ``sentences``: ``{split: GeneratedSplit}``, splits shuffled, labels balanced."""
    if key not in GENERATORS:
        raise ConfigError(f"unknown generated probing task {key!r}: use any of {', '.join(GENERATORS)}")
    rng = np.random.default_rng(_task_seed(seed, key))
    candidates = GENERATORS[key].build(sentences, rng)
    splits = balance_and_split(candidates, sizes, key)
    return {name: _interleave(split, rng) for name, split in splits.items()}


@functools.lru_cache(maxsize=8)
def _generate_cached(key: str, corpus: str, stamp: tuple[int, int], seed: int, sizes: GenSizes) -> dict[str, GeneratedSplit]:
    return generate_task(key, read_sentences(corpus), seed, sizes)


def generate_from_corpus(
    key: str, corpus: str | Path | None = None, seed: int = DEFAULT_SEED, sizes: GenSizes = GenSizes()
) -> dict[str, GeneratedSplit]:
    """:func:`generate_task` on a corpus file (default: the packaged one), cached per process."""
    path = Path(corpus or DEFAULT_CORPUS).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"probing corpus {path} does not exist; pass --probing-corpus PATH (one sentence a line)")
    stat = path.stat()
    return _generate_cached(key, str(path), (stat.st_size, stat.st_mtime_ns), seed, sizes)
