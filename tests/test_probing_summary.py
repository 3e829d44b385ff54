"""Probing across phases, with and without RR, on synthetic steps tables of the aggregator's shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayjobs.analysis.probing_summary import compare_rr, per_trial, summarize_probing

# (step, phase): Phase 1 up to the rank peak at step 50, Phase 2 up to the best step 100, then post
SCHEDULE = [(0, 1), (25, 1), (50, 1), (75, 2), (100, 2), (125, 3)]
PROBED = {0, 50, 100, 125}  # probing every 2 evaluations and at the last step


def _acc(task: str, step: int, rr_coef: float, seed: int) -> float:
    """Known curves: sentlen rises by 0.1 per 100 steps (faster with RR), bshift falls, tense is flat but seed-dependent."""
    if task == "sentlen_gen":
        return 0.5 + (1 + 10 * rr_coef) * step / 1000
    if task == "bshift_gen":
        return 0.7 - step / 1000
    return 0.6 + seed / 100


def _steps(with_trial_id: bool = True, tasks=("sentlen_gen", "bshift_gen", "wc_gen", "tense")) -> pd.DataFrame:
    rows = []
    for rr_coef in (0.0, 0.1):
        for seed in (0, 1, 2):
            for step, phase in SCHEDULE:
                row = {"method": "simcse", "rr_coef": rr_coef, "seed": seed, "step": step, "phase": phase, "stsb_dev": 0.8}
                if with_trial_id:
                    row["trial_id"] = f"t{rr_coef}-{seed}"
                for task in tasks:
                    row[f"probing/{task}"] = _acc(task, step, rr_coef, seed) if step in PROBED else np.nan
                row["probing_seconds"] = 1.0 if step in PROBED else np.nan
                rows.append(row)
    return pd.DataFrame(rows)


def _row(summary: pd.DataFrame, **match) -> pd.Series:
    sel = summary
    for key, value in match.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (match, len(sel))
    return sel.iloc[0]


def test_phase_boundaries_and_changes_per_task() -> None:
    summary = summarize_probing(_steps())
    row = _row(summary, rr_coef=0.0, level="task", task="sentlen_gen")
    # probed Phase 1 steps are 0 and 50 (start, peak); the last probed Phase 2 step is 100; step 125 is post
    assert row["acc_start_mean"] == pytest.approx(0.5) and row["acc_peak_mean"] == pytest.approx(0.55)
    assert row["acc_best_mean"] == pytest.approx(0.6)
    assert row["change_phase1_mean"] == pytest.approx(0.05) and row["change_phase2_mean"] == pytest.approx(0.05)
    assert row["n_trials"] == 3 and row["change_phase2_std"] == pytest.approx(0.0)
    rr = _row(summary, rr_coef=0.1, level="task", task="sentlen_gen")
    assert bool(rr["rr"]) and rr["change_phase2_mean"] == pytest.approx(0.1)
    bshift = _row(summary, rr_coef=0.0, level="task", task="bshift_gen")
    assert bshift["change_phase1_mean"] == pytest.approx(-0.05) and bshift["group"] == "syntactic"
    tense = _row(summary, rr_coef=0.0, level="task", task="tense")
    assert tense["acc_best_mean"] == pytest.approx(0.61) and tense["acc_best_std"] == pytest.approx(0.01)  # seeds 0, 1, 2
    assert not bool(tense["surrogate"]) and tense["group"] == "semantic"


def test_groups_average_tasks_and_never_mix_surrogates_with_senteval() -> None:
    summary = summarize_probing(_steps())
    surface = _row(summary, rr_coef=0.0, level="group", group="surface")
    assert surface["task"] == "sentlen_gen+wc_gen" and bool(surface["surrogate"])
    # sentlen changes by +0.05 in Phase 2, wc by 0
    assert surface["change_phase2_mean"] == pytest.approx(0.025)
    semantic = _row(summary, rr_coef=0.0, level="group", group="semantic")
    assert semantic["task"] == "tense" and not bool(semantic["surrogate"])
    assert set(summary["level"]) == {"task", "group"}


def test_rr_contrast() -> None:
    contrast = compare_rr(summarize_probing(_steps()))
    row = _row(contrast, level="task", task="sentlen_gen")
    assert row["rr_coef"] == 0.1 and row["change_phase2_rr_minus_no_rr"] == pytest.approx(0.05)
    assert _row(contrast, level="task", task="bshift_gen")["change_phase2_rr_minus_no_rr"] == pytest.approx(0.0)


def test_without_trial_id_trials_are_method_rr_seed() -> None:
    with_id = summarize_probing(_steps(True))
    without = summarize_probing(_steps(False))
    pd.testing.assert_frame_equal(with_id.reset_index(drop=True), without.reset_index(drop=True))


def test_empty_phase_2_gives_nan_change() -> None:
    steps = _steps()
    steps.loc[steps["phase"] == 2, "phase"] = 3  # best checkpoint at the peak: Phase 2 empty
    row = _row(summarize_probing(steps), rr_coef=0.0, level="task", task="sentlen_gen")
    assert np.isnan(row["change_phase2_mean"]) and row["change_phase1_mean"] == pytest.approx(0.05)


def test_per_trial_and_input_errors() -> None:
    trials = per_trial(_steps())
    assert len(trials) == 6 * 4  # trials x tasks
    with pytest.raises(ValueError, match="lacks column"):
        summarize_probing(_steps().drop(columns=["phase"]))
    with pytest.raises(ValueError, match="no probing/<task> column"):
        summarize_probing(_steps(tasks=()))
