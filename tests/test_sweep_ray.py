"""The sweep on a real local Ray, run as users run it (``python rayjobs/sweep.py``): end to end on the default model,
an injected fault, and a driver killed mid-sweep then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import ROOT, SWEEP, run_command, scaled

from rayjobs.analysis.schema import check_table
from rayjobs.layout import BACKUP_DIR, meta_dir, spec_path
from rayjobs.ray_compat import EXPERIMENT_STATE_PREFIX, experiment_state_files

TABLES = ("steps", "trials", "summary", "correlations")
pytestmark = pytest.mark.ray


def run_sweep(*args: str, timeout: float = 1000) -> subprocess.CompletedProcess:
    """The sweep as a user runs it; ``timeout`` is about 3x the smoke fixture's 320 s on an idle 2-core machine (then scaled)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return run_command([*SWEEP, *args], timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The smoke preset, shortened, on the packaged MiniLM; one grid cell made to fail on every attempt."""
    base = tmp_path_factory.mktemp("smoke")
    proc = run_sweep(
        "--preset",
        "smoke",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--set",
        "probe_size=200",
        "--set",
        "final_tasks=[stsb]",
        "--storage-path",
        str(base / "ray"),
        "--output-dir",
        str(base / "out"),
        "--address",
        "local",
        "--inject-fault",
        "method=mixcse,rr_coef=0.1,seed=1:2",
        "--max-failures",
        "1",
    )
    return {
        "proc": proc,
        "exp": base / "ray" / "smoke",
        "out": base / "out",
        "tables": {n: pd.read_parquet(base / "out" / f"{n}.parquet") for n in TABLES},
    }


def test_smoke_sweep_runs_every_trial_and_prints_where_results_are(smoke):
    proc = smoke["proc"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # one trial errored on purpose
    assert f"results: {smoke['out']}" in proc.stdout
    assert "1 of 8 trials did not complete: mixcse_rr0.1_always_seed1" in proc.stdout
    for name in (*TABLES, "report"):
        assert f"{name}" in proc.stdout
    trial_dirs = [d for d in smoke["exp"].iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(trial_dirs) == 8 and all(list(d.glob("events.out.tfevents.*")) for d in trial_dirs)  # TensorBoard logs of every trial


def test_one_row_per_trial_per_evaluation_step(smoke):
    steps, trials = smoke["tables"]["steps"], smoke["tables"]["trials"]
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert len(steps) == trials["n_evals"].sum() == 8 * 3
    for _, group in steps.groupby("trial_id"):
        assert group["step"].tolist() == [0, 2, 4]
    assert steps["probe/erank_vne"].notna().all() and steps["stsb_dev"].between(0.3, 1.0).all()
    assert set(steps.columns) >= {"loss/cl", "loss/rr", "batch/erank_vne", "alignment", "uniformity", "phase", "phase_online"}


def test_the_failing_trial_ends_errored_and_the_others_complete(smoke):
    trials = smoke["tables"]["trials"].set_index(["method", "rr_coef", "seed"])
    bad = trials.loc[("mixcse", 0.1, 1)]
    assert bad["status"] == "errored" and "InjectedFault" in bad["error"] and bad["attempts_failed"] == 2
    good = trials[trials["status"] == "completed"]
    assert len(good) == 7 and good["stsb"].between(0.5, 0.95).all() and good["best_step"].isin([2, 4]).all()
    summary = smoke["tables"]["summary"]
    stsb = summary[summary["metric"] == "stsb"].set_index(["method", "rr_coef"])["n"]
    assert stsb.to_dict() == {("mixcse", 0.0): 2, ("mixcse", 0.1): 1, ("simcse", 0.0): 2, ("simcse", 0.1): 2}
    report = (smoke["out"] / "report.md").read_text()
    assert "7 completed, 1 errored" in report and "InjectedFault" in report


def test_tables_match_the_schema_and_reaggregation_is_byte_identical(smoke, tmp_path):
    for name in TABLES:
        path = smoke["out"] / f"{name}.parquet"
        assert check_table(path) == []
        assert pq.read_table(path).num_rows == len(smoke["tables"][name])
    proc = run_command([sys.executable, "-m", "rankcse", "aggregate", str(smoke["exp"]), "--output-dir", str(tmp_path)], 300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for name in TABLES:
        assert (smoke["out"] / f"{name}.parquet").read_bytes() == (tmp_path / f"{name}.parquet").read_bytes(), name


def _finished(exp: Path) -> tuple[list[Path], list[Path]]:
    trials = sorted(p for p in exp.glob("*_seed*") if p.is_dir())
    done = [t for t in trials if (t / "run" / "final.json").is_file()]
    running = [t for t in trials if (t / "run" / "metrics.jsonl").is_file() and t not in done]
    return done, running


def test_killed_driver_resumes_without_rerunning_finished_trials(tiny_model_dir, tmp_path):
    storage = tmp_path / "ray"
    args = [
        "--preset",
        "smoke",
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "160",
        "--eval-every",
        "20",
        "--set",
        "probe_size=64",
        "--set",
        "final_tasks=[stsb]",
        "--set",
        "batch_size=8",
        "--storage-path",
        str(storage),
        "--name",
        "killed",
    ]
    exp = storage / "killed"
    driver = subprocess.Popen(
        [*SWEEP, *args, "--output-dir", str(tmp_path / "out"), "--address", "local"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + scaled(900)
    while time.monotonic() < deadline:
        done, running = _finished(exp)
        if len(done) >= 2 and running and experiment_state_files(exp):
            break
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    else:
        driver.kill()
        pytest.fail(f"no moment with finished and running trials in {scaled(900):.0f} s; trials done: {[t.name for t in done]}")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(30)
    before = {t.name: ((t / "run" / "metrics.jsonl").read_bytes(), (t / "run" / "final.json").stat().st_mtime_ns) for t in done}
    # The driver may die while Tune writes its state: simulate the worst case, an empty experiment state file.
    newest = experiment_state_files(exp)[-1]
    newest.write_text("")

    proc = run_sweep(*args, "--output-dir", str(tmp_path / "out"), "--address", "local", "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "restored experiment_state" in proc.stderr + proc.stdout  # recovered from the kept copy, not a new empty experiment
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    steps = pd.read_parquet(tmp_path / "out" / "steps.parquet")
    assert (
        len(trials) == 8
        and (trials["status"] == "completed").all()
        and trials[["method", "rr_coef", "seed"]].drop_duplicates().shape[0] == 8
    )
    assert len(list(exp.glob("*_seed*"))) == 8  # no trial was started twice
    assert steps.groupby("trial_id")["step"].apply(list).map(lambda s: s == list(range(0, 161, 20))).all()
    for name, (metrics, mtime) in before.items():  # finished trials were not re-run
        assert (exp / name / "run" / "metrics.jsonl").read_bytes() == metrics
        assert (exp / name / "run" / "final.json").stat().st_mtime_ns == mtime

    # A broken state with no kept copy is refused, never silently replaced by an empty experiment.
    experiment_state_files(exp)[-1].write_text("")
    for extra in experiment_state_files(exp):
        extra.write_text("")
    for kept in (meta_dir(exp) / BACKUP_DIR).glob(f"{EXPERIMENT_STATE_PREFIX}-*"):
        kept.unlink()
    refused = run_sweep(*args, "--resume", "--address", "local")
    assert refused.returncode == 2 and "cannot resume" in refused.stderr and "--overwrite" in refused.stderr
    assert json.loads(spec_path(exp).read_text())["spec"]["name"] == "killed"


def test_a_gpu_request_without_gpus_fails_at_once(tmp_path):
    started = time.monotonic()
    proc = run_sweep("--preset", "smoke", "--gpus-per-trial", "1", "--storage-path", str(tmp_path), "--address", "local", timeout=300)
    assert proc.returncode == 2 and time.monotonic() - started < scaled(90), proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: error: a trial asks for 1 CPU, 1 GPU") and "0 GPU" in last and "--gpus-per-trial 0" in last
