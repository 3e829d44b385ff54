"""What a sweep runs: a grid of trial settings over a base training config, and the resources of a trial.

A :class:`SweepSpec` comes from a named preset (``rayjobs/presets/<name>.yaml``) or any YAML file of
the same shape, with command-line overrides applied on top. Every grid cell is validated as a
rankcse :class:`~rankcse.config.TrainConfig` before Ray starts, so a typo fails in a second, not
after the cluster has scaled up.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rankcse.config import TrainConfig, yaml_problem
from rankcse.errors import ConfigError
from rayjobs.layout import cell_label

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
#: The axes every sweep has (each a list; one value means the axis is fixed).
CORE_AXES = ("method", "rr_coef", "rr_schedule", "seed")
#: Settings the sweep sets per trial from its resources; a preset's ``train`` section may not.
RUNTIME_KEYS = ("device", "num_threads")
SPEC_KEYS = (
    "name",
    "description",
    "grid",
    "train",
    "resources",
    "max_concurrent",
    "max_failures",
    "keep_best_checkpoint",
    "fault",
    "allow_cpu_on_gpu",
)


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class Fault:
    """A deliberate failure in the grid cells that match ``where``, for testing fault tolerance.

    The trial raises at its first evaluation at or after ``at_step``; ``times`` limits how many of its
    attempts fail (0 = every attempt, so the trial ends errored).
    """

    where: dict[str, Any]
    at_step: int
    times: int = 0

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``key=value[,key=value...]:STEP[:TIMES]``, e.g. ``method=mixcse,seed=1:4``."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ConfigError(f"--inject-fault {text!r}: use KEY=VALUE[,KEY=VALUE...]:STEP[:TIMES], e.g. method=mixcse,seed=1:4")
        where: dict[str, Any] = {}
        for item in parts[0].split(","):
            if "=" not in item:
                raise ConfigError(f"--inject-fault {text!r}: {item!r} is not KEY=VALUE")
            key, value = item.split("=", 1)
            where[key.strip()] = yaml.safe_load(value)
        try:
            at_step, times = int(parts[1]), int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise ConfigError(f"--inject-fault {text!r}: STEP and TIMES must be integers") from None
        return cls(where, at_step, times)

    def matches(self, cell: dict[str, Any]) -> bool:
        """Whether a trial's grid cell is one of the faulty ones."""
        return all(_same(cell.get(k), v) for k, v in self.where.items())


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == 0.0


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


@dataclass
class SweepSpec:
    """A resolved sweep: grid axes, base training settings and per-trial resources."""

    name: str
    grid: dict[str, list[Any]]
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 1
    keep_best_checkpoint: bool = True
    fault: Fault | None = None
    #: A trial that holds a GPU but finds no CUDA trains on CPU instead of failing (rehearsals on fake GPUs).
    allow_cpu_on_gpu: bool = False

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> SweepSpec:
        """Build from the YAML mapping of a preset."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must hold a mapping (name, grid, train, resources, ...)")
        for key in data:
            if key not in SPEC_KEYS:
                close = difflib.get_close_matches(key, SPEC_KEYS, n=1)
                raise ConfigError(
                    f"{source}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else f"; use {', '.join(SPEC_KEYS)}")
                )
        try:
            return cls._build(data, source)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: a value has the wrong type ({exc}); grid, train, resources are mappings") from None

    @classmethod
    def _build(cls, data: dict[str, Any], source: str) -> SweepSpec:
        grid = dict(data.get("grid") or {})
        resources = dict(data.get("resources") or {})
        unknown = sorted(set(resources) - {"cpus_per_trial", "gpus_per_trial"})
        if unknown:
            raise ConfigError(f"{source}: unknown resource {unknown[0]!r}; use cpus_per_trial and gpus_per_trial")
        fault = data.get("fault")
        max_concurrent = data.get("max_concurrent")
        spec = cls(
            name=str(data.get("name") or "sweep"),
            description=str(data.get("description") or ""),
            grid={k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in grid.items()},
            train=dict(data.get("train") or {}),
            cpus_per_trial=float(resources.get("cpus_per_trial", 1)),
            gpus_per_trial=float(resources.get("gpus_per_trial", 0)),
            max_concurrent=int(max_concurrent) if max_concurrent is not None else None,
            max_failures=int(data.get("max_failures", 1)),
            keep_best_checkpoint=bool(data.get("keep_best_checkpoint", True)),
            fault=Fault(**fault) if isinstance(fault, dict) else None,
            allow_cpu_on_gpu=bool(data.get("allow_cpu_on_gpu", False)),
        )
        return spec

    @classmethod
    def load(cls, preset: str) -> SweepSpec:
        """A shipped preset by name, or a YAML file by path."""
        path = Path(preset).expanduser()
        if not path.is_file():
            if preset not in preset_names():
                raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(preset_names())} or a YAML file path")
            path = PRESET_DIR / f"{preset}.yaml"
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"preset {path} is not valid YAML ({yaml_problem(exc)})") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"preset {path} cannot be read as text ({type(exc).__name__}); pass a YAML file") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (what :meth:`from_dict` reads)."""
        return {
            "name": self.name,
            "description": self.description,
            "grid": self.grid,
            "train": self.train,
            "resources": {"cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial},
            "max_concurrent": self.max_concurrent,
            "max_failures": self.max_failures,
            "keep_best_checkpoint": self.keep_best_checkpoint,
            "fault": dataclasses.asdict(self.fault) if self.fault else None,
            "allow_cpu_on_gpu": self.allow_cpu_on_gpu,
        }

    def replace(self, **changes: Any) -> SweepSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # -- the grid ---------------------------------------------------------------------------------
    def axes(self) -> dict[str, list[Any]]:
        """Grid axes in a fixed order: the core axes first, then any others in preset order."""
        ordered = {k: self.grid[k] for k in CORE_AXES if k in self.grid}
        ordered.update({k: v for k, v in self.grid.items() if k not in ordered})
        return ordered

    def cells(self) -> list[dict[str, Any]]:
        """Every grid cell (one trial each): the cross product of the axes, less the repeats of RR-off cells.

        With ``rr_coef`` 0 the schedule changes nothing, so such a cell runs once, under the first schedule
        of the grid, and serves as the no-RR baseline of every schedule.
        """
        axes = self.axes()
        cells, seen_off = [], set()
        for combo in itertools.product(*axes.values()):
            cell = dict(zip(axes, combo))
            if _is_zero(cell.get("rr_coef")):
                key = json.dumps({k: v for k, v in cell.items() if k != "rr_schedule"}, sort_keys=True, default=str)
                if key in seen_off:
                    continue
                seen_off.add(key)
            cells.append(cell)
        return cells

    def skipped_cells(self) -> int:
        """How many cells of the cross product :meth:`cells` leaves out (RR off under a second schedule)."""
        return math.prod(len(v) for v in self.axes().values()) - len(self.cells())

    def trial_config(self, cell: dict[str, Any]) -> TrainConfig:
        """The rankcse config of one cell (unresolved: the method's recipe fills unset values later)."""
        return TrainConfig().with_overrides({**self.train, **self.runtime_settings(), **cell})

    def runtime_settings(self) -> dict[str, Any]:
        """Settings that follow from the trial's resources: the device and the CPU threads."""
        return {"device": "cuda" if self.gpus_per_trial > 0 else "cpu", "num_threads": max(1, int(self.cpus_per_trial))}

    # -- validation -------------------------------------------------------------------------------
    def validate(self, check_files: bool = True) -> list[TrainConfig]:
        """Check the spec and every cell (and that the training file exists, unless not ``check_files``); return the resolved configs."""
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ConfigError(f"sweep name {self.name!r} must be a plain folder name")
        for axis in CORE_AXES:
            if axis not in self.grid:
                raise ConfigError(f"the grid lacks the axis {axis!r} (give it one value to fix it)")
        for axis, values in self.grid.items():
            if not values:
                raise ConfigError(f"grid axis {axis!r} is empty")
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ConfigError(f"grid axis {axis!r} repeats a value: {values}")
        clash = sorted(set(self.grid) & set(self.train))
        if clash:
            raise ConfigError(f"setting {clash[0]!r} is both a grid axis and a fixed train setting; keep one")
        fixed = sorted(set(RUNTIME_KEYS) & (set(self.train) | set(self.grid)))
        if fixed:
            raise ConfigError(f"setting {fixed[0]!r} follows from the trial's resources; use --cpus-per-trial / --gpus-per-trial instead")
        if not (self.cpus_per_trial > 0):
            raise ConfigError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial:g}")
        if self.gpus_per_trial < 0 or (self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial)):
            raise ConfigError(f"gpus_per_trial must be a fraction in (0, 1] or a whole number, got {self.gpus_per_trial:g}")
        if self.max_concurrent is not None and int(self.max_concurrent) < 1:
            raise ConfigError(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures must be >= 0, got {self.max_failures}")
        if self.fault is not None:
            unknown = sorted(set(self.fault.where) - set(self.grid))
            if unknown:
                raise ConfigError(f"--inject-fault names {unknown[0]!r}, which is not a grid axis ({', '.join(self.grid)})")
            if not any(self.fault.matches(c) for c in self.cells()):
                raise ConfigError(f"--inject-fault {self.fault.where} matches no grid cell")
        configs = []
        for cell in self.cells():
            try:
                configs.append(self.trial_config(cell).resolved())
            except ConfigError as exc:
                raise ConfigError(f"grid cell {cell_label(cell)}: {exc}") from None
        missing = self.missing_train_file()
        if missing and check_files:
            raise ConfigError(missing)
        return configs

    def missing_train_file(self) -> str | None:
        """What to say when the training file is not on this machine (None when it is, or none is named)."""
        train_file = self.train.get("train_file")
        if train_file and not Path(str(train_file)).expanduser().is_file():
            return f"training file {train_file} does not exist on this machine; download it (see the preset's comment) or pass --train-file"
        return None

    def check_train_file(self) -> None:
        """Refuse a training file that is mostly not text (sampled from its start), before any trial starts."""
        train_file = self.train.get("train_file")
        if train_file and Path(str(train_file)).expanduser().is_file():
            from rankcse.corpus import read_text_corpus

            read_text_corpus(str(train_file), max_sentences=1000)
