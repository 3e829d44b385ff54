"""SIGKILL at random points of `rankcse train --overwrite` and `rankcse export --overwrite` (issue 23): the previous
result or the new one is whole afterwards, never neither. bench/kill_overwrite.py runs the same with 20 kills each."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from kill_overwrite import kill_export, kill_train  # noqa: E402
from reliability_campaign import Scene  # noqa: E402


@pytest.mark.slow
def test_sigkill_during_overwrite_leaves_the_previous_or_the_new_result_whole(tmp_path) -> None:
    scene = Scene(tmp_path, ROOT)
    rng = random.Random(1)
    for kill in (kill_train, kill_export):
        counts = kill(scene, 3, rng)
        assert counts["NEITHER"] == 0 and counts["previous"] + counts["new"] == 3, (kill.__name__, dict(counts))
