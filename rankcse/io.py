"""File I/O shared by the core and the sweeps: atomic file writes, JSONL writing and reading, and the run folder's file names.

Every file a run or a sweep writes goes through :func:`atomic_path` (a temporary name in the same folder,
then one ``os.replace``), so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: Files of a run folder (``rankcse train --output-dir``, or ``<trial>/run`` in a sweep).
METRICS_FILE = "metrics.jsonl"
STEP_LOG_FILE = "train_log.jsonl"
FINAL_FILE = "final.json"
ERROR_FILE = "error.json"
CONFIG_FILE = "config.json"
PROVENANCE_FILE = "provenance.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds it is renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The JSON objects of a JSONL file, and what was wrong with it (None when whole).

    Lines that do not parse are dropped and described: a crash cuts the last line ("its last line is cut
    off"); any other bad line is counted, with the first one's number.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    cut_end = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip()
            if not text:
                continue
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                records.append(record)
            except ValueError:
                bad.append(number)
                cut_end = not line.endswith("\n")
    if not bad:
        return records, None
    where = "its last line is cut off" if bad == [max(bad)] and cut_end else f"{len(bad)} line(s) do not parse (first: line {bad[0]})"
    return records, where


def append_jsonl(handle: IO[str], record: dict[str, Any]) -> None:
    """Write ``record`` as one strict-JSON line (NumPy scalars as numbers) and flush, so a crash loses at most this line."""
    handle.write(json.dumps(record, allow_nan=False, default=_json_default) + "\n")
    handle.flush()


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with non-finite floats replaced by None, so it is strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
