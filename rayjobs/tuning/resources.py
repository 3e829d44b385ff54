"""Connecting to Ray and checking that the cluster can ever run a trial.

A GPU request on a cluster without GPUs leaves Tune's trials pending forever, so the sweep checks
first: on a local Ray it fails at once; on a cluster it asks the autoscaler for the resources and
waits a bounded time for them.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ray

from rankcse.errors import ConfigError

log = logging.getLogger("rayjobs")
LOCAL = "local"


def connect(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Start or join Ray; return True when this process started a local Ray.

    ``address``: ``local`` starts a fresh local Ray; ``auto`` or ``host:port`` or ``ray://...`` joins
    a cluster; ``None`` joins the cluster named by ``RAY_ADDRESS`` or running on this machine (as on a
    head node under ``ray submit``), and starts a local Ray when there is none.
    """
    from ray.exceptions import AuthenticationError

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    target = address if address not in (None, LOCAL) else (None if address == LOCAL else _running_cluster())
    try:
        if target is None:
            os.environ.pop("RAY_ADDRESS", None)  # a fresh local Ray, whatever the environment names
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, log_to_driver=True, configure_logging=False)
            return True
        ray.init(address=target, log_to_driver=True, configure_logging=False)
        return False
    except AuthenticationError as exc:
        raise ConfigError(
            f"the Ray cluster at {target} refused the connection ({exc.message}); set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
            "(or ~/.ray/auth_token) as the cluster has them, or run the sweep on the head node with ray submit"
        ) from None
    except ConnectionError as exc:
        raise ConfigError(f"no Ray cluster at {target} ({exc}); start one (ray up cluster.yaml) or use --address local") from None


def _running_cluster() -> str | None:
    """Address of the cluster named by RAY_ADDRESS or started on this machine with ``ray start``, if any."""
    from rayjobs.ray_compat import get_ray_address_from_environment

    try:
        return get_ray_address_from_environment(None, None)
    except Exception:
        return None


def check_resources(
    cpus_per_trial: float, gpus_per_trial: float, local: bool, wait_seconds: float = 600.0, poll: float = 10.0
) -> dict[str, float]:
    """Make sure one trial fits on one node; return the cluster's total resources.

    A local Ray fails at once. On a cluster the autoscaler is asked for one trial's bundle and the
    check waits up to ``wait_seconds`` for a node that holds it.
    """
    need = {"CPU": float(cpus_per_trial), "GPU": float(gpus_per_trial)}
    deadline = time.monotonic() + (0 if local else wait_seconds)
    asked = False
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if any(_fits(n.get("Resources", {}), need) for n in nodes):
            return {k: float(v) for k, v in ray.cluster_resources().items()}
        if time.monotonic() >= deadline:
            break
        if not asked:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[{k: v for k, v in need.items() if v > 0}])
            asked = True
            log.warning("no node has %s yet; asked the autoscaler and waiting up to %.0f s", _fmt(need), wait_seconds)
        time.sleep(poll)
    largest = max((n.get("Resources", {}) for n in nodes), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    have = _fmt({"CPU": largest.get("CPU", 0), "GPU": largest.get("GPU", 0)})
    if need["GPU"] > 0 and largest.get("GPU", 0) < need["GPU"]:
        fix = (
            "use --gpus-per-trial 0 to train on CPUs"
            if local
            else "add GPU workers to the cluster (cluster.yaml) or lower --gpus-per-trial"
        )
        raise ConfigError(f"a trial asks for {_fmt(need)} but the largest node of this Ray cluster has {have}; {fix}")
    raise ConfigError(f"a trial asks for {_fmt(need)} but the largest node of this Ray cluster has {have}; lower --cpus-per-trial")


def check_cuda(cpus_per_trial: float, gpus_per_trial: float, timeout: float = 600.0) -> None:
    """Run a trial-sized task on a GPU node and fail at once, with the cause, when its torch sees no CUDA."""
    from rayjobs.tuning.devices import GPUWithoutCUDA, cuda_report, no_cuda_message

    probe = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)(cuda_report)
    try:
        report = ray.get(probe.remote(), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(f"no node ran a {_fmt({'CPU': cpus_per_trial, 'GPU': gpus_per_trial})} task within {timeout:.0f} s") from None
    if not report["cuda"]:
        raise GPUWithoutCUDA(no_cuda_message(gpus_per_trial, report))


def _fits(resources: dict[str, Any], need: dict[str, float]) -> bool:
    return all(float(resources.get(k, 0)) + 1e-9 >= v for k, v in need.items() if v > 0)


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items())
