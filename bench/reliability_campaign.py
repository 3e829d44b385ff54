"""Re-run the bad-input and fault campaign of issue 23 on the current code and print one table row per case.

Each case runs one command in a subprocess on a tiny BERT (random weights, the packaged tokenizer), the
tiny corpus of the tests and the first lines of STS-B dev, and reports its exit status, its last line of
output and, where the case defines one, a verdict on the files it left (e.g. ``OUT unchanged``).

Cases come from every ``bench/reliability_cases_*.py`` next to this file: each defines
``cases(scene) -> list[Case]``, so another part of the project registers its cases in a file of its own.

Usage: python bench/reliability_campaign.py [--part NAME ...] [--tree PATH] [--only SUBSTRING] [--json FILE]
(``--part ray``: only bench/reliability_cases_ray.py, the Ray side's cases, which need no model: the tiny model, corpus
and data are made only when a case asks for them. ``--tree``: run the commands against another checkout, e.g. main,
to get the "before" table. RANKCSE_CAMPAIGN_KILLS sets the SIGKILLs of the Ray side's aggregate case, 20 by default.)
``rankcse ...`` cases run in this process (``rankcse.cli.main``, from ``--tree``; a shared machine spends most of a
subprocess importing torch), any other command in a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Case:
    """One command of the campaign: ``make(work)`` prepares its files in ``work`` and returns the argv
    (``rankcse ...`` runs the CLI, ``python ...`` the interpreter); ``expect`` is the exit status a good
    outcome has; ``check(work)`` (optional) returns a short verdict on what the command left behind."""

    name: str
    make: Callable[[Path], list[str]]
    expect: int
    check: Callable[[Path], str] | None = None
    timeout: float = 300.0


class Scene:
    """Shared inputs of the cases, each made once when a case first asks: a tiny model, corpus, small SentEval data and a
    finished run."""

    def __init__(self, root: Path, tree: Path) -> None:
        self.root, self.tree = root, tree
        sys.path.insert(0, str(tree))  # before anything imports rankcse: the commands run the tree's code
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
        sys.path.insert(1, str(ROOT / "tests"))
        self._run: Path | None = None
        self._stopped: Path | None = None

    @functools.cached_property
    def model(self) -> Path:
        """A tiny BERT (random weights, the packaged tokenizer)."""
        from support import save_tiny_bert

        return save_tiny_bert(self.root / "tiny_bert")

    @functools.cached_property
    def corpus(self) -> Path:
        """The tests' tiny corpus."""
        from support import TINY_SENTENCES

        corpus = self.root / "corpus.txt"
        corpus.write_text("\n".join(TINY_SENTENCES) + "\n")
        return corpus

    @functools.cached_property
    def data(self) -> Path:
        """The first lines of STS-B and STS13, in SentEval's layout."""
        return self._small_senteval(self.root / "senteval")

    @staticmethod
    def _small_senteval(folder: Path) -> Path:
        from rankcse.paths import DEFAULT_DATA_DIR

        for sub, lines in (("STS/STSBenchmark", 301), ("STS/STS13-en-test", 150)):
            (folder / sub).mkdir(parents=True)
            for path in (DEFAULT_DATA_DIR / sub).iterdir():
                text = path.read_text(encoding="utf-8").splitlines(keepends=True)
                (folder / sub / path.name).write_text("".join(text[:lines]), encoding="utf-8")
        return folder

    def train_args(self, out: Path, *extra: str) -> list[str]:
        """``rankcse train`` on the tiny inputs: 2 steps, evaluation every step, no final test (the issue's $TR)."""
        return [
            "rankcse",
            "train",
            "--model",
            str(self.model),
            "--train-file",
            str(self.corpus),
            "--data-dir",
            str(self.data),
            "--batch-size",
            "8",
            "--probe-size",
            "16",
            "--max-steps",
            "2",
            "--eval-every",
            "1",
            "--final-tasks",
            "none",
            "--num-threads",
            "1",
            "--output-dir",
            str(out),
            *extra,
        ]

    def command(self, argv: list[str]) -> list[str]:
        """The subprocess command line of an argv starting with ``rankcse`` or ``python``."""
        head, rest = argv[0], argv[1:]
        return [sys.executable, "-m", "rankcse", *rest] if head == "rankcse" else [sys.executable, *rest]

    def rankcse(self, argv: list[str], cwd: Path | None = None) -> tuple[int | str, str]:
        """Run ``rankcse ARGS`` (argv without the leading ``rankcse``) in this process: exit status and output."""
        from rankcse.cli import main as cli_main

        buffer, here = io.StringIO(), os.getcwd()
        os.chdir(cwd or self.root)
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                try:
                    status: int | str = cli_main(argv)
                except SystemExit as exc:
                    status = exc.code if isinstance(exc.code, int) else 2
                except BaseException:  # an uncaught exception is what a user would see as a traceback
                    traceback.print_exc()
                    status = 1
        finally:
            os.chdir(here)
        return status, buffer.getvalue()

    def run(self, argv: list[str], cwd: Path | None = None, timeout: float = 300.0) -> tuple[int | str, str]:
        """Run a case's argv: ``rankcse ...`` in this process, anything else in a subprocess."""
        if argv[0] == "rankcse":
            return self.rankcse(argv[1:], cwd)
        proc = subprocess.run(self.command(argv), env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def finished_run(self, dest: Path) -> Path:
        """A copy of a finished 2-step run (best/, last/, metrics.jsonl, final.json) at ``dest``."""
        if self._run is None:
            self._run = self.root / "template_run"
            status, out = self.rankcse(self.train_args(self._run)[1:])
            if status != 0:
                raise RuntimeError(f"the template run failed: {out[-300:]}")
        shutil.copytree(self._run, dest)
        return dest

    def stopped_run(self, dest: Path) -> Path:
        """A copy of a run of 8 steps stopped by SIGTERM after its first resume checkpoint (resumable)."""
        if self._stopped is None:
            self._stopped = self.root / "template_stopped"
            argv = self.train_args(self._stopped, "--max-steps", "200", "--eval-every", "2")
            proc = subprocess.Popen(self.command(argv), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 240
            while not (self._stopped / "last" / "checkpoint.json").is_file():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the run to stop ended or stalled before its first checkpoint")
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        shutil.copytree(self._stopped, dest)
        return dest


def tree_digest(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (for 'unchanged' verdicts)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def load_cases(scene: Scene, parts: list[str] | None = None) -> list[Case]:
    """The cases of every ``reliability_cases_*.py`` next to this file (or of ``reliability_cases_<part>.py`` for each of
    ``parts``), in file-name order."""
    cases: list[Case] = []
    paths = sorted(HERE.glob("reliability_cases_*.py"))
    if parts:
        known = [p.stem.removeprefix("reliability_cases_") for p in paths]
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise SystemExit(f"reliability_campaign: error: no part {unknown[0]!r}; use one of {', '.join(known)}")
        paths = [p for p in paths if p.stem.removeprefix("reliability_cases_") in parts]
    for path in paths:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        cases.extend(module.cases(scene))
    return cases


def last_line(text: str) -> str:
    """The last non-blank, non-log line of a command's output."""
    lines = [line for line in text.splitlines() if line.strip() and not (len(line) > 9 and line[2] == ":" and line[5] == ":")]
    return lines[-1].strip() if lines else ""


def run_case(scene: Scene, case: Case) -> dict[str, object]:
    """Prepare, run and judge one case."""
    slug = "".join(c if c.isalnum() else "_" for c in case.name)[:60]
    work = scene.root / "cases" / f"{len(list((scene.root / 'cases').glob('*'))) if (scene.root / 'cases').exists() else 0:03d}_{slug}"
    work.mkdir(parents=True)
    try:
        argv = case.make(work)
        status, out = scene.run(argv, work, case.timeout)
    except subprocess.TimeoutExpired:
        status, out = "timeout", ""
    except Exception as exc:  # a case that could not be prepared is reported, not fatal to the table
        return {
            "case": case.name,
            "exit": "setup",
            "expect": case.expect,
            "verdict": "",
            "ok": False,
            "last": f"{type(exc).__name__}: {exc}",
        }
    verdict = case.check(work) if case.check else ""
    ok = status == case.expect and not verdict.startswith("BAD") and "Traceback" not in out
    lines = out.strip().splitlines()
    traceback = "Traceback" in out
    last = (lines[-1].strip() if traceback and lines else last_line(out))[:160]
    return {"case": case.name, "exit": status, "expect": case.expect, "verdict": verdict, "ok": ok, "last": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose rankcse runs the commands (default: this one)")
    parser.add_argument("--part", action="append", default=[], help="run only reliability_cases_PART.py (repeatable; default: all)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rankcse-campaign-"))
    try:
        scene = Scene(root, args.tree.resolve())
        import rankcse

        print(f"rankcse from {Path(rankcse.__file__).parent}", flush=True)
        rows = []
        print("| case | exit | expect | ok | verdict | last line |\n|---|---|---|---|---|---|", flush=True)
        for case in load_cases(scene, args.part):
            if args.only in case.name:
                rows.append(run_case(scene, case))
                r = rows[-1]
                last = str(r["last"]).replace("|", "\\|")
                print(
                    f"| {r['case']} | {r['exit']} | {r['expect']} | {'ok' if r['ok'] else 'FAIL'} | {r['verdict']} | {last} |", flush=True
                )
        good = sum(1 for r in rows if r["ok"])
        print(f"\n{good} of {len(rows)} cases as expected (tree {args.tree.resolve()})")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    finally:
        if args.keep:
            print(f"scratch: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
