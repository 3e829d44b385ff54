"""Experiment trackers for a sweep, through Tune's own logger callbacks: MLflow (``--mlflow URI``) and W&B (``--wandb PROJECT``).

Each trial is one tracked run named by its grid cell, with the cell and the trial's full training config as
parameters and every evaluation's numbers (loss parts, rank metrics, alignment, uniformity, STS-B dev, then the
final test scores) as series over the training step. The sweep itself gets a parent run (MLflow: the trials are
its children) or a summary run (W&B: same group) holding the report, tables and figures once aggregated.
Both are optional extras (``pip install -e '.[mlflow]'`` / ``'.[wandb]'``); the callbacks run on the driver
(MLflow) or in a small Ray actor beside it (W&B), never in the trials.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from rankcse.errors import ConfigError
from rayjobs.layout import TRACKERS_FILE, WANDB_DIR, cell_label, meta_dir
from rayjobs.ray_compat import mlflow_trial_runs, wandb_trial_start
from rayjobs.tuning.spec import SweepSpec

#: Tune's bookkeeping keys in a result, not the trial's measurements.
TUNE_KEYS = {
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "training_iteration",
    "iterations_since_restore",
    "time_since_restore",
    "done",
    "node_ip",
    "date",
    "hostname",
    "trial_id",
    "experiment_tag",
    "checkpoint_dir_name",
    "should_checkpoint",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
}


def measurements(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers a trial reported (rankcse's record), without Tune's bookkeeping."""
    out = {}
    for key, value in result.items():
        if key in TUNE_KEYS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def trial_params(spec: SweepSpec, cell: dict[str, Any]) -> dict[str, Any]:
    """The grid cell and the trial's full training config, flattened (``method_args.x``), as tracker parameters."""
    config = spec.trial_config(cell).to_dict()
    params: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            params.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            params[key] = value
    params = {k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in params.items()}
    params.update(cell)
    return params


def _cell(spec: SweepSpec, trial: Any) -> dict[str, Any]:
    return {axis: trial.config[axis] for axis in spec.axes()}


# -- MLflow ------------------------------------------------------------------------------------------------


def check_mlflow(uri: str) -> None:
    """Refuse, before Ray starts, a URI this installation cannot write (one line naming the fix)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("--mlflow needs MLflow: pip install -e '.[mlflow]' (mlflow-skinny is enough)") from None
    if uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError:
            raise ConfigError(f"--mlflow {uri}: an sqlite store needs sqlalchemy and alembic (pip install them), or use file:DIR") from None
    elif uri.startswith("file:") or "://" not in uri:
        # MLflow 3 keeps the file store in maintenance mode and refuses it unless asked; it is the store that works offline.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif uri.startswith(("http://", "https://")):
        check_server(uri)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Refuse an MLflow server that does not answer (one connection attempt, at most ``timeout`` seconds), before any trial:
    MLflow's own client would retry for minutes and then fail with a traceback."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"--mlflow {uri}: the port is not a number; use http(s)://HOST:PORT") from None
    if not parts.hostname:
        raise ConfigError(f"--mlflow {uri}: no host; use http(s)://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--mlflow {uri}: no server answers at {parts.hostname}:{port} ({why}); start it (mlflow server --port {port}) "
            "or log offline with --mlflow file:DIR"
        ) from None


def mlflow_parent_run(uri: str, experiment: str, spec: SweepSpec) -> dict[str, str]:
    """Create the sweep's parent run (the trials are its children); returns its ids for the callback and the summary."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"{spec.name} (sweep)", tags={"rankcse.role": "sweep"})
    for axis, values in spec.axes().items():
        client.log_param(run.info.run_id, f"grid.{axis}", json.dumps(values))
    client.log_param(run.info.run_id, "trials", len(spec.cells()))
    return {"uri": uri, "experiment": experiment, "experiment_id": experiment_id, "parent_run_id": run.info.run_id}


class MLflowTrialLogger(MLflowLoggerCallback):
    """Tune's MLflow callback, one run per trial named by its cell (a child of the sweep's parent run), with the full config and
    the training step as the step of every series."""

    def __init__(self, sweep: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sweep = sweep

    def log_trial_start(self, trial: Any) -> None:
        spec = SweepSpec.from_dict(self.sweep)
        cell = _cell(spec, trial)
        runs = mlflow_trial_runs(self)
        if trial not in runs:
            tags = {**self.tags, "trial_name": str(trial), "rankcse.cell": cell_label(cell)}
            runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=cell_label(cell)).info.run_id
        self.mlflow_util.log_params(run_id=runs[trial], params_to_log=trial_params(spec, cell))

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        step = int(result.get("step") or 0)
        self.mlflow_util.log_metrics(run_id=mlflow_trial_runs(self)[trial], metrics_to_log=measurements(result), step=step)


def mlflow_callback(spec: SweepSpec, state: dict[str, str]) -> MLflowTrialLogger:
    """The MLflow callback of a sweep whose parent run is in ``state``."""
    tags = {"mlflow.parentRunId": state["parent_run_id"], "rankcse.sweep": spec.name}
    return MLflowTrialLogger(spec.to_dict(), tracking_uri=state["uri"], experiment_name=state["experiment"], tags=tags)


def mlflow_summary(state: dict[str, str], output: Path, status: str) -> None:
    """Attach the report, tables and figures to the parent run and close it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=state["uri"])
    if output.is_dir():
        client.log_artifacts(state["parent_run_id"], str(output))
    client.set_terminated(state["parent_run_id"], status=status)


# -- Weights & Biases --------------------------------------------------------------------------------------


def check_wandb() -> None:
    """Refuse, before Ray starts, when wandb is missing or, online, no API key is set up (Tune's callback would fail later)."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("--wandb needs wandb: pip install -e '.[wandb]' (WANDB_MODE=offline works without an account)") from None
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    if os.environ.get("WANDB_SETUP_API_KEY_HOOK") or _netrc_has_key():
        return
    raise ConfigError("--wandb: no W&B API key (run `wandb login` or set WANDB_API_KEY), or log offline with WANDB_MODE=offline")


def _netrc_has_key() -> bool:
    """Whether the netrc file (where `wandb login` keeps the key) has an entry for the W&B server."""
    import netrc
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@wandb_trial_start
class WandbTrialLogger(WandbLoggerCallback):
    """Tune's W&B callback, one run per trial in the sweep's group, named by its cell, with the full config."""

    def __init__(self, sweep: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sweep = sweep

    def trial_start(self, trial: Any, exclude: list[str], init_kwargs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """The keys left out of a trial's W&B run (Tune's bookkeeping) and its ``wandb.init`` arguments (name, config)."""
        spec = SweepSpec.from_dict(self.sweep)
        cell = _cell(spec, trial)
        init_kwargs["config"] = trial_params(spec, cell)
        init_kwargs["name"] = cell_label(cell)
        return exclude + sorted(TUNE_KEYS - {"training_iteration"}), init_kwargs


def wandb_callback(spec: SweepSpec, project: str, experiment_dir: Path) -> WandbTrialLogger:
    """The W&B callback of a sweep, writing under ``<experiment>/.rankcse/wandb`` (WANDB_MODE is passed on to the logging actor)."""
    folder = meta_dir(experiment_dir)
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
    return WandbTrialLogger(spec.to_dict(), project=project, group=spec.name, dir=str(folder), **extra)


def wandb_summary(project: str, spec: SweepSpec, experiment_dir: Path, output: Path) -> None:
    """A summary run in the sweep's group: the trials and summary tables, and the report, tables and figures as an artifact."""
    import pandas as pd
    import wandb

    folder = meta_dir(experiment_dir)
    run = wandb.init(
        project=project,
        group=spec.name,
        name=f"{spec.name} (sweep)",
        job_type="sweep-summary",
        dir=str(folder),
        config={f"grid.{k}": v for k, v in spec.axes().items()},
        reinit="finish_previous",
    )
    try:
        for name in ("trials", "summary"):
            path = output / f"{name}.parquet"
            if path.is_file():
                frame = pd.read_parquet(path).astype(object)
                frame = frame.where(frame.notna(), None)  # W&B tables take None, not pandas' NA
                frame = frame.map(lambda v: v if v is None or isinstance(v, bool | int | float | str) else str(v))
                run.log({f"{name}_table": wandb.Table(dataframe=frame)})
        if output.is_dir():
            artifact = wandb.Artifact(f"{spec.name}-results", type="sweep-results")
            artifact.add_dir(str(output))
            run.log_artifact(artifact)
    finally:
        run.finish()


def check(mlflow_uri: str | None, wandb_project: str | None) -> None:
    """Every tracker check that needs no run: the extras, an MLflow server that answers, a W&B key (seconds at most)."""
    if mlflow_uri:
        check_mlflow(mlflow_uri)
    if wandb_project:
        check_wandb()


# -- the sweep's view --------------------------------------------------------------------------------------


@dataclass
class Trackers:
    """The trackers a sweep logs to, and the state its summary needs (kept in the experiment folder for ``--resume``)."""

    mlflow: dict[str, str] | None = None
    wandb_project: str | None = None

    @classmethod
    def start(cls, spec: SweepSpec, experiment_dir: Path, mlflow_uri: str | None, wandb_project: str | None) -> Trackers:
        """Check the extras, create the MLflow parent run and remember both (or read them back on resume)."""
        path = meta_dir(experiment_dir) / TRACKERS_FILE
        if mlflow_uri is None and wandb_project is None and path.is_file():
            saved = json.loads(path.read_text())  # --resume: the trackers the sweep started with
            mlflow_uri = (saved.get("mlflow") or {}).get("uri")
            wandb_project = saved.get("wandb_project")
        check(mlflow_uri, wandb_project)
        trackers = cls(wandb_project=wandb_project)
        if mlflow_uri:
            saved = json.loads(path.read_text()) if path.is_file() else {}
            trackers.mlflow = saved.get("mlflow") if (saved.get("mlflow") or {}).get("uri") == mlflow_uri else None
            try:
                trackers.mlflow = trackers.mlflow or mlflow_parent_run(mlflow_uri, spec.name, spec)
            except Exception as exc:  # MLflow raises its own exception types (and requests' ones) for a bad store
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ConfigError(f"--mlflow {mlflow_uri}: could not create the sweep's run ({type(exc).__name__}: {first})") from None
        if trackers.mlflow or wandb_project:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"mlflow": trackers.mlflow, "wandb_project": wandb_project}, indent=2))
        return trackers

    def callbacks(self, spec: SweepSpec, experiment_dir: Path) -> list[Any]:
        """Tune logger callbacks for the trackers in use."""
        out = []
        if self.mlflow:
            out.append(mlflow_callback(spec, self.mlflow))
        if self.wandb_project:
            out.append(wandb_callback(spec, self.wandb_project, experiment_dir))
        return out

    def publish(self, spec: SweepSpec, experiment_dir: Path, output: Path, ok: bool) -> list[str]:
        """Attach the aggregated results to the parent/summary runs; returns one line per tracker for the terminal."""
        lines = []
        if self.mlflow:
            m = self.mlflow
            try:
                mlflow_summary(m, output, "FINISHED" if ok else "FAILED")
                lines.append(f"mlflow: experiment {m['experiment']!r} at {m['uri']}, parent run {m['parent_run_id']}")
            except Exception as exc:
                lines.append(f"mlflow: the sweep's parent run was not completed ({type(exc).__name__}: {exc})")
        if self.wandb_project:
            try:
                wandb_summary(self.wandb_project, spec, experiment_dir, output)
                where = meta_dir(experiment_dir) / WANDB_DIR
                lines.append(f"wandb: project {self.wandb_project!r}, group {spec.name!r} (runs under {where})")
            except Exception as exc:
                lines.append(f"wandb: the sweep's summary run was not written ({type(exc).__name__}: {exc})")
        return lines
