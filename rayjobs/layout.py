"""The experiment folder's layout and its trial labels, shared by the sweep (which writes them) and the analysis (which reads them).

Imports neither Ray nor torch: ``rayjobs.analysis`` reads experiments with it.

    <storage>/<name>/                 the experiment (Tune's folder)
        .rankcse/sweep.json           the spec the sweep started with (:func:`spec_path`)
        .rankcse/state_backup/        copies of Tune's state files (rayjobs.tuning.state)
        .rankcse/trackers.json        the trackers' run ids (rayjobs.tuning.trackers)
        .rankcse/wandb/               W&B's local files
        <trial folder>/...            one per grid cell, named after :func:`cell_label`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankcse.errors import ConfigError


def cell_label(cell: dict[str, Any]) -> str:
    """Short, file-name-safe label of a grid cell, e.g. ``simcse_rr0.1_always_seed0``."""
    parts = []
    for key, value in cell.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if key == "method":
            parts.append(text)
        elif key == "rr_coef":
            parts.append(f"rr{text}")
        elif key == "rr_schedule":
            parts.append(text)
        elif key == "seed":
            parts.append(f"seed{text}")
        else:
            parts.append(f"{key.split('.')[-1]}={text}")
    return "_".join("".join(ch if ch.isalnum() or ch in "._=-" else "-" for ch in p) for p in parts)


#: The sweep's own folder inside the experiment: its record, state backup and tracker state.
META_DIR = ".rankcse"
#: The sweep's own record (the spec it was started with): ``<experiment>/.rankcse/sweep.json``.
SPEC_FILE = "sweep.json"
#: Copies of Tune's state files: ``<experiment>/.rankcse/state_backup``.
BACKUP_DIR = "state_backup"
#: The trackers' run ids, for a resumed sweep: ``<experiment>/.rankcse/trackers.json``.
TRACKERS_FILE = "trackers.json"
#: W&B's local files: ``<experiment>/.rankcse/wandb``.
WANDB_DIR = "wandb"


def meta_dir(experiment_dir: Path) -> Path:
    """The sweep's own folder inside the experiment."""
    return Path(experiment_dir) / META_DIR


def spec_path(experiment_dir: Path) -> Path:
    """Where the sweep's own record lives."""
    return meta_dir(experiment_dir) / SPEC_FILE


def read_sweep_record(experiment_dir: Path) -> dict[str, Any]:
    """The record written when the sweep started; a ConfigError says what is wrong when it is missing or corrupt."""
    path = spec_path(experiment_dir)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{experiment_dir} is not a rankcse sweep (no {META_DIR}/{SPEC_FILE}); check --storage-path and --name") from None
    except (OSError, ValueError):
        raise ConfigError(f"{path} is corrupt; start the sweep again with --overwrite") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is corrupt; start the sweep again with --overwrite")
    return record
