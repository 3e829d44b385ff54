"""The results aggregator: an experiment folder in, Parquet tables, figures and a report out.

    rankcse aggregate results/ray/smoke --output-dir results/smoke
    python -m rayjobs.aggregate results/ray/smoke --output-dir results/smoke
    rankcse aggregate results/reference/study --from-tables      # again, from steps + trials tables alone

It reads every trial's full history (:mod:`rayjobs.analysis.histories`), splits each at its rank peak into
Phase 1 and Phase 2 (:func:`rankcse.phases.split_phases`: a centred moving average over ``--smooth``
evaluations finds the peak region, the raw maximum there is the peak, and it counts only when the
rank rises and falls by more than its resolution), and writes ``steps``, ``trials``, ``summary``,
``correlations`` and ``findings`` (plus ``probing`` when trials probed) as Parquet
(:mod:`rayjobs.analysis.schema`), the figures and ``report.md``. ``after_peak`` trials whose RR never switched on
are replicas of no RR (:mod:`rayjobs.analysis.conditions`) and count in no summary, correlation or finding.
The same folder always gives byte-identical tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankcse.errors import ConfigError, DataError, RankCSEError
from rankcse.folder_swap import replacing_folder
from rankcse.names import DEFAULT_PHASE_METRIC, PRIMARY, PROBE_METRICS, STS_TASKS
from rankcse.phases import split_phases
from rayjobs.analysis import schema, within_phase
from rayjobs.analysis.conditions import replicas, rr_on
from rayjobs.analysis.findings import compute_findings
from rayjobs.analysis.histories import (
    COLLAPSED,
    COMPLETED,
    CORE_KEYS,
    CORRUPT,
    DUPLICATE,
    ERRORED,
    INCOMPLETE,
    TRUNCATED,
    Trial,
    read_experiment,
)
from rayjobs.analysis.inference import METHODS, N_BOOT, correlation_across_units, mean_std_intervals, welch
from rayjobs.layout import cell_label

log = logging.getLogger("rayjobs")

FINAL_SCORES = (*STS_TASKS, "avg")
TRIAL_QUANTITIES = (PRIMARY.best, "avg_rank", "avg_energy_rank_99", "avg_erank_vne", "rank_at_best", "peak_rank")
ENERGY = "probe/energy_rank_99"
VNE = "probe/erank_vne"
#: Average rank of each rank notion (trials table column) that the seed-std correlation uses.
AVERAGE_OF = {ENERGY: "avg_energy_rank_99", VNE: "avg_erank_vne"}
SEED_STD_SCORES = ("avg", "stsb", PRIMARY.best)
#: Figure files an aggregation may write: an earlier one that the new aggregation does not draw is dropped.
OUTPUT_FIGURES = ("rank_and_stsb_over_steps.png", "score_by_rr.png", "rank_vs_seed_std.png")


@dataclass
class Aggregated:
    """What one aggregation wrote and found."""

    output_dir: Path
    files: dict[str, Path]
    counts: dict[str, int]
    skipped: list[tuple[str, str]]
    completed_cells: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def describe(self) -> str:
        """Lines for the terminal: trial counts and where every file is."""
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        lines = [f"aggregated {sum(self.counts.values())} trial folder(s) ({counts}) in {self.seconds:.1f}s"]
        lines += [f"  skipped {path}: {why}" for path, why in self.skipped]
        lines.append(f"results: {self.output_dir}")
        lines += [f"  {name:<13} {path}" for name, path in self.files.items()]
        return "\n".join(lines)


# -- per trial ---------------------------------------------------------------------------------------


def _condition(trial: Trial, sweep: str) -> dict[str, Any]:
    cfg = trial.config
    out = {"sweep": sweep, "trial_id": trial.trial_id}
    for key in CORE_KEYS:
        out[key] = trial.axes.get(key, cfg.get(key))
    out["rr_coef"] = float(out["rr_coef"]) if out["rr_coef"] is not None else 0.0
    out["rr_schedule"] = out["rr_schedule"] or "always"
    out["model"] = out["model"] or "default"
    out.update({k: v for k, v in trial.axes.items() if k not in CORE_KEYS})
    return out


def _allowed_step_column(name: str) -> bool:
    return name in schema.STEPS or any(name.startswith(p) for p in schema.STEPS_PREFIXES)


def trial_steps(trial: Trial, meta: dict[str, Any], rank_column: str, window: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The trial's evaluation rows with phase labels, and its per-trial quantities."""
    frame = pd.DataFrame.from_records(trial.records)
    frame = frame[[c for c in frame.columns if _allowed_step_column(c) and c != "phase"]] if len(frame) else frame
    frame, quantities = phase_quantities(frame, rank_column, window)
    for key, value in meta.items():
        frame[key] = value
    return frame, quantities


def phase_quantities(frame: pd.DataFrame, rank_column: str, window: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One trial's evaluation rows (sorted by step) with their ``phase`` label, and the quantities its phase split gives."""
    frame = frame.sort_values("step", kind="stable").reset_index(drop=True) if len(frame) else frame
    quantities: dict[str, Any] = {"n_evals": len(frame), "steps_done": int(frame["step"].max()) if len(frame) else None}
    if len(frame) and rank_column in frame and PRIMARY.name in frame and frame[rank_column].notna().any():
        rank = frame[rank_column].astype(float).to_numpy()
        score = frame[PRIMARY.name].astype(float).to_numpy()
        split = split_phases(np.nan_to_num(rank, nan=-np.inf), score, window=window)
        frame["phase"] = split.labels
        steps = frame["step"].to_numpy()
        upto = slice(0, split.best_index + 1)
        energy = frame[ENERGY].astype(float).to_numpy() if ENERGY in frame else np.full(len(frame), np.nan)
        vne = frame[VNE].astype(float).to_numpy() if VNE in frame else np.full(len(frame), np.nan)
        quantities.update(
            peak_step=float(steps[split.peak_index]),
            peak_rank=float(rank[split.peak_index]),
            peak_energy_rank_99=float(energy[split.peak_index]),
            best_step=float(steps[split.best_index]),
            **{PRIMARY.best: float(score[split.best_index])},
            rank_at_best=float(rank[split.best_index]),
            avg_rank=float(np.nanmean(rank[upto])),
            avg_energy_rank_99=float(np.nanmean(energy[upto])) if np.isfinite(energy[upto]).any() else float("nan"),
            avg_erank_vne=float(np.nanmean(vne[upto])) if np.isfinite(vne[upto]).any() else float("nan"),
            phase_flag=split.flag,
            rank_resolution=split.resolution,
            n_phase1=int(sum(1 for p in split.labels if p == 1)),
            n_phase2=int(sum(1 for p in split.labels if p == 2)),
        )
    elif len(frame):
        frame["phase"] = np.nan
        quantities["phase_flag"] = "no_rank"
    if len(frame) and "rr/switch_step" in frame and frame["rr/switch_step"].notna().any():
        quantities["rr_switch_step"] = float(frame["rr/switch_step"].dropna().iloc[-1])
    return frame, quantities


def trial_row(trial: Trial, meta: dict[str, Any], quantities: dict[str, Any]) -> dict[str, Any]:
    """One row of the trials table."""
    row: dict[str, Any] = {
        **meta,
        "path": trial.path,
        "layout": trial.layout,
        "status": trial.status,
        "error": trial.error,
        "attempts_failed": trial.attempts_failed,
        "device": trial.device,
    }
    row.update(quantities)
    final = trial.final or {}
    row.update({k: final.get(k) for k in FINAL_SCORES})
    row["no_improvement"] = no_improvement(trial)
    row["train_seconds"] = final.get("train_seconds")
    row.update({k: v for k, v in final.items() if k.startswith(("probing/", "transfer/", "pretrained/")) and isinstance(v, (int, float))})
    row["config"] = json.dumps(trial.config, sort_keys=True, default=str)
    return row


def no_improvement(trial: Trial) -> bool | None:
    """Whether no trained evaluation beat the pre-trained model on STS-B dev (final.json says, else the history)."""
    final = trial.final or {}
    if isinstance(final.get("no_improvement"), bool):
        return final["no_improvement"]
    start = next((r.get(PRIMARY.name) for r in trial.records if r.get("step") == 0), None)
    trained = [r.get(PRIMARY.name) for r in trial.records if r.get("step", 0) > 0 and isinstance(r.get(PRIMARY.name), (int, float))]
    if not isinstance(start, (int, float)) or not trained:
        return None
    return not any(PRIMARY.better(value, start) for value in trained)


# -- across trials -------------------------------------------------------------------------------------


def summarize(
    trials: pd.DataFrame, group_keys: list[str], rng: np.random.Generator, n_boot: int, steps: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per distinct condition x quantity: seeds, mean, std and their intervals; RR vs no RR with Welch's test.

    Replicas of no RR (after_peak trials whose RR never switched on) are left out: they are not a condition.
    """
    done = trials[trials["status"] == COMPLETED]
    done = done[~replicas(done, steps).to_numpy()] if len(done) else done
    metrics = [m for m in (*FINAL_SCORES, *TRIAL_QUANTITIES) if m in done and done[m].notna().any()]
    metrics += sorted(c for c in done.columns if c.startswith(("probing/", "transfer/")) and done[c].notna().any())
    rows = []
    for key, group in done.groupby(group_keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = group[metric].dropna().astype(float).tolist()
            rows.append({**dict(zip(group_keys, key)), "metric": metric, **mean_std_intervals(values, rng, n_boot), "_values": values})
    summary = pd.DataFrame(rows)
    if summary.empty:
        return pd.DataFrame(columns=list(dict.fromkeys([*group_keys, *schema.SUMMARY])))
    others = [k for k in group_keys if k != "rr_coef"]
    loose = [k for k in others if k != "rr_schedule"]  # RR off runs once whatever the schedule (SweepSpec.cells)
    base = {tuple(r[k] for k in others) + (r["metric"],): r for r in rows if r["rr_coef"] == 0}
    base_any: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["rr_coef"] == 0:
            base_any.setdefault(tuple(r[k] for k in loose) + (r["metric"],), r)
    extra = []
    for r in rows:
        ref = base.get(tuple(r[k] for k in others) + (r["metric"],)) or base_any.get(tuple(r[k] for k in loose) + (r["metric"],))
        if r["rr_coef"] == 0 or ref is None:
            extra.append({"baseline_n": np.nan, "baseline_mean": np.nan, "diff_vs_no_rr": np.nan, "welch_t": np.nan, "welch_p": np.nan})
            continue
        t, p = welch(r["_values"], ref["_values"])
        extra.append(
            {
                "baseline_n": float(ref["n"]),
                "baseline_mean": ref["mean"],
                "diff_vs_no_rr": r["mean"] - ref["mean"],
                "welch_t": t,
                "welch_p": p,
            }
        )
    summary = pd.concat([summary.drop(columns="_values"), pd.DataFrame(extra)], axis=1)
    return summary


def correlations(
    steps: pd.DataFrame,
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    group_keys: list[str],
    rank_columns: list[str],
    window: int,
) -> pd.DataFrame:
    """Rank vs STS-B dev within each phase (per trial, and combined across trials), and average rank vs seed std
    across distinct conditions. Replicas of no RR are left out (their points are the no-RR trials' points)."""
    done = trials[trials["status"] == COMPLETED]
    distinct = done[~replicas(done, steps).to_numpy()] if len(done) else done
    on = rr_on(distinct, steps).to_numpy() if len(distinct) else np.zeros(0, bool)
    ids = distinct["trial_id"].astype(str)
    subsets = {"no_rr": ids[distinct["rr_coef"].astype(float).to_numpy() == 0].tolist(), "rr": ids[on].tolist()}
    subsets["all"] = subsets["no_rr"] + subsets["rr"]
    methods = dict(zip(ids, distinct["method"].astype(str)))
    rows: list[dict[str, Any]] = []
    for rank_col in rank_columns:
        if rank_col not in steps:
            continue
        labelled = within_phase.label(steps, subsets["all"], rank_col, window)
        per = within_phase.per_trial(labelled)
        if per.empty:
            continue
        per["method"] = per["trial_id"].astype(str).map(methods)
        for (phase, variant), _ in within_phase.VARIANTS.items():
            inside = per[(per["phase"] == phase) & (per["variant"] == variant)]
            base = {
                "analysis": f"rank_vs_{PRIMARY.name}",
                "rank_metric": rank_col,
                "phase": float(phase),
                "variant": variant,
                "score": PRIMARY.name,
            }
            for subset, members in subsets.items():
                part = inside[inside["trial_id"].isin(set(members))]
                if part.empty:
                    continue
                groups = [("all", part)] + [(m, g) for m, g in part.groupby("method", sort=True)]
                for method, g in groups:
                    rows.append(
                        {
                            **base,
                            "subset": subset,
                            "scope": "across_trials",
                            "method": method,
                            "interval": METHODS["trials_r"],
                            **within_phase.combined(g),
                        }
                    )
            for _, t in inside.iterrows():  # one row per trial (subset: the trial's own kind), no p-value
                rows.append(
                    {
                        **base,
                        "subset": "rr" if t["trial_id"] in set(subsets["rr"]) else "no_rr",
                        "scope": "trial",
                        "method": t["method"],
                        "trial_id": t["trial_id"],
                        "n": int(t["n"]),
                        "n_trials": 1,
                        "pearson_r": t["pearson_r"],
                        "spearman_rho": t["spearman_rho"],
                        "usable": bool(t["usable"]),
                        "note": t["why"],
                    }
                )
    if not summary.empty:
        keys = group_keys
        averages = {col: AVERAGE_OF.get(col, "avg_rank") for col in rank_columns}
        for rank_col, avg_metric in averages.items():
            ranks = summary[summary["metric"] == avg_metric].set_index(keys)["mean"]
            for score in SEED_STD_SCORES:
                spread = summary[(summary["metric"] == score) & (summary["n"] >= 2)].set_index(keys)["std"]
                joined = pd.concat([ranks.rename("x"), spread.rename("y")], axis=1, join="inner").dropna()
                if joined.empty:
                    continue
                rows.append(
                    {
                        "analysis": "avg_rank_vs_seed_std",
                        "rank_metric": rank_col,
                        "phase": np.nan,
                        "variant": "",
                        "score": score,
                        "scope": "conditions",
                        "method": "all",
                        "subset": "all",
                        "interval": METHODS["units_r"],
                        "n_trials": int(summary[(summary["metric"] == score) & (summary["n"] >= 2)]["n"].sum()),
                        **correlation_across_units(joined["x"], joined["y"]),
                    }
                )
    return pd.DataFrame(rows, columns=list(schema.CORRELATIONS))


# -- the whole folder ---------------------------------------------------------------------------------


def parse_only(items: Sequence[str]) -> dict[str, list[str]]:
    """``--only KEY=V1,V2`` flags as {axis: allowed values}; a bad item is a ConfigError."""
    from rankcse.errors import ConfigError

    only: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--only takes KEY=V1,V2 (a grid axis and the values to keep), got {item!r}")
        only.setdefault(key.strip(), []).extend(v.strip() for v in values.split(","))
    return only


def _matches(value: Any, allowed: list[str]) -> bool:
    """Whether a trial's axis value is one of the ``--only`` values (numbers compared as numbers)."""
    for text in allowed:
        try:
            if float(text) == float(value):
                return True
        except (TypeError, ValueError):
            if str(value) == text:
                return True
    return False


def select_trials(trials: list[Trial], only: dict[str, list[str]]) -> list[Trial]:
    """The trials whose grid cell matches every ``--only`` axis (unreadable folders are kept, to be reported).

    A key no trial has, a value no trial has (a typo, text for a number) or a selection that keeps no trial is a
    ConfigError naming the valid keys or values: an aggregation of nothing would replace good tables with empty ones.
    """
    if not only:
        return trials
    from rankcse.errors import ConfigError

    readable = [t for t in trials if t.status != CORRUPT]
    known = {k for t in readable for k in {**t.config, **t.axes}}
    unknown = sorted(set(only) - known)
    if unknown and readable:
        raise ConfigError(
            f"--only names {', '.join(unknown)}, which no trial has; its axes are "
            f"{', '.join(sorted(known & {k for t in trials for k in t.axes}) or CORE_KEYS)}"
        )
    for key, allowed in only.items():
        present = [_setting(t, key) for t in readable]
        values = sorted({_shown(v) for v in present}, key=_sort_key)
        absent = [text for text in allowed if not any(_matches(v, [text]) for v in present)]
        if absent:
            raise ConfigError(
                f"--only {key}={','.join(allowed)}: no trial has {key} = {', '.join(absent)}; its values are {', '.join(values)}"
            )
    kept = [t for t in trials if t.status == CORRUPT or all(_matches(_setting(t, k), v) for k, v in only.items())]
    if readable and not any(t.status != CORRUPT for t in kept):
        shown = " ".join(f"--only {k}={','.join(v)}" for k, v in only.items())
        raise ConfigError(f"{shown} together keep no trial (each value exists, but not in one trial); drop or widen one")
    return kept


def _setting(trial: Trial, key: str) -> Any:
    """A trial's value of a grid axis or train setting (the axis wins)."""
    return trial.axes[key] if key in trial.axes else trial.config.get(key)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def build_tables(
    experiment_dir: Path,
    rank_metric: str = DEFAULT_PHASE_METRIC,
    window: int = 3,
    n_boot: int = N_BOOT,
    seed: int = 0,
    only: dict[str, list[str]] | None = None,
) -> tuple[dict[str, pd.DataFrame], list[Trial], list[str]]:
    """Read the experiment and compute every table; return (tables, trials as read, extra grid axes)."""
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    sweep = experiment_dir.name
    trials = read_experiment(experiment_dir)
    if not trials:
        raise DataError(f"no trial folders in {experiment_dir}; pass the folder a sweep or `rankcse train` runs wrote")
    if all(t.status == CORRUPT for t in trials):
        first = trials[0]
        raise DataError(
            f"no readable trial in {experiment_dir}: {len(trials)} trial folder(s) skipped as unreadable "
            f"(first: {first.path}: {first.error})"
        )
    trials = select_trials(trials, only or {})
    rank_column = f"probe/{rank_metric}"
    axes = sorted({k for t in trials for k in t.axes if k not in CORE_KEYS})
    step_frames, trial_rows = [], []
    for trial in trials:
        if trial.status == CORRUPT:
            continue
        meta = _condition(trial, sweep)
        frame, quantities = trial_steps(trial, meta, rank_column, window)
        if trial.status != DUPLICATE and len(frame):
            step_frames.append(frame)
        trial_rows.append(trial_row(trial, meta, quantities))
    steps = pd.concat(step_frames, ignore_index=True) if step_frames else pd.DataFrame(columns=list(schema.STEPS))
    steps = schema.conform(steps, "steps", axes).sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)
    trials_table = schema.conform(pd.DataFrame(trial_rows, columns=None if trial_rows else list(schema.TRIALS)), "trials", axes)
    trials_table = trials_table.sort_values(["trial_id", "path"], kind="stable").reset_index(drop=True)
    tables = derive_tables(steps, trials_table, axes, rank_column, window, n_boot, seed)
    return tables, trials, axes


def derive_tables(
    steps: pd.DataFrame,
    trials_table: pd.DataFrame,
    axes: list[str],
    rank_column: str,
    window: int = 3,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Summary, correlations, findings (and probing) from the steps and trials tables; all five (or six) tables."""
    rng = np.random.default_rng(seed)
    group_keys = [*schema.CONDITION, *axes]
    summary = schema.conform(summarize(trials_table, group_keys, rng, n_boot, steps), "summary", axes)
    rank_columns = list(dict.fromkeys([rank_column, ENERGY, VNE]))
    corr = schema.conform(correlations(steps, trials_table, summary, group_keys, rank_columns, window), "correlations")
    # compute_findings needs at least one completed trial (with none there is nothing to find)
    any_done = bool((trials_table["status"] == COMPLETED).any())
    found = compute_findings(steps, trials_table, axes, window) if any_done else pd.DataFrame(columns=list(schema.FINDINGS))
    found = schema.conform(found, "findings")
    tables = {"steps": steps, "trials": trials_table, "summary": summary, "correlations": corr, "findings": found}
    probing_cols = [c for c in steps.columns if c.startswith("probing/")]
    if probing_cols and steps[probing_cols].notna().any().any():
        from rayjobs.analysis.probing_summary import summarize_probing

        completed = trials_table[trials_table["status"] == COMPLETED]
        conditions = completed[~replicas(completed, steps).to_numpy()] if len(completed) else completed
        done = steps[steps["trial_id"].isin(conditions["trial_id"])]
        if len(done) and done[probing_cols].notna().any().any():  # per condition (every grid axis but the seed), as the summary
            tables["probing"] = schema.conform(summarize_probing(done, by=group_keys), "probing", axes)
    return tables


def tables_from_tables(
    folder: Path, rank_metric: str = DEFAULT_PHASE_METRIC, window: int = 3, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], list[Trial], list[str], dict[str, list[str]]]:
    """Every table again from a results folder's ``steps.parquet`` and ``trials.parquet`` alone (no trial folders):
    phases and per-trial quantities are recomputed from the steps, final scores kept. Returns (tables, trials, axes, only)."""
    folder = Path(folder).expanduser().resolve()
    paths = {name: folder / f"{name}.parquet" for name in ("steps", "trials")}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"--from-tables: {folder} has no {', '.join(missing)}; pass a folder the aggregator wrote")
    import pyarrow.parquet as pq

    meta = pq.read_schema(paths["trials"]).metadata or {}
    axes = json.loads(meta.get(b"rankcse.axes", b"[]").decode())
    only = json.loads(meta.get(b"rankcse.only", b"{}").decode())
    steps = pd.read_parquet(paths["steps"])
    trials_table = pd.read_parquet(paths["trials"])
    rank_column = f"probe/{rank_metric}"
    frames, updates = [], []
    for trial_id, rows in steps.groupby("trial_id", sort=True):
        frame, quantities = phase_quantities(rows.drop(columns=["phase"], errors="ignore"), rank_column, window)
        frames.append(frame)
        updates.append({"trial_id": trial_id, **quantities})
    steps = pd.concat(frames, ignore_index=True) if frames else steps
    steps = schema.conform(steps, "steps", axes).sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)
    if updates:
        fresh = pd.DataFrame(updates).set_index("trial_id")
        trials_table = trials_table.set_index("trial_id")
        for column in fresh.columns:
            known = fresh[column].dropna()
            if column not in trials_table:
                trials_table[column] = pd.Series(dtype=known.dtype if len(known) else "float64")
            trials_table[column] = trials_table[column].astype(object)
            trials_table.loc[known.index, column] = known.astype(object)
        trials_table = trials_table.reset_index()
    pretrained = folder / "pretrained.json"
    if pretrained.is_file():  # `rankcse eval --json` of the pre-trained model, for runs that did not record it
        scores = json.loads(pretrained.read_text())
        for task in (*STS_TASKS, "avg"):
            if isinstance(scores.get(task), (int, float)):
                trials_table[f"pretrained/{task}"] = float(scores[task])
    trials_table = schema.conform(trials_table, "trials", axes).sort_values(["trial_id", "path"], kind="stable").reset_index(drop=True)
    read = [
        Trial(
            str(r["trial_id"]),
            str(r["path"]),
            str(r["layout"]),
            str(r["status"]),
            error=r["error"] if isinstance(r["error"], str) else None,
        )
        for _, r in trials_table.iterrows()
    ]
    return derive_tables(steps, trials_table, axes, rank_column, window, n_boot, seed), read, axes, only


def aggregate(
    experiment_dir: str | Path,
    output_dir: str | Path,
    rank_metric: str = DEFAULT_PHASE_METRIC,
    window: int = 3,
    n_boot: int = N_BOOT,
    seed: int = 0,
    figures: bool = True,
    only: dict[str, list[str]] | None = None,
    from_tables: bool = False,
) -> Aggregated:
    """Aggregate ``experiment_dir`` (the trials matching ``only``, if given) into ``output_dir`` (tables, figures, report.md);
    with ``from_tables``, ``experiment_dir`` is a results folder whose steps and trials tables are aggregated again."""
    started = time.perf_counter()
    experiment_dir = Path(experiment_dir).expanduser().resolve()
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output-dir {output_dir} is a file; pass a folder")
    if output_dir in experiment_dir.parents:
        raise ConfigError(f"--output-dir {output_dir} holds the experiment folder; pass a folder beside it (e.g. results/<name>)")
    if from_tables:
        if only:
            raise ConfigError("--only selects trial folders; with --from-tables the tables' own selection is kept")
        tables, trials, axes, only = tables_from_tables(experiment_dir, rank_metric, window, n_boot, seed)
    else:
        tables, trials, axes = build_tables(experiment_dir, rank_metric, window, n_boot, seed, only)
    try:
        with replacing_folder(output_dir, owned=is_output_file) as staging:
            files, counts, figure_files = _write_outputs(
                staging, experiment_dir, tables, trials, axes, rank_metric, window, n_boot, seed, figures, only, output_dir.name
            )
    except OSError as exc:
        raise ConfigError(f"cannot write --output-dir {output_dir} ({exc.strerror}); pass a folder you can write") from None
    files = {name: output_dir / path.name for name, path in files.items()}
    skipped = [(t.path, t.error or "unreadable") for t in trials if t.status == CORRUPT]
    done = tables["trials"][tables["trials"]["status"] == COMPLETED]
    cells = {cell_label(_cell_of(row, axes)) for _, row in done.iterrows()}
    return Aggregated(output_dir, files, counts, skipped, cells, time.perf_counter() - started)


def is_output_file(name: str) -> bool:
    """Whether a file of an output folder is the aggregator's (replaced or dropped) rather than the user's (kept)."""
    return name == "report.md" or name in OUTPUT_FIGURES or (name.endswith(".parquet") and name[: -len(".parquet")] in schema.TABLES)


def _write_outputs(
    output_dir: Path,
    experiment_dir: Path,
    tables: dict[str, pd.DataFrame],
    trials: list[Trial],
    axes: list[str],
    rank_metric: str,
    window: int,
    n_boot: int,
    seed: int,
    figures: bool,
    only: dict[str, list[str]] | None,
    title: str,
) -> tuple[dict[str, Path], dict[str, int], dict[str, Path]]:
    """Write the tables, figures and report.md into ``output_dir`` (the staging folder; ``title`` is the folder it becomes,
    the report's title); return (files, counts, figures)."""
    files: dict[str, Path] = {}
    # How the findings were computed, so they can be recomputed from the steps and trials tables alone.
    findings_params = {"rankcse.findings": json.dumps({"window": window})}
    for name, frame in tables.items():
        files[name] = schema.write_table(
            frame,
            output_dir / f"{name}.parquet",
            name,
            axes if name in ("steps", "trials", "summary", "probing") else (),
            findings_params if name == "findings" else ({"rankcse.only": json.dumps(only)} if name == "trials" and only else None),
        )
    statuses = (COMPLETED, TRUNCATED, COLLAPSED, ERRORED, INCOMPLETE, DUPLICATE, CORRUPT)
    counts = {s: sum(1 for t in trials if t.status == s) for s in statuses}
    figure_files: dict[str, Path] = {}
    if figures:
        from rayjobs.analysis.figures import draw_figures

        figure_files = draw_figures(tables, output_dir, f"probe/{rank_metric}")
        files.update(figure_files)
    from rayjobs.analysis.report import write_report

    files["report"] = write_report(
        output_dir, experiment_dir, tables, trials, counts, figure_files, f"probe/{rank_metric}", window, only, title=title
    )
    return files, counts, figure_files


def _cell_of(row: pd.Series, axes: list[str]) -> dict[str, Any]:
    cell = {"method": row["method"], "rr_coef": float(row["rr_coef"]), "rr_schedule": row["rr_schedule"], "seed": int(row["seed"])}
    cell.update({a: row[a] for a in axes})
    return cell


def build_parser() -> argparse.ArgumentParser:
    """``rankcse aggregate`` / ``python -m rayjobs.aggregate``."""
    p = argparse.ArgumentParser(
        prog="rankcse aggregate",
        description="Turn a sweep's experiment folder (or folders of rankcse train runs) into Parquet tables, figures and report.md.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The aggregator's flags (shared with the ``rankcse aggregate`` subcommand)."""
    p.add_argument("experiment_dir", type=Path, help="experiment folder (<storage>/<name>) or a folder of rankcse train output folders")
    p.add_argument("--output-dir", type=Path, default=None, help="where the tables go (default: results/<folder name>)")
    p.add_argument(
        "--rank-metric",
        default=DEFAULT_PHASE_METRIC,
        help="probe rank metric that defines the phases and the average rank (erank_vne, energy_rank_99, ...)",
    )
    p.add_argument(
        "--smooth", type=int, default=3, help="moving-average window (evaluations) applied to the rank before finding its peak; 1 = none"
    )
    p.add_argument(
        "--n-boot", type=int, default=N_BOOT, help="bootstrap resamples (the seed std's interval from 20 seeds; below that chi-square)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--from-tables",
        action="store_true",
        help="EXPERIMENT_DIR is a results folder (steps.parquet + trials.parquet): recompute every other table, the "
        "figures and report.md from those two (default --output-dir: the same folder)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="keep only the trials whose grid cell has one of these values "
        "(repeatable; e.g. --only rr_schedule=always --only rr_coef=0,0.1)",
    )


def register_command(sub: argparse._SubParsersAction) -> tuple[str, Any]:
    """Add ``rankcse aggregate`` (the ``rankcse.commands`` entry point in pyproject.toml)."""
    p = sub.add_parser(
        "aggregate",
        help="Parquet tables, figures and report.md from a sweep or from rankcse train runs",
        description="Read every trial's full history under EXPERIMENT_DIR and write "
        "steps/trials/summary/correlations.parquet, figures and report.md.",
    )
    add_arguments(p)
    return "aggregate", run_from_args


def run_from_args(args: argparse.Namespace) -> int:
    """Run an aggregation from parsed flags; print where the results are."""
    if args.smooth < 1 or args.n_boot < 10:
        raise ConfigError("--smooth must be >= 1 and --n-boot >= 10")
    known = (*PROBE_METRICS, "numerical_rank", "centered/erank_vne", "centered/energy_rank_99")
    if args.rank_metric not in known:  # an unknown name would flag every trial no_rank and still exit 0
        raise ConfigError(f"unknown --rank-metric {args.rank_metric!r}: use one of {', '.join(known)}")
    default = Path(args.experiment_dir) if args.from_tables else Path("results") / Path(args.experiment_dir).resolve().name
    output = args.output_dir or default
    only = parse_only(args.only)
    result = aggregate(
        args.experiment_dir,
        output,
        args.rank_metric,
        args.smooth,
        args.n_boot,
        args.seed,
        figures=not args.no_figures,
        only=only,
        from_tables=args.from_tables,
    )
    print(result.describe())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rayjobs.aggregate``."""
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except RankCSEError as exc:
        print(f"aggregate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
