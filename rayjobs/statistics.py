"""Statistics of the aggregator: seed spread with bootstrap intervals, Welch's test, correlations with intervals.

All bootstraps are percentile intervals from a generator seeded by the caller, so the same inputs
give the same numbers. Plain bootstraps (seed means and stds, correlations over a few independent
points, means of per-trial correlations) are ``scipy.stats.bootstrap``'s resampling; the interval is
taken from its bootstrap distribution ignoring undefined resamples (a correlation of a resample
without spread), where scipy's own interval would be undefined. Correlations over evaluation points
pooled from several trials resample *trials* (a cluster bootstrap, which scipy lacks: points of one
trial are not independent); Pearson's r of each resample comes from per-trial sums, and Spearman's
rho from the pooled ranks (not re-ranked per resample), which keeps a sweep of a thousand trials to
seconds.
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
EXACT_RERANK_MAX = 2000


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size < max(10, samples.size // 2):
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, CI)
    return float(lo), float(hi)


def _bootstrap_distribution(
    samples: tuple[np.ndarray, ...], statistic: Any, rng: np.random.Generator, n_boot: int, paired: bool = False
) -> np.ndarray:
    """``statistic`` (vectorised along the last axis) on each of scipy's ``n_boot`` percentile-bootstrap resamples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate resamples; _percentiles drops undefined ones
        result = stats.bootstrap(samples, statistic, n_resamples=n_boot, method="percentile", vectorized=True, paired=paired, rng=rng)
    return np.asarray(result.bootstrap_distribution)


def bootstrap_mean_std(values: Sequence[float], rng: np.random.Generator, n_boot: int = N_BOOT) -> dict[str, float]:
    """Mean, sample std (ddof=1) and bootstrap 95 % intervals of both; NaN where undefined (n < 2)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    out = {
        "n": int(x.size),
        "mean": float(x.mean()) if x.size else float("nan"),
        "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
    }
    if x.size < 2:
        return {**out, "mean_ci_low": float("nan"), "mean_ci_high": float("nan"), "std_ci_low": float("nan"), "std_ci_high": float("nan")}
    means, stds = _bootstrap_distribution((x,), lambda s, axis: np.stack([s.mean(axis=axis), s.std(axis=axis, ddof=1)]), rng, n_boot)
    (m_lo, m_hi), (s_lo, s_hi) = _percentiles(means), _percentiles(stds)
    return {**out, "mean_ci_low": m_lo, "mean_ci_high": m_hi, "std_ci_low": s_lo, "std_ci_high": s_hi}


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t-test of ``a`` vs ``b`` (two-sided): (t, p); NaN when either side has fewer than 2 values."""
    a = np.asarray([v for v in a if np.isfinite(v)], dtype=np.float64)
    b = np.asarray([v for v in b if np.isfinite(v)], dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _corr_from_sums(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> np.ndarray:
    cov = n * sxy - sx * sy
    var = (n * sxx - sx * sx) * (n * syy - sy * sy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def _cluster_boot(x: np.ndarray, y: np.ndarray, clusters: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Pearson r of ``n_boot`` resamples of whole clusters, from per-cluster sums."""
    ids, index = np.unique(clusters, return_inverse=True)
    k = ids.size
    sums = np.stack([np.bincount(index, weights=w, minlength=k) for w in (np.ones_like(x), x, y, x * x, y * y, x * y)], axis=1)
    chunk = max(1, min(n_boot, 4_000_000 // k))
    parts = []
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=min(chunk, n_boot - start)).astype(np.float64)  # clusters drawn per resample
        parts.append(_corr_from_sums(*(counts @ sums).T))
    return np.concatenate(parts)


def correlate(
    x: Sequence[float], y: Sequence[float], rng: np.random.Generator, clusters: Sequence | None = None, n_boot: int = N_BOOT
) -> dict[str, float]:
    """Pearson and Spearman with p-values, n and bootstrap 95 % intervals; NaN where undefined (n < 3 or no spread).

    ``clusters`` (one label per point) switches to the cluster bootstrap described in the module docstring.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    labels = np.asarray(clusters)[keep] if clusters is not None else None
    out: dict[str, float] = {"n": int(x.size), "n_trials": int(np.unique(labels).size) if labels is not None else int(x.size)}
    nan = float("nan")
    blank = {
        k: nan
        for k in (
            "pearson_r",
            "pearson_p",
            "pearson_ci_low",
            "pearson_ci_high",
            "spearman_rho",
            "spearman_p",
            "spearman_ci_low",
            "spearman_ci_high",
        )
    }
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, **blank}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant inputs: the value is still defined, scipy only warns
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    out.update(
        {
            "pearson_r": float(pearson.statistic),
            "pearson_p": float(pearson.pvalue),
            "spearman_rho": float(spearman.statistic),
            "spearman_p": float(spearman.pvalue),
        }
    )
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if labels is not None and out["n_trials"] >= 2:
        boot_p = _cluster_boot(x, y, labels, rng, n_boot)
        boot_s = _cluster_boot(rx, ry, labels, rng, n_boot)
    elif labels is None and x.size <= EXACT_RERANK_MAX:

        def both(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
            return np.stack([_rowwise_corr(a, b), _rowwise_corr(stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1))])

        boot_p, boot_s = _bootstrap_distribution((x, y), both, rng, n_boot, paired=True)
    else:
        singles = np.arange(x.size)
        boot_p, boot_s = _cluster_boot(x, y, singles, rng, n_boot), _cluster_boot(rx, ry, singles, rng, n_boot)
    out["pearson_ci_low"], out["pearson_ci_high"] = _percentiles(boot_p)
    out["spearman_ci_low"], out["spearman_ci_high"] = _percentiles(boot_s)
    return out


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    return _corr_from_sums(np.full(a.shape[0], float(n)), a.sum(1), b.sum(1), (a * a).sum(1), (b * b).sum(1), (a * b).sum(1))


def mean_of_correlations(values: Sequence[float], rng: np.random.Generator, n_boot: int = N_BOOT) -> dict[str, float]:
    """Mean of per-trial correlations, a bootstrap interval over trials and a one-sample t-test p-value against 0."""
    r = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if r.size == 0:
        return {"n": 0, "mean": float("nan"), "p": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    p = float("nan")
    if r.size >= 2 and np.ptp(r) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_1samp(r, 0.0).pvalue)
    lo, hi = (float("nan"), float("nan")) if r.size < 2 else _percentiles(_bootstrap_distribution((r,), np.mean, rng, n_boot))
    return {"n": int(r.size), "mean": float(r.mean()), "p": p, "ci_low": lo, "ci_high": hi}


def trial_correlation(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Pearson r, Spearman rho) of one trial's points; NaN with fewer than 3 points or no spread."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.pearsonr(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def stratified_welch(strata: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, float]:
    """Difference of means ``a - b`` averaged over strata with equal weight, with Welch's t, df, p and 95 % interval.

    Each stratum is one condition's treated and baseline values (e.g. one method's RR and no-RR seeds),
    so differences between strata do not inflate the error. With one stratum this is Welch's test.
    Strata with fewer than two values on a side are left out; NaN where none is left.
    """
    usable = []
    for a, b in strata:
        a = np.asarray([v for v in a if np.isfinite(v)], dtype=np.float64)
        b = np.asarray([v for v in b if np.isfinite(v)], dtype=np.float64)
        if a.size >= 2 and b.size >= 2:
            usable.append((a, b))
    nan = float("nan")
    out = {
        "diff": nan,
        "ci_low": nan,
        "ci_high": nan,
        "t": nan,
        "df": nan,
        "p": nan,
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
    half = float(stats.t.ppf(0.975, df)) * se
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
    the variance ratio follows an F distribution, which gives the 95 % interval and the two-sided p
    (a bootstrap of three seeds would be degenerate).
    """

    def pooled(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
        ss, dof = 0.0, 0
        for g in groups:
            x = np.asarray([v for v in g if np.isfinite(v)], dtype=np.float64)
            if x.size >= 2:
                ss += float(((x - x.mean()) ** 2).sum())
                dof += x.size - 1
        return ss, dof

    (ss_t, df_t), (ss_b, df_b) = pooled(treated), pooled(baseline)
    nan = float("nan")
    out = {"ratio": nan, "ci_low": nan, "ci_high": nan, "p": nan, "df_treated": df_t, "df_baseline": df_b}
    if df_t < 1 or df_b < 1 or ss_b <= 0:
        return out
    r = (ss_t / df_t) / (ss_b / df_b)
    lo, hi = r / stats.f.ppf(0.975, df_t, df_b), r / stats.f.ppf(0.025, df_t, df_b)
    p = 2 * min(stats.f.cdf(r, df_t, df_b), stats.f.sf(r, df_t, df_b))
    out.update(ratio=math.sqrt(r), ci_low=math.sqrt(lo), ci_high=math.sqrt(hi), p=float(min(1.0, p)))
    return out


def share_with_interval(k: int, n: int) -> dict[str, float]:
    """Share ``k / n`` with its exact (Clopper-Pearson) 95 % interval; NaN when n is 0."""
    if n <= 0:
        return {"share": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"share": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high)}
