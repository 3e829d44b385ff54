"""The gpu tier, for a machine with CUDA: bf16 autocast against fp32 on the tiny BERT, and two 0.5-GPU trials at once on one GPU.

Skipped, with the reason, where torch sees no CUDA device (tests/conftest.py). Run on a GPU machine:
``python -m pytest -m gpu``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from support import ROOT, SWEEP, read_jsonl, run_command, tiny_config

from rankcse.train import run

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


def test_a_bf16_autocast_step_is_finite_and_close_to_fp32(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    logs = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_config(tiny_model_dir, tiny_corpus, device=DEVICE, precision=precision, batch_size=16, max_steps=4, eval_every=4)
        run(cfg, tmp_path / precision)
        logs[precision] = read_jsonl(tmp_path / precision / "train_log.jsonl")
    fp32, bf16 = logs["fp32"], logs["bf16"]
    assert [r["step"] for r in bf16] == [r["step"] for r in fp32] == [1, 2, 3, 4]
    for a, b in zip(fp32, bf16):
        assert all(math.isfinite(b[k]) for k in ("loss/total", "loss/cl", "rr/entropy", "batch/erank_vne")), b
        # the same weights, batch and dropout masks: only the arithmetic differs (bf16 keeps ~3 significant digits)
        assert b["loss/total"] == pytest.approx(a["loss/total"], rel=0.03, abs=0.05), (b["step"], a["loss/total"], b["loss/total"])
    assert bf16[0]["loss/total"] != fp32[0]["loss/total"]  # autocast ran: fp32 would give the very same number
    provenance = json.loads((tmp_path / "bf16" / "provenance.json").read_text())
    assert provenance["device"].startswith("cuda")


def _trial_interval(trial: Path) -> tuple[float, float]:
    """(first, last) report time of a Tune trial (its result.json rows)."""
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
    return rows[0]["timestamp"], rows[-1]["timestamp"]


def test_two_half_gpu_trials_train_at_once_on_one_gpu(tiny_model_dir, tmp_path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(tmp_path / "rt"), "RAY_AUTH_MODE": "disabled"}
    env["CUDA_VISIBLE_DEVICES"] = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]  # a local Ray of exactly one GPU
    env.pop("RAY_ADDRESS", None)
    storage, out = tmp_path / "ray", tmp_path / "out"
    args = [
        *SWEEP,
        "--preset",
        "smoke",
        "--model",
        str(tiny_model_dir),
        "--methods",
        "simcse",
        "--rr-coefs",
        "0",
        "0.1",
        "--seeds",
        "0",
        "--max-steps",
        "1500",
        "--eval-every",
        "500",
        "--set",
        "probe_size=64",
        "--set",
        "batch_size=16",
        "--set",
        "final_tasks=[stsb]",
        "--gpus-per-trial",
        "0.5",
        "--cpus-per-trial",
        "1",
        "--name",
        "halves",
        "--storage-path",
        str(storage),
        "--output-dir",
        str(out),
        "--address",
        "local",
    ]
    proc = run_command(args, 900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "completed").all() and trials["device"].str.startswith("cuda").all()
    intervals = [_trial_interval(t) for t in sorted(storage.joinpath("halves").glob("*_seed0"))]
    assert len(intervals) == 2
    (start_a, end_a), (start_b, end_b) = intervals
    assert max(start_a, start_b) < min(end_a, end_b), f"the two 0.5-GPU trials did not overlap: {intervals}"  # at once, one GPU
