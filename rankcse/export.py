"""``rankcse export``: copy a checkpoint (or a run's best checkpoint) into a sentence-transformers model folder with a model card."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from rankcse import checkpoint as ckpt
from rankcse import model_card
from rankcse.errors import ConfigError, ModelLoadError
from rankcse.folder_swap import replace_dir, staging_dir
from rankcse.st_export import needs_custom_module, write_sentence_transformers


def resolve_checkpoint(source: Path) -> tuple[Path, dict[str, Any] | None]:
    """The checkpoint folder behind ``source`` (a checkpoint or a run folder holding ``best/``) and the run's final scores, if any."""
    if not source.exists():
        raise ModelLoadError(f"{source} does not exist; pass a checkpoint folder (e.g. <run>/best) or a run folder")
    run_dir = source
    if ckpt.read_meta(source) is None:
        best = ckpt.find_complete(source / "best")
        if best is None or ckpt.read_meta(best) is None:
            raise ModelLoadError(f"{source} is neither a rankcse checkpoint (no {ckpt.META_FILE}) nor a run folder with a best/ checkpoint")
        source = best
    else:
        run_dir = source.parent
    final_file = run_dir / "final.json"
    final = json.loads(final_file.read_text()) if final_file.is_file() and run_dir != source else None
    return source, final


def export(source: Path, out: Path, overwrite: bool = False) -> Path:
    """Copy the checkpoint behind ``source`` to ``out`` and add the sentence-transformers files and the model card.

    The source is loaded whole before anything is written, the new folder is built beside ``out`` and swapped in at the
    end, so a bad source or a failure at any point leaves an existing ``out`` as it was.
    """
    from rankcse.build import load_for_eval

    folder, final = resolve_checkpoint(Path(source).expanduser().resolve())
    out = Path(out).expanduser().resolve()
    if out == folder or folder in out.parents:
        raise ConfigError(f"export to a new folder, not into the checkpoint {folder}")
    if out in folder.parents:
        raise ConfigError(f"{out} holds the checkpoint {folder}; export to a folder outside it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; pass a folder")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; pass --overwrite or choose another folder")
    method = load_for_eval(str(folder))  # the whole source (weights, head, metadata) reads back before OUT is touched
    stage = staging_dir(out, "export")
    try:
        shutil.copytree(folder, stage, ignore=shutil.ignore_patterns(ckpt.COMPLETE, ckpt.STATE_FILE), dirs_exist_ok=True)
        try:
            write_sentence_transformers(method, stage)
        except ValueError as exc:
            raise ConfigError(f"cannot export {folder}: {exc}") from None
        model_card.write(stage, ckpt.read_meta(stage) or {}, final, custom_module=needs_custom_module(stage))
        replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def cmd_export(args: argparse.Namespace) -> int:
    """``rankcse export``."""
    out = export(args.checkpoint, args.out, args.overwrite)
    flag = ", trust_remote_code=True" if needs_custom_module(out) else ""
    print(f"exported: {out}")
    print(f"load it: python -c \"from sentence_transformers import SentenceTransformer; m = SentenceTransformer('{out}'{flag})\"")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    p = sub.add_parser(
        "export",
        help="make a checkpoint a sentence-transformers model folder",
        description="Copy a rankcse checkpoint (or a run folder's best/) to OUT as a sentence-transformers model that embeds as rankcse "
        "evaluated it (modules.json, pooling, max length), with a model card. Checkpoints written since this version already are.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint folder (<run>/best) or run folder")
    p.add_argument("out", type=Path, help="new model folder")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


COMMANDS = {"export": cmd_export}
