"""Rank vs STS-B dev within a phase, with the trial as the unit: a correlation per trial, combined across trials.

Every trial's series is split at its own rank peak (:func:`rankcse.phases.split_phases`, per rank notion).
Within a phase a trial's Pearson r and Spearman rho are computed only when the phase holds at least
:data:`MIN_EVALS` evaluations and the rank moves in it by more than its resolution (else the correlation is
of quantisation noise); the trials' correlations are then combined on Fisher's z scale with a t-test over
trials (:func:`rayjobs.analysis.inference.combine_trial_correlations`). No p-value treats the evaluations of one
run as independent. Each phase has a primary definition and a sensitivity variant (:data:`VARIANTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rankcse import names
from rankcse.phases import PHASE_1, PHASE_2, PhaseSplit, split_phases
from rayjobs.analysis.inference import combine_trial_correlations, trial_correlation

#: Evaluations a trial needs within a phase for its correlation.
MIN_EVALS = 3
#: Trials (each with a usable phase) a combined correlation needs before it can say anything.
MIN_TRIALS = 3
#: (phase, variant) -> which evaluations; the first variant of each phase is the primary (the paper's) one.
VARIANTS = {
    (PHASE_1, "with step 0"): lambda f: f["phase"] == PHASE_1,
    (PHASE_1, "without step 0"): lambda f: (f["phase"] == PHASE_1) & (f["step"] > 0),
    (PHASE_2, "peak to best"): lambda f: f["phase"] == PHASE_2,
    (PHASE_2, "peak to end"): lambda f: f["phase"] > PHASE_1,
}
PRIMARY = {PHASE_1: "with step 0", PHASE_2: "peak to best"}


@dataclass
class Labelled:
    """One rank notion's phase split of every trial: the evaluation points and each trial's split."""

    points: pd.DataFrame  # trial_id, step, rank, stsb_dev, phase
    splits: dict[str, tuple[PhaseSplit, np.ndarray]]  # trial_id -> (split, steps)
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # trial_id -> (step, rank, stsb_dev, phase)


def label(steps: pd.DataFrame, trial_ids: set[str] | list[str], rank_column: str, window: int) -> Labelled:
    """Split every listed trial's series of ``rank_column`` (trials without it, or with < 2 evaluations, are left out)."""
    splits: dict[str, tuple[PhaseSplit, np.ndarray]] = {}
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    columns = ["trial_id", "step", "rank", names.PRIMARY.name, "phase"]
    if rank_column not in steps:
        return Labelled(pd.DataFrame(columns=columns), splits, series)
    part = steps[steps["trial_id"].isin(set(trial_ids))].sort_values(["trial_id", "step"], kind="stable")
    ids = part["trial_id"].astype(str).to_numpy()
    all_steps = part["step"].to_numpy()
    all_rank = part[rank_column].to_numpy(dtype=np.float64, na_value=np.nan)
    all_score = part[names.PRIMARY.name].to_numpy(dtype=np.float64, na_value=np.nan)
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True]) if ids.size else np.array([0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rank, score, step = all_rank[lo:hi], all_score[lo:hi], all_steps[lo:hi]
        if not np.isfinite(rank).any() or len(rank) < 2:
            continue
        split = split_phases(np.nan_to_num(rank, nan=-np.inf), score, window=window)
        splits[ids[lo]] = (split, step)
        series[ids[lo]] = (step, rank, score, np.asarray(split.labels))
    if series:
        points = pd.DataFrame(
            {
                "trial_id": np.concatenate([np.full(len(v[0]), k, dtype=object) for k, v in series.items()]),
                **{name: np.concatenate([v[i] for v in series.values()]) for i, name in enumerate(columns[1:])},
            }
        )
    else:
        points = pd.DataFrame(columns=columns)
    return Labelled(points, splits, series)


def per_trial(data: Labelled, trial_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per trial x (phase, variant): points, Pearson r, Spearman rho, and whether it is usable (and why not)."""
    rows: list[dict[str, Any]] = []
    wanted = data.series.keys() if trial_ids is None else [t for t in sorted(set(trial_ids)) if t in data.series]
    for trial_id in sorted(wanted):
        step, rank, score, phase = data.series[trial_id]
        res = data.splits[trial_id][0].resolution
        for (ph, variant), select in VARIANTS.items():
            mask = np.asarray(select({"phase": phase, "step": step}), dtype=bool)
            x, y = rank[mask], score[mask]
            r, rho = trial_correlation(x, y)
            finite = x[np.isfinite(x)]
            moves = finite.size > 0 and float(finite.max() - finite.min()) > res
            n = int(mask.sum())
            why = (
                f"{n} evaluations (needs >= {MIN_EVALS})"
                if n < MIN_EVALS
                else (f"the rank moves by no more than its resolution ({res:g})" if not moves else ("" if np.isfinite(r) else "no spread"))
            )
            rows.append(
                {
                    "trial_id": trial_id,
                    "phase": ph,
                    "variant": variant,
                    "n": n,
                    "pearson_r": r,
                    "spearman_rho": rho,
                    "usable": not why,
                    "why": why,
                }
            )
    return pd.DataFrame(rows, columns=["trial_id", "phase", "variant", "n", "pearson_r", "spearman_rho", "usable", "why"])


def combined(trials: pd.DataFrame) -> dict[str, Any]:
    """Per-trial rows of one (phase, variant) combined across trials: Pearson and Spearman on Fisher's z, t over trials."""
    usable = trials[trials["usable"].astype(bool)]
    pear, spear = combine_trial_correlations(usable["pearson_r"]), combine_trial_correlations(usable["spearman_rho"])
    return {
        "n": int(usable["n"].sum()),
        "n_trials": int(len(usable)),
        "trials_seen": int(trials["trial_id"].nunique()),
        "pearson_r": pear["r"],
        "pearson_p": pear["p"],
        "pearson_ci_low": pear["ci_low"],
        "pearson_ci_high": pear["ci_high"],
        "spearman_rho": spear["r"],
        "spearman_p": spear["p"],
        "spearman_ci_low": spear["ci_low"],
        "spearman_ci_high": spear["ci_high"],
    }
