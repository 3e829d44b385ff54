"""Every use of Ray internals in rayjobs, in one place, each with why it is needed.

Ray keeps none of these stable across versions, so pyproject pins Ray to the minor range tested
here. Tested with Ray 2.60.0. Before widening the pin, check each item below against the new Ray
and run tests/test_cluster_yaml.py, tests/test_sweep_ray.py (real Ray: restore and state repair),
tests/test_trackers_ray.py and tests/test_local_cluster.py. The rest of rayjobs may not import a
private Ray module: ruff's banned-API rule (TID251, pyproject.toml) fails on one outside this file.
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


def untested_ray_warning() -> str | None:
    """One line saying the installed Ray is not a version this file was checked against, None when it is.

    Why: the sweep (rayjobs/tuning/driver.py) prints it at start, so a failure inside one of the
    internals below is read against the right cause."""
    import ray

    if ray.__version__ in TESTED_RAY_VERSIONS:
        return None
    return (
        f"warning: Ray {ray.__version__} is not a version rayjobs was tested with ({', '.join(TESTED_RAY_VERSIONS)}); "
        "its use of Ray internals (rayjobs/ray_compat.py) may break: install the pinned range (pip install -e .)"
    )


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


def experiment_state_files(experiment_dir: Path) -> list[Path]:
    """Tune's experiment state files in ``experiment_dir`` (one timestamped name per save), oldest first."""
    return sorted(Path(experiment_dir).glob(STATE_PATTERNS[0]))


# --- The trial's folder (rayjobs/tuning/trainable.py) -------------------------------------------


def trial_folder() -> Path:
    """The running trial's folder in the experiment (where Tune writes its result.json), from inside the trial.

    Why: the trainable keeps its run (metrics, checkpoints, final.json) beside Tune's files so that
    the aggregator and a resumed trial find it; Tune names the folder only through the DeveloperAPI
    ``get_storage()``, which returns ``ray.train._internal.storage.StorageContext``. Tested with Ray 2.60.0.
    """
    from ray import tune

    return Path(tune.get_context().get_storage().trial_fs_path)


# --- Tracker callbacks (rayjobs/tuning/trackers.py) ---------------------------------------------


def mlflow_trial_runs(callback: Any) -> dict[Any, str]:
    """The MLflow run id of each trial an ``MLflowLoggerCallback`` has started (the callback's own dict, shared).

    Why: the sweep's subclass names each trial's run after its grid cell and makes it a child of the
    sweep's run, so it starts the runs itself; Tune's own ``log_trial_end`` then finds them in this
    private attribute (``_trial_runs``). Tested with Ray 2.60.0.
    """
    return callback._trial_runs


def wandb_trial_start(cls: type) -> type:
    """Class decorator for a ``WandbLoggerCallback`` subclass: its ``trial_start(trial, exclude, init_kwargs)`` returns the
    keys to leave out and the ``wandb.init`` arguments of each trial's run, before Tune starts the run's logging actor.

    Why: Tune sets a run's name and config from the trial and has no hook for them but the private
    ``_start_logging_actor(trial, exclude_results, **init_kwargs)``, overridden here. Tested with Ray 2.60.0.
    """

    def _start_logging_actor(self: Any, trial: Any, exclude_results: list[str], **init_kwargs: Any) -> None:
        exclude, kwargs = self.trial_start(trial, list(exclude_results), dict(init_kwargs))
        super(cls, self)._start_logging_actor(trial, exclude, **kwargs)

    cls._start_logging_actor = _start_logging_actor
    return cls


# --- The fake multi-node cluster (rayjobs/cluster/local_cluster.py) -----------------------------
# Why: the local cluster rehearses cluster.yaml's autoscaling on one machine with Ray's testing
# provider ``fake_multinode``, which runs only when this variable is set; each fake worker's raylet
# carries its node id in the second one (the head's ends in 00000). Tested with Ray 2.60.0
# (ray/autoscaler/_private/fake_multi_node/node_provider.py).

#: Set to "1" in ``ray start``'s environment to let the head run the fake_multinode provider.
FAKE_CLUSTER_ENV = "RAY_FAKE_CLUSTER"
#: The node id of a fake node, in its raylet's environment.
FAKE_NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"


def node_ip_address() -> str:
    """This machine's address as Ray picks it for a node (the head's GCS address must use the same one).

    Why: the public ``ray.util.get_node_ip_address`` is this very function re-exported; called through
    ``ray._private.services``, as Ray's own ``ray start`` does. Tested with Ray 2.60.0.
    """
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


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


def provider_defaults(provider: str) -> dict[str, Any]:
    """Ray's defaults for a node provider (``ray/autoscaler/<provider>/defaults.yaml``): what ``ray up`` fills in.

    Why: the SSH rehearsal turns cluster.yaml into a config of the ``local`` provider and shows what
    Ray adds; the files are package data of ``ray.autoscaler``, not an API. Tested with Ray 2.60.0.
    """
    import ray.autoscaler
    import yaml

    return yaml.safe_load((Path(ray.autoscaler.__file__).parent / provider / "defaults.yaml").read_text())


def cluster_config_error_key(message: str) -> str:
    """The config key a free-text error of Ray's ``prepare_config``/``validate_config`` is about, or ``<config>``.

    Why: those raise plain exceptions whose only pointer to the key is their wording (Ray 2.60.0's
    messages name the key, or say "node provider", "container", "image"); a new wording lands on
    ``<config>``, still with Ray's message.
    """
    if "node provider" in message:
        return "provider.type"
    for key in (
        "head_node_type",
        "available_node_types",
        "cluster_synced_files",
        "file_mounts_sync_continuously",
        "max_workers",
        "head_ip",
        "worker_ips",
        "docker",
        "provider",
    ):
        if key in message:
            return key
    return "docker" if "container" in message or "image" in message else "<config>"


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield
