"""SIGKILL ``rankcse train --overwrite`` and ``rankcse export --overwrite`` at random points and judge what is left.

Each round copies a finished run (seed 0, plus a file of the user's), starts the command that replaces it with
another result (seed 1), waits until the command first writes (a scratch folder beside OUT, or any change in OUT),
kills it with SIGKILL after a random further delay in [0, 1.2 x what the unkilled command took from there], and
classifies the output folder: ``previous`` (byte-identical to before), ``new`` (a whole new result: for train,
final.json, a complete best/, every evaluation row and the user's file; for export, byte-identical to an unkilled
export of the new source) or ``NEITHER`` (data lost). Prints the counts per command.

Usage: python bench/kill_overwrite.py [--kills 20] [--seed 0] [--tree PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_campaign import ROOT, Scene, tree_digest  # noqa: E402

USER_FILE = ("notes.txt", b"the user's own notes")


def _writing(out: Path, names: list[str]) -> bool:
    """Whether the command started writing: a scratch folder beside ``out`` or a change in ``out``'s names."""
    scratch = any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
    return scratch or sorted(p.name for p in out.iterdir()) != names if out.is_dir() else True


class _Forked:
    """``rankcse ARGS`` in a forked child of this process (rankcse already imported: no seconds of imports per round)."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.returncode = os.fork(), None
        if self.pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1), os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            from rankcse.cli import main as cli_main

            try:
                os._exit(cli_main(argv[1:]))
            except BaseException:
                os._exit(1)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("rankcse", timeout)
            time.sleep(0.002)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


FORK = False  # --fork


def _start(scene: Scene, argv: list[str], out: Path) -> tuple[subprocess.Popen | _Forked, float]:
    """Start ``argv``; return it once it writes (or ends), with the seconds that took."""
    names = sorted(p.name for p in out.iterdir())
    started = time.perf_counter()
    if FORK:
        proc = _Forked(argv)
    else:
        proc = subprocess.Popen(scene.command(argv), env=scene.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not _writing(out, names):
        time.sleep(0.002)
    return proc, time.perf_counter() - started


def _writing_time(scene: Scene, argv: list[str], out: Path) -> float:
    """Seconds the unkilled command spends from its first write to its end."""
    proc, until_write = _start(scene, argv, out)
    started = time.perf_counter()
    assert proc.wait() == 0, f"{argv} failed"
    return time.perf_counter() - started


def _kill_while_writing(scene: Scene, argv: list[str], out: Path, delay: float) -> bool:
    """Run ``argv`` and SIGKILL it ``delay`` seconds after its first write; whether it was still running when killed."""
    proc, _ = _start(scene, argv, out)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _new_run_whole(run: Path) -> bool:
    try:
        final = json.loads((run / "final.json").read_text())
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        seed = json.loads((run / "config.json").read_text())["seed"]
    except (OSError, ValueError, KeyError):
        return False
    user = (run / USER_FILE[0]).is_file() and (run / USER_FILE[0]).read_bytes() == USER_FILE[1]
    return seed == 1 and steps == [0, 1, 2] and final.get("steps") == 2 and (run / "best" / ".complete").is_file() and user


def kill_train(scene: Scene, kills: int, rng: random.Random) -> collections.Counter:
    """``rankcse train --overwrite`` (seed 1) over a finished run (seed 0), killed ``kills`` times."""
    work = scene.root / "kill_train"
    previous = scene.finished_run(work / "previous")
    (previous / USER_FILE[0]).write_bytes(USER_FILE[1])
    before = tree_digest(previous)
    out = work / "run"
    argv = scene.train_args(out, "--seed", "1", "--overwrite")
    shutil.copytree(previous, out)
    wall = _writing_time(scene, argv, out)
    assert _new_run_whole(out), "the unkilled --overwrite run is not whole"
    counts: collections.Counter = collections.Counter()
    for _ in range(kills):
        shutil.rmtree(out)
        shutil.rmtree(work / ".run.overwrite-tmp", ignore_errors=True)  # what a killed round leaves (the next --overwrite also would)
        shutil.copytree(previous, out)
        killed = _kill_while_writing(scene, argv, out, rng.uniform(0, 1.2 * wall))
        state = "previous" if tree_digest(out) == before else ("new" if _new_run_whole(out) else "NEITHER")
        counts[state] += 1
        counts["killed" if killed else "finished first"] += 1
    return counts


def kill_export(scene: Scene, kills: int, rng: random.Random) -> collections.Counter:
    """``rankcse export NEW OUT --overwrite`` over an export of another run, killed ``kills`` times."""
    work = scene.root / "kill_export"
    old_run = scene.finished_run(work / "old_run")
    new_run = work / "new_run"
    subprocess.run(scene.command(scene.train_args(new_run, "--seed", "1")), env=scene.env, check=True, capture_output=True)
    subprocess.run(
        scene.command(["rankcse", "export", str(old_run), str(work / "previous")]), env=scene.env, check=True, capture_output=True
    )
    argv = ["rankcse", "export", str(new_run), str(work / "out"), "--overwrite"]
    before = tree_digest(work / "previous")
    shutil.copytree(work / "previous", work / "out")
    wall = _writing_time(scene, argv, work / "out")
    after = tree_digest(work / "out")
    assert after != before, "the new export does not differ from the previous one"
    counts: collections.Counter = collections.Counter()
    for _ in range(kills):
        shutil.rmtree(work / "out")
        shutil.copytree(work / "previous", work / "out")
        killed = _kill_while_writing(scene, argv, work / "out", rng.uniform(0, 1.2 * wall))
        digest = tree_digest(work / "out")
        counts["previous" if digest == before else ("new" if digest == after else "NEITHER")] += 1
        counts["killed" if killed else "finished first"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills per command")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose rankcse runs the commands (default: this one)")
    parser.add_argument("--only", choices=("train", "export"), default=None, help="one command only")
    parser.add_argument("--fork", action="store_true", help="run each command in a forked child (fast where imports are slow)")
    args = parser.parse_args()
    global FORK
    FORK = args.fork
    root = Path(tempfile.mkdtemp(prefix="rankcse-kill-"))
    try:
        scene = Scene(root, args.tree.resolve())
        rng = random.Random(args.seed)
        for name, fn in (("train --overwrite", kill_train), ("export --overwrite", kill_export)):
            if args.only and not name.startswith(args.only):
                continue
            counts = fn(scene, args.kills, rng)
            print(
                f"{name}: {args.kills} rounds ({counts['killed']} killed, {counts['finished first']} finished first): "
                f"previous whole {counts['previous']}, new whole {counts['new']}, NEITHER {counts['NEITHER']}",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
