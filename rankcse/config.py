"""Run configuration: one dataclass holding every setting of a training run, with validation.

Unset values (``None``) of ``batch_size``, ``learning_rate`` and ``epochs`` are filled from the
method's official recipe by :meth:`TrainConfig.resolved`. YAML files and ``key=value`` overrides
map onto the same fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rankcse.encoder import POOLERS
from rankcse.errors import ConfigError
from rankcse.rank import NORMALIZATIONS
from rankcse.rr import RR_KINDS, RR_TARGETS, RRSchedule

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Final test tasks, SimCSE's seven STS columns.
STS_TASKS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
#: Largest seed: NumPy's legacy generator takes 0 .. 2**32 - 1 (torch takes more).
MAX_SEED = 2**32 - 1
PROBE_METRICS = ("erank_vne", "erank_sv", "energy_rank_99", "energy_rank_95", "energy_rank_90", "stable_rank")
#: The rank that splits training into phases and drives the after_peak RR schedule: the paper's analysis rank
#: (SPEC 2.1). Chosen over erank_vne on measured peaks, see README "Which rank defines the phases".
DEFAULT_PHASE_METRIC = "energy_rank_99"


@dataclass
class TrainConfig:
    """Every setting of one training run (one Tune trial)."""

    # what to train
    method: str = "simcse"
    method_args: dict[str, Any] = field(default_factory=dict)
    model: str = "default"  # Hugging Face name or folder; "default" = packaged all-MiniLM-L6-v2
    pooler: str = "cls"  # cls (MLP head while training) | cls_before_pooler | mean
    mlp_only_train: bool = True
    temperature: float = 0.05
    max_len: int = 32
    # data
    train_file: str | None = None  # plain text, one sentence a line; default: packaged corpus
    train_dataset: str | None = None  # Hugging Face datasets name, "name[:config][@split][#column]"
    max_train_sentences: int | None = None
    data_dir: str | None = None  # SentEval layout; default: packaged copy
    # optimisation (None: the method's official recipe)
    batch_size: int | None = None
    learning_rate: float | None = None
    epochs: int | None = None
    max_steps: int | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    seed: int = 0
    # evaluation
    eval_every: int = 125
    eval_batch_size: int = 128
    probe_size: int | None = None  # sentences of STS-B dev in the probe set; None = all 3,000
    rank_normalize: str = "l2"
    phase_metric: str = DEFAULT_PHASE_METRIC
    final_tasks: list[str] = field(default_factory=lambda: list(STS_TASKS))
    # rank reduction
    rr_coef: float = 0.0
    rr_kind: str = "vne"
    rr_on: str = "z1_post_mlp"
    rr_schedule: str = "always"
    peak_patience: int = 3  # after_peak detector: evaluations below the level that declare a fall
    peak_drop: float = 0.02  # ... or one evaluation this fraction below it
    peak_plateau: int = 2  # ... or this many evaluations without a rise (0 = wait for a fall)
    peak_tolerance: float = 0.01  # a rise must exceed this fraction of the level (and 1 for an integer rank)
    # linguistic probing and transfer tasks (rankcse/evaluation/probing.py, transfer.py)
    probing_tasks: list[str] = field(default_factory=list)  # e.g. [generated] (surrogates) or [senteval]; empty = off
    probing_every_evals: int = 4  # fast probe every N evaluations and at the last step; 0 = only the final checkpoint
    probing_data_dir: str | None = None  # folder holding SentEval's probing/ files (for SentEval's tasks)
    probing_corpus: str | None = None  # raw sentences for the generated tasks; default: packaged corpus
    transfer_tasks: list[str] = field(default_factory=list)  # final SentEval transfer tasks: mr cr subj mpqa sst2 trec mrpc
    # runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on CUDA, fp32 on CPU
    num_threads: int | None = None
    log_every: int = 10
    checkpoint_every_evals: int = 1  # write the resume checkpoint every N evaluations; 0 = never
    save_best: bool = True

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with a close-match hint."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown setting {key!r}{hint}")
        return cls(**check_types(values))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML mapping of settings."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            problem = yaml_problem(exc)
            raise ConfigError(f"config file {path} is not valid YAML ({problem}); fix it or pass the settings with --set") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"config file {path} cannot be read as text ({type(exc).__name__}); pass a YAML file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all settings."""
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """Copy with some settings replaced; ``method_args.X`` keys set one method setting."""
        values = self.to_dict()
        for key, value in overrides.items():
            if key.startswith("method_args."):
                values["method_args"] = {**values["method_args"], key.split(".", 1)[1]: value}
            else:
                values[key] = value
        return TrainConfig.from_dict(values)

    # -- validation ---------------------------------------------------------------------------
    def resolved(self) -> TrainConfig:
        """Validate every setting and fill unset recipe values from the method; raise :class:`ConfigError`."""
        from rankcse.evaluation.probing import expand_tasks
        from rankcse.evaluation.transfer import transfer_task
        from rankcse.methods import build_args, get_method

        method = get_method(self.method)
        build_args(method, self.method_args)  # validates the method's own settings
        cfg = dataclasses.replace(self, method_args=dict(self.method_args), final_tasks=list(self.final_tasks))
        cfg.probing_tasks = expand_tasks(self.probing_tasks)
        cfg.transfer_tasks = [transfer_task(name).key for name in self.transfer_tasks]
        cfg.batch_size = cfg.batch_size if cfg.batch_size is not None else method.recipe.batch_size
        cfg.learning_rate = cfg.learning_rate if cfg.learning_rate is not None else method.recipe.learning_rate
        cfg.epochs = cfg.epochs if cfg.epochs is not None else method.recipe.epochs
        cfg._check(method)
        return cfg

    def _check(self, method: type) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.pooler in POOLERS, f"unknown pooler {self.pooler!r}: use one of {', '.join(POOLERS)}")
        allowed = getattr(method, "poolers", None)
        need(
            allowed is None or self.pooler in allowed,
            f"method {self.method!r} trains with pooler {' or '.join(allowed or ())}, not {self.pooler!r}",
        )
        need(_finite(self.rr_coef) and self.rr_coef >= 0, f"rr_coef must be >= 0 (0 turns RR off), got {self.rr_coef}")
        need(self.rr_kind in RR_KINDS, f"unknown rr_kind {self.rr_kind!r}: use one of {', '.join(RR_KINDS)}")
        need(self.rr_on in RR_TARGETS, f"unknown rr_on {self.rr_on!r}: use one of {', '.join(RR_TARGETS)}")
        RRSchedule.parse(self.rr_schedule)
        need(self.max_len >= 4, f"max_len must be at least 4 tokens, got {self.max_len}")
        need(self.batch_size is not None and self.batch_size >= 2, f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        need(
            self.learning_rate is not None and _finite(self.learning_rate) and self.learning_rate > 0,
            f"learning_rate must be > 0, got {self.learning_rate}",
        )
        need(self.epochs is not None and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        need(self.probe_size is None or self.probe_size >= 8, f"probe_size must be >= 8 sentences, got {self.probe_size}")
        need(_finite(self.temperature) and self.temperature > 0, f"temperature must be a finite number > 0, got {self.temperature}")
        need(0 <= self.seed <= MAX_SEED, f"seed must be a whole number from 0 to {MAX_SEED} (NumPy's seed range), got {self.seed}")
        need(
            self.num_threads is None or self.num_threads >= 1,
            f"num_threads must be >= 1 (omit it: torch decides), got {self.num_threads}",
        )
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        need(
            self.rank_normalize in NORMALIZATIONS, f"unknown rank_normalize {self.rank_normalize!r}: use one of {', '.join(NORMALIZATIONS)}"
        )
        need(self.phase_metric in PROBE_METRICS, f"unknown phase_metric {self.phase_metric!r}: use one of {', '.join(PROBE_METRICS)}")
        bad = [t for t in self.final_tasks if t not in STS_TASKS]
        need(not bad, f"unknown final task {bad[0] if bad else ''!r}: use any of {', '.join(STS_TASKS)}")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        need(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N",
        )
        need(self.peak_patience >= 1 and 0 < self.peak_drop < 1, "peak_patience must be >= 1 and peak_drop in (0, 1)")
        need(self.peak_plateau >= 0, f"peak_plateau must be >= 0 (0 = no plateau rule), got {self.peak_plateau}")
        need(0 <= self.peak_tolerance < 1, f"peak_tolerance must be in [0, 1), got {self.peak_tolerance}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.checkpoint_every_evals >= 0, "checkpoint_every_evals must be >= 0 (0 = no resume checkpoints)")
        need(not (self.train_file and self.train_dataset), "give either train_file or train_dataset, not both")
        need(self.max_train_sentences is None or self.max_train_sentences >= 2, "max_train_sentences must be >= 2")
        need(
            self.probing_every_evals >= 0,
            f"probing_every_evals must be >= 0 (0 = probe only the final checkpoint), got {self.probing_every_evals}",
        )


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Short description of a YAML error: what and where, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}"


def _type_name(hint: Any) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
    if typing.get_origin(hint) is list:
        return "a list of names"
    return names.get(typing.get_origin(hint) or hint, str(hint))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` names, or a :class:`ConfigError` naming the setting and the type it needs."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    ok = False
    if origin is bool:
        ok = isinstance(value, bool)
    elif origin is int and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int)
    elif origin is float and not isinstance(value, bool):
        ok = isinstance(value, (int, float))
    elif origin is str:
        ok = isinstance(value, str)
    elif origin is list:
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif origin is dict:
        ok = isinstance(value, dict)
    if not ok:
        raise ConfigError(f"setting {name!r} must be {_type_name(hint)}, got {value!r}")
    return value


def check_types(values: dict[str, Any]) -> dict[str, Any]:
    """Check (and where lossless, convert) every setting to its declared type, whatever its source (YAML, flags, --set, a sweep)."""
    hints = typing.get_type_hints(TrainConfig)
    return {key: _coerce(key, value, hints[key]) for key, value in values.items()}


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with a YAML value (``rr_coef=0.1``, ``final_tasks=[stsb]``, ``method_args.dup_rate=0.3``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return key.strip(), _numbers(value)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; read such strings as the floats a user means."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def dumps(cfg: TrainConfig) -> str:
    """Stable JSON text of a config."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
