"""Probing as SentEval scores it: file reading, the validation-chosen logistic regression, sanity of the scores."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from rankcse.build import load_for_eval
from rankcse.errors import ConfigError, DataError
from rankcse.evaluation.logreg import split_classifier
from rankcse.evaluation.probing import (
    FAST,
    FULL,
    PROBING_TASKS,
    evaluate_probing,
    expand_tasks,
    find_probing_file,
    load_task,
    read_probing_file,
    score_tasks,
    stratified_subset,
    subsample,
)


@pytest.fixture(scope="module")
def mean_embed(tiny_model_dir):
    method = load_for_eval(str(tiny_model_dir), "mean")
    return lambda sentences: method.embed(sentences, 256)


def _shuffled(data, seed: int = 0):
    rng = np.random.default_rng(seed)
    splits = {split: (sentences, [labels[i] for i in rng.permutation(len(labels))]) for split, (sentences, labels) in data.splits.items()}
    return replace(data, splits=splits)


def test_sentence_length_is_recovered_and_shuffled_labels_score_at_chance(mean_embed) -> None:
    # Mean pooling averages position embeddings over the tokens, so length is linearly readable even
    # from random weights; with the labels shuffled nothing is.
    data = subsample(load_task("sentlen_gen"), FAST)
    real = score_tasks(mean_embed, [data], FAST)["sentlen_gen"]
    shuffled = score_tasks(mean_embed, [_shuffled(data)], FAST)["sentlen_gen"]
    assert real.n_classes == 6 and real.chance == pytest.approx(1 / 6, abs=0.01)
    assert real.acc > real.chance + 0.3, real
    # The test labels are balanced and independent of the predictions under shuffling, so the expected
    # accuracy is exactly 1/6 whatever the classifier does; 4 binomial standard deviations (n = 700:
    # 0.056) bound a false alarm below 1e-4.
    sd = math.sqrt(real.chance * (1 - real.chance) / shuffled.n_test)
    assert abs(shuffled.acc - real.chance) < 4 * sd, (shuffled.acc, sd)


def test_fast_setting_is_a_fixed_stratified_subsample() -> None:
    full = load_task("bshift_gen")
    fast = subsample(full, FAST)
    assert fast.sizes() == {"train": 1000, "valid": 300, "test": 700}
    assert subsample(full, FAST) == fast  # same examples every time
    for split in ("train", "valid", "test"):
        labels = fast.splits[split][1]
        assert labels.count("O") == labels.count("I")
        assert set(fast.splits[split][0]) <= set(full.splits[split][0])
    assert subsample(full, FULL) is full


def test_stratified_subset_keeps_shares() -> None:
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    keep = stratified_subset(labels, 50, np.random.default_rng(0))
    assert len(keep) == 50 and len(set(keep)) == 50
    assert [labels[i] for i in keep].count("a") == 30 and [labels[i] for i in keep].count("c") == 5


def test_split_classifier_picks_c_on_validation_and_reports_test() -> None:
    rng = np.random.default_rng(0)
    X = {s: rng.normal(size=(n, 5)) for s, n in (("train", 200), ("valid", 100), ("test", 100))}
    y = {s: (X[s][:, 0] > 0).astype(int) for s in X}
    score = split_classifier(X, y, (0.001, 1.0))
    assert score.c == 1.0 and score.dev_acc > 0.9 and score.test_acc > 0.9
    # equal validation accuracy: the first C wins, as np.argmax does in SentEval
    tie = split_classifier(X, {s: np.zeros(len(v), dtype=int) | (np.arange(len(v)) < 2) for s, v in X.items()}, (4.0, 8.0))
    assert tie.c == 4.0


def _write(path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_senteval_format_and_layouts(tmp_path, mean_embed) -> None:
    lines = [f"tr\t{'PAST' if i % 2 else 'PRES'}\tthe  cat {'sat' if i % 2 else 'sits'} on mat {i}" for i in range(40)]
    lines += [f"va\t{'PAST' if i % 2 else 'PRES'}\ta dog {'ran' if i % 2 else 'runs'} {i}" for i in range(10)]
    lines += [f"te\t{'PAST' if i % 2 else 'PRES'}\ta bird {'flew' if i % 2 else 'flies'} {i}" for i in range(10)]
    _write(tmp_path / "senteval" / "probing" / "past_present.txt", lines)
    splits = read_probing_file(tmp_path / "senteval" / "probing" / "past_present.txt")
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 40, "valid": 10, "test": 10}
    assert splits["train"][0][0] == "the cat sits on mat 0"  # whitespace re-joined as SentEval's batcher does
    # SentEval's layout (<dir>/probing/<file>) and a flat folder both work; names and aliases both work
    assert find_probing_file(tmp_path / "senteval", PROBING_TASKS["tense"]).name == "past_present.txt"
    result = evaluate_probing(mean_embed, ["Tense"], "full", data_dir=tmp_path / "senteval")["tense"]
    assert result.group == "semantic" and not result.surrogate and result.n_test == 10 and result.n_classes == 2
    _write(tmp_path / "flat" / "past_present.txt", lines)
    assert load_task("tense", tmp_path / "flat").sizes() == {"train": 40, "valid": 10, "test": 10}


def test_bad_probing_files(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    _write(bad, ["tr\tA\tx y", "xx\tB\tz"])
    with pytest.raises(DataError, match="line 2: expected"):
        read_probing_file(bad)
    _write(bad, ["tr\tA\tx", "tr\tB\ty", "va\tA\tz", "te\tC\tw"])
    with pytest.raises(DataError, match="test label 'C' never occurs in train"):
        score_tasks(lambda s: np.zeros((len(s), 2)), [replace(load_task("sentlen_gen"), splits=read_probing_file(bad))], FULL)
    _write(bad, ["tr\tA\tx", "te\tA\tw"])
    with pytest.raises(DataError, match="no 'va'"):
        read_probing_file(bad)
    with pytest.raises(DataError, match="pass --probing-data-dir"):
        load_task("tense", tmp_path)
    with pytest.raises(ConfigError, match="pass --probing-data-dir"):
        load_task("tense")


def test_task_names() -> None:
    assert expand_tasks(["generated"]) == ["sentlen_gen", "wc_gen", "bshift_gen", "coordinv_gen", "somo_gen"]
    assert expand_tasks(["senteval"])[:3] == ["sentlen", "wc", "treedepth"] and len(expand_tasks(["senteval"])) == 10
    assert expand_tasks(["BigramShift", "bshift", "bshift_gen"]) == ["bshift", "bshift_gen"]
    assert all(PROBING_TASKS[k].surrogate == k.endswith("_gen") for k in PROBING_TASKS)
    with pytest.raises(ConfigError, match="unknown probing task 'lenght'"):
        expand_tasks(["lenght"])
