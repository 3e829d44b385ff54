"""Replace a folder as a whole (a run, an export, an aggregation): build the new one beside it, then swap the two in one step.

    with replacing_folder(output_dir, owned=is_output) as work:
        ...write every file into work...

The new content is written to a staging folder beside the target; entries of the old folder that the writer does not
own (a README, notes) are carried over as hard links. The two folders are then exchanged atomically (Linux
``renameat2(RENAME_EXCHANGE)``) and the old content is deleted, so a SIGKILL at any point leaves the folder holding the
previous content whole or the new content whole. Where the exchange is not available the folder is moved aside to
``.<name>.old-<pid>`` and the new one renamed in; a kill between the two renames leaves the previous content whole
there, and the next swap (or :func:`recover`) puts it back before anything else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100
_LIBC = ctypes.CDLL(None, use_errno=True)  # the C library already loaded into this process
_RENAMEAT2 = getattr(_LIBC, "renameat2", None)


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system or the filesystem cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(entry: Path) -> int | None:
    tail = entry.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def recover(folder: Path) -> None:
    """Undo what a killed swap left beside ``folder``: put a moved-aside previous result back, drop dead staging folders."""
    parent = folder.parent
    if not parent.is_dir():
        return
    for entry in sorted(parent.glob(f".{folder.name}.old-*")):
        pid = _pid_of(entry)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue  # another aggregation is between its two renames
        if not folder.exists():
            os.rename(entry, folder)  # killed between the two renames: the previous result comes back
        else:
            shutil.rmtree(entry, ignore_errors=True)
    for entry in parent.glob(f".{folder.name}.new-*"):
        pid = _pid_of(entry)
        if pid is None or (pid != os.getpid() and not _alive(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _link_tree(source: Path, target: Path) -> None:
    """Carry ``source`` over to ``target`` as hard links (a copy where links are refused)."""
    if source.is_symlink() or not source.is_dir():
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, target, follow_symlinks=False)
        return
    shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextmanager
def replacing_folder(folder: Path, owned: Callable[[str], bool]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``folder``; on success it replaces ``folder`` whole (see the module doc).

    ``owned(name)`` says whether an entry of the old folder is the writer's (left behind) or the user's (carried over).
    """
    folder = Path(folder)
    recover(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.new-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if folder.exists():
            for entry in sorted(folder.iterdir()):
                if not owned(entry.name) and not (staging / entry.name).exists():
                    _link_tree(entry, staging / entry.name)
        replace_dir(staging, folder)
    finally:
        if staging.exists() and staging != folder:
            shutil.rmtree(staging, ignore_errors=True)


def staging_dir(target: str | os.PathLike[str], purpose: str) -> Path:
    """A fresh, empty folder beside ``target`` (same file system, so it can be swapped in); a stale one is removed first."""
    target = Path(target)
    stage = target.with_name(f".{target.name}.{purpose}-tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def replace_dir(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put folder ``new`` at ``target`` in one step, then delete the previous ``target`` (see the module doc)."""
    new, target = Path(new), Path(target)
    recover(target)
    if not target.exists():
        os.rename(new, target)
        return
    if exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the previous folder
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(target, aside)
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)
