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

from rayjobs.analysis.findings import CONTRADICTED, NOT_ENOUGH, SUPPORTED, compute_findings

ROOT = Path(__file__).resolve().parent.parent
STEPS = np.arange(0, 260, 25)
SWITCH = 100.0  # where the after_peak trials built here switched RR on


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
            jitter = 0.002 * np.sin(1.7 * STEPS / 25 + 2.3 * seed + n)  # evaluation noise: within-trial r is not exactly +/-1
            dev = np.where(STEPS <= 200, 0.78 + 0.0002 * STEPS, 0.82 - 0.0001 * (STEPS - 200)) + 0.001 * np.cos(seed + 3 * n) + jitter
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
                        "rr/switch_step": SWITCH if schedule == "after_peak" else np.nan,
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
                    "steps_done": int(STEPS[-1]),
                    "rr_switch_step": SWITCH if schedule == "after_peak" else np.nan,
                }
            )
    return pd.DataFrame(steps), pd.DataFrame(trials)


def row(findings: pd.DataFrame, claim: str, scope: str = "all", rank_metric: str = "") -> pd.Series:
    part = findings[
        (findings["claim"] == claim)
        & (findings["scope"] == scope)
        & (findings["rank_metric"].fillna("") == rank_metric)
        & (findings["variant"].fillna("") == "")
    ]
    assert len(part) == 1, (claim, scope, rank_metric, len(part))
    return part.iloc[0]


def test_a_clear_rr_gain_is_supported_with_welch_numbers():
    rng = np.random.default_rng(0)
    base, rr = list(0.75 + 0.004 * rng.standard_normal(5)), list(0.78 + 0.004 * rng.standard_normal(5))
    steps, trials = build({("simcse", 0.0, "always"): base, ("simcse", 0.1, "always"): rr})
    found = compute_findings(steps, trials)
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
    null = row(compute_findings(*build(same)), "5b")
    assert null["ci_low"] < 0 < null["ci_high"] and null["verdict"] == NOT_ENOUGH and "holds 0" in null["reason"]
    worse = {("simcse", 0.0, "always"): [0.75, 0.752, 0.748, 0.751], ("simcse", 0.1, "always"): [0.70, 0.702, 0.699, 0.701]}
    loss = row(compute_findings(*build(worse)), "5b")
    assert loss["verdict"] == CONTRADICTED and loss["ci_high"] < 0


def test_too_few_conditions_or_seeds_is_not_enough_data():
    two = {("simcse", 0.0, "always"): [0.75, 0.76, 0.74], ("simcse", 0.1, "always"): [0.77, 0.771, 0.769]}
    found = compute_findings(*build(two))
    corr = row(found, "7", rank_metric="energy_rank_99")
    assert corr["verdict"] == NOT_ENOUGH and corr["reason"].startswith("2 distinct conditions") and "needs >= 4" in corr["reason"]
    phase_aware = row(found, "P1")
    assert phase_aware["verdict"] == NOT_ENOUGH and "after_peak" in phase_aware["reason"]
    one_seed = {("simcse", 0.0, "always"): [0.75], ("simcse", 0.1, "always"): [0.77]}
    assert row(compute_findings(*build(one_seed)), "5b")["verdict"] == NOT_ENOUGH


def _combined_r(steps: pd.DataFrame, keep) -> float:
    """Per-trial Pearson r of the kept evaluations, combined as the findings do (mean Fisher z, back-transformed)."""
    rs = [stats.pearsonr(g["probe/energy_rank_99"], g["stsb_dev"]).statistic for _, g in steps[keep(steps)].groupby("trial_id")]
    return float(np.tanh(np.mean(np.arctanh(np.clip(rs, -0.999, 0.999)))))


def test_phase_shape_and_correlation_signs_follow_the_built_curves():
    six = [0.75, 0.76, 0.74, 0.75, 0.751, 0.749]
    steps, trials = build({("simcse", 0.0, "always"): six, ("mixcse", 0.0, "always"): six})
    found = compute_findings(steps, trials, window=1)  # raw peak: step 75 by construction
    shape = row(found, "1", rank_metric="energy_rank_99")
    ci = stats.binomtest(12, 12).proportion_ci(method="exact")
    assert shape["estimate"] == 1.0 and shape["ci_low"] == pytest.approx(ci.low) and shape["verdict"] == SUPPORTED
    assert shape["p_value"] == pytest.approx(stats.binomtest(12, 12, 0.5).pvalue) and shape["interval"] == "Clopper-Pearson"
    best = dict(zip(trials["trial_id"], trials["best_step"]))  # Phase 2 ends at each trial's own best STS-B dev
    for claim, keep, sign in (
        ("2", lambda f: f["step"] <= 75, 1),
        ("3", lambda f: (f["step"] > 75) & (f["step"] <= f["trial_id"].map(best)), -1),
    ):
        got = row(found, claim, rank_metric="energy_rank_99")
        assert got["estimate"] == pytest.approx(_combined_r(steps, keep))
        assert np.sign(got["estimate"]) == sign and got["verdict"] == SUPPORTED and got["n"] == 12 and got["n_unit"] == "trials"
        z = np.arctanh(
            np.clip(
                [stats.pearsonr(g["probe/energy_rank_99"], g["stsb_dev"]).statistic for _, g in steps[keep(steps)].groupby("trial_id")],
                -0.999,
                0.999,
            )
        )
        assert got["p_value"] == pytest.approx(stats.ttest_1samp(z, 0.0).pvalue)
    no_start = found[
        (found["claim"] == "2")
        & (found["scope"] == "all")
        & (found["rank_metric"] == "energy_rank_99")
        & (found["variant"] == "without step 0")
    ]
    assert no_start["estimate"].item() == pytest.approx(_combined_r(steps, lambda f: (f["step"] > 0) & (f["step"] <= 75)))
    to_end = found[
        (found["claim"] == "3")
        & (found["scope"] == "all")
        & (found["rank_metric"] == "energy_rank_99")
        & (found["variant"] == "peak to end")
    ]
    assert to_end["estimate"].item() == pytest.approx(_combined_r(steps, lambda f: f["step"] > 75))
    assert row(found, "2", "mixcse", "erank_vne")["verdict"] == SUPPORTED  # per-method rows, and the other rank notion


def test_a_share_needs_six_trials_and_verdicts_survive_holm():
    five = {("simcse", 0.0, "always"): [0.75, 0.76, 0.74, 0.75, 0.751]}
    shape = row(compute_findings(*build(five), window=1), "1", rank_metric="energy_rank_99")
    assert shape["estimate"] == 1.0 and shape["verdict"] == NOT_ENOUGH and "needs >= 6" in shape["reason"]
    assert stats.binomtest(5, 5).proportion_ci(method="exact").low < 0.5 < stats.binomtest(6, 6).proportion_ci(method="exact").low
    rng = np.random.default_rng(5)
    base = list(0.75 + 0.01 * rng.standard_normal(3))
    found = compute_findings(*build({("simcse", 0.0, "always"): base, ("simcse", 0.1, "always"): [b + 0.02 for b in base]}))
    whole = found[(found["scope"] == "all") & (found["variant"] == "") & found["p_adjusted"].notna()]
    p = whole["p_value"].to_numpy()
    order = np.argsort(p, kind="stable")
    expected = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
    np.testing.assert_allclose(whole["p_adjusted"].to_numpy()[order], expected)
    for _, r in whole.iterrows():  # supported only where the adjusted p is below 0.05 and the interval on the claimed side
        assert (r["verdict"] == SUPPORTED) <= (r["p_adjusted"] < 0.05)


def test_after_peak_trials_that_never_switched_are_replicas_not_conditions():
    conds = {
        ("simcse", 0.0, "always"): [0.75, 0.751, 0.749],
        ("simcse", 0.1, "always"): [0.77, 0.771, 0.769],
        ("simcse", 0.2, "always"): [0.78, 0.782, 0.779],
        ("simcse", 0.1, "after_peak"): [0.75, 0.751, 0.749],
    }
    steps, trials = build(conds)
    never = trials["rr_schedule"] == "after_peak"
    trials.loc[never, "rr_switch_step"] = np.nan
    steps.loc[steps["rr_schedule"] == "after_peak", "rr/switch_step"] = np.nan
    found = compute_findings(steps, trials)
    corr = row(found, "7", rank_metric="energy_rank_99")
    assert corr["verdict"] == NOT_ENOUGH and corr["reason"].startswith("3 distinct conditions")  # not 4: the replica is no condition
    assert "replicas of no RR" in row(found, "P1")["reason"]
    assert row(found, "2", rank_metric="energy_rank_99")["n"] == 3  # the no-RR trials, not counted twice


def test_a_best_step_at_the_last_evaluation_is_censored():
    six = [0.75, 0.751, 0.749, 0.752, 0.748, 0.75]
    steps, trials = build({("simcse", 0.0, "always"): six, ("simcse", 0.1, "always"): [v + 0.02 for v in six]})
    rr = trials["rr_coef"] > 0
    trials.loc[rr, "best_step"] = [100.0, 100.0, 125.0, 100.0, 125.0, 250.0]  # the last RR trial is best at its last evaluation
    trials.loc[~rr, "best_step"] = [250.0, 225.0, 250.0, 225.0, 250.0, 250.0]
    earlier = row(compute_findings(steps, trials), "8")
    assert earlier["ci_high"] < 0 and earlier["p_adjusted"] < 0.05  # the test alone would say "earlier"
    assert earlier["verdict"] == NOT_ENOUGH and "censored" in earlier["reason"]
    assert "censored: 1 RR and 4 no-RR trials" in earlier["note"]


def test_rr_lowering_rank_and_seed_std_uses_the_pooled_f_interval():
    rng = np.random.default_rng(2)
    wide, narrow = list(0.75 + 0.02 * rng.standard_normal(8)), list(0.76 + 0.002 * rng.standard_normal(8))
    steps, trials = build({("simcse", 0.0, "always"): wide, ("simcse", 0.2, "always"): narrow}, rank_shift={0.2: 20.0})
    found = compute_findings(steps, trials)
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
    found = compute_findings(*build(conds))
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
    for column in ("claim", "rank_metric", "scope", "variant", "interval", "verdict", "reason", "note", "n"):
        assert again[column].fillna("").tolist() == committed[column].fillna("").tolist(), column
    for column in ("estimate", "ci_low", "ci_high", "p_value", "p_adjusted"):
        np.testing.assert_allclose(
            again[column].to_numpy(float), committed[column].to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=column
        )


def test_reference_sweeps_are_committed():
    assert {p.parent.name for p in REFERENCE} >= {"demo", "study"}


def test_after_peak_trials_that_never_switched_rr_on_say_so():
    conditions = {("simcse", 0.0, "always"): [0.75, 0.76, 0.74], ("simcse", 0.1, "after_peak"): [0.75, 0.76, 0.74]}
    steps, trials = build(conditions)
    steps["rr/switch_step"] = np.nan  # the online detector never fired
    trials["rr_switch_step"] = np.nan
    never = row(compute_findings(steps, trials), "P1")
    assert never["verdict"] == NOT_ENOUGH and "never switched on in the 3 after_peak trials" in never["reason"]
    steps.loc[steps["rr_schedule"] == "after_peak", "rr/switch_step"] = 100.0
    trials.loc[trials["rr_schedule"] == "after_peak", "rr_switch_step"] = 100.0
    switched = row(compute_findings(steps, trials), "P1")
    assert "never switched" not in str(switched["reason"])
