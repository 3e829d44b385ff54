"""Phase split, online peak detection, alignment and uniformity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankcse.geometry import alignment, uniformity
from rankcse.phases import PHASE_1, PHASE_2, PHASE_POST, PeakDetector, smooth, split_phases
from rankcse.rr import RRSchedule


def test_split_at_first_maximum_then_best_score() -> None:
    rank = [10, 14, 18, 18, 16, 15, 13, 12]
    score = [0.5, 0.6, 0.7, 0.72, 0.74, 0.76, 0.75, 0.70]
    split = split_phases(rank, score)
    assert split.peak_index == 2  # first of the tied maxima
    assert split.best_index == 5
    assert split.labels == [PHASE_1, PHASE_1, PHASE_1, PHASE_2, PHASE_2, PHASE_2, PHASE_POST, PHASE_POST]
    assert split.interior_peak and not split.phase2_empty


def test_empty_phase_two_is_flagged() -> None:
    split = split_phases([1, 2, 3, 4], [0.1, 0.9, 0.5, 0.4])
    assert split.peak_index == 3 and split.best_index == 1
    assert split.phase2_empty and not split.interior_peak
    assert PHASE_2 not in split.labels


def test_smoothing_removes_a_one_eval_spike() -> None:
    rank = [10, 20, 12, 14, 16, 17, 16, 15]
    assert split_phases(rank, [0] * 8).peak_index == 1
    assert split_phases(rank, [0] * 8, window=3).peak_index == 5
    assert smooth([1, 2, 3], 1).tolist() == [1, 2, 3]


def test_peak_detector_fall_and_drop() -> None:
    det = PeakDetector(patience=2, drop=0.5, plateau=0, tolerance=0.0)
    fired = [det.update(step, v) for step, v in zip(range(0, 70, 10), [5, 8, 9, 8.9, 8.8, 7, 6])]
    assert fired == [False, False, False, False, True, False, False]
    assert (det.peak_step, det.detected_at, det.reason) == (20, 40, "fall")
    det = PeakDetector(patience=10, drop=0.1, plateau=0, tolerance=0.0)
    assert [det.update(s, v) for s, v in enumerate([5, 9, 7.9])] == [False, False, True]
    assert det.reason == "drop"


def test_peak_detector_plateau_of_an_integer_rank() -> None:
    # The offline default's energy rank: a fast rise, then integer jitter at 259-260 that never falls.
    det = PeakDetector(plateau=2, tolerance=0.0, resolution=1.0)
    fired = [det.update(step, v) for step, v in zip(range(0, 175, 25), [236, 257, 259, 260, 259, 260, 260])]
    assert fired == [False, False, False, False, True, False, False]
    assert (det.peak_step, det.detected_at, det.reason) == (50, 100, "plateau")
    # Without the plateau rule the same series never declares a peak: it never falls by more than 1.
    det = PeakDetector(plateau=0, tolerance=0.0, resolution=1.0)
    assert not any(det.update(step, v) for step, v in zip(range(0, 175, 25), [236, 257, 259, 260, 259, 260, 260]))


def test_peak_detector_tolerance_and_resume_state() -> None:
    # A creep of under 1 % per evaluation is no rise; the level only moves on a real rise.
    det = PeakDetector(plateau=3, tolerance=0.01)
    for step, v in zip(range(0, 50, 10), [100.0, 120.0, 120.5, 121.0, 122.5]):
        det.update(step, v)
    assert det.level == 122.5 and det.flat == 0  # 122.5 > 120 + 1.2: a rise
    copy = PeakDetector(plateau=3, tolerance=0.01)
    copy.load_state_dict(det.state_dict())
    assert [copy.update(s, v) for s, v in [(50, 123.0), (60, 122.0), (70, 123.6)]] == [False, False, True]
    assert (copy.peak_step, copy.reason) == (40, "plateau")


def test_rr_schedules() -> None:
    assert RRSchedule.parse("always").factor(0, False) == 1.0
    sched = RRSchedule.parse("from_step:5")
    assert [sched.factor(s, False) for s in (4, 5)] == [0.0, 1.0]
    warm = RRSchedule.parse("warmup:4")
    assert [warm.factor(s, False) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    peak = RRSchedule.parse("after_peak")
    assert (peak.factor(100, False), peak.factor(100, True)) == (0.0, 1.0)
    assert str(sched) == "from_step:5"


def test_alignment_uniformity_match_direct_formulas() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(20, 8), torch.randn(20, 8)
    xn, yn = F.normalize(x.double(), dim=1), F.normalize(y.double(), dim=1)
    assert alignment(x, y) == pytest.approx(float(((xn - yn) ** 2).sum(1).mean()))
    pairs = [math.exp(-2 * float(((xn[i] - xn[j]) ** 2).sum())) for i in range(20) for j in range(i + 1, 20)]
    assert uniformity(x) == pytest.approx(math.log(np.mean(pairs)))
    # identical views align perfectly
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)
