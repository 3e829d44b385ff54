"""Phase 1 / Phase 2 of training, split at the peak of the representation rank.

Offline: :func:`split_phases` labels a finished rank series. Online: :class:`PeakDetector`
watches the series as it is evaluated, for the phase-aware RR schedule ``after_peak``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PHASE_1, PHASE_2, PHASE_POST = 1, 2, 3
#: Shapes of a rank series (:attr:`PhaseSplit.kind`): rises then falls by more than the resolution; rises then stays
#: within the resolution of its top; rises into the last evaluation; never rises by more than the resolution.
PEAK, PLATEAU, RISING, NO_RISE = "peak", "plateau", "rising", "no_rise"
#: Resolution of a rank notion with real values, relative to its largest value: changes within 1 % are jitter
#: (a plateaued run's erank_vne moves by 0.5-1 % between evaluations in the reference study).
RELATIVE_RESOLUTION = 0.01
#: Evaluations within the resolution of the top (the first one on it included) that make a plateau.
PLATEAU_EVALS = 3


def smooth(values: Sequence[float], window: int = 1) -> np.ndarray:
    """Centred moving average over ``window`` evaluations (shrinking at the ends); 1 = no smoothing."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1 or x.size == 0:
        return x
    half = window // 2
    out = np.empty_like(x)
    for i in range(x.size):
        lo, hi = max(0, i - half), min(x.size, i + half + 1)
        out[i] = x[lo:hi].mean()
    return out


def resolution(values: Sequence[float]) -> float:
    """Smallest change of the rank that is not jitter: 1 for an integer-valued notion (energy ranks count
    directions, so 259 vs 260 is one direction and the least step it can show), else 1 % of its largest value."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    if np.all(x == np.round(x)):
        return 1.0
    return RELATIVE_RESOLUTION * float(np.max(np.abs(x)))


def _span(top: float, values: np.ndarray) -> float:
    """How far ``values`` reach below ``top`` (0 when none is measured)."""
    finite = values[np.isfinite(values)]
    return float(top - finite.min()) if finite.size and np.isfinite(top) else 0.0


@dataclass(frozen=True)
class PhaseSplit:
    """Result of an offline phase split; indices refer to positions in the series."""

    peak_index: int
    best_index: int
    labels: list[int]
    interior_peak: bool
    phase2_empty: bool
    kind: str = PEAK
    resolution: float = 0.0

    @property
    def flag(self) -> str:
        """The trials table's ``phase_flag``: ok / phase2_empty for a rise-and-fall peak, else the series' shape."""
        if self.kind != PEAK:
            return self.kind
        return "phase2_empty" if self.phase2_empty else "ok"


def split_phases(
    rank: Sequence[float], score: Sequence[float], window: int = 1, first_scored: int = 1, min_change: float | None = None
) -> PhaseSplit:
    """Split an evaluation series at the rank peak.

    The smoothed rank (centred mean over ``window`` evaluations) says where the peak region is; the peak is
    the raw maximum within that window, so smoothing never moves the marker off a measured value (nor, at
    the ends of the series, onto a neighbour). A peak counts (``kind`` ``peak``, ``interior_peak``) only when
    the raw rank rises to it and then falls from it by more than ``min_change`` (default :func:`resolution`).
    A rank that rises and then stays within ``min_change`` of its top for at least :data:`PLATEAU_EVALS`
    evaluations is a ``plateau`` whose peak is the first evaluation on it (where it stopped rising); one that
    rises and neither falls nor holds is ``rising`` (peak at its top); one that never rises by more than
    ``min_change`` is ``no_rise``.

    Phase 1 holds the points up to and including the peak, Phase 2 the points after it up to and including
    the best score, later points are ``post``. The best score is searched from ``first_scored`` on (step 0 is
    the pre-trained model, never a checkpoint); ``phase2_empty`` when it comes at or before the peak.
    """
    raw = np.asarray(rank, dtype=np.float64)
    if raw.size == 0:
        raise ValueError("empty rank series")
    if len(score) != raw.size:
        raise ValueError("rank and score series differ in length")
    res = resolution(raw) if min_change is None else float(min_change)
    measured = np.where(np.isfinite(raw), raw, np.nan)  # an evaluation without a rank neither rises nor falls
    centre = int(np.argmax(smooth(raw, window)))
    half = max(window, 1) // 2
    lo = max(0, centre - half)
    peak = lo + int(np.argmax(raw[lo : centre + half + 1]))
    rise = _span(measured[peak], measured[: peak + 1])
    fall = _span(measured[peak], measured[peak + 1 :])
    if not rise > res:
        kind = NO_RISE
    elif fall > res:
        kind = PEAK
    else:
        on_top = np.flatnonzero(measured >= np.nanmax(measured[peak:]) - res)
        if on_top.size >= PLATEAU_EVALS and on_top[0] < raw.size - 1:
            kind, peak = PLATEAU, int(on_top[0])
        else:
            kind = RISING
    s = np.asarray(score, dtype=np.float64)
    start = min(first_scored, s.size - 1)
    best = start + int(np.nanargmax(s[start:])) if np.isfinite(s[start:]).any() else s.size - 1
    labels = [PHASE_1 if i <= peak else (PHASE_2 if i <= best else PHASE_POST) for i in range(raw.size)]
    return PhaseSplit(
        peak_index=peak,
        best_index=best,
        labels=labels,
        interior_peak=kind == PEAK,
        phase2_empty=best <= peak,
        kind=kind,
        resolution=res,
    )


#: Rank notions that take whole-number values: they cannot rise or fall by less than 1.
INTEGER_METRICS = frozenset({"energy_rank_99", "energy_rank_95", "energy_rank_90", "numerical_rank"})


def metric_resolution(metric: str) -> float:
    """The smallest change of ``metric`` that is not rounding: 1 for the integer ranks, 0 for continuous ones."""
    return 1.0 if metric in INTEGER_METRICS else 0.0


@dataclass
class PeakDetector:
    """Online detector of the rank peak, for the ``after_peak`` RR schedule.

    A *rise* is an evaluation above the current level (the last risen-to value) by more than the margin,
    ``max(resolution, tolerance * level)``: an integer rank cannot rise by less than 1, and a rank that creeps up by
    under ``tolerance`` (a fraction) per evaluation has stopped rising in any sense that matters here. The peak is
    declared at the first of:

    - a *plateau*: ``plateau`` consecutive evaluations without a rise (0 switches this off);
    - a *fall*: ``patience`` consecutive evaluations below the level by more than the margin;
    - a *drop*: one evaluation more than ``drop`` (a fraction) below the level.

    ``peak_step`` is the step of the last rise (where the rank stopped rising), ``detected_at`` the evaluation
    that declared it, ``reason`` which rule fired. Raw values are used: a trailing mean would delay every
    rule by half its window, and the margin already absorbs the metric's jitter.
    """

    patience: int = 3
    drop: float = 0.02
    plateau: int = 2
    tolerance: float = 0.01
    resolution: float = 0.0
    level: float | None = None
    level_step: int | None = None
    flat: int = 0
    below: int = 0
    peak_step: int | None = None
    detected_at: int | None = None
    reason: str | None = None

    def margin(self) -> float:
        """How far a value must move from the level to count as a rise or a fall."""
        return max(self.resolution, self.tolerance * abs(self.level or 0.0))

    def update(self, step: int, value: float) -> bool:
        """Feed one evaluation; return True exactly once, at the evaluation that declares the peak."""
        if self.peak_step is not None:
            return False
        value = float(value)
        if self.level is None or value > self.level + self.margin():
            self.level, self.level_step, self.flat, self.below = value, step, 0, 0
            return False
        self.flat += 1
        self.below = self.below + 1 if value < self.level - self.margin() else 0
        if self.level > 0 and value < (1.0 - self.drop) * self.level:
            self.reason = "drop"
        elif self.below >= self.patience:
            self.reason = "fall"
        elif self.plateau and self.flat >= self.plateau:
            self.reason = "plateau"
        else:
            return False
        self.peak_step, self.detected_at = self.level_step, step
        return True

    def state_dict(self) -> dict:
        """Plain-data state for checkpoints."""
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (keys of an older detector's state are ignored)."""
        self.__dict__.update({key: value for key, value in state.items() if key in self.__dict__})
