"""One tiny real-Ray sweep logged to MLflow (a local file store) and W&B (offline) at once, and read back with each
tracker's own reader; TensorBoard's EventAccumulator reads the same per-step scalars from Tune's event files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from support import ROOT, SWEEP, run_command

from rayjobs.layout import WANDB_DIR, meta_dir

pytestmark = pytest.mark.ray
STEPS = [0, 2]  # --max-steps 2 --eval-every 2
SERIES = ("stsb_dev", "probe/energy_rank_99", "probe/erank_vne", "alignment", "uniformity", "loss/cl", "loss/rr")
LOSSES = ("loss/cl", "loss/rr")  # means over the steps since the last evaluation: none at step 0


def expected_steps(key: str) -> list[int]:
    return STEPS[1:] if key in LOSSES else STEPS


@pytest.fixture(scope="module")
def sweep(tiny_model_dir, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("trackers")
    ray_tmp = Path(f"/tmp/rt15_{os.getpid()}")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    args = [
        *SWEEP,
        "--preset",
        "smoke",
        "--methods",
        "simcse",
        "--rr-coefs",
        "0",
        "0.1",
        "--seeds",
        "0",
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--set",
        "probe_size=64",
        "--set",
        "batch_size=8",
        "--set",
        "final_tasks=[stsb]",
        "--name",
        "tracked",
        "--storage-path",
        str(base / "ray"),
        "--output-dir",
        str(base / "out"),
        "--address",
        "local",
        "--mlflow",
        f"file:{base / 'mlruns'}",
        "--wandb",
        "rankcse-test",
    ]
    try:
        proc = run_command(args, 2400, env=env, cwd=ROOT)
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
    return {"proc": proc, "base": base, "exp": base / "ray" / "tracked", "out": base / "out"}


def test_the_sweep_reports_both_trackers(sweep):
    proc = sweep["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mlflow: experiment 'tracked'" in proc.stdout and "wandb: project 'rankcse-test'" in proc.stdout


def test_mlflow_has_one_run_per_trial_with_the_cell_and_every_evaluation(sweep, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{sweep['base'] / 'mlruns'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tracked"])
    parent = runs[runs["tags.rankcse.role"] == "sweep"]
    trials = runs[runs["tags.rankcse.role"] != "sweep"]
    assert len(parent) == 1 and len(trials) == 2
    assert sorted(trials["params.rr_coef"]) == ["0.0", "0.1"] and set(trials["params.method"]) == {"simcse"}
    assert set(trials["params.seed"]) == {"0"} and set(trials["params.batch_size"]) == {"8"}  # full config too
    assert (trials["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    client = MlflowClient(tracking_uri=uri)
    steps = pd.read_parquet(sweep["out"] / "steps.parquet")
    for _, run in trials.iterrows():
        for key in SERIES:
            history = client.get_metric_history(run["run_id"], key)
            assert [m.step for m in history] == expected_steps(key), key
        cell = steps[(steps["rr_coef"] == float(run["params.rr_coef"]))].sort_values("step")
        dev = [m.value for m in client.get_metric_history(run["run_id"], "stsb_dev")]
        assert dev == pytest.approx(cell["stsb_dev"].tolist(), abs=1e-9)  # the same numbers as the sweep's own tables
        assert len(client.get_metric_history(run["run_id"], "final/stsb")) == 1
    artifacts = {a.path for a in client.list_artifacts(parent["run_id"].iloc[0])}
    assert {"report.md", "trials.parquet", "steps.parquet", "summary.parquet"} <= artifacts


def test_wandb_offline_runs_hold_the_same_history(sweep):
    folders = sorted((meta_dir(sweep["exp"]) / WANDB_DIR).glob("offline-run-*"))
    assert len(folders) == 3  # two trials and the sweep's summary run
    histories = {}
    for folder in folders:
        records = _wandb_records(folder)
        if records["config"].get("method") is None:
            continue  # the summary run
        histories[records["config"]["rr_coef"]] = records["history"]
        assert records["config"]["batch_size"] == 8 and records["config"]["seed"] == 0
    assert sorted(histories) == [0.0, 0.1]
    steps = pd.read_parquet(sweep["out"] / "steps.parquet")
    for coef, history in histories.items():
        evals = [h for h in history if "stsb_dev" in h]
        assert [h["step"] for h in evals] == STEPS
        expected = steps[steps["rr_coef"] == coef].sort_values("step")["stsb_dev"].tolist()
        assert [h["stsb_dev"] for h in evals] == pytest.approx(expected, abs=1e-9)
        assert all(key in evals[-1] for key in SERIES)


def test_tensorboard_reads_the_per_step_scalars_of_a_trial(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = next(p for p in sweep["exp"].iterdir() if p.is_dir() and p.name.endswith("_seed0") and "rr0.1" in p.name)
    acc = EventAccumulator(str(trial))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for key in SERIES:
        tag = next(t for t in tags if t.endswith(key))  # Tune prefixes "ray/tune/"
        assert len(acc.Scalars(tag)) >= len(expected_steps(key)), key
    steps = pd.read_parquet(sweep["out"] / "steps.parquet")
    expected = steps[steps["rr_coef"] == 0.1].sort_values("step")["stsb_dev"].tolist()
    dev = [e.value for e in acc.Scalars(next(t for t in tags if t.endswith("/stsb_dev")))]
    assert dev == pytest.approx(expected, abs=1e-6)  # TensorBoard stores float32


def _wandb_log_chunks(path: Path) -> list[bytes]:
    """Records of a W&B transaction log (``.wandb``): a 7-byte file header, then LevelDB-log chunks in 32 KiB blocks."""
    data, block, pos, out, partial = path.read_bytes(), 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):  # FULL or LAST
            out.append(partial)
    return out


def _wandb_records(folder: Path) -> dict:
    """Config and history rows of an offline W&B run, parsed from its transaction log with wandb's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2

    config, history = {}, []
    for data in _wandb_log_chunks(next(folder.glob("*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        updates = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        for item in updates:
            config[item.key] = json.loads(item.value_json)
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return {"config": config, "history": history}
