"""Generated surrogate probing tasks: balanced, split-disjoint, reproducible, and each label means what it says."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rankcse.errors import DataError
from rankcse.evaluation.probing import PROBING_TASKS, ProbingData, load_task, read_probing_file, write_probing_file
from rankcse.evaluation.probing_gen import (
    DEFAULT_SEED,
    GENERATORS,
    SPLITS,
    GenSizes,
    bigram_shift,
    coordination_split,
    generate_task,
    invert_coordination,
    read_sentences,
)

#: Each task is built from the first SLICE sentences of the packaged corpus (27.7k) at a tenth of the default sizes,
#: except those whose generator needs the whole corpus to find enough sentences (they are fast).
SLICE, SIZES, WHOLE = 2000, GenSizes(600, 100, 200), ("wc_gen", "coordinv_gen")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return read_sentences()


def _generate(key: str, corpus: list[str], seed: int = DEFAULT_SEED) -> dict:
    if key in WHOLE:
        return generate_task(key, corpus, seed=seed)
    return generate_task(key, corpus[:SLICE], seed=seed, sizes=SIZES)


@pytest.fixture(scope="module")
def tasks(corpus) -> dict:
    return {key: _generate(key, corpus) for key in GENERATORS}


@pytest.mark.parametrize("key", list(GENERATORS))
def test_labels_are_balanced_in_every_split(tasks, key) -> None:
    labels = set(tasks[key]["train"].labels)
    assert len(labels) >= 2
    for split in SPLITS:
        counts = Counter(tasks[key][split].labels)
        assert set(counts) == labels, split
        assert len(set(counts.values())) == 1, (split, counts)


@pytest.mark.parametrize("key", list(GENERATORS))
def test_no_sentence_or_source_sentence_is_shared_between_splits(tasks, key) -> None:
    texts = {split: {s.lower() for s in tasks[key][split].sentences} for split in SPLITS}
    sources = {split: tasks[key][split].sources for split in SPLITS}
    for split in SPLITS:
        assert len(texts[split]) == len(tasks[key][split].sentences), f"duplicate sentence inside {split}"
        assert len(set(sources[split])) == len(sources[split]), f"a source sentence used twice inside {split}"
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not texts[a] & texts[b], (a, b)
        assert not set(sources[a]) & set(sources[b]), (a, b)


def test_same_seed_gives_identical_files_and_another_seed_different_ones(corpus, tasks, tmp_path) -> None:
    for key in GENERATORS:
        spec = PROBING_TASKS[key]
        files = []
        for seed, name in ((1111, "a"), (1111, "b"), (7, "c")):
            splits = tasks[key] if name == "a" else _generate(key, corpus, seed=seed)  # "a": the fixture's (seed 1111)
            data = ProbingData(spec, {s: (g.sentences, g.labels) for s, g in splits.items()}, "test")
            files.append(write_probing_file(data, tmp_path / name / spec.file).read_bytes())
        assert files[0] == files[1], key
        assert files[0] != files[2], key


def test_written_files_read_back_in_senteval_format(tasks, tmp_path) -> None:
    spec = PROBING_TASKS["bshift_gen"]
    splits = {s: (g.sentences, g.labels) for s, g in tasks["bshift_gen"].items()}
    path = write_probing_file(ProbingData(spec, splits, "test"), tmp_path / spec.file)
    first = path.read_text().splitlines()[0].split("\t")
    assert first[0] == "tr" and first[1] in {"O", "I"} and len(first) == 3
    assert read_probing_file(path) == splits


def test_sentlen_labels_are_the_length_bins(tasks) -> None:
    bins = sorted({label for label in tasks["sentlen_gen"]["train"].labels})
    assert len(bins) == 6
    ranges = [tuple(int(x) for x in b.split("-")) for b in bins]
    assert all(hi < next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))  # disjoint, ordered
    for split in SPLITS:
        for sentence, label in zip(tasks["sentlen_gen"][split].sentences, tasks["sentlen_gen"][split].labels):
            lo, hi = (int(x) for x in label.split("-"))
            assert lo <= len(sentence.split()) <= hi


def test_wc_sentences_hold_exactly_their_target_word(tasks) -> None:
    targets = set(tasks["wc_gen"]["train"].labels)
    assert len(targets) == 30
    for split in SPLITS:
        for sentence, label in zip(tasks["wc_gen"][split].sentences, tasks["wc_gen"][split].labels):
            hits = [w for w in sentence.lower().split() if w in targets]
            assert hits == [label]


def test_modified_sentences_differ_from_their_source_as_described(tasks, corpus) -> None:
    for key, changed, check in (
        # a bigram shift keeps the words and the first word, and changes the order
        (
            "bshift_gen",
            "I",
            lambda new, old: sorted(new.split()) == sorted(old.split()) and new.split()[0] == old.split()[0] and new != old,
        ),
        # an inversion keeps the words (up to the moved capital)
        ("coordinv_gen", "I", lambda new, old: sorted(new.lower().split()) == sorted(old.lower().split()) and new != old),
        # odd man out: same length, exactly one word replaced
        (
            "somo_gen",
            "C",
            lambda new, old: len(new.split()) == len(old.split()) and sum(a != b for a, b in zip(new.split(), old.split())) == 1,
        ),
    ):
        for split in SPLITS:
            part = tasks[key][split]
            for sentence, label, source in zip(part.sentences, part.labels, part.sources):
                if label == changed:
                    assert check(sentence, corpus[source]), (key, sentence, corpus[source])
                else:
                    assert sentence == corpus[source]


def test_coordination_inversion_heuristics() -> None:
    parts = coordination_split("A man is playing a guitar and a woman is singing .".split())
    assert parts is not None
    assert " ".join(invert_coordination(*parts)) == "A woman is singing and a man is playing a guitar ."
    comma = coordination_split("the film is long , but it is funny .".split())
    assert " ".join(invert_coordination(*comma)) == "it is funny , but the film is long ."
    assert coordination_split("A man and a woman are dancing in the street .".split()) is None  # noun phrases, not clauses
    assert coordination_split("A man is cutting a tomato and an onion .".split()) is None
    assert coordination_split("Tom 's car is red and Ann 's car is blue .".split()) is not None
    assert coordination_split("He is near Tom 's car and Ann 's bike .".split()) is None  # possessive 's is no verb


def test_bigram_shift_never_moves_the_first_word_or_punctuation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = bigram_shift("The old man , tired , sat down .".split(), rng)
        assert out[0] == "The" and out[3] == "," and out[5] == "," and out[-1] == "."
    assert bigram_shift("A b .".split(), rng) is None


def test_short_corpus_is_an_error_naming_the_fix(tmp_path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("a man is singing and a woman is dancing .\nthe cat sleeps .\n")
    with pytest.raises(DataError, match="pass a larger --probing-corpus"):
        load_task("coordinv_gen", corpus=small)
    with pytest.raises(DataError, match="does not exist"):
        load_task("sentlen_gen", corpus=tmp_path / "missing.txt")


def test_sizes_shrink_but_keep_valid_and_test_usable(corpus) -> None:
    splits = generate_task("coordinv_gen", corpus, sizes=GenSizes(6000, 1000, 2000))
    n = {s: len(splits[s].sentences) for s in SPLITS}
    assert n["train"] > n["test"] >= n["valid"] >= 2 * 5
