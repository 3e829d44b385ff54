"""``import rankcse`` finds the installed package from any working directory, even one holding a folder named ``rankcse``
without ``__init__.py`` (issue 19): cluster.yaml puts the checkout at ``~/rankcse``, ``ray submit`` runs the driver in ``~``,
and Ray puts the driver's working directory first on every worker's sys.path. No Ray here: a fresh interpreter in such a
folder, with sys.path as Ray gives a worker, imports what a trial imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from support import run_command

import rankcse

ROOT = Path(__file__).resolve().parent.parent
# What a Tune trial imports first (rayjobs/tuning/trainable.py -> rankcse.train -> rankcse.model_card -> `from rankcse import __version__`).
TRIAL_IMPORTS = "import rankcse.train, rankcse; print(rankcse.__file__)"


def _home_with_checkout_folder(tmp_path: Path) -> Path:
    """A home directory laid out as cluster.yaml lays out a node's: the checkout folder ~/rankcse (its root has no __init__.py)."""
    home = tmp_path / "home"
    checkout = home / "rankcse"
    (checkout / "rankcse").mkdir(parents=True)
    (checkout / "README.md").write_text("a checkout's root: no __init__.py\n")
    return home


@pytest.mark.parametrize(
    "how, code",
    [
        # Ray's worker: the driver's working directory inserted first on sys.path (ray/_private/worker.py, "add the current directory").
        ("a Ray worker of a driver started in ~", f"import os, sys; sys.path.insert(0, os.getcwd()); {TRIAL_IMPORTS}"),
        # python -c / python -m put the working directory first too (the reproduction).
        ("python -c in ~", TRIAL_IMPORTS),
    ],
)
def test_a_folder_named_rankcse_in_the_working_directory_does_not_shadow_the_package(tmp_path, how, code):
    home = _home_with_checkout_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], cwd=home, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{how}: {proc.stderr[-2000:]}"
    imported = proc.stdout.strip().splitlines()[-1]
    assert imported != "None", f"{how}: rankcse resolved to the folder {home / 'rankcse'} as a namespace package"
    assert Path(imported) == Path(rankcse.__file__), f"{how}: imported {imported}, not the installed {rankcse.__file__}"


@pytest.mark.ray
def test_a_sweep_submitted_as_ray_submit_runs_it_trains_its_trials(tmp_path, tiny_model_dir):
    """``ray submit cluster.yaml rayjobs/sweep.py`` copies the script to ``~/sweep.py`` and runs it in ``~``, next to the checkout
    folder ``~/rankcse``: here the same on a real local Ray, one trial on the tiny BERT; before the fix every trial died on import."""
    home = _home_with_checkout_folder(tmp_path)
    script = home / "sweep.py"
    script.write_text((ROOT / "rayjobs" / "sweep.py").read_text())
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt19", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("PYTHONPATH", None)  # the installed package only, as on a cluster node
    args = ["--preset", "smoke", "--methods", "simcse", "--rr-coefs", "0", "--seeds", "0", "--model", str(tiny_model_dir)]
    args += ["--max-steps", "2", "--eval-every", "2", "--set", "probe_size=64", "--set", "batch_size=8", "--set", "final_tasks=[stsb]"]
    args += ["--address", "local", "--max-failures", "0"]
    try:
        for _ in range(2):  # Ray gives a starting node a fixed 30 s to register; a busy machine can miss that once (as local_cluster)
            proc = subprocess.run([sys.executable, "sweep.py", *args], cwd=home, capture_output=True, text=True, env=env, timeout=900)
            if "timed out during startup" not in proc.stderr:
                break
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert "cannot import name" not in output, output[-4000:]
    assert proc.returncode == 0, output[-4000:]
    trials = pd.read_parquet(home / "results" / "smoke" / "trials.parquet")
    assert len(trials) == 1 and trials["status"].tolist() == ["completed"], trials.to_string()


def test_no_module_of_the_script_folder_shadows_the_standard_library():
    """``python rayjobs/sweep.py`` puts rayjobs/ first on sys.path (and Ray passes it to the trials): none of its modules or
    packages may take a standard-library name (rayjobs/statistics.py once shadowed ``statistics``, which MLflow imports)."""
    folder = ROOT / "rayjobs"
    names = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    assert names & set(sys.stdlib_module_names) == set()


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_the_sweep_script_runs_from_any_working_directory(tmp_path, where):
    """No sys.path rewrite: the script finds the installed package from the checkout and from any other folder."""
    cwd = ROOT if where == "checkout" else tmp_path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = run_command([sys.executable, str(ROOT / "rayjobs" / "sweep.py"), "--preset", "demo", "--dry-run"], 300, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "simcse_rr0.1_always_seed2" in proc.stdout
