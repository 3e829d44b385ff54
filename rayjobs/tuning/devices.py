"""Which torch device a trial trains on, given the GPUs Ray gave it and the CUDA torch can see.

A trial that holds a GPU from Ray but runs a torch that sees no CUDA (a CPU build of torch on a GPU
node, or the fake GPUs of cluster-local.yaml) would silently train on CPU at a GPU's price; it fails
instead, with one line naming the cause, unless the sweep opted in with ``--allow-cpu-on-gpu``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from rankcse.errors import ConfigError


class GPUWithoutCUDA(ConfigError):
    """A trial holds a GPU from Ray but torch sees no CUDA device."""


def cuda_report() -> dict[str, Any]:
    """What this process's torch sees: CUDA availability, torch build, CUDA_VISIBLE_DEVICES, host."""
    import torch

    return {
        "cuda": bool(torch.cuda.is_available()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": socket.gethostname(),
    }


def no_cuda_message(gpus: float, report: dict[str, Any]) -> str:
    """The one-line cause of a GPU without CUDA, and the two ways out."""
    build = "a CPU-only build" if report["torch_cuda"] is None else f"built for CUDA {report['torch_cuda']}, no device found"
    return (
        f"a trial holds {gpus:g} GPU from Ray (CUDA_VISIBLE_DEVICES={report['visible']}) on {report['host']}, but torch {report['torch']} "
        f"sees no CUDA ({build}); install a CUDA build of torch on the GPU nodes, or pass --allow-cpu-on-gpu to rehearse on CPU"
    )


def trial_device(gpus: float, allow_cpu_on_gpu: bool) -> str | None:
    """The device override of a trial: ``cpu`` when it holds a GPU without CUDA and may use the CPU, else None.

    Raises :class:`GPUWithoutCUDA` when it holds a GPU without CUDA and may not.
    """
    if gpus <= 0:
        return None
    report = cuda_report()
    if report["cuda"]:
        return None
    if allow_cpu_on_gpu:
        return "cpu"
    raise GPUWithoutCUDA(no_cuda_message(gpus, report))
