"""``report.md``: what a person reads after a sweep — the trials, the summary, RR's effect, the correlations and the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rankcse.io import write_text_atomic
from rankcse.names import DISPLAY_NAMES, PRIMARY
from rayjobs.analysis import schema
from rayjobs.analysis.conditions import REPLICA, replicas
from rayjobs.analysis.findings import format_statistic
from rayjobs.analysis.histories import COMPLETED, CORRUPT, Trial

HEADLINE_METRICS = ("avg", "stsb", "sickr", PRIMARY.best, "avg_rank")
#: Readable names of the trials table's score columns.
NAMES = {**DISPLAY_NAMES, PRIMARY.best: f"best {PRIMARY.display}", "avg_rank": "average rank up to the best step"}


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


def _baseline(trials: pd.DataFrame, steps: pd.DataFrame, metric: str, rank_column: str) -> float | None:
    """The pre-trained model's value of ``metric`` (step 0): recorded test scores, its STS-B dev, its rank; None if unknown."""
    if metric == PRIMARY.best and len(steps) and PRIMARY.name in steps:
        start = steps.loc[steps["step"] == 0, PRIMARY.name].dropna()
        return float(start.median()) if len(start) else None
    if metric == "avg_rank" and len(steps) and rank_column in steps:
        start = steps.loc[steps["step"] == 0, rank_column].dropna()
        return float(start.median()) if len(start) else None
    column = f"pretrained/{metric}"
    if column in trials and trials[column].notna().any():
        return float(trials[column].dropna().median())
    return None


def _summary_section(summary: pd.DataFrame, trials: pd.DataFrame, steps: pd.DataFrame, rank_column: str) -> list[str]:
    if summary.empty:
        return ["No completed trials: nothing to summarise.", ""]
    out = [
        "Per distinct condition: mean ± sample std over seeds (ddof = 1); the interval of the mean is Student t, that of the "
        "std chi-square (a percentile bootstrap from 20 seeds); Welch's t-test against no RR. The first row is the pre-trained "
        "model (step 0), the same in every trial; where its test scores were not recorded the row says so.",
        "",
    ]
    left_out = trials[(trials["status"] == COMPLETED) & replicas(trials, steps).to_numpy()] if len(trials) else trials
    if len(left_out):
        out += [
            f"Left out, each a {REPLICA}: {len(left_out)} `after_peak` trials " + ", ".join(f"`{t}`" for t in left_out["trial_id"]) + ".",
            "",
        ]
    for metric in [m for m in HEADLINE_METRICS if m in set(summary["metric"])]:
        part = summary[summary["metric"] == metric].sort_values(["method", "rr_schedule", "rr_coef"])
        scale, unit = (1.0, "") if metric.startswith("avg_rank") else (100.0, " ×100")
        start = _baseline(trials, steps, metric, rank_column)
        at_start = {PRIMARY.best: f"{PRIMARY.display} at step 0", "avg_rank": f"{rank_column.split('/')[-1]} at step 0"}
        what = at_start.get(metric, "test score")
        rows = [
            [
                "pre-trained",
                "–",
                "(step 0)",
                "–",
                f"{_fmt(start, scale)} ({what})" if start is not None else "not recorded (see README: pretrained/* in final.json)",
                "–",
                "–",
                "–",
                "–",
            ]
        ]
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
        label = NAMES.get(metric, metric)
        out += [
            f"### {label}{unit}",
            "",
            markdown_table(
                ["method", "RR", "schedule", "seeds", "mean ± std", "95% CI of mean (t)", "95% CI of std (χ²)", "Δ vs no RR", "Welch p"],
                rows,
            ),
            "",
        ]
    return out


def _correlation_section(corr: pd.DataFrame, rank_column: str) -> list[str]:
    if corr.empty:
        return ["No correlations could be computed (too few completed trials or evaluations).", ""]
    out = []
    phase = corr[(corr["analysis"] == f"rank_vs_{PRIMARY.name}") & (corr["rank_metric"] == rank_column)]
    if not phase.empty:
        per = phase[phase["scope"] == "trial"]
        if not per.empty:
            table = per.pivot_table(index="trial_id", columns=["phase", "variant"], values="pearson_r", aggfunc="first", dropna=False)
            counts = per.pivot_table(index="trial_id", columns=["phase", "variant"], values="n", aggfunc="first", dropna=False)
            usable = per.pivot_table(index="trial_id", columns=["phase", "variant"], values="usable", aggfunc="first", dropna=False)
            keys = [(1.0, "with step 0"), (1.0, "without step 0"), (2.0, "peak to best"), (2.0, "peak to end")]
            keys = [k for k in keys if k in table.columns]
            subset = per.groupby("trial_id")["subset"].first()
            rows = []
            for trial_id in table.index:
                cells = []
                for k in keys:
                    r, n, ok = table.loc[trial_id, k], counts.loc[trial_id, k], usable.loc[trial_id, k]
                    cells.append(f"{_fmt(r)} (n={int(n)})" + ("" if ok is True or ok == 1 else " ✗") if pd.notna(n) else "–")
                rows.append([trial_id, subset.get(trial_id, "")] + cells)
            out += [
                f"### {rank_column} vs STS-B dev within each phase, per trial",
                "",
                "Pearson r of each trial's own evaluations (n of them); ✗ = not usable: fewer than 3 evaluations, or a rank "
                "that moves by no more than its resolution in the phase. No p-value: the evaluations of one run are not "
                "independent. Phase 1 is shown with and without step 0 (the pre-trained point shared by every trial), "
                "Phase 2 from the peak to the best STS-B dev (the paper's) and from the peak to the end.",
                "",
                markdown_table(["trial", "subset"] + [f"Phase {int(p)}, {v}" for p, v in keys], rows),
                "",
            ]
        combined = phase[phase["scope"] == "across_trials"]
        rows = [
            [
                f"{int(r['phase'])}",
                r["variant"],
                r["subset"],
                r["method"],
                int(r["n_trials"]),
                f"{_fmt(r['pearson_r'])} [{_fmt(r['pearson_ci_low'])}, {_fmt(r['pearson_ci_high'])}]",
                _fmt(r["pearson_p"], 1.0, 3),
                f"{_fmt(r['spearman_rho'])} [{_fmt(r['spearman_ci_low'])}, {_fmt(r['spearman_ci_high'])}]",
                _fmt(r["spearman_p"], 1.0, 3),
            ]
            for _, r in combined.sort_values(["phase", "variant", "subset", "method"]).iterrows()
        ]
        out += [
            f"### {rank_column} vs STS-B dev within each phase, across trials",
            "",
            "The usable trials' correlations combined on Fisher's z: the estimate is tanh of the mean z, the interval a "
            "Student-t interval over trials, p a one-sample t-test of the z values (the trial is the unit). The paper reports "
            "about +0.85 in Phase 1 and −0.81 in Phase 2.",
            "",
            markdown_table(
                ["phase", "variant", "trials", "method", "usable trials", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p"], rows
            ),
            "",
        ]
    groups = corr[corr["analysis"] == "avg_rank_vs_seed_std"]
    if not groups.empty:
        rows = [
            [
                r["rank_metric"],
                NAMES.get(r["score"], r["score"]),
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
            "One point per distinct condition (method × RR coefficient × schedule × model) with at least two seeds; replicas of "
            "no RR are not conditions. Intervals: Fisher z (n ≥ 4; Spearman's with variance 1.06 / (n − 3)). The paper reports "
            "about 0.94.",
            "",
            markdown_table(["rank", "seed std of", "conditions", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p"], rows),
            "",
        ]
    return out


def _findings_rows(part: pd.DataFrame, with_scope: bool = False) -> list[list[Any]]:
    rows = []
    for _, r in part.iterrows():
        stat = r["statistic"]
        estimate = (
            f"{format_statistic(stat, r['estimate'])} [{format_statistic(stat, r['ci_low'])}, {format_statistic(stat, r['ci_high'])}]"
        )
        paper = format_statistic(stat, r["paper_value"]) if isinstance(r["paper_value"], float) and math.isfinite(r["paper_value"]) else ""
        paper = f"{paper} ({r['paper_note']})" if paper and r["paper_note"] else (paper or r["paper_note"] or "–")
        verdict = f"**{r['verdict']}**" + (f": {r['reason']}" if isinstance(r["reason"], str) and r["reason"] else "")
        note = r.get("note")
        verdict += f" ({note})" if isinstance(note, str) and note else ""
        variant = r.get("variant")
        finding = r["finding"] + (f" — *sensitivity: {variant}*" if isinstance(variant, str) and variant else "")
        row = (
            [r["claim"], finding]
            + ([r["scope"]] if with_scope else [])
            + [
                r["rank_metric"] or "–",
                estimate,
                r.get("interval") or "–",
                f"{int(r['n'])} {r['n_unit']}",
                _fmt(r["p_value"], 1.0, 3),
                _fmt(r.get("p_adjusted"), 1.0, 3),
                paper,
                verdict,
            ]
        )
        rows.append(row)
    return rows


def _findings_section(findings: pd.DataFrame, rank_column: str, split: pd.DataFrame | None = None) -> list[str]:
    primary = rank_column.split("/")[-1]
    header = ["#", "finding", "rank", "estimate [95% CI]", "interval", "n", "p", "p (Holm)", "paper", "verdict"]
    family = findings[(findings["scope"] == "all") & (findings["variant"].fillna("") == "") & findings["p_adjusted"].notna()]
    out = [
        "## Findings",
        "",
        "Each of the paper's claims (1-8) and of the phase-aware RR questions (P1-P8), tested on this sweep's own tables "
        "(recomputed from `steps.parquet` and `trials.parquet`; every row is in `findings.parquet`). The unit of every test is a "
        "trial (seed) or a condition, never one evaluation of a run. Each row names its interval: Clopper-Pearson (with the "
        "exact binomial test) for shares, a t interval on Fisher z over trials for within-phase correlations (one correlation "
        "per trial), Welch t for differences of means (stratified by method; by method and coefficient for P5-P8), F for "
        "ratios of pooled seed stds, Fisher z for correlations across conditions. **Multiple comparisons**: the p-values of "
        f"the {len(family)} tested rows of the whole sweep are adjusted with Holm's method (p (Holm)); sensitivity rows are "
        "held to Bonferroni over the same family, each method's rows form their own family. **supported**: the 95 % interval "
        "lies on the claimed side and the adjusted p < 0.05; **contradicted**: both say the other side; **not enough data**: "
        "too few trials or conditions, an interval that holds the no-effect value, or a difference that does not survive the "
        "correction (the reason says which). RR means the paper's always-on schedule; differences are RR minus no RR (×100 "
        "for scores); `after_peak` trials whose RR never switched on are replicas of no RR and count nowhere.",
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
                f"{100 * r['plateau']:.0f}%",
                f"{100 * r['rising']:.0f}%",
                f"{100 * r['no_rise']:.0f}%",
                f"{100 * r['phase2_nonempty']:.0f}%",
                f"{r['median_peak_step']:.0f}",
                f"{r['median_phase2_evals']:.0f}",
                format_statistic("relative", r["median_fall_to_best"]),
            ]
            for _, r in split.iterrows()
        ]
        out += [
            "### How each rank notion splits training",
            "",
            "The shape of each distinct completed trial's rank series: it rises and then falls by more than the rank's resolution "
            "(an interior peak: 1 for the integer energy ranks, since one direction is the least change they can show and a "
            "plateaued run flips between neighbouring integers; 1 % of the largest value for `erank_vne`), rises and then stays "
            "within the resolution of its top for at least 3 evaluations (plateau: the peak is where it stopped rising), is still "
            "rising, or never rises by more than the resolution. Then the share with a non-empty Phase 2, the median peak step "
            "(a raw evaluation, never moved by the smoothing), Phase 2 length and the rank's change from the peak to the best step.",
            "",
            markdown_table(
                [
                    "rank",
                    "trials",
                    "n",
                    "rise and fall",
                    "plateau",
                    "still rising",
                    "no rise",
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


def _rr_on_text(r: pd.Series, replica: bool) -> str:
    """When the trial trained with RR: never (no RR), from step 0, from the step after_peak switched it on, or never (a replica)."""
    if r.get("status") != COMPLETED:
        return "–"
    if replica:
        return f"never: {REPLICA}"
    if not r["rr_coef"] > 0:
        return "no RR"
    switch = r.get("rr_switch_step")
    return f"from step {switch:g}" if isinstance(switch, float) and math.isfinite(switch) else "from step 0"


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
                _fmt(r.get(PRIMARY.best), 100.0),
                _fmt(r.get("avg"), 100.0),
                r.get("phase_flag") if isinstance(r.get("phase_flag"), str) else "–",
                _rr_on_text(r, replica),
            ]
            for (_, r), replica in zip(trials.iterrows(), replicas(trials).to_numpy())
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
                    "rank shape",
                    "RR on",
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
    title: str | None = None,
) -> Path:
    """Write ``report.md`` next to the tables (atomically) and return its path; ``only`` is the trial selection, if any,
    ``title`` the output folder's name where ``output_dir`` is a staging folder swapped in afterwards."""
    trials = tables["trials"]
    sweep = str(trials["sweep"].dropna().iloc[0]) if len(trials) and trials["sweep"].notna().any() else experiment_dir.name
    name = title or Path(output_dir).name  # the folder the report ends up in (it may be written in a staging folder)
    source = f"the trials of sweep `{sweep}`" if sweep != name else f"sweep `{sweep}`"
    lines = [
        f"# Sweep report: {name}",
        "",
        f"Aggregated from {source}. Tables: `steps.parquet`, `trials.parquet`, `summary.parquet`, `correlations.parquet`, "
        "`findings.parquet`"
        + (", `probing.parquet`" if "probing" in tables else "")
        + " (schema in the project README)."
        + (" Trials kept: " + "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in only.items()) + " (`--only`)." if only else ""),
        "",
        f"Phases: Phase 1 runs from step 0 to the peak of `{rank_column}`, Phase 2 from the peak to the best STS-B dev step; "
        f"later evaluations are `post`. The peak is the raw maximum near the maximum of a centred moving average over {window} "
        "evaluations, and counts only where the rank rises and then falls by more than its resolution (see 'How each rank "
        "notion splits training'). Scores are Spearman ×100 unless noted; std is the sample std over seeds (ddof = 1); every "
        "interval names its method (Student t, chi-square, Welch t, F, Clopper-Pearson, Fisher z).",
        "",
    ]
    if "findings" in tables:
        from rayjobs.analysis.findings import phase_split_by_metric

        axes = [c for c in tables["trials"].columns if c not in schema.TRIALS and not c.startswith(tuple(schema.TRIALS_PREFIXES))]
        split = phase_split_by_metric(tables["steps"], tables["trials"], axes, window)
        lines += _findings_section(tables["findings"], rank_column, split)
    lines += _trials_section(tables["trials"], read, counts)
    lines += ["## Summary by condition", ""] + _summary_section(tables["summary"], tables["trials"], tables["steps"], rank_column)
    lines += ["## Correlations", ""] + _correlation_section(tables["correlations"], rank_column)
    if "probing" in tables:
        groups = tables["probing"][tables["probing"]["level"] == "group"]
        # the other condition columns (schedule, model, extra axes) only where the table has more than one value of them
        fixed = {"method", "rr_coef", "rr", "level", "group", "surrogate", "task", "n_trials"}
        varying = [c for c in groups.columns if c not in fixed and not c.startswith(tuple(schema.PROBING_PREFIXES))]
        varying = [c for c in varying if groups[c].astype(str).nunique(dropna=False) > 1]
        rows = [
            [
                r["method"],
                f"{r['rr_coef']:g}",
                *(str(r[c]) for c in varying),
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
            markdown_table(["method", "RR", *varying, "group", "surrogate", "trials", "Δ Phase 1", "Δ Phase 2", "acc at best"], rows),
            "",
        ]
    if figures:
        lines += ["## Figures", ""]
        titles = {
            "fig_rank_stsb": "Rank and STS-B dev over training",
            "fig_score_rr": "Scores by RR setting",
            "fig_rank_std": "Average rank vs seed std",
        }
        lines += [f"![{titles.get(name, name)}]({path.name})\n" for name, path in figures.items()]
    path = Path(output_dir) / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
