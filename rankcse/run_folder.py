"""A run's output folder: which files are the run's, starting over, --overwrite's side-by-side build, and --resume's checks.

A run folder holds :data:`RUN_FILES` (and the user's own files, which are never touched). ``--overwrite`` builds the new
run in a scratch folder beside the old one and swaps it in when whole; ``--resume`` continues from ``last/`` only when
every setting that changes what is computed is unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankcse import checkpoint as ckpt
from rankcse.errors import CheckpointWriteError, ConfigError, TrainingCollapsed
from rankcse.folder_swap import replace_dir, staging_dir
from rankcse.io import (
    CONFIG_FILE,
    ERROR_FILE,
    FINAL_FILE,
    METRICS_FILE,
    PROVENANCE_FILE,
    STEP_LOG_FILE,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger("rankcse")

RUN_FILES = (METRICS_FILE, STEP_LOG_FILE, FINAL_FILE, ERROR_FILE, CONFIG_FILE, PROVENANCE_FILE, "best", "last")
#: Settings that may differ when a run is resumed: where the output goes and how fast it runs, the tests after training, the
#: probing measurements (they do not feed back into training or checkpoint selection), and the corpus path (its content is
#: checked by hash). Every other setting, ``data_dir`` included (STS-B dev selects the best checkpoint), must stay the same.
RESUME_MAY_CHANGE = {"log_every", "num_threads", "device", "eval_batch_size", "final_tasks", "checkpoint_every_evals", "train_file"}
RESUME_MAY_CHANGE |= {"probing_tasks", "probing_every_evals", "probing_data_dir", "probing_corpus", "transfer_tasks"}  # measurements only
#: Scratch names a run writes next to its files (checkpoint swaps, atomic writes); removed with the run.
_SCRATCH = re.compile(r"(best|last)\.(new|old)|\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.tmp-\d+")


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> tuple[Path | None, bool]:
    """Decide what to do with ``out``: ``(resume checkpoint or None, whether old run files must be cleared)``.

    Nothing is changed here, so a run that fails validation leaves an existing run untouched.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output dir {out} is a file; pass a folder")
    used = out.is_dir() and any((out / name).exists() for name in RUN_FILES)
    if used and overwrite:
        return None, True
    if used and not resume:
        raise ConfigError(f"output dir {out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    last = ckpt.find_complete(out / "last") if (resume and out.is_dir()) else None
    # Resuming a run that never wrote a checkpoint starts it afresh.
    return last, used and last is None


def is_run_file(name: str) -> bool:
    """Whether ``name`` in a run folder is one of the run's own files (or a scratch name of one), not the user's."""
    return name in RUN_FILES or _SCRATCH.fullmatch(name) is not None


def clear_run_files(out: Path) -> None:
    """Remove the files of an earlier run (exactly rankcse's own names; other files in the folder stay)."""
    for p in out.iterdir():
        if is_run_file(p.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def rescue_stale_stage(stage: Path, out: Path) -> None:
    """Move back user files a killed ``--overwrite`` left in its scratch folder (it died mid-swap); the rest is scratch."""
    if not stage.is_dir():
        return
    for p in stage.iterdir():
        if not is_run_file(p.name) and not (out / p.name).exists():
            os.rename(p, out / p.name)


class RunFolder:
    """Where a run writes: ``final`` (the folder the user named) or, while an --overwrite run is built beside the previous
    run, a scratch folder (``path``) that replaces it once the new run is whole; and the checkpoints written there."""

    def __init__(self, out: Path, resume: bool, overwrite: bool) -> None:
        self.final = self.path = out
        self.resume, self.overwrite = resume, overwrite
        #: The resume checkpoint to continue from, and whether an earlier run's files go (:func:`check_output_dir`; reads only).
        self.resume_from, self.clear = check_output_dir(out, resume, overwrite)

    @property
    def staged(self) -> bool:
        """Whether the run is built in a scratch folder beside the previous run (--overwrite)."""
        return self.path != self.final

    def open(self) -> None:
        """Make the folder ready for writing (after every input check passed): stage beside, or clear a checkpoint-less run."""
        out = self.final
        if self.clear and self.overwrite:  # build the new run beside the previous one; built() swaps it in when it is whole
            rescue_stale_stage(out.with_name(f".{out.name}.overwrite-tmp"), out)
            self.path = staging_dir(out, "overwrite")
        elif self.clear:  # a run that stopped before its first checkpoint: nothing whole to keep
            clear_run_files(out)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.resume and self.resume_from is None and self.clear:
            log.warning(
                "--resume: %s holds no whole resume checkpoint (the run stopped before its first one); starting again from step 0",
                self.path,
            )

    @contextlib.contextmanager
    def built(self) -> Iterator[None]:
        """The block that trains: a staged run replaces the previous one when the block ends (or the run collapsed: a collapse
        is a result), and is discarded on any other error, leaving the previous run as it was."""
        if not self.staged:
            yield
            return
        try:
            yield
        except TrainingCollapsed:
            self._swap_in()
            raise
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._swap_in()

    def _swap_in(self) -> None:
        """Put the new run in place of the previous run, taking the user's own files along."""
        for p in list(self.final.iterdir()):
            if not is_run_file(p.name):
                os.rename(p, self.path / p.name)
        replace_dir(self.path, self.final)
        self.path = self.final
        log.info("replaced the previous run in %s", self.final)

    def kept(self, best_step: int | None) -> str:
        """What a run that stops on an error leaves behind (``best_step``: of the saved best checkpoint), for its message."""
        if self.staged:
            return f"the previous run in {self.final} is unchanged"
        if best_step is not None:
            return f"{self.path / 'best'} keeps the best model (step {best_step})"
        return "no checkpoint was written"

    def save_best(self, method: Any, meta: dict[str, Any], provenance: dict[str, Any]) -> None:
        """Write ``best/`` (the model and its ``rankcse.json`` ``meta``) atomically; a failed write is one line naming what is intact."""
        try:
            with ckpt.atomic_dir(self.path / "best") as folder:
                ckpt.save_model(method, folder, meta, provenance)
        except (OSError, RuntimeError) as exc:
            raise write_failed("best checkpoint", self.path / "best", exc, meta["step"], self.path) from None

    def save_resume(self, progress: dict[str, Any], *training: Any) -> Path:
        """Write ``last/``, the resume checkpoint (``training``: the rest of :func:`rankcse.checkpoint.save_resume`'s arguments)."""
        target = self.path / "last"
        try:
            return ckpt.save_resume(target, progress, *training)
        except (OSError, RuntimeError) as exc:
            raise write_failed("resume checkpoint", target, exc, progress["step"], self.path) from None


def record_start(out: Path, config: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Write the config and provenance of a new run."""
    write_json_atomic(out / CONFIG_FILE, config)
    write_json_atomic(out / PROVENANCE_FILE, provenance)


def check_resumable(saved: dict[str, Any], config: dict[str, Any], corpus_sha: str | None, corpus_source: str) -> None:
    """Refuse to resume a run whose computation would change (a setting or the corpus differs); warn about harmless changes.

    ``saved`` is the resume checkpoint's data (its ``config`` and ``provenance``); ``config`` is the new run's settings.
    """
    before = saved["config"]
    changed = sorted(k for k in config if k not in RESUME_MAY_CHANGE and before.get(k) != config[k])
    if changed:
        raise ConfigError(
            f"cannot resume: setting {changed[0]!r} differs from the saved run "
            f"({before.get(changed[0])!r}); use the same settings or --overwrite"
        )
    allowed = sorted(k for k in RESUME_MAY_CHANGE if k in config and before.get(k) != config[k])
    if allowed:  # config.json keeps the values the run started with; the resume checkpoints record these
        log.warning("resuming with changed %s", ", ".join(f"{k} {before.get(k)!r} -> {config[k]!r}" for k in allowed))
    saved_corpus = saved["provenance"].get("corpus", {}).get("sha256")
    if saved_corpus and corpus_sha and saved_corpus != corpus_sha:
        raise ConfigError(
            f"cannot resume: the training corpus {corpus_source} differs from "
            "the one the run started with; use the same corpus or --overwrite"
        )


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop records after ``max_step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def rewind(out: Path, step: int) -> list[dict[str, Any]]:
    """Cut the run's logs back to ``step`` (the resume checkpoint's) and return the evaluation records up to it."""
    for name in (METRICS_FILE, STEP_LOG_FILE):
        truncate_jsonl(out / name, step)
    metrics = out / METRICS_FILE
    return [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []


def write_failed(what: str, target: Path, exc: BaseException, step: int, out: Path) -> CheckpointWriteError:
    """The one-line error for a checkpoint of run ``out`` that could not be written at ``step``: what, where, and what is intact."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write stopped short: disk full or file-size limit reached"
    last = ckpt.find_complete(out / "last")
    if last is not None:
        saved = json.loads((last / "checkpoint.json").read_text()).get("step") if (last / "checkpoint.json").is_file() else "?"
        kept = f"the last whole resume checkpoint {last} (step {saved}) is intact and --resume continues from it"
    else:
        kept = "no resume checkpoint was written yet, so --resume would start again from step 0"
    return CheckpointWriteError(f"could not write the {what} in {target} at step {step} ({why}); {kept}; free space or raise the limit")
