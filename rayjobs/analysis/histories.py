"""Find the trials under an experiment folder and read each one's full history of evaluations.

Two layouts are read:

- a Tune trial folder (``params.json`` / ``result.json``, written by ``rayjobs/sweep.py``): the
  history is ``run/metrics.jsonl`` (the trainer's own record, consistent across resumed attempts),
  or Tune's ``result.json`` when the run folder is absent; failures come from Tune's ``error.txt``;
- a plain ``rankcse train`` output folder (``config.json`` + ``metrics.jsonl``).

Histories are de-duplicated by step (a resumed attempt can report a step twice; the last report
wins) and sorted. Folders that cannot be read are returned as ``corrupt`` with the reason, never
raised.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankcse.errors import ConfigError
from rankcse.io import CONFIG_FILE, FINAL_FILE, METRICS_FILE, PROVENANCE_FILE, read_jsonl
from rayjobs.layout import META_DIR, read_sweep_record

COMPLETED, ERRORED, INCOMPLETE, CORRUPT, DUPLICATE = "completed", "errored", "incomplete", "corrupt", "duplicate"
#: A finished trial whose history of evaluations is cut (rows are missing); one whose representation collapsed.
TRUNCATED, COLLAPSED = "truncated", "collapsed"
#: Order of preference when a grid cell has several folders.
PREFERENCE = {COMPLETED: 5, TRUNCATED: 4, COLLAPSED: 3, INCOMPLETE: 2, ERRORED: 1}
#: Folders never searched for trials.
SKIP_DIRS = {"run", "best", "last", META_DIR, "__pycache__"}
CORE_KEYS = ("method", "seed", "rr_coef", "rr_schedule", "model")
#: Settings of a plain run that do not define what it computes (bookkeeping and speed): two runs differing only in
#: these are the same run. Every other setting of its config.json tells runs apart.
NOT_DEFINING = ("num_threads", "log_every", "device", "eval_batch_size", "checkpoint_every_evals", "save_best", "output_dir")


@dataclass
class Trial:
    """One trial (or plain run) as read from disk."""

    trial_id: str
    path: str  # relative to the experiment folder
    layout: str  # "tune" or "run"
    status: str
    config: dict[str, Any] = field(default_factory=dict)  # the rankcse TrainConfig settings (as far as known)
    axes: dict[str, Any] = field(default_factory=dict)  # grid cell of a sweep trial (empty for a plain run)
    records: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    error: str | None = None
    attempts_failed: int = 0
    device: str | None = None  # torch device the run trained on (its provenance.json)

    @property
    def cell(self) -> tuple:
        """What makes two trials the same run (used to spot duplicate folders): a sweep trial's grid cell, a plain
        run's whole config less the settings that do not define it."""
        if self.layout == "tune":
            keys = dict(self.axes)
        else:
            keys = {k: v for k, v in self.config.items() if k not in NOT_DEFINING}
            keys.update({k: self.config.get(k) for k in CORE_KEYS})
        return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in keys.items()))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _read_jsonl(path: Path, damage: list[str] | None = None) -> list[dict[str, Any]]:
    """JSON lines (:func:`rankcse.io.read_jsonl`); what was wrong with the file is appended to ``damage``."""
    records, where = read_jsonl(path)
    if where and damage is not None:
        damage.append(f"{path.parent.name}/{path.name}: {where}")
    return records


def expected_eval_steps(last_step: int, eval_every: int) -> list[int]:
    """The steps the trainer evaluates at up to ``last_step``: 0, every ``eval_every`` steps, and the last step."""
    return sorted({0, last_step, *range(eval_every, last_step + 1, eval_every)})


def missing_evaluations(records: list[dict[str, Any]], config: dict[str, Any], final: dict[str, Any] | None) -> list[int]:
    """Evaluation steps absent from the history, up to the final step (or the last recorded one)."""
    eval_every = config.get("eval_every")
    steps = {int(r["step"]) for r in records if isinstance(r.get("step"), (int, float)) and math.isfinite(r["step"])}
    last = (final or {}).get("steps")
    last = int(last) if isinstance(last, (int, float)) and math.isfinite(last) else max(steps, default=None)
    if not isinstance(eval_every, int) or eval_every < 1 or last is None:
        return []
    return [s for s in expected_eval_steps(last, eval_every) if s not in steps]


def _status(
    final: dict[str, Any] | None,
    error: str | None,
    damage: list[str],
    missing: list[int],
    n_records: int,
) -> tuple[str, str | None]:
    """Status and error text of a trial from what was read: collapse, a cut history and failures are all named."""
    notes = []
    if final is not None and final.get("collapsed"):
        collapse = final.get("collapse") or {}
        step, reason = collapse.get("step", final.get("steps")), collapse.get("reason", "see final.json")
        notes.append(f"representation collapsed at step {step}: {reason}")
    if missing:
        shown = ", ".join(str(s) for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        notes.append(f"history cut: {len(missing)} evaluation(s) missing (steps {shown}); {n_records} row(s) remain")
    notes += damage
    if error:
        notes.append(error)
    if final is not None:
        status = COLLAPSED if final.get("collapsed") else (TRUNCATED if missing or damage else COMPLETED)
    else:
        status = ERRORED if error else INCOMPLETE
    return status, "; ".join(notes) or None


def dedupe_by_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (the last one reported), sorted by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for record in records:
        step = record.get("step")
        if isinstance(step, (int, float)) and math.isfinite(step):
            by_step[int(step)] = record
    return [by_step[s] for s in sorted(by_step)]


def _tune_error(folder: Path) -> tuple[str | None, int]:
    """The last failure message in Tune's ``error.txt`` and how many failures it lists."""
    path = folder / "error.txt"
    if not path.is_file():
        return None, 0
    text = path.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    failures = sum(1 for ln in lines if ln.startswith("Failure #"))
    message = next(
        (
            ln
            for ln in reversed(lines)
            if not ln.startswith(("File ", "^", "Failure #", "Traceback", "The above exception", "During handling"))
        ),
        None,
    )
    return message, failures or (1 if lines else 0)


def read_sweep_spec(experiment_dir: Path) -> dict[str, Any] | None:
    """The spec ``rayjobs/sweep.py`` recorded for the experiment (``.rankcse/sweep.json``), if any."""
    try:
        return read_sweep_record(experiment_dir)["spec"]
    except (ConfigError, KeyError):
        return None


def read_tune_trial(folder: Path, root: Path, spec: dict[str, Any] | None = None) -> Trial:
    """A trial folder written by Tune (and ``rayjobs/tuning/trainable.py``); ``spec`` is the sweep's recorded spec."""
    rel = folder.relative_to(root).as_posix()
    damage: list[str] = []
    try:
        params = _read_json(folder / "params.json") if (folder / "params.json").is_file() else None
        tune_damage: list[str] = []  # Tune's own log; it is the history only when the run folder is absent
        rows = _read_jsonl(folder / "result.json", tune_damage) if (folder / "result.json").is_file() else []
        if params is None:
            params = next((r["config"] for r in rows if isinstance(r.get("config"), dict)), None)
        if not isinstance(params, dict):
            raise ValueError("no params.json (the trial's grid cell)")
        axes = dict(params)  # Tune's param space is the grid cell
        run = folder / "run"
        fixed = dict((spec or {}).get("train") or {})
        config = _read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).is_file() else {**fixed, **axes}
        if (run / METRICS_FILE).is_file():
            records = _read_jsonl(run / METRICS_FILE, damage)
        else:
            records = [r for r in rows if r.get("kind") == "eval"]
            damage, tune_damage = tune_damage, []
        final = _read_json(run / FINAL_FILE) if (run / FINAL_FILE).is_file() else None
        if final is None:
            last = next((r for r in reversed(rows) if r.get("kind") == "final"), None)
            if last is not None:
                final = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("final/")}
                final.setdefault("steps", last.get("step"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Trial(trial_id=folder.name, path=rel, layout="tune", status=CORRUPT, error=f"unreadable trial folder: {exc}")
    error, failures = _tune_error(folder)
    # Tune's id is in every result row; a trial that never reported has it at the start of its folder name.
    trial_id = str(rows[0]["trial_id"]) if rows and rows[0].get("trial_id") else "_".join(folder.name.split("_")[:2])
    records = dedupe_by_step(records)
    if not isinstance(config, dict):
        return Trial(folder.name, rel, "tune", CORRUPT, error="unreadable trial folder: run/config.json is not a mapping")
    if final is not None and not isinstance(final, dict):
        return Trial(folder.name, rel, "tune", CORRUPT, error="unreadable trial folder: run/final.json is not a mapping")
    status, note = _status(final, error, damage, missing_evaluations(records, config, final), len(records))
    if tune_damage:  # the run folder's history is whole; still say that Tune's log is damaged
        note = "; ".join([*([note] if note else []), *(f"{d} (Tune's log; the run folder's history is used)" for d in tune_damage)])
    return Trial(trial_id, rel, "tune", status, config, axes, records, final, note, failures, _device(run))


def read_plain_run(folder: Path, root: Path) -> Trial:
    """An output folder of ``rankcse train``."""
    rel = folder.relative_to(root).as_posix() or "."
    damage: list[str] = []
    try:
        config = _read_json(folder / CONFIG_FILE)
        records = _read_jsonl(folder / METRICS_FILE, damage) if (folder / METRICS_FILE).is_file() else []
        final = _read_json(folder / FINAL_FILE) if (folder / FINAL_FILE).is_file() else None
        error = _read_json(folder / "error.json").get("error") if (folder / "error.json").is_file() else None
        if not isinstance(config, dict):
            raise ValueError("config.json is not a mapping")
        if final is not None and not isinstance(final, dict):
            raise ValueError("final.json is not a mapping")
    except (OSError, ValueError, AttributeError) as exc:
        return Trial(trial_id=rel, path=rel, layout="run", status=CORRUPT, error=f"unreadable run folder: {exc}")
    records = dedupe_by_step(records)
    if final is not None and final.get("collapsed"):
        error = None  # error.json repeats the collapse that final.json records
    status, note = _status(final, error, damage, missing_evaluations(records, config, final), len(records))
    return Trial(rel, rel, "run", status, config, {}, records, final, note, 1 if error else 0, _device(folder))


def _device(run: Path) -> str | None:
    """The device a run trained on, from its provenance record (None before it started)."""
    try:
        device = _read_json(run / PROVENANCE_FILE).get("device")
    except (OSError, ValueError, AttributeError):
        return None
    return str(device) if device is not None else None


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """(folder, layout) of every trial folder under ``root`` (not descending into a trial)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        names = {e.name for e in entries}
        if "params.json" in names or "result.json" in names:
            yield folder, "tune"
            continue
        if CONFIG_FILE in names and (METRICS_FILE in names or FINAL_FILE in names):
            yield folder, "run"
            continue
        stack.extend(
            Path(e.path)
            for e in entries
            if e.is_dir(follow_symlinks=False) and e.name not in SKIP_DIRS and not e.name.startswith("checkpoint_")
        )


def read_experiment(root: str | Path) -> list[Trial]:
    """Every trial under ``root``, sorted by path; repeated grid cells are marked ``duplicate`` but for the best one."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        from rankcse.errors import DataError

        raise DataError(f"experiment folder {root} does not exist; pass the folder a sweep or `rankcse train` wrote")
    specs: dict[Path, dict[str, Any] | None] = {}

    def spec_of(folder: Path) -> dict[str, Any] | None:
        if folder.parent not in specs:
            specs[folder.parent] = read_sweep_spec(folder.parent)
        return specs[folder.parent]

    trials = [read_tune_trial(f, root, spec_of(f)) if layout == "tune" else read_plain_run(f, root) for f, layout in _walk(root)]
    trials.sort(key=lambda t: t.path)
    _settings_as_axes(trials)
    rank = PREFERENCE
    best: dict[tuple, Trial] = {}
    for t in trials:
        if t.status == CORRUPT:
            continue
        kept = best.get(t.cell)
        if kept is None or (rank[t.status], len(t.records)) > (rank[kept.status], len(kept.records)):
            if kept is not None:
                kept.status = DUPLICATE
            best[t.cell] = t
        else:
            t.status = DUPLICATE
    return trials


def _settings_as_axes(trials: list[Trial]) -> None:
    """Give plain runs the settings that tell them apart as grid axes (as a sweep's ``--grid`` would): runs that differ
    in, say, batch size are then separate conditions in the tables, not seeds of one."""
    plain = [t for t in trials if t.layout == "run" and t.status != CORRUPT]
    keys = sorted({k for t in plain for k in t.config} - set(NOT_DEFINING) - set(CORE_KEYS))
    varying = [k for k in keys if len({json.dumps(t.config.get(k), sort_keys=True, default=str) for t in plain}) > 1]
    for t in plain:
        for key in varying:
            value = t.config.get(key)
            t.axes[key] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
