"""``report.md``: what a person reads after a sweep — the trials, the summary, RR's effect, the correlations and the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rankcse.io import write_text_atomic
from rayjobs import schema
from rayjobs.histories import COMPLETED, CORRUPT, Trial

HEADLINE_METRICS = ("avg", "stsb", "sickr", "best_stsb_dev", "avg_rank")


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{scale * value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary_section(summary: pd.DataFrame) -> list[str]:
    if summary.empty:
        return ["No completed trials: nothing to summarise.", ""]
    out = []
    for metric in [m for m in HEADLINE_METRICS if m in set(summary["metric"])]:
        part = summary[summary["metric"] == metric].sort_values(["method", "rr_schedule", "rr_coef"])
        scale, unit = (1.0, "") if metric.startswith("avg_rank") else (100.0, " ×100")
        rows = []
        for _, r in part.iterrows():
            rows.append(
                [
                    r["method"],
                    f"{r['rr_coef']:g}",
                    r["rr_schedule"],
                    int(r["n"]),
                    f"{_fmt(r['mean'], scale)} ± {_fmt(r['std'], scale)}",
                    f"[{_fmt(r['mean_ci_low'], scale)}, {_fmt(r['mean_ci_high'], scale)}]",
                    f"[{_fmt(r['std_ci_low'], scale)}, {_fmt(r['std_ci_high'], scale)}]",
                    _fmt(r["diff_vs_no_rr"], scale),
                    _fmt(r["welch_p"], 1.0, 3),
                ]
            )
        out += [
            f"### {metric}{unit}",
            "",
            markdown_table(
                ["method", "RR", "schedule", "seeds", "mean ± std", "95% CI of mean", "95% CI of std", "Δ vs no RR", "Welch p"], rows
            ),
            "",
        ]
    return out


def _correlation_section(corr: pd.DataFrame, rank_column: str) -> list[str]:
    if corr.empty:
        return ["No correlations could be computed (too few completed trials or evaluations).", ""]
    out = []
    phase = corr[(corr["analysis"] == "rank_vs_stsb_dev") & (corr["rank_metric"] == rank_column)]
    if not phase.empty:
        rows = [
            [
                f"{int(r['phase'])}",
                r["subset"],
                r["scope"],
                r["method"],
                int(r["n"]),
                int(r["n_trials"]),
                f"{_fmt(r['pearson_r'])} [{_fmt(r['pearson_ci_low'])}, {_fmt(r['pearson_ci_high'])}]",
                _fmt(r["pearson_p"], 1.0, 3),
                f"{_fmt(r['spearman_rho'])} [{_fmt(r['spearman_ci_low'])}, {_fmt(r['spearman_ci_high'])}]",
                _fmt(r["spearman_p"], 1.0, 3),
            ]
            for _, r in phase.sort_values(["phase", "subset", "scope", "method"]).iterrows()
        ]
        out += [
            f"### {rank_column} vs STS-B dev within each phase",
            "",
            "The paper reports a positive correlation in Phase 1 (about +0.85) and a negative one in Phase 2 (about −0.81).",
            "",
            markdown_table(
                ["phase", "trials", "scope", "method", "points", "trials n", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p"], rows
            ),
            "",
        ]
    groups = corr[corr["analysis"] == "avg_rank_vs_seed_std"]
    if not groups.empty:
        rows = [
            [
                r["rank_metric"],
                r["score"],
                int(r["n"]),
                f"{_fmt(r['pearson_r'])} [{_fmt(r['pearson_ci_low'])}, {_fmt(r['pearson_ci_high'])}]",
                _fmt(r["pearson_p"], 1.0, 3),
                f"{_fmt(r['spearman_rho'])} [{_fmt(r['spearman_ci_low'])}, {_fmt(r['spearman_ci_high'])}]",
                _fmt(r["spearman_p"], 1.0, 3),
            ]
            for _, r in groups.iterrows()
        ]
        out += [
            "### Average rank vs seed std across conditions",
            "",
            "One point per condition (method × RR coefficient × schedule × model) with at least two seeds; the paper reports about 0.94.",
            "",
            markdown_table(["rank", "seed std of", "conditions", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p"], rows),
            "",
        ]
    return out


def _format_statistic(statistic: str, value: Any) -> str:
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


def _findings_rows(part: pd.DataFrame, with_scope: bool = False) -> list[list[Any]]:
    rows = []
    for _, r in part.iterrows():
        stat = r["statistic"]
        estimate = (
            f"{_format_statistic(stat, r['estimate'])} [{_format_statistic(stat, r['ci_low'])}, {_format_statistic(stat, r['ci_high'])}]"
        )
        paper = _format_statistic(stat, r["paper_value"]) if isinstance(r["paper_value"], float) and math.isfinite(r["paper_value"]) else ""
        paper = f"{paper} ({r['paper_note']})" if paper and r["paper_note"] else (paper or r["paper_note"] or "–")
        verdict = f"**{r['verdict']}**" + (f": {r['reason']}" if isinstance(r["reason"], str) and r["reason"] else "")
        row = (
            [r["claim"], r["finding"]]
            + ([r["scope"]] if with_scope else [])
            + [r["rank_metric"] or "–", estimate, f"{int(r['n'])} {r['n_unit']}", _fmt(r["p_value"], 1.0, 3), paper, verdict]
        )
        rows.append(row)
    return rows


def _findings_section(findings: pd.DataFrame, rank_column: str, split: pd.DataFrame | None = None) -> list[str]:
    primary = rank_column.split("/")[-1]
    header = ["#", "finding", "rank", "estimate [95% CI]", "n", "p", "paper", "verdict"]
    out = [
        "## Findings",
        "",
        "Each of the paper's claims (1-8) and of the phase-aware RR questions (P1-P8), tested on this sweep's own tables "
        "(recomputed from `steps.parquet` and `trials.parquet`; every row is in `findings.parquet`). **supported**: the 95 % "
        "interval lies on the claimed side; **contradicted**: on the other side; **not enough data**: too few trials or "
        "conditions, or the interval holds the no-effect value. RR means the paper's always-on schedule; differences are "
        "RR minus no RR (×100 for scores), stratified by method; seed-std ratios pool the spread within conditions (F interval).",
        "",
    ]
    if findings.empty:
        return out + ["No completed trials: nothing to test.", ""]
    whole = findings[findings["scope"] == "all"]
    paper = whole[~whole["claim"].str.startswith("P") & whole["rank_metric"].isin(["", primary])]
    out += [f"### The paper's findings (rank: `{primary}`)", "", markdown_table(header, _findings_rows(paper)), ""]
    phase = whole[whole["claim"].str.startswith("P") & whole["rank_metric"].isin(["", primary])]
    out += ["### Phase-aware RR (`after_peak`, not in the paper)", "", markdown_table(header, _findings_rows(phase)), ""]
    other = whole[~whole["rank_metric"].isin(["", primary])]
    if not other.empty:
        out += ["### The rank claims under the other rank notion", "", markdown_table(header, _findings_rows(other)), ""]
    if split is not None and not split.empty:
        rows = [
            [
                r["rank_metric"],
                r["trials"],
                int(r["n"]),
                f"{100 * r['interior_peak']:.0f}%",
                f"{100 * r['phase2_nonempty']:.0f}%",
                f"{r['median_peak_step']:.0f}",
                f"{r['median_phase2_evals']:.0f}",
                _format_statistic("relative", r["median_fall_to_best"]),
            ]
            for _, r in split.iterrows()
        ]
        out += [
            "### How each rank notion splits training",
            "",
            "Share of completed trials whose smoothed rank peaks inside the run (an interior peak) and whose best STS-B dev comes "
            "after the peak (a non-empty Phase 2), the median peak step, Phase 2 length and the rank's change from the peak to "
            "the best step. The phase metric should give both phases.",
            "",
            markdown_table(
                [
                    "rank",
                    "trials",
                    "n",
                    "interior peak",
                    "Phase 2 not empty",
                    "median peak step",
                    "median Phase 2 evals",
                    "median change peak → best",
                ],
                rows,
            ),
            "",
        ]
    methods = findings[findings["scope"] != "all"]
    if not methods.empty:
        out += [
            "<details><summary>Findings by method</summary>",
            "",
            markdown_table(header[:2] + ["method"] + header[2:], _findings_rows(methods, with_scope=True)),
            "",
            "</details>",
            "",
        ]
    return out


def _trials_section(trials: pd.DataFrame, read: list[Trial], counts: dict[str, int]) -> list[str]:
    out = ["## Trials", "", ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no trial folders found", ""]
    if not trials.empty and "device" in trials:
        devices = trials["device"].fillna("not started").value_counts()
        out += ["Trained on: " + ", ".join(f"{device} ({n} trial{'s' if n != 1 else ''})" for device, n in devices.items()) + ".", ""]
    if not trials.empty:
        rows = [
            [
                r["trial_id"],
                r["method"],
                f"{r['rr_coef']:g}",
                r["rr_schedule"],
                _fmt(r["seed"]),
                r["status"],
                _fmt(r["steps_done"]),
                _fmt(r.get("peak_step"), 1.0, 0),
                _fmt(r.get("best_step"), 1.0, 0),
                _fmt(r.get("best_stsb_dev"), 100.0),
                _fmt(r.get("avg"), 100.0),
                r.get("phase_flag") if isinstance(r.get("phase_flag"), str) else "–",
            ]
            for _, r in trials.iterrows()
        ]
        out += [
            markdown_table(
                [
                    "trial",
                    "method",
                    "RR",
                    "schedule",
                    "seed",
                    "status",
                    "steps",
                    "peak",
                    "best step",
                    "best dev ×100",
                    "test avg ×100",
                    "phases",
                ],
                rows,
            ),
            "",
        ]
    problems = [(t.path, t.status, t.error) for t in read if t.status != COMPLETED and t.error]
    if problems:
        out += ["Trials that did not complete or could not be read:", ""]
        out += [f"- `{path}` ({status}): {error}" for path, status, error in problems]
        out.append("")
    corrupt = [t for t in read if t.status == CORRUPT]
    if corrupt:
        out += [f"{len(corrupt)} folder(s) were skipped as unreadable (listed above); they count in no table.", ""]
    return out


def write_report(
    output_dir: Path,
    experiment_dir: Path,
    tables: dict[str, pd.DataFrame],
    read: list[Trial],
    counts: dict[str, int],
    figures: dict[str, Path],
    rank_column: str,
    window: int,
    only: dict[str, list[str]] | None = None,
) -> Path:
    """Write ``report.md`` next to the tables (atomically) and return its path; ``only`` is the trial selection, if any."""
    lines = [
        f"# Sweep report: {experiment_dir.name}",
        "",
        f"Experiment folder: `{experiment_dir}`. Tables: `steps.parquet`, "
        "`trials.parquet`, `summary.parquet`, `correlations.parquet`, `findings.parquet`"
        + (", `probing.parquet`" if "probing" in tables else "")
        + " (schema in the project README)."
        + (" Trials kept: " + "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in only.items()) + " (`--only`)." if only else ""),
        "",
        f"Phases: Phase 1 runs from step 0 to the peak of `{rank_column}` (after a centred moving average over {window} evaluations), "
        "Phase 2 from the peak to the best STS-B dev step; later evaluations are `post`. Scores are Spearman ×100 unless noted; "
        "std is the sample std over seeds (ddof = 1); intervals are bootstrap 95 % percentile intervals.",
        "",
    ]
    if "findings" in tables:
        from rayjobs.findings import phase_split_by_metric

        axes = [c for c in tables["trials"].columns if c not in schema.TRIALS and not c.startswith(tuple(schema.TRIALS_PREFIXES))]
        split = phase_split_by_metric(tables["steps"], tables["trials"], axes, window)
        lines += _findings_section(tables["findings"], rank_column, split)
    lines += _trials_section(tables["trials"], read, counts)
    lines += ["## Summary by condition", ""] + _summary_section(tables["summary"])
    lines += ["## Correlations", ""] + _correlation_section(tables["correlations"], rank_column)
    if "probing" in tables:
        groups = tables["probing"][tables["probing"]["level"] == "group"]
        rows = [
            [
                r["method"],
                f"{r['rr_coef']:g}",
                r["group"],
                "yes" if r["surrogate"] else "no",
                int(r["n_trials"]),
                _fmt(r.get("change_phase1_mean"), 100.0),
                _fmt(r.get("change_phase2_mean"), 100.0),
                _fmt(r.get("acc_best_mean"), 100.0),
            ]
            for _, r in groups.iterrows()
        ]
        lines += [
            "## Probing across phases",
            "",
            "Accuracy change ×100 over Phase 1 (start → rank peak) and Phase 2 (peak → best step); "
            "surrogate tasks are generated, not SentEval's data.",
            "",
            markdown_table(["method", "RR", "group", "surrogate", "trials", "Δ Phase 1", "Δ Phase 2", "acc at best"], rows),
            "",
        ]
    if figures:
        lines += ["## Figures", ""]
        titles = {
            "fig_rank_stsb": "Rank and STS-B dev over training",
            "fig_score_rr": "Score by RR coefficient",
            "fig_rank_std": "Average rank vs seed std",
        }
        lines += [f"![{titles.get(name, name)}]({path.name})\n" for name, path in figures.items()]
    path = Path(output_dir) / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
