"""Statistics of the aggregator, each with the interval that covers at the sample sizes of a sweep.

The unit of every test is what is independent: a seed (trial) or a condition, never one evaluation of a
run (evaluations of one trial share its noise). Means get Student-t intervals, seed stds chi-square
intervals (a percentile bootstrap only from :data:`BOOTSTRAP_MIN_N` seeds, where it is not degenerate),
differences of means (stratified) Welch t intervals, ratios of seed stds F intervals, shares exact
(Clopper-Pearson) intervals. Correlations within a phase are computed per trial and combined across
trials on Fisher's z scale with a one-sample t-test and t interval (the trial is the unit); correlations
across conditions use Fisher's z interval. :func:`holm` adjusts a family of p-values (Holm 1979).
:data:`METHODS` names each interval as the report and the tables print it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

N_BOOT = 2000
CI = (2.5, 97.5)
LEVEL = 0.95
#: From this many seeds the std's interval is a percentile bootstrap (below it, resamples of a few values are degenerate).
BOOTSTRAP_MIN_N = 20
#: Correlations are clipped to +/- this before Fisher's z (a trial of three points can give r = +/-1 exactly).
R_CLIP = 0.999
#: Names of the intervals, as the tables' ``*_method`` columns and the report print them.
METHODS = {
    "mean": "Student t",
    "std": "chi-square",
    "std_boot": "percentile bootstrap",
    "share": "Clopper-Pearson",
    "trials_r": "t on Fisher z over trials",
    "units_r": "Fisher z",
    "welch": "Welch t (stratified)",
    "ratio": "F",
}
NAN = float("nan")


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return x[np.isfinite(x)]


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size < max(10, samples.size // 2):
        return NAN, NAN
    lo, hi = np.percentile(finite, CI)
    return float(lo), float(hi)


def mean_std_intervals(values: Sequence[float], rng: np.random.Generator | None = None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Mean and sample std (ddof=1) over seeds with 95 % intervals: Student t for the mean, chi-square for the std
    (percentile bootstrap from BOOTSTRAP_MIN_N seeds when ``rng`` is given); NaN where undefined (n < 2)."""
    x = _finite(values)
    n = int(x.size)
    out: dict[str, Any] = {
        "n": n,
        "mean": float(x.mean()) if n else NAN,
        "std": float(x.std(ddof=1)) if n > 1 else NAN,
        "mean_ci_low": NAN,
        "mean_ci_high": NAN,
        "std_ci_low": NAN,
        "std_ci_high": NAN,
        "mean_ci_method": METHODS["mean"],
        "std_ci_method": METHODS["std"],
    }
    if n < 2:
        return out
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * out["std"] / math.sqrt(n)
    out["mean_ci_low"], out["mean_ci_high"] = out["mean"] - half, out["mean"] + half
    if n >= BOOTSTRAP_MIN_N and rng is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boot = stats.bootstrap((x,), lambda s, axis: s.std(axis=axis, ddof=1), n_resamples=n_boot, method="percentile", rng=rng)
        out["std_ci_low"], out["std_ci_high"] = _percentiles(np.asarray(boot.bootstrap_distribution))
        out["std_ci_method"] = METHODS["std_boot"]
    else:
        ss = (n - 1) * out["std"] ** 2
        out["std_ci_low"] = math.sqrt(ss / stats.chi2.ppf(0.5 + LEVEL / 2, n - 1))
        out["std_ci_high"] = math.sqrt(ss / stats.chi2.ppf(0.5 - LEVEL / 2, n - 1))
    return out


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t-test of ``a`` vs ``b`` (two-sided): (t, p); NaN when either side has fewer than 2 values."""
    a, b = _finite(a), _finite(b)
    if a.size < 2 or b.size < 2:
        return NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    return float(np.clip((dx * dy).sum() / math.sqrt((dx * dx).sum() * (dy * dy).sum()), -1.0, 1.0))


def trial_correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Pearson r, Spearman rho) of one trial's points; NaN with fewer than 3 points or no spread. No p-value:
    the evaluations of one run are not independent draws."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN, NAN
    return _pearson(x, y), _pearson(stats.rankdata(x), stats.rankdata(y))


def combine_trial_correlations(values: Sequence[float]) -> dict[str, float]:
    """Per-trial correlations combined with the trial as the unit: mean on Fisher's z scale (back-transformed),
    its Student-t 95 % interval and the one-sample t-test of z = 0 (two-sided); NaN below 2 trials."""
    r = _finite(values)
    out = {"n_trials": int(r.size), "r": NAN, "ci_low": NAN, "ci_high": NAN, "p": NAN}
    if r.size == 0:
        return out
    z = np.arctanh(np.clip(r, -R_CLIP, R_CLIP))
    out["r"] = float(np.tanh(z.mean()))
    if r.size < 2:
        return out
    sd = float(z.std(ddof=1))
    if sd == 0:
        return out
    se = sd / math.sqrt(z.size)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, z.size - 1)) * se
    t = float(z.mean()) / se
    out.update(ci_low=float(np.tanh(z.mean() - half)), ci_high=float(np.tanh(z.mean() + half)), p=float(2 * stats.t.sf(abs(t), z.size - 1)))
    return out


def correlation_across_units(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman over independent units (conditions) with p-values and Fisher-z 95 % intervals
    (Spearman's with the Fieller et al. variance 1.06 / (n - 3)); intervals need n >= 4, NaN otherwise."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    names = (
        "pearson_r",
        "pearson_p",
        "pearson_ci_low",
        "pearson_ci_high",
        "spearman_rho",
        "spearman_p",
        "spearman_ci_low",
        "spearman_ci_high",
    )
    out: dict[str, float] = {"n": int(x.size), **dict.fromkeys(names, NAN)}
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    out.update(
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )
    if x.size >= 4:
        q = float(stats.norm.ppf(0.5 + LEVEL / 2))
        for name, value, var in (("pearson", out["pearson_r"], 1.0), ("spearman", out["spearman_rho"], 1.06)):
            z, half = math.atanh(max(-R_CLIP, min(R_CLIP, value))), q * math.sqrt(var / (x.size - 3))
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = math.tanh(z - half), math.tanh(z + half)
    return out


def stratified_welch(strata: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, float]:
    """Difference of means ``a - b`` averaged over strata with equal weight, with Welch's t, df, p and 95 % interval.

    Each stratum is one condition's treated and baseline values (e.g. one method's RR and no-RR seeds),
    so differences between strata do not inflate the error. With one stratum this is Welch's test.
    Strata with fewer than two values on a side are left out; NaN where none is left.
    """
    usable = []
    for a, b in strata:
        a, b = _finite(a), _finite(b)
        if a.size >= 2 and b.size >= 2:
            usable.append((a, b))
    out = {
        "diff": NAN,
        "ci_low": NAN,
        "ci_high": NAN,
        "t": NAN,
        "df": NAN,
        "p": NAN,
        "strata": len(usable),
        "n_a": sum(a.size for a, _ in usable),
        "n_b": sum(b.size for _, b in usable),
    }
    if not usable:
        return out
    k = len(usable)
    out["diff"] = float(np.mean([a.mean() - b.mean() for a, b in usable]))
    parts = [(a.var(ddof=1) / a.size, a.size, b.var(ddof=1) / b.size, b.size) for a, b in usable]
    var = sum(va + vb for va, _, vb, _ in parts) / k**2
    if not var > 0:
        return out
    df = var**2 / (sum(va**2 / (na - 1) + vb**2 / (nb - 1) for va, na, vb, nb in parts) / k**4)
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    out.update(
        t=out["diff"] / se,
        df=float(df),
        p=float(2 * stats.t.sf(abs(out["diff"] / se), df)),
        ci_low=out["diff"] - half,
        ci_high=out["diff"] + half,
    )
    return out


def pooled_std_ratio(treated: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]]) -> dict[str, float]:
    """Ratio of the pooled within-group seed std of ``treated`` groups to that of ``baseline`` groups, with an F interval.

    Each group is one condition's values over seeds; its spread is taken around its own mean, and the
    squared deviations are pooled over groups (degrees of freedom add up). Under normal seed noise
    the variance ratio follows an F distribution, which gives the 95 % interval and the two-sided p.
    """

    def pooled(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
        ss, dof = 0.0, 0
        for g in groups:
            x = _finite(g)
            if x.size >= 2:
                ss += float(((x - x.mean()) ** 2).sum())
                dof += x.size - 1
        return ss, dof

    (ss_t, df_t), (ss_b, df_b) = pooled(treated), pooled(baseline)
    out = {"ratio": NAN, "ci_low": NAN, "ci_high": NAN, "p": NAN, "df_treated": df_t, "df_baseline": df_b}
    if df_t < 1 or df_b < 1 or ss_b <= 0:
        return out
    r = (ss_t / df_t) / (ss_b / df_b)
    lo, hi = r / stats.f.ppf(0.5 + LEVEL / 2, df_t, df_b), r / stats.f.ppf(0.5 - LEVEL / 2, df_t, df_b)
    p = 2 * min(stats.f.cdf(r, df_t, df_b), stats.f.sf(r, df_t, df_b))
    out.update(ratio=math.sqrt(r), ci_low=math.sqrt(lo), ci_high=math.sqrt(hi), p=float(min(1.0, p)))
    return out


def share_with_interval(k: int, n: int, null: float = 0.5) -> dict[str, float]:
    """Share ``k / n`` with its exact (Clopper-Pearson) 95 % interval and the two-sided exact binomial p against ``null``."""
    if n <= 0:
        return {"share": NAN, "ci_low": NAN, "ci_high": NAN, "p": NAN}
    test = stats.binomtest(k, n, null)
    ci = test.proportion_ci(confidence_level=LEVEL, method="exact")
    return {"share": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high), "p": float(test.pvalue)}


def min_trials_for_share(null: float = 0.5) -> int:
    """Fewest trials at which a share can lie above ``null`` at all: all n trials agreeing gives a Clopper-Pearson
    lower end above it (6 for 0.5: 0.025 ** (1/6) = 0.54, while 5 gives 0.48)."""
    n = 1
    while share_with_interval(n, n, null)["ci_low"] <= null:
        n += 1
    return n


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, NAN)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out
