"""The analysis side (``rayjobs.analysis``) imports neither Ray nor torch (issue 22): a fresh interpreter with both blocked
imports every module of it and aggregates a small experiment, figures and report included, so the results of a sweep can
be read on a laptop without either installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from support import run_command
from test_aggregate_synthetic import SCORES, curves, write_tune_trial

from rayjobs.layout import spec_path

#: Run first in the child: any import of torch or ray (or a submodule) raises, naming the module.
BLOCKER = textwrap.dedent(
    """
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "ray"):
                raise ImportError(f"blocked import of {name}")

    sys.meta_path.insert(0, Blocked())
    """
)

IMPORT_ALL = textwrap.dedent(
    """
    import importlib, pkgutil
    import rayjobs.analysis, rayjobs.layout, rayjobs.aggregate
    for info in pkgutil.iter_modules(rayjobs.analysis.__path__, "rayjobs.analysis."):
        importlib.import_module(info.name)
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-c", BLOCKER + code], 600)


def _small_experiment(root: Path) -> Path:
    """Two methods x RR off/on x two seeds, each with a full history and final scores (the synthetic tests' trials)."""
    spec_path(root).parent.mkdir(parents=True)
    grid = {"method": [], "rr_coef": [], "rr_schedule": [], "seed": []}
    spec_path(root).write_text(json.dumps({"spec": {"name": "small", "grid": grid, "train": {"model": "default"}}}))
    n = 0
    for method in ("simcse", "mixcse"):
        for rr in (0.0, 0.1):
            for seed in range(2):
                rank, dev = curves(60 + 10 * seed, 150 - 10 * seed, seed, rr)
                final = {k: 0.7 + 0.01 * seed + 0.001 * i for i, k in enumerate(SCORES)}
                final["avg"] = float(np.mean([final[k] for k in SCORES]))
                cell = {"method": method, "rr_coef": rr, "rr_schedule": "always", "seed": seed}
                write_tune_trial(root, f"small_{n:05d}", cell, rank, dev, final)
                n += 1
    return root


def test_the_blocker_blocks_the_sweep_side():
    """The check can fail: the sweep side does need Ray, and the blocked child says so."""
    proc = _run("import rayjobs.tuning.trainable")
    assert proc.returncode != 0
    assert "blocked import of ray" in proc.stderr


def test_analysis_imports_and_aggregates_without_torch_or_ray(tmp_path):
    exp = _small_experiment(tmp_path / "exp")
    out = tmp_path / "out"
    code = IMPORT_ALL + textwrap.dedent(
        f"""
        from rayjobs.analysis.aggregate import aggregate
        result = aggregate({str(exp)!r}, {str(out)!r}, window=1, n_boot=50)
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "ray"}})
        print("loaded:", loaded, "counts:", result.counts)
        """
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: []" in proc.stdout and "'completed': 8" in proc.stdout, proc.stdout
    assert {"steps.parquet", "trials.parquet", "summary.parquet", "report.md"} <= {p.name for p in out.iterdir()}
