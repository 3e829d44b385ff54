"""What the README promises about installing and testing: CI runs its test command, and the extras bring what the tests use."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import subprocess
import sys

from support import ROOT

from rayjobs import ray_compat


def _ci():
    """.ci/run as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("ci_run", str(ROOT / ".ci" / "run"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("ci_run", loader))
    loader.exec_module(module)
    return module


def test_ci_runs_exactly_the_readme_test_command() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "run"), "--check"], capture_output=True, text=True, timeout=60)
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
