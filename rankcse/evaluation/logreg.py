"""SentEval's three logistic-regression protocols on frozen features, with scikit-learn.

SentEval (facebookresearch/SentEval, ``senteval/tools/validation.py``) scores a feature matrix in
one of three ways, depending on the splits a task has:

- :func:`split_classifier` (train / valid / test: SST-2 and the probing tasks): fit one model per
  regularisation value on train, keep the value with the best validation accuracy, report test
  accuracy;
- :func:`kfold_classifier` (train / test: TREC, MRPC): choose the value by k-fold cross-validation
  on train, refit on all of train, report test accuracy;
- :func:`inner_kfold_classifier` (one pool: MR, CR, SUBJ, MPQA): k outer folds, each choosing the
  value by an inner k-fold on its training part; report the mean outer-fold test accuracy.

This is SentEval's scikit-learn path (``usepytorch=False``): ``LogisticRegression(C=c)`` with
scikit-learn's defaults, the same C grids, the same ``StratifiedKFold(shuffle=True,
random_state=1111)`` folds and the same rounding of percentages before the arg-max (which decides
ties), so the same features give SentEval's numbers. Accuracies are returned as fractions.

Fits run with BLAS/OpenMP limited to one thread: the problems are small, and on a busy machine
multi-threaded BLAS made single fits up to a hundred times slower here (threads spin-waiting for
cores that other processes hold).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: SentEval's C grids for its scikit-learn path.
C_GRID_SPLIT = tuple(2.0**t for t in range(-2, 4))  # 0.25 .. 8 (SplitClassifier, InnerKFoldClassifier)
C_GRID_KFOLD = tuple(2.0**t for t in range(-1, 6))  # 0.5 .. 32 (KFoldClassifier)
SEED = 1111  # SentEval's default seed (folds and the solver's random_state)


@dataclass(frozen=True)
class Solver:
    """How each logistic regression is fitted (scikit-learn ``LogisticRegression``, L2, lbfgs).

    Args:
        max_iter: lbfgs iterations; 100 is scikit-learn's default, which SentEval uses.
        tol: lbfgs stopping tolerance; 1e-4 is scikit-learn's default.
    """

    max_iter: int = 100
    tol: float = 1e-4


@dataclass(frozen=True)
class Score:
    """Outcome of one protocol: accuracies as fractions, the chosen C, and fit diagnostics."""

    dev_acc: float
    test_acc: float
    c: float | None
    not_converged: int = 0
    predictions: np.ndarray | None = None


class _Fitter:
    """Fits logistic regressions and counts the ones lbfgs stopped before converging."""

    def __init__(self, solver: Solver) -> None:
        self.solver = solver
        self.not_converged = 0

    def fit(self, X: np.ndarray, y: np.ndarray, c: float):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=self.solver.max_iter, tol=self.solver.tol, random_state=SEED)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y)
        self.not_converged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        return model


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _single_threaded(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)

    return wrapper


def _pct(acc: float) -> float:
    # SentEval rounds every percentage to 2 decimals before comparing or averaging. Means stay numpy
    # floats as in SentEval: round() on them is numpy's rounding, which differs from Python's on halves.
    return round(100 * acc, 2)


def _frac(pct: float) -> float:
    return round(float(pct) / 100, 4)


@_single_threaded
def split_classifier(
    X: dict[str, np.ndarray], y: dict[str, np.ndarray], c_grid: Sequence[float] = C_GRID_SPLIT, solver: Solver = Solver()
) -> Score:
    """Train / valid / test: C chosen on validation accuracy (first best), test accuracy of that model."""
    fitter = _Fitter(solver)
    best_pct, best_c, best_model = -1.0, None, None
    for c in c_grid:
        model = fitter.fit(X["train"], y["train"], c)
        pct = _pct(model.score(X["valid"], y["valid"]))
        if pct > best_pct:  # strict: the first maximum wins, as np.argmax in SentEval
            best_pct, best_c, best_model = pct, c, model
    assert best_model is not None
    test_pct = _pct(best_model.score(X["test"], y["test"]))
    return Score(_frac(best_pct), _frac(test_pct), best_c, fitter.not_converged)


@_single_threaded
def kfold_classifier(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    kfold: int = 10,
    c_grid: Sequence[float] = C_GRID_KFOLD,
    solver: Solver = Solver(),
) -> Score:
    """Train / test: C chosen by k-fold CV on train, then refit on all of train; returns test predictions too."""
    from sklearn.model_selection import StratifiedKFold

    fitter = _Fitter(solver)
    folds = list(StratifiedKFold(n_splits=kfold, shuffle=True, random_state=SEED).split(X_train, y_train))
    scores = []
    for c in c_grid:
        accs = [fitter.fit(X_train[tr], y_train[tr], c).score(X_train[te], y_train[te]) for tr, te in folds]
        scores.append(_pct(np.mean(accs)))
    best = int(np.argmax(scores))
    model = fitter.fit(X_train, y_train, c_grid[best])
    predictions = model.predict(X_test)
    test_pct = _pct(model.score(X_test, y_test))
    return Score(_frac(scores[best]), _frac(test_pct), c_grid[best], fitter.not_converged, predictions)


@_single_threaded
def inner_kfold_classifier(
    X: np.ndarray, y: np.ndarray, kfold: int = 10, c_grid: Sequence[float] = C_GRID_SPLIT, solver: Solver = Solver()
) -> Score:
    """One pool: k outer folds, C chosen per fold by an inner k-fold; mean outer test accuracy (C is per fold, so None)."""
    from sklearn.model_selection import StratifiedKFold

    fitter = _Fitter(solver)
    outer = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=SEED)
    inner = StratifiedKFold(n_splits=kfold, shuffle=True, random_state=SEED)
    dev_results, test_results = [], []
    for train_idx, test_idx in outer.split(X, y):
        X_tr, y_tr = X[train_idx], y[train_idx]
        inner_folds = list(inner.split(X_tr, y_tr))
        scores = []
        for c in c_grid:
            accs = [fitter.fit(X_tr[a], y_tr[a], c).score(X_tr[b], y_tr[b]) for a, b in inner_folds]
            scores.append(_pct(np.mean(accs)))
        best = int(np.argmax(scores))
        dev_results.append(scores[best])
        model = fitter.fit(X_tr, y_tr, c_grid[best])
        test_results.append(_pct(model.score(X[test_idx], y[test_idx])))
    return Score(_frac(round(np.mean(dev_results), 2)), _frac(round(np.mean(test_results), 2)), None, fitter.not_converged)
