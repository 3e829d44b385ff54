"""Checkpoints: the best model for evaluation, and the full state for resuming a run.

A best checkpoint is a Hugging Face model folder (``from_pretrained`` opens it) plus
``rankcse.json`` (the resolved run config and the evaluation representation),
``rankcse_modules.safetensors`` (head and other evaluation modules) and ``provenance.json``; it is also a
sentence-transformers model (``modules.json`` etc., see :mod:`rankcse.st_export`) with a model card (``README.md``).
A resume checkpoint adds ``trainer_state.pt``: tensors and plain Python values only, read back with
``torch.load(weights_only=True)`` so a run folder from elsewhere cannot run code when resumed. Folders
are written under a temporary name and swapped in, so a crash never leaves a half-written checkpoint in place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rankcse.errors import DataError, ModelLoadError
from rankcse.io import write_json_atomic
from rankcse.names import PRIMARY

FORMAT_VERSION = 1
META_FILE = "rankcse.json"
MODULES_FILE = "rankcse_modules.safetensors"
STATE_FILE = "trainer_state.pt"
COMPLETE = ".complete"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a scratch folder; on success it replaces ``path`` (the old copy is kept until the swap is done)."""
    path = Path(path)
    new, old = path.with_name(path.name + ".new"), path.with_name(path.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    (new / COMPLETE).touch()
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def find_complete(path: Path) -> Path | None:
    """The complete copy of a checkpoint folder, looking at the ``.old``/``.new`` siblings a crash may leave."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".new"), path.with_name(path.name + ".old")):
        if (candidate / COMPLETE).is_file():
            return candidate
    return None


def run_meta(method: Any, train_config: dict[str, Any], step: int, best: float | None) -> dict[str, Any]:
    """What a best checkpoint records of its run (``rankcse.json``): method, representation, settings, step and its score."""
    return {
        "method": train_config["method"],
        "eval_representation": method.eval_representation,
        "representation": method.representation_spec(),
        "train_config": train_config,
        "step": step,
        PRIMARY.name: best,
    }


def save_model(method: torch.nn.Module, folder: Path, meta: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Save the backbone (Hugging Face format), tokenizer, evaluation modules and metadata into ``folder``."""
    from rankcse.hf_compat import quiet_transformers

    encoder = method.encoder
    with quiet_transformers():
        encoder.backbone.save_pretrained(folder)
        encoder.tokenizer.save_pretrained(folder)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous() for name, mod in method.eval_modules().items() for k, v in mod.state_dict().items()
    }
    if tensors:
        save_file(tensors, str(folder / MODULES_FILE))
    write_json_atomic(folder / META_FILE, {"format": FORMAT_VERSION, **meta})
    write_json_atomic(folder / "provenance.json", provenance)
    write_sentence_transformers_files(method, folder, meta)


def write_sentence_transformers_files(method: torch.nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    """Add the sentence-transformers files and the model card; a representation they cannot express is logged, not fatal."""
    from rankcse import model_card
    from rankcse.st_export import needs_custom_module, write_sentence_transformers

    try:
        write_sentence_transformers(method, folder)
    except ValueError as exc:
        log.warning("%s: not written as a sentence-transformers model (%s)", folder, exc)
    model_card.write(folder, meta, custom_module=needs_custom_module(folder))


def add_final_scores(folder: Path, final: dict[str, Any]) -> None:
    """Rewrite the model card of checkpoint ``folder`` with the run's final scores (a folder without ``rankcse.json`` is left)."""
    from rankcse import model_card
    from rankcse.st_export import needs_custom_module

    meta = read_meta(folder)
    if meta is not None:
        model_card.write(folder, meta, final, custom_module=needs_custom_module(folder))


def read_meta(folder: Path) -> dict[str, Any] | None:
    """``rankcse.json`` of a checkpoint folder, or None for a plain Hugging Face model."""
    meta = Path(folder) / META_FILE
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    if data.get("format", 0) > FORMAT_VERSION:
        raise ModelLoadError(f"checkpoint {folder} was written by a newer rankcse (format {data['format']}); upgrade rankcse")
    return data


def load_eval_modules(method: torch.nn.Module, folder: Path) -> None:
    """Load the evaluation modules saved by :func:`save_model` into ``method``."""
    path = Path(folder) / MODULES_FILE
    modules = method.eval_modules()
    if not modules:
        return
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {folder} lacks {MODULES_FILE} (its head); it is incomplete")
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        from rankcse.encoder import unreadable_weights

        raise unreadable_weights(path, exc) from None
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


# -- resume state -----------------------------------------------------------------------------------


def save_resume(
    target: Path,
    progress: dict[str, Any],
    method: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    provenance: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write everything a run needs to continue (model, optimizer, scheduler, scaler, RNG, method state) to ``target``."""
    state = {
        **progress,
        "config": config,
        "method": method.state_dict(),
        "method_extra": method.extra_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "provenance": provenance,
    }
    with atomic_dir(target) as folder:
        torch.save(state, folder / STATE_FILE)
        write_json_atomic(folder / "checkpoint.json", {k: progress[k] for k in ("step", "epoch", "batch_in_epoch")})
    return target


def load_resume(folder: Path) -> dict[str, Any]:
    """The state :func:`save_resume` wrote in ``folder``, read with ``weights_only=True`` (tensors and plain values, no code)."""
    path = Path(folder) / STATE_FILE
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(
            f"resume state {path} cannot be read safely (it holds objects other than tensors and plain values); "
            "start the run again with --overwrite"
        ) from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DataError(f"resume state {path} cannot be read ({type(exc).__name__}: {first}); start again with --overwrite") from None
    if not isinstance(data, dict) or "step" not in data:
        raise DataError(f"resume state {path} is not a rankcse trainer state; start the run again with --overwrite")
    return data


def restore_training(
    data: dict[str, Any], method: Any, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler
) -> None:
    """Put a loaded resume state back into the training objects and the RNGs."""
    method.load_state_dict(data["method"])
    method.load_extra_state(data["method_extra"])
    optimizer.load_state_dict(data["optimizer"])
    scheduler.load_state_dict(data["scheduler"])
    if scaler.is_enabled() and data["scaler"]:
        scaler.load_state_dict(data["scaler"])
    torch.set_rng_state(data["rng_cpu"])
    if data["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(data["rng_cuda"])
