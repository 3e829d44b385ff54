"""End to end on the real offline default model (packaged all-MiniLM-L6-v2): training and evaluation."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from support import read_jsonl, run_command, untimed

from rankcse.config import TrainConfig
from rankcse.train import run

pytestmark = pytest.mark.slow


def _cfg(**overrides) -> TrainConfig:
    values = dict(batch_size=16, max_steps=20, eval_every=10, probe_size=256, final_tasks=[], log_every=100, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("default_model")
    off = run(_cfg(final_tasks=["stsb"]), root / "rr_off")
    on = run(_cfg(rr_coef=1.0), root / "rr_on")
    again = run(_cfg(final_tasks=["stsb"]), root / "rr_off_again")
    return off, on, again


def test_twenty_steps_write_metrics_and_final(runs) -> None:
    off, _, _ = runs
    records = read_jsonl(off.output_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 10, 20]
    assert len(read_jsonl(off.output_dir / "train_log.jsonl")) == 20
    for r in records:
        assert 0 < r["probe/energy_rank_99"] <= 384
        assert 1 <= r["probe/erank_vne"] <= 384
        assert -1 <= r["stsb_dev"] <= 1
    final = json.loads((off.output_dir / "final.json").read_text())
    assert final["checkpoint"] == "best" and 0.5 < final["stsb"] <= 1
    assert (off.output_dir / "best" / "model.safetensors").is_file()


def test_rr_lowers_batch_effective_rank(runs) -> None:
    off, on, _ = runs
    rank_off = np.mean([r["batch/erank_vne"] for r in read_jsonl(off.output_dir / "train_log.jsonl")[10:]])
    rank_on = np.mean([r["batch/erank_vne"] for r in read_jsonl(on.output_dir / "train_log.jsonl")[10:]])
    assert rank_on < rank_off
    # the logged RR term is the coefficient times the entropy of the batch
    last = read_jsonl(on.output_dir / "train_log.jsonl")[-1]
    assert last["loss/rr"] == pytest.approx(1.0 * last["rr/entropy"])


def test_same_seed_gives_identical_metrics(runs) -> None:
    off, _, again = runs
    assert untimed(read_jsonl(off.output_dir / "metrics.jsonl")) == untimed(read_jsonl(again.output_dir / "metrics.jsonl"))
    assert read_jsonl(off.output_dir / "train_log.jsonl") == read_jsonl(again.output_dir / "train_log.jsonl")


def test_eval_cli_json_on_a_checkpoint_and_the_default_model(runs) -> None:
    off, _, _ = runs
    cmd = [sys.executable, "-m", "rankcse", "eval", "--json", "--tasks", "sts13", "stsb"]
    proc = run_command(cmd + ["--model", str(off.output_dir / "best")], 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = json.loads(proc.stdout)
    assert ckpt["representation"] == "cls_before_pooler"
    final = json.loads((off.output_dir / "final.json").read_text())
    assert ckpt["stsb"] == pytest.approx(final["stsb"], abs=1e-6)
    proc = run_command(cmd + ["--pooler", "mean"], 300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = json.loads(proc.stdout)
    assert set(plain) >= {"sts13", "stsb", "avg"} and plain["representation"] == "mean"
    assert plain["avg"] == pytest.approx((plain["sts13"] + plain["stsb"]) / 2)
