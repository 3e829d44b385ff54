"""rankcse.folder_swap: a folder (run, export, aggregation) is replaced whole, and a kill mid-swap is undone by the next swap."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from support import ROOT

from rankcse.folder_swap import recover, replace_dir, replacing_folder, staging_dir


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _folder(path: Path, **files: str) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_replace_dir_swaps_in_the_new_folder_and_leaves_nothing_beside_it(tmp_path) -> None:
    target = _folder(tmp_path / "run", **{"final.json": "old"})
    new = staging_dir(target, "build")
    (new / "final.json").write_text("new")
    replace_dir(new, target)
    assert _tree(target) == {"final.json": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_replacing_folder_carries_the_users_files_over(tmp_path) -> None:
    target = _folder(tmp_path / "out", **{"README.md": "my notes", "trials.parquet": "stale"})
    with replacing_folder(target, owned=lambda name: name.endswith(".parquet")) as work:
        (work / "summary.parquet").write_text("fresh")
    assert _tree(target) == {"README.md": "my notes", "summary.parquet": "fresh"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# A swap on a system without renameat2's exchange, killed (SIGKILL) between moving the old folder aside and moving the new
# one in: the worst moment of the fallback.
_KILLED_SWAP = textwrap.dedent(
    """
    import os, signal, sys
    from rankcse import folder_swap
    folder_swap.exchange = lambda a, b: False
    real_rename = os.rename
    def rename_then_die(src, dst):
        real_rename(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)
    folder_swap.os.rename = rename_then_die
    folder_swap.replace_dir(sys.argv[1], sys.argv[2])
    """
)


def _killed_swap(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    target = _folder(tmp_path / "run", **{"final.json": "previous", "metrics.jsonl": "{}\n"})
    previous = _tree(target)
    new = _folder(tmp_path / ".run.build-tmp", **{"final.json": "half-way"})
    proc = subprocess.run([sys.executable, "-c", _KILLED_SWAP, str(new), str(target)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # really killed, mid-swap
    assert not target.exists() and len(list(tmp_path.glob(".run.old-*"))) == 1  # the previous run is aside, whole
    return target, previous


def test_a_kill_between_the_fallback_renames_is_undone_by_recover(tmp_path) -> None:
    target, previous = _killed_swap(tmp_path)
    recover(target)
    assert _tree(target) == previous and not list(tmp_path.glob(".run.old-*"))


def test_the_next_swap_after_a_killed_one_starts_from_the_previous_folder(tmp_path) -> None:
    target, _ = _killed_swap(tmp_path)
    new = staging_dir(target, "again")
    (new / "final.json").write_text("next")
    replace_dir(new, target)
    assert _tree(target) == {"final.json": "next"} and not list(tmp_path.glob(".run.old-*"))
