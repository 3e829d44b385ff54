"""Rehearse cluster.yaml's own commands over real SSH on this machine: ray up, submit, dashboard, exec, rsync-down, down.

    python -m rayjobs.ssh_rehearsal [--screenshot docs/ray-dashboard-jobs.png] [--workdir DIR] [--keep]

Run it as root from the repository root. It starts an sshd of its own (Debian's openssh-server) on 127.0.0.1 and a free
port with a throwaway key, and drives Ray's cluster launcher against it with Ray's ``local`` provider, the head laid out
as cluster.yaml lays it out (rayjobs.cluster.rehearsal_config lists what differs and why). Everything runs inside a private PID
and mount namespace (``unshare --pid --fork --mount-proc``): ``ray down`` runs ``ray stop`` on the head, which outside a
PID namespace would end every Ray process on the machine; the namespace also gets a private /tmp (Ray's session folder,
the local provider's state, SSH control sockets) and a private HOME for the SSH user (~/.ssh/config points 127.0.0.1 at
the sshd's port; ~/rankcse is the head's checkout). When the namespace's first process exits, the kernel ends every
process left in it.

The head's Python stands where Ray's AWS image keeps its conda env (~/anaconda3/envs/tensorflow2_p310, which cluster.yaml's
first setup command puts on the PATH); it is a fresh venv that sees this environment's packages through a .pth file, so
cluster.yaml's own pip lines really run and find Ray, torch and the rest already there (offline, seconds instead of the
~3.5 minutes a fresh install takes) and install the project from ~/rankcse.

Each step prints its rc and wall seconds; the exit status is 0 when every step passed, 1 naming the first failed step,
2 when it cannot run here (not root, or a missing tool), with one line saying why.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from rayjobs.cluster.dashboard_check import DashboardCheckFailed, watch_sweep
from rayjobs.cluster.local_cluster import free_ports
from rayjobs.cluster.rehearsal_config import PORT_ENV, PORT_FLAGS, rehearsal_config

ROOT = Path(__file__).resolve().parents[2]  # the checkout
TOOLS = {"sshd": "/usr/sbin/sshd", "ssh": "ssh", "ssh-keygen": "ssh-keygen", "rsync": "rsync", "chromium": "chromium", "unshare": "unshare"}
PACKAGES = "openssh-server rsync chromium"
HEAD_ENV = "anaconda3/envs/tensorflow2_p310"  # where Ray's AWS image keeps its Python (cluster.yaml's first setup command)
#: The sweep the rehearsal submits: the smoke preset cut to 2 trials of 2 steps on the packaged MiniLM.
SWEEP_ARGS = (
    "--preset",
    "smoke",
    "--methods",
    "simcse",
    "--rr-coefs",
    "0",
    "0.1",
    "--seeds",
    "0",
    "--max-steps",
    "2",
    "--eval-every",
    "2",
    "--set",
    "probe_size=100",
    "--set",
    "batch_size=8",
    "--set",
    "final_tasks=[stsb]",
)
N_TRIALS = 2
TRIALS_TABLE = (
    "python -c \"import pandas as pd; t = pd.read_parquet('results/smoke/trials.parquet'); "
    "print(t[['trial_id', 'method', 'rr_coef', 'seed', 'status', 'steps_done', 'device']].to_string(index=False))\""
)
#: Command-line marks of Ray's processes (raylet, GCS, dashboard, autoscaler, workers, agents, the `ray` CLI).
RAY_MARKS = ("/site-packages/ray/", "ray::", "raylet", "gcs_server", "ray.scripts.scripts", "/bin/ray ")


class StepFailed(Exception):
    """A rehearsal step failed; the message names it."""


@dataclass
class StepResult:
    """One step: its name, exit status, wall seconds and a one-line outcome."""

    name: str
    rc: int
    seconds: float
    note: str = ""


# -- refusal, outside the namespace ----------------------------------------------------------------------------


def refusal() -> str | None:
    """Why the rehearsal cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return (
            "needs root: it starts its own sshd and runs `ray down` (which runs `ray stop`) inside a private PID and mount namespace "
            "(unshare), so the machine's other Ray processes are out of its reach; run it as root (e.g. sudo)"
        )
    missing = [name for name, path in TOOLS.items() if shutil.which(path) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install -y {PACKAGES}"
    return None


def ray_processes() -> dict[int, str]:
    """PIDs and command lines of the Ray processes this process can see (its PID namespace), zombies left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), 1):
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z" or not cmd:
            continue
        if any(mark in cmd for mark in RAY_MARKS) and "rayjobs.ssh_rehearsal" not in cmd:
            found[int(entry.name)] = cmd
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (a killed test), so unshare ends the namespace with it."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_outer(args: argparse.Namespace) -> int:
    """Check, then run the rehearsal in a new PID + mount namespace; report the machine's other Ray processes after it."""
    problem = refusal()
    if problem:
        print(f"ssh_rehearsal: {problem}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="rankcse-ssh-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    before = ray_processes()
    inner = [sys.executable, "-m", "rayjobs.ssh_rehearsal", "--inner", "--workdir", str(workdir)]
    if args.screenshot:
        inner += ["--screenshot", str(Path(args.screenshot).resolve())]
    # bash is the namespace's PID 1: it reaps the daemons Ray leaves to it; --kill-child ends the namespace if we die.
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--", "/bin/bash", "-c", '"$@"; exit $?', "bash", *inner]
    proc = subprocess.Popen(cmd, cwd=ROOT, preexec_fn=_die_with_parent)
    try:
        rc = proc.wait()
    except BaseException:
        proc.kill()  # unshare ignores SIGINT/SIGTERM; SIGKILL makes it kill the namespace's PID 1 (--kill-child), ending all in it
        proc.wait()
        raise
    alive = [pid for pid in before if Path(f"/proc/{pid}").exists()]
    print(
        f"[host] other Ray processes on this machine: {len(before)} before the rehearsal, {len(alive)} of them still running after it"
        + ("" if len(alive) == len(before) else f" (ended meanwhile, not by the rehearsal's namespace: {sorted(set(before) - set(alive))})")
    )
    summary = workdir / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        data["host_ray_before"], data["host_ray_alive_after"] = sorted(before), sorted(alive)
        summary.write_text(json.dumps(data, indent=1))
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"[host] kept {workdir} (logs/, cluster.yaml, summary.json, results-down/)")
    return rc


# -- inside the namespace ----------------------------------------------------------------------------------------


def _sh(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def hide_behind(target: Path, private: Path, keep: Iterable[Path]) -> None:
    """Mount ``private`` over ``target`` (this mount namespace only), binding back the paths of ``keep`` that lie under it."""
    private.mkdir(parents=True, exist_ok=True)
    for path in keep:
        if target in path.parents:
            inside = private / path.relative_to(target)
            inside.mkdir(parents=True, exist_ok=True)
            _sh("mount", "--bind", path, inside)
    _sh("mount", "--rbind", private, target)


def _base_paths() -> list[Path]:
    """What this interpreter and checkout need: the checkout, the venv, the base Python (pyenv keeps it under HOME)."""
    paths = {ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    return sorted(p.resolve() for p in paths)


def start_sshd(folder: Path, port: int, addresses: Sequence[str]) -> tuple[subprocess.Popen, Path]:
    """An sshd of our own on ``addresses``:``port`` with throwaway host and user keys; returns it and the user's private key."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_ed25519", "id_ed25519"):
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rankcse-rehearsal-{name}", "-f", folder / name)
    shutil.copy(folder / "id_ed25519.pub", folder / "authorized_keys")
    lines = [
        f"Port {port}",
        *(f"ListenAddress {a}" for a in addresses),
        f"HostKey {folder / 'host_ed25519'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "MaxStartups 50",
        "MaxSessions 50",
        "AllowTcpForwarding yes",
        "Subsystem sftp internal-sftp",
    ]
    (folder / "sshd_config").write_text("\n".join(lines) + "\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory (Debian's service makes it)
    log = (folder / "sshd.log").open("w")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    import socket

    while True:
        try:
            socket.create_connection((addresses[0], port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StepFailed(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}") from None
            time.sleep(0.2)
    return proc, folder / "id_ed25519"


def seed_home(home: Path) -> None:
    """The private HOME starts as a new user's would: /etc/skel (.bashrc, .profile), as useradd lays it out."""
    if Path("/etc/skel").is_dir():
        shutil.copytree("/etc/skel", home, dirs_exist_ok=True, symlinks=True)


def write_ssh_config(home: Path, port: int, addresses: Sequence[str]) -> None:
    """~/.ssh/config of the private HOME: these addresses mean our sshd's port (ssh and rsync read it)."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = f"Host {' '.join(addresses)}\n  Port {port}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    (ssh / "config").write_text(text)


def make_head_image(home: Path) -> Path:
    """The head's Python where Ray's AWS image has its conda env: a venv seeing this environment's packages, with their scripts."""
    env = home / HEAD_ENV
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    here = sysconfig.get_paths()["purelib"]
    purelib = Path(
        subprocess.run(
            [env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "rehearsal-image.pth").write_text(here + "\n")
    python = env / "bin" / "python"
    for dist in importlib.metadata.distributions(path=[here]):
        if dist.metadata["Name"] and dist.metadata["Name"].lower() == "rankcse":
            continue  # cluster.yaml's pip line installs the project itself, from ~/rankcse
        for ep in dist.entry_points.select(group="console_scripts"):
            script = env / "bin" / ep.name
            script.write_text(
                f"#!{python}\nimport sys\nfrom importlib import import_module\nobj = import_module({ep.module!r})\n"
                f"for part in {ep.attr!r}.split('.'):\n    obj = getattr(obj, part)\nsys.exit(obj())\n"
            )
            script.chmod(0o755)
    return env


class Rehearsal:
    """The steps, run from the repository root with this environment's ray CLI, each timed and printed."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.config = config
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.results: list[StepResult] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        for name in ("RAY_ADDRESS", "RAY_TMPDIR"):
            self.env.pop(name, None)

    def ray(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ray.scripts.scripts", *args]

    def record(self, name: str, rc: int, seconds: float, note: str = "") -> None:
        self.results.append(StepResult(name, rc, round(seconds, 1), note))
        print(f"[{name:<10}] rc={rc:<3} {seconds:6.1f} s  {note}", flush=True)

    def start(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen, Path, float]:
        log = self.logs / f"{name}.log"
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return proc, log, time.monotonic()

    def finish(self, name: str, proc: subprocess.Popen, log: Path, started: float, timeout: float, note: str = "") -> str:
        try:
            rc = proc.wait(timeout=max(1.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            note = f"timed out after {timeout:.0f} s"
        output = log.read_text(errors="replace")
        if rc != 0:
            self.record(name, rc, time.monotonic() - started, note or "failed")
            tail = "\n".join(f"    {line}" for line in output.splitlines()[-25:])
            raise StepFailed(f"step {name} failed (rc={rc}); last lines of {log}:\n{tail}")
        self.record(name, rc, time.monotonic() - started, note)
        return output

    def run(self, name: str, cmd: list[str], timeout: float, note: str = "") -> str:
        proc, log, started = self.start(name, cmd)
        return self.finish(name, proc, log, started, timeout, note)


#: Ray gives a starting node a fixed 30 s to register with its GCS; on a busy machine `ray start` can miss that.
STARTUP_TIMEOUT = "timed out during startup"
RESTARTS = 2


def up(steps: Rehearsal, cfg: str) -> str:
    """``ray up -y``; when only Ray's start missed its fixed registration timeout, ``ray up -y --restart-only`` (at most twice)."""
    try:
        return steps.run(
            "up", steps.ray("up", "-y", cfg), timeout=900, note="ray up -y: file mounts, setup commands, ray start on the head"
        )
    except StepFailed:
        if STARTUP_TIMEOUT not in (steps.logs / "up.log").read_text(errors="replace"):
            raise
    for attempt in range(1, RESTARTS + 1):
        print(
            f"[up        ] the head's ray start {STARTUP_TIMEOUT} (Ray's fixed 30 s; a busy machine): ray up -y --restart-only", flush=True
        )
        name = f"up-restart{attempt}"
        try:
            return steps.run(
                name, steps.ray("up", "-y", "--restart-only", cfg), timeout=600, note="ray up -y --restart-only: ray stop; ray start"
            )
        except StepFailed:
            if attempt == RESTARTS or STARTUP_TIMEOUT not in (steps.logs / f"{name}.log").read_text(errors="replace"):
                raise
    raise AssertionError("unreachable")


def _find_trials_lines(output: str) -> list[str]:
    """The trials table's header and rows in ``ray exec``'s output (its colour codes removed)."""
    lines = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("trial_id")), None)
    return [] if start is None else [line for line in lines[start : start + 1 + N_TRIALS]]


def rehearse(workdir: Path, screenshot: Path | None) -> int:
    """Inside the namespace: private /tmp and HOME, sshd, the head's image, then the card's commands in order."""
    home = Path(os.path.expanduser("~")).resolve()
    keep = [workdir, *_base_paths()]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        keep.append(screenshot.parent.resolve())
    hide_behind(Path("/tmp"), workdir / "tmp", keep)
    hide_behind(home, workdir / "home", [p for p in _base_paths() if p != home])
    os.environ["TMPDIR"] = "/tmp"
    (ssh_port, local_dashboard, gcs, *rest) = free_ports(3 + len(PORT_FLAGS) + len(PORT_ENV))
    ports = {"--port": gcs, **dict(zip((*PORT_FLAGS, *PORT_ENV), rest))}
    addresses = ["127.0.0.1"]
    sshd, key = start_sshd(workdir / "ssh", ssh_port, addresses)
    summary: dict[str, Any] = {"workdir": str(workdir), "ssh_port": ssh_port, "ports": ports}
    steps = Rehearsal(workdir, workdir / "cluster.yaml")
    rc = 0
    forward = None
    try:
        seed_home(home)
        write_ssh_config(home, ssh_port, addresses)
        image = make_head_image(home)
        rehearsal = rehearsal_config(ROOT / "cluster.yaml", getpass.getuser(), key, ports)
        steps.config.write_text(yaml.safe_dump(rehearsal.config, sort_keys=False))
        print(f"[setup     ] sshd on 127.0.0.1:{ssh_port} (pid {sshd.pid}); head image {image}; config {steps.config}")
        for line in rehearsal.changes:
            print(f"[setup     ] differs from cluster.yaml: {line}")
        cfg = str(steps.config)
        out = up(steps, cfg)
        if "ray start" not in out and "Ray runtime started" not in out:
            raise StepFailed("step up: no `ray start` in its output")
        forward, flog, fstart = steps.start(
            "dashboard", steps.ray("dashboard", cfg, "--port", str(local_dashboard), "--remote-port", str(rehearsal.dashboard_port))
        )
        submit, slog, sstart = steps.start("submit", steps.ray("submit", cfg, "rayjobs/sweep.py", "--", *SWEEP_ARGS))
        try:
            seen = watch_sweep(
                f"http://127.0.0.1:{local_dashboard}", workdir, screenshot, N_TRIALS, deadline=time.monotonic() + 420, alive=submit
            )
        except DashboardCheckFailed as exc:
            steps.record("dashboard", 1, time.monotonic() - fstart, str(exc))
            raise StepFailed(f"step dashboard failed: {exc}") from None
        summary["dashboard"] = seen
        steps.record(
            "dashboard",
            0,
            time.monotonic() - fstart,
            f"ray dashboard -> http://127.0.0.1:{local_dashboard}: job {seen['job_id']} ({seen['job_status']}), "
            f"{len(seen['trial_actors'])} trial actors, {seen['nodes']} node(s); chromium rendered the job: {seen['page_shows_job']}",
        )
        out = steps.finish("submit", submit, slog, sstart, timeout=600, note="ray submit ... rayjobs/sweep.py -- --preset smoke (2 trials)")
        if "cannot import name" in out:
            raise StepFailed("step submit: a trial failed on import (issue 19)")
        out = steps.run(
            "exec", steps.ray("exec", cfg, f"ray status && {TRIALS_TABLE}"), timeout=180, note="ray exec: ray status + trials table"
        )
        table = _find_trials_lines(out)
        print(
            "\n".join(f"    {line}" for line in out.splitlines() if line.strip() and ("node_" in line or "CPU" in line or "Active" in line))
        )
        print("    trials table on the head (~/results/smoke/trials.parquet):")
        print("\n".join(f"    {line}" for line in table))
        summary["trials_table"] = table
        if len(table) != 1 + N_TRIALS or not all(" completed " in f" {line} " for line in table[1:]):
            raise StepFailed(f"step exec: expected {N_TRIALS} completed trials in the head's table, got {table}")
        down_dir = workdir / "results-down"  # rsync copies the folder itself into it: results-down/smoke/*.parquet
        down_dir.mkdir(parents=True, exist_ok=True)  # rsync creates no missing parents on the receiving side
        steps.run("rsync-down", steps.ray("rsync-down", cfg, "~/results/smoke", str(down_dir)), timeout=180, note=f"-> {down_dir}")
        got = sorted(str(p.relative_to(down_dir)) for p in down_dir.rglob("*.parquet"))
        if not any(p.endswith("trials.parquet") for p in got):
            raise StepFailed(f"step rsync-down: no trials.parquet under {down_dir} (got {got})")
        summary["rsync_down"] = got
        print(f"    brought back: {', '.join(got)}")
        forward.terminate()
        forward.wait(10)
        forward = None
        steps.run("down", steps.ray("down", "-y", cfg), timeout=300, note="ray down -y: ray stop on the head")
        started = time.monotonic()
        left = ray_processes()
        while left and time.monotonic() - started < 30:
            time.sleep(1)
            left = ray_processes()
        summary["ray_left"] = left
        if left:
            steps.record("no-ray", 1, time.monotonic() - started, f"{len(left)} Ray processes left")
            raise StepFailed(f"step no-ray: Ray processes left after ray down: {left}")
        steps.record("no-ray", 0, time.monotonic() - started, "no Ray process left in the namespace")
    except StepFailed as exc:
        print(f"ssh_rehearsal: FAILED: {exc}", file=sys.stderr, flush=True)
        summary["failed"] = str(exc).splitlines()[0]
        rc = 1
    finally:
        if forward is not None:
            forward.kill()
        sshd.terminate()
        summary["steps"] = [asdict(r) for r in steps.results]
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return rc


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m rayjobs.ssh_rehearsal",
        description="Rehearse cluster.yaml's ray up / submit / dashboard / exec / rsync-down / down over real SSH on this machine (root).",
    )
    p.add_argument("--screenshot", type=Path, help="save the headless-Chromium screenshot of the dashboard's jobs page here (PNG)")
    p.add_argument("--workdir", type=Path, help="folder for keys, logs, the derived config and summary.json (kept; default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 every step passed, 1 a step failed (named), 2 cannot run here."""
    args = build_parser().parse_args(argv)
    if args.inner:
        return rehearse(args.workdir, args.screenshot)
    return run_outer(args)


if __name__ == "__main__":
    sys.exit(main())
