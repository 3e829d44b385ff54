"""The results schema: the columns of each Parquet table, their types and meanings, and atomic writing.

Every table carries ``rankcse.schema_version`` and ``rankcse.table`` in its Parquet metadata. Fixed
columns are listed below with their dtype; besides them a table may hold *dynamic* columns whose
names match one of its documented prefixes (all float64), e.g. every ``probe/*`` rank metric the
trainer records, and one column per extra grid axis of the sweep (listed in ``rankcse.axes``).
Bump :data:`SCHEMA_VERSION` on any change that can break a reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankcse.io import atomic_path
from rankcse.names import PRIMARY

SCHEMA_VERSION = 2

#: Columns that identify a trial's condition; shared by the steps, trials and summary tables.
CONDITION = {
    "method": ("string", "contrastive method"),
    "rr_coef": ("float64", "RR coefficient (0 = no RR)"),
    "rr_schedule": ("string", "RR schedule (always, from_step:N, warmup:N, after_peak)"),
    "model": ("string", "model name or folder ('default' = packaged all-MiniLM-L6-v2)"),
}
TRIAL_KEY = {
    "sweep": ("string", "experiment name (its folder)"),
    "trial_id": ("string", "Tune's trial id, or the run folder of a plain rankcse train run"),
}

STEPS: dict[str, tuple[str, str]] = {
    **TRIAL_KEY,
    **CONDITION,
    "seed": ("int64", "seed of data order, dropout and head initialisation"),
    "step": ("int64", "optimisation step of the evaluation (0 = the pre-trained model)"),
    "phase": (
        "int64",
        "offline phase: 1 up to the rank peak (rankcse.phases.split_phases), 2 after it up to the best STS-B dev step, "
        "3 = after the best step ('post')",
    ),
    "phase_online": ("float64", "phase the online peak detector saw during training (1 or 2)"),
    "epoch": ("float64", "epochs done"),
    "lr": ("float64", "learning rate"),
    "train_seconds": ("float64", "training time so far (evaluation excluded)"),
    "eval_seconds": ("float64", "time of this evaluation"),
    PRIMARY.name: ("float64", "STS-B dev Spearman (fraction), the checkpoint-selection metric"),
    f"{PRIMARY.name}_pearson": ("float64", "STS-B dev Pearson"),
    "alignment": ("float64", "Wang & Isola alignment on STS-B dev pairs with gold score > 4 (lower is better)"),
    "uniformity": ("float64", "Wang & Isola uniformity on STS-B dev sentences (lower is better)"),
}
STEPS_PREFIXES = {
    "loss/": "loss parts, mean over the steps since the previous evaluation (loss/total, loss/cl, loss/rr, loss/mlm, ...)",
    "probe/": "rank metrics of the probe set (STS-B dev, evaluation embedding): "
    "energy_rank_XX, erank_vne, erank_sv, numerical_rank, stable_rank, centered/*",
    "batch/": "rank of the training batch, mean over the steps since the previous evaluation",
    "rr/": "RR entropy, coefficient in force and the step the after_peak schedule switched on",
    "best/": "best STS-B dev so far and its step",
    "probing/": "probing accuracy (fraction) at the evaluations where probing ran",
    "probing_seconds": "time of the in-training probe",
}

TRIALS: dict[str, tuple[str, str]] = {
    **TRIAL_KEY,
    **CONDITION,
    "seed": ("int64", "seed"),
    "path": ("string", "trial folder, relative to the experiment folder"),
    "layout": ("string", "tune (a sweep trial) or run (a plain rankcse train folder)"),
    "status": (
        "string",
        "completed, truncated (finished, but its history of evaluations is cut), collapsed (stopped: the representation "
        "collapsed), errored, incomplete or duplicate (a repeated grid cell; the best copy is kept)",
    ),
    "error": ("string", "what went wrong: the collapse, a cut history (rows missing, lines that do not parse), the last failure message"),
    "attempts_failed": ("int64", "failed attempts Tune recorded (retried from the last checkpoint)"),
    "device": ("string", "torch device the trial trained on (cpu, cuda, cuda:N); cpu with a GPU held only under --allow-cpu-on-gpu"),
    "n_evals": ("int64", "evaluations recorded"),
    "steps_done": ("int64", "last evaluated step"),
    "peak_step": (
        "float64",
        "step of the peak of the phase rank metric: the raw maximum near the smoothed one; for a plateau the first evaluation on it",
    ),
    "peak_rank": ("float64", "phase rank metric at the peak (raw value)"),
    "peak_energy_rank_99": ("float64", "energy rank (tau 0.99) at the peak step"),
    "best_step": ("float64", "step of the best STS-B dev (step 0 excluded)"),
    PRIMARY.best: ("float64", "best STS-B dev Spearman"),
    "rank_at_best": ("float64", "phase rank metric at the best step"),
    "avg_rank": ("float64", "mean phase rank metric over the evaluations up to the best step (the paper's average rank)"),
    "avg_energy_rank_99": ("float64", "mean energy rank (tau 0.99) over the evaluations up to the best step"),
    "avg_erank_vne": ("float64", "mean erank_vne over the evaluations up to the best step"),
    "phase_flag": (
        "string",
        "shape of the phase rank: ok (rises, then falls by more than rank_resolution, with a non-empty Phase 2), phase2_empty "
        "(the same, best step at or before the peak), plateau (rises, then stays within rank_resolution of its top for >= 3 "
        "evaluations), rising (rises into its last evaluations), no_rise (never rises by more than rank_resolution), no_rank",
    ),
    "rank_resolution": (
        "float64",
        "smallest change of the phase rank counted as a change: 1 for an integer rank (energy ranks), else 1% of its largest value",
    ),
    "n_phase1": ("int64", "evaluations in Phase 1"),
    "n_phase2": ("int64", "evaluations in Phase 2"),
    "rr_switch_step": (
        "float64",
        "step RR switched on (after_peak schedule); empty for an after_peak trial = RR never switched on: a replica of no RR, "
        "left out of the summary, correlations and findings",
    ),
    "train_seconds": ("float64", "training time"),
    "sts12": ("float64", "final test Spearman of the best checkpoint, STS12 'all'"),
    "sts13": ("float64", "STS13 'all'"),
    "sts14": ("float64", "STS14 'all'"),
    "sts15": ("float64", "STS15 'all'"),
    "sts16": ("float64", "STS16 'all'"),
    "stsb": ("float64", "STS-B test"),
    "sickr": ("float64", "SICK-R test"),
    "avg": ("float64", "mean of the final test scores that were run"),
    "no_improvement": ("bool", "no trained evaluation beat the pre-trained model (step 0) on STS-B dev: the scores are of a worse model"),
    "config": ("string", "the trial's full rankcse settings, JSON"),
}
TRIALS_PREFIXES = {
    "pretrained/": "test score of the pre-trained model (step 0), the baseline, where the run recorded it (final.json)",
    "probing/": "probing accuracy of the best checkpoint (full setting)",
    "transfer/": "transfer-task accuracy of the best checkpoint",
}

SUMMARY: dict[str, tuple[str, str]] = {
    **CONDITION,
    "metric": ("string", "the trial quantity summarised (a test score, best_stsb_dev, avg_rank, ...)"),
    "n": ("int64", "completed trials (seeds) with a value"),
    "mean": ("float64", "mean over seeds"),
    "std": ("float64", "sample standard deviation over seeds (ddof=1)"),
    "mean_ci_low": ("float64", "95% interval of the mean (Student t), low end"),
    "mean_ci_high": ("float64", "95% interval of the mean, high end"),
    "std_ci_low": ("float64", "95% interval of the std (chi-square; percentile bootstrap from 20 seeds), low end"),
    "std_ci_high": ("float64", "95% interval of the std, high end"),
    "mean_ci_method": ("string", "how the mean's interval was computed"),
    "std_ci_method": ("string", "how the std's interval was computed"),
    "baseline_n": ("float64", "seeds of the same condition without RR (rr_coef 0)"),
    "baseline_mean": ("float64", "mean without RR"),
    "diff_vs_no_rr": ("float64", "mean minus the mean without RR"),
    "welch_t": ("float64", "Welch's t statistic, RR vs no RR"),
    "welch_p": ("float64", "two-sided p-value of Welch's t-test"),
}

CORRELATIONS: dict[str, tuple[str, str]] = {
    "analysis": ("string", "rank_vs_stsb_dev (evaluation points within a phase) or avg_rank_vs_seed_std (one point per condition)"),
    "rank_metric": ("string", "the rank column used (e.g. probe/erank_vne)"),
    "phase": ("float64", "1 or 2 for rank_vs_stsb_dev; empty for avg_rank_vs_seed_std"),
    "variant": (
        "string",
        "which evaluations of the phase: Phase 1 'with step 0' (primary) or 'without step 0'; Phase 2 'peak to best' (primary, "
        "the paper's) or 'peak to end'",
    ),
    "score": ("string", "stsb_dev, or the test score whose seed std is correlated"),
    "scope": (
        "string",
        "trial (one trial's points; no p-value: its evaluations are not independent), across_trials (the trials' correlations "
        "combined on Fisher's z, t-test over trials) or conditions (one point per distinct condition)",
    ),
    "method": ("string", "method, or 'all'"),
    "subset": ("string", "which trials: all, no_rr (rr_coef 0) or rr (RR on for some steps); replicas of no RR never count"),
    "trial_id": ("string", "the trial of a scope 'trial' row"),
    "n": ("int64", "points (evaluations of the usable trials, or conditions)"),
    "n_trials": ("int64", "trials behind the row (for across_trials: those with a usable phase)"),
    "usable": ("bool", "scope trial: the phase has >= 3 evaluations and the rank moves in it by more than its resolution"),
    "pearson_r": ("float64", "Pearson r (across_trials: the back-transformed mean Fisher z of the trials' r)"),
    "pearson_p": ("float64", "two-sided p-value: t-test of the trials' Fisher z against 0 (across_trials), Pearson's test (conditions)"),
    "pearson_ci_low": ("float64", "95% interval, low end (method in interval)"),
    "pearson_ci_high": ("float64", "95% interval, high end"),
    "spearman_rho": ("float64", "Spearman rho (across_trials: combined like Pearson's)"),
    "spearman_p": ("float64", "two-sided p-value, as for Pearson"),
    "spearman_ci_low": ("float64", "95% interval, low end"),
    "spearman_ci_high": ("float64", "95% interval, high end"),
    "interval": ("string", "how the intervals were computed: t on Fisher z over trials, or Fisher z (over conditions)"),
    "note": ("string", "scope trial: why the trial's phase is not usable"),
}

FINDINGS: dict[str, tuple[str, str]] = {
    "claim": ("string", "claim id: 1-8 the paper's (SPEC section 10), P1-P8 the after_peak schedule against no RR and always-on RR"),
    "finding": ("string", "the claim tested, in words"),
    "rank_metric": ("string", "rank notion of a rank claim (energy_rank_99, erank_vne); empty for the others"),
    "scope": ("string", "all (the whole sweep) or one method"),
    "variant": ("string", "empty for the primary test; a sensitivity row names its definition (without step 0, peak to end)"),
    "statistic": (
        "string",
        "what estimate is: share (of trials), r (Pearson), difference (of means, RR minus baseline), "
        "relative (difference / baseline mean), ratio (of pooled seed stds), steps (difference of best steps)",
    ),
    "estimate": ("float64", "the sweep's value"),
    "ci_low": ("float64", "95% interval, low end (method in interval)"),
    "ci_high": ("float64", "95% interval, high end"),
    "interval": (
        "string",
        "how the interval and p were computed: Clopper-Pearson (exact binomial test), t on Fisher z over trials, "
        "Welch t (stratified), F, Fisher z (over conditions)",
    ),
    "n": ("int64", "trials, evaluations or conditions behind the estimate (n_unit)"),
    "n_unit": ("string", "what n counts"),
    "p_value": ("float64", "two-sided p-value of the test, unadjusted"),
    "p_adjusted": (
        "float64",
        "p adjusted for the claims tested on the same scope: Holm over the primary rows, Bonferroni over that family for variants",
    ),
    "paper_value": ("float64", "the paper's value in the same statistic, where known (scope all)"),
    "paper_note": ("string", "the paper's statement and how sure we are of it (SPEC tags)"),
    "verdict": ("string", "supported, contradicted or not enough data"),
    "reason": ("string", "why not supported: too few trials or conditions, where the interval lies, or the correction"),
    "note": ("string", "what the estimate pools or leaves out: RR coefficients, per-trial r, censored best steps, switch steps"),
}

PROBING: dict[str, tuple[str, str]] = {
    "method": ("string", "method"),
    "rr_coef": ("float64", "RR coefficient"),
    "rr_schedule": ("string", "RR schedule (after_peak trials whose RR never switched on are left out, as in the summary)"),
    "model": ("string", "model name or folder"),
    "rr": ("bool", "rr_coef > 0"),
    "level": ("string", "task or group (surface / syntactic / semantic: the mean over its tasks within a trial)"),
    "group": ("string", "Conneau et al. (2018) group of the task"),
    "surrogate": ("bool", "generated surrogate task (*_gen), not SentEval's data"),
    "task": ("string", "task key; for group rows the group's tasks joined by +"),
    "n_trials": ("int64", "trials with probing results"),
}
PROBING_PREFIXES = {
    "acc_": "accuracy at the start of Phase 1 (acc_start), at the rank peak "
    "(acc_peak), at the best step (acc_best): _mean and _std over trials",
    "change_": "change over Phase 1 (acc_peak - acc_start) and Phase 2 (acc_best - acc_peak): _mean and _std",
    "mean_": "mean accuracy within Phase 1 / Phase 2: _mean and _std",
}
TABLES = {
    "steps": (STEPS, STEPS_PREFIXES),
    "trials": (TRIALS, TRIALS_PREFIXES),
    "summary": (SUMMARY, {}),
    "correlations": (CORRELATIONS, {}),
    "findings": (FINDINGS, {}),
    "probing": (PROBING, PROBING_PREFIXES),
}


def conform(frame: pd.DataFrame, table: str, axes: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Order and type ``frame``'s columns as the schema says: fixed columns first (missing ones added empty), then
    axes, then the rest sorted."""
    fixed, prefixes = TABLES[table]
    out = pd.DataFrame(index=frame.index)
    for name, (dtype, _) in fixed.items():
        values = frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        out[name] = _cast(values, dtype)
    extra_axes = [a for a in axes if a in frame.columns and a not in fixed]
    for name in extra_axes:
        out[name] = frame[name].astype("string") if frame[name].dtype == object else frame[name]
    rest = sorted(c for c in frame.columns if c not in fixed and c not in extra_axes)
    unknown = [c for c in rest if not any(c.startswith(p) for p in prefixes)]
    if unknown:
        raise ValueError(f"{table} table: column {unknown[0]!r} is neither in the schema nor under a documented prefix")
    for name in rest:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


def _cast(values: pd.Series, dtype: str) -> pd.Series:
    if dtype == "string":
        return values.astype("string")
    if dtype == "bool":
        return values.astype("boolean") if values.isna().any() else values.astype("bool")  # unknown stays empty, not False
    if dtype == "int64":
        numeric = pd.to_numeric(values, errors="coerce")
        return numeric.astype("Int64") if numeric.isna().any() else numeric.astype("int64")
    return pd.to_numeric(values, errors="coerce").astype("float64")


def write_table(
    frame: pd.DataFrame, path: Path, table: str, axes: list[str] | tuple[str, ...] = (), extra: dict[str, str] | None = None
) -> Path:
    """Write ``frame`` as Parquet with the schema metadata (plus ``extra`` keys), through a temporary file and a rename."""
    path = Path(path)
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta.update(
        {
            b"rankcse.schema_version": str(SCHEMA_VERSION).encode(),
            b"rankcse.table": table.encode(),
            b"rankcse.axes": json.dumps(list(axes)).encode(),
        }
    )
    meta.update({k.encode(): v.encode() for k, v in (extra or {}).items()})
    arrow = arrow.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")
    return path


def check_table(path: Path) -> list[str]:
    """Problems of a written table against the schema (empty when it conforms)."""
    parquet = pq.read_table(path)
    meta = parquet.schema.metadata or {}
    table = meta.get(b"rankcse.table", b"").decode()
    problems = []
    if meta.get(b"rankcse.schema_version", b"").decode() != str(SCHEMA_VERSION):
        problems.append(f"{path.name}: schema version {meta.get(b'rankcse.schema_version')!r}, expected {SCHEMA_VERSION}")
    if table not in TABLES:
        return problems + [f"{path.name}: unknown table {table!r}"]
    fixed, prefixes = TABLES[table]
    axes = json.loads(meta.get(b"rankcse.axes", b"[]").decode())
    names = parquet.schema.names
    for name, (dtype, _) in fixed.items():
        if name not in names:
            problems.append(f"{path.name}: missing column {name}")
            continue
        got = str(parquet.schema.field(name).type)
        want = {"string": ("string", "large_string", "null"), "int64": ("int64",), "float64": ("double", "null"), "bool": ("bool",)}[dtype]
        if got not in want:
            problems.append(f"{path.name}: column {name} is {got}, expected {dtype}")
    for name in names:
        if name in fixed or name in axes:
            continue
        if not any(name.startswith(p) for p in prefixes):
            problems.append(f"{path.name}: column {name} is not in the schema")
        elif str(parquet.schema.field(name).type) not in ("double", "null"):
            problems.append(f"{path.name}: dynamic column {name} is {parquet.schema.field(name).type}, expected float64")
    return problems


def markdown_doc() -> str:
    """The schema as Markdown (the README's results section and results/README.md are generated from this)."""
    lines = [f"Schema version {SCHEMA_VERSION}. Scores and accuracies are fractions in [-1, 1] / [0, 1].", ""]
    for table, (fixed, prefixes) in TABLES.items():
        lines += [f"### `{table}.parquet`", "", "| column | type | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {dtype} | {meaning} |" for name, (dtype, meaning) in fixed.items()]
        lines += [f"| `{prefix}*` | float64 | {meaning} |" for prefix, meaning in prefixes.items()]
        lines.append("")
    return "\n".join(lines)
