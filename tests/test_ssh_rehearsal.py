"""The SSH rehearsal of cluster.yaml (``python -m rayjobs.ssh_rehearsal``): the config it derives from cluster.yaml (fast), its
refusal without root (fast), and the whole rehearsal as a user runs it, beside a bystander Ray that must survive its
``ray down`` (marker ``cluster``: root, openssh-server, rsync and chromium; skipped with the reason where they are missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rankcse.errors import ConfigError
from rayjobs.cluster import ssh_rehearsal
from rayjobs.cluster.rehearsal_config import CPU_TORCH, PORT_ENV, PORT_FLAGS, rehearsal_config

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("up", "dashboard", "submit", "exec", "rsync-down", "down", "no-ray")
PORTS = {"--port": 40001, **{name: 40002 + i for i, name in enumerate((*PORT_FLAGS, *PORT_ENV))}}


def test_the_head_is_laid_out_by_cluster_yaml_itself():
    card = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    derived = rehearsal_config(ROOT / "cluster.yaml", "me", Path("/k/id"), PORTS)
    config = derived.config
    for key in ("cluster_name", "file_mounts", "rsync_filter", "rsync_exclude"):
        assert config[key] == card[key]
    pip_line = next(c for c in card["setup_commands"] if "~/rankcse" in c)
    assert pip_line in config["setup_commands"]  # verbatim, read from cluster.yaml
    assert CPU_TORCH in config["setup_commands"] and not any("torch>=" in c or "curl" in c for c in config["setup_commands"])
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert config["auth"] == {"ssh_user": "me", "ssh_private_key": "/k/id"}
    start = " ".join(config["head_start_ray_commands"])
    assert "ray stop" in start and "--port=40001" in start and "6379" not in start
    assert all(f"{flag}={PORTS[flag]}" in start for flag in PORT_FLAGS) and all(f"{env}={PORTS[env]}" in start for env in PORT_ENV)
    assert len(derived.changes) == 6  # provider, auth, torch, corpus, head_setup_commands, start commands: each said


def test_a_card_without_the_project_pip_line_is_refused(tmp_path):
    card = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    card["setup_commands"] = [c for c in card["setup_commands"] if "~/rankcse" not in c]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ConfigError, match="pip install ... ~/rankcse"):
        rehearsal_config(tmp_path / "cluster.yaml", "me", Path("/k"), PORTS)


def test_without_root_it_refuses_in_one_line_with_status_2():
    cmd = [sys.executable, "-m", "rayjobs.ssh_rehearsal"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root here and no setpriv to drop to another user")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "HOME": "/tmp"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("ssh_rehearsal: needs root"), proc.stderr


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The rehearsal run once, as ``python -m rayjobs.ssh_rehearsal``, beside a bystander Ray started outside its namespace."""
    reason = ssh_rehearsal.refusal()
    if reason:
        pytest.skip(f"the SSH rehearsal cannot run here: {reason}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    by_env = {**env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rtby", dir="/tmp"), "RAY_AUTH_MODE": "disabled"}
    code = "import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False); print('ready', flush=True); sys.stdin.read()"
    for _ in range(2):  # Ray gives a starting node a fixed 30 s to register; a busy machine can miss that once
        bystander = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=by_env, start_new_session=True
        )
        if bystander.stdout.readline().strip() == "ready":
            break
        bystander.wait(60)
    assert bystander.poll() is None, "the bystander Ray did not start"
    bystander_pids = sorted(ssh_rehearsal.ray_processes())  # ours and whatever else runs Ray on this machine
    workdir = tmp_path_factory.mktemp("ssh")
    shot = workdir / "jobs.png"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rayjobs.ssh_rehearsal", "--workdir", str(workdir), "--screenshot", str(shot)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=1800,  # timed out at 10 min on this machine under load 17 (a run there took ~45 min)
        )
        bystander_alive = bystander.poll() is None and all(Path(f"/proc/{p}").exists() for p in _session_pids(bystander.pid))
    finally:
        bystander.stdin.close()  # its ray.init shuts its Ray down on exit
        bystander.wait(60)
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "proc": proc,
        "summary": summary,
        "workdir": workdir,
        "shot": shot,
        "bystander_alive": bystander_alive,
        "before": bystander_pids,
    }


def _session_pids(sid: int) -> list[int]:
    from rayjobs.cluster.local_cluster import session_pids

    return session_pids(sid)


@pytest.mark.cluster
def test_every_step_of_the_card_passes_with_its_rc_and_seconds(rehearsal):
    proc = rehearsal["proc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    steps = [s for s in rehearsal["summary"]["steps"] if not s["name"].startswith("up-restart")]
    restarts = [s for s in rehearsal["summary"]["steps"] if s["name"].startswith("up-restart")]
    if restarts:  # allowed only for Ray's fixed 30 s node-registration timeout on a busy machine, and the last try passed
        assert steps[0]["rc"] != 0 and ssh_rehearsal.STARTUP_TIMEOUT in (rehearsal["workdir"] / "logs" / "up.log").read_text()
        assert restarts[-1]["rc"] == 0
        steps = steps[1:]
    assert tuple(s["name"] for s in steps) == (STEPS[1:] if restarts else STEPS)
    assert all(s["rc"] == 0 and s["seconds"] >= 0 for s in steps)
    for s in steps:
        assert f"[{s['name']:<10}] rc=0" in proc.stdout


@pytest.mark.cluster
def test_the_trials_ran_on_the_head_and_their_tables_came_back(rehearsal):
    table = rehearsal["summary"]["trials_table"]
    assert len(table) == 1 + ssh_rehearsal.N_TRIALS and all("completed" in line for line in table[1:])
    (found,) = (rehearsal["workdir"] / "results-down").rglob("trials.parquet")  # brought back by ray rsync-down
    trials = pd.read_parquet(found)
    assert len(trials) == ssh_rehearsal.N_TRIALS and set(trials["status"]) == {"completed"} and set(trials["rr_coef"]) == {0.0, 0.1}
    assert "cannot import name" not in rehearsal["proc"].stdout + rehearsal["proc"].stderr


@pytest.mark.cluster
def test_the_dashboard_listed_the_job_and_its_trial_actors_and_chromium_rendered_the_job(rehearsal):
    seen = rehearsal["summary"]["dashboard"]
    assert seen["job_status"] == "RUNNING" and "sweep.py" in seen["entrypoint"]
    assert len(seen["trial_actors"]) >= ssh_rehearsal.N_TRIALS and all(a["state"] == "ALIVE" for a in seen["trial_actors"])
    assert seen["page_shows_job"] and seen["job_id"] in seen["page_text"]  # the rendered page, not a blank or error page
    assert rehearsal["shot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rehearsal["shot"].stat().st_size > 10_000


@pytest.mark.cluster
def test_ray_down_left_no_ray_process_and_the_bystander_ray_kept_running(rehearsal):
    assert rehearsal["summary"]["ray_left"] == {}
    assert rehearsal["bystander_alive"]
    assert "[host] other Ray processes on this machine" in rehearsal["proc"].stdout
