"""What the README promises about installing and testing: CI runs its test command, the extras bring what the tests use,
and a subprocess that outlives its (scaled) timeout fails its test saying what was still running."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest
from support import ROOT, TIMEOUT_SCALE_ENV, run_command, scaled

from rayjobs import ray_compat


def _ci():
    """.ci/ci.py (the steps that CI's `bash .ci/run` runs) as a module."""
    loader = importlib.machinery.SourceFileLoader("ci_run", str(ROOT / ".ci" / "ci.py"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("ci_run", loader))
    loader.exec_module(module)
    return module


def test_ci_runs_exactly_the_readme_test_command() -> None:
    # CI runs `bash .ci/run`: the check goes through that same entry
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ci = _ci()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ci.readme_test_command(readme) == " && ".join(ci.STEPS) and ci.STEPS[-1].startswith("python -m pytest --all-tiers")
    # the check can fail: a README whose command lost a step, or gained one, drifts from .ci/run
    lost_a_step = readme.replace(" && ruff format --check .", "", 1)
    fast_tier_only = readme.replace("python -m pytest --all-tiers", "python -m pytest", 1)
    for changed in (lost_a_step, fast_tier_only):
        assert changed != readme and "differ" in ci.drift(changed)


def _extra(name: str) -> set[str]:
    """The requirements (as written, less the marker) that the installed rankcse's extra ``name`` adds."""
    requires = importlib.metadata.requires("rankcse") or []
    return {r.split(";")[0].replace(" ", "") for r in requires if f'extra == "{name}"' in r}


def test_the_test_extra_brings_the_dashboard_and_its_packages_are_importable() -> None:
    assert _extra("dashboard") and _extra("dashboard") <= _extra("test")  # [test] includes [dashboard]: the dashboard tests need it
    missing = ray_compat.dashboard_dependency_error()
    assert missing is None, f"ray[default]'s dashboard packages are not importable ({missing}): pip install -e '.[test]'"


def test_a_subprocess_timeout_scales_and_says_what_was_still_running(monkeypatch) -> None:
    monkeypatch.setenv(TIMEOUT_SCALE_ENV, "0.5")
    assert scaled(600) == 300
    code = "import time; print('training step 7 of 10', flush=True); time.sleep(60)"
    with pytest.raises(pytest.fail.Exception) as failure:
        run_command([sys.executable, "-c", code], 10)  # 5 s at scale 0.5
    message = str(failure.value)
    assert message.startswith("still running after 5 s (RANKCSE_TEST_TIMEOUT_SCALE=0.5") and "time.sleep(60)" in message
    assert message.endswith("--- its last output ---\ntraining step 7 of 10")
