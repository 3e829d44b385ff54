"""Run configuration: one dataclass holding every setting of a training run, with validation.

Unset values (``None``) of ``batch_size``, ``learning_rate`` and ``epochs`` are filled from the
method's official recipe by :meth:`TrainConfig.resolved`. YAML files and ``key=value`` overrides
map onto the same fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rankcse.errors import ConfigError
from rankcse.names import DEFAULT_PHASE_METRIC, NORMALIZATIONS, POOLERS, PROBE_METRICS, RR_KINDS, RR_TARGETS, STS_TASKS
from rankcse.rr_schedule import RRSchedule

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Largest seed: NumPy's legacy generator takes 0 .. 2**32 - 1 (torch takes more).
MAX_SEED = 2**32 - 1


def flag(default: Any, help: str, metavar: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A setting that ``rankcse train`` also takes as a flag (``--name-with-dashes``): its default, the flag's help, and the
    values it allows (shown in ``--help``; :meth:`TrainConfig.validate` checks them, with a one-line error).

    The flag's type comes from the field's type (a list: names, ``none`` for an empty list); see :func:`train_flags`.
    """
    metadata = {"help": help, "metavar": metavar, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every setting of one training run (one Tune trial)."""

    # what to train
    method: str = flag("simcse", "contrastive method: simcse, esimcse, mixcse, infocse or promptbert")
    method_args: dict[str, Any] = field(default_factory=dict)
    model: str = flag("default", "Hugging Face model name or folder; 'default' = packaged all-MiniLM-L6-v2")
    pooler: str = flag("cls", "cls = [CLS] + MLP head while training, cls_before_pooler = [CLS], mean = masked mean", choices=POOLERS)
    mlp_only_train: bool = True
    temperature: float = flag(0.05, "InfoNCE temperature")
    max_len: int = flag(32, "maximum tokens per training sentence")
    # data
    train_file: str | None = flag(None, "plain-text corpus, one sentence a line (default: packaged corpus)")
    train_dataset: str | None = flag(None, "Hugging Face dataset 'name[:config][@split][#column]'")
    max_train_sentences: int | None = flag(None, "use only the first N corpus sentences")
    data_dir: str | None = flag(None, "SentEval data folder (default: packaged copy)")
    # optimisation (None: the method's official recipe)
    batch_size: int | None = flag(None, "sentences per batch (default: the method's recipe)")
    learning_rate: float | None = flag(None, "peak learning rate (default: the method's recipe)")
    epochs: int | None = flag(None, "epochs over the corpus (default: the method's recipe)")
    max_steps: int | None = flag(None, "stop after this many optimisation steps (default: whole epochs)")
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    seed: int = flag(0, "seed of data order, dropout and head initialisation")
    # evaluation
    eval_every: int = flag(125, "evaluate on STS-B dev every K steps (and at step 0 and the end)")
    eval_batch_size: int = flag(128, "sentences per batch when embedding for evaluation")
    probe_size: int | None = flag(None, "sentences of STS-B dev in the per-step probe set (default: all 3,000)")
    rank_normalize: str = "l2"
    phase_metric: str = DEFAULT_PHASE_METRIC
    final_tasks: list[str] = flag(
        list(STS_TASKS), f"test tasks after training (default: all of {' '.join(STS_TASKS)}; none to skip)", metavar="TASK"
    )
    # rank reduction
    rr_coef: float = flag(0.0, "rank-reduction coefficient; 0 = off")
    rr_kind: str = flag("vne", "RR entropy: vne = of the eigenvalues (default), sv = of the singular values", choices=RR_KINDS)
    rr_on: str = flag("z1_post_mlp", "the representation the RR penalty sees", choices=RR_TARGETS)
    rr_schedule: str = flag("always", "always | from_step:N | warmup:N | after_peak")
    peak_patience: int = 3  # after_peak detector: evaluations below the level that declare a fall
    peak_drop: float = 0.02  # ... or one evaluation this fraction below it
    peak_plateau: int = 2  # ... or this many evaluations without a rise (0 = wait for a fall)
    peak_tolerance: float = 0.01  # a rise must exceed this fraction of the level (and 1 for an integer rank)
    # linguistic probing and transfer tasks (rankcse/evaluation/probing.py, transfer.py)
    probing_tasks: list[str] = flag(
        [], "probe these tasks during training ('generated' = the surrogates, 'senteval' = SentEval's ten; none = off)", metavar="TASK"
    )
    probing_every_evals: int = flag(4, "probe every N evaluations and at the last step (default 4; 0 = final checkpoint only)", metavar="N")
    probing_data_dir: str | None = flag(None, "folder holding SentEval's probing/ files (needed for SentEval's probing tasks)")
    probing_corpus: str | None = None  # raw sentences for the generated tasks; default: packaged corpus
    transfer_tasks: list[str] = flag(
        [], "SentEval transfer tasks scored on the best checkpoint (mr cr subj mpqa sst2 trec mrpc)", metavar="TASK"
    )
    # runtime
    device: str = flag("auto", "auto | cpu | cuda | cuda:N")
    precision: str = flag("auto", "autocast dtype on CUDA (auto = bf16, fp16 where the GPU lacks bf16; none on CPU)", choices=PRECISIONS)
    num_threads: int | None = flag(None, "torch CPU threads")
    log_every: int = flag(10, "progress line every N steps")
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


@dataclass(frozen=True)
class Flag:
    """A command-line flag of ``rankcse train`` for one :class:`TrainConfig` field."""

    name: str  #: ``--max-steps``
    dest: str  #: ``max_steps``
    type: type  #: what argparse converts the value to (``str`` for a list's items)
    help: str
    is_list: bool  #: takes any number of values; ``none`` among them is dropped
    metavar: str | None  #: ``{a,b,c}`` where the field allows only those values


def train_flags() -> list[Flag]:
    """The flags of ``rankcse train`` that set a :class:`TrainConfig` field, in field order (fields declared with :func:`flag`)."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        if "help" not in f.metadata:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        is_list = typing.get_origin(hint) is list
        typ = typing.get_args(hint)[0] if is_list else hint
        choices = f.metadata["choices"]
        metavar = "{" + ",".join(choices) + "}" if choices else f.metadata["metavar"]
        out.append(Flag("--" + f.name.replace("_", "-"), f.name, typ, f.metadata["help"], is_list, metavar))
    return out
