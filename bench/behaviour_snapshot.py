"""Behaviour snapshot of the training loop: sha256 of each method's run files on the tiny BERT, to compare before/after a refactor.

Trains all five methods (simcse, esimcse, mixcse, infocse, promptbert) for 4 steps on the 2-layer BERT of
tests/support.py (RR on, an evaluation every 2 steps, the STS13 test at the end, one CPU thread) and prints one
sha256 per run file: ``metrics.jsonl``, ``train_log.jsonl`` and ``final.json``.

Normalised before hashing (they differ between identical runs): every key ending in ``_seconds`` (wall-clock
times) is dropped, and the run's temporary folders (absolute paths) are replaced by ``<tmp>``. Nothing else.

    python bench/behaviour_snapshot.py                      # print the hashes (JSON)
    python bench/behaviour_snapshot.py --save before.json   # keep them
    python bench/behaviour_snapshot.py --check before.json  # exit 1 if any hash differs
    python bench/behaviour_snapshot.py --against ../before  # run another checkout too (a git worktree), compare

The hashes are bit-level, so they hold for one machine: another CPU gives other floats and other hashes for the
same code (``behaviour_snapshot_before.json`` is from the machine #22's refactor was done on). To compare two
versions anywhere, ``--against`` runs both here, one after the other: ``git worktree add ../before <commit>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("RANKCSE_SNAPSHOT_ROOT") or Path(__file__).resolve().parent.parent)  # the checkout under test
sys.path.insert(0, str(ROOT / "tests"))

METHODS = ("simcse", "esimcse", "mixcse", "infocse", "promptbert")
FILES = ("metrics.jsonl", "train_log.jsonl", "final.json")


def _normalise(value: Any, tmp: str) -> Any:
    """``value`` without wall-clock times and with the temporary folder replaced by ``<tmp>``."""
    if isinstance(value, dict):
        return {k: _normalise(v, tmp) for k, v in value.items() if not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_normalise(v, tmp) for v in value]
    if isinstance(value, str):
        return value.replace(tmp, "<tmp>")
    return value


def _digest(path: Path, tmp: str) -> str:
    """sha256 of a JSON or JSON-lines file after :func:`_normalise`, record by record in file order, keys in file order."""
    text = path.read_text()
    records = [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else [json.loads(text)]
    canonical = "\n".join(json.dumps(_normalise(r, tmp)) for r in records)  # key order kept: it is part of the file
    return hashlib.sha256(canonical.encode()).hexdigest()


def snapshot(methods: tuple[str, ...] = METHODS, keep: Path | None = None) -> dict[str, str]:
    """Train ``methods`` and return ``{"<method>/<file>": sha256}``; ``keep``: copy the run folders there."""
    import torch
    from support import TINY_SENTENCES, save_tiny_bert, tiny_config

    from rankcse.train import run

    torch.set_num_threads(1)
    logging.getLogger("rankcse").setLevel(logging.WARNING)
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = save_tiny_bert(root / "tiny_bert")
        corpus = root / "tiny.txt"
        corpus.write_text("\n".join(TINY_SENTENCES) + "\n")
        for name in methods:
            cfg = tiny_config(model, corpus, method=name, max_steps=4, eval_every=2, probe_size=16, rr_coef=0.1, final_tasks=["sts13"])
            run(cfg, root / name)
            for file in FILES:
                hashes[f"{name}/{file}"] = _digest(root / name / file, tmp)
            if keep is not None:
                shutil.copytree(root / name, keep / name, dirs_exist_ok=True)
    return hashes


def snapshot_of(checkout: Path, methods: tuple[str, ...]) -> dict[str, str]:
    """:func:`snapshot` of another checkout (its ``rankcse`` and ``tests/support.py``), in a child process."""
    env = {**os.environ, "RANKCSE_SNAPSHOT_ROOT": str(checkout.resolve()), "PYTHONPATH": str(checkout.resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hashes.json"
        cmd = [sys.executable, __file__, "--save", str(out), "--only", *methods]
        subprocess.run(cmd, env=env, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the hashes to this JSON file")
    parser.add_argument("--check", type=Path, help="compare with hashes saved by --save; exit 1 on any difference")
    parser.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS), help="these methods only")
    parser.add_argument("--keep", type=Path, help="copy the run folders into this folder (to diff them)")
    parser.add_argument("--against", type=Path, help="another checkout (e.g. a git worktree of the commit before): run it too and compare")
    args = parser.parse_args()
    if args.against and not (args.against / "rankcse" / "train.py").is_file():
        parser.error(f"--against {args.against}: not a rankcse checkout (no rankcse/train.py)")
    hashes = snapshot(tuple(args.only), args.keep)
    print(json.dumps(hashes, indent=2))
    if args.save:
        args.save.write_text(json.dumps(hashes, indent=2) + "\n")
    if args.check or args.against:
        saved = snapshot_of(args.against, tuple(args.only)) if args.against else json.loads(args.check.read_text())
        differ = sorted(k for k in hashes if saved.get(k) != hashes[k])
        print("identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
