"""The process a run trains in: seeds, the device and autocast dtype, stop signals, and moving batches to the device."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from rankcse.errors import ConfigError

log = logging.getLogger("rankcse")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def pick_amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 (fp16 where bf16 is unsupported) on CUDA for ``auto``, none on CPU."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (tensors, possibly in dicts, lists and tuples) with every tensor moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Stoppable(Protocol):
    """What the stop signals talk to: a loop that stops after its current step when asked."""

    stop_requested: int | None

    def request_stop(self, signum: int | None = None) -> None: ...


@contextlib.contextmanager
def stop_on_signals(loop: Stoppable) -> Iterator[None]:
    """SIGINT/SIGTERM ask ``loop`` to stop after the current step (state is consistent there); a second one stops at once.

    Outside the main thread (e.g. inside a Ray worker) signals keep their default handling. The previous handlers come back
    when the block ends.
    """

    def handler(signum: int, frame: Any) -> None:
        if loop.stop_requested is not None:
            raise KeyboardInterrupt
        loop.request_stop(signum)
        log.warning("signal %d: stopping after this step (send again to stop now)", signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: keep the default handling
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
