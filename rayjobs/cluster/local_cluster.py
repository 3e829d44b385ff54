"""A rehearsal Ray cluster on this machine: cluster-local.yaml on Ray's fake_multinode provider.

    python -m rayjobs.local_cluster up [--max-workers N] [--cpus-per-worker C] [--gpus-per-worker G]
    python -m rayjobs.local_cluster status
    python -m rayjobs.local_cluster address      # just the address: --address $(python -m rayjobs.local_cluster address)
    python -m rayjobs.local_cluster down

``up`` runs ``RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config ...`` in a session of
its own, with its own RAY_TMPDIR, free ports and an explicit RAY_AUTH_MODE (the caller's, else ``disabled``), so it coexists with any
other Ray on the machine; every process of the cluster (head services, the autoscaler's fake worker
nodes, their workers) belongs to that session and carries that RAY_TMPDIR. ``state.json`` is a
record, never trusted alone: it counts only when the PID it names is this folder's own head (its
command line and RAY_TMPDIR say so), and when it is lost or damaged while the cluster runs the head is
found by its RAY_TMPDIR and the state rebuilt. ``down`` ends exactly the processes that carry the
cluster's RAY_TMPDIR, by PID: a SIGTERM, then SIGKILL after a grace period (gcs_server and the monitor
ignore SIGTERM for over 10 s). It never runs ``ray stop``, which ends every Ray process of the user.
Without ``ray[default]``'s dashboard packages (``pip install -e .`` alone) the head starts without the
dashboard, and ``up`` says so in one line: no web UI and no ``ray job submit`` until
``pip install -e '.[dashboard]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from rankcse.errors import ConfigError
from rayjobs import ray_compat

ROOT = Path(__file__).resolve().parents[2]  # the checkout
CONFIG = ROOT / "cluster-local.yaml"
#: Short on purpose: Ray's socket paths under the temp dir must stay below the OS limit (107 bytes).
DEFAULT_DIR = Path("/tmp") / f"rankcse-lc-{os.getuid()}"
DIR_ENV = "RANKCSE_LOCAL_CLUSTER_DIR"
WORKER_TYPE = "ray.worker.gpu"
STATE_FILE = "state.json"
START_TIMEOUT = 120.0
GRACE_SECONDS = 3.0
#: What a cluster without ray[default]'s dashboard packages lacks, and how to get it (printed by ``up`` and ``status``).
NO_DASHBOARD = "dashboard: off ({why}): no web UI and no `ray job submit`; for them: pip install -e '.[dashboard]'"


def state_dir() -> Path:
    """Folder of the cluster's state file, config, logs and RAY_TMPDIR (``$RANKCSE_LOCAL_CLUSTER_DIR`` or /tmp)."""
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports nobody listens on now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def cluster_config(max_workers: int, cpus_per_worker: float, gpus_per_worker: float, gcs_address: str) -> dict[str, Any]:
    """cluster-local.yaml with the worker type's size and count and the head's GCS address filled in."""
    config = yaml.safe_load(CONFIG.read_text())
    config["max_workers"] = max_workers
    config["provider"]["gcs_address"] = gcs_address
    worker = config["available_node_types"][WORKER_TYPE]
    worker["max_workers"] = max_workers
    worker["resources"] = {"CPU": cpus_per_worker, "GPU": gpus_per_worker}
    return config


# -- processes ----------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time in clock ticks) of a live process, None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if fields[0] == "Z":
        return None
    return int(fields[3]), int(fields[19])


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the session ``up`` created for the cluster)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] == sid:
                pids.append(int(entry.name))
    return sorted(pids)


def _cmdline(pid: int) -> list[str] | None:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None


def _environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's process
        return None
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def ray_tmpdir() -> str:
    """The RAY_TMPDIR of this folder's cluster: every one of its processes carries it in its environment."""
    return str(state_dir() / "ray")


def is_own_head(pid: int, tmpdir: str | None = None) -> bool:
    """Whether ``pid`` is the ``ray start --head`` that ``up`` ran for this folder: its command line, its RAY_TMPDIR
    and the session it leads all say so (a stale state.json may name a reused PID)."""
    tmpdir = tmpdir or ray_tmpdir()
    stat, cmd, env = _proc_stat(pid), _cmdline(pid), _environ(pid)
    if stat is None or stat[0] != pid or cmd is None or env is None:
        return False
    head = "ray.scripts.scripts" in cmd and "start" in cmd and "--head" in cmd and f"--temp-dir={tmpdir}" in cmd
    return head and env.get("RAY_TMPDIR") == tmpdir and env.get(ray_compat.FAKE_CLUSTER_ENV) == "1"


def _marked(env: dict[str, str] | None, tmpdir: str) -> bool:
    return env is not None and env.get("RAY_TMPDIR") == tmpdir and env.get(ray_compat.FAKE_CLUSTER_ENV) == "1"


def cluster_pids(tmpdir: str | None = None) -> list[int]:
    """Live processes of this folder's cluster, found by their environment (not by state.json): RAY_TMPDIR and
    RAY_FAKE_CLUSTER as ``up`` set them, in a session whose leader is gone or is one of them (never a user's shell)."""
    tmpdir = tmpdir or ray_tmpdir()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None or not _marked(_environ(pid), tmpdir):
            continue
        leader = stat[0]
        if leader == pid or _proc_stat(leader) is None or _marked(_environ(leader), tmpdir):
            pids.append(pid)
    return sorted(pids)


def find_head(tmpdir: str | None = None) -> int | None:
    """The PID of this folder's running Ray head, found by its command line and RAY_TMPDIR; None when none runs."""
    tmpdir = tmpdir or ray_tmpdir()
    return next((pid for pid in cluster_pids(tmpdir) if is_own_head(pid, tmpdir)), None)


def _load_state() -> tuple[dict[str, Any] | None, str | None]:
    """state.json if it names this folder's running head, else (None, what is wrong with it; None when absent)."""
    path = state_dir() / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__})"
    sid = state.get("sid") if isinstance(state, dict) else None
    if not isinstance(sid, int) or isinstance(sid, bool) or sid <= 0 or not isinstance(state.get("address"), str):
        return None, f"{path} is not a cluster state (no process id and address)"
    if not is_own_head(sid):
        return None, f"{path} names pid {sid}, which is not this cluster's Ray head (a stale file)"
    return state, None


def state_from_head(pid: int) -> dict[str, Any]:
    """The state of a running head rebuilt from its command line and environment (when state.json is lost or damaged)."""
    cmd, env = _cmdline(pid) or [], _environ(pid) or {}
    flags = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    config: dict[str, Any] = {}
    try:
        config = yaml.safe_load(Path(flags["autoscaling-config"]).read_text()) or {}
        worker = config["available_node_types"][WORKER_TYPE]["resources"]
    except (KeyError, OSError, TypeError, yaml.YAMLError):
        worker = {}
    dashboard = flags.get("include-dashboard") == "true" and flags.get("dashboard-port")
    return {
        "sid": pid,
        "address": f"{flags.get('node-ip-address', '127.0.0.1')}:{flags.get('port', '?')}",
        "dashboard": f"http://{flags.get('dashboard-host', '127.0.0.1')}:{flags['dashboard-port']}" if dashboard else None,
        "auth_mode": env.get("RAY_AUTH_MODE", "disabled"),
        "ray_tmpdir": env.get("RAY_TMPDIR", ray_tmpdir()),
        "config": flags.get("autoscaling-config", ""),
        "log": str(state_dir() / "ray_start.log"),
        "max_workers": config.get("max_workers", 0) if isinstance(config, dict) else 0,
        "worker": {"CPU": float(worker.get("CPU", 0)), "GPU": float(worker.get("GPU", 0))},
        "started": "unknown (state rebuilt from the running head)",
        "pids": session_pids(pid),
    }


def read_state(quiet: bool = False) -> dict[str, Any] | None:
    """The running cluster's state (address, PIDs), None when none of ours runs.

    state.json is trusted only when it names this folder's own head (:func:`is_own_head`); when it is damaged or
    stale while the cluster runs, the head is found by its RAY_TMPDIR and the state rebuilt and written again.
    """
    state, problem = _load_state()
    if state is not None:
        return state
    head = find_head()
    if head is None:
        return None
    state = state_from_head(head)
    _write_state(state)
    if not quiet:
        why = problem or f"{state_dir() / STATE_FILE} is missing"
        print(f"local cluster: {why}; found the running head by its RAY_TMPDIR (pid {head}) and rewrote the state", file=sys.stderr)
    return state


def stale_state_note() -> str:
    """What is wrong with state.json when no cluster of this folder runs ('' when nothing is)."""
    _, problem = _load_state()
    return f" ({problem}; ignored)" if problem else ""


def _write_state(state: dict[str, Any]) -> None:
    from rankcse.io import write_text_atomic

    write_text_atomic(state_dir() / STATE_FILE, json.dumps(state, indent=1))


# -- commands -----------------------------------------------------------------------------------------


def up(max_workers: int = 2, cpus_per_worker: float = 2.0, gpus_per_worker: float = 1.0, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start the cluster (head only; the autoscaler adds workers on demand) and return its state."""
    if max_workers < 1:
        raise ConfigError(f"--max-workers must be >= 1, got {max_workers}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ConfigError(f"--cpus-per-worker must be > 0 and --gpus-per-worker >= 0, got {cpus_per_worker:g} and {gpus_per_worker:g}")
    running = read_state()
    if running is not None:
        raise AlreadyUp(running)
    left = cluster_pids()
    if left:
        raise ConfigError(
            f"{len(left)} processes of an earlier cluster of {state_dir()} still run (its head is gone); "
            "`python -m rayjobs.local_cluster down` stops them, then `up` again"
        )
    attempts = 2  # Ray gives a node 30 s to register with the GCS (fixed); a busy machine can miss that once
    for attempt in range(1, attempts + 1):
        try:
            return _start(max_workers, cpus_per_worker, gpus_per_worker, timeout)
        except ConfigError as exc:
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            print(f"local cluster: {exc}; trying again", file=sys.stderr)
    raise AssertionError("unreachable")


def _start(max_workers: int, cpus_per_worker: float, gpus_per_worker: float, timeout: float) -> dict[str, Any]:
    """One ``ray start --head --block`` in a new session, on fresh ports; its state once Ray says it started."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "ray"
    tmp.mkdir(exist_ok=True)
    ip = ray_compat.node_ip_address()
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager, autoscaler = free_ports(10)
    config_path = folder / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(cluster_config(max_workers, cpus_per_worker, gpus_per_worker, f"{ip}:{gcs}"), sort_keys=False))
    missing = ray_compat.dashboard_dependency_error()  # without ray[default] the head starts with no dashboard
    dashboard_flags = (
        ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
        if missing is None
        else ["--include-dashboard=false"]
    )
    # Clients (ray.init, ray job submit) with RAY_AUTH_MODE unset connect without a token: match them unless told otherwise.
    auth_mode = os.environ.get("RAY_AUTH_MODE") or "disabled"
    env = {
        **os.environ,
        ray_compat.FAKE_CLUSTER_ENV: "1",
        "RAY_TMPDIR": str(tmp),
        "RAY_AUTH_MODE": auth_mode,
        "RAY_USAGE_STATS_ENABLED": "0",
        "AUTOSCALER_METRIC_PORT": str(autoscaler),
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--autoscaling-config={config_path}",
        f"--port={gcs}",
        f"--node-ip-address={ip}",
        "--num-cpus=0",
        "--num-gpus=0",
        f"--temp-dir={tmp}",
        *dashboard_flags,
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        "--disable-usage-stats",
    ]
    log_path = folder / "ray_start.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT
        )
    state = {
        "sid": proc.pid,
        "address": f"{ip}:{gcs}",
        "dashboard": f"http://127.0.0.1:{dashboard}" if missing is None else None,
        "dashboard_missing": missing,
        "auth_mode": auth_mode,
        "ray_tmpdir": str(tmp),
        "config": str(config_path),
        "log": str(log_path),
        "max_workers": max_workers,
        "worker": {"CPU": cpus_per_worker, "GPU": gpus_per_worker},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            how = f"exit {proc.returncode}" if proc.returncode is not None else "timeout"
            _stop_session(proc.pid)
            raise ConfigError(f"ray start failed ({how}): {lines[-1] if lines else '(no output)'} (log: {log_path})")
        time.sleep(0.3)
    state["pids"] = session_pids(proc.pid)
    _write_state(state)
    return state


class AlreadyUp(Exception):
    """``up`` found the cluster already running."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__(f"already up at {state['address']}")
        self.state = state


def _stop(find: Callable[[], list[int]], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM every process ``find`` returns, SIGKILL what is left after ``grace`` seconds; return the PIDs seen.

    ``find`` is asked again each round: a raylet may start a worker while the others stop.
    """
    seen: set[int] = set()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        deadline = time.monotonic() + wait
        while True:
            pids = find()
            if not pids:
                return sorted(seen)
            seen.update(pids)
            if time.monotonic() > deadline:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
    raise ConfigError(f"could not stop processes {find()} of the local cluster")


def _stop_session(sid: int, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop every process of session ``sid`` (a head that failed to start)."""
    return _stop(lambda: session_pids(sid), grace)


def down() -> list[int]:
    """Stop every process of the cluster ``up`` started; return their PIDs (empty when none ran).

    The processes are found by their environment (:func:`cluster_pids`), never by the PID state.json names: a stale
    state can name an unrelated session, and a damaged one must not leave the cluster running.
    """
    tmpdir = ray_tmpdir()
    state, _ = _load_state()
    # The session of a head verified as this cluster's own (command line and RAY_TMPDIR): every process in it is the
    # cluster's, also one whose environment does not carry the marks (read before the head is stopped).
    sid = state["sid"] if state else None
    stopped = _stop(lambda: sorted((set(cluster_pids(tmpdir)) | set(session_pids(sid) if sid else ())) - {os.getpid()}))
    (state_dir() / STATE_FILE).unlink(missing_ok=True)
    return stopped


def worker_nodes(state: dict[str, Any]) -> dict[str, list[int]]:
    """The fake worker nodes now alive: node id -> PIDs of its raylet and the raylet's worker processes."""
    nodes: dict[str, list[int]] = {}
    for pid in session_pids(state["sid"]):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmd or not cmd[0].endswith(b"/raylet"):
            continue
        node_id = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(f"{ray_compat.FAKE_NODE_ID_ENV}=".encode())), None)
        if node_id is None or node_id.endswith("00000"):
            continue  # the head node
        nodes[node_id] = [pid, *_descendants(pid)]
    return nodes


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def _print_state(state: dict[str, Any]) -> None:
    print(f"address: {state['address']}")
    if state.get("dashboard"):
        print(f"dashboard: {state['dashboard']}  (ray job submit --address {state['dashboard']} ...)")
    else:
        print(NO_DASHBOARD.format(why=state.get("dashboard_missing") or "ray[default] is not installed"))
    print(f"RAY_AUTH_MODE={state['auth_mode']}  (drivers and `ray job submit` need the same; RAY_TMPDIR={state['ray_tmpdir']})")
    print(f"workers: 0..{state['max_workers']} x {{CPU: {state['worker']['CPU']:g}, GPU: {state['worker']['GPU']:g}}}, started on demand")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m rayjobs.local_cluster", description="Start or stop a rehearsal Ray cluster (cluster-local.yaml) on this machine."
    )
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the head node; the autoscaler adds fake GPU workers on demand")
    u.add_argument("--max-workers", type=int, default=2, help="most worker nodes at once")
    u.add_argument("--cpus-per-worker", type=float, default=2.0, help="CPUs each worker node declares")
    u.add_argument("--gpus-per-worker", type=float, default=1.0, help="(fake) GPUs each worker node declares")
    sub.add_parser("down", help="stop every process up started (never `ray stop`)")
    sub.add_parser("status", help="print the address of the running cluster and its live worker nodes")
    sub.add_parser("address", help="print only the address, for --address $(python -m rayjobs.local_cluster address)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input and failures print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            try:
                state = up(args.max_workers, args.cpus_per_worker, args.gpus_per_worker)
            except AlreadyUp as exc:
                print(f"local cluster: already up (pid {exc.state['sid']}); `python -m rayjobs.local_cluster down` first to restart it")
                _print_state(exc.state)
                return 0
            print(f"local cluster: up (pid {state['sid']}, {len(state['pids'])} processes, state {state_dir() / STATE_FILE})")
            _print_state(state)
            print(f"next: python rayjobs/sweep.py --preset smoke --address {state['address']} --gpus-per-trial 0.5 --allow-cpu-on-gpu")
        elif args.command == "down":
            note = stale_state_note()
            stopped = down()
            print(f"local cluster: stopped {len(stopped)} processes" if stopped else f"local cluster: not running{note}; nothing to stop")
        else:
            state = read_state()
            if state is None:
                where = sys.stderr if args.command == "address" else sys.stdout
                left = cluster_pids()
                if left:
                    print(f"local cluster: not running, but {len(left)} of its processes remain; stop them with `down`", file=where)
                else:
                    print(f"local cluster: not running{stale_state_note()}; start it with `python -m rayjobs.local_cluster up`", file=where)
                return 1
            if args.command == "address":
                print(state["address"])
                return 0
            _print_state(state)
            print(f"worker nodes alive: {len(worker_nodes(state))}")
        return 0
    except ConfigError as exc:
        print(f"local_cluster: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
