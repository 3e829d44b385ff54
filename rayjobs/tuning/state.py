"""Keeping a sweep's Tune experiment state restorable.

Tune writes its experiment state (the pickled Tuner and the experiment and search-algorithm state
files named in :mod:`rayjobs.ray_compat`) without an atomic rename, so a driver killed while saving can leave
an empty or cut-off file, and ``Tuner.restore`` then silently starts a new, empty experiment.
:class:`StateBackup` (a Tune callback on the driver) copies every state file that parses into
``.rankcse/state_backup/``; :func:`prepare_resume` checks the files before a restore and puts the
last good copy back where one is broken, or refuses with a message that says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from rankcse.errors import ConfigError
from rankcse.io import write_json_atomic
from rayjobs.layout import BACKUP_DIR, meta_dir, spec_path
from rayjobs.ray_compat import EXPERIMENT_STATE_PREFIX, EXPERIMENT_STATE_TRIALS_KEY, STATE_PATTERNS, TUNER_FILE

log = logging.getLogger("rayjobs")


def write_spec(experiment_dir: Path, record: dict[str, Any]) -> None:
    """Write the sweep record atomically."""
    path = spec_path(experiment_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def valid_state_file(path: Path) -> bool:
    """Whether a Tune state file is whole: the experiment state is JSON, the others are pickles (whatever their suffix)."""
    try:
        data = path.read_bytes()
        if not data:
            return False
        if path.name.startswith(EXPERIMENT_STATE_PREFIX):
            parsed = json.loads(data)
            return isinstance(parsed, dict) and isinstance(parsed.get(EXPERIMENT_STATE_TRIALS_KEY), list)
        pickle.loads(data)  # the Tuner and search-algorithm state: only our own trusted experiment folder is read here
        return True
    except Exception:
        return False


def _newest(experiment_dir: Path, pattern: str) -> Path | None:
    files = sorted(experiment_dir.glob(pattern))  # names end in a sortable timestamp; Tune reads the last
    return files[-1] if files else None


class StateBackup(Callback):
    """Copy Tune's state files into the backup folder whenever they change and parse."""

    def __init__(self, experiment_dir: Path, every_seconds: float = 2.0) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.backup = meta_dir(self.experiment_dir) / BACKUP_DIR
        self.every = every_seconds
        self._last = 0.0
        self._seen: dict[str, float] = {}

    def _sync(self) -> None:
        self.backup.mkdir(parents=True, exist_ok=True)
        candidates = [self.experiment_dir / TUNER_FILE] + [p for pat in STATE_PATTERNS if (p := _newest(self.experiment_dir, pat))]
        for path in candidates:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if self._seen.get(path.name) == mtime or not valid_state_file(path):
                continue
            tmp = self.backup / f"{path.name}.partial"  # keeps the name prefix valid_state_file looks at
            shutil.copy2(path, tmp)
            if valid_state_file(tmp):
                for pattern in STATE_PATTERNS:  # keep one copy of each kind
                    if path.match(pattern):
                        for old in self.backup.glob(pattern):
                            if old.name != path.name:
                                old.unlink()
                os.replace(tmp, self.backup / path.name)
                self._seen[path.name] = mtime
            else:
                tmp.unlink(missing_ok=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._sync()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._sync()


def prepare_resume(experiment_dir: Path) -> list[str]:
    """Make the newest state files of ``experiment_dir`` whole before ``Tuner.restore``; return what was repaired.

    A broken newest file is moved to ``.rankcse/state_backup/broken/``; if an older file of the same
    kind is whole Tune reads that one, else the backup copy is put back. Raises :class:`ConfigError`
    when no whole copy exists.
    """
    experiment_dir = Path(experiment_dir)
    backup = meta_dir(experiment_dir) / BACKUP_DIR
    repaired: list[str] = []
    for pattern in (TUNER_FILE, *STATE_PATTERNS):
        newest = _newest(experiment_dir, pattern)
        if newest is not None and valid_state_file(newest):
            continue
        if newest is not None:
            broken = backup / "broken"
            broken.mkdir(parents=True, exist_ok=True)
            how = "empty" if newest.stat().st_size == 0 else "cut off"
            os.replace(newest, broken / newest.name)
            repaired.append(f"{newest.name} was {how} (the driver was stopped while Tune saved it); moved to {broken}")
            while (older := _newest(experiment_dir, pattern)) is not None and not valid_state_file(older):
                os.replace(older, broken / older.name)
        older = _newest(experiment_dir, pattern)
        saved = max((p for p in backup.glob(pattern) if valid_state_file(p)), default=None) if backup.is_dir() else None
        if saved is not None and (older is None or saved.name >= older.name):
            shutil.copy2(saved, experiment_dir / saved.name)
            repaired.append(f"restored {saved.name} from the last whole copy in {backup}")
        elif older is None:
            raise ConfigError(
                f"cannot resume {experiment_dir}: Tune's {pattern} is missing or broken and no whole copy was kept; "
                "start the sweep again with --overwrite"
            )
    return repaired
