"""Issue 23 cases of the training core and its CLI (``train``, ``eval``, ``export``, ``probe``), for reliability_campaign.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from reliability_campaign import Case, Scene, tree_digest

USER_FILES = {"best.bak/weights.bin": b"mine", "metrics.jsonl.orig": b"old notes", "lastweek-notes.txt": b"notes", "final.json.txt": b"x"}


def _snapshot(work: Path, folder: Path) -> None:
    """Remember ``folder``'s bytes so the verdict can say whether the command changed it."""
    (work / ".before.json").write_text(json.dumps({k: v.hex() for k, v in tree_digest(folder).items()}))


def _unchanged(folder_name: str) -> object:
    def check(work: Path) -> str:
        before = {k: bytes.fromhex(v) for k, v in json.loads((work / ".before.json").read_text()).items()}
        after = tree_digest(work / folder_name)
        if after == before:
            return f"{folder_name} unchanged"
        lost = sorted(set(before) - set(after))
        return f"BAD: {folder_name} changed ({len(lost)} of {len(before)} files gone)"

    return check


def _nothing_written(folder_name: str) -> object:
    return lambda work: f"no {folder_name}" if not (work / folder_name).exists() else f"BAD: {folder_name} written"


def _export(scene: Scene, source: Path, out: Path) -> None:
    status, output = scene.rankcse(["export", str(source), str(out)])
    if status != 0:
        raise RuntimeError(f"export failed: {output[-300:]}")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cases(scene: Scene) -> list[Case]:
    """The core's cases: data loss, silent failures, tracebacks and wrong hints of issue 23."""
    tr = scene.train_args

    def export_into_own_run(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        _snapshot(work, run)
        return ["rankcse", "export", str(run / "best"), str(run), "--overwrite"]

    def overwrite_keeps_user_files(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        for name, data in USER_FILES.items():
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            (run / name).write_bytes(data)
        return tr(run, "--overwrite")

    def user_files_kept(work: Path) -> str:
        gone = [n for n, data in USER_FILES.items() if not (work / "run" / n).is_file() or (work / "run" / n).read_bytes() != data]
        whole = (work / "run" / "final.json").is_file() and (work / "run" / "best" / ".complete").is_file()
        return f"BAD: deleted {', '.join(gone)}" if gone else ("user files kept, new run whole" if whole else "BAD: new run not whole")

    def corrupt_export_overwrite(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        _export(scene, run, work / "out")
        _truncate(run / "best" / "model.safetensors")
        _snapshot(work, work / "out")
        return ["rankcse", "export", str(run), str(work / "out"), "--overwrite"]

    def corrupt_export_new(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        _truncate(run / "best" / "model.safetensors")
        return ["rankcse", "export", str(run), str(work / "out")]

    def corrupt_eval(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        _truncate(run / "best" / "model.safetensors")
        return ["rankcse", "eval", "--model", str(run / "best"), "--data-dir", str(scene.data), "--tasks", "stsb", "--split", "dev"]

    def resume_other(flag: str, value: Callable[[Path], str]) -> Callable[[Path], list[str]]:
        def make(work: Path) -> list[str]:
            run = scene.stopped_run(work / "run")
            _snapshot(work, run)
            argv = tr(run, "--max-steps", "200", "--eval-every", "2", "--resume")
            return argv + [flag, value(work)]

        return make

    def other_data(work: Path) -> str:
        other = work / "other_senteval"
        shutil.copytree(scene.data, other)
        dev = other / "STS" / "STSBenchmark" / "sts-dev.csv"
        dev.write_text("".join(dev.read_text().splitlines(keepends=True)[:150]))
        return str(other)

    def seed_run(seed: str) -> Callable[[Path], list[str]]:
        return lambda work: tr(work / "run", "--seed", seed)

    def eval_batch(size: str) -> Callable[[Path], list[str]]:
        return lambda work: [
            "rankcse",
            "eval",
            "--model",
            str(scene.model),
            "--data-dir",
            str(scene.data),
            "--tasks",
            "stsb",
            "--batch-size",
            size,
        ]

    def probe_size_too_big(work: Path) -> list[str]:
        return tr(work / "run", "--probe-size", "100000")

    def probe_size_check(work: Path) -> str:
        cfg = work / "run" / "config.json"
        if not cfg.is_file():
            return "no run"
        return f"config probe_size={json.loads(cfg.read_text())['probe_size']}"

    def diverge_no_checkpoint(work: Path) -> list[str]:
        return tr(work / "run", "--temperature", "1e-45")

    def train_into_unwritable(work: Path) -> list[str]:
        return tr(Path("/proc/rankcse-campaign/run"))

    def export_into_unwritable(work: Path) -> list[str]:
        run = scene.finished_run(work / "run")
        return ["rankcse", "export", str(run), "/proc/rankcse-campaign/out"]

    def aggregate_bad_metric(work: Path) -> list[str]:
        scene.finished_run(work / "runs" / "r1")
        return [
            "rankcse",
            "aggregate",
            str(work / "runs"),
            "--output-dir",
            str(work / "agg"),
            "--no-figures",
            "--rank-metric",
            "erank_vnee",
        ]

    return [
        Case("export RUN/best RUN --overwrite", export_into_own_run, 2, _unchanged("run")),
        Case("train --overwrite keeps user files", overwrite_keeps_user_files, 0, user_files_kept),
        Case("export CORRUPT OUT --overwrite", corrupt_export_overwrite, 2, _unchanged("out")),
        Case("export CORRUPT NEW", corrupt_export_new, 2, _nothing_written("out")),
        Case("eval truncated best/", corrupt_eval, 2),
        Case("train --resume --data-dir OTHER", resume_other("--data-dir", other_data), 2, _unchanged("run")),
        Case("train --resume --probe-size 32", resume_other("--probe-size", lambda w: "32"), 2, _unchanged("run")),
        Case("train --temperature inf", lambda w: tr(w / "run", "--temperature", "inf"), 2, _nothing_written("run")),
        Case("train --temperature nan", lambda w: tr(w / "run", "--temperature", "nan"), 2, _nothing_written("run")),
        Case("eval --batch-size -4", eval_batch("-4"), 2),
        Case("eval --batch-size 0", eval_batch("0"), 2),
        Case(
            "train --output-dir ''",
            lambda w: tr(w / "named") + ["--output-dir", ""],
            2,
            lambda w: "BAD: wrote into cwd" if any(w.iterdir()) else "cwd untouched",
        ),
        Case("train --num-threads 0", lambda w: tr(w / "run") + ["--num-threads", "0"], 2, _nothing_written("run")),
        Case("train --num-threads -1", lambda w: tr(w / "run") + ["--num-threads", "-1"], 2, _nothing_written("run")),
        Case("train --probe-size 100000", probe_size_too_big, 2, probe_size_check),
        Case("train --seed -1", seed_run("-1"), 2, _nothing_written("run")),
        Case("train --seed 99999999999999999999999", seed_run("99999999999999999999999"), 2, _nothing_written("run")),
        Case("train --temperature 1e-45 (diverges)", diverge_no_checkpoint, 2),
        Case("train into an unwritable folder", train_into_unwritable, 2),
        Case("export into an unwritable folder", export_into_unwritable, 2),
        Case("probe --tasks senteval (no data)", lambda w: ["rankcse", "probe", "--model", str(scene.model), "--tasks", "senteval"], 2),
        Case("aggregate --rank-metric erank_vnee", aggregate_bad_metric, 2, _nothing_written("agg")),
        Case(
            "probe --corpus MISSING",
            lambda w: ["rankcse", "probe", "--model", str(scene.model), "--tasks", "generated", "--corpus", str(w / "missing.txt")],
            2,
        ),
    ]
