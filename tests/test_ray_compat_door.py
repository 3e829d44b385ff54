"""Ray internals have one door, rayjobs/ray_compat.py (issue 22): ruff's banned-API rule (TID251, pyproject.toml) fails on a
private Ray module imported anywhere else, and the checkout has no such import outside the door."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAK = "from ray._private.services import get_node_ip_address\n\nprint(get_node_ip_address())\n"


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``ruff check`` under the project's config; ruff comes with the [dev] extra the README's test command installs."""
    cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", *args]
    proc = subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in proc.stderr, "ruff is missing: pip install -e '.[test,dev]' (the README's test command)"
    return proc


@pytest.mark.parametrize("where", ["rayjobs/tuning/leak.py", "rayjobs/analysis/leak.py", "tests/test_leak.py", "bench/leak.py"])
def test_a_ray_internal_imported_outside_the_door_fails_ruff(where):
    proc = _ruff("--select", "TID251", "--stdin-filename", where, "-", stdin=LEAK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "TID251 `ray._private` is banned" in proc.stdout


def test_the_door_itself_may_import_them():
    proc = _ruff("--select", "TID251", "--stdin-filename", "rayjobs/ray_compat.py", "-", stdin=LEAK)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_checkout_imports_no_ray_internal_outside_the_door():
    proc = _ruff("--select", "TID251", ".")
    assert proc.returncode == 0, proc.stdout


def test_a_ray_outside_the_tested_versions_gets_a_one_line_warning(monkeypatch):
    """TESTED_RAY_VERSIONS is read: the sweep prints this line at start when the installed Ray is not one of them."""
    import ray

    from rayjobs import ray_compat

    assert ray.__version__ in ray_compat.TESTED_RAY_VERSIONS  # pyproject's pin installs a tested Ray
    assert ray_compat.untested_ray_warning() is None
    monkeypatch.setattr(ray, "__version__", "2.99.0")
    line = ray_compat.untested_ray_warning()
    assert line is not None and "\n" not in line and "Ray 2.99.0" in line and "2.60.0" in line
