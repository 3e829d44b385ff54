"""SentEval transfer tasks: the files are read as SentEval reads them, and the protocols run end to end."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rankcse.errors import ConfigError, DataError
from rankcse.evaluation.transfer import TRANSFER_TASKS, check_transfer_data, evaluate_task, evaluate_transfer, read_task, transfer_task
from rankcse.paths import DEFAULT_DATA_DIR


def _lines(path, encoding: str) -> list[str]:
    with open(path, encoding=encoding) as handle:
        return handle.read().splitlines()


def _expected_counts() -> dict[str, dict[str, tuple[int, ...]]]:
    """Counts computed straight from the raw files: (examples, examples of label 1 or per class)."""
    d = DEFAULT_DATA_DIR
    binary = {
        "mr": ("MR/rt-polarity.pos", "MR/rt-polarity.neg"),
        "cr": ("CR/custrev.pos", "CR/custrev.neg"),
        "subj": ("SUBJ/subj.objective", "SUBJ/subj.subjective"),
        "mpqa": ("MPQA/mpqa.pos", "MPQA/mpqa.neg"),
    }
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, (pos, neg) in binary.items():
        n_pos, n_neg = len(_lines(d / pos, "latin-1")), len(_lines(d / neg, "latin-1"))
        out[key] = {"all": (n_pos + n_neg, n_pos)}
    out["sst2"] = {}
    for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")):
        lines = _lines(d / f"SST/binary/sentiment-{name}", "utf-8")
        out["sst2"][split] = (len(lines), sum(line.rstrip().endswith("\t1") for line in lines))
    classes = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    out["trec"] = {}
    for split, name in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        lines = _lines(d / "TREC" / name, "latin-1")
        out["trec"][split] = (len(lines), *(sum(line.startswith(c + ":") for line in lines) for c in classes))
    out["mrpc"] = {}
    for split, name in (("train", "msr_paraphrase_train.txt"), ("test", "msr_paraphrase_test.txt")):
        lines = _lines(d / "MRPC" / name, "utf-8")[1:]  # header
        out["mrpc"][split] = (len(lines), sum(line.startswith("1\t") for line in lines))
    return out


def test_counts_equal_what_senteval_reads() -> None:
    expected = _expected_counts()
    # SentEval's published sizes for these files (SentEval README), as a second, independent check
    assert expected["mr"]["all"][0] == 10662 and expected["cr"]["all"][0] == 3775 and expected["subj"]["all"][0] == 10000
    assert expected["mpqa"]["all"][0] == 10606 and expected["trec"]["test"][0] == 500 and expected["mrpc"]["test"][0] == 1725
    for key in TRANSFER_TASKS:
        data = read_task(TRANSFER_TASKS[key])
        for split, counts in expected[key].items():
            *texts, labels = data[split]
            assert all(len(t) == counts[0] for t in texts), (key, split)
            if key == "trec":
                assert tuple(np.bincount(labels, minlength=6)) == counts[1:], (key, split)
            else:
                assert int((labels == 1).sum()) == counts[1], (key, split)


def test_senteval_order_and_text() -> None:
    texts, labels = read_task(TRANSFER_TASKS["cr"])["all"]
    keys = [(len(t.split()), y) for t, y in zip(texts, labels)]
    assert keys == sorted(keys)  # stable sort by token count, then label: the folds depend on it
    assert texts[:4] == ["", "", "", ""]  # SentEval keeps CR's empty lines as empty sentences
    a, b, y = read_task(TRANSFER_TASKS["mrpc"])["train"]
    assert [(len(s.split()), len(t.split()), v) for s, t, v in zip(a, b, y)] == sorted(
        (len(s.split()), len(t.split()), v) for s, t, v in zip(a, b, y)
    )
    train, _ = read_task(TRANSFER_TASKS["trec"])["train"]
    assert all(":" not in t.split()[0] for t in train[:50])  # the fine label is dropped


def _hash_embed(sentences, dim: int = 64) -> np.ndarray:
    """A deterministic bag-of-words embedding (hashed word counts): cheap features that carry content."""
    out = np.zeros((len(sentences), dim), dtype=np.float32)
    for i, sentence in enumerate(sentences):
        for word in sentence.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return out


@pytest.mark.parametrize("key", ["cr", "trec", "mrpc"])
def test_protocols_run_and_beat_chance(key) -> None:
    result = evaluate_task(TRANSFER_TASKS[key], _hash_embed, kfold=2)
    majority = {"cr": 0.64, "trec": 0.19, "mrpc": 0.665}[key]  # majority-class share of each test set
    assert result["acc"] > majority, result
    assert 0 < result["dev_acc"] <= 1 and result["n_test"] > 0
    if key == "mrpc":
        assert 0 < result["f1"] <= 1


def test_bad_input(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown transfer task 'sst5'"):
        transfer_task("sst5")
    assert transfer_task("SST2").key == "sst2" and transfer_task("MR").key == "mr"
    with pytest.raises(DataError, match="pass --data-dir"):
        check_transfer_data(["mr"], tmp_path)
    with pytest.raises(ConfigError, match="kfold must be >= 2"):
        evaluate_transfer(_hash_embed, ["cr"], kfold=1)
