"""Bad input and faults on the Ray side (issue 23): `rankcse aggregate`, `rayjobs.local_cluster` and the sweep's flags.

Every bad input ends with one line and exit status 2 and leaves the files byte-identical; an aggregation replaces its
output folder whole (a SIGKILL at any point leaves the previous result or the new one); plain runs are duplicates
only when their whole config is the same; the local cluster trusts state.json only when it names its own Ray head.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rankcse.cli import main
from rankcse.folder_swap import recover
from rayjobs.analysis.aggregate import aggregate
from rayjobs.cluster import local_cluster
from rayjobs.tuning import driver as sweep

ROOT = Path(__file__).resolve().parent.parent
STEPS = list(range(0, 110, 10))


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_lines(capsys) -> list[str]:
    """What a command printed on stderr, less log lines."""
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and not re.match(r"\d\d:\d\d:\d\d [IWE] ", line)]


def _records(peak: int, best: int, shift: float) -> list[dict]:
    rows = []
    for s in STEPS:
        rank = 20 + 0.3 * min(s, peak) - 0.12 * max(0, s - peak) - shift
        dev = 0.70 + 0.0008 * min(s, best) - 0.0005 * max(0, s - best) + 0.001 * shift
        rows.append({"step": s, "stsb_dev": dev, "probe/erank_vne": rank, "probe/energy_rank_99": 2 * rank})
    return rows


def _final(shift: float) -> dict:
    scores = {k: 0.70 + 0.01 * shift + 0.001 * i for i, k in enumerate(("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr"))}
    return {**scores, "avg": sum(scores.values()) / len(scores), "steps": STEPS[-1]}


def _config(**overrides) -> dict:
    cfg = {"method": "simcse", "model": "default", "batch_size": 8, "learning_rate": 3e-5, "max_steps": STEPS[-1], "eval_every": 10}
    cfg.update({"seed": 0, "rr_coef": 0.0, "rr_schedule": "always", "num_threads": 1, "log_every": 10, "device": "cpu"})
    cfg.update(overrides)
    return cfg


def write_sweep(root: Path, seeds: int = 3) -> Path:
    """A sweep's experiment folder (Tune layout, completed trials): simcse x RR 0 / 0.1 always / 0.1 after_peak x seeds."""
    (root / ".rankcse").mkdir(parents=True)
    grid = {"method": ["simcse"], "rr_coef": [0.0, 0.1], "rr_schedule": ["always", "after_peak"], "seed": list(range(seeds))}
    (root / ".rankcse" / "sweep.json").write_text(json.dumps({"spec": {"name": root.name, "grid": grid, "train": {}}}))
    n = 0
    for rr, schedule in ((0.0, "always"), (0.1, "always"), (0.1, "after_peak")):
        for seed in range(seeds):
            cell = {"method": "simcse", "rr_coef": rr, "rr_schedule": schedule, "seed": seed}
            folder = root / f"t{n:04d}_{n:05d}_simcse_rr{rr:g}_{schedule}_seed{seed}"
            (folder / "run").mkdir(parents=True)
            (folder / "params.json").write_text(json.dumps(cell))
            shift = 30 * rr + seed + (0.5 if schedule == "after_peak" else 0)
            records = _records(40 + 10 * seed, 80 - 5 * seed, shift)
            (folder / "run" / "config.json").write_text(json.dumps(_config(**cell)))
            (folder / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (folder / "run" / "final.json").write_text(json.dumps(_final(shift)))
            (folder / "result.json").write_text(
                "".join(json.dumps({**r, "kind": "eval", "trial_id": f"t{n:04d}_{n:05d}"}) + "\n" for r in records)
            )
            n += 1
    return root


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("agg") / "sweep")


# -- aggregate: --only ----------------------------------------------------------------------------------------------


ONLY_CASES = [
    ("rr_schedule=alwyas", "no trial has rr_schedule = alwyas; its values are after_peak, always"),
    ("rr_coef=abc", "no trial has rr_coef = abc; its values are 0, 0.1"),
    ("rr_coef=0.5", "no trial has rr_coef = 0.5; its values are 0, 0.1"),
    ("seed=0,7", "no trial has seed = 7; its values are 0, 1, 2"),
    ("method=mixcse", "no trial has method = mixcse; its values are simcse"),
    ("lr_typo=1", "--only names lr_typo, which no trial has"),
]


def test_an_only_value_no_trial_has_exits_2_and_leaves_the_output_byte_identical(capsys, sweep_dir, tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["aggregate", str(sweep_dir), "--output-dir", str(out), "--n-boot", "10", "--no-figures"]
    assert main(argv) == 0
    (out / "README.md").write_text("my notes\n")
    before = _tree(out)
    capsys.readouterr()
    for only, expected in [*ONLY_CASES, ("rr_coef=0 --only rr_schedule=after_peak", "together keep no trial")]:
        rc = main([*argv, *(x for part in only.split(" --only ") for x in ("--only", part))])
        err = _error_lines(capsys)
        assert rc == 2 and len(err) == 1 and err[0].startswith("rankcse: error: ") and expected in err[0], (only, err)
        assert _tree(out) == before, f"--only {only} changed the output"
        assert not list(tmp_path.glob(".out.*")), "a staging folder was left beside the output"


# -- aggregate: the output folder is replaced whole ------------------------------------------------------------------


def test_a_new_aggregation_replaces_the_output_whole_and_keeps_the_users_files(sweep_dir, tmp_path) -> None:
    out = tmp_path / "out"
    aggregate(sweep_dir, out, n_boot=10, figures=False)
    fresh = _tree(out)
    (out / "README.md").write_text("my notes\n")
    (out / "extra").mkdir()
    (out / "extra" / "plot.py").write_text("print(1)\n")
    (out / "probing.parquet").write_bytes(b"stale table of an earlier aggregation")
    (out / "score_by_rr.png").write_bytes(b"stale figure")
    aggregate(sweep_dir, out, n_boot=10, figures=False)
    now = _tree(out)
    assert {k: v for k, v in now.items() if k in fresh} == fresh  # the same tables, byte for byte
    assert (out / "README.md").read_text() == "my notes\n" and (out / "extra" / "plot.py").read_text() == "print(1)\n"
    assert not (out / "probing.parquet").exists() and not (out / "score_by_rr.png").exists()  # stale outputs go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it


def test_a_kill_between_the_fallback_renames_is_undone_by_the_next_run(sweep_dir, tmp_path) -> None:
    out = tmp_path / "out"
    aggregate(sweep_dir, out, n_boot=10, figures=False, only={"seed": ["0"]})
    previous = _tree(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs: the aggregation that was killed
    aside = tmp_path / f".out.old-{dead.pid}"
    os.rename(out, aside)  # what a kill between "move aside" and "move in" leaves
    (tmp_path / f".out.new-{dead.pid}").mkdir()
    recover(out)
    assert _tree(out) == previous and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_holding_the_experiment_is_refused(capsys, sweep_dir) -> None:
    before = _tree(sweep_dir.parent)
    rc = main(["aggregate", str(sweep_dir), "--output-dir", str(sweep_dir.parent), "--n-boot", "10", "--no-figures"])
    err = _error_lines(capsys)
    assert rc == 2 and len(err) == 1 and "holds the experiment folder" in err[0] and _tree(sweep_dir.parent) == before


# -- aggregate: plain runs are duplicates only when their whole config is the same ------------------------------------


def test_plain_runs_that_differ_in_a_setting_are_kept_apart(tmp_path) -> None:
    runs = tmp_path / "runs"
    for name, cfg, shift in (
        ("bs8", _config(), 0.0),
        ("bs16", _config(batch_size=16), 1.0),
        ("lr1e-4", _config(learning_rate=1e-4), 2.0),
        ("bs8-again", _config(num_threads=4, log_every=1), 0.5),  # the same run as bs8: only bookkeeping differs
    ):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps(cfg))
        (runs / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(40, 80, shift)))
        (runs / name / "final.json").write_text(json.dumps(_final(shift)))
    result = aggregate(runs, tmp_path / "out", n_boot=10, figures=False)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet").set_index("path")
    assert result.counts["completed"] == 3 and result.counts["duplicate"] == 1
    assert sorted(trials.index[trials["status"] == "completed"]) == ["bs16", "bs8", "lr1e-4"]
    # the settings that tell the runs apart are columns, and each run is its own condition
    assert trials.loc["bs16", "batch_size"] == 16 and trials.loc["lr1e-4", "learning_rate"] == pytest.approx(1e-4)
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet")
    avg = summary[summary["metric"] == "avg"]
    assert len(avg) == 3 and set(avg["n"]) == {1}


# -- local cluster: state.json is checked, never trusted --------------------------------------------------------------


@pytest.fixture
def lc_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = Path(f"/tmp/rc23t-{os.getpid()}-{random.randrange(1 << 30):x}")  # short: Ray's socket paths
    folder.mkdir()
    monkeypatch.setenv(local_cluster.DIR_ENV, str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("text", ["[]", "{}", '{"sid": "abc"}', '{"sid": 12', '{"sid": true, "address": "x"}'])
def test_a_bad_state_file_gets_one_line_and_no_traceback(text, lc_dir, capsys) -> None:
    for command, rc in (("status", 1), ("address", 1), ("down", 0)):
        (lc_dir / "state.json").write_text(text)
        assert local_cluster.main([command]) == rc
        out, err = capsys.readouterr()
        lines = [ln for ln in (out + err).splitlines() if ln.strip()]
        assert len(lines) == 1 and "local cluster: not running (" in lines[0] and "ignored)" in lines[0], (command, lines)


def test_a_state_naming_an_unrelated_live_session_is_neither_reported_nor_killed(lc_dir, capsys) -> None:
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        state = {"sid": other.pid, "address": "127.0.0.1:1", "dashboard": "http://127.0.0.1:2", "auth_mode": "disabled"}
        state.update({"ray_tmpdir": str(lc_dir / "ray"), "max_workers": 1, "worker": {"CPU": 1.0, "GPU": 0.0}})
        for command, rc in (("status", 1), ("down", 0)):
            (lc_dir / "state.json").write_text(json.dumps(state))
            assert local_cluster.main([command]) == rc
            out = capsys.readouterr().out
            assert f"names pid {other.pid}, which is not this cluster's Ray head" in out, out
            assert other.poll() is None, f"{command} killed an unrelated process"
    finally:
        other.kill()
        other.wait()


def _lc(folder: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, local_cluster.DIR_ENV: str(folder), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rayjobs.local_cluster", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.cluster
def test_a_state_corrupted_while_the_cluster_runs_finds_its_own_head(lc_dir) -> None:
    tmpdir = str(lc_dir / "ray")
    (lc_dir / "state.json").write_text("[]")  # a stale, damaged state: up starts anyway
    up = _lc(lc_dir, "up", "--max-workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "0")
    try:
        assert up.returncode == 0 and "local cluster: up" in up.stdout, up.stdout + up.stderr
        head = json.loads((lc_dir / "state.json").read_text())["sid"]
        address = json.loads((lc_dir / "state.json").read_text())["address"]
        assert local_cluster.is_own_head(head, tmpdir) and local_cluster.find_head(tmpdir) == head
        running = local_cluster.cluster_pids(tmpdir)
        assert head in running and len(running) >= 3
        for damage in ('{"sid": 12', "{}", json.dumps({"sid": os.getpid(), "address": "127.0.0.1:1"})):
            (lc_dir / "state.json").write_text(damage)
            status = _lc(lc_dir, "address")
            assert status.returncode == 0 and status.stdout.strip() == address, status.stdout + status.stderr
            assert "found the running head by its RAY_TMPDIR (pid" in status.stderr
            assert json.loads((lc_dir / "state.json").read_text())["sid"] == head  # the state is written again
        (lc_dir / "state.json").write_text('{"sid": 12')
        again = _lc(lc_dir, "up")
        assert again.returncode == 0 and "already up" in again.stdout
        heads = [p for p in local_cluster.cluster_pids(tmpdir) if local_cluster.is_own_head(p, tmpdir)]
        assert heads == [head], "a second cluster was started"
        (lc_dir / "state.json").write_text('{"sid": 12')
        down = _lc(lc_dir, "down", timeout=120)
        assert down.returncode == 0 and "local cluster: stopped" in down.stdout, down.stdout + down.stderr
        assert local_cluster.cluster_pids(tmpdir) == [] and not (lc_dir / "state.json").exists()
    finally:
        _lc(lc_dir, "down", timeout=120)
        for pid in local_cluster.cluster_pids(tmpdir):  # only what this test started (its own RAY_TMPDIR)
            os.kill(pid, signal.SIGKILL)


# -- sweep: flags checked before Ray starts ---------------------------------------------------------------------------


def test_sweep_flags_are_checked_before_ray_starts(capsys, tmp_path, monkeypatch) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SETUP_API_KEY_HOOK", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    base = ["--preset", "smoke", "--max-steps", "2", "--num-seeds", "1", "--address", "local"]
    st = ["--storage-path", str(tmp_path / "st")]
    cases = [
        ([*base, "--dry-run", "--storage-path", str(a_file)], f"--storage-path {a_file} is a file; pass a folder"),
        ([*base, "--storage-path", str(a_file)], f"--storage-path {a_file} is a file; pass a folder"),
        ([*base, "--dry-run", "--storage-path", str(a_file / "sub")], f"{a_file} is a file; pass a folder"),
        ([*base, "--dry-run", *st, "--output-dir", str(a_file)], f"--output-dir {a_file} is a file"),
        ([*base, "--dry-run", *st, "--resource-wait", "-5"], "--resource-wait must be >= 0 seconds, got -5"),
        ([*base, "--dry-run", *st, "--resource-wait", "nan"], "--resource-wait must be >= 0 seconds, got nan"),
        ([*base, *st, "--mlflow", "http://127.0.0.1:9"], "--mlflow http://127.0.0.1:9: no server answers at 127.0.0.1:9"),
        ([*base, *st, "--mlflow", "http://127.0.0.1:notaport"], "the port is not a number"),
        ([*base, *st, "--wandb", "rankcse-test"], "--wandb: no W&B API key (run `wandb login` or set WANDB_API_KEY)"),
    ]
    before = _tree(tmp_path)
    for argv, expected in cases:
        started = time.monotonic()
        rc = sweep.main(argv)
        err = _error_lines(capsys)
        assert rc == 2 and len(err) == 1 and err[0].startswith("sweep: error: ") and expected in err[0], (argv, err)
        assert time.monotonic() - started < 30, f"{argv} took {time.monotonic() - started:.0f}s"
        assert _tree(tmp_path) == before and not (tmp_path / "st").exists(), f"{argv} wrote files"
    import ray

    assert not ray.is_initialized()  # no case got as far as starting Ray


# -- SIGKILL during aggregate over an earlier output ------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_points_of_aggregate_leaves_the_previous_or_the_new_result(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from reliability_cases_ray import sigkill_campaign
    finally:
        sys.path.remove(str(ROOT / "bench"))
    report = sigkill_campaign(tmp_path, kills=int(os.environ.get("RANKCSE_TEST_KILLS", "5")), seed=1, figures=True)
    assert report["outcomes"]["neither"] == 0 and report["killed"] >= 1, report  # some kills landed mid-write
    assert report["rerun"] == {"rc": 0, "whole": True, "leftovers": []}, report
