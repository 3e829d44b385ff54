#!/usr/bin/env python3
"""CI: prove the README's test command from nothing, in a fresh virtual environment.

    .ci/run            # apt packages if missing, a new venv in a temporary folder, then the README's test command
    .ci/run --check    # only check that STEPS below are the README's test command (also a fast test)
    .ci/run --keep     # keep the temporary venv (its path is printed)

The venv is made with ``python3 -m venv`` (no system site-packages), so a dependency the README's
install does not declare fails CI. Its steps are exactly the README's test command, run one by one
in the repository root with the venv first on PATH; each step's wall time is printed. Standard
library only: it runs before anything is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: The README's test command, step by step (joined with " && " it must equal the README's code block).
STEPS = (
    "pip install torch==2.13.0",
    "pip install -e '.[test,dev]'",
    "ruff check .",
    "ruff format --check .",
    "python -m pytest --all-tiers",
)
#: Debian packages the tests need (the SSH rehearsal of tests/test_ssh_rehearsal.py); installed only when missing.
APT_PACKAGES = ("openssh-server", "rsync", "chromium")


def readme_test_command(text: str) -> str:
    """The README's test command: the first bash block after "Run the tests" in "## Two commands on a fresh machine"."""
    section = text.split("## Two commands on a fresh machine", 1)
    if len(section) != 2 or "Run the tests" not in section[1].split("\n## ", 1)[0]:
        raise SystemExit(
            "ci: README.md has no 'Run the tests' in its section '## Two commands on a fresh machine'; put the test command back"
        )
    after = section[1].split("\n## ", 1)[0].split("Run the tests", 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, flags=re.S)
    if block is None:
        raise SystemExit("ci: README.md's 'Run the tests' is followed by no ```bash block")
    return " ".join(block.group(1).split())


def drift(text: str) -> str | None:
    """What differs between the README's test command and STEPS, None when they agree."""
    readme, ours = readme_test_command(text), " && ".join(STEPS)
    if readme == ours:
        return None
    return f"ci: README.md's test command and .ci/run's STEPS differ; make them one:\n  README:  {readme}\n  .ci/run: {ours}"


def missing_apt_packages() -> list[str]:
    """The APT_PACKAGES that dpkg does not list as installed."""
    missing = []
    for package in APT_PACKAGES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True).stdout
        if status.strip() != "install ok installed":
            missing.append(package)
    return missing


def step(name: str, cmd: list[str] | str, times: list[tuple[str, float]], **kwargs) -> None:
    """Run one step, print its wall time, stop CI with its exit status when it fails."""
    print(f"\n=== ci: {name}", flush=True)
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT, shell=isinstance(cmd, str), **kwargs).returncode
    times.append((name, time.monotonic() - started))
    print(f"=== ci: {name}: {times[-1][1]:.1f} s (exit {rc})", flush=True)
    if rc != 0:
        summary(times)
        print(f"ci: FAILED at: {name}", flush=True)
        sys.exit(rc)


def summary(times: list[tuple[str, float]]) -> None:
    print("\n=== ci: wall time per step", flush=True)
    for name, seconds in times:
        print(f"{seconds:9.1f} s  {name}")
    print(f"{sum(s for _, s in times):9.1f} s  total", flush=True)


def main(argv: list[str]) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # its lines in order with the steps' output
    problem = drift(README.read_text(encoding="utf-8"))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    if "--check" in argv:
        print("ci: README.md's test command is .ci/run's STEPS")
        return 0
    times: list[tuple[str, float]] = []
    missing = missing_apt_packages()
    if missing:
        apt = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + " ".join(missing)
        step(f"apt-get install {' '.join(missing)}", apt if os.geteuid() == 0 else f"sudo sh -c '{apt}'", times)
    else:
        print(f"ci: apt packages present: {' '.join(APT_PACKAGES)}")
    work = Path(tempfile.mkdtemp(prefix="rankcse-ci-"))
    venv = work / "venv"
    try:
        step(f"python3 -m venv {venv}", [sys.executable, "-m", "venv", str(venv)], times)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        python = subprocess.run(["python", "-c", "import sys; print(sys.executable)"], env=env, capture_output=True, text=True).stdout
        print(f"ci: venv {venv}; python on PATH: {python.strip()}")
        for command in STEPS:
            step(command, command, times, env=env)
        summary(times)
        print("ci: passed")
        return 0
    finally:
        if "--keep" in argv:
            print(f"ci: kept {venv}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
