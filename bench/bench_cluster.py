"""The rehearsal cluster's costs: start, autoscaler scale-up, and a sweep on 2 fake GPU nodes against one local node.

    python bench/bench_cluster.py                     # 4 trials on a tiny in-process BERT (a few minutes)
    python bench/bench_cluster.py --steps 200 --seeds 3

Runs, in one go and as a user would (subprocesses): ``python -m rayjobs.local_cluster up`` (its own state
folder), the sweep on it with ``--gpus-per-trial 0.5 --allow-cpu-on-gpu`` (the autoscaler starts from 0
workers), ``down``; then the same trials with ``--address local``. Prints: time of ``up``, time from ``up``
to the first and second worker node alive and to the first trial's first report, and both sweeps' wall
times. On a machine with few cores the fake nodes share its CPUs, so the cluster is not faster here; the
numbers say what the cluster path itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sweep import tiny_model  # noqa: E402

from rayjobs import local_cluster  # noqa: E402


def _first_report(exp: Path) -> bool:
    return any((d / "result.json").is_file() and (d / "result.json").stat().st_size > 0 for d in exp.glob("*_seed*"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", type=int, default=2, help="seeds per RR coefficient (2 coefficients): 2 -> 4 trials")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtbc", dir="/tmp"))
    env = {
        **os.environ,
        local_cluster.DIR_ENV: str(work / "lc"),
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    os.environ[local_cluster.DIR_ENV] = env[local_cluster.DIR_ENV]
    model = tiny_model(work / "tiny")
    common = [
        "--preset",
        "smoke",
        "--model",
        model,
        "--methods",
        "simcse",
        "--rr-coefs",
        "0",
        "0.1",
        "--num-seeds",
        str(args.seeds),
        "--max-steps",
        str(args.steps),
        "--eval-every",
        str(max(1, args.steps // 4)),
        "--set",
        "probe_size=64",
        "--set",
        "final_tasks=[stsb]",
        "--set",
        "batch_size=8",
        "--storage-path",
        str(work / "ray"),
        "--no-aggregate",
    ]
    sweep = [sys.executable, str(ROOT / "rayjobs" / "sweep.py")]
    rows: list[tuple[str, float]] = []
    try:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "rayjobs.local_cluster", "up"], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        rows.append(("up (head node ready)", time.monotonic() - t0))
        state = json.loads((work / "lc" / local_cluster.STATE_FILE).read_text())
        start = time.monotonic()
        driver = subprocess.Popen(
            [*sweep, *common, "--name", "cluster", "--address", state["address"], "--gpus-per-trial", "0.5", "--allow-cpu-on-gpu"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        marks: dict[str, float] = {}
        while driver.poll() is None:
            now = time.monotonic() - t0
            nodes = len(local_cluster.worker_nodes(state))
            if nodes >= 1:
                marks.setdefault("up -> 1st worker node alive (autoscaler, from 0)", now)
            if nodes >= 2:
                marks.setdefault("up -> 2nd worker node alive", now)
            if _first_report(work / "ray" / "cluster"):
                marks.setdefault("up -> first trial running (first report)", now)
            time.sleep(0.2)
        cluster_wall = time.monotonic() - start
        if driver.returncode != 0:
            raise SystemExit(f"the cluster sweep failed (exit {driver.returncode})")
        rows += sorted(marks.items(), key=lambda kv: kv[1])
        rows.append((f"sweep on 2 fake nodes ({2 * args.seeds} trials x {{CPU 1, GPU 0.5}})", cluster_wall))
        t1 = time.monotonic()
        stopped = local_cluster.down()
        rows.append((f"down ({len(stopped)} processes)", time.monotonic() - t1))
        t2 = time.monotonic()
        subprocess.run([*sweep, *common, "--name", "single", "--address", "local"], env=env, cwd=ROOT, check=True, capture_output=True)
        rows.append((f"the same sweep on one local node (--address local, {os.cpu_count()} CPUs)", time.monotonic() - t2))
    finally:
        local_cluster.down()
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.1f}")


if __name__ == "__main__":
    main()
