"""The aggregator's figures (PNG, matplotlib's Agg backend): rank and STS-B dev over training with the rank peak,
scores by RR setting, and average rank against seed spread. Each is written atomically (a temporary file beside
it, then a rename), and replicas of no RR (after_peak trials whose RR never switched on) are drawn once, as no RR."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rankcse.io import atomic_path
from rankcse.names import PRIMARY
from rayjobs.analysis.conditions import replicas
from rayjobs.analysis.histories import COMPLETED
from rayjobs.analysis.report import NAMES

DPI = 110
#: Fewest points a least-squares line is drawn through.
MIN_FIT_POINTS = 5
SCORES = ("avg", "stsb", "sickr", PRIMARY.best)


def _colors(values: list) -> dict:
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(1, len(values) - 1) * 0.85) for i, v in enumerate(values)}


def _rr_label(coef: float, schedule: str) -> str:
    """``RR 0.1``; the schedule is named when it is not the paper's always-on one (RR off has none)."""
    return "no RR" if not coef > 0 else f"RR {coef:g}" + (f" {schedule}" if schedule not in ("always", None) else "")


def _conditions(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """(RR coefficient, schedule) pairs in the frame, RR off first."""
    pairs = frame[["rr_coef", "rr_schedule"]].drop_duplicates().itertuples(index=False)
    return sorted(
        {(float(c), "always" if not float(c) > 0 else str(s)) for c, s in pairs},
        key=lambda cs: (cs[0] > 0, cs[1] != "always", cs[0], cs[1]),
    )


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write the figure to a temporary file beside ``path`` and rename it over ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _distinct(steps: pd.DataFrame, trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Completed trials that are distinct conditions and their steps; and how many replicas of no RR were left out."""
    done = trials[trials["status"] == COMPLETED]
    rep = replicas(done, steps).to_numpy() if len(done) else np.zeros(0, bool)
    keep = set(done.loc[~rep, "trial_id"])
    return steps[steps["trial_id"].isin(keep)], done[~rep], int(rep.sum())


def rank_and_stsb_over_steps(steps: pd.DataFrame, trials: pd.DataFrame, rank_column: str, path: Path) -> Path | None:
    """Per method and RR setting: seed-mean rank (top) and STS-B dev (bottom) over steps with a band of +/- one seed std,
    and the median raw peak step of the seeds marked and labelled on the rank curve."""
    steps, done, n_replicas = _distinct(steps, trials)
    if steps.empty or rank_column not in steps:
        return None
    methods = sorted(steps["method"].dropna().unique())
    conditions = _conditions(steps)
    colors = _colors(conditions)
    metric = rank_column.split("/")[-1]
    fig, axes = plt.subplots(2, len(methods), figsize=(7.5 * len(methods), 7), squeeze=False, sharex=True)
    for j, method in enumerate(methods):
        top, bottom = axes[0, j], axes[1, j]
        part = steps[steps["method"] == method]
        for coef, schedule in conditions:
            on = (part["rr_coef"] == coef) & ((part["rr_schedule"] == schedule) if coef > 0 else True)
            cur = part[on]
            if cur.empty:
                continue
            color, label = colors[(coef, schedule)], _rr_label(coef, schedule)
            seeds = cur["trial_id"].nunique()
            for ax, column, scale in ((top, rank_column, 1.0), (bottom, PRIMARY.name, 100.0)):
                stats = cur.groupby("step")[column].agg(["mean", "std"])
                mean, std = scale * stats["mean"], scale * stats["std"].fillna(0.0)
                ax.plot(stats.index, mean, color=color, lw=1.6, label=f"{label} ({seeds} seeds)")
                if seeds > 1:
                    ax.fill_between(stats.index, mean - std, mean + std, color=color, alpha=0.18, lw=0)
            sel = done[(done["method"] == method) & (done["rr_coef"] == coef)]
            sel = sel[sel["rr_schedule"] == schedule] if coef > 0 else sel
            peaks = sel["peak_step"].dropna()
            if len(peaks):
                step = float(np.median(peaks))
                at = cur.groupby("step")[rank_column].mean()
                y = float(at.loc[step]) if step in at.index else float(np.interp(step, at.index, at.to_numpy()))
                flags = sel["phase_flag"].dropna()
                kind = flags.mode().iloc[0] if len(flags) else "peak"
                top.plot([step], [y], marker="v", ms=8, color=color, mec="black", zorder=5)
                top.annotate(
                    f"{'peak' if kind in ('ok', 'phase2_empty') else kind} @ {step:g}",
                    (step, y),
                    textcoords="offset points",
                    xytext=(4, 6),
                    fontsize=7,
                )
        top.set_title(f"{method}: seed means, band = ± 1 seed std; ▼ = median rank peak of the seeds (raw step)", fontsize=9)
        top.set_ylabel(f"{metric} (probe rank, dims)")
        bottom.set_ylabel("STS-B dev ×100")
        bottom.set_xlabel("step")
        top.legend(fontsize=7, loc="best")
        if n_replicas:
            bottom.text(
                0.01, 0.02, f"{n_replicas} after_peak trials never switched RR on: drawn as no RR", transform=bottom.transAxes, fontsize=7
            )
    fig.tight_layout()
    return _save(fig, path)


def score_by_rr(summary: pd.DataFrame, path: Path) -> Path | None:
    """Mean +/- seed std of each final score (STS test average, STS-B test, SICK-R test, best STS-B dev) by RR setting, per method."""
    shown = [m for m in SCORES if (summary["metric"] == m).any()] if len(summary) else []
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 4), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        rows = summary[summary["metric"] == metric]
        conditions = _conditions(rows)
        position = {c: i for i, c in enumerate(conditions)}
        for j, (method, part) in enumerate(rows.groupby("method", sort=True)):
            part = part.assign(rr_schedule=np.where(part["rr_coef"] > 0, part["rr_schedule"], "always"))
            part = part.groupby(["rr_coef", "rr_schedule"], sort=True).agg(mean=("mean", "mean"), std=("std", "mean"), n=("n", "max"))
            x = np.array([position[(float(c), str(s))] for c, s in part.index]) + (j - 2) * 0.04
            ax.errorbar(x, 100 * part["mean"], yerr=100 * part["std"].fillna(0), marker="o", ls="none", capsize=3, label=method)
        ax.set_xticks(range(len(conditions)), [_rr_label(c, s).replace(" ", "\n", 1) for c, s in conditions], fontsize=8)
        ax.set_title(NAMES.get(metric, metric), fontsize=9)
        ax.set_ylabel("×100 (seed mean ± seed std)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def rank_vs_seed_std(summary: pd.DataFrame, path: Path, rank_column: str = "probe/energy_rank_99") -> Path | None:
    """One point per distinct condition: mean average rank against the seed std of the STS test average; a least-squares
    line only through at least MIN_FIT_POINTS conditions."""
    keys = ["method", "rr_coef", "rr_schedule", "model"]
    ranks = summary[summary["metric"] == "avg_rank"].set_index(keys)["mean"]
    for metric in ("avg", "stsb", PRIMARY.best):
        spread = summary[(summary["metric"] == metric) & (summary["n"] >= 2)].set_index(keys)["std"]
        if not spread.empty:
            break
    else:
        return None
    joined = pd.concat([ranks.rename("x"), spread.rename("y")], axis=1, join="inner").dropna().reset_index()
    if joined.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, part in joined.groupby("method", sort=True):
        kinds = (
            (" no RR", "o", part["rr_coef"] == 0),
            (" + RR", "^", (part["rr_coef"] > 0) & (part["rr_schedule"] == "always")),
            (" + RR after_peak", "s", (part["rr_coef"] > 0) & (part["rr_schedule"] != "always")),
        )
        for suffix, marker, mask in kinds:
            cur = part[mask]
            if len(cur):
                ax.scatter(cur["x"], 100 * cur["y"], marker=marker, s=40, label=f"{method}{suffix}")
                for _, r in cur.iterrows():
                    ax.annotate(f"{r['rr_coef']:g}", (r["x"], 100 * r["y"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if len(joined) >= MIN_FIT_POINTS and np.ptp(joined["x"]) > 0:
        slope, intercept = np.polyfit(joined["x"], 100 * joined["y"], 1)
        xs = np.linspace(joined["x"].min(), joined["x"].max(), 20)
        r = np.corrcoef(joined["x"], joined["y"])[0, 1] if np.ptp(joined["y"]) > 0 else float("nan")
        ax.plot(xs, slope * xs + intercept, color="gray", ls="--", label=f"least squares (r = {r:.2f}, n = {len(joined)})")
        title = "average rank vs seed spread, one point per condition"
    else:
        title = (
            f"average rank vs seed spread, one point per condition\n(no fit line: {len(joined)} conditions, fewer than {MIN_FIT_POINTS})"
        )
    ax.set_xlabel(f"average {rank_column.split('/')[-1]} up to the best step (seed mean)")
    ax.set_ylabel(f"seed std of {NAMES.get(metric, metric)} ×100")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def draw_figures(tables: dict[str, pd.DataFrame], output_dir: Path, rank_column: str) -> dict[str, Path]:
    """Draw every figure that the tables allow; return name -> file."""
    out = {}
    drawn = {
        "fig_rank_stsb": rank_and_stsb_over_steps(
            tables["steps"], tables["trials"], rank_column, output_dir / "rank_and_stsb_over_steps.png"
        ),
        "fig_score_rr": score_by_rr(tables["summary"], output_dir / "score_by_rr.png"),
        "fig_rank_std": rank_vs_seed_std(tables["summary"], output_dir / "rank_vs_seed_std.png", rank_column),
    }
    for name, path in drawn.items():
        if path is not None:
            out[name] = path
    return out
