"""The aggregator's figures (PNG, matplotlib's Agg backend): rank and STS-B dev over training with the
phase boundary, STS-B by RR coefficient, and average rank against seed spread."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rayjobs.histories import COMPLETED

DPI = 110


def _colors(values: list) -> dict:
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(1, len(values) - 1) * 0.85) for i, v in enumerate(values)}


def _rr_label(coef: float, schedule: str) -> str:
    """``RR 0.1``; the schedule is named when it is not the paper's always-on one (RR off has none)."""
    return f"RR {coef:g}" + (f" {schedule}" if coef > 0 and schedule not in ("always", None) else "")


def _conditions(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """(RR coefficient, schedule) pairs in the frame, RR off first."""
    pairs = frame[["rr_coef", "rr_schedule"]].drop_duplicates().itertuples(index=False)
    return sorted(((float(c), str(s)) for c, s in pairs), key=lambda cs: (cs[0] > 0, cs[1] != "always", cs[0], cs[1]))


def rank_and_stsb_over_steps(steps: pd.DataFrame, trials: pd.DataFrame, rank_column: str, path: Path) -> Path | None:
    """Per method: mean rank (solid) and STS-B dev (dashed) over steps for each RR setting; dotted line at the median peak step."""
    if steps.empty or rank_column not in steps:
        return None
    methods = sorted(steps["method"].dropna().unique())
    fig, axes = plt.subplots(len(methods), 1, figsize=(8, 3.2 * len(methods)), squeeze=False)
    conditions = _conditions(steps)
    colors = _colors(conditions)
    for ax, method in zip(axes[:, 0], methods):
        twin = ax.twinx()
        part = steps[steps["method"] == method]
        for coef, schedule in conditions:
            cur = part[(part["rr_coef"] == coef) & (part["rr_schedule"] == schedule)]
            if cur.empty:
                continue
            label = _rr_label(coef, schedule)
            mean = cur.groupby("step")[[rank_column, "stsb_dev"]].mean()
            ax.plot(mean.index, mean[rank_column], color=colors[(coef, schedule)], lw=1.8, label=f"rank, {label}")
            twin.plot(mean.index, 100 * mean["stsb_dev"], color=colors[(coef, schedule)], lw=1.2, ls="--", label=f"STS-B dev, {label}")
            done = trials[
                (trials["method"] == method)
                & (trials["rr_coef"] == coef)
                & (trials["rr_schedule"] == schedule)
                & (trials["status"] == COMPLETED)
            ]
            peaks = done["peak_step"].dropna()
            if len(peaks):
                ax.axvline(float(np.median(peaks)), color=colors[(coef, schedule)], ls=":", lw=1.2)
        ax.set_title(f"{method}: {rank_column} (solid) and STS-B dev (dashed); dotted = rank peak (Phase 1 | Phase 2)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(rank_column.split("/")[-1])
        twin.set_ylabel("STS-B dev x100")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def score_by_rr(summary: pd.DataFrame, path: Path) -> Path | None:
    """Mean +/- seed std of the STS-B test score (or the best available score) for each RR setting, per method."""
    for metric in ("stsb", "avg", "best_stsb_dev"):
        rows = summary[summary["metric"] == metric]
        if not rows.empty:
            break
    else:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    conditions = _conditions(rows)
    position = {c: i for i, c in enumerate(conditions)}
    for j, (method, part) in enumerate(rows.groupby("method", sort=True)):
        part = part.groupby(["rr_coef", "rr_schedule"], sort=True).agg(mean=("mean", "mean"), std=("std", "mean"))
        x = np.array([position[(float(c), str(s))] for c, s in part.index]) + (j - 2) * 0.04
        ax.errorbar(x, 100 * part["mean"], yerr=100 * part["std"].fillna(0), marker="o", ls="none", capsize=3, label=method)
    ax.set_xticks(range(len(conditions)), [_rr_label(c, s).removeprefix("RR ").replace(" ", "\n") for c, s in conditions])
    ax.set_xlabel("RR coefficient (schedule)")
    ax.set_ylabel(f"{metric} x100 (mean +/- seed std)")
    ax.set_title(f"{metric} by RR setting")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def rank_vs_seed_std(summary: pd.DataFrame, path: Path) -> Path | None:
    """One point per condition: mean average rank against the seed std of the final average, with a least-squares line."""
    keys = ["method", "rr_coef", "rr_schedule", "model"]
    ranks = summary[summary["metric"] == "avg_rank"].set_index(keys)["mean"]
    for metric in ("avg", "stsb", "best_stsb_dev"):
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
            ("", "o", part["rr_coef"] == 0),
            (" + RR", "^", (part["rr_coef"] > 0) & (part["rr_schedule"] == "always")),
            (" + RR (other schedule)", "s", (part["rr_coef"] > 0) & (part["rr_schedule"] != "always")),
        )
        for suffix, marker, mask in kinds:
            cur = part[mask]
            if len(cur):
                ax.scatter(cur["x"], 100 * cur["y"], marker=marker, s=40, label=f"{method}{suffix}")
    if len(joined) >= 2 and np.ptp(joined["x"]) > 0:
        slope, intercept = np.polyfit(joined["x"], 100 * joined["y"], 1)
        xs = np.linspace(joined["x"].min(), joined["x"].max(), 20)
        r = np.corrcoef(joined["x"], joined["y"])[0, 1] if np.ptp(joined["y"]) > 0 else float("nan")
        ax.plot(xs, slope * xs + intercept, color="gray", ls="--", label=f"fit (r = {r:.2f}, n = {len(joined)})")
    ax.set_xlabel("average rank (mean over seeds)")
    ax.set_ylabel(f"seed std of {metric} x100")
    ax.set_title("average rank vs seed spread")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_figures(tables: dict[str, pd.DataFrame], output_dir: Path, rank_column: str) -> dict[str, Path]:
    """Draw every figure that the tables allow; return name -> file."""
    out = {}
    drawn = {
        "fig_rank_stsb": rank_and_stsb_over_steps(
            tables["steps"], tables["trials"], rank_column, output_dir / "rank_and_stsb_over_steps.png"
        ),
        "fig_score_rr": score_by_rr(tables["summary"], output_dir / "score_by_rr.png"),
        "fig_rank_std": rank_vs_seed_std(tables["summary"], output_dir / "rank_vs_seed_std.png"),
    }
    for name, path in drawn.items():
        if path is not None:
            out[name] = path
    return out
