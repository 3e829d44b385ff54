"""Equality with SentEval itself: numbers produced by SimCSE's SentEval copy on the same encoder and data.

The fixture ``fixtures/senteval_mean_reference.json`` was produced outside this project by running
SentEval (see its ``about`` field). It is an independent oracle, not a value of our own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankcse import metrics

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "senteval_mean_reference.json").read_text())


def test_correlations_and_aggregates_equal_senteval_on_its_own_similarities() -> None:
    pairs = REFERENCE["sts13"]["pairs"]
    expected = REFERENCE["sts13"]["results"]
    system = [np.asarray(pairs[name]["sys"]) for name in pairs]
    gold = [np.asarray(pairs[name]["gold"]) for name in pairs]
    for name, s, g in zip(pairs, system, gold):
        assert metrics.spearman(s, g) == pytest.approx(expected["subsets"][name]["spearman"], abs=1e-12)
        assert metrics.pearson(s, g) == pytest.approx(expected["subsets"][name]["pearson"], abs=1e-12)
    agg = expected["aggregates"]
    assert metrics.spearman_concat(system, gold) == pytest.approx(agg["spearman"]["all"], abs=1e-12)
    assert metrics.spearman_mean(system, gold) == pytest.approx(agg["spearman"]["mean"], abs=1e-12)
    assert metrics.spearman_wmean(system, gold) == pytest.approx(agg["spearman"]["wmean"], abs=1e-12)
    assert metrics.pearson_concat(system, gold) == pytest.approx(agg["pearson"]["all"], abs=1e-12)
    assert metrics.pearson_wmean(system, gold) == pytest.approx(agg["pearson"]["wmean"], abs=1e-12)


@pytest.mark.slow
def test_default_model_scores_equal_senteval_within_1e4() -> None:
    from rankcse.build import load_for_eval
    from rankcse.evaluation.sts import evaluate_sts

    method = load_for_eval("default", "mean")
    result = evaluate_sts(lambda s: method.embed(s), ["sts13", "sts16"])
    for task in ("sts13", "sts16"):
        assert result["scores"][task] == pytest.approx(REFERENCE["headline"][task], abs=1e-4)
