"""cluster.yaml turned into a config for Ray's ``local`` provider on this machine, for the SSH rehearsal (rayjobs.ssh_rehearsal).

Everything that lays out the head node comes from cluster.yaml itself, read at run time: ``file_mounts``, ``rsync_filter``,
``rsync_exclude``, the setup commands (the ``pip install ... ~/rankcse ...`` line among them) and the head's start commands
(cluster.yaml leaves them to Ray's defaults, so they are read from Ray's defaults for the provider). Only what cannot run
here is replaced, each replacement listed in :attr:`RehearsalConfig.changes`:

- the cloud provider, node types and auth: Ray's ``local`` provider on 127.0.0.1, this user and a throwaway key;
- the CUDA torch line: ``torch==2.13.0`` (the CPU build this project is tested with);
- the corpus download: dropped (no internet; the smoke preset trains on the packaged corpus);
- the cloud client in ``head_setup_commands`` (boto3): none, as cluster.yaml's notes say for an on-premises cluster;
- the head's fixed ports (6379, 8265, ...): free ones, so it runs beside any other Ray on this machine; and its workers at
  the head's own priority (``RAY_worker_niceness=0``), as this machine is shared and busy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankcse.errors import ConfigError
from rayjobs import ray_compat

CPU_TORCH = "pip install -q torch==2.13.0"
#: `ray start --head` flags given a free port each, plus the two metrics ports Ray takes from the environment.
PORT_FLAGS = (
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)
PORT_ENV = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")
#: Ray starts its workers 15 nice levels down; on this shared, busy machine they then barely run (a real head runs nothing else).
WORKER_NICENESS = "RAY_worker_niceness=0"
#: Keys of cluster.yaml the rehearsal keeps as they are (the head's layout).
KEPT = ("cluster_name", "upscaling_speed", "idle_timeout_minutes", "file_mounts", "rsync_filter", "rsync_exclude", "worker_setup_commands")


@dataclass
class RehearsalConfig:
    """The local-provider config, the head's ports, and what differs from cluster.yaml (one line each)."""

    config: dict[str, Any]
    gcs_port: int
    dashboard_port: int
    changes: list[str] = field(default_factory=list)


def ray_defaults(provider: str = "local") -> dict[str, Any]:
    """Ray's defaults for a provider: what ``ray up`` fills in for the keys a config leaves out."""
    return ray_compat.provider_defaults(provider)


def _is_project_install(command: str) -> bool:
    return "pip install" in command and "~/rankcse" in command


def _is_torch_install(command: str) -> bool:
    return "pip install" in command and re.search(r"[\"' ]torch\b", command) is not None and not _is_project_install(command)


def _is_corpus_download(command: str) -> bool:
    return "curl" in command or "wget" in command


def _head_start(commands: list[str], ports: dict[str, int]) -> list[str]:
    """The head's start commands with a free port for every port Ray would otherwise fix."""
    out = []
    for command in commands:
        if "ray start" not in command:
            out.append(command)
            continue
        if not re.search(r"--port[= ]\d+", command):
            raise ConfigError(f"head start command without --port: {command!r}; the rehearsal needs a free GCS port there")
        command = re.sub(r"--port[= ]\d+", f"--port={ports['--port']}", command)
        flags = " ".join(f"{flag}={ports[flag]}" for flag in PORT_FLAGS)
        env = " ".join(f"{name}={ports[name]}" for name in PORT_ENV)
        command = command.replace("ray start", f"{env} {WORKER_NICENESS} ray start", 1) + f" {flags}"
        out.append(command)
    return out


def rehearsal_config(cluster_yaml: Path, user: str, key: Path, ports: dict[str, int], head_ip: str = "127.0.0.1") -> RehearsalConfig:
    """The rehearsal's config from ``cluster_yaml``; ``ports`` maps ``--port``, each of PORT_FLAGS and PORT_ENV to a free port."""
    card = yaml.safe_load(cluster_yaml.read_text())
    defaults = ray_defaults("local")
    changes = [
        f"provider {card.get('provider', {}).get('type')} -> local (head_ip {head_ip}, no worker_ips); node types -> Ray's local type",
        f"auth: ssh_user {card.get('auth', {}).get('ssh_user')} -> {user}, a throwaway key (sshd on a free port: ~/.ssh/config)",
    ]
    config: dict[str, Any] = {k: card[k] for k in KEPT if k in card}
    config["max_workers"] = 0
    config["provider"] = {"type": "local", "head_ip": head_ip, "worker_ips": []}
    config["auth"] = {"ssh_user": user, "ssh_private_key": str(key)}
    setup = []
    installs = 0
    for command in card.get("setup_commands") or []:
        if _is_project_install(command):
            installs += 1
            setup.append(command)
        elif _is_torch_install(command):
            setup.append(CPU_TORCH)
            changes.append(f"setup: {command!r} -> {CPU_TORCH!r} (the CPU build; no CUDA here)")
        elif _is_corpus_download(command):
            changes.append(
                f"setup: dropped the corpus download ({' '.join(command.split())[:60]}...; no internet, the smoke preset needs none)"
            )
        else:
            setup.append(command)
    if installs != 1:
        raise ConfigError(f"{cluster_yaml}: expected one `pip install ... ~/rankcse ...` setup command, found {installs}")
    config["setup_commands"] = setup
    if card.get("head_setup_commands"):
        changes.append(f"head_setup_commands {card['head_setup_commands']} -> [] (the cloud provider's client)")
    config["head_setup_commands"] = []
    start = card.get("head_start_ray_commands") or defaults["head_start_ray_commands"]
    config["head_start_ray_commands"] = _head_start(list(start), ports)
    config["worker_start_ray_commands"] = card.get("worker_start_ray_commands") or defaults["worker_start_ray_commands"]
    where = "cluster.yaml's" if card.get("head_start_ray_commands") else "Ray's defaults (cluster.yaml leaves them to Ray)"
    changes.append(f"head start commands: {where}, with free ports instead of 6379/8265/... and {WORKER_NICENESS} (a busy shared machine)")
    return RehearsalConfig(config, ports["--port"], ports["--dashboard-port"], changes)
