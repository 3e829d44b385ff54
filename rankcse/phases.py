"""Phase 1 / Phase 2 of training, split at the peak of the representation rank.

Offline: :func:`split_phases` labels a finished rank series. Online: :class:`PeakDetector`
watches the series as it is evaluated, for the phase-aware RR schedule ``after_peak``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PHASE_1, PHASE_2, PHASE_POST = 1, 2, 3


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


@dataclass(frozen=True)
class PhaseSplit:
    """Result of an offline phase split; indices refer to positions in the series."""

    peak_index: int
    best_index: int
    labels: list[int]
    interior_peak: bool
    phase2_empty: bool


def split_phases(rank: Sequence[float], score: Sequence[float], window: int = 1, first_scored: int = 1) -> PhaseSplit:
    """Split an evaluation series at the rank peak.

    Phase 1 holds the points up to and including the peak (first maximum of the smoothed rank),
    Phase 2 the points after the peak up to and including the best score, later points are
    ``post``. The best score is searched from ``first_scored`` on (step 0 is the pre-trained model,
    never a checkpoint). ``interior_peak`` is False when the peak is the first or last point;
    ``phase2_empty`` when the best score comes at or before the peak.
    """
    r = smooth(rank, window)
    if r.size == 0:
        raise ValueError("empty rank series")
    if len(score) != r.size:
        raise ValueError("rank and score series differ in length")
    peak = int(np.argmax(r))
    s = np.asarray(score, dtype=np.float64)
    start = min(first_scored, s.size - 1)
    best = start + int(np.nanargmax(s[start:])) if np.isfinite(s[start:]).any() else s.size - 1
    labels = [PHASE_1 if i <= peak else (PHASE_2 if i <= best else PHASE_POST) for i in range(r.size)]
    return PhaseSplit(
        peak_index=peak,
        best_index=best,
        labels=labels,
        interior_peak=0 < peak < r.size - 1,
        phase2_empty=best <= peak,
    )


@dataclass
class PeakDetector:
    """Online detector of the rank peak.

    Declares the peak once the smoothed rank (trailing mean of ``window`` evaluations) has been
    below its running maximum for ``patience`` consecutive evaluations, or has fallen more than
    ``drop`` (a fraction) below it. ``peak_step`` is the step of the running maximum at that time.
    """

    patience: int = 3
    drop: float = 0.02
    window: int = 3
    history: list[float] = field(default_factory=list)
    best_value: float = float("-inf")
    best_step: int | None = None
    below: int = 0
    peak_step: int | None = None
    detected_at: int | None = None

    def update(self, step: int, value: float) -> bool:
        """Feed one evaluation; return True exactly once, at the evaluation that detects the peak."""
        if self.peak_step is not None:
            return False
        self.history.append(float(value))
        smoothed = float(np.mean(self.history[-self.window :]))
        if smoothed > self.best_value:
            self.best_value, self.best_step, self.below = smoothed, step, 0
            return False
        self.below += 1
        fell_far = self.best_value > 0 and smoothed < (1.0 - self.drop) * self.best_value
        if self.below >= self.patience or fell_far:
            self.peak_step, self.detected_at = self.best_step, step
            return True
        return False

    def state_dict(self) -> dict:
        """Plain-data state for checkpoints."""
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`."""
        self.__dict__.update(state)
