"""Findings on synthetic tables with known effects, and the committed reference findings against their own tables.

The expected numbers are computed here with numpy/scipy from the generated values, not by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from rayjobs.findings import CONTRADICTED, NOT_ENOUGH, SUPPORTED, compute_findings

ROOT = Path(__file__).resolve().parent.parent
STEPS = np.arange(0, 260, 25)


def build(
    conditions: dict[tuple[str, float, str], list[float]], rank_shift: dict[float, float] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steps and trials tables: one trial per value; the value is the trial's test average (and its STS-B test and best dev).

    Every trial's rank rises to a peak at step 75 then falls, and STS-B dev rises to its best at step 200, so
    Phase 1 has rank and STS-B dev rising together and Phase 2 has rank falling while STS-B dev still rises.
    """
    steps, trials = [], []
    for n, ((method, rr, schedule), values) in enumerate(sorted(conditions.items())):
        for seed, value in enumerate(values):
            trial_id = f"t{n:02d}_{seed}"
            shift = (rank_shift or {}).get(rr, 0.0)
            wobble = 0.3 * np.sin(seed + n)
            rank = np.where(STEPS <= 75, 236 + 0.3 * STEPS, 258.5 - 0.05 * (STEPS - 75)) - shift + wobble
            dev = np.where(STEPS <= 200, 0.78 + 0.0002 * STEPS, 0.82 - 0.0001 * (STEPS - 200)) + 0.001 * np.cos(seed + 3 * n)
            for s, r, d in zip(STEPS, rank, dev):
                steps.append(
                    {
                        "trial_id": trial_id,
                        "method": method,
                        "rr_coef": rr,
                        "rr_schedule": schedule,
                        "model": "default",
                        "seed": seed,
                        "step": int(s),
                        "stsb_dev": float(d),
                        "probe/energy_rank_99": float(r),
                        "probe/erank_vne": float(r) / 5,
                    }
                )
            best = int(np.argmax(dev[1:]) + 1)
            trials.append(
                {
                    "trial_id": trial_id,
                    "method": method,
                    "rr_coef": rr,
                    "rr_schedule": schedule,
                    "model": "default",
                    "seed": seed,
                    "status": "completed",
                    "avg": value,
                    "stsb": value + 0.01,
                    "best_stsb_dev": float(dev[best]),
                    "best_step": float(STEPS[best]),
                }
            )
    return pd.DataFrame(steps), pd.DataFrame(trials)


def row(findings: pd.DataFrame, claim: str, scope: str = "all", rank_metric: str = "") -> pd.Series:
    part = findings[(findings["claim"] == claim) & (findings["scope"] == scope) & (findings["rank_metric"].fillna("") == rank_metric)]
    assert len(part) == 1, (claim, scope, rank_metric, len(part))
    return part.iloc[0]


def test_a_clear_rr_gain_is_supported_with_welch_numbers():
    rng = np.random.default_rng(0)
    base, rr = list(0.75 + 0.004 * rng.standard_normal(5)), list(0.78 + 0.004 * rng.standard_normal(5))
    steps, trials = build({("simcse", 0.0, "always"): base, ("simcse", 0.1, "always"): rr})
    found = compute_findings(steps, trials, n_boot=200)
    gain = row(found, "5b")
    welch = stats.ttest_ind(rr, base, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert gain["estimate"] == pytest.approx(np.mean(rr) - np.mean(base))
    assert (gain["ci_low"], gain["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert gain["p_value"] == pytest.approx(welch.pvalue)
    assert gain["verdict"] == SUPPORTED and gain["n"] == 10
    assert row(found, "5c")["paper_value"] == pytest.approx(0.0309)


def test_a_null_effect_is_not_enough_data_and_a_loss_is_contradicted():
    rng = np.random.default_rng(1)
    same = {
        ("simcse", 0.0, "always"): list(0.75 + 0.01 * rng.standard_normal(4)),
        ("simcse", 0.1, "always"): list(0.75 + 0.01 * rng.standard_normal(4)),
    }
    null = row(compute_findings(*build(same), n_boot=200), "5b")
    assert null["ci_low"] < 0 < null["ci_high"] and null["verdict"] == NOT_ENOUGH and "holds 0" in null["reason"]
    worse = {("simcse", 0.0, "always"): [0.75, 0.752, 0.748, 0.751], ("simcse", 0.1, "always"): [0.70, 0.702, 0.699, 0.701]}
    loss = row(compute_findings(*build(worse), n_boot=200), "5b")
    assert loss["verdict"] == CONTRADICTED and loss["ci_high"] < 0


def test_too_few_conditions_or_seeds_is_not_enough_data():
    two = {("simcse", 0.0, "always"): [0.75, 0.76, 0.74], ("simcse", 0.1, "always"): [0.77, 0.771, 0.769]}
    found = compute_findings(*build(two), n_boot=200)
    corr = row(found, "7", rank_metric="energy_rank_99")
    assert corr["verdict"] == NOT_ENOUGH and corr["reason"].startswith("2 conditions") and "needs >= 4" in corr["reason"]
    phase_aware = row(found, "P1")
    assert phase_aware["verdict"] == NOT_ENOUGH and "after_peak" in phase_aware["reason"]
    one_seed = {("simcse", 0.0, "always"): [0.75], ("simcse", 0.1, "always"): [0.77]}
    assert row(compute_findings(*build(one_seed), n_boot=200), "5b")["verdict"] == NOT_ENOUGH


def test_phase_shape_and_correlation_signs_follow_the_built_curves():
    steps, trials = build({("simcse", 0.0, "always"): [0.75, 0.76, 0.74, 0.75], ("mixcse", 0.0, "always"): [0.75, 0.76, 0.74, 0.75]})
    found = compute_findings(steps, trials, window=1, n_boot=300)  # raw peak: step 75 by construction
    shape = row(found, "1", rank_metric="energy_rank_99")
    ci = stats.binomtest(8, 8).proportion_ci(method="exact")
    assert shape["estimate"] == 1.0 and shape["ci_low"] == pytest.approx(ci.low) and shape["verdict"] == SUPPORTED
    for claim, phase_steps, sign in (("2", STEPS <= 75, 1), ("3", (STEPS > 75) & (STEPS <= 200), -1)):
        got = row(found, claim, rank_metric="energy_rank_99")
        pts = steps[steps["step"].isin(STEPS[phase_steps])]
        assert got["estimate"] == pytest.approx(stats.pearsonr(pts["probe/energy_rank_99"], pts["stsb_dev"]).statistic)
        assert np.sign(got["estimate"]) == sign and got["verdict"] == SUPPORTED and got["n"] == len(pts)
    assert row(found, "2", "mixcse", "erank_vne")["verdict"] == SUPPORTED  # per-method rows, and the other rank notion


def test_rr_lowering_rank_and_seed_std_uses_the_pooled_f_interval():
    rng = np.random.default_rng(2)
    wide, narrow = list(0.75 + 0.02 * rng.standard_normal(8)), list(0.76 + 0.002 * rng.standard_normal(8))
    steps, trials = build({("simcse", 0.0, "always"): wide, ("simcse", 0.2, "always"): narrow}, rank_shift={0.2: 20.0})
    found = compute_findings(steps, trials, n_boot=200)
    spread = row(found, "6")
    ratio = np.var(narrow, ddof=1) / np.var(wide, ddof=1)
    assert spread["estimate"] == pytest.approx(np.sqrt(ratio))
    assert spread["ci_high"] == pytest.approx(np.sqrt(ratio / stats.f.ppf(0.025, 7, 7)))
    assert spread["verdict"] == SUPPORTED
    lower = row(found, "4", rank_metric="energy_rank_99")
    assert lower["verdict"] == SUPPORTED and lower["estimate"] < -0.05


def test_phase_aware_rows_compare_after_peak_with_always_at_the_same_coefficient():
    conds = {
        ("simcse", 0.0, "always"): [0.75, 0.751, 0.749],
        ("simcse", 0.1, "always"): [0.77, 0.771, 0.769],
        ("simcse", 0.1, "after_peak"): [0.78, 0.781, 0.779],
    }
    found = compute_findings(*build(conds), n_boot=200)
    beats = row(found, "P6")
    assert beats["estimate"] == pytest.approx(0.01) and beats["verdict"] == SUPPORTED
    assert row(found, "P2")["estimate"] == pytest.approx(0.03)
    assert row(found, "5b")["estimate"] == pytest.approx(0.02)  # after_peak trials are not the paper's RR


REFERENCE = sorted(p for p in (ROOT / "results" / "reference").glob("*/findings.parquet"))


@pytest.mark.parametrize("path", REFERENCE, ids=[p.parent.name for p in REFERENCE])
def test_committed_reference_findings_follow_from_the_committed_tables(path: Path):
    folder = path.parent
    meta = pq.read_schema(path).metadata
    params = json.loads(meta[b"rankcse.findings"].decode())
    axes = json.loads(pq.read_schema(folder / "trials.parquet").metadata[b"rankcse.axes"].decode())
    committed = pd.read_parquet(path)
    again = compute_findings(pd.read_parquet(folder / "steps.parquet"), pd.read_parquet(folder / "trials.parquet"), axes, **params)
    assert len(again) == len(committed)
    for column in ("claim", "rank_metric", "scope", "verdict", "reason", "n"):
        assert again[column].fillna("").tolist() == committed[column].fillna("").tolist(), column
    for column in ("estimate", "ci_low", "ci_high", "p_value"):
        np.testing.assert_allclose(
            again[column].to_numpy(float), committed[column].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=column
        )


def test_reference_sweeps_are_committed():
    assert {p.parent.name for p in REFERENCE} >= {"demo", "study"}


def test_after_peak_trials_that_never_switched_rr_on_say_so():
    conditions = {("simcse", 0.0, "always"): [0.75, 0.76, 0.74], ("simcse", 0.1, "after_peak"): [0.75, 0.76, 0.74]}
    steps, trials = build(conditions)
    steps["rr/switch_step"] = np.nan  # the online detector never fired
    never = row(compute_findings(steps, trials, n_boot=200), "P1")
    assert never["verdict"] == NOT_ENOUGH and "never switched on in the 3 after_peak trials" in never["reason"]
    steps.loc[steps["rr_schedule"] == "after_peak", "rr/switch_step"] = 100.0
    switched = row(compute_findings(steps, trials, n_boot=200), "P1")
    assert "never switched" not in str(switched["reason"])
