"""The paper's findings tested on a sweep's own tables: one row per claim with its estimate, 95 % interval, n and verdict.

Everything is recomputed from ``steps.parquet`` and ``trials.parquet`` (the phase split of every trial
too, under each rank notion), so anyone can check the findings of a committed sweep against its tables.
The unit of every test is a trial (seed) or a condition, never one evaluation of a run. Each row's p-value
is adjusted with Holm's method over its family (the rows of one scope that were tested: the whole sweep,
or one method); sensitivity rows (``variant``) are held to Bonferroni over that family. A verdict is
``supported`` when the 95 % interval lies on the claimed side and the adjusted p is below 0.05,
``contradicted`` when both say the other side, and ``not enough data`` otherwise (the reason says why:
too few trials or conditions, an interval holding the no-effect value, or the correction).

Claims 1-8 are the paper's (SPEC §10 gives its values and how sure we are of them); P1-P8 put the
phase-aware schedule ``after_peak`` (not in the paper) against no RR and against always-on RR. An
``after_peak`` trial whose RR never switched on is a replica of no RR (:mod:`rayjobs.analysis.conditions`) and is
left out of every comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rankcse.names import PRIMARY
from rankcse.phases import PEAK, PHASE_1, PHASE_2
from rayjobs.analysis import within_phase
from rayjobs.analysis.conditions import replicas, switch_steps
from rayjobs.analysis.histories import COMPLETED
from rayjobs.analysis.inference import (
    METHODS,
    correlation_across_units,
    holm,
    min_trials_for_share,
    pooled_std_ratio,
    share_with_interval,
    stratified_welch,
)

SUPPORTED, CONTRADICTED, NOT_ENOUGH = "supported", "contradicted", "not enough data"
#: Rank notions every rank claim is tested under: the paper's analysis rank first, then the RR term's.
RANK_METRICS = ("energy_rank_99", "erank_vne")
ALPHA = 0.05
MIN_SHARE_TRIALS = min_trials_for_share(0.5)  # 6: fewer cannot put a share's exact interval above one half
MIN_TRIALS = within_phase.MIN_TRIALS  # trials with a usable phase behind a within-phase correlation
MIN_CONDITIONS = 4  # distinct conditions behind a correlation across conditions (Fisher's z needs n > 3)
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
        Claim(
            "1",
            "without RR the rank rises, then falls (by more than its resolution)",
            "share",
            0.5,
            +1,
            NAN,
            "all five methods (qualitative) [L]",
        ),
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


def format_statistic(statistic: str, value: Any) -> str:
    """A findings value in the unit a reader expects: shares and relative changes in %, STS differences ×100, ..."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if statistic == "share":
        return f"{100 * value:.0f}%"
    if statistic == "relative":
        return f"{100 * value:+.1f}%"
    if statistic == "difference":
        return f"{100 * value:+.2f}"
    if statistic == "ratio":
        return f"{value:.2f}×"
    if statistic == "steps":
        return f"{value:+.0f}"
    return f"{value:+.2f}"


def verdict(claim: Claim, low: float, high: float, p_adjusted: float, missing: str | None = None, how: str = "") -> tuple[str, str]:
    """(verdict, reason) from the 95 % interval and the adjusted p; ``missing`` names why the test could not be made,
    ``how`` the correction that gave ``p_adjusted``."""
    if missing:
        return NOT_ENOUGH, missing
    if not (math.isfinite(low) and math.isfinite(high)):
        return NOT_ENOUGH, "no interval could be computed (no spread in the values)"
    above, below = low > claim.null, high < claim.null
    if not (above or below):
        shown = f"[{format_statistic(claim.statistic, low)}, {format_statistic(claim.statistic, high)}]"  # the estimate's unit
        return NOT_ENOUGH, f"the 95% interval {shown} holds {claim.null:g}: more seeds or conditions needed"
    if not p_adjusted < ALPHA:
        side = "above" if above else "below"
        return (
            NOT_ENOUGH,
            f"the 95% interval lies {side} {claim.null:g}, but the adjusted p = {p_adjusted:.3g} ({how}) is not below {ALPHA:g}",
        )
    if (above and claim.sign > 0) or (below and claim.sign < 0):
        return SUPPORTED, ""
    return CONTRADICTED, f"the 95% interval lies {'above' if above else 'below'} {claim.null:g} (adjusted p = {p_adjusted:.3g}, {how})"


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
    interval: str = "",
    variant: str = "",
    note: str = "",
) -> dict[str, Any]:
    return {
        "claim": claim.key,
        "finding": claim.text,
        "rank_metric": rank_metric,
        "scope": scope,
        "variant": variant,
        "statistic": claim.statistic,
        "estimate": estimate,
        "ci_low": low,
        "ci_high": high,
        "interval": interval,
        "n": int(n),
        "n_unit": n_unit,
        "p_value": p,
        "p_adjusted": NAN,
        "paper_value": claim.paper_value if scope == "all" and not variant else NAN,
        "paper_note": claim.paper_note if scope == "all" and not variant else "",
        "verdict": "",
        "reason": "",
        "note": note,
        "_missing": missing or "",
        "_censored": "",
    }


class _Trials:
    """The completed trials that are distinct conditions, with the per-trial quantities the claims need under each rank notion."""

    def __init__(self, steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str], window: int) -> None:
        done = trials[trials["status"] == COMPLETED].copy()
        done["rr_coef"] = done["rr_coef"].astype(float)
        done["switch_step"] = switch_steps(done, steps).to_numpy()
        replica = replicas(done, steps)
        self.replicas = done[replica]
        self.done = done[~replica].copy()
        self.steps = steps
        self.stratum_keys = ["method", "model", *axes]
        self.condition_keys = ["method", "rr_coef", "rr_schedule", "model", *axes]
        self.labelled: dict[str, within_phase.Labelled] = {}
        self._phases: dict[str, pd.DataFrame] = {}
        for metric in RANK_METRICS:
            data = within_phase.label(steps, list(self.done["trial_id"]), f"probe/{metric}", window)
            if not data.splits:
                continue
            self.labelled[metric] = data
            per: dict[str, dict[str, float]] = {}
            for trial_id, (split, step) in data.splits.items():
                rank = data.series[trial_id][1]
                peak, best = split.peak_index, split.best_index
                per[trial_id] = {
                    "interior": float(split.kind == PEAK),
                    "kind": split.kind,
                    "avg_rank": float(np.nanmean(rank[: best + 1])),
                    "peak_step": float(step[peak]),
                    "phase2_evals": float(sum(1 for label in split.labels if label == PHASE_2)),
                    "fall": float(rank[best] / rank[peak] - 1) if best > peak else NAN,
                }
            for key in ("interior", "kind", "avg_rank", "peak_step", "phase2_evals", "fall"):
                self.done[f"{key}/{metric}"] = self.done["trial_id"].astype(str).map({t: v[key] for t, v in per.items()})

    def no_rr_phases(self, metric: str) -> pd.DataFrame:
        """Per-trial correlations within each phase variant of the no-RR trials (:func:`within_phase.per_trial`), with their method."""
        if metric not in self._phases:
            off = self.select(rr=False)
            per = within_phase.per_trial(self.labelled[metric], list(off["trial_id"].astype(str)))
            per["method"] = per["trial_id"].map(dict(zip(off["trial_id"].astype(str), off["method"])))
            self._phases[metric] = per
        return self._phases[metric]

    def select(self, schedule: str | None = None, rr: bool | None = None) -> pd.DataFrame:
        """Distinct trials with RR on (``rr``) or off, under ``schedule`` (RR-off trials match any schedule)."""
        frame = self.done
        if rr is not None:
            frame = frame[(frame["rr_coef"] > 0) == rr]
        if schedule is not None and rr:
            frame = frame[frame["rr_schedule"] == schedule]
        return frame


def _groups(frame: pd.DataFrame, keys: list[str], column: str) -> dict[tuple, list[float]]:
    """``column``'s values per combination of ``keys`` (in sorted key order; missing values are a key of their own)."""
    out: dict[tuple, list[float]] = {}
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    labels = zip(*([None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in frame[k].tolist()] for k in keys))
    for key, value in zip(labels, values):
        out.setdefault(key, []).append(float(value))
    return dict(sorted(out.items(), key=lambda kv: tuple(str(v) for v in kv[0])))


def _pairs(treated: pd.DataFrame, baseline: pd.DataFrame, keys: list[str], column: str) -> list[tuple[list[float], list[float]]]:
    """(treated values, baseline values) per stratum found on both sides."""
    base = _groups(baseline, keys, column)
    return [(values, base[k]) for k, values in _groups(treated, keys, column).items() if k in base]


def _pooling_note(treated: pd.DataFrame, keys: list[str]) -> str:
    """Says when the treated arm pools several RR coefficients within one stratum."""
    if "rr_coef" in keys or treated.empty:
        return ""
    coefs = sorted(set(treated["rr_coef"].astype(float)))
    return f"the RR arm pools coefficients {', '.join(f'{c:g}' for c in coefs)}" if len(coefs) > 1 else ""


def _difference_rows(
    claim: Claim,
    treated: pd.DataFrame,
    baseline: pd.DataFrame,
    keys: list[str],
    column: str,
    rank_metric: str = "",
    relative: bool = False,
    why_empty: str = "",
    note: str = "",
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
        notes = "; ".join(x for x in (_pooling_note(t_part, keys), note) if x)
        rows.append(
            _row(
                claim,
                scope,
                rank_metric,
                est,
                lo,
                hi,
                test["n_a"] + test["n_b"],
                "trials",
                test["p"],
                missing,
                METHODS["welch"],
                note=notes,
            )
        )
    return rows


def _best_step_rows(
    claim: Claim, treated: pd.DataFrame, baseline: pd.DataFrame, keys: list[str], why_empty: str, every: float
) -> list[dict[str, Any]]:
    """Claim 8: the difference of best steps (resolved to the evaluation interval ``every``), with trials whose best
    is their last evaluation marked as censored."""
    note = f"best steps are resolved to the evaluation interval ({every:g} steps)" if np.isfinite(every) else ""
    rows = _difference_rows(claim, treated, baseline, keys, "best_step", why_empty=why_empty, note=note)
    last = "steps_done" if "steps_done" in treated else None
    for row in rows:
        scope = row["scope"]
        t_part = treated if scope == "all" else treated[treated["method"] == scope]
        b_part = baseline if scope == "all" else baseline[baseline["method"] == scope]
        if last is None:
            continue
        cens_t = int((t_part["best_step"].astype(float) >= t_part[last].astype(float)).sum())
        cens_b = int((b_part["best_step"].astype(float) >= b_part[last].astype(float)).sum())
        parts = []
        if cens_t or cens_b:
            parts.append(
                f"censored: {cens_t} RR and {cens_b} no-RR trials reach their best STS-B dev at their last evaluation "
                "(the true best may be later)"
            )
        row["note"] = "; ".join(x for x in (row["note"], *parts) if x)
        row["_censored"] = ("t" if cens_t else "") + ("b" if cens_b else "")
    return rows


def _std_ratio_rows(
    claim: Claim, treated: pd.DataFrame, baseline: pd.DataFrame, keys: list[str], why_empty: str = ""
) -> list[dict[str, Any]]:
    rows = []
    for scope, t_part, b_part in _scopes(treated, baseline):
        t_groups = list(_groups(t_part, keys, "avg").values())
        b_groups = list(_groups(b_part, keys, "avg").values())
        test = pooled_std_ratio(t_groups, b_groups)
        missing = why_empty or (
            None if test["df_treated"] >= 2 and test["df_baseline"] >= 2 else "fewer than 3 seeds per side: no seed std to compare"
        )
        pooled = [g for g in t_groups if len(g) >= 2]
        note = f"pools the within-condition spread of {len(pooled)} RR conditions" if len(pooled) > 1 else ""
        rows.append(
            _row(
                claim,
                scope,
                "",
                test["ratio"],
                test["ci_low"],
                test["ci_high"],
                len(t_part) + len(b_part),
                "trials",
                test["p"],
                missing,
                METHODS["ratio"],
                note=note,
            )
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
        est = share_with_interval(int(flags.sum()), int(flags.size), claim.null)
        missing = (
            None
            if flags.size >= MIN_SHARE_TRIALS
            else f"{flags.size} trials without RR; the share needs >= {MIN_SHARE_TRIALS} (with fewer, even all of them "
            "rising and falling leaves the exact interval holding 0.5)"
        )
        kinds = part[f"kind/{metric}"].value_counts() if f"kind/{metric}" in part else pd.Series(dtype=int)
        note = "shapes: " + ", ".join(f"{k} {v}" for k, v in kinds.sort_index().items()) if len(kinds) else ""
        rows.append(
            _row(
                claim,
                scope,
                metric,
                est["share"],
                est["ci_low"],
                est["ci_high"],
                flags.size,
                "trials",
                est["p"],
                missing,
                METHODS["share"],
                note=note,
            )
        )
    return rows


def _phase_correlation_rows(claim: Claim, data: _Trials, metric: str, phase: int) -> list[dict[str, Any]]:
    labelled = data.labelled.get(metric)
    if labelled is None:
        return [_row(claim, "all", metric, NAN, NAN, NAN, 0, "trials", NAN, f"no probe/{metric} column", METHODS["trials_r"])]
    per = data.no_rr_phases(metric)
    rows = []
    for (ph, variant), _ in within_phase.VARIANTS.items():
        if ph != phase:
            continue
        primary = variant == within_phase.PRIMARY[phase]
        part_all = per[(per["phase"] == phase) & (per["variant"] == variant)]
        for scope, part, _ in _scopes(part_all, part_all.iloc[0:0]):
            comb = within_phase.combined(part)
            trial_rs = ", ".join(f"{r:+.2f}" for r in part.loc[part["usable"].astype(bool), "pearson_r"])
            note = "; ".join(
                x
                for x in (
                    f"per-trial r: {trial_rs}" if trial_rs else "",
                    f"Spearman {comb['spearman_rho']:+.2f}" if np.isfinite(comb["spearman_rho"]) else "",
                )
                if x
            )
            missing = (
                None
                if comb["n_trials"] >= MIN_TRIALS
                else f"{comb['n_trials']} of {len(part)} no-RR trials have a usable Phase {phase} ({variant}: >= "
                f"{within_phase.MIN_EVALS} evaluations and a rank that moves by more than its resolution); needs >= {MIN_TRIALS}"
            )
            rows.append(
                _row(
                    claim,
                    scope,
                    metric,
                    comb["pearson_r"],
                    comb["pearson_ci_low"],
                    comb["pearson_ci_high"],
                    comb["n_trials"],
                    "trials",
                    comb["pearson_p"],
                    missing,
                    METHODS["trials_r"],
                    "" if primary else variant,
                    note=note,
                )
            )
    return rows


def _rank_std_rows(claim: Claim, data: _Trials, metric: str) -> list[dict[str, Any]]:
    column = f"avg_rank/{metric}"
    if column not in data.done:
        return [_row(claim, "all", metric, NAN, NAN, NAN, 0, "conditions", NAN, f"no probe/{metric} column", METHODS["units_r"])]
    groups = data.done.groupby(data.condition_keys, sort=True, dropna=False)
    x = groups[column].mean()
    y = groups["avg"].std(ddof=1)
    count = groups["avg"].count()
    keep = (count >= 2) & x.notna() & y.notna()
    corr = correlation_across_units(x[keep], y[keep])
    missing = (
        None
        if corr["n"] >= MIN_CONDITIONS
        else f"{corr['n']} distinct conditions with >= 2 seeds; the correlation needs >= {MIN_CONDITIONS}"
    )
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
            METHODS["units_r"],
        )
    ]


def _phase_aware_status(data: _Trials) -> tuple[str, str]:
    """(why the P rows say nothing, or "", a note naming the steps RR switched on and the replicas left out)."""
    switched = data.select(PHASE_AWARE, rr=True)
    reps = data.replicas
    if switched.empty and reps.empty:
        return f"no completed trials with the {PHASE_AWARE} schedule", ""
    if switched.empty:
        return (
            f"RR never switched on in the {len(reps)} {PHASE_AWARE} trials (the online detector saw no rank peak "
            "within the run), so they are replicas of no RR; run longer or make the detector recognise a plateau",
            "",
        )
    steps = ", ".join(f"{s:g}" for s in sorted(switched["switch_step"].dropna()))
    note = f"RR switched on at steps {steps}"
    if len(reps):
        note += f"; {len(reps)} {PHASE_AWARE} trials never switched (replicas of no RR) are left out"
    return "", note


def _decide(frame: pd.DataFrame) -> pd.DataFrame:
    """Adjust the p-values (Holm within each scope's primary rows, Bonferroni over that family for variants) and set verdicts."""
    frame = frame.copy()
    tested = frame["_missing"].eq("") & np.isfinite(frame["p_value"].astype(float))
    for scope in frame["scope"].unique():
        family = tested & frame["scope"].eq(scope) & frame["variant"].eq("")
        m = int(family.sum())
        frame.loc[family, "p_adjusted"] = holm(frame.loc[family, "p_value"].astype(float).to_numpy())
        extra = tested & frame["scope"].eq(scope) & frame["variant"].ne("")
        frame.loc[extra, "p_adjusted"] = np.minimum(1.0, max(m, 1) * frame.loc[extra, "p_value"].astype(float))
        frame.loc[family, "_how"] = f"Holm over {m} tests"
        frame.loc[extra, "_how"] = f"Bonferroni over {max(m, 1)} tests"
    verdicts, reasons = [], []
    for _, r in frame.iterrows():
        v, why = verdict(CLAIMS[r["claim"]], r["ci_low"], r["ci_high"], r["p_adjusted"], r["_missing"] or None, str(r.get("_how") or ""))
        if v == SUPPORTED and "t" in r["_censored"] and CLAIMS[r["claim"]].sign < 0:
            v, why = NOT_ENOUGH, "RR trials reach their best at their last evaluation (censored): an earlier best cannot be claimed"
        if v == CONTRADICTED and "b" in r["_censored"]:
            v, why = NOT_ENOUGH, "no-RR trials reach their best at their last evaluation (censored): a later RR best cannot be claimed"
        verdicts.append(v)
        reasons.append(why)
    frame["verdict"], frame["reason"] = verdicts, reasons
    return frame.drop(columns=["_missing", "_censored", "_how"], errors="ignore")


def compute_findings(steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str] = (), window: int = 3) -> pd.DataFrame:
    """Every claim's rows (the whole sweep, then each method) from the steps and trials tables."""
    data = _Trials(steps, trials, axes, window)
    off, paper_rr, phase_aware = data.select(rr=False), data.select(PAPER_RR, rr=True), data.select(PHASE_AWARE, rr=True)
    no_paper_rr = "" if len(paper_rr) else f"no completed trials with RR on ({PAPER_RR} schedule)"
    no_phase_aware, switched_note = _phase_aware_status(data)
    strata, coef_strata = data.stratum_keys, [*data.stratum_keys, "rr_coef"]
    rows: list[dict[str, Any]] = []
    c = CLAIMS
    for metric in RANK_METRICS:
        rows += _share_rows(c["1"], data, metric)
        rows += _phase_correlation_rows(c["2"], data, metric, PHASE_1)
        rows += _phase_correlation_rows(c["3"], data, metric, PHASE_2)
        if f"avg_rank/{metric}" in data.done:
            rows += _difference_rows(c["4"], paper_rr, off, strata, f"avg_rank/{metric}", metric, relative=True, why_empty=no_paper_rr)
        rows += _rank_std_rows(c["7"], data, metric)
    for key, column in (("5a", PRIMARY.best), ("5b", "avg"), ("5c", "stsb")):
        rows += _difference_rows(c[key], paper_rr, off, strata, column, why_empty=no_paper_rr)
    rows += _std_ratio_rows(c["6"], paper_rr, off, data.condition_keys, why_empty=no_paper_rr)
    evaluated = np.unique(steps["step"].dropna().to_numpy(dtype=np.float64)) if "step" in steps else np.zeros(0)
    every = float(np.min(np.diff(evaluated))) if evaluated.size > 1 else NAN
    rows += _best_step_rows(c["8"], paper_rr, off, strata, no_paper_rr, every)
    pa = {"why_empty": no_phase_aware, "note": switched_note}
    pr = {"why_empty": no_phase_aware or no_paper_rr, "note": switched_note}
    rows += _difference_rows(c["P1"], phase_aware, off, strata, PRIMARY.best, **pa)
    rows += _difference_rows(c["P2"], phase_aware, off, strata, "avg", **pa)
    rows += _std_ratio_rows(c["P3"], phase_aware, off, data.condition_keys, why_empty=no_phase_aware)
    rows += _difference_rows(c["P5"], phase_aware, paper_rr, coef_strata, PRIMARY.best, **pr)
    rows += _difference_rows(c["P6"], phase_aware, paper_rr, coef_strata, "avg", **pr)
    rows += _std_ratio_rows(c["P7"], phase_aware, paper_rr, data.condition_keys, why_empty=no_phase_aware or no_paper_rr)
    for metric in RANK_METRICS:
        if f"avg_rank/{metric}" in data.done:
            rows += _difference_rows(c["P4"], phase_aware, off, strata, f"avg_rank/{metric}", metric, relative=True, **pa)
            rows += _difference_rows(c["P8"], phase_aware, paper_rr, coef_strata, f"avg_rank/{metric}", metric, relative=True, **pr)
    order = {k: i for i, k in enumerate(CLAIMS)}
    frame = _decide(pd.DataFrame(rows))
    frame["_order"] = frame["claim"].map(order)
    frame["_metric"] = frame["rank_metric"].map({m: i for i, m in enumerate(RANK_METRICS)}).fillna(-1)
    frame["_scope"] = (frame["scope"] != "all").astype(int)
    frame["_variant"] = (frame["variant"] != "").astype(int)
    return (
        frame.sort_values(["_order", "_metric", "_scope", "scope", "_variant"], kind="stable")
        .drop(columns=["_order", "_metric", "_scope", "_variant"])
        .reset_index(drop=True)
    )


def phase_split_by_metric(steps: pd.DataFrame, trials: pd.DataFrame, axes: Sequence[str] = (), window: int = 3) -> pd.DataFrame:
    """How each rank notion splits the distinct completed trials: the shape of the rank (rise and fall, plateau,
    still rising, no rise), non-empty Phase 2, peak step and the rank's change from the peak to the best step."""
    data = _Trials(steps, trials, axes, window)
    rows = []
    groups = (
        ("no RR", data.select(rr=False)),
        (f"RR ({PAPER_RR})", data.select(PAPER_RR, rr=True)),
        (f"RR ({PHASE_AWARE}, switched on)", data.select(PHASE_AWARE, rr=True)),
    )
    for metric in RANK_METRICS:
        if f"interior/{metric}" not in data.done:
            continue
        for label, part in groups:
            part = part[part[f"interior/{metric}"].notna()]
            if part.empty:
                continue
            kinds = part[f"kind/{metric}"]
            rows.append(
                {
                    "rank_metric": metric,
                    "trials": label,
                    "n": len(part),
                    "interior_peak": float((kinds == "peak").mean()),
                    "plateau": float((kinds == "plateau").mean()),
                    "rising": float((kinds == "rising").mean()),
                    "no_rise": float((kinds == "no_rise").mean()),
                    "phase2_nonempty": float((part[f"phase2_evals/{metric}"] > 0).mean()),
                    "median_peak_step": float(part[f"peak_step/{metric}"].median()),
                    "median_phase2_evals": float(part[f"phase2_evals/{metric}"].median()),
                    "median_fall_to_best": float(part[f"fall/{metric}"].median()) if part[f"fall/{metric}"].notna().any() else NAN,
                }
            )
    return pd.DataFrame(rows)
