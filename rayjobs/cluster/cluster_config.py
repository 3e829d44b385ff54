"""Offline validation of a Ray cluster launcher config (``cluster.yaml``) for rankcse sweeps.

``ray up`` finds some mistakes only after it has contacted the cloud, or after the first GPU worker
fails to start. This module checks in a second, with no network and no cloud credentials:

1. Ray's own checks: the ``prepare_config`` + ``validate_config`` that ``ray up`` runs first (through
   :mod:`rayjobs.ray_compat`), every schema error listed rather than the first.
2. What Ray's validator misses for the configs we ship: the provider's required keys (Ray fills
   them from its defaults without a word), the cluster installing exactly the driver's Ray version,
   and GPUs declared (``resources``) on the GPU node types, at least one of which can start.

    python -m rayjobs.cluster_config cluster.yaml       # exit 0: valid; 2: the problems, one a line
"""

from __future__ import annotations

import argparse
import copy
import difflib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rayjobs import ray_compat

#: Keys the provider block must set, for each provider we ship a config for (one line per provider).
REQUIRED_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "aws": ("region",),
}
#: Where a provider's node_config names the instance type (shown in the summary line only).
INSTANCE_TYPE_KEYS: dict[str, str] = {"aws": "InstanceType"}

#: The global command lists that may install Ray (plus each node type's own worker_setup_commands).
_COMMAND_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
# ray==X, ray[default,tune]==X (quoted or not), but not xgboost-ray==X or a path ending in /ray.
_RAY_PIN = re.compile(r"(?<![\w./@-])ray(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+!*-]*)")
_RAY_LOOSE = re.compile(r"(?<![\w./@-])ray(?:\[[^\]]*\])?(?:>=|<=|~=|!=|>(?!=)|<(?!=))[0-9A-Za-z.*,<>=!~]*")
# A Ray wheel file: ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl
_RAY_WHEEL = re.compile(r"(?<![\w.-])ray-(\d[0-9A-Za-z.+!]*)-cp\d")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cluster config: the key path it is at and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ClusterConfigError(ValueError):
    """A cluster config that ``ray up`` would reject or that could not run a rankcse sweep; lists every problem, one a line."""

    def __init__(self, problems: Sequence[Problem], source: str = "cluster config") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''}:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def load_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a cluster config YAML file into a dict; :class:`ClusterConfigError` when missing, not YAML or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ClusterConfigError([Problem("<file>", f"{p} does not exist (or is not a file)")], str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ClusterConfigError([Problem("<file>", f"not valid YAML: {exc}")], str(p)) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ClusterConfigError([Problem("<file>", f"must be a YAML mapping of cluster settings, but it is {kind}")], str(p))
    return data


def validate_cluster_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    driver_ray_version: str | None = None,
    require_gpu: bool = True,
) -> dict[str, Any]:
    """Check a cluster config offline (Ray's validator, then ours); return it as Ray prepares it.

    ``driver_ray_version`` (default: the installed ray) is the version the config must pin;
    ``require_gpu=False`` accepts a cluster without GPUs. Raises :class:`ClusterConfigError` listing every problem.
    """
    if isinstance(path_or_dict, Mapping):
        source, raw = "cluster config", copy.deepcopy(dict(path_or_dict))
    else:
        source, raw = str(path_or_dict), load_cluster_config(path_or_dict)
    if driver_ray_version is None:
        import ray

        driver_ray_version = ray.__version__

    problems = _provider_problems(raw)
    prepared: dict[str, Any] | None = None
    schema_error: Exception | None = None
    if _provider_type(raw) is not None:  # Ray's prepare_config needs a provider type
        prepared, ray_problems, schema_error = _ray_checks(raw)
        problems += ray_problems
    else:  # still report what Ray's schema says about the rest
        problems += [p for p in _schema_problems(raw, ignore_required_top_level=True) if not p.path.startswith("provider")]
    problems += _ray_pin_problems(raw, driver_ray_version)
    if require_gpu:
        problems += _gpu_problems(prepared if prepared is not None else raw)

    if problems:
        raise ClusterConfigError(problems, source) from schema_error
    if prepared is None:  # unreachable: every path that leaves it None records a problem
        raise ClusterConfigError([Problem("<config>", "Ray's prepare_config did not run")], source)
    return prepared


def gpu_node_types(config: Mapping[str, Any]) -> dict[str, int]:
    """Node types that declare GPUs (``resources.GPU > 0``), with their GPU count."""
    node_types = config.get("available_node_types")
    items = node_types.items() if isinstance(node_types, Mapping) else ()
    return {str(name): int(gpus) for name, node_type in items if (gpus := _declared_gpus(node_type))}


def ray_version_pins(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every exact Ray version the config's setup commands install, as (key path, version)."""
    return [(path, version) for path, version, loose in _ray_specs(config) if not loose]


# --- Ray's own validation ---------------------------------------------------------------------


def _ray_checks(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Problem], Exception | None]:
    """Ray's prepare_config and validate_config; return (prepared config, problems, schema error).

    Both are offline. What ``ray up`` does next needs the cloud and is skipped: detecting node
    resources through the cloud's API, and ``bootstrap_config`` (IAM roles, key pairs, subnets, images).
    """
    import jsonschema

    try:
        prepared = ray_compat.prepare_cluster_config(raw)
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        return None, [Problem(ray_compat.cluster_config_error_key(message), f"Ray's prepare_config rejects it: {message}")], None
    try:
        ray_compat.validate_prepared_cluster_config(prepared)
    except jsonschema.ValidationError as exc:
        return prepared, _schema_problems(prepared) or _validation_error_problems(exc), exc
    except (ValueError, RuntimeError, TypeError) as exc:
        return prepared, [Problem(ray_compat.cluster_config_error_key(str(exc)), f"Ray's validate_config rejects it: {exc}")], None
    return prepared, [], None


def _schema_problems(config: Mapping[str, Any], ignore_required_top_level: bool = False) -> list[Problem]:
    """Every error of Ray's JSON schema (``validate_config`` stops at the first), as problems."""
    import jsonschema

    schema = ray_compat.cluster_config_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        if ignore_required_top_level and error.validator == "required" and not error.absolute_path:
            continue  # a raw config gets cluster_name etc. from Ray's defaults
        problems += _validation_error_problems(error)
    return problems


def _validation_error_problems(error: Any) -> list[Problem]:
    """Turn one jsonschema ValidationError into problems that name the failing key."""
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set((error.schema or {}).get("properties", {}))
        patterns = list((error.schema or {}).get("patternProperties", {}))
        extras = [k for k in error.instance if k not in allowed and not any(re.search(p, str(k)) for p in patterns)]
        if extras:
            why = "unknown key, not allowed by Ray's cluster schema"
            return [Problem(_key_path([*parts, k]), f"{why}{_suggest(str(k), allowed)}") for k in extras]
    if error.validator == "required":
        match = re.match(r"'(.+?)' is a required property", error.message)
        if match:
            return [Problem(_key_path([*parts, match.group(1)]), "required by Ray's cluster schema, missing")]
    return [Problem(_key_path(parts) or "<top level>", f"{error.message} (Ray's cluster schema)")]


# --- what Ray's validator misses ----------------------------------------------------------------


def _provider_type(raw: Mapping[str, Any]) -> str | None:
    provider = raw.get("provider")
    ptype = provider.get("type") if isinstance(provider, Mapping) else None
    return ptype if isinstance(ptype, str) and ptype else None


def _provider_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """A provider block with a type, and the keys :data:`REQUIRED_PROVIDER_KEYS` lists for it."""
    provider = raw.get("provider")
    if not isinstance(provider, Mapping):
        return [Problem("provider", "missing or not a mapping; it needs at least `type` (aws, gcp, azure, local, ...)")]
    ptype = _provider_type(raw)
    if ptype is None:
        return [Problem("provider.type", "missing; the cloud or cluster manager (aws, gcp, azure, local, ...)")]
    return [
        Problem(f"provider.{key}", f"required for provider type {ptype!r} (a non-empty string)")
        for key in REQUIRED_PROVIDER_KEYS.get(ptype, ())
        if not isinstance(provider.get(key), str) or not provider[key].strip()
    ]


def _ray_specs(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(key path, version or operator, loose) for every Ray requirement in the config's setup commands."""
    found: list[tuple[str, str, bool]] = []
    for path, command in _commands(config):
        found += [(path, m.group(1), False) for m in (*_RAY_PIN.finditer(command), *_RAY_WHEEL.finditer(command))]
        found += [(path, m.group(0), True) for m in _RAY_LOOSE.finditer(command)]
    return found


def _commands(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key path, command) of the global and per-node-type setup command lists."""
    lists: list[tuple[str, Any]] = [(key, config.get(key)) for key in _COMMAND_LISTS]
    node_types = config.get("available_node_types")
    if isinstance(node_types, Mapping):
        for name, node_type in node_types.items():
            if isinstance(node_type, Mapping) and "worker_setup_commands" in node_type:
                lists.append((f"available_node_types.{name}.worker_setup_commands", node_type["worker_setup_commands"]))
    return [(f"{key}[{i}]", cmd) for key, cmds in lists if isinstance(cmds, list) for i, cmd in enumerate(cmds) if isinstance(cmd, str)]


def _ray_pin_problems(raw: Mapping[str, Any], driver_version: str) -> list[Problem]:
    """Every node installs exactly ``driver_version`` of Ray, pinned in its setup commands."""
    from packaging.version import InvalidVersion, Version  # packaging comes with ray

    def same(version: str) -> bool:
        try:
            return Version(version) == Version(driver_version)
        except InvalidVersion:
            return version.strip() == driver_version.strip()

    install = f'`pip install "ray[default,tune]=={driver_version}"`'
    problems: list[Problem] = []
    specs = _ray_specs(raw)
    for path, version, loose in specs:
        if loose:
            problems.append(Problem(path, f'installs Ray with {version!r}, not an exact pin; use "ray[default,tune]=={driver_version}"'))
        elif not same(version):
            problems.append(
                Problem(
                    path,
                    f"pins ray {version} but the driver runs ray {driver_version}; "
                    f"the cluster's Ray must equal the driver's (\"ray[default,tune]=={driver_version}\")",
                )
            )
    pinned = {path.split("[")[0] for path, _, loose in specs if not loose}
    if not pinned:
        return problems + [
            Problem(
                "setup_commands",
                f"no command pins the Ray version (ray==X / ray[...]==X); add {install} to setup_commands, the driver's Ray",
            )
        ]
    if not pinned & {"setup_commands", "head_setup_commands"}:
        problems.append(Problem("head_setup_commands", f"the head node never installs a pinned Ray; add {install} to setup_commands"))
    head = raw.get("head_node_type")
    node_types = raw.get("available_node_types")
    worker_types = [n for n in node_types if n != head] if isinstance(node_types, Mapping) else ["<workers>"]
    for name in worker_types:
        own = f"available_node_types.{name}.worker_setup_commands"
        node_type = node_types.get(name) if isinstance(node_types, Mapping) else None
        overrides = isinstance(node_type, Mapping) and "worker_setup_commands" in node_type  # it replaces the global lists
        if not (own in pinned if overrides else pinned & {"setup_commands", "worker_setup_commands"}):
            where, to = (own, own) if overrides else ("worker_setup_commands", "setup_commands")
            problems.append(Problem(where, f"worker node type {name!r} never installs a pinned Ray; add {install} to {to}"))
    return problems


def _gpu_problems(config: Mapping[str, Any]) -> list[Problem]:
    """GPU node types (named ``*gpu*``) declare their GPUs, and at least one GPU node type can start."""
    node_types = config.get("available_node_types")
    global_max = config.get("max_workers")
    if not isinstance(node_types, Mapping) or not _is_int(global_max):  # Ray's schema reports it
        return []
    undeclared = [
        Problem(
            f"available_node_types.{name}.resources.GPU",
            f"node type {name!r} is named as a GPU type but declares no GPUs; declare them (resources: {{CPU: n, GPU: k}})",
        )
        for name, node_type in node_types.items()
        if "gpu" in str(name).lower() and not _declared_gpus(node_type)
    ]
    gpu_types = gpu_node_types(config)
    if not gpu_types:
        none = (
            "no node type declares GPUs (resources: {CPU: n, GPU: k}); the sweep's trials train on GPUs "
            "(pass require_gpu=False / --no-require-gpu for a CPU cluster)"
        )
        return undeclared or [Problem("available_node_types", none)]
    for name in gpu_types:
        own_max = node_types[name].get("max_workers", global_max)
        if name == config.get("head_node_type") or not _is_int(own_max) or min(global_max, own_max) > 0:
            return undeclared  # a non-integer max_workers: the schema says so
    return undeclared + [
        Problem(
            "max_workers",
            f"the GPU node types ({', '.join(gpu_types)}) can never start: their max_workers (or the global max_workers) is 0",
        )
    ]


# --- small helpers ----------------------------------------------------------------------------


def _declared_gpus(node_type: Any) -> float:
    """``resources.GPU`` of a node type; 0 when absent or not a number (Ray's schema reports the latter)."""
    resources = node_type.get("resources") if isinstance(node_type, Mapping) else None
    value = resources.get("GPU", 0) if isinstance(resources, Mapping) else 0
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_path(parts: Sequence[Any]) -> str:
    """``["available_node_types", "ray.worker.gpu", "max_workers"]`` -> ``available_node_types.ray.worker.gpu.max_workers``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _suggest(key: str, allowed: set[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt key, else the allowed keys."""
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (allowed here: {', '.join(sorted(allowed))})" if allowed else ""


def summary(config: Mapping[str, Any], driver_ray_version: str) -> str:
    """One line about a valid, prepared config: Ray version, node types, GPU workers."""
    node_types = config.get("available_node_types") or {}
    instance_key = INSTANCE_TYPE_KEYS.get((config.get("provider") or {}).get("type"))
    gpu_types = []
    for name, gpus in gpu_node_types(config).items():
        node_type = node_types[name]
        instance = (node_type.get("node_config") or {}).get(instance_key) if instance_key else None
        workers = f"{node_type.get('min_workers', 0)}-{node_type.get('max_workers', 0)} nodes"
        role = "head" if name == config.get("head_node_type") else workers
        gpu_types.append(f"{name} ({', '.join(x for x in (instance, f'{gpus} GPU', role) if x)})")
    return f"valid (ray {driver_ray_version}, {len(node_types)} node types, GPU workers: {'; '.join(gpu_types) or 'none'})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rayjobs.cluster_config cluster.yaml``: exit 0 when valid, 2 with the problems."""
    parser = argparse.ArgumentParser(prog="python -m rayjobs.cluster_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="+", help="cluster launcher YAML file(s), e.g. cluster.yaml")
    parser.add_argument("--driver-ray-version", help="the Ray version the driver runs (default: the installed ray)")
    parser.add_argument("--no-require-gpu", action="store_true", help="accept a cluster without GPU node types")
    args = parser.parse_args(argv)
    if args.driver_ray_version is None:
        import ray

        args.driver_ray_version = ray.__version__
    status = 0
    for path in args.config:
        try:
            prepared = validate_cluster_config(path, args.driver_ray_version, require_gpu=not args.no_require_gpu)
        except ClusterConfigError as exc:
            print(exc, file=sys.stderr)
            status = 2
            continue
        print(f"{path}: {summary(prepared, args.driver_ray_version)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
