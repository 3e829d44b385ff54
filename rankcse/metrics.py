"""Correlation metrics of STS evaluation, with the aggregation named in every function.

Values are raw correlations in [-1, 1]; multiplying by 100 is left to presentation code.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, d) arrays, in float64 (0 where a row is all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (scipy); (nearly) constant input, as from a collapsed model, gives its value without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (stats.NearConstantInputWarning, stats.ConstantInputWarning))
        return float(stats.pearsonr(x, y)[0])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (scipy; ties get average ranks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y)[0])


def spearman_concat(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Spearman over all subsets' pairs concatenated: SimCSE's "all" setting."""
    return spearman(np.concatenate(system), np.concatenate(gold))


def pearson_concat(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Pearson over all subsets' pairs concatenated."""
    return pearson(np.concatenate(system), np.concatenate(gold))


def spearman_mean(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Unweighted mean of the per-subset Spearman correlations: SentEval's "mean"."""
    return float(np.mean([spearman(s, g) for s, g in zip(system, gold)]))


def pearson_mean(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Unweighted mean of the per-subset Pearson correlations."""
    return float(np.mean([pearson(s, g) for s, g in zip(system, gold)]))


def spearman_wmean(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Mean of per-subset Spearman correlations weighted by subset size: SentEval's "wmean"."""
    weights = np.array([len(g) for g in gold], dtype=np.float64)
    values = np.array([spearman(s, g) for s, g in zip(system, gold)])
    return float((values * weights).sum() / weights.sum())


def pearson_wmean(system: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> float:
    """Mean of per-subset Pearson correlations weighted by subset size."""
    weights = np.array([len(g) for g in gold], dtype=np.float64)
    values = np.array([pearson(s, g) for s, g in zip(system, gold)])
    return float((values * weights).sum() / weights.sum())
