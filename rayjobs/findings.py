"""The paper's findings tested on a sweep's own tables: one row per claim with its estimate, 95 % interval, n and verdict.

Everything is recomputed from ``steps.parquet`` and ``trials.parquet`` (the phase split of every trial
too, under each rank notion), so anyone can check the findings of a committed sweep against its tables.
A verdict is ``supported`` when the 95 % interval lies on the side the claim states, ``contradicted``
when it lies on the other side, and ``not enough data`` when the sweep has too few trials or
conditions for the test, or the interval holds the no-effect value (the reason says which).

Claims 1-8 are the paper's (SPEC §10 gives its values and how sure we are of them); P1-P8 put the
phase-aware schedule ``after_peak`` (not in the paper) against no RR and against always-on RR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rankcse.phases import PHASE_1, PHASE_2, split_phases
from rayjobs.histories import COMPLETED
from rayjobs.statistics import N_BOOT, correlate, pooled_std_ratio, share_with_interval, stratified_welch

SUPPORTED, CONTRADICTED, NOT_ENOUGH = "supported", "contradicted", "not enough data"
#: Rank notions every rank claim is tested under: the paper's analysis rank first, then the RR term's.
RANK_METRICS = ("energy_rank_99", "erank_vne")
MIN_TRIALS = 3  # trials behind a share or a within-phase correlation
MIN_CONDITIONS = 4  # conditions behind a correlation across conditions
PAPER_RR = "always"  # the paper's RR is on from the first step
PHASE_AWARE = "after_peak"
NAN = float("nan")


@dataclass(frozen=True)
class Claim:
    """One testable statement: the claim holds when the estimate lies on ``sign``'s side of ``null``."""

    key: str
    text: str
    statistic: str  # share | r | relative | difference | ratio | steps
    null: float
    sign: int
    paper_value: float = NAN
    paper_note: str = ""


CLAIMS = {
    c.key: c
    for c in (
        Claim("1", "without RR the rank rises, then falls (an interior peak)", "share", 0.5, +1, NAN, "all five methods (qualitative) [L]"),
        Claim("2", "without RR, rank vs STS-B dev is positive within Phase 1", "r", 0.0, +1, 0.85, "[L]"),
        Claim("3", "without RR, rank vs STS-B dev is negative within Phase 2", "r", 0.0, -1, -0.81, "[L]"),
        Claim("4", "RR lowers the average rank", "relative", 0.0, -1, 195 / 324 - 1, "324 -> 195 of 768 dims (unverified)"),
        Claim("5a", "RR raises the best STS-B dev", "difference", 0.0, +1, NAN, "raises STS, all five methods [C]"),
        Claim("5b", "RR raises the STS test average", "difference", 0.0, +1, NAN, "raises STS, all five methods [C]"),
        Claim("5c", "RR raises STS-B test", "difference", 0.0, +1, 79.94 / 100 - 76.85 / 100, "76.85 -> 79.94, SimCSE (unverified)"),
        Claim("6", "RR lowers the seed std of the STS test average", "ratio", 1.0, -1, NAN, "lower seed variance [L]"),
        Claim(
            "7",
            "average rank vs seed std of the test average is positive across conditions",
            "r",
            0.0,
            +1,
            0.94,
            "across models (unverified)",
        ),
        Claim("8", "RR reaches its best STS-B dev earlier", "steps", 0.0, -1, NAN, "often speeds convergence [L]"),
        Claim("P1", "after_peak RR raises the best STS-B dev over no RR", "difference", 0.0, +1),
        Claim("P2", "after_peak RR raises the STS test average over no RR", "difference", 0.0, +1),
        Claim("P3", "after_peak RR lowers the seed std of the test average vs no RR", "ratio", 1.0, -1),
        Claim("P4", "after_peak RR lowers the average rank vs no RR", "relative", 0.0, -1),
        Claim("P5", "after_peak RR beats always-on RR on the best STS-B dev", "difference", 0.0, +1),
        Claim("P6", "after_peak RR beats always-on RR on the STS test average", "difference", 0.0, +1),
        Claim("P7", "after_peak RR has a lower seed std of the test average than always-on RR", "ratio", 1.0, -1),
        Claim("P8", "after_peak RR keeps a higher average rank than always-on RR", "relative", 0.0, +1),
    )
}
#: Claims whose estimate depends on the rank notion (tested under each of RANK_METRICS).
RANK_CLAIMS = ("1", "2", "3", "4", "7", "P4", "P8")


def verdict(claim: Claim, low: float, high: float, missing: str | None = None) -> tuple[str, str]:
    """(verdict, reason) from the 95 % interval; ``missing`` names why the test could not be made."""
    if missing:
        return NOT_ENOUGH, missing
    if not (math.isfinite(low) and math.isfinite(high)):
        return NOT_ENOUGH, "no interval could be computed (no spread in the values)"
    above, below = low > claim.null, high < claim.null
    if (above and claim.sign > 0) or (below and claim.sign < 0):
        return SUPPORTED, ""
    if above or below:
        return CONTRADICTED, f"the 95% interval lies {'above' if above else 'below'} {claim.null:g}"
    return NOT_ENOUGH, f"the 95% interval [{low:.3g}, {high:.3g}] holds {claim.null:g}: more seeds or conditions needed"


def _row(
    claim: Claim,
    scope: str,
    rank_metric: str,
    estimate: float,
    low: float,
    high: float,
    n: int,
    n_unit: str,
    p: float = NAN,
    missing: str | None = None,
) -> dict[str, Any]:
    verdict_text, reason = verdict(claim, low, high, missing)
    return {
        "claim": claim.key,
        "finding": claim.text,
        "rank_metric": rank_metric,
        "scope": scope,
        "statistic": claim.statistic,
        "estimate": estimate,
        "ci_low": low,
        "ci_high": high,
        "n": int(n),
        "n_unit": n_unit,
        "p_value": p,
        "paper_value": claim.paper_value if scope == "all" else NAN,
        "paper_note": claim.paper_note if scope == "all" else "",
        "verdict": verdict_text,
        "reason": reason,
    }


class _Trials:
    """The completed trials with the per-trial quantities the claims need, under each rank notion."""

    def __init__(self, steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str], window: int) -> None:
        self.done = trials[trials["status"] == COMPLETED].copy()
        self.done["rr_coef"] = self.done["rr_coef"].astype(float)
        self.stratum_keys = ["method", "model", *axes]
        self.condition_keys = ["method", "rr_coef", "rr_schedule", "model", *axes]
        self.points: dict[str, pd.DataFrame] = {}
        for metric in RANK_METRICS:
            column = f"probe/{metric}"
            if column not in steps:
                continue
            per_trial, labelled = {}, []
            for trial_id, rows in steps[steps["trial_id"].isin(self.done["trial_id"])].groupby("trial_id", sort=True):
                rows = rows.sort_values("step")
                rank = rows[column].astype(float).to_numpy()
                score = rows["stsb_dev"].astype(float).to_numpy()
                if not np.isfinite(rank).any() or len(rank) < 2:
                    continue
                split = split_phases(np.nan_to_num(rank, nan=-np.inf), score, window=window)
                step = rows["step"].to_numpy()
                per_trial[trial_id] = {
                    "interior": split.interior_peak,
                    "avg_rank": float(np.nanmean(rank[: split.best_index + 1])),
                    "peak_step": float(step[split.peak_index]),
                    "phase2_evals": float(sum(1 for label in split.labels if label == PHASE_2)),
                    "fall": float(rank[split.best_index] / rank[split.peak_index] - 1) if split.best_index > split.peak_index else NAN,
                }
                labelled.append(pd.DataFrame({"trial_id": trial_id, "rank": rank, "stsb_dev": score, "phase": split.labels}))
            for key in ("interior", "avg_rank", "peak_step", "phase2_evals", "fall"):
                self.done[f"{key}/{metric}"] = self.done["trial_id"].map({t: v[key] for t, v in per_trial.items()})
            if labelled:
                self.points[metric] = pd.concat(labelled, ignore_index=True).merge(
                    self.done[["trial_id", "method", "rr_coef"]], on="trial_id"
                )

    def select(self, schedule: str | None = None, rr: bool | None = None) -> pd.DataFrame:
        """Trials with RR on (``rr``) or off, under ``schedule`` (RR-off trials match any schedule)."""
        frame = self.done
        if rr is not None:
            frame = frame[(frame["rr_coef"] > 0) == rr]
        if schedule is not None and rr:
            frame = frame[frame["rr_schedule"] == schedule]
        return frame


def _pairs(treated: pd.DataFrame, baseline: pd.DataFrame, keys: list[str], column: str) -> list[tuple[list[float], list[float]]]:
    """(treated values, baseline values) per stratum found on both sides."""
    base = {k: g[column].astype(float).tolist() for k, g in baseline.groupby(keys, sort=True, dropna=False)}
    return [(g[column].astype(float).tolist(), base[k]) for k, g in treated.groupby(keys, sort=True, dropna=False) if k in base]


def _difference_rows(
    claim: Claim,
    treated: pd.DataFrame,
    baseline: pd.DataFrame,
    keys: list[str],
    column: str,
    rank_metric: str = "",
    relative: bool = False,
    why_empty: str = "",
) -> list[dict[str, Any]]:
    rows = []
    for scope, t_part, b_part in _scopes(treated, baseline):
        strata = _pairs(t_part, b_part, keys, column)
        test = stratified_welch(strata)
        missing = why_empty or (None if test["strata"] else "fewer than 2 seeds on a side of every comparison")
        est, lo, hi = test["diff"], test["ci_low"], test["ci_high"]
        if relative and test["strata"]:
            base = float(np.mean([np.nanmean(b) for t, b in strata if len(t) >= 2 and len(b) >= 2]))
            est, lo, hi = est / base, lo / base, hi / base
        rows.append(_row(claim, scope, rank_metric, est, lo, hi, test["n_a"] + test["n_b"], "trials", test["p"], missing))
    return rows


def _std_ratio_rows(
    claim: Claim, treated: pd.DataFrame, baseline: pd.DataFrame, keys: list[str], why_empty: str = ""
) -> list[dict[str, Any]]:
    rows = []
    for scope, t_part, b_part in _scopes(treated, baseline):
        t_groups = [g["avg"].astype(float).tolist() for _, g in t_part.groupby(keys, sort=True, dropna=False)]
        b_groups = [g["avg"].astype(float).tolist() for _, g in b_part.groupby(keys, sort=True, dropna=False)]
        test = pooled_std_ratio(t_groups, b_groups)
        missing = why_empty or (
            None if test["df_treated"] >= 2 and test["df_baseline"] >= 2 else "fewer than 3 seeds per side: no seed std to compare"
        )
        rows.append(
            _row(claim, scope, "", test["ratio"], test["ci_low"], test["ci_high"], len(t_part) + len(b_part), "trials", test["p"], missing)
        )
    return rows


def _scopes(treated: pd.DataFrame, baseline: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """The whole sweep, then each method alone."""
    methods = sorted(set(treated["method"]) | set(baseline["method"]))
    return [("all", treated, baseline)] + [(m, treated[treated["method"] == m], baseline[baseline["method"] == m]) for m in methods]


def _share_rows(claim: Claim, data: _Trials, metric: str) -> list[dict[str, Any]]:
    off = data.select(rr=False)
    column = f"interior/{metric}"
    rows = []
    for scope, part, _ in _scopes(off, off.iloc[0:0]):
        flags = part[column].dropna().astype(bool) if column in part else pd.Series(dtype=bool)
        est = share_with_interval(int(flags.sum()), int(flags.size))
        missing = None if flags.size >= MIN_TRIALS else f"{flags.size} trials without RR; the share needs >= {MIN_TRIALS}"
        rows.append(_row(claim, scope, metric, est["share"], est["ci_low"], est["ci_high"], flags.size, "trials", NAN, missing))
    return rows


def _phase_correlation_rows(
    claim: Claim, data: _Trials, metric: str, phase: int, rng: np.random.Generator, n_boot: int
) -> list[dict[str, Any]]:
    points = data.points.get(metric)
    rows = []
    if points is None:
        return [_row(claim, "all", metric, NAN, NAN, NAN, 0, "evaluations", NAN, f"no probe/{metric} column")]
    inside = points[(points["phase"] == phase) & (points["rr_coef"] == 0)]
    for scope, part, _ in _scopes(inside, inside.iloc[0:0]):
        corr = correlate(part["rank"], part["stsb_dev"], rng, part["trial_id"].to_numpy(), n_boot)
        missing = (
            None
            if corr["n_trials"] >= MIN_TRIALS and corr["n"] >= 2 * MIN_TRIALS
            else (f"{corr['n']} evaluations from {corr['n_trials']} trials without RR in Phase {phase}; needs >= {MIN_TRIALS} trials")
        )
        rows.append(
            _row(
                claim,
                scope,
                metric,
                corr["pearson_r"],
                corr["pearson_ci_low"],
                corr["pearson_ci_high"],
                corr["n"],
                "evaluations",
                corr["pearson_p"],
                missing,
            )
        )
    return rows


def _rank_std_rows(claim: Claim, data: _Trials, metric: str, rng: np.random.Generator, n_boot: int) -> list[dict[str, Any]]:
    column = f"avg_rank/{metric}"
    if column not in data.done:
        return [_row(claim, "all", metric, NAN, NAN, NAN, 0, "conditions", NAN, f"no probe/{metric} column")]
    groups = data.done.groupby(data.condition_keys, sort=True, dropna=False)
    x = groups[column].mean()
    y = groups["avg"].std(ddof=1)
    count = groups["avg"].count()
    keep = (count >= 2) & x.notna() & y.notna()
    corr = correlate(x[keep], y[keep], rng, None, n_boot)
    missing = None if corr["n"] >= MIN_CONDITIONS else f"{corr['n']} conditions with >= 2 seeds; the correlation needs >= {MIN_CONDITIONS}"
    return [
        _row(
            claim,
            "all",
            metric,
            corr["pearson_r"],
            corr["pearson_ci_low"],
            corr["pearson_ci_high"],
            corr["n"],
            "conditions",
            corr["pearson_p"],
            missing,
        )
    ]


def _never_switched(steps: pd.DataFrame, phase_aware: pd.DataFrame) -> str:
    """The reason the phase-aware rows say nothing when no after_peak trial ever switched RR on ("" otherwise)."""
    if not len(phase_aware) or "rr/switch_step" not in steps.columns:
        return ""
    ids = set(phase_aware["trial_id"])
    if steps.loc[steps["trial_id"].isin(ids), "rr/switch_step"].notna().any():
        return ""
    return (
        f"RR never switched on in the {len(ids)} {PHASE_AWARE} trials (the online detector saw no rank peak "
        "within the run), so they trained without RR; run longer or lower peak_patience / peak_drop"
    )


def compute_findings(
    steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str] = (), window: int = 3, n_boot: int = N_BOOT, seed: int = 0
) -> pd.DataFrame:
    """Every claim's rows (the whole sweep, then each method) from the steps and trials tables."""
    rng = np.random.default_rng(seed)
    data = _Trials(steps, trials, axes, window)
    off, paper_rr, phase_aware = data.select(rr=False), data.select(PAPER_RR, rr=True), data.select(PHASE_AWARE, rr=True)
    no_paper_rr = "" if len(paper_rr) else f"no completed trials with RR on ({PAPER_RR} schedule)"
    no_phase_aware = "" if len(phase_aware) else f"no completed trials with the {PHASE_AWARE} schedule"
    no_phase_aware = no_phase_aware or _never_switched(steps, phase_aware)
    strata, coef_strata = data.stratum_keys, [*data.stratum_keys, "rr_coef"]
    rows: list[dict[str, Any]] = []
    c = CLAIMS
    for metric in RANK_METRICS:
        rows += _share_rows(c["1"], data, metric)
        rows += _phase_correlation_rows(c["2"], data, metric, PHASE_1, rng, n_boot)
        rows += _phase_correlation_rows(c["3"], data, metric, PHASE_2, rng, n_boot)
        if f"avg_rank/{metric}" in data.done:
            rows += _difference_rows(c["4"], paper_rr, off, strata, f"avg_rank/{metric}", metric, relative=True, why_empty=no_paper_rr)
        rows += _rank_std_rows(c["7"], data, metric, rng, n_boot)
    for key, column in (("5a", "best_stsb_dev"), ("5b", "avg"), ("5c", "stsb")):
        rows += _difference_rows(c[key], paper_rr, off, strata, column, why_empty=no_paper_rr)
    rows += _std_ratio_rows(c["6"], paper_rr, off, data.condition_keys, why_empty=no_paper_rr)
    rows += _difference_rows(c["8"], paper_rr, off, strata, "best_step", why_empty=no_paper_rr)
    rows += _difference_rows(c["P1"], phase_aware, off, strata, "best_stsb_dev", why_empty=no_phase_aware)
    rows += _difference_rows(c["P2"], phase_aware, off, strata, "avg", why_empty=no_phase_aware)
    rows += _std_ratio_rows(c["P3"], phase_aware, off, data.condition_keys, why_empty=no_phase_aware)
    rows += _difference_rows(c["P5"], phase_aware, paper_rr, coef_strata, "best_stsb_dev", why_empty=no_phase_aware or no_paper_rr)
    rows += _difference_rows(c["P6"], phase_aware, paper_rr, coef_strata, "avg", why_empty=no_phase_aware or no_paper_rr)
    rows += _std_ratio_rows(c["P7"], phase_aware, paper_rr, data.condition_keys, why_empty=no_phase_aware or no_paper_rr)
    for metric in RANK_METRICS:
        if f"avg_rank/{metric}" in data.done:
            rows += _difference_rows(
                c["P4"], phase_aware, off, strata, f"avg_rank/{metric}", metric, relative=True, why_empty=no_phase_aware
            )
            rows += _difference_rows(
                c["P8"],
                phase_aware,
                paper_rr,
                coef_strata,
                f"avg_rank/{metric}",
                metric,
                relative=True,
                why_empty=no_phase_aware or no_paper_rr,
            )
    order = {k: i for i, k in enumerate(CLAIMS)}
    frame = pd.DataFrame(rows)
    frame["_order"] = frame["claim"].map(order)
    frame["_metric"] = frame["rank_metric"].map({m: i for i, m in enumerate(RANK_METRICS)}).fillna(-1)
    frame["_scope"] = (frame["scope"] != "all").astype(int)
    return (
        frame.sort_values(["_order", "_metric", "_scope", "scope"], kind="stable")
        .drop(columns=["_order", "_metric", "_scope"])
        .reset_index(drop=True)
    )


def phase_split_by_metric(steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str] = (), window: int = 3) -> pd.DataFrame:
    """How each rank notion splits the completed trials: interior peaks, non-empty Phase 2, peak step, rank fall to the best step.

    The evidence for the default phase metric: a notion that peaks inside the run and falls before the best
    STS-B dev gives both phases; one still rising at the end leaves Phase 2 empty.
    """
    data = _Trials(steps, trials, axes, window)
    rows = []
    groups = (
        ("no RR", data.select(rr=False)),
        (f"RR ({PAPER_RR})", data.select(PAPER_RR, rr=True)),
        (f"RR ({PHASE_AWARE})", data.select(PHASE_AWARE, rr=True)),
    )
    for metric in RANK_METRICS:
        if f"interior/{metric}" not in data.done:
            continue
        for label, part in groups:
            part = part[part[f"interior/{metric}"].notna()]
            if part.empty:
                continue
            rows.append(
                {
                    "rank_metric": metric,
                    "trials": label,
                    "n": len(part),
                    "interior_peak": float(part[f"interior/{metric}"].astype(bool).mean()),
                    "phase2_nonempty": float((part[f"phase2_evals/{metric}"] > 0).mean()),
                    "median_peak_step": float(part[f"peak_step/{metric}"].median()),
                    "median_phase2_evals": float(part[f"phase2_evals/{metric}"].median()),
                    "median_fall_to_best": float(part[f"fall/{metric}"].median()) if part[f"fall/{metric}"].notna().any() else NAN,
                }
            )
    return pd.DataFrame(rows)
