"""Run only the Ray side's cases of issue 23 (bench/reliability_cases_ray.py) and print one table row per case.

The same rows as bench/reliability_campaign.py (which runs every ``reliability_cases_*.py``, these included), without
its tiny-model scene: these cases need no model.

Usage: python bench/reliability_campaign_ray.py [--tree PATH] [--only SUBSTRING] [--json FILE]
(``--tree``: run the commands against another checkout, e.g. an export of main, for the "before" table;
RANKCSE_CAMPAIGN_KILLS sets the SIGKILLs of the aggregate case, 20 by default.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reliability_cases_ray import cases  # noqa: E402


class Scene:
    """What the Ray cases use of the shared campaign's scene: the checkout under test, its environment, a scratch root."""

    def __init__(self, root: Path, tree: Path) -> None:
        self.root, self.tree = root, tree
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}

    def command(self, argv: list[str]) -> list[str]:
        """The subprocess command line of an argv starting with ``rankcse`` or ``python``."""
        head, rest = argv[0], argv[1:]
        return [sys.executable, "-m", "rankcse", *rest] if head == "rankcse" else [sys.executable, *rest]


def last_line(text: str) -> str:
    """The last non-blank, non-log line of a command's output."""
    lines = [line for line in text.splitlines() if line.strip() and not (len(line) > 9 and line[2] == ":" and line[5] == ":")]
    return lines[-1].strip() if lines else ""


def run_case(scene: Scene, case, index: int) -> dict[str, object]:
    """Prepare, run and judge one case (as bench/reliability_campaign.py does)."""
    work = scene.root / "cases" / f"{index:03d}"
    work.mkdir(parents=True)
    try:
        argv = case.make(work)
        proc = subprocess.run(scene.command(argv), env=scene.env, cwd=work, capture_output=True, text=True, timeout=case.timeout)
        status, out = proc.returncode, proc.stdout + proc.stderr
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
    traceback = "Traceback" in out
    ok = status == case.expect and not verdict.startswith("BAD") and not traceback
    lines = out.strip().splitlines()
    last = (lines[-1].strip() if traceback and lines else last_line(out))[:200]
    return {"case": case.name, "exit": status, "expect": case.expect, "verdict": verdict, "ok": ok, "last": last}


def main() -> None:
    """Run the cases; print the table and the count of cases as expected."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="checkout whose code runs the commands (default: this one)")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rankcse-campaign-ray-"))
    try:
        scene = Scene(root, args.tree.resolve())
        rows = []
        print("| case | exit | expect | ok | verdict | last line |\n|---|---|---|---|---|---|", flush=True)
        for i, case in enumerate(cases(scene)):
            if args.only in case.name:
                r = run_case(scene, case, i)
                rows.append(r)
                last = str(r["last"]).replace("|", "\\|")
                print(
                    f"| {r['case']} | {r['exit']} | {r['expect']} | {'ok' if r['ok'] else 'FAIL'} | {r['verdict']} | {last} |", flush=True
                )
        good = sum(1 for r in rows if r["ok"])
        print(f"\n{good} of {len(rows)} cases as expected (tree {args.tree.resolve()})")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
