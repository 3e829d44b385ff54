"""Probing accuracy across Phase 1 and Phase 2, per method, with and without RR, by task and by task group.

Input: the aggregator's steps table (one row per trial x evaluation step). Columns used:

- ``method`` (str), ``rr_coef`` (float, 0 = no RR), ``seed`` (int): the trial's settings;
- ``trial_id`` (optional): identifies a trial; without it a trial is (``method``, ``rr_coef``, ``seed``)
  plus any ``by`` columns;
- ``step`` (int) and ``phase`` (1 = Phase 1, 2 = Phase 2, 3 = post, i.e. after the best step);
- ``probing/<task>`` (float, test accuracy as a fraction): NaN at evaluations without probing.

Per trial and task (only the probed evaluations count):

- ``acc_start``: the first probed evaluation of Phase 1 (normally step 0, the pre-trained model);
- ``acc_peak``: the last probed evaluation of Phase 1 (at or before the rank peak);
- ``acc_best``: the last probed evaluation of Phase 2 (at or before the best checkpoint);
- ``change_phase1`` = ``acc_peak - acc_start``; ``change_phase2`` = ``acc_best - acc_peak``
  (NaN when Phase 2 has no probed evaluation);
- ``mean_phase1``, ``mean_phase2``: mean accuracy over the probed evaluations of each phase.

A group value (surface / syntactic / semantic, Conneau et al. 2018) is the mean over the group's
tasks in the same trial; surrogate tasks (``*_gen``) and SentEval's tasks are never averaged
together. Output rows: per (``by`` columns, level, group, surrogate, task): the number of trials
and, for every quantity above, the mean and sample standard deviation (ddof=1) across trials.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rankcse.evaluation.probing import METRIC_PREFIX, group_of

QUANTITIES = ("acc_start", "acc_peak", "acc_best", "change_phase1", "change_phase2", "mean_phase1", "mean_phase2")
PHASE_1, PHASE_2 = 1, 2


def _per_trial_task(series: pd.DataFrame) -> dict[str, float]:
    """The quantities for one trial and task from its probed rows (sorted by step)."""
    p1 = series[series["phase"] == PHASE_1]["acc"].to_numpy()
    p2 = series[series["phase"] == PHASE_2]["acc"].to_numpy()
    start = p1[0] if p1.size else np.nan
    peak = p1[-1] if p1.size else np.nan
    best = p2[-1] if p2.size else np.nan
    return {
        "acc_start": start,
        "acc_peak": peak,
        "acc_best": best,
        "change_phase1": peak - start,
        "change_phase2": best - peak,
        "mean_phase1": p1.mean() if p1.size else np.nan,
        "mean_phase2": p2.mean() if p2.size else np.nan,
    }


def per_trial(steps: pd.DataFrame, by: Sequence[str] = ("method", "rr_coef")) -> pd.DataFrame:
    """One row per trial and task with the quantities of the module docstring."""
    tasks = [c for c in steps.columns if c.startswith(METRIC_PREFIX)]
    missing = [c for c in ("method", "rr_coef", "seed", "step", "phase", *by) if c not in steps.columns]
    if missing:
        raise ValueError(f"steps table lacks column(s) {', '.join(missing)}")
    if not tasks:
        raise ValueError(f"steps table has no {METRIC_PREFIX}<task> column; run trials with probing_tasks set")
    trial_keys = ["trial_id"] if "trial_id" in steps.columns else list(dict.fromkeys(["method", "rr_coef", "seed", *by]))
    keep = list(dict.fromkeys([*trial_keys, *by, "seed", "step", "phase"]))
    long = steps[keep + tasks].melt(id_vars=keep, value_vars=tasks, var_name="task", value_name="acc").dropna(subset=["acc"])
    long["task"] = long["task"].str.slice(len(METRIC_PREFIX))
    rows = []
    for _, series in long.sort_values("step", kind="stable").groupby([*trial_keys, "task"], sort=True):
        first = series.iloc[0]
        rows.append({**{k: first[k] for k in keep if k not in ("step", "phase")}, "task": first["task"], **_per_trial_task(series)})
    out = pd.DataFrame(rows)
    out["group"] = [group_of(t) or "unknown" for t in out["task"]]
    out["surrogate"] = out["task"].str.endswith("_gen")
    return out


def _aggregate(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(keys, dropna=False, sort=True)
    out = grouped.size().rename("n_trials").to_frame()
    for q in QUANTITIES:
        out[f"{q}_mean"] = grouped[q].mean()
        out[f"{q}_std"] = grouped[q].std(ddof=1)
    return out.reset_index()


def summarize_probing(steps: pd.DataFrame, by: Sequence[str] = ("method", "rr_coef")) -> pd.DataFrame:
    """Per ``by`` x task and ``by`` x task group: probing accuracy at phase boundaries and its change, across trials.

    Columns: the ``by`` columns, ``rr`` (rr_coef > 0), ``level`` ("task" or "group"), ``group``,
    ``surrogate``, ``task`` (the task key; for group rows, the group's tasks joined by "+"),
    ``n_trials``, and ``<quantity>_mean`` / ``<quantity>_std`` for each of :data:`QUANTITIES`.
    """
    by = list(by)
    trials = per_trial(steps, by)
    trial_id = "trial_id" if "trial_id" in trials.columns else None
    tasks = _aggregate(trials, [*by, "group", "surrogate", "task"])
    tasks.insert(len(by), "level", "task")
    # group value of a trial = mean over the group's tasks in that trial
    trial_keys = [trial_id] if trial_id else list(dict.fromkeys(["method", "rr_coef", "seed", *by]))
    group_keys = list(dict.fromkeys([*trial_keys, *by, "group", "surrogate"]))
    per_group = trials.groupby(group_keys, dropna=False, sort=True)
    grouped = per_group[list(QUANTITIES)].mean().reset_index()
    grouped["task"] = per_group["task"].agg(lambda names: "+".join(sorted(names))).to_numpy()
    groups = _aggregate(grouped, [*by, "group", "surrogate", "task"])
    groups.insert(len(by), "level", "group")
    out = pd.concat([tasks, groups], ignore_index=True)
    if "rr_coef" in by:
        out.insert(len(by), "rr", out["rr_coef"] > 0)
    order = {"surface": 0, "syntactic": 1, "semantic": 2}
    out["_g"] = out["group"].map(order).fillna(3)
    out = out.sort_values([*by, "level", "surrogate", "_g", "task"], kind="stable").drop(columns="_g").reset_index(drop=True)
    return out


def compare_rr(summary: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """RR minus no-RR (rr_coef 0) differences of the mean phase changes, per ``by`` x RR coefficient x task/group row."""
    keys = [*by, "level", "group", "surrogate", "task"]
    base = summary[summary["rr_coef"] == 0].set_index(keys)
    rows = []
    for _, row in summary[summary["rr_coef"] > 0].iterrows():
        key = tuple(row[k] for k in keys)
        if key not in base.index:
            continue
        ref = base.loc[key]
        rows.append(
            {
                **{k: row[k] for k in keys},
                "rr_coef": row["rr_coef"],
                "n_trials_rr": row["n_trials"],
                "n_trials_no_rr": ref["n_trials"],
                **{f"{q}_rr_minus_no_rr": row[f"{q}_mean"] - ref[f"{q}_mean"] for q in ("change_phase1", "change_phase2", "acc_best")},
            }
        )
    return pd.DataFrame(rows)
