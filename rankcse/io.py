"""File I/O shared by the core and the sweeps: atomic writes, JSONL reading, and the run folder's file names.

Every file a run or a sweep writes goes through :func:`atomic_path` (a temporary name in the same folder,
then one ``os.replace``), so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], bool]:
    """The records of a JSONL file and whether its tail was cut (a last line without newline that does not parse).

    A line that does not parse in the middle of the file is an error (the file is not what it claims to be).
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    records = [json.loads(line) for line in lines if line.strip()]
    if not tail.strip():
        return records, False
    try:
        records.append(json.loads(tail))
        return records, False
    except json.JSONDecodeError:
        return records, True
