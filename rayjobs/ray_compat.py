"""Every use of Ray internals in rayjobs, in one place, each with why it is needed.

Ray keeps none of these stable across versions, so pyproject pins Ray to the minor range tested
here. Tested with Ray 2.60.0. Before widening the pin, check each item below against the new Ray
and run tests/test_cluster_yaml.py and tests/test_sweep_ray.py (real Ray: restore and state repair).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The Ray versions every item below was checked against.
TESTED_RAY_VERSIONS = ("2.60.0",)

# --- Tune's on-disk experiment layout (rayjobs/tuning/state.py) --------------------------------------
# Tune saves its state without an atomic rename, so state.py backs the files up and repairs them
# before Tuner.restore; no public API names them. Tested with Ray 2.60.0, where they are defined as
# ray.tune.impl.tuner_internal._TUNER_PKL, TuneController.CKPT_FILE_TMPL and
# BasicVariantGenerator.CKPT_FILE_TMPL; the experiment state is JSON with its trials under "trial_data".

#: The pickled Tuner (trainable, run config, callbacks) that Tuner.restore reads.
TUNER_FILE = "tuner.pkl"
#: Name prefix of the experiment state (JSON); the other state files are pickles whatever their suffix.
EXPERIMENT_STATE_PREFIX = "experiment_state"
#: The state files Tune keeps one timestamped copy of each (it reads the newest name): experiment, search algorithm.
STATE_PATTERNS = (f"{EXPERIMENT_STATE_PREFIX}-*.json", "basic-variant-state-*.json")
#: The key of the experiment state's trial list: a whole file has it.
EXPERIMENT_STATE_TRIALS_KEY = "trial_data"


# --- Finding a running cluster (rayjobs/tuning/resources.py) -----------------------------------------


def get_ray_address_from_environment(address: str | None, temp_dir: str | None) -> str | None:
    """The address of the cluster named by RAY_ADDRESS or started on this machine with ``ray start``.

    Why: ``ray.init(address="auto")`` raises when no cluster runs, and the sweep must then start a
    local Ray instead of failing; Ray has no public call that only looks. Tested with Ray 2.60.0
    (``ray._private.services.get_ray_address_from_environment(addr, temp_dir)``).
    """
    from ray._private.services import get_ray_address_from_environment as lookup

    return lookup(address, temp_dir)


# --- The dashboard's optional packages (rayjobs/local_cluster.py) ------------------------------


def dashboard_dependency_error() -> str | None:
    """Why Ray cannot start its dashboard here (``ray[default]``'s packages missing), None when it can.

    Why: ``ray start --include-dashboard=true`` fails without those packages, so the local cluster asks
    first, with the very check Ray makes (``ray._private.utils.get_dashboard_dependency_error``, an
    import of ``ray.dashboard.optional_deps``). Tested with Ray 2.60.0.
    """
    from ray._private.utils import get_dashboard_dependency_error

    error = get_dashboard_dependency_error()
    return None if error is None else str(error)


# --- Restoring a sweep (rayjobs/sweep.py) -----------------------------------------------------


def restore_tuner(path: str, trainable: Any, resume_config: Any) -> Any:
    """``Tuner.restore`` with a full ``ray.tune.ResumeConfig``.

    Why: the public flags (resume_unfinished/resume_errored/restart_errored) cannot resume trials
    Tune lists as finished; the sweep resumes them so those Tune marked finished too early continue
    (a trial that really finished returns at once). Only the private ``_resume_config`` argument
    takes that choice. Tested with Ray 2.60.0.
    """
    from ray import tune

    return tune.Tuner.restore(path, trainable, _resume_config=resume_config)


# --- Quieting Tune's per-report checkpoint line (rayjobs/tuning/trainable.py) ---------------------------
# Why: every report with a checkpoint logs "Checkpoint successfully created" at INFO in the trial's
# log, once per evaluation; the logger is Ray's module logger, named after a private module.
# Tested with Ray 2.60.0 (ray/train/_internal/storage.py).
CHECKPOINT_LOGGER = "ray.train._internal.storage"


# --- Offline cluster-config validation (rayjobs/cluster_config.py) ----------------------------


def prepare_cluster_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Ray's own ``prepare_config`` on a copy of ``raw``, with its log lines silenced.

    Why: it is the first thing ``ray up`` runs (the provider's packaged defaults.yaml merged in,
    setup commands merged, node-type workers filled in) and it needs no cloud; Ray exposes it only
    as ``ray.autoscaler._private.util.prepare_config``. Its INFO lines go to the logger
    ``ray.autoscaler._private.util`` and its cli_logger prints a PANIC line before raising (the
    exception says the same), so both are silenced. Tested with Ray 2.60.0.
    """
    from ray.autoscaler._private.util import prepare_config

    logger = logging.getLogger("ray.autoscaler._private.util")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with _silenced():
            return prepare_config(copy.deepcopy(raw))
    finally:
        logger.setLevel(level)


def validate_prepared_cluster_config(prepared: dict[str, Any]) -> None:
    """Ray's ``validate_config``: its JSON schema plus a few cross-field checks (raises on the first error).

    Why: the same check ``ray up`` makes, offline; Ray exposes it only as
    ``ray.autoscaler._private.util.validate_config``. Tested with Ray 2.60.0.
    """
    from ray.autoscaler._private.util import validate_config

    validate_config(prepared)


def cluster_config_schema() -> dict[str, Any]:
    """The JSON schema of Ray's cluster launcher config (``ray/autoscaler/ray-schema.json``).

    Why: ``validate_config`` stops at the first error; the schema lists them all. The file is package
    data of ``ray.autoscaler``, not an API. Tested with Ray 2.60.0.
    """
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text(encoding="utf-8"))


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
