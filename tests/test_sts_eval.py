"""STS evaluation against an independent computation from the raw files."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from rankcse import metrics
from rankcse.errors import DataError
from rankcse.evaluation.sts import TASKS, evaluate_sts
from rankcse.paths import DEFAULT_DATA_DIR


def hashed_bow(sentences, dim: int = 64) -> np.ndarray:
    """A deterministic bag-of-words embedding: each lower-cased token has a fixed random vector."""
    out = np.zeros((len(sentences), dim))
    for i, sentence in enumerate(sentences):
        for token in sentence.lower().split():
            out[i] += np.random.default_rng(zlib.crc32(token.encode())).standard_normal(dim)
    return out


def independent_spearman(pairs: list[tuple[str, str, float]]) -> float:
    """Spearman as Pearson of average ranks, with pandas ranks and numpy (no scipy)."""
    a = hashed_bow([" ".join(p[0].split()) for p in pairs])
    b = hashed_bow([" ".join(p[1].split()) for p in pairs])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ranks_sys = pd.Series(cos).rank().to_numpy()
    ranks_gold = pd.Series([p[2] for p in pairs]).rank().to_numpy()
    return float(np.corrcoef(ranks_sys, ranks_gold)[0, 1])


def raw_sts_year(folder: str, subset: str) -> list[tuple[str, str, float]]:
    base = DEFAULT_DATA_DIR / "STS" / folder
    lines = (base / f"STS.input.{subset}.txt").read_text(encoding="utf-8").split("\n")
    golds = (base / f"STS.gs.{subset}.txt").read_text(encoding="utf-8").split("\n")
    out = []
    for line, gold in zip(lines, golds):
        if gold.strip():
            s1, s2 = line.split("\t")[:2]
            out.append((s1, s2, float(gold)))
    return out


def test_sts13_all_equals_independent_computation() -> None:
    result = evaluate_sts(hashed_bow, ["sts13"])
    pairs = [p for subset in ("FNWN", "headlines", "OnWN") for p in raw_sts_year("STS13-en-test", subset)]
    assert len(pairs) == result["tasks"]["sts13"]["n"] == 1500
    assert result["scores"]["sts13"] == pytest.approx(independent_spearman(pairs), abs=1e-6)
    # per-subset values and the mean aggregate
    per = {s: independent_spearman(raw_sts_year("STS13-en-test", s)) for s in ("FNWN", "headlines", "OnWN")}
    for subset, value in per.items():
        assert result["tasks"]["sts13"]["parts"][subset]["spearman"] == pytest.approx(value, abs=1e-6)
    assert result["tasks"]["sts13"]["mean"]["spearman"] == pytest.approx(np.mean(list(per.values())), abs=1e-6)


def test_stsb_test_equals_independent_computation() -> None:
    lines = (DEFAULT_DATA_DIR / "STS" / "STSBenchmark" / "sts-test.csv").read_text(encoding="utf-8").splitlines()
    pairs = []
    for line in lines:
        fields = line.split("\t")
        pairs.append((fields[5], fields[6], float(fields[4])))
    result = evaluate_sts(hashed_bow, ["stsb"])
    assert len(pairs) == 1379 == result["tasks"]["stsb"]["n"]
    assert result["scores"]["stsb"] == pytest.approx(independent_spearman(pairs), abs=1e-6)


def test_empty_gold_scores_are_dropped() -> None:
    counts = {key: sum(len(p) for p in TASKS[key].read(DEFAULT_DATA_DIR)) for key in ("sts12", "sts13", "sts14", "sts15", "sts16")}
    # pair counts after dropping unscored lines, as listed in the data README
    assert counts == {"sts12": 3108, "sts13": 1500, "sts14": 3750, "sts15": 3000, "sts16": 1186}
    assert sum(len(p) for p in TASKS["sickr"].read(DEFAULT_DATA_DIR, "test")) == 4927


def test_weighted_mean_and_concatenation() -> None:
    rng = np.random.default_rng(0)
    system = [rng.standard_normal(10), rng.standard_normal(30)]
    gold = [s + rng.standard_normal(s.size) for s in system]
    from scipy.stats import spearmanr

    per = [spearmanr(s, g)[0] for s, g in zip(system, gold)]
    assert metrics.spearman_wmean(system, gold) == pytest.approx((10 * per[0] + 30 * per[1]) / 40)
    assert metrics.spearman_mean(system, gold) == pytest.approx(np.mean(per))
    assert metrics.spearman_concat(system, gold) == pytest.approx(spearmanr(np.concatenate(system), np.concatenate(gold))[0])


def test_missing_data_dir_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        evaluate_sts(hashed_bow, ["sts12"], tmp_path / "nowhere")
    (tmp_path / "STS").mkdir()
    with pytest.raises(DataError, match="STS12-en-test"):
        evaluate_sts(hashed_bow, ["sts12"], tmp_path)


def test_reads_another_folder_with_the_same_layout(tmp_path) -> None:
    import shutil

    shutil.copytree(DEFAULT_DATA_DIR / "STS" / "STS13-en-test", tmp_path / "STS" / "STS13-en-test")
    assert evaluate_sts(hashed_bow, ["sts13"], tmp_path)["scores"] == evaluate_sts(hashed_bow, ["sts13"])["scores"]
