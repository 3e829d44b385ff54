"""The cluster path on a real (fake_multinode) autoscaling Ray cluster: `rayjobs.local_cluster` up/down beside another Ray,
a sweep whose autoscaler starts from 0 workers, two 0.5-GPU trials per fake GPU node, one worker node killed mid-sweep,
the missing-CUDA check, and the dashboard that the [test] extra's ray[default] brings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import ROOT, SWEEP, run_command, scaled, wait_output

from rayjobs.cluster import local_cluster

pytestmark = pytest.mark.cluster
#: Long enough that, on an idle machine too, both trials of a node are between their first checkpoint and
#: MAX_STEPS - 3 * EVAL_EVERY at the same time for several seconds (150 steps left a window of ~5 s, which was missed).
MAX_STEPS, EVAL_EVERY = 240, 20


def _env(folder: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "RANKCSE_LOCAL_CLUSTER_DIR": str(folder),
        "RAY_AUTH_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        # Ray lowers its workers' priority by 15 (to 19 under a niced test): on a busy machine they then barely run.
        "RAY_worker_niceness": "0",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _lc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rayjobs.local_cluster", *args]
    return run_command(cmd, 420, env=env, cwd=ROOT)  # up: 2 tries x 120 s at most


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A bystander Ray (ray.init in its own session) and the local cluster, 2 workers x {CPU: 2, GPU: 1}, started with `up`."""
    folder = Path(tempfile.mkdtemp(prefix="rtlc", dir="/tmp"))  # short: Ray's socket paths live under it
    env = _env(folder)
    by_env = {**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rtby", dir="/tmp")}
    code = "import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False); print('ready', flush=True); sys.stdin.read()"
    bystander = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=by_env,
        start_new_session=True,
    )
    assert bystander.stdout.readline().strip() == "ready"
    started = time.monotonic()
    up = _lc(env, "up", "--max-workers", "2", "--cpus-per-worker", "2", "--gpus-per-worker", "1")
    info = {"env": env, "folder": folder, "up": up, "up_seconds": time.monotonic() - started, "bystander": bystander}
    yield info
    _lc(env, "down")
    bystander.stdin.close()  # the bystander's ray.init shuts its Ray down on exit
    bystander.wait(60)


def _state(folder: Path) -> dict:
    return json.loads((folder / local_cluster.STATE_FILE).read_text())


def test_up_prints_the_address_and_twice_says_already_up(cluster):
    up = cluster["up"]
    assert up.returncode == 0, up.stdout + up.stderr
    state = _state(cluster["folder"])
    assert f"address: {state['address']}" in up.stdout and "--gpus-per-trial 0.5 --allow-cpu-on-gpu" in up.stdout
    os.environ[local_cluster.DIR_ENV] = str(cluster["folder"])
    try:
        assert local_cluster.worker_nodes(state) == {}  # the autoscaler starts from 0 workers
    finally:
        del os.environ[local_cluster.DIR_ENV]
    again = _lc(cluster["env"], "up")
    assert again.returncode == 0 and "already up" in again.stdout and state["address"] in again.stdout
    assert _state(cluster["folder"])["sid"] == state["sid"]


def test_the_dashboard_serves_and_runs_a_job(cluster):
    """The [test] extra brings ray[default]: the head then serves the dashboard, and `ray job submit` runs a job through it."""
    state = _state(cluster["folder"])
    assert state["dashboard"], f"the cluster started without its dashboard ({state.get('dashboard_missing')}); pip install -e '.[test]'"
    with urllib.request.urlopen(f"{state['dashboard']}/api/version", timeout=scaled(30)) as response:
        assert json.loads(response.read())["ray_version"].startswith("2.60")
    job = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", state["dashboard"], "--"]
    proc = run_command([*job, sys.executable, "-c", "print('job ran', 6 * 7)"], 300, env=cluster["env"], cwd=ROOT)
    assert proc.returncode == 0 and "job ran 42" in proc.stdout and "succeeded" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


def _trials(exp: Path) -> dict[str, list[dict]]:
    return {d.name: _rows(d) for d in sorted(exp.glob("*_seed*")) if d.is_dir()}


def _sweep_args(model: Path, storage: Path, name: str, out: Path) -> list[str]:
    return [
        "--preset",
        "smoke",
        "--model",
        str(model),
        "--methods",
        "simcse",
        "--rr-coefs",
        "0",
        "0.1",
        "--seeds",
        "0",
        "1",
        "--max-steps",
        str(MAX_STEPS),
        "--eval-every",
        str(EVAL_EVERY),
        "--set",
        "probe_size=64",
        "--set",
        "final_tasks=[stsb]",
        "--set",
        "batch_size=8",
        "--storage-path",
        str(storage),
        "--name",
        name,
        "--output-dir",
        str(out),
    ]


def test_node_loss_resumes_trials_on_another_node_with_the_same_numbers(cluster, tiny_model_dir, tmp_path):
    env, state = cluster["env"], _state(cluster["folder"])
    exp = tmp_path / "ray" / "nodeloss"
    # The same 4 cells uninterrupted on one local node (CPU), run alongside: the reference numbers.
    reference = subprocess.Popen(
        [*SWEEP, *_sweep_args(tiny_model_dir, tmp_path / "ray", "single", tmp_path / "single"), "--address", "local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    driver = subprocess.Popen(
        [
            *SWEEP,
            *_sweep_args(tiny_model_dir, tmp_path / "ray", "nodeloss", tmp_path / "out"),
            "--address",
            state["address"],
            "--gpus-per-trial",
            "0.5",
            "--allow-cpu-on-gpu",
            "--max-failures",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    os.environ[local_cluster.DIR_ENV] = str(cluster["folder"])
    try:
        victim, deadline = None, time.monotonic() + scaled(420)
        while victim is None and time.monotonic() < deadline:
            assert driver.poll() is None, "the sweep ended before a node could be killed:\n" + driver.stdout.read()[-3000:]
            by_node: dict[str, list[str]] = {}
            for name, rows in _trials(exp).items():
                evals = [r for r in rows if r.get("kind") == "eval"]
                if evals and evals[-1].get("checkpoint_dir_name") and 0 < evals[-1]["step"] <= MAX_STEPS - 3 * EVAL_EVERY:
                    by_node.setdefault(evals[-1]["node_id"], []).append(name)
            victim = next((node for node, names in by_node.items() if len(names) == 2), None)
            time.sleep(0.2)
        assert victim is not None, "no node ever ran two trials that had checkpointed"
        nodes = local_cluster.worker_nodes(state)
        assert victim in nodes and len(nodes) == 2
        for pid in nodes[victim]:  # the node's raylet and every process under it (its trials among them)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed_at = time.time()
        moved = {
            name: [r for r in rows if r.get("kind") == "eval"][-1]["step"]
            for name, rows in _trials(exp).items()
            if rows and rows[-1].get("node_id") == victim
        }
    finally:
        del os.environ[local_cluster.DIR_ENV]
    out = wait_output(driver, 900, "the node-loss sweep on the local cluster")
    assert driver.returncode == 0, out[-4000:]
    ref_out = wait_output(reference, 900, "the reference sweep on a local Ray")
    assert reference.returncode == 0, ref_out[-3000:]

    trials = _trials(exp)
    first_nodes = {name: rows[0]["node_id"] for name, rows in trials.items()}
    assert sorted(pd.Series(first_nodes).value_counts().tolist()) == [2, 2]  # Tune's records: two 0.5-GPU trials on each fake GPU node
    assert len(moved) == 2
    print(f"\nkilled node ...{victim[-5:]}: its trials and their last checkpointed step before the kill: {moved}")
    for name, last_step in moved.items():
        rows = trials[name]
        restart = next(i for i in range(1, len(rows)) if rows[i]["iterations_since_restore"] <= rows[i - 1]["iterations_since_restore"])
        after = rows[restart]
        assert after["timestamp"] >= int(killed_at) and after["step"] > 0 and after["node_id"] != victim, (name, after)
        print(f"  {name}: resumed on node ...{after['node_id'][-5:]}, first reported step after the kill {after['step']}")
    assert all(r[-1].get("kind") == "final" for r in trials.values())  # every trial completed

    steps = pd.read_parquet(tmp_path / "out" / "steps.parquet")
    trials_table = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert not steps.duplicated(["trial_id", "step"]).any()
    assert (trials_table["status"] == "completed").all() and (trials_table["device"] == "cpu").all()
    assert steps.groupby("trial_id")["step"].apply(list).map(lambda s: s == list(range(0, MAX_STEPS + 1, EVAL_EVERY))).all()
    assert "Trained on: cpu (4 trials)." in (tmp_path / "out" / "report.md").read_text()
    single = pd.read_parquet(tmp_path / "single" / "steps.parquet")
    key = ["method", "rr_coef", "seed", "step"]
    timing = [c for c in steps.columns if c.endswith("_seconds")]
    numbers = [c for c in steps.columns if c not in (*timing, *key, "trial_id", "sweep") and pd.api.types.is_float_dtype(steps[c])]
    merged = steps.merge(single, on=key, suffixes=("", "_single"))
    assert len(merged) == len(steps) == len(single) and len(numbers) > 10
    for column in numbers:
        np.testing.assert_allclose(
            merged[column].to_numpy(float), merged[f"{column}_single"].to_numpy(float), rtol=1e-9, atol=0, equal_nan=True, err_msg=column
        )
    final = ["stsb", "best_step", "best_stsb_dev"]
    single_trials = pd.read_parquet(tmp_path / "single" / "trials.parquet")
    both = trials_table.merge(single_trials, on=["method", "rr_coef", "seed"], suffixes=("", "_single"))
    for column in final:
        np.testing.assert_allclose(both[column].to_numpy(float), both[f"{column}_single"].to_numpy(float), rtol=1e-9, err_msg=column)


def test_a_fake_gpu_without_the_opt_in_fails_at_once_naming_the_cause(cluster, tiny_model_dir, tmp_path):
    state = _state(cluster["folder"])
    started = time.monotonic()
    proc = run_command(
        [
            *SWEEP,
            *_sweep_args(tiny_model_dir, tmp_path / "ray", "nocuda", tmp_path / "out"),
            "--address",
            state["address"],
            "--gpus-per-trial",
            "0.5",
        ],
        300,
        cwd=ROOT,
        env=cluster["env"],
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: error: a trial holds 0.5 GPU from Ray (CUDA_VISIBLE_DEVICES=0)")
    assert "sees no CUDA" in last and "--allow-cpu-on-gpu" in last
    assert elapsed < 120 and not (tmp_path / "ray" / "nocuda").exists()  # before any trial ran


def test_down_stops_exactly_its_own_processes(cluster):
    state = _state(cluster["folder"])
    bystander = local_cluster.session_pids(cluster["bystander"].pid)
    ours = local_cluster.session_pids(state["sid"])
    assert len(bystander) > 3 and len(ours) > 3
    down = _lc(cluster["env"], "down")
    assert down.returncode == 0 and "local cluster: stopped" in down.stdout, down.stdout + down.stderr
    assert local_cluster.session_pids(state["sid"]) == []
    assert all(local_cluster._proc_stat(pid) is not None for pid in bystander)  # the other Ray is untouched
    again = _lc(cluster["env"], "down")
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    status = _lc(cluster["env"], "status")
    assert status.returncode == 1 and "not running" in status.stdout
